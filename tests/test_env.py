"""Tests for execrl.env: the gymnasium env, the batched vector env and the SB3 adapter."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

from execrl.domain import ConfigError, ParentOrder
from execrl.env import EnvConfig, ExecutionEnv, ExecutionVectorEnv
from execrl.sim import ACMarket, ACMarketConfig, ChildOrderBatch, SignalConfig

# gymnasium's checker warns that an unbounded Box is "probably too low/high"; our observations
# are unbounded on purpose (price drift, signal). SB3's checker recommends a [-1, 1] action Box;
# ours is a fraction of the remaining quantity in [0, 1] on purpose.
UNBOUNDED_BOX_WARNINGS = [
    "ignore:.*Box observation space minimum value is -infinity.*:UserWarning",
    "ignore:.*Box observation space maximum value is infinity.*:UserWarning",
    "ignore:We recommend you to use a symmetric and normalized Box action space:UserWarning",
]

DAY_S = 23_400.0
SIGNAL_MARKET = ACMarketConfig(signal=SignalConfig(kappa=2.0, sigma=1.0))


def make_order(
    qty: int = 1_000_000,
    side: str = "sell",
    horizon_s: float = 5 * DAY_S,
    arrival_px: float = 50.0,
    constraints: dict[str, Any] | None = None,
) -> ParentOrder:
    data: dict[str, Any] = {
        "order_id": "T-1",
        "symbol": "XYZ",
        "side": side,
        "qty": qty,
        "arrival_px": arrival_px,
        "start_ts": 0,
        "horizon_s": horizon_s,
    }
    if constraints is not None:
        data["constraints"] = constraints
    return ParentOrder.from_dict(data)


def run_episode(env: ExecutionEnv, actions: list[Any], seed: int) -> dict[str, Any]:
    """Reset with ``seed`` and play ``actions`` until the episode ends (actions must last)."""
    obs, _ = env.reset(seed=seed)
    out: dict[str, Any] = {"obs": [obs], "rewards": [], "mids": [], "info": None, "steps": 0}
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out["obs"].append(obs)
        out["rewards"].append(reward)
        out["mids"].append(float(env.core.market.mid[0]))
        out["steps"] += 1
        assert not truncated
        if terminated:
            out["info"] = info
            break
    return out


# -- API conformance ----------------------------------------------------------------------------


@pytest.mark.filterwarnings(*UNBOUNDED_BOX_WARNINGS)
@pytest.mark.parametrize("reward", ["is_bps", "arrival_vwap", "risk_adjusted"])
@pytest.mark.parametrize("actions", ["seed004", "seed003", "continuous"])
def test_env_passes_gymnasium_and_sb3_checkers(actions: str, reward: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = ExecutionEnv(EnvConfig(actions=actions, reward=reward), order=make_order(qty=10_000))
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


@pytest.mark.filterwarnings(*UNBOUNDED_BOX_WARNINGS)
@pytest.mark.parametrize("actions", ["seed004", "seed003", "continuous"])
def test_env_with_signal_observations_passes_checkers(actions: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = ExecutionEnv(EnvConfig(market=SIGNAL_MARKET, observations="signal", actions=actions))
    assert env.observation_space.shape == (5,)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)
    # The signal column is live: over a few resets it is not constant.
    firsts = {float(env.reset(seed=s)[0][4]) for s in range(5)}
    assert len(firsts) == 5


def test_step_after_end_is_refused() -> None:
    env = ExecutionEnv(EnvConfig(actions="seed003"), order=make_order(qty=1000))
    env.reset(seed=0)
    *_, terminated, _, _ = env.step(4)
    assert terminated
    with pytest.raises(RuntimeError):
        env.step(0)


# -- determinism and common random numbers ----------------------------------------------------


@pytest.mark.parametrize("actions", ["seed004", "continuous"])
def test_same_seed_same_actions_same_trajectory(actions: str) -> None:
    env = ExecutionEnv(EnvConfig(actions=actions))
    rng = np.random.default_rng(1)
    if actions == "seed004":
        plan: list[Any] = list(rng.integers(0, 5, size=10))
    else:
        plan = [np.array([f], dtype=np.float32) for f in rng.uniform(0.0, 0.4, size=10)]
    a = run_episode(env, plan, seed=11)
    b = run_episode(env, plan, seed=11)  # the same env object, reset again
    c = run_episode(ExecutionEnv(EnvConfig(actions=actions)), plan, seed=11)  # a fresh one
    for other in (b, c):
        assert other["steps"] == a["steps"] == 10
        np.testing.assert_array_equal(np.array(a["obs"]), np.array(other["obs"]))
        assert a["rewards"] == other["rewards"]
        assert a["mids"] == other["mids"]
        assert a["info"] == other["info"]
    d = run_episode(env, plan, seed=12)
    assert d["mids"] != a["mids"]  # the seed matters: the check above has teeth


def test_market_noise_does_not_depend_on_the_policy() -> None:
    """With no permanent impact (γ = 0) the mid path is the market's noise alone, so three
    policies speaking different action sets must see exactly the same mids on one seed."""
    market = ACMarketConfig(gamma=0.0, epsilon=0.0, eta=1e-12)
    rng = np.random.default_rng(2)
    plans: dict[str, list[Any]] = {
        "seed004": list(rng.integers(0, 5, size=10)),
        "seed003": [0] * 10,  # always wait: everything at the forced last step
        "continuous": [np.array([f], dtype=np.float32) for f in rng.uniform(0, 0.3, size=10)],
    }
    paths = {}
    schedules = {}
    for actions, plan in plans.items():
        env = ExecutionEnv(EnvConfig(market=market, actions=actions))
        ep = run_episode(env, plan, seed=5)
        assert ep["steps"] == 10
        paths[actions] = ep["mids"]
        schedules[actions] = env.core.stats.schedule[0].copy()
    # the policies really traded differently ...
    assert not np.array_equal(schedules["seed004"], schedules["seed003"])
    assert not np.array_equal(schedules["seed004"], schedules["continuous"])
    # ... on the very same market path, which is not flat
    assert paths["seed004"] == paths["seed003"] == paths["continuous"]
    assert len(set(paths["seed004"])) == 10


def test_with_permanent_impact_paths_differ_only_by_impact() -> None:
    """With γ > 0, two policies' mids on one seed differ by exactly side·γ·(shares A − B)."""
    market = ACMarketConfig()  # the paper's γ = 2.5e-7
    gamma, side = market.gamma, -1  # the default order is a sell
    env_a = ExecutionEnv(EnvConfig(market=market, actions="seed004"))
    env_b = ExecutionEnv(EnvConfig(market=market, actions="seed003"))
    a = run_episode(env_a, [4] * 10, seed=9)
    b = run_episode(env_b, [1] * 10, seed=9)
    cum_a = np.cumsum(env_a.core.stats.schedule[0])
    cum_b = np.cumsum(env_b.core.stats.schedule[0])
    assert not np.array_equal(cum_a, cum_b)
    expected = side * gamma * (cum_a - cum_b).astype(np.float64)
    np.testing.assert_allclose(np.array(a["mids"]) - np.array(b["mids"]), expected, atol=1e-9)


