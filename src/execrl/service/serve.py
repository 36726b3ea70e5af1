"""``execrl serve``: parent orders from ``STREAM_ORDERS`` through the ``Executor``, child orders
and fills to ``STREAM_FILLS``, in lockstep with the market on ``STREAM_MARKET``.

Design (one parent order, one ``Executor.run`` with ``n_orders=1`` on the paper venue; up to
``concurrency`` orders at once, one thread each):

- **Edge.** Each entry of the consumer group is validated by ``ParentOrder.from_json``; a bad
  one is answered on ``STREAM_FILLS`` (``kind: error``, the one-line message naming the field)
  and acknowledged, and nothing trades. An order id seen before under another entry is
  refused the same way (``order_id`` ... already taken): an order trades once.
- **Lockstep.** Before each decision the run waits for the next ``STREAM_MARKET`` entry of its
  symbol (``Executor.run``'s ``on_obs`` hook), so the market stream is the run's clock: one
  decision per market step, backlog served in order. The fills come from the paper venue
  (``executor.venues.PaperBroker``) against the order's own simulated path (seed: a hash of
  the order id), the same fill and queue models as the backtest; the market entry that
  released each decision is named in its messages (``market_id``, ``market_ts_ns``).
- **Output, exactly once.** After each step an observer collects the step's child orders
  (seed 001 §9.1 commands, ``executor.venues.child_commands``), its fill and its decision
  trace, and writes them in one atomic Redis script (``streams.publish_step``) together with
  the order's progress (steps done, the market cursor). Ids are ``parent id:child id``.
- **Recovery.** The run is deterministic given the order and its seed, so a restarted service
  re-runs an in-flight order from the start: steps on record are recomputed without waiting
  and without writing; from the first step not on record it waits on the market again from the
  recorded cursor. The order's ``done`` record is written once (``streams.publish_once``) and
  only then is the entry acknowledged (``XACK`` after the durable record: the server should run
  with AOF on); on restart the service first re-reads its own pending entries.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from execrl.domain import ExecRLError, OrderValidationError, ParentOrder
from execrl.domain.limits import MAX_SEED
from execrl.executor.config import ExecutorConfig
from execrl.service.canary import CanaryConfig
from execrl.service.streams import (
    CHAN_ANALYST,
    CHAN_EXEC_AGENT,
    STATE_DONE,
    STATE_PROGRESS,
    STREAM_FILLS,
    STREAM_MARKET,
    STREAM_ORDERS,
    STREAM_RESEARCH,
    child_message_id,
    decode,
    decode_order,
    order_error,
    publish_once,
    publish_step,
)
from execrl.sim.spec import MarketSpec

#: parent id -> {"entry_id", "market_id"}: which STREAM_ORDERS entry owns the order id, and
#: the market cursor the order started from
STATE_OWNER = "execrl:serve:owner"


class Stopped(Exception):
    """The service is shutting down; the order stays pending and resumes on restart."""


@dataclass
class ServeConfig:
    """How the service runs: the market its paper venue simulates, the executor configuration
    (policy, risk limits, watchdog), the consumer group and this consumer's name (a restarted
    service must keep its name to find its pending orders), orders at once, and ``max_orders``
    (stop once that many entries are answered; None: run until stopped)."""

    market: MarketSpec
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    group: str = "execrl-serve"
    consumer: str = "serve-1"
    concurrency: int = 8
    block_ms: int = 200
    lockstep: bool = True
    claim_idle_ms: int = 60_000
    max_orders: int | None = None
    #: the per-order SQL summary (service.summary; None: none), the policy registry that
    #: routes orders (service.registry; None: the configured policy, route "live"), the
    #: canary's share and gates, and the shadow candidate's A/B runs (service.hooks)
    summary_url: str | None = None
    registry_url: str | None = None
    canary: CanaryConfig = field(default_factory=CanaryConfig)
    shadow: bool = True


def order_seed(order_id: str) -> int:
    """The order's market path: a stable hash of its id (the same after a restart)."""
    return zlib.crc32(order_id.encode("utf-8")) % (MAX_SEED + 1)


