"""LOBSTER message + order-book files, read straight from the zip into numpy structured arrays.

LOBSTER (lobsterdata.com) writes one pair of CSV files per symbol and day, without a header:

- ``TICKER_DATE_START_END_message_LEVEL.csv``: one row per event, six columns: time (seconds
  after midnight, decimals up to nanoseconds), event type, order id, size (shares), price
  (dollars × 10 000) and direction (-1 a sell limit order, +1 a buy limit order);
- ``TICKER_DATE_START_END_orderbook_LEVEL.csv``: the book *after* the event of the same row,
  ``4 × LEVEL`` columns: ask price 1, ask size 1, bid price 1, bid size 1, ask price 2, …
  A level that does not exist holds the dummy prices ±9 999 999 999 with size 0.

Event types: 1 submission of a limit order, 2 partial cancellation, 3 deletion, 4 execution of
a visible limit order, 5 execution of a hidden limit order, 6 cross trade (auction), 7 trading
halt indicator (price -1: halt, 0: quoting resumes, 1: trading resumes; the book row repeats
the previous one). The direction of an execution is that of the *resting* limit order, so the
trade's aggressor is the opposite side: an execution of a sell limit order (direction -1) is a
buyer-initiated trade (``aggressor_of_execution``).

``read_lobster`` returns a ``LobsterDay`` whose ``messages`` (``MESSAGE_DTYPE``) and ``book``
(``book_dtype(levels)``) keep LOBSTER's integer units (prices × ``PRICE_SCALE``, sizes in
shares), row i of one being row i of the other. Every file is checked before it is returned; a
bad one raises ``DataError`` with one line naming the file, the row (the line number in the
CSV, from 1) and what is wrong: a wrong column count, a cell that is not a number, a truncated
file, an unknown event type, a negative size, an unsorted timestamp, a crossed book, levels out
of order, or a book row that disagrees with its message (the visible book may change only at
the message's price, by its size, in its direction). Nothing is skipped silently.

Reading GOOG 2012-06-21 at 10 levels (148 k rows, 40 MB of CSV) takes about a second here,
most of it in pyarrow's CSV parser; the checks are compiled (numba).
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit
from numpy.typing import NDArray

from execrl.domain import DataError
from execrl.market.events import TRADE_DTYPE

__all__ = [
    "DUMMY_ASK_PX",
    "DUMMY_BID_PX",
    "EVENT_TYPES",
    "HALT_DTYPE",
    "LOBSTER_TRADE_DTYPE",
    "MESSAGE_DTYPE",
    "PRICE_SCALE",
    "LobsterDay",
    "aggressor_of_execution",
    "book_dtype",
    "read_lobster",
    "write_lobster",
]

#: LOBSTER prices are dollars × this.
PRICE_SCALE = 10_000
#: Prices of levels that do not exist (their size is 0).
DUMMY_ASK_PX = 9_999_999_999
DUMMY_BID_PX = -9_999_999_999

SUBMIT, CANCEL, DELETE, EXECUTE, EXECUTE_HIDDEN, CROSS, HALT = 1, 2, 3, 4, 5, 6, 7
#: event type -> what it is
EVENT_TYPES: dict[int, str] = {
    SUBMIT: "submission of a new limit order",
    CANCEL: "partial cancellation of a limit order",
    DELETE: "deletion of a limit order",
    EXECUTE: "execution of a visible limit order",
    EXECUTE_HIDDEN: "execution of a hidden limit order",
    CROSS: "cross trade (auction)",
    HALT: "trading halt indicator (price -1 halt, 0 quoting, 1 trading resumes)",
}
#: halt message prices
HALT_STARTS, HALT_QUOTING, HALT_ENDS = -1, 0, 1

#: One message-file row, in LOBSTER's units.
#:
#: - ``t`` (float64): seconds after midnight.
#: - ``type`` (int8): event type 1-7 (``EVENT_TYPES``).
#: - ``order_id`` (int64): LOBSTER's order reference number (0 for hidden executions, halts).
#: - ``size`` (int64): shares.
#: - ``price`` (int64): dollars × ``PRICE_SCALE`` (-1 / 0 / 1 for halt messages).
#: - ``direction`` (int8): the limit order's side, +1 buy, -1 sell.
MESSAGE_DTYPE = np.dtype(
    [("t", np.float64), ("type", np.int8), ("order_id", np.int64), ("size", np.int64),
     ("price", np.int64), ("direction", np.int8)]
)

#: One trade (types 4, 5 and 6), in LOBSTER's units.
#:
#: - ``t`` (float64): seconds after midnight; ``row`` (int64): its message row (from 0).
#: - ``price`` (int64): dollars × ``PRICE_SCALE``; ``size`` (int64): shares.
#: - ``aggressor`` (int8): +1 buyer-initiated, -1 seller-initiated, 0 a cross trade (none).
#: - ``hidden`` (bool): the resting order was hidden (type 5).
#: - ``order_id`` (int64): the resting order's id (0 when hidden).
LOBSTER_TRADE_DTYPE = np.dtype(
    [("t", np.float64), ("row", np.int64), ("price", np.int64), ("size", np.int64),
     ("aggressor", np.int8), ("hidden", np.bool_), ("order_id", np.int64)]
)

#: A trading halt: from its halt message to the message that resumes trading (``end`` is
#: +inf when the file ends halted).
HALT_DTYPE = np.dtype([("start", np.float64), ("end", np.float64)])


def book_dtype(levels: int) -> np.dtype:
    """An order-book row with ``levels`` levels a side, level 1 the best, in LOBSTER's units
    (``ask_px`` rising, ``bid_px`` falling; size 0 where a level does not exist)."""
    shape = (int(levels),)
    return np.dtype([("ask_px", np.int64, shape), ("ask_qty", np.int64, shape),
                     ("bid_px", np.int64, shape), ("bid_qty", np.int64, shape)])


def aggressor_of_execution(direction: NDArray[np.integer] | int) -> NDArray[np.int8] | int:
    """The aggressor side of an execution of a limit order of ``direction``: the opposite side
    (a sell limit order, -1, is executed by a buyer, +1)."""
    if isinstance(direction, int | np.integer):
        return -int(direction)
    return (-np.asarray(direction)).astype(np.int8)


@dataclass(frozen=True)
class LobsterDay:
    """One symbol-day of LOBSTER data; ``messages[i]`` led to ``book[i]``."""

    messages: NDArray  # MESSAGE_DTYPE
    book: NDArray  # book_dtype(levels)
    symbol: str
    date: str
    levels: int
    source: str
    """What was read (the zip, or the message file), for messages and provenance."""
    start_s: float | None = None
    """The span the file covers (seconds after midnight), from its name where it says."""
    end_s: float | None = None

    @property
    def n_rows(self) -> int:
        return int(self.messages.shape[0])

    @property
    def best_bid(self) -> NDArray[np.float64]:
        """Best bid per row in dollars; NaN where the bid side is empty."""
        return _best(self.book["bid_px"][:, 0], self.book["bid_qty"][:, 0])

    @property
    def best_ask(self) -> NDArray[np.float64]:
        """Best ask per row in dollars; NaN where the ask side is empty."""
        return _best(self.book["ask_px"][:, 0], self.book["ask_qty"][:, 0])

    @property
    def mid(self) -> NDArray[np.float64]:
        """(best bid + best ask) / 2 per row in dollars; NaN where a side is empty."""
        return 0.5 * (self.best_bid + self.best_ask)

    def trades(self) -> NDArray:
        """Every execution (types 4, 5) and cross trade (6) as ``LOBSTER_TRADE_DTYPE`` rows,
        with the aggressor side: the opposite of the executed limit order's direction."""
        m = self.messages
        rows = np.flatnonzero((m["type"] == EXECUTE) | (m["type"] == EXECUTE_HIDDEN)
                              | (m["type"] == CROSS))
        out = np.empty(rows.size, dtype=LOBSTER_TRADE_DTYPE)
        sel = m[rows]
        out["t"] = sel["t"]
        out["row"] = rows
        out["price"] = sel["price"]
        out["size"] = sel["size"]
        out["aggressor"] = np.where(sel["type"] == CROSS, 0, -sel["direction"])
        out["hidden"] = sel["type"] == EXECUTE_HIDDEN
        out["order_id"] = sel["order_id"]
        return out

    def trade_events(self, env: int = 0) -> NDArray:
        """The executions as the market layer's ``TRADE_DTYPE`` (dollars, aggressor ±1) for
        the feature builder; cross trades have no aggressor and are left out."""
        tr = self.trades()
        tr = tr[tr["aggressor"] != 0]
        out = np.empty(tr.size, dtype=TRADE_DTYPE)
        out["env"] = env
        out["t"] = tr["t"]
        out["px"] = tr["price"] / PRICE_SCALE
        out["qty"] = tr["size"]
        out["aggressor"] = tr["aggressor"]
        return out

    def halts(self) -> NDArray:
        """Trading halts (``HALT_DTYPE``): each from a halt message (price -1) to the next
        message that resumes trading (price 1)."""
        m = self.messages
        halt = m[m["type"] == HALT]
        spans: list[tuple[float, float]] = []
        start: float | None = None
        for t, px in zip(halt["t"].tolist(), halt["price"].tolist(), strict=True):
            if px == HALT_STARTS and start is None:
                start = t
            elif px == HALT_ENDS and start is not None:
                spans.append((start, t))
                start = None
        if start is not None:
            spans.append((start, np.inf))
        return np.array(spans, dtype=HALT_DTYPE)


