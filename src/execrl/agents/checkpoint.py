"""The checkpoint folder every ``execrl train`` writes, whatever the algorithm.

    DIR/config.json          algorithm, environment, order, seed, steps, hyper-parameters,
                             wall time, policy hash, execrl version
    DIR/policy.json|.npz     the exported numpy policy (what ``evaluate`` runs)
    DIR/policy_hash          sha256 of the exported decision function
    DIR/learning_curve.csv   env steps, wall seconds, mean return and IS of recent episodes
    DIR/learning_curve.png
    DIR/native/…             the algorithm's own weights (SB3 zip, Q table, d3rlpy model)

The folder is written under a temporary name beside DIR and renamed into place at the end,
so a failed or interrupted run leaves no half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from execrl import __version__
from execrl.agents.export import NumpyPolicy
from execrl.domain import ParentOrder
from execrl.env.factory import EnvConfig


class CurveRecorder:
    """Learning-curve rows from finished training episodes, one row per ``every`` env steps."""

    def __init__(self, every: int, clock: Callable[[], float]):
        self.every = max(1, int(every))
        self._clock = clock
        self._start = clock()
        self._next = self.every
        self._returns: list[float] = []
        self._is: list[float] = []
        self.rows: list[dict[str, float]] = []

    def add(self, env_steps: int, returns: np.ndarray, is_bps: np.ndarray) -> None:
        self._returns.extend(np.asarray(returns, dtype=float).tolist())
        self._is.extend(np.asarray(is_bps, dtype=float).tolist())
        if env_steps >= self._next and self._returns:
            self.rows.append(
                {
                    "env_steps": float(env_steps),
                    "wall_s": self._clock() - self._start,
                    "episodes": float(len(self._returns)),
                    "mean_return": float(np.mean(self._returns)),
                    "mean_is_bps": float(np.mean(self._is)),
                }
            )
            self._returns, self._is = [], []
            self._next = (env_steps // self.every + 1) * self.every

    def frame(self) -> pd.DataFrame:
        cols = ["env_steps", "wall_s", "episodes", "mean_return", "mean_is_bps"]
        return pd.DataFrame(self.rows, columns=cols)


@dataclass
class TrainOutput:
    """What an algorithm hands back: its policy, its curve and how to save its own weights."""

    policy: NumpyPolicy
    curve: pd.DataFrame
    save_native: Callable[[Path], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def env_config_dict(config: EnvConfig) -> dict[str, Any]:
    actions = config.actions if isinstance(config.actions, str) else config.actions.name
    observations = (
        config.observations if isinstance(config.observations, str) else list(config.observations)
    )
    return {
        "market": config.market.model_dump(mode="json"),
        "observations": observations,
        "actions": actions,
        "reward": config.reward,
    }


def write_checkpoint(
    out: Path,
    *,
    algo: str,
    env_name: str,
    env_config: EnvConfig,
    order: ParentOrder,
    seed: int,
    steps: int,
    hyperparams: dict[str, Any],
    wall_time_s: float,
    output: TrainOutput,
) -> dict[str, Any]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        digest = output.policy.save(tmp)
        (tmp / "policy_hash").write_text(digest + "\n")
        config = {
            "algo": algo,
            "env": env_name,
            "env_config": env_config_dict(env_config),
            "order": order.to_wire(),
            "seed": seed,
            "steps": steps,
            "hyperparams": hyperparams,
            "wall_time_s": wall_time_s,
            "policy_hash": digest,
            "execrl_version": __version__,
            **output.extra,
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=_json_default))
        output.curve.to_csv(tmp / "learning_curve.csv", index=False)
        x_label = str(output.extra.get("curve_x", "environment_steps")).replace("_", " ")
        _plot_curve(output.curve, tmp / "learning_curve.png", f"{algo} on {env_name}", x_label)
        if output.save_native is not None:
            (tmp / "native").mkdir()
            output.save_native(tmp / "native")
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return config


def _plot_curve(curve: pd.DataFrame, path: Path, title: str, x_label: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if len(curve):
        ax.plot(curve["env_steps"], curve["mean_is_bps"], marker=".", label="mean IS (bps)")
        ax2 = ax.twinx()
        ax2.plot(curve["env_steps"], curve["mean_return"], color="tab:orange", marker=".",
                 label="mean return")
        ax2.set_ylabel("mean episode return")
        ax2.legend(loc="upper right")
    ax.set_xlabel(x_label)
    ax.set_ylabel("implementation shortfall (bps, + = cost)")
    ax.set_title(f"Learning curve: {title} (training episodes)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
