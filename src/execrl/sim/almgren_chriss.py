"""The Almgren–Chriss market, batched over ``n_envs`` independent markets.

Conventions (shared/DESIGN.md; AC 2000 §2, discrete time). Horizon T in N steps of τ = T/N;
``side`` is +1 for a buy and −1 for a sell; a step trades ``n_k ≥ 0`` shares. In step k:

    execution price   P̃_k = S_{k−1} + side·(ε·1[n_k > 0] + (η/τ)·n_k)
    mid               S_k = S_{k−1} + (μ + α_{k−1})·τ + σ_eff·√τ·ξ_k + side·γ·n_k
    signal            α_k = φ·α_{k−1} + s·ζ_k,   φ = e^{−κτ},  s² = σ_α²(1 − φ²)/(2κ)

so that a sell mirrors a buy. α is the Cartea–Jaimungal (2016) order-flow alpha
(dS = (α − b·v)dt + σdW), an Ornstein–Uhlenbeck process started in its stationary law;
``σ_eff = σ·vol_multiplier`` models a stressed regime. Market volume in step k is the U-shaped
expectation times a mean-one log-normal factor; the interval VWAP prices that volume at the
step's mid-point (our own impact included, as on a real tape). The arrival VWAP is the VWAP of
``pre_arrival_steps`` steps before the order arrives, simulated backwards from S_0.

Every episode's random path is drawn at ``reset`` (before any order), one independent
stream per noise channel, so episode i of a seed is the same path for every policy and for
every batch size ≥ i + 1 (common random numbers).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from execrl.domain import ConfigError, OrderType
from execrl.domain.errors import describe_pydantic_error
from execrl.market.volume import u_shape_weights
from execrl.sim.base import ORDER_TYPE_CODES, ChildOrderBatch, FillBatch

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class SignalConfig(BaseModel):
    """An observed Ornstein–Uhlenbeck alpha that moves the price: dα = −κα dt + σ_α dW."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kappa: Positive
    """Mean-reversion speed per time unit."""
    sigma: NonNegative
    """Volatility of α (price per time unit per √time unit)."""

    @property
    def stationary_std(self) -> float:
        return self.sigma / math.sqrt(2.0 * self.kappa)


class ACMarketConfig(BaseModel):
    """Parameters of the Almgren–Chriss market. Defaults: the AC (2000) paper's example.

    Units: prices in currency, time in ``time unit``s (one trading day of ``time_unit_s``
    seconds in the paper), σ in price per √time unit, η in price·time per share, γ and ε in
    price per share.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    s0: Positive = 50.0
    sigma: NonNegative = 0.95
    eta: Positive = 2.5e-6
    gamma: NonNegative = 2.5e-7
    epsilon: NonNegative = 0.0625
    drift: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    risk_aversion: NonNegative = 1e-6
    """λ of the mean-variance objective E[cost] + λ·Var[cost]."""
    horizon: Positive = 5.0
    """T, in time units."""
    n_steps: Annotated[int, Field(ge=1, le=10_000)] = 10
    time_unit_s: Positive = 23_400.0
    adv: Positive = 5e6
    """Expected market volume per time unit, in shares."""
    volume_u_shape: Annotated[float, Field(ge=0, lt=1)] = 0.5
    volume_noise: NonNegative = 0.2
    vol_multiplier: Positive = 1.0
    pre_arrival_steps: Annotated[int, Field(ge=1, le=10_000)] = 5
    signal: SignalConfig | None = None

    @model_validator(mode="after")
    def _eta_tilde_positive(self) -> ACMarketConfig:
        if self.eta_tilde <= 0:
            raise ValueError(
                f"eta - gamma*tau/2 = {self.eta_tilde!r} must be > 0 (eta={self.eta}, "
                f"gamma={self.gamma}, tau={self.tau}): the AC problem is not convex otherwise"
            )
        return self

    @classmethod
    def from_dict(cls, data: Any) -> ACMarketConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_pydantic_error("market config", exc)) from None

    @property
    def tau(self) -> float:
        return self.horizon / self.n_steps

    @property
    def eta_tilde(self) -> float:
        """η̃ = η − γτ/2, the temporary impact net of the permanent impact's own share."""
        return self.eta - 0.5 * self.gamma * self.tau

    @property
    def sigma_eff(self) -> float:
        return self.sigma * self.vol_multiplier

    def volume_weights(self) -> NDArray[np.float64]:
        return u_shape_weights(self.n_steps, self.volume_u_shape)

    def to_results(self, qty: int, side: str) -> dict[str, Any]:
        """The ``"market"`` block of results.json: enough to recompute every closed form."""
        out: dict[str, Any] = {
            "model": "almgren_chriss",
            "X": qty,
            "S0": self.s0,
            "T": self.horizon,
            "N": self.n_steps,
            "sigma": self.sigma,
            "eta": self.eta,
            "gamma": self.gamma,
            "epsilon": self.epsilon,
            "lambda": self.risk_aversion,
            "side": side,
            "drift": self.drift,
            "vol_multiplier": self.vol_multiplier,
            "adv": self.adv,
            "volume_u_shape": self.volume_u_shape,
            "volume_noise": self.volume_noise,
            "time_unit_s": self.time_unit_s,
        }
        if self.signal is not None:
            out["signal"] = {"kappa": self.signal.kappa, "sigma": self.signal.sigma}
        return out


