"""The counter-based generator (``execrl.sim.rng``): Philox4x32-10 as published, and the
properties the markets' common random numbers rest on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from execrl.sim import rng as crng

# Random123's kat_vectors: counter[4] key[2] -> output[4]
KAT = [
    ("00000000 00000000 00000000 00000000", "00000000 00000000",
     "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
    ("ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff",
     "408f276d 41c83b0e a20bc7c6 6d5451fd"),
    ("243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0",
     "d16cfe09 94fdcceb 5001e420 24126ea1"),
]


def _words(text: str) -> np.ndarray:
    return np.array([int(w, 16) for w in text.split()], dtype=np.uint64)


@pytest.mark.parametrize(("ctr", "key", "expected"), KAT)
def test_philox4x32_10_matches_the_random123_known_answers(ctr, key, expected):
    out = crng.philox_block(_words(ctr), _words(key))
    assert out.tolist() == _words(expected).tolist()


def test_a_draw_is_a_function_of_key_stream_and_counter_alone():
    keys = np.array([1, 2, 2**63 + 5], dtype=np.uint64)
    counters = np.arange(50, dtype=np.int64)
    a = crng.uniforms(keys, 3, counters)
    b = crng.uniforms(keys[::-1].copy(), 3, counters[::-1].copy())[::-1, ::-1]
    assert np.array_equal(a, b)  # order of evaluation does not matter
    assert not np.array_equal(a, crng.uniforms(keys, 4, counters))  # another stream
    assert len(np.unique(a)) == a.size


def test_uniforms_and_normals_have_their_distributions():
    keys = np.arange(200, dtype=np.uint64)
    counters = np.arange(500, dtype=np.int64)
    u = crng.uniforms(keys, 0, counters).ravel()
    assert 0.0 < u.min() and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    z = crng.normals(keys, 1, counters).ravel()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # neighbouring counters and neighbouring keys are uncorrelated
    grid = crng.uniforms(keys, 0, counters)
    assert abs(np.corrcoef(grid[:, :-1].ravel(), grid[:, 1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(grid[:-1].ravel(), grid[1:].ravel())[0, 1]) < 0.01


def test_episode_keys_do_not_depend_on_how_many_are_drawn():
    few = crng.episode_keys(np.random.default_rng(7), 3)
    many = crng.episode_keys(np.random.default_rng(7), 1000)
    assert few.dtype == np.uint64 and np.array_equal(few, many[:3])
    assert not np.array_equal(few, crng.episode_keys(np.random.default_rng(8), 3))


# -- the ziggurat normal (``gauss``) the markets' kernels draw with --------------------------

# gauss(key, stream 0, counters 0..3) for keys 0, 1, 2**63 + 12345: pinned so that a change
# of the generator (or of its tables) is seen, not silently re-baselined. The tables come
# from libm's exp and log, so the comparison allows a few ulps.
GAUSS_GOLDEN = [
    [0.4696919156986443, -0.3385622525732814, 1.1829868391560088, -0.6047382916246954],
    [0.9184173009403648, 0.1969205609323528, 3.035420790975157, -0.06968595947571016],
    [0.342517431409425, -1.5412478700578818, -1.2167310675701088, 0.6044515439498857],
]


def test_gauss_pins_its_values():
    keys = np.array([0, 1, 2**63 + 12345], dtype=np.uint64)
    got = crng.gausses(keys, 0, np.arange(4, dtype=np.int64))
    np.testing.assert_allclose(got, GAUSS_GOLDEN, rtol=1e-13, atol=0)
    assert not np.array_equal(got, crng.gausses(keys, 1, np.arange(4, dtype=np.int64)))


def test_gauss_is_standard_normal_into_the_tails():
    """4 million draws: moments and tail frequencies on both sides of the ziggurat's base
    layer (r = 3.654) within 4 standard errors of the normal law, and a KS test."""
    keys = crng.episode_keys(np.random.default_rng(5), 4_000)
    z = crng.gausses(keys, 7, np.arange(1000, dtype=np.int64)).ravel()
    n = z.size
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert abs(z.var() - 1.0) < 4 * np.sqrt(2.0 / n)
    for a in (0.5, 1.0, 2.0, 3.0, crng._ZIG_R, 4.0, 4.5):
        p = 2 * stats.norm.sf(a)
        assert abs((np.abs(z) > a).mean() - p) < 4 * np.sqrt(p * (1 - p) / n), a
    assert abs((z > 2.0).mean() - (z < -2.0).mean()) < 4 * np.sqrt(2 * 0.0228 / n)
    assert stats.kstest(z[:1_000_000], "norm").pvalue > 1e-3
    # neighbouring counters are uncorrelated
    grid = z.reshape(4_000, 1000)
    assert abs(np.corrcoef(grid[:, :-1].ravel(), grid[:, 1:].ravel())[0, 1]) < 4 / np.sqrt(n)


def test_ziggurat_tables_are_consistent():
    """The 255 layers stacked from r with area v end at the density's top (f = 1)."""
    r, v = crng._ZIG_R, crng._ZIG_V
    x = r
    for _ in range(254):
        x = np.sqrt(-2.0 * np.log(v / x + np.exp(-0.5 * x * x)))
    assert abs(v / x + np.exp(-0.5 * x * x) - 1.0) < 1e-9
    assert (np.diff(crng._ZIG_F[1:]) < 0).all() and crng._ZIG_F[0] == 1.0