@pytest.mark.parametrize("market", [ACMarketConfig(), SIGNAL_MARKET], ids=["plain", "signal"])
def test_episode_i_path_does_not_depend_on_batch_size(market: ACMarketConfig) -> None:
    observations = "signal" if market.signal is not None else "seed004"
    config = EnvConfig(market=market, observations=observations, actions="continuous")
    cores = {}
    records: dict[int, dict[str, list[np.ndarray]]] = {}
    for n in (8, 3):
        venv = ExecutionVectorEnv(n, config, autoreset=False)
        obs, _ = venv.reset(seed=21)
        core = venv.core
        rec: dict[str, list[np.ndarray]] = {"mid": [], "obs": [obs[:3]], "volume": [], "reward": []}
        rec["arrival_vwap"] = [core.market.arrival_vwap[:3].copy()]
        for k in range(core.n_steps):
            frac = np.full((n, 1), 1.0 / (core.n_steps - k), dtype=np.float32)
            obs, reward, *_ = venv.step(frac)
            rec["mid"].append(core.market.mid[:3].copy())
            rec["obs"].append(obs[:3])
            rec["volume"].append(core.market.feature("last_volume")[:3].copy())
            rec["reward"].append(reward[:3])
        assert core.done.all()
        rec["is_bps"] = [core.stats.is_bps[:3].copy()]
        rec["iv"] = [core.stats.is_vs_interval_vwap_bps[:3].copy()]
        records[n], cores[n] = rec, core
    for key in records[8]:
        np.testing.assert_array_equal(
            np.array(records[8][key]), np.array(records[3][key]), err_msg=key
        )
    # the 3 episodes are different paths (prefix equality is not equality of identical rows)
    mids = np.array(records[3]["mid"])
    assert not np.array_equal(mids[:, 0], mids[:, 1])


