"""Seed 002 §4's monitoring table and seed 000 §5's correlation report, from an audit trail.

Each metric of seed 002 §4 with its alert threshold, per policy, flagged where exceeded
(strictly: a value on the threshold is not an alert):

- slippage: mean over orders of the filled shares' average price against the arrival mid,
  bps (``evaluate.tca``), alert above 10;
- impact: share of fills after which the mid moved more than one tick in the trade's
  direction (the last mid recorded at or before the fill to the first recorded after it),
  alert above 5 %;
- fill rate: shares filled over shares ordered, review below 95 %;
- latency: the slowest decision (decision to child order, ``latency_us``), ms, alert above
  100 (a cap, so the maximum, with p50 / p99 in the note);
- drift: KL(actions the policy chose ‖ its reference distribution), retrain above 0.15;
- fallback rate: share of orders a fallback finished (any decision ``acting == "fallback"``;
  without that column, an order with a watchdog trigger), review above 20 %.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from execrl.domain import OrderType
from execrl.evaluate.behaviour import FLOW_BUCKETS, ORDER_KINDS, flow_report
from execrl.evaluate.tca import (
    _MARKET_COLUMNS,
    ORDER_KEY,
    _keyed,
    _mid_at,
    _mid_grid,
    side_sign,
)
from execrl.sim.base import ORDER_TYPE_CODES

MONITORING_COLUMNS = ("policy", "category", "metric", "value", "threshold", "direction",
                      "flagged", "action", "note")
_NO_TRIGGER = {"", "none", "nan", "None", "0"}


@dataclass(frozen=True)
class MonitoringThresholds:
    """Seed 002 §4's alert thresholds (fractions as fractions: 0.05 = 5 %)."""

    slippage_bps: float = 10.0
    impact_share: float = 0.05
    fill_rate: float = 0.95
    latency_ms: float = 100.0
    drift_kl: float = 0.15
    fallback_rate: float = 0.20


def action_kl(counts: NDArray, reference: Sequence[float], smoothing: float = 0.0) -> float:
    """KL(p ‖ q) in nats of the chosen actions' frequencies ``p`` against ``reference`` ``q``
    (renormalised); ``smoothing`` is added to every count first, as the watchdog does
    (``WatchdogConfig.drift_smoothing``), so both judge drift alike; without it a chosen
    action the reference gives 0 makes the divergence infinite."""
    p = np.asarray(counts, dtype=np.float64)
    q = np.asarray(reference, dtype=np.float64)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p = p + smoothing
    p, q = p / p.sum(), q / q.sum()
    on = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[on] * (np.log(p[on]) - np.log(q[on]))))


def _row(policy: str, category: str, metric: str, value: float | None, threshold: float,
         direction: str, action: str, note: str = "") -> dict[str, Any]:
    known = value is not None and np.isfinite(value)
    flagged = bool(known and (value > threshold if direction == ">" else value < threshold))
    return {"policy": policy, "category": category, "metric": metric,
            "value": float(value) if known else None, "threshold": threshold,
            "direction": direction, "flagged": flagged, "action": action, "note": note}


def _policy_of(frame: pd.DataFrame, per_order: pd.DataFrame) -> pd.Series:
    key = per_order[[*ORDER_KEY, "policy"]]
    return frame[list(ORDER_KEY)].merge(key, on=list(ORDER_KEY), how="left")["policy"]


def monitoring_table(
    per_order: pd.DataFrame,
    fills: pd.DataFrame,
    market: pd.DataFrame | None,
    decisions: pd.DataFrame | None,
    *,
    tick_size: float | None = None,
    reference_actions: Mapping[str, Sequence[float]] | None = None,
    thresholds: MonitoringThresholds | None = None,
    drift_smoothing: float = 0.0,
) -> pd.DataFrame:
    """One row per (policy, metric): value, threshold, direction, flagged, the seed's action
    and a note; ``per_order`` and ``fills`` are ``evaluate.tca.per_order_tca``'s frames."""
    th = thresholds or MonitoringThresholds()
    m = _keyed(market, "market", _MARKET_COLUMNS)
    d = _keyed(decisions, "decisions", ("order_idx",)) if decisions is not None else None
    grid = _mid_grid(m, d)
    after, _ = _mid_at(fills, grid, "t_s", "forward", exact=False)
    move = fills["sign"].to_numpy(np.float64) * (after - fills["mid_fill"].to_numpy(np.float64))
    if d is not None:
        d = d.assign(policy=_policy_of(d, per_order).to_numpy())
    rows: list[dict[str, Any]] = []
    for policy in pd.unique(per_order["policy"]):
        po = per_order[per_order["policy"] == policy]
        slip = po["slippage_arrival_bps"].dropna()
        rows.append(_row(policy, "slippage", "avg exec vs arrival (bps)",
                         slip.mean() if len(slip) else None, th.slippage_bps, ">", "alert",
                         f"{len(slip)} order(s) with fills"))
        sel = (fills["policy"] == policy).to_numpy() & np.isfinite(move)
        if not tick_size:
            why = "continuous prices (tick size 0)" if tick_size == 0 else "no tick size given"
            rows.append(_row(policy, "impact", "trades moving the mid > 1 tick", None,
                             th.impact_share, ">", "alert", why))
        else:
            # in ticks, rounded far below a tick: a 1-tick move in floats is not "> 1 tick"
            ticks = np.round(move[sel] / tick_size, 6)
            share = float((ticks > 1).mean()) if sel.any() else None
            rows.append(_row(policy, "impact", "trades moving the mid > 1 tick", share,
                             th.impact_share, ">", "alert",
                             f"{int(sel.sum())} fill(s) with a later mid"))
        rows.append(_row(policy, "fill rate", "target size executed",
                         float(po["filled"].sum() / po["qty"].sum()), th.fill_rate, "<",
                         "review"))
        dp = d[d["policy"] == policy] if d is not None else None
        rows.append(_latency_row(policy, dp, th))
        rows.append(_drift_row(policy, dp, (reference_actions or {}).get(policy), th,
                               drift_smoothing))
        rows.append(_fallback_row(policy, po, dp, th))
    return pd.DataFrame(rows, columns=list(MONITORING_COLUMNS))


