"""``execrl calibrate``: a LOBSTER day in, the calibrated order-book market and its report out.

Steps (``calibrate``): read the message + order-book pair (``execrl.data.lobster``); the
real statistics of the raw book and of the book on the simulator's grid; the queue-reactive
tables (``queue_reactive``) and the Hawkes fit of the market orders (``hawkes``); the
configuration (``config``); then, with the simulator, θ and θ_reinit (HLR's model III: the
book redrawn after a price move) by matching the volatility signature's two ends (the 1-second
and the 5-minute realised volatility) over a small grid (common random numbers across the
grid), a simulated day of the
calibrated book, its statistics, the round trip (the estimator run on the simulated day must
give back the tables it was simulated from) and the metaorder impact curve. Everything lands
in the staging folder the command hands in; nothing is written elsewhere.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from execrl.calibrate.config import NOT_FROM_DATA, hawkes_excitation_cap, market_config
from execrl.calibrate.hawkes import fit_hawkes
from execrl.calibrate.queue_reactive import aggregated_tape, estimate_queue_reactive
from execrl.calibrate.report import PLOTS, REPORT_MD, comparison_rows, write_report
from execrl.calibrate.stats import market_statistics
from execrl.calibrate.tape import tape_from_lobster
from execrl.domain import DataError

MARKET_JSON = "market.json"
MARKET_HAWKES_JSON = "market-hawkes.json"
CALIBRATION_JSON = "calibration.json"
#: Everything ``execrl calibrate`` writes into its output folder.
CALIBRATION_OUTPUTS = frozenset({MARKET_JSON, MARKET_HAWKES_JSON, CALIBRATION_JSON, REPORT_MD,
                                 *PLOTS.values()})
#: θ values tried (the simulator's P(p_ref moves | a level-0 queue depleted)).
THETA_GRID = (0.0, 0.5, 1.0)
#: θ_reinit values tried (P(the book is redrawn | a price move after a best queue emptied)).
REINIT_GRID = (0.0, 0.5, 1.0)
#: Metaorder sizes as fractions of the day's volume.
IMPACT_FRACTIONS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04)

#: Why the default simulated level is 5 cents (``--ticks-per-level``), for the report.
AGGREGATION_WHY = (
    "GOOG trades on a one-cent tick at about $570, with a quoted spread of 25-30 cents and "
    "occupied LOBSTER levels 2-5 cents apart: on a one-cent grid most levels are empty, most "
    "queue states are never seen, and a queue-reactive model (built for large-tick stocks "
    "whose spread is one tick) has nothing to react to. One simulated level therefore holds "
    "several exchange ticks. 5 cents (0.9 bps) keeps the spread at about 6 levels and the "
    "first 7 levels of the 10-level window seen whole on at least 90 % of the time. 10 cents "
    "was measured too (`--ticks-per-level 10`, same seeds): its spread in cents matches "
    "GOOG's better (median 30 c against 30 c; 5 c: 25 c) and so does its 1-second volatility "
    "(0.83 % against 1.07 %; 5 c: 0.66 % against 1.04 %), but its book is further off (depth at "
    "the best 505 shares against 255 on that grid; 5 c: 336 against 206), its event rates too "
    "(4.7 limit orders/s against 3.0; 5 c: 3.7), its 5-minute volatility no better (0.37 % "
    "against 0.87 %; 5 c: 0.35 %), and only 4 of its levels are seen on half the snapshots, "
    "so most of its table is extrapolated. 5 cents is the default; the choice is recorded here."
)


def _write_json(path: Path, obj: Any) -> None:
    """Into the staging folder (the folder is swapped in whole, so no per-file atomicity)."""
    path.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def _clean(obj: Any) -> Any:
    """NaN and inf (JSON has neither) as null, numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def calibrate(
    source: Path, stage: Path, command: list[str], ticks_per_level: int = 5,
    n_levels: int = 10, seed: int = 7, simulate: bool = True,
    on_step: Callable[[str], None] = lambda _: None, impact_books: int = 128,
    impact_exec_s: float = 3600.0, hawkes_seconds: float = 3600.0,
    round_trip_s: float = 3600.0,
) -> dict[str, Any]:
    """Calibrate on ``source`` and write every output into ``stage`` (module docstring);
    ``on_step(description)`` is called before each long step. The impact curve runs
    ``impact_books`` books per size over ``impact_exec_s`` seconds; the Hawkes variant is
    simulated for ``hawkes_seconds``. Returns calibration.json's content."""
    from execrl import __version__
    from execrl.data.lobster import read_lobster

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str) -> None:
        timings[name] = time.perf_counter()
        on_step(name)

    step("reading the LOBSTER files")
    day = read_lobster(source)
    step("real statistics")
    raw_tape = tape_from_lobster(day)
    raw = market_statistics(raw_tape, ticks_per_level)
    grid_tape = aggregated_tape(day, ticks_per_level, n_levels)
    real = market_statistics(grid_tape, ticks_per_level)
    step("queue-reactive tables")
    fit = estimate_queue_reactive(day, ticks_per_level, n_levels)
    step("Hawkes fit of the market orders")
    mos = raw_tape.market_orders[~raw_tape.market_orders["hidden"]]
    hawkes = fit_hawkes(mos["t"], mos["aggressor"], raw_tape.start_s, raw_tape.end_s)
    cap = hawkes_excitation_cap(hawkes, mos["t"], mos["aggressor"])
    s0 = float(np.nanmedian(day.mid))
    sigma_daily, sigma_interval = _daily_vol(raw)
    daily_volume = float(raw_tape.market_orders["size"].sum())
    span = raw_tape.end_s - raw_tape.start_s

    theta, theta_note, theta_fit = 0.5, "the schema's default (the simulator did not run)", []
    reinit = 0.0
    simulated = impact = round_trip = hawkes_sim = None
    note = "not run (--no-simulate)"
    if simulate:
        from execrl.calibrate.simulate import metaorder_impact, tape_of_trace, trace_book
        from execrl.sim.lob_config import LOBMarketConfig

        step("fitting theta and reinit_prob on the simulated volatility")
        targets = _vol_targets(real)
        for th in THETA_GRID:
            for re in REINIT_GRID:
                cfg = LOBMarketConfig.from_dict({**market_config(fit, s0, th, reinit_prob=re),
                                                 "s0": s0})
                tape = tape_of_trace(trace_book(cfg, span, seed), raw_tape.start_s)
                sig = market_statistics(tape, ticks_per_level)["signature"]
                vols = {f"daily_vol_{dt:g}s": sig["daily_vol"][sig["interval_s"].index(dt)]
                        for dt in targets}
                loss = sum(math.log(_positive(v) / targets[dt]) ** 2
                           for dt, v in zip(targets, vols.values(), strict=True))
                theta_fit.append({"theta": th, "reinit_prob": re, **vols, "loss": loss})
        best = min(theta_fit, key=lambda row: row["loss"])
        theta, reinit = best["theta"], best["reinit_prob"]
        names = " and ".join(f"{dt:g}-second" for dt in targets)
        theta_note = (
            f"θ from {list(THETA_GRID)} and θ_reinit (`reinit_prob`) from {list(REINIT_GRID)}, "
            f"the pair whose simulated day's {names} realised volatilities are nearest GOOG's "
            "on the same grid (least squares of the log ratios; "
            + ", ".join(f"{dt:g} s: {100 * v:.3g} %" for dt, v in targets.items())
            + f"); chosen: θ = {theta:g}, θ_reinit = {reinit:g} ("
            + ", ".join(f"{k[10:]}: {100 * v:.3g} %" for k, v in best.items()
                        if k.startswith("daily_vol_"))
            + "), every pair in `theta_fit` (same seed for each: common random numbers). "
            "These volatilities are fit targets; the other rows of the comparison are not.")
        config = LOBMarketConfig.from_dict({**market_config(fit, s0, theta,
                                                            reinit_prob=reinit), "s0": s0})
        step("simulating a day of the calibrated book")
        trace = trace_book(config, span, seed + 1)
        sim_tape = tape_of_trace(trace, raw_tape.start_s, "simulated (market.json)")
        simulated = market_statistics(sim_tape, ticks_per_level)
        note = (f"one book of `market.json` over {span:,.0f} s (the file's span) after "
                f"{600:.0f} s of warm-up, seed {seed + 1}, recorded event by event: "
                f"{sim_tape.n_events:,} events")
        step("round trip: the estimator on the simulated day")
        round_trip = _round_trip(config, seed + 2, max(span, round_trip_s), ticks_per_level,
                                 n_levels)
        step("Hawkes variant: simulated flow")
        hk = LOBMarketConfig.from_dict({**market_config(fit, s0, theta, hawkes, cap,
                                                        reinit_prob=reinit), "s0": s0})
        hk_tape = tape_of_trace(trace_book(hk, hawkes_seconds, seed + 3), raw_tape.start_s)
        hk_stats = market_statistics(hk_tape, ticks_per_level)
        hawkes_sim = {
            "seconds": hawkes_seconds,
            "market_gap_cv": hk_stats["inter_event"]["market_gap_cv"],
            "market_per_s": hk_stats["inter_event"]["events_per_s"]["market"],
            "daily_vol_1s": hk_stats["signature"]["daily_vol"][0],
            "real_market_gap_cv": real["inter_event"]["market_gap_cv"],
            "poisson_market_gap_cv": simulated["inter_event"]["market_gap_cv"],
        }
        step("metaorder impact in the simulator")
        sizes = [max(1, round(f * daily_volume)) for f in IMPACT_FRACTIONS]
        impact = metaorder_impact(config, sizes, exec_s=impact_exec_s, n_books=impact_books,
                                  seed=seed + 4, sigma_daily=sigma_daily,
                                  daily_volume=daily_volume)

    market = market_config(fit, s0, theta, reinit_prob=reinit)
    market_hk = market_config(fit, s0, theta, hawkes, cap, reinit_prob=reinit)
    from execrl.sim.lob_config import LOBMarketConfig

    thinning = {"poisson": LOBMarketConfig.from_dict({**market, "s0": s0}).thinning_rate(),
                "hawkes": LOBMarketConfig.from_dict({**market_hk, "s0": s0}).thinning_rate()}
    timings_out = {}
    names = list(timings)
    for a, b in zip(names, [*names[1:], None], strict=True):
        timings_out[a] = (timings[b] if b else time.perf_counter()) - timings[a]
    result: dict[str, Any] = {
        "source": {"path": str(source), "symbol": day.symbol, "date": day.date,
                   "levels": day.levels, "rows": day.n_rows, "median_mid": s0,
                   "span_s": [raw_tape.start_s, raw_tape.end_s]},
        "aggregation": {
            "ticks_per_level": ticks_per_level, "tick_size": ticks_per_level / 100.0,
            "n_levels": n_levels, "choice": ("the default of --ticks-per-level"
                                             if ticks_per_level == 5 else
                                             "set with --ticks-per-level"),
            "rule": "bids floored, asks ceiled to the grid; shares of LOBSTER levels in one "
                    "grid level summed; levels counted from p_ref as the simulator does",
            "why": AGGREGATION_WHY,
        },
        "fit": {
            "aes": fit.aes, "n_buckets": fit.n_buckets, "summary": fit.summary,
            "counts_limit": fit.counts_limit, "counts_cancel": fit.counts_cancel,
            "counts_market": fit.counts_market, "time_level_s": fit.time_level,
            "time_best_s": fit.time_best, "filled": fit.filled,
            "filled_share": float(fit.filled[:, 1:].mean()),
        },
        "hawkes": hawkes.to_dict(),
        "hawkes_cap": cap,
        "hawkes_simulated": hawkes_sim,
        "thinning_rate": thinning,
        "theta_fit": theta_fit,
        "theta_note": theta_note,
        "market": market,
        "raw": raw,
        "real": real,
        "simulated": simulated,
        "simulation_note": note,
        "round_trip": round_trip,
        "impact": impact,
        "square_root_law": {"sigma_daily": sigma_daily, "daily_volume": daily_volume,
                            "sigma_from": f"{sigma_interval:g}-second realised volatility of "
                                          "the raw mid",
                            "volume_from": "all executions in the file, hidden included"},
        "not_from_data": NOT_FROM_DATA,
        "provenance": {"execrl_version": __version__, "command": command, "seed": seed,
                       "timings_s": timings_out,
                       "wall_time_s": time.perf_counter() - started},
    }
    result["comparison"] = comparison_rows(real, simulated)
    result = _clean(result)
    _write_json(stage / MARKET_JSON, market)
    _write_json(stage / MARKET_HAWKES_JSON, market_hk)
    step("writing the report")
    write_report(stage, result)
    _write_json(stage / CALIBRATION_JSON, result)
    return result


