"""Summary statistics of implementation shortfall and paired policy comparisons.

Implementation shortfall (IS) is in basis points, positive = cost. Policies are evaluated on
common random numbers: element ``i`` of two policies' IS arrays was produced on the same market
path, so comparisons are *paired* (difference per order), which removes the market noise both
policies share and makes small improvements detectable.

Pure numpy / scipy on purpose: this module is the statistical core of every claim the project
makes, so it must be easy to audit and cheap to test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

# Indices + gathered values of one bootstrap chunk take ~16 bytes per element; this bounds
# a chunk at ~64 MB whatever n is (n = 100k -> 40 resamples per chunk).
_BOOT_CHUNK_ELEMENTS = 4_000_000


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


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values``.

    Resamples are drawn in chunks so memory stays bounded (~64 MB) even for n = 100k orders
    with 10k resamples, while each chunk is still vectorised. Deterministic given ``seed``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    arr = _as_clean_1d(values, "values")
    n = arr.size
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // n)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = arr[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


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
    p = np.asarray(policy_is, dtype=np.float64)
    b = np.asarray(baseline_is, dtype=np.float64)
    if p.shape != b.shape:
        raise ValueError(
            f"paired arrays must have the same shape: {policy!r} has {p.shape} "
            f"(length {p.size}), {baseline!r} has {b.shape} (length {b.size})"
        )
    p = _as_clean_1d(p, f"{policy} is_bps")
    b = _as_clean_1d(b, f"{baseline} is_bps")
    n = p.size
    if n < 2:
        raise ValueError(f"paired comparison needs at least 2 orders, got n={n}")

    diff = p - b
    diff_mean = float(diff.mean())
    diff_std = float(diff.std(ddof=1))
    baseline_mean = float(b.mean())
    improvement = -diff_mean / baseline_mean * 100.0 if baseline_mean != 0.0 else None

    if not np.any(diff):
        t_p, w_p, ci = 1.0, 1.0, (0.0, 0.0)
    else:
        # A constant non-zero diff has zero variance: scipy returns t = +-inf, p = 0, which
        # is the right answer (the difference is certain), so no special case is needed.
        t_p = float(stats.ttest_rel(p, b, alternative="two-sided").pvalue)
        w_p = float(stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
        ci = bootstrap_mean_ci(diff, n_boot=n_boot, seed=seed)

    return PairedComparison(
        policy=policy,
        baseline=baseline,
        n=int(n),
        diff_bps_mean=diff_mean,
        diff_bps_std=diff_std,
        ci95=ci,
        t_pvalue=t_p,
        wilcoxon_pvalue=w_p,
        improvement_pct=None if improvement is None else float(improvement),
    )
