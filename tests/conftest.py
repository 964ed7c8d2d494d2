"""Shared fixtures: the backends every test runs on, tolerances by dtype, the torch oracle."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpunet as gn

#: scripts/test's last pass: CuPy's rules without a GPU (tests/strict_cupy/plugin.py)
STRICT_CUPY = os.environ.get("GPUNET_STRICT_CUPY", "") == "1"
if STRICT_CUPY:
    from strict_cupy import plugin as _strict_cupy

    _strict_cupy.install()  # (before gpunet looks for CuPy, just below)

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


def pytest_report_header(config):
    return _strict_cupy.header() if STRICT_CUPY else None


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


#: the dropout masks' hash, written out with Python integers (tests of gpunet.dropout)
U64 = (1 << 64) - 1


def splitmix64(state: int) -> int:
    """Steele, Lea and Flood's SplitMix64 output for one state, from its published constants."""
    z = (state + 0x9E3779B97F4A7C15) & U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & U64
    return z ^ (z >> 31)


# The numba.cuda kernel tests run in a pytest process of their own (the simulator must be set up
# before numba is imported; scripts/test runs them so): `pytest tests` collects the rest. The
# strict CuPy stand-in holds no tests.
collect_ignore = ["cuda_kernels", "strict_cupy"]


def said(caplog) -> str:
    """The notices gpunet gave (its logger's records), one line each, as stderr showed them."""
    return "".join(r.getMessage() + "\n" for r in caplog.records if r.name == "gpunet")
