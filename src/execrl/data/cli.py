"""``execrl data``: import recorded market data into an event store once, and validate it.

Registered on the main command line by one line in ``execrl.cli`` (``app.add_typer``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from execrl.data.store import STORE_FILES, EventStore, is_store, open_store, summarise, write_store
from execrl.domain import ConfigError, DataError, ExecRLError

data_app = typer.Typer(
    help="Recorded market data: import LOBSTER or your own trades / L2 files into an event "
    "store (memory-mapped by later runs), validate and summarise it.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

SourceArg = Annotated[
    Path | None,
    typer.Argument(help="A LOBSTER zip (or its message CSV), or an event store folder "
                   "(validate). Leave out to read --trades / --book."),
]
TradesOpt = Annotated[Path | None, typer.Option(
    "--trades", help="Your trades file (CSV or Parquet: timestamp, price, size, aggressor).")]
BookOpt = Annotated[Path | None, typer.Option(
    "--book", help="Your L2 file (CSV or Parquet): snapshots (timestamp, side, level, price, "
    "size) or updates (timestamp, side, price, size).")]


def load_source(source: Path | None, trades: Path | None, book: Path | None,
                symbol: str | None = None, levels: int | None = None,
                tick: float | None = None) -> EventStore:
    """The events of a LOBSTER file, a store, or a user's trades / L2 files (in memory)."""
    from execrl.data.generic import from_generic
    from execrl.data.lobster import read_lobster
    from execrl.data.store import from_lobster

    if source is not None and (trades is not None or book is not None):
        raise ConfigError("give a LOBSTER file or store, or --trades / --book, not both")
    if source is None:
        if trades is None and book is None:
            raise ConfigError("nothing to read: give a LOBSTER file, a store, or --trades / "
                              "--book")
        name = symbol or (trades or book).stem  # type: ignore[union-attr]
        return from_generic(trades, book, name, levels=levels or 10, tick=tick)
    if is_store(source):
        return open_store(source)
    if source.is_dir():
        raise DataError(f"{source}: a folder that is not an event store (no store.json)")
    return from_lobster(read_lobster(source, levels=levels))


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    from execrl.cli import _error

    _error(str(exc))
    return typer.Exit(code)


@data_app.command("import")
def import_(
    source: SourceArg = None,
    out: Annotated[Path, typer.Option(help="Event store folder to write (replaced whole at "
                                      "the end, and only if it holds an earlier store).")]
    = Path("store"),
    trades: TradesOpt = None,
    book: BookOpt = None,
    symbol: Annotated[str | None, typer.Option(help="Symbol of --trades / --book data.")] = None,
    levels: Annotated[int | None, typer.Option(min=1, max=50, help="Book levels a side to keep "
                                               "(LOBSTER: all in the file; L2: 10).")] = None,
    tick: Annotated[float | None, typer.Option(min=0.0, help="Tick size in currency (default: "
                                               "the grid the prices lie on).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out even if it holds files "
                                        "that are not an event store's.")] = False,
) -> None:
    """Convert recorded data once into an event store that replays memory-map."""
    from execrl.cli import _interrupted, _os_error, console
    from execrl.domain.outputs import InterruptedAfterSwap, check_output_folder, staged_folder

    try:
        check_output_folder(out, "--out", lambda e: e.name in STORE_FILES,
                            "an execrl event store", force=force)
        if source is not None:
            resolved = source.resolve()
            target = out.resolve()
            if resolved == target or target in resolved.parents:
                raise ConfigError(f"--out {str(out)!r} holds {str(source)!r}, which this run "
                                  "reads; write the store to another folder")
        store = load_source(source, trades, book, symbol, levels, tick)
        with staged_folder(out) as stage:
            write_store(store, stage)
    except ExecRLError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt as exc:
        raise _interrupted(out, isinstance(exc, InterruptedAfterSwap)) from None
    except OSError as exc:
        raise _fail(ConfigError(_os_error(exc, out)), 1) from None
    m = store.meta
    console.print(f"wrote {out}/: {m.n_events:,} events of {m.symbol} ({m.levels} levels, "
                  f"{'order ids: exact queues' if m.has_order_ids else 'no order ids'}); "
                  f"check it with: execrl data validate {out}", highlight=False)


