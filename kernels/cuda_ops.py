"""numba.cuda kernels for gpunet's CuPy backend.

Pattern: elementwise kernels are grid-stride loops over the flat C-contiguous buffer
(``bias_act_forward`` strides over rows on grid y and columns on grid x, so that no thread
divides by cols). Row-wise kernels run one block per row: each thread folds its strided
slice of the row into an online (max, sum of exp(x - max)), a shared-memory tree combines
the block's pairs, and a second pass over the row writes the result. x is read from
global memory twice (once for max-and-sum, once for the write) and out written once.

Arrays are cupy arrays (or anything with ``__cuda_array_interface__``) on a GPU, numpy arrays
under ``NUMBA_ENABLE_CUDASIM=1``; the wrappers do not care which. With cupy inputs, kernels
launch on cupy's current stream. Sums accumulate in the input dtype (float32 stays float32:
each thread adds a few dozen terms, the tree adds log2(threads) levels).

Each kernel compiles on first use, once per (op, activation, dtype[, threads]), with an
explicit signature. With cupy arrays it is compiled to PTX by numba, loaded by CuPy and
launched through CuPy with its flat parameter list (see "launching" below): numba's own
dispatch costs ~80-150 us of host time per launch with cupy arrays (it rebuilds a
device-array view of every argument), CuPy's launch about a tenth of that (to be measured:
``scripts/bench_kernels.py`` reports host us per call). numba device arrays and the
simulator go through numba's dispatcher, its configured launchers cached per grid, block and
stream.
"""

from __future__ import annotations

import functools
import math
import re
import sys

import numpy as np

from . import _checks, activations, compat

__all__ = [
    "act_forward",
    "bias_act_forward",
    "act_backward",
    "logsumexp",
    "log_softmax",
    "softmax",
    "softmax_cross_entropy",
    "layer_norm_forward",
    "layer_norm_backward",
    "batch_norm_forward",
    "batch_norm_backward",
]

cuda = None
"""numba.cuda, imported on first use. Kernels must reach it as a module global: the
simulator swaps module globals bound to numba.cuda for its fake module while a kernel runs."""

ELEMENTWISE_THREADS = 256
"""Threads per block of the elementwise kernels."""
MAX_BLOCKS = 2048
"""Cap on blocks for the grid-stride kernels (an H100 keeps ~1000 blocks of 256 resident)."""
ROW_THREADS = None
"""Threads per block (a power of two) of the row-wise kernels; None picks from cols."""


def _numba_cuda():
    global cuda
    if cuda is None:
        compat.ensure_numpy_compat()
        from numba import cuda as numba_cuda

        cuda = numba_cuda
    return cuda


@functools.cache
def _simulating():
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def _numba_type(dtype):
    from numba import from_dtype

    return from_dtype(np.dtype(dtype))


# --- kernel sources ----------------------------------------------------------------------
# Each *_source returns (python function, signature) so that tests can also compile them to
# PTX without a GPU; _compile turns one into a kernel.


@functools.cache
def _device_functions(name, dtype):
    act = activations.get(name)
    t = np.dtype(dtype).type
    forward, grad = act.builder(t(0), t(1), math.exp, math.tanh, math.erfc)
    jit = _numba_cuda().jit(device=True)
    return jit(forward), jit(grad)


def _act_forward_source(name, dtype):
    f, _ = _device_functions(name, dtype)

    def kernel(z, out, slope):
        for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
            out[i] = f(z[i], slope)

    t = _numba_type(dtype)
    return kernel, f"void({t}[::1], {t}[::1], {t})"


def _bias_act_forward_source(name, dtype):
    f, _ = _device_functions(name, dtype)

    def kernel(z, b, out, slope):
        rows, cols = z.shape
        c0 = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        cstep = cuda.gridDim.x * cuda.blockDim.x
        for r in range(cuda.blockIdx.y, rows, cuda.gridDim.y):
            for c in range(c0, cols, cstep):
                out[r, c] = f(z[r, c] + b[c], slope)

    t = _numba_type(dtype)
    return kernel, f"void({t}[:, ::1], {t}[::1], {t}[:, ::1], {t})"


def _act_backward_source(name, dtype):
    _, g = _device_functions(name, dtype)

    def kernel(dy, src, out, slope):
        for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
            out[i] = g(dy[i], src[i], slope)

    t = _numba_type(dtype)
    return kernel, f"void({t}[::1], {t}[::1], {t}[::1], {t})"


