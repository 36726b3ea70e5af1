"""Reward definitions, one class per seed. Each turns a step's outcome into a reward per env.

All three are in the same unit, bps of the parent order's arrival notional (X·S0), so their
scales compare. ``StepOutcome.is_bps`` is the step's contribution to the order's IS against
the arrival mid; summed over the episode it is the order's IS (see ``execrl.domain.costs``).

IS counts every share of the parent order: shares the hard limits leave unfilled at the
horizon are charged at the end mid in the last step's ``is_bps`` and in the episode's IS
against the arrival VWAP, and the marked-to-market ΔIS of ``risk_adjusted`` already revalues
them to the end mid. So every reward's return carries that charge, and trading less than the
order does not make a policy's return look cheaper than its IS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError


@dataclass(slots=True)
class StepOutcome:
    """What one decision step did, per environment (arrays of shape (n_envs,))."""

    shares: NDArray[np.int64]
    exec_px: NDArray[np.float64]  # NaN where nothing traded
    mid_before: NDArray[np.float64]
    mid_after: NDArray[np.float64]
    remaining_after: NDArray[np.int64]
    # this step's contribution to IS vs the arrival mid (the last step's includes the
    # residual's charge at the end mid)
    is_bps: NDArray[np.float64]
    cut: NDArray[np.bool_]  # the policy asked for more than the hard limits allow (cut down)
    done: NDArray[np.bool_]  # the episode ended with this step
    episode_is_bps: NDArray[np.float64]  # IS vs arrival mid of the whole episode so far
    # IS vs the arrival VWAP of the shares traded so far; when ``done``, of the whole order
    # (the residual priced at the end mid)
    episode_is_vs_arrival_vwap_bps: NDArray[np.float64]
    # E[mid move | before the step]; only markets that know their own dynamics provide it
    expected_mid_move: NDArray[np.float64] | None = None
    # decision steps done / steps in the horizon, after this step
    elapsed_after: NDArray[np.float64] | None = None
    # the step's fills, one row each (``execrl.sim.base.FILL_EVENT_DTYPE``), for rewards that
    # ask for them (``needs_fill_events``)
    fill_events: NDArray | None = None


@dataclass(frozen=True, slots=True)
class RewardContext:
    """Constants a reward needs: the order's size (one, or one per env in a batch of orders of
    different sizes) and side and the market's risk scale."""

    qty: int | NDArray[np.int64]
    side: int
    arrival_mid: NDArray[np.float64]
    risk_var_per_share2: float  # σ_eff²·τ, the variance one held share adds per step


class Reward(Protocol):
    name: str

    def __call__(self, ctx: RewardContext, step: StepOutcome) -> NDArray[np.float64]: ...


@dataclass(frozen=True)
class IsBpsReward:
    """Seed 004: minus the step's implementation shortfall in bps (sums to −IS)."""

    name: str = "is_bps"

    def __call__(self, ctx: RewardContext, step: StepOutcome) -> NDArray[np.float64]:
        return -step.is_bps


@dataclass(frozen=True)
class ArrivalVwapReward:
    """Seed 000: a terminal reward against the arrival VWAP plus a capped per-fill reward.

    main = (VWAP_arrival − P_avg)/VWAP_arrival·100 for a buy (sign flipped for a sell),
    given when the order ends; aux = (P_mid − P_fill)/P_mid·10 per fill, capped to ±aux_cap,
    each fill at its own price (P_mid: the mid at the decision), summed over the step's fills.
    Weighted ``main_weight`` : 1 − main_weight (seed: 80–90 % main). Returned in bps/100 units
    as the seed writes them.
    """

    main_weight: float = 0.85
    aux_cap: float = 1.0
    name: str = "arrival_vwap"
    needs_fill_events = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.main_weight <= 1.0:
            raise ConfigError(
                f"reward field 'main_weight' = {self.main_weight!r} must be in [0, 1]"
            )
        if self.aux_cap <= 0:
            raise ConfigError(f"reward field 'aux_cap' = {self.aux_cap!r} must be > 0")

    def __call__(self, ctx: RewardContext, step: StepOutcome) -> NDArray[np.float64]:
        # IS in bps / 100 = percent, the seed's unit; positive IS is a cost, so negate.
        main = np.where(step.done, -step.episode_is_vs_arrival_vwap_bps / 100.0, 0.0)
        events = step.fill_events
        if events is None:  # one fill per step at the step's price
            traded = step.shares > 0
            with np.errstate(invalid="ignore"):
                aux_raw = -ctx.side * (step.exec_px - step.mid_before) / step.mid_before * 10.0
            aux = np.where(traded, np.clip(aux_raw, -self.aux_cap, self.aux_cap), 0.0)
        else:
            env = events["env"]
            mid = step.mid_before[env]
            per_fill = np.clip(-ctx.side * (events["px"] - mid) / mid * 10.0,
                               -self.aux_cap, self.aux_cap)
            aux = np.zeros(step.shares.shape[0])
            np.add.at(aux, env, per_fill)
        return self.main_weight * main + (1.0 - self.main_weight) * aux


