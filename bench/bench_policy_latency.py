"""One decision of an exported policy on one observation: execrl's ``NumpyPolicy`` against
Stable-Baselines3's ``predict``, in one run.

    python bench/bench_policy_latency.py [--calls 20000] [--json-out PATH]

Prints one JSON object on stdout. One process, one thread (numpy, numba and torch pinned to
one). The policy is PPO's as ``execrl train --algo ppo`` builds it (``PPOParams()``: two
hidden layers of 64, ReLU; an untrained network: latency does not depend on the weights),
on seed004 observations, for the seed004 (discrete, head ``argmax``) and the continuous
(head ``gaussian_mean``) action sets, exported with ``execrl.agents.ppo.export_policy``.

Per call, on one observation of the environment (float32, shape (1, 4)), ``--calls`` calls
after 2,000 untimed ones, each timed alone with ``perf_counter_ns``:

* ``numpy_forward``: ``NumpyPolicy.outputs(obs)``, the network's forward pass alone;
* ``numpy_decision``: ``NumpyPolicy.act(obs)``, the action (argmax / clipped mean);
* ``sb3_predict``: ``model.predict(obs, deterministic=True)`` on the same SB3 model.

Reported: p50, p99 and mean in µs, and ``ratio_p50`` / ``ratio_p99`` = SB3 / numpy decision.
The decisions are checked equal on 1,000 observations before timing.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from _output import emit  # noqa: E402  (bench/ is first on the path)

from execrl.agents.ppo import PPOParams, build_model, export_policy  # noqa: E402
from execrl.env.factory import DEFAULT_ORDER, EnvConfig  # noqa: E402
from execrl.env.sb3 import ExecutionSB3VecEnv  # noqa: E402


def latency(call: Callable[[], object], calls: int) -> dict[str, float]:
    for _ in range(2000):
        call()
    ns = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t = clock()
        call()
        ns[i] = clock() - t
    us = ns / 1e3
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "mean_us": float(us.mean())}


def bench(actions: str, calls: int) -> dict:
    config = EnvConfig(actions=actions)
    env = ExecutionSB3VecEnv(8, config, DEFAULT_ORDER)
    env.seed(0)
    model = build_model("ppo", PPOParams(), env, seed=0)
    policy = export_policy(model, "ppo", env.core.observations, env.core.action_set.name)
    observations = [env.reset()]
    rng = np.random.default_rng(0)
    for _ in range(125):
        if env.core.action_set.is_discrete:
            step = rng.integers(0, env.core.action_set.n_actions, size=8)
        else:
            step = rng.uniform(0, 0.3, size=(8, 1)).astype(np.float32)
        observations.append(env.step(step)[0])
    sample = np.concatenate(observations)[:1000]
    ours = policy.act(sample)
    theirs = np.stack([model.predict(o[None], deterministic=True)[0][0] for o in sample])
    if env.core.action_set.is_discrete:
        agree = float((ours == theirs).mean())
    else:
        agree = float(np.isclose(ours[:, 0], theirs[:, 0], atol=1e-5).mean())
    obs = sample[17:18].copy()
    out = {
        "head": policy.head,
        "decisions_agree": agree,
        "numpy_forward": latency(lambda: policy.outputs(obs), calls),
        "numpy_decision": latency(lambda: policy.act(obs), calls),
        "sb3_predict": latency(lambda: model.predict(obs, deterministic=True), calls),
    }
    out["ratio_p50"] = out["sb3_predict"]["p50_us"] / out["numpy_decision"]["p50_us"]
    out["ratio_p99"] = out["sb3_predict"]["p99_us"] / out["numpy_decision"]["p99_us"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    th.set_num_threads(1)
    result = {
        "benchmark": "policy_decision_latency",
        "policy": "PPO MLP [64, 64] ReLU on seed004 observations (4 features)",
        "calls": args.calls,
        **{actions: bench(actions, args.calls) for actions in ("seed004", "continuous")},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "torch": th.__version__},
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    emit(result, args.json_out)


if __name__ == "__main__":
    main()
