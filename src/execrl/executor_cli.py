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
from execrl.evaluate.tca import TCA_OUTPUTS
from execrl.executor.config import ExecutorConfig, PolicyConfig
from execrl.executor.kill import KillRequest, check_kill_path, parse_kill, write_kill_file
from execrl.executor.loop import ExecutionRun, Executor, PolicySet, Safety, context_for
from execrl.executor.venues import VENUES, sent_commands
from execrl.sim.spec import MarketSpec

#: what an executor run writes into --out
EXECUTION_OUTPUTS = frozenset({"trail", "report.md", "summary.json", "commands.jsonl", "live",
                               "shadow"}) | TCA_OUTPUTS

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
PolicyOpt = Annotated[str | None, typer.Option(
    "--policy", help="The policy, replacing the config's: a baseline (twap, vwap, pov:0.1, ac, "
    "passive_twap, ...) or LABEL:CHECKPOINT for a trained agent.")]


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    from execrl.cli import _error

    _error(str(exc))
    return typer.Exit(1 if isinstance(exc, SqlUnreachable) else code)


def load_executor_config(path: Path | None, policy: str | None = None) -> ExecutorConfig:
    """The --config file (or the defaults), its policy replaced by --policy when given."""
    config = ExecutorConfig() if path is None else ExecutorConfig.load(path)
    if policy is None:
        return config
    return config.model_copy(update={"policy": policy_config(config.policy, policy, "--policy")})


def policy_config(base: PolicyConfig, text: str, option: str) -> PolicyConfig:
    """``base`` with its policy replaced by a command-line spec: a baseline with its
    parameters (``pov:0.1``) or ``LABEL:CHECKPOINT`` (the same reading as ``execrl
    evaluate --policies``)."""
    label, _, param = text.partition(":")
    if not label:
        raise ConfigError(f"{option} {text!r} has no label: write a baseline (twap, pov:0.1) "
                          f"or LABEL:CHECKPOINT")
    is_checkpoint = bool(param) and ("/" in param or Path(param).is_dir())
    return base.model_copy(update={
        "type": label if is_checkpoint else text, "checkpoint": param if is_checkpoint
        else None, "sell_checkpoint": None})


def build_executor(config: ExecutorConfig, market: MarketSpec, order: ParentOrder, mode: str,
                   kill_file: Path | None = None, audit: Any = None) -> Executor:
    """The executor a configuration describes, its policies loaded and checked (a checkpoint
    trained elsewhere runs with a one-line warning)."""
    from execrl.evaluate.backtest import resolve_policy
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
    priced = market.for_order(order)
    tick = float(getattr(priced, "tick_size", 0.0) or 0.0)
    safety = Safety(
        limits=config.risk_limits(tick_size=tick, ref_price=order.arrival_px or priced.s0),
        watchdog=config.watchdog_config(),
        kill_file=str(kill_file) if kill_file is not None else config.kill_file,
    )
    executor = Executor(PolicySet(buy, sell), market, safety=safety, mode=mode, audit=audit)
    if spec.checkpoint is None:  # a baseline with its parameters (pov:0.1), for a re-run
        executor.meta_extra = {"policy_spec": spec.type}
    return executor


def check_sql_url(url: str | None, option: str = "--sql-url") -> None:
    """Refuse, in one line, an SQL URL the trail could not be written to or read from: not a
    URL, no such driver (exit 2), or no connection (exit 1), before anything runs."""
    if url is None:
        return
    import sqlalchemy as sa

    from execrl.executor import sql

    parsed = sql.normalise_url(url)
    shown = sql.shown_url(parsed)
    try:
        engine = sql.engine_for(parsed)
    except (sa.exc.ArgumentError, ImportError) as exc:  # NoSuchModuleError is an ArgumentError
        raise ConfigError(f"{option} {shown!r}: no database driver for "
                          f"{parsed.drivername!r} ({str(exc).splitlines()[0]})") from None
    try:
        with engine.connect():
            pass
    except sa.exc.DBAPIError as exc:
        first = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
        raise SqlUnreachable(f"{option} {shown!r}: cannot connect"
                             f"{': ' + first[0] if first else ''}") from None
    finally:
        engine.dispose()


class SqlUnreachable(ConfigError):
    """The SQL server did not answer: not a mistake in the command line (exit 1)."""


def _trail_labels() -> dict[str, tuple[str, ...]]:
    from execrl.executor.loop import ACTING
    from execrl.safety.watchdog import TRIGGERS

    return {"trigger": TRIGGERS, "acting": ACTING}


