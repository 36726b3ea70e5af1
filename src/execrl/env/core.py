"""The batched execution loop: one parent order per environment, ``n_envs`` at once.

``BatchedExecution`` is the state machine every front end shares: the gymnasium
``ExecutionEnv`` (one environment), the natively batched ``ExecutionVectorEnv`` and its
Stable-Baselines3 adapter, and ``execrl evaluate``. A step turns actions into child orders
(whole shares, cut to the order's hard limits), sends them to the market, books the fills and
computes rewards and the next observation, over the whole batch at once: compiled (numba)
loops over the environments, never a Python one.

Hard limits live in the risk guard (``execrl.safety.RiskGuard``; without one, the core builds
it from the order's ``OrderConstraints``: ``child_max``, ``participation`` of the step's
expected volume, ``price_band_bps``). Its size cap bounds every child order the kernels build,
the horizon's included, and its ``check`` then runs on every outgoing child order (a forced
one too) right before the market: whatever the kernels (or a bug) produced, nothing beyond a
limit leaves (``last_guard``: the verdict per env; ``guard_rejects``: refusals per episode).
The kernels cut to the cap, so the check only acts on controls they do not know (throttles,
duplicates, restricted symbols, locates, the kill switch). With the cap, the last step sends
what is left only up to the limits, and what they do not allow stays unfilled. IS counts
every share of the parent order, so that residual is charged at the end mid
(``residual_is_bps``) and reported with the fill rate. Two counters keep the limits honest:
a *cut* is a request of the policy that the limits cut down (a masked discrete action, a
continuous request above the cap), a *breach* a child order that actually went beyond a
limit (sent or filled above it), which the core's own orders never are.

Order styles (``env.spaces.OrderStyle``): an action names a size and how the child order meets
the book; the core prices limit orders from the touch on the market's tick grid, keeps every
limit price within ``price_band_bps`` of the mid (a market order on a book becomes an IOC at
the band's edge; an action priced beyond the band is masked, and cut to the edge when taken
anyway), and replaces the working order when a new one would rest (cancel / replace: at most
one child order works per parent order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numba import njit
from numpy.typing import NDArray

from execrl.domain import ConfigError, OrderConstraints, OrderType
from execrl.domain.costs import shortfall_bps
from execrl.env.rewards import IsBpsReward, Reward, RewardContext, StepOutcome
from execrl.env.spaces import MARKET_ORDER, ActionSet, OrderStyle, fraction_to_shares
from execrl.market.observations import OBSERVATION_FEATURES
from execrl.safety.guard import _FILLED as _G_FILLED
from execrl.safety.guard import (
    _NO_LIMIT,
    GUARD_FIRST_REJECT,
    GUARD_PARENT_TOTAL,
    GUARD_PRICE_BAND,
    GuardArrays,
    GuardInputs,
    RiskGuard,
    RiskLimits,
    _check_kernel,
    _parent_cut,
    _record_shares,
    _record_shares_kernel,
    _refusal,
    _refused,
    _size_cap_kernel,
    _stop_code,
)
from execrl.safety.guard import _WORKING as _G_WORKING
from execrl.sim.almgren_chriss import _ALPHA as _AC_ALPHA
from execrl.sim.almgren_chriss import _ARRIVAL as _AC_ARRIVAL
from execrl.sim.almgren_chriss import _ARRIVAL_VWAP as _AC_ARRIVAL_VWAP
from execrl.sim.almgren_chriss import _MID as _AC_MID
from execrl.sim.almgren_chriss import (
    _X_ALPHA_NEXT,
    _X_DRIFT,
    _X_SHOCK,
    _X_VOLUME,
    ACArrays,
    ACMarket,
    ACStates,
    _apply_kernel,
    _exogenous_kernel,
    _exogenous_one,
    _fill_one,
    _next_state,
    _put_fill,
    _step_noise,
)
from execrl.sim.base import (
    ORDER_TYPE_CODES,
    BatchedMarket,
    ChildOrderBatch,
    FillArrays,
    FillBatch,
    OrderArrays,
)


@dataclass
class EpisodeStats:
    """Per-environment results of the episode in progress (or just finished)."""

    is_bps: NDArray[np.float64]
    is_vs_arrival_vwap_bps: NDArray[np.float64]
    is_vs_interval_vwap_bps: NDArray[np.float64]
    filled: NDArray[np.int64]
    child_orders: NDArray[np.int64]
    breaches: NDArray[np.int64]  # child orders beyond a hard limit (sent or filled)
    cuts: NDArray[np.int64]  # the policy's requests the hard limits cut down
    residual_is_bps: NDArray[np.float64]  # the unfilled shares' charge at the end mid
    episode_return: NDArray[np.float64]
    schedule: NDArray[np.int64]  # shares traded per step, (n_envs, n_steps)
    guard_rejects: NDArray[np.int64]  # steps whose child order the risk guard refused
    # per-env order state and counters in one (n_envs, 5) array (columns _WORKING … _REJECTS),
    # so a kernel takes them as one argument; the fields below are column views of it
    order_ints: NDArray[np.int64]
    # the float and count fields above are rows of these two blocks (rows _F_*, _C_*), so a
    # kernel takes each group as one argument, its rows read by name
    floats: NDArray[np.float64]
    counts: NDArray[np.int64]

    @property
    def working(self) -> NDArray[np.int64]:
        """Shares of the child order still resting in the market."""
        return self.order_ints[:, _WORKING]

    @property
    def fills(self) -> NDArray[np.int64]:
        """Fill events (a child order may fill in parts)."""
        return self.order_ints[:, _FILLS]

    @property
    def cancels(self) -> NDArray[np.int64]:
        """Cancels of a working order that took shares off the book."""
        return self.order_ints[:, _CANCELS]

    @property
    def rejects(self) -> NDArray[np.int64]:
        """Child orders the market refused (``execrl.sim.base.REJECT_REASONS``)."""
        return self.order_ints[:, _REJECTS]


# -- the kernels' structures ---------------------------------------------------------------------
# The step's compiled kernels take the core's, the guard's and the market's arrays as a few
# named tuples and read each array by name (``c.remaining[i]``): a kernel handed the wrong
# structure does not compile (numba: unknown attribute), where two swapped positional arrays
# of one type would run, wrong. The persistent ones are built once with their owner (their
# arrays are updated in place, never replaced); what a step makes anew travels in the
# per-step ones (``StepDecision``, ``StepResult``, ``ACStates``, ``FillArrays``).
class CoreArrays(NamedTuple):
    """``BatchedExecution``'s per-env order state, episode blocks and constants."""

    fractions: NDArray[np.float64]  # the discrete actions' fractions (empty: continuous)
    can_cut: NDArray[np.bool_]  # per discrete action: choosing it above the cap is a cut
    styles: NDArray[np.int64]  # the order-style table (``_style_table``)
    n_steps: int
    twap_base: bool
    side: int
    tick: float
    order_qty: NDArray[np.int64]
    is_scale: NDArray[np.float64]  # 1e4 / order_qty
    remaining: NDArray[np.int64]
    k: NDArray[np.int64]
    done: NDArray[np.bool_]
    cash: NDArray[np.float64]
    floats: NDArray[np.float64]  # EpisodeStats.floats (rows _F_*)
    counts: NDArray[np.int64]  # EpisodeStats.counts (rows _C_*)
    schedule: NDArray[np.int64]
    order_ints: NDArray[np.int64]  # EpisodeStats.order_ints (columns _WORKING ...)
    last_guard: NDArray[np.int16]
    orders: OrderArrays  # the child orders the step sends (``last_orders``)


class StepDecision(NamedTuple):
    """One step's decision: its inputs and what the decision kernel writes, per env."""

    actions: NDArray[np.int64]  # discrete action (empty: continuous)
    requested: NDArray[np.int64]  # shares asked for (written here for discrete actions)
    style_idx: NDArray[np.int64]
    forced: NDArray[np.int64]  # forced shares, -1: the action decides (empty: none)
    forced_style: NDArray[np.int64]  # (1, 5): the forced orders' style-table row
    edges: NDArray[np.float64]  # the band's edge (empty: no band)
    quotes: NDArray[np.float64]  # (3, n): near touch, far touch, mid ((3, 0): no book)
    active: NDArray[np.bool_]
    final: NDArray[np.bool_]  # the episode's last decision
    guard_cap: NDArray[np.int64]  # the guard's size cap
    limit: NDArray[np.int64]  # out: the largest child the limits allow
    cut: NDArray[np.bool_]  # out: the policy's request was cut


class BookPrices(NamedTuple):
    """The prices the booking reads after the market's step, per env."""

    arrival: NDArray[np.float64]
    end_mid: NDArray[np.float64]
    arrival_vwap: NDArray[np.float64]


class StepResult(NamedTuple):
    """What the booking writes per env besides the episode blocks."""

    step_is: NDArray[np.float64]
    done_now: NDArray[np.bool_]
    avg_fill: NDArray[np.float64]
    reward: NDArray[np.float32]


