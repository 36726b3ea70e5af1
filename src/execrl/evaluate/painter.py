"""Who draws the report's plots: this process (``Painter``) or a forked child that draws them
while this one simulates and computes the statistics (``ForkedPainter``).

Why a child process: in ``execrl evaluate --orders 20000`` (five baselines) matplotlib's
import costs ~0.5 CPU-s and the three plots ~0.9, mostly Python holding the GIL, on the
path between the statistics and the swap of the output folder (measured 2026-12-01,
bench/README.md). A child forked before the simulation imports matplotlib while the
simulation runs, draws the box plot and the schedules while the bootstrap runs, and the paired
differences while this process writes the parquet and JSON files: the same drawing functions
(``execrl.evaluate.report``) on the same data, into the same staging folder, on another core
where there is one. The report (written last) links only plots that were written: ``wait``
returns once each is, and raises the child's error where one failed (the staging folder is
then discarded whole, as for an error in this process). Fork only (Linux): elsewhere, or
where the fork fails, this process draws them itself.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: the episode columns the plots read (the rest of the table stays in this process):
#: ``order_idx``, ``policy``, ``is_bps`` (``_encoded``)
#: the plots whose first argument is the episodes (``execrl.evaluate.report.Episodes``)
_EPISODE_PLOTS = frozenset({"boxplot", "paired"})


def _plot(name: str) -> Callable[..., None]:
    from execrl.evaluate import report

    return {"boxplot": report.plot_is_boxplot, "schedules": report.plot_schedules,
            "paired": report.plot_paired_diffs}[name]


class Painter:
    """Draws each plot at once, in this process."""

    def __init__(self) -> None:
        self.sent: set[str] = set()
        #: the error a plot ended with (raised by ``draw`` or ``wait``): a command tells it
        #: from its own errors by this (``execrl evaluate``: one line, exit 1)
        self.failure: BaseException | None = None

    def draw(self, name: str, path: Path, *args: Any) -> None:
        """Plot ``name`` (``boxplot``, ``schedules``, ``paired``) into ``path``; a plot already
        drawn (or sent) under that name is not drawn again."""
        if name in self.sent:
            return
        self.sent.add(name)
        self._draw(name, path, args)

    def _draw(self, name: str, path: Path, args: tuple[Any, ...]) -> None:
        try:
            _plot(name)(path, *args)
        except Exception as exc:
            self.failure = exc
            raise

    def wait(self) -> None:
        """Return once every plot drawn so far is written (here: at once)."""

    def close(self) -> None:
        """Stop drawing (a child still running is ended)."""


class ForkedPainter(Painter):
    """Sends each plot to a child forked at construction (which imports matplotlib at once,
    then forks its helper for the paired differences: ``_Helper``); ``wait`` returns when
    the child has written them all and ended, or raises its error. The child reads what
    it is sent in a thread of its own once matplotlib is imported; where the parent ends
    without a word (killed), the child reads the end of the pipe and ends too."""

    def __init__(self) -> None:
        super().__init__()
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        jobs_in, self._jobs = ctx.Pipe(duplex=False)
        self._reply, reply_out = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_serve, args=(jobs_in, reply_out, self._jobs),
                                 name="execrl-plots", daemon=True)
        self._proc.start()
        jobs_in.close()  # the child's ends: this process keeps its own
        reply_out.close()
        self._frame_id: int | None = None
        self._broken = False

    def _send(self, job: Any) -> None:
        if self._broken:
            return
        try:
            self._jobs.send(job)
        except OSError:  # the child has ended: ``wait`` says why
            self._broken = True

    def _draw(self, name: str, path: Path, args: tuple[Any, ...]) -> None:
        sent = list(args)
        if name in _EPISODE_PLOTS:  # the episodes: their plotted columns, once
            episodes = args[0]
            if self._frame_id != id(episodes):
                self._send(("episodes", None, (_encoded(episodes),)))
                self._frame_id = id(episodes)
            sent[0] = _Episodes()
        self._send((name, str(path), tuple(sent)))

    def wait(self) -> None:
        self._send(None)
        try:
            reply = self._reply.recv()
        except EOFError:  # ended without a word (killed)
            reply = None
        self._proc.join()
        if reply is not None and reply[0] == "done":
            return
        if reply is not None and isinstance(reply[1], BaseException):
            self.failure = reply[1]
        else:
            self.failure = RuntimeError(
                f"the plotting process ended (exit code {self._proc.exitcode}) before its "
                f"plots were written" + (f": {reply[1]}" if reply is not None else ""))
        raise self.failure

    def close(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._jobs.close()
        self._reply.close()


class _Episodes:
    """Stands for the episodes the child last received."""


def _encoded(episodes: Any) -> dict[str, Any]:
    """The plotted columns of ``episodes`` as sent to the child: the policy names once and
    each row's index into them (pickling 100,000 names took ~75 ms between the two
    processes, twice: the child forwards them to its helper)."""
    names = np.asarray(episodes["policy"])
    distinct = list(dict.fromkeys(names.tolist()))
    codes = np.zeros(names.size, dtype=np.int32)
    for i, name in enumerate(distinct[1:], start=1):
        codes[names == name] = i
    return {"order_idx": np.asarray(episodes["order_idx"]), "is_bps": np.asarray(
        episodes["is_bps"]), "policy": (distinct, codes)}


def _decoded(columns: dict[str, Any]) -> dict[str, Any]:
    """``_encoded``'s columns back as they were (the names an object array)."""
    distinct, codes = columns["policy"]
    names = np.empty(len(distinct), dtype=object)
    names[:] = distinct
    return {**columns, "policy": names[codes]}


