"""The backend's kernel wiring (gpunet.backends.kernel_ops) driving the numba.cuda kernels.

On a CPU machine this runs in the CUDA simulator: a backend whose arrays are numpy arrays but
whose kernel module is ``cuda_ops`` goes through exactly the KernelOps code the CuPy backend
uses, so the routing, output allocation and argument order are tested without a GPU. The
reference is the base class's NumPy math (and finite differences through gradcheck).
"""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.backends.base import Backend
from gpunet.backends.kernel_ops import KERNEL_ACTIVATIONS, KernelOps


class SimCuda(KernelOps, Backend):
    name = "cuda-sim"
    xp = np
    kernel_module = "cuda_ops"
    kernel_min_size = 0

    @property
    def device_name(self):
        return "numba.cuda (simulator or device via numpy arrays)"


class Plain(Backend):
    name = "plain"
    xp = np
    device_name = "cpu"


from conftest import CUPY_OK, CUPY_REASON, MODE  # noqa: E402


def _kernel_backend():
    """Under the simulator: SimCuda on numpy arrays. On a GPU: the real CuPy backend with every
    size routed to the kernels."""
    if MODE == "sim":
        return SimCuda()
    if not CUPY_OK:
        pytest.skip(CUPY_REASON)
    import cupy

    from gpunet.backends.cupy_backend import CupyBackend

    b = CupyBackend(cupy)
    b.kernel_min_size = 0
    return b


@pytest.fixture(scope="module")
def SIM():
    return _kernel_backend()


PLAIN = Plain()
RTOL = {np.float32: 2e-6, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", KERNEL_ACTIVATIONS + ("softmax",))
def test_activation_ops_route_to_kernels_and_match(SIM, name, dtype):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(9, 37)).astype(dtype)
    dy = rng.normal(size=z.shape).astype(dtype)
    zd, dyd = SIM.asarray(z), SIM.asarray(dy)
    # (gelu_tanh's 1 + tanh(u) cancels for z << 0 in NumPy's float32; the simulated kernel
    # computes in Python floats)
    atol = 1e-6 if name == "gelu_tanh" and dtype == np.float32 else 1e-7
    y = SIM.act_forward(name, zd, 0.05)
    np.testing.assert_allclose(SIM.to_host(y), PLAIN.act_forward(name, z, 0.05),
                               rtol=RTOL[dtype], atol=atol)
    got = SIM.act_backward(name, dyd, zd, y, 0.05)
    ref = PLAIN.act_backward(name, dy, z, SIM.to_host(y), 0.05)
    np.testing.assert_allclose(SIM.to_host(got), ref, rtol=RTOL[dtype], atol=atol)
    assert SIM._kernels_off == ""  # the kernels ran, no fallback


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rowwise_ops_route_to_kernels_and_match(SIM, dtype):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(7, 45)) * 5).astype(dtype)
    labels = rng.integers(0, 45, 7)
    xd, ld = SIM.asarray(x), SIM.asarray(labels)
    for op in ("logsumexp", "log_softmax", "softmax"):
        np.testing.assert_allclose(SIM.to_host(getattr(SIM, op)(xd)), getattr(PLAIN, op)(x),
                                   rtol=RTOL[dtype], atol=1e-6, err_msg=op)
    loss, grad = SIM.softmax_cross_entropy(xd, ld, 1 / 7)
    ref_loss, ref_grad = PLAIN.softmax_cross_entropy(x, labels, 1 / 7)
    np.testing.assert_allclose(SIM.to_host(loss), ref_loss, rtol=RTOL[dtype], atol=1e-6)
    np.testing.assert_allclose(SIM.to_host(grad), ref_grad, rtol=RTOL[dtype], atol=1e-7)
    assert SIM._kernels_off == ""


@pytest.mark.parametrize("activation, output, loss", [("relu", "identity", "cross_entropy"),
                                                      ("tanh", "sigmoid", "bce"),
                                                      ("leaky_relu", "softmax", "mse")])
