"""The rule-based schedules that finish an order the watchdog took away from its policy.

Every schedule is a holdings trajectory x_0 = 1 ≥ x_1 ≥ … ≥ x_N = 0 (fractions of the order)
read as "trade 1 − x_{k+1}/x_k of what remains at step k" (``step_fractions``): the same
arithmetic the static baselines (``execrl.policies.baselines``) trade by, kept here, below
them, so that the fallback and the baseline of the same name are one schedule. Read against
what remains, a schedule re-plans by itself when it takes over mid-order or when a child was
cut or went unfilled, and its last step (x_N = 0) sends everything left, so the order
completes by the horizon whenever the venue fills it.

- ``twap``: equal shares in every step left (the default).
- ``vwap``: in proportion to the market's expected volume of each step left.
- ``almgren_chriss``: the λ-optimal trajectory of the market knowledge's cost model
  (``execrl.sim.theory.ac_trajectory``); TWAP where the market has no cost model.
- ``split``: the remaining quantity as ``split_orders`` equal market orders in the steps
  right after the switch (fewer where the horizon is nearer), seed 000 §6.3.

Shares are whole: ``rint(fraction × remaining)``, the rounding the execution core applies to
a fraction-of-remaining action.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from execrl.domain import ConfigError
from execrl.sim.almgren_chriss import ACMarketConfig
from execrl.sim.spec import MarketKnowledge
from execrl.sim.theory import ac_trajectory

FallbackKind = Literal["twap", "vwap", "almgren_chriss", "split"]
FALLBACKS: tuple[str, ...] = ("twap", "vwap", "almgren_chriss", "split")


def twap_holdings(n_steps: int) -> NDArray[np.float64]:
    """x_k = 1 − k/N: equal shares in every step (the risk-neutral Almgren–Chriss optimum)."""
    return np.linspace(1.0, 0.0, int(n_steps) + 1)


def vwap_holdings(volume_weights: ArrayLike) -> NDArray[np.float64]:
    """x_k = 1 − Σ_{j<k} w_j: shares in proportion to each step's expected market volume."""
    w = np.asarray(volume_weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) \
            or w.sum() <= 0:
        raise ConfigError(
            f"volume profile of shape {w.shape} must be one row of non-negative weights with a "
            "positive sum"
        )
    w = w / w.sum()
    holdings = np.concatenate([[1.0], 1.0 - np.cumsum(w)]).clip(0.0)
    holdings[-1] = 0.0  # the cumulative sum can end a rounding error away from 1
    return holdings


def step_fractions(holdings: ArrayLike, name: str = "schedule") -> NDArray[np.float64]:
    """f_k = 1 − x_{k+1}/x_k, the share of what remains that step k trades (1 once the
    trajectory is at 0, so whatever is left then goes)."""
    h = np.asarray(holdings, dtype=np.float64)
    if h.ndim != 1 or h.size < 2 or h[-1] != 0.0 or np.any(np.diff(h) > 1e-12) or h[0] <= 0:
        raise ValueError(f"{name}: holdings must be non-increasing from > 0 and end at 0")
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = 1.0 - h[1:] / h[:-1]
    return np.clip(np.where(h[:-1] > 0, frac, 1.0), 0.0, 1.0)


