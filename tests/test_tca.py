"""Transaction-cost analysis on hand-built audit trails: every number computed by hand.

Trail frames follow the audit trail's columns (executor.audit): orders, fills, market,
decisions. Order 0 buys 100 at an arrival mid of 100 (decided at 99.98), fully filled in two
fills with fees; order 1 sells 200 at 50, half filled with a rebate, the rest charged at the
end mid 49.90, on a market with volume.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from execrl.evaluate.behaviour import flow_report
from execrl.evaluate.monitoring import (
    MonitoringThresholds,
    action_kl,
    monitoring_table,
    trail_behaviour,
)
from execrl.evaluate.tca import (
    COMPONENTS,
    TCA_OUTPUTS,
    markouts,
    per_order_tca,
    render_tca_markdown,
    tca_from_trail,
    tca_report,
    write_tca,
)

NAN = float("nan")


def _orders(**extra: list) -> pd.DataFrame:
    cols = {
        "run_id": ["r", "r"], "order_id": ["A", "B"], "order_idx": [0, 1],
        "policy": ["rl", "twap"], "symbol": ["X", "Y"], "side": ["buy", "sell"],
        "qty": [100, 200], "arrival_mid": [100.0, 50.0], "decision_px": [99.98, NAN],
        # booked by the executor: buy 4.6 bps; sell 1 + 1 + 10 = 12 bps
        "is_bps": [4.6, 12.0], "residual_shares": [0, 100],
    }
    cols.update(extra)
    return pd.DataFrame(cols)


def _fills() -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": ["r", "r", "r"], "order_id": ["A", "A", "B"], "order_idx": [0, 0, 1],
        "child_id": [1, 2, 1], "t_s": [0.5, 2.0, 1.0], "qty": [60, 40, 100],
        "px": [100.03, 100.07, 49.98], "passive": [False, False, False],
        "fee": [0.6, 0.4, -0.5],
    })


def _market() -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": ["r"] * 9,
        "order_idx": [0, 0, 0, 0, 0, 1, 1, 1, 1],
        "step": [0, 1, 2, 3, 4, 0, 1, 2, 3],
        "t_s": [0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 2.0, 3.0],
        "mid": [100.00, 100.02, 100.05, 100.04, 100.10, 50.00, 49.99, 49.95, 49.90],
        # the volume of the step ending at each row (the first row's: before the order)
        "market_volume": [NAN] * 5 + [500.0, 1000.0, 1000.0, 800.0],
    })


@pytest.fixture(scope="module")
def tca() -> pd.DataFrame:
    per_order, _ = per_order_tca(_orders(), _fills(), _market())
    return per_order.set_index("order_id")


def test_buy_decomposition_by_hand(tca: pd.DataFrame) -> None:
    a = tca.loc["A"]
    # mids at the fills: 100.00 (t = 0.5, the last before) and 100.05 (t = 2, on the grid)
    assert a["impact_bps"] == pytest.approx((60 * 0.03 + 40 * 0.02) / 100 / 100 * 1e4)  # 2.6
    assert a["timing_bps"] == pytest.approx(40 * 0.05 / 100 / 100 * 1e4)  # 2.0
    assert a["opportunity_bps"] == 0.0
    assert a["delay_bps"] == pytest.approx(0.02 / 100 * 1e4)  # 2.0: the price rose before
    assert a["fees_bps"] == pytest.approx(1.0 / 100 / 100 * 1e4)  # 1.0
    assert a["is_bps"] == pytest.approx(4.6)
    assert a["is_vs_decision_bps"] == pytest.approx(6.6)
    assert a["total_cost_bps"] == pytest.approx(7.6)
    assert a["slippage_arrival_bps"] == pytest.approx(4.6)
    assert a["fill_rate"] == 1.0 and a["fills"] == 2
    # no market volume for this order: no VWAP nor PWP benchmark
    assert math.isnan(a["interval_vwap"]) and math.isnan(a["slippage_pwp_bps"])


def test_partly_filled_sell_by_hand(tca: pd.DataFrame) -> None:
    b = tca.loc["B"]
    assert b["side"] == "sell" and b["fill_rate"] == 0.5
    assert b["impact_bps"] == pytest.approx(1.0)  # sold 1 cent under the 49.99 mid
    assert b["timing_bps"] == pytest.approx(1.0)  # the mid fell 1 cent while selling
    assert b["opportunity_bps"] == pytest.approx(10.0)  # 100 shares, 10 cents lower at the end
    assert b["delay_bps"] == 0.0  # no decision price: decided on arrival
    assert b["fees_bps"] == pytest.approx(-0.5)  # a rebate
    assert b["end_mid"] == 49.90
    assert b["is_bps"] == pytest.approx(12.0)
    assert b["slippage_arrival_bps"] == pytest.approx(4.0)
    # each step's volume at its mean mid; PWP: the first 200 / 0.1 = 2000 shares traded
    steps = [(1000, (50.00 + 49.99) / 2), (1000, (49.99 + 49.95) / 2), (800, (49.95 + 49.90) / 2)]
    ivwap = sum(v * p for v, p in steps) / 2800
    pwp = sum(v * p for v, p in steps[:2]) / 2000
    assert b["interval_vwap"] == pytest.approx(ivwap)
    assert b["pwp"] == pytest.approx(pwp) and b["pwp_complete"]
    assert b["slippage_interval_vwap_bps"] == pytest.approx(-(49.98 - ivwap) / ivwap * 1e4)
    assert b["slippage_pwp_bps"] == pytest.approx(-(49.98 - pwp) / pwp * 1e4)


def test_parts_sum_to_the_booked_is(tca: pd.DataFrame) -> None:
    parts = tca[["impact_bps", "timing_bps", "opportunity_bps"]].sum(axis=1)
    np.testing.assert_allclose(parts, tca["is_bps"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(tca["is_bps"], tca["booked_is_bps"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(tca[list(COMPONENTS)].sum(axis=1), tca["total_cost_bps"],
                               rtol=0, atol=1e-9)


def test_end_mid_from_the_orders_wins_and_a_gap_is_reported() -> None:
    """A trail whose summary carries the end mid charges the residual there; a trail whose
    market frame misses it shows the gap against the booked IS."""
    market = _market()
    short = market[~((market["order_idx"] == 1) & (market["step"] == 3))]
    per_order, _ = per_order_tca(_orders(end_mid=[NAN, 49.90]), _fills(), short)
    assert per_order["is_gap_bps"].abs().max() < 1e-9
    report = tca_report(_orders(), _fills(), short)
    b = report.per_order.set_index("order_id").loc["B"]
    assert b["end_mid"] == 49.95 and b["is_gap_bps"] == pytest.approx(-5.0)
    assert any("differs from the booked" in n for n in report.notes)


def test_markouts_on_the_fine_grid() -> None:
    _, fills = per_order_tca(_orders(), _fills(), _market())
    curve = markouts(fills, _market()).set_index(["policy", "horizon"])
    a = curve.loc["rl"]
    # h = 0: against the mid at each fill
    m0 = (60 * (100.03 - 100.00) / 100.00 + 40 * (100.07 - 100.05) / 100.05) / 100 * 1e4
    assert a.loc["0", "markout_bps"] == pytest.approx(m0)
    # h = 1 s: first mids at or after 1.5 s (100.05 at 2 s) and 3 s (100.04)
    m1 = (60 * (100.03 - 100.05) / 100.05 + 40 * (100.07 - 100.04) / 100.04) / 100 * 1e4
    assert a.loc["1s", "markout_bps"] == pytest.approx(m1)
    assert a.loc["1s", "lag_s"] == pytest.approx((0.5 + 0.0) / 2)
    assert not a.loc["1s", "coarse"]
    # 10 s and 60 s: past the last mid of the order, so no markout (counted)
    assert pd.isna(a.loc["10s", "markout_bps"]) and a.loc["10s", "fills_without"] == 2
    mh = (60 * (100.03 - 100.10) / 100.10 + 40 * (100.07 - 100.10) / 100.10) / 100 * 1e4
    assert a.loc["horizon", "markout_bps"] == pytest.approx(mh)
    # the sell: + = adverse, so selling at 49.98 before the mid fell to 49.90 is favourable
    b = curve.loc["twap"]
    assert b.loc["horizon", "markout_bps"] == pytest.approx(-(49.98 - 49.90) / 49.90 * 1e4)
    assert b.loc["horizon", "markout_bps"] < 0


def test_markout_horizons_on_a_coarse_grid() -> None:
    """Grid every 30 s: 1 s and 10 s after a fill at 5 s map to the 30 s mid (flagged
    coarse, with the lag); 60 s maps to 90 s (the grid resolves it)."""
    orders = pd.DataFrame({"order_idx": [0], "side": ["buy"], "qty": [10],
                           "arrival_mid": [10.0], "policy": ["rl"]})
    fills = pd.DataFrame({"order_idx": [0], "t_s": [5.0], "qty": [10], "px": [10.01]})
    market = pd.DataFrame({"order_idx": [0] * 5, "t_s": [0.0, 30.0, 60.0, 90.0, 120.0],
                           "mid": [10.0, 10.02, 10.03, 9.99, 9.98]})
    report = tca_report(orders, fills, market)
    c = report.markouts.set_index("horizon")
    for h, mid, lag, coarse in (("1s", 10.02, 24.0, True), ("10s", 10.02, 15.0, True),
                                ("60s", 9.99, 25.0, False)):
        assert c.loc[h, "markout_bps"] == pytest.approx((10.01 - mid) / mid * 1e4)
        assert c.loc[h, "lag_s"] == pytest.approx(lag)
        assert bool(c.loc[h, "coarse"]) is coarse
    assert c.loc["0", "markout_bps"] == pytest.approx((10.01 - 10.0) / 10.0 * 1e4)
    assert any("coarser than the markout horizon (1s, 10s)" in n for n in report.notes)
    assert "coarser than h" in render_tca_markdown(report)
    assert not any("left out of those horizons" in n for n in report.notes)
    late = tca_report(orders, fills.assign(t_s=100.0), market)
    assert any("left out of those horizons (60s)" in n for n in late.notes)


def test_mid_at_the_fill_falls_back_to_the_decisions() -> None:
    """An order the market frame does not cover is priced on its decisions' mids."""
    orders = _orders()
    decisions = pd.DataFrame({"run_id": ["r"] * 2, "order_idx": [0, 0], "t_s": [0.0, 2.0],
                              "mid": [100.00, 100.05]})
    market = _market()
    per_order, _ = per_order_tca(orders, _fills(), market[market["order_idx"] == 1],
                                 decisions)
    a = per_order.set_index("order_id").loc["A"]
    assert a["impact_bps"] == pytest.approx(2.6) and a["timing_bps"] == pytest.approx(2.0)
    assert a["end_mid"] == 100.05


