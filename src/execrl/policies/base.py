"""The policy interface: batched observations and masks in, actions out.

A policy is a pure function of what it is shown; everything it needs to know about the
order and the market it is given once, at construction, as a ``PolicyContext``. It names the
observation features and the action set it speaks, so the environment it runs in is built
to match: baselines and learned policies run through the same loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from execrl.sim.spec import MarketKnowledge


@dataclass(frozen=True)
class PolicyContext:
    """The order and what a policy may know of the market (with the order's horizon and
    arrival price)."""

    market: MarketKnowledge
    qty: int
    side: int


@runtime_checkable
class Policy(Protocol):
    name: str
    observations: tuple[str, ...]
    action_set: str

    def act(
        self, observations: NDArray[np.float32], masks: NDArray[np.bool_] | None = None
    ) -> NDArray:
        """Actions for a batch: (n, n_features) -> (n,) discrete or (n, 1) continuous."""
        ...


class FeatureIndex:
    """Column lookup by feature name, so a policy never hard-codes positions."""

    def __init__(self, names: tuple[str, ...]):
        self._pos = {name: j for j, name in enumerate(names)}

    def __call__(self, obs: NDArray[np.float32], name: str) -> NDArray[np.float64]:
        return obs[:, self._pos[name]].astype(np.float64)

    def position(self, name: str) -> int:
        """The column of feature ``name``."""
        return self._pos[name]
