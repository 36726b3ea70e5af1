"""Tests for execrl.policies: the baselines' schedules, POV's cap, signal-aware, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execrl.domain import ConfigError, ParentOrder
from execrl.env import EnvConfig, make_execution
from execrl.evaluate.backtest import policy_context, run_policies
from execrl.policies import make_baseline
from execrl.sim import ACMarketConfig, SignalConfig
from execrl.sim.theory import ac_trajectory

DAY_S = 23_400.0


def make_order(qty: int = 1_000_000, side: str = "sell", days: float = 5.0) -> ParentOrder:
    return ParentOrder.from_dict(
        {
            "order_id": "P-1",
            "symbol": "XYZ",
            "side": side,
            "qty": qty,
            "arrival_px": 50.0,
            "start_ts": 0,
            "horizon_s": days * DAY_S,
        }
    )


def schedules(specs: list[str], market: ACMarketConfig, order: ParentOrder) -> dict[str, Any]:
    runs = run_policies(specs, EnvConfig(market=market), order, n_orders=3, seed=0)
    out = {}
    for run in runs:
        assert run.schedules.shape == (3, market.n_steps)
        assert run.schedules.dtype.kind == "i"
        np.testing.assert_array_equal(run.schedules.sum(axis=1), order.qty)
        np.testing.assert_array_equal(run.episodes["fill_rate"], 1.0)
        out[run.policy] = run.schedules
    return out


def u_shape_weights_by_simpson(n_steps: int, amplitude: float) -> np.ndarray:
    """Integral of the density 1 + a·(12(s − ½)² − 1) over each of n equal intervals of [0, 1]
    by Simpson's rule (exact for a quadratic), normalised."""

    def density(s: np.ndarray) -> np.ndarray:
        return 1.0 + amplitude * (12.0 * (s - 0.5) ** 2 - 1.0)

    a = np.arange(n_steps) / n_steps
    b = (np.arange(n_steps) + 1) / n_steps
    w = (b - a) / 6.0 * (density(a) + 4.0 * density(0.5 * (a + b)) + density(b))
    return w / w.sum()


def ac_holdings_by_hand(market: ACMarketConfig, qty: float) -> np.ndarray:
    """x_k = X·sinh(κ(T − t_k))/sinh(κT), cosh(κτ) = 1 + λσ²τ²/(2η̃), η̃ = η − γτ/2."""
    T, N = market.horizon, market.n_steps
    tau = T / N
    sigma = market.sigma * market.vol_multiplier
    eta_tilde = market.eta - 0.5 * market.gamma * tau
    kappa = math.acosh(1.0 + market.risk_aversion * sigma**2 * tau**2 / (2.0 * eta_tilde)) / tau
    t = np.arange(N + 1) * tau
    return qty * np.sinh(kappa * (T - t)) / math.sinh(kappa * T)


# -- static schedules -------------------------------------------------------------------------


@pytest.mark.parametrize("qty", [1_000_000, 1_003, 999_999])
@pytest.mark.parametrize("side", ["sell", "buy"])
def test_twap_trades_equal_whole_shares(qty: int, side: str) -> None:
    market = ACMarketConfig(n_steps=10)
    got = schedules(["twap"], market, make_order(qty=qty, side=side))["twap"]
    per_step = qty / 10
    assert np.all(np.abs(got - per_step) < 1.0)
    if qty % 10 == 0:
        np.testing.assert_array_equal(got, qty // 10)


@pytest.mark.parametrize("u_shape", [0.0, 0.5, 0.9])
def test_vwap_follows_the_volume_profile(u_shape: float) -> None:
    market = ACMarketConfig(n_steps=10, volume_u_shape=u_shape)
    order = make_order(qty=1_000_003)
    weights = u_shape_weights_by_simpson(10, u_shape)
    ctx_market = policy_context(EnvConfig(market=market), order).market
    np.testing.assert_allclose(ctx_market.volume_weights, weights, rtol=1e-12)
    got = schedules(["vwap"], market, order)["vwap"]
    assert np.all(np.abs(got - order.qty * weights) <= 1.0)
    if u_shape > 0:  # U-shaped: more at the open and close than mid-session
        assert got[0, 0] > got[0, 4] and got[0, -1] > got[0, 5]


@pytest.mark.parametrize("risk_aversion", [1e-6, 5e-6])
@pytest.mark.parametrize("side", ["sell", "buy"])
def test_ac_follows_the_closed_form_trajectory(risk_aversion: float, side: str) -> None:
    market = ACMarketConfig(risk_aversion=risk_aversion)
    order = make_order(side=side)
    ctx_market = policy_context(EnvConfig(market=market), order).market.cost_model
    assert ctx_market.horizon == pytest.approx(5.0)
    holdings = ac_holdings_by_hand(ctx_market, order.qty)
    np.testing.assert_allclose(ac_trajectory(ctx_market, order.qty), holdings, rtol=1e-12)
    expected = -np.diff(np.rint(holdings))
    got = schedules(["ac"], market, order)["ac"]
    assert np.all(np.abs(got - expected) <= 1.0)
    # front-loaded, strictly decreasing (λ > 0), unlike TWAP
    assert np.all(np.diff(got[0]) < 0)


def test_ac_parameter_overrides_risk_aversion() -> None:
    market = ACMarketConfig(risk_aversion=1e-6)
    order = make_order()
    got = schedules(["ac:5e-6"], market, order)["ac:5e-6"]
    ctx_market = policy_context(EnvConfig(market=market), order).market.cost_model
    expected = -np.diff(
        np.rint(
            ac_holdings_by_hand(ctx_market.model_copy(update={"risk_aversion": 5e-6}), order.qty)
        )
    )
    assert np.all(np.abs(got - expected) <= 1.0)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 80), st.floats(0.0, 0.99))
