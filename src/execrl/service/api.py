"""The service's HTTP API and web console (``execrl console``): the desk's window on the order
flow and the policy registry (seed 002 §5 / §7, seed 001 §12).

Nothing here re-implements the service: orders are placed by ``XADD`` on ``STREAM_ORDERS``
(validated first with ``ParentOrder``, the edge's own check, so a bad order is a 422 naming the
field); what the console shows is read from ``STREAM_ORDERS`` / ``STREAM_FILLS`` /
``STREAM_RESEARCH`` and ``STATE_PROGRESS``; every registry action is the ``Registry`` method,
with the authenticated user as its actor, so the registry's own checks (roles, 4-eyes, legal
state changes) are the only ones and its refusals come back as 4xx with its one-line message.

- **Who.** A request carries a registry token (``Authorization: Bearer ID.SECRET``) or the
  session cookie ``POST /api/login`` exchanges a token for (the console; cookie-authenticated
  changes must also send the session's ``X-CSRF-Token``). Each route names the action it needs
  (``ROUTE_ACTIONS``); the role is checked against ``access.PERMISSIONS`` on every request
  (the user's row re-read, so a role changed or a user deactivated counts at once). No or a bad
  token: 401; an action the role may not do: 403; both one JSON line ``{"error", "action",
  "role"}``.
- **Placing orders** is the one action the registry does not know: ``ORDER_ROLES`` (trader,
  PM) may; the lead may fold it into ``access.PERMISSIONS`` later.
- **Live.** One thread (``Tape``) follows the three streams with ``XREAD BLOCK`` from a bounded
  history and keeps the last rows in memory: the execution tape (each child order, cancel and
  fill joined with its step's decision trace: the agent's action, and its confidence where the
  trace has one), the orders and the console's panels. ``GET /api/stream`` pushes the tape's
  new rows as Server-Sent Events (``id`` = the row's sequence number, so a reconnecting
  ``EventSource`` resumes where it left).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from execrl.domain import ExecRLError, OrderValidationError, ParentOrder
from execrl.service.access import ACTIONS, PERMISSIONS, ROLES, AccessDenied, User, require
from execrl.service.registry import ALL_POLICIES, ALL_SCOPES, Registry, RegistryError
from execrl.service.streams import (
    STATE_PROGRESS,
    STREAM_FILLS,
    STREAM_ORDERS,
    STREAM_RESEARCH,
    decode,
    encode,
)

CONSOLE_DIR = Path(__file__).with_name("console")
SESSION_COOKIE = "execrl_session"
CSRF_HEADER = "X-CSRF-Token"

#: placing a parent order: not a registry action (access.ACTIONS); these roles may
ORDER_ACTION = "order"
ORDER_ROLES = frozenset({"trader", "pm"})
#: every action the API checks, and who may: the registry's table plus placing orders
API_ACTIONS = (*ACTIONS, ORDER_ACTION)
API_PERMISSIONS: dict[str, frozenset[str]] = {
    role: PERMISSIONS[role] | ({ORDER_ACTION} if role in ORDER_ROLES else frozenset())
    for role in ROLES
}
#: actions whose reason goes into the audit log and must be given (as on the command line)
REASON_REQUIRED = {"rollback": "roll back", "quarantine": "quarantine", "release": "release",
                   "flag": "flip the flag", "unflag": "flip the flag"}

#: the seed's SLO on decision latency (seed 001 §8), drawn on the latency tracker
LATENCY_SLO_MS = 50.0


class ApiError(Exception):
    """A refusal: HTTP status and one line (``error: ...``), with the action and role."""

    def __init__(self, status: int, message: str, action: str | None = None,
                 role: str | None = None):
        super().__init__(message)
        self.status, self.action, self.role = status, action, role

    def body(self) -> dict[str, Any]:
        text = " ".join(str(self).split())  # one line, whatever the message held
        return {"error": text if text.startswith("error: ") else f"error: {text}",
                "action": self.action, "role": self.role}


def require_api(user: User, action: str) -> None:
    """``access.require`` for the registry's actions; the same line for placing orders."""
    if action in ACTIONS:
        require(user, action)
        return
    if action not in API_PERMISSIONS.get(user.role, frozenset()) or not user.active:
        allowed = sorted(r for r in ROLES if action in API_PERMISSIONS[r])
        raise AccessDenied(f"user {user.name!r} ({user.role}) may not {action}; it needs the "
                           f"role {' or '.join(allowed)}")


