"""The Almgren–Chriss market's counter-based randomness: golden paths, a reset that costs a
key, and the closed-form laws of each noise channel (volume, signal, pre-arrival walk)."""

from __future__ import annotations

import math

import numpy as np

from execrl.sim import ACMarketConfig, ChildOrderBatch, SignalConfig
from execrl.sim import almgren_chriss as acm
from execrl.sim.rng import episode_keys

GOLDEN_MARKET = ACMarketConfig(n_steps=4, signal=SignalConfig(kappa=2.0, sigma=1.0))
# seed 7, three sells of 1,000 shares a step: pinned paths of the new generator (a change of
# the random-number design shows here). libm's exp enters the volumes, hence a few ulps.
GOLDEN = {
    "arrival_vwap": [51.0251265182895, 48.85035307288692, 52.685367749062635],
    "alpha0": [-0.10801879767362915, -0.06188969577288854, -0.5010157599472466],
    "mids": [
        [49.653161607571896, 50.96866615054034, 49.48149047779889],
        [48.44131544642306, 50.764349239562364, 49.83672868058728],
        [49.02667796957369, 49.794593536957336, 50.30947275365499],
        [50.633500374820144, 51.42278820464844, 51.07282528942633],
    ],
    "volumes": [
        [7582327.282572551, 7962669.021082966, 9961395.63471669],
        [3925726.433275868, 3489675.781645926, 5260370.615974448],
        [3507936.9343093038, 3678834.545680475, 3615143.7933568577],
        [8167097.675110753, 7634444.436822435, 12141186.588122299],
    ],
    "alpha": [0.8739118847156087, -0.1005418861601273, -0.21669738372065014],
}


def _play(market, steps: int, qty: int = 1000) -> dict[str, list]:
    orders = ChildOrderBatch.market_orders(market.n_envs)
    active = np.ones(market.n_envs, dtype=bool)
    out: dict[str, list] = {"mids": [], "volumes": []}
    for _ in range(steps):
        orders.qty[:] = qty
        market.execute(orders, active)
        out["mids"].append(market.mid.copy())
        out["volumes"].append(market.feature("last_volume").copy())
    return out


def test_the_generator_pins_the_paths():
    m = GOLDEN_MARKET.build(3, -1)
    m.reset(np.random.default_rng(7))
    np.testing.assert_allclose(m.arrival_vwap, GOLDEN["arrival_vwap"], rtol=1e-13)
    np.testing.assert_allclose(m.alpha, GOLDEN["alpha0"], rtol=1e-13)
    run = _play(m, 4)
    np.testing.assert_allclose(run["mids"], GOLDEN["mids"], rtol=1e-13)
    np.testing.assert_allclose(run["volumes"], GOLDEN["volumes"], rtol=1e-12)
    np.testing.assert_allclose(m.alpha, GOLDEN["alpha"], rtol=1e-12)


def test_a_reset_draws_one_key_per_episode_and_touches_only_its_rows():
    n = 6
    m = GOLDEN_MARKET.build(n, -1)
    m.reset(np.random.default_rng(1))
    _play(m, 2)
    before = {name: getattr(m, name).copy() for name in ("mid", "arrival_vwap", "alpha")}
    keys_before = m.episode_keys.copy()
    rng = np.random.default_rng(2)
    m.reset(rng, np.array([4, 1]))
    expected_keys = episode_keys(np.random.default_rng(2), 2)
    assert m.episode_keys[4] == expected_keys[0] and m.episode_keys[1] == expected_keys[1]
    # the generator advanced by exactly two raw words
    assert rng.bit_generator.random_raw() == np.random.default_rng(2).bit_generator.random_raw(3)[2]
    others = [0, 2, 3, 5]
    assert np.array_equal(m.episode_keys[others], keys_before[others])
    for name, value in before.items():
        assert np.array_equal(getattr(m, name)[others], value[others]), name
    assert m.mid[4] == m.mid[1] == GOLDEN_MARKET.s0


