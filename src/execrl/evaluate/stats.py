"""Summary statistics of implementation shortfall and paired policy comparisons.

Implementation shortfall (IS) is in basis points, positive = cost. Policies are evaluated on
common random numbers: element ``i`` of two policies' IS arrays was produced on the same market
path, so comparisons are *paired* (difference per order), which removes the market noise both
policies share and makes small improvements detectable.

Numpy / scipy, and one small compiled loop: the bootstrap's resample means. This module is
the statistical core of every claim the project makes, so it must be easy to audit and cheap
to test: the bootstrap's resamples are exactly those of numpy's ``integers`` under the seed
(a test compares with the plain numpy computation), only computed without materialising them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray
from scipy import stats


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


#: raw 64-bit words of the generator one call of the resampling kernel reads (8 MiB)
_BOOT_WORDS = 1 << 20
#: a draw is started only with this many 32-bit values left (Lemire's rejection takes another
#: with probability < n / 2**32 per try: 64 in a row do not happen)
_BOOT_RESERVE = 64
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@njit(cache=True)
def _resample_sums(
    cols: NDArray[np.float64],
    words: NDArray[np.uint64],
    first_half: int,
    cursor: NDArray[np.int64],
    acc: NDArray[np.float64],
    means: NDArray[np.float64],
) -> int:
    """Resume the bootstrap at resample ``cursor[0]``, order ``cursor[1]`` (partial sums in
    ``acc``), reading 32-bit values from ``words`` from half ``first_half`` on: the low then
    the high half of each word, as PCG64's ``next_uint32``. Each index is numpy's
    ``buffered_bounded_lemire_uint32`` of them (what ``Generator.integers(0, n)`` draws for
    int64 below 2**32). Returns the halves read, or −1 if a draw ran out of values."""
    n, m = cols.shape
    n_boot = means.shape[1]
    n_excl = np.uint64(n)
    threshold = (np.uint64(2**32) - n_excl) % n_excl
    halves = 2 * words.shape[0]
    h = first_half
    b, j = cursor[0], cursor[1]
    while b < n_boot:
        if halves - h < _BOOT_RESERVE:
            break
        word = words[h >> 1]
        v = (word >> _S32) if h & 1 else (word & _MASK32)
        h += 1
        prod = v * n_excl
        if (prod & _MASK32) < n_excl:
            while (prod & _MASK32) < threshold:
                if h >= halves:
                    return -1
                word = words[h >> 1]
                v = (word >> _S32) if h & 1 else (word & _MASK32)
                h += 1
                prod = v * n_excl
        row = cols[np.intp(prod >> _S32)]
        for r in range(m):
            acc[r] += row[r]
        j += 1
        if j == n:
            for r in range(m):
                means[r, b] = acc[r] / n
                acc[r] = 0.0
            j = 0
            b += 1
    cursor[0], cursor[1] = b, j
    return h - first_half


def _resample_means(values: NDArray[np.float64], n_boot: int, seed: int) -> NDArray[np.float64]:
    """(rows, n_boot): the mean of every row over resamples b = 0 … n_boot − 1 of its n
    columns, resample b holding draws b·n … b·n + n − 1 of ``default_rng(seed).integers(0,
    n)``, i.e. the indices of ``integers(0, n, size=(n_boot, n))`` (a test checks it), read
    from the generator's raw words in blocks and never stored. One pass over the indices
    serves every row, so comparisons against one baseline share their resamples and cost."""
    m, n = values.shape
    if n >= 2**32:
        raise ValueError(f"bootstrap of {n} values: at most 2**32 - 1")
    bits = np.random.default_rng(seed).bit_generator
    cols = np.ascontiguousarray(values.T)  # (n, rows): one resampled order's rows together
    means = np.empty((m, n_boot))
    acc = np.zeros(m)
    cursor = np.zeros(2, dtype=np.int64)
    words = np.empty(0, dtype=np.uint64)
    half = 0
    while cursor[0] < n_boot:
        left = words[half >> 1 :]  # the values not read yet (from an odd half: its high half)
        words = np.concatenate([left, np.asarray(bits.random_raw(_BOOT_WORDS), np.uint64)])
        read = _resample_sums(cols, words, half & 1, cursor, acc, means)
        if read < 0:  # pragma: no cover - 64 rejections in a row
            raise RuntimeError("bootstrap: a draw needed more random values than reserved")
        half = (half & 1) + read
    return means


def bootstrap_means(values: NDArray, *, n_boot: int = 10_000, seed: int = 0) -> NDArray:
    """(rows, n_boot) resample means of each row of ``values`` (1-D: one row), all rows on the
    same resamples, drawn from ``np.random.default_rng(seed)`` (see ``_resample_means``)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    arr = np.atleast_2d(np.asarray(values, dtype=np.float64))
    return _resample_means(arr, int(n_boot), seed)


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

    Deterministic given ``seed``: the resamples of ``rng.integers(0, n, size=(n_boot, n))``
    with ``rng = np.random.default_rng(seed)``, summed in a compiled loop (no n_boot × n
    index array: ~n_boot·n·1 ns, whatever n is).
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
    cis: dict[str, tuple[float, float]] = {}
    if resampled:
        means = bootstrap_means(np.stack([diffs[p] for p in resampled]), n_boot=n_boot,
                                seed=seed)
        cis = {policy: percentile_ci(row) for policy, row in zip(resampled, means, strict=True)}
    baseline_mean = float(b.mean())
    out = []
    for policy, p in checked.items():
        diff = diffs[policy]
        diff_mean = float(diff.mean())
        improvement = -diff_mean / baseline_mean * 100.0 if baseline_mean != 0.0 else None
        if policy not in cis:
            t_p, w_p, ci = 1.0, 1.0, (0.0, 0.0)
        else:
            # A constant non-zero diff has zero variance: scipy returns t = +-inf, p = 0,
            # which is the right answer (the difference is certain): no special case.
            t_p = float(stats.ttest_rel(p, b, alternative="two-sided").pvalue)
            w_p = float(stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
                        .pvalue)
            ci = cis[policy]
        out.append(PairedComparison(
            policy=policy,
            baseline=baseline,
            n=int(n),
            diff_bps_mean=diff_mean,
            diff_bps_std=float(diff.std(ddof=1)),
            ci95=ci,
            t_pvalue=t_p,
            wilcoxon_pvalue=w_p,
            improvement_pct=None if improvement is None else float(improvement),
        ))
    return out