def _best(px: NDArray[np.int64], qty: NDArray[np.int64]) -> NDArray[np.float64]:
    return np.where(qty > 0, px / PRICE_SCALE, np.nan)


# -- reading ------------------------------------------------------------------------------------
_NAME = re.compile(
    r"(?P<symbol>[^_/\\]+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<start>\d+)_(?P<end>\d+)_"
    r"(?P<kind>message|orderbook)_(?P<levels>\d+)\.csv$"
)
_MESSAGE_COLUMNS = 6


def read_lobster(path: str | Path, orderbook: str | Path | None = None,
                 levels: int | None = None) -> LobsterDay:
    """Read and check one LOBSTER symbol-day.

    ``path`` is a LOBSTER zip holding one message and one order-book file, or a message CSV
    (its order book is the file of the same name with ``orderbook`` for ``message``, or
    ``orderbook``). ``levels`` keeps the best ``levels`` levels a side (default: all in the
    file). Raises ``DataError`` (one line: file, row, problem) for a bad file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a LOBSTER zip or a message CSV")
    if _looks_like_zip(path):
        if orderbook is not None:
            raise DataError(f"{path}: a zip holds its own order book; leave 'orderbook' out")
        msg_name, book_name, msg_bytes, book_bytes = _read_zip(path)
        msg_where, book_where = f"{path}:{msg_name}", f"{path}:{book_name}"
        source = str(path)
    else:
        msg_name = path.name
        book_path = Path(orderbook) if orderbook is not None else path.with_name(
            path.name.replace("_message_", "_orderbook_"))
        if book_path == path:
            raise DataError(f"{path}: not a LOBSTER message file name (no '_message_'); "
                            "name its order-book file too")
        book_name = book_path.name
        msg_bytes, book_bytes = _read_file(path), _read_file(book_path)
        msg_where, book_where = str(path), str(book_path)
        source = str(path)
    match = _NAME.search(msg_name)
    symbol, date = (match["symbol"], match["date"]) if match else (Path(msg_name).stem, "")
    start_s = int(match["start"]) / 1000 if match else None
    end_s = int(match["end"]) / 1000 if match else None
    raw_msg = _parse_csv(msg_bytes, msg_where, _MESSAGE_COLUMNS, float_first=True)
    width = _book_width(book_bytes, book_where)
    raw_book = _parse_csv(book_bytes, book_where, width, float_first=False)
    file_levels = width // 4
    named = _NAME.search(book_name)
    if named and int(named["levels"]) != file_levels:
        raise DataError(f"{book_where}: row 1 has {width} columns, {file_levels} levels, but "
                        f"the file name says {named['levels']} levels")
    n_msg, n_book = raw_msg[0].shape[0], raw_book[0].shape[0]
    if n_book != n_msg:
        short = msg_where if n_msg < n_book else book_where
        raise DataError(
            f"{short}: truncated: the message file has {n_msg} rows and the order book "
            f"{n_book}; row {min(n_msg, n_book) + 1} is missing"
        )
    if levels is None:
        levels = file_levels
    if not 1 <= levels <= file_levels:
        raise DataError(f"{book_where}: levels = {levels!r} is not valid: the file has "
                        f"{file_levels} levels")
    messages = _messages(raw_msg, msg_where)
    book = _book(raw_book, file_levels)
    _check(messages, book, msg_where, book_where)
    if levels < file_levels:
        cut = np.empty(book.shape[0], dtype=book_dtype(levels))
        for name in ("ask_px", "ask_qty", "bid_px", "bid_qty"):
            cut[name] = book[name][:, :levels]
        book = cut
    return LobsterDay(messages=messages, book=book, symbol=symbol, date=date, levels=levels,
                      source=source, start_s=start_s, end_s=end_s)


def _looks_like_zip(path: Path) -> bool:
    """A zip by its name or its first bytes (a cut zip has lost the directory at its end, which
    ``zipfile.is_zipfile`` looks for, and must still be called truncated)."""
    if path.suffix.lower() == ".zip":
        return True
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None


def _read_zip(path: Path) -> tuple[str, str, bytes, bytes]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
            msgs = [n for n in names if "_message_" in Path(n).name]
            books = [n for n in names if "_orderbook_" in Path(n).name]
            if len(msgs) != 1 or len(books) != 1:
                raise DataError(
                    f"{path}: expected one *_message_*.csv and one *_orderbook_*.csv, found "
                    f"{len(msgs)} and {len(books)} (a zip holds one symbol-day)"
                )
            return msgs[0], books[0], zf.read(msgs[0]), zf.read(books[0])
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{path}: truncated or corrupt zip ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _book_width(data: bytes, where: str) -> int:
    first = data.split(b"\n", 1)[0].strip()
    if not first:
        raise DataError(f"{where}: holds no rows")
    width = first.count(b",") + 1
    if width % 4 != 0:
        raise DataError(f"{where}: row 1 has {width} columns; an order book has 4 per level "
                        "(ask price, ask size, bid price, bid size)")
    return width


def _parse_csv(data: bytes, where: str, n_cols: int, float_first: bool) -> list[NDArray]:
    """The ``n_cols`` columns (int64; the first float64 with ``float_first``) parsed by
    pyarrow; any failure is located by a line-by-line scan that names the row."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not data.strip():
        raise DataError(f"{where}: holds no rows")
    names = [f"c{j}" for j in range(n_cols)]
    types = {name: pa.int64() for name in names}
    if float_first:
        types["c0"] = pa.float64()
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(_locate_csv_error(data, where, n_cols, float_first)
                        or f"{where}: not a LOBSTER CSV ({str(exc).splitlines()[0]})") from None
    cols = []
    for j, name in enumerate(names):
        col = table.column(name)
        if col.null_count:
            row = int(np.flatnonzero(np.asarray(col.is_null()))[0]) + 1
            raise DataError(f"{where}: row {row} column {j + 1} is empty")
        cols.append(np.ascontiguousarray(col.to_numpy()))
    return cols


