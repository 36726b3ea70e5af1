"""The ``execrl`` command line."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.segment import Segments
from rich.table import Table

try:  # typer 0.29 carries its own copy of click; its exceptions are what the parser raises
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - a typer that uses the click package
    from click import exceptions as click_errors

from execrl import __version__
from execrl.domain import ConfigError, ExecRLError, ParentOrder
from execrl.domain.errors import shown_value, warn_user
from execrl.domain.files import load_config_object, load_json_object
from execrl.domain.limits import MAX_SEED, MEMORY_LIMIT_ENV, memory_limit_bytes
from execrl.domain.outputs import InterruptedAfterSwap, check_output_folder, staged_folder
from execrl.env.factory import EnvConfig, order_feasibility
from execrl.evaluate.stats import format_pvalue
from execrl.presets import ENV_PRESETS, preset_market
from execrl.sim.spec import MarketSpec, parse_market

#: the arguments of the running command line, recorded in results.json
_ARGS: list[str] = []


class _OneLineErrors(typer.core.TyperGroup):
    """The command line's own refusals (a bad option value, an unknown option or command) are
    one ``error:`` line on stderr and exit 2, like every error execrl raises; no usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _ARGS[:] = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(args=args, prog_name="execrl", complete_var=complete_var,
                                standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:
            console.print(exc.ctx.get_help(), highlight=False, markup=False)
            code = 0
        except click_errors.ClickException as exc:
            where = exc.ctx.command_path if getattr(exc, "ctx", None) else "execrl"
            _error(f"{_describe_click_error(exc)} (see '{where} --help')")
            code = exc.exit_code
        except typer.Abort:
            _error("aborted")
            code = 130
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code

    def list_commands(self, ctx: Any) -> list[str]:
        lazy = [name for name in _LAZY_COMMANDS if name not in self.commands]
        return [*super().list_commands(ctx), *lazy]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in _LAZY_COMMANDS:
            self.add_command(_lazy_command(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """typer's, with the lazy commands among the names an unknown one is matched to."""
        suggest, self.suggest_commands = self.suggest_commands, False
        try:
            return super().resolve_command(ctx, args)
        except click_errors.UsageError as exc:
            from difflib import get_close_matches

            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if suggest and matches:
                exc.message = (exc.message.rstrip(".") + ". Did you mean "
                               + ", ".join(f"{m!r}" for m in matches) + "?")
            raise
        finally:
            self.suggest_commands = suggest


def _describe_click_error(exc: Exception) -> str:
    """The parser's message, with the option's value where it refused one."""
    param = getattr(exc, "param", None)
    if isinstance(exc, click_errors.BadParameter) and param is not None and param.opts:
        for name in param.opts:
            for i, arg in reversed(list(enumerate(_ARGS))):  # the last one given counts
                value = None
                if arg == name and i + 1 < len(_ARGS):
                    value = _ARGS[i + 1]
                elif arg.startswith(name + "="):
                    value = arg[len(name) + 1:]
                if value is not None:
                    return f"{name} = {value!r} is not valid: {exc.message}"
    return exc.format_message()


app = typer.Typer(
    cls=_OneLineErrors,
    help="execrl: execute parent orders as child orders, compare execution policies with "
    "paired statistics on common random numbers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: flags shown as flags, no fake <bool> values
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
# Rich assumes 80 columns when output is not a terminal (CI logs, pipes); the table needs ~110.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)

BASELINE_POLICIES = "twap,vwap,pov,ac,immediate"


def _error(message: str) -> None:
    """One ``error:`` line on stderr; the message is the user's text too, never markup."""
    from rich.text import Text

    err_console.print(Text("error: ", style="red") + Text(message), highlight=False,
                      soft_wrap=True)


_warn = warn_user


def _version(value: bool) -> None:
    if value:
        console.print(f"execrl {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the execrl version and exit.")] = False,
) -> None:
    """execrl: execute parent orders as child orders, compare execution policies with paired
    statistics on common random numbers."""
    # Library warnings (scipy precision loss, numpy overflow, matplotlib, SB3) are not the
    # user's business: execrl refuses input that would make its numbers meaningless, and says
    # so in its own words.
    warnings.simplefilter("ignore")


#: Market fields the parent order decides: refused in a --market file rather than overwritten.
_ORDER_DECIDES = {
    "horizon": "the order's horizon (horizon_s, or end_ts - start_ts)",
    "horizon_s": "the order's horizon (horizon_s, or end_ts - start_ts)",
    "s0": "the order's arrival_px",
}


def _load_market(env: str, market_file: Path | None) -> MarketSpec:
    market = preset_market(env)
    if market_file is None:
        return market
    overrides = load_json_object(market_file, "market file")
    for key, decided_by in _ORDER_DECIDES.items():
        if key in overrides:
            raise ConfigError(
                f"market file {str(market_file)!r} field {key!r} = "
                f"{shown_value(overrides[key])} is not allowed: it is set by {decided_by}"
            )
    # fields override the preset's; a file naming another model stands alone
    if overrides.get("model", market.model) != market.model:
        return parse_market(overrides)
    return parse_market({**market.model_dump(), **overrides})


def _run_evaluation(
    env: str,
    market: MarketSpec,
    order: ParentOrder,
    policies: list[str],
    orders: int,
    seed: int,
    stage: Path,
    out: Path,
    compare_to: list[str],
    log_decisions: bool = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Run the backtest and write every output into ``stage`` (a staging folder that becomes
    ``out`` when the caller's ``staged_folder`` block ends)."""
    from execrl.evaluate.backtest import run_policies
    from execrl.evaluate.decisions import DecisionRecorder, write_decisions
    from execrl.evaluate.painter import painter
    from execrl.evaluate.results import build_results, provenance, start_plots, write_outputs

    config = EnvConfig(market=market)
    steps = market.n_steps
    # plots drawn by a child forked before the simulation (execrl.evaluate.painter), ended
    # before the staging folder is dropped; then the Progress thread starts
    with painter(plots) as drawer, Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(
            f"{len(policies)} policies x {orders} orders", total=len(policies) * steps
        )
        runs = run_policies(
            policies, config, order, orders, seed, on_step=lambda: progress.advance(task),
            recorder=DecisionRecorder() if log_decisions else None,
            on_start=lambda: _warn_before_running(order, market, orders),
        )
        episodes = None if drawer is None else start_plots(drawer, stage, runs)
        progress.update(task, description="paired statistics (bootstrap)")
        results = build_results(runs, config, order, orders, seed, env, compare_to)
        results["provenance"] = provenance(_invocation(), policies, stage, out)
        progress.update(task, description="writing report")
        try:
            report = write_outputs(stage, results, runs, plots=plots, painter=drawer,
                                   episodes=episodes)
        except Exception as exc:
            if drawer is None or drawer.failure is not exc:
                raise
            # a plot that could not be drawn: one line, exit 1; the staging folder is dropped
            _error(f"the report's plots could not be drawn ({type(exc).__name__}: {exc}); "
                   f"{str(out)!r} was left as it was")
            raise typer.Exit(1) from None
        if log_decisions:
            write_decisions(stage, runs)
    _print_table(results)
    written = ["results.json", "episodes.parquet", report.name]
    if log_decisions:
        written.append("decisions.parquet (one row per decision)")
    console.print(f"wrote {out}/: {', '.join(written)}" + (" and plots" if plots else ""))
    return results


def _invocation() -> list[str]:
    """The command line as the user typed it (recorded in results.json)."""
    return ["execrl", *_ARGS]


def _check_evaluation(
    market: MarketSpec, order: ParentOrder, policies: list[str], compare_to: list[str],
    orders: int, out: Path, force: bool, log_decisions: bool,
    inputs: list[Path] | None = None, owned: frozenset[str] | None = None,
) -> None:
    """Everything that can be refused or flagged about an evaluation, before any of it runs.
    ``inputs``: the files the run reads (order, market); ``owned``: what the command writes
    into ``out`` (default: an evaluation's files)."""
    from execrl.evaluate.backtest import backtest_bytes, is_folder
    from execrl.evaluate.results import EVALUATION_OUTPUTS

    names = EVALUATION_OUTPUTS if owned is None else owned
    check_output_folder(out, "--out", lambda entry: entry.name in names,
                        "an execrl evaluation", force=force)
    # the swap replaces --out whole: nothing this run reads may live inside it (even --force)
    read = [Path(p) for p in inputs or []]
    read += [Path(param) for _, _, param in (spec.partition(":") for spec in policies)
             if param and is_folder(param)]
    target = out.resolve()
    for path in read:
        where = path.resolve()
        if where == target or target in where.parents or where in target.parents:
            raise ConfigError(
                f"--out {str(out)!r} holds {str(path)!r}, which this run reads, and would "
                f"replace it; write the output to another folder"
            )
    labels = [spec.partition(":")[0] for spec in policies]
    for base in compare_to:
        if base not in labels:
            raise ConfigError(
                f"--compare-to {base!r} is not among --policies ({', '.join(labels)})"
            )
    estimate = backtest_bytes(orders, len(policies), market, log_decisions)
    limit = memory_limit_bytes()
    if estimate > limit:
        raise ConfigError(
            f"--orders {orders:,} x {len(policies)} policies would need about "
            f"{estimate / 2**30:.1f} GiB, above this run's limit of {limit / 2**30:.1f} GiB "
            f"(set {MEMORY_LIMIT_ENV} to change it)"
        )


def _default_baselines(policies: list[str]) -> list[str]:
    labels = [spec.partition(":")[0] for spec in policies]
    return ["twap"] if "twap" in labels else labels[:1]


def _os_error(exc: OSError, out: Path) -> str:
    """A failure of the disk or the system, not of the user's input: still one line."""
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}; nothing in {str(out)!r} was replaced"


@contextmanager
def one_line_failures(out: Path) -> Iterator[None]:
    """Around a command that writes ``out``: a user's mistake (``ExecRLError``) is one
    ``error:`` line and exit 2, the disk's or the system's (``OSError``) one line and exit 1,
    an interrupt exit 130 saying what became of ``out``; never a traceback."""
    try:
        yield
    except ExecRLError as exc:
        _error(str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt as exc:
        raise _interrupted(out, isinstance(exc, InterruptedAfterSwap)) from None
    except OSError as exc:  # the disk, not the user's input: still one line, no traceback
        _error(_os_error(exc, out))
        raise typer.Exit(1) from None


def _interrupted(out: Path, after_swap: bool = False) -> typer.Exit:
    if after_swap:
        where = f"after the new output was complete in {str(out)!r}"
    elif out.exists():
        where = f"the previous output in {str(out)!r} was kept"
    else:
        where = f"nothing was written to {str(out)!r}"
    err_console.print(f"interrupted: {where}", highlight=False, soft_wrap=True, markup=False)
    return typer.Exit(130)


def _warn_if_infeasible(order: ParentOrder, market: MarketSpec) -> None:
    """One line on stderr before the run when the order's own limits cannot complete it."""
    warning = order_feasibility(order, market).warning()
    if warning is not None:
        _warn(warning)


def _warn_before_running(order: ParentOrder, market: MarketSpec, orders: int) -> None:
    """What looks wrong about the evaluation, once nothing is left to refuse (so a refusal
    stays one line): too few orders, an order its limits cannot complete, an order beyond
    the market's liquidity."""
    from execrl.env.factory import market_for_order
    from execrl.evaluate.backtest import MIN_ORDERS_FOR_INFERENCE, order_warnings

    if orders < MIN_ORDERS_FOR_INFERENCE:
        _warn(f"{orders} orders are too few for paired statistics: confidence intervals and "
              f"p-values need at least {MIN_ORDERS_FOR_INFERENCE} and are left out "
              f"(a few thousand give a precise answer)")
    _warn_if_infeasible(order, market)
    for line in order_warnings(market_for_order(market, order), order):
        _warn(line)


def _print_whole(table: Table) -> None:
    """Print ``table`` at its natural width even past the console's: a narrow terminal wraps
    the lines, but no number is cut short and no column dropped."""
    wide = console.options.update_width(10_000)
    width = max(console.width, console.measure(table, options=wide).maximum)
    lines = console.render_lines(table, console.options.update_width(width), new_lines=True)
    console.print(Segments([seg for line in lines for seg in line]), crop=False, soft_wrap=True)


def _print_table(results: dict[str, Any]) -> None:
    m = results["market"]
    table = Table(
        title=f"{results['side']} {m['X']:,} shares, {results['orders']:,} orders on common "
        f"random numbers (env {results['env']}, seed {results['seed']}); IS in bps, + = cost",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("policy", "mean", "std", "p95", "CVaR95", "E+λ·Var", "fill rate", "breaches",
                "cuts", "paired diff vs", "95% CI", "p (t-test)"):
        table.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True)
    cmp = {c["policy"]: c for c in results["comparisons"]}
    for name, p in results["policies"].items():
        s = p["is_bps"]
        c = cmp.get(name)
        row = [name, f"{s['mean']:.2f}", f"{s['std']:.2f}", f"{s['p95']:.2f}",
               f"{s['cvar95']:.2f}", f"{p['objective_bps']:.2f}", f"{p['fill_rate']:.3f}",
               f"{p['breaches']:,}", f"{p['cuts']:,}"]
        if c:
            ci = c["ci95"]
            row += [f"{c['diff_bps_mean']:+.2f} ({c['baseline']})",
                    "n/a (too few orders)" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]",
                    format_pvalue(c["t_pvalue"])]
        else:
            row += ["", "", ""]
        table.add_row(*row)
    _print_whole(table)
    console.print(f"  E+λ·Var: the mean-variance objective Almgren-Chriss minimises "
                  f"(λ = {m['lambda']:g}), in bps; paired diff < 0: cheaper than the baseline")
    console.print("  breaches: child orders beyond the order's limits; cuts: requests the limits "
                  "cut down; unfilled: charged at the end mid")
    for name, t in results.get("theory", {}).items():
        label = f"theory {name}" + (
            " (unconstrained: ignores the order's limits, which cut this schedule)"
            if t.get("unconstrained") else ""
        )
        if "expected_is_bps" in t:
            console.print(f"  {label}: E[IS] = {t['expected_is_bps']:.2f} bps, "
                          f"std = {t['std_is_bps']:.2f} bps")
        elif "expected_gain_bps" in t:
            console.print(f"  {label}: expected gain over the signal-blind optimum = "
                          f"{t['expected_gain_bps']:.2f} bps")


def _split(value: str, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"{what} = {value!r} names nothing")
    return items


EnvOption = Annotated[
    str,
    typer.Option(
        help="Market preset: " + "; ".join(f"'{k}': {v[0]}" for k, v in ENV_PRESETS.items())
    ),
]


@app.command()
def evaluate(
    env: EnvOption = "ac",
    policies: Annotated[
        str,
        typer.Option(help="Comma-separated policies: twap, vwap, pov[:rate], ac[:lambda], "
                     "immediate, signal_aware (needs --env ac-signal); on an order book also "
                     "passive_twap, submit_and_leave; LABEL:CHECKPOINT for a trained agent. "
                     "Default: the market's baselines (" + BASELINE_POLICIES + " on "
                     "Almgren-Chriss).", show_default=False),
    ] = "",
    orders: Annotated[int, typer.Option(min=1, help="Parent orders per policy (K).")] = 2000,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED,
                                      help="Seed of the market paths (shared by all).")] = 7,
    out: Annotated[Path, typer.Option(help="Folder for results.json, episodes.parquet, "
                                      "report.md and plots; replaced whole at the end, and "
                                      "only if it holds nothing but an earlier execrl output."
                                      )] = Path("out"),
    order: Annotated[
        Path | None,
        typer.Option("--order", help="Parent order JSON (seed 001 §9.1 format); default: "
                     "sell 1,000,000 shares at 50 over 5 trading days."),
    ] = None,
    market: Annotated[
        Path | None,
        typer.Option("--market", help="JSON object of market parameters overriding the preset "
                     "(fields of its \"model\", almgren_chriss by default, e.g. "
                     "{\"sigma\": 1.2, \"n_steps\": 20})."),
    ] = None,
    compare_to: Annotated[
        str | None, typer.Option(help="Comma-separated policies (among --policies) every other "
                                 "policy is paired with; default: twap if it runs, else the "
                                 "first policy.")
    ] = None,
    log_decisions: Annotated[
        bool, typer.Option("--log-decisions", help="Also write decisions.parquet: one row per "
                           "(policy, order, decision step) with features, shares, rewards; "
                           "the input of `execrl train --algo bc|cql --data`.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out even if it holds files execrl did "
                           "not write there.")
    ] = False,
    no_plots: Annotated[
        bool, typer.Option("--no-plots", help="Write the report without its plots (faster).")
    ] = False,
) -> None:
    """Run each policy on the same K orders and market paths; write results and a report."""
    global _FAST_EXIT
    _FAST_EXIT = True
    _arrow_system_allocator()
    with one_line_failures(out):
        market_config = _load_market(env, market)
        parent = market_config.default_order() if order is None else ParentOrder.from_file(order)
        policy_specs = (_split(policies, "--policies") if policies
                        else list(market_config.baselines))
        baselines = _default_baselines(policy_specs) if compare_to is None else _split(
            compare_to, "--compare-to")
        _check_evaluation(market_config, parent, policy_specs, baselines, orders, out, force,
                          log_decisions, inputs=[p for p in (order, market) if p is not None])
        with staged_folder(out) as stage:
            # a --market file naming another model than the preset's is that model's market
            label = env if market_config.model == preset_market(env).model else (
                market_config.model)
            _run_evaluation(label, market_config, parent, policy_specs, orders, seed, stage, out,
                            baselines, log_decisions=log_decisions, plots=not no_plots)


def _arrow_system_allocator() -> None:
    """Have pyarrow (pandas' strings, the parquet writer) allocate with the C library's
    malloc rather than its default, mimalloc, where pyarrow is not loaded yet (a user's own
    ``ARROW_DEFAULT_MEMORY_POOL`` stands): mimalloc's first large allocations cost 0.0-0.4
    s of system time in ``execrl evaluate --orders 20000`` on this project's VM (its arenas
    get huge pages), the system allocator 0.01-0.02 (writing episodes.parquet, six runs
    each; 2026-12-02, bench/README.md). The files written are the same."""
    import os

    if "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def _load_hyperparams(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    return load_config_object(path, "config file")


# Commands defined in their own modules, imported only when one of them runs (or the command
# list is shown): `execrl evaluate` does not pay for SQLAlchemy, the service or the executor's
# command line. Name -> (module, attribute): a command function or a Typer group.
_LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    # training and the demo (execrl.train_cli): their help reads the agents' defaults
    "train": ("execrl.train_cli", "train"),
    "demo": ("execrl.train_cli", "demo"),
    "data": ("execrl.data.cli", "data_app"),  # import / validate recorded market data
    # the order-book market fitted to a LOBSTER day
    "calibrate": ("execrl.calibrate.command", "calibrate"),
    # the executor (execrl.executor_cli): execute, shadow, kill, tca, audit
    "execute": ("execrl.executor_cli", "execute"),
    "shadow": ("execrl.executor_cli", "shadow"),
    "kill": ("execrl.executor_cli", "kill"),
    "tca": ("execrl.executor_cli", "tca"),
    "audit": ("execrl.executor_cli", "audit_app"),
    # the service (execrl.service.serve_cli): serve, feed over Redis Streams
    "serve": ("execrl.service.serve_cli", "serve"),
    "feed": ("execrl.service.serve_cli", "feed"),
    # the policy registry (execrl.service.registry_cli): register, promote, approve, flag, ...
    "registry": ("execrl.service.registry_cli", "registry_app"),
    # the HTTP API and web console (execrl.service.console_cli; fastapi / uvicorn load on use)
    "console": ("execrl.service.console_cli", "console"),
}