def _reference_actions(executor: Executor, order: ParentOrder) -> dict[str, list[float]] | None:
    """The policy's reference action distribution (its checkpoint's greedy histogram), for
    the drift row of the monitoring table."""
    from execrl.safety.watchdog import reference_distribution

    policy = executor.policy_for(order)
    schema = getattr(policy, "feature_schema", None)
    counts = None if schema is None else schema.action_counts
    if counts is None:
        return None
    smoothing = executor.safety.watchdog.drift_smoothing if executor.safety.watchdog else 0.5
    return {policy.name: list(reference_distribution(counts, smoothing))}


def run_and_record(executor: Executor, order: ParentOrder, n_orders: int, seed: int,
                   venue: str, folder: Path, sql_url: str | None, plots: bool,
                   progress: Any = None) -> tuple[ExecutionRun, Any]:
    """One run through the executor with its audit trail in ``folder/trail`` and its
    transaction-cost report in ``folder``; returns the run and the TCA report."""
    from execrl.evaluate.tca import tca_from_trail, write_tca
    from execrl.executor.audit import AuditTrail, read_trail

    policy = executor.policy_for(order)
    executor.audit = AuditTrail(folder / "trail", sql_url=sql_url,
                                features=tuple(policy.observations), labels=_trail_labels())
    on_step = None if progress is None else progress
    run = executor.run(order, n_orders, seed, venue=venue, on_step=on_step)
    trail = read_trail(folder / "trail", sql_url)
    drift = executor.safety.watchdog.drift_smoothing if executor.safety.watchdog else 0.0
    tick = float(run.extras["core"].market.tick_size) or None
    report = tca_from_trail(trail, tick_size=tick,
                            reference_actions=_reference_actions(executor, order),
                            drift_smoothing=drift)
    write_tca(folder, report, plots)
    commands = sent_commands(run.extras["venue"])
    if commands:
        with (folder / "commands.jsonl").open("w", encoding="utf-8") as fh:
            for c in commands:
                fh.write(json.dumps(c) + "\n")
    (folder / "summary.json").write_text(json.dumps(
        {**summary_json(run), "venue": venue, "seed": seed, "run_id": trail.run_id},
        indent=2) + "\n")
    return run, report


def summary_table(title: str, runs: dict[str, ExecutionRun]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("run", "policy", "orders", "IS mean", "IS p95", "fill rate", "child orders",
                "guard rejects", "breaches", "fallbacks", "killed"):
        table.add_column(col, justify="left" if col in ("run", "policy") else "right")
    for label, run in runs.items():
        e = run.episodes
        none = pd.Series(["none"] * len(e))
        table.add_row(
            label, run.policy, f"{len(e):,}", f"{e['is_bps'].mean():.2f}",
            f"{np.percentile(e['is_bps'], 95):.2f}", f"{e['fill_rate'].mean():.3f}",
            f"{int(e['child_orders'].sum()):,}", f"{int(e['guard_rejects'].sum()):,}",
            f"{int(e['breaches'].sum()):,}",
            f"{int((e.get('trigger', none) != 'none').sum()):,}",
            f"{int((e.get('finished_by', none) == 'killed').sum()):,}",
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
        out["finished_by"] = {k: int(v) for k, v in e["finished_by"].value_counts().items()}
    return out




# -- the commands -------------------------------------------------------------------------------
def _common(env: str, market_file: Path | None, order_file: Path | None
            ) -> tuple[MarketSpec, ParentOrder]:
    from execrl.cli import _load_market

    market = _load_market(env, market_file)
    order = market.default_order() if order_file is None else ParentOrder.from_file(order_file)
    return market, order


def _progress(total: int, what: str) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from execrl.cli import err_console

    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total} steps"), TimeElapsedColumn(),
                        console=err_console, transient=True)
    task = progress.add_task(what, total=total)
    return progress, (lambda: progress.advance(task))


def _print_monitoring(report: Any, label: str) -> None:
    from execrl.cli import console

    flagged = report.monitoring[report.monitoring["flagged"]]
    if flagged.empty:
        console.print(f"  {label}: no seed 002 §4 alert")
        return
    for row in flagged.itertuples():
        console.print(f"  {label}: [red]{row.metric}[/red] = {row.value:.4g} "
                      f"(threshold {row.threshold:g}): {row.action}")


def _guarded(out: Path, body: Any) -> None:
    """Run ``body`` with execrl's one-line errors and the staged output's interrupts."""
    from execrl.cli import _interrupted, _os_error

    try:
        body()
    except ExecRLError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt as exc:
        raise _interrupted(out, isinstance(exc, InterruptedAfterSwap)) from None
    except OSError as exc:
        raise _fail(ConfigError(_os_error(exc, out)), 1) from None


