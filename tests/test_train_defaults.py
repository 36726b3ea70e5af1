"""`execrl train --algo X` with no other flag: the defaults it trains with, the named
configurations that keep the seeds' values, and that the default configuration learns (beats
a random policy on a tiny budget; what it reaches on its full budget is measured by
bench/bench_defaults.py, not here)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from execrl.agents.defaults import (
    ALGO_DEFAULTS,
    SEED001_DQN,
    SEED003_QTABLE,
    default_reward,
    named_config,
)
from execrl.agents.qtable import QLearningConfig
from execrl.agents.train import ALGOS, TrainRequest, import_algorithm
from execrl.cli import app
from execrl.domain import ConfigError
from execrl.env.factory import DEFAULT_ORDER, EnvConfig
from execrl.env.spaces import resolve_action_set
from execrl.evaluate.backtest import run_policy
from execrl.evaluate.stats import paired_comparison
from execrl.presets import preset_market

runner = CliRunner()


def test_every_algorithm_has_defaults_and_ppo_acts_continuously() -> None:
    assert set(ALGO_DEFAULTS) == set(ALGOS)
    ppo = TrainRequest.with_defaults("ppo")
    assert ppo.env_config.actions == "continuous"
    assert ppo.env_config.reward == "expected_cost"
    assert (ppo.steps, ppo.n_envs) == (ALGO_DEFAULTS["ppo"].steps, ALGO_DEFAULTS["ppo"].n_envs)
    for algo in ("qtable", "dqn", "qrdqn", "maskable-ppo"):
        assert resolve_action_set(TrainRequest.with_defaults(algo).env_config.actions).is_discrete
    # what is given wins over the defaults
    given = TrainRequest.with_defaults("ppo", actions="seed003", reward="is_bps", steps=7,
                                       n_envs=3)
    assert (given.env_config.actions, given.env_config.reward, given.steps, given.n_envs) == (
        "seed003", "is_bps", 7, 3)


def test_the_default_reward_needs_a_market_that_knows_its_expected_move() -> None:
    assert default_reward(preset_market("ac")) == "expected_cost"
    assert default_reward(preset_market("ac-signal")) == "expected_cost"
    assert default_reward(SimpleNamespace(model="lob")) == "risk_adjusted"


def test_execrl_train_with_no_flags_records_the_defaults(tmp_path: Path) -> None:
    out = tmp_path / "q"
    result = runner.invoke(app, ["train", "--algo", "qtable", "--out", str(out), "--steps",
                                 "2048"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["env_config"]["actions"] == "seed004"
    assert config["env_config"]["reward"] == "expected_cost"
    assert config["env_config"]["observations"] == "seed004"
    assert config["qtable"]["transitions"] == 2048  # two batched steps of the default 1024 envs
    native = json.loads((out / "native" / "qtable.json").read_text())
    assert QLearningConfig.from_dict(native["config"]) == QLearningConfig()
    assert "--steps" in runner.invoke(app, ["train", "--help"]).output


def test_named_configurations_keep_the_seeds_values(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--algo", "qtable", "--out", "q", "--steps", "2048",
                                 "--config", "seed003"])
    assert result.exit_code == 0, result.output
    config = json.loads(Path("q/config.json").read_text())
    assert config["hyperparams"] == SEED003_QTABLE
    native = json.loads(Path("q/native/qtable.json").read_text())
    assert native["config"]["state"]["remaining_buckets"] == 5
    assert native["config"]["q_learning"]["alpha"] == 0.1
    assert named_config("dqn", "seed001") == SEED001_DQN
    # another algorithm's name is refused by name; a file of that name is read as a file
    bad = runner.invoke(app, ["train", "--algo", "qtable", "--out", "q2", "--config",
                              "seed001"])
    assert bad.exit_code == 2 and "another algorithm" in bad.output, bad.output
    assert not Path("q2").exists()
    with pytest.raises(ConfigError, match="another algorithm"):
        named_config("ppo", "seed003")
    Path("seed003").write_text('{"q_learning": {"alpha": 0.5}}')
    assert named_config("qtable", "seed003") is None
    assert named_config("ppo", "seed003") is None


class UniformRandom:
    """A uniformly random action among the allowed ones (discrete) or a uniform fraction of
    the remaining quantity (continuous): the policy any learner must beat."""

    name = "random"

    def __init__(self, observations: tuple[str, ...], action_set: str, seed: int):
        self.observations, self.action_set = observations, action_set
        self.n = resolve_action_set(action_set).n_actions
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        if self.n == 0:
            return self.rng.uniform(0.0, 1.0, size=(len(obs), 1))
        keys = self.rng.random((len(obs), self.n))
        if masks is not None:
            keys[~masks] = -1.0
        return keys.argmax(axis=1)


#: tiny budgets (a few seconds each); the defaults' own budgets are in ALGO_DEFAULTS
TINY = {
    "qtable": dict(steps=100_000, n_envs=1024),
    "ppo": dict(steps=40_960, n_envs=256),
    "maskable-ppo": dict(steps=40_960, n_envs=256),
    "dqn": dict(steps=20_000, n_envs=64),
    "qrdqn": dict(steps=20_000, n_envs=64),
}


@pytest.mark.parametrize("algo", list(TINY))
def test_the_default_configuration_beats_random_on_a_tiny_budget(algo: str) -> None:
    if algo != "qtable":
        pytest.importorskip("stable_baselines3")
        pytest.importorskip("sb3_contrib")
    request = TrainRequest.with_defaults(algo, seed=5, **TINY[algo])
    out = import_algorithm(algo).train(request, lambda steps: None)
    policy = out.policy
    config = EnvConfig(market=preset_market("ac"))
    random = UniformRandom(policy.observations, policy.action_set, seed=5)

    def objective(p) -> np.ndarray:  # the AC mean-variance objective the reward's return is
        e = run_policy(p, config, DEFAULT_ORDER, 500, seed=77).episodes
        return (e["is_bps"] + e["risk_proxy_bps"]).to_numpy()

    cmp = paired_comparison(algo, objective(policy), "random", objective(random), n_boot=2000)
    assert cmp.ci95[1] < 0.0, cmp  # cheaper than random, the CI excludes 0
