"""Where the real LOBSTER sample lies (GOOG, 2012-06-21, 1 / 5 / 10 levels): ``shared/data/lobster``
beside the checkout, else ``/work/shared/data/lobster``. Tests read it from there; it is never
copied into the repository."""

from __future__ import annotations

from pathlib import Path

_BESIDE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lobster"
LOBSTER_DIR = _BESIDE if _BESIDE.is_dir() else Path("/work/shared/data/lobster")


def goog(levels: int = 10) -> Path:
    """The GOOG sample file with ``levels`` book levels."""
    return LOBSTER_DIR / f"LOBSTER_SampleFile_GOOG_2012-06-21_{levels}.zip"
