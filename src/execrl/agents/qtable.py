"""Tabular Q-learning (seed 003): a discretised state, ε-greedy actions, experience replay.

The agent of seed 003 ("Reinforcement Learning for Optimal Execution Timing"), on execrl's
batched environments. What it does, and where it departs from the seed (and why):

State. Each observation feature the environment provides is cut into uniform buckets
(``StateDiscretiser``); the buckets of all features form one row of a dense Q table
(mixed-radix index, last feature fastest: exactly ``NumpyPolicy.state_index``). Rules:

    feature          config key (seed 003 [state])   range, uniform buckets
    remaining_ratio  remaining_buckets = 20 (seed: 5) [0, 1]
    elapsed_ratio    time_buckets = 10 (training: one  [0, 1]
                     per decision step unless set)
    spread           spread_buckets = 5               [0, 1]  (bps / 100: 0 … 100 bps)
    signal           imbalance_buckets = 5            [-2, 2] (stationary-std units)
    imbalance        imbalance_buckets                [-1, 1] (an order-book imbalance feature)
    hour_of_day      hour_buckets = 6                 [0, 24] (6 buckets: the seed's hour / 4)
    price_drift      drift_buckets = 1   (extension)  [-2, 2] (horizon-volatility units)
    volatility       volatility_buckets = 1 (ext.)    [0, 3]  (regime multiplier)

A feature with 1 bucket is observed but not part of the key (no edges). The seed's state key
has no price-drift or volatility dimension, but execrl's default observation set (seed004)
carries both, so they get rules of their own, off by default. ``hour_buckets`` applies only
to an ``hour_of_day`` feature; no execrl market provides one (the Almgren–Chriss market has
no clock time of day), so it is then simply not part of the key. A feature with no rule
(``last_volume_ratio``, ``expected_volume_ratio``) is refused by name.

Buckets are half-open ``[lo + i·w, lo + (i+1)·w)``, values below ``lo`` / above ``hi`` going to
the end buckets (``np.searchsorted(edges, x, side="right")``). Observations are float32, so
an edge is placed at ``min(e, float32(e))`` of its nominal value ``e``: a value that is
nominally on an edge (``k/N``, ``0.6``) lands in the upper bucket whether it arrives as float32
or float64. With N decision steps and ``time_buckets == N`` each step has its own bucket.
The seed's remaining buckets (0.1, 0.25, 0.5, 0.75) are not uniform; ours are.

Learning. Q starts at 0. Every ``update_frequency`` *transitions* (the batched environment
makes ``n_envs`` of them per batched step) one update batch of ``batch_size`` transitions is
drawn uniformly without replacement from the replay ring buffer (``capacity`` transitions)
and applied sequentially in sample order, as the seed does one experience at a time:

    Q(s, a) += α · (r + γ · max_{a' allowed in s'} Q(s', a') − Q(s, a))

with no bootstrap on terminal transitions (the seed has no terminal case: its ``done`` is
unused) and the maximum over the actions the next state's mask allows. Counting
transitions keeps the seed's replay ratio (batch_size / update_frequency = 3.2 updates per
transition) whatever ``n_envs`` is: with 256 environments that is 25.6 update batches per
batched step on average (the remainder carries over). The updates run in one compiled
kernel per batched step (numba). After each update batch, in training mode,
ε ← max(ε_min, ε·decay) (the seed decays after each ``update``).

Shaping (extension, ``q_learning.shaping = "twap"``, off by default): the table learns
from r + E[Φ(s')] − Φ(s) with Φ minus TWAP's expected cost from the state
(``execrl.agents.shaping``): the same optimum, but values that are nearly flat across a
bucket of the remaining quantity and targets without the OU signal's innovation. In the
OU-signal market it is the difference between worse than TWAP and 0.82 of the exact
optimum's gain (bench/README.md, "OU-signal market").

Modes (seed 003 §7). ``training``: ε starts at ``epsilon`` and decays; ``production``: ε fixed
at 0.05 (the seed's ``enable_production_mode``); ``evaluation``: greedy, ε = 0. In every
mode an exploratory action is drawn uniformly among the actions the mask allows, never
among all of them as the seed does: a masked action is cut to the hard limits in execrl
(and counted as a cut), and the greedy choice is masked too, so values learnt for masked
actions would never be used. Greedy ties go to the lowest action index (``NumpyPolicy``'s
argmax), so the exported policy decides exactly as the agent.

Configuration: seed 003's ``[rl_execution]`` TOML layout (``QLearningConfig.from_toml``) or
the same nested dict (``from_dict``: ``TrainRequest.hyperparams``, with or without the
``rl_execution`` root, so ``execrl train --config configs/rl_execution.toml`` works). The
seed keys that have no meaning here are refused by name with the reason: ``enabled``,
``[reward]`` (the reward is the environment's: ``EnvConfig.reward``) and ``[persistence]``
(the checkpoint folder is written once, at the end of training).

Defaults. Three of the seed's values are replaced, by measurement (bench/bench_defaults.py,
default AC market, seed004 actions, expected_cost reward, 1024 environments): 20 remaining
buckets instead of 5 (five cannot tell apart the inventories the schedule passes through),
α = 0.01 instead of 0.1 and γ = 1 instead of 0.99 (the cost is undiscounted over a fixed
horizon). The seed's values left the greedy policy 7.5 % above J* after 3M transitions;
these reach the best seed004 schedule (0.46 % above J*) within 0.5M. Seed 003's own values
are the named configuration ``seed003`` (``execrl train --config seed003``) and
``configs/rl_execution.toml``.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from numba import njit
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from execrl.agents.budget import check_budget, warn_if_short
from execrl.agents.checkpoint import CurveRecorder, TrainOutput
from execrl.agents.export import NumpyPolicy
from execrl.agents.shaping import make_potential, shaped
from execrl.domain import ConfigError
from execrl.domain.errors import describe_pydantic_error, warn_user
from execrl.env.factory import make_execution
from execrl.env.spaces import ActionSet, resolve_action_set, resolve_observation_set

if TYPE_CHECKING:
    from execrl.agents.train import TrainRequest

MODES = ("training", "production", "evaluation")
#: ε in production mode (seed 003 ``enable_production_mode``: 5 % exploration)
PRODUCTION_EPSILON = 0.05
#: Largest Q table accepted (states × actions), ~800 MB of float64.
MAX_TABLE_ENTRIES = 100_000_000
FORMAT = "execrl-qtable/1"
TABLE_FILE = "qtable.npz"
SPEC_FILE = "qtable.json"

Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Buckets = Annotated[int, Field(ge=1, le=1000)]


# -- configuration ------------------------------------------------------------------------------
class QLearningParams(BaseModel):
    """``[rl_execution.q_learning]``"""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    alpha: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 0.01
    """Learning rate (seed 003: 0.1)."""
    gamma: Unit = 1.0
    """Discount factor (seed 003: 0.99; the cost is undiscounted over a fixed horizon)."""
    shaping: Literal["none", "twap"] = "none"
    """Extension (not in seed 003): potential-based reward shaping (``execrl.agents.shaping``;
    the optimum is unchanged, the table holds Q − Φ). ``twap``: Φ = minus TWAP's expected
    cost from the state (Almgren–Chriss markets; the OU signal's drift included when
    observed), which flattens the values across a bucket of the remaining quantity and takes
    the next signal's noise out of the targets."""
    epsilon: Unit = 0.3
    """Initial exploration rate (training mode)."""
    epsilon_min: Unit = 0.05
    """Floor of the decayed exploration rate."""
    epsilon_decay: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 0.995
    """ε ← max(ε_min, ε·decay) after each update batch."""

    @model_validator(mode="after")
    def _floor_below_start(self) -> QLearningParams:
        if self.epsilon_min > self.epsilon:
            raise ValueError(
                f"q_learning.epsilon_min = {self.epsilon_min!r} must be <= "
                f"q_learning.epsilon = {self.epsilon!r}"
            )
        return self