def _serve(jobs: Any, reply: Any, parents_end: Any) -> None:
    """The child: import matplotlib (while the parent simulates), fork its helper (which
    draws the paired differences: ``_Helper``), then draw each plot sent until told to stop;
    the first error, its own or its helper's, is sent back and ends it. A thread receives
    the jobs meanwhile and hands the helper its own at once. Ctrl-C is the parent's to
    handle (it ends the child); SIGTERM ends it (and its helper). A parent that sends before
    the import is done waits for it (a run of a few orders: the plots need it anyway)."""
    import queue
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parents_end.close()  # so that the parent's end closing is the end of the pipe here
    received: queue.SimpleQueue[Any] = queue.SimpleQueue()
    helper: _Helper | None = None

    def receive() -> None:
        try:
            while True:
                job = jobs.recv()
                if helper is not None and job is not None and (
                        job[0] == "episodes" or job[0] in _Helper.PLOTS):
                    helper.send(job)
                    if job[0] in _Helper.PLOTS:
                        continue
                received.put(job)
                if job is None:
                    return
        except (EOFError, OSError):  # the parent is gone
            received.put(EOFError)

    try:
        from execrl.evaluate.report import _figure

        _figure()  # matplotlib's import, before the first plot is asked for
        with contextlib.suppress(OSError):  # forked before any thread runs here
            helper = _Helper((jobs, reply))
        threading.Thread(target=receive, daemon=True).start()
        if not _draw_jobs(received.get):
            return
        if helper is not None:
            helper.finish()
        reply.send(("done", None))
    except BaseException as exc:
        _send_error(reply, exc)
    finally:
        if helper is not None:
            helper.close()


class _Helper:
    """The plotting child's own child, forked once matplotlib is imported (so it imports
    nothing): it draws the paired differences, the one plot that waits for the statistics,
    while the child still draws the box plot and the schedules, on the machine's other
    core (the statistics' bootstrap, on both cores, is done by then). Measured at 20,000
    orders: box plot + schedules ~0.5 CPU-s, paired differences ~0.5, drawn one after the
    other they were the end of ``execrl evaluate``'s critical path. It is sent the jobs it
    draws (and the episodes) by the child, answers once when told to stop, and ends with
    the child: on the end of its pipe, and by the kernel's parent-death signal."""

    PLOTS = frozenset({"paired"})

    def __init__(self, inherited: tuple[Any, ...]) -> None:
        import multiprocessing
        import os

        jobs_in, self._jobs = multiprocessing.Pipe(duplex=False)
        self._reply, reply_out = multiprocessing.Pipe(duplex=False)
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the helper: never returns into the child's code
            status = 1
            try:
                _ends_with(parent)
                for conn in (*inherited, self._jobs, self._reply):
                    conn.close()  # the parent's pipe ends its copy must not keep open
                status = _help(jobs_in, reply_out)
            finally:
                os._exit(status)
        jobs_in.close()
        reply_out.close()

    def send(self, job: Any) -> None:
        with contextlib.suppress(OSError):  # it has ended: ``finish`` says why
            self._jobs.send(job)

    def finish(self) -> None:
        """Wait for the helper's plots; raise its error (or that it ended without a word)."""
        import os

        self.send(None)
        try:
            reply = self._reply.recv()
        except EOFError:
            reply = None
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        if reply is not None and reply[0] == "done":
            return
        if reply is not None and isinstance(reply[1], BaseException):
            raise reply[1]
        raise RuntimeError(f"the plotting helper ended (status {status}) before its plots "
                           "were written" + (f": {reply[1]}" if reply is not None else ""))

    def close(self) -> None:
        import os

        if self.pid:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(OSError):
                os.waitpid(self.pid, 0)
            self.pid = 0
        self._jobs.close()
        self._reply.close()


def _ends_with(parent: int) -> None:
    """Have the kernel end this process (SIGTERM) when the process that forked it ends,
    however it ends; and end now if it already has."""
    import ctypes
    import os

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _help(jobs: Any, reply: Any) -> int:
    """The helper's loop: draw each plot sent; answer ``done`` or the first error."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def next_job() -> Any:
        try:
            return jobs.recv()
        except EOFError:  # the child is gone
            return EOFError

    try:
        if not _draw_jobs(next_job):
            return 1
        reply.send(("done", None))
        return 0
    except BaseException as exc:
        _send_error(reply, exc)
        return 1


def _draw_jobs(next_job: Callable[[], Any]) -> bool:
    """Draw each plot ``next_job`` gives (with the episodes last sent for ``_Episodes``)
    until told to stop (None): True; False where the sender is gone (``EOFError``)."""
    episodes = None
    while (job := next_job()) is not None:
        if job is EOFError:
            return False
        name, path, args = job
        if name == "episodes":
            episodes = _decoded(args[0])
            continue
        _plot(name)(Path(path), *(episodes if isinstance(a, _Episodes) else a for a in args))
    return True


def _send_error(reply: Any, exc: BaseException) -> None:
    """``exc`` to whoever waits for the plots (its text where it does not pickle)."""
    try:
        reply.send(("error", exc))
    except OSError:  # the receiver is gone
        pass
    except Exception:  # an exception that does not pickle: its text
        with contextlib.suppress(OSError):
            reply.send(("error", f"{type(exc).__name__}: {exc}"))


@contextlib.contextmanager
def painter(plots: bool) -> Iterator[Painter | None]:
    """The painter of an evaluation: None without plots, a ``ForkedPainter`` where a fork
    is possible, else a ``Painter``; a child still drawing when the block ends (an error,
    Ctrl-C) is ended before the caller's staging folder is removed."""
    if not plots:
        yield None
        return
    chosen: Painter = Painter()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            chosen = ForkedPainter()
    try:
        yield chosen
    finally:
        chosen.close()
