"""Compiled kernels of the stochastic limit order book (``execrl.sim.lob``): every book's state
in arrays, events one by one in compiled loops, never a Python object per order or a Python
loop over books or events.

State of book i (``LOBState``): ``q[i, side, j]`` others' shares at level j of a side (the
agent's own resting order is kept apart: ``own_*`` columns of ``ints``), the frame index r
(bid level j at price index r − j, ask level j at r + 1 + j), the candidate-event counter and
the time of the next candidate, the Hawkes excitations, the deficits the agent left (D) and
the prices it took them at.

Events (thinning, for common random numbers). Each book draws candidate events at the constant
rate Λ = ``LOBMarketConfig.thinning_rate()``; candidate c's uniforms come from
(episode key, stream, c). The interval [0, Λ) is cut into fixed slots, one per flow channel
(side × {limit at level j, cancel at level j, market order, Hawkes market order}), each
as wide as the channel's largest rate. Candidate c's first uniform picks a slot and a place in
it; the candidate is that channel's event when the place lies below the channel's intensity
now, and nothing otherwise. So the candidate times are the same whatever the agent does, and a
change of the book changes only the events of the channels whose intensities it changed: two
policies meet the same exogenous uniforms event for event.

Streams: ``S_EVENT`` (c: one Philox block, ``rng.uniform4``: the time to the next candidate,
the slot, the size, the position of a cancel in the queue), ``S_THETA`` (c: does p_ref move
after a depletion?), ``S_REVEAL`` (256·c + n: the n-th level entering the window in event c),
``S_INIT`` (the initial book, the first candidate's time), and for what the agent's own orders
set off, keyed by the decision step instead of c: ``S_AGENT_THETA`` and ``S_AGENT_REVEAL``
(1024·step + n); ``S_FORCED_REVEAL`` (128·move + n) for a shock's forced moves. A redraw of the
book after a price move (``maybe_reinit``) draws from ``S_REINIT`` (256·c + m) in the flow and
``S_AGENT_REINIT`` (256·(1024·step + n) + m) for the agent's walk, m < 256 numbering its draws.

Cancels of others (where in the queue): each cancel removes one order of the drawn size
(at most the others' volume) from a uniformly random place in the others' volume at that
level: with probability ahead / others it is ahead of the agent's order, whose queue position
then moves up by min(size, ahead). So the volume ahead shrinks in proportion to it, on average.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

from execrl.sim.rng import uniform, uniform2, uniform4

BID, ASK = 0, 1
# streams
S_EVENT, S_THETA, S_REVEAL, S_INIT = 1, 3, 4, 5
S_AGENT_THETA, S_AGENT_REVEAL, S_FORCED_REVEAL = 6, 7, 8
S_REINIT, S_AGENT_REINIT = 9, 10
#: Draws one redraw of the book may take (``maybe_reinit``): its 2·K ≤ 128 queues, the
#: re-centring after it from 128, the decision last.
REINIT_STRIDE = 256

# ints[i, :] columns
I_R, I_CTR, I_OWN_QTY, I_OWN_IDX, I_OWN_AHEAD, I_OWN_TTL, I_OWN_CHILD = 0, 1, 2, 3, 4, 5, 6
I_FORCED, I_STEP, I_EVENTS = 7, 8, 9
N_INTS = 10
# floats[i, :] columns
F_T_NEXT, F_H_BID, F_H_ASK, F_H_T, F_D_BID, F_D_ASK = 0, 1, 2, 3, 4, 5
F_TAKE_BID, F_TAKE_ASK = 6, 7  # price index of the best level the agent last took a side at
N_FLOATS = 8
# per-step accumulators: acc_i[i, :] and acc_f[i, :]
A_FILL, A_PASSIVE, A_NFILLS, A_CANCELLED, A_VOLUME, A_TRADES = 0, 1, 2, 3, 4, 5
N_ACC_I = 6
A_NOTIONAL, A_FEES, A_IV_NUM, A_IV_DEN = 0, 1, 2, 3
N_ACC_F = 4

# params (float array) indices
P_LAMBDA, P_THETA, P_AES, P_RESILIENCE = 0, 1, 2, 3
P_H_SELF, P_H_CROSS, P_H_BETA, P_H_MAX, P_H_AGENT = 5, 6, 7, 8, 9
P_TAKER, P_MAKER, P_CONSERVATIVE, P_HAWKES = 10, 11, 12, 13
P_SHOCK_N, P_SHOCK_DIR, P_SHOCK_START, P_SHOCK_DUR, P_SHOCK_REC = 14, 15, 16, 17, 18
P_TICK, P_SIDE, P_REINIT, P_REFILL = 19, 20, 21, 22
N_PARAMS = 23
# where redirected limit orders go (P_REFILL; LOBMarketConfig.refill)
REFILL_TAKEN, REFILL_STATIONARY = 0, 1

# the agent's order types (execrl.sim.base.ORDER_TYPE_CODES order: OrderType's)
T_MARKET, T_LIMIT, T_MARKETABLE, T_IOC = 0, 1, 2, 3
# reject codes (execrl.sim.base)
R_NONE, R_ORDER_TYPE, R_OFF_TICK, R_NO_PRICE = 0, 1, 2, 3
R_WORKING, R_OUTSIDE_BOOK = 5, 6

# channels within a side's block of slots: limit 0..K-1, cancel K..2K-1, then these
CH_MARKET, CH_HAWKES = 0, 1  # offsets after the 2K level slots
N_SIDE_SLOTS_EXTRA = 2


@njit(cache=True)
def bucket(qty: int, aes: float, n_buckets: int) -> int:
    """Queue-size bucket: 0 when empty, else ceil(qty / aes) capped at the last."""
    if qty <= 0:
        return 0
    a = int(aes)
    b = int(qty * (1.0 / aes))  # floor of qty / aes, or one less when that is whole: no division
    if b * a < qty:
        b += 1
    return b if b < n_buckets else n_buckets - 1


@njit(cache=True)
def draw_size(values: NDArray[np.int64], cdf: NDArray[np.float64], u: float) -> int:
    for k in range(cdf.shape[0]):
        if u < cdf[k]:
            return values[k]
    return values[values.shape[0] - 1]


@njit(cache=True)
def fresh_queue(init_cdf: NDArray[np.float64], j: int, aes: float, u1: float, u2: float) -> int:
    """A fresh level-j queue: bucket from ``init_queue[j]``, shares uniform within it."""
    n_b = init_cdf.shape[1]
    b = n_b - 1
    for k in range(n_b):
        if u1 < init_cdf[j, k]:
            b = k
            break
    if b == 0:
        return 0
    width = int(aes)
    return (b - 1) * width + 1 + min(int(u2 * width), width - 1)


@njit(cache=True)
def own_level(ints: NDArray[np.int64], i: int, own_side: int) -> int:
    """Level of book i's resting agent order in the window (may be < 0 or >= K), or -1000
    when none rests."""
    if ints[i, I_OWN_QTY] <= 0:
        return -1000
    r = ints[i, I_R]
    p = ints[i, I_OWN_IDX]
    return r - p if own_side == BID else p - r - 1


@njit(cache=True)
def display(q: NDArray[np.int64], ints: NDArray[np.int64], i: int, s: int, j: int,
            own_side: int, conservative: bool) -> int:
    """Shares shown at level j of side s: others', and the agent's when it rests there."""
    d = q[i, s, j]
    if not conservative and s == own_side and own_level(ints, i, own_side) == j:
        d += ints[i, I_OWN_QTY]
    return d


@njit(cache=True)
def first_nonempty(q: NDArray[np.int64], ints: NDArray[np.int64], i: int, s: int,
                   own_side: int, conservative: bool) -> int:
    """First level of side s with shares shown (K when the side is empty)."""
    K = q.shape[2]
    for j in range(K):
        if display(q, ints, i, s, j, own_side, conservative) > 0:
            return j
    return K


@njit(cache=True)
def price_index(ints: NDArray[np.int64], i: int, s: int, j: int) -> int:
    r = ints[i, I_R]
    return r - j if s == BID else r + 1 + j


@njit(cache=True)
def shift(q: NDArray[np.int64], ints: NDArray[np.int64], acc_i: NDArray[np.int64], i: int,
          up: bool, own_side: int, init_cdf: NDArray[np.float64], aes: float,
          key: np.uint64, stream: int, counter: int) -> bool:
    """Move p_ref one tick (``up``: r + 1). Queues keep their prices; the level leaving the
    window on the far side is dropped (an agent order there is cancelled), the one entering it
    drawn fresh. The level crossing from one side to the other must be empty (the callers
    make sure). Returns False when a move down would take prices to zero (not done)."""
    K = q.shape[2]
    r = ints[i, I_R]
    if not up and r - K <= 1:
        return False
    u1, u2 = uniform2(key, stream, counter)
    if up:
        for j in range(K - 1):
            q[i, ASK, j] = q[i, ASK, j + 1]
        q[i, ASK, K - 1] = fresh_queue(init_cdf, K - 1, aes, u1, u2)
        for j in range(K - 1, 0, -1):
            q[i, BID, j] = q[i, BID, j - 1]
        q[i, BID, 0] = 0
        ints[i, I_R] = r + 1
    else:
        for j in range(K - 1):
            q[i, BID, j] = q[i, BID, j + 1]
        q[i, BID, K - 1] = fresh_queue(init_cdf, K - 1, aes, u1, u2)
        for j in range(K - 1, 0, -1):
            q[i, ASK, j] = q[i, ASK, j - 1]
        q[i, ASK, 0] = 0
        ints[i, I_R] = r - 1
    lvl = own_level(ints, i, own_side)
    if lvl != -1000 and lvl >= K:  # the agent's order left the window: the market cancels it
        acc_i[i, A_CANCELLED] += ints[i, I_OWN_QTY]
        ints[i, I_OWN_QTY] = 0
    return True


@njit(cache=True)
def forced_shift(q: NDArray[np.int64], ints: NDArray[np.int64], acc_i: NDArray[np.int64],
                 i: int, down: bool, own_side: int, init_cdf: NDArray[np.float64], aes: float,
                 key: np.uint64, stream: int, counter: int) -> None:
    """A shock's move of the whole book by one tick (its level 0 on the side the price moves
    through was just swept): that side's queues move up one level (a fresh one enters at the
    far end), the other side's queues keep their levels, so their prices follow the move (the
    others re-price; the agent's order keeps its price and so ends one level further back)."""
    K = q.shape[2]
    r = ints[i, I_R]
    if down and r - K <= 1:
        return
    s = BID if down else ASK
    u1, u2 = uniform2(key, stream, counter)
    for j in range(K - 1):
        q[i, s, j] = q[i, s, j + 1]
    q[i, s, K - 1] = fresh_queue(init_cdf, K - 1, aes, u1, u2)
    ints[i, I_R] = r - 1 if down else r + 1
    lvl = own_level(ints, i, own_side)
    if lvl != -1000 and lvl >= K:
        acc_i[i, A_CANCELLED] += ints[i, I_OWN_QTY]
        ints[i, I_OWN_QTY] = 0
    elif lvl != -1000 and own_side != s:
        # the orders now at the agent's price re-priced onto it just now: all behind it
        ints[i, I_OWN_AHEAD] = 0


