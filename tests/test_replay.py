"""The replay market against hand-built message sequences: the exact queue, each estimator's
update rule, latency ordering, fees, the walk of the book, transient impact, features with no
look-ahead, walk-forward splits, trades-only data, and ``execrl evaluate`` on a replay."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from execrl.cli import app
from execrl.data.lobster import write_lobster
from execrl.data.store import BOOK, TRADE, EventStore, StoreMeta, from_lobster, write_store
from execrl.data.synthetic import build_day, synthetic_lobster
from execrl.domain import ConfigError, OrderType
from execrl.sim.base import ORDER_TYPE_CODES, REJECT_WORKING, ChildOrderBatch
from execrl.sim.replay import ReplayMarketConfig
from lobster_data import goog

LIMIT = ORDER_TYPE_CODES[OrderType.LIMIT]
IOC = ORDER_TYPE_CODES[OrderType.IOC]
P = 10_000  # LOBSTER price units per dollar
T0 = 10.0


def _px(dollars: float) -> int:
    return round(dollars * P)


def _market(tmp_path: Path, msgs, resting, levels=3, n_steps=1, horizon=10.0, side=1,
            n_envs=1, **fields):
    """A replay of the hand-built day whose one episode starts at T0 exactly."""
    day = build_day(msgs, levels=levels, resting=resting)
    path = write_lobster(tmp_path / f"day{len(list(tmp_path.iterdir()))}.zip", day.messages,
                         day.book)
    spec = ReplayMarketConfig.from_dict({
        "data": str(path), "horizon": horizon, "n_steps": n_steps, "pre_arrival_s": 0.0,
        "window_start_s": T0, "window_end_s": T0 + horizon, **fields})
    market = spec.build(n_envs, side)
    market.reset(np.random.default_rng(0))
    assert (market.episode_start == T0).all()
    return market


def _orders(n=1, qty=0, order_type=0, px=math.nan, ttl=0, cancel=False, child=1):
    o = ChildOrderBatch.market_orders(n)
    o.qty[:] = qty
    o.order_type[:] = order_type
    o.limit_px[:] = px
    o.ttl_steps[:] = ttl
    o.cancel[:] = cancel
    o.child_id[:] = child
    return o


def _run(market, first, steps):
    """Send ``first`` at step 0, then nothing; the fill events of every step."""
    out = []
    on = np.ones(market.n_envs, dtype=bool)
    for k in range(steps):
        f = market.execute(first if k == 0 else _orders(market.n_envs), on, record_events=True)
        out.append(f)
    return out


# the book before T0: bids 99.99 (ids 1: 100, 2: 200), 99.98 (7: 300); ask 100.01 (3: 500)
RESTING = [(1, 1, _px(99.99), 100), (2, 1, _px(99.99), 200), (7, 1, _px(99.98), 300),
           (3, -1, _px(100.01), 500)]
BEFORE = [(9.0, 1, 6, 100, _px(100.03), -1)]  # a book row before the episode


def _exact_msgs():
    return [
        *BEFORE,
        (11.0, 1, 4, 100, _px(99.99), 1),  # joins behind us
        (12.0, 2, 2, 50, _px(99.99), 1),  # 50 of order 2 (ahead) cancelled: 250 ahead
        (13.0, 4, 1, 100, _px(99.99), 1),  # order 1 (ahead) executed: 150 ahead
        (14.0, 3, 4, 100, _px(99.99), 1),  # order 4 (behind) deleted: still 150
        (15.0, 4, 2, 150, _px(99.99), 1),  # order 2 executed: nothing ahead
        (16.0, 1, 5, 200, _px(99.99), 1),  # joins behind us
        (17.0, 4, 5, 60, _px(99.99), 1),  # order 5 (behind us) executed: we were first
        (18.0, 4, 5, 140, _px(99.99), 1),
    ]


def test_the_exact_queue_moves_only_as_the_orders_ahead_leave(tmp_path):
    m = _market(tmp_path, _exact_msgs(), RESTING, n_steps=10)
    on = np.ones(1, dtype=bool)
    ahead, fills = [], []
    for k in range(9):
        o = _orders(qty=100, order_type=LIMIT, px=99.99, ttl=20) if k == 0 else _orders()
        f = m.execute(o, on, record_events=True)
        ahead.append(float(m.queue_ahead[0]) if m.working_qty[0] else None)
        fills.append(f)
    # steps end at 11, 12, ...: the queue ahead after each
    assert ahead[:5] == [300, 250, 150, 150, 0]
    ev = np.concatenate([f.events for f in fills])
    assert ev["t"].tolist() == [7.0, 8.0] and ev["qty"].tolist() == [60, 40]
    assert ev["passive"].all() and (ev["px"] == 99.99).all()
    assert fills[6].passive_qty[0] == 60 and fills[7].working_qty[0] == 0
    assert m.feature("queue_ahead")[0] == 0.0  # nothing works any more


def test_the_risk_averse_estimator_lags_the_exact_queue_on_the_same_messages(tmp_path):
    # without order ids the cancel of 50 ahead at 12 is put behind us: 300 stay ahead
    m = _market(tmp_path, _exact_msgs(), RESTING, n_steps=10, queue="risk_averse")
    on = np.ones(1, dtype=bool)
    ahead = []
    for k in range(5):
        o = _orders(qty=100, order_type=LIMIT, px=99.99, ttl=20) if k == 0 else _orders()
        m.execute(o, on)
        ahead.append(float(m.queue_ahead[0]))
    # 12: 350 at the level, cancels behind first; 13: the execution takes 100 off the front;
    # 14: the delete of 100 leaves 150 at the level, all of it ahead
    assert ahead == [300, 300, 200, 150, 0]


def test_an_order_behind_us_never_counts_as_ahead_and_a_cancel_is_not_a_fill(tmp_path):
    msgs = [*BEFORE, (11.0, 1, 4, 100, _px(99.99), 1), (12.0, 3, 4, 100, _px(99.99), 1),
            (13.0, 3, 1, 100, _px(99.99), 1), (14.0, 3, 2, 200, _px(99.99), 1)]
    m = _market(tmp_path, msgs, RESTING, n_steps=10)
    f = _run(m, _orders(qty=100, order_type=LIMIT, px=99.99, ttl=20), 6)
    assert sum(int(x.qty[0]) for x in f) == 0  # cancels move us up but fill nothing
    assert m.queue_ahead[0] == 0 and m.working_qty[0] == 100


# -- estimators ---------------------------------------------------------------------------------
def _l2_store(tmp_path: Path, snapshots, trades=()) -> str:
    """A store of L2 snapshots (t, bid level qty at 10.00, ask qty at 10.01) and trades (t,
    price, size, aggressor)."""
    rows = [(t, BOOK, 0, 0, 0) for t, _, _ in snapshots] + [
        (t, TRADE, size, round(px * P), -aggr) for t, px, size, aggr in trades]
    rows.sort(key=lambda r: (r[0], r[1]))
    n = len(rows)
    bid_px = np.zeros((n, 1), dtype=np.int64)
    bid_q = np.zeros((n, 1), dtype=np.int64)
    ask_px = np.zeros((n, 1), dtype=np.int64)
    ask_q = np.zeros((n, 1), dtype=np.int64)
    snap = iter(snapshots)
    cur = None
    for i, r in enumerate(rows):
        if r[1] == BOOK:
            cur = next(snap)
        bid_px[i], bid_q[i], ask_px[i], ask_q[i] = 100_000, cur[1], 100_100, cur[2]
    store = EventStore(
        meta=StoreMeta(symbol="L2", price_scale=P, tick=100, levels=1, has_order_ids=False,
                       source="test", n_events=n, days=[{"date": "", "first": 0, "rows": n}]),
        t=np.array([r[0] for r in rows]), kind=np.array([r[1] for r in rows], dtype=np.int8),
        order_id=np.zeros(n, dtype=np.int64), size=np.array([r[2] for r in rows]),
        price=np.array([r[3] for r in rows]), side=np.array([r[4] for r in rows], dtype=np.int8),
        bid_px=bid_px, bid_qty=bid_q, ask_px=ask_px, ask_qty=ask_q)
    path = tmp_path / f"l2-{len(list(tmp_path.iterdir()))}"
    write_store(store, path)
    return str(path)


def _expected_front(rule: str, front: float, back: float, c: float, n: float = 2.0) -> float:
    if rule == "risk_averse":
        p = 1.0
    elif rule == "power":
        p = back**n / (back**n + front**n)
    else:
        p = math.log1p(back) / (math.log1p(back) + math.log1p(front))
    return min(max(front - (1 - p) * c + min(back - p * c, 0.0), 0.0), front + back - c)


@pytest.mark.parametrize("rule", ["risk_averse", "power", "log"])
def test_each_estimator_shares_out_cancels_by_its_rule(tmp_path, rule):
    # steps end at 11, 12, 13, 14 (one change each); we join behind 500 at 10.00
    snaps = [(9.0, 500, 100), (10.5, 800, 100), (11.5, 600, 100), (12.7, 500, 100),
             (13.5, 100, 100)]
    trades = [(12.5, 10.00, 100, -1)]  # 100 traded at our price: off the front first
    data = _l2_store(tmp_path, snaps, trades)
    spec = ReplayMarketConfig.from_dict({
        "data": data, "horizon": 10.0, "n_steps": 10, "pre_arrival_s": 0.0, "queue": rule,
        "window_start_s": T0, "window_end_s": T0 + 10.0})
    with pytest.raises(ConfigError, match="'exact' needs order ids"):
        ReplayMarketConfig.from_dict({"data": data, "horizon": 10.0}).build(1, 1)
    m = spec.build(1, 1)
    m.reset(np.random.default_rng(0))
    on = np.ones(1, dtype=bool)
    ahead = []
    for k in range(4):
        o = _orders(qty=50, order_type=LIMIT, px=10.00, ttl=20) if k == 0 else _orders()
        m.execute(o, on)
        ahead.append(float(m.queue_ahead[0]))
    front = _expected_front(rule, 500.0, 300.0, 200.0)  # at 11.5: 200 of 800 cancelled
    assert ahead[:2] == [500.0, pytest.approx(front)]
    # at 12.5 the trade takes 100 off the front; the book's fall at 12.7 is that trade
    assert ahead[2] == pytest.approx(front - 100)
    # at 13.5 the level falls to 100: never more ahead than the level holds
    back = 500 - (front - 100)
    assert ahead[3] == pytest.approx(min(_expected_front(rule, front - 100, back, 400.0), 100))
    if rule != "risk_averse":
        assert front < 500  # the probabilistic rules put some cancels ahead of us


def test_a_trade_through_fills_an_estimated_queue_whatever_is_ahead(tmp_path):
    data = _l2_store(tmp_path, [(9.0, 500, 100)], trades=[(12.5, 9.99, 70, -1)])
    spec = ReplayMarketConfig.from_dict({
        "data": data, "horizon": 10.0, "n_steps": 5, "pre_arrival_s": 0.0,
        "queue": "risk_averse", "window_start_s": T0, "window_end_s": T0 + 10.0})
    m = spec.build(1, 1)
    m.reset(np.random.default_rng(0))
    f = _run(m, _orders(qty=50, order_type=LIMIT, px=10.00, ttl=20), 2)
    assert f[1].passive_qty[0] == 50 and f[1].avg_px[0] == 10.00


# -- latency, fees, the walk of the book, impact ------------------------------------------------
LAT_MSGS = [*BEFORE, (10.2, 3, 3, 500, _px(100.01), -1),  # the ask at 100.01 leaves
                     (10.3, 4, 1, 100, _px(99.99), 1)]  # a seller takes order 1 at 99.99


@pytest.mark.parametrize(("latency", "paid"), [(0.1, 100.01), (0.25, 100.03)])
def test_a_marketable_order_meets_the_book_as_of_its_arrival(tmp_path, latency, paid):
    m = _market(tmp_path, LAT_MSGS, RESTING, order_latency_s=latency)
    f = _run(m, _orders(qty=100), 1)[0]
    assert f.avg_px[0] == paid and f.events["t"][0] == pytest.approx(latency)


@pytest.mark.parametrize(("latency", "filled"), [(0.1, 30), (0.35, 0)])
def test_an_order_never_fills_on_events_stamped_before_it_arrived(tmp_path, latency, filled):
    # a bid at 100.00 is better than the book's 99.99: the sell at 10.3 would have hit it
    m = _market(tmp_path, LAT_MSGS, RESTING, order_latency_s=latency)
    f = _run(m, _orders(qty=30, order_type=LIMIT, px=100.00, ttl=5), 1)[0]
    assert f.passive_qty[0] == filled
    if filled:
        assert f.events["t"][0] == pytest.approx(0.3)  # at the trade, after the arrival


def test_a_cancel_arrives_with_the_latency_and_the_order_fills_until_then(tmp_path):
    msgs = [*BEFORE, (10.5, 4, 7, 100, _px(99.98), 1), (12.5, 4, 7, 100, _px(99.98), 1)]
    m = _market(tmp_path, msgs, RESTING, n_steps=5, order_latency_s=0.7)
    on = np.ones(1, dtype=bool)
    # step 0 (10-12): post at 100.00, arriving at 10.7 (the 10.5 trade-through is too early)
    f0 = m.execute(_orders(qty=40, order_type=LIMIT, px=100.00, ttl=5), on)
    assert f0.passive_qty[0] == 0 and f0.working_qty[0] == 40
    # step 1 (12-14): cancel, arriving at 12.7: the trade-through at 12.5 still fills it
    f1 = m.execute(_orders(cancel=True), on)
    assert f1.passive_qty[0] == 40 and f1.cancelled_qty[0] == 0


def test_fees_are_per_share_taker_and_maker(tmp_path):
    msgs = [*BEFORE, (11.0, 4, 7, 100, _px(99.98), 1)]
    m = _market(tmp_path, msgs, RESTING, n_steps=2, taker_fee_per_share=0.003,
                maker_fee_per_share=-0.002, n_envs=2)
    o = _orders(n=2, qty=100)
    o.order_type[1], o.limit_px[1], o.ttl_steps[1] = LIMIT, 100.00, 2
    f = _run(m, o, 1)[0]
    assert f.fees[0] == pytest.approx(100 * 0.003) and f.passive_qty[0] == 0
    assert f.fees[1] == pytest.approx(-0.002 * 100) and f.passive_qty[1] == 100
    assert np.allclose(np.bincount(f.events["env"], weights=f.events["fee"]), f.fees)


def test_a_large_marketable_order_walks_the_book_then_a_flat_extrapolation(tmp_path):
    resting = [(1, 1, _px(99.99), 100), (3, -1, _px(100.01), 100), (4, -1, _px(100.02), 200),
               (5, -1, _px(100.03), 300)]
    m = _market(tmp_path, [*BEFORE[:0], (9.0, 1, 8, 10, _px(99.98), 1)], resting, n_envs=2)
    o = _orders(n=2, qty=1000)
    o.order_type[1], o.limit_px[1] = IOC, 100.02
    f = _run(m, o, 1)[0]
    # visible: 100 @ .01, 200 @ .02, 300 @ .03; then 200 a level (the mean) at .04, .05
    cost = 100 * 100.01 + 200 * 100.02 + 300 * 100.03 + 200 * 100.04 + 200 * 100.05
    assert f.qty[0] == 1000 and f.avg_px[0] == pytest.approx(cost / 1000, abs=1e-9)
    assert f.qty[1] == 300 and f.avg_px[1] == pytest.approx((100 * 100.01 + 200 * 100.02) / 300)
    assert f.n_fills[0] == 4 and f.working_qty[1] == 0  # 3 levels + one extrapolated sweep


def test_transient_impact_shifts_our_prices_and_the_mid_then_decays(tmp_path):
    kappa, decay = 1e-4, 4.0
    m = _market(tmp_path, BEFORE, RESTING, n_steps=2, impact=kappa, impact_decay_s=decay)
    mid0 = m.mid[0]
    on = np.ones(1, dtype=bool)
    f0 = m.execute(_orders(qty=100), on)
    assert f0.avg_px[0] == pytest.approx(100.01)  # the first order meets no impact
    shift = kappa * 100 * math.exp(-5.0 / decay)
    assert m.mid[0] == pytest.approx(mid0 + shift)
    f1 = m.execute(_orders(qty=100), on)
    assert f1.avg_px[0] == pytest.approx(100.01 + shift)
    off = _market(tmp_path, BEFORE, RESTING, n_steps=2)
    off.execute(_orders(qty=100), on)
    assert off.mid[0] == mid0 and off.execute(_orders(qty=100), on).avg_px[0] == 100.01


def test_a_second_resting_order_while_one_works_is_refused_by_name(tmp_path):
    m = _market(tmp_path, BEFORE, RESTING, n_steps=3)
    on = np.ones(1, dtype=bool)
    m.execute(_orders(qty=10, order_type=LIMIT, px=99.99, ttl=3), on)
    f = m.execute(_orders(qty=10, order_type=LIMIT, px=99.98, ttl=3), on)
    assert f.reject[0] == REJECT_WORKING and f.working_qty[0] == 10
    f = m.execute(_orders(qty=10, order_type=LIMIT, px=99.98, ttl=3, cancel=True), on)
    assert f.reject[0] == 0 and f.cancelled_qty[0] == 10 and f.working_qty[0] == 10


# -- features, episodes, splits ----------------------------------------------------------------
def _shifted_future(day, after: float):
    """The same day with every event after ``after`` changed (sizes, prices, the book)."""
    store = from_lobster(day)
    late = store.t > after
    size = store.size.copy()
    size[late] *= 3
    price = store.price.copy()
    price[late] += 700
    books = {}
    for name in ("bid_px", "ask_px"):
        books[name] = store.column(name).copy()
        books[name][late] += 700
    for name in ("bid_qty", "ask_qty"):
        books[name] = store.column(name).copy()
        books[name][late] *= 2
    return EventStore(meta=store.meta, t=store.t, kind=store.kind, order_id=store.order_id,
                      size=size, price=price, side=store.side, **books)


def test_features_up_to_now_do_not_change_when_the_future_does(tmp_path):
    day = synthetic_lobster(6_000, levels=3, seed=7)
    cut = float(day.messages["t"][3_000])
    paths = []
    for k, store in enumerate((from_lobster(day), _shifted_future(day, cut))):
        write_store(store, tmp_path / f"s{k}")
        paths.append(str(tmp_path / f"s{k}"))
    names = None
    feats = []
    for path in paths:
        # walk-forward: what the market knows of the data (its volatility, volume) is
        # estimated on the train part, before the split, which lies before the cut
        spec = ReplayMarketConfig.from_dict({
            "data": path, "horizon": 40.0, "n_steps": 8, "pre_arrival_s": 30.0,
            "market_data_delay_s": 0.5, "split": "test", "train_fraction": 0.3,
            "window_start_s": cut - 30.0, "window_end_s": cut + 40.0})
        assert spec.to_results(1, "buy")["walk_forward"]["split_at_s"] < cut
        m = spec.build(4, 1)
        m.reset(np.random.default_rng(3))
        names = [n for n in m.available_features if n != "queue_ahead"]
        rows = [np.array([m.feature(n) for n in names])]
        now = [m.episode_start + 0.0]
        for k in range(8):
            m.execute(_orders(n=4, qty=100), np.ones(4, dtype=bool))
            rows.append(np.array([m.feature(n) for n in names]))
            now.append(m.episode_start + (k + 1) * spec.tau)
        feats.append((np.array(rows), np.array(now)))
    (a, now), (b, _) = feats
    seen = now - 0.5  # what a feature may know: events up to the observation time
    past = seen <= cut
    assert past.any() and (~past).any()
    for step in range(a.shape[0]):
        for env in range(4):
            if past[step, env]:
                np.testing.assert_array_equal(a[step, :, env], b[step, :, env])
    assert any(not np.array_equal(a[s, :, e], b[s, :, e]) for s, e in zip(*np.nonzero(~past),
                                                                           strict=True))


def test_episodes_start_at_seeded_times_and_the_split_keeps_train_before_test():
    base = {"data": "synthetic:1", "horizon": 60.0, "n_steps": 4, "pre_arrival_s": 30.0}
    train = ReplayMarketConfig.from_dict({**base, "split": "train"})
    test = ReplayMarketConfig.from_dict({**base, "split": "test"})
    a = train.build(200, 1)
    a.reset(np.random.default_rng(1))
    b = test.build(200, 1)
    b.reset(np.random.default_rng(1))
    cut = train.to_results(1, "buy")["walk_forward"]["split_at_s"]
    assert (a.episode_start + 60.0 <= cut).all() and (b.episode_start >= cut).all()
    again = train.build(50, 1)
    again.reset(np.random.default_rng(1))
    assert np.array_equal(again.episode_start, a.episode_start[:50])
    assert len(np.unique(a.episode_start)) == 200


def test_a_horizon_longer_than_the_data_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"'horizon' = 100000 s does not fit"):
        ReplayMarketConfig.from_dict({"data": "synthetic:1", "horizon": 1e5}).build(1, 1)


def test_trades_only_data_trades_at_a_volatility_spread_proxy(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    t = np.cumsum(rng.exponential(0.5, n))
    px = 100_000 + 100 * np.cumsum(rng.choice([-1, 0, 1], n))
    side = rng.choice([-1, 1], n).astype(np.int8)
    store = EventStore(meta=StoreMeta("TR", P, 100, 0, False, "test", n,
                                      [{"date": "", "first": 0, "rows": n}]),
                       t=t, kind=np.full(n, TRADE, dtype=np.int8),
                       order_id=np.zeros(n, dtype=np.int64), size=np.full(n, 100),
                       price=px.astype(np.int64), side=side)
    write_store(store, tmp_path / "tr")
    spec = ReplayMarketConfig.from_dict({"data": str(tmp_path / "tr"), "horizon": 20.0,
                                         "n_steps": 2, "queue": "risk_averse",
                                         "pre_arrival_s": 5.0})
    half = spec.replay_data.proxy_half_spread
    assert half == max(100, round(np.diff(px).std() / 100) * 100)
    m = spec.build(8, 1)
    m.reset(np.random.default_rng(2))
    last = px[np.searchsorted(t, m.episode_start, side="right") - 1]
    assert np.allclose(m.feature("spread_bps"), 2 * half / last * 1e4)
    f = m.execute(_orders(n=8, qty=10_000), np.ones(8, dtype=bool))
    assert np.allclose(f.avg_px, (last + half) / P)  # the whole order at the proxy ask


def test_execrl_evaluate_runs_policies_on_a_replay(tmp_path):
    day = synthetic_lobster(8_000, levels=5, seed=2)
    data = write_lobster(tmp_path / "day.zip", day.messages, day.book)
    market = tmp_path / "replay.json"
    market.write_text(json.dumps({"model": "replay", "data": str(data), "n_steps": 5,
                                  "pre_arrival_s": 30.0, "queue": "exact"}))
    order = tmp_path / "order.json"
    order.write_text(json.dumps({"order_id": "R1", "symbol": "SYNTH", "side": "buy",
                                 "qty": 3000, "start_ts": 0, "horizon_s": 60}))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["evaluate", "--market", str(market), "--order", str(order),
                                   "--orders", "12", "--policies", "twap,vwap,pov,ac,immediate",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["market"]["model"] == "replay" and results["market"]["T"] == 60.0
    assert results["market"]["walk_forward"]["split"] == "all"
    for name in ("twap", "immediate", "ac"):
        assert results["policies"][name]["fill_rate"] == 1.0
    assert results["policies"]["immediate"]["is_bps"]["mean"] > 0  # it pays the spread


def test_the_builder_fed_both_streams_at_once_matches_the_merged_feed():
    from execrl.market.events import TRADE_DTYPE
    from execrl.market.features import FeatureBuilder

    rng = np.random.default_rng(4)
    n, rows = 3, 60
    t = np.sort(rng.choice(np.arange(0.0, 30.0, 0.5), rows))
    env = rng.integers(0, n, rows)
    is_trade = rng.random(rows) < 0.4
    mid = 100 + np.cumsum(rng.normal(0, 0.02, rows))
    bid, ask = np.round(mid - 0.01, 2)[:, None], np.round(mid + 0.01, 2)[:, None]
    bq, aq = rng.integers(1, 9, (rows, 1)) * 100.0, rng.integers(1, 9, (rows, 1)) * 100.0
    order = np.lexsort((t, env))  # per environment, time order
    trades = np.zeros(int(is_trade.sum()), dtype=TRADE_DTYPE)
    names = ["tick_flow_10s", "volume_30s", "mid", "spread_bps", "realised_vol_bps",
             "time_since_trade_s", "imbalance_1"]
    merged, once = (FeatureBuilder(n, windows_s=(10.0, 30.0), top_k=1) for _ in range(2))
    for fb in (merged, once):
        fb.reset(t0=0.0)
    j = 0
    for r in order:  # one event at a time, in time order per environment
        if is_trade[r]:
            row = np.array([(env[r], t[r], mid[r], 100, 1 if r % 2 else -1)], TRADE_DTYPE)
            merged.on_trades(row)
            trades[j] = row[0]
            j += 1
        else:
            merged.on_book(t[r], bid[r:r + 1], bq[r:r + 1], ask[r:r + 1], aq[r:r + 1],
                           env_ids=[env[r]])
    books = order[~is_trade[order]]
    once.on_market_events(trades, t[books], bid[books], bq[books], ask[books], aq[books],
                          env_ids=env[books])
    np.testing.assert_array_equal(merged.clock, once.clock)
    np.testing.assert_array_equal(merged.values(names, t=40.0), once.values(names, t=40.0))
    late = np.array([(0, 1.0, 100.0, 5, 1)], TRADE_DTYPE)  # before environment 0's clock
    with pytest.raises(ConfigError, match="trades field 't'"):
        once.on_market_events(late, [41.0], [[99.0]], [[1.0]], [[101.0]], [[1.0]], [0])
    assert once.clock[0] == 40.0  # nothing was applied


GOOG = goog(10)


@pytest.mark.skipif(not GOOG.exists(), reason=f"the LOBSTER GOOG sample is not at {GOOG}")
def test_goog_replays_with_exact_queues_and_sensible_costs():
    spec = ReplayMarketConfig.from_dict({"data": str(GOOG), "horizon": 600.0, "n_steps": 10,
                                         "pre_arrival_s": 60.0})
    assert spec.replay_data.tick_size == 0.01 and spec.replay_data.has_order_ids
    m = spec.build(64, 1)
    m.reset(np.random.default_rng(0))
    bid, ask = m.touch
    assert (bid < ask).all() and np.allclose(m.arrival_mid, 0.5 * (bid + ask))
    f = m.execute(_orders(n=64, qty=100), np.ones(64, dtype=bool))
    assert (f.qty == 100).all() and (f.avg_px >= ask - 1e-9).all()  # a buy pays the ask or more
    cost = m.config.estimated_cost_model()
    assert 0 < cost.epsilon < 0.5 and cost.sigma > 0  # half a spread of a few cents
