"""The order's hard limits: never broken (the horizon included), what they leave unfilled is
charged at the end mid, breaches and cuts counted apart, infeasible orders flagged, and the
report says so."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from execrl.cli import app
from execrl.domain import ParentOrder, implementation_shortfall_bps
from execrl.env import EnvConfig, ExecutionEnv
from execrl.env.core import BatchedExecution
from execrl.env.factory import market_for_order, reward_for_market
from execrl.env.spaces import resolve_action_set
from execrl.evaluate.backtest import run_policies, run_policy
from execrl.sim import ACMarketConfig
from execrl.sim.almgren_chriss import ACMarket
from execrl.sim.base import ChildOrderBatch, FillBatch

DAY_S = 23_400.0
BASELINES = ["twap", "vwap", "pov", "ac", "immediate"]
# The README's example order: 250,000 shares over an hour, child_max 15,000, participation 0.1
README_ORDER = {
    "order_id": "ABC-123", "symbol": "AAPL", "side": "sell", "qty": 250000, "arrival_px": 187.53,
    "start_ts": 1693564800, "end_ts": 1693568400,
    "constraints": {"participation": 0.1, "price_band_bps": 5, "child_max": 15000},
}  # fmt: skip


def readme_order() -> ParentOrder:
    return ParentOrder.from_dict(README_ORDER)


def step_limits_by_hand(order: ParentOrder, market: ACMarketConfig) -> np.ndarray:
    """child_max, and participation x the step's expected volume in whole shares."""
    m = market_for_order(market, order)
    volume = m.adv * m.horizon * m.volume_weights()
    c = order.constraints
    return np.minimum(c.child_max, np.floor(c.participation * volume)).astype(np.int64)


class AllAtOnce:
    """Asks for everything that remains at every step (seed003's "all")."""

    name = "all_at_once"
    observations = ("remaining_ratio", "elapsed_ratio")
    action_set = "seed003"

    def act(self, observations, masks=None):
        return np.full(observations.shape[0], 4, dtype=np.int64)


# -- no child order beyond the limits -------------------------------------------------------------


def test_no_baseline_child_order_exceeds_the_limits_at_the_horizon_included() -> None:
    market, order = ACMarketConfig(), readme_order()
    limits = step_limits_by_hand(order, market)
    assert limits.sum() < order.qty  # the limits cannot complete this order
    runs = run_policies(BASELINES, EnvConfig(market=market), order, n_orders=40, seed=3)
    for run in runs:
        over = run.schedules > limits
        assert not over.any(), (
            f"{run.policy}: child orders {run.schedules[over][:3]} above the limits "
            f"{np.broadcast_to(limits, run.schedules.shape)[over][:3]}"
        )
        e = run.episodes
        assert (e["breaches"] == 0).all()
        unfilled = order.qty - run.schedules.sum(axis=1)
        assert (e["residual_shares"].to_numpy() == unfilled).all()
        np.testing.assert_array_equal(e["fill_rate"], run.schedules.sum(axis=1) / order.qty)
    # asking for everything at once is cut at every step but the last, never breaks a limit,
    # and fills exactly what the limits allow
    immediate = next(r for r in runs if r.policy == "immediate")
    assert (immediate.episodes["cuts"] == market.n_steps - 1).all()
    np.testing.assert_array_equal(immediate.schedules, np.broadcast_to(limits, (40, 10)))


def test_a_greedy_discrete_policy_is_cut_not_breached() -> None:
    market, order = ACMarketConfig(), readme_order()
    limits = step_limits_by_hand(order, market)
    run = run_policy(AllAtOnce(), EnvConfig(market=market), order, n_orders=16, seed=0)
    assert (run.schedules <= limits).all()
    np.testing.assert_array_equal(run.schedules, np.broadcast_to(limits, run.schedules.shape))
    assert (run.episodes["breaches"] == 0).all()
    assert (run.episodes["cuts"] == market.n_steps - 1).all()  # every request but the horizon's
    assert (run.episodes["residual_shares"] == order.qty - limits.sum()).all()


