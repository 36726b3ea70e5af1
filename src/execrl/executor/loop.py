"""The one execution loop: parent orders → features → policy → risk guard → child orders →
venue → fills → back, watched by the watchdog, every decision on record.

Backtests (``execrl evaluate``), shadow runs, paper trading and the greedy rollouts training
measures all run through ``Executor.run``; there is no second copy of this loop. The loop is
batched: one call runs ``n_orders`` copies of a parent order, order i on market path
(seed, i) (common random numbers: two policies meet the same paths), and with one order it
is the low-latency path. ``Executor.run_orders`` runs the same loop over a list of the desk's
parent orders that can share a batch (``batch_key``: one symbol, side, horizon, market and
constraints; sizes and ids may differ), order i on the path a one-order run seeded
``seeds[i]`` meets: one policy call per step for all of them.

What the loop adds to the execution core (``env.core.BatchedExecution``, which books fills and
applies the risk guard to every child order whatever the policy asks):

- the policy is called defensively: a policy that raises, returns NaN, returns an action
  outside its space or returns the wrong shape is contained per order (the batch is retried
  one order at a time to find which), never failing the batch;
- the watchdog (``safety.watchdog``) sees every decision and switches an order to its
  fallback schedule (``safety.fallback``) for the rest of its life when a trigger fires; the
  fallback's child orders go through the same guard. In ``train`` mode it only records;
- with the watchdog on, a shadow TWAP runs in lockstep on the same market paths (same
  seeds): the loss trigger's benchmark and the metrics' paired baseline
  (``ExecutionRun.shadow_twap``);
- with ``explore``, guard-gated exploration of a non-critical axis (``executor.explore``),
  each action's propensity in the trail;
- an audit trail (``executor.audit``), when given, receives every decision, child order,
  fill and market row, and each order's summary and incidents.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from execrl.domain import ConfigError, OrderType, ParentOrder, Side
from execrl.env.core import BatchedExecution
from execrl.env.factory import EnvConfig, make_execution, market_for_order
from execrl.env.spaces import OrderStyle
from execrl.executor.venues import wrap_venue
from execrl.policies.base import Policy, PolicyContext
from execrl.sim.spec import MarketSpec

if TYPE_CHECKING:  # a run's table (``ExecutionRun.episodes``) imports pandas where it is read
    import pandas as pd

#: what the loop may be run for; the watchdog acts in all but ``train``
MODES = ("backtest", "shadow", "paper", "train")


class StepObserver(Protocol):
    """Something that watches the loop (the decision recorder, the behaviour tally):
    ``before(actions, obs)`` right before the core's step, ``after()`` right after. An
    observer with a ``decided(step)`` method (``Decision``) is shown each step's decision
    context first: the action probabilities, the policy call's time, the watchdog's state."""

    def before(self, actions: NDArray, obs: NDArray | None = None) -> None: ...

    def after(self) -> None: ...


@dataclass(frozen=True)
class Decision:
    """One step's decision context for observers that ask for it (``StepObserver``):
    ``probs`` (n, n_actions) where the policy has them (``action_probabilities``, else None),
    the policy call's ``latency_s`` for the whole batch, and ``acting`` (n,) the watchdog's
    state name per order (``ACTING``; None without a watchdog)."""

    probs: NDArray | None
    latency_s: float
    acting: NDArray[np.object_] | None


@dataclass(frozen=True)
class PolicySet:
    """One policy per side (seed 000 Q3: the same architecture, a separate model for sells);
    ``sell`` None: ``buy`` trades both sides."""

    buy: Policy
    sell: Policy | None = None

    def for_side(self, side: Side) -> Policy:
        return self.sell if side is Side.SELL and self.sell is not None else self.buy


def policy_hash(policy: Policy) -> str:
    """A learned policy's hash (``NumpyPolicy.policy_hash``); a baseline's name and
    parameters otherwise, so every audited decision names what decided it."""
    fn = getattr(policy, "policy_hash", None)
    if callable(fn):
        return str(fn())
    return f"baseline:{policy.name}"


def action_probabilities(policy: Policy, obs: NDArray, masks: NDArray | None) -> NDArray | None:
    """(n, n_actions) action probabilities where the policy has them (a softmax over the
    logits of a policy-gradient or behaviour-cloning head, masked), else None: a greedy
    value policy (DQN, QR-DQN, CQL, a Q table) has Q-values, not a confidence."""
    head = getattr(policy, "head", None)
    algo = (getattr(policy, "meta", None) or {}).get("algo", "")
    if head != "argmax" or algo not in PROBABILISTIC_ALGOS:
        return None
    # the same operations as np.where / subtract / exp / divide, in one buffer
    e = np.array(policy.outputs(obs))  # type: ignore[attr-defined]
    if masks is not None:
        np.putmask(e, np.logical_not(masks), -np.inf)
    e -= e.max(axis=1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=1, keepdims=True)
    return e


#: learned policies whose outputs are logits of a categorical policy
PROBABILISTIC_ALGOS = ("ppo", "maskable_ppo", "bc", "discrete_bc")


def action_scores(policy: Policy, obs: NDArray) -> NDArray | None:
    """Q-values or logits, for the audit trail (off-policy evaluation reads them)."""
    fn = getattr(policy, "action_scores", None)
    if not callable(fn) or getattr(policy, "head", None) == "gaussian_mean":
        return None
    return np.asarray(fn(obs), dtype=np.float64)


# -- the policy, called defensively -----------------------------------------------------------
# fault codes per order (``safety.watchdog.POLICY_FAULTS``)
FAULT_NONE, FAULT_RAISED, FAULT_TIMEOUT, FAULT_NAN, FAULT_OUT_OF_SPACE = range(5)


def validate_actions(policy_actions: Any, action_set: Any, n: int) -> tuple[NDArray, NDArray]:
    """The policy's output checked against its action space, per order: (actions to send,
    fault codes). A faulty order's action is replaced by a harmless one (send nothing: the
    watchdog hands it to its fallback in the same step)."""
    a = policy_actions
    if type(a) is np.ndarray and a.dtype.kind in "iu" and a.shape == (n,) and n \
            and action_set.is_discrete and not (action_set.multi_discrete and action_set.factors) \
            and a.min() >= 0 and a.max() < len(action_set.fractions):
        # the common case (an argmax): whole numbers inside the space, nothing to fault
        return a.astype(np.int64), np.zeros(n, dtype=np.int8)
    faults = np.zeros(n, dtype=np.int8)
    a = np.asarray(policy_actions)
    if action_set.is_discrete:
        width = len(action_set.factors) if action_set.multi_discrete and action_set.factors else 0
        shape = (n, width) if width else (n,)
        if a.shape == (n, 1) and not width:
            a = a.reshape(n)
        if a.shape != shape or not np.issubdtype(a.dtype, np.number):
            faults[:] = FAULT_OUT_OF_SPACE
            return _safe_actions(action_set, n, width), faults
        af = a.astype(np.float64)
        finite = np.isfinite(af) if af.ndim == 1 else np.isfinite(af).all(axis=1)
        faults[~finite] = FAULT_NAN
        af = np.where(np.isfinite(af), af, 0.0)
        tops = np.asarray(action_set.factors if width else (action_set.n_actions,))
        inside = (af >= 0) & (af < tops) & (af == np.floor(af))
        inside = inside if inside.ndim == 1 else inside.all(axis=1)
        faults[finite & ~inside] = FAULT_OUT_OF_SPACE
        clean = af.astype(np.int64)
        bad = faults != FAULT_NONE
        if bad.any():
            clean[bad] = _safe_actions(action_set, int(bad.sum()), width)
        return clean, faults
    space = action_set.space()
    width = space.shape[0]
    if a.ndim == 1 and width == 1 and a.shape == (n,):
        a = a.reshape(n, 1)
    if a.shape != (n, width) or not np.issubdtype(a.dtype, np.number):
        faults[:] = FAULT_OUT_OF_SPACE
        return _safe_actions(action_set, n, width), faults
    af = a.astype(np.float64)
    finite = np.isfinite(af).all(axis=1)
    faults[~finite] = FAULT_NAN
    inside = ((af >= space.low) & (af <= space.high)).all(axis=1)
    faults[finite & ~inside] = FAULT_OUT_OF_SPACE
    bad = faults != FAULT_NONE
    af[bad] = 0.0
    return af.astype(np.float32), faults


def _safe_actions(action_set: Any, n: int, width: int) -> NDArray:
    """Send nothing: a fraction of 0 where the set has one, else its smallest action."""
    if not action_set.is_discrete:
        return np.zeros((n, width), dtype=np.float32)
    frac = np.asarray(action_set.fractions)
    idx = int(np.argmin(frac))
    if width:
        return np.tile(np.array(np.unravel_index(idx, action_set.factors)), (n, 1))
    return np.full(n, idx, dtype=np.int64)


def call_policy(
    policy: Policy, obs: NDArray, masks: NDArray | None, action_set: Any
) -> tuple[NDArray, NDArray, float]:
    """(actions, fault codes, latency in seconds) for a batch. A batch that raises is retried
    one order at a time, so only the orders whose observation makes the policy fail are
    faulted (the slow path, taken only on a fault)."""
    n = obs.shape[0]
    t0 = time.perf_counter()
    try:
        raw = policy.act(obs, masks)
        failed = False
    except Exception:
        failed = True
    latency = time.perf_counter() - t0
    if not failed:
        actions, faults = validate_actions(raw, action_set, n)
        return actions, faults, latency
    width = len(action_set.factors) if action_set.multi_discrete and action_set.factors else (
        0 if action_set.is_discrete else action_set.space().shape[0])
    actions = _safe_actions(action_set, n, width)
    faults = np.zeros(n, dtype=np.int8)
    for i in range(n):  # only after the batch raised: find the orders that make it fail
        try:
            one = policy.act(obs[i : i + 1], None if masks is None else masks[i : i + 1])
        except Exception:
            faults[i] = FAULT_RAISED
            continue
        a, f = validate_actions(one, action_set, 1)
        actions[i] = a[0]
        faults[i] = f[0]
    return actions, faults, time.perf_counter() - t0


# -- the loop ---------------------------------------------------------------------------------
@dataclass
class ExecutionRun:
    """One policy's orders through the loop: per-order results (``columns``, one array per
    column, a scalar where every order has the same value: the core's episode records plus
    the watchdog's final state and trigger; ``episodes``: the same as a table), the shares
    traded per step, the observers' summaries and, with a shadow TWAP, its per-order results
    on the same paths."""

    policy: str
    columns: dict[str, Any]
    schedules: NDArray[np.int64]  # (K, N)
    shadow_twap: pd.DataFrame | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def episodes(self) -> pd.DataFrame:
        """``columns`` as a table, built on first use: pandas is imported only by what reads
        it (``execrl evaluate`` reads the columns, and does not pay for pandas' import)."""
        import pandas as pd

        return pd.DataFrame(self.columns)

    def order(self, i: int) -> ExecutionRun:
        """Order i of the run alone (a batch's order, for what reads one order's run: the
        service's done record, its metrics); ``extras`` are the whole run's."""
        n = len(self.schedules)
        i = range(n)[i]  # a negative i counts from the end; IndexError past it
        # a slice, not a list take (the same one-row frame, a sixth of the CPU: the service
        # calls this once per order)
        shadow = None if self.shadow_twap is None else \
            self.shadow_twap.iloc[i : i + 1].reset_index(drop=True)
        columns = {k: v[i : i + 1] if isinstance(v, np.ndarray) else v
                   for k, v in self.columns.items()}
        one = ExecutionRun(self.policy, columns, self.schedules[i : i + 1], shadow,
                           self.extras)
        # its table: the run's row (built once for the run; a table per order from its
        # columns cost ~9x the slice)
        one.__dict__["episodes"] = self.episodes.iloc[i : i + 1].reset_index(drop=True)
        return one


@dataclass
class Safety:
    """The loop's safety settings: the firm's risk limits (tightened by each order's own
    constraints), the watchdog (None: off; its config names the fallback schedule), the kill
    switch and the operator's kill file."""

    limits: Any = None  # safety.guard.RiskLimits | None
    watchdog: Any = None  # safety.watchdog.WatchdogConfig | None (its ``fallback`` schedule)
    kill: Any = None  # safety.guard.KillSwitch | None
    kill_file: str | None = None


class Executor:
    """Runs parent orders through policy → guard → venue → fills, watched and audited.

    ``policies``: a policy, or a ``PolicySet`` with one per side. ``market``: the market
    specification the venue is built from (a simulated or replayed market; ``venues`` has the
    shadow and paper venues). ``actions``: the action set to run in, when not the policy's
    own (training's greedy rollouts run in the training set). ``mode``: one of ``MODES``; in
    ``train`` the watchdog records but never acts."""

    def __init__(
        self,
        policies: Policy | PolicySet,
        market: MarketSpec,
        *,
        reward: str = "is_bps",
        safety: Safety | None = None,
        mode: str = "backtest",
        audit: Any = None,
        actions: Any = None,
        explore: Any = None,
    ):
        if mode not in MODES:
            raise ConfigError(f"executor mode {mode!r} is unknown; choose from {', '.join(MODES)}")
        self.policies = policies if isinstance(policies, PolicySet) else PolicySet(policies)
        self.market = market
        self.reward = reward
        self.safety = safety or Safety()
        self.mode = mode
        self.audit = audit
        #: the action set to run in (an ``ActionSet`` or its name); None: the policy's own
        self.actions = actions
        #: guard-gated exploration of a non-critical axis (``executor.explore.Exploration``),
        #: its propensities logged in the trail; None: the policy's own actions
        self.explore = explore
        #: the kill switch of the run in progress (the guard's and the watchdog's): flip it
        #: from a callback (``on_step``) or through the kill file
        self.kill_switch: Any = None
        #: what else the trail's run record should hold (the command line's policy spec and
        #: configuration), for ``executor.rerun``
        self.meta_extra: dict[str, Any] = {}

    def run_meta(self, order: ParentOrder, n_orders: int, seed: int, venue: str,
                 policy: Policy, batch: _Batch | None = None) -> dict[str, Any]:
        """What re-runs an order from its trail: the order, the market, the seed, the
        policy (hash and where it came from), the safety settings, the mode and the venue;
        for a batch of orders (``run_orders``), each order and its seed too."""
        sf = self.safety
        extra: dict[str, Any] = {}
        if batch is not None and batch.seeds is not None:
            extra["batch"] = [{"order": o.model_dump(mode="json"), "seed": int(sd)}
                              for o, sd in zip(batch.orders, batch.seeds, strict=True)]
        return {
            "order": order.model_dump(mode="json"),
            "orders": n_orders,
            "seed": seed,
            **extra,
            "mode": self.mode,
            "venue": venue,
            "market": self.market.model_dump(mode="json"),
            "reward": self.reward,
            "policy": policy.name,
            "policy_hash": policy_hash(policy),
            "policy_source": dict(getattr(policy, "provenance", {}) or {}),
            "policy_spec": policy.name,
            **self.meta_extra,
            "limits": None if sf.limits is None else sf.limits.model_dump(mode="json"),
            "watchdog": None if sf.watchdog is None else sf.watchdog.model_dump(mode="json"),
        }

    def policy_for(self, order: ParentOrder) -> Policy:
        return self.policies.for_side(order.side)

    def build_core(self, order: ParentOrder, n_orders: int, policy: Policy,
                   qty: NDArray[np.int64] | None = None) -> BatchedExecution:
        """The execution core of the run, under the firm's limits tightened by the order's
        (``env.factory.make_guard``) and the run's kill switch (``self.kill_switch``);
        ``qty``: per order, its size (a batch of orders, ``run_orders``)."""
        from execrl.env.factory import make_guard
        from execrl.safety.guard import KillSwitch

        kill = self.safety.kill
        if kill is None or kill.orders.shape[0] != n_orders:
            kill = KillSwitch(n_orders, [policy.name])
        self.kill_switch = kill
        guard = make_guard(order, self.market, n_orders, limits=self.safety.limits,
                           policy=policy.name, kill=kill, qty=qty)
        env_config = EnvConfig(
            market=self.market,
            observations=tuple(policy.observations),
            actions=policy.action_set if self.actions is None else self.actions,
            reward=self.reward,
        )
        return make_execution(env_config, order, n_envs=n_orders, autoreset=False, guard=guard,
                              qty=qty)

    def batch_key(self, order: ParentOrder) -> tuple[Any, ...]:
        """What orders must share to run in one batch (``run_orders``): symbol, side, horizon,
        the market the order meets (its arrival price), its constraints (the guard's limits
        are per batch) and, for a policy built for one order's size (``per_order_qty``: POV,
        the signal-aware optimum), the size. Orders with equal keys give, batched, exactly
        what each gives alone."""
        policy = self.policy_for(order)
        spec = market_for_order(self.market, order)
        sized = order.qty if getattr(policy, "per_order_qty", False) else None
        return (order.symbol, order.side.value, float(order.horizon),
                spec.model_dump_json(), order.constraints.model_dump_json(), sized)

    def run_orders(
        self,
        orders: Sequence[ParentOrder],
        seeds: Sequence[int],
        observers: Sequence[StepObserver] = (),
        on_step: Callable[[], None] | None = None,
        on_obs: Callable[[NDArray], None] | None = None,
        make_observers: Callable[[BatchedExecution], Sequence[StepObserver]] | None = None,
        venue: Any = "simulated",
    ) -> ExecutionRun:
        """Execute a batch of parent orders in one loop (one policy call per step for all):
        order i under its own id and size, on the path ``run(orders[i], 1, seeds[i])`` meets,
        with exactly that run's results; the orders must share ``batch_key`` (else a
        ``ConfigError`` naming the first that differs). The watchdog's drift trigger pools
        the policy's decisions over the batch, so with it on a batch's decisions depend on
        its members: re-run a batch whole (the service records each batch's members)."""
        if not orders:
            raise ConfigError("orders: an empty batch")
        if len(seeds) != len(orders):
            raise ConfigError(f"seeds: {len(seeds)} for {len(orders)} orders")
        key = self.batch_key(orders[0])
        fields = ("symbol", "side", "horizon", "market", "constraints", "qty")
        for o in orders[1:]:
            other = self.batch_key(o)
            if other != key:
                name = next(f for f, a, b in zip(fields, key, other, strict=True) if a != b)
                raise ConfigError(
                    f"order {o.order_id!r} cannot share a batch with {orders[0].order_id!r}: "
                    f"its {name} differs (Executor.batch_key)"
                )
        ids = [o.order_id for o in orders]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError(f"order field 'order_id' = {dup!r} appears twice in one batch")
        batch = _Batch(list(orders), ids, np.array([o.qty for o in orders], dtype=np.int64),
                       [int(sd) for sd in seeds])
        return self._run(batch, observers, on_step, on_obs, make_observers, venue)

    def run(
        self,
        order: ParentOrder,
        n_orders: int,
        seed: int,
        observers: Sequence[StepObserver] = (),
        on_step: Callable[[], None] | None = None,
        on_obs: Callable[[NDArray], None] | None = None,
        make_observers: Callable[[BatchedExecution], Sequence[StepObserver]] | None = None,
        venue: Any = "simulated",
    ) -> ExecutionRun:
        """Execute ``n_orders`` copies of ``order``, copy i on market path (seed, i).
        ``make_observers`` builds observers on the reset core (the decision recorder and the
        behaviour tally need it); ``on_obs`` sees the observations of the orders still
        running before each decision; ``on_step`` is called after each step (progress);
        ``venue``: ``simulated``, ``shadow`` or ``paper`` (``executor.venues``), or a venue
        factory named by its ``name`` (``service.paper.StreamFeed``: paper fills against the
        market-data stream)."""
        if n_orders < 1:
            raise ConfigError(f"orders = {n_orders!r} must be >= 1")
        batch = _Batch([order] * n_orders, order_ids(order, n_orders), None, None, seed)
        return self._run(batch, observers, on_step, on_obs, make_observers, venue)

    def _run(
        self,
        batch: _Batch,
        observers: Sequence[StepObserver],
        on_step: Callable[[], None] | None,
        on_obs: Callable[[NDArray], None] | None,
        make_observers: Callable[[BatchedExecution], Sequence[StepObserver]] | None,
        venue: Any,
    ) -> ExecutionRun:
        order = batch.orders[0]  # what the orders share (``batch_key``)
        n_orders = len(batch.orders)
        seed = batch.seed
        policy = self.policy_for(order)
        core = self.build_core(order, n_orders, policy, batch.qty)
        spec = market_for_order(self.market, order)
        step_s = float(order.horizon) / core.n_steps
        parent_ids = batch.ids
        core.market = wrap_venue(venue, core.market, parent_ids, step_s * 1e3)
        # a venue's own market data for the shadow TWAP (the stream's: ``StreamFeed.shadow``)
        shadow_market = getattr(venue, "shadow", None)
        venue = venue if isinstance(venue, str) else str(getattr(venue, "name", "custom"))
        core.use_rng(batch.paths())
        obs = core.reset()
        watched = list(observers) + list(make_observers(core) if make_observers else ())
        explorer = None
        if self.explore is not None:
            from execrl.executor.explore import Explorer

            explorer = Explorer(self.explore, core.action_set)
        action_set = core.action_set
        discrete = action_set.is_discrete
        sf = self.safety
        watch = (_Watch(self, core, policy, order, spec, batch, parent_ids, shadow_market)
                 if sf.watchdog is not None else None)
        trail = None
        if self.audit is not None:
            trail = _TrailRows(self.audit, core, policy, order, parent_ids, step_s, venue)
            self.audit.write_run({**self.run_meta(order, n_orders, seed, venue, policy, batch),
                                  "tick_size": float(core.market.tick_size)})
        kill_file, applied = None, None
        if sf.kill_file is not None:
            from execrl.executor.kill import KillFileWatcher, apply_kill

            kill_file = KillFileWatcher(sf.kill_file)
        noted = [w.decided for w in watched if callable(getattr(w, "decided", None))]
        while not core.done.all():
            if kill_file is not None:
                request = kill_file.request()  # the same object until the file changes
                if request is not applied:
                    apply_kill(request, self.kill_switch, parent_ids, policy.name)
                    applied = request
            if on_obs is not None:
                on_obs(obs[~core.done])
            masks = core.action_masks() if discrete else None
            actions, faults, latency = call_policy(policy, obs, masks, action_set)
            if watch is None and faults.any():
                raise_fault(policy, faults, action_set)
            propensity = None
            if explorer is not None:
                actions, propensity = explorer(action_set.flat_actions(actions), masks)
                if action_set.multi_discrete:
                    actions = np.array(np.unravel_index(actions, action_set.factors)).T
            forced, style = None, None
            probs = None
            if watch is not None or trail is not None or noted:
                probs = action_probabilities(policy, obs, masks)
            if watch is not None:
                forced, style = watch.decide(obs, actions, faults, probs, latency)
            if trail is not None:
                trail.before(obs, actions, masks, probs, latency, watch, propensity)
            if noted:
                decision = Decision(probs, latency, None if watch is None else watch.acting())
                for note in noted:
                    note(decision)
            for w in watched:
                w.before(actions, obs)
            if forced is None:
                obs, *_ = core.step(actions)
            else:
                obs, *_ = core.step(actions, forced_shares=forced, forced_style=style)
            for w in watched:
                w.after()
            if watch is not None:
                watch.after()
            if trail is not None:
                trail.after(watch)
            if on_step is not None:
                on_step()
        records = core.episode_records(np.arange(n_orders))
        episodes = {"order_idx": np.arange(n_orders),
                    "order_id": np.asarray(parent_ids, dtype=object),
                    "policy": policy.name, "side": order.side.value, **records}
        shadow = None
        if watch is not None:
            watch.annotate(episodes)
            shadow = watch.twap_episodes()
        run = ExecutionRun(policy.name, episodes, core.stats.schedule.copy(), shadow,
                           extras={"core": core, "venue": core.market})
        if trail is not None:
            trail.close(episodes, watch)
        return run


@dataclass
class _Batch:
    """The orders of one run: ``n`` copies of one order on paths (seed, i) (``run``), or a
    batch of the desk's orders, each under its own id and size on its own seed's path
    (``run_orders``; ``qty`` and ``seeds`` set)."""

    orders: list[ParentOrder]
    ids: list[str]
    qty: NDArray[np.int64] | None
    seeds: list[int] | None
    seed: int = 0

    def paths(self) -> Any:
        """A fresh source of the orders' market paths (the core's, the shadow TWAP's)."""
        from execrl.sim.rng import OrderSeeds

        if self.seeds is None:
            return np.random.default_rng(self.seed)
        return OrderSeeds(self.seeds)


def order_ids(order: ParentOrder, n_orders: int) -> list[str]:
    """The id each of the run's orders goes by: the order's own for one order, the order's
    id and its copy number (``ABC-123#17``) for a backtest's copies."""
    if n_orders == 1:
        return [order.order_id]
    return [f"{order.order_id}#{i}" for i in range(n_orders)]


FAULT_TEXT = ("", "raised", "took longer than its time budget", "returned NaN",
              "returned an action outside its space")


def raise_fault(policy: Policy, faults: NDArray, action_set: Any) -> None:
    """Without a watchdog to contain it, a faulty decision stops the run, naming it."""
    i = int(np.flatnonzero(faults)[0])
    raise ConfigError(
        f"policy {policy.name!r} {FAULT_TEXT[int(faults[i])]} for order {i} "
        f"(action set {action_set.name!r}); run it under a watchdog to contain faults"
    )


def context_for(market: MarketSpec, order: ParentOrder) -> PolicyContext:
    """What a policy may know of ``market`` for ``order`` (its horizon and arrival price)."""
    return PolicyContext(market_for_order(market, order).knowledge(), order.qty, order.side.sign)


# -- the watchdog's side of the loop ----------------------------------------------------------
#: who decides an order in each watchdog state (the audit trail's ``acting``)
ACTING = ("policy", "fallback", "passive", "done", "killed")
#: the fallback's child orders: marketable now, after cancelling what the policy left working
#: (the core turns a market order into an IOC at the price band's edge); passive-only posting
#: rests at the near touch for one step
FALLBACK_STYLE = OrderStyle(OrderType.MARKET, cancel=True)
PASSIVE_STYLE = OrderStyle(OrderType.LIMIT, anchor="near", ticks=0, ttl_steps=1, cancel=True)


class _Watch:
    """The watchdog over one run: its inputs at every decision, the fallback's child orders
    for the orders it took from the policy, the shadow TWAP on the same paths (the loss
    trigger's benchmark), the kill switch and the operator's kill file."""

    def __init__(self, ex: Executor, core: BatchedExecution, policy: Policy, order: ParentOrder,
                 spec: MarketSpec, batch: _Batch, parent_ids: list[str],
                 shadow_market: Callable[[Any], Any] | None = None):
        from execrl.policies.baselines import make_baseline
        from execrl.safety.fallback import FallbackSchedule
        from execrl.safety.watchdog import Watchdog

        self.ex, self.core, self.policy = ex, core, policy
        cfg = ex.safety.watchdog
        if ex.mode == "train" and cfg.acting:
            cfg = cfg.model_copy(update={"acting": False})
        schema = getattr(policy, "feature_schema", None)
        n_actions = core.action_set.n_actions
        self.wd = Watchdog.from_schema(cfg, core.n_envs, core.side, n_actions, schema) \
            if schema is not None else Watchdog(cfg, core.n_envs, core.side, n_actions)
        self.schedule = FallbackSchedule.from_knowledge(cfg.fallback, spec.knowledge(),
                                                        cfg.split_orders)
        self.twap = make_baseline("twap", context_for(ex.market, order))
        self.twap_core = make_execution(
            EnvConfig(market=ex.market, observations=tuple(self.twap.observations),
                      actions=self.twap.action_set, reward=ex.reward),
            order, n_envs=core.n_envs, autoreset=False, qty=batch.qty,
        )
        if shadow_market is not None:  # the TWAP meets the venue's market data, not a path
            self.twap_core.market = shadow_market(self.twap_core.market)
        self.twap_core.use_rng(batch.paths())
        self.twap_obs = self.twap_core.reset()
        self.ids = np.asarray(parent_ids, dtype=object)
        self._discrete = core.action_set.is_discrete
        self._names = [policy.name]
        self._policy_idx = np.zeros(core.n_envs, dtype=np.int64)
        self._watch_obs = bool(self.wd.feature_names)

    def killed(self) -> NDArray[np.bool_]:
        """Per order: is its kill switch on (in process, or the operator's kill file, which
        the loop applies to the switch at every decision)."""
        return self.ex.kill_switch.killed(self._names, self._policy_idx)

    def decide(self, obs: NDArray, actions: NDArray, faults: NDArray, probs: NDArray | None,
               latency: float) -> tuple[NDArray[np.int64] | None, Any]:
        """The watchdog's check of this decision; (forced shares per order, their style), or
        (None, None) where every active order stays with its policy (no forced orders)."""
        from execrl.safety.watchdog import FALLBACK, KILLED, PASSIVE, RL

        core = self.core
        active = ~core.done
        flat = None
        if self._discrete:
            flat = core.action_set.flat_actions(actions).astype(np.float64)
            if faults.any():
                flat[faults != 0] = np.nan
        killed = self.killed()
        self.wd.check_arrays(
            core.k, active, core.done, core.k / core.n_steps, 1.0 - core.remaining / core.order_qty,
            core.market.mid, core.market.arrival_vwap, faults, probs, flat, latency,
            core.stats.is_bps, self.twap_core.stats.is_bps,
            obs if self._watch_obs else None, killed,
        )
        state = self.wd.state
        off = state != RL
        off &= active
        if not off.any():
            return None, None
        forced = np.full(core.n_envs, -1, dtype=np.int64)
        take = active & ((state == FALLBACK) | (state == PASSIVE))
        stop = active & (state == KILLED)
        forced[stop] = 0
        if not take.any():
            return forced, None
        shares = self.schedule.shares(core.remaining, core.k, start=self.wd.trigger_step)
        forced[take] = shares[take]
        passive = take & (state == PASSIVE)
        if passive.any() and not (take & (state == FALLBACK)).any():
            return forced, PASSIVE_STYLE
        # one style a step: passive-only orders in a step with fallback orders wait this step
        forced[passive] = 0
        return forced, FALLBACK_STYLE

    def acting(self) -> NDArray[np.object_]:
        return np.asarray(ACTING, dtype=object)[self.wd.state]

    def after(self) -> None:
        """The shadow TWAP's step on the same paths (it never sees the policy's orders)."""
        tc = self.twap_core
        if tc.done.all():
            return
        masks = tc.action_masks() if tc.action_set.is_discrete else None
        self.twap_obs, *_ = tc.step(self.twap.act(self.twap_obs, masks))

    def annotate(self, episodes: dict[str, Any]) -> None:
        """Into the run's columns, per order: who finished it (``policy``, ``fallback``,
        ``passive`` or ``killed``), the trigger that took it from the policy (``none``) and at
        which step (-1)."""
        from execrl.safety.watchdog import EXTREME_VOLATILITY, KILLED, TRIGGERS

        wd = self.wd
        acted = wd.config.acting & (wd.trigger != 0)
        finished = np.where(acted, np.where(wd.trigger == EXTREME_VOLATILITY, "passive",
                                            "fallback"), "policy").astype(object)
        finished[wd.state == KILLED] = "killed"
        episodes["finished_by"] = finished
        episodes["trigger"] = np.asarray(TRIGGERS, dtype=object)[wd.trigger]
        episodes["trigger_step"] = wd.trigger_step.copy()

    def incidents(self, step_s: float) -> list[dict[str, Any]]:
        """One record per order the watchdog took from its policy (``RL_ABORTED``), killed
        (``KILLED``), froze to passive-only posting (``PASSIVE_ONLY``) or, in training,
        would have (``WOULD_ABORT``)."""
        from execrl.safety.watchdog import KILLED, PASSIVE, STATES, TRIGGERS, condition_names

        wd = self.wd
        out = []
        for i in np.flatnonzero(wd.trigger):
            state = int(wd.state[i])
            kind = ("KILLED" if state == KILLED else "PASSIVE_ONLY" if state == PASSIVE
                    else "RL_ABORTED" if wd.config.acting else "WOULD_ABORT")
            step = int(wd.trigger_step[i])
            out.append({
                "order_idx": int(i), "step": step,
                "t_s": step * step_s, "kind": kind, "trigger": TRIGGERS[int(wd.trigger[i])],
                "detail": {"state": STATES[state],
                           "conditions": list(condition_names(wd.conditions[i]))},
            })
        return out

    def twap_episodes(self) -> pd.DataFrame:
        import pandas as pd

        rec = self.twap_core.episode_records(np.arange(self.core.n_envs))
        return pd.DataFrame({"order_idx": np.arange(self.core.n_envs), **rec})


# -- the audit trail's side of the loop -------------------------------------------------------
class _TrailRows:
    """Turns each decision of the loop into the audit trail's columnar rows: the decision
    (features, action, scores, mask, latency, watchdog state), the child order the guard let
    out and its fills, and the market's mid and touch at each decision and at the end."""

    def __init__(self, audit: Any, core: BatchedExecution, policy: Policy, order: ParentOrder,
                 parent_ids: list[str], step_s: float, venue: str):
        self.audit, self.core, self.policy = audit, core, policy
        self.order, self.parent_ids, self.step_s, self.venue = order, parent_ids, step_s, venue
        self.hash = policy_hash(policy)
        core.record_fill_events = True
        feats = core.market.available_features
        self._touch = "best_bid" in feats and "best_ask" in feats
        self._fees = np.zeros(core.n_envs)
        self._rows: NDArray[np.intp] = np.zeros(0, dtype=np.intp)
        self._cols: dict[str, Any] = {}

    def _market_rows(self, rows: NDArray[np.intp], step: NDArray[np.int32] | None = None,
                     t_s: NDArray[np.float64] | None = None,
                     mid: NDArray[np.float64] | None = None) -> None:
        """The market at ``rows`` (``step``, ``t_s``, ``mid``: already taken for the
        decision's own row, the same values)."""
        core = self.core
        m = core.market
        if step is None:
            k = core.k[rows]
            step, t_s = k.astype(np.int32), k * self.step_s
            mid = m.mid[rows].astype(np.float64, copy=False)
        if self._touch:
            bid = m.feature("best_bid")[rows].astype(np.float64, copy=False)
            ask = m.feature("best_ask")[rows].astype(np.float64, copy=False)
        else:
            bid = ask = np.full(rows.size, np.nan)
        self.audit.add_market({
            "order_idx": rows.astype(np.int64, copy=False),
            "step": step,
            "t_s": t_s,
            "mid": mid,
            "best_bid": bid,
            "best_ask": ask,
            "market_volume": np.asarray(m.feature("last_volume"), dtype=np.float64)[rows],
        })

    def before(self, obs: NDArray, actions: NDArray, masks: NDArray | None,
               probs: NDArray | None, latency: float, watch: _Watch | None,
               propensity: NDArray | None = None) -> None:
        # a fancy index copies: these rows are added after the step, which moves the core
        core = self.core
        rows = np.flatnonzero(~core.done)
        k = core.k[rows]
        step, t_s = k.astype(np.int32), k * self.step_s
        mid = core.market.mid[rows].astype(np.float64, copy=False)
        self._market_rows(rows, step, t_s, mid)
        cols: dict[str, Any] = {
            "order_idx": rows.astype(np.int64, copy=False),
            "step": step,
            "t_s": t_s,
            "remaining_before": core.remaining[rows].astype(np.int64, copy=False),
            "working_before": core.stats.working[rows].astype(np.int64, copy=False),
            "mid": mid,
            "features": obs[rows],
        }
        a = np.asarray(actions)
        if core.action_set.is_discrete:
            cols["action"] = core.action_set.flat_actions(a)[rows].astype(np.float64)
        else:
            cols["action"] = a.reshape(a.shape[0], -1)[rows, 0].astype(np.float64)
        scores = probs if probs is not None else action_scores(self.policy, obs)
        if scores is not None:
            cols["scores"] = scores[rows].astype(np.float32, copy=False)
        if masks is not None:
            cols["mask"] = masks[rows]
        cols["confidence"] = (np.full(rows.size, np.nan) if probs is None
                              else probs[rows].max(axis=1))
        cols["latency_us"] = np.full(rows.size, latency * 1e6)
        if propensity is not None:
            cols["propensity"] = propensity[rows]
        state = watch.wd.state[rows] if watch is not None else np.zeros(rows.size, np.int8)
        cols["acting"] = state.astype(np.int16)
        self._rows, self._cols = rows, cols

    def after(self, watch: _Watch | None) -> None:
        core = self.core
        rows, cols = self._rows, self._cols
        o = core.last_orders
        fill = core.last_fills
        assert fill is not None
        # added below, before the core moves again: a view where every order decided
        ix: Any = slice(None) if rows.size == core.n_envs else rows
        qty = o.qty[ix]
        sent = qty > 0
        cols["child_id"] = np.where(sent, o.child_id[ix], -1).astype(np.int64, copy=False)
        cols["child_qty"] = qty.astype(np.int64, copy=False)
        cols["child_type"] = np.where(sent, o.order_type[ix], -1).astype(np.int16)
        cols["child_px"] = o.limit_px[ix].astype(np.float64, copy=False)
        cols["ttl_ms"] = np.rint(o.ttl_steps[ix] * self.step_s * 1e3).astype(np.int64)
        cols["guard_code"] = core.last_guard[ix].astype(np.int16, copy=False)
        cols["market_reject"] = fill.reject[ix].astype(np.int16, copy=False)
        cols["filled_qty"] = fill.qty[ix].astype(np.int64, copy=False)
        cols["fill_px"] = fill.avg_px[ix].astype(np.float64, copy=False)
        if watch is not None:
            cols["watchdog_state"] = watch.wd.state[ix].astype(np.int16)
            cols["trigger"] = watch.wd.trigger[ix].astype(np.int16)
        else:
            cols["watchdog_state"] = cols["trigger"] = np.zeros(rows.size, dtype=np.int16)
        self.audit.add_decisions(cols)
        events = fill.events
        if events is not None and events.size:
            # the step the fills belong to: the decision just taken (k was advanced)
            self.audit.add_fills(events, step=(core.k[events["env"]] - 1).astype(np.int32))
            np.add.at(self._fees, events["env"], events["fee"])

    def close(self, episodes: dict[str, Any], watch: _Watch | None) -> None:
        """The orders' rows, from the run's columns (``ExecutionRun.columns``)."""
        import pandas as pd

        core = self.core
        self._market_rows(np.arange(core.n_envs))  # the mid at the horizon, for markouts
        if watch is not None:
            self.audit.add_incidents(watch.incidents(self.step_s))
        filled = core.stats.filled
        with np.errstate(invalid="ignore", divide="ignore"):
            avg_px = np.where(filled > 0, core.cash / np.maximum(filled, 1), np.nan)
        orders = pd.DataFrame({
            "order_idx": np.arange(core.n_envs),
            "order_id": self.parent_ids,
            "policy": self.policy.name,
            "policy_hash": self.hash,
            "symbol": self.order.symbol,
            "side": self.order.side.value,
            "venue": self.venue,
            "qty": core.order_qty,
            "arrival_mid": core.market.arrival_mid.astype(np.float64),
            "start_s": 0.0,
            "end_s": core.n_steps * self.step_s,
            "filled": filled.astype(np.int64),
            "fill_rate": episodes["fill_rate"],
            "avg_px": avg_px,
            "is_bps": episodes["is_bps"],
            "residual_shares": episodes["residual_shares"],
            "residual_is_bps": episodes["residual_is_bps"],
            "child_orders": episodes["child_orders"],
            "fills": episodes["fills"],
            "cancels": episodes["cancels"],
            "rejects": episodes["rejects"],
            "guard_rejects": episodes["guard_rejects"]
            if "guard_rejects" in episodes else 0,
            "final_state": episodes["finished_by"] if "finished_by" in episodes
            else "policy",
            "trigger": episodes["trigger"] if "trigger" in episodes else "none",
            "trigger_step": episodes["trigger_step"] if "trigger_step" in episodes
            else -1,
            "fees": self._fees,
        })
        self.audit.close(orders)


_TYPE_NAMES = [t.value for t in OrderType]  # in ORDER_TYPE_CODES order
