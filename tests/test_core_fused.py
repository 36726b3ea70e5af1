"""The fused step (``BatchedExecution._fused_step``, one compiled call) against the general
path on the same paths: the same numbers to the bit, whatever the actions, limits and sizes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from execrl.domain import OrderConstraints
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution
from execrl.evaluate.backtest import policy_context
from execrl.policies.baselines import _step_index, make_baseline
from execrl.safety.guard import KillSwitch, RiskGuard, RiskLimits


def _trace(fused: bool, actions: str, constraints: OrderConstraints | None, per_env: bool,
           autoreset: bool) -> list[np.ndarray]:
    n = 67
    order = DEFAULT_ORDER if constraints is None else DEFAULT_ORDER.model_copy(
        update={"constraints": constraints})
    qty = np.arange(1, n + 1, dtype=np.int64) * 7_919 if per_env else None
    core = make_execution(EnvConfig(actions=actions), order, n_envs=n, autoreset=autoreset,
                          qty=qty)
    assert core._fused  # the AC market, is_bps, no window controls: the fused path applies
    core._fused = fused
    obs = core.reset(seed=11)
    rng = np.random.default_rng(4)
    out: list[np.ndarray] = [obs]
    for _ in range(27):
        if actions == "continuous":
            a = (rng.random((n, 1)) * 1.4 - 0.2).astype(np.float32)  # some outside [0, 1]
        else:
            a = rng.integers(0, 5, size=n)
        obs, reward, done, _, info = core.step(a)
        out += [obs, reward, done, core.market._state.copy(), core.last_guard.copy(),
                core.guard._ints.copy(), core.stats.floats.copy(), core.stats.counts.copy(),
                core.stats.order_ints.copy(), core.stats.schedule.copy(), core.remaining.copy()]
        for key in sorted(info):
            value = info[key]
            out += [value[k] for k in sorted(value)] if isinstance(value, dict) else [value]
        if not autoreset and core.done.all():
            obs = core.reset()
    return out


@pytest.mark.parametrize("actions", ["continuous", "seed003", "seed004"])
@pytest.mark.parametrize("limits", [None, OrderConstraints(child_max=40_000, participation=0.02)])
@pytest.mark.parametrize("per_env", [False, True])
@pytest.mark.parametrize("autoreset", [True, False])
def test_fused_step_is_the_general_step(actions, limits, per_env, autoreset):
    fused = _trace(True, actions, limits, per_env, autoreset)
    general = _trace(False, actions, limits, per_env, autoreset)
    assert len(fused) == len(general)
    for a, b in zip(fused, general, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def test_fused_step_names_a_bad_action():
    core = make_execution(EnvConfig(actions="continuous"), DEFAULT_ORDER, n_envs=3)
    core.reset(seed=0)
    with pytest.raises(ValueError, match="not a finite fraction"):
        core.step(np.array([[0.1], [np.nan], [0.2]], dtype=np.float32))
    core = make_execution(EnvConfig(actions="seed003"), DEFAULT_ORDER, n_envs=3)
    core.reset(seed=0)
    with pytest.raises(ValueError, match="outside action set"):
        core.step(np.array([0, 5, 1]))


def test_schedule_policy_kernel_is_its_numpy_form():
    policy = make_baseline("ac", policy_context(EnvConfig(), DEFAULT_ORDER))
    n_steps = policy.step_fraction.size
    elapsed = np.r_[np.arange(n_steps + 1) / n_steps, -0.3, 1.7, 0.049, 0.051]
    obs = np.zeros((elapsed.size, 2), dtype=np.float32)
    obs[:, 1] = elapsed
    k = _step_index(policy._idx, obs, n_steps)
    expected = policy.step_fraction[k][:, None].astype(np.float32)
    assert policy.act(obs).tobytes() == expected.tobytes()


def test_a_venue_put_around_the_market_later_is_stepped_through():
    """The executor wraps ``core.market`` in a venue after building the core: the step must
    then go through the venue, not around it."""
    core = make_execution(EnvConfig(actions="seed003"), DEFAULT_ORDER, n_envs=4)
    core.reset(seed=0)
    calls: list[int] = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def execute(self, *args, **kwargs):
            calls.append(1)
            return self.inner.execute(*args, **kwargs)

    core.market = Spy(core.market)
    core.step(np.ones(4, dtype=np.int64))
    assert calls == [1]


# -- the kernels' named structures ---------------------------------------------------------------
def test_a_swapped_structure_does_not_compile():
    """The step kernels read their arrays by name from named structures: the guard's
    structure where the market's belongs (or the core's where the decision's does) is a
    typing error, not a silent run on the wrong arrays."""
    from numba.core.errors import TypingError

    from execrl.env.core import _book_kernel, _decide_kernel
    from execrl.sim.almgren_chriss import _exogenous_kernel

    core = make_execution(EnvConfig(actions="seed003"), DEFAULT_ORDER, n_envs=4)
    core.reset(seed=0)
    m = core.market
    active = np.ones(4, dtype=bool)
    with pytest.raises(TypingError, match="Unknown attribute"):
        _exogenous_kernel(active, m._state, core.guard.arrays)
    with pytest.raises(TypingError, match="Unknown attribute"):
        _decide_kernel(m._arrays, core._arrays)
    with pytest.raises(TypingError, match="Unknown attribute"):
        _book_kernel(core._arrays, core.guard.arrays, None, None, None, True)
    _exogenous_kernel(active, m._state, m._arrays)  # the right one runs


def test_the_structures_hold_the_live_arrays():
    """Built once, the structures must still hold the very arrays their owners step and
    reset in place, after autoresets and full resets; the market's state block, which a step
    replaces, is in none of them (it travels per step)."""
    core = make_execution(EnvConfig(actions="seed003"), DEFAULT_ORDER, n_envs=5)
    core.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(25):
        core.step(rng.integers(0, 5, size=5))
    core.reset(seed=4)
    core.step(rng.integers(0, 5, size=5))
    c, g, m = core._arrays, core.guard, core.market
    s = core.stats
    for field, owner in [(c.remaining, core.remaining), (c.k, core.k), (c.done, core.done),
                         (c.cash, core._cash), (c.floats, s.floats), (c.counts, s.counts),
                         (c.schedule, s.schedule), (c.order_ints, s.order_ints),
                         (c.last_guard, core.last_guard), (c.orders.qty, core._orders.qty),
                         (c.orders.limit_px, core._orders.limit_px), (c.order_qty, core.order_qty)]:
        assert field is owner
    ga = g.arrays
    for field, owner in [(ga.ints, g._ints), (ga.floats, g._floats), (ga.latched, g.latched),
                         (ga.last_code, g.last_code), (ga.cap_reason, g.cap_reason),
                         (ga.lim_f, g._lim_f)]:
        assert field is owner
    ma = m._arrays
    for field, owner in [(ma.k, m._k), (ma.keys, m._keys), (ma.exo, m._exo),
                         (ma.params, m._params)]:
        assert field is owner
    assert all(field is not m._state for struct in (c, ga, ma) for field in struct)


def _replaced_state_run(fused: bool, shift: float) -> list[np.ndarray]:
    core = make_execution(EnvConfig(actions="seed003"), DEFAULT_ORDER, n_envs=6)
    core._fused = fused
    core.reset(seed=5)
    out = []
    for step in range(6):
        if step == 3:
            state = core.market._state.copy()
            state[0] += shift  # the mid row
            core.market._state = state
        _, reward, *_ = core.step(np.full(6, 2))
        out += [reward, core.market._state.copy(), core.stats.floats.copy()]
    return out


def test_a_replaced_state_block_is_the_one_stepped():
    """``ACMarket._state`` is a new block after every step (views of the old one keep the
    pre-step prices); whoever replaces it (a step, the paper market, a test) is read by the
    next step, fused as in the general step: no structure holds a stale block."""
    fused, general = _replaced_state_run(True, 0.5), _replaced_state_run(False, 0.5)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(fused, general, strict=True))
    unshifted = _replaced_state_run(True, 0.0)
    assert fused[9].tobytes() != unshifted[9].tobytes()  # step 3's reward read the new mid
    assert fused[6].tobytes() == unshifted[6].tobytes()  # and step 2's did not


def test_the_fused_call_skips_dispatch_only_for_the_types_it_knows():
    """After its first step the fused kernel runs without numba's per-call typing
    (``_TypedCall``); a step whose arrays have other types (read-only actions: another numba
    type) goes through the dispatcher. Either way: the general step's numbers."""
    n = 5
    fused, general = (make_execution(EnvConfig(actions="seed003"), DEFAULT_ORDER, n_envs=n)
                      for _ in range(2))
    general._fused = False
    for core in (fused, general):
        core.reset(seed=2)
    rng = np.random.default_rng(8)
    for step in range(14):
        a = rng.integers(0, 5, size=n)
        if step % 3 == 1:
            a.flags.writeable = False
        out_f, out_g = fused.step(a), general.step(a)
        mine = (*out_f[:3], fused.market._state)
        for x, y in zip(mine, (*out_g[:3], general.market._state), strict=True):
            assert x.tobytes() == y.tobytes()
    assert fused.guard.stops_only  # no limits: the one-loop kernel's call
    assert fused._one_loop_call._entry is not None  # the undispatched path was taken


