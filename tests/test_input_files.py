"""The files a user hands to execrl (order, --market, --config) and the numbers in them: each
bad one is refused in one line naming the file or the field, with exit 2 and nothing written;
extreme but valid ones run to finite results."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from execrl.cli import app
from execrl.domain import ConfigError, OrderValidationError, ParentOrder
from execrl.env.factory import DEFAULT_ORDER, market_for_order
from execrl.sim.almgren_chriss import ACMarketConfig, SignalConfig

runner = CliRunner()

GOOD_ORDER: dict[str, Any] = {
    "order_id": "ABC-123", "symbol": "AAPL", "side": "sell", "qty": 250000, "arrival_px": 187.53,
    "start_ts": 1693564800, "end_ts": 1693568400,
    "constraints": {"participation": 0.1, "price_band_bps": 5, "child_max": 15000},
}
GOOD_TEXT = json.dumps(GOOD_ORDER)


def refused_by_cli(tmp_path: Path, *args: str) -> str:
    """Run ``execrl evaluate`` expecting a refusal; return its one line (checked)."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", "--orders", "20", "--out", str(out), *args])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()
    return lines[0]


def evaluate_ok(tmp_path: Path, *args: str, policies: str = "twap,vwap,pov,ac,immediate") -> dict:
    """Run ``execrl evaluate`` expecting success; return results.json, after checking that
    no number in it or in episodes.parquet is NaN or infinite."""
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["evaluate", "--orders", "20", "--policies", policies, "--out", str(out), *args]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    text = (out / "results.json").read_text()
    results = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
    episodes = pd.read_parquet(out / "episodes.parquet")
    numbers = episodes.select_dtypes("number").to_numpy(dtype=np.float64)
    assert np.isfinite(numbers).all()
    for policy in results["policies"].values():
        assert math.isfinite(policy["objective_bps"]) and math.isfinite(policy["is_bps"]["std"])
    return results


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# -- the files themselves ---------------------------------------------------------------------


def test_order_file_that_is_not_utf8_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "order.json", GOOD_TEXT.replace("AAPL", "A\xe9PL").encode("latin-1"))
    with pytest.raises(OrderValidationError) as info:
        ParentOrder.from_file(path)
    assert str(path) in str(info.value) and "UTF-8" in str(info.value)
    line = refused_by_cli(tmp_path, "--order", str(path))
    assert str(path) in line and "not UTF-8" in line and "0xe9" in line


def test_market_and_config_files_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    market = write(tmp_path, "market.json", b'{"sigma": 1.0, "note": "\xff"}')
    assert "market file" in refused_by_cli(tmp_path, "--market", str(market))
    config = write(tmp_path, "config.toml", b'alpha = 0.1\nname = "\xc3\x28"\n')
    result = runner.invoke(app, ["train", "--algo", "qtable", "--steps", "10", "--config",
                                 str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "config file" in result.stderr and "UTF-8" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "order.json", b"\xef\xbb\xbf" + GOOD_TEXT.encode())
    assert ParentOrder.from_file(path).qty == 250000


def test_duplicate_key_in_an_order_is_refused_not_last_one_wins(tmp_path: Path) -> None:
    text = GOOD_TEXT.replace('"qty": 250000', '"qty": 1000, "qty": 5')
    path = write(tmp_path, "order.json", text)
    with pytest.raises(OrderValidationError) as info:
        ParentOrder.from_file(path)
    assert "'qty' more than once" in str(info.value)
    assert "'qty' more than once" in refused_by_cli(tmp_path, "--order", str(path))


def test_duplicate_key_nested_in_an_order_is_refused_with_its_path() -> None:
    text = GOOD_TEXT.replace('"child_max": 15000', '"child_max": 15000, "child_max": 10')
    with pytest.raises(OrderValidationError) as info:
        ParentOrder.from_json(text)
    assert "'constraints.child_max' more than once" in str(info.value)


def test_duplicate_key_in_a_market_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "market.json", '{"sigma": 0.5, "n_steps": 20, "sigma": 3.0}')
    assert "'sigma' more than once" in refused_by_cli(tmp_path, "--market", str(path))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_a_market_file_are_refused_by_name(tmp_path: Path, literal: str):
    path = write(tmp_path, "market.json", f'{{"signal": {{"kappa": 1.0, "sigma": {literal}}}}}')
    line = refused_by_cli(tmp_path, "--market", str(path))
    assert "'signal.sigma'" in line and literal in line