@njit(cache=True)
def recenter(q: NDArray[np.int64], ints: NDArray[np.int64], acc_i: NDArray[np.int64], i: int,
             own_side: int, conservative: bool, init_cdf: NDArray[np.float64], aes: float,
             key: np.uint64, stream: int, counter: int) -> int:
    """Keep p_ref at the mid: shift while one side has two or more empty levels at the touch
    more than the other. Returns the number of draws of ``stream`` it used (from ``counter``)."""
    K = q.shape[2]
    n = 0
    for _ in range(K):
        gb = first_nonempty(q, ints, i, BID, own_side, conservative)
        ga = first_nonempty(q, ints, i, ASK, own_side, conservative)
        if ga - gb >= 2 and ga > 0:
            if not shift(q, ints, acc_i, i, True, own_side, init_cdf, aes, key, stream,
                         counter + n):
                break
        elif gb - ga >= 2 and gb > 0:
            if not shift(q, ints, acc_i, i, False, own_side, init_cdf, aes, key, stream,
                         counter + n):
                break
        else:
            break
        n += 1
    return n


@njit(cache=True)
def reinit(q: NDArray[np.int64], ints: NDArray[np.int64], i: int, own_side: int,
           conservative: bool, init_cdf: NDArray[np.float64], aes: float, key: np.uint64,
           stream: int, counter: int) -> None:
    """Every queue of the window redrawn from ``init_queue`` (the invariant law of each
    level; queue j of side s from draw counter + s·K + j). The agent's resting order keeps its
    price and its place: what was ahead of it stays ahead as far as the redrawn queue holds it
    (ahead = min(ahead, new queue)). The agent's deficits stay: they are what the others
    will bring back where the agent took it (``resilience``), not part of the visible book."""
    K = q.shape[2]
    for s in range(2):
        for j in range(K):
            u1, u2 = uniform2(key, stream, counter + s * K + j)
            q[i, s, j] = fresh_queue(init_cdf, j, aes, u1, u2)
    if not conservative and ints[i, I_OWN_QTY] > 0:
        lvl = own_level(ints, i, own_side)
        if 0 <= lvl < K:
            ints[i, I_OWN_AHEAD] = min(ints[i, I_OWN_AHEAD], q[i, own_side, lvl])


