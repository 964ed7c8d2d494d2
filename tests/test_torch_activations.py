"""Every activation's forward and hand-derived backward against PyTorch and its autograd.

``backend.act_forward(name, z, slope)`` must equal torch's function of z, and
``backend.act_backward(name, dy, z, y, slope)`` must equal the vector-Jacobian product
dy^T (dy/dz) that torch.autograd computes, both against a float64 torch reference.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import RTOL, host

import gpunet as gn
from gpunet.activations import DEFAULT_SLOPE

SLOPE = 0.07  # a leaky_relu slope other than the default, so a dropped slope shows


def torch_fn(torch, name, slope):
    """The torch function for each gpunet activation name (independent of gpunet's code)."""
    F = torch.nn.functional
    return {
        "identity": torch.nn.Identity(),
        "relu": F.relu,
        "leaky_relu": lambda t: F.leaky_relu(t, negative_slope=slope),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "gelu": F.gelu,  # approximate="none": the erf form
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "silu": F.silu,
        "softmax": lambda t: F.softmax(t, dim=-1),
    }[name]


def torch_reference(torch, name, z, dy, slope):
    """(f(z), dy^T df/dz) by torch autograd in float64, as host arrays."""
    zt = torch.tensor(np.asarray(z, dtype=np.float64), requires_grad=True)
    yt = torch_fn(torch, name, slope)(zt)
    (dz,) = torch.autograd.grad(yt, zt, torch.tensor(np.asarray(dy, dtype=np.float64)))
    return host(yt), host(dz)


def assert_close(actual, expected, dtype, what=""):
    """rtol by dtype, plus an atol scaled to the array (for entries near zero)."""
    actual, expected = host(actual), np.asarray(expected)
    finite = expected[np.isfinite(expected)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    np.testing.assert_allclose(
        actual.astype(np.float64), expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
        err_msg=what,
    )


def test_activation_names_are_the_expected_set():
    # If an activation is added, these tests (and torch_fn) must learn about it.
    assert set(gn.ACTIVATIONS) == {"identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu",
                                   "gelu_tanh", "silu", "softmax"}


def random_inputs(dtype, shape=(33, 7), seed=0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    assert np.all(z != 0) and np.all(dy != 0)
    return z, dy


@pytest.mark.parametrize("name", sorted(gn.ACTIVATIONS))
def test_forward_and_backward_match_torch(backend, dtype, torch, name):
    z, dy = random_inputs(dtype)
    ref_y, ref_dz = torch_reference(torch, name, z, dy, SLOPE)

    zb, dyb = backend.asarray(z), backend.asarray(dy)
    y = backend.act_forward(name, zb, SLOPE)
    assert backend.owns(y) and y.dtype == dtype and y.shape == z.shape
    assert_close(y, ref_y, dtype, f"{name} forward")

    dz = backend.act_backward(name, dyb, zb, y, SLOPE)
    assert backend.owns(dz) and dz.dtype == dtype and dz.shape == z.shape
    assert_close(dz, ref_dz, dtype, f"{name} backward")


@pytest.mark.parametrize("name", sorted(gn.ACTIVATIONS))
def test_inputs_are_not_modified(backend, dtype, name):
    z, dy = random_inputs(dtype, seed=1)
    zb, dyb = backend.asarray(z), backend.asarray(dy)
    y = backend.act_forward(name, zb, SLOPE)
    y_before = host(y).copy()
    backend.act_backward(name, dyb, zb, y, SLOPE)
    np.testing.assert_array_equal(host(zb), z)
    np.testing.assert_array_equal(host(dyb), dy)
    np.testing.assert_array_equal(host(y), y_before)


def test_leaky_relu_default_slope_is_torchs(backend, dtype, torch):
    z, dy = random_inputs(dtype, seed=2)
    ref_y, ref_dz = torch_reference(torch, "leaky_relu", z, dy, 0.01)  # torch's default
    assert DEFAULT_SLOPE == 0.01
    y = backend.act_forward("leaky_relu", backend.asarray(z))
    dz = backend.act_backward("leaky_relu", backend.asarray(dy), backend.asarray(z), y)
    assert_close(y, ref_y, dtype)
    assert_close(dz, ref_dz, dtype)


@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_gradient_at_exactly_zero_follows_torch(backend, dtype, torch, name):
    # torch: relu'(0) = 0 (threshold_backward), leaky_relu'(0) = slope (z > 0 ? 1 : slope).
    z = np.array([[-1.5, 0.0, 2.0], [0.0, 0.0, -0.0]], dtype=dtype)
    dy = np.array([[3.0, 5.0, -7.0], [-2.0, 11.0, 13.0]], dtype=dtype)
    ref_y, ref_dz = torch_reference(torch, name, z, dy, SLOPE)
    zb = backend.asarray(z)
    y = backend.act_forward(name, zb, SLOPE)
    dz = host(backend.act_backward(name, backend.asarray(dy), zb, y, SLOPE))
    assert_close(y, ref_y, dtype)
    assert_close(dz, ref_dz, dtype)
    zero = z == 0
    expected_at_zero = 0.0 if name == "relu" else SLOPE * dy[zero]
    np.testing.assert_allclose(dz[zero], expected_at_zero, rtol=RTOL[dtype])


EXTREME_Z = [-1e4, -1e3, -100.0, -50.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 50.0, 100.0, 1e3, 1e4]


# Warnings become errors, and overflow, divide-by-zero and invalid operations raise. Underflow
# stays allowed: exp(-1e4) flushing to 0 is the correct result (numpy ignores underflow by
# default and torch computes the same 0), so only conditions that signal a wrong result trap.


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_saturating_activations_at_extreme_inputs(backend, dtype, torch, name):
    z = np.array([EXTREME_Z], dtype=dtype)
    dy = np.ones_like(z)
    ref_y, ref_dz = torch_reference(torch, name, z, dy, SLOPE)
    with warnings.catch_warnings(), np.errstate(all="raise", under="ignore"):
        warnings.simplefilter("error")
        zb = backend.asarray(z)
        y = backend.act_forward(name, zb, SLOPE)
        dz = backend.act_backward(name, backend.asarray(dy), zb, y, SLOPE)
        y, dz = host(y), host(dz)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dz))
    assert_close(y, ref_y, dtype, f"{name} forward at {EXTREME_Z}")
    assert_close(dz, ref_dz, dtype, f"{name} backward at {EXTREME_Z}")


def test_sigmoid_at_plus_minus_1e4_is_exactly_0_and_1(backend, dtype):
    z = backend.asarray(np.array([-1e4, 1e4], dtype=dtype))
    with warnings.catch_warnings(), np.errstate(all="raise", under="ignore"):
        warnings.simplefilter("error")
        y = host(backend.act_forward("sigmoid", z))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, [0.0, 1.0])


def test_softmax_rows_with_extreme_and_equal_values(backend, dtype, torch):
    z = np.array(
        [
            [1e4, -1e4, 0.0, 1.0],     # would overflow exp without the max shift
            [-1e4, -1e4 + 1, -1e4 + 2, -1e4 + 3],  # would underflow to 0/0 without it
            [3.0, 3.0, 3.0, 3.0],      # equal values: uniform
            [1e4, 1e4, -2.0, 5.0],     # two tied maxima
        ],
        dtype=dtype,
    )
    dy = np.random.default_rng(3).standard_normal(z.shape).astype(dtype)
    ref_y, ref_dz = torch_reference(torch, "softmax", z, dy, SLOPE)
    with warnings.catch_warnings(), np.errstate(all="raise", under="ignore"):
        warnings.simplefilter("error")
        zb = backend.asarray(z)
        y = backend.act_forward("softmax", zb)
        dz = backend.act_backward("softmax", backend.asarray(dy), zb, y)
        y, dz = host(y), host(dz)
    assert_close(y, ref_y, dtype, "softmax forward")
    assert_close(dz, ref_dz, dtype, "softmax backward")
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=RTOL[dtype])