def test_waiting_to_the_horizon_sends_only_what_the_limits_allow() -> None:
    """The last step sends what is left up to the cap, not the whole remainder."""
    market = ACMarketConfig(n_steps=3)
    order = ParentOrder.from_dict({**README_ORDER, "constraints": {"child_max": 15000}})
    env = ExecutionEnv(EnvConfig(market=market, actions="seed003"), order)
    env.reset(seed=0)
    for _ in range(3):
        *_, terminated, _, info = env.step(0)  # wait
    assert terminated
    np.testing.assert_array_equal(env.core.stats.schedule[0], [0, 0, 15000])
    assert info["breaches"] == 0 and info["cuts"] == 0
    assert info["residual_shares"] == 235_000 and info["fill_rate"] == 15000 / 250000


# -- the residual's charge ------------------------------------------------------------------------


def _hand_checked_env(reward: str) -> ExecutionEnv:
    """σ = 0, μ = 0, numbers exact in binary: sell 64 at 128, child_max 16, two steps."""
    market = ACMarketConfig(
        s0=128.0, sigma=0.0, drift=0.0, eta=0.25, gamma=0.125, epsilon=0.125, n_steps=2,
        risk_aversion=0.0,
    )  # fmt: skip
    order = ParentOrder.from_dict(
        {
            "order_id": "R-1", "symbol": "XYZ", "side": "sell", "qty": 64, "arrival_px": 128.0,
            "start_ts": 0, "horizon_s": DAY_S, "constraints": {"child_max": 16},
        }
    )  # fmt: skip
    return ExecutionEnv(EnvConfig(market=market, actions="continuous", reward=reward), order)


@pytest.mark.parametrize("reward", ["is_bps", "arrival_vwap", "risk_adjusted"])
def test_residual_is_charged_at_the_end_mid_in_is_and_in_every_reward(reward: str) -> None:
    env = _hand_checked_env(reward)
    env.reset(seed=0)
    env.step(np.array([1.0], dtype=np.float32))  # all 64 asked, 16 sent
    *_, terminated, _, info = env.step(np.array([1.0], dtype=np.float32))  # last: 16 of 48
    assert terminated
    np.testing.assert_array_equal(env.core.stats.schedule[0], [16, 16])
    # τ = 0.5, η/τ = 0.5: fills 128 − (0.125 + 8) and 126 − 8.125; mids 126, then 124
    fill1, fill2, end_mid = 119.875, 117.875, 124.0
    assert env.core.market.mid[0] == end_mid
    assert info["residual_shares"] == 32 and info["fill_rate"] == 0.5
    # residual × (end mid − arrival mid), sell sign, bps of the arrival notional X·S0
    charge = 32 * (128.0 - end_mid) / (64 * 128.0) * 1e4
    assert charge == 156.25
    assert info["residual_is_bps"] == charge
    assert info["residual_is_bps"] == 32 / 64 * float(implementation_shortfall_bps(124, 128, -1))
    traded_is = (16 * (128.0 - fill1) + 16 * (128.0 - fill2)) / (64 * 128.0) * 1e4
    assert info["is_bps"] == traded_is + charge  # IS counts every share of the order
    if reward == "is_bps":
        assert info["return"] == -info["is_bps"]
    elif reward == "risk_adjusted":  # λ = 0: −ΔIS summed, and one cut (64 asked, 16 allowed)
        assert info["cuts"] == 1
        assert info["return"] == pytest.approx(-info["is_bps"] - 1.0, rel=1e-12)
    else:  # the terminal term prices all 64 shares, the residual at the end mid
        vwap = float(env.core.market.arrival_vwap[0])
        avg_all = (16 * fill1 + 16 * fill2 + 32 * end_mid) / 64
        expected_vs_vwap = -(avg_all - vwap) / vwap * 1e4
        assert info["is_vs_arrival_vwap_bps"] == pytest.approx(expected_vs_vwap, rel=1e-12)
        aux = sum(
            float(np.clip((px - mid) / mid * 10.0, -1.0, 1.0))  # sell: −side·(px − mid)/mid·10
            for px, mid in ((fill1, 128.0), (fill2, 126.0))
        )
        expected_return = 0.85 * (-expected_vs_vwap / 100.0) + 0.15 * aux
        assert info["return"] == pytest.approx(expected_return, rel=1e-12)


