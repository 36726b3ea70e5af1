"""Venues: where the loop's child orders go, behind the market protocol (``sim.base``).

- ``simulated``: the market itself (the Almgren–Chriss market, the order book, a replay):
  backtests. The market the core is built on is the venue; nothing wraps it.
- ``ShadowVenue`` (seed 000 ``ShadowExecutor``, seed 002 shadow mode): the policy runs on the
  market data it is fed and nothing is sent; the venue records every child order it *would*
  have sent, and its fills are counterfactual, computed by the wrapped market from that same
  data (a replay without impact: the tape as it was). An RL policy runs in shadow beside the
  live TWAP on the same data (``execrl shadow``).
- ``service.paper.StreamFeed``: a venue factory (``Executor.run(venue=feed)``) whose paper
  market fills against the market-data stream with the backtest's fill and queue models.
- ``BrokerAdapter``: what a broker connection implements (send, cancel, fills); ``PaperBroker``
  is the paper-trading one, which fills against a simulated or replayed market and keeps the
  wire log of seed 001 §9.1's child-order commands. ``BrokerVenue`` puts any adapter behind
  the market protocol, so the loop cannot tell paper from live.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from execrl.sim.base import ORDER_TYPE_CODES, BatchedMarket, ChildOrderBatch, FillBatch

VENUES = ("simulated", "shadow", "paper")
_TYPE_NAMES = {code: t.value for t, code in ORDER_TYPE_CODES.items()}


def child_commands(
    orders: ChildOrderBatch, active: NDArray[np.bool_], step_ms: float, parent_ids: list[str],
    venue: str,
) -> list[dict[str, Any]]:
    """Seed 001 §9.1's child-order commands for the orders of a step (a cancel of the working
    order is a command of its own)."""
    out: list[dict[str, Any]] = []
    for i in np.flatnonzero(active & ((orders.qty > 0) | orders.cancel)):
        if orders.cancel[i]:
            out.append({"parent_id": parent_ids[i], "type": "cancel", "venue": venue})
        if orders.qty[i] > 0:
            px = float(orders.limit_px[i])
            out.append({
                "parent_id": parent_ids[i],
                "child_id": int(orders.child_id[i]),
                "type": _TYPE_NAMES[int(orders.order_type[i])],
                "qty": int(orders.qty[i]),
                "px": None if np.isnan(px) else round(px, 10),
                "ttl_ms": int(orders.ttl_steps[i] * step_ms),
                "venue": venue,
            })
    return out


class _Wrapped:
    """Delegates the market protocol to ``inner``; subclasses intercept ``execute``."""

    def __init__(self, inner: BatchedMarket):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # the protocol's properties, named so that attribute lookup never misses them
    @property
    def mid(self) -> NDArray[np.float64]:
        return self.inner.mid

    @property
    def arrival_mid(self) -> NDArray[np.float64]:
        return self.inner.arrival_mid

    @property
    def arrival_vwap(self) -> NDArray[np.float64]:
        return self.inner.arrival_vwap

    @property
    def interval_vwap(self) -> NDArray[np.float64]:
        return self.inner.interval_vwap


class ShadowVenue(_Wrapped):
    """Sends nothing: records what would have been sent (``would_have_sent``, seed 001 §9.1
    commands) and answers with the counterfactual fills of the wrapped market."""

    name = "shadow"

    def __init__(self, inner: BatchedMarket, parent_ids: list[str], step_ms: float):
        super().__init__(inner)
        self.parent_ids = parent_ids
        self.step_ms = step_ms
        self.would_have_sent: list[dict[str, Any]] = []

    def execute(
        self, orders: ChildOrderBatch, active: NDArray[np.bool_], record_events: bool = False
    ) -> FillBatch:
        self.would_have_sent += child_commands(orders, active, self.step_ms, self.parent_ids,
                                               self.name)
        return self.inner.execute(orders, active, record_events)


class BrokerAdapter(Protocol):
    """A connection to a broker or an exchange gateway, one step at a time: ``send`` the
    step's child orders (and cancels), get back the step's fills. A live adapter maps this onto
    its FIX / REST session; the paper one fills against a market."""

    def send(self, orders: ChildOrderBatch, active: NDArray[np.bool_]) -> None: ...

    def fills(self, record_events: bool) -> FillBatch: ...


class PaperBroker:
    """Paper trading: child orders are matched against ``exchange`` (a simulated or replayed
    market, its book and its tape), and every command is kept in ``wire`` as it would have
    gone out."""

    name = "paper"

    def __init__(self, exchange: BatchedMarket, parent_ids: list[str], step_ms: float):
        self.exchange = exchange
        self.parent_ids = parent_ids
        self.step_ms = step_ms
        self.wire: list[dict[str, Any]] = []
        self._pending: tuple[ChildOrderBatch, NDArray[np.bool_]] | None = None

    def send(self, orders: ChildOrderBatch, active: NDArray[np.bool_]) -> None:
        self.wire += child_commands(orders, active, self.step_ms, self.parent_ids, self.name)
        self._pending = (orders, active)

    def fills(self, record_events: bool) -> FillBatch:
        if self._pending is None:
            raise RuntimeError("PaperBroker.fills before send")
        orders, active = self._pending
        self._pending = None
        return self.exchange.execute(orders, active, record_events)


class BrokerVenue(_Wrapped):
    """A broker adapter behind the market protocol: market data from ``feed`` (the market the
    adapter trades in, for paper), orders and fills through ``adapter``."""

    def __init__(self, feed: BatchedMarket, adapter: BrokerAdapter):
        super().__init__(feed)
        self.adapter = adapter

    @property
    def name(self) -> str:
        return str(getattr(self.adapter, "name", "broker"))

    def execute(
        self, orders: ChildOrderBatch, active: NDArray[np.bool_], record_events: bool = False
    ) -> FillBatch:
        self.adapter.send(orders, active)
        return self.adapter.fills(record_events)


def wrap_venue(kind: Any, market: BatchedMarket, parent_ids: list[str], step_ms: float) -> Any:
    """The venue ``kind`` (``VENUES``) over a built market; or ``kind(market, parent_ids,
    step_ms)`` for a venue factory (``service.paper.StreamFeed``: paper fills against the
    market-data stream, named by its ``name``)."""
    if callable(kind):
        return kind(market, parent_ids, step_ms)
    if kind == "simulated":
        return market
    if kind == "shadow":
        return ShadowVenue(market, parent_ids, step_ms)
    if kind == "paper":
        return BrokerVenue(market, PaperBroker(market, parent_ids, step_ms))
    raise ValueError(f"venue {kind!r} is unknown; choose from {', '.join(VENUES)}")


def sent_commands(venue: Any) -> list[dict[str, Any]]:
    """The child-order commands a shadow or paper venue recorded ([] for a simulated one)."""
    if isinstance(venue, ShadowVenue):
        return venue.would_have_sent
    if isinstance(venue, BrokerVenue):
        return list(getattr(venue.adapter, "wire", []))
    return []


__all__ = [
    "VENUES",
    "BrokerAdapter",
    "BrokerVenue",
    "PaperBroker",
    "ShadowVenue",
    "child_commands",
    "sent_commands",
    "wrap_venue",
]
