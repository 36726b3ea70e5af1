"""The order book's flow of other traders, one book at a time in plain Python: the same model
as ``execrl.sim.lob_kernels`` written as directly as possible (Python integers for Philox,
``bisect`` for the slots, lists for the queues), with no numba and no numpy in the loop.

Two uses: the speed benchmark's reference (``bench/bench_lob.py``), and a cross-check of the
compiled kernels: a book built from the same key and stepped over the same span prints the
same trades and ends in the same state (``tests/test_lob.py``). It covers the others' flow
(limit orders, cancels, market orders, Hawkes, p_ref moves and the redraws of the book after
them, a shock's forced moves), not the agent's orders.
"""

from __future__ import annotations

import bisect
import math

from execrl.sim import lob_kernels as kern
from execrl.sim.lob_config import LOBMarketConfig

_M32 = 0xFFFFFFFF


def philox4x32(c: list[int], k0: int, k1: int) -> list[int]:
    """Philox4x32-10 (as ``execrl.sim.rng.philox4x32``) on Python integers."""
    c0, c1, c2, c3 = c
    for r in range(10):
        if r > 0:
            k0 = (k0 + 0x9E3779B9) & _M32
            k1 = (k1 + 0xBB67AE85) & _M32
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & _M32, (p0 >> 32) ^ c3 ^ k1, p0 & _M32
    return [c0, c1, c2, c3]


def _block(key: int, stream: int, counter: int) -> list[int]:
    return philox4x32([counter & _M32, counter >> 32, stream & _M32, 0], key & _M32, key >> 32)


def uniform2(key: int, stream: int, counter: int) -> tuple[float, float]:
    w = _block(key, stream, counter)
    a = ((w[0] << 32) | w[1]) >> 11
    b = ((w[2] << 32) | w[3]) >> 11
    return (a + 0.5) * 2.0**-53, (b + 0.5) * 2.0**-53


def uniform4(key: int, stream: int, counter: int) -> tuple[float, ...]:
    return tuple((w + 0.5) * 2.0**-32 for w in _block(key, stream, counter))