def _locate_csv_error(data: bytes, where: str, n_cols: int, float_first: bool) -> str | None:
    """The first row that does not parse, named (a slow scan, run only once a parse failed)."""
    lines = data.split(b"\n")
    ends_whole = data.endswith(b"\n")
    if ends_whole:
        lines = lines[:-1]
    for i, raw in enumerate(lines):
        row = i + 1
        line = raw.rstrip(b"\r")
        cells = line.split(b",")
        last = i == len(lines) - 1
        if len(cells) != n_cols:
            if last and not ends_whole and len(cells) < n_cols:
                return (f"{where}: row {row} has {len(cells)} of {n_cols} columns and no line "
                        "end: truncated file")
            return f"{where}: row {row} has {len(cells)} columns, expected {n_cols}"
        for j, cell in enumerate(cells):
            text = cell.decode("ascii", "replace").strip()
            try:
                if j == 0 and float_first:
                    float(text)
                else:
                    int(text)
            except ValueError:
                kind = "a number" if j == 0 and float_first else "an integer"
                cut = ": truncated file" if last and not ends_whole else ""
                return f"{where}: row {row} column {j + 1} = {text[:30]!r} is not {kind}{cut}"
    return None


def _messages(cols: list[NDArray], where: str) -> NDArray:
    out = np.empty(cols[0].shape[0], dtype=MESSAGE_DTYPE)
    out["t"] = cols[0]
    for j, name in ((1, "type"), (5, "direction")):
        col = cols[j]
        bad = np.flatnonzero((col < -128) | (col > 127))
        if bad.size:
            r = int(bad[0])
            what = "event type" if name == "type" else "direction"
            raise DataError(f"{where}: row {r + 1}: {what} {int(col[r])} is not valid")
        out[name] = col
    out["order_id"] = cols[2]
    out["size"] = cols[3]
    out["price"] = cols[4]
    return out