@njit(cache=True)
def maybe_reinit(q: NDArray[np.int64], ints: NDArray[np.int64], acc_i: NDArray[np.int64],
                 i: int, r_before: int, reinit_p: float, own_side: int, conservative: bool,
                 init_cdf: NDArray[np.float64], aes: float, key: np.uint64, stream: int,
                 base: int) -> None:
    """HLR's model III, called after a side's best queue was emptied: when p_ref has moved
    since (``r_before``; by θ or by re-centring), the book is redrawn (``reinit``) with
    probability ``reinit_p`` and re-centred. Draws ``stream`` from ``base`` (REINIT_STRIDE
    of them); none when ``reinit_p`` is 0."""
    if reinit_p <= 0.0 or ints[i, I_R] == r_before:
        return
    if uniform(key, stream, base + REINIT_STRIDE - 1) >= reinit_p:
        return
    reinit(q, ints, i, own_side, conservative, init_cdf, aes, key, stream, base)
    recenter(q, ints, acc_i, i, own_side, conservative, init_cdf, aes, key, stream, base + 128)


@njit(cache=True)
def stationary_refill_level(q: NDArray[np.int64], ints: NDArray[np.int64], i: int, s: int,
                            own_side: int, conservative: bool,
                            init_mean: NDArray[np.float64]) -> int:
    """Where a redirected limit order of side s goes with ``refill = "stationary"``: the
    level of that side (in the frame now) whose shares fall furthest below the level's mean
    under ``init_queue`` (the first such level on a tie). It follows the price: nothing is
    anchored where the agent took, and a side never crosses."""
    K = q.shape[2]
    best_j, best_gap = 0, -np.inf
    for j in range(K):
        gap = init_mean[j] - display(q, ints, i, s, j, own_side, conservative)
        if gap > best_gap:
            best_j, best_gap = j, gap
    return best_j


@njit(cache=True)
def refill_level(q: NDArray[np.int64], ints: NDArray[np.int64], acc_i: NDArray[np.int64],
                 i: int, s: int, take: float, own_side: int, conservative: bool,
                 init_cdf: NDArray[np.float64], aes: float, key: np.uint64,
                 counter: int) -> int:
    """Where a redirected limit order of side s goes: back at the best price the agent took
    on that side (``take``), or one tick from the opposite best when that is worse (it never
    crosses). When the price lies beyond p_ref (in the other side's half of the frame, whose
    levels there are empty), the frame moves toward it first. Returns the level; draws
    ``S_REVEAL`` from ``counter``."""
    K = q.shape[2]
    o = 1 - s
    go = first_nonempty(q, ints, i, o, own_side, conservative)
    if go >= K:  # the opposite side is empty in the window: join the own side's best
        gs = first_nonempty(q, ints, i, s, own_side, conservative)
        return gs if gs < K else 0
    opp_best = price_index(ints, i, o, go)
    if s == ASK:
        target = max(int(take), opp_best + 1)
    else:
        target = min(int(take), opp_best - 1)
    for n in range(K):  # a price in the other side's half: move the frame over
        r = ints[i, I_R]
        lvl = target - r - 1 if s == ASK else r - target
        if lvl >= 0:
            return lvl if lvl < K else K - 1
        if not shift(q, ints, acc_i, i, s == BID, own_side, init_cdf, aes, key, S_REVEAL,
                     counter + n):
            break
    return 0


