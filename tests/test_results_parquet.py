"""``execrl evaluate`` without pandas: episodes.parquet written from columns with pyarrow is
the file pandas writes of the same table, byte for byte; the report's per-policy and paired
views of the columns are those pandas' selection and pivot gave; the command's process
never imports pandas."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from execrl.evaluate.report import _is_by_order, _is_by_policy, paired_differences
from execrl.evaluate.results import write_episodes


def _columns(n: int = 500, seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    return {
        "order_idx": np.tile(np.arange(n // 2), 2),
        "order_id": np.array([f"ABC-1#{i}" for i in range(n)], dtype=object),
        "policy": np.repeat(np.array(["twap", "ac"], dtype=object), n // 2),
        "side": np.full(n, "sell", dtype=object),
        "is_bps": rng.normal(10.0, 5.0, n),
        "fills": rng.integers(0, 9, n),
    }


def _pandas_bytes(tmp_path: Path, columns: dict[str, object]) -> bytes:
    pd.DataFrame(columns).to_parquet(tmp_path / "pandas.parquet", index=False)
    return (tmp_path / "pandas.parquet").read_bytes()


@pytest.mark.parametrize("change", ["none", "nan", "non_ascii", "bool", "none_string",
                                    "int32"])
def test_columns_are_written_as_pandas_writes_them(tmp_path: Path, change: str) -> None:
    """Byte for byte, the columns ``execrl evaluate`` writes (int64, float64, str; a float
    NaN stored as a null; non-ASCII text) and, through pandas, the kinds it does not write
    itself (bool, int32, a missing string)."""
    columns = _columns()
    if change == "nan":
        columns["is_bps"][[3, 77]] = np.nan
    elif change == "non_ascii":
        columns["order_id"][5] = "Zürich−1"
    elif change == "bool":
        columns["cut"] = np.arange(500) % 3 == 0
    elif change == "none_string":
        columns["order_id"][7] = None
    elif change == "int32":
        columns["fills"] = columns["fills"].astype(np.int32)
    write_episodes(tmp_path / "episodes.parquet", columns)
    assert (tmp_path / "episodes.parquet").read_bytes() == _pandas_bytes(tmp_path, columns)
    back = pd.read_parquet(tmp_path / "episodes.parquet")
    assert back.equals(pd.read_parquet(tmp_path / "pandas.parquet"))


def test_a_table_is_written_by_pandas(tmp_path: Path) -> None:
    table = pd.DataFrame(_columns())
    write_episodes(tmp_path / "episodes.parquet", table)
    assert (tmp_path / "episodes.parquet").read_bytes() == _pandas_bytes(tmp_path, _columns())


def _pivot_differences(frame: pd.DataFrame, policy: str, baseline: str) -> np.ndarray:
    """What the report computed with pandas before (pivot, subtract, dropna)."""
    wide = frame.pivot(index="order_idx", columns="policy", values="is_bps")
    return (wide[policy] - wide[baseline]).dropna().to_numpy(dtype=np.float64)


def test_paired_differences_are_pandas_pivot_ones() -> None:
    """Orders joined on order_idx whatever the row order, orders missing from either side
    or NaN in either left out, ascending order_idx; the same from a table."""
    rng = np.random.default_rng(3)
    n = 400
    rows = rng.permutation(2 * n)
    columns = {"order_idx": np.tile(np.arange(n), 2)[rows],
               "policy": np.repeat(np.array(["twap", "ac"], dtype=object), n)[rows],
               "is_bps": rng.normal(0.0, 3.0, 2 * n)[rows]}
    keep = np.ones(2 * n, dtype=bool)
    keep[rng.choice(2 * n, 30, replace=False)] = False  # orders one side lacks
    columns = {k: v[keep] for k, v in columns.items()}
    columns["is_bps"][[2, 11]] = np.nan
    frame = pd.DataFrame(columns)
    expected = _pivot_differences(frame, "ac", "twap")
    assert expected.size < n - 30
    for episodes in (columns, frame):
        got = paired_differences(episodes, "ac", "twap")
        np.testing.assert_array_equal(got, expected)
    for p, values in zip(["ac", "twap"], _is_by_policy(columns, ["ac", "twap"]), strict=True):
        np.testing.assert_array_equal(values, frame.loc[frame["policy"] == p, "is_bps"])


def test_a_repeated_order_is_refused_naming_the_first_repeat() -> None:
    columns = {"order_idx": np.array([0, 1, 2, 0, 1, 1]),
               "policy": np.array(["ac", "ac", "ac", "twap", "twap", "ac"], dtype=object),
               "is_bps": np.arange(6.0)}
    frame = pd.DataFrame(columns)
    first = frame.loc[frame.duplicated(["order_idx", "policy"])].iloc[0]
    with pytest.raises(ValueError, match=r"1 duplicate \(order_idx, policy\) row\(s\), first: "
                       rf"order_idx={first['order_idx']}, policy='ac'"):
        _is_by_order(columns)


_MODULES = """
    import atexit, sys
    atexit.register(lambda: print("PANDAS", "pandas" in sys.modules))
    sys.argv = ["execrl", *sys.argv[1:]]
    from execrl.cli import main
    main()
"""


@pytest.mark.parametrize("plots", [True, False])
def test_evaluate_does_not_import_pandas(tmp_path: Path, plots: bool) -> None:
    """``execrl evaluate`` (its process; the plotting child is forked from it) never imports
    pandas, and what it wrote reads back as the table pandas would have written."""
    args = ["evaluate", "--orders", "60", "--policies", "twap,ac", "--out", str(tmp_path / "o")]
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_MODULES), *args,
                           *([] if plots else ["--no-plots"])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "PANDAS False"
    episodes = pd.read_parquet(tmp_path / "o" / "episodes.parquet")
    assert list(episodes["policy"].unique()) == ["twap", "ac"]
    assert len(episodes) == 120


def test_a_runs_table_is_its_columns_and_an_order_is_its_row() -> None:
    """``ExecutionRun.episodes`` is the table of its columns (one row per order, the policy
    and side on each), and order i's run is the table's row i, dtypes and all (with the
    watchdog's columns)."""
    from execrl.domain import ParentOrder
    from execrl.env.factory import EnvConfig
    from execrl.evaluate.backtest import policy_context
    from execrl.executor.loop import Executor, Safety
    from execrl.policies.baselines import make_baseline
    from execrl.presets import preset_market
    from execrl.safety.guard import RiskLimits
    from execrl.safety.watchdog import WatchdogConfig

    market = preset_market("ac")
    order = ParentOrder.from_json('{"order_id": "T-1", "symbol": "XYZ", "side": "sell", '
                                  '"qty": 1000000, "start_ts": 0, "horizon_s": 432000}')
    twap = make_baseline("twap", policy_context(EnvConfig(market=market), order))
    safety = Safety(limits=RiskLimits(), watchdog=WatchdogConfig(max_latency_s=None))
    run = Executor(twap, market, safety=safety).run(order, 12, seed=5)
    table = run.episodes
    assert table is run.episodes  # built once
    assert len(table) == 12 and list(table.columns) == list(run.columns)
    assert set(table["policy"]) == {"twap"} and set(table["side"]) == {"sell"}
    assert {"finished_by", "trigger", "trigger_step"} <= set(table.columns)
    for i in (0, 7, -1):
        pd.testing.assert_frame_equal(run.order(i).episodes,
                                      table.iloc[[i]].reset_index(drop=True))
