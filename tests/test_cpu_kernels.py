"""gpunet.kernels.cpu_ops (numba.njit twins) against float64 NumPy, torch and finite differences.

Also: cpu_ops and cuda_ops expose the same interface and reject the same bad calls, nothing
compiles at import, and the numpy guard numba-cuda needs works.

Every numerical test runs twice, on the single-threaded kernels and on the prange ones
(``parallel`` fixture). Outputs are poisoned with NaN first, so finite results prove every
element was written.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import platform
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpunet.kernels import activations, compat, cpu_ops, cuda_ops

# tests/kernel_refs.py: the float64 references and checks shared with tests/cuda_kernels.
# Its checks assert, so have pytest rewrite it (before the import) for the usual messages.
pytest.register_assert_rewrite("kernel_refs")
from kernel_refs import (  # noqa: E402
    DTYPES, DTYPE_IDS, NAMES, ROW_OPS, SLOPE, assert_close, assert_cross_entropy_close,
    assert_cross_entropy_edge_rows, assert_row_op_edge_rows, backward_inputs, edge_labels,
    act_grad_tolerance, act_ulps, edge_rows, eps, nans, random_values, ref_forward, ref_grad,
    ref_op, row_tolerance, ulps,
)

INTERFACE = {
    "act_forward": ["name", "z", "out", "slope"],
    "bias_act_forward": ["name", "z", "b", "out", "slope"],
    "act_backward": ["name", "dy", "x", "y", "out", "slope"],
    "logsumexp": ["x", "out"],
    "log_softmax": ["x", "out"],
    "softmax": ["x", "out"],
    "softmax_cross_entropy": ["logits", "labels", "loss_out", "dlogits_out", "scale"],
    "layer_norm_forward": ["z", "gamma", "beta", "eps", "n", "xhat", "rstd"],
    "layer_norm_backward": ["dn", "xhat", "rstd", "gamma", "dz", "dgamma", "dbeta"],
    "batch_norm_forward": ["z", "gamma", "beta", "eps", "n", "xhat", "rstd", "mean", "var"],
    "batch_norm_backward": ["dn", "xhat", "rstd", "gamma", "dz", "dgamma", "dbeta"],
}


@pytest.fixture(params=["serial", "parallel"])
def parallel(request, monkeypatch):
    threshold = 0 if request.param == "parallel" else 1 << 62
    monkeypatch.setattr(cpu_ops, "PARALLEL_MIN_SIZE", threshold)
    return request.param


# --- interface -----------------------------------------------------------------------------

def test_cpu_and_cuda_modules_expose_the_same_interface():
    assert cpu_ops.__all__ == cuda_ops.__all__ == list(INTERFACE)
    for fname, params in INTERFACE.items():
        cpu_sig = inspect.signature(getattr(cpu_ops, fname))
        cuda_sig = inspect.signature(getattr(cuda_ops, fname))
        assert cpu_sig == cuda_sig, fname
        assert list(cpu_sig.parameters) == params, fname


BAD_CALLS = [
    ("unknown name", ValueError, "relu", lambda m: m.act_forward("mish", F((4,)), F((4,)), 0.0)),
    ("name not a string", ValueError, "valid names", lambda m: m.act_forward(["relu"], F((4,)), F((4,)), 0.0)),
    ("integer input", TypeError, "float32 or float64", lambda m: m.act_forward("relu", np.ones(4, np.int32), np.ones(4, np.int32), 0.0)),
    ("out dtype", TypeError, "dtype", lambda m: m.act_forward("relu", F((4,)), np.ones(4), 0.0)),
    ("out shape", ValueError, "shape", lambda m: m.act_forward("relu", F((4,)), F((5,)), 0.0)),
    ("not contiguous", ValueError, "C-contiguous", lambda m: m.softmax(F((4, 6)).T, F((6, 4)))),
    ("not an array", TypeError, "must be", lambda m: m.log_softmax([[1.0, 2.0]], F((1, 2)))),
    ("1-D row op", ValueError, "2-D", lambda m: m.log_softmax(F((4,)), F((4,)))),
    ("no columns", ValueError, "at least one column", lambda m: m.logsumexp(F((3, 0)), F((3,)))),
    ("logsumexp out", ValueError, "shape", lambda m: m.logsumexp(F((3, 4)), F((3, 4)))),
    ("bias shape", ValueError, "shape", lambda m: m.bias_act_forward("relu", F((3, 4)), F((3,)), F((3, 4)), 0.0)),
    ("missing x", ValueError, "needs x", lambda m: m.act_backward("relu", F((4,)), None, F((4,)), F((4,)), 0.0)),
    ("missing y", ValueError, "needs y", lambda m: m.act_backward("tanh", F((4,)), F((4,)), None, F((4,)), 0.0)),
    ("slope", TypeError, "slope", lambda m: m.act_forward("leaky_relu", F((4,)), F((4,)), "0.1")),
    ("float labels", TypeError, "int32 or int64", lambda m: m.softmax_cross_entropy(F((3, 4)), F((3,)), F((3,)), F((3, 4)), 1.0)),
    ("label shape", ValueError, "labels", lambda m: m.softmax_cross_entropy(F((3, 4)), np.zeros(4, np.int64), F((3,)), F((3, 4)), 1.0)),
    ("scale", TypeError, "scale", lambda m: m.softmax_cross_entropy(F((3, 4)), np.zeros(3, np.int64), F((3,)), F((3, 4)), None)),
]


def F(shape):
    return np.ones(shape, np.float32)


@pytest.mark.parametrize("module", [cpu_ops, cuda_ops], ids=["cpu_ops", "cuda_ops"])
@pytest.mark.parametrize("what, error, match, call", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_calls_are_rejected_before_any_kernel(module, what, error, match, call):
    """Both modules share the checks, which run before anything compiles (no GPU needed)."""
    with pytest.raises(error, match=match):
        call(module)


def test_cpu_ops_rejects_non_numpy_arrays():
    class NotNumpy:
        dtype, shape, ndim = np.dtype(np.float32), (4,), 1

    with pytest.raises(TypeError, match="numpy"):
        cpu_ops.act_forward("relu", NotNumpy(), F((4,)), 0.0)


def test_import_compiles_nothing_and_needs_no_gpu():
    code = (
        "import sys\n"
        "import gpunet.kernels\n"
        "assert 'numba' not in sys.modules, 'gpunet.kernels imported numba'\n"
        "from gpunet.kernels import cuda_ops, cpu_ops\n"
        "assert 'numba.cuda' not in sys.modules, 'cuda_ops imported numba.cuda'\n"
        "assert cuda_ops._compile.cache_info().currsize == 0\n"
        "assert not cpu_ops._row_max.signatures and not cpu_ops._exp_nonpos_f32.signatures\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_numpy_guard_restores_row_stack(monkeypatch):
    """numba-cuda 0.30 overloads np.row_stack when it first compiles; numpy 2.5 removed it."""
    monkeypatch.delattr(np, "row_stack", raising=False)
    assert not hasattr(np, "row_stack")
    compat.ensure_numpy_compat()
    a, b = np.arange(3.0), np.arange(3.0, 6.0)
    np.testing.assert_array_equal(np.row_stack((a, b)), np.vstack((a, b)))
    kept = np.row_stack
    compat.ensure_numpy_compat()
    assert np.row_stack is kept


# --- elementwise ---------------------------------------------------------------------------

ELEMENTWISE_SHAPES = [(1000,), (7, 143), (3, 300, 5)]


@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", NAMES)
def test_act_forward(parallel, name, dtype, shape):
    z = random_values(np.random.default_rng(1), shape, dtype)
    out = nans(shape, dtype)
    assert cpu_ops.act_forward(name, z, out, SLOPE) is out
    ref = ref_forward(name, z)
    assert_close(out, ref, act_ulps(name, dtype, ref, z))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", NAMES)
def test_act_forward_in_place(parallel, name, dtype):
    z = random_values(np.random.default_rng(2), (1000,), dtype)
    ref, tol = ref_forward(name, z), act_ulps(name, dtype, ref_forward(name, z), z)
    cpu_ops.act_forward(name, z, z, SLOPE)
    assert_close(z, ref, tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_extremes_without_warnings(dtype):
    z = np.array([-1e4, -200.0, -104.0, -88.0, -30.0, 30.0, 200.0, 1e4, -np.inf, np.inf], dtype)
    out = nans(z.shape, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpu_ops.act_forward("sigmoid", z, out, SLOPE)
    ref = ref_forward("sigmoid", z)
    assert np.isfinite(out).all()
    assert out[0] == 0.0 and out[-1] == 1.0 and out[-3] == 1.0 and out[-2] == 0.0
    assert_close(out, ref, ulps(dtype, ref))


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "identity"])
def test_nan_propagates_like_torch(name):
    z = np.array([np.nan, 1.0], np.float32)
    out = nans(2, np.float32)
    cpu_ops.act_forward(name, z, out, SLOPE)
    assert np.isnan(out[0])


BIAS_SHAPES = [(37, 100), (5, 130), (1, 1)]


@pytest.mark.parametrize("shape", BIAS_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", NAMES)
def test_bias_act_forward(parallel, name, dtype, shape):
    rng = np.random.default_rng(3)
    z = random_values(rng, shape, dtype)
    b = random_values(rng, shape[1], dtype)
    out = nans(shape, dtype)
    assert cpu_ops.bias_act_forward(name, z, b, out, SLOPE) is out
    ref = ref_forward(name, z + b)
    assert_close(out, ref, act_ulps(name, dtype, ref, z + b))


@pytest.mark.parametrize("name", NAMES)
def test_bias_act_forward_in_place(parallel, name):
    rng = np.random.default_rng(4)
    z = random_values(rng, (37, 100), np.float32)
    b = random_values(rng, 100, np.float32)
    ref, tol = ref_forward(name, z + b), act_ulps(name, np.float32, ref_forward(name, z + b), z + b)
    cpu_ops.bias_act_forward(name, z, b, z, SLOPE)
    assert_close(z, ref, tol)


@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", NAMES)
def test_act_backward(parallel, name, dtype, shape):
    dy, x, y = backward_inputs(name, dtype, shape, 5)
    out = nans(shape, dtype)
    assert cpu_ops.act_backward(name, dy, x, y, out, SLOPE) is out
    ref = ref_grad(name, dy, x, y)
    assert_close(out, ref, act_grad_tolerance(name, dtype, ref, dy, x))


@pytest.mark.parametrize("name", NAMES)
def test_act_backward_into_dy_with_unused_input_none(parallel, name):
    dy, x, y = backward_inputs(name, np.float32, (1000,), 6)
    ref = ref_grad(name, dy, x, y)
    tol = act_grad_tolerance(name, np.float32, ref, dy, x)
    saved = activations.ACTIVATIONS[name].saved
    cpu_ops.act_backward(
        name, dy, x if saved == "x" else None, y if saved == "y" else None, dy, SLOPE
    )
    assert_close(dy, ref, tol)


@pytest.mark.parametrize("name", [n for n in NAMES if activations.ACTIVATIONS[n].saved])
def test_act_backward_over_the_array_it_reads(parallel, name):
    """out is x (or y): dJ/dz written over the z it reads, as the static step does (its own
    kernel, so that LLVM's overlap check does not send the loop down its scalar path)."""
    dy, x, y = backward_inputs(name, np.float32, (7, 143), 7)
    ref = ref_grad(name, dy, x, y)
    tol = act_grad_tolerance(name, np.float32, ref, dy, x)
    src = x.copy() if activations.ACTIVATIONS[name].saved == "x" else y.copy()
    args = (src, None) if activations.ACTIVATIONS[name].saved == "x" else (None, src)
    assert cpu_ops.act_backward(name, dy, *args, src, SLOPE) is src
    assert_close(src, ref, tol)


@pytest.mark.parametrize("name, want", [("relu", 0.0), ("leaky_relu", SLOPE)])
def test_derivative_at_zero_follows_torch(name, want):
    out = nans(5, np.float32)
    cpu_ops.act_backward(name, np.ones(5, np.float32), np.zeros(5, np.float32), None, out, SLOPE)
    np.testing.assert_array_equal(out, np.float32(want))


@pytest.mark.parametrize("name", NAMES)
def test_act_backward_matches_finite_differences(name):
    """float64 central differences of f, away from relu's kink."""
    rng = np.random.default_rng(7)
    x = rng.uniform(0.1, 3.0, 200) * rng.choice([-1.0, 1.0], 200)
    y = cpu_ops.act_forward(name, x, np.empty_like(x), SLOPE)
    dy = rng.standard_normal(200)
    got = cpu_ops.act_backward(name, dy, x, y, nans(200, np.float64), SLOPE)
    h = 1e-6
    fp = cpu_ops.act_forward(name, x + h, np.empty_like(x), SLOPE)
    fm = cpu_ops.act_forward(name, x - h, np.empty_like(x), SLOPE)
    np.testing.assert_allclose(got, dy * (fp - fm) / (2 * h), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_activations_match_torch(name):
    torch = pytest.importorskip("torch")
    fns = {
        "identity": lambda t: t,
        "relu": torch.relu,
        "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, SLOPE),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "gelu": torch.nn.functional.gelu,
        "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "silu": torch.nn.functional.silu,
    }
    rng = np.random.default_rng(8)
    x = random_values(rng, (64, 33), np.float32)
    x[0, :3] = [0.0, -0.0, 40.0]
    dy = random_values(rng, x.shape, np.float32)
    # gelu and silu against torch in float64: torch's gelu takes 1 + erf(z/sqrt 2), which
    # keeps no digits of Phi(z) in float32 for z << 0 (the kernel's erfc keeps them), and
    # in float64 is off by z times a rounding of 1 (allowed for below)
    wide = name in ("gelu", "gelu_tanh", "silu")
    xt = torch.from_numpy(x.astype(np.float64) if wide else x).requires_grad_()
    yt = fns[name](xt)
    yt.backward(torch.from_numpy(dy.astype(np.float64) if wide else dy))
    y = cpu_ops.act_forward(name, x, nans(x.shape, np.float32), SLOPE)
    g = cpu_ops.act_backward(name, dy, x, y, nans(x.shape, np.float32), SLOPE)
    ref = yt.detach().numpy().astype(np.float64)
    if wide:
        torch_error = 4 * eps(np.float64) * np.abs(x.astype(np.float64))
        assert_close(y, ref, act_ulps(name, np.float32, ref, x) + torch_error)
    else:
        np.testing.assert_allclose(y, ref, rtol=4 * eps(np.float32), atol=1e-30)
    want = xt.grad.numpy().astype(np.float64)
    assert_close(g, want, act_grad_tolerance(name, np.float32, want, dy, x))


# --- row-wise ------------------------------------------------------------------------------

ROW_SHAPES = [(37, 300), (5, 1025), (64, 3), (1, 1)]


def run_row_op(op, x, out=None):
    if out is None:
        out = nans((x.shape[0],) if op == "logsumexp" else x.shape, x.dtype)
    assert getattr(cpu_ops, op)(x, out) is out
    return out


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", ROW_OPS)
def test_row_op(parallel, op, dtype, shape):
    x = random_values(np.random.default_rng(9), shape, dtype)
    ref = ref_op(op, x)
    assert_close(run_row_op(op, x), ref, row_tolerance(op, x, ref, dtype))


@pytest.mark.parametrize("cols", [40, 5], ids=lambda c: f"cols{c}")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", ROW_OPS)
def test_row_op_edge_rows(parallel, op, dtype, cols):
    x = edge_rows(dtype, cols)
    assert_row_op_edge_rows(op, x, run_row_op(op, x), dtype)


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
def test_row_op_in_place(parallel, op):
    x = random_values(np.random.default_rng(11), (37, 300), np.float32)
    ref = ref_op(op, x)
    tol = row_tolerance(op, x, ref, np.float32)
    run_row_op(op, x, out=x)
    assert_close(x, ref, tol)


def test_row_op_nan_input_gives_nan_row():
    x = random_values(np.random.default_rng(12), (3, 50), np.float32)
    x[1, 7] = np.nan
    for op in ROW_OPS:
        got = run_row_op(op, x)
        assert np.isnan(got[1]).all() and np.isfinite(got[[0, 2]]).all(), op


@pytest.mark.parametrize("op", ROW_OPS)
def test_row_ops_match_torch(op):
    torch = pytest.importorskip("torch")
    x = edge_rows(np.float32)[:6]
    fn = {"logsumexp": torch.logsumexp, "log_softmax": torch.log_softmax, "softmax": torch.softmax}[op]
    want = fn(torch.from_numpy(x), 1).numpy()
    got = run_row_op(op, x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 70),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 3e3]),
    shift=st.sampled_from([0.0, -1e4, 1e4]),
    seed=st.integers(0, 2**32 - 1),
)
def test_log_softmax_property(rows, cols, scale, shift, seed):
    x = (np.random.default_rng(seed).standard_normal((rows, cols)) * scale + shift).astype(np.float32)
    got = run_row_op("log_softmax", x)
    ref = ref_op("log_softmax", x)
    assert_close(got, ref, row_tolerance("log_softmax", x, ref, np.float32))
    assert (got <= 0).all()


