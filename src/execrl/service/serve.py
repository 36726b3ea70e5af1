"""``execrl serve``: parent orders from ``STREAM_ORDERS`` through the ``Executor``, child orders
and fills to ``STREAM_FILLS``, in lockstep with the market on ``STREAM_MARKET``.

Design (micro-batches: the desk's live orders that can share a batch run as one
``Executor.run_orders``, one policy call per market step for the whole batch; one thread per
batch, up to ``concurrency`` orders in flight):

- **Warm-up.** Before the first entry is read, one probe order (the market's default order)
  runs through the configured executor on the configured venue in the process
  (``Server.warm_up``): the compiled kernels of the policy, the watchdog and the market are
  loaded then, not inside the first orders' first decisions, whose latency the watchdog caps.
- **Edge.** Each entry of the consumer group is validated by ``ParentOrder.from_json``; a bad
  one is answered on ``STREAM_FILLS`` (``kind: error``, the one-line message naming the field)
  and acknowledged, and nothing trades. An order id seen before under another entry is
  refused the same way (``order_id`` ... already taken): an order trades once. An order its
  market or executor refuses (``ExecRLError`` while building it) is answered the same way.
- **Routes.** Where an order's executor is built (``Server.executor_for``) its route is decided
  (``service.hooks.ServeHooks.route``: the registry's live policy, the canary for its share
  of the flow, or the fallback schedule when a flag is set; the configured policy without a
  registry) and fixed at its first attempt (``hooks.STATE_ROUTE``), so a restart re-runs it
  on the same policy.
- **Batches.** Orders are keyed by what a batch must share (``Executor.batch_key``: symbol,
  side, horizon, market and arrival price, constraints, the size for a per-size policy; the
  executor's policy and safety settings; and the route with its policy hash: canary, live
  and fallback orders never share a batch). Orders that arrive while a batch forms (within
  ``batch_window_ms`` of the first, or as many as ``concurrency`` leaves room for) and share
  a key run as one batch of at most ``max_batch``; different keys run as separate batches.
- **Venues** (``ServeConfig.venue``, ``execrl serve --venue``). ``paper``: order i of a batch
  trades on its own simulated path (seed: a hash of its id, ``order_seed``), exactly as it
  would alone, against ``executor.venues.PaperBroker`` with the backtest's fill and queue
  models; the market stream only paces it. ``stream``: the batch's orders fill against the
  ``STREAM_MARKET`` entries themselves (``service.paper.StreamFeed``: the backtest's AC or
  replay kernels on the streamed moves or book), step k of every member on the batch's k-th
  entry of its symbol after the batch's start cursor. A market entry the paper market cannot
  fill on (``service.paper.MarketDataError``: missing field, another model or step length)
  stops that batch only: each of its pending orders is answered ``kind: error`` naming the
  step and the reason, recorded done and acknowledged; the server runs on.
- **Lockstep.** Before each decision the batch waits for the next ``STREAM_MARKET`` entry of
  its symbol (``Executor.run_orders``' ``on_obs`` hook; on the stream venue, the entry the
  step fills against), so the market stream is the run's clock: one decision per market
  step, backlog served in order. The market entry that released each decision is named in
  its messages (``market_id``, ``market_ts_ns``).
- **Output, exactly once.** After each step an observer collects the step's child orders
  (seed 001 §9.1 commands, ``executor.venues.child_commands``), fills and decision traces of
  every order of the batch (each trace: action, remaining, mid, ``confidence`` = the largest
  action probability where the policy has them, ``acting`` = the watchdog's state,
  ``latency_ms`` = the batch's policy call, ``policy`` / ``policy_hash``), and writes them in
  one atomic Redis script (``streams.publish_batch_step``) together with the batch's progress
  (steps done, the market cursor) and each order's. Ids are ``parent id:child id``.
- **Done.** Each order's ``done`` record (IS, fills, ``return``, route, ``policy``,
  ``policy_hash``, batch) is written once (``BatchRun.publish_done``) after the on-done hook
  (``ServeHooks.done``: the SQL summary row, the shadow A/B pair, the canary's gates, the
  metrics with the order's decision latencies, one per step it ran), so every done record on
  the stream has its row; only then is its entry acknowledged (``XACK`` after the durable
  record: the server should run with AOF on). Queue lag goes to
  ``exec_queue_lag_seconds{stream}`` (``orders``: the oldest entry's age when batches launch;
  ``market``: entry written -> a batch took it).
- **Recovery.** A batch's run is deterministic given its members, their seeds and (stream
  venue) its entries (the watchdog's drift trigger pools decisions over the batch, so
  membership matters): the membership is on record (``STATE_BATCH``, written with each
  member's ``STATE_OWNER`` entry before the batch's first step), and a restarted service
  re-forms the same batch from it, on the routes on record, and re-runs it from the start:
  steps on record are recomputed without writing (the paper venue without waiting; the
  stream venue re-reads their entries from the batch's start cursor); from the first step
  not on record it waits on the market again. Members done before the restart re-run
  silently and are not written again; on restart the service first re-reads its own pending
  entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from execrl.domain import ConfigError, ExecRLError, OrderValidationError, ParentOrder
from execrl.domain.limits import MAX_SEED
from execrl.executor.config import ExecutorConfig
from execrl.service.canary import CanaryConfig
from execrl.service.streams import (
    CHAN_ANALYST,
    CHAN_EXEC_AGENT,
    STATE_BATCH_PROGRESS,
    STATE_DONE,
    STREAM_FILLS,
    STREAM_MARKET,
    STREAM_ORDERS,
    STREAM_RESEARCH,
    child_message_id,
    decode,
    decode_order,
    order_error,
    publish_batch_step,
    publish_once,
)
from execrl.sim.spec import MarketSpec

#: parent id -> {"entry_id", "market_id", "batch"}: which STREAM_ORDERS entry owns the order
#: id, the market cursor the order started from and its batch
STATE_OWNER = "execrl:serve:owner"
#: batch id -> {"market_id", "members": [{"entry_id", "order"}]}: a batch's membership, so a
#: restart re-forms exactly that batch
STATE_BATCH = "execrl:serve:batch"
#: where the paper fills come from (``ServeConfig.venue``)
SERVE_VENUES = ("paper", "stream")


class Stopped(Exception):
    """The service is shutting down; the order stays pending and resumes on restart."""


@dataclass
class ServeConfig:
    """How the service runs: the market its paper venue simulates, the executor configuration
    (policy, risk limits, watchdog), the consumer group and this consumer's name (a restarted
    service must keep its name to find its pending orders), orders at once, how long a batch
    forms after its first order arrives and its largest size, and ``max_orders`` (stop once
    that many entries are answered; None: run until stopped)."""

    market: MarketSpec
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    group: str = "execrl-serve"
    consumer: str = "serve-1"
    concurrency: int = 8
    block_ms: int = 200
    lockstep: bool = True
    claim_idle_ms: int = 60_000
    max_orders: int | None = None
    batch_window_ms: int = 50
    max_batch: int = 256
    #: where the paper fills come from: ``paper`` (each order's own simulated path, seed
    #: ``order_seed``) or ``stream`` (the STREAM_MARKET entries, ``service.paper``)
    venue: str = "paper"
    #: the per-order SQL summary (service.summary; None: none), the policy registry that
    #: routes orders (service.registry; None: the configured policy, route "live"), the
    #: canary's share and gates, and the shadow candidate's A/B runs (service.hooks)
    summary_url: str | None = None
    registry_url: str | None = None
    canary: CanaryConfig = field(default_factory=CanaryConfig)
    shadow: bool = True

    def check(self) -> None:
        """What can be refused before any server is reached: the venue, and the market the
        stream venue can fill on (one line naming the value)."""
        if self.venue not in SERVE_VENUES:
            raise ConfigError(f"venue = {self.venue!r} is not one of {', '.join(SERVE_VENUES)}")
        if self.venue == "stream":
            check_stream_market(self.market)


def check_stream_market(market: MarketSpec) -> None:
    """The stream venue fills against Almgren–Chriss or replay entries (``service.paper``):
    another market is refused at start, naming it."""
    from execrl.service.paper import PAPER_MODELS

    model = getattr(market, "model", None)
    if model not in PAPER_MODELS:
        raise ConfigError(
            f"venue = 'stream' fills against {', '.join(PAPER_MODELS)} market data, not "
            f"{model!r}: an order book's flow reacts to our orders, which a tape cannot "
            "replay (feed its tape as a replay instead)")


def order_seed(order_id: str) -> int:
    """The order's market path: a stable hash of its id (the same after a restart)."""
    return zlib.crc32(order_id.encode("utf-8")) % (MAX_SEED + 1)