def _lazy_command(name: str) -> Any:
    """The click command of ``_LAZY_COMMANDS[name]``, built as ``app.command`` /
    ``app.add_typer`` would have built it."""
    import importlib

    from typer.main import get_command_from_info, get_group_from_info
    from typer.models import CommandInfo, TyperInfo

    module, attr = _LAZY_COMMANDS[name]
    target = getattr(importlib.import_module(module), attr)
    if isinstance(target, typer.Typer):
        return get_group_from_info(TyperInfo(target, name=name),
                                   pretty_exceptions_short=app.pretty_exceptions_short,
                                   rich_markup_mode=app.rich_markup_mode,
                                   suggest_commands=app.suggest_commands)
    return get_command_from_info(CommandInfo(name=name, callback=target),
                                 pretty_exceptions_short=app.pretty_exceptions_short,
                                 rich_markup_mode=app.rich_markup_mode)


#: set by a command whose process may end without the interpreter's teardown (evaluate):
#: freeing numba's and LLVM's objects one by one took ~0.6 of evaluate's ~4.5 CPU-s
#: (2026-12-01, bench/README.md); the atexit handlers still run
_FAST_EXIT = False


def main() -> None:
    from execrl.domain.outputs import install_interrupt_handlers

    install_interrupt_handlers()  # SIGTERM like Ctrl-C; one lost in a callback comes again
    try:
        app()
    except KeyboardInterrupt:  # one that reached past a command's own handler
        _exit_interrupted()
    except SystemExit as exc:
        if exc.code == 130:
            _exit_interrupted()
        if _FAST_EXIT:
            _exit_now(exc.code)
        raise


def _exit_now(code: object) -> None:
    """End the process with ``code`` as ``SystemExit(code)`` would, after the atexit
    handlers and with stdout / stderr flushed, without the interpreter's teardown."""
    import atexit
    import os

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _exit_interrupted() -> None:
    """Exit 130 at once after Ctrl-C: the command has cleaned up and said what it kept. The
    interpreter's own shutdown is skipped: a signal landing there killed the process by
    SIGINT now and then (exit -2) instead of the 130 the command chose."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__":
    main()
