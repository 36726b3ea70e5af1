"""Gymnasium environments over a market simulator: observation sets, action sets, rewards."""

from execrl.env.core import BatchedExecution
from execrl.env.execution_env import ExecutionEnv
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution, market_for_order
from execrl.env.spaces import ACTION_SETS, OBSERVATION_SETS, ActionSet
from execrl.env.vector_env import ExecutionVectorEnv

__all__ = [
    "ACTION_SETS",
    "DEFAULT_ORDER",
    "OBSERVATION_SETS",
    "ActionSet",
    "BatchedExecution",
    "EnvConfig",
    "ExecutionEnv",
    "ExecutionVectorEnv",
    "make_execution",
    "market_for_order",
]