# -- rewards ----------------------------------------------------------------------------------


@pytest.mark.parametrize("actions", ["seed004", "continuous"])
@pytest.mark.parametrize("side", ["sell", "buy"])
def test_is_reward_sums_to_minus_episode_is(actions: str, side: str) -> None:
    env = ExecutionEnv(EnvConfig(actions=actions, reward="is_bps"), order=make_order(side=side))
    rng = np.random.default_rng(3)
    for seed in range(3):
        if actions == "seed004":
            plan: list[Any] = list(rng.integers(0, 5, size=10))
        else:
            plan = [np.array([f], dtype=np.float32) for f in rng.uniform(0, 0.4, size=10)]
        ep = run_episode(env, plan, seed=seed)
        info = ep["info"]
        assert info is not None and info["fill_rate"] == 1.0
        # float64 accounting inside the env: exact up to rounding
        assert info["return"] == pytest.approx(-info["is_bps"], rel=1e-12, abs=1e-12)
        # the float32 step rewards sum to it up to float32 rounding of each term
        rewards = np.array(ep["rewards"], dtype=np.float64)
        f32_slack = 2.0**-23 * np.abs(rewards).sum() + 1e-12
        assert abs(rewards.sum() - (-info["is_bps"])) <= f32_slack
        assert info["is_bps"] != 0.0


@pytest.mark.parametrize("vol_multiplier", [1.0, 1.5])
@pytest.mark.parametrize("side", ["sell", "buy"])
def test_risk_adjusted_return_is_minus_is_minus_risk_term(side: str, vol_multiplier: float) -> None:
    sigma, lam, n_steps, horizon_days, s0, qty = 0.95, 1e-6, 10, 5.0, 50.0, 1_000_000
    market = ACMarketConfig(
        sigma=sigma, risk_aversion=lam, n_steps=n_steps, vol_multiplier=vol_multiplier
    )
    order = make_order(qty=qty, side=side, horizon_s=horizon_days * DAY_S, arrival_px=s0)
    env = ExecutionEnv(EnvConfig(market=market, actions="seed004", reward="risk_adjusted"), order)
    rng = np.random.default_rng(4)
    for seed in range(3):
        ep = run_episode(env, list(rng.integers(0, 5, size=n_steps)), seed=seed)
        info = ep["info"]
        schedule = env.core.stats.schedule[0].astype(np.float64)
        assert schedule.sum() == qty
        holdings_after = qty - np.cumsum(schedule)  # x_1 ... x_N
        tau = horizon_days / n_steps
        sigma_eff = sigma * vol_multiplier
        risk_bps = lam * (sigma_eff**2 * tau * holdings_after**2).sum() / (qty * s0) * 1e4
        assert risk_bps > 1.0  # the term is not negligible, so the check has teeth
        assert info["cuts"] == 0
        assert info["return"] == pytest.approx(-(info["is_bps"] + risk_bps), rel=1e-10)


def test_risk_adjusted_penalises_each_cut_by_one() -> None:
    market = ACMarketConfig(n_steps=4, risk_aversion=0.0)
    order = make_order(qty=1000, horizon_s=DAY_S, constraints={"child_max": 200})
    env = ExecutionEnv(EnvConfig(market=market, actions="seed003", reward="risk_adjusted"), order)
    ep = run_episode(env, [3, 3, 0, 0], seed=0)  # 500 and 400 wanted, both cut to 200
    info = ep["info"]
    assert info["cuts"] == 2 and info["breaches"] == 0
    assert info["residual_shares"] == 400  # 200 + 200 + 0 + 200 of 1000 within the cap
    assert info["return"] == pytest.approx(-info["is_bps"] - 2.0, rel=1e-12)


# -- episode mechanics ------------------------------------------------------------------------


