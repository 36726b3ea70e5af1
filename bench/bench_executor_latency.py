"""Decision latency of one order (N = 1, the live path) through the whole executor loop: the
policy, the risk guard, the watchdog (with its shadow TWAP) and the audit trail included.

    python bench/bench_executor_latency.py [--orders 2000] [--markets lob,ac,replay]
                                           [--json-out PATH]

Prints one JSON object on stdout. One process, one thread (numpy and numba pinned to one).
``--orders`` parent orders run one after another, each its own ``Executor.run(order, 1,
seed=i)`` (market path i), on each market: the ``lob`` preset (30 decisions an order), the
``ac`` preset (10) and, with ``replay``, a replay of the synthetic LOBSTER day
(``synthetic:1``, 30 decisions over 300 s).

The policy is learned-policy-like: a ``NumpyPolicy`` MLP as ``execrl train --algo ppo``
exports it (two hidden layers of 64, ReLU, head ``argmax`` on logits, so the loop computes
action probabilities for the watchdog's confidence trigger and the trail), with random
weights (seeded; the output layer scaled so the policy is confident and stays on ``RL``).
Its feature schema (training domain: min / max of the observations, and the
reference action histogram) is built from 500 untimed orders of the same policy, so the
out-of-domain and drift triggers are live.

Variants, in the same process on the same orders and seeds, interleaved order by order:

* ``full``: ``RiskLimits`` with ten controls on (child size, ADV / remaining share,
  participation over a rolling window, price band, order value, message and cancel rates,
  minimum resting time, duplicates, restricted symbols, locate for a sell),
  ``WatchdogConfig()`` (the issue's thresholds, every trigger on) with the schema above, and
  an ``AuditTrail`` per order in a temporary folder (Parquet + SQLite, written at the order's
  end);
* ``reference``: the same loop with no risk limits, no watchdog and no audit trail;
* ``full_before`` (with ``--reference-loop PATH``): ``full`` through the ``Executor`` of
  another ``executor/loop.py`` (e.g. ``git show REV:src/execrl/executor/loop.py``), on this
  package's other modules: a change to the loop measured against the loop before it.

Per decision (one iteration of ``Executor.run``'s loop), timed with ``perf_counter_ns``:

* ``iteration``: from the loop's ``on_obs`` hook (the observation in hand, before the masks
  and the policy) to its ``on_step`` hook (after the step: fills booked, the shadow TWAP
  stepped, the audit rows added) — everything the loop does for one decision except its
  ``while`` test;
* ``venue``: the time inside the market's ``execute`` (the venue: matching, fills, the
  market's own step) for the order's own market, wrapped with a timer;
* ``decision`` = ``iteration`` − ``venue``: what the executor itself costs per decision (the
  policy, validation, masks, guard, watchdog, the shadow TWAP's whole step, audit rows, fill
  booking, observation);
* ``to_venue``: from ``on_obs`` to the call of the market's ``execute``: observation in hand
  to child order at the venue (policy, masks, guard, watchdog, the decision's audit row);
  what comes after the venue (fill booking, the next observation, the shadow TWAP's step,
  the fill and child rows) is not in it.

``decision_cpu`` and ``iteration_cpu``: the same, on ``time.thread_time_ns`` (this thread's
CPU time: on a shared machine, the time waiting for a core is not in it).

Reported per market and variant: p50 / p95 / p99 / max / mean in µs of each, the decisions
timed, the share of decisions taken on ``RL`` and how orders finished; per order the time
outside the loop (core and watchdog set-up, reset, the trail's close), in ms; and
``ratio_full_vs_reference`` (and ``ratio_full_vs_full_before``) of the decision, CPU and
to-venue p50 / p99. The first ``--warmup`` orders of each
variant (numba compiled or loaded from its cache) are not timed.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from _output import emit  # noqa: E402  (bench/ is first on the path)

from execrl.agents.export import NumpyPolicy  # noqa: E402
from execrl.domain import ParentOrder, Side  # noqa: E402
from execrl.executor.audit import AuditTrail  # noqa: E402
from execrl.executor.loop import Executor, Safety  # noqa: E402
from execrl.market.features import FeatureSchema  # noqa: E402
from execrl.presets import preset_market  # noqa: E402
from execrl.safety.guard import RiskLimits  # noqa: E402
from execrl.safety.watchdog import TRIGGERS, WatchdogConfig  # noqa: E402
from execrl.sim.spec import parse_market  # noqa: E402

HIDDEN = 64
OBSERVATIONS = {
    "ac": ("remaining_ratio", "elapsed_ratio", "price_drift", "volatility"),
    "lob": ("remaining_ratio", "elapsed_ratio", "price_drift", "volatility", "spread",
            "imbalance_1", "working_ratio", "realised_vol"),
}
OBSERVATIONS["replay"] = OBSERVATIONS["lob"]


def market_and_order(name: str) -> tuple[Any, ParentOrder]:
    if name == "replay":
        market = parse_market({"model": "replay", "data": "synthetic:1", "horizon": 300.0,
                               "n_steps": 30, "pre_arrival_s": 30.0})
        order = ParentOrder(order_id="R-1", symbol="SYN", side=Side.BUY, qty=400,
                            start_ts=0.0, horizon_s=300.0)
        return market, order
    market = preset_market(name)
    return market, market.default_order()


def mlp_policy(name: str, observations: tuple[str, ...], n_actions: int, seed: int,
               schema: FeatureSchema | None = None) -> NumpyPolicy:
    """A PPO-shaped exported policy with random weights (latency does not depend on them);
    the output layer is scaled so that the largest probability is high (a confident
    policy that stays on RL)."""
    rng = np.random.default_rng(seed)
    sizes = [len(observations), HIDDEN, HIDDEN, n_actions]
    weights = []
    for i in range(3):
        scale = (8.0 if i == 2 else 1.0) / np.sqrt(sizes[i])
        weights += [rng.normal(0.0, scale, (sizes[i], sizes[i + 1])),
                    rng.normal(0.0, 0.1, sizes[i + 1])]
    weights[-1][2] += 4.0  # one action preferred: a confident policy
    return NumpyPolicy(name=name, observations=observations, action_set="seed004",
                       head="argmax", weights=weights, activation="relu",
                       meta={"algo": "ppo"}, feature_schema=schema)


def limits_for(order: ParentOrder) -> RiskLimits:
    """Ten controls on, sized to the order so that they bind now and then but do not stop
    it finishing."""
    q = int(order.qty)
    px = float(order.arrival_px or 50.0)
    return RiskLimits(
        child_max=max(q // 3, 1), adv_fraction=0.05, remaining_fraction=0.5,
        participation=0.5, participation_window_s=float(order.horizon) / 5,
        price_band_bps=200.0, max_child_value=q * px, message_limit=50,
        cancel_limit=50, min_resting_s=0.001, duplicate_window_s=0.001,
        restricted_symbols=("BANNED",),
        locate_shares=q if order.side is Side.SELL else None,
    )


def training_schema(market: Any, order: ParentOrder, policy: NumpyPolicy, orders: int,
                    n_actions: int) -> FeatureSchema:
    """The policy's 'training domain' and greedy action histogram over ``orders`` orders."""
    seen: list[np.ndarray] = []
    Executor(policy, market, safety=Safety(limits=limits_for(order))).run(
        order, orders, seed=10_000, on_obs=lambda o: seen.append(np.array(o)))
    x = np.concatenate(seen).astype(np.float64)
    acts = policy.act(x.astype(np.float32))
    # min / max only (a checkpoint may record no more): the domain is min / max widened by
    # the config's margin, which a policy on its own market rarely leaves
    return FeatureSchema(
        names=policy.observations,
        domain_min=tuple(float(v) for v in x.min(axis=0)),
        domain_max=tuple(float(v) for v in x.max(axis=0)),
        action_counts=tuple(int(c) for c in np.bincount(acts, minlength=n_actions)),
    )


