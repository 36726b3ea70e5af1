"""Observation sets and action sets: what a policy sees and what it may say.

An observation is a float32 vector of named features. ``remaining_ratio`` and
``elapsed_ratio`` come from the order; the others from the market (a market that lacks one is
refused by name). Features are scaled to O(1) so that networks need no normaliser.

An action is a fraction of the remaining quantity, from a discrete set or continuous in
[0, 1]; ``fraction_to_shares`` turns it into whole shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from execrl.domain import ConfigError
from execrl.market.observations import OBSERVATION_FEATURES

#: feature -> what it is (for --help and the docs); the table is the market layer's
FEATURES: dict[str, str] = {name: f.description for name, f in OBSERVATION_FEATURES.items()}

OBSERVATION_SETS: dict[str, tuple[str, ...]] = {
    # seed 004's state: remaining, time, price drift from arrival, volatility
    "seed004": ("remaining_ratio", "elapsed_ratio", "price_drift", "volatility"),
    # seed 004's plus the alpha signal (markets with a signal)
    "signal": ("remaining_ratio", "elapsed_ratio", "price_drift", "volatility", "signal"),
    # everything the AC market provides, for baselines that need volume
    "full": (
        "remaining_ratio",
        "elapsed_ratio",
        "price_drift",
        "volatility",
        "spread",
        "last_volume_ratio",
        "expected_volume_ratio",
    ),
}


def resolve_observation_set(spec: str | tuple[str, ...]) -> tuple[str, ...]:
    """A named set or an explicit tuple of feature names, checked against ``FEATURES``."""
    if isinstance(spec, str):
        if spec not in OBSERVATION_SETS:
            raise ConfigError(
                f"observation set {spec!r} is unknown; choose from {', '.join(OBSERVATION_SETS)}"
            )
        return OBSERVATION_SETS[spec]
    names = tuple(spec)
    for name in names:
        if name not in FEATURES:
            raise ConfigError(
                f"observation feature {name!r} is unknown; known: {', '.join(FEATURES)}"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"observation features {names!r} repeat a name")
    return names


@dataclass(frozen=True)
class ActionSet:
    """Fractions of the remaining quantity a policy may choose, each in [0, 1] (checked);
    ``fractions=None``: continuous."""

    name: str
    fractions: tuple[float, ...] | None
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.fractions is None:
            return
        if len(self.fractions) == 0:
            raise ConfigError(f"action set {self.name!r}: 'fractions' is empty")
        for f in self.fractions:
            if not (isinstance(f, Real) and math.isfinite(f) and 0.0 <= f <= 1.0):
                raise ConfigError(
                    f"action set {self.name!r}: fraction {f!r} must be a number in [0, 1]"
                )

    @property
    def is_discrete(self) -> bool:
        return self.fractions is not None

    @property
    def n_actions(self) -> int:
        return len(self.fractions) if self.fractions is not None else 0

    def space(self) -> spaces.Space:
        if self.fractions is None:
            return spaces.Box(low=0.0, high=1.0, shape=(1,), dtype=np.float32)
        return spaces.Discrete(len(self.fractions))

    def to_fraction(self, actions: NDArray) -> NDArray[np.float64]:
        """Batched actions (n,) or (n, 1) -> fraction of remaining in [0, 1], shape (n,)."""
        a = np.asarray(actions)
        if self.fractions is None:
            fraction = a.reshape(a.shape[0], -1)[:, 0].astype(np.float64)
            if not np.isfinite(fraction).all():
                bad = fraction[~np.isfinite(fraction)][0]
                raise ValueError(f"continuous action {bad!r} is not a finite fraction")
            return np.clip(fraction, 0.0, 1.0)
        idx = a.reshape(-1).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.fractions)):
            bad = idx[(idx < 0) | (idx >= len(self.fractions))][0]
            last = len(self.fractions) - 1
            raise ValueError(f"action {int(bad)} is outside action set {self.name!r} (0..{last})")
        return np.asarray(self.fractions)[idx]


ACTION_SETS: dict[str, ActionSet] = {
    # seed 004: fractions of the remaining quantity
    "seed004": ActionSet("seed004", (0.05, 0.10, 0.15, 0.25, 0.50)),
    # seed 003: Wait / PlaceSmall / PlaceMedium / PlaceLarge / PlaceAll
    "seed003": ActionSet(
        "seed003", (0.0, 0.10, 0.25, 0.50, 1.0), ("wait", "small", "medium", "large", "all")
    ),
    # a finer grid, for markets where the best schedule reacts strongly (the alpha signal):
    # rounding the exact signal-aware optimum to it keeps ~94 % of its gain (seed004: ~80 %)
    "fine": ActionSet(
        "fine", (0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.33, 0.50, 0.67, 0.85, 1.0)
    ),
    "continuous": ActionSet("continuous", None),
}


def resolve_action_set(spec: str | ActionSet) -> ActionSet:
    if isinstance(spec, ActionSet):
        return spec
    if spec not in ACTION_SETS:
        raise ConfigError(f"action set {spec!r} is unknown; choose from {', '.join(ACTION_SETS)}")
    return ACTION_SETS[spec]


def fraction_to_shares(
    fraction: NDArray[np.float64], remaining: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Whole shares for a fraction of what remains: rounded, at least one share when the
    fraction is positive (seed 004), never more than what remains."""
    shares = np.rint(fraction * remaining).astype(np.int64)
    shares = np.where((shares == 0) & (fraction > 0), 1, shares)
    return np.minimum(shares, remaining)