class StateBuckets(BaseModel):
    """``[rl_execution.state]``: buckets per feature (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    remaining_buckets: Buckets = 20
    time_buckets: Buckets = 10
    spread_buckets: Buckets = 5
    imbalance_buckets: Buckets = 5
    hour_buckets: Annotated[int, Field(ge=1, le=24)] = 6
    drift_buckets: Buckets = 1
    """Extension (not in seed 003): price drift from arrival; 1 = not part of the key."""
    volatility_buckets: Buckets = 1
    """Extension (not in seed 003): volatility regime; 1 = not part of the key."""


class ReplayParams(BaseModel):
    """``[rl_execution.replay_buffer]``"""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    capacity: Annotated[int, Field(ge=1, le=100_000_000)] = 10_000
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 32
    update_frequency: Annotated[int, Field(ge=1)] = 10
    """One update batch every this many transitions (not batched steps)."""

    def update_batches_per_batched_step(self, n_envs: int) -> float:
        """Average update batches per step of ``n_envs`` environments (the remainder of
        ``n_envs / update_frequency`` carries over to the next step)."""
        return n_envs / self.update_frequency

    @model_validator(mode="after")
    def _batch_fits(self) -> ReplayParams:
        if self.batch_size > self.capacity:
            raise ValueError(
                f"replay_buffer.batch_size = {self.batch_size!r} must be <= "
                f"replay_buffer.capacity = {self.capacity!r}"
            )
        return self


#: seed 003 keys that mean nothing here, and why
_NOT_APPLICABLE = {
    "enabled": "the tabular agent is chosen with `execrl train --algo qtable`, not switched on "
    "by a flag",
    "reward": "the reward is the environment's (EnvConfig.reward / `--reward is_bps|"
    "arrival_vwap|risk_adjusted`); seed 003's fill/slippage/time/impact weights have no "
    "counterpart in it",
    "persistence": "the checkpoint folder is `execrl train --out`, written once when training "
    "ends; there is no periodic save or model_path",
}


class QLearningConfig(BaseModel):
    """Seed 003's ``[rl_execution]`` table: mode, q_learning, state, replay_buffer."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    mode: Literal["training", "production", "evaluation"] = "training"
    q_learning: QLearningParams = Field(default_factory=QLearningParams)
    state: StateBuckets = Field(default_factory=StateBuckets)
    replay_buffer: ReplayParams = Field(default_factory=ReplayParams)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> QLearningConfig:
        """The nested layout of the TOML file, with or without its ``rl_execution`` root:
        ``{"mode": …, "q_learning": {"alpha": …}, "state": {…}, "replay_buffer": {…}}``.
        Missing keys take the seed's defaults; unknown keys are refused by name."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"qtable config must be a table / dict, got {type(data).__name__}")
        table: Any = data
        if "rl_execution" in data:
            extra = sorted(set(data) - {"rl_execution"})
            if extra:
                raise ConfigError(
                    f"qtable config key {extra[0]!r} is unknown: everything goes under "
                    f"[rl_execution]"
                )
            table = data["rl_execution"]
            if not isinstance(table, Mapping):
                raise ConfigError("qtable config 'rl_execution' must be a table")
        for key, why in _NOT_APPLICABLE.items():
            if key in table:
                raise ConfigError(f"qtable config key 'rl_execution.{key}' does not apply: {why}")
        try:
            return cls.model_validate(dict(table))
        except ValidationError as exc:
            raise ConfigError(describe_pydantic_error("qtable config", exc)) from None

    @classmethod
    def from_toml(cls, path: str | Path) -> QLearningConfig:
        """Read seed 003's ``config/rl_execution.toml`` layout (``[rl_execution]`` root)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read qtable config {str(path)!r}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"qtable config {str(path)!r} is not valid TOML: {exc}") from None
        if "rl_execution" not in data:
            raise ConfigError(f"qtable config {str(path)!r} has no [rl_execution] table")
        return cls.from_dict(data)


