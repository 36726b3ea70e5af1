"""PPO training throughput: execrl's batched set-up against Stable-Baselines3's default one,
and what each has learnt when its time is up.

    python bench/bench_ppo.py [--budget 45] [--seed 0] [--orders 2000] [--json-out PATH]
                              [--actions seed004|seed003|continuous] [--equal-steps 500000]

Prints one JSON object on stdout (progress goes to stderr). One process, one core: the thread
pools numpy, numba and torch could use are pinned to one thread before they load, and
``torch.set_num_threads(1)``.

Both variants train SB3's ``PPO`` on the same environment configuration: the default
Almgren–Chriss market, seed004 observations and actions, ``risk_adjusted`` reward
(``EnvConfig(reward="risk_adjusted")``), ``DEFAULT_ORDER``:

* ``batched``: execrl's defaults, i.e. what ``execrl train --algo ppo`` does:
  ``ExecutionSB3VecEnv(256, config)`` (``TrainRequest``'s default n_envs) and
  ``execrl.agents.ppo.PPOParams()`` (n_steps 16, 4 minibatches of 1024, 4 epochs, ReLU, γ 1,
  torch's fused Adam), built by ``build_model``: ``LeanPPO`` (``execrl.agents.ppo_update``:
  SB3's update and rollout with less overhead, the same loss);
* ``batched_previous``: the same set-up trained by SB3's own ``PPO.train`` and
  ``collect_rollouts`` (``build_model(..., lean=False)``: the default before ``LeanPPO``);
* ``sb3_default``: ``make_vec_env(lambda: ExecutionEnv(config), n_envs=8)`` (a
  ``DummyVecEnv`` of gymnasium envs) and ``PPO("MlpPolicy", env)`` with every SB3 default
  (n_steps 2048, batch 64, 10 epochs, tanh, γ 0.99).

Timing: after a warm-up of one full training iteration each (rollout + update; torch and numba
get going there) that is not timed, the variants train in whole iterations (``learn`` of one
rollout's worth at a time, so every timed step includes its share of the update), in turn, so
that each meets the same minutes of a shared machine, until each has had ``--budget``
seconds; env-steps/s = steps of those iterations / their wall time.
``ratio`` = batched / sb3_default (and ``ratio_previous`` = batched_previous / sb3_default),
by wall time and by this process's CPU time (``env_steps_per_cpu_s``: on a machine shared with
other work, waiting for a core counts in the wall time and hits the variants unequally).

Learning: each variant's final policy (warm-up included) is exported to a ``NumpyPolicy`` and
backtested with ``run_policy`` on ``--orders`` orders (same seed, so the same market paths);
mean / std IS and mean episode return (the risk-adjusted objective, higher is better) are
reported, with the Almgren–Chriss schedule (the optimum of that objective) and TWAP for
reference. ``batched_at_equal_steps`` is a fresh batched run stopped at the number of env
steps ``sb3_default`` reached: what the batched defaults learn per sample, not per second.
``equal_steps``: fresh ``batched`` and ``batched_previous`` runs of ``--equal-steps`` env steps
each (same seed), their policies backtested on the same orders, and the paired difference of
episode return (batched − previous) with its bootstrap 95 % CI (``paired_comparison``): the
lean update's learning result against SB3's at an equal number of samples (the two compute the
same update; their runs part only by float rounding, amplified over the run).
Default runtime ≈ 3 × budget + ~60 s + the equal-steps runs (~1 min at 500k).

``--actions`` changes the action set of both (default seed004, as specified). On seed004's
five fractions every variant tends to reach the same best grid schedule, so the learning
comparison says little there; ``--actions continuous`` (a Gaussian policy, much harder to fit)
separates them.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

from execrl.agents.export import NumpyPolicy  # noqa: E402
from execrl.agents.ppo import PPOParams, build_model, export_policy  # noqa: E402
from execrl.env.execution_env import ExecutionEnv  # noqa: E402
from execrl.env.factory import DEFAULT_ORDER, EnvConfig  # noqa: E402
from execrl.env.sb3 import ExecutionSB3VecEnv  # noqa: E402
from execrl.evaluate.backtest import policy_context, run_policy  # noqa: E402
from execrl.evaluate.stats import paired_comparison  # noqa: E402
from execrl.policies.baselines import make_baseline  # noqa: E402

BATCHED_N_ENVS = 256  # TrainRequest's default
SB3_N_ENVS = 8


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rollout_size(model: PPO) -> int:
    return int(model.n_steps) * int(model.n_envs)


def timed_trainings(models: dict[str, PPO], budget_s: float) -> dict[str, dict[str, Any]]:
    """One untimed warm-up iteration each, then whole iterations of the models in turn (so
    every variant meets the machine's load of the same minutes) until each has trained for
    ``budget_s`` seconds of its own."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        started = time.perf_counter()
        model.learn(rollout_size(model), reset_num_timesteps=True)
        out[name] = {"warmup_s": round(time.perf_counter() - started, 3), "wall": 0.0,
                     "cpu": 0.0, "iterations": 0, "steps0": model.num_timesteps}
    while any(row["wall"] < budget_s for row in out.values()):
        for name, model in models.items():
            row = out[name]
            if row["wall"] >= budget_s:
                continue
            started, cpu = time.perf_counter(), time.process_time()
            model.learn(rollout_size(model), reset_num_timesteps=False)
            row["wall"] += time.perf_counter() - started
            row["cpu"] += time.process_time() - cpu
            row["iterations"] += 1
    result = {}
    for name, model in models.items():
        row = out[name]
        steps = model.num_timesteps - row["steps0"]
        result[name] = {
            "warmup_s": row["warmup_s"],
            "timed_iterations": row["iterations"],
            "timed_env_steps": int(steps),
            "timed_wall_s": round(row["wall"], 3),
            "env_steps_per_s": round(steps / row["wall"], 1),
            # CPU seconds of this process: on a shared machine the wall time also counts
            # waiting for a core, which hits the variants unequally
            "timed_cpu_s": round(row["cpu"], 3),
            "env_steps_per_cpu_s": round(steps / row["cpu"], 1),
            "total_env_steps": int(model.num_timesteps),
            "rollout_size": rollout_size(model),
        }
    return result


#: each evaluated policy's per-order episode returns, for the paired comparisons
RETURNS: dict[str, np.ndarray] = {}


def evaluate(policy: Any, config: EnvConfig, orders: int, seed: int) -> dict[str, float]:
    episodes = run_policy(policy, config, DEFAULT_ORDER, orders, seed).episodes
    is_bps = episodes["is_bps"].to_numpy()
    RETURNS[policy.name] = episodes["return"].to_numpy()
    return {
        "is_bps_mean": round(float(is_bps.mean()), 3),
        "is_bps_std": round(float(is_bps.std(ddof=1)), 3),
        "is_bps_p95": round(float(np.percentile(is_bps, 95)), 3),
        "return_mean": round(float(episodes["return"].mean()), 3),
    }


def paired_return(a: str, b: str) -> dict[str, Any]:
    """Episode return of policy ``a`` minus ``b``, order by order (same market paths): mean,
    bootstrap 95 % CI, p-values (``paired_comparison``; + = ``a`` better)."""
    cmp = paired_comparison(a, RETURNS[a], b, RETURNS[b])
    return {
        "policy": a, "baseline": b, "n": cmp.n,
        "return_diff_mean": round(cmp.diff_bps_mean, 4),
        "return_diff_std": round(cmp.diff_bps_std, 4),
        "ci95": [round(cmp.ci95[0], 4), round(cmp.ci95[1], 4)],
        "t_pvalue": round(cmp.t_pvalue, 4),
        "wilcoxon_pvalue": round(cmp.wilcoxon_pvalue, 4),
    }


def export(model: PPO, name: str, config: EnvConfig) -> NumpyPolicy:
    env = ExecutionEnv(config)
    return export_policy(model, name, env.core.observations, env.core.action_set.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=45.0, help="timed seconds per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orders", type=int, default=2000, help="backtest orders per policy")
    parser.add_argument("--json-out", default=None)
    parser.add_argument(
        "--actions", default="seed004", choices=("seed004", "seed003", "continuous")
    )
    parser.add_argument("--equal-steps", type=int, default=500_000,
                        help="env steps of the batched vs batched_previous learning comparison")
    args = parser.parse_args()
    th.set_num_threads(1)
    # default AC market, seed004 observations (and actions unless --actions says otherwise)
    config = EnvConfig(reward="risk_adjusted", actions=args.actions)

    params = PPOParams()
    vec_env = ExecutionSB3VecEnv(BATCHED_N_ENVS, config, DEFAULT_ORDER)
    vec_env.seed(args.seed)
    batched = build_model("ppo", params, vec_env, args.seed)
    previous_params = PPOParams()
    vec_env_p = ExecutionSB3VecEnv(BATCHED_N_ENVS, config, DEFAULT_ORDER)
    vec_env_p.seed(args.seed)
    previous = build_model("ppo", previous_params, vec_env_p, args.seed, lean=False)
    sb3_env = make_vec_env(lambda: ExecutionEnv(config), n_envs=SB3_N_ENVS, seed=args.seed)
    sb3 = PPO("MlpPolicy", sb3_env, seed=args.seed, device="cpu", verbose=0)
    log(f"training batched ({BATCHED_N_ENVS} envs, execrl defaults, {type(batched).__name__}), "
        f"batched_previous (SB3's PPO.train) and sb3_default (DummyVecEnv of {SB3_N_ENVS}, SB3 "
        f"defaults) in turn, {args.budget:.0f} s each")
    runs = timed_trainings({"batched": batched, "previous": previous, "sb3": sb3}, args.budget)
    batched_run, previous_run, sb3_run = runs["batched"], runs["previous"], runs["sb3"]
    batched_eval = evaluate(export(batched, "batched", config), config, args.orders, args.seed)
    previous_eval = evaluate(export(previous, "batched_previous", config), config,
                             args.orders, args.seed)
    sb3_eval = evaluate(export(sb3, "sb3_default", config), config, args.orders, args.seed)
    for name, run, ev in (("batched", batched_run, batched_eval),
                          ("batched_previous", previous_run, previous_eval),
                          ("sb3_default", sb3_run, sb3_eval)):
        log(f"  {name}: {run['env_steps_per_s']:.0f} env-steps/s, {ev}")

    log(f"batched_at_equal_steps: {sb3.num_timesteps} env steps")
    vec_env2 = ExecutionSB3VecEnv(BATCHED_N_ENVS, config, DEFAULT_ORDER)
    vec_env2.seed(args.seed)
    equal = build_model("ppo", params, vec_env2, args.seed)
    started = time.perf_counter()
    equal.learn(int(sb3.num_timesteps))
    equal_wall = time.perf_counter() - started
    equal_eval = evaluate(export(equal, "batched_eq", config), config, args.orders, args.seed)

    log(f"equal_steps: batched and batched_previous, {args.equal_steps:,} env steps each")
    equal_runs: dict[str, dict[str, Any]] = {}
    for name, lean in (("batched_equal", True), ("previous_equal", False)):
        env_eq = ExecutionSB3VecEnv(BATCHED_N_ENVS, config, DEFAULT_ORDER)
        env_eq.seed(args.seed)
        model = build_model("ppo", params, env_eq, args.seed, lean=lean)
        started, cpu = time.perf_counter(), time.process_time()
        model.learn(args.equal_steps)
        equal_runs[name] = {
            "class": type(model).__name__,
            "env_steps": int(model.num_timesteps),
            "wall_s": round(time.perf_counter() - started, 3),
            "cpu_s": round(time.process_time() - cpu, 3),
            "eval": evaluate(export(model, name, config), config, args.orders, args.seed),
        }
    equal_runs["return_diff"] = paired_return("batched_equal", "previous_equal")
    equal_runs["speed_ratio_cpu"] = round(
        equal_runs["previous_equal"]["cpu_s"] / equal_runs["batched_equal"]["cpu_s"], 3)

    ctx = policy_context(config, DEFAULT_ORDER)
    reference = {  # baselines speak the continuous set; run_policy builds the env to match
        name: evaluate(make_baseline(name, ctx), config, args.orders, args.seed)
        for name in ("ac", "twap")
    }
    result = {
        "benchmark": "ppo_training_throughput",
        "env": {
            "market": "almgren_chriss (defaults)",
            "observations": "seed004",
            "actions": args.actions,
            "reward": "risk_adjusted",
        },
        "budget_s": args.budget,
        "seed": args.seed,
        "orders": args.orders,
        "torch_threads": th.get_num_threads(),
        "batched": {
            "set_up": f"ExecutionSB3VecEnv({BATCHED_N_ENVS}) + execrl PPOParams() defaults",
            "class": type(batched).__name__,
            "n_envs": BATCHED_N_ENVS,
            "hyperparams": params.resolved(BATCHED_N_ENVS, args.actions != "continuous"),
            **batched_run,
            "eval": batched_eval,
        },
        "batched_previous": {
            "set_up": f"ExecutionSB3VecEnv({BATCHED_N_ENVS}) + PPOParams(), SB3's own "
                      "PPO.train / collect_rollouts (the set-up before LeanPPO)",
            "hyperparams": previous_params.resolved(BATCHED_N_ENVS, args.actions != "continuous"),
            **previous_run,
            "eval": previous_eval,
        },
        "sb3_default": {
            "set_up": f"make_vec_env(ExecutionEnv, n_envs={SB3_N_ENVS}) + PPO defaults",
            "n_envs": SB3_N_ENVS,
            **sb3_run,
            "eval": sb3_eval,
        },
        "ratio_env_steps_per_s": round(
            batched_run["env_steps_per_s"] / sb3_run["env_steps_per_s"], 2
        ),
        "ratio_env_steps_per_cpu_s": round(
            batched_run["env_steps_per_cpu_s"] / sb3_run["env_steps_per_cpu_s"], 2
        ),
        "ratio_previous_env_steps_per_s": round(
            previous_run["env_steps_per_s"] / sb3_run["env_steps_per_s"], 2
        ),
        "ratio_previous_env_steps_per_cpu_s": round(
            previous_run["env_steps_per_cpu_s"] / sb3_run["env_steps_per_cpu_s"], 2
        ),
        "return_diff_batched_vs_previous_at_budget": paired_return("batched",
                                                                   "batched_previous"),
        "equal_steps": equal_runs,
        "batched_at_equal_steps": {
            "env_steps": int(equal.num_timesteps),
            "wall_s": round(equal_wall, 3),
            "eval": equal_eval,
        },
        "reference": reference,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": th.__version__,
            "numpy": np.__version__,
        },
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
