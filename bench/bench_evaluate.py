"""`execrl evaluate` end to end and by phase, against the code before issue 10's changes.

    python bench/bench_evaluate.py [--orders 20000] [--repeats 3] [--reference 4ec1c07]
                                   [--json-out PATH] [--no-numpy-bootstrap] [--no-bytecode]
                                   [--timeline]

Prints one JSON object on stdout (progress on stderr). The reference is the same command on
an earlier commit's tree (``git archive REF src`` into a temporary folder, run with that
``src`` first on the path; default 4ec1c07, main before the evaluate speed-ups). Each repeat
runs, alternately for the reference and this tree, in fresh interpreters (imports and numba's
cache loads counted as a user meets them; one untimed run each first fills numba's cache):

* ``cli``: the command itself, ``execrl evaluate --orders N --out DIR`` (``execrl.cli.main``
  as ``python -m execrl`` runs it; five baselines: twap, vwap, pov, ac, immediate; seed 7),
  with plots and with ``--no-plots``: wall seconds of the process, its CPU seconds (user +
  system, threads and the plotting child included) and ``self_cpu`` (the process alone:
  this tree draws the plots in a forked child and its helper, ``execrl.evaluate.painter``);
* ``phases``: the same work through the functions the command calls, timed one by one, wall
  and CPU: ``imports`` (``execrl.cli`` and what evaluate imports), ``simulation``
  (``run_policies``), ``statistics`` (``build_results``: summaries, 4 paired comparisons with
  10,000-resample bootstraps, Wilcoxon and t-tests (the reference imports scipy.stats
  there; this tree does not, above 50 orders), closed forms), ``outputs`` (``write_outputs``:
  parquet, JSON, report, plots, all in this process: the work, not the command's critical
  path) and ``outputs_no_plots``.

With ``--timeline`` each repeat also runs the command once more per tree with wall-clock
stamps (``TIMELINE``): seconds from its launch to the end of the imports, the simulation,
the statistics and the outputs, to each plot's start and end in the process that drew it
(``main`` where the tree draws them itself, ``child``, ``helper``), and to the process's end:
where the command waits, on which process.

For this tree the phases run also times the four bootstraps alone (``bootstrap_s``, one
compiled pass) against the numpy bootstrap this project used first (``integers(0, n,
size=(chunk, n))`` and a gather, chunked at 4M elements) on the same differences
(``numpy_bootstrap_s``), and how far the two intervals lie apart in standard errors of the
mean (``ci_gap_se_max``: Monte Carlo noise of 10,000 resamples is ~0.04; skipped with
``--no-numpy-bootstrap``). Figures are medians over repeats; ``ratio`` = reference / this
tree.

Both trees' sources are compiled to bytecode first (``compileall``, into their
``__pycache__`` folders), as an installed package is and as Python does on a first run
unless ``PYTHONDONTWRITEBYTECODE`` is set (it is on this project's machines: every run then
compiled execrl's ~100 modules again, ~0.4 CPU-s); ``--no-bytecode`` leaves that out (a
tree's stale or missing bytecode is then compiled in memory on every run).
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

from _output import emit  # bench/ is first on the path of `python bench/X.py`

ROOT = Path(__file__).resolve().parents[1]
POLICIES = "twap,vwap,pov,ac,immediate"

#: ``python -m execrl``, which then prints its own CPU seconds (its children's not counted)
CLI = r'''
import atexit, os, sys
def _own():
    t = os.times()
    print(f"SELF_CPU {t.user + t.system:.3f}", file=sys.stderr)
atexit.register(_own)
sys.argv = ["execrl", *sys.argv[1:]]
from execrl.cli import main
main()
'''

#: the command as ``CLI`` runs it, with a wall-clock stamp (``time.time()``) on stderr where
#: each phase ends and where each plot starts and ends, in whichever process draws it (the
#: wrappers are set before the plotting child forks, so its processes inherit them)
TIMELINE = r'''
import os, sys, time
def stamp(what):
    print(f"STAMP {time.time():.6f} {os.getpid()} {what}", file=sys.stderr, flush=True)
sys.argv = ["execrl", *sys.argv[1:]]
import execrl.cli
stamp("imports")
from execrl.evaluate import backtest, painter, report, results
def after(mod, name, what):
    f = getattr(mod, name)
    def g(*a, **k):
        out = f(*a, **k)
        stamp(what)
        return out
    setattr(mod, name, g)
def around(mod, name):
    f = getattr(mod, name)
    def g(*a, **k):
        stamp(name + " start")
        out = f(*a, **k)
        stamp(name + " end")
        return out
    setattr(mod, name, g)
after(backtest, "run_policies", "simulation")
after(results, "build_results", "statistics")
after(results, "write_outputs", "outputs")
for name in ("plot_is_boxplot", "plot_schedules", "plot_paired_diffs"):
    around(report, name)
import atexit
atexit.register(lambda: stamp("exit"))
execrl.cli.main()
'''

PHASES = r'''
import json, sys, time
c0, t0 = time.process_time(), time.perf_counter()
import execrl.cli  # noqa: F401
from execrl.env.factory import DEFAULT_ORDER, EnvConfig
from execrl.evaluate.backtest import run_policies
from execrl.evaluate.results import build_results, write_outputs
from execrl.presets import preset_market
marks = [(time.perf_counter(), time.process_time())]
def mark():
    marks.append((time.perf_counter(), time.process_time()))
orders, out, extra = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
config = EnvConfig(market=preset_market("ac"))
runs = run_policies(sys.argv[4].split(","), config, DEFAULT_ORDER, orders, 7)
mark()
results = build_results(runs, config, DEFAULT_ORDER, orders, 7, "ac", ["twap"])
mark()
write_outputs(__import__("pathlib").Path(out) / "plots", results, runs)
mark()
write_outputs(__import__("pathlib").Path(out) / "no_plots", results, runs, plots=False)
mark()
row = {"imports_s": marks[0][0] - t0, "imports_cpu_s": marks[0][1] - c0}
for name, (a, b) in zip(["simulation", "statistics", "outputs", "outputs_no_plots"],
                        zip(marks, marks[1:])):
    row[name + "_s"], row[name + "_cpu_s"] = b[0] - a[0], b[1] - a[1]
if extra:
    import numpy as np
    from execrl.evaluate.stats import bootstrap_means, percentile_ci
    base = runs[0].episodes["is_bps"].to_numpy()
    diffs = [r.episodes["is_bps"].to_numpy() - base for r in runs[1:]]
    t = time.perf_counter()
    old = []
    for d in diffs:  # the numpy bootstrap this project used first
        rng = np.random.default_rng(7)
        chunk = max(1, 4_000_000 // d.size)
        means = np.empty(10_000)
        for start in range(0, 10_000, chunk):
            stop = min(start + chunk, 10_000)
            means[start:stop] = d[rng.integers(0, d.size, size=(stop - start, d.size))].mean(1)
        old.append(percentile_ci(means))
    row["numpy_bootstrap_s"] = time.perf_counter() - t
    t = time.perf_counter()
    new = [percentile_ci(m) for m in bootstrap_means(np.stack(diffs), n_boot=10_000, seed=7)]
    row["bootstrap_s"] = time.perf_counter() - t
    se = [d.std(ddof=1) / np.sqrt(d.size) for d in diffs]
    row["ci_gap_se_max"] = float(max(max(abs(a[0] - b[0]), abs(a[1] - b[1])) / s
                                     for a, b, s in zip(new, old, se)))
print(json.dumps(row))
'''


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_cli(src: Path, orders: int, out: Path, no_plots: bool
            ) -> tuple[float, float, float]:
    """Wall and CPU (user + system) seconds of one ``execrl evaluate`` process on the tree
    ``src`` (its plotting child included), and the CPU seconds of the process alone: on a
    shared machine the wall time includes waiting for a core, the CPU time does not."""
    args = [sys.executable, "-c", CLI, "evaluate", "--policies", POLICIES, "--orders",
            str(orders), "--out", str(out), "--force"] + (["--no-plots"] if no_plots else [])
    env = {**os.environ, "PYTHONPATH": str(src)}
    before = os.times()
    t = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = os.times()
    if done.returncode != 0:
        raise SystemExit(f"execrl evaluate ({src}) failed: {done.stderr}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system)
    own = float(done.stderr.strip().splitlines()[-1].removeprefix("SELF_CPU "))
    return wall, cpu, own


def run_timeline(src: Path, orders: int, out: Path) -> dict[str, float]:
    """Wall seconds from the command's start (the launch of its process) to each stamp of
    ``TIMELINE``; a plot's stamps are named by the process that drew it (``main``, ``child``
    or ``helper``: the plotting child's own child, this tree only)."""
    args = [sys.executable, "-c", TIMELINE, "evaluate", "--policies", POLICIES, "--orders",
            str(orders), "--out", str(out), "--force"]
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.time()
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    end = time.time() - t0
    if done.returncode != 0:
        raise SystemExit(f"execrl evaluate ({src}) failed: {done.stderr}")
    stamps = [line.split(maxsplit=3)[1:] for line in done.stderr.splitlines()
              if line.startswith("STAMP ")]
    main_pid = stamps[0][1]
    plot_pids = [pid for _, pid, what in stamps if what.startswith("plot_") and pid != main_pid]
    roles = {main_pid: "main"}
    for pid in plot_pids:  # the child draws the box plot first; another is its helper
        roles.setdefault(pid, "child" if "child" not in roles.values() else "helper")
    row = {f"{roles[pid]} {what}" if what.startswith("plot_") else what: float(t) - t0
           for t, pid, what in stamps}
    row["process_end"] = end
    return row


