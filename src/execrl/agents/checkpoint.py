"""The checkpoint folder every ``execrl train`` writes, whatever the algorithm.

    DIR/config.json          algorithm, environment, order, seed, steps, hyper-parameters,
                             wall time, policy hash, execrl version
    DIR/policy.json|.npz     the exported numpy policy (what ``evaluate`` runs)
    DIR/policy_hash          sha256 of the exported decision function
    DIR/features.json        the feature schema: names, definitions, training domain, and
                             the frozen online normaliser (spec + statistics) if trained
                             with ``--normalise online`` (policy.json carries the same)
    DIR/learning_curve.csv   env steps, wall seconds, mean return and IS of recent episodes
    DIR/learning_curve.png
    DIR/native/…             the algorithm's own weights (SB3 zip, Q table, d3rlpy model)

The folder is written under a temporary name beside DIR and renamed into place at the end,
so a failed or interrupted run leaves no half-written checkpoint. DIR is replaced only when
it is empty or holds an execrl checkpoint and nothing else (``check_checkpoint_out``, run
before training starts and again before the swap); anything else needs ``force``, and the
current folder or one above it is never replaced. The previous checkpoint is renamed aside
before the new one is renamed in and deleted only after, so at every moment DIR holds the
old or the new checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from execrl import __version__
from execrl.agents.export import NumpyPolicy
from execrl.domain import ConfigError, ExecRLError, ParentOrder
from execrl.domain.outputs import check_output_folder, staged_folder
from execrl.env.core import BatchedExecution
from execrl.env.factory import EnvConfig
from execrl.env.spaces import resolve_action_set
from execrl.executor.loop import Executor
from execrl.market.features import FeatureSchema
from execrl.market.observations import definition
from execrl.sim.almgren_chriss import ACMarketConfig


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
        "normalise": config.normalise,
    }


#: what a checkpoint folder holds (module docstring): ``train --out`` replaces a folder
#: with these entries only
CHECKPOINT_ENTRIES = frozenset(
    {"config.json", "policy.json", "policy.npz", "policy_hash", "learning_curve.csv",
     "learning_curve.png", "native", "features.json"}
)


def is_checkpoint(folder: Path) -> bool:
    """An execrl checkpoint: a config.json naming algo, policy_hash and execrl_version, and a
    policy.json."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(config, dict)
        and {"algo", "policy_hash", "execrl_version"} <= set(config)
        and (folder / "policy.json").is_file()
    )


def check_checkpoint_out(out: Path, *, force: bool = False) -> None:
    """Refuse an ``--out`` that training could not write or must not replace, before any
    training starts (``execrl.domain.outputs.check_output_folder``): the current folder or one
    above it (even with ``force``), an existing file, a path under a file, a folder that
    cannot be written, and (without ``force``) a folder holding anything but an execrl
    checkpoint."""
    out = Path(out)

    def owned(entry: Path) -> bool:
        return entry.name in CHECKPOINT_ENTRIES and is_checkpoint(entry.parent)

    check_output_folder(out, "--out", owned, "an execrl checkpoint", force=force)


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
    force: bool = False,
) -> dict[str, Any]:
    out = Path(out)
    check_checkpoint_out(out, force=force)
    with staged_folder(out) as tmp:  # swapped in whole at the end, or not at all
        digest = output.policy.save(tmp)
        (tmp / "policy_hash").write_text(digest + "\n")
        feature_schema(output.policy, env_config, order, seed).save(tmp / FEATURES_JSON)
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
        check_checkpoint_out(out, force=force)  # the folder may have changed while training
    return config


FEATURES_JSON = "features.json"
#: orders the trained policy runs, on its training market, to record its training domain
DOMAIN_ORDERS = 256


def greedy_rollout(
    policy: NumpyPolicy,
    config: EnvConfig,
    order: ParentOrder,
    n_orders: int,
    seed: int,
    on_obs: Callable[[np.ndarray], None] | None = None,
    on_act: Callable[[np.ndarray], None] | None = None,
) -> BatchedExecution:
    """Run ``policy`` (masked where its actions are discrete) over ``n_orders`` orders of
    ``config``'s market, reward and action set, order i on path (seed, i); ``on_obs`` sees the
    observations of the orders still running before each decision and ``on_act`` their
    actions. The one loop (``execrl.executor.loop.Executor``), for what training itself
    measures; returns the finished core."""
    executor = Executor(policy, config.market, reward=config.reward, actions=config.actions)

    def watch_actions(core: BatchedExecution) -> list[Any]:
        return [] if on_act is None else [_ActionWatcher(core, on_act)]

    run = executor.run(order, n_orders, seed, on_obs=on_obs, make_observers=watch_actions)
    return run.extras["core"]


class _ActionWatcher:
    """Hands the actions of the orders still running to ``on_act`` before each step."""

    def __init__(self, core: BatchedExecution, on_act: Callable[[np.ndarray], None]):
        self.core, self.on_act = core, on_act

    def before(self, actions: np.ndarray, obs: np.ndarray | None = None) -> None:
        self.on_act(np.asarray(actions)[~self.core.done])

    def after(self) -> None:
        pass


