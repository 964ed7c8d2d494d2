"""scripts/test's strict CuPy pass: gpunet's CuPy paths under CuPy's rules, on a CPU.

``GPUNET_STRICT_CUPY=1 pytest -m gpu tests --ignore=tests/cuda_kernels`` runs the suite's GPU
tests against the stand-in in ``site/`` (its rules, and what it does not check, are in
``site/cupy/__init__.py``). tests/conftest.py calls ``install()`` before gpunet looks for CuPy
and shows ``header()`` above the results.

Every GPU test runs under it, none vacuously: the fused-kernel tests run the kernels' own
bodies, the cuBLAS tests gpunet's own ``Cublas`` against a host cuBLAS that reads pointers as
cuBLAS does (``site/cupy/_gpunet.py``), the allocation test a pool that counts live arrays,
the parity and torch-oracle tests gpunet's CuPy code paths under CuPy's rules. A test that
would measure what the stand-in cannot show (GPU numbers, timing, launch counts) must skip
where ``conftest.STRICT_CUPY`` is true, saying why.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: the folder that holds the stand-in's ``cupy`` and ``cupyx``
SITE = Path(__file__).resolve().with_name("site")


def install() -> None:
    """Make ``import cupy`` the stand-in here and in child processes (mpiexec's ranks)."""
    real = sys.modules.get("cupy")
    if real is not None and not getattr(real, "STAND_IN", False):
        raise RuntimeError("GPUNET_STRICT_CUPY=1, but CuPy itself was imported first: run the "
                           "strict pass in a process of its own")
    sys.path.insert(0, str(SITE))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(SITE), *filter(None, [os.environ.get("PYTHONPATH")])])
    import cupy  # noqa: PLC0415

    assert getattr(cupy, "STAND_IN", False), cupy.__file__
    if cupy._kernel.CXX is None:
        raise RuntimeError("the strict CuPy pass runs kernel bodies as host C++ and needs a "
                           "C++ compiler (g++, c++ or clang++)")


def header() -> list[str]:
    import gpunet as gn  # noqa: PLC0415

    usable, why = gn.cupy_status()
    where = gn.get_backend("cupy").device_name if usable else f"unusable: {why}"
    return [f"cupy: gpunet's strict CuPy stand-in ({SITE}): CuPy's rules on host and device "
            "arrays and on graph capture, checked without a GPU; GPU numbers, cuBLAS and the "
            "numba.cuda kernels are scripts/gpu-check's",
            f"cupy backend: {where}"]
