"""Paper trading against the market-data stream, with the backtest's fill and queue models.

A paper market is a market behind the market protocol (``execrl.sim.base.BatchedMarket``), so
the execution core, the guard, the watchdog and the audit trail run on it unchanged, whose
exogenous state comes from ``STREAM_MARKET`` entries (``execrl.service.feed``: one entry per
decision step, per order) instead of its own simulation. Each one is the backtest's market
class with its source of market data replaced, so fills, impact and queues are computed by the
backtest's own kernels, not by a copy:

- **Almgren–Chriss** (``StreamACMarket``): an entry carries the step's exogenous moves (drift
  term, innovation σ·√τ·ξ, market volume, next α); ``ACMarket.apply_step`` applies them on
  the paper market's own mid, so our temporary impact (ε + η/τ·n on the fill) and permanent
  impact (γ·n on the mid, kept for the rest of the order) sit on top of the streamed
  unaffected mid exactly as in the backtest. Fed the entries of a feed of the same market and
  seed, it reproduces the backtest bit for bit (the same float operations in the same order).
  At a break in the stream (a new feed episode) the mid jumps to the streamed one, our
  permanent impact kept; the arrival VWAP is the entry's (its feed episode's).
- **Replay** (``StreamReplayMarket``): an entry carries the recorded book at the step's start
  and the step's recorded events (each with the book after it); the replay's step kernel runs
  on them: marketable orders walk the streamed depth (flat beyond it), passive orders queue
  behind the displayed size at their price and move up as streamed trades and cancels at that
  price consume the queue (``exact`` by the events' submission numbers, or the estimators),
  with the replay's latency, fees and transient impact. Features come from the same streamed
  events through the same ``FeatureBuilder``; a feed episode's first entry carries its
  pre-arrival events (an order starting at a later entry starts its features with none, and
  its arrival VWAP at the arrival mid). Fed a replay feed of the same data and seed, it
  reproduces the backtest bit for bit. A replay feed runs on past the horizon while the data
  lasts, so an order may start at any entry; a stream that jumps mid-order (another feed
  episode) is refused. The specification's data is read for its calibration only (tick,
  levels, expected volume, σ); every event a fill is computed from comes from the stream.
- **Order book** (``lob``): not offered. Its order flow reacts to the book our orders change
  (queue-reactive intensities, Hawkes excitation), which a tape recorded without our orders
  cannot reproduce; replaying its tape as a recording (``replay``) is the honest paper model.

Entries reach the market through a ``StreamFeed``: ``push(entry, env)`` queues an order's
entries (or ``source(env)`` is called when its queue is empty); ``reset`` takes an order's
first entry (its start: mid, arrival, features) and ``execute`` the step's. A missing entry,
an entry for another symbol, market, step length or model, a step number that does not
increase, or a malformed field raises ``MarketDataError`` naming it: never a silent fill on
stale data. ``StreamFeed`` is also the venue: ``Executor.run(..., venue=feed)`` builds the
paper market from the market the core was built on (``executor.venues.wrap_venue``), behind
``BrokerVenue(PaperBroker)`` so that the wire log of child-order commands is kept.

Between steps the paper market holds per order only the entry of its next step and its own
state; a step's streamed rows are gathered into one array (a short Python pass over the orders
of the step, collecting their entries; the events themselves are walked by the compiled
kernels).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError, ExecRLError
from execrl.sim.almgren_chriss import (
    _ALPHA,
    _ARRIVAL,
    _ARRIVAL_VWAP,
    _IV_DEN,
    _IV_NUM,
    _LAST_VOLUME,
    _MID,
    _N_EXO,
    EXOGENOUS_FIELDS,
    ACMarket,
    ACMarketConfig,
)
from execrl.sim.base import BatchedMarket, ChildOrderBatch, FillBatch
from execrl.sim.replay import ReplayMarket, ReplayMarketConfig, _carry_forward
from execrl.sim.rng import episode_keys

#: markets a paper market can be fed for
PAPER_MODELS = ("almgren_chriss", "replay")
#: the step kernel's event columns, as the stream names them (``feed._rows``)
_COLUMNS = ("t", "kind", "size", "price", "side", "sub", "seq")
_BOOK = ("bid_px", "bid_qty", "ask_px", "ask_qty")
_NO_EVENT = -1  # the kind of a step's start row (the book then) and its end row


class MarketDataError(ExecRLError):
    """A market-data entry the paper market cannot fill against (one line: which and why)."""


class StreamFeed:
    """Market-data entries for a paper market, per order (env), and its venue factory.

    ``symbol``: refuse entries of another symbol (None: any). ``source(env)``: called for the
    next entry of order ``env`` when none is queued (a blocking read of the stream; None:
    a missing entry is an error). Pass the feed as ``Executor.run(..., venue=feed)``; the
    market it builds is ``feed.market``."""

    name = "stream"

    def __init__(self, symbol: str | None = None,
                 source: Callable[[int], dict[str, Any]] | None = None):
        self.symbol = symbol
        self.source = source
        self.market: Any = None
        self._queues: dict[int, deque[dict[str, Any]]] = {}
        self._last: dict[int, int] = {}
        #: per order, the entries its market has taken (what ``shadow`` markets replay)
        self.taken: dict[int, list[dict[str, Any]]] = {}

    def push(self, entry: dict[str, Any], env: int = 0) -> None:
        """Queue ``entry`` (a decoded ``STREAM_MARKET`` entry) for order ``env``; an entry of
        another symbol, or whose ``step`` does not follow the last one's, is refused."""
        if not isinstance(entry, dict):
            raise MarketDataError(f"market entry for order {env} is not an object: {entry!r}")
        if self.symbol is not None and entry.get("symbol") != self.symbol:
            raise MarketDataError(
                f"market entry field 'symbol' = {entry.get('symbol')!r} is not this paper "
                f"market's symbol {self.symbol!r} (order {env})")
        step = entry.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            raise MarketDataError(f"market entry field 'step' = {step!r} is not an integer "
                                  f"(order {env})")
        last = self._last.get(env)
        if last is not None and step <= last:
            raise MarketDataError(
                f"market entry field 'step' = {step} for order {env} does not follow the last "
                f"one pushed ({last}): entries out of order or repeated")
        self._last[env] = step
        self._queues.setdefault(env, deque()).append(entry)

    def take(self, env: int, k: int) -> dict[str, Any]:
        """The next entry of order ``env`` (for its step ``k``)."""
        queue = self._queues.get(env)
        if not queue and self.source is not None:
            self.push(self.source(env), env)
            queue = self._queues[env]
        if not queue:
            raise MarketDataError(
                f"no market entry for order {env}'s step {k}: push its STREAM_MARKET entry "
                "before the step (the paper market never fills on stale data)")
        entry = queue.popleft()
        self.taken.setdefault(env, []).append(entry)
        return entry

    def shadow(self, market: BatchedMarket) -> BatchedMarket:
        """A second paper market of ``market``'s specification that meets the same entries
        as this feed's market, one step behind it or level (the watchdog's shadow TWAP:
        ``executor.loop``); it takes nothing from the stream itself."""
        return paper_market(market, _Replica(self))

    def clear(self, env: int) -> None:
        """Drop what is queued for order ``env`` (a tape starting it again)."""
        self._queues.pop(env, None)

    def pending(self, env: int = 0) -> int:
        """Entries queued for order ``env``."""
        return len(self._queues.get(env, ()))

    def __call__(self, market: BatchedMarket, parent_ids: list[str], step_ms: float) -> Any:
        """The venue over the core's built ``market``: a paper market of its specification
        fed by this feed, behind ``BrokerVenue(PaperBroker)`` (``executor.venues``)."""
        from execrl.executor.venues import BrokerVenue, PaperBroker

        paper = paper_market(market, self)
        self.market = paper
        return BrokerVenue(paper, PaperBroker(paper, parent_ids, step_ms))


