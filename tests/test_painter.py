"""Tests for execrl.evaluate.painter: plots drawn in a forked child are the same files as
drawn here, the child's error is raised here (and no report is written), and a child still
drawing when the block ends is ended."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from execrl.evaluate.painter import ForkedPainter, Painter, painter
from execrl.evaluate.report import (
    BOXPLOT_PNG,
    PAIRED_DIFF_PNG,
    REPORT_MD,
    SCHEDULES_PNG,
    draw_plots,
    draw_run_plots,
    write_report,
)
from test_report import _synthetic

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the forked painter is used on Linux only")
PLOTS = (BOXPLOT_PNG, SCHEDULES_PNG, PAIRED_DIFF_PNG)


def test_forked_plots_are_the_plots_drawn_here(tmp_path: Path) -> None:
    """Byte for byte: the same drawing functions on the same data, in another process; the
    run plots sent early (``draw_run_plots``) are not drawn twice."""
    results, episodes, schedules = _synthetic()
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    write_report(here, results, episodes, schedules, painter=Painter())
    forked = ForkedPainter()
    try:
        draw_run_plots(forked, there, episodes, schedules, list(results["policies"]))
        assert forked.sent == {"boxplot", "schedules"}
        write_report(there, results, episodes, schedules, painter=forked)
    finally:
        forked.close()
    assert forked.sent == {"boxplot", "schedules", "paired"}
    for name in (*PLOTS, REPORT_MD):
        assert (there / name).read_bytes() == (here / name).read_bytes(), name


def test_an_error_in_the_child_is_raised_here_and_no_report_is_written(tmp_path: Path) -> None:
    """A plot that fails in the child raises its own exception from ``wait`` (the report,
    written after every plot, is not), and the child has ended."""
    results, episodes, schedules = _synthetic()
    schedules["ac"] = np.zeros((0, 5))  # plot_schedules refuses an empty example set
    with painter(True) as drawer:
        assert isinstance(drawer, ForkedPainter)
        with pytest.raises(ValueError, match=r"schedules\['ac'\] must have shape"):
            write_report(tmp_path, results, episodes, schedules, painter=drawer)
        assert not drawer._proc.is_alive()
    assert not (tmp_path / REPORT_MD).exists()


def test_a_child_still_drawing_is_ended_with_the_block(tmp_path: Path) -> None:
    """An error (or Ctrl-C) in the parent while the child draws: leaving ``painter``'s block
    ends the child before the caller's staging folder is removed."""
    results, episodes, schedules = _synthetic()
    with pytest.raises(KeyboardInterrupt), painter(True) as drawer:
        draw_run_plots(drawer, tmp_path, episodes, schedules, list(results["policies"]))
        proc = drawer._proc
        raise KeyboardInterrupt
    assert not proc.is_alive()
    assert proc.exitcode is not None