def fallback_holdings(
    kind: str,
    n_steps: int,
    volume_weights: ArrayLike | None = None,
    cost_model: ACMarketConfig | None = None,
) -> NDArray[np.float64]:
    """The holdings trajectory (x_0 = 1 … x_N = 0) of ``kind`` over ``n_steps`` decisions;
    ``split`` has none of its own (it depends on the step it starts) and gives TWAP's."""
    n_steps = int(n_steps)
    if n_steps < 1:
        raise ConfigError(f"fallback field 'n_steps' = {n_steps!r} must be >= 1")
    if kind not in FALLBACKS:
        raise ConfigError(f"fallback {kind!r} is unknown; known: {', '.join(FALLBACKS)}")
    if kind == "vwap":
        if volume_weights is None:
            raise ConfigError("fallback 'vwap' needs the market's volume profile")
        h = vwap_holdings(volume_weights)
        if h.size != n_steps + 1:
            raise ConfigError(
                f"fallback 'vwap': the volume profile has {h.size - 1} steps, the order "
                f"{n_steps}"
            )
        return h
    if kind == "almgren_chriss" and cost_model is not None:
        if cost_model.n_steps != n_steps:
            raise ConfigError(
                f"fallback 'almgren_chriss': the cost model has n_steps = {cost_model.n_steps}, "
                f"the order {n_steps}"
            )
        return ac_trajectory(cost_model, 1.0)
    return twap_holdings(n_steps)


class FallbackSchedule:
    """One fallback schedule over an order's ``n_steps`` decisions, precomputed once, batched
    over orders: ``shares(remaining, k, start)`` says how many shares each order sends at
    step k (0-based)."""

    def __init__(
        self,
        kind: str,
        n_steps: int,
        *,
        volume_weights: ArrayLike | None = None,
        cost_model: ACMarketConfig | None = None,
        split_orders: int = 4,
    ):
        if isinstance(split_orders, bool) or not isinstance(split_orders, int | np.integer) \
                or split_orders < 1:
            raise ConfigError(f"fallback field 'split_orders' = {split_orders!r} must be an "
                              "integer >= 1")
        self.kind = kind
        self.n_steps = int(n_steps)
        self.split_orders = int(split_orders)
        self.holdings = fallback_holdings(kind, n_steps, volume_weights, cost_model)
        self.fractions = step_fractions(self.holdings, kind)

    @classmethod
    def from_knowledge(
        cls, kind: str, knowledge: MarketKnowledge, split_orders: int = 4
    ) -> FallbackSchedule:
        """The schedule on what a policy may know of the market: its volume profile (vwap)
        and its cost model (almgren_chriss; TWAP where it has none)."""
        return cls(kind, knowledge.n_steps, volume_weights=knowledge.volume_weights,
                   cost_model=knowledge.cost_model, split_orders=split_orders)

    def step_fraction(
        self, k: ArrayLike, start: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """The share of what remains each order trades at step ``k``; ``start``: the step
        the fallback took over (``split`` counts its orders from there; default ``k``)."""
        kk = np.clip(np.asarray(k, dtype=np.int64), 0, self.n_steps - 1)
        if self.kind != "split":
            return self.fractions[kk]
        s = kk if start is None else np.minimum(np.asarray(start, dtype=np.int64), kk)
        last = np.minimum(s + self.split_orders, self.n_steps)  # one past the last order's step
        return 1.0 / np.maximum(last - kk, 1)

    def shares(
        self, remaining: ArrayLike, k: ArrayLike, start: ArrayLike | None = None
    ) -> NDArray[np.int64]:
        """Whole shares each order sends at step ``k`` for what ``remaining`` it has left:
        0 ≤ shares ≤ remaining, and all of it at the last step (k = n_steps − 1)."""
        r = np.maximum(np.asarray(remaining, dtype=np.int64), 0)
        out = np.rint(self.step_fraction(k, start) * r).astype(np.int64)
        return np.minimum(out, r)


def fallback_shares(
    kind: str,
    remaining: ArrayLike,
    k: ArrayLike,
    n_steps: int,
    *,
    volume_weights: ArrayLike | None = None,
    cost_model: ACMarketConfig | None = None,
    start: ArrayLike | None = None,
    split_orders: int = 4,
) -> NDArray[np.int64]:
    """``FallbackSchedule(kind, n_steps, …).shares(remaining, k, start)`` in one call (the
    executor keeps the schedule object instead, to build it once)."""
    schedule = FallbackSchedule(kind, n_steps, volume_weights=volume_weights,
                                cost_model=cost_model, split_orders=split_orders)
    return schedule.shares(remaining, k, start)
