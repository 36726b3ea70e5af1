"""Tests for the Stable-Baselines3 agents: execrl.agents.deep_q, execrl.agents.ppo and their
export to NumpyPolicy (sb3_common)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

from stable_baselines3.common.type_aliases import ReplayBufferSamples

from execrl.agents import deep_q, ppo
from execrl.agents.export import NumpyPolicy
from execrl.agents.sb3_common import make_train_env, parse_hyperparams
from execrl.agents.train import TrainRequest, run_training
from execrl.domain import ConfigError, OrderConstraints
from execrl.env.factory import DEFAULT_ORDER, EnvConfig
from execrl.evaluate.backtest import run_policy
from execrl.evaluate.stats import paired_comparison

th.set_num_threads(1)
N_OBS = 3000


def request(algo: str, actions: str = "seed004", **kw) -> TrainRequest:
    kw.setdefault("steps", 1)
    kw.setdefault("seed", 0)
    kw.setdefault("n_envs", 16)
    return TrainRequest(
        algo=algo,
        env_name="ac",
        env_config=kw.pop("env_config", EnvConfig(actions=actions)),
        order=kw.pop("order", DEFAULT_ORDER),
        **kw,
    )


def random_observations(n: int, seed: int) -> np.ndarray:
    """seed004 features over (and beyond) their realistic ranges, float32 like the env's."""
    rng = np.random.default_rng(seed)
    obs = np.column_stack(
        [
            rng.uniform(-0.1, 1.1, n),  # remaining_ratio
            rng.uniform(-0.1, 1.1, n),  # elapsed_ratio
            rng.normal(0.0, 1.5, n),  # price_drift
            rng.uniform(0.3, 3.0, n),  # volatility
        ]
    )
    return obs.astype(np.float32)


def assert_close(numpy_out: np.ndarray, torch_out: th.Tensor) -> None:
    t = torch_out.detach().cpu().numpy().astype(np.float64)
    assert numpy_out.shape == t.shape
    scale = float(np.abs(t).max())
    np.testing.assert_allclose(numpy_out, t, rtol=1e-5, atol=1e-5 * scale)


def build_deep_q(algo: str, hyperparams: dict, learn_steps: int = 3000):
    req = request(algo, hyperparams={"learning_starts": 500, **hyperparams})
    params_class = deep_q.QRDQNParams if algo == "qrdqn" else deep_q.DQNParams
    params = parse_hyperparams(algo, params_class, req.hyperparams)
    vec_env = make_train_env(req, discrete_only=True)
    model = deep_q.build_model(algo, params, vec_env, seed=0)
    model.learn(learn_steps)
    assert model._n_updates > 0  # the weights moved away from their initialisation
    policy = deep_q.export_policy(model, algo, vec_env.core.observations, "seed004")
    return model, policy


# -- export equivalence ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "hyperparams",
    [{}, {"double": False, "dueling": False}],
    ids=["double-dueling", "plain"],
)
def test_dqn_export_decides_like_predict(hyperparams: dict) -> None:
    model, policy = build_deep_q("dqn", hyperparams)
    dueling = hyperparams.get("dueling", True)
    assert isinstance(model.policy.q_net, deep_q.DuelingQNetwork) == dueling
    obs = random_observations(N_OBS, 1)
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(policy.act(obs), expected)
    with th.no_grad():
        assert_close(policy.outputs(obs), model.q_net(th.as_tensor(obs)))
    # masked decisions too: the masked argmax of the same Q values
    masks = random_masks(N_OBS, 5, 2)
    with th.no_grad():
        q = model.q_net(th.as_tensor(obs)).numpy()
    np.testing.assert_array_equal(policy.act(obs, masks), np.where(masks, q, -np.inf).argmax(1))


