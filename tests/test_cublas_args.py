"""The row-major -> cuBLAS column-major argument mapping of gpunet.backends.cublas, checked on
the CPU by a reference that reads flat buffers the way cuBLAS's GEMM does. The calls
themselves run in the GPU tests (tests/test_gpu_paths.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from gpunet.backends.cublas import CUBLAS_OP_N, CUBLAS_OP_T, gemm_args


def _col_major(buf, rows, cols, ld):
    """The rows x cols column-major matrix at ``buf`` with leading dimension ``ld``."""
    assert ld >= max(1, rows)
    assert buf.size >= ld * (cols - 1) + rows  # cuBLAS would read past the buffer otherwise
    return np.array([[buf[i + j * ld] for j in range(cols)] for i in range(rows)])


def _reference_gemm(transa, transb, m, n, k, A, lda, B, ldb, C, ldc):
    """C = op(A) op(B), as cublas<t>gemm with alpha 1, beta 0, on flat buffers."""
    a = _col_major(A, *((m, k) if transa == CUBLAS_OP_N else (k, m)), lda)
    b = _col_major(B, *((k, n) if transb == CUBLAS_OP_N else (n, k)), ldb)
    a = a if transa == CUBLAS_OP_N else a.T
    b = b if transb == CUBLAS_OP_N else b.T
    assert ldc >= max(1, m)
    c = a @ b
    for j in range(n):
        C[j * ldc:j * ldc + m] = c[:, j]


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, k, n", [(3, 5, 4), (1, 7, 2), (6, 1, 3), (33, 17, 9)])
def test_gemm_args_give_the_row_major_product(trans_a, trans_b, m, k, n):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    transa, transb, mm, nn, kk, lda, ldb, ldc, shape = gemm_args(a.shape, b.shape, trans_a,
                                                                 trans_b)
    assert shape == (m, n)
    out = np.full(m * n, np.nan)
    # the call passes b's buffer as cuBLAS's A and a's as its B (see the module docstring)
    _reference_gemm(transa, transb, mm, nn, kk, b.reshape(-1), lda, a.reshape(-1), ldb, out, ldc)
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b)
    np.testing.assert_allclose(out.reshape(m, n), expected, rtol=1e-12)


def test_the_layer_gemms_map_to_the_expected_calls():
    """z = x W^T, dW = dz^T x, dx = dz W for x (B, in), W (out, in): the op flags cuBLAS gets."""
    B, n_in, n_out = 8, 5, 3
    assert gemm_args((B, n_in), (n_out, n_in), trans_b=True)[:2] == (CUBLAS_OP_T, CUBLAS_OP_N)
    assert gemm_args((B, n_out), (B, n_in), trans_a=True)[:2] == (CUBLAS_OP_N, CUBLAS_OP_T)
    assert gemm_args((B, n_out), (n_out, n_in))[:2] == (CUBLAS_OP_N, CUBLAS_OP_N)


def test_mismatched_inner_dimensions_are_refused():
    with pytest.raises(ValueError, match="op\\(a\\) is 3x4 but op\\(b\\) is 5x2"):
        gemm_args((3, 4), (5, 2))


class _FakeLib:
    """Stands in for libcublas: records the calls, computes the GEMM with the reference."""

    def __init__(self, memory):
        self.calls = []
        self.memory = memory  # pointer -> flat numpy buffer

    def __getattr__(self, name):
        if not name.startswith("cublas"):
            raise AttributeError(name)
        fake = self

        class _Fn:
            argtypes = restype = None

            def __call__(self, *args):
                fake.calls.append((name, args))
                if name == "cublasCreate_v2":
                    args[0]._obj.value = 0xAB
                elif name in ("cublasSgemm_v2", "cublasDgemm_v2"):
                    h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc = args
                    assert alpha._obj.value == 1 and beta._obj.value == 0
                    _reference_gemm(ta, tb, m, n, k, fake.memory[A], lda, fake.memory[B], ldb,
                                    fake.memory[C], ldc)
                return 0

        fn = _Fn()
        setattr(self, name, fn)
        return fn


class _FakeArray:
    """A C-contiguous device array as Cublas sees it: shape, dtype and data.ptr."""

    def __init__(self, a, memory):
        self.host = np.ascontiguousarray(a)
        self.shape, self.dtype = self.host.shape, self.host.dtype
        self.data = type("Mem", (), {"ptr": 0x1000 * (len(memory) + 1)})()
        memory[self.data.ptr] = self.host.reshape(-1)


def test_cublas_gemm_passes_b_then_a_and_binds_each_new_stream_once(monkeypatch):
    """... and set_tf32 switches the handle's math mode."""
    from types import SimpleNamespace

    from gpunet.backends import cublas as cb

    memory = {}
    lib = _FakeLib(memory)
    monkeypatch.setattr(cb, "_load_library", lambda: lib)
    stream = SimpleNamespace(ptr=0)
    fake_cupy = SimpleNamespace(
        uint8=np.uint8,
        empty=lambda n, dtype: _FakeArray(np.zeros(n, dtype), memory),
        cuda=SimpleNamespace(get_current_stream=lambda: stream))
    blas = cb.Cublas(fake_cupy)
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for ta in (False, True):
            for tb in (False, True):
                a = rng.standard_normal((7, 3) if ta else (3, 7)).astype(dtype)
                b = rng.standard_normal((5, 7) if tb else (7, 5)).astype(dtype)
                out = _FakeArray(np.full((3, 5), np.nan, dtype), memory)
                assert blas.gemm(_FakeArray(a, memory), _FakeArray(b, memory), out, ta, tb) is out
                expected = (a.T if ta else a) @ (b.T if tb else b)
                np.testing.assert_allclose(out.host, expected, rtol=1e-6)
        stream.ptr = 0x5000  # a capture stream, say: bind once more, workspace again
    names = [c[0] for c in lib.calls]
    assert names.count("cublasCreate_v2") == 1
    binds = [c[1][1] for c in lib.calls if c[0] == "cublasSetStream_v2"]
    assert binds == [0, 0x5000]
    # every bind is followed by the workspace: cublasSetStream resets it
    for i, name in enumerate(names):
        if name == "cublasSetStream_v2":
            assert names[i + 1] == "cublasSetWorkspace_v2"
            assert lib.calls[i + 1][1][2] == cb.WORKSPACE_BYTES
    assert names.count("cublasSgemm_v2") == names.count("cublasDgemm_v2") == 4
    blas.set_tf32(True)
    blas.set_tf32(False)
    assert [c[1][1] for c in lib.calls if c[0] == "cublasSetMathMode"] == [
        cb.CUBLAS_TF32_TENSOR_OP_MATH, cb.CUBLAS_DEFAULT_MATH]
    with pytest.raises(ValueError, match="out is"):
        blas.gemm(_FakeArray(np.ones((2, 3), np.float32), memory),
                  _FakeArray(np.ones((3, 4), np.float32), memory),
                  _FakeArray(np.ones((4, 2), np.float32), memory))


