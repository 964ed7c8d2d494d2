"""The stand-in's arrays and functions: NumPy arrays underneath, CuPy's rules on top.

The rules, and the CuPy source each one follows, are listed in ``cupy/__init__.py``. Here:

- ``ndarray`` wraps a NumPy array that only the stand-in touches (creation from host data
  copies, as a host-to-device transfer does);
- ``strict(name, f)`` turns a NumPy function into a cupy one that refuses host arrays;
- the capture recorder: while a stream captures, each op runs at once (so later ops see its
  results) and is recorded; ``end_capture`` then undoes every write to an array that existed
  before the capture (capture executes nothing), fills the arrays made during it with NaN (a
  graph's memory holds nothing until a launch), and a launch replays the record into the same
  buffers;
- the allocation count: every buffer an array owns is counted, while alive, in the pool that
  was current when it was made (``cupy.cuda.MemoryPool``), in CuPy's 512-byte blocks.
"""

from __future__ import annotations

import builtins
import threading
import weakref

import numpy as np

#: CuPy's pool rounds every allocation up to this (cupy/cuda/memory.pyx ALLOCATION_UNIT_SIZE)
_BLOCK = 512


class CUDARuntimeError(RuntimeError):
    """What ``cupy_backends.cuda.api.runtime`` raises when a CUDA call fails."""

    def __init__(self, status: str, what: str):
        self.status = status
        super().__init__(f"{status}: {what}")


# -- streams and capture ---------------------------------------------------------------------

_local = threading.local()  # .streams: this thread's ``with stream:`` stack (CuPy's is too)


def current_stream():
    stack = getattr(_local, "streams", None)
    return stack[-1] if stack else None  # None: the null (legacy default) stream


class Capture:
    """One stream capture in progress: the ops recorded, the writes to undo at its end."""

    def __init__(self, stream):
        self.stream = stream
        self.thread = threading.get_ident()
        self.ops = []       # (recompute, the NumPy buffers it wrote at capture), in order
        self.saved = []     # (buffer, its contents before the capture wrote it)
        self.made = []      # buffers first made during the capture
        self.made_ids = set()
        self.refused = None  # the first operation refused: CUDA invalidates the capture


_capture: Capture | None = None


def capturing() -> Capture | None:
    """The capture this thread is making, or None (another thread's capture is its own)."""
    c = _capture
    return c if c is not None and c.thread == threading.get_ident() else None


def refuse_in_capture(what: str) -> None:
    """Raise as CUDA does for an operation that a capturing stream cannot hold."""
    c = capturing()
    if c is not None:
        c.refused = c.refused or what
        raise CUDARuntimeError(
            "cudaErrorStreamCaptureUnsupported",
            f"{what} while stream {c.stream.ptr:#x} is capturing a CUDA graph (a graph holds "
            "device work only: no host read, no host-to-device copy, no synchronisation)")


def _on_capturing_stream(c: Capture) -> None:
    if current_stream() is not c.stream:
        raise CUDARuntimeError(
            "cudaErrorStreamCaptureIsolation",
            f"device work on another stream than the one capturing ({c.stream.ptr:#x}) would "
            "run outside the graph")


def before_write(*buffers) -> None:
    """Keep what each buffer made before the capture held (the capture must not change it)."""
    c = capturing()
    if c is None:
        return
    _on_capturing_stream(c)
    for a in buffers:
        if isinstance(a, ndarray):
            a = a._a
        if isinstance(a, np.ndarray) and id(_owner(a)) not in c.made_ids:
            c.saved.append((a, a.copy()))


def record(recompute, results=()) -> None:
    """Record a device op for replay: ``recompute()`` does it again; ``results`` are the
    buffers it wrote at capture, into which a replay copies what ``recompute`` returns."""
    c = capturing()
    if c is not None:
        _on_capturing_stream(c)
        c.ops.append((recompute, tuple(results)))


def begin(stream) -> None:
    global _capture
    if stream is None or stream.ptr == 0:
        raise RuntimeError("cannot capture on the default (legacy) stream")
    if _capture is not None:
        raise CUDARuntimeError("cudaErrorIllegalState", "a stream is capturing already")
    _capture = Capture(stream)


