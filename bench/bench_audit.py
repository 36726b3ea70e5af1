"""What the audit trail costs the decision loop: ``AuditTrail.add_decisions`` for one order
(N = 1, the low-latency path) against the plain way of buffering a step safely, in one run.

    python bench/bench_audit.py [--calls 50000] [--n-orders 1] [--json-out PATH]

Prints one JSON object on stdout. One step's decision record as the executor passes it: every
``DECISION_INPUTS`` column plus 12 features and 8 action scores and mask entries (25 arrays of
``--n-orders`` rows). ``--calls`` calls after 2,000 untimed ones, each timed alone with
``perf_counter_ns``:

* ``add_decisions``: ``AuditTrail.add_decisions(cols)`` (one ``tobytes`` per column);
* ``reference_copy``: ``.copy()`` of each column appended to a list per column, the
  straightforward safe buffer (the caller may reuse its arrays, so a step must be copied);
* ``add_decisions_record``: the same step as one structured array of
  ``AuditTrail.decision_dtype`` (one copy), the record already filled;
* ``fill_record_and_add``: filling that record field by field from the columns, then the add;
* ``add_fills``: ``AuditTrail.add_fills`` of one fill event;
* ``close_s``: writing the trail of all those calls (Parquet + SQLite), seconds.

Reported: p50, p99 and mean in µs, and ``ratio_p50`` / ``ratio_p99`` = reference / ours.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from execrl.executor.audit import DECISION_INPUTS, AuditTrail, read_trail
from execrl.market.events import FILL_DTYPE

N_FEATURES, N_ACTIONS = 12, 8


def latency(call: Callable[[], object], calls: int) -> dict[str, float]:
    for _ in range(2000):
        call()
    ns = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t = clock()
        call()
        ns[i] = clock() - t
    us = ns / 1e3
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "mean_us": float(us.mean())}


def step_record(n: int) -> dict[str, np.ndarray]:
    cols = {name: np.zeros(n, dtype=dtype) for name, (dtype, _d) in DECISION_INPUTS.items()}
    cols["order_idx"] = np.arange(n, dtype=np.int64)
    cols["features"] = np.zeros((n, N_FEATURES), np.float32)
    cols["scores"] = np.full((n, N_ACTIONS), 1 / N_ACTIONS, np.float32)
    cols["mask"] = np.ones((n, N_ACTIONS), bool)
    return cols


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--n-orders", type=int, default=1)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    n = args.n_orders
    cols = step_record(n)
    with tempfile.TemporaryDirectory() as tmp:
        trail = AuditTrail(Path(tmp) / "trail", features=[f"x{i}" for i in range(N_FEATURES)])
        ours = latency(lambda: trail.add_decisions(cols), args.calls)

        buffers: dict[str, list[np.ndarray]] = {name: [] for name in cols}

        def reference() -> None:
            for name, value in cols.items():
                buffers[name].append(value.copy())

        ref = latency(reference, args.calls)

        # the same step as one structured record (decision_dtype): the add alone, and filling
        # the record field by field from the columns first (what a Python caller would pay)
        records = AuditTrail(Path(tmp) / "records",
                             features=[f"x{i}" for i in range(N_FEATURES)])
        record = np.zeros(n, records.decision_dtype(N_ACTIONS))
        for name, value in cols.items():
            record[name] = value
        record_add = latency(lambda: records.add_decisions(record), args.calls)

        def fill_and_add() -> None:
            for name, value in cols.items():
                record[name] = value
            records.add_decisions(record)

        record_fill = latency(fill_and_add, args.calls)
        records.abort()
        event = np.zeros(1, FILL_DTYPE)
        event["qty"], event["px"] = 1, 100.0
        fills = latency(lambda: trail.add_fills(event, step=0), args.calls)
        rows = trail._decisions.rows
        n_fills = args.calls + 2000
        orders = pd.DataFrame({"order_idx": np.arange(n), "order_id": [f"o{i}" for i in
                                                                       range(n)],
                               "symbol": "X", "side": "buy", "qty": 10**9,
                               "filled": np.zeros(n, np.int64), "fills": n_fills // n})
        start = time.perf_counter()
        trail.close(orders)
        close_s = time.perf_counter() - start
        assert len(read_trail(Path(tmp) / "trail").decisions) == rows
    out = {
        "bench": "audit", "n_orders": n, "calls": args.calls, "columns": len(cols),
        "add_decisions": ours, "reference_copy": ref, "add_fills": fills,
        "add_decisions_record": record_add, "fill_record_and_add": record_fill,
        "ratio_p50": ref["p50_us"] / ours["p50_us"], "ratio_p99": ref["p99_us"] / ours["p99_us"],
        "close_s": close_s, "close_rows": rows,
        "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(), "machine": platform.machine(),
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