@pytest.mark.parametrize("n_steps", [1, 2, 7])
def test_always_wait_is_forced_to_complete_at_the_last_step(n_steps: int) -> None:
    market = ACMarketConfig(n_steps=n_steps)
    env = ExecutionEnv(EnvConfig(market=market, actions="seed003"), make_order(qty=12_345))
    ep = run_episode(env, [0] * (n_steps + 5), seed=0)
    assert ep["steps"] == n_steps
    assert ep["info"]["fill_rate"] == 1.0
    assert ep["info"]["child_orders"] == 1
    assert ep["info"]["cuts"] == 0 and ep["info"]["breaches"] == 0
    expected = np.zeros(n_steps, dtype=np.int64)
    expected[-1] = 12_345
    np.testing.assert_array_equal(env.core.stats.schedule[0], expected)
    assert ep["obs"][-1][0] == 0.0 and ep["obs"][-1][1] == 1.0


@pytest.mark.parametrize("side", ["sell", "buy"])
def test_trading_everything_terminates_after_one_step(side: str) -> None:
    env = ExecutionEnv(EnvConfig(actions="seed003"), make_order(qty=5_000, side=side))
    env.reset(seed=0)
    obs, _, terminated, truncated, info = env.step(4)  # "all"
    assert terminated and not truncated
    assert info["fill_rate"] == 1.0
    assert info["child_orders"] == 1
    assert obs[0] == 0.0  # nothing remains
    assert obs[1] == pytest.approx(1 / env.core.n_steps)
    assert env.core.stats.schedule[0, 0] == 5_000 and env.core.stats.schedule[0, 1:].sum() == 0


@pytest.mark.parametrize("side", ["sell", "buy"])
def test_hand_computed_single_step(side: str) -> None:
    """σ = 0, μ = 0: the step is deterministic; all numbers are exact in binary."""
    s0, eps, eta, gamma, qty = 100.0, 0.125, 0.25, 0.125, 64
    # horizon one time unit in 2 steps: τ = 0.5, η/τ = 0.5, η̃ = 0.25 − 0.125·0.25 > 0
    market = ACMarketConfig(
        s0=s0, sigma=0.0, drift=0.0, eta=eta, gamma=gamma, epsilon=eps, n_steps=2
    )
    tau = 0.5
    sgn = -1 if side == "sell" else +1
    order = make_order(qty=qty, side=side, horizon_s=DAY_S, arrival_px=s0)
    env = ExecutionEnv(EnvConfig(market=market, actions="continuous", reward="is_bps"), order)
    env.reset(seed=0)
    obs, reward, terminated, _, _ = env.step(np.array([0.5], dtype=np.float32))
    n1 = 32
    fill1 = s0 + sgn * (eps + eta / tau * n1)  # sell: S0 − ε − (η/τ)·n
    mid1 = s0 + sgn * gamma * n1  # sell: S0 − γ·n
    assert fill1 == (83.875 if side == "sell" else 116.125)
    assert not terminated
    assert env.core.stats.schedule[0, 0] == n1
    assert env.core.market.mid[0] == mid1
    is1 = sgn * n1 * (fill1 - s0) / s0 * 1e4 / qty
    assert env.core.stats.is_bps[0] == pytest.approx(is1, rel=1e-12)
    assert reward == pytest.approx(-is1, rel=1e-6)  # float32 reward
    assert obs[0] == 0.5 and obs[1] == 0.5

    # last step: the remaining 32 go whatever the action says, from the impacted mid
    obs, reward, terminated, _, info = env.step(np.array([0.0], dtype=np.float32))
    n2 = 32
    fill2 = mid1 + sgn * (eps + eta / tau * n2)
    assert terminated
    assert env.core.market.mid[0] == mid1 + sgn * gamma * n2
    avg = (n1 * fill1 + n2 * fill2) / qty
    assert info["is_bps"] == pytest.approx(sgn * (avg - s0) / s0 * 1e4, rel=1e-12)
    assert info["is_bps"] > 0  # impact is a cost on both sides