def test_a_number_beyond_float64_is_refused_by_name() -> None:
    with pytest.raises(OrderValidationError) as info:
        ParentOrder.from_json(GOOD_TEXT.replace("187.53", "1e400"))
    assert "'arrival_px' = 1e400" in str(info.value)


def test_an_integer_of_5000_digits_is_refused_in_one_short_line(tmp_path: Path) -> None:
    # before: json's int() met Python's 4300-digit limit and raised a bare ValueError
    path = write(tmp_path, "order.json", GOOD_TEXT.replace("250000", "9" * 5000))
    line = refused_by_cli(tmp_path, "--order", str(path))
    assert "'qty'" in line and "5000 digits" in line and len(line) < 300


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "market.json", '{"signal": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "nests deeper" in refused_by_cli(tmp_path, "--market", str(path))


@pytest.mark.parametrize("text", ["[]", '"sell"', "3", "null"])
def test_top_level_must_be_an_object(tmp_path: Path, text: str) -> None:
    for option in ("--order", "--market"):
        path = write(tmp_path, f"file{option}.json", text)
        assert "must be a JSON object" in refused_by_cli(tmp_path, option, str(path))


def test_a_lone_surrogate_is_not_text(tmp_path: Path) -> None:
    path = write(tmp_path, "order.json", GOOD_TEXT.replace("AAPL", "\\ud800"))
    line = refused_by_cli(tmp_path, "--order", str(path))
    assert "'symbol'" in line and "surrogate" in line


@pytest.mark.parametrize("symbol", ["AA\nPL", "AAPL\x1b[2J", "\x00"])
def test_identifiers_must_be_printable(symbol: str) -> None:
    with pytest.raises(OrderValidationError) as info:
        ParentOrder.from_dict({**GOOD_ORDER, "symbol": symbol})
    msg = str(info.value)
    assert "'symbol'" in msg and "printable" in msg and "\n" not in msg and "\x1b" not in msg


