"""What `execrl train --algo X` reaches with its defaults, and how fast (issue 12).

    nice -n 10 python bench/bench_defaults.py --algos ppo,dqn,qrdqn,maskable-ppo,qtable \
        --seeds 1,2,3,4,5 --orders 20000 --watch-points 20 --json-out bench/measured/defaults.json \
        --plot bench/measured/defaults_curves.png

Each agent is trained with exactly the request `execrl train --algo X` builds when given no
other flag (``TrainRequest.with_defaults``: the default Almgren–Chriss market and order,
seed004 observations, the algorithm's action set, budget, environments and
hyper-parameters, the market's default reward), except for what ``--steps``, ``--n-envs``,
``--actions``, ``--reward`` and ``--hyperparams`` override (for measuring candidates).

The objective is the risk-averse AC one, J = E[IS] + λ·Σσ²τx_k² per order in bps; J* is its
closed-form optimum (the AC schedule). Estimates use the AC schedule as a control variate:
every policy runs on the same market paths as AC, and

    J_policy ≈ J* + mean_i (J_policy,i − J_AC,i)

(E[J_AC,i] = J* exactly: tests/test_theory.py), whose standard error is that of the paired
difference, far below that of the mean itself. The raw mean (± s.e.) is reported too.

* Final: the trained policy on ``--orders`` orders (seed ``--eval-seed``, never used in
  training), paired bootstrap 95 % CI of J_policy − J_AC.
* Learning curve: ``--watch-points`` times per run (every steps / N env steps) the greedy
  policy so far runs ``--watch-orders`` orders (seed ``--watch-seed``, also unseen); the
  clock is stopped meanwhile, so ``wall_s`` is training time alone. ``time_to_1pct_s``: the
  training time at the first curve point within 1 % of J* (None: never).

Prints one JSON object (also to --json-out); --plot draws every curve against wall-clock.
One process; torch uses one thread (as `execrl train`).
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
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from execrl.agents.train import TrainRequest, run_training  # noqa: E402
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, market_for_order  # noqa: E402
from execrl.evaluate.backtest import run_policies, run_policy  # noqa: E402
from execrl.evaluate.stats import paired_comparison  # noqa: E402
from execrl.presets import preset_market  # noqa: E402
from execrl.sim.theory import ac_trajectory, schedule_moments, twap_trajectory  # noqa: E402

MARKET = preset_market("ac")
CONFIG = EnvConfig(market=MARKET)


def theory() -> dict[str, float]:
    m = market_for_order(MARKET, DEFAULT_ORDER)
    side, lam = DEFAULT_ORDER.side.sign, m.risk_aversion
    out = {}
    for name, traj in (("J_star_bps", ac_trajectory(m, DEFAULT_ORDER.qty)),
                       ("J_twap_bps", twap_trajectory(m, DEFAULT_ORDER.qty))):
        mo = schedule_moments(m, traj, side)
        out[name] = mo.objective(lam) / mo.notional * 1e4
    return out


THEORY = theory()
J_STAR = THEORY["J_star_bps"]


def objective(run: Any) -> np.ndarray:
    e = run.episodes
    return (e["is_bps"] + e["risk_proxy_bps"]).to_numpy()


class Reference:
    """AC's (and TWAP's) per-order objective on one set of paths, for the control variate."""

    def __init__(self, orders: int, seed: int):
        self.orders, self.seed = orders, seed
        runs = {r.policy: r for r in run_policies(["ac", "twap"], CONFIG, DEFAULT_ORDER,
                                                  orders, seed)}
        self.ac = objective(runs["ac"])
        self.twap = objective(runs["twap"])

    def measure(self, policy: Any, ci: bool = False) -> dict[str, Any]:
        run = run_policy(policy, CONFIG, DEFAULT_ORDER, self.orders, self.seed)
        j = objective(run)
        diff = j - self.ac
        estimate = J_STAR + float(diff.mean())
        out = {
            "J_bps": estimate,
            "gap_pct": (estimate / J_STAR - 1.0) * 100.0,
            "diff_vs_ac_bps": float(diff.mean()),
            "diff_vs_ac_se_bps": float(diff.std(ddof=1) / math.sqrt(len(diff))),
            "raw_J_bps": float(j.mean()),
            "raw_J_se_bps": float(j.std(ddof=1) / math.sqrt(len(j))),
            "mean_is_bps": float(run.episodes["is_bps"].mean()),
            "fill_rate": float(run.episodes["fill_rate"].mean()),
        }
        if ci:
            cmp = paired_comparison("agent", j, "ac", self.ac, n_boot=2000, seed=self.seed)
            lo, hi = cmp.ci95
            out["diff_vs_ac_ci95_bps"] = [lo, hi]
            out["gap_pct_ci95"] = [(lo + J_STAR) / J_STAR * 100 - 100,
                                   (hi + J_STAR) / J_STAR * 100 - 100]
        return out


def train_one(algo: str, seed: int, args: argparse.Namespace, watch_ref: Reference | None,
              final_ref: Reference, work: Path) -> dict[str, Any]:
    hyper = json.loads(args.hyperparams).get(algo) if args.hyperparams else None
    request = TrainRequest.with_defaults(
        algo, steps=args.steps, n_envs=args.n_envs, actions=args.actions, reward=args.reward,
        seed=seed, hyperparams=hyper,
    )
    curve: list[dict[str, float]] = []
    paused = [0.0]
    started = time.perf_counter()

    def watch(env_steps: int, policy: Any) -> None:
        t0 = time.perf_counter()
        m = watch_ref.measure(policy)
        curve.append({"env_steps": env_steps, "wall_s": t0 - started - paused[0],
                      "gap_pct": m["gap_pct"], "J_bps": m["J_bps"]})
        paused[0] += time.perf_counter() - t0

    if watch_ref is not None:
        request.watch, request.watch_every = watch, max(1, request.steps // args.watch_points)
    out_dir = work / f"{algo}-{seed}"
    result = run_training(request, out_dir, force=True)
    wall = time.perf_counter() - started - paused[0]
    from execrl.agents.export import NumpyPolicy

    policy = NumpyPolicy.load(out_dir, checkpoint=True)
    final = final_ref.measure(policy, ci=True)
    if watch_ref is not None:
        last = watch_ref.measure(policy)
        curve.append({"env_steps": request.steps, "wall_s": wall, "gap_pct": last["gap_pct"],
                      "J_bps": last["J_bps"]})
    hit = next((p["wall_s"] for p in curve if p["gap_pct"] <= 1.0), None)
    hit_steps = next((p["env_steps"] for p in curve if p["gap_pct"] <= 1.0), None)
    return {
        "seed": seed, "steps": request.steps, "n_envs": request.n_envs,
        "actions": request.env_config.actions, "reward": request.env_config.reward,
        "hyperparams": request.hyperparams, "train_wall_s": wall,
        "checkpoint_wall_time_s": result["wall_time_s"], "final": final, "curve": curve,
        "time_to_1pct_s": hit, "steps_to_1pct": hit_steps,
    }


def spread(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max())}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    gaps = [r["final"]["gap_pct"] for r in runs]
    hits = [r["time_to_1pct_s"] for r in runs]
    return {
        "gap_pct": spread(gaps),
        "train_wall_s": spread([r["train_wall_s"] for r in runs]),
        "seeds_within_1pct": sum(g <= 1.0 for g in gaps),
        "seeds_within_2pct": sum(g <= 2.0 for g in gaps),
        "time_to_1pct_s": spread([h for h in hits if h is not None]) if any(
            h is not None for h in hits) else None,
        "seeds_reaching_1pct": sum(h is not None for h in hits),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for colour, (algo, entry) in zip(colours, result["algos"].items(), strict=False):
        for i, run in enumerate(entry["runs"]):
            c = run["curve"]
            if not c:
                continue
            ax.plot([p["wall_s"] for p in c], [max(p["gap_pct"], 0.01) for p in c],
                    color=colour, alpha=0.7, lw=1.2, label=algo if i == 0 else None)
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.axhline(2.0, color="k", ls=":", lw=0.8)
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("training wall-clock (s, one torch thread, 2-vCPU VM shared with others)")
    ax.set_ylabel("gap to J* (%, log; greedy policy, paired with AC)")
    ax.set_title("execrl train --algo X with its defaults, default AC market "
                 f"(J* = {J_STAR:.2f} bps); one line per training seed")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--algos", default="qtable")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--n-envs", type=int, default=None)
    ap.add_argument("--actions", default=None)
    ap.add_argument("--reward", default=None)
    ap.add_argument("--hyperparams", default="", help='JSON: {"ppo": {...}, ...}')
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--eval-seed", type=int, default=20_261_201)
    ap.add_argument("--watch-points", type=int, default=0,
                    help="curve points over each run (every steps / N env steps); 0: no curve")
    ap.add_argument("--watch-orders", type=int, default=2000)
    ap.add_argument("--watch-seed", type=int, default=20_261_202)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--replot", type=Path, help="only draw --plot from this JSON output")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.plot)
        return
    final_ref = Reference(args.orders, args.eval_seed)
    watch_ref = Reference(args.watch_orders, args.watch_seed) if args.watch_points else None
    result: dict[str, Any] = {"theory": THEORY, "orders": args.orders,
                              "eval_seed": args.eval_seed, "algos": {},
                              "twap_gap_pct": (float(final_ref.twap.mean() - final_ref.ac.mean())
                                               + J_STAR) / J_STAR * 100 - 100}
    with tempfile.TemporaryDirectory(prefix="bench-defaults-") as tmp:
        for algo in [a for a in args.algos.split(",") if a]:
            runs = []
            for seed in [int(s) for s in args.seeds.split(",") if s]:
                print(f"{algo} seed {seed} …", file=sys.stderr, flush=True)
                run = train_one(algo, seed, args, watch_ref, final_ref, Path(tmp))
                print(f"  gap {run['final']['gap_pct']:.3f} % in {run['train_wall_s']:.1f} s "
                      f"(to 1 %: {run['time_to_1pct_s']})", file=sys.stderr, flush=True)
                runs.append(run)
            result["algos"][algo] = {"summary": summarise(runs), "runs": runs}
    result.update({
        "command": " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                    "cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    text = json.dumps(result, indent=2, default=lambda v: v.item() if isinstance(v, np.generic)
                      else str(v))
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
