"""Assemble results.json (schema: shared/DESIGN.md) from policy runs, and write the files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
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
    Episodes,
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
        e = run.columns
        summary = is_summary(e["is_bps"])
        # Mean-variance objective E + λ·Var in bps of notional, the quantity AC minimises.
        objective = summary["mean"] + lam * (summary["std"] * notional / 1e4) ** 2 / notional * 1e4
        policies[run.policy] = {
            "is_bps": summary,
            "is_vs_arrival_vwap_bps": is_summary(e["is_vs_arrival_vwap_bps"]),
            "is_vs_interval_vwap_bps": is_summary(e["is_vs_interval_vwap_bps"]),
            "objective_bps": objective,
            # per-order IS + λ·Σσ²τx_k² (the risk term of the schedule actually traded)
            "objective_proxy_bps": _mean(e["is_bps"] + e["risk_proxy_bps"]),
            "fill_rate": _mean(e["fill_rate"]),
            # mean shares left unfilled (charged at the end mid, inside is_bps)
            "residual_shares": _mean(e["residual_shares"]),
            "residual_is_bps": _mean(e["residual_is_bps"]),
            "child_orders": _mean(e["child_orders"]),
            # child orders beyond a hard limit, over all orders (0: the limits held)
            "breaches": int(e["breaches"].sum()),
            # the policy's requests the limits cut down, over all orders
            "cuts": int(e["cuts"].sum()),
            # per order: fill events, cancels of a working order, child orders refused
            "fills": _mean(e["fills"]),
            "cancels": _mean(e["cancels"]),
            "rejects": _mean(e["rejects"]),
        }
        if run.behaviour is not None:
            policies[run.policy]["behaviour"] = run.behaviour
    by_name = {r.policy: r for r in runs}
    comparisons = []
    for base in compare_to:
        if base not in by_name:
            continue
        base_is = by_name[base].columns["is_bps"]
        others = {run.policy: run.columns["is_bps"] for run in runs
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
    painter: Painter | None = None, episodes: Episodes | None = None,
) -> Path:
    """results.json, episodes.parquet and the report (with its plots unless ``plots`` is
    False, drawn by ``painter``: ``execrl.evaluate.painter``), into ``out_dir``: a staging
    folder (``execrl.domain.outputs.staged_folder``) that replaces the user's folder whole at
    the end, so no file needs its own atomic write. ``episodes``: ``episodes_columns(runs)``
    where the caller has them already (``start_plots``), or a table. A forked painter is sent
    the plots still to draw first, so that it draws them while this process writes the
    parquet and JSON files (~0.5 of the ~0.5 CPU-s the paired differences take at 20,000
    orders)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if episodes is None:
        episodes = episodes_columns(runs)
    schedules = example_schedules(runs)
    if plots and isinstance(painter, ForkedPainter):
        draw_plots(painter, out_dir, results, episodes, schedules)
    write_episodes(out_dir / EPISODES_PARQUET, episodes)
    text = json.dumps(results, indent=2, default=_json_default, allow_nan=False)
    (out_dir / RESULTS_JSON).write_text(text)
    return write_report(out_dir, results, episodes, schedules, plots=plots, painter=painter)


def start_plots(painter: Painter, out_dir: Path, runs: Sequence[PolicyRun]) -> Episodes:
    """Have ``painter`` draw, into ``out_dir``, the plots ``write_outputs`` would draw that
    need only ``runs`` (the box plot, the schedules), before the statistics are computed: a
    ``ForkedPainter`` draws them while they are (``write_outputs`` then draws only the
    rest). Returns the episodes' columns (``episodes_columns``) for ``write_outputs``: built
    and sent to the painter once."""
    out_dir.mkdir(parents=True, exist_ok=True)
    episodes = episodes_columns(runs)
    draw_run_plots(painter, out_dir, episodes, example_schedules(runs),
                   [r.policy for r in runs])
    return episodes


def episodes_table(runs: Sequence[PolicyRun]) -> Any:
    """Every policy's per-order rows, one pandas table (episodes.parquet read back)."""
    import pandas as pd

    return pd.concat([r.episodes for r in runs], ignore_index=True)


