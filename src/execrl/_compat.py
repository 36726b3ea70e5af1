"""Quieting third-party import noise, in one place."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys

_GYM_BANNER = ("Gym has been", "Please upgrade to Gymnasium", "Users of this version of Gym",
               "See the migration")


def import_legacy_gym_quietly() -> None:
    """Import the unmaintained ``gym`` package (d3rlpy needs it; SB3 imports it when present)
    once, without the deprecation banner it prints on stderr. Anything else it prints passes."""
    if "gym" in sys.modules or importlib.util.find_spec("gym") is None:
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            import gym  # noqa: F401
    finally:
        rest = [line for line in captured.getvalue().splitlines(keepends=True)
                if not line.startswith(_GYM_BANNER)]
        if "".join(rest).strip():
            sys.stderr.write("".join(rest))
