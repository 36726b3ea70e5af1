"""The stochastic limit order book market, batched over ``n_envs`` independent books.

The model and its parameters: ``execrl.sim.lob_config`` (``LOBMarketConfig``); the compiled
event loop and the common-random-number scheme: ``execrl.sim.lob_kernels``. This module wires
them behind the market protocol (``execrl.sim.base.BatchedMarket``):

- ``reset`` draws one episode key per book (``execrl.sim.rng.episode_keys``), builds each book
  from ``init_queue`` and simulates ``warmup_s`` seconds of flow before the order arrives, in
  steps of the decision interval (the arrival VWAP is that warm-up's VWAP); the whole book is
  then moved by a whole number of ticks so that its arrival mid is within half a tick of s0.
- ``execute`` is one decision step of ``horizon_s / n_steps`` seconds: at its start the
  agent's cancel, the time-to-live expiry and the new child order (walked through the book,
  the rest resting at the back of its queue or dropped); then the others' events one by one
  until the step ends, resting orders filling FIFO as market orders reach them.
- One working order per book: a new order that would rest while one works (and is not
  cancelled in the same step) is refused (``REJECT_WORKING``); aggressive orders (market,
  IOC, time to live 0) may be sent while one works. A resting order whose price level leaves
  the simulated window (the price ran n_levels ticks away) is cancelled by the market.
- Features: trades (with aggressor), top-5 book snapshots at each step's end, the agent's
  child orders and fills and its queue position feed one ``market.features.FeatureBuilder``;
  ``feature(name)`` reads it (``LOB_FEATURES`` lists every name with its meaning).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from execrl.domain import OrderType
from execrl.market.events import CHILD_ORDER_DTYPE, FILL_DTYPE, TRADE_DTYPE
from execrl.market.features import FeatureBuilder, FeatureConfig
from execrl.sim import lob_kernels as kern
from execrl.sim.base import (
    ORDER_TYPE_CODES,
    REJECT_NO_PRICE,
    REJECT_OFF_TICK,
    REJECT_ORDER_TYPE,
    REJECT_OUTSIDE_BOOK,
    REJECT_WORKING,
    ChildOrderBatch,
    FillBatch,
)
from execrl.sim.lob_config import LOBMarketConfig
from execrl.sim.rng import episode_keys

__all__ = ["LOB_FEATURES", "LOBEstimate", "LOBMarket", "LOBMarketConfig", "estimate_book"]

# the kernels' codes are the protocol's
assert (kern.R_ORDER_TYPE, kern.R_OFF_TICK, kern.R_NO_PRICE, kern.R_WORKING,
        kern.R_OUTSIDE_BOOK) == (REJECT_ORDER_TYPE, REJECT_OFF_TICK, REJECT_NO_PRICE,
                                 REJECT_WORKING, REJECT_OUTSIDE_BOOK)
assert (kern.T_MARKET, kern.T_LIMIT, kern.T_MARKETABLE, kern.T_IOC) == tuple(
    ORDER_TYPE_CODES[t] for t in (OrderType.MARKET, OrderType.LIMIT,
                                  OrderType.MARKETABLE_LIMIT, OrderType.IOC))

TOP_K = 5
_FB_CONFIG = FeatureConfig(windows_s=(10.0, 30.0), top_k=TOP_K)

#: Every market feature of the order book: name -> meaning [unit]. "FB" = read from the
#: feature builder (``market.features``; NaN replaced as said), the rest computed here.
LOB_FEATURES: dict[str, str] = {
    "price_drift": "(mid - arrival mid) / (sigma * sqrt(horizon)), sigma = this model's "
    "estimated volatility (estimate_book) [horizon sd]",
    "volatility": "the realised volatility in ticks / reference_vol_ticks (config; None: this "
    "model's estimated volatility; regimes: calm's) [1 = the reference]",
    "spread_bps": "FB quoted spread (best ask - best bid) / mid x 1e4 [bps]",
    "last_volume": "market volume traded in the last step (everyone's, the agent's included; "
    "before the first step: the last warm-up step's) [shares]",
    "expected_volume": "estimated market volume of one step (estimate_book) [shares]",
    "mid": "(best bid + best ask) / 2 (a side empty in the whole window is priced one tick "
    "beyond it) [price]",
    "best_bid": "best bid price [price]",
    "best_ask": "best ask price [price]",
    "spread_ticks": "(best ask - best bid) / tick [ticks]",
    "imbalance_1": "FB (bid qty - ask qty) / (bid qty + ask qty) at the best levels; NaN -> 0 "
    "[-1, 1]",
    "imbalance_5": "FB the same over the top 5 non-empty levels; NaN -> 0 [-1, 1]",
    "bid_depth_5": "FB shares on the top 5 non-empty bid levels [shares]",
    "ask_depth_5": "FB shares on the top 5 non-empty ask levels [shares]",
    **{f"{s}_qty_{k}": f"FB shares at the {k}. non-empty {s} level, 0 when none [shares]"
       for k in range(1, TOP_K + 1) for s in ("bid", "ask")},
    "own_touch_qty": "shares at the best level of the side the order rests on (bid for a "
    "buy) [shares]",
    "opposite_touch_qty": "shares at the best level of the side the order takes from (ask for "
    "a buy) [shares]",
    "tick_flow_10s": "FB buyer- minus seller-initiated volume of the trades in (t - 10 s, t] "
    "[shares] (seed 000)",
    "tick_flow_30s": "FB the same over 30 s [shares] (seed 000)",
    "volume_10s": "FB volume traded in (t - 10 s, t] [shares]",
    "volume_30s": "FB volume traded in (t - 30 s, t] [shares]",
    "trades_10s": "FB trades in (t - 10 s, t] [count]",
    "trades_30s": "FB trades in (t - 30 s, t] [count]",
    "time_since_trade_s": "FB t - time of the last trade; NaN -> time since the warm-up began "
    "[s] (seed 003)",
    "realised_vol_bps": "FB exponentially weighted realised volatility of the mid from the "
    "step-end snapshots (30 s half-life); NaN -> 0 [bps per sqrt(s)]",
    "arrival_vwap": "FB VWAP of the warm-up's trades; NaN (none) -> arrival mid [price]",
    "mid_vs_arrival_vwap_bps": "FB side x (mid - arrival VWAP) / arrival VWAP x 1e4 "
    "(positive = against the order) [bps]",
    "mid_vs_arrival_bps": "FB side x (mid - arrival mid) / arrival mid x 1e4 [bps]",
    "working_qty": "shares of the agent's order still resting [shares]",
    "queue_ahead": "FB shares ahead of the working order in its queue (conservative fills: the "
    "whole queue at its price); 0 when none works (see working_qty) [shares]",
    "queue_depth_at_price": "shares shown at the working order's price (its own included), or "
    "at the touch of its side when none works [shares] (seed 003)",
    "recent_fill_rate": "FB shares filled / sent over the last 10 child orders; NaN (none "
    "yet) -> 0 [0, 1] (seed 003)",
    "avg_slippage_bps": "FB quantity-weighted side x (fill px - arrival mid) / arrival mid x "
    "1e4 over the last 10 fills; NaN (none yet) -> 0 [bps] (seed 003)",
}

_FB_NAMES: tuple[str, ...] = tuple(
    name for name, text in LOB_FEATURES.items() if text.startswith("FB")
)
_NAN_TO_ZERO = frozenset({"imbalance_1", "imbalance_5", "realised_vol_bps", "queue_ahead",
                          "recent_fill_rate", "avg_slippage_bps"})


# -- what the book looks like on average (the cost model, the features' scales) ---------------
@dataclass(frozen=True)
class LOBEstimate:
    """Statistics of the book without the agent (and without a scheduled shock), measured
    by ``estimate_book``; prices in ticks, so they do not depend on s0 or the tick."""

    sigma_ticks: float
    """Standard deviation of the mid's change over one second, from 10 s changes [ticks/√s]."""
    spread_ticks: float
    """Mean quoted spread [ticks]."""
    depth: tuple[float, ...]
    """Mean shares shown at each level of one side, counted from the best [shares]."""
    volume_per_s: float
    """Mean market volume per second [shares/s]."""
    events_per_s: float
    """Mean flow events per second (candidates accepted) [events/s]."""


