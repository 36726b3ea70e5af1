"""Execution policies behind one batched ``act(observations, masks)`` interface."""

from execrl.policies.base import FeatureIndex, Policy, PolicyContext
from execrl.policies.baselines import BASELINES, make_baseline

__all__ = ["BASELINES", "FeatureIndex", "Policy", "PolicyContext", "make_baseline"]
