"""Replay speed and the queue estimators' error, on GOOG 2012-06-21 (or a synthetic day).

    python bench/bench_replay.py [--data PATH] [--n-envs 128] [--horizon 3600] [--queues]
                                 [--json-out PATH]

Prints one JSON object on stdout. One process, one core (thread pools pinned to 1).

``speed``: recorded events replayed per second (events = how far every episode's pointer
moved through the event stream), for the compiled step kernel (``execrl.sim.replay._step``)
and for the same kernel run interpreted by Python (``_step.py_func``: the same code, plain
Python on the same arrays) on the first ``--python-envs`` episodes of the same run, so that
the two replay exactly the same events; ``ratio`` = compiled / Python events per second.
Variants: no agent order; TWAP market orders each step (impact off, then transient impact with
the data's Kyle λ); a passive order at the touch re-posted each step with the exact queue and
with the power estimator. ``with_features``: the whole ``ReplayMarket.execute``, the feature
builder fed every event, for the no-agent and the market-order variants.

``queues`` (``--queues``): a passive order of ``--passive-qty`` shares posted at the touch at
each episode's start and left for the horizon (60 s and 300 s), buy and sell, on ``--orders``
episodes; per queue model: fill rate, share of orders that filled at all, mean time to the
first fill, passive IS (bps vs the arrival mid, filled shares), and the error of each
estimator against the exact queue (difference of the means, and the share of episodes whose
filled quantity differs). Needs order-by-order data (LOBSTER).
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
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from execrl.domain import OrderType  # noqa: E402
from execrl.sim.base import ORDER_TYPE_CODES, ChildOrderBatch  # noqa: E402
from execrl.sim.replay import ReplayMarketConfig, _step  # noqa: E402

GOOG = Path(__file__).resolve().parents[2] / "shared" / "data" / "lobster" / \
    "LOBSTER_SampleFile_GOOG_2012-06-21_10.zip"
LIMIT = ORDER_TYPE_CODES[OrderType.LIMIT]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _orders(market, variant: str, qty: int, k: int) -> ChildOrderBatch:  # type: ignore[no-untyped-def]
    n = market.n_envs
    o = ChildOrderBatch.market_orders(n)
    o.child_id[:] = k + 1
    if variant.startswith("market"):
        o.qty[:] = qty
    elif variant.startswith("passive"):
        bid, ask = market.touch
        o.qty[:] = qty
        o.order_type[:] = LIMIT
        o.limit_px[:] = np.where(np.isfinite(bid), bid, ask - market.tick_size)
        o.ttl_steps[:] = 1
    return o


def _outputs(n: int) -> tuple:
    return (np.empty(n, np.int64), np.empty(n), np.empty(n, np.int64), np.empty(n),
            np.empty(n, np.int32), np.empty(n, np.int64), False, np.empty(1, np.int32),
            np.empty(1, np.int64), np.empty(1), np.empty(1, np.int64), np.empty(1),
            np.empty(1, np.bool_), np.empty(1))


def _episode(market, variant: str, qty: int, kernel,  # type: ignore[no-untyped-def]
             envs: slice | None = None) -> tuple[int, float]:
    """Replay every step of a fresh set of episodes through ``kernel`` (compiled or
    interpreted); (events replayed, seconds)."""
    market.reset(np.random.default_rng(11))
    n = market.n_envs
    before = market._ptr.copy()
    elapsed = 0.0
    for k in range(market.n_steps):
        o = _orders(market, variant, qty, k)
        act = np.ones(n, dtype=bool)
        if envs is not None:
            act[:] = False
            act[envs] = True
        reject, px = market._check_prices(o.qty, o.order_type, o.limit_px, act)
        args = market._step_args(act, o.qty, o.order_type, px, o, reject, *_outputs(n))
        t0 = time.perf_counter()
        kernel(*args)
        elapsed += time.perf_counter() - t0
    moved = market._ptr - before
    return int(moved.sum() if envs is None else moved[envs].sum()), elapsed


def _with_features(market, variant: str, qty: int) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    market.feed_features = True
    market.reset(np.random.default_rng(11))
    before = market._ptr.copy()
    on = np.ones(market.n_envs, dtype=bool)
    t0 = time.perf_counter()
    for k in range(market.n_steps):
        market.execute(_orders(market, variant, qty, k), on)
    return int((market._ptr - before).sum()), time.perf_counter() - t0


def speed(data: str, n_envs: int, horizon: float, n_steps: int, python_envs: int,
          min_seconds: float) -> dict[str, Any]:
    base = {"model": "replay", "data": data, "horizon": horizon, "n_steps": n_steps,
            "pre_arrival_s": 60.0}
    variants = {
        "no_agent": {"queue": "exact"},
        "market_orders": {"queue": "exact"},
        "market_orders_impact": {"queue": "exact", "impact": "calibrated"},
        "passive_exact": {"queue": "exact"},
        "passive_power": {"queue": "power"},
    }
    out: dict[str, Any] = {}
    for name, extra in variants.items():
        spec = ReplayMarketConfig.from_dict({**base, **extra})
        market = spec.build(n_envs, 1)
        market.feed_features = False
        qty = 100
        _episode(market, name, qty, _step)  # compile or load the cache
        events, secs, runs = 0, 0.0, 0
        while secs < min_seconds or runs < 3:
            e, s = _episode(market, name, qty, _step)
            events += e
            secs += s
            runs += 1
        py_events, py_secs = _episode(market, name, qty, _step.py_func,
                                      envs=slice(0, python_envs))
        compiled = events / secs
        python = py_events / py_secs
        out[name] = {"events_per_s": compiled, "python_events_per_s": python,
                     "ratio": compiled / python, "events_per_run": events // runs,
                     "python_events": py_events, "kappa_per_share": spec.kappa}
        _log(f"{name}: {compiled / 1e6:.2f} M events/s compiled, {python / 1e3:.1f} k/s "
             f"Python, x{compiled / python:.0f}")
        if name in ("no_agent", "market_orders"):
            _with_features(market, name, qty)  # warm
            e, s = _with_features(market, name, qty)
            out[name]["with_features_events_per_s"] = e / s
            _log(f"{name} with features: {e / s / 1e6:.2f} M events/s")
    return out


def queues(data: str, n_orders: int, qty: int) -> dict[str, Any]:
    out: dict[str, Any] = {"passive_qty": qty, "orders": n_orders}
    for horizon in (60.0, 300.0):
        for side, label in ((1, "buy"), (-1, "sell")):
            rows: dict[str, dict[str, Any]] = {}
            filled: dict[str, np.ndarray] = {}
            for model in ("exact", "risk_averse", "power", "log"):
                spec = ReplayMarketConfig.from_dict({
                    "model": "replay", "data": data, "horizon": horizon, "n_steps": 1,
                    "queue": model, "pre_arrival_s": 60.0})
                m = spec.build(n_orders, side)
                m.feed_features = False
                m.reset(np.random.default_rng(5))
                bid, ask = m.touch
                o = ChildOrderBatch.market_orders(n_orders)
                o.qty[:] = qty
                o.order_type[:] = LIMIT
                o.limit_px[:] = bid if side == 1 else ask
                o.ttl_steps[:] = 1
                o.child_id[:] = 1
                ok = np.isfinite(o.limit_px)
                f = m.execute(o, ok, record_events=True)
                ev = f.events
                first = np.full(n_orders, np.nan)
                if ev.size:
                    np.fmin.at(first, ev["env"], ev["t"])
                q = f.passive_qty.astype(float)
                with np.errstate(invalid="ignore", divide="ignore"):
                    is_bps = side * (f.avg_px - m.arrival_mid) / m.arrival_mid * 1e4
                got = q > 0
                filled[model] = q
                rows[model] = {
                    "fill_rate": float(q[ok].sum() / (qty * ok.sum())),
                    "any_fill": float(got[ok].mean()),
                    "mean_time_to_first_fill_s": float(np.nanmean(first[ok])) if got.any()
                    else None,
                    "passive_is_bps": float(np.average(is_bps[got], weights=q[got]))
                    if got.any() else None,
                }
            exact = filled["exact"]
            for model, r in rows.items():
                if model == "exact":
                    continue
                r["fill_rate_error"] = r["fill_rate"] - rows["exact"]["fill_rate"]
                r["episodes_differing"] = float((filled[model] != exact).mean())
                if r["passive_is_bps"] is not None and rows["exact"]["passive_is_bps"]:
                    r["passive_is_error_bps"] = (r["passive_is_bps"]
                                                 - rows["exact"]["passive_is_bps"])
                if r["mean_time_to_first_fill_s"] is not None and rows["exact"][
                        "mean_time_to_first_fill_s"] is not None:
                    r["time_to_fill_error_s"] = (r["mean_time_to_first_fill_s"]
                                                 - rows["exact"]["mean_time_to_first_fill_s"])
            out[f"{label}_{horizon:g}s"] = rows
            _log(f"queues {label} {horizon:g}s: " + ", ".join(
                f"{k} fill {v['fill_rate']:.3f}" for k, v in rows.items()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(GOOG) if GOOG.exists() else "synthetic:0")
    ap.add_argument("--n-envs", type=int, default=128)
    ap.add_argument("--horizon", type=float, default=3600.0)
    ap.add_argument("--n-steps", type=int, default=60)
    ap.add_argument("--python-envs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--queues", action="store_true")
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--passive-qty", type=int, default=100)
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()
    t0 = time.perf_counter()
    ReplayMarketConfig.from_dict({"data": a.data}).replay_data  # noqa: B018 - load once
    result: dict[str, Any] = {
        "data": a.data, "load_s": time.perf_counter() - t0, "n_envs": a.n_envs,
        "horizon_s": a.horizon, "n_steps": a.n_steps,
        "speed": speed(a.data, a.n_envs, a.horizon, a.n_steps, a.python_envs, a.seconds),
    }
    if a.queues:
        result["queues"] = queues(a.data, a.orders, a.passive_qty)
    import numba

    result["machine"] = {"platform": platform.platform(), "cpu": platform.processor(),
                         "python": platform.python_version(), "numpy": np.__version__,
                         "numba": numba.__version__}
    result["when"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    text = json.dumps(result, indent=2)
    print(text)
    if a.json_out:
        a.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
