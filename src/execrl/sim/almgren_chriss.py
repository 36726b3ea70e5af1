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
from typing import Annotated, Any, Literal

import numpy as np
from numba import njit
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from execrl.domain import ConfigError, OrderType, ParentOrder
from execrl.domain.errors import describe_pydantic_error
from execrl.market.volume import u_shape_weights
from execrl.sim.base import ORDER_TYPE_CODES, REJECT_ORDER_TYPE, ChildOrderBatch, FillBatch
from execrl.sim.spec import MarketKnowledge

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]

#: Largest price move, as a multiple of the arrival price, that a market may be asked to model
#: (``ACMarketConfig.validate_for_order``): the IS then stays below 1e10 bps.
MAX_MOVE_MULTIPLE = 1e6
#: Largest risk term (λ·Var) or signal value, in bps of the order's notional: far inside
#: float32, which observations and training rewards use.
MAX_TERM_BPS = 1e30
#: Normal draws beyond this many standard deviations do not occur (p ≈ 1e-23 per draw).
_MAX_DRAW_SD = 10.0
#: Largest expected volume of one step, in shares: counts stay exact in float64 and int64.
_MAX_STEP_VOLUME = float(2**53)


class SignalConfig(BaseModel):
    """An observed Ornstein–Uhlenbeck alpha that moves the price: dα = −κα dt + σ_α dW."""

    # strict: a market file's "1.2" (a string) or true (for a number) is refused, as in an
    # order; an integer is still a valid float
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

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

    Each field is validated alone here (strictly: no string for a number, no boolean for a
    count); ``validate_for_order`` checks that the market and an order together stay inside
    the range where the simulation's numbers are finite and meaningful. ``s0`` and
    ``horizon`` are the order's (its arrival price and horizon, ``market_for_order``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: Literal["almgren_chriss"] = "almgren_chriss"
    """The market-specification union's tag (``execrl.sim.spec``)."""
    s0: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)] = 50.0
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
    time_unit_s: Annotated[float, Field(ge=1e-3, le=1e9, allow_inf_nan=False)] = 23_400.0
    """Seconds in one time unit (a millisecond to about 31.7 years)."""
    adv: Annotated[float, Field(ge=1, le=1e15, allow_inf_nan=False)] = 5e6
    """Expected market volume per time unit, in shares."""
    volume_u_shape: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.5
    volume_noise: Annotated[float, Field(ge=0, le=5, allow_inf_nan=False)] = 0.2
    """Standard deviation of a step's log volume (5: volumes spread over e^±50)."""
    vol_multiplier: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 1.0
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
    def from_dict(cls, data: Any, what: str = "market config") -> ACMarketConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_pydantic_error(what, exc)) from None

    # -- the market specification (execrl.sim.spec.MarketSpec) -------------------------------
    @property
    def baselines(self) -> tuple[str, ...]:
        """The rule-based policies `execrl evaluate` runs by default on this market."""
        return ("twap", "vwap", "pov", "ac", "immediate")

    def for_order(self, order: ParentOrder) -> ACMarketConfig:
        """This market with the order's horizon (in the market's time unit) and arrival price;
        a market and order whose numbers would not stay finite are refused by name
        (``validate_for_order``)."""
        update: dict[str, Any] = {"horizon": order.horizon / self.time_unit_s}
        if order.arrival_px is not None:
            update["s0"] = order.arrival_px
        for_order = ACMarketConfig.from_dict({**self.model_dump(), **update})
        for_order.validate_for_order(order.qty)
        return for_order

    def build(self, n_envs: int, side: int) -> ACMarket:
        return ACMarket(self, n_envs=n_envs, side=side)

    def knowledge(self) -> MarketKnowledge:
        """A policy may know this whole model: it is its own exact cost model."""
        return MarketKnowledge(self.n_steps, self.volume_weights(), cost_model=self)

    def risk_var_per_share2(self) -> float:
        """σ_eff²·τ: the price variance one held share adds per step (the risk term's scale)."""
        return self.sigma_eff**2 * self.tau

    def temp_impact_per_share(self) -> float:
        """η/τ: the temporary impact per share of a step's trade."""
        return self.eta / self.tau

    def closed_forms(
        self, qty: int, side: int, policies: list[str], step_limits: NDArray[np.int64] | None
    ) -> dict[str, Any]:
        """Closed-form E and std of IS (bps) for the static schedules that were run, and the
        signal-aware optimum's expected gain (``execrl.sim.theory``).

        The closed forms know nothing of the order's hard limits. A schedule with a child
        order above ``step_limits`` (rounded to whole shares) is cut in the simulation, so its
        line is kept but marked ``"unconstrained": true``. The signal-aware optimum reacts to
        the path, so it is marked as soon as any limit is below the order's quantity."""
        from execrl.sim.theory import (
            ac_trajectory,
            schedule_moments,
            solve_signal_aware,
            twap_trajectory,
        )

        out: dict[str, Any] = {}
        trajectories = {"twap": twap_trajectory(self, qty), "ac": ac_trajectory(self, qty)}
        for name, x in trajectories.items():
            if name in policies:
                mo = schedule_moments(self, x, side)
                out[name] = {
                    "expected_is_bps": mo.expected_bps,
                    "std_is_bps": mo.std_bps,
                    "objective_bps": mo.objective(self.risk_aversion) / mo.notional * 1e4,
                }
                trades = np.rint(-np.diff(np.asarray(x, dtype=np.float64)))
                if step_limits is not None and (trades > step_limits).any():
                    out[name]["unconstrained"] = True
        if self.signal is not None and self.drift == 0.0:
            sol = solve_signal_aware(self, qty, side)
            out["signal_aware"] = {
                "objective_bps": sol.expected_objective / sol.notional * 1e4,
                "blind_objective_bps": sol.blind_objective / sol.notional * 1e4,
                "expected_gain_bps": sol.expected_gain_bps,
            }
            if step_limits is not None and (step_limits < qty).any():
                out["signal_aware"]["unconstrained"] = True
        return out

    def validate_for_order(self, qty: int) -> None:
        """Refuse, naming the fields, a market and order (this config holds the order's
        horizon and arrival price) whose numbers would leave the range where the simulation
        is finite and meaningful: a price move beyond ``MAX_MOVE_MULTIPLE`` × the arrival
        price, a risk or signal term beyond ``MAX_TERM_BPS``, or step volumes beyond 2**53.

        Cheap upper bounds, not the simulation: each term is the most that part of the model
        can move the price (draws taken at ``_MAX_DRAW_SD`` standard deviations)."""
        x, s0, horizon, tau = float(qty), self.s0, self.horizon, self.tau
        span = horizon + self.pre_arrival_steps * tau  # simulated time, pre-arrival included
        unit = f"{self.time_unit_s:g} s"
        alpha_std = 0.0 if self.signal is None else self.signal.stationary_std
        moves = {
            f"the temporary impact eta/tau × qty (market field 'eta' = {self.eta:g}, order "
            f"field 'qty' = {qty}, tau = horizon / n_steps = {tau:.3g} × {unit})":
            self.eta / tau * x,
            f"the permanent impact gamma × qty (market field 'gamma' = {self.gamma:g}, "
            f"order field 'qty' = {qty})": self.gamma * x,
            f"market field 'epsilon' = {self.epsilon:g}": self.epsilon,
            f"market field 'drift' = {self.drift:g} over the horizon": abs(self.drift) * span,
            f"market field 'sigma' = {self.sigma:g} (× vol_multiplier {self.vol_multiplier:g}) "
            f"over the horizon, at {_MAX_DRAW_SD:g} sd":
            _MAX_DRAW_SD * self.sigma_eff * math.sqrt(span),
            f"market field 'signal' (stationary std {alpha_std:.3g}) over the horizon, at "
            f"{_MAX_DRAW_SD:g} sd": _MAX_DRAW_SD * alpha_std * horizon,
        }
        move = sum(moves.values())
        if not move <= MAX_MOVE_MULTIPLE * s0:
            name, value = max(moves.items(), key=lambda item: item[1])
            raise ConfigError(
                f"{name} moves the price by {value:.3g}, more than {MAX_MOVE_MULTIPLE:g} × the "
                f"arrival price {s0:g}: too far outside what this market can model"
            )
        notional = x * s0
        # Var[cost] ≤ (move·X)²; λ·Var in bps of notional (the objective's risk term)
        risk_bps = self.risk_aversion * (move * x) * (move * x) / notional * 1e4
        if not risk_bps <= MAX_TERM_BPS:
            raise ConfigError(
                f"market field 'risk_aversion' = {self.risk_aversion:g} is too large for this "
                f"order: its risk term could reach {risk_bps:.3g} bps of the notional, more "
                f"than {MAX_TERM_BPS:g}"
            )
        if self.signal is not None:
            # the signal-aware optimum's value is bounded by Var[α]·T³/η̃ per step
            value = alpha_std * alpha_std * horizon * horizon * horizon / self.eta_tilde
            signal_bps = value * (self.n_steps + 1) / notional * 1e4
            if not signal_bps <= MAX_TERM_BPS:
                raise ConfigError(
                    f"market field 'signal' (stationary std {alpha_std:.3g}) is too strong for "
                    f"eta - gamma*tau/2 = {self.eta_tilde:.3g}: the signal's value could reach "
                    f"{signal_bps:.3g} bps, more than {MAX_TERM_BPS:g}"
                )
        drift_scale = self.sigma_eff * math.sqrt(horizon)
        if self.sigma_eff > 0 and not (drift_scale > 0 and move / drift_scale <= MAX_TERM_BPS):
            raise ConfigError(
                f"market field 'sigma' = {self.sigma:g} is too small for this order's price "
                f"moves (the price-drift feature is scaled by it); use 0 for no volatility"
            )
        step_volume = self.adv * horizon * float(self.volume_weights().max())
        if not step_volume <= _MAX_STEP_VOLUME:
            raise ConfigError(
                f"market field 'adv' = {self.adv:g} over the horizon of {horizon:g} × {unit} "
                f"gives {step_volume:.3g} shares in one step, more than 2**53"
            )

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

    def expected_volumes(self) -> NDArray[np.float64]:
        """Expected market volume of each step, in shares: the one place it is computed (the
        market's volume and an order's participation limit both read it)."""
        return self.adv * self.horizon * self.volume_weights()

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

