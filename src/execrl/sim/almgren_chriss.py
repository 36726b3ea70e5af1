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

Randomness is counter-based (``execrl.sim.rng``): each episode gets one key at ``reset``
(the i-th raw word of the seed's generator for episode i) and every draw is a function of
(key, noise channel, step) alone, one stream per channel (price innovations, volume noise,
signal, pre-arrival walk), drawn in the step that uses it. So episode i of a seed is the same
path for every policy and every batch size ≥ i + 1 (common random numbers), and a reset costs
a key and the arrival VWAP, not a path.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
from numba import njit
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from execrl.domain import ConfigError, OrderType, ParentOrder, Side
from execrl.market.volume import u_shape_weights
from execrl.sim.base import (
    ORDER_TYPE_CODES,
    REJECT_ORDER_TYPE,
    ChildOrderBatch,
    FillArrays,
    FillBatch,
    OrderArrays,
)
from execrl.sim.rng import episode_keys, gauss, gauss_block, gauss_finish
from execrl.sim.spec import MarketKnowledge, SpecModel

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


#: The AC paper's example order: a 5-day sell of 1M shares at 50 (one trading day per time unit).
AC_PAPER_ORDER = ParentOrder(
    order_id="DEMO-1",
    symbol="DEMO",
    side=Side.SELL,
    qty=1_000_000,
    arrival_px=50.0,
    start_ts=0.0,
    horizon_s=5 * 23_400.0,
)


class ACMarketConfig(SpecModel):
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

    # -- the market specification (execrl.sim.spec.MarketSpec) -------------------------------
    @property
    def baselines(self) -> tuple[str, ...]:
        """The rule-based policies `execrl evaluate` runs by default on this market."""
        return ("twap", "vwap", "pov", "ac", "immediate")

    def default_order(self) -> ParentOrder:
        """The order run when none is given: the AC paper's 5-day sell of 1M shares."""
        return AC_PAPER_ORDER

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

# -- randomness ---------------------------------------------------------------------------------
# Each market's noise is a function of (episode key, channel, step) alone (``execrl.sim.rng``):
# one stream per channel, the step (or pre-arrival step) as the counter. Nothing is drawn
# ahead: a reset draws one key per episode (``episode_keys``, so episode i of a seed has the
# i-th key for any batch size) and computes the arrival VWAP; a step draws its own noise.
#: ξ_k: the mid's innovation in step k (counter k)
STREAM_PRICE = 0
#: the log-normal factor of step k's market volume (counter k)
STREAM_VOLUME = 1
#: the signal: α_0's stationary draw (counter 0), then ζ_k (counter k + 1)
STREAM_SIGNAL = 2
#: the pre-arrival walk: step j's price shock (counter 2j) and volume shock (counter 2j + 1)
STREAM_PRE_ARRIVAL = 3

# -- the step state -----------------------------------------------------------------------------
# Rows of ``ACMarket._state``, one (rows, n_envs) float64 block: a kernel takes the whole state
# as one argument and reads it by these names (a swapped argument cannot happen), and each row
# is contiguous, so the per-row loops vectorise.
_MID, _ALPHA, _ARRIVAL, _ARRIVAL_VWAP, _IV_NUM, _IV_DEN, _LAST_VOLUME = range(7)
_N_STATE = 7
# Entries of ``ACMarket._params``: the model's constants, grouped as the formulas use them.
(_P_SIDE, _P_EPSILON, _P_TEMP, _P_DRIFT, _P_TAU, _P_SIGMA_SQRT_TAU, _P_SIDE_GAMMA, _P_PHI,
 _P_ALPHA_STEP_STD, _P_ALPHA_STD, _P_NU, _P_S0, _P_ADV_TAU, _P_DRIFT_TAU) = range(14)
_N_PARAMS = 14
# Rows of a step's exogenous moves (``_exogenous_kernel``): what the market does in the step
# whatever we trade, so that the paper market can take them from the market-data stream.
_X_DRIFT, _X_SHOCK, _X_VOLUME, _X_ALPHA_NEXT = range(4)
_N_EXO = 4
#: their names on the market-data stream (``execrl.service.feed``), in row order
EXOGENOUS_FIELDS = ("drift_term", "shock", "step_volume", "alpha_next")



class ACArrays(NamedTuple):
    """``ACMarket``'s arrays and constants that the step kernels share, read there by name
    (``m.k[i]``). Built once with the market: each array is updated in place, never replaced;
    the state block, which a step replaces, travels apart in ``ACStates``."""

    k: NDArray[np.int64]  # steps done
    keys: NDArray[np.uint64]  # episode keys
    params: NDArray[np.float64]  # _P_* (read-only)
    expected_volume: NDArray[np.float64]  # per step
    has_signal: bool
    bits: NDArray[np.uint64]  # (2, n) scratch of the draws
    noise: NDArray[np.float64]  # (3, n) scratch of the draws
    exo: NDArray[np.float64]  # (_N_EXO, n): the last step's exogenous moves


class ACStates(NamedTuple):
    """The state block a step reads and the new one it writes (``ACMarket.apply_step``
    replaces ``_state`` by it, so views of the old one keep the pre-step values): built per
    step, so it never holds a block a step replaced."""

    before: NDArray[np.float64]
    after: NDArray[np.float64]


# Why numba: the numpy version of this market took ~150 µs per ``execute`` at 4096 envs (~25
# small array operations) and a reset drew whole paths; the kernels below draw each step's
# noise where it is used (``bench/bench_env.py``, ``bench/bench_mbt_gym.py`` for the figures).
# Loops are short and touch few rows: the compiler vectorises the branch-free ones. The
# formulas keep the operands and evaluation order of the numpy code they replaced.


@njit(cache=True)
def _draw_rows(
    keys: NDArray[np.uint64], stream: int, counters: NDArray[np.int64], offset: int,
    bits: NDArray[np.uint64], out: NDArray[np.float64],
) -> None:
    """out[i] = gauss(keys[i], stream, counters[i] + offset): every first block, then every
    finish (the blocks of neighbouring envs then overlap in the CPU: ~3x faster)."""
    n = keys.shape[0]
    for i in range(n):
        bits[0, i], bits[1, i] = gauss_block(keys[i], stream, counters[i] + offset)
    for i in range(n):
        out[i] = gauss_finish(bits[0, i], bits[1, i], keys[i], stream, counters[i] + offset)


@njit(cache=True)
def _reset_kernel(
    ids: NDArray[np.intp],
    keys: NDArray[np.uint64],
    new_keys: NDArray[np.uint64],
    k: NDArray[np.int64],
    state: NDArray[np.float64],
    params: NDArray[np.float64],
    n_pre: int,
    has_signal: bool,
) -> None:
    """New episodes in envs ``ids`` with keys ``new_keys``: S_0, no step yet, α_0 from its
    stationary law, and the arrival VWAP of the ``n_pre`` steps before the order arrived
    (mids walked back from S_0, S_{-j}, each step priced at its mid-point, volumes
    mean-one log-normal around a flat step's mean)."""
    m = ids.shape[0]
    s0 = params[_P_S0]
    nu = params[_P_NU]
    half_nu2 = 0.5 * nu * nu
    zero = np.zeros(m, dtype=np.int64)
    bits = np.empty((2, m), dtype=np.uint64)
    shock = np.empty(m)
    for r in range(m):
        i = ids[r]
        keys[i] = new_keys[r]
        k[i] = 0
        state[_MID, i] = s0
        state[_ARRIVAL, i] = s0
        state[_IV_NUM, i] = 0.0
        state[_IV_DEN, i] = 0.0
        state[_LAST_VOLUME, i] = params[_P_ADV_TAU]  # before the first step: a flat step's mean
        state[_ALPHA, i] = 0.0
    if has_signal:
        _draw_rows(new_keys, STREAM_SIGNAL, zero, 0, bits, shock)
        for r in range(m):
            state[_ALPHA, ids[r]] = shock[r] * params[_P_ALPHA_STD]
    # the walk's rows, made once (not per pre-arrival step)
    prev = np.full(m, s0)  # S_0
    cum = np.zeros(m)
    num = np.zeros(m)
    den = np.zeros(m)
    log_volume = np.empty(m)
    adv_tau = params[_P_ADV_TAU]
    for j in range(n_pre):
        _draw_rows(new_keys, STREAM_PRE_ARRIVAL, zero, 2 * j, bits, shock)
        if nu > 0.0:
            _draw_rows(new_keys, STREAM_PRE_ARRIVAL, zero, 2 * j + 1, bits, log_volume)
        for r in range(m):
            step = params[_P_DRIFT_TAU] + params[_P_SIGMA_SQRT_TAU] * shock[r]
            cum[r] = step if j == 0 else cum[r] + step
            mid = s0 - cum[r]  # S_{-(j+1)}
            price = 0.5 * (prev[r] + mid)  # the step's price
            prev[r] = mid
            volume = np.exp(nu * log_volume[r] - half_nu2) * adv_tau if nu > 0.0 else adv_tau
            num[r] += volume * price
            den[r] += volume
    for r in range(m):
        state[_ARRIVAL_VWAP, ids[r]] = num[r] / den[r]


@njit(cache=True)
def _exogenous_kernel(active: NDArray[np.bool_], state: NDArray[np.float64], m: ACArrays
                      ) -> None:
    """What step k does whatever we trade (``EXOGENOUS_FIELDS``), drawn into ``exo``: the
    drift term (μ + α_{k−1})·τ, the innovation σ_eff·√τ·ξ_k, the step's market volume and the
    next α. The paper market reads these from the market-data stream instead
    (``execrl.service.paper``); ``_apply_kernel`` turns them and the orders into the step."""
    k, params, expected_volume, noise, exo = m.k, m.params, m.expected_volume, m.noise, m.exo
    n_steps = expected_volume.shape[0]
    _step_noise(m)
    alpha = state[_ALPHA]
    for i in range(active.shape[0]):
        exo[_X_DRIFT, i], exo[_X_SHOCK, i], exo[_X_VOLUME, i], exo[_X_ALPHA_NEXT, i] = (
            _exogenous_one(params, alpha[i], noise[0, i], noise[1, i], noise[2, i],
                           expected_volume[min(k[i], n_steps - 1)], m.has_signal))


@njit(cache=True)
def _step_noise(m: ACArrays) -> None:
    """Step k's draws of every market into ``m.noise``: ξ_k (row 0), the volume's log-normal
    factor (row 1, 1.0 without volume noise) and, with a signal, ζ_k (row 2); each stream in
    its own passes (``_draw_rows``: the blocks of neighbouring envs overlap)."""
    k, keys, params, bits, noise = m.k, m.keys, m.params, m.bits, m.noise
    nu = params[_P_NU]
    half_nu2 = 0.5 * nu * nu
    _draw_rows(keys, STREAM_PRICE, k, 0, bits, noise[0])
    factor = noise[1]
    if nu > 0.0:
        _draw_rows(keys, STREAM_VOLUME, k, 0, bits, factor)
        for i in range(factor.shape[0]):
            factor[i] = np.exp(nu * factor[i] - half_nu2)
    else:
        factor[:] = 1.0
    if m.has_signal:
        _draw_rows(keys, STREAM_SIGNAL, k, 1, bits, noise[2])


@njit(cache=True, inline="always")
def _exogenous_one(params: NDArray[np.float64], alpha: float, xi: float, factor: float,
                   zeta: float, expected_volume: float, has_signal: bool
                   ) -> tuple[float, float, float, float]:
    """One market's exogenous moves (``EXOGENOUS_FIELDS``) from its draws: the drift term,
    the innovation, the step's market volume and the next α."""
    drift = (params[_P_DRIFT] + alpha) * params[_P_TAU]
    shock = params[_P_SIGMA_SQRT_TAU] * xi
    volume = expected_volume * factor
    alpha_next = params[_P_PHI] * alpha + params[_P_ALPHA_STEP_STD] * zeta if has_signal else alpha
    return drift, shock, volume, alpha_next


@njit(cache=True, inline="always")
def _apply_one(
    o: OrderArrays, active: NDArray[np.bool_], s: ACStates, m: ACArrays,
    exo: NDArray[np.float64], f: FillArrays, i: int,
) -> None:
    """Market ``i``'s step (``_apply_kernel``'s per-env body)."""
    on = active[i]
    reject, q, n_fills, avg_px = _fill_one(m.params, on, o.qty[i], o.order_type[i],
                                           s.before[_MID, i])
    _put_fill(f, i, reject, q, n_fills, avg_px)
    _next_state(s, m.params, on, q, exo[_X_DRIFT, i], exo[_X_SHOCK, i], exo[_X_VOLUME, i],
                exo[_X_ALPHA_NEXT, i], i)
    m.k[i] += 1 if on else 0


@njit(cache=True, inline="always")
def _fill_one(params: NDArray[np.float64], on: bool, sent: int, order_type: int, mid: float
              ) -> tuple[int, int, int, float]:
    """One market's answer to its child order at the mid before the step: (reject reason,
    shares filled, fills, average price, NaN without a fill). A child order that is not a
    market order is rejected."""
    refused = on and sent > 0 and order_type != _MARKET_CODE
    reject = REJECT_ORDER_TYPE if refused else 0
    q = sent if on and reject == 0 else 0
    traded = q > 0
    exec_px = mid + params[_P_SIDE] * (params[_P_EPSILON] * (1.0 if traded else 0.0)
                                       + params[_P_TEMP] * q)
    return reject, q, 1 if traded else 0, exec_px if traded else np.nan


@njit(cache=True, inline="always")
def _put_fill(f: FillArrays, i: int, reject: int, q: int, n_fills: int, avg_px: float) -> None:
    """Market ``i``'s answer into the step's fills."""
    f.reject[i] = reject
    f.qty[i] = q
    f.n_fills[i] = n_fills
    f.avg_px[i] = avg_px


@njit(cache=True, inline="always")
def _next_state(s: ACStates, params: NDArray[np.float64], on: bool, q: int, drift: float,
                shock: float, volume: float, alpha_next: float, i: int
                ) -> tuple[float, float, float]:
    """Market ``i``'s next state (``s.after``) from its state before the step, its fill ``q``
    and exogenous moves; returns (new mid, arrival mid, arrival VWAP), what booking reads."""
    state, new_state = s.before, s.after
    arrival, arrival_vwap = state[_ARRIVAL, i], state[_ARRIVAL_VWAP, i]
    new_state[_ARRIVAL, i] = arrival  # what a step does not change
    new_state[_ARRIVAL_VWAP, i] = arrival_vwap
    mid = state[_MID, i]
    m1 = mid + drift + shock + params[_P_SIDE_GAMMA] * q
    new_mid = m1 if on else mid
    new_state[_MID, i] = new_mid
    new_state[_IV_NUM, i] = state[_IV_NUM, i] + (volume * 0.5 * (mid + new_mid) if on else 0.0)
    new_state[_IV_DEN, i] = state[_IV_DEN, i] + (volume if on else 0.0)
    new_state[_LAST_VOLUME, i] = volume if on else state[_LAST_VOLUME, i]
    new_state[_ALPHA, i] = alpha_next if on else state[_ALPHA, i]
    return new_mid, arrival, arrival_vwap


@njit(cache=True, _nrt=False)
def _apply_kernel(
    o: OrderArrays, active: NDArray[np.bool_], s: ACStates, m: ACArrays,
    exo: NDArray[np.float64], f: FillArrays,
) -> None:
    """One step of every market (see the module docstring) from ``state`` into
    ``new_state``, given the step's exogenous moves ``exo`` (``_exogenous_kernel``, or the
    market-data stream): our fills at S_{k−1} + side·(ε + (η/τ)·n_k), then S_k with our
    permanent impact on top. A child order that is not a market order is rejected
    (``f.reject``), in its market alone, which then steps without trading. Writes ``f``'s
    qty, avg_px, reject and n_fills."""
    for i in range(o.qty.shape[0]):
        _apply_one(o, active, s, m, exo, f, i)


@njit(cache=True)
def _interval_vwap_kernel(state: NDArray[np.float64], out: NDArray[np.float64]) -> None:
    """The market VWAP of the steps so far per market: Σ volume·price / Σ volume, the mid
    before any step."""
    for i in range(out.shape[0]):
        den = state[_IV_DEN, i]
        out[i] = state[_IV_NUM, i] / den if den > 0 else state[_MID, i]


@njit(cache=True)
def _innovations_kernel(keys: NDArray[np.uint64], stream: int, n_steps: int, offset: int
                        ) -> NDArray[np.float64]:
    """(n_envs, n_steps): draw k of ``stream`` in every market (counter k + offset)."""
    out = np.empty((keys.shape[0], n_steps))
    for i in range(keys.shape[0]):
        for j in range(n_steps):
            out[i, j] = gauss(keys[i], stream, j + offset)
    return out


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
        self._expected_volume = c.expected_volumes()  # per step, shares
        self._has_signal = c.signal is not None and c.signal.sigma > 0
        phi = alpha_step_std = alpha_std = 0.0
        if c.signal is not None:
            phi = math.exp(-c.signal.kappa * c.tau)
            alpha_step_std = c.signal.sigma * math.sqrt((1.0 - phi**2) / (2.0 * c.signal.kappa))
            alpha_std = c.signal.stationary_std
        self._alpha_std = alpha_std
        p = np.zeros(_N_PARAMS)
        # scalar factors exactly as the formulas group them (left to right)
        p[_P_SIDE] = float(side)
        p[_P_EPSILON] = c.epsilon
        p[_P_TEMP] = c.eta / c.tau
        p[_P_DRIFT] = c.drift
        p[_P_TAU] = c.tau
        p[_P_SIGMA_SQRT_TAU] = c.sigma_eff * math.sqrt(c.tau)
        p[_P_SIDE_GAMMA] = side * c.gamma
        p[_P_PHI] = phi
        p[_P_ALPHA_STEP_STD] = alpha_step_std
        p[_P_ALPHA_STD] = alpha_std
        p[_P_NU] = c.volume_noise
        p[_P_S0] = self.s0
        p[_P_ADV_TAU] = c.adv * c.tau
        p[_P_DRIFT_TAU] = c.drift * c.tau
        p.flags.writeable = False
        self._params = p
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

        n = n_envs
        self._state = np.zeros((_N_STATE, n))
        self._state[[_MID, _ARRIVAL, _ARRIVAL_VWAP]] = self.s0
        self._k = np.zeros(n, dtype=np.int64)
        self._keys = np.zeros(n, dtype=np.uint64)
        self._rows = np.arange(n)
        self._bits = np.empty((2, n), dtype=np.uint64)  # the kernels' scratch
        self._noise = np.empty((3, n))
        self._exo = np.zeros((_N_EXO, n))  # the last step's exogenous moves
        #: what the step kernels share, by name (the arrays above: updated in place, never
        #: replaced; ``_state``, which a step replaces, is not in it)
        self._arrays = ACArrays(self._k, self._keys, self._params, self._expected_volume,
                                self._has_signal, self._bits, self._noise, self._exo)

    # -- protocol -------------------------------------------------------------------------
    # Views of the state block. ``execute`` writes the next state into a new block, so a
    # caller holding ``mid`` from before a step (the environment's reward does) keeps the
    # pre-trade prices.
    @property
    def mid(self) -> NDArray[np.float64]:
        return self._state[_MID]

    @property
    def arrival_mid(self) -> NDArray[np.float64]:
        return self._state[_ARRIVAL]

    @property
    def arrival_vwap(self) -> NDArray[np.float64]:
        return self._state[_ARRIVAL_VWAP]

    @property
    def alpha(self) -> NDArray[np.float64]:
        return self._state[_ALPHA]

    @property
    def episode_keys(self) -> NDArray[np.uint64]:
        """Each market's episode key (``execrl.sim.rng``): its whole path is a function of it."""
        return self._keys

    @property
    def interval_vwap(self) -> NDArray[np.float64]:
        """Market VWAP over the steps so far (S_0 before any step)."""
        out = np.empty(self.n_envs)
        _interval_vwap_kernel(self._state, out)
        return out

    def reset(self, rng: np.random.Generator, env_ids: NDArray[np.intp] | None = None) -> None:
        """New episodes in ``env_ids`` (all when None): one key each from ``rng``, in order
        (``episode_keys``), so an episode's path depends on its position in the draws alone."""
        ids = self._rows if env_ids is None else np.ascontiguousarray(env_ids, dtype=np.intp)
        m = ids.size
        if m == 0:
            return
        _reset_kernel(
            ids,
            self._keys,
            episode_keys(rng, m),
            self._k,
            self._state,
            self._params,
            self.config.pre_arrival_steps,
            self._has_signal,
        )

    def price_innovations(self) -> NDArray[np.float64]:
        """(n_envs, n_steps): the ξ_k of every market's current episode (tests, audits)."""
        return _innovations_kernel(self._keys, STREAM_PRICE, self.n_steps, 0)

    def execute(
        self, orders: ChildOrderBatch, active: NDArray[np.bool_], record_events: bool = False
    ) -> FillBatch:
        """Fill every active market order at once (nothing rests, so a cancel has nothing to
        take off); other order types are rejected by name, per market."""
        act = np.ascontiguousarray(active)
        _exogenous_kernel(act, self._state, self._arrays)
        return self.apply_step(orders, act, self._exo, record_events)

    @property
    def last_exogenous(self) -> dict[str, NDArray[np.float64]]:
        """The last step's exogenous moves (``EXOGENOUS_FIELDS``), per market: what the
        market-data stream carries so that a paper market can replay the step."""
        return {name: self._exo[j].copy() for j, name in enumerate(EXOGENOUS_FIELDS)}

    def apply_step(
        self, orders: ChildOrderBatch, active: NDArray[np.bool_], exo: NDArray[np.float64],
        record_events: bool = False,
    ) -> FillBatch:
        """The step with its exogenous moves ``exo`` ((``len(EXOGENOUS_FIELDS)``, n_envs),
        drawn here or read from the market-data stream): the one place fills, impact and the
        next state are computed."""
        n = self.n_envs
        new_state = np.empty_like(self._state)
        fill_qty = np.empty(n, dtype=np.int64)
        avg_px = np.empty(n)
        reject = np.empty(n, dtype=np.int8)
        n_fills = np.empty(n, dtype=np.int32)
        step = self._k.copy() if record_events else None
        z_int, z_float = self._nothing_rests
        sent = OrderArrays(np.ascontiguousarray(orders.qty), np.ascontiguousarray(
            orders.order_type), orders.limit_px, orders.ttl_steps, orders.cancel, orders.child_id)
        out = FillArrays(fill_qty, avg_px, n_fills, z_int, z_int, reject)
        _apply_kernel(sent, np.ascontiguousarray(active), ACStates(self._state, new_state),
                      self._arrays, exo, out)
        self._state = new_state
        # nothing rests in this market: no passive fills, fees, working or cancelled shares
        fills = FillBatch(qty=fill_qty, avg_px=avg_px, passive_qty=z_int, fees=z_float,
                          n_fills=n_fills, working_qty=z_int, cancelled_qty=z_int, reject=reject)
        if step is not None:
            # the fill's time: the start of its step, in seconds since the order arrived
            seconds = step * (self._tau * self.config.time_unit_s)
            fills.events = fills.fill_events(orders.child_id, seconds)
        return fills

    def expected_mid_change(
        self, shares: NDArray[np.int64], orders: ChildOrderBatch | None = None
    ) -> NDArray[np.float64]:
        """E[S_k − S_{k−1} | now, n_k = shares]: drift, alpha and our permanent impact, without
        the unpredictable innovation σ_eff·√τ·ξ_k (for the ``expected_cost`` reward)."""
        c = self.config
        return (c.drift + self.alpha) * self._tau + self.side * c.gamma * shares

    def feature(self, name: str) -> NDArray[np.float64]:
        c = self.config
        if name == "price_drift":  # in units of the horizon's price volatility
            return (self.mid - self.arrival_mid) / (c.sigma_eff * math.sqrt(c.horizon) or 1.0)
        if name == "volatility":
            return np.full(self.n_envs, c.vol_multiplier)
        if name == "spread_bps":
            return 2.0 * c.epsilon / self.mid * 1e4
        if name == "last_volume":
            return self._state[_LAST_VOLUME]
        if name == "expected_volume":
            return self._expected_volume[np.minimum(self._k, self.n_steps - 1)]
        if name == "signal" and self._has_signal:
            return self.alpha / self._alpha_std
        raise KeyError(
            f"feature {name!r} is not provided by the Almgren-Chriss market; "
            f"available: {', '.join(self.available_features)}"
        )
