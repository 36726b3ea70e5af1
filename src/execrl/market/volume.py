"""Intraday volume profiles (for VWAP schedules, POV and the interval-VWAP benchmark)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def u_shape_weights(n_steps: int, amplitude: float) -> NDArray[np.float64]:
    """Expected share of volume in each of ``n_steps`` equal intervals, normalised to sum 1.

    The density over session time s in [0, 1] is ``1 + a·(12·(s − ½)² − 1)``: mean 1, highest
    at the open and close (1 + 2a), lowest at mid-session (1 − a). Each interval gets the exact
    integral of the density, so the weights do not depend on a sampling grid. ``a = 0`` is flat.
    """
    if not 0.0 <= amplitude < 1.0:
        raise ValueError(f"volume U-shape amplitude = {amplitude!r} must be in [0, 1)")
    edges = np.linspace(0.0, 1.0, n_steps + 1)
    antiderivative = edges + amplitude * (4.0 * (edges - 0.5) ** 3 - edges)
    weights = np.diff(antiderivative)
    return weights / weights.sum()
