"""One incremental, batched feature builder fed by market events (seed 000 §2, 001 §2.1, 003).

The same code serves the simulators, the historical replay and a live feed: each reports what
happened as events (``market.events``: trades with their aggressor side, top-k book updates,
the agent's child orders and fills, the working order's queue position), and the builder
turns them into the features a policy observes, for ``n_envs`` independent markets at once.
State lives in arrays; every per-event loop is a compiled numba kernel, never a Python loop
over environments or events.

No look-ahead, by construction. Each environment has a clock: the time of the last event fed
or of the last query. Events must not be older than their environment's clock (ties are
allowed), and ``values(names, t)`` is only answered for ``t`` at or after the clock, which it
then moves to ``t``. So a value at ``t`` depends on exactly the events with time ``<= t`` fed
so far, and no event before ``t`` can be fed once ``t`` has been observed. Streams that arrive
on separate channels (a live feed's trades and book) must be merged in time order first.

Window features are exact: ``tick_flow_10s`` at ``t`` is the signed volume of the trades with
time in ``(t - 10, t]``. Each environment keeps its recent trades in a ring; the ring grows
(doubling) before a batch is applied whenever a batch would push out a trade still inside the
longest window, and a batch that would need more than ``max_trade_capacity`` trades in that
window is refused by name, before anything is applied. Nothing is ever dropped silently.

``FEATURES`` lists every feature with its definition and unit (for the default config;
``describe_features(config)`` for another). ``OnlineNormaliser`` z-scores features with
exponential decay per regime bucket (seed 001 §5), and ``FeatureSchema`` (names, normaliser,
training domain) is saved with a checkpoint so that a policy refuses features it was not
trained on.

Speed (``python -m execrl.market.features``, i.e. ``_speed()`` at the end of this module:
timeit best of 5 after the first compile, on the shared 2-core dev machine, ``n_envs = 1024``,
default config): ``on_trades`` ~27 M trades/s (200 000 trades in one batch, ~7 ms, the reset
before it included); ``on_book`` ~16 M top-5 snapshots/s (one per env, ~65 µs);
``on_fills`` ~38 M fills/s; ``values`` of all 40 features ~0.26 ms (~160 M values/s; the
window features cost most, ~18 ns each, one binary search per env and window).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from execrl.domain import ConfigError, Side
from execrl.domain.errors import describe_pydantic_error
from execrl.market.events import CHILD_ORDER_DTYPE, FILL_DTYPE, TRADE_DTYPE, as_events

__all__ = [
    "FEATURES",
    "FeatureBuilder",
    "FeatureConfig",
    "FeatureSchema",
    "NormaliserState",
    "OnlineNormaliser",
    "describe_features",
]

PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class FeatureConfig(BaseModel):
    """What the builder computes and how much it remembers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    windows_s: Annotated[tuple[PositiveFinite, ...], Field(min_length=1, strict=False)] = (
        10.0,
        30.0,
    )
    """Trailing windows (seconds) of the trade features: tick flow, volume, trade count."""
    top_k: Annotated[int, Field(ge=1, le=50)] = 5
    """Book levels per side the depth, top-k imbalance and level features read."""
    vol_halflife_s: PositiveFinite = 30.0
    """Half-life (seconds) of the exponential weights of the realised volatility."""
    fill_memory: Annotated[int, Field(ge=1)] = 10
    """Last n fills the average slippage is taken over."""
    order_memory: Annotated[int, Field(ge=1)] = 10
    """Last n child orders the recent fill rate is taken over."""
    arrival_vwap_window_s: PositiveFinite | None = None
    """Arrival VWAP over the trades in this many seconds before arrival; None: since reset."""
    trade_capacity: Annotated[int, Field(ge=1)] = 64
    """Initial trades kept per environment; grows (doubling) when a window needs more."""
    max_trade_capacity: Annotated[int, Field(ge=1)] = 1 << 16
    """Most trades an environment may hold within the longest window; more is refused."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [_seconds(w) for w in self.windows_s]
        if len(set(names)) != len(names):
            raise ValueError(f"windows_s = {self.windows_s!r} has duplicate windows")
        if self.trade_capacity > self.max_trade_capacity:
            raise ValueError(
                f"trade_capacity = {self.trade_capacity} is above "
                f"max_trade_capacity = {self.max_trade_capacity}"
            )
        return self

    @classmethod
    def from_dict(cls, data: Any) -> FeatureConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_pydantic_error("feature config", exc)) from None

    @property
    def retention_s(self) -> float:
        """How far back trades are needed: the longest window (and the arrival VWAP's)."""
        longest = max(self.windows_s)
        if self.arrival_vwap_window_s is not None:
            longest = max(longest, self.arrival_vwap_window_s)
        return longest


def _seconds(w: float) -> str:
    return f"{w:g}s"


# -- the feature catalogue ----------------------------------------------------------------------
# A feature is (kind, parameter): the parameter is a window index, a level index or a level
# count. Kinds are module constants so that the compiled kernel sees them as literals.
_MID, _SPREAD_BPS, _IMBALANCE, _BID_DEPTH, _ASK_DEPTH = 0, 1, 2, 3, 4
_BID_QTY, _ASK_QTY, _BID_DIST_BPS, _ASK_DIST_BPS = 5, 6, 7, 8
_TICK_FLOW, _VOLUME, _TRADES, _TIME_SINCE_TRADE, _REALISED_VOL = 9, 10, 11, 12, 13
_ARRIVAL_VWAP, _MID_VS_ARRIVAL_VWAP_BPS, _MID_VS_ARRIVAL_BPS = 14, 15, 16
_QUEUE_AHEAD, _RECENT_FILL_RATE, _AVG_SLIPPAGE_BPS = 17, 18, 19


def _catalogue(config: FeatureConfig) -> dict[str, tuple[int, int, str]]:
    """name -> (kind, parameter, definition with unit), in a stable order."""
    k = config.top_k
    cat: dict[str, tuple[int, int, str]] = {
        "mid": (_MID, 0, "(best bid + best ask) / 2 of the last book update; NaN when a side is "
                "empty [price]"),
        "spread_bps": (_SPREAD_BPS, 0, "quoted spread (best ask - best bid) / mid × 1e4; NaN "
                       "when a side is empty [bps] (seed 000's spread proxy)"),
        "imbalance_1": (_IMBALANCE, 1, "top-of-book imbalance (bid qty - ask qty) / (bid qty + "
                        "ask qty) at the best levels; NaN when both are empty [-1, 1]"),
    }
    if k > 1:
        cat[f"imbalance_{k}"] = (_IMBALANCE, k, f"top-{k} imbalance (bid depth - ask depth) / "
                                 f"(bid depth + ask depth) over the top {k} levels given; NaN "
                                 "when the book is empty [-1, 1]")
    cat[f"bid_depth_{k}"] = (_BID_DEPTH, k, f"shares resting on the top {k} bid levels [shares]")
    cat[f"ask_depth_{k}"] = (_ASK_DEPTH, k, f"shares resting on the top {k} ask levels [shares]")
    for i in range(k):
        cat[f"bid_qty_{i + 1}"] = (_BID_QTY, i, f"shares at bid level {i + 1}, 0 when empty "
                                   "[shares]")
        cat[f"ask_qty_{i + 1}"] = (_ASK_QTY, i, f"shares at ask level {i + 1}, 0 when empty "
                                   "[shares]")
    for i in range(k):
        cat[f"bid_dist_bps_{i + 1}"] = (_BID_DIST_BPS, i, f"(mid - bid level {i + 1} price) / "
                                        "mid × 1e4; NaN when the level or the mid is empty [bps]")
        cat[f"ask_dist_bps_{i + 1}"] = (_ASK_DIST_BPS, i, f"(ask level {i + 1} price - mid) / "
                                        "mid × 1e4; NaN when the level or the mid is empty [bps]")
    for j, w in enumerate(config.windows_s):
        s = _seconds(w)
        cat[f"tick_flow_{s}"] = (_TICK_FLOW, j, f"buyer-initiated minus seller-initiated "
                                 f"volume of the trades with time in (t - {w:g}, t] [shares] "
                                 "(seed 000)")
        cat[f"volume_{s}"] = (_VOLUME, j, f"volume of the trades with time in (t - {w:g}, t] "
                              "[shares]")
        cat[f"trades_{s}"] = (_TRADES, j, f"number of trades with time in (t - {w:g}, t] "
                              "[count]")
    cat["time_since_trade_s"] = (_TIME_SINCE_TRADE, 0, "t - time of the last trade since reset; "
                                 "NaN before the first [seconds] (seed 003)")
    cat["realised_vol_bps"] = (_REALISED_VOL, 0, "1e4 × sqrt(λ Σ r_i² exp(-λ (t - t_i))), r_i = "
                               "log change of the mid at book update i (from the last valid "
                               f"mid), λ = ln 2 / {config.vol_halflife_s:g} s: the standard "
                               "deviation of the mid's log return over one second; NaN before "
                               "the first return [bps per √s]")
    window = ("all trades since reset" if config.arrival_vwap_window_s is None else
              f"the trades in the {config.arrival_vwap_window_s:g} s")
    cat["arrival_vwap"] = (_ARRIVAL_VWAP, 0, f"VWAP of {window} up to the parent order's "
                           "arrival (start_order); NaN when there were none [price]")
    cat["mid_vs_arrival_vwap_bps"] = (_MID_VS_ARRIVAL_VWAP_BPS, 0, "side × (mid - arrival "
                                      "VWAP) / arrival VWAP × 1e4: positive = the price moved "
                                      "against the order [bps]")
    cat["mid_vs_arrival_bps"] = (_MID_VS_ARRIVAL_BPS, 0, "side × (mid - arrival mid) / arrival "
                                 "mid × 1e4: positive = the price moved against the order [bps]")
    cat["queue_ahead"] = (_QUEUE_AHEAD, 0, "shares ahead of the working order in its level's "
                          "queue (set_queue_position); NaN when no order works [shares]")
    cat["recent_fill_rate"] = (_RECENT_FILL_RATE, 0, "shares filled / shares sent over the last "
                               f"{config.order_memory} child orders of the parent order (fills "
                               "of older children not counted); NaN before the first [0, 1] "
                               "(seed 003)")
    cat["avg_slippage_bps"] = (_AVG_SLIPPAGE_BPS, 0, "quantity-weighted mean over the last "
                               f"{config.fill_memory} fills of side × (fill px - arrival mid) / "
                               "arrival mid × 1e4, fees excluded: positive = cost; NaN before "
                               "the first fill [bps] (seed 003)")
    return cat


def describe_features(config: FeatureConfig | None = None) -> dict[str, str]:
    """Every feature a builder with ``config`` computes -> its definition and unit."""
    return {name: v[2] for name, v in _catalogue(config or FeatureConfig()).items()}


#: Every feature the builder computes with the default config -> definition [unit].
FEATURES: dict[str, str] = describe_features()

# -- per-environment state: columns of one float64 and one int64 matrix -------------------------
# Row e holds environment e, so each event touches one contiguous row.
_F_CLOCK, _F_LAST_TRADE_T, _F_NOTIONAL, _F_MID, _F_BEST_BID, _F_BEST_ASK = 0, 1, 2, 3, 4, 5
_F_BEST_BID_QTY, _F_BEST_ASK_QTY, _F_LAST_MID, _F_VOL_S, _F_VOL_T = 6, 7, 8, 9, 10
_F_ARRIVAL_MID, _F_ARRIVAL_VWAP, _F_QUEUE_AHEAD = 11, 12, 13
_N_F = 14
_I_RING_START, _I_RING_COUNT, _I_FLOW, _I_VOLUME, _I_FLOW_DROPPED, _I_VOLUME_DROPPED = range(6)
_I_VOL_N, _I_SIDE, _I_CHILD_START, _I_CHILD_COUNT, _I_FILL_START, _I_FILL_COUNT = range(6, 12)
_N_I = 12
# child-order ring fields
_C_ID, _C_SENT, _C_FILLED = 0, 1, 2

_F_INITIAL = np.full(_N_F, np.nan)
_F_INITIAL[_F_CLOCK] = -np.inf
_F_INITIAL[_F_NOTIONAL] = 0.0
_F_INITIAL[_F_VOL_S] = 0.0
_I_INITIAL = np.zeros(_N_I, dtype=np.int64)

# error codes of the check kernels -> the field they name
_OK, _E_ENV, _E_T, _E_T_ORDER, _E_PX, _E_QTY, _E_AGGRESSOR, _E_FEE, _E_NO_ORDER = range(9)
_E_BID_QTY, _E_BID_PX, _E_BID_ORDER, _E_ASK_QTY, _E_ASK_PX, _E_ASK_ORDER, _E_CROSSED = range(
    9, 16
)


# -- compiled kernels ---------------------------------------------------------------------------
@njit(cache=True)
def _first_after(ring_t: NDArray, start: int, count: int, x: float) -> int:
    """First logical index k of a time-sorted ring whose time is > x (count if none)."""
    cap = ring_t.shape[0]
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi) >> 1
        p = start + mid
        if p >= cap:  # cheaper than % in the hot loop
            p -= cap
        if ring_t[p] > x:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def _check_times(env: NDArray, t: NDArray, n_envs: int, last: NDArray) -> tuple[int, int]:
    """First row with a bad env or a time before its env's last (``last`` is updated)."""
    for r in range(env.shape[0]):
        e = env[r]
        if e < 0 or e >= n_envs:
            return r, _E_ENV
        if not np.isfinite(t[r]):
            return r, _E_T
        if t[r] < last[e]:
            return r, _E_T_ORDER
        last[e] = t[r]
    return -1, _OK


