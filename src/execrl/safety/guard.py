"""The risk guard: pre-trade controls at every decision, batched over the desk's parent orders.

The guard is the one place the hard limits live (SEC Rule 15c3-5, MiFID II RTS 6 Art. 15).
It does two things with the same limits and the same state:

* ``size_cap`` says, per order, the largest new child order the limits allow now: the action
  masks and the execution core's cut are built from it, so a policy that follows the mask
  never meets a reject;
* ``check`` inspects every outgoing ``ChildOrderBatch`` right before it goes to the venue, so a
  policy (or a bug) that ignores the mask still cannot breach a limit. A control that is a
  *cap* cuts the order down (size, or the limit price to the band's edge) and records the
  adjustment; a control that is a *prohibition* rejects it (quantity 0, no cancel) with its
  own reason; the kill switch rejects it and cancels the working order.

``record`` books what the venue answered (fills, cancels, working shares) into the rolling
windows the throttles read. Windows are in seconds of the caller's clock (the execution core
passes ``k × step_seconds``); an event at ``te`` is inside the window at ``t`` when
``t - te < window`` (less a nanosecond-scale tolerance, so ``k × dt - (k-1) × dt`` rounding
never moves a step in or out).

How the size caps combine (seed 002 writes "≤ 5 % of ADV *or* ≤ 20 % of the remaining"):
``size_rule="either"`` (default, the seed's "or") lets a child order through when it meets
either cap, so the cap is the larger of the two; ``"both"`` requires both, the smaller. A
cap of a fraction of what remains alone shrinks geometrically and never lets the order
finish, so the remaining cap is never below ``remaining_floor`` shares (one round lot by
default): once less than the floor remains, the rest may go in one child order. The
participation cap, ``child_max``, the value cap and what the parent order has left apply on
top (the smallest wins).

Hot path: state lives in arrays (one row per order) and the three calls are compiled (numba)
loops over the orders, never a Python loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal, NamedTuple, Self

import numpy as np
from numba import njit
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from execrl.domain import ConfigError, OrderConstraints, OrderType
from execrl.domain.errors import describe_pydantic_error
from execrl.sim.base import ORDER_TYPE_CODES, ChildOrderBatch, FillArrays, FillBatch, OrderArrays

#: seed 002 §3's size caps, for a firm configuration that wants them (off by default)
SEED_ADV_FRACTION = 0.05
SEED_REMAINING_FRACTION = 0.20

_Frac = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
_Seconds = Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)]
_Count = Annotated[int, Field(ge=1, le=1_000_000)]
_Shares = Annotated[int, Field(ge=1, le=10**12)]


class RiskLimits(BaseModel):
    """The firm's (or one order's) pre-trade limits. Every control is optional: ``None`` = off.

    >>> RiskLimits(child_max=5000, participation=0.1).child_max
    5000
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    child_max: _Shares | None = None
    """Largest child order, in shares."""
    adv_shares: Annotated[float, Field(gt=0, le=1e13, allow_inf_nan=False)] | None = None
    """Average daily volume, shares (None: derived from the market's volume profile)."""
    adv_fraction: _Frac | None = None
    """Largest child order as a share of ADV (seed 002: 0.05)."""
    remaining_fraction: _Frac | None = None
    """Largest child order as a share of what the parent order has left (seed 002: 0.20)."""
    remaining_floor: _Shares = 100
    """The remaining cap never goes below this many shares, so an order can finish."""
    size_rule: Literal["either", "both"] = "either"
    """How the ADV and remaining caps combine: meet either (the larger) or both (the smaller)."""
    participation: _Frac | None = None
    """Largest share of market volume our fills may take over the rolling window."""
    participation_window_s: _Seconds | None = None
    """The participation window; None: the decision step alone (``OrderConstraints``)."""
    price_band_bps: Annotated[float, Field(gt=0, le=1e5, allow_inf_nan=False)] | None = None
    """Limit prices within this many bps of the mid (a collar); beyond it they are cut."""
    max_child_value: Annotated[float, Field(gt=0, le=1e15, allow_inf_nan=False)] | None = None
    """Largest child order value, currency (shares × limit price, or × mid for a market order)."""
    message_limit: _Count | None = None
    """Most messages (new child orders and cancels) per ``message_window_s``."""
    message_window_s: _Seconds = 1.0
    cancel_limit: _Count | None = None
    """Most cancels per ``cancel_window_s``; beyond it a cancel (or a replace) is refused."""
    cancel_window_s: _Seconds = 60.0
    min_resting_s: _Seconds | None = None
    """A working order may not be cancelled (or replaced) before it rested this long."""
    repeat_fill_limit: _Count | None = None
    """More fills than this within ``repeat_window_s`` trips a latched throttle (``reenable``)."""
    repeat_window_s: _Seconds = 60.0
    duplicate_window_s: _Seconds | None = None
    """A child order equal to the previous one (size, type, price) within this window is
    refused as a duplicate."""
    restricted_symbols: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = ()
    """Symbols no child order may trade."""
    locate_shares: Annotated[int, Field(ge=0, le=10**12)] | None = None
    """Shares a sell order may sell (held or located for short sale): its fills, working
    shares and new child order together; beyond it the child is refused (None: no check).
    The guard keeps no position, so every share of a sell counts against it."""

    @field_validator("restricted_symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _window_needs_participation(self) -> Self:
        if self.participation_window_s is not None and self.participation is None:
            raise ValueError("participation_window_s needs participation")
        return self

    @classmethod
    def from_dict(cls, data: Any, what: str = "risk limits") -> RiskLimits:
        """Validate decoded configuration; one-line ``ConfigError`` naming the field."""
        if not isinstance(data, dict):
            raise ConfigError(f"{what} must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_pydantic_error(what, exc)) from None

    @classmethod
    def from_constraints(cls, constraints: OrderConstraints) -> RiskLimits:
        """An order's own hard limits (``OrderConstraints``) as guard limits."""
        return cls(
            child_max=constraints.child_max,
            participation=constraints.participation,
            price_band_bps=constraints.price_band_bps,
        )

    def merge(self, other: RiskLimits) -> RiskLimits:
        """The tighter of two sets of limits (an order's limits tighten the firm's): the
        smaller cap, the longer window and resting time, both lists of restricted symbols."""
        out: dict[str, Any] = {}
        smaller = ("child_max", "adv_fraction", "remaining_fraction", "participation",
                   "price_band_bps", "max_child_value", "message_limit", "cancel_limit",
                   "repeat_fill_limit", "locate_shares", "adv_shares")
        longer = ("participation_window_s", "min_resting_s", "duplicate_window_s")
        for name in smaller:
            a, b = getattr(self, name), getattr(other, name)
            out[name] = b if a is None else a if b is None else min(a, b)
        for name in longer:
            a, b = getattr(self, name), getattr(other, name)
            out[name] = b if a is None else a if b is None else max(a, b)
        for name in ("message_window_s", "cancel_window_s", "repeat_window_s"):
            out[name] = max(getattr(self, name), getattr(other, name))
        out["remaining_floor"] = min(self.remaining_floor, other.remaining_floor)
        out["size_rule"] = "both" if "both" in (self.size_rule, other.size_rule) else "either"
        out["restricted_symbols"] = tuple(
            dict.fromkeys(self.restricted_symbols + other.restricted_symbols)
        )
        return RiskLimits(**out)


# -- verdicts --------------------------------------------------------------------------------
#: Why the guard acted on a child order (``RiskGuard.check``'s per-order code); 0 = passed.
#: Codes 1-7 are caps (the order was cut and still went out), 8-16 prohibitions (refused).
GUARD_REASONS: tuple[str, ...] = (
    "",
    "child order above child_max (cut)",
    "child order above the ADV cap (cut)",
    "child order above the share of the remaining quantity (cut)",
    "child order above the participation cap over the rolling window (cut)",
    "limit price beyond the price band around the mid (cut to the band's edge)",
    "child order value above max_child_value (cut)",
    "child order above what the parent order has left (cut)",
    "parent order finished or past its horizon (refused)",
    "message-rate limit reached (refused)",
    "cancel-rate throttle reached (cancel / replace refused)",
    "working order has not rested min_resting_s (cancel / replace refused)",
    "repeated-execution throttle tripped (latched until re-enabled)",
    "duplicate of the previous child order (refused)",
    "restricted symbol (refused)",
    "sell beyond the shares located for short sale (refused)",
    "kill switch (refused; working order cancelled)",
)
(
    GUARD_PASSED,
    GUARD_CHILD_MAX,
    GUARD_ADV,
    GUARD_REMAINING,
    GUARD_PARTICIPATION,
    GUARD_PRICE_BAND,
    GUARD_VALUE,
    GUARD_PARENT_TOTAL,
    GUARD_DONE,
    GUARD_MESSAGE_RATE,
    GUARD_CANCEL_RATE,
    GUARD_MIN_RESTING,
    GUARD_REPEAT,
    GUARD_DUPLICATE,
    GUARD_RESTRICTED,
    GUARD_LOCATE,
    GUARD_KILL,
) = range(17)
#: the first prohibition code: a verdict >= this refused the child order
GUARD_FIRST_REJECT = GUARD_DONE


def guard_reason(code: int) -> str:
    """The text a guard code stands for."""
    return GUARD_REASONS[int(code)]


def is_guard_reject(code: NDArray[np.int16] | int) -> Any:
    """Whether a verdict refused the child order (a prohibition), not just cut it."""
    return np.asarray(code) >= GUARD_FIRST_REJECT


class KillSwitch:
    """Stop new child orders and cancel the working ones: per order, per policy, globally.

    One switch may be shared by several guards (a desk's books); flipping it takes effect at
    the next ``check``.
    """

    def __init__(self, n_orders: int, policies: Sequence[str] = ()):
        self.orders = np.zeros(n_orders, dtype=bool)
        self.all = False
        self.policies: dict[str, bool] = dict.fromkeys(policies, False)

    def kill_all(self) -> None:
        self.all = True

    def kill_orders(self, ids: NDArray[np.intp] | Sequence[int]) -> None:
        self.orders[np.asarray(ids, dtype=np.intp)] = True

    def kill_policy(self, name: str) -> None:
        self.policies[name] = True

    def release_all(self) -> None:
        """Lift every kill (global, per policy and per order): a manual decision."""
        self.all = False
        self.orders[:] = False
        for name in self.policies:
            self.policies[name] = False

    def killed(self, policy_names: Sequence[str], policy_idx: NDArray[np.int64]) -> NDArray:
        """Per order: whether any of its switches is on."""
        if self.all:
            return np.ones(self.orders.shape[0], dtype=bool)
        if not any(self.policies.values()):  # the hot path: no policy killed
            return self.orders
        on = [self.policies.get(name, False) for name in policy_names]
        if not any(on):
            return self.orders
        return self.orders | np.asarray(on, dtype=bool)[policy_idx]


_NO_LIMIT = np.iinfo(np.int64).max
_MARKET_CODE = ORDER_TYPE_CODES[OrderType.MARKET]
_IOC_CODE = ORDER_TYPE_CODES[OrderType.IOC]
_LIMIT_CODE = ORDER_TYPE_CODES[OrderType.LIMIT]
_MARKETABLE_CODE = ORDER_TYPE_CODES[OrderType.MARKETABLE_LIMIT]
_EMPTY_F = np.zeros(0)
# columns of RiskGuard._ints (per-order integer state)
_FILLED, _WORKING, _LAST_QTY, _LAST_TYPE, _MSG_HEAD, _CXL_HEAD, _FILL_HEAD, _PART_HEAD = range(8)
# columns of RiskGuard._floats
_REST_SINCE, _LAST_T, _LAST_PX = range(3)
# positions in RiskGuard._lim_f
_L_TICK, _L_REPEAT_WINDOW = 8, 10


class GuardArrays(NamedTuple):
    """``RiskGuard``'s per-order state and limits as the compiled checks read them, by name
    (``g.ints[i, _FILLED]``). Built once with the guard: every array is updated in place,
    never replaced. The rolling windows stay apart (``None`` for a ring that is off, so numba
    compiles its branch out)."""

    latched: NDArray[np.bool_]
    static: NDArray[np.int64]  # rows qty, side, restricted
    horizon: NDArray[np.float64]
    ints: NDArray[np.int64]  # columns _FILLED ... _PART_HEAD
    floats: NDArray[np.float64]  # columns _REST_SINCE, _LAST_T, _LAST_PX
    lim_i: NDArray[np.int64]
    lim_f: NDArray[np.float64]
    cap_reason: NDArray[np.int16]  # size_cap's binding control
    last_code: NDArray[np.int16]  # check's verdict
    last_flags: NDArray[np.int32]  # check's controls that acted
    step_seconds: float
    needs_volume: bool


class GuardInputs(NamedTuple):
    """What a decision's checks read from the caller, per order: the clock (seconds), the
    mid, the step's market volume (empty: none), who is live, whose decision is the last, and
    who is killed."""

    t: NDArray[np.float64]
    mid: NDArray[np.float64]
    volume: NDArray[np.float64]
    active: NDArray[np.bool_]
    final: NDArray[np.bool_]
    killed: NDArray[np.bool_]


class RiskGuard:
    """Pre-trade controls for ``n_orders`` parent orders (``side`` ±1, ``qty`` shares each).

    ``step_seconds``: the caller's decision interval (the default participation window, and the
    core's clock ``k × step_seconds``); ``tick_size``: the price grid band edges are rounded
    onto (0: continuous prices); ``horizon_s``: nothing is sent at or after it; ``policy``: the
    policy name per order (the kill switch's per-policy key).
    """

    def __init__(
        self,
        limits: RiskLimits,
        n_orders: int,
        side: int | NDArray[np.int64],
        qty: int | NDArray[np.int64],
        symbol: str | Sequence[str] = "",
        step_seconds: float = 1.0,
        tick_size: float = 0.0,
        horizon_s: float | NDArray[np.float64] = math.inf,
        adv_shares: float | None = None,
        policy: str | Sequence[str] = "",
        kill: KillSwitch | None = None,
    ):
        if not step_seconds > 0:
            raise ConfigError(f"guard field 'step_seconds' = {step_seconds!r} must be > 0")
        n = int(n_orders)
        self.limits = limits
        self.n_orders = n
        self._shape = (n,)
        self.step_seconds = float(step_seconds)
        self.tick_size = float(tick_size)
        self.side = np.broadcast_to(np.asarray(side, dtype=np.int64), (n,)).copy()
        self.qty = np.broadcast_to(np.asarray(qty, dtype=np.int64), (n,)).copy()
        self.horizon_s = np.broadcast_to(np.asarray(horizon_s, dtype=np.float64), (n,)).copy()
        symbols = [symbol] * n if isinstance(symbol, str) else list(symbol)
        if len(symbols) != n:
            raise ConfigError(f"guard field 'symbol' has {len(symbols)} entries for {n} orders")
        restricted = set(limits.restricted_symbols)
        self.restricted = np.array([s in restricted for s in symbols], dtype=bool)
        names = [policy] * n if isinstance(policy, str) else list(policy)
        if len(names) != n:
            raise ConfigError(f"guard field 'policy' has {len(names)} entries for {n} orders")
        self.policy_names = tuple(dict.fromkeys(names))
        index = {name: j for j, name in enumerate(self.policy_names)}
        self.policy_idx = np.array([index[name] for name in names], dtype=np.int64)
        self.kill = kill or KillSwitch(n, self.policy_names)
        if self.kill.orders.shape[0] != n:
            raise ConfigError(f"kill switch covers {self.kill.orders.shape[0]} orders, not {n}")
        lim = limits
        adv = lim.adv_shares if lim.adv_shares is not None else adv_shares
        if lim.adv_fraction is not None and adv is None:
            raise ConfigError("risk limits field 'adv_fraction' needs adv_shares (none given)")
        self.adv_shares = adv
        # the controls' constants, in the form the kernels take
        self._child_max = _NO_LIMIT if lim.child_max is None else int(lim.child_max)
        self._adv_cap = (
            -1 if lim.adv_fraction is None else math.floor(lim.adv_fraction * float(adv))
        )
        self._rem_frac = -1.0 if lim.remaining_fraction is None else lim.remaining_fraction
        self._rem_floor = int(lim.remaining_floor)
        self._both = lim.size_rule == "both"
        self._participation = -1.0 if lim.participation is None else lim.participation
        self._band = 0.0 if lim.price_band_bps is None else lim.price_band_bps * 1e-4
        self._max_value = -1.0 if lim.max_child_value is None else lim.max_child_value
        self._locate = -1 if lim.locate_shares is None else int(lim.locate_shares)
        self._dup_window = -1.0 if lim.duplicate_window_s is None else lim.duplicate_window_s
        self._min_rest = -1.0 if lim.min_resting_s is None else lim.min_resting_s
        self._part_window = (
            -1.0 if lim.participation_window_s is None else lim.participation_window_s
        )
        self._lim_i = np.array([self._child_max, self._adv_cap, self._rem_floor,
                                int(self._both), self._locate], dtype=np.int64)
        self._lim_f = np.array([
            self._rem_frac, self._participation, self._max_value, self._part_window,
            lim.message_window_s, lim.cancel_window_s, self._min_rest, self._dup_window,
            self.tick_size, self._band, lim.repeat_window_s,
        ])
        # static per-order facts in one array (a kernel argument costs time at every call)
        self._static = np.zeros((3, n), dtype=np.int64)  # rows: qty, side, restricted
        self._static[0] = self.qty
        self._static[1] = self.side
        self._static[2] = self.restricted
        #: whether ``size_cap`` / ``check`` need the step's market volume
        self.needs_volume = lim.participation is not None
        # rolling windows: rings of event times (and per-step volumes), one row per order
        msg_n = lim.message_limit or 0
        cxl_n = lim.cancel_limit or 0
        fill_n = (lim.repeat_fill_limit + 1) if lim.repeat_fill_limit else 0
        part_n = (
            math.ceil(self._part_window / self.step_seconds) + 1
            if self._part_window > 0 else 0
        )
        #: whether any control reads the windows or the previous child order (message, cancel
        #: and repeated-fill rings, a participation window, duplicates, resting time); without
        #: one, ``record`` books only the filled and working shares (the rest is never read)
        self._windows = bool(msg_n or cxl_n or fill_n or part_n) or (
            self._dup_window > 0.0 or self._min_rest > 0.0
        )
        #: whether the guard can only refuse or cut to what the parent has left: no size cap
        #: (child_max, ADV, remaining, participation, value), no band, no locate and no window
        #: control (duplicates included). Then its size cap is "no limit" unless a refusal
        #: (kill switch, finished or horizon, restricted, latched) stops the order, and the
        #: execution core's fused step runs its one-loop kernel (limits are fixed once built)
        self.stops_only = not self._windows and not _any_size_cap(
            self._child_max, self._adv_cap, self._rem_frac, self._participation,
            self._max_value) and self._band <= 0.0 and self._locate < 0
        self._msg_t = np.zeros((n, msg_n))
        self._cxl_t = np.zeros((n, cxl_n))
        self._fill_t = np.zeros((n, fill_n))
        self._part = np.zeros((n, part_n, 3))  # (t, our filled shares, market volume)
        # what the checks take: None for a ring that is off, so numba compiles its branch out
        # of the kernel (a control that is off costs nothing per order)
        self._msg_arg = self._msg_t if msg_n else None
        self._cxl_arg = self._cxl_t if cxl_n else None
        self._part_arg = self._part if part_n else None
        self._ints = np.zeros((n, 8), dtype=np.int64)
        self._floats = np.zeros((n, 3))
        self.latched = np.zeros(n, dtype=bool)
        #: the last ``check``'s verdict per order (GUARD_* code) and every control that acted
        #: (bit ``1 << code``)
        self.last_code = np.zeros(n, dtype=np.int16)
        self.last_flags = np.zeros(n, dtype=np.int32)
        #: the last ``size_cap``'s binding control per order (0: no limit binds)
        self.cap_reason = np.zeros(n, dtype=np.int16)
        #: what the kernels share, by name (the arrays above, never replaced)
        self.arrays = GuardArrays(self.latched, self._static, self.horizon_s, self._ints,
                                  self._floats, self._lim_i, self._lim_f, self.cap_reason,
                                  self.last_code, self.last_flags, self.step_seconds,
                                  self.needs_volume)
        self.reset(None)

    def use_tick(self, tick_size: float) -> None:
        """Put band edges on the venue's price grid (the execution core calls this with its
        market's tick; 0: continuous prices, where a market order keeps no price)."""
        self.tick_size = float(tick_size)
        self._lim_f[_L_TICK] = self.tick_size

    # -- state ------------------------------------------------------------------------------
    def reset(self, ids: NDArray[np.intp] | None = None) -> None:
        """New parent orders in ``ids`` (all when None): clear their windows, fills and latch
        (the kill switch is not touched: lifting a kill is a manual decision)."""
        if ids is not None:  # a partial reset (an autoreset): one compiled pass
            _reset_rows_kernel(np.ascontiguousarray(ids, dtype=np.intp), self._msg_t,
                               self._cxl_t, self._fill_t, self._part, self._ints, self._floats,
                               self.latched)
            return
        for arr in (self._msg_t, self._cxl_t, self._fill_t, self._part):
            arr[:] = -np.inf
        self._ints[:] = 0
        self._floats[:] = -np.inf
        self._floats[:, _LAST_PX] = np.nan
        self.latched[:] = False

    def reenable(self, ids: NDArray[np.intp] | Sequence[int] | None = None) -> None:
        """Lift the latched repeated-execution throttle of ``ids`` (all when None) by hand."""
        sel: Any = slice(None) if ids is None else np.asarray(ids, dtype=np.intp)
        self.latched[sel] = False
        self._fill_t[sel] = -np.inf

    @property
    def filled(self) -> NDArray[np.int64]:
        return self._ints[:, _FILLED]

    @property
    def working(self) -> NDArray[np.int64]:
        return self._ints[:, _WORKING]

    def killed(self) -> NDArray[np.bool_]:
        return self.kill.killed(self.policy_names, self.policy_idx)

    # -- the hot path -----------------------------------------------------------------------
    def band_edges(self, mid: NDArray[np.float64]) -> NDArray[np.float64]:
        """The most aggressive limit price the band allows each order now (a buy's ceiling, a
        sell's floor), on the tick grid; an empty array without a band."""
        if self._band <= 0.0:
            return _EMPTY_F
        edges = np.empty(self.n_orders)
        _band_edges_kernel(np.ascontiguousarray(mid, dtype=np.float64), self.side,
                           self.tick_size, self._band, edges)
        return edges

    def size_cap(
        self,
        t: NDArray[np.float64],
        mid: NDArray[np.float64],
        volume: NDArray[np.float64] | None,
        active: NDArray[np.bool_],
    ) -> NDArray[np.int64]:
        """The largest NEW child order each parent order may send at time ``t`` (seconds):
        every size control, and 0 when killed, finished, restricted or throttled. ``volume``:
        the step's market volume (needed with a participation limit). ``cap_reason`` says
        which control binds."""
        cap = np.empty(self.n_orders, dtype=np.int64)
        x = GuardInputs(self._f64(t), self._f64(mid), self._volume(volume), active, active,
                        self.killed())  # (final: not read)
        _size_cap_kernel(self.arrays, x, self._msg_arg, self._part_arg, cap)
        return cap

    def check(
        self,
        orders: ChildOrderBatch,
        t: NDArray[np.float64],
        mid: NDArray[np.float64],
        volume: NDArray[np.float64] | None,
        active: NDArray[np.bool_],
        final: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.int16]:
        """Check (and fix, in place) every outgoing child order; per order the verdict
        (``GUARD_*``: 0 passed, a cap code = cut, a prohibition code = refused). ``final``:
        the order's last decision, whose cancel of the working order is always allowed (as
        a kill's: neither counts against a throttle; the last decision's new child order
        does). Also in ``last_code`` and ``last_flags``."""
        fin = np.zeros(self.n_orders, dtype=bool) if final is None else final
        x = GuardInputs(self._f64(t), self._f64(mid), self._volume(volume), active, fin,
                        self.killed())
        _check_kernel(self.arrays, x, orders.arrays(), self._msg_arg, self._cxl_arg,
                      self._part_arg)
        return self.last_code

    def record(
        self,
        orders: ChildOrderBatch,
        fills: FillBatch,
        t: NDArray[np.float64],
        volume: NDArray[np.float64] | None,
        active: NDArray[np.bool_],
    ) -> None:
        """Book the venue's answer to ``orders`` (as ``check`` left them) into the windows:
        messages, cancels, fills (the repeated-execution throttle latches here), the
        participation window, filled and working shares."""
        fill_qty = _as(fills.qty, np.int64)
        working = _as(fills.working_qty, np.int64)
        if not self._windows:
            _record_shares_kernel(self.arrays, FillArrays(fill_qty, fills.avg_px, fills.n_fills,
                                                          working, fills.cancelled_qty,
                                                          fills.reject), active)
            return
        _record_kernel(
            orders.qty, orders.order_type, orders.limit_px, orders.cancel, fill_qty,
            np.ascontiguousarray(fills.n_fills), working, np.ascontiguousarray(fills.reject),
            self._f64(t), self._volume(volume), active, self._ints, self._floats, self._msg_t,
            self._cxl_t, self._fill_t, self._lim_f[_L_REPEAT_WINDOW], self.latched, self._part,
        )

    def _f64(self, x: NDArray) -> NDArray[np.float64]:
        if (
            type(x) is np.ndarray and x.dtype == np.float64 and x.shape == self._shape
            and x.flags.c_contiguous
        ):
            return x  # the hot path: no copy
        return np.ascontiguousarray(np.broadcast_to(x, self._shape), dtype=np.float64)

    def _volume(self, volume: NDArray[np.float64] | None) -> NDArray[np.float64]:
        if volume is None:
            if self.needs_volume:
                raise ConfigError("risk limit 'participation' needs the step's market volume")
            return _EMPTY_F
        return self._f64(volume)


def _as(x: NDArray, dtype: type) -> NDArray:
    """``x`` as a contiguous array of ``dtype``; no copy (and no numpy call) when it is one."""
    if type(x) is np.ndarray and x.dtype == dtype and x.flags.c_contiguous:
        return x
    return np.ascontiguousarray(x, dtype=dtype)


# -- compiled kernels ---------------------------------------------------------------------------
_TOL = 1e-9  # seconds: k*dt - (k-1)*dt rounding never moves an event in or out of a window


@njit(cache=True, inline="always")
def _in_window(t: float, te: float, window: float) -> bool:
    return t - te < window - _TOL


@njit(cache=True, inline="always")
def _count(ring: NDArray[np.float64], i: int, t: float, window: float) -> int:
    c = 0
    for j in range(ring.shape[1]):
        c += 1 if _in_window(t, ring[i, j], window) else 0
    return c


@njit(cache=True, inline="always")
def _push(ring: NDArray[np.float64], ints: NDArray[np.int64], col: int, i: int, t: float) -> None:
    m = ring.shape[1]
    if m == 0:
        return
    h = ints[i, col]
    ring[i, h] = t
    ints[i, col] = (h + 1) % m


@njit(cache=True, inline="always")
def _unpack_i(lim_i: NDArray[np.int64]) -> tuple[int, int, int, bool, int]:
    return lim_i[0], lim_i[1], lim_i[2], lim_i[3] != 0, lim_i[4]


@njit(cache=True, inline="always")
def _fill_row(a: NDArray[np.float64], i: int, value: float) -> None:
    """Row ``i`` of a (n, width) array set to ``value``, element by element (a row view per
    order costs a reference count)."""
    for j in range(a.shape[1]):
        a[i, j] = value


@njit(cache=True, _nrt=False)
def _reset_rows_kernel(
    ids: NDArray[np.intp], msg_t: NDArray[np.float64], cxl_t: NDArray[np.float64],
    fill_t: NDArray[np.float64], part: NDArray[np.float64], ints: NDArray[np.int64],
    floats: NDArray[np.float64], latched: NDArray[np.bool_],
) -> None:
    """``RiskGuard.reset`` of orders ``ids``: empty windows, nothing filled or working, no
    previous child order, no latch."""
    for r in range(ids.shape[0]):
        i = ids[r]
        _fill_row(msg_t, i, -np.inf)
        _fill_row(cxl_t, i, -np.inf)
        _fill_row(fill_t, i, -np.inf)
        for j in range(part.shape[1]):
            for q in range(part.shape[2]):
                part[i, j, q] = -np.inf
        for j in range(ints.shape[1]):
            ints[i, j] = 0
        _fill_row(floats, i, -np.inf)
        floats[i, _LAST_PX] = np.nan
        latched[i] = False


@njit(cache=True)
def _band_edges_kernel(
    mid: NDArray[np.float64], side: NDArray[np.int64], tick: float, band: float,
    edges: NDArray[np.float64],
) -> None:
    for i in range(mid.shape[0]):
        if tick > 0.0:
            if side[i] > 0:
                edges[i] = np.floor(mid[i] * (1.0 + band) / tick + 1e-9) * tick
            else:
                edges[i] = np.ceil(mid[i] * (1.0 - band) / tick - 1e-9) * tick
        else:
            edges[i] = mid[i] * (1.0 + band) if side[i] > 0 else mid[i] * (1.0 - band)


@njit(cache=True, inline="always")
def _participation_cap(
    part: NDArray[np.float64], window: float, volume: NDArray[np.float64], p: float, i: int,
    t: float,
) -> int:
    """floor(p × market volume in the window, this step's included) − our fills in it."""
    vol = volume[i]
    ours = 0.0
    if window > 0.0:
        for j in range(part.shape[1]):
            if _in_window(t, part[i, j, 0], window):
                ours += part[i, j, 1]
                vol += part[i, j, 2]
    cap = np.int64(np.floor(p * vol)) - np.int64(ours)
    return max(cap, 0)


@njit(cache=True, inline="always")
def _step_participation_cap(volume: NDArray[np.float64], p: float, i: int) -> int:
    """``_participation_cap`` without a window (the decision step alone), same operations."""
    cap = np.int64(np.floor(p * volume[i])) - np.int64(0.0)
    return max(cap, 0)


@njit(cache=True, inline="always")
def _sizes(
    left: int, px: float, part_cap: int, child_max: int, adv_cap: int, rem_frac: float,
    rem_floor: int, both: bool, max_value: float,
) -> tuple[int, int]:
    """The size caps of one order (child_max, ADV / remaining, participation, value) and the
    one that binds: (cap, code). ``left``: what the parent has not filled; ``part_cap``: the
    participation cap (-1: none). Scalars only: numba compiles this to a few instructions,
    where array arguments cost a call per order."""
    cap = child_max
    code = 1 if child_max < _NO_LIMIT else 0
    size = -1
    size_code = 0
    rem = -1
    if rem_frac > 0.0:
        rem = min(left, max(np.int64(np.floor(rem_frac * left)), rem_floor))
    if adv_cap >= 0 and rem >= 0:
        size = min(adv_cap, rem) if both else max(adv_cap, rem)
        size_code = 2 if size == adv_cap else 3
    elif adv_cap >= 0:
        size, size_code = adv_cap, 2
    elif rem >= 0:
        size, size_code = rem, 3
    if size >= 0 and size < cap:
        cap, code = size, size_code
    if part_cap >= 0 and part_cap < cap:
        cap, code = part_cap, 4
    if max_value > 0.0 and px > 0.0:
        v = np.int64(np.floor(max_value / px))
        if v < cap:
            cap, code = v, 6
    return cap, code


@njit(cache=True, inline="always")
def _any_size_cap(
    child_max: int, adv_cap: int, rem_frac: float, participation: float, max_value: float
) -> bool:
    """Whether any size cap is on; without one ``_sizes`` is (no limit, 0), and the kernels
    skip it (measured: a third of ``size_cap``'s time with no limits)."""
    return child_max < _NO_LIMIT or adv_cap >= 0 or rem_frac > 0.0 or participation > 0.0 or (
        max_value > 0.0
    )


class Limits(NamedTuple):
    """The controls' constants as scalars (``_limits``): unpacked once per kernel call."""

    child_max: int
    adv_cap: int
    rem_floor: int
    both: bool
    locate: int
    rem_frac: float
    participation: float
    max_value: float
    part_window: float
    msg_window: float
    cxl_window: float
    min_rest: float
    dup_window: float
    tick: float
    band: float
    sized: bool  # any size cap on (``_any_size_cap``)


@njit(cache=True, inline="always")
def _limits(g: GuardArrays) -> Limits:
    child_max, adv_cap, rem_floor, both, locate = _unpack_i(g.lim_i)
    f = g.lim_f
    rem_frac, participation, max_value = f[0], f[1], f[2]
    sized = _any_size_cap(child_max, adv_cap, rem_frac, participation, max_value)
    return Limits(child_max, adv_cap, rem_floor, both, locate, rem_frac, participation,
                  max_value, f[3], f[4], f[5], f[6], f[7], f[8], f[9], sized)


# Each control's per-order body is one inline function of (structures, order), and the batch
# kernels loop over it, compiled without numba's reference counting (``_nrt=False``: they
# allocate nothing; each array taken from a structure would otherwise cost an atomic increment
# and decrement per order).
@njit(cache=True, inline="always")
def _stopped(g: GuardArrays, x: GuardInputs, i: int) -> int:
    """What stops order ``i`` whatever it asks, in this order: the kill switch (16), a
    finished order or its horizon (8), a blocked instrument (14), a latched order (12);
    0: none. The size cap and the check refuse on the same rule."""
    return _stop_code(x.killed[i], x.active[i], x.t[i], g.horizon[i], g.ints[i, _FILLED],
                      g.static[0][i], g.static[2, i], g.latched[i])


@njit(cache=True, inline="always")
def _stop_code(killed: bool, active: bool, t: float, horizon: float, filled: int, qty: int,
               restricted: int, latched: bool) -> int:
    """``_stopped`` of one order's values (the one-loop step passes its registers)."""
    if killed:
        return 16
    if not active or t >= horizon or filled >= qty:
        return 8
    if restricted:
        return 14
    if latched:
        return 12
    return 0


@njit(cache=True, inline="always")
def _size_limit(
    g: GuardArrays, x: GuardInputs, lim: Limits, part: NDArray[np.float64] | None, ref: float,
    i: int,
) -> tuple[int, int]:
    """Order ``i``'s size limit at price ``ref`` and the control that binds it (participation
    feeds the sizes; ``(_NO_LIMIT, 0)`` where no size control is set): the one rule the size
    cap and the check share."""
    pc = -1
    if lim.participation > 0.0:
        if part is not None:
            pc = _participation_cap(part, lim.part_window, x.volume, lim.participation, i,
                                    x.t[i])
        else:
            pc = _step_participation_cap(x.volume, lim.participation, i)
    if not lim.sized:
        return _NO_LIMIT, 0
    return _sizes(g.static[0][i] - g.ints[i, _FILLED], ref, pc, lim.child_max, lim.adv_cap,
                  lim.rem_frac, lim.rem_floor, lim.both, lim.max_value)


@njit(cache=True, inline="always")
def _size_cap_one(
    g: GuardArrays, x: GuardInputs, lim: Limits, msg_t: NDArray[np.float64] | None,
    part: NDArray[np.float64] | None, i: int,
) -> int:
    """Order ``i``'s size cap (``RiskGuard.size_cap``), returned, and its binding control,
    into ``g.cap_reason``."""
    t = x.t
    ints = g.ints
    side = g.static[1]
    c = np.int64(0)
    code = _stopped(g, x, i)
    if code == 0 and msg_t is not None and (
        _count(msg_t, i, t[i], lim.msg_window) >= msg_t.shape[1]
    ):
        code = 9
    elif code == 0:
        c, code = _size_limit(g, x, lim, part, x.mid[i], i)
        if lim.locate >= 0 and side[i] < 0:
            room = max(lim.locate - ints[i, _FILLED] - ints[i, _WORKING], 0)
            if room < c:
                c, code = room, 15
    g.cap_reason[i] = code
    return c


@njit(cache=True, _nrt=False)
def _size_cap_kernel(
    g: GuardArrays, x: GuardInputs, msg_t: NDArray[np.float64] | None,
    part: NDArray[np.float64] | None, cap: NDArray[np.int64],
) -> None:
    """``RiskGuard.size_cap`` into ``cap``; the binding control into ``g.cap_reason``."""
    lim = _limits(g)
    for i in range(x.t.shape[0]):
        cap[i] = _size_cap_one(g, x, lim, msg_t, part, i)


@njit(cache=True, inline="always")
def _check_one(
    g: GuardArrays, x: GuardInputs, o: OrderArrays, lim: Limits,
    msg_t: NDArray[np.float64] | None, cxl_t: NDArray[np.float64] | None,
    part: NDArray[np.float64] | None, i: int,
) -> None:
    """``RiskGuard.check`` of order ``i``: fixes ``o`` in place; the verdict into
    ``g.last_code`` and ``g.last_flags``."""
    q, otype, px, cancel, child_id = o.qty, o.order_type, o.limit_px, o.cancel, o.child_id
    t, mid = x.t, x.mid
    ints, floats = g.ints, g.floats
    qty = g.static[0]
    side = g.static[1]
    band, tick = lim.band, lim.tick
    code = 0
    flags = 0
    working = ints[i, _WORKING]
    cancels = cancel[i] and working > 0
    exempt = x.final[i]  # the horizon's cancel goes whatever the throttles say
    reject = _refusal(_stopped(g, x, i), q[i])
    if reject == 0 and q[i] > 0:
        # caps: the price to the band's edge, then the sizes
        if band > 0.0:
            if tick > 0.0:
                if side[i] > 0:
                    edge = np.floor(mid[i] * (1.0 + band) / tick + 1e-9) * tick
                else:
                    edge = np.ceil(mid[i] * (1.0 - band) / tick - 1e-9) * tick
            else:
                edge = mid[i] * (1.0 + band) if side[i] > 0 else mid[i] * (1.0 - band)
            if otype[i] == _MARKET_CODE and tick > 0.0:
                otype[i] = _IOC_CODE  # a market order may not walk beyond the band
                px[i] = edge
                flags |= 1 << 5
                code = 5
            elif (not np.isnan(px[i])) and side[i] * (px[i] - edge) > 1e-12:
                px[i] = edge
                flags |= 1 << 5
                code = 5
        ref = mid[i] if np.isnan(px[i]) else px[i]
        c, c_code = _size_limit(g, x, lim, part, ref, i)
        if q[i] > c:
            q[i] = c
            flags |= 1 << c_code
            code = c_code
        q[i], code, flags = _parent_cut(q[i], qty[i] - ints[i, _FILLED], working, cancels,
                                        code, flags)
    if reject == 0 and q[i] > 0:
        # prohibitions on what is left of the order
        if lim.locate >= 0 and side[i] < 0 and (
            ints[i, _FILLED] + (0 if cancels else working) + q[i] > lim.locate
        ):
            reject = 15
        elif lim.dup_window > 0.0 and q[i] == ints[i, _LAST_QTY] and (
            otype[i] == ints[i, _LAST_TYPE]
        ) and _in_window(t[i], floats[i, _LAST_T], lim.dup_window) and (
            (np.isnan(px[i]) and np.isnan(floats[i, _LAST_PX])) or px[i] == floats[i, _LAST_PX]
        ):
            reject = 13
    if reject == 0 and msg_t is not None:
        # the horizon's cancel is free; its new order counts like any other
        need = (1 if q[i] > 0 else 0) + (1 if cancels and not exempt else 0)
        if need > 0 and _count(msg_t, i, t[i], lim.msg_window) + need > msg_t.shape[1]:
            reject = 9
    if reject == 0 and cancels and not exempt:
        if cxl_t is not None and _count(cxl_t, i, t[i], lim.cxl_window) >= cxl_t.shape[1]:
            reject = 10
        elif lim.min_rest > 0.0 and t[i] - floats[i, _REST_SINCE] < lim.min_rest - _TOL:
            reject = 11
    q[i], cancel[i], child_id[i], code, flags = _refused(reject, q[i], cancel[i], child_id[i],
                                                         working, exempt, code, flags)
    g.last_code[i] = code
    g.last_flags[i] = flags


# The check's pieces on one order's values, shared by ``_check_one`` and the execution core's
# one-loop step (``execrl.env.core``), which keeps them in registers.
@njit(cache=True, inline="always")
def _refusal(stop: int, q: int) -> int:
    """The check's refusal from ``_stopped``'s code: only the kill switch stops an order that
    sends nothing."""
    return 0 if stop != 16 and q <= 0 else stop


@njit(cache=True, inline="always")
def _parent_cut(q: int, unfilled: int, working: int, cancels: bool, code: int, flags: int
                ) -> tuple[int, int, int]:
    """The child cut to what the parent has left (unfilled, less what still works unless the
    order cancels it first): (shares, code, flags)."""
    left = unfilled - (0 if cancels else working)
    if q > left:
        return max(left, 0), 7, flags | (1 << 7)
    return q, code, flags


@njit(cache=True, inline="always")
def _refused(reject: int, q: int, cancel: bool, child_id: int, working: int, exempt: bool,
             code: int, flags: int) -> tuple[int, bool, int, int, int]:
    """The order after the check's verdict: (shares, cancel, child id, code, flags). A refusal
    sends nothing; a kill cancels what works; the horizon's cancel stands whatever was
    refused; an order of no shares has no child id."""
    if reject != 0:
        q = 0
        cancel = working > 0 and (reject == 16 or (exempt and cancel))
        code = reject
        flags |= 1 << reject
    if q == 0:
        child_id = 0
    return q, cancel, child_id, code, flags


@njit(cache=True, _nrt=False)
def _check_kernel(
    g: GuardArrays, x: GuardInputs, o: OrderArrays, msg_t: NDArray[np.float64] | None,
    cxl_t: NDArray[np.float64] | None, part: NDArray[np.float64] | None,
) -> None:
    """``RiskGuard.check``: fixes ``o`` in place; the verdicts into ``g.last_code`` and
    ``g.last_flags``."""
    lim = _limits(g)
    for i in range(o.qty.shape[0]):
        _check_one(g, x, o, lim, msg_t, cxl_t, part, i)


@njit(cache=True, inline="always")
def _record_shares_one(g: GuardArrays, f: FillArrays, active: NDArray[np.bool_], i: int
                       ) -> None:
    _record_shares(g.ints, i, active[i], f.qty[i], f.working_qty[i])


@njit(cache=True, inline="always")
def _record_shares(ints: NDArray[np.int64], i: int, active: bool, q: int, working: int) -> None:
    """Order ``i``'s filled and working shares after the venue's answer (when live)."""
    if active:
        ints[i, _FILLED] += q
        ints[i, _WORKING] = working


@njit(cache=True, _nrt=False)
def _record_shares_kernel(g: GuardArrays, f: FillArrays, active: NDArray[np.bool_]) -> None:
    """``_record_kernel`` without window controls: only the filled and working shares."""
    for i in range(f.qty.shape[0]):
        _record_shares_one(g, f, active, i)


@njit(cache=True)
def _record_kernel(
    q: NDArray[np.int64], otype: NDArray[np.int8], px: NDArray[np.float64],
    cancel: NDArray[np.bool_], fill_qty: NDArray[np.int64], n_fills: NDArray[np.int32],
    working_after: NDArray[np.int64], reject: NDArray[np.int8], t: NDArray[np.float64],
    volume: NDArray[np.float64], active: NDArray[np.bool_], ints: NDArray[np.int64],
    floats: NDArray[np.float64], msg_t: NDArray[np.float64], cxl_t: NDArray[np.float64],
    fill_t: NDArray[np.float64], repeat_window: float, latched: NDArray[np.bool_],
    part: NDArray[np.float64],
) -> None:
    for i in range(q.shape[0]):
        if not active[i]:
            continue
        ti = t[i]
        if cancel[i] and ints[i, _WORKING] > 0:
            _push(msg_t, ints, _MSG_HEAD, i, ti)
            _push(cxl_t, ints, _CXL_HEAD, i, ti)
        if q[i] > 0:
            _push(msg_t, ints, _MSG_HEAD, i, ti)
            ints[i, _LAST_QTY] = q[i]
            ints[i, _LAST_TYPE] = otype[i]
            floats[i, _LAST_PX] = px[i]
            floats[i, _LAST_T] = ti
            if reject[i] == 0 and (otype[i] == _LIMIT_CODE or otype[i] == _MARKETABLE_CODE):
                floats[i, _REST_SINCE] = ti  # the new order is the one that may rest now
        if fill_t.shape[1] > 0 and n_fills[i] > 0:
            for _ in range(min(n_fills[i], fill_t.shape[1])):
                _push(fill_t, ints, _FILL_HEAD, i, ti)
            if _count(fill_t, i, ti, repeat_window) >= fill_t.shape[1]:
                latched[i] = True  # more than repeat_fill_limit fills in the window
        if part.shape[1] > 0:
            h = ints[i, _PART_HEAD]
            part[i, h, 0] = ti
            part[i, h, 1] = fill_qty[i]
            part[i, h, 2] = volume[i] if volume.shape[0] > 0 else 0.0
            ints[i, _PART_HEAD] = (h + 1) % part.shape[1]
        ints[i, _FILLED] += fill_qty[i]
        ints[i, _WORKING] = working_after[i]
