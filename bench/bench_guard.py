"""The risk guard under attack, and what it costs the execution core.

    python bench/bench_guard.py [--decisions 1000000] [--n-orders 4096] [--core-steps 300]
                                [--reference-core PATH/TO/OLD/env/core.py] [--json-out PATH]

Prints one JSON object on stdout. One process, one core (thread pools pinned to one thread).

1. ``adversarial``: ``--decisions`` child-order decisions (``n_orders`` parent orders × steps)
   from an adversary through ``RiskGuard.check`` (batched): sizes log-uniform up to 10⁹
   shares, every order type, limit prices up to ±5 % from the mid, random cancels, random
   kills and re-enables, under limits with every control on. A venue fills what the guard let
   through (market orders at once, limits partly), and ``record`` books it. Each decision is
   then verified, in numpy, independently of the guard's kernels: size, value, band, parent
   total, locate, kill, horizon, the message rate (its own ring of message times) and the
   latch. ``breaches`` counts decisions that got past a limit; ``decisions_per_s`` times the
   guard's calls alone (size_cap + check + record), not the adversary or the verification.
2. ``core_step``: ``BatchedExecution.step`` on the default market (``make_execution``,
   ``n_orders`` envs, random seed004 actions), with the guard's check and with it replaced by
   a no-op (the core's kernels still cut to the guard's cap), best of 5 blocks each, in the
   same process: ``check_overhead_ratio`` = with / without. With ``--reference-core``, the
   same loop on an older ``env/core.py`` loaded from that path (the core before the guard),
   ``ratio_vs_reference`` = with the guard / reference.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from execrl.domain import OrderType  # noqa: E402
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution  # noqa: E402
from execrl.safety import GUARD_FIRST_REJECT, KillSwitch, RiskGuard, RiskLimits  # noqa: E402
from execrl.sim.base import ORDER_TYPE_CODES, ChildOrderBatch, FillBatch  # noqa: E402

MID, TICK = 100.0, 0.01
QTY = 200_000
LIMITS = RiskLimits(
    child_max=5000, adv_fraction=0.05, remaining_fraction=0.2, participation=0.2,
    participation_window_s=5.0, price_band_bps=20.0, max_child_value=400_000.0,
    message_limit=4, message_window_s=3.0, cancel_limit=3, cancel_window_s=10.0,
    min_resting_s=2.0, repeat_fill_limit=30, repeat_window_s=20.0, duplicate_window_s=2.0,
    locate_shares=150_000, adv_shares=1e6,
)
TYPES = np.array([ORDER_TYPE_CODES[t] for t in OrderType], dtype=np.int8)
MARKET = ORDER_TYPE_CODES[OrderType.MARKET]
LIMIT = ORDER_TYPE_CODES[OrderType.LIMIT]
MARKETABLE = ORDER_TYPE_CODES[OrderType.MARKETABLE_LIMIT]


def adversarial(n: int, decisions: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    steps = -(-decisions // n)
    side = np.where(np.arange(n) % 2 == 0, 1, -1)
    kill = KillSwitch(n)
    guard = RiskGuard(LIMITS, n, side, QTY, step_seconds=1.0, tick_size=TICK,
                      horizon_s=float(steps - 5), kill=kill)
    volume = np.full(n, 20_000.0)
    mid = np.full(n, MID)
    active = np.ones(n, dtype=bool)
    msg_ring = np.full((n, LIMITS.message_limit), -np.inf)  # the verifier's own message times
    head = np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    working = np.zeros(n, dtype=np.int64)
    filled = np.zeros(n, dtype=np.int64)
    edge = np.where(side > 0, np.floor(MID * (1 + 20e-4) / TICK + 1e-9) * TICK,
                    np.ceil(MID * (1 - 20e-4) / TICK - 1e-9) * TICK)
    breaches = {k: 0 for k in ("size", "value", "band", "parent_total", "locate", "kill",
                               "horizon", "message_rate", "latched")}
    guard_s = 0.0
    refused = cut = 0
    for k in range(steps):
        t = np.full(n, float(k))
        orders = ChildOrderBatch.market_orders(n)
        orders.qty[:] = np.floor(np.exp(rng.uniform(0, np.log(1e9), n))).astype(np.int64)
        orders.qty[rng.random(n) < 0.1] = 0
        orders.order_type[:] = TYPES[rng.integers(0, TYPES.size, n)]
        px = np.round(MID * (1 + rng.uniform(-0.05, 0.05, n)) / TICK) * TICK
        orders.limit_px[:] = np.where(orders.order_type == MARKET, np.nan, px)
        orders.cancel[:] = rng.random(n) < 0.3
        orders.child_id[:] = k + 1
        if rng.random() < 0.05:
            kill.kill_orders(rng.integers(0, n, 8))
        if rng.random() < 0.02:
            kill.release_all()
        if rng.random() < 0.05:
            guard.reenable()
        killed = guard.killed().copy()
        latched = guard.latched.copy()
        final = np.full(n, k == steps - 6)
        t0 = time.perf_counter()
        guard.size_cap(t, mid, volume, active)
        code = guard.check(orders, t, mid, volume, active, final)
        guard_s += time.perf_counter() - t0
        refused += int((code >= GUARD_FIRST_REJECT).sum())
        cut += int(((code > 0) & (code < GUARD_FIRST_REJECT)).sum())
        # -- verify what got out, independently --------------------------------------------
        q = orders.qty
        out = q > 0
        ref = np.where(np.isnan(orders.limit_px), MID, orders.limit_px)
        cancels = orders.cancel & (working > 0)
        in_window = (k - msg_ring < LIMITS.message_window_s - 1e-9).sum(axis=1)
        need = out.astype(np.int64) + (cancels & ~killed & ~final)  # those cancels are free
        breaches["size"] += int((q > LIMITS.child_max).sum())
        breaches["value"] += int((q * ref > LIMITS.max_child_value + 1e-6).sum())
        breaches["band"] += int((out & (np.isnan(orders.limit_px)
                                        | (side * (orders.limit_px - edge) > 1e-9))).sum())
        breaches["parent_total"] += int((filled + np.where(cancels, 0, working) + q > QTY).sum())
        breaches["locate"] += int(((side < 0) & (filled + np.where(cancels, 0, working) + q
                                                 > LIMITS.locate_shares)).sum())
        breaches["kill"] += int((killed & (out | ((working > 0) & ~orders.cancel))).sum())
        breaches["horizon"] += int((out & (k >= steps - 5)).sum())
        breaches["message_rate"] += int(((need > 0)
                                         & (in_window + need > LIMITS.message_limit)).sum())
        breaches["latched"] += int((latched & out).sum())
        # -- the venue: market orders fill, limits fill a third, the rest rests -------------
        cancelled = np.where(orders.cancel, working, 0)
        working = working - cancelled
        rests = (orders.order_type == LIMIT) | (orders.order_type == MARKETABLE)
        fill_now = np.where(rests, q // 3, q)
        working = working + np.where(rests, q - fill_now, 0)
        passive = np.minimum(working, rng.integers(0, 50, n))
        working = working - passive
        fill_qty = fill_now + passive
        filled += fill_qty
        fills = FillBatch(
            qty=fill_qty, avg_px=np.full(n, MID), passive_qty=passive, fees=np.zeros(n),
            n_fills=((fill_now > 0).astype(np.int32) + (passive > 0)),
            working_qty=working.copy(), cancelled_qty=cancelled,
            reject=np.zeros(n, dtype=np.int8),
        )
        t0 = time.perf_counter()
        guard.record(orders, fills, t, volume, active)
        guard_s += time.perf_counter() - t0
        for _ in range(2):  # the verifier's message ring: a cancel and a new order
            push = cancels if _ == 0 else out
            msg_ring[rows[push], head[push]] = k
            head[push] = (head[push] + 1) % msg_ring.shape[1]
    total = n * steps
    return {
        "decisions": total,
        "n_orders": n,
        "steps": steps,
        "breaches": sum(breaches.values()),
        "breaches_by_control": breaches,
        "refused_share": refused / total,
        "cut_share": cut / total,
        "guard_seconds": guard_s,
        "decisions_per_s": total / guard_s,
        "final_filled_max": int(filled.max()),
    }


def _load_reference_core(path: Path):
    spec = importlib.util.spec_from_file_location("execrl_reference_core", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.BatchedExecution


def _time_core(core, actions: np.ndarray, blocks: int, steps: int) -> float:
    """Best per-step seconds over ``blocks`` blocks of ``steps`` steps."""
    core.reset(seed=0)
    for j in range(5):
        core.step(actions[j % actions.shape[0]])
    best = np.inf
    for _ in range(blocks):
        t0 = time.perf_counter()
        for j in range(steps):
            core.step(actions[j % actions.shape[0]])
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def core_step(n: int, steps: int, reference: Path | None) -> dict:
    rng = np.random.default_rng(1)
    actions = rng.integers(0, 5, (64, n))
    config = EnvConfig()
    with_check = make_execution(config, DEFAULT_ORDER, n, autoreset=True)
    without = make_execution(config, DEFAULT_ORDER, n, autoreset=True)
    without.guard.check = lambda orders, *a, **k: without.guard.last_code  # type: ignore
    out: dict = {"n_envs": n, "steps_per_block": steps}
    # interleave the variants so load on a shared machine hits both alike
    t_with, t_without = np.inf, np.inf
    for _ in range(5):
        t_with = min(t_with, _time_core(with_check, actions, 1, steps))
        t_without = min(t_without, _time_core(without, actions, 1, steps))
    out["step_us_with_check"] = t_with * 1e6
    out["step_us_without_check"] = t_without * 1e6
    out["check_overhead_ratio"] = t_with / t_without
    if reference is not None:
        ref_cls = _load_reference_core(reference)
        proto = make_execution(config, DEFAULT_ORDER, n, autoreset=True)
        ref = ref_cls(proto.market, proto.qty, proto.side, proto.observations,
                      proto.action_set, proto.reward, DEFAULT_ORDER.constraints, True,
                      proto._risk_var)
        t_ref = np.inf
        for _ in range(5):
            t_ref = min(t_ref, _time_core(ref, actions, 1, steps))
            t_with = min(t_with, _time_core(with_check, actions, 1, steps))
        out["reference_core"] = str(reference)
        out["step_us_reference"] = t_ref * 1e6
        out["step_us_with_check"] = t_with * 1e6
        out["ratio_vs_reference"] = t_with / t_ref
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--n-orders", type=int, default=4096)
    parser.add_argument("--core-steps", type=int, default=300)
    parser.add_argument("--reference-core", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    t0 = time.perf_counter()
    adversarial(64, 64 * 10)  # compile (or load the cache) before timing
    result = {
        "benchmark": "bench_guard",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "adversarial": adversarial(args.n_orders, args.decisions),
        "core_step": core_step(args.n_orders, args.core_steps, args.reference_core),
        "wall_s": None,
    }
    result["wall_s"] = time.perf_counter() - t0
    text = json.dumps(result, indent=2)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