@functools.cache
def _row_stats_function(dtype, threads):
    """Device function: (max, sum of exp(x - max)) of row ``row``, returned to every thread.

    -inf entries add nothing (exp(-inf - m) would be NaN while m is still -inf); NaN
    entries make the sum NaN.
    """
    t = np.dtype(dtype).type
    zero, one, neg_inf = t(0), t(1), t(-np.inf)

    def row_stats(x, row, shared_m, shared_s):
        tid = cuda.threadIdx.x
        m = neg_inf
        s = zero
        for j in range(tid, x.shape[1], threads):
            v = x[row, j]
            if v > m:
                s = s * math.exp(m - v) + one
                m = v
            elif v != neg_inf:
                s += math.exp(v - m)
        shared_m[tid] = m
        shared_s[tid] = s
        cuda.syncthreads()
        step = threads // 2
        while step > 0:
            if tid < step:
                m1, s1 = shared_m[tid], shared_s[tid]
                m2, s2 = shared_m[tid + step], shared_s[tid + step]
                if m2 > m1:
                    m1, s1, m2, s2 = m2, s2, m1, s1
                if m2 != neg_inf:
                    s1 += s2 * math.exp(m2 - m1)
                else:
                    s1 += s2  # 0, or NaN to pass on
                shared_m[tid] = m1
                shared_s[tid] = s1
            cuda.syncthreads()
            step //= 2
        return shared_m[0], shared_s[0]

    return _numba_cuda().jit(device=True)(row_stats)


@functools.cache
def _log_function(dtype):
    """Device function: log(s) for the row sums s >= 0; log(0) = -inf without a domain error."""
    t = np.dtype(dtype).type
    zero, neg_inf = t(0), t(-np.inf)

    def log_sum(s):
        if s == zero:
            return neg_inf  # a row of only -inf (math.log(0) raises in the simulator)
        return math.log(s)

    return _numba_cuda().jit(device=True)(log_sum)


def _rowwise_source(op, dtype, threads):
    stats = _row_stats_function(dtype, threads)
    log_sum = _log_function(dtype)
    nbt = _numba_type(dtype)

    if op == "logsumexp":

        def kernel(x, out):
            shared_m = cuda.shared.array(threads, nbt)
            shared_s = cuda.shared.array(threads, nbt)
            row = cuda.blockIdx.x
            m, s = stats(x, row, shared_m, shared_s)
            if cuda.threadIdx.x == 0:
                out[row] = m + log_sum(s)

        return kernel, f"void({nbt}[:, ::1], {nbt}[::1])"

    if op == "log_softmax":

        def kernel(x, out):
            shared_m = cuda.shared.array(threads, nbt)
            shared_s = cuda.shared.array(threads, nbt)
            row = cuda.blockIdx.x
            m, s = stats(x, row, shared_m, shared_s)
            ls = log_sum(s)
            for j in range(cuda.threadIdx.x, x.shape[1], threads):
                # (x - m) first: exact or nearly, where x - (m + ls) would round m + ls.
                out[row, j] = (x[row, j] - m) - ls

        return kernel, f"void({nbt}[:, ::1], {nbt}[:, ::1])"

    if op == "softmax":

        def kernel(x, out):
            shared_m = cuda.shared.array(threads, nbt)
            shared_s = cuda.shared.array(threads, nbt)
            row = cuda.blockIdx.x
            m, s = stats(x, row, shared_m, shared_s)
            for j in range(cuda.threadIdx.x, x.shape[1], threads):
                out[row, j] = math.exp(x[row, j] - m) / s

        return kernel, f"void({nbt}[:, ::1], {nbt}[:, ::1])"

    raise ValueError(f"unknown row-wise op {op!r}")


def _softmax_cross_entropy_source(dtype, label_dtype, threads):
    stats = _row_stats_function(dtype, threads)
    log_sum = _log_function(dtype)
    nbt = _numba_type(dtype)
    nbl = _numba_type(label_dtype)
    t = np.dtype(dtype).type
    one, nan = t(1), t(np.nan)

    def kernel(logits, labels, loss, dlogits, scale):
        shared_m = cuda.shared.array(threads, nbt)
        shared_s = cuda.shared.array(threads, nbt)
        row = cuda.blockIdx.x
        cols = logits.shape[1]
        label = labels[row]
        valid = 0 <= label < cols
        # Read before any thread writes dlogits: dlogits may be logits.
        xl = logits[row, label] if valid else nan
        m, s = stats(logits, row, shared_m, shared_s)
        ls = log_sum(s)
        if cuda.threadIdx.x == 0:
            # No exception can leave a kernel: an out-of-range label poisons its row.
            loss[row] = (m - xl) + ls if valid else nan
        for j in range(cuda.threadIdx.x, cols, threads):
            p = math.exp(logits[row, j] - m) / s
            if not valid:
                dlogits[row, j] = nan
            elif j == label:
                dlogits[row, j] = scale * (p - one)
            else:
                dlogits[row, j] = scale * p

    return kernel, f"void({nbt}[:, ::1], {nbl}[::1], {nbt}[::1], {nbt}[:, ::1], {nbt})"