def marked_to_market_is_bps(
    ctx: RewardContext, step: StepOutcome, expected: bool = False
) -> NDArray[np.float64]:
    """ΔIS of the step with the unexecuted shares marked to the mid (bps of X·S0):
    side·[n_k·(P̃_k − S_{k−1}) + x_k·(S_k − S_{k−1})], the trade's cost against the mid it met
    plus the revaluation of what is still to trade. Summed over an episode it is exactly the
    order's IS against the arrival mid (the x_k·ΔS_k terms telescope), but each step carries
    only its own price move, not every move since arrival as ``StepOutcome.is_bps`` does.
    With ``expected`` the revaluation uses the expected mid move instead of the realised one."""
    notional = ctx.qty * ctx.arrival_mid
    traded = step.shares > 0
    trade_cost = np.where(traded, step.shares * (step.exec_px - step.mid_before), 0.0)
    if expected:
        if step.expected_mid_move is None:
            raise ConfigError("reward 'expected_cost' needs a market that knows its expected move")
        move = step.expected_mid_move
    else:
        move = step.mid_after - step.mid_before
    revaluation = step.remaining_after * move
    return ctx.side * (trade_cost + revaluation) / notional * 1e4


@dataclass(frozen=True)
class RiskAdjustedReward:
    """Seed 001 §2.3: r = −ΔIS − λ·x²σ²Δt − λ_imp·impact − λ_viol·1[violation], plus a
    terminal −w·IS_total; ΔIS is marked to market (``marked_to_market_is_bps``).

    A "violation" here is a *cut* (``StepOutcome.cut``): the policy asked for more than the
    order's limits allow and the guard cut it down; the child order itself never breaks a
    limit. So ``violation_penalty`` teaches the policy to ask for what it may trade; it is not
    charged for the horizon's forced remainder, whose size the policy does not choose (the
    residual it leaves is charged at the end mid through ΔIS instead).

    With the defaults the episode's return is −(cost + λ·Σσ²τx_k²)/(X·S0)·1e4, the negative of
    the Almgren–Chriss mean-variance objective in bps. ΔIS already contains the temporary and
    permanent impact paid, so ``impact_weight`` (an extra penalty on the temporary impact,
    seed 001's λ_impact) defaults to 0, and ``terminal_is_weight`` too (the steps' ΔIS already
    sum to IS_total).
    """

    risk_aversion: float
    impact_weight: float = 0.0
    violation_penalty: float = 1.0
    terminal_is_weight: float = 0.0
    temp_impact_per_share: float = 0.0  # η/τ, set by the environment
    expected: bool = False  # True: the ``expected_cost`` variant (see ``make_reward``)
    name: str = "risk_adjusted"

    @property
    def needs_expected_move(self) -> bool:
        return self.expected

    def __call__(self, ctx: RewardContext, step: StepOutcome) -> NDArray[np.float64]:
        notional = ctx.qty * ctx.arrival_mid
        x = step.remaining_after.astype(np.float64)
        risk = self.risk_aversion * ctx.risk_var_per_share2 * x * x / notional * 1e4
        dis = marked_to_market_is_bps(ctx, step, expected=self.expected)
        r = -dis - risk - self.violation_penalty * step.cut
        if self.impact_weight:
            temp = self.temp_impact_per_share * step.shares**2 / notional * 1e4
            r = r - self.impact_weight * temp
        if self.terminal_is_weight:
            r = r - self.terminal_is_weight * np.where(step.done, step.episode_is_bps, 0.0)
        return r


@dataclass(frozen=True)
class Seed003Reward:
    """Seed 003's reward (its ``calculate_reward`` and ``[rl_execution.reward]`` weights):
    fill_weight × the step's fill rate (shares / order) − slippage_weight × |fill px − mid| /
    mid − time_weight × (elapsed − 0.9) past 90 % of the horizon − impact_weight × |mid after
    − fill px| / fill px. The seed counts slippage and impact per step with a fill, unweighted
    by its size. A share left unfilled earns no fill reward, and evaluation measures IS, so
    not trading never looks cheap."""

    fill_weight: float = 10.0
    slippage_weight: float = 100.0
    time_weight: float = 50.0
    impact_weight: float = 50.0
    name: str = "seed003"

    def __call__(self, ctx: RewardContext, step: StepOutcome) -> NDArray[np.float64]:
        traded = step.shares > 0
        px = np.where(traded, step.exec_px, 1.0)
        fill = self.fill_weight * step.shares / ctx.qty
        slip = np.where(traded, np.abs(px - step.mid_before) / step.mid_before, 0.0)
        impact = np.where(traded, np.abs(step.mid_after - px) / px, 0.0)
        elapsed = step.elapsed_after if step.elapsed_after is not None else 0.0
        late = np.maximum(np.asarray(elapsed) - 0.9, 0.0)
        return fill - self.slippage_weight * slip - self.time_weight * late - (
            self.impact_weight * impact
        )


REWARDS = ("is_bps", "arrival_vwap", "risk_adjusted", "expected_cost", "seed003")
#: rewards a log of real decisions can carry (``expected_cost`` needs the simulator's model)
LOGGED_REWARDS = ("is_bps", "arrival_vwap", "risk_adjusted")


def make_reward(name: str, risk_aversion: float, temp_impact_per_share: float) -> Reward:
    if name == "is_bps":
        return IsBpsReward()
    if name == "arrival_vwap":
        return ArrivalVwapReward()
    if name == "risk_adjusted":
        return RiskAdjustedReward(risk_aversion, temp_impact_per_share=temp_impact_per_share)
    if name == "expected_cost":
        # risk_adjusted with the unpredictable price innovation x_k·σ√τ·ξ_k taken out of each
        # step: it has conditional mean 0 whatever the policy does (x_k is decided before ξ_k),
        # so every policy's expected return, and the optimal policy, are unchanged, while the
        # return's variance drops by the whole price risk. A training aid for simulators that
        # know their dynamics; evaluation always measures the realised IS.
        return RiskAdjustedReward(
            risk_aversion, temp_impact_per_share=temp_impact_per_share, expected=True, name=name
        )
    if name == "seed003":
        return Seed003Reward()
    raise ConfigError(f"reward {name!r} is unknown; choose from {', '.join(REWARDS)}")