# -- the one-loop kernel (a guard that only refuses) against the pass kernels --------------------
def _guard(n: int, limits: RiskLimits | None = None, kill: KillSwitch | None = None,
           symbols: list[str] | None = None, horizon_frac: np.ndarray | None = None) -> RiskGuard:
    """``make_guard``'s guard for ``DEFAULT_ORDER`` with the given limits, per-env symbols and
    horizons (a fraction of the order's)."""
    order = DEFAULT_ORDER
    step_s = order.horizon / EnvConfig().market.n_steps
    adv = None
    if limits is not None and limits.adv_fraction is not None:
        adv = 4_000_000.0
    horizon = order.horizon if horizon_frac is None else order.horizon * horizon_frac
    return RiskGuard(limits or RiskLimits(), n, order.side.sign, order.qty,
                     symbol=symbols or order.symbol, step_seconds=step_s, horizon_s=horizon,
                     adv_shares=adv, kill=kill)


class _Calls:
    """Counts the calls of a ``_TypedCall``."""

    def __init__(self, inner):
        self.inner, self.n = inner, 0

    def __call__(self, *args):
        self.n += 1
        return self.inner(*args)


def _scenario(name: str, n: int) -> tuple[RiskGuard, Any]:
    """A guard, and what to do to it before each step (``event(step, guard)``)."""
    if name == "off":
        return _guard(n), lambda step, g: None
    if name == "kill":
        def kill(step, g):
            if step == 4:
                g.kill.kill_orders([0, 3, 7])
            if step == 11:
                g.kill.kill_all()
            if step == 14:
                g.kill.release_all()
        return _guard(n, kill=KillSwitch(n)), kill
    if name == "restricted":
        symbols = ["XYZ" if i % 4 == 1 else "DEMO" for i in range(n)]
        return _guard(n, RiskLimits(restricted_symbols=("XYZ",)), symbols=symbols), (
            lambda step, g: None)
    if name == "latched":
        def latch(step, g):
            if step == 3:
                g.latched[[1, 4, 9]] = True
            if step == 9:
                g.reenable([4])
        return _guard(n), latch
    if name == "horizon":
        frac = np.where(np.arange(n) % 3 == 0, 0.45, 1.0)
        return _guard(n, horizon_frac=frac), lambda step, g: None
    raise AssertionError(name)


