"""Domain types shared by every layer: orders, fills, sides and the IS arithmetic."""

from execrl.domain.costs import implementation_shortfall_bps, vwap
from execrl.domain.errors import ConfigError, ExecRLError, OrderValidationError
from execrl.domain.orders import (
    ChildOrder,
    Fill,
    OrderConstraints,
    OrderType,
    ParentOrder,
    Side,
)

__all__ = [
    "ChildOrder",
    "ConfigError",
    "ExecRLError",
    "Fill",
    "OrderConstraints",
    "OrderType",
    "OrderValidationError",
    "ParentOrder",
    "Side",
    "implementation_shortfall_bps",
    "vwap",
]
