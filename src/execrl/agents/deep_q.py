"""Deep Q-learning on the batched execution env: Dueling Double DQN and QR-DQN (with CVaR).

Seed 001 §4 asks for a *Dueling Double DQN* for the small discrete action grid and a
risk-aware *QR-DQN / CVaR* variant to tame the cost tail. Both stand on Stable-Baselines3 /
sb3-contrib base classes; this module writes only what those lack.

``--algo dqn`` (``DoubleDQN``, a ``stable_baselines3.DQN``):
- ``double`` (default True): the TD target is r + γ·Q_target(s', argmax_a Q_online(s', a))
  (van Hasselt et al. 2016): the online network picks the next action, the target network
  values it. With ``double=False`` it is SB3's r + γ·max_a Q_target(s', a). Everything else of
  SB3's ``train`` is kept (Huber loss, gradient-norm clipping, logging); only the target
  computation moved into ``DoubleDQN.td_target`` so that it can be checked on its own.
- ``dueling`` (default True): ``DuelingQNetwork``, a shared MLP trunk and two linear heads,
  Q = V + A − mean_a(A) (Wang et al. 2016), via ``DuelingDQNPolicy.make_q_net``. At export
  the heads fold into one linear layer (Q is linear in the trunk's last hidden layer).

``--algo qrdqn`` (``RiskQRDQN``, an ``sb3_contrib.QRDQN``):
- ``cvar_alpha`` (default 1.0 = the mean, plain QR-DQN): with ``cvar_alpha`` < 1 actions are
  ranked by the mean of the lowest ``ceil(cvar_alpha · n_quantiles)`` (at least one) of their
  sorted return quantiles: the CVaR of the return, i.e. the expected cost in the worst
  ``cvar_alpha`` share of outcomes (returns are minus costs). ``CVaRQuantileNetwork`` applies
  it to the greedy action (training's greedy part, ``predict``), the TD target bootstraps on
  the action that rule picks with the target network (with 1.0 exactly sb3-contrib's target),
  and the exported ``NumpyPolicy`` (head ``quantiles``) applies the same rule (same sort,
  same k). This is the usual risk-sensitive greedy policy (Dabney et al. 2018, IQN §3), not
  a time-consistent optimisation of the episode's CVaR.

Exploration (both): ε-greedy *per decision*: each environment's action is random with
probability ε, drawn with one vectorised call. (SB3 draws one coin per batched step and
makes the whole batch random with probability ε, looping in Python over the environments;
with 256 environments that is ~10 % all-random steps rather than 10 % random decisions.)

Defaults (seed 001 §5 "Dueling DDQN" where it gives one and it learns here, measured on the
default AC market with bench/bench_defaults.py; the same for QR-DQN so the two compare; seed
001's values are the named configuration ``seed001``):

    key                       default   note
    learning_rate             5e-4      seed 001: 2e-4 (measured: 5e-4 with replay_ratio 4 reaches
                                        within 1 % of J* in 300k steps, ~30 s; see below)
    lr_schedule               constant  ``linear``: from learning_rate to 0 over the run (the
                                        named configuration ``signal``)
    gamma                     1.0       seed 001: 0.995. The cost is undiscounted over a fixed
                                        horizon (elapsed time is observed); γ < 1 discounts the
                                        later steps' costs and biases the schedule
    batch_size                256       seed 001
    buffer_size               200_000   seed 001 (transitions)
    exploration_initial_eps   0.1       seed 001 (ε: 0.1 → 0.01)
    exploration_final_eps     0.01      seed 001
    exploration_fraction      0.2       share of training over which ε decays linearly
    target_update_interval    10_000    in transitions (env steps), SB3's unit. Seed 001's
                                        "target_sync = 2 s" is wall-clock on a live system and
                                        has no meaning in simulation; 10k transitions is ~40
                                        batched steps of 256 envs, ~160 gradient steps at the
                                        default replay ratio (a hard copy, tau = 1)
    tau                       1.0       hard target copy (< 1: Polyak averaging)
    learning_starts           10_000    transitions of uniformly random actions first
    replay_ratio              4.0       transitions sampled for learning per transition
                                        collected (SB3's defaults: batch 32 every 4 steps = 8;
                                        half of it halves the update cost; measured together
                                        with γ = 1 and lr 5e-4, not on its own)
    train_freq, gradient_steps  None    None: derived from replay_ratio for the request's
                                        n_envs. SB3 counts both per ``env.step`` call, which
                                        collects n_envs transitions: if replay_ratio·n_envs ≥
                                        batch_size, train every call with
                                        round(replay_ratio·n_envs / batch_size) gradient steps
                                        (256 envs: 4 steps per call), else one gradient step
                                        every round(batch_size / (replay_ratio·n_envs)) calls.
                                        Setting either explicitly uses SB3's meaning, the
                                        other then defaulting to 1.
    max_grad_norm             10.0      SB3's DQN default (also used for QR-DQN)
    net_arch                  [64, 64]  SB3's
    activation                "relu"    SB3's
    double, dueling           True      dqn only
    n_quantiles               32        qrdqn only. The quantile Huber loss costs
                                        n_quantiles² per sample and dominates a CPU update:
                                        300k steps at 256 envs took ~22 s for dqn, ~60 s for
                                        qrdqn at 32, ~125 s at 50 (sb3-contrib's 200: ~16×
                                        that); on 5 actions 32 learnt the same policy as 50
    cvar_alpha                1.0       qrdqn only, in (0, 1]

Unknown keys are refused by name (``ConfigError``); so is a continuous action set. Training
uses one torch thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch as th
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict, Field
from sb3_contrib import QRDQN
from sb3_contrib.common.utils import quantile_huber_loss
from sb3_contrib.qrdqn.policies import QRDQNPolicy, QuantileNetwork
from stable_baselines3 import DQN
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, ReplayBufferSamples
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnvWrapper
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn
from torch.nn import functional as F

from execrl.agents.budget import check_budget, mlp_bytes, warn_if_short
from execrl.agents.checkpoint import TrainOutput
from execrl.agents.export import NumpyPolicy
from execrl.agents.sb3_common import (
    activation_class,
    learn,
    linear_weights,
    make_recorder,
    make_train_env,
    mlp_weights,
    parse_hyperparams,
    set_torch_threads,
    shaped_env,
    training_callback,
    versions,
)
from execrl.domain import ConfigError
from execrl.domain.errors import warn_user
from execrl.env.spaces import resolve_action_set

if TYPE_CHECKING:
    from execrl.agents.train import TrainRequest
    from execrl.env.sb3 import ExecutionSB3VecEnv

PosFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


# -- hyper-parameters --------------------------------------------------------------------------
class _OffPolicyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    learning_rate: PosFloat = 5e-4
    lr_schedule: Literal["constant", "linear"] = "constant"
    """``linear``: the rate falls linearly from ``learning_rate`` to 0 over the run (SB3's
    progress_remaining), so that the last updates average the targets' noise out rather
    than follow it: the greedy policy is read from the final network."""
    gamma: Unit = 1.0
    batch_size: Annotated[int, Field(ge=1)] = 256
    buffer_size: Annotated[int, Field(ge=1)] = 200_000
    learning_starts: Annotated[int, Field(ge=0)] = 10_000
    replay_ratio: PosFloat = 4.0
    train_freq: Annotated[int, Field(ge=1)] | None = None
    gradient_steps: Annotated[int, Field(ge=0)] | None = None
    target_update_interval: Annotated[int, Field(ge=1)] = 10_000
    tau: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 1.0
    exploration_fraction: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 0.2
    exploration_initial_eps: Unit = 0.1
    exploration_final_eps: Unit = 0.01
    max_grad_norm: PosFloat = 10.0
    net_arch: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=8)] = [64, 64]
    activation: Literal["relu", "tanh"] = "relu"
    shaping: Literal["none", "twap"] = "none"
    """Extension: potential-based reward shaping (``execrl.agents.shaping``; the optimum is
    unchanged, the network learns Q − Φ). ``twap``: Φ = minus TWAP's expected cost from the
    state (Almgren–Chriss markets; the OU signal's drift included when observed)."""

    def schedule(self, n_envs: int) -> tuple[int, int]:
        """(train_freq, gradient_steps) in SB3's units (per ``env.step`` call of n_envs
        transitions): explicit values win, otherwise derived from ``replay_ratio``."""
        if self.train_freq is not None or self.gradient_steps is not None:
            return self.train_freq or 1, 1 if self.gradient_steps is None else self.gradient_steps
        per_call = self.replay_ratio * n_envs / self.batch_size  # gradient steps per call
        if per_call >= 1.0:
            return 1, max(1, round(per_call))
        return max(1, round(1.0 / per_call)), 1


class DQNParams(_OffPolicyParams):
    """Hyper-parameters of ``dqn`` (see the module docstring)."""

    double: bool = True
    dueling: bool = True


class QRDQNParams(_OffPolicyParams):
    """Hyper-parameters of ``qrdqn`` (see the module docstring)."""

    n_quantiles: Annotated[int, Field(ge=1, le=1000)] = 32
    cvar_alpha: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 1.0


# -- ε-greedy per decision ---------------------------------------------------------------------
class _PerDecisionEpsilon:
    """``predict`` with ε-greedy exploration per environment, vectorised (see the module
    docstring); deterministic predictions are the policy's greedy ones, unchanged."""

    exploration_rate: float
    action_space: spaces.Discrete
    policy: Any

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        action, state = self.policy.predict(observation, state, episode_start, deterministic)
        if deterministic or self.exploration_rate <= 0.0:
            return action, state
        action = np.asarray(action)
        rng = self.action_space.np_random
        explore = rng.random(action.shape) < self.exploration_rate
        if explore.any():
            random = rng.integers(int(self.action_space.n), size=action.shape)
            action = np.where(explore, random, action).astype(action.dtype, copy=False)
        return action, state


# -- Dueling Double DQN ------------------------------------------------------------------------
class DuelingQNetwork(QNetwork):
    """Shared trunk (``net_arch`` hidden layers, each followed by the activation), then a
    linear value head V(s) and a linear advantage head A(s, ·): Q = V + A − mean(A)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor,
            features_dim,
            net_arch,
            activation_fn,
            normalize_images,
        )
        del self.q_net  # SB3's plain head: replaced by the trunk and the two heads
        self.trunk = nn.Sequential(*create_mlp(features_dim, -1, self.net_arch, activation_fn))
        latent = self.net_arch[-1] if self.net_arch else features_dim
        self.value_head = nn.Linear(latent, 1)
        self.advantage_head = nn.Linear(latent, int(action_space.n))

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        h = self.trunk(self.extract_features(obs, self.features_extractor))
        advantage = self.advantage_head(h)
        return self.value_head(h) + advantage - advantage.mean(dim=1, keepdim=True)


class DuelingDQNPolicy(DQNPolicy):
    """``DQNPolicy`` whose online and target networks are ``DuelingQNetwork``s."""

    def make_q_net(self) -> QNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return DuelingQNetwork(**net_args).to(self.device)


class DoubleDQN(_PerDecisionEpsilon, DQN):
    """SB3's DQN with a Double-DQN target (``double=True``) and per-decision ε-greedy."""

    def __init__(self, *args: Any, double: bool = True, **kwargs: Any) -> None:
        self.double = double
        super().__init__(*args, **kwargs)

    def td_target(self, replay_data: ReplayBufferSamples, discounts: Any) -> th.Tensor:
        """(batch, 1) TD targets: r + (1 − done)·γ·Q_target(s', a*), with a* the online
        network's argmax (Double DQN) or the target network's (``double=False``, SB3's)."""
        with th.no_grad():
            next_q_target = self.q_net_target(replay_data.next_observations)
            if self.double:
                next_actions = self.q_net(replay_data.next_observations).argmax(dim=1, keepdim=True)
                next_q_values = th.gather(next_q_target, dim=1, index=next_actions)
            else:
                next_q_values, _ = next_q_target.max(dim=1)
                next_q_values = next_q_values.reshape(-1, 1)
            return replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        # SB3's DQN.train (stable-baselines3 2.x) with the target computed by ``td_target``.
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)

        losses = []
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            target_q_values = self.td_target(replay_data, discounts)

            current_q_values = self.q_net(replay_data.observations)
            current_q_values = th.gather(current_q_values, dim=1, index=replay_data.actions.long())

            loss = F.smooth_l1_loss(current_q_values, target_q_values)
            losses.append(loss.item())

            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))


