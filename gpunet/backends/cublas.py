"""cuBLAS GEMM through its C API, for the CuPy backend.

CuPy refuses to call cuBLAS while a stream is being captured into a CUDA graph (its
``setStream`` raises; cupy issue #6290), yet cuBLAS itself captures fine when it is called on
a handle bound to the capturing stream with a workspace set beforehand (anchors.md: a whole
training step captured this way replayed in 68 us on an H200). So the CuPy backend's GEMMs,
eager and captured alike, go through a handle of its own, called with ctypes.

Row-major arrays are column-major transposes: out = op(a) op(b) in row-major terms is
out^T = op(b)^T op(a)^T in cuBLAS's column-major terms, so the call passes b's buffer first.
``gemm_args`` does that mapping and is tested on the CPU against a column-major reference;
the calls themselves need a GPU (``scripts/gpu-check``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

CUBLAS_OP_N = 0
CUBLAS_OP_T = 1
CUBLAS_DEFAULT_MATH = 0
CUBLAS_TF32_TENSOR_OP_MATH = 3
#: workspace given to the handle before any capture (cuBLAS asks for >= 32 MiB on Hopper)
WORKSPACE_BYTES = 32 << 20


def gemm_args(a_shape, b_shape, trans_a=False, trans_b=False):
    """cuBLAS arguments for out = op(a) op(b) on C-contiguous (row-major) 2-D arrays.

    Returns ``(transa, transb, m, n, k, lda, ldb, ldc, out_shape)`` for a column-major call
    ``C = op_a(A) op_b(B)`` whose A is b's buffer and B is a's buffer: C (m x n, column-major,
    ld m) is then out (n x m, row-major). Leading dimensions are at least 1, as cuBLAS asks.
    """
    ra, ca = a_shape
    rb, cb = b_shape
    rows, inner = (ca, ra) if trans_a else (ra, ca)
    inner_b, cols = (cb, rb) if trans_b else (rb, cb)
    if inner != inner_b:
        raise ValueError(f"matmul: op(a) is {rows}x{inner} but op(b) is {inner_b}x{cols}")
    return (CUBLAS_OP_T if trans_b else CUBLAS_OP_N, CUBLAS_OP_T if trans_a else CUBLAS_OP_N,
            cols, rows, inner, max(1, cb), max(1, ca), max(1, cols), (rows, cols))


def _load_library():
    """libcublas: the one CuPy loaded if cuda.pathfinder finds it, else the loader's."""
    errors = []
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        return ctypes.CDLL(load_nvidia_dynamic_lib("cublas").abs_path)
    except Exception as e:  # not installed, or no wheel-shipped cuBLAS: try the loader
        errors.append(f"cuda.pathfinder: {e}")
    names = ["libcublas.so.13", "libcublas.so.12", "libcublas.so"]
    found = ctypes.util.find_library("cublas")
    if found:
        names.insert(0, found)
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            errors.append(str(e))
    raise OSError("cuBLAS library not found (" + "; ".join(errors) + ")")


def _declare(lib):
    c_int, c_void_p, c_size_t = ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
    lib.cublasCreate_v2.argtypes = [ctypes.POINTER(c_void_p)]
    lib.cublasSetStream_v2.argtypes = [c_void_p, c_void_p]
    lib.cublasSetWorkspace_v2.argtypes = [c_void_p, c_void_p, c_size_t]
    lib.cublasSetMathMode.argtypes = [c_void_p, c_int]
    for name, scalar in (("cublasSgemm_v2", ctypes.c_float), ("cublasDgemm_v2", ctypes.c_double)):
        getattr(lib, name).argtypes = [
            c_void_p, c_int, c_int, c_int, c_int, c_int, ctypes.POINTER(scalar), c_void_p, c_int,
            c_void_p, c_int, ctypes.POINTER(scalar), c_void_p, c_int]
    for name in ("cublasCreate_v2", "cublasSetStream_v2", "cublasSetWorkspace_v2",
                 "cublasSetMathMode", "cublasSgemm_v2", "cublasDgemm_v2"):
        getattr(lib, name).restype = c_int


class CublasError(RuntimeError):
    pass


def _check(status, what):
    if status != 0:
        raise CublasError(f"{what} failed with cuBLAS status {status}")


class Cublas:
    """One cuBLAS handle on the current device, bound to CuPy's current stream at each call."""

    def __init__(self, cupy):
        self._cupy = cupy
        self._lib = lib = _load_library()
        _declare(lib)
        handle = ctypes.c_void_p()
        _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self._handle = handle
        self._workspace = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)
        self._stream = None
        # The handle is shared by the threads of a process (one backend instance), each with
        # its own CuPy current stream: binding and the GEMM on it go together, one thread at
        # a time (cuBLAS: a handle's settings apply to every thread's calls).
        self._lock = threading.RLock()
        self._gemm = {
            "float32": (lib.cublasSgemm_v2, ctypes.c_float(1.0), ctypes.c_float(0.0)),
            "float64": (lib.cublasDgemm_v2, ctypes.c_double(1.0), ctypes.c_double(0.0)),
        }

    def set_tf32(self, on: bool) -> None:
        """Let float32 GEMMs round their inputs to TF32 and use tensor cores (or stop)."""
        mode = CUBLAS_TF32_TENSOR_OP_MATH if on else CUBLAS_DEFAULT_MATH
        with self._lock:
            _check(self._lib.cublasSetMathMode(self._handle, mode), "cublasSetMathMode")

    def bind(self):
        """Bind the handle (and its workspace) to CuPy's current stream, if not bound yet."""
        ptr = self._cupy.cuda.get_current_stream().ptr
        with self._lock:
            if ptr != self._stream:
                lib = self._lib
                _check(lib.cublasSetStream_v2(self._handle, ptr), "cublasSetStream")
                # cublasSetStream resets the workspace to cuBLAS's own pool, which would
                # allocate during a capture: give it ours again.
                _check(lib.cublasSetWorkspace_v2(self._handle, self._workspace.data.ptr,
                                                 WORKSPACE_BYTES), "cublasSetWorkspace")
                self._stream = ptr

    def gemm(self, a, b, out, trans_a=False, trans_b=False):
        """out = op(a) op(b) for C-contiguous float32/float64 CuPy arrays; returns out."""
        transa, transb, m, n, k, lda, ldb, ldc, shape = gemm_args(a.shape, b.shape, trans_a,
                                                                 trans_b)
        if tuple(out.shape) != shape:
            raise ValueError(f"matmul: out is {tuple(out.shape)}, the product is {shape}")
        fn, one, zero = self._gemm[a.dtype.name]
        with self._lock:
            self.bind()
            _check(fn(self._handle, transa, transb, m, n, k, ctypes.byref(one), b.data.ptr,
                      lda, a.data.ptr, ldb, ctypes.byref(zero), out.data.ptr, ldc), "gemm")
        return out