def run_phases(src: Path, orders: int, out: Path, extra: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", PHASES, str(orders), str(out),
                           "1" if extra else "0", POLICIES],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def reference_tree(ref: str, dest: Path) -> Path:
    """``src`` of commit ``ref``, extracted under ``dest``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def one_repeat(trees: dict[str, Path], orders: int, tmp: Path, numpy_bootstrap: bool,
               timeline: bool = False) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {name: {} for name in trees}
    for no_plots in (False, True):  # reference and this tree alternately
        key = "cli_no_plots" if no_plots else "cli"
        for name, src in trees.items():
            (rows[name][key + "_s"], rows[name][key + "_cpu_s"],
             rows[name][key + "_self_cpu_s"]) = run_cli(src, orders, tmp / f"cli-{name}",
                                                        no_plots)
    for name, src in trees.items():
        rows[name].update(run_phases(src, orders, tmp / f"phases-{name}",
                                     name == "this" and numpy_bootstrap))
    if timeline:
        for name, src in trees.items():
            rows[name].update({"timeline " + k: v for k, v in
                               run_timeline(src, orders, tmp / f"timeline-{name}").items()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", default="4ec1c07",
                        help="commit whose tree is the reference (default: main before)")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--no-numpy-bootstrap", action="store_true",
                        help="skip the bootstraps alone (numpy's takes ~10 s)")
    parser.add_argument("--timeline", action="store_true",
                        help="also run the command with a wall-clock stamp at each phase's "
                        "end and each plot's start and end (see TIMELINE)")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="do not compile the trees' bytecode first (see the docstring)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        trees = {"reference": reference_tree(args.reference, tmp), "this": ROOT / "src"}
        if not args.no_bytecode:
            for src in trees.values():
                subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)],
                               check=True, stdout=subprocess.DEVNULL)
        for name, src in trees.items():  # fill numba's cache of each tree, not timed
            run_cli(src, 200, tmp / f"warm-{name}", no_plots=False)
        rows = []
        for r in range(args.repeats):
            row = one_repeat(trees, args.orders, tmp, not args.no_numpy_bootstrap,
                             args.timeline)
            for name, values in row.items():
                log(f"repeat {r} {name}: " + ", ".join(f"{k} {v:.3f}"
                                                       for k, v in values.items()))
            rows.append(row)
    median = {name: {k: statistics.median(row[name][k] for row in rows if k in row[name])
                     for k in rows[0][name]} for name in ("reference", "this")}
    ratio = {k: median["reference"][k] / median["this"][k] for k in median["reference"]
             if median["this"].get(k)}
    this = median["this"]
    out = {
        "benchmark": "evaluate",
        "command": f"execrl evaluate --orders {args.orders} --policies {POLICIES}",
        "orders": args.orders,
        "repeats": args.repeats,
        "reference": args.reference,
        "bytecode": not args.no_bytecode,
        "median": median,
        "ratio": ratio,
        "ratio_bootstrap": (this["numpy_bootstrap_s"] / this["bootstrap_s"]
                            if "bootstrap_s" in this else None),
        "under_3s": {"cpu": this["cli_cpu_s"] < 3.0, "wall": this["cli_s"] < 3.0},
        "runs": rows,
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    emit(out, args.json_out)


if __name__ == "__main__":
    main()
