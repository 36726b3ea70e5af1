"""PPO (Stable-Baselines3) and MaskablePPO (sb3-contrib) on the batched execution env.

``--algo ppo``: SB3's ``PPO`` with its ``MlpPolicy``, on a discrete action set (categorical
policy) or the continuous one (diagonal Gaussian over the fraction of the remaining quantity,
clipped to [0, 1] by the environment and by SB3's ``predict``).
``--algo maskable-ppo``: sb3-contrib's ``MaskablePPO``, discrete action sets only; the
environment's hard-limit masks (``ExecutionSB3VecEnv.action_masks``) are applied in every
rollout and update, so a masked action has probability 0 and is never sent.

Defaults, tuned for the natively batched environment (many environments stepped at once,
short rollouts, large minibatches) rather than SB3's single-env-oriented defaults
(n_steps=2048 per env, batch_size=64, n_epochs=10, which spend most of their time in
thousands of tiny gradient steps):

    key              default   why
    learning_rate    1e-3      SB3's 3e-4 took 1.75M steps (29 s) to come within 1 % of J* on
                               the default market (continuous, expected_cost); 1e-3 took 0.5M
                               (12 s) and ended at 0.01 % (bench/bench_defaults.py)
    n_steps          16        per env per rollout: with the default 256 envs a rollout is
                               4096 transitions (≈ 400 ten-step episodes), so the policy is
                               updated often; 16 ≥ the default episode of 10 decisions
    n_minibatches    4         the rollout is split into this many minibatches per epoch
                               (1024 transitions at the defaults): few large gradient steps
                               are far cheaper on a CPU than SB3's many 64-sample ones
    batch_size       None      None: n_envs·n_steps // n_minibatches; an int overrides
    n_epochs         4         passes over each rollout (10 learns a little more per sample
                               but halves the throughput; at equal wall-clock 4 is as good;
                               2 trains ~1.7x more samples a second but learnt less in 45 s
                               with continuous actions: bench/bench_ppo.py, 2026-12-01)
    gamma            1.0       the objective is the undiscounted episode cost (IS over a
                               fixed horizon; elapsed time is in the observation)
    gae_lambda       0.95      SB3's
    clip_range       0.2       SB3's
    ent_coef         0.0       SB3's
    vf_coef          0.5       SB3's
    max_grad_norm    0.5       SB3's
    target_kl        None      SB3's (set e.g. 0.02 for a KL clamp, seed 001 §4)
    normalize_advantage True   SB3's
    net_arch         [64, 64]  SB3's (separate policy and value MLPs of this shape)
    activation       "relu"    SB3 uses tanh; on one CPU thread torch's tanh costs more than
                               the matrix products, ReLU trains ~40 % faster and learnt as
                               well here (continuous and discrete, several seeds)
    log_std_init     -1.0      continuous only: initial std e^-1 ≈ 0.37 of a fraction in
                               [0, 1] (SB3's 0.0, std 1, would clip most early actions to 0
                               or 1); refused for discrete action sets

How these were chosen: 10–15 s budgets on the default AC market (risk_adjusted reward),
three seeds each, comparing the exported policy's mean episode return over 2000 backtest
orders with the Almgren–Chriss schedule's (the optimum of that objective); see
bench/README.md for the throughput against SB3's defaults.

Unknown keys are refused by name (``ConfigError``). Training uses one torch thread.

The models are ``LeanPPO`` / ``LeanMaskablePPO`` (``execrl.agents.ppo_update``): SB3's PPO and
MaskablePPO with the same update computed with less overhead (~1.6x the training throughput;
a saved ``model.zip`` loads with SB3's ``PPO.load`` / ``MaskablePPO.load``).

Export: the policy MLP (``mlp_extractor.policy_net`` then ``action_net``) becomes a
``NumpyPolicy``: head ``argmax`` over the action logits for discrete sets (the categorical's
mode; with masks, the masked argmax, which is what MaskablePPO's deterministic ``predict``
does with ``action_masks``), head ``gaussian_mean`` for the continuous set (the Gaussian's
mean clipped to [0, 1], SB3's deterministic action).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy

from execrl.agents.budget import check_budget, mlp_bytes, warn_if_short
from execrl.agents.checkpoint import TrainOutput
from execrl.agents.export import NumpyPolicy
from execrl.agents.ppo_update import LeanMaskablePPO, LeanPPO
from execrl.agents.sb3_common import (
    activation_class,
    learn,
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

#: initial log std of the continuous policy's Gaussian (SB3's is 0.0; see the docstring)
DEFAULT_LOG_STD_INIT = -1.0

PosFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class PPOParams(BaseModel):
    """Hyper-parameters of ``ppo`` and ``maskable-ppo`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    learning_rate: PosFloat = 1e-3
    n_steps: Annotated[int, Field(ge=1)] = 16
    batch_size: Annotated[int, Field(ge=2)] | None = None
    n_minibatches: Annotated[int, Field(ge=1)] = 4
    n_epochs: Annotated[int, Field(ge=1)] = 4
    gamma: Unit = 1.0
    gae_lambda: Unit = 0.95
    clip_range: PosFloat = 0.2
    ent_coef: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    vf_coef: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.5
    max_grad_norm: PosFloat = 0.5
    target_kl: PosFloat | None = None
    normalize_advantage: bool = True
    net_arch: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=8)] = [64, 64]
    activation: Literal["tanh", "relu"] = "relu"
    log_std_init: Annotated[float, Field(allow_inf_nan=False)] | None = None
    shaping: Literal["none", "twap"] = "none"
    """Extension: potential-based reward shaping (``execrl.agents.shaping``: the learner sees
    r + E[Φ(s')] − Φ(s), Φ = minus TWAP's expected cost-to-go; the optimum is unchanged).
    What took PPO past 0.95 of the OU-signal optimum's gain (bench/README.md)."""

    def resolved_batch_size(self, n_envs: int) -> int:
        """SB3's minibatch size: the rollout (n_envs · n_steps) in ``n_minibatches`` pieces."""
        if self.batch_size is not None:
            return self.batch_size
        return max(2, (n_envs * self.n_steps) // self.n_minibatches)

    def resolved(self, n_envs: int, discrete: bool) -> dict[str, Any]:
        """Every hyper-parameter as trained with (auto values filled in), for config.json."""
        out = self.model_dump(mode="json")
        out["batch_size"] = self.resolved_batch_size(n_envs)
        if not discrete and out["log_std_init"] is None:
            out["log_std_init"] = DEFAULT_LOG_STD_INIT
        return out


def check_rollout(request: TrainRequest, params: PPOParams) -> None:
    """Refuse, before anything is built, a rollout SB3 cannot normalise (one transition) and
    a run whose environments, rollout buffer or networks would not fit in memory."""
    n_envs, n_features = request.n_envs, request.n_features
    rollout = n_envs * params.n_steps
    if rollout < 2 and params.normalize_advantage:
        raise ConfigError(
            f"{request.algo}: a rollout of --n-envs x n_steps = {rollout} transition cannot "
            "normalise advantages; use more environments, n_steps >= 2 or "
            "normalize_advantage = false"
        )
    batch = params.resolved_batch_size(n_envs)
    if batch > rollout:
        raise ConfigError(
            f"{request.algo} hyper-parameter batch_size = {batch} is more than the rollout of "
            f"--n-envs x n_steps = {n_envs} x {params.n_steps} = {rollout} transitions"
        )
    if rollout % batch:
        warn_user(
            f"{request.algo}: the rollout of {rollout} transitions (--n-envs x n_steps) is not "
            f"a multiple of the minibatch of {batch}: each epoch ends with a minibatch of "
            f"{rollout % batch}"
        )
    n_actions = resolve_action_set(request.env_config.actions).n_actions or 1
    sizes = [n_features, *params.net_arch]
    check_budget([
        ("environments", f"--n-envs = {n_envs}", request.env_bytes()),
        ("rollout buffer", f"--n-envs = {n_envs} x {request.algo} hyper-parameter n_steps = "
         f"{params.n_steps}", rollout * 4 * (n_features + n_actions + 8)),
        ("networks", f"{request.algo} minibatch of {batch} ("
         + ("batch_size" if params.batch_size is not None else
            f"--n-envs = {n_envs} x n_steps = {params.n_steps} / n_minibatches = "
            f"{params.n_minibatches}")
         + f") with net_arch = {list(params.net_arch)}",
         mlp_bytes([*sizes, n_actions], batch) + mlp_bytes([*sizes, 1], batch)),
    ])


def build_model(
    request_algo: str, params: PPOParams, vec_env: ExecutionSB3VecEnv, seed: int,
    *, lean: bool = True,
) -> PPO:
    """The SB3 / sb3-contrib model for ``ppo`` or ``maskable-ppo`` on ``vec_env``: with
    ``lean`` (the default) ``LeanPPO`` / ``LeanMaskablePPO`` (``execrl.agents.ppo_update``:
    SB3's update and rollout with less overhead), else SB3's own classes."""
    discrete = vec_env.core.action_set.is_discrete
    if request_algo == "maskable-ppo" and not discrete:
        raise ConfigError(
            f"maskable-ppo needs a discrete action set; actions = "
            f"{vec_env.core.action_set.name!r} is continuous (use --algo ppo)"
        )
    policy_kwargs: dict[str, Any] = {
        "net_arch": list(params.net_arch),
        "activation_fn": activation_class(params.activation),
        # SB3's Adam (eps 1e-5), as torch's fused kernel: one pass over every parameter
        # instead of a loop over the tensors (~20 % of the update's time at these sizes)
        "optimizer_kwargs": {"eps": 1e-5, "fused": True},
    }
    if params.log_std_init is not None and discrete:
        raise ConfigError(
            f"{request_algo} hyper-parameter 'log_std_init' = {params.log_std_init!r} applies "
            f"only to the continuous action set (actions = {vec_env.core.action_set.name!r})"
        )
    if not discrete:
        policy_kwargs["log_std_init"] = (
            DEFAULT_LOG_STD_INIT if params.log_std_init is None else params.log_std_init
        )
    kwargs: dict[str, Any] = dict(
        learning_rate=params.learning_rate,
        n_steps=params.n_steps,
        batch_size=params.resolved_batch_size(vec_env.num_envs),
        n_epochs=params.n_epochs,
        gamma=params.gamma,
        gae_lambda=params.gae_lambda,
        clip_range=params.clip_range,
        ent_coef=params.ent_coef,
        vf_coef=params.vf_coef,
        max_grad_norm=params.max_grad_norm,
        target_kl=params.target_kl,
        normalize_advantage=params.normalize_advantage,
        policy_kwargs=policy_kwargs,
        seed=seed,
        device="cpu",
        verbose=0,
    )
    with warnings.catch_warnings():  # said in one line by check_rollout
        warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
        if request_algo == "maskable-ppo":
            from sb3_contrib import MaskablePPO

            return (LeanMaskablePPO if lean else MaskablePPO)("MlpPolicy", vec_env, **kwargs)
        return (LeanPPO if lean else PPO)("MlpPolicy", vec_env, **kwargs)


def sb3_class(model: PPO) -> str:
    """The SB3 / sb3-contrib class a saved model loads with (``LeanPPO`` is a ``PPO``)."""
    from sb3_contrib import MaskablePPO

    return "MaskablePPO" if isinstance(model, MaskablePPO) else "PPO"


def export_policy(
    model: PPO, name: str, observations: tuple[str, ...], action_set: str
) -> NumpyPolicy:
    """The model's deterministic decision as a ``NumpyPolicy`` (see the module docstring)."""
    policy: ActorCriticPolicy = model.policy
    weights, activation = mlp_weights(policy.mlp_extractor.policy_net, policy.action_net)
    discrete = policy.action_space.__class__.__name__ == "Discrete"
    return NumpyPolicy(
        name=name,
        observations=observations,
        action_set=action_set,
        head="argmax" if discrete else "gaussian_mean",
        weights=weights,
        activation=activation,
        meta={"algo": name, "sb3_class": sb3_class(model)},
    )


def train(request: TrainRequest, on_progress: Callable[[int], None]) -> TrainOutput:
    """Train ``request.algo`` (``ppo`` / ``maskable-ppo``) for ``request.steps`` env steps."""
    set_torch_threads()
    params = parse_hyperparams(request.algo, PPOParams, request.hyperparams)
    check_rollout(request, params)
    warn_if_short(request)
    rollout = request.n_envs * params.n_steps
    if rollout > request.steps:
        warn_user(
            f"{request.algo} collects whole rollouts: --steps {request.steps:,} runs one of "
            f"--n-envs x n_steps = {rollout:,} steps"
        )
    vec_env = make_train_env(request, discrete_only=request.algo == "maskable-ppo")
    seed = int(request.seed)
    learner_env = shaped_env(params.shaping, request, vec_env)
    model = build_model(request.algo, params, learner_env, seed)
    recorder = make_recorder(request.steps, vec_env.num_envs)

    def export() -> NumpyPolicy:
        return export_policy(
            model, request.algo, tuple(vec_env.core.observations), vec_env.core.action_set.name
        )

    learn(model, request.steps, training_callback(request, recorder, on_progress, export),
          request.algo)
    policy = export()
    resolved = params.resolved(vec_env.num_envs, vec_env.core.action_set.is_discrete)
    return TrainOutput(
        policy=policy,
        curve=recorder.frame(),
        save_native=lambda folder: model.save(folder / "model.zip"),
        extra={
            "sb3": {
                "class": sb3_class(model),  # the class that loads native/model.zip
                "update": "lean" if isinstance(model, LeanPPO | LeanMaskablePPO) else "sb3",
                "n_envs": vec_env.num_envs,
                "num_timesteps": int(model.num_timesteps),
                "n_updates": int(getattr(model, "_n_updates", 0)),
                "resolved_hyperparams": resolved,
                "torch_threads": 1,
                **versions(),
            }
        },
    )