def _positive(v: float | None) -> float:
    """A volatility for a log ratio: a missing or zero one as a tiny one (a bad fit)."""
    return v if v is not None and math.isfinite(v) and v > 0 else 1e-12


def _vol_targets(stats: dict[str, Any]) -> dict[float, float]:
    """The real day's daily volatility at the signature's two ends: 1 s, and 5 minutes (or
    the longest interval with at least 10 returns in a shorter file), by interval."""
    sig = stats["signature"]
    out = {}
    for dt, v in zip(sig["interval_s"], sig["daily_vol"], strict=True):
        if (dt == sig["interval_s"][0] or sig["span_s"] / dt >= 10) and v and v > 0:
            out[dt] = float(v)
    usable = [dt for dt in out if dt <= 300]
    return {dt: out[dt] for dt in sorted({usable[0], usable[-1]})}


def _daily_vol(stats: dict[str, Any]) -> tuple[float, float]:
    """The day's volatility for the square-root law: from 5-minute returns, or the longest
    interval with at least 10 returns in a shorter file."""
    sig = stats["signature"]
    span = sig["span_s"]
    usable = [(dt, v) for dt, v in zip(sig["interval_s"], sig["daily_vol"], strict=True)
              if span / dt >= 10 and v is not None and math.isfinite(v) and v > 0]
    if not usable:
        raise DataError(f"the file's {span:g} s hold too few mid-price moves for a volatility")
    five = [u for u in usable if u[0] == 300]
    dt, v = five[0] if five else usable[-1]
    return float(v), float(dt)


