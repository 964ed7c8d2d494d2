"""The CPU backend: NumPy arrays; activations and the row-wise softmax ops run as numba.njit
kernels (gpunet.kernels.cpu_ops, with the layer norm's from cpu_norm), as do the optimiser
updates (cpu_optim) and dropout masks (cpu_dropout), from 2^16 elements up; everything else as
the base class's NumPy ops."""

from __future__ import annotations

import platform

import numpy as np

from .base import Backend
from .kernel_ops import KernelOps


class NumpyBackend(KernelOps, Backend):
    name = "numpy"
    xp = np
    kernel_module = "cpu_ops"  # numba.njit twins; each beat NumPy in docs/benchmarks.md
    optim_module = "cpu_optim"  # fused SGD / Adam updates
    # Smaller arrays stay on NumPy's ops, eager and static alike. A kernel saves a few us per
    # call there but compiles once per process (0.1-0.5 s each; numba's on-disk cache stores
    # pickles, so it stays off): `gpunet train --dataset digits` took 2.2 s with every size on
    # the kernels and 0.9 s with this, for the same accuracy; the B=128 784-256-10 benchmark
    # step, whose activations fall under it, pays 0.03-0.05 ms (docs/benchmarks.md).
    kernel_min_size = static_kernel_min_size = 1 << 16
    evaluate_on_array_ops = True

    @property
    def device_name(self) -> str:
        return f"cpu ({platform.machine() or 'unknown'})"

    def _configure_kernels(self, module) -> None:
        # Between two BLAS calls, a numba parallel region and OpenBLAS's threads fight over the
        # cores: a training step measured 10x slower on 2 cores. The fused ops are memory-bound
        # and cheap next to the GEMMs, so in the backend they run on one thread.
        module.PARALLEL_MIN_SIZE = 1 << 62

    def asarray(self, a, dtype=None):
        if type(a).__module__.split(".")[0] == "cupy":  # a device array: copy it to the host
            a = a.get()
        return np.asarray(a, dtype=dtype)

    def to_host(self, a) -> np.ndarray:
        return self.asarray(a)

    def dropout_mask(self, out, p, s0, step, layer, row_offset=0):
        if self._fit(out):  # one pass (kernels/cpu_dropout.py), the same bits
            from .. import dropout

            module = self._module("cpu_dropout")
            if module is not None and self._run(
                    "dropout_mask", out.reshape(-1), s0, int(step), layer,
                    row_offset * out.shape[1], dropout.threshold(p), 1.0 / (1.0 - p),
                    module=module) is not None:
                return out
        return super().dropout_mask(out, p, s0, step, layer, row_offset)

    def sum_of_squares(self, a):
        flat = a.reshape(-1)  # a view of a contiguous array: BLAS's dot, no temporary
        return np.vdot(flat, flat)
