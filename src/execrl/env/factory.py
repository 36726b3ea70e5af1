"""Build the execution loop for a parent order on a market configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from execrl.domain import ParentOrder, Side
from execrl.env.core import BatchedExecution
from execrl.env.rewards import Reward, make_reward
from execrl.env.spaces import ActionSet, resolve_action_set, resolve_observation_set
from execrl.sim.almgren_chriss import ACMarket, ACMarketConfig

#: One trading day in the AC paper's units; the default order is its 5-day sell of 1M shares.
DEFAULT_ORDER = ParentOrder(
    order_id="DEMO-1",
    symbol="DEMO",
    side=Side.SELL,
    qty=1_000_000,
    arrival_px=50.0,
    start_ts=0.0,
    horizon_s=5 * 23_400.0,
)


@dataclass(frozen=True)
class EnvConfig:
    """What an environment is made of: a market, what the policy sees and says, the reward."""

    market: ACMarketConfig = field(default_factory=ACMarketConfig)
    observations: str | tuple[str, ...] = "seed004"
    actions: str | ActionSet = "seed004"
    reward: str = "is_bps"


def market_for_order(market: ACMarketConfig, order: ParentOrder) -> ACMarketConfig:
    """The market with the order's horizon (in the market's time unit) and arrival price;
    a market and order whose numbers would not stay finite are refused by name
    (``ACMarketConfig.validate_for_order``)."""
    update = {"horizon": order.horizon / market.time_unit_s}
    if order.arrival_px is not None:
        update["s0"] = order.arrival_px
    for_order = ACMarketConfig.from_dict({**market.model_dump(), **update})
    for_order.validate_for_order(order.qty)
    return for_order


def reward_for_market(name: str, market: ACMarketConfig) -> Reward:
    """The reward ``name`` with the market's constants (λ, η/τ)."""
    return make_reward(name, market.risk_aversion, market.eta / market.tau)


def risk_var_per_share2(market: ACMarketConfig) -> float:
    """σ_eff²·τ: the price variance one held share adds per step (the risk term's scale)."""
    return market.sigma_eff**2 * market.tau


def make_execution(
    config: EnvConfig,
    order: ParentOrder = DEFAULT_ORDER,
    n_envs: int = 1,
    autoreset: bool = True,
) -> BatchedExecution:
    market_config = market_for_order(config.market, order)
    market = ACMarket(market_config, n_envs=n_envs, side=order.side.sign)
    return BatchedExecution(
        market,
        qty=order.qty,
        side=order.side.sign,
        observations=resolve_observation_set(config.observations),
        action_set=resolve_action_set(config.actions),
        reward=reward_for_market(config.reward, market_config),
        constraints=order.constraints,
        autoreset=autoreset,
        risk_var_per_share2=risk_var_per_share2(market_config),
    )
