"""What ``execrl serve`` does around each parent order besides running it: the route (which
policy runs it: ``service.canary``), and once it is done the per-order SQL summary
(``service.summary``), the shadow candidate's counterfactual IS and its A/B pair
(``service.abtest``), the canary's gates, and the Prometheus metrics (``service.metrics``).

The service calls two hooks (``serve.Server.executor_for`` and ``serve.BatchRun.publish_done``):

- ``ServeHooks.route(member)`` (anything with ``.order`` and ``.recorded``: a batch's
  ``serve.Member``) where the order's executor is built: an ``OrderRoute`` whose ``executor``
  is the executor config to build and whose ``fields`` go in the done record; the route is
  part of the batch key (canary, live and fallback orders never share a batch);
  ``latencies_ms`` are the order's decision latencies (market entry released -> its child
  orders written, timed per batch step by ``serve._Clock``, set before the done hook). The
  route is fixed at the order's first attempt (a Redis hash, ``STATE_ROUTE``, with the start
  time): a service restarted mid-order re-runs it on the same policy even if the registry
  changed meanwhile, so the re-run reproduces what was sent.
- ``ServeHooks.done(member, route, execution, done)`` (``execution``: the order's own
  ``ExecutionRun``, ``ExecutionRun.order(i)`` of its batch's run) right before the done
  record is published: the shadow and canary runs, the summary row, the metrics. The row goes
  in first, so every done record on the stream has its row; a service killed in between
  re-runs the order (it is not done) and writes the same row, once (idempotent on the order
  id).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from execrl.domain import ConfigError
from execrl.service.canary import (
    AC_BASELINE,
    CanarySample,
    Route,
    Router,
    evaluate_gates,
    pick,
    policy_label,
)
from execrl.service.metrics import ExecMetrics
from execrl.service.summary import SummaryDB, iso, latencies_json

#: parent id -> its route (``canary.Route``) and ``started_ns``, fixed at the first attempt
STATE_ROUTE = "execrl:serve:route"


class OrderRoute:
    """One order's route and its decision latencies."""

    def __init__(self, hooks: ServeHooks, route: Route, started_ns: int):
        self.hooks, self.route, self.started_ns = hooks, route, started_ns
        self.executor = route.executor_config(hooks.config.executor)
        self.latencies_ms: list[float] = []

    def fields(self) -> dict[str, Any]:
        """What the done record says of the route."""
        r = self.route
        return {"route": r.route, "policy": r.policy, "policy_hash": r.policy_hash}