def test_a_key_holding_a_newline_still_gives_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "market.json", json.dumps({"sig\nma": 1}))
    assert "sig\\nma" in refused_by_cli(tmp_path, "--market", str(path))


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("alpha = 0.1\nalpha = 0.2\n", "not valid TOML"),  # duplicate key: tomllib's own check
        ("alpha = nan\n", "'alpha' = nan"),
        ("[q]\nepsilon = -inf\n", "'q.epsilon' = -inf"),
        ("alpha = \n", "not valid TOML"),
    ],
)
def test_bad_toml_config_is_refused_naming_the_file(tmp_path: Path, content: str, needle: str):
    from execrl.cli import _load_hyperparams

    path = write(tmp_path, "config.toml", content)
    with pytest.raises(ConfigError) as info:
        _load_hyperparams(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_duplicate_key_in_a_json_config_is_refused(tmp_path: Path) -> None:
    from execrl.cli import _load_hyperparams

    path = write(tmp_path, "config.json", '{"q_learning": {"alpha": 0.1, "alpha": 0.5}}')
    with pytest.raises(ConfigError) as info:
        _load_hyperparams(path)
    assert "'q_learning.alpha' more than once" in str(info.value)


# -- order bounds -----------------------------------------------------------------------------


@pytest.mark.parametrize("qty", [2**63, 2**63 - 1, 2**53, 10**12 + 1])
def test_qty_beyond_the_bound_is_refused_naming_the_bound(tmp_path: Path, qty: int) -> None:
    # before: 2**63 raised OverflowError in numpy; 2**63 - 1 ran and printed IS of 8e15 bps
    path = write(tmp_path, "order.json", json.dumps({**GOOD_ORDER, "qty": qty}))
    line = refused_by_cli(tmp_path, "--order", str(path))
    assert f"'qty' = {qty}" in line and "1000000000000" in line


@pytest.mark.parametrize("px", [1e300, 1e9 * (1 + 1e-15)])
def test_arrival_px_beyond_the_bound_is_refused(tmp_path: Path, px: float) -> None:
    # before: 1e300 ran into NaN and a traceback from the JSON writer
    path = write(tmp_path, "order.json", json.dumps({**GOOD_ORDER, "arrival_px": px}))
    line = refused_by_cli(tmp_path, "--order", str(path))
    assert f"'arrival_px' = {px!r}" in line and "1000000000" in line


@pytest.mark.parametrize(
    ("update", "needle"),
    [
        ({"start_ts": 1693564800000, "end_ts": 1693568400000}, "'start_ts' = 1693564800000"),
        ({"end_ts": None, "horizon_s": 1e-4}, "'horizon_s' = 0.0001"),
        ({"end_ts": None, "horizon_s": 1e10}, "'horizon_s' = 10000000000.0"),
        ({"end_ts": 1693564800 + 2e9}, "end_ts - start_ts = 2e+09 s"),
        ({"end_ts": 1693564800.0001}, "end_ts - start_ts"),
    ],
)
def test_times_beyond_the_bounds_are_refused(update: dict[str, Any], needle: str) -> None:
    data = {k: v for k, v in {**GOOD_ORDER, **update}.items() if v is not None}
    with pytest.raises(OrderValidationError) as info:
        ParentOrder.from_dict(data)
    assert needle in str(info.value)


def test_orders_at_the_bounds_are_accepted() -> None:
    order = ParentOrder.from_dict({**GOOD_ORDER, "qty": 10**12, "arrival_px": 1e9})
    assert order.qty == 10**12
    short = {k: v for k, v in GOOD_ORDER.items() if k != "end_ts"}
    assert ParentOrder.from_dict({**short, "horizon_s": 1e-3}).horizon == 1e-3
    assert ParentOrder.from_dict({**short, "horizon_s": 1e9}).horizon == 1e9


# -- the market file: as strict as the order --------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"n_steps": True}, "'n_steps' = True"),  # before: ran with one step
        ({"n_steps": 10.0}, "'n_steps' = 10.0"),
        ({"sigma": "1.2"}, "'sigma' = '1.2'"),  # before: accepted as 1.2
        ({"risk_aversion": False}, "'risk_aversion' = False"),
        ({"signal": {"kappa": "1", "sigma": 1.0}}, "'signal.kappa' = '1'"),
        ({"volume_noise": 6}, "'volume_noise' = 6"),
        ({"adv": 0.5}, "'adv' = 0.5"),
        ({"time_unit_s": 1e-6}, "'time_unit_s' = 1e-06"),
    ],
)
def test_market_file_is_strict(tmp_path: Path, overrides: dict[str, Any], needle: str) -> None:
    path = write(tmp_path, "market.json", json.dumps(overrides))
    line = refused_by_cli(tmp_path, "--market", str(path))
    assert "market config field" in line and needle in line


@pytest.mark.parametrize(("key", "decided_by"), [("horizon", "horizon_s"), ("s0", "arrival_px")])
def test_market_file_may_not_set_what_the_order_decides(
    tmp_path: Path, key: str, decided_by: str
) -> None:
    # before: silently overwritten by the order
    path = write(tmp_path, "market.json", json.dumps({key: 99}))
    line = refused_by_cli(tmp_path, "--market", str(path))
    assert f"'{key}' = 99" in line and "set by the order" in line and decided_by in line


def test_integers_are_valid_for_float_fields_and_presets_still_build(tmp_path: Path) -> None:
    assert ACMarketConfig.from_dict({"sigma": 1, "adv": 4000000}).sigma == 1.0
    assert SignalConfig(kappa=1, sigma=2).sigma == 2.0
    path = write(tmp_path, "market.json", json.dumps({"sigma": 1, "n_steps": 4}))
    results = evaluate_ok(tmp_path, "--market", str(path), policies="twap")
    assert results["market"]["sigma"] == 1.0 and results["market"]["N"] == 4


# -- order × market: numbers that would not stay finite ---------------------------------------


def _market_for(overrides: dict[str, Any], **order: Any) -> ACMarketConfig:
    market = ACMarketConfig.from_dict({**ACMarketConfig().model_dump(), **overrides})
    return market_for_order(market, DEFAULT_ORDER.model_copy(update=order))