class _Replica(StreamFeed):
    """The entries another market of ``primary`` took, in the same order (``shadow``)."""

    def __init__(self, primary: StreamFeed):
        super().__init__(primary.symbol)
        self.primary = primary
        self._at: dict[int, int] = {}

    def take(self, env: int, k: int) -> dict[str, Any]:
        at = self._at.get(env, 0)
        taken = self.primary.taken.get(env, [])
        if at >= len(taken):
            raise MarketDataError(f"the shadow market of order {env} is ahead of the stream "
                                  f"(step {k}): it replays the entries its order has taken")
        self._at[env] = at + 1
        return taken[at]


def paper_market(market: BatchedMarket, feed: StreamFeed) -> BatchedMarket:
    """The paper market of a built backtest market's specification, fed by ``feed``."""
    if isinstance(market, ACMarket):
        return StreamACMarket(market.config, market.n_envs, market.side, feed, s0=market.s0)
    if isinstance(market, ReplayMarket):
        return StreamReplayMarket(market.config, market.n_envs, market.side, feed)
    model = getattr(getattr(market, "config", None), "model", type(market).__name__)
    raise ConfigError(
        f"the stream venue fills against {', '.join(PAPER_MODELS)} market data, not "
        f"{model!r}: an order book's flow reacts to our orders, which a tape cannot replay "
        "(feed its tape as a replay instead)")