def _latency_row(policy: str, d: pd.DataFrame | None, th: MonitoringThresholds
                 ) -> dict[str, Any]:
    metric = "decision latency, max (ms)"
    if d is None or "latency_us" not in d.columns or d.empty:
        return _row(policy, "latency", metric, None, th.latency_ms, ">", "alert",
                    "no latency_us in the decisions")
    ms = d["latency_us"].to_numpy(np.float64) / 1e3
    ms = ms[np.isfinite(ms)]
    if ms.size == 0:
        return _row(policy, "latency", metric, None, th.latency_ms, ">", "alert")
    p50, p99 = np.percentile(ms, [50, 99])
    over = int((ms > th.latency_ms).sum())
    return _row(policy, "latency", metric, float(ms.max()), th.latency_ms, ">", "alert",
                f"p50 {p50:.3g} ms, p99 {p99:.3g} ms, {over} of {ms.size} over")


def _drift_row(policy: str, d: pd.DataFrame | None, reference: Sequence[float] | None,
               th: MonitoringThresholds, smoothing: float) -> dict[str, Any]:
    metric = "KL(actions ‖ reference)"
    if reference is None:
        return _row(policy, "drift", metric, None, th.drift_kl, ">", "retrain",
                    "no reference action distribution given")
    if d is None or "action" not in d.columns:
        return _row(policy, "drift", metric, None, th.drift_kl, ">", "retrain",
                    "no actions in the decisions")
    own = d[d["acting"] == "policy"] if "acting" in d.columns else d
    a = own["action"].to_numpy(np.float64)
    n = len(reference)
    inside = np.isfinite(a) & (a >= 0) & (a < n) & (a == np.floor(a))
    counts = np.bincount(a[inside].astype(np.int64), minlength=n)
    note = f"{int(inside.sum())} decision(s) of the policy"
    if (~inside).any():
        note += f", {int((~inside).sum())} not an index of the reference (left out)"
    return _row(policy, "drift", metric, action_kl(counts, reference, smoothing), th.drift_kl,
                ">", "retrain", note)


def _fallback_row(policy: str, po: pd.DataFrame, d: pd.DataFrame | None,
                  th: MonitoringThresholds) -> dict[str, Any]:
    metric = "orders finished by the fallback"
    if d is not None and "acting" in d.columns:
        fell = d.loc[d["acting"] == "fallback", list(ORDER_KEY)].drop_duplicates()
        return _row(policy, "fallback rate", metric, len(fell) / len(po), th.fallback_rate,
                    ">", "review", "from the decisions' acting")
    if "trigger" in po.columns:
        fired = ~po["trigger"].astype(str).isin(_NO_TRIGGER)
        return _row(policy, "fallback rate", metric, float(fired.mean()), th.fallback_rate,
                    ">", "review", "from the orders' watchdog trigger")
    return _row(policy, "fallback rate", metric, None, th.fallback_rate, ">", "review",
                "no acting column nor trigger in the trail")


# --------------------------------------------------------------------------- seed 000 §5

_AGGRESSIVE_CODES = {ORDER_TYPE_CODES[OrderType.MARKET], ORDER_TYPE_CODES[OrderType.IOC]}
_AGGRESSIVE_NAMES = {OrderType.MARKET.value, OrderType.IOC.value}


