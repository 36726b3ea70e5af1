"""``execrl calibrate`` end to end on a synthetic LOBSTER day, the estimator's round trip through
the simulator, and the calibrated configuration's rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from execrl.calibrate.config import market_config
from execrl.calibrate.hawkes import HawkesFit
from execrl.calibrate.queue_reactive import average_event_size, estimate_queue_reactive
from execrl.calibrate.run import CALIBRATION_OUTPUTS, calibrate
from execrl.calibrate.simulate import lobster_day_of_trace, trace_book
from execrl.cli import app
from execrl.data.lobster import write_lobster
from execrl.data.synthetic import synthetic_lobster
from execrl.sim.lob_config import LOBMarketConfig
from execrl.sim.spec import parse_market


@pytest.fixture(scope="module")
def synthetic_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    day = synthetic_lobster(n_messages=4000, levels=5, seed=0)
    folder = tmp_path_factory.mktemp("lobster")
    return write_lobster(folder / "SYNTH.zip", day.messages, day.book, symbol="SYNTH",
                         date="2012-06-21", start_s=day.start_s, end_s=day.end_s)


def test_estimator_round_trip_through_the_simulator() -> None:
    """Simulate the calm default book (θ = 0: the frame is deterministic), turn the trace into
    a LOBSTER day and estimate: every well-seen cell is within a few Poisson standard errors of
    the table it was simulated from, so the estimator and the simulator read the model alike."""
    cfg = LOBMarketConfig(theta=0.0, s0=100.0)
    tr = trace_book(cfg, 4000.0, seed=5)
    day = lobster_day_of_trace(tr)
    fit = estimate_queue_reactive(day, ticks_per_level=1, n_levels=cfg.n_levels,
                                  n_buckets=cfg.n_buckets, aes=cfg.aes, min_time_s=0.0)
    limit, cancel, market, _ = cfg.tables()
    checked = 0
    for est, truth, spent in ((fit.limit_rate, limit, fit.time_level),
                              (fit.cancel_rate, cancel, fit.time_level),
                              (fit.market_rate, market, fit.time_best)):
        ok = (spent >= 100.0) & (truth > 0)
        z = (est[ok] - truth[ok]) / np.sqrt(truth[ok] / spent[ok])
        assert np.abs(z).max() < 4.5, np.abs(z).max()
        assert abs(z.mean()) < 0.5
        checked += int(ok.sum())
    assert checked >= 40
    # the data's frame is the simulator's (up to the rare move it makes on its own)
    assert fit.summary["clipped_share"] < 1e-3


def test_average_event_size_snaps_to_the_round_lot() -> None:
    assert average_event_size(np.array([99, 100, 60, 100, 200])) == 100
    assert average_event_size(np.array([95, 91, 100])) == 100  # median 95: within 10 %
    assert average_event_size(np.array([60, 62, 70])) == 62  # no lot near: the median
    assert average_event_size(np.array([300, 310, 290])) == 300
    assert average_event_size(np.array([], dtype=np.int64)) == 100


def test_market_config_with_hawkes_keeps_the_mean_market_rate() -> None:
    day = synthetic_lobster(n_messages=3000, levels=5, seed=1)
    fit = estimate_queue_reactive(day, ticks_per_level=1, min_time_s=5.0)
    plain = market_config(fit, s0=50.0, theta=0.3)
    assert "s0" not in plain  # the order's arrival price sets it
    assert plain["resilience"] == 0.0 and plain["theta"] == 0.3
    hawkes = HawkesFit(mu=(0.1, 0.1), alpha_self=0.3, alpha_cross=0.1, beta=1.0, loglik=0.0,
                       stderr={}, n_events=(10, 10), span_s=100.0, poisson_loglik=0.0,
                       ks_hawkes=0.0, ks_poisson=0.0)
    with_h = market_config(fit, s0=50.0, theta=0.3, hawkes=hawkes, hawkes_cap=2.0)
    # a stationary Hawkes process runs at baseline / (1 - n): the table is the baseline
    np.testing.assert_allclose(np.asarray(with_h["market_rate"]),
                               np.asarray(plain["market_rate"]) * 0.6, atol=1e-8)
    assert with_h["hawkes"]["max_rate"] == 2.0
    cfg = parse_market({**with_h, "s0": 50.0})
    assert isinstance(cfg, LOBMarketConfig) and cfg.hawkes is not None
    assert cfg.limit_size.mean == pytest.approx(
        np.concatenate([fit.limit_sizes, fit.cancel_sizes]).mean(), rel=0.02)


def test_calibrate_writes_a_market_evaluate_reads_and_both_halves(synthetic_zip: Path,
                                                                  tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    steps: list[str] = []
    result = calibrate(synthetic_zip, stage, ["execrl", "calibrate"], ticks_per_level=1,
                       seed=3, impact_books=64, impact_exec_s=60.0, hawkes_seconds=60.0,
                       round_trip_s=600.0, on_step=steps.append)
    assert steps[0] == "reading the LOBSTER files" and len(steps) >= 9
    assert {p.name for p in stage.iterdir()} == CALIBRATION_OUTPUTS
    market = json.loads((stage / "market.json").read_text())
    assert isinstance(parse_market({**market, "s0": 50.0}), LOBMarketConfig)
    saved = json.loads((stage / "calibration.json").read_text())
    assert saved["aggregation"]["ticks_per_level"] == 1
    assert saved["market"] == market
    # every comparison row has the real number and the simulated one (the 4-minute file has
    # no 5-minute returns)
    for label, real, sim in saved["comparison"]:
        if "5 min" not in label:
            assert real is not None and sim is not None, label
    imp = result["impact"]
    assert imp["q"] and len(imp["impact_bps"]) == 7
    # buying pushes the price up: the largest metaorder's paired impact is clearly positive
    assert imp["impact_bps"][-1] > 3 * imp["impact_bps_se"][-1] > 0
    # and pairing over common random numbers makes it far more precise than unpaired
    assert imp["impact_bps_se"][-1] < imp["unpaired_se_bps"][-1]
    assert result["round_trip"]["limit_rate"]["cells"] > 0
    assert result["theta_fit"] and result["market"]["theta"] in (0.0, 0.5, 1.0)
    text = (stage / "report.md").read_text()
    assert "How the queues are aggregated" in text and "market.json" in text
    assert "The simulated half is missing" not in text


def test_cli_calibrate_no_simulate_and_refusals(synthetic_zip: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cal"
    res = runner.invoke(app, ["calibrate", str(synthetic_zip), "--out", str(out),
                              "--ticks-per-level", "1", "--no-simulate"])
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} == CALIBRATION_OUTPUTS
    report = (out / "report.md").read_text()
    assert "The simulated half is missing" in report
    # a folder holding something else is refused, in one line, and left alone
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    res = runner.invoke(app, ["calibrate", str(synthetic_zip), "--out", str(foreign),
                              "--no-simulate"])
    assert res.exit_code == 2
    assert "error: --out" in res.output and "notes.txt" in res.output
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # a file that is not a LOBSTER zip: one line naming it, nothing written
    bad = tmp_path / "bad.zip"
    bad.write_text("not a zip")
    target = tmp_path / "never"
    res = runner.invoke(app, ["calibrate", str(bad), "--out", str(target), "--no-simulate"])
    assert res.exit_code == 2
    assert res.output.count("error:") == 1 and "bad.zip" in res.output
    assert "Traceback" not in res.output
    assert not target.exists()
    # the output folder may not hold the input
    inside = tmp_path / "holder"
    inside.mkdir()
    copy = inside / synthetic_zip.name
    copy.write_bytes(synthetic_zip.read_bytes())
    res = runner.invoke(app, ["calibrate", str(copy), "--out", str(inside), "--force",
                              "--no-simulate"])
    assert res.exit_code == 2 and "which this run reads" in res.output
    assert copy.exists()
    # an option out of range is the parser's one line
    res = runner.invoke(app, ["calibrate", str(synthetic_zip), "--ticks-per-level", "0"])
    assert res.exit_code == 2 and "--ticks-per-level" in res.output


def test_calibrated_hawkes_rate_stays_finite_on_synthetic_days() -> None:
    day = synthetic_lobster(n_messages=2000, levels=5, seed=2)
    fit = estimate_queue_reactive(day, ticks_per_level=1, min_time_s=5.0)
    cfg = market_config(fit, s0=50.0, theta=0.5)
    assert all(math.isfinite(v) for row in cfg["limit_rate"] for v in row)
