"""Shared by the registry tests: throwaway checkpoints, a results.json, users, and a registry on
SQLite or on a real PostgreSQL (tests/pg.py) with a database of its own per test."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from execrl.agents.checkpoint import TrainOutput, write_checkpoint
from execrl.agents.export import NumpyPolicy
from execrl.env.factory import DEFAULT_ORDER, EnvConfig
from execrl.presets import preset_market
from execrl.service import access
from execrl.service.access import User
from execrl.service.registry import Registry

OBS = ("remaining_ratio", "elapsed_ratio", "price_drift", "volatility")
#: one user per role, and a second PM / risk officer so that 4-eyes has someone to ask
PEOPLE = {"tina": "trader", "quinn": "quant", "pam": "pm", "paul": "pm", "rita": "risk_officer",
          "rob": "risk_officer", "ada": "admin"}


def make_checkpoint(folder: Path, seed: int) -> Path:
    """A real ``execrl train`` checkpoint folder of a random (untrained) argmax network."""
    rng = np.random.default_rng(seed)
    policy = NumpyPolicy(
        name="ppo", observations=OBS, action_set="seed004", head="argmax", activation="relu",
        weights=[rng.normal(size=(4, 8)), rng.normal(size=8), rng.normal(size=(8, 5)),
                 rng.normal(size=5)])
    config = EnvConfig(market=preset_market("ac"), reward="risk_adjusted")
    write_checkpoint(folder, algo="ppo", env_name="ac", env_config=config, order=DEFAULT_ORDER,
                     seed=seed, steps=1, hyperparams={"lr": 3e-4}, wall_time_s=0.0,
                     output=TrainOutput(policy=policy, curve=pd.DataFrame()))
    return folder


def results_for(path: Path, label: str, digest: str, diff: float = -1.5) -> Path:
    """A results.json in ``execrl evaluate``'s layout evaluating ``label`` (hash ``digest``)."""
    results = {
        "env": "ac", "orders": 200, "seed": 7, "side": "sell",
        "policies": {label: {"is_bps": {"mean": 10.0}}, "twap": {"is_bps": {"mean": 11.5}}},
        "comparisons": [{"policy": label, "baseline": "twap", "n": 200, "diff_bps_mean": diff,
                         "ci95": [diff - 0.5, diff + 0.5]}],
        "provenance": {"execrl_version": "0", "command": ["execrl", "evaluate"],
                       "checkpoints": {label: {"path": "x", "policy_hash": digest}}},
    }
    path.write_text(json.dumps(results))
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("registry-checkpoints")
    return [make_checkpoint(root / f"ck{i}", seed=i) for i in range(6)]


def cheap_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens hashed at scrypt N = 16: the cost is stored with each hash (test_access checks
    the real one), and seven users per test at the real cost would take a second."""
    monkeypatch.setattr(access, "SCRYPT_COST", (16, 8, 1))


def fresh_url(kind: str, tmp_path: Path, postgres_url: str | None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.sqlite'}"
    assert postgres_url is not None
    name = f"reg_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)


def staffed(registry: Registry) -> dict[str, User]:
    """The registry with PEOPLE in it (ada the first admin adds the rest)."""
    registry.add_user(None, "ada", "admin")
    ada = registry.user("ada")
    for name, role in PEOPLE.items():
        if name != "ada":
            registry.add_user(ada, name, role)
    return {name: registry.user(name) for name in PEOPLE}


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    cheap_tokens(monkeypatch)
    pg = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    reg = Registry(fresh_url(request.param, tmp_path, pg))
    yield reg
    reg.close()
