"""Transaction-cost analysis from an audit trail: what each order cost, and why.

Works on the trail's frames (``executor.audit``: orders, fills, market, decisions), not on
files, so any trail will do: a backtest's, a shadow run's, a live desk's.

Perold's decomposition, per order, in bps of the order's value at the arrival mid
(``Q · P0``), positive = cost, each part through ``execrl.domain.costs``' one IS function:

- **delay**: the decision price ``Pd`` to the arrival mid ``P0``, on all ``Q`` shares
  (``Pd`` from the orders' ``decision_px`` where the trail has one; else ``Pd = P0``, execrl's
  convention that an order arrives when it is decided, and delay is 0);
- **trading (impact)**: each fill's price against the mid prevailing at the fill
  (``Σ q (px − m_fill)``): the spread and the impact paid;
- **timing**: the mid at each fill against the arrival mid (``Σ q (m_fill − P0)``): how the
  market moved while the order worked;
- **opportunity**: the unfilled residual ``R`` at the end mid (``R (P_end − P0)``);
- **fees**: the fills' fees (rebates negative), outside the price IS.

Trading + timing + opportunity is the IS the executor books (``is_bps``: the residual charged
at the end mid, shared/DESIGN.md), recomputed here and compared with the trail's
(``is_gap_bps``); delay on top of it is the IS against the decision price (timing is measured
from the arrival, so the decision price touches one part only); fees on top of that is the
total cost. Slippage of the filled shares is measured against the arrival mid, the interval
VWAP and the participation-weighted price (PWP: the market's VWAP until it has traded
``Q / rate`` shares). The market frame carries mids, not trade prices, so each step's volume
is priced at the mean of the mids at its two ends (how the markets price their own interval
VWAP); without market volume both are missing, and said so.

Markouts: for each fill, the IS of its price against the mid ``h`` seconds later,
``side · (px − mid(t + h)) / mid(t + h)``, positive = adverse (a buy the market then moved
below), share-weighted per policy; ``h = 0`` is the mid at the fill, ``"horizon"`` the order's
end mid. ``mid(t + h)`` is the first mid the market frame records at or after ``t + h``, so
on a grid coarser than ``h`` it is measured later than ``h`` (the curve says how much later,
and flags the horizons the grid cannot resolve); a fill with no recorded mid that late has no
markout at that horizon (counted).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from execrl.domain import implementation_shortfall_bps
from execrl.evaluate.report import _figure, _num, _save_figure, _table

if TYPE_CHECKING:
    from execrl.evaluate.monitoring import MonitoringThresholds

#: seconds after each fill at which the mid is marked (plus 0 and the order's horizon)
MARKOUT_HORIZONS_S: tuple[float, ...] = (1.0, 10.0, 60.0)
#: participation rate of the participation-weighted price benchmark
PWP_RATE = 0.10
#: the columns that name one parent order across the trail's frames
ORDER_KEY = ("run_id", "order_idx")
#: Perold's parts, in the order they are reported (they sum to ``total_cost_bps``)
COMPONENTS = ("delay_bps", "impact_bps", "timing_bps", "opportunity_bps", "fees_bps")

TCA_JSON = "tca.json"
TCA_ORDERS_PARQUET = "tca_orders.parquet"
TCA_MD = "tca.md"
DECOMPOSITION_PNG = "tca_decomposition.png"
MARKOUTS_PNG = "tca_markouts.png"
FILLS_PNG = "tca_fills.png"
#: what ``write_tca`` writes into its folder
TCA_OUTPUTS = frozenset({TCA_JSON, TCA_ORDERS_PARQUET, TCA_MD, DECOMPOSITION_PNG,
                         MARKOUTS_PNG, FILLS_PNG})

_ORDER_COLUMNS = ("order_idx", "side", "qty", "arrival_mid")
_FILL_COLUMNS = ("order_idx", "t_s", "qty", "px")
_MARKET_COLUMNS = ("order_idx", "t_s", "mid")
#: the decision columns the report reads (the rest, features and scores, is left behind)
_DECISION_COLUMNS = ("run_id", "order_idx", "policy", "step", "t_s", "mid", "action",
                     "acting", "latency_us", "child_qty", "child_type", "child_px",
                     "order_kind", "f_tick_flow_10s")


# --------------------------------------------------------------------------- frames


def side_sign(side: pd.Series) -> NDArray[np.float64]:
    """+1 for a buy, -1 for a sell, from "buy"/"sell" (any case) or a signed number."""
    if pd.api.types.is_numeric_dtype(side):
        sign = np.sign(side.to_numpy(dtype=np.float64))
    else:
        text = side.astype(str).str.lower()
        sign = np.where(text == "buy", 1.0, np.where(text == "sell", -1.0, 0.0))
    if (sign == 0).any():
        bad = side[sign == 0].iloc[0]
        raise ValueError(f"orders: side {bad!r} is neither buy/sell nor a signed number")
    return sign


def _keyed(frame: pd.DataFrame | None, name: str, needed: Sequence[str]) -> pd.DataFrame:
    """A copy with every ``ORDER_KEY`` column (``run_id`` "" where the trail has one run)."""
    if frame is None:
        frame = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in needed})
    missing = sorted(set(needed) - set(frame.columns))
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}")
    out = frame.copy()
    if "run_id" not in out.columns:
        out["run_id"] = ""
    out["run_id"] = out["run_id"].astype(str)
    out["order_idx"] = out["order_idx"].astype(np.int64)
    return out


def _mid_grid(market: pd.DataFrame, decisions: pd.DataFrame | None) -> pd.DataFrame:
    """(run_id, order_idx, t_s, mid) sorted by time: the market frame's mids, and for an order
    the market frame does not cover, the mids its decisions saw."""
    grid = market[[*ORDER_KEY, "t_s", "mid"]]
    if decisions is not None and {"t_s", "mid"} <= set(decisions.columns):
        covered = pd.MultiIndex.from_frame(grid[list(ORDER_KEY)].drop_duplicates())
        d = decisions[[*ORDER_KEY, "t_s", "mid"]]
        extra = d[~pd.MultiIndex.from_frame(d[list(ORDER_KEY)]).isin(covered)]
        grid = pd.concat([grid, extra], ignore_index=True)
    grid = grid[np.isfinite(grid["mid"].to_numpy(dtype=np.float64))]
    grid = grid.astype({"t_s": np.float64, "mid": np.float64})
    return grid.sort_values("t_s", kind="stable").reset_index(drop=True)


def _mid_at(points: pd.DataFrame, grid: pd.DataFrame, at: str, direction: str,
            exact: bool = True) -> NDArray[np.float64]:
    """For each row of ``points`` (with the key and a time column ``at``), the mid of the
    same order on the grid: ``backward`` = the last at or before, ``forward`` = the first at
    or after (``exact=False``: strictly); returns (mid, grid time), NaN where none."""
    left = points[[*ORDER_KEY, at]].rename(columns={at: "t_s"}).astype({"t_s": np.float64})
    left["_row"] = np.arange(len(left))
    left = left.sort_values("t_s", kind="stable")
    right = grid.assign(t_grid=grid["t_s"])
    merged = pd.merge_asof(left, right, on="t_s", by=list(ORDER_KEY), direction=direction,
                           allow_exact_matches=exact)
    merged = merged.sort_values("_row")
    return np.stack([merged["mid"].to_numpy(np.float64), merged["t_grid"].to_numpy(np.float64)])


def _bps(per_share: NDArray, arrival: NDArray, sign: NDArray) -> NDArray[np.float64]:
    """A price difference per share of the parent order, in IS bps of the arrival mid."""
    arrival = np.asarray(arrival, dtype=np.float64)
    return implementation_shortfall_bps(arrival + per_share, arrival, sign) + 0.0  # no -0.0


# --------------------------------------------------------------------------- per order


def _order_frame(orders: pd.DataFrame) -> pd.DataFrame:
    o = _keyed(orders, "orders", _ORDER_COLUMNS)
    dup = o.duplicated(list(ORDER_KEY))
    if dup.any():
        row = o.loc[dup].iloc[0]
        raise ValueError(f"orders has duplicate (run_id, order_idx) ({row['run_id']!r}, "
                         f"{row['order_idx']}): give each policy's run its own run_id")
    o["sign"] = side_sign(o["side"])
    if "policy" not in o.columns:
        o["policy"] = "policy"
    o["policy"] = o["policy"].astype(str)
    return o.reset_index(drop=True)


def _fill_frame(fills: pd.DataFrame | None, o: pd.DataFrame, grid: pd.DataFrame
                ) -> pd.DataFrame:
    """Fills with their order's side, arrival and policy, and the mid at each fill."""
    f = _keyed(fills, "fills", _FILL_COLUMNS)
    if "fee" not in f.columns:
        f["fee"] = 0.0
    f = f.drop(columns=[c for c in ("sign", "arrival_mid", "policy") if c in f.columns])
    f = f.merge(o[[*ORDER_KEY, "sign", "arrival_mid", "policy"]], on=list(ORDER_KEY),
                how="inner", validate="many_to_one")
    f = f.astype({"t_s": np.float64, "qty": np.float64, "px": np.float64, "fee": np.float64})
    f = f[f["qty"] > 0].reset_index(drop=True)
    mid, _ = _mid_at(f, grid, "t_s", "backward")
    # a fill before the first recorded mid is priced against the arrival mid
    f["mid_fill"] = np.where(np.isfinite(mid), mid, f["arrival_mid"].to_numpy(np.float64))
    return f


