"""execrl.agents.ppo_update (LeanPPO / LeanMaskablePPO) against SB3's own PPO.train and
collect_rollouts: on the same weights, optimiser state, rollout buffer and minibatch
permutation, the same losses and the same parameters after the update; on the same seeds,
the same rollout."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch as th

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure

from execrl.agents import ppo
from execrl.agents.ppo_update import LeanMaskablePPO, LeanNets, LeanPPO
from execrl.domain import OrderConstraints
from execrl.env.factory import DEFAULT_ORDER, EnvConfig
from execrl.env.sb3 import ExecutionSB3VecEnv

th.set_num_threads(1)
N_ENVS = 32
#: seed003's child cap binds here, so the masks exclude actions
MASKED_ORDER = DEFAULT_ORDER.model_copy(
    update={"constraints": OrderConstraints(child_max=60000)})


def make(algo: str, actions: str, lean: bool, **hyper) -> PPO:
    order = MASKED_ORDER if algo == "maskable-ppo" else DEFAULT_ORDER
    env = ExecutionSB3VecEnv(N_ENVS, EnvConfig(actions=actions, reward="risk_adjusted"), order)
    env.seed(0)
    params = ppo.PPOParams(**{"n_steps": 16, "n_minibatches": 4, "n_epochs": 3, **hyper})
    model = ppo.build_model(algo, params, env, seed=0, lean=lean)
    model.set_logger(configure(None, []))
    return model


def collect(model: PPO, seed: int, method=None) -> None:
    """A fresh rollout into ``model.rollout_buffer`` (``method``: a class's collect_rollouts)."""
    _, callback = model._setup_learn(10**6, None)
    th.manual_seed(seed)
    (method or type(model).collect_rollouts)(
        model, model.env, callback, model.rollout_buffer, model.n_steps)


def twin(lean: PPO, algo: str, actions: str, **hyper) -> PPO:
    """SB3's own class with ``lean``'s weights, optimiser state and rollout buffer."""
    ref = make(algo, actions, lean=False, **hyper)
    ref.policy.load_state_dict(lean.policy.state_dict())
    # a deep copy: torch's load_state_dict keeps the very moment tensors it is given
    ref.policy.optimizer.load_state_dict(copy.deepcopy(lean.policy.optimizer.state_dict()))
    ref.rollout_buffer = copy.deepcopy(lean.rollout_buffer)
    ref._current_progress_remaining = lean._current_progress_remaining
    ref._n_updates = lean._n_updates
    return ref


CASES = [
    ("ppo", "continuous", {}),
    ("ppo", "seed004", {}),
    ("maskable-ppo", "seed003", {}),
    ("ppo", "continuous", {"ent_coef": 0.01, "activation": "tanh", "net_arch": [32, 16, 8]}),
    ("ppo", "seed004", {"ent_coef": 0.05, "normalize_advantage": False, "batch_size": 100}),
    ("maskable-ppo", "seed003", {"ent_coef": 0.02, "activation": "tanh", "net_arch": []}),
]


@pytest.mark.parametrize(("algo", "actions", "hyper"), CASES)
def test_update_equals_sb3_train(algo: str, actions: str, hyper: dict) -> None:
    lean = make(algo, actions, lean=True, **hyper)
    assert isinstance(lean, LeanMaskablePPO if algo == "maskable-ppo" else LeanPPO)
    assert LeanNets.of(lean.policy) is not None  # the lean path, not the fallback
    lean.learn(N_ENVS * 16)  # one iteration: weights and Adam's moments off their start
    collect(lean, seed=1)
    ref = twin(lean, algo, actions, **hyper)
    before = [p.detach().clone() for p in lean.policy.parameters()]

    np.random.seed(7)
    lean.train()
    np.random.seed(7)
    ref.train()

    moved = 0.0
    for p0, p, q in zip(before, lean.policy.parameters(), ref.policy.parameters(), strict=True):
        step = (q - p0).detach().abs().max()
        moved = max(moved, float(step))
        # the update itself (not just the weights) agrees, to a few float32 roundings of
        # the weights it was added to
        ulp = float(np.finfo(np.float32).eps) * float(p0.abs().max())
        np.testing.assert_allclose((p - p0).detach().numpy(), (q - p0).detach().numpy(),
                                   rtol=1e-3, atol=8 * ulp)
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5,
                                   atol=1e-7)
    assert moved > 1e-4  # the update moved the weights
    got, want = lean.logger.name_to_value, ref.logger.name_to_value
    for key in ("train/policy_gradient_loss", "train/value_loss", "train/entropy_loss",
                "train/approx_kl", "train/clip_fraction", "train/loss",
                "train/explained_variance", "train/n_updates", "train/learning_rate"):
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
    assert set(got) == set(want)
    assert lean._n_updates == ref._n_updates


