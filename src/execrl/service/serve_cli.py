"""``execrl serve`` and ``execrl feed``: the service over Redis Streams on the command line.

Registered on the main command line by ``execrl.cli``. ``feed`` replays a simulated (or, with
``--market``, a recorded) market onto ``STREAM_MARKET``; ``serve`` runs the parent orders of
``STREAM_ORDERS`` through the executor in lockstep with it (``execrl.service.serve``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from execrl.domain import ConfigError, ExecRLError, ParentOrder
from execrl.domain.limits import MAX_SEED
from execrl.executor_cli import ConfigOpt, MarketOpt, PolicyOpt, load_executor_config

RedisOpt = Annotated[str, typer.Option(
    "--redis", help="Redis URL (run the server with appendonly yes: an order is acknowledged "
    "once its record is written).")]
EnvOpt = Annotated[str, typer.Option(help="Market preset (see execrl evaluate --help).")]


def _fail(exc: Exception) -> typer.Exit:
    from execrl.cli import _error

    _error(str(exc))
    return typer.Exit(2)


def serve(
    redis_url: RedisOpt = "redis://127.0.0.1:6379/0",
    config: ConfigOpt = None,
    policy: PolicyOpt = None,
    env: EnvOpt = "lob",
    market: MarketOpt = None,
    group: Annotated[str, typer.Option(help="Consumer group on STREAM_ORDERS.")] = "execrl-serve",
    consumer: Annotated[str, typer.Option(
        help="This service's name in the group; a restarted service keeps it to resume its "
        "pending orders.")] = "serve-1",
    concurrency: Annotated[int, typer.Option(min=1, max=10_000,
                                             help="Parent orders run at once.")] = 8,
    max_orders: Annotated[int | None, typer.Option(
        min=1, help="Stop once this many order entries are answered (default: run until "
        "stopped).")] = None,
    batch_window_ms: Annotated[int, typer.Option(
        min=0, max=60_000, help="How long a batch of orders forms after its first order "
        "arrives (orders that share a batch key run as one batched run).")] = 50,
    max_batch: Annotated[int, typer.Option(min=1, max=100_000,
                                           help="Most orders in one batch.")] = 256,
    lockstep: Annotated[bool, typer.Option(
        "--lockstep/--no-lockstep", help="One decision per STREAM_MARKET step of the order's "
        "symbol (default), or as fast as the executor runs.")] = True,
    venue: Annotated[str, typer.Option(
        "--venue", help="Where paper fills come from: 'paper' (each order's own simulated "
        "path of the market, seeded by its id) or 'stream' (the STREAM_MARKET entries of "
        "`execrl feed`, with the backtest's fill and queue models; ac and replay markets).")
    ] = "paper",
    summary_db: Annotated[str | None, typer.Option(
        "--summary-db", help="SQLAlchemy URL of the per-order summary (and the A/B pairs and "
        "canary gates): SQLite file or postgresql://... (default: $EXECRL_SUMMARY_URL or "
        "sqlite:///execrl-summary.sqlite; 'none': no summary).")] = None,
    registry_url: Annotated[str | None, typer.Option(
        "--registry", help="Policy registry URL: the live / canary / shadow policy of each "
        "symbol and the fallback flags come from it (default: none, the configured policy "
        "runs every order).")] = None,
    canary_share: Annotated[float, typer.Option(
        "--canary-share", help="Share of the flow the canary policy gets (chosen by order id; "
        "0 turns the canary off).")] = 0.10,
    shadow: Annotated[bool, typer.Option(
        "--shadow/--no-shadow", help="Run the registry's shadow candidate beside the live "
        "policy on every live order (counterfactual IS, paired A/B statistics).")] = True,
    metrics_port: Annotated[int, typer.Option(
        "--metrics-port", min=0, max=65535, help="Serve Prometheus /metrics on this port "
        "(0: off).")] = 0,
) -> None:
    """Run parent orders from STREAM_ORDERS through the executor; child orders and fills to
    STREAM_FILLS, decision traces to STREAM_RESEARCH, diagnostics to CHAN_ANALYST, agent logs to
    CHAN_EXEC_AGENT. Stop with Ctrl-C or SIGTERM; restart to resume."""
    from execrl.cli import _load_market
    from execrl.service.canary import CanaryConfig
    from execrl.service.serve import ServeConfig, Server
    from execrl.service.streams import connect
    from execrl.service.summary import default_url

    endpoint = None
    try:
        spec = _load_market(env, market)
        summary = summary_db if summary_db is not None else default_url()
        cfg = ServeConfig(market=spec, executor=load_executor_config(config, policy),
                          group=group, consumer=consumer, concurrency=concurrency,
                          max_orders=max_orders, lockstep=lockstep,
                          batch_window_ms=batch_window_ms, max_batch=max_batch, venue=venue,
                          summary_url=None if summary.lower() == "none" else summary,
                          registry_url=registry_url, canary=CanaryConfig(share=canary_share),
                          shadow=shadow)
        cfg.check()  # a bad option is named before the server is reached
        client = connect(redis_url)
        _warn_without_aof(client)
        server = Server(client, cfg)
        if metrics_port:
            endpoint = _metrics_endpoint(server, metrics_port)
        server.serve()
    except ExecRLError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        if endpoint is not None:
            endpoint.close()


def _metrics_endpoint(server: object, port: int) -> object:
    try:
        return server.hooks.metrics.serve(port)  # type: ignore[attr-defined]
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: cannot listen on it ({exc.strerror})"
                          ) from None


def _warn_without_aof(client: object) -> None:
    from execrl.cli import _warn

    try:
        value = client.config_get("appendonly").get("appendonly")  # type: ignore[attr-defined]
    except Exception:  # CONFIG may be disabled on a managed server
        return
    if value != "yes":
        _warn("the Redis server runs without appendonly: a server restart can lose the "
              "service's record of sent child orders")


def feed(
    redis_url: RedisOpt = "redis://127.0.0.1:6379/0",
    env: EnvOpt = "lob",
    market: MarketOpt = None,
    order: Annotated[Path | None, typer.Option(
        "--order", help="Parent order JSON whose horizon sets the decision step (default: the "
        "market's default order).")] = None,
    symbol: Annotated[str | None, typer.Option(
        help="Symbol of the entries (default: the order's).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Market steps to publish.")] = 1000,
    speed: Annotated[str, typer.Option(
        help="1 (the market's pace), N (N× faster) or max (as fast as possible).")] = "1",
    step_ms: Annotated[float | None, typer.Option(
        min=0.0, help="Wall-clock milliseconds of a step at 1× (default: the order's horizon / "
        "its decisions).")] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the market path.")] = 0,
) -> None:
    """Replay a simulated or recorded market onto STREAM_MARKET, one entry per decision step
    (mid, bid, ask, volume)."""
    from execrl.cli import _load_market
    from execrl.service.feed import FeedConfig, parse_speed, run_feed
    from execrl.service.streams import connect

    try:
        spec = _load_market(env, market)
        parent = spec.default_order() if order is None else ParentOrder.from_file(order)
        if step_ms is not None and step_ms <= 0 and speed != "max":
            raise ConfigError(f"--step-ms {step_ms!r} must be > 0 (or use --speed max)")
        cfg = FeedConfig(market=spec, order=parent, steps=steps, speed=parse_speed(speed),
                         step_s=None if step_ms is None else step_ms / 1e3, seed=seed)
        client = connect(redis_url)
        run_feed(client, cfg, symbol or parent.symbol)
    except ExecRLError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


__all__ = ["feed", "serve"]
