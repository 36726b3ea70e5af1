"""Rule-based execution baselines, batched, speaking the continuous fraction-of-remaining
action set.

A static schedule x_0 … x_N becomes "trade 1 − x_{k+1}/x_k of what remains at step k", which
reproduces the schedule exactly (up to whole shares) and stays sensible if an earlier child
was cut by a limit. The trajectories and that arithmetic live in ``execrl.safety.fallback``
(the watchdog's fallback schedules are these same schedules).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit
from numpy.typing import NDArray

from execrl.domain import ConfigError
from execrl.policies.base import FeatureIndex, PolicyContext
from execrl.safety.fallback import step_fractions, twap_holdings, vwap_holdings
from execrl.sim.almgren_chriss import ACMarketConfig
from execrl.sim.theory import SignalAwareSolution, ac_trajectory, solve_signal_aware


def _step_index(idx: FeatureIndex, obs: NDArray, n_steps: int) -> NDArray[np.intp]:
    k = np.rint(idx(obs, "elapsed_ratio") * n_steps).astype(np.intp)
    return np.clip(k, 0, n_steps - 1)


@njit(cache=True)
def _schedule_act(
    obs: NDArray[np.float32], col: int, step_fraction: NDArray[np.float64],
    out: NDArray[np.float32],
) -> None:
    """``StaticSchedulePolicy.act`` in one compiled loop (the training and evaluation hot
    path): ``_step_index`` and the schedule's lookup with the same operations."""
    n_steps = step_fraction.shape[0]
    for i in range(obs.shape[0]):
        k = np.intp(np.rint(np.float64(obs[i, col]) * n_steps))
        k = min(max(k, 0), n_steps - 1)
        out[i, 0] = np.float32(step_fraction[k])


class StaticSchedulePolicy:
    """Follows a fixed holdings trajectory x_0 = 1 … x_N = 0 (fractions of the order)."""

    action_set = "continuous"
    observations: tuple[str, ...] = ("remaining_ratio", "elapsed_ratio")

    def __init__(self, name: str, holdings: NDArray[np.float64]):
        h = np.asarray(holdings, dtype=np.float64)
        self.step_fraction = step_fractions(h, name)  # the fallback schedules' arithmetic
        self.name = name
        self.holdings = h / h[0]
        self._idx = FeatureIndex(self.observations)

    def act(self, observations: NDArray, masks: NDArray | None = None) -> NDArray:
        obs = np.asarray(observations)
        if obs.ndim != 2 or obs.dtype != np.float32:
            k = _step_index(self._idx, obs, self.step_fraction.size)
            return self.step_fraction[k][:, None].astype(np.float32)
        out = np.empty((obs.shape[0], 1), dtype=np.float32)
        _schedule_act(obs, self._idx.position("elapsed_ratio"), self.step_fraction, out)
        return out


def twap(ctx: PolicyContext) -> StaticSchedulePolicy:
    """Equal shares in every step: the risk-neutral Almgren–Chriss optimum."""
    return StaticSchedulePolicy("twap", twap_holdings(ctx.market.n_steps))


def vwap(ctx: PolicyContext) -> StaticSchedulePolicy:
    """Shares in proportion to the expected (U-shaped) market volume of each step."""
    return StaticSchedulePolicy("vwap", vwap_holdings(ctx.market.volume_weights))


def almgren_chriss(ctx: PolicyContext, risk_aversion: float | None = None) -> StaticSchedulePolicy:
    """The λ-optimal trajectory (λ from the market unless given)."""
    market = ctx.market.require_cost_model("ac")
    if risk_aversion is not None:  # validated like any market field (refuses -1, nan, inf)
        market = ACMarketConfig.from_dict({**market.model_dump(), "risk_aversion": risk_aversion})
    return StaticSchedulePolicy("ac", ac_trajectory(market, 1.0))


def immediate(ctx: PolicyContext) -> StaticSchedulePolicy:
    """Everything in the first step."""
    return StaticSchedulePolicy("immediate", np.r_[1.0, np.zeros(ctx.market.n_steps)])


class POVPolicy:
    """Trade ``rate`` × the market volume of the last step, rounded down to whole shares so
    the participation rate is never exceeded; what is left goes at the horizon (within the
    order's own limits)."""

    action_set = "continuous"
    observations = ("remaining_ratio", "elapsed_ratio", "last_volume_ratio")
    #: built for one order's size: a batch of orders (``Executor.batch_key``) shares one
    per_order_qty = True

    def __init__(self, rate: float, qty: int):
        if not 0.0 < rate <= 1.0:
            raise ConfigError(f"pov participation rate = {rate!r} must be in (0, 1]")
        self.name = "pov"
        self.rate = rate
        self._qty = qty
        self._idx = FeatureIndex(self.observations)

    def act(self, observations: NDArray, masks: NDArray | None = None) -> NDArray:
        remaining = self._idx(observations, "remaining_ratio") * self._qty
        wanted = np.floor(self.rate * self._idx(observations, "last_volume_ratio") * self._qty)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(remaining > 0, wanted / remaining, 0.0)
        return np.clip(frac, 0.0, 1.0)[:, None].astype(np.float32)


