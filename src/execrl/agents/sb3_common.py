"""What the Stable-Baselines3 agents (``deep_q``, ``ppo``) share: hyper-parameter checking,
the batched training environment, the progress / learning-curve callback and the export of
torch MLPs to ``NumpyPolicy`` weights.

Export convention (``NumpyPolicy``): weights ``[W0, b0, W1, b1, …]`` with ``W`` of shape
(in, out) (torch's ``nn.Linear.weight`` transposed), one activation between layers and none
after the last, all in float64. The torch modules run in float32; the numpy policy computes
in float64 on the same float32 observations, so raw outputs agree to float32 rounding
(~1e-6 relative) and the decisions agree except on exact float32 ties.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch as th
from pydantic import BaseModel, ValidationError
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper
from torch import nn

from execrl.agents.checkpoint import CurveRecorder
from execrl.agents.shaping import TwapPotential, make_potential, shaped
from execrl.domain import ConfigError
from execrl.domain.errors import describe_pydantic_error

if TYPE_CHECKING:
    from execrl.agents.train import TrainRequest
    from execrl.env.sb3 import ExecutionSB3VecEnv

M = TypeVar("M", bound=BaseModel)

#: activation name (NumpyPolicy / hyper-parameter) -> torch module class
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}

#: CPU threads torch uses while training (the target machine has 2 cores; with the small MLPs
#: here one thread is as fast as two and leaves the other core to the environment / OS).
TORCH_THREADS = 1


def set_torch_threads(n: int = TORCH_THREADS) -> None:
    th.set_num_threads(n)


# -- hyper-parameters --------------------------------------------------------------------------
def parse_hyperparams(
    algo: str, model: type[M], raw: Mapping[str, Any] | None, **overrides: Any
) -> M:
    """Validate ``raw`` against ``model``: an unknown key is refused by name (with the known
    ones listed), a bad value by field and value; ``overrides`` are defaults that depend on
    the request (applied only when ``raw`` does not set them)."""
    raw = dict(raw or {})
    known = list(model.model_fields)
    for key in raw:
        if key not in model.model_fields:
            raise ConfigError(
                f"{algo} hyper-parameter {key!r} is unknown; known: {', '.join(known)}"
            )
    data = {**overrides, **raw}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_pydantic_error(f"{algo} hyper-parameter", exc)) from None


def activation_class(name: str) -> type[nn.Module]:
    return ACTIVATIONS[name]


# -- environment -------------------------------------------------------------------------------
def make_train_env(request: TrainRequest, *, discrete_only: bool) -> ExecutionSB3VecEnv:
    """The batched SB3 environment of a request, seeded with ``request.seed``; a continuous
    action set is refused (before anything is built) when the algorithm needs a discrete one."""
    from execrl.env.sb3 import ExecutionSB3VecEnv
    from execrl.env.spaces import resolve_action_set

    action_set = resolve_action_set(request.env_config.actions)
    if discrete_only and not action_set.is_discrete:
        raise ConfigError(
            f"{request.algo} needs a discrete action set; actions = {action_set.name!r} is "
            f"continuous (use --actions seed004 or seed003, or --algo ppo)"
        )
    vec_env = ExecutionSB3VecEnv(request.n_envs, request.env_config, request.order)
    vec_env.seed(int(request.seed))
    return vec_env


class CurveCallback(BaseCallback):
    """Feeds finished training episodes (``infos[i]["episode"]``, ``["is_bps"]``) to a
    ``CurveRecorder`` and reports ``num_timesteps`` (env steps so far) after every batched step.
    """

    def __init__(self, recorder: CurveRecorder, on_progress: Callable[[int], None]):
        super().__init__(verbose=0)
        self.recorder = recorder
        self.on_progress = on_progress

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        returns: list[float] = []
        is_bps: list[float] = []
        for info in infos:
            if info:  # only finished episodes carry anything
                episode = info.get("episode")
                if episode is not None:
                    returns.append(episode["r"])
                    is_bps.append(info.get("is_bps", np.nan))
        if returns:
            self.recorder.add(self.num_timesteps, np.asarray(returns), np.asarray(is_bps))
        self.on_progress(int(self.num_timesteps))
        return True


class WatchCallback(BaseCallback):
    """Hands the greedy policy so far (``export()``) to ``watch(env_steps, policy)`` every
    ``every`` env steps (``TrainRequest.watch``)."""

    def __init__(self, every: int, export: Callable[[], Any], watch: Callable[[int, Any], None]):
        super().__init__(verbose=0)
        self.every, self.export, self.watch = max(1, int(every)), export, watch
        self._next = self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.watch(int(self.num_timesteps), self.export())
            self._next = (self.num_timesteps // self.every + 1) * self.every
        return True


def training_callback(
    request: TrainRequest, recorder: CurveRecorder, on_progress: Callable[[int], None],
    export: Callable[[], Any],
) -> BaseCallback:
    """The learning-curve callback, plus ``WatchCallback`` when the request watches."""
    curve = CurveCallback(recorder, on_progress)
    if request.watch is None or request.watch_every <= 0:
        return curve
    from stable_baselines3.common.callbacks import CallbackList

    return CallbackList([curve, WatchCallback(request.watch_every, export, request.watch)])


def learn(model: Any, steps: int, callback: BaseCallback, algo: str) -> None:
    """``model.learn``, with a run whose network outputs became NaN (torch's distributions
    refuse them with a ValueError; too large a learning rate, ``vf_coef``, …) refused in one
    line instead of a traceback."""
    try:
        model.learn(int(steps), callback=callback)
    except ValueError as exc:
        if "invalid value" not in str(exc):
            raise
        raise ConfigError(
            f"{algo} training diverged: the network's outputs became NaN; lower "
            "learning_rate (or vf_coef, ent_coef, max_grad_norm)"
        ) from None


def make_recorder(steps: int, n_envs: int) -> CurveRecorder:
    """About 100 curve rows over the run, never more than one per batched step."""
    return CurveRecorder(every=max(n_envs, int(steps) // 100), clock=time.perf_counter)


# -- export ------------------------------------------------------------------------------------
def linear_weights(layer: nn.Linear) -> list[np.ndarray]:
    """``[W, b]`` of one linear layer in NumpyPolicy's layout: W (in, out), float64."""
    w = layer.weight.detach().cpu().numpy().astype(np.float64).T.copy()
    if layer.bias is None:
        b = np.zeros(w.shape[1])
    else:
        b = layer.bias.detach().cpu().numpy().astype(np.float64).copy()
    return [w, b]


