"""``execrl console``: the HTTP API and the web console (``execrl.service.api``) on one port.

Registered on the main command line by ``execrl.cli``. It reads the service's streams on the
Redis server ``execrl serve`` uses and the policy registry ``execrl registry`` uses; users sign
in with their registry token. Errors (a bad URL, an unreachable server, a port in use) are one
``error:`` line, exit 2.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Annotated

import typer

from execrl.domain import ConfigError, ExecRLError
from execrl.service.registry import DEFAULT_URL, DEFAULT_URL_ENV


def _fail(exc: Exception) -> typer.Exit:
    from execrl.cli import _error

    _error(str(exc))
    return typer.Exit(2)


def _check_port(host: str, port: int) -> None:
    """Refuse a host that does not resolve or a port already taken, in one line, before the
    server starts (uvicorn would log a traceback-like error and exit 1)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} does not resolve ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(addr)
        except OSError as exc:
            raise ConfigError(f"--port {port}: cannot listen on {host} ({exc.strerror})") \
                from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def console(
    redis_url: Annotated[str, typer.Option(
        "--redis", help="Redis URL of the service (the server execrl serve and feed use).")
    ] = "redis://127.0.0.1:6379/0",
    registry_url: Annotated[str | None, typer.Option(
        "--registry", envvar=DEFAULT_URL_ENV, show_envvar=False,
        help=f"Policy registry database URL (${DEFAULT_URL_ENV}; default {DEFAULT_URL}).")
    ] = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on. The console speaks plain HTTP: keep it on loopback, or put "
        "it behind a TLS proxy (and pass --secure-cookies).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8700,
    history: Annotated[int, typer.Option(
        min=10, max=1_000_000, help="Entries of each stream read back at start and kept in "
        "memory (the tape's and panels' depth).")] = 5000,
    secure_cookies: Annotated[bool, typer.Option(
        "--secure-cookies/--no-secure-cookies", help="Mark the session cookie Secure (when "
        "served over HTTPS by a proxy).")] = False,
) -> None:
    """Serve the HTTP API (/api) and the web console (/) for the desk: the execution tape with
    the agent's actions and confidence, slippage by time of day, the confidence histogram, the
    fallback tape, decision latency, IS drift, and the policy registry with its approve /
    promote / rollback / flag controls, live over Server-Sent Events. Sign in with a registry
    token (execrl registry users add prints one); each role may do only what the registry
    allows it (a trader cannot approve; nobody approves their own promotion). Stop with
    Ctrl-C."""
    from execrl.cli import _warn
    from execrl.service.registry import Registry
    from execrl.service.streams import connect

    try:
        import uvicorn

        from execrl.service.api import create_app
    except ImportError as exc:  # a slimmed install without the console's dependencies
        raise _fail(ConfigError(f"execrl console needs {exc.name}: pip install fastapi "
                                "uvicorn")) from None
    try:
        client = connect(redis_url)
        registry = Registry(registry_url)
        _check_port(host, port)
        if not _is_loopback(host):
            _warn(f"--host {host}: the console is plain HTTP; tokens and session cookies cross "
                  "the network in the clear unless a TLS proxy is in front")
        app = create_app(client, registry, history=history, secure_cookies=secure_cookies)
    except ExecRLError as exc:
        raise _fail(exc) from None
    from execrl.cli import console as out

    out.print(f"execrl console on http://{host}:{port}/ (registry {registry.shown_url}, "
              f"redis {redis_url}); Ctrl-C to stop")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=2)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


__all__ = ["console"]
