"""HLR's model III in the order book (``LOBMarketConfig.reinit_prob``): after p_ref moves on a
depletion, the whole window is redrawn from ``init_queue``, as often as configured, and the
redraw is the same draw whatever else differs (common random numbers).

The set-up: hand-built books (``load_book``) in a flow that does nothing over a step, and one
agent market order that empties ask level 0, so that each book moves p_ref up once (θ = 1)
and is redrawn or not. Tests with many books are statistical, at a fixed seed.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from execrl.sim import lob_kernels as kern
from execrl.sim.base import ChildOrderBatch
from execrl.sim.lob_config import LOBMarketConfig

K, B, AES = 10, 5, 100
R0 = 2500
BID_LADDER = np.array([150, 250, 350, 450, 150, 250, 350, 450, 150, 250])
ASK_LADDER = np.array([100, 450, 350, 250, 150, 450, 350, 250, 150, 450])


def _init_queue() -> list[list[float]]:
    """A different law per level, never empty (so no re-centring follows a redraw): level j
    puts its mass on buckets 1..4 in proportions that turn with j."""
    rows = []
    for j in range(K):
        w = np.roll(np.array([4.0, 3.0, 2.0, 1.0]), j % 4) + 0.5 * (j // 4)
        rows.append([0.0, *(w / w.sum()).tolist()])
    return rows


def _config(theta: float, reinit: float) -> LOBMarketConfig:
    """Nothing happens by itself over a step (rates of 1e-9/s)."""
    tiny = [[0.0] + [1e-9] * (B - 1) for _ in range(K)]
    return LOBMarketConfig(
        limit_rate=[[1e-9] * B for _ in range(K)], cancel_rate=tiny, market_rate=tiny,
        init_queue=_init_queue(), aes=AES, theta=theta, reinit_prob=reinit, warmup_s=0.0,
        resilience=0.0, horizon_s=10.0, step_seconds=10.0)


def _after_one_move(theta: float, reinit: float, n: int, seed: int = 4) -> np.ndarray:
    """(n, 2, K) queues after each book's ask level 0 (100 shares) is bought out."""
    market = _config(theta, reinit).build(n, 1)
    market.reset(np.random.default_rng(seed))
    for i in range(n):
        market.load_book(i, R0, BID_LADDER, ASK_LADDER)
    orders = ChildOrderBatch.market_orders(n)
    orders.qty[:] = ASK_LADDER[0]
    fills = market.execute(orders, np.ones(n, dtype=bool))
    assert (fills.qty == ASK_LADDER[0]).all()
    assert (market.events == 0).all()  # the flow did nothing: what we see is the move alone
    return market._q.copy(), market._ints[:, kern.I_R].copy()


SHIFTED = np.stack([np.concatenate([[0], BID_LADDER[:-1]]),
                    np.concatenate([ASK_LADDER[1:], [-1]])])  # -1: the level entering


def _redrawn(q: np.ndarray) -> np.ndarray:
    """Books whose window is not the old one moved a tick (the redraw repeating the old
    queues exactly has probability below 1e-30)."""
    return ~(q[:, :, :-1] == SHIFTED[None, :, :-1]).all(axis=(1, 2))


