"""The exported policy's compiled forward pass: the network numpy would compute, row by row
the same whatever the batch (one decision does not depend on the observations beside it)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from execrl.agents.export import NumpyPolicy

OBS = ("remaining_ratio", "elapsed_ratio", "price_drift", "volatility")


def _mlp(activation: str, sizes: tuple[int, ...], seed: int = 0) -> NumpyPolicy:
    rng = np.random.default_rng(seed)
    weights = []
    for a, b in itertools.pairwise(sizes):
        weights += [rng.standard_normal((a, b)), rng.standard_normal(b)]
    return NumpyPolicy("p", OBS, "seed004", "argmax", weights, activation=activation)


def _reference(policy: NumpyPolicy, x: np.ndarray) -> np.ndarray:
    act = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0), "identity": lambda v: v}
    w = policy.weights
    for i in range(0, len(w), 2):
        x = x @ w[i] + w[i + 1]
        if i < len(w) - 2:
            x = act[policy.activation](x)
    return x


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("sizes", [(4, 5), (4, 64, 64, 5), (4, 3, 70, 2, 1)])
def test_forward_pass_is_the_network(activation: str, sizes: tuple[int, ...]) -> None:
    policy = _mlp(activation, sizes)
    x = np.random.default_rng(1).standard_normal((300, 4)).astype(np.float32)
    got = policy.outputs(x)
    expected = _reference(policy, x.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # each row alone gives the same bits as in the batch
    rows = np.concatenate([policy.outputs(x[i]) for i in range(0, 300, 37)])
    np.testing.assert_array_equal(rows, got[::37])
    assert np.array_equal(policy.act(x), expected.argmax(axis=1))


def test_forward_refuses_observations_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match="5 features"):
        _mlp("relu", (4, 8, 5)).outputs(np.zeros((2, 5)))
