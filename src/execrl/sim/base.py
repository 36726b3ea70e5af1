"""The protocol every market implements, batched over ``n_envs`` independent markets.

One call of ``execute`` is one decision step for every market at once. Per step and market,
the execution core sends at most one new child order (quantity, type, limit price on the
market's tick grid, time to live) and may cancel the order still working; the market answers
with every fill of the step (of the new order and of resting ones), the passive part of it,
fees or rebates, the quantity still working, and a per-market reject with its reason: a
market refuses what it cannot do by name, in that market alone, without failing the batch.
The Almgren–Chriss market, the stochastic order book and the historical replay all sit
behind this one protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from execrl.domain import OrderType
from execrl.market.events import FILL_DTYPE

ORDER_TYPE_CODES: dict[OrderType, int] = {t: i for i, t in enumerate(OrderType)}

#: Why a market refused a child order (``FillBatch.reject``); code 0 = accepted.
REJECT_REASONS: tuple[str, ...] = (
    "",
    "order type not supported by this market",
    "limit price off the market's tick grid",
    "no limit price for a limit order",
    "quantity above what the order has left to send",
    "an order already works in this market (cancel it first)",
    "limit price outside the simulated book window",
)
REJECT_NONE, REJECT_ORDER_TYPE, REJECT_OFF_TICK, REJECT_NO_PRICE, REJECT_QTY = range(5)
REJECT_WORKING = 5
REJECT_OUTSIDE_BOOK = 6

#: One row per fill, for the audit trail and the feature builder: the market layer's
#: ``FILL_DTYPE`` (environment, child order id, time, shares, price, passive flag, fee).
FILL_EVENT_DTYPE = FILL_DTYPE


def reject_reason(code: int) -> str:
    """The reason a reject code stands for."""
    return REJECT_REASONS[int(code)]


# -- the kernels' view --------------------------------------------------------------------------
# A compiled kernel takes a batch as one named tuple and reads its arrays by name
# (``o.qty[i]``): a kernel handed the wrong structure fails to compile (numba: unknown
# attribute), where two swapped positional arrays of the same type would run, wrong.
class OrderArrays(NamedTuple):
    """``ChildOrderBatch``'s arrays (the same objects)."""

    qty: NDArray[np.int64]
    order_type: NDArray[np.int8]
    limit_px: NDArray[np.float64]
    ttl_steps: NDArray[np.int32]
    cancel: NDArray[np.bool_]
    child_id: NDArray[np.int64]


class FillArrays(NamedTuple):
    """``FillBatch``'s arrays the kernels book (the same objects)."""

    qty: NDArray[np.int64]
    avg_px: NDArray[np.float64]
    n_fills: NDArray[np.int32]
    working_qty: NDArray[np.int64]
    cancelled_qty: NDArray[np.int64]
    reject: NDArray[np.int8]


@dataclass(slots=True)
class ChildOrderBatch:
    """At most one new child order per market per step (``qty == 0``: none), and whether to
    cancel the order still working there first."""

    qty: NDArray[np.int64]
    order_type: NDArray[np.int8]
    limit_px: NDArray[np.float64]  # NaN for market orders
    # steps a passive order may rest; 0 = immediate-or-cancel. Sent in step k with ttl m, it
    # rests in steps k .. k+m-1 and is cancelled at the end of step k+m-1 (that step's
    # FillBatch shows it in cancelled_qty, working_qty 0)
    ttl_steps: NDArray[np.int32]
    cancel: NDArray[np.bool_]  # cancel the working order before the new one
    child_id: NDArray[np.int64]  # the new order's id within its parent order

    def arrays(self) -> OrderArrays:
        """The batch's arrays as the compiled kernels take them, by name (``OrderArrays``)."""
        return OrderArrays(self.qty, self.order_type, self.limit_px, self.ttl_steps,
                           self.cancel, self.child_id)

    @classmethod
    def market_orders(cls, n_envs: int) -> ChildOrderBatch:
        return cls(
            qty=np.zeros(n_envs, dtype=np.int64),
            order_type=np.full(n_envs, ORDER_TYPE_CODES[OrderType.MARKET], dtype=np.int8),
            limit_px=np.full(n_envs, np.nan),
            ttl_steps=np.zeros(n_envs, dtype=np.int32),
            cancel=np.zeros(n_envs, dtype=bool),
            child_id=np.zeros(n_envs, dtype=np.int64),
        )


