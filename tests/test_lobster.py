"""The LOBSTER reader: its conventions on hand-built messages, the GOOG sample files where they
are present, and one test per bad file it must refuse (naming the file, the row, the problem)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from execrl.data.lobster import (
    LOBSTER_TRADE_DTYPE,
    MESSAGE_DTYPE,
    PRICE_SCALE,
    aggressor_of_execution,
    book_dtype,
    read_lobster,
    write_lobster,
)
from execrl.data.synthetic import build_day, synthetic_lobster
from execrl.domain import DataError
from execrl.market.events import TRADE_DTYPE
from lobster_data import LOBSTER_DIR

GOOG = LOBSTER_DIR
needs_goog = pytest.mark.skipif(
    not (GOOG / "LOBSTER_SampleFile_GOOG_2012-06-21_10.zip").exists(),
    reason=f"the LOBSTER GOOG sample files are not in {GOOG}",
)

T0 = 34_200.0
A, B = 1_000_100, 999_900  # 100.01 and 99.99 in LOBSTER's price units


def _hand_day():
    """A resting sell at 100.01 (id 1) and buy at 99.99 (id 2), then a buy submission, an
    execution of the sell (a buyer-initiated trade), a hidden execution of a buy (seller-
    initiated), a cross trade and a deletion."""
    resting = [(1, -1, A, 300), (2, 1, B, 200)]
    msgs = [
        (T0 + 1.0, 1, 10, 100, B, 1),  # joins behind order 2
        (T0 + 2.0, 4, 1, 120, A, -1),  # a buyer takes 120 of the sell limit order
        (T0 + 2.5, 5, 0, 50, B, 1),  # hidden buy limit executed: seller-initiated
        (T0 + 3.0, 6, 0, 500, 1_000_000, 1),  # cross trade, no aggressor
        (T0 + 4.0, 3, 2, 200, B, 1),  # order 2 deleted
    ]
    return build_day(msgs, levels=2, resting=resting)


def test_executions_take_the_aggressor_from_the_opposite_of_the_resting_order():
    day = _hand_day()
    tr = day.trades()
    assert tr.dtype == LOBSTER_TRADE_DTYPE
    assert tr["row"].tolist() == [1, 2, 3]
    assert tr["aggressor"].tolist() == [1, -1, 0]  # execution of a sell limit = a buy trade
    assert tr["hidden"].tolist() == [False, True, False]
    assert tr["order_id"].tolist() == [1, 0, 0]
    assert aggressor_of_execution(-1) == 1 and aggressor_of_execution(1) == -1
    ev = day.trade_events(env=3)
    assert ev.dtype == TRADE_DTYPE and ev["env"].tolist() == [3, 3]  # the cross trade is out
    assert ev["px"].tolist() == [A / PRICE_SCALE, B / PRICE_SCALE] == [100.01, 99.99]
    assert ev["aggressor"].tolist() == [1, -1]


def test_book_rows_follow_their_messages_and_prices_are_dollars_times_10000():
    day = _hand_day()
    assert day.book.dtype == book_dtype(2)
    assert day.book["bid_qty"][:, 0].tolist() == [300, 300, 300, 300, 100]
    assert day.book["ask_qty"][:, 0].tolist() == [300, 180, 180, 180, 180]
    assert day.best_ask[1] == 100.01 and day.best_bid[0] == 99.99
    np.testing.assert_allclose(day.mid[0], 100.0)
    assert np.isnan(day.book["ask_qty"][:, 1]).sum() == 0 and (day.book["ask_qty"][:, 1] == 0).all()
    assert np.isnan(day.best_ask).sum() == 0


def test_a_written_day_reads_back_exactly_from_the_zip_and_from_the_csv_pair(tmp_path):
    day = synthetic_lobster(2_000, levels=5, seed=3, halt_at=0.4)
    path = write_lobster(tmp_path / "day.zip", day.messages, day.book, symbol="SYN")
    back = read_lobster(path)
    assert back.messages.dtype == MESSAGE_DTYPE
    assert np.array_equal(back.messages, day.messages) and np.array_equal(back.book, day.book)
    assert (back.symbol, back.date, back.levels, back.start_s) == ("SYN", "2012-06-21", 5,
                                                                  34_200.0)
    with zipfile.ZipFile(path) as zf:
        zf.extractall(tmp_path / "csv")
    msg = next((tmp_path / "csv").glob("*_message_*"))
    pair = read_lobster(msg)
    assert np.array_equal(pair.book, day.book)
    three = read_lobster(path, levels=3)
    assert three.levels == 3 and np.array_equal(three.book["bid_px"], day.book["bid_px"][:, :3])


def test_halts_run_from_the_halt_message_to_the_resume_message():
    day = synthetic_lobster(1_000, levels=3, seed=4, halt_at=0.5)
    halts = day.halts()
    assert halts.shape == (1,) and halts["end"][0] - halts["start"][0] == pytest.approx(60.0)
    m = day.messages
    rows = np.flatnonzero(m["type"] == 7)
    assert m["price"][rows].tolist() == [-1, 1]
    assert np.array_equal(day.book[rows[0]], day.book[rows[0] - 1])  # the book row repeats
    open_ended = build_day([(T0, 1, 5, 100, B, 1), (T0 + 1, 7, 0, 0, -1, -1)], levels=1)
    assert open_ended.halts()["end"].tolist() == [np.inf]


@needs_goog
@pytest.mark.parametrize("levels", [1, 5, 10])
def test_the_goog_sample_files_read_and_follow_lobsters_conventions(levels):
    day = read_lobster(GOOG / f"LOBSTER_SampleFile_GOOG_2012-06-21_{levels}.zip")
    assert (day.symbol, day.date, day.levels) == ("GOOG", "2012-06-21", levels)
    assert (day.start_s, day.end_s) == (34_200.0, 57_600.0)
    m = day.messages
    # the readme's first rows: an execution of a buy limit order at 579.40 (a sell trade)
    assert m[0]["type"] == 4 and m[0]["price"] == 5_794_000 and m[0]["direction"] == 1
    assert day.trades()["aggressor"][0] == -1
    assert (np.diff(m["t"]) >= 0).all() and 34_200 <= m["t"][0] and m["t"][-1] <= 57_600
    assert ((day.best_bid < day.best_ask) | np.isnan(day.mid)).all()
    tr = day.trades()
    executed = m[tr["row"]]
    assert np.array_equal(tr["aggressor"], -executed["direction"])
    # a visible execution takes its size off the level it rests at (consistency, checked)
    assert 500 < day.mid.mean() < 600


# -- bad files ----------------------------------------------------------------------------------
def _members(tmp_path: Path, rows: int = 200) -> tuple[list[str], list[str]]:
    day = synthetic_lobster(rows, levels=3, seed=9)
    path = write_lobster(tmp_path / "good.zip", day.messages, day.book)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        msg = zf.read(next(n for n in names if "_message_" in n)).decode().splitlines()
        book = zf.read(next(n for n in names if "_orderbook_" in n)).decode().splitlines()
    return msg, book


def _write(tmp_path: Path, msg: list[str] | str, book: list[str] | str,
           levels: int = 3) -> Path:
    path = tmp_path / "bad.zip"
    stem = "TEST_2012-06-21_34200000_57600000"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{stem}_message_{levels}.csv",
                    msg if isinstance(msg, str) else "\n".join(msg) + "\n")
        zf.writestr(f"{stem}_orderbook_{levels}.csv",
                    book if isinstance(book, str) else "\n".join(book) + "\n")
    return path


def _cells(line: str) -> list[str]:
    return line.split(",")


def _set(lines: list[str], row: int, col: int, value: str) -> None:
    cells = _cells(lines[row - 1])
    cells[col - 1] = value
    lines[row - 1] = ",".join(cells)


def _refused(path: Path, member: str, pattern: str) -> None:
    with pytest.raises(DataError) as info:
        read_lobster(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}:") and member in text, text
    assert re.search(pattern, text), text


def _unsorted(msg, book):
    _set(msg, 40, 1, _cells(msg[38])[0])  # row 40 at row 39's time is fine (a tie) ...
    _set(msg, 41, 1, "34200.000000001")  # ... row 41 going back is not
    return "message", r"row 41: time .* is before the previous row's"


def _crossed(msg, book):
    ask = _cells(book[59])[0]
    _set(book, 60, 3, str(int(ask) + 100))
    return "orderbook", r"row 60: crossed book: best bid \d+\.\d{4} >= best ask \d+\.\d{4}$"


def _negative_size(msg, book):
    _set(msg, 17, 4, "-100")
    return "message", r"row 17: negative size -100"


def _negative_book_size(msg, book):
    _set(book, 23, 6, "-5")
    return "orderbook", r"row 23: negative size -5 at ask level 2"


def _unknown_type(msg, book):
    _set(msg, 33, 2, "8")
    return "message", r"row 33: unknown event type 8"


def _disagrees(msg, book):
    row = 120
    old = int(_cells(book[row - 1])[1])
    for r in range(row, len(book) + 1):  # the ask at level 1 gains 100 shares no message sent
        cells = _cells(book[r - 1])
        if cells[0] != _cells(book[row - 1])[0]:
            break
        _set(book, r, 2, str(int(cells[1]) + 100))
    assert int(_cells(book[row - 1])[1]) == old + 100
    return "orderbook", r"row 120: the book disagrees with its message: the ask size at .* "\
        r"changed by [+-]\d+ shares, message row 120 .* says [+-]\d+"


def _wrong_columns(msg, book):
    msg[76] = ",".join(_cells(msg[76])[:5])
    return "message", r"row 77 has 5 columns, expected 6"


def _not_a_number(msg, book):
    _set(msg, 12, 5, "5x0")
    return "message", r"row 12 column 5 = '5x0' is not an integer"


def _book_wrong_columns(msg, book):
    book[90] = book[90] + ",7"
    return "orderbook", r"row 91 has 13 columns, expected 12"


def _out_of_order_levels(msg, book):
    cells = _cells(book[44])
    cells[4], cells[8] = cells[8], cells[4]  # ask level 2 and 3 prices swapped
    book[44] = ",".join(cells)
    return "orderbook", r"row 45: ask level 3 price \d+ is out of order"


def _truncated_book(msg, book):
    del book[150:]
    return "orderbook", r"truncated: the message file has 200 rows and the order book 150; "\
        r"row 151 is missing"


@pytest.mark.parametrize("corrupt", [
    _unsorted, _crossed, _negative_size, _negative_book_size, _unknown_type, _disagrees,
    _wrong_columns, _not_a_number, _book_wrong_columns, _out_of_order_levels, _truncated_book,
], ids=lambda f: f.__name__.strip("_"))
def test_a_bad_file_is_refused_naming_the_file_the_row_and_the_problem(tmp_path, corrupt):
    msg, book = _members(tmp_path)
    member, pattern = corrupt(msg, book)
    _refused(_write(tmp_path, msg, book), f"_{member}_3.csv", pattern)


def test_a_file_cut_in_the_middle_of_a_row_is_truncated(tmp_path):
    msg, book = _members(tmp_path)
    text = "\n".join(msg) + "\n"
    cut = text[: text.index("\n", len(text) // 2) + 12]  # a dozen characters into a row
    rows = cut.count("\n") + 1
    _refused(_write(tmp_path, cut, book), "_message_3.csv",
             rf"row {rows} has \d of 6 columns and no line end: truncated file")


def test_a_cut_zip_is_refused_as_truncated(tmp_path):
    msg, book = _members(tmp_path)
    whole = _write(tmp_path, msg, book).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut\.zip: truncated or corrupt zip"):
        read_lobster(cut)


def test_a_zip_that_is_not_one_symbol_day_is_refused(tmp_path):
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("A_message_1.csv", "1,1,1,1,1,1\n")
    with pytest.raises(DataError, match=r"two\.zip: expected one \*_message_\*\.csv and one"):
        read_lobster(path)


def test_levels_that_disagree_with_the_file_name_are_refused(tmp_path):
    msg, book = _members(tmp_path)
    _refused(_write(tmp_path, msg, book, levels=5), "_orderbook_5.csv",
             r"row 1 has 12 columns, 3 levels, but the file name says 5 levels")


def test_an_empty_file_and_a_missing_file_are_refused(tmp_path):
    _, book = _members(tmp_path)
    _refused(_write(tmp_path, "", book), "_message_3.csv", r"holds no rows")
    with pytest.raises(DataError, match=r"nothing\.zip: no such file"):
        read_lobster(tmp_path / "nothing.zip")
