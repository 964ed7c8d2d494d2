"""numba.njit dropout mask for the numpy backend: the hash of ``gpunet.dropout`` in one pass
over the mask, where the NumPy form makes a dozen passes over 64-bit temporaries (4.8 ms for a
1024 x 1024 mask on one Zen 4 core).

Pattern: one flat loop over the C-contiguous mask, on one thread (it runs between GEMMs, where
OpenBLAS holds the cores). Every integer is a uint64 and wraps as the CUDA kernel's
``unsigned long long`` does; the mask is the same bits as ``gpunet.dropout.mask``.

Nothing compiles at import: the loop compiles on its first call for each dtype.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["dropout_mask"]


@functools.cache
def _kernel():
    from numba import njit

    golden, m1, m2 = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9),
                      np.uint64(0x94D049BB133111EB))
    s30, s27, s31, s40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)

    @njit(inline="always")
    def mix(z):
        z = z + golden
        z = (z ^ (z >> s30)) * m1
        z = (z ^ (z >> s27)) * m2
        return z ^ (z >> s31)

    @njit(cache=False, error_model="numpy")
    def mask(out, s0, step, layer, base, bound, scale):
        k = mix(mix(s0 ^ step) ^ layer) + base
        for i in range(out.size):
            out[i] = scale if (mix(k + np.uint64(i)) >> s40) < bound else 0.0

    return mask


def dropout_mask(out, s0, step, layer, base, bound, scale):
    """Write the mask into ``out`` (flat, C-contiguous float32 or float64): ``scale`` where
    splitmix64(key(s0, step, layer) + base + i) has its top 24 bits below ``bound``, else 0."""
    if out.ndim != 1 or not out.flags.c_contiguous:
        raise ValueError("dropout_mask writes a flat C-contiguous array")
    u = np.uint64
    _kernel()(out, u(s0), u(step), u(layer), u(base), u(bound), out.dtype.type(scale))
    return out
