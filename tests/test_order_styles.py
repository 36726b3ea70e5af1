"""The execution core's order styles (``env.spaces.OrderStyle``) on a hand-built book.

``StaticBook`` is a test market whose quotes never move (bid 99.99 / ask 100.01, tick 0.01):
a buy at or through the ask fills at once at the ask, a lower limit rests and fills
``passive_per_step`` shares a step at its own price, a resting order expires after its
``ttl_steps``. It records every child order it receives, so the tests check what the core
sent: prices from the touch, the band, cancel / replace, TWAP-slice sizes, the horizon sweep.
"""

from __future__ import annotations

import numpy as np
import pytest

from execrl.domain import ConfigError, OrderConstraints, OrderType
from execrl.env.core import BatchedExecution
from execrl.env.rewards import IsBpsReward
from execrl.env.spaces import ACTION_SETS, ActionSet, OrderStyle
from execrl.sim.base import ORDER_TYPE_CODES, REJECT_OFF_TICK, ChildOrderBatch, FillBatch

BID, ASK, TICK = 99.99, 100.01, 0.01
CODE = {t: ORDER_TYPE_CODES[t] for t in OrderType}


class StaticBook:
    def __init__(self, n_envs: int, n_steps: int, passive_per_step: int = 0):
        self.n_envs, self.n_steps, self.tick_size = n_envs, n_steps, TICK
        self.available_features = ("best_bid", "best_ask", "expected_volume", "spread_bps")
        self.passive_per_step = passive_per_step
        self.sent: list[dict] = []
        self.reset(None)

    mid = property(lambda self: np.full(self.n_envs, (BID + ASK) / 2))
    arrival_mid = mid
    arrival_vwap = mid
    interval_vwap = mid

    def reset(self, rng, env_ids=None) -> None:
        n = self.n_envs
        self.working = np.zeros(n, dtype=np.int64)
        self.px = np.full(n, np.nan)
        self.ttl = np.zeros(n, dtype=np.int64)

    def feature(self, name: str) -> np.ndarray:
        values = {"best_bid": BID, "best_ask": ASK, "expected_volume": 1e6, "spread_bps": 2.0}
        return np.full(self.n_envs, values[name])

    def expected_mid_change(self, shares):
        return np.zeros(self.n_envs)

    def execute(self, orders: ChildOrderBatch, active, record_events: bool = False) -> FillBatch:
        n = self.n_envs
        self.sent.append({f: getattr(orders, f).copy() for f in
                          ("qty", "order_type", "limit_px", "ttl_steps", "cancel")})
        qty = np.zeros(n, dtype=np.int64)
        px_sum = np.zeros(n)
        passive = np.zeros(n, dtype=np.int64)
        cancelled = np.where(orders.cancel & active, self.working, 0)
        self.working -= cancelled
        reject = np.zeros(n, dtype=np.int8)
        for i in np.flatnonzero(active & (orders.qty > 0)):
            t, q, lp = orders.order_type[i], orders.qty[i], orders.limit_px[i]
            if t != CODE[OrderType.MARKET] and abs(lp / TICK - round(lp / TICK)) > 1e-6:
                reject[i] = REJECT_OFF_TICK
                continue
            if t == CODE[OrderType.MARKET] or lp >= ASK - 1e-9:
                qty[i] += q
                px_sum[i] += q * ASK
            elif t in (CODE[OrderType.LIMIT], CODE[OrderType.MARKETABLE_LIMIT]):
                self.working[i], self.px[i], self.ttl[i] = q, lp, orders.ttl_steps[i]
        for i in np.flatnonzero(active & (self.working > 0)):
            f = min(self.working[i], self.passive_per_step)
            qty[i] += f
            passive[i] += f
            px_sum[i] += f * self.px[i]
            self.working[i] -= f
            self.ttl[i] -= 1
            if self.ttl[i] <= 0 and self.working[i] > 0:
                cancelled[i] += self.working[i]
                self.working[i] = 0
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.where(qty > 0, px_sum / qty, np.nan)
        return FillBatch(qty=qty, avg_px=avg, passive_qty=passive, fees=np.zeros(n),
                         n_fills=(qty > 0).astype(np.int32), working_qty=self.working.copy(),
                         cancelled_qty=cancelled, reject=reject)


