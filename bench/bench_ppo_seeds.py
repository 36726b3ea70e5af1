"""LeanPPO's learning result against SB3's own PPO.train over training seeds, at equal steps.

    python bench/bench_ppo_seeds.py [--steps 500000] [--seeds 1,2,3,4] [--orders 2000]
                                    [--actions continuous]

For each training seed: ``build_model`` with ``lean=True`` (LeanPPO) and ``lean=False``
(SB3's ``PPO.train`` / ``collect_rollouts``), the same ``PPOParams()`` defaults, 256 envs,
``--steps`` env steps each; both policies backtested on the same ``--orders`` orders (eval
seed 0). Prints JSON: each run's mean episode return and CPU seconds, the paired difference
(lean − SB3, order by order, bootstrap 95 % CI) per seed, and the mean / sd of the per-seed
differences (the training noise a single seed's paired CI does not include).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch as th  # noqa: E402

from execrl.agents.ppo import PPOParams, build_model, export_policy  # noqa: E402
from execrl.env.execution_env import ExecutionEnv  # noqa: E402
from execrl.env.factory import DEFAULT_ORDER, EnvConfig  # noqa: E402
from execrl.env.sb3 import ExecutionSB3VecEnv  # noqa: E402
from execrl.evaluate.backtest import run_policy  # noqa: E402
from execrl.evaluate.stats import paired_comparison  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--actions", default="continuous",
                        choices=("seed004", "seed003", "continuous"))
    args = parser.parse_args()
    th.set_num_threads(1)
    config = EnvConfig(reward="risk_adjusted", actions=args.actions)
    core = ExecutionEnv(config).core
    seeds = [int(s) for s in args.seeds.split(",")]
    returns: dict[tuple[int, bool], np.ndarray] = {}
    runs = []
    for seed in seeds:
        for lean in (True, False):
            env = ExecutionSB3VecEnv(256, config, DEFAULT_ORDER)
            env.seed(seed)
            model = build_model("ppo", PPOParams(), env, seed, lean=lean)
            cpu = time.process_time()
            model.learn(args.steps)
            cpu = time.process_time() - cpu
            policy = export_policy(model, "ppo", core.observations, core.action_set.name)
            episodes = run_policy(policy, config, DEFAULT_ORDER, args.orders, 0).episodes
            returns[(seed, lean)] = episodes["return"].to_numpy()
            runs.append({"seed": seed, "class": type(model).__name__, "cpu_s": round(cpu, 2),
                         "return_mean": round(float(returns[(seed, lean)].mean()), 3)})
    per_seed = {}
    for seed in seeds:
        cmp = paired_comparison("lean", returns[(seed, True)], "sb3", returns[(seed, False)])
        per_seed[str(seed)] = {"return_diff_mean": round(cmp.diff_bps_mean, 3),
                               "ci95": [round(c, 3) for c in cmp.ci95]}
    diffs = np.array([per_seed[str(s)]["return_diff_mean"] for s in seeds])
    print(json.dumps({
        "benchmark": "ppo_lean_vs_sb3_over_seeds", "actions": args.actions,
        "steps": args.steps, "orders": args.orders, "runs": runs,
        "lean_minus_sb3": per_seed,
        "diff_mean_over_seeds": round(float(diffs.mean()), 3),
        "diff_sd_over_seeds": round(float(diffs.std(ddof=1)), 3) if len(seeds) > 1 else None,
    }, indent=2))


if __name__ == "__main__":
    main()
