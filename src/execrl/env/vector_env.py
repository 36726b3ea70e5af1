"""The natively batched environment: one numpy step advances all ``num_envs`` markets.

Autoreset happens in the same step (gymnasium 1.0's ``VectorEnv`` leaves the mode to the
implementation; this one declares ``metadata["autoreset_mode"] = "same_step"``): a finished
environment's next observation is the new episode's first, and ``info["final_obs"]`` (with
mask ``info["_final_obs"]``) holds the last observation of the finished one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space

from execrl.domain import ParentOrder
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution


class ExecutionVectorEnv(VectorEnv):
    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": "same_step", "render_modes": []}

    def __init__(
        self,
        num_envs: int,
        config: EnvConfig | None = None,
        order: ParentOrder = DEFAULT_ORDER,
        autoreset: bool = True,
    ):
        self.config = config or EnvConfig()
        self.order = order
        self.core = make_execution(self.config, order, n_envs=num_envs, autoreset=autoreset)
        self.num_envs = num_envs
        n_obs = len(self.core.observations)
        self.single_observation_space = spaces.Box(
            -np.inf, np.inf, shape=(n_obs,), dtype=np.float32
        )
        self.single_action_space = self.core.action_set.space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        return self.core.reset(seed=seed), {}

    def step(self, actions: np.ndarray) -> tuple[Any, ...]:
        obs, reward, terminated, truncated, core_info = self.core.step(actions)
        info: dict[str, Any] = {}
        if "final_obs" in core_info:
            ids = core_info["done_ids"]
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[ids] = True
            final = np.zeros_like(obs)
            final[ids] = core_info["final_obs"]
            info = {"final_obs": final, "_final_obs": mask}
            for key, values in core_info["episode"].items():
                full = np.zeros(self.num_envs, dtype=np.asarray(values).dtype)
                full[ids] = values
                info[key] = full
                info[f"_{key}"] = mask
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self.core.action_masks()
