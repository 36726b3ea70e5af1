"""The stochastic limit order book (``execrl.sim.lob``): hand-built books for the agent's
orders (FIFO queue, walking the book, conservative fills, time to live, rejects), the compiled
kernels against the plain-Python reference, common random numbers, and light stylised facts.

The conformance suite (tests/test_market_conformance.py) runs the book too.
"""

from __future__ import annotations

import numpy as np
import pytest

from execrl.domain import ConfigError, OrderType
from execrl.sim import lob_kernels as kern
from execrl.sim.base import (
    ORDER_TYPE_CODES,
    REJECT_NO_PRICE,
    REJECT_OFF_TICK,
    REJECT_ORDER_TYPE,
    REJECT_OUTSIDE_BOOK,
    REJECT_WORKING,
    ChildOrderBatch,
    reject_reason,
)
from execrl.sim.lob import LOBMarket, estimate_book
from execrl.sim.lob_config import HawkesConfig, LOBMarketConfig, ShockConfig
from execrl.sim.lob_reference import ReferenceBook
from execrl.sim.spec import parse_market

K = 10
B = 11
MARKET, LIMIT, MARKETABLE, IOC = (ORDER_TYPE_CODES[t] for t in (
    OrderType.MARKET, OrderType.LIMIT, OrderType.MARKETABLE_LIMIT, OrderType.IOC))
R0 = 2500  # bid level 0 at 25.00, ask level 0 at 25.01


def _table(value: float, empty: float = 0.0) -> list[list[float]]:
    return [[empty] + [value] * (B - 1) for _ in range(K)]


def only_market_orders(rate: float = 1.0, **fields) -> LOBMarketConfig:
    """Nothing happens but market orders of exactly 100 shares on both sides (no limit
    orders, no cancels, p_ref moves only to stay at the mid)."""
    return LOBMarketConfig(
        limit_rate=_table(0.0), cancel_rate=_table(0.0), market_rate=_table(rate),
        market_size={"values": [100], "probs": [1.0]}, theta=0.0, warmup_s=0.0,
        resilience=0.0, **fields,
    )


def quiet(**fields) -> LOBMarketConfig:
    """A book where (almost) nothing happens by itself over a step."""
    return only_market_orders(rate=1e-9, **fields)


def _market(config: LOBMarketConfig, n: int = 1, side: int = 1) -> LOBMarket:
    market = config.build(n, side)
    market.reset(np.random.default_rng(0))
    return market


def _orders(n: int, qty, kind, px=np.nan, ttl=0, cancel=False, child=1) -> ChildOrderBatch:
    o = ChildOrderBatch.market_orders(n)
    o.qty[:] = qty
    o.order_type[:] = kind
    o.limit_px[:] = px
    o.ttl_steps[:] = ttl
    o.cancel[:] = cancel
    o.child_id[:] = child
    return o


def _none(n: int) -> ChildOrderBatch:
    return ChildOrderBatch.market_orders(n)


ACTIVE1 = np.ones(1, dtype=bool)
LADDER = np.array([100, 200, 300, 400, 500, 600, 700, 800, 900, 1000])


# -- walking the book -------------------------------------------------------------------------
@pytest.mark.parametrize("side", [1, -1])
def test_a_large_market_order_walks_the_book_and_pays_each_level(side):
    market = _market(quiet(taker_fee=0.003), side=side)
    market.load_book(0, R0, LADDER, LADDER)
    fills = market.execute(_orders(1, 500, MARKET), ACTIVE1, record_events=True)
    # 100 at the touch, 200 one tick out, 200 of the 300 two ticks out
    px = [25.01, 25.02, 25.03] if side > 0 else [25.00, 24.99, 24.98]
    vwap = (100 * px[0] + 200 * px[1] + 200 * px[2]) / 500
    assert fills.qty[0] == 500 and fills.n_fills[0] == 3 and fills.passive_qty[0] == 0
    assert fills.avg_px[0] == pytest.approx(vwap, rel=1e-13)
    assert fills.fees[0] == pytest.approx(0.003 * 500)
    assert fills.events["qty"].tolist() == [100, 200, 200]
    np.testing.assert_allclose(fills.events["px"], px, rtol=1e-13)
    assert not fills.events["passive"].any()
    # what is left of the third level is the new touch (prices kept when p_ref moved)
    touch = "best_ask" if side > 0 else "best_bid"
    assert market.feature(touch)[0] == pytest.approx(px[2])
    assert market.feature("opposite_touch_qty")[0] == 100
    assert fills.working_qty[0] == 0