@pytest.mark.parametrize("cvar_alpha", [1.0, 0.25])
def test_qrdqn_export_decides_like_predict(cvar_alpha: float) -> None:
    model, policy = build_deep_q("qrdqn", {"cvar_alpha": cvar_alpha, "n_quantiles": 20})
    assert policy.head == "quantiles" and policy.cvar_alpha == cvar_alpha
    obs = random_observations(N_OBS, 3)
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(policy.act(obs), expected)
    net = model.policy.quantile_net
    with th.no_grad():
        quantiles = net(th.as_tensor(obs))  # (n, n_quantiles, n_actions)
        assert_close(policy.outputs(obs), quantiles.transpose(1, 2).reshape(N_OBS, -1))
        assert_close(policy.action_scores(obs), deep_q.quantile_scores(quantiles, cvar_alpha))
    if cvar_alpha < 1.0:  # the CVaR rule is not the mean's: some decisions differ
        mean_choice = quantiles.mean(dim=1).argmax(dim=1).numpy()
        assert (mean_choice != expected).any()


def test_cvar_scores_match_numpy_policy_rule() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 7, 3))  # (n, n_quantiles, n_actions)
    for alpha in (1.0, 0.5, 0.3, 0.1, 0.01):
        k = deep_q.cvar_count(alpha, 7)
        expected = np.sort(q, axis=1)[:, :k, :].mean(axis=1)
        got = deep_q.quantile_scores(th.as_tensor(q), alpha).numpy()
        np.testing.assert_allclose(got, expected if alpha < 1 else q.mean(axis=1))
        policy = NumpyPolicy(
            "q",
            ("a",),
            "seed004",
            "quantiles",
            weights=[np.eye(21)[:1], np.zeros(21)],
            n_quantiles=7,
            cvar_alpha=alpha,
        )
        assert max(1, int(np.ceil(policy.cvar_alpha * policy.n_quantiles))) == k


def random_masks(n: int, n_actions: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = rng.random((n, n_actions)) < 0.5
    masks[np.arange(n), rng.integers(n_actions, size=n)] = True  # at least one allowed
    return masks


def build_ppo(algo: str, actions: str):
    req = request(algo, actions=actions, hyperparams={"n_steps": 8})
    params = parse_hyperparams(algo, ppo.PPOParams, req.hyperparams)
    vec_env = make_train_env(req, discrete_only=algo == "maskable-ppo")
    model = ppo.build_model(algo, params, vec_env, seed=0)
    model.learn(2 * 16 * 8)  # two rollouts, two updates
    policy = ppo.export_policy(model, algo, vec_env.core.observations, actions)
    return model, policy


@pytest.mark.parametrize("actions", ["seed004", "continuous"])
def test_ppo_export_decides_like_predict(actions: str) -> None:
    model, policy = build_ppo("ppo", actions)
    obs = random_observations(N_OBS, 4)
    expected, _ = model.predict(obs, deterministic=True)
    with th.no_grad():
        latent = model.policy.mlp_extractor.forward_actor(th.as_tensor(obs))
        raw = model.policy.action_net(latent)
    assert_close(policy.outputs(obs), raw)
    if actions == "continuous":
        assert policy.head == "gaussian_mean"
        got = policy.act(obs)
        assert got.shape == expected.shape == (N_OBS, 1)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        # the clip to [0, 1] is exercised
        assert ((expected == 0.0) | (expected == 1.0)).any()
    else:
        assert policy.head == "argmax"
        np.testing.assert_array_equal(policy.act(obs), expected)


def test_maskable_ppo_export_decides_like_predict_with_masks() -> None:
    model, policy = build_ppo("maskable-ppo", "seed004")
    obs = random_observations(N_OBS, 5)
    masks = random_masks(N_OBS, 5, 6)
    expected, _ = model.predict(obs, deterministic=True, action_masks=masks)
    got = policy.act(obs, masks)
    np.testing.assert_array_equal(got, expected)
    assert masks[np.arange(N_OBS), got].all()
    unmasked, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(policy.act(obs), unmasked)
    assert (unmasked != expected).any()  # the masks did change some decisions


# -- Double DQN target ------------------------------------------------------------------------
def test_double_dqn_target_uses_online_argmax_and_target_values() -> None:
    models = {}
    for double in (True, False):
        req = request("dqn", hyperparams={"double": double})
        params = parse_hyperparams("dqn", deep_q.DQNParams, req.hyperparams)
        vec_env = make_train_env(req, discrete_only=True)
        models[double] = deep_q.build_model("dqn", params, vec_env, seed=0)
    double_model = models[True]
    # make online and target networks disagree, and give the plain model the same networks
    with th.no_grad():
        for p in double_model.q_net.parameters():
            p.add_(0.5 * th.randn_like(p))
    models[False].policy.load_state_dict(double_model.policy.state_dict())

    n = 512
    gen = th.Generator().manual_seed(0)
    next_obs = th.as_tensor(random_observations(n, 7))
    batch = ReplayBufferSamples(
        observations=th.as_tensor(random_observations(n, 8)),
        actions=th.randint(0, 5, (n, 1), generator=gen),
        next_observations=next_obs,
        dones=(th.rand(n, 1, generator=gen) < 0.2).float(),
        rewards=th.randn(n, 1, generator=gen),
    )
    gamma = 0.995
    with th.no_grad():
        q_online = double_model.q_net(next_obs)
        q_target = double_model.q_net_target(next_obs)
    a_online = q_online.argmax(dim=1)
    differs = a_online != q_target.argmax(dim=1)
    assert differs.sum() > 20  # the crafted case: the two networks pick different actions

    expected_double = (
        batch.rewards[:, 0] + (1 - batch.dones[:, 0]) * gamma * q_target[th.arange(n), a_online]
    )
    expected_plain = batch.rewards[:, 0] + (1 - batch.dones[:, 0]) * gamma * q_target.max(1).values
    got_double = double_model.td_target(batch, gamma)[:, 0]
    got_plain = models[False].td_target(batch, gamma)[:, 0]
    th.testing.assert_close(got_double, expected_double)
    th.testing.assert_close(got_plain, expected_plain)
    live = differs & (batch.dones[:, 0] == 0)
    assert (got_double[live] < got_plain[live]).all()  # max over target ≥ any other action
    th.testing.assert_close(got_double[~live], got_plain[~live])


def test_train_step_uses_td_target(monkeypatch: pytest.MonkeyPatch) -> None:
    for algo in ("dqn", "qrdqn"):
        model, _ = build_deep_q(algo, {}, learn_steps=600)
        calls: list[int] = []
        original = model.td_target

        def spy(replay_data, discounts, original=original, calls=calls):
            calls.append(replay_data.rewards.shape[0])
            return original(replay_data, discounts)

        monkeypatch.setattr(model, "td_target", spy)
        before = [p.detach().clone() for p in model.policy.parameters()]
        model.train(gradient_steps=2, batch_size=32)
        assert calls == [32, 32]
        assert any(
            not th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True)
        )