class BatchedExecution:
    """Execute one parent order of ``qty`` shares (``side`` ±1) in each of the market's envs.

    ``qty``: one size for every env, or one per env (a batch of the desk's orders of one side
    and horizon on one market: the service's micro-batches). Everything that scales with the
    order (what remains, the fill rate, per-parent-qty features, IS's 1e4/qty, the reward's
    notional, the guard's caps) then uses each env's own; an env's results are exactly those
    of a one-order core of its size on the same path.

    With ``autoreset`` a finished episode restarts in the same step (training); without it a
    finished environment stays finished until ``reset`` (evaluation: one order per env).
    """

    def __init__(
        self,
        market: BatchedMarket,
        qty: int | NDArray[np.int64],
        side: int,
        observations: tuple[str, ...],
        action_set: ActionSet,
        reward: Reward,
        constraints: OrderConstraints | None = None,
        autoreset: bool = True,
        risk_var_per_share2: float = 0.0,
        guard: RiskGuard | None = None,
    ):
        per_env = np.ndim(qty) > 0
        if per_env:
            order_qty = np.array(qty, dtype=np.int64).reshape(-1)
            if order_qty.shape[0] != market.n_envs:
                raise ConfigError(f"order field 'qty' has {order_qty.shape[0]} entries for "
                                  f"{market.n_envs} environments")
            if order_qty.size and order_qty.min() <= 0:
                bad = int(order_qty[np.argmin(order_qty)])
                raise ConfigError(f"order field 'qty' = {bad!r} must be > 0")
        elif qty <= 0:
            raise ConfigError(f"order field 'qty' = {qty!r} must be > 0")
        else:
            order_qty = np.full(market.n_envs, int(qty), dtype=np.int64)
        for name in observations:
            source = OBSERVATION_FEATURES[name].source
            if source is None or source in market.available_features:
                continue
            raise ConfigError(
                f"observation feature {name!r} needs market feature {source!r}, which this "
                f"market does not provide ({', '.join(market.available_features)})"
            )
        self.market = market
        self.n_envs = market.n_envs
        self.n_steps = market.n_steps
        #: the parent order's shares as given: an int (every env), or the per-env array
        self.qty: int | NDArray[np.int64] = order_qty if per_env else int(qty)
        #: per env: its parent order's shares (the kernels' input, whatever was given)
        self.order_qty = order_qty
        self._is_scale = 1e4 / order_qty  # IS in bps of each order's arrival notional
        self.side = int(side)
        self.observations = observations
        self.action_set = action_set
        self.reward = reward
        if guard is not None and constraints is not None:
            raise ConfigError(
                "give the order's constraints to the risk guard (RiskLimits.from_constraints "
                "merged with the firm's limits), not to the execution core as well"
            )
        self.constraints = constraints or OrderConstraints()
        self.autoreset = autoreset
        #: ask the market for one FILL_EVENT_DTYPE row per fill (``last_fills.events``): the
        #: audit trail's input; off by default, it costs an allocation per step
        self.record_fill_events = False
        self.last_fills: FillBatch | None = None
        self._risk_var = risk_var_per_share2
        self._rng = np.random.default_rng()
        n = self.n_envs
        self._rows = np.arange(n)
        self._orders = ChildOrderBatch.market_orders(n)
        self._is_bps_reward = type(reward) is IsBpsReward
        self._reward_needs_events = bool(getattr(reward, "needs_fill_events", False))
        self._fractions: NDArray[np.float64] | None = None
        self._can_cut = np.zeros(0, dtype=bool)
        self._smallest = 0
        if action_set.fractions is not None:
            frac = np.asarray(action_set.fractions, dtype=np.float64)
            self._fractions = frac
            self._smallest = int(np.argmin(frac))
            # A masked discrete action is a cut (``action_masks``). The mask allows a
            # fraction of 0 always, and the smallest fraction when nothing else is allowed:
            # shares never shrink as the fraction grows, so that happens exactly when the
            # smallest fraction's shares are above the cap. So with no 0 in the set, choosing
            # the smallest is never the policy's cut, and any other action is one exactly when
            # its shares exceed the cap; with a 0, any nonzero action whose shares exceed it is.
            self._can_cut = frac != 0.0
            if not (frac == 0.0).any():
                self._can_cut[self._smallest] = False
        # order styles: per discrete action, or per style index of a continuous set
        styles: tuple[OrderStyle, ...] = action_set.styles or (
            (MARKET_ORDER,) * max(action_set.n_actions, 1)
        )
        self._styles = _style_table(styles, self.n_steps)
        self._twap_base = action_set.size_base == "twap_slice"
        self._has_book = {"best_bid", "best_ask"} <= set(market.available_features) and (
            market.tick_size > 0
        )
        if not action_set.market_orders_only and not self._has_book:
            raise ConfigError(
                f"action set {action_set.name!r} sends limit orders, which this market cannot "
                f"fill (it takes market orders only: use seed004, seed003, fine or continuous)"
            )
        self._tick = float(market.tick_size) if self._has_book else 0.0
        # the hard limits live in the risk guard: its size cap bounds every child order the
        # kernels build, its band edges every limit price, and its check runs on the result
        if guard is None:
            guard = RiskGuard(
                RiskLimits.from_constraints(self.constraints), n, self.side, order_qty,
                step_seconds=1.0, tick_size=self._tick, horizon_s=float(self.n_steps),
            )
        if guard.n_orders != n or (guard.qty != order_qty).any() or (guard.side != side).any():
            shares = f"{self.qty}" if not per_env else "their"
            raise ConfigError(
                f"risk guard for {guard.n_orders} orders does not match the execution core's "
                f"{n} orders of {shares} shares, side {side:+d}"
            )
        guard.use_tick(self._tick)  # band edges on this market's grid (0: no book)
        if guard.needs_volume and "expected_volume" not in market.available_features:
            raise ConfigError("order constraint 'participation' needs a market with volume")
        self.guard = guard
        #: the risk guard's verdict on each env's child order of the last step (GUARD_* code:
        #: 0 passed, a cap's code where the order was cut, a prohibition's where refused)
        self.last_guard = np.zeros(n, dtype=np.int16)
        self._forced_tables: dict[OrderStyle, NDArray[np.int64]] = {}
        self._last_quotes = _NO_QUOTES
        self.remaining = order_qty.copy()
        self.k = np.zeros(n, dtype=np.int64)
        self.done = np.zeros(n, dtype=bool)
        self._cash = np.zeros(n)
        self.stats = self._new_stats()
        # observation plan: per feature, where it comes from (and the market's, its scale
        # and whether it is divided by the step's expected volume)
        self._obs_plan: list[tuple[int, str, Any, bool]] = []
        for name in observations:
            if name in _ORDER_OBS:
                self._obs_plan.append((_ORDER_OBS[name], "", 1.0, False))
            else:
                f = OBSERVATION_FEATURES[name]
                # per env with per-env sizes (the same division, element by element)
                scale: Any = f.scale / self.qty if f.per_parent_qty else f.scale
                scale = scale * self.side if f.side_relative else scale
                if f.per_step_volume and "expected_volume" not in market.available_features:
                    raise ConfigError(
                        f"observation feature {name!r} needs market feature 'expected_volume'"
                    )
                self._obs_plan.append((_OBS_MARKET, str(f.source), scale, f.per_step_volume))
        self._obs_kinds = np.array([plan[0] for plan in self._obs_plan], dtype=np.int64)
        self._obs_values = np.empty((len(observations), n))  # observe's scratch
        # the episode end observes the restarted envs alone, unless a subclass observes
        # otherwise (``NormalisedExecution`` folds what it observes)
        self._observe_once = type(self).observe is BatchedExecution.observe
        self._finish_call = _TypedCall(_finish_kernel)
        self._records_call = _TypedCall(_records_kernel)
        # the fused step (``_fused_step``): the Almgren–Chriss market itself, the is_bps
        # reward, market orders, and no risk control that keeps windows (those book in
        # ``RiskGuard.record``'s full kernel)
        self._fused = (
            type(market) is ACMarket and self._is_bps_reward and not guard._windows
            and not self._has_book
        )
        self._one_style = np.zeros(n, dtype=np.int64)  # every env's style: the set's only one
        #: what the step kernels share, by name (the arrays above: never replaced)
        self._arrays = CoreArrays(
            _NO_FRACTIONS if self._fractions is None else self._fractions, self._can_cut,
            self._styles, self.n_steps, self._twap_base, self.side, self._tick, self.order_qty,
            self._is_scale, self.remaining, self.k, self.done, self._cash, self.stats.floats,
            self.stats.counts, self.stats.schedule, self.stats.order_ints, self.last_guard,
            self._orders.arrays(),
        )
        # the fused step's scratch, per env: rows t, volume, step_is, avg_fill; guard_cap,
        # limit; active, final, cut
        self._scratch_f = np.empty((4, n))
        self._scratch_i = np.empty((2, n), dtype=np.int64)
        self._scratch_b = np.empty((3, n), dtype=bool)
        # ...as row views made once (a view costs a few hundred ns, and a step takes eleven)
        self._scratch_rows = (*self._scratch_f, *self._scratch_i, *self._scratch_b)
        self._first_style = self._styles[:1]
        self._fused_call = _TypedCall(_fused_ac_step_kernel)
        self._one_loop_call = _TypedCall(_fused_ac_one_loop_kernel)  # guard.stops_only

    def _new_stats(self) -> EpisodeStats:
        n = self.n_envs
        floats = np.zeros((_N_F, n))
        counts = np.zeros((_N_C, n), dtype=np.int64)
        return EpisodeStats(
            is_bps=floats[_F_IS],
            is_vs_arrival_vwap_bps=floats[_F_IS_ARRIVAL_VWAP],
            is_vs_interval_vwap_bps=floats[_F_IS_INTERVAL_VWAP],
            filled=counts[_C_FILLED],
            child_orders=counts[_C_CHILD_ORDERS],
            breaches=counts[_C_BREACHES],
            cuts=counts[_C_CUTS],
            residual_is_bps=floats[_F_RESIDUAL_IS],
            episode_return=floats[_F_RETURN],
            schedule=np.zeros((n, self.n_steps), dtype=np.int64),
            guard_rejects=counts[_C_GUARD_REJECTS],
            order_ints=np.zeros((n, _N_ORDER_INTS), dtype=np.int64),
            floats=floats,
            counts=counts,
        )

    # -- episodes ---------------------------------------------------------------------------
    def seed(self, seed: int | None) -> None:
        """Reseed the stream that market paths are drawn from (``None``: fresh entropy)."""
        self.use_rng(np.random.default_rng(seed))

    def use_rng(self, rng: np.random.Generator) -> None:
        """Draw market paths from ``rng`` (a gymnasium env hands over its ``np_random``)."""
        self._rng = rng

    def reset(self, seed: int | None = None) -> NDArray[np.float32]:
        """Start a new episode in every environment; with a seed, episode i's market path is
        a function of (seed, i) alone."""
        if seed is not None:
            self.seed(seed)
        self._reset_envs(None)
        return self.observe()

    def _reset_envs(self, ids: NDArray[np.intp] | None, order_rows: bool = True) -> None:
        """Start new episodes in ``ids`` (``None``: every environment): the market's, the
        guard's and, with ``order_rows``, the order's state (the episode end resets those rows
        in the kernel that gathers their records, ``_records_kernel``, and passes False)."""
        self.market.reset(self._rng, ids)
        self.guard.reset(ids)
        if not order_rows:
            return
        if ids is not None:
            rows = np.ascontiguousarray(ids, dtype=np.intp)
            _records_kernel(self._arrays, EpisodeRecords(rows, _NO_OBS, _NO_OBS, *_no_records()),
                            True)
            return
        s = self.stats
        np.copyto(self.remaining, self.order_qty)
        self.k.fill(0)
        self.done.fill(False)
        self._cash.fill(0.0)
        s.floats.fill(0.0)
        for arr in (s.counts, s.schedule, s.order_ints):
            arr.fill(0)

    # -- decisions --------------------------------------------------------------------------
    def _guard_inputs(self) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                     NDArray[np.float64] | None]:
        """The guard's clock (k × its step), the mid and the step's expected volume."""
        t = self.k * self.guard.step_seconds
        volume = self.market.feature("expected_volume") if self.guard.needs_volume else None
        return t, self.market.mid, volume

    def _size_cap(self) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """The guard's largest new child per env now, and its band edges (empty: none)."""
        t, mid, volume = self._guard_inputs()
        cap = self.guard.size_cap(t, mid, volume, ~self.done)
        edges = self.guard.band_edges(mid) if self._has_book else _NO_EDGES
        return cap, edges

    def _quotes(self) -> NDArray[np.float64]:
        """(3, n_envs): the near touch, the far touch and the mid (the band's reference), for
        the order's side; (3, 0) on a market without a book."""
        if not self._has_book:
            return _NO_QUOTES
        bid = self.market.feature("best_bid")
        ask = self.market.feature("best_ask")
        quotes = np.empty((3, self.n_envs))
        quotes[0] = bid if self.side > 0 else ask
        quotes[1] = ask if self.side > 0 else bid
        quotes[2] = self.market.mid
        return quotes

    def action_masks(self) -> NDArray[np.bool_]:
        """(n_envs, n_actions): the discrete actions the hard limits allow now. A fraction of
        0 (wait) is always allowed; when nothing else is, the smallest action is; at the last
        step (what is left is sent, up to the limits, whatever the action) and after the
        episode every action is."""
        if self._fractions is None:
            raise ConfigError(f"action set {self.action_set.name!r} is continuous: no masks")
        mask = np.empty((self.n_envs, self._fractions.size), dtype=bool)
        cap, edges = self._size_cap()
        _masks_kernel(
            self._fractions,
            self._smallest,
            self.remaining,
            self.k,
            self.done,
            self.n_steps,
            cap,
            self.stats.order_ints,
            self._twap_base,
            self._styles,
            self.side,
            self._tick,
            edges,
            self._quotes(),
            mask,
        )
        return mask

    def _requests(self, actions: NDArray) -> tuple[NDArray[np.int64], NDArray[np.int64],
                                                    NDArray[np.int64]]:
        """(discrete action index per env or empty, requested shares per env (the decision
        kernel fills them for discrete actions), style index per env)."""
        n = self.n_envs
        if self._fractions is not None:
            idx = self.action_set.flat_actions(actions)
            if idx.shape[0] != n:  # one action for every env
                idx = np.broadcast_to(idx, (n,)).copy()
            idx = np.ascontiguousarray(idx)
            return idx, np.empty(n, dtype=np.int64), idx
        a = np.asarray(actions)
        if (len(self.action_set.styles) <= 1 and a.ndim in (1, 2) and a.shape[0] == n
                and a.dtype.kind == "f"):  # the hot path: one compiled pass
            requested = np.empty(n, dtype=np.int64)
            if _fraction_requests(a.reshape(n, -1)[:, 0], self.remaining, requested) >= 0:
                self.action_set.to_fraction(actions)  # raises, naming the action
            return _NO_ACTIONS, requested, self._one_style
        fraction = self.action_set.to_fraction(actions)
        requested = fraction_to_shares(fraction, self.remaining)
        if requested.shape[0] != n:
            requested = np.broadcast_to(requested, (n,)).copy()
        style_idx = self.action_set.to_style_index(actions)
        if style_idx.shape[0] != n:
            style_idx = np.broadcast_to(style_idx, (n,)).copy()
        return (_NO_ACTIONS, np.ascontiguousarray(requested),
                np.ascontiguousarray(style_idx, dtype=np.int64))

    def step(
        self,
        actions: NDArray,
        forced_shares: NDArray[np.int64] | None = None,
        forced_style: OrderStyle | None = None,
    ) -> tuple[NDArray, NDArray, NDArray, NDArray, dict[str, Any]]:
        """One decision for every environment: (obs, reward, terminated, truncated, info).

        ``info`` holds arrays: ``"done_ids"`` and, for those, ``"final_obs"`` and the finished
        episodes' stats (``"episode"``) when autoreset replaced them in this same step.

        ``forced_shares`` (the executor's fallback): rows with ``forced_shares[i] >= 0`` send
        that many shares in ``forced_style`` (a market order by default) whatever their action
        (which must still be a valid one), through the same hard limits and risk guard; -1:
        the action decides. The last step sweeps what is left, as always.
        """
        record = self.record_fill_events or self._reward_needs_events
        if self._fused and forced_shares is None and not record and (
            type(self.market) is ACMarket and not self.guard._windows
        ):  # (a caller may have put a venue around the market, or a new guard, since)
            return self._fused_step(actions)
        n = self.n_envs
        active = ~self.done
        forced, forced_table = _NO_FORCED, self._styles[:1]
        if forced_shares is not None:
            forced = np.ascontiguousarray(np.broadcast_to(forced_shares, (n,)), dtype=np.int64)
            forced_table = self._forced_style_row(forced_style or MARKET_ORDER)
        cut = np.empty(n, dtype=bool)
        limit = np.empty(n, dtype=np.int64)
        shares = self._orders.qty
        idx, requested, style_idx = self._requests(actions)
        quotes = self._last_quotes = self._quotes()
        t, mid_now, volume = self._guard_inputs()
        guard_cap = self.guard.size_cap(t, mid_now, volume, active)
        edges = self.guard.band_edges(mid_now) if self._has_book else _NO_EDGES
        final = self.k >= self.n_steps - 1
        d = StepDecision(idx, requested, style_idx, forced, forced_table, edges, quotes, active,
                         final, guard_cap, limit, cut)
        c = self._arrays
        bad = _decide_kernel(c, d)
        if bad >= 0:
            self.action_set.to_fraction(actions)  # raises, naming the bad action
            raise ValueError(
                f"action {int(idx[bad])} is outside action set {self.action_set.name!r}"
            )
        # every outgoing child order through the guard's check, whoever built it; the verdict
        # (``last_guard``): the check's, or, where the check passed an order the kernels had
        # already cut to the guard's limits (the policy's request, a forced order, the
        # horizon's sweep), the control that bound: the size cap's, what the parent has left,
        # or the band; the refusals counted per episode
        self.guard.check(self._orders, t, mid_now, volume, active, final)
        _verdict_kernel(c, d, self.guard.arrays)

        mid_before = self.market.mid.copy()
        expected_move = None
        if getattr(self.reward, "needs_expected_move", False):
            expected_move = self.market.expected_mid_change(shares, self._orders)
        fill = self.market.execute(self._orders, active, record_events=record)
        self.last_fills = fill
        self.guard.record(self._orders, fill, t, volume, active)

        s = self.stats
        arrival = self.market.arrival_mid
        step_is = np.empty(n)
        done_now = np.empty(n, dtype=bool)
        avg_fill = np.empty(n)
        reward = np.empty(n, dtype=np.float32)
        booked = FillArrays(
            np.ascontiguousarray(fill.qty, dtype=np.int64),
            np.ascontiguousarray(fill.avg_px, dtype=np.float64),
            np.ascontiguousarray(fill.n_fills, dtype=np.int32),
            np.ascontiguousarray(fill.working_qty, dtype=np.int64),
            np.ascontiguousarray(fill.cancelled_qty, dtype=np.int64),
            np.ascontiguousarray(fill.reject, dtype=np.int8),
        )
        prices = BookPrices(
            np.ascontiguousarray(arrival, dtype=np.float64),
            np.ascontiguousarray(self.market.mid, dtype=np.float64),
            np.ascontiguousarray(self.market.arrival_vwap, dtype=np.float64),
        )
        n_done = _book_kernel(c, d, booked, prices, StepResult(step_is, done_now, avg_fill, reward),
                              self._is_bps_reward)
        if not self._is_bps_reward:
            outcome = StepOutcome(
                shares=fill.qty,
                exec_px=fill.avg_px,
                mid_before=mid_before,
                mid_after=self.market.mid,
                expected_mid_move=expected_move,
                remaining_after=self.remaining,
                is_bps=step_is,
                cut=cut,
                done=done_now,
                episode_is_bps=s.is_bps,
                episode_is_vs_arrival_vwap_bps=s.is_vs_arrival_vwap_bps,
                elapsed_after=self.k / self.n_steps,
                fill_events=fill.events if self._reward_needs_events else None,
            )
            ctx = RewardContext(self.qty, self.side, arrival, self._risk_var)
            reward64 = np.where(active, self.reward(ctx, outcome), 0.0)
            s.episode_return += reward64
            reward = reward64.astype(np.float32)
        return self._end_step(fill, n_done, done_now, avg_fill, reward)

    def _end_step(
        self, fill: FillBatch, n_done: int, done_now: NDArray[np.bool_],
        avg_fill: NDArray[np.float64], reward: NDArray[np.float32],
    ) -> tuple[NDArray, NDArray, NDArray, NDArray, dict[str, Any]]:
        """The step's end, whichever path booked it: the finished episodes' IS against the
        interval VWAP, the observation, ``info``, and the autoreset.

        Compiled: one pass books the finished episodes (``_finish_kernel``), one gathers their
        records and last observations into blocks made for this step (``info`` hands them
        out: a caller may keep them) and resets their order rows (``_records_kernel``). The
        step observes every env once, before the autoreset, and then only the restarted
        ones; an ``observe`` of a subclass (``NormalisedExecution``'s folds what it sees)
        observes every env again after the autoreset, as it always did."""
        n = self.n_envs
        info: dict[str, Any] = {}
        if fill.reject.any():  # per env: why the market refused its child order (0: it did not)
            info["reject"] = fill.reject.copy()
        truncated = np.zeros(n, dtype=bool)
        if not n_done:
            return self.observe(), reward, done_now, truncated, info
        ids = np.empty(n_done, dtype=np.intp)
        c = self._arrays
        self._finish_call((c,), (c, _as_row(done_now, _BOOL, n), _as_row(avg_fill, _F64, n),
                                 _as_row(self.market.interval_vwap, _F64, n), ids))
        obs = self.observe()
        info["done_ids"] = ids
        if not self.autoreset:
            return obs, reward, done_now, truncated, info
        every = n_done == n
        final = _NO_OBS if every else np.empty((n_done, obs.shape[1]), dtype=np.float32)
        floats, counts = _new_records(n_done)
        # the market and the guard first (a market out of episode keys raises before any
        # order row changed), then the records, the last observations and the order rows
        self._reset_envs(None if every else ids, order_rows=False)
        rec = EpisodeRecords(ids, obs, final, floats, counts)
        self._records_call((c,) if _usual(obs, _F32, 2) else None, (c, rec, True))
        info["final_obs"] = obs if every else final
        info["episode"] = _records_dict(floats, counts)
        if every or not self._observe_once:
            obs = self.observe()
        else:
            self._observe_rows(obs, ids)
        return obs, reward, done_now, truncated, info

    def _fused_step(
        self, actions: NDArray
    ) -> tuple[NDArray, NDArray, NDArray, NDArray, dict[str, Any]]:
        """``step`` in one compiled call where the market is the Almgren–Chriss one, the
        reward is_bps and no risk control keeps windows; nothing forced, no fill events:
        ``_fused_ac_one_loop_kernel`` where the guard only refuses (``RiskGuard.stops_only``),
        else ``_fused_ac_step_kernel``. Both run the general step's per-env functions, so
        the same results to the bit."""
        n = self.n_envs
        idx, requested, style_idx = self._requests(actions)
        g = self.guard
        m: ACMarket = self.market  # type: ignore[assignment]
        t, volume, step_is, avg_fill, cap, limit, active, final, cut = self._scratch_rows
        new_state = np.empty_like(m._state)
        fill_qty = np.empty(n, dtype=np.int64)
        fill_px = np.empty(n)
        reject = np.empty(n, dtype=np.int8)
        n_fills = np.empty(n, dtype=np.int32)
        reward = np.empty(n, dtype=np.float32)
        done_now = np.empty(n, dtype=bool)
        z_int, z_float = m._nothing_rests
        # the per-step structures: the state block this step reads (``m._state``, replaced by
        # every step) and the arrays made for this step; the kernel fills the scratch rows
        x = GuardInputs(t, m._state[_AC_MID], volume if g.needs_volume else _NO_EDGES, active,
                        final, g.killed())
        d = StepDecision(idx, requested, style_idx, _NO_FORCED, self._first_style, _NO_EDGES,
                         _NO_QUOTES, active, final, cap, limit, cut)
        args = (self._arrays, d, g.arrays, x, m._arrays, ACStates(m._state, new_state),
                FillArrays(fill_qty, fill_px, n_fills, z_int, z_int, reject),
                StepResult(step_is, done_now, avg_fill, reward))
        # the argument types are those of the last dispatched call when the persistent
        # structures are the same objects and the step's own arrays the usual ones (a caller's
        # read-only actions or another state block go through numba's dispatch)
        st, killed = m._state, x.killed
        fi, fk, fs = idx.flags, killed.flags, st.flags  # (each ``.flags`` makes an object)
        usual = (idx.dtype == _I64 and fi.writeable and fi.c_contiguous
                 and killed.dtype == _BOOL and fk.writeable and fk.c_contiguous
                 and st.dtype == _F64 and st.ndim == 2 and fs.writeable and fs.c_contiguous)
        call = self._one_loop_call if g.stops_only else self._fused_call
        bad, n_done = call((g.arrays, m._arrays) if usual else None, args)
        if bad >= 0:
            self.action_set.to_fraction(actions)  # raises, naming the bad action
            raise ValueError(
                f"action {int(idx[bad])} is outside action set {self.action_set.name!r}"
            )
        m._state = new_state
        fill = FillBatch(qty=fill_qty, avg_px=fill_px, passive_qty=z_int, fees=z_float,
                         n_fills=n_fills, working_qty=z_int, cancelled_qty=z_int, reject=reject)
        self.last_fills = fill
        self._last_quotes = _NO_QUOTES
        return self._end_step(fill, n_done, done_now, avg_fill, reward)

    @property
    def cash(self) -> NDArray[np.float64]:
        """Per env: the currency the fills of the episode so far came to (shares × price)."""
        return self._cash

    @property
    def last_orders(self) -> ChildOrderBatch:
        """The child orders of the last step as they went to the market (after the limits)."""
        return self._orders

    def _forced_style_row(self, style: OrderStyle) -> NDArray[np.int64]:
        """The style table (one row) of a forced order's style (cached per style)."""
        row = self._forced_tables.get(style)
        if row is None:
            if style.rests and not self._has_book:
                raise ConfigError(f"forced order style {style.label!r} needs a market with a book")
            row = self._forced_tables[style] = _style_table((style,), self.n_steps)
        return row

    def last_order_kinds(self) -> NDArray[np.int8]:
        """What each env's child order of the last step was: 0 none, 1 passive (a limit order
        priced short of the far touch), 2 aggressive (it crossed the spread: a market or IOC
        order, or a limit at or through the far touch). Seed 000 §5's correlation report."""
        o = self._orders
        kinds = np.where(o.qty > 0, 2, 0).astype(np.int8)
        quotes = self._last_quotes
        if quotes.shape[1] == 0:
            return kinds
        rests = (o.order_type == _LIMIT_CODE) | (o.order_type == _MARKETABLE_CODE)
        with np.errstate(invalid="ignore"):
            short = self.side * (o.limit_px - quotes[1]) < 0
        kinds[(o.qty > 0) & rests & short] = 1
        return kinds

    def episode_records(self, ids: NDArray[np.intp]) -> dict[str, NDArray]:
        """Per-episode results of envs ``ids`` (of finished episodes: ``residual_shares`` is 0
        while one runs), in arrays of their own."""
        rows = np.ascontiguousarray(self._rows[np.asarray(ids)].reshape(-1), dtype=np.intp)
        return self._episode_records(rows)

    def _episode_records(self, ids: NDArray[np.intp]) -> dict[str, NDArray]:
        """``episode_records`` of the valid env positions ``ids``: one compiled gather into
        two blocks made for the call (the arrays are their rows)."""
        floats, counts = _new_records(ids.shape[0])
        _records_kernel(self._arrays, EpisodeRecords(ids, _NO_OBS, _NO_OBS, floats, counts),
                        False)
        return _records_dict(floats, counts)

    def observe(self) -> NDArray[np.float32]:
        """A new (n_envs, n_features) float32 array: each feature computed in float64, then
        rounded once to float32."""
        obs = np.empty((self.n_envs, len(self.observations)), dtype=np.float32)
        self._observe_rows(obs, None)
        return obs

    def _observe_rows(self, obs: NDArray[np.float32], rows: NDArray[np.intp] | None) -> None:
        """Write the observation of envs ``rows`` (None: all) into their rows of ``obs`` (the
        market's features are whole-batch arrays: each is scaled for every env, the kernel
        reads the rows' values)."""
        values = self._obs_values  # market features, row-wise (scratch)
        step_volume = None
        for j, (kind, source, scale, per_volume) in enumerate(self._obs_plan):
            if kind != _OBS_MARKET:
                continue
            np.multiply(self.market.feature(source), scale, out=values[j])
            if per_volume:
                if step_volume is None:
                    step_volume = np.maximum(self.market.feature("expected_volume"), 1.0)
                values[j] /= step_volume
        _observe_kernel(
            self._obs_kinds,
            values,
            self.remaining,
            self.order_qty,
            self.k,
            self.n_steps,
            self.stats.order_ints,
            rows,
            obs,
        )


