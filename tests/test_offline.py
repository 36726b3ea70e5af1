"""Decision logs (execrl.evaluate.decisions) and the offline agents (execrl.agents.offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from execrl.agents import offline
from execrl.agents.export import NumpyPolicy
from execrl.agents.train import TrainRequest, run_training
from execrl.cli import app
from execrl.domain import ConfigError, OrderConstraints
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution
from execrl.env.spaces import ACTION_SETS, resolve_action_set
from execrl.evaluate.backtest import policy_context, run_policies, run_policy
from execrl.evaluate.decisions import (
    DECISIONS_FILE,
    NEXT_PREFIX,
    DecisionRecorder,
    decision_columns,
    log_features,
    write_decisions,
)
from execrl.policies.baselines import make_baseline

torch.set_num_threads(1)

SEED004 = ("remaining_ratio", "elapsed_ratio", "price_drift", "volatility")
AC_FEATURES = (
    "remaining_ratio", "elapsed_ratio", "price_drift", "volatility", "spread",
    "last_volume_ratio", "expected_volume_ratio", "twap_deviation", "working_ratio",
)
SMALL = {"hidden_units": [64, 64], "eval_orders": 0}
runner = CliRunner()


class Spy:
    """Runs a baseline and keeps every observation it is shown, under its own feature set."""

    action_set = "continuous"

    def __init__(self, inner, observations: tuple[str, ...]):
        self.inner, self.observations, self.name = inner, observations, "spy"
        self.seen: list[np.ndarray] = []
        self._cols = [observations.index(f) for f in inner.observations]

    def act(self, obs, masks=None):
        self.seen.append(obs.copy())
        return self.inner.act(obs[:, self._cols], masks)


class DriftRule:
    """A deterministic discrete policy: action 3 (25 %) when the price drifted up, else 1."""

    name = "drift_rule"
    action_set = "seed004"
    observations = SEED004

    def act(self, obs, masks=None):
        return np.where(obs[:, 2] > 0.0, 3, 1)


@pytest.fixture(scope="module")
def baseline_log(tmp_path_factory) -> Path:
    """Decision log of twap, vwap, pov and ac: 60 orders each."""
    runs = run_policies(["twap", "vwap", "pov", "ac"], EnvConfig(), DEFAULT_ORDER, 60, 5,
                        recorder=DecisionRecorder())
    return write_decisions(tmp_path_factory.mktemp("logs"), runs)


def request(algo: str, data: Path | None, steps: int = 300, seed: int = 0,
            env_config: EnvConfig | None = None, **hyper) -> TrainRequest:
    return TrainRequest(algo=algo, env_name="ac", env_config=env_config or EnvConfig(),
                        order=DEFAULT_ORDER, steps=steps, seed=seed,
                        hyperparams={**SMALL, **hyper}, data=data)


def assert_same_decisions(policy: NumpyPolicy, learner, obs: np.ndarray) -> None:
    """The numpy policy's argmax is d3rlpy's predict: identical, except (never seen so far)
    where d3rlpy's two best scores are a float32 rounding apart."""
    ours, theirs = policy.act(obs), learner.predict(obs)
    differ = ours != theirs
    if differ.any():
        scores = np.sort(policy.outputs(obs[differ]), axis=1)
        assert (scores[:, -1] - scores[:, -2] < 1e-5 * np.abs(scores[:, -1]).max()).all()
    assert differ.mean() < 1e-3


