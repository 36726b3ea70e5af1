"""The event store (import, memory-mapped open, summary), users' own trades / L2 files, and the
``execrl data`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from execrl.cli import app
from execrl.data.generic import from_generic
from execrl.data.lobster import write_lobster
from execrl.data.store import BOOK, TRADE, from_lobster, open_store, summarise, write_store
from execrl.data.synthetic import synthetic_lobster
from execrl.domain import DataError

runner = CliRunner()


def test_a_lobster_day_round_trips_through_the_store_memory_mapped(tmp_path):
    day = synthetic_lobster(1_500, levels=4, seed=2, halt_at=0.5)
    store = from_lobster(day)
    write_store(store, tmp_path / "s")
    back = open_store(tmp_path / "s")
    assert isinstance(back.t, np.memmap) and isinstance(back.bid_qty, np.memmap)
    assert np.array_equal(back.t, day.messages["t"])
    assert np.array_equal(back.side, day.messages["direction"])
    assert np.array_equal(back.ask_qty, day.book["ask_qty"])
    assert back.meta.tick == 100 and back.meta.has_order_ids and back.meta.levels == 4


def test_the_summary_matches_a_direct_count():
    day = synthetic_lobster(3_000, levels=3, seed=5, halt_at=0.3)
    s = summarise(from_lobster(day), gap_s=30.0)
    tr = day.trades()
    buys = tr[tr["aggressor"] == 1]
    assert s["trades"]["buyer_initiated"] == {"count": buys.size,
                                              "shares": int(buys["size"].sum())}
    assert s["trades"]["count"] == tr.size
    assert s["events"] == 3_000 and s["span_s"]["first"] == day.messages["t"][0]
    assert [h["end"] - h["start"] for h in s["halts"]] == [pytest.approx(60.0)]
    assert s["gaps"]["count"] == 1 and s["gaps"]["longest_s"] == pytest.approx(60.0, abs=1)
    # time-weighted mean spread, directly
    t = day.messages["t"]
    w = np.diff(t, append=t[-1])
    two = (day.book["ask_qty"][:, 0] > 0) & (day.book["bid_qty"][:, 0] > 0)
    spread = (day.book["ask_px"][two, 0] - day.book["bid_px"][two, 0]) / 100
    assert s["spread"]["mean_ticks"] == pytest.approx((spread * w[two]).sum() / w[two].sum())


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_trades_and_snapshots_merge_in_time_with_trades_first(tmp_path):
    trades = _csv(tmp_path / "t.csv", "timestamp,price,size,aggressor",
                  ["1.0,10.01,100,buy", "2.0,10.00,50,S", "2.0,10.00,25,-1"])
    book = _csv(tmp_path / "b.csv", "timestamp,side,level,price,size", [
        "0.5,bid,1,10.00,300", "0.5,ask,1,10.01,200", "0.5,ask,2,10.02,500",
        "2.0,bid,1,10.00,225", "2.0,ask,1,10.01,100",
    ])
    store = from_generic(trades, book, "ABC", levels=2)
    assert store.kind.tolist() == [BOOK, TRADE, TRADE, TRADE, BOOK]
    assert store.side.tolist()[1:4] == [-1, 1, 1]  # the resting side: -aggressor
    assert store.bid_qty[:, 0].tolist() == [300, 300, 300, 300, 225]
    assert store.ask_qty[:, 1].tolist() == [500, 500, 500, 500, 0]
    assert store.meta.tick == 100 and not store.meta.has_order_ids
    # parquet with a timestamp column reads the same prices
    pq.write_table(pa.table({"timestamp": pa.array([1_000_000_000, 2_000_000_000],
                                                    pa.timestamp("ns")),
                             "price": [10.01, 10.0], "size": [100, 50],
                             "aggressor": ["buy", "sell"]}), tmp_path / "t.parquet")
    only = from_generic(tmp_path / "t.parquet", None, "ABC")
    assert only.t.tolist() == [1.0, 2.0] and only.meta.levels == 0 and only.bid_px is None


def test_l2_updates_rebuild_the_book(tmp_path):
    book = _csv(tmp_path / "u.csv", "timestamp,side,price,size", [
        "1,bid,9.99,100", "1,bid,10.00,200", "2,ask,10.02,50", "3,bid,10.00,0", "4,ask,10.01,7"])
    store = from_generic(None, book, "X", levels=2)
    assert store.bid_px[:, 0].tolist() == [99_900, 100_000, 100_000, 99_900, 99_900]
    assert store.bid_qty[:, 1].tolist() == [0, 100, 100, 0, 0]
    assert store.ask_px[:, 0].tolist()[-2:] == [100_200, 100_100]


@pytest.mark.parametrize(("header", "rows", "pattern"), [
    ("timestamp,price,size,aggressor", ["2,10,1,buy", "1,10,1,buy"],
     r"t\.csv: row 2: timestamp 1\.0 is before the previous row's 2\.0"),
    ("timestamp,price,size,aggressor", ["1,10,-5,buy"], r"row 1: size -5 is not > 0"),
    ("timestamp,price,size,aggressor", ["1,10,5,up"], r"row 1: aggressor 'up' is not buy/sell"),
    ("timestamp,price,size", ["1,10,5"], r"column 'aggressor' is missing"),
    ("timestamp,price,size,aggressor", ["1,10.00001,5,buy"],
     r"row 1: price 10\.00001 is finer than the price grid 1/10000"),
    ("timestamp,price,size,aggressor", ["1,10,1.5,buy"], r"row 1: size 1\.5 is not a whole"),
])
def test_a_bad_trades_file_is_refused_by_row(tmp_path, header, rows, pattern):
    with pytest.raises(DataError, match=pattern):
        from_generic(_csv(tmp_path / "t.csv", header, rows), None, "X")


def test_a_crossed_snapshot_is_refused_by_row(tmp_path):
    book = _csv(tmp_path / "b.csv", "timestamp,side,level,price,size",
                ["1,bid,1,10.00,1", "1,ask,1,10.01,1", "2,bid,1,10.02,1", "2,ask,1,10.01,1"])
    with pytest.raises(DataError, match=r"b\.csv: row 3: crossed book"):
        from_generic(None, book, "X")


def test_data_import_writes_a_store_and_validate_summarises_it(tmp_path):
    day = synthetic_lobster(800, levels=2, seed=1)
    src = write_lobster(tmp_path / "day.zip", day.messages, day.book)
    out = tmp_path / "store"
    res = runner.invoke(app, ["data", "import", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert open_store(out).n_events == 800
    res = runner.invoke(app, ["data", "validate", str(out), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["events"] == 800
    res = runner.invoke(app, ["data", "validate", str(src)])
    assert res.exit_code == 0 and "trades:" in res.output and "spread" in res.output


def test_a_failed_import_leaves_nothing_and_keeps_the_previous_store(tmp_path):
    day = synthetic_lobster(300, levels=2, seed=1)
    good = write_lobster(tmp_path / "good.zip", day.messages, day.book)
    out = tmp_path / "store"
    assert runner.invoke(app, ["data", "import", str(good), "--out", str(out)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.zip"
    bad.write_bytes(good.read_bytes()[:200])
    res = runner.invoke(app, ["data", "import", str(bad), "--out", str(out)])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "error: " in res.output and "bad.zip: truncated or corrupt zip" in res.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip", "good.zip", "store"]
    fresh = tmp_path / "fresh"
    assert runner.invoke(app, ["data", "import", str(bad), "--out", str(fresh)]).exit_code == 2
    assert not fresh.exists()


def test_import_refuses_a_folder_holding_other_files(tmp_path):
    day = synthetic_lobster(100, levels=1, seed=1)
    src = write_lobster(tmp_path / "day.zip", day.messages, day.book)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    res = runner.invoke(app, ["data", "import", str(src), "--out", str(tmp_path / "mine")])
    assert res.exit_code == 2 and "holds files that are not an execrl event store" in res.output