# -- compiled kernels ---------------------------------------------------------------------------
# Why numba: measured with n_envs = 4096 on one core (bench/bench_env.py and a per-function
# timer, best of repeated runs), the numpy version of this loop spent 0.4-0.7 ms per step
# outside the market in ~60 small array operations (the action masks were recomputed inside
# every step to find violations, fractions turned into shares twice, chains of np.where), and
# ``action_masks`` alone took 0.23-0.31 ms; the kernels below take ~0.06-0.1 ms and ~0.05 ms.
# Each evaluates every expression with the operands, types and order of the numpy code it
# replaced (no fastmath), so results are bit-for-bit the same. Loops are short and touch few
# arrays: the compiler vectorises those, not one long loop over twenty arrays that might overlap.

_NO_ACTIONS = np.zeros(0, dtype=np.int64)
_NO_FRACTIONS = np.zeros(0, dtype=np.float64)
_NO_FORCED = np.zeros(0, dtype=np.int64)
_NO_EDGES = np.zeros(0, dtype=np.float64)
_OBS_REMAINING, _OBS_ELAPSED, _OBS_MARKET, _OBS_TWAP_DEV, _OBS_WORKING = range(5)
_ORDER_OBS = {
    "remaining_ratio": _OBS_REMAINING,
    "elapsed_ratio": _OBS_ELAPSED,
    "twap_deviation": _OBS_TWAP_DEV,
    "working_ratio": _OBS_WORKING,
}
# columns of EpisodeStats.order_ints
_WORKING, _CHILD_SEQ, _FILLS, _CANCELS, _REJECTS = range(5)
_N_ORDER_INTS = 5
# rows of EpisodeStats.floats and EpisodeStats.counts
_F_IS, _F_IS_ARRIVAL_VWAP, _F_IS_INTERVAL_VWAP, _F_RESIDUAL_IS, _F_RETURN = range(5)
_N_F = 5
_C_FILLED, _C_CHILD_ORDERS, _C_BREACHES, _C_CUTS, _C_GUARD_REJECTS = range(5)
_N_C = 5


