"""A real, throwaway PostgreSQL server for the tests that need one.

``postgres_url`` (session fixture) starts a server of its own: ``initdb`` a data folder in a
temporary directory, ``pg_ctl start`` it on a free localhost port with its unix socket in that
directory, and stop and delete it at the end. As root (PostgreSQL refuses to run as root) the
server runs as the ``postgres`` user through ``runuser``. ``EXECRL_TEST_PG_URL`` names an existing
server instead. Where no PostgreSQL binaries are installed (``scripts/test.sh`` tries to install
Debian's package first) the tests that use it skip and say why.

Use it from a test module with ``from pg import postgres_url  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    """A folder holding initdb, pg_ctl and postgres: PATH first, then Debian's layout."""
    candidates = []
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                      else 0, reverse=True)
    candidates += [Path(p) for p in versions]
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(argv: list[str], as_user: str | None, timeout: float) -> subprocess.CompletedProcess:
    if as_user is not None:
        argv = ["runuser", "-u", as_user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    given = os.environ.get("EXECRL_TEST_PG_URL")
    if given:
        yield given
        return
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb / pg_ctl / postgres on PATH or in "
                    "/usr/lib/postgresql/*/bin; scripts/test.sh installs Debian's package "
                    "where it runs as root with apt-get)")
    as_user = None
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the "
                        "PostgreSQL server as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser to start PostgreSQL as 'postgres'")
        as_user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="execrl-pg-"))
    data, socket_dir, log = root / "data", root / "socket", root / "server.log"
    socket_dir.mkdir()
    if as_user is not None:
        for path in (root, socket_dir):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    pg_ctl = str(bin_dir / "pg_ctl")
    started = False
    try:
        done = _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "execrl", "-A", "trust",
                     "-E", "UTF8", "--no-locale", "--no-sync"], as_user, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"initdb failed: {done.stderr.strip()[-2000:]}")
        port = _free_port()
        options = (f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        done = _run([pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60",
                     "start"], as_user, timeout=90)
        started = done.returncode == 0
        if not started:
            tail = log.read_text()[-2000:] if log.exists() else done.stderr
            pytest.fail(f"PostgreSQL did not start: {tail.strip()}")
        yield f"postgresql+psycopg://execrl@127.0.0.1:{port}/postgres"
    finally:
        if started:
            _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], as_user,
                 timeout=60)
        with contextlib.suppress(OSError):
            shutil.rmtree(root)
