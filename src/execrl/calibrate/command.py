"""The ``execrl calibrate`` command (registered in ``execrl.cli`` with one line)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from execrl.domain.limits import MAX_SEED


def calibrate(
    lobster: Annotated[Path, typer.Argument(
        help="LOBSTER zip (message + order-book pair), or the message CSV with its order-book "
        "file beside it.")],
    out: Annotated[Path, typer.Option(help="Folder for market.json, market-hawkes.json, "
                                      "calibration.json, report.md and plots; replaced whole "
                                      "at the end, and only if it holds nothing but an "
                                      "earlier calibration.")] = Path("calibration"),
    ticks_per_level: Annotated[int, typer.Option(
        min=1, max=100, help="Exchange ticks (cents) aggregated into one simulated price level "
        "(small-tick stocks: GOOG's spread is 25-30 cents).")] = 5,
    levels: Annotated[int, typer.Option(min=10, max=64, help="Levels a side of the simulated "
                                        "window (rows of the tables).")] = 10,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the simulated "
                                      "half.")] = 7,
    simulate: Annotated[bool, typer.Option(
        "--simulate/--no-simulate", help="Run the calibrated simulator for the report's "
        "simulated half (theta fit, a simulated day, the round trip, metaorder impact; about "
        "a minute and a half on GOOG's day).")] = True,
    force: Annotated[bool, typer.Option("--force", help="Replace --out even if it holds files "
                                        "execrl did not write there.")] = False,
) -> None:
    """Calibrate the order-book market (model "lob") to a LOBSTER day: the queue-reactive
    tables, sizes and Hawkes kernel, and a report of real against simulated statistics."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from execrl import cli
    from execrl.calibrate.run import CALIBRATION_OUTPUTS
    from execrl.calibrate.run import calibrate as run_calibration
    from execrl.domain import ExecRLError
    from execrl.domain.outputs import InterruptedAfterSwap, check_output_folder, staged_folder

    try:
        check_output_folder(out, "--out", lambda entry: entry.name in CALIBRATION_OUTPUTS,
                            "an execrl calibration", force=force)
        target = out.resolve()
        where = lobster.resolve()
        if where == target or target in where.parents:
            raise cli.ConfigError(
                f"--out {str(out)!r} holds {str(lobster)!r}, which this run reads, and would "
                "replace it; write the output to another folder")
        with staged_folder(out) as stage, Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=cli.err_console, transient=True,
        ) as progress:
            task = progress.add_task("calibrating", total=None)
            result = run_calibration(
                lobster, stage, cli._invocation(), ticks_per_level=ticks_per_level,
                n_levels=levels, seed=seed, simulate=simulate,
                on_step=lambda name: progress.update(task, description=name))
    except ExecRLError as exc:
        cli._error(str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt as exc:
        raise cli._interrupted(out, isinstance(exc, InterruptedAfterSwap)) from None
    except OSError as exc:  # the disk, not the user's input: still one line, no traceback
        cli._error(cli._os_error(exc, out))
        raise typer.Exit(1) from None
    fit = result["fit"]
    cli.console.print(
        f"calibrated {result['source']['symbol']} {result['source']['date']} on "
        f"{ticks_per_level}-cent levels: aes {fit['aes']} shares, {fit['n_buckets']} buckets, "
        f"theta {result['market']['theta']:g}, Hawkes branching ratio "
        f"{result['hawkes']['branching_ratio']:.2f}", highlight=False)
    cli.console.print(f"wrote {out}/: market.json, market-hawkes.json, calibration.json, "
                      "report.md and plots", highlight=False)
    cli.console.print(f"use it: execrl evaluate --market {out / 'market.json'}",
                      highlight=False)
