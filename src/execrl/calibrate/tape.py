"""One record of a book's life, real or simulated, that every statistic reads.

A ``BookTape`` is the book after each event (prices in dollars, sizes in shares, best level
first, NaN price / 0 size where a level is empty) with the event's kind, plus the market
orders. The LOBSTER day (``tape_from_lobster``) and the simulator's trace (``tape_from_arrays``)
both become one, so the calibration report computes real and simulated statistics with the
same code, and a difference in a plot is a difference of the markets, not of two estimators.

Event kinds (``KIND_*``): a limit-order submission, a cancellation (partial or total), a
market order, and ``KIND_OTHER`` (a halt, an execution against hidden liquidity that leaves
the visible book as it was). LOBSTER writes a market order as one execution message per
resting order it meets, all at the same nanosecond; ``market_orders`` merges them into one
order (its size is their sum, its aggressor theirs), and the tape keeps one event per market
order (the book after its last execution), so that inter-event times and event counts mean
the same in both markets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from execrl.data.lobster import (
    CANCEL,
    DELETE,
    EXECUTE,
    EXECUTE_HIDDEN,
    PRICE_SCALE,
    SUBMIT,
    LobsterDay,
)

KIND_LIMIT, KIND_CANCEL, KIND_MARKET, KIND_OTHER = 0, 1, 2, 3
KIND_NAMES = {KIND_LIMIT: "limit", KIND_CANCEL: "cancel", KIND_MARKET: "market",
              KIND_OTHER: "other"}

#: One market order: ``t`` seconds, ``size`` shares, ``visible_size`` the shares it took
#: from the visible book, ``aggressor`` +1 buy / -1 sell, ``hidden`` True when all of it
#: executed against hidden liquidity (the visible book did not change), ``first_row`` /
#: ``last_row`` its first and last message (LOBSTER; -1 for a simulated tape).
MARKET_ORDER_DTYPE = np.dtype(
    [("t", np.float64), ("size", np.int64), ("visible_size", np.int64), ("aggressor", np.int8),
     ("hidden", np.bool_), ("first_row", np.int64), ("last_row", np.int64)]
)


@dataclass(frozen=True)
class BookTape:
    """The book after each event (row i after event i) and the market orders."""

    t: NDArray[np.float64]
    """(n,) event times, seconds, non-decreasing."""
    kind: NDArray[np.int8]
    """(n,) ``KIND_*`` of the event that led to the row."""
    bid_px: NDArray[np.float64]
    """(n, L) dollars, best first; NaN where the level is empty."""
    bid_qty: NDArray[np.int64]
    ask_px: NDArray[np.float64]
    ask_qty: NDArray[np.int64]
    market_orders: NDArray
    """``MARKET_ORDER_DTYPE`` rows, time order."""
    start_s: float
    end_s: float
    tick: float
    """Price grid, dollars (LOBSTER: one cent)."""
    label: str = ""
    bid_seen_to: NDArray[np.float64] | None = None
    """(n,) the lowest bid price the tape can show (a level beyond it may hold shares it does
    not show): LOBSTER's deepest level when all levels are occupied, else -inf; a simulator's
    window edge. None: -inf everywhere."""
    ask_seen_to: NDArray[np.float64] | None = None
    """(n,) the highest ask price the tape can show (as ``bid_seen_to``)."""

    @property
    def levels(self) -> int:
        return int(self.bid_px.shape[1])

    @property
    def n_events(self) -> int:
        return int(self.t.shape[0])

    @property
    def mid(self) -> NDArray[np.float64]:
        return 0.5 * (self.bid_px[:, 0] + self.ask_px[:, 0])

    @property
    def spread(self) -> NDArray[np.float64]:
        return self.ask_px[:, 0] - self.bid_px[:, 0]

    def with_market_orders(self, market_orders: NDArray) -> BookTape:
        """This tape with other market orders (``MARKET_ORDER_DTYPE``)."""
        return dataclasses.replace(self, market_orders=market_orders)

    def durations(self) -> NDArray[np.float64]:
        """How long each row's book stood: until the next event, the last until ``end_s``."""
        nxt = np.append(self.t[1:], max(self.end_s, float(self.t[-1])))
        return np.maximum(nxt - self.t, 0.0)


def market_orders(day: LobsterDay) -> NDArray:
    """LOBSTER's executions (types 4 and 5) merged into market orders: consecutive executions
    with the same time stamp and aggressor are one order (``MARKET_ORDER_DTYPE``)."""
    tr = day.trades()
    tr = tr[tr["aggressor"] != 0]  # cross trades have no aggressor: not a market order
    if tr.size == 0:
        return np.empty(0, dtype=MARKET_ORDER_DTYPE)
    new = np.ones(tr.size, dtype=bool)
    new[1:] = (tr["t"][1:] != tr["t"][:-1]) | (tr["aggressor"][1:] != tr["aggressor"][:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], tr.size) - 1
    out = np.empty(starts.size, dtype=MARKET_ORDER_DTYPE)
    out["t"] = tr["t"][starts]
    out["size"] = np.add.reduceat(tr["size"], starts)
    out["visible_size"] = np.add.reduceat(np.where(tr["hidden"], 0, tr["size"]), starts)
    out["aggressor"] = tr["aggressor"][starts]
    out["hidden"] = np.logical_and.reduceat(tr["hidden"], starts)
    out["first_row"] = tr["row"][starts]
    out["last_row"] = tr["row"][ends]
    return out


