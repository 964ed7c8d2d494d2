"""gn.MLP against the same network in PyTorch: forward, every gradient, dJ/dx, optimiser steps.

The torch network is an ``nn.Sequential`` of ``nn.Linear`` and activation modules, built from
``model.state_dict()`` (W shaped out x in, as ``nn.Linear.weight``) and run in float64, so torch
autograd and ``torch.optim`` are the independent reference for gpunet's hand-derived backward
passes and update rules.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import RTOL, host

import gpunet as gn

SLOPE = 0.1

# name -> (sizes, hidden activation f, output activation g, loss)
CONFIGS = {
    "linear_only": ([5, 3], "relu", "identity", "mse"),
    "relu_identity_mse": ([5, 11, 3], "relu", "identity", "mse"),
    "tanh_softmax_mse": ([4, 9, 6, 5], "tanh", "softmax", "mse"),
    "leaky_relu_identity_ce": ([6, 9, 8, 4], "leaky_relu", "identity", "cross_entropy"),
    "sigmoid_sigmoid_bce": ([4, 7, 5, 6, 3], "sigmoid", "sigmoid", "bce"),
    "identity_tanh_mse": ([3, 8, 2], "identity", "tanh", "mse"),
    "tanh_identity_bce_logits": ([5, 10, 10, 10, 4], "tanh", "identity", "bce_logits"),
    "relu_leaky_relu_mse": ([7, 12, 6], "relu", "leaky_relu", "mse"),
    "gelu_identity_ce": ([6, 13, 9, 4], "gelu", "identity", "cross_entropy"),
    "silu_silu_mse": ([5, 10, 3], "silu", "silu", "mse"),
    "gelu_tanh_identity_ce": ([6, 11, 4], "gelu_tanh", "identity", "cross_entropy"),
}


def torch_module(torch, name, slope):
    nn = torch.nn
    return {
        "identity": nn.Identity(),
        "relu": nn.ReLU(),
        "leaky_relu": nn.LeakyReLU(negative_slope=slope),
        "sigmoid": nn.Sigmoid(),
        "tanh": nn.Tanh(),
        "gelu": nn.GELU(),
        "gelu_tanh": nn.GELU(approximate="tanh"),
        "silu": nn.SiLU(),
        "softmax": nn.Softmax(dim=-1),
    }[name]


def torch_net(torch, model, tdtype):
    """nn.Sequential(Linear, f, ..., Linear, g) holding a copy of model's current weights."""
    layers = []
    n = len(model.sizes) - 1
    for i in range(1, n + 1):
        lin = torch.nn.Linear(model.sizes[i - 1], model.sizes[i], dtype=tdtype)
        layers.append(lin)
        layers.append(torch_module(torch, model.activation if i < n else model.output,
                                   model.slope))
    net = torch.nn.Sequential(*layers)
    load_torch(torch, net, model.state_dict(), tdtype)
    return net


def load_torch(torch, net, state, tdtype):
    with torch.no_grad():
        for i, lin in enumerate(linears(torch, net), start=1):
            assert tuple(lin.weight.shape) == state[f"W{i}"].shape  # (out, in) as nn.Linear
            lin.weight.copy_(torch.tensor(state[f"W{i}"], dtype=tdtype))
            lin.bias.copy_(torch.tensor(state[f"b{i}"], dtype=tdtype))


def linears(torch, net):
    return [m for m in net if isinstance(m, torch.nn.Linear)]


def torch_grads(torch, net):
    out = {}
    for i, lin in enumerate(linears(torch, net), start=1):
        out[f"W{i}"], out[f"b{i}"] = host(lin.weight.grad), host(lin.bias.grad)
    return out


def make_loss(name):
    return {"mse": gn.MSELoss, "bce": gn.BCELoss, "bce_logits": gn.BCEWithLogitsLoss,
            "cross_entropy": gn.CrossEntropyLoss}[name]()


def torch_loss(torch, name, y_hat, y):
    F = torch.nn.functional
    if name == "cross_entropy":
        return F.cross_entropy(y_hat, torch.as_tensor(y, dtype=torch.int64))
    t = torch.as_tensor(np.asarray(y), dtype=y_hat.dtype)
    return {"mse": F.mse_loss, "bce": F.binary_cross_entropy,
            "bce_logits": F.binary_cross_entropy_with_logits}[name](y_hat, t)


