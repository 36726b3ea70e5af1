"""Prometheus metrics of the executor (seed 001 §8), the same numbers from ``execrl serve``
and ``execrl execute``: both feed an ``ExecMetrics`` from what the one loop returns (an
``ExecutionRun``) and the decisions of its audit trail.

Seed 001 §8's names, with what each counts:

- ``exec_is_bps{policy}`` histogram: per-order implementation shortfall, bps (a cost:
  positive is worse);
- ``exec_tail_cvar_bps{policy}`` gauge: CVaR@95 of the last ``tail_window`` orders' IS
  (``evaluate.stats.cvar``);
- ``exec_child_rate{type}`` counter (exposed as ``exec_child_rate_total``): child orders sent,
  by order type;
- ``exec_violations_total{kind}`` counter: guard refusals by reason (``guard_<reason>``), the
  watchdog's triggers (``watchdog_<trigger>``) and limit breaches (``limit_breach``, which the
  guard should make impossible);
- ``exec_decision_latency_ms`` histogram: decision → child order, per order and decision.

Added for the alerts (``deploy/prometheus/rules.yml``) and the desk: ``exec_decisions_total
{policy}`` (the SLO's "per 1,000 decisions"), ``exec_orders_total{policy}`` and
``exec_fallback_total{policy,trigger}`` (the fallback rate is their ratio, seed 002 §4),
``exec_is_vs_baseline_bps{policy,baseline}`` gauge (the mean, over the last ``tail_window``
orders, of each order's IS minus the shadow TWAP's on the same market path: paired, the
degradation the IS alert watches) and ``exec_queue_lag_seconds{stream}`` (set by the service
from its stream consumer).

IS can be negative, so its buckets start below zero and prometheus_client then exposes no
``exec_is_bps_sum`` (a sum that can fall is no counter; ``rate`` would read a fall as a
reset): the mean paired difference is therefore a gauge computed here, not a ``_sum`` ratio.

Each ``ExecMetrics`` has a registry of its own, so a test, a service and a command line in
one process never share counters.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server, write_to_textfile

from execrl.domain import OrderType
from execrl.evaluate.stats import cvar
from execrl.safety.guard import GUARD_FIRST_REJECT, GUARD_REASONS
from execrl.safety.watchdog import TRIGGERS

#: where ``execrl serve`` answers /metrics unless told otherwise (deploy/prometheus/prometheus.yml
#: scrapes it)
DEFAULT_METRICS_PORT = 9108
#: IS buckets, bps: fine around zero where a good policy's orders land, wide for the tail
#: (the Almgren–Chriss example's sell costs ~180 bps)
IS_BUCKETS_BPS = (-50.0, -20.0, -10.0, -5.0, -2.0, 0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
                  200.0, 500.0, 1000.0, math.inf)
#: decision latency, ms: a bucket edge on the 50 ms SLO, so the p95 estimate is on the right
#: side of it
LATENCY_BUCKETS_MS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0,
                      250.0, 500.0, 1000.0, math.inf)

#: the ``kind`` label of each guard verdict (``safety.guard.GUARD_REASONS``, same order)
GUARD_KINDS: tuple[str, ...] = (
    "passed", "child_max", "adv", "remaining", "participation", "price_band", "value",
    "parent_total", "done", "message_rate", "cancel_rate", "min_resting", "repeat",
    "duplicate", "restricted", "locate", "kill",
)
assert len(GUARD_KINDS) == len(GUARD_REASONS)
#: who finished an order when a fallback took it from its policy (``ExecutionRun.episodes``'
#: ``finished_by``): the fallback schedule, or passive-only posting
FALLBACK_FINISHERS = ("fallback", "passive")
#: the ``baseline`` label of the paired IS difference: the executor's shadow TWAP
SHADOW_BASELINE = "twap"


def guard_kind(code: int) -> str:
    """The ``exec_violations_total`` kind of a guard refusal."""
    return f"guard_{GUARD_KINDS[int(code)]}"


def violation_kinds() -> tuple[str, ...]:
    """Every ``kind`` of ``exec_violations_total``: the guard's refusals, the watchdog's
    triggers, a limit breach."""
    return (*(guard_kind(c) for c in range(GUARD_FIRST_REJECT, len(GUARD_REASONS))),
            *(f"watchdog_{t}" for t in TRIGGERS[1:]), "limit_breach")


class ExecMetrics:
    """The executor's Prometheus metrics on a registry of their own (``registry``).

    Feed it with ``observe_run`` (a finished run and its trail's decisions) or its parts,
    ``observe_orders`` and ``observe_decisions``; publish with ``serve`` or ``exposition``."""

    def __init__(self, tail_window: int = 1000, registry: CollectorRegistry | None = None):
        if tail_window < 1:
            raise ValueError(f"tail_window = {tail_window!r} must be >= 1")
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.is_bps = Histogram("exec_is_bps", "Per-order implementation shortfall, bps",
                                ["policy"], buckets=IS_BUCKETS_BPS, registry=r)
        self.tail_cvar_bps = Gauge("exec_tail_cvar_bps",
                                   "CVaR@95 of the recent orders' implementation shortfall, bps",
                                   ["policy"], registry=r)
        self.child_rate = Counter("exec_child_rate", "Child orders sent, by order type",
                                  ["type"], registry=r)
        self.violations = Counter("exec_violations",
                                  "Guard refusals by reason, watchdog triggers, limit breaches",
                                  ["kind"], registry=r)
        self.decision_latency_ms = Histogram("exec_decision_latency_ms",
                                             "Decision to child order, ms, per order",
                                             buckets=LATENCY_BUCKETS_MS, registry=r)
        self.decisions = Counter("exec_decisions", "Decisions taken, per order and step",
                                 ["policy"], registry=r)
        self.orders = Counter("exec_orders", "Parent orders finished", ["policy"], registry=r)
        self.fallbacks = Counter("exec_fallback",
                                 "Parent orders a fallback took from their policy",
                                 ["policy", "trigger"], registry=r)
        self.is_vs_baseline_bps = Gauge(
            "exec_is_vs_baseline_bps",
            "Mean over the recent orders of IS minus the baseline's IS on the same path, bps",
            ["policy", "baseline"], registry=r)
        self.queue_lag_seconds = Gauge("exec_queue_lag_seconds",
                                       "Age of the oldest unprocessed message, s", ["stream"],
                                       registry=r)
        # the kinds and types known up front start at 0, so the first one counted is an
        # increase Prometheus sees (a series born at 1 has no earlier sample to rise from)
        for kind in violation_kinds():
            self.violations.labels(kind=kind)
        for order_type in OrderType:
            self.child_rate.labels(type=order_type.value)
        self.tail_window = tail_window
        self._recent: dict[str, deque[float]] = {}
        self._paired: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # the recent-order windows behind the two gauges

    # -- feeding ---------------------------------------------------------------------------
    def observe_run(self, run: Any, decisions: pd.DataFrame | None = None) -> None:
        """A finished ``executor.loop.ExecutionRun``: its orders (``episodes``, with the
        shadow TWAP's results where the watchdog ran) and, given its audit trail's
        ``decisions`` frame (``read_trail(...).decisions``), its decisions: latency, child
        orders by type, guard refusals by reason. Without the frame the decisions are counted
        from the episodes (``steps``, ``child_orders`` as type ``unknown``, ``guard_rejects``
        as kind ``guard_reject``) and no latency is observed."""
        self.observe_orders(run.episodes, run.shadow_twap)
        if decisions is not None:
            self.observe_decisions(decisions)
            return
        e = run.episodes
        steps = e["steps"].to_numpy()
        for policy, rows in _policy_rows(e).items():
            self.decisions.labels(policy=policy).inc(float(steps[rows].sum()))
        self._inc(self.child_rate, "type", {"unknown": float(e["child_orders"].sum())})
        if "guard_rejects" in e:
            self._inc(self.violations, "kind", {"guard_reject": float(e["guard_rejects"].sum())})

    def observe_orders(self, episodes: pd.DataFrame, shadow: pd.DataFrame | None = None) -> None:
        """Finished parent orders (``ExecutionRun.episodes``): IS, its tail, fallbacks,
        watchdog triggers, breaches; with ``shadow`` (``ExecutionRun.shadow_twap``, one row
        per ``order_idx`` on the same paths) the paired IS difference against it. Safe to
        call from the service's worker threads at once."""
        with self._lock:
            self._observe_orders(episodes, shadow)

    def _observe_orders(self, episodes: pd.DataFrame, shadow: pd.DataFrame | None) -> None:
        # numpy arrays and lists, not a groupby: the service calls this once per order (a
        # one-row frame) and pandas' per-call overhead was most of the service's CPU
        is_all = episodes["is_bps"].to_numpy(dtype=np.float64)
        taken_by = None
        if "finished_by" in episodes:
            taken_by = episodes["finished_by"].isin(FALLBACK_FINISHERS).to_numpy(dtype=bool)
            triggers = episodes["trigger"].tolist()
        base = None
        if shadow is not None:
            base = _by_order_idx(shadow)
            order_idx = episodes["order_idx"].tolist()
        for name, rows in _policy_rows(episodes).items():
            is_bps = is_all[rows]
            finite = is_bps[np.isfinite(is_bps)]
            hist = self.is_bps.labels(policy=name)
            for v in finite:
                hist.observe(float(v))
            self.orders.labels(policy=name).inc(len(rows))
            recent = self._recent.setdefault(name, deque(maxlen=self.tail_window))
            recent.extend(finite.tolist())
            if recent:
                self.tail_cvar_bps.labels(policy=name).set(cvar(np.fromiter(recent, float)))
            if taken_by is not None:
                fell = _counts(triggers[i] for i in rows if taken_by[i])
                for trigger, n in fell.items():
                    self.fallbacks.labels(policy=name, trigger=str(trigger)).inc(float(n))
            if base is not None:
                diff = is_bps - np.array([base.get(order_idx[i], np.nan) for i in rows],
                                         dtype=np.float64)
                paired = self._paired.setdefault(name, deque(maxlen=self.tail_window))
                paired.extend(diff[np.isfinite(diff)].tolist())
                if paired:
                    self.is_vs_baseline_bps.labels(policy=name, baseline=SHADOW_BASELINE).set(
                        float(np.mean(np.fromiter(paired, float))))
        if "trigger" in episodes:
            fired = _counts(t for t in episodes["trigger"].tolist() if t != "none")
            self._inc(self.violations, "kind",
                      {f"watchdog_{t}": float(n) for t, n in fired.items()})
        if "breaches" in episodes:
            self._inc(self.violations, "kind", {"limit_breach": float(episodes["breaches"].sum())})

    def observe_decisions(self, decisions: pd.DataFrame) -> None:
        """An audit trail's decisions frame: one row per order and step (``policy``,
        ``latency_us``, ``child_qty``, ``child_type`` label, ``guard_code``)."""
        for policy, n in decisions["policy"].value_counts(sort=False).items():
            self.decisions.labels(policy=str(policy)).inc(float(n))
        lat = decisions["latency_us"].to_numpy(dtype=np.float64) / 1e3
        for v in lat[np.isfinite(lat)]:
            self.decision_latency_ms.observe(float(v))
        sent = decisions[decisions["child_qty"] > 0]
        self._inc(self.child_rate, "type",
                  {str(t): float(n) for t, n in sent["child_type"].value_counts().items()})
        codes = decisions["guard_code"].to_numpy()
        refused = codes[codes >= GUARD_FIRST_REJECT]
        kinds, counts = np.unique(refused, return_counts=True)
        self._inc(self.violations, "kind",
                  {guard_kind(int(k)): float(c) for k, c in zip(kinds, counts, strict=True)})

    def set_queue_lag(self, seconds: float, stream: str = "orders") -> None:
        """How far behind the service's consumer of ``stream`` is (oldest pending message)."""
        self.queue_lag_seconds.labels(stream=stream).set(float(seconds))

    @staticmethod
    def _inc(counter: Counter, label: str, counts: dict[str, float]) -> None:
        for value, n in counts.items():
            if n > 0:
                counter.labels(**{label: value}).inc(n)

    # -- publishing ------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (what ``/metrics`` answers)."""
        return generate_latest(self.registry)

    def write_textfile(self, path: str | Path) -> Path:
        """The exposition written atomically to ``path`` (node exporter's textfile
        collector), for a command that ends before anything could scrape it (``execrl
        execute``)."""
        path = Path(path)
        write_to_textfile(str(path), self.registry)
        return path

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> MetricsServer:
        """``/metrics`` over HTTP on ``host:port`` (0: a free port) in a daemon thread."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        return MetricsServer(server, thread)


def _missing(value: Any) -> bool:
    """A missing label (None, NaN, pd.NA): what groupby and value_counts leave out."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _policy_rows(episodes: pd.DataFrame) -> dict[str, list[int]]:
    """Row positions of each policy, in order of first appearance, rows without a policy left
    out: the groups ``episodes.groupby("policy", sort=False)`` iterates."""
    rows: dict[str, list[int]] = {}
    for i, policy in enumerate(episodes["policy"].tolist()):
        if not _missing(policy):
            rows.setdefault(str(policy), []).append(i)
    return rows


def _counts(values: Iterable[Any]) -> dict[Any, int]:
    """How often each value occurs, missing ones left out (``Series.value_counts``)."""
    out: dict[Any, int] = {}
    for v in values:
        if not _missing(v):
            out[v] = out.get(v, 0) + 1
    return out


def _by_order_idx(shadow: pd.DataFrame) -> dict[Any, float]:
    """The shadow TWAP's IS by ``order_idx`` (``shadow.set_index("order_idx")["is_bps"]``)."""
    idx = shadow["order_idx"].tolist()
    base = dict(zip(idx, shadow["is_bps"].to_numpy(dtype=np.float64).tolist(), strict=True))
    if len(base) != len(idx):  # what reindexing a Series with a repeated label says
        raise ValueError("cannot reindex on an axis with duplicate labels")
    return base


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; ``close`` stops it."""

    server: Any
    thread: Any

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def scrape_samples(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) of every sample in an exposition, without the
    ``_created`` timestamps prometheus_client adds to counters and histograms."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.endswith("_created"):
                yield s.name, dict(s.labels), float(s.value)