def test_qrdqn_target_follows_the_cvar_choice() -> None:
    model, _ = build_deep_q("qrdqn", {"cvar_alpha": 0.25, "n_quantiles": 20}, learn_steps=600)
    n = 256
    next_obs = th.as_tensor(random_observations(n, 9))
    batch = ReplayBufferSamples(
        observations=next_obs,
        actions=th.zeros(n, 1, dtype=th.long),
        next_observations=next_obs,
        dones=th.zeros(n, 1),
        rewards=th.zeros(n, 1),
    )
    with th.no_grad():
        quantiles = model.quantile_net_target(next_obs)
    choice = deep_q.quantile_scores(quantiles, 0.25).argmax(dim=1)
    expected = 0.9 * quantiles[th.arange(n), :, choice]
    th.testing.assert_close(model.td_target(batch, 0.9), expected)


# -- masks ------------------------------------------------------------------------------------
def count_cuts(vec_env) -> dict[str, int]:
    """Wrap the env's core.step to add up cuts of finished episodes; the caller adds the
    episodes still running (``core.stats.cuts``) at the end."""
    total = {"finished": 0}
    core = vec_env.core
    step = core.step

    def counting_step(actions):
        out = step(actions)
        info = out[4]
        if "episode" in info:
            total["finished"] += int(info["episode"]["cuts"].sum())
            assert info["episode"]["breaches"].sum() == 0
        return out

    core.step = counting_step
    return total