@functools.cache
def _block_sum_function(dtype, threads):
    """Device function: the sum of every thread's ``v`` in the block, returned to every
    thread (a shared-memory tree in a fixed order; the shared array may be reused after)."""

    def block_sum(v, shared):
        tid = cuda.threadIdx.x
        shared[tid] = v
        cuda.syncthreads()
        step = threads // 2
        while step > 0:
            if tid < step:
                shared[tid] += shared[tid + step]
            cuda.syncthreads()
            step //= 2
        total = shared[0]
        cuda.syncthreads()  # every thread has read it before the array is written again
        return total

    return _numba_cuda().jit(device=True)(block_sum)


def _layer_norm_forward_source(dtype, threads):
    block_sum = _block_sum_function(dtype, threads)
    nbt = _numba_type(dtype)
    t = np.dtype(dtype).type
    zero, one = t(0), t(1)

    def kernel(z, gamma, beta, eps, n, xhat, rstd):
        shared = cuda.shared.array(threads, nbt)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        d = z.shape[1]
        # Sums of z - z0 (the row's first value): exact for a constant row, small terms for
        # a row far from zero; then the centred squares about the mean. Everything is read
        # before any thread writes: n may be z.
        # The centred values are (z - z0) - shift, shift the mean of z - z0: z - z0 is exact
        # for values near z0, and the rounding of the mean at z's magnitude never enters them.
        width = t(d)  # (an int64 divisor would take the division to float64)
        z0 = z[row, 0]
        s = zero
        for j in range(tid, d, threads):
            s += z[row, j] - z0
        shift = block_sum(s, shared) / width
        q = zero
        for j in range(tid, d, threads):
            c = (z[row, j] - z0) - shift
            q += c * c
        rs = one / math.sqrt(block_sum(q, shared) / width + eps)
        if tid == 0:
            rstd[row, 0] = rs
        for j in range(tid, d, threads):
            xh = ((z[row, j] - z0) - shift) * rs
            xhat[row, j] = xh
            n[row, j] = xh * gamma[j] + beta[j]

    return kernel, (f"void({nbt}[:, ::1], {nbt}[::1], {nbt}[::1], {nbt}, {nbt}[:, ::1], "
                    f"{nbt}[:, ::1], {nbt}[:, ::1])")


def _layer_norm_backward_source(dtype, threads):
    block_sum = _block_sum_function(dtype, threads)
    nbt = _numba_type(dtype)
    t = np.dtype(dtype).type
    zero = t(0)

    def kernel(dn, xhat, rstd, gamma, dz):
        shared = cuda.shared.array(threads, nbt)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        d = dn.shape[1]
        sg = zero
        sgx = zero
        for j in range(tid, d, threads):
            g = dn[row, j] * gamma[j]
            sg += g
            sgx += g * xhat[row, j]
        width = t(d)
        mean_g = block_sum(sg, shared) / width
        mean_gx = block_sum(sgx, shared) / width
        rs = rstd[row, 0]
        for j in range(tid, d, threads):  # (each element read, then written: dz may be dn)
            dz[row, j] = (dn[row, j] * gamma[j] - mean_g - xhat[row, j] * mean_gx) * rs

    return kernel, f"void({nbt}[:, ::1], {nbt}[:, ::1], {nbt}[:, ::1], {nbt}[::1], {nbt}[:, ::1])"


@functools.cache
def _kahan_function(dtype):
    """Device function: (s, c) after adding v to the compensated sum s with carry c (no
    fastmath here: the compiler keeps the order); a sum that overflows stays inf with a carry
    of 0 (not inf - inf, which would turn it into NaN)."""
    zero = np.dtype(dtype).type(0)

    def kahan_add(s, c, v):
        y = v - c
        t = s + y
        if math.isinf(t):
            return t, zero
        return t, (t - s) - y

    return _numba_cuda().jit(device=True)(kahan_add)


LN_COLUMN_LANES = 16
"""Row lanes (threadIdx.y) per column of the layer norm's dgamma / dbeta kernel."""


def _layer_norm_columns_source(dtype, lanes):
    kahan = _kahan_function(dtype)
    nbt = _numba_type(dtype)
    zero = np.dtype(dtype).type(0)

    def kernel(dn, xhat, dgamma, dbeta):
        # A tile of 32 columns; each of ``lanes`` row lanes sums every lanes-th row with
        # Kahan compensation, then lane 0 adds the lanes in order: no atomics, the same
        # bits at every call.
        part_b = cuda.shared.array((lanes, 32), nbt)
        part_g = cuda.shared.array((lanes, 32), nbt)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        j = cuda.blockIdx.x * 32 + tx
        rows, d = dn.shape
        sb = zero
        cb = zero
        sg = zero
        cg = zero
        if j < d:
            for r in range(ty, rows, lanes):
                v = dn[r, j]
                sb, cb = kahan(sb, cb, v)
                sg, cg = kahan(sg, cg, v * xhat[r, j])
        part_b[ty, tx] = sb
        part_g[ty, tx] = sg
        cuda.syncthreads()
        if ty == 0 and j < d:
            for k in range(1, lanes):
                sb += part_b[k, tx]
                sg += part_g[k, tx]
            dbeta[j] = sb
            dgamma[j] = sg

    return kernel, f"void({nbt}[:, ::1], {nbt}[:, ::1], {nbt}[::1], {nbt}[::1])"


