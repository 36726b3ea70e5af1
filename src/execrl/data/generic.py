"""Users' own market data: trades and L2 books in CSV or Parquet, into the event store.

The format (docs/data.md says it with examples), one header row naming the columns:

- **trades** (required for a trades-only store): ``timestamp``, ``price``, ``size``,
  ``aggressor``. ``timestamp``: seconds as a number (any clock: seconds after midnight or Unix
  seconds) or a date-time (Parquet timestamp, ISO 8601 text in CSV) taken as Unix seconds;
  ``price`` in currency; ``size`` whole shares > 0; ``aggressor``: ``buy`` / ``B`` / ``1`` for a
  buyer-initiated trade, ``sell`` / ``S`` / ``-1`` for a seller-initiated one.
- **L2 snapshots**: ``timestamp``, ``side`` (``bid`` / ``ask``), ``level`` (1 = best),
  ``price``, ``size``: the rows of one timestamp are one whole snapshot of the top levels.
- **L2 updates** (no ``level`` column): ``timestamp``, ``side``, ``price``, ``size``: the new
  total size resting at that price (0 removes the level), applied in row order.

Rows must come in time order. Prices must lie on the store's grid (1 / ``price_scale``).
A bad file is refused with one line naming the file, the row (data rows from 1, the header
not counted) and the problem; nothing is skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from execrl.data.store import BOOK, TRADE, EventStore, StoreMeta, _gcd_tick
from execrl.domain import DataError

TRADE_COLUMNS = ("timestamp", "price", "size", "aggressor")
SNAPSHOT_COLUMNS = ("timestamp", "side", "level", "price", "size")
UPDATE_COLUMNS = ("timestamp", "side", "price", "size")
_BUY = {"buy", "b", "1", "+1", "bid"}
_SELL = {"sell", "s", "-1", "ask", "offer", "a"}


def _read_table(path: Path) -> dict[str, NDArray]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pq.read_table(path)
        else:
            table = pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: cannot be read as "
                        f"{'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'} "
                        f"({str(exc).splitlines()[0]})") from None
    out: dict[str, NDArray] = {}
    for name in table.column_names:
        col = table.column(name)
        key = name.strip().lower()
        if col.null_count:
            row = int(np.flatnonzero(np.asarray(col.is_null()))[0]) + 1
            raise DataError(f"{path}: row {row}: column {name!r} is empty")
        if pa.types.is_timestamp(col.type):
            col = pc.divide(pc.cast(pc.cast(col, pa.timestamp("ns")), pa.int64()), 1e9)
        out[key] = col.to_numpy(zero_copy_only=False)
    return out


def _require(path: Path, cols: dict[str, NDArray], names: tuple[str, ...]) -> None:
    missing = [n for n in names if n not in cols]
    if missing:
        raise DataError(f"{path}: column {missing[0]!r} is missing (expected "
                        f"{', '.join(names)}; found {', '.join(cols) or 'none'})")


def _numbers(path: Path, cols: dict[str, NDArray], name: str, integer: bool = False
             ) -> NDArray:
    col = cols[name]
    try:
        x = col.astype(np.float64)
    except (TypeError, ValueError):
        for r, v in enumerate(col.tolist()):
            try:
                float(v)
            except (TypeError, ValueError):
                raise DataError(f"{path}: row {r + 1}: {name} {str(v)!r} is not a number") from None
        raise
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise DataError(f"{path}: row {bad[0] + 1}: {name} {float(x[bad[0]])!r} is not finite")
    if integer:
        bad = np.flatnonzero(x != np.round(x))
        if bad.size:
            raise DataError(f"{path}: row {bad[0] + 1}: {name} {float(x[bad[0]])!r} is not a whole "
                            "number of shares")
    return x


def _sides(path: Path, col: NDArray, name: str) -> NDArray[np.int8]:
    text = np.char.lower(np.char.strip(col.astype(str)))
    buy = np.isin(text, list(_BUY))
    sell = np.isin(text, list(_SELL))
    bad = np.flatnonzero(~(buy | sell))
    if bad.size:
        raise DataError(f"{path}: row {bad[0] + 1}: {name} {str(col[bad[0]])!r} is not buy/sell "
                        "(or bid/ask, B/S, 1/-1)")
    return np.where(buy, 1, -1).astype(np.int8)


def _on_grid(path: Path, px: NDArray[np.float64], scale: int) -> NDArray[np.int64]:
    units = np.round(px * scale)
    bad = np.flatnonzero((px <= 0) | (np.abs(px * scale - units) > 1e-6 + 1e-12 * units))
    if bad.size:
        r = int(bad[0])
        what = "is not > 0" if px[r] <= 0 else f"is finer than the price grid 1/{scale}"
        raise DataError(f"{path}: row {r + 1}: price {float(px[r])!r} {what}")
    return units.astype(np.int64)


def _sorted(path: Path, t: NDArray[np.float64]) -> None:
    bad = np.flatnonzero(np.diff(t) < 0)
    if bad.size:
        r = int(bad[0]) + 1
        raise DataError(f"{path}: row {r + 1}: timestamp {float(t[r])!r} is before the previous "
                        f"row's {float(t[r - 1])!r} (rows must come in time order)")


def read_trades(path: Path, scale: int) -> dict[str, NDArray]:
    cols = _read_table(path)
    _require(path, cols, TRADE_COLUMNS)
    t = _numbers(path, cols, "timestamp")
    _sorted(path, t)
    size = _numbers(path, cols, "size", integer=True)
    bad = np.flatnonzero(size <= 0)
    if bad.size:
        raise DataError(f"{path}: row {bad[0] + 1}: size {int(size[bad[0]])} is not > 0")
    px = _on_grid(path, _numbers(path, cols, "price"), scale)
    aggressor = _sides(path, cols["aggressor"], "aggressor")
    return {"t": t, "price": px, "size": size.astype(np.int64), "aggressor": aggressor}


def read_book(path: Path, scale: int, levels: int) -> dict[str, NDArray]:
    """L2 snapshots or updates -> book rows (t, bid_px, bid_qty, ask_px, ask_qty) and, per row,
    the file row it came from (for messages)."""
    cols = _read_table(path)
    snapshots = "level" in cols
    _require(path, cols, SNAPSHOT_COLUMNS if snapshots else UPDATE_COLUMNS)
    t = _numbers(path, cols, "timestamp")
    _sorted(path, t)
    size = _numbers(path, cols, "size", integer=True)
    bad = np.flatnonzero(size < 0)
    if bad.size:
        raise DataError(f"{path}: row {bad[0] + 1}: negative size {int(size[bad[0]])}")
    side = _sides(path, cols["side"], "side")
    px = _on_grid(path, _numbers(path, cols, "price"), scale)
    if snapshots:
        level = _numbers(path, cols, "level", integer=True).astype(np.int64)
        bad = np.flatnonzero(level < 1)
        if bad.size:
            raise DataError(f"{path}: row {bad[0] + 1}: level {level[bad[0]]} is not >= 1")
        rows = _snapshot_rows(path, t, side, level, px, size.astype(np.int64), levels)
    else:
        rows = _update_rows(path, t, side, px, size.astype(np.int64), levels)
    return rows


def _check_row(path: Path, row: int, bid_px, bid_qty, ask_px, ask_qty) -> None:  # type: ignore[no-untyped-def]
    if bid_qty[0] > 0 and ask_qty[0] > 0 and bid_px[0] >= ask_px[0]:
        raise DataError(f"{path}: row {row}: crossed book: best bid {bid_px[0]} >= best ask "
                        f"{ask_px[0]} (price units)")


def _snapshot_rows(path: Path, t, side, level, px, size, levels):  # type: ignore[no-untyped-def]
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    ends = np.r_[starts[1:], t.size]
    n = starts.size
    out = {name: np.zeros((n, levels), dtype=np.int64)
           for name in ("bid_px", "bid_qty", "ask_px", "ask_qty")}
    for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        seen: set[tuple[int, int]] = set()
        for r in range(a, b):
            key = (int(side[r]), int(level[r]))
            if key in seen:
                raise DataError(f"{path}: row {r + 1}: {('bid' if key[0] == 1 else 'ask')} level "
                                f"{key[1]} given twice in the snapshot at {float(t[r])!r}")
            seen.add(key)
            j = key[1] - 1
            if j >= levels:
                continue
            name = "bid" if key[0] == 1 else "ask"
            out[f"{name}_px"][i, j] = px[r]
            out[f"{name}_qty"][i, j] = size[r]
        for name, sign in (("bid", -1), ("ask", 1)):
            p, q = out[f"{name}_px"][i], out[f"{name}_qty"][i]
            occupied = q > 0
            if occupied.any():
                last = int(np.flatnonzero(occupied)[-1])
                if not occupied[: last + 1].all():
                    raise DataError(f"{path}: row {a + 1}: the snapshot at {float(t[a])!r} has "
                                    f"an empty {name} level above an occupied one")
                d = np.diff(p[: last + 1]) * sign
                if (d <= 0).any():
                    raise DataError(f"{path}: row {a + 1}: {name} prices of the snapshot at "
                                    f"{float(t[a])!r} are out of level order")
        _check_row(path, a + 1, out["bid_px"][i], out["bid_qty"][i], out["ask_px"][i],
                   out["ask_qty"][i])
    out["t"] = t[starts]
    out["row"] = starts + 1
    return out


def _update_rows(path: Path, t, side, px, size, levels):  # type: ignore[no-untyped-def]
    n = t.size
    out = {name: np.zeros((n, levels), dtype=np.int64)
           for name in ("bid_px", "bid_qty", "ask_px", "ask_qty")}
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for r in range(n):
        book = bids if side[r] == 1 else asks
        p, q = int(px[r]), int(size[r])
        if q == 0:
            book.pop(p, None)
        else:
            book[p] = q
        top_b = sorted(bids, reverse=True)[:levels]
        top_a = sorted(asks)[:levels]
        for j, p_ in enumerate(top_b):
            out["bid_px"][r, j], out["bid_qty"][r, j] = p_, bids[p_]
        for j, p_ in enumerate(top_a):
            out["ask_px"][r, j], out["ask_qty"][r, j] = p_, asks[p_]
        _check_row(path, r + 1, out["bid_px"][r], out["bid_qty"][r], out["ask_px"][r],
                   out["ask_qty"][r])
    out["t"] = t
    out["row"] = np.arange(1, n + 1)
    return out


def from_generic(
    trades: Path | None, book: Path | None, symbol: str, price_scale: int = 10_000,
    levels: int = 10, tick: float | None = None,
) -> EventStore:
    """The store of a user's trades and / or L2 file (module docstring): both merged in time
    order (a trade before a book row of the same timestamp), or trades alone (no book)."""
    if trades is None and book is None:
        raise DataError("give a trades file, a book file or both")
    tr = read_trades(Path(trades), price_scale) if trades is not None else None
    bk = read_book(Path(book), price_scale, levels) if book is not None else None
    parts_t, parts_kind, parts_src = [], [], []
    if tr is not None:
        parts_t.append(tr["t"])
        parts_kind.append(np.full(tr["t"].size, TRADE, dtype=np.int8))
        parts_src.append(np.arange(tr["t"].size))
    if bk is not None:
        parts_t.append(bk["t"])
        parts_kind.append(np.full(bk["t"].size, BOOK, dtype=np.int8))
        parts_src.append(np.arange(bk["t"].size))
    t = np.concatenate(parts_t)
    kind = np.concatenate(parts_kind)
    src = np.concatenate(parts_src)
    order = np.lexsort((kind, t))  # time, then TRADE (8) before BOOK (9)
    t, kind, src = t[order], kind[order], src[order]
    n = t.size
    size = np.zeros(n, dtype=np.int64)
    price = np.zeros(n, dtype=np.int64)
    side = np.zeros(n, dtype=np.int8)
    is_trade = kind == TRADE
    if tr is not None:
        size[is_trade] = tr["size"][src[is_trade]]
        price[is_trade] = tr["price"][src[is_trade]]
        side[is_trade] = -tr["aggressor"][src[is_trade]]
    book_cols: dict[str, NDArray | None] = dict.fromkeys(("bid_px", "bid_qty", "ask_px",
                                                         "ask_qty"))
    if bk is not None:
        # each event's book: the last book row at or before it (empty before the first)
        idx = np.maximum.accumulate(np.where(~is_trade, src, -1))
        for name in book_cols:
            col = np.vstack([np.zeros((1, levels), dtype=np.int64), bk[name]])
            book_cols[name] = np.ascontiguousarray(col[idx + 1])
    all_px = np.concatenate([price[is_trade]] + ([bk["bid_px"][bk["bid_qty"] > 0],
                                                   bk["ask_px"][bk["ask_qty"] > 0]]
                                                  if bk is not None else []))
    grid = _gcd_tick(all_px) if tick is None else round(tick * price_scale)
    if grid < 1:
        raise DataError(f"tick {tick!r} is finer than the price grid 1/{price_scale}")
    source = ", ".join(str(p) for p in (trades, book) if p is not None)
    meta = StoreMeta(symbol=symbol, price_scale=price_scale, tick=int(grid),
                     levels=levels if bk is not None else 0, has_order_ids=False,
                     source=source, n_events=n, days=[{"date": "", "first": 0, "rows": n}])
    return EventStore(meta=meta, t=np.ascontiguousarray(t), kind=kind,
                      order_id=np.zeros(n, dtype=np.int64), size=size, price=price, side=side,
                      **book_cols)
