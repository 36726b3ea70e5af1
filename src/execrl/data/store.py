"""The event store: recorded market data in one columnar, memory-mapped layout that the replay
reads, whatever it came from (LOBSTER, a user's trades and L2 files, or trades alone).

A store is a folder written once by ``execrl data import`` (through the staged output folder
of ``execrl.domain.outputs``, so an interrupted import leaves nothing half-written) and opened
by later runs with ``open_store``, which memory-maps every column: a day of GOOG at 10 levels
(148 k events, 48 MB) opens in milliseconds and is shared by every process that reads it.

Layout: ``store.json`` (what the columns are and where they came from) and one ``.npy`` file per
column, all of one length (one row per event, time order):

- ``t`` float64 seconds (after midnight for LOBSTER, the file's own clock otherwise);
- ``kind`` int8: ``SUBMIT``..``HALT`` (1-7, LOBSTER's event types), ``TRADE`` (8: a print
  of a user's trades file, no order id) or ``BOOK`` (9: an L2 snapshot or update);
- ``order_id`` int64 (0 where the data has none); ``size`` int64 shares;
- ``price`` int64 in units of 1 / ``price_scale`` currency;
- ``side`` int8: the side of the *resting* order an event concerns (+1 bid, -1 ask); a
  trade's aggressor is ``-side`` (LOBSTER's convention, kept for every source);
- ``bid_px``, ``bid_qty``, ``ask_px``, ``ask_qty`` (n, levels) int64: the book after the event
  (absent for trades-only data), size 0 where a level is empty.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from execrl.data.lobster import LobsterDay
from execrl.domain import DataError

SUBMIT, CANCEL, DELETE, EXECUTE, EXECUTE_HIDDEN, CROSS, HALT, TRADE, BOOK = range(1, 10)
KIND_NAMES = {SUBMIT: "submit", CANCEL: "cancel", DELETE: "delete", EXECUTE: "execute",
              EXECUTE_HIDDEN: "execute_hidden", CROSS: "cross", HALT: "halt", TRADE: "trade",
              BOOK: "book"}
#: event kinds that are trades (their ``size`` traded at ``price``)
TRADE_KINDS = (EXECUTE, EXECUTE_HIDDEN, CROSS, TRADE)

STORE_FORMAT = "execrl-event-store/1"
_META = "store.json"
EVENT_COLUMNS: dict[str, np.dtype] = {
    "t": np.dtype(np.float64), "kind": np.dtype(np.int8), "order_id": np.dtype(np.int64),
    "size": np.dtype(np.int64), "price": np.dtype(np.int64), "side": np.dtype(np.int8),
}
BOOK_COLUMNS = ("bid_px", "bid_qty", "ask_px", "ask_qty")


@dataclass(frozen=True)
class StoreMeta:
    """What a store holds (``store.json``)."""

    symbol: str
    price_scale: int
    """Prices are integers in units of 1 / price_scale currency."""
    tick: int
    """The price grid, in price units (GOOG 2012: 100, one cent)."""
    levels: int
    """Book levels a side (0: trades only)."""
    has_order_ids: bool
    """Order-by-order data: the replay can keep exact queue positions."""
    source: str
    n_events: int
    days: list[dict[str, Any]] = field(default_factory=list)
    """Per day: ``{"date", "first", "rows"}`` (splits by day use these)."""
    format: str = STORE_FORMAT

    @property
    def has_book(self) -> bool:
        return self.levels > 0


@dataclass(frozen=True)
class EventStore:
    """Columns of one store (arrays or memory maps), see the module docstring."""

    meta: StoreMeta
    t: NDArray[np.float64]
    kind: NDArray[np.int8]
    order_id: NDArray[np.int64]
    size: NDArray[np.int64]
    price: NDArray[np.int64]
    side: NDArray[np.int8]
    bid_px: NDArray[np.int64] | None = None
    bid_qty: NDArray[np.int64] | None = None
    ask_px: NDArray[np.int64] | None = None
    ask_qty: NDArray[np.int64] | None = None
    path: Path | None = None

    @property
    def n_events(self) -> int:
        return int(self.t.shape[0])

    def column(self, name: str) -> NDArray:
        value = getattr(self, name)
        if value is None:
            raise DataError(f"{self.meta.source}: has no {name!r} column (trades only)")
        return value

    def to_currency(self, price: NDArray | float) -> NDArray[np.float64] | float:
        return np.asarray(price) / self.meta.price_scale

    def mid(self) -> NDArray[np.float64]:
        """Mid after each event in currency; NaN where a side is empty or there is no book."""
        if self.bid_qty is None:
            return np.full(self.n_events, np.nan)
        ok = (self.bid_qty[:, 0] > 0) & (self.ask_qty[:, 0] > 0)  # type: ignore[index]
        mid = 0.5 * (self.bid_px[:, 0] + self.ask_px[:, 0]) / self.meta.price_scale  # type: ignore[index]
        return np.where(ok, mid, np.nan)


def _gcd_tick(prices: NDArray[np.int64]) -> int:
    p = np.unique(prices[prices > 0])
    if p.size == 0:
        return 1
    return int(np.gcd.reduce(p)) if p.size > 1 else int(p[0])


def from_lobster(day: LobsterDay) -> EventStore:
    """The store of one LOBSTER day (already checked by ``read_lobster``): LOBSTER's events
    as they are, with their order ids (exact queues), and the book after each."""
    m = day.messages
    # the grid of limit orders (types 1-4); hidden executions may print between ticks (midpoint)
    limit = m["type"] <= EXECUTE
    tick = _gcd_tick(np.concatenate([m["price"][limit], day.book["bid_px"][:, 0][
        day.book["bid_qty"][:, 0] > 0], day.book["ask_px"][:, 0][day.book["ask_qty"][:, 0] > 0]]))
    meta = StoreMeta(symbol=day.symbol, price_scale=10_000, tick=tick, levels=day.levels,
                     has_order_ids=True, source=day.source, n_events=day.n_rows,
                     days=[{"date": day.date, "first": 0, "rows": day.n_rows}])
    return EventStore(
        meta=meta, t=np.ascontiguousarray(m["t"]), kind=np.ascontiguousarray(m["type"]),
        order_id=np.ascontiguousarray(m["order_id"]), size=np.ascontiguousarray(m["size"]),
        price=np.ascontiguousarray(m["price"]), side=np.ascontiguousarray(m["direction"]),
        bid_px=np.ascontiguousarray(day.book["bid_px"]),
        bid_qty=np.ascontiguousarray(day.book["bid_qty"]),
        ask_px=np.ascontiguousarray(day.book["ask_px"]),
        ask_qty=np.ascontiguousarray(day.book["ask_qty"]),
    )


def write_store(store: EventStore, folder: Path) -> None:
    """Write ``store`` into ``folder`` (a staging folder: ``execrl.domain.outputs``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, dtype in EVENT_COLUMNS.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(getattr(store, name), dtype=dtype))
    if store.meta.has_book:
        for name in BOOK_COLUMNS:
            np.save(folder / f"{name}.npy", np.ascontiguousarray(store.column(name),
                                                                dtype=np.int64))
    (folder / _META).write_text(json.dumps(asdict(store.meta), indent=2) + "\n")