def test_aggregate_is_the_mean_over_orders() -> None:
    orders = pd.concat([_orders(), _orders().assign(run_id="s")], ignore_index=True)
    fills = pd.concat([_fills(), _fills().assign(run_id="s")], ignore_index=True)
    market = pd.concat([_market(), _market().assign(run_id="s")], ignore_index=True)
    report = tca_report(orders, fills, market)
    b = report.by_policy.set_index("policy")
    assert b.loc["rl", "orders"] == 2 and b.loc["rl", "is_bps"] == pytest.approx(4.6)
    assert b.loc["twap", "opportunity_bps"] == pytest.approx(10.0)
    assert b.loc["twap", "fill_rate_shares"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="duplicate"):
        per_order_tca(pd.concat([_orders(), _orders()]), _fills(), _market())


# --------------------------------------------------------------------------- monitoring


def _monitor_trail(n_orders: int, filled: int, latency_us: float, fallbacks: int,
                   actions: list[int]) -> tuple[pd.DataFrame, ...]:
    """``n_orders`` buys of 100 at 100.0, each filled ``filled`` shares at 100.1 in one
    fill, on a grid of 1 s where the mid moves 0.02 after order 0's fill and 0.01 after
    the others'."""
    idx = list(range(n_orders))
    orders = pd.DataFrame({"order_idx": idx, "side": "buy", "qty": 100,
                           "arrival_mid": 100.0, "policy": "rl"})
    fills = pd.DataFrame({"order_idx": idx, "t_s": 0.0, "qty": filled, "px": 100.1})
    move = [0.02] + [0.01] * (n_orders - 1)
    market = pd.DataFrame({"order_idx": idx + idx, "t_s": [0.0] * n_orders + [1.0] * n_orders,
                           "mid": [100.0] * n_orders + [100.0 + m for m in move]})
    acting = ["fallback" if i < fallbacks else "policy" for i in idx]
    decisions = pd.DataFrame({"order_idx": idx, "t_s": 0.0, "mid": 100.0,
                              "latency_us": latency_us, "acting": acting})
    per_action = pd.DataFrame({"order_idx": 0, "t_s": 0.5, "mid": 100.0, "latency_us": 1.0,
                               "acting": "policy", "action": actions})
    decisions = pd.concat([decisions, per_action], ignore_index=True)
    return orders, fills, market, decisions