@pytest.mark.parametrize("side", [+1, -1])
def test_market_execute_prices_match_the_ac_formulas(side: int) -> None:
    c = ACMarketConfig(
        s0=100.0, sigma=0.0, eta=0.25, gamma=0.125, epsilon=0.125, horizon=1.0, n_steps=2
    )
    m = ACMarket(c, n_envs=3, side=side)
    m.reset(np.random.default_rng(0))
    orders = ChildOrderBatch.market_orders(3)
    orders.qty[:] = [0, 8, 32]
    fill = m.execute(orders, np.array([True, True, True]))
    np.testing.assert_array_equal(fill.qty, [0, 8, 32])
    assert math.isnan(fill.avg_px[0])  # nothing traded, no price
    assert fill.avg_px[1] == 100.0 + side * (0.125 + 0.5 * 8)
    assert fill.avg_px[2] == 100.0 + side * (0.125 + 0.5 * 32)
    np.testing.assert_array_equal(m.mid, [100.0, 100.0 + side * 1.0, 100.0 + side * 4.0])


# -- masks and hard limits --------------------------------------------------------------------


def seed003_shares(remaining: int) -> np.ndarray:
    """What each seed003 action asks for: round(f·remaining), at least 1 share if f > 0."""
    out = []
    for f in (0.0, 0.10, 0.25, 0.50, 1.0):
        s = math.floor(f * remaining + 0.5)
        if f > 0 and s == 0:
            s = 1
        out.append(min(s, remaining))
    return np.array(out)


def test_child_max_masks_seed003_and_cuts_masked_actions() -> None:
    market = ACMarketConfig(n_steps=4)
    order = make_order(qty=1000, horizon_s=DAY_S, constraints={"child_max": 200})
    env = ExecutionEnv(EnvConfig(market=market, actions="seed003"), order)
    env.reset(seed=0)

    mask = env.action_masks()
    assert mask.dtype == bool and mask.shape == (5,)
    np.testing.assert_array_equal(mask, seed003_shares(1000) <= 200)
    np.testing.assert_array_equal(mask, [True, True, False, False, False])

    env.step(3)  # "large": 500 wanted, cut to the cap, counted as a cut
    assert env.core.stats.schedule[0, 0] == 200
    assert env.core.stats.cuts[0] == 1

    # 800 left: 10 % = 80, 25 % = 200 (== cap, allowed), 50 % = 400
    np.testing.assert_array_equal(env.action_masks(), [True, True, True, False, False])
    env.step(2)
    assert env.core.stats.schedule[0, 1] == 200
    assert env.core.stats.cuts[0] == 1  # allowed: not a cut

    env.step(0)  # wait is always allowed
    assert env.core.stats.cuts[0] == 1
    # last step: what is left goes whatever the action, every action allowed, but only up to
    # the cap (it used to send all 600, three times child_max); the rest stays unfilled
    assert env.action_masks().all()
    *_, terminated, _, info = env.step(1)
    assert terminated
    assert info["cuts"] == 1 and info["breaches"] == 0
    assert info["fill_rate"] == 0.6 and info["residual_shares"] == 400
    np.testing.assert_array_equal(env.core.stats.schedule[0], [200, 200, 0, 200])


def test_participation_cap_masks_actions_above_expected_volume() -> None:
    # flat volume profile: expected volume per step = adv·T/N = 4000·1/4 = 1000 shares
    market = ACMarketConfig(n_steps=4, adv=4000.0, volume_u_shape=0.0)
    order = make_order(qty=1000, horizon_s=DAY_S, constraints={"participation": 0.25})
    env = ExecutionEnv(EnvConfig(market=market, actions="seed003"), order)
    env.reset(seed=0)
    cap = math.floor(0.25 * 1000)
    np.testing.assert_array_equal(env.action_masks(), seed003_shares(1000) <= cap)
    np.testing.assert_array_equal(env.action_masks(), [True, True, True, False, False])
    env.step(4)  # "all": cut to 250
    assert env.core.stats.schedule[0, 0] == cap
    assert env.core.stats.cuts[0] == 1


def test_seed004_without_an_allowed_action_allows_only_the_smallest() -> None:
    order = make_order(qty=1000, constraints={"child_max": 10})  # 5 % = 50 > 10
    env = ExecutionEnv(EnvConfig(actions="seed004"), order)
    env.reset(seed=0)
    np.testing.assert_array_equal(env.action_masks(), [True, False, False, False, False])
    env.step(0)
    assert env.core.stats.schedule[0, 0] == 10  # cut to the cap
    # the policy chose the only action it was allowed: not the policy's cut
    assert env.core.stats.cuts[0] == 0


