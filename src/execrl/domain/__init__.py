"""Domain types shared by every layer: orders, fills, sides and the IS arithmetic."""

from execrl.domain.costs import implementation_shortfall_bps, vwap
from execrl.domain.errors import ConfigError, DataError, ExecRLError, OrderValidationError
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
    "DataError",
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