def _flags(table: pd.DataFrame) -> dict[str, tuple[float | None, bool]]:
    return {r.category: (r.value, r.flagged) for r in table.itertuples()}


def test_monitoring_flags_at_the_thresholds() -> None:
    """20 orders: one fill in 20 moves the mid 2 ticks (5 %: on the threshold), 95 % filled,
    100 ms latency, 4 fallbacks (20 %), KL 0.131: nothing trips; one step over each does."""
    reference = {"rl": [0.5, 0.5]}
    orders, fills, market, decisions = _monitor_trail(20, 95, 100_000.0, 4, [0, 0, 0, 1])
    report = tca_report(orders, fills, market, decisions, tick_size=0.01,
                        reference_actions=reference)
    flags = _flags(report.monitoring)
    assert flags["impact"] == (pytest.approx(0.05), False)
    assert flags["fill rate"] == (pytest.approx(0.95), False)
    assert flags["latency"] == (pytest.approx(100.0), False)
    assert flags["fallback rate"] == (pytest.approx(0.20), False)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert flags["drift"] == (pytest.approx(kl), False)
    slip = flags["slippage"][0]
    assert slip == pytest.approx(10.0) and flags["slippage"][1] == (slip > 10.0)

    orders, fills, market, decisions = _monitor_trail(19, 94, 100_001.0, 4,
                                                      [0, 0, 0, 0, 0, 1])
    report = tca_report(orders, fills, market, decisions, tick_size=0.01,
                        reference_actions=reference)
    flags = _flags(report.monitoring)
    assert flags["impact"] == (pytest.approx(1 / 19), True)
    assert flags["fill rate"] == (pytest.approx(0.94), True)
    assert flags["latency"] == (pytest.approx(100.001), True)
    assert flags["fallback rate"] == (pytest.approx(4 / 19), True)
    assert flags["drift"][1] and flags["drift"][0] == pytest.approx(
        5 / 6 * math.log(5 / 3) + 1 / 6 * math.log(1 / 3))