def test_capture_turns_off_numba_array_sync_in_every_config_and_restores_it(monkeypatch):
    """numba synchronises the stream a CuPy array names, illegal while that stream captures;
    numba-cuda keeps the switch in its own config module or in numba's, so both are set."""
    import types

    from gpunet.backends import cupy_backend

    ours = types.SimpleNamespace(CUDA_ARRAY_INTERFACE_SYNC=1)
    numbas = types.SimpleNamespace(CUDA_ARRAY_INTERFACE_SYNC=True)
    monkeypatch.setitem(sys.modules, "numba.core.config", numbas)
    monkeypatch.setitem(sys.modules, "numba.cuda.core.config", ours)
    with cupy_backend._numba_array_sync_off():
        assert ours.CUDA_ARRAY_INTERFACE_SYNC == 0 and numbas.CUDA_ARRAY_INTERFACE_SYNC == 0
    assert ours.CUDA_ARRAY_INTERFACE_SYNC == 1 and numbas.CUDA_ARRAY_INTERFACE_SYNC is True
    # one module under both names, an error inside: restored all the same
    monkeypatch.setitem(sys.modules, "numba.core.config", ours)
    with pytest.raises(RuntimeError):
        with cupy_backend._numba_array_sync_off():
            assert ours.CUDA_ARRAY_INTERFACE_SYNC == 0
            raise RuntimeError("capture failed")
    assert ours.CUDA_ARRAY_INTERFACE_SYNC == 1
