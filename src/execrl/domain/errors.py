"""Errors raised for bad external input. The CLI prints their message as one line."""

from __future__ import annotations

import sys
from typing import Any


class ExecRLError(Exception):
    """Base of the errors a user can cause (bad order, bad config, bad data file)."""


class OrderValidationError(ExecRLError, ValueError):
    """A parent order was refused; the message names the field and the bad value."""


class ConfigError(ExecRLError, ValueError):
    """A configuration was refused; the message names the field and the bad value."""


def describe_pydantic_error(what: str, exc: Any) -> str:
    """One line naming the first offending field, its value and what was expected.

    ``exc`` is a ``pydantic.ValidationError``; only its first error is reported so that the
    message stays one line (the rest are usually consequences of the first).
    """
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if not field:  # a rule across fields: the message itself names them
        return f"{what} is not valid: {msg}{more}"
    if first.get("type") == "missing":
        return f"{what} field '{field}' is missing{more}"
    return f"{what} field '{field}' = {first.get('input')!r} is not valid: {msg}{more}"


def warn_user(message: str) -> None:
    """One ``warning: …`` line on stderr: something the user should know that does not stop
    the run (a checkpoint trained on another market, a run too short to learn anything)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
