"""A batch of the desk's parent orders in one run: per-order quantity in the execution core and
``Executor.run_orders``. Brute-force check throughout: each order of a batch gets exactly (bit
for bit) what a run of that one order on the same path gets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from execrl.domain import ConfigError, ParentOrder
from execrl.env.factory import EnvConfig, make_execution, make_guard
from execrl.executor.loop import Executor, Safety, context_for
from execrl.executor.venues import sent_commands
from execrl.policies.baselines import make_baseline
from execrl.presets import preset_market
from execrl.safety.guard import RiskLimits
from execrl.safety.watchdog import WatchdogConfig
from execrl.sim.rng import OrderSeeds

AC = preset_market("ac")
LOB = preset_market("lob")
QTYS = [60_000, 1_000, 250_000, 7_777, 60_000]
SEEDS = [11, 5, 11, 923, 40]  # a seed twice: two orders on one path, different sizes


def _order(qty: int, i: int = 0, side: str = "sell", horizon: int = 3600) -> ParentOrder:
    return ParentOrder.from_dict({"order_id": f"B-{i}", "symbol": "DEMO", "side": side,
                                  "qty": qty, "arrival_px": 50.0, "start_ts": 0,
                                  "horizon_s": horizon})


class _RowPolicy:
    """Each order's action a function of its own observation row alone (so batching cannot
    change it): discrete, from the action set's range."""

    def __init__(self, n_actions: int):
        self.n = n_actions

    def act(self, obs: np.ndarray) -> np.ndarray:
        o = obs.astype(np.float64)
        h = np.abs(o[:, 0] * 7919.0 + o[:, 1] * 104729.0 + o[:, -1] * 31.0)
        return (np.floor(h) % self.n).astype(np.int64)


def _cores(market, obs: str, actions: str, reward: str, limits: RiskLimits, horizon: int):
    cfg = EnvConfig(market=market, observations=obs, actions=actions, reward=reward)
    base = _order(QTYS[0], horizon=horizon)
    n = len(QTYS)
    qty = np.array(QTYS, dtype=np.int64)
    guard = make_guard(base, market, n, limits=limits, qty=qty)
    batch = make_execution(cfg, base, n_envs=n, autoreset=False, guard=guard, qty=qty)
    batch.use_rng(OrderSeeds(SEEDS))
    singles = []
    for q in QTYS:
        o = _order(q, horizon=horizon)
        singles.append(make_execution(cfg, o, 1, autoreset=False,
                                      guard=make_guard(o, market, 1, limits=limits)))
    return batch, singles


def _step_all(batch, singles):
    policy = _RowPolicy(batch.action_set.n_actions)
    obs = batch.reset()
    one = [c.reset(seed=s) for c, s in zip(singles, SEEDS, strict=True)]
    for i, o in enumerate(one):
        np.testing.assert_array_equal(obs[i], o[0])
    steps = 0
    while not batch.done.all():
        masks = batch.action_masks() if batch.action_set.is_discrete else None
        if masks is not None:
            for i, c in enumerate(singles):
                np.testing.assert_array_equal(masks[i], c.action_masks()[0])
        a = policy.act(obs)
        obs, reward, done, _, _ = batch.step(a)
        for i, c in enumerate(singles):
            if c.done[0]:
                assert batch.done[i]
                continue
            o1, r1, d1, _, _ = c.step(a[i : i + 1])
            np.testing.assert_array_equal(obs[i], o1[0])
            assert reward[i] == r1[0] and done[i] == d1[0]
            assert batch.last_guard[i] == c.last_guard[0]
            assert batch.last_orders.qty[i] == c.last_orders.qty[0]
        steps += 1
    ids = np.arange(len(QTYS))
    rec = batch.episode_records(ids)
    for i, c in enumerate(singles):
        one = c.episode_records(np.arange(1))
        for key, v in rec.items():
            assert v[i] == one[key][0], (key, i, v[i], one[key][0])
        np.testing.assert_array_equal(batch.stats.schedule[i], c.stats.schedule[0])
    return rec, steps


