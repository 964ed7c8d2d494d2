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


def _scaled_by(monkeypatch, factor):
    """linear_backward's dJ/dW and dJ/db multiplied by ``factor`` (a planted error)."""
    backend = gn.get_backend("numpy")
    right = type(backend).linear_backward

    def wrong(self, dz, x, W, need_dx=True, *args, **kwargs):
        dx, dW, db = right(self, dz, x, W, need_dx, *args, **kwargs)
        return dx, dW * factor, db * factor

    monkeypatch.setattr(type(backend), "linear_backward", wrong)


def test_a_large_loss_passes_when_right_and_fails_when_wrong(monkeypatch):
    """Raw regression targets near 100: J is near 10^4 and the central differences carry
    round-off of some 10^-6, which the tolerance allows for (torch autograd agrees with the
    analytic gradients to 10^-14 here); a dJ/dW off by 0.1 % is still caught."""
    rng = np.random.default_rng(0)
    model = gn.MLP([8, 16, 1], activation="tanh", dtype="float64", seed=0)
    x, y = rng.normal(size=(64, 8)), 100 * (1 + rng.normal(size=(64, 1)))
    value, _ = gn.MSELoss()(model.forward(x, cache=False), y)
    assert value > 5e3
    assert gn.gradcheck(model, gn.MSELoss(), x, y)
    assert gn.gradcheck(model, gn.MSELoss(reduction="sum"), x, y)
    _scaled_by(monkeypatch, 1.001)
    result = gn.gradcheck(model, gn.MSELoss(), x, y)
    assert not result and result.ratios["W1"] > 1 and result.ratios["W2"] > 1


def test_a_check_that_could_not_fail_warns(monkeypatch):
    """A nearly fitted net (targets within 2e-7 of its outputs) has gradients under atol:
    the doubled dJ/dW passes, and gradcheck says that it could not have told."""
    rng = np.random.default_rng(0)
    model = gn.MLP([4, 8, 2], activation="tanh", dtype="float64", seed=0)
    x = rng.normal(size=(16, 4))
    y = model.predict(x) + 2e-7 * rng.normal(size=(16, 2))
    _scaled_by(monkeypatch, 2.0)
    with pytest.warns(UserWarning, match="could not have failed"):
        assert gn.gradcheck(model, gn.MSELoss(), x, y)
    assert not gn.gradcheck(model, gn.MSELoss(), x, y, atol=1e-14)


def test_tensors_whose_gradients_all_lie_under_atol_are_named(torch):
    """In a 20-layer sigmoid net the first layers' gradients vanish under atol (torch's
    autograd says so): a dJ/dW1 three times too large passed with no word, since other
    tensors' gradients were not all that small. The warning names W1 and its like."""
    rng = np.random.default_rng(0)
    model = gn.MLP([5] + [8] * 20 + [3], activation="sigmoid", seed=1, dtype="float64")
    x, y = rng.normal(size=(6, 5)), rng.integers(0, 3, 6)
    net = model.to_torch()
    torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y)).backward()
    assert net[0].weight.grad.abs().max() < 1e-7 < net[-1].weight.grad.abs().max()
    right = model.backward

    def wrong(dJdy_hat, need_dx=True):
        out = right(dJdy_hat, need_dx)
        model.grads["W1"] *= 3.0
        return out

    model.backward = wrong
    with pytest.warns(UserWarning, match=r"every numeric gradient of W1, .* \(\d+ of 43 "
                                         r"tensors\) lies within atol = 1e-07 of 0") as seen:
        result = gn.gradcheck(model, gn.CrossEntropyLoss(), x, y)
    assert result.ok and "W21" not in str(seen[0].message)
    model.backward(gn.CrossEntropyLoss()(model.forward(x), y)[1])  # (wrong: 3 times torch's)
    np.testing.assert_allclose(model.grads["W1"], 3 * net[0].weight.grad.numpy(), rtol=1e-9)