class Timer:
    """The loop's hooks: start of a decision (``on_obs``), end (``on_step``), and the time
    inside the market's ``execute`` between them, on the wall clock and on this thread's
    CPU clock (which does not count the time the thread waits for a core)."""

    def __init__(self) -> None:
        self.clock = time.perf_counter_ns
        self.cpu = time.thread_time_ns
        self.t0 = self.c0 = 0
        self.venue = self.venue_cpu = 0
        self.sent = 0
        self.iteration: list[int] = []
        self.venue_ns: list[int] = []
        self.to_venue: list[int] = []
        self.iteration_cpu: list[int] = []
        self.venue_cpu_ns: list[int] = []

    def clear(self) -> None:
        for x in (self.iteration, self.venue_ns, self.to_venue, self.iteration_cpu,
                  self.venue_cpu_ns):
            x.clear()

    def observers(self, core: Any) -> tuple[()]:
        market = core.market
        inner = market.execute
        clock, cpu = self.clock, self.cpu

        def execute(*args: Any, **kwargs: Any) -> Any:
            t, c = clock(), cpu()
            if not self.sent:
                self.sent = t - self.t0
            out = inner(*args, **kwargs)
            self.venue_cpu += cpu() - c
            self.venue += clock() - t
            return out

        market.execute = execute
        return ()

    def on_obs(self, _obs: Any) -> None:
        self.venue = self.venue_cpu = self.sent = 0
        self.c0 = self.cpu()
        self.t0 = self.clock()

    def on_step(self) -> None:
        t = self.clock()
        c = self.cpu()
        self.iteration.append(t - self.t0)
        self.iteration_cpu.append(c - self.c0)
        self.venue_ns.append(self.venue)
        self.venue_cpu_ns.append(self.venue_cpu)
        self.to_venue.append(self.sent)


