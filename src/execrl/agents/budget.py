"""How much memory a training run will take, estimated before anything is allocated.

``--n-envs 1000000000`` or a replay buffer of 10¹² transitions would otherwise try to
allocate tens of GiB (or TiB) and die with a MemoryError, or take the machine down with it.
Each algorithm adds up its big parts (environments, replay buffer or rollout, networks and
their minibatch activations) with these estimates and ``check_budget`` refuses the run,
naming the option behind the largest part, when the sum exceeds the run's memory limit
(``execrl.domain.limits.memory_limit_bytes``).

``warn_if_short`` says, in one line, when a run is too short to learn anything.

The estimates are upper bounds of the right order, not exact: measured on the AC market
(10 steps, 4 features) an environment takes ~1 KB with SB3's wrapper, a PPO rollout with its
minibatch activations ~9 KB per environment at the defaults.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from execrl.domain import ConfigError
from execrl.domain.errors import warn_user
from execrl.domain.limits import memory_limit_bytes
from execrl.sim.almgren_chriss import ACMarketConfig

if TYPE_CHECKING:
    from execrl.agents.train import TrainRequest



def env_bytes(n_envs: int, market: ACMarketConfig, n_features: int) -> int:
    """Batched environments: per environment a few dozen scalars, the market path noise
    (three float64 rows per step, pre-arrival included), the schedule and observations (a
    market without a pre-arrival window, the order book, counts none)."""
    steps = market.n_steps + getattr(market, "pre_arrival_steps", 0) + 1
    return int(n_envs) * (2048 + 48 * steps + 16 * int(n_features))


def mlp_bytes(sizes: Sequence[int], batch: int, copies: int = 1) -> int:
    """An MLP of layer widths ``sizes`` (input first) trained with Adam in float32: weights,
    gradients and two moments (16 bytes a parameter) per copy (a target network is a copy),
    plus forward and backward activations of a minibatch of ``batch``."""
    widths = [int(s) for s in sizes]
    params = sum((a + 1) * b for a, b in itertools.pairwise(widths))
    return copies * 16 * params + 16 * int(batch) * sum(widths)


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_budget(parts: Sequence[tuple[str, str, int]], limit: int | None = None) -> None:
    """Refuse a run whose parts ``(what, option = value, bytes)`` add up to more than
    ``limit`` (default: the run's memory limit), naming the option behind the largest part,
    the estimate and the limit."""
    limit = memory_limit_bytes() if limit is None else limit
    total = sum(b for _, _, b in parts)
    if total <= limit:
        return
    what, option, largest = max(parts, key=lambda p: p[2])
    raise ConfigError(
        f"{option}: this run would allocate about {format_bytes(total)} ({what} "
        f"{format_bytes(largest)}), more than the limit of {format_bytes(limit)}; lower it"
    )


def warn_if_short(request: TrainRequest) -> None:
    """A one-line warning when an online run ends before each environment has finished one
    episode (called by each algorithm once its own checks have passed)."""
    episode = request.episode_decisions * request.n_envs
    if request.steps < episode:
        warn_user(
            f"--steps {request.steps:,} is less than one episode per environment "
            f"({request.episode_decisions} decisions x {request.n_envs:,} environments = "
            f"{episode:,} steps): the policy will have learnt next to nothing"
        )