def _core(actions, n_envs=1, n_steps=4, qty=1000, side=1, passive=0, constraints=None,
          observations=("remaining_ratio", "elapsed_ratio")):
    market = StaticBook(n_envs, n_steps, passive)
    actions = ACTION_SETS[actions] if isinstance(actions, str) else actions
    core = BatchedExecution(market, qty, side, observations, actions, IsBpsReward(),
                            constraints, autoreset=False)
    core.reset(seed=0)
    return core, market


@pytest.mark.parametrize(("side", "near", "far"), [(1, BID, ASK), (-1, ASK, BID)])
def test_limit_prices_are_ticks_from_the_near_or_far_touch(side, near, far):
    styles = (OrderStyle(OrderType.LIMIT, "near", -2, 1), OrderStyle(OrderType.LIMIT, "near", 0, 1),
              OrderStyle(OrderType.IOC, "far", 0), OrderStyle(OrderType.IOC, "far", 2))
    aset = ActionSet("t", (0.1, 0.1, 0.1, 0.1), styles=styles)
    core, market = _core(aset, n_envs=4, side=side)
    core.step(np.arange(4))
    sent = market.sent[-1]
    expected = [near - side * 2 * TICK, near, far, far + side * 2 * TICK]
    assert sent["limit_px"] == pytest.approx(expected, abs=1e-9)
    assert list(sent["order_type"]) == [CODE[OrderType.LIMIT]] * 2 + [CODE[OrderType.IOC]] * 2
    assert list(sent["ttl_steps"]) == [1, 1, 0, 0]


def test_a_market_order_on_a_book_with_a_band_becomes_an_ioc_at_the_band_edge():
    band = OrderConstraints(price_band_bps=0.5)  # 0.5 bp of 100.00 = 0.005: edge 100.00
    core, market = _core("seed004", constraints=band)
    core.step(np.array([0]))
    sent = market.sent[-1]
    assert sent["order_type"][0] == CODE[OrderType.IOC]
    assert sent["limit_px"][0] == pytest.approx(100.00)
    # the edge is below the ask: nothing fills, and nothing fills beyond the band ever
    assert core.stats.filled[0] == 0


def test_actions_priced_beyond_the_band_are_masked_and_cut_to_the_edge_when_taken():
    band = OrderConstraints(price_band_bps=1.5)  # edge 100.01 (the ask): +1 tick is beyond
    core, market = _core("seed001", constraints=band)
    aset = ACTION_SETS["seed001"]
    mask = core.action_masks()[0]
    for a, style in enumerate(aset.styles):
        price = (ASK if style.anchor == "far" else BID) + style.ticks * TICK
        assert mask[a] == (price <= 100.01 + 1e-9), aset.labels[a]
    beyond = next(a for a, st in enumerate(aset.styles) if st.anchor == "far" and st.ticks == 1)
    core.step(np.array([beyond]))
    assert market.sent[-1]["limit_px"][0] == pytest.approx(100.01)
    assert core.stats.cuts[0] == 1 and core.stats.breaches[0] == 0


def test_multi_discrete_actions_are_the_flat_action_of_their_factors():
    aset = ACTION_SETS["seed001"]
    core_flat, m_flat = _core("seed001", n_envs=3)
    core_multi, m_multi = _core("seed001", n_envs=3)
    multi = np.array([[0, 0, 0, 0], [1, 3, 2, 1], [3, 4, 3, 2]])
    core_flat.step(np.ravel_multi_index(tuple(multi.T), aset.factors))
    core_multi.step(multi)
    for field in ("qty", "order_type", "limit_px", "ttl_steps"):
        np.testing.assert_array_equal(m_flat.sent[-1][field], m_multi.sent[-1][field])
    assert aset.space(multi_discrete=True).nvec.tolist() == list(aset.factors)
    with pytest.raises(ValueError, match="sub-action 1 = 5 is outside"):
        core_multi.step(np.array([[0, 5, 0, 0]] * 3))


