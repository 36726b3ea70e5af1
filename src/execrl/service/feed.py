"""``execrl feed``: a simulated or recorded market replayed onto ``STREAM_MARKET``.

One entry per decision step of the market for one symbol, at the market's own pace (1×), N×
faster, or as fast as possible. The market is built from a market specification (a preset,
or a replay of a recorded day through ``--market``) with no order trading against it: the
tape as it would be. When an episode of the market ends the next one starts, so a feed can run
as long as asked. Episode i is the backtest's order i of the same seed (``Executor.run``'s
path (seed, i): the i-th episode key of ``default_rng(seed)``).

Entry k of an episode is the record of decision step k: what the decision sees (``mid``,
``bid``, ``ask``, ``volume``: the market at the step's start; the last step's volume) and what
the market does in the step whatever we trade, from which the paper market
(``execrl.service.paper``) computes our fills with the backtest's own fill and queue models:

- Almgren–Chriss (``ac``): the step's exogenous moves (``almgren_chriss.EXOGENOUS_FIELDS``:
  drift term, innovation, market volume, next α), α now, the last volume and the arrival VWAP;
  the paper market applies them with the backtest's kernel, our permanent and temporary impact
  on top (bit for bit the backtest's fills and mids).
- Replay (``book``): the episode's start on the data's clock, the recorded book at the step's
  start (every level) and the step's recorded events (time, kind, size, price, side, order
  submission number, the book after each), and in an episode's first entry the pre-arrival
  events its features see; the paper market runs the replay's kernel on them (walk, queue
  estimators, latency, fees, transient impact).
- The order book market (``lob``): the quote only; its flow reacts to our orders, which a tape
  that did not see them cannot reproduce (``execrl.service.paper``).

A decision-step entry is complete once its step is over, so it is published then (the
decision it releases still sees only the step's start).
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
        self.model = str(getattr(self.spec, "model", ""))
        self._reset()

    def _reset(self) -> None:
        # episode e: the e-th key of default_rng(seed), as the backtest's order e
        rng = np.random.default_rng(self.seed)
        rng.bit_generator.advance(self.episode)
        self.market.reset(rng)
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

    def step(self) -> dict[str, Any]:
        """Step k with no order: the entry's market fields (``mid`` ... ``volume``, the
        step start ``t_s``) and what the paper market needs to replay the step (module
        docstring); then the next step, or the next episode after the horizon's entry."""
        m = self.market
        entry: dict[str, Any] = {"model": self.model, "t_s": self.k * self.step_s,
                                 **self.quote()}
        if self.model == "almgren_chriss":
            before = {"alpha": float(m.alpha[0]),
                      "last_volume": float(m.feature("last_volume")[0]),
                      "arrival_vwap": float(m.arrival_vwap[0])}
            m.execute(self._none, self._active)
            exo = m.last_exogenous
            entry["ac"] = {**before, **{name: float(v[0]) for name, v in exo.items()}}
        elif self.model == "replay":
            entry["book"] = _replay_step(m, self.k == 0, self._none, self._active)
        else:
            m.execute(self._none, self._active)
        if self.k >= self.market.n_steps:  # the horizon's entry: the next episode follows
            self.episode += 1
            self._reset()
        else:
            self.k += 1
        return entry

    def advance(self) -> None:
        """Step on without the entry (``step``)."""
        self.step()


def _rows(d: Any, lo: int, hi: int, levels: int) -> dict[str, Any]:
    """Recorded event rows [lo, hi) as stream columns (the book's first ``levels`` levels)."""
    sl = slice(lo, hi)
    return {
        "t": d.t[sl].tolist(), "kind": d.kind[sl].tolist(), "size": d.size[sl].tolist(),
        "price": d.price[sl].tolist(), "side": d.side[sl].tolist(),
        "sub": d.sub_row[sl].tolist(), "seq": d.seq[sl].tolist(),
        "bid_px": d.bid_px[sl, :levels].tolist(), "bid_qty": d.bid_qty[sl, :levels].tolist(),
        "ask_px": d.ask_px[sl, :levels].tolist(), "ask_qty": d.ask_qty[sl, :levels].tolist(),
    }


def _replay_step(m: Any, first: bool, none: ChildOrderBatch, active: Any) -> dict[str, Any]:
    """A replay's step as the stream carries it: the book at the step's start (the last row at
    or before it), the step's events, and in an episode's first entry its start, arrival and
    pre-arrival events (top-k levels: what the features see)."""
    d = m.data
    p0 = int(m._ptr[0])
    b = max(p0 - 1, 0)
    out: dict[str, Any] = {
        "t0": float(m.episode_start[0]), "seq": int(d.seq[b]), "mid_units": float(
            d.mid_units[b]),
        "bid_px": d.bid_px[b].tolist(), "bid_qty": d.bid_qty[b].tolist(),
        "ask_px": d.ask_px[b].tolist(), "ask_qty": d.ask_qty[b].tolist(),
    }
    if first:
        c = m.config
        lo = int(np.searchsorted(d.t, float(m.episode_start[0]) - c.pre_arrival_s, "left"))
        out["arrival_vwap"] = float(m.arrival_vwap[0])
        out["pre"] = _rows(d, lo, p0, m._top_k)
    m.execute(none, active)
    out["events"] = _rows(d, p0, int(m._ptr[0]), d.levels)
    return out


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
        head = {"symbol": symbol, "step": i, "episode": tape.episode, "k": tape.k}
        event = {**head, **tape.step(), "ts_ns": time.time_ns()}
        entry = client.xadd(stream, encode(event), maxlen=1_000_000, approximate=True)
        if on_event is not None:
            on_event(i, entry)
    return config.steps


__all__ = ["FeedConfig", "MarketTape", "parse_speed", "run_feed"]