@njit(cache=True)
def _check_trades(
    env: NDArray, t: NDArray, px: NDArray, qty: NDArray, aggressor: NDArray, n_envs: int,
    last: NDArray,
) -> tuple[int, int]:
    r, code = _check_times(env, t, n_envs, last)
    if code != _OK:
        return r, code
    for r in range(env.shape[0]):
        if not (np.isfinite(px[r]) and px[r] > 0.0):
            return r, _E_PX
        if qty[r] <= 0:
            return r, _E_QTY
        if aggressor[r] != 1 and aggressor[r] != -1:
            return r, _E_AGGRESSOR
    return -1, _OK


@njit(cache=True)
def _trades_needed(
    env: NDArray, t: NDArray, last: NDArray, retention: float, ring_t: NDArray,
    istate: NDArray, needed: NDArray,
) -> None:
    """Trades each env must hold after the batch: those within ``retention`` of its last."""
    for r in range(env.shape[0]):
        e = env[r]
        if t[r] > last[e] - retention:
            needed[e] += 1
    for e in range(needed.shape[0]):
        count = istate[e, _I_RING_COUNT]
        k = _first_after(ring_t[e], istate[e, _I_RING_START], count, last[e] - retention)
        needed[e] += count - k


@njit(cache=True)
def _regrow(
    ring_t: NDArray, ring_px: NDArray, ring_flow: NDArray, ring_volume: NDArray,
    istate: NDArray, new_t: NDArray, new_px: NDArray, new_flow: NDArray, new_volume: NDArray,
) -> None:
    cap = ring_t.shape[1]
    for e in range(ring_t.shape[0]):
        s = istate[e, _I_RING_START]
        for k in range(istate[e, _I_RING_COUNT]):
            p = (s + k) % cap
            new_t[e, k] = ring_t[e, p]
            new_px[e, k] = ring_px[e, p]
            new_flow[e, k] = ring_flow[e, p]
            new_volume[e, k] = ring_volume[e, p]
        istate[e, _I_RING_START] = 0


@njit(cache=True)
def _apply_trades(
    env: NDArray, t: NDArray, px: NDArray, qty: NDArray, aggressor: NDArray,
    fstate: NDArray, istate: NDArray, ring_t: NDArray, ring_px: NDArray, ring_flow: NDArray,
    ring_volume: NDArray,
) -> None:
    cap = ring_t.shape[1]
    for r in range(env.shape[0]):
        e = env[r]
        if istate[e, _I_RING_COUNT] == cap:  # the oldest is outside every window (checked)
            s = istate[e, _I_RING_START]
            istate[e, _I_FLOW_DROPPED] = ring_flow[e, s]
            istate[e, _I_VOLUME_DROPPED] = ring_volume[e, s]
            istate[e, _I_RING_START] = (s + 1) % cap
            istate[e, _I_RING_COUNT] -= 1
        p = (istate[e, _I_RING_START] + istate[e, _I_RING_COUNT]) % cap
        q = qty[r]
        istate[e, _I_FLOW] += q * aggressor[r]
        istate[e, _I_VOLUME] += q
        ring_t[e, p] = t[r]
        ring_px[e, p] = px[r]
        ring_flow[e, p] = istate[e, _I_FLOW]
        ring_volume[e, p] = istate[e, _I_VOLUME]
        istate[e, _I_RING_COUNT] += 1
        fstate[e, _F_NOTIONAL] += px[r] * q
        fstate[e, _F_LAST_TRADE_T] = t[r]
        fstate[e, _F_CLOCK] = t[r]


@njit(cache=True)
def _check_book(
    env: NDArray, t: NDArray, bid_px: NDArray, bid_qty: NDArray, ask_px: NDArray,
    ask_qty: NDArray, top_k: int, n_envs: int, last: NDArray,
) -> tuple[int, int, int]:
    """First bad (row, code, level); levels beyond ``top_k`` are not read, so not checked."""
    r, code = _check_times(env, t, n_envs, last)
    if code != _OK:
        return r, code, -1
    for r in range(env.shape[0]):
        best_bid = np.nan
        prev = np.inf
        for j in range(top_k):
            q = bid_qty[r, j]
            if not (q >= 0.0 and q < np.inf):
                return r, _E_BID_QTY, j
            if q > 0.0:
                p = bid_px[r, j]
                if not (np.isfinite(p) and p > 0.0):
                    return r, _E_BID_PX, j
                if p >= prev:
                    return r, _E_BID_ORDER, j
                prev = p
                if np.isnan(best_bid):
                    best_bid = p
        best_ask = np.nan
        prev = -np.inf
        for j in range(top_k):
            q = ask_qty[r, j]
            if not (q >= 0.0 and q < np.inf):
                return r, _E_ASK_QTY, j
            if q > 0.0:
                p = ask_px[r, j]
                if not (np.isfinite(p) and p > 0.0):
                    return r, _E_ASK_PX, j
                if p <= prev:
                    return r, _E_ASK_ORDER, j
                prev = p
                if np.isnan(best_ask):
                    best_ask = p
        if best_bid > best_ask:
            return r, _E_CROSSED, -1
    return -1, _OK, -1