def test_an_ioc_order_stops_at_its_limit_and_drops_the_rest():
    market = _market(quiet())
    market.load_book(0, R0, LADDER, LADDER)
    fills = market.execute(_orders(1, 500, IOC, px=25.02), ACTIVE1)
    assert fills.qty[0] == 300 and fills.working_qty[0] == 0 and fills.cancelled_qty[0] == 0
    assert fills.avg_px[0] == pytest.approx((100 * 25.01 + 200 * 25.02) / 300)
    assert market.feature("best_ask")[0] == pytest.approx(25.03)


def test_a_marketable_limit_rests_what_it_could_not_take_at_its_price():
    market = _market(quiet())
    market.load_book(0, R0, LADDER, LADDER)
    fills = market.execute(_orders(1, 500, MARKETABLE, px=25.02, ttl=5), ACTIVE1)
    assert fills.qty[0] == 300 and fills.working_qty[0] == 200
    # it now is the best bid, alone at the front of its queue
    assert market.feature("best_bid")[0] == pytest.approx(25.02)
    assert market.feature("queue_ahead")[0] == 0
    assert market.feature("queue_depth_at_price")[0] == 200
    assert market.feature("best_ask")[0] == pytest.approx(25.03)


def test_a_market_order_beyond_the_window_takes_the_window_and_no_more():
    market = _market(quiet())
    market.load_book(0, R0, LADDER, LADDER)
    fills = market.execute(_orders(1, 10**6, MARKET), ACTIVE1)
    assert fills.qty[0] == LADDER.sum() and fills.n_fills[0] == K


# -- the FIFO queue -----------------------------------------------------------------------------
def test_a_resting_order_fills_only_after_the_volume_ahead_of_it_has_traded():
    """Market orders of 100 only: the 500 shares ahead of us go first, then ours (300), FIFO;
    the tape and our fills agree trade by trade."""
    market = _market(only_market_orders(rate=0.5, horizon_s=100.0))
    market.load_book(0, R0, np.r_[500, np.full(K - 1, 1000)], np.full(K, 5000))
    fills = [market.execute(_orders(1, 300, LIMIT, px=25.00, ttl=100), ACTIVE1,
                            record_events=True)]
    tape = [market._tr[: market._n_tr[0]].copy()]
    for _ in range(9):
        fills.append(market.execute(_none(1), ACTIVE1, record_events=True))
        tape.append(market._tr[: market._n_tr[0]].copy())
    trades = np.concatenate(tape)
    ours = np.concatenate([f.events for f in fills])
    hits = trades[(trades["aggressor"] == -1) & np.isclose(trades["px"], 25.00)]
    assert hits.size >= 8  # enough sells came to reach and fill us
    traded = np.cumsum(hits["qty"])
    expected = np.clip(traded - 500, 0, 300)  # our cumulative fill after each hit
    got = np.array([ours["qty"][ours["t"] <= t].sum() for t in hits["t"]])
    assert np.array_equal(got, expected)
    assert ours["passive"].all() and np.allclose(ours["px"], 25.00)
    assert sum(int(f.qty[0]) for f in fills) == 300 and fills[-1].working_qty[0] == 0


def test_queue_position_only_improves_and_fills_wait_for_it_with_cancels_in_the_flow():
    """The calm book (cancels, limit orders, market orders): at every step end the volume
    ahead of a working order is no more than before less what traded at its price, and a
    fill happens only in a step that ends with nothing ahead."""
    n = 64
    market = LOBMarketConfig(horizon_s=300.0).build(n, 1)
    market.reset(np.random.default_rng(4))
    px = market.feature("best_bid")
    fills = market.execute(_orders(n, 200, LIMIT, px=px, ttl=1000), np.ones(n, bool))
    resting = fills.working_qty > 0
    ahead = market.feature("queue_ahead")
    checked = 0
    for _ in range(20):
        prev = ahead
        fills = market.execute(_none(n), np.ones(n, bool))
        tape = market._tr[: market._n_tr[0]]
        at_px = np.zeros(n)
        hit = (tape["aggressor"] == -1) & np.isclose(tape["px"], px[tape["env"]])
        np.add.at(at_px, tape["env"][hit], tape["qty"][hit])
        ahead = market.feature("queue_ahead")
        live = resting & (fills.working_qty + fills.qty > 0) & (fills.cancelled_qty == 0)
        assert (ahead[live] <= np.maximum(prev[live] - at_px[live], 0.0) + 1e-9).all()
        filled = live & (fills.qty > 0)
        assert (ahead[filled] == 0).all()
        assert (fills.qty[filled] <= at_px[filled]).all()
        checked += int(filled.sum())
        resting &= fills.working_qty > 0
    assert checked > 5


