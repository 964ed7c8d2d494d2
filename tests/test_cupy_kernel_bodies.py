"""The CuPy backend's fused kernels, tested on the CPU: each ``cupy.ElementwiseKernel`` body
(``gpunet.backends.cupy_backend.OPTIM_KERNELS`` and ``DROPOUT_KERNEL``, with its preamble) is
compiled as host C++ inside the loop CuPy would wrap around it (in-params as const references,
out-params as references, ``raw`` params as pointers, scalars by value), for float and double,
and run against the update rules of torch.optim.SGD / Adam / AdamW written out here in float64
NumPy, and against the dropout masks of ``gpunet.dropout``.

What this cannot see: NVRTC itself, and device float contraction (FMA), which may move a result
by an ulp; ``tests/test_gpu_paths.py`` runs the kernels on a GPU. Skips without a C++ compiler.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from gpunet import dropout
from gpunet.backends.cupy_backend import (DROPOUT_KERNEL, DROPOUT_KEY_KERNEL, KERNEL_PREAMBLE,
                                          OPTIM_KERNELS)

KERNELS = {**OPTIM_KERNELS, "dropout": DROPOUT_KERNEL, "dropout_key": DROPOUT_KEY_KERNEL}

CXX = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler to build the kernel "
                                                    "bodies for the host")
_C_TYPES = {"float64": "double", "float32": "float", "bool": "bool", "int64": "long long",
            "uint64": "unsigned long long"}
_CTYPES = {"double": ctypes.c_double, "float": ctypes.c_float, "bool": ctypes.c_bool,
           "long long": ctypes.c_longlong, "unsigned long long": ctypes.c_ulonglong}


def parse_params(text):
    """CuPy's parameter list ("T g, raw float64 h, bool first") as (raw, type, name) triples."""
    out = []
    for part in text.split(","):
        words = part.split()
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        assert len(words) == 2, part
        out.append((raw, words[0], words[1]))
    return out


def kernel_source(name, in_params, out_params, body):
    """Host C++ for one ElementwiseKernel: ``<name>_float`` and ``<name>_double`` taking n, then
    one pointer per array param and one value per scalar, in CuPy's argument order."""
    ins, outs = parse_params(in_params), parse_params(out_params)
    sig, bind, call = ["long long n"], [], ["n"]
    for raw, typ, var in ins:
        ctype = "T" if typ == "T" else _C_TYPES[typ]
        if raw:
            sig.append(f"const {ctype}* {var}")
        elif typ == "T":
            sig.append(f"const T* {var}_")
            bind.append(f"const T& {var} = {var}_[i];")
        else:
            sig.append(f"{ctype} {var}")
        call.append(var if raw or typ != "T" else f"{var}_")
    for raw, typ, var in outs:
        assert typ == "T" and not raw, (typ, var)
        sig.append(f"T* {var}_")
        bind.append(f"T& {var} = {var}_[i];")
        call.append(f"{var}_")
    body_fn = (f"template <typename T> static void {name}({', '.join(sig)}) {{\n"
               f"    for (long long i = 0; i < n; ++i) {{\n        {' '.join(bind)}\n"
               f"        {{ {body} }}\n    }}\n}}\n")
    exports = ""
    for t in ("float", "double"):
        concrete = ", ".join(s.replace("T*", f"{t}*").replace("T&", f"{t}&") for s in sig)
        exports += (f'extern "C" void {name}_{t}({concrete}) '
                    f"{{ {name}<{t}>({', '.join(call)}); }}\n")
    return body_fn + exports


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """name -> {"float32": fn, "float64": fn}, fn(n, *args) with arrays as numpy arrays."""
    folder = tmp_path_factory.mktemp("kernels")
    src = folder / "kernels.cpp"
    src.write_text("#include <cmath>\nusing std::pow; using std::sqrt;\n#define __device__\n"
                   + KERNEL_PREAMBLE + "".join(kernel_source(name, *spec)
                                               for name, spec in KERNELS.items()))
    lib_path = folder / "kernels.so"
    done = subprocess.run([CXX, "-O2", "-shared", "-fPIC", "-o", str(lib_path), str(src)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # a body that does not compile fails here
    lib = ctypes.CDLL(str(lib_path))
    out = {}
    for name, (in_params, out_params, _) in KERNELS.items():
        params = parse_params(in_params) + parse_params(out_params)
        for dtype, t in (("float32", "float"), ("float64", "double")):
            fn = getattr(lib, f"{name}_{t}")
            fn.argtypes = [ctypes.c_longlong] + [
                ctypes.c_void_p if raw or typ == "T" else _CTYPES[_C_TYPES[typ]]
                for raw, typ, _ in params]
            out.setdefault(name, {})[dtype] = _caller(fn, params)
    return out


def _caller(fn, params):
    def call(*args):
        assert len(args) == len(params)
        n = next(a.size for a, (raw, typ, _) in zip(args, params) if typ == "T" and not raw)
        converted = []
        for a, (raw, typ, _) in zip(args, params):
            if raw or typ == "T":
                assert a.flags.c_contiguous
                converted.append(a.ctypes.data)
            else:
                converted.append(a)
        fn(n, *converted)
    return call


# -- the update rules, float64 ------------------------------------------------------------------

def sgd_reference(p, g, buf, lr, momentum, dampening, nesterov, wd, first):
    """torch.optim.SGD: returns (p, buf)."""
    g = g + wd * p
    if momentum:
        buf = g if first else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


def adam_reference(p, g, m, v, lr, t, beta1, beta2, eps, wd, decoupled):
    """torch.optim.Adam (decoupled: AdamW): returns (p, m, v)."""
    if decoupled:
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - beta2**t) + eps
    return p - lr / (1 - beta1**t) * m / denom, m, v


def _arrays(dtype, n=1037, seed=0):
    rng = np.random.default_rng(seed)
    p, g, state = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(n)).astype(dtype) * 1e-2
    return p, g, state, v


