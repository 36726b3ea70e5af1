"""Stable-Baselines3 ``VecEnv`` over the batched execution loop (needs the ``rl`` extra).

SB3 and sb3-contrib train on it directly, ``MaskablePPO`` included (``env_method
("action_masks")``), with no Python loop over environments in the step; only the per-env
``infos`` list SB3's API requires is built in Python, and only finished episodes get content.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from execrl._compat import import_legacy_gym_quietly

import_legacy_gym_quietly()  # before SB3, which imports it when installed

from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices  # noqa: E402

from execrl.domain import ParentOrder  # noqa: E402
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution  # noqa: E402


class ExecutionSB3VecEnv(VecEnv):
    def __init__(
        self, num_envs: int, config: EnvConfig | None = None, order: ParentOrder = DEFAULT_ORDER
    ):
        self.config = config or EnvConfig()
        self.order = order
        self.core = make_execution(self.config, order, n_envs=num_envs, autoreset=True)
        self.render_mode = None
        n_obs = len(self.core.observations)
        obs_space = spaces.Box(-np.inf, np.inf, shape=(n_obs,), dtype=np.float32)
        super().__init__(num_envs, obs_space, self.core.action_set.space())
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seed = self._seeds[0]
        obs = self.core.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        assert self._actions is not None, "step_async must come before step_wait"
        obs, reward, terminated, truncated, core_info = self.core.step(self._actions)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if "done_ids" in core_info:
            episode = core_info["episode"]
            for j, i in enumerate(core_info["done_ids"]):
                infos[i] = {
                    "terminal_observation": core_info["final_obs"][j],
                    "TimeLimit.truncated": False,
                    "episode": {
                        "r": float(episode["return"][j]),
                        "l": int(episode["steps"][j]),
                        "t": 0.0,
                    },
                    "is_bps": float(episode["is_bps"][j]),
                }
        return obs, reward, terminated | truncated, infos

    def close(self) -> None:
        pass

    def action_masks(self) -> np.ndarray:
        return self.core.action_masks()

    # -- attribute plumbing SB3 expects of a VecEnv -----------------------------------------
    def has_attr(self, attr_name: str) -> bool:
        return hasattr(self, attr_name)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        ids = list(self._get_indices(indices))
        if method_name == "action_masks":
            return list(self.core.action_masks()[ids])
        result = getattr(self, method_name)(*method_args, **kwargs)
        return [result for _ in ids]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
