"""The compiled episode end (``BatchedExecution._end_step``: ``_finish_kernel``,
``_records_kernel``, one observation and then the restarted rows) against the numpy episode end
it replaced, rebuilt here from the core's arrays: the same numbers to the bit, the same ``info``
(keys in order, dtypes, values), arrays of their own, whatever the ends, sizes and paths."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from execrl.domain import OrderConstraints, implementation_shortfall_bps
from execrl.env.core import BatchedExecution
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, NormalisedExecution, make_execution
from execrl.market.observations import OBSERVATION_FEATURES
from execrl.safety import RiskLimits
from execrl.sim import almgren_chriss as acm
from execrl.sim.almgren_chriss import ACMarketConfig
from execrl.sim.rng import gauss

RECORD_KEYS = ("is_bps", "is_vs_arrival_vwap_bps", "is_vs_interval_vwap_bps", "fill_rate",
               "residual_shares", "residual_is_bps", "child_orders", "breaches", "cuts", "fills",
               "cancels", "rejects", "guard_rejects", "return", "steps")


# -- the reference: the numpy episode end of 842c68b, from the core's arrays ---------------------
def reference_observe(core: BatchedExecution) -> np.ndarray:
    """Every feature in float64 by numpy, then rounded once to float32."""
    cols = []
    remaining, qty, k, n_steps = core.remaining, core.order_qty, core.k, core.n_steps
    for name in core.observations:
        if name == "remaining_ratio":
            v = remaining / qty
        elif name == "elapsed_ratio":
            v = k / n_steps
        elif name == "twap_deviation":
            v = remaining / qty - (1.0 - np.minimum(k, n_steps) / n_steps)
        elif name == "working_ratio":
            v = core.stats.working / qty
        else:
            f = OBSERVATION_FEATURES[name]
            scale: Any = f.scale / core.qty if f.per_parent_qty else f.scale
            scale = scale * core.side if f.side_relative else scale
            v = core.market.feature(f.source) * scale
            if f.per_step_volume:
                v = v / np.maximum(core.market.feature("expected_volume"), 1.0)
            v = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
        cols.append(np.asarray(v, dtype=np.float64))
    return np.stack(cols, axis=1).astype(np.float32)


def reference_records(core: BatchedExecution, ids: np.ndarray) -> dict[str, np.ndarray]:
    s = core.stats
    return {
        "is_bps": s.is_bps[ids],
        "is_vs_arrival_vwap_bps": s.is_vs_arrival_vwap_bps[ids],
        "is_vs_interval_vwap_bps": s.is_vs_interval_vwap_bps[ids],
        "fill_rate": s.filled[ids] / core.order_qty[ids],
        "residual_shares": np.where(core.done[ids], core.remaining[ids], 0),
        "residual_is_bps": s.residual_is_bps[ids],
        "child_orders": s.child_orders[ids],
        "breaches": s.breaches[ids],
        "cuts": s.cuts[ids],
        "fills": s.fills[ids],
        "cancels": s.cancels[ids],
        "rejects": s.rejects[ids],
        "guard_rejects": s.guard_rejects[ids],
        "return": s.episode_return[ids],
        "steps": core.k[ids],
    }


def reference_order_reset(core: BatchedExecution, ids: np.ndarray) -> None:
    s = core.stats
    core.remaining[ids] = core.order_qty[ids]
    core.k[ids] = 0
    core.done[ids] = False
    core.cash[ids] = 0.0
    s.floats[:, ids] = 0.0
    s.counts[:, ids] = 0
    s.schedule[ids] = 0
    s.order_ints[ids] = 0


class OldEnd:
    """``_end_step`` as numpy did it: the interval-VWAP IS over every env, two whole
    observations, fancy-indexed records, the resets one by one."""

    def _end_step(self, fill, n_done, done_now, avg_fill, reward):  # type: ignore[no-untyped-def]
        core: BatchedExecution = self  # type: ignore[assignment]
        n = core.n_envs
        if n_done:
            iv = implementation_shortfall_bps(avg_fill, core.market.interval_vwap, core.side)
            np.copyto(core.stats.is_vs_interval_vwap_bps, iv, where=done_now)
            core.done |= done_now
        obs = core.observe()
        info: dict[str, Any] = {}
        if fill.reject.any():
            info["reject"] = fill.reject.copy()
        if n_done:
            every = n_done == n
            ids = np.flatnonzero(done_now)
            info["done_ids"] = ids
            if core.autoreset:
                info["final_obs"] = obs if every else obs[ids]
                info["episode"] = reference_records(core, ids)
                core.market.reset(core._rng, None if every else ids)
                core.guard.reset(None if every else ids)
                reference_order_reset(core, ids)
                obs = core.observe()
        return obs, reward, done_now, np.zeros(n, dtype=bool), info


class OldObserve:
    def observe(self) -> np.ndarray:
        return reference_observe(self)  # type: ignore[arg-type]


class Reference(OldEnd, OldObserve, BatchedExecution):
    pass


class NormalisedReference(OldEnd, NormalisedExecution):
    pass


# -- the comparison -------------------------------------------------------------------------------
LIMITS = OrderConstraints(child_max=40_000, participation=0.02)
WINDOWS = RiskLimits(message_limit=2, message_window_s=5.0, duplicate_window_s=2.0)


def _pair(n: int, actions: str = "seed003", autoreset: bool = True, per_env: bool = False,
          fused: bool = True, constraints: OrderConstraints | None = None,
          normalise: str = "fixed", market: ACMarketConfig | None = None,
          observations: str = "seed004") -> tuple[BatchedExecution, BatchedExecution]:
    order = DEFAULT_ORDER if constraints is None else DEFAULT_ORDER.model_copy(
        update={"constraints": constraints})
    qty = np.arange(1, n + 1, dtype=np.int64) * 7_919 if per_env else None
    config = EnvConfig(actions=actions, normalise=normalise,  # type: ignore[arg-type]
                       market=market or ACMarketConfig(), observations=observations)
    cores = [make_execution(config, order, n_envs=n, autoreset=autoreset, qty=qty)
             for _ in range(2)]
    new, ref = cores
    ref.__class__ = NormalisedReference if normalise == "online" else Reference
    for core in cores:
        core._fused = core._fused and fused
    return new, ref


def _state(core: BatchedExecution) -> list[np.ndarray]:
    s = core.stats
    return [core.remaining, core.k, core.done, core.cash, s.floats, s.counts, s.order_ints,
            s.schedule, core.market.mid, core.market.arrival_vwap, core.market.episode_keys,
            core.guard._ints, core.guard._floats, core.guard._msg_t, core.guard.latched,
            core.last_guard]


def _same(a: Any, b: Any, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert a.tobytes() == b.tobytes(), what


def _same_step(out: tuple, ref: tuple, t: int) -> None:
    for j, name in enumerate(("obs", "reward", "terminated", "truncated")):
        _same(out[j], ref[j], f"step {t}: {name}")
    info, info_ref = out[4], ref[4]
    assert list(info) == list(info_ref), f"step {t}: info keys"
    for key, value in info.items():
        if key == "episode":
            assert list(value) == list(info_ref[key]) == list(RECORD_KEYS)
            for field, column in value.items():
                _same(column, info_ref[key][field], f"step {t}: episode {field}")
        else:
            _same(value, info_ref[key], f"step {t}: {key}")


def _actions(core: BatchedExecution, rng: np.random.Generator, all_in: float = 0.0) -> Any:
    n = core.n_envs
    if core._fractions is None:
        return (rng.random((n, 1)) * 1.4 - 0.2).astype(np.float32)
    a = rng.integers(0, len(core._fractions), size=n)
    a[rng.random(n) < all_in] = int(np.argmax(core._fractions))
    return a


def _run_both(new: BatchedExecution, ref: BatchedExecution, steps: int = 40,
              all_in: float = 0.0, seed: int = 5) -> int:
    """Step both on the same actions; returns how many episodes ended."""
    _same(new.reset(seed=seed), ref.reset(seed=seed), "reset")
    rng = np.random.default_rng(seed)
    ended = 0
    for t in range(steps):
        a = _actions(new, rng, all_in)
        out, out_ref = new.step(a), ref.step(a)
        _same_step(out, out_ref, t)
        for x, y in zip(_state(new), _state(ref), strict=True):
            _same(x, y, f"step {t}: state")
        ended += int(out[2].sum())
        if not new.autoreset and new.done.all():
            _same(new.reset(), ref.reset(), "reset")
    return ended


@pytest.mark.parametrize("actions", ["seed003", "continuous", "seed004"])
@pytest.mark.parametrize("autoreset", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_the_compiled_episode_end_is_the_numpy_one(actions, autoreset, fused):
    new, ref = _pair(37, actions, autoreset=autoreset, fused=fused)
    assert _run_both(new, ref) > 37  # partial ends, many steps with some


@pytest.mark.parametrize("per_env", [False, True])
@pytest.mark.parametrize("autoreset", [True, False])
def test_per_env_sizes_and_limits(per_env, autoreset):
    new, ref = _pair(29, "seed003", autoreset=autoreset, per_env=per_env, constraints=LIMITS)
    assert _run_both(new, ref, all_in=0.2) > 29


def test_a_guard_that_keeps_windows():
    n = 17
    new, ref = _pair(n)
    for core in (new, ref):  # a guard with rolling windows: the general step, rings to reset
        core.guard = type(core.guard)(WINDOWS, n, core.side, core.order_qty, step_seconds=1.0,
                                      horizon_s=float(core.n_steps))
    assert new.guard._windows
    assert _run_both(new, ref, all_in=0.3) > n


def test_a_single_env():
    for actions in ("seed003", "continuous"):
        new, ref = _pair(1, actions)
        assert _run_both(new, ref, steps=60, all_in=0.3) > 3


def test_every_episode_ending_at_once_is_a_full_reset():
    n = 23
    new, ref = _pair(n)
    _run_both(new, ref, steps=12, all_in=1.0)  # "all" everywhere: every step ends them all
    new.reset(seed=3)
    before = new.observe()
    obs, _, done, _, info = new.step(np.full(n, int(np.argmax(new._fractions))))
    assert done.all() and info["done_ids"].tolist() == list(range(n))
    final = info["final_obs"]
    assert final.dtype == np.float32 and final.shape == before.shape
    assert final[:, 0].tolist() == [0.0] * n  # nothing left: the last observation
    assert obs is not info["final_obs"] and (obs[:, 0] == 1.0).all()  # the new episodes'


def test_online_normalisation_observes_as_before():
    """``NormalisedExecution`` folds what it observes: the episode end observes it whole
    twice, as before (its second observation normalises every row again)."""
    for autoreset in (True, False):
        new, ref = _pair(19, "seed003", autoreset=autoreset, normalise="online")
        assert not new._observe_once
        assert _run_both(new, ref, all_in=0.2) > 19


def test_signal_observations_and_volume_noise_off():
    market = ACMarketConfig(signal={"kappa": 2.0, "sigma": 0.5}, volume_noise=0.0)
    new, ref = _pair(31, "seed003", market=market, observations="signal")
    assert _run_both(new, ref, all_in=0.2) > 31


def test_info_arrays_are_their_own():
    """What ``info`` hands out is never written again: not by later steps, not by resets."""
    new, _ = _pair(41, "seed003")
    new.reset(seed=1)
    rng = np.random.default_rng(2)
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    obs_kept: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(30):
        obs, _, _, _, info = new.step(_actions(new, rng, 0.2))
        obs_kept.append((obs, obs.copy()))
        for key in ("done_ids", "final_obs", "reject"):
            if key in info:
                kept.append((info[key], info[key].copy()))
        for column in info.get("episode", {}).values():
            kept.append((column, column.copy()))
            for live in [*_state(new), new._obs_values]:
                assert not np.shares_memory(column, live)
    assert len(kept) > 100
    for value, copy in kept + obs_kept:
        _same(value, copy, "a kept info array")


def test_episode_records_take_any_index_numpy_takes():
    new, ref = _pair(13, "seed003")
    new.reset(seed=4)
    ref.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(3):
        a = _actions(new, rng, 0.1)
        new.step(a)
        ref.step(a)
    for ids in (np.array([0, 12, -1, 5, 5]), [3, 1], np.arange(13), np.array([], dtype=np.int64),
                np.arange(13) % 2 == 0):
        got = new.episode_records(ids)
        want = reference_records(ref, np.asarray(ids))
        assert list(got) == list(RECORD_KEYS)
        for key in RECORD_KEYS:
            _same(got[key], want[key], key)
    with pytest.raises(IndexError):
        new.episode_records(np.array([13]))


def test_the_guard_row_reset_is_a_fresh_guards_rows():
    n = 9
    limits = RiskLimits(message_limit=3, cancel_limit=2, repeat_fill_limit=2,
                        participation=0.1, participation_window_s=3.0)
    from execrl.safety import RiskGuard

    guard = RiskGuard(limits, n, 1, 1_000, step_seconds=1.0)
    fresh = RiskGuard(limits, n, 1, 1_000, step_seconds=1.0)
    rng = np.random.default_rng(0)
    arrays = ("_msg_t", "_cxl_t", "_fill_t", "_part", "_ints", "_floats", "latched")
    for name in arrays:
        a = getattr(guard, name)
        a[...] = rng.random(a.shape) > 0.5 if a.dtype == bool else rng.integers(1, 9, a.shape)
    before = {name: getattr(guard, name).copy() for name in arrays}
    ids = np.array([7, 2, 3])
    guard.reset(ids)
    others = np.setdiff1d(np.arange(n), ids)
    for name in arrays:
        a = getattr(guard, name)
        assert a[ids].tobytes() == getattr(fresh, name)[ids].tobytes(), name
        assert a[others].tobytes() == before[name][others].tobytes(), name


def _walk_reference(config: ACMarketConfig, key: np.uint64) -> tuple[float, float]:
    """The arrival VWAP and α_0 of the episode keyed ``key``, by plain Python from the
    draws (module docstring: the walk back from S_0, each step at its mid-point)."""
    m = acm.ACMarket(config, n_envs=1, side=1)
    p = m._params
    s0, nu = p[acm._P_S0], p[acm._P_NU]
    prev, cum, num, den = s0, 0.0, 0.0, 0.0
    for j in range(config.pre_arrival_steps):
        step = p[acm._P_DRIFT_TAU] + p[acm._P_SIGMA_SQRT_TAU] * gauss(
            key, acm.STREAM_PRE_ARRIVAL, 2 * j)
        cum = step if j == 0 else cum + step
        mid = s0 - cum
        price = 0.5 * (prev + mid)
        prev = mid
        volume = p[acm._P_ADV_TAU]
        if nu > 0.0:
            z = gauss(key, acm.STREAM_PRE_ARRIVAL, 2 * j + 1)
            volume = math.exp(nu * z - 0.5 * nu * nu) * p[acm._P_ADV_TAU]
        num += volume * price
        den += volume
    alpha = gauss(key, acm.STREAM_SIGNAL, 0) * p[acm._P_ALPHA_STD] if m._has_signal else 0.0
    return num / den, alpha


@pytest.mark.parametrize("config", [
    ACMarketConfig(),
    ACMarketConfig(volume_noise=0.0, pre_arrival_steps=1),
    ACMarketConfig(volume_noise=1.5, pre_arrival_steps=13, drift=0.3,
                   signal={"kappa": 1.0, "sigma": 0.4}),
])
def test_the_reset_kernel_walks_back_as_the_model_says(config):
    n = 40
    m = config.build(n, -1)
    rng = np.random.default_rng(9)
    m.reset(rng)
    ids = np.array([31, 4, 17, 0, 39])
    untouched = np.setdiff1d(np.arange(n), ids)
    before = m._state.copy()
    m.reset(rng, ids)
    for i in ids:
        vwap, alpha = _walk_reference(config, m.episode_keys[i])
        assert m.arrival_vwap[i] == vwap and m.alpha[i] == alpha
        assert m.mid[i] == m.arrival_mid[i] == config.s0
    assert m._state[:, untouched].tobytes() == before[:, untouched].tobytes()