# -- reading entries ------------------------------------------------------------------------
def _number(where: dict[str, Any], name: str, what: str) -> float:
    value = where.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value):
        raise MarketDataError(f"market entry field '{what}{name}' = {value!r} is not a finite "
                              "number")
    return float(value)


def _part(entry: dict[str, Any], model: str, key: str, step_s: float, env: int,
          k: int) -> dict[str, Any]:
    """The entry's replay part ``key`` for ``model``, checked against this market."""
    if entry.get("model") != model:
        raise MarketDataError(
            f"market entry field 'model' = {entry.get('model')!r} (step {entry.get('step')}) "
            f"is not this paper market's {model!r} (order {env}, step {k})")
    got = _number(entry, "step_s", "")
    if abs(got - step_s) > 1e-9 * max(step_s, 1.0):
        raise MarketDataError(
            f"market entry field 'step_s' = {got:g}: the stream's decision step is {got:g} s, "
            f"this order's is {step_s:g} s (feed the market with the order's horizon and steps)")
    part = entry.get(key)
    if not isinstance(part, dict):
        raise MarketDataError(f"market entry (step {entry.get('step')}) has no {key!r} part: "
                              f"a {model} paper market replays the step from it")
    feed_step = entry.get("k")
    if not isinstance(feed_step, int) or isinstance(feed_step, bool) or feed_step < 0:
        raise MarketDataError(f"market entry field 'k' = {feed_step!r} is not a step number")
    return part


def _column(value: Any, dtype: Any, what: str) -> NDArray:
    """A numeric column of an entry: a JSON list, or ``feed.pack``'s ``"<dtype>:<base64>"``."""
    if isinstance(value, str):
        code, _, data = value.partition(":")
        try:
            source = np.dtype(code)
            if source.kind not in "fiu":
                raise TypeError(code)
            a = np.frombuffer(base64.b64decode(data, validate=True), dtype=source)
        except (TypeError, ValueError, binascii.Error):
            raise MarketDataError(f"market entry field '{what}' is not a packed numeric column "
                                  f"(<dtype>:<base64>): {value[:40]!r}") from None
        return a.astype(dtype, copy=False)
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise MarketDataError(f"market entry field '{what}' is not a list of numbers") from None