@pytest.mark.parametrize(("regime", "side", "reinit"), [
    ("calm", 1, 0.0), ("calm", -1, 0.0), ("crash", -1, 0.0), ("flash_crash", 1, 0.0),
    ("calm", 1, 0.8), ("stressed", -1, 1.0)])
def test_queues_stay_whole_whatever_the_agent_does(regime, side, reinit):
    """Random child orders of every type, cancels and partial resets: every queue stays >= 0
    and the volume ahead of a resting order within 0 .. the others' volume at its level (also
    when the book is redrawn after price moves, ``reinit``)."""
    from execrl.presets import preset_market

    config = preset_market(f"lob:{regime}").model_copy(update={"horizon_s": 200.0,
                                                              "reinit_prob": reinit})
    n = 64
    rng = np.random.default_rng(11)
    market = config.build(n, side)
    market.reset(np.random.default_rng(12))
    kinds = np.array([MARKET, LIMIT, MARKETABLE, IOC])
    own_side = kern.BID if side > 0 else kern.ASK
    for step in range(60):
        touch = market.feature("best_bid" if side > 0 else "best_ask")
        offset = rng.integers(-2, 4, n) * side * -1  # from 3 ticks inside to 2 through
        o = _orders(n, rng.integers(1, 600, n), kinds[rng.integers(0, 4, n)],
                    px=np.round(touch + offset * 0.01, 2), ttl=rng.integers(0, 6, n),
                    cancel=rng.random(n) < 0.2, child=step + 1)
        o.qty[rng.random(n) < 0.3] = 0
        market.execute(o, rng.random(n) < 0.9)
        if step % 7 == 6:
            market.reset(rng, np.flatnonzero(rng.random(n) < 0.25))
        q, ints = market._q, market._ints
        assert (q >= 0).all()
        working = ints[:, kern.I_OWN_QTY] > 0
        lvl = market._own_level()
        inside = working & (lvl >= 0) & (lvl < config.n_levels)
        assert (inside == working).all()
        rows = np.flatnonzero(working)
        ahead = ints[rows, kern.I_OWN_AHEAD]
        assert (ahead >= 0).all() and (ahead <= q[rows, own_side, lvl[rows]]).all()
        assert (market.feature("queue_ahead") >= 0).all()


def test_the_agents_shares_are_the_shares_the_others_traded_with_it():
    """Conservation: every fill is one side of a trade on the tape (same time, price; an
    aggressive fill is the whole trade, a passive one part of an opposite-side trade)."""
    n = 16
    market = LOBMarketConfig().build(n, -1)
    market.reset(np.random.default_rng(7))
    active = np.ones(n, bool)
    total = 0
    for step in range(12):
        if step % 3 == 0:
            o = _orders(n, 150, LIMIT, px=market.feature("best_ask"), ttl=2, cancel=True,
                        child=step + 1)
        else:
            o = _orders(n, 80, MARKET, child=step + 1)
        fills = market.execute(o, active, record_events=True)
        tape = market._tr[: market._n_tr[0]]
        ev = fills.events
        for e in ev:
            same = tape[(tape["env"] == e["env"]) & (tape["t"] == e["t"])
                        & np.isclose(tape["px"], e["px"], rtol=0, atol=1e-9)]
            if e["passive"]:
                assert (same["aggressor"] == 1).any() and same["qty"].max() >= e["qty"]
            else:
                assert ((same["aggressor"] == -1) & (same["qty"] == e["qty"])).any()
        total += int(ev["qty"].sum())
        assert np.array_equal(np.bincount(ev["env"], weights=ev["qty"], minlength=n),
                              fills.qty)
    assert total > 0