class ServeHooks:
    """The service's registry, summary database, router and metrics (module docstring)."""

    def __init__(self, client: Any, config: Any, log: Callable[[str], None]):
        self.client, self.config, self.log = client, config, log
        self.registry = None
        if config.registry_url:
            from execrl.service.registry import Registry, RegistryError

            try:
                self.registry = Registry(config.registry_url)
            except RegistryError as exc:
                raise ConfigError(f"--registry: {exc}") from None
        self.db = SummaryDB(config.summary_url) if config.summary_url else None
        if self.registry is not None and self.db is None:
            raise ConfigError("--registry needs --summary-db: the canary's gates and the A/B "
                              "pairs are kept there")
        from execrl.service.abtest import ShadowAB

        self.ab = ShadowAB(self.db) if self.db is not None else None
        self.metrics = ExecMetrics()
        self.router = Router(self.registry, config.executor.policy, config.executor.fallback,
                             config.canary, _configured_hash(config.executor.policy))
        self._gate_lock = threading.Lock()

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        if self.registry is not None:
            self.registry.close()

    # -- hook 1: the route -------------------------------------------------------------------
    def route(self, run: Any) -> OrderRoute:
        order = run.order
        raw = self.client.hget(STATE_ROUTE, order.order_id)
        if raw is None:
            route = self.router.route(order.order_id, order.symbol)
            record = {**route.to_dict(), "started_ns": time.time_ns()}
            self.client.hsetnx(STATE_ROUTE, order.order_id, json.dumps(record))
            raw = self.client.hget(STATE_ROUTE, order.order_id)
        data = json.loads(raw)
        route = Route.from_dict(data)
        if route.route == "fallback" and run.recorded == 0:
            self.log(f"serve: order {order.order_id} goes to the fallback ({route.policy}): "
                     f"{route.reason}")
        return OrderRoute(self, route, int(data["started_ns"]))

    # -- hook 2: the order is done -----------------------------------------------------------
    def done(self, run: Any, route: OrderRoute, execution: Any, done: dict[str, Any]) -> None:
        from execrl.service.serve import order_seed

        order, cfg = run.order, self.config
        seed = order_seed(order.order_id)
        #: the counterfactuals' market data: the order's path (paper venue) or a fresh replay
        #: of the stream entries it met (stream venue)
        venue_of = getattr(run, "counterfactual_venue", None) or (lambda: "shadow")
        e = execution.episodes.iloc[0]
        r = route.route
        shadow_hash, shadow_is = "", math.nan
        if cfg.shadow and self.registry is not None and r.route == "live":
            candidate = pick(self.registry.policies(state="shadow"), order.symbol)
            if candidate is not None and not self.registry.fallback_flag(candidate.policy_hash):
                from execrl.service.abtest import counterfactual_is

                label = policy_label(candidate)
                shadow_cfg = Route("shadow", label, label, candidate.path,
                                   candidate.policy_hash).executor_config(cfg.executor)
                try:  # the shadow never stops the live flow
                    shadow_is = counterfactual_is(shadow_cfg, cfg.market, order, seed,
                                                  venue_of())
                    shadow_hash = candidate.policy_hash
                except Exception as exc:
                    self.log(f"serve: shadow {label} on order {order.order_id} failed: {exc}")
                if shadow_hash and self.ab is not None:
                    self.ab.record(order.order_id, label, shadow_hash, shadow_is, r.policy,
                                   r.policy_hash, float(e["is_bps"]), done["ts_ns"])
        done["shadow_policy_hash"] = shadow_hash
        done["shadow_is_bps"] = shadow_is if math.isfinite(shadow_is) else None
        if r.route == "canary" and self.db is not None:
            self._canary(order, seed, route, e, done["ts_ns"], venue_of)
        if self.db is not None:
            self.db.write_order({
                **{k: done[k] for k in ("symbol", "side", "qty", "filled", "is_bps",
                                        "fill_rate", "child_orders", "fills",
                                        "residual_shares", "steps", "finished_by")},
                "order_id": order.order_id, "policy": r.policy, "policy_hash": r.policy_hash,
                "route": r.route, "shadow_policy_hash": shadow_hash, "shadow_is_bps": shadow_is,
                "started_at": iso(route.started_ns), "finished_at": iso(done["ts_ns"])})
        self._observe(route, execution)

    def _canary(self, order: Any, seed: int, route: OrderRoute, e: Any, ts_ns: int,
                venue_of: Callable[[], Any]) -> None:
        from execrl.service.abtest import counterfactual_is

        r = route.route
        base = Route("baseline", AC_BASELINE, AC_BASELINE).executor_config(self.config.executor)
        try:
            base_is = counterfactual_is(base, self.config.market, order, seed, venue_of())
        except Exception as exc:  # the order stands; the gates just do not see it
            self.log(f"serve: AC baseline of canary order {order.order_id} failed: {exc}")
            return
        violations = (int(e.get("guard_rejects", 0)) + int(e.get("breaches", 0))
                      + int(str(e.get("trigger", "none")) != "none"))
        assert self.db is not None
        self.db.write_canary({
            "policy_hash": r.policy_hash, "order_id": order.order_id, "is_bps": e["is_bps"],
            "baseline_is_bps": base_is, "decisions": int(e["steps"]), "violations": violations,
            "latencies_ms": latencies_json(route.latencies_ms), "recorded_at": iso(ts_ns)})
        with self._gate_lock:
            if r.policy_hash in self.router.stopped:
                return
            sample = CanarySample.from_rows(self.db.canary_rows(r.policy_hash))
            failed = [g for g in evaluate_gates(sample, self.config.canary) if g.failed]
            if failed:
                moved = self.router.fall_back(r.policy_hash, failed)
                self.log(f"serve: canary {r.policy} taken out of the flow"
                         f"{' and quarantined' if moved else ''}: "
                         + "; ".join(g.text() for g in failed))

    def _observe(self, route: OrderRoute, execution: Any) -> None:
        m = self.metrics
        m.observe_run(execution)
        for v in route.latencies_ms:
            m.decision_latency_ms.observe(v)
        r = route.route
        if r.route == "fallback":
            m.fallbacks.labels(policy=r.flagged[:12] or "none", trigger="registry_flag").inc()


def _configured_hash(policy: Any) -> str:
    """The configured policy's hash (a checkpoint's; "" for a baseline)."""
    if policy.checkpoint is None:
        return ""
    from pathlib import Path

    from execrl.agents.export import NumpyPolicy

    return NumpyPolicy.load(Path(policy.checkpoint), checkpoint=True).policy_hash()


__all__ = ["STATE_ROUTE", "OrderRoute", "ServeHooks"]
