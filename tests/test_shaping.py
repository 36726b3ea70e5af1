"""Potential-based shaping (execrl.agents.shaping): Φ is TWAP's expected cost-to-go (checked
against the closed form), shaping leaves a policy's expected return unchanged, and in the
OU-signal market it is what lets tabular Q learn on a tiny budget (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from execrl.agents.shaping import TwapPotential, make_potential, shaped
from execrl.agents.train import TrainRequest, import_algorithm
from execrl.domain import ConfigError
from execrl.env.factory import DEFAULT_ORDER, EnvConfig, make_execution, market_for_order
from execrl.env.spaces import resolve_observation_set
from execrl.evaluate.backtest import policy_context, run_policy
from execrl.policies.baselines import make_baseline
from execrl.presets import preset_market
from execrl.sim.theory import schedule_moments, twap_trajectory

SIGNAL_OBS = tuple(resolve_observation_set("signal"))


def _start_obs(observations: tuple[str, ...], rem: float = 1.0, k: float = 0.0,
               signal: float = 0.0) -> np.ndarray:
    o = np.zeros((1, len(observations)))
    o[0, observations.index("remaining_ratio")] = rem
    o[0, observations.index("elapsed_ratio")] = k
    if "signal" in observations:
        o[0, observations.index("signal")] = signal
    return o


@pytest.mark.parametrize("preset", ["ac", "ac-signal"])
def test_the_potential_at_arrival_is_minus_twaps_expected_objective(preset: str) -> None:
    market = preset_market(preset)
    m = market_for_order(market, DEFAULT_ORDER)
    side = DEFAULT_ORDER.side.sign
    mo = schedule_moments(m, twap_trajectory(m, DEFAULT_ORDER.qty), side)
    expected = mo.objective(m.risk_aversion) / mo.notional * 1e4
    pot = TwapPotential(market, DEFAULT_ORDER, SIGNAL_OBS)
    assert pot(_start_obs(SIGNAL_OBS))[0] == pytest.approx(-expected, rel=1e-9)
    # nothing left, or the horizon reached: nothing to pay
    assert pot(_start_obs(SIGNAL_OBS, rem=0.0, signal=1.5))[0] == 0.0
    assert pot(_start_obs(SIGNAL_OBS, rem=0.4, k=1.0))[0] == 0.0


def test_a_sell_with_a_rising_signal_expects_to_gain_on_what_it_holds() -> None:
    pot = TwapPotential(preset_market("ac-signal"), DEFAULT_ORDER, SIGNAL_OBS)
    up, flat = pot(_start_obs(SIGNAL_OBS, signal=1.0))[0], pot(_start_obs(SIGNAL_OBS))[0]
    down = pot(_start_obs(SIGNAL_OBS, signal=-1.0))[0]
    assert DEFAULT_ORDER.side.sign == -1 and up > flat > down
    assert up - flat == pytest.approx(flat - down)  # linear in the signal


def test_shaping_leaves_a_policys_expected_return_unchanged_but_for_phi_at_arrival() -> None:
    market = preset_market("ac-signal")
    cfg = EnvConfig(market=market, observations="signal", actions="fine")
    core = make_execution(cfg, DEFAULT_ORDER, n_envs=20_000, autoreset=False)
    pot = TwapPotential(market, DEFAULT_ORDER, tuple(core.observations))
    obs = core.reset(seed=5)
    phi0 = pot(obs)
    raw = np.zeros(len(obs))
    with_f = np.zeros(len(obs))
    rng = np.random.default_rng(0)
    while not core.done.all():
        actions = rng.integers(0, 11, len(obs))  # any policy: here a random one
        nxt, reward, term, trunc, _ = core.step(actions)
        live = ~core.done | term | trunc
        raw += np.where(live, reward, 0.0)
        with_f += np.where(live, shaped(reward, pot, obs, nxt, term | trunc), 0.0)
        obs = nxt
    diff = with_f - raw + phi0  # the F's sum minus −Φ(s0): mean zero, not zero
    assert abs(diff.mean()) < 3 * diff.std() / np.sqrt(len(diff))
    assert diff.std() > 1.0  # the signal's innovations: E[Φ(s')] is not Φ(s')


def test_the_potential_refuses_what_it_cannot_price() -> None:
    with pytest.raises(ConfigError, match="shaping 'twap' needs the observation feature"):
        TwapPotential(preset_market("ac"), DEFAULT_ORDER, ("signal",))
    with pytest.raises(ConfigError, match="shaping 'x' is unknown"):
        make_potential("x", preset_market("ac"), DEFAULT_ORDER, SIGNAL_OBS)
    assert make_potential("none", preset_market("ac"), DEFAULT_ORDER, SIGNAL_OBS) is None


def _signal_gain_of_tabular_q(shaping: str, steps: int) -> tuple[float, float]:
    """Train tabular Q on the OU-signal market, return (paired gain over TWAP in bps on
    1,000 unseen orders, greedy fraction at arrival with a strongly rising minus falling
    signal)."""
    market = preset_market("ac-signal")
    request = TrainRequest.with_defaults(
        "qtable", env_name="ac-signal", observations="signal", actions="fine", steps=steps,
        n_envs=256, seed=3,
        hyperparams={"state": {"imbalance_buckets": 11}, "q_learning": {"shaping": shaping}},
    )
    policy = import_algorithm("qtable").train(request, lambda _: None).policy
    cfg = EnvConfig(market=market)
    twap = make_baseline("twap", policy_context(cfg, DEFAULT_ORDER))
    is_twap = run_policy(twap, cfg, DEFAULT_ORDER, 1000, 77).episodes["is_bps"].to_numpy()
    is_q = run_policy(policy, cfg, DEFAULT_ORDER, 1000, 77).episodes["is_bps"].to_numpy()
    fractions = np.asarray([0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.33, 0.50, 0.67, 0.85, 1.0])
    obs = np.concatenate([_start_obs(SIGNAL_OBS, signal=s) for s in (1.5, -1.5)])
    up, down = fractions[policy.act(obs.astype(np.float32), None)]
    return float((is_twap - is_q).mean()), float(up - down)


def test_shaping_lets_tabular_q_use_the_signal_on_a_tiny_budget() -> None:
    gain, response = _signal_gain_of_tabular_q("twap", 200_000)
    gain_plain, _ = _signal_gain_of_tabular_q("none", 200_000)
    # a sell: a rising signal says wait (trade less now), a falling one sell now
    assert response < 0
    assert gain > 5.0  # bps over TWAP (the exact optimum: 29.35)
    assert gain > gain_plain + 5.0


def test_the_shaped_configurations_are_named() -> None:
    from execrl.agents.deep_q import DQNParams
    from execrl.agents.defaults import named_config
    from execrl.agents.qtable import QLearningConfig

    signal = QLearningConfig.from_dict(named_config("qtable", "signal"))
    assert (signal.q_learning.shaping, signal.state.imbalance_buckets) == ("twap", 11)
    assert QLearningConfig.from_dict(named_config("qtable", "shaped")).q_learning.shaping == "twap"
    assert QLearningConfig().q_learning.shaping == "none"  # the defaults are unchanged
    assert DQNParams(**named_config("dqn", "shaped")).shaping == "twap"
    dqn_signal = DQNParams(**named_config("dqn", "signal"))
    assert (dqn_signal.shaping, dqn_signal.net_arch, dqn_signal.lr_schedule,
            dqn_signal.replay_ratio) == ("twap", [256, 256], "linear", 8.0)
    assert DQNParams().shaping == "none"


def test_dqns_shaped_env_adds_the_expected_potential_difference() -> None:
    from execrl.agents.sb3_common import ShapedVecEnv
    from execrl.env.sb3 import ExecutionSB3VecEnv

    market = preset_market("ac-signal")
    cfg = EnvConfig(market=market, observations="signal", actions="fine")
    plain, inner = (ExecutionSB3VecEnv(64, cfg, DEFAULT_ORDER) for _ in range(2))
    pot = TwapPotential(market, DEFAULT_ORDER, tuple(inner.core.observations))
    wrapped = ShapedVecEnv(inner, pot)
    plain.seed(4)
    inner.seed(4)
    np.testing.assert_array_equal(plain.reset(), obs := wrapped.reset())
    rng = np.random.default_rng(1)
    for _ in range(12):  # past the horizon of 10: an episode ends and restarts
        actions = rng.integers(0, 11, 64)
        plain.step_async(actions)
        wrapped.step_async(actions)
        nxt_plain, r_plain, done_plain, _ = plain.step_wait()
        nxt, r, done, _ = wrapped.step_wait()
        np.testing.assert_array_equal(nxt, nxt_plain)
        np.testing.assert_array_equal(done, done_plain)
        expected = r_plain + np.where(done, 0.0, pot(pot.expected_next(obs, nxt))) - pot(obs)
        np.testing.assert_allclose(r, expected, rtol=1e-6, atol=1e-4)
        obs = nxt
    assert wrapped.core is inner.core  # export reads the core through the wrapper


def test_ppo_takes_the_shaping_and_learns_on_the_shaped_rewards(monkeypatch) -> None:
    from execrl.agents import ppo
    from execrl.agents.defaults import named_config
    from execrl.agents.sb3_common import ShapedVecEnv

    assert ppo.PPOParams(**named_config("ppo", "signal")).shaping == "twap"
    assert ppo.PPOParams().shaping == "none"  # the default is unchanged
    seen: list[object] = []
    build = ppo.build_model

    def spy(algo, params, env, seed):  # type: ignore[no-untyped-def]
        seen.append(env)
        return build(algo, params, env, seed)

    monkeypatch.setattr(ppo, "build_model", spy)
    for shaping in ("twap", "none"):
        request = TrainRequest.with_defaults(
            "ppo", env_name="ac-signal", observations="signal", steps=2_048, n_envs=64,
            seed=1, hyperparams={"shaping": shaping},
        )
        out = ppo.train(request, lambda _: None)
        assert out.extra["sb3"]["resolved_hyperparams"]["shaping"] == shaping
    shaped_env, plain_env = seen
    assert isinstance(shaped_env, ShapedVecEnv) and not isinstance(plain_env, ShapedVecEnv)
    assert isinstance(shaped_env.potential, TwapPotential)
