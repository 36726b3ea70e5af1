"""The fallback schedules (execrl.safety.fallback): each finishes exactly what remains by the
last step, whenever it takes over and however the venue fills, and each is the schedule its
name says (TWAP, VWAP by the volume profile, the Almgren–Chriss trajectory, split orders)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execrl.domain import ConfigError
from execrl.env.factory import EnvConfig
from execrl.evaluate.backtest import policy_context
from execrl.policies.baselines import make_baseline
from execrl.presets import preset_market
from execrl.safety.fallback import (
    FALLBACKS,
    FallbackSchedule,
    fallback_holdings,
    fallback_shares,
    step_fractions,
)
from execrl.sim.almgren_chriss import ACMarketConfig
from execrl.sim.theory import ac_trajectory


def schedule(kind: str, n_steps: int, split_orders: int = 4) -> FallbackSchedule:
    market = ACMarketConfig(n_steps=n_steps, volume_u_shape=0.6, risk_aversion=1e-5)
    return FallbackSchedule.from_knowledge(kind, market.knowledge(), split_orders=split_orders)


def run(sched: FallbackSchedule, remaining: np.ndarray, start: np.ndarray,
        fill: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Send the schedule's shares from each order's ``start`` to the horizon; the venue fills
    the share ``fill[k]`` of each child order (all of it by default). Returns the shares
    sent per step and what is left."""
    r = remaining.astype(np.int64).copy()
    n = sched.n_steps
    sent = np.zeros((n, r.size), dtype=np.int64)
    for k in range(n):
        shares = np.where(k >= start, sched.shares(r, np.full(r.size, k), start), 0)
        assert ((shares >= 0) & (shares <= r)).all()
        sent[k] = shares
        filled = shares if fill is None or k == n - 1 else np.floor(shares * fill[k]).astype(
            np.int64)
        r -= filled
    return sent, r


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(FALLBACKS), st.integers(1, 60), st.integers(1, 8),
    st.lists(st.integers(0, 10**9), min_size=1, max_size=6), st.data(),
)
def test_every_schedule_finishes_exactly_what_remains(
    kind: str, n_steps: int, split_orders: int, remaining: list[int], data: st.DataObject
) -> None:
    sched = schedule(kind, n_steps, split_orders)
    start = np.array(data.draw(st.lists(st.integers(0, n_steps - 1), min_size=len(remaining),
                                        max_size=len(remaining))))
    r0 = np.array(remaining)
    sent, left = run(sched, r0, start)
    assert left.tolist() == [0] * len(remaining)
    assert sent.sum(axis=0).tolist() == remaining
    assert (sent[: start.min()] == 0).all()
    # with a venue that fills only part of each child, the last step still sends the rest
    fill = np.array(data.draw(st.lists(st.floats(0.0, 1.0), min_size=n_steps,
                                       max_size=n_steps)))
    sent, left = run(sched, r0, start, fill)
    assert left.tolist() == [0] * len(remaining)


def test_twap_sends_equal_shares_in_every_step_left() -> None:
    sched = schedule("twap", 10)
    sent, _ = run(sched, np.array([1000, 1003, 7]), np.array([0, 4, 0]))
    assert sent[:, 0].tolist() == [100] * 10
    assert sent[:4, 1].tolist() == [0] * 4
    assert np.abs(sent[4:, 1] - 1003 / 6).max() <= 1.0  # re-planned over the 6 steps left
    assert sent[:, 2].sum() == 7


def test_vwap_follows_the_volume_profile() -> None:
    market = ACMarketConfig(n_steps=12, volume_u_shape=0.6)
    sched = FallbackSchedule("vwap", 12, volume_weights=market.volume_weights())
    qty = 1_000_000
    sent, _ = run(sched, np.array([qty]), np.array([0]))
    assert np.abs(sent[:, 0] - qty * market.volume_weights()).max() <= 1.0
    assert sent[0, 0] > sent[6, 0]  # the U shape: more at the open than at midday


