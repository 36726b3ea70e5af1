"""Calibration estimators against message sequences whose statistics and intensities are known.

Each estimator is checked twice where it can be: on a tiny hand-built sequence whose answer is
worked out by hand (exact), and on a long synthetic sequence drawn from a model with known
parameters (within a few standard errors of the truth).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from execrl.calibrate.hawkes import fit_hawkes, simulate_hawkes
from execrl.calibrate.queue_reactive import (
    bucket_of,
    estimate_queue_reactive,
    frame_queues,
    pooled_rates,
    size_distribution,
)
from execrl.calibrate.stats import (
    acf,
    depth_profile,
    return_autocorrelation,
    spread_distribution,
    trade_sizes,
    volatility_signature,
)
from execrl.calibrate.tape import (
    KIND_CANCEL,
    KIND_LIMIT,
    KIND_MARKET,
    KIND_OTHER,
    market_orders,
    tape_from_arrays,
    tape_from_lobster,
)
from execrl.data.synthetic import build_day, synthetic_lobster
from execrl.domain import DataError
from lobster_data import goog

GOOG = goog(10)
C = 100  # one cent in LOBSTER price units
P = 1_000_000  # $100.00


# --------------------------------------------------------------------------- tape


def test_market_orders_merge_executions_of_one_time_stamp_and_side() -> None:
    # a buy market order of 150 shares takes two sell orders at one nanosecond; then a sell
    # market order of 30 takes part of a buy order, and a hidden execution follows
    resting = [(1, -1, P + C, 100), (2, -1, P + 2 * C, 100), (3, 1, P, 100)]
    msgs = [
        (10.0, 4, 1, 100, P + C, -1),
        (10.0, 4, 2, 50, P + 2 * C, -1),
        (11.0, 4, 3, 30, P, 1),
        (12.0, 5, 0, 20, P + C, 1),
        (13.0, 1, 9, 100, P + C, -1),
    ]
    day = build_day(msgs, levels=2, resting=resting)
    mo = market_orders(day)
    assert mo["t"].tolist() == [10.0, 11.0, 12.0]
    assert mo["size"].tolist() == [150, 30, 20]
    assert mo["visible_size"].tolist() == [150, 30, 0]
    assert mo["aggressor"].tolist() == [1, -1, -1]
    assert mo["hidden"].tolist() == [False, False, True]
    tape = tape_from_lobster(day)
    # one event per market order (its last row), the hidden one is "other"
    assert tape.t.tolist() == [10.0, 11.0, 12.0, 13.0]
    assert tape.kind.tolist() == [KIND_MARKET, KIND_MARKET, KIND_OTHER, KIND_LIMIT]
    assert tape.ask_qty[0].tolist() == [50, 0]  # after the whole first market order


def _static_tape(spreads_cents, durations, qty=None, levels=1):
    """A tape whose best quotes around $100 give ``spreads_cents`` for ``durations``."""
    t = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    n = len(t)
    sp = np.asarray(spreads_cents, float) / 100
    bid = np.full((n, levels), 100.0) - np.arange(levels) * 0.01
    ask = (100.0 + sp)[:, None] + np.arange(levels) * 0.01
    q = np.full((n, levels), 100) if qty is None else np.asarray(qty)
    return tape_from_arrays(t, np.zeros(n, np.int8), bid, q, ask, q, [], [], [],
                            start_s=0.0, end_s=float(np.sum(durations)), tick=0.01)


def test_spread_distribution_is_time_weighted() -> None:
    tape = _static_tape([1, 3, 1, 2], [1.0, 3.0, 4.0, 2.0])
    s = spread_distribution(tape)
    assert s["values"] == [1, 2, 3]
    np.testing.assert_allclose(s["time_share"], [0.5, 0.2, 0.3])
    assert s["mean"] == pytest.approx((1 * 5 + 2 * 2 + 3 * 3) / 10)
    # time shares: 1 c half the time, 2 c a fifth (cumulative 0.7), 3 c the rest
    assert s["p50"] == 1 and s["p75"] == 3 and s["p95"] == 3 and s["p5"] == 1


def test_depth_profile_bins_by_distance_and_counts_only_what_the_file_shows() -> None:
    # bid levels at 100.00, 99.98, 99.93 (2 and 7 cents behind); asks at 100.05, 100.06
    t = np.array([0.0, 1.0])
    bid_px = np.array([[100.0, 99.98, 99.93], [100.0, 99.98, np.nan]])
    bid_q = np.array([[10, 20, 30], [10, 20, 0]])
    ask_px = np.array([[100.05, 100.06, 100.20], [100.05, 100.06, 100.20]])
    ask_q = np.array([[5, 6, 7], [5, 6, 7]])
    # as a 3-level file shows it: a side with all three levels occupied may hold more beyond
    tape = tape_from_arrays(t, np.zeros(2, np.int8), bid_px, bid_q, ask_px, ask_q, [], [],
                            [], start_s=0.0, end_s=4.0, tick=0.01,
                            bid_seen_to=np.array([99.93, -np.inf]),
                            ask_seen_to=np.array([100.20, 100.20]))
    d = depth_profile(tape, bin_cents=5, n_bins=4)
    # row 0 stands 1 s, row 1 3 s; per level: time-weighted sizes
    np.testing.assert_allclose(d["bid_by_level"], [10, 20, 30 * 0.25])
    # bin 0 (0-4 c behind): 30 shares both rows; bin 1 (5-9 c): 30 in row 0, 0 in row 1
    # (row 1 shows two of its three levels: the book ends there, so every bin is seen);
    # row 0's deepest level is 7 c behind: bin 1 (5-9 c) is not seen whole in row 0
    assert d["bid_by_distance"][0] == pytest.approx(30.0)
    assert d["bid_by_distance"][1] == pytest.approx(0.0)  # only row 1 sees bin 1
    np.testing.assert_allclose(d["bid_distance_seen_share"], [1.0, 0.75, 0.75, 0.75])
    # asks: the third level (15 c behind) is occupied in both rows: bins up to 15 c are seen,
    # bin 3 (15-19 c) is not
    np.testing.assert_allclose(d["ask_by_distance"][:3], [11.0, 0.0, 0.0])
    assert math.isnan(d["ask_by_distance"][3])


def test_acf_of_a_known_sequence() -> None:
    x = np.array([1.0, -1.0] * 50)
    a = acf(x, 3)
    assert a[0] == pytest.approx(-99 / 100)
    assert a[1] == pytest.approx(98 / 100)
    rng = np.random.default_rng(0)
    white = rng.normal(size=20_000)
    assert max(abs(v) for v in acf(white, 5)) < 4 / math.sqrt(white.size)
    # an AR(1) with coefficient 0.6 has lag-k autocorrelation 0.6^k
    e = rng.normal(size=50_000)
    ar = np.empty_like(e)
    ar[0] = e[0]
    for i in range(1, e.size):
        ar[i] = 0.6 * ar[i - 1] + e[i]
    np.testing.assert_allclose(acf(ar, 3), [0.6, 0.36, 0.216], atol=0.02)


def _mid_tape(mid: np.ndarray, dt: float) -> object:
    n = mid.size
    t = np.arange(n) * dt
    bid = (mid - 0.005)[:, None]
    ask = (mid + 0.005)[:, None]
    q = np.full((n, 1), 100)
    return tape_from_arrays(t, np.zeros(n, np.int8), bid, q, ask, q, [], [], [],
                            start_s=0.0, end_s=float(n * dt), tick=0.01)


def test_volatility_signature_flat_for_a_random_walk_and_falling_with_noise() -> None:
    rng = np.random.default_rng(1)
    dt, n = 0.5, 46_800  # 6.5 hours at 0.5 s
    sigma = 0.02  # daily volatility of the log mid
    steps = sigma * math.sqrt(dt / 23_400) * rng.normal(size=n)
    log_mid = math.log(100.0) + np.cumsum(steps)
    tape = _mid_tape(np.exp(log_mid), dt)
    sig = volatility_signature(tape, intervals=(1, 10, 60, 300))
    np.testing.assert_allclose(sig["daily_vol"], sigma, rtol=0.08)
    # i.i.d. noise of std eta on the observed log mid adds 2·eta²/Δ per second
    eta = 2e-4
    noisy = _mid_tape(np.exp(log_mid + eta * rng.normal(size=n)), dt)
    sig = volatility_signature(noisy, intervals=(1, 10, 300))
    expected = [math.sqrt(sigma**2 + 2 * eta**2 / d * 23_400) for d in (1, 10, 300)]
    np.testing.assert_allclose(sig["daily_vol"], expected, rtol=0.08)
    assert sig["daily_vol"][0] > 1.5 * sig["daily_vol"][-1]
    # a bouncing mid: event-time returns alternate, so lag 1 is strongly negative
    bounce = _mid_tape(100.0 + 0.01 * (np.arange(2000) % 2), 1.0)
    ac = return_autocorrelation(bounce, lags=2, clock_s=(1.0,))
    assert ac["event_time"][0] == pytest.approx(-1.0, abs=1e-3)


def test_trade_sizes_leave_out_hidden_only_orders() -> None:
    resting = [(1, -1, P + C, 100), (3, 1, P, 500)]
    msgs = [(10.0, 4, 1, 60, P + C, -1), (11.0, 5, 0, 20, P + C, 1), (12.0, 4, 3, 300, P, 1),
            (12.0, 5, 0, 50, P, 1)]
    tape = tape_from_lobster(build_day(msgs, levels=1, resting=resting))
    ts = trade_sizes(tape)
    assert ts["count"] == 2 and ts["volume"] == 360  # the 300 + 50 order's visible part
    assert ts["p50"] == 60
    assert trade_sizes(tape, visible_only=False)["volume"] == 430


# --------------------------------------------------------------------------- frame


def test_frame_aggregates_cents_into_levels_bids_floored_asks_ceiled() -> None:
    # 5-cent levels: bids at 100.00, 99.99, 99.97, 99.94 -> indices 2000, 1999, 1999, 1998;
    # asks at 100.21, 100.25, 100.26 -> ceil: 2005, 2005, 2006.
    resting = [(1, 1, P, 10), (2, 1, P - C, 20), (3, 1, P - 3 * C, 30), (4, 1, P - 6 * C, 40),
               (5, -1, P + 21 * C, 1), (6, -1, P + 25 * C, 2), (7, -1, P + 26 * C, 3)]
    day = build_day([(1.0, 1, 8, 5, P - 6 * C, 1)], levels=4, resting=resting)
    fr = frame_queues(day.book, ticks_per_level=5, n_levels=10)
    # best bid index 2000, best ask 2005: spread 5 levels (odd) -> r = 2002, the mid
    assert fr.r[0] == 2002
    assert fr.best[0].tolist() == [2, 2]  # two empty levels on each side of p_ref
    q = fr.queues[0]
    assert q[0, :5].tolist() == [0, 0, 10, 50, 45]  # 99.94 has 40 + 5 after the message
    assert q[1, :5].tolist() == [0, 0, 3, 3, 0]
    # bids: the file shows 4 levels; its deepest (99.94) lies in index 1998 = level 4, whose
    # bin 99.90-99.94 reaches below it: levels 0-3 seen, 4 not
    assert fr.seen[0, 0].tolist() == [True] * 4 + [False] * 6
    # asks: 3 levels of 4 shown -> the book ends: every level seen
    assert fr.seen[0, 1].all()


def test_frame_keeps_the_previous_reference_on_an_even_spread() -> None:
    resting = [(1, 1, P, 100), (4, 1, P - C, 100), (2, -1, P + C, 100), (3, -1, P + 2 * C, 100)]
    msgs = [(1.0, 1, 5, 100, P - 2 * C, 1),  # spread 1: r = 10 000 (p_ref = the mid)
            (2.0, 3, 1, 100, P, 1),  # best bid deleted: spread 2, r kept (on its own, the
            # tie between 9 999 and 10 000 would go to 9 999)
            (3.0, 3, 2, 100, P + C, -1)]  # best ask deleted too: spread 3, r the mid again
    day = build_day(msgs, levels=3, resting=resting)
    fr = frame_queues(day.book, 1, 10)
    assert fr.r.tolist() == [10_000, 10_000, 10_000]
    assert fr.best.tolist() == [[0, 0], [1, 0], [1, 1]]
    alone = build_day(msgs[1:2], levels=3, resting=resting)
    assert frame_queues(alone.book, 1, 10).r.tolist() == [9_999]


# --------------------------------------------------------------------------- queue-reactive


def test_queue_reactive_counts_and_times_by_hand() -> None:
    """Best bid 100.00 (100 shares), best ask 100.01 (200), deeper levels at ±2 c; aes 100.

    t=0   limit bid 100 @100.00  (bid level 0 in bucket 1)   -> bid q0 = 200
    t=2   cancel ask 100 @100.01 (ask level 0 in bucket 2)   -> ask q0 = 100
    t=3   market buy 100 @100.01 (ask best level 0, bucket 1) -> ask level 0 empty
    t=7   limit ask 100 @100.01  (ask level 0 in bucket 0)
    end at t=10. Rows stand: [0,2) [2,3) [3,7) [7,10).
    """
    resting = [(1, 1, P, 100), (2, -1, P + C, 100), (3, -1, P + C, 100),
               (4, 1, P - C, 300), (5, -1, P + 2 * C, 300)]
    msgs = [(0.0, 1, 10, 100, P, 1), (2.0, 3, 2, 100, P + C, -1),
            (3.0, 4, 3, 100, P + C, -1), (7.0, 1, 11, 100, P + C, -1)]
    day = dataclasses.replace(build_day(msgs, levels=2, resting=resting), end_s=10.0)
    fit = estimate_queue_reactive(day, ticks_per_level=1, n_levels=10, n_buckets=4,
                                  min_time_s=0.0, aes=100)
    # time per (level, bucket), both sides: level 0 bid: bucket 2 for 10 s (200 shares from
    # t=0; the first event's own row counts from its time); level 0 ask: bucket 2 for [0,2),
    # bucket 1 for [2,3), bucket 0 for [3,7), bucket 1 for [7,10)
    np.testing.assert_allclose(fit.time_level[0], [4.0, 4.0, 12.0, 0.0])
    # level 1 on both sides: 300 shares = bucket 3 for 10 s each
    np.testing.assert_allclose(fit.time_level[1], [0.0, 0.0, 0.0, 20.0])
    # the first message has no book before it and is not counted; the others:
    assert fit.counts_cancel[0].tolist() == [0, 0, 1, 0]
    assert fit.counts_market[0].tolist() == [0, 1, 0, 0]
    assert fit.counts_limit[0].tolist() == [1, 0, 0, 0]
    assert fit.cancel_rate[0, 2] == pytest.approx(1 / 12.0)
    assert fit.limit_rate[0, 0] == pytest.approx(1 / 4.0)
    # market orders: time the side's best was level 0 in bucket b: bid best level 0 bucket 2
    # all 10 s, ask best level 0 bucket 2 [0,2), 1 [2,3)+[7,10); ask best level 1 in [3,7)
    np.testing.assert_allclose(fit.time_best[0], [0.0, 4.0, 12.0, 0.0])
    np.testing.assert_allclose(fit.time_best[1], [0.0, 0.0, 0.0, 4.0])
    assert fit.market_rate[0, 1] == pytest.approx(1 / 4.0)
    np.testing.assert_allclose(fit.init_queue[0], [0.2, 0.2, 0.6, 0.0])


def _queue_reactive_day(limit, cancel, market, n_events, seed):
    """Messages of a two-sided queue-reactive book with known rates (per side, by bucket b =
    number of 100-share orders at the best, capped at len - 1): bid level 0 at 100.00, ask
    level 0 at 100.01, static deep orders at level 1 (never touched) so the frame stays put
    when a best queue empties. Market orders only hit a non-empty level 0."""
    rng = np.random.default_rng(seed)
    B = len(limit)
    resting = [(1, 1, P - C, 10_000), (2, -1, P + 2 * C, 10_000)]
    queues = {1: [], -1: []}  # direction -> order ids at level 0 (FIFO)
    price = {1: P, -1: P + C}
    msgs = []
    t = 0.0
    oid = 10
    for d in (1, -1):  # start with two orders each
        for _ in range(2):
            resting.append((oid, d, price[d], 100))
            queues[d].append(oid)
            oid += 1
    while len(msgs) < n_events:
        rates = []
        for d in (1, -1):
            b = min(len(queues[d]), B - 1)
            rates += [limit[b], cancel[b] if queues[d] else 0.0,
                      market[b] if queues[d] else 0.0]
        total = sum(rates)
        t += rng.exponential(1.0 / total)
        k = rng.choice(6, p=np.asarray(rates) / total)
        d = 1 if k < 3 else -1
        what = k % 3
        if what == 0:
            msgs.append((t, 1, oid, 100, price[d], d))
            queues[d].append(oid)
            oid += 1
        elif what == 1:
            victim = queues[d].pop(rng.integers(len(queues[d])))
            msgs.append((t, 3, victim, 100, price[d], d))
        else:
            victim = queues[d].pop(0)
            msgs.append((t, 4, victim, 100, price[d], d))
    return build_day(msgs, levels=2, resting=resting)


def test_queue_reactive_recovers_known_intensities() -> None:
    limit = [1.2, 0.8, 0.7, 0.6, 0.5, 0.5]
    cancel = [0.0, 0.2, 0.35, 0.5, 0.6, 0.7]
    market = [0.0, 0.5, 0.4, 0.3, 0.25, 0.2]
    day = _queue_reactive_day(limit, cancel, market, n_events=30_000, seed=3)
    fit = estimate_queue_reactive(day, ticks_per_level=1, n_levels=10, n_buckets=6,
                                  min_time_s=0.0)
    assert fit.aes == 100
    checked = 0
    for table, truth, time in (
        (fit.limit_rate, limit, fit.time_level),
        (fit.cancel_rate, cancel, fit.time_level),
        (fit.market_rate, market, fit.time_best),
    ):
        for b, lam in enumerate(truth):
            if time[0, b] < 200 or lam == 0:
                continue
            se = math.sqrt(lam / time[0, b])  # Poisson count over the time spent
            assert abs(table[0, b] - lam) < 4 * se, (b, table[0, b], lam, se)
            checked += 1
    assert checked >= 12
    assert fit.cancel_rate[0, 0] == 0 and fit.market_rate[0, 0] == 0
    # level 1 holds the static deep orders: nothing happens there
    assert fit.counts_limit[1].sum() == 0 and fit.limit_rate[1].max() == 0
    # the market orders hit level 0 only when it is not empty
    assert fit.counts_market[1:].sum() == 0
    # the initial-queue law is the time share of each bucket at level 0
    np.testing.assert_allclose(fit.init_queue[0], fit.time_level[0] / fit.time_level[0].sum())


def test_pooled_rates_pool_thin_cells_and_copy_unseen_levels() -> None:
    counts = np.array([[4, 10, 1, 0], [0, 6, 2, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    time = np.array([[20.0, 50.0, 5.0, 3.0], [0.0, 60.0, 30.0, 30.0], [0.0, 1.0, 2.0, 0.0],
                     [0.0, 0.0, 0.0, 0.0]])
    rate, filled = pooled_rates(counts, time, min_time_s=25.0, first_bucket=1)
    assert rate[:, 0].tolist() == [0, 0, 0, 0]  # below first_bucket
    assert rate[0, 1] == pytest.approx(10 / 50)  # enough time: its own cell
    # bucket 2 (5 s) pools buckets 1-3 (58 s); bucket 3 (3 s) pools 2-3 (8 s), then 1-3
    assert rate[0, 2] == pytest.approx(11 / 58) and rate[0, 3] == pytest.approx(11 / 58)
    assert filled[0].tolist() == [False, False, True, True]
    assert rate[1, 2] == pytest.approx(2 / 30)
    # levels 2 (3 s in all) and 3 (never seen) take level 1's row, the deepest good one
    np.testing.assert_array_equal(rate[2], rate[1])
    np.testing.assert_array_equal(rate[3], rate[1])
    assert filled[2, 1:].all() and filled[3, 1:].all()


def test_bucket_of_matches_the_simulator_rule() -> None:
    q = np.array([0, 1, 99, 100, 101, 200, 10_000])
    assert bucket_of(q, 100, 4).tolist() == [0, 1, 1, 1, 2, 2, 3]


def test_size_distribution_keeps_atoms_and_mean() -> None:
    rng = np.random.default_rng(5)
    sizes = np.concatenate([np.full(5000, 100), rng.integers(1, 1000, 5000)])
    d = size_distribution(sizes, max_values=32)
    assert len(d["values"]) <= 33
    assert 100 in d["values"]
    assert sum(d["probs"]) == pytest.approx(1.0, abs=1e-9)
    assert np.all(np.diff(d["values"]) > 0)
    mean = float(np.dot(d["values"], d["probs"]))
    assert mean == pytest.approx(sizes.mean(), rel=0.01)
    small = size_distribution(np.array([100, 100, 200, 50]))
    assert small == {"values": [50, 100, 200], "probs": [0.25, 0.5, 0.25]}
    with pytest.raises(DataError):
        size_distribution(np.array([0, 0]))


# --------------------------------------------------------------------------- Hawkes


def test_hawkes_fit_recovers_known_parameters() -> None:
    truth = {"mu": (0.2, 0.3), "alpha_self": 0.6, "alpha_cross": 0.15, "beta": 1.5}
    t, s = simulate_hawkes(truth["mu"], truth["alpha_self"], truth["alpha_cross"],
                           truth["beta"], 15_000.0, seed=11)
    fit = fit_hawkes(t, s, 0.0, 15_000.0)
    got = {"mu_buy": fit.mu[0], "mu_sell": fit.mu[1], "alpha_self": fit.alpha_self,
           "alpha_cross": fit.alpha_cross, "beta": fit.beta}
    want = {"mu_buy": 0.2, "mu_sell": 0.3, "alpha_self": 0.6, "alpha_cross": 0.15,
            "beta": 1.5}
    for name, value in want.items():
        assert abs(got[name] - value) < 4 * fit.stderr[name], (name, got[name], value)
        assert fit.stderr[name] < 0.15 * value  # the standard errors are informative
    assert fit.branching_ratio == pytest.approx(0.5, abs=0.05)
    # the time-rescaled gaps are Exp(1) under the fitted model, far from it under Poisson
    assert fit.ks_hawkes < 0.02 < fit.ks_poisson
    assert fit.lr_statistic > 100


def test_hawkes_fit_on_poisson_times_finds_little_excitation() -> None:
    rng = np.random.default_rng(2)
    t = np.sort(rng.uniform(0, 20_000, 8000))
    s = np.where(rng.random(8000) < 0.5, 1, -1)
    fit = fit_hawkes(t, s, 0.0, 20_000.0)
    assert fit.branching_ratio < 0.05
    assert fit.mu[0] + fit.mu[1] == pytest.approx(0.4, rel=0.05)


def test_hawkes_fit_refuses_too_few_or_bad_events() -> None:
    with pytest.raises(DataError, match="too few"):
        fit_hawkes(np.array([1.0, 2.0]), np.array([1, -1]), 0.0, 10.0)
    with pytest.raises(DataError, match="sides"):
        fit_hawkes(np.arange(20.0), np.zeros(20), 0.0, 30.0)


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not GOOG.exists(), reason=f"LOBSTER sample {GOOG} not present")
def test_goog_statistics_are_those_of_the_file() -> None:
    from execrl.data.lobster import read_lobster

    day = read_lobster(GOOG)
    tape = tape_from_lobster(day)
    mo = tape.market_orders
    # executions and hidden executions all belong to some market order
    assert mo["size"].sum() == day.trades()["size"].sum()
    assert tape.n_events == day.n_rows - (np.isin(day.messages["type"], (4, 5)).sum()
                                          - mo.size)
    s = spread_distribution(tape)
    assert 20 <= s["p50"] <= 35  # GOOG's quoted spread that day: tens of cents
    assert np.sum(tape.kind == KIND_CANCEL) == np.isin(day.messages["type"], (2, 3)).sum()


def test_synthetic_day_calibrates_end_to_end() -> None:
    day = synthetic_lobster(n_messages=4000, levels=5, seed=0)
    fit = estimate_queue_reactive(day, ticks_per_level=1, n_levels=10, min_time_s=5.0)
    assert fit.summary["limit_events_used"] > 500
    assert np.all(np.isfinite(fit.limit_rate))
    assert np.allclose(fit.init_queue.sum(axis=1), 1.0)


def test_power_law_fit_recovers_a_square_root_and_a_line() -> None:
    from execrl.calibrate.simulate import power_law_fit

    x = [0.001, 0.002, 0.005, 0.01, 0.02, 0.04]
    sqrt = power_law_fit(x, [0.8 * v**0.5 for v in x], [0.01 * 0.8 * v**0.5 for v in x])
    assert sqrt is not None
    assert sqrt["exponent"] == pytest.approx(0.5, abs=1e-9)
    assert sqrt["prefactor"] == pytest.approx(0.8)
    assert sqrt["concave"]
    line = power_law_fit(x, [3.0 * v for v in x], [0.05 * 3.0 * v for v in x])
    assert line is not None and line["exponent"] == pytest.approx(1.0) and not line["concave"]
    # a noisy point with a huge error bar barely moves the weighted fit
    noisy = power_law_fit([*x, 0.0005], [*(0.8 * v**0.5 for v in x), 0.5],
                          [*(0.01 * 0.8 * v**0.5 for v in x), 10.0])
    assert noisy is not None and noisy["exponent"] == pytest.approx(0.5, abs=0.01)
    assert power_law_fit([0.1, 0.2], [1.0, 2.0], [0.1, 0.1]) is None
