"""On a GPU: one static step of small nets through the CuPy backend with every size on the
fused kernels (each activation the kernels cover, with no norm, a layer norm and a batch
norm), then whether the kernels stayed on and how each launched: through CuPy from numba's
PTX (``cuda_ops.RAW_ERRORS`` empty), or through numba's dispatcher after a failure (a driver
older than the PTX, say), which `scripts/gpu-check` must not miss. Exit status 1 where the
kernels are off or a launch fell back."""

from __future__ import annotations

import sys

import numpy as np

import gpunet as gn


def main() -> int:
    try:
        backend = gn.get_backend("cupy")
    except gn.GpunetError as e:
        print(f"kernel health: {e}")
        return 1
    from gpunet.kernels import cuda_ops

    backend.kernel_min_size = 0
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.normal(size=(64, 20)).astype(np.float32))
    y = backend.asarray(rng.integers(0, 5, 64))
    for norm in (None, "layer", "batch"):
        for activation in ("relu", "tanh", "sigmoid", "gelu", "silu"):
            model = gn.MLP([20, 48, 5], activation=activation, norm=norm, backend=backend,
                           seed=0)
            step = gn.StaticStep(model, gn.CrossEntropyLoss(), gn.Adam(model), 64)
            for _ in range(3):
                step(x, y)
    backend.synchronize()
    off = backend._kernels_off
    print(f"kernel health: kernels {'off (' + off + ')' if off else 'on'}; "
          f"{len(cuda_ops._raw)} launched through CuPy, {len(cuda_ops.RAW_ERRORS)} failed")
    for key, why in cuda_ops.RAW_ERRORS.items():
        print(f"  {key}: {why}")
    if cuda_ops.CUBIN_LOADS:  # launched through CuPy all the same, from numba's cubin
        key, why = next(iter(cuda_ops.CUBIN_LOADS.items()))
        print(f"  {len(cuda_ops.CUBIN_LOADS)} loaded as numba's cubin, their PTX refused "
              f"(first: {key}: {why}); {_versions()}")
    return 1 if off or cuda_ops.RAW_ERRORS else 0


def _versions() -> str:
    """The driver's CUDA version and the PTX ISA version numba's NVVM writes."""
    import re

    import cupy

    from gpunet.kernels import cuda_ops

    d = cupy.cuda.runtime.driverGetVersion()
    _, fn, sig = cuda_ops.kernel_sources()[0]
    ptx, _ = cuda_ops._numba_cuda().compile_ptx(fn, sig)
    isa = re.search(r"^\.version\s+(\S+)", ptx, re.M)
    return f"driver CUDA {d // 1000}.{d % 1000 // 10}, PTX ISA {isa.group(1) if isa else '?'}"


if __name__ == "__main__":
    sys.exit(main())
