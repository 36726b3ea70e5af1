"""The risk guard inside the execution core: forced child orders, the kill switch, verdicts, and
a property test (``hypothesis``) in which random limits and an adversarial policy (random
actions, oversized forced orders, kills, re-enables) never get a child order past a limit.

``Book`` is a hand-built market whose quotes never move (bid 99.99 / ask 100.01, tick 0.01): a
marketable order fills at once at the ask (bid for a sell), a resting limit fills
``passive_per_step`` shares a step. It logs every child order the core sent, so the test checks
what left the core with brute force, independently of the guard's own rings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execrl.domain import ConfigError, OrderConstraints, OrderType, ParentOrder
from execrl.env.core import BatchedExecution
from execrl.env.factory import EnvConfig, make_execution, make_guard
from execrl.env.rewards import IsBpsReward
from execrl.env.spaces import ACTION_SETS, ActionSet, OrderStyle
from execrl.safety import KillSwitch, RiskGuard, RiskLimits
from execrl.safety import guard as g
from execrl.sim.almgren_chriss import ACMarketConfig
from execrl.sim.base import ORDER_TYPE_CODES, ChildOrderBatch, FillBatch

BID, ASK, TICK = 99.99, 100.01, 0.01
MID = (BID + ASK) / 2
CODE = {t: ORDER_TYPE_CODES[t] for t in OrderType}


class Book:
    def __init__(self, n_envs: int, n_steps: int, side: int, passive_per_step: int = 0,
                 volume: float = 1e6):
        self.n_envs, self.n_steps, self.tick_size, self.side = n_envs, n_steps, TICK, side
        self.available_features = ("best_bid", "best_ask", "expected_volume", "spread_bps")
        self.passive_per_step, self.volume = passive_per_step, volume
        self.sent: list[dict] = []
        self.reset(None)

    mid = property(lambda self: np.full(self.n_envs, MID))
    arrival_mid = mid
    arrival_vwap = mid
    interval_vwap = mid

    def reset(self, rng, env_ids=None) -> None:
        n = self.n_envs
        self.working = np.zeros(n, dtype=np.int64)
        self.px = np.full(n, np.nan)

    def feature(self, name: str) -> np.ndarray:
        values = {"best_bid": BID, "best_ask": ASK, "expected_volume": self.volume,
                  "spread_bps": 2.0}
        return np.full(self.n_envs, values[name])

    def expected_mid_change(self, shares):
        return np.zeros(self.n_envs)

    def execute(self, orders: ChildOrderBatch, active, record_events: bool = False) -> FillBatch:
        n = self.n_envs
        far = ASK if self.side > 0 else BID
        cancelled = np.where(orders.cancel & active, self.working, 0)
        self.sent.append({f: getattr(orders, f).copy() for f in
                          ("qty", "order_type", "limit_px", "ttl_steps", "cancel")}
                         | {"active": active.copy(), "working_before": self.working.copy()})
        self.working -= cancelled
        qty = np.zeros(n, dtype=np.int64)
        px_sum = np.zeros(n)
        passive = np.zeros(n, dtype=np.int64)
        for i in np.flatnonzero(active & (orders.qty > 0)):
            t, q, lp = orders.order_type[i], orders.qty[i], orders.limit_px[i]
            if t == CODE[OrderType.MARKET] or self.side * (lp - far) >= -1e-9:
                qty[i] += q
                px_sum[i] += q * far
            elif t in (CODE[OrderType.LIMIT], CODE[OrderType.MARKETABLE_LIMIT]):
                self.working[i], self.px[i] = q, lp
        for i in np.flatnonzero(active & (self.working > 0)):
            f = min(self.working[i], self.passive_per_step)
            qty[i] += f
            passive[i] += f
            px_sum[i] += f * self.px[i]
            self.working[i] -= f
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.where(qty > 0, px_sum / qty, np.nan)
        self.sent[-1]["filled"] = qty.copy()
        self.sent[-1]["working_after"] = self.working.copy()
        return FillBatch(qty=qty, avg_px=avg, passive_qty=passive, fees=np.zeros(n),
                         n_fills=((qty > 0).astype(np.int32) + (passive > 0)),
                         working_qty=self.working.copy(), cancelled_qty=cancelled,
                         reject=np.zeros(n, dtype=np.int8))


#: everything a policy can ask for: every size up to all of it, prices beyond any band,
#: resting orders that replace each other, cancels
ADVERSARY = ActionSet(
    "adversary",
    (0.0, 0.05, 0.3, 1.0, 1.0, 0.5, 1.0, 0.0, 1.0),
    styles=(
        OrderStyle(), OrderStyle(), OrderStyle(OrderType.IOC, "far", 50), OrderStyle(),
        OrderStyle(OrderType.LIMIT, "near", -1, 0), OrderStyle(OrderType.LIMIT, "far", 30, 2),
        OrderStyle(OrderType.LIMIT, "near", 0, 1, cancel=True), OrderStyle(cancel=True),
        OrderStyle(OrderType.MARKETABLE_LIMIT, "far", 1, 0),
    ),
)


def _core(limits: RiskLimits, n_envs=4, n_steps=10, qty=5000, side=1, passive=0, kill=None,
          volume=1e6, actions=ADVERSARY):
    market = Book(n_envs, n_steps, side, passive, volume)
    guard = RiskGuard(limits, n_envs, side, qty, step_seconds=1.0, horizon_s=float(n_steps),
                      kill=kill)
    core = BatchedExecution(market, qty, side, ("remaining_ratio",), actions, IsBpsReward(),
                            autoreset=False, guard=guard)
    core.reset(seed=0)
    return core, market


def test_the_core_builds_its_guard_from_the_orders_constraints():
    market = Book(1, 4, 1)
    core = BatchedExecution(market, 1000, 1, ("remaining_ratio",), ACTION_SETS["seed004"],
                            IsBpsReward(), OrderConstraints(child_max=70, price_band_bps=5.0))
    assert core.guard.limits == RiskLimits(child_max=70, price_band_bps=5.0)
    assert core.guard.tick_size == TICK
    with pytest.raises(ConfigError, match="risk guard"):
        BatchedExecution(market, 1000, 1, ("remaining_ratio",), ACTION_SETS["seed004"],
                         IsBpsReward(), OrderConstraints(child_max=70), guard=core.guard)
    with pytest.raises(ConfigError, match="does not match"):
        BatchedExecution(market, 999, 1, ("remaining_ratio",), ACTION_SETS["seed004"],
                         IsBpsReward(), guard=core.guard)


def test_forced_child_orders_send_exactly_their_shares_through_the_guard():
    core, market = _core(RiskLimits(child_max=400), n_envs=3)
    forced = np.array([250, -1, 10_000])
    core.step(np.array([3, 1, 3]), forced_shares=forced)
    sent = market.sent[-1]
    # row 0 forced 250 market; row 1 the action (5 % of 5,000); row 2 forced, cut to 400
    assert list(sent["qty"]) == [250, 250, 400]
    assert list(sent["order_type"]) == [CODE[OrderType.MARKET]] * 3
    assert list(core.last_guard) == [0, 0, g.GUARD_CHILD_MAX]
    assert core.stats.cuts[0] == 0 and core.stats.cuts[2] == 0  # forced: not the policy's cut
    style = OrderStyle(OrderType.LIMIT, "near", 0, 1)
    core.step(np.array([0, 0, 0]), forced_shares=np.array([100, 100, -1]), forced_style=style)
    sent = market.sent[-1]
    assert list(sent["qty"]) == [100, 100, 0]
    assert sent["order_type"][0] == CODE[OrderType.LIMIT]
    assert sent["limit_px"][0] == pytest.approx(BID)


def test_the_kill_switch_through_the_core_stops_orders_and_cancels_what_works():
    kill = KillSwitch(2)
    core, market = _core(RiskLimits(), n_envs=2, kill=kill)
    core.step(np.array([4, 4]))  # resting limits of all that remains
    assert (market.working == 5000).all()
    kill.kill_orders([1])
    core.step(np.array([3, 3]))
    sent = market.sent[-1]
    assert sent["qty"][1] == 0 and sent["cancel"][1]
    assert market.working[1] == 0 and core.last_guard[1] == g.GUARD_KILL
    for _ in range(8):
        core.step(np.array([3, 3]))
    assert core.done.all()
    rec = core.episode_records(np.arange(2))
    assert rec["guard_rejects"][1] == 9 and rec["guard_rejects"][0] == 0
    assert rec["fill_rate"][1] == 0.0 and rec["breaches"].sum() == 0


def test_a_throttle_the_policy_ignores_is_a_counted_guard_reject():
    core, market = _core(RiskLimits(message_limit=2, message_window_s=5.0), n_envs=1)
    for _ in range(4):
        core.step(np.array([1]))
    assert [s["qty"][0] for s in market.sent] == [250, 238, 0, 0]  # 5 % of what remains
    assert core.last_guard[0] == g.GUARD_MESSAGE_RATE
    assert core.stats.guard_rejects[0] == 2


def test_make_execution_with_a_firm_guard_on_a_restricted_symbol_trades_nothing():
    order = ParentOrder(order_id="A", symbol="XYZ", side="sell", qty=10_000, start_ts=0,
                        horizon_s=3600.0, constraints=OrderConstraints(child_max=3000))
    config = EnvConfig(market=ACMarketConfig(n_steps=6))
    guard = make_guard(order, config.market, n_envs=2,
                       limits=RiskLimits(restricted_symbols=("XYZ",), adv_fraction=0.05))
    assert guard.limits.child_max == 3000 and guard.adv_shares > 0
    assert guard.step_seconds == pytest.approx(600.0)
    core = make_execution(config, order, n_envs=2, autoreset=False, guard=guard)
    core.reset(seed=1)
    while not core.done.all():
        core.step(np.array([4, 4]))
    rec = core.episode_records(np.arange(2))
    assert (rec["fill_rate"] == 0).all() and (rec["guard_rejects"] == 6).all()
    assert (core.last_guard == g.GUARD_RESTRICTED).all()


# -- property: no policy gets past the guard -------------------------------------------------
LIMITS = st.fixed_dictionaries(
    {},
    optional={
        "child_max": st.integers(1, 3000),
        "remaining_fraction": st.floats(0.01, 1.0),
        "adv_fraction": st.floats(0.001, 0.5),
        "size_rule": st.sampled_from(["either", "both"]),
        "remaining_floor": st.integers(1, 500),
        "participation": st.floats(0.01, 1.0),
        "participation_window_s": st.floats(0.5, 5.0),
        "price_band_bps": st.floats(0.5, 50.0),
        "max_child_value": st.floats(1e3, 3e5),
        "message_limit": st.integers(1, 6),
        "message_window_s": st.floats(0.5, 5.0),
        "cancel_limit": st.integers(1, 3),
        "cancel_window_s": st.floats(0.5, 5.0),
        "min_resting_s": st.floats(0.5, 4.0),
        "repeat_fill_limit": st.integers(1, 6),
        "repeat_window_s": st.floats(0.5, 6.0),
        "duplicate_window_s": st.floats(0.5, 3.0),
        "locate_shares": st.integers(0, 6000),
    },
)


def _in(t: float, te: float, window: float) -> bool:
    return t - te < window - 1e-9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=LIMITS,
    side=st.sampled_from([1, -1]),
    passive=st.integers(0, 800),
    volume=st.sampled_from([2000.0, 1e6]),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_adversarial_policy_breaches_a_limit(data, side, passive, volume, seed):
    if "participation_window_s" in data and "participation" not in data:
        data["participation"] = 0.3
    if "adv_fraction" in data:
        data["adv_shares"] = 20_000.0
    limits = RiskLimits(**data)
    n, n_steps, qty = 4, 12, 5000
    kill = KillSwitch(n)
    core, market = _core(limits, n, n_steps, qty, side, passive, kill, volume)
    rng = np.random.default_rng(seed)
    killed_at = np.full(n, 10**9)
    latched_log: list[np.ndarray] = []
    while not core.done.all():
        k = int(core.k.max())
        actions = rng.integers(0, ADVERSARY.n_actions, n)
        forced = np.where(rng.random(n) < 0.3, rng.integers(0, 10**9, n), -1)
        if rng.random() < 0.08:
            victim = int(rng.integers(n))
            kill.kill_orders([victim])
            killed_at[victim] = min(killed_at[victim], k)
        if rng.random() < 0.1:
            core.guard.reenable()
        latched_log.append(core.guard.latched.copy())
        core.step(actions, forced_shares=forced if rng.random() < 0.5 else None)
    # (not core.stats.breaches: it counts a step's fills of a resting order and a new one
    # together against one child order's limit; the brute-force checks below look at each
    # child order)
    band = limits.price_band_bps
    for i in range(n):
        msgs, cancels, fills_t, fills = [], [], [], []
        rest_since = -np.inf
        total = 0
        last = None
        for k, s in enumerate(market.sent):
            if not s["active"][i]:
                assert s["qty"][i] == 0
                continue
            q, t = int(s["qty"][i]), float(k)
            cancels_now = int(bool(s["cancel"][i]) and s["working_before"][i] > 0)
            final = k == n_steps - 1
            if k >= killed_at[i]:  # killed: nothing new, and nothing works after the kill
                assert q == 0 and s["working_after"][i] == 0
            if latched_log[k][i]:
                assert q == 0
            px = s["limit_px"][i]
            if q > 0:
                ref = MID if np.isnan(px) else px
                if limits.child_max is not None:
                    assert q <= limits.child_max
                caps = []
                if limits.adv_fraction is not None:
                    caps.append(int(np.floor(limits.adv_fraction * 20_000.0)))
                if limits.remaining_fraction is not None:
                    left = qty - total
                    caps.append(min(left, max(int(np.floor(limits.remaining_fraction * left)),
                                              limits.remaining_floor)))
                if caps:
                    assert q <= (max(caps) if limits.size_rule == "either" else min(caps))
                if limits.max_child_value is not None:
                    assert q * ref <= limits.max_child_value + 1e-6
                if band is not None:
                    assert not np.isnan(px)  # a market order became an IOC at the edge
                    assert side * (px - MID) <= MID * band * 1e-4 + 1e-9
                working = 0 if s["cancel"][i] else int(s["working_before"][i])
                assert total + working + q <= qty
                if limits.locate_shares is not None and side < 0:
                    assert total + working + q <= limits.locate_shares
                if limits.participation is not None:
                    window = limits.participation_window_s or 1.0
                    past = [(tf, f) for tf, f in fills if _in(t, tf, window)]
                    vol = volume * (1 + len({tf for tf, _ in past}))
                    assert q + sum(f for _, f in past) <= np.floor(limits.participation * vol)
            if limits.duplicate_window_s is not None and q > 0 and last is not None:
                same = (q, s["order_type"][i]) == last[1:3] and (
                    (np.isnan(px) and np.isnan(last[3])) or px == last[3])
                assert not (same and _in(t, last[0], limits.duplicate_window_s))
            exempt = final or k >= killed_at[i]  # the horizon's and a kill's cancels
            if limits.message_limit is not None:
                need = int(q > 0) + (0 if exempt else cancels_now)
                if need:
                    recent = sum(_in(t, tm, limits.message_window_s) for tm in msgs)
                    assert recent + need <= limits.message_limit
            if cancels_now and not exempt:
                if limits.cancel_limit is not None:
                    recent = sum(_in(t, tc, limits.cancel_window_s) for tc in cancels)
                    assert recent < limits.cancel_limit
                if limits.min_resting_s is not None:
                    assert t - rest_since >= limits.min_resting_s - 1e-9
            if q > 0:
                last = (t, q, s["order_type"][i], s["limit_px"][i])
            msgs += [t] * (int(q > 0) + cancels_now)
            cancels += [t] * cancels_now
            if q > 0 and s["order_type"][i] in (CODE[OrderType.LIMIT],
                                                  CODE[OrderType.MARKETABLE_LIMIT]):
                rest_since = t
            total += int(s["filled"][i])
            fills.append((t, int(s["filled"][i])))
            fills_t.append(t)
        assert total == core.stats.filled[i] <= qty


def test_the_guard_benchmark_finds_no_breach():
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_guard.py"
    done = subprocess.run(
        [sys.executable, str(script), "--decisions", "20000", "--n-orders", "256",
         "--core-steps", "5"], capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["adversarial"]["decisions"] >= 20000 and out["adversarial"]["breaches"] == 0
    assert out["adversarial"]["refused_share"] > 0 and out["adversarial"]["cut_share"] > 0
    assert out["core_step"]["check_overhead_ratio"] > 0