def test_mlp_step_through_the_kernels_matches_the_array_module(SIM, activation, output, loss):
    """A whole forward/backward of an MLP on the kernel backend equals the NumPy one."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 5))
    y = (rng.integers(0, 3, 6) if loss == "cross_entropy"
         else rng.uniform(0.1, 0.9, (6, 3)) if loss == "bce" else rng.normal(size=(6, 3)))
    grads = {}
    for b in (SIM, PLAIN):
        model = gn.MLP([5, 7, 3], activation=activation, output=output, backend=b,
                       dtype="float64", seed=2)
        y_hat = model.forward(x)
        _, g = gn.get_loss(loss)(y_hat, y)
        dx = model.backward(g)
        grads[b.name] = {**{k: b.to_host(v) for k, v in model.grads.items()},
                         "x": b.to_host(dx), "y_hat": b.to_host(y_hat)}
    for k, ref in grads["plain"].items():
        np.testing.assert_allclose(grads[SIM.name][k], ref, rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("activation, output, loss", [("relu", "identity", "cross_entropy"),
                                                      ("sigmoid", "tanh", "mse")])
def test_static_step_writes_through_the_kernels_into_its_buffers(SIM, activation, output, loss):
    """gpunet.step.StaticStep hands the kernels its own buffers as ``out`` (in place for the
    backward): its steps equal eager steps on the array-module backend."""
    from gpunet.step import StaticStep

    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6))
    y = rng.integers(0, 4, 40) if loss == "cross_entropy" else rng.normal(size=(40, 4))
    runs = {}
    for b in (SIM, PLAIN):
        model = gn.MLP([6, 9, 4], activation=activation, output=output, backend=b,
                       dtype="float64", seed=3)
        opt = gn.Adam(model, lr=1e-2)
        loss_fn = gn.get_loss(loss)
        xd, yd = b.asarray(x), b.asarray(y)
        step = StaticStep(model, loss_fn, opt, 8, count_correct=loss == "cross_entropy")
        losses = []
        for s in range(4):
            rows = b.asarray(np.arange(s * 8, s * 8 + 8))
            if b is SIM:
                losses.append(float(step(xd, yd, rows)[0]))
            else:
                losses.append(float(model.train_step(xd[rows], yd[rows], loss_fn, opt)))
        runs[b.name] = ({k: b.to_host(v) for k, v in model.params.items()}, losses)
    np.testing.assert_allclose(runs[SIM.name][1], runs["plain"][1], rtol=1e-12)
    for k, ref in runs["plain"][0].items():
        np.testing.assert_allclose(runs[SIM.name][0][k], ref, rtol=1e-12, atol=1e-14, err_msg=k)
    assert SIM._kernels_off == ""


def test_cupy_arrays_launch_through_cupy_not_numbas_dispatcher():
    """On a GPU, cupy arrays take the CuPy launch path (flat parameters, no numba dispatch)."""
    if MODE != "gpu" or not CUPY_OK:
        pytest.skip(CUPY_REASON if MODE == "gpu" else "needs a GPU and cupy")
    import cupy

    from gpunet.kernels import cuda_ops

    z = np.random.default_rng(0).normal(size=(3, 1000)).astype(np.float32)
    out = cupy.full(z.shape, cupy.nan, dtype=cupy.float32)
    cuda_ops.act_forward("sigmoid", cupy.asarray(z), out, 0.0)
    key = (("act_forward", "sigmoid", np.dtype(np.float32)), cupy.cuda.Device().id)
    assert cuda_ops._raw.get(key), cuda_ops.RAW_ERRORS
    np.testing.assert_allclose(out.get(), 1 / (1 + np.exp(-z.astype(np.float64))), rtol=2e-6)


def test_a_refused_ptx_loads_numbas_cubin_and_computes_the_same():
    """A driver older than the PTX's ISA refuses to JIT it: the kernel is loaded from the cubin
    numba links for its own launch, and still launches through CuPy with the same numbers."""
    if MODE != "gpu" or not CUPY_OK:
        pytest.skip(CUPY_REASON if MODE == "gpu" else "needs a GPU and cupy")
    import types

    import cupy

    from gpunet.kernels import cuda_ops

    class PickyModule:  # a driver that takes no PTX, only the cubin (an ELF file)
        def __init__(self):
            self.module = cupy.cuda.function.Module()

        def load(self, code):
            if not bytes(code[:4]) == b"\x7fELF":
                raise RuntimeError("CUDA_ERROR_UNSUPPORTED_PTX_VERSION (the test's driver)")
            self.module.load(code)

        def get_function(self, name):
            return self.module.get_function(name)

    picky = types.SimpleNamespace(cuda=types.SimpleNamespace(
        Device=cupy.cuda.Device, function=types.SimpleNamespace(Module=PickyModule)))
    key = ("act_forward", "gelu", np.dtype(np.float32))
    cuda_ops._raw.pop((key, cupy.cuda.Device().id), None)
    try:
        fn, plan, _ = cuda_ops._raw_kernel(key, picky)
        assert "UNSUPPORTED_PTX_VERSION" in cuda_ops.CUBIN_LOADS[key]
        z = cupy.asarray(np.random.default_rng(1).normal(size=70001).astype(np.float32))
        via_cubin = cupy.full_like(z, cupy.nan)
        fn((cuda_ops._flat_grid(z.size),), (cuda_ops.ELEMENTWISE_THREADS,),
           cuda_ops.marshal(plan, (z, via_cubin, np.float32(0))))
    finally:
        cuda_ops._raw.pop((key, cupy.cuda.Device().id), None)
        cuda_ops.CUBIN_LOADS.pop(key, None)
    via_ptx = cuda_ops.act_forward("gelu", z, cupy.full_like(z, cupy.nan), 0.0)
    assert cuda_ops._raw.get((key, cupy.cuda.Device().id)), cuda_ops.RAW_ERRORS
    np.testing.assert_array_equal(via_cubin.get(), via_ptx.get())
