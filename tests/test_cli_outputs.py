"""What the command line does with the user's folders and options: nothing of theirs is lost,
an output folder is replaced whole or not at all, and every refusal is one line with exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from execrl import __version__
from execrl.cli import app
from execrl.domain import ConfigError
from execrl.domain.outputs import check_output_folder, clean_leftovers, staged_folder
from execrl.evaluate.stats import format_pvalue

runner = CliRunner()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _evaluate(out: Path, *args: str):
    return runner.invoke(app, ["evaluate", "--out", str(out), "--policies", "twap,ac",
                               "--orders", "40", *args])


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- a foreign folder is never replaced -------------------------------------------------------
def test_a_folder_of_other_files_survives_evaluate_byte_for_byte(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "results.json").write_text("{}")
    before = _snapshot(out)
    line = _one_error_line(_evaluate(out))
    assert "'notes.txt'" in line and "--force" in line and "not an execrl evaluation" in line
    assert _snapshot(out) == before


def test_force_replaces_a_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert _evaluate(out, "--force").exit_code == 0
    assert not (out / "notes.txt").exists() and (out / "results.json").exists()


@pytest.mark.parametrize("where", [".", ".."])
def test_the_current_folder_or_one_above_is_refused_even_with_force(tmp_path, where, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    monkeypatch.chdir(work)
    line = _one_error_line(_evaluate(Path(where), "--force"))
    assert "current folder" in line
    assert (work / "keep.txt").read_text() == "x"


def test_output_paths_that_cannot_be_written_are_refused_before_any_work(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "is a file" in _one_error_line(_evaluate(a_file))
    assert "which is a file" in _one_error_line(_evaluate(a_file / "sub" / "out"))
    # /proc refuses new folders even to root, for whom os.access always says yes
    assert "cannot be written" in _one_error_line(_evaluate(Path("/proc/execrl-out")))
    assert a_file.read_text() == "x"


def test_a_new_run_replaces_the_previous_output_whole(tmp_path):
    out = tmp_path / "out"
    assert _evaluate(out, "--log-decisions").exit_code == 0
    assert (out / "decisions.parquet").exists()
    assert _evaluate(out).exit_code == 0
    # a stale decision log would feed `train --algo cql --data` with another run's decisions
    assert not (out / "decisions.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left


def test_a_failed_run_leaves_the_previous_output_byte_for_byte(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _evaluate(out).exit_code == 0
    before = _snapshot(out)

    def broken_report(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("execrl.evaluate.results.write_report", broken_report)
    result = _evaluate(out, "--seed", "99")
    assert result.exit_code != 0
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_run_leaves_no_folder_it_created(tmp_path, monkeypatch):
    monkeypatch.setattr("execrl.evaluate.results.write_report",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    assert _evaluate(tmp_path / "a" / "b" / "out").exit_code != 0
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_keeps_the_previous_output_and_says_so(tmp_path):
    out = tmp_path / "out"
    assert _evaluate(out).exit_code == 0
    before = _snapshot(out)
    # long enough to be interrupted while it simulates (some 10 s alone on one core)
    proc = subprocess.Popen(
        [sys.executable, "-m", "execrl", "evaluate", "--out", str(out), "--orders", "400000",
         "--policies", "twap,vwap,pov,ac,immediate"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    deadline = time.monotonic() + 120
    while not any(".execrl-staging" in p.name for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert f"interrupted: the previous output in {str(out)!r} was kept" in stderr
    assert "Traceback" not in stderr
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_leftovers_of_killed_runs_are_cleaned_and_a_retired_output_put_back(tmp_path):
    out = tmp_path / "out"
    dead = _dead_pid()
    staging = tmp_path / f".out.execrl-staging-{dead}-abcd"
    staging.mkdir()
    (staging / "results.json").write_text("half")
    retired = tmp_path / f".out.execrl-retired-{dead}-abcd"
    retired.mkdir()
    (retired / "results.json").write_text("previous")
    mine = tmp_path / f".out.execrl-staging-{os.getpid()}-live"  # a live run's: left alone
    mine.mkdir()
    clean_leftovers(out)
    assert not staging.exists() and mine.exists()
    assert (out / "results.json").read_text() == "previous"  # killed between the renames


def test_staged_folder_swaps_in_only_at_the_end(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with staged_folder(out) as stage:
        (stage / "new.txt").write_text("new")
        assert (out / "old.txt").exists() and not (out / "new.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    with pytest.raises(KeyboardInterrupt), staged_folder(out) as stage:
        (stage / "newer.txt").write_text("x")
        raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupt_swallowed_inside_the_block_still_keeps_the_previous_output(tmp_path):
    """A Ctrl-C that lands while C code calls back into Python (numba compiling, in a fresh
    checkout) is printed as "Exception ignored" and lost: the run went on and swapped its
    output in, exit 0. The handler counts it, and the swap is refused."""
    from execrl.domain.outputs import interrupt

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_folder(out) as stage:
        (stage / "new.txt").write_text("new")
        try:  # what a C callback does with the exception: prints and drops it
            interrupt(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupt_lost_in_a_callback_is_raised_again_in_the_main_thread(capfd, monkeypatch):
    """A Ctrl-C that lands in a weakref callback (importlib's module-lock cleanup, in CI) is
    printed as "Exception ignored ... Traceback" and dropped by Python. The command line's
    hook raises it again in the main thread, and prints nothing; any other exception lost in a
    callback still reaches the hook that was installed before."""
    import weakref

    from execrl.domain import outputs

    seen: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))
    monkeypatch.setattr(outputs, "_unraisable_before", None)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    class Thing:
        pass

    def lost(exc: BaseException, wait_s: float = 0.0) -> None:
        thing = Thing()
        ref = weakref.ref(thing, lambda _: (_ for _ in ()).throw(exc))
        del thing  # the callback raises; Python hands the exception to sys.unraisablehook
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:  # bytecodes: where a pending signal is handled
            pass
        assert ref() is None

    try:
        outputs.install_interrupt_handlers()
        outputs.install_interrupt_handlers()  # twice: still one hook, not a chain
        assert sys.unraisablehook is outputs._redeliver
        lost(ValueError("not an interrupt"))
        assert seen == [ValueError]
        with pytest.raises(KeyboardInterrupt):
            lost(KeyboardInterrupt(), wait_s=5.0)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert seen == [ValueError]
    assert "Traceback" not in capfd.readouterr().err


def test_check_output_folder_names_the_flag_and_the_foreign_file(tmp_path):
    (tmp_path / "x.csv").write_text("1")
    with pytest.raises(ConfigError, match=r"--out .* holds files that are not ours .*'x.csv'"):
        check_output_folder(tmp_path, "--out", lambda e: False, "ours")
    check_output_folder(tmp_path, "--out", lambda e: e.name == "x.csv", "ours")  # owned: fine


# -- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seed", "-1"], "--seed = '-1'"),
        (["--seed", str(2**32)], f"--seed = '{2**32}'"),
        (["--orders", "0"], "--orders = '0'"),
        (["--orders", "many"], "--orders = 'many'"),
        (["--compare-to", "vwap"], "--compare-to 'vwap' is not among --policies"),
        (["--bogus"], "--bogus"),
    ],
)
def test_bad_options_are_one_line_naming_the_option_and_value(tmp_path, args, needle):
    out = tmp_path / "out"
    line = _one_error_line(_evaluate(out, *args))
    assert needle in line
    assert not out.exists()


def test_a_run_that_cannot_fit_in_memory_is_refused_up_front(tmp_path):
    started = time.perf_counter()
    line = _one_error_line(_evaluate(tmp_path / "out", "--orders", "1000000000"))
    assert "GiB" in line and "--orders" in line
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "out").exists()


def test_version_and_short_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"execrl {__version__}"
    assert runner.invoke(app, ["-h"]).exit_code == 0
    text = runner.invoke(app, ["evaluate", "-h"]).output
    assert "--log-decisions " in text and "<bool>" not in text


def test_train_help_lists_every_reward_action_and_observation_set():
    from execrl.env.rewards import REWARDS
    from execrl.env.spaces import ACTION_SETS, OBSERVATION_SETS

    text = " ".join(runner.invoke(app, ["train", "--help"]).output.split())
    for name in (*REWARDS, *ACTION_SETS, *OBSERVATION_SETS):
        assert name in text, name


# -- what the results say ------------------------------------------------------------------------
def test_too_few_orders_give_no_confidence_interval(tmp_path):
    result = _evaluate(tmp_path / "out", "--orders", "3")
    assert result.exit_code == 0
    assert "too few for paired statistics" in result.output
    (cmp,) = json.loads((tmp_path / "out" / "results.json").read_text())["comparisons"]
    assert cmp["ci95"] is None and cmp["t_pvalue"] is None
    assert "n/a (too few orders)" in result.output


def test_results_record_version_command_and_checkpoints(tmp_path):
    out = tmp_path / "demo"
    assert runner.invoke(app, ["demo", "--out", str(out), "--orders", "20"]).exit_code == 0
    prov = json.loads((out / "results.json").read_text())["provenance"]
    assert prov["execrl_version"] == __version__
    assert prov["command"] == ["execrl", "demo", "--out", str(out), "--orders", "20"]
    agent = prov["checkpoints"]["qtable"]
    assert agent["path"] == str(out / "agent-qtable")  # where it is now, not the staging name
    assert agent["policy_hash"] == (out / "agent-qtable" / "policy_hash").read_text().strip()


def test_an_order_beyond_the_market_liquidity_is_flagged(tmp_path):
    order = tmp_path / "order.json"
    order.write_text(json.dumps({"order_id": "BIG", "symbol": "X", "side": "sell",
                                 "qty": 500_000_000, "arrival_px": 50.0, "start_ts": 0,
                                 "horizon_s": 117_000}))
    result = _evaluate(tmp_path / "out", "--order", str(order))
    assert "warning: the order's 500,000,000 shares are 20.0x the market volume" in result.output
    assert "at or below zero" in result.output


def test_tiny_p_values_are_not_printed_as_zero():
    assert format_pvalue(0.0) == "< 1e-300"
    assert format_pvalue(1e-301) == "< 1e-300"
    assert format_pvalue(2.5e-7) == "2.5e-07"
    assert format_pvalue(0.0312) == "0.031"
    assert format_pvalue(None) == "n/a"


def test_the_table_never_cuts_a_number(tmp_path):
    policies = "twap,pov:0.0123456,ac:0.00000123,vwap,immediate"
    result = runner.invoke(app, ["evaluate", "--out", str(tmp_path / "out"), "--orders", "40",
                                 "--policies", policies])
    assert result.exit_code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "…" not in result.output
    for name, p in results["policies"].items():
        row = next(line for line in result.output.splitlines() if line.strip().startswith(name))
        assert f"{p['is_bps']['mean']:.2f}" in row and f"{p['objective_bps']:.2f}" in row


def test_library_warnings_do_not_reach_the_user(tmp_path, monkeypatch):
    import warnings

    from execrl.evaluate import backtest

    real = backtest.run_policies

    def noisy(*args, **kwargs):
        warnings.warn("Precision loss occurred in moment calculation", RuntimeWarning,
                      stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(backtest, "run_policies", noisy)
    result = _evaluate(tmp_path / "out")
    assert result.exit_code == 0 and "Precision loss" not in result.output


# -- found in review -----------------------------------------------------------------------------
def test_out_may_not_hold_what_the_run_reads(tmp_path):
    """The swap replaces --out whole: a checkpoint or order file inside it would be deleted."""
    out = tmp_path / "o2"
    trained = runner.invoke(app, ["train", "--algo", "qtable", "--steps", "2000",
                                  "--out", str(out / "agent-qtable")])
    assert trained.exit_code == 0, trained.output
    before = _snapshot(out)
    spec = f"twap,mine:{out / 'agent-qtable'}"
    assert "not an execrl evaluation" in _one_error_line(_evaluate(out, "--policies", spec))
    line = _one_error_line(_evaluate(out, "--policies", spec, "--force"))
    assert "which this run reads" in line  # even --force does not delete the run's input
    assert _snapshot(out) == before
    order_file = tmp_path / "keep" / "order.json"
    order_file.parent.mkdir()
    order_file.write_text(json.dumps({"order_id": "A", "symbol": "X", "side": "buy",
                                      "qty": 1000, "start_ts": 0, "horizon_s": 3600}))
    line = _one_error_line(_evaluate(order_file.parent, "--order", str(order_file), "--force"))
    assert "which this run reads" in line and order_file.exists()


@pytest.mark.parametrize("model", [[], {"a": 1}, 3, None])
def test_a_market_model_of_the_wrong_type_is_one_line(tmp_path, model):
    market = tmp_path / "m.json"
    market.write_text(json.dumps({"model": model}))
    line = _one_error_line(_evaluate(tmp_path / "out", "--market", str(market)))
    assert "field 'model'" in line


def test_an_unexpected_error_is_not_masked_by_another(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("execrl.evaluate.results.write_report", broken)
    result = _evaluate(tmp_path / "out")
    assert isinstance(result.exception, RuntimeError)


def test_ctrl_c_during_the_swap_comes_after_the_new_output(tmp_path, monkeypatch):
    from execrl.domain import outputs

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    real_replace = os.replace

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        if "execrl-staging" in str(src):
            os.kill(os.getpid(), signal.SIGINT)  # held until the swap is done

    monkeypatch.setattr(outputs.os, "replace", replace_then_interrupt)
    with pytest.raises(outputs.InterruptedAfterSwap), staged_folder(out) as stage:
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
