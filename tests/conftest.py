"""Shared fixtures: the backends every test runs on, tolerances by dtype, the torch oracle."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn

_CUPY_OK, _CUPY_WHY = gn.cupy_status()

#: the numpy backend always; cupy where a GPU works, else a skip that says why
BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param(
        "cupy",
        id="cupy",
        marks=[pytest.mark.gpu,
               pytest.mark.skipif(not _CUPY_OK, reason=f"cupy backend unavailable: {_CUPY_WHY}")],
    ),
]

#: relative tolerances for comparisons against a float64 reference
RTOL = {np.float32: 1e-5, np.float64: 1e-10}


@pytest.fixture(params=BACKENDS)
def backend(request):
    return gn.get_backend(request.param)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="torch is the autograd oracle; pip install torch")


def host(a) -> np.ndarray:
    """Any backend array (or torch tensor) as a host numpy array."""
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return np.asarray(a)
