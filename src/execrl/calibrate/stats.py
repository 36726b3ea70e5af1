"""The stylised facts a calibrated book is judged by, computed the same way on any ``BookTape``.

Every statistic is a plain function of a tape returning JSON-ready numbers (lists, floats), so
the report puts the real day's and the simulator's side by side from one code path:

- spread: time-weighted distribution (each book stands until the next event);
- depth: time-weighted mean size per occupied level (LOBSTER's levels), and per price distance
  from the best quote in bins of the calibration's tick; a distance bin counts only while the
  tape shows the whole bin (a 10-level file says nothing beyond its 10th level);
- market-order sizes (LOBSTER's executions merged into orders, ``tape.market_orders``);
- inter-event times: between consecutive events, and between market orders;
- return autocorrelation in event time (successive non-zero mid-price changes) and in clock
  time (log-mid returns on a fixed grid);
- volatility signature: realised variance per second of log-mid returns sampled every Δ
  seconds (averaged over ``offsets`` shifted grids), as a daily volatility; flat for a
  martingale mid, falling with Δ where the mid mean-reverts (bid-ask bounce).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from execrl.calibrate.tape import KIND_NAMES, KIND_OTHER, BookTape

#: Trading seconds in a day (9:30 to 16:00), the unit of daily volatility.
TRADING_DAY_S = 23_400.0
#: Default sampling intervals of the volatility signature, seconds.
SIGNATURE_INTERVALS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
#: Default autocorrelation lags.
ACF_LAGS = 20


def _quantiles(x: NDArray[np.float64], weights: NDArray[np.float64] | None = None,
               qs: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)) -> dict[str, float]:
    """Quantiles of ``x`` (weighted by ``weights``: the smallest value whose cumulative weight
    reaches q)."""
    if x.size == 0:
        return {f"p{round(q * 100)}": math.nan for q in qs}
    if weights is None:
        weights = np.ones_like(x, dtype=float)
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(weights[order])
    cum /= cum[-1]
    return {f"p{round(q * 100)}": float(x[order][np.searchsorted(cum, q - 1e-12)])
            for q in qs}


def spread_distribution(tape: BookTape) -> dict[str, Any]:
    """Time-weighted distribution of the quoted spread, in cents (rows with both sides)."""
    dur = tape.durations()
    spread = tape.spread
    ok = np.isfinite(spread) & (dur > 0)
    cents = np.round(spread[ok] * 100.0).astype(np.int64)
    w = dur[ok]
    values, inverse = np.unique(cents, return_inverse=True)
    share = np.bincount(inverse, weights=w) / w.sum()
    return {
        "unit": "cents",
        "values": values.tolist(),
        "time_share": share.tolist(),
        "mean": float(np.average(cents, weights=w)),
        **_quantiles(cents.astype(float), w),
    }


def depth_profile(tape: BookTape, bin_cents: int, n_bins: int = 10) -> dict[str, Any]:
    """Time-weighted mean size per occupied level and per distance from the best quote in
    bins of ``bin_cents`` (bin j holds prices j·bin to (j+1)·bin − 1 cents behind the best)."""
    dur = tape.durations()
    total = dur.sum()
    out: dict[str, Any] = {"bin_cents": int(bin_cents), "unit": "shares"}
    n = tape.n_events
    bid_to = np.full(n, -np.inf) if tape.bid_seen_to is None else tape.bid_seen_to
    ask_to = np.full(n, np.inf) if tape.ask_seen_to is None else tape.ask_seen_to
    for side, px, qty, sign, seen_to in (("bid", tape.bid_px, tape.bid_qty, 1.0, bid_to),
                                         ("ask", tape.ask_px, tape.ask_qty, -1.0, ask_to)):
        out[f"{side}_by_level"] = (dur @ qty / total).tolist()
        best = px[:, :1]
        dist = np.round(sign * (best - px) * 100.0)  # cents behind the best, NaN if empty
        occupied = qty > 0
        sums = np.zeros((tape.n_events, n_bins))
        j = np.where(occupied, dist // bin_cents, -1).astype(np.int64)
        rows = np.broadcast_to(np.arange(tape.n_events)[:, None], j.shape)
        inside = occupied & (j >= 0) & (j < n_bins)
        np.add.at(sums, (rows[inside], j[inside]), qty[inside])
        # a bin is seen whole while the farthest price the tape can show lies at or behind
        # its far edge (LOBSTER: its last level when all are occupied; else the book ends)
        reach = np.round(sign * (best[:, 0] - seen_to) * 100.0)  # cents, inf: everything
        reach = np.where(np.isnan(reach), np.inf, reach)
        edges = (np.arange(n_bins) + 1) * bin_cents - 1
        seen = reach[:, None] >= edges[None, :]
        w_seen = dur @ seen
        out[f"{side}_by_distance"] = [
            float((dur * seen[:, k]) @ sums[:, k] / w_seen[k]) if w_seen[k] > 0 else math.nan
            for k in range(n_bins)
        ]
        out[f"{side}_distance_seen_share"] = (w_seen / total).tolist()
    return out


def trade_sizes(tape: BookTape, visible_only: bool = True) -> dict[str, Any]:
    """Market-order sizes in shares (``visible_only``: the shares each order took from the
    visible book, orders that met only hidden liquidity left out: what a model of the visible
    book has)."""
    mo = tape.market_orders
    if visible_only:
        mo = mo[~mo["hidden"]]
    size = mo["visible_size" if visible_only else "size"].astype(float)
    edges = np.unique(np.round(np.logspace(0, math.log10(max(size.max(initial=1), 2)) + 0.01,
                                           25)))
    hist, _ = np.histogram(size, bins=edges)
    return {
        "unit": "shares", "count": int(size.size), "visible_only": visible_only,
        "mean": float(size.mean()) if size.size else math.nan,
        "volume": int(size.sum()),
        **_quantiles(size),
        "share_round_100": float(np.mean(size % 100 == 0)) if size.size else math.nan,
        "hist_edges": edges.tolist(), "hist_counts": hist.tolist(),
    }


def inter_event_times(tape: BookTape) -> dict[str, Any]:
    """Gaps between consecutive book events (limit, cancel, market order; halts and hidden
    executions left out) and between market orders, in seconds."""
    events = tape.t[tape.kind != KIND_OTHER]
    mo = tape.market_orders
    gaps = np.diff(events)
    mo_gaps = np.diff(mo["t"][~mo["hidden"]])
    span = tape.end_s - tape.start_s
    rates = {KIND_NAMES[k]: float(np.sum(tape.kind == k) / span) for k in KIND_NAMES
             if k != KIND_OTHER}
    return {
        "unit": "seconds",
        "events_per_s": rates,
        "event_gap_mean": float(gaps.mean()) if gaps.size else math.nan,
        "event_gap": _quantiles(gaps),
        "event_gap_cv": float(gaps.std() / gaps.mean()) if gaps.size else math.nan,
        "market_gap_mean": float(mo_gaps.mean()) if mo_gaps.size else math.nan,
        "market_gap": _quantiles(mo_gaps),
        "market_gap_cv": float(mo_gaps.std() / mo_gaps.mean()) if mo_gaps.size else math.nan,
        "event_gaps_sample": _log_hist(gaps),
        "market_gaps_sample": _log_hist(mo_gaps),
    }


def _log_hist(gaps: NDArray[np.float64]) -> dict[str, list[float]]:
    """Density of log10 gaps (positive gaps; zero gaps, simultaneous events, counted apart)."""
    pos = gaps[gaps > 0]
    edges = np.linspace(-6, 3, 46)
    hist, _ = np.histogram(np.log10(pos), bins=edges, density=True) if pos.size else (
        np.zeros(45), edges)
    return {"log10_edges": edges.tolist(), "density": hist.tolist(),
            "zero_share": float(np.mean(gaps == 0)) if gaps.size else math.nan}


def acf(x: NDArray[np.float64], lags: int) -> list[float]:
    """Sample autocorrelation at lags 1..``lags`` (the biased estimator, as ``statsmodels``)."""
    x = np.asarray(x, float) - np.mean(x)
    denom = float(x @ x)
    if x.size < 2 or denom == 0:
        return [math.nan] * lags
    return [float(x[:-k] @ x[k:] / denom) if k < x.size else math.nan
            for k in range(1, lags + 1)]


def mid_at(tape: BookTape, times: NDArray[np.float64]) -> NDArray[np.float64]:
    """The mid price standing at each of ``times`` (the last event at or before it; rows with
    one side empty carry the previous mid forward)."""
    mid = tape.mid.copy()
    ok = np.isfinite(mid)
    idx = np.where(ok, np.arange(mid.size), 0)
    np.maximum.accumulate(idx, out=idx)
    mid = mid[idx]
    pos = np.searchsorted(tape.t, times, side="right") - 1
    return np.where(pos >= 0, mid[np.maximum(pos, 0)], np.nan)


def return_autocorrelation(tape: BookTape, lags: int = ACF_LAGS,
                           clock_s: tuple[float, ...] = (1.0, 10.0)) -> dict[str, Any]:
    """Autocorrelation of mid-price returns in event time (successive non-zero mid changes)
    and in clock time (log-mid returns every ``clock_s`` seconds)."""
    mid = tape.mid[np.isfinite(tape.mid)]
    moves = np.diff(mid)
    moves = moves[moves != 0]
    out: dict[str, Any] = {"lags": list(range(1, lags + 1)), "event_time": acf(moves, lags),
                           "event_time_n": int(moves.size)}
    for dt in clock_s:
        grid = np.arange(tape.start_s, tape.end_s + 1e-9, dt)
        r = np.diff(np.log(mid_at(tape, grid)))
        r = r[np.isfinite(r)]
        out[f"clock_{dt:g}s"] = acf(r, lags)
        out[f"clock_{dt:g}s_n"] = int(r.size)
    out["se_white_noise_event"] = 1.0 / math.sqrt(max(moves.size, 1))
    return out


def volatility_signature(tape: BookTape, intervals: tuple[float, ...] = SIGNATURE_INTERVALS,
                         offsets: int = 10) -> dict[str, Any]:
    """Daily volatility (fraction of the price per √day of ``TRADING_DAY_S``) implied by the
    realised variance of log-mid returns sampled every Δ seconds, for each Δ."""
    span = tape.end_s - tape.start_s
    sigma = []
    for dt in intervals:
        rv = []
        for k in range(offsets):
            start = tape.start_s + dt * k / offsets
            grid = np.arange(start, tape.end_s + 1e-9, dt)
            r = np.diff(np.log(mid_at(tape, grid)))
            r = r[np.isfinite(r)]
            if r.size:
                rv.append(float(r @ r) / (r.size * dt))
        sigma.append(math.sqrt(np.mean(rv) * TRADING_DAY_S) if rv else math.nan)
    return {"interval_s": list(intervals), "daily_vol": sigma, "span_s": span,
            "unit": "fraction per sqrt(trading day)"}


def spread_levels(tape: BookTape, level_cents: int) -> dict[str, Any]:
    """Time-weighted distribution of the spread on a grid of ``level_cents`` (the simulator's
    levels): ceil(ask / level) − floor(bid / level), as the calibration aggregates the book."""
    dur = tape.durations()
    ok = np.isfinite(tape.spread) & (dur > 0)
    bid = np.round(tape.bid_px[ok, 0] * 100).astype(np.int64)
    ask = np.round(tape.ask_px[ok, 0] * 100).astype(np.int64)
    levels = -((-ask) // level_cents) - bid // level_cents
    w = dur[ok]
    values, inverse = np.unique(levels, return_inverse=True)
    share = np.bincount(inverse, weights=w) / w.sum()
    return {"unit": f"levels of {level_cents} cents", "values": values.tolist(),
            "time_share": share.tolist(), "mean": float(np.average(levels, weights=w))}


def market_statistics(tape: BookTape, bin_cents: int, n_bins: int = 10) -> dict[str, Any]:
    """Every statistic of the calibration report for one tape."""
    mo = tape.market_orders
    depth = depth_profile(tape, bin_cents, n_bins)
    depth["best_mean"] = 0.5 * (depth["bid_by_level"][0] + depth["ask_by_level"][0])
    depth["bin1_mean"] = 0.5 * (depth["bid_by_distance"][1] + depth["ask_by_distance"][1])
    signature = volatility_signature(tape)
    signature["daily_vol_pct"] = [100 * v for v in signature["daily_vol"]]
    five = signature["interval_s"].index(300) if 300 in signature["interval_s"] else -1
    signature["daily_vol_pct_300s"] = signature["daily_vol_pct"][five]
    visible = mo["visible_size"][~mo["hidden"]]
    span = tape.end_s - tape.start_s
    return {
        "label": tape.label,
        "span_s": [tape.start_s, tape.end_s],
        "events": tape.n_events,
        "market_orders": int(mo.size),
        "market_orders_hidden_only": int(mo["hidden"].sum()),
        "volume": int(mo["size"].sum()),
        "mid_first_last": [float(tape.mid[np.isfinite(tape.mid)][0]),
                           float(tape.mid[np.isfinite(tape.mid)][-1])],
        "volume_per_hour": float(visible.sum() / span * 3600.0),
        "spread": spread_distribution(tape),
        "spread_levels": spread_levels(tape, bin_cents),
        "depth": depth,
        "trade_size": trade_sizes(tape),
        "inter_event": inter_event_times(tape),
        "autocorrelation": return_autocorrelation(tape),
        "signature": signature,
    }
