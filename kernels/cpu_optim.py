"""numba.njit fused optimiser updates for the numpy backend: one pass over a parameter instead
of a dozen NumPy calls, each with its own temporary.

Pattern: one flat loop over the C-contiguous buffers, on one thread (it runs between GEMMs,
where OpenBLAS holds the cores). The math is ``Backend.sgd_update`` / ``Backend.adam_update``,
which is PyTorch's. SGD takes float64 scalars, so each element is updated in float64 and
rounded once on store. Adam computes in the parameter's dtype, as PyTorch does: its square root
and division in float64 made the update of a 256 x 784 float32 weight 2.7 times slower
(0.104 against 0.039 ms on one Zen 4 core), a sixth of the small benchmark step.

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

    # Every scalar arrives in the parameters' dtype and no literal appears in the loop, so a
    # float32 update stays in float32 (a float64 literal would promote it).
    @njit(cache=False, error_model="numpy")
    def adam(p, g, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size,
             root_bc2, weight_decay, decay, decoupled):
        for i in range(p.size):
            pi = p[i]
            gi = g[i]
            if decoupled:
                pi = pi * decay
            else:
                gi = gi + weight_decay * pi
            mi = beta1 * m[i] + one_minus_beta1 * gi
            vi = beta2 * v[i] + one_minus_beta2 * gi * gi
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
    """In place, as ``Backend.adam_update``: lr, t = hyper. Computed in p's dtype."""
    fp, fg, fm, fv = _flat(p, g, m, v)
    lr, step = float(hyper[0]), int(hyper[1])
    t = p.dtype.type
    _adam_kernel()(fp, fg, fm, fv, t(beta1), t(1 - beta1), t(beta2), t(1 - beta2), t(eps),
                   t(lr / (1 - beta1**step)), t(math.sqrt(1 - beta2**step)), t(weight_decay),
                   t(1 - lr * weight_decay), bool(decoupled))
    return p
