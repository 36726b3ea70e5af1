"""The fused step's two kernels in one process: the one loop against the passes.

    python bench/bench_fused_paths.py [--rounds 15] [--steps 60] [--sizes 1000 10000]

Where the guard only refuses (``RiskGuard.stops_only``, the default limits) the fused step runs
``_fused_ac_one_loop_kernel``; with a size, band or locate control on, the pass kernels
(``_fused_ac_step_kernel``). This steps two cores built alike (autoreset, default AC market
and order), one of them told to take the passes (``guard.stops_only = False``: same results to
the bit, ``tests/test_core_fused.py``), alternately, round by round, at 1,000 and 10,000 envs
with synchronous ends (the ``ac`` baseline deciding) and random ends (seed 003's actions,
pre-drawn): ``bench_mbt_gym.py``'s loop. Per env-step: the whole step (CPU time, policy
included) and the kernel call alone (wall time around it); best of rounds; ``ratio`` =
passes ÷ one loop (above 1: the loop is faster). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from execrl.env.core import BatchedExecution

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mbt_gym import execrl_stepper


class _Timed:
    """Wall time spent in a ``_TypedCall``."""

    def __init__(self, inner: Any):
        self.inner, self.seconds = inner, 0.0

    def __call__(self, key: Any, args: Any) -> Any:
        t0 = time.perf_counter()
        out = self.inner(key, args)
        self.seconds += time.perf_counter() - t0
        return out


def _stepper(n: int, ends: str, passes: bool) -> tuple[BatchedExecution, Callable[[], None]]:
    """``bench_mbt_gym``'s stepper (the loop it times against mbt_gym) and its core, told to
    take the pass kernels when ``passes``; both kernels' calls timed."""
    step = execrl_stepper(n, ends)
    core: BatchedExecution = inspect.getclosurevars(step).nonlocals["core"]
    assert core.guard.stops_only
    if passes:
        core.guard.stops_only = False
    core._one_loop_call = _Timed(core._one_loop_call)
    core._fused_call = _Timed(core._fused_call)
    return core, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    cells: dict[str, Any] = {}
    for n in args.sizes:
        for ends in ("synchronous", "random"):
            runs = {"one_loop": _stepper(n, ends, False), "passes": _stepper(n, ends, True)}
            best = {name: [np.inf, np.inf] for name in runs}
            for _core, step in runs.values():
                for _ in range(30):
                    step()
            for _ in range(args.rounds):
                for name, (core, step) in runs.items():
                    calls = (core._one_loop_call, core._fused_call)
                    for c in calls:
                        c.seconds = 0.0
                    c0 = time.process_time()
                    for _ in range(args.steps):
                        step()
                    per = 1e9 / (args.steps * n)
                    best[name][0] = min(best[name][0], (time.process_time() - c0) * per)
                    best[name][1] = min(best[name][1], sum(c.seconds for c in calls) * per)
            one, passes = best["one_loop"], best["passes"]
            cells[f"{n}_{ends}"] = {
                "step_ns": {"one_loop": round(one[0], 1), "passes": round(passes[0], 1)},
                "kernel_ns": {"one_loop": round(one[1], 1), "passes": round(passes[1], 1)},
                "ratio_step": round(passes[0] / one[0], 3),
                "ratio_kernel": round(passes[1] / one[1], 3),
            }
    print(json.dumps({"benchmark": "fused_paths", "rounds": args.rounds, "steps": args.steps,
                      "cells": cells}, indent=2))


if __name__ == "__main__":
    main()
