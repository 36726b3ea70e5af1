"""Tests for execrl.evaluate.stats: IS summaries, CVaR and paired comparisons."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import execrl.evaluate.stats as stats_module
from execrl.evaluate.stats import (
    _BOOT_TAG,
    PairedComparison,
    bootstrap_key,
    bootstrap_mean_ci,
    bootstrap_means,
    cvar,
    is_summary,
    paired_comparison,
    paired_comparisons,
)
from execrl.sim.rng import philox_block

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)


def brute_force_cvar95(values: np.ndarray) -> float:
    """Mean of the k = ceil(0.05 n) largest values, found by trying every k-subset."""
    n = len(values)
    k = max(1, math.ceil(5 * n / 100))  # integer arithmetic: no float rounding at all
    best = max(itertools.combinations(values.tolist(), k), key=sum)
    return sum(best) / k


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 12), elements=finite))
def test_cvar95_matches_brute_force(values: np.ndarray) -> None:
    assert cvar(values, 0.95) == pytest.approx(brute_force_cvar95(values), rel=1e-12, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 200), elements=finite))
def test_cvar_is_between_p95_and_max(values: np.ndarray) -> None:
    c = cvar(values, 0.95)
    assert c <= values.max() + 1e-9
    assert c >= np.sort(values)[len(values) - max(1, math.ceil(0.05 * len(values) - 1e-9))] - 1e-9


def test_cvar_tail_size_has_no_float_off_by_one() -> None:
    # (1 - 0.95) * 100 = 5.000000000000004 in floating point; the tail must still be 5 values.
    values = np.arange(1.0, 101.0)
    assert cvar(values, 0.95) == pytest.approx((96 + 97 + 98 + 99 + 100) / 5)
    assert cvar(values, 0.99) == 100.0


def test_is_summary_known_array() -> None:
    s = is_summary(np.arange(1, 101))
    assert set(s) == {"mean", "std", "p50", "p95", "p99", "cvar95"}
    assert all(type(v) is float for v in s.values())
    assert s["mean"] == pytest.approx(50.5)
    # sample variance of 1..n is n(n+1)/12 -> 100*101/12
    assert s["std"] == pytest.approx(math.sqrt(100 * 101 / 12))
    # linear interpolation at position q*(n-1): 49.5 -> 50.5, 94.05 -> 95.05, 98.01 -> 99.01
    assert s["p50"] == pytest.approx(50.5)
    assert s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01)
    assert s["cvar95"] == pytest.approx(98.0)


def test_is_summary_single_value() -> None:
    s = is_summary(np.array([3.5]))
    assert s == {"mean": 3.5, "std": 0.0, "p50": 3.5, "p95": 3.5, "p99": 3.5, "cvar95": 3.5}


@pytest.mark.parametrize(
    ("values", "match"),
    [(np.array([]), "empty"), (np.array([1.0, np.nan]), "NaN"), (np.ones((2, 2)), "1-D")],
)
def test_is_summary_rejects_bad_input(values: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        is_summary(values)


def _shifted_pair(shift: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline IS with big shared market noise; policy = baseline + shift + small own noise."""
    rng = np.random.default_rng(seed)
    baseline = 10.0 + 20.0 * rng.standard_normal(n)
    policy = baseline + shift + rng.standard_normal(n)
    return policy, baseline


def test_known_shift_is_detected() -> None:
    policy, baseline = _shifted_pair(-1.0, 4000, seed=1)
    c = paired_comparison("ppo", policy, "twap", baseline, n_boot=2000, seed=3)
    lo, hi = c.ci95
    assert lo < -1.0 < hi  # covers the true mean difference
    assert hi < 0.0  # and excludes zero
    assert hi - lo < 0.2  # ~ 2 * 1.96 / sqrt(4000) = 0.062: tight, not vacuous
    assert c.diff_bps_mean == pytest.approx(-1.0, abs=0.1)
    assert c.diff_bps_std == pytest.approx(1.0, abs=0.1)
    assert c.t_pvalue < 1e-6
    assert c.wilcoxon_pvalue < 1e-6
    assert c.n == 4000


def test_zero_shift_is_not_significant() -> None:
    policy, baseline = _shifted_pair(0.0, 4000, seed=0)
    c = paired_comparison("ppo", policy, "twap", baseline, n_boot=2000, seed=0)
    assert c.t_pvalue > 0.05
    assert c.wilcoxon_pvalue > 0.05
    assert c.ci95[0] < 0.0 < c.ci95[1]


