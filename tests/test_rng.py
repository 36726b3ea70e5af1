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
