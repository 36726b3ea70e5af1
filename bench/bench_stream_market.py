"""The paper market against the market-data stream (``execrl.service.paper``): its step time
against the backtest market it replays (same process, same orders: a TWAP of market orders),
and the size of the entries ``execrl feed`` publishes (JSON bytes on the wire).

    PYTHONPATH=src python bench/bench_stream_market.py [--goog PATH]

Prints one JSON object: per market and batch size, µs per ``execute`` of the backtest and of
the paper market (entries already pushed and decoded; the ratio paper / backtest), and per
market the first entry's and the median entry's size, and the JSON decode time of an entry.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from execrl.domain import ParentOrder, Side
from execrl.service.feed import MarketTape
from execrl.service.paper import TapeFed
from execrl.service.streams import encode
from execrl.sim.base import ChildOrderBatch
from execrl.sim.spec import parse_market

GOOG = Path("/work/shared/data/lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip")


def _steps(market: Any, reps: int, seed: int) -> float:
    """µs per execute over ``reps`` episodes of TWAP market orders."""
    n, k = market.n_envs, market.n_steps
    orders = ChildOrderBatch.market_orders(n)
    active = np.ones(n, dtype=bool)
    total, count = 0.0, 0
    for r in range(reps):
        market.reset(np.random.default_rng(seed + r))
        orders.qty[:] = 100
        t0 = time.perf_counter()
        for _ in range(k):
            market.execute(orders, active)
        total += time.perf_counter() - t0
        count += k
    return total / count * 1e6


def _sizes(spec: Any, order: ParentOrder, entries: int) -> dict[str, Any]:
    tape = MarketTape(spec, order, 0)
    raw = [encode({"symbol": order.symbol, "step": i, "episode": tape.episode, "k": tape.k,
                   **tape.step(), "ts_ns": 0})["data"] for i in range(entries)]
    t0 = time.perf_counter()
    for text in raw:
        json.loads(text)
    decode_us = (time.perf_counter() - t0) / len(raw) * 1e6
    return {"first_entry_bytes": len(raw[0]),
            "median_entry_bytes": int(statistics.median(len(r) for r in raw)),
            "decode_us_per_entry": round(decode_us, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--goog", default=str(GOOG))
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    replay_order = ParentOrder(order_id="B", symbol="X", side=Side.BUY, qty=10_000,
                               start_ts=0.0, horizon_s=600.0)
    cases: dict[str, tuple[dict, ParentOrder | None]] = {
        "almgren_chriss": ({"model": "almgren_chriss"}, None),
        "replay_synthetic": ({"model": "replay", "data": "synthetic:1", "horizon": 600.0,
                              "n_steps": 10, "pre_arrival_s": 60.0}, replay_order),
    }
    if Path(args.goog).exists():
        cases["replay_goog"] = ({"model": "replay", "data": args.goog, "horizon": 600.0,
                                 "n_steps": 10}, replay_order)
    out: dict[str, Any] = {}
    for name, (raw, order) in cases.items():
        spec = parse_market(raw)
        order = order or spec.default_order()
        priced = spec.for_order(order)
        row: dict[str, Any] = _sizes(spec, order, priced.n_steps + 1)
        for n in (1, 16) if name != "almgren_chriss" else (1, 100, 4096):
            backtest = priced.build(n, order.side.sign)
            paper = TapeFed(priced.build(n, order.side.sign))
            _steps(backtest, 1, 0), _steps(paper, 1, 0)  # compile
            b, p = _steps(backtest, args.reps, 1), _steps(paper, args.reps, 1)
            row[f"n{n}"] = {"backtest_us_per_step": round(b, 1),
                            "paper_us_per_step": round(p, 1), "ratio": round(p / b, 2)}
        out[name] = row
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