class StreamACMarket(ACMarket):
    """The Almgren–Chriss market with its exogenous moves from the stream (module docstring).

    Per order: its mid starts at its first entry's (the streamed unaffected mid, the arrival),
    then moves by the streamed drift term and innovation plus our permanent impact; at a break
    in the stream (a new feed episode) it jumps to the streamed mid, our impact so far kept."""

    def __init__(self, config: ACMarketConfig, n_envs: int, side: int, feed: StreamFeed,
                 s0: float | None = None):
        super().__init__(config, n_envs, side, s0)
        self.feed = feed
        self._step_s = config.tau * config.time_unit_s
        self._entry: list[dict[str, float] | None] = [None] * n_envs  # step 0's, read
        self._at = np.full((2, n_envs), -1, dtype=np.int64)  # (episode, k) of the last entry
        self._unaffected = np.zeros(n_envs)  # the streamed mid after the last step

    def _ac(self, entry: dict[str, Any], env: int) -> dict[str, float]:
        part = _part(entry, "almgren_chriss", "ac", self._step_s, env, int(self._k[env]))
        out = {name: _number(part, name, "ac.") for name in
               ("alpha", "last_volume", "arrival_vwap", *EXOGENOUS_FIELDS)}
        out["mid"] = _number(entry, "mid", "")
        if out["mid"] <= 0:
            raise MarketDataError(f"market entry field 'mid' = {out['mid']!r} is not > 0")
        return out

    def reset(self, rng: np.random.Generator, env_ids: NDArray[np.intp] | None = None) -> None:
        """New orders in ``env_ids``: each starts on its next entry (its arrival)."""
        ids = self._rows if env_ids is None else np.ascontiguousarray(env_ids, dtype=np.intp)
        if ids.size == 0:
            return
        self._keys[ids] = episode_keys(rng, ids.size)  # the backtest's draws (none used)
        st = self._state
        for i in ids.tolist():
            entry = self.feed.take(i, 0)
            ac = self._ac(entry, i)
            st[_MID, i] = st[_ARRIVAL, i] = ac["mid"]
            st[_ARRIVAL_VWAP, i] = ac["arrival_vwap"]
            st[_IV_NUM, i] = st[_IV_DEN, i] = 0.0
            st[_LAST_VOLUME, i] = ac["last_volume"]
            st[_ALPHA, i] = ac["alpha"]
            self._k[i] = 0
            ep = entry.get("episode")
            ac["episode"], ac["k"] = (ep if isinstance(ep, int) else -2), entry["k"]
            self._entry[i] = ac

    def _next(self, i: int) -> dict[str, float]:
        """Order i's entry of the coming step (after its first), read: a break in the stream
        (another feed episode, a skipped step) moves the mid to the streamed one."""
        entry = self.feed.take(i, int(self._k[i]))
        ac = self._ac(entry, i)
        if (entry.get("episode"), entry.get("k")) != (int(self._at[0, i]),
                                                     int(self._at[1, i]) + 1):
            st = self._state
            st[_MID, i] = ac["mid"] + (st[_MID, i] - self._unaffected[i])
        self._state[_ALPHA, i] = ac["alpha"]
        ep = entry.get("episode")
        ac["episode"], ac["k"] = (ep if isinstance(ep, int) else -2), entry["k"]
        return ac

    def execute(
        self, orders: ChildOrderBatch, active: NDArray[np.bool_], record_events: bool = False
    ) -> FillBatch:
        act = np.ascontiguousarray(active)
        ids = np.flatnonzero(act)
        steps = []
        for i in ids.tolist():  # the orders' entries of the step, read (N live orders)
            ac = self._entry[i] if self._entry[i] is not None else self._next(i)
            self._entry[i] = None
            steps.append([ac[name] for name in _AC_ROW])
        exo = np.zeros((_N_EXO, self.n_envs))
        if steps:
            rows = np.array(steps).T
            exo[:, ids] = rows[:_N_EXO]
            self._at[:, ids] = rows[_N_EXO + 1:].astype(np.int64)
            self._unaffected[ids] = rows[_N_EXO] + rows[0] + rows[1]
        return self.apply_step(orders, act, exo, record_events)


#: what a step needs of an AC entry, in order: the exogenous rows, the mid, the stream position
_AC_ROW = (*EXOGENOUS_FIELDS, "mid", "episode", "k")


