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


def _cli(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-m", "execrl", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _order(i: int, qty: int = 60_000) -> dict:
    return {"order_id": f"T-{i}", "symbol": "DEMO", "side": "sell" if i % 2 else "buy",
            "qty": qty + 1_000 * i, "arrival_px": 50.0, "start_ts": 0, "horizon_s": 3600}


def _entries(client, stream: str) -> list[tuple[str, dict]]:
    return [(i, decode(f)) for i, f in client.xrange(stream)]


def _stream_entries(client, parent: str) -> list[dict]:
    """The STREAM_MARKET entries of the order's symbol after its batch's start cursor (what
    the stream venue fills the batch against, step k on entry k)."""
    from execrl.service.serve import STATE_BATCH
    from execrl.service.streams import STREAM_MARKET

    batch = json.loads(client.hget(STATE_OWNER, parent))["batch"]
    start = json.loads(client.hget(STATE_BATCH, batch))["market_id"]
    key = tuple(map(int, start.split("-")))
    return [m for i, m in _entries(client, STREAM_MARKET)
            if tuple(map(int, i.split("-"))) > key and m["symbol"] == "DEMO"]


class _Acting:
    """Who acted at each decision of a run of one order (the watchdog's state, as the
    service's decision traces say it)."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    def decided(self, decision) -> None:
        self.steps.append(str(decision.acting[0]))

    def before(self, actions, obs=None) -> None:
        pass

    def after(self) -> None:
        pass


def _reference(orders: list[dict], client=None, venue: str = "paper") -> dict[str, tuple]:
    """(child-order commands, IS in bps, who acted at each step) of each order from an
    uninterrupted in-process run of it alone: on its own simulated path (``paper``) or on the
    market entries its batch met (``stream``)."""
    from execrl.executor.config import ExecutorConfig
    from execrl.executor.venues import sent_commands
    from execrl.executor_cli import build_executor
    from execrl.presets import preset_market
    from execrl.service.paper import StreamFeed
    from execrl.service.serve import order_seed

    market = preset_market("ac")
    out = {}
    for o in orders:
        order = ParentOrder.from_dict(o)
        ex = build_executor(ExecutorConfig(), market, order, mode="paper")
        where: object = "paper"
        if venue == "stream":
            it = iter(_stream_entries(client, order.order_id))
            where = StreamFeed(symbol="DEMO", source=lambda env, it=it: next(it))
        acting = _Acting()
        run = ex.run(order, 1, order_seed(order.order_id), venue=where, observers=[acting])
        out[order.order_id] = (sent_commands(run.extras["venue"]),
                               float(run.episodes["is_bps"].iloc[0]), acting.steps)
    return out


def _reconcile(client, orders: list[dict], venue: str = "paper") -> dict:
    """Every order done once, no id twice, child orders and fills adding up to the done
    record, the commands and IS those of an uninterrupted run; nothing pending."""
    fills = _entries(client, STREAM_FILLS)
    ids = [m["id"] for _, m in fills]
    assert len(ids) == len(set(ids)), "an id was written twice on STREAM_FILLS"
    reference = _reference(orders, client, venue)
    wire = ("parent_id", "child_id", "type", "qty", "px", "ttl_ms", "venue")
    n_children = 0
    for o in orders:
        pid = o["order_id"]
        mine = [m for _, m in fills if m.get("parent_id") == pid]
        done = [m for m in mine if m["kind"] == "done"]
        assert len(done) == 1, f"{pid}: {len(done)} done records"
        children = [m for m in mine if m["kind"] in ("child", "cancel")]
        got = [{k: m[k] for k in wire if k in m} for m in children]
        assert got == reference[pid][0], f"{pid}: child orders differ from an uninterrupted run"
        assert done[0]["is_bps"] == reference[pid][1], f"{pid}: IS differs"
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


def test_stream_venue_end_to_end_with_the_consoles_fields(client, redis_url,  # noqa: F811
                                                          tmp_path):
    """`execrl feed` + `execrl serve --venue stream`: each order's child orders and IS are
    those of an in-process paper run on the same entries; the decision traces and done
    records carry what the console reads (confidence, acting, latency, policy, return)."""
    summary_db = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    orders = [_order(i) for i in range(1, 5)]
    for o in orders:
        client.xadd(STREAM_ORDERS, encode(o))
    serve = _cli("serve", "--redis", redis_url, "--env", "ac", "--venue", "stream",
                 "--max-orders", "4", "--summary-db", summary_db)
    feed = _cli("feed", "--redis", redis_url, "--env", "ac", "--steps", "3000",
                "--step-ms", "10", "--order", _feed_order(tmp_path))
    try:
        _, err = serve.communicate(timeout=60)
        assert serve.returncode == 0, err
        summary = _reconcile(client, orders, "stream")
        assert summary["orders"] == 4
        assert _reconcile_summary(client, summary_db, orders) == 4
        done = [m for _, m in _entries(client, STREAM_FILLS) if m["kind"] == "done"]
        assert len({m["batch"] for m in done}) == 2  # a batch per side
        for m in done:
            assert (m["route"], m["policy"], m["policy_hash"]) == ("live", "twap", "")
            assert isinstance(m["return"], float) and m["return"] == m["return"]
        traces = [m for _, m in _entries(client, STREAM_RESEARCH)]
        assert len(traces) == 4 * STEPS
        for t in traces:
            # the TWAP baseline has no action probabilities: confidence None, not a number
            assert t["confidence"] is None
            assert t["latency_ms"] > 0 and (t["policy"], t["policy_hash"]) == ("twap", "")
        # who acted: the watchdog's state at each step, that of the same order run alone on
        # the same entries. Not always the policy: an order that joins the feed mid-episode
        # meets the episode's arrival VWAP, and a price 1 % beyond it against the order
        # hands the order to the fallback (trigger 2) at the step it is seen
        reference = _reference(orders, client, "stream")
        for o in orders:
            pid = o["order_id"]
            acting = [t["acting"] for t in sorted(traces, key=lambda t: t["step"])
                      if t["parent_id"] == pid]
            assert acting == reference[pid][2], pid
            assert set(acting) <= {"policy", "fallback"}
    finally:
        _stop(serve)
        _stop(feed)


def _wait(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_bad_market_data_fails_only_its_batch_on_the_stream_venue(client):
    """A malformed STREAM_MARKET entry mid-order (no ``ac`` part at step 3): that batch's
    order is answered ``kind: error`` naming the step and the field, recorded done and
    acknowledged, after the child orders of its first steps; the server runs on and the next
    order trades to the end on good entries."""
    from execrl.presets import preset_market
    from execrl.service.feed import FeedConfig, run_feed
    from execrl.service.serve import STATE_BATCH, ServeConfig, Server
    from execrl.service.streams import STREAM_MARKET

    market = preset_market("ac")
    logs: list[str] = []
    server = Server(client, ServeConfig(market=market, venue="stream", max_orders=2,
                                        batch_window_ms=1), log=logs.append)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    first, second = _order(1), _order(2)
    feed = FeedConfig(market, ParentOrder.from_dict(first), steps=3, speed=0.0, seed=4)
    try:
        client.xadd(STREAM_ORDERS, encode(first))
        _wait(lambda: client.hlen(STATE_BATCH) == 1)
        run_feed(client, feed, "DEMO")  # steps 0, 1, 2
        _, last = _entries(client, STREAM_MARKET)[-1]
        bad = {k: v for k, v in last.items() if k != "ac"}
        client.xadd(STREAM_MARKET, encode({**bad, "step": last["step"] + 1}))
        _wait(lambda: client.hexists(STATE_DONE, "T-1"))
        out = [m for _, m in _entries(client, STREAM_FILLS)]
        errors = [m for m in out if m["kind"] == "error"]
        assert len(errors) == 1 and errors[0]["order_id"] == "T-1" and errors[0]["step"] == 3
        assert "step 3" in errors[0]["error"] and "'ac'" in errors[0]["error"]
        assert "\n" not in errors[0]["error"]
        assert not [m for m in out if m["kind"] == "done"]
        assert [m["step"] for m in out if m["kind"] == "child"] == [0, 1, 2]
        assert thread.is_alive() and not server.stopping.is_set()
        client.xadd(STREAM_ORDERS, encode(second))
        _wait(lambda: client.hlen(STATE_BATCH) == 2)
        run_feed(client, FeedConfig(market, ParentOrder.from_dict(second), steps=STEPS,
                                    speed=0.0, seed=5), "DEMO")
        thread.join(timeout=60)
        assert not thread.is_alive()
        done = [m for _, m in _entries(client, STREAM_FILLS) if m["kind"] == "done"]
        assert [(m["parent_id"], m["steps"]) for m in done] == [("T-2", STEPS)]
        assert client.xpending(STREAM_ORDERS, "execrl-serve")["pending"] == 0
        assert any("T-1 stopped at step 3" in line for line in logs)
        # the queue lags: order entry -> its batch launched, market entry -> a batch took it
        from execrl.service.metrics import scrape_samples

        lag = {lb.get("stream"): v for n, lb, v in
               scrape_samples(server.hooks.metrics.exposition().decode())
               if n == "exec_queue_lag_seconds"}
        assert set(lag) == {"orders", "market"} and all(0 <= v < 30 for v in lag.values())
    finally:
        server.stopping.set()
        thread.join(timeout=10)


def _same_batches(client, batches: dict[str, str]) -> None:
    """A batch, once formed, stays that batch across restarts (``batches``: so far)."""
    for parent, raw in client.hgetall(STATE_OWNER).items():
        batch = json.loads(raw).get("batch")
        if batch is not None:
            assert batches.setdefault(parent, batch) == batch, f"{parent} changed batch"


def _feed_order(tmp_path: Path) -> str:
    """A parent order file for `execrl feed --order`: the test orders' horizon sets the
    entries' step (the stream venue refuses entries of another step length)."""
    path = tmp_path / "feed-order.json"
    path.write_text(json.dumps(_order(1)))
    return str(path)


@pytest.mark.parametrize("case", ["one-by-one", "batches", "stream-batches"])
def test_sigkill_mid_order_loses_nothing_and_sends_nothing_twice(client, redis_url,  # noqa: F811
                                                                 tmp_path, case):
    """Killed three times mid-order, restarted: every stream reconciled against uninterrupted
    single-order runs, and the SQL summary against the streams. ``batches``: 8 orders, two
    sides, run as two batches of four (sizes differ), re-formed from their record after each
    kill. ``stream-batches``: the same on the stream venue (fills against the feed's
    entries; a restarted batch re-reads its recorded steps' entries from its start cursor),
    reconciled against single-order runs on those entries."""
    batched = case != "one-by-one"
    venue = "stream" if case.startswith("stream") else "paper"
    feed_order = ("--order", _feed_order(tmp_path)) if venue == "stream" else ()
    feed = _cli("feed", "--redis", redis_url, "--env", "ac", "--steps", "100000",
                "--step-ms", "40", *feed_order)
    orders = [_order(i) for i in range(1, 9 if batched else 7)]
    for o in orders:
        client.xadd(STREAM_ORDERS, encode(o))
    summary_db = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    args = ("serve", "--redis", redis_url, "--env", "ac", "--concurrency",
            "8" if batched else "2", "--summary-db", summary_db, "--venue", venue)
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
        summary = _reconcile(client, orders, venue)
        assert summary["orders"] == len(orders) and kills == 3
        # the SQL summary too: one row per done order (none lost, none twice), same numbers
        summary["summary_rows"] = _reconcile_summary(client, summary_db, orders)
        resumed = [m for _, m in _entries(client, STREAM_FILLS)
                   if m["kind"] == "done" and m["resumed_at_step"] > 0]
        assert resumed, "no order was resumed mid-way"
        done = [m for _, m in _entries(client, STREAM_FILLS) if m["kind"] == "done"]
        assert {m["parent_id"]: m["batch"] for m in done} == batches
        if venue == "stream":  # the fills came from the entries, not a simulated path
            paper = _reference(orders)
            assert all(m["is_bps"] != paper[m["parent_id"]][1] for m in done)
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
        print(json.dumps({**summary, "case": case, "kills": kills,
                          "resumed_mid_order": len(resumed), "lost": 0}))
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


@pytest.mark.parametrize("args, needle", [
    (("--venue", "broker"), "venue = 'broker'"),
    (("--venue", "stream", "--env", "lob"), "not 'lob'"),
])
def test_serve_refuses_a_venue_it_cannot_fill_on_in_one_line(redis_url, args, needle):  # noqa: F811
    proc = _cli("serve", "--redis", redis_url, "--summary-db", "none", *args)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


@pytest.mark.parametrize("args, needle", [
    (("--venue", "broker"), "venue = 'broker'"),
    (("--venue", "stream", "--env", "lob"), "not 'lob'"),
])
def test_serve_names_a_bad_venue_before_it_reaches_the_server(tmp_path, args, needle):
    """No server listens on port 1: the bad option is named first, and nothing is written
    (no summary database in the working folder)."""
    proc = _cli("serve", "--redis", "redis://127.0.0.1:1/0", *args, cwd=tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert list(tmp_path.iterdir()) == []
