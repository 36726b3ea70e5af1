"""``execrl feed``: a simulated or recorded market replayed onto ``STREAM_MARKET``.

One entry per decision step of the market for one symbol, at the market's own pace (1×), N×
faster, or as fast as possible. The market is built from a market specification (a preset,
or a replay of a recorded day through ``--market``) with no order trading against it: the
tape as it would be. When an episode of the market ends the next one starts, so a feed can run
as long as asked (a replay's episode runs on past its horizon while the data lasts, so that an
order starting at any entry meets a continuous tape). Episode i is the backtest's order i of
the same seed (``Executor.run``'s path (seed, i): the i-th episode key of
``default_rng(seed)``).

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
  submission number, the book after each: numeric columns ``pack``ed), and in an episode's
  first entry the pre-arrival events its features see; the paper market runs the replay's
  kernel on them (walk, queue estimators, latency, fees, transient impact).
- The order book market (``lob``): the quote only; its flow reacts to our orders, which a tape
  that did not see them cannot reproduce (``execrl.service.paper``).

A decision-step entry is complete once its step is over, so it is published then (the
decision it releases still sees only the step's start).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

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
        self._env = np.zeros(1, dtype=np.intp)
        self._reset()

    def _reset(self) -> None:
        # episode e: the e-th key of default_rng(seed), as the backtest's order e
        rng = np.random.default_rng(self.seed)
        rng.bit_generator.advance(self.episode)
        self.market.reset(rng)
        self.k = 0

    def quote(self) -> dict[str, float]:
        return _quotes(self.market, np.array([self.k]))[0]

    def step(self) -> dict[str, Any]:
        """Step k with no order: the entry's market fields (``market_entries``); then the
        next step, or the next episode after the horizon's entry."""
        entry = market_entries(self.market, np.array([self.k]), self.step_s, self._env)[0]
        if self.k >= self.market.n_steps and not self._data_goes_on():
            self.episode += 1  # the horizon's entry (a replay's data end): the next episode
            self._reset()
        else:
            self.k += 1
        return entry

    def entry(self, symbol: str, step: int) -> dict[str, Any]:
        """The feed's entry ``step`` for ``symbol`` (what ``run_feed`` publishes): where it
        is on the tape (episode, k), then the step's market fields (``step``)."""
        head = {"symbol": symbol, "step": step, "episode": self.episode, "k": self.k}
        return {**head, **self.step(), "ts_ns": time.time_ns()}

    def _data_goes_on(self) -> bool:
        """A replay runs on past the horizon while its data lasts, so that an order starting
        at any entry meets a continuous tape (a simulated market's episode ends there)."""
        m = self.market
        if self.spec.model != "replay":
            return False
        end = float(m.episode_start[0]) + (self.k + 2) * self.spec.tau
        return end <= float(m.data.t[-1])

    def advance(self) -> None:
        """Step on without the entry (``step``)."""
        self.step()


def _quotes(m: Any, k: NDArray[np.int64]) -> list[dict[str, float]]:
    """Per market of ``m``: its mid, touch (or a spread proxy, or the mid) and the last step's
    volume (0 before the first step)."""
    feats = m.available_features
    mid = np.asarray(m.mid, dtype=np.float64)
    if "best_bid" in feats and "best_ask" in feats:
        bid, ask = m.feature("best_bid"), m.feature("best_ask")
    elif "spread_bps" in feats:
        half = mid * m.feature("spread_bps") * 0.5e-4
        bid, ask = mid - half, mid + half
    else:
        bid = ask = mid
    volume = (np.where(k > 0, m.feature("last_volume"), 0.0) if "last_volume" in feats
              else np.zeros(mid.shape))
    return [{"mid": float(mid[i]), "bid": float(bid[i]), "ask": float(ask[i]),
             "volume": float(volume[i])} for i in range(m.n_envs)]