def end(stream) -> list:
    """End the capture: undo its writes, poison what it made; returns the recorded ops, or
    raises as CUDA does where an operation was refused during it."""
    global _capture
    c = _capture
    if c is None or c.stream is not stream or c.thread != threading.get_ident():
        raise CUDARuntimeError("cudaErrorIllegalState", "this stream is not capturing")
    _capture = None
    for buf, before in reversed(c.saved):
        buf[...] = before
    for buf in c.made:
        if buf.dtype.kind in "fc":
            buf[...] = np.nan
    if c.refused:
        raise CUDARuntimeError("cudaErrorStreamCaptureInvalidated",
                               f"the capture was invalidated by {c.refused}")
    return c.ops


def replay(ops) -> None:
    with np.errstate(all="ignore"):
        _replay(ops)


def _replay(ops) -> None:
    for recompute, results in ops:
        got = recompute()
        if not results:
            continue
        got = got if isinstance(got, tuple) else (got,)
        for dst, value in zip(results, got):
            if value is not dst and not (isinstance(value, np.ndarray)
                                         and np.shares_memory(dst, value)):
                dst[...] = value


# -- allocations -----------------------------------------------------------------------------

class MemoryPool:
    """Counts the bytes of the arrays made while it was the allocator and still alive."""

    def __init__(self, allocator=None):
        self._used = 0

    def used_bytes(self) -> int:
        return self._used

    def total_bytes(self) -> int:
        return self._used  # (no cache of freed blocks to add)

    def free_bytes(self) -> int:
        return 0

    def n_free_blocks(self) -> int:
        return 0

    def free_all_blocks(self, stream=None) -> None:
        pass

    def malloc(self, size):
        raise NotImplementedError("the strict CuPy stand-in hands out no raw device memory")


default_pool = MemoryPool()
pinned_pool = MemoryPool()
#: id(owning NumPy buffer) -> (first byte's address, one past the last, weakref)
_live: dict = {}


