"""The conformance suite every market passes (``execrl.sim.base.BatchedMarket``).

Parametrised over markets: a new market is added to ``MARKETS`` and must pass all of it
unchanged. What is checked is what the execution core, the evaluation and the audit trail
rely on: determinism under a seed, common random numbers across policies and batch sizes,
conservation of shares and cash, no fill beyond what was sent or beyond the parent order,
and refusals by name, per market, without failing the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from execrl.domain import ConfigError, OrderType
from execrl.presets import preset_market
from execrl.sim.base import (
    FILL_EVENT_DTYPE,
    ORDER_TYPE_CODES,
    REJECT_OFF_TICK,
    REJECT_ORDER_TYPE,
    BatchedMarket,
    ChildOrderBatch,
    reject_reason,
)
from execrl.sim.spec import parse_market

QTY = 100_000

#: market specification (``execrl.sim.spec``) per name; each builds its batched market
SPECS = {
    "almgren_chriss": {"model": "almgren_chriss", "n_steps": 8},
    "almgren_chriss_signal": {"model": "almgren_chriss", "n_steps": 8, "risk_aversion": 0.0,
                              "signal": {"kappa": 1.0, "sigma": 1.0}},
    # the order book: 8 steps of 10 s; a regime with a scheduled crash in the horizon
    "lob": {"model": "lob", "horizon_s": 80.0, "step_seconds": 10.0},
    "lob_crash": {**preset_market("lob:crash").model_dump(), "horizon_s": 80.0,
                  "step_seconds": 10.0},
    "lob_conservative": {"model": "lob", "horizon_s": 80.0, "step_seconds": 10.0,
                         "conservative_fills": True, "hawkes": {"alpha_self": 0.3,
                                                                "beta": 1.0, "max_rate": 2.0}},
    # HLR's model III: the book redrawn after most price moves
    "lob_reinit": {"model": "lob", "horizon_s": 80.0, "step_seconds": 10.0, "theta": 0.8,
                   "reinit_prob": 0.7},
    # historical replay of a synthetic LOBSTER-format day (no data needed): exact queues,
    # latency and fees; and with transient impact, an estimated queue and a data delay
    "replay": {"model": "replay", "data": "synthetic:1", "horizon": 60.0, "n_steps": 8,
               "pre_arrival_s": 30.0, "order_latency_s": 0.05, "latency_jitter_s": 0.02,
               "taker_fee_per_share": 0.003, "maker_fee_per_share": -0.002},
    "replay_impact": {"model": "replay", "data": "synthetic:1", "horizon": 60.0, "n_steps": 8,
                      "pre_arrival_s": 30.0, "queue": "power", "impact": 1e-5,
                      "impact_decay_s": 20.0, "market_data_delay_s": 0.5},
}
#: market name -> (n_envs, side) -> a fresh market
MARKETS: dict[str, Callable[[int, int], BatchedMarket]] = {
    name: (lambda n, side, spec=spec: parse_market(spec).build(n, side))
    for name, spec in SPECS.items()
}


def _stream(spec: dict) -> Callable[[int, int], BatchedMarket]:
    """The paper market (``execrl.service.paper``) fed the tape of the market ``spec`` builds:
    the stream venue passes the suite as the markets it replays do."""
    from execrl.service.paper import TapeFed

    return lambda n, side: TapeFed(parse_market(spec).build(n, side))


MARKETS["stream_almgren_chriss_signal"] = _stream(SPECS["almgren_chriss_signal"])
MARKETS["stream_replay"] = _stream(SPECS["replay"])
MARKETS["stream_replay_impact"] = _stream(SPECS["replay_impact"])


def _run(market: BatchedMarket, seed: int, schedule: Callable[[int, np.ndarray], np.ndarray]):
    """Trade ``schedule(step, remaining)`` market orders (capped at what remains) through
    every step; return per-step fills, events, mids and the remaining shares."""
    n = market.n_envs
    market.reset(np.random.default_rng(seed))
    remaining = np.full(n, QTY, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    orders = ChildOrderBatch.market_orders(n)
    out = {"fills": [], "events": [], "mid": [market.mid.copy()], "sent": []}
    for step in range(market.n_steps):
        qty = np.minimum(schedule(step, remaining), remaining).astype(np.int64)
        orders.qty[:] = qty
        orders.child_id[:] = np.where(qty > 0, step + 1, 0)
        fills = market.execute(orders, active, record_events=True)
        remaining -= fills.qty
        out["fills"].append(fills)
        out["events"].append(fills.events)
        out["sent"].append(qty.copy())
        out["mid"].append(market.mid.copy())
    out["remaining"] = remaining
    return out


def _twap(step: int, remaining: np.ndarray) -> np.ndarray:
    return np.full(remaining.shape, QTY // 8, dtype=np.int64)


def _front_loaded(step: int, remaining: np.ndarray) -> np.ndarray:
    return remaining // 2


@pytest.fixture(params=sorted(MARKETS), ids=sorted(MARKETS))
def make_market(request) -> Callable[[int, int], BatchedMarket]:
    return MARKETS[request.param]


@pytest.mark.parametrize("side", [1, -1])
def test_the_same_seed_gives_the_same_market_exactly(make_market, side):
    a = _run(make_market(16, side), 5, _twap)
    b = _run(make_market(16, side), 5, _twap)
    for fa, fb in zip(a["fills"], b["fills"], strict=True):
        assert np.array_equal(fa.qty, fb.qty)
        assert np.array_equal(fa.avg_px, fb.avg_px, equal_nan=True)
    assert all(np.array_equal(x, y) for x, y in zip(a["mid"], b["mid"], strict=True))
    c = _run(make_market(16, side), 6, _twap)
    assert not np.array_equal(a["mid"][-1], c["mid"][-1])  # another seed, another market


def test_order_i_meets_the_same_market_in_any_batch_size(make_market):
    small = _run(make_market(4, -1), 11, _twap)
    large = _run(make_market(32, -1), 11, _twap)
    for fs, fl in zip(small["fills"], large["fills"], strict=True):
        assert np.array_equal(fs.avg_px, fl.avg_px[:4], equal_nan=True)
    assert np.array_equal(small["mid"][-1], large["mid"][-1][:4])


def test_two_identical_policies_differ_by_exactly_nothing(make_market):
    a = _run(make_market(64, 1), 3, _twap)
    b = _run(make_market(64, 1), 3, _twap)
    cost = [sum((f.qty * np.nan_to_num(f.avg_px)) for f in run["fills"]) for run in (a, b)]
    assert np.array_equal(cost[0] - cost[1], np.zeros(64))


def _cost(market: BatchedMarket, seed: int, per_step: int) -> np.ndarray:
    """Cash paid per share, relative to the arrival mid (bps), for ``per_step`` shares a step."""
    n = market.n_envs
    market.reset(np.random.default_rng(seed))
    orders = ChildOrderBatch.market_orders(n)
    orders.qty[:] = per_step
    cash, filled = np.zeros(n), np.zeros(n)
    for _ in range(market.n_steps):
        fills = market.execute(orders, np.ones(n, dtype=bool))
        cash += fills.qty * np.nan_to_num(fills.avg_px)
        filled += fills.qty
    return (cash / filled - market.arrival_mid) / market.arrival_mid * 1e4


def test_policies_on_the_same_seed_share_the_exogenous_market(make_market):
    """Common random numbers. Every market: two nearby policies (child orders 1 % apart) on
    the same seed differ far less than on two seeds. A market that knows its own dynamics
    (``expected_mid_change``) shows it exactly: what it does by itself (the mid's move less
    what it expects from our own trading) is the same whatever the policy trades."""
    n = 128
    base = _cost(make_market(n, 1), 31, 1_000)
    paired = _cost(make_market(n, 1), 31, 1_010) - base
    unpaired = _cost(make_market(n, 1), 32, 1_010) - base
    assert np.std(paired) < 0.2 * np.std(unpaired), (np.std(paired), np.std(unpaired))

    n = 32
    runs = []
    for schedule in (_twap, _front_loaded):
        market = make_market(n, -1)
        market.reset(np.random.default_rng(21))
        remaining = np.full(n, QTY, dtype=np.int64)
        orders = ChildOrderBatch.market_orders(n)
        innovations = []
        for step in range(market.n_steps):
            orders.qty[:] = np.minimum(schedule(step, remaining), remaining)
            before = market.mid.copy()
            if not getattr(market, "expected_move_exact", True):
                return  # an estimate (the order book's): tests/test_lob_expected_move.py
            try:
                expected = market.expected_mid_change(orders.qty)
            except ConfigError:
                return  # no expected move to take out: the paired costs above are the check
            fills = market.execute(orders, np.ones(n, dtype=bool))
            remaining -= fills.qty
            innovations.append(market.mid - before - expected)
        runs.append(np.array(innovations))
    assert not np.array_equal(runs[0], np.zeros_like(runs[0]))
    np.testing.assert_allclose(runs[0], runs[1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("schedule", [_twap, _front_loaded])
def test_shares_and_cash_are_conserved_and_nothing_fills_beyond_what_was_sent(make_market,
                                                                              schedule):
    run = _run(make_market(16, -1), 8, schedule)
    filled = np.zeros(16, dtype=np.int64)
    cash = np.zeros(16)
    times: list[np.ndarray] = []
    for fills, events, sent in zip(run["fills"], run["events"], run["sent"], strict=True):
        assert events.dtype == FILL_EVENT_DTYPE
        times.append(events)
        assert (fills.qty >= 0).all() and (fills.qty <= sent + fills.working_qty).all()
        assert (fills.passive_qty <= fills.qty).all() and (fills.working_qty >= 0).all()
        # the events are the fills, share for share and currency unit for currency unit
        per_env = np.bincount(events["env"], weights=events["qty"], minlength=16)
        assert np.array_equal(per_env, fills.qty)
        assert np.array_equal(np.bincount(events["env"], minlength=16), fills.n_fills)
        step_cash = np.bincount(events["env"], weights=events["qty"] * events["px"],
                                minlength=16)
        np.testing.assert_allclose(step_cash, fills.qty * np.nan_to_num(fills.avg_px),
                                   rtol=1e-12)
        assert (events["passive"] <= (fills.passive_qty[events["env"]] > 0)).all()
        filled += fills.qty
        cash += step_cash
    assert (filled <= QTY).all()
    assert np.array_equal(filled + run["remaining"], np.full(16, QTY))
    # fill times are seconds since the order arrived, non-decreasing per environment
    every = np.concatenate(times)
    for env in range(16):
        t = every["t"][every["env"] == env]
        assert (t >= 0).all() and (np.diff(t) >= 0).all()
    assert every["t"].max() > 0
    assert np.isfinite(cash).all()


def test_a_market_refuses_by_name_per_market_and_the_batch_goes_on(make_market):
    """An order type the market does not support (``order_types``, market orders only when
    undeclared) is refused by name; a market that supports them all refuses a limit price
    off its tick grid instead."""
    market = make_market(6, -1)
    market.reset(np.random.default_rng(0))
    orders = ChildOrderBatch.market_orders(6)
    orders.qty[:] = 1_000
    supported = set(getattr(market, "order_types", {ORDER_TYPE_CODES[OrderType.MARKET]}))
    unsupported = [code for t, code in ORDER_TYPE_CODES.items() if code not in supported]
    if unsupported:
        orders.order_type[2] = unsupported[0]
        orders.limit_px[2] = market.mid[2]
        expected, words = REJECT_ORDER_TYPE, "not supported"
    elif market.tick_size > 0:
        orders.order_type[2] = ORDER_TYPE_CODES[OrderType.LIMIT]
        orders.limit_px[2] = (np.floor(market.mid[2] / market.tick_size) + 0.5) * market.tick_size
        expected, words = REJECT_OFF_TICK, "off the market's tick grid"
    else:
        pytest.skip("this market supports every order type on continuous prices")
    fills = market.execute(orders, np.ones(6, dtype=bool))
    assert fills.reject[2] == expected and fills.qty[2] == 0
    assert words in reject_reason(fills.reject[2])
    others = np.delete(np.arange(6), 2)
    assert (fills.reject[others] == 0).all() and (fills.qty[others] > 0).all()
    # the others trade exactly as if the refused order had not been sent
    again = make_market(6, -1)
    again.reset(np.random.default_rng(0))
    orders.qty[2] = 0
    orders.order_type[2] = ORDER_TYPE_CODES[OrderType.MARKET]
    without = again.execute(orders, np.ones(6, dtype=bool))
    assert np.array_equal(fills.qty[others], without.qty[others])
    assert np.array_equal(fills.avg_px[others], without.avg_px[others])


def test_a_market_declares_its_tick_size_and_features(make_market):
    market = make_market(3, 1)
    assert market.tick_size >= 0.0
    market.reset(np.random.default_rng(1))
    for name in market.available_features:
        values = market.feature(name)
        assert values.shape == (3,) and np.isfinite(values).all()
    for name in ("arrival_vwap", "interval_vwap", "arrival_mid", "mid"):
        values = np.asarray(getattr(market, name))
        assert values.shape == (3,) and np.isfinite(values).all()