class _StepWriter:
    """The batch's observer: after each step, its messages written once (module docstring)."""

    def __init__(self, run: BatchRun, core: Any):
        self.run, self.core = run, core
        self._sent = 0  # commands of the venue's wire already turned into messages
        self._actions: Any = None
        self._active: Any = None
        self._decision: Any = None  # executor.loop.Decision of the step
        self.k = 0  # the batch's steps done
        #: a running hash of the commands and fills of every step so far: a re-run after a
        #: restart checks that it reproduces the record (a timing-dependent watchdog trigger
        #: could make it differ; ids still keep every child order unique)
        self.digest = ""

    def decided(self, decision: Any) -> None:
        self._decision = decision

    def before(self, actions: Any, obs: Any = None) -> None:
        self._actions = actions
        self._active = np.flatnonzero(~self.core.done)

    def after(self) -> None:
        from execrl.executor.venues import sent_commands

        run, core = self.run, self.core
        self.k += 1
        k = self.k
        wire = sent_commands(core.market)
        new, self._sent = wire[self._sent:], len(wire)
        fill = core.last_fills
        rows = self._active
        fill_qty = fill.qty[rows].tolist()
        self.digest = hashlib.sha1(
            (self.digest + json.dumps(new, sort_keys=True) + f"|{fill_qty}").encode()
        ).hexdigest()
        if k <= run.recorded:  # re-run after a restart: this step is on record already
            if k == run.recorded and self.digest != run.recorded_digest:
                run.diverged = True
                run.server.log(f"serve: batch {run.batch_id} re-run differs from its record at "
                               f"step {k - 1}: later child orders follow the re-run")
            return
        ev_id, ev = run.event if run.event is not None else (None, {})
        market = {"market_id": ev_id, "market_ts_ns": ev.get("ts_ns")}
        ids = run.ids
        by_parent: dict[str, list[dict[str, Any]]] = {}
        for c in new:
            by_parent.setdefault(c["parent_id"], []).append(c)
        steps = (core.k[rows] - 1).tolist()
        remaining = core.remaining[rows].tolist()
        mids = core.market.mid[rows].tolist()
        filled = core.stats.filled[rows].tolist()
        px = fill.avg_px[rows].tolist()
        actions = np.asarray(self._actions)
        actions = actions.reshape(actions.shape[0], -1)[rows].tolist()
        d = self._decision
        confidence: list[Any] = ([None] * len(rows) if d is None or d.probs is None
                                 else np.asarray(d.probs)[rows].max(axis=1).tolist())
        acting: list[Any] = ([None] * len(rows) if d is None or d.acting is None
                             else d.acting[rows].tolist())
        latency_ms = None if d is None else d.latency_s * 1e3
        policy = run.route_fields
        messages: list[tuple[str, dict[str, Any]]] = []
        members: dict[str, dict[str, Any]] = {}
        logs = []
        for j, i in enumerate(rows.tolist()):
            parent, step = ids[i], steps[j]
            mine = by_parent.get(parent, ())
            for c in mine:
                mid = (f"{parent}:cancel:{step}" if c["type"] == "cancel"
                       else child_message_id(parent, c["child_id"]))
                kind = "cancel" if c["type"] == "cancel" else "child"
                messages.append((STREAM_FILLS, {"kind": kind, "id": mid, **c, "step": step,
                                                **market}))
            qty = fill_qty[j]
            if qty > 0:
                messages.append((STREAM_FILLS, {
                    "kind": "fill", "id": f"{parent}:fill:{step}", "parent_id": parent,
                    "step": step, "qty": qty, "px": px[j], **market}))
            messages.append((STREAM_RESEARCH, {
                "kind": "decision", "id": f"{parent}:decision:{step}", "parent_id": parent,
                "step": step, "action": actions[j], "remaining": remaining[j],
                "mid": mids[j], "market_mid": ev.get("mid"), "filled": filled[j], **market,
                "confidence": confidence[j], "acting": acting[j], "latency_ms": latency_ms,
                "policy": policy.get("policy"), "policy_hash": policy.get("policy_hash"),
            }))
            members[parent] = {"step": step + 1, "market_id": ev_id, "batch": run.batch_id}
            sent = sum(c.get("qty", 0) for c in mine)
            logs.append((parent, step, sent, len(mine), qty, remaining[j], filled[j], mids[j]))
        now = time.time_ns()
        for _, m in messages:
            m["ts_ns"] = now
        written = publish_batch_step(
            run.client, run.batch_id, k,
            {"step": k, "market_id": ev_id, "digest": self.digest}, members, messages)
        if written:
            pipe = run.client.pipeline(transaction=False)
            for parent, step, sent, n_cmd, qty, left, done, mid in logs:
                pipe.publish(CHAN_ANALYST, json.dumps({
                    "parent_id": parent, "step": step, "remaining": left, "filled": done,
                    "mid": mid, "market_id": ev_id}))
                pipe.publish(CHAN_EXEC_AGENT, f"{parent} step {step}: sent {sent:,} in "
                             f"{n_cmd} command(s), filled {qty:,}, {left:,} to go")
            pipe.execute()