_ESTIMATE_FIELDS = ("ticks_per_level", "n_levels", "aes", "limit_rate", "cancel_rate",
                    "market_rate", "init_queue", "limit_size", "market_size", "theta",
                    "reinit_prob", "resilience", "refill", "hawkes")


def estimate_book(config: LOBMarketConfig, seconds: float = 1800.0, n_books: int = 64,
                  seed: int = 20_240_607) -> LOBEstimate:
    """The book's statistics (``LOBEstimate``) from a simulation of ``n_books`` books over
    ``seconds`` with a fixed seed and no agent, cached per flow parameters."""
    flow = {name: getattr(config, name) for name in _ESTIMATE_FIELDS}
    key = LOBMarketConfig.model_validate(flow).model_dump_json()
    return _estimate(key, float(seconds), int(n_books), int(seed))


@functools.lru_cache(maxsize=64)
def _estimate(key: str, seconds: float, n_books: int, seed: int) -> LOBEstimate:
    base = LOBMarketConfig.model_validate_json(key)
    K = base.n_levels
    cfg = base.model_copy(update={"s0": 1000.0 * K * base.tick_size, "step_seconds": 10.0,
                                  "horizon_s": seconds, "warmup_s": 60.0})
    market = LOBMarket(cfg, n_envs=n_books, side=1)
    market.reset(np.random.default_rng(seed))
    orders = ChildOrderBatch.market_orders(n_books)
    active = np.ones(n_books, dtype=bool)
    mids = [market.mid.copy()]
    spreads = []
    depth = np.zeros(K)
    volume = 0.0
    for _ in range(cfg.n_steps):
        market.execute(orders, active)
        mids.append(market.mid.copy())
        spreads.append(market._best[:, 1] - market._best[:, 0])
        depth += market._depth_from_best().mean(axis=0)
        volume += float(market._last_volume.sum())
    tick = cfg.tick_size
    change = np.diff(np.array(mids), axis=0) / tick
    sigma = float(np.sqrt(np.mean(change**2) / cfg.step_s))
    return LOBEstimate(
        sigma_ticks=sigma,
        spread_ticks=float(np.mean(spreads) / tick),
        depth=tuple(float(x) for x in depth / cfg.n_steps),
        volume_per_s=volume / (n_books * cfg.horizon_s),
        events_per_s=float(market.events.sum()) / (n_books * (cfg.horizon_s + market._warm_s)),
    )


