"""The CuPy backend's own paths: GEMMs through its cuBLAS handle, the fused optimiser
kernels, and CUDA-graph replay of a training step. Skipped (saying why) without a GPU;
``scripts/gpu-check`` runs them on one."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.step import StaticStep

_OK, _WHY = gn.cupy_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _OK, reason=f"no GPU: {_WHY}")]


@pytest.fixture
def cupy_backend():
    return gn.get_backend("cupy")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False),
                                              (True, True)])
@pytest.mark.parametrize("m, k, n", [(129, 257, 65), (1, 3, 1000), (1024, 5, 3)])
def test_own_cublas_matmul_against_float64_numpy(cupy_backend, dtype, trans_a, trans_b, m, k, n):
    cp = cupy_backend.xp
    assert cupy_backend.cublas() is not None
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    out = cp.full((m, n), cp.nan, dtype=dtype)  # poisoned: every element must be written
    got = cupy_backend.matmul(cp.asarray(a), cp.asarray(b), out, trans_a, trans_b)
    assert got is out
    ref = (a.T.astype(np.float64) if trans_a else a.astype(np.float64)) @ \
        (b.T.astype(np.float64) if trans_b else b.astype(np.float64))
    tol = dict(rtol=1e-4, atol=1e-4 * np.sqrt(k)) if dtype == np.float32 else dict(rtol=1e-10)
    np.testing.assert_allclose(cp.asnumpy(out), ref, **tol)


@pytest.mark.parametrize("momentum, nesterov, wd, first", [
    (0.0, False, 0.0, False), (0.0, False, 0.01, False), (0.9, False, 0.0, True),
    (0.9, True, 0.01, False)])
def test_fused_sgd_kernel_against_the_cpu_kernel(cupy_backend, momentum, nesterov, wd, first):
    cpu, cp = gn.get_backend("numpy"), cupy_backend.xp
    rng = np.random.default_rng(1)
    # (over the CPU's kernel_min_size, so that the reference is the CPU kernel, whose float64
    # arithmetic rounded once the device kernel shares: NumPy's float32 ops below it round
    # 0.9 buf + g on their own, 1.2e-7 off at one element of 301 x 77)
    p, g, buf = (rng.standard_normal((301, 227)).astype(np.float32) for _ in range(3))
    assert p.size >= cpu.kernel_min_size
    hp, hb = p.copy(), buf.copy()
    cpu.sgd_update(hp, g, hb if momentum else None, np.array([0.05, 3.0]), momentum, 0.0,
                   nesterov, wd, first)
    dp, db = cp.asarray(p), cp.asarray(buf)
    cupy_backend.sgd_update(dp, cp.asarray(g), db if momentum else None,
                            cp.asarray([0.05, 3.0]), momentum, 0.0, nesterov, wd, first)
    np.testing.assert_allclose(cp.asnumpy(dp), hp, rtol=1e-6, atol=1e-7)
    if momentum:
        np.testing.assert_allclose(cp.asnumpy(db), hb, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("wd, decoupled, step", [(0.0, False, 1), (0.01, False, 5),
                                                 (0.01, True, 40)])
def test_fused_adam_kernel_against_the_cpu_kernel(cupy_backend, wd, decoupled, step):
    cpu, cp = gn.get_backend("numpy"), cupy_backend.xp
    rng = np.random.default_rng(2)
    p, g, m = (rng.standard_normal((1000, 67)).astype(np.float32) for _ in range(3))
    assert p.size >= cpu.kernel_min_size  # (the CPU kernel, as above)
    v = rng.uniform(0.01, 1, p.shape).astype(np.float32)
    host = [a.copy() for a in (p, m, v)]
    cpu.adam_update(host[0], g, host[1], host[2], np.array([1e-2, step]), 0.9, 0.999, 1e-8, wd,
                    decoupled)
    dev = [cp.asarray(a) for a in (p, m, v)]
    cupy_backend.adam_update(dev[0], cp.asarray(g), dev[1], dev[2], cp.asarray([1e-2, step]),
                             0.9, 0.999, 1e-8, wd, decoupled)
    for d, h in zip(dev, host):
        np.testing.assert_allclose(cp.asnumpy(d), h, rtol=1e-6, atol=1e-7)


def test_a_replayed_step_allocates_nothing_and_matches_the_cpu(cupy_backend):
    cp = cupy_backend.xp
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 784)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    runs = {}
    for name in ("numpy", "cupy"):
        model = gn.MLP([784, 256, 10], backend=name, seed=0)
        opt = gn.Adam(model, lr=1e-3)
        step = StaticStep(model, gn.CrossEntropyLoss(), opt, 128, count_correct=True)
        b = model.backend
        xd, yd = b.asarray(x), b.asarray(y)
        losses = []
        for s in range(12):
            rows = b.asarray(np.arange(s % 4 * 128, s % 4 * 128 + 128))
            if name == "cupy" and s == 6:
                pool = cp.get_default_memory_pool()
                cp.cuda.get_current_stream().synchronize()
                used = pool.used_bytes()
                loss, _ = step(xd, yd, rows)
                cp.cuda.get_current_stream().synchronize()
                assert pool.used_bytes() == used  # the replay wrote into the graph's memory
            else:
                loss, _ = step(xd, yd, rows)
            losses.append(float(loss))
        if name == "cupy":
            assert step.captured
        runs[name] = (model.state_dict(), losses)
    np.testing.assert_allclose(runs["cupy"][1], runs["numpy"][1], rtol=1e-4)
    for k, v in runs["numpy"][0].items():
        np.testing.assert_allclose(runs["cupy"][0][k], v, rtol=1e-3, atol=1e-5, err_msg=k)


def test_tf32_products_stay_within_tf32_rounding(cupy_backend):
    cp = cupy_backend.xp
    rng = np.random.default_rng(5)
    a = rng.standard_normal((256, 512)).astype(np.float32)
    b = rng.standard_normal((512, 384)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    out = cp.empty((256, 384), dtype=cp.float32)
    try:
        cupy_backend.set_tf32(True)
        cupy_backend.matmul(cp.asarray(a), cp.asarray(b), out)
    finally:
        cupy_backend.set_tf32(False)
    # inputs rounded to 10 mantissa bits: ~2^-11 relative per product, sqrt(k) growth
    np.testing.assert_allclose(cp.asnumpy(out), ref, atol=2 ** -10 * np.sqrt(512) * 4)
    cupy_backend.matmul(cp.asarray(a), cp.asarray(b), out)  # back to full fp32
    np.testing.assert_allclose(cp.asnumpy(out), ref, rtol=1e-4, atol=1e-3)


def test_fit_after_the_model_moved_to_the_gpu_with_an_optimizer_that_has_state():
    """fit checked the optimizer's state for NaN with the model's array module before the
    state followed the model (at its first step): a cupy ufunc on the NumPy moments raised
    TypeError. The second fit goes on from the first's moments, as on the CPU."""
    from gpunet.data import make_dataset

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5))
    data = make_dataset("t", x, (x[:, 0] > 0).astype(int), "classification")
    runs = {}
    for to in ("numpy", "cupy"):
        m = gn.MLP([5, 8, 2], backend="numpy", dtype=np.float64, seed=1)
        opt = gn.Adam(m)
        gn.fit(m, data, gn.CrossEntropyLoss(), opt, epochs=1, progress=False, seed=2)
        m.to(to)
        gn.fit(m, data, gn.CrossEntropyLoss(), opt, epochs=1, progress=False, seed=2)
        runs[to] = {k: m.backend.to_host(v) for k, v in m.params.items()}
    for k, v in runs["numpy"].items():
        np.testing.assert_allclose(runs["cupy"][k], v, rtol=1e-9, atol=1e-12)