def is_store(path: Path) -> bool:
    return (Path(path) / _META).is_file()


def store_files(meta: StoreMeta) -> frozenset[str]:
    """Every file a store of ``meta`` holds (what ``execrl data import --out`` may replace)."""
    names = {_META, *(f"{c}.npy" for c in EVENT_COLUMNS)}
    if meta.has_book:
        names |= {f"{c}.npy" for c in BOOK_COLUMNS}
    return frozenset(names)


#: every file name any store may hold
STORE_FILES = frozenset({_META, *(f"{c}.npy" for c in (*EVENT_COLUMNS, *BOOK_COLUMNS))})


def open_store(path: str | Path) -> EventStore:
    """Memory-map the store in ``path``; a store that is incomplete or inconsistent is refused
    by name (a file missing, columns of different lengths, a dtype that is not the layout's)."""
    folder = Path(path)
    meta_path = folder / _META
    try:
        raw = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{folder}: not an execrl event store (no {_META}); create one with "
                        "`execrl data import`") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_path}: cannot be read ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != STORE_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else raw
        raise DataError(f"{meta_path}: format {found!r} is not {STORE_FORMAT!r}")
    try:
        meta = StoreMeta(**raw)
    except TypeError as exc:
        raise DataError(f"{meta_path}: {exc}") from None
    cols: dict[str, NDArray] = {}
    names = list(EVENT_COLUMNS) + (list(BOOK_COLUMNS) if meta.has_book else [])
    for name in names:
        file = folder / f"{name}.npy"
        try:
            arr = np.load(file, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{file}: missing from the store") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{file}: cannot be read ({exc})") from None
        want = EVENT_COLUMNS.get(name, np.dtype(np.int64))
        shape_ok = arr.ndim == 1 if name in EVENT_COLUMNS else (
            arr.ndim == 2 and arr.shape[1] == meta.levels)
        if arr.dtype != want or not shape_ok or arr.shape[0] != meta.n_events:
            raise DataError(f"{file}: dtype {arr.dtype} shape {arr.shape} does not match the "
                            f"store ({meta.n_events} events of {want}"
                            + ("" if name in EVENT_COLUMNS else f", {meta.levels} levels") + ")")
        cols[name] = arr
    return EventStore(meta=meta, path=folder, **cols)