BN_COLUMN_LANES = 32
"""Row lanes (threadIdx.y) per 32-column tile of the batch norm kernels (a block of 1024)."""




@functools.cache
def _lane_total_function(dtype, lanes):
    """Device function: the sum over the block's row lanes (threadIdx.y) of each column's
    ``v``, added in lane order by lane 0 and returned to every lane (the shared array may be
    reused after)."""

    def lane_total(v, part):
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        part[ty, tx] = v
        cuda.syncthreads()
        if ty == 0:
            for k in range(1, lanes):
                v += part[k, tx]
            part[0, tx] = v
        cuda.syncthreads()
        total = part[0, tx]
        cuda.syncthreads()  # every lane has read it before the array is written again
        return total

    return _numba_cuda().jit(device=True)(lane_total)


def _batch_norm_forward_source(dtype, lanes):
    lane_total = _lane_total_function(dtype, lanes)
    kahan = _kahan_function(dtype)
    nbt = _numba_type(dtype)
    t = np.dtype(dtype).type
    zero, one = t(0), t(1)

    def kernel(z, gamma, beta, eps, n, xhat, rstd, mean_out, var_out):
        # One block per tile of 32 columns (features), its lanes striding over the rows; three
        # passes over the tile: sums of z - z[0] (exact for a constant feature, small terms far
        # from zero), the centred squares about the mean, then xhat and n. Kahan sums in each
        # lane, the lanes added in order: the same bits at every call. Every read of a column
        # happens before its writes (n may be z).
        part = cuda.shared.array((lanes, 32), nbt)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        j = cuda.blockIdx.x * 32 + tx
        rows, d = z.shape
        inside = j < d
        # The centred values are (z - z0) - shift, shift the mean of z - z0: z - z0 is exact
        # for values near z0, and the rounding of the mean at z's magnitude never enters them.
        height = t(rows)  # (an int64 divisor would take the division to float64)
        z0 = zero
        s = zero
        c = zero
        if inside:
            z0 = z[0, j]
            for r in range(ty, rows, lanes):
                s, c = kahan(s, c, z[r, j] - z0)
        shift = lane_total(s, part) / height
        q = zero
        c = zero
        if inside:
            for r in range(ty, rows, lanes):
                v = (z[r, j] - z0) - shift
                q, c = kahan(q, c, v * v)
        var = lane_total(q, part) / height
        rs = one / math.sqrt(var + eps)
        if inside:
            if ty == 0:
                mean_out[0, j] = z0 + shift
                var_out[0, j] = var
                rstd[0, j] = rs
            g, b = gamma[j], beta[j]
            for r in range(ty, rows, lanes):
                xh = ((z[r, j] - z0) - shift) * rs
                xhat[r, j] = xh
                n[r, j] = xh * g + b

    return kernel, (f"void({nbt}[:, ::1], {nbt}[::1], {nbt}[::1], {nbt}, {nbt}[:, ::1], "
                    f"{nbt}[:, ::1], {nbt}[:, ::1], {nbt}[:, ::1], {nbt}[:, ::1])")


def _batch_norm_backward_source(dtype, lanes):
    lane_total = _lane_total_function(dtype, lanes)
    kahan = _kahan_function(dtype)
    nbt = _numba_type(dtype)
    t = np.dtype(dtype).type
    zero = t(0)

    def kernel(dn, xhat, rstd, gamma, dz, dgamma, dbeta):
        # The column sums dJ/dbeta = sum dn and dJ/dgamma = sum dn xhat (Kahan in each lane,
        # lanes in order), then dJ/dz = rstd (g - mean(g) - xhat mean(g xhat)) with g = dn
        # gamma, whose means over the batch are gamma dbeta / B and gamma dgamma / B. dz may
        # be dn: the sums have read the tile before any lane writes it.
        part = cuda.shared.array((lanes, 32), nbt)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        j = cuda.blockIdx.x * 32 + tx
        rows, d = dn.shape
        inside = j < d
        sb = zero
        cb = zero
        sg = zero
        cg = zero
        if inside:
            for r in range(ty, rows, lanes):
                v = dn[r, j]
                sb, cb = kahan(sb, cb, v)
                sg, cg = kahan(sg, cg, v * xhat[r, j])
        sb = lane_total(sb, part)
        sg = lane_total(sg, part)
        if inside:
            if ty == 0:
                dbeta[j] = sb
                dgamma[j] = sg
            height = t(rows)
            g = gamma[j]
            mean_g = g * sb / height
            mean_gx = g * sg / height
            rs = rstd[0, j]
            for r in range(ty, rows, lanes):
                dz[r, j] = (dn[r, j] * g - mean_g - xhat[r, j] * mean_gx) * rs

    return kernel, (f"void({nbt}[:, ::1], {nbt}[:, ::1], {nbt}[:, ::1], {nbt}[::1], "
                    f"{nbt}[:, ::1], {nbt}[::1], {nbt}[::1])")