def make_batch(rng, sizes, loss, batch, dtype):
    x = (rng.standard_normal((batch, sizes[0])) * 1.5).astype(dtype)
    c = sizes[-1]
    if loss == "cross_entropy":
        y = rng.integers(0, c, batch)
    elif loss in ("bce", "bce_logits"):
        y = rng.uniform(0.0, 1.0, (batch, c)).astype(dtype)
    else:
        y = rng.standard_normal((batch, c)).astype(dtype)
    return x, y


def assert_close(actual, expected, dtype, what="", rtol=None):
    """rtol by dtype, plus an atol scaled to the array (for entries near zero)."""
    rtol = RTOL[dtype] if rtol is None else rtol
    actual, expected = np.asarray(host(actual), dtype=np.float64), np.asarray(expected)
    scale = float(np.abs(expected).max()) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def build(backend, dtype, config, seed=0):
    sizes, f, g, loss = CONFIGS[config]
    model = gn.MLP(sizes, activation=f, output=g, backend=backend, seed=seed,
                   dtype=np.dtype(dtype).name, slope=SLOPE)
    return model, loss


# -- forward and backward ---------------------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
def test_forward_grads_and_dx_match_torch_autograd(backend, dtype, torch, config):
    model, loss_name = build(backend, dtype, config)
    rng = np.random.default_rng(1)
    x, y = make_batch(rng, model.sizes, loss_name, 33, dtype)

    y_hat = model.forward(backend.asarray(x))
    assert backend.owns(y_hat) and y_hat.dtype == dtype
    value, dJdy_hat = make_loss(loss_name)(y_hat, backend.asarray(y))
    dJdx = model.backward(dJdy_hat)

    net = torch_net(torch, model, torch.float64)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    out = net(xt)
    ref_loss = torch_loss(torch, loss_name, out, y)
    ref_loss.backward()

    assert_close(y_hat, host(out), dtype, "forward")
    assert_close(float(host(value)), ref_loss.item(), dtype, "loss")
    ref = torch_grads(torch, net)
    assert set(model.grads) == set(ref)
    for k in sorted(ref):
        g = model.grads[k]
        assert backend.owns(g) and g.dtype == dtype and g.shape == ref[k].shape, k
        assert_close(g, ref[k], dtype, f"dJ/d{k}")
    assert dJdx.shape == x.shape and dJdx.dtype == dtype
    assert_close(dJdx, host(xt.grad), dtype, "dJ/dx")


@pytest.mark.parametrize("config", ["relu_identity_mse", "tanh_softmax_mse", "sigmoid_sigmoid_bce"])
def test_backward_is_the_vjp_of_any_upstream_gradient(backend, dtype, torch, config):
    # No loss in between: model.backward(G) must equal torch's y_hat.backward(G).
    model, _ = build(backend, dtype, config, seed=3)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, model.sizes[0])).astype(dtype)
    G = rng.standard_normal((7, model.sizes[-1])).astype(dtype)
    model.forward(backend.asarray(x))
    dJdx = model.backward(backend.asarray(G))

    net = torch_net(torch, model, torch.float64)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    net(xt).backward(torch.tensor(G.astype(np.float64)))
    for k, ref in torch_grads(torch, net).items():
        assert_close(model.grads[k], ref, dtype, f"dJ/d{k}")
    assert_close(dJdx, host(xt.grad), dtype, "dJ/dx")


def test_backward_without_dx_still_fills_every_grad(backend, dtype, torch):
    model, loss_name = build(backend, dtype, "relu_identity_mse")
    x, y = make_batch(np.random.default_rng(4), model.sizes, loss_name, 7, dtype)
    _, g = make_loss(loss_name)(model.forward(backend.asarray(x)), backend.asarray(y))
    assert model.backward(g, need_dx=False) is None
    net = torch_net(torch, model, torch.float64)
    torch_loss(torch, loss_name, net(torch.tensor(x.astype(np.float64))), y).backward()
    for k, ref in torch_grads(torch, net).items():
        assert_close(model.grads[k], ref, dtype, f"dJ/d{k}")


