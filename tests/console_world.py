"""Shared by the console's tests: a registry with the desk's people and a policy at canary, the
service (``Server``) and the market feed running in threads on a real Redis, and the HTTP API
served by uvicorn on a free port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from execrl.service.registry import Registry
from registry_helpers import make_checkpoint, results_for

#: one user per role the console's tests sign in as (ada, the first admin, adds them)
DESK = {"tina": "trader", "quinn": "quant", "pam": "pm", "rita": "risk_officer"}


@dataclass
class Desk:
    registry: Registry
    tokens: dict[str, str]
    canary: str  # a policy at canary, ready for a request to go live
    candidate: str
    users: dict[str, Any] = field(default_factory=dict)


def staff_desk(registry: Registry, folder: Path) -> Desk:
    """ada (admin) adds DESK; quinn registers two checkpoints and takes one to canary."""
    tokens = {"ada": registry.add_user(None, "ada", "admin")}
    ada = registry.user("ada")
    for name, role in DESK.items():
        tokens[name] = registry.add_user(ada, name, role)
    quinn = registry.user("quinn")
    ck = make_checkpoint(folder / "ck-canary", seed=11)
    from execrl.agents.export import NumpyPolicy

    digest = NumpyPolicy.load(ck, checkpoint=True).policy_hash()
    res = results_for(folder / "results.json", "ppo", digest, diff=-1.8)
    canary = registry.register(quinn, ck, res, reason="nightly run").policy_hash
    registry.promote(quinn, canary, reason="shadow clean")
    registry.promote(quinn, canary, reason="two weeks in shadow")
    candidate = registry.register(quinn, make_checkpoint(folder / "ck-cand", seed=12),
                                  reason="new features").policy_hash
    users = {name: registry.user(name) for name in tokens}
    return Desk(registry, tokens, canary, candidate, users)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def service(client: Any, step_s: float = 0.02) -> Iterator[Any]:
    """``execrl serve`` (TWAP on the AC market) and ``execrl feed`` (the AC market, one step
    every ``step_s``) in threads; both stopped on exit."""
    from execrl.executor.config import ExecutorConfig
    from execrl.presets import preset_market
    from execrl.service.feed import FeedConfig, run_feed
    from execrl.service.serve import ServeConfig, Server

    market = preset_market("ac")
    server = Server(client, ServeConfig(market=market, executor=ExecutorConfig(),
                                        concurrency=8, block_ms=100), log=lambda _t: None)
    stop = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    def feed() -> None:
        try:
            run_feed(client, FeedConfig(market, market.default_order(), steps=1_000_000,
                                        step_s=step_s), "DEMO", stop=stop.is_set)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=serve, daemon=True, name="serve"),
               threading.Thread(target=feed, daemon=True, name="feed")]
    for t in threads:
        t.start()
    server.errors = errors  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        stop.set()
        server.stopping.set()
        for t in threads:
            t.join(timeout=10)


@contextmanager
def http(app: Any) -> Iterator[str]:
    """uvicorn serving ``app`` on a free loopback port in a thread; yields the base URL."""
    import uvicorn

    sock = free_socket()
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=1, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="uvicorn")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