def test_update_equals_sb3_with_vf_clip_and_kl_stop() -> None:
    """clip_range_vf (not a PPOParams key, set on the model) and target_kl's early stop."""
    lean = make("ppo", "continuous", lean=True, target_kl=0.002, learning_rate=3e-3)
    lean.clip_range_vf = lambda _: 0.05
    lean.learn(N_ENVS * 16)
    collect(lean, seed=2)
    ref = twin(lean, "ppo", "continuous", target_kl=0.002, learning_rate=3e-3)
    ref.clip_range_vf = lambda _: 0.05
    np.random.seed(3)
    lean.train()
    np.random.seed(3)
    ref.train()
    for p, q in zip(lean.policy.parameters(), ref.policy.parameters(), strict=True):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-7)
    assert lean._n_updates == ref._n_updates < 1 + 3 + 3  # stopped early
    for key in ("train/value_loss", "train/approx_kl", "train/clip_range_vf"):
        assert lean.logger.name_to_value[key] == pytest.approx(
            ref.logger.name_to_value[key], rel=1e-5), key


def test_a_different_permutation_gives_a_different_update() -> None:
    """The comparison above can fail: a different minibatch order moves the weights apart."""
    lean = make("ppo", "continuous", lean=True)
    lean.learn(N_ENVS * 16)
    collect(lean, seed=1)
    ref = twin(lean, "ppo", "continuous")
    np.random.seed(7)
    lean.train()
    np.random.seed(8)
    ref.train()
    gap = max(float((p - q).detach().abs().max())
              for p, q in zip(lean.policy.parameters(), ref.policy.parameters(), strict=True))
    assert gap > 1e-5


@pytest.mark.parametrize(("algo", "actions"), [("ppo", "continuous"), ("ppo", "seed004"),
                                               ("maskable-ppo", "seed003")])
def test_rollout_equals_sb3_collect_rollouts(algo: str, actions: str) -> None:
    lean = make(algo, actions, lean=True)
    ref = make(algo, actions, lean=False)
    ref.policy.load_state_dict(lean.policy.state_dict())
    base = MaskablePPO if algo == "maskable-ppo" else PPO
    collect(lean, seed=5)
    collect(ref, seed=5, method=base.collect_rollouts)
    a, b = lean.rollout_buffer, ref.rollout_buffer
    fields = ["observations", "actions", "rewards", "episode_starts", "values", "log_probs",
              "advantages", "returns"]
    if algo == "maskable-ppo":
        fields.append("action_masks")
        assert (b.action_masks == 0).any()  # the masks bind
    for name in fields:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    assert lean.num_timesteps == ref.num_timesteps == N_ENVS * 16
    assert len(lean.ep_info_buffer) == len(ref.ep_info_buffer) > 0
    assert [e["r"] for e in lean.ep_info_buffer] == [e["r"] for e in ref.ep_info_buffer]
    np.testing.assert_array_equal(lean._last_obs, ref._last_obs)


def test_lean_model_saves_and_loads_as_sb3s_class(tmp_path) -> None:
    lean = make("ppo", "seed004", lean=True)
    lean.learn(N_ENVS * 16)
    lean.save(tmp_path / "model.zip")
    native = PPO.load(tmp_path / "model.zip", device="cpu")
    obs = np.random.default_rng(0).uniform(0, 1, (200, 4)).astype(np.float32)
    np.testing.assert_array_equal(native.predict(obs, deterministic=True)[0],
                                  lean.predict(obs, deterministic=True)[0])
    assert ppo.sb3_class(lean) == "PPO"


def test_other_structures_fall_back_to_sb3() -> None:
    """A policy the lean path does not compute (unshared features) trains with SB3's train."""
    env = ExecutionSB3VecEnv(N_ENVS, EnvConfig(actions="seed004"), DEFAULT_ORDER)
    model = LeanPPO("MlpPolicy", env, n_steps=8, batch_size=64, n_epochs=1, seed=0,
                    policy_kwargs={"share_features_extractor": False}, device="cpu")
    assert LeanNets.of(model.policy) is None
    model.learn(N_ENVS * 8 * 2)
    assert model._n_updates == 2