def _guarded_trace(path: str, scenario: str, actions: str, limits: RiskLimits | None = None
                   ) -> tuple[list[np.ndarray], int, int, np.ndarray]:
    """Full episodes (autoreset) of ``path``: "one" (the one-loop kernel), "passes" (the
    pass kernels), "general" (``step`` without the fused call); every array a caller can
    read after each step; how often the one loop and the passes ran; every verdict."""
    n = 23
    if limits is None:
        guard, event = _scenario(scenario, n)
    else:
        guard, event = _guard(n, limits), (lambda step, g: None)
    core = make_execution(EnvConfig(actions=actions), DEFAULT_ORDER, n_envs=n, guard=guard)
    if path == "passes":
        guard.stops_only = False
    core._fused = path != "general"
    one, passes = _Calls(core._one_loop_call), _Calls(core._fused_call)
    core._one_loop_call, core._fused_call = one, passes
    obs = core.reset(seed=7)
    rng = np.random.default_rng(5)
    out: list[np.ndarray] = [obs]
    verdicts = []
    for step in range(33):
        event(step, guard)
        if actions == "continuous":
            a = (rng.random((n, 1)) * 1.4 - 0.2).astype(np.float32)
        else:
            a = rng.integers(0, 5, size=n)
        obs, reward, done, _, info = core.step(a)
        o, fill = core.last_orders, core.last_fills
        out += [obs, reward, done, core.market._state.copy(), core.market._exo.copy(),
                core.last_guard.copy(), guard._ints.copy(), guard.last_code.copy(),
                guard.last_flags.copy(), guard.cap_reason.copy(), core.stats.floats.copy(),
                core.stats.counts.copy(), core.stats.order_ints.copy(),
                core.stats.schedule.copy(), core.remaining.copy(), core.k.copy(), core.cash.copy(),
                o.qty.copy(), o.cancel.copy(), o.child_id.copy(), o.order_type.copy(),
                o.limit_px.copy(), o.ttl_steps.copy(), fill.qty.copy(), fill.avg_px.copy(),
                fill.n_fills.copy(), fill.reject.copy()]
        verdicts.append(core.last_guard.copy())
        for key in sorted(info):
            value = info[key]
            out += [value[k] for k in sorted(value)] if isinstance(value, dict) else [value]
    return out, one.n, passes.n, np.concatenate(verdicts)


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("actions", ["continuous", "seed003"])
@pytest.mark.parametrize("scenario", ["off", "kill", "restricted", "latched", "horizon"])
def test_one_loop_is_the_pass_kernels_and_the_general_step(scenario, actions):
    """A guard with no size, band, locate or window control (``stops_only``) steps in the
    one-loop kernel: the pass kernels' and the general step's numbers to the bit (state,
    rewards, dones, episode records, the guard's counts and codes, the orders and fills the
    audit reads), its refusals included."""
    one, n_one, n_passes, verdicts = _guarded_trace("one", scenario, actions)
    assert (n_one, n_passes) == (33, 0)
    passes, n_one, n_passes, _ = _guarded_trace("passes", scenario, actions)
    assert (n_one, n_passes) == (0, 33)
    general, n_one, n_passes, _ = _guarded_trace("general", scenario, actions)
    assert (n_one, n_passes) == (0, 0)
    _same(one, passes)
    _same(one, general)
    refusal = {"off": 0, "kill": 16, "restricted": 14, "latched": 12, "horizon": 8}[scenario]
    if refusal:  # the guard refused live orders, and the loop said so
        assert (verdicts == refusal).sum() > 0