@njit(cache=True)
def _apply_book(
    env: NDArray, t: NDArray, bid_px: NDArray, bid_qty: NDArray, ask_px: NDArray,
    ask_qty: NDArray, lam: float, fstate: NDArray, istate: NDArray, book_bid_px: NDArray,
    book_bid_qty: NDArray, book_ask_px: NDArray, book_ask_qty: NDArray,
) -> None:
    top_k = book_bid_px.shape[1]
    for r in range(env.shape[0]):
        e = env[r]
        best_bid = np.nan
        best_bid_qty = 0.0
        best_ask = np.nan
        best_ask_qty = 0.0
        for j in range(top_k):
            q = bid_qty[r, j]
            book_bid_qty[e, j] = q
            book_bid_px[e, j] = bid_px[r, j] if q > 0.0 else np.nan
            if q > 0.0 and np.isnan(best_bid):
                best_bid = bid_px[r, j]
                best_bid_qty = q
            q = ask_qty[r, j]
            book_ask_qty[e, j] = q
            book_ask_px[e, j] = ask_px[r, j] if q > 0.0 else np.nan
            if q > 0.0 and np.isnan(best_ask):
                best_ask = ask_px[r, j]
                best_ask_qty = q
        mid = 0.5 * (best_bid + best_ask)  # NaN when a side is empty
        fstate[e, _F_BEST_BID] = best_bid
        fstate[e, _F_BEST_ASK] = best_ask
        fstate[e, _F_BEST_BID_QTY] = best_bid_qty
        fstate[e, _F_BEST_ASK_QTY] = best_ask_qty
        fstate[e, _F_MID] = mid
        if not np.isnan(mid):
            last_mid = fstate[e, _F_LAST_MID]
            if not np.isnan(last_mid):
                ret = math.log(mid / last_mid)
                if istate[e, _I_VOL_N] == 0:
                    fstate[e, _F_VOL_S] = ret * ret
                else:
                    decay = math.exp(-lam * (t[r] - fstate[e, _F_VOL_T]))
                    fstate[e, _F_VOL_S] = fstate[e, _F_VOL_S] * decay + ret * ret
                fstate[e, _F_VOL_T] = t[r]
                istate[e, _I_VOL_N] += 1
            fstate[e, _F_LAST_MID] = mid
        fstate[e, _F_CLOCK] = t[r]


@njit(cache=True)
def _check_own(env: NDArray, t: NDArray, qty: NDArray, n_envs: int, last: NDArray,
               istate: NDArray) -> tuple[int, int]:
    """Child orders and fills: times, qty > 0, and a parent order working in the env."""
    r, code = _check_times(env, t, n_envs, last)
    if code != _OK:
        return r, code
    for r in range(env.shape[0]):
        if qty[r] <= 0:
            return r, _E_QTY
        if istate[env[r], _I_SIDE] == 0:
            return r, _E_NO_ORDER
    return -1, _OK


@njit(cache=True)
def _check_fill_prices(px: NDArray, fee: NDArray) -> tuple[int, int]:
    for r in range(px.shape[0]):
        if not (np.isfinite(px[r]) and px[r] > 0.0):
            return r, _E_PX
        if not np.isfinite(fee[r]):
            return r, _E_FEE
    return -1, _OK


@njit(cache=True)
def _apply_child_orders(
    env: NDArray, child_id: NDArray, t: NDArray, qty: NDArray, fstate: NDArray,
    istate: NDArray, children: NDArray,
) -> None:
    cap = children.shape[1]
    for r in range(env.shape[0]):
        e = env[r]
        if istate[e, _I_CHILD_COUNT] == cap:  # the last n only: forget the oldest
            istate[e, _I_CHILD_START] = (istate[e, _I_CHILD_START] + 1) % cap
            istate[e, _I_CHILD_COUNT] -= 1
        p = (istate[e, _I_CHILD_START] + istate[e, _I_CHILD_COUNT]) % cap
        children[e, p, _C_ID] = child_id[r]
        children[e, p, _C_SENT] = qty[r]
        children[e, p, _C_FILLED] = 0
        istate[e, _I_CHILD_COUNT] += 1
        fstate[e, _F_CLOCK] = t[r]


@njit(cache=True)
def _apply_fills(
    env: NDArray, child_id: NDArray, t: NDArray, qty: NDArray, px: NDArray, fstate: NDArray,
    istate: NDArray, children: NDArray, fill_qty: NDArray, fill_slip: NDArray,
) -> None:
    child_cap = children.shape[1]
    fill_cap = fill_qty.shape[1]
    for r in range(env.shape[0]):
        e = env[r]
        s = istate[e, _I_CHILD_START]
        for k in range(istate[e, _I_CHILD_COUNT] - 1, -1, -1):  # newest first
            p = (s + k) % child_cap
            if children[e, p, _C_ID] == child_id[r]:
                children[e, p, _C_FILLED] += qty[r]
                break
        if istate[e, _I_FILL_COUNT] == fill_cap:
            istate[e, _I_FILL_START] = (istate[e, _I_FILL_START] + 1) % fill_cap
            istate[e, _I_FILL_COUNT] -= 1
        p = (istate[e, _I_FILL_START] + istate[e, _I_FILL_COUNT]) % fill_cap
        arrival = fstate[e, _F_ARRIVAL_MID]
        fill_qty[e, p] = qty[r]
        fill_slip[e, p] = istate[e, _I_SIDE] * (px[r] - arrival) / arrival * 1e4
        istate[e, _I_FILL_COUNT] += 1
        fstate[e, _F_CLOCK] = t[r]


@njit(cache=True)
def _arrival_vwap(
    env_ids: NDArray, window: float, fstate: NDArray, istate: NDArray, ring_t: NDArray,
    ring_px: NDArray, ring_volume: NDArray,
) -> None:
    """Arrival VWAP of each env in ``env_ids`` at its clock (window = inf: since reset)."""
    cap = ring_t.shape[1]
    for i in range(env_ids.shape[0]):
        e = env_ids[i]
        if window == np.inf:
            volume = istate[e, _I_VOLUME]
            fstate[e, _F_ARRIVAL_VWAP] = fstate[e, _F_NOTIONAL] / volume if volume > 0 else np.nan
            continue
        s = istate[e, _I_RING_START]
        count = istate[e, _I_RING_COUNT]
        k0 = _first_after(ring_t[e], s, count, fstate[e, _F_CLOCK] - window)
        prev = istate[e, _I_VOLUME_DROPPED] if k0 == 0 else ring_volume[e, (s + k0 - 1) % cap]
        notional = 0.0
        volume = 0
        for k in range(k0, count):
            p = (s + k) % cap
            q = ring_volume[e, p] - prev
            prev = ring_volume[e, p]
            notional += ring_px[e, p] * q
            volume += q
        fstate[e, _F_ARRIVAL_VWAP] = notional / volume if volume > 0 else np.nan


@njit(cache=True)
def _values(
    kinds: NDArray, params: NDArray, windows: NDArray, lam: float, t_query: NDArray,
    fstate: NDArray, istate: NDArray, ring_t: NDArray, ring_flow: NDArray,
    ring_volume: NDArray, book_bid_px: NDArray, book_bid_qty: NDArray, book_ask_px: NDArray,
    book_ask_qty: NDArray, children: NDArray, fill_qty: NDArray, fill_slip: NDArray,
    out: NDArray,
) -> None:
    cap = ring_t.shape[1]
    child_cap = children.shape[1]
    fill_cap = fill_qty.shape[1]
    first_in = np.empty(windows.shape[0], dtype=np.int64)  # per window, searched once per env
    for e in range(out.shape[0]):
        tq = t_query[e]
        mid = fstate[e, _F_MID]
        side = istate[e, _I_SIDE]
        first_in[:] = -1
        for j in range(kinds.shape[0]):
            kind = kinds[j]
            p = params[j]
            v = np.nan
            if kind == _MID:
                v = mid
            elif kind == _SPREAD_BPS:
                v = (fstate[e, _F_BEST_ASK] - fstate[e, _F_BEST_BID]) / mid * 1e4
            elif kind == _IMBALANCE:
                if p == 1:
                    b = fstate[e, _F_BEST_BID_QTY]
                    a = fstate[e, _F_BEST_ASK_QTY]
                else:
                    b = 0.0
                    a = 0.0
                    for i in range(p):
                        b += book_bid_qty[e, i]
                        a += book_ask_qty[e, i]
                if b + a > 0.0:
                    v = (b - a) / (b + a)
            elif kind == _BID_DEPTH or kind == _ASK_DEPTH:
                book = book_bid_qty if kind == _BID_DEPTH else book_ask_qty
                v = 0.0
                for i in range(p):
                    v += book[e, i]
            elif kind == _BID_QTY:
                v = book_bid_qty[e, p]
            elif kind == _ASK_QTY:
                v = book_ask_qty[e, p]
            elif kind == _BID_DIST_BPS:
                v = (mid - book_bid_px[e, p]) / mid * 1e4
            elif kind == _ASK_DIST_BPS:
                v = (book_ask_px[e, p] - mid) / mid * 1e4
            elif kind == _TICK_FLOW or kind == _VOLUME or kind == _TRADES:
                s = istate[e, _I_RING_START]
                count = istate[e, _I_RING_COUNT]
                k = first_in[p]
                if k < 0:
                    k = first_in[p] = _first_after(ring_t[e], s, count, tq - windows[p])
                if kind == _TRADES:
                    v = count - k
                elif kind == _TICK_FLOW:
                    before = istate[e, _I_FLOW_DROPPED] if k == 0 else ring_flow[
                        e, (s + k - 1) % cap]
                    v = istate[e, _I_FLOW] - before
                else:
                    before = istate[e, _I_VOLUME_DROPPED] if k == 0 else ring_volume[
                        e, (s + k - 1) % cap]
                    v = istate[e, _I_VOLUME] - before
            elif kind == _TIME_SINCE_TRADE:
                v = tq - fstate[e, _F_LAST_TRADE_T]
            elif kind == _REALISED_VOL:
                if istate[e, _I_VOL_N] > 0:
                    decay = math.exp(-lam * (tq - fstate[e, _F_VOL_T]))
                    v = math.sqrt(lam * fstate[e, _F_VOL_S] * decay) * 1e4
            elif kind == _ARRIVAL_VWAP:
                v = fstate[e, _F_ARRIVAL_VWAP]
            elif kind == _MID_VS_ARRIVAL_VWAP_BPS:
                if side != 0:
                    ref = fstate[e, _F_ARRIVAL_VWAP]
                    v = side * (mid - ref) / ref * 1e4
            elif kind == _MID_VS_ARRIVAL_BPS:
                if side != 0:
                    ref = fstate[e, _F_ARRIVAL_MID]
                    v = side * (mid - ref) / ref * 1e4
            elif kind == _QUEUE_AHEAD:
                v = fstate[e, _F_QUEUE_AHEAD]
            elif kind == _RECENT_FILL_RATE:
                sent = 0
                filled = 0
                s = istate[e, _I_CHILD_START]
                for k in range(istate[e, _I_CHILD_COUNT]):
                    c = (s + k) % child_cap
                    sent += children[e, c, _C_SENT]
                    filled += children[e, c, _C_FILLED]
                if sent > 0:
                    v = filled / sent
            elif kind == _AVG_SLIPPAGE_BPS:
                num = 0.0
                den = 0
                s = istate[e, _I_FILL_START]
                for k in range(istate[e, _I_FILL_COUNT]):
                    c = (s + k) % fill_cap
                    num += fill_qty[e, c] * fill_slip[e, c]
                    den += fill_qty[e, c]
                if den > 0:
                    v = num / den
            out[e, j] = v


