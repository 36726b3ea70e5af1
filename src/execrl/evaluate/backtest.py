"""Run policies over the same K parent orders on the same market paths and collect results.

Common random numbers: every policy's environment is reset with the same seed, and a
market draws each episode's whole path at reset, before any order, so order i meets the same
path under every policy; per-order differences are paired.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError, ParentOrder
from execrl.domain.errors import warn_user
from execrl.env.core import BatchedExecution
from execrl.env.factory import EnvConfig, market_for_order
from execrl.evaluate.behaviour import BehaviourTally
from execrl.executor.loop import Executor
from execrl.policies.base import Policy, PolicyContext
from execrl.policies.baselines import BASELINES, make_baseline
from execrl.sim.spec import MarketSpec

if TYPE_CHECKING:
    import pandas as pd

    from execrl.evaluate.decisions import DecisionRecorder


@dataclass
class PolicyRun:
    """One policy's K orders: per-order results (``columns``: ``ExecutionRun.columns`` and
    the risk proxy; ``episodes``: the same as a table) and the shares traded per step (and,
    when run with a decision recorder, one row per decision: ``execrl.evaluate.decisions``)."""

    policy: str
    columns: dict[str, Any]
    schedules: NDArray[np.int64]  # (K, N)
    decisions: pd.DataFrame | None = None
    behaviour: dict[str, Any] | None = None  # ``execrl.evaluate.behaviour``

    @cached_property
    def episodes(self) -> pd.DataFrame:
        """``columns`` as a table, built on first use (``execrl evaluate`` reads the columns:
        it does not import pandas)."""
        import pandas as pd

        return pd.DataFrame(self.columns)


def policy_context(config: EnvConfig, order: ParentOrder) -> PolicyContext:
    knowledge = market_for_order(config.market, order).knowledge()
    return PolicyContext(knowledge, order.qty, order.side.sign)


def run_policy(
    policy: Policy,
    config: EnvConfig,
    order: ParentOrder,
    n_orders: int,
    seed: int,
    on_step: Callable[[], None] | None = None,
    recorder: DecisionRecorder | None = None,
    on_obs: Callable[[NDArray], None] | None = None,
) -> PolicyRun:
    """Execute ``n_orders`` copies of ``order`` with ``policy``, episode i on path (seed, i);
    with a ``recorder``, log every decision (``PolicyRun.decisions``); ``on_obs`` sees the
    observations of the orders still running before each decision."""
    market = market_for_order(config.market, order)
    state: dict[str, Any] = {}

    def observers(core: BatchedExecution) -> list[Any]:
        state["log"] = None if recorder is None else recorder.start(policy.name, core, market)
        state["tally"] = BehaviourTally(core, getattr(policy, "feature_schema", None))
        return [w for w in (state["log"], state["tally"]) if w is not None]

    executor = Executor(policy, config.market, reward=config.reward)
    run = executor.run(order, n_orders, seed, on_step=on_step, on_obs=on_obs,
                       make_observers=observers)
    log, tally = state["log"], state["tally"]
    columns = {**run.columns, "risk_proxy_bps": risk_proxy_bps(run.schedules, order.qty, market)}
    decisions = None if log is None else log.frame()
    return PolicyRun(policy.name, columns, run.schedules, decisions, tally.summary(seed))


#: below this many orders a paired CI or p-value is not reported (a percentile bootstrap of
#: a handful of differences covers far less than its nominal 95 %)
MIN_ORDERS_FOR_INFERENCE = 10


def backtest_bytes(
    n_orders: int, n_policies: int, market: MarketSpec, log_decisions: bool = False
) -> int:
    """An upper estimate of what a backtest allocates, to refuse a run that cannot fit before
    it starts. Measured peak RSS above the imports: ~400 bytes per (order, policy) at 10 + 5
    steps (200,000 orders x 5 policies: 0.42 GB); this counts 32 bytes per (order, policy,
    step) with ten steps of slack, ~2x that, and 256 bytes per logged decision."""
    steps = market.n_steps + getattr(market, "pre_arrival_steps", 0) + 10
    total = n_orders * n_policies * steps * 32
    if log_decisions:
        total += n_orders * n_policies * market.n_steps * 256
    return int(total)


def order_warnings(market: MarketSpec, order: ParentOrder) -> list[str]:
    """What is wrong-looking about running ``order`` in ``market`` (the market with the order's
    horizon and price, ``market_for_order``): each a one-line warning."""
    out = []
    expected_volume = float(market.expected_volumes().sum())
    if order.qty > expected_volume:
        out.append(
            f"the order's {order.qty:,} shares are {order.qty / expected_volume:.1f}x the market "
            f"volume expected over its horizon ({expected_volume:,.0f} shares): the market "
            f"model is far outside what it describes"
        )
    cost = market.knowledge().cost_model
    if order.side.sign < 0 and cost is not None:
        # TWAP's last child: the price after the permanent impact of all the rest, less the
        # half spread and the temporary impact of one slice
        slice_qty = order.qty / cost.n_steps
        last_px = (cost.s0 - cost.gamma * (order.qty - slice_qty) - cost.epsilon
                   - cost.eta / cost.tau * slice_qty)
        if last_px <= 0:
            out.append(
                f"selling {order.qty:,} shares evenly would fill the last child at "
                f"{last_px:,.2f}, at or below zero, in this market's linear impact model"
            )
    return out


def risk_proxy_bps(schedule: NDArray[np.int64], qty: int, market: MarketSpec) -> NDArray:
    """λ·Σ_k v·x_k² per order in bps of X·S0, v the price variance a held share adds per step
    (σ_eff²·τ in the AC market): the variance term of the schedule actually traded (equal to
    λ·Var[cost] for a schedule fixed in advance in the AC market). IS plus this is the
    per-order mean-variance objective the risk-averse optimum minimises."""
    holdings = qty - np.cumsum(schedule, axis=1).astype(np.float64)  # x_1 … x_N
    risk = market.risk_aversion * market.risk_var_per_share2() * (holdings**2).sum(axis=1)
    return risk / (qty * market.s0) * 1e4


def is_folder(path: str) -> bool:
    """Path.is_dir, false where the name cannot even be looked up (too long, say)."""
    try:
        return Path(path).is_dir()
    except OSError:
        return False


def resolve_policy(
    spec: str,
    ctx: PolicyContext,
    config: EnvConfig | None = None,
    order: ParentOrder | None = None,
) -> Policy:
    """A baseline (``twap``, ``pov:0.1``) or a trained checkpoint (``ppo:runs/ppo``, labelled
    by the part before the colon). A checkpoint is verified (``NumpyPolicy.load`` with
    ``checkpoint=True``); its label may not be a baseline's name (``ac:runs/ppo`` would show a
    learned policy as Almgren–Chriss); with ``config`` and ``order``, a checkpoint trained on
    another market or order is run with a one-line warning naming what differs."""
    label, _, param = spec.partition(":")
    if param and ("/" in param or is_folder(param)):
        from execrl.agents.checkpoint import training_mismatch
        from execrl.agents.export import NumpyPolicy

        if not label:
            raise ConfigError(f"policy {spec!r} has no label: write LABEL:{param}")
        if label in BASELINES:
            raise ConfigError(
                f"policy {spec!r}: label {label!r} is a baseline's name; label the checkpoint "
                f"with another name (e.g. 'my-{label}:{param}')"
            )
        policy = NumpyPolicy.load(Path(param), name=label, checkpoint=True)
        if config is not None and order is not None:
            mismatch = training_mismatch(policy, config.market, order)
            if mismatch:
                warn_user(mismatch)
        return policy
    return make_baseline(spec, ctx)


def run_policies(
    specs: Sequence[str],
    config: EnvConfig,
    order: ParentOrder,
    n_orders: int,
    seed: int,
    on_step: Callable[[], None] | None = None,
    recorder: DecisionRecorder | None = None,
    on_start: Callable[[], None] | None = None,
) -> list[PolicyRun]:
    """Run every policy of ``specs``; ``on_start`` is called once they are all resolved and
    checked, right before the first runs (a caller's notices then follow every refusal)."""
    ctx = policy_context(config, order)
    # all refused before any runs
    policies = [resolve_policy(spec, ctx, config, order) for spec in specs]
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ConfigError(f"policies {', '.join(names)} name one policy twice")
    if on_start is not None:
        on_start()
    return [run_policy(p, config, order, n_orders, seed, on_step, recorder) for p in policies]
