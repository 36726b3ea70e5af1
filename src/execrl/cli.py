"""The ``execrl`` command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from execrl.domain import ConfigError, ExecRLError, ParentOrder
from execrl.env.factory import DEFAULT_ORDER, EnvConfig
from execrl.presets import ENV_PRESETS, preset_market
from execrl.sim.almgren_chriss import ACMarketConfig

app = typer.Typer(
    help="execrl: execute parent orders as child orders, compare execution policies with "
    "paired statistics on common random numbers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Rich assumes 80 columns when output is not a terminal (CI logs, pipes); the table needs ~110.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)

BASELINE_POLICIES = "twap,vwap,pov,ac,immediate"


def _load_market(env: str, market_file: Path | None) -> ACMarketConfig:
    market = preset_market(env)
    if market_file is None:
        return market
    try:
        overrides = json.loads(market_file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read market file {str(market_file)!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"market file {str(market_file)!r} is not valid JSON: {exc}") from None
    if not isinstance(overrides, dict):
        raise ConfigError(f"market file {str(market_file)!r} must hold a JSON object")
    return ACMarketConfig.from_dict({**market.model_dump(), **overrides})


def _run_evaluation(
    env: str,
    market: ACMarketConfig,
    order: ParentOrder,
    policies: list[str],
    orders: int,
    seed: int,
    out: Path,
    compare_to: list[str],
    log_decisions: bool = False,
) -> dict[str, Any]:
    from execrl.evaluate.backtest import run_policies
    from execrl.evaluate.decisions import DecisionRecorder, write_decisions
    from execrl.evaluate.results import build_results, write_outputs

    config = EnvConfig(market=market)
    steps = market.n_steps
    with Progress(
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
        )
        progress.update(task, description="paired statistics (bootstrap)")
        results = build_results(runs, config, order, orders, seed, env, compare_to)
        progress.update(task, description="writing report")
        report = write_outputs(out, results, runs)
        decisions = write_decisions(out, runs) if log_decisions else None
    _print_table(results)
    console.print(f"wrote {out / 'results.json'}, {out / 'episodes.parquet'} and {report}")
    if decisions is not None:
        console.print(f"wrote {decisions} (one row per decision)")
    return results


def _print_table(results: dict[str, Any]) -> None:
    m = results["market"]
    table = Table(
        title=f"{results['side']} {m['X']:,} shares, {results['orders']:,} orders on common "
        f"random numbers (env {results['env']}, seed {results['seed']}); IS in bps, + = cost",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("policy", "mean", "std", "p95", "CVaR95", "E+λ·Var",
                "paired diff vs", "95% CI", "p (t-test)"):
        table.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True)
    cmp = {c["policy"]: c for c in results["comparisons"]}
    for name, p in results["policies"].items():
        s = p["is_bps"]
        c = cmp.get(name)
        row = [name, f"{s['mean']:.2f}", f"{s['std']:.2f}", f"{s['p95']:.2f}",
               f"{s['cvar95']:.2f}", f"{p['objective_bps']:.2f}"]
        if c:
            row += [f"{c['diff_bps_mean']:+.2f} ({c['baseline']})",
                    f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]", f"{c['t_pvalue']:.1e}"]
        else:
            row += ["", "", ""]
        table.add_row(*row)
    console.print(table)
    console.print(f"  E+λ·Var: the mean-variance objective Almgren-Chriss minimises "
                  f"(λ = {m['lambda']:g}), in bps; paired diff < 0: cheaper than the baseline")
    for name, t in results.get("theory", {}).items():
        if "expected_is_bps" in t:
            console.print(f"  theory {name}: E[IS] = {t['expected_is_bps']:.2f} bps, "
                          f"std = {t['std_is_bps']:.2f} bps")
        elif "expected_gain_bps" in t:
            console.print(f"  theory {name}: expected gain over the signal-blind optimum = "
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
                     "immediate, signal_aware (needs --env ac-signal)."),
    ] = BASELINE_POLICIES,
    orders: Annotated[int, typer.Option(min=1, help="Parent orders per policy (K).")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the market paths (shared by all).")] = 7,
    out: Annotated[Path, typer.Option(help="Folder for results.json, episodes.parquet, "
                                      "report.md and plots.")] = Path("out"),
    order: Annotated[
        Path | None,
        typer.Option("--order", help="Parent order JSON (seed 001 §9.1 format); default: "
                     "sell 1,000,000 shares at 50 over 5 trading days."),
    ] = None,
    market: Annotated[
        Path | None,
        typer.Option("--market", help="JSON object of market parameters overriding the preset "
                     "(fields of ACMarketConfig, e.g. {\"sigma\": 1.2, \"n_steps\": 20})."),
    ] = None,
    compare_to: Annotated[
        str, typer.Option(help="Comma-separated baselines every other policy is paired with.")
    ] = "twap",
    log_decisions: Annotated[
        bool, typer.Option("--log-decisions", help="Also write decisions.parquet: one row per "
                           "(policy, order, decision step) with features, shares, rewards; "
                           "the input of `execrl train --algo bc|cql --data`.")
    ] = False,
) -> None:
    """Run each policy on the same K orders and market paths; write results and a report."""
    try:
        parent = DEFAULT_ORDER if order is None else ParentOrder.from_file(order)
        market_config = _load_market(env, market)
        _run_evaluation(env, market_config, parent, _split(policies, "--policies"), orders, seed,
                        out, _split(compare_to, "--compare-to"), log_decisions=log_decisions)
    except ExecRLError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _load_hyperparams(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start})"
        ) from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold an object / table")
    return data


@app.command()
def train(
    algo: Annotated[str, typer.Option(help="qtable, dqn, qrdqn, ppo, maskable-ppo, bc, cql.")],
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write: a new or empty folder, "
                                      "or an execrl checkpoint (replaced whole).")],
    env: EnvOption = "ac",
    steps: Annotated[int, typer.Option(min=1, help="Environment steps (transitions); for "
                                       "offline algorithms, gradient steps.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Seed of the market paths and the learner.")] = 0,
    observations: Annotated[str, typer.Option(help="Observation set: seed004, signal, full.")]
    = "seed004",
    actions: Annotated[str, typer.Option(help="Action set: seed004, seed003, continuous.")]
    = "seed004",
    reward: Annotated[str, typer.Option(help="Reward: is_bps, arrival_vwap, risk_adjusted.")]
    = "risk_adjusted",
    n_envs: Annotated[int | None, typer.Option(min=1, help="Environments stepped together "
                                               "(online algorithms; default 256).")] = None,
    order: Annotated[Path | None, typer.Option("--order", help="Parent order JSON.")] = None,
    market: Annotated[Path | None, typer.Option("--market", help="Market overrides JSON.")]
    = None,
    config: Annotated[Path | None, typer.Option("--config", help="Hyper-parameters (JSON, or "
                                                "TOML such as configs/rl_execution.toml).")]
    = None,
    data: Annotated[Path | None, typer.Option("--data", help="Offline algorithms: decision log "
                                              "parquet from `execrl evaluate --log-decisions`.")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out even if it holds files "
                                        "that are not an execrl checkpoint (they are deleted).")]
    = False,
) -> None:
    """Train an execution agent; write a checkpoint folder with its numpy policy and hash."""
    try:
        from execrl.agents.checkpoint import check_checkpoint_out
        from execrl.agents.train import OFFLINE_ALGOS, TrainRequest, run_training

        check_checkpoint_out(out, force=force)
        if n_envs is not None and algo in OFFLINE_ALGOS:
            raise ConfigError(
                f"--n-envs does not apply to {algo}: it learns from --data, not from "
                "environments (its learning curve runs eval_orders orders)"
            )
        parent = DEFAULT_ORDER if order is None else ParentOrder.from_file(order)
        request = TrainRequest(
            algo=algo, env_name=env,
            env_config=EnvConfig(market=_load_market(env, market), observations=observations,
                                 actions=actions, reward=reward),
            order=parent, steps=steps, seed=seed, n_envs=256 if n_envs is None else n_envs,
            hyperparams=_load_hyperparams(config), data=data,
        )
        with Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} steps"), TimeElapsedColumn(),
            console=err_console, transient=True,
        ) as progress:
            task = progress.add_task(f"training {algo}", total=steps)
            result = run_training(
                request, out, on_progress=lambda done: progress.update(task, completed=done),
                force=force,
            )
    except ExecRLError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"trained {algo} for {steps:,} steps in {result['wall_time_s']:.1f}s; "
                  f"policy hash {result['policy_hash'][:16]}…; wrote {out}")
    console.print(f"evaluate it: execrl evaluate --env {env} --policies twap,ac,{algo}:{out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the report.")] = Path("demo-report"),
    orders: Annotated[int, typer.Option(min=2, help="Parent orders per policy.")] = 4000,
    seed: Annotated[int, typer.Option(help="Seed of the market paths.")] = 7,
) -> None:
    """The main job: train a quick agent, then run it beside the baselines on the embedded
    Almgren-Chriss market; print a table and write a report."""
    from execrl.agents.train import TrainRequest, run_training
    from execrl.presets import DEMO_AGENT_HYPERPARAMS, DEMO_AGENT_STEPS

    started = time.perf_counter()
    console.print(
        "[bold]execrl demo[/bold]: sell 1,000,000 shares at 50 over 5 trading days in the "
        "Almgren-Chriss (2000) market (risk aversion λ = 1e-6); every policy trades the same "
        "market paths."
    )
    try:
        market = preset_market("ac")
        request = TrainRequest(
            algo="qtable", env_name="ac",
            env_config=EnvConfig(market=market, observations="seed004", actions="seed004",
                                 reward="expected_cost"),
            order=DEFAULT_ORDER, steps=DEMO_AGENT_STEPS, seed=seed, n_envs=1024,
            hyperparams=DEMO_AGENT_HYPERPARAMS,
        )
        agent_dir = out / "agent-qtable"
        with Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} steps"), TimeElapsedColumn(),
            console=err_console, transient=True,
        ) as progress:
            task = progress.add_task("training tabular Q (seed 003)", total=DEMO_AGENT_STEPS)
            trained = run_training(
                request, agent_dir, on_progress=lambda n: progress.update(task, completed=n)
            )
        console.print(
            f"trained tabular Q-learning (reward: seed 001's risk-adjusted IS, price "
            f"innovation removed): "
            f"{DEMO_AGENT_STEPS:,} transitions in {trained['wall_time_s']:.1f}s "
            f"(checkpoint {agent_dir}, policy hash {trained['policy_hash'][:12]}…)"
        )
        _run_evaluation("ac", market, DEFAULT_ORDER,
                        [*BASELINE_POLICIES.split(","), f"qtable:{agent_dir}"],
                        orders, seed, out, ["twap", "ac"])
    except ExecRLError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"done in {time.perf_counter() - started:.1f}s; open {out / 'report.md'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