# -- the episode end ------------------------------------------------------------------------------
class EpisodeRecords(NamedTuple):
    """Finished episodes' records (``episode_records``) and last observations, gathered by
    ``_records_kernel`` into blocks made for them."""

    ids: NDArray[np.intp]  # the envs, one column of the blocks each
    obs: NDArray[np.float32]  # the observation the last rows come from ((0, 0): none)
    final_obs: NDArray[np.float32]  # out: obs's rows ids ((0, 0): not gathered)
    floats: NDArray[np.float64]  # out: (_N_RF, len(ids)), rows _RF_*
    counts: NDArray[np.int64]  # out: (_N_RC, len(ids)), rows _RC_*


# rows of EpisodeRecords.floats and .counts
_RF_IS, _RF_IS_ARRIVAL_VWAP, _RF_IS_INTERVAL_VWAP, _RF_FILL_RATE, _RF_RESIDUAL_IS, _RF_RETURN = (
    range(6))
_N_RF = 6
(_RC_RESIDUAL, _RC_CHILD_ORDERS, _RC_BREACHES, _RC_CUTS, _RC_FILLS, _RC_CANCELS, _RC_REJECTS,
 _RC_GUARD_REJECTS, _RC_STEPS) = range(9)
_N_RC = 9
#: ``episode_records``' keys, in order, and where each is: (key, float block?, row)
_RECORD_FIELDS = (
    ("is_bps", True, _RF_IS),
    ("is_vs_arrival_vwap_bps", True, _RF_IS_ARRIVAL_VWAP),
    ("is_vs_interval_vwap_bps", True, _RF_IS_INTERVAL_VWAP),
    ("fill_rate", True, _RF_FILL_RATE),
    ("residual_shares", False, _RC_RESIDUAL),
    ("residual_is_bps", True, _RF_RESIDUAL_IS),
    ("child_orders", False, _RC_CHILD_ORDERS),
    ("breaches", False, _RC_BREACHES),
    ("cuts", False, _RC_CUTS),
    ("fills", False, _RC_FILLS),
    ("cancels", False, _RC_CANCELS),
    ("rejects", False, _RC_REJECTS),
    ("guard_rejects", False, _RC_GUARD_REJECTS),
    ("return", True, _RF_RETURN),
    ("steps", False, _RC_STEPS),
)
_NO_OBS = np.zeros((0, 0), dtype=np.float32)
_F32 = np.dtype(np.float32)