@njit(cache=True)
def record_trade(tr_env: NDArray, tr_t: NDArray, tr_px: NDArray, tr_qty: NDArray,
                 tr_agg: NDArray, n_tr: NDArray[np.int64], acc_i: NDArray[np.int64],
                 acc_f: NDArray[np.float64], i: int, t: float, px: float, qty: int,
                 aggressor: int, in_order: bool) -> None:
    k = n_tr[0]
    tr_env[k] = i
    tr_t[k] = t
    tr_px[k] = px
    tr_qty[k] = qty
    tr_agg[k] = aggressor
    n_tr[0] = k + 1
    acc_i[i, A_VOLUME] += qty
    acc_i[i, A_TRADES] += 1
    if in_order:
        acc_f[i, A_IV_NUM] += px * qty
        acc_f[i, A_IV_DEN] += qty


@njit(cache=True)
def record_fill(fl_env: NDArray, fl_child: NDArray, fl_t: NDArray, fl_qty: NDArray,
                fl_px: NDArray, fl_passive: NDArray, fl_fee: NDArray, n_fl: NDArray[np.int64],
                acc_i: NDArray[np.int64], acc_f: NDArray[np.float64], i: int, child: int,
                t: float, px: float, qty: int, passive: bool, fee: float) -> None:
    k = n_fl[0]
    fl_env[k] = i
    fl_child[k] = child
    fl_t[k] = t
    fl_qty[k] = qty
    fl_px[k] = px
    fl_passive[k] = passive
    fl_fee[k] = fee
    n_fl[0] = k + 1
    acc_i[i, A_FILL] += qty
    acc_i[i, A_NFILLS] += 1
    if passive:
        acc_i[i, A_PASSIVE] += qty
    acc_f[i, A_NOTIONAL] += px * qty
    acc_f[i, A_FEES] += fee


@njit(cache=True)
def init_books(ids: NDArray[np.intp], keys: NDArray[np.uint64], r0: int, t0: float,
               lam: float, init_cdf: NDArray[np.float64], aes: float, q: NDArray[np.int64],
               ints: NDArray[np.int64], floats: NDArray[np.float64],
               book_keys: NDArray[np.uint64]) -> None:
    """Fresh books in ``ids``: queues from ``init_queue``, p_ref at r0 + ½, no agent order,
    the first candidate event after t0."""
    K = q.shape[2]
    for m in range(ids.shape[0]):
        i = ids[m]
        key = keys[m]
        book_keys[i] = key
        for s in range(2):
            for j in range(K):
                u1, u2 = uniform2(key, S_INIT, s * K + j)
                q[i, s, j] = fresh_queue(init_cdf, j, aes, u1, u2)
        ints[i, :] = 0
        ints[i, I_R] = r0
        floats[i, :] = 0.0
        floats[i, F_H_T] = t0
        floats[i, F_T_NEXT] = t0 - math.log(uniform(key, S_INIT, 2 * K)) / lam


@njit(cache=True)
def forced_time(par: NDArray[np.float64], done: int) -> float:
    """Time of a shock's forced move number ``done`` (inf when there is none left)."""
    n = int(par[P_SHOCK_N])
    if n <= 0:
        return np.inf
    if done < n:
        return par[P_SHOCK_START] + (done + 0.5) * par[P_SHOCK_DUR] / n
    if par[P_SHOCK_REC] > 0.0 and done < 2 * n:
        return par[P_SHOCK_START] + par[P_SHOCK_DUR] + (done - n + 0.5) * par[P_SHOCK_REC] / n
    return np.inf


@njit(cache=True)
def _agent_passive_fill(q: NDArray[np.int64], ints: NDArray[np.int64], i: int, s: int,
                        j: int, m: int, own_side: int) -> tuple[int, int]:
    """A market order of m shares meets level j of side s, FIFO: the others ahead of the
    agent's order, the agent's order, the others behind. Returns (agent's shares filled,
    shares of others taken)."""
    others_taken = m
    own_fill = 0
    if s == own_side and own_level(ints, i, own_side) == j:
        ahead = ints[i, I_OWN_AHEAD]
        a = min(m, ahead)
        ints[i, I_OWN_AHEAD] = ahead - a
        rest = m - a
        own_fill = min(rest, ints[i, I_OWN_QTY])
        ints[i, I_OWN_QTY] -= own_fill
        others_taken = m - own_fill
    q[i, s, j] -= others_taken
    return own_fill, others_taken


