"""``cupy.random``: the two samplers gpunet's scripts draw device data with (scripts/
bench_kernels.py), NumPy's numbers in device arrays.

As CuPy's (docs.cupy.dev, reference/generated/cupy.random.standard_normal.html and
cupy.random.randint.html): ``standard_normal(size=None, dtype=float)`` takes float32 or
float64 only, any other dtype a TypeError "cupy.random only supports float32 and float64"
(cupy/random/_generator.py ``_check_and_get_dtype``); ``randint(low, high=None, size=None,
dtype='l')`` draws from [low, high), or [0, low) without ``high``; with ``size`` None both
give a 0-d device array. The numbers come from one NumPy generator,
``seed(s)`` resets it; CuPy's cuRAND streams differ, so only shapes and dtypes are CuPy's.
"""

from __future__ import annotations

import numpy as np

from ._core import ndarray, record

_rng = np.random.default_rng(0)


def seed(seed=None):
    global _rng
    _rng = np.random.default_rng(seed)


def _made(draw):
    r = ndarray(np.asarray(draw()))
    record(draw, (r._a,))  # (a replay draws anew, as a captured cuRAND kernel does)
    return r


def standard_normal(size=None, dtype=float):
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"cupy.random only supports float32 and float64, got {dtype}")
    return _made(lambda: _rng.standard_normal(size, dtype=dtype))


def randint(low, high=None, size=None, dtype="l"):
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"low >= high ({low} >= {high})")
    return _made(lambda: _rng.integers(low, high, size=size, dtype=np.dtype(dtype)))