def test_per_order_qty_on_the_ac_market_is_each_order_alone():
    limits = RiskLimits(child_max=20_000)
    batch, singles = _cores(AC, "full", "seed004", "risk_adjusted", limits, 3600)
    rec, steps = _step_all(batch, singles)
    assert steps == batch.n_steps
    # the sizes matter (the same path, different sizes: different IS and fill rates)
    assert rec["is_bps"][0] != rec["is_bps"][2]
    assert rec["fill_rate"][2] < 1.0 and rec["residual_shares"][2] > 0  # child_max binds
    assert (rec["breaches"] == 0).all()


def test_per_order_qty_on_the_lob_market_is_each_order_alone():
    limits = RiskLimits(child_max=30_000, price_band_bps=50.0)
    order = _order(QTYS[0])
    horizon = int(order.horizon)
    batch, singles = _cores(LOB, "seed001", "seed003lob", "is_bps", limits, horizon)
    rec, _ = _step_all(batch, singles)
    assert rec["cancels"].sum() + rec["fills"].sum() > 0
    assert (rec["breaches"] == 0).all()


def test_equal_sizes_given_per_env_are_the_scalar_core_bit_for_bit():
    cfg = EnvConfig(market=AC, observations="full", actions="seed004", reward="arrival_vwap")
    order = _order(60_000)
    scalar = make_execution(cfg, order, n_envs=6, autoreset=False)
    per_env = make_execution(cfg, order, n_envs=6, autoreset=False,
                             qty=np.full(6, 60_000, dtype=np.int64))
    assert isinstance(scalar.qty, int) and per_env.qty.shape == (6,)
    policy = _RowPolicy(scalar.action_set.n_actions)
    a, b = scalar.reset(seed=3), per_env.reset(seed=3)
    while not scalar.done.all():
        np.testing.assert_array_equal(a, b)
        act = policy.act(a)
        a, ra, *_ = scalar.step(act)
        b, rb, *_ = per_env.step(act)
        np.testing.assert_array_equal(ra, rb)
    ids = np.arange(6)
    ea, eb = scalar.episode_records(ids), per_env.episode_records(ids)
    for key in ea:
        np.testing.assert_array_equal(ea[key], eb[key])


def test_per_order_qty_is_checked():
    cfg = EnvConfig(market=AC)
    order = _order(1000)
    with pytest.raises(ConfigError, match="'qty' has 2 entries for 3"):
        make_execution(cfg, order, n_envs=3, qty=np.array([1, 2]))
    with pytest.raises(ConfigError, match="'qty' = 0 must be > 0"):
        make_execution(cfg, order, n_envs=3, qty=np.array([1, 0, 2]))
    guard = make_guard(order, AC, 3)  # for 1000 shares each
    with pytest.raises(ConfigError, match="risk guard"):
        make_execution(cfg, order, n_envs=3, guard=guard, qty=np.array([1000, 5, 1000]))


def test_order_seeds_are_each_seeds_first_path():
    keys = OrderSeeds([7, 1, 7]).keys
    first = [np.random.default_rng(s).bit_generator.random_raw(1)[0] for s in (7, 1)]
    assert keys.tolist() == [first[0], first[1], first[0]]
    src = OrderSeeds([1, 2])
    src.take(2)
    with pytest.raises(ValueError, match="2 order seeds"):
        src.take(1)


# -- Executor.run_orders ---------------------------------------------------------------------
def _orders(side: str = "sell") -> list[ParentOrder]:
    return [_order(q, i, side) for i, q in enumerate(QTYS)]


def _same_episodes(batch_e: pd.DataFrame, single: pd.DataFrame, i: int) -> None:
    row = batch_e.iloc[i].drop("order_idx")
    one = single.iloc[0].drop("order_idx")
    assert list(row.index) == list(one.index)
    for key in row.index:
        assert row[key] == one[key], (i, key, row[key], one[key])


