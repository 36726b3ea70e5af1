"""Summary statistics of implementation shortfall and paired policy comparisons.

Implementation shortfall (IS) is in basis points, positive = cost. Policies are evaluated on
common random numbers: element ``i`` of two policies' IS arrays was produced on the same market
path, so comparisons are *paired* (difference per order), which removes the market noise both
policies share and makes small improvements detectable.

Numpy / scipy, and one compiled loop: the bootstrap's resample means. This module is the
statistical core of every claim the project makes, so it must be easy to audit and cheap to
test: the bootstrap draws its indices from the project's counter-based generator
(``execrl.sim.rng``'s Philox4x32-10), resample b from its own counter range, so a resample
depends on (seed, b, n) alone; a test rebuilds them from the generator's known-answer-tested
blocks in plain numpy, and checks the intervals' coverage on data with a known mean.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from execrl.sim.rng import philox4x32


def _as_clean_1d(values: np.ndarray, name: str) -> np.ndarray:
    """Return ``values`` as a 1-D float64 array, rejecting empty input and NaN/inf.

    Silent NaNs would turn every statistic into NaN (or, worse, be dropped by some scipy
    routines and not by others), so we refuse them at the edge and say where they are.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; need at least one value")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN/inf), "
            f"first at index {first}: {arr[first]}"
        )
    return arr


def cvar(values: np.ndarray, alpha: float = 0.95) -> float:
    """Conditional value at risk of costs: the mean of the worst ``1 - alpha`` tail.

    Defined exactly as the mean of the ``k = ceil((1 - alpha) * n)`` largest values (at least
    one). This discrete definition needs no interpolation, is defined for every n >= 1, and is
    always >= the alpha-quantile's order statistic, so it is a conservative tail measure.
    For alpha = 0.95 and n = 100 it is the mean of the 5 largest values.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    arr = _as_clean_1d(values, "values")
    n = arr.size
    # The epsilon guards against (1 - 0.95) * 100 = 5.000000000000004 -> ceil 6.
    k = max(1, math.ceil((1.0 - alpha) * n - 1e-9))
    worst = np.partition(arr, n - k)[n - k :]
    return float(worst.mean())


def is_summary(is_bps: np.ndarray) -> dict[str, float]:
    """Summarise a policy's per-order IS: centre, spread and tail (p95, p99, CVaR95).

    Keys: ``mean, std, p50, p95, p99, cvar95``. ``std`` uses ddof=1 (sample std) and is 0.0
    for a single order; percentiles use numpy's linear interpolation; ``cvar95`` is
    :func:`cvar` with alpha = 0.95. All values are Python floats (JSON-ready).
    """
    arr = _as_clean_1d(is_bps, "is_bps")
    p50, p95, p99 = np.percentile(arr, [50.0, 95.0, 99.0], method="linear")
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "cvar95": cvar(arr, 0.95),
    }


def format_pvalue(p: float | None) -> str:
    """A p-value as people read it: ``'< 1e-300'`` below what a float64 test resolves (scipy
    returns 0.0 there, which is not a probability anyone should quote), ``'n/a'`` for none."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if p < 1e-300:
        return "< 1e-300"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


@dataclass(frozen=True)
class PairedComparison:
    """Paired comparison of a policy against a baseline on the same market paths.

    ``diff`` is policy minus baseline in bps, so a negative ``diff_bps_mean`` means the policy
    is cheaper and ``improvement_pct`` is then positive.
    """

    policy: str
    baseline: str
    n: int
    diff_bps_mean: float
    diff_bps_std: float
    ci95: tuple[float, float]
    t_pvalue: float
    wilcoxon_pvalue: float
    improvement_pct: float | None  # None where the baseline's mean IS is exactly 0

    def to_dict(self) -> dict[str, Any]:
        """The results.json ``comparisons`` entry (DESIGN.md) plus ``n`` and ``diff_bps_std``."""
        return {
            "policy": self.policy,
            "baseline": self.baseline,
            "n": self.n,
            "diff_bps_mean": self.diff_bps_mean,
            "diff_bps_std": self.diff_bps_std,
            "ci95": [self.ci95[0], self.ci95[1]],
            "t_pvalue": self.t_pvalue,
            "wilcoxon_pvalue": self.wilcoxon_pvalue,
            "improvement_pct": self.improvement_pct,
        }