# -- QR-DQN with CVaR action choice ------------------------------------------------------------
def cvar_count(cvar_alpha: float, n_quantiles: int) -> int:
    """How many of the lowest quantiles the CVaR averages: exactly ``NumpyPolicy``'s
    ``max(1, int(np.ceil(cvar_alpha * n_quantiles)))``."""
    return max(1, int(np.ceil(cvar_alpha * n_quantiles)))


def quantile_scores(quantiles: th.Tensor, cvar_alpha: float) -> th.Tensor:
    """Per-action scores from (batch, n_quantiles, n_actions) return quantiles: their mean
    (``cvar_alpha`` ≥ 1) or the mean of the lowest ``cvar_count`` after sorting (CVaR)."""
    if cvar_alpha >= 1.0:
        return quantiles.mean(dim=1)
    k = cvar_count(cvar_alpha, quantiles.shape[1])
    return th.sort(quantiles, dim=1).values[:, :k, :].mean(dim=1)


class CVaRQuantileNetwork(QuantileNetwork):
    """``QuantileNetwork`` whose greedy action maximises ``quantile_scores`` (CVaR_α)."""

    def __init__(self, *args: Any, cvar_alpha: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cvar_alpha = float(cvar_alpha)

    def scores(self, observation: PyTorchObs) -> th.Tensor:
        return quantile_scores(self(observation), self.cvar_alpha)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self.scores(observation).argmax(dim=1).reshape(-1)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "cvar_alpha": self.cvar_alpha}


