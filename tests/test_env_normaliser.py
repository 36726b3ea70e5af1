"""Online observation normalisation (issue 7 §1, seed 001 §5): the environment's z-scores
against a direct numpy computation on the same stream, no look-ahead, each decision folded
once, frozen at evaluation, the frozen state in the checkpoint (policy.json, features.json)
and refused when the two disagree; the fixed default path untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from execrl.agents.checkpoint import TrainOutput, greedy_rollout, write_checkpoint
from execrl.agents.export import NumpyPolicy
from execrl.agents.train import TrainRequest
from execrl.domain import ConfigError, ParentOrder
from execrl.env.core import BatchedExecution
from execrl.env.factory import EnvConfig, NormalisedExecution, make_execution
from execrl.env.spaces import OBSERVATION_SETS
from execrl.market.observations import ObservationNormaliser, normalisation_spec
from execrl.sim.lob_config import LOBMarketConfig

LOB = LOBMarketConfig(horizon_s=120.0, step_seconds=10.0, warmup_s=20.0)
ORDER = ParentOrder(order_id="N-1", symbol="SIM", side="buy", qty=3_000, arrival_px=25.0,
                    start_ts=0.0, horizon_s=120.0)
NAMES = OBSERVATION_SETS["seed001"]


def _normaliser(halflife: float = 40.0) -> ObservationNormaliser:
    tick_bps = LOB.tick_size / ORDER.arrival_px * 1e4
    return ObservationNormaliser(normalisation_spec(NAMES, tick_bps=tick_bps,
                                                    halflife=halflife))


def _cores(n: int, normaliser: ObservationNormaliser, autoreset: bool = False
           ) -> tuple[BatchedExecution, BatchedExecution]:
    fixed = make_execution(EnvConfig(market=LOB, observations="seed001", actions="seed004"),
                           ORDER, n_envs=n, autoreset=autoreset)
    online = make_execution(EnvConfig(market=LOB, observations="seed001", actions="seed004",
                                      normalise="online", normaliser=normaliser),
                            ORDER, n_envs=n, autoreset=autoreset)
    return fixed, online


def _reference(rows: list[np.ndarray], spec, eps: float) -> list[np.ndarray]:
    """Direct computation: after each batch is folded in (rows in order), every row of it is
    z-scored with the weighted mean and variance of all rows of its bucket so far, row i of
    n in the bucket weighing 0.5 ** ((n - i) / halflife)."""
    d = 0.5 ** (1.0 / spec.halflife)
    cols = [spec.names.index(c) for c in spec.normalised]
    bcol = spec.names.index(spec.bucket_by)
    history: dict[int, list[np.ndarray]] = {}
    out = []
    for batch in rows:
        x = batch.astype(np.float64)
        b = np.searchsorted(np.array(spec.bucket_edges), x[:, bcol], side="right")
        for r in range(x.shape[0]):
            history.setdefault(int(b[r]), []).append(x[r])
        z = batch.copy()
        for r in range(x.shape[0]):
            seen = np.array(history[int(b[r])])
            w = d ** np.arange(len(seen) - 1, -1, -1.0)
            mean = (w[:, None] * seen).sum(0) / w.sum()
            var = (w[:, None] * (seen - mean) ** 2).sum(0) / w.sum()
            zr = np.clip((x[r] - mean) / np.sqrt(var + eps), -10.0, 10.0)
            z[r, cols] = zr[cols].astype(np.float32)
        out.append(z)
    return out


def test_online_observations_match_a_direct_ewma_zscore_per_bucket():
    n, norm = 6, _normaliser()
    fixed, online = _cores(n, norm)
    raw, got = [fixed.reset(seed=3)], [online.reset(seed=3)]
    rng = np.random.default_rng(0)
    while not fixed.done.all():
        a = rng.integers(0, 5, n)
        raw.append(fixed.step(a)[0])
        got.append(online.step(a)[0])
    # the market path is the normaliser's business not at all: same fills, same raw state
    assert np.array_equal(fixed.stats.is_bps, online.stats.is_bps)
    folded = raw[:-1]  # the last observation is of finished orders: not decided on, not folded
    want = _reference(folded, norm.spec, ObservationNormaliser.EPS)
    assert len({int(b) for x in folded for b in norm.buckets(x.astype(float))}) >= 2
    for t, (w, g) in enumerate(zip(want, got[:-1], strict=True)):
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-6, err_msg=f"step {t}")
    # the order's state and the bucket's own feature pass through as the fixed scaling has them
    keep = [NAMES.index(c) for c in NAMES if c not in norm.spec.normalised]
    assert {NAMES[j] for j in keep} == {"remaining_ratio", "elapsed_ratio", "twap_deviation",
                                        "working_ratio", "spread"}
    for r, g in zip(raw, got, strict=True):
        assert np.array_equal(r[:, keep], g[:, keep])
    assert not np.allclose(raw[3][:, norm._cols], got[3][:, norm._cols])


def test_an_observation_uses_statistics_up_to_its_own_decision_only():
    """Two runs share the first 4 decisions and then act differently: their observations up
    to there are bit-for-bit equal (nothing later leaks into them)."""
    n = 4
    runs = []
    for later in (0, 4):
        _, online = _cores(n, _normaliser())
        obs = [online.reset(seed=11)]
        for k in range(LOB.for_order(ORDER).n_steps):
            obs.append(online.step(np.full(n, 2 if k < 4 else later))[0])
        runs.append(obs)
    for t in range(5):
        assert np.array_equal(runs[0][t], runs[1][t]), t
    assert not np.array_equal(runs[0][6], runs[1][6])


def test_training_folds_each_decision_once_with_autoreset():
    """With autoreset the core observes twice in a step where episodes restart; each row an
    agent decides on is folded exactly once: (steps + 1) x n_envs rows after reset and
    ``steps`` steps (a very long half-life: the weights count rows)."""
    n, steps = 5, 30  # 12 decisions an episode: episodes restart twice, some early
    norm = _normaliser(halflife=1e15)
    _, online = _cores(n, norm, autoreset=True)
    online.reset(seed=5)
    restarts = 0
    for k in range(steps):
        _, _, done, _, _ = online.step(np.full(n, 4 if k % 7 == 0 else 1))
        restarts += int(done.sum())
    assert restarts > n
    np.testing.assert_allclose(norm.norm.weight[:, 0].sum(), (steps + 1) * n, rtol=1e-9)


def test_a_locked_normaliser_is_frozen_whatever_the_evaluation_order():
    norm = _normaliser()
    _, online = _cores(8, norm)
    online.reset(seed=1)
    for _ in range(5):
        online.step(np.full(8, 1))
    frozen = norm.frozen()
    before = frozen.state()
    runs = {}
    for order in ((21, 22), (22, 21)):
        config = EnvConfig(market=LOB, observations="seed001", actions="seed004",
                           normalise="online", normaliser=frozen)
        for seed in order:
            core = make_execution(config, ORDER, n_envs=8, autoreset=False)
            obs = [core.reset(seed=seed)]
            while not core.done.all():
                obs.append(core.step(np.full(8, 2))[0])
            runs[order, seed] = np.array(obs)
    for seed in (21, 22):
        assert np.array_equal(runs[(21, 22), seed], runs[(22, 21), seed])
    assert frozen.state() == before and frozen.locked
    # and the frozen transform is the training one at the state it was frozen in
    x = online.raw_observe()
    assert np.array_equal(frozen.apply(x), norm.frozen().apply(x))


def _random_policy(names: tuple[str, ...], seed: int = 0) -> NumpyPolicy:
    rng = np.random.default_rng(seed)
    f = len(names)
    return NumpyPolicy("mlp", names, "seed004", "argmax",
                       weights=[rng.normal(size=(f, 8)), rng.normal(size=8),
                                rng.normal(size=(8, 5)), rng.normal(size=5)])


def _checkpoint(tmp_path: Path, policy: NumpyPolicy, config: EnvConfig) -> Path:
    import pandas as pd

    out = tmp_path / "ck"
    write_checkpoint(out, algo="ppo", env_name="lob", env_config=config, order=ORDER, seed=0,
                     steps=1, hyperparams={}, wall_time_s=0.0,
                     output=TrainOutput(policy, pd.DataFrame()))
    return out


@pytest.fixture(scope="module")
def trained_normaliser() -> ObservationNormaliser:
    norm = _normaliser()
    _, online = _cores(16, norm, autoreset=True)
    online.reset(seed=2)
    for k in range(24):
        online.step(np.full(16, k % 5))
    return norm


def test_the_checkpoint_restores_the_frozen_normaliser_and_decides_the_same(
        tmp_path, trained_normaliser):
    policy = _random_policy(NAMES)
    bare_hash = policy.policy_hash()
    policy.attach_normaliser(trained_normaliser)
    assert policy.normaliser.locked and policy.policy_hash() != bare_hash
    config = EnvConfig(market=LOB, observations="seed001", actions="seed004",
                       normalise="online")
    folder = _checkpoint(tmp_path, policy, config)
    saved = json.loads((folder / "features.json").read_text())["normalisation"]
    assert saved["spec"]["bucket_by"] == "spread" and saved["stats"]["locked"]
    loaded = NumpyPolicy.load(folder, checkpoint=True)
    assert loaded.normaliser.state() == policy.normaliser.state()
    assert loaded.policy_hash() == policy.policy_hash()
    assert json.loads((folder / "config.json").read_text())["env_config"]["normalise"] \
        == "online"
    # the policy normalises the fixed-scaled observations itself: evaluation needs nothing else
    raw = EnvConfig(market=LOB, observations="seed001", actions="seed004")
    a = greedy_rollout(policy, raw, ORDER, 16, seed=9)
    b = greedy_rollout(loaded, raw, ORDER, 16, seed=9)
    assert np.array_equal(a.stats.is_bps, b.stats.is_bps)
    assert np.array_equal(a.stats.schedule, b.stats.schedule)
    x = make_execution(raw, ORDER, n_envs=16).reset(seed=4)
    z = trained_normaliser.frozen().apply(x)
    np.testing.assert_array_equal(loaded.act(x), policy.act(x))
    np.testing.assert_array_equal(loaded.outputs(x), _random_policy(NAMES).outputs(z))


@pytest.mark.parametrize(("field", "value"), [("bucket_edges", [0.05, 0.2]),
                                              ("halflife", 7.0), ("bucket_by", None),
                                              ("normalised", ["imbalance_1"])])
def test_a_normaliser_that_does_not_match_is_refused_by_field(tmp_path, trained_normaliser,
                                                              field, value):
    policy = _random_policy(NAMES)
    policy.attach_normaliser(trained_normaliser)
    folder = _checkpoint(tmp_path, policy, EnvConfig(market=LOB, observations="seed001",
                                                     actions="seed004", normalise="online"))
    path = folder / "features.json"
    schema = json.loads(path.read_text())
    schema["normalisation"]["spec"][field] = value
    if field == "bucket_by":
        schema["normalisation"]["spec"]["bucket_edges"] = []
        schema["normalisation"]["stats"] = None
    if schema["normalisation"]["stats"] is None:  # one bucket: stats of another shape
        stats = trained_normaliser.state().stats.model_dump(mode="json")
        stats.update(n_buckets=1, weight=stats["weight"][:1], mean=stats["mean"][:1],
                     m2=stats["m2"][:1], last_t=stats["last_t"][:1],
                     bucket_t=stats["bucket_t"][:1], locked=True)
        schema["normalisation"]["stats"] = stats
    path.write_text(json.dumps(schema))
    with pytest.raises(ConfigError, match=f"normaliser field '{field}'") as err:
        NumpyPolicy.load(folder, checkpoint=True)
    assert "\n" not in str(err.value)


def test_a_normaliser_for_other_features_is_refused_by_name(trained_normaliser):
    other = _random_policy(OBSERVATION_SETS["seed003"])
    with pytest.raises(ConfigError, match="normaliser field 'names'"):
        other.attach_normaliser(trained_normaliser)
    config = EnvConfig(market=LOB, observations="seed003", actions="seed004",
                       normalise="online", normaliser=trained_normaliser)
    with pytest.raises(ConfigError, match="normaliser field 'names'"):
        make_execution(config, ORDER, n_envs=2)


def test_the_fixed_default_is_the_plain_core_and_the_plain_policy():
    core = make_execution(EnvConfig(), n_envs=2)
    assert type(core) is BatchedExecution
    assert "normaliser" not in _random_policy(OBSERVATION_SETS["seed004"]).spec()
    online = make_execution(EnvConfig(normalise="online"), n_envs=2)
    assert isinstance(online, NormalisedExecution)
    assert online.normaliser.spec.bucket_by is None  # the AC market has no tick grid
    with pytest.raises(ConfigError, match="--normalise 'zscore' is unknown"):
        EnvConfig(normalise="zscore")  # type: ignore[arg-type]
    for algo in ("qtable", "bc"):
        with pytest.raises(ConfigError, match=f"--normalise online does not apply to {algo}"):
            TrainRequest.with_defaults(algo, normalise="online", data=Path("x.parquet"))


def test_the_compiled_transform_is_the_online_normalisers_own():
    """``ObservationNormaliser.apply`` (compiled, row by row) gives exactly
    ``OnlineNormaliser.transform``'s z-scores, a bucket never seen reading 0."""
    norm = _normaliser(halflife=30.0)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, len(NAMES))).astype(np.float32)
    x[:, NAMES.index("spread")] = rng.choice([0.04, 0.08], 400)  # buckets 0 and 1, never 2
    norm.apply(x[:300], np.ones(300, dtype=bool))
    rows = np.concatenate([x[300:], x[:1]])
    rows[-1, NAMES.index("spread")] = 0.5  # bucket 2: no statistics
    got = norm.frozen().apply(rows)
    xb = rows.astype(np.float64)
    want = norm.norm.transform(xb, norm.buckets(xb), nan_to=0.0).astype(np.float32)
    cols = norm._cols
    assert np.array_equal(got[:, cols], want[:, cols])
    assert (got[-1, cols] == 0).all() and np.abs(got[:-1, cols]).max() > 1