def test_the_child_ends_when_the_parent_is_killed(tmp_path: Path) -> None:
    """A parent that ends without a word (SIGKILL, ``os._exit``) leaves no child behind:
    the child reads the end of its pipe and ends."""
    import os
    import subprocess

    probe = ("import os, sys\n"
             "from execrl.evaluate.painter import ForkedPainter\n"
             "p = ForkedPainter()\n"
             "print(p._proc.pid, flush=True)\n"
             "os._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":  # ended, not yet reaped by whoever adopted it
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        raise AssertionError(f"the plotting child {pid} outlived its parent")


def test_no_plots_no_painter() -> None:
    with painter(False) as drawer:
        assert drawer is None


def test_write_outputs_sends_every_plot_before_it_writes_the_files(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """With a forked painter the paired differences are asked for before episodes.parquet
    and results.json are written (the child draws while they are), and the episodes
    table is the caller's (``start_plots``'), sent to the child once."""
    import pandas as pd

    from execrl.evaluate import results as results_module

    events: list[str] = []

    class Recording(ForkedPainter):
        def __init__(self) -> None:  # no child: record what would be sent
            Painter.__init__(self)
            self.frames: list[int] = []

        def _draw(self, name, path, args) -> None:
            self.frames += [id(a) for a in args if isinstance(a, pd.DataFrame)]
            events.append(name)

        def wait(self) -> None:
            events.append("wait")

        def close(self) -> None:
            pass

    results, episodes, schedules = _synthetic()
    monkeypatch.setattr(results_module, "example_schedules", lambda runs: schedules)
    real = pd.DataFrame.to_parquet

    def to_parquet(frame, *args, **kwargs):
        events.append("parquet")
        return real(frame, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)
    drawer = Recording()
    results_module.write_outputs(tmp_path, results, [], painter=drawer, episodes=episodes)
    assert events == ["boxplot", "schedules", "paired", "parquet", "wait"]
    assert set(drawer.frames) == {id(episodes)}
    assert (tmp_path / REPORT_MD).is_file()
    assert pd.read_parquet(tmp_path / "episodes.parquet").equals(episodes)


def _helper_pid(drawer: ForkedPainter, timeout: float = 60.0) -> int:
    """The pid of the plotting child's helper (its only child), once forked."""
    deadline = time.monotonic() + timeout
    path = Path(f"/proc/{drawer._proc.pid}/task/{drawer._proc.pid}/children")
    while time.monotonic() < deadline:
        pids = path.read_text().split() if path.exists() else []
        if pids:
            return int(pids[0])
        time.sleep(0.02)
    raise AssertionError("the plotting child forked no helper")


def _ended(pid: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def test_the_paired_differences_are_drawn_beside_the_schedules(tmp_path: Path,
                                                               monkeypatch) -> None:
    """The helper (another process than the child) draws the paired differences while the
    child still draws the schedules, and the files are those drawn here."""
    import os

    from execrl.evaluate import report

    results, episodes, schedules = _synthetic()
    here = tmp_path / "here"
    here.mkdir()
    write_report(here, results, episodes, schedules, painter=Painter())
    log = tmp_path / "log"
    log.mkdir()

    def logged(name, real, pause):
        def draw(path, *args):
            (log / f"{name}.start").write_text(f"{os.getpid()} {time.monotonic()}")
            time.sleep(pause)
            real(path, *args)
            (log / f"{name}.end").write_text(f"{os.getpid()} {time.monotonic()}")
        return draw

    monkeypatch.setattr(report, "plot_schedules", logged("schedules", report.plot_schedules, 2))
    monkeypatch.setattr(report, "plot_paired_diffs",
                        logged("paired", report.plot_paired_diffs, 0))
    there = tmp_path / "there"
    there.mkdir()
    with painter(True) as drawer:
        write_report(there, results, episodes, schedules, painter=drawer)
    (s_pid, _), (p_pid, p_start) = [
        (int(a), float(b)) for a, b in (
            (log / f"{name}.start").read_text().split() for name in ("schedules", "paired"))]
    s_end = float((log / "schedules.end").read_text().split()[1])
    assert s_pid == drawer._proc.pid and p_pid not in (s_pid, os.getpid())
    assert p_start < s_end  # not after them: beside them
    for name in (*PLOTS, REPORT_MD):
        assert (there / name).read_bytes() == (here / name).read_bytes(), name


def test_an_error_in_the_helper_is_raised_here(tmp_path: Path, monkeypatch) -> None:
    """The paired plot failing in the helper is raised from ``wait``; no report; the child
    and its helper have ended."""
    from execrl.evaluate import report

    def broken(path, *args):
        raise ValueError("paired plot refused")

    monkeypatch.setattr(report, "plot_paired_diffs", broken)
    results, episodes, schedules = _synthetic()
    with painter(True) as drawer:
        helper = _helper_pid(drawer)
        with pytest.raises(ValueError, match="paired plot refused"):
            write_report(tmp_path, results, episodes, schedules, painter=drawer)
        assert not drawer._proc.is_alive()
    assert _ended(helper)
    assert not (tmp_path / REPORT_MD).exists()


@pytest.mark.parametrize("how", ["close", "kill_child"])
def test_the_helper_ends_with_the_child(tmp_path: Path, monkeypatch, how: str) -> None:
    """A helper still drawing ends when the painter's block ends (error, Ctrl-C: the child
    is terminated) and when the child is killed outright (the parent-death signal)."""
    import os
    import signal

    from execrl.evaluate import report

    monkeypatch.setattr(report, "plot_paired_diffs", lambda path, *args: time.sleep(120))
    results, episodes, schedules = _synthetic()
    with pytest.raises(KeyboardInterrupt), painter(True) as drawer:
        helper = _helper_pid(drawer)
        draw_plots(drawer, tmp_path, results, episodes, schedules)
        if how == "kill_child":
            os.kill(drawer._proc.pid, signal.SIGKILL)
            assert _ended(helper)
        raise KeyboardInterrupt
    assert _ended(helper)


_BROKEN_PLOT = """
    import sys
    from execrl.evaluate import report
    def broken(path, *args):
        raise ValueError("no paired plot today")
    setattr(report, sys.argv[1], broken)
    sys.argv = ["execrl", *sys.argv[2:]]
    from execrl.cli import main
    main()
"""


@pytest.mark.parametrize("plot", ["plot_paired_diffs", "plot_is_boxplot"])
def test_evaluate_says_a_failed_plot_in_one_line_and_keeps_the_folder(tmp_path: Path,
                                                                       plot: str) -> None:
    """``execrl evaluate`` whose plot fails (in the helper, in the child): one ``error:``
    line, exit 1, no traceback, and the output folder as it was (a previous output kept)."""
    import subprocess
    import textwrap

    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")  # an earlier evaluation's
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_BROKEN_PLOT), plot, "evaluate", "--orders",
         "30", "--policies", "twap,ac", "--out", str(out), "--force"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"error: the report's plots could not be drawn (ValueError: no paired "
                     f"plot today); {str(out)!r} was left as it was"]
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
    assert (out / "results.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left
