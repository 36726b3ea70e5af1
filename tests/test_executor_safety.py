"""Faulty policies through the whole loop (policy → guard → venue, watched and audited): each
fault contained, no limit breached, the watchdog firing with the right trigger, the order
finished by its fallback, and a trail that adds up."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from execrl.domain import ConfigError, ParentOrder
from execrl.executor.audit import AuditTrail, check_trail, read_trail
from execrl.executor.kill import KillRequest, write_kill_file
from execrl.executor.loop import Executor, Safety, context_for
from execrl.policies.baselines import make_baseline
from execrl.presets import preset_market
from execrl.safety.guard import RiskLimits
from execrl.safety.watchdog import TRIGGERS, WatchdogConfig

AC = preset_market("ac")
LOB = preset_market("lob")
AC_ORDER = AC.default_order()
# the seed's price trigger off: the AC example's 5-day sell meets 1 % moves on most paths
QUIET = dict(price_band=None, is_vs_twap=None)


class _Faulty:
    """Sends a valid action (``ok``) for ``good`` calls, then misbehaves as ``fault`` says."""

    def __init__(self, fault: str, good: int = 2, ok: int = 1, action_set: str = "seed004"):
        self.name = "faulty"
        self.observations = ("remaining_ratio", "elapsed_ratio")
        self.action_set = action_set
        self.fault, self.good, self.ok = fault, good, ok
        self.calls = 0

    def act(self, obs, masks=None):
        self.calls += 1
        n = obs.shape[0]
        if self.calls <= self.good:
            return np.full(n, self.ok)
        if self.fault == "raises":
            raise RuntimeError("model server gone")
        if self.fault == "nan":
            return np.full(n, np.nan)
        if self.fault == "out_of_range":
            return np.full(n, 99)
        if self.fault == "hangs":
            time.sleep(0.03)
            return np.full(n, self.ok)
        if self.fault == "max":  # always everything, ignoring the mask
            return np.full(n, 4)
        if self.fault == "cancel":  # seed003lob's "cancel the working order, send nothing"
            return np.full(n, 5)
        raise AssertionError(self.fault)


def _run(policy, market=AC, order=AC_ORDER, n=64, limits=None, watchdog=None, audit=None,
         **kw):
    safety = Safety(limits=limits or RiskLimits(), watchdog=watchdog or WatchdogConfig(**QUIET))
    return Executor(policy, market, safety=safety, audit=audit).run(order, n, seed=11, **kw)


def _contained(e: pd.DataFrame, trigger: str, step: int | None = None) -> None:
    assert (e["breaches"] == 0).all()
    assert (e["trigger"] == trigger).all(), e["trigger"].value_counts()
    assert (e["finished_by"] == "fallback").all()
    if step is not None:
        assert (e["trigger_step"] == step).all()
    assert np.allclose(e["fill_rate"], 1.0)  # the fallback finished the order by the horizon


@pytest.mark.parametrize("fault", ["raises", "nan", "out_of_range"])
def test_a_faulty_policy_is_handed_to_the_fallback_at_once(fault):
    _contained(_run(_Faulty(fault)).episodes, "policy_fault", step=2)


def test_a_policy_past_its_latency_cap_is_handed_to_the_fallback():
    watchdog = WatchdogConfig(**QUIET, max_latency_s=0.01)
    _contained(_run(_Faulty("hangs"), n=8, watchdog=watchdog).episodes, "latency", step=2)
    # the same policy inside its budget is left alone
    calm = _run(_Faulty("hangs", good=99), n=8, watchdog=watchdog).episodes
    assert (calm["trigger"] == "none").all() and (calm["finished_by"] == "policy").all()


def test_always_maximal_size_is_cut_to_the_limits_and_never_breaches(tmp_path):
    child_max = AC_ORDER.qty // 8
    audit = AuditTrail(tmp_path / "trail", features=("remaining_ratio", "elapsed_ratio"),
                       labels={"trigger": TRIGGERS})
    e = _run(_Faulty("max", good=0), limits=RiskLimits(child_max=child_max), n=32,
             audit=audit).episodes
    assert (e["breaches"] == 0).all() and (e["cuts"] > 0).all()
    trail = read_trail(tmp_path / "trail")
    assert trail.children["qty"].max() == child_max  # every child within the limit
    assert check_trail(trail) == []
    assert np.allclose(e["fill_rate"], 1.0)


def test_a_policy_that_only_cancels_is_taken_over_late_and_finished():
    order = LOB.default_order()
    p = _Faulty("cancel", good=0, action_set="seed003lob")
    e = _run(p, market=LOB, order=order, n=16).episodes
    n_steps = 30  # the lob preset's decisions
    first_late = int(np.floor(0.9 * n_steps)) + 1  # elapsed ratio k / N above 0.9
    assert (e["trigger"] == "late_and_unfilled").all()
    assert (e["trigger_step"] == first_late).all()
    assert (e["breaches"] == 0).all()
    # nothing traded before the fallback; it then sends what is left within the band
    assert (e["fill_rate"] > 0.5).all()
    assert (e["residual_is_bps"][e["residual_shares"] > 0] != 0).all()


def test_a_quiet_policy_trips_nothing():
    twap = make_baseline("twap", context_for(AC, AC_ORDER))
    e = _run(twap).episodes
    assert (e["trigger"] == "none").all() and (e["finished_by"] == "policy").all()


def test_in_training_the_watchdog_only_records():
    safety = Safety(limits=RiskLimits(), watchdog=WatchdogConfig(**QUIET))
    watched = Executor(_Faulty("nan"), AC, safety=safety, mode="train").run(AC_ORDER, 8, seed=1)
    e = watched.episodes
    assert (e["trigger"] == "policy_fault").all() and (e["finished_by"] == "policy").all()


def test_the_kill_file_stops_new_child_orders_and_cancels_working_ones(tmp_path):
    order = LOB.default_order()
    kill = tmp_path / "kill"
    steps = {"n": 0}
    passive = make_baseline("submit_and_leave", context_for(LOB, order))  # rests until filled

    def after_step():
        steps["n"] += 1
        if steps["n"] == 5:  # the operator flips the switch after the 5th decision
            write_kill_file(kill, KillRequest(everything=True))

    audit = AuditTrail(tmp_path / "trail", features=passive.observations,
                       labels={"trigger": TRIGGERS})
    safety = Safety(limits=RiskLimits(), watchdog=WatchdogConfig(**QUIET), kill_file=str(kill))
    run = Executor(passive, LOB, safety=safety, audit=audit).run(order, 12, seed=4,
                                                                 on_step=after_step)
    e = run.episodes
    assert (e["finished_by"] == "killed").all() and (e["trigger"] == "kill_or_loss").all()
    assert (e["trigger_step"] == 5).all()
    trail = read_trail(tmp_path / "trail")
    d = trail.decisions
    after = d[d["step"] >= 5]
    assert (after["child_qty"] == 0).all()  # nothing new once killed
    assert (d[d["step"] == 5]["working_before"] > 0).any()  # passive orders were resting …
    assert (d[d["step"] >= 6]["working_before"] == 0).all()  # … and the kill cancelled them
    assert trail.fills[trail.fills["step"] >= 5].empty
    assert (e["residual_shares"] > 0).all()  # what was left is charged, not traded
    kinds = trail.incidents["kind"].unique().tolist()
    assert kinds == ["KILLED"]
    assert check_trail(trail) == []


def test_thousands_of_orders_leave_a_complete_consistent_trail(tmp_path):
    order = LOB.default_order()
    passive = make_baseline("passive_twap", context_for(LOB, order))
    audit = AuditTrail(tmp_path / "trail", features=passive.observations,
                       labels={"trigger": TRIGGERS})
    run = _run(passive, market=LOB, order=order, n=2000, audit=audit,
               watchdog=WatchdogConfig())
    trail = read_trail(tmp_path / "trail")
    assert check_trail(trail) == []
    # the fills in the per-decision records sum to the per-order summary, in Parquet and SQL
    per_decision = trail.decisions.groupby("order_idx")["filled_qty"].sum()
    per_fill = trail.fills.groupby("order_idx")["qty"].sum()
    summary = trail.orders.set_index("order_idx")["filled"]
    np.testing.assert_array_equal(per_decision.to_numpy(), summary.to_numpy())
    np.testing.assert_array_equal(per_fill.reindex(summary.index, fill_value=0).to_numpy(),
                                  summary.to_numpy())
    np.testing.assert_allclose(summary.to_numpy() / order.qty, run.episodes["fill_rate"])
    assert len(trail.orders) == 2000


def test_the_same_inputs_give_the_same_trail(tmp_path):
    order = LOB.default_order()
    frames = []
    for name in ("a", "b"):
        passive = make_baseline("passive_twap", context_for(LOB, order))
        audit = AuditTrail(tmp_path / name, features=passive.observations,
                           labels={"trigger": TRIGGERS})
        # the latency trigger off: latency is measured, not decided (on a loaded machine a
        # 0.1 s decision in one run and not the other would differ by design)
        _run(passive, market=LOB, order=order, n=20, audit=audit,
             watchdog=WatchdogConfig(max_latency_s=None))
        frames.append(read_trail(tmp_path / name))
    a, b = frames
    # decision latency is measured, not decided: everything else is the same
    pd.testing.assert_frame_equal(a.decisions.drop(columns="latency_us"),
                                  b.decisions.drop(columns="latency_us"))
    for part in ("fills", "market", "children"):
        pd.testing.assert_frame_equal(getattr(a, part), getattr(b, part))


def test_one_order_is_the_low_latency_path():
    twap = make_baseline("twap", context_for(AC, AC_ORDER))
    one = ParentOrder.model_validate({**AC_ORDER.model_dump(), "order_id": "ONE"})
    run = _run(twap, order=one, n=1)
    assert run.episodes["order_id"].tolist() == ["ONE"]
    assert run.episodes["fill_rate"].iloc[0] == 1.0


def test_an_order_is_re_run_from_its_trail_decision_for_decision(tmp_path):
    from execrl.executor.rerun import _first_difference, rerun_order

    order = LOB.default_order()
    passive = make_baseline("submit_and_leave", context_for(LOB, order))
    kill = tmp_path / "kill"
    steps = {"n": 0}

    def after_step():
        steps["n"] += 1
        if steps["n"] == 7:
            write_kill_file(kill, KillRequest(orders=frozenset({f"{order.order_id}#3"})))

    audit = AuditTrail(tmp_path / "trail", features=passive.observations,
                       labels={"trigger": TRIGGERS})
    # the latency trigger off: a re-run compares decisions, and latency is measured, not decided
    safety = Safety(limits=RiskLimits(child_max=400),
                    watchdog=WatchdogConfig(max_latency_s=None), kill_file=str(kill))
    run = Executor(passive, LOB, safety=safety, audit=audit).run(order, 8, seed=9,
                                                                 on_step=after_step)
    assert run.episodes["finished_by"].iloc[3] == "killed"
    for i in (3, 6):  # a killed order, and one the watchdog or the policy finished
        again = rerun_order(tmp_path / "trail", f"{order.order_id}#{i}")
        assert again.identical, again.first_difference
        assert again.decisions == int(run.episodes["steps"].iloc[i])
    # a decision that came out otherwise is named
    other = again.replayed.assign(child_qty=again.replayed["child_qty"] + 1)
    assert _first_difference(again.recorded, other).startswith("step 0: child_qty")
    with pytest.raises(ConfigError, match="is not in the trail"):
        rerun_order(tmp_path / "trail", "NOPE")
