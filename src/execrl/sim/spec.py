"""One market protocol for configuration: the market-specification union.

A market specification is a validated configuration that names its model (``model``:
``almgren_chriss``, ``lob``, ``replay``) and knows everything the layers above
need from it, so that a new market is one new module registered in ``market_models()``, not edits
across the environment, the policies and the evaluation:

- ``for_order(order)``: the specification with the order's horizon and arrival price, refused
  by name where the two would not stay finite;
- ``build(n_envs, side)``: its batched market (``execrl.sim.base.BatchedMarket``);
- ``knowledge()``: what a policy may know before it trades (``MarketKnowledge``);
- ``risk_aversion`` and ``risk_var_per_share2()``: the mean-variance objective's λ and the
  price variance one held share adds per step (the risk scale of rewards and reports);
- ``temp_impact_per_share()``: the temporary impact a reward may penalise (0 where unknown);
- ``expected_volumes()``: the expected market volume of each step (participation limits);
- ``closed_forms(qty, side, policies, step_limits)``: exact results where the model has them;
- ``to_results(qty, side)``: its parameters for ``results.json``;
- ``baselines``: the rule-based policies evaluated by default on it;
- ``default_order()``: the order run when none is given, sized for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ValidationError

from execrl.domain import ConfigError, ParentOrder
from execrl.domain.errors import describe_pydantic_error, shown_value

if TYPE_CHECKING:
    from execrl.sim.almgren_chriss import ACMarketConfig, SignalConfig
    from execrl.sim.base import BatchedMarket


@dataclass(frozen=True)
class MarketKnowledge:
    """What a policy may know about the market before it trades (``PolicyContext.market``)."""

    n_steps: int
    """Decisions over the horizon."""
    volume_weights: NDArray[np.float64]
    """Expected share of the horizon's market volume in each step (sums to 1)."""
    cost_model: ACMarketConfig | None
    """An Almgren–Chriss cost model to plan with: the market itself for the AC market, one
    estimated from the book for an order-book market, None where there is none."""

    @property
    def signal(self) -> SignalConfig | None:
        return None if self.cost_model is None else self.cost_model.signal

    def require_cost_model(self, policy: str) -> ACMarketConfig:
        if self.cost_model is None:
            raise ConfigError(f"policy {policy!r} needs a cost model, which this market lacks")
        return self.cost_model


class SpecModel(BaseModel):
    """The base of every market specification's pydantic model: ``from_dict`` validates and
    turns a validation error into one ``ConfigError`` line naming the field and the value."""

    @classmethod
    def from_dict(cls, data: Any, what: str = "market config") -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_pydantic_error(what, exc)) from None


class MarketSpec(Protocol):
    """A market specification (module docstring)."""

    model: str
    n_steps: int
    s0: float
    risk_aversion: float

    @property
    def baselines(self) -> tuple[str, ...]:
        """The rule-based policies `execrl evaluate` runs by default on this market."""
        ...

    def default_order(self) -> ParentOrder:
        """The parent order run when the user gives none, sized for this market."""
        ...

    def for_order(self, order: ParentOrder) -> MarketSpec: ...

    def build(self, n_envs: int, side: int) -> BatchedMarket: ...

    def knowledge(self) -> MarketKnowledge: ...

    def risk_var_per_share2(self) -> float: ...

    def temp_impact_per_share(self) -> float: ...

    def expected_volumes(self) -> NDArray[np.float64]: ...

    def closed_forms(
        self, qty: int, side: int, policies: list[str], step_limits: NDArray[np.int64] | None
    ) -> dict[str, Any]: ...

    def to_results(self, qty: int, side: str) -> dict[str, Any]: ...

    def model_dump(self, **kwargs: Any) -> dict[str, Any]: ...


def market_models() -> dict[str, type]:
    """``model`` name -> specification class: every market execrl can build."""
    from execrl.sim.almgren_chriss import ACMarketConfig
    from execrl.sim.lob_config import LOBMarketConfig
    from execrl.sim.replay import ReplayMarketConfig

    return {"almgren_chriss": ACMarketConfig, "lob": LOBMarketConfig,
            "replay": ReplayMarketConfig}


def parse_market(data: Any, what: str = "market config") -> MarketSpec:
    """Validate a decoded market configuration through the class its ``model`` names
    (``almgren_chriss`` when absent); errors name the field and the value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(data).__name__}")
    models = market_models()
    model = data.get("model", "almgren_chriss")
    if not isinstance(model, str) or model not in models:
        raise ConfigError(
            f"{what} field 'model' = {shown_value(model)} is not valid: choose from "
            f"{', '.join(models)}"
        )
    return models[model].from_dict(data, what)