class CVaRQRDQNPolicy(QRDQNPolicy):
    """``QRDQNPolicy`` with ``CVaRQuantileNetwork``s (``cvar_alpha`` = 1: sb3-contrib's)."""

    def __init__(self, *args: Any, cvar_alpha: float = 1.0, **kwargs: Any) -> None:
        self.cvar_alpha = float(cvar_alpha)  # read by make_quantile_net during __init__
        super().__init__(*args, **kwargs)

    def make_quantile_net(self) -> QuantileNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return CVaRQuantileNetwork(**net_args, cvar_alpha=self.cvar_alpha).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "cvar_alpha": self.cvar_alpha}


class RiskQRDQN(_PerDecisionEpsilon, QRDQN):
    """sb3-contrib's QR-DQN whose TD target bootstraps on the action the policy's own rule
    (mean or CVaR_α of the target network's quantiles) picks, with per-decision ε-greedy."""

    def td_target(self, replay_data: ReplayBufferSamples, discounts: Any) -> th.Tensor:
        """(batch, n_quantiles) target quantiles r + (1 − done)·γ·θ_target(s', a*)."""
        with th.no_grad():
            next_quantiles = self.quantile_net_target(replay_data.next_observations)
            cvar_alpha = getattr(self.policy, "cvar_alpha", 1.0)
            scores = quantile_scores(next_quantiles, cvar_alpha)  # (batch, n_actions)
            next_greedy = scores.argmax(dim=1).reshape(-1, 1, 1)
            next_greedy = next_greedy.expand(next_quantiles.shape[0], self.n_quantiles, 1)
            next_quantiles = next_quantiles.gather(dim=2, index=next_greedy).squeeze(dim=2)
            return replay_data.rewards + (1 - replay_data.dones) * discounts * next_quantiles

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        # sb3-contrib's QRDQN.train (2.x) with the target computed by ``td_target``.
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)

        losses = []
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            target_quantiles = self.td_target(replay_data, discounts)

            current_quantiles = self.quantile_net(replay_data.observations)
            actions = replay_data.actions[..., None].long().expand(batch_size, self.n_quantiles, 1)
            current_quantiles = th.gather(current_quantiles, dim=2, index=actions).squeeze(dim=2)

            loss = quantile_huber_loss(current_quantiles, target_quantiles, sum_over_quantiles=True)
            losses.append(loss.item())

            self.policy.optimizer.zero_grad()
            loss.backward()
            if self.max_grad_norm is not None:
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))