def _book(cols: list[NDArray], levels: int) -> NDArray:
    out = np.empty(cols[0].shape[0], dtype=book_dtype(levels))
    for k, name in enumerate(("ask_px", "ask_qty", "bid_px", "bid_qty")):
        out[name] = np.stack(cols[k::4], axis=1)
    return out


# -- checks -------------------------------------------------------------------------------------
def _first(mask: NDArray[np.bool_]) -> int:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else -1


def _check(messages: NDArray, book: NDArray, msg_where: str, book_where: str) -> None:
    """Refuse the first problem found, one check at a time (see the module docstring)."""
    m = messages
    t, ty, size, px, d = m["t"], m["type"], m["size"], m["price"], m["direction"]
    r = _first(~np.isin(ty, np.array(list(EVENT_TYPES), dtype=np.int8)))
    if r >= 0:
        raise DataError(f"{msg_where}: row {r + 1}: unknown event type {int(ty[r])} (LOBSTER "
                        "types are 1-7)")
    r = _first(~np.isfinite(t) | (t < 0) | (t > 86_400 * 2))
    if r >= 0:
        raise DataError(f"{msg_where}: row {r + 1}: time {t[r]!r} is not seconds after midnight")
    r = _first(np.diff(t) < 0)
    if r >= 0:
        raise DataError(f"{msg_where}: row {r + 2}: time {t[r + 1]!r} is before the previous "
                        f"row's {t[r]!r} (timestamps must not decrease)")
    r = _first(size < 0)
    if r >= 0:
        raise DataError(f"{msg_where}: row {r + 1}: negative size {int(size[r])}")
    halt = ty == HALT
    r = _first(~halt & (size == 0))
    if r >= 0:
        raise DataError(f"{msg_where}: row {r + 1}: size 0 for event type {int(ty[r])}")
    r = _first(~halt & (d != 1) & (d != -1))
    if r >= 0:
        raise DataError(f"{msg_where}: row {r + 1}: direction {int(d[r])} is not -1 (sell) or "
                        "1 (buy)")
    r = _first(~halt & (px <= 0))
    if r >= 0:
        raise DataError(f"{msg_where}: row {r + 1}: price {int(px[r])} is not > 0")
    r = _first(halt & ~np.isin(px, np.array([HALT_STARTS, HALT_QUOTING, HALT_ENDS])))
    if r >= 0:
        raise DataError(f"{msg_where}: row {r + 1}: halt message price {int(px[r])} is not -1 "
                        "(halt), 0 (quoting) or 1 (trading resumes)")
    ask_px, ask_qty = np.ascontiguousarray(book["ask_px"]), np.ascontiguousarray(book["ask_qty"])
    bid_px, bid_qty = np.ascontiguousarray(book["bid_px"]), np.ascontiguousarray(book["bid_qty"])
    for name, qty in (("ask", ask_qty), ("bid", bid_qty)):
        bad = np.argwhere(qty < 0)
        if bad.size:
            r, j = (int(x) for x in bad[0])
            raise DataError(f"{book_where}: row {r + 1}: negative size {int(qty[r, j])} at "
                            f"{name} level {j + 1}")
    r, code, j = _check_book_rows(ask_px, ask_qty, bid_px, bid_qty)
    if code == _B_CROSSED:
        raise DataError(f"{book_where}: row {r + 1}: crossed book: best bid "
                        f"{bid_px[r, 0] / PRICE_SCALE:.4f} >= best ask "
                        f"{ask_px[r, 0] / PRICE_SCALE:.4f}")
    if code in (_B_ASK_ORDER, _B_BID_ORDER):
        name, word = ("ask", "rise") if code == _B_ASK_ORDER else ("bid", "fall")
        prices = ask_px if code == _B_ASK_ORDER else bid_px
        raise DataError(f"{book_where}: row {r + 1}: {name} level {j + 1} price "
                        f"{int(prices[r, j])} is out of order (prices must {word} with the "
                        "level)")
    if code in (_B_ASK_PX, _B_BID_PX):
        name = "ask" if code == _B_ASK_PX else "bid"
        prices = ask_px if code == _B_ASK_PX else bid_px
        raise DataError(f"{book_where}: row {r + 1}: {name} level {j + 1} price "
                        f"{int(prices[r, j])} is not > 0 where its size is > 0")
    if code == _B_GAP:
        raise DataError(f"{book_where}: row {r + 1}: level {j + 1} is empty but a deeper level "
                        "is not (LOBSTER levels are occupied price levels)")
    r, side, price, got, want = _check_consistency(
        ty, px, d, size, ask_px, ask_qty, bid_px, bid_qty
    )
    if r >= 0:
        name = "ask" if side < 0 else "bid"
        raise DataError(
            f"{book_where}: row {r + 1}: the book disagrees with its message: the {name} size at "
            f"{price / PRICE_SCALE:.4f} changed by {got:+d} shares, message row {r + 1} "
            f"(type {int(ty[r])}, size {int(size[r])}, price {int(px[r])}, direction "
            f"{int(d[r])}) says {want:+d}"
        )


