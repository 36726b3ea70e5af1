"""The calibration report: plots of the real day beside the calibrated simulator, and report.md.

Every plot shows the two markets on the same axes from the same statistic code
(``execrl.calibrate.stats``): GOOG's numbers in one colour, the simulator's in another; where
the simulator did not run, the real half is drawn alone and the report says why. Figures use
matplotlib's object API on the Agg canvas (no pyplot), like the evaluation report, and are
written into the command's staging folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PLOTS = {
    "spread": "spread.png",
    "depth": "depth.png",
    "trade_size": "trade_sizes.png",
    "inter_event": "inter_event_times.png",
    "autocorrelation": "autocorrelation.png",
    "signature": "volatility_signature.png",
    "impact": "metaorder_impact.png",
    "tables": "intensity_tables.png",
}
REPORT_MD = "report.md"
_DPI = 110
_RAW = {"color": "0.6", "label": "GOOG, raw (one-cent prices)"}
_REAL = {"color": "C0", "label": "GOOG on the simulator's grid"}
_SIM = {"color": "C3", "label": "simulator (market.json)"}


def _arr(values: Any) -> np.ndarray:
    """A list from calibration.json (null for a statistic that has no value) as floats."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=_DPI)


def _pairs(real: dict[str, Any], sim: dict[str, Any] | None,
           raw: dict[str, Any] | None = None):
    """(statistics, style) of each market drawn: the raw day first (thin, grey), where given."""
    if raw is not None:
        yield raw, _RAW
    yield real, _REAL
    if sim is not None:
        yield sim, _SIM


def plot_spread(path: Path, real: dict, sim: dict | None, tick_cents: int,
                raw: dict | None = None) -> None:
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    width = 0.4
    for k, (stats, style) in enumerate(_pairs(real, sim)):
        lv = stats["spread_levels"]
        v = _arr(lv["values"])
        keep = v <= 20
        ax1.bar(v[keep] + (k - 0.5) * width * (sim is not None), _arr(
            lv["time_share"])[keep], width=width, **style)
    ax1.set_xlabel(f"spread in simulated levels ({tick_cents} c each)")
    ax1.set_ylabel("share of time")
    ax1.set_title("Spread on the aggregated grid")
    ax1.legend()
    for stats, style in _pairs(real, sim, raw):
        s = stats["spread"]
        ax2.step(s["values"], np.cumsum(s["time_share"]), where="post", **style)
    ax2.set_xlabel("quoted spread (cents)")
    ax2.set_ylabel("cumulative share of time")
    ax2.set_xlim(0, 100)
    ax2.set_title("Spread distribution (time-weighted)")
    ax2.legend()
    _save(fig, path)


def plot_depth(path: Path, real: dict, sim: dict | None, raw: dict | None = None) -> None:
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for stats, style in _pairs(real, sim, raw):
        d = stats["depth"]
        n = len(d["bid_by_distance"])
        x = np.arange(n) * d["bin_cents"]
        avg = 0.5 * (_arr(d["bid_by_distance"]) + _arr(d["ask_by_distance"]))
        ax1.plot(x, avg, marker="o", **style)
        lv = 0.5 * (_arr(d["bid_by_level"]) + _arr(d["ask_by_level"]))
        ax2.plot(np.arange(1, lv.size + 1), lv, marker="o", **style)
    ax1.set_xlabel("distance behind the best quote (cents, start of the bin)")
    ax1.set_ylabel("mean shares in the bin (bid and ask averaged)")
    ax1.set_title(f"Depth profile by price distance ({real['depth']['bin_cents']} c bins)")
    ax2.set_xlabel("occupied price level (1 = best; raw: one-cent prices, else grid levels)")
    ax2.set_ylabel("mean shares")
    ax2.set_title("Depth profile per occupied level")
    for ax in (ax1, ax2):
        ax.set_ylim(bottom=0)
        ax.legend()
    _save(fig, path)


