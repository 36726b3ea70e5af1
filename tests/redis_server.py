"""A real, throwaway Redis server for the service's tests.

``redis_url`` (module fixture) starts ``redis-server`` on a free localhost port with its data
folder in a temporary directory and none of the machine's configuration: no RDB snapshots,
the append-only file on and fsynced on every write (the service acknowledges a parent order
only after its record is durable), and stops it at the end. Where no ``redis-server`` is
installed (``scripts/test.sh`` tries to install Debian's package first) the tests that use it
skip and say why.

Use it from a test module with ``from redis_server import redis_url  # noqa: F401``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/test.sh installs Debian's "
                    "redis-server where apt-get and root are available)")
    redis = pytest.importorskip("redis")
    with tempfile.TemporaryDirectory(prefix="execrl-redis-") as folder:
        port = _free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--protected-mode", "yes", "--daemonize", "no", "--logfile", ""]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        err = proc.stderr.read().decode() if proc.stderr else ""
                        pytest.fail(f"redis-server did not start on port {port}: {err[-500:]}")
                    time.sleep(0.05)
            yield url
        finally:
            client.close()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