# -- the builder --------------------------------------------------------------------------------
_TIME_FIELD_MESSAGES = {
    _E_ENV: "must be an environment index in [0, {n})",
    _E_T: "must be a finite time in seconds",
    _E_T_ORDER: "is before environment {e}'s last event or query at t = {last!r} (events must "
    "come in time order per environment)",
}


class FeatureBuilder:
    """Features of ``n_envs`` independent markets, updated event by event (see the module doc).

    >>> import numpy as np
    >>> from execrl.market.events import TRADE_DTYPE
    >>> fb = FeatureBuilder(2, FeatureConfig(windows_s=(10.0,), top_k=1))
    >>> fb.reset(t0=0.0)
    >>> trades = np.array([(0, 1.0, 100.0, 300, 1), (1, 2.0, 50.0, 200, -1),
    ...                    (0, 12.0, 100.1, 100, -1)], dtype=TRADE_DTYPE)
    >>> fb.on_trades(trades)
    >>> fb.values(["tick_flow_10s", "volume_10s"], t=12.0).tolist()  # window (2, 12]
    [[-100.0, 100.0], [0.0, 0.0]]
    """

    def __init__(self, n_envs: int, config: FeatureConfig | None = None, **fields: Any) -> None:
        """``fields`` are ``FeatureConfig`` fields (validated by it), as an alternative to
        ``config``: ``FeatureBuilder(64, windows_s=(10.0, 30.0), top_k=5)``."""
        if isinstance(n_envs, bool) or not isinstance(n_envs, int | np.integer) or n_envs < 1:
            raise ConfigError(f"feature builder field 'n_envs' = {n_envs!r} must be an int >= 1")
        if config is not None and fields:
            raise ConfigError("give a FeatureConfig or its fields, not both")
        self.config = config if config is not None else FeatureConfig.from_dict(fields)
        c = self.config
        self.n_envs = int(n_envs)
        self._catalogue = _catalogue(c)
        self.names: tuple[str, ...] = tuple(self._catalogue)
        self._windows = np.asarray(c.windows_s, dtype=np.float64)
        self._lam = math.log(2.0) / c.vol_halflife_s
        self._arrival_window = (
            np.inf if c.arrival_vwap_window_s is None else float(c.arrival_vwap_window_s)
        )
        n, k = self.n_envs, c.top_k
        self._f = np.tile(_F_INITIAL, (n, 1))
        self._i = np.tile(_I_INITIAL, (n, 1))
        self._alloc_trades(c.trade_capacity)
        self._book_bid_px = np.full((n, k), np.nan)
        self._book_bid_qty = np.zeros((n, k))
        self._book_ask_px = np.full((n, k), np.nan)
        self._book_ask_qty = np.zeros((n, k))
        self._children = np.zeros((n, c.order_memory, 3), dtype=np.int64)
        self._fill_qty = np.zeros((n, c.fill_memory), dtype=np.int64)
        self._fill_slip = np.zeros((n, c.fill_memory))
        self._plans: dict[tuple[str, ...], tuple[NDArray[np.int64], NDArray[np.int64]]] = {}
        self._all_envs = np.arange(n, dtype=np.int64)

    def _alloc_trades(self, cap: int) -> None:
        n = self.n_envs
        self._ring_t = np.zeros((n, cap))
        self._ring_px = np.zeros((n, cap))
        self._ring_flow = np.zeros((n, cap), dtype=np.int64)
        self._ring_volume = np.zeros((n, cap), dtype=np.int64)

    # -- introspection ------------------------------------------------------------------------
    @property
    def features(self) -> dict[str, str]:
        """Every feature this builder computes -> its definition and unit."""
        return {name: v[2] for name, v in self._catalogue.items()}

    @property
    def clock(self) -> NDArray[np.float64]:
        """Per environment, the time of its last event or query (-inf before any); a copy."""
        return self._f[:, _F_CLOCK].copy()

    @property
    def trade_capacity(self) -> int:
        """Trades each environment can hold now (grows on demand up to the config's max)."""
        return int(self._ring_t.shape[1])

    # -- episodes -----------------------------------------------------------------------------
    def reset(
        self,
        env_ids: ArrayLike | None = None,
        t0: ArrayLike = 0.0,
        arrival_mid: ArrayLike | None = None,
        side: Side | int | ArrayLike | None = None,
    ) -> None:
        """Start new market streams in ``env_ids`` (all when None) at time ``t0``.

        Everything those environments remembered is forgotten (trades, book, volatility, the
        parent order), their clock is set to ``t0`` (it may go back: a new stream), and the
        others are untouched. With ``arrival_mid`` (and ``side``) a parent order also arrives
        at ``t0``; its arrival VWAP is then NaN, as no trade came before it. To have one,
        feed the pre-arrival trades first and call ``start_order`` at arrival.
        """
        ids = self._env_ids(env_ids, "reset")
        t = self._per_env(t0, ids, "t0")
        if not np.all(np.isfinite(t)):
            raise ConfigError(f"reset field 't0' = {t0!r} must be finite")
        self._f[ids] = _F_INITIAL
        self._i[ids] = _I_INITIAL
        self._f[ids, _F_CLOCK] = t
        self._book_bid_px[ids] = np.nan
        self._book_bid_qty[ids] = 0.0
        self._book_ask_px[ids] = np.nan
        self._book_ask_qty[ids] = 0.0
        if arrival_mid is not None:
            self.start_order(ids, arrival_mid, side)
        elif side is not None:
            raise ConfigError("reset field 'side' needs 'arrival_mid' (a parent order arrives)")

    def start_order(
        self,
        env_ids: ArrayLike | None,
        arrival_mid: ArrayLike | None,
        side: Side | int | ArrayLike | None,
    ) -> None:
        """A parent order arrives in each of ``env_ids`` (all when None) at its clock.

        ``arrival_mid`` None takes each environment's current book mid. ``side`` is a
        ``Side``, +1 (buy) / -1 (sell), or one of those per environment. The order's own
        memory (child orders, fills, queue position) starts empty; the market's is kept.
        """
        ids = self._env_ids(env_ids, "start_order")
        if side is None:
            raise ConfigError("start_order field 'side' is missing (Side, +1 buy or -1 sell)")
        if isinstance(side, str):
            try:
                side = Side(side)
            except ValueError:
                raise ConfigError(f"start_order field 'side' = {side!r} must be 'buy' or "
                                  "'sell' (or +1 / -1)") from None
        sign = self._per_env(side.sign if isinstance(side, Side) else side, ids, "side")
        if not np.all((sign == 1) | (sign == -1)):
            raise ConfigError(f"start_order field 'side' = {side!r} must be +1 (buy) or -1 (sell)")
        if arrival_mid is None:
            mid = self._f[ids, _F_MID]
            bad = np.flatnonzero(np.isnan(mid))
            if bad.size:
                raise ConfigError(
                    f"start_order field 'arrival_mid' is missing and environment "
                    f"{int(ids[bad[0]])} has no book mid"
                )
        else:
            mid = self._per_env(arrival_mid, ids, "arrival_mid")
            if not np.all(np.isfinite(mid) & (mid > 0)):
                raise ConfigError(
                    f"start_order field 'arrival_mid' = {arrival_mid!r} must be finite and > 0"
                )
        self._f[ids, _F_ARRIVAL_MID] = mid
        self._f[ids, _F_QUEUE_AHEAD] = np.nan
        self._i[ids, _I_SIDE] = sign.astype(np.int64)
        for col in (_I_CHILD_START, _I_CHILD_COUNT, _I_FILL_START, _I_FILL_COUNT):
            self._i[ids, col] = 0
        _arrival_vwap(ids, self._arrival_window, self._f, self._i, self._ring_t, self._ring_px,
                      self._ring_volume)

    # -- events -------------------------------------------------------------------------------
    def on_trades(self, trades: NDArray[Any]) -> None:
        """Trades printed on the markets (``TRADE_DTYPE`` rows, time order per environment)."""
        tr = as_events(trades, TRADE_DTYPE, "trades")
        if tr.shape[0] == 0:
            return
        env, t = tr["env"], tr["t"]
        last = self._f[:, _F_CLOCK].copy()
        r, code = _check_trades(env, t, tr["px"], tr["qty"], tr["aggressor"], self.n_envs, last)
        if code != _OK:
            field = {_E_PX: "px", _E_QTY: "qty", _E_AGGRESSOR: "aggressor"}.get(code)
            if field is None:
                self._raise_time_error("trades", tr, r, code, last)
            msg = {_E_PX: "must be finite and > 0", _E_QTY: "must be > 0",
                   _E_AGGRESSOR: "must be +1 (buyer-initiated) or -1 (seller-initiated)"}[code]
            raise ConfigError(f"trades field '{field}' = {tr[field][r].item()!r} at row {r} is "
                              f"not valid: {msg}")
        self._ensure_trade_capacity(env, t, last)
        _apply_trades(env, t, tr["px"], tr["qty"], tr["aggressor"], self._f, self._i,
                      self._ring_t, self._ring_px, self._ring_flow, self._ring_volume)

    def _ensure_trade_capacity(self, env: NDArray, t: NDArray, last: NDArray) -> None:
        """Grow the rings before a batch that would push out a trade still in a window."""
        needed = np.zeros(self.n_envs, dtype=np.int64)
        _trades_needed(env, t, last, self.config.retention_s, self._ring_t, self._i, needed)
        most = int(needed.max())
        if most <= self.trade_capacity:
            return
        if most > self.config.max_trade_capacity:
            e = int(needed.argmax())
            raise ConfigError(
                f"trades: environment {e} would hold {most} trades within the "
                f"{self.config.retention_s:g} s window, above feature config field "
                f"'max_trade_capacity' = {self.config.max_trade_capacity}; raise it"
            )
        cap = min(1 << (most - 1).bit_length(), self.config.max_trade_capacity)
        old = (self._ring_t, self._ring_px, self._ring_flow, self._ring_volume)
        self._alloc_trades(cap)
        _regrow(*old, self._i, self._ring_t, self._ring_px, self._ring_flow, self._ring_volume)

    def on_book(
        self,
        t: ArrayLike,
        bid_px: ArrayLike,
        bid_qty: ArrayLike,
        ask_px: ArrayLike,
        ask_qty: ArrayLike,
        env_ids: ArrayLike | None = None,
    ) -> None:
        """Top-k book snapshots, row i for environment ``env_ids[i]`` (all envs when None).

        Each array is ``(rows, k)`` with ``k >= top_k`` (levels beyond ``top_k`` are not
        read); level 1 is the best. A level with qty 0 is empty (its price is ignored and may
        be NaN); a non-empty level needs a finite price > 0, bid prices falling and ask prices
        rising with the level; a crossed book (best bid > best ask) is refused. ``t`` is one
        time or one per row; rows of one environment must come in time order.
        """
        ids = self._env_ids(env_ids, "book", check_range=False)
        rows = ids.shape[0]
        k = self.config.top_k
        arrays = {}
        for name, a in (("bid_px", bid_px), ("bid_qty", bid_qty), ("ask_px", ask_px),
                        ("ask_qty", ask_qty)):
            try:
                arr = np.asarray(a, dtype=np.float64)
            except (TypeError, ValueError):
                raise ConfigError(f"book field '{name}' is not an array of numbers") from None
            if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] < k:
                raise ConfigError(
                    f"book field '{name}' has shape {arr.shape}, expected ({rows}, k) with "
                    f"k >= top_k = {k}"
                )
            arrays[name] = arr
        times = self._per_env(t, ids, "t")
        last = self._f[:, _F_CLOCK].copy()
        r, code, level = _check_book(ids, times, arrays["bid_px"], arrays["bid_qty"],
                                     arrays["ask_px"], arrays["ask_qty"], k, self.n_envs, last)
        if code != _OK:
            if code in _TIME_FIELD_MESSAGES:
                field = "env_ids" if code == _E_ENV else "t"
                value = ids[r] if code == _E_ENV else times[r]
                e = int(ids[r]) if code != _E_ENV else -1
                raise ConfigError(
                    f"book field '{field}' = {value.item()!r} at row {r} is not valid: "
                    + _TIME_FIELD_MESSAGES[code].format(n=self.n_envs, e=e,
                                                        last=float(last[max(e, 0)]))
                )
            if code == _E_CROSSED:
                bid, ask = self._best(arrays["bid_px"][r], arrays["bid_qty"][r],
                                      arrays["ask_px"][r], arrays["ask_qty"][r])
                raise ConfigError(
                    f"book field 'bid_px' at row {r} is not valid: the best bid {bid!r} is "
                    f"above the best ask {ask!r} (crossed book)"
                )
            field, msg = {
                _E_BID_QTY: ("bid_qty", "must be finite and >= 0"),
                _E_ASK_QTY: ("ask_qty", "must be finite and >= 0"),
                _E_BID_PX: ("bid_px", "must be finite and > 0 where bid_qty > 0"),
                _E_ASK_PX: ("ask_px", "must be finite and > 0 where ask_qty > 0"),
                _E_BID_ORDER: ("bid_px", "must fall with the level"),
                _E_ASK_ORDER: ("ask_px", "must rise with the level"),
            }[code]
            j = max(level, 0)
            raise ConfigError(
                f"book field '{field}' = {arrays[field][r, j].item()!r} at row {r} level "
                f"{j + 1} is not valid: {msg}"
            )
        _apply_book(ids, times, arrays["bid_px"], arrays["bid_qty"], arrays["ask_px"],
                    arrays["ask_qty"], self._lam, self._f, self._i, self._book_bid_px,
                    self._book_bid_qty, self._book_ask_px, self._book_ask_qty)

    def on_market_events(
        self,
        trades: NDArray[Any],
        t: ArrayLike,
        bid_px: ArrayLike,
        bid_qty: ArrayLike,
        ask_px: ArrayLike,
        ask_qty: ArrayLike,
        env_ids: ArrayLike | None = None,
    ) -> None:
        """The trades and the book snapshots of one interval at once (a replay's step): the
        same state as feeding the two merged in time order, in one call each.

        No feature reads both streams (tick flow, volume, time since trade and the arrival VWAP
        read the trades; mid, spread, imbalance, depth and realised volatility the book), so
        each stream only has to be in time order itself and not older than its environment's
        clock; both are checked before either is applied, and each clock then moves to the
        later of its last trade and its last snapshot.
        """
        before = self._f[:, _F_CLOCK].copy()
        tr = as_events(trades, TRADE_DTYPE, "trades")
        if tr.shape[0]:
            _r, code = _check_trades(tr["env"], tr["t"], tr["px"], tr["qty"], tr["aggressor"],
                                    self.n_envs, before.copy())
            if code != _OK:
                self.on_trades(trades)  # raises, naming the row and the field
            self._ensure_trade_capacity(tr["env"], tr["t"], before.copy())  # may refuse
        ids = self._env_ids(env_ids, "book", check_range=False)
        if ids.shape[0]:
            self.on_book(t, bid_px, bid_qty, ask_px, ask_qty, env_ids)  # checks, then applies
        after_book = self._f[:, _F_CLOCK].copy()
        self._f[:, _F_CLOCK] = before
        if tr.shape[0]:
            self.on_trades(tr)
        np.maximum(self._f[:, _F_CLOCK], after_book, out=self._f[:, _F_CLOCK])

    def _best(self, bid_px: NDArray, bid_qty: NDArray, ask_px: NDArray, ask_qty: NDArray
              ) -> tuple[float, float]:
        """Best bid and ask prices of one row (for a message)."""
        k = self.config.top_k
        bid = bid_px[:k][bid_qty[:k] > 0]
        ask = ask_px[:k][ask_qty[:k] > 0]
        return float(bid[0]), float(ask[0])

    def on_child_orders(self, orders: NDArray[Any]) -> None:
        """Child orders the agent sent (``CHILD_ORDER_DTYPE``): the fill rate's denominator."""
        co = as_events(orders, CHILD_ORDER_DTYPE, "child orders")
        if co.shape[0] == 0:
            return
        self._check_own("child orders", co)
        _apply_child_orders(co["env"], co["child_id"], co["t"], co["qty"], self._f, self._i,
                            self._children)

    def on_fills(self, fills: NDArray[Any]) -> None:
        """Fills of the agent's child orders (``FILL_DTYPE``), against each order's arrival mid.

        A fill's child is looked up among the last ``order_memory`` child orders sent; a fill
        of an older (or never reported) child still counts in the slippage, not in the rate.
        """
        fl = as_events(fills, FILL_DTYPE, "fills")
        if fl.shape[0] == 0:
            return
        self._check_own("fills", fl)
        r, code = _check_fill_prices(fl["px"], fl["fee"])
        if code != _OK:
            field = "px" if code == _E_PX else "fee"
            msg = "must be finite and > 0" if code == _E_PX else "must be finite"
            raise ConfigError(f"fills field '{field}' = {fl[field][r].item()!r} at row {r} is "
                              f"not valid: {msg}")
        _apply_fills(fl["env"], fl["child_id"], fl["t"], fl["qty"], fl["px"], self._f, self._i,
                     self._children, self._fill_qty, self._fill_slip)

    def _check_own(self, what: str, events: NDArray[Any]) -> None:
        last = self._f[:, _F_CLOCK].copy()
        r, code = _check_own(events["env"], events["t"], events["qty"], self.n_envs, last,
                             self._i)
        if code == _OK:
            return
        if code == _E_QTY:
            raise ConfigError(f"{what} field 'qty' = {events['qty'][r].item()!r} at row {r} is "
                              "not valid: must be > 0")
        if code == _E_NO_ORDER:
            raise ConfigError(f"{what} field 'env' = {events['env'][r].item()!r} at row {r} is "
                              "not valid: no parent order works there (call start_order)")
        self._raise_time_error(what, events, r, code, last)

    def _raise_time_error(self, what: str, events: NDArray[Any], r: int, code: int,
                          last: NDArray[np.float64]) -> None:
        """``last`` is the check kernel's scratch: it stopped before updating ``last[env]``,
        which so still holds the environment's time before row ``r``."""
        field = "env" if code == _E_ENV else "t"
        e = int(events["env"][r])
        prev = float(last[e]) if code == _E_T_ORDER else math.nan
        raise ConfigError(
            f"{what} field '{field}' = {events[field][r].item()!r} at row {r} is not valid: "
            + _TIME_FIELD_MESSAGES[code].format(n=self.n_envs, e=e, last=prev)
        )

    def set_queue_position(self, ahead: ArrayLike, env_ids: ArrayLike | None = None) -> None:
        """Shares ahead of each environment's working order in its queue; NaN: none works."""
        ids = self._env_ids(env_ids, "queue position")
        q = self._per_env(ahead, ids, "ahead")
        bad = np.flatnonzero(~(np.isnan(q) | ((q >= 0) & np.isfinite(q))))
        if bad.size:
            raise ConfigError(
                f"queue position field 'ahead' = {q[bad[0]].item()!r} for environment "
                f"{int(ids[bad[0]])} must be >= 0 (NaN when no order works)"
            )
        self._f[ids, _F_QUEUE_AHEAD] = q

    # -- features -----------------------------------------------------------------------------
    def values(
        self,
        names: Sequence[str],
        t: ArrayLike | None = None,
        out: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]:
        """``(n_envs, len(names))`` feature values at time ``t`` (one, or one per env).

        ``t`` None reads each environment at its clock; otherwise ``t`` must not be before
        any environment's clock, and the clocks move to ``t`` (no event before it may follow).
        """
        kinds, params = self._plan(names)
        n = self.n_envs
        clock = self._f[:, _F_CLOCK]
        if t is None:
            tq = clock.copy()
        else:
            tq = self._per_env(t, self._all_envs, "t")
            bad = np.flatnonzero(~(tq >= clock) | ~np.isfinite(tq))
            if bad.size:
                e = int(bad[0])
                raise ConfigError(
                    f"values field 't' = {tq[e].item()!r} is not valid: environment {e}'s last "
                    f"event or query is at t = {clock[e].item()!r} (no look-ahead: query at or "
                    "after it)"
                )
        if out is None:
            out = np.empty((n, kinds.shape[0]))
        elif out.shape != (n, kinds.shape[0]) or out.dtype != np.float64:
            raise ConfigError(
                f"values field 'out' has shape {out.shape} and dtype {out.dtype}, expected "
                f"({n}, {kinds.shape[0]}) float64"
            )
        _values(kinds, params, self._windows, self._lam, tq, self._f, self._i, self._ring_t,
                self._ring_flow, self._ring_volume, self._book_bid_px, self._book_bid_qty,
                self._book_ask_px, self._book_ask_qty, self._children, self._fill_qty,
                self._fill_slip, out)
        if t is not None:
            np.maximum(clock, tq, out=clock)
        return out

    def _plan(self, names: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        key = tuple(names)
        plan = self._plans.get(key)
        if plan is None:
            for name in key:
                if name not in self._catalogue:
                    raise ConfigError(
                        f"feature '{name}' is not computed by this builder (known: "
                        f"{', '.join(self.names)})"
                    )
            kinds = np.array([self._catalogue[nm][0] for nm in key], dtype=np.int64)
            params = np.array([self._catalogue[nm][1] for nm in key], dtype=np.int64)
            plan = self._plans[key] = (kinds, params)
        return plan

    # -- helpers ------------------------------------------------------------------------------
    def _env_ids(self, env_ids: ArrayLike | None, what: str, *, check_range: bool = True
                 ) -> NDArray[np.int64]:
        if env_ids is None:
            return self._all_envs
        ids = np.asarray(env_ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ConfigError(f"{what} field 'env_ids' must be a 1-D array of ints, got "
                              f"{ids.dtype} of shape {ids.shape}")
        ids = ids.astype(np.int64)
        if check_range:
            bad = np.flatnonzero((ids < 0) | (ids >= self.n_envs))
            if bad.size:
                raise ConfigError(f"{what} field 'env_ids' = {int(ids[bad[0]])} is not an "
                                  f"environment index in [0, {self.n_envs})")
        return ids

    @staticmethod
    def _per_env(value: Any, ids: NDArray[np.int64], field: str) -> NDArray[np.float64]:
        """A scalar broadcast to ``ids``, or one value per id."""
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"field '{field}' = {value!r} is not a number or an array of "
                              "numbers") from None
        if arr.ndim == 0:
            return np.full(ids.shape[0], float(arr))
        if arr.shape != ids.shape:
            raise ConfigError(f"field '{field}' has shape {arr.shape}, expected one value or "
                              f"{ids.shape}")
        return np.ascontiguousarray(arr)


# -- online normalisation (seed 001 §5) ---------------------------------------------------------
@njit(cache=True)
def _normaliser_check_times(bucket: NDArray, t: NDArray, bucket_t: NDArray) -> int:
    """First row whose time is not finite or is before its bucket's last (-1 if none)."""
    for r in range(bucket.shape[0]):
        b = bucket[r]
        if not np.isfinite(t[r]) or t[r] < bucket_t[b]:
            return r
        bucket_t[b] = t[r]
    return -1


@njit(cache=True)
def _normaliser_update(
    x: NDArray, bucket: NDArray, t: NDArray, in_seconds: bool, decay_per_event: float,
    lam: float, weight: NDArray, mean: NDArray, m2: NDArray, last_t: NDArray,
    bucket_t: NDArray, domain_min: NDArray, domain_max: NDArray,
) -> None:
    """West's weighted mean / variance update with every older weight decayed first.

    Decaying all weights by d keeps the mean and scales the weight sum and m2 by d, so the
    statistics after n values are exactly the weighted ones with weight d^(age) (events) or
    exp(-λ·age) (seconds). A NaN is no observation of that feature: nothing moves.
    """
    for r in range(x.shape[0]):
        b = bucket[r]
        if in_seconds:
            bucket_t[b] = t[r]
        for j in range(x.shape[1]):
            v = x[r, j]
            if np.isnan(v):
                continue
            if in_seconds:
                d = 1.0 if weight[b, j] == 0.0 else math.exp(-lam * (t[r] - last_t[b, j]))
                last_t[b, j] = t[r]
            else:
                d = decay_per_event
            w = d * weight[b, j] + 1.0
            delta = v - mean[b, j]
            mean[b, j] += delta / w
            m2[b, j] = d * m2[b, j] + delta * (v - mean[b, j])
            weight[b, j] = w
            if v < domain_min[j]:
                domain_min[j] = v
            if v > domain_max[j]:
                domain_max[j] = v


def _finite_or_none(a: NDArray[np.float64]) -> list[Any]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a).ravel()]