def test_a_move_with_reinit_one_redraws_every_queue_from_init_queue():
    """θ = θ_reinit = 1: every book moved up a tick and its 2·K queues follow ``init_queue``
    level by level. Chi-square over the buckets of each (side, level) (3 degrees of freedom
    each, 60 in all, 20,000 books: each expected count >= 2,000) and over the shares' place
    within their bucket (uniform on 1..aes: ten deciles); at a fixed seed, each must not
    reject at the 0.001 level. Power: the same statistic on books that moved without a
    redraw is in the thousands."""
    n = 20_000
    q, r = _after_one_move(1.0, 1.0, n)
    assert (r == R0 + 1).all()
    p = np.asarray(_init_queue())
    buckets = np.where(q <= 0, 0, np.minimum(-(-q // AES), B - 1))

    def chi2_buckets(b: np.ndarray) -> float:
        total = 0.0
        for s in range(2):
            for j in range(K):
                seen = np.bincount(b[:, s, j], minlength=B)[1:]
                expected = n * p[j, 1:]
                total += float(((seen - expected) ** 2 / expected).sum())
        return total

    stat = chi2_buckets(buckets)
    assert (buckets > 0).all()
    assert stats.chi2.sf(stat, df=2 * K * (B - 2)) > 1e-3, stat
    place = ((q - 1) % AES).ravel() // (AES // 10)
    seen = np.bincount(place, minlength=10)
    assert stats.chisquare(seen).pvalue > 1e-3, seen
    # the control: moved, not redrawn (the entering level is a fresh draw; the rest is not)
    q0, _ = _after_one_move(1.0, 0.0, 2_000)
    b0 = np.where(q0 <= 0, 0, np.minimum(-(-q0 // AES), B - 1))
    assert not _redrawn(q0).any()
    assert chi2_buckets(np.repeat(b0, 10, axis=0)) > 1e3


@pytest.mark.parametrize("reinit", [0.3, 0.75])
def test_reinit_prob_is_the_share_of_moves_that_redraw_the_book(reinit):
    """The share of books redrawn is θ_reinit within 4 standard errors (binomial, n =
    20,000: ± 0.013 at most); with θ = 0 nothing moves and nothing is redrawn."""
    n = 20_000
    q, r = _after_one_move(1.0, reinit, n)
    share = _redrawn(q).mean()
    assert abs(share - reinit) < 4 * np.sqrt(reinit * (1 - reinit) / n), share
    q, r = _after_one_move(0.0, 1.0, 500)  # the spread is then 2 levels: no re-centring
    assert (r == R0).all()
    assert (q[:, 1, 0] == 0).all() and (q[:, 1, 1:] == ASK_LADDER[1:]).all()
    assert (q[:, 0] == BID_LADDER).all()


@pytest.mark.parametrize("reinit", [0.0, 1.0])
def test_a_wide_spread_book_is_redrawn_when_emptying_its_best_recentres_it(reinit):
    """θ = 0, a small-tick book: bid from level 1, ask from level 2. Buying out the best ask
    leaves the ask two levels further from p_ref than the bid, so p_ref re-centres one tick
    up: a price move set off by the emptied best queue, redrawn with θ_reinit = 1."""
    n = 200
    bid = BID_LADDER.copy()
    bid[0] = 0
    ask = ASK_LADDER.copy()
    ask[:2] = 0
    ask[2] = 100
    market = _config(0.0, reinit).build(n, 1)
    market.reset(np.random.default_rng(2))
    for i in range(n):
        market.load_book(i, R0, bid, ask)
    orders = ChildOrderBatch.market_orders(n)
    orders.qty[:] = 100
    market.execute(orders, np.ones(n, dtype=bool))
    assert (market._ints[:, kern.I_R] == R0 + 1).all()
    kept = (market._q[:, 0, 1:] == bid[:-1]).all(axis=1) & (market._q[:, 1, 2:8] ==
                                                            ask[3:9]).all(axis=1)
    assert kept.all() if reinit == 0.0 else not kept.any()


def test_the_redraw_is_the_same_for_the_same_book_whatever_the_batch():
    """Common random numbers: book i's redraw depends on its key and the event, not on the
    other books (a batch of 7 and the first 3 of it alone agree)."""
    a, _ = _after_one_move(1.0, 1.0, 7, seed=9)
    b, _ = _after_one_move(1.0, 1.0, 3, seed=9)
    assert np.array_equal(a[:3], b)
    assert not np.array_equal(a[0], a[1])


def test_reinit_zero_is_model_two_bit_for_bit():
    """θ_reinit = 0 (the default) runs the same flow as before it existed: the same tape and
    book as a configuration that never names it, over a busy calm book."""
    runs = []
    for extra in ({}, {"reinit_prob": 0.0}, {"reinit_prob": 0.5}):
        config = LOBMarketConfig(horizon_s=100.0, theta=0.8, **extra)
        market = config.build(16, 1)
        market.reset(np.random.default_rng(3))
        for _ in range(config.n_steps):
            market.execute(ChildOrderBatch.market_orders(16), np.ones(16, dtype=bool))
        runs.append((market._q.copy(), market.mid.copy()))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[2][0])
