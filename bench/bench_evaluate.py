"""`execrl evaluate` end to end and by phase: imports, simulation, statistics, outputs.

    python bench/bench_evaluate.py [--orders 20000] [--repeats 3] [--json-out PATH]

Prints one JSON object on stdout (progress on stderr). Each repeat runs, in fresh
interpreters (so imports and numba's cache loads are counted as a user meets them):

* ``cli``: the command itself, ``python -m execrl evaluate --orders N --out DIR`` (five
  baselines: twap, vwap, pov, ac, immediate; seed 7), wall time of the whole process, with
  plots and with ``--no-plots``;
* ``phases``: the same work through the functions the command calls, timed one by one:
  ``imports`` (``execrl.cli`` and what evaluate imports), ``simulation`` (``run_policies``),
  ``statistics`` (``build_results``: summaries, 4 paired comparisons with 10,000-resample
  bootstraps, Wilcoxon and t-tests, closed forms), ``outputs`` (``write_outputs``: parquet,
  JSON, report, plots; and without plots).

The reference in the same run: ``statistics_numpy_bootstrap_s``, the four bootstraps as the
project computed them before (numpy ``integers(0, n, size=(chunk, n))`` and a gather, chunked
at 4M elements), on the same differences; ``ratio_bootstrap`` = that / the compiled one.
Figures are the medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = r'''
import json, sys, time
t0 = time.perf_counter()
import execrl.cli  # noqa: F401
from execrl.env.factory import DEFAULT_ORDER, EnvConfig
from execrl.evaluate.backtest import run_policies
from execrl.evaluate.results import build_results, write_outputs
from execrl.presets import preset_market
t1 = time.perf_counter()
orders, out = int(sys.argv[1]), sys.argv[2]
config = EnvConfig(market=preset_market("ac"))
specs = ["twap", "vwap", "pov", "ac", "immediate"]
runs = run_policies(specs, config, DEFAULT_ORDER, orders, 7)
t2 = time.perf_counter()
results = build_results(runs, config, DEFAULT_ORDER, orders, 7, "ac", ["twap"])
t3 = time.perf_counter()
write_outputs(__import__("pathlib").Path(out) / "plots", results, runs)
t4 = time.perf_counter()
write_outputs(__import__("pathlib").Path(out) / "no_plots", results, runs, plots=False)
t5 = time.perf_counter()
import numpy as np
base = runs[0].episodes["is_bps"].to_numpy()
diffs = [r.episodes["is_bps"].to_numpy() - base for r in runs[1:]]
t6 = time.perf_counter()
for d in diffs:  # the numpy bootstrap this project used before (same resamples)
    rng = np.random.default_rng(7)
    chunk = max(1, 4_000_000 // d.size)
    means = np.empty(10_000)
    for start in range(0, 10_000, chunk):
        stop = min(start + chunk, 10_000)
        means[start:stop] = d[rng.integers(0, d.size, size=(stop - start, d.size))].mean(axis=1)
t7 = time.perf_counter()
from execrl.evaluate.stats import bootstrap_means
compiled = bootstrap_means(np.stack(diffs), n_boot=10_000, seed=7)
t8 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "simulation_s": t2 - t1, "statistics_s": t3 - t2,
                  "outputs_s": t4 - t3, "outputs_no_plots_s": t5 - t4,
                  "statistics_numpy_bootstrap_s": t7 - t6,
                  "compiled_bootstrap_s": t8 - t7,
                  "bootstrap_max_abs_diff": float(np.abs(compiled[-1] - means).max())}))
'''


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_cli(orders: int, out: Path, no_plots: bool) -> float:
    args = [sys.executable, "-m", "execrl", "evaluate", "--orders", str(orders), "--out",
            str(out), "--force"] + (["--no-plots"] if no_plots else [])
    t = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"execrl evaluate failed: {done.stderr}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        # warm numba's cache (a first run compiles), not timed
        run_cli(200, Path(tmp) / "warm", no_plots=False)
        for r in range(args.repeats):
            row = {"cli_s": run_cli(args.orders, Path(tmp) / "cli", no_plots=False),
                   "cli_no_plots_s": run_cli(args.orders, Path(tmp) / "cli", no_plots=True)}
            done = subprocess.run([sys.executable, "-c", PHASES, str(args.orders), tmp],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            row.update(json.loads(done.stdout.strip().splitlines()[-1]))
            log(f"repeat {r}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
            rows.append(row)
    median = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    out = {
        "benchmark": "evaluate",
        "command": f"execrl evaluate --orders {args.orders} (twap,vwap,pov,ac,immediate)",
        "orders": args.orders,
        "repeats": args.repeats,
        "median": median,
        "ratio_bootstrap": median["statistics_numpy_bootstrap_s"] / median["compiled_bootstrap_s"],
        "runs": rows,
        "cpu_count": os.cpu_count(),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
