"""The core's step, guarded, against an older guarded tree and the core before the guard, in one
process by CPU time (interleaved rounds, best of each).

    git show <commit>:src/execrl/safety/guard.py > OLD/old_guard.py
    git show <commit>:src/execrl/env/core.py \\
        | sed 's/from execrl.safety.guard import/from old_guard import/' > OLD/old_core.py
    git show d11447b:src/execrl/env/core.py > REF/core_ab.py   # the core before the guard
    GUARD_AB_OLD=OLD GUARD_AB_REF=REF/core_ab.py python bench/bench_guard_ab.py

Prints one JSON object: per cell (1 and 4,096 envs; default order, order constraints
child_max + participation, action masks asked before every step) the step in µs of CPU time
for this checkout (``new``), the old tree (``old``) and the pre-guard core (``preguard``), and
their ratios. seed004 / random actions, autoreset, default AC market.
"""

import os

for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(v, "1")
import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from execrl.domain import OrderConstraints  # noqa: E402
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution  # noqa: E402

sys.path.insert(0, os.environ["GUARD_AB_OLD"])
import old_core  # noqa: E402


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m


ref_core = _load(os.environ["GUARD_AB_REF"], "ref_core2")


def build(cls, n, constraints):
    order = DEFAULT_ORDER if constraints is None else DEFAULT_ORDER.model_copy(
        update={"constraints": constraints})
    proto = make_execution(EnvConfig(), order, n, autoreset=True)
    if cls is None:
        return proto
    return cls(proto.market, proto.qty, proto.side, proto.observations, proto.action_set,
               proto.reward, order.constraints, True, proto._risk_var)


def run(n, constraints=None, masks=False, rounds=5):
    steps = 300 if n > 100 else 3000
    acts = np.random.default_rng(1).integers(0, 5, (64, n))
    cores = {"new": build(None, n, constraints), "old": build(old_core.BatchedExecution, n,
                                                              constraints),
             "preguard": build(ref_core.BatchedExecution, n, constraints)}
    for c in cores.values():
        c.reset(seed=0)
        for j in range(5):
            c.step(acts[j])
    best = {}
    for _ in range(rounds):
        for name, c in cores.items():
            t0 = time.thread_time()
            for j in range(steps):
                if masks:
                    c.action_masks()
                c.step(acts[j % 64])
            best[name] = min(best.get(name, np.inf), (time.thread_time() - t0) / steps)
    out = {k: round(v * 1e6, 1) for k, v in best.items()}
    out["new/old"] = round(best["new"] / best["old"], 3)
    out["new/preguard"] = round(best["new"] / best["preguard"], 3)
    out["old/preguard"] = round(best["old"] / best["preguard"], 3)
    return out


if __name__ == "__main__":
    res = {}
    for n in (1, 4096):
        res[f"n{n} default"] = run(n)
        res[f"n{n} constraints"] = run(n, OrderConstraints(child_max=3000, participation=0.1))
        res[f"n{n} masks"] = run(n, masks=True)
    print(json.dumps(res, indent=1))
