"""gpunet.twolayer in the shape of the course autograder (DS-GA 1008 HW1), checked by torch.

Each test does what a student's autograder does: build the net, clear_grad_and_cache, forward,
loss, backward; build ``nn.Sequential(OrderedDict(linear1, f, linear2, g))``, copy
``net.parameters['W1']`` etc. into it, run autograd, and compare ``net.grads['dJdW1']`` etc. with
the torch gradients. The backend and dtype follow the input array; torch runs in float64.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict

import numpy as np
import pytest
from conftest import RTOL, host

from gpunet.twolayer import MLP, bce_loss, mse_loss

FUNCTIONS = ["relu", "sigmoid", "identity", "tanh", "leaky_relu"]
N_IN, N_HIDDEN, N_OUT, BATCH = 3, 20, 5, 7
GRAD_KEYS = ("dJdW1", "dJdb1", "dJdW2", "dJdb2")


def torch_function(torch, name):
    nn = torch.nn
    return {"relu": nn.ReLU(), "sigmoid": nn.Sigmoid(), "identity": nn.Identity(),
            "tanh": nn.Tanh(), "leaky_relu": nn.LeakyReLU()}[name]  # LeakyReLU default 0.01


def torch_twin(torch, net, f, g):
    """The autograder's torch net, holding copies of net.parameters (as float64)."""
    nn = torch.nn
    twin = nn.Sequential(OrderedDict([
        ("linear1", nn.Linear(N_IN, N_HIDDEN, dtype=torch.float64)),
        (f, torch_function(torch, f)),
        ("linear2", nn.Linear(N_HIDDEN, N_OUT, dtype=torch.float64)),
        (g + "_out", torch_function(torch, g)),
    ]))
    as_t = lambda a: torch.tensor(host(a).astype(np.float64))  # noqa: E731
    twin.linear1.weight.data = as_t(net.parameters["W1"])
    twin.linear1.bias.data = as_t(net.parameters["b1"])
    twin.linear2.weight.data = as_t(net.parameters["W2"])
    twin.linear2.bias.data = as_t(net.parameters["b2"])
    return twin


def assert_close(actual, expected, dtype, what=""):
    """rtol by dtype, plus an atol scaled to the array (for entries near zero)."""
    actual, expected = np.asarray(host(actual), dtype=np.float64), np.asarray(host(expected))
    scale = float(np.abs(expected).max()) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=what)


def inputs(backend, dtype, loss, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, N_IN)).astype(dtype)
    if loss == "bce":
        y = (rng.uniform(size=(BATCH, N_OUT)) < 0.5).astype(dtype)
    else:
        y = rng.standard_normal((BATCH, N_OUT)).astype(dtype)
    return backend.asarray(x), backend.asarray(y)


CASES = [pytest.param(f, g, "mse", id=f"{f}-{g}-mse") for f in FUNCTIONS for g in FUNCTIONS]
CASES += [pytest.param(f, "sigmoid", "bce", id=f"{f}-sigmoid-bce") for f in FUNCTIONS]


@pytest.mark.parametrize(("f", "g", "loss"), CASES)
def test_autograder_grads_match_torch(backend, dtype, torch, f, g, loss):
    x, y = inputs(backend, dtype, loss, seed=zlib.crc32(f"{f}-{g}-{loss}".encode()))
    net = MLP(linear_1_in_features=N_IN, linear_1_out_features=N_HIDDEN, f_function=f,
              linear_2_in_features=N_HIDDEN, linear_2_out_features=N_OUT, g_function=g)
    loss_fn = {"mse": mse_loss, "bce": bce_loss}[loss]

    net.clear_grad_and_cache()
    y_hat = net.forward(x)
    J, dJdy_hat = loss_fn(y, y_hat)
    dJdx = net.backward(dJdy_hat)

    # the backend and the dtype follow the input array
    assert backend.owns(y_hat) and y_hat.dtype == dtype
    for k in GRAD_KEYS:
        assert backend.owns(net.grads[k]) and net.grads[k].dtype == dtype, k

    twin = torch_twin(torch, net, f, g)
    xt = torch.tensor(host(x).astype(np.float64), requires_grad=True)
    yt = torch.tensor(host(y).astype(np.float64))
    y_hat_autograd = twin(xt)
    F = torch.nn.functional
    J_autograd = (F.mse_loss if loss == "mse" else F.binary_cross_entropy)(y_hat_autograd, yt)
    twin.zero_grad()
    J_autograd.backward()

    assert_close(y_hat, y_hat_autograd, dtype, "y_hat")
    assert_close(float(host(J)), J_autograd.item(), dtype, "J")
    assert_close(net.grads["dJdW1"], twin.linear1.weight.grad, dtype, "dJdW1")
    assert_close(net.grads["dJdb1"], twin.linear1.bias.grad, dtype, "dJdb1")
    assert_close(net.grads["dJdW2"], twin.linear2.weight.grad, dtype, "dJdW2")
    assert_close(net.grads["dJdb2"], twin.linear2.bias.grad, dtype, "dJdb2")
    assert_close(dJdx, xt.grad, dtype, "dJ/dx")


