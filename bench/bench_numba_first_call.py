"""Where numba's first calls on ``execrl evaluate``'s path spend their time.

    python bench/bench_numba_first_call.py [--orders 20000] [--repeats 3] [--json-out PATH]

Prints one JSON object on stdout (progress on stderr). Each repeat runs two fresh
interpreters on this tree (``src`` first on the path), after one untimed run that fills
numba's cache:

* ``natural``: evaluate's imports (as ``bench_evaluate.py``'s phases import them), then
  ``run_policies`` (five baselines, seed 7) twice: the first call pays numba's first-call
  costs, the second is the simulation's work alone; ``first_call_s`` = first − second;
* ``split``: the same, with numba's first-call costs paid one by one beforehand:
  ``scipy_linalg_s`` (``import scipy.linalg.cython_blas``: what numba's BLAS check in
  ``numba.np.arraymath`` imports when numba first loads its implementations),
  ``registries_s`` (the rest of ``cpu_target.target_context.refresh()``, which numba runs
  before it loads or compiles the first kernel: its typing and lowering registries), then
  ``cache_loads_s`` = first ``run_policies`` − second (each kernel's machine code read from
  numba's on-disk cache and linked).

In both, ``numba_lock_wall_s`` is the wall time the first ``run_policies`` spends inside
numba's compiler lock (``numba.core.event``'s ``numba:compiler_lock`` timer), where numba
loads or compiles kernels: in ``natural`` all of numba's first-call costs (the BLAS check's
scipy import and the registries included), in ``split`` the cache loads alone; it does not
depend on the difference of two noisy runs as ``first_call_s`` and ``cache_loads_s`` do.

Also, from each kernel dispatcher's ``stats``: how many kernels the run loads from the cache
(``kernels_loaded``) and compiles (``kernels_compiled``: 0 when every kernel on the path is
cached). Figures are CPU seconds (``process_time``; wall where named ``_wall_s``), medians
over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _output import emit  # bench/ is first on the path of `python bench/X.py`

ROOT = Path(__file__).resolve().parents[1]

PROBE = r'''
import gc, json, sys, time
def now():
    return time.process_time(), time.perf_counter()
orders, split = int(sys.argv[1]), sys.argv[2] == "1"
marks = {"start": now()}
import execrl.cli  # noqa: F401
from execrl.env.factory import DEFAULT_ORDER, EnvConfig
from execrl.evaluate.backtest import run_policies
from execrl.evaluate.results import build_results, write_outputs  # noqa: F401
from execrl.presets import preset_market
marks["imports"] = now()
if split:
    import scipy.linalg.cython_blas  # noqa: F401
    marks["scipy_linalg"] = now()
    from numba.core.registry import cpu_target
    cpu_target.target_context.refresh()
    marks["registries"] = now()
config = EnvConfig(market=preset_market("ac"))
policies = "twap,vwap,pov,ac,immediate".split(",")
from numba.core import event
locked = []
with event.install_timer("numba:compiler_lock", locked.append):
    run_policies(policies, config, DEFAULT_ORDER, orders, 7)
marks["first"] = now()
run_policies(policies, config, DEFAULT_ORDER, orders, 7)
marks["second"] = now()
names = list(marks)
row = {}
for a, b in zip(names, names[1:]):
    row[b + "_s"] = marks[b][0] - marks[a][0]
    row[b + "_wall_s"] = marks[b][1] - marks[a][1]
from numba.core.registry import CPUDispatcher
kernels = [d for d in gc.get_objects() if isinstance(d, CPUDispatcher) and d.overloads
           and d.py_func.__module__.startswith("execrl.")]
row["numba_lock_wall_s"] = locked[0] if locked else 0.0
row["kernels_loaded"] = sum(sum(d.stats.cache_hits.values()) for d in kernels)
row["kernels_compiled"] = sum(sum(d.stats.cache_misses.values()) for d in kernels)
row["kernels"] = sorted(f"{d.py_func.__module__}.{d.py_func.__name__}" for d in kernels)
print(json.dumps(row))
'''


def probe(orders: int, split: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", PROBE, str(orders), "1" if split else "0"],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    probe(200, split=False)  # fill numba's cache, not timed
    rows: dict[str, list[dict]] = {"natural": [], "split": []}
    for r in range(args.repeats):
        for mode in rows:
            row = probe(args.orders, split=mode == "split")
            row["first_call_s" if mode == "natural" else "cache_loads_s"] = (
                row["first_s"] - row["second_s"])
            rows[mode].append(row)
            print(f"repeat {r} {mode}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)),
                file=sys.stderr, flush=True)
    median = {mode: {k: statistics.median(row[k] for row in mode_rows)
                     for k, v in mode_rows[0].items() if isinstance(v, (int, float))}
              for mode, mode_rows in rows.items()}
    split = median["split"]
    out = {
        "benchmark": "numba_first_call",
        "orders": args.orders,
        "repeats": args.repeats,
        "median": median,
        "kernels": rows["natural"][0]["kernels"],
        "first_call_parts_s": {"scipy_linalg": split["scipy_linalg_s"],
                               "registries": split["registries_s"],
                               "cache_loads_wall": split["numba_lock_wall_s"]},
        "first_call_share_of_simulation": (median["natural"]["first_call_s"]
                                           / median["natural"]["first_s"]),
        "runs": rows,
        "loadavg": os.getloadavg(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    emit(out, args.json_out)


if __name__ == "__main__":
    main()
