"""How implementation shortfall is computed: the one place in execrl that does it.

Convention (shared/DESIGN.md): IS is in basis points, positive = cost. For a buy,
``(avg_fill - benchmark) / benchmark * 1e4``; for a sell the sign flips. The same function
serves every benchmark: the arrival mid, the arrival VWAP (seed 000) and the interval VWAP.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


def implementation_shortfall_bps(
    avg_fill_px: ArrayLike, benchmark_px: ArrayLike, side_sign: ArrayLike
) -> NDArray[np.float64]:
    """IS in bps, positive = cost; ``side_sign`` is +1 for a buy and -1 for a sell.

    Vectorised over orders: every argument broadcasts against the others.

    >>> float(implementation_shortfall_bps(100.5, 100.0, +1))  # bought 50 bps above arrival
    50.0
    >>> float(implementation_shortfall_bps(100.5, 100.0, -1))  # sold 50 bps above: a gain
    -50.0
    """
    avg = np.asarray(avg_fill_px, dtype=np.float64)
    bench = np.asarray(benchmark_px, dtype=np.float64)
    sign = np.asarray(side_sign, dtype=np.float64)
    return shortfall_bps(avg, bench, sign)


def shortfall_bps(avg: Any, bench: Any, sign: Any) -> Any:
    """The formula itself, on float64 arrays or floats: the compiled kernels (the core's
    booking and episode end) compile this very function, so their IS has the same operations,
    hence the same bits, as ``implementation_shortfall_bps``."""
    return sign * (avg - bench) / bench * 1e4


def vwap(prices: ArrayLike, quantities: ArrayLike, axis: int = -1) -> NDArray[np.float64]:
    """Volume-weighted average price along ``axis``; NaN where no quantity traded."""
    p = np.asarray(prices, dtype=np.float64)
    q = np.asarray(quantities, dtype=np.float64)
    total = q.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (p * q).sum(axis=axis) / np.where(total > 0, total, 1), np.nan)
