"""Canary routing: which policy runs each parent order (live, the canary, or the fallback), the
canary's SLO gates (seed 001 §8), and the automatic fallback when a gate fails.

Routing (``Router.route``), from the policy registry (``service.registry``):

1. The canary of the order's symbol (a policy in state ``canary`` scoped to the symbol, else
   the desk-wide one; the most recently registered if several) takes the order when the
   order id falls in its share: ``canary_bucket(order_id) < share``. The bucket is a SHA-256
   of the id read as a fraction of 2**64, so the split is the same in every process and
   after every restart, and ~``share`` of any large set of ids (10 % by default).
2. Otherwise the symbol's live policy (``Registry.live_policy``) takes it.
3. Either one whose ``Registry.fallback_flag`` is up (its own flag, the all-policies flag), or
   no live policy at all, sends the order to the fallback: the executor config's fallback
   schedule run as the order's policy from its first decision (``FALLBACK_BASELINE``).

Without a registry every order is ``live`` on the configured policy.

The gates (``evaluate_gates``), over every order the canary has run so far (persisted in the
summary database, ``service.summary``, so a restart neither forgets nor double-counts one):

- ``latency_p95``: the 95th percentile (linear) of the canary's decision latencies, in ms:
  from the market entry that released a decision to its child orders written on
  ``STREAM_FILLS``; passes while < 50 ms. Judged from ``min_latencies`` decisions on.
- ``violations_per_1k``: violations (guard refusals, watchdog triggers, limit breaches: what
  ``exec_violations_total`` counts) per 1,000 decisions; passes while < 1. Judged from
  ``min_decisions`` decisions on (1,000: fewer could not show a rate below one per 1,000).
- ``is_p95_vs_ac``: p95 of the canary orders' IS minus p95 of the **Almgren–Chriss baseline
  run in shadow on the same orders** (the ``ac`` baseline, its λ from the market's cost
  model, through the shadow venue on the order's own market path ``order_seed(order_id)``,
  the same risk limits and watchdog; nothing sent); passes while <= 2 bps. Judged from
  ``min_orders`` orders on.

A gate below its minimum sample does not judge (it passes). When one fails, the canary is
quarantined by ``system`` with the failing gates as reason and detail (an audit row in the
registry, the runbook's step 2); quarantined, it is no longer a canary, so its share of the
flow goes to 0 and those orders return to the live policy, in this process at once and in
every other process at their next order.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from execrl.domain import ConfigError

#: the share of the flow a canary gets unless told otherwise (seed 001 §6: "< 10% flow")
DEFAULT_SHARE = 0.10
#: the executor config's fallback schedule as the policy that runs a fallback-routed order
#: from its first decision (``split`` has no schedule of its own before a switch:
#: ``safety.fallback.fallback_holdings`` gives TWAP's)
FALLBACK_BASELINE = {"twap": "twap", "vwap": "vwap", "almgren_chriss": "ac", "split": "twap"}
#: the canary's IS gate compares with this baseline, run in shadow on the same orders
AC_BASELINE = "ac"
GATES = ("latency_p95", "violations_per_1k", "is_p95_vs_ac")


def canary_bucket(order_id: str) -> float:
    """The order id's place in [0, 1): the first 8 bytes of its SHA-256 over 2**64."""
    digest = hashlib.sha256(order_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_canary(order_id: str, share: float) -> bool:
    """Does the order go to the canary at ``share`` (a fraction of the flow)?"""
    return canary_bucket(order_id) < share


@dataclass(frozen=True)
class CanaryConfig:
    """The canary's share of the flow and its SLO gates (seed 001 §8), with the minimum
    sample before each gate judges."""

    share: float = DEFAULT_SHARE
    latency_p95_ms: float = 50.0
    violations_per_1k: float = 1.0
    is_p95_margin_bps: float = 2.0
    min_latencies: int = 200
    min_decisions: int = 1000
    min_orders: int = 30

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, rule: str) -> ConfigError:
            return ConfigError(f"canary field {name!r} = {value!r} {rule}")

        share = self.share
        if isinstance(share, bool) or not isinstance(share, int | float) \
                or not math.isfinite(share) or not 0.0 <= share <= 1.0:
            raise bad("share", share, "must be a fraction between 0 and 1 (--canary-share)")
        for name in ("latency_p95_ms", "violations_per_1k", "is_p95_margin_bps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v < 0:
                raise bad(name, v, "must be a finite number >= 0")
        for name in ("min_latencies", "min_decisions", "min_orders"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, v, "must be an integer >= 1")


@dataclass(frozen=True)
class CanarySample:
    """What the gates judge: every decision latency (ms), decisions and violations counted,
    and per order the canary's IS and the AC baseline's on the same path (paired arrays)."""

    latencies_ms: np.ndarray
    decisions: int
    violations: int
    is_bps: np.ndarray
    baseline_is_bps: np.ndarray

    @classmethod
    def from_rows(cls, rows: pd.DataFrame) -> CanarySample:
        """From ``SummaryDB.canary_rows`` (in order-id order)."""
        lat = [v for text in rows["latencies_ms"] for v in json.loads(text)]
        return cls(np.asarray(lat, dtype=np.float64), int(rows["decisions"].sum()),
                   int(rows["violations"].sum()), rows["is_bps"].to_numpy(np.float64),
                   rows["baseline_is_bps"].to_numpy(np.float64))


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: ``value`` against ``limit`` over a sample of ``n`` (``need`` before
    it judges); ``value`` None where the sample is empty."""

    gate: str
    value: float | None
    limit: float
    n: int
    need: int
    within: bool

    @property
    def judged(self) -> bool:
        return self.n >= self.need

    @property
    def failed(self) -> bool:
        return self.judged and not self.within

    def text(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.3f}"
        verdict = ("FAIL" if self.failed else "ok" if self.judged
                   else f"waiting ({self.n} of {self.need})")
        return f"{self.gate} = {shown} (limit {self.limit:g}, n = {self.n}): {verdict}"

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "value": self.value, "limit": self.limit, "n": self.n,
                "need": self.need, "judged": self.judged, "failed": self.failed}


def evaluate_gates(sample: CanarySample, config: CanaryConfig) -> list[GateResult]:
    """The three gates (module docstring) on ``sample``."""
    from execrl.evaluate.stats import is_summary

    out = []
    lat = sample.latencies_ms[np.isfinite(sample.latencies_ms)]
    p95 = float(np.percentile(lat, 95.0)) if lat.size else None
    out.append(GateResult("latency_p95", p95, config.latency_p95_ms, int(lat.size),
                          config.min_latencies, p95 is None or p95 < config.latency_p95_ms))
    rate = 1000.0 * sample.violations / sample.decisions if sample.decisions else None
    out.append(GateResult("violations_per_1k", rate, config.violations_per_1k,
                          int(sample.decisions), config.min_decisions,
                          rate is None or rate < config.violations_per_1k))
    a, b = np.asarray(sample.is_bps, float), np.asarray(sample.baseline_is_bps, float)
    if a.shape != b.shape:
        raise ValueError(f"canary IS ({a.size}) and baseline IS ({b.size}) are not paired")
    keep = np.isfinite(a) & np.isfinite(b)
    worse = None
    if keep.any():
        worse = is_summary(a[keep])["p95"] - is_summary(b[keep])["p95"]
    out.append(GateResult("is_p95_vs_ac", worse, config.is_p95_margin_bps, int(keep.sum()),
                          config.min_orders, worse is None or worse <= config.is_p95_margin_bps))
    return out


@dataclass(frozen=True)
class Route:
    """Which policy runs an order, and why: ``route`` (live / canary / fallback), the policy
    as the executor config names it (``policy_type``, ``checkpoint``), its label and hash
    (the registry's; "" for a configured baseline), and for a fallback the policy whose flow
    it took (``flagged``) and the reason."""

    route: str
    policy: str
    policy_type: str
    checkpoint: str | None = None
    policy_hash: str = ""
    flagged: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "policy": self.policy, "policy_type": self.policy_type,
                "checkpoint": self.checkpoint, "policy_hash": self.policy_hash,
                "flagged": self.flagged, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Route:
        return cls(**{k: data[k] for k in ("route", "policy", "policy_type", "checkpoint",
                                           "policy_hash", "flagged", "reason")})

    def executor_config(self, base: Any) -> Any:
        """``base`` (an ``ExecutorConfig``) with this route's policy."""
        from execrl.executor.config import PolicyConfig

        return base.model_copy(update={"policy": PolicyConfig(
            type=self.policy_type, checkpoint=self.checkpoint)})


def policy_label(record: Any) -> str:
    """A registered policy's label in the executor and the metrics: its name and short hash
    (so a live and a canary policy of one algorithm stay apart in ``exec_is_bps{policy}``)."""
    return f"{record.name}-{record.short}"


def pick(records: list[Any], symbol: str) -> Any:
    """The symbol's own policy among ``records``, else the desk-wide one; the most recently
    registered of either (None if neither)."""
    from execrl.service.registry import ALL_SCOPES

    for scope in (symbol, ALL_SCOPES):
        mine = [r for r in records if r.scope == scope]
        if mine:
            return max(mine, key=lambda r: r.registered_at)
    return None


class Router:
    """Routes each parent order (module docstring). ``registry``: a ``Registry`` or None;
    ``policy``: the configured ``PolicyConfig`` (the route without a registry) and
    ``policy_hash`` its hash; ``fallback``: the executor config's fallback schedule."""

    def __init__(self, registry: Any, policy: Any, fallback: str, config: CanaryConfig,
                 policy_hash: str = ""):
        self.registry = registry
        self.policy = policy
        self.fallback = fallback
        self.config = config
        self.policy_hash = policy_hash
        #: canaries this process took out (their share is 0 here at once)
        self.stopped: set[str] = set()

    def canary_for(self, symbol: str) -> Any:
        if self.registry is None or self.config.share <= 0.0:
            return None
        record = pick(self.registry.policies(state="canary"), symbol)
        if record is None or record.policy_hash in self.stopped:
            return None
        return record

    def route(self, order_id: str, symbol: str) -> Route:
        if self.registry is None:
            p = self.policy
            return Route("live", p.type, p.type, p.checkpoint, self.policy_hash)
        reg = self.registry
        chosen, route = None, "live"
        candidate = self.canary_for(symbol)
        if candidate is not None and in_canary(order_id, self.config.share):
            chosen, route = candidate, "canary"
        else:
            chosen = reg.live_policy(symbol)
        if chosen is None:
            return self._fallback("", f"no live policy for symbol {symbol!r}")
        if reg.fallback_flag(chosen.policy_hash):
            return self._fallback(chosen.policy_hash, f"{route} policy "
                                  f"{chosen.short} is flagged to the fallback")
        return Route(route, policy_label(chosen), policy_label(chosen), chosen.path,
                     chosen.policy_hash)

    def _fallback(self, flagged: str, reason: str) -> Route:
        name = FALLBACK_BASELINE[self.fallback]
        return Route("fallback", name, name, None, "", flagged, reason)

    def fall_back(self, policy_hash: str, failed: list[GateResult]) -> bool:
        """A gate failed: the canary's share to 0 here, and the canary quarantined in the
        registry by ``system`` with the gates as reason (True when this call moved it)."""
        self.stopped.add(policy_hash)
        if self.registry is None:
            return False
        return system_quarantine(
            self.registry, policy_hash,
            "canary SLO gate failed: " + "; ".join(g.text() for g in failed),
            gates=[g.to_dict() for g in failed])


def system_quarantine(registry: Any, policy_hash: str, reason: str, **detail: Any) -> bool:
    """Quarantine a canary as ``system`` (``Registry.system_quarantine``); False where it is
    no longer a canary."""
    return bool(registry.system_quarantine(policy_hash, reason, "canary", **detail))


__all__ = ["AC_BASELINE", "DEFAULT_SHARE", "FALLBACK_BASELINE", "GATES", "CanaryConfig",
           "CanarySample", "GateResult", "Route", "Router", "canary_bucket", "evaluate_gates",
           "in_canary", "pick", "policy_label", "system_quarantine"]
