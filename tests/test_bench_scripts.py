"""The benchmark scripts that compare with software outside the project say so when it is
missing, instead of failing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_mbt_gym_comparison_skips_with_a_reason_without_a_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBT_GYM")}
    for extra, needle in (({}, "MBT_GYM_PATH is not set"),
                          ({"MBT_GYM_PATH": str(tmp_path)}, "is not an mbt_gym checkout")):
        done = subprocess.run([sys.executable, str(BENCH / "bench_mbt_gym.py")],
                              env={**env, **extra}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert needle in out["skipped"]
    (tmp_path / "mbt_gym" / "gym").mkdir(parents=True)
    (tmp_path / "mbt_gym" / "gym" / "TradingEnvironment.py").write_text("")
    done = subprocess.run([sys.executable, str(BENCH / "bench_mbt_gym.py")],
                          env={**env, "MBT_GYM_PATH": str(tmp_path)}, capture_output=True,
                          text=True, timeout=120)
    assert "MBT_GYM_PYTHON is not set" in json.loads(done.stdout)["skipped"]
