"""The audit trail: what goes in comes back, inconsistencies are found, a failed write leaves
nothing, the same run gives the same files, and SQLite and PostgreSQL hold the same rows."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from execrl.domain import ConfigError
from execrl.domain.errors import ExecRLError
from execrl.executor import audit
from execrl.executor.audit import TRAIL_FILES, AuditTrail, check_trail, read_trail
from execrl.market.events import FILL_DTYPE
from pg import postgres_url  # noqa: F401  (the fixture)

FEATURES = ("spread_bps", "imbalance", "time_left")
N_ACTIONS = 4


def _run(n_orders: int = 4, n_steps: int = 6, seed: int = 0) -> dict:
    """A small run built by hand: per step, the live orders each may send a child order that
    fills in zero, one or two events; order i decides for n_steps - i steps (finishes early)."""
    rng = np.random.default_rng(seed)
    steps, fills, market = [], [], []
    sent = np.zeros(n_orders, np.int64)
    filled = np.zeros(n_orders, np.int64)
    fees = np.zeros(n_orders)
    n_fills = np.zeros(n_orders, np.int64)
    for k in range(n_steps):
        live = np.flatnonzero(np.arange(n_orders) < n_steps - k)
        n = live.size
        child_qty = rng.integers(0, 30, n) * (rng.random(n) < 0.8)
        child_id = np.where(child_qty > 0, sent[live], -1)
        sent[live] += child_qty > 0
        parts = rng.integers(0, 3, n) * (child_qty > 0)  # fill events this step
        events = []
        step_filled = np.zeros(n, np.int64)
        for j, i in enumerate(live):
            left = int(child_qty[j])
            for _ in range(parts[j]):
                q = int(rng.integers(1, left + 1)) if left > 0 else 0
                if q == 0:
                    continue
                left -= q
                events.append((j, child_id[j], 10.0 * k + 0.5, q, 100 + 0.01 * k, bool(q % 2),
                               0.001 * q))
                step_filled[j] += q
                fees[i] += 0.001 * q
                n_fills[i] += 1
        filled[live] += step_filled
        scores = rng.random((n, N_ACTIONS)).astype(np.float32)
        steps.append({
            "order_idx": live.astype(np.int64), "step": np.full(n, k, np.int32),
            "t_s": np.full(n, 10.0 * k), "remaining_before": np.full(n, 500, np.int64),
            "working_before": np.zeros(n, np.int64), "mid": 100 + 0.01 * np.arange(n),
            "features": rng.normal(size=(n, len(FEATURES))),
            "action": rng.integers(0, N_ACTIONS, n).astype(np.float64),
            "scores": scores, "mask": rng.random((n, N_ACTIONS)) < 0.7,
            "confidence": scores.max(axis=1).astype(np.float64),
            "acting": (live == 1).astype(np.int8) * (k >= 3),
            "child_id": child_id, "child_qty": child_qty,
            "child_type": rng.integers(0, 2, n).astype(np.int8),
            "child_px": np.where(rng.random(n) < 0.5, np.nan, 99.99),
            "ttl_ms": np.full(n, 3000, np.int64), "guard_code": np.zeros(n, np.int16),
            "guard_adjusted": rng.random(n) < 0.2, "market_reject": np.zeros(n, np.int8),
            "filled_qty": step_filled, "fill_px": np.full(n, 100.0),
            "watchdog_state": (live == 1).astype(np.int8) * (k >= 3),
            "trigger": (live == 1).astype(np.int8) * (k >= 3) * 5,
            "latency_us": rng.random(n) * 30,
        })
        ev = np.array(events, dtype=FILL_DTYPE)
        fills.append((ev, live.astype(np.int64), k))
        market.append({"order_idx": live.astype(np.int64), "step": np.full(n, k, np.int32),
                       "t_s": np.full(n, 10.0 * k), "mid": np.full(n, 100.0),
                       "best_bid": np.full(n, 99.99), "best_ask": np.full(n, 100.01),
                       "market_volume": rng.random(n) * 1e4})
    orders = pd.DataFrame({
        "order_idx": np.arange(n_orders), "order_id": [f"ORD-{i}" for i in range(n_orders)],
        "policy": "dqn", "policy_hash": "abc123", "symbol": "GOOG",
        "side": ["buy", "sell"] * (n_orders // 2) + ["buy"] * (n_orders % 2),
        "venue": "SIM", "qty": 500, "arrival_mid": 100.0, "filled": filled,
        "fill_rate": filled / 500, "child_orders": sent, "fills": n_fills, "fees": fees,
        "final_state": "DONE", "trigger": ["", "drift", "", ""][:n_orders] + [""] * max(
            0, n_orders - 4),
    })
    incidents = [{"order_idx": 1, "step": 3, "t_s": 30.0, "kind": "RL_ABORTED",
                  "trigger": "drift", "detail": {"kl": 0.2, "state": "RL"}}]
    return {"steps": steps, "fills": fills, "market": market, "orders": orders,
            "incidents": incidents}


def _write(folder: Path, run: dict, **kwargs) -> Path:
    trail = AuditTrail(folder, features=FEATURES, **kwargs)
    trail.write_run({"policy": "dqn", "seed": 7})
    for cols, (events, env_orders, k), mkt in zip(run["steps"], run["fills"], run["market"],
                                                  strict=True):
        trail.add_decisions(cols)
        trail.add_fills(events, env_orders, step=k)
        trail.add_market(mkt)
    trail.add_incidents(run["incidents"])
    return trail.close(run["orders"])


def test_roundtrip_gives_back_what_went_in(tmp_path):
    run = _run()
    _write(tmp_path / "trail", run)
    trail = read_trail(tmp_path / "trail")
    assert check_trail(trail) == []
    dec = trail.decisions
    given = {k: np.concatenate([s[k] for s in run["steps"]]) for k in run["steps"][0]}
    assert len(dec) == len(given["order_idx"])
    for name in ("order_idx", "step", "t_s", "child_qty", "child_id", "filled_qty",
                 "latency_us", "guard_adjusted", "remaining_before"):
        np.testing.assert_array_equal(dec[name].to_numpy(), given[name].astype(dec[name].dtype))
    np.testing.assert_array_equal(dec["child_px"].to_numpy(), given["child_px"])  # NaN too
    for j, name in enumerate(FEATURES):
        assert dec[f"f_{name}"].dtype == np.float32
        np.testing.assert_array_equal(dec[f"f_{name}"], given["features"][:, j].astype(np.float32))
    np.testing.assert_array_equal(np.stack(dec["scores"].to_list()), given["scores"])
    np.testing.assert_array_equal(np.stack(dec["mask"].to_list()), given["mask"])
    assert set(dec.loc[dec["order_idx"] == 1, "order_id"]) == {"ORD-1"}
    assert set(dec.loc[dec["order_idx"] == 1, "side"]) == {"sell"}
    late = dec[(dec["order_idx"] == 1) & (dec["step"] >= 3)]
    assert set(late["acting"]) == {"fallback"} and set(late["trigger"]) == {"drift"}
    assert set(late["watchdog_state"]) == {"FALLBACK"}
    assert set(dec.loc[dec["order_idx"] != 1, "acting"]) == {"policy"}
    types = dec.loc[dec["child_qty"] > 0, "child_type"]
    codes = given["child_type"][given["child_qty"] > 0]
    assert types.tolist() == np.where(codes == 0, "market", "limit").tolist()
    assert dec.loc[dec["child_qty"] == 0, "child_type"].isna().all()

    # children: the decisions that sent one, in seed 001 §9.1's fields
    kids = trail.children
    sent = dec[dec["child_qty"] > 0]
    assert len(kids) == len(sent) > 0
    for ours, theirs in (("parent_id", "order_id"), ("qty", "child_qty"), ("px", "child_px"),
                         ("child_id", "child_id"), ("type", "child_type")):
        pd.testing.assert_series_equal(kids[ours].reset_index(drop=True),
                                       sent[theirs].reset_index(drop=True), check_names=False)
    assert set(kids["venue"]) == {"SIM"} and set(kids["ttl_ms"]) == {3000}

    events = np.concatenate([e for e, _o, _k in run["fills"]])
    env_orders = np.concatenate([o[e["env"]] for e, o, _k in run["fills"]])
    np.testing.assert_array_equal(trail.fills["qty"], events["qty"])
    np.testing.assert_array_equal(trail.fills["order_idx"], env_orders)
    np.testing.assert_array_equal(trail.fills["passive"], events["passive"])
    assert len(trail.market) == len(dec)
    assert trail.orders["order_id"].tolist() == run["orders"]["order_id"].tolist()
    np.testing.assert_array_equal(trail.orders["filled"], run["orders"]["filled"])
    assert trail.orders["trigger_step"].tolist() == [-1] * 4  # not given: its default
    assert np.isnan(trail.orders["is_bps"]).all()
    inc = trail.incidents.iloc[0]
    assert (inc["order_id"], inc["kind"], inc["step"]) == ("ORD-1", "RL_ABORTED", 3)
    assert json.loads(inc["detail"]) == {"kl": 0.2, "state": "RL"}
    assert json.loads(trail.runs.iloc[0]["meta"]) == {"policy": "dqn", "seed": 7}
    assert trail.features == FEATURES


def _mutations():
    """(name, change the trail read back, text the problem must contain)."""
    def first_filled(frame):
        return frame.index[frame["filled_qty"] > 0][0]

    def bump_decision(t):
        t.decisions.loc[first_filled(t.decisions), "filled_qty"] += 1

    def bump_fill(t):
        t.fills.loc[t.fills.index[0], "qty"] += 1

    def bump_summary(t):
        t.orders.loc[0, "filled"] += 1

    def drop_fill_keep_sums(t):  # a fill merged into another: quantities agree, counts do not
        a, b = t.fills.groupby("order_idx").filter(lambda g: len(g) > 1).index[:2]
        t.fills.loc[a, "qty"] += t.fills.loc[b, "qty"]
        t.fills.loc[a, "step"] = t.fills.loc[b, "step"] = -1
        t.fills = t.fills.drop(index=b)

    def orphan_child(t):
        t.children.loc[t.children.index[0], "step"] += 100

    def step_gap(t):
        order = t.decisions[t.decisions["order_idx"] == 0]
        t.decisions.loc[order.index, "step"] = np.where(order["step"] >= 2, order["step"] + 1,
                                                        order["step"])

    def fill_of_unknown_child(t):
        t.fills.loc[t.fills.index[0], "child_id"] = 999

    def child_count(t):
        t.orders.loc[0, "child_orders"] += 1

    def fee(t):
        t.orders.loc[0, "fees"] += 0.5

    def other_run(t):
        t.market.loc[0, "run_id"] = "someone-else"

    def stray_order(t):
        t.fills.loc[t.fills.index[0], "order_idx"] = 42

    def step_total(t):  # the fill booked in another step: per-order sums still agree
        i = t.fills.index[0]
        t.fills.loc[i, "step"] = (t.fills.loc[i, "step"] + 1) % 3

    return [("decision filled", bump_decision, "in decisions"),
            ("fill qty", bump_fill, "in fills"),
            ("summary filled", bump_summary, "in orders"),
            ("fill count", drop_fill_keep_sums, "fills on record"),
            ("child without decision", orphan_child, "no decision that sent it"),
            ("steps", step_gap, "not consecutive"),
            ("fill of unknown child", fill_of_unknown_child, "child never sent"),
            ("child count", child_count, "child orders on record"),
            ("fees", fee, "fees"),
            ("run id", other_run, "another run"),
            ("unknown order", stray_order, "not in orders"),
            ("per step", step_total, "decision filled")]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit") / "trail"
    _write(folder, _run())
    return folder


@pytest.mark.parametrize(("name", "plant", "needle"), _mutations(), ids=[m[0] for m in
                                                                          _mutations()])
def test_check_trail_finds_each_planted_inconsistency(written, name, plant, needle):
    trail = read_trail(written)
    assert check_trail(trail) == []
    planted = copy.deepcopy(trail)
    plant(planted)
    problems = check_trail(planted)
    assert any(needle in p for p in problems), (name, problems)


def test_check_trail_reads_the_sql_half_it_checks(written, tmp_path):
    """A summary changed in the database itself (not in the frame) is found."""
    folder = tmp_path / "copy"
    folder.mkdir()
    for entry in written.iterdir():
        (folder / entry.name).write_bytes(entry.read_bytes())
    with sqlite3.connect(folder / audit.SQLITE_FILE) as db:
        db.execute("UPDATE orders SET filled = filled + 5 WHERE order_idx = 2")
    problems = check_trail(read_trail(folder))
    assert any("order ORD-2 (idx 2)" in p and "in orders" in p for p in problems), problems


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failed_close_leaves_nothing_and_an_existing_trail_as_it_was(tmp_path, monkeypatch):
    run = _run()
    real = audit._write
    calls = []

    def failing(table, path):
        calls.append(path.name)
        if len(calls) == 3:
            raise OSError("disk full (planted)")
        real(table, path)

    monkeypatch.setattr(audit, "_write", failing)
    with pytest.raises(OSError, match="planted"):
        _write(tmp_path / "new", run)
    assert list(tmp_path.iterdir()) == []  # no trail, no staging folder

    monkeypatch.setattr(audit, "_write", real)
    _write(tmp_path / "old", _run(seed=1))
    before = _snapshot(tmp_path / "old")
    with pytest.raises(ConfigError, match="already exists"):  # never replaced unless asked
        AuditTrail(tmp_path / "old")

    def sql_fails(*args, **kwargs):
        raise RuntimeError("database went away (planted)")

    monkeypatch.setattr(audit.sql, "write_sql", sql_fails)
    with pytest.raises(RuntimeError, match="planted"):
        _write(tmp_path / "old", run, overwrite=True)
    assert _snapshot(tmp_path / "old") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]

    monkeypatch.undo()
    _write(tmp_path / "old", run, overwrite=True)  # asked: replaced whole
    assert _snapshot(tmp_path / "old") != before
    assert check_trail(read_trail(tmp_path / "old")) == []


def test_a_failed_close_can_be_retried(tmp_path, monkeypatch):
    run = _run()
    trail = AuditTrail(tmp_path / "t", features=FEATURES)
    trail.add_decisions(run["steps"][0])
    orders = run["orders"].assign(filled=0, fills=0, fees=0.0, child_orders=0)
    monkeypatch.setattr(audit.sql, "write_sql", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        trail.close(orders)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    trail.close(orders)
    assert len(read_trail(tmp_path / "t").decisions) == len(run["steps"][0]["order_idx"])


def test_an_empty_run_writes_an_empty_consistent_trail(tmp_path):
    trail = AuditTrail(tmp_path / "t", features=FEATURES, run_id="empty")
    trail.close(pd.DataFrame({"order_idx": [0], "order_id": ["A"], "symbol": "X",
                              "side": "buy", "qty": 100, "filled": 0}))
    back = read_trail(tmp_path / "t")
    assert check_trail(back) == []
    assert (len(back.decisions), len(back.fills), len(back.orders)) == (0, 0, 1)
    assert [f"f_{f}" for f in FEATURES] == [c for c in back.decisions if c.startswith("f_")]


def test_label_codes_take_the_names_given(tmp_path):
    run = _run(n_orders=2, n_steps=2)
    for step in run["steps"]:
        step["trigger"] = np.array([2, 7], np.int8)[: len(step["order_idx"])]
    run["fills"] = [(np.empty(0, FILL_DTYPE), o, k) for _e, o, k in run["fills"]]
    trail = AuditTrail(tmp_path / "t", features=FEATURES,
                       labels={"trigger": ("none", "late", "policy_fault")})
    for step in run["steps"]:
        trail.add_decisions(step)
    trail.close(run["orders"])
    dec = read_trail(tmp_path / "t").decisions
    assert dec.groupby("order_idx")["trigger"].first().tolist() == ["policy_fault", "code_7"]
    with pytest.raises(ConfigError, match="not label columns"):
        AuditTrail(tmp_path / "u", labels={"side": ("buy",)})


def test_leaving_without_close_writes_nothing(tmp_path):
    with (pytest.raises(ExecRLError, match="without close"),
          AuditTrail(tmp_path / "t", features=FEATURES) as t):
        t.add_decisions(_run()["steps"][0])
    assert not (tmp_path / "t").exists()


def test_same_inputs_give_identical_files(tmp_path):
    _write(tmp_path / "a", _run(seed=3))
    _write(tmp_path / "b", _run(seed=3))
    a, b = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    for name in (*TRAIL_FILES, audit.MANIFEST):
        assert a[name] == b[name], name
    ta, tb = read_trail(tmp_path / "a"), read_trail(tmp_path / "b")
    assert ta.run_id == tb.run_id
    for frame in ("orders", "incidents"):
        pd.testing.assert_frame_equal(getattr(ta, frame), getattr(tb, frame))
    pd.testing.assert_frame_equal(ta.runs.drop(columns="created"),
                                  tb.runs.drop(columns="created"))
    _write(tmp_path / "c", _run(seed=4))
    assert _snapshot(tmp_path / "c")["decisions.parquet"] != a["decisions.parquet"]


def test_add_decisions_refuses_a_changed_column_set_or_dtype(tmp_path):
    step = _run()["steps"][0]
    trail = AuditTrail(tmp_path / "t", features=FEATURES)
    with pytest.raises(ExecRLError, match="unknown column 'price'"):
        trail.add_decisions({**step, "price": step["mid"]})
    with pytest.raises(ExecRLError, match="'child_qty' is required"):
        trail.add_decisions({k: v for k, v in step.items() if k != "child_qty"})
    with pytest.raises(ExecRLError, match="'child_qty' has dtype float64"):
        trail.add_decisions({**step, "child_qty": step["child_qty"].astype(float)})
    trail.add_decisions(step)
    with pytest.raises(ExecRLError, match="'mid' is float32"):
        trail.add_decisions({**step, "mid": step["mid"].astype(np.float32)})
    with pytest.raises(ExecRLError, match="'mid' is missing"):
        trail.add_decisions({**{k: v for k, v in step.items() if k != "mid"},
                             "price": step["mid"]})
    with pytest.raises(ExecRLError, match="'t_s'"):
        trail.add_decisions({**step, "t_s": step["t_s"][:1]})
    trail.add_decisions(step)  # the refused calls left nothing behind
    trail.close(pd.DataFrame({"order_idx": np.arange(4), "order_id": list("abcd"),
                              "symbol": "X", "side": "buy", "qty": 500, "filled": 0}))
    assert len(read_trail(tmp_path / "t").decisions) == 2 * len(step["order_idx"])


def test_sqlite_and_postgresql_hold_the_same_trail(tmp_path, postgres_url):  # noqa: F811
    run = _run(seed=5)
    _write(tmp_path / "lite", run, run_id="pg-vs-sqlite")
    _write(tmp_path / "pg", run, run_id="pg-vs-sqlite", sql_url=postgres_url)
    assert not (tmp_path / "pg" / audit.SQLITE_FILE).exists()
    lite, pg = read_trail(tmp_path / "lite"), read_trail(tmp_path / "pg", sql_url=postgres_url)
    for frame in ("orders", "incidents"):
        pd.testing.assert_frame_equal(getattr(lite, frame), getattr(pg, frame))
    pd.testing.assert_frame_equal(lite.runs.drop(columns="created"),
                                  pg.runs.drop(columns="created"))
    assert np.isnan(pg.orders["is_bps"]).all()  # NULL in the database, NaN in the frame
    for name in TRAIL_FILES:
        assert (tmp_path / "lite" / name).read_bytes() == (tmp_path / "pg" / name).read_bytes()
    assert check_trail(pg) == []
    with pytest.raises(ConfigError, match="pass its sql_url"):
        read_trail(tmp_path / "pg")

    # the run id is taken: refused, nothing written; with overwrite, replaced in one go
    with pytest.raises(ExecRLError, match="already in the audit database"):
        _write(tmp_path / "again", run, run_id="pg-vs-sqlite", sql_url=postgres_url)
    assert not (tmp_path / "again").exists()
    changed = _run(seed=6)
    _write(tmp_path / "pg", changed, run_id="pg-vs-sqlite", sql_url=postgres_url,
           overwrite=True)
    again = read_trail(tmp_path / "pg", sql_url=postgres_url)
    assert check_trail(again) == []
    np.testing.assert_array_equal(again.orders["filled"], changed["orders"]["filled"])


def test_structured_records_write_the_same_trail_as_columns(tmp_path):
    run = _run(seed=8)
    _write(tmp_path / "cols", run)
    trail = AuditTrail(tmp_path / "recs", features=FEATURES)
    trail.write_run({"policy": "dqn", "seed": 7})
    dtype = trail.decision_dtype(N_ACTIONS)
    for cols, (events, env_orders, k), mkt in zip(run["steps"], run["fills"], run["market"],
                                                  strict=True):
        record = np.zeros(len(cols["order_idx"]), dtype)
        for name, (_dtype, default) in audit.DECISION_INPUTS.items():  # what cols leaves out
            if name not in cols and default is not None:
                record[name] = default
        for name, value in cols.items():
            record[name] = value
        trail.add_decisions(record)
        trail.add_fills(events, env_orders, step=k)
        trail.add_market(mkt)
    with pytest.raises(ExecRLError, match="pass records"):
        trail.add_decisions(run["steps"][0])
    with pytest.raises(ExecRLError, match="differs"):
        trail.add_decisions(np.zeros(1, trail.decision_dtype(N_ACTIONS + 1)))
    trail.add_incidents(run["incidents"])
    trail.close(run["orders"])
    for name in (*TRAIL_FILES, audit.MANIFEST):
        assert ((tmp_path / "cols" / name).read_bytes()
                == (tmp_path / "recs" / name).read_bytes()), name
    with pytest.raises(ExecRLError, match="record dtype"):
        AuditTrail(tmp_path / "x", features=FEATURES).add_decisions(
            np.zeros(1, AuditTrail(tmp_path / "y").decision_dtype(N_ACTIONS)))
