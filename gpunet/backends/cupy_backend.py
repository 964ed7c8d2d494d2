"""The GPU backend: CuPy arrays on the current CUDA device.

Built only through ``gpunet.get_backend``, which first proves that CuPy imports and that a
device really runs a kernel (see ``probe_cupy``).
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from ..log import notice
from .base import Backend
from .kernel_ops import KernelOps


def probe_cupy():
    """Return ``(cupy_module, None)`` if CuPy can run on a CUDA device here, else ``(None, why)``.

    "Works" means: CuPy imports, at least one device is visible, and a tiny allocation and
    elementwise kernel give the right answer. ``why`` is one short human-readable reason.
    """
    try:
        import cupy
    except ImportError as e:
        return None, f"CuPy is not installed ({e.name or e}); install gpunet[gpu] for a GPU"
    except Exception as e:  # a broken install can raise anything at import
        return None, f"CuPy failed to import: {type(e).__name__}: {e}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return None, f"no usable CUDA driver or device ({_first_line(e)})"
    if count < 1:
        return None, "CuPy found no CUDA device"
    try:
        got = int((cupy.arange(4, dtype=cupy.int32) * 2).sum())
    except Exception as e:
        return None, f"a test kernel failed on the CUDA device ({_first_line(e)})"
    if got != 12:
        return None, f"a test kernel on the CUDA device gave a wrong result ({got} != 12)"
    return cupy, None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# Fused optimiser updates: one pass per parameter, in float64 and rounded once on store, the
# math of Backend.sgd_update / adam_update (and of kernels/cpu_optim.py). lr and t come from
# the device array ``h`` = [lr, t], so that a captured graph reads this step's values.
_SGD_BODY = """
    double gi = (double)g + weight_decay * (double)p;
    if (momentum != 0.0) {
        double b = first ? gi : momentum * (double)buf + (1.0 - dampening) * gi;
        buf = (T)b;
        gi = nesterov ? gi + momentum * b : b;
    }
    p = (T)((double)p - h[0] * gi);
"""
_SGD_IN = ("T g, raw float64 h, float64 momentum, float64 dampening, bool nesterov, "
           "float64 weight_decay, bool first")
_ADAM_BODY = """
    double lr = h[0], t = h[1];
    double pi = (double)p, gi = (double)g;
    if (decoupled) { pi = pi * (1.0 - lr * weight_decay); } else { gi = gi + weight_decay * pi; }
    double mi = beta1 * (double)m + (1.0 - beta1) * gi;
    double vi = beta2 * (double)v + (1.0 - beta2) * gi * gi;
    m = (T)mi;
    v = (T)vi;
    double step_size = lr / (1.0 - pow(beta1, t));
    p = (T)(pi - step_size * mi / (sqrt(vi) / sqrt(1.0 - pow(beta2, t)) + eps));
