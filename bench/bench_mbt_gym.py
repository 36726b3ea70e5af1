"""execrl's batched execution core against mbt_gym's vectorised execution environment with its
Cartea–Jaimungal agent, in one run, cell by cell and alternately.

    MBT_GYM_PATH=/path/to/mbt_gym MBT_GYM_PYTHON=/path/to/venv/bin/python \\
        python bench/bench_mbt_gym.py [--seconds 3] [--rounds 3] [--json-out PATH]

mbt_gym (github.com/JJJerome/mbt_gym) is not a dependency and nothing of it is in this
repository: ``MBT_GYM_PATH`` names a checkout and ``MBT_GYM_PYTHON`` the Python of a virtual
environment where its requirements are installed (numpy, scipy, gym, torch). Without them the
script prints ``{"skipped": "..."}`` saying what is missing, and exits 0.

Cells: 1,000 and 10,000 environments, synchronous and random episode ends. Each round runs
every cell's mbt_gym side (a child process in mbt_gym's venv, this process group) and then its
execrl side (this process), ``--seconds`` each after a warm-up; figures are medians over
``--rounds`` rounds. One core each (thread pools pinned to 1), env-steps = environments x
steps, decisions included; rates by wall time and by each side's CPU time.

* mbt_gym: ``TradingEnvironment`` with ``TradinghWithSpeedModelDynamics``
  (``BrownianMotionMidpriceModel`` + ``TemporaryAndPermanentPriceImpact``), the
  ``CjOeCriterion`` reward and ``CarteaJaimungalOeAgent`` (its closed-form optimal-execution
  speed), 10 steps, raw (unnormalised) observations and actions as the agent needs; reset when
  the episode ends. Its trajectories share one clock, so they always end together: mbt_gym has
  no random-ends mode and its figure is the same run in both columns.
* execrl, synchronous ends: ``BatchedExecution`` (``make_execution``, autoreset) on the
  default Almgren–Chriss market and order (10 steps), the Almgren–Chriss baseline policy
  (``make_baseline("ac")``, its closed-form schedule) deciding from each observation.
* execrl, random ends: the same core with seed 003's action set, whose "all" action ends an
  episode at once; actions uniform over the set, drawn before timing (as bench_env.py), so
  episodes end at random steps and the partial autoreset runs.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _output import emit  # noqa: E402  (bench/ is first on the path)

SIZES = (1_000, 10_000)
ENDS = ("synchronous", "random")
N_STEPS = 10

# Run by mbt_gym's own interpreter: argv = checkout, n_envs, seconds; prints one JSON line.
MBT_WORKER = r'''
import json, os, sys, time, warnings
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(v, "1")
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
import numpy as np
import torch
torch.set_num_threads(1)
from mbt_gym.agents.BaselineAgents import CarteaJaimungalOeAgent
from mbt_gym.gym.ModelDynamics import TradinghWithSpeedModelDynamics
from mbt_gym.gym.TradingEnvironment import TradingEnvironment
from mbt_gym.rewards.RewardFunctions import CjOeCriterion
from mbt_gym.stochastic_processes.midprice_models import BrownianMotionMidpriceModel
from mbt_gym.stochastic_processes.price_impact_models import TemporaryAndPermanentPriceImpact

n, seconds, n_steps = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
T = 1.0
dt = T / n_steps
midprice = BrownianMotionMidpriceModel(volatility=1.0, initial_price=100.0, terminal_time=T,
                                       step_size=dt, num_trajectories=n, seed=1)
impact = TemporaryAndPermanentPriceImpact(temporary_impact_coefficient=0.01,
                                          permanent_impact_coefficient=0.001, n_steps=n_steps,
                                          terminal_time=T, num_trajectories=n)
dynamics = TradinghWithSpeedModelDynamics(midprice_model=midprice, price_impact_model=impact,
                                          num_trajectories=n)
env = TradingEnvironment(terminal_time=T, n_steps=n_steps, model_dynamics=dynamics,
                         reward_function=CjOeCriterion(per_step_inventory_aversion=0.01,
                                                       terminal_time=T),
                         initial_inventory=10, max_inventory=100, num_trajectories=n,
                         normalise_action_space=False, normalise_observation_space=False, seed=1)
agent = CarteaJaimungalOeAgent(phi=0.01, alpha=0.1, env=env)

def run(limit):
    obs = env.reset()
    steps = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while True:
        obs, reward, done, info = env.step(agent.get_action(obs))
        steps += 1
        if done[0]:
            obs = env.reset()
        now = time.perf_counter()
        if now - t0 >= limit:
            return steps, now - t0, time.process_time() - c0

run(0.3)
steps, wall, cpu = run(seconds)
print(json.dumps({"env_steps": steps * n, "seconds": wall, "env_steps_per_s": steps * n / wall,
                  "env_steps_per_cpu_s": steps * n / cpu}))
'''


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def mbt_gym_setup() -> tuple[str, str] | str:
    """(checkout, python) from the environment, or why the comparison cannot run."""
    path, python = os.environ.get("MBT_GYM_PATH"), os.environ.get("MBT_GYM_PYTHON")
    if not path:
        return "MBT_GYM_PATH is not set: point it at a checkout of github.com/JJJerome/mbt_gym"
    if not (Path(path) / "mbt_gym" / "gym" / "TradingEnvironment.py").is_file():
        return f"MBT_GYM_PATH = {path!r} is not an mbt_gym checkout (no mbt_gym/gym/)"
    if not python:
        return ("MBT_GYM_PYTHON is not set: point it at the python of a venv with mbt_gym's "
                "requirements (numpy, scipy, gym, torch)")
    if not Path(python).is_file():
        return f"MBT_GYM_PYTHON = {python!r} does not exist"
    return path, python


def run_mbt_gym(path: str, python: str, n: int, seconds: float) -> dict:
    done = subprocess.run([python, "-c", MBT_WORKER, path, str(n), str(seconds), str(N_STEPS)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the mbt_gym worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def execrl_stepper(n: int, ends: str):
    """A function that does one decision and one step of ``n`` envs."""
    from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution
    from execrl.evaluate.backtest import policy_context
    from execrl.policies.baselines import make_baseline

    if ends == "synchronous":
        policy = make_baseline("ac", policy_context(EnvConfig(), DEFAULT_ORDER))
        config = EnvConfig(observations=tuple(policy.observations), actions="continuous")
        core = make_execution(config, DEFAULT_ORDER, n_envs=n, autoreset=True)
        state = {"obs": core.reset(seed=0)}

        def step() -> None:
            state["obs"] = core.step(policy.act(state["obs"]))[0]
    else:
        core = make_execution(EnvConfig(actions="seed003"), DEFAULT_ORDER, n_envs=n,
                              autoreset=True)
        core.reset(seed=0)
        actions = np.random.default_rng(12345).integers(0, 5, size=(64, n))
        it = iter(range(10**12))

        def step() -> None:
            core.step(actions[next(it) % 64])
    return step


def run_execrl(n: int, ends: str, seconds: float) -> dict:
    step = execrl_stepper(n, ends)
    t_end = time.perf_counter() + 0.3
    while time.perf_counter() < t_end:
        step()
    steps = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while True:
        step()
        steps += 1
        now = time.perf_counter()
        if now - t0 >= seconds:
            break
    wall, cpu = now - t0, time.process_time() - c0
    return {"env_steps": steps * n, "seconds": wall, "env_steps_per_s": steps * n / wall,
            "env_steps_per_cpu_s": steps * n / cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    setup = mbt_gym_setup()
    if isinstance(setup, str):
        print(json.dumps({"benchmark": "env_core_vs_mbt_gym", "skipped": setup}))
        return
    path, python = setup
    samples: dict[str, dict[str, list[float]]] = {}
    for r in range(args.rounds):
        for n in SIZES:
            mbt = run_mbt_gym(path, python, n, args.seconds)
            for ends in ENDS:
                cell = f"{n}_{ends}"
                ours = run_execrl(n, ends, args.seconds)
                got = samples.setdefault(cell, {k: [] for k in ("execrl", "mbt_gym",
                                                                 "execrl_cpu", "mbt_gym_cpu")})
                got["execrl"].append(ours["env_steps_per_s"])
                got["mbt_gym"].append(mbt["env_steps_per_s"])
                got["execrl_cpu"].append(ours["env_steps_per_cpu_s"])
                got["mbt_gym_cpu"].append(mbt["env_steps_per_cpu_s"])
                log(f"round {r} {cell:>18}: execrl {ours['env_steps_per_s']:>12,.0f}  mbt_gym "
                    f"{mbt['env_steps_per_s']:>12,.0f}  ratio "
                    f"{ours['env_steps_per_s'] / mbt['env_steps_per_s']:.2f} (CPU time: "
                    f"{ours['env_steps_per_cpu_s'] / mbt['env_steps_per_cpu_s']:.2f})")
    cells = {}
    for cell, got in samples.items():
        med = {k: statistics.median(v) for k, v in got.items()}
        cells[cell] = {"execrl_env_steps_per_s": med["execrl"],
                       "mbt_gym_env_steps_per_s": med["mbt_gym"],
                       "ratio": med["execrl"] / med["mbt_gym"],
                       "execrl_env_steps_per_cpu_s": med["execrl_cpu"],
                       "mbt_gym_env_steps_per_cpu_s": med["mbt_gym_cpu"],
                       "ratio_cpu": med["execrl_cpu"] / med["mbt_gym_cpu"],
                       "samples": got}
    commit = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    out = {
        "benchmark": "env_core_vs_mbt_gym",
        "cells": cells,
        "ratios": {cell: round(v["ratio"], 2) for cell, v in cells.items()},
        # by each side's own CPU seconds: on a shared machine, waiting for a core is in the
        # wall time and hits the two sides unequally
        "ratios_cpu": {cell: round(v["ratio_cpu"], 2) for cell, v in cells.items()},
        "seconds": args.seconds,
        "rounds": args.rounds,
        "n_steps": N_STEPS,
        "mbt_gym": {"path": path, "commit": commit, "python": python},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "numpy": np.__version__},
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    emit(out, args.json_out)


if __name__ == "__main__":
    main()
