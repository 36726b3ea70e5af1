"""Guard-gated exploration of the wait axis, with the propensities off-policy evaluation needs."""

from __future__ import annotations

import numpy as np
import pytest

from execrl.domain import ConfigError
from execrl.env.spaces import resolve_action_set
from execrl.executor.explore import Exploration, Explorer

SEED001 = resolve_action_set("seed001")


def test_only_the_wait_changes_only_to_allowed_values_with_the_stated_propensity():
    n = 40_000
    greedy = np.full(n, np.ravel_multi_index((1, 2, 0, 1), SEED001.factors))
    masks = np.ones((n, SEED001.n_actions), dtype=bool)
    banned = np.ravel_multi_index((1, 2, 3, 1), SEED001.factors)  # the mask forbids wait 3
    masks[:, banned] = False
    taken, prop = Explorer(Exploration(0.3, seed=5), SEED001)(greedy, masks)
    subs = np.array(np.unravel_index(taken, SEED001.factors)).T
    assert (subs[:, [0, 1, 3]] == (1, 2, 1)).all()  # size, aggression, type: the policy's
    assert not (taken == banned).any()
    # allowed waits 0, 1, 2: the policy's own with 0.7 + 0.1, each other with 0.1
    for wait, p in ((0, 0.8), (1, 0.1), (2, 0.1)):
        hit = subs[:, 2] == wait
        assert np.allclose(prop[hit], p)
        assert abs(hit.mean() - p) < 0.01  # the frequency is the propensity
    # the logged propensities make an unbiased importance-sampling estimate of the greedy
    # policy's share of decisions: E[1{taken = greedy} / p] = 1
    assert abs(np.mean((taken == greedy) / prop) - 1.0) < 0.02


def test_no_exploration_is_the_policy_itself():
    greedy = np.arange(0, SEED001.n_actions, 7)
    taken, prop = Explorer(Exploration(0.0), SEED001)(greedy, None)
    np.testing.assert_array_equal(taken, greedy)
    assert (prop == 1.0).all()


def test_exploration_is_refused_where_no_axis_is_non_critical():
    with pytest.raises(ConfigError, match="'seed004' has no non-critical axis"):
        Explorer(Exploration(0.1), resolve_action_set("seed004"))
    with pytest.raises(ConfigError, match="'size' decides how much"):
        Explorer(Exploration(0.1, axis="size"), SEED001)
    with pytest.raises(ConfigError, match=r"epsilon = 1\.5"):
        Exploration(1.5)


def test_the_executor_logs_the_propensity_of_each_action_it_took(tmp_path):
    from execrl.executor.audit import AuditTrail, check_trail, read_trail
    from execrl.executor.loop import Executor, Safety
    from execrl.presets import preset_market
    from execrl.safety.guard import RiskLimits

    lob = preset_market("lob")
    order = lob.default_order()

    class Slice:  # one TWAP slice, passive at the near touch, resting one step
        name, observations, action_set = "slice", ("remaining_ratio",), "seed001"

        def act(self, obs, masks=None):
            return np.full(obs.shape[0], np.ravel_multi_index((1, 2, 1, 0), SEED001.factors))

    audit = AuditTrail(tmp_path / "trail", features=Slice.observations)
    ex = Executor(Slice(), lob, safety=Safety(limits=RiskLimits()), audit=audit,
                  explore=Exploration(0.5, seed=3))
    ex.run(order, 40, seed=2)
    trail = read_trail(tmp_path / "trail")
    d = trail.decisions
    subs = np.array(np.unravel_index(d["action"].astype(np.int64), SEED001.factors)).T
    assert (subs[:, [0, 1, 3]] == (1, 2, 0)).all()  # only the wait was explored
    own = subs[:, 2] == 1
    assert own.any() and (~own).any()
    assert ((d["propensity"] > 0) & (d["propensity"] <= 1)).all()
    assert (d.loc[own, "propensity"] > d.loc[~own, "propensity"].max()).all()
    assert check_trail(trail) == []