class Variant:
    """One way of running the orders, its timer and tallies (variants run interleaved, order
    by order, so that all of them meet the same load on a shared machine)."""

    def __init__(self, executor: Any, market: Any, order: ParentOrder, policy: NumpyPolicy,
                 full: bool, folder: Path) -> None:
        self.executor, self.market, self.order, self.policy = executor, market, order, policy
        self.full, self.folder = full, folder
        self.timer = Timer()
        self.outside_ms: list[float] = []
        self.finished: dict[str, int] = {}
        self.rl_decisions = 0

    def clear(self) -> None:
        self.timer.clear()
        self.outside_ms.clear()
        self.finished.clear()
        self.rl_decisions = 0

    def run_order(self, i: int) -> None:
        order, policy, timer = self.order, self.policy, self.timer
        audit = None
        safety = Safety()
        folder = self.folder / f"o{i}"
        if self.full:
            safety = Safety(limits=limits_for(order), watchdog=WatchdogConfig())
            audit = AuditTrail(folder, features=policy.observations,
                               labels={"trigger": TRIGGERS})
        n0 = len(timer.iteration)
        t = time.perf_counter_ns()
        run = self.executor(policy, self.market, safety=safety, audit=audit).run(
            order, 1, seed=i, on_obs=timer.on_obs, on_step=timer.on_step,
            make_observers=timer.observers)
        wall = time.perf_counter_ns() - t
        self.outside_ms.append((wall - sum(timer.iteration[n0:])) / 1e6)
        e = run.episodes
        by = str(e["finished_by"].iloc[0]) if "finished_by" in e else "policy"
        self.finished[by] = self.finished.get(by, 0) + 1
        steps = len(timer.iteration) - n0
        trig = int(e["trigger_step"].iloc[0]) if "trigger_step" in e else -1
        self.rl_decisions += steps if trig < 0 else min(trig, steps)
        if audit is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def result(self) -> dict[str, Any]:
        timer = self.timer
        it = np.asarray(timer.iteration, dtype=np.float64) / 1e3
        venue = np.asarray(timer.venue_ns, dtype=np.float64) / 1e3
        it_cpu = np.asarray(timer.iteration_cpu, dtype=np.float64) / 1e3
        venue_cpu = np.asarray(timer.venue_cpu_ns, dtype=np.float64) / 1e3
        return {
            "decisions": int(it.size),
            "decisions_on_rl": self.rl_decisions,
            "finished_by": self.finished,
            "iteration_us": stats(it),
            "venue_us": stats(venue),
            "decision_us": stats(it - venue),
            "to_venue_us": stats(np.asarray(timer.to_venue, dtype=np.float64) / 1e3),
            "decision_cpu_us": stats(it_cpu - venue_cpu),
            "iteration_cpu_us": stats(it_cpu),
            "outside_loop_ms_per_order": stats(np.asarray(self.outside_ms)),
        }