EnvOpt = Annotated[str, typer.Option(help="Market preset (see execrl evaluate --help).")]


def execute(
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
    env: EnvOpt = "lob",
    orders: OrdersOpt = 200,
    seed: SeedOpt = 7,
    order: OrderOpt = None,
    market: MarketOpt = None,
    venue: Annotated[str, typer.Option(help="Where child orders go: simulated (the market), "
                                       "shadow (nothing sent: would-have-sent commands and "
                                       "counterfactual fills) or paper (a paper broker).")]
    = "simulated",
    out: Annotated[Path, typer.Option(help="Folder for the audit trail (trail/), the TCA "
                                      "report (tca.md, tca.json, plots) and summary.json; "
                                      "replaced whole at the end.")] = Path("execution"),
    kill_file: KillOpt = None,
    sql_url: SqlOpt = None,
    force: ForceOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """Execute parent orders through the one loop: policy -> risk guard -> venue -> fills,
    watched by the watchdog (fallback on a trigger), every decision in the audit trail, and
    the transaction-cost report a desk reads."""
    from execrl.cli import _print_whole, console

    def body() -> None:
        if venue not in VENUES:
            raise ConfigError(f"--venue {venue!r} is unknown; choose from {', '.join(VENUES)}")
        cfg = load_executor_config(config, policy)
        market_spec, parent = _common(env, market, order)
        check_output_folder(out, "--out", lambda e: e.name in EXECUTION_OUTPUTS,
                            "an execrl execution", force=force)
        url = sql_url or cfg.audit.sql_url
        check_sql_url(url, "--sql-url" if sql_url else "executor config audit.sql_url")
        watched = kill_file if kill_file is not None else (
            Path(cfg.kill_file) if cfg.kill_file else None)
        if watched is not None:
            check_kill_path(watched, "--kill-file" if kill_file is not None else
                            "executor config kill_file")
        executor = build_executor(cfg, market_spec, parent, mode="backtest",
                                  kill_file=kill_file)
        steps = market_spec.for_order(parent).n_steps
        progress, tick = _progress(steps, f"{orders:,} orders through the executor")
        with staged_folder(out) as stage, progress:
            run, report = run_and_record(executor, parent, orders, seed, venue, stage, url,
                                         not no_plots, tick)
        _print_whole(summary_table(
            f"{parent.side.value} {parent.qty:,} shares, {orders:,} orders ({env}, seed "
            f"{seed}, venue {venue}); IS in bps, + = cost", {"run": run}))
        _print_monitoring(report, run.policy)
        console.print(f"wrote {out}/: trail/ (audit trail), tca.md, tca.json, summary.json")

    _guarded(out, body)


def shadow(
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
    live: Annotated[str, typer.Option(help="The policy trading live (through the paper "
                                      "broker): a baseline, or LABEL:CHECKPOINT.")] = "twap",
    env: EnvOpt = "lob",
    orders: OrdersOpt = 200,
    seed: SeedOpt = 7,
    order: OrderOpt = None,
    market: MarketOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for live/ and shadow/ (each an audit trail "
                                      "and its TCA report) and report.md.")] = Path("shadow"),
    sql_url: SqlOpt = None,
    force: ForceOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """Shadow mode: the --policy (or --config) policy runs in shadow beside the live policy (TWAP by
    default) on the same orders and the same market data; the shadow sends nothing (it records
    what it would have sent) and is filled counterfactually; paired statistics say which is
    cheaper."""
    from execrl.cli import _print_whole, console
    from execrl.evaluate.stats import format_pvalue, paired_comparison

    def body() -> None:
        cfg = load_executor_config(config, policy)
        market_spec, parent = _common(env, market, order)
        check_output_folder(out, "--out", lambda e: e.name in EXECUTION_OUTPUTS,
                            "an execrl shadow run", force=force)
        url = sql_url or cfg.audit.sql_url
        check_sql_url(url, "--sql-url" if sql_url else "executor config audit.sql_url")
        if cfg.kill_file:
            check_kill_path(Path(cfg.kill_file), "executor config kill_file")
        live_cfg = cfg.model_copy(update={"policy": policy_config(
            cfg.policy, live, "--live").model_copy(update={"action_set": None})})
        candidate = build_executor(cfg, market_spec, parent, mode="shadow")
        current = build_executor(live_cfg, market_spec, parent, mode="backtest")
        if candidate.policy_for(parent).name == current.policy_for(parent).name:
            raise ConfigError(f"the shadow policy and --live are both "
                              f"{current.policy_for(parent).name!r}; shadow another policy")
        steps = market_spec.for_order(parent).n_steps
        progress, tick = _progress(2 * steps, f"live and shadow, {orders:,} orders each")
        with staged_folder(out) as stage, progress:
            (stage / "live").mkdir()
            (stage / "shadow").mkdir()
            live_run, live_tca = run_and_record(current, parent, orders, seed, "paper",
                                                stage / "live", url, not no_plots, tick)
            shadow_run, shadow_tca = run_and_record(candidate, parent, orders, seed, "shadow",
                                                    stage / "shadow", url, not no_plots,
                                                    tick)
            cmp = None
            if orders >= 10:
                cmp = paired_comparison(shadow_run.policy, shadow_run.episodes["is_bps"],
                                        live_run.policy, live_run.episodes["is_bps"])
            (stage / "report.md").write_text(_shadow_report(live_run, shadow_run, cmp, env,
                                                            seed), encoding="utf-8")
        _print_whole(summary_table(
            f"shadow beside live: {parent.side.value} {parent.qty:,} shares, {orders:,} "
            f"orders on the same market data ({env}, seed {seed}); IS in bps",
            {"live (paper)": live_run, "shadow": shadow_run}))
        if cmp is not None:
            console.print(f"  shadow - live: {cmp.diff_bps_mean:+.2f} bps, 95% CI "
                          f"[{cmp.ci95[0]:+.2f}, {cmp.ci95[1]:+.2f}], paired t-test p = "
                          f"{format_pvalue(cmp.t_pvalue)}")
        else:
            console.print("  fewer than 10 orders: no paired statistics")
        _print_monitoring(live_tca, f"live {live_run.policy}")
        _print_monitoring(shadow_tca, f"shadow {shadow_run.policy}")
        console.print(f"wrote {out}/: live/, shadow/ (trails, TCA, the shadow's would-have-sent "
                      f"commands.jsonl), report.md")

    _guarded(out, body)


def _shadow_report(live: ExecutionRun, shadow: ExecutionRun, cmp: Any, env: str,
                   seed: int) -> str:
    lines = [
        "# Shadow run", "",
        f"Market `{env}`, seed {seed}, {len(live.episodes):,} orders; the live policy "
        f"`{live.policy}` traded through the paper broker, the shadow `{shadow.policy}` ran on "
        "the same market data and sent nothing (its would-have-sent child orders are in "
        "`shadow/commands.jsonl`; its fills are counterfactual).", "",
        "| run | policy | IS mean (bps) | fill rate | fallbacks |", "|---|---|---:|---:|---:|",
    ]
    for label, run in (("live", live), ("shadow", shadow)):
        e = run.episodes
        fb = int((e.get("finished_by", pd.Series(dtype=object)) == "fallback").sum())
        lines.append(f"| {label} | {run.policy} | {e['is_bps'].mean():.2f} | "
                     f"{e['fill_rate'].mean():.3f} | {fb:,} |")
    lines.append("")
    if cmp is not None:
        lines.append(f"Paired difference (shadow − live, same orders and paths): "
                     f"{cmp.diff_bps_mean:+.2f} bps, 95% bootstrap CI [{cmp.ci95[0]:+.2f}, "
                     f"{cmp.ci95[1]:+.2f}], t-test p = {cmp.t_pvalue:.3g}, Wilcoxon p = "
                     f"{cmp.wilcoxon_pvalue:.3g}. Negative: the shadow would have been cheaper.")
    lines += ["", "Transaction-cost reports: `live/tca.md`, `shadow/tca.md`.", ""]
    return "\n".join(lines)


def kill(
    file: Annotated[Path, typer.Argument(help="The kill file an executor watches "
                                         "(--kill-file or the config's kill_file).")],
    order: Annotated[list[str] | None, typer.Option(
        "--order", help="Kill only this parent order (repeatable).")] = None,
    policy: Annotated[list[str] | None, typer.Option(
        "--policy", help="Kill every order of this policy (repeatable).")] = None,
    release: Annotated[bool, typer.Option(
        "--release", help="Remove the kill file (new runs trade again; orders already "
        "killed stay killed).")] = False,
) -> None:
    """The kill switch: stop new child orders and cancel every working one, globally (no
    option), per order or per policy. A running executor reads the file at its next
    decision."""
    from execrl.cli import console

    try:
        if release:
            if order or policy:
                raise ConfigError("--release takes no --order or --policy")
            if file.is_dir():
                raise ConfigError(f"kill file {str(file)!r} is a folder; not removed")
            if not file.exists():
                raise ConfigError(f"kill file {str(file)!r} does not exist")
            try:
                parse_kill(file.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{str(file)!r} is not a kill file ({exc}); not removed"
                                  ) from None
            file.unlink()
            console.print(f"released: removed {file}")
            return
        request = KillRequest(everything=not order and not policy,
                              orders=frozenset(order or ()), policies=frozenset(policy or ()))
        write_kill_file(file, request)
        what = "everything" if request.everything else ", ".join(
            [*(f"order {o}" for o in sorted(request.orders)),
             *(f"policy {p}" for p in sorted(request.policies))])
        console.print(f"killed {what}: wrote {file}")
    except ExecRLError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(ConfigError(f"kill file {str(file)!r}: {exc.strerror}"), 1) from None


def tca(
    trail: Annotated[Path, typer.Argument(help="An audit trail folder (trail/ of execrl "
                                          "execute).")],
    out: Annotated[Path, typer.Option(help="Folder for tca.md, tca.json, tca_orders.parquet "
                                      "and the plots; replaced whole at the end.")] = Path("tca"),
    sql_url: SqlOpt = None,
    force: ForceOpt = False,
    no_plots: NoPlotsOpt = False,
) -> None:
    """The transaction-cost analysis of an audit trail: Perold's decomposition, slippage
    against arrival / interval VWAP / PWP, markouts, seed 002's monitoring table."""
    from execrl.cli import console
    from execrl.evaluate.tca import TCA_OUTPUTS, tca_from_trail, write_tca
    from execrl.executor.audit import read_trail

    def body() -> None:
        if out.resolve() == trail.resolve() or out.resolve() in trail.resolve().parents:
            raise ConfigError(f"--out {str(out)!r} holds the trail {str(trail)!r} it reads; "
                              "name another folder")
        check_sql_url(sql_url)
        t = read_trail(trail, sql_url)
        check_output_folder(out, "--out", lambda e: e.name in TCA_OUTPUTS, "an execrl TCA",
                            force=force)
        from execrl.executor.rerun import run_meta

        tick = float(run_meta(t).get("tick_size") or 0.0) or None
        report = tca_from_trail(t, tick_size=tick)
        with staged_folder(out) as stage:
            write_tca(stage, report, not no_plots)
        _print_monitoring(report, "trail")
        console.print(f"wrote {out}/tca.md")

    _guarded(out, body)


audit_app = typer.Typer(help="Audit trails: check one adds up, re-run an order from one.",
                        no_args_is_help=True, rich_markup_mode=None)


@audit_app.command("check")
def audit_check(
    trail: Annotated[Path, typer.Argument(help="An audit trail folder.")],
    sql_url: SqlOpt = None,
) -> None:
    """Check that a trail is complete and consistent: per-decision fills sum to the fills
    file and to the SQL summary, every child has its decision, steps are consecutive."""
    from execrl.cli import console
    from execrl.executor.audit import check_trail, read_trail

    try:
        check_sql_url(sql_url)
        t = read_trail(trail, sql_url)
        problems = check_trail(t)
    except ExecRLError as exc:
        raise _fail(exc) from None
    if problems:
        for p in problems[:20]:
            console.print(f"problem: {p}", markup=False)
        raise typer.Exit(1)
    console.print(f"trail {t.run_id}: {len(t.orders):,} orders, {len(t.decisions):,} "
                  f"decisions, {len(t.fills):,} fills, {len(t.incidents):,} incidents: "
                  "consistent")


@audit_app.command("rerun")
def audit_rerun(
    trail: Annotated[Path, typer.Argument(help="An audit trail folder.")],
    order: Annotated[str, typer.Option("--order", help="The parent order id to re-run.")],
    sql_url: SqlOpt = None,
) -> None:
    """Re-run one order of a trail in the simulator (same market events, same seeds, same
    policy: its hash is checked) and compare its decisions with the recorded ones."""
    from execrl.cli import console
    from execrl.executor.rerun import rerun_order

    try:
        check_sql_url(sql_url)
        result = rerun_order(trail, order, sql_url)
    except ExecRLError as exc:
        raise _fail(exc) from None
    if result.identical:
        console.print(f"order {order}: {result.decisions} decisions re-run, identical")
        return
    console.print(f"order {order}: differs at {result.first_difference}", markup=False)
    raise typer.Exit(1)