_SOURCES = {
    "act_forward": _act_forward_source,
    "bias_act_forward": _bias_act_forward_source,
    "act_backward": _act_backward_source,
    "rowwise": _rowwise_source,
    "softmax_cross_entropy": _softmax_cross_entropy_source,
    "layer_norm_forward": _layer_norm_forward_source,
    "layer_norm_backward": _layer_norm_backward_source,
    "layer_norm_columns": _layer_norm_columns_source,
    "batch_norm_forward": _batch_norm_forward_source,
    "batch_norm_backward": _batch_norm_backward_source,
}


def kernel_sources():
    """Every (key, python function, signature) this module can compile, float32 and float64.

    For compile checks without a GPU (``numba.cuda.compile_ptx``); the row-wise kernels are
    listed at 128 threads.
    """
    out = []
    for dtype in _checks.FLOAT_DTYPES:
        for name in activations.ACTIVATIONS:
            for op in ("act_forward", "bias_act_forward", "act_backward"):
                key = (op, name, dtype.name)
                out.append((key, *_SOURCES[op](name, dtype)))
        for op in ("logsumexp", "log_softmax", "softmax"):
            out.append((("rowwise", op, dtype.name), *_rowwise_source(op, dtype, 128)))
        for ldt in _checks.LABEL_DTYPES:
            key = ("softmax_cross_entropy", ldt.name, dtype.name)
            out.append((key, *_softmax_cross_entropy_source(dtype, ldt, 128)))
        for op in ("layer_norm_forward", "layer_norm_backward"):
            out.append(((op, dtype.name), *_SOURCES[op](dtype, 128)))
        out.append((("layer_norm_columns", dtype.name),
                     *_layer_norm_columns_source(dtype, LN_COLUMN_LANES)))
        for op in ("batch_norm_forward", "batch_norm_backward"):
            out.append(((op, dtype.name), *_SOURCES[op](dtype, BN_COLUMN_LANES)))
    return out


@functools.cache
def _compile(kind, *key):
    fn, sig = _SOURCES[kind](*key)
    compat.ensure_numpy_compat()  # numba.cuda may have been imported before us
    return _numba_cuda().jit(sig)(fn)


# --- launching -----------------------------------------------------------------------------
# With cupy arrays on a GPU, a kernel launches through CuPy: numba compiles it to PTX once per
# key and device, CuPy loads that as a module, and each call hands CuPy the kernel's flat
# parameter list (numba passes an array as meminfo, parent, nitems, itemsize, data, shape...,
# strides...). That skips numba's dispatcher, whose per-call conversion of every argument
# costs ~100 us of host time (anchors.md). Anything else (numba device arrays, the simulator,
# or a failure to build the CuPy launcher) goes through numba's own launch.

RAW_LAUNCH = True
"""Launch through CuPy when the arrays are cupy arrays (False: always numba's dispatcher)."""

_streams = {}
_launchers = {}
_raw = {}


def _stream_of(a):
    """(pointer, numba stream) of cupy's current stream when ``a`` is a cupy array.

    (None, None) otherwise: numba's default stream.
    """
    cupy = sys.modules.get("cupy")
    if cupy is None or not isinstance(a, cupy.ndarray):
        return None, None
    ptr = cupy.cuda.get_current_stream().ptr
    stream = _streams.get(ptr)
    if stream is None:
        stream = _streams[ptr] = cuda.external_stream(ptr)
    return ptr, stream


_ENTRY = re.compile(r"\.(?:visible\s+)?\.entry\s+([\w$]+)\s*\((.*?)\)", re.S)
_PARAM = re.compile(r"\.param\s+\.(\w+)")
_SCALAR_PARAMS = {"float32": ("f32",), "float64": ("f64",), "int64": ("u64", "s64", "b64"),
                  "int32": ("u32", "s32", "b32")}


def ptx_entry(ptx):
    """(name, [param type, ...]) of the one kernel entry in ``ptx`` (types like "u64")."""
    entries = _ENTRY.findall(ptx)
    if len(entries) != 1:
        raise ValueError(f"expected one .entry in the PTX, found {len(entries)}")
    name, params = entries[0]
    return name, _PARAM.findall(params)


