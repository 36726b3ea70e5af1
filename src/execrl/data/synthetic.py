"""A small synthetic order-by-order market in LOBSTER's format: fixtures that need no data.

``synthetic_lobster`` runs a price-time-priority book of individual orders (plain Python, a few
thousand events a second: it is for tests and examples, not speed) driven by random order flow
around a wandering mid: submissions at and behind the touch, cancellations, deletions and
market orders that execute the resting orders at the best price in time priority (one
execution message per order consumed, LOBSTER's convention: the message carries the resting
order's id and direction). The book starts with resting orders whose submissions lie before
the file (as in a real LOBSTER file) and every book row is exactly what the messages imply, so
``read_lobster`` accepts it and the replay's exact queue can be checked against it.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import NDArray

from execrl.data.lobster import (
    DUMMY_ASK_PX,
    DUMMY_BID_PX,
    MESSAGE_DTYPE,
    LobsterDay,
    book_dtype,
)

#: one cent in LOBSTER's price units
CENT = 100


class ReferenceBook:
    """A price-time-priority book of individual orders (price -> FIFO deque of [id, size])."""

    def __init__(self) -> None:
        self.bids: dict[int, deque[list[int]]] = {}
        self.asks: dict[int, deque[list[int]]] = {}
        self.where: dict[int, tuple[int, int]] = {}  # order id -> (direction, price)

    def side(self, direction: int) -> dict[int, deque[list[int]]]:
        return self.bids if direction == 1 else self.asks

    def add(self, oid: int, direction: int, price: int, size: int) -> None:
        self.side(direction).setdefault(price, deque()).append([oid, size])
        self.where[oid] = (direction, price)

    def reduce(self, oid: int, size: int) -> None:
        direction, price = self.where[oid]
        level = self.side(direction)[price]
        for entry in level:
            if entry[0] == oid:
                entry[1] -= size
                if entry[1] <= 0:
                    level.remove(entry)
                    del self.where[oid]
                break
        if not level:
            del self.side(direction)[price]

    def best(self, direction: int) -> int | None:
        side = self.side(direction)
        if not side:
            return None
        return max(side) if direction == 1 else min(side)

    def top(self, levels: int) -> tuple[list[int], list[int], list[int], list[int]]:
        asks = sorted(self.asks)[:levels]
        bids = sorted(self.bids, reverse=True)[:levels]
        ask_qty = [sum(e[1] for e in self.asks[p]) for p in asks]
        bid_qty = [sum(e[1] for e in self.bids[p]) for p in bids]
        pad = levels - len(asks)
        ask_px = asks + [DUMMY_ASK_PX] * pad
        ask_qty += [0] * pad
        pad = levels - len(bids)
        bid_px = bids + [DUMMY_BID_PX] * pad
        bid_qty += [0] * pad
        return ask_px, ask_qty, bid_px, bid_qty


def synthetic_lobster(
    n_messages: int = 5_000,
    levels: int = 5,
    seed: int = 0,
    start_s: float = 34_200.0,
    mean_gap_s: float = 0.05,
    mid: int = 500_000,
    halt_at: float | None = None,
) -> LobsterDay:
    """A LOBSTER day of about ``n_messages`` rows at ``levels`` levels (see the module doc).

    ``halt_at``: the fraction of the rows after which a halt (types 7, prices -1 then 1, a
    minute apart) is written, or None."""
    rng = np.random.default_rng(seed)
    book = ReferenceBook()
    next_id = 1_000_000
    for direction in (1, -1):  # resting before the file starts: ids never submitted in it
        for k in range(1, levels + 3):
            price = mid - direction * k * CENT
            for _ in range(int(rng.integers(1, 4))):
                book.add(next_id, direction, price, int(rng.integers(1, 5)) * 100)
                next_id += 1
    rows: list[tuple[float, int, int, int, int, int]] = []
    tops: list[tuple[list[int], list[int], list[int], list[int]]] = []
    t = start_s
    center = float(mid)
    halt_row = None if halt_at is None else int(halt_at * n_messages)

    def emit(ty: int, oid: int, size: int, price: int, direction: int) -> None:
        rows.append((float(f"{t:.9f}"), ty, oid, size, price, direction))
        tops.append(book.top(levels))

    while len(rows) < n_messages:
        t += float(rng.exponential(mean_gap_s))
        center += float(rng.normal(0.0, 0.3)) * CENT
        if halt_row is not None and len(rows) >= halt_row:
            emit(7, 0, 0, -1, -1)
            t += 60.0
            emit(7, 0, 0, 1, -1)
            halt_row = None
            continue
        u = float(rng.random())
        bid, ask = book.best(1), book.best(-1)
        if u < 0.45 or bid is None or ask is None:  # submission
            direction = 1 if rng.random() < 0.5 else -1
            ref = round(center / CENT) * CENT
            depth = int(rng.geometric(0.45)) - 1
            price = ref - direction * (1 + depth) * CENT
            if direction == 1 and ask is not None and price >= ask:
                price = ask - CENT
            if direction == -1 and bid is not None and price <= bid:
                price = bid + CENT
            size = int(rng.integers(1, 6)) * 100
            book.add(next_id, direction, price, size)
            emit(1, next_id, size, price, direction)
            next_id += 1
        elif u < 0.85:  # cancellation or deletion of a random resting order
            oid = list(book.where)[int(rng.integers(len(book.where)))]
            direction, price = book.where[oid]
            size = next(e[1] for e in book.side(direction)[price] if e[0] == oid)
            if size > 100 and rng.random() < 0.2:
                part = int(rng.integers(1, size // 100)) * 100
                book.reduce(oid, part)
                emit(2, oid, part, price, direction)
            else:
                book.reduce(oid, size)
                emit(3, oid, size, price, direction)
        elif u < 0.97:  # a market order executes the best level's orders in time priority
            aggressor = 1 if rng.random() < 0.5 else -1
            resting = -aggressor
            price = book.best(resting)
            assert price is not None
            want = int(rng.integers(1, 8)) * 100
            while want > 0 and price in book.side(resting):
                oid, size = book.side(resting)[price][0]
                take = min(size, want)
                book.reduce(oid, take)
                emit(4, oid, take, price, resting)
                want -= take
        else:  # an execution against hidden liquidity inside the spread
            direction = 1 if rng.random() < 0.5 else -1
            price = bid if direction == 1 else ask
            assert price is not None
            emit(5, 0, int(rng.integers(1, 3)) * 100, price, direction)
    return _as_day(rows[:n_messages], tops[:n_messages], levels, start_s, t)


def build_day(
    messages: list[tuple[float, int, int, int, int, int]],
    levels: int,
    resting: list[tuple[int, int, int, int]] = (),  # type: ignore[assignment]
) -> LobsterDay:
    """The LOBSTER day that ``messages`` (rows of t, type, order id, size, price, direction)
    make of a book holding ``resting`` orders (id, direction, price, size) before the first:
    each book row is the reference book's top ``levels`` after its message (types 1 add,
    2-4 take the size off the order, 5-7 leave the visible book as it was)."""
    book = ReferenceBook()
    for oid, direction, price, size in resting:
        book.add(oid, direction, price, size)
    tops = []
    for _, ty, oid, size, price, direction in messages:
        if ty == 1:
            book.add(oid, direction, price, size)
        elif ty in (2, 3, 4):
            book.reduce(oid, size)
        tops.append(book.top(levels))
    end = messages[-1][0] if messages else 34_200.0
    return _as_day(list(messages), tops, levels, messages[0][0] if messages else 34_200.0, end)


def _as_day(rows: list, tops: list, levels: int, start_s: float, end_s: float) -> LobsterDay:
    messages = np.array(rows, dtype=MESSAGE_DTYPE)
    book: NDArray = np.empty(len(tops), dtype=book_dtype(levels))
    arr = np.asarray(tops, dtype=np.int64)  # (n, 4, levels)
    book["ask_px"], book["ask_qty"] = arr[:, 0], arr[:, 1]
    book["bid_px"], book["bid_qty"] = arr[:, 2], arr[:, 3]
    return LobsterDay(messages=messages, book=book, symbol="SYNTH", date="2012-06-21",
                      levels=levels, source="synthetic", start_s=start_s,
                      end_s=float(np.ceil(end_s)))