def _from_optional(rows: Sequence[Any], missing: float) -> NDArray[np.float64]:
    return np.array([[missing if v is None else v for v in row] for row in rows], dtype=float)


class NormaliserState(BaseModel):
    """An ``OnlineNormaliser`` as JSON (``None`` where a value was never set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_features: Annotated[int, Field(ge=1)]
    n_buckets: Annotated[int, Field(ge=1)]
    halflife: PositiveFinite
    unit: Literal["events", "seconds"]
    eps: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    clip: PositiveFinite | None
    locked: bool
    weight: list[list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]]
    mean: list[list[Annotated[float, Field(allow_inf_nan=False)]]]
    m2: list[list[Annotated[float, Field(allow_inf_nan=False)]]]
    last_t: list[list[float | None]]
    bucket_t: list[float | None]
    domain_min: list[float | None]
    domain_max: list[float | None]

    @model_validator(mode="after")
    def _shapes(self) -> Self:
        b, f = self.n_buckets, self.n_features
        for name in ("weight", "mean", "m2", "last_t"):
            rows = getattr(self, name)
            if len(rows) != b or any(len(row) != f for row in rows):
                raise ValueError(f"{name} must be {b} rows (buckets) of {f} values (features)")
        for name, size in (("bucket_t", b), ("domain_min", f), ("domain_max", f)):
            if len(getattr(self, name)) != size:
                raise ValueError(f"{name} must hold {size} values")
        return self


class OnlineNormaliser:
    """Z-scores from exponentially decaying means and variances, one set per regime bucket.

    ``update(values, bucket)`` folds each row in, in row order, into the statistics of its
    bucket (``bucket[i]`` of row ``i``, given by the caller: a volatility regime, an hour
    bucket); ``transform`` returns ``(x - mean) / sqrt(var + eps)`` of each row's bucket,
    clipped to ``±clip``. The weights halve every ``halflife`` events of a (bucket, feature),
    or every ``halflife`` seconds with ``unit="seconds"`` (then ``update`` needs the rows'
    times). ``lock()`` freezes the statistics for inference (seed 001 §5: "locked per regime
    bucket"); an update of a locked normaliser is refused. The domain (min / max of every
    value seen, all buckets) is kept for ``FeatureSchema``.

    >>> norm = OnlineNormaliser(1, halflife=1e9)
    >>> norm.update(np.array([[1.0], [3.0]]), np.array([0, 0]))
    >>> norm.transform(np.array([[4.0]]), np.array([0])).round(6).tolist()
    [[2.0]]
    """

    def __init__(
        self,
        n_features: int,
        n_buckets: int = 1,
        *,
        halflife: float = 1000.0,
        unit: Literal["events", "seconds"] = "events",
        eps: float = 1e-12,
        clip: float | None = 10.0,
    ) -> None:
        state = {"n_features": n_features, "n_buckets": n_buckets, "halflife": halflife,
                 "unit": unit, "eps": eps, "clip": clip}
        try:
            _NormaliserParams.model_validate(state)
        except ValidationError as exc:
            raise ConfigError(describe_pydantic_error("normaliser", exc)) from None
        self.n_features = n_features
        self.n_buckets = n_buckets
        self.halflife = float(halflife)
        self.unit = unit
        self.eps = float(eps)
        self.clip = None if clip is None else float(clip)
        self.locked = False
        b, f = n_buckets, n_features
        self.weight = np.zeros((b, f))
        self.mean = np.zeros((b, f))
        self.m2 = np.zeros((b, f))
        self.last_t = np.full((b, f), -np.inf)
        self.bucket_t = np.full(b, -np.inf)
        self.domain_min = np.full(f, np.inf)
        self.domain_max = np.full(f, -np.inf)

    @property
    def variance(self) -> NDArray[np.float64]:
        """(n_buckets, n_features) weighted variances (NaN where nothing was seen)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.weight > 0, np.maximum(self.m2, 0.0) / self.weight, np.nan)

    def lock(self) -> None:
        self.locked = True

    def unlock(self) -> None:
        self.locked = False

    def _rows(self, values: ArrayLike, bucket: ArrayLike, what: str
              ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ConfigError(f"{what} field 'values' has shape {x.shape}, expected "
                              f"(rows, {self.n_features})")
        b = np.asarray(bucket)
        if b.ndim == 0:
            b = np.full(x.shape[0], b)
        if b.shape != (x.shape[0],) or not (b.size == 0 or np.issubdtype(b.dtype, np.integer)):
            raise ConfigError(f"{what} field 'bucket' must be one int per row ({x.shape[0]}), "
                              f"got {b.dtype} of shape {b.shape}")
        bad = np.flatnonzero((b < 0) | (b >= self.n_buckets))
        if bad.size:
            raise ConfigError(f"{what} field 'bucket' = {int(b[bad[0]])} at row {int(bad[0])} "
                              f"is not a regime bucket in [0, {self.n_buckets})")
        return np.ascontiguousarray(x), b.astype(np.int64)

    def update(self, values: ArrayLike, bucket: ArrayLike, t: ArrayLike | None = None) -> None:
        """Fold ``values`` (rows, n_features) in; NaN = not observed; ``t`` for seconds."""
        if self.locked:
            raise ConfigError("normaliser is locked (inference); unlock() it to update")
        x, b = self._rows(values, bucket, "normaliser update")
        inf = np.argwhere(np.isinf(x))
        if inf.size:
            r, j = (int(i) for i in inf[0])
            raise ConfigError(f"normaliser update field 'values' = {float(x[r, j])!r} at row {r} "
                              f"feature {j} is not valid: must be finite (or NaN)")
        in_seconds = self.unit == "seconds"
        if in_seconds:
            if t is None:
                raise ConfigError("normaliser update field 't' is missing (unit = 'seconds')")
            times = np.asarray(t, dtype=np.float64)
            times = np.full(x.shape[0], float(times)) if times.ndim == 0 else times
            if times.shape != (x.shape[0],):
                raise ConfigError(f"normaliser update field 't' has shape {times.shape}, "
                                  f"expected one time or {x.shape[0]}")
            scratch = self.bucket_t.copy()
            r = _normaliser_check_times(b, times, scratch)
            if r >= 0:
                raise ConfigError(
                    f"normaliser update field 't' = {times[r].item()!r} at row {r} is not "
                    f"valid: bucket {int(b[r])}'s last update is at t = {scratch[b[r]]!r}"
                )
        else:
            times = np.zeros(x.shape[0])
        decay = 0.5 ** (1.0 / self.halflife)
        lam = math.log(2.0) / self.halflife
        _normaliser_update(x, b, times, in_seconds, decay, lam, self.weight, self.mean, self.m2,
                           self.last_t, self.bucket_t, self.domain_min, self.domain_max)

    def transform(
        self,
        values: ArrayLike,
        bucket: ArrayLike,
        *,
        nan_to: float | None = None,
        out: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]:
        """Z-scores of ``values`` in each row's bucket; NaN where the value or the bucket's
        statistics are missing, or ``nan_to`` there (0.0: "at the mean")."""
        x, b = self._rows(values, bucket, "normaliser transform")
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.subtract(x, self.mean[b], out=out)
            z /= np.sqrt(self.variance[b] + self.eps)
        if self.clip is not None:
            np.clip(z, -self.clip, self.clip, out=z)
        if nan_to is not None:
            z[np.isnan(z)] = nan_to
        return z

    def state(self) -> NormaliserState:
        return NormaliserState(
            n_features=self.n_features, n_buckets=self.n_buckets, halflife=self.halflife,
            unit=self.unit, eps=self.eps, clip=self.clip, locked=self.locked,
            weight=self.weight.tolist(), mean=self.mean.tolist(), m2=self.m2.tolist(),
            last_t=[_finite_or_none(row) for row in self.last_t],
            bucket_t=_finite_or_none(self.bucket_t),
            domain_min=_finite_or_none(self.domain_min),
            domain_max=_finite_or_none(self.domain_max),
        )

    @classmethod
    def from_state(cls, state: NormaliserState) -> OnlineNormaliser:
        norm = cls(state.n_features, state.n_buckets, halflife=state.halflife, unit=state.unit,
                   eps=state.eps, clip=state.clip)
        norm.locked = state.locked
        norm.weight = np.array(state.weight, dtype=float)
        norm.mean = np.array(state.mean, dtype=float)
        norm.m2 = np.array(state.m2, dtype=float)
        norm.last_t = _from_optional(state.last_t, -np.inf)
        norm.bucket_t = _from_optional([state.bucket_t], -np.inf)[0]
        norm.domain_min = _from_optional([state.domain_min], np.inf)[0]
        norm.domain_max = _from_optional([state.domain_max], -np.inf)[0]
        return norm


class NormalisationSpec(BaseModel):
    """What an online observation normaliser is: the features in order, which of them are
    z-scored, the feature its regime bucket is read from and that feature's bucket edges, the
    decay. Saved with the statistics (``ObservationNormaliser.state``); a checkpoint whose
    spec differs from the one its policy was trained with is refused by field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    names: Annotated[tuple[str, ...], Field(min_length=1)]
    normalised: tuple[str, ...]
    """Features z-scored: the market features but the bucket's own; the order's state
    (remaining, elapsed, TWAP deviation, working) and the bucket feature pass through as the
    fixed scaling gives them, so a policy still tells the regime and the horizon's end."""
    bucket_by: str | None
    """Observation feature whose value picks the bucket (None: one bucket)."""
    bucket_edges: tuple[Annotated[float, Field(allow_inf_nan=False)], ...] = ()
    """Inner edges, increasing, in the feature's observed units: bucket i holds values in
    [edges[i-1], edges[i]) (``np.searchsorted(edges, x, side="right")``)."""
    halflife: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    """Observations (rows: one per env and decision) of a bucket after which a weight halves."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        unknown = [n for n in self.normalised if n not in self.names]
        if unknown:
            raise ValueError(f"normalised feature {unknown[0]!r} is not among names")
        if self.bucket_by is not None and self.bucket_by not in self.names:
            raise ValueError(f"bucket_by {self.bucket_by!r} is not among names")
        if self.bucket_by is None and self.bucket_edges:
            raise ValueError("bucket_edges without bucket_by")
        if any(b <= a for a, b in zip(self.bucket_edges, self.bucket_edges[1:], strict=False)):
            raise ValueError(f"bucket_edges = {list(self.bucket_edges)} must increase")
        return self

    @property
    def n_buckets(self) -> int:
        return len(self.bucket_edges) + 1


class ObservationNormaliserState(BaseModel):
    """An ``ObservationNormaliser`` as JSON: its spec and its statistics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: NormalisationSpec
    stats: NormaliserState

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.stats.n_features != len(self.spec.names):
            raise ValueError(f"stats hold {self.stats.n_features} features, spec names "
                             f"{len(self.spec.names)}")
        if self.stats.n_buckets != self.spec.n_buckets:
            raise ValueError(f"stats hold {self.stats.n_buckets} buckets, spec's edges make "
                             f"{self.spec.n_buckets}")
        return self


class _NormaliserParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    n_features: Annotated[int, Field(ge=1)]
    n_buckets: Annotated[int, Field(ge=1)]
    halflife: PositiveFinite
    unit: Literal["events", "seconds"]
    eps: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    clip: PositiveFinite | None


# -- the feature schema a checkpoint carries ----------------------------------------------------
class FeatureSchema(BaseModel):
    """The features a policy was trained on: names in order, the builder's config, the
    normaliser's state and the training domain (min / max seen per feature, ``None`` when
    never seen; mean and std where recorded), with the histogram of the policy's greedy
    actions over the same rollout (the watchdog's reference for drift). Saved as JSON beside
    a checkpoint; ``check`` refuses anything else. A schema written before the mean, std and
    action histogram were recorded loads with them ``None``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    names: Annotated[tuple[str, ...], Field(min_length=1)]
    builder: FeatureConfig | None = None
    normaliser: NormaliserState | None = None
    normalisation: ObservationNormaliserState | None = None
    """The online observation normaliser the policy was trained behind (spec and frozen
    statistics: ``market.observations.ObservationNormaliser``); None: fixed scaling."""
    domain_min: tuple[float | None, ...]
    domain_max: tuple[float | None, ...]
    definitions: tuple[str, ...] | None = None
    """What each feature meant when the policy was trained (an observation feature's meaning,
    source and scale): a later definition that differs is refused by name."""
    domain_mean: tuple[float | None, ...] | None = None
    """Mean of each feature over the training domain (``None``: not recorded / never seen)."""
    domain_std: tuple[Annotated[float, Field(ge=0.0)] | None, ...] | None = None
    """Population standard deviation of each feature over the training domain."""
    action_counts: tuple[Annotated[int, Field(ge=0)], ...] | None = None
    """How often the policy's greedy rollout chose each action of its discrete action set
    (``None``: a continuous set, or not recorded)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"names = {list(self.names)} has duplicates")
        f = len(self.names)
        if self.definitions is not None and len(self.definitions) != f:
            raise ValueError(f"definitions must hold {f} values (one per name)")
        if len(self.domain_min) != f or len(self.domain_max) != f:
            raise ValueError(f"domain_min and domain_max must hold {f} values (one per name)")
        for what, values in (("domain_mean", self.domain_mean), ("domain_std", self.domain_std)):
            if values is not None and len(values) != f:
                raise ValueError(f"{what} must hold {f} values (one per name)")
        if self.normalisation is not None and self.normalisation.spec.names != self.names:
            raise ValueError(f"normalisation names {list(self.normalisation.spec.names)} "
                             f"differ from names {list(self.names)}")
        if self.normaliser is not None and self.normaliser.n_features != f:
            raise ValueError(
                f"normaliser has {self.normaliser.n_features} features, names has {f}"
            )
        return self

    @classmethod
    def build(
        cls,
        names: Sequence[str],
        normaliser: OnlineNormaliser | None = None,
        builder: FeatureConfig | None = None,
        domain_min: ArrayLike | None = None,
        domain_max: ArrayLike | None = None,
        definitions: Sequence[str] | None = None,
        domain_mean: ArrayLike | None = None,
        domain_std: ArrayLike | None = None,
        action_counts: ArrayLike | None = None,
        normalisation: ObservationNormaliserState | None = None,
    ) -> FeatureSchema:
        """The schema of a training run; the domain comes from ``normaliser`` unless given."""
        if domain_min is None or domain_max is None:
            if normaliser is None:
                raise ConfigError("feature schema needs a normaliser or domain_min / domain_max")
            domain_min, domain_max = normaliser.domain_min, normaliser.domain_max
        data = {
            "names": tuple(names),
            "builder": builder,
            "normaliser": None if normaliser is None else normaliser.state(),
            "domain_min": tuple(_finite_or_none(np.asarray(domain_min, dtype=float))),
            "domain_max": tuple(_finite_or_none(np.asarray(domain_max, dtype=float))),
            "definitions": None if definitions is None else tuple(definitions),
            "domain_mean": None if domain_mean is None
            else tuple(_finite_or_none(np.asarray(domain_mean, dtype=float))),
            "domain_std": None if domain_std is None
            else tuple(_finite_or_none(np.asarray(domain_std, dtype=float))),
            "action_counts": None if action_counts is None
            else tuple(int(c) for c in np.asarray(action_counts).ravel()),
            "normalisation": normalisation,
        }
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_pydantic_error("feature schema", exc)) from None

    def check(
        self,
        names: Sequence[str],
        builder: FeatureConfig | None = None,
        definitions: Sequence[str] | None = None,
    ) -> None:
        """Refuse (``ConfigError`` naming the feature) any features but the trained ones, in
        their order, a builder config that differs from the training one, and a feature whose
        definition changed since."""
        asked = tuple(names)
        seen: set[str] = set()
        for name in asked:
            if name in seen:
                raise ConfigError(f"feature '{name}' is asked for twice")
            seen.add(name)
            if name not in self.names:
                raise ConfigError(
                    f"feature '{name}' was not among the features the policy was trained on "
                    f"({', '.join(self.names)})"
                )
        for name in self.names:
            if name not in seen:
                raise ConfigError(f"feature '{name}' the policy was trained on is missing")
        for i, (got, want) in enumerate(zip(asked, self.names, strict=True)):
            if got != want:
                raise ConfigError(
                    f"feature '{got}' is at position {i}; the policy was trained with "
                    f"'{want}' there"
                )
        if definitions is not None and self.definitions is not None:
            for name, now, then in zip(asked, definitions, self.definitions, strict=True):
                if now != then:
                    raise ConfigError(
                        f"feature '{name}' is defined as {now!r}; the policy was trained on "
                        f"{then!r}"
                    )
        if builder is not None and self.builder is not None and builder != self.builder:
            for field in FeatureConfig.model_fields:
                now, then = getattr(builder, field), getattr(self.builder, field)
                if now != then:
                    raise ConfigError(
                        f"feature config field '{field}' = {now!r} differs from the "
                        f"training value {then!r}"
                    )

    def out_of_domain(self, values: ArrayLike, margin: float = 0.25) -> NDArray[np.bool_]:
        """True where a value lies beyond the training domain widened by ``margin`` × its
        width on each side (a feature never seen: any value). NaN is never flagged."""
        x = np.asarray(values, dtype=np.float64)
        f = len(self.names)
        if x.shape[-1:] != (f,):
            raise ConfigError(f"out_of_domain field 'values' has shape {x.shape}, expected "
                              f"(..., {f})")
        if not (math.isfinite(margin) and margin >= 0):
            raise ConfigError(f"out_of_domain field 'margin' = {margin!r} must be >= 0")
        lo = np.array([np.inf if v is None else v for v in self.domain_min])
        hi = np.array([-np.inf if v is None else v for v in self.domain_max])
        with np.errstate(invalid="ignore"):
            width = np.where(np.isfinite(hi - lo), hi - lo, 0.0)
            return (x < lo - margin * width) | (x > hi + margin * width)

    def make_normaliser(self) -> OnlineNormaliser:
        """The training run's normaliser, as saved (locked or not as it was)."""
        if self.normaliser is None:
            raise ConfigError("feature schema has no normaliser")
        return OnlineNormaliser.from_state(self.normaliser)

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def from_json(cls, text: str) -> FeatureSchema:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ConfigError(describe_pydantic_error("feature schema", exc)) from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> FeatureSchema:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read feature schema {str(p)!r}: {exc.strerror}") from None
        return cls.from_json(text)