@njit(cache=True)
def _trade_through(ints: NDArray[np.int64], i: int, s: int, px_idx: int, m: int,
                   own_side: int) -> int:
    """Conservative fills: a trade of m shares at price index ``px_idx`` on side s fills the
    agent's order (up to m) when it prints strictly through the order's price."""
    if ints[i, I_OWN_QTY] <= 0 or s != own_side:
        return 0
    p = ints[i, I_OWN_IDX]
    through = px_idx < p if own_side == BID else px_idx > p
    if not through:
        return 0
    f = min(m, ints[i, I_OWN_QTY])
    ints[i, I_OWN_QTY] -= f
    return f


@njit(cache=True)
def flow(
    start: int, active: NDArray[np.bool_], t_end: NDArray[np.float64], in_order: bool,
    par: NDArray[np.float64], edges: NDArray[np.float64], cells: NDArray[np.int64],
    limit: NDArray[np.float64],
    cancel: NDArray[np.float64], market: NDArray[np.float64], init_cdf: NDArray[np.float64],
    lsize_v: NDArray[np.int64], lsize_c: NDArray[np.float64], msize_v: NDArray[np.int64],
    msize_c: NDArray[np.float64], init_mean: NDArray[np.float64],
    book_keys: NDArray[np.uint64], q: NDArray[np.int64],
    ints: NDArray[np.int64], floats: NDArray[np.float64], acc_i: NDArray[np.int64],
    acc_f: NDArray[np.float64],
    tr_env: NDArray, tr_t: NDArray, tr_px: NDArray, tr_qty: NDArray, tr_agg: NDArray,
    n_tr: NDArray[np.int64],
    fl_env: NDArray, fl_child: NDArray, fl_t: NDArray, fl_qty: NDArray, fl_px: NDArray,
    fl_passive: NDArray, fl_fee: NDArray, n_fl: NDArray[np.int64],
) -> int:
    """Other traders' events of every active book from its clock up to ``t_end[i]``, books in
    order from ``start``. Returns -1 when done, or the book to resume from when the trade or
    fill buffers are about to fill (the books' states are whole between events)."""
    n, _, K = q.shape
    n_b = limit.shape[1]
    lam = par[P_LAMBDA]
    theta = par[P_THETA]
    reinit_p = par[P_REINIT]
    aes = par[P_AES]
    resilience = par[P_RESILIENCE]
    stationary = par[P_REFILL] == REFILL_STATIONARY
    hawkes = par[P_HAWKES] > 0.0
    h_self, h_cross, h_beta, h_max = par[P_H_SELF], par[P_H_CROSS], par[P_H_BETA], par[P_H_MAX]
    maker = par[P_MAKER]
    conservative = par[P_CONSERVATIVE] > 0.0
    tick = par[P_TICK]
    own_side = BID if par[P_SIDE] > 0.0 else ASK
    block = 2 * K + N_SIDE_SLOTS_EXTRA
    n_slots = edges.shape[0] - 1
    n_cells = cells.shape[0]
    cap_tr = tr_env.shape[0]
    cap_fl = fl_env.shape[0]
    for i in range(start, n):
        if not active[i]:
            continue
        key = book_keys[i]
        t_stop = t_end[i]
        while True:
            t_c = floats[i, F_T_NEXT]
            t_f = forced_time(par, ints[i, I_FORCED])
            if t_c > t_stop and t_f > t_stop:
                break
            if n_tr[0] + 2 > cap_tr or n_fl[0] + 2 > cap_fl:
                return i
            if t_f <= t_c:
                # a shock's forced move: clear level 0 of the side the price moves through
                move = ints[i, I_FORCED]
                down = (move < int(par[P_SHOCK_N])) == (par[P_SHOCK_DIR] < 0.0)
                s = BID if down else ASK
                d = display(q, ints, i, s, 0, own_side, conservative)
                if d > 0:
                    px_idx = price_index(ints, i, s, 0)
                    if conservative:
                        q[i, s, 0] -= d
                        own_fill = _trade_through(ints, i, s, px_idx, d, own_side)
                    else:
                        own_fill, _ = _agent_passive_fill(q, ints, i, s, 0, d, own_side)
                    record_trade(tr_env, tr_t, tr_px, tr_qty, tr_agg, n_tr, acc_i, acc_f, i,
                                 t_f, px_idx * tick, d, 1 if s == ASK else -1, in_order)
                    if own_fill > 0:
                        px = (ints[i, I_OWN_IDX] if conservative else px_idx) * tick
                        record_fill(fl_env, fl_child, fl_t, fl_qty, fl_px, fl_passive, fl_fee,
                                    n_fl, acc_i, acc_f, i, ints[i, I_OWN_CHILD], t_f, px,
                                    own_fill, True, -maker * own_fill)
                forced_shift(q, ints, acc_i, i, down, own_side, init_cdf, aes, key,
                             S_FORCED_REVEAL, 128 * move)
                recenter(q, ints, acc_i, i, own_side, conservative, init_cdf, aes, key,
                         S_FORCED_REVEAL, 128 * move + 1)
                ints[i, I_FORCED] = move + 1
                ints[i, I_EVENTS] += 1
                continue
            c = ints[i, I_CTR]
            u_time, u_slot, u_size, u_pos = uniform4(key, S_EVENT, c)
            if hawkes:
                decay = math.exp(-h_beta * (t_c - floats[i, F_H_T]))
                floats[i, F_H_BID] *= decay
                floats[i, F_H_ASK] *= decay
                floats[i, F_H_T] = t_c
            x = u_slot * lam
            # the slot holding x: the lookup table's guess, then forward (one step at most
            # for most cells)
            lo = cells[int(u_slot * n_cells)]
            while lo < n_slots - 1 and edges[lo + 1] <= x:
                lo += 1
            s = lo // block
            ch = lo - s * block
            pos = x - edges[lo]  # place within the slot, uniform on [0, width)
            accepted = False
            if ch < K:  # limit order at level ch
                j = ch
                d = display(q, ints, i, s, j, own_side, conservative)
                if pos < limit[j, bucket(d, aes, n_b)]:
                    accepted = True
                    size = draw_size(lsize_v, lsize_c, u_size)
                    deficit = floats[i, F_D_BID + s]
                    if deficit > 0.0 and u_pos < resilience * deficit / aes:
                        # redirected: liquidity comes back where the agent took it, or where
                        # the book is thinnest against its stationary shape
                        if stationary:
                            j = stationary_refill_level(q, ints, i, s, own_side, conservative,
                                                        init_mean)
                        else:
                            j = refill_level(q, ints, acc_i, i, s, floats[i, F_TAKE_BID + s],
                                             own_side, conservative, init_cdf, aes, key,
                                             256 * c + 1)
                        d = display(q, ints, i, s, j, own_side, conservative)
                        floats[i, F_D_BID + s] = max(0.0, deficit - size)
                    q[i, s, j] += size
                    if d == 0:  # into an empty level: the spread may have become lopsided
                        recenter(q, ints, acc_i, i, own_side, conservative, init_cdf, aes, key,
                                 S_REVEAL, 256 * c + 2 + K)
            elif ch < 2 * K:  # cancel at level ch - K
                j = ch - K
                d = display(q, ints, i, s, j, own_side, conservative)
                others = q[i, s, j]
                if pos < cancel[j, bucket(d, aes, n_b)] and others > 0:
                    accepted = True
                    size = min(draw_size(lsize_v, lsize_c, u_size), others)
                    if not conservative and s == own_side and own_level(ints, i, own_side) == j:
                        # one order at a uniform place in the others' volume: ahead of ours
                        # (taking at most what is ahead) or behind it (at most what is behind)
                        ahead = ints[i, I_OWN_AHEAD]
                        if u_pos * others < ahead:
                            size = min(size, ahead)
                            ints[i, I_OWN_AHEAD] = ahead - size
                        else:
                            size = min(size, others - ahead)
                    q[i, s, j] = others - size
                    if display(q, ints, i, s, j, own_side, conservative) == 0:
                        r_before = ints[i, I_R]
                        was_best = reinit_p > 0.0 and first_nonempty(
                            q, ints, i, s, own_side, conservative) > j
                        if j == 0 and uniform(key, S_THETA, c) < theta:
                            shift(q, ints, acc_i, i, s == ASK, own_side, init_cdf, aes, key,
                                  S_REVEAL, 256 * c)
                        recenter(q, ints, acc_i, i, own_side, conservative, init_cdf, aes, key,
                                 S_REVEAL, 256 * c + 1)
                        if was_best:
                            maybe_reinit(q, ints, acc_i, i, r_before, reinit_p,
                                         own_side, conservative, init_cdf, aes, key, S_REINIT,
                                         REINIT_STRIDE * c)
            else:  # a market order hitting side s (queue-reactive or Hawkes)
                jb = first_nonempty(q, ints, i, s, own_side, conservative)
                if jb < K:
                    d = display(q, ints, i, s, jb, own_side, conservative)
                    if ch - 2 * K == CH_MARKET:
                        rate = market[jb, bucket(d, aes, n_b)]
                    else:
                        rate = min(floats[i, F_H_BID + s], h_max)
                    if pos < rate:
                        accepted = True
                        m = min(draw_size(msize_v, msize_c, u_size), d)
                        px_idx = price_index(ints, i, s, jb)
                        if conservative:
                            q[i, s, jb] -= m
                            own_fill = _trade_through(ints, i, s, px_idx, m, own_side)
                        else:
                            own_fill, _ = _agent_passive_fill(q, ints, i, s, jb, m, own_side)
                        aggressor = 1 if s == ASK else -1
                        record_trade(tr_env, tr_t, tr_px, tr_qty, tr_agg, n_tr, acc_i, acc_f,
                                     i, t_c, px_idx * tick, m, aggressor, in_order)
                        if own_fill > 0:
                            px = (ints[i, I_OWN_IDX] if conservative else px_idx) * tick
                            record_fill(fl_env, fl_child, fl_t, fl_qty, fl_px, fl_passive,
                                        fl_fee, n_fl, acc_i, acc_f, i, ints[i, I_OWN_CHILD],
                                        t_c, px, own_fill, True, -maker * own_fill)
                        if hawkes:
                            floats[i, F_H_BID + s] += h_self
                            floats[i, F_H_BID + (1 - s)] += h_cross
                        emptied = display(q, ints, i, s, jb, own_side, conservative) == 0
                        r_before = ints[i, I_R]
                        if jb == 0 and emptied:
                            if uniform(key, S_THETA, c) < theta:
                                shift(q, ints, acc_i, i, s == ASK, own_side, init_cdf, aes,
                                      key, S_REVEAL, 256 * c)
                        recenter(q, ints, acc_i, i, own_side, conservative, init_cdf, aes, key,
                                 S_REVEAL, 256 * c + 1)
                        if emptied:
                            maybe_reinit(q, ints, acc_i, i, r_before, reinit_p,
                                         own_side, conservative, init_cdf, aes, key, S_REINIT,
                                         REINIT_STRIDE * c)
            ints[i, I_CTR] = c + 1
            if accepted:
                ints[i, I_EVENTS] += 1
            floats[i, F_T_NEXT] = t_c - math.log(u_time) / lam
    return -1


