"""Assemble results.json (schema: shared/DESIGN.md) from policy runs, and write the files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from execrl import __version__
from execrl.domain import ParentOrder
from execrl.env.factory import EnvConfig, market_for_order, order_feasibility
from execrl.evaluate.backtest import (
    MIN_ORDERS_FOR_INFERENCE,
    PolicyRun,
    is_folder,
)
from execrl.evaluate.decisions import DECISIONS_FILE
from execrl.evaluate.painter import ForkedPainter, Painter
from execrl.evaluate.report import (
    BOXPLOT_PNG,
    PAIRED_DIFF_PNG,
    REPORT_MD,
    SCHEDULES_PNG,
    draw_plots,
    draw_run_plots,
    write_report,
)
from execrl.evaluate.stats import is_summary, paired_comparisons

RESULTS_JSON = "results.json"
EPISODES_PARQUET = "episodes.parquet"
#: what `execrl evaluate` writes into its folder
EVALUATION_OUTPUTS = frozenset({RESULTS_JSON, EPISODES_PARQUET, DECISIONS_FILE, REPORT_MD,
                                BOXPLOT_PNG, SCHEDULES_PNG, PAIRED_DIFF_PNG})


def provenance(command: Sequence[str], specs: Sequence[str], stage: Path, out: Path
               ) -> dict[str, Any]:
    """What produced the results: execrl's version, the command line, and each checkpoint's
    path and policy hash (a checkpoint inside the output folder is named as it will be there
    once the staging folder is swapped in)."""
    checkpoints: dict[str, Any] = {}
    for spec in specs:
        label, _, param = spec.partition(":")
        path = Path(param)
        if not param or not is_folder(param):
            continue
        shown = path.resolve()
        if shown.is_relative_to(stage.resolve()):
            shown = out / shown.relative_to(stage.resolve())
        hash_file = path / "policy_hash"
        digest = hash_file.read_text().strip() if hash_file.is_file() else None
        checkpoints[label] = {"path": str(shown), "policy_hash": digest}
    return {"execrl_version": __version__, "command": list(command), "checkpoints": checkpoints}


def theory_block(config: EnvConfig, order: ParentOrder, policies: Sequence[str]) -> dict[str, Any]:
    """The market's closed forms for the policies that were run (``MarketSpec.closed_forms``),
    marked ``"unconstrained"`` where the order's limits cut the schedule they assume."""
    market = market_for_order(config.market, order)
    limits = order_feasibility(order, config.market).step_limits
    return market.closed_forms(order.qty, order.side.sign, list(policies), limits)


def build_results(
    runs: Sequence[PolicyRun],
    config: EnvConfig,
    order: ParentOrder,
    n_orders: int,
    seed: int,
    env_name: str,
    compare_to: Sequence[str] = ("twap",),
    n_boot: int = 10_000,
) -> dict[str, Any]:
    market = market_for_order(config.market, order)
    lam, notional = market.risk_aversion, order.qty * market.s0
    policies: dict[str, Any] = {}
    for run in runs:
        e = run.episodes
        summary = is_summary(e["is_bps"].to_numpy())
        # Mean-variance objective E + λ·Var in bps of notional, the quantity AC minimises.
        objective = summary["mean"] + lam * (summary["std"] * notional / 1e4) ** 2 / notional * 1e4
        policies[run.policy] = {
            "is_bps": summary,
            "is_vs_arrival_vwap_bps": is_summary(e["is_vs_arrival_vwap_bps"].to_numpy()),
            "is_vs_interval_vwap_bps": is_summary(e["is_vs_interval_vwap_bps"].to_numpy()),
            "objective_bps": objective,
            # per-order IS + λ·Σσ²τx_k² (the risk term of the schedule actually traded)
            "objective_proxy_bps": float((e["is_bps"] + e["risk_proxy_bps"]).mean()),
            "fill_rate": float(e["fill_rate"].mean()),
            # mean shares left unfilled (charged at the end mid, inside is_bps)
            "residual_shares": float(e["residual_shares"].mean()),
            "residual_is_bps": float(e["residual_is_bps"].mean()),
            "child_orders": float(e["child_orders"].mean()),
            # child orders beyond a hard limit, over all orders (0: the limits held)
            "breaches": int(e["breaches"].sum()),
            # the policy's requests the limits cut down, over all orders
            "cuts": int(e["cuts"].sum()),
            # per order: fill events, cancels of a working order, child orders refused
            "fills": float(e["fills"].mean()),
            "cancels": float(e["cancels"].mean()),
            "rejects": float(e["rejects"].mean()),
        }
        if run.behaviour is not None:
            policies[run.policy]["behaviour"] = run.behaviour
    by_name = {r.policy: r for r in runs}
    comparisons = []
    for base in compare_to:
        if base not in by_name:
            continue
        base_is = by_name[base].episodes["is_bps"].to_numpy()
        others = {run.policy: run.episodes["is_bps"].to_numpy() for run in runs
                  if run.policy != base}
        if n_orders < 2 or not others:
            continue
        # every policy against this baseline on the same resamples, in one pass
        for cmp in paired_comparisons(others, base, base_is, n_boot=n_boot, seed=seed):
            entry = cmp.to_dict()
            if n_orders < MIN_ORDERS_FOR_INFERENCE:  # a CI of a few points is not one
                entry.update(ci95=None, t_pvalue=None, wilcoxon_pvalue=None,
                             inference="too few orders")
            comparisons.append(entry)
    return {
        "env": env_name,
        "orders": n_orders,
        "seed": seed,
        "side": order.side.value,
        "order": order.to_wire(),
        "order_feasibility": order_feasibility(order, config.market).to_results(),
        "market": market.to_results(order.qty, order.side.value),
        "policies": policies,
        "comparisons": comparisons,
        "theory": theory_block(config, order, [r.policy for r in runs]),
    }