def market_entries(m: Any, k: NDArray[np.int64], step_s: float,
                   envs: NDArray[np.intp]) -> list[dict[str, Any]]:
    """Step markets ``envs`` of the built market ``m`` once with no order (each at its step
    ``k[j]``); per market, its entry's market fields: the quote at the step's start, the model,
    the step's length ``step_s`` and start ``t_s`` (seconds) and the step's replay part (module
    docstring)."""
    model = str(getattr(getattr(m, "config", None), "model", ""))
    n = m.n_envs
    active = np.zeros(n, dtype=bool)
    active[envs] = True
    none = ChildOrderBatch.market_orders(n)
    steps = np.zeros(n, dtype=np.int64)
    steps[envs] = k
    quotes = _quotes(m, steps)
    out = [{"model": model, "step_s": step_s, "t_s": float(kj) * step_s, **quotes[i]}
           for i, kj in zip(envs.tolist(), k.tolist(), strict=True)]
    if model == "almgren_chriss":
        before = {"alpha": m.alpha.copy(), "last_volume": m.feature("last_volume").copy(),
                  "arrival_vwap": m.arrival_vwap.copy()}
        m.execute(none, active)
        exo = m.last_exogenous
        for j, i in enumerate(envs.tolist()):
            out[j]["ac"] = {**{name: float(v[i]) for name, v in before.items()},
                            **{name: float(v[i]) for name, v in exo.items()}}
    elif model == "replay":
        d = m.data
        p0 = m._ptr.copy()
        parts = []
        for i, kj in zip(envs.tolist(), k.tolist(), strict=True):
            b = max(int(p0[i]) - 1, 0)
            part: dict[str, Any] = {
                "t0": float(m.episode_start[i]), "seq": int(d.seq[b]),
                "mid_units": float(d.mid_units[b]), "bid_px": d.bid_px[b].tolist(),
                "bid_qty": d.bid_qty[b].tolist(), "ask_px": d.ask_px[b].tolist(),
                "ask_qty": d.ask_qty[b].tolist(),
            }
            if kj == 0:  # an episode's first entry: its arrival and what the features saw
                start = float(m.episode_start[i]) - m.config.pre_arrival_s
                lo = int(np.searchsorted(d.t, start, "left"))
                part["arrival_vwap"] = float(m.arrival_vwap[i])
                part["pre"] = _rows(d, lo, int(p0[i]), m._top_k)
            parts.append(part)
        m.execute(none, active)
        for j, i in enumerate(envs.tolist()):
            parts[j]["events"] = _rows(d, int(p0[i]), int(m._ptr[i]), d.levels)
            out[j]["book"] = parts[j]
    else:  # the order book: its flow reacts to orders, the quote is all a tape can say
        m.execute(none, active)
    return out


def pack(values: NDArray) -> str:
    """A numeric column on the wire: ``"<dtype>:<base64 of its bytes>"`` (``<f8``, ``<i8``,
    ``|i1``), exact and ~50x faster to read than a JSON list; the paper market reads either."""
    a = np.ascontiguousarray(values)
    return f"{a.dtype.str}:{base64.b64encode(a.tobytes()).decode('ascii')}"


def _rows(d: Any, lo: int, hi: int, levels: int) -> dict[str, Any]:
    """Recorded event rows [lo, hi) as stream columns (``pack``ed; the book's first ``levels``
    levels, row after row)."""
    sl = slice(lo, hi)
    return {
        "t": pack(d.t[sl]), "kind": pack(d.kind[sl]), "size": pack(d.size[sl]),
        "price": pack(d.price[sl]), "side": pack(d.side[sl]), "sub": pack(d.sub_row[sl]),
        "seq": pack(d.seq[sl]), "bid_px": pack(d.bid_px[sl, :levels]),
        "bid_qty": pack(d.bid_qty[sl, :levels]), "ask_px": pack(d.ask_px[sl, :levels]),
        "ask_qty": pack(d.ask_qty[sl, :levels]),
    }


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
        entry = client.xadd(stream, encode(tape.entry(symbol, i)), maxlen=1_000_000,
                            approximate=True)
        if on_event is not None:
            on_event(i, entry)
    return config.steps


__all__ = ["FeedConfig", "MarketTape", "market_entries", "pack", "parse_speed", "run_feed"]
