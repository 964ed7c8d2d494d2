"""The GPU backend: CuPy arrays on the current CUDA device.

Built only through ``gpunet.get_backend``, which first proves that CuPy imports and that a
device really runs a kernel (see ``probe_cupy``).
"""

from __future__ import annotations

import numpy as np

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


class CupyBackend(KernelOps, Backend):
    name = "cupy"
    kernel_module = "cuda_ops"
    # A numba.cuda launch still costs ~100 us of host time (anchors.md) against ~10 us for a
    # CuPy op, so small arrays stay on CuPy's ops until the low-level launch path lands.
    kernel_min_size = 1 << 18

    def __init__(self, cupy_module):
        self.xp = cupy_module

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