def test_null_calibration_and_ci_coverage() -> None:
    """Under no shift the tests reject ~5% of the time and the 95% CI covers 0 ~95% of the time.

    A single fixed-seed sample can only show "not significant once"; calibration over many
    seeds catches a mis-specified test (e.g. an unpaired test, or a one-sided p-value).
    """
    reps, n = 300, 200
    t_rej = w_rej = covered = 0
    for seed in range(reps):
        policy, baseline = _shifted_pair(0.0, n, seed=1000 + seed)
        c = paired_comparison("ppo", policy, "twap", baseline, n_boot=400, seed=seed)
        t_rej += c.t_pvalue < 0.05
        w_rej += c.wilcoxon_pvalue < 0.05
        covered += c.ci95[0] <= 0.0 <= c.ci95[1]
    # Binomial(300, 0.05) sd ~ 3.8 rejections; the bounds are ~3 sd wide either side.
    assert 3 <= t_rej <= 27
    assert 3 <= w_rej <= 27
    assert 0.88 * reps <= covered <= 0.99 * reps


def test_sign_convention_policy_cheaper() -> None:
    baseline = np.array([10.0, 12.0, 8.0, 10.0])
    policy = baseline - np.array([1.0, 2.0, 1.0, 2.0])  # cheaper on every order
    c = paired_comparison("ac", policy, "twap", baseline, n_boot=500)
    assert c.diff_bps_mean == pytest.approx(-1.5)
    assert c.improvement_pct == pytest.approx(1.5 / 10.0 * 100)
    assert c.ci95[1] <= 0.0


def test_identical_arrays_give_zeros_and_unit_pvalues() -> None:
    x = np.random.default_rng(0).normal(5.0, 3.0, 100)
    c = paired_comparison("twap", x, "twap", x.copy())
    assert c.diff_bps_mean == 0.0
    assert c.diff_bps_std == 0.0
    assert c.ci95 == (0.0, 0.0)
    assert c.t_pvalue == 1.0
    assert c.wilcoxon_pvalue == 1.0
    assert c.improvement_pct == 0.0


def test_zero_baseline_mean_gives_no_improvement_pct() -> None:
    c = paired_comparison("a", np.array([1.0, 2.0, 0.5]), "b", np.array([-1.0, 1.0, 0.0]))
    assert c.improvement_pct is None


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_constant_nonzero_diff_is_certain() -> None:
    b = np.linspace(1.0, 5.0, 30)
    c = paired_comparison("a", b - 0.5, "b", b)
    assert c.t_pvalue == 0.0
    assert c.wilcoxon_pvalue < 1e-6
    assert c.ci95 == pytest.approx((-0.5, -0.5))


def test_mismatched_shapes_name_both_lengths() -> None:
    with pytest.raises(ValueError, match=r"'ppo' has \(5,\) \(length 5\).*'twap' has \(7,\)"):
        paired_comparison("ppo", np.zeros(5), "twap", np.zeros(7))


def test_nan_in_paired_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="twap is_bps contains 1 non-finite"):
        paired_comparison("ppo", np.zeros(3), "twap", np.array([0.0, np.nan, 1.0]))


def test_single_order_is_rejected() -> None:
    with pytest.raises(ValueError, match="n=1"):
        paired_comparison("ppo", np.zeros(1), "twap", np.ones(1))


def test_to_dict_shape() -> None:
    c = paired_comparison("ppo", np.array([1.0, 2.0, 4.0]), "twap", np.array([2.0, 2.5, 4.0]))
    d = c.to_dict()
    assert set(d) == {
        "policy", "baseline", "n", "diff_bps_mean", "diff_bps_std", "ci95",
        "t_pvalue", "wilcoxon_pvalue", "improvement_pct",
    }  # fmt: skip
    assert isinstance(d["ci95"], list) and len(d["ci95"]) == 2
    assert d["policy"] == "ppo" and d["baseline"] == "twap" and d["n"] == 3
    assert isinstance(c, PairedComparison)


_M32 = np.uint64(0xFFFFFFFF)


def _philox_numpy(c0, c1, c2, c3, key: int) -> list[np.ndarray]:
    """Philox4x32-10 on arrays of counters, in plain numpy (the reference of the compiled
    bootstrap; checked against ``execrl.sim.rng.philox_block``, whose known answers
    tests/test_rng.py checks)."""
    c = [np.asarray(x, dtype=np.uint64) & _M32 for x in (c0, c1, c2, c3)]
    k0, k1 = np.uint64(key & 0xFFFFFFFF), np.uint64(key >> 32)
    for r in range(10):
        if r:
            k0 = (k0 + np.uint64(0x9E3779B9)) & _M32
            k1 = (k1 + np.uint64(0xBB67AE85)) & _M32
        p0, p1 = np.uint64(0xD2511F53) * c[0], np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & _M32, (p0 >> np.uint64(32)) ^ c[3] ^ k1,
             p0 & _M32]
    return c


