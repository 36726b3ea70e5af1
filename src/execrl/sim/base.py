"""The protocol every simulator implements, batched over ``n_envs`` independent markets.

One call of ``execute`` is one decision step for every market at once. The child-order batch
already carries what an order-book market needs (type, limit price, time to live), so the
Almgren–Chriss market, the stochastic order book and the historical replay sit behind the
same environment; a market refuses the order types it cannot fill, by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from execrl.domain import OrderType

ORDER_TYPE_CODES: dict[OrderType, int] = {t: i for i, t in enumerate(OrderType)}


@dataclass(slots=True)
class ChildOrderBatch:
    """At most one new child order per market per step; ``qty == 0`` means none."""

    qty: NDArray[np.int64]
    order_type: NDArray[np.int8]
    limit_px: NDArray[np.float64]  # NaN for market orders
    ttl_steps: NDArray[np.int32]  # steps a passive order may rest; 0 = immediate-or-cancel

    @classmethod
    def market_orders(cls, n_envs: int) -> ChildOrderBatch:
        return cls(
            qty=np.zeros(n_envs, dtype=np.int64),
            order_type=np.full(n_envs, ORDER_TYPE_CODES[OrderType.MARKET], dtype=np.int8),
            limit_px=np.full(n_envs, np.nan),
            ttl_steps=np.zeros(n_envs, dtype=np.int32),
        )


@dataclass(slots=True)
class FillBatch:
    """What traded in the step, per market: shares and their average price (NaN if none)."""

    qty: NDArray[np.int64]
    avg_px: NDArray[np.float64]


class BatchedMarket(Protocol):
    """A batch of independent markets that one parent order (per market) trades against.

    Randomness: ``reset`` draws every episode's market path from the generator it is given,
    before any order is seen, so two policies reset with the same seed meet the same paths
    (common random numbers) whatever they trade.
    """

    n_envs: int
    n_steps: int
    available_features: tuple[str, ...]

    @property
    def mid(self) -> NDArray[np.float64]: ...

    @property
    def arrival_mid(self) -> NDArray[np.float64]: ...

    def reset(self, rng: np.random.Generator, env_ids: NDArray[np.intp] | None = None) -> None:
        """Start new episodes in ``env_ids`` (all when None), drawing their paths from ``rng``."""

    def execute(self, orders: ChildOrderBatch, active: NDArray[np.bool_]) -> FillBatch:
        """Advance the ``active`` markets one step with ``orders``; inactive ones stay put."""

    def feature(self, name: str) -> NDArray[np.float64]:
        """The current value of a market feature named in ``available_features``."""