@njit(cache=True)
def agent_orders(
    active: NDArray[np.bool_], t_now: NDArray[np.float64], qty: NDArray[np.int64],
    order_type: NDArray[np.int8], limit_px: NDArray[np.float64], ttl: NDArray[np.int32],
    cancel_flag: NDArray[np.bool_], child_id: NDArray[np.int64], par: NDArray[np.float64],
    init_cdf: NDArray[np.float64], book_keys: NDArray[np.uint64], q: NDArray[np.int64],
    ints: NDArray[np.int64], floats: NDArray[np.float64], acc_i: NDArray[np.int64],
    acc_f: NDArray[np.float64], reject: NDArray[np.int8],
    tr_env: NDArray, tr_t: NDArray, tr_px: NDArray, tr_qty: NDArray, tr_agg: NDArray,
    n_tr: NDArray[np.int64],
    fl_env: NDArray, fl_child: NDArray, fl_t: NDArray, fl_qty: NDArray, fl_px: NDArray,
    fl_passive: NDArray, fl_fee: NDArray, n_fl: NDArray[np.int64],
) -> None:
    """The agent's side of a decision step, at its start, in every active book: the cancel
    asked for, then the new child order: checked (a reject code per
    book), walked through the opposite side up to its limit price (at most n_levels price
    levels, each paid at its own price), and what is left rests at its limit price at the back
    of its level's queue (limit and marketable limit orders with a time to live) or is dropped
    (market, IOC, time to live 0). The trade and fill buffers must hold K + 1 rows per book."""
    n, _, K = q.shape
    aes = par[P_AES]
    theta = par[P_THETA]
    reinit_p = par[P_REINIT]
    tick = par[P_TICK]
    taker = par[P_TAKER]
    conservative = par[P_CONSERVATIVE] > 0.0
    hawkes = par[P_HAWKES] > 0.0 and par[P_H_AGENT] > 0.0
    side = 1 if par[P_SIDE] > 0.0 else -1
    own_side = BID if side > 0 else ASK
    opp = 1 - own_side
    for i in range(n):
        reject[i] = R_NONE
        for a in range(acc_i.shape[1]):
            acc_i[i, a] = 0
        acc_f[i, A_NOTIONAL] = 0.0
        acc_f[i, A_FEES] = 0.0
        if not active[i]:
            continue
        key = book_keys[i]
        step = ints[i, I_STEP]
        t = t_now[i]
        if ints[i, I_OWN_QTY] > 0 and cancel_flag[i]:
            acc_i[i, A_CANCELLED] += ints[i, I_OWN_QTY]
            ints[i, I_OWN_QTY] = 0
        need = qty[i]
        if need <= 0:
            continue
        kind = order_type[i]
        if kind < T_MARKET or kind > T_IOC:
            reject[i] = R_ORDER_TYPE
            continue
        lim = 0
        if kind != T_MARKET:
            px = limit_px[i]
            if not np.isfinite(px):
                reject[i] = R_NO_PRICE
                continue
            steps = px / tick
            lim = int(np.rint(steps))
            if abs(steps - lim) > 1e-6 or lim <= 0:
                reject[i] = R_OFF_TICK if lim > 0 else R_OUTSIDE_BOOK
                continue
        rests = (kind == T_LIMIT or kind == T_MARKETABLE) and ttl[i] > 0
        if rests:
            # its level once it rests: beyond the window's far end is refused up front
            r = ints[i, I_R]
            lvl = r - lim if own_side == BID else lim - r - 1
            if lvl >= K:
                reject[i] = R_OUTSIDE_BOOK
                continue
        if rests and ints[i, I_OWN_QTY] > 0:
            reject[i] = R_WORKING
            continue
        child = child_id[i]
        n_theta = 0  # draws of S_AGENT_THETA and S_AGENT_REVEAL in this step (1024 each)
        n_reveal = 0
        n_emptied = 0  # best levels the walk emptied (S_AGENT_REINIT)
        for _ in range(K):  # walk the opposite side, one price level at a time
            if need <= 0:
                break
            jb = first_nonempty(q, ints, i, opp, own_side, conservative)
            if jb >= K:
                break
            p_idx = price_index(ints, i, opp, jb)
            if kind != T_MARKET and (p_idx > lim if side > 0 else p_idx < lim):
                break
            take = min(need, q[i, opp, jb])
            if floats[i, F_D_BID + opp] <= 0.0:  # a fresh deficit: liquidity comes back here
                floats[i, F_TAKE_BID + opp] = p_idx
            elif opp == ASK:
                floats[i, F_TAKE_BID + opp] = min(floats[i, F_TAKE_BID + opp], p_idx)
            else:
                floats[i, F_TAKE_BID + opp] = max(floats[i, F_TAKE_BID + opp], p_idx)
            q[i, opp, jb] -= take
            need -= take
            px = p_idx * tick
            record_trade(tr_env, tr_t, tr_px, tr_qty, tr_agg, n_tr, acc_i, acc_f, i, t, px,
                         take, side, True)
            record_fill(fl_env, fl_child, fl_t, fl_qty, fl_px, fl_passive, fl_fee, n_fl,
                        acc_i, acc_f, i, child, t, px, take, False, taker * take)
            floats[i, F_D_BID + opp] += take
            if hawkes:
                floats[i, F_H_BID + opp] += par[P_H_SELF] * take / aes
                floats[i, F_H_BID + own_side] += par[P_H_CROSS] * take / aes
            emptied = q[i, opp, jb] == 0
            r_before = ints[i, I_R]
            if jb == 0 and emptied:
                n_theta += 1
                if uniform(key, S_AGENT_THETA, 1024 * step + n_theta) < theta:
                    n_reveal += 1
                    shift(q, ints, acc_i, i, opp == ASK, own_side, init_cdf, aes, key,
                          S_AGENT_REVEAL, 1024 * step + n_reveal)
            n_reveal += recenter(q, ints, acc_i, i, own_side, conservative, init_cdf, aes, key,
                                 S_AGENT_REVEAL, 1024 * step + n_reveal + 1)
            if emptied:
                n_emptied += 1
                maybe_reinit(q, ints, acc_i, i, r_before, reinit_p, own_side,
                             conservative, init_cdf, aes, key, S_AGENT_REINIT,
                             REINIT_STRIDE * (1024 * step + n_emptied))
        if not rests or need <= 0:
            continue
        if not conservative:
            # a price inside the spread beyond p_ref: move the frame so that it is level 0
            for _ in range(K):
                r = ints[i, I_R]
                lvl = r - lim if own_side == BID else lim - r - 1
                if lvl >= 0:
                    break
                n_reveal += 1
                shift(q, ints, acc_i, i, own_side == BID, own_side, init_cdf, aes, key,
                      S_AGENT_REVEAL, 1024 * step + n_reveal)
            r = ints[i, I_R]
            lvl = r - lim if own_side == BID else lim - r - 1
            if lvl < 0 or lvl >= K:  # cannot happen (see above): refuse rather than misplace
                reject[i] = R_OUTSIDE_BOOK
                continue
            ints[i, I_OWN_AHEAD] = q[i, own_side, lvl]
        else:
            ints[i, I_OWN_AHEAD] = 0
        ints[i, I_OWN_QTY] = need
        ints[i, I_OWN_IDX] = lim
        ints[i, I_OWN_TTL] = ttl[i]
        ints[i, I_OWN_CHILD] = child


