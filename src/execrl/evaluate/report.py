"""Human-readable evaluation report: three plots and a Markdown page over results.json.

The JSON and Parquet outputs are what machines read; this module turns them into what a head
of trading reads: the IS distribution per policy, what the schedules look like, and whether
the paired differences are real. Figures are built with matplotlib's object API on the Agg
canvas (no pyplot, so no global figure registry to leak into, and no display needed). The
files go into the staging folder of the evaluation's output (``execrl.domain.outputs``), which
replaces the user's folder whole at the end, so an interrupted run never leaves a
half-written PNG or report behind. Plots are optional (``write_report(plots=False)``,
``execrl evaluate --no-plots``): matplotlib is then not even imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from execrl.evaluate.stats import format_pvalue

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from execrl.evaluate.painter import Painter

BOXPLOT_PNG = "is_boxplot.png"
SCHEDULES_PNG = "schedules.png"
PAIRED_DIFF_PNG = "paired_diff.png"
REPORT_MD = "report.md"

#: the per-order rows the report reads: a table (a pandas DataFrame) or its columns by name
#: (``execrl.evaluate.results.episodes_columns``: what ``execrl evaluate`` passes, without
#: pandas); at least ``order_idx``, ``policy`` and ``is_bps``
Episodes = Mapping[str, Any]

_IS_LABEL = "implementation shortfall (bps, + = cost)"
#: PNG resolution: 100 dpi keeps the figures sharp on a screen at ~1000 px across
_DPI = 100
#: zlib level of the PNGs: 1 writes them several times faster than the default 6 for files
#: ~1.5x larger (flat-colour plots compress well at any level)
_PNG_COMPRESSION = 1


# --------------------------------------------------------------------------- file writing


def _figure(**kwargs: Any) -> Figure:
    """A matplotlib figure on the Agg canvas (imported here: only a run with plots pays for
    matplotlib); ``kwargs`` go to ``Figure`` (the TCA report's figures use a layout)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _plain_figure(width: float, height: float, **margins: float) -> Figure:
    """``_figure`` at ``_DPI`` with fixed margins (figure fractions, ``subplots_adjust``) and
    no layout engine, whose text measurements cost more than drawing the plot."""
    fig = _figure(figsize=(width, height), dpi=_DPI)
    fig.subplots_adjust(**margins)
    return fig


def _save_figure(fig: Figure, path: Path) -> None:
    """Render ``fig`` as PNG, once. The figure is not registered with pyplot, so once it goes
    out of scope it is freed; there is nothing to close."""
    fig.savefig(path, format="png", dpi=_DPI,
                pil_kwargs={"compress_level": _PNG_COMPRESSION})


def _few_ticks(ax: Any, x: int | None = 6, y: int = 5, steps: bool = False) -> None:
    """At most ``x`` / ``y`` tick labels (each one is a text the renderer lays out); ``x``
    None: the x axis keeps its own (categories); ``steps``: whole x ticks."""
    from matplotlib.ticker import MaxNLocator

    if x is not None:
        ax.xaxis.set_major_locator(MaxNLocator(x, integer=steps))
    ax.yaxis.set_major_locator(MaxNLocator(y))


# --------------------------------------------------------------------------- plots


def _column(episodes: Episodes, name: str) -> np.ndarray:
    return np.asarray(episodes[name])


def _is_by_policy(episodes: Episodes, policies: Sequence[str]) -> list[np.ndarray]:
    """Per-policy IS arrays in ``policies`` order; a policy with no episode rows is an error
    (a report that silently drops a policy would misrepresent the evaluation)."""
    data = []
    names, is_bps = _column(episodes, "policy"), _column(episodes, "is_bps")
    for p in policies:
        values = is_bps[names == p].astype(np.float64)
        if values.size == 0:
            raise ValueError(f"episodes has no rows for policy {p!r} listed in results['policies']")
        data.append(values)
    return data


#: how many of the most extreme orders beyond each whisker the box plot marks
BOX_FLIERS = 50


def box_stats(values: np.ndarray, label: str) -> dict[str, Any]:
    """Tukey's box of ``values`` (quartiles by linear interpolation, whiskers at the furthest
    values within 1.5 IQR of the box) with its mean, in the form matplotlib's ``bxp`` draws;
    of the values beyond the whiskers only the ``BOX_FLIERS`` furthest on each side are kept
    as markers (20,000 orders put hundreds there: one marker each would draw the same
    smudge)."""
    q1, med, q3 = np.percentile(values, [25.0, 50.0, 75.0])
    iqr = q3 - q1
    inside = values[(values >= q1 - 1.5 * iqr) & (values <= q3 + 1.5 * iqr)]
    lo, hi = float(inside.min()), float(inside.max())
    low = np.sort(values[values < lo])[:BOX_FLIERS]
    high = np.sort(values[values > hi])[::-1][:BOX_FLIERS]
    return {"label": label, "q1": q1, "med": med, "q3": q3, "whislo": lo, "whishi": hi,
            "mean": float(values.mean()), "fliers": np.concatenate([low, high])}


def plot_is_boxplot(path: Path, episodes: Episodes, policies: Sequence[str]) -> None:
    """Box plot of per-order IS per policy, with means marked: tails and centre at a glance.
    The boxes come from each policy's quantiles (``box_stats``), not from the raw orders."""
    stats = [box_stats(v, p) for p, v in zip(policies, _is_by_policy(episodes, policies),
                                               strict=True)]
    fig = _plain_figure(max(6.0, 1.3 * len(policies)), 4.5, left=0.12, right=0.98, bottom=0.08,
                  top=0.88)
    ax = fig.add_subplot()
    ax.bxp(stats, showmeans=True, meanprops={"marker": "D", "markerfacecolor": "white"},
           flierprops={"marker": "o", "markersize": 3, "alpha": 0.5})
    _few_ticks(ax, x=None, y=6)
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_ylabel(_IS_LABEL)
    ax.set_title(f"Implementation shortfall per order\n(diamond = mean; circles: the "
                 f"{BOX_FLIERS} most extreme orders beyond each whisker)", fontsize=10)
    _save_figure(fig, path)


def remaining_fraction(shares: np.ndarray) -> np.ndarray:
    """Remaining-inventory fraction per step, shape (n_examples, n_steps + 1), starting at 1.

    The total is each example's own traded quantity (``shares.sum(axis=1)``), so the curve
    ends at 0 when the order completes; an example that traded nothing stays at 1.
    """
    cum = np.cumsum(shares, axis=1)
    total = cum[:, -1:]
    safe = np.where(total != 0.0, total, 1.0)
    frac = np.where(total != 0.0, 1.0 - cum / safe, 1.0)
    return np.hstack([np.ones((shares.shape[0], 1)), frac])


def plot_schedules(path: Path, schedules: Mapping[str, np.ndarray], order: Sequence[str]) -> None:
    """Per policy, over its example orders: the mean remaining-inventory curve with the band
    between its 10th and 90th percentiles (top), and the mean child order per step as a share
    of the order (bottom): front-loading against even slicing, and how much a schedule varies
    from order to order, in two axes whatever the number of policies."""
    arrays: dict[str, np.ndarray] = {}
    for p in order:
        arr = np.asarray(schedules[p], dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(
                f"schedules[{p!r}] must have shape (n_examples>=1, n_steps>=1), got {arr.shape}"
            )
        arrays[p] = arr

    fig = _plain_figure(max(7.0, 1.6 * len(arrays)), 6.5, left=0.09, right=0.98, bottom=0.08,
                  top=0.94, hspace=0.35)
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [2.0, 1.0]})
    width = 0.8 / len(arrays)
    bars = []
    for i, (p, arr) in enumerate(arrays.items()):
        frac = remaining_fraction(arr)
        steps = np.arange(frac.shape[1])
        lo, hi = np.percentile(frac, [10.0, 90.0], axis=0)
        top.fill_between(steps, lo, hi, color=f"C{i}", alpha=0.15, lw=0)
        top.plot(steps, frac.mean(axis=0), marker="o", ms=3, label=p, color=f"C{i}")
        totals = arr.sum(axis=1, keepdims=True)
        share = np.divide(arr, totals, out=np.zeros_like(arr), where=totals != 0.0)
        x = np.arange(1, arr.shape[1] + 1) - 0.4 + (i + 0.5) * width
        bars.append((x, 100.0 * share.mean(axis=0), f"C{i}"))
    # one policy trading at once (immediate: 100 % in step 1) would flatten every other bar:
    # the axis stops above the second-tallest policy's bars and the cut bars say their value
    peaks = sorted(float(h.max()) for _, h, _ in bars)
    cap = 1.3 * peaks[-2] if len(peaks) > 1 and peaks[-1] > 2.5 * peaks[-2] > 0 else None
    for x, h, colour in bars:
        bottom.bar(x, h if cap is None else np.minimum(h, cap), width=width, color=colour)
        if cap is not None:
            for xi, hi in zip(x[h > cap], h[h > cap], strict=True):
                bottom.text(xi, 0.97 * cap, f"{hi:.0f}%", ha="center", va="top", fontsize=7,
                            color="white", rotation=90)
    if cap is not None:
        bottom.set_ylim(0.0, cap)
    n = max(a.shape[0] for a in arrays.values())
    top.set_title(f"Schedules over {n} example orders: remaining inventory (mean; band: "
                  "10th–90th percentile)", fontsize=10)
    top.set_ylabel("remaining fraction of order")
    top.set_ylim(-0.02, 1.02)
    top.legend(fontsize=8)
    bottom.set_title("mean child order per step", fontsize=9)
    bottom.set_xlabel("step")
    bottom.set_ylabel("% of the order")
    for ax in (top, bottom):
        _few_ticks(ax, x=11, steps=True)
    _save_figure(fig, path)