# -- conservative fills -------------------------------------------------------------------------
def test_conservative_fills_need_a_trade_through_the_price():
    n = 1
    normal = _market(only_market_orders(rate=2.0, horizon_s=60.0))
    strict = _market(only_market_orders(rate=2.0, horizon_s=60.0, conservative_fills=True))
    for name, market in (("normal", normal), ("conservative", strict)):
        market.load_book(0, R0, np.r_[300, np.full(K - 1, 300)], np.full(K, 5000))
        fills = [market.execute(_orders(n, 200, LIMIT, px=25.00, ttl=100), ACTIVE1,
                                record_events=True)]
        tape = [market._tr[: market._n_tr[0]].copy()]
        for _ in range(5):
            fills.append(market.execute(_none(n), ACTIVE1, record_events=True))
            tape.append(market._tr[: market._n_tr[0]].copy())
        ours = np.concatenate([f.events for f in fills])
        trades = np.concatenate(tape)
        assert ours.size > 0 and np.allclose(ours["px"], 25.00) and ours["passive"].all()
        hits = trades[(trades["aggressor"] == -1) & np.isclose(trades["px"], 25.00)]
        for e in ours:
            at = trades[trades["t"] == e["t"]]
            if name == "conservative":  # a seller-initiated print strictly below our bid
                assert ((at["aggressor"] == -1) & (at["px"] < 25.00 - 1e-9)).any()
            else:  # a seller-initiated print at our bid
                assert ((at["aggressor"] == -1) & np.isclose(at["px"], 25.00)).any()
            assert at["qty"].max() >= e["qty"]
        # normally our 200 trade at 25.00 behind the 300 ahead; the conservative order takes
        # nothing from the book: the level trades as if it were not there
        assert hits["qty"].sum() == (300 if name == "conservative" else 500)
        assert ours["qty"].sum() == 200


# -- time to live, cancels, rejects -----------------------------------------------------------
def test_a_resting_order_expires_after_its_time_to_live_and_a_cancel_takes_it_off():
    market = _market(quiet())
    market.load_book(0, R0, LADDER, LADDER)
    f = market.execute(_orders(1, 100, LIMIT, px=24.97, ttl=2), ACTIVE1)
    assert f.working_qty[0] == 100 and f.cancelled_qty[0] == 0
    f = market.execute(_none(1), ACTIVE1)  # the end of its second step: expired
    assert f.working_qty[0] == 0 and f.cancelled_qty[0] == 100 and f.qty[0] == 0
    f = market.execute(_orders(1, 100, LIMIT, px=24.97, ttl=1), ACTIVE1)
    assert f.working_qty[0] == 0 and f.cancelled_qty[0] == 100  # one step: gone at its end
    assert market.feature("working_qty")[0] == 0
    f = market.execute(_orders(1, 100, LIMIT, px=24.97, ttl=50), ACTIVE1)
    assert f.working_qty[0] == 100
    cancel = _none(1)
    cancel.cancel[:] = True
    f = market.execute(cancel, ACTIVE1)
    assert f.working_qty[0] == 0 and f.cancelled_qty[0] == 100


def test_the_book_refuses_by_name_per_environment_and_the_batch_goes_on():
    n = 7
    market = _market(quiet(), n=n)
    for e in range(n):
        market.load_book(e, R0, LADDER, LADDER)
    first = _orders(n, 100, LIMIT, px=24.99, ttl=5)
    assert (market.execute(first, np.ones(n, bool)).working_qty == 100).all()
    o = _orders(n, 100, LIMIT, px=24.98, ttl=5)
    o.limit_px[0] = np.nan
    o.limit_px[1] = 24.985
    o.cancel[3] = True
    o.limit_px[4] = 25.0 - 0.01 * K  # beyond the window's far end
    o.order_type[5] = 9
    o.order_type[6] = MARKET
    fills = market.execute(o, np.ones(n, bool))
    assert fills.reject.tolist() == [REJECT_NO_PRICE, REJECT_OFF_TICK, REJECT_WORKING,
                                     0, REJECT_OUTSIDE_BOOK, REJECT_ORDER_TYPE, 0]
    assert "no limit price" in reject_reason(fills.reject[0])
    assert "tick grid" in reject_reason(fills.reject[1])
    assert "already works" in reject_reason(fills.reject[2])
    assert "outside the simulated book" in reject_reason(fills.reject[4])
    assert "not supported" in reject_reason(fills.reject[5])
    # refused orders change nothing; the cancel-and-replace and the market order went through
    assert fills.working_qty.tolist() == [100, 100, 100, 100, 100, 100, 100]
    assert fills.cancelled_qty[3] == 100 and fills.qty[6] == 100
    assert fills.qty[:6].tolist() == [0] * 6


