"""Observation sets and action sets: what a policy sees and what it may say.

An observation is a float32 vector of named features. ``remaining_ratio`` and
``elapsed_ratio`` come from the order; the others from the market (a market that lacks one is
refused by name). Features are scaled to O(1) by fixed constants
(``market.observations``), so that networks need no normaliser; ``EnvConfig.normalise =
"online"`` adds seed 001 §5's online normaliser on top (``ObservationNormaliser``: z-scores
per spread bucket, learnt in training, frozen into the exported policy).

An action is a size and an order style. The size is a fraction of a base quantity (what
remains, or the base TWAP schedule's slice: seed 003's RL-enhanced executor times and sizes
the slices), from a discrete set or continuous in [0, 1]; ``fraction_to_shares`` turns it into
whole shares. The style (``OrderStyle``) says how the child order meets the book: a market
order, or a limit / marketable-limit / IOC order priced a number of ticks from the near or the
far touch, resting for some steps, and whether to cancel the working order first. Every
existing set sends market orders (all the Almgren–Chriss market can fill); the order-book sets
(seed 000's HOLD / PASSIVE / AGGRESSIVE, seed 001's factored head, seed 003's set with Cancel)
use the others.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from itertools import product
from numbers import Real
from typing import Literal

import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from execrl.domain import ConfigError, OrderType
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
    # seed 000's state on a book: remaining, elapsed, tick flow 10 s and 30 s, spread proxy
    "seed000": ("remaining_ratio", "elapsed_ratio", "tick_flow_10s", "tick_flow_30s", "spread"),
    # seed 001's: top-of-book and top-5 imbalance, depth, realised vol, queue position of the
    # working order, deviation from the TWAP trajectory
    "seed001": (
        "remaining_ratio",
        "elapsed_ratio",
        "twap_deviation",
        "working_ratio",
        "spread",
        "imbalance_1",
        "imbalance_5",
        "own_touch_ratio",
        "opposite_touch_ratio",
        "bid_depth_ratio",
        "ask_depth_ratio",
        "realised_vol",
        "queue_ahead_ratio",
        "tick_flow_10s",
    ),
    # seed 003's: spread, imbalance, time (its hour bucket: the horizon's elapsed ratio here),
    # queue depth at the touch, seconds since the last trade, recent fill rate, slippage of
    # the last fills
    "seed003": (
        "remaining_ratio",
        "elapsed_ratio",
        "spread",
        "imbalance_1",
        "queue_depth_ratio",
        "time_since_trade",
        "recent_fill_rate",
        "avg_slippage",
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
class OrderStyle:
    """How a child order meets the book.

    The limit price is ``ticks`` ticks from the ``anchor`` touch in the aggressive direction
    (a buy: best bid + ticks × tick for ``near``, best ask + ticks × tick for ``far``; a sell
    mirrored): seed 001's "post passive @ -2, -1, 0 ticks" is ``near`` with ticks -2…0, its
    "IOC @ +0, +1, +2" is ``far`` with ticks 0…2. ``ttl_steps``: decision steps a limit order
    may rest (0: until it fills, is cancelled or the horizon ends). ``cancel``: cancel the
    working order before sending (seed 003's Cancel). A new resting order replaces the working
    one (cancel / replace): at most one child order works per parent order.
    """

    order_type: OrderType = OrderType.MARKET
    anchor: Literal["near", "far"] = "near"
    ticks: int = 0
    ttl_steps: int = 0
    cancel: bool = False

    def __post_init__(self) -> None:
        if self.ttl_steps < 0:
            raise ConfigError(f"order style ttl_steps = {self.ttl_steps!r} must be >= 0")

    @property
    def rests(self) -> bool:
        """Whether what does not fill at once rests on the book."""
        return self.order_type in (OrderType.LIMIT, OrderType.MARKETABLE_LIMIT)

    @property
    def label(self) -> str:
        if self.order_type is OrderType.MARKET:
            return "market"
        ttl = f" {self.ttl_steps}st" if self.ttl_steps and self.rests else ""
        return f"{self.order_type.value}@{self.anchor}{self.ticks:+d}{ttl}"


MARKET_ORDER = OrderStyle()
CANCEL_ONLY = OrderStyle(cancel=True)


@dataclass(frozen=True)
class ActionSet:
    """What a policy may say: per discrete action a size (``fractions`` of the ``size_base``:
    in [0, 1] of what remains, in [0, 4] of the TWAP slice, i.e. what remains over the steps
    left) and an order style (``styles``, all market orders when empty);
    ``fractions=None``: continuous sizes, with the style given as a second action column
    (an index into ``styles``) when the set has several styles. ``factors``: the set is the
    product of these sub-actions, in C order (a multi-discrete head sees the factors)."""

    name: str
    fractions: tuple[float, ...] | None
    labels: tuple[str, ...] = ()
    styles: tuple[OrderStyle, ...] = ()
    size_base: Literal["remaining", "twap_slice"] = "remaining"
    factors: tuple[int, ...] = ()
    multi_discrete: bool = False
    """Show the set as a multi-discrete space of its factors (one head per factor); the
    core takes (n, len(factors)) actions. Masks stay flat, so masked algorithms use the
    flattened set."""

    def __post_init__(self) -> None:
        if self.fractions is None:
            return
        if len(self.fractions) == 0:
            raise ConfigError(f"action set {self.name!r}: 'fractions' is empty")
        top = 1.0 if self.size_base == "remaining" else 4.0
        for f in self.fractions:
            if not (isinstance(f, Real) and math.isfinite(f) and 0.0 <= f <= top):
                raise ConfigError(
                    f"action set {self.name!r}: fraction {f!r} must be a number in [0, {top:g}]"
                )
        if self.styles and len(self.styles) != len(self.fractions):
            raise ConfigError(
                f"action set {self.name!r}: {len(self.styles)} styles for "
                f"{len(self.fractions)} fractions"
            )
        if self.factors and math.prod(self.factors) != len(self.fractions):
            raise ConfigError(
                f"action set {self.name!r}: factors {self.factors} do not multiply to "
                f"{len(self.fractions)} actions"
            )

    @property
    def is_discrete(self) -> bool:
        return self.fractions is not None

    @property
    def n_actions(self) -> int:
        return len(self.fractions) if self.fractions is not None else 0

    @property
    def market_orders_only(self) -> bool:
        """Every action sends a market order (or nothing): what the AC market can fill."""
        return all(s.order_type is OrderType.MARKET for s in self.styles)

    def style_of(self, action: int) -> OrderStyle:
        return self.styles[action] if self.styles else MARKET_ORDER

    def space(self, multi_discrete: bool | None = None) -> spaces.Space:
        if self.fractions is None:
            width = 2 if len(self.styles) > 1 else 1
            high = np.array([1.0, max(len(self.styles) - 1, 0)][:width], dtype=np.float32)
            return spaces.Box(low=0.0, high=high, shape=(width,), dtype=np.float32)
        if multi_discrete is None:
            multi_discrete = self.multi_discrete
        if multi_discrete and self.factors:
            return spaces.MultiDiscrete(list(self.factors))
        return spaces.Discrete(len(self.fractions))

    def flat_actions(self, actions: NDArray) -> NDArray[np.int64]:
        """Multi-discrete actions (n, len(factors)) -> their index in the flattened set."""
        a = np.asarray(actions, dtype=np.int64)
        if not self.factors or a.ndim != 2 or a.shape[1] != len(self.factors):
            return a.reshape(-1)
        for j, size in enumerate(self.factors):
            bad = (a[:, j] < 0) | (a[:, j] >= size)
            if bad.any():
                raise ValueError(
                    f"sub-action {j} = {int(a[bad, j][0])} is outside action set "
                    f"{self.name!r} (0..{size - 1})"
                )
        return np.ravel_multi_index(tuple(a.T), self.factors).astype(np.int64)

    def to_fraction(self, actions: NDArray) -> NDArray[np.float64]:
        """Batched actions (n,) or (n, 1) -> fraction of the size base in [0, 1], shape (n,)."""
        a = np.asarray(actions)
        if self.fractions is None:
            fraction = a.reshape(a.shape[0], -1)[:, 0].astype(np.float64)
            if not np.isfinite(fraction).all():
                bad = fraction[~np.isfinite(fraction)][0]
                raise ValueError(f"continuous action {bad!r} is not a finite fraction")
            return np.clip(fraction, 0.0, 1.0)
        idx = self.flat_actions(a)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.fractions)):
            bad = idx[(idx < 0) | (idx >= len(self.fractions))][0]
            last = len(self.fractions) - 1
            raise ValueError(f"action {int(bad)} is outside action set {self.name!r} (0..{last})")
        return np.asarray(self.fractions)[idx]

    def to_style_index(self, actions: NDArray) -> NDArray[np.int64]:
        """Continuous actions with a style column -> the style index per env (0 without)."""
        a = np.asarray(actions)
        n = a.shape[0] if a.ndim else 1
        if len(self.styles) <= 1:
            return np.zeros(n, dtype=np.int64)
        cols = a.reshape(n, -1)
        if cols.shape[1] < 2:
            raise ValueError(f"action set {self.name!r} needs a style column (2 values a row)")
        style = cols[:, 1]
        if not np.isfinite(style).all() or (style < 0).any() or (style > len(self.styles) - 1
                                                                   ).any():
            bad = style[~(np.isfinite(style) & (style >= 0) & (style <= len(self.styles) - 1))]
            raise ValueError(
                f"style {bad[0]!r} is outside action set {self.name!r} "
                f"(0..{len(self.styles) - 1})"
            )
        return np.rint(style).astype(np.int64)


def _seed001() -> ActionSet:
    """Seed 001's factored head, flattened in C order: size (multiples of the TWAP slice:
    the seed's 0.25-2 % of what remains assume hundreds of decisions, here there are tens) x
    aggression (-2..+2 ticks: passive at the near touch for <= 0, crossing from the far touch
    for > 0) x wait (0/2/5/10 s as resting steps, at the default 5 s step: 0 = IOC) x type."""
    sizes = (0.5, 1.0, 1.5, 2.0)  # x the TWAP slice
    aggression = (-2, -1, 0, 1, 2)
    waits = (0, 1, 1, 2)  # ceil(wait / 5 s); 0 = no rest
    types = (OrderType.LIMIT, OrderType.MARKETABLE_LIMIT, OrderType.IOC)
    fractions, styles, labels = [], [], []
    for size, a, (w, wait), t in product(
        sizes, aggression, zip(waits, (0, 2, 5, 10), strict=True), types
    ):
        anchor: Literal["near", "far"] = "near" if a <= 0 else "far"
        ticks = a if a <= 0 else a - 1
        order_type = t
        if t is not OrderType.IOC and w == 0:
            order_type = OrderType.IOC  # no wait: nothing rests
        fractions.append(size)
        styles.append(OrderStyle(order_type, anchor, ticks, w))
        labels.append(f"{size:g}x/{a:+d}t/{wait}s/{t.value}")
    return ActionSet(
        "seed001", tuple(fractions), tuple(labels), tuple(styles), "twap_slice",
        (len(sizes), len(aggression), len(waits), len(types)),
    )


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
    # seed 000: HOLD / PASSIVE (limit at the near touch, resting one step) / AGGRESSIVE
    # (marketable limit at the far touch), each for the base TWAP schedule's slice
    "seed000": ActionSet(
        "seed000", (0.0, 1.0, 1.0), ("hold", "passive", "aggressive"),
        (MARKET_ORDER, OrderStyle(OrderType.LIMIT, "near", 0, 1),
         OrderStyle(OrderType.MARKETABLE_LIMIT, "far", 0, 1)),
        "twap_slice",
    ),
    # seed 003 on a book: Wait / Small / Medium / Large / All as limit orders at the near
    # touch (resting until cancelled), and Cancel
    "seed003lob": ActionSet(
        "seed003lob", (0.0, 0.10, 0.25, 0.50, 1.0, 0.0),
        ("wait", "small", "medium", "large", "all", "cancel"),
        (MARKET_ORDER, *(OrderStyle(OrderType.LIMIT, "near", 0, 0),) * 4, CANCEL_ONLY),
    ),
    # seed 003's RL-enhanced executor: time and size the base TWAP schedule's slices (skip,
    # half, one, double, as market orders), or post one slice at the near touch for a step
    "twap_slices": ActionSet(
        "twap_slices", (0.0, 0.5, 1.0, 2.0, 1.0),
        ("skip", "half", "slice", "double", "post"),
        (*(MARKET_ORDER,) * 4, OrderStyle(OrderType.LIMIT, "near", 0, 1)),
        "twap_slice",
    ),
    "seed001": _seed001(),
    "seed001md": dataclasses.replace(_seed001(), name="seed001md", multi_discrete=True),
    # what the rule-based order-book baselines speak: a continuous size and a style column
    "orders": ActionSet(
        "orders", None, (),
        (MARKET_ORDER, OrderStyle(OrderType.LIMIT, "near", 0, 1),
         OrderStyle(OrderType.LIMIT, "near", 0, 0), CANCEL_ONLY),
    ),
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