def episodes_columns(runs: Sequence[PolicyRun]) -> dict[str, np.ndarray]:
    """``episodes_table(runs)`` column by column, without pandas: each run's columns one
    after the other (a run's scalar column repeated on each of its rows). Runs with
    different columns are joined as ``episodes_table`` joins them."""
    names = list(runs[0].columns) if runs else []
    if any(list(r.columns) != names for r in runs):
        table = episodes_table(runs)
        return {str(c): table[c].to_numpy() for c in table.columns}
    out = {}
    for name in names:
        parts = []
        for r in runs:
            value = r.columns[name]
            if not isinstance(value, np.ndarray):
                value = np.full(len(r.schedules), value,
                                dtype=object if isinstance(value, str) else None)
            parts.append(value)
        out[name] = np.concatenate(parts)
    return out


#: numpy dtype -> (pandas_type, numpy_type) in the pandas metadata of a parquet file, for the
#: column kinds ``write_episodes`` writes itself (strings: object arrays of ``str``)
_PANDAS_TYPES = {"int64": ("int64", "int64"), "float64": ("float64", "float64"),
                 "str": ("object", "str")}


def write_episodes(path: Path, episodes: Episodes) -> None:
    """``path``: the file ``pandas.DataFrame(episodes).to_parquet(path, index=False)``
    writes, byte for byte (its schema's pandas metadata included, so that pandas reads the
    same table back), written with pyarrow alone where every column is int64, float64 or
    str: ``execrl evaluate`` does not import pandas (~0.5 CPU-s). A table, or columns of
    other kinds, are written by pandas (``tests/test_results_parquet.py``)."""
    if not isinstance(episodes, dict):  # a table writes itself
        episodes.to_parquet(path, index=False)
        return
    arrays, described = [], []
    for name, values in episodes.items():
        values = np.asarray(values)
        kind = "str" if values.dtype == object else values.dtype.name
        array = _arrow_array(values, kind) if kind in _PANDAS_TYPES else None
        if array is None or not isinstance(name, str):
            import pandas as pd

            pd.DataFrame(episodes).to_parquet(path, index=False)
            return
        pandas_type, numpy_type = _PANDAS_TYPES[kind]
        arrays.append(array)
        described.append({"name": name, "field_name": name, "pandas_type": pandas_type,
                          "numpy_type": numpy_type, "metadata": None})
    import pyarrow as pa

    _write_parquet(path, pa.table(arrays, names=[d["name"] for d in described]), described)


def _arrow_array(values: NDArray, kind: str) -> Any:
    """``values`` as the arrow array ``pyarrow.Table.from_pandas`` makes of the column (a
    float NaN is a null), from its buffers: ``pyarrow.array`` imports pandas where it is
    installed. None for an object column that is not all ``str``."""
    import pyarrow as pa

    n = len(values)
    if kind == "str":
        try:
            text = "".join(values)
        except TypeError:  # not all str (None, a number): pandas' rules
            return None
        if text.isascii():  # a character is a byte
            parts, data = values, text.encode()
        else:
            parts = [v.encode() for v in values]
            data = b"".join(parts)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=n), out=offsets[1:])
        return pa.Array.from_buffers(pa.large_string(), n, [
            None, pa.py_buffer(offsets), pa.py_buffer(data)])
    data = pa.py_buffer(np.ascontiguousarray(values))
    arrow_type = pa.int64() if kind == "int64" else pa.float64()
    missing = np.isnan(values) if kind == "float64" else None
    if missing is None or not missing.any():
        return pa.Array.from_buffers(arrow_type, n, [None, data], null_count=0)
    valid = pa.py_buffer(np.packbits(~missing, bitorder="little"))
    return pa.Array.from_buffers(arrow_type, n, [valid, data], null_count=int(missing.sum()))


def _write_parquet(path: Path, table: Any, columns: list[dict[str, Any]]) -> None:
    """``table`` to ``path`` with the schema metadata ``pyarrow.Table.from_pandas`` writes for
    a frame of ``columns`` and a default index left out (``index=False``), as pandas writes
    it (snappy)."""
    from importlib.metadata import version

    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {"index_columns": [], "column_indexes": [], "columns": columns, "attributes": {},
            "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": version("pandas")}
    table = table.replace_schema_metadata({"pandas": json.dumps(meta)})
    pq.write_table(table, path, compression="snappy")


def example_schedules(runs: Sequence[PolicyRun]) -> dict[str, NDArray[np.int64]]:
    """The schedules of each policy's first 20 orders, which the report plots."""
    return {r.policy: r.schedules[: min(20, len(r.schedules))] for r in runs}


def _mean(values: NDArray) -> float:
    """The mean of a column as pandas takes it (NaNs left out: counted as 0 in the sum and
    not in the count; NaN if all are)."""
    missing = np.isnan(values)
    if not missing.any():
        return float(np.mean(values))
    return float(np.nanmean(values)) if not missing.all() else float("nan")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