def test_nan_continuous_action_is_refused_before_anything_trades() -> None:
    """A diverged policy's NaN must not become a garbage child order (NaN cast to int64 is
    -2^63 shares)."""
    env = ExecutionEnv(EnvConfig(actions="continuous"), make_order(qty=1000))
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(np.array([np.nan], dtype=np.float32))
    assert env.core.remaining[0] == 1000
    np.testing.assert_array_equal(env.core.stats.schedule, 0)
    obs, *_ = env.step(np.array([0.5], dtype=np.float32))  # the env is still usable
    assert obs[0] == 0.5


def test_out_of_range_discrete_action_is_refused() -> None:
    env = ExecutionEnv(EnvConfig(actions="seed003"), make_order(qty=1000))
    env.reset(seed=0)
    for bad in (5, -1):
        with pytest.raises(ValueError, match=str(bad)):
            env.step(bad)
    assert env.core.remaining[0] == 1000


def test_continuous_action_is_cut_to_child_max() -> None:
    order = make_order(qty=1000, constraints={"child_max": 150})
    env = ExecutionEnv(EnvConfig(actions="continuous"), order)
    env.reset(seed=0)
    env.step(np.array([1.0], dtype=np.float32))
    env.step(np.array([0.1], dtype=np.float32))  # 85 shares: within the cap
    np.testing.assert_array_equal(env.core.stats.schedule[0, :2], [150, 85])
    assert env.core.stats.cuts[0] == 1
    with pytest.raises(ConfigError):
        env.action_masks()  # continuous actions have no masks


# -- the batched vector env -------------------------------------------------------------------


def test_vector_env_autoresets_in_the_same_step() -> None:
    n, n_steps = 4, 5
    config = EnvConfig(market=ACMarketConfig(n_steps=n_steps), actions="continuous")
    venv = ExecutionVectorEnv(n, config, order=make_order(qty=10_000))
    assert venv.metadata["autoreset_mode"] == "same_step"
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (n, 4)
    for k in range(n_steps):
        twap = np.full((n, 1), 1.0 / (n_steps - k), dtype=np.float32)
        obs, reward, terminated, truncated, info = venv.step(twap)
        assert reward.shape == (n,) and not truncated.any()
        if k < n_steps - 1:
            assert not terminated.any()
            assert "final_obs" not in info
            np.testing.assert_allclose(obs[:, 0], 1.0 - (k + 1) / n_steps, atol=1e-6)
    assert terminated.all()
    assert info["_final_obs"].all()
    np.testing.assert_array_equal(info["final_obs"][:, 0], 0.0)  # nothing left
    np.testing.assert_array_equal(info["final_obs"][:, 1], 1.0)  # at the horizon
    np.testing.assert_array_equal(obs[:, 0], 1.0)  # fresh episode
    np.testing.assert_array_equal(obs[:, 1], 0.0)
    np.testing.assert_array_equal(info["fill_rate"], 1.0)
    np.testing.assert_array_equal(venv.core.stats.schedule, 0)  # the new episodes are empty
    # the new episodes run normally
    obs, _, terminated, _, info = venv.step(np.full((n, 1), 0.2, dtype=np.float32))
    assert not terminated.any() and "final_obs" not in info
    np.testing.assert_array_equal(obs[:, 0], np.float32(0.8))


def test_vector_env_only_finished_envs_are_reset() -> None:
    config = EnvConfig(market=ACMarketConfig(n_steps=5), actions="seed003")
    venv = ExecutionVectorEnv(3, config, order=make_order(qty=1000))
    venv.reset(seed=0)
    obs, _, terminated, _, info = venv.step(np.array([4, 1, 0]))
    np.testing.assert_array_equal(terminated, [True, False, False])
    np.testing.assert_array_equal(info["_final_obs"], [True, False, False])
    assert info["final_obs"][0, 0] == 0.0
    np.testing.assert_array_equal(obs[:, 0], np.float32([1.0, 0.9, 1.0]))
    np.testing.assert_array_equal(obs[:, 1], np.float32([0.0, 0.2, 0.2]))


# -- Stable-Baselines3 --------------------------------------------------------------------------


