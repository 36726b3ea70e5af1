"""What a benchmark does with its result: the JSON on stdout and, with ``--json-out``, in a file
(the scripts run as ``python bench/X.py``, so this folder is first on their path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: dict[str, Any], json_out: str | Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if json_out:
        Path(json_out).write_text(text + "\n")