class ReferenceBook:
    """One book of ``LOBMarketConfig`` without the agent: build with its episode key, then
    ``run(t_end)``; ``trades`` collects (t, price index, shares, aggressor)."""

    def __init__(self, config: LOBMarketConfig, key: int, t0: float = 0.0,
                 horizon_s: float | None = None) -> None:
        c = config
        self.c = c
        self.key = int(key)
        self.K = K = c.n_levels
        limit, cancel, market, init = c.tables()
        self.limit = limit.tolist()
        self.cancel = cancel.tolist()
        self.market = market.tolist()
        self.init_cdf = []
        for row in init.tolist():
            acc, cdf = 0.0, []
            for p in row:
                acc += p
                cdf.append(acc)
            cdf[-1] = 1.0
            self.init_cdf.append(cdf)
        self.lsize = (list(c.limit_size.values), c.limit_size.cdf().tolist())
        self.msize = (list(c.market_size.values), c.market_size.cdf().tolist())
        h = c.hawkes
        block = ([max(row) for row in self.limit] + [max(row) for row in self.cancel]
                 + [max(max(row) for row in self.market), h.max_rate if h else 0.0])
        self.edges = [0.0]
        for w in block + block:
            self.edges.append(self.edges[-1] + w)
        self.lam = self.edges[-1]
        self.block = len(block)
        self.forced: list[float] = []
        self.forced_dir = 0.0
        if c.shock is not None:
            horizon = c.horizon_s if horizon_s is None else horizon_s
            n = max(1, round(abs(c.shock.move) * c.s0 / c.tick_size))
            start, dur = c.shock.start * horizon, c.shock.duration * horizon
            self.forced = [start + (m + 0.5) * dur / n for m in range(n)]
            if c.shock.recovery is not None:
                rec = c.shock.recovery * horizon
                self.forced += [start + dur + (m + 0.5) * rec / n for m in range(n)]
            self.n_moves = n
            self.forced_dir = math.copysign(1.0, c.shock.move)
        self.q = [[0] * K, [0] * K]
        for s in range(2):
            for j in range(K):
                u1, u2 = uniform2(self.key, kern.S_INIT, s * K + j)
                self.q[s][j] = self._fresh(j, u1, u2)
        self.r = math.floor(c.s0 / c.tick_size)
        self.ctr = 0
        self.t_next = t0 - math.log(uniform2(self.key, kern.S_INIT, 2 * K)[0]) / self.lam
        self.h = [0.0, 0.0]
        self.h_t = t0
        self.n_forced = 0
        self.events = 0
        self.trades: list[tuple[float, int, int, int]] = []

    # -- pieces -------------------------------------------------------------------------------
    def _fresh(self, j: int, u1: float, u2: float) -> int:
        cdf = self.init_cdf[j]
        b = len(cdf) - 1
        for k, p in enumerate(cdf):
            if u1 < p:
                b = k
                break
        if b == 0:
            return 0
        a = self.c.aes
        return (b - 1) * a + 1 + min(int(u2 * a), a - 1)

    def _bucket(self, qty: int) -> int:
        if qty <= 0:
            return 0
        return min(-(-qty // self.c.aes), len(self.limit[0]) - 1)

    @staticmethod
    def _draw(dist: tuple[list[int], list[float]], u: float) -> int:
        values, cdf = dist
        for v, p in zip(values, cdf, strict=True):
            if u < p:
                return v
        return values[-1]

    def _first(self, s: int) -> int:
        for j, qty in enumerate(self.q[s]):
            if qty > 0:
                return j
        return self.K

    def _price(self, s: int, j: int) -> int:
        return self.r - j if s == kern.BID else self.r + 1 + j

    def _shift(self, up: bool, stream: int, counter: int) -> bool:
        K = self.K
        if not up and self.r - K <= 1:
            return False
        u1, u2 = uniform2(self.key, stream, counter)
        bid, ask = self.q
        if up:
            self.q = [[0, *bid[:-1]], [*ask[1:], self._fresh(K - 1, u1, u2)]]
            self.r += 1
        else:
            self.q = [[*bid[1:], self._fresh(K - 1, u1, u2)], [0, *ask[:-1]]]
            self.r -= 1
        return True

    def _reinit(self, r_before: int, cc: int) -> None:
        """A side's best queue was just emptied by event ``cc``: if p_ref has moved since
        ``r_before``, the window is redrawn from ``init_queue`` with probability θ_reinit
        and re-centred (HLR's model III; ``lob_kernels.maybe_reinit``)."""
        p = self.c.reinit_prob
        base = kern.REINIT_STRIDE * cc
        if p <= 0.0 or self.r == r_before:
            return
        if uniform2(self.key, kern.S_REINIT, base + kern.REINIT_STRIDE - 1)[0] >= p:
            return
        K = self.K
        for s in range(2):
            for j in range(K):
                u1, u2 = uniform2(self.key, kern.S_REINIT, base + s * K + j)
                self.q[s][j] = self._fresh(j, u1, u2)
        self._recenter(kern.S_REINIT, base + 128)

    def _recenter(self, stream: int, counter: int) -> None:
        n = 0
        for _ in range(self.K):
            gb, ga = self._first(kern.BID), self._first(kern.ASK)
            if ga - gb >= 2 and ga > 0:
                moved = self._shift(True, stream, counter + n)
            elif gb - ga >= 2 and gb > 0:
                moved = self._shift(False, stream, counter + n)
            else:
                break
            if not moved:
                break
            n += 1

    def _trade(self, t: float, s: int, j: int, m: int) -> None:
        self.trades.append((t, self._price(s, j), m, 1 if s == kern.ASK else -1))

    # -- the flow -----------------------------------------------------------------------------
    def run(self, t_end: float) -> None:
        """Every event up to ``t_end``."""
        c, K, key = self.c, self.K, self.key
        h = c.hawkes
        while True:
            t_c = self.t_next
            t_f = self.forced[self.n_forced] if self.n_forced < len(self.forced) else math.inf
            if t_c > t_end and t_f > t_end:
                return
            if t_f <= t_c:
                down = (self.n_forced < self.n_moves) == (self.forced_dir < 0)
                s = kern.BID if down else kern.ASK
                d = self.q[s][0]
                if d > 0:
                    self._trade(t_f, s, 0, d)
                    self.q[s][0] = 0
                move = self.n_forced
                if not down or self.r - K > 1:  # the whole book moves a tick
                    u1, u2 = uniform2(key, kern.S_FORCED_REVEAL, 128 * move)
                    self.q[s] = [*self.q[s][1:], self._fresh(K - 1, u1, u2)]
                    self.r += -1 if down else 1
                self._recenter(kern.S_FORCED_REVEAL, 128 * move + 1)
                self.n_forced += 1
                self.events += 1
                continue
            cc = self.ctr
            u_time, u_slot, u_size, u_pos = uniform4(key, kern.S_EVENT, cc)
            if h is not None:
                decay = math.exp(-h.beta * (t_c - self.h_t))
                self.h = [self.h[0] * decay, self.h[1] * decay]
                self.h_t = t_c
            x = u_slot * self.lam
            slot = bisect.bisect_right(self.edges, x) - 1
            s, ch = divmod(slot, self.block)
            pos = x - self.edges[slot]
            accepted = False
            if ch < K:
                j = ch
                d = self.q[s][j]
                if pos < self.limit[j][self._bucket(d)]:  # (no agent: never redirected)
                    accepted = True
                    self.q[s][j] += self._draw(self.lsize, u_size)
                    if d == 0:
                        self._recenter(kern.S_REVEAL, 256 * cc + 2 + K)
            elif ch < 2 * K:
                j = ch - K
                d = self.q[s][j]
                if pos < self.cancel[j][self._bucket(d)] and d > 0:
                    accepted = True
                    self.q[s][j] = d - min(self._draw(self.lsize, u_size), d)
                    if self.q[s][j] == 0:
                        r_before, was_best = self.r, self._first(s) > j
                        if j == 0 and uniform2(key, kern.S_THETA, cc)[0] < c.theta:
                            self._shift(s == kern.ASK, kern.S_REVEAL, 256 * cc)
                        self._recenter(kern.S_REVEAL, 256 * cc + 1)
                        if was_best:
                            self._reinit(r_before, cc)
            else:
                jb = self._first(s)
                if jb < K:
                    d = self.q[s][jb]
                    if ch - 2 * K == kern.CH_MARKET:
                        rate = self.market[jb][self._bucket(d)]
                    else:
                        rate = min(self.h[s], h.max_rate) if h is not None else 0.0
                    if pos < rate:
                        accepted = True
                        m = min(self._draw(self.msize, u_size), d)
                        self._trade(t_c, s, jb, m)
                        self.q[s][jb] = d - m
                        if h is not None:
                            self.h[s] += h.alpha_self
                            self.h[1 - s] += h.alpha_cross
                        emptied, r_before = self.q[s][jb] == 0, self.r
                        if jb == 0 and emptied:
                            if uniform2(key, kern.S_THETA, cc)[0] < c.theta:
                                self._shift(s == kern.ASK, kern.S_REVEAL, 256 * cc)
                        self._recenter(kern.S_REVEAL, 256 * cc + 1)
                        if emptied:
                            self._reinit(r_before, cc)
            _ = u_pos  # a cancel's place in the queue, a redirect: only with an agent order
            self.ctr = cc + 1
            self.events += accepted
            self.t_next = t_c - math.log(u_time) / self.lam
