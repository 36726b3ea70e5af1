"""Reading the JSON and TOML files a user hands to execrl (orders, markets, configs).

One loader for all of them, so that every file is refused the same way, in one line naming
the file and, where there is one, the field: a file that cannot be read or is not UTF-8 text,
text that is not JSON / TOML, a top level that is not an object, and, anywhere in the file,
a key given twice (JSON's "last one wins" would silently change an order), NaN or Infinity
(not numbers: JSON has no such literals, TOML's ``nan`` / ``inf`` are refused alike), a number
beyond float64 (``1e400``), an integer too long to print (more than ``MAX_INT_DIGITS``
digits), a string that is not text (a lone UTF-16 surrogate) and nesting deeper than
``MAX_DEPTH``. What the fields must hold is the model's business (``ParentOrder``,
``ACMarketConfig``, the agents' configs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from execrl.domain.errors import ConfigError, ExecRLError

#: Deepest nesting of objects / arrays accepted; execrl's own files nest three levels at most.
MAX_DEPTH = 32
#: Longest integer literal accepted; 40 digits is far beyond any count or seed (2**63 has 19).
MAX_INT_DIGITS = 40


class _Refused:
    """A literal the JSON decoder met that no field may hold; reported with its path."""

    __slots__ = ("shown", "why")

    def __init__(self, shown: str, why: str):
        self.shown = shown
        self.why = why


class _ObjectWithDuplicate(dict):  # type: ignore[type-arg]
    """A decoded JSON object in which ``duplicate`` was given more than once."""

    duplicate: str = ""


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            dup = _ObjectWithDuplicate(obj)
            dup.duplicate = key
            return dup
        obj[key] = value
    return obj


def _parse_int(literal: str) -> int | _Refused:
    digits = len(literal.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Refused(f"an integer of {digits} digits", f"longer than {MAX_INT_DIGITS} digits")
    return int(literal)


def _parse_float(literal: str) -> float | _Refused:
    value = float(literal)
    if not math.isfinite(value):  # 1e400: beyond float64
        return _Refused(_clip(literal), "beyond the range of a float64 number (about 1.8e308)")
    return value


def _parse_constant(literal: str) -> _Refused:
    return _Refused(literal, "not a number (JSON has no NaN or Infinity)")


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _key(key: str) -> str:
    """A key as it can be shown inside quotes on one line."""
    shown = key if key.isprintable() and "'" not in key else repr(key)[1:-1]
    return _clip(shown)


def _where(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _check_values(data: Any, what: str, error: type[ExecRLError]) -> None:
    """Walk the decoded document (iteratively: no recursion limit to meet) and refuse the
    first value no field may hold, naming its path."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise error(f"{what} nests deeper than {MAX_DEPTH} levels (at '{_where(path)}')")
        if isinstance(value, _Refused):
            raise error(f"{what} field '{_where(path)}' = {value.shown} is not valid: {value.why}")
        if isinstance(value, float) and not math.isfinite(value):  # TOML's nan / inf
            raise error(
                f"{what} field '{_where(path)}' = {value!r} is not valid: not a finite number"
            )
        if isinstance(value, str):
            _check_text(value, f"{what} field '{_where(path)}'", error)
        elif isinstance(value, dict):
            if isinstance(value, _ObjectWithDuplicate):
                key = _where((*path, _key(value.duplicate)))
                raise error(f"{what} gives the key '{key}' more than once; give each key once")
            children = []
            for key, item in value.items():
                _check_text(key, f"{what} key {_key(key)!r}", error)
                children.append((item, (*path, _key(key))))
            stack.extend(reversed(children))  # the first problem in document order
        elif isinstance(value, list):
            stack.extend(
                (item, (*path, str(i))) for i, item in reversed(list(enumerate(value)))
            )


def _check_text(text: str, what: str, error: type[ExecRLError]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what} holds a lone UTF-16 surrogate (\\u escape): not text") from None


def parse_json_object(
    text: str, what: str, error: type[ExecRLError] = ConfigError
) -> dict[str, Any]:
    """Decode ``text`` as one JSON object; ``what`` names the source in messages ("order",
    "market file 'm.json'")."""
    try:
        data = json.loads(
            text,
            object_pairs_hook=_object_pairs,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise error(f"{what} nests deeper than {MAX_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise error(f"{what} must be a JSON object, got {_json_type(data)}")
    _check_values(data, what, error)
    return data


def parse_toml_table(
    text: str, what: str, error: type[ExecRLError] = ConfigError
) -> dict[str, Any]:
    """Decode ``text`` as TOML (which refuses duplicate keys itself) and check its values."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise error(f"{what} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError, and int() of a 5000-digit literal
        raise error(f"{what} is not valid TOML: {_clip(str(exc), 200)}") from None
    _check_values(data, what, error)
    return data


def read_text_file(path: str | Path, what: str, error: type[ExecRLError] = ConfigError) -> str:
    """The file's text; a file that cannot be read or is not UTF-8 is refused naming it. A
    UTF-8 byte-order mark (some editors write one) is dropped."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {str(p)!r}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {str(p)!r} is not UTF-8 text: byte 0x{data[exc.start]:02x} at "
            f"position {exc.start}"
        ) from None


def load_json_object(
    path: str | Path, what: str, error: type[ExecRLError] = ConfigError
) -> dict[str, Any]:
    """Read the JSON object in ``path``; ``what`` says what the file is ("order file")."""
    text = read_text_file(path, what, error)
    return parse_json_object(text, f"{what} {str(path)!r}", error)


def load_config_object(
    path: str | Path, what: str, error: type[ExecRLError] = ConfigError
) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON (any other name) file holding one object / table."""
    text = read_text_file(path, what, error)
    if Path(path).suffix == ".toml":
        return parse_toml_table(text, f"{what} {str(path)!r}", error)
    return parse_json_object(text, f"{what} {str(path)!r}", error)


def _json_type(value: Any) -> str:
    return value.shown if isinstance(value, _Refused) else type(value).__name__