def test_monitoring_strict_at_any_threshold() -> None:
    """Each metric on its threshold is not flagged; a hair's breadth past it is."""
    orders, fills, market, decisions = _monitor_trail(20, 95, 50_000.0, 4, [0, 0, 0, 1])
    per_order, f = per_order_tca(orders, fills, market, decisions)
    kw = {"tick_size": 0.01, "reference_actions": {"rl": [0.5, 0.5]}}
    values = _flags(monitoring_table(per_order, f, market, decisions, **kw))
    names = {"slippage": "slippage_bps", "impact": "impact_share", "fill rate": "fill_rate",
             "latency": "latency_ms", "drift": "drift_kl", "fallback rate": "fallback_rate"}
    below = {"fill rate"}
    for category, field in names.items():
        value = values[category][0]
        at = MonitoringThresholds(**{field: value})
        past = MonitoringThresholds(**{field: float(np.nextafter(
            value, np.inf if category in below else -np.inf))})
        assert not _flags(monitoring_table(per_order, f, market, decisions, thresholds=at,
                                           **kw))[category][1], category
        assert _flags(monitoring_table(per_order, f, market, decisions, thresholds=past,
                                       **kw))[category][1], category


def test_monitoring_says_what_is_missing() -> None:
    report = tca_report(_orders(), _fills(), _market())
    rows = report.monitoring.set_index(["policy", "category"])
    assert rows.loc[("rl", "impact"), "note"] == "no tick size given"
    assert pd.isna(rows.loc[("rl", "drift"), "value"])
    assert not rows["flagged"].loc[(slice(None), "drift")].any()
    assert rows.loc[("twap", "fill rate"), "flagged"]  # half filled
    assert any("no decisions" in n for n in report.notes)