def test_a_bad_lob_configuration_is_refused_naming_the_field():
    for data, needle in [
        ({"model": "lob", "theta": 2}, "'theta' = 2"),
        ({"model": "lob", "n_levels": 5}, "'n_levels' = 5"),
        ({"model": "lob", "limit_rate": [[1.0, 2.0]]}, "limit_rate has 1 rows"),
        ({"model": "lob", "market_size": {"values": [1], "probs": [0.5]}}, "probs sum to 0.5"),
        ({"model": "lob", "hawkes": {"alpha_self": 3, "beta": 1, "max_rate": 5}},
         "branching ratio"),
        ({"model": "lob", "levels": 10}, "'levels' = 10"),
    ]:
        with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
            parse_market(data)


# -- the kernels against the plain-Python reference --------------------------------------------
@pytest.mark.parametrize("config", [
    LOBMarketConfig(horizon_s=100.0),
    LOBMarketConfig(horizon_s=100.0, theta=0.9,
                    hawkes=HawkesConfig(alpha_self=0.5, alpha_cross=0.1, beta=2.0, max_rate=3.0),
                    shock=ShockConfig(move=-0.02, start=0.2, duration=0.3, recovery=0.2)),
    LOBMarketConfig(horizon_s=100.0, theta=0.9, reinit_prob=0.6),
], ids=["calm", "hawkes_and_shock", "reinit"])
def test_the_compiled_flow_is_the_plain_python_models_event_for_event(config):
    n, horizon = 3, 100.0
    market = LOBMarket(config, n, 1)
    keys = np.array([11, 2**63 + 5, 12345678901234], dtype=np.uint64)
    kern.init_books(np.arange(n, dtype=np.intp), keys, market._r0, 0.0,
                    float(market._par[kern.P_LAMBDA]), market._init_cdf, float(config.aes),
                    market._q, market._ints, market._floats, market._keys)
    market._n_tr[0] = 0
    market._run_flow(np.ones(n, bool), np.full(n, horizon), in_order=False)
    tape = market._tr[: market._n_tr[0]]
    for i in range(n):
        ref = ReferenceBook(config, int(keys[i]), t0=0.0)
        ref.run(horizon)
        mine = tape[tape["env"] == i]
        assert len(ref.trades) == mine.size > 20
        assert mine["t"].tolist() == [t for t, _, _, _ in ref.trades]
        assert mine["qty"].tolist() == [q for _, _, q, _ in ref.trades]
        assert mine["aggressor"].tolist() == [a for _, _, _, a in ref.trades]
        np.testing.assert_allclose(mine["px"], [p * config.tick_size for _, p, _, _ in
                                                ref.trades], rtol=1e-14)
        assert market._q[i].tolist() == ref.q and market._ints[i, kern.I_R] == ref.r
        assert market._ints[i, kern.I_EVENTS] == ref.events
        assert market._ints[i, kern.I_CTR] == ref.ctr


# -- common random numbers ----------------------------------------------------------------------
def _twap_cost(config: LOBMarketConfig, per_step: int, seed: int, n: int) -> np.ndarray:
    """IS (bps) of buying ``per_step`` shares with a market order every step."""
    market = config.build(n, 1)
    market.reset(np.random.default_rng(seed))
    cost = np.zeros(n)
    filled = np.zeros(n)
    for k in range(config.n_steps):
        f = market.execute(_orders(n, per_step, MARKET, child=k + 1), np.ones(n, bool))
        cost += np.nan_to_num(f.avg_px) * f.qty
        filled += f.qty
    return (cost / filled - market.arrival_mid) / market.arrival_mid * 1e4


def test_paired_policies_differ_by_nothing_or_far_less_than_unpaired_ones():
    config = LOBMarketConfig(horizon_s=200.0)
    n = 256
    a = _twap_cost(config, 200, seed=1, n=n)
    assert np.array_equal(a, _twap_cost(config, 200, seed=1, n=n))  # the same policy: exactly
    # a nearby policy: child orders 1 % larger (measured: the paired spread is ~0.08 of the
    # unpaired one at 1 %, ~0.2 at 5 %, ~0.3 at 10 %: the books drift apart as they differ)
    b_paired = _twap_cost(config, 202, seed=1, n=n)
    b_unpaired = _twap_cost(config, 202, seed=2, n=n)
    paired, unpaired = np.std(b_paired - a), np.std(b_unpaired - a)
    assert 0 < paired < 0.2 * unpaired, (paired, unpaired)