def test_vwap_builds_for_any_profile(n_steps: int, u_shape: float) -> None:
    """Any valid market gives a VWAP policy whose fractions reproduce the profile."""
    market = ACMarketConfig(n_steps=n_steps, volume_u_shape=u_shape)
    ctx = policy_context(EnvConfig(market=market), make_order())
    policy = make_baseline("vwap", ctx)
    frac = policy.step_fraction
    assert frac.shape == (n_steps,)
    assert np.all((frac >= 0.0) & (frac <= 1.0))
    assert frac[-1] == 1.0  # the last step trades what remains
    # holdings implied by the fractions: x_{k+1} = x_k·(1 − f_k), x_0 = 1
    x = np.concatenate([[1.0], np.cumprod(1.0 - frac)])
    np.testing.assert_allclose(-np.diff(x), u_shape_weights_by_simpson(n_steps, u_shape), atol=1e-9)


def test_vwap_runs_on_a_nine_step_market() -> None:
    market = ACMarketConfig(n_steps=9, volume_u_shape=0.1)
    order = make_order(qty=900_001)
    got = schedules(["vwap"], market, order)["vwap"]
    assert np.all(np.abs(got - order.qty * u_shape_weights_by_simpson(9, 0.1)) <= 1.0)


def test_ac_with_zero_risk_aversion_is_twap() -> None:
    got = schedules(["ac:0", "twap"], ACMarketConfig(), make_order(qty=1_000_007))
    np.testing.assert_array_equal(got["ac:0"], got["twap"])


@pytest.mark.parametrize("side", ["sell", "buy"])
def test_immediate_trades_everything_in_the_first_step(side: str) -> None:
    got = schedules(["immediate"], ACMarketConfig(), make_order(qty=777_777, side=side))
    np.testing.assert_array_equal(got["immediate"][:, 0], 777_777)
    np.testing.assert_array_equal(got["immediate"][:, 1:], 0)


def test_run_policies_refuses_the_same_policy_twice() -> None:
    with pytest.raises(ConfigError) as info:
        run_policies(["twap", "twap"], EnvConfig(), make_order(), n_orders=2, seed=0)
    assert "twap" in str(info.value)