# -- compiled kernels ---------------------------------------------------------------------------
# Why numba: measured with n_envs = 4096 on one core (bench/bench_env.py and a per-function
# timer, best of repeated runs), the numpy version of this market took ~150 µs per ``execute``
# (~25 small array operations and fancy-indexed noise lookups) and 2.6-3.4 ms per full
# ``reset`` (1.5 ms of it numpy's normal draws, the rest row scatters, large temporaries and
# the arrival walk): ~40 % of the environment's whole step. The kernels below take ~25 µs and
# ~0.9 ms. Every formula keeps the operands, types and evaluation order of the numpy code it
# replaced (no fastmath, no reassociation), so results are bit-for-bit the same; the
# exponentials and the row sums stay in numpy, whose implementations numba's would not match
# to the last bit.
#
# Path noise is stored step-major, (n_steps, n_envs): at step k every market reads one
# contiguous row instead of one element per n_steps-long row.

#: Below this many draws numpy's own ``standard_normal`` is cheaper: numba spends ~10 µs
#: unboxing a ``Generator``. Above it numba's ziggurat (the same algorithm on the same bit
#: stream: identical draws) is about twice as fast as numpy's.
_NUMBA_NORMALS_MIN = 4096


@njit(cache=True)
def _fill_standard_normal(rng: np.random.Generator, out: NDArray[np.float64]) -> None:
    flat = out.reshape(-1)
    for j in range(flat.size):
        flat[j] = rng.standard_normal()