@pytest.mark.parametrize("reinit", [0.0, 0.7])
def test_candidate_events_are_the_same_whatever_the_agent_does(reinit):
    """The thinning clock: the same candidates (times and uniforms) meet both policies, so a
    book the agent never touched is the same book event for event (redraws included)."""
    config = LOBMarketConfig(horizon_s=100.0, reinit_prob=reinit)
    n = 8
    runs = []
    for qty in (0, 300):
        market = config.build(n, 1)
        market.reset(np.random.default_rng(9))
        o = _orders(n, qty, MARKET)
        o.qty[::2] = 0  # even books untouched in both runs
        for _ in range(config.n_steps):
            market.execute(o, np.ones(n, bool))
        runs.append(market)
    quiet_a, quiet_b = runs
    assert np.array_equal(quiet_a._ints[:, kern.I_CTR], quiet_b._ints[:, kern.I_CTR])
    assert np.array_equal(quiet_a._q[::2], quiet_b._q[::2])
    # the agent's books differ: their queues, or (a redraw after a move at the same event
    # gives both the same queues again) their prices
    assert not (np.array_equal(quiet_a._q[1::2], quiet_b._q[1::2])
                and np.array_equal(quiet_a.mid[1::2], quiet_b.mid[1::2]))


# -- stylised facts (light) ---------------------------------------------------------------------
def test_mid_returns_are_uncorrelated_beyond_a_few_seconds():
    config = LOBMarketConfig(step_seconds=1.0, horizon_s=400.0)
    n = 48
    market = config.build(n, 1)
    market.reset(np.random.default_rng(5))
    mids = [market.mid.copy()]
    for _ in range(config.n_steps):
        market.execute(_none(n), np.ones(n, bool))
        mids.append(market.mid.copy())
    r = np.diff(np.array(mids), axis=0)
    r -= r.mean()
    acf = [float((r[lag:] * r[:-lag]).sum() / (r * r).sum()) for lag in range(1, 21)]
    se = 1.0 / np.sqrt(r.size)
    assert acf[0] < 0  # the bid-ask bounce of the mid: some reversal at one second
    assert all(abs(x) < 5 * se for x in acf[4:]), acf


def test_the_mean_book_thins_away_from_the_touch():
    est = estimate_book(LOBMarketConfig())
    depth = np.array(est.depth)
    assert (np.diff(depth) < 0).all(), depth
    assert 1.0 <= est.spread_ticks < 1.5 and est.sigma_ticks > 0 and est.volume_per_s > 0


def test_metaorder_impact_is_concave_in_its_size():
    """Buy at a fixed participation (200 shares every 5 s, about a third of the market's
    volume) for longer and longer: the mid's rise at the end over the same books untouched
    (common random numbers) grows less than in proportion to the size. Measured exponent
    ~0.8 (a square root would be 0.5); without the book's resilience the same run is linear
    (~1.0), which this test would refuse."""
    n = 256
    sizes = (8, 16, 32, 64)  # steps of 200 shares

    def impact(resilience: float) -> np.ndarray:
        config = LOBMarketConfig(step_seconds=5.0, horizon_s=320.0, resilience=resilience)
        runs = []
        for per_step in (0, 200):
            # a metaorder of k steps is the first k steps of a longer one: one run, all sizes
            market = config.build(n, 1)
            market.reset(np.random.default_rng(3))
            mids = {}
            for k in range(1, max(sizes) + 1):
                market.execute(_orders(n, per_step, MARKET, child=k), np.ones(n, bool))
                mids[k] = market.mid.copy()
            runs.append(mids)
        base, pushed = runs
        return np.array([np.mean(pushed[k] - base[k]) / config.tick_size for k in sizes])

    def exponent(i: np.ndarray) -> float:
        return float(np.log(i[-1] / i[0]) / np.log(sizes[-1] / sizes[0]))

    concave = impact(LOBMarketConfig().resilience)
    assert (concave > 0).all() and (np.diff(concave) > 0).all(), concave
    assert exponent(concave) < 0.9, concave
    assert exponent(impact(0.0)) > 0.95  # the control: no resilience, no concavity


