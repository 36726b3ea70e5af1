"""Order-book throughput: simulated events per second per core of the batched book against a
one-book-at-a-time plain-Python reference of the same model, and env-steps per second of the
execution core on it.

    python bench/bench_lob.py [--books 1000,10000] [--seconds 60] [--ref-books 16]
                              [--ref-seconds 60] [--env-n 1000] [--json-out PATH]

Prints one JSON object on stdout (progress on stderr). One process, one thread (the thread
pools are pinned to one before numpy and numba load). "Per core" figures divide by the CPU
time the process used (``time.process_time``), so a machine shared with other jobs does not
deflate them; wall-clock rates are reported beside them.

What is timed, after a warm-up that is not (numba's compilation or cache load happens there):

* ``kernel``: ``lob_kernels.flow`` over ``--seconds`` of the calm book's flow (no agent) for
  ``--books`` books at once, called through ``LOBMarket._run_flow`` (the buffer growth
  included); events = the others' events the books simulated (limit orders, cancels, market
  orders, p_ref moves counted with the event that caused them; thinned-out candidates not
  counted: they are reported as ``candidates``);
* ``market_execute``: the same books stepped through ``LOBMarket.execute`` with no child
  orders, one decision step of ``--seconds`` (the feature builder fed with every trade and the
  book at the step's end, included);
* ``reference``: ``lob_reference.ReferenceBook`` (the same model in plain Python, checked event
  for event against the kernel in tests/test_lob.py), ``--ref-books`` books one after the other
  over ``--ref-seconds``;
* ``env``: ``BatchedExecution`` (env/core.py) from ``make_execution`` on the calm book with the
  ``full`` observations and continuous actions, a TWAP of market orders (fraction 1 / steps
  left of what remains), ``--env-n`` environments, 10 s steps, autoreset.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from execrl.domain import ParentOrder, Side  # noqa: E402
from execrl.env.factory import EnvConfig, make_execution  # noqa: E402
from execrl.sim import lob_kernels as kern  # noqa: E402
from execrl.sim.base import ChildOrderBatch  # noqa: E402
from execrl.sim.lob_config import LOB_REGIMES, LOBMarketConfig  # noqa: E402
from execrl.sim.lob_reference import ReferenceBook  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _rates(events: int, candidates: int, start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
    return {
        "events": int(events),
        "candidates": int(candidates),
        "wall_s": wall,
        "cpu_s": cpu,
        "events_per_s_wall": events / wall,
        "events_per_cpu_s": events / cpu,
        "candidates_per_cpu_s": candidates / cpu,
    }


def bench_kernel(config: LOBMarketConfig, n: int, seconds: float) -> dict[str, float]:
    market = config.build(n, 1)
    market.reset(np.random.default_rng(0))
    active = np.ones(n, dtype=bool)
    t = np.zeros(n)
    market._run_flow(active, t + 1.0, in_order=True)  # warm-up (compiled already by reset)
    e0, c0 = market.events.sum(), market._ints[:, kern.I_CTR].sum()
    market._n_tr[0] = market._n_fl[0] = 0
    start = _clock()
    market._run_flow(active, t + 1.0 + seconds, in_order=True)
    return _rates(market.events.sum() - e0, market._ints[:, kern.I_CTR].sum() - c0, start)


def bench_market(config: LOBMarketConfig, n: int, seconds: float) -> dict[str, float]:
    cfg = config.model_copy(update={"step_seconds": seconds, "horizon_s": 2 * seconds})
    market = cfg.build(n, 1)
    market.reset(np.random.default_rng(1))
    orders = ChildOrderBatch.market_orders(n)
    active = np.ones(n, dtype=bool)
    e0, c0 = market.events.sum(), market._ints[:, kern.I_CTR].sum()
    start = _clock()
    market.execute(orders, active)
    return _rates(market.events.sum() - e0, market._ints[:, kern.I_CTR].sum() - c0, start)


def bench_reference(config: LOBMarketConfig, n: int, seconds: float) -> dict[str, float]:
    keys = np.random.default_rng(2).integers(0, 2**63, n)
    events = candidates = 0
    start = _clock()
    for key in keys:  # one book at a time
        book = ReferenceBook(config, int(key))
        book.run(seconds)
        events += book.events
        candidates += book.ctr
    return _rates(events, candidates, start)


def bench_env(config: LOBMarketConfig, n: int) -> dict[str, float]:
    order = ParentOrder(order_id="B-1", symbol="XYZ", side=Side.BUY, qty=6_000,
                        arrival_px=config.s0, start_ts=0.0, horizon_s=300.0)
    env_config = EnvConfig(market=config, observations="full", actions="continuous")
    t0 = time.perf_counter()
    core = make_execution(env_config, order, n_envs=n, autoreset=True)
    core.reset(seed=0)
    steps = core.n_steps
    first = time.perf_counter() - t0

    def twap(k: int) -> np.ndarray:
        return np.full(n, 1.0 / (steps - k % steps))

    for k in range(steps):  # warm-up: one whole episode (compiles the core's kernels)
        core.step(twap(k))
    start = _clock()
    episodes = 2
    for k in range(episodes * steps):
        core.step(twap(k))
    wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
    env_steps = n * episodes * steps
    return {
        "n_envs": n,
        "steps_per_episode": steps,
        "env_steps": env_steps,
        "wall_s": wall,
        "cpu_s": cpu,
        "env_steps_per_s_wall": env_steps / wall,
        "env_steps_per_cpu_s": env_steps / cpu,
        # each env-step simulates step_s of the book's flow; each episode also its warm-up
        "book_seconds_per_env_step": config.step_seconds + config.warmup_s / steps,
        "build_reset_first_s": first,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--books", default="1000,10000")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--ref-books", type=int, default=16)
    p.add_argument("--ref-seconds", type=float, default=60.0)
    p.add_argument("--env-n", type=int, default=1000)
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    config = LOB_REGIMES["calm"][1]
    t0 = time.perf_counter()
    warm = config.build(8, 1)
    warm.reset(np.random.default_rng(0))
    warm.execute(ChildOrderBatch.market_orders(8), np.ones(8, dtype=bool))
    first_call = time.perf_counter() - t0
    out: dict = {
        "benchmark": "bench_lob",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.uname().machine,
        "cpu_count": os.cpu_count(),
        "threads": 1,
        "regime": "calm",
        "thinning_rate_per_book_s": config.thinning_rate(),
        "first_call_s": first_call,
        "kernel": {},
        "market_execute": {},
    }
    log(f"reference: {args.ref_books} books x {args.ref_seconds:g} s, one at a time")
    ref = bench_reference(config, args.ref_books, args.ref_seconds)
    out["reference"] = ref
    for n in (int(x) for x in args.books.split(",")):
        log(f"kernel: {n} books x {args.seconds:g} s")
        out["kernel"][str(n)] = bench_kernel(config, n, args.seconds)
        log(f"market.execute: {n} books, one step of {args.seconds:g} s")
        out["market_execute"][str(n)] = bench_market(config, n, args.seconds)
    out["speedup_per_core_vs_reference"] = {
        n: r["events_per_cpu_s"] / ref["events_per_cpu_s"] for n, r in out["kernel"].items()
    }
    out["speedup_wall_vs_reference"] = {
        n: r["events_per_s_wall"] / ref["events_per_s_wall"] for n, r in out["kernel"].items()
    }
    log(f"env: BatchedExecution, {args.env_n} envs, TWAP market orders")
    out["env"] = bench_env(config, args.env_n)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
