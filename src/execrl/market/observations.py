"""The observation features a policy can be shown, in one table: what each one is, where it
comes from (the parent order's state, or a market feature) and how it is scaled to O(1).

Environments build observations from this table (``execrl.env.core``), the decision log names
its columns from it (``execrl.evaluate.decisions``), and ``--help`` and the docs describe them
from it. A market offers market features by name (``BatchedMarket.available_features``); an
observation feature whose source a market lacks is refused by name.

On top of the fixed scaling, ``ObservationNormaliser`` z-scores the market features online
(seed 001 §5: exponential decay, per regime bucket, locked for inference); the environment
applies it in training (``EnvConfig.normalise = "online"``), the exported policy carries it
frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

from execrl.domain import ConfigError
from execrl.market.features import (
    NormalisationSpec,
    ObservationNormaliserState,
    OnlineNormaliser,
)


@dataclass(frozen=True)
class ObservationFeature:
    """One observation feature: its meaning, source and scale."""

    description: str
    source: str | None
    """The market feature it reads; None: computed from the parent order's own state."""
    per_parent_qty: bool = False
    """Divided by the parent order's quantity (volumes)."""
    scale: float = 1.0
    per_step_volume: bool = False
    """Divided by the market's expected volume of the coming step (order-flow volumes, so that
    they read the same for a small and a large parent order)."""
    side_relative: bool = False
    """Multiplied by the order's side (+1 buy, -1 sell): + = flow or depth on the order's own
    side, so one policy reads buys and sells alike."""


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
    # order state beyond the two ratios (seed 001)
    "twap_deviation": ObservationFeature(
        "remaining_ratio - the TWAP schedule's remaining ratio (+ = behind schedule)", None),
    "working_ratio": ObservationFeature(
        "shares of the working child order / parent quantity", None),
    # order-book features (markets with a book; ``execrl.market.features`` defines them);
    # missing values (an empty side, no trade yet, no working order) read 0
    "tick_flow_10s": ObservationFeature(
        "buyer- minus seller-initiated volume of the last 10 s x side / expected volume of the "
        "step (+ = the order's own side is trading; seed 000)",
        "tick_flow_10s", per_step_volume=True, side_relative=True),
    "tick_flow_30s": ObservationFeature(
        "the same over 30 s (seed 000)", "tick_flow_30s", per_step_volume=True,
        side_relative=True),
    "imbalance_1": ObservationFeature(
        "top-of-book imbalance (bid - ask) / (bid + ask) x side, -1..1 (+ = more depth on the "
        "order's own side)", "imbalance_1", side_relative=True),
    "imbalance_5": ObservationFeature(
        "top-5-levels imbalance (bid - ask) / (bid + ask) x side, -1..1", "imbalance_5",
        side_relative=True),
    "bid_depth_ratio": ObservationFeature(
        "shares on the top 5 bid levels / expected volume of the step", "bid_depth_5",
        per_step_volume=True),
    "ask_depth_ratio": ObservationFeature(
        "shares on the top 5 ask levels / expected volume of the step", "ask_depth_5",
        per_step_volume=True),
    "own_touch_ratio": ObservationFeature(
        "shares at the best level of the order's own side (the bid for a buy) / expected "
        "volume of the step", "own_touch_qty", per_step_volume=True),
    "opposite_touch_ratio": ObservationFeature(
        "shares at the best level the order takes from (the ask for a buy) / expected volume "
        "of the step", "opposite_touch_qty", per_step_volume=True),
    "queue_depth_ratio": ObservationFeature(
        "shares shown at the working order's price (at the own touch when none works) / "
        "expected volume of the step (seed 003)", "queue_depth_at_price",
        per_step_volume=True),
    "spread_ticks": ObservationFeature("quoted spread in ticks / 10", "spread_ticks",
                                       scale=0.1),
    "realised_vol": ObservationFeature(
        "realised volatility of the mid in bps / 10 (30 s half-life)", "realised_vol_bps",
        scale=0.1),
    "queue_ahead_ratio": ObservationFeature(
        "shares ahead of the working order in its queue / expected volume of the step",
        "queue_ahead", per_step_volume=True),
    "time_since_trade": ObservationFeature(
        "seconds since the last trade / 10 (seed 003)", "time_since_trade_s", scale=0.1),
    "recent_fill_rate": ObservationFeature(
        "shares filled / sent over the last 10 child orders (seed 003)", "recent_fill_rate"),
    "avg_slippage": ObservationFeature(
        "mean slippage of the last 10 fills vs the arrival mid, bps / 10 (seed 003)",
        "avg_slippage_bps", scale=0.1),
}

