"""Market and own-order events as numpy structured arrays (one row per event).

Every market (the Almgren–Chriss model, the stochastic order book, the historical replay and
a live feed) reports what happened in these dtypes, so the feature builder, the audit trail
and the fill booking read one format. Times are seconds on the market's own clock (float64);
quantities are whole shares (int64); prices are currency units (float64).

A book update is not a structured array: it is a snapshot of the top ``k`` levels per
environment, four ``(n, k)`` arrays (``bid_px``, ``bid_qty``, ``ask_px``, ``ask_qty``), see
``FeatureBuilder.on_book``.

``as_events`` is the one check at the edge: a wrong dtype is refused with a one-line
``ConfigError`` naming the field.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError

#: A trade printed on the market (anyone's, the agent's own aggressive fills included).
#:
#: - ``env`` (int32): the environment (independent market) it happened in, ``0 <= env < n_envs``.
#: - ``t`` (float64): time in seconds; non-decreasing per environment.
#: - ``px`` (float64): trade price, finite and > 0.
#: - ``qty`` (int64): shares traded, > 0.
#: - ``aggressor`` (int8): +1 buyer-initiated (a buy order took the ask), -1 seller-initiated.
TRADE_DTYPE = np.dtype(
    [("env", np.int32), ("t", np.float64), ("px", np.float64), ("qty", np.int64),
     ("aggressor", np.int8)]
)

#: One fill of one of the agent's child orders (a partial fill is one row).
#:
#: - ``env`` (int32): the environment whose parent order the child belongs to.
#: - ``child_id`` (int64): the child order that filled (as in ``CHILD_ORDER_DTYPE``).
#: - ``t`` (float64): time of the fill in seconds; non-decreasing per environment.
#: - ``qty`` (int64): shares filled, > 0.
#: - ``px`` (float64): fill price, finite and > 0.
#: - ``passive`` (bool): True when the child was resting in the book and someone traded
#:   against it (it provided liquidity); False when it took liquidity.
#: - ``fee`` (float64): fee paid in currency units for this fill; negative = rebate.
FILL_DTYPE = np.dtype(
    [("env", np.int32), ("child_id", np.int64), ("t", np.float64), ("qty", np.int64),
     ("px", np.float64), ("passive", np.bool_), ("fee", np.float64)]
)

#: A child order the agent sent (what the recent fill rate divides by).
#:
#: - ``env`` (int32): the environment whose parent order it belongs to.
#: - ``child_id`` (int64): its id, unique within the environment's parent order.
#: - ``t`` (float64): time it was sent in seconds; non-decreasing per environment.
#: - ``qty`` (int64): shares it asked for, > 0.
CHILD_ORDER_DTYPE = np.dtype(
    [("env", np.int32), ("child_id", np.int64), ("t", np.float64), ("qty", np.int64)]
)


def as_events(events: Any, dtype: np.dtype, what: str) -> NDArray[Any]:
    """``events`` as a 1-D array of exactly ``dtype``, or a ``ConfigError`` naming the field.

    An array with the same fields in another order, or with extra fields, is copied into
    ``dtype``; a missing field or one of another type is refused (no silent casts: a float
    quantity or an int64 env id is a bug of the producer, not something to round away).
    """
    if not isinstance(events, np.ndarray):
        raise ConfigError(
            f"{what} must be a numpy structured array of dtype {dtype.descr}, "
            f"got {type(events).__name__}"
        )
    if events.ndim != 1:
        raise ConfigError(f"{what} must be 1-D (one row per event), got shape {events.shape}")
    if events.dtype == dtype:
        return events
    names = events.dtype.names or ()
    assert dtype.names is not None and dtype.fields is not None
    for name in dtype.names:
        expected = dtype.fields[name][0]
        if name not in names:
            raise ConfigError(f"{what} field '{name}' is missing (expected {expected})")
        got = events.dtype.fields[name][0]  # type: ignore[index]
        if got != expected:
            raise ConfigError(f"{what} field '{name}' has dtype {got}, expected {expected}")
    out = np.empty(events.shape[0], dtype=dtype)
    for name in dtype.names:
        out[name] = events[name]
    return out
