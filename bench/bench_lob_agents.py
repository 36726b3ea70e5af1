"""Learned agents against the best baseline on the stochastic order book (issue: the order-book
world, "What it must show").

    python bench/bench_lob_agents.py --regimes calm,stressed --algos ppo --steps 1000000
    python bench/bench_lob_agents.py --regimes calm --algos dqn --reuse     # evaluate again

Per regime (preset ``lob:REGIME``), one parent order (``--side``, ``--participation`` of the
volume the market expects over ``--horizon-s``): every baseline of the market and every
trained agent run on the same ``--orders`` market paths (a seed never used in training);
the best baseline is the one with the lowest mean IS; each agent is paired with it: mean IS
difference with its 95 % bootstrap CI, t and Wilcoxon p-values, improvement %, and CVaR95 of
both. The agent's behaviour block (seed 000 §5: aggressive share by tick-flow sign, with a CI;
the action histogram) comes from ``execrl evaluate``'s own tally.

Prints one JSON object (also written to --json-out). Checkpoints go to
--work/<regime>/<algo>.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from execrl.agents.train import TrainRequest, run_training
from execrl.domain import ParentOrder, Side
from execrl.env.factory import EnvConfig, market_for_order
from execrl.evaluate.backtest import run_policies
from execrl.evaluate.stats import is_summary, paired_comparison
from execrl.presets import preset_market


def lob_order(regime: str, side: str, participation: float, horizon_s: float) -> ParentOrder:
    """An order of ``participation`` × the market's expected volume over the horizon."""
    market = preset_market(f"lob:{regime}")
    probe = ParentOrder(order_id="PROBE", symbol="SIM", side=Side(side), qty=1,
                        arrival_px=market.s0, start_ts=0.0, horizon_s=horizon_s)
    volume = float(market_for_order(market, probe).expected_volumes().sum())
    qty = max(100, int(round(participation * volume, -2)))
    return ParentOrder(order_id=f"LOB-{regime}", symbol="SIM", side=Side(side), qty=qty,
                       arrival_px=market.s0, start_ts=0.0, horizon_s=horizon_s)


def train(regime: str, algo: str, order: ParentOrder, args: argparse.Namespace,
          hyperparams: dict[str, Any]) -> dict[str, Any]:
    config = EnvConfig(market=preset_market(f"lob:{regime}"), observations=args.observations,
                       actions=args.actions, reward=args.reward)
    request = TrainRequest(algo=algo, env_name=f"lob:{regime}", env_config=config, order=order,
                           steps=args.steps, seed=args.seed, n_envs=args.n_envs,
                           hyperparams=hyperparams)
    out = args.work / regime / algo
    result = run_training(request, out)
    return {"dir": str(out), "wall_time_s": result["wall_time_s"], "steps": args.steps,
            "observations": args.observations, "actions": args.actions,
            "reward": args.reward, "policy_hash": result["policy_hash"]}


def evaluate(regime: str, order: ParentOrder, agents: dict[str, dict[str, Any]],
             orders: int, seed: int) -> dict[str, Any]:
    market = preset_market(f"lob:{regime}")
    baselines = list(market.baselines)
    specs = baselines + [f"{a}:{info['dir']}" for a, info in agents.items()]
    started = time.perf_counter()
    runs = {r.policy: r for r in run_policies(specs, EnvConfig(market=market), order, orders,
                                                seed)}
    wall = time.perf_counter() - started
    out: dict[str, Any] = {"orders": orders, "eval_seed": seed, "eval_wall_s": wall,
                           "order": order.to_wire(), "policies": {}, "paired": []}
    for name, run in runs.items():
        e = run.episodes
        out["policies"][name] = {
            "is_bps": is_summary(e["is_bps"].to_numpy()),
            "fill_rate": float(e["fill_rate"].mean()),
            "residual_is_bps": float(e["residual_is_bps"].mean()),
            "behaviour": run.behaviour,
            **({"train": agents[name]} if name in agents else {}),
        }
    best = min(baselines, key=lambda b: out["policies"][b]["is_bps"]["mean"])
    out["best_baseline"] = best
    base_is = runs[best].episodes["is_bps"].to_numpy()
    for name in agents:
        cmp = paired_comparison(name, runs[name].episodes["is_bps"].to_numpy(), best, base_is,
                                n_boot=10_000, seed=seed)
        entry = cmp.to_dict()
        entry["cvar95_agent"] = out["policies"][name]["is_bps"]["cvar95"]
        entry["cvar95_baseline"] = out["policies"][best]["is_bps"]["cvar95"]
        entry["cvar95_no_worse"] = entry["cvar95_agent"] <= entry["cvar95_baseline"]
        out["paired"].append(entry)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regimes", default="calm,stressed")
    ap.add_argument("--algos", default="ppo")
    ap.add_argument("--observations", default="seed001")
    ap.add_argument("--actions", default="twap_slices")
    ap.add_argument("--reward", default="is_bps")
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--n-envs", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1, help="training seed")
    ap.add_argument("--eval-seed", type=int, default=20_261_201)
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--side", default="buy", choices=["buy", "sell"])
    ap.add_argument("--participation", type=float, default=0.1)
    ap.add_argument("--horizon-s", type=float, default=300.0)
    ap.add_argument("--hyperparams", default="{}", help='JSON: {"ppo": {...}, ...}')
    ap.add_argument("--work", type=Path, default=Path("bench/results/lob_agents"))
    ap.add_argument("--reuse", action="store_true", help="evaluate existing checkpoints")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    hyper = json.loads(args.hyperparams)
    result: dict[str, Any] = {"bench": "lob_agents", "python": platform.python_version(),
                              "args": {k: str(v) for k, v in vars(args).items()},
                              "regimes": {}}
    for regime in [r for r in args.regimes.split(",") if r]:
        order = lob_order(regime, args.side, args.participation, args.horizon_s)
        agents: dict[str, dict[str, Any]] = {}
        for algo in [a for a in args.algos.split(",") if a]:
            folder = args.work / regime / algo
            if args.reuse:
                cfg = json.loads((folder / "config.json").read_text())
                agents[algo] = {"dir": str(folder), "wall_time_s": cfg["wall_time_s"],
                                "steps": cfg["steps"], "policy_hash": cfg["policy_hash"]}
            else:
                print(f"[{regime}] training {algo} for {args.steps:,} steps on "
                      f"{order.qty:,} shares …", file=sys.stderr, flush=True)
                agents[algo] = train(regime, algo, order, args, hyper.get(algo, {}))
                print(f"  {agents[algo]['wall_time_s']:.0f} s", file=sys.stderr, flush=True)
        print(f"[{regime}] evaluating on {args.orders:,} orders …", file=sys.stderr, flush=True)
        result["regimes"][regime] = evaluate(regime, order, agents, args.orders, args.eval_seed)
    text = json.dumps(result, indent=2, default=lambda v: v.item() if isinstance(
        v, np.generic) else str(v))
    print(text)
    if args.json_out:
        args.json_out.write_text(text)


if __name__ == "__main__":
    main()
