"""The queue-reactive estimator (Huang, Lehalle & Rosenbaum 2015, §2.2) on a LOBSTER day.

What is estimated is exactly what ``execrl.sim.lob`` simulates (``LOBMarketConfig``; the long
form is /work/notes/lob-schema.md), on the same frame:

Price grid (small-tick aggregation). GOOG trades on a one-cent tick with a spread of 25-30
cents and occupied LOBSTER levels 2-5 cents apart, so one cent per simulated level would leave
most levels empty and most states unseen. ``ticks_per_level`` cents make one simulated level:
a bid at p cents lies on level index floor(p / k), an ask on ceil(p / k) (the aggregated book
can never cross or lock), and the shares of every LOBSTER level falling into one index are one
queue. The choice is recorded in the output (``aggregation``).

Frame. p_ref = (r + ½)·tick with bid level j at index r − j and ask level j at r + 1 + j. The
data's r follows the simulator's frame rule deterministically: the empty levels between p_ref
and the best quotes differ by at most one between the sides (r is the mid for an odd spread;
for an even spread the previous r is kept while valid, else moved as little as it takes, as
the simulator does; the first row takes the candidate nearer the true mid). An
event priced on the far side of p_ref (an improvement past the middle of the spread) is put on
its side's level 0, and counted (``clipped_events``).

States and intensities. A queue of q shares is in bucket 0 if q = 0, else min(ceil(q / aes),
B − 1). ``aes``, the "average event size" unit, is the *median* size of the window's events
(limit orders, cancels, market orders), snapped to the round lot (100 shares) when within 10 %
of it (``average_event_size``): on GOOG 100 shares. The mean (63) would put the common 100- and
200-share queues in buckets 2 and 4 and leave bucket 3 nearly never seen, and a median of 99
would put a 100-share queue in bucket 2: patterns of the lot size, not of the market. For
level j and
bucket b, both sides pooled:

    limit_rate[j][b]  = #limit orders at level j while it was in bucket b / time it spent so
    cancel_rate[j][b] = #cancels (partial or total) at level j in bucket b / the same time
    market_rate[j][b] = #market orders hitting a side whose best non-empty level was j, in
                        bucket b / time that side's best was level j in bucket b

(the maximum-likelihood estimator of a Markov jump process's rates). Time and events count
only while the level's whole price bin lies inside what the file shows (a 10-level file says
nothing beyond its 10th level). Market orders are LOBSTER's executions merged by time stamp and
side; those that met only hidden liquidity (type 5) leave the visible queues as they were and
are left out (their share is recorded). A cell seen for less than ``min_time_s`` pools its
counts and time with the nearest buckets of its level until it has that much; a level never
seen that long takes the row of the deepest level that was (``filled`` marks both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from execrl.calibrate.tape import (
    KIND_CANCEL,
    KIND_LIMIT,
    KIND_MARKET,
    BookTape,
    event_rows,
    tape_from_arrays,
    tape_from_lobster,
)
from execrl.data.lobster import PRICE_SCALE, LobsterDay
from execrl.domain import DataError

#: LOBSTER price units per cent (US equities trade on a one-cent tick above $1).
CENT = PRICE_SCALE // 100
#: Largest number of queue-size buckets the calibration uses (bucket B - 1 pools the tail).
MAX_BUCKETS = 31
#: Fewest seconds of observation behind one table cell before it pools with its neighbours.
MIN_CELL_TIME_S = 200.0


@njit(cache=True)
def _frame(bid_px, bid_qty, ask_px, ask_qty, unit, n_levels):  # pragma: no cover - numba
    """Per book row: r, the queues (n, 2, K) of the bid (0) and ask (1) levels of the frame,
    whether each level's price bin is seen whole, and the best non-empty level per side."""
    n, L = bid_px.shape
    r_out = np.zeros(n, np.int64)
    q = np.zeros((n, 2, n_levels), np.int64)
    seen = np.zeros((n, 2, n_levels), np.bool_)
    best = np.full((n, 2), -1, np.int64)
    valid = np.zeros(n, np.bool_)
    r = np.int64(-1)
    have = False
    for i in range(n):
        if bid_qty[i, 0] <= 0 or ask_qty[i, 0] <= 0:
            continue  # a side is empty: no frame (the row counts nothing)
        b = bid_px[i, 0] // unit
        a = -((-ask_px[i, 0]) // unit)
        if (a + b) % 2 == 1:
            r = (a + b - 1) // 2
        else:
            lo = (a + b) // 2 - 1
            if have and r != lo and r != lo + 1:
                # the previous p_ref is no longer valid: move it as little as it takes (the
                # simulator moves p_ref one tick at a time until the frame is balanced)
                r = lo if abs(r - lo) < abs(r - lo - 1) else lo + 1
            elif not have:
                # no previous one: the candidate whose p_ref is nearer the true mid
                mid2 = bid_px[i, 0] + ask_px[i, 0]  # twice the mid, price units
                d_lo = abs((2 * lo + 1) * unit - mid2)
                d_hi = abs((2 * lo + 3) * unit - mid2)
                r = lo if d_lo <= d_hi else lo + 1
        have = True
        valid[i] = True
        r_out[i] = r
        best[i, 0] = r - b
        best[i, 1] = a - r - 1
        for lv in range(L):
            if bid_qty[i, lv] > 0:
                j = r - bid_px[i, lv] // unit
                if 0 <= j < n_levels:
                    q[i, 0, j] += bid_qty[i, lv]
            if ask_qty[i, lv] > 0:
                j = -((-ask_px[i, lv]) // unit) - r - 1
                if 0 <= j < n_levels:
                    q[i, 1, j] += ask_qty[i, lv]
        bid_ends = bid_qty[i, L - 1] <= 0  # the file shows every bid level there is
        ask_ends = ask_qty[i, L - 1] <= 0
        for j in range(n_levels):
            x = r - j  # bid bin [x·unit, (x+1)·unit − 1]
            seen[i, 0, j] = bid_ends or x * unit >= bid_px[i, L - 1]
            x = r + 1 + j  # ask bin [(x−1)·unit + 1, x·unit]
            seen[i, 1, j] = ask_ends or x * unit <= ask_px[i, L - 1]
    return r_out, q, seen, best, valid


@dataclass(frozen=True)
class QueueReactiveFit:
    """The estimated tables (``n_levels`` × ``n_buckets``, events/s, one side) and what they
    rest on. ``counts_*`` and ``time_*`` are the raw counts and seconds per cell before
    pooling; ``filled`` marks cells whose rate came from pooled or copied cells."""

    ticks_per_level: int
    aes: int
    limit_rate: NDArray[np.float64]
    cancel_rate: NDArray[np.float64]
    market_rate: NDArray[np.float64]
    init_queue: NDArray[np.float64]
    counts_limit: NDArray[np.int64]
    counts_cancel: NDArray[np.int64]
    counts_market: NDArray[np.int64]
    time_level: NDArray[np.float64]
    time_best: NDArray[np.float64]
    filled: NDArray[np.bool_]
    limit_sizes: NDArray[np.int64]
    cancel_sizes: NDArray[np.int64]
    market_sizes: NDArray[np.int64]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def n_levels(self) -> int:
        return int(self.limit_rate.shape[0])

    @property
    def n_buckets(self) -> int:
        return int(self.limit_rate.shape[1])


#: Shares in a round lot (US equities).
ROUND_LOT = 100


def average_event_size(sizes: NDArray[np.integer]) -> int:
    """The bucket unit: the median event size, snapped to a whole number of round lots when
    within 10 % of one (module docstring); 100 when there are no events."""
    if np.size(sizes) == 0:
        return ROUND_LOT
    med = float(np.median(sizes))
    lots = max(1, round(med / ROUND_LOT)) * ROUND_LOT
    return int(lots) if abs(med - lots) <= 0.1 * lots else max(1, round(med))


def bucket_of(q: NDArray[np.integer], aes: int, n_buckets: int) -> NDArray[np.int64]:
    """The simulator's queue-size bucket: 0 if empty, else min(ceil(q / aes), B − 1)."""
    q = np.asarray(q, dtype=np.int64)
    return np.where(q <= 0, 0, np.minimum(-((-q) // aes), n_buckets - 1))


@dataclass(frozen=True)
class Frame:
    """The simulator's frame on each tape row (``frame_queues``)."""

    r: NDArray[np.int64]
    """(n,) p_ref = (r + ½)·tick, r on the aggregated grid (price index)."""
    queues: NDArray[np.int64]
    """(n, 2, K) shares of bid (0) and ask (1) level j."""
    seen: NDArray[np.bool_]
    """(n, 2, K) the level's whole price bin lies inside what the file shows."""
    best: NDArray[np.int64]
    """(n, 2) the best non-empty level per side."""
    valid: NDArray[np.bool_]
    """(n,) both sides have a quote (else the row has no frame and counts nothing)."""


def frame_queues(book: NDArray, ticks_per_level: int, n_levels: int) -> Frame:
    """The frame and the aggregated queues of LOBSTER book rows (``book_dtype``)."""
    unit = CENT * int(ticks_per_level)
    return Frame(*_frame(book["bid_px"], book["bid_qty"], book["ask_px"], book["ask_qty"],
                         unit, n_levels))


def aggregated_tape(day: LobsterDay, ticks_per_level: int, n_levels: int = 10) -> BookTape:
    """The day's tape on the simulator's grid and window: the aggregated queues of the frame
    (``frame_queues``) as the simulator would show them, priced at their grid level, with the
    window's edge (or the file's last level, whichever is nearer) as what the tape can show.
    The simulator's statistics are compared with this tape, like with like."""
    rows, kind, mos = event_rows(day)
    book = day.book[rows]
    fr = frame_queues(book, ticks_per_level, n_levels)
    tick = ticks_per_level / 100.0
    r = fr.r[:, None]
    j = np.arange(n_levels)[None, :]
    q = np.where(fr.seen, fr.queues, 0)
    bid_px = np.where(q[:, 0] > 0, (r - j) * tick, np.nan)
    ask_px = np.where(q[:, 1] > 0, (r + 1 + j) * tick, np.nan)
    # the deepest level seen whole (the window's edge at most)
    nb = fr.seen[:, 0].sum(axis=1)
    na = fr.seen[:, 1].sum(axis=1)
    bid_to = (fr.r - np.maximum(nb, 1) + 1) * tick
    ask_to = (fr.r + np.maximum(na, 1)) * tick
    base = tape_from_lobster(day)
    return tape_from_arrays(
        day.messages["t"][rows], kind, bid_px, q[:, 0], ask_px, q[:, 1], [], [], [],
        start_s=base.start_s, end_s=base.end_s, tick=tick,
        label=f"{base.label} on {ticks_per_level} c levels", bid_seen_to=bid_to,
        ask_seen_to=ask_to,
    ).with_market_orders(mos)


def estimate_queue_reactive(
    day: LobsterDay,
    ticks_per_level: int,
    n_levels: int = 10,
    n_buckets: int | None = None,
    min_time_s: float = MIN_CELL_TIME_S,
    aes: int | None = None,
) -> QueueReactiveFit:
    """The queue-reactive tables of ``day`` on a grid of ``ticks_per_level`` cents (module
    docstring). ``n_buckets`` None: enough buckets for 99 % of the time the levels spent
    non-empty (at most ``MAX_BUCKETS``); ``aes`` None: the median size of the window's events."""
    if ticks_per_level < 1:
        raise DataError(f"ticks_per_level = {ticks_per_level} must be >= 1")
    rows, kind, mos = event_rows(day)
    if rows.size < 2:
        raise DataError(f"{day.source}: {rows.size} events are too few to calibrate on")
    m = day.messages[rows]
    book = day.book[rows]
    unit = CENT * int(ticks_per_level)
    fr = frame_queues(book, ticks_per_level, n_levels)
    r, q, seen, best, valid = fr.r, fr.queues, fr.seen, fr.best, fr.valid
    n = rows.size
    t = m["t"]
    end = day.end_s if day.end_s is not None else float(t[-1])
    dur = np.maximum(np.append(t[1:], max(end, float(t[-1]))) - t, 0.0)
    dur[~valid] = 0.0

    # each event against the book before it (row e - 1)
    e = np.arange(1, n)
    prev = e - 1
    ok = valid[prev]
    is_lc = ((kind[e] == KIND_LIMIT) | (kind[e] == KIND_CANCEL)) & ok
    side = np.where(m["direction"][e] == 1, 0, 1)  # 0 bid, 1 ask (a limit order's side)
    px = m["price"][e]
    index = np.where(side == 0, px // unit, -((-px) // unit))
    level = np.where(side == 0, r[prev] - index, index - r[prev] - 1)
    clipped = is_lc & (level < 0)
    level = np.maximum(level, 0)
    in_window = level < n_levels
    lv = np.minimum(level, n_levels - 1)
    seen_e = seen[prev, side, lv] & in_window
    lc = is_lc & seen_e
    q_e = q[prev, side, lv]

    # market orders: the side they hit is the opposite of the aggressor's
    mo_rows = np.flatnonzero(kind[e] == KIND_MARKET)
    mo_rows = mo_rows[ok[mo_rows]]
    # the aggressor of an execution is the opposite of the resting order's direction; the
    # merged order's last message carries that direction
    mo_side = np.where(m["direction"][e][mo_rows] == 1, 0, 1)  # side of the book hit
    mo_level = best[prev[mo_rows], mo_side]
    mo_in = mo_level < n_levels
    mo_q = q[prev[mo_rows], mo_side, np.minimum(mo_level, n_levels - 1)]

    # event sizes: what the simulator draws (limit and cancel sizes pooled; market orders'
    # visible part)
    size_e = m["size"][e]
    lim_sizes = size_e[lc & (kind[e] == KIND_LIMIT)]
    can_sizes = size_e[lc & (kind[e] == KIND_CANCEL)]
    mo_sizes = mos["visible_size"][~mos["hidden"]]
    if aes is None:
        sizes = np.concatenate([lim_sizes, can_sizes, mo_sizes])
        aes = average_event_size(sizes)
    if n_buckets is None:
        nonempty = (q > 0) & seen
        w = np.broadcast_to(dur[:, None, None], q.shape)[nonempty]
        units = -((-q[nonempty]) // aes)
        order = np.argsort(units, kind="stable")
        cum = np.cumsum(w[order])
        p99 = int(units[order][np.searchsorted(cum, 0.99 * cum[-1])]) if cum.size else 1
        n_buckets = int(min(max(p99 + 1, 3), MAX_BUCKETS))
    B = int(n_buckets)

    bucket_e = bucket_of(q_e, aes, B)
    K = n_levels
    counts_limit = np.zeros((K, B), np.int64)
    counts_cancel = np.zeros((K, B), np.int64)
    sel = lc & (kind[e] == KIND_LIMIT)
    np.add.at(counts_limit, (lv[sel], bucket_e[sel]), 1)
    sel = lc & (kind[e] == KIND_CANCEL)
    np.add.at(counts_cancel, (lv[sel], bucket_e[sel]), 1)
    counts_market = np.zeros((K, B), np.int64)
    mb = bucket_of(mo_q, aes, B)
    np.add.at(counts_market, (mo_level[mo_in], mb[mo_in]), 1)

    # time in each state, both sides pooled
    qb = bucket_of(q, aes, B)  # (n, 2, K)
    time_level = np.zeros((K, B))
    w = np.broadcast_to(dur[:, None, None], q.shape)
    jj = np.broadcast_to(np.arange(K)[None, None, :], q.shape)
    np.add.at(time_level, (jj[seen], qb[seen]), w[seen])
    time_best = np.zeros((K, B))
    for s in (0, 1):
        bl = best[:, s]
        inside = valid & (bl >= 0) & (bl < K)
        bb = qb[np.flatnonzero(inside), s, bl[inside]]
        np.add.at(time_best, (bl[inside], bb), dur[inside])

    limit_rate, f1 = pooled_rates(counts_limit, time_level, min_time_s, first_bucket=0)
    cancel_rate, f2 = pooled_rates(counts_cancel, time_level, min_time_s, first_bucket=1)
    market_rate, f3 = pooled_rates(counts_market, time_best, min_time_s, first_bucket=1)
    init_queue = _init_queue(time_level, min_time_s)
    filled = f1 | f2 | f3

    hidden_only = int(mos["hidden"].sum())
    summary = {
        "events": int(n),
        "limit_events_used": int(counts_limit.sum()),
        "cancel_events_used": int(counts_cancel.sum()),
        "market_orders_used": int(counts_market.sum()),
        "market_orders_hidden_only_left_out": hidden_only,
        "hidden_volume_share": float(1.0 - mos["visible_size"].sum() / max(mos["size"].sum(),
                                                                           1)),
        "limit_cancel_outside_window_or_unseen": int((is_lc & ~seen_e).sum()),
        "clipped_events": int(clipped.sum()),
        "clipped_share": float(clipped.sum() / max(is_lc.sum(), 1)),
        "rows_without_frame": int((~valid).sum()),
        "spread_levels_time_mean": float(np.average(
            (best[valid, 0] + best[valid, 1] + 1), weights=np.maximum(dur[valid], 1e-300))),
        "level_seen_share": (time_level.sum(axis=1) / max(2.0 * dur.sum(), 1e-300)).tolist(),
    }
    return QueueReactiveFit(
        ticks_per_level=int(ticks_per_level), aes=int(aes), limit_rate=limit_rate,
        cancel_rate=cancel_rate, market_rate=market_rate, init_queue=init_queue,
        counts_limit=counts_limit, counts_cancel=counts_cancel, counts_market=counts_market,
        time_level=time_level, time_best=time_best, filled=filled,
        limit_sizes=lim_sizes, cancel_sizes=can_sizes, market_sizes=mo_sizes.astype(np.int64),
        summary=summary,
    )


def pooled_rates(
    counts: NDArray[np.int64], time: NDArray[np.float64], min_time_s: float, first_bucket: int
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """count / time per cell; a cell with less than ``min_time_s`` pools the nearest buckets of
    its level (growing the window one bucket each way) until it has that much; a level with
    less in all takes the row of the deepest level that has enough. Buckets below
    ``first_bucket`` are 0 (an empty queue cannot be cancelled or hit)."""
    K, B = counts.shape
    rate = np.zeros((K, B))
    filled = np.zeros((K, B), dtype=bool)
    seen = time[:, first_bucket:].sum(axis=1)
    level_ok = (seen >= min_time_s) & (seen > 0)
    for j in range(K):
        if not level_ok[j]:
            continue
        for b in range(first_bucket, B):
            lo, hi = b, b + 1
            while (time[j, lo:hi].sum() < min_time_s or time[j, lo:hi].sum() <= 0) and (
                    lo > first_bucket or hi < B):
                lo, hi = max(first_bucket, lo - 1), min(B, hi + 1)
            spent = time[j, lo:hi].sum()
            rate[j, b] = counts[j, lo:hi].sum() / spent if spent > 0 else 0.0
            filled[j, b] = hi - lo > 1
    good = np.flatnonzero(level_ok)
    for j in range(K):
        if not level_ok[j]:
            src = good[good < j].max() if np.any(good < j) else (good.min() if good.size
                                                                 else None)
            if src is not None:
                rate[j] = rate[src]
            filled[j, first_bucket:] = True
    return rate, filled


def _init_queue(time: NDArray[np.float64], min_time_s: float) -> NDArray[np.float64]:
    """Time share of each bucket per level (the empirical invariant law), rows summing to 1;
    a level seen too little takes the deepest well-seen level's row."""
    K, B = time.shape
    total = time.sum(axis=1)
    ok = total >= min_time_s
    out = np.zeros((K, B))
    for j in range(K):
        src = j if ok[j] else (np.flatnonzero(ok[:j]).max() if ok[:j].any() else None)
        if src is None:
            out[j, 0] = 1.0
        else:
            out[j] = time[src] / total[src]
    out /= out.sum(axis=1, keepdims=True)
    return out


def size_distribution(sizes: NDArray[np.integer], max_values: int = 64) -> dict[str, list]:
    """An empirical size distribution as ``{"values", "probs"}`` with at most ``max_values``
    sizes: distinct sizes are merged with their neighbours (in size order) into groups of at
    least 1 / ``max_values`` of the mass, each group at its rounded mean size; a size with that
    much mass on its own (100 shares) stays an atom. The mean is kept to within rounding."""
    sizes = np.asarray(sizes, dtype=np.int64)
    sizes = sizes[sizes > 0]
    if sizes.size == 0:
        raise DataError("no order sizes to build a size distribution from")
    values, counts = np.unique(sizes, return_counts=True)
    if values.size <= max_values:
        probs = counts / counts.sum()
        return {"values": values.tolist(), "probs": _exact_probs(probs)}
    target = sizes.size / max_values
    out_v, out_c = [], []
    acc_n, acc_s = 0, 0
    for v, c in zip(values.tolist(), counts.tolist(), strict=True):
        if c >= target and acc_n:  # a frequent size stays an atom of its own
            out_v.append(round(acc_s / acc_n))
            out_c.append(acc_n)
            acc_n = acc_s = 0
        acc_n += c
        acc_s += v * c
        if acc_n >= target:
            out_v.append(round(acc_s / acc_n))
            out_c.append(acc_n)
            acc_n = acc_s = 0
    if acc_n:
        if out_v and round(acc_s / acc_n) <= out_v[-1]:
            prev_n = out_c[-1]
            merged = (out_v[-1] * prev_n + acc_s) / (prev_n + acc_n)
            out_v[-1], out_c[-1] = round(merged), prev_n + acc_n
        else:
            out_v.append(round(acc_s / acc_n))
            out_c.append(acc_n)
    probs = np.asarray(out_c, float) / sizes.size
    return {"values": out_v, "probs": _exact_probs(probs)}


def _exact_probs(probs: NDArray[np.float64]) -> list[float]:
    """Probabilities rounded to 12 digits that sum to 1 within 1e-9 (the schema checks 1e-6)."""
    p = np.round(probs, 12)
    p[np.argmax(p)] += 1.0 - math.fsum(p.tolist())
    return p.tolist()