class StreamReplayMarket(ReplayMarket):
    """The replay market with its recorded events from the stream (module docstring)."""

    def __init__(self, config: ReplayMarketConfig, n_envs: int, side: int, feed: StreamFeed):
        super().__init__(config, n_envs, side)
        self.feed = feed
        n, levels = n_envs, self.data.levels
        self._levels = levels
        self._entry: list[dict[str, Any] | None] = [None] * n
        #: each order's book now (the last streamed row it applied), in price units
        self._book = np.zeros((4, n, levels))
        self._book_mid = np.zeros(n)
        self._book_seq = np.zeros(n, dtype=np.int64)
        #: streamed rows not yet fed to the features (top k levels), per order
        self._unfed: list[dict[str, NDArray]] = [_no_rows(self._top_k)] * n
        self._buffer: tuple[NDArray, ...] = ()
        self._starts = np.zeros(n, dtype=np.int64)
        self._mids = np.zeros(0)

    # -- the recorded market, from the stream --------------------------------------------------
    def _mid_units_now(self) -> NDArray[np.float64]:
        return self._book_mid.copy()

    def _touch_now(self) -> tuple[NDArray, NDArray, NDArray, NDArray]:
        b = self._book
        return b[0, :, 0].copy(), b[1, :, 0].copy(), b[2, :, 0].copy(), b[3, :, 0].copy()

    def _events(self) -> tuple[NDArray, ...]:
        return self._buffer

    def _event_capacity(self, active: NDArray[np.bool_]) -> int:
        return int(self._buffer[0].shape[0]) + self.n_envs * (self._levels + 2) + 16

    def _book_part(self, entry: dict[str, Any], env: int) -> dict[str, Any]:
        part = _part(entry, "replay", "book", self.config.tau, env, int(self._k[env]))
        for name in ("t0", "mid_units", "seq"):
            _number(part, name, "book.")
        return part

    def _levels_of(self, part: dict[str, Any], what: str, n_rows: int | None,
                   levels: int) -> list[NDArray]:
        out = []
        for name in _BOOK:
            a = _column(part.get(name), np.float64, what + name)
            shape = (levels,) if n_rows is None else (n_rows, levels)
            if n_rows is not None and a.ndim == 1 and a.size == n_rows * levels:
                a = a.reshape(shape)  # packed row after row (or a step without events)
            if a.shape != shape or not np.isfinite(a).all():
                raise MarketDataError(f"market entry field '{what}{name}' has shape {a.shape}, "
                                      f"not {shape} (or a value that is not finite)")
            out.append(a)
        return out

    def _rows_of(self, part: dict[str, Any], what: str, levels: int) -> dict[str, NDArray]:
        if not isinstance(part, dict):
            raise MarketDataError(f"market entry field '{what[:-1]}' is not an object")
        t = _column(part.get("t"), np.float64, what + "t")
        if t.ndim != 1 or not np.isfinite(t).all() or (np.diff(t) < 0).any():
            raise MarketDataError(f"market entry field '{what}t' is not a list of increasing "
                                  "times")
        rows: dict[str, NDArray] = {"t": t}
        for name, dtype in zip(_COLUMNS[1:], (np.int8, np.int64, np.float64, np.int8, np.int64,
                                              np.int64), strict=True):
            a = _column(part.get(name), dtype, what + name)
            if a.shape != t.shape:
                raise MarketDataError(f"market entry field '{what}{name}' has {a.size} values "
                                      f"for {t.size} events")
            rows[name] = a
        for name, a in zip(_BOOK, self._levels_of(part, what, t.size, levels), strict=True):
            rows[name] = a
        return rows

    def reset(self, rng: np.random.Generator, env_ids: NDArray[np.intp] | None = None) -> None:
        """New orders in ``env_ids``, each on its next entry: its start on the data's clock,
        its book, arrival and (in a feed episode's first entry) the pre-arrival events."""
        ids = self._rows if env_ids is None else np.asarray(env_ids, dtype=np.intp)
        if ids.size == 0:
            return
        self._keys[ids] = episode_keys(rng, ids.size)  # the latency draws' keys, as backtested
        starts = np.empty(ids.size)
        for r, i in enumerate(ids.tolist()):
            entry = self.feed.take(i, 0)
            part = self._book_part(entry, i)
            feed_k = int(entry["k"])
            starts[r] = part["t0"] + feed_k * self._dt if feed_k else part["t0"]
            self._set_book(i, part)
            self._arrival_units[i] = self._book_mid[i]
            self._arrival[i] = self._book_mid[i] / self._scale
            pre = part.get("pre")
            self.arrival_vwap[i] = (_number(part, "arrival_vwap", "book.")
                                    if pre is not None else self._arrival[i])
            self._unfed[i] = (self._rows_of(pre, "book.pre.", self._top_k) if pre is not None
                              else _no_rows(self._top_k))
            self._entry[i] = entry
        self._start_orders(ids, starts)

    def _set_book(self, i: int, part: dict[str, Any]) -> None:
        for j, a in enumerate(self._levels_of(part, "book.", None, self._levels)):
            self._book[j, i] = a
        self._book_mid[i] = float(part["mid_units"])
        self._book_seq[i] = int(part["seq"])

    def _begin_step(self, active: NDArray[np.bool_]) -> None:
        """The step's rows: per active order [its book at the step's start, the step's
        streamed events, an end row no walk passes], one array for the kernel."""
        ids = np.flatnonzero(active).tolist()
        blocks = []
        for i in ids:
            entry = self._entry[i]
            if entry is None:
                entry = self.feed.take(i, int(self._k[i]))
            self._entry[i] = None
            part = self._book_part(entry, i)
            ts = self._t0[i] + self._k[i] * self._dt
            feed_ts = part["t0"] + int(entry["k"]) * self._dt
            if abs(feed_ts - ts) > 1e-6:
                raise MarketDataError(
                    f"market entry (step {entry.get('step')}) starts at t = {feed_ts:.6f} s on "
                    f"the data's clock, order {i}'s step {int(self._k[i])} at {ts:.6f} s: the "
                    "stream jumped (another feed episode, or entries missing)")
            self._set_book(i, part)  # the stream's book at the step's start
            blocks.append(self._rows_of(part.get("events"), "book.events.", self._levels))
        sizes = np.array([b["t"].size + 2 for b in blocks], dtype=np.int64)
        total = int(sizes.sum())
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        cols = {name: np.empty(total, dtype=dt) for name, dt in zip(
            _COLUMNS, (np.float64, np.int8, np.int64, np.float64, np.int8, np.int64, np.int64),
            strict=True)}
        book = {name: np.zeros((total, self._levels)) for name in _BOOK}
        mids = np.full(total, np.nan)
        for j, (i, b) in enumerate(zip(ids, blocks, strict=True)):
            s, m = int(starts[j]), b["t"].size
            ts = self._t0[i] + self._k[i] * self._dt
            head, body, tail = s, slice(s + 1, s + 1 + m), s + 1 + m
            for name in _COLUMNS:
                cols[name][body] = b[name]
            cols["t"][head], cols["t"][tail] = ts, math.inf
            cols["kind"][head] = cols["kind"][tail] = _NO_EVENT
            cols["size"][head] = cols["size"][tail] = 0
            cols["price"][head] = cols["price"][tail] = 0.0
            cols["side"][head] = cols["side"][tail] = 0
            cols["sub"][head] = cols["sub"][tail] = -1
            seq = self._book_seq[i]
            cols["seq"][head] = seq
            cols["seq"][tail] = (b["seq"][-1] if m else seq) + 1
            for k, name in enumerate(_BOOK):
                book[name][head] = self._book[k, i]
                book[name][body] = b[name]
                book[name][tail] = self._book[k, i] if not m else b[name][-1]
            mids[head] = self._book_mid[i]
        two = (book["bid_qty"][:, 0] > 0) & (book["ask_qty"][:, 0] > 0)
        inner = np.where(two, 0.5 * (book["bid_px"][:, 0] + book["ask_px"][:, 0]), np.nan)
        heads = starts
        inner[heads] = mids[heads]  # a step starts on the streamed book's mid
        self._mids = _carry_forward(inner) if total else inner
        self._buffer = (cols["t"], cols["kind"], cols["size"], cols["price"], cols["side"],
                        cols["sub"], cols["seq"], book["bid_px"], book["bid_qty"],
                        book["ask_px"], book["ask_qty"])
        self._starts[ids] = starts
        self._ptr[ids] = starts + 1  # the start row is the book before the step: applied
        self._blocks = dict(zip(ids, blocks, strict=True))

    def _end_step(self, active: NDArray[np.bool_]) -> None:
        """The book each order's step ended on, and its events for the features."""
        ids = np.flatnonzero(active)
        last = self._ptr[ids] - 1
        buf = self._buffer
        for k in range(4):
            self._book[k, ids] = buf[7 + k][last]
        self._book_mid[ids] = self._mids[last]
        self._book_seq[ids] = buf[6][last]
        top = self._top_k
        for i in ids.tolist():
            b = self._blocks[i]
            u = self._unfed[i]
            self._unfed[i] = {name: np.concatenate([u[name], b[name][:, :top] if name in _BOOK
                                                    else b[name]]) for name in u}
        self._blocks = {}

    def _feed(self, ids: NDArray[np.intp]) -> None:
        """Feed each order its streamed rows stamped at or before its next observation time
        (the step's end less the market-data delay), as the replay does."""
        if ids.size == 0:
            return
        now = self._t0[ids] + self._k[ids] * self._dt - self.config.market_data_delay_s
        ready = []
        for j, i in enumerate(ids.tolist()):
            u = self._unfed[i]
            cut = int(np.searchsorted(u["t"], now[j], side="right"))
            ready.append({name: a[:cut] for name, a in u.items()})
            self._unfed[i] = {name: a[cut:] for name, a in u.items()}
        hi = np.cumsum([r["t"].size for r in ready]).astype(np.int64)
        lo = (hi - np.array([r["t"].size for r in ready], dtype=np.int64)).astype(np.int64)
        cat = {name: np.concatenate([r[name] for r in ready]) for name in ready[0]}
        self._feed_rows(np.ascontiguousarray(ids, dtype=np.int64), lo, hi, cat["t"],
                        cat["kind"], cat["price"], cat["size"], cat["side"],
                        np.ascontiguousarray(cat["bid_px"]), np.ascontiguousarray(cat["bid_qty"]),
                        np.ascontiguousarray(cat["ask_px"]), np.ascontiguousarray(cat["ask_qty"]))