def test_action_kl() -> None:
    assert action_kl([5, 5], [0.5, 0.5]) == 0.0
    assert action_kl([1, 0], [0.0, 1.0]) == math.inf
    assert action_kl([1, 3], [1, 1]) == pytest.approx(
        0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    # the watchdog's smoothing: (count + s) / (total + s * n)
    p = np.array([1.5, 0.5]) / 2.0
    assert action_kl([1, 0], [0.5, 0.5], smoothing=0.5) == pytest.approx(
        float(np.sum(p * np.log(p / 0.5))))


# --------------------------------------------------------------------------- seed 000 §5


def test_correlation_report_from_the_trail() -> None:
    """Two buys: under selling pressure (tick flow < 0) order 0 crosses, order 1 posts a
    limit below the ask; under buying pressure both hold; fallback decisions are left out.
    The tally goes through behaviour.flow_report, the core's own math."""
    orders = pd.DataFrame({"order_idx": [0, 1], "side": ["buy", "buy"], "qty": [10, 10],
                           "arrival_mid": [10.0, 10.0], "policy": ["rl", "rl"]})
    decisions = pd.DataFrame({
        "order_idx": [0, 0, 1, 1, 1], "step": [0, 1, 0, 1, 2], "t_s": [0.0, 1.0, 0.0, 1.0, 2.0],
        "mid": 10.0, "f_tick_flow_10s": [-3.0, 2.0, -1.0, 4.0, -1.0],
        "child_qty": [5, 0, 5, 0, 5], "child_type": ["market", "", "limit", "", "market"],
        "child_px": [NAN, NAN, 9.99, NAN, NAN],
        "acting": ["policy", "policy", "policy", "policy", "fallback"],
    })
    market = pd.DataFrame({"order_idx": [0, 0, 1, 1, 1], "step": [0, 1, 0, 1, 2],
                           "t_s": [0.0, 1.0, 0.0, 1.0, 2.0], "mid": 10.0,
                           "best_bid": 9.995, "best_ask": 10.005})
    behaviour, why = trail_behaviour(orders, decisions, market)
    assert why is None
    rl = behaviour["rl"]
    assert rl["decisions"] == 4
    assert rl["by_tick_flow"]["opposite"] == {"decisions": 2, "hold": 0.0, "passive": 0.5,
                                              "aggressive": 0.5}
    assert rl["by_tick_flow"]["same"] == {"decisions": 2, "hold": 1.0, "passive": 0.0,
                                          "aggressive": 0.0}
    counts = np.zeros((2, 3, 3), np.int64)
    counts[0, 0, 2] = counts[0, 2, 0] = counts[1, 0, 1] = counts[1, 2, 0] = 1
    assert rl["aggressive_opposite_minus_same"] == flow_report(counts)[
        "aggressive_opposite_minus_same"]
    assert "action_histogram" not in rl
    with_actions = trail_behaviour(orders, decisions.assign(action=[2.0, 0, 1, 0, 2]), market)
    assert with_actions[0]["rl"]["action_histogram"] == {"0": 2, "1": 1, "2": 1}
    page = render_tca_markdown(tca_report(orders, None, market, decisions))
    assert "## Behaviour and tick flow (seed 000 §5)" in page
    kinds = decisions.assign(order_kind=[2, 0, 1, 0, 2])
    assert trail_behaviour(orders, kinds, None)[0] == behaviour
    assert "f_tick_flow_10s" in trail_behaviour(orders, decisions.drop(
        columns="f_tick_flow_10s"), market)[1]


# --------------------------------------------------------------------------- outputs


def test_write_tca(tmp_path) -> None:
    trail = SimpleNamespace(orders=_orders(), fills=_fills().assign(policy="stale"),
                            market=_market(), decisions=None)
    report = tca_from_trail(trail, tick_size=0.01)
    path = write_tca(tmp_path, report)
    assert {p.name for p in tmp_path.iterdir()} == TCA_OUTPUTS
    data = json.loads((tmp_path / "tca.json").read_text())
    assert data["policies"]["twap"]["tca"]["is_bps"] == pytest.approx(12.0)
    assert [m["horizon"] for m in data["policies"]["rl"]["markouts"]] == [
        "0", "1s", "10s", "60s", "horizon"]
    text = path.read_text()
    assert "Transaction-cost analysis" in text and "Monitoring (seed 002 §4)" in text
    assert "tca_decomposition.png" in text
    assert pd.read_parquet(tmp_path / "tca_orders.parquet").shape[0] == 2
    write_tca(tmp_path, report, plots=False)
    assert not (tmp_path / "tca_markouts.png").exists()


# --------------------------------------------------------------------------- the core's booking


def _core_trail(side: str, constraints: dict | None, n: int = 6) -> tuple[pd.DataFrame, ...]:
    """Run TWAP through the execution core on the Almgren–Chriss market and record a trail
    the way the executor does: the mid before each step at its start (the fills' time) and
    the end mid after the last; the orders with the core's booked IS."""
    from execrl.domain import ParentOrder
    from execrl.env.factory import EnvConfig, make_execution
    from execrl.evaluate.backtest import policy_context
    from execrl.policies.baselines import make_baseline

    order = ParentOrder.from_dict({
        "order_id": "T", "symbol": "XYZ", "side": side, "qty": 1_000_000, "arrival_px": 50.0,
        "start_ts": 0, "horizon_s": 5 * 23_400.0, **({"constraints": constraints}
                                                     if constraints else {})})
    config = EnvConfig()
    policy = make_baseline("twap", policy_context(config, order))
    core = make_execution(EnvConfig(observations=tuple(policy.observations),
                                    actions=policy.action_set), order, n, autoreset=False)
    core.record_fill_events = True
    obs = core.reset(seed=5)
    dt = order.horizon_s / core.n_steps
    market, fills, k = [], [], 0
    while not core.done.all():
        running = np.flatnonzero(~core.done)
        market.append(pd.DataFrame({"order_idx": running, "step": k, "t_s": k * dt,
                                    "mid": core.market.mid[running],
                                    "market_volume": core.market.feature("last_volume")[running]}))
        masks = core.action_masks() if core.action_set.is_discrete else None
        obs, *_ = core.step(policy.act(obs, masks))
        ev = core.last_fills.events
        fills.append(pd.DataFrame({"order_idx": ev["env"], "t_s": ev["t"], "qty": ev["qty"],
                                   "px": ev["px"], "fee": ev["fee"]}))
        k += 1
    market.append(pd.DataFrame({"order_idx": np.arange(n), "step": k, "t_s": k * dt,
                                "mid": core.market.mid,
                                "market_volume": core.market.feature("last_volume")}))
    rec = core.episode_records(np.arange(n))
    orders = pd.DataFrame({"order_idx": np.arange(n), "side": side, "qty": order.qty,
                           "arrival_mid": core.market.arrival_mid, "policy": "twap",
                           "is_bps": rec["is_bps"], "residual_shares": rec["residual_shares"],
                           "residual_is_bps": rec["residual_is_bps"],
                           "interval_vwap": core.market.interval_vwap})
    orders.attrs["n_steps"] = core.n_steps
    return orders, pd.concat(fills, ignore_index=True), pd.concat(market, ignore_index=True)


@pytest.mark.parametrize(("side", "constraints"), [("sell", None), ("buy", None),
                                                    ("sell", {"child_max": 60_000})])
def test_recomputed_is_is_the_cores_booked_is(side: str, constraints: dict | None) -> None:
    """On the core's own fills and mids, the decomposition sums to the IS the core booked,
    the residual (what child_max leaves unfilled) at the end mid included."""
    orders, fills, market = _core_trail(side, constraints)
    per_order, _ = per_order_tca(orders, fills, market)
    np.testing.assert_allclose(per_order["is_bps"], orders["is_bps"], rtol=1e-9, atol=1e-9)
    parts = per_order[["impact_bps", "timing_bps", "opportunity_bps"]].sum(axis=1)
    np.testing.assert_allclose(parts, orders["is_bps"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(per_order["opportunity_bps"], orders["residual_is_bps"],
                               rtol=1e-9, atol=1e-9)
    # the interval VWAP is the market's own (each step's volume at its mean mid)
    np.testing.assert_allclose(per_order["interval_vwap"], orders["interval_vwap"], rtol=1e-12)
    if constraints:
        unfilled = 1_000_000 - 60_000 * orders.attrs["n_steps"]
        assert unfilled > 0 and (orders["residual_shares"] == unfilled).all()
        assert (per_order["opportunity_bps"] != 0).all()
    # AC market orders pay the half spread and temporary impact: trading cost > 0
    assert (per_order["impact_bps"] > 0).all()