@njit(cache=True)
def expire(active: NDArray[np.bool_], ints: NDArray[np.int64], acc_i: NDArray[np.int64]) -> None:
    """At the end of a step: a resting order's time to live runs down by one step, and one
    that has none left is cancelled (sent in step k with ttl m: it rests in steps k .. k+m-1
    and that last step's fills show it cancelled, so the next decision sees nothing working)."""
    for i in range(ints.shape[0]):
        if active[i] and ints[i, I_OWN_QTY] > 0:
            ints[i, I_OWN_TTL] -= 1
            if ints[i, I_OWN_TTL] <= 0:
                acc_i[i, A_CANCELLED] += ints[i, I_OWN_QTY]
                ints[i, I_OWN_QTY] = 0


@njit(cache=True)
def snapshot(
    q: NDArray[np.int64], ints: NDArray[np.int64], par: NDArray[np.float64], top_k: int,
    bid_px: NDArray[np.float64], bid_qty: NDArray[np.float64], ask_px: NDArray[np.float64],
    ask_qty: NDArray[np.float64], best: NDArray[np.float64], own: NDArray[np.float64],
    ids: NDArray[np.intp],
) -> None:
    """Top-k non-empty levels a side (shares shown: the agent's resting order included), for
    the feature builder, and per book: best bid, best ask, mid (``best[:, 0..2]``; a side empty
    in the whole window is priced one tick beyond it) and the agent's order (``own[:, 0..2]``:
    shares ahead of it, shares shown at its price, shares at the touch of its side)."""
    K = q.shape[2]
    tick = par[P_TICK]
    conservative = par[P_CONSERVATIVE] > 0.0
    own_side = BID if par[P_SIDE] > 0.0 else ASK
    for m in range(ids.shape[0]):
        i = ids[m]
        r = ints[i, I_R]
        for s in range(2):
            px_out = bid_px if s == BID else ask_px
            qty_out = bid_qty if s == BID else ask_qty
            k = 0
            first = -1
            for j in range(K):
                d = display(q, ints, i, s, j, own_side, conservative)
                if d > 0:
                    if first < 0:
                        first = j
                    if k < top_k:
                        px_out[m, k] = price_index(ints, i, s, j) * tick
                        qty_out[m, k] = d
                        k += 1
            for kk in range(k, top_k):
                px_out[m, kk] = np.nan
                qty_out[m, kk] = 0.0
            j0 = first if first >= 0 else K
            best[i, s] = price_index(ints, i, s, j0) * tick
        best[i, 2] = 0.5 * (best[i, 0] + best[i, 1])
        lvl = own_level(ints, i, own_side)
        near = first_nonempty(q, ints, i, own_side, own_side, conservative)
        own[i, 2] = display(q, ints, i, own_side, near, own_side, conservative) if near < K else 0.0
        if lvl == -1000:
            own[i, 0] = np.nan
            own[i, 1] = own[i, 2]
        elif conservative:
            own[i, 0] = q[i, own_side, lvl] if 0 <= lvl < K else 0.0
            own[i, 1] = own[i, 0]
        else:
            own[i, 0] = ints[i, I_OWN_AHEAD]
            own[i, 1] = display(q, ints, i, own_side, lvl, own_side, conservative)
        _ = r
