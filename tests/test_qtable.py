"""Tests for execrl.agents.qtable: the seed-003 tabular Q-learning agent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from execrl.agents.export import NumpyPolicy
from execrl.agents.qtable import (
    PRODUCTION_EPSILON,
    QLearningConfig,
    QTableAgent,
    ReplayBuffer,
    StateBuckets,
    StateDiscretiser,
    q_update_sequential,
    train,
    uniform_edges,
)
from execrl.agents.train import TrainRequest, run_training
from execrl.domain import ConfigError, OrderConstraints
from execrl.env import EnvConfig, make_execution
from execrl.env.factory import DEFAULT_ORDER
from execrl.evaluate.backtest import run_policy
from execrl.evaluate.stats import paired_comparison
from execrl.policies.base import Policy
from execrl.sim import ACMarketConfig

REPO = Path(__file__).resolve().parents[1]
SEED004 = ("remaining_ratio", "elapsed_ratio", "price_drift", "volatility")
AC_SEED003 = EnvConfig(actions="seed003", observations="seed004", reward="is_bps")


def config(**sections: dict) -> QLearningConfig:
    return QLearningConfig.from_dict(sections)


def request(
    env_config: EnvConfig = AC_SEED003,
    steps: int = 2048,
    seed: int = 0,
    n_envs: int = 64,
    hyperparams: dict | None = None,
) -> TrainRequest:
    return TrainRequest(
        algo="qtable",
        env_name="ac",
        env_config=env_config,
        order=DEFAULT_ORDER,
        steps=steps,
        seed=seed,
        n_envs=n_envs,
        hyperparams=hyperparams or {},
    )


class UniformRandom:
    """A uniformly random choice among the allowed actions (the baseline to beat)."""

    name = "random"
    action_set = "seed003"

    def __init__(self, observations: tuple[str, ...], seed: int):
        self.observations = observations
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        keys = self.rng.random((len(obs), 5))
        if masks is not None:
            keys[~masks] = -1.0
        return keys.argmax(axis=1)


# -- the update ---------------------------------------------------------------------------------
def test_sequential_update_by_hand() -> None:
    # alpha = 0.5, gamma = 0.9, Q starts at 0; values worked out by hand:
    # 1. (s0, a0, r=1, s1)            Q[0,0] = 0 + .5(1 + .9·0 − 0)          = 0.5
    # 2. the same pair again          Q[0,0] = .5 + .5(1 + 0 − .5)          = 0.75
    #    (a vectorised np.add.at of both would give 1.0)
    # 3. (s1, a1, r=2, s0)            Q[1,1] = .5(2 + .9·max(.75, 0))       = 1.3375
    # 4. (s0, a1, r=−1, s1, terminal) Q[0,1] = .5(−1) (no bootstrap)        = −0.5
    # 5. (s0, a0, r=0, s1, only a0 allowed in s1):
    #                                 Q[0,0] = .75 + .5(0 + .9·Q[1,0] − .75) = 0.375
    #    (with a1 allowed it would be .75 + .5(.9·1.3375 − .75) = 0.976875)
    q = np.zeros((2, 2))
    q_update_sequential(
        q,
        states=[0, 0, 1, 0, 0],
        actions=[0, 0, 1, 1, 0],
        rewards=[1.0, 1.0, 2.0, -1.0, 0.0],
        next_states=[1, 1, 0, 1, 1],
        dones=[False, False, False, True, False],
        next_masks=[[True, True]] * 4 + [[True, False]],
        alpha=0.5,
        gamma=0.9,
    )
    np.testing.assert_allclose(q, [[0.375, -0.5], [0.0, 1.3375]], rtol=1e-15)

    q2 = np.zeros((2, 2))
    q_update_sequential(
        q2,
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [1.0, 1.0, 2.0, -1.0, 0.0],
        [1, 1, 0, 1, 1],
        [False] * 3 + [True, False],
        None,
        0.5,
        0.9,
    )
    assert q2[0, 0] == pytest.approx(0.976875, rel=1e-15)


def test_terminal_transition_ignores_next_state() -> None:
    q = np.array([[0.0, 0.0], [100.0, 100.0]])
    q_update_sequential(q, [0], [1], [3.0], [1], [True], None, alpha=1.0, gamma=1.0)
    assert q[0, 1] == 3.0
    q_update_sequential(q, [0], [0], [3.0], [1], [False], None, alpha=1.0, gamma=1.0)
    assert q[0, 0] == 103.0


def test_replay_path_applies_updates_one_after_another() -> None:
    # one terminal transition (r = 1) in a buffer of one, one update per transition added:
    # after k updates Q = 1 − (1 − alpha)^k, which only sequential application gives
    cfg = config(
        q_learning={"alpha": 0.5},
        replay_buffer={"capacity": 1, "batch_size": 1, "update_frequency": 1},
    )
    agent = QTableAgent(cfg, ("remaining_ratio",), "seed003", rng=0)
    for k in range(1, 6):
        ran = agent.add_transitions(
            np.array([2]), np.array([3]), np.array([1.0]), np.array([0]), np.array([True])
        )
        assert ran == 1
        assert agent.q_table[2, 3] == pytest.approx(1.0 - 0.5**k, rel=1e-15)
    assert agent.update_counts[2, 3] == 5
    assert agent.update_counts.sum() == 5


def test_replay_batches_sample_without_replacement_and_count_transitions() -> None:
    cfg = config(replay_buffer={"capacity": 64, "batch_size": 32, "update_frequency": 32})
    agent = QTableAgent(cfg, ("remaining_ratio", "elapsed_ratio"), "seed003", rng=1)
    n = 32  # 32 distinct (state, action) pairs; a batch of 32 from 32 takes each once
    states = np.arange(n) % agent.discretiser.n_states
    actions = np.arange(n) // agent.discretiser.n_states
    ran = agent.add_transitions(states, actions, np.ones(n), states, np.ones(n, dtype=bool))
    assert ran == 1
    np.testing.assert_array_equal(agent.update_counts[states, actions], 1)
    # update_frequency counts transitions across calls: 20 + 20 -> one more batch, 8 pending
    assert (
        agent.add_transitions(
            states[:20], actions[:20], np.ones(20), states[:20], np.ones(20, dtype=bool)
        )
        == 0
    )
    assert (
        agent.add_transitions(
            states[:20], actions[:20], np.ones(20), states[:20], np.ones(20, dtype=bool)
        )
        == 1
    )
    assert agent.update_batches == 2
    assert agent.transitions == 72
    assert agent.buffer.size == 64


def test_replay_ring_buffer_keeps_the_newest() -> None:
    buf = ReplayBuffer(capacity=5, n_actions=2)
    ones, mask = np.ones(12), np.ones((12, 2), dtype=bool)
    buf.add(np.arange(3), ones[:3], ones[:3], ones[:3], ones[:3] > 0, mask[:3])
    assert buf.size == 3
    buf.add(np.arange(3, 10), ones[:7], ones[:7], ones[:7], ones[:7] > 0, mask[:7])  # > capacity
    assert buf.size == 5 and set(buf.states) == {5, 6, 7, 8, 9}
    buf.add(np.arange(10, 12), ones[:2], ones[:2], ones[:2], ones[:2] > 0, mask[:2])
    assert set(buf.states) == {7, 8, 9, 10, 11}


# -- discretisation -------------------------------------------------------------------------------
def test_edges_and_boundaries() -> None:
    edges = uniform_edges(5, 0.0, 1.0)
    assert len(edges) == 4 and (edges > 0).all() and (edges < 1).all()
    disc = StateDiscretiser(("remaining_ratio",), StateBuckets(remaining_buckets=5))
    values = [0.0, 0.1999, 0.2, 0.4, 0.6, 0.8, 0.9999, 1.0]
    expect = [0, 0, 1, 2, 3, 4, 4, 4]
    for dtype in (np.float64, np.float32):
        x = np.array(values, dtype=dtype)[:, None]
        np.testing.assert_array_equal(disc.index(x), expect, err_msg=str(dtype))
    # symmetric: signal on [-2, 2]; values beyond the range go to the end buckets
    sig = StateDiscretiser(("signal",), StateBuckets(imbalance_buckets=5))
    x = np.array([-9.0, -2.0, -1.2, -0.4, 0.0, 0.3999, 0.4, 1.2, 2.0, 9.0], dtype=np.float32)
    np.testing.assert_array_equal(sig.index(x[:, None]), [0, 0, 1, 2, 2, 2, 3, 4, 4, 4])


@pytest.mark.parametrize("n_steps", [*range(1, 40), 100, 390, 1000])
def test_each_decision_step_has_its_own_time_bucket(n_steps: int) -> None:
    disc = StateDiscretiser(("elapsed_ratio",), StateBuckets(time_buckets=n_steps))
    k = np.arange(n_steps)
    for x in (k / n_steps, (k / n_steps).astype(np.float32)):
        np.testing.assert_array_equal(disc.index(x[:, None]), k)


def test_time_buckets_match_the_environments_steps() -> None:
    market = ACMarketConfig(n_steps=13)
    core = make_execution(EnvConfig(market=market, actions="seed003"), DEFAULT_ORDER, n_envs=3)
    disc = StateDiscretiser(SEED004, StateBuckets(time_buckets=13))
    obs = core.reset(seed=0)
    for k in range(13):
        np.testing.assert_array_equal(disc.buckets_of(obs)[:, 1], k)
        obs, *_ = core.step(np.zeros(3, dtype=np.int64))  # wait: the order runs to the end


def test_hour_buckets_are_the_seeds_hour_over_four() -> None:
    disc = StateDiscretiser(("hour_of_day",), StateBuckets(hour_buckets=6))
    hours = np.arange(24, dtype=np.float32)
    np.testing.assert_array_equal(disc.index(hours[:, None]), np.arange(24) // 4)


def test_mixed_radix_index_matches_numpy_policy() -> None:
    buckets = StateBuckets(
        remaining_buckets=7,
        time_buckets=10,
        imbalance_buckets=3,
        drift_buckets=4,
        volatility_buckets=1,
    )
    features = ("remaining_ratio", "elapsed_ratio", "price_drift", "volatility", "signal")
    disc = StateDiscretiser(features, buckets)
    assert disc.n_states == 7 * 10 * 4 * 1 * 3
    rng = np.random.default_rng(0)
    obs = np.column_stack(
        [
            rng.random(5000),
            rng.integers(0, 10, 5000) / 10,
            rng.normal(0, 2, 5000),
            rng.uniform(0.5, 2, 5000),
            rng.normal(0, 1.5, 5000),
        ]
    ).astype(np.float32)
    obs[:10, 0] = np.arange(10) / 7  # some values on the edges
    b = disc.buckets_of(obs)
    manual = (((b[:, 0] * 10 + b[:, 1]) * 4 + b[:, 2]) * 1 + b[:, 3]) * 3 + b[:, 4]
    idx = disc.index(obs)
    np.testing.assert_array_equal(idx, manual)
    assert idx.min() >= 0 and idx.max() < disc.n_states
    assert (b[:, 3] == 0).all()  # one bucket: not part of the key
    agent = QTableAgent(QLearningConfig(state=buckets), features, "seed003", rng=0)
    policy = agent.to_numpy_policy()
    np.testing.assert_array_equal(policy.state_index(obs), idx)
    assert policy.q_table.shape == (disc.n_states, 5)


def test_features_without_a_bucket_rule_are_refused() -> None:
    with pytest.raises(ConfigError, match="'last_volume_ratio' has no bucket rule"):
        StateDiscretiser(("remaining_ratio", "last_volume_ratio"), StateBuckets())
    with pytest.raises(ConfigError, match="'last_volume_ratio' has no bucket rule"):
        train(request(EnvConfig(actions="seed003", observations="full")), lambda n: None)


# -- exploration --------------------------------------------------------------------------------
def test_epsilon_decays_per_update_batch_to_its_floor() -> None:
    cfg = config(
        q_learning={"epsilon": 0.9, "epsilon_min": 0.1, "epsilon_decay": 0.9},
        replay_buffer={"capacity": 100, "batch_size": 4, "update_frequency": 3},
    )
    agent = QTableAgent(cfg, ("remaining_ratio",), "seed003", rng=0)
    one = (np.array([0]), np.array([0]), np.array([0.0]), np.array([0]), np.array([True]))
    for t in range(1, 70):
        agent.add_transitions(*one)
        k = t // 3
        assert agent.update_batches == k
        assert agent.epsilon == pytest.approx(max(0.1, 0.9 * 0.9**k), rel=1e-12)
    assert agent.epsilon == 0.1
    # production: the seed's fixed 5 %; evaluation: greedy. Neither decays.
    for mode, eps in (("production", PRODUCTION_EPSILON), ("evaluation", 0.0)):
        agent.set_mode(mode)
        for _ in range(9):
            agent.add_transitions(*one)
        assert agent.epsilon == eps
    agent.set_mode("training")
    assert agent.epsilon == 0.9


def test_production_exploration_never_picks_a_masked_action() -> None:
    order = DEFAULT_ORDER.model_copy(update={"constraints": OrderConstraints(child_max=60000)})
    cfg = QLearningConfig(mode="production")
    agent = QTableAgent(cfg, SEED004, "seed003", rng=3)
    assert agent.epsilon == PRODUCTION_EPSILON
    agent.epsilon = 1.0  # explore on every decision
    core = make_execution(AC_SEED003, order, n_envs=200, autoreset=True)
    obs = core.reset(seed=1)
    seen_masked_rows = 0
    chosen = np.zeros(5, dtype=np.int64)
    for _ in range(60):
        masks = core.action_masks()
        actions = agent.act(obs, masks)
        assert masks[np.arange(len(actions)), actions].all()
        seen_masked_rows += int((~masks).any(axis=1).sum())
        np.add.at(chosen, actions, 1)
        obs, *_ = core.step(actions)
        assert core.stats.cuts.sum() == 0 and core.stats.breaches.sum() == 0
    assert seen_masked_rows > 1000  # the limit did bind
    assert (chosen > 0).all()  # and every action was explored where allowed
    # synthetic masks: exploration is uniform among the allowed actions only
    rng = np.random.default_rng(0)
    masks = rng.random((20000, 5)) < 0.4
    masks[~masks.any(axis=1), 2] = True
    obs = np.tile(obs[:1], (20000, 1))
    actions = agent.act(obs, masks)
    assert masks[np.arange(20000), actions].all()
    only = masks.sum(axis=1) == 2
    first = masks[only].argmax(axis=1)
    share = (actions[only] == first).mean()
    assert 0.45 < share < 0.55


def test_evaluation_mode_is_greedy_and_equals_the_export() -> None:
    agent = QTableAgent(QLearningConfig(mode="evaluation"), SEED004, "seed003", rng=0)
    rng = np.random.default_rng(1)
    agent.q_table[...] = rng.normal(size=agent.q_table.shape)
    agent.q_table[3] = 0.0  # a row of ties: the lowest allowed action, in both
    obs = random_observations(rng, 4000)
    masks = random_masks(rng, 4000)
    policy = agent.to_numpy_policy()
    assert isinstance(policy, NumpyPolicy) and policy.head == "qtable"
    for m in (masks, None):
        np.testing.assert_array_equal(agent.act(obs, m), policy.act(obs, m))
        np.testing.assert_array_equal(agent.act(obs, m), agent.greedy(obs, m))
    # the agent is a Policy: it runs through the environment like the export, order for order
    assert isinstance(agent, Policy)
    own = run_policy(agent, AC_SEED003, DEFAULT_ORDER, 50, seed=9)
    exported = run_policy(policy, AC_SEED003, DEFAULT_ORDER, 50, seed=9)
    np.testing.assert_array_equal(own.schedules, exported.schedules)


# -- configuration --------------------------------------------------------------------------------
def test_config_file_and_named_configuration_hold_the_seed_values() -> None:
    """configs/rl_execution.toml and `--config seed003` are seed 003's values; execrl's own
    defaults differ from them where measurement said so (remaining buckets, alpha, gamma)."""
    from execrl.agents.defaults import named_config

    cfg = QLearningConfig.from_toml(REPO / "configs" / "rl_execution.toml")
    assert cfg == QLearningConfig.from_dict(named_config("qtable", "seed003"))
    default = QLearningConfig()
    assert cfg != default
    assert (default.state.remaining_buckets, default.q_learning.alpha,
            default.q_learning.gamma) == (20, 0.01, 1.0)
    assert default.model_copy(update={
        "state": cfg.state, "q_learning": cfg.q_learning}) == cfg  # nothing else differs
    ql, st, rb = cfg.q_learning, cfg.state, cfg.replay_buffer
    assert (ql.alpha, ql.gamma, ql.epsilon, ql.epsilon_min, ql.epsilon_decay) == (
        0.1,
        0.99,
        0.3,
        0.05,
        0.995,
    )
    assert (
        st.remaining_buckets,
        st.time_buckets,
        st.spread_buckets,
        st.imbalance_buckets,
        st.hour_buckets,
    ) == (5, 10, 5, 5, 6)
    assert (rb.capacity, rb.batch_size, rb.update_frequency) == (10000, 32, 10)
    assert cfg.mode == "training"
    # the CLI hands the loaded TOML over as hyper-parameters: the same config
    import tomllib

    data = tomllib.loads((REPO / "configs" / "rl_execution.toml").read_text())
    assert QLearningConfig.from_dict(data) == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"q_learning": {"alpah": 0.1}}, "q_learning.alpah"),
        ({"alpha": 0.1}, "'alpha'"),
        ({"q_learning": {"alpha": 2.0}}, "'q_learning.alpha' = 2.0"),
        ({"q_learning": {"alpha": "0.1"}}, "'q_learning.alpha' = '0.1'"),
        ({"q_learning": {"epsilon": 0.1, "epsilon_min": 0.2}}, "epsilon_min = 0.2"),
        ({"state": {"time_buckets": 0}}, "'state.time_buckets' = 0"),
        ({"state": {"time_buckets": 2.5}}, "'state.time_buckets' = 2.5"),
        ({"replay_buffer": {"capacity": 10, "batch_size": 32}}, "batch_size = 32"),
        ({"mode": "live"}, "'mode' = 'live'"),
        ({"reward": {"fill_weight": 10.0}}, "'rl_execution.reward' does not apply"),
        ({"rl_execution": {"enabled": True}}, "'rl_execution.enabled' does not apply"),
        ({"rl_execution": {"persistence": {}}}, "'rl_execution.persistence' does not apply"),
        ({"rl_execution": {}, "extra": 1}, "'extra' is unknown"),
    ],
)
def test_bad_config_is_refused_by_name(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        QLearningConfig.from_dict(data)


def test_toml_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        QLearningConfig.from_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[rl_execution\nmode = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml.*not valid TOML"):
        QLearningConfig.from_toml(bad)
    empty = tmp_path / "empty.toml"
    empty.write_text("[other]\n")
    with pytest.raises(ConfigError, match=r"no \[rl_execution\]"):
        QLearningConfig.from_toml(empty)


def test_train_refuses_what_it_cannot_learn() -> None:
    with pytest.raises(ConfigError, match="continuous"):
        train(request(EnvConfig(actions="continuous")), lambda n: None)
    with pytest.raises(ConfigError, match="'mode' = 'evaluation'"):
        train(request(hyperparams={"mode": "evaluation"}), lambda n: None)
    with pytest.raises(ConfigError, match=r"q_learning\.alpah"):
        train(request(hyperparams={"q_learning": {"alpah": 1}}), lambda n: None)
    with pytest.raises(ConfigError, match="more than"):
        QTableAgent(
            config(state={"remaining_buckets": 1000, "time_buckets": 1000, "drift_buckets": 1000}),
            SEED004,
            "seed003",
        )


# -- persistence ----------------------------------------------------------------------------------
def random_observations(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.column_stack(
        [
            rng.random(n),
            rng.integers(0, 11, n) / 10,
            rng.normal(0, 1, n),
            np.ones(n),
        ]
    ).astype(np.float32)


def random_masks(rng: np.random.Generator, n: int) -> np.ndarray:
    masks = rng.random((n, 5)) < 0.6
    masks[:, 0] |= ~masks.any(axis=1)
    return masks


def trained_agent() -> QTableAgent:
    cfg = config(state={"drift_buckets": 3})
    agent = QTableAgent(cfg, SEED004, "seed003", rng=0)
    agent.q_table[...] = np.random.default_rng(7).normal(size=agent.q_table.shape)
    agent.update_counts[...] = 1
    agent.set_mode("evaluation")
    return agent


def test_save_load_round_trip_decides_identically(tmp_path: Path) -> None:
    agent = trained_agent()
    agent.save(tmp_path / "agent")
    loaded = QTableAgent.load(tmp_path / "agent")
    assert loaded.config == agent.config
    assert loaded.observations == agent.observations and loaded.action_set == "seed003"
    assert loaded.mode == "evaluation" and loaded.epsilon == 0.0
    np.testing.assert_array_equal(loaded.q_table, agent.q_table)
    rng = np.random.default_rng(3)
    obs, masks = random_observations(rng, 20000), random_masks(rng, 20000)
    expected = agent.act(obs, masks)
    np.testing.assert_array_equal(loaded.act(obs, masks), expected)
    np.testing.assert_array_equal(loaded.to_numpy_policy().act(obs, masks), expected)
    # and through the exported policy's own files
    agent.to_numpy_policy().save(tmp_path / "policy")
    np.testing.assert_array_equal(NumpyPolicy.load(tmp_path / "policy").act(obs, masks), expected)


def test_missing_or_corrupt_files_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "agent"
    trained_agent().save(folder)
    spec = (folder / "qtable.json").read_text()
    (folder / "qtable.npz").write_bytes(b"not a zip file")
    with pytest.raises(ConfigError, match=r"qtable\.npz.*cannot be read"):
        QTableAgent.load(folder)
    (folder / "qtable.npz").unlink()
    with pytest.raises(ConfigError, match=r"qtable\.npz.* is missing"):
        QTableAgent.load(folder)
    trained_agent().save(folder)
    (folder / "qtable.json").write_text("{broken")
    with pytest.raises(ConfigError, match=r"qtable\.json.*cannot be read"):
        QTableAgent.load(folder)
    changed = json.loads(spec)
    changed["config"]["state"]["drift_buckets"] = 4  # the table no longer fits
    (folder / "qtable.json").write_text(json.dumps(changed))
    with pytest.raises(ConfigError, match=r"qtable\.npz.*shape"):
        QTableAgent.load(folder)
    del changed["config"]
    (folder / "qtable.json").write_text(json.dumps(changed))
    with pytest.raises(ConfigError, match=r"qtable\.json.*not valid"):
        QTableAgent.load(folder)
    (folder / "qtable.json").unlink()
    with pytest.raises(ConfigError, match=r"qtable\.json.* is missing"):
        QTableAgent.load(folder)


# -- training -----------------------------------------------------------------------------------
def test_training_is_reproducible_and_reports_progress(tmp_path: Path) -> None:
    progress: list[int] = []
    out = train(request(steps=5000, n_envs=64, seed=4), progress.append)
    again = train(request(steps=5000, n_envs=64, seed=4), lambda n: None)
    other = train(request(steps=5000, n_envs=64, seed=5), lambda n: None)
    np.testing.assert_array_equal(out.policy.q_table, again.policy.q_table)
    assert not np.array_equal(out.policy.q_table, other.policy.q_table)
    assert progress == list(range(64, 5000 + 64, 64))  # ceil(5000 / 64) batched steps
    assert len(out.curve) > 0 and out.curve["episodes"].sum() > 0
    metrics = out.extra["qtable"]
    assert metrics["transitions"] == progress[-1]
    assert metrics["update_batches"] == progress[-1] // 10
    assert QLearningConfig().replay_buffer.update_batches_per_batched_step(256) == 25.6
    # the checkpoint: numpy policy plus the native Q table, both decide alike
    req = request(steps=3000, n_envs=64, seed=4)
    written = run_training(req, tmp_path / "ckpt")
    assert written["qtable"]["transitions"] == 3008
    policy = NumpyPolicy.load(tmp_path / "ckpt")
    native = QTableAgent.load(tmp_path / "ckpt" / "native")
    native.set_mode("evaluation")
    rng = np.random.default_rng(0)
    obs, masks = random_observations(rng, 5000), random_masks(rng, 5000)
    np.testing.assert_array_equal(policy.act(obs, masks), native.act(obs, masks))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_short_training_beats_random(seed: int) -> None:
    """Seed 003's own configuration on its own actions and the seed-004 reward (execrl's
    defaults learn slower per step, with alpha 0.01: tests/test_train_defaults.py)."""
    from execrl.agents.defaults import SEED003_QTABLE

    out = train(request(steps=150_000, n_envs=256, seed=seed, hyperparams=SEED003_QTABLE),
                lambda n: None)
    trained = run_policy(out.policy, AC_SEED003, DEFAULT_ORDER, 400, seed=1000 + seed)
    random = run_policy(
        UniformRandom(out.policy.observations, seed),
        AC_SEED003,
        DEFAULT_ORDER,
        400,
        seed=1000 + seed,
    )
    cmp = paired_comparison(
        "qtable",
        trained.episodes["is_bps"].to_numpy(),
        "random",
        random.episodes["is_bps"].to_numpy(),
        n_boot=2000,
    )
    assert cmp.diff_bps_mean < 0
    assert cmp.ci95[1] < 0, cmp
    np.testing.assert_array_equal(trained.episodes["fill_rate"], 1.0)


def test_checkpoint_loads_under_any_label_with_the_same_hash(tmp_path):
    """`evaluate --policies mylabel:DIR` relabels a policy; its hash names the decision
    function, so it must verify and stay the same."""
    policy = NumpyPolicy(
        name="qtable", observations=("remaining_ratio",), action_set="seed003", head="qtable",
        bin_edges=[np.array([0.5])], q_table=np.array([[0.0, 1.0], [2.0, 0.0]]),
    )
    digest = policy.save(tmp_path)
    relabelled = NumpyPolicy.load(tmp_path, name="something-else")
    assert relabelled.name == "something-else"
    assert relabelled.policy_hash() == digest
    tampered = dict(np.load(tmp_path / "policy.npz"))
    tampered["q_table"] = tampered["q_table"] + 1.0
    np.savez(tmp_path / "policy.npz", **tampered)
    with pytest.raises(ConfigError, match="does not match its recorded hash"):
        NumpyPolicy.load(tmp_path)
