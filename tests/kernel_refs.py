"""Float64 references, tolerances and helpers shared by the kernel tests.

Used by tests/test_cpu_kernels.py (gpunet.kernels.cpu_ops) and tests/cuda_kernels/test_cuda_ops.py
(gpunet.kernels.cuda_ops), so that both kernel families are held to the same references and
the same tolerances. tests/cuda_kernels runs in its own pytest process; its conftest.py puts
this folder on sys.path so that ``import kernel_refs`` works there too.
"""

from __future__ import annotations

import math

import numpy as np

from gpunet.kernels import activations

NAMES = list(activations.ACTIVATIONS)
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
SLOPE = 0.07
ROW_OPS = ["logsumexp", "log_softmax", "softmax"]


# --- float64 references ------------------------------------------------------------------

def _normal_cdf(z):
    """Phi(z) = erfc(-z / sqrt 2) / 2 from Python's math.erfc, element by element (NaN stays)."""
    return 0.5 * np.vectorize(math.erfc, otypes=[np.float64])(-z / math.sqrt(2.0))


_BETA = math.sqrt(2 / math.pi)


def _expit(z):
    """sigma(z), written as 1 / (1 + e^-z) for z >= 0 and e^z / (1 + e^z) below."""
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def ref_forward(name, z):
    z = np.asarray(z, np.float64)
    with np.errstate(over="ignore"):
        return {
            "identity": lambda: z.copy(),
            "relu": lambda: np.where(z > 0, z, 0.0),
            "leaky_relu": lambda: np.where(z > 0, z, SLOPE * z),
            "sigmoid": lambda: 1.0 / (1.0 + np.exp(-z)),
            "tanh": lambda: np.tanh(z),
            "gelu": lambda: z * _normal_cdf(z),
            "gelu_tanh": lambda: 0.5 * z * (1 + np.tanh(_BETA * (z + 0.044715 * z ** 3))),
            "silu": lambda: z * _expit(z),
        }[name]()


def ref_grad(name, dy, x, y):
    dy, x, y = (np.asarray(a, np.float64) for a in (dy, x, y))
    return {
        "identity": lambda: dy.copy(),
        "relu": lambda: np.where(x > 0, dy, 0.0),
        "leaky_relu": lambda: np.where(x > 0, dy, SLOPE * dy),
        "sigmoid": lambda: dy * (1.0 - y) * y,
        "tanh": lambda: dy * (1.0 - y * y),
        # d/dz z Phi(z) = Phi(z) + z phi(z); d/dz z sigma(z) = sigma(z) + z sigma(z) sigma(-z)
        "gelu": lambda: dy * (_normal_cdf(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)),
        # d/dz 0.5 z (1 + tanh u), u = b (z + k z^3): 0.5 (1 + tanh u) + 0.5 z sech^2(u) u'
        "gelu_tanh": lambda: dy * (
            0.5 * (1 + np.tanh(_BETA * (x + 0.044715 * x ** 3)))
            + 0.5 * x / np.cosh(_BETA * (x + 0.044715 * x ** 3)) ** 2
            * _BETA * (1 + 3 * 0.044715 * x * x)),
        "silu": lambda: dy * (_expit(x) + x * _expit(x) * _expit(-x)),
    }[name]()


def ref_rows(x):
    """(max, x - max, log of the sum of exp(x - max)) per row, in extended precision.

    Results are formed from the last two as the kernels do ((x - m) - log s, not x - lse), so
    that the reference does not round m + log s at the scale of huge logits. A row of only
    -inf gets x - m = NaN and log s = -inf.
    """
    x = np.asarray(x, np.longdouble)
    m = x.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = x - m
        log_s = np.log(np.exp(np.where(np.isfinite(m), shifted, -np.inf)).sum(axis=1, keepdims=True))
    return m, shifted, log_s


def ref_op(op, x):
    """logsumexp, log_softmax or softmax of each row of x (any other op is a KeyError)."""
    m, shifted, log_s = ref_rows(x)
    with np.errstate(invalid="ignore"):
        out = {
            "logsumexp": lambda: (m + log_s)[:, 0],
            "log_softmax": lambda: shifted - log_s,
            "softmax": lambda: np.exp(shifted - log_s),
        }[op]()
    return out.astype(np.float64)