#: the bootstrap's key: ``SeedSequence([seed, _BOOT_DOMAIN])``, so it is not the first episode
#: key of the market run under the same seed (those are ``default_rng(seed)``'s raw words)
_BOOT_DOMAIN = 0xB0075
#: the fourth word of the bootstrap's Philox counters: a tag no market's stream uses there
#: (markets put 0 or a ziggurat retry number 1, 2, … in it)
_BOOT_TAG = np.uint64(0xB0075)
#: rows are summed four at a time (the values of one order in one cache line)
_BOOT_GROUP = 4
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_ONE = np.uint64(1)
_TWO = np.uint64(2)


@njit(cache=True, inline="always")
def _boot_block(b: int, block: np.uint64, k0: np.uint64, k1: np.uint64
                ) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    """Block ``block`` of resample ``b``'s stream: Philox4x32-10 of the counter
    (block low, block high, b, _BOOT_TAG) under the bootstrap's key."""
    return philox4x32(block & _MASK32, block >> _S32, np.uint64(b), _BOOT_TAG, k0, k1)


@njit(cache=True)
def _draw_resample(b: int, n: int, k0: np.uint64, k1: np.uint64, idx: NDArray[np.uint64]
                   ) -> None:
    """The n indices of resample ``b`` into ``idx`` (its length: n rounded up to four): its
    stream's 32-bit words in order, each mapped to [0, n) by Lemire's multiply-shift with
    rejection (unbiased). A word is rejected with probability < n / 2**32, so the
    branch-free pass that maps the first n words is the rule and the exact sequential pass
    that skips rejected words the rare exception."""
    n_excl = np.uint64(n)
    threshold = (np.uint64(2**32) - n_excl) % n_excl
    rejected = False
    for c in range(idx.shape[0] // 4):  # independent blocks: the CPU overlaps them
        w0, w1, w2, w3 = _boot_block(b, np.uint64(c), k0, k1)
        p0, p1, p2, p3 = w0 * n_excl, w1 * n_excl, w2 * n_excl, w3 * n_excl
        rejected |= ((p0 & _MASK32) < threshold) | ((p1 & _MASK32) < threshold) \
            | ((p2 & _MASK32) < threshold) | ((p3 & _MASK32) < threshold)
        idx[4 * c], idx[4 * c + 1] = p0 >> _S32, p1 >> _S32
        idx[4 * c + 2], idx[4 * c + 3] = p2 >> _S32, p3 >> _S32
    if not rejected:  # (a rejected word among the padding's is redone below too: exact)
        return
    h = np.uint64(0)  # word h of the stream: block h // 4, its word h % 4
    t = 0
    while t < n:
        q = h & np.uint64(3)
        w = _boot_block(b, h >> _TWO, k0, k1)
        v = w[0] if q == 0 else w[1] if q == 1 else w[2] if q == 2 else w[3]
        h += _ONE
        prod = v * n_excl
        if (prod & _MASK32) < threshold:
            continue
        idx[t] = prod >> _S32
        t += 1


@njit(cache=True, nogil=True)
def _resample_means(by_order: NDArray[np.float64], key: np.uint64, first: int,
                    means: NDArray[np.float64]) -> None:
    """Resamples ``first`` … ``first + means.shape[1] − 1``: their means of the rows held
    column-wise in ``by_order`` (n, g·4: order i's values side by side, zero-padded to groups
    of four) into ``means`` (rows, resamples). Resample b's sums run over its indices in draw
    order, even and odd draws in two partial sums added at the end (two chains the CPU runs
    side by side), so each mean is a fixed function of (data, key, b): the same in any batch,
    on any thread. Releases the GIL: ``bootstrap_means`` runs slices side by side."""
    n, width = by_order.shape
    m = means.shape[0]
    flat = by_order.ravel()
    k0, k1 = key & _MASK32, key >> _S32
    idx = np.empty(4 * ((n + 3) // 4), dtype=np.uint64)
    w = np.uint64(width)
    half = n // 2
    for col_b in range(means.shape[1]):
        b = first + col_b
        _draw_resample(b, n, k0, k1, idx)
        for g in range(0, width, _BOOT_GROUP):
            col = np.uint64(g)
            a0 = a1 = a2 = a3 = 0.0
            e0 = e1 = e2 = e3 = 0.0
            for t in range(half):
                i = idx[_TWO * np.uint64(t)] * w + col
                j = idx[_TWO * np.uint64(t) + _ONE] * w + col
                a0 += flat[i]
                a1 += flat[i + _ONE]
                a2 += flat[i + _TWO]
                a3 += flat[i + np.uint64(3)]
                e0 += flat[j]
                e1 += flat[j + _ONE]
                e2 += flat[j + _TWO]
                e3 += flat[j + np.uint64(3)]
            if n % 2:
                i = idx[n - 1] * w + col
                a0 += flat[i]
                a1 += flat[i + _ONE]
                a2 += flat[i + _TWO]
                a3 += flat[i + np.uint64(3)]
            sums = (a0 + e0, a1 + e1, a2 + e2, a3 + e3)
            for r in range(_BOOT_GROUP):
                if g + r < m:
                    means[g + r, col_b] = sums[r] / n


def bootstrap_key(seed: int) -> np.uint64:
    """The bootstrap's 64-bit Philox key under ``seed``."""
    state = np.random.SeedSequence([int(seed), _BOOT_DOMAIN]).generate_state(1, np.uint64)
    return np.uint64(state[0])


def bootstrap_means(values: NDArray, *, n_boot: int = 10_000, seed: int = 0) -> NDArray:
    """(rows, n_boot) resample means of each row of ``values`` (1-D: one row), all rows on the
    same resamples. Resample b draws n indices uniformly with replacement from the counter-based
    Philox4x32-10 stream (key ``bootstrap_key(seed)``, counter (block, b, _BOOT_TAG)): each
    resample's indices depend on (seed, b, n) alone, so they are reproducible, cost nothing to
    skip to, and are the same whichever rows are resampled with them. One pass over a
    resample's indices serves every row, so comparisons against one baseline share their
    resamples and the cost of drawing them (~2×10⁸ draws for 10,000 resamples of 20,000
    orders: well under a second)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    arr = np.atleast_2d(np.asarray(values, dtype=np.float64))
    m, n = arr.shape
    if n >= 2**32:
        raise ValueError(f"bootstrap of {n} values: at most 2**32 - 1")
    if n_boot >= 2**32:
        raise ValueError(f"n_boot = {n_boot}: at most 2**32 - 1")
    width = -(-m // _BOOT_GROUP) * _BOOT_GROUP
    by_order = np.zeros((n, width))
    by_order[:, :m] = arr.T
    key = bootstrap_key(seed)
    means = np.empty((m, int(n_boot)))
    # slices of resamples side by side on the machine's cores (the kernel releases the GIL);
    # each resample is computed whole by one thread, so the result does not depend on it
    threads = min(_boot_threads(), max(1, n_boot * n // 10_000_000))
    if threads == 1:
        _resample_means(by_order, key, 0, means)
        return means
    from concurrent.futures import ThreadPoolExecutor

    edges = np.linspace(0, n_boot, threads + 1).astype(np.int64)
    parts = [np.empty((m, int(hi - lo))) for lo, hi in itertools.pairwise(edges)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda j: _resample_means(by_order, key, int(edges[j]), parts[j]),
                      range(threads)))
    return np.concatenate(parts, axis=1)


def _boot_threads() -> int:
    """Threads for the bootstrap: the cores this process may run on (at most 8)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def percentile_ci(means: NDArray, level: float = 0.95) -> tuple[float, float]:
    """The percentile-bootstrap interval of level ``level`` from resample means."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values``.

    Deterministic given ``seed``: the counter-based resamples of ``bootstrap_means``, summed
    in a compiled loop (no n_boot × n index array: ~n_boot·n·3 ns, whatever n is).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    arr = _as_clean_1d(values, "values")
    return percentile_ci(bootstrap_means(arr, n_boot=n_boot, seed=seed)[0], level)


def paired_comparison(
    policy: str,
    policy_is: np.ndarray,
    baseline: str,
    baseline_is: np.ndarray,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Compare ``policy`` with ``baseline`` order by order (same market path per index).

    Reports the mean and std of ``diff = policy_is - baseline_is``, a percentile-bootstrap 95%
    CI of the mean diff, a two-sided paired t-test and a two-sided Wilcoxon signed-rank test
    (``zero_method="wilcox"``: ties at zero are dropped). Using both guards against the
    heavy tails IS often has, where the t-test alone can mislead.

    Edge cases, chosen so results.json never holds an exception or a spurious NaN:
    all differences exactly zero (e.g. a policy against itself) -> p-values 1.0, CI (0, 0).
    ``improvement_pct = -diff_mean / baseline_mean * 100`` is None when the baseline's mean
    IS is exactly 0 (a relative improvement over zero cost is undefined; JSON has no NaN).
    At least two orders are required: with one there is no variance and no test.
    """
    return paired_comparisons({policy: policy_is}, baseline, baseline_is, n_boot=n_boot,
                              seed=seed)[0]


def paired_comparisons(
    policies: dict[str, np.ndarray],
    baseline: str,
    baseline_is: np.ndarray,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
) -> list[PairedComparison]:
    """``paired_comparison`` of every policy against one baseline, the bootstraps computed in
    one pass on the same resamples (each result is what ``paired_comparison`` gives alone)."""
    b = np.asarray(baseline_is, dtype=np.float64)
    checked = {}
    for policy, policy_is in policies.items():
        p = np.asarray(policy_is, dtype=np.float64)
        if p.shape != b.shape:
            raise ValueError(
                f"paired arrays must have the same shape: {policy!r} has {p.shape} "
                f"(length {p.size}), {baseline!r} has {b.shape} (length {b.size})"
            )
        checked[policy] = _as_clean_1d(p, f"{policy} is_bps")
    b = _as_clean_1d(b, f"{baseline} is_bps")
    n = b.size
    if n < 2:
        raise ValueError(f"paired comparison needs at least 2 orders, got n={n}")
    diffs = {policy: p - b for policy, p in checked.items()}
    resampled = [policy for policy, diff in diffs.items() if np.any(diff)]
    if not resampled:
        return [_comparison(policy, baseline, diffs[policy], b, None, None, None)
                for policy in checked]
    from concurrent.futures import ThreadPoolExecutor

    # the bootstrap's kernel releases the GIL: it runs while this thread computes the tests
    with ThreadPoolExecutor(1) as pool:
        boot = pool.submit(bootstrap_means, np.stack([diffs[p] for p in resampled]),
                           n_boot=n_boot, seed=seed)
        tests = {policy: (paired_t_pvalue(diffs[policy]), wilcoxon_pvalue(diffs[policy]))
                 for policy in resampled}
        means = boot.result()
    cis = {policy: percentile_ci(row) for policy, row in zip(resampled, means, strict=True)}
    return [_comparison(policy, baseline, diffs[policy], b, cis.get(policy),
                        *tests.get(policy, (None, None))) for policy in checked]


#: scipy.stats' own rules (exact distribution, permutation test) apply up to this many orders;
#: above it ``scipy.stats.wilcoxon`` (method "auto") uses the normal approximation
_WILCOXON_EXACT_MAX = 50


def paired_t_pvalue(diff: NDArray[np.float64]) -> float:
    """Two-sided p-value of the paired t-test on ``diff`` (policy minus baseline): what
    ``scipy.stats.ttest_rel(policy, baseline).pvalue`` returns, t = mean / (s / √n) on n − 1
    degrees of freedom, P(|T| ≥ |t|) = I_{ν/(ν+t²)}(ν/2, 1/2) (the regularised incomplete beta
    function). Written here, not imported, because importing scipy.stats cost 0.8 of
    ``execrl evaluate``'s 6.4 CPU-s (scipy.special alone 0.37; measured 2026-12-01,
    bench/README.md); tests check it against scipy.stats on random data. A constant non-zero
    difference has zero variance: t = ±inf, p = 0 (the difference is certain), as scipy."""
    n = diff.size
    mean = float(diff.mean())
    sd = float(diff.std(ddof=1))
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (sd / math.sqrt(n))
    df = n - 1.0
    # x = ν/(ν+t²) and y = 1 − x = t²/(ν+t²), each from t (1 − x would lose digits)
    x, y = df / (df + t * t), t * t / (df + t * t)
    if t * t < 4.0:  # p ≳ 0.05: 1 − I_y(1/2, ν/2), whose fraction in y is exact there
        return min(1.0, 1.0 - _betainc_front_cf(0.5, 0.5 * df, y, x))
    # the tail: I_x(ν/2, 1/2) itself (within ~1e-10 of scipy up to ν ~ 10⁷; tests)
    return min(1.0, _betainc_front_cf(0.5 * df, 0.5, x, y))


def wilcoxon_pvalue(diff: NDArray[np.float64]) -> float:
    """Two-sided p-value of Wilcoxon's signed-rank test on ``diff``, zeros dropped
    (``zero_method="wilcox"``), what ``scipy.stats.wilcoxon(diff, zero_method="wilcox")``
    returns: above 50 differences its normal approximation of W+ = Σ ranks of the positive
    differences (average ranks of |d| for ties; variance n(n+1)(2n+1)/24 − Σ(t³ − t)/48 over
    the tie groups' sizes t; no continuity correction), p = erfc(|z| / √2). Written here for
    the import cost (see ``paired_t_pvalue``); up to 50 differences scipy.stats decides (an
    exact distribution or a permutation test), imported then."""
    if diff.size <= _WILCOXON_EXACT_MAX:
        from scipy import stats

        return float(stats.wilcoxon(diff, zero_method="wilcox",
                                    alternative="two-sided").pvalue)
    d = diff[diff != 0.0]
    n = d.size
    if n == 0:
        return 1.0
    a = np.abs(d)
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    # tie groups of |d|: start of each run of equal values
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    sizes = np.diff(np.r_[starts, n]).astype(np.float64)
    average_rank = starts + (sizes + 1.0) / 2.0  # ranks from 1
    ranks = np.empty(n)
    ranks[order] = np.repeat(average_rank, sizes.astype(np.int64))
    r_plus = float(ranks[d > 0].sum())
    nf = float(n)
    mean = nf * (nf + 1.0) * 0.25
    var = (nf * (nf + 1.0) * (2.0 * nf + 1.0) - float((sizes**3 - sizes).sum()) / 2.0) / 24.0
    z = (r_plus - mean) / math.sqrt(var)
    return min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))


def _betainc_front_cf(a: float, b: float, x: float, y: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (y = 1 − x, passed in where it is
    exact) as the front factor x^a y^b / (a B(a, b)) times its continued fraction (modified
    Lentz, Numerical Recipes' betacf); the caller picks the side of
    I_x(a, b) = 1 − I_y(b, a) on which it converges accurately."""
    # ln x near x = 1 from y (a·ln x with a ~ 10⁶ would magnify x's rounding), and so ln y
    log_x = math.log1p(-y) if x > 0.5 else math.log(x)
    log_y = math.log1p(-x) if y > 0.5 else math.log(y)
    log_front = a * log_x + b * log_y - _log_beta(a, b) - math.log(a)
    if log_front < -745.0:  # below the smallest double
        return 0.0
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f


def _log_beta(a: float, b: float) -> float:
    """ln B(a, b) = ln Γ(a) + ln Γ(b) − ln Γ(a + b); with one argument large (the t-test's
    ν/2 against 1/2), ln Γ(big) − ln Γ(big + small) from Stirling's series, which does not
    lose the digits the difference of two large ln Γ values does."""
    small, big = min(a, b), max(a, b)
    if big < 16.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    both = big + small
    return (math.lgamma(small) - (big - 0.5) * math.log1p(small / big)
            - small * math.log(both) + small + _stirling_tail(big) - _stirling_tail(both))


def _stirling_tail(x: float) -> float:
    """ln Γ(x) − ((x − ½) ln x − x + ½ ln 2π) for x ≥ 16: Stirling's series to x⁻⁹
    (the next term is below 1e-17 there)."""
    r = 1.0 / (x * x)
    return (1.0 / 12.0 - r * (1.0 / 360.0 - r * (1.0 / 1260.0 - r * (1.0 / 1680.0
            - r / 1188.0)))) / x


def _comparison(policy: str, baseline: str, diff: NDArray, baseline_is: NDArray,
                ci: tuple[float, float] | None, t_p: float | None, w_p: float | None
                ) -> PairedComparison:
    """One ``PairedComparison``; ``ci`` None: every difference is exactly zero (p-values
    1.0, CI (0, 0))."""
    if ci is None:
        ci, t_p, w_p = (0.0, 0.0), 1.0, 1.0
    baseline_mean = float(baseline_is.mean())
    diff_mean = float(diff.mean())
    improvement = -diff_mean / baseline_mean * 100.0 if baseline_mean != 0.0 else None
    return PairedComparison(
        policy=policy,
        baseline=baseline,
        n=int(diff.size),
        diff_bps_mean=diff_mean,
        diff_bps_std=float(diff.std(ddof=1)),
        ci95=ci,
        t_pvalue=float(t_p),
        wilcoxon_pvalue=float(w_p),
        improvement_pct=None if improvement is None else float(improvement),
    )