_B_OK, _B_CROSSED, _B_ASK_ORDER, _B_BID_ORDER, _B_ASK_PX, _B_BID_PX, _B_GAP = range(7)


@njit(cache=True)
def _check_book_rows(ask_px, ask_qty, bid_px, bid_qty):  # type: ignore[no-untyped-def]
    """(row, code, level) of the first book row that is not a valid book."""
    n, levels = ask_px.shape
    for r in range(n):
        for j in range(levels):
            if ask_qty[r, j] > 0:
                if ask_px[r, j] <= 0:
                    return r, _B_ASK_PX, j
                if j > 0 and ask_qty[r, j - 1] == 0:
                    return r, _B_GAP, j - 1
                if j > 0 and ask_px[r, j] <= ask_px[r, j - 1]:
                    return r, _B_ASK_ORDER, j
            if bid_qty[r, j] > 0:
                if bid_px[r, j] <= 0:
                    return r, _B_BID_PX, j
                if j > 0 and bid_qty[r, j - 1] == 0:
                    return r, _B_GAP, j - 1
                if j > 0 and bid_px[r, j] >= bid_px[r, j - 1]:
                    return r, _B_BID_ORDER, j
        if ask_qty[r, 0] > 0 and bid_qty[r, 0] > 0 and bid_px[r, 0] >= ask_px[r, 0]:
            return r, _B_CROSSED, 0
    return -1, _B_OK, 0


