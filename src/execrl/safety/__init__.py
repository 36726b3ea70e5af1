"""Safety: the risk guard (masks and the check of every child order) and the kill switch.

Sits below the execution core (it imports only ``domain``, ``market`` and ``sim``), so every
front end — training environments, ``execrl evaluate``, the executor — runs through the same
controls.
"""

from execrl.safety.guard import (
    GUARD_FIRST_REJECT,
    GUARD_REASONS,
    KillSwitch,
    RiskGuard,
    RiskLimits,
    guard_reason,
    is_guard_reject,
)

__all__ = [
    "GUARD_FIRST_REJECT",
    "GUARD_REASONS",
    "KillSwitch",
    "RiskGuard",
    "RiskLimits",
    "guard_reason",
    "is_guard_reject",
]
