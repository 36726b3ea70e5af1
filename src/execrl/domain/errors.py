"""Errors raised for bad external input. The CLI prints their message as one line."""

from __future__ import annotations

import reprlib
import sys
from typing import Any


class ExecRLError(Exception):
    """Base of the errors a user can cause (bad order, bad config, bad data file)."""


class OrderValidationError(ExecRLError, ValueError):
    """A parent order was refused; the message names the field and the bad value."""


class ConfigError(ExecRLError, ValueError):
    """A configuration was refused; the message names the field and the bad value."""


class DataError(ExecRLError, ValueError):
    """A market data file was refused; the message names the file, the row and the problem."""


def describe_pydantic_error(what: str, exc: Any) -> str:
    """One line naming the first offending field, its value and what was expected.

    ``exc`` is a ``pydantic.ValidationError``; only its first error is reported so that the
    message stays one line (the rest are usually consequences of the first). Field names and
    values are shown escaped and shortened, so that a key holding a newline or a value of a
    megabyte still makes one short line.
    """
    errors = exc.errors()
    first = errors[0]
    field = ".".join(_shown_key(p) for p in first.get("loc", ()))
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if not field:  # a rule across fields: the message itself names them
        return f"{what} is not valid: {msg}{more}"
    if first.get("type") == "missing":
        return f"{what} field '{field}' is missing{more}"
    return f"{what} field '{field}' = {shown_value(first.get('input'))} is not valid: {msg}{more}"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 40
_REPR.maxlevel = 3


def shown_value(value: Any) -> str:
    """``repr(value)`` on one line and at most a few dozen characters."""
    try:
        return _REPR.repr(value)
    except ValueError:  # an int beyond Python's 4300-digit str() limit
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"


def _shown_key(part: Any) -> str:
    text = str(part)
    if not text.isprintable() or "'" in text:
        text = repr(text)[1:-1]
    return text if len(text) <= 40 else f"{text[:37]}..."


def warn_user(message: str) -> None:
    """One ``warning: …`` line on stderr: something the user should know that does not stop
    the run (a checkpoint trained on another market, a run too short to learn anything)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