class LOBMarket:
    """``n_envs`` stochastic limit order books stepped together (module docstring)."""

    def __init__(self, config: LOBMarketConfig, n_envs: int, side: int):
        if side not in (1, -1):
            raise ValueError(f"side = {side!r} must be +1 (buy) or -1 (sell)")
        if n_envs < 1:
            raise ValueError(f"n_envs = {n_envs!r} must be >= 1")
        c = config
        self.config = c
        self.n_envs = n_envs
        self.n_steps = c.n_steps
        self.side = side
        self.s0 = float(c.s0)
        self.tick_size = float(c.tick_size)
        self.step_s = c.step_s
        self.available_features: tuple[str, ...] = tuple(LOB_FEATURES)
        self.order_types = frozenset(ORDER_TYPE_CODES.values())  # every type the core sends
        K, n = c.n_levels, n_envs
        self._K = K
        limit, cancel, market, init = c.tables()
        self._limit, self._cancel, self._market = limit, cancel, market
        self._init_cdf = np.ascontiguousarray(np.cumsum(init, axis=1))
        self._init_cdf[:, -1] = 1.0
        # each level's mean shares under init_queue (bucket b >= 1 uniform on
        # ((b - 1)·aes, b·aes]): the stationary shape a "stationary" refill restores
        mid_share = (np.arange(init.shape[1]) - 1) * c.aes + (c.aes + 1) / 2.0
        mid_share[0] = 0.0
        self._init_mean = np.ascontiguousarray(init @ mid_share)
        self._lsize_v = np.asarray(c.limit_size.values, dtype=np.int64)
        self._lsize_c = c.limit_size.cdf()
        self._msize_v = np.asarray(c.market_size.values, dtype=np.int64)
        self._msize_c = c.market_size.cdf()
        # the thinning slots: per side, limit at each level, cancel at each level, market,
        # Hawkes market (lob_kernels docstring)
        h = c.hawkes
        block = np.concatenate([limit.max(axis=1), cancel.max(axis=1),
                                [market.max(), h.max_rate if h is not None else 0.0]])
        self._edges = np.concatenate([[0.0], np.cumsum(np.concatenate([block, block]))])
        lam = float(self._edges[-1])
        # cell m of [0, 1) -> the slot holding u = m / n_cells (kern.flow's lookup)
        n_cells = 4096
        self._cells = np.searchsorted(self._edges, np.arange(n_cells) / n_cells * lam,
                                      side="right").astype(np.int64) - 1
        par = np.zeros(kern.N_PARAMS)
        par[kern.P_LAMBDA] = lam
        par[kern.P_THETA] = c.theta
        par[kern.P_REINIT] = c.reinit_prob
        par[kern.P_AES] = c.aes
        par[kern.P_RESILIENCE] = c.resilience
        par[kern.P_REFILL] = (kern.REFILL_STATIONARY if c.refill == "stationary"
                              else kern.REFILL_TAKEN)
        if h is not None:
            par[kern.P_HAWKES] = 1.0
            par[kern.P_H_SELF], par[kern.P_H_CROSS] = h.alpha_self, h.alpha_cross
            par[kern.P_H_BETA], par[kern.P_H_MAX] = h.beta, h.max_rate
            par[kern.P_H_AGENT] = 1.0 if h.agent_excites else 0.0
        par[kern.P_TAKER], par[kern.P_MAKER] = c.taker_fee, c.maker_rebate
        par[kern.P_CONSERVATIVE] = 1.0 if c.conservative_fills else 0.0
        if c.shock is not None:
            par[kern.P_SHOCK_N] = max(1, round(abs(c.shock.move) * c.s0 / c.tick_size))
            par[kern.P_SHOCK_DIR] = math.copysign(1.0, c.shock.move)
            par[kern.P_SHOCK_START] = c.shock.start * c.horizon_s
            par[kern.P_SHOCK_DUR] = c.shock.duration * c.horizon_s
            par[kern.P_SHOCK_REC] = (0.0 if c.shock.recovery is None
                                     else c.shock.recovery * c.horizon_s)
        par[kern.P_TICK] = self.tick_size
        par[kern.P_SIDE] = float(side)
        self._par = par
        self._r0 = math.floor(c.s0 / self.tick_size)
        # warm-up: whole decision steps before arrival
        self._warm_steps = math.ceil(c.warmup_s / self.step_s - 1e-9) if c.warmup_s > 0 else 0
        self._warm_s = self._warm_steps * self.step_s

        self._q = np.zeros((n, 2, K), dtype=np.int64)
        self._ints = np.zeros((n, kern.N_INTS), dtype=np.int64)
        self._floats = np.zeros((n, kern.N_FLOATS))
        self._keys = np.zeros(n, dtype=np.uint64)
        self._acc_i = np.zeros((n, kern.N_ACC_I), dtype=np.int64)
        self._acc_f = np.zeros((n, kern.N_ACC_F))
        self._reject = np.zeros(n, dtype=np.int8)
        self._best = np.zeros((n, 3))  # best bid, best ask, mid
        self._own = np.zeros((n, 3))  # queue ahead, shown at its price, at its side's touch
        self._snap = [np.zeros((n, TOP_K)) for _ in range(4)]
        self._mid = np.full(n, self.s0)
        self._arrival = np.full(n, self.s0)
        self.arrival_vwap = np.full(n, self.s0)
        self._last_volume = np.zeros(n)
        self._t = np.zeros(n)  # seconds since the order arrived
        self._rows = np.arange(n, dtype=np.intp)
        self._fb = FeatureBuilder(n, _FB_CONFIG)
        self._values: dict[str, NDArray[np.float64]] | None = None
        self._estimate: LOBEstimate | None = None
        self._alloc_buffers(max(1024, n * (K + 2) * 4))

    # -- buffers ----------------------------------------------------------------------------
    def _alloc_buffers(self, cap: int) -> None:
        self._tr = np.zeros(cap, dtype=TRADE_DTYPE)
        self._fl = np.zeros(cap, dtype=FILL_DTYPE)
        self._tr_cols = tuple(self._tr[f] for f in ("env", "t", "px", "qty", "aggressor"))
        self._fl_cols = tuple(self._fl[f] for f in ("env", "child_id", "t", "qty", "px",
                                                    "passive", "fee"))
        self._n_tr = np.zeros(1, dtype=np.int64)
        self._n_fl = np.zeros(1, dtype=np.int64)

    def _grow(self) -> None:
        old_tr, old_fl = self._tr[: self._n_tr[0]].copy(), self._fl[: self._n_fl[0]].copy()
        self._alloc_buffers(2 * self._tr.shape[0])
        self._tr[: old_tr.shape[0]] = old_tr
        self._fl[: old_fl.shape[0]] = old_fl
        self._n_tr[0], self._n_fl[0] = old_tr.shape[0], old_fl.shape[0]

    def _run_flow(self, active: NDArray[np.bool_], t_end: NDArray[np.float64],
                  in_order: bool) -> None:
        """Others' events up to ``t_end``, growing the event buffers as needed."""
        start = 0
        while True:
            start = kern.flow(
                start, active, t_end, in_order, self._par, self._edges, self._cells,
                self._limit,
                self._cancel, self._market, self._init_cdf, self._lsize_v, self._lsize_c,
                self._msize_v, self._msize_c, self._init_mean, self._keys, self._q, self._ints,
                self._floats,
                self._acc_i, self._acc_f, *self._tr_cols, self._n_tr, *self._fl_cols,
                self._n_fl,
            )
            if start < 0:
                break
            self._grow()

    def _snapshot(self, ids: NDArray[np.intp]) -> tuple[NDArray[np.float64], ...]:
        m = ids.shape[0]
        snap = [a[:m] for a in self._snap]
        kern.snapshot(self._q, self._ints, self._par, TOP_K, *snap, self._best, self._own, ids)
        self._mid = self._best[:, 2].copy()
        return tuple(a.copy() for a in snap)

    def _depth_from_best(self) -> NDArray[np.float64]:
        """(n, K) mean of both sides' shares shown at levels counted from each side's best."""
        K = self._K
        out = np.zeros((self.n_envs, K))
        for s in (kern.BID, kern.ASK):
            shown = self._q[:, s, :].astype(np.float64)
            if not self.config.conservative_fills:
                lvl = self._own_level()
                rows = np.flatnonzero((lvl >= 0) & (lvl < K) & (s == self._own_side))
                shown[rows, lvl[rows]] += self._ints[rows, kern.I_OWN_QTY]
            first = np.argmax(shown > 0, axis=1)
            idx = np.minimum(first[:, None] + np.arange(K)[None, :], K - 1)
            vals = np.take_along_axis(shown, idx, axis=1)
            vals[first[:, None] + np.arange(K)[None, :] >= K] = 0.0
            out += 0.5 * vals
        return out

    @property
    def _own_side(self) -> int:
        return kern.BID if self.side > 0 else kern.ASK

    def _own_level(self) -> NDArray[np.int64]:
        r = self._ints[:, kern.I_R]
        p = self._ints[:, kern.I_OWN_IDX]
        lvl = r - p if self.side > 0 else p - r - 1
        return np.where(self._ints[:, kern.I_OWN_QTY] > 0, lvl, -1000)

    # -- protocol ---------------------------------------------------------------------------
    @property
    def mid(self) -> NDArray[np.float64]:
        return self._mid

    @property
    def arrival_mid(self) -> NDArray[np.float64]:
        return self._arrival

    @property
    def interval_vwap(self) -> NDArray[np.float64]:
        """Market VWAP over the order's steps so far (the arrival mid before any trade)."""
        num, den = self._acc_f[:, kern.A_IV_NUM], self._acc_f[:, kern.A_IV_DEN]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, self._arrival)

    @property
    def events(self) -> NDArray[np.int64]:
        """Others' events simulated in each book since its reset (thinned-out candidates not
        counted): what the speed benchmark counts."""
        return self._ints[:, kern.I_EVENTS].copy()

    @property
    def working_qty(self) -> NDArray[np.int64]:
        return self._ints[:, kern.I_OWN_QTY].copy()

    def reset(self, rng: np.random.Generator, env_ids: NDArray[np.intp] | None = None) -> None:
        ids = self._rows if env_ids is None else np.ascontiguousarray(env_ids, dtype=np.intp)
        m = ids.size
        if m == 0:
            return
        keys = episode_keys(rng, m)
        lam = float(self._par[kern.P_LAMBDA])
        t0 = -self._warm_s
        kern.init_books(ids, keys, self._r0, t0, lam, self._init_cdf, float(self.config.aes),
                        self._q, self._ints, self._floats, self._keys)
        self._acc_f[ids] = 0.0
        active = np.zeros(self.n_envs, dtype=bool)
        active[ids] = True
        t_end = np.zeros(self.n_envs)
        chunks = []
        snaps = [self._snapshot(ids)]
        for k in range(self._warm_steps):
            self._n_tr[0] = self._n_fl[0] = 0
            self._acc_i[ids] = 0
            t_end[ids] = t0 + (k + 1) * self.step_s
            self._run_flow(active, t_end, in_order=False)
            chunks.append(self._tr[: self._n_tr[0]].copy())
            snaps.append(self._snapshot(ids))
        self._last_volume[ids] = (self._acc_i[ids, kern.A_VOLUME] if self._warm_steps
                                  else 0.0)
        # move each book by whole ticks so that its arrival mid is within half a tick of s0
        shift = np.rint((self._best[ids, 2] - self.s0) / self.tick_size).astype(np.int64)
        self._ints[ids, kern.I_R] -= shift
        moved = shift * self.tick_size
        self._best[ids] -= moved[:, None]
        self._mid = self._best[:, 2].copy()
        fb = self._fb
        fb.reset(ids, t0=t0)
        row_of = np.full(self.n_envs, -1, dtype=np.int64)
        row_of[ids] = np.arange(m)
        for k, snap in enumerate(snaps):
            bid_px, bid_qty, ask_px, ask_qty = snap
            if k > 0:
                trades = chunks[k - 1]
                trades["px"] -= moved[row_of[trades["env"]]]
                fb.on_trades(trades)
            fb.on_book(t0 + k * self.step_s, bid_px - moved[:, None], bid_qty,
                       ask_px - moved[:, None], ask_qty, env_ids=ids)
        fb.start_order(ids, self._mid[ids], self.side)
        self._arrival[ids] = self._mid[ids]
        vwap = fb.values(["arrival_vwap"], t=np.where(active, 0.0, self._t))[:, 0]
        self.arrival_vwap[ids] = np.where(np.isnan(vwap[ids]), self._mid[ids], vwap[ids])
        self._t[ids] = 0.0
        self._acc_i[ids] = 0
        self._acc_f[ids] = 0.0
        self._ints[ids, kern.I_STEP] = 0
        self._values = None

    def execute(
        self, orders: ChildOrderBatch, active: NDArray[np.bool_], record_events: bool = False
    ) -> FillBatch:
        """One decision step of every active book (module docstring)."""
        n = self.n_envs
        active = np.ascontiguousarray(active, dtype=np.bool_)
        self._n_tr[0] = self._n_fl[0] = 0
        if self._tr.shape[0] < n * (self._K + 2):
            self._alloc_buffers(n * (self._K + 2) * 4)
        t0 = self._t.copy()
        kern.agent_orders(
            active, t0, np.ascontiguousarray(orders.qty, dtype=np.int64),
            np.ascontiguousarray(orders.order_type, dtype=np.int8),
            np.ascontiguousarray(orders.limit_px, dtype=np.float64),
            np.ascontiguousarray(orders.ttl_steps, dtype=np.int32),
            np.ascontiguousarray(orders.cancel, dtype=np.bool_),
            np.ascontiguousarray(orders.child_id, dtype=np.int64),
            self._par, self._init_cdf, self._keys, self._q, self._ints, self._floats,
            self._acc_i, self._acc_f, self._reject, *self._tr_cols, self._n_tr,
            *self._fl_cols, self._n_fl,
        )
        reject = self._reject.copy()
        t_end = np.where(active, t0 + self.step_s, t0)
        self._run_flow(active, t_end, in_order=True)
        kern.expire(active, self._ints, self._acc_i)
        ids = np.flatnonzero(active)
        snap = self._snapshot(ids)
        self._t = t_end
        self._ints[ids, kern.I_STEP] += 1
        acc_i, acc_f = self._acc_i, self._acc_f
        qty = acc_i[:, kern.A_FILL].copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            avg_px = np.where(qty > 0, acc_f[:, kern.A_NOTIONAL] / qty, np.nan)
        self._last_volume = np.where(active, acc_i[:, kern.A_VOLUME], self._last_volume)
        trades = self._tr[: self._n_tr[0]]
        fills = self._fl[: self._n_fl[0]]
        self._feed_features(orders, active, reject, t0, t_end, ids, snap, trades, fills)
        batch = FillBatch(
            qty=qty,
            avg_px=avg_px,
            passive_qty=acc_i[:, kern.A_PASSIVE].copy(),
            fees=acc_f[:, kern.A_FEES].copy(),
            n_fills=acc_i[:, kern.A_NFILLS].astype(np.int32),
            working_qty=self._ints[:, kern.I_OWN_QTY].copy(),
            cancelled_qty=acc_i[:, kern.A_CANCELLED].copy(),
            reject=reject,
        )
        if record_events:
            order = np.argsort(fills["env"], kind="stable")  # per env, in time order
            batch.events = fills[order].copy()
        return batch

    def _feed_features(self, orders: ChildOrderBatch, active: NDArray[np.bool_],
                       reject: NDArray[np.int8], t0: NDArray[np.float64],
                       t_end: NDArray[np.float64], ids: NDArray[np.intp],
                       snap: tuple[NDArray[np.float64], ...], trades: NDArray,
                       fills: NDArray) -> None:
        """The step's events to the feature builder, in time order per environment: the new
        child orders (at the step's start), the trades, the step-end book, then the fills
        (stamped at the step's end: the builder's fill features have no time window)."""
        fb = self._fb
        sent = np.flatnonzero(active & (orders.qty > 0) & (reject == 0))
        if sent.size:
            co = np.zeros(sent.size, dtype=CHILD_ORDER_DTYPE)
            co["env"], co["child_id"] = sent, orders.child_id[sent]
            co["t"], co["qty"] = t0[sent], orders.qty[sent]
            fb.on_child_orders(co)
        if trades.shape[0]:
            fb.on_trades(trades[np.argsort(trades["env"], kind="stable")])
        if ids.size:
            fb.on_book(t_end[ids], *snap, env_ids=ids)
        if fills.shape[0]:
            stamped = fills.copy()
            stamped["t"] = t_end[stamped["env"]]
            fb.on_fills(stamped)
        if ids.size:
            fb.set_queue_position(self._own[ids, 0], env_ids=ids)
        self._values = None

    def load_book(self, env: int, r: int, bid: NDArray[np.int64], ask: NDArray[np.int64]) -> None:
        """Replace book ``env``'s queues (others' shares at levels 0 .. n_levels-1 of each side)
        and frame (bid level 0 at price index ``r``, ask level 0 at r + 1); its agent order is
        dropped. For hand-built scenarios (tests); the flow then goes on from there."""
        K = self._K
        bid_q, ask_q = np.asarray(bid, dtype=np.int64), np.asarray(ask, dtype=np.int64)
        if bid_q.shape != (K,) or ask_q.shape != (K,) or (bid_q < 0).any() or (ask_q < 0).any():
            raise ValueError(f"bid and ask must be {K} non-negative share counts")
        self._q[env, kern.BID] = bid_q
        self._q[env, kern.ASK] = ask_q
        self._ints[env, kern.I_R] = int(r)
        self._ints[env, kern.I_OWN_QTY] = 0
        self._snapshot(np.array([env], dtype=np.intp))
        self._values = None

    #: ``expected_mid_change`` is an estimate, not the exact conditional mean (``lob_move``)
    expected_move_exact = False

    def expected_mid_change(self, shares: NDArray[np.int64],
                            orders: ChildOrderBatch | None = None) -> NDArray[np.float64]:
        """Estimated E[mid change of the coming step | ``shares`` sent now]: the measured
        persistence ρ × the mechanical walk-the-book jump of what crosses, plus a scheduled
        shock's forced moves in the step (``execrl.sim.lob_move``; ``orders``: count only
        what crosses, else every share is taken to). An approximation: ``expected_cost`` on
        the book is a variance-reduction choice, not its default reward."""
        from execrl.sim import lob_move

        rho = lob_move.persistence(self.config)
        return rho * lob_move.mechanical_jump(self, shares, orders) + lob_move.shock_move(self)

    # -- features ---------------------------------------------------------------------------
    def estimate(self) -> LOBEstimate:
        if self._estimate is None:
            self._estimate = estimate_book(self.config)
        return self._estimate

    def _fb_values(self) -> dict[str, NDArray[np.float64]]:
        if self._values is None:
            t = np.maximum(self._t, self._fb.clock)
            vals = self._fb.values(_FB_NAMES, t=t)
            self._values = {name: vals[:, j] for j, name in enumerate(_FB_NAMES)}
        return self._values

    def feature(self, name: str) -> NDArray[np.float64]:
        if name not in LOB_FEATURES:
            raise KeyError(
                f"feature {name!r} is not provided by the order-book market; available: "
                f"{', '.join(self.available_features)}"
            )
        c = self.config
        tick = self.tick_size
        if name == "mid":
            return self._mid.copy()
        if name == "best_bid":
            return self._best[:, 0].copy()
        if name == "best_ask":
            return self._best[:, 1].copy()
        if name == "spread_ticks":
            return (self._best[:, 1] - self._best[:, 0]) / tick
        if name == "last_volume":
            return self._last_volume.astype(np.float64)
        if name == "expected_volume":
            return np.full(self.n_envs, self.estimate().volume_per_s * self.step_s)
        if name == "price_drift":
            scale = self.estimate().sigma_ticks * tick * math.sqrt(c.horizon_s) or 1.0
            return (self._mid - self._arrival) / scale
        if name == "working_qty":
            return self._ints[:, kern.I_OWN_QTY].astype(np.float64)
        if name == "queue_depth_at_price":
            return self._own[:, 1].copy()
        if name in ("own_touch_qty", "opposite_touch_qty"):
            s = self._own_side if name == "own_touch_qty" else 1 - self._own_side
            return self._touch_qty(s)
        values = self._fb_values()
        if name == "volatility":
            ref = c.reference_vol_ticks
            if ref is None:
                ref = self.estimate().sigma_ticks
            ticks = np.nan_to_num(values["realised_vol_bps"]) * 1e-4 * self._mid / tick
            return ticks / (ref or 1.0)
        v = values[name].copy()
        bad = np.isnan(v)
        if not bad.any():
            return v
        if name in _NAN_TO_ZERO:
            v[bad] = 0.0
        elif name == "spread_bps":
            v[bad] = ((self._best[:, 1] - self._best[:, 0]) / self._mid * 1e4)[bad]
        elif name == "time_since_trade_s":
            v[bad] = (self._t + self._warm_s)[bad]
        elif name == "arrival_vwap":
            v[bad] = self._arrival[bad]
        elif name == "mid_vs_arrival_vwap_bps":
            v[bad] = self.feature("mid_vs_arrival_bps")[bad]
        else:  # depths, flows, mids: not NaN while a book has shares
            v[bad] = 0.0
        return v

    def _touch_qty(self, s: int) -> NDArray[np.float64]:
        snap_qty = self._fb_values()["bid_qty_1" if s == kern.BID else "ask_qty_1"]
        return np.nan_to_num(snap_qty)


def max_trades_in_window(config: LOBMarketConfig, window_s: float = 30.0) -> tuple[float, int]:
    """A bound on the trades one book prints within the feature builder's longest window
    (market orders at their largest rate, 10 standard deviations above the mean, a shock's
    forced moves, the agent's walks), and what the builder keeps."""
    h = config.hawkes
    rate = 2.0 * (max(max(row) for row in config.market_rate) + (h.max_rate if h else 0.0))
    mean = rate * window_s
    bound = mean + 10.0 * math.sqrt(mean) + 10.0
    if config.shock is not None:
        moves = abs(config.shock.move) * config.s0 / config.tick_size
        fastest = min(config.shock.duration, config.shock.recovery or 1.0) * config.horizon_s
        bound += moves * min(1.0, window_s / fastest)
    bound += config.n_levels * (window_s / config.step_s + 1.0)
    return bound, _FB_CONFIG.max_trade_capacity
