"""Argument checks shared by ``cpu_ops`` and ``cuda_ops``, so both reject the same calls.

Each op's check returns what the target needs to pick a kernel and raises TypeError (wrong
kind of argument or dtype) or ValueError (wrong shape, layout or name) with a message that
names the argument. Only attributes numpy, cupy and numba device arrays share are used.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import activations

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
LABEL_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def _array(a, what, array_type):
    if array_type is None:
        ok = hasattr(a, "__cuda_array_interface__") or isinstance(a, np.ndarray)
        kind = "a numpy array or a CUDA array (cupy, numba)"
    else:
        ok = isinstance(a, array_type)
        kind = f"a {array_type.__module__}.{array_type.__name__}"
    if not ok:
        raise TypeError(f"{what} must be {kind}, got {type(a).__name__}")
    flags = a.flags
    if not flags["C_CONTIGUOUS"]:
        raise ValueError(f"{what} must be C-contiguous")
    return a


def _float_array(a, what, array_type):
    _array(a, what, array_type)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{what} must be float32 or float64, got {a.dtype}")
    return np.dtype(a.dtype)


def _like(a, what, ref, ref_what, array_type, shape=None):
    """a has ref's array type and dtype, and ref's shape unless ``shape`` is given."""
    _array(a, what, array_type)
    if type(a) is not type(ref):
        raise TypeError(
            f"{what} is a {type(a).__name__} but {ref_what} is a {type(ref).__name__}"
        )
    if a.dtype != ref.dtype:
        raise TypeError(f"{what} has dtype {a.dtype}, expected {ref.dtype} like {ref_what}")
    want = tuple(ref.shape) if shape is None else shape
    if tuple(a.shape) != want:
        raise ValueError(f"{what} has shape {tuple(a.shape)}, expected {want}")


def _matrix(x, what, array_type):
    dtype = _float_array(x, what, array_type)
    if x.ndim != 2:
        raise ValueError(f"{what} must be 2-D (rows, cols), got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{what} must have at least one column")
    return dtype


def _slope(slope):
    if isinstance(slope, bool) or not isinstance(slope, numbers.Real):
        raise TypeError(f"slope must be a real number, got {type(slope).__name__}")


def act_forward(name, z, out, slope, array_type):
    """Checks for act_forward; returns (activation, dtype)."""
    act = activations.get(name)
    dtype = _float_array(z, "z", array_type)
    _like(out, "out", z, "z", array_type)
    _slope(slope)
    return act, dtype


def bias_act_forward(name, z, b, out, slope, array_type):
    """Checks for bias_act_forward; returns (activation, dtype)."""
    act = activations.get(name)
    dtype = _float_array(z, "z", array_type)
    if z.ndim != 2:
        raise ValueError(f"z must be 2-D (rows, cols), got shape {tuple(z.shape)}")
    _like(b, "b", z, "z", array_type, shape=(z.shape[1],))
    _like(out, "out", z, "z", array_type)
    _slope(slope)
    return act, dtype


def act_backward(name, dy, x, y, out, slope, array_type):
    """Checks for act_backward; returns (activation, dtype, src).

    src is the array the backward reads (x or y, per the activation's ``saved``); the one
    it does not read may be None.
    """
    act = activations.get(name)
    dtype = _float_array(dy, "dy", array_type)
    _like(out, "out", dy, "dy", array_type)
    for what, a in (("x", x), ("y", y)):
        if a is None:
            if act.saved == what:
                raise ValueError(f"act_backward({name!r}) needs {what}, got None")
        else:
            _like(a, what, dy, "dy", array_type)
    _slope(slope)
    src = {"x": x, "y": y, None: dy}[act.saved]
    return act, dtype, src


def rowwise(x, out, array_type, reduced=False):
    """Checks for logsumexp / log_softmax / softmax; returns dtype.

    out has x's shape, or (rows,) when ``reduced`` (logsumexp).
    """
    dtype = _matrix(x, "x", array_type)
    _like(out, "out", x, "x", array_type, shape=(x.shape[0],) if reduced else None)
    return dtype


def softmax_cross_entropy(logits, labels, loss_out, dlogits_out, scale, array_type):
    """Checks for softmax_cross_entropy; returns (dtype, label dtype)."""
    dtype = _matrix(logits, "logits", array_type)
    rows = logits.shape[0]
    _array(labels, "labels", array_type)
    if type(labels) is not type(logits):
        raise TypeError(
            f"labels is a {type(labels).__name__} but logits is a {type(logits).__name__}"
        )
    if labels.dtype not in LABEL_DTYPES:
        raise TypeError(f"labels must be int32 or int64, got {labels.dtype}")
    if tuple(labels.shape) != (rows,):
        raise ValueError(f"labels has shape {tuple(labels.shape)}, expected ({rows},)")
    _like(loss_out, "loss_out", logits, "logits", array_type, shape=(rows,))
    _like(dlogits_out, "dlogits_out", logits, "logits", array_type)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
    return dtype, np.dtype(labels.dtype)


def layer_norm_forward(z, gamma, beta, eps, n, xhat, rstd, array_type, batch=False):
    """z (rows, d) float; gamma, beta (d,), n and xhat like z, rstd (rows, 1) (``batch``: a
    batch norm's (1, d)), all of z's type and dtype; eps a real number > 0. Returns z's
    dtype."""
    dtype = _matrix(z, "z", array_type)
    rows, d = z.shape
    stat = (1, d) if batch else (rows, 1)
    for a, what in ((gamma, "gamma"), (beta, "beta")):
        _like(a, what, z, "z", array_type, shape=(d,))
    for a, what in ((n, "n"), (xhat, "xhat")):
        _like(a, what, z, "z", array_type)
    _like(rstd, "rstd", z, "z", array_type, shape=stat)
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps > 0:
        raise TypeError(f"eps must be a real number > 0, got {eps!r}")
    return dtype


def layer_norm_backward(dn, xhat, rstd, gamma, dz, dgamma, dbeta, array_type, batch=False):
    """dn (rows, d) float; xhat and dz like dn, rstd (rows, 1) (``batch``: (1, d)), gamma,
    dgamma, dbeta (d,), all of dn's type and dtype. Returns dn's dtype."""
    dtype = _matrix(dn, "dn", array_type)
    rows, d = dn.shape
    for a, what in ((xhat, "xhat"), (dz, "dz")):
        _like(a, what, dn, "dn", array_type)
    _like(rstd, "rstd", dn, "dn", array_type, shape=(1, d) if batch else (rows, 1))
    for a, what in ((gamma, "gamma"), (dgamma, "dgamma"), (dbeta, "dbeta")):
        _like(a, what, dn, "dn", array_type, shape=(d,))
    return dtype
