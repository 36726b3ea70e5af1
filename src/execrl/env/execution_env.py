"""The gymnasium environment: one parent order, one market."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from execrl.domain import ParentOrder
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution


class ExecutionEnv(gym.Env[np.ndarray, Any]):
    """Execute a parent order step by step; ``reset(seed=s)`` fixes the market path.

    >>> env = ExecutionEnv()
    >>> obs, info = env.reset(seed=7)
    >>> obs.shape, env.action_space
    ((4,), Discrete(5))
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, config: EnvConfig | None = None, order: ParentOrder = DEFAULT_ORDER):
        super().__init__()
        self.config = config or EnvConfig()
        self.order = order
        self.core = make_execution(self.config, order, n_envs=1, autoreset=False)
        n_obs = len(self.core.observations)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(n_obs,), dtype=np.float32)
        self.action_space = self.core.action_set.space()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.core.use_rng(self.np_random)  # all randomness from np_random (gymnasium contract)
        obs = self.core.reset()
        return obs[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.core.done[0]:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        obs, reward, terminated, truncated, _ = self.core.step(np.asarray([action]))
        info: dict[str, Any] = {}
        if terminated[0]:
            info = {k: v[0].item() for k, v in self.core.episode_records(np.array([0])).items()}
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def action_masks(self) -> np.ndarray:
        return self.core.action_masks()[0]