# --- softmax cross-entropy -------------------------------------------------------------------

def run_cross_entropy(x, labels, scale, in_place=False):
    loss = nans(x.shape[0], x.dtype)
    dl = x if in_place else nans(x.shape, x.dtype)
    res = cpu_ops.softmax_cross_entropy(x, labels, loss, dl, scale)
    assert res[0] is loss and res[1] is dl
    return loss, dl


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_cross_entropy(parallel, dtype, shape, label_dtype):
    rng = np.random.default_rng(13)
    x = random_values(rng, shape, dtype)
    labels = rng.integers(0, shape[1], shape[0]).astype(label_dtype)
    labels[0] = shape[1] - 1
    scale = 1.0 / shape[0]
    loss, dl = run_cross_entropy(x, labels, scale)
    assert_cross_entropy_close(loss, dl, x, labels, scale, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_cross_entropy_edge_rows(parallel, dtype):
    x = edge_rows(dtype)
    labels = edge_labels(x)
    loss, dl = run_cross_entropy(x, labels, 0.25)
    assert_cross_entropy_edge_rows(loss, dl, x, labels, 0.25, dtype)


def test_softmax_cross_entropy_into_logits(parallel):
    rng = np.random.default_rng(14)
    x = random_values(rng, (37, 300), np.float32)
    labels = rng.integers(0, 300, 37).astype(np.int32)
    x0 = x.copy()  # the call overwrites x with dlogits
    loss, dl = run_cross_entropy(x, labels, 0.2, in_place=True)
    assert_cross_entropy_close(loss, dl, x0, labels, 0.2, np.float32)


def test_softmax_cross_entropy_out_of_range_label_poisons_its_row(parallel):
    x = random_values(np.random.default_rng(15), (4, 30), np.float32)
    labels = np.array([2, 30, -1, 29], np.int64)
    loss, dl = run_cross_entropy(x, labels, 1.0)
    assert np.isnan(loss[[1, 2]]).all() and np.isnan(dl[[1, 2]]).all()
    ok = [0, 3]
    assert_cross_entropy_close(loss[ok], dl[ok], x[ok], labels[ok], 1.0, np.float32)


def test_softmax_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(16)
    x = random_values(rng, (64, 100), np.float32)
    labels = rng.integers(0, 100, 64)
    xt = torch.from_numpy(x).requires_grad_()
    lt = torch.nn.functional.cross_entropy(xt, torch.from_numpy(labels))
    lt.backward()
    loss, dl = run_cross_entropy(x, labels, 1.0 / 64)
    np.testing.assert_allclose(loss.mean(dtype=np.float64), lt.item(), rtol=1e-6)
    np.testing.assert_allclose(dl, xt.grad.numpy(), rtol=1e-5, atol=1e-9)


def test_softmax_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((6, 9)) * 2
    labels = rng.integers(0, 9, 6)
    scale = 1.0 / 6
    _, dl = run_cross_entropy(x, labels, scale)

    def total(xx):
        return scale * cpu_ops.softmax_cross_entropy(
            xx, labels, np.empty(6), np.empty_like(xx), scale
        )[0].sum()

    h = 1e-6
    num = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (total(xp) - total(xm)) / (2 * h)
    np.testing.assert_allclose(dl, num, rtol=1e-6, atol=1e-9)


# --- the float32 exponential behind the CPU kernels --------------------------------------------

def test_float32_exp_is_within_one_ulp_down_to_subnormals():
    from numba import njit

    exp = cpu_ops._exp_nonpos_f32

    @njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = exp(x[i])

    x = np.concatenate([
        -np.linspace(0, 110, 1_000_001, dtype=np.float32),
        -np.abs(np.random.default_rng(18).standard_normal(200_000).astype(np.float32)) * 20,
        np.array([0.0, -0.0, -1e-30, -np.inf, np.nan, -1e4], np.float32),
    ])
    got = np.empty_like(x)
    apply(x, got)
    ref = np.exp(x.astype(np.float64))
    normal = ref >= np.finfo(np.float32).tiny
    ulp = np.abs(got[normal] - ref[normal]) / np.spacing(ref[normal].astype(np.float32))
    assert ulp.max() < 1.1
    sub = ~normal & ~np.isnan(x)
    assert np.abs(got[sub] - ref[sub]).max() <= np.float32(1.5e-45)  # one subnormal step
    assert np.isnan(got[np.isnan(x)]).all() and got[x == -np.inf] == 0.0


def test_float32_tanh_is_within_two_ulps():
    from numba import njit

    tanh = cpu_ops._tanh_f32

    @njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = tanh(x[i])

    x = np.concatenate([
        np.linspace(-12, 12, 1_000_001, dtype=np.float32),
        np.random.default_rng(19).standard_normal(100_000).astype(np.float32) * 1e-3,
        np.array([np.inf, -np.inf, 1e-30, -1e-30, 1e-45], np.float32),
    ])
    got = np.empty_like(x)
    apply(x, got)
    ref = np.tanh(x.astype(np.float64))
    assert (np.abs(got - ref) / np.spacing(np.abs(ref).astype(np.float32))).max() < 2.0
    nan_out = np.zeros(1, np.float32)
    apply(np.array([np.nan], np.float32), nan_out)
    assert np.isnan(nan_out[0])


def test_float32_erfc_is_within_a_few_ulps_of_the_rounding_of_x_squared():
    """gelu's float32 erfc (Numerical Recipes' fit, vectorisable) against Python's math.erfc
    in float64: within 4 ulps times 1 + 2 x^2, the factor any float32 erfc pays for -x^2
    rounded (erfc(x) ~ exp(-x^2) where it is small); down to subnormal results; exact at 0
    and the infinities; NaN stays NaN."""
    from numba import njit

    erfc = cpu_ops._erfc_f32

    @njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = erfc(x[i])

    x = np.concatenate([np.linspace(-6, 10.5, 1_000_001, dtype=np.float32),
                        np.random.default_rng(20).standard_normal(100_000).astype(np.float32)])
    got = np.empty_like(x)
    apply(x, got)
    ref = np.array([math.erfc(v) for v in x.astype(np.float64)])
    x64 = x.astype(np.float64)
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got - ref) <= 4 * ulp * (1 + 2 * x64 * x64)), \
        (np.abs(got - ref) / ulp / (1 + 2 * x64 * x64)).max()
    assert got[x > 9.5].min() < np.finfo(np.float32).tiny  # subnormal results come out
    edges = np.array([0.0, np.inf, -np.inf, np.nan], np.float32)
    out = np.empty_like(edges)
    apply(edges, out)
    assert out[0] == np.float32(1.0) and out[1] == 0.0 and out[2] == 2.0 and np.isnan(out[3])


