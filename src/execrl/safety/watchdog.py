"""The watchdog: a per-order state machine that takes an order away from its learned policy
when the policy misbehaves or leaves what it was trained on (issue 9; seeds 000 §6, 001 §6,
002 §3, 004 §6).

States (``STATES``): ``RL`` (the policy decides) → ``FALLBACK`` (a rule-based schedule,
``execrl.safety.fallback``, finishes the order) or ``PASSIVE`` (passive-only posting: extreme
volatility or a news flag, seed 001 §6) → ``DONE``; ``KILLED`` from any state (the kill
switch: no new child orders, working ones cancelled). An order never returns to ``RL``;
``FALLBACK`` may still freeze to ``PASSIVE`` (trigger 9, where configured: trading a TWAP
through a news spike is what the freeze exists to prevent) and anything may be killed.

Triggers (``TRIGGERS``, codes 1–9 as numbered in the issue; ``TRIGGER_TEXT`` says each in
words). Where several hold at the same step, the order takes the most severe verdict: the kill
switch (KILLED), then the passive freeze, then the fallback; the recorded trigger is the one
that decided the state (the lowest code among the fallback triggers), and ``conditions``
keeps a bit per trigger that held (bit t = trigger t).

With ``acting=False`` (training) the watchdog only records: every order stays ``RL`` (until
``DONE``) and ``trigger`` / ``trigger_step`` say what would have fired first and when, so the
agent learns from exactly what it would without a watchdog.

The check is one compiled kernel over the batch (``_check``), so an order of one (the live
path) costs microseconds; thresholds come from ``WatchdogConfig``, the training domain and
the reference action distribution from the checkpoint's ``features.json``
(``execrl.market.features.FeatureSchema``). Drift (trigger 5) is judged by default on the
policy's decisions pooled over its orders in the last ``drift_window`` checks: an order of
ten decisions has too few of its own for a divergence to mean anything.

Use, once per decision step of a batch::

    wd = Watchdog.from_schema(WatchdogConfig.from_dict(yaml["watchdog"]), n, side, n_actions,
                              policy.feature_schema)
    fired = wd.check(k, elapsed_ratio=..., filled_ratio=..., price=mid, arrival_vwap=...,
                     fault=codes, probs=probs, actions=actions, latency_s=..., is_bps=...,
                     twap_is_bps=..., observations=obs, kill=..., done=...)
    # fired[i] > 0: order i changed state now (log RL_ABORTED with TRIGGERS[fired[i]]);
    # wd.state says who trades each order: RL the policy, FALLBACK the fallback schedule,
    # PASSIVE passive-only posting, KILLED nothing
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from execrl.domain import ConfigError
from execrl.domain.errors import describe_pydantic_error
from execrl.market.features import FeatureSchema
from execrl.market.observations import OBSERVATION_FEATURES
from execrl.safety.fallback import FallbackKind

# -- states, triggers, policy faults ----------------------------------------------------------
RL, FALLBACK, PASSIVE, DONE, KILLED = 0, 1, 2, 3, 4
STATES: tuple[str, ...] = ("rl", "fallback", "passive", "done", "killed")

NO_TRIGGER = 0
LATE_AND_UNFILLED, PRICE_BEYOND_VWAP, POLICY_FAULT, LOW_CONFIDENCE, DRIFT = 1, 2, 3, 4, 5
LATENCY, KILL_OR_LOSS, OUT_OF_DOMAIN, EXTREME_VOLATILITY = 6, 7, 8, 9
TRIGGERS: tuple[str, ...] = (
    "none",
    "late_and_unfilled",
    "price_beyond_vwap",
    "policy_fault",
    "low_confidence",
    "drift",
    "latency",
    "kill_or_loss",
    "out_of_domain",
    "extreme_volatility",
)
TRIGGER_TEXT: dict[str, str] = {
    "none": "no trigger",
    "late_and_unfilled": "elapsed time ratio above its limit while the filled ratio is below "
                         "its floor",
    "price_beyond_vwap": "price beyond the arrival VWAP by more than the band (above for a buy, "
                         "below for a sell)",
    "policy_fault": "the policy raised, ran past its time budget, returned NaN or an action "
                    "outside its space",
    "low_confidence": "policy confidence (max action probability) below its floor for too many "
                      "consecutive decisions",
    "drift": "KL divergence of the recent actions (the policy's over its orders, or the "
             "order's own) from the policy's reference distribution above its limit",
    "latency": "decision latency above its cap",
    "kill_or_loss": "kill switch, manual switch, or implementation shortfall beyond its limit "
                    "(a multiple of the shadow TWAP's, an absolute limit or a drawdown)",
    "out_of_domain": "a volatility, spread or volume feature beyond the policy's training "
                     "domain",
    "extreme_volatility": "extreme volatility or a news flag: passive-only posting",
}



def condition_names(bits: int) -> tuple[str, ...]:
    """The triggers whose bits are set in ``bits`` (``Watchdog.conditions``), by name: what
    an incident record says held when an order was taken from its policy."""
    return tuple(name for code, name in enumerate(TRIGGERS) if code and int(bits) >> code & 1)


POLICY_OK, POLICY_RAISED, POLICY_TIMEOUT, POLICY_NAN, POLICY_OUT_OF_SPACE = 0, 1, 2, 3, 4
POLICY_FAULTS: tuple[str, ...] = ("ok", "raised", "timeout", "nan", "out_of_space")

#: observation features whose training domain the out-of-domain trigger watches (those of
#: them the policy reads): volatility, spread and volume
DOMAIN_FEATURES: tuple[str, ...] = ("volatility", "realised_vol", "spread", "spread_ticks",
                                    "last_volume_ratio")
VOLATILITY_FEATURES: tuple[str, ...] = ("volatility", "realised_vol")

_Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
_Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
_NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class WatchdogConfig(BaseModel):
    """The watchdog's thresholds (defaults: the issue's); ``None`` switches a trigger off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    acting: bool = True
    """False (training): record triggers, never take an order from its policy."""
    fallback: FallbackKind = "twap"
    """The schedule that finishes an order taken from its policy (``safety.fallback``)."""
    split_orders: Annotated[int, Field(ge=1, le=10_000)] = 4
    """Market orders the ``split`` fallback cuts the remaining quantity into."""
    # 1
    late_elapsed: _Unit | None = 0.9
    """Trigger 1 when the elapsed time ratio is above this …"""
    late_filled: _Unit = 0.5
    """… and the filled ratio below this."""
    # 2
    price_band: _Positive | None = 0.01
    """Trigger 2 when the price is beyond arrival VWAP × (1 ± this), against the order."""
    # 3
    policy_faults: bool = True
    """Trigger 3 on any policy fault (``POLICY_FAULTS``)."""
    # 4
    min_confidence: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] | None = 0.6
    """Trigger 4 when the max action probability is below this …"""
    confidence_decisions: Annotated[int, Field(ge=1, le=1_000_000)] = 3
    """… for this many consecutive decisions."""
    # 5
    drift_kl: _Positive | None = 0.15
    """Trigger 5 when KL(recent actions ‖ reference) is above this (nats)."""
    drift_scope: Literal["policy", "order"] = "policy"
    """Whose recent actions: the policy's over all its orders of the batch (every order of a
    drifting policy falls back), or each order's own."""
    drift_window: Annotated[int, Field(ge=1, le=100_000)] = 20
    """The recent window: the decisions of the last this many checks (policy scope), or the
    order's last this many decisions (order scope)."""
    drift_min_decisions: Annotated[int, Field(ge=1, le=10_000_000)] = 50
    """Decisions the window must hold before the divergence is judged (a histogram of a few
    decisions diverges by chance: about (actions − 1) / (2 × decisions) nats)."""
    drift_smoothing: _Positive = 0.5
    """Pseudo-count added to every action of the recent histogram (so an action not yet
    seen does not make the divergence infinite)."""
    # 6
    max_latency_s: _Positive | None = 0.1
    """Trigger 6 when a decision takes longer than this."""
    # 7
    is_vs_twap: Annotated[float, Field(ge=1.0, allow_inf_nan=False)] | None = 2.0
    """Trigger 7 when the order's IS is beyond this multiple of the shadow TWAP's …"""
    twap_floor_bps: _NonNegative = 1.0
    """… with the TWAP's IS taken as at least this (a TWAP at zero cost would otherwise
    make any cost a breach)."""
    max_is_bps: float | None = Field(default=None, allow_inf_nan=False)
    """Trigger 7 when the order's IS is above this (absolute)."""
    max_drawdown_bps: _Positive | None = None
    """Trigger 7 when the order's IS rose this much above its best so far."""
    # 8
    domain_sigmas: _Positive | None = 3.0
    """Trigger 8 when a watched feature is beyond mean ± this × std of the training domain …"""
    domain_margin: _NonNegative = 0.25
    """… or, for a checkpoint that recorded only min / max, beyond them widened by this × the
    width on each side."""
    domain_features: tuple[str, ...] = DOMAIN_FEATURES
    """The observation features watched (those of them the policy reads)."""
    # 9
    extreme_vol_sigmas: _Positive | None = None
    """Trigger 9 when a volatility feature is beyond mean + this × std of the training
    domain (off by default: the issue gives no threshold; the ``extreme`` flag of ``check``,
    a news or volatility-regime flag, always counts)."""
    extreme_action: Literal["passive", "fallback"] = "passive"
    """What trigger 9 does: freeze to passive-only posting, or the fallback like the rest."""

    @model_validator(mode="after")
    def _window_can_fill(self) -> WatchdogConfig:
        if self.drift_scope == "order" and self.drift_min_decisions > self.drift_window:
            raise ValueError(
                f"drift_min_decisions = {self.drift_min_decisions} is more than an order's "
                f"window of drift_window = {self.drift_window} decisions can hold"
            )
        return self

    @field_validator("domain_features")
    @classmethod
    def _known_features(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if name not in OBSERVATION_FEATURES:
                raise ValueError(f"feature {name!r} is not an observation feature")
        return names

    @classmethod
    def from_dict(cls, data: Any, what: str = "watchdog config") -> WatchdogConfig:
        """Validate ``data`` (a YAML / JSON object); one ``ConfigError`` line naming the field
        and the value otherwise."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_pydantic_error(what, exc)) from None


# -- reference distribution and domain from the checkpoint ------------------------------------
def reference_distribution(counts: ArrayLike, smoothing: float = 0.5) -> NDArray[np.float64]:
    """Probabilities of the greedy actions of a training rollout (``action_counts`` of the
    checkpoint's feature schema), each count plus ``smoothing`` so that every action has some
    probability (an action never taken in training makes the divergence large, not
    infinite)."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size < 1 or not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ConfigError(f"reference action counts of shape {c.shape} must be one row of "
                          "non-negative counts")
    p = c + smoothing
    return p / p.sum()


def domain_bounds(
    schema: FeatureSchema, names: Sequence[str], sigmas: float | None, margin: float,
    upper_only: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per feature of ``names`` (all of them in ``schema``): the band the training domain
    allows, mean ± ``sigmas`` × std where the schema recorded them, else min / max widened by
    ``margin`` × the width, else unbounded (a feature never seen in training is not judged).
    ``upper_only``: no lower bound (a volatility can only be extreme upwards)."""
    index = {name: j for j, name in enumerate(schema.names)}
    lo = np.full(len(names), -np.inf)
    hi = np.full(len(names), np.inf)
    for out, name in enumerate(names):
        j = index[name]
        mean = None if schema.domain_mean is None else schema.domain_mean[j]
        std = None if schema.domain_std is None else schema.domain_std[j]
        if sigmas is not None and mean is not None and std is not None:
            lo[out], hi[out] = mean - sigmas * std, mean + sigmas * std
        elif schema.domain_min[j] is not None and schema.domain_max[j] is not None:
            a, b = schema.domain_min[j], schema.domain_max[j]
            lo[out], hi[out] = a - margin * (b - a), b + margin * (b - a)
        else:
            continue
        # observations are float32: a value equal to a constant training feature must pass
        slack = 1e-6 * max(1.0, abs(lo[out]), abs(hi[out]))
        lo[out] -= slack
        hi[out] += slack
    if upper_only:
        lo[:] = -np.inf
    return lo, hi


# -- the watchdog --------------------------------------------------------------------------------
_EMPTY_F = np.zeros(0)
_EMPTY_B = np.zeros(0, dtype=np.bool_)
_EMPTY_I8 = np.zeros(0, dtype=np.int8)
_EMPTY_I64 = np.zeros(0, dtype=np.int64)
_EMPTY_M = np.zeros((0, 1))


def _off(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _vector(x: ArrayLike, dtype: type, n: int) -> NDArray[Any]:
    """``x`` as a contiguous (n,) array of ``dtype`` (a scalar: the same for every order),
    without a copy where it already is one: the live path checks one order in microseconds."""
    if type(x) is np.ndarray and x.dtype == dtype and x.shape == (n,) \
            and x.flags.c_contiguous:
        return x
    a = np.asarray(x, dtype=dtype)
    if a.ndim == 0:
        return np.full(n, a, dtype=dtype)
    if a.shape != (n,):
        raise ValueError(f"watchdog check: an argument has shape {a.shape}, expected ({n},)")
    return np.ascontiguousarray(a)


class Watchdog:
    """One state machine per order of a batch (module docstring).

    ``side``: +1 buy / −1 sell per order (or one for all). ``n_actions``: the size of the
    policy's discrete action set (0 for a continuous one: no drift check).
    ``reference_actions``: the policy's reference action probabilities, (n_actions,) or one
    row per order (a policy set with one policy per side); None skips the drift trigger.
    ``domain``: the checkpoint's feature schema and ``feature_names`` the columns of the
    observations ``check`` gets (default the schema's names); None skips triggers 8 and 9's
    volatility test. ``policy_group``: which policy decides each order (an index, default
    0 for all), whose decisions the policy-scope drift window pools."""

    def __init__(
        self,
        config: WatchdogConfig,
        n_orders: int,
        side: ArrayLike = 1,
        n_actions: int = 0,
        reference_actions: ArrayLike | None = None,
        domain: FeatureSchema | None = None,
        feature_names: Sequence[str] | None = None,
        policy_group: ArrayLike | None = None,
    ):
        if not isinstance(config, WatchdogConfig):
            raise ConfigError(f"watchdog config must be a WatchdogConfig, got "
                              f"{type(config).__name__}")
        if isinstance(n_orders, bool) or not isinstance(n_orders, int | np.integer) \
                or n_orders < 1:
            raise ConfigError(f"watchdog field 'n_orders' = {n_orders!r} must be an integer >= 1")
        n = int(n_orders)
        self.config = config
        self.n_orders = n
        s = np.broadcast_to(np.asarray(side, dtype=np.int8), (n,)).copy()
        if not np.all((s == 1) | (s == -1)):
            raise ConfigError(f"watchdog field 'side' = {side!r} must be +1 (buy) or -1 (sell)")
        self.side = s
        self.n_actions = int(n_actions)
        self.reference = self._reference(reference_actions)
        self._group_setup(policy_group)
        self._domain_setup(domain, feature_names)
        c = config
        # the thresholds as one array the kernel reads (NaN = that trigger off)
        self._params = np.array([
            _off(c.late_elapsed), c.late_filled, _off(c.price_band), _off(c.min_confidence),
            c.confidence_decisions, _off(c.drift_kl), c.drift_smoothing, _off(c.max_latency_s),
            _off(c.is_vs_twap), c.twap_floor_bps, _off(c.max_is_bps), _off(c.max_drawdown_bps),
            float(c.acting), float(c.extreme_action == "passive"), float(c.policy_faults),
            float(c.drift_scope == "policy"), c.drift_min_decisions,
        ])
        self._all = np.ones(n, dtype=np.bool_)
        self.reset()

    @classmethod
    def from_schema(
        cls,
        config: WatchdogConfig,
        n_orders: int,
        side: ArrayLike = 1,
        n_actions: int = 0,
        schema: FeatureSchema | None = None,
    ) -> Watchdog:
        """The watchdog of a checkpoint's policy: its training domain and, where the schema
        recorded the greedy action histogram of a discrete policy, its reference
        distribution (``reference_distribution`` with the config's smoothing); a schema from
        before they were recorded (or none) leaves those triggers to what it has."""
        reference = None
        counts = None if schema is None else schema.action_counts
        if counts is not None and n_actions:
            if len(counts) != n_actions:
                raise ConfigError(
                    f"feature schema field 'action_counts' holds {len(counts)} actions; the "
                    f"policy's action set has {n_actions}"
                )
            reference = reference_distribution(counts, config.drift_smoothing)
        return cls(config, n_orders, side, n_actions, reference, schema)

    def _reference(self, reference: ArrayLike | None) -> NDArray[np.float64]:
        a = self.n_actions
        if reference is None or a < 1 or self.config.drift_kl is None:
            return np.zeros((0, max(a, 1)))
        q = np.asarray(reference, dtype=np.float64)
        if q.ndim == 1:
            q = q[None, :]
        if q.shape not in ((1, a), (self.n_orders, a)):
            raise ConfigError(
                f"watchdog field 'reference_actions' has shape {q.shape}; expected ({a},) or "
                f"({self.n_orders}, {a})"
            )
        if not np.all(np.isfinite(q)) or np.any(q <= 0) \
                or np.any(np.abs(q.sum(axis=1) - 1.0) > 1e-6):
            raise ConfigError(
                "watchdog field 'reference_actions' must hold positive probabilities summing to "
                "1 per row (reference_distribution smooths a histogram into one)"
            )
        return np.ascontiguousarray(np.broadcast_to(q, (self.n_orders, a)))

    def _group_setup(self, group: ArrayLike | None) -> None:
        n = self.n_orders
        g = np.zeros(n, dtype=np.int64) if group is None else np.asarray(group)
        if g.shape not in ((), (n,)) or g.dtype.kind not in "iu" or np.any(g < 0) \
                or np.any(g >= n):
            raise ConfigError(f"watchdog field 'policy_group' must hold one index in [0, {n}) "
                              "per order")
        self.policy_group = np.ascontiguousarray(np.broadcast_to(g, (n,)), dtype=np.int64)
        n_groups = int(self.policy_group.max()) + 1
        pooled = self.config.drift_scope == "policy" and self.reference.size > 0
        self._group_reference = np.zeros((n_groups if pooled else 0, self.reference.shape[1]))
        if pooled:
            self._group_reference[self.policy_group] = self.reference
            if not np.allclose(self._group_reference[self.policy_group], self.reference,
                               rtol=0.0, atol=1e-12):
                raise ConfigError("watchdog field 'reference_actions' differs between orders "
                                  "of one policy_group")

    def _domain_setup(self, domain: FeatureSchema | None, names: Sequence[str] | None) -> None:
        cfg = self.config
        self.feature_names = tuple(names) if names is not None else (
            domain.names if domain is not None else ())
        watched: list[str] = []
        volatile: list[str] = []
        if domain is not None:
            for name in self.feature_names:
                if name not in domain.names:
                    raise ConfigError(f"watchdog feature '{name}' is not in the training domain "
                                      f"({', '.join(domain.names)})")
            watched = [n for n in self.feature_names if n in cfg.domain_features]
            volatile = [n for n in self.feature_names if n in VOLATILITY_FEATURES]
            if cfg.domain_sigmas is None:
                watched = []
        position = {name: j for j, name in enumerate(self.feature_names)}
        self._domain_cols = np.array([position[n] for n in watched], dtype=np.int64)
        self._extreme_cols = np.array([position[n] for n in volatile], dtype=np.int64)
        self._watches_domain = bool(watched) or (bool(volatile)
                                                 and cfg.extreme_vol_sigmas is not None)
        if domain is not None:
            lo, hi = domain_bounds(domain, watched, cfg.domain_sigmas, cfg.domain_margin)
        else:
            lo = hi = _EMPTY_F
        self.domain_lo, self.domain_hi = lo, hi
        if domain is not None and cfg.extreme_vol_sigmas is not None:
            self.extreme_lo, self.extreme_hi = domain_bounds(
                domain, volatile, cfg.extreme_vol_sigmas, cfg.domain_margin, upper_only=True)
        else:
            self._extreme_cols = _EMPTY_I64
            self.extreme_lo = self.extreme_hi = _EMPTY_F

    def reset(self) -> None:
        """Every order back to ``RL`` with no history (a new batch of orders)."""
        n, w = self.n_orders, self.config.drift_window
        self.state = np.zeros(n, dtype=np.int8)
        self.trigger = np.zeros(n, dtype=np.int8)
        self.trigger_step = np.full(n, -1, dtype=np.int64)
        self.conditions = np.zeros(n, dtype=np.uint16)
        """Bits of the triggers that held when the order's trigger fired (bit t = trigger t)."""
        self.last_conditions = np.zeros(n, dtype=np.uint16)
        """Bits of the triggers that held at the last check (for the audit trail)."""
        self.confidence_streak = np.zeros(n, dtype=np.int64)
        self.best_is_bps = np.full(n, np.inf)
        a = max(self.n_actions, 1)
        per_order = self.reference.size > 0 and self.config.drift_scope == "order"
        self._recent = np.zeros((n, w if per_order else 0), dtype=np.int64)
        self._recent_counts = np.zeros((n, a if per_order else 0), dtype=np.int64)
        self._recent_seen = np.zeros(n, dtype=np.int64)
        g = self._group_reference.shape[0]
        self._group_window = np.zeros((g, w, a), dtype=np.int64)  # actions per check
        self._group_counts = np.zeros((g, a), dtype=np.int64)
        self._group_slot = np.zeros(g, dtype=np.int64)
        self._group_kl = np.full(g, np.nan)
        self.last_kl = np.full(n, np.nan)
        """The divergence behind trigger 5 at the last check (the order's or its policy's)."""
        self._fired = np.zeros(n, dtype=np.int8)

    # -- the check ---------------------------------------------------------------------------
    def check(
        self,
        step: ArrayLike,
        *,
        active: ArrayLike | None = None,
        done: ArrayLike | None = None,
        elapsed_ratio: ArrayLike | None = None,
        filled_ratio: ArrayLike | None = None,
        price: ArrayLike | None = None,
        arrival_vwap: ArrayLike | None = None,
        fault: ArrayLike | None = None,
        probs: ArrayLike | None = None,
        actions: ArrayLike | None = None,
        latency_s: ArrayLike | None = None,
        is_bps: ArrayLike | None = None,
        twap_is_bps: ArrayLike | None = None,
        observations: ArrayLike | None = None,
        extreme: ArrayLike | None = None,
        kill: ArrayLike | None = None,
        manual: ArrayLike | None = None,
    ) -> NDArray[np.int8]:
        """Judge decision ``step`` (one for all, or per order) of every order; returns int8
        per order: the trigger that
        changed its state now (with ``acting=False``: that was first recorded now), 0 where
        none. Per-order arrays (any may be None = not known this step, that trigger skipped):

        - ``active``: the orders that decided this step (default all not yet done);
        - ``done``: orders finished (filled or at their horizon): → DONE (KILLED stays);
        - ``elapsed_ratio``, ``filled_ratio``: trigger 1;
        - ``price`` (the current price, e.g. the mid) and ``arrival_vwap``: trigger 2;
        - ``fault``: a ``POLICY_FAULTS`` code per order: trigger 3;
        - ``probs``: the policy's action probabilities (n, n_actions): trigger 4;
        - ``actions``: the discrete actions chosen (n,): trigger 5 (needs the reference);
        - ``latency_s``: decision latency in seconds: trigger 6;
        - ``is_bps`` (the order's IS so far) and ``twap_is_bps`` (the shadow TWAP's on the
          same market data), ``kill`` (kill switch) and ``manual`` (an operator): trigger 7;
        - ``observations`` (n, len(feature_names)): triggers 8 and 9 (training domain);
        - ``extreme``: a news or extreme-volatility flag: trigger 9.
        """
        self.check_arrays(step, active, done, elapsed_ratio, filled_ratio, price, arrival_vwap,
                          fault, probs, actions, latency_s, is_bps, twap_is_bps, observations,
                          kill, manual, extreme)
        return self._fired.copy()

    def check_arrays(
        self, step: ArrayLike, active: ArrayLike | None, done: ArrayLike | None,
        elapsed_ratio: ArrayLike | None, filled_ratio: ArrayLike | None,
        price: ArrayLike | None, arrival_vwap: ArrayLike | None, fault: ArrayLike | None,
        probs: ArrayLike | None, actions: ArrayLike | None, latency_s: ArrayLike | None,
        is_bps: ArrayLike | None, twap_is_bps: ArrayLike | None,
        observations: ArrayLike | None, kill: ArrayLike | None, manual: ArrayLike | None = None,
        extreme: ArrayLike | None = None,
    ) -> None:
        """``check`` with its arguments by position and no copy of the result (``_fired``
        holds it): the executor's call at every decision, where keyword handling is a
        visible share of one order's microseconds. Same conversions, same kernel."""
        n = self.n_orders
        vec = _vector
        f8 = np.float64
        b = np.bool_
        probs_a = _EMPTY_M if probs is None else self._matrix(probs, "probs", self.n_actions)
        actions_a = _EMPTY_F if actions is None or not self.reference.size \
            else vec(actions, f8, n)
        obs = _EMPTY_M if observations is None or not self._watches_domain \
            else self._matrix(observations, "observations", len(self.feature_names))
        _check(
            vec(step, np.int64, n), self._params, self.state, self.trigger, self.trigger_step,
            self.conditions, self.last_conditions, self._fired, self.side,
            self._all if active is None else vec(active, b, n),
            _EMPTY_B if done is None else vec(done, b, n),
            _EMPTY_F if elapsed_ratio is None else vec(elapsed_ratio, f8, n),
            _EMPTY_F if filled_ratio is None else vec(filled_ratio, f8, n),
            _EMPTY_F if price is None else vec(price, f8, n),
            _EMPTY_F if arrival_vwap is None else vec(arrival_vwap, f8, n),
            _EMPTY_I8 if fault is None else vec(fault, np.int8, n),
            probs_a, self.confidence_streak,
            actions_a, self.reference, self._recent, self._recent_counts, self._recent_seen,
            self.last_kl, self.policy_group, self._group_reference, self._group_window,
            self._group_counts, self._group_slot, self._group_kl,
            _EMPTY_F if latency_s is None else vec(latency_s, f8, n),
            _EMPTY_F if is_bps is None else vec(is_bps, f8, n),
            _EMPTY_F if twap_is_bps is None else vec(twap_is_bps, f8, n), self.best_is_bps,
            _EMPTY_B if kill is None else vec(kill, b, n),
            _EMPTY_B if manual is None else vec(manual, b, n),
            obs, self._domain_cols, self.domain_lo, self.domain_hi,
            self._extreme_cols, self.extreme_hi,
            _EMPTY_B if extreme is None else vec(extreme, b, n),
        )

    # -- views -------------------------------------------------------------------------------
    @property
    def on_policy(self) -> NDArray[np.bool_]:
        """Orders whose policy decides now (RL)."""
        return self.state == RL

    def state_names(self) -> list[str]:
        return [STATES[s] for s in self.state]

    def trigger_names(self) -> list[str]:
        return [TRIGGERS[t] for t in self.trigger]

    # -- argument conversion (a wrong shape is a programming error: ValueError) ---------------
    def _matrix(self, x: ArrayLike, what: str, width: int) -> NDArray[np.float64]:
        a = x if type(x) is np.ndarray and x.dtype == np.float64 and x.flags.c_contiguous \
            else np.ascontiguousarray(np.asarray(x, dtype=np.float64))
        if a.shape != (self.n_orders, width):
            raise ValueError(f"watchdog check: {what} has shape {a.shape}, expected "
                             f"({self.n_orders}, {width})")
        return a


@njit(cache=True)
def _check(
    step, params, state, trigger, trigger_step, conditions, last_conditions, fired, side,
    active, done, elapsed, filled, price, arrival_vwap, fault,
    probs, streak, actions, reference, recent, recent_counts, recent_seen, last_kl,
    group, group_reference, group_window, group_counts, group_slot, group_kl,
    latency, is_bps, twap_is, best_is, kill, manual,
    obs, domain_cols, domain_lo, domain_hi, extreme_cols, extreme_hi, extreme,
):  # pragma: no cover - compiled
    late_elapsed, late_filled, band, min_conf = params[0], params[1], params[2], params[3]
    streak_needed, kl_max, smoothing, max_latency = params[4], params[5], params[6], params[7]
    is_multiple, twap_floor, max_is, max_dd = params[8], params[9], params[10], params[11]
    acting, extreme_passive, faults_on = params[12] > 0, params[13] > 0, params[14] > 0
    min_decisions = params[16]
    if actions.size and group_reference.shape[0] and kl_max == kl_max:
        _pool_actions(state, active, done, actions, group, group_reference, group_window,
                      group_counts, group_slot, group_kl, smoothing, min_decisions)
    n = state.shape[0]
    window = recent.shape[1]
    n_act = recent_counts.shape[1]
    # the policy's drift is judged at checks that carry the actions
    pooled = actions.size > 0 and kl_max == kl_max and group_kl.size > 0
    for i in range(n):
        fired[i] = 0
        last_conditions[i] = 0
        if state[i] == DONE or state[i] == KILLED:
            continue
        if done.size and done[i]:
            state[i] = DONE
            continue
        if not active[i]:
            continue
        bits = 0
        # 1: late and unfilled
        if elapsed.size and filled.size and late_elapsed == late_elapsed:
            if elapsed[i] > late_elapsed and filled[i] < late_filled:
                bits |= 1 << LATE_AND_UNFILLED
        # 2: price beyond the arrival VWAP against the order
        if price.size and arrival_vwap.size and band == band:
            p, v = price[i], arrival_vwap[i]
            if side[i] > 0:
                if p > v * (1.0 + band):
                    bits |= 1 << PRICE_BEYOND_VWAP
            elif p < v * (1.0 - band):
                bits |= 1 << PRICE_BEYOND_VWAP
        # 3: policy fault
        if fault.size and faults_on and fault[i] != 0:
            bits |= 1 << POLICY_FAULT
        # 4: low confidence for several decisions in a row
        if probs.shape[0] and min_conf == min_conf and probs.shape[1] > 0:
            top = -1.0
            for col in range(probs.shape[1]):
                if probs[i, col] > top:
                    top = probs[i, col]
            if top == top and top >= 0.0:  # NaN rows (a faulty policy) are trigger 3's
                if top < min_conf:
                    streak[i] += 1
                else:
                    streak[i] = 0
            if streak[i] >= streak_needed:
                bits |= 1 << LOW_CONFIDENCE
        # 5: drift of the order's recent actions from the reference distribution
        if actions.size and window and kl_max == kl_max:
            # a NaN, fractional or out-of-range action is trigger 3's, not a drift sample
            if 0 <= actions[i] < n_act and actions[i] == math.floor(actions[i]):
                a = np.int64(actions[i])
                slot = recent_seen[i] % window
                if recent_seen[i] >= window:
                    recent_counts[i, recent[i, slot]] -= 1
                recent[i, slot] = a
                recent_counts[i, a] += 1
                recent_seen[i] += 1
                if recent_seen[i] >= min_decisions:
                    total = window + smoothing * n_act
                    kl = 0.0
                    for j in range(n_act):
                        pj = (recent_counts[i, j] + smoothing) / total
                        kl += pj * math.log(pj / reference[i, j])
                    last_kl[i] = kl
                    if kl > kl_max:
                        bits |= 1 << DRIFT
        if pooled:
            kl = group_kl[group[i]]
            last_kl[i] = kl
            if kl > kl_max:  # NaN (too few decisions yet) never fires
                bits |= 1 << DRIFT
        # 6: latency
        if latency.size and max_latency == max_latency and latency[i] > max_latency:
            bits |= 1 << LATENCY
        # 7: kill switch, manual, loss
        killed = kill.size > 0 and kill[i]
        if killed or (manual.size and manual[i]):
            bits |= 1 << KILL_OR_LOSS
        if is_bps.size and is_bps[i] == is_bps[i]:
            x = is_bps[i]
            if twap_is.size and is_multiple == is_multiple and twap_is[i] == twap_is[i]:
                if x > is_multiple * max(twap_is[i], twap_floor):
                    bits |= 1 << KILL_OR_LOSS
            if max_is == max_is and x > max_is:
                bits |= 1 << KILL_OR_LOSS
            if max_dd == max_dd and x - best_is[i] > max_dd:
                bits |= 1 << KILL_OR_LOSS
            if x < best_is[i]:
                best_is[i] = x
        # 8: out of the training domain; 9: extreme volatility or a news flag
        if obs.shape[0]:
            for c in range(domain_cols.size):
                x = obs[i, domain_cols[c]]
                if x < domain_lo[c] or x > domain_hi[c]:
                    bits |= 1 << OUT_OF_DOMAIN
            for c in range(extreme_cols.size):
                if obs[i, extreme_cols[c]] > extreme_hi[c]:
                    bits |= 1 << EXTREME_VOLATILITY
        if extreme.size and extreme[i]:
            bits |= 1 << EXTREME_VOLATILITY
        last_conditions[i] = bits
        if bits == 0:
            continue
        # the verdict: kill, then the passive freeze, then the fallback (lowest code)
        passive = extreme_passive and ((bits >> EXTREME_VOLATILITY) & 1) == 1
        if killed:
            verdict, code = KILLED, KILL_OR_LOSS
        elif passive:
            verdict, code = PASSIVE, EXTREME_VOLATILITY
        else:
            verdict, code = FALLBACK, 1
            while not (bits >> code) & 1:
                code += 1
        if not acting:  # training: record the first trigger only, the policy keeps the order
            if trigger[i] == 0:
                trigger[i] = code
                trigger_step[i] = step[i]
                conditions[i] = bits
                fired[i] = code
            continue
        if state[i] == RL:
            state[i] = verdict
            trigger[i] = code
            trigger_step[i] = step[i]
            conditions[i] = bits
            fired[i] = code
        elif verdict == KILLED or (verdict == PASSIVE and state[i] == FALLBACK):
            state[i] = verdict  # escalation; the trigger that took it from RL stays
            fired[i] = code


@njit(cache=True)
def _pool_actions(
    state, active, done, actions, group, reference, window, counts, slot, kl_out, smoothing,
    min_decisions,
):  # pragma: no cover - compiled
    """The policy-scope window: drop each policy's oldest check, add this check's decisions
    of the orders it still decides, and the divergence of each policy's window (NaN while
    it holds fewer than ``min_decisions``)."""
    n_groups, width, n_act = window.shape
    for g in range(n_groups):
        slot[g] = (slot[g] + 1) % width
        for a in range(n_act):
            counts[g, a] -= window[g, slot[g], a]
            window[g, slot[g], a] = 0
    for i in range(state.shape[0]):
        if state[i] != RL or not active[i] or (done.size and done[i]):
            continue
        x = actions[i]
        if 0 <= x < n_act and x == math.floor(x):
            g, a = group[i], np.int64(x)
            window[g, slot[g], a] += 1
            counts[g, a] += 1
    for g in range(n_groups):
        total = 0
        for a in range(n_act):
            total += counts[g, a]
        if total < min_decisions:
            kl_out[g] = np.nan
            continue
        kl = 0.0
        for a in range(n_act):
            p = (counts[g, a] + smoothing) / (total + smoothing * n_act)
            kl += p * math.log(p / reference[g, a])
        kl_out[g] = kl