# -- a summary (execrl data validate) -----------------------------------------------------------
def _weighted_quantile(x: NDArray, w: NDArray, q: float) -> float:
    order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    if cw.size == 0 or cw[-1] <= 0:
        return math.nan
    return float(x[order][np.searchsorted(cw, q * cw[-1])])


def summarise(store: EventStore, gap_s: float = 60.0) -> dict[str, Any]:
    """What ``execrl data validate`` prints: span, rows, price range, spread and depth
    statistics (weighted by how long each book lasted), trades by side, gaps and halts."""
    m = store.meta
    t = np.asarray(store.t)
    kind = np.asarray(store.kind)
    n = t.size
    out: dict[str, Any] = {
        "symbol": m.symbol, "source": m.source, "events": n,
        "days": [d["date"] for d in m.days], "levels": m.levels,
        "order_ids": m.has_order_ids, "tick": m.tick / m.price_scale,
        "span_s": {"first": float(t[0]), "last": float(t[-1]), "length": float(t[-1] - t[0])},
        "events_by_kind": {KIND_NAMES[int(k)]: int(c) for k, c in
                           zip(*np.unique(kind, return_counts=True), strict=True)},
    }
    trade = np.isin(kind, TRADE_KINDS)
    px = np.asarray(store.price)[trade] / m.price_scale
    size = np.asarray(store.size)[trade]
    aggressor = -np.asarray(store.side)[trade]
    cross = kind[trade] == CROSS
    out["trades"] = {
        "count": int(trade.sum()), "shares": int(size.sum()),
        "buyer_initiated": {"count": int(((aggressor == 1) & ~cross).sum()),
                            "shares": int(size[(aggressor == 1) & ~cross].sum())},
        "seller_initiated": {"count": int(((aggressor == -1) & ~cross).sum()),
                             "shares": int(size[(aggressor == -1) & ~cross].sum())},
        "hidden": int((kind == EXECUTE_HIDDEN).sum()), "cross": int(cross.sum()),
        "price_min": float(px.min()) if px.size else None,
        "price_max": float(px.max()) if px.size else None,
    }
    dt = np.diff(t, append=t[-1])
    if m.has_book:
        bq, aq = np.asarray(store.bid_qty), np.asarray(store.ask_qty)
        bp, ap = np.asarray(store.bid_px), np.asarray(store.ask_px)
        two = (bq[:, 0] > 0) & (aq[:, 0] > 0)
        spread = (ap[two, 0] - bp[two, 0]).astype(np.float64)
        mid = 0.5 * (ap[two, 0] + bp[two, 0])
        w = dt[two]
        bps = spread / mid * 1e4
        ticks = spread / m.tick
        out["mid"] = {"min": float(mid.min() / m.price_scale) if mid.size else None,
                      "max": float(mid.max() / m.price_scale) if mid.size else None}
        out["spread"] = {
            "weighted_by": "time each book lasted",
            "mean_ticks": float(np.average(ticks, weights=w)) if w.sum() > 0 else math.nan,
            "median_ticks": _weighted_quantile(ticks, w, 0.5),
            "p95_ticks": _weighted_quantile(ticks, w, 0.95),
            "mean_bps": float(np.average(bps, weights=w)) if w.sum() > 0 else math.nan,
            "one_side_empty_events": int((~two).sum()),
        }
        wt = dt if dt.sum() > 0 else np.ones_like(dt)
        out["depth"] = {
            "mean_bid_1": float(np.average(bq[:, 0], weights=wt)),
            "mean_ask_1": float(np.average(aq[:, 0], weights=wt)),
            f"mean_bid_{m.levels}": float(np.average(bq.sum(axis=1), weights=wt)),
            f"mean_ask_{m.levels}": float(np.average(aq.sum(axis=1), weights=wt)),
        }
    gaps = np.flatnonzero(np.diff(t) > gap_s)
    longest = int(np.argmax(np.diff(t))) if n > 1 else 0
    out["gaps"] = {
        "threshold_s": gap_s, "count": int(gaps.size),
        "longest_s": float(t[longest + 1] - t[longest]) if n > 1 else 0.0,
        "longest_at": float(t[longest]) if n > 1 else None,
        "first": [{"at": float(t[g]), "length_s": float(t[g + 1] - t[g])} for g in gaps[:5]],
    }
    halts = []
    start = None
    for r in np.flatnonzero(kind == HALT).tolist():
        code = int(store.price[r])
        if code == -1 and start is None:
            start = float(t[r])
        elif code == 1 and start is not None:
            halts.append({"start": start, "end": float(t[r])})
            start = None
    if start is not None:
        halts.append({"start": start, "end": None})
    out["halts"] = halts
    return out