def _new_records(m: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The two record blocks of ``m`` episodes, made for one ``info`` (never reused)."""
    return np.empty((_N_RF, m)), np.empty((_N_RC, m), dtype=np.int64)


def _no_records() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    return np.zeros((_N_RF, 0)), np.zeros((_N_RC, 0), dtype=np.int64)


def _records_dict(floats: NDArray[np.float64], counts: NDArray[np.int64]) -> dict[str, NDArray]:
    return {key: (floats if is_float else counts)[row] for key, is_float, row in _RECORD_FIELDS}


def _usual(a: Any, dtype: np.dtype, ndim: int) -> bool:
    """Whether ``a`` has the array type the episode end's kernels were first called with
    (``_TypedCall``: the machine code is called without numba's type checks)."""
    return (isinstance(a, np.ndarray) and a.dtype == dtype and a.ndim == ndim
            and a.flags.c_contiguous and a.flags.writeable)


def _as_row(a: Any, dtype: np.dtype, n: int) -> NDArray:
    """``a`` as a writable contiguous (n,) array of ``dtype`` (``a`` itself when it is one)."""
    if _usual(a, dtype, 1) and a.shape[0] == n:
        return a
    return np.array(np.broadcast_to(np.asarray(a, dtype=dtype), (n,)))


#: ``implementation_shortfall_bps`` of one order: the same formula compiled (the same bits)
_is_bps_one = njit(cache=True, inline="always")(shortfall_bps)


@njit(cache=True, error_model="numpy", _nrt=False)
def _finish_kernel(
    c: CoreArrays, done_now: NDArray[np.bool_], avg_fill: NDArray[np.float64],
    interval_vwap: NDArray[np.float64], ids: NDArray[np.intp],
) -> None:
    """The episodes that ended this step (``done_now``): their IS against the interval VWAP,
    done; ``ids`` (as many as ended): their envs, ascending."""
    side = float(c.side)
    r = 0
    for i in range(done_now.shape[0]):
        if done_now[i]:
            c.floats[_F_IS_INTERVAL_VWAP, i] = _is_bps_one(avg_fill[i], interval_vwap[i], side)
            c.done[i] = True
            ids[r] = i
            r += 1


@njit(cache=True, inline="always")
def _reset_order_row(c: CoreArrays, i: int) -> None:
    """A fresh episode's order state in env ``i``."""
    c.remaining[i] = c.order_qty[i]
    c.k[i] = 0
    c.done[i] = False
    c.cash[i] = 0.0
    for j in range(c.floats.shape[0]):
        c.floats[j, i] = 0.0
    for j in range(c.counts.shape[0]):
        c.counts[j, i] = 0
    for j in range(c.schedule.shape[1]):
        c.schedule[i, j] = 0
    for j in range(c.order_ints.shape[1]):
        c.order_ints[i, j] = 0


@njit(cache=True, error_model="numpy", _nrt=False)
def _records_kernel(c: CoreArrays, e: EpisodeRecords, reset: bool) -> None:
    """Per env of ``e.ids``: its episode's record into column r of the blocks (where they
    have the columns), its row of ``e.obs`` into ``e.final_obs`` (where it has the rows), and,
    with ``reset``, then a fresh episode's order state."""
    records = e.floats.shape[1] > 0
    last = e.final_obs.shape[0] > 0
    rf, rc, floats, counts, order_ints = e.floats, e.counts, c.floats, c.counts, c.order_ints
    for r in range(e.ids.shape[0]):
        i = e.ids[r]
        if records:
            rf[_RF_IS, r] = floats[_F_IS, i]
            rf[_RF_IS_ARRIVAL_VWAP, r] = floats[_F_IS_ARRIVAL_VWAP, i]
            rf[_RF_IS_INTERVAL_VWAP, r] = floats[_F_IS_INTERVAL_VWAP, i]
            rf[_RF_FILL_RATE, r] = counts[_C_FILLED, i] / c.order_qty[i]
            rf[_RF_RESIDUAL_IS, r] = floats[_F_RESIDUAL_IS, i]
            rf[_RF_RETURN, r] = floats[_F_RETURN, i]
            rc[_RC_RESIDUAL, r] = c.remaining[i] if c.done[i] else 0
            rc[_RC_CHILD_ORDERS, r] = counts[_C_CHILD_ORDERS, i]
            rc[_RC_BREACHES, r] = counts[_C_BREACHES, i]
            rc[_RC_CUTS, r] = counts[_C_CUTS, i]
            rc[_RC_FILLS, r] = order_ints[i, _FILLS]
            rc[_RC_CANCELS, r] = order_ints[i, _CANCELS]
            rc[_RC_REJECTS, r] = order_ints[i, _REJECTS]
            rc[_RC_GUARD_REJECTS, r] = counts[_C_GUARD_REJECTS, i]
            rc[_RC_STEPS, r] = c.k[i]
        if last:
            for j in range(e.obs.shape[1]):
                e.final_obs[r, j] = e.obs[i, j]
        if reset:
            _reset_order_row(c, i)


# The observation's order features, one env each (``_observe_kernel``'s loops call them).
@njit(cache=True, inline="always")
def _remaining_ratio(remaining: NDArray[np.int64], qty: NDArray[np.int64], i: int) -> float:
    return remaining[i] / qty[i]


@njit(cache=True, inline="always")
def _elapsed_ratio(k: NDArray[np.int64], n_steps: int, i: int) -> float:
    return k[i] / n_steps


@njit(cache=True, inline="always")
def _twap_deviation(remaining: NDArray[np.int64], qty: NDArray[np.int64], k: NDArray[np.int64],
                    n_steps: int, i: int) -> float:
    """What remains (a fraction of the order) above the TWAP schedule's remainder."""
    return remaining[i] / qty[i] - (1.0 - min(k[i], n_steps) / n_steps)


@njit(cache=True, inline="always")
def _working_ratio(order_ints: NDArray[np.int64], qty: NDArray[np.int64], i: int) -> float:
    return order_ints[i, _WORKING] / qty[i]


@njit(cache=True, inline="always")
def _finite(x: float) -> float:
    """A market value, 0 where it is not finite (an empty side, no trade yet, no working
    order)."""
    return x if np.isfinite(x) else 0.0


@njit(cache=True)
def _observe_kernel(
    kinds: NDArray[np.int64],
    values: NDArray[np.float64],
    remaining: NDArray[np.int64],
    qty: NDArray[np.int64],
    k: NDArray[np.int64],
    n_steps: int,
    order_ints: NDArray[np.int64],
    rows: NDArray[np.intp] | None,
    obs: NDArray[np.float32],
) -> None:
    """obs[i, j] = the order's state (remaining/qty, k/n_steps, remaining/qty - the TWAP
    schedule's, working/qty) or the (scaled) market value ``values[j, i]`` (0 where not
    finite), rounded to float32; for every env (``rows`` None: column by column, through
    ``values``' rows) or for the envs ``rows``."""
    n, m = obs.shape
    flat = obs.reshape(-1)
    for j in range(m):
        row = values[j]
        kind = kinds[j]
        if rows is None:
            if kind == _OBS_REMAINING:
                for i in range(n):
                    row[i] = _remaining_ratio(remaining, qty, i)
            elif kind == _OBS_ELAPSED:
                for i in range(n):
                    row[i] = _elapsed_ratio(k, n_steps, i)
            elif kind == _OBS_TWAP_DEV:
                for i in range(n):
                    row[i] = _twap_deviation(remaining, qty, k, n_steps, i)
            elif kind == _OBS_WORKING:
                for i in range(n):
                    row[i] = _working_ratio(order_ints, qty, i)
            else:
                for i in range(n):
                    row[i] = _finite(row[i])
            for i in range(n):
                flat[i * m + j] = row[i]
        else:
            if kind == _OBS_REMAINING:
                for i in rows:
                    flat[i * m + j] = _remaining_ratio(remaining, qty, i)
            elif kind == _OBS_ELAPSED:
                for i in rows:
                    flat[i * m + j] = _elapsed_ratio(k, n_steps, i)
            elif kind == _OBS_TWAP_DEV:
                for i in rows:
                    flat[i * m + j] = _twap_deviation(remaining, qty, k, n_steps, i)
            elif kind == _OBS_WORKING:
                for i in rows:
                    flat[i * m + j] = _working_ratio(order_ints, qty, i)
            else:
                for i in rows:
                    flat[i * m + j] = _finite(row[i])


@njit(cache=True, inline="always")
def fraction_to_shares_one(fraction: float, remaining: int) -> int:
    """``spaces.fraction_to_shares`` for one environment, with the same operations (so the
    same shares) for a fraction in [0, 1]. Kept in this file: numba's cache does not notice
    edits to functions a cached kernel calls from another module."""
    shares = np.int64(np.rint(fraction * remaining))
    if shares == 0 and fraction > 0:
        shares = 1
    return min(shares, remaining)


@njit(cache=True)
def _fraction_requests(
    fraction: NDArray[np.floating], remaining: NDArray[np.int64], requested: NDArray[np.int64]
) -> int:
    """Continuous actions to shares: ``ActionSet.to_fraction`` (clipped to [0, 1]) and
    ``fraction_to_shares``, with the same operations, in one pass; the position of the first
    action that is not a finite number (nothing written then), or -1."""
    n = remaining.shape[0]
    for i in range(n):
        if not np.isfinite(fraction[i]):
            return i
    for i in range(n):
        f = min(max(np.float64(fraction[i]), 0.0), 1.0)
        requested[i] = fraction_to_shares_one(f, remaining[i])
    return -1


@njit(cache=True, inline="always")
def _child_cap(remaining: int, cap: NDArray[np.int64], i: int) -> int:
    """Largest child order env ``i`` may send now: the risk guard's cap, and what remains."""
    return min(remaining, cap[i])


# columns of the order-style table (``_style_table``)
_S_TYPE, _S_ANCHOR, _S_TICKS, _S_TTL, _S_CANCEL = range(5)
_MARKET_CODE = ORDER_TYPE_CODES[OrderType.MARKET]
_IOC_CODE = ORDER_TYPE_CODES[OrderType.IOC]
_LIMIT_CODE = ORDER_TYPE_CODES[OrderType.LIMIT]
_MARKETABLE_CODE = ORDER_TYPE_CODES[OrderType.MARKETABLE_LIMIT]
_NO_QUOTES = np.zeros((3, 0))


def _style_table(styles: tuple[OrderStyle, ...], n_steps: int) -> NDArray[np.int64]:
    """(n_styles, 5) int64: order type code, anchor (0 near, 1 far), ticks, resting steps
    (the horizon for "until cancelled", 0 for what never rests) and cancel-first."""
    table = np.zeros((len(styles), 5), dtype=np.int64)
    for j, st in enumerate(styles):
        table[j, _S_TYPE] = ORDER_TYPE_CODES[st.order_type]
        table[j, _S_ANCHOR] = 0 if st.anchor == "near" else 1
        table[j, _S_TICKS] = st.ticks
        table[j, _S_TTL] = (st.ttl_steps or n_steps) if st.rests else 0
        table[j, _S_CANCEL] = 1 if st.cancel else 0
    return table


@njit(cache=True, inline="always")
def _wanted_shares(fraction: float, r: int, steps_left: int, twap_base: bool) -> int:
    """Shares of a discrete action: ``fraction`` of what remains, or of the TWAP slice (what
    remains over the steps left), at least one share for a positive fraction, at most what
    remains."""
    if not twap_base:
        return fraction_to_shares_one(fraction, r)
    shares = np.int64(np.rint(fraction * r / max(steps_left, 1)))
    if shares == 0 and fraction > 0:
        shares = 1
    return min(shares, r)


@njit(cache=True, inline="always")
def _style_price(
    styles: NDArray[np.int64], j: int, side: int, tick: float, quotes: NDArray[np.float64],
    i: int,
) -> float:
    """Limit price of style ``j`` (a row of the style table) for env ``i``: ``ticks`` from the
    near or far touch in the aggressive direction, on the tick grid; NaN for a market order or
    without a book. Reads the table's scalars (a row view would cost a reference count per
    env)."""
    if styles[j, _S_TYPE] == _MARKET_CODE or quotes.shape[1] == 0:
        return np.nan
    anchor = quotes[styles[j, _S_ANCHOR], i]
    return np.rint((anchor + side * styles[j, _S_TICKS] * tick) / tick) * tick


@njit(cache=True, inline="always")
def _band_edge(edges: NDArray[np.float64], i: int) -> float:
    """The most aggressive limit price the guard's price band allows env ``i`` now (a buy's
    ceiling, a sell's floor, ``RiskGuard.band_edges``); NaN without a band."""
    if edges.shape[0] == 0:
        return np.nan
    return edges[i]


@njit(cache=True, inline="always")
def _beyond_band(px: float, edge: float, side: int) -> bool:
    return (not np.isnan(edge)) and (not np.isnan(px)) and side * (px - edge) > 1e-12


@njit(cache=True)
def _masks_kernel(
    fractions: NDArray[np.float64],
    smallest: int,
    remaining: NDArray[np.int64],
    k: NDArray[np.int64],
    done: NDArray[np.bool_],
    n_steps: int,
    cap: NDArray[np.int64],
    order_ints: NDArray[np.int64],
    twap_base: bool,
    styles: NDArray[np.int64],
    side: int,
    tick: float,
    edges: NDArray[np.float64],
    quotes: NDArray[np.float64],
    mask: NDArray[np.bool_],
) -> None:
    n_actions = fractions.shape[0]
    for i in range(remaining.shape[0]):
        if k[i] >= n_steps - 1 or done[i]:
            mask[i, :] = True
            continue
        r = remaining[i]
        working = order_ints[i, _WORKING]
        edge = _band_edge(edges, i)
        allowed = False
        for a in range(n_actions):
            f = fractions[a]
            # as in _decide_kernel: a new order stays within what is left less what still
            # works, unless it cancels or replaces the working order
            replaces = styles[a, _S_CANCEL] == 1 or styles[a, _S_TTL] > 0
            cap_a = _child_cap(r if replaces else r - working, cap, i)
            ok = _wanted_shares(f, r, n_steps - k[i], twap_base) <= cap_a or f == 0.0
            ok = ok and not (f > 0.0 and _beyond_band(
                _style_price(styles, a, side, tick, quotes, i), edge, side))
            mask[i, a] = ok
            allowed = allowed or ok
        if not allowed:
            mask[i, smallest] = True


@njit(cache=True, inline="always")
def _bad_action(c: CoreArrays, d: StepDecision) -> int:
    """The position of the first discrete action outside the set, or -1."""
    if c.fractions.shape[0] > 0:
        for i in range(d.actions.shape[0]):
            if d.actions[i] < 0 or d.actions[i] >= c.fractions.shape[0]:
                return i
    return -1


@njit(cache=True, inline="always")
def _decide_one(c: CoreArrays, d: StepDecision, i: int) -> None:
    """Env ``i``'s child order (``_decide_kernel``), its actions checked (``_bad_action``)."""
    lim = d.guard_cap[i]
    qty, cancel, child_id, code, px, ttl, cut = _decision(c, d, lim, i)
    _put_order(c.orders, i, qty, cancel, child_id, code, px, ttl)
    d.limit[i] = lim
    d.cut[i] = cut


@njit(cache=True, inline="always")
def _put_order(o: OrderArrays, i: int, qty: int, cancel: bool, child_id: int, code: int,
               px: float, ttl: int) -> None:
    """Env ``i``'s child order into the batch the market reads (``last_orders``)."""
    o.qty[i] = qty
    o.cancel[i] = cancel
    o.child_id[i] = child_id
    o.order_type[i] = code
    o.limit_px[i] = px
    o.ttl_steps[i] = ttl


@njit(cache=True, inline="always")
def _decision(c: CoreArrays, d: StepDecision, lim: int, i: int
              ) -> tuple[int, bool, int, int, float, int, bool]:
    """Env ``i``'s child order under the guard's size cap ``lim``, as values: (shares,
    cancel, child id, order type code, limit price, resting steps, cut). Writes only
    ``d.requested[i]`` (for discrete actions: the output buffer)."""
    fractions, can_cut, remaining, k, done = c.fractions, c.can_cut, c.remaining, c.k, c.done
    n_steps, order_ints, styles, side = c.n_steps, c.order_ints, c.styles, c.side
    actions, requested, forced = d.actions, d.requested, d.forced
    discrete = fractions.shape[0] > 0
    if discrete:  # requested is the output buffer, filled here
        requested[i] = _wanted_shares(
            fractions[actions[i]], remaining[i], n_steps - k[i], c.twap_base
        )
    r = remaining[i]
    working = order_ints[i, _WORKING]
    req = requested[i]
    may_cut = can_cut[actions[i]] if discrete else True
    on = not done[i]
    last = k[i] >= n_steps - 1
    table, j = styles, d.style_idx[i]  # the style's row (scalars read: no row views)
    chosen = True  # the policy's request (not a forced one)
    if forced.shape[0] > 0 and forced[i] >= 0:
        req = forced[i]
        table, j = d.forced_style, 0
        may_cut = False
        chosen = False
    code = table[j, _S_TYPE]
    ttl = table[j, _S_TTL]
    replaces = table[j, _S_CANCEL] == 1 or (ttl > 0 and req > 0)
    if last:  # the horizon: cancel what works, send the rest as a marketable order
        code = _MARKET_CODE
        ttl = 0
        replaces = True
    free = r if replaces else r - working
    cap = min(free, lim)
    qty = min(r if last else req, cap)  # at the horizon: what is left, within the limits
    if not on:
        qty = 0
    px = _style_price(table, j, side, c.tick, d.quotes, i) if code != _MARKET_CODE else np.nan
    edge = _band_edge(d.edges, i)
    priced_out = _beyond_band(px, edge, side)
    if priced_out:
        px = edge
    if code == _MARKET_CODE and not np.isnan(edge):
        code = _IOC_CODE  # a market order may not walk beyond the band
        px = edge
    cut = on and not last and (
        (may_cut and req > cap) or (chosen and priced_out and qty > 0)
    )
    child_id = order_ints[i, _CHILD_SEQ] + 1 if qty > 0 else 0
    return qty, on and replaces and working > 0, child_id, code, px, ttl, cut


# The per-env bodies are inline functions of (structures, env), and the batch kernels loop
# over them, compiled without numba's reference counting (``_nrt=False``): they allocate
# nothing, and each array a body takes from a structure would otherwise cost an atomic
# increment and decrement per env (measured: 100-370 ns per env and kernel, against 3-12).
@njit(cache=True, _nrt=False)
def _decide_kernel(c: CoreArrays, d: StepDecision) -> int:
    """Child order per env: the requested shares (from a discrete action, or given) cut to the
    hard limits, in the action's order style; at the last step everything left, cut to the
    same limits (the rest stays unfilled), as a marketable order; nothing after the episode.
    ``limit``: the largest child the limits allow now. ``cut``: the policy asked for more than
    they allow (a discrete action the mask forbids, a continuous request above the cap, a
    limit price beyond the band; not the last step, whose order the policy does not choose).
    New orders stay within what is left less what still works; an order that cancels first,
    or that would rest (cancel / replace), frees the working order's shares; at the horizon
    the working order is cancelled. Prices beyond the band are cut to its edge, and a market
    order on a book with a band becomes an IOC at the edge. ``forced`` (empty: none): rows
    with ``forced[i] >= 0`` ask for exactly that many shares in ``forced_style`` whatever the
    action (the executor's fallback; never a cut). Returns -1, or the position of the first
    discrete action outside the set (then nothing is written). Writes ``c.orders``,
    ``d.limit``, ``d.cut`` (and ``d.requested`` for discrete actions)."""
    bad = _bad_action(c, d)
    if bad >= 0:
        return bad
    for i in range(c.remaining.shape[0]):
        _decide_one(c, d, i)
    return -1


@njit(cache=True, inline="always")
def _verdict_one(c: CoreArrays, d: StepDecision, g: GuardArrays, i: int) -> None:
    """Env ``i``'s ``_verdict_kernel``."""
    d.cut[i] = _verdict(c, d, i, g.last_code[i], d.guard_cap[i], g.cap_reason[i],
                        c.orders.qty[i], d.active[i], d.final[i], d.cut[i])


@njit(cache=True, inline="always")
def _verdict(c: CoreArrays, d: StepDecision, i: int, v: int, guard_cap: int, cap_reason: int,
             shares: int, active: bool, final: bool, cut: bool) -> bool:
    """Env ``i``'s verdict from the check's code ``v`` on its child of ``shares`` (the size
    cap ``guard_cap`` and its binding control ``cap_reason``) into ``c.last_guard``, its
    refusal counted; returns the cut (the guard's cut of an order the kernels built is one)."""
    asked = d.requested[i]
    if d.forced.shape[0] > 0 and d.forced[i] >= 0:
        asked = d.forced[i]
    if final:
        asked = c.remaining[i]
    if active and v == 0 and (cut or asked > shares):
        if asked > guard_cap:
            v = cap_reason
        elif asked > shares:
            v = GUARD_PARENT_TOTAL
        else:
            v = GUARD_PRICE_BAND
    elif active and 0 < v < GUARD_FIRST_REJECT and not final:
        cut = True  # the guard cut an order the kernels built: count it as a cut
    c.last_guard[i] = v
    if active and v >= GUARD_FIRST_REJECT:
        c.counts[_C_GUARD_REJECTS, i] += 1
    return cut


@njit(cache=True, _nrt=False)
def _verdict_kernel(c: CoreArrays, d: StepDecision, g: GuardArrays) -> None:
    """``c.last_guard``: the check's verdict (``g.last_code``), or, where the check passed an
    order the kernels had already cut to the guard's limits (the policy's request, a forced
    order, the horizon's sweep), the control that bound: the size cap's, what the parent has
    left, or the band; the refusals counted per episode."""
    for i in range(g.last_code.shape[0]):
        _verdict_one(c, d, g, i)


@njit(cache=True, inline="always")
def _book_one(
    c: CoreArrays, d: StepDecision, f: FillArrays, p: BookPrices, r: StepResult,
    is_bps_reward: bool, i: int,
) -> bool:
    """Env ``i``'s ``_book_kernel``; whether its episode ended. (Its callers compile with
    numpy's error model: 0/0 is NaN, as in the numpy code this replaced.)"""
    ended, step_is, avg_fill, reward = _book_env(
        c, i, d.active[i], f.qty[i], f.avg_px[i], c.orders.qty[i], f.reject[i], f.n_fills[i],
        f.cancelled_qty[i], f.working_qty[i], d.cut[i], d.limit[i], p.arrival[i], p.end_mid[i],
        p.arrival_vwap[i], is_bps_reward,
    )
    r.done_now[i] = ended
    r.step_is[i] = step_is
    r.avg_fill[i] = avg_fill
    if is_bps_reward:
        r.reward[i] = reward
    return ended


@njit(cache=True, inline="always")
def _book_env(
    c: CoreArrays, i: int, active: bool, q: int, avg_px: float, sent: int, reject: int,
    n_fills: int, cancelled: int, working_after: int, cut: bool, limit: int, arrival: float,
    end_mid: float, arrival_vwap: float, is_bps_reward: bool,
) -> tuple[bool, float, float, float]:
    """Env ``i``'s booking of its step's values into the episode blocks ``c``: (ended, the
    step's IS, the average fill, the is_bps reward: 0.0 for another reward)."""
    n_steps, counts, floats, order_ints = c.n_steps, c.counts, c.floats, c.order_ints
    remaining, k, cash = c.remaining, c.k, c.cash
    c.schedule[i, min(k[i], n_steps - 1)] += q
    counts[_C_FILLED, i] += q
    accepted = active and sent > 0 and reject == 0
    counts[_C_CHILD_ORDERS, i] += 1 if accepted else 0
    order_ints[i, _CHILD_SEQ] += 1 if accepted else 0
    order_ints[i, _FILLS] += n_fills if active else 0
    order_ints[i, _CANCELS] += 1 if active and cancelled > 0 else 0
    order_ints[i, _REJECTS] += 1 if active and reject != 0 else 0
    order_ints[i, _WORKING] = working_after if active else order_ints[i, _WORKING]
    counts[_C_CUTS, i] += 1 if cut else 0
    over = (sent > limit) | (q > limit)
    counts[_C_BREACHES, i] += 1 if active & over else 0
    remaining[i] -= q
    k[i] += 1 if active else 0
    # done: nothing left and nothing working, or the horizon (whose step cancelled what
    # worked: whatever is left is the residual)
    ended = active and ((remaining[i] == 0 and order_ints[i, _WORKING] == 0) or k[i] >= n_steps)
    side, is_scale = c.side, c.is_scale[i]
    px = avg_px if q > 0 else 0.0
    cash[i] += q * px
    x = side * q * (px - arrival) / arrival if q > 0 else 0.0
    step_is = x * is_scale
    # the residual booked as if filled at the end mid, with the step IS's operations
    res = remaining[i] if ended else 0
    charge = side * res * (end_mid - arrival) / arrival * is_scale
    floats[_F_RESIDUAL_IS, i] = charge if res > 0 else floats[_F_RESIDUAL_IS, i]
    step_is = step_is + charge if res > 0 else step_is
    floats[_F_IS, i] += step_is
    # at the end, every share of the order: the residual at the end mid (+0 otherwise)
    filled = counts[_C_FILLED, i]
    avg_fill = (cash[i] + (res * end_mid if res > 0 else 0.0)) / (filled + res)
    # implementation_shortfall_bps(avg, arrival_vwap, side); a finished episode keeps its
    # final value (its residual is no longer in avg_fill)
    vs_vwap = _is_bps_one(avg_fill, arrival_vwap, float(side))
    priced = (filled > 0) | (ended & (remaining[i] > 0))
    value = vs_vwap if priced else 0.0
    floats[_F_IS_ARRIVAL_VWAP, i] = value if active else floats[_F_IS_ARRIVAL_VWAP, i]
    rw = 0.0
    if is_bps_reward:  # IsBpsReward: minus the step's IS, 0 for finished envs
        rw = -step_is if active else 0.0
        floats[_F_RETURN, i] += rw
    return ended, step_is, avg_fill, rw


@njit(cache=True, error_model="numpy", _nrt=False)
def _book_kernel(
    c: CoreArrays, d: StepDecision, f: FillArrays, p: BookPrices, r: StepResult,
    is_bps_reward: bool,
) -> int:
    """Book the fills: cash, counters, schedule, the step's IS against the arrival mid
    (``execrl.domain.costs`` convention), the episode's IS against the arrival VWAP so far,
    and, for the is_bps reward, the reward. An episode that ends with shares unfilled is
    charged for them at the end mid, in the step's IS (so in every reward that sums it) and in
    the IS against the VWAPs (the residual priced at the end mid). Returns how many episodes
    ended."""
    n_done = 0
    for i in range(c.remaining.shape[0]):
        n_done += 1 if _book_one(c, d, f, p, r, is_bps_reward, i) else 0
    return n_done


# -- the fused step (the Almgren–Chriss market, no window controls, the is_bps reward) -------
# One compiled call does a whole step through the same kernels as ``BatchedExecution.step``:
# the guard's size cap, the decision, the guard's check and verdict, the market's exogenous
# moves and fills, the guard's booking and ours. Measured at 1,000 envs the separate calls,
# their argument lists and the Python between them took more than the kernels themselves.
# One pass over the envs calling every generic per-env body in turn (each env's arrays read
# once) measured slower than these passes (2.0-2.5 ms against 1.0-1.6 ms per step at 10,000
# envs): the passes stay where a size, band, locate or window control is on; without one,
# ``_fused_ac_one_loop_kernel`` below.
@njit(cache=True)
def _fused_ac_step_kernel(
    c: CoreArrays, d: StepDecision, g: GuardArrays, x: GuardInputs, m: ACArrays, s: ACStates,
    f: FillArrays, r: StepResult,
) -> tuple[int, int]:
    """(position of the first bad discrete action or -1, episodes ended). Fills ``x``'s clock,
    volume (when the guard reads it), live and last-decision rows (``d``'s active and final
    are the same arrays) before the kernels read them."""
    n = c.remaining.shape[0]
    t, active, final = x.t, x.active, x.final
    for i in range(n):
        active[i] = not c.done[i]
        t[i] = c.k[i] * g.step_seconds  # the guard's clock, as _guard_inputs
        final[i] = c.k[i] >= c.n_steps - 1
    if g.needs_volume:  # ACMarket.feature("expected_volume")
        volume = x.volume
        for i in range(n):
            volume[i] = m.expected_volume[min(m.k[i], c.n_steps - 1)]
    _size_cap_kernel(g, x, None, None, d.guard_cap)
    bad = _decide_kernel(c, d)
    if bad >= 0:
        return bad, 0
    _check_kernel(g, x, c.orders, None, None, None)
    _verdict_kernel(c, d, g)
    _exogenous_kernel(active, s.before, m)
    _apply_kernel(c.orders, active, s, m, m.exo, f)
    _record_shares_kernel(g, f, active)
    after = s.after
    prices = BookPrices(after[_AC_ARRIVAL], after[_AC_MID], after[_AC_ARRIVAL_VWAP])
    n_done = _book_kernel(c, d, f, prices, r, True)
    return -1, n_done


# The fused step where the guard only refuses (``RiskGuard.stops_only``: no size, band, locate
# or window control): after the draws (in passes: the Philox blocks of neighbouring envs
# overlap), one loop over the envs does the decision, the guard's refusal tests and verdict,
# the market's step, the guard's filled count and the booking through the same per-env
# functions as the passes above, each env's values kept in registers (no scratch rows).
# Measured in one process at 10,000 envs (seed 003's actions, the kernel alone, best of 40
# rounds): 73 ns an env against the passes' 84 (bench/README.md, "One loop"); of the 73,
# ~17 are the booking (its four divisions), ~25 the draws.
@njit(cache=True, error_model="numpy", _nrt=False)
def _fused_ac_one_loop_kernel(
    c: CoreArrays, d: StepDecision, g: GuardArrays, x: GuardInputs, m: ACArrays, s: ACStates,
    f: FillArrays, r: StepResult,
) -> tuple[int, int]:
    """``_fused_ac_step_kernel`` for a guard whose controls are all off but its refusals
    (kill switch, finished or horizon, restricted, latched) and what the parent has left:
    the same results to the bit. Writes the orders, fills, verdicts, the guard's codes, the
    market's exogenous moves and next state, ``r``'s done, average fill and reward; not the
    scratch rows (``x``'s, ``d``'s cap, limit, cut, ``r.step_is``)."""
    bad = _bad_action(c, d)
    if bad >= 0:
        return bad, 0
    _step_noise(m)
    n = c.remaining.shape[0]
    n_steps, k, done = c.n_steps, c.k, c.done
    o = c.orders
    killed, horizon, static, ints, latched = x.killed, g.horizon, g.static, g.ints, g.latched
    cap_reason, last_code, last_flags, step_s = g.cap_reason, g.last_code, g.last_flags, \
        g.step_seconds
    params, mk, ev, noise, exo = m.params, m.k, m.expected_volume, m.noise, m.exo
    n_ev = ev.shape[0]
    before = s.before
    n_done = 0
    for i in range(n):
        on = not done[i]
        final = k[i] >= n_steps - 1
        # the guard's size cap: no size control, so no limit unless a refusal stops the order
        stop = _stop_code(killed[i], on, k[i] * step_s, horizon[i], ints[i, _G_FILLED],
                          static[0, i], static[2, i], latched[i])
        cap_reason[i] = stop
        guard_cap = _NO_LIMIT if stop == 0 else 0
        qty, cancel, child_id, code, px, ttl, cut = _decision(c, d, guard_cap, i)
        # the guard's check: its refusals, and what the parent has left
        reject = _refusal(stop, qty)
        v, flags = 0, 0
        if reject == 0 and qty > 0:
            qty, v, flags = _parent_cut(qty, static[0, i] - ints[i, _G_FILLED],
                                        ints[i, _G_WORKING], cancel and ints[i, _G_WORKING] > 0,
                                        v, flags)
        qty, cancel, child_id, v, flags = _refused(reject, qty, cancel, child_id,
                                                   ints[i, _G_WORKING], final, v, flags)
        last_code[i] = v
        last_flags[i] = flags
        _put_order(o, i, qty, cancel, child_id, code, px, ttl)
        cut = _verdict(c, d, i, v, guard_cap, stop, qty, on, final, cut)
        # the market's step
        alpha, mid = before[_AC_ALPHA, i], before[_AC_MID, i]
        drift, shock, volume, alpha_next = _exogenous_one(
            params, alpha, noise[0, i], noise[1, i], noise[2, i], ev[min(mk[i], n_ev - 1)],
            m.has_signal)
        exo[_X_DRIFT, i], exo[_X_SHOCK, i], exo[_X_VOLUME, i], exo[_X_ALPHA_NEXT, i] = (
            drift, shock, volume, alpha_next)
        m_reject, q, n_fills, avg_px = _fill_one(params, on, qty, code, mid)
        _put_fill(f, i, m_reject, q, n_fills, avg_px)
        end_mid, arrival, arrival_vwap = _next_state(s, params, on, q, drift, shock, volume,
                                                     alpha_next, i)
        mk[i] += 1 if on else 0
        _record_shares(ints, i, on, q, f.working_qty[i])
        ended, _, avg_fill, reward = _book_env(
            c, i, on, q, avg_px, qty, m_reject, n_fills, f.cancelled_qty[i], f.working_qty[i],
            cut, guard_cap, arrival, end_mid, arrival_vwap, True)
        r.done_now[i] = ended
        r.avg_fill[i] = avg_fill
        r.reward[i] = reward
        n_done += 1 if ended else 0
    return -1, n_done


_I64, _BOOL, _F64 = np.dtype(np.int64), np.dtype(np.bool_), np.dtype(np.float64)


class _TypedCall:
    """A compiled kernel called without numba's per-call type resolution once its argument
    types are known. Numba types each argument of every call, and a named structure costs
    ~0.3 µs per array in it: ~25 µs per fused step, more than the structures' arrays as loose
    arguments did. The first call with a new ``key`` (objects whose identity fixes the
    argument types; ``None``: unknown) goes through the dispatcher, typed and checked (a
    wrong structure is a typing error there); later calls with the same key objects go to the
    machine code it chose. Without numba's ``overloads`` (a numba that changed its
    internals), every call is dispatched."""

    def __init__(self, dispatcher: Any):
        self.dispatcher = dispatcher
        self._key: tuple[Any, ...] | None = None
        self._entry: Any = None

    def __call__(self, key: tuple[Any, ...] | None, args: tuple[Any, ...]) -> Any:
        known = self._key
        if key is not None and known is not None and self._entry is not None and all(
            a is b for a, b in zip(key, known, strict=True)
        ):
            return self._entry(*args)
        out = self.dispatcher(*args)
        if key is not None:
            self._key, self._entry = key, _entry_point(self.dispatcher, args)
        return out


def _entry_point(dispatcher: Any, args: tuple[Any, ...]) -> Any:
    """The machine code the dispatcher runs for ``args`` (numba's compiled wrapper), or None."""
    try:
        from numba.core.typing.typeof import Purpose, typeof

        sig = tuple(typeof(a, Purpose.argument) for a in args)
        return dispatcher.overloads[sig].entry_point
    except (AttributeError, ImportError, KeyError, TypeError, ValueError):
        return None


def _cache_follows(dispatcher: Any, *modules: Any) -> None:
    """Make ``dispatcher``'s numba cache follow the source files of ``modules`` too: numba
    keys a cached kernel on its own file alone, so an edit to a kernel it calls from another
    module would otherwise leave the old machine code in use. Without numba's cache object
    (a numba that changed its internals), the kernel is compiled afresh in each process."""
    import os

    files = [os.path.abspath(mod.__file__) for mod in modules]
    try:
        index = dispatcher._cache._cache_file
        stamps = tuple((f, os.stat(f).st_mtime, os.stat(f).st_size) for f in files)
        index._source_stamp = (index._source_stamp, stamps)
    except (AttributeError, OSError):
        dispatcher.disable_caching()


def _follow_fused_sources() -> None:
    import execrl.domain.costs as costs_module
    import execrl.safety.guard as guard_module
    import execrl.sim.almgren_chriss as ac_module
    import execrl.sim.rng as rng_module

    for kernel in (_fused_ac_step_kernel, _fused_ac_one_loop_kernel):
        _cache_follows(kernel, guard_module, ac_module, rng_module, costs_module)
    for kernel in (_book_kernel, _finish_kernel):  # the IS formula is costs.shortfall_bps
        _cache_follows(kernel, costs_module)


_follow_fused_sources()