def write_outputs(
    out_dir: Path, results: dict[str, Any], runs: Sequence[PolicyRun], plots: bool = True,
    painter: Painter | None = None, episodes: pd.DataFrame | None = None,
) -> Path:
    """results.json, episodes.parquet and the report (with its plots unless ``plots`` is
    False, drawn by ``painter``: ``execrl.evaluate.painter``), into ``out_dir``: a staging
    folder (``execrl.domain.outputs.staged_folder``) that replaces the user's folder whole at
    the end, so no file needs its own atomic write. ``episodes``: ``episodes_table(runs)``
    where the caller has it already (``start_plots``). A forked painter is sent the plots
    still to draw first, so that it draws them while this process writes the parquet and
    JSON files (~0.5 of the ~0.5 CPU-s the paired differences take at 20,000 orders)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if episodes is None:
        episodes = episodes_table(runs)
    schedules = example_schedules(runs)
    if plots and isinstance(painter, ForkedPainter):
        draw_plots(painter, out_dir, results, episodes, schedules)
    episodes.to_parquet(out_dir / EPISODES_PARQUET, index=False)
    text = json.dumps(results, indent=2, default=_json_default, allow_nan=False)
    (out_dir / RESULTS_JSON).write_text(text)
    return write_report(out_dir, results, episodes, schedules, plots=plots, painter=painter)


def start_plots(painter: Painter, out_dir: Path, runs: Sequence[PolicyRun]) -> pd.DataFrame:
    """Have ``painter`` draw, into ``out_dir``, the plots ``write_outputs`` would draw that
    need only ``runs`` (the box plot, the schedules), before the statistics are computed: a
    ``ForkedPainter`` draws them while they are (``write_outputs`` then draws only the
    rest). Returns the episodes table (``episodes_table``) for ``write_outputs``: built and
    sent to the painter once."""
    out_dir.mkdir(parents=True, exist_ok=True)
    episodes = episodes_table(runs)
    draw_run_plots(painter, out_dir, episodes, example_schedules(runs),
                   [r.policy for r in runs])
    return episodes


def episodes_table(runs: Sequence[PolicyRun]) -> pd.DataFrame:
    """Every policy's per-order rows, one table (episodes.parquet)."""
    return pd.concat([r.episodes for r in runs], ignore_index=True)


def example_schedules(runs: Sequence[PolicyRun]) -> dict[str, NDArray[np.int64]]:
    """The schedules of each policy's first 20 orders, which the report plots."""
    return {r.policy: r.schedules[: min(20, len(r.schedules))] for r in runs}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