def _is_by_order(episodes: Episodes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """IS per policy: its orders' ``order_idx`` ascending and their IS (a row per order and
    policy: a repeated (order_idx, policy) pair is an error)."""
    order_idx, names = _column(episodes, "order_idx"), _column(episodes, "policy")
    is_bps = _column(episodes, "is_bps").astype(np.float64)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    dup = np.zeros(order_idx.size, dtype=bool)
    for p in sorted(set(names.tolist())):
        rows = np.flatnonzero(names == p)
        rows = rows[np.argsort(order_idx[rows], kind="stable")]
        keys = order_idx[rows]
        dup[rows[1:][keys[1:] == keys[:-1]]] = True  # a pair seen on an earlier row
        out[p] = keys, is_bps[rows]
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        raise ValueError(
            f"episodes has {int(dup.sum())} duplicate (order_idx, policy) row(s), first: "
            f"order_idx={order_idx[first]}, policy={names[first]!r}"
        )
    return out


def paired_differences(
    episodes: Episodes, policy: str, baseline: str,
    wide: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """Per-order ``policy - baseline`` IS, joined on ``order_idx`` (same market path),
    ascending ``order_idx``; an order missing from either, or whose IS is NaN in either, is
    left out; ``wide``: ``_is_by_order(episodes)`` already computed."""
    if wide is None:
        wide = _is_by_order(episodes)
    for name in (policy, baseline):
        if name not in wide:
            raise ValueError(f"episodes has no rows for policy {name!r} named in a comparison")
    (p_idx, p_is), (b_idx, b_is) = wide[policy], wide[baseline]
    _, i, j = np.intersect1d(p_idx, b_idx, assume_unique=True, return_indices=True)
    diff = p_is[i] - b_is[j]
    diff = diff[~np.isnan(diff)]
    if diff.size == 0:
        raise ValueError(f"policies {policy!r} and {baseline!r} share no order_idx in episodes")
    return diff


def plot_paired_diffs(
    path: Path, episodes: Episodes, comparisons: Sequence[Mapping[str, Any]]
) -> None:
    """One histogram of per-order differences per comparison, with 0, the mean and the 95%
    CI marked: shows whether a mean improvement is broad or driven by a few orders. The
    mean and CI are written in each panel's title (one text, not a legend box)."""
    m = len(comparisons)
    ncols = min(3, m)
    nrows = math.ceil(m / ncols)
    height = 3.0 * nrows + 0.4  # inches: each row, and the figure's title above them
    fig = _plain_figure(4.2 * ncols, height, left=0.07 if ncols > 1 else 0.16, right=0.98,
                  bottom=0.5 / height, top=1.0 - 0.75 / height, wspace=0.25, hspace=0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    wide = _is_by_order(episodes)  # once for every comparison
    for ax, comp in zip(axes, comparisons, strict=False):
        policy, baseline = str(comp["policy"]), str(comp["baseline"])
        diff = paired_differences(episodes, policy, baseline, wide)
        mean = float(diff.mean())  # of the data drawn, so the line matches the histogram
        # numpy's "auto" asks for millions of bins when the differences span a few ulps
        bins = "auto" if np.ptp(diff) > 1e-9 * max(1.0, float(np.abs(diff).max())) else 1
        # one filled outline, not a rectangle per bin: the same picture, and the renderer
        # handles one artist instead of ~100
        counts, edges = np.histogram(diff, bins=bins)
        ax.stairs(counts, edges, fill=True, color="C0", alpha=0.75)
        title = f"{policy} − {baseline}: mean {mean:.2f}"
        if comp.get("ci95") is not None:
            lo, hi = comp["ci95"]
            ax.axvspan(lo, hi, color="C3", alpha=0.2)
            title += f", 95% CI [{lo:.2f}, {hi:.2f}]"
        ax.axvline(0.0, color="black", ls="--", lw=1.0)
        ax.axvline(mean, color="C3", lw=1.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("IS difference (bps, < 0 = policy cheaper)", fontsize=8)
        ax.set_ylabel("orders", fontsize=8)
        _few_ticks(ax)
        ax.tick_params(labelsize=8)
    for ax in axes[m:]:
        ax.set_visible(False)
    fig.suptitle("Paired IS differences per order (dashed: 0; red line: mean; red band: 95% "
                 "bootstrap CI of the mean)", fontsize=9, y=1.0 - 0.12 / height, va="top")
    _save_figure(fig, path)


# --------------------------------------------------------------------------- markdown


def _num(value: Any, spec: str = ".2f") -> str:
    """Format a number for a table; missing -> 'n/a', so partial results still render."""
    if value is None:
        return "n/a"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "nan"
    return format(x, spec)


def _count(value: Any) -> str:
    """Integers as integers, averages (e.g. mean child orders per order) with one decimal."""
    if value is None:
        return "n/a"
    x = float(value)
    return str(int(x)) if x.is_integer() else f"{x:.1f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Markdown table; ``align`` has one char per column: 'l' or 'r'."""
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _shares(value: Any) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def _order_section(results: Mapping[str, Any]) -> list[str]:
    """The parent order, its hard limits and whether they let it complete."""
    order = results.get("order")
    if not isinstance(order, Mapping):
        return []
    out = ["", "## Parent order", ""]
    horizon = order.get("horizon_s")
    if horizon is None and order.get("end_ts") is not None:
        horizon = float(order["end_ts"]) - float(order.get("start_ts", 0.0))
    steps = (results.get("market") or {}).get("N")
    px = order.get("arrival_px")
    out.append(
        f"{order.get('side', 'n/a')} {_shares(order.get('qty'))} {order.get('symbol', '')} "
        f"(order {order.get('order_id', 'n/a')})"
        + (f", arrival price {_num(px, '.6g')}" if px is not None else "")
        + (f", over {_num(horizon, ',.0f')} s" if horizon is not None else "")
        + (f" in {steps} decision steps" if steps is not None else "")
        + "."
    )
    out.append("")
    c = order.get("constraints") or {}
    rows = []
    if c.get("child_max") is not None:
        rows.append(["child_max", f"{_shares(c['child_max'])} shares per child order"])
    if c.get("participation") is not None:
        rows.append(["participation", f"{c['participation']:g} of the step's expected volume"])
    if c.get("price_band_bps") is not None:
        rows.append(
            ["price_band_bps", f"{c['price_band_bps']:g} (bounds limit prices; the child "
             "orders here are market orders)"]
        )  # fmt: skip
    if not rows:
        out.append("No hard limits.")
        return out
    out += _table(["hard limit", "value"], rows, "ll")
    f = results.get("order_feasibility")
    if isinstance(f, Mapping) and order.get("qty"):
        qty, most = int(order["qty"]), f.get("max_fillable_shares")
        out.append("")
        if f.get("feasible"):
            out.append("The limits allow the whole order within the horizon.")
        else:
            binding = f" ({f['binding']} binds)" if f.get("binding") else ""
            out.append(
                f"**The limits allow at most {_shares(most)} of the {qty:,} shares "
                f"({_num(100.0 * float(most) / qty, '.1f')} %){binding}**: what no policy can "
                "trade within them stays unfilled and is charged as a residual at the end mid "
                "(residual × (end mid − arrival mid), inside IS)."
            )
    return out


def _behaviour_section(policies: Mapping[str, Any]) -> list[str]:
    """Seed 000 §5's correlation report: how each policy's child orders split into holds,
    passive posts and aggressive orders, by the sign of the tick flow against the order's
    side, with the aggressive-share difference and its 95 % CI (``evaluate.behaviour``)."""
    flows = {p: e["behaviour"] for p, e in policies.items()
             if "by_tick_flow" in (e.get("behaviour") or {})}
    if not flows:
        return []
    out = ["", "## Behaviour and tick flow (seed 000 §5)", ""]
    out.append(
        "Share of decisions that crossed the spread (aggressive), posted passively or held, "
        "by the 10-second tick flow at the decision: *opposite* = the other side's trades "
        "dominate (selling pressure for a buy), *same* = the order's own side's do. Seed 000 "
        "expects more aggressive orders under opposite flow; the difference comes with a 95 % "
        "bootstrap CI over orders."
    )
    out.append("")
    rows = []
    for p, b in flows.items():
        by = b["by_tick_flow"]
        d = b.get("aggressive_opposite_minus_same") or {}
        ci = d.get("ci95")
        holds = d.get("expected_sign_holds")
        rows.append([
            p,
            _num(by["opposite"].get("aggressive"), ".3f"),
            _num(by["same"].get("aggressive"), ".3f"),
            _num(by["opposite"].get("hold"), ".3f"),
            _num(by["same"].get("hold"), ".3f"),
            _num(d.get("value"), ".3f"),
            f"[{_num(ci[0], '.3f')}, {_num(ci[1], '.3f')}]" if ci else "n/a",
            "n/a" if holds is None else ("yes" if holds else "no"),
        ])
    header = ["policy", "aggressive, opposite flow", "aggressive, same flow",
              "hold, opposite flow", "hold, same flow", "difference", "95% CI",
              "seed's expectation holds"]
    out += _table(header, rows, "lrrrrrrl")
    return out


def render_markdown(
    results: Mapping[str, Any], images: Sequence[tuple[str, str]], plots: bool = True
) -> str:
    """The report page: headline run info, the parent order and its limits, per-policy
    tables (IS; objective, residual, breaches and cuts), comparisons, theory, market, and the
    images (``(caption, relative file name)``) embedded with relative links."""
    policies: Mapping[str, Any] = results["policies"]
    out = ["# Execution evaluation report", ""]
    out.append(
        " · ".join(
            f"**{key}**: {results.get(key, 'n/a')}" for key in ("env", "orders", "seed", "side")
        )
    )
    out += _order_section(results)
    out += ["", "## Implementation shortfall per policy", ""]
    out.append("IS in basis points against the arrival price, positive = cost.")
    out.append("")
    rows = []
    for p, entry in policies.items():
        s = entry.get("is_bps", {})
        rows.append(
            [p]
            + [_num(s.get(k)) for k in ("mean", "std", "p50", "p95", "p99", "cvar95")]
            + [_num(entry.get("fill_rate"), ".3f"), _count(entry.get("child_orders"))]
        )
    header = ["policy", "mean", "std", "p50", "p95", "p99", "CVaR95", "fill rate", "child orders"]
    out += _table(header, rows, "lrrrrrrrr")

    lam = (results.get("market") or {}).get("lambda")
    out += ["", "## Objective and hard limits per policy", ""]
    out.append(
        "E+λ·Var: the mean-variance objective Almgren–Chriss minimises"
        + (f" (λ = {lam:g})" if isinstance(lam, int | float) else "")
        + ", in bps of the order's notional. Residual: shares left unfilled at the horizon "
        "(mean per order), charged at the end mid inside IS. Breaches: child orders beyond a "
        "hard limit (all orders together). Cuts: requests of the policy that the limits cut "
        "down (a masked action, a request above the cap)."
    )
    out.append("")
    rows = [
        [
            p,
            _num(entry.get("objective_bps")),
            _num(entry.get("residual_shares"), ",.1f"),
            _num(entry.get("residual_is_bps")),
            _count(entry.get("breaches")),
            _count(entry.get("cuts")),
        ]
        for p, entry in policies.items()
    ]
    header = ["policy", "E+λ·Var (bps)", "residual (shares)", "residual charge (bps)",
              "breaches", "cuts"]  # fmt: skip
    out += _table(header, rows, "lrrrrr")

    out += _behaviour_section(policies)

    comparisons = results.get("comparisons") or []
    if comparisons:
        out += ["", "## Paired comparisons", ""]
        out.append(
            "Mean IS: diff = policy − baseline IS per order on the same market paths, averaged "
            "(negative = policy cheaper on mean IS); 95% CI by percentile bootstrap; the "
            "p-values test that mean (t) and median (Wilcoxon) difference; improvement % = "
            "−diff / baseline mean IS. These are about mean IS alone. The last two columns "
            "compare E+λ·Var, the objective that also prices risk: a policy can lose on mean "
            "IS and win on it (Almgren–Chriss minimises it, not mean IS)."
        )
        out.append("")
        rows = []
        for c in comparisons:
            ci = c.get("ci95")
            ci_text = f"[{_num(ci[0])}, {_num(ci[1])}]" if ci is not None else "n/a"
            policy, baseline = str(c["policy"]), str(c["baseline"])
            obj_p = policies.get(policy, {}).get("objective_bps")
            obj_b = policies.get(baseline, {}).get("objective_bps")
            lower = "n/a"
            if obj_p is not None and obj_b is not None:
                lower = policy if obj_p < obj_b else baseline if obj_b < obj_p else "equal"
            rows.append(
                [
                    policy,
                    baseline,
                    _num(c.get("diff_bps_mean")),
                    ci_text,
                    format_pvalue(c.get("t_pvalue")),
                    format_pvalue(c.get("wilcoxon_pvalue")),
                    _num(c.get("improvement_pct")),
                    f"{policy} {_num(obj_p)} vs {baseline} {_num(obj_b)}",
                    lower,
                ]
            )
        header = [
            "policy", "baseline", "mean IS diff (bps)", "95% CI (bps)",
            "t p-value", "Wilcoxon p-value", "improvement % on mean IS",
            "E+λ·Var (bps)", "lower E+λ·Var",
        ]  # fmt: skip
        out += _table(header, rows, "llrrrrrrl")

    theory = results.get("theory")
    if isinstance(theory, Mapping) and theory:
        out += ["", "## Theory", ""]
        out.append(
            "Closed-form expectation next to the simulation (bps). The closed forms ignore "
            "the order's hard limits: a line marked *unconstrained* is for the schedule "
            "without them, which the limits cut, so the simulation need not match it."
        )
        out.append("")
        rows = []
        for p, t in theory.items():
            sim = policies.get(p, {}).get("is_bps", {})
            rows.append(
                [
                    p,
                    _num(t.get("expected_is_bps")),
                    _num(sim.get("mean")),
                    _num(t.get("std_is_bps")),
                    _num(sim.get("std")),
                    "unconstrained (limits cut it)" if t.get("unconstrained") else "hold",
                ]
            )
        header = [
            "policy", "theory mean", "simulated mean", "theory std", "simulated std",
            "assumptions",
        ]  # fmt: skip
        out += _table(header, rows, "lrrrrl")

    market = results.get("market")
    if isinstance(market, Mapping) and market:
        out += ["", "## Market", ""]
        rows = [
            [k, _num(v, ".6g") if isinstance(v, int | float) and not isinstance(v, bool) else v]
            for k, v in market.items()
        ]
        out += _table(["parameter", "value"], rows, "lr")

    out += ["", "## Plots", ""]
    if not plots:
        out.append("Not drawn (`--no-plots`).")
    for caption, name in images:
        out += [f"![{caption}]({name})", ""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- entry point


def draw_run_plots(painter: Painter, out_dir: Path, episodes: Episodes,
                   schedules: Mapping[str, np.ndarray], policies: Sequence[str]) -> None:
    """The plots that need only the policies' runs, not the statistics: the IS box plot and
    (with ``schedules``) the schedules; ``write_report`` calls it, and a caller may call it
    before computing the statistics so that a ``ForkedPainter`` draws them meanwhile."""
    painter.draw("boxplot", out_dir / BOXPLOT_PNG, episodes, list(policies))
    if schedules:
        order = [p for p in policies if p in schedules]
        order += [p for p in schedules if p not in order]
        painter.draw("schedules", out_dir / SCHEDULES_PNG, dict(schedules), order)


def draw_plots(painter: Painter, out_dir: Path, results: Mapping[str, Any],
               episodes: Episodes, schedules: Mapping[str, np.ndarray]) -> None:
    """Every plot of the report (``draw_run_plots``' and the paired differences, or the
    removal of a stale one where there are no comparisons); ``write_report`` calls it, and a
    caller with a ``ForkedPainter`` may call it before writing its other files so that the
    child draws meanwhile (plots already sent are not drawn again)."""
    draw_run_plots(painter, out_dir, episodes, schedules, list(results.get("policies") or {}))
    comparisons = results.get("comparisons") or []
    if comparisons:
        painter.draw("paired", out_dir / PAIRED_DIFF_PNG, episodes, comparisons)
    else:
        (out_dir / PAIRED_DIFF_PNG).unlink(missing_ok=True)


def write_report(
    out_dir: Path,
    results: dict,
    episodes: Episodes,
    schedules: dict[str, np.ndarray],
    plots: bool = True,
    painter: Painter | None = None,
) -> Path:
    """Write the plots and ``report.md`` into ``out_dir`` and return the report's path.

    ``results`` has the results.json shape (DESIGN.md); ``episodes`` has at least the columns
    ``order_idx, policy, is_bps``; ``schedules[policy]`` is (n_examples, n_steps) shares per
    step. ``schedules.png`` is skipped when ``schedules`` is empty and ``paired_diff.png`` when
    there are no comparisons (a stale one from an earlier run is removed, so the directory
    never shows a plot the report does not describe). ``report.md`` is written last, so it
    exists only if every plot it links to was written. With ``plots=False`` no plot is
    drawn (nor matplotlib imported) and the report says so. ``painter`` draws the plots
    (default: here, now; ``execrl.evaluate.painter``), and may have drawn some already.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"out_dir must be an existing directory, got {str(out_dir)!r}")
    missing = {"order_idx", "policy", "is_bps"} - set(episodes)
    if missing:
        raise ValueError(f"episodes is missing column(s) {sorted(missing)}")
    policies = list(results.get("policies") or {})
    if not policies:
        raise ValueError("results['policies'] is empty or missing; nothing to report")

    images: list[tuple[str, str]] = []
    if not plots:
        for name in (BOXPLOT_PNG, SCHEDULES_PNG, PAIRED_DIFF_PNG):
            (out_dir / name).unlink(missing_ok=True)
        report = out_dir / REPORT_MD
        report.write_text(render_markdown(results, images, plots=False), encoding="utf-8")
        return report
    if painter is None:
        from execrl.evaluate.painter import Painter

        painter = Painter()
    draw_plots(painter, out_dir, results, episodes, schedules)
    images.append(("IS distribution per policy", BOXPLOT_PNG))
    if schedules:
        images.append(("Example schedules", SCHEDULES_PNG))
    if results.get("comparisons"):
        images.append(("Paired IS differences", PAIRED_DIFF_PNG))
    painter.wait()

    report = out_dir / REPORT_MD
    text = render_markdown(results, images)
    report.write_text(text, encoding="utf-8")
    return report