@pytest.mark.parametrize(
    ("overrides", "order", "needle"),
    [
        ({"eta": 1e300}, {}, "market field 'eta' = 1e+300"),
        ({}, {"horizon_s": 1e-3}, "temporary impact eta/tau × qty"),
        ({"sigma": 1e20}, {}, "market field 'sigma' = 1e+20"),
        ({"epsilon": 1e300}, {}, "market field 'epsilon' = 1e+300"),
        ({"drift": -1e300}, {}, "market field 'drift' = -1e+300"),
        ({"eta": 1.0, "gamma": 3.0}, {"qty": 10**12}, "market field 'gamma' = 3"),
        ({"signal": {"kappa": 1e-300, "sigma": 1.0}}, {}, "market field 'signal'"),
        ({"risk_aversion": 1e300}, {}, "market field 'risk_aversion' = 1e+300"),
        ({"risk_aversion": 1e50}, {}, "market field 'risk_aversion' = 1e+50"),
        ({"sigma": 1e-300}, {}, "market field 'sigma' = 1e-300"),
        ({"adv": 1e15, "gamma": 0.0, "time_unit_s": 1e-3}, {"horizon_s": 1e9}, "field 'adv'"),
        ({"eta": 1.0, "gamma": 0.0}, {"arrival_px": 1e-6}, "arrival price 1e-06"),
    ],
)
def test_market_and_order_beyond_finite_numbers_are_refused_by_name(
    overrides: dict[str, Any], order: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _market_for(overrides, **order)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_market_that_breaks_the_numbers_is_refused_by_the_cli(tmp_path: Path) -> None:
    # before: sigma = 1e200 overflowed into NaN and a traceback from the JSON writer
    path = write(tmp_path, "market.json", json.dumps({"sigma": 1e200}))
    assert "market field 'sigma' = 1e+200" in refused_by_cli(tmp_path, "--market", str(path))


@pytest.mark.parametrize(
    ("order", "market", "policies"),
    [
        ({"qty": 10**12}, {}, None),
        ({"arrival_px": 1e9}, {}, None),
        ({"arrival_px": 1e-3}, {}, None),
        ({"end_ts": None, "horizon_s": 1e-3}, {}, None),
        ({"end_ts": None, "horizon_s": 1e9}, {"gamma": 0.0}, None),
        ({}, {"risk_aversion": 1e10}, None),
        ({}, {"risk_aversion": 1e3, "n_steps": 1000}, "ac"),  # κT ≈ 1360: sinh overflowed
        ({}, {"vol_multiplier": 1e6}, None),
        ({}, {"time_unit_s": 1e9, "adv": 1e15}, None),
        ({}, {"volume_noise": 5.0, "volume_u_shape": 0.999999}, None),
        ({}, {"sigma": 0.0, "eta": 1e-300, "gamma": 0.0}, None),
        # differences a few ulps wide: the histogram of paired differences still draws
        ({"qty": 10**11}, {"sigma": 1e-9}, None),
        # zero cost for every policy: improvement_pct over a zero baseline is null, not NaN
        ({}, {"sigma": 0.0, "eta": 1e-300, "gamma": 0.0, "epsilon": 0.0}, None),
        ({}, {"pre_arrival_steps": 10_000}, None),
        ({}, {}, "twap,ac:1e300"),  # before: OverflowError in math.sinh
    ],
)
def test_extreme_but_valid_values_run_to_finite_results(
    tmp_path: Path, order: dict[str, Any], market: dict[str, Any], policies: str | None
) -> None:
    data = {k: v for k, v in {**GOOD_ORDER, **order}.items() if v is not None}
    if "qty" in order:
        data["constraints"] = {}
    args = ["--order", str(write(tmp_path, "order.json", json.dumps(data)))]
    if market:
        args += ["--market", str(write(tmp_path, "market.json", json.dumps(market)))]
    results = evaluate_ok(tmp_path, *args, **({"policies": policies} if policies else {}))
    assert results["market"]["X"] == data["qty"]


def test_extreme_urgency_gives_the_limit_schedule() -> None:
    """For κT beyond sinh's range the AC schedule is the limit of the closed form: with
    κτ ≈ 45 each step keeps e^{−κτ} of the previous holdings, i.e. almost all goes first."""
    from execrl.sim.theory import ac_kappa, ac_trajectory

    market = _market_for({"risk_aversion": 1e15, "n_steps": 20})
    kappa = ac_kappa(market)
    assert kappa * market.horizon > 710  # math.sinh(κT) would overflow
    x = ac_trajectory(market, 1.0)
    assert np.isfinite(x).all() and x[0] == 1.0 and x[-1] == 0.0
    assert (np.diff(x) <= 0).all()
    np.testing.assert_allclose(x[1:5], np.exp(-kappa * market.tau * np.arange(1, 5)), rtol=1e-9)
