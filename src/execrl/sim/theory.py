"""Closed forms for the Almgren–Chriss market (see ``execrl.sim.almgren_chriss``).

Cost is in currency, positive = cost, for a parent order of X shares (shared/DESIGN.md):
for a static schedule x_0 = X ≥ x_1 ≥ … ≥ x_N = 0 with trades n_k = x_{k−1} − x_k,

    E[cost]   = ε·Σ|n_k| + ½·γ·X² + (η̃/τ)·Σ n_k² + side·μ·τ·Σ_{k=1..N} x_k,   η̃ = η − γτ/2
    Var[cost] = σ_eff²·τ·Σ_{k=1..N} x_k²

(AC 2000, eqs. 6–8). The λ-optimal schedule is x_k = X·sinh(κ(T − t_k))/sinh(κT) with
cosh(κτ) = 1 + λσ²τ²/(2η̃); λ = 0 gives TWAP, the risk-neutral optimum.

With an observed OU signal α (``SignalConfig``) the expected cost of an adaptive schedule is
εX + ½γX² + E[Σ_k (η̃/τ)·n_k² + side·α_{k−1}·τ·x_k], and adding the running risk proxy
λσ²τ·x_k² gives a linear–quadratic problem in (x, α) solved exactly by a backward Riccati
recursion (``solve_signal_aware``). Its value is quadratic, V_k(x, α) = A_k x² + B_k xα +
C_k α² + D_k; A_k does not depend on the signal, so the signal-blind optimum is the AC
schedule and the expected gain of seeing α is −(C_0·Var[α_0] + D_0). The recursion ignores
ε·Σ|n_k| beyond ε·X, exact while the schedule never trades against the order's side; the
environment clips such trades, which ``evaluate`` measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError
from execrl.sim.almgren_chriss import ACMarketConfig


@dataclass(frozen=True)
class CostMoments:
    """Mean and variance of the cost of a schedule, in currency and in bps of X·S0."""

    expected: float
    variance: float
    notional: float

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    @property
    def expected_bps(self) -> float:
        return self.expected / self.notional * 1e4

    @property
    def std_bps(self) -> float:
        return self.std / self.notional * 1e4

    def objective(self, risk_aversion: float) -> float:
        """E[cost] + λ·Var[cost], in currency."""
        return self.expected + risk_aversion * self.variance


#: Largest κT for which sinh(κT) is computed directly (math.sinh overflows above ~710).
_SINH_SAFE = 700.0


def ac_kappa(config: ACMarketConfig) -> float:
    """κ of the λ-optimal trajectory: cosh(κτ) = 1 + λσ_eff²τ²/(2η̃)."""
    c = config
    arg = 1.0 + c.risk_aversion * c.sigma_eff**2 * c.tau**2 / (2.0 * c.eta_tilde)
    return math.acosh(arg) / c.tau


def ac_trajectory(config: ACMarketConfig, qty: float) -> NDArray[np.float64]:
    """Holdings x_0 … x_N of the λ-optimal schedule (continuous shares)."""
    c = config
    t = np.linspace(0.0, c.horizon, c.n_steps + 1)
    kappa = ac_kappa(config)
    if kappa * c.horizon < 1e-10:  # λ = 0 (or σ = 0): the limit is TWAP
        return qty * (c.horizon - t) / c.horizon
    if kappa * c.horizon > _SINH_SAFE:
        # sinh overflows: the same ratio as e^{−κt}·(1 − e^{−2κ(T−t)})/(1 − e^{−2κT}),
        # which for such urgency is everything in the first steps (κ may be inf here)
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.exp(-kappa * t) * np.expm1(-2.0 * kappa * (c.horizon - t))
            x = x / math.expm1(-2.0 * kappa * c.horizon)
        x[0], x[-1] = 1.0, 0.0
        return qty * x
    return qty * np.sinh(kappa * (c.horizon - t)) / math.sinh(kappa * c.horizon)


def twap_trajectory(config: ACMarketConfig, qty: float) -> NDArray[np.float64]:
    return qty * np.linspace(1.0, 0.0, config.n_steps + 1)


def schedule_moments(
    config: ACMarketConfig, holdings: NDArray[np.float64], side: int, s0: float | None = None
) -> CostMoments:
    """Exact E and Var of the cost of the static schedule ``holdings`` (x_0 … x_N = 0)."""
    c = config
    x = np.asarray(holdings, dtype=np.float64)
    if x.shape != (c.n_steps + 1,):
        raise ValueError(f"holdings has shape {x.shape}, expected ({c.n_steps + 1},)")
    if abs(x[-1]) > 1e-9 * max(1.0, abs(x[0])):
        raise ValueError(f"holdings must end at 0, got x_N = {x[-1]!r}")
    X = float(x[0])
    n = -np.diff(x)
    expected = (
        c.epsilon * np.abs(n).sum()
        + 0.5 * c.gamma * X**2
        + c.eta_tilde / c.tau * (n**2).sum()
        + side * c.drift * c.tau * x[1:].sum()
    )
    variance = c.sigma_eff**2 * c.tau * (x[1:] ** 2).sum()
    return CostMoments(float(expected), float(variance), X * float(s0 or c.s0))


@dataclass(frozen=True)
class SignalAwareSolution:
    """The exact optimum of the LQ problem with an observed OU signal.

    Decision k (0-based, before step k + 1) keeps ``hold[k]·x − alpha_coef[k]·α`` shares,
    i.e. trades n = x − that; the last decision sells everything.
    """

    hold: NDArray[np.float64]  # shape (N,)
    alpha_coef: NDArray[np.float64]  # shape (N,)
    A0: float
    B0: float
    C0: float
    D0: float
    alpha_var: float
    qty: float
    fixed_cost: float  # εX + ½γX²
    notional: float

    @property
    def expected_objective(self) -> float:
        """E[cost + λ·Σσ²τx_k²] under the optimal adaptive policy, α_0 stationary."""
        return self.fixed_cost + self.A0 * self.qty**2 + self.C0 * self.alpha_var + self.D0

    @property
    def blind_objective(self) -> float:
        """The same objective for the signal-blind optimum (the AC schedule)."""
        return self.fixed_cost + self.A0 * self.qty**2

    @property
    def expected_gain(self) -> float:
        """Objective saved by seeing the signal, in currency (≥ 0)."""
        return self.blind_objective - self.expected_objective

    @property
    def expected_gain_bps(self) -> float:
        return self.expected_gain / self.notional * 1e4

    def target_holdings(
        self, k: NDArray[np.intp], remaining: NDArray[np.float64], alpha: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return self.hold[k] * remaining - self.alpha_coef[k] * alpha


def solve_signal_aware(
    config: ACMarketConfig, qty: float, side: int, s0: float | None = None
) -> SignalAwareSolution:
    """Backward Riccati recursion for V_k(x, α) = A x² + B xα + C α² + D (see module doc)."""
    c = config
    if c.signal is None:
        raise ConfigError("market config field 'signal' is required for the signal-aware optimum")
    if c.drift != 0.0:
        raise ConfigError(
            f"market config field 'drift' = {c.drift!r}: the signal-aware optimum assumes 0"
        )
    N, tau = c.n_steps, c.tau
    phi = math.exp(-c.signal.kappa * tau)
    s2 = c.signal.sigma**2 * (1.0 - phi**2) / (2.0 * c.signal.kappa)
    h = c.eta_tilde / tau
    risk = c.risk_aversion * c.sigma_eff**2 * tau
    hold = np.zeros(N)
    alpha_coef = np.zeros(N)
    A, B, C, D = h, 0.0, 0.0, 0.0  # V_{N-1}: sell all x in the last step
    for k in range(N - 2, -1, -1):
        q = risk + A
        m = h + q
        e = 0.5 * (B * phi + side * tau)
        hold[k] = h / m
        alpha_coef[k] = e / m
        A, B, C, D = h - h * h / m, 2.0 * h * e / m, C * phi**2 - e * e / m, D + C * s2
    X = float(qty)
    return SignalAwareSolution(
        hold=hold,
        alpha_coef=alpha_coef,
        A0=A,
        B0=B,
        C0=C,
        D0=D,
        alpha_var=c.signal.stationary_std**2,
        qty=X,
        fixed_cost=c.epsilon * X + 0.5 * c.gamma * X**2,
        notional=X * float(s0 or c.s0),
    )
