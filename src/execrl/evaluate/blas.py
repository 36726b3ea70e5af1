"""numba's first compiled call without scipy.linalg's import.

The first call of any numba function (a cached kernel's load too) fills numba's registries,
and one of them (``numba.np.arraymath``) checks that BLAS is there with ``import
scipy.linalg.cython_blas``: that imports the package ``scipy.linalg`` first, and with it
scipy's array-API layer, ``numpy.testing`` and ``numpy.f2py``, ~0.24 of ``execrl
evaluate``'s ~4 CPU-s (measured 2026-12-01, bench/README.md) for a module numba reads
nothing of but the function pointers of ``cython_blas`` itself. ``load_cython_blas`` loads
that one extension module under its own name beforehand (it needs only ``scipy._lib``'s
small C helpers), so numba's import finds it in ``sys.modules``; ``scipy.linalg`` is
imported as usual where something asks for it, and then holds the same ``cython_blas`` as
its attribute (``_LinalgFinder``), as after a plain ``import scipy.linalg.cython_blas``.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any

BLAS_MODULE = "scipy.linalg.cython_blas"


def load_cython_blas() -> bool:
    """Load ``scipy.linalg.cython_blas`` alone, before numba's first call imports it with
    ``scipy.linalg``; True where it is now in ``sys.modules``. Does nothing where numba's
    registries or ``scipy.linalg`` are loaded already, or where the module is not found as a
    file beside ``scipy/linalg/__init__.py`` (numba then imports it the usual way)."""
    if BLAS_MODULE in sys.modules:
        return True
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return False
    try:
        import scipy

        folder = Path(scipy.__file__).parent / "linalg"
        paths = [folder / f"cython_blas{suffix}"
                 for suffix in importlib.machinery.EXTENSION_SUFFIXES]
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            return False
        spec = importlib.util.spec_from_file_location(BLAS_MODULE, path)
        if spec is None or spec.loader is None:
            return False
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not getattr(module, "__pyx_capi__", None):  # not the module numba reads
            return False
    except Exception:  # any trouble: numba imports it itself, as before
        return False
    sys.modules[BLAS_MODULE] = module
    sys.meta_path.insert(0, _LinalgFinder())
    return True


class _LinalgFinder(importlib.abc.MetaPathFinder):
    """Where ``scipy.linalg`` is imported after ``load_cython_blas``: its spec as the other
    finders give it, its loader's ``exec_module`` wrapped so that the package gets its
    ``cython_blas`` attribute (the import system sets it on a parent only when it imports the
    child itself). Removes itself from ``sys.meta_path`` at that import."""

    def find_spec(self, name: str, path: Any = None, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name != "scipy.linalg":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: Any) -> None:  # the loader's own, then the attribute
            run(module)
            blas = sys.modules.get(BLAS_MODULE)
            if blas is not None and not hasattr(module, "cython_blas"):
                module.cython_blas = blas

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