def _market_benchmarks(o: pd.DataFrame, market: pd.DataFrame, rate: float) -> pd.DataFrame:
    """Per order: the interval VWAP and the PWP at ``rate`` from the market's volume, with
    whether the market traded the ``Q / rate`` shares PWP needs. A row's ``market_volume`` is
    what traded over the step that ended at it (the market's ``last_volume``, as the
    executor records it), priced at the mean of the mids at the step's two ends, as the
    markets price their own interval VWAP; the first row's volume came before the order."""
    cols = {"interval_vwap": np.nan, "pwp": np.nan, "pwp_complete": False}
    if "market_volume" not in market.columns or market.empty:
        return o[list(ORDER_KEY)].assign(**cols)
    m = market[[*ORDER_KEY, "t_s", "mid", "market_volume"]].astype(
        {"t_s": np.float64, "mid": np.float64, "market_volume": np.float64})
    m = m.sort_values([*ORDER_KEY, "t_s"], kind="stable")
    px = 0.5 * (m["mid"] + m.groupby(list(ORDER_KEY), sort=False)["mid"].shift(1))
    m = m.assign(step_px=px)
    m = m[np.isfinite(m["market_volume"]) & (m["market_volume"] > 0) & np.isfinite(px)]
    m = m.merge(o[[*ORDER_KEY, "qty"]], on=list(ORDER_KEY), how="inner")
    g = m.groupby(list(ORDER_KEY), sort=False)
    before = g["market_volume"].cumsum() - m["market_volume"]
    target = m["qty"].astype(np.float64) / rate
    used = np.clip(target - before, 0.0, m["market_volume"])  # the crossing step in part
    m = m.assign(pv=m["step_px"] * m["market_volume"], pv_pwp=m["step_px"] * used, v_pwp=used)
    s = m.groupby(list(ORDER_KEY), sort=False)[["pv", "market_volume", "pv_pwp", "v_pwp"]].sum()
    s["interval_vwap"] = s["pv"] / s["market_volume"]
    s["pwp"] = s["pv_pwp"] / s["v_pwp"]
    s["pwp_complete"] = s["market_volume"] >= m.groupby(list(ORDER_KEY), sort=False)[
        "qty"].first() / rate
    out = o[list(ORDER_KEY)].merge(s[["interval_vwap", "pwp", "pwp_complete"]].reset_index(),
                                   on=list(ORDER_KEY), how="left")
    out["pwp_complete"] = out["pwp_complete"].fillna(False).astype(bool)
    return out