def test_maskable_ppo_never_chooses_a_masked_action() -> None:
    order = DEFAULT_ORDER.model_copy(update={"constraints": OrderConstraints(child_max=60000)})
    req = request(
        "maskable-ppo", actions="seed003", order=order, n_envs=64, hyperparams={"n_steps": 10}
    )
    params = parse_hyperparams("maskable-ppo", ppo.PPOParams, req.hyperparams)
    vec_env = make_train_env(req, discrete_only=True)
    total = count_cuts(vec_env)
    model = ppo.build_model("maskable-ppo", params, vec_env, seed=0)
    model.learn(64 * 10 * 3)  # three rollouts of sampled (stochastic) masked actions
    # then greedy decisions with the env's masks
    obs = vec_env.reset()
    masked_steps = 0
    for _ in range(25):
        masks = vec_env.action_masks()
        masked_steps += int((~masks).any(axis=1).sum())
        actions, _ = model.predict(obs, deterministic=True, action_masks=masks)
        obs, *_ = vec_env.step(actions)
    assert masked_steps > 0  # the constraint binds
    assert total["finished"] + int(vec_env.core.stats.cuts.sum()) == 0

    # the same env with uniformly random actions is cut: the count is meaningful
    rng = np.random.default_rng(0)
    vec_env.reset()
    for _ in range(10):
        vec_env.step(rng.integers(5, size=64))
    assert total["finished"] + int(vec_env.core.stats.cuts.sum()) > 0
    assert vec_env.core.stats.breaches.sum() == 0