def _round_trip(config: Any, seed: int, seconds: float, ticks_per_level: int,
                n_levels: int) -> dict[str, Any]:
    """The estimator on a simulated day of ``config`` with θ = 0 and no redraws (θ_reinit =
    0: the frame is then deterministic, so the data's frame and the simulator's agree, and
    every change of the book is a flow event): each table cell seen for at least 200 s, as a
    z-score (estimate − truth) / its Poisson standard error."""
    from execrl.calibrate.simulate import lobster_day_of_trace, trace_book

    cfg = config.model_copy(update={"theta": 0.0, "reinit_prob": 0.0})
    tr = trace_book(cfg, seconds, seed)
    fit = estimate_queue_reactive(lobster_day_of_trace(tr), ticks_per_level, n_levels,
                                  n_buckets=cfg.n_buckets, aes=cfg.aes, min_time_s=0.0)
    limit, cancel, market, _ = cfg.tables()
    out: dict[str, Any] = {"seconds": seconds, "events": int(tr.t.size)}
    for name, est, truth, spent in (("limit_rate", fit.limit_rate, limit, fit.time_level),
                                    ("cancel_rate", fit.cancel_rate, cancel, fit.time_level),
                                    ("market_rate", fit.market_rate, market, fit.time_best)):
        ok = (spent >= 200.0) & (truth > 0)
        z = (est[ok] - truth[ok]) / np.sqrt(truth[ok] / spent[ok])
        out[name] = {"cells": int(ok.sum()),
                     "max_abs_z": float(np.abs(z).max()) if z.size else None,
                     "mean_z": float(z.mean()) if z.size else None,
                     "share_abs_z_above_3": float(np.mean(np.abs(z) > 3)) if z.size else None}
    return out
