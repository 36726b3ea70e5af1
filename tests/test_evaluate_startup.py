"""What ``execrl evaluate``'s process sets up before it runs, each checked in a fresh
interpreter: ``execrl.evaluate.blas`` (numba's first call finds scipy's BLAS module loaded
alone, without the import of ``scipy.linalg``; BLAS and LAPACK still work in compiled code and
scipy.linalg is whole where it is imported later) and pyarrow's allocator (the system's,
unless the user chose one)."""

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


def test_compiled_blas_and_lapack_work_and_scipy_linalg_is_whole_later() -> None:
    out = _run("""
        import sys
        import numpy as np
        from execrl.evaluate.blas import BLAS_MODULE, load_cython_blas

        assert load_cython_blas()
        from numba import njit

        @njit
        def dot(a, b):
            return np.dot(a, b)

        a = np.arange(12.0).reshape(3, 4)
        b = np.arange(8.0).reshape(4, 2) - 3.0
        assert np.array_equal(dot(a, b), a @ b)
        assert "numba.np.arraymath" in sys.modules  # numba's BLAS check ran ...
        assert "scipy.linalg" not in sys.modules    # ... without scipy.linalg

        @njit
        def inv(m):
            return np.linalg.inv(m)

        m = np.array([[2.0, 1.0], [1.0, 3.0]])
        assert np.allclose(inv(m) @ m, np.eye(2))
        import scipy.linalg

        assert scipy.linalg.cython_blas is sys.modules[BLAS_MODULE]
        assert np.allclose(scipy.linalg.solve(m, [1.0, 2.0]), np.linalg.solve(m, [1.0, 2.0]))
        assert np.allclose(scipy.linalg.blas.dgemm(1.0, a, b), a @ b)
        print("ok")
    """)
    assert out.strip() == "ok"


def test_it_does_nothing_where_scipy_linalg_is_loaded_already() -> None:
    out = _run("""
        import sys
        import scipy.linalg
        from execrl.evaluate.blas import load_cython_blas

        before = list(sys.meta_path)
        print(load_cython_blas(), sys.meta_path == before)
    """)
    assert out.split() == ["True", "True"]  # scipy.linalg imported cython_blas itself
    out = _run("""
        import sys
        import scipy.linalg.cython_blas  # noqa: F401
        del sys.modules["scipy.linalg.cython_blas"]
        from execrl.evaluate.blas import load_cython_blas

        print(load_cython_blas(), "scipy.linalg.cython_blas" in sys.modules)
    """)
    assert out.split() == ["False", "False"]


def test_the_backtest_does_not_import_scipy_linalg() -> None:
    out = _run("""
        import sys
        from execrl.env.factory import DEFAULT_ORDER, EnvConfig
        from execrl.evaluate.backtest import run_policies
        from execrl.presets import preset_market

        runs = run_policies(["twap", "ac"], EnvConfig(market=preset_market("ac")),
                            DEFAULT_ORDER, 60, 7)
        print(len(runs), "scipy.linalg" in sys.modules)
    """)
    assert out.split() == ["2", "False"]


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