@pytest.mark.parametrize(("f", "g"), [("relu", "identity"), ("tanh", "sigmoid"),
                                      ("leaky_relu", "tanh")])
def test_cache_holds_torch_intermediates(backend, dtype, torch, f, g):
    x, _ = inputs(backend, dtype, "mse", seed=21)
    net = MLP(N_IN, N_HIDDEN, f, N_HIDDEN, N_OUT, g)
    net.clear_grad_and_cache()
    y_hat = net.forward(x)
    twin = torch_twin(torch, net, f, g)
    with torch.no_grad():
        z1 = twin.linear1(torch.tensor(host(x).astype(np.float64)))
        z2 = torch_function(torch, f)(z1)
        z3 = twin.linear2(z2)
        out = torch_function(torch, g)(z3)
    for k, ref in (("z1", z1), ("z2", z2), ("z3", z3)):
        assert k in net.cache, k
        assert backend.owns(net.cache[k]) and net.cache[k].dtype == dtype, k
        assert_close(net.cache[k], ref, dtype, k)
    assert_close(y_hat, out, dtype, "y_hat")


def test_assigned_parameters_are_used_by_the_next_forward(backend, dtype, torch):
    f, g = "tanh", "identity"
    x, y = inputs(backend, dtype, "mse", seed=22)
    net = MLP(N_IN, N_HIDDEN, f, N_HIDDEN, N_OUT, g)
    net.clear_grad_and_cache()
    first = host(net.forward(x)).copy()

    rng = np.random.default_rng(23)
    new = {"W1": rng.standard_normal((N_HIDDEN, N_IN)), "b1": rng.standard_normal(N_HIDDEN),
           "W2": rng.standard_normal((N_OUT, N_HIDDEN)) * 0.3, "b2": rng.standard_normal(N_OUT)}
    for k, v in new.items():
        net.parameters[k] = backend.asarray(v.astype(dtype))  # as the autograder assigns them

    net.clear_grad_and_cache()
    y_hat = net.forward(x)
    J, dJdy_hat = mse_loss(y, y_hat)
    net.backward(dJdy_hat)

    twin = torch_twin(torch, net, f, g)
    for k, v in new.items():  # the twin holds exactly the assigned values
        np.testing.assert_array_equal(host(net.parameters[k]), v.astype(dtype))
    yt = twin(torch.tensor(host(x).astype(np.float64)))
    J_autograd = torch.nn.functional.mse_loss(yt, torch.tensor(host(y).astype(np.float64)))
    J_autograd.backward()
    assert not np.allclose(host(y_hat), first)
    assert_close(y_hat, yt, dtype, "y_hat with the assigned parameters")
    assert_close(net.grads["dJdW1"], twin.linear1.weight.grad, dtype, "dJdW1")
    assert_close(net.grads["dJdb1"], twin.linear1.bias.grad, dtype, "dJdb1")
    assert_close(net.grads["dJdW2"], twin.linear2.weight.grad, dtype, "dJdW2")
    assert_close(net.grads["dJdb2"], twin.linear2.bias.grad, dtype, "dJdb2")


