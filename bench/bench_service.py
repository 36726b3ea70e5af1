"""End-to-end latency of the service: ``XADD`` of a market entry on ``STREAM_MARKET`` → the
child order it released, read back from ``STREAM_FILLS``; and throughput, for 1, 10 and 100
concurrent parent orders against a feed at 1×, 10× and as fast as possible.

    python bench/bench_service.py [--orders 1,10,100] [--speeds 1,10,max] [--step-ms 200]
                                  [--appendfsync always|everysec] [--json-out PATH]

Prints one JSON object. A throwaway ``redis-server`` (AOF on, fsync every write: the setting
the recovery guarantee needs) on a free port; one ``execrl serve`` subprocess (``--env ac``,
TWAP, paper venue, lockstep, ``--concurrency`` = the largest order count); the feed runs in
this process (``execrl.service.feed.run_feed``), where a reader thread blocks on
``STREAM_FILLS`` and stamps each child order as it arrives. Latency of a child order =
arrival here − the ``time.time_ns()`` the feed took right before the market entry's ``XADD``
(one clock). "1×" is ``--step-ms`` per market step (the AC order's own step, 360 s, would take
an hour); 10× a tenth of that; max: no pause. Each cell submits its orders at once, each 10
decisions, and waits until all are done.

Per cell also the service process's CPU seconds (``serve_cpu_s``: at 1× the wall time is
mostly waiting on the feed) and the 1-minute load average when it ended (a shared machine).

Reference, in this process: one ``Executor.run`` of the same order without Redis, per decision
(``reference_us_per_decision``); ``ratio_p50_vs_reference`` = the service's p50 / that. The
seed's SLO: p95 < 50 ms per decision (``slo_ms``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS = 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _order(tag: str, i: int) -> dict:
    return {"order_id": f"{tag}-{i}", "symbol": "DEMO", "side": "sell" if i % 2 else "buy",
            "qty": 60_000 + 100 * i, "arrival_px": 50.0, "start_ts": 0, "horizon_s": 3600}


def _reference_us() -> float:
    from execrl.domain import ParentOrder
    from execrl.executor.config import ExecutorConfig
    from execrl.executor_cli import build_executor
    from execrl.presets import preset_market

    market = preset_market("ac")
    order = ParentOrder.from_dict(_order("REF", 1))
    ex = build_executor(ExecutorConfig(), market, order, mode="paper")
    ex.run(order, 1, 1, venue="paper")  # warm (numba cache)
    t = time.perf_counter()
    n = 20
    for s in range(n):
        ex.run(order, 1, s, venue="paper")
    return (time.perf_counter() - t) / (n * STEPS) * 1e6


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", default="1,10,100")
    ap.add_argument("--speeds", default="1,10,max")
    ap.add_argument("--step-ms", type=float, default=200.0)
    ap.add_argument("--appendfsync", choices=("always", "everysec"), default="always",
                    help="Redis AOF fsync policy (always: what the recovery guarantee needs "
                    "if Redis itself may crash; everysec: up to 1 s of writes at risk)")
    ap.add_argument("--cell-timeout-s", type=float, default=120.0)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    import redis

    from execrl.presets import preset_market
    from execrl.service.feed import FeedConfig, parse_speed, run_feed
    from execrl.service.streams import (
        STATE_DONE,
        STREAM_FILLS,
        STREAM_MARKET,
        STREAM_ORDERS,
        decode,
        encode,
    )

    counts = [int(x) for x in args.orders.split(",")]
    speeds = args.speeds.split(",")
    binary = shutil.which("redis-server")
    if binary is None:
        print(json.dumps({"skipped": "redis-server is not installed"}))
        return
    reference = _reference_us()
    folder = tempfile.mkdtemp(prefix="execrl-bench-redis-")
    port = _free_port()
    redis_proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder, "--save", "",
         "--appendonly", "yes", "--appendfsync", args.appendfsync, "--logfile", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, decode_responses=True)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}"
           f"{os.environ.get('PYTHONPATH', '')}"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "execrl", "serve", "--redis", url, "--env", "ac",
         "--concurrency", str(max(counts)), "--summary-db", "none"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    arrivals: dict[str, tuple[int, dict]] = {}
    stop = threading.Event()

    def reader() -> None:
        r = redis.Redis.from_url(url, decode_responses=True)
        cursor = "0-0"
        while not stop.is_set():
            for _, rows in r.xread({STREAM_FILLS: cursor}, block=100) or ():
                now = time.time_ns()
                for entry_id, fields in rows:
                    cursor = entry_id
                    m = decode(fields)
                    if m.get("kind") == "child":
                        arrivals[m["id"]] = (now, m)

    threading.Thread(target=reader, daemon=True).start()
    market = preset_market("ac")
    from execrl.domain import ParentOrder

    feed_order = ParentOrder.from_dict(_order("FEED", 1))
    cells = []
    stopped_at = None
    try:
        # warm the service (its first order loads numba's cache)
        client.xadd(STREAM_ORDERS, encode({**_order("WARM", 0)}))
        warm = threading.Thread(target=run_feed, args=(client, FeedConfig(
            market, feed_order, steps=400, speed=1.0, step_s=0.05), "DEMO"))
        warm.start()
        deadline = time.monotonic() + 120
        while not client.hexists(STATE_DONE, "WARM-0") and time.monotonic() < deadline:
            time.sleep(0.05)
        warm.join()
        stopped_at = None
        for speed_text in speeds:
            speed = parse_speed(speed_text)
            for n in counts:
                tag = f"S{speed_text}-N{n}"
                orders = [_order(tag, i) for i in range(n)]
                for o in orders:
                    client.xadd(STREAM_ORDERS, encode(o))
                time.sleep(0.2)  # the orders accepted before their first market entry
                t0 = time.perf_counter()
                cpu0 = _cpu_s(serve.pid)
                # the feed runs until every order of the cell is done
                cell_done = threading.Event()
                feeder = threading.Thread(target=run_feed, args=(client, FeedConfig(
                    market, feed_order, steps=10**9, speed=speed or 0.0,
                    step_s=args.step_ms / 1e3), "DEMO"), kwargs={"stop": cell_done.is_set})
                feeder.start()
                deadline = time.monotonic() + args.cell_timeout_s
                ids = [o["order_id"] for o in orders]
                while time.monotonic() < deadline:
                    if all(client.hexists(STATE_DONE, i) for i in ids):
                        break
                    time.sleep(0.01)
                wall = time.perf_counter() - t0
                serve_cpu = _cpu_s(serve.pid) - cpu0
                cell_done.set()
                feeder.join()
                time.sleep(0.2)
                lat = np.array([(now - m["market_ts_ns"]) / 1e6
                                for now, m in arrivals.values()
                                if m["parent_id"] in set(ids)])
                done = sum(client.hexists(STATE_DONE, i) for i in ids)
                cells.append({
                    "orders": n, "speed": speed_text, "market_step_ms":
                    (args.step_ms / speed) if speed else 0.0, "done": int(done),
                    "child_orders": int(lat.size),
                    "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
                    "p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
                    "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
                    "decisions_per_s": n * STEPS / wall, "wall_s": wall,
                    # the service's own CPU over the cell (wall time at 1x is mostly waiting
                    # on the feed) and the machine's load when the cell ended
                    "serve_cpu_s": serve_cpu, "serve_cpu_ms_per_decision":
                    serve_cpu / (n * STEPS) * 1e3, "load_avg_1m": os.getloadavg()[0],
                })
                if done < n:  # the rest would run into the next cell: stop here
                    stopped_at = f"{n} orders at speed {speed_text}: {n - done} not done"
                    break
            if stopped_at:
                break
                client.delete(STREAM_MARKET)
    finally:
        stop.set()
        serve.terminate()
        serve.wait(timeout=20)
        redis_proc.terminate()
        redis_proc.wait(timeout=20)
        shutil.rmtree(folder, ignore_errors=True)
    p50_single = next((c["p50_ms"] for c in cells if c["orders"] == min(counts)), None)
    out = {
        "bench": "service_latency",
        "slo_ms": 50.0,
        "appendfsync": args.appendfsync,
        "reference_us_per_decision": reference,
        "ratio_p50_vs_reference": None if p50_single is None else p50_single * 1e3 / reference,
        "cells": cells,
        "stopped_at": stopped_at,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