# -- decision logs --------------------------------------------------------------------------------
def test_twap_log_matches_the_run_step_by_step() -> None:
    ctx = policy_context(EnvConfig(), DEFAULT_ORDER)
    spy = Spy(make_baseline("twap", ctx), AC_FEATURES)
    run = run_policy(spy, EnvConfig(), DEFAULT_ORDER, 12, seed=3, recorder=DecisionRecorder())
    d = run.decisions
    assert log_features(("price_drift", "volatility", "spread_bps", "last_volume",
                         "expected_volume")) == AC_FEATURES
    assert list(d.columns) == decision_columns(AC_FEATURES)
    n_steps = run.schedules.shape[1]
    assert len(d) == 12 * n_steps
    # one row per decision step of each order, in order
    per_order = d.groupby("order_idx").size()
    assert (per_order.to_numpy() == run.episodes["steps"].to_numpy()).all()
    assert (d.step.to_numpy() == np.tile(np.arange(n_steps), 12)).all()
    # shares are the schedule, fraction = shares / remaining before
    assert (d.shares.to_numpy().reshape(12, n_steps) == run.schedules).all()
    assert (d.fraction == d.shares / d.remaining_before).all()
    held = DEFAULT_ORDER.qty - np.cumsum(run.schedules, axis=1)
    assert (d.remaining_before.to_numpy().reshape(12, n_steps)[:, 1:] == held[:, :-1]).all()
    assert (d.action == -1).all() and not d.cut.any() and not d.breach.any()
    # rewards sum to the episode's return; done only on the last row
    returns = d.groupby("order_idx").reward.sum().to_numpy()
    np.testing.assert_allclose(returns, run.episodes["return"].to_numpy(), rtol=0, atol=1e-9)
    assert (d.reward_is_bps == d.reward).all() and (d.reward_name == "is_bps").all()
    assert (d.done.to_numpy().reshape(12, n_steps) == (np.arange(n_steps) == n_steps - 1)).all()
    # the features are exactly what a policy observing them is shown (float32) ...
    feats = d[list(AC_FEATURES)].to_numpy()
    assert all(d[f].dtype == np.float32 for f in AC_FEATURES)
    seen = np.stack(spy.seen, axis=1).reshape(-1, len(AC_FEATURES))  # (order, step) order
    assert (feats == seen).all()
    # ... and the next observation of step t is the observation of step t + 1
    nxt = d[[f"next_{f}" for f in AC_FEATURES]].to_numpy().reshape(12, n_steps, -1)
    assert (nxt[:, :-1] == feats.reshape(12, n_steps, -1)[:, 1:]).all()
    assert (nxt[:, -1, 0] == 0.0).all() and (nxt[:, -1, 1] == 1.0).all()


def test_other_rewards_agree_with_a_run_under_them() -> None:
    policies = ["ac", "pov"]
    base = run_policies(policies, EnvConfig(), DEFAULT_ORDER, 20, 9, recorder=DecisionRecorder())
    for reward in ("risk_adjusted", "arrival_vwap"):
        runs = run_policies(policies, EnvConfig(reward=reward), DEFAULT_ORDER, 20, 9,
                            recorder=DecisionRecorder())
        for a, b in zip(base, runs, strict=True):
            assert (b.decisions.reward_name == reward).all()
            np.testing.assert_allclose(a.decisions[f"reward_{reward}"], b.decisions.reward,
                                       rtol=0, atol=1e-9)
            np.testing.assert_allclose(b.decisions.reward_is_bps, a.decisions.reward,
                                       rtol=0, atol=1e-9)
            sums = b.decisions.groupby("order_idx").reward.sum().to_numpy()
            np.testing.assert_allclose(sums, b.episodes["return"], rtol=0, atol=1e-9)


def test_discrete_policy_log_records_the_chosen_action() -> None:
    run = run_policy(DriftRule(), EnvConfig(), DEFAULT_ORDER, 30, 4, recorder=DecisionRecorder())
    d = run.decisions
    fractions = np.asarray(ACTION_SETS["seed004"].fractions)
    expected = np.where(d.price_drift > 0.0, 3, 1)
    assert (d.action == expected).all()
    assert (d.requested_fraction == fractions[expected]).all()
    last = d.step == run.schedules.shape[1] - 1
    assert (d.fraction[last] == 1.0).all()  # forced completion at the horizon
    np.testing.assert_allclose(d.fraction[~last], d.requested_fraction[~last], atol=1e-5)


