"""The simulator against the closed forms: Almgren–Chriss moments and the signal-aware DP."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from execrl.domain import ParentOrder, Side
from execrl.env import EnvConfig
from execrl.evaluate.backtest import run_policies
from execrl.sim.almgren_chriss import ACMarketConfig, SignalConfig
from execrl.sim.theory import (
    ac_kappa,
    ac_trajectory,
    schedule_moments,
    solve_signal_aware,
    twap_trajectory,
)

# Almgren & Chriss (2000), §4 example: X = 1e6 shares, S0 = 50, T = 5 days, N = 5.
AC_PAPER = {"s0": 50.0, "sigma": 0.95, "epsilon": 1 / 16, "eta": 2.5e-6, "gamma": 2.5e-7,
            "horizon": 5.0, "n_steps": 5, "time_unit_s": 1.0, "drift": 0.0}
X = 1_000_000
Z = 4.0  # a 4-standard-error band: a correct simulator fails it with probability ~6e-5


def _order(side: Side, qty: int = X, horizon: float = 5.0) -> ParentOrder:
    return ParentOrder(order_id="T", symbol="T", side=side, qty=qty, arrival_px=50.0,
                       start_ts=0.0, horizon_s=horizon)


def test_ac_kappa_solves_the_discrete_equation():
    c = ACMarketConfig(**AC_PAPER, risk_aversion=2e-6)
    lhs = 2.0 / c.tau**2 * (math.cosh(ac_kappa(c) * c.tau) - 1.0)
    assert lhs == pytest.approx(c.risk_aversion * c.sigma**2 / c.eta_tilde, rel=1e-12)


def test_twap_moments_by_hand():
    c = ACMarketConfig(**AC_PAPER, risk_aversion=0.0)
    m = schedule_moments(c, twap_trajectory(c, X), side=-1)
    # ½γX² + εX + (η − γτ/2)/τ·Σn², with n = 2e5 five times (τ = 1)
    expected = 0.5 * 2.5e-7 * X**2 + X / 16 + (2.5e-6 - 1.25e-7) * 5 * (2e5) ** 2
    variance = 0.95**2 * 1.0 * sum((X * (1 - k / 5)) ** 2 for k in range(1, 6))
    assert m.expected == pytest.approx(expected, rel=1e-12)
    assert m.variance == pytest.approx(variance, rel=1e-12)


def test_ac_trajectory_minimises_the_mean_variance_objective():
    """Brute force: perturbing the closed-form schedule never lowers E + λ·Var."""
    c = ACMarketConfig(**AC_PAPER, risk_aversion=2e-6)
    x = ac_trajectory(c, X)
    best = schedule_moments(c, x, -1).objective(c.risk_aversion)
    rng = np.random.default_rng(0)
    for _ in range(200):
        y = x.copy()
        y[1:-1] += rng.normal(0.0, 2e4, size=y.size - 2)
        assert schedule_moments(c, y, -1).objective(c.risk_aversion) >= best - 1e-6


@pytest.mark.parametrize("risk_aversion", [0.0, 1e-6, 2e-6])
@pytest.mark.parametrize("side", [Side.SELL, Side.BUY])
def test_simulated_ac_and_twap_match_closed_forms(risk_aversion, side):
    market = ACMarketConfig(**AC_PAPER, risk_aversion=risk_aversion)
    config = EnvConfig(market=market)
    n = 40_000
    runs = run_policies(["twap", "ac"], config, _order(side), n_orders=n, seed=2024)
    for run, x in zip(runs, [twap_trajectory(market, X), ac_trajectory(market, X)], strict=True):
        theory = schedule_moments(market, x, side.sign)
        is_bps = run.episodes["is_bps"].to_numpy()
        assert (run.episodes["fill_rate"] == 1.0).all()
        mean_se = theory.std_bps / math.sqrt(n)
        assert abs(is_bps.mean() - theory.expected_bps) < Z * mean_se, run.policy
        var_se = theory.std_bps**2 * math.sqrt(2.0 / (n - 1))  # cost is Gaussian here
        assert abs(is_bps.var(ddof=1) - theory.std_bps**2) < Z * var_se, run.policy
    if risk_aversion == 0.0:  # the risk-neutral optimum is TWAP itself
        np.testing.assert_array_equal(runs[0].schedules, runs[1].schedules)
    else:
        assert not np.array_equal(runs[0].schedules, runs[1].schedules)


def test_drift_and_stress_enter_the_moments():
    """A sell in a rising market (μ > 0) costs less by μτΣx_k; σ scales with the regime."""
    market = ACMarketConfig(**{**AC_PAPER, "drift": 0.4}, risk_aversion=1e-6, vol_multiplier=1.5)
    n = 40_000
    (run,) = run_policies(["ac"], EnvConfig(market=market), _order(Side.SELL), n, seed=5)
    x = ac_trajectory(market, X)
    theory = schedule_moments(market, x, -1)
    no_drift = schedule_moments(market.model_copy(update={"drift": 0.0}), x, -1)
    assert theory.expected < no_drift.expected
    is_bps = run.episodes["is_bps"].to_numpy()
    assert abs(is_bps.mean() - theory.expected_bps) < Z * theory.std_bps / math.sqrt(n)
    assert theory.std_bps == pytest.approx(1.5 * schedule_moments(
        market.model_copy(update={"vol_multiplier": 1.0}), x, -1).std_bps)
    assert abs(is_bps.std(ddof=1) / theory.std_bps - 1.0) < Z * math.sqrt(0.5 / n)


# -- the signal-aware optimum ------------------------------------------------------------------
SIGNAL_MARKET = ACMarketConfig(**{**AC_PAPER, "n_steps": 10}, risk_aversion=1e-7,
                               signal=SignalConfig(kappa=2.0, sigma=0.3))


@pytest.mark.parametrize("side", [-1, 1])
def test_signal_dp_two_steps_equals_direct_minimisation(side):
    """N = 2: one real decision; minimise its expected objective numerically for given α."""
    c = ACMarketConfig(**{**AC_PAPER, "n_steps": 2}, risk_aversion=2e-6,
                       signal=SignalConfig(kappa=1.0, sigma=0.5))
    sol = solve_signal_aware(c, X, side)
    h, tau = c.eta_tilde / c.tau, c.tau
    for alpha in (-0.3, 0.0, 0.2):
        def objective(y, alpha=alpha):
            # step 1 trades X − y, step 2 trades y; holding y through step 1 costs side·α·τ·y
            return (h * (X - y) ** 2 + side * alpha * tau * y
                    + c.risk_aversion * c.sigma**2 * tau * y**2 + h * y**2)
        best = minimize_scalar(objective, bounds=(-X, 2 * X), method="bounded",
                               options={"xatol": 1e-3}).x
        assert sol.target_holdings(np.array([0]), np.array([float(X)]),
                                   np.array([alpha]))[0] == pytest.approx(best, abs=1.0)


def test_signal_dp_blind_part_is_the_ac_objective():
    c = SIGNAL_MARKET
    sol = solve_signal_aware(c, X, -1)
    ac = schedule_moments(c, ac_trajectory(c, X), -1)
    assert sol.blind_objective == pytest.approx(ac.objective(c.risk_aversion), rel=1e-10)
    assert sol.expected_gain > 0


def test_signal_aware_policy_earns_the_dp_gain_in_the_simulator():
    """Monte Carlo of E[cost + λΣσ²τx²] under the DP policy and under AC, paired on paths."""
    c = SIGNAL_MARKET
    order = _order(Side.SELL, horizon=c.horizon)
    n = 40_000
    runs = {r.policy: r for r in run_policies(["ac", "signal_aware"], EnvConfig(market=c),
                                              order, n, seed=99)}
    sol = solve_signal_aware(c, X, -1)
    notional = X * c.s0

    def objective_bps(run):
        holdings = X - np.cumsum(run.schedules, axis=1)  # x_1 … x_N
        risk = c.risk_aversion * c.sigma**2 * c.tau * (holdings.astype(float) ** 2).sum(axis=1)
        return run.episodes["is_bps"].to_numpy() + risk / notional * 1e4

    aware, blind = objective_bps(runs["signal_aware"]), objective_bps(runs["ac"])
    gain = blind - aware  # paired over the same paths
    se = gain.std(ddof=1) / math.sqrt(n)
    # In this market the optimal trades never reverse the order, so the env's clipping never
    # binds and the simulated policy is the DP's policy exactly (up to whole shares).
    assert gain.mean() > 0
    assert abs(gain.mean() - sol.expected_gain_bps) < Z * se
    se_aware = aware.std(ddof=1) / math.sqrt(n)
    expected = sol.expected_objective / notional * 1e4
    assert abs(aware.mean() - expected) < Z * se_aware
