"""Counter-based random numbers for common random numbers that survive a reacting market.

A market's randomness is a pure function of (episode key, stream, counter): the episode key is
drawn once per episode from the run's generator (so it is a function of (seed, order index)
alone, ``episode_keys``), a stream names one noise channel (price, order arrivals, sizes …) and
the counter numbers the draws within it (a step, an event). Two policies therefore meet the
same exogenous flow even when their orders change the book, and nothing is drawn ahead at
reset: a reset costs one key.

The generator is Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy
as 1, 2, 3", SC 2011), which passes TestU01's BigCrush; ``tests/test_rng.py`` checks this
implementation against the Random123 known-answer vectors. Its 128-bit counter holds
(counter low, counter high, stream, 0) and its 64-bit key is the episode key. The functions
are numba-compiled so the markets' kernels call them per event without leaving compiled code.

Two normals: ``normal`` (Box–Muller: a log, a square root and a cosine per draw, ~35 ns) and
``gauss`` (Marsaglia & Tsang's ziggurat, "The ziggurat method for generating random
variables", J. Stat. Softw. 5(8), 2000, with 256 layers and 52-bit mantissas as numpy's
``standard_normal``; ~5 ns in a batched loop). ``gauss`` takes one Philox block 99 % of the
time; the rare wedge or tail tries take further blocks numbered by the counter's fourth word
(1, 2, … : never 0, so they never coincide with ``uniform2``'s). A per-step market kernel
draws with ``gauss_block`` over every environment first (branch-free, so the envs' blocks
overlap in the CPU) and then ``gauss_finish``: the same value as ``gauss``, ~3x faster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit
from numpy.typing import NDArray

_MASK32 = np.uint64(0xFFFFFFFF)
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_S32 = np.uint64(32)
_S11 = np.uint64(11)
_TWO_M53 = 2.0**-53
_TWO_M32 = 2.0**-32
_TWO_PI = 2.0 * np.pi
_ONE = np.uint64(1)
_S8 = np.uint64(8)
_S9 = np.uint64(9)
_FF = np.uint64(0xFF)
_M52 = np.uint64(0x000FFFFFFFFFFFFF)


def _ziggurat_tables() -> tuple[NDArray[np.uint64], NDArray[np.float64], NDArray[np.float64]]:
    """Marsaglia & Tsang's tables for 256 layers of equal area v under exp(−x²/2), the base
    layer ending at r (their ``zigset``, with 2**52 for 2**31): ``k`` the acceptance bounds
    of the mantissa, ``w`` the layer widths per unit of mantissa, ``f`` the density at each
    layer's edge."""
    m = 2.0**52
    dn = tn = _ZIG_R
    q = _ZIG_V / math.exp(-0.5 * dn * dn)
    k = np.zeros(256, dtype=np.uint64)
    w = np.zeros(256)
    f = np.zeros(256)
    k[0] = int(dn / q * m)
    w[0], w[255] = q / m, dn / m
    f[0], f[255] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(_ZIG_V / dn + math.exp(-0.5 * dn * dn)))
        k[i + 1] = int(dn / tn * m)
        tn = dn
        f[i] = math.exp(-0.5 * dn * dn)
        w[i] = dn / m
    return k, w, f


_ZIG_R = 3.6541528853610088  # where the base layer's tail starts
_ZIG_V = 0.00492867323399  # each layer's area
_ZIG_K, _ZIG_W, _ZIG_F = _ziggurat_tables()


@njit(cache=True, inline="always")
def philox4x32(
    c0: np.uint64, c1: np.uint64, c2: np.uint64, c3: np.uint64, k0: np.uint64, k1: np.uint64
) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    """Philox4x32 with 10 rounds: four 32-bit counter words and two key words (each held in a
    uint64 below 2**32) to four 32-bit output words."""
    for r in range(10):
        if r > 0:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
        p0 = _M0 * c0
        p1 = _M1 * c2
        hi0 = p0 >> _S32
        lo0 = p0 & _MASK32
        hi1 = p1 >> _S32
        lo1 = p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


