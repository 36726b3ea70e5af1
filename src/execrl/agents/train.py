"""``execrl train``: one entry point for every algorithm, one checkpoint format.

Each algorithm module provides ``train(request, on_progress) -> TrainOutput``; this module
picks it by name, times it and writes the checkpoint. Algorithms are imported only when
asked for, so the tabular agent needs no torch and the offline ones need d3rlpy only then.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from execrl.agents.checkpoint import TrainOutput, write_checkpoint
from execrl.domain import ConfigError, ParentOrder
from execrl.env.factory import EnvConfig

#: algorithm name -> (module under execrl.agents, what it is)
ALGOS: dict[str, tuple[str, str]] = {
    "qtable": ("qtable", "tabular Q-learning (seed 003): discretised state, replay, e-greedy"),
    "dqn": ("deep_q", "DQN with Double and Dueling heads (SB3 base classes)"),
    "qrdqn": ("deep_q", "QR-DQN (sb3-contrib), distributional; optional CVaR action choice"),
    "ppo": ("ppo", "PPO (Stable-Baselines3) on the batched environment"),
    "maskable-ppo": ("ppo", "MaskablePPO (sb3-contrib) with the environment's action masks"),
    "bc": ("offline", "behaviour cloning from decision logs (d3rlpy, offline extra)"),
    "cql": ("offline", "conservative Q-learning from decision logs (d3rlpy, offline extra)"),
}


@dataclass
class TrainRequest:
    algo: str
    env_name: str
    env_config: EnvConfig
    order: ParentOrder
    steps: int
    seed: int
    n_envs: int = 256
    hyperparams: dict[str, Any] = field(default_factory=dict)
    data: Path | None = None  # offline algorithms: decision logs (parquet)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ConfigError(f"--algo {self.algo!r} is unknown; choose from {', '.join(ALGOS)}")
        if self.steps < 1:
            raise ConfigError(f"--steps = {self.steps!r} must be >= 1")
        if self.n_envs < 1:
            raise ConfigError(f"--n-envs = {self.n_envs!r} must be >= 1")


def run_training(
    request: TrainRequest,
    out: Path,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train, then write the checkpoint folder ``out``; returns its config.json content."""
    module_name, _ = ALGOS[request.algo]
    module = importlib.import_module(f"execrl.agents.{module_name}")
    started = time.perf_counter()
    output: TrainOutput = module.train(request, on_progress or (lambda steps: None))
    wall = time.perf_counter() - started
    return write_checkpoint(
        out,
        algo=request.algo,
        env_name=request.env_name,
        env_config=request.env_config,
        order=request.order,
        seed=request.seed,
        steps=request.steps,
        hyperparams=request.hyperparams,
        wall_time_s=wall,
        output=output,
    )
