"""The risk guard (``execrl.safety.guard``): every control trips on a hand-built case.

Each test drives ``RiskGuard`` directly: a child order goes into ``check`` (which cuts or
refuses it, in place), a hand-written venue answer goes into ``record``; the numbers are
chosen so the expected cut can be read off by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from execrl.domain import ConfigError, OrderConstraints, OrderType
from execrl.safety import GUARD_REASONS, KillSwitch, RiskGuard, RiskLimits, is_guard_reject
from execrl.safety import guard as g
from execrl.sim.base import ORDER_TYPE_CODES, ChildOrderBatch, FillBatch

MARKET = ORDER_TYPE_CODES[OrderType.MARKET]
LIMIT = ORDER_TYPE_CODES[OrderType.LIMIT]
IOC = ORDER_TYPE_CODES[OrderType.IOC]
MID = 100.0


def _orders(qty, otype=MARKET, px=math.nan, cancel=False, n=None) -> ChildOrderBatch:
    n = n or np.size(qty)
    o = ChildOrderBatch.market_orders(n)
    o.qty[:] = qty
    o.order_type[:] = otype
    o.limit_px[:] = px
    o.cancel[:] = cancel
    o.child_id[:] = 1
    return o


def _fills(qty, working=0, n_fills=None) -> FillBatch:
    qty = np.atleast_1d(np.asarray(qty, dtype=np.int64))
    n = qty.shape[0]
    return FillBatch(
        qty=qty, avg_px=np.full(n, MID), passive_qty=np.zeros(n, dtype=np.int64),
        fees=np.zeros(n),
        n_fills=(qty > 0).astype(np.int32) if n_fills is None else np.full(n, n_fills, np.int32),
        working_qty=np.broadcast_to(np.asarray(working, dtype=np.int64), (n,)).copy(),
        cancelled_qty=np.zeros(n, dtype=np.int64), reject=np.zeros(n, dtype=np.int8),
    )


class Desk:
    """A guard and a clock: ``send`` checks a child order and books the venue's answer (by
    default the whole order fills at once)."""

    def __init__(self, limits: RiskLimits, n=1, side=1, qty=10_000, step_s=1.0, **kw):
        self.guard = RiskGuard(limits, n, side, qty, step_seconds=step_s, **kw)
        self.n = n
        self.t = 0.0
        self.volume = np.full(n, 1000.0)

    def cap(self) -> np.ndarray:
        return self.guard.size_cap(self._t(), np.full(self.n, MID), self._vol(), self._on())

    def send(self, qty, otype=MARKET, px=math.nan, cancel=False, fill=None, working=0,
             n_fills=None, advance=True):
        o = _orders(qty, otype, px, cancel, self.n)
        code = self.guard.check(o, self._t(), np.full(self.n, MID), self._vol(), self._on())
        code = code.copy()
        filled = o.qty if fill is None else fill
        self.guard.record(o, _fills(filled, working, n_fills), self._t(), self._vol(), self._on())
        if advance:
            self.t += self.guard.step_seconds
        return o, code

    def _t(self):
        return np.full(self.n, self.t)

    def _vol(self):
        return self.volume if self.guard.needs_volume else None

    def _on(self):
        return np.ones(self.n, dtype=bool)


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"child_max": 0}, "risk limits field 'child_max' = 0 is not valid"),
        ({"participation": 1.5}, "risk limits field 'participation' = 1.5 is not valid"),
        ({"price_band_bps": -3.0}, "'price_band_bps' = -3.0"),
        ({"size_rule": "any"}, "'size_rule' = 'any'"),
        ({"chld_max": 5}, "'chld_max'"),
        ({"message_limit": 10, "message_window_s": float("nan")}, "'message_window_s' = nan"),
        ({"participation_window_s": 60.0}, "participation_window_s needs participation"),
    ],
)
def test_bad_risk_limits_are_refused_in_one_line_naming_the_field(data, needle):
    with pytest.raises(ConfigError) as err:
        RiskLimits.from_dict(data)
    text = str(err.value)
    assert needle in text and "\n" not in text


def test_adv_fraction_without_an_adv_is_refused():
    with pytest.raises(ConfigError, match="adv_fraction"):
        RiskGuard(RiskLimits(adv_fraction=0.05), 1, 1, 100)


def test_limits_from_an_orders_constraints_and_merging_takes_the_tighter():
    order = RiskLimits.from_constraints(
        OrderConstraints(child_max=500, participation=0.2, price_band_bps=10.0)
    )
    firm = RiskLimits(child_max=800, participation=0.1, message_limit=50,
                      restricted_symbols=("XYZ",), min_resting_s=2.0)
    both = firm.merge(order)
    assert (both.child_max, both.participation, both.price_band_bps) == (500, 0.1, 10.0)
    assert both.message_limit == 50 and both.restricted_symbols == ("XYZ",)
    assert both.min_resting_s == 2.0


def test_every_control_has_its_own_reason():
    assert len(set(GUARD_REASONS)) == len(GUARD_REASONS) == 17
    assert GUARD_REASONS[g.GUARD_PASSED] == ""
    assert not is_guard_reject(g.GUARD_PARENT_TOTAL) and is_guard_reject(g.GUARD_DONE)


# -- caps: cut, and the order still goes out ---------------------------------------------------
def test_child_max_cuts():
    desk = Desk(RiskLimits(child_max=300))
    assert desk.cap()[0] == 300
    o, code = desk.send(1000)
    assert o.qty[0] == 300 and code[0] == g.GUARD_CHILD_MAX


def test_adv_and_remaining_caps_combine_by_the_size_rule():
    # ADV 10,000 x 5 % = 500; 20 % of the 10,000 remaining = 2,000
    either = Desk(RiskLimits(adv_fraction=0.05, remaining_fraction=0.2), adv_shares=10_000)
    both = Desk(RiskLimits(adv_fraction=0.05, remaining_fraction=0.2, size_rule="both"),
                adv_shares=10_000)
    assert either.cap()[0] == 2000 and both.cap()[0] == 500
    o, code = both.send(900)
    assert o.qty[0] == 500 and code[0] == g.GUARD_ADV
    o, code = either.send(2500)
    assert o.qty[0] == 2000 and code[0] == g.GUARD_REMAINING


def test_a_remaining_fraction_cap_alone_still_lets_the_order_finish():
    # 20 % of what remains shrinks geometrically; the floor (100 shares) ends it
    desk = Desk(RiskLimits(remaining_fraction=0.2))
    steps = 0
    while desk.guard.filled[0] < 10_000 and steps < 100:
        desk.send(10_000)
        steps += 1
    assert desk.guard.filled[0] == 10_000
    # 10,000 x 0.8^k falls under 100 shares after 21 steps, then at most 1 more
    assert steps <= 23
    assert desk.cap()[0] == 0  # finished: nothing more
    o, code = desk.send(1)
    assert o.qty[0] == 0 and code[0] == g.GUARD_DONE


def test_participation_is_capped_over_the_rolling_window():
    # 10 % of the market volume of the window (3 steps of 1,000 each: this one and the two
    # before) less what we filled in it
    desk = Desk(RiskLimits(participation=0.1, participation_window_s=3.0))
    assert desk.cap()[0] == 100  # no history: 10 % of this step's 1,000
    o, code = desk.send(80)
    assert o.qty[0] == 80 and code[0] == 0
    assert desk.cap()[0] == 200 - 80  # 10 % of 2,000, less our 80
    o, code = desk.send(500)
    assert o.qty[0] == 120 and code[0] == g.GUARD_PARTICIPATION
    assert desk.cap()[0] == 300 - 200
    desk.send(0)
    # the first step (80 shares) has left the window: 10 % of 3,000 less 120 + 0
    assert desk.cap()[0] == 300 - 120


def test_participation_without_a_window_is_the_steps_expected_volume():
    desk = Desk(RiskLimits(participation=0.25))
    desk.send(250)
    assert desk.cap()[0] == 250  # no memory across steps: OrderConstraints' meaning


def test_price_band_cuts_a_limit_price_to_the_edge_and_a_market_order_becomes_an_ioc():
    # 10 bp of 100.00 = 0.10: a buy's ceiling 100.10, a sell's floor 99.90 (tick 0.01)
    buy = Desk(RiskLimits(price_band_bps=10.0), tick_size=0.01)
    o, code = buy.send(100, LIMIT, 100.50)
    assert o.limit_px[0] == pytest.approx(100.10) and code[0] == g.GUARD_PRICE_BAND
    o, code = buy.send(100, LIMIT, 100.05)
    assert o.limit_px[0] == 100.05 and code[0] == 0
    o, code = buy.send(100)
    assert o.order_type[0] == IOC and o.limit_px[0] == pytest.approx(100.10)
    sell = Desk(RiskLimits(price_band_bps=10.0), side=-1, tick_size=0.01)
    o, code = sell.send(100, LIMIT, 99.00)
    assert o.limit_px[0] == pytest.approx(99.90) and code[0] == g.GUARD_PRICE_BAND


def test_max_child_value_cuts_at_the_limit_price():
    desk = Desk(RiskLimits(max_child_value=25_000.0))
    assert desk.cap()[0] == 250  # at the mid, 100.00
    o, code = desk.send(1000, LIMIT, 125.0)
    assert o.qty[0] == 200 and code[0] == g.GUARD_VALUE


def test_never_more_than_the_parent_has_left():
    desk = Desk(RiskLimits(), qty=1000)
    desk.send(700)
    o, code = desk.send(700)
    assert o.qty[0] == 300 and code[0] == g.GUARD_PARENT_TOTAL
    # shares working count as sent unless the new order cancels them first
    desk = Desk(RiskLimits(), qty=1000)
    desk.send(600, LIMIT, 99.0, fill=np.array([0]), working=600)
    o, code = desk.send(600, IOC, 101.0, fill=np.array([0]), working=600)
    assert o.qty[0] == 400 and code[0] == g.GUARD_PARENT_TOTAL
    o, code = desk.send(1000, LIMIT, 99.0, cancel=True, fill=np.array([0]), working=1000)
    assert o.qty[0] == 1000 and code[0] == 0


# -- prohibitions: refused ---------------------------------------------------------------------
def test_nothing_after_the_horizon():
    desk = Desk(RiskLimits(), horizon_s=2.0)
    assert desk.send(10)[1][0] == 0
    assert desk.send(10)[1][0] == 0
    o, code = desk.send(10)  # t = 2.0
    assert o.qty[0] == 0 and code[0] == g.GUARD_DONE and o.child_id[0] == 0


def test_message_rate_limit():
    # 3 messages per 2 s: one order a step at 0.5 s steps fills it in 3 steps
    desk = Desk(RiskLimits(message_limit=3, message_window_s=2.0), step_s=0.5)
    codes = [desk.send(10)[1][0] for _ in range(6)]
    # t = 0, .5, 1 sent; 1.5 refused (3 in the 2 s before it); at 2.0 the one of t=0 has
    # left the window, at 2.5 the one of t=0.5
    assert codes == [0, 0, 0, g.GUARD_MESSAGE_RATE, 0, 0]
    assert desk.guard.filled[0] == 50


def test_cancel_rate_throttle():
    desk = Desk(RiskLimits(cancel_limit=2, cancel_window_s=10.0))
    desk.send(100, LIMIT, 99.0, fill=np.array([0]), working=100)
    for _ in range(2):  # two replaces: two cancels
        o, code = desk.send(100, LIMIT, 99.0, cancel=True, fill=np.array([0]), working=100)
        assert code[0] == 0 and o.cancel[0]
    o, code = desk.send(100, LIMIT, 99.0, cancel=True, fill=np.array([0]), working=100)
    assert code[0] == g.GUARD_CANCEL_RATE and o.qty[0] == 0 and not o.cancel[0]


def test_min_resting_time():
    desk = Desk(RiskLimits(min_resting_s=3.0))
    desk.send(100, LIMIT, 99.0, fill=np.array([0]), working=100)  # t = 0
    o, code = desk.send(0, cancel=True, fill=np.array([0]), working=100)  # t = 1: too early
    assert code[0] == g.GUARD_MIN_RESTING and not o.cancel[0]
    desk.send(0, fill=np.array([0]), working=100)  # t = 2
    o, code = desk.send(0, cancel=True, fill=np.array([0]), working=0)  # t = 3: allowed
    assert code[0] == 0 and o.cancel[0]


def test_repeated_execution_throttle_latches_until_reenabled():
    desk = Desk(RiskLimits(repeat_fill_limit=3, repeat_window_s=100.0))
    for _ in range(3):
        assert desk.send(10)[1][0] == 0
    assert not desk.guard.latched[0]
    desk.send(10)  # the 4th fill within the window trips it
    assert desk.guard.latched[0]
    desk.t += 1000.0  # long after: still off
    assert desk.cap()[0] == 0
    o, code = desk.send(10)
    assert o.qty[0] == 0 and code[0] == g.GUARD_REPEAT
    desk.guard.reenable([0])
    assert desk.send(10)[1][0] == 0


def test_duplicate_orders_are_refused_within_the_window():
    desk = Desk(RiskLimits(duplicate_window_s=1.5), step_s=1.0)
    desk.send(100, LIMIT, 99.0)  # t = 0
    o, code = desk.send(100, LIMIT, 99.0)  # t = 1: the same order again
    assert code[0] == g.GUARD_DUPLICATE and o.qty[0] == 0
    assert desk.send(100, LIMIT, 99.01)[1][0] == 0  # t = 2: another price
    desk.t += 1.0
    assert desk.send(100, LIMIT, 99.01)[1][0] == 0  # t = 4: outside the window


def test_restricted_symbols():
    desk = Desk(RiskLimits(restricted_symbols=("XYZ",)), n=2, symbol=["ABC", "XYZ"])
    assert list(desk.cap() > 0) == [True, False]
    o, code = desk.send(np.array([10, 10]))
    assert list(o.qty) == [10, 0] and list(code) == [0, g.GUARD_RESTRICTED]


def test_short_sale_locate_for_sells_only():
    sell = Desk(RiskLimits(locate_shares=500), side=-1)
    assert sell.cap()[0] == 500
    sell.send(400)
    o, code = sell.send(200)
    assert code[0] == g.GUARD_LOCATE and o.qty[0] == 0
    assert sell.send(100)[1][0] == 0
    buy = Desk(RiskLimits(locate_shares=500), side=1)
    assert buy.send(2000)[1][0] == 0


def test_kill_switch_per_order_per_policy_and_global_cancels_working_orders():
    kill = KillSwitch(3, ("rl", "twap"))
    desk = Desk(RiskLimits(), n=3, policy=["rl", "rl", "twap"], kill=kill)
    desk.send(np.array([100, 100, 100]), LIMIT, 99.0, fill=np.zeros(3, np.int64), working=100)
    kill.kill_orders([2])
    o, code = desk.send(np.array([10, 10, 10]), fill=np.array([10, 10, 0]), working=[100, 100, 0])
    assert list(o.qty) == [10, 10, 0] and list(code) == [0, 0, g.GUARD_KILL]
    assert list(o.cancel) == [False, False, True]  # the killed order's working one goes
    kill.kill_policy("rl")
    assert list(desk.cap()) == [0, 0, 0]
    o, code = desk.send(np.array([10, 10, 10]), fill=np.zeros(3, np.int64), working=0)
    assert list(code) == [g.GUARD_KILL] * 3 and list(o.cancel) == [True, True, False]
    kill.release_all()
    assert (desk.cap() > 0).all()
    kill.kill_all()
    assert (desk.cap() == 0).all()


def test_the_last_decisions_cancel_passes_every_throttle_but_its_new_order_does_not():
    limits = RiskLimits(min_resting_s=10.0, cancel_limit=1, message_limit=1,
                        message_window_s=10.0)
    desk = Desk(limits)
    desk.send(100, LIMIT, 99.0, fill=np.array([0]), working=100)  # t = 0: one message
    o = _orders(50, MARKET, cancel=True)
    t, mid, on = np.array([1.0]), np.array([MID]), np.array([True])
    code = desk.guard.check(o, t, mid, None, on, final=np.array([True]))
    # the horizon: the working order is cancelled although it rested 1 s of 10 and the
    # message budget is spent; the new market order is refused by the message limit
    assert o.cancel[0] and o.qty[0] == 0 and code[0] == g.GUARD_MESSAGE_RATE
    o = _orders(50, MARKET, cancel=True)
    code = desk.guard.check(o, t, mid, None, on, final=np.array([False]))
    assert not o.cancel[0] and o.qty[0] == 0 and code[0] == g.GUARD_MESSAGE_RATE