@njit(cache=True)
def _fill_standard_normal_t(rng: np.random.Generator, out_t: NDArray[np.float64]) -> None:
    n_cols, n_rows = out_t.shape
    for i in range(n_rows):
        for j in range(n_cols):
            out_t[j, i] = rng.standard_normal()


@njit(cache=True)
def _fill_standard_normal_columns(
    rng: np.random.Generator, out_t: NDArray[np.float64], columns: NDArray[np.intp]
) -> None:
    for r in range(columns.shape[0]):
        c = columns[r]
        for j in range(out_t.shape[0]):
            out_t[j, c] = rng.standard_normal()


@njit(cache=True)
def _scatter_columns(
    dst: NDArray[np.float64], columns: NDArray[np.intp], src: NDArray[np.float64]
) -> None:
    """dst[:, columns] = src, without numpy's slow fancy indexing along the second axis."""
    for r in range(columns.shape[0]):
        c = columns[r]
        for j in range(dst.shape[0]):
            dst[j, c] = src[j, r]


@njit(cache=True)
def _reset_market_rows(
    ids: NDArray[np.intp],
    s0: float,
    last_volume0: float,
    mid: NDArray[np.float64],
    arrival: NDArray[np.float64],
    k: NDArray[np.int64],
    iv_num: NDArray[np.float64],
    iv_den: NDArray[np.float64],
    last_volume: NDArray[np.float64],
    arrival_vwap: NDArray[np.float64],
    new_arrival_vwap: NDArray[np.float64],
) -> None:
    for r in range(ids.shape[0]):
        i = ids[r]
        mid[i] = s0
        arrival[i] = s0
        k[i] = 0
        iv_num[i] = 0.0
        iv_den[i] = 0.0
        last_volume[i] = last_volume0
        arrival_vwap[i] = new_arrival_vwap[r]