# --- the float64 exp and erfc behind the CPU kernels -------------------------------------------
# Their references come from mpmath (a dependency of sympy, so of torch): scipy.special.erfc
# (Cephes) is itself 3 ulps off near 0, 10 near 1 and hundreds in the tail, and libm's erfc
# (glibc 2.36) 4 ulps, both more than the function under test.

def mp_ulp_errors(mpfn, x, got):
    """|got - f(x)| in ulps of f(x), f(x) from mpmath at 30 digits; where f(x) is below the
    smallest normal float64, in steps of the smallest subnormal. Returns (errors, normal)."""
    mp = pytest.importorskip("mpmath")
    hi, lo, shift = np.empty_like(x), np.empty_like(x), np.zeros(x.shape, np.int64)
    with mp.workdps(30):
        for i, v in enumerate(x.tolist()):
            r = mpfn(mp.mpf(v))
            if 0 < r < mp.mpf(2) ** -900:  # scaled up: float() misrounds near 2**-1022
                shift[i], r = 1100, r * mp.mpf(2) ** 1100
            hi[i] = float(r)
            lo[i] = float(r - hi[i])
    half = np.ldexp(1.0, shift // 2)
    normal = np.abs(hi) >= np.ldexp(1.0, shift - 1022)
    unit = np.where(normal, np.spacing(np.abs(hi)), np.ldexp(1.0, shift - 1074))
    return np.abs(((got * half) * half - hi) - lo) / unit, normal


def _apply(f):
    from numba import njit

    @njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = f(x[i])

    return apply


def test_float64_exp_is_within_0_65_ulp_down_to_subnormals():
    mpmath = pytest.importorskip("mpmath")

    rng = np.random.default_rng(21)
    x = np.concatenate([
        -np.linspace(0, 746, 20_001),
        -np.abs(rng.standard_normal(5_000)) * 20,
        -rng.uniform(708, 746, 2_000),  # subnormal results
        -np.ldexp(rng.uniform(0.5, 1, 500), rng.integers(-1074, 0, 500)),
    ])
    got = np.empty_like(x)
    _apply(cpu_ops._exp_nonpos_f64)(x, got)
    err, normal = mp_ulp_errors(mpmath.exp, x, got)
    assert err[normal].max() < 0.65, x[normal][np.argmax(err[normal])]
    assert err[~normal].max() < 1.0  # one subnormal step
    edges = np.array([0.0, -0.0, -5e-324, -745.1, -745.2, -1e4, -np.inf, np.nan])
    out = np.empty_like(edges)
    _apply(cpu_ops._exp_nonpos_f64)(edges, out)
    np.testing.assert_array_equal(out, [1.0, 1.0, 1.0, 5e-324, 0.0, 0.0, 0.0, np.nan])


def test_float64_erfc_is_within_1_3_ulp_to_the_last_subnormal():
    """gelu's float64 erfc against mpmath: within 1.3 ulp wherever erfc(x) is normal (libm's:
    4), within one step where it is subnormal (26.54 < x < 27.226), 0 where it rounds to 0."""
    mpmath = pytest.importorskip("mpmath")

    rng = np.random.default_rng(22)
    x = np.concatenate([
        np.linspace(-6, 27.3, 20_001),
        rng.uniform(-6, 27.3, 5_000),
        rng.standard_normal(5_000) * 3,
        rng.uniform(0.7, 1.3, 5_000),  # where the largest errors are
        rng.uniform(26.5, 27.3, 2_000),
        np.ldexp(rng.uniform(-1, 1, 1_000), rng.integers(-1074, -1, 1_000)),  # tiny |x|
    ])
    got = np.empty_like(x)
    _apply(cpu_ops._erfc_f64)(x, got)
    err, normal = mp_ulp_errors(mpmath.erfc, x, got)
    assert err[normal].max() < 1.3, x[normal][np.argmax(err[normal])]
    assert err[~normal].max() < 1.0
    assert np.all(got[x > 27.2261] == 0.0) and np.all(got[x < 27.226] > 0.0)


def test_float64_erfc_special_values():
    x = np.array([0.0, -0.0, 5e-324, -5e-324, 1e-300, 1e-17, -1e-17, np.inf, -np.inf, np.nan,
                  27.23, 1e300, -6.0, -26.0, -1e300])
    out = np.empty_like(x)
    _apply(cpu_ops._erfc_f64)(x, out)
    np.testing.assert_array_equal(
        out, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 2.0, np.nan, 0.0, 0.0, 2.0, 2.0, 2.0])