@pytest.mark.parametrize("limits", [
    RiskLimits(child_max=30_000),
    RiskLimits(remaining_fraction=0.3),
    RiskLimits(adv_fraction=0.01),
    RiskLimits(participation=0.05),
    RiskLimits(max_child_value=2_000_000.0),
    RiskLimits(price_band_bps=5.0),
    RiskLimits(locate_shares=400_000),
    RiskLimits(duplicate_window_s=60.0),
])
def test_a_guard_with_controls_on_steps_in_the_passes(limits):
    """Each control the one loop does not cover turns it off (``stops_only``): the step
    runs the pass kernels (or, with a window control, the general step), same numbers."""
    guard = _guard(3, limits)
    assert not guard.stops_only
    fused, n_one, n_passes, _ = _guarded_trace("one", "", "seed003", limits)
    assert n_one == 0 and n_passes == (0 if guard._windows else 33)
    general, *_ = _guarded_trace("general", "", "seed003", limits)
    _same(fused, general)


def test_stops_only_names_exactly_the_controls_the_loop_covers():
    assert _guard(2).stops_only
    assert _guard(2, RiskLimits(restricted_symbols=("XYZ",))).stops_only
    assert _guard(2, RiskLimits(remaining_floor=500, message_window_s=3.0)).stops_only
    assert not _guard(2, RiskLimits(message_limit=5)).stops_only
    assert not _guard(2, RiskLimits(repeat_fill_limit=5)).stops_only
    assert not _guard(2, RiskLimits(min_resting_s=5.0)).stops_only
