"""Market simulators behind one batched protocol (``execrl.sim.base.BatchedMarket``)."""

from execrl.sim.almgren_chriss import ACMarket, ACMarketConfig, SignalConfig
from execrl.sim.base import BatchedMarket, ChildOrderBatch, FillBatch

__all__ = [
    "ACMarket",
    "ACMarketConfig",
    "BatchedMarket",
    "ChildOrderBatch",
    "FillBatch",
    "SignalConfig",
]