def test_assigned_host_float64_parameters_follow_the_input(backend, dtype, torch):
    # Parameters assigned as host float64 arrays are moved to x's backend and dtype.
    x, _ = inputs(backend, dtype, "mse", seed=24)
    net = MLP(N_IN, N_HIDDEN, "relu", N_HIDDEN, N_OUT, "sigmoid")
    rng = np.random.default_rng(25)
    net.parameters["W1"] = rng.standard_normal((N_HIDDEN, N_IN))
    net.parameters["b2"] = rng.standard_normal(N_OUT)
    y_hat = net.forward(x)
    assert backend.owns(y_hat) and y_hat.dtype == dtype
    twin = torch_twin(torch, net, "relu", "sigmoid")
    with torch.no_grad():
        ref = twin(torch.tensor(host(x).astype(np.float64)))
    assert_close(y_hat, ref, dtype)


def test_clear_grad_and_cache_zeroes_grads(backend, dtype):
    x, y = inputs(backend, dtype, "mse", seed=26)
    net = MLP(N_IN, N_HIDDEN, "sigmoid", N_HIDDEN, N_OUT, "identity")
    net.clear_grad_and_cache()
    _, dJdy_hat = mse_loss(y, net.forward(x))
    net.backward(dJdy_hat)
    for k in GRAD_KEYS:
        assert np.any(host(net.grads[k]) != 0), k
    assert net.cache

    net.clear_grad_and_cache()
    assert set(net.grads) >= set(GRAD_KEYS)
    for k in GRAD_KEYS:
        g = host(net.grads[k])
        assert g.shape == host(net.parameters[k[3:]]).shape, k
        assert np.all(g == 0), k
    assert not net.cache


def test_float32_then_float64_inputs_switch_the_dtype(backend, torch):
    net = MLP(N_IN, N_HIDDEN, "tanh", N_HIDDEN, N_OUT, "identity")
    for dtype in (np.float32, np.float64):
        x, y = inputs(backend, dtype, "mse", seed=27)
        net.clear_grad_and_cache()
        y_hat = net.forward(x)
        _, dJdy_hat = mse_loss(y, y_hat)
        net.backward(dJdy_hat)
        assert y_hat.dtype == dtype
        for k in GRAD_KEYS:
            assert net.grads[k].dtype == dtype, k
        twin = torch_twin(torch, net, "tanh", "identity")
        with torch.no_grad():
            ref = twin(torch.tensor(host(x).astype(np.float64)))
        assert_close(y_hat, ref, dtype)


def test_parameters_assigned_in_another_shape_are_refused_by_name(backend):
    """The seed writes b as a column and a weight may come as (in, out): the next forward
    says which parameter and which shape, rather than broadcasting a column bias over rows
    (which a batch as long as the layer is wide would take without an error)."""
    import gpunet as gn

    net = MLP(N_IN, 4, "relu", 4, N_OUT, "identity", dtype="float64")
    x = backend.asarray(np.random.default_rng(3).normal(size=(4, N_IN)))
    net.parameters["b1"] = backend.asarray(np.ones((4, 1)))
    with pytest.raises(gn.ShapeError, match=r"b1 must be shaped \(4,\).*got \(4, 1\).*ravel"):
        net.forward(x)
    net.parameters["b1"] = backend.asarray(np.ones(4))
    net.parameters["W2"] = backend.asarray(np.ones((4, N_OUT)))
    with pytest.raises(gn.ShapeError, match=rf"W2 must be shaped \({N_OUT}, 4\) \(out x in\)"):
        net.forward(x)
    model = gn.MLP([3, 4, 2], norm="layer", backend=backend.name)
    model.params["gamma1"] = backend.asarray(np.ones(5, np.float32))
    with pytest.raises(gn.ShapeError, match=r"gamma1 must be shaped \(4,\)"):
        model.forward(backend.asarray(np.ones((2, 3), np.float32)))


def test_bce_loss_refuses_what_is_not_a_probability(backend):
    """As F.binary_cross_entropy: a y_hat outside [0, 1] (NaN too) is an error, not a NaN J
    with huge gradients."""
    import gpunet as gn

    y = backend.asarray(np.array([[1.0, 0.0]]))
    for bad, said in ((1.5, r"probabilities in \[0, 1\]"), (-0.1, r"probabilities in \[0, 1\]"),
                      (np.nan, "the probabilities are NaN")):
        with pytest.raises(gn.ConfigError, match=said):
            bce_loss(y, backend.asarray(np.array([[0.5, bad]])))
    J, _ = bce_loss(y, backend.asarray(np.array([[1.0, 0.0]])))  # the ends are probabilities
    assert float(J) == 0.0