# -- regimes ------------------------------------------------------------------------------------
def test_the_regimes_are_what_their_names_say():
    from execrl.sim.lob_config import CALM_VOL_TICKS, LOB_REGIMES

    calm, stressed, illiquid = (estimate_book(LOB_REGIMES[name][1])
                                for name in ("calm", "stressed", "illiquid"))
    assert calm.sigma_ticks == pytest.approx(CALM_VOL_TICKS, rel=0.03)
    assert 1.8 < stressed.sigma_ticks / calm.sigma_ticks < 2.3  # volatility x 2
    assert stressed.spread_ticks > calm.spread_ticks + 0.2  # a wider spread
    assert sum(stressed.depth[:5]) < 0.7 * sum(calm.depth[:5])  # a thinner book
    assert sum(illiquid.depth[:5]) < 0.5 * sum(calm.depth[:5])
    assert illiquid.volume_per_s < 0.5 * calm.volume_per_s
    assert illiquid.spread_ticks > stressed.spread_ticks


@pytest.mark.parametrize("name", ["crash", "flash_crash"])
def test_a_crash_falls_ten_percent_in_its_window_and_a_flash_crash_comes_back(name):
    from execrl.presets import preset_market

    config = preset_market(f"lob:{name}").model_copy(update={"horizon_s": 200.0})
    shock = config.shock
    n = 32
    market = config.build(n, -1)
    market.reset(np.random.default_rng(2))
    arrival = market.mid.copy()
    mids = [arrival]
    for _ in range(config.n_steps):
        market.execute(_none(n), np.ones(n, bool))
        mids.append(market.mid.copy())
    mids = np.array(mids) / arrival - 1.0  # (steps + 1, n)
    step = config.step_s
    start, end = shock.start * 200.0, (shock.start + shock.duration) * 200.0
    fall = mids[int(end / step)] - mids[int(start / step)]
    # the forced moves are 10 % exactly; in the stressed book of the crash the flow adds a
    # little more (measured -11.4 %: the bid the sweeps keep renewing is depleted more often)
    assert -0.13 < fall.mean() < -0.095, fall
    assert fall.std() < 0.01
    if shock.recovery is None:
        assert (mids[-1] < -0.08).all()
    else:
        assert np.abs(mids[-1]).max() < 0.01  # back where it was


def test_lob_presets_resolve_and_build():
    from execrl.presets import ENV_PRESETS, preset_market

    assert {"lob", "lob:calm", "lob:stressed", "lob:crash", "lob:flash_crash",
            "lob:illiquid"} <= set(ENV_PRESETS)
    assert preset_market("lob") == preset_market("lob:calm")
    assert preset_market("lob:stressed").regime == "stressed"
    with pytest.raises(ConfigError, match="'lob:windy' is unknown"):
        preset_market("lob:windy")


# -- the market specification -------------------------------------------------------------------
def test_the_spec_gives_the_orders_grid_a_cost_model_estimated_from_the_book_and_results():
    import json

    from execrl.domain import ParentOrder
    from execrl.sim.almgren_chriss import ACMarketConfig

    order = ParentOrder(order_id="L-1", symbol="XYZ", side="sell", qty=5_000, arrival_px=40.0,
                        start_ts=0.0, horizon_s=120.0)
    spec = LOBMarketConfig().for_order(order)
    assert spec.s0 == 40.0 and spec.horizon_s == 120.0 and spec.n_steps == 12
    est = spec.estimate()
    known = spec.knowledge()
    assert known.n_steps == 12 and known.volume_weights.sum() == pytest.approx(1.0)
    cost = known.cost_model
    assert isinstance(cost, ACMarketConfig) and cost.time_unit_s == 1.0
    assert cost.sigma == pytest.approx(est.sigma_ticks * 0.01)
    assert cost.epsilon == pytest.approx(0.5 * est.spread_ticks * 0.01)
    assert spec.temp_impact_per_share() == pytest.approx(0.01 / (2 * np.mean(est.depth[:5])))
    assert cost.eta / cost.tau == pytest.approx(spec.temp_impact_per_share())
    assert spec.risk_var_per_share2() == pytest.approx(cost.sigma**2 * 10.0)
    np.testing.assert_allclose(spec.expected_volumes(), est.volume_per_s * 10.0)
    assert spec.closed_forms(5_000, -1, ["twap"], None) == {}
    block = json.loads(json.dumps(spec.to_results(5_000, "sell")))
    assert block["model"] == "lob" and block["config"]["s0"] == 40.0
    market = spec.build(3, -1)
    assert isinstance(market, LOBMarket) and market.n_steps == 12 and market.tick_size == 0.01
    market.reset(np.random.default_rng(0))
    # no shares and no scheduled shock on the calm book: nothing is expected to move
    np.testing.assert_array_equal(market.expected_mid_change(np.zeros(3, dtype=np.int64)), 0.0)
    long = order.model_copy(update={"horizon_s": 10 * 86_400.0})
    with pytest.raises(ConfigError, match="'step_seconds' = 10 splits the horizon"):
        LOBMarketConfig().for_order(long)