# -- learning -----------------------------------------------------------------------------------
class UniformRandomPolicy:
    name = "random"
    observations = ("remaining_ratio", "elapsed_ratio", "price_drift", "volatility")
    action_set = "seed004"

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def act(self, observations: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        return self.rng.integers(5, size=observations.shape[0])


def test_short_ppo_training_beats_random() -> None:
    config = EnvConfig(actions="seed004", reward="is_bps")
    req = request("ppo", env_config=config, steps=150_000, n_envs=256, seed=3)
    out = ppo.train(req, lambda steps: None)
    assert len(out.curve) > 0
    learned = run_policy(out.policy, config, DEFAULT_ORDER, 1000, 11).episodes["is_bps"]
    random = run_policy(UniformRandomPolicy(0), config, DEFAULT_ORDER, 1000, 11).episodes
    cmp = paired_comparison("ppo", learned.to_numpy(), "random", random["is_bps"].to_numpy())
    assert cmp.ci95[1] < 0.0, cmp  # cheaper than random, CI excludes 0


# -- checkpoint -------------------------------------------------------------------------------
def test_run_training_writes_a_checkpoint_that_decides_identically(tmp_path, monkeypatch) -> None:
    captured = {}
    train = deep_q.train

    def spy(req, on_progress):
        captured["out"] = train(req, on_progress)
        return captured["out"]

    monkeypatch.setattr(deep_q, "train", spy)
    progress: list[int] = []
    req = request("qrdqn", steps=800, hyperparams={"learning_starts": 200, "cvar_alpha": 0.5})
    config = run_training(req, tmp_path / "ck", on_progress=progress.append)
    folder = tmp_path / "ck"
    assert progress and progress[-1] >= 800
    assert config["sb3"]["class"] == "RiskQRDQN" and config["sb3"]["n_updates"] > 0
    assert (folder / "native" / "model.zip").is_file()
    loaded = NumpyPolicy.load(folder)
    in_memory = captured["out"].policy
    assert loaded.policy_hash() == in_memory.policy_hash() == config["policy_hash"]
    obs = random_observations(N_OBS, 12)
    np.testing.assert_array_equal(loaded.act(obs), in_memory.act(obs))
    # the native SB3 model reloads and decides the same
    native = deep_q.RiskQRDQN.load(folder / "native" / "model.zip", device="cpu")
    np.testing.assert_array_equal(native.predict(obs, deterministic=True)[0], loaded.act(obs))


# -- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["dqn", "qrdqn", "ppo", "maskable-ppo"])
def test_unknown_hyperparameter_is_refused_by_name(algo: str) -> None:
    module = deep_q if algo in ("dqn", "qrdqn") else ppo
    with pytest.raises(ConfigError, match="'learning_rat'"):
        module.train(request(algo, hyperparams={"learning_rat": 1e-3}), lambda s: None)


@pytest.mark.parametrize(
    ("algo", "hyperparams", "needle"),
    [
        ("qrdqn", {"cvar_alpha": 1.5}, "cvar_alpha"),
        ("dqn", {"dueling": True, "cvar_alpha": 0.5}, "'cvar_alpha'"),
        ("dqn", {"gamma": "0.9"}, "gamma"),
        ("ppo", {"n_steps": 0}, "n_steps"),
        ("ppo", {"log_std_init": -2.0}, "log_std_init"),  # discrete action set
    ],
)
def test_bad_hyperparameter_values_are_refused(algo, hyperparams, needle) -> None:
    module = deep_q if algo in ("dqn", "qrdqn") else ppo
    with pytest.raises(ConfigError, match=needle):
        module.train(request(algo, hyperparams=hyperparams), lambda s: None)


@pytest.mark.parametrize("algo", ["dqn", "qrdqn", "maskable-ppo"])
def test_continuous_actions_are_refused_for_discrete_algorithms(algo: str) -> None:
    module = deep_q if algo in ("dqn", "qrdqn") else ppo
    with pytest.raises(ConfigError, match=rf"{algo} needs a discrete action set.*'continuous'"):
        module.train(request(algo, actions="continuous"), lambda s: None)


def test_dqn_schedule_keeps_the_replay_ratio() -> None:
    assert deep_q.DQNParams().schedule(256) == (1, 4)  # default replay ratio 4: 4 x 256
    params = deep_q.DQNParams(replay_ratio=8.0)
    assert params.schedule(256) == (1, 8)  # 256 transitions per call, 8 × 256 samples
    assert params.schedule(16) == (2, 1)  # 32 transitions per gradient step of 256
    assert params.schedule(1) == (32, 1)
    assert deep_q.DQNParams(gradient_steps=3).schedule(256) == (1, 3)
    assert deep_q.DQNParams(train_freq=4).schedule(256) == (4, 1)


@pytest.mark.parametrize("algo", ["dqn", "qrdqn"])
def test_linear_learning_rate_falls_to_zero_over_the_run(algo: str) -> None:
    params_class = deep_q.QRDQNParams if algo == "qrdqn" else deep_q.DQNParams
    req = request(algo)
    env = make_train_env(req, discrete_only=True)
    constant = deep_q.build_model(algo, params_class(learning_rate=1e-3), env, seed=0)
    assert [constant.lr_schedule(p) for p in (1.0, 0.0)] == [1e-3, 1e-3]
    params = params_class(learning_rate=1e-3, lr_schedule="linear", learning_starts=0)
    model = deep_q.build_model(algo, params, env, seed=0)
    assert [model.lr_schedule(p) for p in (1.0, 0.5, 0.0)] == pytest.approx([1e-3, 5e-4, 0.0])
    model.learn(16 * 40)  # 40 batched steps: the optimiser's rate follows the progress
    rate = model.policy.optimizer.param_groups[0]["lr"]
    assert 0.0 <= rate < 1e-3 * 0.05


def test_exploration_is_per_decision_and_greedy_when_deterministic() -> None:
    req = request("dqn")
    params = parse_hyperparams("dqn", deep_q.DQNParams, {})
    model = deep_q.build_model("dqn", params, make_train_env(req, discrete_only=True), seed=0)
    obs = random_observations(4000, 13)
    greedy, _ = model.predict(obs, deterministic=True)
    model.exploration_rate = 0.5
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], greedy)
    explored, _ = model.predict(obs, deterministic=False)
    changed = float((explored != greedy).mean())
    assert 0.35 < changed < 0.45  # 0.5 · 4/5 of the decisions, not all or none of the batch
    assert explored.min() >= 0 and explored.max() < 5


@pytest.mark.parametrize("algo", ["dqn", "maskable-ppo"])
def test_training_is_reproducible_from_the_seed(algo: str) -> None:
    module = deep_q if algo == "dqn" else ppo
    hyperparams = {"learning_starts": 200} if algo == "dqn" else {"n_steps": 8}
    hashes = [
        module.train(
            request(algo, steps=1000, seed=s, hyperparams=hyperparams), lambda steps: None
        ).policy.policy_hash()
        for s in (5, 5, 6)
    ]
    assert hashes[0] == hashes[1] != hashes[2]
