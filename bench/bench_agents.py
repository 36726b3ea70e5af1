"""How close each learned agent gets to the best possible policy, over several training seeds
(issue 12).

    nice -n 10 python bench/bench_agents.py --setting signal --algos ppo,dqn,qtable \
        --seeds 1,2,3,4,5 --orders 20000 --json-out bench/measured/signal.json
    nice -n 10 python bench/bench_agents.py --setting seed004 --algos qtable,dqn,ppo \
        --reward expected_cost --seeds 1,2,3,4,5 --json-out bench/measured/seed004.json

Reward shaping by TWAP's cost-to-go (``execrl.agents.shaping``; the named configurations
``shaped`` / ``signal``) is what lets the value learners reach the optimum here:

    nice -n 10 python bench/bench_agents.py --setting signal --algos qtable --seeds 1,2,3,4,5 \
        --steps-per-algo qtable=10000000 --hyperparams \
        '{"qtable": {"state": {"imbalance_buckets": 11}, "q_learning": {"shaping": "twap"}}}'
    nice -n 10 python bench/bench_agents.py --setting seed004 --algos qtable \
        --reward expected_cost --seeds 1,2,3,4,5 \
        --hyperparams '{"qtable": {"q_learning": {"shaping": "twap"}}}'

Every agent is trained with the request ``execrl train`` builds (``TrainRequest.with_defaults``:
the algorithm's defaults) on the setting's market, order, observations and action set, with
``--steps-per-algo``, ``--actions-per-algo``, ``--n-envs`` and ``--hyperparams`` overriding;
once per training seed (``--seeds``). Each trained policy and the references run the same
``--orders`` market paths (``--eval-seed``, never a training seed), paired.

Settings:

* ``signal``: the market with an observed OU alpha (preset ``ac-signal``, λ = 0, so the
  signal-blind optimum is TWAP), ``signal`` observations. Gain = paired IS saving against
  TWAP; capture = gain / the exact signal-aware optimum's expected gain (backward Riccati
  recursion, ``solve_signal_aware``). References: the exact optimum (its trades clipped to
  the order's side, as ``signal_aware``) and the exact optimum rounded to each discrete
  action set an agent uses (``signal_aware@SET``: the nearest fraction of the set), which
  bounds what an agent on that set can capture.
* ``seed004``: seed 004's environment parameters (buy 500,000 shares in 20 periods at 150,
  σ = 1.5 % of price per period, η = 5e-4, γ = 5e-5 per share, no spread, no drift), its
  observation and action sets and, by default, its −IS-per-step reward (``--reward
  expected_cost`` removes the price innovation from each step: the same optimum, less noise).
  Linear impact and no drift make TWAP the optimum in expectation: E[IS] =
  (η − γ/2)·Σn_k² + γX²/2 (+ rounding), minimised by equal slices. References: TWAP (exact),
  the seed's "TWAP" (the nearest seed004 action each period), VWAP, and ``best_seed004``, the
  schedule of seed004 fractions that minimises Σn_k² (dynamic programme below): the best any
  agent on the seed's actions can do in expectation. The seed's table: mean IS, std, savings
  against TWAP, with paired CIs.
* ``ac-risk``: the default Almgren–Chriss market (λ = 1e-6): see bench_defaults.py, which
  measures `execrl train --algo X` there; kept here for other action sets and rewards.

Prints one JSON object (also written to --json-out) and a Markdown table on stderr.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from execrl.agents.export import NumpyPolicy  # noqa: E402
from execrl.agents.train import TrainRequest, run_training  # noqa: E402
from execrl.domain import ParentOrder, Side  # noqa: E402
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, market_for_order  # noqa: E402
from execrl.env.spaces import resolve_action_set  # noqa: E402
from execrl.evaluate.backtest import policy_context, run_policy  # noqa: E402
from execrl.evaluate.stats import paired_comparison  # noqa: E402
from execrl.policies.base import FeatureIndex  # noqa: E402
from execrl.policies.baselines import make_baseline  # noqa: E402
from execrl.presets import preset_market  # noqa: E402
from execrl.sim.almgren_chriss import ACMarketConfig  # noqa: E402
from execrl.sim.theory import (  # noqa: E402
    ac_trajectory,
    schedule_moments,
    solve_signal_aware,
    twap_trajectory,
)

SEED004_ORDER = ParentOrder(
    order_id="SEED004", symbol="AAPL", side=Side.BUY, qty=500_000, arrival_px=150.0,
    start_ts=0.0, horizon_s=20.0,
)
SEED004_MARKET = ACMarketConfig(
    s0=150.0, sigma=0.015 * 150.0, eta=5e-4, gamma=5e-5, epsilon=0.0, horizon=20.0,
    n_steps=20, time_unit_s=1.0, risk_aversion=0.0, adv=500_000 / 20 / 0.1, volume_noise=0.2,
)

SETTINGS: dict[str, dict[str, Any]] = {
    "ac-risk": {"market": preset_market("ac"), "order": DEFAULT_ORDER,
                "observations": "seed004", "reward": None, "actions": {}},
    "signal": {"market": preset_market("ac-signal"), "order": DEFAULT_ORDER,
               "observations": "signal", "reward": None,
               "actions": {"dqn": "fine", "qrdqn": "fine", "qtable": "fine",
                           "maskable-ppo": "fine"}},
    "seed004": {"market": SEED004_MARKET, "order": SEED004_ORDER, "observations": "seed004",
                "reward": "is_bps",
                "actions": {a: "seed004" for a in ("ppo", "dqn", "qrdqn", "qtable",
                                                    "maskable-ppo")}},
}


# -- reference policies ------------------------------------------------------------------------
class RoundedTo:
    """Another policy's fraction of the remaining quantity, rounded to the nearest fraction of
    a discrete action set (ties to the lower index): what that set can express of it."""

    def __init__(self, inner: Any, action_set: str):
        self.inner, self.action_set = inner, action_set
        self.name = f"{inner.name}@{action_set}"
        self.observations = tuple(inner.observations)
        self.fractions = np.asarray(resolve_action_set(action_set).fractions)

    def act(self, obs: NDArray, masks: NDArray | None = None) -> NDArray:
        frac = np.asarray(self.inner.act(obs, None), dtype=np.float64).reshape(len(obs))
        dist = np.abs(frac[:, None] - self.fractions[None, :])
        if masks is not None:
            dist = np.where(masks, dist, np.inf)
        return dist.argmin(axis=1)


class StepSchedule:
    """A fixed action index per decision step (discrete action set)."""

    observations = ("remaining_ratio", "elapsed_ratio")

    def __init__(self, name: str, action_set: str, actions: NDArray[np.int64]):
        self.name, self.action_set = name, action_set
        self.actions = np.asarray(actions, dtype=np.int64)
        self._idx = FeatureIndex(self.observations)

    def act(self, obs: NDArray, masks: NDArray | None = None) -> NDArray:
        k = np.rint(self._idx(obs, "elapsed_ratio") * len(self.actions)).astype(np.intp)
        return self.actions[np.clip(k, 0, len(self.actions) - 1)]


def best_fraction_schedule(fractions: NDArray, n_steps: int) -> tuple[NDArray, float]:
    """The per-step fractions of the remaining quantity minimising Σ n_k² (the last step sells
    all): V_k(R) = R²·c_k, c_{N−1} = 1, c_k = min_f f² + (1 − f)²·c_{k+1}. Returns the action
    indices and c_0 (TWAP's is 1/N)."""
    c = 1.0
    choice = np.zeros(n_steps, dtype=np.int64)
    choice[-1] = int(np.argmax(fractions))  # any: the horizon forces the remainder
    for k in range(n_steps - 2, -1, -1):
        values = fractions**2 + (1.0 - fractions) ** 2 * c
        choice[k] = int(np.argmin(values))
        c = float(values[choice[k]])
    return choice, c


def references(setting: str, agent_sets: set[str]) -> dict[str, Any]:
    s = SETTINGS[setting]
    ctx = policy_context(EnvConfig(market=s["market"]), s["order"])
    refs: dict[str, Any] = {"twap": make_baseline("twap", ctx)}
    if setting == "signal":
        exact = make_baseline("signal_aware", ctx)
        refs["signal_aware"] = exact
        for name in sorted(agent_sets - {"continuous"}):
            refs[f"signal_aware@{name}"] = RoundedTo(exact, name)
    elif setting == "seed004":
        refs["twap_seed004_nearest"] = RoundedTo(make_baseline("twap", ctx), "seed004")
        refs["vwap"] = make_baseline("vwap", ctx)
        fractions = np.asarray(resolve_action_set("seed004").fractions)
        choice, _ = best_fraction_schedule(fractions, s["market"].n_steps)
        refs["best_seed004"] = StepSchedule("best_seed004", "seed004", choice)
    else:
        refs["ac"] = make_baseline("ac", ctx)
    return refs


# -- training and evaluation ---------------------------------------------------------------------
def train_agent(setting: str, algo: str, seed: int, args: argparse.Namespace,
                steps: int | None, actions: str | None, hyper: dict | None) -> dict[str, Any]:
    s = SETTINGS[setting]
    request = TrainRequest.with_defaults(
        algo, env_name=setting, market=s["market"], order=s["order"],
        observations=s["observations"], actions=actions, reward=args.reward or s["reward"],
        steps=steps, n_envs=args.n_envs, seed=seed, hyperparams=hyper,
    )
    out = args.work / setting / f"{algo}-{seed}"
    if args.reuse and (out / "config.json").is_file():
        cfg = json.loads((out / "config.json").read_text())
        wall = cfg["wall_time_s"]
    else:
        wall = run_training(request, out, force=True)["wall_time_s"]
    return {"dir": str(out), "seed": seed, "train_wall_s": wall, "steps": request.steps,
            "n_envs": request.n_envs, "actions": request.env_config.actions,
            "reward": request.env_config.reward, "hyperparams": request.hyperparams}


def run_is(policy: Any, setting: str, orders: int, seed: int) -> dict[str, NDArray]:
    s = SETTINGS[setting]
    e = run_policy(policy, EnvConfig(market=s["market"]), s["order"], orders, seed).episodes
    return {"is": e["is_bps"].to_numpy(), "J": (e["is_bps"] + e["risk_proxy_bps"]).to_numpy(),
            "fill_rate": e["fill_rate"].to_numpy()}


def describe(name: str, r: dict[str, NDArray], base: dict[str, NDArray], metric: str,
             seed: int) -> dict[str, Any]:
    x, b = r[metric], base[metric]
    cmp = paired_comparison(name, x, "twap", b, n_boot=2000, seed=seed)
    return {"mean_is_bps": float(r["is"].mean()), "std_is_bps": float(r["is"].std(ddof=1)),
            "mean_J_bps": float(r["J"].mean()),
            "se_bps": float(x.std(ddof=1) / math.sqrt(len(x))),
            "fill_rate": float(r["fill_rate"].mean()),
            "diff_vs_twap_bps": cmp.diff_bps_mean, "diff_vs_twap_ci95": list(cmp.ci95),
            "diff_vs_twap_t_pvalue": cmp.t_pvalue}


def spread(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": len(a)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", choices=list(SETTINGS), required=True)
    ap.add_argument("--algos", default="ppo")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--steps-per-algo", default="", help="e.g. qtable=5000000,dqn=1000000")
    ap.add_argument("--actions-per-algo", default="", help="e.g. dqn=fine,qtable=seed004")
    ap.add_argument("--n-envs", type=int, default=None)
    ap.add_argument("--eval-seed", type=int, default=20_261_122)
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--hyperparams", default="{}", help='JSON: {"ppo": {...}, ...}')
    ap.add_argument("--reward", default=None, help="training reward (default: the setting's: "
                    "the seed's is_bps for seed004, the market's default elsewhere)")
    ap.add_argument("--work", type=Path, default=Path("bench/results/agents"))
    ap.add_argument("--reuse", action="store_true", help="evaluate existing checkpoints")
    ap.add_argument("--reference-sets", default="",
                    help="signal: also round the exact optimum to these action sets")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    setting = args.setting
    s = SETTINGS[setting]
    hyper = json.loads(args.hyperparams)
    steps_per = {k: int(float(v)) for k, v in (kv.split("=") for kv in
                                               args.steps_per_algo.split(",") if kv)}
    actions_per = {**s["actions"], **dict(kv.split("=") for kv in
                                          args.actions_per_algo.split(",") if kv)}
    algos = [a for a in args.algos.split(",") if a]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    metric = "J" if setting == "ac-risk" else "is"
    started = time.perf_counter()

    agent_sets = {actions_per.get(a) or TrainRequest.with_defaults(a).env_config.actions
                  for a in algos} | {x for x in args.reference_sets.split(",") if x}
    refs = references(setting, agent_sets)
    base = run_is(refs["twap"], setting, args.orders, args.eval_seed)
    result: dict[str, Any] = {"setting": setting, "orders": args.orders,
                              "eval_seed": args.eval_seed,
                              "references": {}, "agents": {}}
    m = market_for_order(s["market"], s["order"])
    side = s["order"].side.sign
    if setting == "signal":
        sol = solve_signal_aware(m, s["order"].qty, side)
        result["theory"] = {"expected_gain_bps": sol.expected_gain_bps,
                            "twap_expected_is_bps": schedule_moments(
                                m, twap_trajectory(m, s["order"].qty), side).expected_bps}
    elif setting == "seed004":
        twap_th = schedule_moments(m, twap_trajectory(m, s["order"].qty), side).expected_bps
        fractions = np.asarray(resolve_action_set("seed004").fractions)
        _, c0 = best_fraction_schedule(fractions, m.n_steps)
        x, big_n = float(s["order"].qty), m.n_steps
        eta, gamma = m.eta / m.tau, m.gamma
        notional = x * m.s0
        result["theory"] = {
            "twap_expected_is_bps": twap_th,
            "best_seed004_sum_n2_vs_twap": c0 * big_n,
            "best_seed004_expected_is_bps": ((eta - gamma / 2) * c0 * x * x + gamma * x * x / 2)
            / notional * 1e4,
            "twap_expected_is_bps_formula": ((eta - gamma / 2) * x * x / big_n
                                             + gamma * x * x / 2) / notional * 1e4,
        }
    else:
        lam = m.risk_aversion
        j = {n: schedule_moments(m, t(m, s["order"].qty), side) for n, t in
             (("J_star_bps", ac_trajectory), ("J_twap_bps", twap_trajectory))}
        result["theory"] = {n: mo.objective(lam) / mo.notional * 1e4 for n, mo in j.items()}

    gain = result.get("theory", {}).get("expected_gain_bps")
    for name, policy in refs.items():
        r = base if name == "twap" else run_is(policy, setting, args.orders, args.eval_seed)
        d = describe(name, r, base, metric, args.eval_seed)
        if gain:
            d["capture_of_optimal_gain"] = -d["diff_vs_twap_bps"] / gain
        result["references"][name] = d

    for algo in algos:
        runs = []
        for seed in seeds:
            print(f"training {algo} seed {seed} …", file=sys.stderr, flush=True)
            info = train_agent(setting, algo, seed, args, steps_per.get(algo),
                               actions_per.get(algo), hyper.get(algo))
            policy = NumpyPolicy.load(Path(info["dir"]), name=algo, checkpoint=True)
            d = describe(algo, run_is(policy, setting, args.orders, args.eval_seed), base,
                         metric, args.eval_seed)
            if gain:
                d["capture_of_optimal_gain"] = -d["diff_vs_twap_bps"] / gain
            if setting == "seed004":
                d["pct_above_twap"] = d["diff_vs_twap_bps"] / base["is"].mean() * 100
            runs.append({**info, **d})
            print(f"  {info['train_wall_s']:.0f} s: diff vs TWAP {d['diff_vs_twap_bps']:+.2f} "
                  f"bps {d.get('capture_of_optimal_gain', '')}", file=sys.stderr, flush=True)
        summary = {"diff_vs_twap_bps": spread([r["diff_vs_twap_bps"] for r in runs]),
                   "mean_is_bps": spread([r["mean_is_bps"] for r in runs]),
                   "train_wall_s": spread([r["train_wall_s"] for r in runs])}
        if gain:
            summary["capture_of_optimal_gain"] = spread([r["capture_of_optimal_gain"]
                                                         for r in runs])
        if setting == "seed004":
            summary["pct_above_twap"] = spread([r["pct_above_twap"] for r in runs])
        result["agents"][algo] = {"summary": summary, "runs": runs}

    result.update({
        "command": " ".join(sys.argv), "wall_s": time.perf_counter() - started,
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                    "cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    text = json.dumps(result, indent=2, default=lambda v: v.item() if isinstance(v, np.generic)
                      else str(v))
    print(text)
    print(markdown(result), file=sys.stderr)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text)


def markdown(result: dict[str, Any]) -> str:
    rows = ["| policy | mean IS | std IS | diff vs TWAP [95 % CI] | capture | seeds |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, d in result["references"].items():
        lo, hi = d["diff_vs_twap_ci95"]
        cap = d.get("capture_of_optimal_gain")
        rows.append(f"| {name} | {d['mean_is_bps']:.2f} | {d['std_is_bps']:.2f} | "
                    f"{d['diff_vs_twap_bps']:+.2f} [{lo:+.2f}, {hi:+.2f}] | "
                    f"{'' if cap is None else f'{cap:.3f}'} | |")
    for name, a in result["agents"].items():
        sm = a["summary"]
        cap = sm.get("capture_of_optimal_gain")
        dv = sm["diff_vs_twap_bps"]
        cap_text = "" if cap is None else (
            f"{cap['mean']:.3f} ({cap['min']:.3f}–{cap['max']:.3f})")
        rows.append(f"| {name} | {sm['mean_is_bps']['mean']:.2f} | | {dv['mean']:+.2f} "
                    f"(min {dv['min']:+.2f}, max {dv['max']:+.2f}) | {cap_text} | {dv['n']} |")
    return f"### {result['setting']}\n\n" + "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
