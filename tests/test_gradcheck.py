"""Finite differences in float64 prove every hand-derived backward pass."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet import activations
from gpunet.gradcheck import (DROPOUT_COMBINATIONS, DROPOUT_RATE, NORM_COMBINATIONS,
                              check_combination, combinations)


@pytest.mark.parametrize("combo", combinations(), ids=lambda c: "-".join(c))
def test_every_activation_and_loss_matches_finite_differences(combo, backend):
    result = check_combination(combo, backend, seed=7)
    assert result.ok, result.ratios
    assert set(result.errors) == {"W1", "b1", "W2", "b2", "x"}


@pytest.mark.parametrize("combo", DROPOUT_COMBINATIONS, ids=lambda c: "-".join(c))
def test_dropout_backward_passes_match_finite_differences(combo, backend):
    """With p = 0.5 on two hidden layers (finite differences under the same masks)."""
    result = check_combination(combo, backend, sizes=(4, 7, 6, 3), batch=8, seed=11,
                               dropout=DROPOUT_RATE)
    assert result.ok, result.ratios


@pytest.mark.parametrize("combo", NORM_COMBINATIONS, ids=lambda c: "-".join(c))
@pytest.mark.parametrize("dropout", [0.0, DROPOUT_RATE])
def test_layer_norm_backward_passes_match_finite_differences(combo, backend, dropout):
    """norm="layer" in both hidden layers (gamma and beta drawn away from 1 and 0), alone and
    under dropout masks."""
    result = check_combination(combo, backend, sizes=(4, 7, 6, 3), batch=8, seed=13,
                               dropout=dropout, norm="layer")
    assert {"gamma1", "beta1", "gamma2", "beta2"} <= set(result.ratios)
    assert result.ok, result.ratios


def test_gradcheck_catches_a_wrong_layer_norm_backward(monkeypatch):
    """A planted error in the layer norm's dJ/dz (the mean(g xhat) term left out) is caught
    in W1 and b1, which lie below the norm, but not in the layer above it."""
    backend = gn.get_backend("numpy")
    right = type(backend).layer_norm_backward

    def wrong(self, dn, xhat, rstd, gamma, out=None, scratch=None):
        dz, dgamma, dbeta = right(self, dn, xhat, rstd, gamma, out, scratch)
        g = dn * gamma
        return dz + rstd * xhat * (g * xhat).mean(axis=1, keepdims=True), dgamma, dbeta

    monkeypatch.setattr(type(backend), "layer_norm_backward", wrong)
    result = check_combination(NORM_COMBINATIONS[0], "numpy", sizes=(4, 7, 3), batch=8,
                               seed=2, norm="layer")
    assert not result.ok
    assert result.ratios["W1"] > 1 and result.ratios["W2"] <= 1 and result.ratios["gamma1"] <= 1


def test_gradcheck_catches_a_wrong_backward(monkeypatch):
    """A planted error in tanh's derivative (1 - y instead of 1 - y^2) must be caught."""
    backend = gn.get_backend("numpy")
    right = type(backend).act_backward

    def wrong(self, name, dy, z, y, slope=activations.DEFAULT_SLOPE):
        return dy * (1 - y) if name == "tanh" else right(self, name, dy, z, y, slope)

    monkeypatch.setattr(type(backend), "act_backward", wrong)
    model = gn.MLP([3, 4, 2], activation="tanh", dtype="float64", seed=1)
    rng = np.random.default_rng(1)
    result = gn.gradcheck(model, gn.MSELoss(), rng.normal(size=(5, 3)), rng.normal(size=(5, 2)))
    assert not result.ok
    assert result.ratios["W1"] > 1 and result.ratios["W2"] <= 1  # W2 sits after tanh


def test_gradcheck_refuses_float32():
    model = gn.MLP([2, 2], dtype="float32")
    with pytest.raises(gn.ConfigError, match="float64"):
        gn.gradcheck(model, gn.MSELoss(), np.ones((1, 2)), np.ones((1, 2)))


def test_mse_sum_gradient_grows_with_the_batch():
    """Seed 1.4f: with the summed per-sample loss, the gradient grows with the batch size."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 3))
    y = rng.normal(size=(4, 2))
    norms = {}
    for reps in (1, 3):
        model = gn.MLP([3, 5, 2], dtype="float64", seed=2)
        value, g = gn.MSELoss(reduction="sum")(model.forward(np.tile(x, (reps, 1))),
                                               np.tile(y, (reps, 1)))
        model.backward(g)
        norms[reps] = model.grads["W1"]
    np.testing.assert_allclose(norms[3], 3 * norms[1], rtol=1e-12)
