"""The paper market against the market-data stream (``execrl.service.paper``).

The key check: fed the entries ``execrl feed`` publishes for a market (JSON on the wire), the
paper market reproduces that market's backtest for the same policy and seed, bit for bit: the
Almgren–Chriss market (its exogenous moves streamed, our impact on top) and the replay (the
recorded book and events streamed, walked and queued by the replay's kernel), through the
whole ``Executor`` (guard, watchdog, audit). Then hand-built entries against hand-computed
fills, and every malformed, missing, out-of-order or foreign entry refused by name. The order
book market (``lob``) is refused: its flow reacts to our orders, which its tape did not see.
The conformance suite runs on the paper market too (``test_market_conformance.py``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from execrl.domain import ConfigError, OrderType, ParentOrder, Side
from execrl.executor.loop import Executor, Safety, context_for
from execrl.policies.baselines import make_baseline
from execrl.presets import preset_market
from execrl.service.feed import MarketTape
from execrl.service.paper import MarketDataError, StreamFeed, paper_market
from execrl.service.streams import decode, encode
from execrl.sim.base import ORDER_TYPE_CODES, ChildOrderBatch
from execrl.sim.spec import parse_market
from lobster_data import goog

GOOG = goog(10)

AC_SIGNAL = {"model": "almgren_chriss", "n_steps": 8, "risk_aversion": 0.0,
             "signal": {"kappa": 1.0, "sigma": 1.0}}
REPLAY_ORDER = ParentOrder(order_id="P-1", symbol="GOOG", side=Side.BUY, qty=2_000,
                           start_ts=0.0, horizon_s=60.0)
SYNTHETIC = {"model": "replay", "data": "synthetic:1", "horizon": 60.0, "n_steps": 6,
             "pre_arrival_s": 30.0}
SYNTHETIC_ESTIMATED = {**SYNTHETIC, "queue": "power", "order_latency_s": 0.05,
                       "latency_jitter_s": 0.02, "impact": 1e-5, "impact_decay_s": 20.0,
                       "market_data_delay_s": 0.5, "taker_fee_per_share": 0.003,
                       "maker_fee_per_share": -0.002}


def feed_entries(market: Any, order: ParentOrder, seed: int, episodes: int) -> list[list[dict]]:
    """The entries ``run_feed`` publishes (through the wire's JSON) for episodes 0..n-1, the
    first n_steps + 1 of each (a replay's runs on)."""
    out: list[list[dict]] = []
    step = 0
    for episode in range(episodes):
        tape = MarketTape(market, order, seed)
        tape.episode = episode
        tape._reset()
        out.append([])
        for _ in range(tape.spec.n_steps + 1):
            head = {"symbol": order.symbol, "step": step, "episode": episode, "k": tape.k}
            out[-1].append(decode(encode({**head, **tape.step(), "ts_ns": 0})))
            step += 1
    return out


class _Steps:
    """Each step's fills and mid, as the core saw them."""

    def __init__(self, core: Any):
        self.core, self.rows = core, []

    def before(self, actions: Any, obs: Any = None) -> None:
        pass

    def after(self) -> None:
        f = self.core.last_fills
        self.rows.append((f.qty.copy(), f.avg_px.copy(), f.passive_qty.copy(), f.fees.copy(),
                          np.asarray(self.core.market.mid, dtype=float).copy()))


def backtest_and_paper(market: Any, order: ParentOrder, policy: str, seed: int,
                       n_orders: int = 1, per_step: bool = False, safety: Any = None,
                       audit_dir: Path | None = None) -> tuple[Any, Any, list, list]:
    """The backtest and the paper run of ``policy`` on the same seed; the paper market is fed
    the feed's episodes 0..n-1 (order i: episode i), all at once or, as the service does, one
    entry per order before each decision (entry 0 before the run)."""
    pol = make_baseline(policy, context_for(market, order))
    ex = Executor(pol, market, safety=safety or Safety())
    seen: list[list] = []
    bt = ex.run(order, n_orders, seed, make_observers=lambda c: [_obs(c, seen, 0)])
    entries = feed_entries(market, order, seed, n_orders)
    feed = StreamFeed(symbol=order.symbol)
    nxt = [iter(e) for e in entries]
    if per_step:
        for i in range(n_orders):
            feed.push(next(nxt[i]), i)
    else:
        for i, episode in enumerate(entries):
            for e in episode:
                feed.push(e, i)
    decisions = [0]

    def on_obs(_obs_: Any) -> None:  # before decision k >= 1: entry k of every order
        if per_step and decisions[0] > 0:
            for i in range(n_orders):
                feed.push(next(nxt[i]), i)
        decisions[0] += 1

    if audit_dir is not None:  # the paper run on record, as the service keeps it
        from execrl.executor.audit import AuditTrail

        ex.audit = AuditTrail(audit_dir, features=list(pol.observations))
    pr = ex.run(order, n_orders, seed, venue=feed, on_obs=on_obs,
                make_observers=lambda c: [_obs(c, seen, 1)])
    return bt, pr, seen[0], seen[1]


def _obs(core: Any, seen: list, slot: int) -> _Steps:
    obs = _Steps(core)
    while len(seen) <= slot:
        seen.append([])
    seen[slot] = obs.rows
    return obs


def assert_same_run(bt: Any, pr: Any, bt_steps: list, pr_steps: list) -> None:
    """Bit for bit: every step's fills and mid, every order's result."""
    assert len(bt_steps) == len(pr_steps)
    for a, b in zip(bt_steps, pr_steps, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(bt.schedules, pr.schedules)
    pd.testing.assert_frame_equal(bt.episodes, pr.episodes, check_exact=True)


# -- the key check ------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["twap", "ac", "immediate", "vwap"])
def test_the_ac_paper_market_reproduces_the_backtest_bit_for_bit(policy):
    market = preset_market("ac")
    order = market.default_order()
    bt, pr, a, b = backtest_and_paper(market, order, policy, seed=11, n_orders=3)
    assert_same_run(bt, pr, a, b)
    assert len(set(a[0][4].tolist())) == 3  # three different paths, each reproduced


def test_the_ac_paper_market_with_a_signal_fed_one_entry_per_step_under_the_watchdog():
    from execrl.safety.watchdog import WatchdogConfig

    market = parse_market(AC_SIGNAL)
    order = market.default_order()
    safety = Safety(watchdog=WatchdogConfig(max_latency_s=None))
    bt, pr, a, b = backtest_and_paper(market, order, "signal_aware", seed=4, n_orders=2,
                                      per_step=True, safety=safety)
    assert_same_run(bt, pr, a, b)


def test_our_impact_sits_on_the_streamed_unaffected_mid_as_the_model_says():
    """Sell X in step 0: filled at S_0 − ε − η/τ·X; every later mid is the streamed
    unaffected mid less γ·X (to float rounding: the model applied to the stream)."""
    market = preset_market("ac")
    order = market.default_order()
    c = market.for_order(order)
    entries = feed_entries(market, order, seed=2, episodes=1)[0]
    feed = StreamFeed()
    for e in entries:
        feed.push(e)
    m = paper_market(c.build(1, -1), feed)
    m.reset(np.random.default_rng(0))
    orders = ChildOrderBatch.market_orders(1)
    orders.qty[:] = order.qty
    f = m.execute(orders, np.ones(1, dtype=bool))
    s0 = entries[0]["mid"]
    assert f.qty[0] == order.qty
    assert f.avg_px[0] == pytest.approx(s0 - c.epsilon - c.eta / c.tau * order.qty, rel=1e-15)
    orders.qty[:] = 0
    for k in range(1, c.n_steps):
        assert m.mid[0] == pytest.approx(entries[k]["mid"] - c.gamma * order.qty, rel=1e-12)
        m.execute(orders, np.ones(1, dtype=bool))


@pytest.mark.parametrize("spec", [SYNTHETIC, SYNTHETIC_ESTIMATED], ids=["exact", "estimated"])
@pytest.mark.parametrize("policy", ["twap", "passive_twap", "submit_and_leave"])
def test_the_replay_paper_market_reproduces_the_backtest_bit_for_bit(spec, policy):
    """Walks, exact and estimated queues, latency with jitter, fees, transient impact and a
    market-data delay: the replay's kernel on the streamed events gives the replay's fills."""
    bt, pr, a, b = backtest_and_paper(parse_market(spec), REPLAY_ORDER, policy, seed=3,
                                      n_orders=2, per_step=policy == "twap")
    assert_same_run(bt, pr, a, b)
    assert bt.episodes["fills"].min() > 0


@pytest.mark.skipif(not GOOG.exists(), reason=f"the LOBSTER GOOG sample is not at {GOOG}")
@pytest.mark.parametrize("policy", ["twap", "passive_twap", "immediate"])
def test_the_replay_paper_market_reproduces_the_goog_backtest_with_its_audit(policy, tmp_path):
    from execrl.executor.audit import check_trail, read_trail

    spec = parse_market({"model": "replay", "data": str(GOOG), "horizon": 600.0,
                         "n_steps": 10})
    order = ParentOrder(order_id="G-1", symbol="GOOG", side=Side.SELL, qty=3_000, start_ts=0.0,
                        horizon_s=600.0)
    bt, pr, a, b = backtest_and_paper(spec, order, policy, seed=8, audit_dir=tmp_path / "t")
    assert_same_run(bt, pr, a, b)
    assert bt.episodes["fills"].iloc[0] > 0
    trail = read_trail(tmp_path / "t")
    assert check_trail(trail) == []
    assert trail.fills["qty"].sum() == trail.orders["filled"].iloc[0] > 0
    assert set(trail.orders["venue"]) == set(trail.children["venue"]) == {"stream"}


def test_the_order_book_market_is_refused_with_its_reason():
    lob = preset_market("lob")
    order = lob.default_order()
    with pytest.raises(ConfigError, match="reacts to our orders"):
        paper_market(lob.for_order(order).build(1, order.side.sign), StreamFeed())


# -- hand-built entries --------------------------------------------------------------------------
HAND = {"model": "replay", "data": "synthetic:0", "levels": 2, "horizon": 60.0, "n_steps": 2,
        "pre_arrival_s": 30.0, "queue": "risk_averse"}
T0 = 1_000.0
BOOK0 = {"bid_px": [999_900.0, 999_800.0], "bid_qty": [200.0, 400.0],
         "ask_px": [1_000_000.0, 1_000_100.0], "ask_qty": [300.0, 500.0]}


def _events(rows: list[tuple]) -> dict[str, Any]:
    """(t, kind, size, price, side, sub, seq, bid_qty at 99.99) rows; the rest of the book as
    ``BOOK0``, the 99.99 level gone when its size is 0."""
    out: dict[str, Any] = {name: [] for name in ("t", "kind", "size", "price", "side", "sub",
                                                 "seq", *BOOK0)}
    for t, kind, size, price, side, sub, seq, level in rows:
        for name, v in zip(("t", "kind", "size", "price", "side", "sub", "seq"),
                           (t, kind, size, price, side, sub, seq), strict=True):
            out[name].append(v)
        bid = ([[999_900.0, level], [999_800.0, 400.0]] if level else
               [[999_800.0, 400.0], [999_700.0, 100.0]])
        out["bid_px"].append([p for p, _ in bid])
        out["bid_qty"].append([q for _, q in bid])
        out["ask_px"].append(BOOK0["ask_px"])
        out["ask_qty"].append(BOOK0["ask_qty"])
    return out


def _entry(step: int, k: int, events: list[tuple], symbol: str = "X", **book: Any) -> dict:
    part = {"t0": T0, "seq": 10, "mid_units": 999_950.0, **BOOK0, **book,
            "events": _events(events)}
    if k == 0:
        part["arrival_vwap"] = 99.995
        part["pre"] = _events([])
    return {"symbol": symbol, "step": step, "episode": 0, "k": k, "model": "replay",
            "step_s": 30.0, "t_s": 30.0 * k, "mid": 99.995, "bid": 99.99, "ask": 100.0,
            "volume": 0.0, "book": part}


def _hand_market(queue: str = "risk_averse", symbol: str | None = None) -> tuple[Any, Any]:
    spec = parse_market({**HAND, "queue": queue})
    feed = StreamFeed(symbol=symbol)
    return paper_market(spec.build(1, 1), feed), feed


def _order(qty: int, kind: OrderType, px: float = np.nan, ttl: int = 0) -> ChildOrderBatch:
    o = ChildOrderBatch.market_orders(1)
    o.qty[:], o.order_type[:], o.limit_px[:], o.ttl_steps[:] = qty, ORDER_TYPE_CODES[kind], px, ttl
    o.child_id[:] = 1
    return o


ON = np.ones(1, dtype=bool)


def test_a_marketable_order_walks_two_streamed_levels():
    """Buy 600 at market against 300 @ 100.00 and 500 @ 100.01: 300 + 300, avg 100.005; an
    IOC limited at 100.00 takes the first level only."""
    m, feed = _hand_market()
    feed.push(_entry(0, 0, []))
    feed.push(_entry(1, 1, []))
    m.reset(np.random.default_rng(0))
    assert m.mid[0] == 99.995 and m.arrival_mid[0] == 99.995
    f = m.execute(_order(600, OrderType.MARKET), ON, record_events=True)
    assert (f.qty[0], f.passive_qty[0], f.n_fills[0], f.working_qty[0]) == (600, 0, 2, 0)
    assert f.avg_px[0] == 100.005
    assert f.events["qty"].tolist() == [300, 300]
    assert f.events["px"].tolist() == [100.0, 100.01]
    f = m.execute(_order(600, OrderType.IOC, 100.0), ON)
    assert (f.qty[0], f.avg_px[0], f.working_qty[0]) == (300, 100.0, 0)


@pytest.mark.parametrize("queue", ["risk_averse", "exact"])
def test_a_passive_order_fills_once_the_queue_ahead_has_traded(queue):
    """Bid 500 at 99.99 behind the 200 displayed there. Step 0: 150 of them trade (50 still
    ahead, no fill). Step 1: the last 50 trade, then 120 more at 99.99 (an order that joined
    after us): ours, 120 @ 99.99, 380 still working."""
    m, feed = _hand_market(queue)
    feed.push(_entry(0, 0, [(T0 + 5, 4, 150, 999_900.0, 1, 5, 11, 50.0)]))
    m.reset(np.random.default_rng(0))
    f = m.execute(_order(500, OrderType.LIMIT, 99.99, ttl=2), ON)
    assert (f.qty[0], f.working_qty[0]) == (0, 500)
    assert m.queue_ahead[0] == 50.0
    feed.push(_entry(1, 1, [(T0 + 35, 4, 50, 999_900.0, 1, 6, 12, 0.0),
                            (T0 + 40, 4, 120, 999_900.0, 1, 13, 14, 30.0)],
                     bid_qty=[50.0, 400.0]))
    f = m.execute(_order(0, OrderType.MARKET), ON, record_events=True)
    assert (f.qty[0], f.passive_qty[0], f.avg_px[0]) == (120, 120, 99.99)
    assert f.events["t"].tolist() == [40.0]  # since the order's start, at the trade
    assert f.cancelled_qty[0] == 380  # its time to live ends with step 1
    assert f.working_qty[0] == 0


# -- refused entries -----------------------------------------------------------------------------
def test_a_missing_entry_is_an_error_never_a_fill_on_stale_data():
    m, feed = _hand_market()
    with pytest.raises(MarketDataError, match="no market entry for order 0's step 0"):
        m.reset(np.random.default_rng(0))
    feed.push(_entry(0, 0, []))
    m.reset(np.random.default_rng(0))
    m.execute(_order(10, OrderType.MARKET), ON)
    with pytest.raises(MarketDataError, match="no market entry for order 0's step 1"):
        m.execute(_order(10, OrderType.MARKET), ON)


def test_out_of_order_repeated_and_foreign_entries_are_refused_by_name():
    _, feed = _hand_market(symbol="X")
    feed.push(_entry(5, 0, []))
    for step in (5, 4):
        with pytest.raises(MarketDataError, match=rf"'step' = {step} .* does not follow"):
            feed.push(_entry(step, 1, []))
    with pytest.raises(MarketDataError, match=r"'symbol' = 'Y' is not .* 'X'"):
        feed.push(_entry(6, 1, [], symbol="Y"))
    with pytest.raises(MarketDataError, match="'step' = None"):
        feed.push({"symbol": "X"})
    ac = feed_entries(preset_market("ac"), preset_market("ac").default_order(), 0, 1)[0][1]
    feed2 = StreamFeed()
    feed2.push({**ac, "step": 0})
    m3 = paper_market(parse_market(HAND).build(1, 1), feed2)
    with pytest.raises(MarketDataError, match=r"'model' = 'almgren_chriss' .* 'replay'"):
        m3.reset(np.random.default_rng(0))


@pytest.mark.parametrize("bad, needle", [
    ({"shock": "0.1"}, "'ac.shock' = '0.1' is not a finite number"),
    ({"drift_term": None}, "'ac.drift_term' = None is not a finite number"),
    ({"step_volume": True}, "'ac.step_volume' = True is not a finite number"),
])
def test_a_malformed_ac_entry_is_refused_naming_the_field(bad, needle):
    market = preset_market("ac")
    order = market.default_order()
    entries = feed_entries(market, order, 0, 1)[0]
    feed = StreamFeed()
    feed.push(entries[0])
    feed.push({**entries[1], "ac": {**entries[1]["ac"], **bad}})
    m = paper_market(market.for_order(order).build(1, -1), feed)
    m.reset(np.random.default_rng(0))
    m.execute(ChildOrderBatch.market_orders(1), ON)
    with pytest.raises(MarketDataError, match=re.escape(needle)):
        m.execute(ChildOrderBatch.market_orders(1), ON)


def test_a_feed_of_another_step_length_or_a_broken_book_is_refused():
    market = preset_market("ac")
    order = market.default_order()
    entries = feed_entries(market, order, 0, 1)[0]
    feed = StreamFeed()
    feed.push(entries[0])
    feed.push({**entries[1], "step_s": entries[1]["step_s"] * 2})
    m = paper_market(market.for_order(order).build(1, -1), feed)
    m.reset(np.random.default_rng(0))
    m.execute(ChildOrderBatch.market_orders(1), ON)
    with pytest.raises(MarketDataError, match=r"'step_s' = .*: the stream's decision step is"):
        m.execute(ChildOrderBatch.market_orders(1), ON)
    r, feed = _hand_market()
    feed.push(_entry(0, 0, [], bid_px=[999_900.0]))
    with pytest.raises(MarketDataError, match=re.escape("'book.bid_px' has shape")):
        r.reset(np.random.default_rng(0))
    feed.push(_entry(1, 0, [(T0 + 5, 4, 1, 999_900.0, 1, 5, 11, 50.0),
                            (T0 + 1, 4, 1, 999_900.0, 1, 5, 12, 50.0)]))
    r.reset(np.random.default_rng(0))
    with pytest.raises(MarketDataError, match=re.escape("'book.events.t' is not a list")):
        r.execute(_order(1, OrderType.MARKET), ON)
    bad = _entry(2, 0, [])
    bad["book"]["events"]["size"] = "|O:AAAA"  # a packed column must be numeric
    feed.push(bad)
    r.reset(np.random.default_rng(0))
    with pytest.raises(MarketDataError, match=re.escape("'book.events.size' is not a packed")):
        r.execute(_order(1, OrderType.MARKET), ON)


# -- the wire, end to end ------------------------------------------------------------------------
sys.path.insert(0, str(Path(__file__).parent))
from redis_server import redis_url  # noqa: E402, F401  (the fixture)


def test_run_feed_through_redis_then_the_paper_market_reproduces_the_backtest(redis_url):  # noqa: F811
    """``run_feed`` into a real Redis, read back as the service reads ``STREAM_MARKET``, one
    entry pushed per decision (the service's lockstep): the backtest's result exactly."""
    import redis

    from execrl.service.feed import FeedConfig, run_feed
    from execrl.service.streams import STREAM_MARKET

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.delete(STREAM_MARKET)
    market = parse_market(AC_SIGNAL)
    order = market.default_order()
    n = market.for_order(order).n_steps
    run_feed(client, FeedConfig(market, order, steps=n + 1, speed=0.0, seed=9), order.symbol)
    entries = [decode(f) for _, f in client.xrange(STREAM_MARKET)]
    assert [e["k"] for e in entries] == list(range(n + 1))
    policy = make_baseline("signal_aware", context_for(market, order))
    ex = Executor(policy, market)
    bt = ex.run(order, 1, 9)
    it = iter(entries)
    feed = StreamFeed(symbol=order.symbol, source=lambda env: next(it))
    pr = ex.run(order, 1, 9, venue=feed)
    pd.testing.assert_frame_equal(bt.episodes, pr.episodes, check_exact=True)
    # one entry per decision step, pulled as needed: the horizon's entry is left
    assert feed.pending() == 0 and next(it)["k"] == n and next(it, None) is None


def test_a_replay_order_can_start_at_any_entry_and_a_jump_is_refused():
    """The replay tape runs on past its horizon, so an order starting at entry 3 trades a full
    horizon on a continuous tape (its market order walks that entry's streamed book); entries
    of another feed episode mid-order are refused, never filled against."""
    spec = parse_market(SYNTHETIC)
    n = spec.for_order(REPLAY_ORDER).n_steps
    tape = MarketTape(spec, REPLAY_ORDER, 3)
    entries = [decode(encode({"symbol": "X", "step": i, "episode": tape.episode, "k": tape.k,
                              **tape.step()})) for i in range(n + 4)]
    assert [e["episode"] for e in entries] == [0] * (n + 4)  # on past the horizon
    assert [e["k"] for e in entries] == list(range(n + 4))
    feed = StreamFeed()
    for e in entries[3:3 + n]:
        feed.push(e)
    m = paper_market(spec.for_order(REPLAY_ORDER).build(1, 1), feed)
    m.reset(np.random.default_rng(0))
    book = entries[3]["book"]
    assert m.arrival_mid[0] == book["mid_units"] / 1e4
    qty = int(book["ask_qty"][0] + 1)  # the first level and one share of the second
    f = m.execute(_order(qty, OrderType.MARKET), ON)
    walked = (book["ask_qty"][0] * book["ask_px"][0] + book["ask_px"][1]) / qty / 1e4
    assert f.qty[0] == qty and f.avg_px[0] == pytest.approx(walked, rel=1e-12)
    for _ in range(n - 1):
        m.execute(_order(0, OrderType.MARKET), ON)
    other = feed_entries(spec, REPLAY_ORDER, 3, 2)[1]
    feed.push({**other[1], "step": 10_000})
    with pytest.raises(MarketDataError, match="the stream jumped"):
        m.execute(_order(0, OrderType.MARKET), ON)


def test_the_watchdogs_shadow_twap_meets_the_stream_too():
    """Run with the service's own seed (not the feed's): the order and the watchdog's shadow
    TWAP (its loss trigger's benchmark) both meet the stream, so both equal the backtest on
    the feed's seed."""
    from execrl.safety.watchdog import WatchdogConfig

    market = preset_market("ac")
    order = market.default_order()
    ex = Executor(make_baseline("ac", context_for(market, order)), market,
                  safety=Safety(watchdog=WatchdogConfig(max_latency_s=None)))
    bt = ex.run(order, 1, 5)
    it = iter(feed_entries(market, order, 5, 1)[0])
    pr = ex.run(order, 1, 12_345, venue=StreamFeed(source=lambda env: next(it)))
    pd.testing.assert_frame_equal(bt.episodes, pr.episodes, check_exact=True)
    pd.testing.assert_frame_equal(bt.shadow_twap, pr.shadow_twap, check_exact=True)
    other = ex.run(order, 1, 12_345)  # what the service's seed alone would have simulated
    assert other.shadow_twap["is_bps"].iloc[0] != pr.shadow_twap["is_bps"].iloc[0]
