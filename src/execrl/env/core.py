"""The batched execution loop: one parent order per environment, ``n_envs`` at once.

``BatchedExecution`` is the state machine every front end shares: the gymnasium
``ExecutionEnv`` (one environment), the natively batched ``ExecutionVectorEnv`` and its
Stable-Baselines3 adapter, and ``execrl evaluate``. A step turns actions into child orders
(whole shares, cut to the order's hard limits), sends them to the market, books the fills and
computes rewards and the next observation, all as numpy operations over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError, OrderConstraints, implementation_shortfall_bps
from execrl.env.rewards import Reward, RewardContext, StepOutcome
from execrl.env.spaces import ActionSet, fraction_to_shares
from execrl.sim.base import BatchedMarket, ChildOrderBatch

_ORDER_FEATURES = ("remaining_ratio", "elapsed_ratio")
# observation feature -> (market feature, divide by parent qty?, scale)
_MARKET_FEATURES: dict[str, tuple[str, bool, float]] = {
    "price_drift": ("price_drift", False, 1.0),
    "volatility": ("volatility", False, 1.0),
    "spread": ("spread_bps", False, 0.01),
    "signal": ("signal", False, 1.0),
    "last_volume_ratio": ("last_volume", True, 1.0),
    "expected_volume_ratio": ("expected_volume", True, 1.0),
}


@dataclass
class EpisodeStats:
    """Per-environment results of the episode in progress (or just finished)."""

    is_bps: NDArray[np.float64]
    is_vs_arrival_vwap_bps: NDArray[np.float64]
    is_vs_interval_vwap_bps: NDArray[np.float64]
    filled: NDArray[np.int64]
    child_orders: NDArray[np.int64]
    violations: NDArray[np.int64]
    episode_return: NDArray[np.float64]
    schedule: NDArray[np.int64]  # shares traded per step, (n_envs, n_steps)
    extra: dict[str, Any] = field(default_factory=dict)


class BatchedExecution:
    """Execute one parent order of ``qty`` shares (``side`` ±1) in each of the market's envs.

    With ``autoreset`` a finished episode restarts in the same step (training); without it a
    finished environment stays finished until ``reset`` (evaluation: one order per env).
    """

    def __init__(
        self,
        market: BatchedMarket,
        qty: int,
        side: int,
        observations: tuple[str, ...],
        action_set: ActionSet,
        reward: Reward,
        constraints: OrderConstraints | None = None,
        autoreset: bool = True,
        risk_var_per_share2: float = 0.0,
    ):
        if qty <= 0:
            raise ConfigError(f"order field 'qty' = {qty!r} must be > 0")
        for name in observations:
            if name in _ORDER_FEATURES:
                continue
            source = _MARKET_FEATURES[name][0]
            if source not in market.available_features:
                raise ConfigError(
                    f"observation feature {name!r} needs market feature {source!r}, which this "
                    f"market does not provide ({', '.join(market.available_features)})"
                )
        self.market = market
        self.n_envs = market.n_envs
        self.n_steps = market.n_steps
        self.qty = int(qty)
        self.side = int(side)
        self.observations = observations
        self.action_set = action_set
        self.reward = reward
        self.constraints = constraints or OrderConstraints()
        if self.constraints.participation is not None and (
            "expected_volume" not in market.available_features
        ):
            raise ConfigError("order constraint 'participation' needs a market with volume")
        self.autoreset = autoreset
        self._risk_var = risk_var_per_share2
        self._rng = np.random.default_rng()
        n = self.n_envs
        self._rows = np.arange(n)
        self._orders = ChildOrderBatch.market_orders(n)
        self._obs = np.zeros((n, len(observations)), dtype=np.float32)
        self.remaining = np.full(n, self.qty, dtype=np.int64)
        self.k = np.zeros(n, dtype=np.int64)
        self.done = np.zeros(n, dtype=bool)
        self._cash = np.zeros(n)
        self.stats = self._new_stats()

    def _new_stats(self) -> EpisodeStats:
        n = self.n_envs
        return EpisodeStats(
            is_bps=np.zeros(n),
            is_vs_arrival_vwap_bps=np.zeros(n),
            is_vs_interval_vwap_bps=np.zeros(n),
            filled=np.zeros(n, dtype=np.int64),
            child_orders=np.zeros(n, dtype=np.int64),
            violations=np.zeros(n, dtype=np.int64),
            episode_return=np.zeros(n),
            schedule=np.zeros((n, self.n_steps), dtype=np.int64),
        )

    # -- episodes ---------------------------------------------------------------------------
    def seed(self, seed: int | None) -> None:
        """Reseed the stream that market paths are drawn from (``None``: fresh entropy)."""
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> NDArray[np.float32]:
        """Start a new episode in every environment; with a seed, episode i's market path is
        a function of (seed, i) alone."""
        if seed is not None:
            self.seed(seed)
        self._reset_envs(self._rows)
        return self.observe()

    def _reset_envs(self, ids: NDArray[np.intp]) -> None:
        self.market.reset(self._rng, ids)
        self.remaining[ids] = self.qty
        self.k[ids] = 0
        self.done[ids] = False
        self._cash[ids] = 0.0
        s = self.stats
        for arr in (s.is_bps, s.is_vs_arrival_vwap_bps, s.is_vs_interval_vwap_bps, s.episode_return):
            arr[ids] = 0.0
        for arr in (s.filled, s.child_orders, s.violations):
            arr[ids] = 0
        s.schedule[ids] = 0

    # -- decisions --------------------------------------------------------------------------
    def _child_cap(self) -> NDArray[np.int64]:
        """Largest child order each env may send now under the order's hard limits."""
        cap = self.remaining.copy()
        c = self.constraints
        if c.child_max is not None:
            cap = np.minimum(cap, c.child_max)
        if c.participation is not None:
            volume = self.market.feature("expected_volume")
            cap = np.minimum(cap, np.floor(c.participation * volume).astype(np.int64))
        return cap

    def action_masks(self) -> NDArray[np.bool_]:
        """(n_envs, n_actions): the discrete actions the hard limits allow now. A fraction of
        0 (wait) is always allowed; when nothing else is, the smallest action is; at the last
        step (forced completion) and after the episode every action is."""
        fractions = self.action_set.fractions
        if fractions is None:
            raise ConfigError(f"action set {self.action_set.name!r} is continuous: no masks")
        frac = np.asarray(fractions)
        shares = fraction_to_shares(frac[None, :], self.remaining[:, None])
        mask = (shares <= self._child_cap()[:, None]) | (frac[None, :] == 0.0)
        smallest = int(np.argmin(frac))
        mask[~mask.any(axis=1), smallest] = True
        mask[(self.k >= self.n_steps - 1) | self.done] = True
        return mask

    def step(self, actions: NDArray) -> tuple[NDArray, NDArray, NDArray, NDArray, dict[str, Any]]:
        """One decision for every environment: (obs, reward, terminated, truncated, info).

        ``info`` holds arrays: ``"done_ids"`` and, for those, ``"final_obs"`` and the finished
        episodes' stats (``"episode"``) when autoreset replaced them in this same step.
        """
        active = ~self.done
        fraction = self.action_set.to_fraction(actions)
        requested = fraction_to_shares(fraction, self.remaining)
        cap = self._child_cap()
        if self.action_set.is_discrete:
            idx = np.asarray(actions).reshape(-1).astype(np.int64)
            violation = ~self.action_masks()[self._rows, idx]
        else:
            violation = requested > cap
        shares = np.minimum(requested, cap)
        last = self.k >= self.n_steps - 1
        shares = np.where(last, self.remaining, shares)  # forced completion at the horizon
        shares = np.where(active, shares, 0)
        violation &= active & ~last
        self._orders.qty[:] = shares
        mid_before = self.market.mid
        fill = self.market.execute(self._orders, active)

        traded = fill.qty > 0
        fill_px = np.where(traded, fill.avg_px, 0.0)
        arrival = self.market.arrival_mid
        self._cash += fill.qty * fill_px
        s = self.stats
        s.filled += fill.qty
        s.child_orders += traded
        s.violations += violation
        s.schedule[self._rows, np.minimum(self.k, self.n_steps - 1)] += fill.qty
        self.remaining -= fill.qty
        self.k += active
        step_is = np.where(traded, self.side * fill.qty * (fill_px - arrival) / arrival, 0.0)
        step_is *= 1e4 / self.qty
        s.is_bps += step_is
        done_now = active & ((self.remaining == 0) | (self.k >= self.n_steps))
        with np.errstate(invalid="ignore", divide="ignore"):
            avg_fill = self._cash / s.filled
        vs_vwap = implementation_shortfall_bps(avg_fill, self.market.arrival_vwap, self.side)
        s.is_vs_arrival_vwap_bps = np.where(s.filled > 0, vs_vwap, 0.0)
        outcome = StepOutcome(
            shares=fill.qty,
            exec_px=fill.avg_px,
            mid_before=mid_before,
            remaining_after=self.remaining,
            is_bps=step_is,
            violation=violation,
            done=done_now,
            episode_is_bps=s.is_bps,
            episode_is_vs_arrival_vwap_bps=s.is_vs_arrival_vwap_bps,
        )
        ctx = RewardContext(self.qty, self.side, arrival, self._risk_var)
        reward = np.where(active, self.reward(ctx, outcome), 0.0)
        s.episode_return += reward
        if done_now.any():
            iv = implementation_shortfall_bps(avg_fill, self.market.interval_vwap, self.side)
            s.is_vs_interval_vwap_bps = np.where(done_now, iv, s.is_vs_interval_vwap_bps)
        self.done |= done_now
        obs = self.observe()
        info: dict[str, Any] = {}
        terminated = done_now.copy()
        if done_now.any():
            ids = np.flatnonzero(done_now)
            info["done_ids"] = ids
            if self.autoreset:
                info["final_obs"] = obs[ids].copy()
                info["episode"] = self.episode_records(ids)
                self._reset_envs(ids)
                obs = self.observe()
        truncated = np.zeros(self.n_envs, dtype=bool)
        return obs, reward.astype(np.float32), terminated, truncated, info

    def episode_records(self, ids: NDArray[np.intp]) -> dict[str, NDArray]:
        s = self.stats
        return {
            "is_bps": s.is_bps[ids].copy(),
            "is_vs_arrival_vwap_bps": s.is_vs_arrival_vwap_bps[ids].copy(),
            "is_vs_interval_vwap_bps": s.is_vs_interval_vwap_bps[ids].copy(),
            "fill_rate": s.filled[ids] / self.qty,
            "child_orders": s.child_orders[ids].copy(),
            "violations": s.violations[ids].copy(),
            "return": s.episode_return[ids].copy(),
        }

    def observe(self) -> NDArray[np.float32]:
        obs = self._obs
        for j, name in enumerate(self.observations):
            if name == "remaining_ratio":
                obs[:, j] = self.remaining / self.qty
            elif name == "elapsed_ratio":
                obs[:, j] = self.k / self.n_steps
            else:
                source, per_qty, scale = _MARKET_FEATURES[name]
                value = self.market.feature(source)
                obs[:, j] = value * (scale / self.qty if per_qty else scale)
        return obs.copy()