# -- discretisation -----------------------------------------------------------------------------
#: feature -> (config key in [state], low, high) of its uniform buckets
BUCKET_RULES: dict[str, tuple[str, float, float]] = {
    "remaining_ratio": ("remaining_buckets", 0.0, 1.0),
    "elapsed_ratio": ("time_buckets", 0.0, 1.0),
    "spread": ("spread_buckets", 0.0, 1.0),
    "signal": ("imbalance_buckets", -2.0, 2.0),
    "imbalance": ("imbalance_buckets", -1.0, 1.0),
    "hour_of_day": ("hour_buckets", 0.0, 24.0),
    "price_drift": ("drift_buckets", -2.0, 2.0),
    "volatility": ("volatility_buckets", 0.0, 3.0),
}


def uniform_edges(n_buckets: int, low: float, high: float) -> NDArray[np.float64]:
    """The ``n_buckets - 1`` inner edges of ``n_buckets`` equal buckets of [low, high], each at
    ``min(e, float32(e))`` of its nominal value ``e``, so a value nominally on an edge falls in
    the upper bucket (``side="right"``) as float64 and as float32 alike."""
    nominal = low + (high - low) * np.arange(1, n_buckets, dtype=np.float64) / n_buckets
    return np.minimum(nominal, nominal.astype(np.float32).astype(np.float64))


