"""kernels/cpu_norm.py, the numpy backend's layer norm from 2^16 elements up: against the
float64 formula written here and torch autograd, on poisoned outputs and in place; taken by
the backend (eager and static alike) only over the threshold; the static step still equals
the eager one to the bit there."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.step import StaticStep

cpu_norm = pytest.importorskip("gpunet.kernels.cpu_norm")

TOL = {np.float32: 2e-6, np.float64: 2e-13}


def _reference(z, gamma, beta, dn, eps, axis=1):
    """The forward and backward pass in float64, written out: a layer norm (statistics over
    each row, ``axis`` 1) or a batch norm's training pass (over the batch, ``axis`` 0).
    Returns ((n, xhat, rstd[, mean, var]), (dz, dgamma, dbeta))."""
    z, gamma, beta, dn = (np.asarray(a, dtype=np.float64) for a in (z, gamma, beta, dn))
    d = z.shape[axis]
    mean = z.sum(axis=axis, keepdims=True) / d
    var = ((z - mean) ** 2).sum(axis=axis, keepdims=True) / d
    rstd = 1 / np.sqrt(var + eps)
    xhat = (z - mean) * rstd
    g = dn * gamma
    dz = rstd * (g - g.sum(axis=axis, keepdims=True) / d
                 - xhat * (g * xhat).sum(axis=axis, keepdims=True) / d)
    stats = (mean, var) if axis == 0 else ()
    return (xhat * gamma + beta, xhat, rstd, *stats), \
        (dz, (dn * xhat).sum(axis=0), dn.sum(axis=0))


def _inputs(shape, dtype, offset=0.0, seed=0, constant_row=False):
    rng = np.random.default_rng(seed)
    z = (rng.normal(0, 2, shape) + offset).astype(dtype)
    if constant_row:  # variance 0: n = beta (xhat = 0 needs the mean exact, a float64 sum)
        z[3] = z[3, 0]
    gamma = rng.uniform(0.5, 1.5, shape[1]).astype(dtype)
    beta = rng.normal(0, 0.5, shape[1]).astype(dtype)
    dn = rng.normal(size=shape).astype(dtype)
    return z, gamma, beta, dn


def _assert_close(got, want, dtype, what, cond=1.0):
    """Within 8 TOL of the largest value, times ``cond``: how much centring rows at offset m
    with spread s amplifies the reference's own float64 rounding (about 1 + m / s)."""
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=0,
                               atol=TOL[dtype] * scale * 8 * cond, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, offset", [((7, 5), 0.0), ((300, 257), 0.0),
                                           ((130, 1031), 1e4)])
