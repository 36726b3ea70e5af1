"""Potential-based reward shaping for the value learners: less noise and bias, the same optimum.

Adding F = Φ(s') − Φ(s) to every step's reward (Φ = 0 once the order is done) adds
−Φ(s_0) to every return from s_0, whatever the policy, so it leaves every policy's ranking,
hence the optimum, unchanged (Ng, Harada & Russell 1999); the learner's Q is the original
one minus Φ(s). Here F = E[Φ(s') | s, a] − Φ(s): the sum differs from −Φ(s_0) by terms of
conditional mean zero, so every policy's *expected* return, hence again the optimum and
Q − Φ, is unchanged, and the TD target r + F + max Q'(s') no longer carries the next
state's chance part through Φ(s'), which Q'(s') = Q(s') − Φ(s') has left (the plain form
r + Φ(s') − Φ(s) + Q'(s') = r − Φ(s) + Q(s') carries it whole). It pays where Φ carries the
part of the values that the learner would otherwise get wrong.

``twap`` (Almgren–Chriss markets): Φ(s) = minus the expected cost of selling what is left
evenly over the steps left (TWAP from here), in the reward's unit (bps of X·S0), given the
state: with x the remaining fraction of X, M = N − k steps left, n = x/M per step,

    impact  ε·x + (η/τ)·X·x²/M + γ·X·x²·(M − 1)/(2M)            (temporary, permanent)
    risk    λ·σ²τ·X·x²·(M − 1)(2M − 1)/(6M)                     (the reward's risk term)
    drift   −side · x · α · τ · w_k,  w_k = Σ_{i<M} (M − 1 − i)/M · φ^i,  φ = e^{−κτ}

(each over S0, × 1e4; drift only with an observed OU signal). Why it matters for a tabular
learner: the values fall steeply with x (V ≈ K·x²/M), so within one bucket of the
remaining quantity they differ by far more than the gaps between actions (~13 bps across a
5 % bucket in ``ac-signal``, against gaps of 1–3 bps); an action whose next state lands at
a bucket's cheap end is credited with the bucket's average value, and the greedy policy
follows that bias. Q − Φ is nearly flat across a bucket. And the signal's innovation moves
V(s') by ~100 bps through the drift term (sd of a target, against action gaps of a few bps);
with E[Φ(s')] in F that noise leaves the targets.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError, ParentOrder
from execrl.env.factory import market_for_order
from execrl.sim.spec import MarketSpec

SHAPINGS = ("none", "twap")
Shaping = Literal["none", "twap"]


class TwapPotential:
    """Φ of the module docstring, from the observations ``remaining_ratio``,
    ``elapsed_ratio`` and, when the market has a signal and it is observed, ``signal`` (in
    units of its stationary std)."""

    def __init__(self, market: MarketSpec, order: ParentOrder, observations: tuple[str, ...]):
        m = market_for_order(market, order)
        if getattr(m, "model", None) != "almgren_chriss":
            raise ConfigError(
                f"shaping 'twap' needs an Almgren-Chriss market (its cost model); the market "
                f"is {getattr(m, 'model', type(m).__name__)!r}"
            )
        missing = [n for n in ("remaining_ratio", "elapsed_ratio") if n not in observations]
        if missing:
            raise ConfigError(
                f"shaping 'twap' needs the observation feature {missing[0]!r}"
            )
        n, tau = int(m.n_steps), float(m.tau)
        s0, qty = float(m.s0), float(order.qty)
        steps_left = np.maximum(n - np.arange(n + 1), 1).astype(np.float64)  # M (k = N: 0 left)
        big_m = steps_left
        unit = 1e4 / s0
        # per remaining fraction x: linear and quadratic coefficients, per step k
        self.linear = np.full(n + 1, m.epsilon * unit)
        self.quad = unit * qty * (
            m.temp_impact_per_share() / big_m
            + m.gamma * (big_m - 1) / (2 * big_m)
            + m.risk_aversion * m.risk_var_per_share2() * (big_m - 1) * (2 * big_m - 1)
            / (6 * big_m)
        )
        self.linear[n] = self.quad[n] = 0.0
        self.drift = np.zeros(n + 1)
        self._signal_col: int | None = None
        self.signal_persistence = 1.0
        signal = getattr(m, "signal", None)
        if signal is not None and "signal" in observations:
            phi = self.signal_persistence = math.exp(-signal.kappa * tau)
            for k in range(n):
                i = np.arange(n - k)
                w = float(np.sum((n - k - 1 - i) / (n - k) * phi**i))
                self.drift[k] = -order.side.sign * tau * signal.stationary_std * w * unit
            self._signal_col = observations.index("signal")
        self.n_steps = n
        self._rem = observations.index("remaining_ratio")
        self._elapsed = observations.index("elapsed_ratio")

    def __call__(self, observations: NDArray) -> NDArray[np.float64]:
        x = np.asarray(observations, dtype=np.float64)
        rem = x[:, self._rem]
        k = np.clip(np.rint(x[:, self._elapsed] * self.n_steps).astype(np.intp), 0, self.n_steps)
        cost = self.linear[k] * rem + self.quad[k] * rem * rem
        if self._signal_col is not None:
            cost = cost - self.drift[k] * rem * x[:, self._signal_col]
        return -cost


    def expected_next(self, observations: NDArray, next_observations: NDArray) -> NDArray:
        """``next_observations`` with the signal replaced by its expectation given the
        current one, φ·signal (the OU step): E[Φ(s') | s, a] = Φ of it, Φ being linear in
        the signal and the remaining quantity after the step known."""
        if self._signal_col is None:
            return next_observations
        out = np.array(next_observations, dtype=np.float64, copy=True)
        now = np.asarray(observations, dtype=np.float64)[:, self._signal_col]
        out[:, self._signal_col] = self.signal_persistence * now
        return out


def make_potential(name: str, market: MarketSpec, order: ParentOrder,
                   observations: tuple[str, ...]) -> TwapPotential | None:
    """The potential ``name`` (``none``: no shaping, None)."""
    if name == "none":
        return None
    if name == "twap":
        return TwapPotential(market, order, tuple(observations))
    raise ConfigError(f"shaping {name!r} is unknown; choose from {', '.join(SHAPINGS)}")


def shaped(reward: NDArray, potential: TwapPotential | None, obs: NDArray,
           next_obs: NDArray, done: NDArray) -> NDArray[np.float64]:
    """reward + E[Φ(s') | s, a] − Φ(s), with Φ = 0 for a finished order."""
    if potential is None:
        return np.asarray(reward, dtype=np.float64)
    after = np.where(done, 0.0, potential(potential.expected_next(obs, next_obs)))
    return np.asarray(reward, dtype=np.float64) + after - potential(obs)