class _StepWriter:
    """The run's observer: after each step, its messages written once (module docstring)."""

    def __init__(self, run: OrderRun, core: Any):
        self.run, self.core = run, core
        self._sent = 0  # commands of the venue's wire already turned into messages
        self._actions: Any = None
        #: a running hash of the commands and fills of every step so far: a re-run after a
        #: restart checks that it reproduces the record (a timing-dependent watchdog trigger
        #: could make it differ; ids still keep every child order unique)
        self.digest = ""

    def before(self, actions: Any, obs: Any = None) -> None:
        self._actions = actions

    def after(self) -> None:
        from execrl.executor.venues import sent_commands

        run, core = self.run, self.core
        k = int(core.k[0])  # steps done, this one included
        wire = sent_commands(core.market)
        new, self._sent = wire[self._sent:], len(wire)
        fill = core.last_fills
        qty = int(fill.qty[0])
        self.digest = hashlib.sha1(
            (self.digest + json.dumps(new, sort_keys=True) + f"|{qty}").encode()).hexdigest()
        if k <= run.recorded:  # re-run after a restart: this step is on record already
            if k == run.recorded and self.digest != run.recorded_digest:
                run.diverged = True
                run.server.log(f"serve: order {run.order.order_id} re-run differs from its "
                               f"record at step {k - 1}: later child orders follow the re-run")
            return
        parent = run.order.order_id
        step = k - 1
        ev_id, ev = run.event if run.event is not None else (None, {})
        market = {"market_id": ev_id, "market_ts_ns": ev.get("ts_ns")}
        messages: list[tuple[str, dict[str, Any]]] = []
        for c in new:
            if c["type"] == "cancel":
                mid = f"{parent}:cancel:{step}"
                messages.append((STREAM_FILLS, {"kind": "cancel", "id": mid, **c, "step": step,
                                                **market}))
            else:
                mid = child_message_id(parent, c["child_id"])
                messages.append((STREAM_FILLS, {"kind": "child", "id": mid, **c, "step": step,
                                                **market}))
        if qty > 0:
            messages.append((STREAM_FILLS, {
                "kind": "fill", "id": f"{parent}:fill:{step}", "parent_id": parent,
                "step": step, "qty": qty, "px": float(fill.avg_px[0]), **market}))
        a = np.asarray(self._actions).reshape(-1)
        trace = {
            "kind": "decision", "id": f"{parent}:decision:{step}", "parent_id": parent,
            "step": step, "action": a.tolist(), "remaining": int(core.remaining[0]),
            "mid": float(core.market.mid[0]), "market_mid": ev.get("mid"),
            "filled": int(core.stats.filled[0]), **market,
        }
        messages.append((STREAM_RESEARCH, trace))
        now = time.time_ns()
        for _, m in messages:
            m["ts_ns"] = now
        written = publish_step(run.client, parent, k,
                               {"step": k, "market_id": ev_id, "digest": self.digest}, messages)
        if written:
            client = run.client
            client.publish(CHAN_ANALYST, json.dumps({
                "parent_id": parent, "step": step, "remaining": trace["remaining"],
                "filled": trace["filled"], "mid": trace["mid"], "market_id": ev_id}))
            sent = sum(c.get("qty", 0) for c in new)
            client.publish(CHAN_EXEC_AGENT, f"{parent} step {step}: sent {sent:,} in "
                           f"{len(new)} command(s), filled {qty:,}, "
                           f"{trace['remaining']:,} to go")


class OrderRun:
    """One parent order through the executor, its progress on record in Redis."""

    def __init__(self, server: Server, order: ParentOrder, entry_id: str, start_cursor: str):
        self.server, self.order, self.entry_id = server, order, entry_id
        self.client = server.client
        raw = self.client.hget(STATE_PROGRESS, order.order_id)
        progress = json.loads(raw) if raw else {}
        #: steps already on record (a re-run recomputes them silently)
        self.recorded = int(progress.get("step", 0))
        self.cursor = progress.get("market_id") or start_cursor
        self.recorded_digest = progress.get("digest", "")
        self.diverged = False
        self.k = 0
        self.event: tuple[str, dict[str, Any]] | None = None

    def wait_market(self, _obs: Any) -> None:
        """Before each decision: the next market entry of the order's symbol (lockstep)."""
        k, self.k = self.k, self.k + 1
        if k < self.recorded or not self.server.config.lockstep:
            return
        stop = self.server.stopping
        while not stop.is_set():
            got = self.client.xread({STREAM_MARKET: self.cursor}, count=16,
                                    block=self.server.config.block_ms)
            for _, entries in got or ():
                for entry_id, fields in entries:
                    self.cursor = entry_id
                    event = decode(fields)
                    if event.get("symbol") == self.order.symbol:
                        self.event = (entry_id, event)
                        return
        raise Stopped

    def execute(self) -> dict[str, Any]:
        from execrl.executor_cli import build_executor

        cfg = self.server.config
        route = self.server.hooks.route(self)  # service.hooks: live / canary / fallback
        executor = build_executor(route.executor, cfg.market, self.order, mode="paper")
        run = executor.run(self.order, 1, order_seed(self.order.order_id), venue="paper",
                           on_obs=route.timed(self.wait_market),
                           make_observers=lambda core: [_StepWriter(self, core),
                                                        route.clock(self, core)])
        e = run.episodes.iloc[0]
        parent = self.order.order_id
        done = {
            "kind": "done", "id": f"{parent}:done", "parent_id": parent,
            "entry_id": self.entry_id, "symbol": self.order.symbol,
            "side": self.order.side.value, "qty": int(self.order.qty),
            "filled": int(run.extras["core"].stats.filled[0]),
            "is_bps": float(e["is_bps"]), "fill_rate": float(e["fill_rate"]),
            "child_orders": int(e["child_orders"]), "fills": int(e["fills"]),
            "residual_shares": int(e["residual_shares"]), "steps": int(e["steps"]),
            "finished_by": str(e.get("finished_by", "policy")),
            "resumed_at_step": self.recorded, "replay_diverged": self.diverged,
            **route.fields(), "ts_ns": time.time_ns(),
        }
        self.server.hooks.done(self, route, run, done)  # summary row, A/B, canary, metrics
        publish_once(self.client, done, done_parent=parent)
        return done