def test_an_episode_is_a_function_of_its_key_alone():
    """Env 4 reset mid-run (a partial autoreset) meets exactly the path a fresh one-env market
    meets with the same key, whatever the other envs are doing."""
    m = GOLDEN_MARKET.build(6, -1)
    m.reset(np.random.default_rng(3))
    _play(m, 3)
    m.reset(np.random.default_rng(4), np.array([4]))
    lone = GOLDEN_MARKET.build(1, -1)
    lone.reset(np.random.default_rng(4))
    assert lone.episode_keys[0] == m.episode_keys[4]
    assert lone.arrival_vwap[0] == m.arrival_vwap[4] and lone.alpha[0] == m.alpha[4]
    active = np.zeros(6, dtype=bool)
    active[4] = True
    orders = ChildOrderBatch.market_orders(6)
    lone_orders = ChildOrderBatch.market_orders(1)
    for _ in range(GOLDEN_MARKET.n_steps):
        orders.qty[:] = 500
        lone_orders.qty[:] = 500
        m.execute(orders, active)
        lone.execute(lone_orders, np.ones(1, dtype=bool))
        assert m.mid[4] == lone.mid[0]
        assert m.feature("last_volume")[4] == lone.feature("last_volume")[0]
    np.testing.assert_array_equal(m.price_innovations()[4], lone.price_innovations()[0])


def test_each_channel_has_its_law():
    """Closed forms of the channels: ξ_k standard normal and independent across steps; the
    volume factor mean-one log-normal with log sd ν; the signal stationary OU (sd σ_α/√(2κ),
    lag-one correlation e^{−κτ}); the pre-arrival mids a random walk back from S_0."""
    n = 200_000
    c = ACMarketConfig(n_steps=4, volume_noise=0.3, signal=SignalConfig(kappa=2.0, sigma=1.0))
    m = c.build(n, -1)
    m.reset(np.random.default_rng(11))
    xi = m.price_innovations()
    se = 4 / math.sqrt(n)
    assert abs(xi.mean()) < se and abs(xi.std() - 1.0) < se
    assert abs(np.corrcoef(xi[:, 0], xi[:, 1])[0, 1]) < se
    alpha0 = m.alpha.copy()
    assert abs(alpha0.std() / c.signal.stationary_std - 1.0) < se
    run = _play(m, 2, qty=0)
    factor = run["volumes"][1] / c.expected_volumes()[1]
    assert abs(factor.mean() - 1.0) < 4 * factor.std() / math.sqrt(n)
    assert abs(np.log(factor).std() - 0.3) < 4 * 0.3 / math.sqrt(2 * n)
    phi = math.exp(-c.signal.kappa * c.tau)
    # after two steps α_2 = φ²α_0 + noise: corr(α_0, α_2) = φ²
    assert abs(np.corrcoef(alpha0, m.alpha)[0, 1] - phi**2) < 4 * (1 - phi**4) / math.sqrt(n)
    # the mid moves by σ√τ·ξ plus the drift from α (no impact at qty = 0)
    np.testing.assert_allclose(
        run["mids"][0] - c.s0,
        alpha0 * c.tau + c.sigma_eff * math.sqrt(c.tau) * xi[:, 0], rtol=0, atol=1e-9,
    )


def test_the_arrival_vwap_is_a_volume_weighted_walk_back_from_s0():
    """With no volume noise the arrival VWAP of M steps is the mean of the mid-points of a
    driftless walk back from S_0: unbiased, with variance σ²τ·Σ_i w_i², w_i = (M − i + ½)/M
    the weight of the walk's i-th shock in that mean."""
    M, n = 5, 200_000
    c = ACMarketConfig(volume_noise=0.0, pre_arrival_steps=M)
    m = c.build(n, 1)
    m.reset(np.random.default_rng(12))
    # step j's mid-point (1-based) is S_0 − σ√τ(Σ_{i<j} z_i + z_j/2): the mean over j
    w = (M - np.arange(1, M + 1) + 0.5) / M
    sd = c.sigma_eff * math.sqrt(c.tau) * math.sqrt((w**2).sum())
    dev = m.arrival_vwap - c.s0
    assert abs(dev.mean()) < 4 * sd / math.sqrt(n)
    assert abs(dev.std() / sd - 1.0) < 4 / math.sqrt(2 * n)
    assert acm.STREAM_PRE_ARRIVAL not in (acm.STREAM_PRICE, acm.STREAM_VOLUME, acm.STREAM_SIGNAL)