def test_almgren_chriss_follows_the_cost_models_trajectory() -> None:
    market = ACMarketConfig(n_steps=10, risk_aversion=1e-5)
    sched = FallbackSchedule("almgren_chriss", 10, cost_model=market)
    qty = 500_000
    sent, _ = run(sched, np.array([qty]), np.array([0]))
    expected = -np.diff(ac_trajectory(market, qty))
    assert np.abs(sent[:, 0] - expected).max() <= 1.0
    assert sent[0, 0] > sent[-1, 0]  # risk aversion front-loads
    # no cost model: TWAP
    np.testing.assert_array_equal(FallbackSchedule("almgren_chriss", 10).fractions,
                                  FallbackSchedule("twap", 10).fractions)


def test_split_sends_equal_market_orders_right_after_the_switch() -> None:
    sched = schedule("split", 20, split_orders=4)
    sent, _ = run(sched, np.array([1000, 999, 10]), np.array([3, 18, 0]))
    assert sent[3:7, 0].tolist() == [250] * 4 and sent[:, 0].sum() == 1000
    assert (sent[7:, 0] == 0).all()
    assert sent[18:, 1].sum() == 999 and np.abs(sent[18:, 1] - 999 / 2).max() <= 1.0  # 2 left
    assert sent[:4, 2].sum() == 10 and np.abs(sent[:4, 2] - 2.5).max() <= 1.0


def test_the_function_is_the_schedule() -> None:
    r, k = np.array([100, 200, 300]), np.array([0, 5, 9])
    np.testing.assert_array_equal(
        fallback_shares("twap", r, k, 10), FallbackSchedule("twap", 10).shares(r, k))
    assert fallback_shares("twap", np.array([0, -5]), 0, 10).tolist() == [0, 0]


@pytest.mark.parametrize("name", ["twap", "vwap", "ac"])
def test_the_baselines_trade_the_same_schedules(name: str) -> None:
    """One place for the schedule arithmetic: the baseline of the same name has the
    fallback's step fractions."""
    market = preset_market("ac")
    ctx = policy_context(EnvConfig(market=market), market.default_order())
    policy = make_baseline(name, ctx)
    kind = {"ac": "almgren_chriss"}.get(name, name)
    sched = FallbackSchedule.from_knowledge(kind, ctx.market)
    np.testing.assert_array_equal(policy.step_fraction, sched.fractions)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: FallbackSchedule("panic", 10), "fallback 'panic' is unknown"),
        (lambda: FallbackSchedule("vwap", 10), "fallback 'vwap' needs the market's volume"),
        (lambda: FallbackSchedule("vwap", 10, volume_weights=np.ones(4)),
         "the volume profile has 4 steps, the order 10"),
        (lambda: FallbackSchedule("vwap", 3, volume_weights=[1.0, -1.0, 1.0]),
         "non-negative weights"),
        (lambda: FallbackSchedule("almgren_chriss", 10, cost_model=ACMarketConfig(n_steps=5)),
         "the cost model has n_steps = 5, the order 10"),
        (lambda: FallbackSchedule("twap", 0), "fallback field 'n_steps' = 0"),
        (lambda: FallbackSchedule("split", 10, split_orders=0), "'split_orders' = 0"),
    ],
)
def test_bad_fallbacks_are_one_line(call, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        call()
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_step_fractions_read_a_trajectory_against_what_remains() -> None:
    np.testing.assert_allclose(step_fractions([1.0, 0.5, 0.25, 0.0]), [0.5, 0.5, 1.0])
    np.testing.assert_allclose(step_fractions([1.0, 0.0, 0.0]), [1.0, 1.0])
    with pytest.raises(ValueError, match="non-increasing"):
        step_fractions([1.0, 1.5, 0.0])
    assert fallback_holdings("split", 4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
