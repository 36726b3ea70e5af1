"""Output folders the user names (``--out``): checked before any work, replaced whole or not at all.

Every command that writes a folder (``evaluate``, ``demo``, ``train``) goes through here, so the
rules are the same everywhere:

- The path is checked before the work starts: it must not be a file, lie under a file, sit in a
  folder that cannot be written, or be the current folder or one above it.
- An existing folder is replaced only if everything in it is something execrl writes there
  (``owned`` says what); a folder holding anything else is refused by name, unless ``force``.
- The new content is written into a staging folder beside the target and swapped in at the
  end (two renames), so an interrupted or failed run leaves the previous output byte for byte
  and no half-written file. Staging and retired folders carry the writer's pid; a later run
  removes those of processes that no longer exist (a run killed with SIGKILL) and puts back a
  previous output that a kill between the two renames left aside.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from execrl.domain.errors import ConfigError

_STAGING = ".execrl-staging"
_RETIRED = ".execrl-retired"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _leftovers(out: Path) -> Iterator[tuple[Path, str, int]]:
    """(path, kind, pid) of staging / retired folders of ``out`` left by earlier runs."""
    parent = out.parent
    if not parent.is_dir():
        return
    prefix = f".{out.name}"
    for entry in parent.iterdir():
        name = entry.name
        for kind in (_STAGING, _RETIRED):
            head = f"{prefix}{kind}-"
            if name.startswith(head):
                pid_text = name[len(head):].split("-", 1)[0]
                if pid_text.isdigit():
                    yield entry, kind, int(pid_text)


def clean_leftovers(out: Path) -> None:
    """Remove staging folders of dead runs; put back an output a killed swap left retired."""
    for path, kind, pid in list(_leftovers(out)):
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if kind == _RETIRED and not out.exists():
            os.replace(path, out)  # the kill came between the two renames of a swap
        else:
            shutil.rmtree(path, ignore_errors=True)


def check_output_folder(
    out: Path, flag: str, owned: Callable[[Path], bool], what: str, force: bool = False
) -> None:
    """Refuse ``out`` now, with one line naming ``flag`` and the path, if the output could not
    be written there or would replace something execrl did not write.

    ``owned(entry)`` says whether an entry of an existing folder is part of ``what`` this
    command writes there (e.g. "an execrl checkpoint").
    """
    clean_leftovers(out)  # first: a previous output a killed swap left aside is put back
    shown = str(out)
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ConfigError(
            f"{flag} {shown!r} is the current folder or one above it; name a new folder"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {shown!r} is a file, not a folder")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{flag} {shown!r} lies under {str(ancestor)!r}, which is a file")
    try:  # a real probe: os.access says yes to root even where nothing can be created
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".execrl-probe-"))
    except OSError as exc:
        raise ConfigError(
            f"{flag} {shown!r}: folder {str(ancestor)!r} cannot be written ({exc.strerror})"
        ) from None
    if out.is_dir() and not force:
        try:
            foreign = sorted(e.name for e in out.iterdir() if not owned(e))
        except OSError as exc:
            raise ConfigError(f"{flag} {shown!r} cannot be read ({exc.strerror})") from None
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise ConfigError(
                f"{flag} {shown!r} holds files that are not {what} (e.g. {foreign[0]!r}{more});"
                f" name another folder, or pass --force to replace it"
            )


class InterruptedAfterSwap(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) arrived during the swap: the new output is complete and in place."""


#: Ctrl-C / SIGTERM received by ``interrupt`` so far. A KeyboardInterrupt raised where Python
#: cannot propagate it (a weakref callback such as importlib's module-lock cleanup, numba's
#: compiler cache notifications, a ctypes callback) is lost there: ``_redeliver`` raises it
#: again in the main thread, and the count still says it came, so ``staged_folder`` refuses to
#: swap in an output that a swallowed interrupt should have stopped.
_interrupts = 0
#: the ``sys.unraisablehook`` that ``install_interrupt_handlers`` found (anything but a
#: KeyboardInterrupt still goes there)
_unraisable_before: Callable[[object], object] | None = None


def interrupt(signum: int, frame: object) -> None:
    """The handler of SIGINT and SIGTERM (``install_interrupt_handlers``): count, then raise
    KeyboardInterrupt (SIGTERM cleans up like Ctrl-C: the previous output is kept)."""
    global _interrupts
    _interrupts += 1
    raise KeyboardInterrupt


def _interrupt_again() -> None:
    """SIGINT to the main thread again, a millisecond from now: out of the hook by then (an
    interrupt raised inside ``sys.unraisablehook`` is printed and lost in turn)."""
    timer = threading.Timer(0.001, _thread.interrupt_main, args=(signal.SIGINT,))
    timer.daemon = True
    timer.start()


def _redeliver(unraisable: object) -> None:
    """``sys.unraisablehook``: a KeyboardInterrupt that could not propagate where it was raised
    would be printed as "Exception ignored in ... Traceback" and lost; it is delivered to the
    main thread again instead (the run stops now, not at its end; one lost again comes back
    here). Any other unraisable exception goes to the hook that was installed before."""
    try:
        exc_type = getattr(unraisable, "exc_type", None)
        if isinstance(exc_type, type) and issubclass(exc_type, KeyboardInterrupt):
            _interrupt_again()
            return
    except KeyboardInterrupt:  # another one while in here
        _interrupt_again()
        return
    (_unraisable_before or sys.__unraisablehook__)(unraisable)


def install_interrupt_handlers() -> None:
    """SIGINT and SIGTERM to ``interrupt``, from the main thread (the command line's entry),
    and ``_redeliver`` as ``sys.unraisablehook``."""
    global _unraisable_before
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    if sys.unraisablehook is not _redeliver:
        _unraisable_before = sys.unraisablehook
        sys.unraisablehook = _redeliver


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT / SIGTERM over the two renames of a swap (they take microseconds) and
    raise KeyboardInterrupt after them if one came. Python-level handlers, not a signal mask:
    a mask holds only the calling thread's signals, and numba's or torch's threads would take
    them instead."""
    caught: list[int] = []

    def defer(signum: int, frame: object) -> None:
        caught.append(signum)

    try:
        previous = {s: signal.signal(s, defer) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: no handlers to swap
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out``; when the block ends normally, it becomes
    ``out`` (the previous ``out`` is removed only after the new one is in place). When the block
    raises (an error, Ctrl-C), the staging folder is removed and ``out`` is left as it was."""
    out = Path(out)
    created = [a for a in reversed(out.parents) if not a.exists()]  # outermost first
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = out.parent / f".{out.name}{_STAGING}-{tag}"
    staging.mkdir()
    retired = out.parent / f".{out.name}{_RETIRED}-{tag}"
    interrupts = _interrupts
    try:
        yield staging
        if _interrupts != interrupts:  # an interrupt came and was swallowed (``_interrupts``)
            raise KeyboardInterrupt
        os.chmod(staging, 0o755)
        # Ctrl-C and SIGTERM are held over the swap and delivered once it is done: such an
        # interrupt comes after the new output is in place (``InterruptedAfterSwap``)
        with _signals_held():
            had_output = out.exists()
            if had_output:
                os.replace(out, retired)
            try:
                os.replace(staging, out)
            except BaseException:
                if had_output:
                    os.replace(retired, out)
                raise
        shutil.rmtree(retired, ignore_errors=True)
    except BaseException as exc:
        if not staging.exists():  # swapped in: the new output stands
            shutil.rmtree(retired, ignore_errors=True)
            if isinstance(exc, KeyboardInterrupt):
                raise InterruptedAfterSwap from None
            raise
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):  # the parents this run made, innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
