"""The service end to end on a real Redis: `execrl feed` and `execrl serve` in subprocesses,
parent orders in, child orders and fills out, bad orders answered; and recovery: the service
SIGKILLed mid-order several times, restarted, every stream reconciled against an
uninterrupted run of the same orders, and the per-order SQL summary against the streams."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from execrl.domain import OrderValidationError, ParentOrder
from execrl.service.serve import STATE_OWNER
from execrl.service.streams import (
    CHAN_EXEC_AGENT,
    STATE_DONE,
    STATE_PROGRESS,
    STREAM_FILLS,
    STREAM_ORDERS,
    STREAM_RESEARCH,
    decode,
    decode_order,
    encode,
)
from redis_server import redis_url  # noqa: F401  (the fixture)

redis = pytest.importorskip("redis")

SRC = Path(__file__).resolve().parents[1] / "src"
STEPS = 10  # decisions of an order on the AC preset


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-m", "execrl", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _order(i: int, qty: int = 60_000) -> dict:
    return {"order_id": f"T-{i}", "symbol": "DEMO", "side": "sell" if i % 2 else "buy",
            "qty": qty + 1_000 * i, "arrival_px": 50.0, "start_ts": 0, "horizon_s": 3600}


def _entries(client, stream: str) -> list[tuple[str, dict]]:
    return [(i, decode(f)) for i, f in client.xrange(stream)]


def _reference_commands(orders: list[dict]) -> dict[str, list[dict]]:
    """The child-order commands of each order from an uninterrupted in-process run."""
    from execrl.executor.config import ExecutorConfig
    from execrl.executor.venues import sent_commands
    from execrl.executor_cli import build_executor
    from execrl.presets import preset_market
    from execrl.service.serve import order_seed

    market = preset_market("ac")
    out = {}
    for o in orders:
        order = ParentOrder.from_dict(o)
        ex = build_executor(ExecutorConfig(), market, order, mode="paper")
        run = ex.run(order, 1, order_seed(order.order_id), venue="paper")
        out[order.order_id] = sent_commands(run.extras["venue"])
    return out


def _reconcile(client, orders: list[dict]) -> dict:
    """Every order done once, no id twice, child orders and fills adding up to the done
    record, the commands those of an uninterrupted run; nothing pending."""
    fills = _entries(client, STREAM_FILLS)
    ids = [m["id"] for _, m in fills]
    assert len(ids) == len(set(ids)), "an id was written twice on STREAM_FILLS"
    reference = _reference_commands(orders)
    wire = ("parent_id", "child_id", "type", "qty", "px", "ttl_ms", "venue")
    n_children = 0
    for o in orders:
        pid = o["order_id"]
        mine = [m for _, m in fills if m.get("parent_id") == pid]
        done = [m for m in mine if m["kind"] == "done"]
        assert len(done) == 1, f"{pid}: {len(done)} done records"
        children = [m for m in mine if m["kind"] in ("child", "cancel")]
        got = [{k: m[k] for k in wire if k in m} for m in children]
        assert got == reference[pid], f"{pid}: child orders differ from an uninterrupted run"
        assert [m["child_id"] for m in children if m["kind"] == "child"] == \
            list(range(1, done[0]["child_orders"] + 1))
        assert sum(m["qty"] for m in mine if m["kind"] == "fill") == done[0]["filled"]
        assert done[0]["filled"] + done[0]["residual_shares"] == o["qty"]
        assert not done[0]["replay_diverged"]
        n_children += len(children)
        # lockstep: one market entry per decision, each a later one
        decisions = [m for _, m in _entries(client, STREAM_RESEARCH) if m["parent_id"] == pid]
        assert [m["step"] for m in decisions] == list(range(STEPS))
        market_ids = [tuple(map(int, m["market_id"].split("-"))) for m in decisions]
        assert market_ids == sorted(set(market_ids))
    assert client.xpending(STREAM_ORDERS, "execrl-serve")["pending"] == 0
    return {"orders": len(orders), "child_orders": n_children, "duplicates": 0}


def _reconcile_summary(client, url: str, orders: list[dict]) -> int:
    """The SQL summary against the streams: every done order has exactly one row, and the
    row's numbers are its done record's."""
    from execrl.service.summary import SummaryDB

    done = {m["parent_id"]: m for _, m in _entries(client, STREAM_FILLS) if m["kind"] == "done"}
    db = SummaryDB(url)
    rows = db.orders()
    db.close()
    assert sorted(rows["order_id"]) == sorted(done) == sorted(o["order_id"] for o in orders)
    for _, row in rows.iterrows():
        d = done[row["order_id"]]
        for k in ("symbol", "side", "qty", "filled", "is_bps", "fill_rate", "child_orders",
                  "fills", "residual_shares", "steps", "route", "policy"):
            assert row[k] == d[k], f"{row['order_id']}: summary {k} = {row[k]!r}, done {d[k]!r}"
    return len(rows)


@pytest.fixture
def client(redis_url):  # noqa: F811
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    c.flushall()
    yield c
    c.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_decode_order_names_the_field():
    good = ParentOrder.from_dict(_order(1))
    assert decode_order(encode(good.to_wire())) == good
    with pytest.raises(OrderValidationError, match="qty"):
        decode_order(encode({**_order(1), "qty": -5}))
    with pytest.raises(OrderValidationError, match="'data'"):
        decode_order({"order": "x"})


def test_orders_in_child_orders_and_fills_out(client, redis_url, tmp_path):  # noqa: F811
    feed = _cli("feed", "--redis", redis_url, "--env", "ac", "--steps", "3000",
                "--step-ms", "10")
    summary_db = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    serve = _cli("serve", "--redis", redis_url, "--env", "ac", "--max-orders", "5",
                 "--summary-db", summary_db)
    logs: list[str] = []
    sub = client.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(CHAN_EXEC_AGENT)

    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = sub.get_message(timeout=0.1)
            if message is not None:
                logs.append(message["data"])

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        orders = [_order(1), _order(2)]
        for o in orders:
            client.xadd(STREAM_ORDERS, encode(o))
        bad = client.xadd(STREAM_ORDERS, encode({**_order(3), "qty": -5}))
        garbled = client.xadd(STREAM_ORDERS, {"data": "{not json"})
        again = client.xadd(STREAM_ORDERS, encode(orders[0]))  # an order id trades once
        _, err = serve.communicate(timeout=60)
        assert serve.returncode == 0, err
        errors = {m["entry_id"]: m for _, m in _entries(client, STREAM_FILLS)
                  if m["kind"] == "error"}
        assert set(errors) == {bad, garbled, again}
        assert "'order_id'" in errors[again]["error"] and "trades once" in errors[again]["error"]
        assert errors[bad]["order_id"] == "T-3" and "'qty'" in errors[bad]["error"]
        assert errors[bad]["error"].startswith("error: ") and "\n" not in errors[bad]["error"]
        assert not client.hexists(STATE_PROGRESS, "T-3")  # nothing traded
        assert not [m for _, m in _entries(client, STREAM_FILLS) if m.get("parent_id") == "T-3"]
        summary = _reconcile(client, orders)
        assert summary["child_orders"] >= 2 * STEPS - 2
        assert _reconcile_summary(client, summary_db, orders) == 2  # no row for a refusal
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any("T-2 step 9" in s for s in logs):
            time.sleep(0.05)
        assert any(s.startswith("T-1 step 0: sent") for s in logs)
        assert any("T-2 step 9" in s for s in logs)
    finally:
        stop.set()
        listener.join(timeout=2)
        sub.close()
        _stop(serve)
        _stop(feed)


def _same_batches(client, batches: dict[str, str]) -> None:
    """A batch, once formed, stays that batch across restarts (``batches``: so far)."""
    for parent, raw in client.hgetall(STATE_OWNER).items():
        batch = json.loads(raw).get("batch")
        if batch is not None:
            assert batches.setdefault(parent, batch) == batch, f"{parent} changed batch"


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batches"])
def test_sigkill_mid_order_loses_nothing_and_sends_nothing_twice(client, redis_url,  # noqa: F811
                                                                 tmp_path, batched):
    """Killed three times mid-order, restarted: every stream reconciled against uninterrupted
    single-order runs, and the SQL summary against the streams. ``batches``: 8 orders, two
    sides, run as two batches of four (sizes differ), re-formed from their record after each
    kill."""
    feed = _cli("feed", "--redis", redis_url, "--env", "ac", "--steps", "100000",
                "--step-ms", "40")
    orders = [_order(i) for i in range(1, 9 if batched else 7)]
    for o in orders:
        client.xadd(STREAM_ORDERS, encode(o))
    summary_db = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    args = ("serve", "--redis", redis_url, "--env", "ac", "--concurrency",
            "8" if batched else "2", "--summary-db", summary_db)
    batches: dict[str, str] = {}
    kills = 0
    serve = None
    try:
        for _ in range(3):
            serve = _cli(*args)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:  # kill while an order is half done
                progress = {k: json.loads(v)["step"]
                            for k, v in client.hgetall(STATE_PROGRESS).items()}
                done = client.hkeys(STATE_DONE)
                if any(0 < s < STEPS and k not in done for k, s in progress.items()):
                    time.sleep(0.1 * kills)  # vary where in the order it lands
                    break
                time.sleep(0.01)
            else:
                pytest.fail("no order was in flight to kill")
            serve.send_signal(signal.SIGKILL)
            serve.wait()
            kills += 1
            _same_batches(client, batches)
        assert client.hlen(STATE_DONE) < len(orders), "the kills came too late to test"
        serve = _cli(*args)
        deadline = time.monotonic() + 40
        while client.hlen(STATE_DONE) < len(orders) and time.monotonic() < deadline:
            time.sleep(0.05)
        _stop(serve)
        _same_batches(client, batches)
        summary = _reconcile(client, orders)
        assert summary["orders"] == len(orders) and kills == 3
        # the SQL summary too: one row per done order (none lost, none twice), same numbers
        summary["summary_rows"] = _reconcile_summary(client, summary_db, orders)
        resumed = [m for _, m in _entries(client, STREAM_FILLS)
                   if m["kind"] == "done" and m["resumed_at_step"] > 0]
        assert resumed, "no order was resumed mid-way"
        done = [m for _, m in _entries(client, STREAM_FILLS) if m["kind"] == "done"]
        assert {m["parent_id"]: m["batch"] for m in done} == batches
        if batched:  # micro-batches: one per side, their membership as first formed
            assert sorted(m["batch_size"] for m in done) == [4] * 8
            assert len(set(batches.values())) == 2
            # one decision per market step for the whole batch: its members' k-th decisions
            # were all released by the same market entry
            released: dict[tuple[str, int], set[str]] = {}
            for _, m in _entries(client, STREAM_RESEARCH):
                released.setdefault((batches[m["parent_id"]], m["step"]), set()).add(
                    m["market_id"])
            assert len(released) == 2 * STEPS
            assert all(len(ids) == 1 for ids in released.values())
        print(json.dumps({**summary, "kills": kills, "resumed_mid_order": len(resumed),
                          "lost": 0}))
    finally:
        if serve is not None:
            _stop(serve)
        _stop(feed)


def test_feed_replays_the_market_as_built_and_paced(client):
    """The feed's entries are the market's own path (built and stepped here, no order),
    episode after episode, and a paced feed keeps its step."""
    import numpy as np

    from execrl.presets import preset_market
    from execrl.service.feed import FeedConfig, run_feed
    from execrl.service.streams import STREAM_MARKET
    from execrl.sim.base import ChildOrderBatch

    market = preset_market("lob")
    order = market.default_order()
    n_steps = market.for_order(order).n_steps
    total = n_steps + 3  # into the second episode
    run_feed(client, FeedConfig(market, order, steps=total, speed=0.0, seed=5), "XYZ")
    got = [m for _, m in _entries(client, STREAM_MARKET)]
    assert [m["step"] for m in got] == list(range(total))
    expect = []
    m = market.for_order(order).build(1, order.side.sign)
    for episode in range(2):
        rng = np.random.default_rng(5)  # episode i: the backtest's order i of the seed
        rng.bit_generator.advance(episode)
        m.reset(rng)
        for k in range(n_steps + 1 if episode == 0 else 3):
            expect.append((float(m.mid[0]), float(m.feature("best_bid")[0]),
                           float(m.feature("best_ask")[0])))
            if k < n_steps:
                m.execute(ChildOrderBatch.market_orders(1), np.ones(1, dtype=bool))
    assert [(e["mid"], e["bid"], e["ask"]) for e in got] == expect[:total]
    assert all(e["symbol"] == "XYZ" and e["bid"] < e["ask"] for e in got)
    client.delete(STREAM_MARKET)
    run_feed(client, FeedConfig(market, order, steps=6, speed=2.0, step_s=0.05), "XYZ")
    ts = np.array([m["ts_ns"] for _, m in _entries(client, STREAM_MARKET)]) / 1e9
    # 50 ms at 2x: entry i never before 25 ms x i (a late one is sent at once, on schedule)
    assert (ts - ts[0] >= 0.025 * np.arange(6) - 2e-3).all()
    assert ts[-1] - ts[0] == pytest.approx(5 * 0.025, abs=0.05)


def test_feed_and_serve_refuse_bad_options_in_one_line(redis_url):  # noqa: F811
    from typer.testing import CliRunner

    from execrl.cli import app

    runner = CliRunner()
    for args, needle in ((["feed", "--redis", redis_url, "--speed", "0"], "--speed '0'"),
                         (["feed", "--redis", redis_url, "--speed", "fast"], "--speed 'fast'"),
                         (["serve", "--redis", "http://x"], "--redis 'http://x'"),
                         (["feed", "--redis", "redis://127.0.0.1:1/0"], "cannot reach")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        text = result.output.strip()
        assert text.startswith("error: ") and needle in text and "Traceback" not in text