def test_sb3_vecenv_api() -> None:
    from execrl.env.sb3 import ExecutionSB3VecEnv

    n, n_steps = 3, 4
    config = EnvConfig(market=ACMarketConfig(n_steps=n_steps), actions="seed003")
    venv = ExecutionSB3VecEnv(n, config, order=make_order(qty=1000))
    obs = venv.reset()
    assert obs.shape == (n, 4) and obs.dtype == np.float32
    masks = venv.env_method("action_masks")
    assert len(masks) == n and all(np.asarray(m).shape == (5,) for m in masks)
    assert len(venv.env_method("action_masks", indices=[0, 2])) == 2
    # env 0 trades all now, env 1 waits, env 2 waits
    obs, rewards, dones, infos = venv.step(np.array([4, 0, 0]))
    assert obs.shape == (n, 4) and rewards.shape == (n,) and dones.shape == (n,)
    assert isinstance(infos, list) and len(infos) == n
    np.testing.assert_array_equal(dones, [True, False, False])
    assert "terminal_observation" in infos[0]
    assert infos[0]["terminal_observation"][0] == 0.0  # episode ended with nothing left
    assert obs[0][0] == 1.0 and obs[0][1] == 0.0  # env 0 already restarted
    assert "terminal_observation" not in infos[1] and "terminal_observation" not in infos[2]
    for _ in range(n_steps - 1):
        obs, rewards, dones, infos = venv.step(np.array([0, 0, 0]))
    np.testing.assert_array_equal(dones, [False, True, True])
    for i in (1, 2):
        assert infos[i]["terminal_observation"][0] == 0.0
        assert infos[i]["terminal_observation"][1] == 1.0
        assert infos[i]["episode"]["r"] == pytest.approx(-infos[i]["is_bps"], rel=1e-9)


def test_sb3_episode_info_reports_the_true_length() -> None:
    """SB3's Monitor convention: info["episode"]["l"] is the finished episode's length."""
    from execrl.env.sb3 import ExecutionSB3VecEnv

    n_steps = 4
    config = EnvConfig(market=ACMarketConfig(n_steps=n_steps), actions="seed003")
    venv = ExecutionSB3VecEnv(2, config, order=make_order(qty=1000))
    venv.reset()
    _, _, dones, infos = venv.step(np.array([4, 0]))  # env 0: everything in one step
    assert dones[0] and not dones[1]
    assert infos[0]["episode"]["l"] == 1
    for _ in range(n_steps - 1):
        _, _, dones, infos = venv.step(np.array([2, 0]))
    assert dones[1]
    assert infos[1]["episode"]["l"] == n_steps


def test_sb3_vecenv_seed_fixes_the_paths() -> None:
    from execrl.env.sb3 import ExecutionSB3VecEnv

    def rollout(seed: int) -> np.ndarray:
        venv = ExecutionSB3VecEnv(2, EnvConfig(actions="seed004"))
        venv.seed(seed)
        venv.reset()
        out = []
        for _ in range(5):
            obs, *_ = venv.step(np.array([1, 3]))
            out.append(obs)
        return np.array(out)

    np.testing.assert_array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


@pytest.mark.filterwarnings(*UNBOUNDED_BOX_WARNINGS)
def test_maskable_ppo_trains_end_to_end() -> None:
    import torch
    from sb3_contrib import MaskablePPO

    from execrl.env.sb3 import ExecutionSB3VecEnv

    torch.set_num_threads(1)
    venv = ExecutionSB3VecEnv(4, EnvConfig(actions="seed003"), order=make_order(qty=10_000))
    model = MaskablePPO("MlpPolicy", venv, n_steps=16, batch_size=64, n_epochs=1, seed=0)
    model.learn(256)
    assert model.num_timesteps >= 256
    obs = venv.reset()
    actions, _ = model.predict(obs, action_masks=venv.action_masks(), deterministic=True)
    assert actions.shape == (4,)
    assert set(actions.tolist()) <= set(range(5))


@pytest.mark.filterwarnings(*UNBOUNDED_BOX_WARNINGS)
def test_ppo_trains_on_continuous_actions() -> None:
    import torch
    from stable_baselines3 import PPO

    from execrl.env.sb3 import ExecutionSB3VecEnv

    torch.set_num_threads(1)
    venv = ExecutionSB3VecEnv(4, EnvConfig(actions="continuous"), order=make_order(qty=10_000))
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=64, n_epochs=1, seed=0)
    model.learn(256)
    assert model.num_timesteps >= 256
    actions, _ = model.predict(venv.reset(), deterministic=True)
    assert actions.shape == (4, 1)
    assert ((actions >= 0.0) & (actions <= 1.0)).all()


