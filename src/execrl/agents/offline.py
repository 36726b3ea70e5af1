"""Offline agents from decision logs (seed 001 §4–5): behaviour cloning and conservative
Q-learning with d3rlpy (the ``offline`` extra), exported to a numpy policy.

``execrl train --algo bc|cql --data decisions.parquet`` learns from a decision log, the file
``execrl evaluate --log-decisions`` writes (columns: ``execrl.evaluate.decisions``); a desk's
own child-order logs can be brought to the same columns.

Data. Observations are the request's observation set (``--observations``), taken from the
log's feature columns and its ``next_<feature>`` columns; a missing column is refused by name.
Actions are indices into the request's discrete action set (a continuous one is refused):
each row's executed ``fraction`` (shares / remaining before the decision: the only action a
child-order log records) is mapped to the nearest fraction of the set, ties to the lower
index. Rows further than ``match_tolerance`` (bc 0.05, cql 0.02) from their action's
fraction are off, counted and reported (``config.json`` → ``offline_data.rows_off``): a
schedule the set cannot express, and the forced completion at the horizon (executed fraction
1.0, whatever was asked for). ``off_rows``: bc learns from them (``keep``); cql leaves out
(``drop``) the off rows that do not end their episode (``offline_data.rows_learnt``: the rows
it samples), since such a row credits its action with the outcome of another fraction (the
baselines' log labels vwap's 17 % and ac:5e-7's 20 % first child "15 %", and CQL then valued
15 % above 25 % at the first decision, which costs 17 bps); the rows that end an episode stay,
as their cost is the episode's last. With ``action_from = "requested"`` the log's
``requested_fraction`` (what the logging policy asked for, before whole shares, hard limits
and forced completion) is mapped instead. Rewards are the log's ``reward_<name>`` column for
the request's reward (``--reward``), or its ``reward`` column when ``reward_name`` says it is
that reward; terminals are ``done``.
Each row is one transition (observation, action, reward, next observation, terminal), the
next observation taken from the row's own ``next_`` columns, so a log cut before an episode
ends still gives its last transition (bootstrapped, not terminal). Episodes are the rows of
one (policy, order_idx), in step order; a repeated (policy, order_idx, step) is refused (two
logs concatenated without renaming their policies).

Learning. ``request.steps`` gradient steps; each draws ``batch_size`` transitions uniformly
with replacement from a ``numpy.random.Generator`` seeded with ``request.seed``, and passes
them to d3rlpy's ``update`` (no d3rlpy ``fit``: no log folder, no global-RNG sampling).
``d3rlpy.seed(request.seed)`` seeds the network initialisation (it seeds python's, numpy's
global and torch's RNGs). Torch runs on one CPU thread while training (restored after).
The same request and log give the same weights.

- ``bc``: d3rlpy ``DiscreteBC``, cross-entropy on the mapped actions plus d3rlpy's logit
  penalty ``beta``·mean(logits²) (0.5); the exported head is the logits.
- ``cql``: d3rlpy ``DiscreteCQL`` (Double-DQN Huber TD loss + α·(logsumexp Q − Q(s, a_data))).
  Seed 001 §5: α = 1.0 → ``alpha``; L2 weight 1e-4 → Adam ``weight_decay`` (adds 1e-4·θ to
  every gradient, biases included, i.e. the gradient of 5e-5·‖θ‖²); batch 256 and lr 2e-4 are
  seed 001's Dueling-DDQN values (the seed gives none for CQL; d3rlpy's 6.25e-5 is tuned for
  Atari). One critic (``n_critics = 1``): the exported network is that critic.
  Temperature τ (``temperature``, in reward units: bps for execrl's rewards), α in reward
  units too. d3rlpy's logsumexp and Huber threshold are fixed at 1, so d3rlpy learns on
  rewards × 1/τ (its ``MultiplyRewardScaler``) with α/τ: that loss is 1/τ² times CQL's loss
  in reward units with logsumexp temperature τ and Huber threshold τ (both are homogeneous),
  the same minimiser. Defaults measured on the baselines' log (``bench/bench_offline.py``,
  bench/README.md: 5/5 training seeds within 1 % of J* (0.59–0.80 %), against 3/5, two of
  them 66–77 % above, with τ = 1, γ = 0.995, syncs every 1000 steps and every row learnt):

  * τ = 100 bps, not 1. A risk-adjusted step reward carries up to ~120 bps of price-risk
    noise (the remaining shares marked to market), while the actions' values near the
    optimum differ by a few bps. At τ = 1 nearly every TD error is in Huber's linear part
    (a gradient of at most 1 a sample), where α = 1 weighs as much as the TD term; a failing
    seed (γ = 1, syncs every 100) ranked 10, 15 and 25 % first children within 1 bps (the
    exact costs differ by 17 and 35 bps) and traded 10 % a step. At τ = 100 the TD loss is
    squared (a mean fit) and α = 1 bps is a mild conservatism (d3rlpy's α = 1 on rewards /
    100, i.e. 100 bps, dominated the fit and failed too).
  * γ = 1: the order is one finite episode (10 decisions, time in the observation) whose
    cost is the undiscounted sum of the step rewards; a discount makes late costs look
    cheaper.
  * ``target_update_interval`` = 100 gradient steps: a 10-step episode needs ~10 target
    syncs for the terminal costs to reach the first decision; 1000 gave 5 in the default
    5,000 steps. (γ and the interval alone did not fix a failing seed; they were not
    measured apart under τ = 100.)
  * ``off_rows = "drop"`` with ``match_tolerance = 0.02`` (Data, above).
- Both: ReLU MLP ``hidden_units`` ([256, 256], d3rlpy's default encoder), no observation
  scaler (execrl's features are already O(1)).

Hyper-parameters (``TrainRequest.hyperparams``, ``--config`` JSON/TOML, flat keys):
``learning_rate``, ``batch_size``, ``hidden_units``, ``weight_decay``, ``action_from``,
``match_tolerance``, ``off_rows``, ``eval_every``, ``eval_orders``; ``bc`` only: ``beta``;
``cql`` only:
``alpha``, ``temperature``, ``gamma``, ``target_update_interval``. Unknown keys, and one
algorithm's keys given to the other, are refused by name.

Learning curve. Offline there are no training episodes, so every ``eval_every`` gradient
steps (default: steps / 10, at least 1) and at the last step the current greedy policy (the
exported numpy policy, masked argmax) executes ``eval_orders`` (200) orders of the request's
market and order on the simulator, on the same paths every time (seed ``request.seed``).
``learning_curve.csv`` columns: ``env_steps`` = gradient steps so far (offline there are no
environment steps; the column keeps the checkpoint format), ``wall_s``, ``episodes`` = the
orders evaluated, ``mean_return`` (under the request's reward) and ``mean_is_bps`` of those
orders, and the mean d3rlpy losses since the previous row (``loss`` and, for CQL,
``td_loss`` and ``conservative_loss``; for BC ``imitation_loss`` and
``regularization_loss``). ``eval_orders = 0`` skips the simulator (NaN return / IS).

Export. The d3rlpy network (encoder Linear-ReLU-…-Linear-ReLU, then a linear head) becomes a
``NumpyPolicy(head="argmax", activation="relu")``: its outputs are d3rlpy's logits / Q values
(cql: in reward units / ``temperature``) and its unmasked argmax is d3rlpy's ``predict`` (to
float32 rounding: the torch network runs in float32, numpy in float64, so only exact float32
ties could differ). With masks it takes the masked argmax, never choosing a masked action.
``save_native`` writes d3rlpy's ``model.d3`` (config and weights: ``d3rlpy.load_learnable``).
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from execrl.agents.budget import check_budget, mlp_bytes
from execrl.agents.checkpoint import TrainOutput, greedy_rollout
from execrl.agents.export import NumpyPolicy
from execrl.domain import ConfigError
from execrl.domain.errors import describe_pydantic_error, warn_user
from execrl.env.factory import EnvConfig
from execrl.env.spaces import ActionSet, resolve_action_set, resolve_observation_set

if TYPE_CHECKING:
    from execrl.agents.train import TrainRequest

ALGOS = ("bc", "cql")
NATIVE_FILE = "model.d3"
#: CPU threads torch uses while training (small MLPs: one thread is as fast, and leaves the
#: other core of a 2-core machine free).
TORCH_THREADS = 1

#: prefix of the next-observation columns (``execrl.evaluate.decisions``, the log's writer)
NEXT_PREFIX = "next_"
_BC_ONLY = ("beta",)
_CQL_ONLY = ("alpha", "temperature", "gamma", "target_update_interval")
_DEFAULT_LR = {"bc": 1e-3, "cql": 2e-4}
#: rows off their action by more than this are counted (bc) / left out of learning (cql)
_DEFAULT_TOLERANCE = {"bc": 0.05, "cql": 0.02}
_DEFAULT_OFF_ROWS = {"bc": "keep", "cql": "drop"}


# -- hyper-parameters ---------------------------------------------------------------------------
class OfflineParams(BaseModel):
    """Hyper-parameters of ``bc`` and ``cql`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    learning_rate: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    """Adam learning rate; default 1e-3 (bc), 2e-4 (cql)."""
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    hidden_units: Annotated[list[Annotated[int, Field(ge=1, le=65_536)]], Field(min_length=1)] = (
        Field(default_factory=lambda: [256, 256])
    )
    weight_decay: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 1e-4
    """L2 weight (Adam ``weight_decay``); seed 001 §5: 1e-4."""
    action_from: Literal["executed", "requested"] = "executed"
    """Log column mapped to actions: ``fraction`` (executed) or ``requested_fraction``."""
    match_tolerance: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = None
    """A row further than this from its action's fraction is off; default 0.05 (bc), 0.02
    (cql)."""
    off_rows: Literal["keep", "drop"] | None = None
    """Off rows that do not end their episode: learnt from (keep) or left out (drop);
    default keep (bc), drop (cql)."""
    eval_every: Annotated[int, Field(ge=1)] | None = None
    """Gradient steps between learning-curve rows; default steps / 10."""
    eval_orders: Annotated[int, Field(ge=0, le=1_000_000)] = 200
    """Orders the greedy policy executes on the simulator per curve row (0: none)."""
    beta: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.5
    """bc: d3rlpy's logit penalty weight."""
    alpha: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 1.0
    """cql: weight of the conservative term, in reward units (seed 001: 1.0)."""
    temperature: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 100.0
    """cql: logsumexp temperature and Huber threshold, in reward units (bps)."""
    gamma: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 1.0
    """cql: discount factor (1: one order is one finite episode)."""
    target_update_interval: Annotated[int, Field(ge=1)] = 100
    """cql: gradient steps between target-network syncs."""


def parse_params(algo: str, raw: Mapping[str, Any] | None) -> OfflineParams:
    """Validate ``raw`` for ``algo``: unknown keys and the other algorithm's keys are refused
    by name, bad values by field and value."""
    if algo not in ALGOS:
        raise ConfigError(f"offline algorithm {algo!r} is unknown; choose from {', '.join(ALGOS)}")
    raw = dict(raw or {})
    known = list(OfflineParams.model_fields)
    other = _CQL_ONLY if algo == "bc" else _BC_ONLY
    for key in raw:
        if key not in OfflineParams.model_fields:
            raise ConfigError(
                f"{algo} hyper-parameter {key!r} is unknown; known: {', '.join(known)}"
            )
        if key in other:
            owner = "cql" if algo == "bc" else "bc"
            raise ConfigError(f"{algo} hyper-parameter {key!r} applies to {owner} only")
    try:
        params = OfflineParams.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_pydantic_error(f"{algo} hyper-parameter", exc)) from None
    return params


def resolved_params(algo: str, params: OfflineParams) -> dict[str, Any]:
    """The hyper-parameters ``algo`` ran with, defaults filled in, the other's left out."""
    other = _CQL_ONLY if algo == "bc" else _BC_ONLY
    out = {k: v for k, v in params.model_dump(mode="json").items() if k not in other}
    out["learning_rate"] = params.learning_rate or _DEFAULT_LR[algo]
    out["match_tolerance"] = tolerance(algo, params)
    out["off_rows"] = params.off_rows or _DEFAULT_OFF_ROWS[algo]
    return out


def tolerance(algo: str, params: OfflineParams) -> float:
    """The ``match_tolerance`` ``algo`` runs with."""
    return _DEFAULT_TOLERANCE[algo] if params.match_tolerance is None else params.match_tolerance


# -- data -----------------------------------------------------------------------------------------
@dataclass
class OfflineData:
    """Transitions from a decision log, in (policy, order_idx, step) order."""

    observations: NDArray[np.float32]  # (n, d)
    actions: NDArray[np.int64]  # (n,)
    rewards: NDArray[np.float32]  # (n,)
    next_observations: NDArray[np.float32]  # (n, d)
    terminals: NDArray[np.float32]  # (n,) 1.0 where the episode ended
    next_actions: NDArray[np.int64]  # (n,) the episode's next action (0 after the last)
    episode: NDArray[np.int64]  # (n,) episode number
    off: NDArray[np.bool_]  # (n,) further than match_tolerance from its action's fraction
    summary: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def batch(self, idx: NDArray[np.intp]) -> Any:
        """A d3rlpy ``TransitionMiniBatch`` of rows ``idx``."""
        from d3rlpy.dataset import TransitionMiniBatch

        n = idx.shape[0]
        return TransitionMiniBatch(
            observations=self.observations[idx],
            actions=self.actions[idx, None].astype(np.float32),
            rewards=self.rewards[idx, None],
            next_observations=self.next_observations[idx],
            next_actions=self.next_actions[idx, None].astype(np.float32),
            terminals=self.terminals[idx, None],
            intervals=np.ones((n, 1), dtype=np.float32),
            transitions=[],
        )

    def to_mdp_dataset(self) -> Any:
        """The log as a d3rlpy ``MDPDataset`` (episodes split by (policy, order_idx)), for
        d3rlpy's own tools. A log cut mid-episode ends that episode as a timeout, whose last
        transition d3rlpy then drops (it has no stored next observation)."""
        from d3rlpy.constants import ActionSpace
        from d3rlpy.dataset import MDPDataset

        last = np.r_[self.episode[1:] != self.episode[:-1], True]
        terminals = self.terminals.copy()
        timeouts = (last & (terminals == 0.0)).astype(np.float32)
        return MDPDataset(
            observations=self.observations,
            actions=self.actions[:, None],
            rewards=self.rewards[:, None],
            terminals=terminals,
            timeouts=timeouts,
            action_space=ActionSpace.DISCRETE,
            action_size=int(self.summary.get("n_actions", int(self.actions.max()) + 1)),
        )


def nearest_actions(
    fractions: NDArray[np.float64], action_set: ActionSet
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Index of the nearest fraction of ``action_set`` for each fraction (ties: the lower
    index) and the distance to it."""
    grid = np.asarray(action_set.fractions, dtype=np.float64)
    dist = np.abs(np.asarray(fractions, dtype=np.float64)[:, None] - grid[None, :])
    idx = dist.argmin(axis=1)
    return idx.astype(np.int64), dist[np.arange(idx.size), idx]


def _read_columns(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise ConfigError(f"decision log {str(path)!r} does not exist")
    if path.is_dir():
        raise ConfigError(f"decision log {str(path)!r} is a folder, not a parquet file")
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"decision log {str(path)!r} is not a readable parquet file: {exc}") \
            from None


def load_decision_log(
    path: Path | str,
    observations: tuple[str, ...],
    action_set: ActionSet,
    reward: str,
    action_from: Literal["executed", "requested"] = "executed",
    match_tolerance: float = 0.05,
) -> OfflineData:
    """Read and check a decision log; map it to transitions (see the module docstring)."""
    path = Path(path)
    if not action_set.is_discrete:
        raise ConfigError(
            f"offline agents need a discrete action set; actions = {action_set.name!r} is "
            "continuous (use --actions seed004, seed003 or fine)"
        )
    columns = _read_columns(path)
    have = set(columns)
    action_col = "fraction" if action_from == "executed" else "requested_fraction"
    reward_col = f"reward_{reward}"
    use_named_reward = reward_col not in have and {"reward", "reward_name"} <= have
    needed = ["policy", "order_idx", "step", *observations, action_col,
              *([] if use_named_reward else [reward_col]), "done",
              *(NEXT_PREFIX + f for f in observations)]
    missing = [c for c in needed if c not in have]
    if missing:
        raise ConfigError(
            f"decision log {str(path)!r} lacks column(s) {', '.join(missing)} (needed for "
            f"observations {', '.join(observations)}, rewards {reward!r}; written by "
            "`execrl evaluate --log-decisions`)"
        )
    read = list(dict.fromkeys([*needed, *(["reward", "reward_name"] if use_named_reward else [])]))
    try:
        frame = pd.read_parquet(path, columns=read)
    except Exception as exc:  # pyarrow raises many kinds for damaged files
        raise ConfigError(f"decision log {str(path)!r} cannot be read: {exc}") from None
    if use_named_reward:
        names = sorted(set(frame["reward_name"].astype(str)))
        if names != [reward]:
            raise ConfigError(
                f"decision log {str(path)!r} lacks column {reward_col} and its 'reward' column "
                f"holds {', '.join(map(repr, names)) or 'no'} rewards, not {reward!r} (train with "
                f"--reward {names[0] if names else reward} or log under {reward!r})"
            )
        reward_col = "reward"
    if len(frame) == 0:
        raise ConfigError(f"decision log {str(path)!r} has no rows")

    if frame["policy"].isna().any():
        i = int(np.flatnonzero(frame["policy"].isna().to_numpy())[0])
        raise ConfigError(f"decision log {str(path)!r} column 'policy' is empty in row {i}")
    for col in ("order_idx", "step"):
        values = frame[col]
        whole = pd.api.types.is_integer_dtype(values.dtype)
        if not whole and pd.api.types.is_float_dtype(values.dtype):
            v = values.to_numpy(dtype=np.float64, na_value=np.nan)
            whole = bool(np.all(np.isfinite(v) & (v == np.round(v)) & (np.abs(v) < 2**53)))
        if not whole or bool(values.isna().any()):
            raise ConfigError(
                f"decision log {str(path)!r} column {col!r} must hold whole numbers with no "
                f"gaps (it holds {values.dtype})"
            )
        frame[col] = values.astype(np.int64)
    for col in [*observations, *(NEXT_PREFIX + c for c in observations), action_col,
                reward_col, "done"]:
        dtype = frame[col].dtype
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
            raise ConfigError(
                f"decision log {str(path)!r} column {col!r} holds {dtype}, not numbers"
            )

    frame = frame.sort_values(["policy", "order_idx", "step"], kind="stable", ignore_index=True)
    policy = frame["policy"].astype(str).to_numpy()
    order_idx = frame["order_idx"].to_numpy()
    step = frame["step"].to_numpy()
    new_episode = np.r_[True, (policy[1:] != policy[:-1]) | (order_idx[1:] != order_idx[:-1])]
    repeated = ~new_episode & (step == np.r_[-1, step[:-1]])
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        raise ConfigError(
            f"decision log {str(path)!r} repeats (policy, order_idx, step) = "
            f"({policy[i]!r}, {int(order_idx[i])}, {int(step[i])}): logs concatenated from "
            "several runs need distinct policy names"
        )

    def numeric(col: str, dtype: type) -> NDArray:
        values = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ConfigError(
                f"decision log {str(path)!r} column {col!r} has a non-finite value "
                f"{float(values[i])!r} (row of policy {policy[i]!r}, order {int(order_idx[i])}, "
                f"step {int(step[i])})"
            )
        return values.astype(dtype)

    obs = np.stack([numeric(c, np.float32) for c in observations], axis=1)
    next_obs = np.stack([numeric(NEXT_PREFIX + c, np.float32) for c in observations], axis=1)
    rewards = numeric(reward_col, np.float32)
    executed = numeric(action_col, np.float64)
    outside = (executed < 0.0) | (executed > 1.0)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ConfigError(
            f"decision log {str(path)!r} column {action_col!r} = {float(executed[i])!r} is not a "
            f"fraction in [0, 1] (policy {policy[i]!r}, order {int(order_idx[i])}, "
            f"step {int(step[i])})"
        )
    done = frame["done"].to_numpy()
    if done.dtype != bool:
        done = numeric("done", np.float64) != 0.0
    actions, dist = nearest_actions(executed, action_set)
    episode = np.cumsum(new_episode) - 1
    last_of_episode = np.r_[new_episode[1:], True]
    next_actions = np.where(last_of_episode | done, 0, np.r_[actions[1:], 0])
    off = dist > match_tolerance
    n_actions = action_set.n_actions
    summary = {
        "path": str(path),
        "rows": len(frame),
        "episodes": int(episode[-1] + 1),
        "policies": sorted(set(policy.tolist())),
        "observations": list(observations),
        "action_set": action_set.name,
        "n_actions": n_actions,
        "action_from": action_col,
        "reward_column": reward_col,
        "match_tolerance": match_tolerance,
        "rows_off": int(off.sum()),
        "max_distance": float(dist.max()),
        "action_counts": np.bincount(actions, minlength=n_actions).tolist(),
        "terminals": int(done.sum()),
    }
    return OfflineData(
        observations=np.ascontiguousarray(obs),
        actions=actions,
        rewards=rewards,
        next_observations=np.ascontiguousarray(next_obs),
        terminals=done.astype(np.float32),
        next_actions=next_actions.astype(np.int64),
        episode=episode.astype(np.int64),
        off=off,
        summary=summary,
    )


def learnt_rows(data: OfflineData, off_rows: Literal["keep", "drop"]) -> NDArray[np.intp]:
    """Rows the learner samples: all (keep), or those within ``match_tolerance`` of their
    action plus every row that ends its episode (drop): its cost is the episode's last, and
    at the horizon the remainder executes whatever was asked for."""
    if off_rows == "keep":
        return np.arange(len(data))
    return np.flatnonzero(~data.off | (data.terminals > 0.0))


# -- d3rlpy ---------------------------------------------------------------------------------------
_GYM_NOTICE = "Gym has been unmaintained"


def import_d3rlpy() -> Any:
    """``import d3rlpy`` (the ``offline`` extra), without the notice the old ``gym`` package it
    imports prints on stderr; anything else printed there is passed on."""
    if "d3rlpy" in sys.modules:
        return sys.modules["d3rlpy"]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            import d3rlpy
    except ImportError as exc:
        raise ConfigError(
            f"offline algorithms need d3rlpy ({exc.name or 'd3rlpy'} is not installed): "
            "pip install 'execrl[offline]'"
        ) from None
    finally:
        text = captured.getvalue()
        if text and _GYM_NOTICE in text:
            keep = [line for line in text.splitlines(keepends=True)
                    if not line.startswith(("Gym has been", "Please upgrade to Gymnasium",
                                            "Users of this version of Gym", "See the migration"))]
            text = "".join(keep)
        if text.strip():
            sys.stderr.write(text)
    return d3rlpy


def make_algo(algo: str, params: OfflineParams) -> Any:
    """The d3rlpy learner (not yet built) for ``algo`` with ``params``, on the CPU."""
    import_d3rlpy()
    from d3rlpy.algos import DiscreteBCConfig, DiscreteCQLConfig
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.models.q_functions import MeanQFunctionFactory
    from d3rlpy.optimizers import AdamFactory
    from d3rlpy.preprocessing import MultiplyRewardScaler

    encoder = VectorEncoderFactory(hidden_units=list(params.hidden_units), activation="relu")
    optim = AdamFactory(weight_decay=params.weight_decay)
    lr = params.learning_rate or _DEFAULT_LR[algo]
    if algo == "bc":
        config: Any = DiscreteBCConfig(
            batch_size=params.batch_size, learning_rate=lr, optim_factory=optim,
            encoder_factory=encoder, beta=params.beta,
        )
    else:
        config = DiscreteCQLConfig(
            batch_size=params.batch_size, learning_rate=lr, optim_factory=optim,
            encoder_factory=encoder, q_func_factory=MeanQFunctionFactory(),
            gamma=params.gamma, n_critics=1,
            target_update_interval=params.target_update_interval,
            # CQL at temperature τ in reward units = d3rlpy's (τ = 1) on rewards / τ, α / τ
            alpha=params.alpha / params.temperature,
            reward_scaler=MultiplyRewardScaler(1.0 / params.temperature),
        )
    return config.create(device=False)


def _network(learner: Any) -> tuple[list[Any], Any]:
    """The (encoder layers, head) of a built d3rlpy DiscreteBC / DiscreteCQL learner."""
    from d3rlpy.algos import DiscreteBC, DiscreteCQL

    impl = learner.impl
    if impl is None:
        raise ConfigError("cannot export a d3rlpy learner that was never built")
    if isinstance(learner, DiscreteBC):
        module = impl.modules.imitator
    elif isinstance(learner, DiscreteCQL):
        q_funcs = impl.modules.q_funcs
        if len(q_funcs) != 1:
            raise ConfigError(f"cannot export {len(q_funcs)} critics: n_critics must be 1")
        module = q_funcs[0]
    else:
        raise ConfigError(f"cannot export a {type(learner).__name__} learner")
    return list(module._encoder._layers), module._fc


def export_policy(
    learner: Any,
    name: str,
    observations: tuple[str, ...],
    action_set: ActionSet,
    meta: dict[str, Any] | None = None,
) -> NumpyPolicy:
    """The learner's network as ``NumpyPolicy(head="argmax")``: outputs = d3rlpy's logits (bc)
    or Q values (cql), argmax = d3rlpy's ``predict``."""
    from torch import nn

    layers, head = _network(learner)
    weights: list[NDArray[np.float64]] = []
    expect_linear = True
    for layer in [*layers, head]:
        if isinstance(layer, nn.Linear):
            if not expect_linear:
                raise ConfigError("cannot export: two linear layers with no ReLU between")
            w = layer.weight.detach().cpu().numpy().astype(np.float64).T.copy()
            b = (np.zeros(w.shape[1]) if layer.bias is None
                 else layer.bias.detach().cpu().numpy().astype(np.float64).copy())
            weights += [w, b]
            expect_linear = False
        elif type(layer) is nn.ReLU and not expect_linear:
            expect_linear = True
        else:
            raise ConfigError(f"cannot export layer {layer!r} to a numpy policy")
    if expect_linear:
        raise ConfigError("cannot export: the network must end with a linear layer")
    return NumpyPolicy(
        name=name,
        observations=observations,
        action_set=action_set.name,
        head="argmax",
        weights=weights,
        activation="relu",
        meta=dict(meta or {}),
    )


# -- learning curve -------------------------------------------------------------------------------
def evaluate_greedy(
    policy: NumpyPolicy, request: TrainRequest, action_set: ActionSet, n_orders: int, seed: int
) -> tuple[float, float]:
    """(mean return, mean IS in bps) of ``policy`` over ``n_orders`` orders of the request's
    market and order, masked argmax, order i on path (seed, i) (``greedy_rollout``), with the
    request's own ``ActionSet`` (which may be one not registered by name)."""
    config = EnvConfig(market=request.env_config.market, actions=action_set,
                       reward=request.env_config.reward)
    core = greedy_rollout(policy, config, request.order, n_orders, seed)
    records = core.episode_records(np.arange(n_orders))
    return float(np.mean(records["return"])), float(np.mean(records["is_bps"]))


# -- training -------------------------------------------------------------------------------------
def train(request: TrainRequest, on_progress: Callable[[int], None]) -> TrainOutput:
    """Learn ``request.algo`` (bc / cql) from ``request.data``; see the module docstring."""
    params = parse_params(request.algo, request.hyperparams)
    action_set = resolve_action_set(request.env_config.actions)
    observations = resolve_observation_set(request.env_config.observations)
    if not action_set.is_discrete:
        raise ConfigError(
            f"{request.algo} needs a discrete action set; actions = {action_set.name!r} is "
            "continuous (use --actions seed004, seed003 or fine)"
        )
    if request.data is None:
        raise ConfigError(
            f"--data is required for {request.algo}: a decision log parquet written by "
            "`execrl evaluate --log-decisions`"
        )
    sizes = [len(observations), *params.hidden_units, action_set.n_actions]
    check_budget([
        ("evaluation environments", f"{request.algo} hyper-parameter eval_orders = "
         f"{params.eval_orders}", request.env_bytes(params.eval_orders)),
        ("networks", f"{request.algo} hyper-parameters hidden_units = "
         f"{list(params.hidden_units)} and batch_size = {params.batch_size}",
         mlp_bytes(sizes, params.batch_size, copies=2 if request.algo == "cql" else 1)),
    ])
    data = load_decision_log(
        request.data, observations, action_set, request.env_config.reward,
        params.action_from, tolerance(request.algo, params),
    )
    learnt = learnt_rows(data, params.off_rows or _DEFAULT_OFF_ROWS[request.algo])
    data.summary["rows_learnt"] = int(learnt.size)
    if learnt.size == 0:
        raise ConfigError(
            f"decision log {str(request.data)!r}: every row is further than match_tolerance = "
            f"{tolerance(request.algo, params)} from the fractions of actions = "
            f"{action_set.name!r} (off_rows = 'keep' learns from them anyway)"
        )
    if request.steps * params.batch_size < learnt.size:
        passes = -(-learnt.size // params.batch_size)
        warn_user(
            f"--steps {request.steps:,} x batch_size {params.batch_size} samples fewer than the "
            f"log's {learnt.size:,} transitions (one pass takes {passes:,} gradient steps): the "
            "policy will have learnt little of the log"
        )
    d3rlpy = import_d3rlpy()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        return _train(request, on_progress, params, data, learnt, observations, action_set,
                      d3rlpy)
    finally:
        torch.set_num_threads(threads)


def _train(
    request: TrainRequest,
    on_progress: Callable[[int], None],
    params: OfflineParams,
    data: OfflineData,
    learnt: NDArray[np.intp],
    observations: tuple[str, ...],
    action_set: ActionSet,
    d3rlpy: Any,
) -> TrainOutput:
    import torch

    started = time.perf_counter()
    d3rlpy.seed(int(request.seed))
    learner = make_algo(request.algo, params)
    learner.create_impl((len(observations),), action_set.n_actions)
    rng = np.random.default_rng(request.seed)
    steps = int(request.steps)
    every = params.eval_every or max(1, steps // 10)
    progress_every = max(1, min(every, 100))
    meta = {"algo": request.algo, "offline_data": str(request.data)}
    losses: dict[str, list[float]] = {}
    rows: list[dict[str, float]] = []
    n = learnt.size
    for step in range(1, steps + 1):
        idx = learnt[rng.integers(0, n, size=params.batch_size)]
        for key, value in learner.update(data.batch(idx)).items():
            losses.setdefault(key, []).append(float(value))
        if step % every == 0 or step == steps:
            mean_return = mean_is = math.nan
            if params.eval_orders > 0:
                policy = export_policy(learner, request.algo, observations, action_set, meta)
                mean_return, mean_is = evaluate_greedy(
                    policy, request, action_set, params.eval_orders, int(request.seed)
                )
            rows.append(
                {
                    "env_steps": float(step),
                    "wall_s": time.perf_counter() - started,
                    "episodes": float(params.eval_orders),
                    "mean_return": mean_return,
                    "mean_is_bps": mean_is,
                    **{key: float(np.mean(v)) for key, v in losses.items()},
                }
            )
            losses = {}
        if step % progress_every == 0 or step == steps:
            on_progress(step)
    curve = pd.DataFrame(rows)
    policy = export_policy(learner, request.algo, observations, action_set, meta)

    def save_native(folder: Path) -> None:
        learner.save(str(folder / NATIVE_FILE))

    return TrainOutput(
        policy=policy,
        curve=curve,
        save_native=save_native,
        extra={
            "offline_data": data.summary,
            "resolved_hyperparams": resolved_params(request.algo, params),
            "curve_x": "gradient_steps",
            "library_versions": {"d3rlpy": d3rlpy.__version__, "torch": torch.__version__},
        },
    )