@njit(cache=True, inline="always")
def uniform2(key: np.uint64, stream: int, counter: int) -> tuple[float, float]:
    """Two independent uniforms in the open interval (0, 1), 53 bits each, for draw
    ``counter`` of ``stream`` in the episode keyed ``key``."""
    ctr = np.uint64(counter)
    w0, w1, w2, w3 = philox4x32(
        ctr & _MASK32, ctr >> _S32, np.uint64(stream) & _MASK32, np.uint64(0),
        key & _MASK32, key >> _S32,
    )
    a = ((w0 << _S32) | w1) >> _S11
    b = ((w2 << _S32) | w3) >> _S11
    return (float(a) + 0.5) * _TWO_M53, (float(b) + 0.5) * _TWO_M53


@njit(cache=True, inline="always")
def uniform4(key: np.uint64, stream: int, counter: int) -> tuple[float, float, float, float]:
    """Four independent uniforms in (0, 1) with 32 bits each, from the same Philox block as
    ``uniform2(key, stream, counter)`` (so use one or the other for a given stream): for
    per-event draws where 2**-32 resolution is plenty and one block per event is the cost."""
    ctr = np.uint64(counter)
    w0, w1, w2, w3 = philox4x32(
        ctr & _MASK32, ctr >> _S32, np.uint64(stream) & _MASK32, np.uint64(0),
        key & _MASK32, key >> _S32,
    )
    return ((float(w0) + 0.5) * _TWO_M32, (float(w1) + 0.5) * _TWO_M32,
            (float(w2) + 0.5) * _TWO_M32, (float(w3) + 0.5) * _TWO_M32)


@njit(cache=True, inline="always")
def uniform(key: np.uint64, stream: int, counter: int) -> float:
    """One uniform in (0, 1) (the first of ``uniform2``)."""
    return uniform2(key, stream, counter)[0]


@njit(cache=True, inline="always")
def normal2(key: np.uint64, stream: int, counter: int) -> tuple[float, float]:
    """Two independent standard normals (Box–Muller on ``uniform2``)."""
    u1, u2 = uniform2(key, stream, counter)
    r = np.sqrt(-2.0 * np.log(u1))
    return r * np.cos(_TWO_PI * u2), r * np.sin(_TWO_PI * u2)


@njit(cache=True, inline="always")
def normal(key: np.uint64, stream: int, counter: int) -> float:
    """One standard normal (the first of ``normal2``)."""
    return normal2(key, stream, counter)[0]


@njit(cache=True, inline="always")
def exponential(key: np.uint64, stream: int, counter: int) -> float:
    """One exponential of mean 1."""
    return -np.log(uniform(key, stream, counter))


@njit(cache=True, inline="always")
def _block(key: np.uint64, stream: int, counter: int, attempt: np.uint64
           ) -> tuple[np.uint64, np.uint64]:
    """Block ``attempt`` (the counter's fourth word) of draw ``counter`` of ``stream``."""
    ctr = np.uint64(counter)
    w0, w1, w2, w3 = philox4x32(
        ctr & _MASK32, ctr >> _S32, np.uint64(stream) & _MASK32, attempt,
        key & _MASK32, key >> _S32,
    )
    return (w0 << _S32) | w1, (w2 << _S32) | w3


@njit(cache=True, inline="always")
def gauss_block(key: np.uint64, stream: int, counter: int) -> tuple[np.uint64, np.uint64]:
    """The first Philox block of ``gauss(key, stream, counter)``, as two 64-bit words."""
    return _block(key, stream, counter, _ONE)


@njit(cache=True, inline="always")
def gauss_finish(r: np.uint64, s: np.uint64, key: np.uint64, stream: int, counter: int) -> float:
    """``gauss(key, stream, counter)`` from its first block (``gauss_block``): the ziggurat's
    rectangle test inline, the rest (~1 % of draws) in ``_gauss_slow``."""
    idx = np.intp(r & _FF)
    rabs = (r >> _S9) & _M52
    x = float(rabs) * _ZIG_W[idx]
    if rabs < _ZIG_K[idx]:
        return -x if (r >> _S8) & _ONE else x
    return _gauss_slow(r, s, key, stream, counter)