# -- building, export, training ----------------------------------------------------------------
def build_model(
    algo: str, params: DQNParams | QRDQNParams, vec_env: ExecutionSB3VecEnv | VecEnvWrapper,
    seed: int,
) -> DoubleDQN | RiskQRDQN:
    """The SB3 model for ``dqn`` / ``qrdqn`` on ``vec_env`` (device cpu)."""
    train_freq, gradient_steps = params.schedule(vec_env.num_envs)
    lr = params.learning_rate
    common: dict[str, Any] = dict(
        learning_rate=lr if params.lr_schedule == "constant" else LinearSchedule(lr, 0.0, 1.0),
        buffer_size=params.buffer_size,
        learning_starts=params.learning_starts,
        batch_size=params.batch_size,
        tau=params.tau,
        gamma=params.gamma,
        train_freq=train_freq,
        gradient_steps=gradient_steps,
        target_update_interval=params.target_update_interval,
        exploration_fraction=params.exploration_fraction,
        exploration_initial_eps=params.exploration_initial_eps,
        exploration_final_eps=params.exploration_final_eps,
        max_grad_norm=params.max_grad_norm,
        seed=seed,
        device="cpu",
        verbose=0,
    )
    policy_kwargs: dict[str, Any] = {
        "net_arch": list(params.net_arch),
        "activation_fn": activation_class(params.activation),
    }
    if isinstance(params, QRDQNParams):
        policy_kwargs.update(n_quantiles=params.n_quantiles, cvar_alpha=params.cvar_alpha)
        return RiskQRDQN(CVaRQRDQNPolicy, vec_env, policy_kwargs=policy_kwargs, **common)
    policy_class = DuelingDQNPolicy if params.dueling else DQNPolicy
    return DoubleDQN(
        policy_class, vec_env, double=params.double, policy_kwargs=policy_kwargs, **common
    )