def pov(ctx: PolicyContext, rate: float | None = None) -> POVPolicy:
    return POVPolicy(0.05 if rate is None else rate, ctx.qty)


class SignalAwarePolicy:
    """The exact optimum of the market with an observed OU signal (``solve_signal_aware``).

    Trades that would go against the order's side (buying back during a sell) are clipped to
    zero: an execution algorithm does not reverse its parent order.
    """

    name = "signal_aware"
    action_set = "continuous"
    observations = ("remaining_ratio", "elapsed_ratio", "signal")
    per_order_qty = True  # as POVPolicy's

    def __init__(self, ctx: PolicyContext):
        if ctx.market.signal is None:
            raise ConfigError(
                "policy 'signal_aware' needs a market with a signal (--env ac-signal)"
            )
        self.solution: SignalAwareSolution = solve_signal_aware(
            ctx.market.require_cost_model("signal_aware"), ctx.qty, ctx.side
        )
        self._alpha_std = ctx.market.signal.stationary_std
        self._qty = ctx.qty
        self._n_steps = ctx.market.n_steps
        self._idx = FeatureIndex(self.observations)

    def act(self, observations: NDArray, masks: NDArray | None = None) -> NDArray:
        k = _step_index(self._idx, observations, self._n_steps)
        x = self._idx(observations, "remaining_ratio") * self._qty
        alpha = self._idx(observations, "signal") * self._alpha_std
        keep = self.solution.target_holdings(k, x, alpha)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(x > 0, (x - keep) / x, 0.0)
        return np.clip(frac, 0.0, 1.0)[:, None].astype(np.float32)


class PassiveTWAPPolicy:
    """TWAP over slices of two decision steps: post the slice at the near touch for one step,
    then sweep what it left with a market order (and the core sweeps what is left at the
    horizon). Speaks the ``orders`` action set (a size and a style column)."""

    name = "passive_twap"
    action_set = "orders"
    observations = ("remaining_ratio", "elapsed_ratio")

    def __init__(self, ctx: PolicyContext):
        self._n_steps = ctx.market.n_steps
        self._n_slices = max((self._n_steps + 1) // 2, 1)
        self._idx = FeatureIndex(self.observations)

    def act(self, observations: NDArray, masks: NDArray | None = None) -> NDArray:
        k = _step_index(self._idx, observations, self._n_steps)
        x = self._idx(observations, "remaining_ratio")
        target = np.clip(1.0 - (k // 2 + 1) / self._n_slices, 0.0, 1.0)  # holdings after
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(x > 0, np.clip((x - target) / x, 0.0, 1.0), 0.0)
        style = np.where(k % 2 == 0, _POST_ONE_STEP, _MARKET)
        return np.stack([frac, style], axis=1).astype(np.float32)


class SubmitAndLeavePolicy:
    """Nevmyvaka, Feng & Kearns (2006)'s baseline: the whole order as one limit order at the
    near touch, left until the horizon, where the core sweeps what did not fill."""

    name = "submit_and_leave"
    action_set = "orders"
    observations = ("remaining_ratio", "elapsed_ratio", "working_ratio")

    def __init__(self, ctx: PolicyContext):
        self._idx = FeatureIndex(self.observations)

    def act(self, observations: NDArray, masks: NDArray | None = None) -> NDArray:
        x = self._idx(observations, "remaining_ratio")
        working = self._idx(observations, "working_ratio")
        first = self._idx(observations, "elapsed_ratio") == 0.0
        frac = np.where(first & (working == 0.0) & (x > 0), 1.0, 0.0)
        style = np.full(frac.shape, _POST_UNTIL_CANCELLED)
        return np.stack([frac, style], axis=1).astype(np.float32)


# style indices of the ``orders`` action set (``execrl.env.spaces``)
_MARKET, _POST_ONE_STEP, _POST_UNTIL_CANCELLED, _CANCEL = 0, 1, 2, 3


BASELINES: dict[str, Callable[..., object]] = {
    "twap": twap,
    "vwap": vwap,
    "pov": pov,
    "ac": almgren_chriss,
    "immediate": immediate,
    "signal_aware": SignalAwarePolicy,
    "passive_twap": PassiveTWAPPolicy,
    "submit_and_leave": SubmitAndLeavePolicy,
}
_PARAMETRISED = {"pov", "ac"}


def make_baseline(spec: str, ctx: PolicyContext):
    """``name`` or ``name:param`` (``pov:0.1`` = 10 % participation, ``ac:2e-6`` = λ)."""
    name, _, param = spec.partition(":")
    if name not in BASELINES:
        raise ConfigError(f"policy {spec!r} is unknown; baselines: {', '.join(BASELINES)}")
    if not param:
        return BASELINES[name](ctx)
    if name not in _PARAMETRISED:
        raise ConfigError(f"policy {name!r} takes no parameter, got {spec!r}")
    try:
        value = float(param)
    except ValueError:
        raise ConfigError(f"policy {spec!r}: parameter {param!r} is not a number") from None
    policy = BASELINES[name](ctx, value)
    policy.name = spec
    return policy