@data_app.command()
def validate(
    source: SourceArg = None,
    trades: TradesOpt = None,
    book: BookOpt = None,
    levels: Annotated[int | None, typer.Option(min=1, max=50, help="Book levels to read.")]
    = None,
    gap_s: Annotated[float, typer.Option(min=0.0, help="Report gaps between events longer "
                                         "than this (seconds).")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Check a data set (every bad row is refused by name) and print its summary: span, rows,
    price range, spread and depth statistics, trades by side, gaps and halts."""
    from execrl.cli import console

    try:
        store = load_source(source, trades, book, levels=levels)
        summary = summarise(store, gap_s=gap_s)
    except ExecRLError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(DataError(f"{exc.filename}: {exc.strerror}"), 1) from None
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    for line in summary_lines(summary):
        console.print(line, highlight=False, markup=False)


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The summary as a few readable lines."""
    span = s["span_s"]
    tr = s["trades"]
    lines = [
        f"{s['symbol']} {' '.join(d for d in s['days'] if d)}: {s['events']:,} events from "
        f"{s['source']}",
        f"  span: {_clock(span['first'])} to {_clock(span['last'])} ({span['length']:,.1f} s); "
        f"{s['levels']} book levels; tick {s['tick']:g}; "
        f"{'order ids (exact queue positions)' if s['order_ids'] else 'no order ids'}",
        "  events: " + ", ".join(f"{k} {v:,}" for k, v in s["events_by_kind"].items()),
        f"  trades: {tr['count']:,} ({tr['shares']:,} shares): buyer-initiated "
        f"{tr['buyer_initiated']['count']:,} ({tr['buyer_initiated']['shares']:,} sh), "
        f"seller-initiated {tr['seller_initiated']['count']:,} "
        f"({tr['seller_initiated']['shares']:,} sh), hidden {tr['hidden']:,}, cross "
        f"{tr['cross']:,}; price {_px(tr['price_min'])} to {_px(tr['price_max'])}",
    ]
    if "spread" in s:
        sp, dp = s["spread"], s["depth"]
        lines.append(
            f"  spread (time-weighted): mean {sp['mean_ticks']:.2f} ticks ({sp['mean_bps']:.2f} "
            f"bps), median {sp['median_ticks']:.0f}, p95 {sp['p95_ticks']:.0f} ticks; "
            f"mid {_px(s['mid']['min'])} to {_px(s['mid']['max'])}"
        )
        lines.append("  depth (time-weighted mean shares): "
                     + ", ".join(f"{k.removeprefix('mean_')} {v:,.0f}" for k, v in dp.items()))
    g = s["gaps"]
    lines.append(f"  gaps over {g['threshold_s']:g} s: {g['count']}; longest "
                 f"{g['longest_s']:.1f} s at {_clock(g['longest_at'])}")
    halts = s["halts"]
    lines.append("  halts: " + ("none" if not halts else ", ".join(
        f"{_clock(h['start'])} to {_clock(h['end']) if h['end'] is not None else 'the end'}"
        for h in halts)))
    return lines


def _clock(t: float | None) -> str:
    if t is None:
        return "-"
    if 0 <= t < 2 * 86_400:  # seconds after midnight
        h, rem = divmod(t, 3600)
        mnt, sec = divmod(rem, 60)
        return f"{int(h):02d}:{int(mnt):02d}:{sec:06.3f}"
    return f"{t:,.3f}"


def _px(x: float | None) -> str:
    return "-" if x is None else f"{x:,.4f}"