def _standard_normals(rng: np.random.Generator, out: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fill the C-contiguous ``out`` with ``rng.standard_normal(out.shape)``'s very draws."""
    if out.size >= _NUMBA_NORMALS_MIN:
        _fill_standard_normal(rng, out)
    else:
        rng.standard_normal(out=out)
    return out


def _standard_normals_t(
    rng: np.random.Generator, out_t: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Fill ``out_t`` (n_cols, n_rows) so that ``out_t.T`` is ``rng.standard_normal((n_rows,
    n_cols))``: the same draws, stored step-major."""
    if out_t.size >= _NUMBA_NORMALS_MIN:
        _fill_standard_normal_t(rng, out_t)
    else:
        out_t[...] = rng.standard_normal(out_t.shape[::-1]).T
    return out_t


@njit(cache=True)
def _arrival_walk(
    shocks: NDArray[np.float64],
    n_pre: int,
    drift_tau: float,
    sigma_sqrt_tau: float,
    s0: float,
    nu: float,
    half_nu2: float,
    interval_px: NDArray[np.float64],
    log_volume: NDArray[np.float64],
) -> None:
    """The pre-arrival walk back from S_0: each step's mid-point price and log volume factor."""
    for i in range(shocks.shape[0]):
        prev = s0  # S_0
        cum = 0.0
        for j in range(n_pre):
            step = drift_tau + sigma_sqrt_tau * shocks[i, j]
            cum = step if j == 0 else cum + step
            mid = s0 - cum  # S_{-(j+1)}
            interval_px[i, j] = 0.5 * (prev + mid)
            prev = mid
            log_volume[i, j] = nu * shocks[i, n_pre + j] - half_nu2


@njit(cache=True)
def _execute_kernel(
    qty: NDArray[np.int64],
    active: NDArray[np.bool_],
    order_type: NDArray[np.int8],
    market_code: int,
    k_market: NDArray[np.int64],
    n_steps: int,
    mid: NDArray[np.float64],
    alpha: NDArray[np.float64],
    xi: NDArray[np.float64],
    zeta: NDArray[np.float64],
    vol_factor: NDArray[np.float64],
    expected_volume: NDArray[np.float64],
    iv_num: NDArray[np.float64],
    iv_den: NDArray[np.float64],
    last_volume: NDArray[np.float64],
    side: float,
    epsilon: float,
    temp: float,
    drift: float,
    tau: float,
    sigma_sqrt_tau: float,
    side_gamma: float,
    has_signal: bool,
    phi: float,
    alpha_step_std: float,
    new_mid: NDArray[np.float64],
    new_alpha: NDArray[np.float64],
    new_last_volume: NDArray[np.float64],
    fill_qty: NDArray[np.int64],
    avg_px: NDArray[np.float64],
    reject: NDArray[np.int8],
    reject_order_type: int,
    n_fills: NDArray[np.int32],
) -> None:
    """One step of every market (see the module docstring). A child order that is not a
    market order is rejected (``reject``), in its market alone, which then steps without
    trading. Short loops over few arrays: the compiler vectorises those."""
    n = qty.shape[0]
    for i in range(n):
        refused = active[i] and qty[i] > 0 and order_type[i] != market_code
        reject[i] = reject_order_type if refused else 0
    for i in range(n):
        fill_qty[i] = qty[i] if active[i] and reject[i] == 0 else 0
        n_fills[i] = 1 if fill_qty[i] > 0 else 0
    for i in range(n):
        q = fill_qty[i]
        traded = q > 0
        exec_px = mid[i] + side * (epsilon * (1.0 if traded else 0.0) + temp * q)
        avg_px[i] = exec_px if traded else np.nan
    for i in range(n):
        k = min(k_market[i], n_steps - 1)
        m0 = mid[i]
        m1 = m0 + (drift + alpha[i]) * tau + sigma_sqrt_tau * xi[k, i] + side_gamma * fill_qty[i]
        new_mid[i] = m1 if active[i] else m0
    for i in range(n):
        k = min(k_market[i], n_steps - 1)
        volume = expected_volume[k] * vol_factor[k, i]
        on = active[i]
        iv_num[i] += volume * 0.5 * (mid[i] + new_mid[i]) if on else 0.0
        iv_den[i] += volume if on else 0.0
        new_last_volume[i] = volume if on else last_volume[i]
    if has_signal:
        for i in range(n):
            k = min(k_market[i], n_steps - 1)
            a1 = phi * alpha[i] + alpha_step_std * zeta[k, i]
            new_alpha[i] = a1 if active[i] else alpha[i]
    for i in range(n):
        k_market[i] += 1 if active[i] else 0


class ACMarket:
    """``n_envs`` Almgren–Chriss markets stepped together by compiled loops (no Python loop
    over markets)."""

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
        # scalar factors exactly as the formulas group them (left to right)
        self._sigma_sqrt_tau = c.sigma_eff * self._sqrt_tau
        self._side_gamma = side * c.gamma
        self._drift_tau = c.drift * self._tau
        self._adv_tau = c.adv * self._tau
        self._expected_volume = c.expected_volumes()  # per step, shares
        self._has_signal = c.signal is not None and c.signal.sigma > 0
        self._phi = 0.0
        self._alpha_step_std = 0.0
        if c.signal is not None:
            self._phi = math.exp(-c.signal.kappa * c.tau)
            self._alpha_step_std = c.signal.sigma * math.sqrt(
                (1.0 - self._phi**2) / (2.0 * c.signal.kappa)
            )
            self._alpha_std = c.signal.stationary_std
        self.tick_size = 0.0  # continuous prices: the model has no price grid
        z_int, z_float = np.zeros(n_envs, dtype=np.int64), np.zeros(n_envs)
        z_int.flags.writeable = z_float.flags.writeable = False  # shared by every step's fills
        self._nothing_rests = (z_int, z_float)
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
        # Each episode's path, step-major (N, n): step k's noise of every market is contiguous.
        self._xi = np.zeros((N, n))
        self._zeta = np.zeros((N, n))
        self._vol_factor = np.ones((N, n))
        self._last_volume = np.zeros(n)
        self._iv_num = np.zeros(n)
        self._iv_den = np.zeros(n)
        self.arrival_vwap = np.full(n, self.s0)
        self._arrival = np.full(n, self.s0)
        self._rows = np.arange(n)
        self._work: dict[str, NDArray[np.float64]] = {}

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
        # All markets at once (the usual case: a fresh batch, or autoreset of a synchronised
        # one): draw straight into the state arrays instead of scattering rows.
        every = env_ids is None or (m == self.n_envs and np.array_equal(ids, self._rows))
        c = self.config
        N, M = self.n_steps, c.pre_arrival_steps
        # One stream per channel: episode i's path does not depend on how many are drawn.
        g_xi, g_alpha, g_vol, g_pre = rng.spawn(4)
        if every:
            _standard_normals_t(g_xi, self._xi)
        elif m * N >= _NUMBA_NORMALS_MIN:
            _fill_standard_normal_columns(g_xi, self._xi, ids)
        else:
            self._xi[:, ids] = g_xi.standard_normal((m, N)).T
        if self._has_signal:
            a = _standard_normals(g_alpha, np.empty((m, N + 1)))
            self._alpha[ids] = a[:, 0] * self._alpha_std
            _scatter_columns(self._zeta, ids, a[:, 1:].T)
        elif every:
            self._alpha.fill(0.0)
        else:
            self._alpha[ids] = 0.0
        if c.volume_noise > 0:
            nu = c.volume_noise
            factor = self._vol_factor if every else self._scratch("path", N * m).reshape(N, m)
            _standard_normals_t(g_vol, factor)
            factor *= nu
            factor -= 0.5 * nu * nu
            np.exp(factor, out=factor)
            if not every:
                _scatter_columns(self._vol_factor, ids, factor)
        arrival_vwap = self._simulate_arrival_vwap(g_pre, m, M)
        if every:
            for arr in (self._mid, self._arrival):
                arr.fill(self.s0)
            self._k.fill(0)
            self._iv_num.fill(0.0)
            self._iv_den.fill(0.0)
            self._last_volume.fill(c.adv * self._tau)  # before the first step: a flat step's mean
            self.arrival_vwap[:] = arrival_vwap
        else:
            _reset_market_rows(
                ids,
                self.s0,
                c.adv * self._tau,
                self._mid,
                self._arrival,
                self._k,
                self._iv_num,
                self._iv_den,
                self._last_volume,
                self.arrival_vwap,
                arrival_vwap,
            )

    def _scratch(self, slot: str, size: int) -> NDArray[np.float64]:
        """A reused float64 work buffer of ``size`` (contents undefined): large temporaries
        allocated afresh at every reset cost page faults that showed in the profile."""
        buf = self._work.get(slot)
        if buf is None or buf.size < size:
            buf = self._work[slot] = np.empty(size)
        return buf[:size]

    def _simulate_arrival_vwap(self, rng: np.random.Generator, m: int, M: int) -> NDArray:
        """VWAP of the ``M`` steps before arrival: mids walked back from S_0 (S_{-j}), each
        step priced at its mid-point, volumes mean-one log-normal around a flat step's mean."""
        c = self.config
        scratch = self._scratch("arrival", m * 5 * M)
        shocks = _standard_normals(rng, scratch[: m * 2 * M].reshape(m, 2 * M))
        nu = c.volume_noise
        interval_px = scratch[m * 2 * M : m * 3 * M].reshape(m, M)
        volume = scratch[m * 3 * M : m * 4 * M].reshape(m, M)
        weighted = scratch[m * 4 * M :].reshape(m, M)
        _arrival_walk(
            shocks,
            M,
            self._drift_tau,
            self._sigma_sqrt_tau,
            self.s0,
            nu,
            0.5 * nu * nu,
            interval_px,
            volume,
        )
        np.exp(volume, out=volume)
        volume *= self._adv_tau
        np.multiply(volume, interval_px, out=weighted)
        return weighted.sum(axis=1) / volume.sum(axis=1)

    def execute(
        self, orders: ChildOrderBatch, active: NDArray[np.bool_], record_events: bool = False
    ) -> FillBatch:
        """Fill every active market order at once (nothing rests, so a cancel has nothing to
        take off); other order types are rejected by name, per market."""
        c = self.config
        n = self.n_envs
        new_mid = np.empty(n)
        new_alpha = np.empty(n) if self._has_signal else self._alpha
        new_last_volume = np.empty(n)
        fill_qty = np.empty(n, dtype=np.int64)
        avg_px = np.empty(n)
        reject = np.empty(n, dtype=np.int8)
        n_fills = np.empty(n, dtype=np.int32)
        step = self._k.copy() if record_events else None
        _execute_kernel(
            np.ascontiguousarray(orders.qty),
            np.ascontiguousarray(active),
            np.ascontiguousarray(orders.order_type),
            _MARKET_CODE,
            self._k,
            self.n_steps,
            self._mid,
            self._alpha,
            self._xi,
            self._zeta,
            self._vol_factor,
            self._expected_volume,
            self._iv_num,
            self._iv_den,
            self._last_volume,
            float(self.side),
            c.epsilon,
            self._temp,
            c.drift,
            self._tau,
            self._sigma_sqrt_tau,
            self._side_gamma,
            self._has_signal,
            self._phi,
            self._alpha_step_std,
            new_mid,
            new_alpha,
            new_last_volume,
            fill_qty,
            avg_px,
            reject,
            REJECT_ORDER_TYPE,
            n_fills,
        )
        # new arrays, not in-place updates: a caller holding ``mid`` from before the step
        # (the environment's reward does) keeps the pre-trade prices
        self._mid = new_mid
        self._alpha = new_alpha
        self._last_volume = new_last_volume
        z_int, z_float = self._nothing_rests
        # nothing rests in this market: no passive fills, fees, working or cancelled shares
        fills = FillBatch(qty=fill_qty, avg_px=avg_px, passive_qty=z_int, fees=z_float,
                          n_fills=n_fills, working_qty=z_int, cancelled_qty=z_int, reject=reject)
        if step is not None:
            # the fill's time: the start of its step, in seconds since the order arrived
            seconds = step * (self._tau * c.time_unit_s)
            fills.events = fills.fill_events(orders.child_id, seconds)
        return fills

    def expected_mid_change(self, shares: NDArray[np.int64]) -> NDArray[np.float64]:
        """E[S_k − S_{k−1} | now, n_k = shares]: drift, alpha and our permanent impact, without
        the unpredictable innovation σ_eff·√τ·ξ_k (for the ``expected_cost`` reward)."""
        c = self.config
        return (c.drift + self._alpha) * self._tau + self.side * c.gamma * shares

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