@njit(cache=True)
def _gauss_slow(r: np.uint64, s: np.uint64, key: np.uint64, stream: int, counter: int) -> float:
    """The ziggurat's wedge and tail tests, and its retries, each on a new block (the
    counter's fourth word numbers the tries)."""
    attempt = _ONE
    while True:
        idx = np.intp(r & _FF)
        rabs = (r >> _S9) & _M52
        negative = (r >> _S8) & _ONE
        x = float(rabs) * _ZIG_W[idx]
        if negative:
            x = -x
        if rabs < _ZIG_K[idx]:
            return x
        if idx == 0:  # beyond r: Marsaglia's exponential tail method
            while True:
                attempt += _ONE
                a, b = _block(key, stream, counter, attempt)
                xx = -np.log((float(a >> _S11) + 0.5) * _TWO_M53) / _ZIG_R
                yy = -np.log((float(b >> _S11) + 0.5) * _TWO_M53)
                if yy + yy > xx * xx:
                    return -(_ZIG_R + xx) if negative else _ZIG_R + xx
        u = (float(s >> _S11) + 0.5) * _TWO_M53
        if (_ZIG_F[idx - 1] - _ZIG_F[idx]) * u + _ZIG_F[idx] < np.exp(-0.5 * x * x):
            return x
        attempt += _ONE
        r, s = _block(key, stream, counter, attempt)


@njit(cache=True, inline="always")
def gauss(key: np.uint64, stream: int, counter: int) -> float:
    """One standard normal by the ziggurat (see the module docstring)."""
    r, s = gauss_block(key, stream, counter)
    return gauss_finish(r, s, key, stream, counter)


def episode_keys(rng: np.random.Generator | OrderSeeds, n: int) -> NDArray[np.uint64]:
    """``n`` episode keys, the next raw 64-bit words of ``rng``'s bit generator: key i depends
    only on the generator's state and i, not on ``n`` (batch sizes keep their paths). From
    ``OrderSeeds``: the next ``n`` of its per-order keys."""
    if isinstance(rng, OrderSeeds):
        return rng.take(n)
    return np.asarray(rng.bit_generator.random_raw(n), dtype=np.uint64).reshape(n)


class OrderSeeds:
    """Per-order seeds where a market reset takes a generator: episode i gets the key a run of
    one order seeded ``seeds[i]`` draws (the first of ``default_rng(seeds[i])``), so each order
    of a batch meets exactly the path it meets alone (the service's micro-batches: order i on
    ``order_seed(order_id)``). Keys are handed out in order, once each."""

    def __init__(self, seeds: Sequence[int]):
        self.keys = np.array(
            [np.random.default_rng(int(s)).bit_generator.random_raw(1) for s in seeds],
            dtype=np.uint64,
        ).reshape(len(seeds))
        self._next = 0

    def take(self, n: int) -> NDArray[np.uint64]:
        lo, self._next = self._next, self._next + n
        if self._next > self.keys.size:
            raise ValueError(f"{self.keys.size} order seeds, asked for key {self._next - 1}")
        return self.keys[lo:self._next].copy()


@njit(cache=True)
def uniforms(keys: NDArray[np.uint64], stream: int, counters: NDArray[np.int64]) -> NDArray:
    """(n_keys, n_counters) uniforms: the compiled draws, as an array (tests, references)."""
    out = np.empty((keys.shape[0], counters.shape[0]))
    for i in range(keys.shape[0]):
        for j in range(counters.shape[0]):
            out[i, j] = uniform(keys[i], stream, counters[j])
    return out


@njit(cache=True)
def normals(keys: NDArray[np.uint64], stream: int, counters: NDArray[np.int64]) -> NDArray:
    """(n_keys, n_counters) standard normals, as ``uniforms``."""
    out = np.empty((keys.shape[0], counters.shape[0]))
    for i in range(keys.shape[0]):
        for j in range(counters.shape[0]):
            out[i, j] = normal(keys[i], stream, counters[j])
    return out


@njit(cache=True)
def gausses(keys: NDArray[np.uint64], stream: int, counters: NDArray[np.int64]) -> NDArray:
    """(n_keys, n_counters) ziggurat normals, as ``uniforms``."""
    out = np.empty((keys.shape[0], counters.shape[0]))
    for i in range(keys.shape[0]):
        for j in range(counters.shape[0]):
            out[i, j] = gauss(keys[i], stream, counters[j])
    return out


@njit(cache=True)
def philox_block(ctr: NDArray[np.uint64], key: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Philox4x32-10 of one counter block (4 words) under one key (2 words): the
    known-answer check's entry point."""
    w = philox4x32(ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1])
    out = np.empty(4, dtype=np.uint64)
    out[0], out[1], out[2], out[3] = w
    return out