def feature_schema(
    policy: NumpyPolicy, env_config: EnvConfig, order: ParentOrder, seed: int
) -> FeatureSchema:
    """The features ``policy`` was trained on: names, their definitions now, and the domain
    (per feature min / max, mean and std) of the observations it meets running
    ``DOMAIN_ORDERS`` orders of its training market and order (seed ``seed``), with the
    histogram of the greedy actions it takes there (discrete action sets; the watchdog's
    reference distribution for drift)."""
    width = len(policy.observations)
    lo, hi = np.full(width, np.inf), np.full(width, -np.inf)
    moments = _Moments(width)

    def seen(obs: np.ndarray) -> None:
        if obs.size:
            np.minimum(lo, obs.min(axis=0), out=lo)
            np.maximum(hi, obs.max(axis=0), out=hi)
            moments.add(obs)

    config = EnvConfig(market=env_config.market, actions=policy.action_set,
                       reward=env_config.reward)
    counts: list[np.ndarray] = []
    n_actions = _discrete_actions(config)

    def acted(actions: np.ndarray) -> None:
        if n_actions and actions.ndim == 1 and actions.size:
            counts.append(np.bincount(actions.astype(np.int64), minlength=n_actions))

    greedy_rollout(policy, config, order, DOMAIN_ORDERS, seed, on_obs=seen,
                   on_act=acted if n_actions else None)
    histogram = np.sum(counts, axis=0) if counts else None
    if n_actions and histogram is None:
        histogram = np.zeros(n_actions, dtype=np.int64)
    mean, std = moments.mean_std()
    return FeatureSchema.build(
        policy.observations, domain_min=lo, domain_max=hi,
        definitions=[definition(name) for name in policy.observations],
        domain_mean=mean, domain_std=std, action_counts=histogram,
        normalisation=None if policy.normaliser is None else policy.normaliser.state(),
    )


def _discrete_actions(config: EnvConfig) -> int:
    """Actions of the flat discrete set ``config`` names (0 for a continuous one)."""
    return resolve_action_set(config.actions).n_actions


class _Moments:
    """Per-column mean and population variance of batches of rows, merged batch by batch
    (Chan et al.'s update: stable where the mean is large against the spread)."""

    def __init__(self, width: int):
        self.n = 0
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)

    def add(self, rows: np.ndarray) -> None:
        x = np.asarray(rows, dtype=np.float64)
        m = x.shape[0]
        mean = x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        total = self.n + m
        delta = mean - self.mean
        self.mean = self.mean + delta * (m / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * m / total)
        self.n = total

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n == 0:
            nan = np.full(self.mean.shape, np.nan)
            return nan, nan
        return self.mean, np.sqrt(self.m2 / self.n)


def training_mismatch(
    policy: NumpyPolicy, market: ACMarketConfig, order: ParentOrder
) -> str | None:
    """What differs between the market and order a loaded checkpoint was trained on
    (``policy.training``, its config.json) and those it is about to be evaluated on, as one
    line; None when nothing does (or the policy is not a loaded checkpoint).

    Markets are compared as given (preset plus ``--market``), except ``horizon`` (always the
    order's) and ``s0`` (the order's arrival price when both orders have one). Orders are
    compared on what shapes the execution problem: side, qty, arrival price, horizon and
    constraints (not their id, symbol or start time)."""
    trained = policy.training
    if not trained:
        return None
    where = policy.provenance.get("path", policy.name)
    env_config = trained.get("env_config")
    then_market = env_config.get("market") if isinstance(env_config, dict) else None
    try:
        then_order = ParentOrder.from_dict(trained.get("order"))
    except ExecRLError as exc:
        raise ConfigError(f"checkpoint {where}: config.json holds no valid order ({exc})") \
            from None
    if not isinstance(then_market, dict):
        raise ConfigError(f"checkpoint {where}: config.json holds no env_config.market object")
    then_parts: list[str] = []
    now_parts: list[str] = []
    skip = {"horizon"}
    if then_order.arrival_px is not None and order.arrival_px is not None:
        skip.add("s0")
    now_market = market.model_dump(mode="json")
    _differences(then_market, now_market, skip, then_parts, now_parts, "market")
    _differences(_problem(then_order), _problem(order), set(), then_parts, now_parts, "order")
    if not then_parts:
        return None
    limit = 6
    more = f" (and {len(then_parts) - limit} more)" if len(then_parts) > limit else ""
    return (
        f"checkpoint {where} was trained on {', '.join(then_parts[:limit])}, evaluating on "
        f"{', '.join(now_parts[:limit])}{more}"
    )


def _problem(order: ParentOrder) -> dict[str, Any]:
    """The fields of an order that change the execution problem, flat."""
    out: dict[str, Any] = {
        "side": order.side.value,
        "qty": order.qty,
        "arrival_px": order.arrival_px,
        "horizon_s": order.horizon,
    }
    for key, value in order.constraints.model_dump(mode="json").items():
        out[f"constraints.{key}"] = value
    return out


def _differences(
    then: dict[str, Any], now: dict[str, Any], skip: set[str],
    then_parts: list[str], now_parts: list[str], what: str,
) -> None:
    first = True
    for key in sorted(set(then) | set(now)):
        if key in skip or then.get(key) == now.get(key):
            continue
        prefix = f"{what} " if first else ""
        first = False
        then_parts.append(f"{prefix}{key}={_show(then.get(key))}")
        now_parts.append(f"{prefix}{key}={_show(now.get(key))}")


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


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
    if len(curve):  # an empty curve (a run shorter than one episode) has nothing to label
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