@njit(cache=True, inline="always")
def _qty_at(px, qty, r, price):  # type: ignore[no-untyped-def]
    for j in range(px.shape[1]):
        if qty[r, j] > 0 and px[r, j] == price:
            return qty[r, j]
    return 0


@njit(cache=True, inline="always")
def _visible(px, qty, r, price, is_ask):  # type: ignore[no-untyped-def]
    """Whether ``price`` lies within the levels row ``r`` shows (all of a side that has fewer
    occupied levels than the file holds)."""
    levels = px.shape[1]
    if qty[r, levels - 1] == 0:
        return True
    worst = px[r, levels - 1]
    return price <= worst if is_ask else price >= worst


@njit(cache=True)
def _check_side(r, px, qty, price_msg, delta_msg, is_ask):  # type: ignore[no-untyped-def]
    """(price, got, want) of the first level of one side whose change from row r-1 to r the
    message does not explain; got == want when all agree."""
    levels = px.shape[1]
    for pass_ in range(2 * levels + 1):
        if pass_ < levels:
            j, rr = pass_, r - 1
        elif pass_ < 2 * levels:
            j, rr = pass_ - levels, r
        else:
            j, rr = -1, r
        if j >= 0:
            if qty[rr, j] == 0:
                continue
            price = px[rr, j]
        else:
            price = price_msg
            if delta_msg == 0:
                continue
        if not (_visible(px, qty, r - 1, price, is_ask) and _visible(px, qty, r, price, is_ask)):
            continue
        got = _qty_at(px, qty, r, price) - _qty_at(px, qty, r - 1, price)
        want = delta_msg if price == price_msg else 0
        if got != want:
            return price, got, want
    return 0, 0, 0


