"""What the stand-in sets in gpunet, in every process that imports it (ranks under mpiexec too).

- ``gpunet.backends.cublas`` loads ``HostCublas`` instead of libcublas, so gpunet's own
  ``Cublas`` runs (handle, workspace, stream binding, ``gemm_args``' column-major mapping, the
  math mode) and its GEMMs reach this: the six entry points gpunet declares, computing on the
  host from the pointers and leading dimensions they are given, the way cuBLAS reads them.
  A pointer outside every live device array fails (cudaErrorIllegalAddress), as does a GEMM on
  a handle bound to another stream than the capturing one, whose work would run outside the
  graph. Stricter than cuBLAS: a handle bound to another stream than the current one fails
  too (on a GPU the GEMM would be unordered with the work around it: a race, not an error).
- ``CupyBackend``'s numba.cuda kernels are off (``GPUNET_KERNELS=0`` for it alone): they need a
  GPU, and ``tests/cuda_kernels`` runs them under numba's simulator. The NumPy backend keeps
  its CPU kernels, the references the GPU tests compare with.
"""

from __future__ import annotations

import ctypes

import numpy as np

from . import _core

KERNELS_OFF = ("the strict CuPy stand-in has no GPU for numba.cuda kernels "
               "(tests/cuda_kernels runs them under numba's simulator)")
#: cuBLAS's status codes gpunet can see
_OK, _INVALID_VALUE = 0, 7
_TF32_TENSOR_OP_MATH = 3


def install() -> None:
    try:
        from gpunet.backends import cublas
        from gpunet.backends.cupy_backend import CupyBackend
    except ImportError:  # (the stand-in imported where gpunet is not)
        return
    cublas._load_library = HostCublas
    CupyBackend._kernels_off = KERNELS_OFF


class HostCublas:
    """libcublas as gpunet calls it (``gpunet.backends.cublas._declare``'s six functions)."""

    def __init__(self):
        self.stream, self.mode = 0, 0

        def create(handle):
            return _OK

        def set_stream(handle, stream):
            self.stream = int(stream or 0)
            return _OK

        def set_workspace(handle, ptr, size):
            _core.buffer_at(int(ptr), int(size))
            return _OK

        def set_math_mode(handle, mode):
            self.mode = int(mode)
            return _OK

        # (plain functions: _declare sets argtypes and restype on each)
        self.cublasCreate_v2, self.cublasSetStream_v2 = create, set_stream
        self.cublasSetWorkspace_v2, self.cublasSetMathMode = set_workspace, set_math_mode
        self.cublasSgemm_v2 = lambda *args: self._gemm(np.float32, *args)
        self.cublasDgemm_v2 = lambda *args: self._gemm(np.float64, *args)

    def _gemm(self, dtype, handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c,
              ldc):
        """C = alpha op(A) op(B) + beta C, column-major: C is m x n (leading dim ldc), op(A)
        m x k, op(B) k x n; A is stored m x k if transa is N (0) else k x m, B likewise."""
        current = _core.current_stream()
        current = 0 if current is None else current.ptr
        capture = _core.capturing()
        if capture is not None and self.stream != capture.stream.ptr:
            raise _core.CUDARuntimeError(
                "cudaErrorStreamCaptureIsolation", f"a cuBLAS handle bound to stream "
                f"{self.stream:#x} while {capture.stream.ptr:#x} captures: its GEMM would "
                "run outside the graph")
        if self.stream != current:
            raise RuntimeError(f"strict CuPy stand-in: a cuBLAS handle bound to stream "
                               f"{self.stream:#x} called while the current stream is "
                               f"{current:#x}: its GEMM is unordered with the work around it")
        dims = ((m, k) if transa == 0 else (k, m), (k, n) if transb == 0 else (n, k), (m, n))
        if min(m, n, k) < 0 or any(ld < max(1, rows) for ld, (rows, _) in
                                   zip((lda, ldb, ldc), dims)):
            return _INVALID_VALUE
        mats = [_matrix(ptr, rows, cols, ld, dtype) for ptr, (rows, cols), ld in
                zip((a, b, c), dims, (lda, ldb, ldc))]
        tf32 = self.mode == _TF32_TENSOR_OP_MATH and dtype == np.float32
        scale, keep = dtype(alpha._obj.value), dtype(beta._obj.value)

        def again():
            op_a = mats[0] if transa == 0 else mats[0].T
            op_b = mats[1] if transb == 0 else mats[1].T
            if tf32:
                op_a, op_b = _tf32(op_a), _tf32(op_b)
            product = scale * (op_a @ op_b)
            mats[2][...] = product if keep == 0 else product + keep * mats[2]

        _core.before_write(mats[2])
        again()
        _core.record(again)
        return _OK


def _matrix(ptr, rows, cols, ld, dtype):
    """The column-major rows x cols matrix at ``ptr`` (leading dimension ``ld``), as a view
    of the device array that holds it."""
    size = np.dtype(dtype).itemsize
    nbytes = ((cols - 1) * ld + rows) * size if rows and cols else 0
    owner = _core.buffer_at(int(ptr), nbytes) if nbytes else None
    if owner is None:
        return np.empty((rows, cols), dtype)
    memory = (ctypes.c_char * nbytes).from_address(int(ptr))
    view = np.ndarray((rows, cols), dtype, buffer=memory, strides=(size, ld * size))
    return _Held(view, owner)


class _Held(np.ndarray):
    """A view that keeps the device array it looks into alive (a graph holds its buffers)."""

    def __new__(cls, view, owner):
        held = view.view(cls)
        held.owner = owner
        return held


def _tf32(x):
    """float32 rounded to TF32's 10 mantissa bits (round to nearest), as tensor cores take it."""
    bits = np.ascontiguousarray(x).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)