def test_a_relu_kink_under_a_step_is_counted_and_a_failure_there_explained():
    """A zero input row with zero biases puts relu's z at 0 exactly: the central difference
    measures relu'(0) as 1/2, backward (as torch's autograd) takes 0. The check fails with no
    wrong gradient, and says why; the same rows moved off 0 pass with no kink counted."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    model = gn.MLP([3, 5, 2], activation="relu", dtype="float64", seed=0)  # biases 0
    x = rng.normal(size=(4, 3))
    x[1] = 0.0
    y = np.array([0, 1, 1, 0])
    with pytest.warns(UserWarning, match=r"5 pre-activation\(s\) of a relu lie within a "
                                         r"step .* need not be a wrong gradient"):
        result = gn.gradcheck(model, gn.CrossEntropyLoss(), x, y)
    assert not result.ok and result.kinks == 5
    # the analytic gradients are torch's, kink and all
    net = model.to_torch()
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(net(xt), torch.tensor(y)).backward()
    model.backward(gn.CrossEntropyLoss()(model.forward(x), y)[1])
    np.testing.assert_allclose(model.grads["W1"], net[0].weight.grad.numpy(), rtol=1e-12,
                               atol=1e-15)
    x[1] = rng.normal(size=3)
    result = gn.gradcheck(model, gn.CrossEntropyLoss(), x, y)
    assert result.ok and result.kinks == 0


def test_parameters_in_any_layout_are_perturbed_and_other_dtypes_refused():
    """A weight assigned as a transposed view (an (in, out) array's .T, as scikit-learn's
    coefs_ give) is perturbed where the model reads it; a float32 one is refused by name."""
    rng = np.random.default_rng(4)
    model = gn.MLP([3, 5, 2], activation="tanh", dtype="float64", seed=1)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    model.params["W1"] = np.ascontiguousarray(model.params["W1"].T).T
    assert not model.params["W1"].flags.c_contiguous
    result = gn.gradcheck(model, gn.MSELoss(), x, y)
    assert result, result.ratios
    assert result.ratios["W1"] < 0.1
    model.params["W2"] = model.params["W2"].astype(np.float32)
    with pytest.raises(gn.ConfigError, match="W2 is float32"):
        gn.gradcheck(model, gn.MSELoss(), x, y)


def test_the_autograder_shaped_net_and_its_losses_are_taken(monkeypatch):
    """gpunet.twolayer's net, with its (y, y_hat)-ordered losses or gpunet's: the same
    verdicts as on the general model, a planted error included."""
    from gpunet import twolayer

    rng = np.random.default_rng(5)
    net = twolayer.MLP(3, 6, "sigmoid", 6, 2, "sigmoid", dtype="float64", seed=2)
    x, y = rng.normal(size=(5, 3)), rng.uniform(0.1, 0.9, size=(5, 2))
    for loss in (twolayer.mse_loss, twolayer.bce_loss, gn.MSELoss()):
        assert gn.gradcheck(net, loss, x, y), loss
    _scaled_by(monkeypatch, 1.01)
    assert not gn.gradcheck(net, twolayer.mse_loss, x, y)
    with pytest.raises(gn.ConfigError, match="takes a gpunet MLP"):
        gn.gradcheck(object(), gn.MSELoss(), x, y)


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


@pytest.mark.parametrize("activation", ["identity", "tanh"])
def test_a_bias_before_a_batch_norm_is_not_called_a_vacuous_check(torch, activation):
    """A batch norm subtracts each feature's batch mean, so the bias just before it (and,
    through an identity activation, the norm's shift before the next norm) has no gradient:
    torch's autograd gives 0 to rounding. The vacuous-check warning named them on every
    batch-norm row of gpunet gradcheck, blaming gradients that vanish through many layers."""
    import warnings

    rng = np.random.default_rng(7)
    model = gn.MLP([4, 7, 6, 3], activation=activation, norm="batch", seed=2, dtype="float64")
    x, y = rng.normal(size=(8, 4)), rng.integers(0, 3, 8)
    net = model.to_torch()
    torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y)).backward()
    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    norms = [m for m in net if isinstance(m, torch.nn.BatchNorm1d)]
    assert linear[0].bias.grad.abs().max() < 1e-15 and linear[1].bias.grad.abs().max() < 1e-15
    assert (norms[0].bias.grad.abs().max() < 1e-15) == (activation == "identity")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gn.gradcheck(model, gn.CrossEntropyLoss(), x, y)