class StateDiscretiser:
    """Observation features -> one Q-table row (mixed radix, last feature fastest)."""

    def __init__(self, observations: tuple[str, ...] | list[str], state: StateBuckets):
        self.observations = tuple(observations)
        self.buckets: list[int] = []
        self.bin_edges: list[NDArray[np.float64]] = []
        for name in self.observations:
            if name not in BUCKET_RULES:
                raise ConfigError(
                    f"qtable: observation feature {name!r} has no bucket rule; the tabular "
                    f"agent discretises {', '.join(BUCKET_RULES)} (choose an observation set "
                    f"without {name!r}, e.g. seed004)"
                )
            key, low, high = BUCKET_RULES[name]
            n = int(getattr(state, key))
            self.buckets.append(n)
            self.bin_edges.append(uniform_edges(n, low, high))
        self.n_states = math.prod(self.buckets) if self.buckets else 1
        sizes = [len(e) + 1 for e in self.bin_edges]
        # NumpyPolicy's strides, computed the same way
        self.strides = np.cumprod([1, *sizes[:0:-1]])[::-1].astype(np.int64)

    def buckets_of(self, observations: NDArray) -> NDArray[np.int64]:
        """(n, n_features) bucket of each feature."""
        x = np.asarray(observations, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        self._check_width(x)
        out = np.empty(x.shape, dtype=np.int64)
        for j, edges in enumerate(self.bin_edges):
            out[:, j] = np.searchsorted(edges, x[:, j], side="right")
        return out

    def index(self, observations: NDArray) -> NDArray[np.int64]:
        """Q-table row of each observation (n,): ``NumpyPolicy.state_index``'s arithmetic."""
        x = np.asarray(observations, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        self._check_width(x)
        idx = np.zeros(x.shape[0], dtype=np.int64)
        for j, edges in enumerate(self.bin_edges):
            if len(edges):
                idx += np.searchsorted(edges, x[:, j], side="right") * self.strides[j]
        return idx

    def _check_width(self, x: NDArray) -> None:
        if x.ndim != 2 or x.shape[1] != len(self.observations):
            raise ValueError(
                f"observations of shape {x.shape} do not match the {len(self.observations)} "
                f"features {', '.join(self.observations)}"
            )

    def spec(self) -> dict[str, Any]:
        return {
            "observations": list(self.observations),
            "buckets": list(self.buckets),
            "ranges": [list(BUCKET_RULES[n][1:]) for n in self.observations],
        }


# -- the sequential update --------------------------------------------------------------------
@njit(cache=True)
def _update_one(
    q: NDArray[np.float64],
    s: int,
    a: int,
    r: float,
    s2: int,
    done: bool,
    next_mask: NDArray[np.bool_],
    alpha: float,
    gamma: float,
) -> None:
    target = r
    if not done:
        best = -np.inf
        for b in range(q.shape[1]):
            if next_mask[b] and q[s2, b] > best:
                best = q[s2, b]
        if best > -np.inf:  # no allowed action: no bootstrap (the seed's unwrap_or(0.0))
            target += gamma * best
    q[s, a] += alpha * (target - q[s, a])


@njit(cache=True)
def _apply_sequential(
    q: NDArray[np.float64],
    states: NDArray[np.int64],
    actions: NDArray[np.int64],
    rewards: NDArray[np.float64],
    next_states: NDArray[np.int64],
    dones: NDArray[np.bool_],
    next_masks: NDArray[np.bool_],
    alpha: float,
    gamma: float,
) -> None:
    for i in range(states.shape[0]):
        _update_one(
            q,
            states[i],
            actions[i],
            rewards[i],
            next_states[i],
            dones[i],
            next_masks[i],
            alpha,
            gamma,
        )


@njit(cache=True)
def _replay_updates(
    q: NDArray[np.float64],
    counts: NDArray[np.int64],
    states: NDArray[np.int64],
    actions: NDArray[np.int64],
    rewards: NDArray[np.float64],
    next_states: NDArray[np.int64],
    dones: NDArray[np.bool_],
    next_masks: NDArray[np.bool_],
    size: int,
    n_batches: int,
    batch_size: int,
    rng: np.random.Generator,
    alpha: float,
    gamma: float,
) -> None:
    """``n_batches`` update batches: each draws min(batch_size, size) distinct buffer slots
    uniformly (sequential draws, repeats redrawn: a uniformly random ordered sample) and
    applies them one after the other in that order."""
    k = min(batch_size, size)
    picked = np.empty(k, dtype=np.int64)
    taken = np.zeros(size, dtype=np.bool_)
    for _ in range(n_batches):
        for i in range(k):
            j = rng.integers(0, size)
            while taken[j]:
                j = rng.integers(0, size)
            taken[j] = True
            picked[i] = j
        for i in range(k):
            j = picked[i]
            taken[j] = False
            s = states[j]
            a = actions[j]
            _update_one(q, s, a, rewards[j], next_states[j], dones[j], next_masks[j], alpha, gamma)
            counts[s, a] += 1


def q_update_sequential(
    q: NDArray[np.float64],
    states: NDArray,
    actions: NDArray,
    rewards: NDArray,
    next_states: NDArray,
    dones: NDArray,
    next_masks: NDArray | None,
    alpha: float,
    gamma: float,
) -> NDArray[np.float64]:
    """Apply the transitions to ``q`` (in place) one after the other, in the order given;
    ``next_masks=None``: every next action allowed. Returns ``q``."""
    n = len(states)
    if next_masks is None:
        next_masks = np.ones((n, q.shape[1]), dtype=bool)
    _apply_sequential(
        q,
        np.ascontiguousarray(states, dtype=np.int64),
        np.ascontiguousarray(actions, dtype=np.int64),
        np.ascontiguousarray(rewards, dtype=np.float64),
        np.ascontiguousarray(next_states, dtype=np.int64),
        np.ascontiguousarray(dones, dtype=np.bool_),
        np.ascontiguousarray(next_masks, dtype=np.bool_),
        float(alpha),
        float(gamma),
    )
    return q


# -- replay -------------------------------------------------------------------------------------
class ReplayBuffer:
    """A ring buffer of transitions as numpy arrays; the oldest go first when full."""

    def __init__(self, capacity: int, n_actions: int):
        self.capacity = int(capacity)
        self.states = np.zeros(capacity, dtype=np.int64)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float64)
        self.next_states = np.zeros(capacity, dtype=np.int64)
        self.dones = np.zeros(capacity, dtype=np.bool_)
        self.next_masks = np.ones((capacity, n_actions), dtype=np.bool_)
        self.size = 0
        self._ptr = 0

    def add(
        self,
        states: NDArray,
        actions: NDArray,
        rewards: NDArray,
        next_states: NDArray,
        dones: NDArray,
        next_masks: NDArray,
    ) -> None:
        n = len(states)
        keep = slice(max(0, n - self.capacity), n)  # more than fit: the newest
        m = n - keep.start
        slots = (self._ptr + np.arange(m)) % self.capacity
        self.states[slots] = np.asarray(states)[keep]
        self.actions[slots] = np.asarray(actions)[keep]
        self.rewards[slots] = np.asarray(rewards)[keep]
        self.next_states[slots] = np.asarray(next_states)[keep]
        self.dones[slots] = np.asarray(dones)[keep]
        self.next_masks[slots] = np.asarray(next_masks)[keep]
        self._ptr = int((self._ptr + m) % self.capacity)
        self.size = min(self.capacity, self.size + m)


# -- the agent ----------------------------------------------------------------------------------
class QTableAgent:
    """Seed 003's ``QTableAgent`` over a batch: ``act(obs, masks)`` for n environments at once.

    Implements the ``Policy`` protocol (``name``, ``observations``, ``action_set``, ``act``).
    """

    def __init__(
        self,
        config: QLearningConfig,
        observations: tuple[str, ...] | list[str],
        action_set: str | ActionSet,
        rng: np.random.Generator | int | None = None,
        name: str = "qtable",
    ):
        actions = resolve_action_set(action_set)
        if not actions.is_discrete:
            raise ConfigError(
                f"qtable needs a discrete action set; {actions.name!r} is continuous "
                f"(use --actions seed003 or seed004)"
            )
        self.name = name
        self.config = config
        self.discretiser = StateDiscretiser(tuple(observations), config.state)
        self.observations = self.discretiser.observations
        self.action_set = actions.name
        self.n_actions = actions.n_actions
        entries = self.discretiser.n_states * self.n_actions
        if entries > MAX_TABLE_ENTRIES:
            raise ConfigError(
                f"qtable config [state] gives {self.discretiser.n_states:,} states × "
                f"{self.n_actions} actions = {entries:,} entries, more than {MAX_TABLE_ENTRIES:,}"
                f"; use fewer buckets"
            )
        self.q_table = np.zeros((self.discretiser.n_states, self.n_actions), dtype=np.float64)
        self.update_counts = np.zeros(self.q_table.shape, dtype=np.int64)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        rb = config.replay_buffer
        self.buffer = ReplayBuffer(rb.capacity, self.n_actions)
        self.update_batches = 0
        self.transitions = 0
        self._pending = 0  # transitions since the last update batch
        self.mode = config.mode
        self.epsilon = self._mode_epsilon(config.mode)

    # -- modes ------------------------------------------------------------------------------
    def _mode_epsilon(self, mode: str) -> float:
        if mode == "training":
            return self.config.q_learning.epsilon
        if mode == "production":
            return PRODUCTION_EPSILON
        if mode == "evaluation":
            return 0.0
        raise ConfigError(f"qtable mode {mode!r} is unknown; choose from {', '.join(MODES)}")

    def set_mode(self, mode: str) -> None:
        """Seed 003 §7: training (ε = ``epsilon``, decaying), production (ε = 0.05),
        evaluation (greedy)."""
        self.epsilon = self._mode_epsilon(mode)
        self.mode = mode

    # -- decisions --------------------------------------------------------------------------
    def state_index(self, observations: NDArray) -> NDArray[np.int64]:
        return self.discretiser.index(observations)

    def _masks(self, masks: NDArray | None, n: int) -> NDArray[np.bool_]:
        if masks is None:
            return np.ones((n, self.n_actions), dtype=bool)
        m = np.asarray(masks, dtype=bool)
        if m.shape != (n, self.n_actions):
            raise ValueError(f"masks of shape {m.shape} do not match ({n}, {self.n_actions})")
        return m

    def greedy_states(self, states: NDArray[np.int64], masks: NDArray | None = None) -> NDArray:
        """Masked argmax of Q (ties: lowest action), as ``NumpyPolicy.act`` computes it."""
        scores = self.q_table[states]
        if masks is not None:
            scores = np.where(self._masks(masks, len(states)), scores, -np.inf)
        return scores.argmax(axis=1)

    def act_states(self, states: NDArray[np.int64], masks: NDArray | None = None) -> NDArray:
        """ε-greedy for the mode's ε; an exploratory action is uniform among allowed ones."""
        n = len(states)
        actions = self.greedy_states(states, masks)
        if self.mode == "evaluation" or self.epsilon <= 0.0:
            return actions
        explore = self.rng.random(n) < self.epsilon
        if explore.any():
            m = self._masks(masks, n)[explore]
            keys = self.rng.random(m.shape)
            keys[~m] = -1.0  # masked actions are never drawn (an all-masked row: action 0)
            actions[explore] = keys.argmax(axis=1)
        return actions

    def act(self, observations: NDArray, masks: NDArray | None = None) -> NDArray:
        return self.act_states(self.state_index(observations), masks)

    def greedy(self, observations: NDArray, masks: NDArray | None = None) -> NDArray:
        return self.greedy_states(self.state_index(observations), masks)

    # -- learning ---------------------------------------------------------------------------
    def add_transitions(
        self,
        states: NDArray,
        actions: NDArray,
        rewards: NDArray,
        next_states: NDArray,
        dones: NDArray,
        next_masks: NDArray | None = None,
    ) -> int:
        """Store a batch of transitions (state indices) and run the update batches now due
        (one per ``update_frequency`` transitions). Returns how many ran."""
        n = len(states)
        if next_masks is None:
            next_masks = np.ones((n, self.n_actions), dtype=bool)
        self.buffer.add(states, actions, rewards, next_states, dones, next_masks)
        self.transitions += n
        self._pending += n
        due, self._pending = divmod(self._pending, self.config.replay_buffer.update_frequency)
        self.learn(due)
        return due

    def observe(
        self,
        observations: NDArray,
        actions: NDArray,
        rewards: NDArray,
        next_observations: NDArray,
        dones: NDArray,
        next_masks: NDArray | None = None,
    ) -> int:
        """``add_transitions`` from raw observations."""
        return self.add_transitions(
            self.state_index(observations),
            actions,
            rewards,
            self.state_index(next_observations),
            dones,
            next_masks,
        )

    def learn(self, n_batches: int = 1) -> None:
        """Run ``n_batches`` update batches from the replay buffer (each followed, in
        training mode, by ε ← max(ε_min, ε·decay))."""
        if n_batches <= 0 or self.buffer.size == 0:
            return
        b = self.buffer
        ql = self.config.q_learning
        _replay_updates(
            self.q_table,
            self.update_counts,
            b.states,
            b.actions,
            b.rewards,
            b.next_states,
            b.dones,
            b.next_masks,
            b.size,
            int(n_batches),
            self.config.replay_buffer.batch_size,
            self.rng,
            ql.alpha,
            ql.gamma,
        )
        self.update_batches += n_batches
        if self.mode == "training":
            self.decay_epsilon(n_batches)

    def decay_epsilon(self, times: int = 1) -> None:
        """ε ← max(ε_min, ε·decay), ``times`` times."""
        ql = self.config.q_learning
        eps = self.epsilon
        for _ in range(int(times)):
            eps = max(ql.epsilon_min, eps * ql.epsilon_decay)
            if eps == ql.epsilon_min:
                break
        self.epsilon = eps

    # -- reporting --------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Seed 003's ``PolicyMetrics``: states visited, mean Q over them, greedy actions."""
        visited = self.update_counts.sum(axis=1) > 0
        greedy = self.q_table[visited].argmax(axis=1) if visited.any() else np.zeros(0, int)
        dist = np.bincount(greedy, minlength=self.n_actions)
        return {
            "n_states": int(self.discretiser.n_states),
            "states_visited": int(visited.sum()),
            "avg_q_visited": float(self.q_table[visited].mean()) if visited.any() else 0.0,
            "greedy_action_distribution": [int(c) for c in dist],
            "update_batches": int(self.update_batches),
            "transitions": int(self.transitions),
            "epsilon": float(self.epsilon),
        }

    # -- export and files -------------------------------------------------------------------
    def to_numpy_policy(self, name: str | None = None) -> NumpyPolicy:
        """The greedy decision function as a ``NumpyPolicy(head="qtable")``."""
        return NumpyPolicy(
            name=name or self.name,
            observations=self.observations,
            action_set=self.action_set,
            head="qtable",
            bin_edges=[e.copy() for e in self.discretiser.bin_edges],
            q_table=self.q_table.copy(),
            meta={"algo": "qtable", "buckets": list(self.discretiser.buckets)},
        )

    def save(self, folder: str | Path) -> None:
        """Write ``qtable.json`` (config, features, action set, mode, ε, counters) and
        ``qtable.npz`` (Q table, update counts, bin edges) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"q_table": self.q_table, "update_counts": self.update_counts}
        arrays.update({f"edges{j}": e for j, e in enumerate(self.discretiser.bin_edges)})
        np.savez(folder / TABLE_FILE, **arrays)
        spec = {
            "format": FORMAT,
            "name": self.name,
            "config": self.config.model_dump(mode="json"),
            "discretiser": self.discretiser.spec(),
            "action_set": self.action_set,
            "n_actions": self.n_actions,
            "mode": self.mode,
            "epsilon": self.epsilon,
            "update_batches": self.update_batches,
            "transitions": self.transitions,
        }
        (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2))

    @classmethod
    def load(cls, folder: str | Path, rng: np.random.Generator | int | None = None) -> QTableAgent:
        """The agent ``save`` wrote (the replay buffer is not saved: it starts empty)."""
        folder = Path(folder)
        spec_path, table_path = folder / SPEC_FILE, folder / TABLE_FILE
        try:
            spec = json.loads(spec_path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"qtable file {str(spec_path)!r} is missing") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"qtable file {str(spec_path)!r} cannot be read: {exc}") from None
        try:
            if not isinstance(spec, dict) or spec.get("format") != FORMAT:
                raise ConfigError(f"qtable file {str(spec_path)!r} is not a {FORMAT} file")
            config = QLearningConfig.from_dict(spec["config"])
            agent = cls(
                config,
                tuple(spec["discretiser"]["observations"]),
                spec["action_set"],
                rng=rng,
                name=spec["name"],
            )
            agent.set_mode(spec["mode"])
            agent.epsilon = float(spec["epsilon"])
            agent.update_batches = int(spec["update_batches"])
            agent.transitions = int(spec["transitions"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError) and str(spec_path) in str(exc):
                raise
            raise ConfigError(f"qtable file {str(spec_path)!r} is not valid: {exc}") from None
        try:
            with np.load(table_path) as data:
                arrays = {k: data[k] for k in data.files}
        except FileNotFoundError:
            raise ConfigError(f"qtable file {str(table_path)!r} is missing") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"qtable file {str(table_path)!r} cannot be read: {exc}") from None
        shape = agent.q_table.shape
        q = arrays.get("q_table")
        counts = arrays.get("update_counts")
        if q is None or q.shape != shape or counts is None or counts.shape != shape:
            raise ConfigError(
                f"qtable file {str(table_path)!r} does not hold a q_table and update_counts of "
                f"shape {shape} (as {str(spec_path)!r} describes)"
            )
        if not np.isfinite(q).all():
            raise ConfigError(f"qtable file {str(table_path)!r}: q_table has non-finite values")
        for j, edges in enumerate(agent.discretiser.bin_edges):
            saved = arrays.get(f"edges{j}")
            if saved is None or not np.array_equal(saved, edges):
                raise ConfigError(
                    f"qtable file {str(table_path)!r}: bin edges of feature "
                    f"{agent.observations[j]!r} do not match the saved configuration"
                )
        agent.q_table[...] = q
        agent.update_counts[...] = counts
        return agent


# -- execrl train --algo qtable -------------------------------------------------------------------
def one_time_bucket_per_step(config: QLearningConfig, n_steps: int) -> QLearningConfig:
    """``time_buckets`` = the market's decision steps unless the configuration sets it: the
    default 10 is one bucket per step of the default market only (seed 004's set-up has 20)."""
    if "time_buckets" in config.state.model_fields_set:
        return config
    state = config.state.model_copy(update={"time_buckets": int(n_steps)})
    return config.model_copy(update={"state": state})


def train(request: TrainRequest, on_progress: Callable[[int], None]) -> TrainOutput:
    """Train on ``make_execution(request.env_config, request.order, n_envs, autoreset=True)``
    for at least ``request.steps`` transitions (whole batched steps of ``n_envs``)."""
    config = QLearningConfig.from_dict(request.hyperparams)
    if config.mode == "evaluation":
        raise ConfigError(
            "qtable config 'mode' = 'evaluation' does not learn (greedy, no exploration); "
            "train with mode = 'training' (or 'production')"
        )
    action_set = resolve_action_set(request.env_config.actions)
    if not action_set.is_discrete:
        raise ConfigError(
            f"qtable needs a discrete action set; {action_set.name!r} is continuous "
            f"(use --actions seed003 or seed004)"
        )
    observations = resolve_observation_set(request.env_config.observations)
    config = one_time_bucket_per_step(config, request.episode_decisions)
    seed = int(request.seed)
    # a feature with no bucket rule is refused first, then a run that would not fit in memory
    n_states = StateDiscretiser(tuple(observations), config.state).n_states
    rb = config.replay_buffer
    check_budget([
        ("environments", f"--n-envs = {request.n_envs}", request.env_bytes()),
        ("Q table", "qtable config [state] buckets", 16 * n_states * action_set.n_actions),
        ("replay buffer", f"qtable config replay_buffer.capacity = {rb.capacity}",
         rb.capacity * (33 + action_set.n_actions)),
    ])
    agent_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    agent = QTableAgent(config, observations, action_set, rng=agent_rng)
    warn_if_short(request)
    n_envs = request.n_envs
    n_batched = -(-int(request.steps) // n_envs)
    if n_batched * n_envs < rb.update_frequency:
        warn_user(
            f"qtable runs its first update batch after replay_buffer.update_frequency = "
            f"{rb.update_frequency} transitions; --steps {request.steps} with --n-envs "
            f"{n_envs} makes {n_batched * n_envs}: the Q table stays all zeros"
        )
    potential = make_potential(config.q_learning.shaping, request.env_config.market,
                               request.order, tuple(observations))
    core = make_execution(request.env_config, request.order, n_envs=n_envs, autoreset=True)
    recorder = CurveRecorder(every=max(n_envs, int(request.steps) // 100), clock=time.perf_counter)

    obs = core.reset(seed=seed)
    states = agent.state_index(obs)
    masks = core.action_masks()
    done_steps = 0
    watch_every = request.watch_every if request.watch is not None else 0
    next_watch = watch_every
    for _ in range(n_batched):
        actions = agent.act_states(states, masks)
        prev_obs = obs
        obs, reward, terminated, truncated, info = core.step(actions)
        next_states = agent.state_index(obs)
        next_masks = core.action_masks()
        transition_next = next_states
        done = terminated | truncated
        if "done_ids" in info:
            ids = info["done_ids"]
            transition_next = next_states.copy()
            transition_next[ids] = agent.state_index(info["final_obs"])
        # a finished order's next observation does not matter to the shaping (Φ = 0 there)
        learnt = shaped(reward, potential, prev_obs, obs, done)
        # truncation never happens (episodes end at the horizon): terminal = no bootstrap
        agent.add_transitions(states, actions, learnt, transition_next, done, next_masks)
        done_steps += n_envs
        if "episode" in info:
            recorder.add(done_steps, info["episode"]["return"], info["episode"]["is_bps"])
        on_progress(done_steps)
        if watch_every > 0 and done_steps >= next_watch:
            request.watch(done_steps, agent.to_numpy_policy(name="qtable"))
            next_watch = (done_steps // watch_every + 1) * watch_every
        states, masks = next_states, next_masks

    return TrainOutput(
        policy=agent.to_numpy_policy(name="qtable"),
        curve=recorder.frame(),
        save_native=agent.save,
        extra={"qtable": agent.metrics()},
    )