_MARKET_CODE = ORDER_TYPE_CODES[OrderType.MARKET]


class ACMarket:
    """``n_envs`` Almgren–Chriss markets stepped together with numpy (no loop over markets)."""

    def __init__(self, config: ACMarketConfig, n_envs: int, side: int, s0: float | None = None):
        if side not in (1, -1):
            raise ValueError(f"side = {side!r} must be +1 (buy) or -1 (sell)")
        if n_envs < 1:
            raise ValueError(f"n_envs = {n_envs!r} must be >= 1")
        self.config = config
        self.n_envs = n_envs
        self.n_steps = config.n_steps
        self.side = side
        self.s0 = float(config.s0 if s0 is None else s0)
        c = config
        self._tau = c.tau
        self._sqrt_tau = math.sqrt(c.tau)
        self._temp = c.eta / c.tau
        self._expected_volume = c.adv * c.horizon * c.volume_weights()  # per step, shares
        self._has_signal = c.signal is not None and c.signal.sigma > 0
        if c.signal is not None:
            self._phi = math.exp(-c.signal.kappa * c.tau)
            self._alpha_step_std = c.signal.sigma * math.sqrt(
                (1.0 - self._phi**2) / (2.0 * c.signal.kappa)
            )
            self._alpha_std = c.signal.stationary_std
        self.available_features: tuple[str, ...] = (
            "price_drift",
            "volatility",
            "spread_bps",
            "last_volume",
            "expected_volume",
        ) + (("signal",) if self._has_signal else ())

        n, N = n_envs, self.n_steps
        self._mid = np.full(n, self.s0)
        self._alpha = np.zeros(n)
        self._k = np.zeros(n, dtype=np.int64)
        self._xi = np.zeros((n, N))
        self._zeta = np.zeros((n, N))
        self._vol_factor = np.ones((n, N))
        self._last_volume = np.zeros(n)
        self._iv_num = np.zeros(n)
        self._iv_den = np.zeros(n)
        self.arrival_vwap = np.full(n, self.s0)
        self._arrival = np.full(n, self.s0)
        self._rows = np.arange(n)

    # -- protocol -------------------------------------------------------------------------
    @property
    def mid(self) -> NDArray[np.float64]:
        return self._mid

    @property
    def arrival_mid(self) -> NDArray[np.float64]:
        return self._arrival

    @property
    def alpha(self) -> NDArray[np.float64]:
        return self._alpha

    @property
    def interval_vwap(self) -> NDArray[np.float64]:
        """Market VWAP over the steps so far (S_0 before any step)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._iv_den > 0, self._iv_num / self._iv_den, self._mid)

    def reset(self, rng: np.random.Generator, env_ids: NDArray[np.intp] | None = None) -> None:
        ids = self._rows if env_ids is None else np.asarray(env_ids, dtype=np.intp)
        m = ids.size
        if m == 0:
            return
        c = self.config
        N, M = self.n_steps, c.pre_arrival_steps
        # One stream per channel: episode i's path does not depend on how many are drawn.
        g_xi, g_alpha, g_vol, g_pre = rng.spawn(4)
        self._xi[ids] = g_xi.standard_normal((m, N))
        if self._has_signal:
            a = g_alpha.standard_normal((m, N + 1))
            self._alpha[ids] = a[:, 0] * self._alpha_std
            self._zeta[ids] = a[:, 1:]
        else:
            self._alpha[ids] = 0.0
        if c.volume_noise > 0:
            nu = c.volume_noise
            self._vol_factor[ids] = np.exp(nu * g_vol.standard_normal((m, N)) - 0.5 * nu * nu)
        self._mid[ids] = self.s0
        self._arrival[ids] = self.s0
        self._k[ids] = 0
        self._iv_num[ids] = 0.0
        self._iv_den[ids] = 0.0
        self._last_volume[ids] = c.adv * self._tau  # before the first step: a flat step's mean
        self.arrival_vwap[ids] = self._simulate_arrival_vwap(g_pre, m, M)

    def _simulate_arrival_vwap(self, rng: np.random.Generator, m: int, M: int) -> NDArray:
        c = self.config
        shocks = rng.standard_normal((m, 2 * M))
        steps = c.drift * self._tau + c.sigma_eff * self._sqrt_tau * shocks[:, :M]
        # mids[:, j] = S_{-j}: walk back from S_0.
        mids = self.s0 - np.concatenate([np.zeros((m, 1)), np.cumsum(steps, axis=1)], axis=1)
        nu = c.volume_noise
        volume = c.adv * self._tau * np.exp(nu * shocks[:, M:] - 0.5 * nu * nu)
        interval_px = 0.5 * (mids[:, :-1] + mids[:, 1:])
        return (volume * interval_px).sum(axis=1) / volume.sum(axis=1)

    def execute(self, orders: ChildOrderBatch, active: NDArray[np.bool_]) -> FillBatch:
        if np.any(orders.order_type[active] != _MARKET_CODE):
            bad = OrderType(list(OrderType)[int(orders.order_type[active][0])]).value
            raise ValueError(f"the Almgren-Chriss market fills market orders only, got {bad!r}")
        c = self.config
        n = np.where(active, orders.qty, 0)
        k = np.minimum(self._k, self.n_steps - 1)
        side = self.side
        mid = self._mid
        traded = n > 0
        exec_px = mid + side * (c.epsilon * traded + self._temp * n)
        new_mid = (
            mid
            + (c.drift + self._alpha) * self._tau
            + c.sigma_eff * self._sqrt_tau * self._xi[self._rows, k]
            + side * c.gamma * n
        )
        volume = self._expected_volume[k] * self._vol_factor[self._rows, k]
        self._iv_num += np.where(active, volume * 0.5 * (mid + new_mid), 0.0)
        self._iv_den += np.where(active, volume, 0.0)
        self._last_volume = np.where(active, volume, self._last_volume)
        if self._has_signal:
            new_alpha = self._phi * self._alpha + self._alpha_step_std * self._zeta[self._rows, k]
            self._alpha = np.where(active, new_alpha, self._alpha)
        self._mid = np.where(active, new_mid, mid)
        self._k += active
        return FillBatch(qty=n.astype(np.int64), avg_px=np.where(traded, exec_px, np.nan))

    def feature(self, name: str) -> NDArray[np.float64]:
        c = self.config
        if name == "price_drift":  # in units of the horizon's price volatility
            return (self._mid - self._arrival) / (c.sigma_eff * math.sqrt(c.horizon) or 1.0)
        if name == "volatility":
            return np.full(self.n_envs, c.vol_multiplier)
        if name == "spread_bps":
            return 2.0 * c.epsilon / self._mid * 1e4
        if name == "last_volume":
            return self._last_volume
        if name == "expected_volume":
            return self._expected_volume[np.minimum(self._k, self.n_steps - 1)]
        if name == "signal" and self._has_signal:
            return self._alpha / self._alpha_std
        raise KeyError(
            f"feature {name!r} is not provided by the Almgren-Chriss market; "
            f"available: {', '.join(self.available_features)}"
        )
