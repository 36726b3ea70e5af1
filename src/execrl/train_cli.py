"""``execrl train`` and ``execrl demo``: commands of ``execrl.cli``'s lazy table, imported only
when one of them runs or the command list is shown (their help texts read the agents'
defaults, ``execrl.agents.defaults``, whose import (the agents package, gym) ``execrl
evaluate`` need not pay)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from execrl.cli import (
    BASELINE_POLICIES,
    EnvOption,
    _check_evaluation,
    _load_hyperparams,
    _load_market,
    _run_evaluation,
    _warn_if_infeasible,
    console,
    err_console,
    one_line_failures,
)
from execrl.domain import ConfigError, ParentOrder
from execrl.domain.limits import MAX_SEED
from execrl.domain.outputs import staged_folder
from execrl.env.factory import DEFAULT_ORDER, EnvConfig
from execrl.env.rewards import REWARDS
from execrl.env.spaces import ACTION_SETS, OBSERVATION_SETS
from execrl.presets import preset_market


def _train_defaults_help() -> str:
    from execrl.agents.defaults import ALGO_DEFAULTS

    return "; ".join(f"{algo}: {d.steps:,}" for algo, d in ALGO_DEFAULTS.items())


def train(
    algo: Annotated[str, typer.Option(help="qtable, dqn, qrdqn, ppo, maskable-ppo, bc, cql.")],
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write: a new or empty folder, "
                                      "or an execrl checkpoint (replaced whole).")],
    env: EnvOption = "ac",
    steps: Annotated[int | None, typer.Option(
        min=1, help="Environment steps (transitions); for offline algorithms, gradient steps. "
        "Default: the budget measured to learn, per algorithm (" + _train_defaults_help()
        + ").")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the market paths and the learner.")] = 0,
    observations: Annotated[str, typer.Option(
        help="Observation set: " + ", ".join(OBSERVATION_SETS) + ".")] = "seed004",
    actions: Annotated[str | None, typer.Option(
        help="Action set: " + ", ".join(ACTION_SETS) + ". Default: continuous for ppo, "
        "seed004 for the others.")] = None,
    reward: Annotated[str | None, typer.Option(
        help="Reward: " + ", ".join(REWARDS) + ". Default: expected_cost where the market "
        "knows its expected move (Almgren-Chriss), else risk_adjusted.")] = None,
    normalise: Annotated[str | None, typer.Option(
        help="Observation scaling: fixed (the feature table's constants) or online (then an "
        "exponentially decaying z-score per spread bucket, frozen into the policy at the end "
        "of training; dqn, qrdqn, ppo, maskable-ppo). Default: online on the order book with the "
        "seed001 / seed003 observation sets, fixed elsewhere.")] = None,
    n_envs: Annotated[int | None, typer.Option(min=1, help="Environments stepped together "
                                               "(online algorithms; default per algorithm: "
                                               "1024 for qtable and the PPOs, 256 for the "
                                               "DQNs).")] = None,
    order: Annotated[Path | None, typer.Option("--order", help="Parent order JSON.")] = None,
    market: Annotated[Path | None, typer.Option("--market", help="Market overrides JSON.")]
    = None,
    config: Annotated[Path | None, typer.Option("--config", help="Hyper-parameters (JSON, or "
                                                "TOML such as configs/rl_execution.toml), or a "
                                                "named configuration: seed003 (qtable), seed001 "
                                                "(dqn, qrdqn).")]
    = None,
    data: Annotated[Path | None, typer.Option("--data", help="Offline algorithms: decision log "
                                              "parquet from `execrl evaluate --log-decisions`.")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out even if it holds files "
                                        "that are not an execrl checkpoint (they are deleted).")]
    = False,
) -> None:
    """Train an execution agent; write a checkpoint folder with its numpy policy and hash."""
    with one_line_failures(out):
        from execrl.agents.checkpoint import check_checkpoint_out
        from execrl.agents.defaults import named_config
        from execrl.agents.train import ALGOS, OFFLINE_ALGOS, TrainRequest, run_training

        check_checkpoint_out(out, force=force)
        if algo not in ALGOS:
            raise ConfigError(f"--algo {algo!r} is unknown; choose from {', '.join(ALGOS)}")
        if n_envs is not None and algo in OFFLINE_ALGOS:
            raise ConfigError(
                f"--n-envs does not apply to {algo}: it learns from --data, not from "
                "environments (its learning curve runs eval_orders orders)"
            )
        parent = None if order is None else ParentOrder.from_file(order)
        named = None if config is None else named_config(algo, config)
        request = TrainRequest.with_defaults(
            algo, env_name=env, market=_load_market(env, market), order=parent,
            observations=observations, actions=actions, reward=reward, steps=steps,
            n_envs=n_envs, seed=seed, data=data, normalise=normalise,
            hyperparams=named if named is not None else _load_hyperparams(config),
        )
        steps = request.steps
        _warn_if_infeasible(request.order, request.env_config.market)
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
    console.print(f"trained {algo} for {steps:,} steps in {result['wall_time_s']:.1f}s; "
                  f"policy hash {result['policy_hash'][:16]}…; wrote {out}")
    for line in evaluate_hint(request, out, market, order):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def evaluate_hint(request: Any, out: Path, market_file: Path | None,
                  order_file: Path | None) -> list[str]:
    """The ``execrl evaluate`` command that runs a trained checkpoint where it was trained
    (the same --env, --market file and --order, so no "trained on another market" warning),
    beside the baselines that market supports, and what the checkpoint itself carries."""
    import shlex

    knowledge = request.env_config.market.knowledge()
    baselines = ["twap"] + (["ac"] if knowledge.cost_model is not None else [])
    if knowledge.signal is not None:
        baselines.append("signal_aware")
    args = ["execrl", "evaluate", "--env", request.env_name]
    if market_file is not None:
        args += ["--market", str(market_file)]
    if order_file is not None:
        args += ["--order", str(order_file)]
    args += ["--policies", ",".join([*baselines, f"{request.algo}:{out}"]),
             "--out", str(out.with_name(out.name + "-eval"))]
    config = request.env_config
    observations = (config.observations if isinstance(config.observations, str)
                    else ",".join(config.observations))
    actions = config.actions if isinstance(config.actions, str) else config.actions.name
    return [
        f"evaluate it where it was trained: {shlex.join(args)}",
        f"  (the checkpoint carries its observations ({observations}) and actions ({actions}); "
        f"evaluation measures the realised IS, whatever the training reward ({config.reward}))",
    ]


def demo(
    out: Annotated[Path, typer.Option(help="Folder for the report and the agent's checkpoint; "
                                      "replaced whole at the end, and only if it holds nothing "
                                      "but an earlier execrl output.")] = Path("demo-report"),
    orders: Annotated[int, typer.Option(min=2, help="Parent orders per policy.")] = 4000,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED,
                                      help="Seed of the market paths.")] = 7,
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out even if it holds files execrl did "
                           "not write there.")
    ] = False,
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
    with one_line_failures(out):
        market = preset_market("ac")
        policies = [*BASELINE_POLICIES.split(","), "qtable:AGENT"]
        _check_evaluation(market, DEFAULT_ORDER, policies, ["twap", "ac"], orders, out, force,
                          log_decisions=False, owned=_demo_outputs())
        request = TrainRequest(
            algo="qtable", env_name="ac",
            env_config=EnvConfig(market=market, observations="seed004", actions="seed004",
                                 reward="expected_cost"),
            order=DEFAULT_ORDER, steps=DEMO_AGENT_STEPS, seed=seed, n_envs=1024,
            hyperparams=DEMO_AGENT_HYPERPARAMS,
        )
        with staged_folder(out) as stage:
            agent_dir = stage / DEMO_AGENT_DIR
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
                f"(checkpoint {out / DEMO_AGENT_DIR}, policy hash "
                f"{trained['policy_hash'][:12]}…)"
            )
            _run_evaluation("ac", market, DEFAULT_ORDER,
                            [*BASELINE_POLICIES.split(","), f"qtable:{agent_dir}"],
                            orders, seed, stage, out, ["twap", "ac"])
    console.print(f"done in {time.perf_counter() - started:.1f}s; open {out / 'report.md'}")


#: the demo's agent checkpoint, inside its output folder, and all the demo writes there
DEMO_AGENT_DIR = "agent-qtable"


def _demo_outputs() -> frozenset[str]:
    from execrl.evaluate.results import EVALUATION_OUTPUTS

    return EVALUATION_OUTPUTS | {DEMO_AGENT_DIR}