def _close(got, ref, dtype):
    """float64: to rounding; float32: the kernel rounds the float64 result once, so within one
    ulp of the rounded reference (the orders of operations differ)."""
    if dtype == "float64":
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)
    else:
        np.testing.assert_array_max_ulp(got, ref.astype(np.float32), maxulp=1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_plain_sgd_body(kernels, dtype, wd):
    p, g, _, _ = _arrays(dtype)
    hyper = np.array([0.03, 7.0])
    ref, _ = sgd_reference(p.astype(np.float64), g.astype(np.float64), None, 0.03, 0.0, 0.0,
                           False, wd, False)
    got = p.copy()
    kernels["sgd"][dtype](g, hyper, wd, got)
    _close(got, ref, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dampening, nesterov", [(0.0, False), (0.0, True), (0.2, False)])
@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_momentum_sgd_body(kernels, dtype, dampening, nesterov, first, wd):
    p, g, buf, _ = _arrays(dtype, seed=1)
    lr, momentum = 0.05, 0.9
    ref_p, ref_buf = sgd_reference(p.astype(np.float64), g.astype(np.float64),
                                   buf.astype(np.float64), lr, momentum, dampening, nesterov,
                                   wd, first)
    got_p, got_buf = p.copy(), buf.copy()
    kernels["sgd_momentum"][dtype](g, np.array([lr, 3.0]), momentum, dampening, nesterov, wd,
                                   first, got_p, got_buf)
    _close(got_buf, ref_buf, dtype)
    _close(got_p, ref_p, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("decoupled, wd", [(False, 0.0), (False, 0.02), (True, 0.01)])
@pytest.mark.parametrize("t", [1.0, 2.0, 250.0])
def test_adam_body(kernels, dtype, decoupled, wd, t):
    p, g, m, v = _arrays(dtype, seed=2)
    lr, beta1, beta2, eps = 1e-3, 0.9, 0.999, 1e-8
    ref = adam_reference(*(a.astype(np.float64) for a in (p, g, m, v)), lr, t, beta1, beta2,
                         eps, wd, decoupled)
    got = [p.copy(), m.copy(), v.copy()]
    kernels["adam"][dtype](g, np.array([lr, t]), beta1, beta2, eps, wd, decoupled, *got)
    for a, r in zip(got[::-1], ref[::-1]):  # v, m, then p
        _close(a, r, dtype)


def test_the_generated_loop_is_what_cupy_would_bind():
    """The parser reads CuPy's parameter syntax as CuPy does: checked against cupy's own
    parser where cupy imports (it needs no GPU to parse)."""
    cupy = pytest.importorskip("cupy", reason="cupy is not installed here")
    for name, (in_params, out_params, body) in KERNELS.items():
        k = cupy.ElementwiseKernel(in_params, out_params, body, f"gpunet_{name}")
        mine = parse_params(in_params) + parse_params(out_params)
        assert [(p.raw, p.name) for p in k.params[:len(mine)]] == [(r, n) for r, _, n in mine]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seed, step, layer, p, row_offset", [
    (0, 0, 0, 0.5, 0), (77, 12, 1, 0.2, 4), (2**64 - 1, 2**33 + 1, 3, 0.9, 100)])
def test_dropout_body(kernels, dtype, seed, step, layer, p, row_offset):
    """The kernel's mask is gpunet.dropout's, to the bit (the step read through a pointer, as
    a captured graph reads it from the device)."""
    rows, width = 7, 33
    got = np.full(rows * width, np.nan, dtype=dtype)  # poisoned: every element is written
    kernels["dropout"][dtype](np.array([step], dtype=np.uint64), dropout.seed_key(seed), layer,
                              row_offset * width, dropout.threshold(p), 1.0 / (1.0 - p), got)
    want = dropout.mask(np, (rows, width), p, dropout.stream_key(seed, step, layer),
                        row_offset, dtype)
    np.testing.assert_array_equal(got.reshape(rows, width), want)
    # the eager kernel: the key folded on the host (gpunet.dropout.key_of), the same mask
    keyed = np.full(rows * width, np.nan, dtype=dtype)
    kernels["dropout_key"][dtype](dropout.key_of(dropout.seed_key(seed), step, layer),
                                  row_offset * width, dropout.threshold(p), 1.0 / (1.0 - p),
                                  keyed)
    np.testing.assert_array_equal(keyed.reshape(rows, width), want)