def test_kernels_match_the_formula_on_poisoned_outputs(dtype, shape, offset):
    """Every output written (NaN first), each within a few ulps of the float64 formula; rows
    at 10^4 keep their digits (float64 sums)."""
    z, gamma, beta, dn = _inputs(shape, dtype, offset, constant_row=not offset)
    cond = 1.0 + offset / 2.0 if dtype == np.float64 else 1.0
    (n_ref, xhat_ref, rstd_ref), _ = _reference(z, gamma, beta, dn, 1e-5)
    fwd = (np.full_like(z, np.nan), np.full_like(z, np.nan), np.full((shape[0], 1), np.nan, dtype))
    cpu_norm.layer_norm_forward(z, gamma, beta, 1e-5, *fwd)
    for got, want, what in zip(fwd, (n_ref, xhat_ref, rstd_ref), ("n", "xhat", "rstd")):
        _assert_close(got, want, dtype, what, cond)
    if not offset:
        np.testing.assert_array_equal(fwd[0][3], beta)  # the constant row: n = beta
    bwd = (np.full_like(z, np.nan), np.full_like(gamma, np.nan), np.full_like(gamma, np.nan))
    cpu_norm.layer_norm_backward(dn, fwd[1], fwd[2], gamma, *bwd)
    for got, want, what in zip(bwd, _reference(z, gamma, beta, dn, 1e-5)[1],
                               ("dz", "dgamma", "dbeta")):
        _assert_close(got, want, dtype, what, cond)
    assert all(np.isfinite(a).all() for a in fwd + bwd)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_run_in_place(dtype):
    """n over z and dz over dn give what separate outputs give, to the bit."""
    z, gamma, beta, dn = _inputs((96, 700), dtype, seed=1)
    apart = (np.empty_like(z), np.empty_like(z), np.empty((96, 1), dtype))
    cpu_norm.layer_norm_forward(z, gamma, beta, 1e-5, *apart)
    over = z.copy()
    xhat, rstd = np.empty_like(z), np.empty((96, 1), dtype)
    cpu_norm.layer_norm_forward(over, gamma, beta, 1e-5, over, xhat, rstd)
    np.testing.assert_array_equal(over, apart[0])
    sep = (np.empty_like(z), np.empty_like(gamma), np.empty_like(gamma))
    cpu_norm.layer_norm_backward(dn, xhat, rstd, gamma, *sep)
    d = dn.copy()
    dg, db = np.empty_like(gamma), np.empty_like(gamma)
    cpu_norm.layer_norm_backward(d, xhat, rstd, gamma, d, dg, db)
    for got, want in zip((d, dg, db), sep):
        np.testing.assert_array_equal(got, want)


def test_kernels_match_torch_autograd():
    torch = pytest.importorskip("torch")
    z, gamma, beta, dn = _inputs((200, 333), np.float64, seed=2)
    fwd = (np.empty_like(z), np.empty_like(z), np.empty((200, 1)))
    cpu_norm.layer_norm_forward(z, gamma, beta, 1e-3, *fwd)
    bwd = (np.empty_like(z), np.empty_like(gamma), np.empty_like(gamma))
    cpu_norm.layer_norm_backward(dn, fwd[1], fwd[2], gamma, *bwd)
    zt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (z, gamma, beta))
    n = torch.nn.functional.layer_norm(zt, (333,), gt, bt, 1e-3)
    n.backward(torch.tensor(dn))
    for got, want in zip((fwd[0], *bwd), (n, zt.grad, gt.grad, bt.grad)):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-11)


def test_bad_layouts_are_refused():
    """The checks cpu_ops and cuda_ops share (kernels/_checks.py), naming the argument."""
    z = np.ones((4, 6), np.float32)
    vec = np.ones(6, np.float32)
    col = np.ones((4, 1), np.float32)
    with pytest.raises(ValueError, match="beta has shape"):
        cpu_norm.layer_norm_forward(z, vec, np.ones(5, np.float32), 1e-5, z, z.copy(), col)
    with pytest.raises(ValueError, match="n must be C-contiguous"):
        cpu_norm.layer_norm_forward(z, vec, vec, 1e-5, np.ones((6, 4), np.float32).T,
                                    z.copy(), col)
    with pytest.raises(TypeError, match="float32 or float64"):
        cpu_norm.layer_norm_forward(z.astype(np.int32), vec, vec, 1e-5, z, z, col)
    with pytest.raises(TypeError, match="dgamma has dtype float64"):
        cpu_norm.layer_norm_backward(z, z, col, vec, z, vec.astype(np.float64), vec)