def ref_cross_entropy(x, labels, scale):
    """(per-row loss, scale * (softmax - onehot)) for integer labels."""
    _, shifted, log_s = ref_rows(x)
    rows = np.arange(x.shape[0])
    with np.errstate(invalid="ignore"):
        loss = (log_s[:, 0] - shifted[rows, labels]).astype(np.float64)
        p = np.exp(shifted - log_s)
    onehot = np.zeros_like(p)
    onehot[rows, labels] = 1.0
    return loss, (scale * (p - onehot)).astype(np.float64)


# --- tolerances and comparison ---------------------------------------------------------------

def eps(dtype):
    return float(np.finfo(dtype).eps)


def ulps(dtype, ref, n=4):
    """n ulps of ref (relative), with the dtype's smallest normal as the absolute floor."""
    return n * eps(dtype) * np.abs(ref) + float(np.finfo(dtype).tiny)


def grad_tolerance(dtype, ref, dy):
    """A few ulps of |dy|: 1 - y*y (tanh) cancels near |y| = 1 in any float32 kernel."""
    return ulps(dtype, np.abs(ref) + np.abs(np.asarray(dy, np.float64)))


def act_ulps(name, dtype, ref, z):
    """``ulps`` of an activation's forward of z. gelu's Phi(z) takes z / sqrt 2 rounded to the
    dtype, and Phi's relative condition number is about z^2 where it is small (z << 0): a
    float32 gelu (torch's too) is good to a few ulps times 1 + z^2 there; twice that here,
    for the CPU kernel's float32 erfc, a fit good to 1.2e-7 (about an ulp) before rounding."""
    tol = ulps(dtype, ref)
    z = np.asarray(z, np.float64)
    if name == "gelu_tanh":  # 1 + tanh(u) cancels for z << 0: its t's ulps, times 0.5 |z|
        return tol + 4 * eps(dtype) * np.abs(z)
    return tol * 2 * (1 + z ** 2) if name == "gelu" else tol


def act_grad_tolerance(name, dtype, ref, dy, x):
    """``grad_tolerance``, widened for gelu as ``act_ulps`` (its phi(z) = exp(-z^2/2) too),
    and for gelu_tanh by what the rounding of tanh near +-1 costs its two terms."""
    tol = grad_tolerance(dtype, ref, dy)
    x = np.asarray(x, np.float64)
    if name == "gelu_tanh":  # t = tanh(u) near +-1: its ulps times the weight of t in f'
        dy = np.abs(np.asarray(dy, np.float64))
        return tol + 8 * eps(dtype) * dy * (0.5 + 0.8 * np.abs(x) * (1 + 0.134 * x * x))
    return tol * 2 * (1 + x ** 2) if name == "gelu" else tol


def row_tolerance(op, x, ref, dtype):
    """A few ulps of the result, plus the rounding of x - max that any float32 kernel has.

    softmax's relative error grows with |x - max| (the argument of exp is rounded to the
    dtype); log_softmax and logsumexp are sums of same-signed terms, so a few ulps of the
    result suffice.
    """
    e = 8 * eps(dtype)
    if op == "softmax":
        _, shifted, _ = ref_rows(x)
        spread = np.nan_to_num(np.abs(shifted.astype(np.float64)), posinf=0.0)
        return e * np.abs(ref) * (1.0 + spread) + float(np.finfo(dtype).tiny)
    return e * (np.abs(ref) + 1.0)


def ce_tolerances(x, ref_loss, ref_dl, scale, dtype):
    """Loss: a few ulps. dlogits: as softmax, plus a few ulps of scale at the label, where
    p - 1 inherits p's absolute rounding (torch's exp(log_softmax) - 1 does the same)."""
    e = 8 * eps(dtype)
    return (
        e * (np.abs(ref_loss) + 1.0),
        row_tolerance("softmax", x, ref_dl, dtype) + e * abs(scale),
    )


