"""The batched core of two source trees, alternately: before / after a change, by CPU time.

    git archive <commit> src | tar -x -C /tmp/before
    python bench/bench_core_ab.py --before /tmp/before/src [--rounds 2] [--seconds 2]

Prints one JSON object. Each round runs, in fresh interpreters, the ``--before`` tree and this
checkout's ``src`` one after the other; each steps ``BatchedExecution`` (autoreset, default
AC market and order) at 1,000 and 10,000 envs with synchronous ends (the ``ac`` baseline
deciding) and random ends (seed 003's actions, pre-drawn), for ``--seconds`` of its own CPU
time. Rates are env-steps per CPU second (on a shared machine waiting for a core would be in
a wall-time rate), also as ns of CPU per env-step; ``ratio`` = after / before (rates), medians
over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r'''
import os, sys, time, json
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(v, "1")
import numpy as np
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution
from execrl.evaluate.backtest import policy_context
from execrl.policies.baselines import make_baseline
seconds = float(sys.argv[1])
out = {}
for n in (1000, 10000):
    for ends in ("synchronous", "random"):
        if ends == "synchronous":
            pol = make_baseline("ac", policy_context(EnvConfig(), DEFAULT_ORDER))
            config = EnvConfig(observations=tuple(pol.observations), actions="continuous")
            core = make_execution(config, DEFAULT_ORDER, n_envs=n, autoreset=True)
            obs = [core.reset(seed=0)]
            def step():
                obs[0] = core.step(pol.act(obs[0]))[0]
        else:
            core = make_execution(EnvConfig(actions="seed003"), DEFAULT_ORDER, n_envs=n,
                                  autoreset=True)
            core.reset(seed=0)
            actions = np.random.default_rng(1).integers(0, 5, size=(64, n))
            it = [0]
            def step():
                it[0] += 1
                core.step(actions[it[0] % 64])
        for _ in range(30):
            step()
        c0, k = time.process_time(), 0
        while time.process_time() - c0 < seconds:
            step()
            k += 1
        out[f"{n}_{ends}"] = k * n / (time.process_time() - c0)
print(json.dumps(out))
'''


def run(src: str, seconds: float) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run([sys.executable, "-c", WORKER, str(seconds)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{src}: {done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="src/ folder of the tree before")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    after = str(Path(__file__).resolve().parents[1] / "src")
    rows: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        rows["before"].append(run(args.before, args.seconds))
        rows["after"].append(run(after, args.seconds))
    cells = {}
    for cell in rows["after"][0]:
        b = statistics.median(r[cell] for r in rows["before"])
        a = statistics.median(r[cell] for r in rows["after"])
        cells[cell] = {"before_env_steps_per_cpu_s": b, "after_env_steps_per_cpu_s": a,
                       "before_ns_per_env_step": round(1e9 / b, 1),
                       "after_ns_per_env_step": round(1e9 / a, 1), "ratio": a / b}
    print(json.dumps({"benchmark": "core_before_after", "before": args.before, "after": after,
                      "cells": cells, "ratios": {c: round(v["ratio"], 2)
                                                 for c, v in cells.items()},
                      "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