def mlp_weights(
    *modules: nn.Module, allow_trailing_activation: bool = False
) -> tuple[list[np.ndarray], str]:
    """The linear layers of one or more modules chained in order (e.g. an SB3 policy's
    ``mlp_extractor.policy_net`` then ``action_net``), with the activation between them.

    The chain must be Linear (Act Linear)* with one activation kind between every pair of
    linear layers and none after the last: the structure ``NumpyPolicy`` evaluates. Anything
    else (dropout, normalisation, mixed activations) is refused rather than exported wrong.
    With ``allow_trailing_activation`` the chain may be empty or end with an activation (a
    trunk whose output layer the caller appends).
    """
    layers: list[nn.Module] = []
    for module in modules:
        if isinstance(module, nn.Sequential):
            layers.extend(module)
        else:
            layers.append(module)
    weights: list[np.ndarray] = []
    activation: str | None = None
    expect_linear = True
    for layer in layers:
        if isinstance(layer, nn.Linear):
            if not expect_linear:
                raise ConfigError("cannot export: two linear layers with no activation between")
            weights.extend(linear_weights(layer))
            expect_linear = False
            continue
        name = next((k for k, cls in ACTIVATIONS.items() if type(layer) is cls), None)
        if name is None or expect_linear:
            raise ConfigError(f"cannot export layer {layer!r} to a numpy policy")
        if activation is not None and activation != name:
            raise ConfigError("cannot export a network with mixed activations")
        activation = name
        expect_linear = True
    if not allow_trailing_activation and (expect_linear or not weights):
        raise ConfigError("cannot export: the network must end with a linear layer")
    return weights, activation or "relu"


def hyperparams_dict(params: BaseModel) -> dict[str, Any]:
    return params.model_dump(mode="json")


def net_arch_list(arch: Sequence[int]) -> list[int]:
    return [int(a) for a in arch]


def versions() -> dict[str, str]:
    """Library versions a native checkpoint depends on (recorded in config.json)."""
    import sb3_contrib
    import stable_baselines3

    return {
        "torch_version": th.__version__,
        "stable_baselines3_version": stable_baselines3.__version__,
        "sb3_contrib_version": sb3_contrib.__version__,
    }


# -- reward shaping ------------------------------------------------------------------------------
class ShapedVecEnv(VecEnvWrapper):
    """The learner's rewards r + E[Φ(s') | s, a] − Φ(s) (``execrl.agents.shaping.shaped``;
    Φ = 0 for a finished order); observations, episode records (``infos``: the environment's
    own returns) and everything else unchanged. ``.core`` is the wrapped env's (export reads it)."""

    def __init__(self, venv: ExecutionSB3VecEnv, potential: TwapPotential):
        super().__init__(venv)
        self.potential = potential
        self._obs: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        self._obs = self.venv.reset()
        return self._obs

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, reward, done, infos = self.venv.step_wait()
        assert self._obs is not None, "reset must come before step"
        reward = shaped(reward, self.potential, self._obs, obs, done).astype(np.float32)
        self._obs = obs
        return obs, reward, done, infos


def shaped_env(shaping: str, request: TrainRequest,
               vec_env: ExecutionSB3VecEnv) -> ExecutionSB3VecEnv | ShapedVecEnv:
    """What the SB3 learner trains on: ``vec_env`` itself, or wrapped in ``ShapedVecEnv`` with
    the potential ``shaping`` names (``make_potential``: refused by name where the market has
    no cost model to price it)."""
    potential = make_potential(shaping, request.env_config.market, request.order,
                               tuple(vec_env.core.observations))
    return vec_env if potential is None else ShapedVecEnv(vec_env, potential)