@dataclass(slots=True)
class FillBatch:
    """What happened in the step, per market."""

    qty: NDArray[np.int64]  # every share filled (new and resting orders)
    avg_px: NDArray[np.float64]  # their average price, NaN if none
    passive_qty: NDArray[np.int64]  # of ``qty``, what filled while resting
    fees: NDArray[np.float64]  # currency; negative = rebates
    n_fills: NDArray[np.int32]  # fill events
    working_qty: NDArray[np.int64]  # still resting after the step
    cancelled_qty: NDArray[np.int64]  # taken off the book by a cancel
    reject: NDArray[np.int8]  # REJECT_* code of the new child order, 0 = accepted
    events: NDArray | None = None  # FILL_EVENT_DTYPE rows, when asked for

    def arrays(self) -> FillArrays:
        """The fills as the compiled kernels take them, by name (``FillArrays``)."""
        return FillArrays(self.qty, self.avg_px, self.n_fills, self.working_qty,
                          self.cancelled_qty, self.reject)

    def fill_events(self, child_id: NDArray[np.int64], t: NDArray) -> NDArray:
        """``FILL_EVENT_DTYPE`` rows of a market where each order fills at most once a step;
        ``t``: each market's fill time in seconds."""
        envs = np.flatnonzero(self.qty > 0)
        events = np.empty(envs.size, dtype=FILL_EVENT_DTYPE)
        events["env"] = envs
        events["child_id"] = child_id[envs]
        events["t"] = t[envs]
        events["qty"] = self.qty[envs]
        events["px"] = self.avg_px[envs]
        events["passive"] = False
        events["fee"] = self.fees[envs]
        return events


class BatchedMarket(Protocol):
    """A batch of independent markets that one parent order (per market) trades against.

    Randomness: ``reset`` draws what it needs from the generator it is given, keyed so that
    two policies reset with the same seed meet the same market (common random numbers)
    whatever they trade.
    """

    n_envs: int
    n_steps: int
    tick_size: float  # the price grid of limit orders; 0.0 = continuous prices
    available_features: tuple[str, ...]

    @property
    def mid(self) -> NDArray[np.float64]: ...

    @property
    def arrival_mid(self) -> NDArray[np.float64]: ...

    @property
    def arrival_vwap(self) -> NDArray[np.float64]:
        """The market VWAP before the order arrived (seed 000's benchmark)."""

    @property
    def interval_vwap(self) -> NDArray[np.float64]:
        """The market VWAP over the order's steps so far."""

    def reset(self, rng: np.random.Generator, env_ids: NDArray[np.intp] | None = None) -> None:
        """Start new episodes in ``env_ids`` (all when None), drawing their paths from ``rng``."""

    def execute(
        self, orders: ChildOrderBatch, active: NDArray[np.bool_], record_events: bool = False
    ) -> FillBatch:
        """Advance the ``active`` markets one step with ``orders``; inactive ones stay put.
        With ``record_events``, ``FillBatch.events`` holds one row per fill."""

    def expected_mid_change(
        self, shares: NDArray[np.int64], orders: ChildOrderBatch | None = None
    ) -> NDArray[np.float64]:
        """E[mid change of the coming step | trading ``shares`` now], where the market knows
        its dynamics (the ``expected_cost`` reward); a market that does not raises.
        ``orders`` (the step's child orders) lets a market with a book count only what
        crosses; markets that fill every share at once ignore it."""

    def feature(self, name: str) -> NDArray[np.float64]:
        """The current value of a market feature named in ``available_features``."""