class _Clock:
    """The batch's last observer: each step's decision latency, from the market entry that
    released it (``BatchRun.wait_market``) to the end of its step, its messages written (the
    step writer runs first). One latency per step for the whole batch; each order's are the
    steps it was running (``BatchRun.latencies``). Steps a re-run recomputes from the record
    are not decisions taken now and are not timed."""

    def __init__(self, run: BatchRun):
        self.run = run

    def before(self, actions: Any, obs: Any = None) -> None:
        pass

    def after(self) -> None:
        run = self.run
        if run.k > run.recorded and run.t0 is not None:
            run.step_ms[run.k - 1] = (time.perf_counter() - run.t0) * 1e3


@dataclass
class Member:
    """One parent order of a batch: the order, its STREAM_ORDERS entry, whether this
    service holds the entry pending (to acknowledge it when done), its route
    (``hooks.OrderRoute``: policy, latencies) and its batch's steps on record (what
    ``ServeHooks.route`` reads of a run)."""

    order: ParentOrder
    entry_id: str
    pending: bool = True
    route: Any = None
    recorded: int = 0
    #: stream venue: a fresh venue replaying the batch's entries, for the on-done hook's
    #: counterfactual runs (shadow candidate, canary baseline); None: the order's path
    counterfactual_venue: Any = None


