"""``cupy.<name>``: NumPy's functions and ufuncs made strict, and the few CuPy has of its own.

A function made from NumPy's (``strict``) refuses host arrays among its arguments, gives 0-d
device arrays where NumPy gives scalars, keeps the buffers it writes during a capture, and
records itself for replay. The creation functions take host data (that is their job) and copy
it, as a host-to-device transfer does.
"""

from __future__ import annotations

import builtins
import types

import numpy as np

from ._core import (SYNCING, before_write, check, ndarray, raws, record, refuse_in_capture,
                    scalar, unwrap, wrap)


def strict(name: str, f):
    """The cupy function ``name`` made from NumPy's (or SciPy's) ``f``."""
    is_ufunc = isinstance(f, np.ufunc)

    def call(*args, **kwargs):
        check(f"cupy.{name}", args, kwargs)
        out = kwargs.get("out")
        outs = out if isinstance(out, tuple) else (out,)
        if is_ufunc:  # (_kernel.pyx _preprocess_arg: a device array, else a CScalar)
            for a in (*args, *outs):
                if a is not None and not isinstance(a, ndarray):
                    scalar(a)
        if name in SYNCING or (name == "where" and len(args) == 1):
            refuse_in_capture(f"cupy.{name} (its output size is read back to the host)")
        if name in ("max", "min", "amax", "amin") and {"initial", "where"} & kwargs.keys():
            raise TypeError(f"{name}() got an unexpected keyword argument "
                            f"{sorted({'initial', 'where'} & kwargs.keys())[0]!r}")
        before_write(*outs, *(args[f.nin:] if is_ufunc else ()))
        ua, uk = unwrap(args), unwrap(kwargs)
        with np.errstate(all="ignore"):  # (CuPy's kernels raise no floating-point warnings)
            r = wrap(f(*ua, **uk), inputs=(*args, *kwargs.values()))
        record(lambda: f(*ua, **uk), raws(r))
        return r

    call.__name__ = call.__qualname__ = name
    if is_ufunc:
        call.nin, call.nout = f.nin, f.nout
    return call


# -- creation -------------------------------------------------------------------------------

def _host_data(obj, dtype, order):
    """Host data (a NumPy array, a sequence, a scalar) copied into a new device array; a
    sequence of device arrays stacked on the device."""
    if isinstance(obj, (list, tuple)) and builtins.any(isinstance(v, ndarray) for v in obj):
        if not builtins.all(isinstance(v, ndarray) for v in obj):
            raise TypeError("a sequence mixing device arrays and host data")
        return stack([v if dtype is None else v.astype(dtype) for v in obj])
    refuse_in_capture("making a device array from host data (a host-to-device copy)")
    return ndarray(np.array(obj, dtype=dtype, order=order or "K", copy=True))


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    return _host_data(a, dtype, order)


asanyarray = asarray


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        r = obj.astype(obj.dtype if dtype is None else dtype, copy=copy)
        return r if ndmin <= r.ndim else r.reshape((1,) * (ndmin - r.ndim) + r.shape)
    return _host_data(obj if not ndmin else np.array(obj, ndmin=ndmin), dtype, order)


def ascontiguousarray(a, dtype=None):
    a = asarray(a, dtype)
    return a if a.flags.c_contiguous else a.copy()


def _creation(name):
    f = getattr(np, name)

    def make(*args, **kwargs):
        if "like" in kwargs:
            raise TypeError(f"{name}() got an unexpected keyword argument 'like'")
        proto = unwrap(args[0]) if name.endswith("_like") and args else None
        ua, uk = ((proto, *unwrap(args[1:])), unwrap(kwargs)) if proto is not None \
            else (unwrap(args), unwrap(kwargs))
        r = ndarray(f(*ua, **uk))
        record(lambda: f(*ua, **uk), (r._a,))
        return r

    make.__name__ = make.__qualname__ = name
    return make


for _name in ("empty", "zeros", "ones", "full", "arange", "linspace", "eye", "identity",
              "empty_like", "zeros_like", "ones_like", "full_like"):
    globals()[_name] = _creation(_name)


# -- CuPy's own -----------------------------------------------------------------------------

def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    return np.asarray(a, order=order)


def get_array_module(*args):
    import cupy

    return cupy if builtins.any(isinstance(a, ndarray) for a in args) else np


def copyto(dst, src, casting="same_kind", where=None):
    """cupy/_manipulation/basic.py copyto: a host source must hold one value."""
    if not isinstance(dst, ndarray):
        raise TypeError(f"copyto's dst must be a cupy.ndarray, got {type(dst)}")
    if isinstance(src, np.ndarray) or np.isscalar(src):
        if np.size(src) != 1:
            raise ValueError("non-scalar numpy.ndarray cannot be used for copyto")
        src = np.asarray(src).item()
    check("cupy.copyto", (), {"where": where})
    d, v, w = dst._a, unwrap(src), True if where is None else unwrap(where)
    before_write(d)
    np.copyto(d, v, casting=casting, where=w)
    record(lambda: np.copyto(d, v, casting=casting, where=w))


def take(a, indices, axis=None, out=None):
    """CuPy's take wraps indices around (difference.rst "Out-of-bounds indices")."""
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)} (a host array given to cupy.take)")
    if isinstance(indices, (np.ndarray, list, tuple)):
        refuse_in_capture("cupy.take with host indices (a host-to-device copy)")
        indices = np.array(indices)
    if out is not None and not isinstance(out, ndarray):
        raise TypeError(f"Unsupported type {type(out)} (a host out= given to cupy.take)")
    x, i, o = a._a, unwrap(indices), None if out is None else out._a
    n = x.shape[axis] if axis is not None else x.size
    before_write(o)

    def again():
        return np.take(x, np.asarray(i) % n if n else i, axis=axis, out=o)
    r = out if out is not None else wrap(again())
    if out is not None:
        again()
    record(again, (r._a,))
    return r


# -- the rest of NumPy's namespace, on demand -----------------------------------------------

#: NumPy names that are not functions but are CuPy's too (types, constants, dtype helpers)
_PASSED = ("dtype", "finfo", "iinfo", "nan", "inf", "pi", "e", "newaxis", "errstate",
           "result_type", "can_cast", "promote_types", "isscalar", "ndim")


def __getattr__(name):
    f = getattr(np, name, None)
    if f is None or isinstance(f, types.ModuleType) or name == "ndarray":
        raise AttributeError(f"module 'cupy' has no attribute {name!r} (the strict CuPy "
                             "stand-in has what gpunet uses; add it in tests/strict_cupy)")
    if name in _PASSED or (isinstance(f, type) and issubclass(f, np.generic)):
        return f
    if not callable(f) or isinstance(f, type):
        raise AttributeError(f"module 'cupy' has no attribute {name!r}")
    made = strict(name, f)
    globals()[name] = made
    return made


stack = __getattr__("stack")