def test_twap_slice_sizes_are_what_remains_over_the_steps_left():
    core, market = _core("twap_slices", n_steps=4, qty=1000)
    core.step(np.array([2]))  # one slice: 1000 / 4
    assert market.sent[-1]["qty"][0] == 250
    core.step(np.array([3]))  # a double slice: 2 x 750 / 3
    assert market.sent[-1]["qty"][0] == 500
    core.step(np.array([0]))  # skip
    assert market.sent[-1]["qty"][0] == 0


def test_a_new_resting_order_replaces_the_working_one_and_the_horizon_sweeps_it():
    core, market = _core("seed000", n_steps=3, qty=900, passive=100)
    core.step(np.array([1]))  # passive: 300 at the bid for one step; 100 fill
    assert market.sent[-1]["limit_px"][0] == pytest.approx(BID)
    assert core.stats.filled[0] == 100 and core.stats.working[0] == 0  # ttl 1: expired
    assert core.stats.cancels[0] == 1
    aset = ActionSet("gtc", (0.5, 0.25), styles=(OrderStyle(OrderType.LIMIT, "near", 0, 0),) * 2)
    core, market = _core(aset, n_steps=3, qty=1000, passive=100)
    core.step(np.array([0]))  # 500 rest until cancelled, 100 fill
    assert core.stats.working[0] == 400
    core.step(np.array([1]))  # replaces: cancels the 400 first, then 900 x 0.25
    assert market.sent[-1]["cancel"][0] and market.sent[-1]["qty"][0] == 225
    core.step(np.array([1]))  # the horizon: cancel what works, sweep the rest at market
    last = market.sent[-1]
    assert last["cancel"][0] and last["order_type"][0] == CODE[OrderType.MARKET]
    assert core.done[0] and core.remaining[0] == 0


def test_limit_styles_are_refused_on_a_market_without_a_book():
    from execrl.sim.spec import parse_market

    market = parse_market({"model": "almgren_chriss", "n_steps": 4}).build(1, 1)
    with pytest.raises(ConfigError, match="action set 'seed000' sends limit orders"):
        BatchedExecution(market, 1000, 1, ("remaining_ratio",), ACTION_SETS["seed000"],
                         IsBpsReward())


def test_order_features_working_ratio_and_twap_deviation():
    obs_names = ("remaining_ratio", "elapsed_ratio", "twap_deviation", "working_ratio")
    aset = ActionSet("gtc", (0.5,), styles=(OrderStyle(OrderType.LIMIT, "near", 0, 0),))
    core, _ = _core(aset, n_steps=4, qty=1000, passive=100, observations=obs_names)
    obs, *_ = core.step(np.array([0]))  # 500 rest, 100 fill: remaining 900, working 400
    assert obs[0].tolist() == pytest.approx([0.9, 0.25, 0.9 - 0.75, 0.4])


def test_passive_baselines_send_the_orders_they_describe():
    from execrl.policies.base import PolicyContext
    from execrl.policies.baselines import make_baseline
    from execrl.sim.spec import MarketKnowledge

    ctx = PolicyContext(MarketKnowledge(4, np.full(4, 0.25), None), 1000, 1)
    # nothing fills passively here: passive TWAP sweeps each slice at its end
    for name, expect in [("passive_twap", [(500, "limit"), (500, "market"), (500, "limit")]),
                         ("submit_and_leave", [(1000, "limit"), (0, None), (0, None)])]:
        policy = make_baseline(name, ctx)
        core, market = _core(policy.action_set, n_steps=4, qty=1000, passive=0,
                             observations=policy.observations)
        obs = core.observe()
        for step, (q, kind) in enumerate(expect):
            obs, *_ = core.step(policy.act(obs))
            sent = market.sent[-1]
            assert sent["qty"][0] == q, (name, step)
            if kind == "limit":
                assert sent["order_type"][0] == CODE[OrderType.LIMIT]
                assert sent["limit_px"][0] == pytest.approx(BID)
            if kind == "market":
                assert sent["order_type"][0] == CODE[OrderType.MARKET]