@njit(cache=True)
def _check_consistency(ty, px, d, size, ask_px, ask_qty, bid_px, bid_qty):  # type: ignore[no-untyped-def]
    """(row, side, price, got, want) of the first book row (from the second: the first has no
    book before it) whose visible change its message does not explain; row -1 when all do."""
    n = ty.shape[0]
    for r in range(1, n):
        t = ty[r]
        delta = 0
        if t == 1:
            delta = size[r]
        elif t == 2 or t == 3 or t == 4:
            delta = -size[r]
        price = px[r]
        ask_delta = delta if d[r] == -1 else 0
        bid_delta = delta if d[r] == 1 else 0
        p, got, want = _check_side(r, ask_px, ask_qty, price, ask_delta, True)
        if got != want:
            return r, -1, p, got, want
        p, got, want = _check_side(r, bid_px, bid_qty, price, bid_delta, False)
        if got != want:
            return r, 1, p, got, want
    return -1, 0, 0, 0, 0


# -- writing (fixtures, exports) ----------------------------------------------------------------
def write_lobster(path: str | Path, messages: NDArray, book: NDArray, symbol: str = "TEST",
                  date: str = "2012-06-21", start_s: float = 34_200.0,
                  end_s: float = 57_600.0) -> Path:
    """Write ``messages`` and ``book`` as a LOBSTER zip at ``path`` (LOBSTER's file names and
    column layout): the tests' synthetic fixtures, and a day cut out of a larger file."""
    path = Path(path)
    levels = book.dtype["ask_px"].shape[0]
    stem = f"{symbol}_{date}_{round(start_s * 1000)}_{round(end_s * 1000)}"
    msg = io.StringIO()
    for row in messages.tolist():
        t, ty, oid, size, px, d = row
        msg.write(f"{t:.9f},{ty},{oid},{size},{px},{d}\n")
    inter = np.empty((book.shape[0], 4 * levels), dtype=np.int64)
    inter[:, 0::4] = book["ask_px"]
    inter[:, 1::4] = book["ask_qty"]
    inter[:, 2::4] = book["bid_px"]
    inter[:, 3::4] = book["bid_qty"]
    bk = io.StringIO()
    np.savetxt(bk, inter, fmt="%d", delimiter=",")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{stem}_message_{levels}.csv", msg.getvalue())
        zf.writestr(f"{stem}_orderbook_{levels}.csv", bk.getvalue())
    return path