def arg_plan(sig, params):
    """How each Python argument of a kernel with numba signature ``sig`` becomes kernel
    parameters: an int ndim for an array (5 + 2 ndim u64 parameters), else the numpy scalar
    type. Checked against the PTX parameter types ``params``; ValueError if they disagree."""
    from numba import types
    from numba.core.sigutils import normalize_signature
    from numba.np.numpy_support import as_dtype

    plan, i = [], 0
    for t in normalize_signature(sig)[0]:
        if isinstance(t, types.Array):
            n = 5 + 2 * t.ndim
            if params[i:i + n] != ["u64"] * n:
                raise ValueError(f"array {t} does not match PTX parameters {params[i:i + n]}")
            plan.append(t.ndim)
            i += n
        else:
            dtype = as_dtype(t)
            if i >= len(params) or params[i] not in _SCALAR_PARAMS.get(dtype.name, ()):
                raise ValueError(f"scalar {t} does not match PTX parameter "
                                 f"{params[i] if i < len(params) else None}")
            plan.append(dtype.type)
            i += 1
    if i != len(params):
        raise ValueError(f"the PTX kernel has {len(params)} parameters, the signature {i}")
    return tuple(plan)


_NULL = np.uint64(0)


def marshal(plan, args):
    """The flat kernel parameters for ``args`` (cupy arrays; see ``arg_plan``)."""
    out = []
    for kind, a in zip(plan, args):
        if kind.__class__ is int:
            out += (_NULL, _NULL, np.int64(a.size), np.int64(a.itemsize), np.uint64(a.data.ptr))
            out += [np.int64(n) for n in a.shape]
            out += [np.int64(n) for n in a.strides]
        else:
            out.append(kind(a))
    return out


def _raw_kernel(key, cupy):
    """The CuPy function for compile ``key`` on the current device, or None (after noting
    why in ``RAW_ERRORS``) when it cannot be built: numba's launch is used instead."""
    dev = cupy.cuda.Device()
    cache_key = (key, dev.id)
    got = _raw.get(cache_key, False)
    if got is False:
        try:
            fn, sig = _SOURCES[key[0]](*key[1:])
            compat.ensure_numpy_compat()
            cc = tuple(int(c) for c in divmod(int(dev.compute_capability), 10))
            ptx, _ = _numba_cuda().compile_ptx(fn, sig, cc=cc)
            name, params = ptx_entry(ptx)
            plan = arg_plan(sig, params)
            module = cupy.cuda.function.Module()
            try:
                module.load(ptx.encode() + b"\0")  # cuModuleLoadData reads a C string
            except Exception as e:  # a driver older than the PTX, say: numba's own cubin
                name, module = _cubin_module(key, cc, sig, plan, cupy, e)
            got = (module.get_function(name), plan, module)
        except Exception as e:
            RAW_ERRORS[key] = f"{type(e).__name__}: {e}"
            if len(RAW_ERRORS) == 1:  # say it once: launches still work, only slower
                first = (str(e).strip().splitlines() or [""])[0]
                print(f"gpunet: launching {key[0]} through CuPy failed ({type(e).__name__}: "
                      f"{first}); numba's dispatcher launches it (and any other such kernel)",
                      file=sys.stderr)
            got = None
        _raw[cache_key] = got
    return got


RAW_ERRORS = {}
"""compile key -> why that kernel launches through numba's dispatcher on the GPU."""

CUBIN_LOADS = {}
"""compile key -> why its PTX did not load (the driver JIT-compiles PTX, and refuses a PTX
version newer than it knows): the kernel launches through CuPy from the cubin numba links for
its own launch (nvJitLink, which needs no driver JIT) instead."""


def _cubin_module(key, cc, sig, plan, cupy, why):
    """(entry name, CuPy module) of the cubin numba links for the kernel of ``key`` (what
    numba's own launch loads), after its PTX failed to load with ``why``; raises ``why`` where
    that cubin cannot be had or its parameters are not the PTX's."""
    try:
        (kernel,) = _compile(*key).overloads.values()  # (jit(sig): one signature)
        code = kernel.library.get_cubin(cc)
        code = getattr(code, "code", code)  # (numba-cuda's linker gives an ObjectCode)
        if not isinstance(code, (bytes, bytearray, memoryview)):
            raise TypeError(f"numba's cubin is a {type(code).__name__}, not bytes")
        name, params = ptx_entry(kernel.inspect_asm(cc))
        if name != kernel.entry_name or arg_plan(sig, params) != plan:
            raise ValueError("numba's kernel does not have the PTX's parameters")
        module = cupy.cuda.function.Module()
        module.load(bytes(code))
    except Exception as e:
        raise why from e
    CUBIN_LOADS[key] = f"{type(why).__name__}: {why}"
    return name, module


