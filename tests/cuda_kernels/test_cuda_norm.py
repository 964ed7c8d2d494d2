"""cuda_ops' layer and batch norm kernels against the float64 formula (simulator or GPU), and
through the backend's wiring: a model with norm="layer" or "batch", eager and in a static step,
on the kernels equals the array-module math.

Outputs are poisoned with NaN first; widths cross the row kernels' thread count (16 under the
simulator) and the column kernel's 32-column tiles with ragged tails, and the rows cross its
row lanes.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.kernels import cuda_ops

from conftest import MODE
from kernel_refs import DTYPES, nans
from test_backend_wiring import PLAIN, SIM  # noqa: F401  (the SIM fixture)

SHAPES = [(5, 7), (9, 45), (3, 70)]
TOL = {np.float32: 3e-6, np.float64: 1e-13}


@pytest.fixture(autouse=True)
def few_lanes(monkeypatch):
    if MODE == "sim":  # (32 x lanes Python threads per column tile under the simulator)
        monkeypatch.setattr(cuda_ops, "LN_COLUMN_LANES", 2)
        monkeypatch.setattr(cuda_ops, "BN_COLUMN_LANES", 2)


def _reference(z, gamma, beta, dn, eps):
    z, gamma, beta, dn = (np.asarray(a, dtype=np.float64) for a in (z, gamma, beta, dn))
    d = z.shape[1]
    mean = z.mean(axis=1, keepdims=True)
    rstd = 1 / np.sqrt(((z - mean) ** 2).mean(axis=1, keepdims=True) + eps)
    xhat = (z - mean) * rstd
    g = dn * gamma
    dz = rstd * (g - g.sum(axis=1, keepdims=True) / d
                 - xhat * (g * xhat).sum(axis=1, keepdims=True) / d)
    return (xhat * gamma + beta, xhat, rstd), (dz, (dn * xhat).sum(axis=0), dn.sum(axis=0))


def _inputs(shape, dtype, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    z = (rng.normal(0, 2, shape) + offset).astype(dtype)
    return (z, rng.uniform(0.5, 1.5, shape[1]).astype(dtype),
            rng.normal(0, 0.5, shape[1]).astype(dtype), rng.normal(size=shape).astype(dtype))


def _close(got, want, dtype, what, scale_of=None):
    scale = max(1.0, float(np.abs(want if scale_of is None else scale_of).max()))
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0,
                               atol=TOL[dtype] * scale * 8, err_msg=what)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_forward_and_backward_match_the_formula(dev, dtype, shape):
    z, gamma, beta, dn = _inputs(shape, dtype, seed=shape[1])
    (n_ref, xhat_ref, rstd_ref), grads_ref = _reference(z, gamma, beta, dn, 1e-5)
    fwd = [dev.asarray(nans(s, dtype)) for s in (shape, shape, (shape[0], 1))]
    cuda_ops.layer_norm_forward(dev.asarray(z), dev.asarray(gamma), dev.asarray(beta), 1e-5,
                                *fwd)
    got = [dev.asnumpy(a) for a in fwd]
    for g, want, what in zip(got, (n_ref, xhat_ref, rstd_ref), ("n", "xhat", "rstd")):
        _close(g, want, dtype, what)
    bwd = [dev.asarray(nans(s, dtype)) for s in (shape, shape[1:], shape[1:])]
    cuda_ops.layer_norm_backward(dev.asarray(dn), dev.asarray(got[1]), dev.asarray(got[2]),
                                 dev.asarray(gamma), *bwd)
    for g, want, what in zip(bwd, grads_ref, ("dz", "dgamma", "dbeta")):
        # the sums over a column add rows * |dn xhat|: the tolerance scales with them
        _close(dev.asnumpy(g), want, dtype, what,
               scale_of=np.abs(dn).sum(axis=0) if what != "dz" else None)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_in_place_and_far_from_zero(dev, dtype):
    """n over z and dz over dn (the static step's layout); rows at 1e3 keep their digits
    (sums of z - z[0]); a second call gives the same bits."""
    z, gamma, beta, dn = _inputs((6, 40), dtype, seed=3, offset=1e3)
    (n_ref, _, _), (dz_ref, dg_ref, db_ref) = _reference(z, gamma, beta, dn, 1e-5)
    zd = dev.asarray(z)
    xhat, rstd = dev.asarray(nans(z.shape, dtype)), dev.asarray(nans((6, 1), dtype))
    cuda_ops.layer_norm_forward(zd, dev.asarray(gamma), dev.asarray(beta), 1e-5, zd, xhat,
                                rstd)
    # ((z - z0) - shift: the rounding of the mean at 1e3, 6e-5, never enters the centred values)
    tol = {np.float32: 4e-6, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(dev.asnumpy(zd), n_ref, rtol=0, atol=tol)
    outs = []
    for _ in range(2):
        d = dev.asarray(dn)
        dg, db = dev.asarray(nans((40,), dtype)), dev.asarray(nans((40,), dtype))
        cuda_ops.layer_norm_backward(d, xhat, rstd, dev.asarray(gamma), d, dg, db)
        outs.append([dev.asnumpy(a) for a in (d, dg, db)])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(outs[0][0], dz_ref, rtol=0, atol=tol * 10)
    np.testing.assert_allclose(outs[0][2], db_ref, rtol=0, atol=tol * 10)
    np.testing.assert_allclose(outs[0][1], dg_ref, rtol=0, atol=tol * 10)


def test_bad_arguments_are_refused_as_on_the_cpu(dev):
    z = dev.asarray(np.ones((4, 6), np.float32))
    vec = dev.asarray(np.ones(6, np.float32))
    col = dev.asarray(np.ones((4, 1), np.float32))
    with pytest.raises(ValueError, match="beta has shape"):
        cuda_ops.layer_norm_forward(z, vec, dev.asarray(np.ones(5, np.float32)), 1e-5, z,
                                    dev.asarray(np.ones((4, 6), np.float32)), col)
    with pytest.raises(TypeError, match="eps must be a real number > 0"):
        cuda_ops.layer_norm_forward(z, vec, vec, 0.0, z, dev.asarray(np.ones((4, 6),
                                                                             np.float32)), col)


# -- batch norm: each column's statistics over the batch ------------------------------------

BN_SHAPES = [(5, 7), (9, 45), (2, 70), (33, 3)]  # ragged 32-column tiles; rows across lanes


def _batch_reference(z, gamma, beta, dn, eps):
    z, gamma, beta, dn = (np.asarray(a, dtype=np.float64) for a in (z, gamma, beta, dn))
    rows = z.shape[0]
    mean = z.mean(axis=0, keepdims=True)
    var = ((z - mean) ** 2).mean(axis=0, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    xhat = (z - mean) * rstd
    g = dn * gamma
    dz = rstd * (g - g.sum(axis=0, keepdims=True) / rows
                 - xhat * (g * xhat).sum(axis=0, keepdims=True) / rows)
    return (xhat * gamma + beta, xhat, rstd, mean, var), \
        (dz, (dn * xhat).sum(axis=0), dn.sum(axis=0))


@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_batch_norm_matches_the_formula(dev, dtype, shape):
    z, gamma, beta, dn = _inputs(shape, dtype, seed=shape[1] + 100)
    refs, grads_ref = _batch_reference(z, gamma, beta, dn, 1e-5)
    stat = (1, shape[1])
    fwd = [dev.asarray(nans(s, dtype)) for s in (shape, shape, stat, stat, stat)]
    cuda_ops.batch_norm_forward(dev.asarray(z), dev.asarray(gamma), dev.asarray(beta), 1e-5,
                                *fwd)
    got = [dev.asnumpy(a) for a in fwd]
    for g, want, what in zip(got, refs, ("n", "xhat", "rstd", "mean", "var")):
        # (a column of two rows has |xhat| = 1: rstd is 1 / |half the gap|, large where small)
        _close(g, want, dtype, what, scale_of=want * (10 if what == "rstd" else 1))
    bwd = [dev.asarray(nans(s, dtype)) for s in (shape, shape[1:], shape[1:])]
    cuda_ops.batch_norm_backward(dev.asarray(dn), dev.asarray(got[1]), dev.asarray(got[2]),
                                 dev.asarray(gamma), *bwd)
    for g, want, what in zip(bwd, grads_ref, ("dz", "dgamma", "dbeta")):
        _close(dev.asnumpy(g), want, dtype, what,
               scale_of=np.abs(dn).sum(axis=0) * float(np.abs(refs[2]).max()) ** (what == "dz"))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_batch_norm_in_place_far_from_zero_and_on_a_constant_feature(dev, dtype):
    """n over z and dz over dn (the static step's layout); features at 1e3 keep their digits
    (sums of z - z[0]); a constant feature has mean exactly its value, variance exactly 0 and
    xhat exactly 0; a second call gives the same bits."""
    z, gamma, beta, dn = _inputs((40, 6), dtype, seed=5, offset=1e3)
    z[:, 2] = dtype(1234.5)
    (n_ref, _, _, mean_ref, var_ref), (dz_ref, dg_ref, db_ref) = \
        _batch_reference(z, gamma, beta, dn, 1e-5)
    zd = dev.asarray(z)
    xhat = dev.asarray(nans(z.shape, dtype))
    rstd, mean, var = (dev.asarray(nans((1, 6), dtype)) for _ in range(3))
    cuda_ops.batch_norm_forward(zd, dev.asarray(gamma), dev.asarray(beta), 1e-5, zd, xhat,
                                rstd, mean, var)
    # ((z - z0) - shift: the rounding of the mean at 1e3, 6e-5, never enters the centred values)
    tol = {np.float32: 4e-6, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(dev.asnumpy(zd), n_ref, rtol=0, atol=tol)
    assert dev.asnumpy(mean)[0, 2] == dtype(1234.5) and dev.asnumpy(var)[0, 2] == 0
    assert (dev.asnumpy(xhat)[:, 2] == 0).all()
    np.testing.assert_allclose(dev.asnumpy(var), var_ref, rtol=1e-3 if dtype == np.float32
                               else 1e-9)
    outs = []
    for _ in range(2):
        d = dev.asarray(dn)
        dg, db = dev.asarray(nans((6,), dtype)), dev.asarray(nans((6,), dtype))
        cuda_ops.batch_norm_backward(d, xhat, rstd, dev.asarray(gamma), d, dg, db)
        outs.append([dev.asnumpy(a) for a in (d, dg, db)])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    keep = [0, 1, 3, 4, 5]  # (the constant feature's dz is rstd-scaled noise: 1 / sqrt(eps))
    np.testing.assert_allclose(outs[0][0][:, keep], dz_ref[:, keep], rtol=0, atol=tol * 10)
    np.testing.assert_allclose(outs[0][2], db_ref, rtol=0, atol=tol * 40)
    np.testing.assert_allclose(outs[0][1], dg_ref, rtol=0, atol=tol * 40)


def test_batch_norm_arguments_are_checked(dev):
    z = dev.asarray(np.ones((4, 6), np.float32))
    vec = dev.asarray(np.ones(6, np.float32))
    row = dev.asarray(np.ones((1, 6), np.float32))
    with pytest.raises(ValueError, match="rstd has shape"):
        cuda_ops.batch_norm_forward(z, vec, vec, 1e-5, z, dev.asarray(np.ones((4, 6),
                                    np.float32)), dev.asarray(np.ones((4, 1), np.float32)),
                                    row, row)
    with pytest.raises(ValueError, match="var has shape"):
        cuda_ops.batch_norm_forward(z, vec, vec, 1e-5, z, dev.asarray(np.ones((4, 6),
                                    np.float32)), row, row, dev.asarray(np.ones((1, 5),
                                                                                np.float32)))


@pytest.mark.parametrize("norm, width", [("layer", 19), ("batch", 37)])
def test_a_normalised_net_on_the_kernels_equals_the_array_module(SIM, monkeypatch,  # noqa: F811
                                                                 norm, width):
    """The backend's norm ops route to cuda_ops (all sizes here), one forward and one
    backward kernel call a pass: a net's eager gradients, two static steps and (batch norm)
    the running statistics equal the NumPy backend's."""
    from gpunet.step import StaticStep

    calls = []
    for op in (f"{norm}_norm_forward", f"{norm}_norm_backward"):
        kernel = getattr(cuda_ops, op)
        monkeypatch.setattr(cuda_ops, op, lambda *a, _k=kernel, _op=op: (calls.append(_op),
                                                                          _k(*a))[1])
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(12, 5)), rng.integers(0, 3, 12)
    runs = {}
    for b in (SIM, PLAIN):
        model = gn.MLP([5, width, 3], backend=b, dtype="float64", seed=4, norm=norm)
        y_hat = model.forward(b.asarray(x))
        model.backward(gn.CrossEntropyLoss()(y_hat, b.asarray(y))[1])
        grads = {k: b.to_host(v) for k, v in model.grads.items()}
        opt = gn.Adam(model, lr=1e-2)
        step = StaticStep(model, gn.CrossEntropyLoss(), opt, 6)
        for s in range(2):
            step(b.asarray(x), b.asarray(y), b.asarray(np.arange(s * 6, s * 6 + 6)))
        runs[b.name] = grads, {k: b.to_host(v) for k, v in
                               {**model.params, **model.buffers}.items()}
    for part in (0, 1):
        for k, ref in runs["plain"][part].items():
            # (b1, before a batch norm, has a gradient of exactly 0 in exact arithmetic: both
            # give rounding noise of 1e-11 there, hence the absolute tolerance)
            np.testing.assert_allclose(runs[SIM.name][part][k], ref, rtol=1e-11,
                                       atol=1e-10 if norm == "batch" else 1e-13, err_msg=k)
    assert SIM._kernels_off == ""
    # the eager pass and the two static steps: one forward and one backward call each
    assert calls.count(f"{norm}_norm_forward") == calls.count(f"{norm}_norm_backward") == 3


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # (the simulator's NumPy math)
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_float32_values_at_1e4_keep_their_digits_and_overflow_stays_finite(dev, norm):
    """xhat of float32 values at 1e4 with spread 1 to float32's resolution (the mean of z,
    rounded at 1e4's ulp, would leave 5e-4: torch's float32 figure); values whose squares
    overflow give var inf and xhat 0, not NaN (Kahan's carry stays 0, not inf - inf)."""
    rng = np.random.default_rng(9)
    rows, d = 48, 40
    z = (1e4 + rng.normal(0, 1, (rows, d))).astype(np.float32)
    z[:, 3] = (1e20 * rng.choice([-1.0, 1.0], rows)).astype(np.float32)  # squares: 1e40
    if norm == "layer":
        z = np.ascontiguousarray(z.T)  # (the same values as rows)
    axis = 1 if norm == "layer" else 0
    ref = np.asarray(z, np.float64)
    centred = ref - ref.mean(axis=axis, keepdims=True)
    xhat_ref = centred / np.sqrt((centred ** 2).mean(axis=axis, keepdims=True) + 1e-5)
    stat = (z.shape[0], 1) if norm == "layer" else (1, z.shape[1])
    ones, zeros = (dev.asarray(np.full(z.shape[1], v, np.float32)) for v in (1, 0))
    outs = [dev.asarray(nans(z.shape, np.float32)) for _ in range(2)] + \
        [dev.asarray(nans(stat, np.float32)) for _ in range(1 if norm == "layer" else 3)]
    getattr(cuda_ops, f"{norm}_norm_forward")(dev.asarray(z), ones, zeros, 1e-5, *outs)
    xhat = dev.asnumpy(outs[1])
    big = (slice(3, 4), slice(None)) if norm == "layer" else (slice(None), slice(3, 4))
    assert np.isfinite(xhat).all() and (xhat[big] == 0).all()
    keep = np.ones(z.shape, bool)
    keep[big] = False
    np.testing.assert_allclose(xhat[keep], xhat_ref[keep], rtol=0, atol=1e-6)
    if norm == "batch":
        assert np.isinf(dev.asnumpy(outs[4])[0, 3])  # its variance