# -- optimisers -------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd_plain": ("SGD", dict(lr=0.1)),
    "sgd_momentum": ("SGD", dict(lr=0.05, momentum=0.9)),
    "sgd_nesterov": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    "sgd_weight_decay": ("SGD", dict(lr=0.1, weight_decay=0.05)),
    "sgd_momentum_weight_decay": ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.05)),
    "sgd_dampening": ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    "adam": ("Adam", dict(lr=0.01)),
    "adam_betas_eps": ("Adam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6)),
    "adam_weight_decay": ("Adam", dict(lr=0.01, weight_decay=0.1)),
    "adamw": ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    "adamw_default_decay": ("AdamW", dict(lr=0.01)),
}
STEPS = 5
BATCHES = [7, 33, 7, 19, 33]


@pytest.mark.parametrize("config", ["tanh_identity_bce_logits", "leaky_relu_identity_ce"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_optimizer_trajectory_matches_torch_optim(backend, dtype, torch, opt_name, config):
    cls_name, kw = OPTIMIZERS[opt_name]
    model, loss_name = build(backend, dtype, config, seed=5)
    net = torch_net(torch, model, torch.float64)
    loss_fn = make_loss(loss_name)
    opt = getattr(gn, cls_name)(model, **kw)
    topt = getattr(torch.optim, cls_name)(net.parameters(), **kw)
    if cls_name == "AdamW" and "weight_decay" not in kw:
        assert opt.weight_decay == topt.defaults["weight_decay"] == 0.01

    rng = np.random.default_rng(6)
    for step, batch in enumerate(BATCHES[:STEPS], start=1):
        x, y = make_batch(rng, model.sizes, loss_name, batch, dtype)
        value = model.train_step(backend.asarray(x), backend.asarray(y), loss_fn, opt)

        topt.zero_grad()
        ref_loss = torch_loss(torch, loss_name, net(torch.tensor(x.astype(np.float64))), y)
        ref_loss.backward()
        topt.step()

        # the returned value is the loss at the weights before this step
        assert_close(float(host(value)), ref_loss.item(), dtype, f"loss at step {step}")
        state = model.state_dict()
        for i, lin in enumerate(linears(torch, net), start=1):
            for k, ref in ((f"W{i}", lin.weight), (f"b{i}", lin.bias)):
                assert state[k].dtype == dtype
                assert_close(state[k], host(ref), dtype, f"{k} after step {step}")
    assert opt.steps == STEPS


@pytest.mark.parametrize("opt_name", ["sgd_momentum", "adam"])
def test_optimizer_actually_moves_the_weights(backend, dtype, opt_name):
    # Guards the trajectory test against a vacuous pass (e.g. both sides never updating).
    cls_name, kw = OPTIMIZERS[opt_name]
    model, loss_name = build(backend, dtype, "relu_identity_mse", seed=7)
    before = model.state_dict()
    x, y = make_batch(np.random.default_rng(8), model.sizes, loss_name, 7, dtype)
    model.train_step(backend.asarray(x), backend.asarray(y), make_loss(loss_name),
                     getattr(gn, cls_name)(model, **kw))
    after = model.state_dict()
    for k in before:
        assert np.all(np.isfinite(after[k]))
        assert np.abs(after[k] - before[k]).max() > 1e-4, k


@pytest.mark.parametrize("config", ["relu_identity_mse", "leaky_relu_identity_ce",
                                    "sigmoid_sigmoid_bce"])
def test_train_step_returns_the_loss(backend, dtype, config):
    model, loss_name = build(backend, dtype, config, seed=9)
    loss_fn = make_loss(loss_name)
    x, y = make_batch(np.random.default_rng(10), model.sizes, loss_name, 33, dtype)
    xb, yb = backend.asarray(x), backend.asarray(y)
    expected, _ = loss_fn(model.forward(xb, cache=False), yb)
    got = model.train_step(xb, yb, loss_fn, gn.SGD(model, lr=0.1))
    assert float(host(got)) == pytest.approx(float(host(expected)), rel=RTOL[dtype])
    after, _ = loss_fn(model.forward(xb, cache=False), yb)
    assert float(host(after)) != float(host(got))  # the step changed the weights