def check_memory(request: TrainRequest, params: DQNParams | QRDQNParams) -> None:
    """Refuse, before anything is built, a run whose environments, replay buffer (SB3 keeps
    ``max(buffer_size // n_envs, 1)`` transitions per environment: observation and next
    observation in float32, action, reward, done, timeout) or networks would not fit."""
    n_envs, n_features = request.n_envs, request.n_features
    stored = max(params.buffer_size // n_envs, 1) * n_envs
    buffer_option = (f"{request.algo} hyper-parameter buffer_size = {params.buffer_size}"
                     if params.buffer_size >= n_envs else f"--n-envs = {n_envs}")
    n_actions = resolve_action_set(request.env_config.actions).n_actions or 1
    outputs = n_actions * (params.n_quantiles if isinstance(params, QRDQNParams) else 1)
    sizes = [n_features, *params.net_arch, outputs]
    check_budget([
        ("environments", f"--n-envs = {n_envs}", request.env_bytes()),
        ("replay buffer", buffer_option, stored * (8 * n_features + 20)),
        ("networks", f"{request.algo} hyper-parameters net_arch = {list(params.net_arch)} and "
         f"batch_size = {params.batch_size}", mlp_bytes(sizes, params.batch_size, copies=2)),
    ])


def export_policy(
    model: DoubleDQN | RiskQRDQN, name: str, observations: tuple[str, ...], action_set: str
) -> NumpyPolicy:
    """The model's greedy decision (``predict(obs, deterministic=True)``) as a NumpyPolicy."""
    meta: dict[str, Any] = {"algo": name, "sb3_class": type(model).__name__}
    if isinstance(model, RiskQRDQN):
        net = model.policy.quantile_net
        weights, activation = mlp_weights(net.quantile_net)
        n_q, n_a = int(net.n_quantiles), int(net.action_space.n)
        # torch views the last layer's outputs as (n_quantiles, n_actions) (column q·A + a);
        # NumpyPolicy reads (n_actions, n_quantiles) (column a·Q + q): reorder the columns.
        perm = np.arange(n_q * n_a).reshape(n_q, n_a).T.reshape(-1)
        weights[-2] = weights[-2][:, perm]
        weights[-1] = weights[-1][perm]
        return NumpyPolicy(
            name=name,
            observations=observations,
            action_set=action_set,
            head="quantiles",
            weights=weights,
            activation=activation,
            n_quantiles=n_q,
            cvar_alpha=float(getattr(net, "cvar_alpha", 1.0)),
            meta=meta,
        )
    q_net = model.policy.q_net
    if isinstance(q_net, DuelingQNetwork):
        weights, activation = mlp_weights(q_net.trunk, allow_trailing_activation=True)
        w_v, b_v = linear_weights(q_net.value_head)
        w_a, b_a = linear_weights(q_net.advantage_head)
        # Q = h·W_v + b_v + h·W_a + b_a − mean_a(h·W_a + b_a): one linear layer of h.
        weights += [w_v + w_a - w_a.mean(axis=1, keepdims=True), b_v + b_a - b_a.mean()]
        meta["dueling"] = True
    else:
        weights, activation = mlp_weights(q_net.q_net)
        meta["dueling"] = False
    meta["double"] = bool(getattr(model, "double", False))
    return NumpyPolicy(
        name=name,
        observations=observations,
        action_set=action_set,
        head="argmax",
        weights=weights,
        activation=activation,
        meta=meta,
    )


def train(request: TrainRequest, on_progress: Callable[[int], None]) -> TrainOutput:
    """Train ``request.algo`` (``dqn`` / ``qrdqn``) for ``request.steps`` env steps."""
    set_torch_threads()
    params_class = QRDQNParams if request.algo == "qrdqn" else DQNParams
    params = parse_hyperparams(request.algo, params_class, request.hyperparams)
    check_memory(request, params)
    if params.train_freq is not None and params.train_freq * request.n_envs > request.steps:
        raise ConfigError(
            f"{request.algo} hyper-parameter train_freq = {params.train_freq} batched steps "
            f"(x {request.n_envs} environments = {params.train_freq * request.n_envs:,} "
            f"transitions) is longer than the run (--steps {request.steps:,}): SB3 would "
            "collect them all before stopping"
        )
    warn_if_short(request)
    if params.schedule(request.n_envs)[1] == 0:
        warn_user(f"{request.algo} hyper-parameter gradient_steps = 0: the network never trains")
    elif request.steps <= params.learning_starts:
        warn_user(
            f"{request.algo} starts learning after learning_starts = {params.learning_starts:,} "
            f"steps; --steps {request.steps:,} ends before that: the policy is the network's "
            "random initialisation"
        )
    vec_env = make_train_env(request, discrete_only=True)
    learner_env = shaped_env(params.shaping, request, vec_env)
    model = build_model(request.algo, params, learner_env, int(request.seed))
    recorder = make_recorder(request.steps, vec_env.num_envs)

    def export() -> NumpyPolicy:
        return export_policy(
            model, request.algo, tuple(vec_env.core.observations), vec_env.core.action_set.name
        )

    learn(model, request.steps, training_callback(request, recorder, on_progress, export),
          request.algo)
    policy = export()
    train_freq, gradient_steps = params.schedule(vec_env.num_envs)
    resolved = {
        **params.model_dump(mode="json"),
        "train_freq": train_freq,
        "gradient_steps": gradient_steps,
    }
    return TrainOutput(
        policy=policy,
        curve=recorder.frame(),
        save_native=lambda folder: model.save(folder / "model.zip"),
        extra={
            "sb3": {
                "class": type(model).__name__,
                "n_envs": vec_env.num_envs,
                "num_timesteps": int(model.num_timesteps),
                "n_updates": int(model._n_updates),
                "final_exploration_rate": float(model.exploration_rate),
                "resolved_hyperparams": resolved,
                "torch_threads": 1,
                **versions(),
            }
        },
    )


__all__ = [
    "CVaRQRDQNPolicy",
    "CVaRQuantileNetwork",
    "DQNParams",
    "DoubleDQN",
    "DuelingDQNPolicy",
    "DuelingQNetwork",
    "QRDQNParams",
    "RiskQRDQN",
    "build_model",
    "cvar_count",
    "export_policy",
    "quantile_scores",
    "train",
]
