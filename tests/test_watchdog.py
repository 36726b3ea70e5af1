"""The watchdog state machine (execrl.safety.watchdog): every trigger fires where its
condition holds and stays quiet where it does not, states are sticky, training only records,
and bad thresholds are one line naming the field."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execrl.domain import ConfigError
from execrl.market.features import FeatureSchema
from execrl.safety.watchdog import (
    DONE,
    FALLBACK,
    KILLED,
    PASSIVE,
    POLICY_FAULTS,
    RL,
    STATES,
    TRIGGER_TEXT,
    TRIGGERS,
    Watchdog,
    WatchdogConfig,
    condition_names,
    domain_bounds,
    reference_distribution,
)

CALM = {"elapsed_ratio": 0.5, "filled_ratio": 0.5, "price": 100.0, "arrival_vwap": 100.0,
        "fault": 0, "latency_s": 1e-4, "is_bps": 1.0, "twap_is_bps": 1.0}
REFERENCE = np.array([0.2, 0.5, 0.3])
FEATURES = ("remaining_ratio", "volatility", "spread", "last_volume_ratio")


def schema(with_moments: bool = True) -> FeatureSchema:
    """A training domain: volatility 1 ± 0.1, spread 0.02 ± 0.005, volume 0.1 ± 0.02."""
    moments: dict[str, Any] = {}
    if with_moments:
        moments = {"domain_mean": [0.5, 1.0, 0.02, 0.1], "domain_std": [0.3, 0.1, 0.005, 0.02],
                   "action_counts": [20, 50, 30]}
    return FeatureSchema.build(FEATURES, domain_min=[0.0, 0.8, 0.01, 0.05],
                               domain_max=[1.0, 1.2, 0.03, 0.15], **moments)


CALM_OBS = np.array([[0.5, 1.0, 0.02, 0.1]])


def watchdog(n: int = 1, side: Any = 1, **config: Any) -> Watchdog:
    return Watchdog(WatchdogConfig(**config), n, side=side, n_actions=3,
                    reference_actions=REFERENCE, domain=schema())


def judge(wd: Watchdog, steps: int = 1, **inputs: Any) -> np.ndarray:
    """``steps`` checks with the calm inputs, ``inputs`` replacing some; the last one's
    verdict."""
    args = {**CALM, "observations": np.repeat(CALM_OBS, wd.n_orders, axis=0), **inputs}
    fired = np.zeros(wd.n_orders, dtype=np.int8)
    for k in range(steps):
        fired = wd.check(k, **args)
    return fired


def test_the_names_and_codes() -> None:
    assert len(TRIGGERS) == 10 and TRIGGERS[0] == "none"
    assert set(TRIGGER_TEXT) == set(TRIGGERS)
    assert STATES == ("rl", "fallback", "passive", "done", "killed")
    assert POLICY_FAULTS == ("ok", "raised", "timeout", "nan", "out_of_space")


LIKE_REFERENCE = [1, 1, 1, 1, 1, 0, 0, 2, 2, 2]  # the reference's 0.2 / 0.5 / 0.3


def test_calm_inputs_fire_nothing() -> None:
    wd = watchdog(4, side=[1, -1, 1, -1], drift_window=15)  # 60 decisions of the policy
    for k in range(30):
        actions = [LIKE_REFERENCE[(k + i) % 10] for i in range(4)]
        fired = wd.check(k, **CALM, observations=np.repeat(CALM_OBS, 4, axis=0),
                         probs=np.tile([[0.1, 0.8, 0.1]], (4, 1)), actions=actions)
        assert fired.tolist() == [0] * 4
    assert np.isfinite(wd.last_kl).all()
    assert (wd.state == RL).all() and (wd.trigger == 0).all() and (wd.trigger_step == -1).all()


# each trigger: inputs that fire it and nearby inputs that do not
CASES: list[tuple[str, dict[str, Any], dict[str, Any], int, int]] = [
    # name, inputs that fire, inputs that do not, side, steps
    ("late_and_unfilled", {"elapsed_ratio": 0.95, "filled_ratio": 0.49},
     {"elapsed_ratio": 0.95, "filled_ratio": 0.5}, 1, 1),
    ("late_and_unfilled", {"elapsed_ratio": 0.91, "filled_ratio": 0.0},
     {"elapsed_ratio": 0.9, "filled_ratio": 0.0}, 1, 1),
    ("price_beyond_vwap", {"price": 101.02}, {"price": 100.99}, 1, 1),
    ("price_beyond_vwap", {"price": 98.98}, {"price": 101.5}, -1, 1),  # a sell: mirrored
    ("policy_fault", {"fault": 1}, {"fault": 0}, 1, 1),
    ("policy_fault", {"fault": 2}, {"fault": 0}, 1, 1),
    ("policy_fault", {"fault": 3}, {"fault": 0}, 1, 1),
    ("policy_fault", {"fault": 4}, {"fault": 0}, 1, 1),
    ("low_confidence", {"probs": [[0.5, 0.3, 0.2]]}, {"probs": [[0.6, 0.3, 0.1]]}, 1, 3),
    ("latency", {"latency_s": 0.11}, {"latency_s": 0.1}, 1, 1),
    ("kill_or_loss", {"manual": True}, {"manual": False}, 1, 1),
    ("kill_or_loss", {"is_bps": 20.1, "twap_is_bps": 10.0},
     {"is_bps": 19.9, "twap_is_bps": 10.0}, 1, 1),
    ("kill_or_loss", {"is_bps": 2.1, "twap_is_bps": -5.0},  # TWAP's IS floored at 1 bps
     {"is_bps": 1.9, "twap_is_bps": -5.0}, 1, 1),
    ("out_of_domain", {"observations": [[0.5, 1.31, 0.02, 0.1]]},
     {"observations": [[0.5, 1.29, 0.02, 0.1]]}, 1, 1),
    ("out_of_domain", {"observations": [[0.5, 1.0, 0.0049, 0.1]]},
     {"observations": [[0.5, 1.0, 0.0051, 0.1]]}, 1, 1),
    ("out_of_domain", {"observations": [[0.5, 1.0, 0.02, 0.161]]},
     {"observations": [[0.5, 1.0, 0.02, 0.159]]}, 1, 1),
    ("out_of_domain", {"observations": [[0.5, 1.0, 0.02, 0.039]]},  # volume too thin
     {"observations": [[5.0, 1.0, 0.02, 0.041]]}, 1, 1),  # remaining_ratio is not watched
    ("extreme_volatility", {"extreme": True}, {"extreme": False}, 1, 1),
]


@pytest.mark.parametrize(("name", "fires", "quiet", "side", "steps"), CASES)
def test_each_trigger_fires_and_does_not(
    name: str, fires: dict[str, Any], quiet: dict[str, Any], side: int, steps: int
) -> None:
    code = TRIGGERS.index(name)
    wd = watchdog(side=side)
    assert judge(wd, steps, **quiet).tolist() == [0], name
    assert wd.state[0] == RL and wd.trigger[0] == 0
    wd = watchdog(side=side)
    fired = judge(wd, steps, **fires)
    assert fired.tolist() == [code]
    assert wd.trigger[0] == code and wd.trigger_step[0] == steps - 1
    assert wd.state[0] == (PASSIVE if name == "extreme_volatility" else FALLBACK)
    assert wd.conditions[0] == 1 << code


def test_confidence_needs_consecutive_decisions() -> None:
    low, high = [[0.5, 0.3, 0.2]], [[0.9, 0.05, 0.05]]
    wd = watchdog(confidence_decisions=3)
    for k, probs in enumerate([low, low, high, low, low]):  # the confident one resets
        assert wd.check(k, **CALM, probs=probs).tolist() == [0]
    assert wd.check(5, **CALM, probs=low).tolist() == [TRIGGERS.index("low_confidence")]
    assert wd.trigger_step[0] == 5
    wd = watchdog(confidence_decisions=1)
    assert wd.check(0, **CALM, probs=low).tolist() == [TRIGGERS.index("low_confidence")]


def _kl(actions: list[int], smoothing: float = 0.5) -> float:
    """KL(recent ‖ reference) by hand: the smoothed histogram of the window against the
    reference."""
    counts = np.bincount(actions, minlength=3) + smoothing
    p = counts / counts.sum()
    return float(np.sum(p * np.log(p / REFERENCE)))


def test_drift_is_the_kl_of_the_recent_window() -> None:
    window = 10
    like_reference = LIKE_REFERENCE
    drifted = [0] * 10
    assert _kl(like_reference) < 0.15 < _kl(drifted)
    wd = watchdog(drift_window=window, drift_scope="order", drift_min_decisions=window)
    for k, a in enumerate(like_reference * 3):
        assert wd.check(k, **CALM, actions=[a]).tolist() == [0]
        if k < window - 1:
            assert math.isnan(wd.last_kl[0])  # the window is not full yet
    assert wd.last_kl[0] == pytest.approx(_kl(like_reference), rel=1e-12)
    # the window slides: the KL after each new action is that of the last `window` actions
    history = like_reference * 3
    for k, a in enumerate(drifted, start=len(history)):
        history.append(a)
        fired = wd.check(k, **CALM, actions=[a])
        expected = _kl(history[-window:])
        if wd.state[0] == RL or fired[0]:
            assert wd.last_kl[0] == pytest.approx(expected, rel=1e-12)
        if fired[0]:
            assert expected > 0.15 and fired.tolist() == [TRIGGERS.index("drift")]
            break
    assert wd.state[0] == FALLBACK and wd.trigger[0] == TRIGGERS.index("drift")


def test_the_policys_drift_pools_its_orders_recent_checks() -> None:
    """Policy scope: the window is every decision of the policy's orders in the last
    ``drift_window`` checks; when it drifts, every order it still decides falls back, and a
    second policy (the other side's) is judged on its own decisions."""
    wd = Watchdog(WatchdogConfig(drift_window=3, drift_min_decisions=9), 6, n_actions=3,
                  reference_actions=REFERENCE, policy_group=[0, 0, 0, 0, 1, 1])
    rng = np.random.default_rng(3)
    pooled: list[np.ndarray] = []  # policy 0's decisions per check
    for k in range(3):
        actions = rng.choice(3, 6, p=REFERENCE)
        pooled.append(actions[:4])
        assert wd.check(k, **CALM, actions=actions).tolist() == [0] * 6
        if k < 2:
            assert np.isnan(wd.last_kl).all()  # too few decisions yet (4, then 8)
    assert wd.last_kl[:4] == pytest.approx([_kl(np.concatenate(pooled).tolist())] * 4,
                                           rel=1e-12)
    assert np.isnan(wd.last_kl[4:]).all()  # policy 1 has made only 6 decisions
    # order 3 falls back (a fault); from then on its actions are not the policy's
    wd.check(3, **{**CALM, "fault": [0, 0, 0, 1, 0, 0]}, actions=[1, 1, 1, 1, 1, 2])
    pooled.append(np.array([1, 1, 1, 1]))
    drifted = np.array([0, 0, 0, 0, 1, 2])  # policy 0 now always says 0
    for k in range(4, 8):
        pooled.append(drifted[:3])
        expected = _kl(np.concatenate(pooled[-3:]).tolist())
        fired = wd.check(k, **CALM, actions=drifted)
        assert wd.last_kl[0] == pytest.approx(expected, rel=1e-12)
        if expected > 0.15:
            assert fired.tolist() == [5, 5, 5, 0, 0, 0]
            break
        assert fired.tolist() == [0] * 6
    assert wd.state.tolist() == [FALLBACK] * 4 + [RL, RL]
    assert wd.trigger.tolist() == [5, 5, 5, 3, 0, 0]


def test_the_pooled_reference_must_be_one_per_policy() -> None:
    with pytest.raises(ConfigError, match="differs between orders of one policy_group"):
        Watchdog(WatchdogConfig(), 2, n_actions=3, reference_actions=[REFERENCE, [0.3, 0.4, 0.3]])
    Watchdog(WatchdogConfig(), 2, n_actions=3, reference_actions=[REFERENCE, [0.3, 0.4, 0.3]],
             policy_group=[0, 1])
    with pytest.raises(ConfigError, match="'policy_group' must hold one index"):
        Watchdog(WatchdogConfig(), 2, policy_group=[0, 5])


def test_drift_skips_actions_outside_the_space_and_needs_a_reference() -> None:
    wd = watchdog(drift_window=2, drift_scope="order", drift_min_decisions=2)
    for k, a in enumerate([np.nan, 7, -1, 0.5, np.inf]):
        assert wd.check(k, **CALM, actions=[a]).tolist() == [0]
    assert math.isnan(wd.last_kl[0])
    blind = Watchdog(WatchdogConfig(drift_window=2), 1, n_actions=3, reference_actions=None)
    for k in range(5):
        assert blind.check(k, **CALM, actions=[0]).tolist() == [0]


def test_the_absolute_loss_and_drawdown_limits() -> None:
    wd = watchdog(max_is_bps=30.0, is_vs_twap=None)
    assert judge(wd, is_bps=29.0).tolist() == [0]
    assert judge(wd, is_bps=31.0).tolist() == [TRIGGERS.index("kill_or_loss")]
    wd = watchdog(max_drawdown_bps=10.0, is_vs_twap=None)
    for k, x in enumerate([5.0, -4.0, 5.5]):  # best so far -4, then up 9.5: inside
        assert wd.check(k, **{**CALM, "is_bps": x}).tolist() == [0]
    assert wd.check(3, **{**CALM, "is_bps": 6.5}).tolist() == [TRIGGERS.index("kill_or_loss")]


def test_the_kill_switch_kills_from_any_state_and_outranks_everything() -> None:
    wd = watchdog(3)
    judge(wd, fault=[1, 0, 0], extreme=[False, True, False])
    assert wd.state.tolist() == [FALLBACK, PASSIVE, RL]
    fired = wd.check(1, **{**CALM, "fault": 1}, kill=True, extreme=True)
    assert fired.tolist() == [TRIGGERS.index("kill_or_loss")] * 3
    assert wd.state.tolist() == [KILLED] * 3
    # the trigger that took each order from its policy stays on record
    assert wd.trigger.tolist() == [TRIGGERS.index(t) for t in
                                   ("policy_fault", "extreme_volatility", "kill_or_loss")]
    assert wd.trigger_step.tolist() == [0, 0, 1]
    assert wd.check(2, **CALM, done=True).tolist() == [0, 0, 0]
    assert (wd.state == KILLED).all()  # killed stays killed, even when the horizon comes


def test_states_are_sticky_and_only_escalate() -> None:
    wd = watchdog(2)
    judge(wd, latency_s=[0.5, 1e-4])
    assert wd.state.tolist() == [FALLBACK, RL]
    for k in range(1, 5):  # the condition is gone: the order stays with its fallback
        assert wd.check(k, **CALM).tolist() == [0, 0]
    assert wd.state.tolist() == [FALLBACK, RL]
    assert wd.trigger_step.tolist() == [0, -1]
    # a later trigger of the fallback kind changes nothing; the passive freeze still applies
    assert wd.check(5, **{**CALM, "fault": [1, 0]}).tolist() == [0, 0]
    assert wd.check(6, **CALM, extreme=[True, False]).tolist() == [9, 0]
    assert wd.state.tolist() == [PASSIVE, RL]
    assert wd.trigger.tolist() == [TRIGGERS.index("latency"), 0]
    assert wd.check(7, **CALM, done=[True, True]).tolist() == [0, 0]
    assert wd.state.tolist() == [DONE, DONE]
    assert wd.check(8, **{**CALM, "fault": 1}, kill=True).tolist() == [0, 0]  # done is final
    assert wd.state.tolist() == [DONE, DONE]


def test_extreme_volatility_can_be_configured_to_fall_back() -> None:
    wd = watchdog(extreme_action="fallback")
    assert judge(wd, extreme=True).tolist() == [TRIGGERS.index("extreme_volatility")]
    assert wd.state[0] == FALLBACK


def test_extreme_volatility_from_the_training_domain() -> None:
    wd = watchdog(extreme_vol_sigmas=6.0)
    # 4σ: out of domain (fallback); 6.5σ at once: the freeze outranks the fallback
    assert judge(wd, observations=[[0.5, 1.4, 0.02, 0.1]]).tolist() == [8]
    wd = watchdog(extreme_vol_sigmas=6.0)
    assert judge(wd, observations=[[0.5, 1.65, 0.02, 0.1]]).tolist() == [9]
    assert wd.state[0] == PASSIVE and wd.conditions[0] == (1 << 8) | (1 << 9)
    wd = watchdog(extreme_vol_sigmas=6.0)
    assert judge(wd, observations=[[0.5, 0.3, 0.02, 0.1]]).tolist() == [8]  # calm is not extreme


def test_several_triggers_at_once_record_the_lowest_and_every_condition() -> None:
    wd = watchdog()
    fired = judge(wd, latency_s=1.0, fault=2, price=105.0)
    assert fired.tolist() == [TRIGGERS.index("price_beyond_vwap")]
    assert wd.conditions[0] == (1 << 2) | (1 << 3) | (1 << 6)
    assert condition_names(wd.conditions[0]) == ("price_beyond_vwap", "policy_fault", "latency")


def test_training_only_records() -> None:
    wd = watchdog(4, acting=False)
    fired = judge(wd, fault=[2, 0, 0, 0], latency_s=[1e-4, 0.5, 1e-4, 1e-4],
                  kill=[False, False, True, False])
    assert fired.tolist() == [3, 6, 7, 0]
    assert wd.state.tolist() == [RL] * 4  # the policy keeps every order, even a killed one
    assert wd.on_policy.all()
    # later triggers do not overwrite the first record
    assert wd.check(1, **{**CALM, "price": 150.0}).tolist() == [0, 0, 0, 2]
    assert wd.trigger.tolist() == [3, 6, 7, 2] and wd.trigger_step.tolist() == [0, 0, 0, 1]
    assert wd.state.tolist() == [RL] * 4
    wd.check(2, **CALM, done=True)
    assert wd.state.tolist() == [DONE] * 4


def test_one_faulty_order_does_not_touch_the_others() -> None:
    wd = watchdog(5)
    fired = judge(wd, fault=[0, 0, 3, 0, 0], elapsed_ratio=np.full(5, 0.5))
    assert fired.tolist() == [0, 0, 3, 0, 0]
    assert wd.state.tolist() == [RL, RL, FALLBACK, RL, RL]


def test_inactive_orders_are_not_judged() -> None:
    wd = watchdog(2)
    assert judge(wd, fault=1, active=[True, False]).tolist() == [3, 0]
    assert wd.state.tolist() == [FALLBACK, RL]


def test_an_old_checkpoint_domain_falls_back_to_min_max() -> None:
    old = schema(with_moments=False)
    lo, hi = domain_bounds(old, ["volatility"], 3.0, 0.25)
    assert lo[0] == pytest.approx(0.8 - 0.1, abs=1e-5)
    assert hi[0] == pytest.approx(1.2 + 0.1, abs=1e-5)
    wd = Watchdog(WatchdogConfig(), 1, n_actions=3, reference_actions=None, domain=old)
    assert judge(wd, observations=[[0.5, 1.29, 0.02, 0.1]]).tolist() == [0]
    assert judge(wd, observations=[[0.5, 1.31, 0.02, 0.1]]).tolist() == [8]


def test_a_constant_training_feature_admits_its_value_only() -> None:
    const = FeatureSchema.build(("volatility",), domain_min=[1.0], domain_max=[1.0],
                                domain_mean=[1.0], domain_std=[0.0])
    wd = Watchdog(WatchdogConfig(), 1, domain=const)
    assert wd.check(0, observations=np.array([[1.0]], dtype=np.float32)).tolist() == [0]
    assert wd.check(1, observations=[[1.01]]).tolist() == [8]


def test_reference_distribution_smooths_the_histogram() -> None:
    p = reference_distribution([0, 3, 1], smoothing=0.5)
    np.testing.assert_allclose(p, [0.5 / 5.5, 3.5 / 5.5, 1.5 / 5.5])
    assert (p > 0).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_a_batch_judges_each_order_as_if_alone(n: int, seed: int) -> None:
    """The batched check gives every order the verdicts a watchdog of that order alone
    gives it, on random inputs over several steps."""
    rng = np.random.default_rng(seed)
    side = rng.choice([-1, 1], n)
    drift = {"drift_window": 3, "drift_scope": "order", "drift_min_decisions": 3}
    batch = watchdog(n, side=side, **drift)
    alone = [watchdog(1, side=int(side[i]), **drift) for i in range(n)]
    for k in range(8):
        inputs = {
            "elapsed_ratio": rng.uniform(0.7, 1.0, n), "filled_ratio": rng.uniform(0.3, 0.7, n),
            "price": rng.normal(100.0, 0.7, n), "arrival_vwap": np.full(n, 100.0),
            "fault": (rng.uniform(size=n) < 0.05).astype(np.int8),
            "probs": rng.dirichlet([1.0, 1.0, 1.0], n), "actions": rng.integers(0, 3, n),
            "latency_s": rng.exponential(0.03, n), "is_bps": rng.normal(5, 5, n),
            "twap_is_bps": rng.normal(5, 2, n),
            "observations": CALM_OBS + rng.normal(0, 0.01, (n, 4)),
            "extreme": rng.uniform(size=n) < 0.03, "kill": rng.uniform(size=n) < 0.02,
            "done": rng.uniform(size=n) < 0.05,
        }
        fired = batch.check(k, **inputs)
        for i, wd in enumerate(alone):
            one = {key: np.asarray(v)[i:i + 1] for key, v in inputs.items()}
            assert wd.check(k, **one)[0] == fired[i]
            assert wd.state[0] == batch.state[i] and wd.trigger[0] == batch.trigger[i]


# -- configuration errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"late_elapsed": 1.5}, "watchdog config field 'late_elapsed' = 1.5 is not valid"),
        ({"price_band": -0.01}, "watchdog config field 'price_band' = -0.01 is not valid"),
        ({"min_confidence": 0}, "watchdog config field 'min_confidence' = 0 is not valid"),
        ({"confidence_decisions": 0}, "field 'confidence_decisions' = 0 is not valid"),
        ({"drift_kl": float("nan")}, "watchdog config field 'drift_kl' = nan is not valid"),
        ({"drift_window": 0}, "watchdog config field 'drift_window' = 0 is not valid"),
        ({"max_latency_s": "fast"}, "field 'max_latency_s' = 'fast' is not valid"),
        ({"is_vs_twap": 0.5}, "watchdog config field 'is_vs_twap' = 0.5 is not valid"),
        ({"domain_sigmas": float("inf")}, "field 'domain_sigmas' = inf is not valid"),
        ({"fallback": "panic"}, "watchdog config field 'fallback' = 'panic' is not valid"),
        ({"extreme_action": "freeze"}, "field 'extreme_action' = 'freeze' is not valid"),
        ({"latency": 0.1}, "watchdog config field 'latency' = 0.1 is not valid"),
        ({"domain_features": ["vol"]}, "feature 'vol' is not an observation feature"),
        ({"drift_scope": "order", "drift_window": 10, "drift_min_decisions": 11},
         "drift_min_decisions = 11 is more than an order's window of drift_window = 10"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        WatchdogConfig.from_dict(data)
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_the_defaults_are_the_issues_thresholds() -> None:
    c = WatchdogConfig()
    assert (c.late_elapsed, c.late_filled, c.price_band, c.min_confidence, c.drift_kl,
            c.max_latency_s, c.is_vs_twap, c.domain_sigmas) == (0.9, 0.5, 0.01, 0.6, 0.15, 0.1,
                                                               2.0, 3.0)
    assert c.acting and c.fallback == "twap" and c.extreme_action == "passive"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n_orders": 0}, "watchdog field 'n_orders' = 0"),
        ({"side": 2}, "watchdog field 'side' = 2"),
        ({"reference_actions": [0.5, 0.5]}, "'reference_actions' has shape (1, 2)"),
        ({"reference_actions": [0.0, 0.5, 0.5]}, "must hold positive probabilities"),
    ],
)
def test_bad_watchdog_arguments_are_one_line(kwargs: dict[str, Any], needle: str) -> None:
    args = {"n_orders": 1, "n_actions": 3, **kwargs}
    with pytest.raises(ConfigError) as info:
        Watchdog(WatchdogConfig(), **args)
    assert needle in str(info.value)


def test_a_feature_outside_the_schema_is_refused() -> None:
    with pytest.raises(ConfigError, match="watchdog feature 'imbalance_1' is not in the"):
        Watchdog(WatchdogConfig(), 1, domain=schema(), feature_names=("imbalance_1",))


def test_from_schema_takes_the_reference_from_the_action_histogram() -> None:
    wd = Watchdog.from_schema(WatchdogConfig(drift_smoothing=0.5), 1, 1, 3, schema())
    np.testing.assert_allclose(wd.reference[0], reference_distribution([20, 50, 30], 0.5))
    assert Watchdog.from_schema(WatchdogConfig(), 1, 1, 3, schema(False)).reference.size == 0
    assert Watchdog.from_schema(WatchdogConfig(), 1).reference.size == 0
    with pytest.raises(ConfigError, match="'action_counts' holds 3 actions; the policy's "
                                          "action set has 5"):
        Watchdog.from_schema(WatchdogConfig(), 1, 1, 5, schema())


def test_orders_at_different_steps_record_their_own() -> None:
    wd = watchdog(3)
    wd.check(np.array([4, 0, 17]), **{**CALM, "fault": [1, 0, 1]})
    assert wd.trigger_step.tolist() == [4, -1, 17]