def _finite(value: Any) -> Any:
    """JSON-safe: NaN / infinity as null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: _finite(v) for k, v in obj.items()}


# -- the streams, followed -------------------------------------------------------------------
@dataclass
class _Order:
    order_id: str
    entry_id: str
    order: dict[str, Any]
    state: str = "queued"  # queued, working, done, refused
    step: int = 0
    filled: int = 0
    remaining: int | None = None
    done: dict[str, Any] | None = None
    error: str | None = None
    updated_ns: int = 0

    def view(self) -> dict[str, Any]:
        o = self.order
        d = self.done or {}
        return _clean({
            "order_id": self.order_id, "entry_id": self.entry_id, "state": self.state,
            "symbol": o.get("symbol"), "side": o.get("side"), "qty": o.get("qty"),
            "arrival_px": o.get("arrival_px"), "start_ts": o.get("start_ts"),
            "step": self.step, "filled": d.get("filled", self.filled),
            "remaining": self.remaining, "is_bps": d.get("is_bps"),
            "fill_rate": d.get("fill_rate"), "child_orders": d.get("child_orders"),
            "finished_by": d.get("finished_by"), "policy": d.get("policy"),
            "error": self.error, "updated_ns": self.updated_ns,
        })


def _time_of_day_s(start_ts: Any) -> float | None:
    """Seconds since midnight UTC of an order's arrival (``start_ts``, epoch seconds)."""
    if isinstance(start_ts, bool) or not isinstance(start_ts, int | float):
        return None
    if not math.isfinite(start_ts):
        return None
    return float(start_ts) % 86_400.0


def _quantiles(values: Iterable[float], qs: tuple[float, ...]) -> dict[str, float | None]:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {f"p{int(q * 100)}": None for q in qs}
    return {f"p{int(q * 100)}": float(np.quantile(arr, q)) for q in qs}