def stats(x: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(x, 50)), "p95": float(np.percentile(x, 95)),
            "p99": float(np.percentile(x, 99)), "max": float(x.max()), "mean": float(x.mean())}


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, what in (("", "decision_us"), ("cpu_", "decision_cpu_us"),
                      ("to_venue_", "to_venue_us")):
        for q in ("p50", "p99"):
            out[f"{key}{q}"] = a[what][q] / b[what][q]
    return out


def load_executor(path: str) -> Any:
    """``Executor`` from another copy of ``executor/loop.py`` (the loop before a change), on
    this package's other modules."""
    spec = importlib.util.spec_from_file_location("execrl_loop_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.Executor


def bench(name: str, orders: int, warmup: int, folder: Path,
          before: Any = None) -> dict[str, Any]:
    market, order = market_and_order(name)
    n_actions = 5  # seed004
    raw = mlp_policy("mlp", OBSERVATIONS[name], n_actions, seed=7)
    schema = training_schema(market, order, raw, 500, n_actions)
    policy = mlp_policy("mlp", OBSERVATIONS[name], n_actions, seed=7, schema=schema)
    out: dict[str, Any] = {"order": {"side": order.side.value, "qty": order.qty,
                                     "horizon_s": order.horizon}}
    variants = {"reference": Variant(Executor, market, order, policy, False, folder),
                "full": Variant(Executor, market, order, policy, True, folder)}
    if before is not None:
        variants["full_before"] = Variant(before, market, order, policy, True, folder)
    gc.collect()
    for i in range(warmup + orders):
        if i == warmup:
            for v in variants.values():
                v.clear()
        for v in variants.values():
            v.run_order(i)
    for name, v in variants.items():
        out[name] = v.result()
    out["ratio_full_vs_reference"] = ratios(out["full"], out["reference"])
    if before is not None:
        out["ratio_full_vs_full_before"] = ratios(out["full"], out["full_before"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--markets", default="lob,ac,replay")
    ap.add_argument("--reference-loop", default=None,
                    help="another executor/loop.py (before a change): its Executor runs the "
                         "full variant too, interleaved (full_before)")
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()
    before = None if a.reference_loop is None else load_executor(a.reference_loop)
    result: dict[str, Any] = {
        "benchmark": "executor_decision_latency",
        "orders": a.orders,
        "n_orders_per_run": 1,
        "policy": f"NumpyPolicy MLP {HIDDEN}x{HIDDEN} relu, argmax over seed004 (ppo logits)",
    }
    with tempfile.TemporaryDirectory(prefix="execrl-latency-") as tmp:
        for name in a.markets.split(","):
            result[name] = bench(name, a.orders, a.warmup, Path(tmp), before)
    result["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                         "processor": platform.processor(), "numpy": np.__version__}
    result["timestamp"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    emit(result, a.json_out)


if __name__ == "__main__":
    main()
