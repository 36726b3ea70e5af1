"""``execrl train``: one entry point for every algorithm, one checkpoint format.

Each algorithm module provides ``train(request, on_progress) -> TrainOutput``; this module
picks it by name, times it and writes the checkpoint. Algorithms are imported only when
asked for, so the tabular agent needs no torch and the offline ones need d3rlpy only then.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from execrl.agents.budget import check_budget, env_bytes
from execrl.agents.checkpoint import TrainOutput, check_checkpoint_out, write_checkpoint
from execrl.agents.defaults import FIXED_SCALE_ALGOS
from execrl.domain import ConfigError, ParentOrder
from execrl.domain.limits import MAX_SEED
from execrl.env.factory import EnvConfig
from execrl.env.spaces import resolve_observation_set
from execrl.sim.spec import MarketSpec

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


#: algorithms that learn from a decision log (``--data``) rather than from the simulator
OFFLINE_ALGOS = ("bc", "cql")

#: optional extra (pyproject ``[project.optional-dependencies]``) -> the packages it brings
EXTRAS: dict[str, tuple[str, ...]] = {
    "rl": ("torch", "stable_baselines3", "sb3_contrib"),
    "offline": ("torch", "d3rlpy"),
}
#: algorithm -> the extra it needs (the tabular agent needs none: numpy and numba only)
ALGO_EXTRAS: dict[str, str] = {
    "dqn": "rl", "qrdqn": "rl", "ppo": "rl", "maskable-ppo": "rl", "bc": "offline",
    "cql": "offline",
}


def _missing_extra_error(algo: str, extra: str, module: str) -> ConfigError:
    return ConfigError(
        f"--algo {algo} needs the {extra!r} extra ({', '.join(EXTRAS[extra])}), which is not "
        f"installed (no module {module!r}): pip install 'execrl[{extra}]'"
    )


def check_extra(algo: str) -> None:
    """Refuse, in one line naming the extra and its install command, an algorithm whose
    optional packages are not installed (before anything is built or imported)."""
    extra = ALGO_EXTRAS.get(algo)
    if extra is None:
        return
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None  # None: blocked or absent
        except (ImportError, ValueError):  # ValueError: imported, but without a __spec__
            found = sys.modules.get(module) is not None
        if not found:
            raise _missing_extra_error(algo, extra, module)


def import_algorithm(algo: str) -> Any:
    """The module that trains ``algo``; a package of its extra that fails to import (present
    but broken, or removed since ``check_extra``) is the same one line, not a traceback."""
    check_extra(algo)
    module_name, _ = ALGOS[algo]
    try:
        return importlib.import_module(f"execrl.agents.{module_name}")
    except ModuleNotFoundError as exc:
        extra = ALGO_EXTRAS.get(algo)
        top = (exc.name or "").partition(".")[0]
        if extra is None or top not in EXTRAS[extra]:
            raise
        raise _missing_extra_error(algo, extra, top) from None


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
    #: benchmarks: ``watch(env_steps, policy)`` is called about every ``watch_every`` env steps
    #: with the greedy policy learnt so far (online algorithms; its time is the caller's to
    #: subtract). Not part of the checkpoint.
    watch: Callable[[int, Any], None] | None = None
    watch_every: int = 0

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ConfigError(f"--algo {self.algo!r} is unknown; choose from {', '.join(ALGOS)}")
        if not _whole(self.steps) or self.steps < 1:
            raise ConfigError(f"--steps = {self.steps!r} must be a whole number >= 1")
        if not _whole(self.n_envs) or self.n_envs < 1:
            raise ConfigError(f"--n-envs = {self.n_envs!r} must be a whole number >= 1")
        if not _whole(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"--seed = {self.seed!r} must be a whole number in [0, {MAX_SEED}]")
        if not isinstance(self.hyperparams, dict):
            raise ConfigError("hyper-parameters (--config) must be an object / table")
        check_extra(self.algo)
        if self.env_config.normalise == "online" and self.algo in FIXED_SCALE_ALGOS:
            raise ConfigError(
                f"--normalise online does not apply to {self.algo}: "
                + ("its state buckets are fixed ranges of the fixed-scaled features"
                   if self.algo == "qtable" else
                   "it learns from a decision log's fixed-scaled features")
                + "; use --normalise fixed"
            )
        if self.offline:
            if self.data is None:
                raise ConfigError(
                    f"--data is required for {self.algo}: a decision log parquet written by "
                    "`execrl evaluate --log-decisions`"
                )
        else:
            if self.data is not None:
                raise ConfigError(
                    f"--data does not apply to {self.algo}: it learns on the simulator; only "
                    f"the offline algorithms ({', '.join(OFFLINE_ALGOS)}) read a decision log"
                )
            check_budget([("environments", f"--n-envs = {self.n_envs}", self.env_bytes())])

    @classmethod
    def with_defaults(
        cls,
        algo: str,
        *,
        env_name: str = "ac",
        market: MarketSpec | None = None,
        order: ParentOrder | None = None,
        observations: str | tuple[str, ...] = "seed004",
        actions: str | None = None,
        reward: str | None = None,
        steps: int | None = None,
        n_envs: int | None = None,
        seed: int = 0,
        hyperparams: dict[str, Any] | None = None,
        data: Path | None = None,
        normalise: str | None = None,
    ) -> TrainRequest:
        """The request ``execrl train`` makes: what is not given takes the algorithm's
        measured defaults (``execrl.agents.defaults``) and the market's default reward."""
        from execrl.agents.defaults import (
            FALLBACK_REWARD,
            algo_defaults,
            default_normalise,
            default_reward,
        )
        from execrl.presets import preset_market

        defaults = algo_defaults(algo)
        market = preset_market(env_name) if market is None else market
        config = EnvConfig(
            market=market,
            observations=observations,
            actions=defaults.actions if actions is None else actions,
            # a decision log carries realised rewards only: offline, seed 001's risk-adjusted
            reward=(FALLBACK_REWARD if algo in OFFLINE_ALGOS else default_reward(market))
            if reward is None else reward,
            normalise=default_normalise(market, observations, algo)  # type: ignore[arg-type]
            if normalise is None else normalise,
        )
        return cls(
            algo=algo, env_name=env_name, env_config=config,
            order=market.default_order() if order is None else order,
            steps=defaults.steps if steps is None else steps, seed=seed,
            n_envs=defaults.n_envs if n_envs is None else n_envs,
            hyperparams={} if hyperparams is None else hyperparams, data=data,
        )

    @property
    def offline(self) -> bool:
        return self.algo in OFFLINE_ALGOS

    @property
    def n_features(self) -> int:
        return len(resolve_observation_set(self.env_config.observations))

    @property
    def episode_decisions(self) -> int:
        """Decisions in one episode: the market's steps."""
        return int(self.env_config.market.n_steps)

    def env_bytes(self, n_envs: int | None = None) -> int:
        """Estimated memory of ``n_envs`` (default: the request's) training environments."""
        n = self.n_envs if n_envs is None else n_envs
        return env_bytes(n, self.env_config.market, self.n_features)