#: observation features computed from the parent order's state
ORDER_FEATURES: tuple[str, ...] = tuple(
    name for name, f in OBSERVATION_FEATURES.items() if f.source is None
)


def definition(name: str) -> str:
    """One line that pins what observation feature ``name`` means (its description, source
    and scaling): a checkpoint records it, so a policy refuses a feature redefined since."""
    f = OBSERVATION_FEATURES[name]
    parts = [f.description, f"source={f.source or 'order'}", f"scale={f.scale:g}"]
    if f.per_parent_qty:
        parts.append("/parent qty")
    if f.per_step_volume:
        parts.append("/step volume")
    if f.side_relative:
        parts.append("x side")
    return "; ".join(parts)


# -- online normalisation of observations (seed 001 §5) ----------------------------------------
#: how observations are scaled: ``fixed`` (the constants of the table above) or ``online``
#: (those, then an exponentially decaying z-score per regime bucket, frozen after training)
NORMALISE_MODES: tuple[str, ...] = ("fixed", "online")
#: the observation feature the regime bucket is read from (when the set has it)
BUCKET_FEATURE = "spread"


def normalisation_spec(
    names: Sequence[str], *, tick_bps: float | None, halflife: float = 100_000.0,
    bucket_by: str | None = BUCKET_FEATURE,
) -> NormalisationSpec:
    """The default spec for observation set ``names`` on a market whose tick is ``tick_bps``
    bps of its arrival price (None: no tick grid). The regime bucket (seed 001 §5 "locked per
    regime bucket") is the quoted spread: 1 tick, 2 ticks, 3 ticks or more (edges at 1.5 and
    2.5 ticks in the ``spread`` feature's units, bps / 100) — the book's liquidity regime,
    which moves with its volatility (the stressed and illiquid regimes quote wider). Without
    a ``spread`` feature or a tick grid: one bucket."""
    names = tuple(names)
    use = bucket_by if bucket_by in names and tick_bps else None
    edges = () if use is None else tuple(k * tick_bps * OBSERVATION_FEATURES[use].scale
                                         for k in (1.5, 2.5))
    normalised = tuple(n for n in names if OBSERVATION_FEATURES[n].source is not None
                       and n != use)
    return NormalisationSpec(names=names, normalised=normalised, bucket_by=use,
                             bucket_edges=edges, halflife=halflife)


