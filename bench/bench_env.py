"""Environment throughput: env-steps per second of every front end, and of a seed-004-style
one-environment-at-a-time Python environment for reference.

    python bench/bench_env.py [--n-envs 4096] [--seconds 3] [--json-out PATH] [--actions seed004]

Prints one JSON object on stdout (progress goes to stderr). One process, one core: the
thread pools numpy, numba and torch could use are pinned to one thread before they load.

What is timed, per variant, after a warm-up that is not timed:

* ``batched_core``: ``execrl.env.core.BatchedExecution`` from ``make_execution(EnvConfig(),
  DEFAULT_ORDER, n_envs, autoreset=True)`` (default Almgren–Chriss market, seed004
  observations and actions, is_bps reward), stepped with random discrete actions;
* ``vector_env``: ``ExecutionVectorEnv`` (gymnasium ``VectorEnv``) over the same core;
* ``sb3_vec_env``: ``ExecutionSB3VecEnv`` (Stable-Baselines3 ``VecEnv``, with its per-env
  Python ``infos`` list), skipped when stable-baselines3 is not installed;
* ``single_env``: ``ExecutionEnv`` (one gymnasium ``Env``), reset when an episode ends;
* ``seed004_reference``: ``Seed004StyleEnv`` below, a plain Python ``gymnasium.Env`` written
  like seed 004's ``ExecutionEnvironment`` (one environment, scalar Python per step) but on our
  default market's parameters, stepped in a Python loop over ``n_envs`` copies.

env-steps = environments × steps. Random actions are drawn before timing, in one block that the
timed loop cycles through; what drawing them per step would cost is reported separately
(``action_draw_us_per_step``), not included. The first call of the batched core (building it,
the first reset and step: numba's compilation, or the load of its cache, happens there) is
timed and reported as ``batched_core_first_call_s``, outside the throughput figures.

With seed004's actions (all fractions > 0) no order finishes before the horizon, so every
environment restarts in the same step; ``--actions seed003`` (which has "all") ends episodes at
random times and exercises the partial autoreset instead.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution, market_for_order  # noqa: E402
from execrl.env.spaces import ACTION_SETS  # noqa: E402

ACTION_BLOCK = 64  # steps of pre-drawn actions the timed loop cycles through
WARMUP_S = 0.3


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Seed004StyleEnv(gym.Env):
    """Seed 004's ``ExecutionEnvironment`` (section 2), one environment in plain Python, on
    the parameters of our default Almgren–Chriss market and order so that the work per step is
    the same: a sell of ``qty`` shares in ``n_steps`` steps; per step the shares from the action
    fraction (at least one, everything at the last step), the temporary impact on the execution
    price, the permanent impact and one normal draw on the mid, reward = −(step IS in bps)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, fractions: tuple[float, ...]) -> None:
        super().__init__()
        market = market_for_order(EnvConfig().market, DEFAULT_ORDER)
        self.Q = DEFAULT_ORDER.qty
        self.side = DEFAULT_ORDER.side.sign  # -1: a sell
        self.T = market.n_steps
        self.P0 = market.s0
        self.tau = market.tau
        self.sigma = market.sigma_eff
        self.eps = market.epsilon
        self.eta = market.eta
        self.gamma = market.gamma
        self.drift = market.drift
        self.horizon = market.horizon
        self.action_map = np.array(fractions)
        self.action_space = spaces.Discrete(len(self.action_map))
        self.observation_space = spaces.Box(
            low=np.array([0.0, 0.0, -np.inf, 0.0], dtype=np.float32),
            high=np.array([1.0, 1.0, np.inf, np.inf], dtype=np.float32),
            dtype=np.float32,
        )
        self.price = self.P0
        self.remaining_shares = self.Q
        self.current_period = 0
        self.total_cost = 0.0

    def _get_obs(self) -> np.ndarray:
        fraction_remaining = self.remaining_shares / self.Q
        fraction_time_elapsed = self.current_period / self.T
        price_drift = (self.price - self.P0) / (self.sigma * math.sqrt(self.horizon))
        return np.array(
            [fraction_remaining, fraction_time_elapsed, price_drift, 1.0], dtype=np.float32
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.price = self.P0
        self.remaining_shares = self.Q
        self.current_period = 0
        self.total_cost = 0.0
        return self._get_obs(), {}

    def step(self, action_idx: int):
        if not self.action_space.contains(action_idx):
            raise ValueError(f"Invalid action index: {action_idx}")
        action_fraction = self.action_map[action_idx]
        shares = round(self.remaining_shares * action_fraction)
        if self.current_period == self.T - 1:
            shares = self.remaining_shares
        else:
            if shares == 0 and self.remaining_shares > 0 and action_fraction > 0:
                shares = 1
            shares = min(shares, self.remaining_shares)
        traded = shares > 0
        # temporary impact (and half spread) on this trade's price
        execution_price = self.price + self.side * (
            self.eps * traded + self.eta / self.tau * shares
        )
        # permanent impact and one normal draw move the mid
        self.price += (
            self.drift * self.tau
            + self.sigma * math.sqrt(self.tau) * self.np_random.standard_normal()
            + self.side * self.gamma * shares
        )
        self.remaining_shares -= shares
        self.current_period += 1
        cost = self.side * (execution_price - self.P0) * shares
        self.total_cost += cost
        terminated = self.remaining_shares <= 0 or self.current_period >= self.T
        reward = -(cost / (self.Q * self.P0)) * 1e4 if traded else 0.0
        info = {
            "current_price": self.price,
            "execution_price": execution_price,
            "shares_traded": shares,
            "remaining_shares": self.remaining_shares,
        }
        return self._get_obs(), reward, terminated, False, info


def timed(name: str, step_block: Callable[[], int], seconds: float) -> dict[str, float | int]:
    """Call ``step_block`` (returns env-steps done) for ``WARMUP_S``, then for ``seconds``."""
    t_end = time.perf_counter() + WARMUP_S
    while time.perf_counter() < t_end:
        step_block()
    env_steps = 0
    calls = 0
    t0 = time.perf_counter()
    t_end = t0 + seconds
    while True:
        env_steps += step_block()
        calls += 1
        now = time.perf_counter()
        if now >= t_end:
            break
    elapsed = now - t0
    rate = env_steps / elapsed
    log(f"{name:>20}: {rate:>14,.0f} env-steps/s ({env_steps:,} env-steps in {elapsed:.2f} s)")
    return {"env_steps": env_steps, "seconds": elapsed, "env_steps_per_s": rate}


def bench_batched_core(
    config: EnvConfig, n_envs: int, seconds: float, actions: np.ndarray
) -> tuple[dict, float]:
    t0 = time.perf_counter()
    core = make_execution(config, DEFAULT_ORDER, n_envs=n_envs, autoreset=True)
    core.reset(seed=0)
    core.step(actions[0])
    first_call = time.perf_counter() - t0
    i = 0

    def block() -> int:
        nonlocal i
        for _ in range(8):
            core.step(actions[i % ACTION_BLOCK])
            i += 1
        return 8 * n_envs

    return timed("batched_core", block, seconds), first_call


def bench_vector_env(config: EnvConfig, n_envs: int, seconds: float, actions: np.ndarray) -> dict:
    from execrl.env.vector_env import ExecutionVectorEnv

    env = ExecutionVectorEnv(n_envs, config)
    env.reset(seed=0)
    i = 0

    def block() -> int:
        nonlocal i
        for _ in range(8):
            env.step(actions[i % ACTION_BLOCK])
            i += 1
        return 8 * n_envs

    return timed("vector_env", block, seconds)


def bench_sb3_vec_env(
    config: EnvConfig, n_envs: int, seconds: float, actions: np.ndarray
) -> dict | None:
    try:
        from execrl.env.sb3 import ExecutionSB3VecEnv
    except ImportError as exc:  # the ``rl`` extra is not installed
        log(f"sb3_vec_env: skipped ({exc})")
        return None
    env = ExecutionSB3VecEnv(n_envs, config)
    env.seed(0)
    env.reset()
    i = 0

    def block() -> int:
        nonlocal i
        for _ in range(8):
            env.step(actions[i % ACTION_BLOCK])
            i += 1
        return 8 * n_envs

    return timed("sb3_vec_env", block, seconds)


def bench_single_env(config: EnvConfig, seconds: float, actions: list[int]) -> dict:
    from execrl.env.execution_env import ExecutionEnv

    env = ExecutionEnv(config)
    env.reset(seed=0)
    i = 0
    n = len(actions)

    def block() -> int:
        nonlocal i
        for _ in range(256):
            _, _, terminated, truncated, _ = env.step(actions[i % n])
            i += 1
            if terminated or truncated:
                env.reset()
        return 256

    return timed("single_env", block, seconds)


def bench_seed004(
    fractions: tuple[float, ...], n_envs: int, seconds: float, actions: list[list[int]]
) -> dict:
    envs = [Seed004StyleEnv(fractions) for _ in range(n_envs)]
    for j, env in enumerate(envs):
        env.reset(seed=j)
    i = 0

    def block() -> int:  # one step of every environment, Python loop over them
        nonlocal i
        row = actions[i % ACTION_BLOCK]
        for j, env in enumerate(envs):
            _, _, terminated, truncated, _ = env.step(row[j])
            if terminated or truncated:
                env.reset()
        i += 1
        return n_envs

    return timed("seed004_reference", block, seconds)


def action_draw_cost(n_envs: int, n_actions: int) -> float:
    rng = np.random.default_rng(1)
    reps = 2000
    t0 = time.perf_counter()
    for _ in range(reps):
        rng.integers(0, n_actions, size=n_envs)
    return (time.perf_counter() - t0) / reps * 1e6


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "threads_env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")},
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import numba

        info["numba"] = numba.__version__
    except ImportError:
        info["numba"] = None
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-envs", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per variant")
    parser.add_argument("--json-out", default=None, help="also write the JSON here")
    parser.add_argument(
        "--actions", default="seed004", choices=["seed004", "seed003"], help="discrete action set"
    )
    args = parser.parse_args(argv)
    if args.n_envs < 1 or args.seconds <= 0:
        parser.error("--n-envs must be >= 1 and --seconds > 0")
    n_envs, seconds = args.n_envs, args.seconds
    config = EnvConfig(actions=args.actions)
    fractions = ACTION_SETS[args.actions].fractions
    assert fractions is not None

    n_actions = len(fractions)
    rng = np.random.default_rng(12345)
    actions = rng.integers(0, n_actions, size=(ACTION_BLOCK, n_envs))
    actions_py = actions.tolist()  # Python ints for the one-env-at-a-time loops

    results: dict[str, dict | None] = {}
    results["batched_core"], first_call = bench_batched_core(config, n_envs, seconds, actions)
    results["vector_env"] = bench_vector_env(config, n_envs, seconds, actions)
    results["sb3_vec_env"] = bench_sb3_vec_env(config, n_envs, seconds, actions)
    flat_actions = [a for row in actions_py for a in row]
    results["single_env"] = bench_single_env(config, seconds, flat_actions)
    results["seed004_reference"] = bench_seed004(fractions, n_envs, seconds, actions_py)

    rates = {k: (v["env_steps_per_s"] if v else None) for k, v in results.items()}
    ref = rates["seed004_reference"]
    out: dict[str, Any] = {
        "benchmark": "env_steps",
        "n_envs": n_envs,
        "seconds": seconds,
        # step() calls (a batched step advances n_envs environments; the seed-004 reference
        # counts one pass over its n_envs copies as one step)
        "steps": {
            k: (v["env_steps"] // (1 if k == "single_env" else n_envs) if v else None)
            for k, v in results.items()
        },
        "env_steps": {k: (v["env_steps"] if v else None) for k, v in results.items()},
        "timed_seconds": {k: (v["seconds"] if v else None) for k, v in results.items()},
        "env_steps_per_s": rates,
        "ratio_batched_vs_seed004": rates["batched_core"] / ref,
        "ratio_vs_seed004": {k: (r / ref if r else None) for k, r in rates.items()},
        "batched_core_us_per_step": n_envs / rates["batched_core"] * 1e6,
        "batched_core_first_call_s": first_call,
        "action_draw_us_per_step": action_draw_cost(n_envs, n_actions),
        "env": {
            "config": f"EnvConfig(actions={args.actions!r}) (AC market defaults, seed004 "
            "observations, is_bps reward)",
            "order": "DEFAULT_ORDER (sell 1,000,000 shares, 10 steps)",
            "autoreset": True,
            "actions": f"uniform random over {n_actions} discrete actions, pre-drawn block "
            f"of {ACTION_BLOCK} steps",
        },
        "machine": machine_info(),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            fh.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