# -- bad configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (EnvConfig(observations="everything"), "everything"),
        (EnvConfig(observations=("remaining_ratio", "moon_phase")), "moon_phase"),
        (EnvConfig(actions="seed999"), "seed999"),
        (EnvConfig(reward="sharpe"), "sharpe"),
        (EnvConfig(observations="signal"), "signal"),  # market without a signal
    ],
)
def test_bad_env_config_is_refused_by_name(config: EnvConfig, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExecutionEnv(config)
    assert named in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("update", "named"),
    [
        ({"sigma": -0.1}, "sigma"),
        ({"n_steps": 0}, "n_steps"),
        ({"eta": 1e-9, "gamma": 1.0}, "eta"),  # η̃ = η − γτ/2 < 0
        ({"eta": 0.25, "gamma": 1.0}, "eta"),  # η̃ = 0.25 − 1·0.5/2 = 0 exactly
        ({"volatility": 1.0}, "volatility"),  # unknown field
        ({"eta": 0.0}, "eta"),
        ({"s0": math.nan}, "s0"),
    ],
)
def test_bad_market_config_is_refused_by_name(update: dict[str, Any], named: str) -> None:
    data = {**ACMarketConfig().model_dump(), "horizon": 5.0, "n_steps": 10, **update}
    with pytest.raises(ConfigError) as info:
        ACMarketConfig.from_dict(data)
    msg = str(info.value)
    assert named in msg
    assert "\n" not in msg


def test_eta_tilde_boundary_is_strict() -> None:
    base = {"horizon": 1.0, "n_steps": 2, "gamma": 1.0}  # γτ/2 = 0.25
    assert ACMarketConfig.from_dict({**base, "eta": 0.2500001}).eta_tilde > 0
    with pytest.raises(ConfigError):
        ACMarketConfig.from_dict({**base, "eta": 0.25})


def test_market_config_accepts_the_near_zero_impact_market() -> None:
    c = ACMarketConfig.from_dict({"gamma": 0.0, "epsilon": 0.0, "eta": 1e-12})
    assert c.eta_tilde == 1e-12


def test_expected_cost_reward_keeps_every_policys_expected_return():
    """The expected_cost reward drops the price innovation only: per episode it differs from
    risk_adjusted by Σ side·x_k·σ√τ·ξ_k/(X·S0)·1e4 exactly (zero mean for any policy)."""
    from execrl.env import DEFAULT_ORDER, EnvConfig, make_execution

    n = 4000
    returns = {}
    for reward in ("risk_adjusted", "expected_cost"):
        core = make_execution(EnvConfig(actions="seed003", reward=reward), DEFAULT_ORDER,
                              n_envs=n, autoreset=False)
        core.reset(seed=11)
        rng = np.random.default_rng(0)
        while not core.done.all():
            core.step(rng.integers(0, 5, size=n))
        returns[reward] = core.stats.episode_return.copy()
        schedule = core.stats.schedule.copy()
    m = core.market
    c = m.config
    holdings = DEFAULT_ORDER.qty - np.cumsum(schedule, axis=1)  # x_1 … x_N
    xi = m.price_innovations()  # ξ_k of every episode, (n_envs, n_steps)
    innovation = (holdings * c.sigma_eff * np.sqrt(c.tau) * xi).sum(axis=1)
    notional = DEFAULT_ORDER.qty * c.s0
    side = DEFAULT_ORDER.side.sign
    # reward = −side·(trade cost + x_k·ΔS): replacing ΔS by E[ΔS] adds side·x_k·σ√τ·ξ_k
    expected_gap = side * innovation / notional * 1e4
    np.testing.assert_allclose(returns["expected_cost"] - returns["risk_adjusted"],
                               expected_gap, rtol=1e-9, atol=1e-9)
    # For a fixed schedule in a market without a signal nothing random is left in the return.
    fixed = {}
    for reward in ("risk_adjusted", "expected_cost"):
        core = make_execution(EnvConfig(actions="seed003", reward=reward), DEFAULT_ORDER,
                              n_envs=500, autoreset=False)
        core.reset(seed=3)
        while not core.done.all():
            core.step(np.full(500, 2))
        fixed[reward] = core.stats.episode_return.copy()
    assert fixed["expected_cost"].std() < 1e-9 < 10.0 < fixed["risk_adjusted"].std()