def reference_resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices as the bootstrap documents them: resample b's words are the
    Philox blocks (block, 0, b, tag) under ``bootstrap_key(seed)``, in order; each word v is
    accepted unless (v·n mod 2**32) < (2**32 − n) mod n (Lemire) and maps to v·n >> 32."""
    key = int(bootstrap_key(seed))
    blocks = n // 4 + 8  # a few spare for the rare rejections
    threshold = (2**32 - n) % n
    out = np.empty((n_boot, n), dtype=np.int64)
    for b in range(n_boot):
        c = np.arange(blocks, dtype=np.uint64)
        w = np.stack(_philox_numpy(c, 0, b, _BOOT_TAG, key), axis=1).ravel()
        prod = w * np.uint64(n)
        keep = (prod & _M32) >= np.uint64(threshold)
        out[b] = (prod[keep] >> np.uint64(32))[:n].astype(np.int64)
    return out


def test_reference_philox_is_the_kat_tested_one() -> None:
    ctr = np.array([5, 0, 7, int(_BOOT_TAG)], dtype=np.uint64)
    key = 0x1234_5678_9ABC_DEF0
    got = np.array([int(v[0]) for v in _philox_numpy(*([x] for x in ctr), key)])
    want = philox_block(ctr, np.array([key & 0xFFFFFFFF, key >> 32], dtype=np.uint64))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [300, 301, 2, 49_153])
def test_bootstrap_draws_the_documented_philox_resamples(n: int) -> None:
    """The compiled bootstrap averages exactly the resamples ``reference_resamples`` rebuilds
    in numpy, for odd and even n; n = 49,153 rejects ~0.3 words per resample in Lemire's
    step, so the exact sequential pass runs there too (checked below)."""
    n_boot = 40 if n > 1000 else 500
    x = np.random.default_rng(5).standard_normal(n)
    idx = reference_resamples(n, n_boot, seed=9)
    means = bootstrap_means(x, n_boot=n_boot, seed=9)[0]
    np.testing.assert_allclose(means, x[idx].mean(axis=1), rtol=1e-12, atol=1e-15)
    if n == 49_153:  # some resample had a rejected word among its first n
        key, threshold = int(bootstrap_key(9)), (2**32 - n) % n
        hits = 0
        for b in range(n_boot):
            c = np.arange(-(-n // 4), dtype=np.uint64)
            w = np.stack(_philox_numpy(c, 0, b, _BOOT_TAG, key), axis=1).ravel()[:n]
            hits += bool(((w * np.uint64(n)) & _M32 < np.uint64(threshold)).any())
        assert hits >= 3


def test_bootstrap_is_deterministic_and_counter_based(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(5).standard_normal(1000)
    ci = bootstrap_mean_ci(x, n_boot=1000, seed=9)
    lo, hi = np.percentile(bootstrap_means(x, n_boot=1000, seed=9)[0], [2.5, 97.5])
    assert ci == (lo, hi)
    assert bootstrap_mean_ci(x, n_boot=1000, seed=9) == ci
    assert bootstrap_mean_ci(x, n_boot=1000, seed=10) != ci
    # resample b depends on (seed, b) alone: fewer resamples are a prefix of more
    np.testing.assert_array_equal(bootstrap_means(x, n_boot=300, seed=9),
                                  bootstrap_means(x, n_boot=1000, seed=9)[:, :300])
    # and a row's means do not depend on the rows resampled with it (groups of four)
    rows = np.random.default_rng(1).standard_normal((6, 1000))
    together = bootstrap_means(rows, n_boot=200, seed=3)
    for r in range(6):
        np.testing.assert_array_equal(together[r], bootstrap_means(rows[r], n_boot=200,
                                                                   seed=3)[0])
    # nor on how the resamples are split over threads
    for threads in (1, 2, 3):
        monkeypatch.setattr(stats_module, "_boot_threads", lambda t=threads: t)
        np.testing.assert_array_equal(bootstrap_means(rows, n_boot=30_000, seed=3)[:, :200],
                                      together)
    # the key is not the market's first episode key under the same seed
    assert bootstrap_key(9) != np.random.default_rng(9).bit_generator.random_raw()


def test_bootstrap_agrees_with_numpys_and_normal_theory() -> None:
    """On the same skewed data, the interval agrees with the numpy bootstrap the project used
    before (``default_rng(seed).integers``) and with the normal-theory interval, within the
    Monte Carlo error of 10,000 resamples (~0.04 s.e. per end; the bounds are ~4x that)."""
    rng = np.random.default_rng(11)
    x = rng.exponential(2.0, 2000) - 2.0 + 0.3 * rng.standard_normal(2000)
    se = x.std(ddof=1) / math.sqrt(x.size)
    lo, hi = bootstrap_mean_ci(x, n_boot=10_000, seed=4)
    numpy_rng = np.random.default_rng(4)
    ref = np.concatenate([x[numpy_rng.integers(0, x.size, size=(1000, x.size))].mean(axis=1)
                          for _ in range(10)])
    ref_lo, ref_hi = np.percentile(ref, [2.5, 97.5])
    assert abs(lo - ref_lo) < 0.15 * se and abs(hi - ref_hi) < 0.15 * se
    # normal theory: mean ± 1.96 s.e. (skewness moves the percentile ends by ~0.05 s.e. here)
    assert abs(lo - (x.mean() - 1.96 * se)) < 0.2 * se
    assert abs(hi - (x.mean() + 1.96 * se)) < 0.2 * se


def test_bootstrap_ci_covers_a_known_mean_95_percent_of_the_time() -> None:
    """400 samples of 300 skewed values with mean exactly 1: the 95 % interval covers 1 in
    ~95 % of them (Binomial(400, 0.95): sd 4.4, the bounds ~3.5 sd; the percentile interval
    of a skewed mean undercovers slightly at n = 300, so the low bound is a little wider)."""
    rng = np.random.default_rng(2026)
    covered = 0
    for seed in range(400):
        x = rng.exponential(1.0, 300)
        lo, hi = bootstrap_mean_ci(x, n_boot=1000, seed=seed)
        covered += lo <= 1.0 <= hi
    assert 0.905 * 400 <= covered <= 0.985 * 400


def test_comparisons_against_one_baseline_share_resamples_and_match_one_by_one() -> None:
    rng = np.random.default_rng(6)
    base = 10.0 + rng.standard_normal(500)
    policies = {"a": base + 0.3 + rng.standard_normal(500), "b": base.copy(),
                "c": base - 0.1 + 0.5 * rng.standard_normal(500)}
    together = paired_comparisons(policies, "twap", base, n_boot=700, seed=4)
    for got, (name, values) in zip(together, policies.items(), strict=True):
        assert got == paired_comparison(name, values, "twap", base, n_boot=700, seed=4)
    assert together[1].ci95 == (0.0, 0.0) and together[1].t_pvalue == 1.0
    # rows of one kernel pass are the single-row bootstraps
    both = bootstrap_means(np.stack([policies["a"] - base, policies["c"] - base]), n_boot=50,
                           seed=2)
    np.testing.assert_array_equal(both[1], bootstrap_means(policies["c"] - base, n_boot=50,
                                                           seed=2)[0])


def _paired_samples(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs (policy, baseline) of many sizes, heavy tails, shifts from none to large, and
    rounded ones with ties and zero differences."""
    rng = np.random.default_rng(seed)
    pairs = []
    for k in range(60):
        n = int(rng.choice([2, 3, 10, 51, 80, 500, 20_000, 200_000]))
        scale = float(rng.choice([0.01, 1.0, 100.0]))
        diff = (rng.standard_t(3, n) + float(rng.choice([0.0, 0.01, 0.1, 0.5]))) * scale
        if k % 3 == 0:
            diff = np.round(diff)  # ties among |d| and zeros
        if not diff.any():
            continue
        base = rng.normal(200.0, 50.0, n)
        pairs.append((base + diff, base))
    return pairs


