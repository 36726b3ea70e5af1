"""The service's per-order SQL summary (service.summary) on SQLite and a real PostgreSQL, one
row per done order, idempotent when a done order is published again (the window between the
row and the done record a SIGKILL can hit); and `execrl serve`'s /metrics and new flags."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ab_helpers import MARKET, done_records, order, pg_database, serve
from execrl.service.metrics import scrape_samples
from execrl.service.serve import ServeConfig, Server
from execrl.service.streams import STATE_DONE, STATE_SENT, STREAM_FILLS, STREAM_ORDERS, encode
from execrl.service.summary import ORDER_COLUMNS, SummaryDB
from pg import postgres_url  # noqa: F401  (the fixture)
from redis_server import redis_url  # noqa: F401  (the fixture)

redis = pytest.importorskip("redis")
SRC = Path(__file__).resolve().parents[1] / "src"
NUMBERS = ("qty", "filled", "is_bps", "fill_rate", "child_orders", "fills", "residual_shares",
           "steps")


@pytest.fixture
def client(redis_url):  # noqa: F811
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    c.flushall()
    yield c
    c.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def summary_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'summary.sqlite'}"
    return pg_database(request.getfixturevalue("postgres_url"))


def reconcile(rows, done: dict[str, dict]) -> None:
    """Every done order has exactly one row and the row's numbers are the done record's."""
    assert rows["order_id"].is_unique
    assert sorted(rows["order_id"]) == sorted(done)
    for _, row in rows.iterrows():
        d = done[row["order_id"]]
        for k in (*NUMBERS, "symbol", "side", "route", "policy", "policy_hash", "finished_by"):
            assert row[k] == d[k], (row["order_id"], k, row[k], d[k])


def test_one_row_per_done_order_and_a_republish_writes_none(client, summary_url):
    orders = [order(i) for i in range(4)]
    serve(client, orders, summary_url=summary_url)
    db = SummaryDB(summary_url)
    rows = db.orders()
    done = done_records(client)
    assert len(rows) == 4 and list(rows.columns) == list(ORDER_COLUMNS)
    reconcile(rows, done)
    # no registry: the configured policy, route live, no shadow
    assert set(rows["route"]) == {"live"} and set(rows["policy"]) == {"twap"}
    assert set(rows["policy_hash"]) == {""} and np.isnan(rows["shadow_is_bps"]).all()
    assert (rows["started_at"] <= rows["finished_at"]).all()
    assert (rows["filled"] + rows["residual_shares"] == rows["qty"]).all()

    # the service killed after the row and before the done record: the order is not done, a
    # restarted service re-runs it (every step on record) and publishes it; still one row
    entry, first = done["T-1"]["entry_id"], done["T-1"]
    done_entry = next(i for i, f in client.xrange(STREAM_FILLS) if "T-1:done" in f["data"])
    client.xdel(STREAM_FILLS, done_entry)
    client.hdel(STATE_DONE, "T-1")
    client.srem(STATE_SENT, "T-1:done")
    fields = next(f for i, f in client.xrange(STREAM_ORDERS) if i == entry)
    server = Server(client, ServeConfig(market=MARKET, lockstep=False, summary_url=summary_url),
                    log=lambda text: None)
    server.handle(entry, fields)
    deadline = time.monotonic() + 60
    while server.in_flight() and time.monotonic() < deadline:
        time.sleep(0.02)
    server._check()
    again = done_records(client)["T-1"]
    assert again["resumed_at_step"] == 10 and again["ts_ns"] != first["ts_ns"]
    assert {k: again[k] for k in NUMBERS} == {k: first[k] for k in NUMBERS}
    after = db.orders()
    assert len(after) == 4
    assert after.equals(rows)  # the first write stands
    reconcile(after, done_records(client))
    db.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-m", "execrl", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_serve_metrics_port_shows_the_done_orders(client, redis_url, tmp_path):  # noqa: F811
    orders = [order(i) for i in range(3)]
    for o in orders:
        client.xadd(STREAM_ORDERS, encode(o))
    port = _free_port()
    summary = f"sqlite:///{tmp_path / 'summary.sqlite'}"
    proc = _cli("serve", "--redis", redis_url, "--env", "ac", "--no-lockstep",
                "--summary-db", summary, "--metrics-port", str(port))
    try:
        deadline = time.monotonic() + 60
        while client.hlen(STATE_DONE) < len(orders) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        samples = {(name, tuple(sorted(labels.items()))): v
                   for name, labels, v in scrape_samples(text.decode())}
        done = done_records(client)
        assert samples[("exec_is_bps_count", (("policy", "twap"),))] == len(orders)
        # the histogram's buckets hold exactly the done orders' IS
        for edge in (100.0, 200.0, 500.0):
            n = sum(d["is_bps"] <= edge for d in done.values())
            assert samples[("exec_is_bps_bucket", (("le", str(edge)), ("policy", "twap")))] == n
        assert samples[("exec_orders_total", (("policy", "twap"),))] == len(orders)
        assert samples[("exec_decision_latency_ms_count", ())] == 10 * len(orders)
        assert samples[("exec_decisions_total", (("policy", "twap"),))] == 10 * len(orders)
        reconcile(SummaryDB(summary).orders(), done)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("args,needle", [
    (["--canary-share", "1.5"], "canary field 'share' = 1.5"),
    (["--summary-db", "nota://url"], "--summary-db 'nota://url'"),
    (["--registry", "nota://url"], "--registry: registry URL 'nota://url'"),
    (["--summary-db", "sqlite://"], "in-memory database"),
    (["--metrics-port", "70000"], "--metrics-port"),
])
def test_serve_refuses_bad_new_flags_in_one_line(redis_url, args, needle,  # noqa: F811
                                                  tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from execrl.cli import app

    monkeypatch.chdir(tmp_path)  # the default summary file lands here
    result = CliRunner().invoke(app, ["serve", "--redis", redis_url, "--env", "ac", *args])
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.splitlines()[-1].startswith("error: ") and needle in text
    assert "Traceback" not in text