# -- speed (python -m execrl.market.features) ---------------------------------------------------
def _speed(n_envs: int = 1024, n_trades: int = 200_000, seed: int = 0) -> dict[str, float]:
    """Events per second of each entry point, best of 5 after a warm-up (no assertion)."""
    import timeit

    rng = np.random.default_rng(seed)
    fb = FeatureBuilder(n_envs)
    k = fb.config.top_k
    trades = np.zeros(n_trades, dtype=TRADE_DTYPE)
    trades["env"] = rng.integers(0, n_envs, n_trades)
    trades["t"] = np.sort(rng.uniform(0.0, 60.0, n_trades))
    trades["px"] = 100.0 + rng.normal(0, 0.01, n_trades)
    trades["qty"] = rng.integers(1, 500, n_trades)
    trades["aggressor"] = rng.choice(np.array([-1, 1], dtype=np.int8), n_trades)
    levels = np.arange(k) * 0.01
    bid_px = np.broadcast_to(99.99 - levels, (n_envs, k)).copy()
    ask_px = np.broadcast_to(100.01 + levels, (n_envs, k)).copy()
    qty = rng.integers(1, 1000, (n_envs, k)).astype(float)
    fills = np.zeros(n_trades // 2, dtype=FILL_DTYPE)
    fills["env"] = rng.integers(0, n_envs, fills.shape[0])
    fills["t"] = 60.0
    fills["qty"] = 100
    fills["px"] = 100.0
    names = fb.names
    out = np.empty((n_envs, len(names)))
    clock = [60.0]

    def feed_trades() -> None:
        fb.reset(t0=0.0, arrival_mid=100.0, side=1)
        fb.on_trades(trades)

    def feed_book() -> None:
        clock[0] += 1e-3
        fb.on_book(clock[0], bid_px, qty, ask_px, qty)

    def feed_fills() -> None:
        fills["t"] = clock[0]
        fb.on_fills(fills)

    def read() -> None:
        fb.values(names, out=out)

    result = {}
    for label, fn, events in (("trades_per_s", feed_trades, n_trades),
                              ("book_snapshots_per_s", feed_book, n_envs),
                              ("fills_per_s", feed_fills, fills.shape[0]),
                              ("feature_values_per_s", read, n_envs * len(names))):
        fn()
        best = min(timeit.repeat(fn, number=20, repeat=5)) / 20
        result[label] = events / best
    return result


if __name__ == "__main__":
    for key, rate in _speed().items():
        print(f"{key}: {rate:,.0f}")