def assert_close(got, ref, tol):
    """|got - ref| <= tol elementwise; NaN and inf must sit where the reference has them."""
    got = np.asarray(got, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg="NaN pattern")
    np.testing.assert_array_equal(got[np.isinf(ref)], ref[np.isinf(ref)], err_msg="infs")
    ok = np.isfinite(ref)
    err = np.abs(got[ok] - ref[ok])
    bad = err > np.broadcast_to(tol, ref.shape)[ok]
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} elements off; worst error {err.max():.3g}, "
        f"e.g. got {got[ok][bad][:4]} want {ref[ok][bad][:4]}"
    )


# --- inputs --------------------------------------------------------------------------------

def random_values(rng, shape, dtype, scale=3.0):
    """Normal values scaled by ``scale``, none exactly zero."""
    z = rng.standard_normal(shape) * scale
    z[z == 0] = 0.5
    return z.astype(dtype)


def backward_inputs(name, dtype, shape, seed):
    """(dy, x, y) for act_backward, with y the dtype-rounded forward of x."""
    rng = np.random.default_rng(seed)
    x = random_values(rng, shape, dtype)
    y = ref_forward(name, x).astype(dtype)
    dy = random_values(rng, shape, dtype)
    return dy, x, y


def nans(shape, dtype):
    """A host output buffer poisoned with NaN, so a finite result proves it was written."""
    return np.full(shape, np.nan, dtype)


def edge_rows(dtype, cols=40, seed=10):
    """Rows that break naive kernels; the last one (row 6) is all -inf."""
    rng = np.random.default_rng(seed)
    x = random_values(rng, (7, cols), np.float64)
    x[0] = rng.uniform(-1e4, 1e4, cols)  # huge logits
    x[0, [3 % cols, 17 % cols]] = 1e4
    x[0, 1] = -1e4
    x[1] = 3.5  # all equal
    x[2, rng.permutation(cols)[: cols // 3]] = -np.inf  # some -inf
    x[3] += -1e4  # huge negative
    x[4, 4] = 1e4  # one dominant entry
    x[5] = rng.uniform(-100, -80, cols)  # exp(x - max) reaches float32 subnormals
    x[5, 0] = -80
    x[6] = -np.inf
    return x.astype(dtype)


def edge_labels(x):
    """Labels for edge_rows(...) with cols >= 8; row 2's label sits on one of its -inf logits."""
    labels = np.array([3, 0, 0, 7, 4, 0, 1], np.int64)
    labels[2] = np.flatnonzero(np.isinf(x[2]))[0]
    return labels


# --- checks shared by the cpu_ops and cuda_ops suites ------------------------------------------

def assert_row_op_edge_rows(op, x, got, dtype):
    """op's result on edge_rows(dtype): finite everywhere but the all -inf row, which is -inf
    (logsumexp) or NaN (as torch), and within row_tolerance of the reference."""
    ref = ref_op(op, x)
    assert np.isfinite(got[:6][np.isfinite(ref[:6])]).all()
    if op == "logsumexp":
        assert got[6] == -np.inf
    else:
        assert np.isnan(got[6]).all()
    assert_close(got, ref, row_tolerance(op, x, ref, dtype))


def assert_cross_entropy_close(loss, dl, x, labels, scale, dtype):
    """(loss, dlogits) within ce_tolerances of ref_cross_entropy(x, labels, scale).

    x must hold the logits as they were before the call (a copy, for an in-place call).
    """
    ref_loss, ref_dl = ref_cross_entropy(x, labels, scale)
    tol_loss, tol_dl = ce_tolerances(x, ref_loss, ref_dl, scale, dtype)
    assert_close(loss, ref_loss, tol_loss)
    assert_close(dl, ref_dl, tol_dl)


def assert_cross_entropy_edge_rows(loss, dl, x, labels, scale, dtype):
    """softmax_cross_entropy on edge_rows with edge_labels: as torch, an -inf label logit gives
    an inf loss and the all -inf row NaN; the rest is finite and close to the reference."""
    assert loss[2] == np.inf
    assert np.isnan(loss[6]) and np.isnan(dl[6]).all()
    assert np.isfinite(loss[[0, 1, 3, 4, 5]]).all() and np.isfinite(dl[:6]).all()
    assert_cross_entropy_close(loss, dl, x, labels, scale, dtype)
