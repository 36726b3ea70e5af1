"""Guard-gated exploration on a non-critical axis (seed 001 §6 "safe exploration": epsilon
only on non-critical axes such as the wait time, gated by the guard), so that logged
decisions carry known propensities for off-policy evaluation (IPS / WIS / DR, seed 001 §7).

Only a factored action set (``ActionSet.factors``: seed 001's size × aggression × wait ×
type) has axes to choose from; exploring changes one sub-action (by default the wait) to
another value the mask allows, everything else (how much, how aggressively) stays the
policy's. The propensity of the action taken is logged with the decision:

    p(taken) = (1 − ε) · [taken = the policy's] + ε / (allowed values on the axis)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError


@dataclass(frozen=True)
class Exploration:
    """ε-exploration of one factor of a factored action set (the wait time by default)."""

    epsilon: float
    axis: str = "wait"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"exploration epsilon = {self.epsilon!r} must be in [0, 1]")


#: the factor names of seed 001's factored set, in ``ActionSet.factors`` order
FACTOR_NAMES = ("size", "aggression", "wait", "type")
#: the axes exploring may change: those that do not decide how much or how aggressively
NON_CRITICAL = ("wait",)


class Explorer:
    """Applies an ``Exploration`` to a batch of flat actions of ``action_set``."""

    def __init__(self, exploration: Exploration, action_set: object):
        factors = tuple(getattr(action_set, "factors", ()) or ())
        name = getattr(action_set, "name", "?")
        if not factors or len(factors) != len(FACTOR_NAMES):
            raise ConfigError(f"exploration needs a factored action set (seed001); "
                              f"{name!r} has no non-critical axis to explore")
        if exploration.axis not in NON_CRITICAL:
            raise ConfigError(f"exploration axis {exploration.axis!r} decides how much or how "
                              f"aggressively to trade; explore only {', '.join(NON_CRITICAL)}")
        self.exploration = exploration
        self.factors = factors
        self.axis = FACTOR_NAMES.index(exploration.axis)
        self.rng = np.random.default_rng(exploration.seed)

    def __call__(self, actions: NDArray[np.int64], masks: NDArray[np.bool_] | None
                 ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(actions taken, their propensities) for the policy's flat ``actions``."""
        eps = self.exploration.epsilon
        n = actions.shape[0]
        subs = np.array(np.unravel_index(actions, self.factors)).T  # (n, factors)
        size = self.factors[self.axis]
        # every value of the axis, the rest of each action kept: (n, size) flat candidates
        cand = np.repeat(subs[:, None, :], size, axis=1)
        cand[:, :, self.axis] = np.arange(size)
        flat = np.ravel_multi_index(tuple(cand.reshape(-1, len(self.factors)).T),
                                    self.factors).reshape(n, size)
        allowed = np.ones((n, size), dtype=bool) if masks is None else np.take_along_axis(
            masks, flat, axis=1)
        allowed[np.arange(n), subs[:, self.axis]] = True  # the policy's own stays possible
        n_allowed = allowed.sum(axis=1)
        explore = self.rng.random(n) < eps
        # a uniform pick among the allowed values
        u = self.rng.random(n)
        pick = np.minimum((u * n_allowed).astype(np.int64), n_allowed - 1)
        order = np.cumsum(allowed, axis=1) - 1
        chosen = np.argmax((order == pick[:, None]) & allowed, axis=1)
        taken = np.where(explore, flat[np.arange(n), chosen], actions)
        greedy = taken == actions
        propensity = np.where(greedy, 1.0 - eps, 0.0) + eps / n_allowed
        return taken.astype(np.int64), propensity
