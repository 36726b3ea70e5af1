"""``execrl execute``, ``execrl shadow``, ``execrl kill``, ``execrl tca`` and ``execrl audit``:
the executor on the command line.

Registered on the main command line by ``execrl.cli``. Every run goes through
``execrl.executor.Executor`` (the loop ``execrl evaluate`` uses), under the risk guard and the
watchdog, and leaves a complete audit trail and its transaction-cost report in ``--out``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich import box
from rich.table import Table

from execrl.domain import ConfigError, ExecRLError, ParentOrder
from execrl.domain.limits import MAX_SEED
from execrl.domain.outputs import InterruptedAfterSwap, check_output_folder, staged_folder
from execrl.env.factory import EnvConfig
from execrl.executor.config import ExecutorConfig
from execrl.executor.kill import KillRequest, parse_kill, write_kill_file
from execrl.executor.loop import Executor, ExecutionRun, PolicySet, Safety, context_for
from execrl.executor.venues import VENUES, sent_commands
from execrl.sim.spec import MarketSpec

#: what an executor run writes into --out
EXECUTION_OUTPUTS = frozenset({"trail", "report.md", "tca.json", "summary.json", "plots",
                               "commands.jsonl", "live", "shadow"})

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="Executor YAML (seed 001 §9.3: policy, risk, watchdog, fallback, "
    "kill_file). Default: TWAP under the default limits and watchdog.")]
OrdersOpt = Annotated[int, typer.Option(min=1, help="Parent orders to run (copies of --order, "
                                        "each on its own market path).")]
SeedOpt = Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the market paths.")]
OrderOpt = Annotated[Path | None, typer.Option(
    "--order", help="Parent order JSON (seed 001 §9.1); default: the market's default order.")]
MarketOpt = Annotated[Path | None, typer.Option(
    "--market", help="JSON object of market parameters overriding the preset.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace --out even if it holds files "
                                        "execrl did not write there.")]
SqlOpt = Annotated[str | None, typer.Option(
    "--sql-url", help="SQLAlchemy URL for the per-order summaries and incidents (default: "
    "SQLite in the trail; e.g. postgresql+psycopg://user@host/db).")]
KillOpt = Annotated[Path | None, typer.Option(
    "--kill-file", help="The kill switch: when this file appears (execrl kill FILE), no new "
    "child orders and every working one cancelled; read at every decision.")]
NoPlotsOpt = Annotated[bool, typer.Option("--no-plots", help="Write the report without plots.")]


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    from execrl.cli import _error

    _error(str(exc))
    return typer.Exit(code)


def load_executor_config(path: Path | None) -> ExecutorConfig:
    return ExecutorConfig() if path is None else ExecutorConfig.load(path)


def build_executor(config: ExecutorConfig, market: MarketSpec, order: ParentOrder, mode: str,
                   kill_file: Path | None = None, audit: Any = None) -> Executor:
    """The executor a configuration describes, its policies loaded and checked (a checkpoint
    trained elsewhere runs with a one-line warning)."""
    from execrl.evaluate.backtest import resolve_policy
    from execrl.safety.guard import KillSwitch

    ctx = context_for(market, order)
    spec = config.policy
    env = EnvConfig(market=market)

    def load(checkpoint: str | None) -> Any:
        text = spec.type if checkpoint is None else f"{spec.type}:{checkpoint}"
        policy = resolve_policy(text, ctx, env, order)
        if spec.action_set is not None and policy.action_set != spec.action_set:
            raise ConfigError(
                f"executor config policy.action_set = {spec.action_set!r}, but the policy "
                f"speaks {policy.action_set!r}"
            )
        return policy

    buy = load(spec.checkpoint)
    sell = load(spec.sell_checkpoint) if spec.sell_checkpoint else None
    safety = Safety(
        limits=config.risk_limits(),
        watchdog=config.watchdog_config(),
        fallback=config.fallback,
        kill=KillSwitch(),
        kill_file=str(kill_file) if kill_file is not None else config.kill_file,
    )
    return Executor(PolicySet(buy, sell), market, safety=safety, mode=mode, audit=audit)


def summary_table(title: str, runs: dict[str, ExecutionRun]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("run", "policy", "orders", "IS mean", "IS p95", "fill rate", "child orders",
                "guard rejects", "breaches", "fallbacks", "killed"):
        table.add_column(col, justify="left" if col in ("run", "policy") else "right")
    for label, run in runs.items():
        e = run.episodes
        state = e.get("final_state", pd.Series(["DONE"] * len(e)))
        table.add_row(
            label, run.policy, f"{len(e):,}", f"{e['is_bps'].mean():.2f}",
            f"{np.percentile(e['is_bps'], 95):.2f}", f"{e['fill_rate'].mean():.3f}",
            f"{int(e['child_orders'].sum()):,}", f"{int(e.get('guard_rejects', e['rejects']).sum()):,}",
            f"{int(e['breaches'].sum()):,}",
            f"{int((e.get('trigger', pd.Series(['none'] * len(e))) != 'none').sum()):,}",
            f"{int((state == 'KILLED').sum()):,}",
        )
    return table


def summary_json(run: ExecutionRun) -> dict[str, Any]:
    e = run.episodes
    out: dict[str, Any] = {
        "policy": run.policy,
        "orders": len(e),
        "is_bps_mean": float(e["is_bps"].mean()),
        "fill_rate": float(e["fill_rate"].mean()),
        "child_orders": int(e["child_orders"].sum()),
        "breaches": int(e["breaches"].sum()),
    }
    if "guard_rejects" in e:
        out["guard_rejects"] = int(e["guard_rejects"].sum())
    if "trigger" in e:
        out["triggers"] = {k: int(v) for k, v in e["trigger"].value_counts().items()}
        out["final_states"] = {k: int(v) for k, v in e["final_state"].value_counts().items()}
    return out


__all__ = [
    "EXECUTION_OUTPUTS",
    "VENUES",
    "KillRequest",
    "build_executor",
    "check_output_folder",
    "json",
    "load_executor_config",
    "parse_kill",
    "sent_commands",
    "staged_folder",
    "summary_json",
    "summary_table",
    "write_kill_file",
    "InterruptedAfterSwap",
    "ExecRLError",
    "OrdersOpt",
    "SeedOpt",
]
