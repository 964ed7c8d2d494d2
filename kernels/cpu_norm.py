"""numba.njit layer norm for the numpy backend: ``layer_norm_forward`` and
``layer_norm_backward`` of ``gpunet.backends.base`` (the formulas are there and in
docs/math.md), each a loop over the rows that reads a row two or three times from cache, where
the NumPy form makes ten or eleven whole-array passes.

Pattern: one thread (they run between GEMMs, where OpenBLAS holds the cores). The sums of a
row (over vector lanes) and the column sums of dJ/dgamma and dJ/dbeta accumulate in float64
and are rounded once, and xhat is centred and scaled in float64, so float32 rows far from zero
keep their digits. The outputs may be the inputs (``n`` over ``z``, ``dz`` over ``dn``): each
element is read before it is written. The numbers agree with the NumPy ops to rounding, not
to the bit; the eager and the static step both come here for the same arrays, so they agree
with each other to the bit. 1024 x 1024 float32 on one Zen 4 core: forward 0.18 ms, backward
0.29 ms (the NumPy ops: 1.04 and 1.55 ms; torch's forward and backward on two threads: 0.73).

Nothing compiles at import: each loop compiles on its first call for each dtype.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _checks

__all__ = ["layer_norm_forward", "layer_norm_backward", "batch_norm_forward",
           "batch_norm_backward"]


@functools.cache
def _kernels():
    from numba import njit

    # Reassociation lets LLVM split each row sum over vector lanes (a single float64
    # accumulator waits on every add's latency: the forward pass of a 1024 x 1024 float32
    # array took 1.35 ms that way, 0.18 ms with this). The order is fixed by the compiled
    # loop, so equal calls give equal bits; no flag assumes away NaN or inf.
    fast = {"reassoc", "contract", "nsz"}

    # (without reassociation, which would fold (z - z0) - shift back into z - (z0 + shift),
    # the mean rounded at z's magnitude: 3e-9 off for float64 rows at 1e8)
    @njit(cache=False, error_model="numpy", fastmath={"contract", "nsz"})
    def centre(z, r, z0, shift, rs, gamma, beta, n, xhat):
        for j in range(z.shape[1]):
            xhat[r, j] = ((z[r, j] - z0) - shift) * rs
            n[r, j] = xhat[r, j] * gamma[j] + beta[j]

    @njit(cache=False, error_model="numpy", fastmath=fast)
    def forward(z, gamma, beta, eps, n, xhat, rstd):
        rows, d = z.shape
        for r in range(rows):
            # centred on the row's first value: exact for a constant row, and small terms
            # for a row far from zero; the variance about the mean from the same sums
            z0 = np.float64(z[r, 0])
            s = 0.0
            q = 0.0
            for j in range(d):
                a = z[r, j] - z0
                s += a
                q += a * a
            shift = s / d
            rs = 1.0 / np.sqrt(max(q / d - shift * shift, 0.0) + eps)
            rstd[r, 0] = rs
            # centred in float64 as (z - z0) - shift, as the NumPy ops: exact for float32
            # rows far from zero, and the mean's rounding at z's magnitude never enters it
            centre(z, r, z0, shift, rs, gamma, beta, n, xhat)

    @njit(cache=False, error_model="numpy", fastmath=fast)
    def backward(dn, xhat, rstd, gamma, dz, dgamma, dbeta):
        rows, d = dn.shape
        sg = np.zeros(d)
        sb = np.zeros(d)
        for r in range(rows):
            mg = 0.0
            mgx = 0.0
            for j in range(d):
                v = np.float64(dn[r, j])
                x = np.float64(xhat[r, j])
                sb[j] += v
                sg[j] += v * x
                g = v * gamma[j]
                mg += g
                mgx += g * x
            mg_t = dn.dtype.type(mg / d)
            mgx_t = dn.dtype.type(mgx / d)
            rs = rstd[r, 0]
            for j in range(d):
                dz[r, j] = (dn[r, j] * gamma[j] - mg_t - xhat[r, j] * mgx_t) * rs
        for j in range(d):
            dgamma[j] = sg[j]
            dbeta[j] = sb[j]

    return forward, backward


def layer_norm_forward(z, gamma, beta, eps, n, xhat, rstd):
    """Write n = gamma xhat + beta, xhat and rstd (rows, 1) for z (rows, d); n may be z.

    Returns:
        (n, xhat, rstd).
    """
    _checks.layer_norm_forward(z, gamma, beta, eps, n, xhat, rstd, np.ndarray)
    if z.shape[0]:
        _kernels()[0](z, gamma, beta, float(eps), n, xhat, rstd)
    return n, xhat, rstd


def layer_norm_backward(dn, xhat, rstd, gamma, dz, dgamma, dbeta):
    """Write dJ/dz (dz may be dn), dJ/dgamma and dJ/dbeta from dJ/dn.

    Returns:
        (dz, dgamma, dbeta).
    """
    _checks.layer_norm_backward(dn, xhat, rstd, gamma, dz, dgamma, dbeta, np.ndarray)
    _kernels()[1](dn, xhat, rstd, gamma, dz, dgamma, dbeta)
    return dz, dgamma, dbeta


# -- batch norm: the statistics over the batch, per feature ----------------------------------
# The rows are walked in order and each feature's sums kept in a float64 array: the loop over
# the features is elementwise, so it vectorises without reassociating anything.

@functools.cache
def _batch_kernels():
    from numba import njit

    @njit(cache=False, error_model="numpy")
    def forward(z, gamma, beta, eps, n, xhat, rstd, mean_out, var_out):
        rows, d = z.shape
        z0 = np.empty(d)  # the first row (n may be z: it is overwritten first)
        for j in range(d):
            z0[j] = z[0, j]
        s = np.zeros(d)
        for r in range(rows):  # sums of z - z0 (exact for a constant feature)
            for j in range(d):
                s[j] += np.float64(z[r, j]) - z0[j]
        shift = np.empty(d)  # the mean of z - z0
        for j in range(d):
            shift[j] = s[j] / rows
        # centred as (z - z0) - shift, as the NumPy ops: the rounding of the mean z0 + shift
        # at z's magnitude never enters the centred values
        q = np.zeros(d)
        for r in range(rows):
            for j in range(d):
                c = (np.float64(z[r, j]) - z0[j]) - shift[j]
                q[j] += c * c
        rs = np.empty(d)
        for j in range(d):
            var = q[j] / rows
            rs[j] = 1.0 / np.sqrt(var + eps)
            mean_out[0, j] = z0[j] + shift[j]
            var_out[0, j] = var
            rstd[0, j] = rs[j]
        for r in range(rows):  # (each element read, then written: n may be z)
            for j in range(d):
                xhat[r, j] = ((np.float64(z[r, j]) - z0[j]) - shift[j]) * rs[j]
                n[r, j] = xhat[r, j] * gamma[j] + beta[j]

    @njit(cache=False, error_model="numpy")
    def backward(dn, xhat, rstd, gamma, dz, dgamma, dbeta):
        rows, d = dn.shape
        sb = np.zeros(d)
        sg = np.zeros(d)
        for r in range(rows):
            for j in range(d):
                v = np.float64(dn[r, j])
                sb[j] += v
                sg[j] += v * xhat[r, j]
        mean_g = np.empty(d, dn.dtype)  # mean over the batch of g = dn gamma: gamma sum(dn) / B
        mean_gx = np.empty(d, dn.dtype)
        for j in range(d):
            dbeta[j] = sb[j]
            dgamma[j] = sg[j]
            mean_g[j] = gamma[j] * sb[j] / rows
            mean_gx[j] = gamma[j] * sg[j] / rows
        for r in range(rows):  # (each element read, then written: dz may be dn)
            for j in range(d):
                dz[r, j] = (dn[r, j] * gamma[j] - mean_g[j] - xhat[r, j] * mean_gx[j]) \
                    * rstd[0, j]

    return forward, backward


def batch_norm_forward(z, gamma, beta, eps, n, xhat, rstd, mean, var):
    """Write n = gamma xhat + beta, xhat, and rstd, mean and var (1, d) over the batch z
    (rows >= 1, d); n may be z. Returns (n, xhat, rstd, mean, var)."""
    _checks.layer_norm_forward(z, gamma, beta, eps, n, xhat, rstd, np.ndarray, batch=True)
    for a, what in ((mean, "mean"), (var, "var")):
        _checks._like(a, what, z, "z", np.ndarray, shape=(1, z.shape[1]))
    if z.shape[0]:
        _batch_kernels()[0](z, gamma, beta, float(eps), n, xhat, rstd, mean, var)
    return n, xhat, rstd, mean, var


def batch_norm_backward(dn, xhat, rstd, gamma, dz, dgamma, dbeta):
    """Write dJ/dz (dz may be dn), dJ/dgamma and dJ/dbeta of a batch norm's training pass from
    dJ/dn. Returns (dz, dgamma, dbeta)."""
    _checks.layer_norm_backward(dn, xhat, rstd, gamma, dz, dgamma, dbeta, np.ndarray,
                                batch=True)
    if dn.shape[0]:
        _batch_kernels()[1](dn, xhat, rstd, gamma, dz, dgamma, dbeta)
    return dz, dgamma, dbeta
