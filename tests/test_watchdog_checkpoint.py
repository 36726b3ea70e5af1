"""What the watchdog reads from a checkpoint: the training domain's mean and std per feature
and the histogram of the greedy actions (features.json), checked against the rollout itself;
a checkpoint written before they were recorded still loads and the watchdog does without."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from execrl.agents.checkpoint import (
    DOMAIN_ORDERS,
    TrainOutput,
    greedy_rollout,
    write_checkpoint,
)
from execrl.agents.export import NumpyPolicy
from execrl.domain import ConfigError
from execrl.env.factory import DEFAULT_ORDER, EnvConfig
from execrl.market.features import FeatureSchema
from execrl.presets import preset_market
from execrl.safety.watchdog import Watchdog, WatchdogConfig, reference_distribution

OBS = ("remaining_ratio", "elapsed_ratio", "price_drift", "volatility")


def discrete_policy() -> NumpyPolicy:
    rng = np.random.default_rng(0)
    return NumpyPolicy(
        name="ppo", observations=OBS, action_set="seed004", head="argmax", activation="relu",
        weights=[rng.normal(size=(4, 8)), rng.normal(size=8), rng.normal(size=(8, 5)),
                 rng.normal(size=5)],
    )


def continuous_policy() -> NumpyPolicy:
    rng = np.random.default_rng(1)
    return NumpyPolicy(name="sac", observations=OBS, action_set="continuous",
                       head="gaussian_mean", weights=[rng.normal(size=(4, 1)), np.zeros(1)])


def checkpoint(folder: Path, policy: NumpyPolicy, config: EnvConfig) -> Path:
    write_checkpoint(folder, algo=policy.name, env_name="ac", env_config=config,
                     order=DEFAULT_ORDER, seed=0, steps=1, hyperparams={}, wall_time_s=0.0,
                     output=TrainOutput(policy=policy, curve=pd.DataFrame()))
    return folder


@pytest.fixture(scope="module")
def config() -> EnvConfig:
    return EnvConfig(market=preset_market("ac"), reward="risk_adjusted")


def test_the_schema_holds_the_rollouts_moments_and_action_histogram(
    tmp_path: Path, config: EnvConfig
) -> None:
    policy = discrete_policy()
    folder = checkpoint(tmp_path / "ck", policy, config)
    schema = NumpyPolicy.load(folder, checkpoint=True).feature_schema
    # the same rollout by hand: every observation and every action of the running orders
    rows: list[np.ndarray] = []
    acts: list[np.ndarray] = []
    run_config = EnvConfig(market=config.market, actions=policy.action_set,
                           reward=config.reward)
    greedy_rollout(policy, run_config, DEFAULT_ORDER, DOMAIN_ORDERS, 0,
                   on_obs=rows.append, on_act=acts.append)
    obs = np.concatenate(rows).astype(np.float64)
    np.testing.assert_allclose(schema.domain_mean, obs.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(schema.domain_std, obs.std(axis=0), rtol=1e-9, atol=1e-12)
    assert schema.domain_min == tuple(obs.min(axis=0)) and schema.domain_max == tuple(
        obs.max(axis=0))
    counts = np.bincount(np.concatenate(acts), minlength=5)
    assert list(schema.action_counts) == counts.tolist()
    assert sum(schema.action_counts) == obs.shape[0]  # one action per decision
    # the watchdog built from it: of the default watched features the policy reads only
    # volatility, constant in this market (std 0): its training value is inside
    wd = Watchdog(WatchdogConfig(), obs.shape[0], n_actions=5,
                  reference_actions=reference_distribution(schema.action_counts),
                  domain=schema)
    assert wd.feature_names == OBS and wd.domain_lo.shape == (1,)
    assert schema.domain_std[3] == 0.0 and wd.check(0, observations=obs).max() == 0
    # watching the price drift (it varies): exactly the observations beyond 3σ fire
    wd = Watchdog(WatchdogConfig(domain_features=("price_drift",)), obs.shape[0],
                  domain=schema)
    z = np.abs(obs[:, 2] - schema.domain_mean[2]) / schema.domain_std[2]
    assert (z > 3.001).any() and (z < 2.999).any()
    fired = wd.check(0, observations=obs)
    assert (fired[z > 3.001] == 8).all() and (fired[z < 2.999] == 0).all()


def test_a_continuous_policy_records_no_action_histogram(tmp_path: Path, config) -> None:
    folder = checkpoint(tmp_path / "ck", continuous_policy(), config)
    data = json.loads((folder / "features.json").read_text())
    assert data["action_counts"] is None and len(data["domain_std"]) == 4


def test_an_old_checkpoint_loads_and_the_watchdog_does_without(tmp_path: Path, config) -> None:
    folder = checkpoint(tmp_path / "ck", discrete_policy(), config)
    path = folder / "features.json"
    data = json.loads(path.read_text())
    for key in ("domain_mean", "domain_std", "action_counts"):
        del data[key]
    path.write_text(json.dumps(data))
    schema = NumpyPolicy.load(folder, checkpoint=True).feature_schema
    assert schema.domain_mean is None and schema.action_counts is None
    wd = Watchdog(WatchdogConfig(), 1, n_actions=5, reference_actions=None, domain=schema)
    lo, hi = data["domain_min"][3], data["domain_max"][3]
    width = hi - lo
    assert wd.domain_hi[0] == pytest.approx(hi + 0.25 * width, abs=1e-5)  # min / max widened
    for k in range(30):  # no reference: drift is never judged
        calm = [[1.0, 0.0, 0.0, (lo + hi) / 2]]
        assert wd.check(k, actions=[0], observations=calm).tolist() == [0]
    assert wd.check(30, observations=[[1.0, 0.0, 0.0, hi + 0.3 * width + 0.01]]).tolist() == [8]


def test_the_new_schema_fields_round_trip_and_are_validated() -> None:
    schema = FeatureSchema.build(("a", "b"), domain_min=[0.0, np.nan], domain_max=[1.0, np.nan],
                                 domain_mean=[0.5, np.nan], domain_std=[0.25, np.nan],
                                 action_counts=np.array([3, 0, 7]))
    again = FeatureSchema.from_json(schema.to_json())
    assert again == schema
    assert again.domain_mean == (0.5, None) and again.action_counts == (3, 0, 7)
    data = json.loads(schema.to_json())
    data["domain_std"] = [-1.0, None]
    with pytest.raises(ConfigError, match=r"feature schema field 'domain_std\.0' = -1\.0"):
        FeatureSchema.from_json(json.dumps(data))
    data["domain_std"] = [1.0]
    with pytest.raises(ConfigError, match="domain_std must hold 2 values"):
        FeatureSchema.from_json(json.dumps(data))
    data = json.loads(schema.to_json())
    data["action_counts"] = [1, -2]
    with pytest.raises(ConfigError, match=r"field 'action_counts\.1' = -2"):
        FeatureSchema.from_json(json.dumps(data))