@functools.cache
def gelu_tail_references():
    """z from -38.5 (where Phi(z) underflows) to 9, and float64 gelu(z) and gelu'(z) from
    mpmath fed the kernels' rounded intermediates (z / sqrt 2, -z^2 / 2), with the sum of the
    magnitudes of gelu''s two terms (they cancel near z = -0.75)."""
    mp = pytest.importorskip("mpmath")
    z = np.concatenate([np.linspace(-38.5, 9, 4_001),
                        np.random.default_rng(23).standard_normal(1_000) * 4])
    w = z * -0.7071067811865476  # the kernels' argument of erfc
    arg = (-0.5 * z) * z  # and of exp
    fwd, grad, grad_scale = (np.empty_like(z) for _ in range(3))
    with mp.workdps(30):
        for i, (v, wi, ai) in enumerate(zip(z.tolist(), w.tolist(), arg.tolist())):
            cdf = mp.erfc(wi) / 2
            zpdf = v * mp.exp(ai) * mp.mpf(0.3989422804014327)
            fwd[i], grad[i], grad_scale[i] = v * cdf, cdf + zpdf, abs(cdf) + abs(zpdf)
    return z, fwd, grad, grad_scale


def test_float64_gelu_keeps_erfc_accuracy_into_the_tails(parallel):
    """Through the kernels (where erfc is inlined), float64 gelu and its gradient against
    mpmath down to where Phi(z) underflows: what is left is the kernels' own few roundings
    (and libm's erfc, 4 ulps, where the CPU has no FMA)."""
    z, ref_f, ref_g, scale_g = gelu_tail_references()
    n = 2.0 if cpu_ops._FMA_NATIVE else 5.0
    e = eps(np.float64)
    y = cpu_ops.act_forward("gelu", z, nans(z.shape, np.float64), SLOPE)
    assert_close(y, ref_f, n * e * np.abs(ref_f) + np.abs(z) * 5e-324)
    assert (y[(z < -10) & (z > -37.5)] < 0).all()  # Phi(z) keeps its digits (1 + erf: 0)
    g = cpu_ops.act_backward("gelu", np.ones_like(z), z, None, nans(z.shape, np.float64), SLOPE)
    # exp(-z^2/2) is subnormal below z = -37.6: its steps, times |z|
    assert_close(g, ref_g, (n + 2) * e * scale_g + 2 * (1 + np.abs(z)) * 5e-324)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 only")
def test_float64_erfc_falls_back_to_libm_without_fma():
    """Compiled for x86-64 without FMA, the float64 erfc is libm's (its exact products would be
    libm calls), and the float64 exp still within 0.65 ulp (fma or not, nothing it needs is
    exact)."""
    code = (
        "import math, numpy as np\n"
        "from gpunet.kernels import cpu_ops\n"
        "assert not cpu_ops._FMA_NATIVE\n"
        "z = np.linspace(-30, 10, 2001)\n"
        "y = cpu_ops.act_forward('gelu', z, np.empty_like(z), 0.0)\n"
        "want = [v * (0.5 * math.erfc(v * -0.7071067811865476)) for v in z.tolist()]\n"
        "assert np.array_equal(y, want), np.abs(y - want).max()\n"
        "x = -np.linspace(0, 700, 20001)\n"
        "e = cpu_ops.act_forward('sigmoid', x, np.empty_like(x), 0.0)\n"  # exp(x) / (1 + exp(x))
        "want = np.exp(x) / (1 + np.exp(x))\n"
        "assert np.all(np.abs(e - want) <= 3 * np.spacing(want))\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
               NUMBA_CPU_NAME="x86-64", NUMBA_CPU_FEATURES="")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