def _px(px: NDArray[np.int64], qty: NDArray[np.int64]) -> NDArray[np.float64]:
    return np.where(qty > 0, px / PRICE_SCALE, np.nan)


def event_rows(day: LobsterDay) -> tuple[NDArray[np.int64], NDArray[np.int8], NDArray]:
    """The message rows that are events of the tape, their ``KIND_*``, and the market orders:
    every message, except that of a market order's executions only the last stays."""
    m = day.messages
    mos = market_orders(day)
    keep = np.ones(day.n_rows, dtype=bool)
    kind = np.full(day.n_rows, KIND_OTHER, dtype=np.int8)
    kind[m["type"] == SUBMIT] = KIND_LIMIT
    kind[(m["type"] == CANCEL) | (m["type"] == DELETE)] = KIND_CANCEL
    execution = (m["type"] == EXECUTE) | (m["type"] == EXECUTE_HIDDEN)
    keep[execution] = False  # only the last row of each market order stays
    keep[mos["last_row"]] = True
    kind[mos["last_row"]] = np.where(mos["hidden"], KIND_OTHER, KIND_MARKET)
    rows = np.flatnonzero(keep)
    return rows, kind[rows], mos


def tape_from_lobster(day: LobsterDay) -> BookTape:
    """The tape of a LOBSTER day: one event per message, except that the executions of one
    market order are one event (the row after its last execution)."""
    m = day.messages
    rows, kind, mos = event_rows(day)
    b = day.book[rows]
    bid_px, ask_px = _px(b["bid_px"], b["bid_qty"]), _px(b["ask_px"], b["ask_qty"])
    # a full file (every level occupied) says nothing beyond its last level
    bid_to = np.where(b["bid_qty"][:, -1] > 0, bid_px[:, -1], -np.inf)
    ask_to = np.where(b["ask_qty"][:, -1] > 0, ask_px[:, -1], np.inf)
    start = day.start_s if day.start_s is not None else float(m["t"][0])
    end = day.end_s if day.end_s is not None else float(m["t"][-1])
    return BookTape(
        t=m["t"][rows], kind=kind,
        bid_px=bid_px, bid_qty=b["bid_qty"].copy(), ask_px=ask_px, ask_qty=b["ask_qty"].copy(),
        market_orders=mos, start_s=float(start), end_s=float(end), tick=1.0 / 100,
        label=f"{day.symbol} {day.date}", bid_seen_to=bid_to, ask_seen_to=ask_to,
    )


def tape_from_arrays(
    t: NDArray[np.float64], kind: NDArray[np.integer], bid_px: NDArray[np.float64],
    bid_qty: NDArray[np.integer], ask_px: NDArray[np.float64], ask_qty: NDArray[np.integer],
    mo_t: NDArray[np.float64], mo_size: NDArray[np.integer], mo_aggressor: NDArray[np.integer],
    start_s: float, end_s: float, tick: float, label: str = "",
    bid_seen_to: NDArray[np.float64] | None = None, ask_seen_to: NDArray[np.float64] | None = None,
) -> BookTape:
    """A tape from a simulator's trace (the book on a price grid after each event): empty
    levels are dropped so that level k is the k-th *occupied* price level, as in LOBSTER.
    ``*_seen_to``: the window's edge prices per row (None: the tape shows the whole book)."""
    bid_px, bid_qty = _occupied(np.asarray(bid_px, float), np.asarray(bid_qty, np.int64))
    ask_px, ask_qty = _occupied(np.asarray(ask_px, float), np.asarray(ask_qty, np.int64))
    mos = np.empty(len(mo_t), dtype=MARKET_ORDER_DTYPE)
    mos["t"], mos["size"], mos["aggressor"] = mo_t, mo_size, mo_aggressor
    mos["visible_size"] = mo_size
    mos["hidden"] = False
    mos["first_row"] = mos["last_row"] = -1
    return BookTape(t=np.asarray(t, float), kind=np.asarray(kind, np.int8), bid_px=bid_px,
                    bid_qty=bid_qty, ask_px=ask_px, ask_qty=ask_qty, market_orders=mos,
                    start_s=float(start_s), end_s=float(end_s), tick=float(tick), label=label,
                    bid_seen_to=bid_seen_to, ask_seen_to=ask_seen_to)


def _occupied(
    px: NDArray[np.float64], qty: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Levels with size > 0 moved to the front of each row (best first, order kept)."""
    full = qty > 0
    order = np.argsort(~full, axis=1, kind="stable")
    qty = np.take_along_axis(qty, order, axis=1)
    px = np.where(qty > 0, np.take_along_axis(px, order, axis=1), np.nan)
    return px, qty