def test_paired_t_pvalue_is_scipys_ttest_rel():
    """The t-test written on the incomplete beta function (scipy.stats is not imported by
    ``execrl evaluate``) gives scipy.stats.ttest_rel's p-value, from p ~ 1 to p ~ 1e-300,
    on 2 to 200,000 orders."""
    from scipy import stats

    from execrl.evaluate.stats import paired_t_pvalue

    checked = 0
    for policy, base in _paired_samples(11):
        want = float(stats.ttest_rel(policy, base).pvalue)
        got = paired_t_pvalue(policy - base)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-300), (policy.size, want, got)
        checked += want < 1e-6
    assert checked > 5  # the tail was reached, not only p ~ 0.5


def test_wilcoxon_pvalue_is_scipys_wilcoxon():
    """Wilcoxon's normal approximation with the tie correction and zeros dropped gives
    scipy.stats.wilcoxon(zero_method="wilcox")'s p-value (above 50 orders; up to 50 the
    function calls scipy.stats itself, whose exact or permutation rule then applies)."""
    from scipy import stats

    from execrl.evaluate.stats import wilcoxon_pvalue

    tied = 0
    for policy, base in _paired_samples(12):
        diff = policy - base
        want = float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)
        got = wilcoxon_pvalue(diff)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-300), (diff.size, want, got)
        tied += diff.size > 50 and np.unique(np.abs(diff)).size < diff.size
    assert tied > 3


def test_paired_t_pvalue_constant_difference():
    """Zero variance: a constant non-zero difference is certain (p = 0, scipy's t = ±inf);
    no difference at all is p = 1."""
    from execrl.evaluate.stats import paired_t_pvalue

    assert paired_t_pvalue(np.full(100, -2.5)) == 0.0
    assert paired_t_pvalue(np.zeros(100)) == 1.0
