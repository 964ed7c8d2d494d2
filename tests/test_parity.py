"""Cross-backend parity: the same seed gives the same numbers on numpy and cupy.

Each case is a function of a backend name returning host arrays; the harness runs it on both
backends and compares with a tolerance keyed by dtype (float64 1e-10, float32 1e-5 relative).
On a machine without a working GPU every case skips, saying why.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn

CUPY_OK, CUPY_WHY = gn.cupy_status()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not CUPY_OK, reason=f"parity needs the cupy backend: {CUPY_WHY}")]

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}
CONFIGS = [  # (sizes, activation, output, loss, optimizer)
    ([13, 33, 5], "relu", "identity", "cross_entropy", "sgd"),
    ([13, 33, 17, 5], "tanh", "identity", "cross_entropy", "adam"),
    ([13, 20, 1], "sigmoid", "sigmoid", "bce", "adamw"),
    ([13, 20, 3], "leaky_relu", "identity", "mse", "sgd"),
    ([13, 20, 4], "relu", "softmax", "mse", "adam"),
]


def _problem(loss, n_out, n=67):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 13))
    if loss == "cross_entropy":
        y = rng.integers(0, n_out, n)
    elif loss == "bce":
        y = rng.integers(0, 2, (n, 1)).astype(np.float64)
    else:
        y = rng.normal(size=(n, n_out))
    return x, y


def _run(backend, dtype, config, steps):
    sizes, act, out, loss, opt = config
    model = gn.MLP(sizes, activation=act, output=out, backend=backend, dtype=dtype, seed=3)
    optim = gn.get_optimizer(opt, model, lr=0.05 if opt == "sgd" else 1e-2)
    loss_fn = gn.get_loss(loss)
    x, y = _problem(loss, sizes[-1])
    results = {}
    y_hat = model.forward(x)
    value, g = loss_fn(y_hat, y)
    results["y_hat"], results["loss"] = y_hat, value
    results["dJdx"] = model.backward(g)
    results.update({f"grad_{k}": v for k, v in model.grads.items()})
    optim.step()
    results.update({f"step1_{k}": v.copy() for k, v in model.params.items()})
    for i in range(steps):
        sl = slice((i * 16) % 64, (i * 16) % 64 + 16)
        results[f"loss_{i}"] = model.train_step(x[sl], y[sl], loss_fn, optim)
    results.update({f"final_{k}": v for k, v in model.params.items()})
    b = model.backend
    return {k: np.asarray(b.to_host(v)) for k, v in results.items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[1]}-{c[2]}-{c[3]}-{c[4]}")
def test_forward_backward_step_and_training_agree(config, dtype):
    ref = _run("numpy", dtype, config, steps=10)
    got = _run("cupy", dtype, config, steps=10)
    assert ref.keys() == got.keys()
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], err_msg=k, **TOL[dtype])
