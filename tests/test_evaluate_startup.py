"""What ``execrl evaluate``'s process sets up before it runs, each checked in a fresh
interpreter: pyarrow's allocator (the system's, unless the user chose one)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


_POOL = """
    import atexit, sys
    atexit.register(lambda: print("POOL", __import__("pyarrow").default_memory_pool()
                                  .backend_name))
    sys.argv = ["execrl", *sys.argv[1:]]
    from execrl.cli import main
    main()
"""


def test_evaluate_allocates_arrow_memory_with_the_system_malloc(tmp_path: Path) -> None:
    args = ("evaluate", "--orders", "30", "--policies", "twap,ac", "--no-plots", "--out")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = _run(_POOL, *args, str(tmp_path / "a"), env=env)
    assert out.strip().splitlines()[-1] == "POOL system"
    out = _run(_POOL, *args, str(tmp_path / "b"), env={**env, "ARROW_DEFAULT_MEMORY_POOL":
                                                       "mimalloc"})
    assert out.strip().splitlines()[-1] == "POOL mimalloc"  # the user's choice stands
    assert ((tmp_path / "a" / "episodes.parquet").read_bytes()
            == (tmp_path / "b" / "episodes.parquet").read_bytes())
