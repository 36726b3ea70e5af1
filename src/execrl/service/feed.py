"""``execrl feed``: a simulated or recorded market replayed onto ``STREAM_MARKET``.

One entry per decision step of the market (its mid, touch, the step's traded volume) for one
symbol, at the market's own pace (1×), N× faster, or as fast as possible. The market is built
from a market specification (a preset, or a replay of a recorded day through ``--market``)
with no order trading against it: the tape as it would be. When an episode of the market ends
the next one starts (episode i on path (seed, i)), so a feed can run as long as asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from execrl.domain import ConfigError, ParentOrder
from execrl.service.streams import STREAM_MARKET, encode
from execrl.sim.base import ChildOrderBatch
from execrl.sim.spec import MarketSpec


def parse_speed(text: str) -> float:
    """``1``, ``10``, ``2.5`` (× the market's pace) or ``max`` (as fast as possible: 0)."""
    if text.strip().lower() in ("max", "inf", "asap"):
        return 0.0
    try:
        speed = float(text)
    except ValueError:
        raise ConfigError(f"--speed {text!r} is not a number or 'max'") from None
    if not np.isfinite(speed) or speed <= 0:
        raise ConfigError(f"--speed {text!r} must be > 0 (or 'max')")
    return speed


@dataclass(frozen=True)
class FeedConfig:
    """What to replay: ``market`` for ``order`` (its horizon sets the decision step),
    ``steps`` entries, the wall-clock seconds of a step at 1× (``step_s``: None = the market's
    own, horizon / steps), ``speed`` (0 = as fast as possible)."""

    market: MarketSpec
    order: ParentOrder
    steps: int
    speed: float = 1.0
    step_s: float | None = None
    seed: int = 0


class MarketTape:
    """The market's decision steps, one episode after another, no order trading."""

    def __init__(self, market: MarketSpec, order: ParentOrder, seed: int):
        self.spec = market.for_order(order)
        self.step_s = float(order.horizon) / self.spec.n_steps
        self.market = self.spec.build(1, order.side.sign)
        self.seed = seed
        self.episode = 0
        self.k = 0
        self._none = ChildOrderBatch.market_orders(1)
        self._active = np.ones(1, dtype=bool)
        feats = self.market.available_features
        self._touch = "best_bid" in feats and "best_ask" in feats
        self._spread = "spread_bps" in feats
        self._volume = "last_volume" in feats
        self._reset()

    def _reset(self) -> None:
        self.market.reset(np.random.default_rng([self.seed, self.episode]))
        self.k = 0

    def quote(self) -> dict[str, float]:
        m = self.market
        mid = float(m.mid[0])
        if self._touch:
            bid, ask = float(m.feature("best_bid")[0]), float(m.feature("best_ask")[0])
        elif self._spread:
            half = mid * float(m.feature("spread_bps")[0]) * 0.5e-4
            bid, ask = mid - half, mid + half
        else:
            bid = ask = mid
        volume = float(m.feature("last_volume")[0]) if self._volume and self.k > 0 else 0.0
        return {"mid": mid, "bid": bid, "ask": ask, "volume": volume}

    def advance(self) -> None:
        if self.k >= self.market.n_steps:
            self.episode += 1
            self._reset()
            return
        self.market.execute(self._none, self._active)
        self.k += 1


def run_feed(client: Any, config: FeedConfig, symbol: str, stream: str = STREAM_MARKET,
             on_event: Callable[[int, str], None] | None = None,
             stop: Callable[[], bool] | None = None) -> int:
    """Publish ``config.steps`` market entries for ``symbol`` (fewer once ``stop()`` is
    true); returns how many. Paced on a monotonic clock (a late step is sent at once, never
    skipped)."""
    tape = MarketTape(config.market, config.order, config.seed)
    step_s = config.step_s if config.step_s is not None else tape.step_s
    pause = 0.0 if config.speed == 0 else step_s / config.speed
    t0 = time.monotonic()
    for i in range(config.steps):
        if stop is not None and stop():
            return i
        if pause:
            delay = t0 + i * pause - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        event = {"symbol": symbol, "step": i, "episode": tape.episode, "k": tape.k,
                 **tape.quote(), "ts_ns": time.time_ns()}
        entry = client.xadd(stream, encode(event), maxlen=1_000_000, approximate=True)
        if on_event is not None:
            on_event(i, entry)
        tape.advance()
    return config.steps


__all__ = ["FeedConfig", "MarketTape", "parse_speed", "run_feed"]