def _launch(key, griddim, blockdim, like, *args):
    """Launch the kernel compiled for ``key`` (see ``_compile``) on cupy's current stream
    when ``like`` is a cupy array, else on numba's default stream."""
    if _simulating():
        # The simulator's kernel[...] configures the kernel object itself: no caching.
        _compile(*key)[griddim, blockdim](*args)
        return
    cupy = sys.modules.get("cupy")
    if RAW_LAUNCH and cupy is not None and isinstance(like, cupy.ndarray):
        raw = _raw_kernel(key, cupy)
        if raw is not None:
            fn, plan, _ = raw
            fn(griddim if isinstance(griddim, tuple) else (griddim,),
               blockdim if isinstance(blockdim, tuple) else (blockdim,), marshal(plan, args))
            return
    kernel = _compile(*key)
    ptr, stream = _stream_of(like)
    cache_key = (kernel, griddim, blockdim, ptr)
    launcher = _launchers.get(cache_key)
    if launcher is None:
        if len(_launchers) > 4096:
            _launchers.clear()
        if stream is None:
            launcher = kernel[griddim, blockdim]
        else:
            launcher = kernel[griddim, blockdim, stream]
        _launchers[cache_key] = launcher
    launcher(*args)


def _flat_grid(size):
    return min(-(-size // ELEMENTWISE_THREADS), MAX_BLOCKS)


def _row_threads(cols):
    if ROW_THREADS is not None:
        if ROW_THREADS < 1 or ROW_THREADS & (ROW_THREADS - 1):
            raise ValueError(f"ROW_THREADS must be a power of two, got {ROW_THREADS}")
        return ROW_THREADS
    # About 8 columns per thread, between one warp and the 1024-thread limit.
    return min(1024, max(32, 1 << max(0, (cols - 1) // 8).bit_length()))


# --- public wrappers -------------------------------------------------------------------------


def act_forward(name, z, out, slope):
    """out = f(z), elementwise; out may be z.

    Args:
        name: activation name (see ``activations.ACTIVATIONS``).
        z: float32/float64 C-contiguous array, any shape.
        out: array like z, written completely.
        slope: negative-side slope, read by "leaky_relu" only.
    Returns:
        out.
    """
    _, dtype = _checks.act_forward(name, z, out, slope, None)
    if z.size:
        _launch(
            ("act_forward", name, dtype), _flat_grid(z.size), ELEMENTWISE_THREADS, z,
            z.reshape(-1), out.reshape(-1), dtype.type(slope),
        )
    return out


def bias_act_forward(name, z, b, out, slope):
    """out = f(z + b), b (cols,) broadcast over the rows of z (rows, cols); out may be z.

    Returns:
        out.
    """
    _, dtype = _checks.bias_act_forward(name, z, b, out, slope, None)
    rows, cols = z.shape
    if z.size:
        gx = min(-(-cols // ELEMENTWISE_THREADS), MAX_BLOCKS)
        gy = min(rows, max(1, MAX_BLOCKS // gx), 65535)
        _launch(("bias_act_forward", name, dtype), (gx, gy), ELEMENTWISE_THREADS, z,
                z, b, out, dtype.type(slope))
    return out


def act_backward(name, dy, x, y, out, slope):
    """out = dy * f'(x), elementwise, reading x (pre-activation) or y = f(x) (saved output).

    relu and leaky_relu read x; sigmoid and tanh read y; identity reads neither. The array
    an activation does not read may be None. out may alias dy.

    Returns:
        out.
    """
    _, dtype, src = _checks.act_backward(name, dy, x, y, out, slope, None)
    if dy.size:
        _launch(
            ("act_backward", name, dtype), _flat_grid(dy.size), ELEMENTWISE_THREADS, dy,
            dy.reshape(-1), src.reshape(-1), out.reshape(-1), dtype.type(slope),
        )
    return out


def _rowwise(op, x, out, reduced=False):
    dtype = _checks.rowwise(x, out, None, reduced=reduced)
    rows, cols = x.shape
    if rows:
        threads = _row_threads(cols)
        _launch(("rowwise", op, dtype, threads), rows, threads, x, x, out)
    return out


def logsumexp(x, out):
    """out_i = log(sum_j exp(x_ij)), max-shifted; x (rows, cols), out (rows,).

    A row of only -inf gives -inf. Returns out.
    """
    return _rowwise("logsumexp", x, out, reduced=True)


def log_softmax(x, out):
    """out_ij = x_ij - logsumexp(x_i), row-wise; out may be x.

    A row of only -inf gives NaN, as torch does. Returns out.
    """
    return _rowwise("log_softmax", x, out)


def softmax(x, out):
    """out_ij = exp(x_ij - logsumexp(x_i)), row-wise; out may be x.

    A row of only -inf gives NaN, as torch does. Returns out.
    """
    return _rowwise("softmax", x, out)


def softmax_cross_entropy(logits, labels, loss_out, dlogits_out, scale):
    """Per-row softmax cross-entropy and its gradient, one block per row.

    Logits are read twice (online max-and-sum, then the dlogits pass), dlogits written once.

    loss_i = logsumexp(logits_i) - logits_i[label_i]
    dlogits = scale * (softmax(logits) - onehot(labels))   (scale = 1/batch for a mean loss)

    A label's logit of -inf gives loss +inf; a row of only -inf gives NaN (both as torch).
    A label outside [0, cols) cannot raise inside a kernel: its row gets NaN loss and NaN
    dlogits (gpunet validates labels when data is loaded). dlogits_out may be logits.

    Args:
        logits: (rows, cols) float32/float64.
        labels: (rows,) int32 or int64.
        loss_out: (rows,) like logits' dtype.
        dlogits_out: like logits.
        scale: real number multiplying the gradient.
    Returns:
        (loss_out, dlogits_out).
    """
    dtype, label_dtype = _checks.softmax_cross_entropy(
        logits, labels, loss_out, dlogits_out, scale, None
    )
    rows, cols = logits.shape
    if rows:
        threads = _row_threads(cols)
        _launch(
            ("softmax_cross_entropy", dtype, label_dtype, threads), rows, threads, logits,
            logits, labels, loss_out, dlogits_out, dtype.type(scale),
        )
    return loss_out, dlogits_out


def layer_norm_forward(z, gamma, beta, eps, n, xhat, rstd):
    """n = gamma xhat + beta, xhat = (z - mean) rstd, rstd = 1 / sqrt(var + eps) over each
    row of z (rows, d), one block per row (three passes over the row); n may be z.

    Returns:
        (n, xhat, rstd).
    """
    dtype = _checks.layer_norm_forward(z, gamma, beta, eps, n, xhat, rstd, None)
    rows, d = z.shape
    if rows:
        threads = _row_threads(d)
        _launch(("layer_norm_forward", dtype, threads), rows, threads, z,
                z, gamma, beta, dtype.type(eps), n, xhat, rstd)
    return n, xhat, rstd


def layer_norm_backward(dn, xhat, rstd, gamma, dz, dgamma, dbeta):
    """dJ/dgamma and dJ/dbeta (column sums over the rows: one kernel, tiles of 32 columns,
    Kahan sums in fixed lanes), then dJ/dz = rstd (g - mean(g) - xhat mean(g xhat)) with
    g = dn gamma (one block per row); dz may be dn (the column sums read dn first).

    Returns:
        (dz, dgamma, dbeta).
    """
    dtype = _checks.layer_norm_backward(dn, xhat, rstd, gamma, dz, dgamma, dbeta, None)
    rows, d = dn.shape
    lanes = LN_COLUMN_LANES
    _launch(("layer_norm_columns", dtype, lanes), -(-d // 32), (32, lanes), dn,
            dn, xhat, dgamma, dbeta)
    if rows:
        threads = _row_threads(d)
        _launch(("layer_norm_backward", dtype, threads), rows, threads, dn,
                dn, xhat, rstd, gamma, dz)
    return dz, dgamma, dbeta


def batch_norm_forward(z, gamma, beta, eps, n, xhat, rstd, mean, var):
    """n = gamma xhat + beta, xhat = (z - mean) rstd, rstd = 1 / sqrt(var + eps) with each
    column's (feature's) mean and biased variance over the batch z (rows >= 1, d), as
    ``torch.nn.BatchNorm1d`` in training: one kernel, a block per 32 columns (three passes over
    them); n may be z.

    Returns:
        (n, xhat, rstd, mean, var), the last three (1, d).
    """
    dtype = _checks.layer_norm_forward(z, gamma, beta, eps, n, xhat, rstd, None, batch=True)
    for a, what in ((mean, "mean"), (var, "var")):
        _checks._like(a, what, z, "z", None, shape=(1, z.shape[1]))
    rows, d = z.shape
    if rows and d:
        lanes = BN_COLUMN_LANES
        _launch(("batch_norm_forward", dtype, lanes), -(-d // 32), (32, lanes), z,
                z, gamma, beta, dtype.type(eps), n, xhat, rstd, mean, var)
    return n, xhat, rstd, mean, var


def batch_norm_backward(dn, xhat, rstd, gamma, dz, dgamma, dbeta):
    """dJ/dz (dz may be dn), dJ/dgamma and dJ/dbeta of ``batch_norm_forward`` from dJ/dn: one
    kernel, a block per 32 columns (two passes over them).

    Returns:
        (dz, dgamma, dbeta).
    """
    dtype = _checks.layer_norm_backward(dn, xhat, rstd, gamma, dz, dgamma, dbeta, None,
                                        batch=True)
    rows, d = dn.shape
    if rows and d:
        lanes = BN_COLUMN_LANES
        _launch(("batch_norm_backward", dtype, lanes), -(-d // 32), (32, lanes), dn,
                dn, xhat, rstd, gamma, dz, dgamma, dbeta)
    return dz, dgamma, dbeta