def test_cli_log_decisions_writes_the_documented_columns(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["evaluate", "--out", str(out), "--policies", "twap,pov", "--orders", "15"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (out / DECISIONS_FILE).exists()
    result = runner.invoke(app, [*args, "--log-decisions"])
    assert result.exit_code == 0, result.output
    d = pd.read_parquet(out / DECISIONS_FILE)
    episodes = pd.read_parquet(out / "episodes.parquet")
    assert list(d.columns) == decision_columns(AC_FEATURES)
    assert len(d) == episodes.steps.sum()
    assert list(d.policy.unique()) == ["twap", "pov"]
    merged = d.groupby(["policy", "order_idx"]).reward.sum()
    expected = episodes.set_index(["policy", "order_idx"])["return"]
    np.testing.assert_allclose(merged.loc[expected.index], expected, rtol=0, atol=1e-9)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


# -- data -----------------------------------------------------------------------------------------
def test_nearest_action_mapping_and_off_rows(baseline_log: Path) -> None:
    seed004 = resolve_action_set("seed004")
    idx, dist = offline.nearest_actions(np.array([0.0, 0.08, 0.22, 0.3, 1.0]), seed004)
    assert idx.tolist() == [0, 1, 3, 3, 4]
    np.testing.assert_allclose(dist, [0.05, 0.02, 0.03, 0.05, 0.5])
    assert offline.NEXT_PREFIX == NEXT_PREFIX  # the reader's column names are the writer's
    data = offline.load_decision_log(baseline_log, SEED004, seed004, "is_bps")
    log = pd.read_parquet(baseline_log).sort_values(["policy", "order_idx", "step"],
                                                    kind="stable")
    grid = np.asarray(seed004.fractions)
    far = np.abs(log.fraction.to_numpy()[:, None] - grid).min(axis=1) > 0.05
    s = data.summary
    assert s["rows"] == len(log) == len(data) and s["episodes"] == 4 * 60
    assert s["rows_off"] == far.sum() > 0 and s["terminals"] == 4 * 60
    assert sum(s["action_counts"]) == len(log)
    np.testing.assert_array_equal(data.rewards, log.reward_is_bps.to_numpy(np.float32))
    assert (data.observations == log[list(SEED004)].to_numpy()).all()
    # d3rlpy's own dataset view: one episode per (policy, order)
    assert len(data.to_mdp_dataset().episodes) == 4 * 60


# -- learning -------------------------------------------------------------------------------------
def test_bc_reproduces_a_deterministic_policy(tmp_path: Path) -> None:
    run = run_policy(DriftRule(), EnvConfig(), DEFAULT_ORDER, 150, 8, recorder=DecisionRecorder())
    path = write_decisions(tmp_path, [run])
    obs = run.decisions[list(SEED004)].to_numpy()
    chosen = run.decisions.action.to_numpy()
    last = (run.decisions.step == run.schedules.shape[1] - 1).to_numpy()
    # executed fractions (default): the forced last step is labelled 1.0 -> 50 %, the rest
    # are the rule's own actions
    out = offline.train(request("bc", path, steps=400, seed=1), lambda s: None)
    learned = out.policy.act(obs)
    labels = np.where(last, 4, chosen)
    assert out.extra["offline_data"]["rows_off"] == last.sum()
    assert (learned == labels).mean() >= 0.95
    assert (learned[~last] == chosen[~last]).mean() >= 0.95
    # requested fractions: the rule's actions everywhere
    out = offline.train(request("bc", path, steps=400, seed=1, action_from="requested"),
                        lambda s: None)
    assert out.extra["offline_data"]["rows_off"] == 0
    assert (out.policy.act(obs) == chosen).mean() >= 0.95


def test_cql_checkpoint_decides_as_d3rlpy_predict(baseline_log: Path, tmp_path: Path) -> None:
    d3rlpy = offline.import_d3rlpy()
    progress: list[int] = []
    req = request("cql", baseline_log, steps=300, seed=2, eval_orders=40, eval_every=100)
    config = run_training(req, tmp_path / "cql", on_progress=progress.append)
    assert progress[-1] == 300
    assert config["offline_data"]["rows"] > 0 and config["curve_x"] == "gradient_steps"
    assert config["resolved_hyperparams"]["alpha"] == 1.0
    assert config["resolved_hyperparams"]["weight_decay"] == 1e-4
    assert "beta" not in config["resolved_hyperparams"]
    curve = pd.read_csv(tmp_path / "cql" / "learning_curve.csv")
    assert curve.env_steps.tolist() == [100, 200, 300] and (curve.episodes == 40).all()
    assert np.isfinite(curve[["mean_return", "mean_is_bps", "loss", "td_loss",
                              "conservative_loss"]].to_numpy()).all()
    policy = NumpyPolicy.load(tmp_path / "cql")
    assert policy.head == "argmax" and policy.observations == SEED004
    learner = d3rlpy.load_learnable(str(tmp_path / "cql" / "native" / offline.NATIVE_FILE))
    rng = np.random.default_rng(0)
    logged = pd.read_parquet(baseline_log)[list(SEED004)].to_numpy()
    random = rng.uniform([0, 0, -3, 0.5], [1, 1, 3, 2], size=(20_000, 4)).astype(np.float32)
    obs = np.concatenate([logged, random])
    assert_same_decisions(policy, learner, obs)
    q = np.stack([learner.predict_value(obs, np.full(len(obs), a)) for a in range(5)], axis=1)
    np.testing.assert_allclose(policy.outputs(obs), q, rtol=1e-4, atol=1e-4)
    # the curve's evaluation is this policy on the simulator
    last = offline.evaluate_greedy(policy, req, resolve_action_set("seed004"), 40, 2)
    assert last == pytest.approx((curve.mean_return.iloc[-1], curve.mean_is_bps.iloc[-1]))


def test_bc_export_equals_predict_and_training_is_reproducible(baseline_log: Path) -> None:
    d3rlpy = offline.import_d3rlpy()
    params = offline.parse_params("bc", SMALL)
    data = offline.load_decision_log(baseline_log, SEED004, resolve_action_set("seed004"),
                                     "is_bps")
    d3rlpy.seed(0)
    learner = offline.make_algo("bc", params)
    learner.create_impl((4,), 5)
    rng = np.random.default_rng(0)
    for _ in range(100):
        learner.update(data.batch(rng.integers(0, len(data), 256)))
    policy = offline.export_policy(learner, "bc", SEED004, resolve_action_set("seed004"))
    obs = np.concatenate([data.observations,
                          rng.uniform([0, 0, -3, 0.5], [1, 1, 3, 2], (20_000, 4))
                          .astype(np.float32)])
    assert_same_decisions(policy, learner, obs)
    with torch.no_grad():  # d3rlpy's Categorical normalises its logits to log-probabilities
        log_probs = learner.impl.modules.imitator(torch.from_numpy(obs)).logits.numpy()
    out = policy.outputs(obs)
    np.testing.assert_allclose(out - out.max(axis=1, keepdims=True),
                               log_probs - log_probs.max(axis=1, keepdims=True), atol=1e-4)
    a = offline.train(request("bc", baseline_log, steps=60, seed=5), lambda s: None)
    b = offline.train(request("bc", baseline_log, steps=60, seed=5), lambda s: None)
    c = offline.train(request("bc", baseline_log, steps=60, seed=6), lambda s: None)
    assert a.policy.policy_hash() == b.policy.policy_hash() != c.policy.policy_hash()


def test_cql_defaults_are_what_training_uses(baseline_log: Path, tmp_path: Path) -> None:
    """`execrl train --algo cql` with no flags: temperature 100 bps (d3rlpy sees rewards / 100
    and alpha 1 / 100), gamma 1, a target sync every 100 steps (bench_offline.py measures
    them: 5/5 seeds at the best seed004 schedule)."""
    d3rlpy = offline.import_d3rlpy()
    req = TrainRequest.with_defaults("cql", data=baseline_log, steps=20,
                                     hyperparams={"eval_orders": 0})
    config = run_training(req, tmp_path / "cql")
    resolved = config["resolved_hyperparams"]
    assert (resolved["temperature"], resolved["alpha"], resolved["gamma"],
            resolved["target_update_interval"]) == (100.0, 1.0, 1.0, 100)
    assert (resolved["off_rows"], resolved["match_tolerance"]) == ("drop", 0.02)
    # it learns from the rows within 0.02 of their action and the rows that end an episode
    log = pd.read_parquet(baseline_log)
    grid = np.asarray(ACTION_SETS["seed004"].fractions)
    near = np.abs(log.fraction.to_numpy()[:, None] - grid).min(axis=1) <= 0.02
    assert config["offline_data"]["rows_learnt"] == (near | log.done.to_numpy()).sum()
    assert 0 < config["offline_data"]["rows_learnt"] < len(log)
    data = offline.load_decision_log(baseline_log, SEED004, resolve_action_set("seed004"),
                                     "risk_adjusted", match_tolerance=0.02)
    rows = offline.learnt_rows(data, "drop")
    assert set(rows.tolist()) == set(np.flatnonzero(~data.off | (data.terminals > 0)).tolist())
    assert (offline.learnt_rows(data, "keep") == np.arange(len(data))).all()
    learner = d3rlpy.load_learnable(str(tmp_path / "cql" / "native" / offline.NATIVE_FILE))
    assert learner.config.gamma == 1.0 and learner.config.target_update_interval == 100
    assert learner.config.alpha == pytest.approx(0.01)
    assert learner.config.reward_scaler.multiplier == pytest.approx(0.01)


def test_cql_temperature_is_rewards_and_alpha_divided_by_it(baseline_log: Path) -> None:
    """Our own update loop (no d3rlpy fit) applies the reward scaler: temperature 50 on the
    log trains the same network as temperature 1 on the log's rewards / 50 with alpha / 50,
    and not the one temperature 1 trains on the raw rewards."""
    d3rlpy = offline.import_d3rlpy()
    data = offline.load_decision_log(baseline_log, SEED004, resolve_action_set("seed004"),
                                     "risk_adjusted")
    scaled = offline.OfflineData(**{**data.__dict__,
                                    "rewards": (data.rewards / np.float32(50.0))})

    def weights(data: offline.OfflineData, **hyper: float) -> list[np.ndarray]:
        d3rlpy.seed(0)
        learner = offline.make_algo("cql", offline.parse_params("cql", {**SMALL, **hyper}))
        learner.create_impl((4,), 5)
        rng = np.random.default_rng(0)
        for _ in range(30):
            learner.update(data.batch(rng.integers(0, len(data), 256)))
        return offline.export_policy(learner, "cql", SEED004,
                                     resolve_action_set("seed004")).weights

    hot = weights(data, temperature=50.0, alpha=2.0)
    cold = weights(scaled, temperature=1.0, alpha=2.0 / 50.0)
    raw = weights(data, temperature=1.0, alpha=2.0 / 50.0)
    for a, b in zip(hot, cold, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert max(float(np.abs(a - b).max()) for a, b in zip(hot, raw, strict=True)) > 1e-2


def test_masked_offline_policy_never_picks_a_masked_action(baseline_log: Path) -> None:
    out = offline.train(request("cql", baseline_log, steps=100, seed=3), lambda s: None)
    policy = out.policy
    rng = np.random.default_rng(1)
    obs = rng.uniform([0, 0, -3, 0.5], [1, 1, 3, 2], size=(5000, 4)).astype(np.float32)
    masks = rng.random((5000, 5)) < 0.4
    masks[np.arange(5000), rng.integers(0, 5, 5000)] = True  # at least one allowed
    chosen = policy.act(obs, masks)
    assert masks[np.arange(5000), chosen].all()
    unmasked = policy.act(obs)
    assert (chosen == unmasked)[masks[np.arange(5000), unmasked]].all()
    # in the environment: an order with a child-size cap, masks on, no cuts; the order cannot
    # complete within its cap (10 x 60,000 shares), and no child goes beyond it
    order = DEFAULT_ORDER.model_copy(update={"constraints": OrderConstraints(child_max=60_000)})
    core = make_execution(EnvConfig(), order, n_envs=4, autoreset=False)
    core.reset(seed=0)
    assert not core.action_masks().all()  # the cap masks something at the start
    run = run_policy(policy, EnvConfig(), order, 50, 1)
    assert run.episodes.cuts.sum() == 0 and run.episodes.breaches.sum() == 0
    assert run.schedules.max() <= 60_000
    unfilled = order.qty - run.schedules.sum(axis=1)
    assert (run.episodes.residual_shares.to_numpy() == unfilled).all()


# -- refusals -------------------------------------------------------------------------------------
def test_refusals_name_the_problem(baseline_log: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--data is required for bc"):
        offline.train(request("bc", None), lambda s: None)
    missing = tmp_path / "nope.parquet"
    with pytest.raises(ConfigError, match=r"nope\.parquet.*does not exist"):
        offline.train(request("cql", missing), lambda s: None)
    text = tmp_path / "log.parquet"
    text.write_text("policy,order_idx\n")
    with pytest.raises(ConfigError, match=r"log\.parquet.*not a readable parquet"):
        offline.train(request("cql", text), lambda s: None)
    log = pd.read_parquet(baseline_log)
    thin = tmp_path / "thin.parquet"
    log.drop(columns=["price_drift", "next_volatility", "done"]).to_parquet(thin)
    with pytest.raises(ConfigError, match=r"thin\.parquet.*lacks column\(s\) price_drift, "
                       r"done, next_volatility"):
        offline.train(request("cql", thin), lambda s: None)
    continuous = EnvConfig(actions="continuous")
    with pytest.raises(ConfigError, match=r"bc needs a discrete action set.*'continuous'"):
        offline.train(request("bc", baseline_log, env_config=continuous), lambda s: None)
    # rewards: a log with only its run's reward cannot train under another
    only = tmp_path / "only.parquet"
    log.drop(columns=["reward_risk_adjusted", "reward_arrival_vwap"]).to_parquet(only)
    risk = EnvConfig(reward="risk_adjusted")
    with pytest.raises(ConfigError, match=r"lacks column reward_risk_adjusted.*'is_bps'"):
        offline.train(request("cql", only, env_config=risk), lambda s: None)
    twice = tmp_path / "twice.parquet"
    pd.concat([log, log]).to_parquet(twice)
    with pytest.raises(ConfigError, match=r"repeats \(policy, order_idx, step\)"):
        offline.train(request("cql", twice), lambda s: None)
    bad = tmp_path / "bad.parquet"
    log.assign(fraction=log.fraction.where(log.step != 3, np.nan)).to_parquet(bad)
    with pytest.raises(ConfigError, match="column 'fraction' has a non-finite value"):
        offline.train(request("cql", bad), lambda s: None)
    for algo, hyper, message in [
        ("bc", {"alpha": 2.0}, "'alpha' applies to cql only"),
        ("cql", {"beta": 1.0}, "'beta' applies to bc only"),
        ("cql", {"temperature": 0.0}, "'temperature' = 0.0"),
        ("cql", {"lr": 1e-3}, "'lr' is unknown"),
        ("bc", {"batch_size": 0}, "'batch_size' = 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            offline.train(request(algo, baseline_log, **hyper), lambda s: None)


def test_cql_refuses_a_log_with_no_row_to_learn_from(baseline_log: Path,
                                                    tmp_path: Path) -> None:
    log = pd.read_parquet(baseline_log)
    grid = np.asarray(ACTION_SETS["seed004"].fractions)
    far = np.abs(log.fraction.to_numpy()[:, None] - grid).min(axis=1) > 0.02
    path = tmp_path / "far.parquet"
    log[far & ~log.done.to_numpy()].to_parquet(path)
    with pytest.raises(ConfigError, match=r"every row is further than match_tolerance = 0.02"):
        offline.train(request("cql", path), lambda s: None)
    # bc (off_rows = keep) learns from them
    out = offline.train(request("bc", path, steps=5), lambda s: None)
    assert out.extra["offline_data"]["rows_learnt"] == far[~log.done.to_numpy()].sum()


def test_cli_train_offline(baseline_log: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--algo", "bc", "--out", str(tmp_path / "bc"),
                                 "--steps", "50"])
    assert result.exit_code == 2 and "--data is required for bc" in result.output
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps(SMALL))
    result = runner.invoke(app, ["train", "--algo", "cql", "--out", str(tmp_path / "cql"),
                                 "--steps", "50", "--data", str(baseline_log),
                                 "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "cql" / "config.json").read_text())
    # the train command's default reward (risk_adjusted) is read from the log's own column
    assert config["offline_data"]["reward_column"] == "reward_risk_adjusted"
    evaluate = runner.invoke(app, ["evaluate", "--out", str(tmp_path / "ev"), "--orders", "20",
                                   "--policies", f"twap,cql:{tmp_path / 'cql'}"])
    assert evaluate.exit_code == 0, evaluate.output