def test_decision_log_rewards_carry_the_residual_and_match_a_run_under_that_reward() -> None:
    from execrl.evaluate.decisions import DecisionRecorder

    market, order = ACMarketConfig(), readme_order()
    base = EnvConfig(market=market, reward="is_bps")
    twap = run_policies(["twap"], base, order, 8, 5, recorder=DecisionRecorder())[0]
    d = twap.decisions
    assert d is not None and not d.breach.any() and d.cut.any()
    per_order = d.groupby("order_idx")["reward_is_bps"].sum().to_numpy()
    np.testing.assert_allclose(per_order, -twap.episodes["is_bps"], rtol=0, atol=1e-9)
    # the arrival-VWAP reward recomputed from the log (exec price recovered from the step IS,
    # without the residual's charge) is what a run under that reward credits
    other = EnvConfig(market=market, reward="arrival_vwap")
    run = run_policies(["twap"], other, order, 8, 5)[0]
    recomputed = d.groupby("order_idx")["reward_arrival_vwap"].sum().to_numpy()
    np.testing.assert_allclose(recomputed, run.episodes["return"], rtol=0, atol=1e-9)


# -- breaches: only where a child order went beyond a limit ---------------------------------------


class OverfillingMarket(ACMarket):
    """A venue that fills half as much again as it was sent (a misbehaving route)."""

    def execute(
        self, orders: ChildOrderBatch, active: np.ndarray, record_events: bool = False
    ) -> FillBatch:
        more = dataclasses.replace(orders, qty=orders.qty + orders.qty // 2)
        return super().execute(more, active, record_events)


def test_a_fill_beyond_the_limit_is_counted_as_a_breach() -> None:
    config = ACMarketConfig(n_steps=4)
    order = ParentOrder.from_dict(
        {
            "order_id": "B-1", "symbol": "XYZ", "side": "buy", "qty": 1000, "arrival_px": 50.0,
            "start_ts": 0, "horizon_s": DAY_S, "constraints": {"child_max": 100},
        }
    )  # fmt: skip
    market_config = market_for_order(config, order)
    core = BatchedExecution(
        OverfillingMarket(market_config, n_envs=2, side=1),
        qty=order.qty,
        side=1,
        observations=("remaining_ratio", "elapsed_ratio"),
        action_set=resolve_action_set("continuous"),
        reward=reward_for_market("is_bps", market_config),
        constraints=order.constraints,
        autoreset=False,
    )
    core.reset(seed=0)
    core.step(np.array([[0.1], [0.05]], dtype=np.float32))  # 100 and 50 sent
    np.testing.assert_array_equal(core.stats.schedule[:, 0], [150, 75])  # filled
    np.testing.assert_array_equal(core.stats.breaches, [1, 0])  # 150 > child_max 100
    np.testing.assert_array_equal(core.stats.cuts, [0, 0])  # both asked within the cap


# -- feasibility ----------------------------------------------------------------------------------


def _order(qty: int, constraints: dict) -> ParentOrder:
    return ParentOrder.from_dict(
        {
            "order_id": "F-1", "symbol": "XYZ", "side": "sell", "qty": qty, "arrival_px": 50.0,
            "start_ts": 0, "horizon_s": DAY_S, "constraints": constraints,
        }
    )  # fmt: skip


def test_feasibility_of_hand_built_orders() -> None:
    from execrl.env.factory import order_feasibility

    # U-shaped volume over 3 steps of one day: weights 11/27, 5/27, 11/27 (a = 0.5), so with
    # 2,701 shares a day the steps expect 1100.4, 500.2 and 1100.4 shares
    market = ACMarketConfig(n_steps=3, adv=2701.0, volume_u_shape=0.5, horizon=1.0)
    f = order_feasibility(_order(1000, {"child_max": 100, "participation": 0.1}), market)
    np.testing.assert_array_equal(f.step_limits, [100, 50, 100])  # 110 > 100, 50 < 100, 110
    assert f.max_fillable_shares == 250 and not f.feasible
    assert f.binding == "child_max and participation"
    assert f.to_results() == {
        "max_fillable_shares": 250, "feasible": False, "binding": "child_max and participation"
    }  # fmt: skip
    assert "at most 250 of its 1,000 shares" in f.warning()

    f = order_feasibility(_order(1000, {"child_max": 200}), market)
    assert (f.max_fillable_shares, f.feasible, f.binding) == (600, False, "child_max")
    assert f.warning() == (
        "the order's limits allow at most 600 of its 1,000 shares (child_max 200 x 3 steps); "
        "the rest will be charged as a residual at the end mid"
    )
    f = order_feasibility(_order(1000, {"participation": 0.1}), market)
    assert (f.max_fillable_shares, f.binding) == (110 + 50 + 110, "participation")
    assert "participation 0.1 x 2,701 shares of expected volume over 3 steps" in f.warning()
    # exactly what the limits allow is feasible, and never more than the order is reported
    f = order_feasibility(_order(250, {"child_max": 100, "participation": 0.1}), market)
    assert f.feasible and f.max_fillable_shares == 250 and f.warning() is None
    f = order_feasibility(_order(249, {"child_max": 100, "participation": 0.1}), market)
    assert f.feasible and f.max_fillable_shares == 249
    f = order_feasibility(_order(10**6, {}), market)
    assert f.feasible and f.step_limits is None and f.max_fillable_shares == 10**6


def test_feasibility_is_what_a_greedy_policy_fills() -> None:
    from execrl.env.factory import order_feasibility

    market, order = ACMarketConfig(), readme_order()
    f = order_feasibility(order, market)
    np.testing.assert_array_equal(f.step_limits, step_limits_by_hand(order, market))
    run = run_policy(AllAtOnce(), EnvConfig(market=market), order, n_orders=4, seed=1)
    assert (run.schedules.sum(axis=1) == f.max_fillable_shares).all()


# -- theory ---------------------------------------------------------------------------------------


def test_theory_lines_are_marked_where_the_limits_cut_the_schedule() -> None:
    from execrl.evaluate.results import theory_block

    market = ACMarketConfig()
    config = EnvConfig(market=market)
    cut = theory_block(config, readme_order(), ["twap", "ac"])
    assert cut["twap"]["unconstrained"] is True and cut["ac"]["unconstrained"] is True
    # TWAP's 25,000 a step fits a cap of 25,000; AC's first trade (25,061: risk aversion
    # front-loads it) does not, and fits a cap of 25,061
    twap_fits = ParentOrder.from_dict({**README_ORDER, "constraints": {"child_max": 25_000}})
    block = theory_block(config, twap_fits, ["twap", "ac"])
    assert "unconstrained" not in block["twap"] and block["ac"]["unconstrained"] is True
    ac_fits = ParentOrder.from_dict({**README_ORDER, "constraints": {"child_max": 25_061}})
    assert all("unconstrained" not in t for t in theory_block(config, ac_fits, ["ac"]).values())
    free = ParentOrder.from_dict({**README_ORDER, "constraints": {}})
    unlimited = theory_block(config, free, ["twap", "ac"])
    assert all("unconstrained" not in t for t in unlimited.values())


# -- what the user sees ---------------------------------------------------------------------------


def test_evaluate_warns_reports_and_tabulates_the_limits(tmp_path: Path) -> None:
    from execrl.env.factory import order_feasibility

    order_file = tmp_path / "order.json"
    order_file.write_text(json.dumps(README_ORDER))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--order", str(order_file), "--orders", "60", "--policies",
         "twap,vwap,pov,ac,immediate", "--compare-to", "twap,ac", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    most = order_feasibility(readme_order(), ACMarketConfig()).max_fillable_shares
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: the order's limits allow at most {most:,} of its 250,000 shares "
        "(participation 0.1 x 769,231 shares of expected volume over 10 steps); the rest will "
        "be charged as a residual at the end mid"
    ]
    results = json.loads((out / "results.json").read_text())
    assert results["order_feasibility"] == {
        "max_fillable_shares": most, "feasible": False, "binding": "participation"
    }  # fmt: skip
    for name, p in results["policies"].items():
        assert p["breaches"] == 0, name
        assert p["residual_shares"] == pytest.approx(250_000 * (1.0 - p["fill_rate"]), rel=1e-12)
        assert "violations" not in p
    assert results["policies"]["twap"]["cuts"] == 60 * 9  # 25,000 asked a step, over the cap
    assert results["theory"]["twap"]["unconstrained"] is True

    # the terminal table: breaches and cuts columns, nothing cut short
    table = result.stdout
    header = next(line for line in table.splitlines() if "policy" in line and "mean" in line)
    for col in ("E+λ·Var", "fill rate", "breaches", "cuts", "paired diff vs", "p (t-test)"):
        assert col in header
    assert "…" not in table
    twap_row = next(line for line in table.splitlines() if line.strip().startswith("twap "))
    assert f"{results['policies']['twap']['cuts']:,}" in twap_row.split()
    assert "theory twap (unconstrained" in table

    # the report: the order, its limits, the objective, residual, breaches, cuts
    report = (out / "report.md").read_text()
    assert "## Parent order" in report
    assert "sell 250,000 AAPL (order ABC-123)" in report
    assert "| child_max | 15,000 shares per child order |" in report
    assert "| participation | 0.1 of the step's expected volume |" in report
    assert f"at most {most:,} of the 250,000 shares" in report
    for name, p in results["policies"].items():
        row = (
            f"| {name} | {p['objective_bps']:.2f} | {p['residual_shares']:,.1f} | "
            f"{p['residual_is_bps']:.2f} | {p['breaches']} | {p['cuts']} |"
        )
        assert row in report, row
    assert "unconstrained (limits cut it)" in report


