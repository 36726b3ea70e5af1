"""Bounds every command applies to what a user asks for, in one place."""

from __future__ import annotations

import os

from execrl.domain.errors import ConfigError

#: seeds go to numpy, torch and SB3, which take unsigned 32-bit seeds
MAX_SEED = 2**32 - 1

#: what one run (a backtest or a training) may allocate, estimated before it starts
DEFAULT_MEMORY_LIMIT_GIB = 4.0
MEMORY_LIMIT_ENV = "EXECRL_MAX_MEMORY_GB"


def memory_limit_bytes() -> int:
    """The memory limit of a run: ``EXECRL_MAX_MEMORY_GB`` (GiB) when set, else 4 GiB (a
    sixth of the 24 GB machines execrl is sized for)."""
    text = os.environ.get(MEMORY_LIMIT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_MEMORY_LIMIT_GIB
    except ValueError:
        raise ConfigError(f"{MEMORY_LIMIT_ENV} = {text!r} is not a number") from None
    if not 0 < value < 1e9:
        raise ConfigError(f"{MEMORY_LIMIT_ENV} = {text!r} must be a number of GiB > 0")
    return int(value * 2**30)