class TapeFed:
    """A paper market fed, at each reset, the entries a feed of ``backtest`` (a built market,
    no order trading on it) publishes for the same episodes (``feed.market_entries``): the
    stream venue checked in process against the market it replays (the conformance suite).
    The protocol is the paper market's (``paper``); ``backtest`` only writes the tape."""

    def __init__(self, backtest: BatchedMarket):
        self.backtest = backtest
        self.feed = StreamFeed()
        self.paper = paper_market(backtest, self.feed)
        c: Any = backtest.config
        self.step_s = c.tau * c.time_unit_s if isinstance(backtest, ACMarket) else c.tau
        self._step = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.paper, name)

    @property
    def mid(self) -> NDArray[np.float64]:
        return self.paper.mid

    @property
    def arrival_mid(self) -> NDArray[np.float64]:
        return self.paper.arrival_mid

    @property
    def arrival_vwap(self) -> NDArray[np.float64]:
        return self.paper.arrival_vwap

    @property
    def interval_vwap(self) -> NDArray[np.float64]:
        return self.paper.interval_vwap

    def reset(self, rng: np.random.Generator, env_ids: NDArray[np.intp] | None = None) -> None:
        import copy

        from execrl.service.feed import market_entries

        ids = np.arange(self.paper.n_envs) if env_ids is None else np.asarray(env_ids,
                                                                               dtype=np.intp)
        self.backtest.reset(copy.deepcopy(rng), ids)  # the episodes the paper market meets
        for i in ids.tolist():
            self.feed.clear(i)
        for k in range(self.paper.n_steps):  # the entries its steps take (not the horizon's)
            steps = np.full(ids.size, k, dtype=np.int64)
            for i, entry in zip(ids.tolist(), market_entries(self.backtest, steps, self.step_s,
                                                             ids), strict=True):
                self.feed.push({"symbol": "", "step": self._step, "episode": 0, "k": k,
                                **entry}, i)
            self._step += 1
        self.paper.reset(rng, ids)

    def execute(self, orders: ChildOrderBatch, active: NDArray[np.bool_],
                record_events: bool = False) -> FillBatch:
        return self.paper.execute(orders, active, record_events)


def _no_rows(levels: int) -> dict[str, NDArray]:
    return {"t": np.zeros(0), "kind": np.zeros(0, np.int8), "size": np.zeros(0, np.int64),
            "price": np.zeros(0), "side": np.zeros(0, np.int8), "sub": np.zeros(0, np.int64),
            "seq": np.zeros(0, np.int64), **{name: np.zeros((0, levels)) for name in _BOOK}}


__all__ = ["PAPER_MODELS", "MarketDataError", "StreamACMarket", "StreamFeed",
           "StreamReplayMarket", "TapeFed", "paper_market"]