def order_kinds(decisions: pd.DataFrame, market: pd.DataFrame | None) -> NDArray[np.intp]:
    """Per decision, 0 hold / 1 passive / 2 aggressive (``ORDER_KINDS``): the trail's
    ``order_kind`` where it records one, else from the child order as the core's
    ``last_order_kinds`` classifies it: none sent = hold; a limit priced short of the far
    touch (the market frame's ask for a buy, bid for a sell, at the decision's step) =
    passive; anything else = aggressive."""
    if "order_kind" in decisions.columns:
        kind = decisions["order_kind"]
        if not pd.api.types.is_numeric_dtype(kind):
            kind = kind.astype(str).map({k: i for i, k in enumerate(ORDER_KINDS)})
        return kind.fillna(0).to_numpy(np.intp)
    qty = decisions["child_qty"].fillna(0).to_numpy(np.float64)
    kinds = np.where(qty > 0, 2, 0).astype(np.intp)
    ctype = decisions["child_type"] if "child_type" in decisions.columns else None
    if ctype is None or market is None or not {"best_bid", "best_ask", "step"} <= set(
            market.columns) or "step" not in decisions.columns:
        return kinds
    if pd.api.types.is_numeric_dtype(ctype):
        rests = ~ctype.isin(_AGGRESSIVE_CODES).to_numpy()
    else:
        rests = ~ctype.astype(str).str.lower().isin(_AGGRESSIVE_NAMES).to_numpy()
    quotes = decisions[[*ORDER_KEY, "step"]].merge(
        market[[*ORDER_KEY, "step", "best_bid", "best_ask"]].drop_duplicates(
            [*ORDER_KEY, "step"]), on=[*ORDER_KEY, "step"], how="left")
    sign = decisions["_sign"].to_numpy(np.float64)
    far = np.where(sign > 0, quotes["best_ask"], quotes["best_bid"]).astype(np.float64)
    with np.errstate(invalid="ignore"):
        short = sign * (decisions["child_px"].to_numpy(np.float64) - far) < 0
    kinds[(qty > 0) & rests & short] = 1
    return kinds


def trail_behaviour(
    orders: pd.DataFrame, decisions: pd.DataFrame | None, market: pd.DataFrame | None,
    seed: int = 0,
) -> tuple[dict[str, Any], str | None]:
    """Seed 000 §5's correlation report per policy from the trail's decisions (the policy's
    own: ``acting == "policy"`` where recorded), through ``evaluate.behaviour.flow_report``;
    and, where it cannot be made, why."""
    if decisions is None or decisions.empty:
        return {}, "no decisions in the trail: no correlation report (seed 000 §5)"
    if "f_tick_flow_10s" not in decisions.columns:
        return {}, ("the decisions have no f_tick_flow_10s feature: no correlation report "
                    "(seed 000 §5)")
    if "order_kind" not in decisions.columns and "child_qty" not in decisions.columns:
        return {}, "the decisions have neither order_kind nor child_qty: no correlation report"
    o = _keyed(orders, "orders", ("order_idx", "side"))
    if "policy" not in o.columns:
        o["policy"] = "policy"
    o = o.assign(_sign=side_sign(o["side"]), policy=o["policy"].astype(str))
    d = _keyed(decisions, "decisions", ("order_idx",))
    d = d.merge(o[[*ORDER_KEY, "policy", "_sign"]], on=list(ORDER_KEY), how="inner",
                suffixes=("_d", ""))
    if "acting" in d.columns:
        d = d[d["acting"] == "policy"]
    m = _keyed(market, "market", _MARKET_COLUMNS) if market is not None else None
    d = d.reset_index(drop=True)
    kinds = order_kinds(d, m)
    flow = np.nan_to_num(d["f_tick_flow_10s"].to_numpy(np.float64)) * d["_sign"].to_numpy()
    bucket = np.where(flow < 0, 0, np.where(flow > 0, 2, 1)).astype(np.intp)
    out: dict[str, Any] = {}
    for policy in pd.unique(o["policy"]):
        sel = (d["policy"] == policy).to_numpy()
        keys = o.loc[o["policy"] == policy, list(ORDER_KEY)]
        index = pd.MultiIndex.from_frame(keys)
        rows = index.get_indexer(pd.MultiIndex.from_frame(d.loc[sel, list(ORDER_KEY)]))
        counts = np.zeros((len(keys), len(FLOW_BUCKETS), len(ORDER_KINDS)), np.int64)
        np.add.at(counts, (rows, bucket[sel], kinds[sel]), 1)
        total = counts.sum(axis=(0, 1))
        n = int(total.sum())
        out[policy] = {
            "decisions": n,
            "share_by_kind": {k: (float(total[j] / n) if n else None)
                              for j, k in enumerate(ORDER_KINDS)},
            **flow_report(counts, seed),
        }
        if "action" in d.columns:
            a = d.loc[sel, "action"].to_numpy(np.float64)
            whole = a[np.isfinite(a) & (a == np.floor(a))].astype(np.int64)
            if whole.size == a.size:  # a discrete action set: the action histogram
                values, freq = np.unique(whole, return_counts=True)
                out[policy]["action_histogram"] = {
                    str(v): int(c) for v, c in zip(values, freq, strict=True)}
    return out, None