"""
_ADAM_IN = ("T g, raw float64 h, float64 beta1, float64 beta2, float64 eps, "
            "float64 weight_decay, bool decoupled")

#: name -> (in params, out params, body) of each cupy.ElementwiseKernel (the bodies are also
#: compiled as host C++ by tests/test_cupy_kernel_bodies.py and held to the update rules there)
OPTIM_KERNELS = {
    "sgd": ("T g, raw float64 h, float64 weight_decay", "T p",
            "p = (T)((double)p - h[0] * ((double)g + weight_decay * (double)p));"),
    "sgd_momentum": (_SGD_IN, "T p, T buf", _SGD_BODY),
    "adam": (_ADAM_IN, "T p, T m, T v", _ADAM_BODY),
}


#: splitmix64 for the dropout kernel (gpunet.dropout documents the hash)
KERNEL_PREAMBLE = """
__device__ unsigned long long gpunet_mix(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
"""

#: the dropout mask, one thread an element: the key from the seed's part, the step (read from
#: the device, so that a captured graph draws new masks at each replay) and the layer; then the
#: element's hash against the bound (``base``: the first element's index in the whole batch)
DROPOUT_KERNEL = (
    "raw uint64 step, uint64 s0, uint64 layer, uint64 base, uint64 bound, float64 scale",
    "T m",
    "unsigned long long k = gpunet_mix(gpunet_mix(s0 ^ step[0]) ^ layer);"
    " m = (gpunet_mix(k + base + (unsigned long long)i) >> 40) < bound ? (T)scale : (T)0;")
#: the same mask from a key the host folded (an eager step, whose step count is a host int:
#: no copy of it to the device per layer)
DROPOUT_KEY_KERNEL = (
    "uint64 k, uint64 base, uint64 bound, float64 scale",
    "T m",
    "m = (gpunet_mix(k + base + (unsigned long long)i) >> 40) < bound ? (T)scale : (T)0;")


class CupyBackend(KernelOps, Backend):
    name = "cupy"
    kernel_module = "cuda_ops"
    # In eager ops, arrays below this size use CuPy's ops. A numba dispatcher launch costs
    # ~100 us of host time (anchors.md); cuda_ops now launches through CuPy instead, which
    # should make the fused kernels cheaper than CuPy's multi-op paths at every size: lower
    # this once a GPU run of scripts/bench_kernels.py has measured the host cost per call.
    # Static steps (a CUDA graph) take the kernels at every size (static_kernel_min_size).
    kernel_min_size = 1 << 18

    def __init__(self, cupy_module):
        self.xp = cupy_module
        self._blas = {}  # device id -> Cublas, or the reason there is none
        self._optim = None
        self._dropout = None
        self._dropout_key = None

    @property
    def device_name(self) -> str:
        cupy = self.xp
        dev = cupy.cuda.Device()
        try:
            name = cupy.cuda.runtime.getDeviceProperties(dev.id)["name"]
            name = name.decode() if isinstance(name, bytes) else name
        except Exception:
            name = "CUDA device"
        return f"cuda:{dev.id} ({name})"

    def to_host(self, a) -> np.ndarray:
        if isinstance(a, self.xp.ndarray):
            return self.xp.asnumpy(a)
        return np.asarray(a)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    # -- GEMM through our own cuBLAS handle (capturable) -----------------------------------

    def cublas(self):
        """This device's Cublas, made and checked against CuPy's matmul on first use; None
        (after one notice, gpunet.log) if that fails: CuPy's matmul then, and no graphs."""
        dev = self.xp.cuda.Device().id
        blas = self._blas.get(dev)
        if blas is None:
            from .cublas import Cublas

            try:
                blas = Cublas(self.xp)
                self._check_blas(blas)  # in full fp32, whatever the TF32 setting
                blas.set_tf32(self.tf32)
            except Exception as e:
                blas = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
                notice(f"own cuBLAS handle unavailable ({blas}); using CuPy's matmul and no "
                       "CUDA graphs")
            self._blas[dev] = blas
        return None if isinstance(blas, str) else blas

    def _check_blas(self, blas):
        cupy = self.xp
        rng = np.random.default_rng(0)
        for dtype in ("float32", "float64"):
            for ta in (False, True):
                for tb in (False, True):
                    a = rng.standard_normal((5, 3) if ta else (3, 5)).astype(dtype)
                    b = rng.standard_normal((4, 5) if tb else (5, 4)).astype(dtype)
                    ref = (a.T if ta else a) @ (b.T if tb else b)
                    out = cupy.full((3, 4), cupy.nan, dtype=dtype)
                    blas.gemm(cupy.asarray(a), cupy.asarray(b), out, ta, tb)
                    if not np.allclose(cupy.asnumpy(out), ref, rtol=1e-4, atol=1e-5):
                        raise RuntimeError(f"self-check gave a wrong product ({dtype}, "
                                           f"trans_a={ta}, trans_b={tb})")

    def set_tf32(self, on: bool) -> bool:
        self.tf32 = bool(on)
        for blas in self._blas.values():
            if not isinstance(blas, str):
                blas.set_tf32(self.tf32)
        return True

    def matmul(self, a, b, out, trans_a=False, trans_b=False):
        if (a.ndim == b.ndim == out.ndim == 2 and a.dtype == b.dtype == out.dtype
                and a.dtype.name in ("float32", "float64") and a.size and b.size and out.size
                and a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
            blas = self.cublas()
            if blas is not None:
                return blas.gemm(a, b, out, trans_a, trans_b)
        return super().matmul(a, b, out, trans_a, trans_b)

    # -- dropout ------------------------------------------------------------------------------

    def dropout_mask(self, out, p, s0, step, layer, row_offset=0):
        from .. import dropout

        xp = self.xp
        base, bound = np.uint64(row_offset * out.shape[1]), np.uint64(dropout.threshold(p))
        if not isinstance(step, xp.ndarray):  # eager: the key folded here
            if self._dropout_key is None:
                self._dropout_key = xp.ElementwiseKernel(
                    *DROPOUT_KEY_KERNEL, "gpunet_dropout_mask_key", preamble=KERNEL_PREAMBLE)
            self._dropout_key(np.uint64(dropout.key_of(s0, int(step), layer)), base, bound,
                              1.0 / (1.0 - p), out)
            return out
        if self._dropout is None:  # a static step's counter on the device
            self._dropout = xp.ElementwiseKernel(*DROPOUT_KERNEL, "gpunet_dropout_mask",
                                                 preamble=KERNEL_PREAMBLE)
        self._dropout(step, np.uint64(s0), np.uint64(layer), base, bound, 1.0 / (1.0 - p), out)
        return out

    # -- fused optimiser updates ------------------------------------------------------------

    def _optim_kernels(self):
        if self._optim is None:
            ek = self.xp.ElementwiseKernel
            self._optim = {name: ek(*spec, f"gpunet_{name}")
                           for name, spec in OPTIM_KERNELS.items()}
        return self._optim

    def sgd_update(self, p, g, buf, hyper, momentum, dampening, nesterov, weight_decay, first):
        k = self._optim_kernels()
        if momentum:
            k["sgd_momentum"](g, hyper, momentum, dampening, bool(nesterov), weight_decay,
                              bool(first), p, buf)
        else:
            k["sgd"](g, hyper, weight_decay, p)

    def adam_update(self, p, g, m, v, hyper, beta1, beta2, eps, weight_decay, decoupled):
        self._optim_kernels()["adam"](g, hyper, beta1, beta2, eps, weight_decay,
                                      bool(decoupled), p, m, v)

    # -- CUDA graphs ------------------------------------------------------------------------

    def capture(self, fn):
        """Capture ``fn`` into a CUDA graph; returns a callable that replays it on the current
        stream. Raises if the work cannot be captured (the caller then runs ``fn`` eagerly).

        Capture runs on a private stream with a private memory pool: any temporary an op
        allocates inside ``fn`` keeps its address for every replay, and nothing outside the
        graph can be handed that memory.
        """
        cupy = self.xp
        blas = self.cublas()
        if blas is None:
            raise RuntimeError("no capturable cuBLAS handle on this device")
        runtime = cupy.cuda.runtime
        stream = cupy.cuda.Stream(non_blocking=True)
        pool = cupy.cuda.MemoryPool()
        self.synchronize()
        with stream:  # stream and workspace set before the capture, as anchors.md did it
            blas.bind()
        with _numba_array_sync_off(), stream, cupy.cuda.using_allocator(pool.malloc):
            stream.begin_capture(getattr(runtime, "streamCaptureModeRelaxed", 2))
            try:
                fn()
            except BaseException:
                try:
                    stream.end_capture()
                except Exception:  # the capture was invalidated: the first error tells
                    pass
                raise
            graph = stream.end_capture()

        def replay():
            graph.launch(cupy.cuda.get_current_stream())

        replay.keep = (graph, stream, pool)  # alive as long as the replay is
        return replay


#: where numba-cuda versions keep CUDA_ARRAY_INTERFACE_SYNC (numba's own config, or
#: numba-cuda's; one module object may sit under both names)
_NUMBA_CONFIGS = ("numba.core.config", "numba.cuda.core.config")


@contextlib.contextmanager
def _numba_array_sync_off():
    """Stop numba synchronising the stream that a CuPy array names when a kernel takes it.

    That synchronisation is illegal on a capturing stream, and not needed there: the kernels
    launch on that very stream. Only numba's dispatcher path (a fallback) would do it.
    """
    saved = {}
    for name in _NUMBA_CONFIGS:
        config = sys.modules.get(name)
        if config is not None and id(config) not in saved \
                and hasattr(config, "CUDA_ARRAY_INTERFACE_SYNC"):
            saved[id(config)] = (config, config.CUDA_ARRAY_INTERFACE_SYNC)
            config.CUDA_ARRAY_INTERFACE_SYNC = 0
    try:
        yield
    finally:
        for config, value in saved.values():
            config.CUDA_ARRAY_INTERFACE_SYNC = value
