"""gpunet.kernels.cuda_ops against float64 NumPy references (simulator or GPU).

Outputs are poisoned with NaN before every call, so a finite result proves each element was
written. Sizes make the grid-stride loops and row loops wrap with ragged tails (see
conftest.small_launches for the simulator's block sizes).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpunet.kernels import activations, cuda_ops
from kernel_refs import (  # tests/kernel_refs.py, put on sys.path by conftest.py
    DTYPES, NAMES, ROW_OPS, SLOPE, assert_close, assert_cross_entropy_close,
    assert_cross_entropy_edge_rows, assert_row_op_edge_rows, backward_inputs, edge_labels,
    act_grad_tolerance, act_ulps, edge_rows, nans, random_values, ref_forward, ref_grad, ref_op,
    row_tolerance, ulps,
)


def poisoned(dev, shape, dtype):
    return dev.asarray(nans(shape, dtype))


# --- elementwise ---------------------------------------------------------------------------

ELEMENTWISE_SHAPES = [(1000,), (7, 143)]


def test_every_activation_has_a_reference():
    z = np.ones(3)
    for name in NAMES:
        ref_forward(name, z)
        ref_grad(name, z, z, z)


@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", NAMES)
def test_act_forward(dev, name, dtype, shape):
    z = random_values(np.random.default_rng(1), shape, dtype)
    out = poisoned(dev, shape, dtype)
    assert cuda_ops.act_forward(name, dev.asarray(z), out, SLOPE) is out
    ref = ref_forward(name, z)
    assert_close(dev.asnumpy(out), ref, act_ulps(name, dtype, ref, z))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", NAMES)
def test_act_forward_in_place(dev, name, dtype):
    z = random_values(np.random.default_rng(2), (1000,), dtype)
    buf = dev.asarray(z)
    cuda_ops.act_forward(name, buf, buf, SLOPE)
    ref = ref_forward(name, z)
    assert_close(dev.asnumpy(buf), ref, act_ulps(name, dtype, ref, z))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_sigmoid_extremes_are_exact_and_finite(dev, dtype):
    z = np.array([-1e4, -200.0, -30.0, 30.0, 200.0, 1e4], dtype)
    out = poisoned(dev, z.shape, dtype)
    got = dev.asnumpy(cuda_ops.act_forward("sigmoid", dev.asarray(z), out, SLOPE))
    assert np.isfinite(got).all()
    assert got[0] == 0.0 and got[-1] == 1.0 and got[-2] == 1.0
    assert_close(got, ref_forward("sigmoid", z), ulps(dtype, ref_forward("sigmoid", z)))


BIAS_SHAPES = [(37, 100), (5, 130)]


@pytest.mark.parametrize("shape", BIAS_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", NAMES)
def test_bias_act_forward(dev, name, dtype, shape):
    rng = np.random.default_rng(3)
    z = random_values(rng, shape, dtype)
    b = random_values(rng, shape[1], dtype)
    out = poisoned(dev, shape, dtype)
    assert cuda_ops.bias_act_forward(name, dev.asarray(z), dev.asarray(b), out, SLOPE) is out
    # z + b rounds in the kernel's dtype first, as in the reference below.
    ref = ref_forward(name, (z + b).astype(dtype))
    assert_close(dev.asnumpy(out), ref, act_ulps(name, dtype, ref, z + b))


@pytest.mark.parametrize("name", NAMES)
def test_bias_act_forward_in_place(dev, name):
    rng = np.random.default_rng(4)
    z = random_values(rng, (37, 100), np.float32)
    b = random_values(rng, 100, np.float32)
    buf = dev.asarray(z)
    cuda_ops.bias_act_forward(name, buf, dev.asarray(b), buf, SLOPE)
    ref = ref_forward(name, z + b)
    assert_close(dev.asnumpy(buf), ref, act_ulps(name, np.float32, ref, z + b))


@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", NAMES)
def test_act_backward(dev, name, dtype, shape):
    dy, x, y = backward_inputs(name, dtype, shape, 5)
    out = poisoned(dev, shape, dtype)
    got = cuda_ops.act_backward(
        name, dev.asarray(dy), dev.asarray(x), dev.asarray(y), out, SLOPE
    )
    assert got is out
    ref = ref_grad(name, dy, x, y)
    assert_close(dev.asnumpy(out), ref, act_grad_tolerance(name, dtype, ref, dy, x))


@pytest.mark.parametrize("name", NAMES)
def test_act_backward_into_dy_with_unused_input_none(dev, name):
    dy, x, y = backward_inputs(name, np.float32, (1000,), 6)
    saved = activations.ACTIVATIONS[name].saved
    buf = dev.asarray(dy)
    cuda_ops.act_backward(
        name, buf,
        dev.asarray(x) if saved == "x" else None,
        dev.asarray(y) if saved == "y" else None,
        buf, SLOPE,
    )
    ref = ref_grad(name, dy, x, y)
    assert_close(dev.asnumpy(buf), ref, act_grad_tolerance(name, np.float32, ref, dy, x))


@pytest.mark.parametrize("name, want", [("relu", 0.0), ("leaky_relu", SLOPE)])
def test_derivative_at_zero_follows_torch(dev, name, want):
    x = np.zeros(5, np.float32)
    dy = np.ones(5, np.float32)
    out = poisoned(dev, 5, np.float32)
    cuda_ops.act_backward(name, dev.asarray(dy), dev.asarray(x), None, out, SLOPE)
    np.testing.assert_array_equal(dev.asnumpy(out), np.float32(want))


# --- row-wise ------------------------------------------------------------------------------

ROW_SHAPES = [(37, 300), (5, 1025)]


def run_row_op(dev, op, x):
    rows, _ = x.shape
    out = poisoned(dev, (rows,) if op == "logsumexp" else x.shape, x.dtype)
    assert getattr(cuda_ops, op)(dev.asarray(x), out) is out
    return dev.asnumpy(out)


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("op", ROW_OPS)
def test_row_op(dev, op, dtype, shape):
    x = random_values(np.random.default_rng(7), shape, dtype)
    ref = ref_op(op, x)
    assert_close(run_row_op(dev, op, x), ref, row_tolerance(op, x, ref, dtype))


# The simulator does its arithmetic on numpy scalars, which warn on the all -inf row's
# -inf - -inf; a GPU computes the same NaN silently.
ALL_NEG_INF_WARNING = "ignore:invalid value encountered:RuntimeWarning"


@pytest.mark.filterwarnings(ALL_NEG_INF_WARNING)
@pytest.mark.parametrize("cols", [40, 5], ids=lambda c: f"cols{c}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("op", ROW_OPS)
def test_row_op_edge_rows(dev, op, dtype, cols):
    x = edge_rows(dtype, cols, seed=8)
    assert_row_op_edge_rows(op, x, run_row_op(dev, op, x), dtype)


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
def test_row_op_in_place(dev, op):
    x = random_values(np.random.default_rng(9), (5, 1025), np.float32)
    buf = dev.asarray(x)
    getattr(cuda_ops, op)(buf, buf)
    ref = ref_op(op, x)
    assert_close(dev.asnumpy(buf), ref, row_tolerance(op, x, ref, np.float32))


def test_row_threads_default_choice(dev, monkeypatch):
    """The automatic block size (no override) on a narrow matrix."""
    monkeypatch.setattr(cuda_ops, "ROW_THREADS", None)
    x = random_values(np.random.default_rng(10), (2, 5), np.float32)
    ref = ref_op("log_softmax", x)
    assert_close(run_row_op(dev, "log_softmax", x), ref, row_tolerance("log_softmax", x, ref, np.float32))
    assert [cuda_ops._row_threads(c) for c in (1, 5, 256, 257, 1000, 32000)] == [32, 32, 32, 64, 128, 1024]


# --- softmax cross-entropy -------------------------------------------------------------------

def run_cross_entropy(dev, x, labels, scale, in_place=False):
    rows = x.shape[0]
    loss = poisoned(dev, rows, x.dtype)
    xd = dev.asarray(x)
    dl = xd if in_place else poisoned(dev, x.shape, x.dtype)
    res = cuda_ops.softmax_cross_entropy(xd, dev.asarray(labels), loss, dl, scale)
    assert res[0] is loss and res[1] is dl
    return dev.asnumpy(loss), dev.asnumpy(dl)


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_softmax_cross_entropy(dev, dtype, shape, label_dtype):
    rng = np.random.default_rng(11)
    x = random_values(rng, shape, dtype)
    labels = rng.integers(0, shape[1], shape[0]).astype(label_dtype)
    labels[:2] = [0, shape[1] - 1]
    scale = 1.0 / shape[0]
    loss, dl = run_cross_entropy(dev, x, labels, scale)
    assert_cross_entropy_close(loss, dl, x, labels, scale, dtype)


@pytest.mark.filterwarnings(ALL_NEG_INF_WARNING)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_softmax_cross_entropy_edge_rows(dev, dtype):
    x = edge_rows(dtype, seed=8)
    labels = edge_labels(x)
    loss, dl = run_cross_entropy(dev, x, labels, 0.25)
    assert_cross_entropy_edge_rows(loss, dl, x, labels, 0.25, dtype)


def test_softmax_cross_entropy_into_logits(dev):
    rng = np.random.default_rng(12)
    x = random_values(rng, (5, 1025), np.float32)
    labels = rng.integers(0, 1025, 5).astype(np.int32)
    loss, dl = run_cross_entropy(dev, x, labels, 0.2, in_place=True)
    assert_cross_entropy_close(loss, dl, x, labels, 0.2, np.float32)  # x is the host copy


def test_softmax_cross_entropy_out_of_range_label_poisons_its_row(dev):
    rng = np.random.default_rng(13)
    x = random_values(rng, (4, 30), np.float32)
    labels = np.array([2, 30, -1, 29], np.int64)
    loss, dl = run_cross_entropy(dev, x, labels, 1.0)
    assert np.isnan(loss[[1, 2]]).all() and np.isnan(dl[[1, 2]]).all()
    ok = [0, 3]
    assert_cross_entropy_close(loss[ok], dl[ok], x[ok], labels[ok], 1.0, np.float32)


# --- argument checks ------------------------------------------------------------------------

def test_unknown_activation_lists_valid_names(dev):
    z = dev.asarray(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="leaky_relu"):
        cuda_ops.act_forward("mish", z, z, 0.0)


def test_wrong_dtype_shape_and_layout_are_rejected(dev):
    z = dev.asarray(np.ones((4, 6), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        cuda_ops.act_forward("relu", dev.asarray(np.ones(4, np.int32)), dev.asarray(np.ones(4, np.int32)), 0.0)
    with pytest.raises(TypeError, match="dtype"):
        cuda_ops.act_forward("relu", z, dev.asarray(np.ones((4, 6), np.float64)), 0.0)
    with pytest.raises(ValueError, match="shape"):
        cuda_ops.log_softmax(z, dev.asarray(np.ones((4, 5), np.float32)))
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda_ops.softmax(z.T, z.T)
    with pytest.raises(TypeError, match="int32 or int64"):
        cuda_ops.softmax_cross_entropy(
            z, dev.asarray(np.zeros(4, np.float32)), dev.asarray(np.ones(4, np.float32)), z, 1.0
        )
    with pytest.raises(ValueError, match="needs x"):
        cuda_ops.act_backward("relu", z, None, z, z, 0.0)
