"""Offline agents from decision logs (issue 12): CQL on logs of the baselines over several
training seeds, and BC reproducing the policy it was logged from.

    nice -n 10 python bench/bench_offline.py --seeds 1,2,3,4,5 --orders 20000 \
        --json-out bench/measured/offline.json

Default AC market and order, seed004 observations and actions, seed 001's risk-adjusted
reward (what a log carries; ``TrainRequest.with_defaults`` picks it for offline algorithms).

* CQL: the log is ``--log-orders`` orders of each of twap, vwap, pov, ac, ac:2e-6, ac:5e-7
  (``execrl evaluate --log-decisions``'s decisions.parquet, seed ``--log-seed``); CQL trains
  ``--cql-steps`` gradient steps with its defaults (``execrl.agents.offline``: temperature 100
  bps, α = 1, γ = 1, target sync every 100 steps), once per training seed. Each policy runs
  ``--orders`` unseen orders (``--eval-seed``) paired with AC: J ≈ J* + mean(J − J_AC) (the AC
  schedule as a control variate, as bench_defaults.py), gap = J / J* − 1.
* BC: the log is ``--log-orders`` orders of one deterministic discrete policy, the default
  tabular agent (``execrl train --algo qtable``, seed 1) exported; BC trains ``--bc-steps``
  steps on the actions it asked for (``action_from = "requested"``), once per training seed.
  Reproduction: on every decision BC meets over the ``--orders`` evaluation orders, the share
  where it picks the logged policy's action, and the paired IS difference to it.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_defaults import CONFIG, J_STAR, Reference, spread  # noqa: E402

from execrl.agents.export import NumpyPolicy  # noqa: E402
from execrl.agents.train import TrainRequest, run_training  # noqa: E402
from execrl.env.factory import DEFAULT_ORDER  # noqa: E402
from execrl.evaluate.backtest import policy_context, run_policies, run_policy  # noqa: E402
from execrl.evaluate.decisions import DecisionRecorder, write_decisions  # noqa: E402
from execrl.evaluate.stats import paired_comparison  # noqa: E402
from execrl.policies.baselines import make_baseline  # noqa: E402

LOGGED_BASELINES = ["twap", "vwap", "pov", "ac", "ac:2e-6", "ac:5e-7"]


class Watched:
    """Runs ``inner`` and keeps every (observation, mask) it is shown."""

    def __init__(self, inner: Any):
        self.inner, self.name = inner, inner.name
        self.observations, self.action_set = inner.observations, inner.action_set
        self.seen: list[tuple[np.ndarray, np.ndarray | None]] = []

    def act(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        self.seen.append((obs.copy(), None if masks is None else masks.copy()))
        return self.inner.act(obs, masks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--eval-seed", type=int, default=20_261_201)
    ap.add_argument("--log-orders", type=int, default=2000)
    ap.add_argument("--log-seed", type=int, default=7)
    ap.add_argument("--cql-steps", type=int, default=5000)
    ap.add_argument("--bc-steps", type=int, default=2000)
    ap.add_argument("--skip", default="", help="cql or bc")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    ref = Reference(args.orders, args.eval_seed)
    result: dict[str, Any] = {"J_star_bps": J_STAR, "orders": args.orders,
                              "eval_seed": args.eval_seed}
    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp_name:
        tmp = Path(tmp_name)
        if "cql" not in args.skip:
            runs = run_policies(LOGGED_BASELINES, CONFIG, DEFAULT_ORDER, args.log_orders,
                                args.log_seed, recorder=DecisionRecorder())
            log = write_decisions(tmp / "baselines", runs)
            ctx = policy_context(CONFIG, DEFAULT_ORDER)
            logged = {r.policy: ref.measure(make_baseline(r.policy, ctx))["gap_pct"]
                      for r in runs}
            cql = []
            for seed in seeds:
                print(f"cql seed {seed} …", file=sys.stderr, flush=True)
                request = TrainRequest.with_defaults("cql", data=log, seed=seed,
                                                     steps=args.cql_steps)
                out = run_training(request, tmp / f"cql-{seed}", force=True)
                policy = NumpyPolicy.load(tmp / f"cql-{seed}", checkpoint=True)
                m = ref.measure(policy, ci=True)
                cql.append({"seed": seed, "train_wall_s": out["wall_time_s"], **m})
                print(f"  gap {m['gap_pct']:.3f} % in {out['wall_time_s']:.0f} s",
                      file=sys.stderr, flush=True)
            result["cql"] = {
                "log": {"policies": LOGGED_BASELINES, "orders_each": args.log_orders,
                        "transitions": int(sum(len(r.decisions) for r in runs)),
                        "logged_policies_gap_pct": logged},
                "steps": args.cql_steps, "reward": request.env_config.reward,
                "hyperparams": out["resolved_hyperparams"],
                "summary": {"gap_pct": spread([r["gap_pct"] for r in cql]),
                            "seeds_within_1pct": sum(r["gap_pct"] <= 1.0 for r in cql),
                            "train_wall_s": spread([r["train_wall_s"] for r in cql])},
                "runs": cql,
            }
        if "bc" not in args.skip:
            print("training the logged policy (default qtable, seed 1) …", file=sys.stderr)
            q_request = TrainRequest.with_defaults("qtable", seed=1)
            run_training(q_request, tmp / "qtable", force=True)
            logged_policy = NumpyPolicy.load(tmp / "qtable", name="logged", checkpoint=True)
            run = run_policy(logged_policy, CONFIG, DEFAULT_ORDER, args.log_orders,
                             args.log_seed, recorder=DecisionRecorder())
            log = write_decisions(tmp / "qtable-log", [run])
            logged_is = run_policy(logged_policy, CONFIG, DEFAULT_ORDER, args.orders,
                                   args.eval_seed).episodes["is_bps"].to_numpy()
            bc = []
            for seed in seeds:
                print(f"bc seed {seed} …", file=sys.stderr, flush=True)
                request = TrainRequest.with_defaults(
                    "bc", data=log, seed=seed, steps=args.bc_steps,
                    hyperparams={"action_from": "requested"})
                out = run_training(request, tmp / f"bc-{seed}", force=True)
                policy = Watched(NumpyPolicy.load(tmp / f"bc-{seed}", checkpoint=True))
                episodes = run_policy(policy, CONFIG, DEFAULT_ORDER, args.orders,
                                      args.eval_seed).episodes
                agree = np.concatenate([policy.inner.act(o, m) == logged_policy.act(o, m)
                                        for o, m in policy.seen])
                cmp = paired_comparison("bc", episodes["is_bps"].to_numpy(), "logged",
                                        logged_is, n_boot=2000, seed=seed)
                bc.append({"seed": seed, "train_wall_s": out["wall_time_s"],
                           "action_agreement": float(agree.mean()),
                           "decisions": int(agree.size),
                           "is_diff_vs_logged_bps": cmp.diff_bps_mean,
                           "is_diff_vs_logged_ci95": list(cmp.ci95),
                           "gap_pct": ref.measure(policy.inner)["gap_pct"]})
                print(f"  agreement {agree.mean():.4f}", file=sys.stderr, flush=True)
            result["bc"] = {
                "logged_policy": "default qtable (execrl train --algo qtable --seed 1)",
                "logged_policy_gap_pct": ref.measure(logged_policy)["gap_pct"],
                "log_orders": args.log_orders, "steps": args.bc_steps,
                "summary": {"action_agreement": spread([r["action_agreement"] for r in bc]),
                            "is_diff_vs_logged_bps": spread([r["is_diff_vs_logged_bps"]
                                                             for r in bc])},
                "runs": bc,
            }
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


if __name__ == "__main__":
    main()