def _whole(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _frozen_watch(watch: Callable[[int, Any], None] | None, config: EnvConfig
                  ) -> Callable[[int, Any], None] | None:
    if watch is None or config.normaliser is None:
        return watch
    normaliser = config.normaliser

    def frozen(env_steps: int, policy: Any) -> None:
        policy.attach_normaliser(normaliser)
        watch(env_steps, policy)

    return frozen


def run_training(
    request: TrainRequest,
    out: Path,
    on_progress: Callable[[int], None] | None = None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Train, then write the checkpoint folder ``out``; returns its config.json content.
    ``out`` is checked before training starts (``check_checkpoint_out``: a folder that is
    not empty nor a checkpoint is replaced only with ``force``)."""
    check_checkpoint_out(Path(out), force=force)
    module = import_algorithm(request.algo)
    # online normalisation: one normaliser, shared by the training environments, frozen into
    # the policy (and the policies a benchmark's ``watch`` sees) at its state then
    config = request.env_config.with_normaliser(request.order)
    if config is not request.env_config:
        request = dataclasses.replace(request, env_config=config,
                                      watch=_frozen_watch(request.watch, config))
    started = time.perf_counter()
    output: TrainOutput = module.train(request, on_progress or (lambda steps: None))
    wall = time.perf_counter() - started
    if config.normaliser is not None:
        output.policy.attach_normaliser(config.normaliser)
    if not all(np.isfinite(a).all() for a in output.policy.arrays().values()):
        raise ConfigError(
            f"{request.algo} training diverged: the trained policy has non-finite weights; "
            "lower the learning rate (nothing was written)"
        )
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
        force=force,
    )
