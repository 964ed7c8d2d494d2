"""numba.njit fused optimiser updates for the numpy backend: one pass over a parameter instead
of a dozen NumPy calls, each with its own temporary.

Pattern: one flat loop over the C-contiguous buffers, on one thread (it runs between GEMMs,
where OpenBLAS holds the cores). The hyperparameters arrive as float64 scalars, so each element
is updated in float64 and rounded once on store; the math is ``Backend.sgd_update`` /
``Backend.adam_update``, which is PyTorch's.

Nothing compiles at import: each loop compiles on its first call for each dtype.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["sgd_update", "adam_update"]


@functools.cache
def _sgd_kernel():
    from numba import njit

    @njit(cache=False, error_model="numpy")
    def sgd(p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first):
        for i in range(p.size):
            gi = g[i] + weight_decay * p[i]
            if momentum != 0.0:
                b = gi if first else momentum * buf[i] + (1.0 - dampening) * gi
                buf[i] = b
                gi = gi + momentum * b if nesterov else b
            p[i] = p[i] - lr * gi

    return sgd


@functools.cache
def _adam_kernel():
    from numba import njit

    @njit(cache=False, error_model="numpy")
    def adam(p, g, m, v, lr, beta1, beta2, eps, step_size, root_bc2, weight_decay, decoupled):
        for i in range(p.size):
            pi = p[i]
            gi = g[i]
            if decoupled:
                pi = pi * (1.0 - lr * weight_decay)
            else:
                gi = gi + weight_decay * pi
            mi = beta1 * m[i] + (1.0 - beta1) * gi
            vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = pi - step_size * mi / (math.sqrt(vi) / root_bc2 + eps)

    return adam


def _flat(*arrays):
    first = arrays[0]
    for a in arrays:
        if not (isinstance(a, np.ndarray) and a.flags.c_contiguous and a.dtype == first.dtype
                and a.shape == first.shape):
            raise ValueError("optimizer kernels take C-contiguous numpy arrays of one shape "
                             "and dtype")
    return [a.reshape(-1) for a in arrays]


def sgd_update(p, g, buf, hyper, momentum, dampening, nesterov, weight_decay, first):
    """In place, as ``Backend.sgd_update``: lr = hyper[0]; ``buf`` may be None when momentum
    is 0."""
    if buf is None:
        if momentum:
            raise ValueError("momentum needs a buffer")
        buf = p  # never read or written without momentum
    fp, fg, fb = _flat(p, g, buf)
    _sgd_kernel()(fp, fg, fb, float(hyper[0]), float(momentum), float(dampening),
                  bool(nesterov), float(weight_decay), bool(first))
    return p


def adam_update(p, g, m, v, hyper, beta1, beta2, eps, weight_decay, decoupled):
    """In place, as ``Backend.adam_update``: lr, t = hyper."""
    fp, fg, fm, fv = _flat(p, g, m, v)
    lr, step = float(hyper[0]), int(hyper[1])
    step_size = lr / (1 - beta1**step)
    _adam_kernel()(fp, fg, fm, fv, lr, float(beta1), float(beta2), float(eps),
                   float(step_size), math.sqrt(1 - beta2**step), float(weight_decay),
                   bool(decoupled))
    return p