class BatchRun:
    """Parent orders that share a batch key through one ``Executor.run_orders``, its progress
    on record in Redis (module docstring)."""

    def __init__(self, server: Server, batch_id: str, members: list[Member], executor: Any,
                 start_cursor: str):
        self.server, self.batch_id, self.members = server, batch_id, members
        self.executor = executor
        self.client = server.client
        self.ids = [m.order.order_id for m in members]
        self.symbol = members[0].order.symbol
        raw = self.client.hget(STATE_BATCH_PROGRESS, batch_id)
        progress = json.loads(raw) if raw else {}
        #: the batch's steps already on record (a re-run recomputes them silently)
        self.recorded = int(progress.get("step", 0))
        #: the stream venue: the batch's market entries from its start (every member meets
        #: them, step k on entry k); a re-run re-reads the recorded steps' entries from the
        #: start cursor. The paper venue: only the cursor matters (recorded steps draw their
        #: paths again)
        self.stream = server.config.venue == "stream"
        self.entries: list[tuple[str, dict[str, Any]]] = []
        self._taken: dict[int, int] = {}
        self.cursor = (start_cursor if self.stream
                       else progress.get("market_id") or start_cursor)
        self.recorded_digest = progress.get("digest", "")
        self.diverged = False
        self.k = 0
        self.event: tuple[str, dict[str, Any]] | None = None
        for m in members:
            m.recorded = self.recorded
        #: what the batch's traces say of its route (its members share it: ``batch_key``)
        route = members[0].route
        self.route_fields: dict[str, Any] = route.fields() if route is not None else {}
        self.t0: float | None = None  # when the market entry of the step was released
        self.step_ms: dict[int, float] = {}  # step -> its decision latency (``_Clock``)

    def record(self) -> None:
        """The batch's membership on record (with each member's owner entry), before its
        first step: a restart re-forms exactly this batch."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(STATE_BATCH, self.batch_id, json.dumps({
            "market_id": self.cursor,
            "members": [{"entry_id": m.entry_id, "order": m.order.to_wire()}
                        for m in self.members],
        }))
        for m in self.members:
            pipe.hset(STATE_OWNER, m.order.order_id, json.dumps({
                "entry_id": m.entry_id, "market_id": self.cursor, "batch": self.batch_id}))
        pipe.execute()

    def wait_market(self, _obs: Any) -> None:
        """Before each decision: the next market entry of the batch's symbol (lockstep); on
        the stream venue, the entry the step fills against (read here, so the decision is
        released by it, as on the paper venue; the paper market takes it from ``entries``)."""
        k, self.k = self.k, self.k + 1
        if self.stream:
            while len(self.entries) <= k:
                self.entries.append(self._next_entry())
            self.event = self.entries[k]
        elif k >= self.recorded and self.server.config.lockstep:
            self.event = self._next_entry()
        if k >= self.recorded and self.event is not None:
            self._lag(self.event[1])
        self.t0 = time.perf_counter()

    def _next_entry(self) -> tuple[str, dict[str, Any]]:
        """The next ``STREAM_MARKET`` entry of the batch's symbol after the cursor (blocking
        until one comes or the service stops)."""
        stop = self.server.stopping
        while not stop.is_set():
            got = self.client.xread({STREAM_MARKET: self.cursor}, count=16,
                                    block=self.server.config.block_ms)
            for _, entries in got or ():
                for entry_id, fields in entries:
                    self.cursor = entry_id
                    event = decode(fields)
                    if event.get("symbol") == self.symbol:
                        return entry_id, event
        raise Stopped

    def _source(self, env: int) -> dict[str, Any]:
        """The stream venue's source (``service.paper.StreamFeed``): order ``env``'s next
        entry, the batch's entry of that step."""
        n = self._taken.get(env, 0)
        self._taken[env] = n + 1
        while len(self.entries) <= n:
            self.entries.append(self._next_entry())
        return self.entries[n][1]

    def _replay_venue(self) -> Any:
        """A stream venue over the batch's entries from its first (then on from the stream,
        as a longer-running order would have met them): the counterfactual runs' market."""
        from execrl.service.paper import StreamFeed

        taken = [0]

        def source(_env: int) -> dict[str, Any]:
            n, taken[0] = taken[0], taken[0] + 1
            while len(self.entries) <= n:
                self.entries.append(self._next_entry())
            return self.entries[n][1]

        return StreamFeed(symbol=self.symbol, source=source)

    def _lag(self, event: dict[str, Any]) -> None:
        """The market stream's queue lag: entry written -> the batch took it."""
        ts = event.get("ts_ns")
        if isinstance(ts, int) and not isinstance(ts, bool):
            self.server.hooks.metrics.set_queue_lag(max(0.0, (time.time_ns() - ts) / 1e9),
                                                    stream="market")

    def latencies(self, steps: int) -> list[float]:
        """An order's decision latencies: the batch's steps it ran, timed now (``_Clock``)."""
        return [self.step_ms[k] for k in range(steps) if k in self.step_ms]

    def execute(self) -> list[dict[str, Any]]:
        orders = [m.order for m in self.members]
        venue: Any = "paper"
        if self.stream:
            from execrl.service.paper import StreamFeed

            venue = StreamFeed(symbol=self.symbol, source=self._source)
        run = self.executor.run_orders(
            orders, [order_seed(o.order_id) for o in orders], venue=venue,
            on_obs=self.wait_market,
            make_observers=lambda core: [_StepWriter(self, core), _Clock(self)])
        filled = run.extras["core"].stats.filled
        returns = run.episodes["return"].to_numpy(dtype=float)  # the episode's reward
        out = []
        for i, (m, e) in enumerate(zip(self.members, run.episodes.itertuples(), strict=True)):
            if not m.pending:  # done before a restart: its record stands
                continue
            o = m.order
            parent = o.order_id
            done = {
                "kind": "done", "id": f"{parent}:done", "parent_id": parent,
                "entry_id": m.entry_id, "symbol": o.symbol, "side": o.side.value,
                "qty": int(o.qty), "filled": int(filled[i]),
                "is_bps": float(e.is_bps), "fill_rate": float(e.fill_rate),
                "child_orders": int(e.child_orders), "fills": int(e.fills),
                "residual_shares": int(e.residual_shares), "steps": int(e.steps),
                "finished_by": str(getattr(e, "finished_by", "policy")),
                "return": float(returns[i]),
                "batch": self.batch_id, "batch_size": len(self.members),
                "resumed_at_step": self.recorded, "replay_diverged": self.diverged,
                **(m.route.fields() if m.route is not None else {}), "ts_ns": time.time_ns(),
            }
            self.publish_done(m, done, run.order(i))
            out.append(done)
        return out

    def publish_done(self, member: Member, done: dict[str, Any], run: Any) -> None:
        """An order's done record, once (the one place it is written; ``run``: the order's
        own ``ExecutionRun``, ``ExecutionRun.order``), then its entry is acknowledged. The
        on-done hook (summary row, shadow A/B, canary gates, metrics) runs first: every done
        record on the stream has its SQL row."""
        route = member.route
        if route is not None:
            route.latencies_ms = self.latencies(int(done["steps"]))
            if self.stream:
                member.counterfactual_venue = self._replay_venue
            self.server.hooks.done(member, route, run, done)
        publish_once(self.client, done, done_parent=member.order.order_id)
        self.server.ack(member.entry_id)


