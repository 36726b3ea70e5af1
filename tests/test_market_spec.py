"""The market-specification union: one place that turns a configuration into a market, what
a policy may know of it, its risk scale, closed forms and results block."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from execrl.cli import app
from execrl.domain import ConfigError
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution
from execrl.evaluate.backtest import policy_context
from execrl.sim.almgren_chriss import ACMarket, ACMarketConfig
from execrl.sim.spec import market_models, parse_market


def test_the_model_field_selects_the_market_and_defaults_to_almgren_chriss():
    assert isinstance(parse_market({}), ACMarketConfig)
    spec = parse_market({"model": "almgren_chriss", "sigma": 1.2})
    assert spec.model == "almgren_chriss" and spec.sigma == 1.2
    assert set(market_models()) == {"almgren_chriss", "lob", "replay"}


@pytest.mark.parametrize(
    ("data", "needle"),
    [({"model": "heston"}, "'model' = 'heston'"), ({"model": 3}, "'model' = 3"),
     ({"sigma": -1}, "'sigma' = -1"), ([1, 2], "must be a JSON object")],
)
def test_a_bad_specification_is_refused_naming_the_field(data, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        parse_market(data)


def test_the_spec_builds_its_market_with_the_orders_horizon_and_price():
    spec = ACMarketConfig().for_order(DEFAULT_ORDER)
    assert spec.horizon == pytest.approx(DEFAULT_ORDER.horizon / spec.time_unit_s)
    market = spec.build(7, -1)
    assert isinstance(market, ACMarket) and market.n_envs == 7 and market.side == -1
    core = make_execution(EnvConfig(market=ACMarketConfig()), DEFAULT_ORDER, n_envs=7)
    assert core.market.config == spec  # the environment builds through the same spec


def test_a_policy_knows_the_decision_grid_volume_profile_and_cost_model():
    spec = ACMarketConfig(n_steps=12)
    known = policy_context(EnvConfig(market=spec), DEFAULT_ORDER).market
    assert known.n_steps == 12
    np.testing.assert_allclose(known.volume_weights.sum(), 1.0)
    assert known.cost_model == spec.for_order(DEFAULT_ORDER)  # exact for the AC market
    assert known.signal is None


def test_risk_scale_and_impact_come_from_the_spec():
    spec = ACMarketConfig(sigma=2.0, vol_multiplier=1.5, n_steps=4, horizon=2.0, eta=1e-5)
    assert spec.risk_var_per_share2() == pytest.approx((2.0 * 1.5) ** 2 * 0.5)
    assert spec.temp_impact_per_share() == pytest.approx(1e-5 / 0.5)


def test_a_market_file_of_another_model_is_refused_by_name(tmp_path):
    market = tmp_path / "m.json"
    market.write_text(json.dumps({"model": "heston", "levels": 10}))
    result = CliRunner().invoke(app, ["evaluate", "--market", str(market), "--orders", "20",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    needle = "'model' = 'heston' is not valid: choose from almgren_chriss, lob, replay"
    assert needle in result.output
    assert not (tmp_path / "out").exists()


def test_ac_fill_events_are_timed_in_seconds_from_the_order_start():
    from execrl.sim.base import ChildOrderBatch

    spec = ACMarketConfig(n_steps=4).for_order(DEFAULT_ORDER)
    market = spec.build(2, -1)
    market.reset(np.random.default_rng(0))
    orders = ChildOrderBatch.market_orders(2)
    orders.qty[:] = 1_000
    step_s = DEFAULT_ORDER.horizon / 4
    for k in range(4):
        events = market.execute(orders, np.ones(2, dtype=bool), record_events=True).events
        assert np.allclose(events["t"], k * step_s) and list(events["env"]) == [0, 1]
