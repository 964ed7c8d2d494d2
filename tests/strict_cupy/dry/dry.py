"""scripts/gpu-dry: scripts/gpu-check's GPU paths, run on a CPU against tests/strict_cupy.

``activate()`` (from ``sitecustomize``, in every process gpu-check starts under gpu-dry):

- installs the strict CuPy stand-in before gpunet looks for CuPy (``plugin.install``);
- shrinks what would take a GPU's memory and speed to sizes a CPU runs in seconds, keeping
  every name, option and code path: ``gpunet.bench.CONFIGS`` (so gpunet bench and
  scripts/profile_step.py), and, through ``run_script.py``, scripts/bench_kernels.py's GPU
  sizes and scripts/bench_sklearn.py's data;
- runs the numba.cuda kernels' wrappers in ``gpunet.kernels.cuda_ops`` (their argument
  checks, shapes and grids) and then, for their results, the CPU twins of
  ``gpunet.kernels.cpu_ops`` / ``cpu_norm`` (same functions, same signatures) on the
  stand-in's buffers: scripts/bench_kernels.py's GPU section calls the kernels directly, and
  the stand-in has no GPU to launch them on (the CupyBackend's own kernels stay off, as in
  the strict pass).

Nothing here is a GPU figure: the point is that every stage starts, runs its GPU-side Python
to the end and writes what the summary reads.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: gpunet.bench's configs at dry-run sizes: name -> (sizes, batch, gpu_only), as CONFIGS
CONFIGS = {
    "small": ([32, 16, 10], 16, False),
    "medium": ([48, 32, 32, 10], 32, False),
    "large": ([64, 48, 48, 48, 20], 64, True),
}
#: scripts/bench_kernels.py gpu_benchmarks' sizes: n, row_shapes, small
BENCH_KERNELS_GPU = (1 << 14, ((64, 100), (16, 320)), 4096)


def activate() -> None:
    spec = importlib.util.spec_from_file_location("strict_cupy_plugin",
                                                  HERE.parent / "plugin.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    plugin.install()
    sys.meta_path.insert(0, _AfterImport({"gpunet.bench": _small_bench,
                                          "gpunet.kernels.cuda_ops": _twin_kernels}))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` once a module in ``patches`` has executed."""

    def __init__(self, patches):
        self.patches = patches

    def find_spec(self, name, path=None, target=None):
        patch = self.patches.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            patch(module)
        spec.loader.exec_module = exec_module
        return spec


def _small_bench(bench) -> None:
    bench.CONFIGS.clear()
    bench.CONFIGS.update(CONFIGS)


def _twin_kernels(cuda_ops) -> None:
    import cupy

    from gpunet.kernels import cpu_norm, cpu_ops

    cuda_ops._launch = lambda *args: None  # (the wrappers' checks and grids run; no launch)
    for name in cuda_ops.__all__:
        wrapper = getattr(cuda_ops, name)
        twin = getattr(cpu_ops, name, None) or getattr(cpu_norm, name)
        setattr(cuda_ops, name, _twin(cupy, wrapper, twin))


def _twin(cupy, wrapper, twin):
    from cupy import _core

    def call(*args):
        if _core.capturing() is not None:
            raise NotImplementedError("scripts/gpu-dry's kernel twins do not capture")
        wrapper(*args)
        host = [a._a if isinstance(a, cupy.ndarray) else a for a in args]
        got = twin(*host)
        return args[-1] if not isinstance(got, tuple) else got  # (only "returns out" is read)
    call.__name__ = call.__qualname__ = wrapper.__name__
    return call


def shrink_script(name, module) -> None:
    """What run_script.py does to a script, by file name, before calling its ``main``."""
    if name == "bench_kernels":
        module.gpu_benchmarks.__defaults__ = BENCH_KERNELS_GPU
    elif name == "bench_sklearn":
        from sklearn.datasets import load_digits, make_classification

        module.CONFIGS.update({
            "digits": (lambda: load_digits(return_X_y=True), (16,), 32, 2),
            "synthetic-784": (lambda: make_classification(400, 784, n_informative=64,
                                                          n_redundant=0, n_classes=10,
                                                          n_clusters_per_class=1,
                                                          random_state=0), (16,), 128, 1)})


if os.environ.get("GPUNET_GPU_DRY") != "1":
    raise ImportError("scripts/gpu-dry's hook loads only under scripts/gpu-dry", name="dry")