class Server:
    """The consumer-group loop (module docstring)."""

    def __init__(self, client: Any, config: ServeConfig, log: Any = None):
        self.client = client
        self.config = config
        self.stopping = threading.Event()
        self.answered = 0
        self._threads: dict[str, threading.Thread] = {}  # parent id -> its run
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self.log = log if log is not None else (lambda text: print(text, file=sys.stderr,
                                                                   flush=True))
        from execrl.service.hooks import ServeHooks

        self.hooks = ServeHooks(client, config, self.log)

    # -- the group -------------------------------------------------------------------------
    def ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(STREAM_ORDERS, self.config.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _ack(self, entry_id: str) -> None:
        self.client.xack(STREAM_ORDERS, self.config.group, entry_id)
        with self._lock:
            self.answered += 1

    def _market_cursor(self) -> str:
        last = self.client.xrevrange(STREAM_MARKET, count=1)
        return last[0][0] if last else "0-0"

    # -- one entry --------------------------------------------------------------------------
    def handle(self, entry_id: str, fields: dict[str, Any]) -> None:
        client = self.client
        try:
            order = decode_order(fields)
        except OrderValidationError as exc:
            publish_once(client, order_error(entry_id, fields, str(exc)))
            self.log(f"serve: entry {entry_id} refused: {exc}")
            self._ack(entry_id)
            return
        parent = order.order_id
        claim = json.dumps({"entry_id": entry_id, "market_id": self._market_cursor()})
        client.hsetnx(STATE_OWNER, parent, claim)
        owner = json.loads(client.hget(STATE_OWNER, parent))
        if owner["entry_id"] != entry_id:
            msg = (f"order field 'order_id' = {parent!r} is already taken by entry "
                   f"{owner['entry_id']}: an order id trades once")
            publish_once(client, order_error(entry_id, fields, msg))
            self._ack(entry_id)
            return
        if client.hexists(STATE_DONE, parent):
            self._ack(entry_id)  # done before a restart, not yet acknowledged
            return
        run = OrderRun(self, order, entry_id, owner["market_id"])
        thread = threading.Thread(target=self._run, args=(run,), name=f"order-{parent}",
                                  daemon=True)
        with self._lock:
            self._threads[parent] = thread
        thread.start()

    def _run(self, run: OrderRun) -> None:
        parent = run.order.order_id
        try:
            try:
                done = run.execute()
            except ExecRLError as exc:  # the order cannot run on this market: nothing traded
                if run.recorded or run.k:
                    raise
                publish_once(self.client, {**order_error(run.entry_id, {}, str(exc)),
                                           "order_id": parent}, done_parent=parent)
                self.log(f"serve: order {parent} refused: {exc}")
            else:
                self.log(f"serve: order {parent} done: filled {done['filled']:,} of "
                         f"{done['qty']:,}, IS {done['is_bps']:.2f} bps, "
                         f"{done['child_orders']} child orders")
            self._ack(run.entry_id)
        except Stopped:
            pass
        except BaseException as exc:  # the server stops; the order stays pending
            with self._lock:
                self._errors.append(exc)
            self.stopping.set()
        finally:
            with self._lock:
                self._threads.pop(parent, None)

    # -- the loop ---------------------------------------------------------------------------
    def in_flight(self) -> int:
        with self._lock:
            return len(self._threads)

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
        return len(entries)

    def serve(self) -> int:
        """Run until stopped (or ``max_orders`` answered); returns the entries answered."""
        cfg = self.config
        self.ensure_group()
        recovered = self.recover()
        if recovered:
            self.log(f"serve: resumed {recovered} pending order(s)")
        try:
            while not self.stopping.is_set():
                self._check()
                if cfg.max_orders is not None and self.answered >= cfg.max_orders:
                    break
                free = cfg.concurrency - self.in_flight()
                if free <= 0:
                    time.sleep(0.005)
                    continue
                got = self.client.xreadgroup(cfg.group, cfg.consumer, {STREAM_ORDERS: ">"},
                                             count=free, block=cfg.block_ms)
                for _, rows in got or ():
                    for entry_id, fields in rows:
                        self.handle(entry_id, fields)
        finally:
            self.stopping.set()
            for thread in list(self._threads.values()):
                thread.join(timeout=5)
        self._check()
        return self.answered


__all__ = ["STATE_OWNER", "OrderRun", "ServeConfig", "Server", "Stopped", "order_seed"]