class ObservationNormaliser:
    """Observations z-scored online: ``execrl.market.features.OnlineNormaliser`` (exponential
    decay, one set of statistics per regime bucket) over the columns ``spec.normalised``.

    ``apply(raw, fold)`` first folds the rows ``fold`` (bool per row) into their buckets'
    statistics, in row order, then returns every row z-scored with the statistics as they now
    are: an observation at decision t uses what was seen up to t, never later. A locked
    normaliser (evaluation, execution: seed 001's "locked") folds nothing; its transform is a
    pure function of the row. A bucket never seen reads 0 ("at the mean") in its z-scored
    columns; values are clipped to ±10.
    """

    EPS = 1e-8  # added to the variance (observed units²): a constant feature reads 0

    def __init__(self, spec: NormalisationSpec, stats: OnlineNormaliser | None = None):
        self.spec = spec
        self.norm = stats or OnlineNormaliser(len(spec.names), spec.n_buckets,
                                              halflife=spec.halflife, eps=self.EPS)
        self._cols = np.array([spec.names.index(n) for n in spec.normalised], dtype=np.intp)
        self._bcol = None if spec.bucket_by is None else spec.names.index(spec.bucket_by)
        self._edges = np.asarray(spec.bucket_edges, dtype=np.float64)
        self._frozen_tables: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None

    @property
    def locked(self) -> bool:
        return self.norm.locked

    def frozen(self) -> ObservationNormaliser:
        """A locked copy (the trained state, for inference)."""
        copy = ObservationNormaliser.from_state(self.state())
        copy.norm.lock()
        return copy

    def buckets(self, x: NDArray[np.float64]) -> NDArray[np.int64]:
        if self._bcol is None:
            return np.zeros(x.shape[0], dtype=np.int64)
        return np.searchsorted(self._edges, x[:, self._bcol], side="right").astype(np.int64)

    def _tables(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(mean, sqrt(variance + eps)) per bucket and feature, as ``OnlineNormaliser.
        transform`` computes them; kept while locked (they cannot change)."""
        if self._frozen_tables is not None:
            return self._frozen_tables
        n = self.norm
        tables = (np.ascontiguousarray(n.mean), np.ascontiguousarray(
            np.sqrt(n.variance + n.eps)))
        if n.locked:
            self._frozen_tables = tables
        return tables

    def apply(self, raw: ArrayLike, fold: NDArray[np.bool_] | None = None) -> NDArray[np.float32]:
        x = np.asarray(raw, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] != len(self.spec.names):
            raise ConfigError(f"normaliser takes {len(self.spec.names)} features "
                              f"({', '.join(self.spec.names)}), got {x.shape[1]}")
        if fold is not None and not self.norm.locked and fold.any():
            self._frozen_tables = None
            self.norm.update(x[fold], self.buckets(x[fold]))
        out = np.asarray(raw, dtype=np.float32).reshape(x.shape).copy()
        if self._cols.size:
            mean, denom = self._tables()
            clip = np.inf if self.norm.clip is None else self.norm.clip
            _zscore_rows(np.ascontiguousarray(x), -1 if self._bcol is None else self._bcol,
                         self._edges, self._cols, mean, denom, clip, out)
        return out

    def state(self) -> ObservationNormaliserState:
        return ObservationNormaliserState(spec=self.spec, stats=self.norm.state())

    @classmethod
    def from_state(cls, state: ObservationNormaliserState) -> ObservationNormaliser:
        return cls(state.spec, OnlineNormaliser.from_state(state.stats))

    def check(self, names: Sequence[str], where: str) -> None:
        """Refuse (one line naming the field) a normaliser made for other features."""
        if tuple(names) != self.spec.names:
            raise ConfigError(f"{where}: normaliser field 'names' = {list(self.spec.names)} "
                              f"differs from its features {list(names)}")


@njit(cache=True)
def _zscore_rows(x: NDArray[np.float64], bcol: int, edges: NDArray[np.float64],
                 cols: NDArray[np.intp], mean: NDArray[np.float64],
                 denom: NDArray[np.float64], clip: float, out: NDArray[np.float32]) -> None:
    """out[r, j] = clip((x[r, j] - mean[b, j]) / denom[b, j]) for the z-scored columns j, b
    the row's bucket (``np.searchsorted(edges, x[r, bcol], side="right")``; NaN: the last),
    0 where that is NaN: ``OnlineNormaliser.transform(..., nan_to=0.0)``'s operations, row
    by row (compiled: one live decision is one row, and numpy's per-call overheads were
    most of its time)."""
    for r in range(x.shape[0]):
        b = 0
        if bcol >= 0:
            v = x[r, bcol]
            if v != v:
                b = edges.shape[0]
            else:
                while b < edges.shape[0] and edges[b] <= v:
                    b += 1
        for c in range(cols.shape[0]):
            j = cols[c]
            z = (x[r, j] - mean[b, j]) / denom[b, j]
            if z > clip:
                z = clip
            elif z < -clip:
                z = -clip
            out[r, j] = 0.0 if z != z else z
