"""Fixed vs online observation normalisation on the order book: the same PPO, seed, budget and
market trained twice (``--normalise fixed`` / ``online``), each greedy policy then run on the
same orders (common random numbers), paired. Prints JSON: mean IS of each, the paired
difference (online - fixed) with its standard error, and the wall time.

    PYTHONPATH=src nice -n 10 python bench/bench_normalise.py --algo maskable-ppo \\
        --actions seed004 --steps 30000 --orders 1000 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from execrl.agents.checkpoint import greedy_rollout
from execrl.agents.export import NumpyPolicy
from execrl.agents.train import TrainRequest, run_training
from execrl.env.factory import EnvConfig, make_execution


def _twap_is(request: TrainRequest, n_orders: int, seed: int) -> np.ndarray:
    """TWAP (market orders, equal slices) on the same orders: the reference."""
    core = make_execution(EnvConfig(market=request.env_config.market, actions="continuous"),
                          request.order, n_envs=n_orders, autoreset=False)
    core.reset(seed=seed)
    while not core.done.all():
        core.step((1.0 / np.maximum(core.n_steps - core.k, 1)).reshape(-1, 1))
    return core.stats.is_bps.copy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="lob")
    ap.add_argument("--algo", default="ppo")
    ap.add_argument("--observations", default="seed001")
    ap.add_argument("--actions", default="continuous")
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--n-envs", type=int, default=128)
    ap.add_argument("--orders", type=int, default=2_000)
    ap.add_argument("--seeds", default="0")
    args = ap.parse_args()
    out: dict = {"args": vars(args), "runs": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        is_bps = {}
        for mode in ("fixed", "online"):
            started = time.perf_counter()
            request = TrainRequest.with_defaults(
                args.algo, env_name=args.env, observations=args.observations,
                actions=args.actions, steps=args.steps, n_envs=args.n_envs, seed=seed,
                normalise=mode)
            folder = Path(tempfile.mkdtemp()) / "ck"
            run_training(request, folder)
            policy = NumpyPolicy.load(folder, checkpoint=True)
            config = EnvConfig(market=request.env_config.market, actions=args.actions,
                               reward=request.env_config.reward)
            core = greedy_rollout(policy, config, request.order, args.orders, seed=10_000)
            is_bps[mode] = core.stats.is_bps.copy()
            out.setdefault("wall_s", {})[f"{mode}/{seed}"] = time.perf_counter() - started
        diff = is_bps["online"] - is_bps["fixed"]
        if "twap_is_bps" not in out:
            out["twap_is_bps"] = float(_twap_is(request, args.orders, 10_000).mean())
        out["runs"].append({
            "seed": seed,
            "mean_is_bps_fixed": float(is_bps["fixed"].mean()),
            "mean_is_bps_online": float(is_bps["online"].mean()),
            "paired_diff_bps": float(diff.mean()),
            "paired_diff_se_bps": float(diff.std(ddof=1) / np.sqrt(diff.size)),
        })
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