class Tape:
    """The streams as the console sees them, in memory and bounded (module docstring).

    ``history``: entries of each stream read back at start (and rows kept); ``poll`` follows
    the streams from there. Thread-safe: one thread polls, requests read."""

    def __init__(self, client: Any, history: int = 5000, block_ms: int = 1000):
        self.client = client
        self.history = history
        self.block_ms = block_ms
        self.seq = 0  # rows appended so far: the tape's cursor
        self.rows: deque[dict[str, Any]] = deque(maxlen=history)
        self.orders: OrderedDict[str, _Order] = OrderedDict()
        self.decisions: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self.done: deque[dict[str, Any]] = deque(maxlen=history)
        self.latency: deque[tuple[int, float]] = deque(maxlen=history)  # (ts_ns, ms)
        self.confidence: deque[float] = deque(maxlen=history)
        self.acting: dict[str, int] = {}
        self.decisions_seen = 0
        self.cursors: dict[str, str] = {}
        self._unjoined: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    # -- following ----------------------------------------------------------------------------
    def _start_cursors(self) -> None:
        for stream in (STREAM_ORDERS, STREAM_RESEARCH, STREAM_FILLS):
            back = self.client.xrevrange(stream, count=self.history)
            # read from just before the oldest entry kept: XREAD is exclusive of its cursor
            self.cursors[stream] = _before(back[-1][0]) if back else "0-0"

    def poll(self, block_ms: int | None = None) -> int:
        """Read what the streams gained (waiting up to ``block_ms``); returns rows added."""
        if not self.cursors:
            self._start_cursors()
        got = self.client.xread(dict(self.cursors), count=1000,
                                block=self.block_ms if block_ms is None else block_ms)
        by_stream: dict[str, list[Any]] = {name: list(rows) for name, rows in got or ()}
        if got:
            # a blocked XREAD wakes with the one stream that grew first; the service writes a
            # step's fills and its trace in one script, so the others are there already
            after = dict(self.cursors)
            for name, rows in by_stream.items():
                after[name] = rows[-1][0]
            for name, rows in self.client.xread(after, count=1000) or ():
                by_stream.setdefault(name, []).extend(rows)
        added = 0
        with self._lock:
            # the decision traces first: a step's fills join the trace written with them
            for stream in (STREAM_ORDERS, STREAM_RESEARCH, STREAM_FILLS):
                for entry_id, fields in by_stream.get(stream, ()):
                    self.cursors[stream] = entry_id
                    try:
                        message = decode(fields)
                    except (ValueError, TypeError, UnicodeDecodeError):
                        message = None
                    added += self._take(stream, entry_id, message, fields)
        if added:
            self._wake()
        return added

    def _take(self, stream: str, entry_id: str, message: Any, fields: Any) -> int:
        if stream == STREAM_ORDERS:
            return self._take_order(entry_id, message)
        if not isinstance(message, dict):
            return 0
        if stream == STREAM_RESEARCH:
            self._take_decision(message)
            return 0
        return self._take_fill(entry_id, message)

    def _take_order(self, entry_id: str, message: Any) -> int:
        data = message if isinstance(message, dict) else {}
        oid = data.get("order_id")
        if not isinstance(oid, str):
            oid = f"entry:{entry_id}"
        if oid not in self.orders:  # a repeated id is refused by serve; the first one stays
            self.orders[oid] = _Order(oid, entry_id, data, updated_ns=time.time_ns())
            while len(self.orders) > self.history:
                self.orders.popitem(last=False)
        return self._append({"kind": "order", "entry_id": entry_id, "parent_id": oid,
                             "symbol": data.get("symbol"), "side": data.get("side"),
                             "qty": data.get("qty"), "px": data.get("arrival_px"),
                             "ts_ns": time.time_ns()})

    def _take_decision(self, trace: dict[str, Any]) -> None:
        parent, step = trace.get("parent_id"), trace.get("step")
        if not isinstance(parent, str) or not isinstance(step, int):
            return
        self.decisions[(parent, step)] = trace
        while len(self.decisions) > 4 * self.history:
            self.decisions.popitem(last=False)
        for row in self._unjoined.pop((parent, step), ()):  # fills read before their trace
            row.update(_clean(_joined(trace)))
        self.decisions_seen += 1
        ts, market_ts = trace.get("ts_ns"), trace.get("market_ts_ns")
        if isinstance(ts, int) and isinstance(market_ts, int):
            self.latency.append((ts, (ts - market_ts) / 1e6))
        conf = trace.get("confidence")
        if isinstance(conf, int | float) and not isinstance(conf, bool) and math.isfinite(conf):
            self.confidence.append(float(conf))
        acting = trace.get("acting")
        if isinstance(acting, str):
            self.acting[acting] = self.acting.get(acting, 0) + 1
        order = self.orders.get(parent)
        if order is not None and order.state in ("queued", "working"):
            order.state = "working"
            order.step = step + 1
            order.filled = int(trace.get("filled") or 0)
            order.remaining = trace.get("remaining")
            order.updated_ns = time.time_ns()

    def _take_fill(self, entry_id: str, m: dict[str, Any]) -> int:
        kind = m.get("kind")
        parent = m.get("parent_id") if kind != "error" else m.get("order_id")
        row: dict[str, Any] = {
            "kind": kind, "entry_id": entry_id, "parent_id": parent, "step": m.get("step"),
            "child_id": m.get("child_id"), "type": m.get("type"), "qty": m.get("qty"),
            "px": m.get("px"), "venue": m.get("venue"), "ts_ns": m.get("ts_ns"),
            "market_ts_ns": m.get("market_ts_ns"),
        }
        key = (parent, m.get("step"))
        trace = self.decisions.get(key) if isinstance(parent, str) else None
        if trace is not None:
            row.update(_joined(trace))
        elif kind in ("child", "cancel", "fill") and isinstance(key[1], int):
            self._unjoined.setdefault(key, []).append(row)
            while len(self._unjoined) > self.history:
                self._unjoined.pop(next(iter(self._unjoined)))
        order = self.orders.get(parent) if isinstance(parent, str) else None
        if kind == "done":
            self.done.append(m)
            row.update(qty=m.get("filled"), is_bps=m.get("is_bps"),
                       finished_by=m.get("finished_by"), policy=m.get("policy"))
            if order is not None:
                order.state, order.done = "done", m
                order.remaining = m.get("residual_shares")
                order.step = int(m.get("steps") or order.step)
        elif kind == "error":
            row["error"] = m.get("error")
            refused = self.orders.get(f"entry:{m.get('entry_id')}") or order
            if refused is not None and refused.entry_id == m.get("entry_id"):
                refused.state, refused.error = "refused", m.get("error")
        if order is not None:
            order.updated_ns = time.time_ns()
        return self._append(row)

    def _append(self, row: dict[str, Any]) -> int:
        self.seq += 1
        row["seq"] = self.seq
        row.update(_clean(row))  # in place: a trace read later joins this same row
        self.rows.append(row)
        return 1

    # -- the thread -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="console-tape", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import redis

        while not self._stop.is_set():
            try:
                self.poll()
                self.error = None
            except redis.RedisError as exc:  # the server went away: say so, try again
                self.error = f"redis: {exc}"
                self._stop.wait(1.0)

    # -- waiting (SSE) ------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    async def wait_after(self, cursor: int, timeout: float) -> bool:
        """Wait until the tape has a row after ``cursor`` (True) or ``timeout`` passes."""
        event = asyncio.Event()
        key = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.add(key)
        try:
            if self.seq > cursor:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            return self.seq > cursor
        finally:
            with self._lock:
                self._waiters.discard(key)

    # -- views --------------------------------------------------------------------------------
    def since(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        """Tape rows after sequence number ``after`` (oldest first, at most ``limit``); a
        cursor from before a restart of the console (ahead of the tape) reads from the start."""
        with self._lock:
            if after > self.seq:
                after = 0
            rows = [dict(r) for r in self.rows if r["seq"] > after][:limit]
        return rows

    def order_views(self, limit: int = 500) -> list[dict[str, Any]]:
        with self._lock:
            orders = list(self.orders.values())[-limit:]
        views = [o.view() for o in orders]
        running = [v for v in views if v["state"] in ("queued", "working")]
        if running:  # the service's own record of progress (steps on record, market cursor)
            ids = [v["order_id"] for v in running]
            for view, raw in zip(running, self.client.hmget(STATE_PROGRESS, ids), strict=True):
                if raw:
                    progress = json.loads(raw)
                    view["step"] = max(view["step"], int(progress.get("step", 0)))
                    view["market_id"] = progress.get("market_id")
        return views[::-1]  # newest first

    def analytics(self, bin_min: int = 30) -> dict[str, Any]:
        """The console's panels (module docstring of the console): slippage by time of day,
        confidence histogram, fallback tape, decision latency, IS drift."""
        with self._lock:
            done = list(self.done)
            latency = list(self.latency)
            confidence = list(self.confidence)
            acting = dict(self.acting)
            decisions = self.decisions_seen
            arrival = {oid: o.order.get("start_ts") for oid, o in self.orders.items()}
        return {
            "heatmap": _heatmap(done, arrival, bin_min),
            "confidence": _confidence(confidence, decisions),
            "fallback": _fallback(done, acting),
            "latency": _latency(latency),
            "drift": _drift(done),
            "orders": {"done": len(done), "decisions": decisions},
        }


def _joined(trace: dict[str, Any]) -> dict[str, Any]:
    """What a tape row takes from its step's decision trace."""
    return {"action": trace.get("action"), "action_label": trace.get("action_label"),
            "confidence": trace.get("confidence"), "acting": trace.get("acting"),
            "remaining": trace.get("remaining")}


def _before(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    s = int(seq or 0)
    return f"{ms}-{s - 1}" if s > 0 else f"{int(ms) - 1}-18446744073709551615"


def _heatmap(done: list[dict[str, Any]], arrival: dict[str, Any], bin_min: int
             ) -> dict[str, Any]:
    """Mean IS (bps) of the finished orders by the time of day they arrived (UTC bins of
    ``bin_min`` minutes), per symbol and side, and every order together (``ALL``)."""
    width = bin_min * 60.0
    cells: dict[tuple[str, int], list[float]] = {}
    for d in done:
        tod = _time_of_day_s(arrival.get(d.get("parent_id")))
        is_bps = d.get("is_bps")
        if tod is None or not isinstance(is_bps, int | float):
            continue
        b = int(tod // width)
        for row in (f"{d.get('symbol')} {d.get('side')}", "ALL"):
            cells.setdefault((row, b), []).append(float(is_bps))
    symbols = sorted({r for r, _ in cells if r != "ALL"})
    return {
        "bin_min": bin_min, "rows": [*symbols, "ALL"] if cells else [],
        "cells": [{"row": r, "bin": b, "start": f"{b * bin_min // 60:02d}:{b * bin_min % 60:02d}",
                   "n": len(v), "mean_bps": float(np.mean(v))}
                  for (r, b), v in sorted(cells.items())],
    }


def _confidence(values: list[float], decisions: int) -> dict[str, Any]:
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=20, range=(0, 1))
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist(),
            "n": len(values), "decisions": decisions,
            "missing": decisions - len(values) if decisions >= len(values) else 0,
            "floor": 0.6}  # seed 002 §3: fall back below 0.6


def _fallback(done: list[dict[str, Any]], acting: dict[str, int]) -> dict[str, Any]:
    """Orders finished by the policy against those the watchdog handed to the fallback."""
    rows = [{"parent_id": d.get("parent_id"), "symbol": d.get("symbol"),
             "finished_by": d.get("finished_by", "policy"), "is_bps": _finite(d.get("is_bps")),
             "ts_ns": d.get("ts_ns"), "policy": d.get("policy")} for d in done]
    rl = [r for r in rows if r["finished_by"] == "policy"]
    fb = [r for r in rows if r["finished_by"] != "policy"]

    def mean(rs: list[dict[str, Any]]) -> float | None:
        v = [r["is_bps"] for r in rs if isinstance(r["is_bps"], int | float)]
        return float(np.mean(v)) if v else None

    return {"policy": rl[-200:][::-1], "fallback": fb[-200:][::-1],
            "n_policy": len(rl), "n_fallback": len(fb),
            "rate": len(fb) / len(rows) if rows else None,
            "mean_is_policy": mean(rl), "mean_is_fallback": mean(fb), "acting": acting}


def _latency(samples: list[tuple[int, float]]) -> dict[str, Any]:
    """Market entry on STREAM_MARKET -> the decision's record on the streams, per decision."""
    recent = samples[-1000:]
    ms = [v for _, v in recent]
    above = sum(1 for v in ms if v > LATENCY_SLO_MS)
    return {"series": [{"ts_ns": t, "ms": v} for t, v in samples[-300:]],
            **_quantiles(ms, (0.5, 0.95, 0.99)), "n": len(ms), "slo_ms": LATENCY_SLO_MS,
            "above_slo": above}


def _drift(done: list[dict[str, Any]], window: int = 20) -> dict[str, Any]:
    """IS (and the episode's reward, where the done record has it) per finished order over
    time, with a rolling mean over ``window`` orders."""
    pts = [(d.get("ts_ns"), d.get("is_bps"), d.get("return"), d.get("parent_id")) for d in done
           if isinstance(d.get("is_bps"), int | float) and isinstance(d.get("ts_ns"), int)]
    pts.sort(key=lambda p: p[0])
    out, run = [], deque(maxlen=window)
    for ts, is_bps, ret, pid in pts:
        run.append(float(is_bps))
        out.append({"ts_ns": ts, "is_bps": float(is_bps), "mean_bps": float(np.mean(run)),
                    "reward": _finite(ret) if isinstance(ret, int | float) else None,
                    "parent_id": pid})
    return {"series": out[-500:], "window": window,
            "has_reward": any(p["reward"] is not None for p in out)}


# -- who is asking ---------------------------------------------------------------------------
class Sessions:
    """Console sessions (session id -> user name, CSRF token, expiry) and a short cache of
    bearer tokens already checked (scrypt costs ~0.1 s a check). The user's row is re-read on
    every request; only the token's hash check is cached."""

    def __init__(self, registry: Registry, ttl_s: float = 8 * 3600.0, token_ttl_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        self.ttl_s, self.token_ttl_s, self.clock = ttl_s, token_ttl_s, clock
        self._sessions: dict[str, tuple[str, str, float]] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def login(self, token: str, name: str | None = None) -> tuple[str, str, User]:
        user = self.registry.authenticate(token)
        if name and name != user.name:
            raise AccessDenied("token is not valid")  # as for a bad token: nothing more said
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        with self._lock:
            now = self.clock()
            self._sessions = {k: v for k, v in self._sessions.items() if v[2] > now}
            self._sessions[sid] = (user.name, csrf, now + self.ttl_s)
        return sid, csrf, user

    def logout(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def session(self, sid: str) -> tuple[str, str] | None:
        with self._lock:
            got = self._sessions.get(sid)
            if got is None or got[2] <= self.clock():
                self._sessions.pop(sid, None)
                return None
            return got[0], got[1]

    def bearer(self, token: str) -> str:
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        now = self.clock()
        with self._lock:
            got = self._tokens.get(key)
        if got is not None and got[1] > now:
            return got[0]
        user = self.registry.authenticate(token)
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[key] = (user.name, now + self.token_ttl_s)
        return user.name


# -- the app ---------------------------------------------------------------------------------
def create_app(redis_client: Any, registry: Registry, *, history: int = 5000,
               block_ms: int = 1000, session_ttl_s: float = 8 * 3600.0,
               secure_cookies: bool = False, follow: bool = True) -> Any:
    """The FastAPI app: the API under ``/api``, the console at ``/``. ``follow``: start the
    tape's thread with the app (off: call ``app.state.tape.poll`` yourself, as tests may)."""
    tape = Tape(redis_client, history=history, block_ms=block_ms)
    sessions = Sessions(registry, ttl_s=session_ttl_s)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        if follow:
            tape.start()
        try:
            yield
        finally:
            tape.stop()

    # no /docs: FastAPI's Swagger page loads its script from a CDN (the schema is served)
    app = FastAPI(title="execrl console", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/api/openapi.json")
    app.state.tape, app.state.sessions, app.state.registry = tape, sessions, registry

    # -- errors: one JSON line, never a traceback --------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        msg = str(first.get("msg", "is not valid"))
        text = f"field '{loc}' {msg.lower()}" if loc else f"request body: {msg}"
        return JSONResponse(ApiError(422, text).body(), status_code=422)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    def who(request: Request, action: str) -> User:
        """The request's user, allowed ``action``; otherwise 401 / 403 (module docstring)."""
        header = request.headers.get("authorization", "")
        sid = request.cookies.get(SESSION_COOKIE)
        try:
            if header:
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise ApiError(401, "Authorization must be 'Bearer ID.SECRET' (a registry "
                                   "token)", action)
                name = sessions.bearer(token.strip())
            elif sid:
                got = sessions.session(sid)
                if got is None:
                    raise ApiError(401, "session expired or unknown: log in again", action)
                name, csrf = got
                if request.method not in ("GET", "HEAD") and not secrets.compare_digest(
                        request.headers.get(CSRF_HEADER, ""), csrf):
                    raise ApiError(403, f"{CSRF_HEADER} header missing or wrong for this "
                                   "session (reload the console)", action)
            else:
                raise ApiError(401, "not logged in: send 'Authorization: Bearer ID.SECRET' "
                               "(a registry token) or log in at POST /api/login", action)
        except AccessDenied as exc:
            raise ApiError(401, str(exc), action) from None
        try:
            user = registry.user(name)
        except RegistryError:
            raise ApiError(401, f"user {name!r} is no longer a registry user", action) from None
        try:
            require_api(user, action)
        except AccessDenied as exc:
            raise ApiError(403, str(exc), action, user.role) from None
        return user

    def acting(action: str, user: User, fn: Callable[[], Any]) -> Any:
        """A registry call as ``user``: its refusals as 4xx with its own line."""
        try:
            return fn()
        except AccessDenied as exc:  # 4-eyes, or a role changed since the check
            raise ApiError(403, str(exc), action, user.role) from None
        except RegistryError as exc:
            text = str(exc)
            status = (404 if "is not registered" in text
                      else 422 if "is not a policy hash" in text else 409)
            raise ApiError(status, str(exc), action, user.role) from None
        except ExecRLError as exc:  # a checkpoint folder or results file refused
            raise ApiError(422, str(exc), action, user.role) from None

    def reason_of(body: dict[str, Any], action: str, user: User) -> str:
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise ApiError(422, f"field 'reason' = {reason!r} must be a string", action,
                           user.role)
        if action in REASON_REQUIRED and not reason.strip():
            raise ApiError(422, f"field 'reason' is required to {REASON_REQUIRED[action]} (it "
                           "goes into the audit log)", action, user.role)
        return reason.strip()

    def policy_of(digest: str, action: str, user: User) -> str:
        return acting(action, user, lambda: registry.resolve(digest))

    def field(body: dict[str, Any], name: str, default: Any, action: str, user: User) -> str:
        value = body.get(name, default)
        if not isinstance(value, str) or not value:
            raise ApiError(422, f"field '{name}' = {value!r} must be a non-empty string",
                           action, user.role)
        return value

    # -- who am I ----------------------------------------------------------------------------
    @app.post("/api/login")
    def login(body: dict[str, Any] = Body(...)) -> Response:  # noqa: B008
        token, name = body.get("token"), body.get("user")
        if not isinstance(token, str) or not token.strip():
            raise ApiError(422, "field 'token' is missing: give your registry token", "login")
        if name is not None and not isinstance(name, str):
            raise ApiError(422, f"field 'user' = {name!r} must be a string", "login")
        try:
            sid, csrf, user = sessions.login(token.strip(), (name or "").strip() or None)
        except AccessDenied as exc:
            raise ApiError(401, str(exc), "login") from None
        response = JSONResponse({**_me(user), "csrf": csrf})
        response.set_cookie(SESSION_COOKIE, sid, max_age=int(session_ttl_s), httponly=True,
                            samesite="strict", secure=secure_cookies, path="/")
        return response

    @app.post("/api/logout")
    def logout(request: Request) -> Response:
        sessions.logout(request.cookies.get(SESSION_COOKIE))
        response = JSONResponse({"ok": True})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/api/me")
    def me(request: Request) -> dict[str, Any]:
        user = who(request, "view")
        got = sessions.session(request.cookies.get(SESSION_COOKIE, ""))
        return {**_me(user), "csrf": got[1] if got else None}

    @app.get("/api/health")
    def health() -> dict[str, Any]:  # no token: what a load balancer asks
        import redis

        try:
            redis_client.ping()
            ok = tape.error is None
        except redis.RedisError:
            ok = False
        return {"ok": ok, "tape_error": tape.error, "rows": tape.seq}

    # -- orders ------------------------------------------------------------------------------
    @app.post("/api/orders", status_code=201)
    async def place_order(request: Request) -> dict[str, Any]:
        user = await asyncio.to_thread(who, request, ORDER_ACTION)
        raw = await request.body()
        try:
            order = ParentOrder.from_json(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(422, "order body is not UTF-8 JSON", ORDER_ACTION, user.role) from None
        except OrderValidationError as exc:
            raise ApiError(422, str(exc), ORDER_ACTION, user.role) from None
        wire = order.to_wire()
        entry = await asyncio.to_thread(redis_client.xadd, STREAM_ORDERS, encode(wire))
        return {"entry_id": entry, "order": wire, "placed_by": user.name}

    @app.get("/api/orders")
    def list_orders(request: Request, limit: int = Query(500, ge=1, le=5000)
                    ) -> dict[str, Any]:
        who(request, "view")
        return {"orders": tape.order_views(limit)}

    # -- the tape ----------------------------------------------------------------------------
    @app.get("/api/tape")
    def get_tape(request: Request, after: int = Query(0, ge=0),
                 limit: int = Query(500, ge=1, le=5000)) -> dict[str, Any]:
        who(request, "view")
        rows = tape.since(after, limit)
        return {"rows": rows, "seq": tape.seq, "next": rows[-1]["seq"] if rows else after}

    @app.get("/api/stream")
    async def stream(request: Request, after: int | None = Query(None, ge=0),
                     limit: int | None = Query(None, ge=1),
                     timeout_s: float | None = Query(None, gt=0)) -> StreamingResponse:
        await asyncio.to_thread(who, request, "view")
        last = request.headers.get("last-event-id", "")
        cursor = int(last) if last.isdigit() else (after if after is not None else tape.seq)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s

        async def events() -> AsyncIterator[str]:
            nonlocal cursor
            sent = 0
            yield f"retry: 2000\nevent: hello\ndata: {json.dumps({'seq': tape.seq})}\n\n"
            while deadline is None or time.monotonic() < deadline:
                if await request.is_disconnected():
                    return
                rows = tape.since(cursor, 200)
                for row in rows:
                    cursor = row["seq"]
                    yield (f"id: {row['seq']}\nevent: tape\n"
                           f"data: {json.dumps(row, separators=(',', ':'))}\n\n")
                    sent += 1
                    if limit is not None and sent >= limit:
                        return
                if not rows:
                    wait = 15.0 if deadline is None else max(0.0, deadline - time.monotonic())
                    if not await tape.wait_after(cursor, min(wait, 15.0)):
                        yield ": keep-alive\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    @app.get("/api/analytics")
    def analytics(request: Request, bin_min: int = Query(30, ge=5, le=240)) -> dict[str, Any]:
        who(request, "view")
        if 1440 % bin_min:
            raise ApiError(422, f"field 'bin_min' = {bin_min} must divide a day (1440 minutes)",
                           "view")
        return tape.analytics(bin_min)

    # -- the registry: reads -----------------------------------------------------------------
    @app.get("/api/policies")
    def list_policies(request: Request) -> dict[str, Any]:
        who(request, "view")
        flags = registry.flags()
        open_requests = {r.policy_hash: r for r in registry.requests() if r.status == "open"}
        return {"policies": [_policy(p, flags, open_requests.get(p.policy_hash))
                             for p in registry.policies()],
                "flags": flags, "all_fallback": bool(flags.get(ALL_POLICIES, False))}

    @app.get("/api/requests")
    def list_requests(request: Request) -> dict[str, Any]:
        who(request, "view")
        return {"requests": [_request(r) for r in registry.requests()]}

    @app.get("/api/events")
    def list_events(request: Request, limit: int = Query(200, ge=1, le=10_000),
                    policy: str | None = None) -> dict[str, Any]:
        user = who(request, "view")
        digest = None if policy is None else policy_of(policy, "view", user)
        rows = registry.events(digest)
        return {"events": rows[-limit:][::-1]}

    @app.get("/api/flags")
    def list_flags(request: Request) -> dict[str, Any]:
        who(request, "view")
        return {"flags": registry.flags()}

    # -- the registry: changes ---------------------------------------------------------------
    @app.post("/api/policies", status_code=201)
    def register(request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        user = who(request, "register")
        path = field(body, "path", None, "register", user)
        results = body.get("results")
        if results is not None and not isinstance(results, str):
            raise ApiError(422, f"field 'results' = {results!r} must be a path", "register",
                           user.role)
        scope = field(body, "scope", ALL_SCOPES, "register", user)
        reason = reason_of(body, "register", user)
        rec = acting("register", user, lambda: registry.register(
            user, path, results, scope=scope, reason=reason))
        return {"policy": _policy(rec, registry.flags(), None)}

    @app.post("/api/policies/{digest}/promote")
    def promote(digest: str, request: Request, body: dict[str, Any] = Body({})  # noqa: B008
                ) -> dict[str, Any]:
        user = who(request, "promote")
        h = policy_of(digest, "promote", user)
        reason = reason_of(body, "promote", user)
        rec = acting("promote", user, lambda: registry.promote(user, h, reason=reason))
        return {"policy": _policy(rec, registry.flags(), None)}

    @app.post("/api/policies/{digest}/request")
    def request_live(digest: str, request: Request, body: dict[str, Any] = Body({})  # noqa: B008
                     ) -> dict[str, Any]:
        user = who(request, "request")
        h = policy_of(digest, "request", user)
        target = field(body, "target", "live", "request", user)
        reason = reason_of(body, "request", user)
        req = acting("request", user, lambda: registry.request(user, h, target, reason=reason))
        return {"request": _request(req)}

    @app.post("/api/policies/{digest}/approve")
    def approve(digest: str, request: Request, body: dict[str, Any] = Body({})  # noqa: B008
                ) -> dict[str, Any]:
        user = who(request, "approve")
        h = policy_of(digest, "approve", user)
        target = field(body, "target", "live", "approve", user)
        reason = reason_of(body, "approve", user)
        done = acting("approve", user, lambda: registry.approve(user, h, target, reason=reason))
        return {"request": _request(done.request), "promoted": done.promoted,
                "retired": done.retired, "state": registry.get(h).state}

    @app.post("/api/policies/{digest}/quarantine")
    def quarantine(digest: str, request: Request, body: dict[str, Any] = Body({})  # noqa: B008
                   ) -> dict[str, Any]:
        user = who(request, "quarantine")
        h = policy_of(digest, "quarantine", user)
        reason = reason_of(body, "quarantine", user)
        rec = acting("quarantine", user, lambda: registry.quarantine(user, h, reason=reason))
        return {"policy": _policy(rec, registry.flags(), None)}

    @app.post("/api/policies/{digest}/release")
    def release(digest: str, request: Request, body: dict[str, Any] = Body({})  # noqa: B008
                ) -> dict[str, Any]:
        user = who(request, "release")
        h = policy_of(digest, "release", user)
        reason = reason_of(body, "release", user)
        rec = acting("release", user, lambda: registry.release(user, h, reason=reason))
        return {"policy": _policy(rec, registry.flags(), None)}

    @app.post("/api/rollback")
    def rollback(request: Request, body: dict[str, Any] = Body({})  # noqa: B008
                 ) -> dict[str, Any]:
        user = who(request, "rollback")
        scope = field(body, "scope", ALL_SCOPES, "rollback", user)
        reason = reason_of(body, "rollback", user)
        out, back = acting("rollback", user,
                           lambda: registry.rollback(user, scope, reason=reason))
        return {"quarantined": out, "reinstated": back}

    @app.post("/api/flags")
    def set_flag(request: Request, body: dict[str, Any] = Body(...)  # noqa: B008
                 ) -> dict[str, Any]:
        fallback = body.get("fallback")
        if not isinstance(fallback, bool):
            raise ApiError(422, f"field 'fallback' = {fallback!r} must be true (to the "
                           "fallback) or false (back to the policies)", "flag")
        action = "flag" if fallback else "unflag"
        user = who(request, action)
        target = field(body, "target", ALL_POLICIES, action, user)
        if target != ALL_POLICIES:
            target = policy_of(target, action, user)
        reason = reason_of(body, action, user)
        acting(action, user, lambda: registry.set_flag(user, target, fallback, reason=reason))
        return {"flags": registry.flags()}

    @app.get("/api/users")
    def list_users(request: Request) -> dict[str, Any]:
        who(request, "users")
        return {"users": [{"name": u.name, "role": u.role, "active": u.active}
                          for u in registry.users()]}

    @app.post("/api/users", status_code=201)
    def add_user(request: Request, body: dict[str, Any] = Body(...)  # noqa: B008
                 ) -> dict[str, Any]:
        user = who(request, "users")
        name = field(body, "name", None, "users", user)
        role = field(body, "role", None, "users", user)
        token = acting("users", user, lambda: registry.add_user(user, name, role))
        return {"name": name, "role": role, "token": token}

    # -- the console ------------------------------------------------------------------------
    app.mount("/", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
    return app


#: route -> the action it checks (the access tests walk this table)
ROUTE_ACTIONS: dict[tuple[str, str], str] = {
    ("GET", "/api/me"): "view", ("GET", "/api/orders"): "view", ("GET", "/api/tape"): "view",
    ("GET", "/api/stream"): "view", ("GET", "/api/analytics"): "view",
    ("GET", "/api/policies"): "view", ("GET", "/api/requests"): "view",
    ("GET", "/api/events"): "view", ("GET", "/api/flags"): "view",
    ("POST", "/api/orders"): ORDER_ACTION, ("POST", "/api/policies"): "register",
    ("POST", "/api/policies/{digest}/promote"): "promote",
    ("POST", "/api/policies/{digest}/request"): "request",
    ("POST", "/api/policies/{digest}/approve"): "approve",
    ("POST", "/api/policies/{digest}/quarantine"): "quarantine",
    ("POST", "/api/policies/{digest}/release"): "release",
    ("POST", "/api/rollback"): "rollback",
    ("POST", "/api/flags"): "flag / unflag (by 'fallback')",
    ("GET", "/api/users"): "users", ("POST", "/api/users"): "users",
}


def _me(user: User) -> dict[str, Any]:
    return {"user": user.name, "role": user.role,
            "permissions": sorted(API_PERMISSIONS.get(user.role, frozenset()))}


def _request(r: Any) -> dict[str, Any]:
    return {"request_id": r.request_id, "policy_hash": r.policy_hash, "target": r.target,
            "requested_by": r.requested_by, "requested_at": r.requested_at,
            "status": r.status, "approvers": list(r.approvers)}


def _policy(p: Any, flags: dict[str, bool], open_request: Any) -> dict[str, Any]:
    ev = p.evaluation or {}
    cmp = next((c for c in ev.get("comparisons") or [] if c.get("baseline") == "twap"), None)
    return {
        "policy_hash": p.policy_hash, "short": p.short, "scope": p.scope, "state": p.state,
        "name": p.name, "algo": p.algo, "registered_by": p.registered_by,
        "registered_at": p.registered_at,
        "flagged": bool(flags.get(p.policy_hash, False)),
        "fallback": bool(flags.get(p.policy_hash, False) or flags.get(ALL_POLICIES, False)),
        "vs_twap_bps": None if cmp is None else _finite(cmp.get("diff_bps_mean")),
        "vs_twap_ci95": None if cmp is None else cmp.get("ci95"),
        "request": None if open_request is None else _request(open_request),
    }


__all__ = ["API_ACTIONS", "API_PERMISSIONS", "ORDER_ACTION", "ORDER_ROLES", "ROUTE_ACTIONS",
           "ApiError", "Sessions", "Tape", "create_app", "require_api"]