def plot_trade_sizes(path: Path, real: dict, sim: dict | None) -> None:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for stats, style in _pairs(real, sim):
        ts = stats["trade_size"]
        edges = _arr(ts["hist_edges"])
        counts = _arr(ts["hist_counts"])
        dens = counts / max(counts.sum(), 1) / np.diff(edges)
        ax.stairs(dens, edges, **style, lw=1.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("market-order size (shares, visible part)")
    ax.set_ylabel("density (per share)")
    ax.set_title("Market-order sizes")
    ax.legend()
    _save(fig, path)


def plot_inter_event(path: Path, real: dict, sim: dict | None) -> None:
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "event_gaps_sample", "all book events"),
                           (axes[1], "market_gaps_sample", "market orders")):
        for stats, style in _pairs(real, sim):
            h = stats["inter_event"][key]
            edges = _arr(h["log10_edges"])
            ax.stairs(h["density"], edges, lw=1.5, **{**style, "label":
                      f"{style['label']} (zero gaps {h['zero_share']:.1%})"})
        ax.set_xlabel("log10 of the time between consecutive events (s)")
        ax.set_ylabel("density")
        ax.set_title(f"Inter-event times: {title}")
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_autocorrelation(path: Path, real: dict, sim: dict | None,
                         raw: dict | None = None) -> None:
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "event_time", "event time (successive mid changes)"),
                           (axes[1], "clock_10s", "clock time (10 s log-mid returns)")):
        series = list(_pairs(real, sim, raw))
        width = 0.8 / len(series)
        for k, (stats, style) in enumerate(series):
            ac = stats["autocorrelation"]
            lags = _arr(ac["lags"])
            ax.bar(lags + (k - (len(series) - 1) / 2) * width, _arr(ac[key]), width=width,
                   **style)
            n = ac[f"{key}_n"]
            if n:
                ax.axhline(2 / math.sqrt(n), color=style["color"], ls=":", lw=0.8)
                ax.axhline(-2 / math.sqrt(n), color=style["color"], ls=":", lw=0.8)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xlabel("lag")
        ax.set_ylabel("autocorrelation")
        ax.set_title(f"Return autocorrelation, {title}")
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_signature(path: Path, real: dict, sim: dict | None, raw: dict | None = None) -> None:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for stats, style in _pairs(real, sim, raw):
        s = stats["signature"]
        ax.plot(s["interval_s"], 100 * _arr(s["daily_vol"]), marker="o", **style)
    ax.set_xscale("log")
    ax.set_xlabel("sampling interval Δ (s)")
    ax.set_ylabel("daily volatility implied by RV(Δ) (%)")
    ax.set_title("Volatility signature plot")
    ax.set_ylim(bottom=0)
    ax.legend()
    _save(fig, path)


