"""The operator's kill switch as a file: ``execrl kill FILE`` writes it, the executor reads it
at every decision (a stat, and a read only when it changed) and applies it to its
``safety.guard.KillSwitch``: no new child order, every working one cancelled.

The file is JSON: ``{"global": true}``, or ``{"orders": ["ABC-123"], "policies": ["ppo"]}``.
A file that exists but cannot be read as such kills everything (fail safe) and says so once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from execrl.domain import ConfigError
from execrl.domain.errors import warn_user


@dataclass(frozen=True)
class KillRequest:
    """What the kill file asks to stop."""

    everything: bool = False
    orders: frozenset[str] = field(default_factory=frozenset)
    policies: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> str:
        return json.dumps({"global": self.everything, "orders": sorted(self.orders),
                           "policies": sorted(self.policies)})


def parse_kill(text: str) -> KillRequest:
    data = json.loads(text) if text.strip() else {"global": True}
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    unknown = set(data) - {"global", "orders", "policies"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}")
    everything = data.get("global", False)
    orders = data.get("orders", [])
    policies = data.get("policies", [])
    if not isinstance(everything, bool):
        raise ValueError(f"'global' = {everything!r} is not true or false")
    for name, value in (("orders", orders), ("policies", policies)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name!r} = {value!r} is not a list of names")
    return KillRequest(everything, frozenset(orders), frozenset(policies))


class KillFileWatcher:
    """Reads ``path`` when its modification time or size changes; ``request()`` is the
    current request (None: no file, nothing killed)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._stamp: tuple[int, int] | None = None
        self._request: KillRequest | None = None
        self._warned = False

    def request(self) -> KillRequest | None:
        try:
            st = os.stat(self.path)
        except OSError:
            self._stamp, self._request = None, None
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._request = parse_kill(Path(self.path).read_text(encoding="utf-8"))
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                if not self._warned:
                    warn_user(f"kill file {self.path!r} is not readable as a kill request "
                              f"({exc}): killing everything")
                    self._warned = True
                self._request = KillRequest(everything=True)
        return self._request


def check_kill_path(path: Path, option: str = "kill file") -> None:
    """Refuse, in one line, a kill-file path that could never hold a kill request: a folder,
    a path in a folder that does not exist, or an existing file that is not a kill file (it
    would be overwritten by ``execrl kill``, and read by an executor as "kill everything")."""
    if path.is_dir():
        raise ConfigError(f"{option} {str(path)!r} is a folder")
    if not path.parent.is_dir():
        raise ConfigError(f"{option} {str(path)!r}: folder {str(path.parent)!r} does not exist")
    if path.exists():
        try:
            parse_kill(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{option} {str(path)!r} exists and is not a kill file ({exc}); "
                              f"name another file") from None


def write_kill_file(path: Path, request: KillRequest) -> None:
    """Write the kill request atomically (a reader never sees half a file); a file that is
    there and is not a kill file is left alone."""
    check_kill_path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(request.to_json() + "\n", encoding="utf-8")
    os.replace(tmp, path)


def apply_kill(request: KillRequest | None, switch: Any, order_ids: list[str],
               policy: str) -> None:
    """Flip ``switch`` (``safety.guard.KillSwitch``) as ``request`` asks. Kills are sticky:
    a request that no longer names an order does not revive it (``release_all`` by hand)."""
    if request is None:
        return
    if request.everything:
        switch.kill_all()
        return
    if policy in request.policies:
        switch.kill_policy(policy)
    if request.orders:
        hit = [i for i, oid in enumerate(order_ids) if oid in request.orders]
        if hit:
            switch.kill_orders(hit)