def _owner(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _count(a: np.ndarray) -> None:
    """Count ``a``'s buffer once, in the current allocator's pool, while it is alive."""
    owner = _owner(a)
    key = id(owner)
    if key in _live:
        return
    stack = getattr(_local, "pools", None)
    pool = stack[-1] if stack else default_pool
    size = -(-owner.nbytes // _BLOCK) * _BLOCK
    start = owner.__array_interface__["data"][0]
    _live[key] = (start, start + owner.nbytes, weakref.ref(owner))
    pool._used += size
    weakref.finalize(owner, _release, key, pool, size)
    c = capturing()
    if c is not None:
        c.made.append(owner)
        c.made_ids.add(key)


def _release(key, pool, size) -> None:
    _live.pop(key, None)
    pool._used -= size


def buffer_at(ptr: int, nbytes: int) -> np.ndarray:
    """The live device buffer holding bytes [ptr, ptr + nbytes); raises where none does (a
    host pointer, or memory freed)."""
    for start, stop, ref in list(_live.values()):
        if start <= ptr and ptr + nbytes <= stop:
            owner = ref()
            if owner is not None:
                return owner
    raise CUDARuntimeError("cudaErrorIllegalAddress",
                           f"{nbytes} bytes at {ptr:#x} lie in no live device array")


# -- the array ------------------------------------------------------------------------------

class _Memory:
    def __init__(self, a: np.ndarray):
        self.ptr = a.__array_interface__["data"][0]
        self.device_id = 0


class ndarray:
    """A device array: a NumPy array that leaves the stand-in only through ``get()``."""

    __array_priority__ = 100  # (CuPy's: NumPy defers binary operators to it)

    def __init__(self, a: np.ndarray):
        if not isinstance(a, np.ndarray):
            raise TypeError("the stand-in's cupy.ndarray wraps a NumPy array "
                            "(make arrays with cupy.empty, cupy.asarray, ...)")
        object.__setattr__(self, "_a", a)
        _count(a)

    # NumPy meeting a device array (cupy/_core/core.pyx __array__, __array_ufunc__,
    # __array_function__)
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import _functions

        f = getattr(_functions, ufunc.__name__, None)
        if f is None or method != "__call__":
            return NotImplemented
        if "out" in kwargs:
            out = kwargs["out"]
            kwargs["out"] = out[0] if isinstance(out, tuple) and len(out) == 1 else out
        return f(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import _functions

        f = getattr(_functions, func.__name__, None)
        return NotImplemented if f is None else f(*args, **kwargs)

    shape = property(lambda s: s._a.shape)
    dtype = property(lambda s: s._a.dtype)
    ndim = property(lambda s: s._a.ndim)
    size = property(lambda s: s._a.size)
    itemsize = property(lambda s: s._a.itemsize)
    nbytes = property(lambda s: s._a.nbytes)
    strides = property(lambda s: s._a.strides)
    flags = property(lambda s: s._a.flags)
    data = property(lambda s: _Memory(s._a))
    T = property(lambda s: wrap(s._a.T, inputs=(s,)))

    @property
    def device(self):
        from .cuda import Device

        return Device(0)

    @property
    def __cuda_array_interface__(self):
        """CUDA Array Interface v3, as cupy/_core/core.pyx exports it (CUPY_CUDA_ARRAY_INTERFACE_
        EXPORT_VERSION 3): the current stream's pointer (the legacy default stream's, 1, for
        the null stream: v3 forbids 0), strides None where C-contiguous, data (0, False) for
        an empty array. The pointer is the stand-in's host buffer: only the stand-in (and
        the kernels' argument checks, kernels/_checks.py) may read it."""
        s = current_stream()
        return {"shape": self.shape, "typestr": self.dtype.str, "descr": self.dtype.descr,
                "stream": 1 if s is None or s.ptr == 0 else s.ptr, "version": 3,
                "strides": None if self.flags.c_contiguous else self.strides,
                "data": (self.data.ptr if self.size else 0, False)}

    @property
    def base(self):
        root = _owner(self._a)
        return None if root is self._a else ndarray(root)

    # host reads: a device-to-host copy, which synchronises (core.pyx get, __int__, ...)
    def get(self, stream=None, order="C", out=None, blocking=True):
        refuse_in_capture("ndarray.get() (a device-to-host copy)")
        got = np.array(self._a, order=order, copy=True)
        if out is not None:
            out[...] = got
            return out
        return got

    def item(self):
        refuse_in_capture("ndarray.item() (a device-to-host copy)")
        return self._a.item()

    def tolist(self):
        refuse_in_capture("ndarray.tolist() (a device-to-host copy)")
        return self._a.tolist()

    def _host(self, what):
        refuse_in_capture(f"{what} of a device array (a device-to-host copy)")
        return self._a

    __bool__ = lambda s: bool(s._host("bool()"))  # noqa: E731
    __float__ = lambda s: float(s._host("float()"))  # noqa: E731
    __int__ = lambda s: int(s._host("int()"))  # noqa: E731
    __complex__ = lambda s: complex(s._host("complex()"))  # noqa: E731
    __repr__ = lambda s: repr(s._host("repr()"))  # noqa: E731
    __str__ = lambda s: str(s._host("str()"))  # noqa: E731
    __format__ = lambda s, spec: format(s._host("format()"), spec)  # noqa: E731
    __hash__ = None

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    # host-to-device copy
    def set(self, arr, stream=None):
        refuse_in_capture("ndarray.set() (a host-to-device copy)")
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        self._a[...] = arr

    # indexing (cupy/_core/_routines_indexing.pyx)
    def __getitem__(self, key):
        make, _ = _index(key, self.shape)
        a = self._a
        r = wrap(a[make()], inputs=(self,))
        record(lambda: a[make()], (r._a,) if isinstance(r, ndarray) else ())
        return r

    def __setitem__(self, key, value):
        make, advanced = _index(key, self.shape)
        if isinstance(value, ndarray):
            v = value._a
        elif not advanced:  # basic indexing: ndarray.fill(value) (_scatter_op)
            if isinstance(value, np.ndarray):
                if value.shape != ():
                    raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
                value = value.item()
            scalar(value)
            v = value
        else:  # advanced indexing: the value is copied to the device (core.array(value))
            if isinstance(value, (np.ndarray, list, tuple)):
                refuse_in_capture("setting elements from host data (a host-to-device copy)")
                v = np.array(value, dtype=self.dtype)
            else:
                v = scalar(value)
        a = self._a
        before_write(a)
        a[make()] = v

        def again():
            a[make()] = v
        record(again)

    def fill(self, value):
        if isinstance(value, np.ndarray):
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        scalar(value)
        a = self._a
        before_write(a)
        a.fill(value)
        record(lambda: a.fill(value))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        a = self._a
        r = wrap(a.astype(dtype, order=order, copy=copy), inputs=(self,))
        if r is not self:
            record(lambda: a.astype(dtype, order=order), (r._a,))
        return r

    def copy(self, order="C"):
        a = self._a
        r = ndarray(a.copy(order=order))
        record(lambda: a.copy(order=order), (r._a,))
        return r

    def view(self, dtype=None, type=None):
        return wrap(self._a.view() if dtype is None else self._a.view(dtype), inputs=(self,))

    # reductions give 0-d device arrays (user_guide/difference.rst "Zero-dimensional array")
    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return reduce_("sum", self, axis=axis, dtype=dtype, out=out, keepdims=keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return reduce_("mean", self, axis=axis, dtype=dtype, out=out, keepdims=keepdims)

    def max(self, axis=None, out=None, keepdims=False):
        return reduce_("max", self, axis=axis, out=out, keepdims=keepdims)

    def min(self, axis=None, out=None, keepdims=False):
        return reduce_("min", self, axis=axis, out=out, keepdims=keepdims)

    def all(self, axis=None, out=None, keepdims=False):
        return reduce_("all", self, axis=axis, out=out, keepdims=keepdims)

    def any(self, axis=None, out=None, keepdims=False):
        return reduce_("any", self, axis=axis, out=out, keepdims=keepdims)

    def argmax(self, axis=None, out=None, dtype=None, keepdims=False):
        return reduce_("argmax", self, axis=axis, out=out, keepdims=keepdims)

    def argmin(self, axis=None, out=None, dtype=None, keepdims=False):
        return reduce_("argmin", self, axis=axis, out=out, keepdims=keepdims)

    def take(self, indices, axis=None, out=None):
        from ._functions import take

        return take(self, indices, axis=axis, out=out)

    # CuPy has no host-memory attributes (ctypes, tofile, ...); its other methods are NumPy's
    _NOT_CUPY = frozenset({"ctypes", "tofile", "dump", "dumps", "tobytes", "tostring",
                           "itemset", "setflags", "resize", "byteswap", "newbyteorder",
                           "getfield", "setfield", "flat", "__array_interface__",
                           "__array_struct__"})

    def __getattr__(self, name):
        if name.startswith("__") or name in ndarray._NOT_CUPY:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        attr = getattr(self._a, name)
        if not callable(attr):
            return wrap(attr, inputs=(self,))
        if name in SYNCING:
            refuse_in_capture(f"ndarray.{name}() (its output size is read back to the host)")

        def method(*args, **kwargs):
            check(f"ndarray.{name}", args, kwargs)
            ua, uk = unwrap(args), unwrap(kwargs)
            with np.errstate(all="ignore"):
                r = wrap(attr(*ua, **uk), inputs=(self, *args, *kwargs.values()))
            record(lambda: attr(*ua, **uk), raws(r))
            return r
        return method


ndarray.__module__ = "cupy"


def _ufunc(name):
    from . import _functions

    return getattr(_functions, name)


def _operators():
    def binary(ufunc, reflected=False):
        def op(self, other):
            return _ufunc(ufunc)(other, self) if reflected else _ufunc(ufunc)(self, other)
        return op

    def in_place(ufunc):
        def op(self, other):
            _ufunc(ufunc)(self, other, out=self)
            return self
        return op

    for op, ufunc in [("add", "add"), ("sub", "subtract"), ("mul", "multiply"),
                      ("truediv", "true_divide"), ("floordiv", "floor_divide"),
                      ("mod", "remainder"), ("pow", "power"), ("matmul", "matmul"),
                      ("and", "bitwise_and"), ("or", "bitwise_or"), ("xor", "bitwise_xor"),
                      ("lshift", "left_shift"), ("rshift", "right_shift")]:
        setattr(ndarray, f"__{op}__", binary(ufunc))
        setattr(ndarray, f"__r{op}__", binary(ufunc, True))
        setattr(ndarray, f"__i{op}__", in_place(ufunc))
    for op, ufunc in [("eq", "equal"), ("ne", "not_equal"), ("lt", "less"),
                      ("le", "less_equal"), ("gt", "greater"), ("ge", "greater_equal")]:
        setattr(ndarray, f"__{op}__", binary(ufunc))
    for op, ufunc in [("neg", "negative"), ("abs", "absolute"), ("invert", "invert"),
                      ("pos", "positive")]:
        setattr(ndarray, f"__{op}__", lambda self, _u=ufunc: _ufunc(_u)(self))


_operators()

#: functions whose output size depends on the data: CuPy reads a count back to the host
SYNCING = frozenset({"nonzero", "flatnonzero", "argwhere", "unique", "compress", "extract"})


# -- arguments ------------------------------------------------------------------------------

def scalar(value):
    """``value`` as a kernel scalar, or TypeError as CuPy's CScalar raises: Python and NumPy
    scalars only (cupy/_core/_scalar.pyx; a 0-d NumPy array is not one)."""
    if type(value) in (bool, int, float, complex) or isinstance(value, np.generic):
        return value
    raise TypeError(f"Unsupported type {type(value)}")


def _host_in(x) -> bool:
    if isinstance(x, np.ndarray):
        return True
    if isinstance(x, (list, tuple)):
        return builtins.any(_host_in(v) for v in x)
    return False


def check(name: str, args, kwargs) -> None:
    """Refuse host arrays among a cupy function's arguments (cupy/_core/_kernel.pyx
    _preprocess_arg: anything but a device array or a scalar is "Unsupported type")."""
    for v in (*args, *kwargs.values()):
        if _host_in(v):
            what = type(v) if isinstance(v, np.ndarray) else "numpy.ndarray in a sequence"
            raise TypeError(f"Unsupported type {what} (a host array given to {name})")


def _index(key, shape):
    """``(make, advanced)``: ``make()`` builds the NumPy index for a device array's ``key``
    from the index arrays' contents at that moment (a replay reads them anew). Integer arrays
    wrap around as CuPy's do (difference.rst "Out-of-bounds indices"); a boolean mask's result
    size, and an index given as host data, need the host."""
    keys = key if isinstance(key, tuple) else (key,)
    parts, advanced, axis = [], False, 0
    for n, k in enumerate(keys):
        size = shape[axis] if axis < len(shape) else 0
        if isinstance(k, ndarray) or isinstance(k, (np.ndarray, list)):
            advanced = True
            if not isinstance(k, ndarray):
                refuse_in_capture("indexing with host data (a host-to-device copy)")
                k = np.array(k)
            else:
                k = k._a
            if k.dtype == np.bool_:
                refuse_in_capture("boolean-mask indexing (its result size is read back)")
                parts.append(k)
            else:
                parts.append((k, size))
        else:
            parts.append(k)
        if k is Ellipsis:
            axis = len(shape) - sum(1 for r in keys[n + 1:] if r is not None)
        elif k is not None:
            axis += 1

    def make():
        built = tuple(k[0] % k[1] if isinstance(k, tuple) and k[1] else
                      k[0] if isinstance(k, tuple) else k for k in parts)
        return built if isinstance(key, tuple) else built[0]
    return make, advanced


def unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: unwrap(v) for k, v in x.items()}
    return x


def wrap(r, inputs=()):
    """NumPy's result as the device's: arrays wrapped (an input's own wrapper where NumPy
    returned that very array), scalars as 0-d arrays."""
    if isinstance(r, tuple):
        return tuple(wrap(v, inputs) for v in r)
    if isinstance(r, np.ndarray):
        for w in inputs:
            if isinstance(w, ndarray) and w._a is r:
                return w
        return ndarray(r)
    if isinstance(r, np.generic):
        return ndarray(np.asarray(r))
    return r


def raws(r) -> tuple:
    if isinstance(r, ndarray):
        return (r._a,)
    if isinstance(r, tuple):
        return tuple(v._a for v in r if isinstance(v, ndarray))
    return ()


def reduce_(name, a, **kw):
    out = kw.get("out")
    if out is not None and not isinstance(out, ndarray):
        raise TypeError(f"out must be a cupy.ndarray, got {type(out)}")
    kw = {k: unwrap(v) for k, v in kw.items() if v is not None or k == "axis"}
    f, x = getattr(np, name), a._a
    if out is not None:
        before_write(out)
    with np.errstate(all="ignore"):
        r = wrap(f(x, **kw), inputs=(out,))
    record(lambda: f(x, **kw), raws(r))
    return r
