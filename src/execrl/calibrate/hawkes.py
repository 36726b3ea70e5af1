"""Self-exciting market orders: maximum-likelihood fit of a two-sided exponential Hawkes process.

The simulator's Hawkes block (``execrl.sim.lob_config.HawkesConfig``) is symmetric between the
two aggressor sides: side s's market-order intensity is

    λ_s(t) = μ_s + Σ_{own orders t_k < t} α_self e^{−β(t − t_k)}
                 + Σ_{other side's t_k < t} α_cross e^{−β(t − t_k)}

(α in events/s per order, β in 1/s; branching ratio n = (α_self + α_cross)/β < 1). The exact
log-likelihood over [0, T] is

    ℓ = Σ_s [ Σ_{i ∈ s} log λ_s(t_i) − μ_s T
              − (α_self/β) Σ_{k ∈ s} (1 − e^{−β(T − t_k)})
              − (α_cross/β) Σ_{k ∉ s} (1 − e^{−β(T − t_k)}) ],

computed in one pass with the usual recursion for the decayed sums (numba). It is maximised with
scipy's L-BFGS-B over (log μ_buy, log μ_sell, logit n, logit of α_self's share of n, log β),
which keeps every parameter in its domain, from several starting decays (the likelihood in β
is not concave). Standard errors come from the inverse of a finite-difference Hessian of −ℓ in
the natural parameters; the fit is checked by the time-rescaling theorem (the compensator's
increments between a side's events are Exp(1) under the model: their Kolmogorov-Smirnov
distance is reported, with the Poisson model's for comparison) and by the likelihood-ratio
statistic against a homogeneous Poisson process per side.

A day's intraday seasonality (the open and close are busier) is read by a constant-baseline
Hawkes fit as excitation, so n is an upper bound of the day's true clustering; the report says
so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import NDArray
from scipy import optimize, stats

from execrl.domain import DataError

#: Starting decays (1/s) of the multi-start search.
_BETA_STARTS = (0.05, 0.5, 5.0, 50.0)


@njit(cache=True)
def _loglik(t, side, T, mu0, mu1, a_self, a_cross, beta):  # pragma: no cover - numba
    """ℓ of the model above for events ``t`` (sorted, in [0, T]) of ``side`` (0 / 1)."""
    r0 = 0.0  # Σ e^{−β(t − t_k)} over side-0 events before t
    r1 = 0.0
    last = 0.0
    ll = 0.0
    for i in range(t.size):
        d = math.exp(-beta * (t[i] - last))
        r0 *= d
        r1 *= d
        last = t[i]
        if side[i] == 0:
            lam = mu0 + a_self * r0 + a_cross * r1
            r0 += 1.0
        else:
            lam = mu1 + a_self * r1 + a_cross * r0
            r1 += 1.0
        if lam <= 0.0:
            return -np.inf
        ll += math.log(lam)
    tail = 0.0
    for i in range(t.size):
        tail += 1.0 - math.exp(-beta * (T - t[i]))
    # every event excites its own side by α_self and the other by α_cross
    ll -= (mu0 + mu1) * T + (a_self + a_cross) / beta * tail
    return ll


@njit(cache=True)
def _compensator_gaps(t, side, T, mu0, mu1, a_self, a_cross, beta):  # pragma: no cover
    """Λ_s(t_i) − Λ_s(t_{i−1}) between consecutive events of each side (time rescaling):
    i.i.d. Exp(1) under the model. Returned in event order, with the side of each gap."""
    n = t.size
    gaps = np.empty(n)
    gside = np.empty(n, np.int64)
    lam_int = np.zeros(2)  # Λ_s(t) so far
    last_event = np.full(2, -1.0)  # Λ_s at the side's previous event (−1: none yet)
    r0 = 0.0
    r1 = 0.0
    last = 0.0
    m = 0
    for i in range(n):
        dt = t[i] - last
        decay = 1.0 - math.exp(-beta * dt)
        # ∫ of the excitation over (last, t_i]: r/β (1 − e^{−βdt}) per decayed sum
        lam_int[0] += mu0 * dt + (a_self * r0 + a_cross * r1) / beta * decay
        lam_int[1] += mu1 * dt + (a_self * r1 + a_cross * r0) / beta * decay
        d = 1.0 - decay
        r0 *= d
        r1 *= d
        last = t[i]
        s = side[i]
        if last_event[s] >= 0.0:
            gaps[m] = lam_int[s] - last_event[s]
            gside[m] = s
            m += 1
        last_event[s] = lam_int[s]
        if s == 0:
            r0 += 1.0
        else:
            r1 += 1.0
    return gaps[:m], gside[:m]


@dataclass(frozen=True)
class HawkesFit:
    """The fitted two-sided exponential Hawkes process (units in the module docstring)."""

    mu: tuple[float, float]
    """Baseline intensities (buy, sell aggressor), events/s."""
    alpha_self: float
    alpha_cross: float
    beta: float
    loglik: float
    stderr: dict[str, float]
    n_events: tuple[int, int]
    span_s: float
    poisson_loglik: float
    ks_hawkes: float
    ks_poisson: float

    @property
    def branching_ratio(self) -> float:
        return (self.alpha_self + self.alpha_cross) / self.beta

    @property
    def lr_statistic(self) -> float:
        """2 (ℓ_Hawkes − ℓ_Poisson): χ² with 3 degrees of freedom under no excitation (a
        boundary case, so the χ² p-value is conservative)."""
        return 2.0 * (self.loglik - self.poisson_loglik)

    def to_dict(self) -> dict[str, object]:
        return {
            "mu_buy": self.mu[0], "mu_sell": self.mu[1], "alpha_self": self.alpha_self,
            "alpha_cross": self.alpha_cross, "beta": self.beta,
            "branching_ratio": self.branching_ratio, "stderr": self.stderr,
            "n_events": list(self.n_events), "span_s": self.span_s, "loglik": self.loglik,
            "poisson_loglik": self.poisson_loglik, "lr_statistic": self.lr_statistic,
            "lr_pvalue": float(stats.chi2.sf(self.lr_statistic, 3)),
            "ks_hawkes": self.ks_hawkes, "ks_poisson": self.ks_poisson,
            "mean_rate": [n / self.span_s for n in self.n_events],
        }


def _natural(x: NDArray[np.float64]) -> tuple[float, float, float, float, float]:
    mu0, mu1 = math.exp(x[0]), math.exp(x[1])
    n = 1.0 / (1.0 + math.exp(-x[2]))
    w = 1.0 / (1.0 + math.exp(-x[3]))
    beta = math.exp(x[4])
    return mu0, mu1, n * w * beta, n * (1.0 - w) * beta, beta


def fit_hawkes(times: NDArray[np.float64], sides: NDArray[np.integer], start_s: float,
               end_s: float, max_beta: float | None = None) -> HawkesFit:
    """Maximum-likelihood fit over [``start_s``, ``end_s``] of market orders at ``times``
    (seconds) by aggressor side (``sides``: +1 buy, -1 sell); ``max_beta`` (1/s) bounds the
    decay (the fit then describes clustering on time scales of 1 / ``max_beta`` and
    longer)."""
    t = np.asarray(times, dtype=np.float64) - float(start_s)
    s = np.asarray(sides)
    if not np.all((s == 1) | (s == -1)):
        raise DataError("market-order sides must be +1 (buy) or -1 (sell)")
    side = np.where(s == 1, 0, 1).astype(np.int64)
    T = float(end_s) - float(start_s)
    if t.size < 10 or T <= 0:
        raise DataError(f"{t.size} market orders over {T:g} s are too few to fit a Hawkes process")
    if np.any(np.diff(t) < 0) or t[0] < 0 or t[-1] > T:
        raise DataError("market-order times must be sorted and inside the span")
    counts = (int(np.sum(side == 0)), int(np.sum(side == 1)))
    if min(counts) == 0:
        raise DataError(f"market orders by side {counts}: both sides need events")

    def nll(x: NDArray[np.float64]) -> float:
        v = -_loglik(t, side, T, *_natural(x))
        return v if np.isfinite(v) else 1e300

    best = None
    top = math.inf if max_beta is None else math.log(max_beta)
    bounds = [(None, None)] * 4 + [(None, None if max_beta is None else top)]
    for beta0 in _BETA_STARTS:
        x0 = np.array([math.log(counts[0] / T / 2), math.log(counts[1] / T / 2), 0.0, 1.0,
                       min(math.log(beta0), top)])
        res = optimize.minimize(nll, x0, method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    mu0, mu1, a_self, a_cross, beta = _natural(best.x)
    ll = -float(best.fun)
    params = np.array([mu0, mu1, a_self, a_cross, beta])
    stderr = _stderr(lambda p: -_loglik(t, side, T, *p), params)
    pois = sum(c * math.log(c / T) - c for c in counts)
    gaps, _ = _compensator_gaps(t, side, T, mu0, mu1, a_self, a_cross, beta)
    ks_h = float(stats.kstest(gaps, "expon").statistic)
    pgaps = np.concatenate([np.diff(t[side == k]) * counts[k] / T for k in (0, 1)])
    ks_p = float(stats.kstest(pgaps, "expon").statistic)
    return HawkesFit(mu=(mu0, mu1), alpha_self=a_self, alpha_cross=a_cross, beta=beta,
                     loglik=ll, stderr=stderr, n_events=counts, span_s=T, poisson_loglik=pois,
                     ks_hawkes=ks_h, ks_poisson=ks_p)


def _stderr(f, p: NDArray[np.float64]) -> dict[str, float]:
    """Standard errors from the inverse of a central finite-difference Hessian of ``f`` at the
    optimum ``p`` (NaN where the Hessian is not positive definite, e.g. α_cross at 0)."""
    names = ("mu_buy", "mu_sell", "alpha_self", "alpha_cross", "beta")
    k = p.size
    h = np.maximum(np.abs(p) * 1e-4, 1e-7)
    H = np.zeros((k, k))
    f0 = f(p)
    for i in range(k):
        for j in range(i, k):
            if i == j:
                e = np.zeros(k)
                e[i] = h[i]
                lo = p - e
                if lo[i] <= 0:  # one-sided at the boundary
                    H[i, i] = (f(p + 2 * e) - 2 * f(p + e) + f0) / h[i] ** 2
                else:
                    H[i, i] = (f(p + e) - 2 * f0 + f(lo)) / h[i] ** 2
            else:
                ei = np.zeros(k)
                ej = np.zeros(k)
                ei[i], ej[j] = h[i], h[j]
                H[i, j] = H[j, i] = (f(p + ei + ej) - f(p + ei - ej) - f(p - ei + ej)
                                     + f(p - ei - ej)) / (4 * h[i] * h[j])
    try:
        cov = np.linalg.inv(H)
        var = np.diag(cov)
    except np.linalg.LinAlgError:
        var = np.full(k, np.nan)
    return {n: float(math.sqrt(v)) if np.isfinite(v) and v > 0 else math.nan
            for n, v in zip(names, var, strict=True)}


@njit(cache=True)
def _simulate(mu0, mu1, a_self, a_cross, beta, T, seed):  # pragma: no cover - numba
    np.random.seed(seed)
    cap = 16
    t_out = np.empty(cap)
    s_out = np.empty(cap, np.int64)
    n = 0
    t = 0.0
    r0 = 0.0
    r1 = 0.0
    while True:
        lam_bar = mu0 + mu1 + (a_self + a_cross) * (r0 + r1)  # excitation only decays
        w = np.random.exponential(1.0 / lam_bar)
        t += w
        if t > T:
            break
        d = math.exp(-beta * w)
        r0 *= d
        r1 *= d
        l0 = mu0 + a_self * r0 + a_cross * r1
        l1 = mu1 + a_self * r1 + a_cross * r0
        u = np.random.random() * lam_bar
        if u < l0 + l1:
            s = 0 if u < l0 else 1
            if n == cap:
                cap *= 2
                t2 = np.empty(cap)
                s2 = np.empty(cap, np.int64)
                t2[:n] = t_out[:n]
                s2[:n] = s_out[:n]
                t_out, s_out = t2, s2
            t_out[n] = t
            s_out[n] = s
            n += 1
            if s == 0:
                r0 += 1.0
            else:
                r1 += 1.0
    return t_out[:n], s_out[:n]


def simulate_hawkes(mu: tuple[float, float], alpha_self: float, alpha_cross: float,
                    beta: float, span_s: float, seed: int) -> tuple[NDArray, NDArray]:
    """Event times and sides (+1 buy, -1 sell) of the model on [0, ``span_s``] by Ogata's
    thinning (the intensity only decays between events, so its value just after the last
    event bounds it): the reference the fit is tested against."""
    t, s = _simulate(float(mu[0]), float(mu[1]), float(alpha_self), float(alpha_cross),
                     float(beta), float(span_s), int(seed))
    return t, np.where(s == 0, 1, -1).astype(np.int8)