def test_report_compares_the_objective_beside_the_mean(tmp_path: Path) -> None:
    """Mean IS favours TWAP, E+λ·Var favours AC (which minimises it): the report shows both."""
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["evaluate", "--orders", "400", "--policies", "twap,ac", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.stderr  # the default order has no limits
    results = json.loads((out / "results.json").read_text())
    assert results["order_feasibility"]["feasible"] is True
    assert all("unconstrained" not in t for t in results["theory"].values())
    twap, ac = (results["policies"][p]["objective_bps"] for p in ("twap", "ac"))
    (cmp,) = results["comparisons"]
    report = (out / "report.md").read_text()
    assert "improvement % on mean IS" in report and "mean IS diff (bps)" in report
    row = next(line for line in report.splitlines() if line.startswith("| ac | twap |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == f"{cmp['diff_bps_mean']:.2f}"
    assert cells[6] == f"{cmp['improvement_pct']:.2f}"
    assert cells[7] == f"ac {ac:.2f} vs twap {twap:.2f}"
    assert cells[8] == ("ac" if ac < twap else "twap")
    assert not math.isclose(ac, twap)


def test_train_warns_that_the_order_cannot_complete(tmp_path: Path) -> None:
    order_file = tmp_path / "order.json"
    order_file.write_text(json.dumps(README_ORDER))
    result = CliRunner().invoke(
        app,
        ["train", "--algo", "qtable", "--actions", "seed003", "--order", str(order_file),
         "--steps", "200", "--n-envs", "8", "--out", str(tmp_path / "q")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "allow at most 76,919 of its 250,000 shares" in warnings[0]