@pytest.mark.parametrize("market", [AC, LOB], ids=["ac", "lob"])
def test_run_orders_gives_each_order_its_single_run_with_guard_and_watchdog(market):
    orders = _orders()
    twap = make_baseline("twap", context_for(market, orders[0]))
    # the decision-latency trigger is wall-clock: off, so the batch and the single runs meet
    # the same triggers whatever the machine's load (it keeps its own tests)
    watchdog = WatchdogConfig(price_band=0.002, is_vs_twap=None, late_elapsed=0.5,
                              late_filled=0.6, max_latency_s=None)
    safety = Safety(limits=RiskLimits(child_max=40_000, price_band_bps=80.0), watchdog=watchdog)
    batch = Executor(twap, market, safety=safety).run_orders(orders, SEEDS, venue="paper")
    e = batch.episodes
    assert e["order_id"].tolist() == [o.order_id for o in orders]
    wire = sent_commands(batch.extras["venue"])
    triggered = 0
    for i, (o, s) in enumerate(zip(orders, SEEDS, strict=True)):
        one = Executor(twap, market, safety=safety).run(o, 1, s, venue="paper")
        _same_episodes(e, one.episodes, i)
        _same_episodes(batch.shadow_twap, one.shadow_twap, i)
        alone = batch.order(i)  # the order's own run, as the service's done record reads it
        _same_episodes(alone.episodes, one.episodes, 0)
        _same_episodes(alone.shadow_twap, one.shadow_twap, 0)
        np.testing.assert_array_equal(batch.schedules[i], one.schedules[0])
        mine = [c for c in wire if c["parent_id"] == o.order_id]
        assert mine == sent_commands(one.extras["venue"])
        triggered += e["trigger"].iloc[i] != "none"
    assert triggered, "the watchdog never fired: the check would not cover its side"
    assert (e["breaches"] == 0).all()


def test_run_orders_refuses_orders_that_cannot_share_a_batch():
    from execrl.executor.loop import context_for

    twap = make_baseline("twap", context_for(AC, _order(1000)))
    ex = Executor(twap, AC)
    with pytest.raises(ConfigError, match=r"'B-1'.*side differs"):
        ex.run_orders([_order(1000, 0), _order(1000, 1, side="buy")], [1, 2])
    with pytest.raises(ConfigError, match="horizon differs"):
        ex.run_orders([_order(1000, 0), _order(1000, 1, horizon=1800)], [1, 2])
    with pytest.raises(ConfigError, match="appears twice"):
        ex.run_orders([_order(1000, 0), _order(2000, 0)], [1, 2])
    with pytest.raises(ConfigError, match="seeds: 1 for 2"):
        ex.run_orders([_order(1000, 0), _order(2000, 1)], [1])
    # a policy built for one order's size batches only orders of that size
    pov = make_baseline("pov", context_for(AC, _order(1000)))
    assert Executor(pov, AC).batch_key(_order(1000)) != Executor(pov, AC).batch_key(_order(2000))
    assert ex.batch_key(_order(1000)) == ex.batch_key(_order(2000, 3))
    with pytest.raises(ConfigError, match="qty differs"):
        Executor(pov, AC).run_orders([_order(1000, 0), _order(2000, 1)], [1, 2])


def test_an_order_of_a_batch_is_re_run_from_its_trail(tmp_path):
    """The trail of a batch names each order and its seed; ``rerun_order`` re-runs the batch
    whole (its decisions depend on its members under a pooled drift trigger)."""
    from execrl.executor.audit import AuditTrail
    from execrl.executor.rerun import rerun_order

    orders = _orders("buy")
    twap = make_baseline("twap", context_for(AC, orders[0]))
    audit = AuditTrail(tmp_path / "trail", features=twap.observations)
    safety = Safety(limits=RiskLimits(child_max=40_000),
                    watchdog=WatchdogConfig(max_latency_s=None))  # a re-run: no wall clock
    run = Executor(twap, AC, safety=safety, audit=audit).run_orders(orders, SEEDS)
    for i in (1, 2):
        again = rerun_order(tmp_path / "trail", orders[i].order_id)
        assert again.identical, again.first_difference
        assert again.decisions == int(run.episodes["steps"].iloc[i])
        assert (again.recorded["child_qty"] <= 40_000).all()