# -- POV --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.02, 0.05, 0.1])
def test_pov_never_exceeds_its_participation_rate(rate: float) -> None:
    market = ACMarketConfig()
    order = make_order()
    policy = make_baseline(f"pov:{rate}", policy_context(EnvConfig(market=market), order))
    config = EnvConfig(market=market, observations=policy.observations, actions=policy.action_set)
    core = make_execution(config, order, n_envs=8, autoreset=False)
    obs = core.reset(seed=1)
    for k in range(core.n_steps):
        last_volume = core.market.feature("last_volume").copy()
        remaining = core.remaining.copy()
        before = core.stats.filled.copy()
        obs, *_ = core.step(policy.act(obs))
        traded = core.stats.filled - before
        if k == core.n_steps - 1:
            np.testing.assert_array_equal(traded, remaining)  # forced completion
            continue
        limit = rate * last_volume
        # float32 observations: a few ulps (2^-24 each) of relative error, not half a share
        over = traded - limit * (1.0 + 2.0**-21)
        assert np.all(over <= 0.0), (
            f"step {k}: traded {traded[over > 0]} > {rate} x last volume {last_volume[over > 0]}"
        )
        # ... and it does participate: within one share of the rate (or all that remains)
        np.testing.assert_array_less(np.minimum(limit, remaining) - 1.0, traded + 1e-9)
    assert core.done.all()


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("hodl", "hodl"),
        ("twap:3", "twap"),
        ("vwap:0.5", "vwap"),
        ("immediate:1", "immediate"),
        ("pov:abc", "abc"),
        ("pov:1.5", "1.5"),
        ("pov:0", "0"),
        ("pov:-0.1", "-0.1"),
        ("ac:-1", "-1"),  # λ < 0: not a risk aversion
        ("ac:nan", "nan"),
        ("ac:inf", "inf"),
    ],
)
def test_make_baseline_refuses_bad_specs(spec: str, named: str) -> None:
    ctx = policy_context(EnvConfig(), make_order())
    with pytest.raises(ConfigError) as info:
        make_baseline(spec, ctx)
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_make_baseline_parses_parameters() -> None:
    ctx = policy_context(EnvConfig(), make_order())
    pov = make_baseline("pov:0.1", ctx)
    assert pov.name == "pov:0.1" and pov.rate == 0.1
    assert make_baseline("pov:1", ctx).rate == 1.0
    assert make_baseline("pov", ctx).name == "pov"


# -- signal-aware -----------------------------------------------------------------------------

SIGNAL_MARKET = ACMarketConfig(signal=SignalConfig(kappa=2.0, sigma=1.0))


def test_signal_aware_refuses_a_market_without_signal() -> None:
    ctx = policy_context(EnvConfig(), make_order())
    with pytest.raises(ConfigError) as info:
        make_baseline("signal_aware", ctx)
    assert "signal" in str(info.value)


def signal_obs(remaining: float, step: int, n_steps: int, signal: float) -> np.ndarray:
    return np.array([[remaining, step / n_steps, signal]], dtype=np.float32)


@pytest.mark.parametrize("step", [0, 3, 8])
@pytest.mark.parametrize("side", ["sell", "buy"])
def test_signal_aware_trades_faster_when_the_signal_is_against_it(side: str, step: int) -> None:
    order = make_order(side=side)
    policy = make_baseline("signal_aware", policy_context(EnvConfig(market=SIGNAL_MARKET), order))
    assert policy.observations == ("remaining_ratio", "elapsed_ratio", "signal")
    n = SIGNAL_MARKET.n_steps
    falling = float(policy.act(signal_obs(0.5, step, n, -1.0))[0, 0])  # price expected to fall
    rising = float(policy.act(signal_obs(0.5, step, n, +1.0))[0, 0])
    assert 0.0 <= falling <= 1.0 and 0.0 <= rising <= 1.0
    if side == "sell":
        assert falling > rising  # sell before the price falls
    else:
        assert rising > falling  # buy before the price rises


def test_signal_aware_with_zero_signal_follows_the_ac_schedule() -> None:
    """The signal-blind part of the optimum is the AC trajectory (theory module doc):
    at α = 0 on the AC path each decision trades 1 − x_{k+1}/x_k of what remains."""
    order = make_order()
    ctx = policy_context(EnvConfig(market=SIGNAL_MARKET), order)
    policy = make_baseline("signal_aware", ctx)
    x = ac_holdings_by_hand(ctx.market.cost_model, 1.0)
    n = SIGNAL_MARKET.n_steps
    for k in range(n):
        got = float(policy.act(signal_obs(x[k], k, n, 0.0))[0, 0])
        assert got == pytest.approx(1.0 - x[k + 1] / x[k], rel=1e-5, abs=1e-6)


def test_signal_aware_sells_everything_at_the_last_step() -> None:
    policy = make_baseline(
        "signal_aware", policy_context(EnvConfig(market=SIGNAL_MARKET), make_order())
    )
    n = SIGNAL_MARKET.n_steps
    for signal in (-2.0, 0.0, 2.0):
        assert float(policy.act(signal_obs(0.3, n - 1, n, signal))[0, 0]) == 1.0