def _end_mids(o: pd.DataFrame, grid: pd.DataFrame) -> NDArray[np.float64]:
    """The mid the residual is charged at: the orders' ``end_mid`` where the trail has it,
    else the last mid recorded for the order."""
    last = grid.groupby(list(ORDER_KEY), sort=False)["mid"].last().rename("_last").reset_index()
    end = o[list(ORDER_KEY)].merge(last, on=list(ORDER_KEY), how="left")["_last"]
    end = end.to_numpy(np.float64)
    if "end_mid" in o.columns:
        given = o["end_mid"].to_numpy(np.float64)
        end = np.where(np.isfinite(given), given, end)
    return end


def per_order_tca(
    orders: pd.DataFrame,
    fills: pd.DataFrame | None,
    market: pd.DataFrame | None,
    decisions: pd.DataFrame | None = None,
    pwp_rate: float = PWP_RATE,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per parent order: Perold's parts (``COMPONENTS``), the IS recomputed and the
    trail's booked one, slippage against arrival / interval VWAP / PWP, fills and fill rate;
    and the fills frame with each fill's mid (for markouts and monitoring)."""
    if not 0 < pwp_rate <= 1:
        raise ValueError(f"pwp_rate must lie in (0, 1], got {pwp_rate}")
    o = _order_frame(orders)
    m = _keyed(market, "market", _MARKET_COLUMNS)
    d = _keyed(decisions, "decisions", ("order_idx",)) if decisions is not None else None
    grid = _mid_grid(m, d)
    f = _fill_frame(fills, o, grid)

    f["cash"] = f["qty"] * f["px"]
    f["impact_cash"] = f["qty"] * (f["px"] - f["mid_fill"])
    f["timing_cash"] = f["qty"] * (f["mid_fill"] - f["arrival_mid"])
    sums = f.groupby(list(ORDER_KEY), sort=False)[
        ["qty", "cash", "impact_cash", "timing_cash", "fee"]].sum()
    sums["n_fills"] = f.groupby(list(ORDER_KEY), sort=False).size()
    t = o.merge(sums.reset_index(), on=list(ORDER_KEY), how="left", suffixes=("", "_fill"))
    for c in ("qty_fill", "cash", "impact_cash", "timing_cash", "fee", "n_fills"):
        t[c] = t[c].fillna(0.0)

    q = t["qty"].to_numpy(np.float64)
    filled = t["qty_fill"].to_numpy(np.float64)
    residual = q - filled
    p0 = t["arrival_mid"].to_numpy(np.float64)
    s = t["sign"].to_numpy(np.float64)
    end = _end_mids(t, grid)
    pd_ = (t["decision_px"].to_numpy(np.float64) if "decision_px" in t.columns
           else np.full(len(t), np.nan))
    pd_ = np.where(np.isfinite(pd_), pd_, p0)

    out = t[[*ORDER_KEY, "policy"]].copy()
    for c in ("order_id", "symbol"):
        if c in t.columns:
            out[c] = t[c]
    out["side"] = np.where(s > 0, "buy", "sell")
    out["qty"] = q
    out["filled"] = filled
    out["fill_rate"] = filled / q
    out["fills"] = t["n_fills"].to_numpy(np.int64)
    out["arrival_mid"] = p0
    out["decision_px"] = pd_
    out["end_mid"] = end
    span = grid.groupby(list(ORDER_KEY), sort=False)["t_s"].agg(["min", "max"]).reset_index()
    span = t[list(ORDER_KEY)].merge(span, on=list(ORDER_KEY), how="left")
    out["start_t"] = span["min"].to_numpy(np.float64)
    out["end_t"] = span["max"].to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(filled > 0, t["cash"].to_numpy(np.float64) / np.maximum(filled, 1), np.nan)
    out["avg_px"] = avg
    out["delay_bps"] = _bps(p0 - pd_, p0, s)
    out["impact_bps"] = _bps(t["impact_cash"].to_numpy(np.float64) / q, p0, s)
    out["timing_bps"] = _bps(t["timing_cash"].to_numpy(np.float64) / q, p0, s)
    opp = np.where(residual > 0, residual * (end - p0), 0.0)
    out["opportunity_bps"] = _bps(opp / q, p0, s)
    out["fees_bps"] = _bps(t["fee"].to_numpy(np.float64) / q, p0, np.ones_like(s))
    # every share at its price, the residual at the end mid: the executor's convention
    every_share = (t["cash"].to_numpy(np.float64) + np.where(residual > 0, residual * end, 0.0))
    out["is_bps"] = implementation_shortfall_bps(every_share / q, p0, s)
    out["is_vs_decision_bps"] = out["is_bps"] + out["delay_bps"]
    out["total_cost_bps"] = out["is_vs_decision_bps"] + out["fees_bps"]
    booked = t["is_bps"].to_numpy(np.float64) if "is_bps" in t.columns else np.nan
    out["booked_is_bps"] = booked
    out["is_gap_bps"] = out["is_bps"] - booked
    bench = _market_benchmarks(t, m, pwp_rate)
    out["interval_vwap"] = bench["interval_vwap"].to_numpy(np.float64)
    out["pwp"] = bench["pwp"].to_numpy(np.float64)
    out["pwp_complete"] = bench["pwp_complete"].to_numpy(bool)
    out["slippage_arrival_bps"] = implementation_shortfall_bps(avg, p0, s)
    out["slippage_interval_vwap_bps"] = implementation_shortfall_bps(avg, out["interval_vwap"], s)
    out["slippage_pwp_bps"] = implementation_shortfall_bps(avg, out["pwp"], s)
    return out, f.assign(end_mid=f[list(ORDER_KEY)].merge(
        out[[*ORDER_KEY, "end_mid"]], on=list(ORDER_KEY), how="left")["end_mid"].to_numpy())


_SUMMED = ("qty", "filled", "fills")
_MEANS = ("fill_rate", *COMPONENTS, "is_bps", "is_vs_decision_bps", "total_cost_bps",
          "booked_is_bps", "slippage_arrival_bps", "slippage_interval_vwap_bps",
          "slippage_pwp_bps")


def tca_by_policy(per_order: pd.DataFrame) -> pd.DataFrame:
    """Per policy: orders, shares, and the mean over orders of every bps column (an equal
    weight per order, as results.json's ``is_bps.mean``, so the parts' means still sum to the
    mean total); slippage means skip orders where the benchmark is missing (NaN)."""
    g = per_order.groupby("policy", sort=False)
    out = g.size().rename("orders").to_frame()
    out = out.join(g[list(_SUMMED)].sum()).join(g[list(_MEANS)].mean())
    out["fill_rate_shares"] = out["filled"] / out["qty"]
    return out.reset_index()


# --------------------------------------------------------------------------- markouts


def markouts(
    fills: pd.DataFrame, market: pd.DataFrame | None,
    horizons_s: Sequence[float] = MARKOUT_HORIZONS_S, decisions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The reversion curve: per policy and horizon (0, each of ``horizons_s``, "horizon"),
    the share-weighted mean markout (bps, + = adverse), the fills and shares it covers, the
    mean extra lag the grid adds (``lag_s``: grid time − (t + h)) and ``coarse`` where the
    order's grid step exceeds ``h``. ``fills`` is ``per_order_tca``'s second frame."""
    m = _keyed(market, "market", _MARKET_COLUMNS)
    d = _keyed(decisions, "decisions", ("order_idx",)) if decisions is not None else None
    grid = _mid_grid(m, d)
    step = grid.groupby(list(ORDER_KEY), sort=False)["t_s"].agg(
        lambda t: float(np.median(np.diff(t.to_numpy()))) if len(t) > 1 else np.nan)
    f = fills.reset_index(drop=True)
    f_step = f[list(ORDER_KEY)].merge(step.rename("grid_s").reset_index(), on=list(ORDER_KEY),
                                      how="left")["grid_s"].to_numpy(np.float64)
    sign, px, q = (f[c].to_numpy(np.float64) for c in ("sign", "px", "qty"))
    rows: list[dict[str, Any]] = []
    marks = [("0", 0.0, f["mid_fill"].to_numpy(np.float64), np.zeros(len(f)))]
    for h in horizons_s:
        mid, t_grid = _mid_at(f.assign(_at=f["t_s"] + h), grid, "_at", "forward")
        marks.append((f"{h:g}s", float(h), mid, t_grid - (f["t_s"].to_numpy() + h)))
    marks.append(("horizon", math.nan, f["end_mid"].to_numpy(np.float64), np.full(len(f), 0.0)))
    for label, h, mid, lag in marks:
        value = implementation_shortfall_bps(px, mid, sign)
        ok = np.isfinite(value)
        for policy in pd.unique(f["policy"]):
            sel = ok & (f["policy"].to_numpy() == policy)
            shares = float(q[sel].sum())
            coarse = bool(np.nanmax(f_step[sel], initial=0.0) > h) if h > 0 else False
            rows.append({
                "policy": policy, "horizon": label, "h_s": h,
                "markout_bps": float((value[sel] * q[sel]).sum() / shares) if shares else None,
                "fills": int(sel.sum()),
                "fills_without": int(((f["policy"].to_numpy() == policy) & ~ok).sum()),
                "shares": shares,
                "lag_s": float(np.mean(lag[sel])) if sel.any() else None,
                "coarse": coarse,
            })
    return pd.DataFrame(rows, columns=["policy", "horizon", "h_s", "markout_bps", "fills",
                                       "fills_without", "shares", "lag_s", "coarse"])


# --------------------------------------------------------------------------- the report


@dataclass
class TcaReport:
    """Everything ``execrl tca`` shows: tables as frames, ``to_dict`` for JSON."""

    per_order: pd.DataFrame
    by_policy: pd.DataFrame
    markouts: pd.DataFrame
    monitoring: pd.DataFrame
    behaviour: dict[str, Any] = field(default_factory=dict)
    fills: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    pwp_rate: float = PWP_RATE

    def to_dict(self) -> dict[str, Any]:
        """The ``tca.json`` content: per policy, the aggregate, its reversion curve, its
        monitoring rows and its correlation report; and the notes."""
        policies: dict[str, Any] = {}
        for rec in _records(self.by_policy):
            p = rec.pop("policy")
            policies[p] = {
                "tca": rec,
                "markouts": [{k: v for k, v in r.items() if k != "policy"}
                             for r in _records(self.markouts[self.markouts["policy"] == p])],
                "monitoring": [{k: v for k, v in r.items() if k != "policy"}
                               for r in _records(self.monitoring[self.monitoring["policy"] == p])],
            }
            if p in self.behaviour:
                policies[p]["behaviour"] = self.behaviour[p]
        return {"pwp_rate": self.pwp_rate, "components": list(COMPONENTS),
                "policies": policies, "notes": list(self.notes)}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: numpy scalars as Python ones, NaN as None."""
    out = []
    for rec in frame.to_dict(orient="records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            clean[str(k)] = v
        out.append(clean)
    return out


def tca_report(
    orders: pd.DataFrame,
    fills: pd.DataFrame | None,
    market: pd.DataFrame | None,
    decisions: pd.DataFrame | None = None,
    *,
    tick_size: float | None = None,
    pwp_rate: float = PWP_RATE,
    horizons_s: Sequence[float] = MARKOUT_HORIZONS_S,
    reference_actions: Mapping[str, Sequence[float]] | None = None,
    thresholds: MonitoringThresholds | None = None,
    drift_smoothing: float = 0.0,
    seed: int = 0,
) -> TcaReport:
    """The whole report from a trail's frames. ``tick_size``: the market's price grid (for
    the share of trades moving the mid by more than a tick); ``reference_actions``: per
    policy, the action distribution drift is measured against (the watchdog's reference);
    ``thresholds``: ``evaluate.monitoring.MonitoringThresholds`` (seed 002 §4's by default);
    ``drift_smoothing``: added to each action count before the KL (the watchdog's
    ``drift_smoothing``, so the table and the watchdog judge drift alike)."""
    from execrl.evaluate.monitoring import MonitoringThresholds, monitoring_table, trail_behaviour

    if decisions is not None:
        decisions = decisions[[c for c in _DECISION_COLUMNS if c in decisions.columns]]
    per_order, f = per_order_tca(orders, fills, market, decisions, pwp_rate)
    curve = markouts(f, market, horizons_s, decisions)
    notes: list[str] = []
    coarse = curve[curve["coarse"]]
    if not coarse.empty:
        labels = ", ".join(pd.unique(coarse["horizon"]))
        notes.append(f"market grid coarser than the markout horizon ({labels}): those mids "
                     "are the first recorded at or after t + h (lag_s says how much later)")
    lost = curve[(curve["fills_without"] > 0) & (curve["horizon"] != "horizon")]
    if not lost.empty:
        labels = ", ".join(pd.unique(lost["horizon"]))
        notes.append(f"fills with no mid recorded h after them (past the order's last mid) "
                     f"are left out of those horizons ({labels}); fills_without counts them")
    no_volume = per_order["interval_vwap"].isna()
    if no_volume.all():
        notes.append("no market volume in the trail: interval VWAP and PWP are missing")
    elif no_volume.any():
        notes.append(f"{int(no_volume.sum())} order(s) without market volume in the trail: "
                     "their interval VWAP and PWP are missing")
    short = ~no_volume & ~per_order["pwp_complete"]
    if short.any():
        notes.append(f"{int(short.sum())} order(s): the market traded less than Q / "
                     f"{pwp_rate:g} over the order's interval, so their PWP is the interval "
                     "VWAP of what it traded")
    gap = per_order["is_gap_bps"].abs()
    if (gap > 1e-6).any():
        notes.append(f"recomputed IS differs from the booked is_bps by up to {gap.max():.4g} "
                     "bps: the trail's market frame lacks the end mid the residual was "
                     "charged at, or its fills are incomplete")
    monitor = monitoring_table(per_order, f, market, decisions, tick_size=tick_size,
                               reference_actions=reference_actions,
                               thresholds=thresholds or MonitoringThresholds(),
                               drift_smoothing=drift_smoothing)
    behaviour, why = trail_behaviour(orders, decisions, market, seed=seed)
    if why:
        notes.append(why)
    return TcaReport(per_order, tca_by_policy(per_order), curve, monitor, behaviour, f,
                     notes, pwp_rate)


def tca_from_trail(trail: Any, **kwargs: Any) -> TcaReport:
    """``tca_report`` on a trail object with ``orders``, ``fills``, ``market`` and
    ``decisions`` frames (``executor.audit.read_trail``'s); keywords as ``tca_report``'s."""
    return tca_report(trail.orders, getattr(trail, "fills", None),
                      getattr(trail, "market", None), getattr(trail, "decisions", None),
                      **kwargs)


# --------------------------------------------------------------------------- rendering


_LABELS = {"delay_bps": "delay", "impact_bps": "trading (impact)", "timing_bps": "timing",
           "opportunity_bps": "opportunity", "fees_bps": "fees"}


def render_tca_markdown(report: TcaReport, images: Sequence[tuple[str, str]] = (),
                        heading: str = "#") -> str:
    """The TCA page (or, with ``heading="##"``, a section of the evaluation report)."""
    h2 = heading + "#"
    out = [f"{heading} Transaction-cost analysis", ""]
    out.append(
        "Perold's decomposition, mean over orders, in bps of the order's value at the arrival "
        "mid, positive = cost. Delay: decision price to arrival. Trading (impact): fill price "
        "vs the mid at the fill. Timing: mid at the fill vs arrival. Opportunity: the unfilled "
        "residual at the end mid. Trading + timing + opportunity = IS (the executor's "
        "convention); + delay = IS vs the decision price; + fees = total cost."
    )
    out.append("")
    b = report.by_policy
    rows = [[r["policy"], f"{int(r['orders'])}"]
            + [_val(r[c]) for c in COMPONENTS]
            + [_val(r["is_bps"]), _val(r["booked_is_bps"]), _val(r["total_cost_bps"]),
               _val(r["fill_rate"], ".3f")] for _, r in b.iterrows()]
    header = ["policy", "orders", *(_LABELS[c] for c in COMPONENTS), "IS", "booked IS",
              "total cost", "fill rate"]
    out += _table(header, rows, "lrrrrrrrrrr")
    worst = report.per_order.nlargest(min(5, len(report.per_order)), "total_cost_bps")
    if len(report.per_order) > 1:
        out += ["", f"{h2} Costliest orders", ""]
        rows = [[str(r.get("order_id", r["order_idx"])), r["policy"], r["side"]]
                + [_val(r[c]) for c in COMPONENTS]
                + [_val(r["total_cost_bps"]), _val(r["fill_rate"], ".3f")]
                for _, r in worst.iterrows()]
        header = ["order", "policy", "side", *(_LABELS[c] for c in COMPONENTS), "total cost",
                  "fill rate"]
        out += _table(header, rows, "lll" + "r" * 7)
    out += ["", f"{h2} Slippage of the filled shares", ""]
    out.append(f"Average fill price against the arrival mid, the interval VWAP and the "
               f"participation-weighted price at {report.pwp_rate:.0%} (each step's market "
               "volume at its mean mid), bps, positive = cost.")
    out.append("")
    rows = [[r["policy"], _val(r["slippage_arrival_bps"]), _val(r["slippage_interval_vwap_bps"]),
             _val(r["slippage_pwp_bps"])] for _, r in b.iterrows()]
    out += _table(["policy", "vs arrival", "vs interval VWAP", "vs PWP"], rows, "lrrr")
    out += ["", f"{h2} Post-trade markouts (reversion curve)", ""]
    out.append("Share-weighted IS of each fill's price against the mid h after it, bps, "
               "positive = adverse (the market moved against the trade afterwards); 0 = the "
               "mid at the fill, horizon = the order's end mid.")
    out.append("")
    c = report.markouts
    labels = list(pd.unique(c["horizon"]))
    rows = []
    for p in pd.unique(c["policy"]):
        cp = c[c["policy"] == p].set_index("horizon")
        rows.append([p] + [_val(cp.loc[h, "markout_bps"]) + ("*" if cp.loc[h, "coarse"] else "")
                           for h in labels])
    out += _table(["policy", *labels], rows, "l" + "r" * len(labels))
    if c["coarse"].any():
        out.append("")
        out.append("\\* the market grid is coarser than h: measured at the next recorded mid.")
    out += ["", f"{h2} Monitoring (seed 002 §4)", ""]
    rows = [[r["policy"], r["metric"], _val(r["value"], ".4g"),
             f"{r['direction']} {r['threshold']:g}", r["action"] if r["flagged"] else "ok"
             if r["value"] is not None and not _isnan(r["value"]) else "n/a", r["note"] or ""]
            for _, r in report.monitoring.iterrows()]
    out += _table(["policy", "metric", "value", "alert when", "status", "note"], rows, "llrlll")
    flows = {p: e for p, e in report.behaviour.items() if "by_tick_flow" in e}
    if flows:
        from execrl.evaluate.report import _behaviour_section

        out += [line.replace("## ", h2 + " ", 1) if line.startswith("## ") else line
                for line in _behaviour_section({p: {"behaviour": e} for p, e in flows.items()})]
    if report.notes:
        out += ["", f"{h2} Notes", ""] + [f"- {n}" for n in report.notes]
    if images:
        out += ["", f"{h2} Plots", ""]
        for caption, name in images:
            out += [f"![{caption}]({name})", ""]
    return "\n".join(out).rstrip() + "\n"


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _val(value: Any, spec: str = ".2f") -> str:
    """``_num``, with a missing value (None or NaN) as 'n/a'."""
    return "n/a" if value is None or _isnan(value) else _num(value, spec)


def plot_decomposition(path: Path, by_policy: pd.DataFrame) -> None:
    """Stacked bars of Perold's parts per policy, with the total cost marked."""
    fig = _figure(figsize=(max(6.0, 1.4 * len(by_policy)), 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(by_policy))
    pos = np.zeros(len(by_policy))
    neg = np.zeros(len(by_policy))
    for i, c in enumerate(COMPONENTS):
        v = by_policy[c].to_numpy(np.float64)
        base = np.where(v >= 0, pos, neg)
        ax.bar(x, v, bottom=base, color=f"C{i}", label=_LABELS[c])
        pos += np.where(v >= 0, v, 0.0)
        neg += np.where(v < 0, v, 0.0)
    ax.scatter(x, by_policy["total_cost_bps"], marker="D", color="black", zorder=3,
               label="total cost")
    ax.set_xticks(x, list(by_policy["policy"]))
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("bps of arrival value, + = cost")
    ax.set_title("Implementation shortfall by Perold's parts (mean per order)")
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def plot_markouts(path: Path, curve: pd.DataFrame) -> None:
    """Markout per horizon per policy: the reversion curve (hollow marker = coarse grid)."""
    fig = _figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    labels = list(pd.unique(curve["horizon"]))
    x = np.arange(len(labels))
    for i, p in enumerate(pd.unique(curve["policy"])):
        cp = curve[curve["policy"] == p].set_index("horizon").loc[labels]
        y = cp["markout_bps"].astype(np.float64).to_numpy()
        ax.plot(x, y, marker="o", color=f"C{i}", label=p)
        coarse = cp["coarse"].to_numpy(bool)
        ax.scatter(x[coarse], y[coarse], s=80, facecolors="white", edgecolors=f"C{i}", zorder=3)
    ax.set_xticks(x, labels)
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("time after the fill")
    ax.set_ylabel("markout (bps, + = adverse)")
    ax.set_title("Post-trade markouts (share-weighted)")
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def plot_fills(path: Path, fills: pd.DataFrame, per_order: pd.DataFrame) -> None:
    """Mean filled fraction of the order against time since the order's start (its first
    recorded mid), per policy."""
    fig = _figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    by_key = per_order.set_index([*ORDER_KEY])
    for i, p in enumerate(pd.unique(per_order["policy"])):
        f = fills[fills["policy"] == p]
        n = int((per_order["policy"] == p).sum())
        if f.empty or n == 0:
            continue
        rows = by_key.loc[pd.MultiIndex.from_frame(f[list(ORDER_KEY)])]
        start = rows["start_t"].to_numpy(np.float64)
        rel = f["t_s"].to_numpy(np.float64) - np.where(np.isfinite(start), start, 0.0)
        frac = f["qty"].to_numpy(np.float64) / rows["qty"].to_numpy(np.float64)
        order = np.argsort(rel, kind="stable")
        po = per_order[per_order["policy"] == p]
        end = float(np.nanmax((po["end_t"] - po["start_t"]).to_numpy(np.float64),
                              initial=rel.max()))
        x = np.concatenate([[0.0], rel[order], [max(end, rel.max())]])
        y = np.concatenate([[0.0], np.cumsum(frac[order]) / n])
        ax.step(x, np.append(y, y[-1]), where="post", color=f"C{i}", label=p)
    ax.set_xlabel("seconds after the order's start")
    ax.set_ylabel("mean filled fraction of the order")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Fills over time")
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def write_tca_plots(out_dir: Path, report: TcaReport, plots: bool = True
                    ) -> list[tuple[str, str]]:
    """The three plots into ``out_dir``; returns ``(caption, file name)`` for the Markdown
    (the evaluation report embeds them with ``render_tca_markdown(..., heading="##")``).
    With ``plots=False`` none is drawn and stale ones are removed."""
    names = (DECOMPOSITION_PNG, MARKOUTS_PNG, FILLS_PNG)
    if not plots:
        for name in names:
            (out_dir / name).unlink(missing_ok=True)
        return []
    plot_decomposition(out_dir / DECOMPOSITION_PNG, report.by_policy)
    plot_markouts(out_dir / MARKOUTS_PNG, report.markouts)
    plot_fills(out_dir / FILLS_PNG, report.fills, report.per_order)
    captions = ("IS decomposition per policy", "Markouts after fills (reversion curve)",
                "Fills over time")
    return list(zip(captions, names, strict=True))


def write_tca(out_dir: Path, report: TcaReport, plots: bool = True) -> Path:
    """tca.json, tca_orders.parquet, the plots and tca.md into ``out_dir`` (a staging folder:
    ``execrl.domain.outputs.staged_folder``); tca.md last, so it exists only with its plots."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"out_dir must be an existing directory, got {str(out_dir)!r}")
    report.per_order.to_parquet(out_dir / TCA_ORDERS_PARQUET, index=False)
    text = json.dumps(report.to_dict(), indent=2, allow_nan=False)
    (out_dir / TCA_JSON).write_text(text)
    images = write_tca_plots(out_dir, report, plots)
    path = out_dir / TCA_MD
    path.write_text(render_tca_markdown(report, images), encoding="utf-8")
    return path