def test_the_default_is_online_only_on_the_books_seed001_and_seed003_sets(tmp_path):
    from typer.testing import CliRunner

    from execrl.cli import app
    from execrl.presets import preset_market

    def mode(algo, env, observations):
        return TrainRequest.with_defaults(algo, env_name=env, market=preset_market(env),
                                          observations=observations).env_config.normalise

    assert mode("ppo", "ac", "seed004") == "fixed"
    assert mode("maskable-ppo", "lob", "seed001") == "online"
    assert mode("dqn", "lob:stressed", "seed003") == "online"
    assert mode("ppo", "lob", "seed000") == "fixed"
    assert mode("qtable", "lob", "seed003") == "fixed"
    result = CliRunner().invoke(app, ["train", "--algo", "ppo", "--out", str(tmp_path / "o"),
                                      "--normalise", "zscore"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "--normalise 'zscore' is unknown; choose from fixed, online" in result.output
    assert not (tmp_path / "o").exists()


def test_a_trained_agent_carries_its_normaliser_and_decides_the_same_after_reload(tmp_path):
    from execrl.agents.train import run_training

    request = TrainRequest.with_defaults("ppo", observations="full", steps=512, n_envs=16,
                                         normalise="online",
                                         hyperparams={"n_steps": 8, "batch_size": 64})
    run_training(request, tmp_path / "ck")
    loaded = NumpyPolicy.load(tmp_path / "ck", checkpoint=True)
    norm = loaded.normaliser
    assert norm is not None and norm.locked
    # it saw the training's decisions: 512 steps of 16 envs, plus the first observations
    assert norm.norm.weight[0, 0] > 0.9 * 512
    config = EnvConfig(market=request.env_config.market, actions=request.env_config.actions,
                       reward=request.env_config.reward)
    again = NumpyPolicy.load(tmp_path / "ck", checkpoint=True)
    a = greedy_rollout(loaded, config, request.order, 32, seed=3)
    b = greedy_rollout(again, config, request.order, 32, seed=3)
    assert np.array_equal(a.stats.is_bps, b.stats.is_bps)
    # and without it the same network decides otherwise on the fixed-scaled observations
    bare = NumpyPolicy.load(tmp_path / "ck", checkpoint=True)
    bare.normaliser = None
    raw = EnvConfig(market=request.env_config.market, observations="full")
    x = make_execution(raw, request.order, n_envs=32).reset(seed=3)
    assert not np.array_equal(bare.outputs(x), loaded.outputs(x))
