"""Build the execution loop for a parent order on a market configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError, ParentOrder
from execrl.env.core import BatchedExecution
from execrl.env.rewards import Reward, make_reward
from execrl.env.spaces import ActionSet, resolve_action_set, resolve_observation_set
from execrl.market.observations import (
    NORMALISE_MODES,
    ObservationNormaliser,
    normalisation_spec,
)
from execrl.safety.guard import KillSwitch, RiskGuard, RiskLimits
from execrl.sim.almgren_chriss import AC_PAPER_ORDER, ACMarketConfig
from execrl.sim.spec import MarketSpec

#: The default market's default order (``MarketSpec.default_order``): the AC paper's 5-day sell
#: of 1M shares.
DEFAULT_ORDER = AC_PAPER_ORDER


@dataclass(frozen=True)
class EnvConfig:
    """What an environment is made of: a market, what the policy sees and says, the reward."""

    market: MarketSpec = field(default_factory=ACMarketConfig)
    observations: str | tuple[str, ...] = "seed004"
    actions: str | ActionSet = "seed004"
    reward: str = "is_bps"
    normalise: Literal["fixed", "online"] = "fixed"
    """``fixed``: the observation table's constants scale every feature (what the baselines
    and every figure so far saw). ``online``: then z-scored online per regime bucket
    (``market.observations.ObservationNormaliser``): training folds each decision's
    observation into the statistics, and the trained state goes, frozen, into the exported
    policy, which applies it itself wherever it runs (evaluate, execute)."""
    normaliser: ObservationNormaliser | None = field(default=None, compare=False, repr=False)
    """With ``online``: the normaliser every execution made from this config shares (training
    hands it to the exported policy); None: each gets a fresh one. A locked one folds nothing."""

    def __post_init__(self) -> None:
        if self.normalise not in NORMALISE_MODES:
            raise ConfigError(f"--normalise {self.normalise!r} is unknown; choose from "
                              f"{', '.join(NORMALISE_MODES)}")
        if self.normaliser is not None and self.normalise != "online":
            raise ConfigError("a normaliser is given but normalise = 'fixed'")

    def with_normaliser(self, order: ParentOrder) -> EnvConfig:
        """This config with its (shared) normaliser made now, when ``online`` asks for one."""
        if self.normalise != "online" or self.normaliser is not None:
            return self
        return dataclasses.replace(self, normaliser=make_normaliser(self, order))


def make_normaliser(config: EnvConfig, order: ParentOrder) -> ObservationNormaliser:
    """A fresh online normaliser for ``config``'s observation set on its market (the regime
    bucket's edges on the market's tick grid, ``normalisation_spec``)."""
    names = resolve_observation_set(config.observations)
    m = market_for_order(config.market, order)
    tick = float(getattr(m, "tick_size", 0.0) or 0.0)
    s0 = float(getattr(m, "s0", 0.0) or 0.0)
    tick_bps = tick / s0 * 1e4 if tick > 0 and s0 > 0 else None
    return ObservationNormaliser(normalisation_spec(names, tick_bps=tick_bps))


class NormalisedExecution(BatchedExecution):
    """The execution loop with its observations online-normalised (``EnvConfig.normalise``).

    Every observation ``observe`` returns goes through the normaliser; each decision's row is
    folded in once, when it is first observed (the core observes twice in a step where
    autoreset restarts episodes: rows already folded are not folded again), and the rows of
    finished orders never (they are not decided on)."""

    def __init__(self, *args: Any, normaliser: ObservationNormaliser, **kwargs: Any):
        super().__init__(*args, **kwargs)
        normaliser.check(self.observations, "execution")
        self.normaliser = normaliser
        self._folded_k = np.full(self.n_envs, -1, dtype=np.int64)

    def reset(self, seed: int | None = None) -> NDArray[np.float32]:
        self._folded_k[:] = -1
        return super().reset(seed)

    def raw_observe(self) -> NDArray[np.float32]:
        """The observation before normalisation (the fixed scaling's)."""
        return super().observe()

    def observe(self) -> NDArray[np.float32]:
        raw = super().observe()
        fresh = None
        if not self.normaliser.locked:
            fresh = ~self.done & (self.k != self._folded_k)
            self._folded_k[self.done] = -1
            self._folded_k[fresh] = self.k[fresh]
        return self.normaliser.apply(raw, fresh)


def market_for_order(market: MarketSpec, order: ParentOrder) -> MarketSpec:
    """The market with the order's horizon and arrival price (``MarketSpec.for_order``)."""
    return market.for_order(order)


def reward_for_market(name: str, market: MarketSpec) -> Reward:
    """The reward ``name`` with the market's constants (λ, the temporary impact per share)."""
    return make_reward(name, market.risk_aversion, market.temp_impact_per_share())


def risk_var_per_share2(market: MarketSpec) -> float:
    """The price variance one held share adds per step (the risk term's scale)."""
    return market.risk_var_per_share2()


@dataclass(frozen=True)
class OrderFeasibility:
    """How many of an order's shares its own hard limits let it trade within the horizon.

    ``step_limits[k]`` is the largest child order the limits allow in step k (``child_max``,
    and ``participation`` × the step's expected volume in whole shares, as the execution core
    cuts them; ``None`` where the order has neither limit). Trading that much in every step is
    the most any policy can fill, so the order can complete only if the limits add up to its
    quantity; what they do not allow is charged as a residual at the end mid.
    """

    qty: int
    n_steps: int
    step_limits: NDArray[np.int64] | None
    max_fillable_shares: int
    binding: str  # "", "child_max", "participation" or "child_max and participation"
    child_max: int | None = None
    participation: float | None = None
    expected_volume: float = 0.0  # over the horizon, shares

    @property
    def feasible(self) -> bool:
        return self.max_fillable_shares >= self.qty

    def warning(self) -> str | None:
        """One line for an order its limits cannot complete (``None`` when they can)."""
        if self.feasible:
            return None
        if self.binding == "child_max":
            why = f"child_max {self.child_max:,} x {self.n_steps} steps"
        elif self.binding == "participation":
            why = (
                f"participation {self.participation:g} x {self.expected_volume:,.0f} shares of "
                f"expected volume over {self.n_steps} steps"
            )
        else:
            why = (
                f"child_max {self.child_max:,} or participation {self.participation:g} of the "
                f"expected volume, whichever is smaller, in each of {self.n_steps} steps"
            )
        return (
            f"the order's limits allow at most {self.max_fillable_shares:,} of its "
            f"{self.qty:,} shares ({why}); the rest will be charged as a residual at the end mid"
        )

    def to_results(self) -> dict[str, Any]:
        """The ``"order_feasibility"`` block of results.json."""
        return {
            "max_fillable_shares": self.max_fillable_shares,
            "feasible": self.feasible,
            "binding": self.binding or None,
        }


def order_feasibility(order: ParentOrder, market: MarketSpec) -> OrderFeasibility:
    """The most shares ``order``'s hard limits allow over its horizon on ``market`` (before any
    run: the per-step limits depend only on the expected volume curve)."""
    m = market_for_order(market, order)
    c = order.constraints
    n = m.n_steps
    volume = m.expected_volumes()
    limits: NDArray[np.int64] | None = None
    child_binds = np.zeros(n, dtype=bool)
    if c.child_max is not None:
        limits = np.full(n, c.child_max, dtype=np.int64)
        child_binds[:] = True
    if c.participation is not None:
        # the execution core's participation cap, with the same operations
        part = np.floor(c.participation * volume).astype(np.int64)
        if limits is not None:
            child_binds = limits <= part
            limits = np.minimum(limits, part)
        else:
            limits = part
    if limits is None:
        return OrderFeasibility(order.qty, n, None, order.qty, "")
    # Python ints: the sum of per-step limits may exceed int64
    total = sum(int(x) for x in np.minimum(limits, order.qty))
    binding = (
        "child_max"
        if child_binds.all()
        else "participation"
        if not child_binds.any()
        else "child_max and participation"
    )
    return OrderFeasibility(
        qty=order.qty,
        n_steps=n,
        step_limits=limits,
        max_fillable_shares=min(order.qty, total),
        binding=binding,
        child_max=c.child_max,
        participation=c.participation,
        expected_volume=float(volume.sum()),
    )


def make_guard(
    order: ParentOrder,
    market: MarketSpec,
    n_envs: int = 1,
    limits: RiskLimits | None = None,
    policy: str | list[str] = "",
    kill: KillSwitch | None = None,
    qty: NDArray[np.int64] | None = None,
) -> RiskGuard:
    """The risk guard for ``n_envs`` copies of ``order`` on ``market``: the firm's ``limits``
    tightened by the order's own constraints, on the core's clock (k × the step's seconds).
    ``qty``: per env, the size of its order (a batch of orders that differ only in size);
    None: ``order.qty`` for every env.
    ADV, when the limits need it and do not give it, is the market's expected volume over the
    horizon scaled to a 6.5-hour trading day. The execution core puts the band on its market's
    tick grid (``RiskGuard.use_tick``)."""
    m = market_for_order(market, order)
    merged = RiskLimits.from_constraints(order.constraints)
    if limits is not None:
        merged = limits.merge(merged)
    step_s = order.horizon / m.n_steps
    adv = None
    if merged.adv_fraction is not None and merged.adv_shares is None:
        adv = float(m.expected_volumes().sum()) * TRADING_DAY_S / order.horizon
    return RiskGuard(
        merged, n_envs, order.side.sign, order.qty if qty is None else qty,
        symbol=order.symbol, step_seconds=step_s,
        horizon_s=order.horizon, adv_shares=adv, policy=policy, kill=kill,
    )


#: seconds of one trading day (a 6.5-hour session), for an ADV derived from a volume profile
TRADING_DAY_S = 6.5 * 3600.0


def make_execution(
    config: EnvConfig,
    order: ParentOrder = DEFAULT_ORDER,
    n_envs: int = 1,
    autoreset: bool = True,
    guard: RiskGuard | None = None,
    qty: NDArray[np.int64] | None = None,
) -> BatchedExecution:
    """The execution loop of ``n_envs`` copies of ``order``; ``guard`` (``make_guard``)
    replaces the one the core builds from the order's constraints. ``qty``: per env, its
    order's size (a batch of orders that share everything else; the market is built from
    ``order``, so the caller checks they share it); None: ``order.qty`` everywhere."""
    market_config = market_for_order(config.market, order)
    market = market_config.build(n_envs, order.side.sign)
    extra: dict[str, Any] = {}
    cls: type[BatchedExecution] = BatchedExecution
    if config.normalise == "online":
        cls = NormalisedExecution
        extra["normaliser"] = config.normaliser or make_normaliser(config, order)
    return cls(
        market,
        qty=order.qty if qty is None else qty,
        side=order.side.sign,
        observations=resolve_observation_set(config.observations),
        action_set=resolve_action_set(config.actions),
        reward=reward_for_market(config.reward, market_config),
        constraints=order.constraints if guard is None else None,
        autoreset=autoreset,
        risk_var_per_share2=risk_var_per_share2(market_config),
        guard=guard,
        **extra,
    )
