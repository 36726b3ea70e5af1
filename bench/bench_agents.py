"""How close each learned agent gets to the best possible policy (issue: learned agents).

    python bench/bench_agents.py --setting ac-risk --algos ppo,dqn,qtable [--orders 20000]
    python bench/bench_agents.py --setting signal  --algos ppo
    python bench/bench_agents.py --setting seed004 --algos ppo,dqn

Settings (every agent and baseline evaluated on the same --orders market paths, a seed never
used in training; paired statistics):

* ``ac-risk``: the default Almgren–Chriss market (λ = 1e-6), seed 001's risk-adjusted reward.
  The objective J = E[IS] + λ·Σσ²τx_k² (bps) is measured per order; J* is the closed-form AC
  optimum, J_TWAP TWAP's; capture = (J_TWAP − J_agent)/(J_TWAP − J*).
* ``signal``: the market with an observed OU alpha (preset ``ac-signal``, λ = 0, so the
  signal-blind optimum is TWAP). Gain = paired IS saving against TWAP; capture = gain / the
  exact signal-aware optimum's expected gain (backward Riccati recursion).
* ``seed004``: seed 004's own environment parameters (buy 500,000 shares in 20 periods at 150,
  σ = 1.5 % of price per period, η = 5e-4, γ = 5e-5 per share, no spread), its observation and
  action sets and its −IS-per-step reward; the seed's table (mean, std, savings vs TWAP) plus
  paired tests.

Prints one JSON object (also written to --json-out) and a Markdown table per setting.
Trained checkpoints go to --work (default bench/results/agents/<setting>/<algo>).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from execrl.agents.train import TrainRequest, run_training
from execrl.domain import ParentOrder, Side
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, market_for_order
from execrl.evaluate.backtest import run_policies
from execrl.evaluate.stats import paired_comparison
from execrl.presets import preset_market
from execrl.sim.almgren_chriss import ACMarketConfig
from execrl.sim.theory import ac_trajectory, schedule_moments, solve_signal_aware, twap_trajectory

SEED004_ORDER = ParentOrder(
    order_id="SEED004", symbol="AAPL", side=Side.BUY, qty=500_000, arrival_px=150.0,
    start_ts=0.0, horizon_s=20.0,
)
SEED004_MARKET = ACMarketConfig(
    s0=150.0, sigma=0.015 * 150.0, eta=5e-4, gamma=5e-5, epsilon=0.0, horizon=20.0,
    n_steps=20, time_unit_s=1.0, risk_aversion=0.0, adv=500_000 / 20 / 0.1, volume_noise=0.2,
)

# Per setting: market, order, observations, reward, per-algo action set and hyper-parameters.
SETTINGS: dict[str, dict[str, Any]] = {
    "ac-risk": {
        "market": preset_market("ac"), "order": DEFAULT_ORDER, "observations": "seed004",
        "reward": "risk_adjusted", "actions": {"default": "seed004", "ppo": "continuous"},
        "baselines": ["twap", "ac"],
    },
    "signal": {
        "market": preset_market("ac-signal"), "order": DEFAULT_ORDER, "observations": "signal",
        "reward": "risk_adjusted", "actions": {"default": "fine", "ppo": "continuous"},
        "baselines": ["twap", "signal_aware"],
    },
    "seed004": {
        "market": SEED004_MARKET, "order": SEED004_ORDER, "observations": "seed004",
        "reward": "is_bps", "actions": {"default": "seed004"},
        "baselines": ["twap", "vwap", "ac"],
    },
}


def train_agent(setting: str, algo: str, steps: int, seed: int, n_envs: int, work: Path,
                hyperparams: dict[str, Any], reward: str | None = None) -> dict[str, Any]:
    s = SETTINGS[setting]
    actions = s["actions"].get(algo, s["actions"]["default"])
    config = EnvConfig(market=s["market"], observations=s["observations"], actions=actions,
                       reward=reward or s["reward"])
    request = TrainRequest(algo=algo, env_name=setting, env_config=config, order=s["order"],
                           steps=steps, seed=seed, n_envs=n_envs, hyperparams=hyperparams)
    out = work / setting / algo
    result = run_training(request, out)
    return {"dir": str(out), "wall_time_s": result["wall_time_s"], "actions": actions,
            "reward": config.reward, "steps": steps, "policy_hash": result["policy_hash"]}


def evaluate(setting: str, agents: dict[str, dict[str, Any]], orders: int, seed: int) -> dict:
    s = SETTINGS[setting]
    market, order = s["market"], s["order"]
    specs = list(s["baselines"]) + [f"{a}:{info['dir']}" for a, info in agents.items()]
    runs = {r.policy: r for r in run_policies(specs, EnvConfig(market=market), order, orders, seed)}
    m = market_for_order(market, order)
    side = order.side.sign
    out: dict[str, Any] = {"orders": orders, "eval_seed": seed, "policies": {}, "paired": []}
    per_order = {}
    for name, run in runs.items():
        e = run.episodes
        objective = (e["is_bps"] + e["risk_proxy_bps"]).to_numpy()
        per_order[name] = (e["is_bps"].to_numpy(), objective)
        out["policies"][name] = {
            "mean_is_bps": float(e["is_bps"].mean()),
            "std_is_bps": float(e["is_bps"].std(ddof=1)),
            "objective_bps": float(objective.mean()),
            "objective_se_bps": float(objective.std(ddof=1) / math.sqrt(orders)),
            **({"train": agents[name]} if name in agents else {}),
        }
    if setting == "ac-risk":
        lam = m.risk_aversion
        j_star = schedule_moments(m, ac_trajectory(m, order.qty), side)
        j_twap = schedule_moments(m, twap_trajectory(m, order.qty), side)
        js, jt = (mo.objective(lam) / mo.notional * 1e4 for mo in (j_star, j_twap))
        out["theory"] = {"J_star_bps": js, "J_twap_bps": jt}
        for name, pol in out["policies"].items():
            pol["gap_to_optimum_pct"] = (pol["objective_bps"] / js - 1.0) * 100.0
            pol["optimality_capture"] = (jt - pol["objective_bps"]) / (jt - js)
            cmp = paired_comparison(name, per_order[name][1], "ac", per_order["ac"][1],
                                    n_boot=2000, seed=seed)
            out["paired"].append({"metric": "objective_bps", **cmp.to_dict()})
    elif setting == "signal":
        sol = solve_signal_aware(m, order.qty, side)
        out["theory"] = {"expected_gain_bps": sol.expected_gain_bps,
                         "twap_expected_is_bps": schedule_moments(
                             m, twap_trajectory(m, order.qty), side).expected_bps}
        for name in out["policies"]:
            if name == "twap":
                continue
            cmp = paired_comparison(name, per_order[name][0], "twap", per_order["twap"][0],
                                    n_boot=2000, seed=seed)
            gain = -cmp.diff_bps_mean
            out["policies"][name]["gain_vs_twap_bps"] = gain
            out["policies"][name]["gain_ci95"] = [-cmp.ci95[1], -cmp.ci95[0]]
            out["policies"][name]["capture_of_optimal_gain"] = gain / sol.expected_gain_bps
            out["paired"].append({"metric": "is_bps", **cmp.to_dict()})
    else:
        twap_mean = out["policies"]["twap"]["mean_is_bps"]
        for name in out["policies"]:
            out["policies"][name]["savings_vs_twap_bps"] = twap_mean - out["policies"][name][
                "mean_is_bps"]
            if name != "twap":
                cmp = paired_comparison(name, per_order[name][0], "twap", per_order["twap"][0],
                                        n_boot=2000, seed=seed)
                out["paired"].append({"metric": "is_bps", **cmp.to_dict()})
    return out


def markdown(setting: str, result: dict[str, Any]) -> str:
    rows = ["| policy | mean IS | std IS | objective J | extra | train wall s |",
            "| --- | ---: | ---: | ---: | --- | ---: |"]
    for name, p in result["policies"].items():
        extra = ", ".join(f"{k}={v:.3f}" for k, v in p.items()
                          if k in ("gap_to_optimum_pct", "optimality_capture",
                                   "capture_of_optimal_gain", "gain_vs_twap_bps",
                                   "savings_vs_twap_bps"))
        wall = p.get("train", {}).get("wall_time_s")
        rows.append(f"| {name} | {p['mean_is_bps']:.2f} | {p['std_is_bps']:.2f} | "
                    f"{p['objective_bps']:.2f} ± {p['objective_se_bps']:.2f} | {extra} | "
                    f"{'' if wall is None else f'{wall:.0f}'} |")
    return f"### {setting}\n\n" + "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", choices=list(SETTINGS), required=True)
    ap.add_argument("--algos", default="ppo")
    ap.add_argument("--steps", type=int, default=2_000_000, help="env steps per agent")
    ap.add_argument("--steps-per-algo", default="", help="e.g. qtable=5000000,dqn=1000000")
    ap.add_argument("--n-envs", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1, help="training seed")
    ap.add_argument("--eval-seed", type=int, default=20_261_122)
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--hyperparams", default="{}", help='JSON: {"ppo": {...}, ...}')
    ap.add_argument("--reward", default=None,
                    help="training reward (default: the setting's; e.g. expected_cost)")
    ap.add_argument("--work", type=Path, default=Path("bench/results/agents"))
    ap.add_argument("--reuse", action="store_true", help="evaluate existing checkpoints")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    hyper = json.loads(args.hyperparams)
    per_algo = dict(kv.split("=") for kv in args.steps_per_algo.split(",") if kv)
    agents: dict[str, dict[str, Any]] = {}
    for algo in [a for a in args.algos.split(",") if a]:
        steps = int(float(per_algo.get(algo, args.steps)))
        if args.reuse:
            folder = args.work / args.setting / algo
            cfg = json.loads((folder / "config.json").read_text())
            agents[algo] = {"dir": str(folder), "wall_time_s": cfg["wall_time_s"],
                            "actions": cfg["env_config"]["actions"], "steps": cfg["steps"],
                            "policy_hash": cfg["policy_hash"]}
        else:
            print(f"training {algo} for {steps:,} steps …", file=sys.stderr, flush=True)
            agents[algo] = train_agent(args.setting, algo, steps, args.seed, args.n_envs,
                                       args.work, hyper.get(algo, {}), args.reward)
            print(f"  {agents[algo]['wall_time_s']:.0f}s", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = evaluate(args.setting, agents, args.orders, args.eval_seed)
    result.update({"setting": args.setting, "eval_wall_s": time.perf_counter() - started,
                   "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                               "cpu_count": os.cpu_count()},
                   "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    text = json.dumps(result, indent=2, default=lambda v: v.item() if isinstance(v, np.generic)
                      else str(v))
    print(text)
    print(markdown(args.setting, result), file=sys.stderr)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text)


if __name__ == "__main__":
    main()
