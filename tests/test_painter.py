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
