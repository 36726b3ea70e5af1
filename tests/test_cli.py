"""The command line as a user meets it: files written, schema, and one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from execrl.cli import app

runner = CliRunner()

GOOD_ORDER = {
    "order_id": "ABC-123", "symbol": "AAPL", "side": "buy", "qty": 250000, "arrival_px": 187.53,
    "start_ts": 1693564800, "end_ts": 1693568400,
    "constraints": {"participation": 0.1, "price_band_bps": 5, "child_max": 15000},
}


def _evaluate(tmp_path: Path, *args: str):
    return runner.invoke(app, ["evaluate", "--out", str(tmp_path / "out"), *args])


def test_evaluate_writes_results_episodes_and_report(tmp_path):
    result = _evaluate(tmp_path, "--policies", "twap,vwap,pov,ac,immediate", "--orders", "300",
                       "--seed", "11")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"env", "orders", "seed", "side", "policies", "comparisons", "theory",
                            "market"}
    assert results["orders"] == 300 and results["seed"] == 11 and results["side"] == "sell"
    assert list(results["policies"]) == ["twap", "vwap", "pov", "ac", "immediate"]
    for stats in results["policies"].values():
        assert set(stats["is_bps"]) == {"mean", "std", "p50", "p95", "p99", "cvar95"}
        assert stats["fill_rate"] == 1.0
    assert {c["policy"] for c in results["comparisons"]} == {"vwap", "pov", "ac", "immediate"}
    for c in results["comparisons"]:
        assert c["baseline"] == "twap" and c["ci95"][0] <= c["diff_bps_mean"] <= c["ci95"][1]
    market = results["market"]
    assert market["model"] == "almgren_chriss" and market["lambda"] > 0
    episodes = pd.read_parquet(out / "episodes.parquet")
    assert len(episodes) == 5 * 300
    # the JSON summary is the parquet rows summarised: recompute one number from the rows
    twap = episodes[episodes.policy == "twap"].is_bps
    assert math.isclose(twap.mean(), results["policies"]["twap"]["is_bps"]["mean"], rel_tol=1e-12)
    for name in ("report.md", "is_boxplot.png", "schedules.png", "paired_diff.png"):
        assert (out / name).stat().st_size > 0


def test_evaluate_no_plots_writes_everything_but_the_plots(tmp_path):
    result = _evaluate(tmp_path, "--policies", "twap,ac", "--orders", "50", "--no-plots")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["episodes.parquet", "report.md",
                                                      "results.json"]
    assert "and plots" not in result.output
    assert json.loads((out / "results.json").read_text())["comparisons"][0]["policy"] == "ac"


def test_evaluate_with_an_order_file_uses_its_side_size_and_price(tmp_path):
    order_file = tmp_path / "order.json"
    order_file.write_text(json.dumps(GOOD_ORDER))
    result = _evaluate(tmp_path, "--order", str(order_file), "--orders", "50",
                       "--policies", "twap,ac")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["side"] == "buy"
    assert results["market"]["X"] == 250000 and results["market"]["S0"] == 187.53
    assert results["market"]["T"] == pytest.approx(3600 / 23400)  # one hour of a 6.5 h day


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("qty", -5, "'qty' = -5"),
        ("side", "hold", "'side' = 'hold'"),
        ("end_ts", 1693564000, "'end_ts' = 1693564000"),
        ("arrival_px", "NaN", "arrival_px"),
    ],
)
def test_bad_order_file_is_refused_in_one_line_naming_the_field(tmp_path, field, value, needle):
    order_file = tmp_path / "order.json"
    text = json.dumps({**GOOD_ORDER, field: value})
    if value == "NaN":
        text = text.replace('"NaN"', "NaN")
    order_file.write_text(text)
    result = _evaluate(tmp_path, "--order", str(order_file))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0] and needle in lines[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing ran, nothing half-written


def test_missing_field_and_missing_file(tmp_path):
    order_file = tmp_path / "order.json"
    order_file.write_text(json.dumps({k: v for k, v in GOOD_ORDER.items() if k != "symbol"}))
    result = _evaluate(tmp_path, "--order", str(order_file))
    assert result.exit_code == 2 and "'symbol' is missing" in result.output
    result = _evaluate(tmp_path, "--order", str(tmp_path / "nope.json"))
    assert result.exit_code == 2 and "nope.json" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--policies", "twap,magic"], "'magic'"),
        (["--policies", "pov:abc"], "'abc'"),
        (["--env", "lob:windy"], "'lob:windy'"),
        (["--policies", "signal_aware"], "signal"),
    ],
)
def test_bad_options_are_refused_in_one_line(tmp_path, args, needle):
    result = _evaluate(tmp_path, *args)
    assert result.exit_code == 2
    assert needle in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [({"sigma": -1}, "'sigma' = -1"), ({"n_steps": 0}, "'n_steps' = 0"),
     ({"volatility": 2}, "'volatility'"), ({"eta": 1e-9}, "eta - gamma*tau/2")],
)
def test_bad_market_file_names_the_field(tmp_path, overrides, needle):
    market_file = tmp_path / "market.json"
    market_file.write_text(json.dumps(overrides))
    result = _evaluate(tmp_path, "--market", str(market_file))
    assert result.exit_code == 2 and needle in result.output, result.output


def test_signal_env_reports_the_dp_gain(tmp_path):
    result = _evaluate(tmp_path, "--env", "ac-signal", "--policies", "twap,signal_aware",
                       "--orders", "2000", "--seed", "3")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    gain = results["theory"]["signal_aware"]["expected_gain_bps"]
    (cmp,) = results["comparisons"]
    # λ = 0 in this preset, so the signal-blind optimum is TWAP and the paired difference
    # estimates minus the gain; its CI must be negative (the signal pays)
    assert cmp["policy"] == "signal_aware" and cmp["ci95"][1] < 0 < gain


def test_help_explains_every_command():
    for cmd in ([], ["evaluate"], ["demo"]):
        result = runner.invoke(app, [*cmd, "--help"])
        assert result.exit_code == 0
    assert "--policies" in runner.invoke(app, ["evaluate", "--help"]).output


def test_demo_trains_an_agent_and_reports_it_beside_the_baselines(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--orders", "300"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert list(results["policies"]) == ["twap", "vwap", "pov", "ac", "immediate", "qtable"]
    assert (tmp_path / "demo" / "agent-qtable" / "policy_hash").exists()
    # the agent learned the risk-averse schedule: far closer to AC's objective than TWAP's
    objective = {p: v["objective_proxy_bps"] for p, v in results["policies"].items()}
    assert abs(objective["qtable"] - objective["ac"]) < 0.1 * (objective["twap"] - objective["ac"])


def test_evaluate_on_the_order_book_runs_its_own_baselines_and_default_order(tmp_path):
    out = tmp_path / "ev"
    result = runner.invoke(app, ["evaluate", "--env", "lob:stressed", "--orders", "12",
                                 "--out", str(out), "--no-plots"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["env"] == "lob:stressed"
    assert list(results["policies"]) == ["twap", "passive_twap", "vwap", "pov", "ac",
                                         "immediate", "submit_and_leave"]
    assert results["order"]["qty"] == 5_000 and results["order"]["horizon_s"] == 300.0
    passive = results["policies"]["passive_twap"]["behaviour"]["share_by_kind"]["passive"]
    assert passive > 0.3


def test_evaluate_imports_nothing_it_does_not_use(tmp_path):
    """A real ``execrl evaluate --no-plots`` process: the commands of other modules are
    registered lazily, so neither SQLAlchemy, the service, the executor's command line,
    matplotlib nor (above 50 orders) scipy.stats or scipy.special is imported (each costs a
    user ~0.1-0.8 s per run; numba itself imports scipy.linalg's BLAS); the files are
    written."""
    import subprocess
    import sys

    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('IMPORTED', sorted(m for m in sys.modules if m.split('.')"
        "[0] in ('sqlalchemy', 'redis', 'torch', 'fastapi', 'matplotlib') or m.startswith("
        "('execrl.service', 'execrl.executor_cli', 'execrl.data.cli', 'execrl.calibrate',"
        " 'scipy.stats', 'scipy.special')))))\n"
        "sys.argv = ['execrl', *sys.argv[1:]]\n"
        "from execrl.cli import main\n"
        "main()\n"
    )
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", probe, "evaluate", "--policies", "twap,ac",
                           "--orders", "60", "--out", str(out), "--no-plots"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "IMPORTED []" in done.stdout, done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["episodes.parquet", "report.md",
                                                      "results.json"]
