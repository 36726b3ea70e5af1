"""The observation features a policy can be shown, in one table: what each one is, where it
comes from (the parent order's state, or a market feature) and how it is scaled to O(1).

Environments build observations from this table (``execrl.env.core``), the decision log names
its columns from it (``execrl.evaluate.decisions``), and ``--help`` and the docs describe them
from it. A market offers market features by name (``BatchedMarket.available_features``); an
observation feature whose source a market lacks is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObservationFeature:
    """One observation feature: its meaning, source and scale."""

    description: str
    source: str | None
    """The market feature it reads; None: computed from the parent order's own state."""
    per_parent_qty: bool = False
    """Divided by the parent order's quantity (volumes)."""
    scale: float = 1.0


OBSERVATION_FEATURES: dict[str, ObservationFeature] = {
    "remaining_ratio": ObservationFeature("shares left / parent quantity (1 -> 0)", None),
    "elapsed_ratio": ObservationFeature(
        "decision steps done / steps in the horizon (0 -> 1)", None),
    "price_drift": ObservationFeature(
        "(mid - arrival mid) in units of the horizon's price volatility", "price_drift"),
    "volatility": ObservationFeature("volatility regime multiplier (1 = calm)", "volatility"),
    "spread": ObservationFeature("quoted spread in bps / 100", "spread_bps", scale=0.01),
    "signal": ObservationFeature("observed alpha signal in units of its stationary std",
                                 "signal"),
    "last_volume_ratio": ObservationFeature(
        "market volume of the last step / parent quantity", "last_volume", per_parent_qty=True),
    "expected_volume_ratio": ObservationFeature(
        "expected market volume of the coming step / parent quantity", "expected_volume",
        per_parent_qty=True),
}

#: observation features computed from the parent order's state
ORDER_FEATURES: tuple[str, ...] = tuple(
    name for name, f in OBSERVATION_FEATURES.items() if f.source is None
)
