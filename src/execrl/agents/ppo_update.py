"""SB3's PPO update and rollout, computed with less overhead: ``LeanPPO`` / ``LeanMaskablePPO``.

Why: on one CPU thread, with execrl's batched set-up (256 envs, rollouts of 4,096 transitions,
minibatches of 1,024), SB3's ``PPO.train`` spent about three quarters of a training iteration,
and most of that was not arithmetic: autograd's graph and engine for two small MLPs, torch
distribution objects (with argument validation) built for every minibatch, fancy-index copies
of six numpy arrays per minibatch, and a ``.item()`` for every logged scalar.

What is the same (``tests/test_ppo_update.py`` checks it against SB3's own ``train`` and
``collect_rollouts``): the model is SB3's ``PPO`` / sb3-contrib's ``MaskablePPO`` (subclasses
that override ``train`` and ``collect_rollouts`` only; same policy, optimiser, rollout buffer,
``save`` / ``load``, schedules, logger keys), and the update computes SB3's loss exactly:
clipped surrogate on advantages normalised per minibatch (PPO skips a minibatch of one,
MaskablePPO does not), value loss with ``clip_range_vf`` if set, entropy bonus, gradient
clipping to ``max_grad_norm``, the policy's optimiser step and learning-rate schedule, the
``target_kl`` early stop; minibatches are drawn from ``np.random.permutation`` once per epoch
over the rollout flattened env-major, as ``RolloutBuffer.get`` does, so a seeded run draws the
same minibatches as SB3's.

How it is cheaper:
* the gradient of that loss is written out (the policy's MLPs are chains of ``nn.Linear``
  and one activation): one forward pass that keeps each layer's input, then the backward
  matrix products by hand, under ``torch.no_grad`` (no autograd graph); the gradients are
  set on the policy's parameters, and SB3's clipping and optimiser take it from there;
* the distributions' log-probabilities and entropies directly (diagonal Gaussian,
  categorical, masked categorical), with the formulas torch's distributions use;
* the rollout flattened once per update into tensors; a minibatch is an ``index_select``;
* logged scalars kept as tensors and reduced once per update (same keys as SB3);
* the rollout: the policy's forward pass by hand (sampling as torch's distributions do, from
  the same generator), observations to tensors without copies, the buffer written in place,
  and only the environments whose episode ended looked at in ``infos``.

A policy of another structure (a custom features extractor, state-dependent exploration,
unshared features, other distributions) falls back to SB3's own ``train`` /
``collect_rollouts``, so nothing is computed wrong, only slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
import torch.optim.optimizer as _torch_optimizer
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
)
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

#: log(sqrt(2π)), as torch's Normal.log_prob subtracts it
LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))
#: the logit sb3-contrib's MaskableCategorical gives a masked action
HUGE_NEG = -1e8

Linear = tuple[th.Tensor, th.Tensor]  # (weight (out, in), bias (out,))


def _linear_chain(*modules: nn.Module) -> tuple[list[Linear], str | None] | None:
    """The layers of ``modules`` chained and their activation (None for a single layer), when
    they are Linear (Act Linear)* with one activation kind (ReLU or Tanh) and no other layer;
    None otherwise."""
    layers: list[nn.Module] = []
    for module in modules:
        layers.extend(module if isinstance(module, nn.Sequential) else [module])
    linears: list[Linear] = []
    activation: str | None = None
    expect_linear = True
    for layer in layers:
        if isinstance(layer, nn.Linear) and expect_linear and layer.bias is not None:
            linears.append((layer.weight, layer.bias))
            expect_linear = False
            continue
        name = {nn.ReLU: "relu", nn.Tanh: "tanh"}.get(type(layer))
        if name is None or expect_linear or activation not in (None, name):
            return None
        activation, expect_linear = name, True
    if expect_linear:
        return None
    return linears, activation


def _forward(layers: list[Linear], activation: str, x: th.Tensor, *,
             transposed: bool = False) -> tuple[list[th.Tensor], th.Tensor]:
    """Each linear layer's input (for the backward pass) and the chain's output, (n, out),
    or with ``transposed`` (out, n): a categorical's softmax and log-sum-exp over a few
    actions run ~5x faster along the first axis than along the last on a CPU."""
    inputs = []
    h = x
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        inputs.append(h)
        # mm then the bias added in place: addmm first copies the broadcast bias into its
        # (n, out) output, a strided copy that costs more than the product here
        if i == last and transposed:
            return inputs, w.mm(h.t()).add_(b[:, None])
        z = h.mm(w.t()).add_(b)
        h = z if i == last else (th.relu(z) if activation == "relu" else th.tanh(z))
    return inputs, h


def _backward(layers: list[Linear], activation: str, inputs: list[th.Tensor], grad: th.Tensor,
              grads: dict[th.Tensor, th.Tensor], *, transposed: bool = False) -> None:
    """d loss / d (every weight and bias) of the chain, from d loss / d output (``grad``): the
    products autograd computes for ``addmm`` and the activations' own backward kernels (ReLU's
    threshold on its output, tanh's 1 - y²), in the operand order that is fastest on a CPU
    (a (in, n) x (n, out) product then transposed: 5x faster than (out, n) x (n, in) for
    the 4-wide observation layer)."""
    for i in range(len(layers) - 1, -1, -1):
        w, b = layers[i]
        if transposed:  # grad is (out, n): the last layer of a transposed forward
            grads[w] = grad.mm(inputs[i])
            grads[b] = grad.sum(1)
            grad = grad.t().mm(w)
            transposed = False
        else:
            grads[w] = inputs[i].t().mm(grad).t().contiguous()
            grads[b] = grad.sum(0)
            if i:
                # one output (the value, a one-dimensional action): an outer product
                grad = grad * w if grad.shape[1] == 1 else grad.mm(w)
        if i:
            if activation == "relu":
                grad = th.ops.aten.threshold_backward(grad, inputs[i], 0.0)
            else:
                grad = th.ops.aten.tanh_backward(grad, inputs[i])


def check_outputs(out: th.Tensor, what: str) -> None:
    """Refuse NaN network outputs as torch's distributions do (their argument validation
    raises a ``ValueError`` saying "invalid values"; ``sb3_common.learn`` turns that into a
    one-line "training diverged")."""
    if bool(th.isnan(out).any()):
        raise ValueError(f"Expected parameter {what} (Tensor of shape {tuple(out.shape)}) of "
                         "the policy's action distribution to be a number, but found invalid "
                         "values (NaN)")


@dataclass
class LeanNets:
    """The policy's actor and critic chains and its action distribution, resolved from an
    SB3 ``ActorCriticPolicy`` (``of``) where their structure is one this module computes."""

    policy: nn.Module
    actor: list[Linear]
    critic: list[Linear]
    activation: str
    kind: str  # "gaussian" | "categorical" | "masked"
    log_std: th.Tensor | None

    @classmethod
    def of(cls, policy: Any) -> LeanNets | None:
        if not isinstance(getattr(policy, "features_extractor", None), FlattenExtractor):
            return None
        if not getattr(policy, "share_features_extractor", False):
            return None
        if getattr(policy, "use_sde", False) or getattr(policy, "squash_output", False):
            return None
        space = policy.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            return None
        dist = policy.action_dist
        if type(dist) is DiagGaussianDistribution:
            kind, log_std = "gaussian", policy.log_std
        elif type(dist) is CategoricalDistribution:
            kind, log_std = "categorical", None
        elif type(dist) is MaskableCategoricalDistribution:
            kind, log_std = "masked", None
        else:
            return None
        actor = _linear_chain(policy.mlp_extractor.policy_net, policy.action_net)
        critic = _linear_chain(policy.mlp_extractor.value_net, policy.value_net)
        if actor is None or critic is None:
            return None
        if None not in (actor[1], critic[1]) and actor[1] != critic[1]:
            return None
        activation = actor[1] or critic[1] or "relu"
        covered = {id(p) for layer in actor[0] + critic[0] for p in layer}
        if log_std is not None:
            covered.add(id(log_std))
        if covered != {id(p) for p in policy.parameters()}:
            return None
        return cls(policy, actor[0], critic[0], activation, kind, log_std)

    # -- rollout --------------------------------------------------------------------------
    def act(self, obs: th.Tensor, masks: np.ndarray | None) -> tuple[th.Tensor, th.Tensor,
                                                                     th.Tensor]:
        """Sampled actions, values (n, 1) and the actions' log-probabilities, as SB3's
        ``policy(obs)`` (sampling as torch's distributions do, from the same generator)."""
        out = _forward(self.actor, self.activation, obs)[1]
        check_outputs(out, "loc" if self.kind == "gaussian" else "logits")
        values = _forward(self.critic, self.activation, obs)[1]
        if self.kind == "gaussian":
            assert self.log_std is not None
            check_outputs(self.log_std, "log_std")
            scale = th.ones_like(out) * self.log_std.exp()
            actions = out + th.empty(out.shape, dtype=out.dtype).normal_() * scale
            log_prob = (-((actions - out) ** 2) / (2 * scale**2) - scale.log()
                        - LOG_SQRT_2PI).sum(dim=1)
            return actions, values, log_prob
        logits = out - out.logsumexp(dim=-1, keepdim=True)
        if self.kind == "masked" and masks is not None:
            mask = th.as_tensor(masks, dtype=th.bool).reshape(logits.shape)
            logits = th.where(mask, logits, th.tensor(HUGE_NEG, dtype=logits.dtype))
            logits = logits - logits.logsumexp(dim=-1, keepdim=True)
        probs = th.softmax(logits, dim=-1)
        actions = th.multinomial(probs, 1, True).T.reshape(-1)
        log_prob = logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        return actions, values, log_prob

    def values(self, obs: th.Tensor) -> th.Tensor:
        return _forward(self.critic, self.activation, obs)[1]


@dataclass
class Minibatch:
    observations: th.Tensor
    actions: th.Tensor  # (n, action_dim) float for the Gaussian, (n,) long otherwise
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    masks: th.Tensor | None  # (n, n_actions) bool


def flat_rollout(buffer: Any, kind: str) -> Minibatch:
    """The rollout buffer's arrays as tensors of n_steps · n_envs rows, env-major (the order
    ``RolloutBuffer.get``'s ``swap_and_flatten`` gives, so a permutation picks the same
    transitions); the buffer itself is left as it is."""

    def flat(arr: np.ndarray) -> th.Tensor:
        shape = arr.shape
        out = arr.swapaxes(0, 1).reshape(shape[0] * shape[1], *shape[2:])
        return th.from_numpy(np.ascontiguousarray(out))

    actions = flat(buffer.actions)
    if kind == "gaussian":
        actions = actions.float()
    else:
        actions = actions.long().reshape(-1)
    masks = None
    if kind == "masked":
        masks = flat(buffer.action_masks).reshape(actions.shape[0], -1).bool()
    return Minibatch(
        observations=flat(buffer.observations).float(),
        actions=actions,
        old_values=flat(buffer.values).reshape(-1),
        old_log_prob=flat(buffer.log_probs).reshape(-1),
        advantages=flat(buffer.advantages).reshape(-1),
        returns=flat(buffer.returns).reshape(-1),
        masks=masks,
    )


def take(data: Minibatch, idx: th.Tensor) -> Minibatch:
    def pick(t: th.Tensor | None) -> Any:
        return None if t is None else t.index_select(0, idx)

    return Minibatch(*(pick(getattr(data, f)) for f in Minibatch.__dataclass_fields__))


@dataclass
class StepLoss:
    """One minibatch's loss terms (0-d tensors, for the log) and what its gradient needs."""

    policy_loss: th.Tensor
    value_loss: th.Tensor
    entropy_loss: th.Tensor
    loss: th.Tensor
    clip_fraction: th.Tensor
    approx_kl: th.Tensor
    backward: Any  # () -> {parameter: gradient}


def minibatch_loss(nets: LeanNets, mb: Minibatch, *, clip_range: float,
                   clip_range_vf: float | None, ent_coef: float, vf_coef: float,
                   normalize: bool) -> StepLoss:
    """SB3's PPO loss on one minibatch (``PPO.train``'s body) and a closure for its gradient
    with respect to every policy parameter. Run under ``torch.no_grad``."""
    n = mb.observations.shape[0]
    categorical = nets.kind != "gaussian"
    # a categorical's logits as (n_actions, n): see _forward
    actor_in, out = _forward(nets.actor, nets.activation, mb.observations,
                             transposed=categorical)
    check_outputs(out, "logits" if categorical else "loc")
    if nets.log_std is not None:
        check_outputs(nets.log_std, "log_std")
    critic_in, values = _forward(nets.critic, nets.activation, mb.observations)
    values = values.flatten()
    advantages = mb.advantages
    if normalize:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    if not categorical:
        assert nets.log_std is not None
        scale = th.ones_like(out) * nets.log_std.exp()
        var = scale**2
        diff = mb.actions - out
        log_prob = (-(diff**2) / (2 * var) - scale.log() - LOG_SQRT_2PI).sum(dim=1)
        entropy = (0.5 + LOG_SQRT_2PI + scale.log()).sum(dim=1)
        probs = logits = mask = None
    else:
        # torch's Categorical(logits=...) (and MaskableCategorical's masking) along axis 0
        logits = out - out.logsumexp(dim=0, keepdim=True)
        mask = mb.masks.t() if nets.kind == "masked" and mb.masks is not None else None
        if mask is not None:
            logits = th.where(mask, logits, th.tensor(HUGE_NEG, dtype=logits.dtype))
            logits = logits - logits.logsumexp(dim=0, keepdim=True)
        probs = th.softmax(logits, dim=0)
        log_prob = logits.gather(0, mb.actions.unsqueeze(0)).squeeze(0)
        p_log_p = th.clamp(logits, min=th.finfo(logits.dtype).min) * probs
        if mask is not None:
            p_log_p = th.where(mask, p_log_p, th.tensor(0.0))
        entropy = -p_log_p.sum(0)

    log_ratio = log_prob - mb.old_log_prob
    ratio = th.exp(log_ratio)
    surrogate = advantages * ratio
    clipped = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
    policy_loss = -th.min(surrogate, clipped).mean()
    clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float())
    if clip_range_vf is None:
        values_pred, vf_passes = values, None
    else:
        delta = values - mb.old_values
        values_pred = mb.old_values + th.clamp(delta, -clip_range_vf, clip_range_vf)
        vf_passes = (delta >= -clip_range_vf) & (delta <= clip_range_vf)
    value_loss = th.mean((mb.returns - values_pred) ** 2)
    entropy_loss = -th.mean(entropy)
    loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss
    approx_kl = th.mean((ratio - 1) - log_ratio)

    def backward() -> dict[th.Tensor, th.Tensor]:
        # d policy_loss / d log_prob: torch.min's gradient goes to the smaller term (half to
        # each on a tie, where the clamp passes it on too: the whole of it), clamp's to none
        # outside [1 - clip, 1 + clip]; so the unclipped term's wherever it is the smaller
        g_log_prob = -(advantages * ratio * (surrogate <= clipped)) / n
        grads: dict[th.Tensor, th.Tensor] = {}
        if nets.kind == "gaussian":
            assert nets.log_std is not None
            g_out = g_log_prob[:, None] * diff / var
            g_log_std = (g_log_prob[:, None] * (diff**2 / var - 1.0)).sum(0)
            grads[nets.log_std] = g_log_std - ent_coef  # d entropy_loss / d log_std = -1
        else:
            assert probs is not None and logits is not None
            g_out = -probs * g_log_prob[None, :]  # (n_actions, n)
            g_out.scatter_add_(0, mb.actions.unsqueeze(0), g_log_prob.unsqueeze(0))
            if ent_coef:
                # d entropy_loss / d logits = p (log p + H) / n (masked: p = 0 there)
                g_out += (ent_coef / n) * probs * (logits + entropy[None, :])
            if mask is not None:
                g_out = th.where(mask, g_out, th.tensor(0.0))
        _backward(nets.actor, nets.activation, actor_in, g_out, grads, transposed=categorical)
        g_values = (2.0 * vf_coef / n) * (values_pred - mb.returns)
        if vf_passes is not None:
            g_values = g_values * vf_passes
        _backward(nets.critic, nets.activation, critic_in, g_values[:, None], grads)
        return grads

    return StepLoss(policy_loss, value_loss, entropy_loss, loss, clip_fraction, approx_kl,
                    backward)


