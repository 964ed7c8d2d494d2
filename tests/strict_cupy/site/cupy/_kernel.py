"""``cupy.ElementwiseKernel``: the kernel's own body, compiled as host C++ and run on the CPU.

CuPy wraps a body in a loop over the elements (cupy/_core/_kernel.pyx
``_get_simple_elementwise_kernel_code``) and compiles it with NVRTC. The stand-in wraps the
same body in the same kind of loop, compiles it with the host's C++ compiler (g++, c++ or
clang++; once per body, types and argument kinds, cached on disk) and calls it through ctypes:
the numbers are the body's, not a translation of it. In-params are read by value, out-params
bound by reference, ``raw`` params are pointers indexed by the body, ``i`` is the element's
index. What this cannot see is NVRTC itself and device float contraction (FMA): an ulp.

Arguments follow CuPy's rules: device arrays or Python/NumPy scalars (a host array, even 0-d,
is "Unsupported type", as cupy/_core/_scalar.pyx CScalar says); a placeholder type (``T``)
takes the dtype of the arrays bound to it, which must agree; typed params take arrays of that
dtype; non-raw arrays broadcast to one shape, which the out-params must have.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import numpy as np

from ._core import before_write, ndarray, record

_C = {"float64": ("double", ctypes.c_double), "float32": ("float", ctypes.c_float),
      "int64": ("long long", ctypes.c_longlong), "int32": ("int", ctypes.c_int),
      "uint64": ("unsigned long long", ctypes.c_ulonglong),
      "uint32": ("unsigned int", ctypes.c_uint), "int8": ("signed char", ctypes.c_byte),
      "uint8": ("unsigned char", ctypes.c_ubyte), "bool": ("bool", ctypes.c_bool)}
_PRELUDE = """#include <cmath>
#include <cstdint>
#include <algorithm>
using namespace std;
#define __device__
#define __forceinline__ inline
"""
CXX = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
_built: dict = {}
_lock = threading.Lock()


class _Param:
    def __init__(self, text: str, out: bool):
        words = text.split()
        if not words or len(words) > 3 or (len(words) == 3 and words[0] != "raw"):
            raise ValueError(f"Syntax error: {text}")
        self.raw, self.type, self.name, self.out = len(words) == 3, words[-2], words[-1], out
        if len(self.type) > 1 and self.type not in _C:
            np.dtype(self.type)  # (a dtype name CuPy knows but this stand-in does not map)
            raise NotImplementedError(f"the stand-in has no C type for {self.type}")


def _params(text: str, out: bool):
    return [_Param(p, out) for p in text.split(",") if p.strip()]


class ElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, **kwargs):
        self.in_params, self.out_params = _params(in_params, False), _params(out_params, True)
        self.params = self.in_params + self.out_params
        self.operation, self.name, self.preamble = operation, name, preamble
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout

    def __call__(self, *args, size=None, block_size=None, stream=None):
        if size is not None:
            raise NotImplementedError("the stand-in's ElementwiseKernel takes no size=")
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}")
        for a in args:
            if isinstance(a, np.ndarray) or not (
                    isinstance(a, ndarray) or type(a) in (bool, int, float, complex)
                    or isinstance(a, np.generic)):
                raise TypeError(f"Unsupported type {type(a)}")
        types = self._types(args)
        arrays = [a for a, p in zip(args, self.params) if isinstance(a, ndarray) and not p.raw]
        shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
        if len(args) == self.nin:  # out-params left out: made here
            args = (*args, *(ndarray(np.empty(shape, dtype=types[p.type]))
                             for p in self.out_params))
        for a, p in zip(args[self.nin:], self.out_params):
            if not isinstance(a, ndarray):
                raise TypeError(f"out-param {p.name} of {self.name!r} must be a device array")
            if a.shape != shape:
                raise ValueError(f"out-param {p.name} of {self.name!r} is {a.shape}, the "
                                 f"broadcast shape {shape}")
        fn = self._compiled(types, tuple(isinstance(a, ndarray) for a in args))
        host = [a._a if isinstance(a, ndarray) else a for a in args]
        kinds = [(p, types[p.type]) for p in self.params]

        def launch():
            call, back = [int(np.prod(shape))], []
            for a, (p, dtype) in zip(host, kinds):
                if not isinstance(a, np.ndarray):
                    call.append(dtype.type(a).item())
                    continue
                if p.raw or p.out:
                    buf = a if a.flags.c_contiguous else np.ascontiguousarray(a)
                else:
                    buf = np.ascontiguousarray(np.broadcast_to(a, shape))
                if p.out and buf is not a:
                    back.append((a, buf))
                call.append(buf.ctypes.data)
            fn(*call)
            for a, buf in back:
                a[...] = buf

        before_write(*(a for a, p in zip(args, self.params) if p.out))
        launch()
        record(launch)
        return args[self.nin] if self.nout == 1 else tuple(args[self.nin:])

    def _types(self, args) -> dict:
        """Each param type's dtype: typed params their own, placeholders their arrays'."""
        types = {}
        for a, p in zip(args, self.params):
            if len(p.type) > 1:
                types[p.type] = np.dtype(p.type)
                if isinstance(a, ndarray) and a.dtype != types[p.type]:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype} {p.type}")
            elif isinstance(a, ndarray):
                if types.setdefault(p.type, a.dtype) != a.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype} "
                                    f"{types[p.type]}")
        for p in self.params:
            if p.type not in types:
                raise TypeError(f"Cannot determine the type of {p.type} in {self.name!r}")
            if types[p.type].name not in _C:
                raise NotImplementedError(f"the stand-in has no C type for {types[p.type]}")
        return types

    def _compiled(self, types, is_array):
        sig, bind = ["long long _n"], []
        for p, arr in zip(self.params, is_array):
            c = _C[types[p.type].name][0]
            if p.raw:
                sig.append(f"{'' if p.out else 'const '}{c}* {p.name}")
            elif not arr:
                sig.append(f"{c} {p.name}")
            else:
                sig.append(f"{'' if p.out else 'const '}{c}* _raw_{p.name}")
                bind.append(f"{c}{'&' if p.out else ''} {p.name} = _raw_{p.name}[i];")
        typedefs = "".join(f"typedef {_C[t.name][0]} {k};\n" for k, t in types.items()
                           if len(k) == 1)
        source = (_PRELUDE + typedefs + self.preamble + "\n"
                  f'extern "C" void gpunet_standin_kernel({", ".join(sig)}) {{\n'
                  f"  for (long long i = 0; i < _n; ++i) {{\n    {' '.join(bind)}\n"
                  f"    {{ {self.operation}; }}\n  }}\n}}\n")
        key = hashlib.sha256(source.encode()).hexdigest()[:24]
        with _lock:
            fn = _built.get(key)
            if fn is None:
                fn = ctypes.CDLL(str(_build(source, key))).gpunet_standin_kernel
                fn.restype = None
                fn.argtypes = [ctypes.c_longlong] + [
                    ctypes.c_void_p if p.raw or arr else _C[types[p.type].name][1]
                    for p, arr in zip(self.params, is_array)]
                _built[key] = fn
        return fn


def _build(source: str, key: str):
    """The shared library of ``source``, compiled once (an atomic rename: ranks share it)."""
    if CXX is None:
        raise RuntimeError("the strict CuPy stand-in runs ElementwiseKernel bodies as host C++ "
                           "and found no C++ compiler (g++, c++ or clang++)")
    folder = os.environ.get("GPUNET_STRICT_CUPY_CACHE") or os.path.join(
        tempfile.gettempdir(), f"gpunet-strict-cupy-{os.getuid()}")
    os.makedirs(folder, exist_ok=True)
    lib = os.path.join(folder, f"{key}.so")
    if not os.path.exists(lib):
        src = os.path.join(folder, f"{key}.{os.getpid()}.cpp")
        with open(src, "w") as f:
            f.write(source)
        tmp = f"{lib}.{os.getpid()}.tmp"
        done = subprocess.run([CXX, "-O2", "-shared", "-fPIC", "-o", tmp, src],
                              capture_output=True, text=True)
        os.unlink(src)
        if done.returncode:
            raise RuntimeError(f"the kernel body does not compile:\n{done.stderr}")
        os.replace(tmp, lib)
    return lib
