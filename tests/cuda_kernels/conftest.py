"""Harness for the numba.cuda kernel tests.

These tests need numba.cuda to run kernels: either the simulator (``NUMBA_ENABLE_CUDASIM=1``
set before numba is imported, i.e. in this directory's own pytest process on a CPU machine)
or a working CUDA device. Otherwise every test here skips with the reason.

Each test takes the ``dev`` fixture: how test data (numpy) reaches the kernels and comes
back. Under the simulator that is numpy itself; on a GPU it is numba device arrays and,
when cupy works, cupy arrays too.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

# This directory runs in its own pytest process, where pytest puts tests/cuda_kernels (not
# tests/) on sys.path; the shared float64 references live in tests/kernel_refs.py, so put the
# parent folder on sys.path once for test_cuda_ops.py's ``from kernel_refs import ...``.
_TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)
pytest.register_assert_rewrite("kernel_refs")  # its checks assert: keep pytest's messages


def _mode():
    """("sim" | "gpu" | None, reason)."""
    try:
        from numba.core import config
        from numba import cuda
    except Exception as e:  # numba or numba-cuda missing or broken
        return None, f"numba.cuda unavailable ({type(e).__name__}: {e})"
    if config.ENABLE_CUDASIM:
        return "sim", "CUDA simulator"
    try:
        if cuda.is_available():
            cuda.current_context()
            return "gpu", "CUDA device"
    except Exception as e:
        return None, f"no working CUDA device ({type(e).__name__}: {e})"
    hint = "" if os.environ.get("NUMBA_ENABLE_CUDASIM") else " and NUMBA_ENABLE_CUDASIM is not set"
    return None, f"no CUDA device{hint}: run this directory in its own process with NUMBA_ENABLE_CUDASIM=1"


MODE, MODE_REASON = _mode()


def _cupy_works():
    if MODE != "gpu":
        return False, "cupy arrays need a real CUDA device"
    try:
        import cupy

        cupy.arange(4).sum().item()
        return True, ""
    except Exception as e:
        return False, f"cupy does not work here ({type(e).__name__}: {e})"


CUPY_OK, CUPY_REASON = _cupy_works()


@pytest.fixture(autouse=True)
def _needs_cuda():
    if MODE is None:
        pytest.skip(MODE_REASON)


class Dev:
    """Moves test data to the kernel's array type and back."""

    def __init__(self, name, to_device, to_host):
        self.name = name
        self.asarray = to_device
        self.asnumpy = to_host

    def __repr__(self):
        return self.name


def _devices():
    if MODE == "gpu":
        from numba import cuda

        yield pytest.param(
            Dev("numba", cuda.to_device, lambda a: a.copy_to_host()), id="numba"
        )
        cupy_mark = pytest.mark.skipif(not CUPY_OK, reason=CUPY_REASON)
        yield pytest.param("cupy", id="cupy", marks=cupy_mark)
    else:
        yield pytest.param(Dev("numpy", np.array, np.array), id="numpy")


@pytest.fixture(params=list(_devices()))
def dev(request):
    if request.param == "cupy":
        import cupy

        return Dev("cupy", cupy.asarray, cupy.asnumpy)
    return request.param


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    """Under the simulator (one Python thread per CUDA thread), use small blocks and grids.

    They still make the grid-stride loops go round several times with ragged tails and
    leave row-wise threads with no columns at all in narrow rows. On a GPU the defaults stay.
    """
    if MODE == "sim":
        from gpunet.kernels import cuda_ops

        monkeypatch.setattr(cuda_ops, "ELEMENTWISE_THREADS", 64)
        monkeypatch.setattr(cuda_ops, "MAX_BLOCKS", 4)
        monkeypatch.setattr(cuda_ops, "ROW_THREADS", 16)