def test_seed003_reward_is_the_seeds_formula():
    from execrl.env.rewards import RewardContext, StepOutcome, make_reward

    reward = make_reward("seed003", 0.0, 0.0)
    step = StepOutcome(
        shares=np.array([250, 0]), exec_px=np.array([100.05, np.nan]),
        mid_before=np.array([100.0, 100.0]), mid_after=np.array([100.02, 100.0]),
        remaining_after=np.array([750, 1000]), is_bps=np.zeros(2),
        cut=np.zeros(2, bool), done=np.zeros(2, bool), episode_is_bps=np.zeros(2),
        episode_is_vs_arrival_vwap_bps=np.zeros(2), elapsed_after=np.array([0.95, 0.5]),
    )
    r = reward(RewardContext(1000, 1, np.full(2, 100.0), 0.0), step)
    expected0 = (10 * 0.25 - 100 * 0.05 / 100 - 50 * (0.95 - 0.9)
                 - 50 * abs(100.02 - 100.05) / 100.05)
    assert r == pytest.approx([expected0, 0.0])


def test_seed000_per_fill_reward_prices_each_fill_at_its_own_price():
    from execrl.env.rewards import RewardContext, StepOutcome, make_reward
    from execrl.sim.base import FILL_EVENT_DTYPE

    reward = make_reward("arrival_vwap", 0.0, 0.0)
    events = np.zeros(3, dtype=FILL_EVENT_DTYPE)
    events["env"] = [0, 0, 1]
    events["qty"] = [100, 100, 50]
    events["px"] = [100.5, 99.0, 100.0]  # env 0: one fill beyond the cap, one inside
    step = StepOutcome(
        shares=np.array([200, 50]), exec_px=np.array([99.75, 100.0]),
        mid_before=np.array([100.0, 100.0]), mid_after=np.array([100.0, 100.0]),
        remaining_after=np.array([800, 950]), is_bps=np.zeros(2),
        cut=np.zeros(2, bool), done=np.zeros(2, bool), episode_is_bps=np.zeros(2),
        episode_is_vs_arrival_vwap_bps=np.zeros(2), fill_events=events,
    )
    r = reward(RewardContext(1000, 1, np.full(2, 100.0), 0.0), step)
    # a buy: aux = (mid - px) / mid x 10, capped at +-1, per fill; weight 1 - 0.85
    per_fill_0 = np.clip(-0.05, -1, 1) + np.clip(0.1, -1, 1)
    assert r == pytest.approx([0.15 * per_fill_0, 0.0])
    # one fill per step at the step's average price would give another number
    assert 0.15 * np.clip(0.025, -1, 1) != pytest.approx(r[0])


def test_the_behaviour_tally_splits_decisions_by_tick_flow_against_the_side():
    from execrl.evaluate.behaviour import BehaviourTally

    class FlowBook(StaticBook):
        """Selling pressure in even envs, buying pressure in odd ones."""

        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.available_features = (*self.available_features, "tick_flow_10s")

        def feature(self, name):
            if name == "tick_flow_10s":
                return np.where(np.arange(self.n_envs) % 2 == 0, -500.0, 300.0)
            return super().feature(name)

    n = 40
    market = FlowBook(n, 4)
    core = BatchedExecution(market, 1000, 1, ("remaining_ratio",), ACTION_SETS["seed000"],
                            IsBpsReward(), autoreset=False)
    core.reset(seed=0)
    tally = BehaviourTally(core)
    # the seed's buyer: aggressive under selling pressure (even envs), passive otherwise
    actions = np.where(np.arange(n) % 2 == 0, 2, 1)
    for _ in range(3):
        tally.before(actions)
        core.step(actions)
        tally.after()
    out = tally.summary(seed=1)
    by = out["by_tick_flow"]
    assert by["opposite"] == {"decisions": 60, "hold": 0.0, "passive": 0.0, "aggressive": 1.0}
    assert by["same"] == {"decisions": 60, "hold": 0.0, "passive": 1.0, "aggressive": 0.0}
    diff = out["aggressive_opposite_minus_same"]
    assert diff["value"] == 1.0 and diff["ci95"] == [1.0, 1.0]
    assert diff["expected_sign_holds"] is True
    assert out["action_histogram"] == {"hold": 0, "passive": 60, "aggressive": 60}