def clip_grad_norm(grads: list[th.Tensor], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` as it runs on CPU float32 tensors (foreach norms,
    their 2-norm, the gradients scaled by min(max_norm / (norm + 1e-6), 1)), without its
    per-call grouping of the tensors by device and dtype."""
    total = th.linalg.vector_norm(th.stack(th._foreach_norm(grads, 2.0)), 2.0)
    th._foreach_mul_(grads, th.clamp(float(max_norm) / (total + 1e-6), max=1.0))


def optimizer_step(optimizer: th.optim.Optimizer, params: list[th.Tensor]) -> None:
    """``optimizer.step()``; for torch's fused Adam (what ``build_model`` sets up) the same
    kernel called directly, without ``Optimizer.step``'s per-call Python (≈ 0.4 ms, eight
    times the kernel at these sizes). Anything else, a first step (no moments yet) or
    hooks on the optimiser go through ``step()`` itself."""
    group = optimizer.param_groups[0] if len(optimizer.param_groups) == 1 else None
    if (type(optimizer) is not th.optim.Adam or group is None or not group.get("fused")
            or group["amsgrad"] or group["maximize"] or group["capturable"]
            or group["differentiable"] or group.get("decoupled_weight_decay")
            or optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
            or _torch_optimizer._global_optimizer_pre_hooks
            or _torch_optimizer._global_optimizer_post_hooks
            or len(group["params"]) != len(params)):
        optimizer.step()
        return
    states = [optimizer.state.get(p) for p in group["params"]]
    if any(not state for state in states):
        optimizer.step()
        return
    steps = [state["step"] for state in states]
    th._foreach_add_(steps, 1)
    beta1, beta2 = group["betas"]
    th._fused_adam_(
        group["params"], [p.grad for p in group["params"]],
        [state["exp_avg"] for state in states], [state["exp_avg_sq"] for state in states], [],
        steps, amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
        weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
        grad_scale=None, found_inf=None,
    )


def _mean(values: list[th.Tensor]) -> float:
    return float(th.stack(values).double().mean()) if values else float("nan")


class _LeanOnPolicy:
    """``train`` and ``collect_rollouts`` for SB3's PPO and sb3-contrib's MaskablePPO (mixed
    in before them). Falls back to theirs where ``LeanNets.of`` does not resolve the policy."""

    _masked_algo = False

    # -- update ---------------------------------------------------------------------------
    def train(self) -> None:
        nets = LeanNets.of(self.policy)
        if nets is None:
            return super().train()  # type: ignore[misc]
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        clip_range = float(self.clip_range(progress))
        clip_range_vf = None if self.clip_range_vf is None else float(self.clip_range_vf(progress))
        data = flat_rollout(self.rollout_buffer, nets.kind)
        size = data.observations.shape[0]
        batch_size = int(self.batch_size)
        params = list(self.policy.parameters())
        optimizer = self.policy.optimizer
        entropy_losses: list[th.Tensor] = []
        pg_losses: list[th.Tensor] = []
        value_losses: list[th.Tensor] = []
        clip_fractions: list[th.Tensor] = []
        approx_kl_divs: list[th.Tensor] = []
        step: StepLoss | None = None
        continue_training = True
        for _epoch in range(self.n_epochs):
            approx_kl_divs = []
            # one permutation per epoch, as RolloutBuffer.get draws it
            order = th.from_numpy(np.random.permutation(size))
            for start in range(0, size, batch_size):
                mb = take(data, order[start:start + batch_size])
                # PPO skips a minibatch of one (SB3 #325), MaskablePPO does not
                normalize = self.normalize_advantage and (
                    self._masked_algo or len(mb.advantages) > 1)
                with th.no_grad():
                    step = minibatch_loss(
                        nets, mb, clip_range=clip_range, clip_range_vf=clip_range_vf,
                        ent_coef=float(self.ent_coef), vf_coef=float(self.vf_coef),
                        normalize=normalize,
                    )
                pg_losses.append(step.policy_loss)
                clip_fractions.append(step.clip_fraction)
                value_losses.append(step.value_loss)
                entropy_losses.append(step.entropy_loss)
                approx_kl_divs.append(step.approx_kl)
                if self.target_kl is not None and float(step.approx_kl) > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {_epoch} due to reaching max kl: "
                              f"{float(step.approx_kl):.2f}")
                    break
                with th.no_grad():
                    grads = step.backward()
                ordered = [grads[p] for p in params]
                for p, g in zip(params, ordered, strict=True):
                    p.grad = g
                clip_grad_norm(ordered, self.max_grad_norm)
                optimizer_step(optimizer, params)
            self._n_updates += 1
            if not continue_training:
                break

        buffer = self.rollout_buffer
        # over the env-major flattening SB3's buffer.get leaves behind (the same sums)
        explained_var = explained_variance(buffer.values.swapaxes(0, 1).flatten(),
                                           buffer.returns.swapaxes(0, 1).flatten())
        self.logger.record("train/entropy_loss", _mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", _mean(pg_losses))
        self.logger.record("train/value_loss", _mean(value_losses))
        self.logger.record("train/approx_kl", _mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", _mean(clip_fractions))
        if step is not None:
            self.logger.record("train/loss", float(step.loss))
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std") and not self._masked_algo:
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
        return None

    # -- rollout --------------------------------------------------------------------------
    def collect_rollouts(self, env: VecEnv, callback: BaseCallback, rollout_buffer: Any,
                         n_rollout_steps: int, use_masking: bool = True) -> bool:
        nets = LeanNets.of(self.policy)
        if nets is None or self.use_sde:
            args = (env, callback, rollout_buffer, n_rollout_steps)
            if self._masked_algo:
                return super().collect_rollouts(*args, use_masking)  # type: ignore[misc]
            return super().collect_rollouts(*args)  # type: ignore[misc]
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        masking = self._masked_algo and use_masking
        if masking and not hasattr(env, "action_masks"):
            from sb3_contrib.common.maskable.utils import is_masking_supported

            if not is_masking_supported(env):
                raise ValueError("Environment does not support action masking. Consider using "
                                 "ActionMasker wrapper")
        n_steps = 0
        rollout_buffer.reset()
        buf = rollout_buffer
        callback.on_rollout_start()
        box = isinstance(self.action_space, spaces.Box)
        discrete = isinstance(self.action_space, spaces.Discrete)
        n_envs = env.num_envs
        action_masks = None
        new_obs = dones = None
        while n_steps < n_rollout_steps:
            with th.no_grad():
                obs_tensor = th.as_tensor(self._last_obs).float()
                if masking:
                    action_masks = (env.action_masks() if hasattr(env, "action_masks")
                                    else get_action_masks(env))
                actions_t, values_t, log_probs_t = nets.act(obs_tensor, action_masks)
            actions = actions_t.numpy()
            clipped_actions = actions
            if box:
                clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)
            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += n_envs

            callback.update_locals(locals())
            if not callback.on_step():
                return False
            ended = np.flatnonzero(dones)
            self._record_episodes(infos, ended)
            n_steps += 1
            if discrete:
                actions = actions.reshape(-1, 1)
            # a timeout is bootstrapped with the value of its terminal observation (SB3 #633)
            timeouts = [i for i in ended
                        if infos[i].get("terminal_observation") is not None
                        and infos[i].get("TimeLimit.truncated", False)]
            if timeouts:
                terminal = np.stack([infos[i]["terminal_observation"] for i in timeouts])
                with th.no_grad():
                    v = nets.values(th.as_tensor(terminal).float()).flatten().numpy()
                rewards[timeouts] += self.gamma * v

            pos = buf.pos
            buf.observations[pos] = self._last_obs
            buf.actions[pos] = actions.reshape((n_envs, buf.action_dim))
            buf.rewards[pos] = rewards
            buf.episode_starts[pos] = self._last_episode_starts
            buf.values[pos] = values_t.numpy().reshape(-1)
            buf.log_probs[pos] = log_probs_t.numpy()
            if masking and action_masks is not None:
                buf.action_masks[pos] = np.asarray(action_masks).reshape((n_envs, buf.mask_dims))
            buf.pos += 1
            if buf.pos == buf.buffer_size:
                buf.full = True
            self._last_obs = new_obs
            self._last_episode_starts = dones

        with th.no_grad():
            values = nets.values(th.as_tensor(new_obs).float())
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _record_episodes(self, infos: list[dict[str, Any]], ended: np.ndarray) -> None:
        """SB3's ``_update_info_buffer`` over the environments whose episode ended (only
        those carry an ``episode`` record)."""
        assert self.ep_info_buffer is not None and self.ep_success_buffer is not None
        for i in ended:
            info = infos[i]
            episode = info.get("episode")
            if episode is not None:
                self.ep_info_buffer.extend([episode])
            success = info.get("is_success")
            if success is not None:
                self.ep_success_buffer.append(success)


class LeanPPO(_LeanOnPolicy, PPO):
    """SB3's ``PPO`` with the lean ``train`` / ``collect_rollouts`` (module docstring)."""


class LeanMaskablePPO(_LeanOnPolicy, MaskablePPO):
    """sb3-contrib's ``MaskablePPO`` with the lean ``train`` / ``collect_rollouts``."""

    _masked_algo = True
