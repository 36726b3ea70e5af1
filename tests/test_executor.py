"""The one execution loop (execrl.executor): defensive policy calls, venues, the kill file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from execrl.domain import ConfigError, ParentOrder
from execrl.env.factory import EnvConfig
from execrl.env.spaces import resolve_action_set
from execrl.evaluate.backtest import policy_context, run_policy
from execrl.executor.kill import KillFileWatcher, KillRequest, parse_kill, write_kill_file
from execrl.executor.loop import (
    FAULT_NAN,
    FAULT_NONE,
    FAULT_OUT_OF_SPACE,
    FAULT_RAISED,
    Executor,
    PolicySet,
    call_policy,
    validate_actions,
)
from execrl.executor.venues import sent_commands
from execrl.policies.baselines import make_baseline
from execrl.presets import preset_market

AC = preset_market("ac")
LOB = preset_market("lob")
ORDER = ParentOrder.from_json('{"order_id": "T-1", "symbol": "XYZ", "side": "sell", '
                              '"qty": 1000000, "start_ts": 0, "horizon_s": 432000}')


class _Fixed:
    """A policy that always says ``value`` (anything, even what is not an action)."""

    def __init__(self, value, action_set="seed004", observations=("remaining_ratio",)):
        self.name = "fixed"
        self.observations = observations
        self.action_set = action_set
        self.value = value

    def act(self, obs, masks=None):
        return self.value(obs) if callable(self.value) else np.asarray(self.value)


def test_validate_actions_flags_each_fault_per_order():
    seed004 = resolve_action_set("seed004")
    top = seed004.n_actions
    actions, faults = validate_actions(np.array([0, top, np.nan, 1.5, -1, 2]), seed004, 6)
    assert faults.tolist() == [FAULT_NONE, FAULT_OUT_OF_SPACE, FAULT_NAN, FAULT_OUT_OF_SPACE,
                               FAULT_OUT_OF_SPACE, FAULT_NONE]
    assert actions[0] == 0 and actions[5] == 2
    # a faulty order's action sends nothing (the smallest fraction of the set: 0 = wait)
    assert seed004.fractions[int(actions[1])] == min(seed004.fractions)
    # the wrong shape faults every order
    _, faults = validate_actions(np.zeros((6, 3)), seed004, 6)
    assert (faults == FAULT_OUT_OF_SPACE).all()
    cont = resolve_action_set("continuous")
    actions, faults = validate_actions(np.array([[0.5], [1.5], [np.inf]]), cont, 3)
    assert faults.tolist() == [FAULT_NONE, FAULT_OUT_OF_SPACE, FAULT_NAN]
    assert actions[1, 0] == 0.0 and actions[0, 0] == pytest.approx(0.5)


def test_call_policy_isolates_the_orders_that_make_it_raise():
    seed004 = resolve_action_set("seed004")

    def act(obs):
        if (obs[:, 0] < 0.5).any():  # raises for any batch holding order 2
            raise RuntimeError("boom")
        return np.ones(obs.shape[0], dtype=np.int64)

    obs = np.array([[1.0], [0.9], [0.1], [0.8]], dtype=np.float32)
    actions, faults, latency = call_policy(_Fixed(act), obs, None, seed004)
    assert faults.tolist() == [0, 0, FAULT_RAISED, 0]
    assert actions[[0, 1, 3]].tolist() == [1, 1, 1]
    assert latency >= 0


def test_without_a_watchdog_a_faulty_policy_stops_the_run_naming_the_order():
    bad = _Fixed(lambda obs: np.where(obs[:, 0] < 2, 99, 0))
    with pytest.raises(ConfigError, match="outside its space for order 0"):
        Executor(bad, AC).run(ORDER, 4, seed=1)


def test_the_loop_is_the_backtest():
    """run_policy (execrl evaluate) is the executor's run: same IS order by order."""
    ctx = policy_context(EnvConfig(market=AC), ORDER)
    twap = make_baseline("twap", ctx)
    via_backtest = run_policy(twap, EnvConfig(market=AC), ORDER, 64, seed=3)
    via_executor = Executor(twap, AC).run(ORDER, 64, seed=3)
    np.testing.assert_array_equal(via_backtest.episodes["is_bps"].to_numpy(),
                                  via_executor.episodes["is_bps"].to_numpy())
    assert via_executor.episodes["order_id"].iloc[5] == "T-1#5"


def test_policy_set_picks_the_model_by_side():
    ctx = policy_context(EnvConfig(market=AC), ORDER)
    buy, sell = make_baseline("twap", ctx), make_baseline("immediate", ctx)
    pair = PolicySet(buy=buy, sell=sell)
    run = Executor(pair, AC).run(ORDER, 8, seed=1)  # a sell
    assert run.policy == "immediate"
    buy_order = ORDER.model_copy(update={"side": "buy"})
    assert Executor(pair, AC).policy_for(buy_order).name == "twap"


@pytest.mark.parametrize("venue", ["shadow", "paper"])
def test_shadow_and_paper_venues_fill_as_the_market_and_record_the_commands(venue):
    order = LOB.default_order()
    ctx = policy_context(EnvConfig(market=LOB), order)
    twap = make_baseline("passive_twap", ctx)
    sim = Executor(twap, LOB).run(order, 6, seed=2)
    other = Executor(twap, LOB).run(order, 6, seed=2, venue=venue)
    # counterfactual fills from the same market data: the same as the simulated venue
    np.testing.assert_array_equal(sim.episodes["is_bps"], other.episodes["is_bps"])
    sent = sent_commands(other.extras["venue"])
    children = [c for c in sent if c["type"] != "cancel"]
    assert len(children) == int(other.episodes["child_orders"].sum()) + int(
        other.episodes["rejects"].sum())
    first = children[0]
    assert set(first) == {"parent_id", "child_id", "type", "qty", "px", "ttl_ms", "venue"}
    assert first["venue"] == venue and first["parent_id"].startswith(order.order_id)
    json.dumps(sent)  # the wire format is JSON


def test_kill_file_round_trip_and_fail_safe(tmp_path):
    path = tmp_path / "kill"
    watcher = KillFileWatcher(path)
    assert watcher.request() is None
    write_kill_file(path, KillRequest(orders=frozenset({"A-1"})))
    req = watcher.request()
    assert req is not None and req.orders == {"A-1"} and not req.everything
    path.write_text("{not json")
    assert watcher.request().everything  # unreadable: kill everything
    assert parse_kill("").everything  # an empty file (touch) kills everything
    with pytest.raises(ValueError, match="unknown key 'order'"):
        parse_kill('{"order": ["A-1"]}')
    with pytest.raises(ConfigError, match="does not exist"):
        write_kill_file(tmp_path / "nope" / "kill", KillRequest(everything=True))