def test_a_partial_reset_restarts_those_books_alone():
    config = LOBMarketConfig(horizon_s=60.0)
    n = 4
    a = config.build(n, 1)
    a.reset(np.random.default_rng(0))
    for _ in range(2):
        a.execute(_orders(n, 100, MARKET), np.ones(n, bool))
    before_q, before_mid = a._q.copy(), a.mid.copy()
    a.reset(np.random.default_rng(5), np.array([1]))
    fresh = config.build(1, 1)
    fresh.reset(np.random.default_rng(5))
    assert np.array_equal(a._q[1], fresh._q[0]) and a.mid[1] == fresh.mid[0]
    assert a.arrival_vwap[1] == fresh.arrival_vwap[0] and a._t[1] == 0.0
    others = [0, 2, 3]
    assert np.array_equal(a._q[others], before_q[others])
    assert np.array_equal(a.mid[others], before_mid[others])
    f = a.execute(_orders(n, 100, MARKET), np.ones(n, bool))
    g = fresh.execute(_orders(1, 100, MARKET), np.ones(1, bool))
    assert f.avg_px[1] == g.avg_px[0] and f.qty[1] == g.qty[0]
    for name in a.available_features:
        assert a.feature(name)[1] == pytest.approx(fresh.feature(name)[0], nan_ok=True), name


@pytest.mark.parametrize(("resilience", "refill"), [
    (0.0, "taken_price"), (0.005, "taken_price"), (1.0, "taken_price"), (20.0, "taken_price"),
    (0.005, "stationary"), (1.0, "stationary"), (20.0, "stationary")])
def test_impact_keeps_its_sign_in_a_wide_spread_book(resilience, refill):
    """A book whose spread is ~3 ticks (as a small-tick stock aggregated): a buy of 2,000
    shares lifts the mid over the same books untouched, a sell lowers it, however strongly
    the book gives the liquidity back (at the agent's prices, never better; or where the
    book is thinnest against its stationary shape)."""
    from execrl.sim.lob_config import _default_tables

    tables = _default_tables(touch=0.02, behind=0.5, decay=1.0, cancel_per_aes=0.25,
                             market=0.3)
    config = LOBMarketConfig(**tables, resilience=resilience, refill=refill, horizon_s=20.0)
    n = 128
    mid = {}
    for qty, side in ((0, 1), (2_000, 1), (2_000, -1)):
        market = config.build(n, side)
        market.reset(np.random.default_rng(3))
        market.execute(_orders(n, qty, MARKET), np.ones(n, bool))
        mid[qty * side] = market.mid.copy()
    assert np.mean(mid[2_000] - mid[0]) > 0.002
    assert np.mean(mid[-2_000] - mid[0]) < -0.002


def test_a_stationary_refill_goes_where_the_book_is_thinnest_against_its_mean():
    """``refill = "stationary"``: a redirected limit order joins the level of its side whose
    shares fall furthest below the level's mean under ``init_queue`` (the agent's own resting
    shares counted as shown), in the frame as it is now."""
    config = quiet(refill="stationary")
    market = _market(config)
    mean = market._init_mean
    expected = [(np.arange(B) - 1).clip(0) @ np.asarray(config.init_queue[j]) * 100
                + 50.5 * (1 - config.init_queue[j][0]) for j in range(K)]
    np.testing.assert_allclose(mean, expected)
    ask = np.round(mean).astype(np.int64) + 5
    ask[3] = max(0, int(mean[3]) - 80)  # the deepest hole: level 3
    ask[6] = max(0, int(mean[6]) - 40)
    market.load_book(0, R0, LADDER, ask)
    j = kern.stationary_refill_level(market._q, market._ints, 0, kern.ASK, kern.BID, False,
                                     mean)
    assert j == 3
    market._q[0, kern.ASK, 3] += 200  # filled up: the next hole
    assert kern.stationary_refill_level(market._q, market._ints, 0, kern.ASK, kern.BID, False,
                                        mean) == 6