def _key_text(key: tuple[Any, ...]) -> str:
    return json.dumps(key, sort_keys=True, default=str)


class Server:
    """The consumer-group loop (module docstring)."""

    def __init__(self, client: Any, config: ServeConfig, log: Any = None):
        self.client = client
        self.config = config
        self.stopping = threading.Event()
        self.answered = 0
        self._threads: dict[str, tuple[threading.Thread, int]] = {}  # batch id -> run, orders
        #: batches forming: key -> (members, executor); since when the first is waiting
        self._forming: dict[str, tuple[list[Member], Any]] = {}
        self._forming_since = 0.0
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self.log = log if log is not None else (lambda text: print(text, file=sys.stderr,
                                                                   flush=True))
        from execrl.service.hooks import ServeHooks

        config.check()
        self.hooks = ServeHooks(client, config, self.log)

    # -- the group -------------------------------------------------------------------------
    def ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(STREAM_ORDERS, self.config.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def ack(self, entry_id: str) -> None:
        if self.client.xack(STREAM_ORDERS, self.config.group, entry_id):
            with self._lock:
                self.answered += 1

    def _market_cursor(self) -> str:
        last = self.client.xrevrange(STREAM_MARKET, count=1)
        return last[0][0] if last else "0-0"

    # -- one entry --------------------------------------------------------------------------
    def executor_for(self, member: Member) -> Any:
        """The executor an order runs under (its policy, limits and watchdog): where the
        order's route is decided (``ServeHooks.route``: live / canary / fallback, fixed at the
        order's first attempt in ``hooks.STATE_ROUTE``, so a restart re-forms the same batch
        on the same policy; set on ``member.route``). Orders batch only with orders of an
        equal ``batch_key``."""
        from execrl.executor_cli import build_executor

        cfg = self.config
        member.route = self.hooks.route(member)
        return build_executor(member.route.executor, cfg.market, member.order, mode="paper")

    def batch_key(self, executor: Any, member: Member) -> str:
        """What an order's batch mates must share: the executor's ``batch_key``, its policy
        and safety settings, and the order's route (canary, live and fallback orders never
        share a batch)."""
        from execrl.executor.loop import policy_hash

        order = member.order
        policy = executor.policy_for(order)
        sf = executor.safety
        route = member.route.route if member.route is not None else None
        return _key_text((
            executor.batch_key(order), policy_hash(policy), policy.name,
            None if sf.limits is None else sf.limits.model_dump_json(),
            None if sf.watchdog is None else sf.watchdog.model_dump_json(),
            executor.meta_extra,
            None if route is None else (route.route, route.policy_hash),
        ))

    def handle(self, entry_id: str, fields: dict[str, Any]) -> None:
        """An entry: refused, already done, a member of a batch on record (re-formed), or a
        new order that joins a batch forming."""
        client = self.client
        try:
            order = decode_order(fields)
        except OrderValidationError as exc:
            publish_once(client, order_error(entry_id, fields, str(exc)))
            self.log(f"serve: entry {entry_id} refused: {exc}")
            self.ack(entry_id)
            return
        parent = order.order_id
        claim = json.dumps({"entry_id": entry_id, "market_id": self._market_cursor()})
        client.hsetnx(STATE_OWNER, parent, claim)
        owner = json.loads(client.hget(STATE_OWNER, parent))
        if owner["entry_id"] != entry_id:
            msg = (f"order field 'order_id' = {parent!r} is already taken by entry "
                   f"{owner['entry_id']}: an order id trades once")
            publish_once(client, order_error(entry_id, fields, msg))
            self.ack(entry_id)
            return
        if client.hexists(STATE_DONE, parent):
            self.ack(entry_id)  # done before a restart, not yet acknowledged
            return
        batch_id = owner.get("batch")
        if batch_id is not None and client.hexists(STATE_BATCH, batch_id):
            self._resume(batch_id)
            return
        member = Member(order, entry_id)
        try:
            executor = self.executor_for(member)
            key = self.batch_key(executor, member)
        except ExecRLError as exc:  # the order cannot run on this market: nothing traded
            self._refuse(order, entry_id, exc)
            return
        if not self._forming:
            self._forming_since = time.monotonic()
        members, _ = self._forming.setdefault(key, ([], executor))
        members.append(member)

    def _refuse(self, order: ParentOrder, entry_id: str, exc: Exception) -> None:
        parent = order.order_id
        publish_once(self.client, {**order_error(entry_id, {}, str(exc)), "order_id": parent},
                     done_parent=parent)
        self.log(f"serve: order {parent} refused: {exc}")
        self.ack(entry_id)

    def _fail(self, run: BatchRun, exc: Exception) -> None:
        """A batch the stream venue cannot fill on (``service.paper.MarketDataError``: a
        missing, foreign or malformed market entry) stops at that step; each of its pending
        orders is answered ``kind: error`` naming the step and the reason, recorded as done
        (what was sent before stands; nothing more is sent) and acknowledged. The server and
        the other batches run on. A restart re-runs the batch to the same error and writes
        nothing twice (the record's id is the order's)."""
        step = max(run.k - 1, 0)
        for m in run.members:
            if not m.pending:
                continue
            parent = m.order.order_id
            publish_once(self.client, {
                "kind": "error", "id": f"{parent}:error", "entry_id": m.entry_id,
                "order_id": parent, "parent_id": parent, "step": step, "batch": run.batch_id,
                "error": f"error: order {parent} stopped at step {step}: {exc}",
                "ts_ns": time.time_ns()}, done_parent=parent)
            self.log(f"serve: order {parent} stopped at step {step}: {exc}")
            self.ack(m.entry_id)

    def _resume(self, batch_id: str) -> None:
        """Re-form a batch on record (a restart), once: every member, the orders already done
        included (they re-run silently: the batch's decisions depend on its members)."""
        with self._lock:
            if batch_id in self._threads:
                return
        record = json.loads(self.client.hget(STATE_BATCH, batch_id))
        progress = json.loads(self.client.hget(STATE_BATCH_PROGRESS, batch_id) or "{}")
        members = []
        for m in record["members"]:
            order = ParentOrder.from_dict(m["order"])
            members.append(Member(order, m["entry_id"],
                                  pending=not self.client.hexists(STATE_DONE, order.order_id),
                                  recorded=int(progress.get("step", 0))))
        executor = self.executor_for(members[0])  # the routes on record (STATE_ROUTE)
        for m in members[1:]:
            m.route = self.hooks.route(m)
        self._start(BatchRun(self, batch_id, members, executor, record["market_id"]),
                    new=False)

    def launch(self) -> None:
        """Start every batch forming (each key's orders, in batches of ``max_batch``)."""
        forming, self._forming = self._forming, {}
        if not forming:
            return
        cursor = self._market_cursor()
        size = self.config.max_batch
        now_ms = time.time() * 1e3
        oldest = min(int(m.entry_id.partition("-")[0]) for ms, _ in forming.values() for m in ms)
        self.hooks.metrics.set_queue_lag(max(0.0, (now_ms - oldest) / 1e3), stream="orders")
        for members, executor in forming.values():
            for lo in range(0, len(members), size):
                part = members[lo:lo + size]
                batch_id = f"batch:{part[0].entry_id}"
                self._start(BatchRun(self, batch_id, part, executor, cursor), new=True)

    def _start(self, run: BatchRun, new: bool) -> None:
        if new:
            run.record()
        thread = threading.Thread(target=self._run, args=(run,), name=run.batch_id, daemon=True)
        with self._lock:
            self._threads[run.batch_id] = (thread, sum(m.pending for m in run.members))
        thread.start()

    def _run(self, run: BatchRun) -> None:
        from execrl.service.paper import MarketDataError

        try:
            try:
                done = run.execute()
            except MarketDataError as exc:  # the stream venue's data: this batch stops only
                self._fail(run, exc)
            except ExecRLError as exc:  # the batch cannot run on this market: nothing traded
                if run.recorded or run.k:
                    raise
                for m in run.members:
                    if m.pending:
                        self._refuse(m.order, m.entry_id, exc)
            else:
                for d in done:
                    self.log(f"serve: order {d['parent_id']} done: filled {d['filled']:,} of "
                             f"{d['qty']:,}, IS {d['is_bps']:.2f} bps, "
                             f"{d['child_orders']} child orders")
        except Stopped:
            pass
        except BaseException as exc:  # the server stops; the orders stay pending
            with self._lock:
                self._errors.append(exc)
            self.stopping.set()
        finally:
            with self._lock:
                self._threads.pop(run.batch_id, None)

    # -- the loop ---------------------------------------------------------------------------
    def in_flight(self) -> int:
        """Orders running or waiting in a batch that forms."""
        with self._lock:
            running = sum(n for _, n in self._threads.values())
        return running + sum(len(m) for m, _ in self._forming.values())

    def _check(self) -> None:
        with self._lock:
            if self._errors:
                raise self._errors[0]

    def recover(self) -> int:
        """Entries this consumer read but never acknowledged (a restart), and entries another
        consumer left pending longer than ``claim_idle_ms``: handled first."""
        cfg = self.config
        entries: list[tuple[str, dict[str, Any]]] = []
        got = self.client.xreadgroup(cfg.group, cfg.consumer, {STREAM_ORDERS: "0"})
        for _, rows in got or ():
            entries += [(i, f) for i, f in rows if f]
        claimed = self.client.xautoclaim(STREAM_ORDERS, cfg.group, cfg.consumer,
                                         min_idle_time=cfg.claim_idle_ms, start_id="0-0")
        entries += [(i, f) for i, f in claimed[1] if f]
        for entry_id, fields in entries:
            self.handle(entry_id, fields)
        self.launch()
        return len(entries)

    def warm_up(self) -> float | None:
        """One probe order (the market's default order) through the configured executor on
        the configured venue, in this process, before any order is read: nothing is read from
        or written to Redis (the stream venue's entries come from a tape of the market, as
        ``execrl feed`` would publish them). The first call of a compiled kernel in a process
        loads it from numba's cache; otherwise the first orders' first decisions pay that as
        decision latency, which the watchdog caps (0.1 s): measured, the first TWAP decision
        of a fresh server took 8–9 ms, later ones 0.04 ms, and 0.04 ms from the first with
        the warm-up. Returns the seconds it took; None where the probe could not run
        (logged; the first orders then load the kernels). The probe's own warnings (a
        checkpoint trained on another order) are not shown: they are about the probe, not
        an order."""
        from execrl.executor_cli import build_executor

        cfg = self.config
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                probe = cfg.market.default_order().model_copy(
                    update={"order_id": "serve-warm-up"})
                executor = build_executor(cfg.executor, cfg.market, probe, mode="paper")
                venue: Any = "paper"
                if cfg.venue == "stream":
                    from execrl.service.feed import MarketTape
                    from execrl.service.paper import StreamFeed

                    tape, steps = MarketTape(cfg.market, probe, 0), itertools.count()
                    venue = StreamFeed(probe.symbol,
                                       lambda _env: tape.entry(probe.symbol, next(steps)))
                executor.run_orders([probe], [0], venue=venue)
        except Exception as exc:  # the service runs without it
            self.log(f"serve: warm-up skipped ({type(exc).__name__}: {exc}); the first orders "
                     "load the compiled kernels")
            return None
        took = time.perf_counter() - t0
        self.log(f"serve: warmed up in {took:.2f} s (the policy's and the market's compiled "
                 "kernels loaded before the first order)")
        return took

    def serve(self) -> int:
        """Run until stopped (or ``max_orders`` answered); returns the entries answered."""
        cfg = self.config
        self.warm_up()
        self.ensure_group()
        recovered = self.recover()
        if recovered:
            self.log(f"serve: resumed {recovered} pending order(s)")
        window = cfg.batch_window_ms / 1e3
        try:
            while not self.stopping.is_set():
                self._check()
                if cfg.max_orders is not None and self.answered >= cfg.max_orders:
                    break
                free = cfg.concurrency - self.in_flight()
                if self._forming and (free <= 0 or
                                      time.monotonic() - self._forming_since >= window):
                    self.launch()
                    continue
                if free <= 0:
                    time.sleep(0.005)
                    continue
                block = cfg.block_ms
                if self._forming:  # wait no longer than the window forming has left
                    left = window - (time.monotonic() - self._forming_since)
                    block = max(1, min(block, int(left * 1e3)))
                got = self.client.xreadgroup(cfg.group, cfg.consumer, {STREAM_ORDERS: ">"},
                                             count=free, block=block)
                for _, rows in got or ():
                    for entry_id, fields in rows:
                        self.handle(entry_id, fields)
        finally:
            self.stopping.set()
            with self._lock:
                threads = [t for t, _ in self._threads.values()]
            for thread in threads:
                thread.join(timeout=5)
        self._check()
        return self.answered


__all__ = ["SERVE_VENUES", "STATE_BATCH", "STATE_OWNER", "BatchRun", "Member", "ServeConfig",
           "Server", "Stopped", "check_stream_market", "order_seed"]