def test_the_backend_takes_the_kernels_from_the_threshold_up(monkeypatch):
    """The numpy backend sends arrays of 2^16 elements and more to cpu_norm, smaller ones to
    NumPy's ops; the two agree to rounding."""
    from gpunet.kernels import cpu_ops  # (which the backend calls: cpu_norm's, re-exported)

    calls = []
    for name in ("layer_norm_forward", "layer_norm_backward"):
        inner = getattr(cpu_ops, name)
        assert inner is getattr(cpu_norm, name)
        monkeypatch.setattr(cpu_ops, name,
                            lambda *a, _f=inner, _n=name: calls.append(_n) or _f(*a))
    b = gn.get_backend("numpy")
    for shape, taken in (((256, 256), True), ((255, 256), False)):
        calls.clear()
        z, gamma, beta, dn = _inputs(shape, np.float32, seed=3)
        n, xhat, rstd = b.layer_norm_forward(z, gamma, beta, 1e-5)
        dz, dg, dbeta = b.layer_norm_backward(dn, xhat, rstd, gamma)
        assert calls == (["layer_norm_forward", "layer_norm_backward"] if taken else [])
        (n_ref, _, _), grads_ref = _reference(z, gamma, beta, dn, 1e-5)
        _assert_close(n, n_ref, np.float32, "n")
        for got, want in zip((dz, dg, dbeta), grads_ref):
            _assert_close(got, want, np.float32, "grads")