def plot_impact(path: Path, impact: dict | None) -> None:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if impact is None:
        ax.text(0.5, 0.5, "the simulator did not run:\nno metaorder impact curve",
                ha="center", va="center", transform=ax.transAxes)
    else:
        x = _arr(impact["q_over_v"])
        y = _arr(impact["impact_over_sigma"])
        se = _arr(impact["impact_over_sigma_se"])
        ax.errorbar(x, y, yerr=2 * se, fmt="o", **_SIM, capsize=3)
        grid = np.logspace(math.log10(x.min() / 1.5), math.log10(x.max() * 1.5), 50)
        ax.plot(grid, np.sqrt(grid), color="k", ls="--",
                label="square-root law, Y = 1: I = σ √(Q/V)")
        fit = impact.get("power_law")
        if fit:
            ax.plot(grid, fit["prefactor"] * grid ** fit["exponent"], color="C3", ls=":",
                    label=f"weighted fit: I/σ = {fit['prefactor']:.2g} (Q/V)^"
                    f"{fit['exponent']:.2f} ± {fit['exponent_se']:.2f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("metaorder size Q / the day's volume V")
        ax.set_ylabel("peak impact / the day's volatility σ")
        ax.legend(fontsize=8)
    ax.set_title("Price impact of a metaorder in the simulator")
    _save(fig, path)


def plot_tables(path: Path, tables: dict[str, Any]) -> None:
    names = ("limit_rate", "cancel_rate", "market_rate")
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, name in zip(axes, names, strict=True):
        a = _arr(tables[name])
        im = ax.imshow(a, aspect="auto", origin="lower", cmap="viridis")
        fig.colorbar(im, ax=ax, label="events / s")
        ax.set_xlabel("queue-size bucket (AES units; 0 = empty)")
        ax.set_ylabel("level j from p_ref")
        ax.set_title(name)
    _save(fig, path)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def comparison_rows(real: dict, sim: dict | None) -> list[tuple[str, Any, Any]]:
    """(statistic, real, simulated) in numbers: what the report's table and JSON hold."""
    def get(stats: dict | None, *path: str | int) -> Any:
        if stats is None:
            return None
        v: Any = stats
        for p in path:
            v = v[p]
        return v

    rows = []
    for label, path in (
        ("mean spread (cents)", ("spread", "mean")),
        ("mean spread (simulated levels)", ("spread_levels", "mean")),
        ("median spread (cents)", ("spread", "p50")),
        ("95th pct spread (cents)", ("spread", "p95")),
        ("depth at the best, mean of bid and ask (shares)", ("depth", "best_mean")),
        ("depth 1st bin behind best (shares)", ("depth", "bin1_mean")),
        ("market orders per second", ("inter_event", "events_per_s", "market")),
        ("limit orders per second", ("inter_event", "events_per_s", "limit")),
        ("cancels per second", ("inter_event", "events_per_s", "cancel")),
        ("mean market-order size (shares)", ("trade_size", "mean")),
        ("median market-order size (shares)", ("trade_size", "p50")),
        ("mean gap between events (s)", ("inter_event", "event_gap_mean")),
        ("CV of gaps between market orders", ("inter_event", "market_gap_cv")),
        ("ACF lag 1, event time", ("autocorrelation", "event_time", 0)),
        ("ACF lag 1, clock 10 s", ("autocorrelation", "clock_10s", 0)),
        ("daily vol from 1 s RV (%)", ("signature", "daily_vol_pct", 0)),
        ("daily vol from 5 min RV (%)", ("signature", "daily_vol_pct_300s")),
        ("volume per hour (shares, visible)", ("volume_per_hour",)),
    ):
        rows.append((label, get(real, *path), get(sim, *path)))
    return rows


def write_report(stage: Path, result: dict[str, Any]) -> Path:
    """Every plot and report.md into ``stage`` from the calibration ``result``
    (``execrl.calibrate.run.calibrate``)."""
    real, sim, raw = result["real"], result.get("simulated"), result.get("raw")
    agg = result["aggregation"]
    k = agg["ticks_per_level"]
    plot_spread(stage / PLOTS["spread"], real, sim, k, raw)
    plot_depth(stage / PLOTS["depth"], real, sim, raw)
    plot_trade_sizes(stage / PLOTS["trade_size"], real, sim)
    plot_inter_event(stage / PLOTS["inter_event"], real, sim)
    plot_autocorrelation(stage / PLOTS["autocorrelation"], real, sim, raw)
    plot_signature(stage / PLOTS["signature"], real, sim, raw)
    plot_impact(stage / PLOTS["impact"], result.get("impact"))
    plot_tables(stage / PLOTS["tables"], result["market"])
    path = stage / REPORT_MD
    path.write_text(_markdown(result), encoding="utf-8")
    return path


def _markdown(result: dict[str, Any]) -> str:
    src = result["source"]
    agg = result["aggregation"]
    fit = result["fit"]
    hawkes = result["hawkes"]
    sim = result.get("simulated")
    k = agg["ticks_per_level"]
    lines = [
        f"# Calibration of the order-book market to {src['symbol']} {src['date']}",
        "",
        f"Source: `{src['path']}` ({src['levels']} levels, {src['rows']:,} messages, "
        f"{src['span_s'][0]:.0f}-{src['span_s'][1]:.0f} s after midnight). "
        f"Written by `{' '.join(result['provenance']['command'])}` "
        f"(execrl {result['provenance']['execrl_version']}).",
        "",
        "Files: `market.json` (the calibrated market: `execrl evaluate --market market.json "
        "--order ORDER.json`; it carries no price: give the order an `arrival_px` near the "
        f"day's median mid, {src['median_mid']:.2f}, for {src['symbol']}'s bps), "
        "`market-hawkes.json` (the same with self-exciting market orders), "
        "`calibration.json` (every number below and the raw counts and times), and the plots.",
        "",
        "## How the queues are aggregated",
        "",
        agg["why"],
        "",
        f"- simulated tick: **{k} exchange ticks = {k} cents** "
        f"(`ticks_per_level = {k}`, {agg['choice']}); bids floored and asks ceiled onto it, "
        "the shares of every LOBSTER level in one simulated level summed",
        f"- queue-size unit `aes` = **{fit['aes']} shares** (median event size, snapped to the "
        f"round lot); {fit['n_buckets']} buckets (the last one holds the top 1 % of the time)",
        f"- mean spread on that grid: {fit['summary']['spread_levels_time_mean']:.2f} levels; "
        f"share of time each level of the window is seen whole in the file: "
        + ", ".join(f"{v:.2f}" for v in fit["summary"]["level_seen_share"]),
        f"- events on the far side of p_ref put on level 0: "
        f"{fit['summary']['clipped_share']:.2%}; hidden-only market orders left out: "
        f"{fit['summary']['market_orders_hidden_only_left_out']:,} "
        f"({fit['summary']['hidden_volume_share']:.1%} of the traded volume was hidden)",
        f"- cells whose rate was pooled with neighbouring buckets or copied from a shallower "
        f"level: {fit['filled_share']:.1%} (see `calibration.json` `fit.filled`)",
        "",
        f"![intensity tables]({PLOTS['tables']})",
        "",
        "## Self-exciting market orders (Hawkes, exponential kernel, maximum likelihood)",
        "",
        f"- μ = {hawkes['mu_buy']:.4f} / {hawkes['mu_sell']:.4f} per s (buy / sell), "
        f"α_self = {hawkes['alpha_self']:.4g} ± {hawkes['stderr']['alpha_self']:.2g} /s, "
        f"α_cross = {hawkes['alpha_cross']:.4g} ± {hawkes['stderr']['alpha_cross']:.2g} /s, "
        f"β = {hawkes['beta']:.4g} ± {hawkes['stderr']['beta']:.2g} /s "
        f"(memory {1 / hawkes['beta']:.3g} s), branching ratio "
        f"**{hawkes['branching_ratio']:.3f}**",
        f"- likelihood ratio against Poisson: {hawkes['lr_statistic']:.0f} (3 d.o.f.); "
        f"Kolmogorov-Smirnov distance of the time-rescaled gaps from Exp(1): "
        f"{hawkes['ks_hawkes']:.3f} (Poisson: {hawkes['ks_poisson']:.3f}). A single "
        "exponential kernel captures the millisecond bursts but not all of the clustering, "
        "and the day's intraday seasonality is read as excitation (an upper bound).",
        f"- `market-hawkes.json` scales the market-order table by 1 − n and caps the "
        f"excitation at {result['hawkes_cap']:.4g} /s (99th percentile after the day's "
        "orders); its thinning rate is "
        f"{result['thinning_rate']['hawkes']:.4g} candidates/s against "
        f"{result['thinning_rate']['poisson']:.4g} for `market.json`, so it simulates that "
        "much slower.",
        "",
        "## Real and simulated, side by side",
        "",
    ]
    if sim is None:
        lines += [f"**The simulated half is missing**: {result['simulation_note']}", ""]
    else:
        lines += [f"Simulated: {result['simulation_note']}", ""]
    lines += ["| statistic | GOOG | simulator |", "|---|---:|---:|"]
    for label, r, s in result["comparison"]:
        lines.append(f"| {label} | {_fmt(r)} | {_fmt(s)} |")
    lines += [""]
    for key, title in (("spread", "Spread"), ("depth", "Depth profile"),
                       ("trade_size", "Market-order sizes"),
                       ("inter_event", "Inter-event times"),
                       ("autocorrelation", "Return autocorrelation"),
                       ("signature", "Volatility signature")):
        lines += [f"### {title}", "", f"![{title}]({PLOTS[key]})", ""]
    rt = result.get("round_trip")
    lines += ["## Round trip: the estimator on the simulator's own output", ""]
    if rt is None:
        lines += ["Not run: the simulator did not run.", ""]
    else:
        lines += [
            f"`market.json` with θ = 0 (so the simulator's frame is deterministic and the data's "
            f"frame reconstruction must find it) simulated for {rt['seconds']:,.0f} s "
            f"({rt['events']:,} events), turned into a LOBSTER day and estimated again. Each "
            "table cell seen at least 200 s, as z = (estimate − table) / Poisson s.e.:", "",
            "| table | cells | max abs(z) | mean z | share abs(z) > 3 |",
            "|---|---:|---:|---:|---:|"]
        for name in ("limit_rate", "cancel_rate", "market_rate"):
            c = rt[name]
            lines.append(f"| {name} | {c['cells']} | {_fmt(c['max_abs_z'])} | "
                         f"{_fmt(c['mean_z'])} | {_fmt(c['share_abs_z_above_3'])} |")
        lines += ["", "So what the simulator does with the tables is what the estimator measures "
                  "in the data: where the simulated statistics miss GOOG's, the queue-reactive "
                  "model (independent queues reacting to their own size) is what misses, not "
                  "the reading of it.", ""]
    hs = result.get("hawkes_simulated")
    if hs:
        lines += ["## The Hawkes variant (`market-hawkes.json`)", "",
                  f"Simulated for {hs['seconds']:,.0f} s: coefficient of variation of the gaps "
                  f"between market orders {_fmt(hs['market_gap_cv'])} (GOOG: "
                  f"{_fmt(hs['real_market_gap_cv'])}, `market.json`: "
                  f"{_fmt(hs['poisson_market_gap_cv'])}), market orders per second "
                  f"{_fmt(hs['market_per_s'])}, daily volatility from 1 s returns "
                  f"{_fmt(100 * hs['daily_vol_1s'] if hs['daily_vol_1s'] else None)} %.", ""]
    lines += ["## Metaorder impact in the simulator", ""]
    imp = result.get("impact")
    if imp is None:
        lines += ["Not measured: the simulator did not run.", ""]
    else:
        lines += [imp["how"], ""]
        lines += ["| Q (shares) | Q / V | impact (bps) | ± s.e. | impact / σ | √(Q/V) |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for q, x, b, se, y in zip(imp["q"], imp["q_over_v"], imp["impact_bps"],
                                  imp["impact_bps_se"], imp["impact_over_sigma"],
                                  strict=True):
            lines.append(f"| {q:,} | {x:.4f} | {b:.2f} | {se:.2f} | {y:.3f} | "
                         f"{math.sqrt(x):.3f} |")
        pl = imp.get("power_law")
        if pl:
            lines += ["", f"Weighted log-log fit over {pl['points']} sizes: impact / σ = "
                      f"{pl['prefactor']:.3g} · (Q/V)^{pl['exponent']:.3f} (exponent s.e. "
                      f"{pl['exponent_se']:.3f}); the square-root law has exponent 0.5 and "
                      f"prefactor Y ≈ 0.5-1. **{pl['verdict']}**",
                      "", "Mechanically: the model has no latent liquidity that arrives as the "
                      "metaorder goes on, and the calibrated market's resilience is 0 (see "
                      "below), so what the metaorder takes is given back only at the flow's "
                      "own pace; impact then grows almost in proportion to size. With "
                      "`reinit_prob` > 0 the book forgets the metaorder's footprint on the "
                      "queues after each price move (they are redrawn from their stationary "
                      "law), so every move it makes stays: a sum of permanent steps, closer "
                      "still to linear."]
        lines += ["", f"![impact]({PLOTS['impact']})", ""]
    lines += ["## Not from the data", ""]
    for name, why in result["not_from_data"].items():
        lines.append(f"- `{name}`: {why}")
    lines += ["", f"- `theta` = {result['market']['theta']}, `reinit_prob` = "
              f"{result['market'].get('reinit_prob', 0.0)}: {result['theta_note']}", ""]
    return "\n".join(lines) + "\n"