@pytest.mark.parametrize("norm", ["layer", "batch"])
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "identity"])
def test_static_steps_over_the_threshold_equal_eager_ones(act, norm):
    """Hidden layers of 64 x 1100 and 64 x 700 (over 2^16 elements) go through the kernels in
    both the eager and the static step: still the same bits (weights, and a batch norm's
    running statistics)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 20)).astype(np.float32)
    y = rng.integers(0, 6, 300)
    models = [gn.MLP([20, 1100, 700, 6], activation=act, slope=-0.2, norm=norm,
                     backend="numpy", seed=2) for _ in range(2)]
    opts = [gn.Adam(m, lr=1e-2) for m in models]
    loss = gn.CrossEntropyLoss()
    step = StaticStep(models[1], loss, opts[1], 64)
    for s in range(3):
        rows = rng.permutation(300)[:64]
        models[0].train_step(x[rows], y[rows], loss, opts[0])
        step(x, y, rows)
    for k, v in models[0].state_dict().items():
        np.testing.assert_array_equal(models[1].state_dict()[k], v, err_msg=k)


# -- batch norm: the statistics over the batch ------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, offset", [((7, 5), 0.0), ((257, 300), 0.0),
                                           ((1031, 130), 1e4)])
def test_batch_kernels_match_the_formula_on_poisoned_outputs(dtype, shape, offset):
    """Every output written, within a few ulps of the float64 formula; features at 10^4
    keep their digits; a constant feature gives beta."""
    z, gamma, beta, dn = _inputs(shape, dtype, offset)
    if not offset:
        z[:, 3] = z[0, 3]  # a constant feature: variance 0, n = beta
    cond = 1.0 + offset / 2.0 if dtype == np.float64 else 1.0
    fwd_ref, bwd_ref = _reference(z, gamma, beta, dn, 1e-5, axis=0)
    stat = (1, shape[1])
    fwd = (np.full_like(z, np.nan), np.full_like(z, np.nan),
           *(np.full(stat, np.nan, dtype) for _ in range(3)))
    cpu_norm.batch_norm_forward(z, gamma, beta, 1e-5, *fwd)
    for got, want, what in zip(fwd, fwd_ref, ("n", "xhat", "rstd", "mean", "var")):
        _assert_close(got, want, dtype, what, cond)
    if not offset:
        np.testing.assert_array_equal(fwd[0][:, 3], np.full(shape[0], beta[3]))
    bwd = (np.full_like(z, np.nan), np.full_like(gamma, np.nan), np.full_like(gamma, np.nan))
    cpu_norm.batch_norm_backward(dn, fwd[1], fwd[2], gamma, *bwd)
    for got, want, what in zip(bwd, bwd_ref, ("dz", "dgamma", "dbeta")):
        _assert_close(got, want, dtype, what, cond)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_kernels_run_in_place(dtype):
    z, gamma, beta, dn = _inputs((300, 230), dtype, seed=5)
    stat = (1, 230)
    apart = (np.empty_like(z), np.empty_like(z), *(np.empty(stat, dtype) for _ in range(3)))
    cpu_norm.batch_norm_forward(z, gamma, beta, 1e-5, *apart)
    over = z.copy()
    rest = (np.empty_like(z), *(np.empty(stat, dtype) for _ in range(3)))
    cpu_norm.batch_norm_forward(over, gamma, beta, 1e-5, over, *rest)
    np.testing.assert_array_equal(over, apart[0])
    sep = (np.empty_like(z), np.empty_like(gamma), np.empty_like(gamma))
    cpu_norm.batch_norm_backward(dn, apart[1], apart[2], gamma, *sep)
    d = dn.copy()
    dg, db = np.empty_like(gamma), np.empty_like(gamma)
    cpu_norm.batch_norm_backward(d, apart[1], apart[2], gamma, d, dg, db)
    for got, want in zip((d, dg, db), sep):
        np.testing.assert_array_equal(got, want)


def test_the_backend_takes_the_batch_kernels_from_the_threshold_up(monkeypatch):
    calls = []
    from gpunet.kernels import cpu_ops  # (which the backend calls: cpu_norm's, re-exported)

    for name in ("batch_norm_forward", "batch_norm_backward"):
        inner = getattr(cpu_ops, name)
        monkeypatch.setattr(cpu_ops, name,
                            lambda *a, _f=inner, _n=name: calls.append(_n) or _f(*a))
    b = gn.get_backend("numpy")
    for shape, taken in (((256, 256), True), ((255, 256), False)):
        calls.clear()
        z, gamma, beta, dn = _inputs(shape, np.float64, seed=6)
        fwd = b.batch_norm_forward(z, gamma, beta, 1e-5)
        bwd = b.batch_norm_backward(dn, fwd[1], fwd[2], gamma)
        assert calls == (["batch_norm_forward", "batch_norm_backward"] if taken else [])
        fwd_ref, bwd_ref = _reference(z, gamma, beta, dn, 1e-5, axis=0)
        for got, want in zip((*fwd, *bwd), (*fwd_ref, *bwd_ref)):
            _assert_close(got, want, np.float64, "batch norm")


def _exactly_centred(z, eps, axis):
    """xhat of z, each row (``axis`` 1) or column (0) centred on its first value (exact in
    float64 for values within a factor of 2 of it) and then on the correctly rounded mean
    of those differences (math.fsum): no rounding at z's magnitude enters it."""
    import math

    z = np.asarray(z, dtype=np.float64)
    lines = z if axis == 1 else z.T
    out = np.empty_like(lines)
    for i, line in enumerate(lines):
        c = line - line[0]
        c = c - math.fsum(c) / len(c)
        out[i] = c / math.sqrt(math.fsum(c * c) / len(c) + eps)
    return out if axis == 1 else out.T


@pytest.mark.parametrize("kind", ["layer", "batch"])
@pytest.mark.parametrize("shape", [(4, 32), (2048, 32), (32, 4), (32, 2048)],
                         ids=["numpy ops", "kernel", "numpy ops, tall", "kernel, wide"])
def test_rows_far_from_zero_are_centred_to_the_last_bits(kind, shape):
    """float64 rows (features) at 1e8 with a std of 1: the kernels centred them on their mean
    rounded at 1e8's magnitude, 3e-9 off in xhat; the NumPy ops were 2e-16 off. Both now
    agree with the exact centring to rounding."""
    z = np.random.default_rng(8).normal(1e8, 1.0, shape)
    axis = 1 if kind == "layer" else 0
    ones, zeros = np.ones(shape[1]), np.zeros(shape[1])
    b = gn.get_backend("numpy")
    forward = b.layer_norm_forward if kind == "layer" else b.batch_norm_forward
    n = forward(z, ones, zeros, 1e-5)[0]
    np.testing.assert_allclose(n, _exactly_centred(z, 1e-5, axis), rtol=0, atol=2e-14)
