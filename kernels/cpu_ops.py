"""numba.njit twins of the CUDA kernels, on numpy arrays.

Pattern: elementwise ops are one flat loop over the C-contiguous buffer (``prange`` splits it
across cores when it is large enough to pay for waking the thread pool); row-wise ops split
the rows into one chunk per thread and make three passes over each row while it sits in
L1/L2 cache: a max (``llvm.maxnum``, vectorised), a sum of exp(x - max) (softmax and the
cross-entropy store each exp in out as they go), and the write (or a rescale of out).
Re-reading a cached row is cheaper here than the CUDA kernels' online max-and-sum, which
does not vectorise on a CPU; main memory still sees one read of x and one write of out.

float32 exp and tanh are Cephes-style polynomials that LLVM vectorises (``_exp_nonpos_f32``,
within 1.1 ulp of float64 down to subnormals, for arguments <= 0, which is all these kernels
need: x - max, -|z|; ``_tanh_f32``, within 2 ulps), where math.exp and math.tanh would be
scalar libm calls. float64 exp (``_exp_nonpos_f64``, within 0.65 ulp) and gelu's erfc
(``_erfc_f64``, within 1.3 ulp; math.erfc on an x86 CPU without FMA) are vectorisable too;
float64 tanh is math.tanh.
Sums accumulate in the input dtype; the vectorised reduction keeps 16-32 partial sums, so
float32 rows of a few thousand columns stay within a few ulps of a float64 reference.

Nothing compiles at import: every kernel compiles on its first call for each dtype.
"""

from __future__ import annotations

import functools
import math
import platform

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core.codegen import get_host_cpu_features
from numba.core.extending import intrinsic, overload

from . import _checks, activations
from .cpu_norm import (batch_norm_backward, batch_norm_forward,  # (their own module: one
                       layer_norm_backward, layer_norm_forward)  # loop each)

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

# error_model="numpy": x / 0 gives inf or NaN as on a GPU, instead of a ZeroDivisionError
# check whose branch stops LLVM from vectorising loops that divide.
_jit = functools.partial(njit, error_model="numpy")

PARALLEL_MIN_SIZE = 1 << 15
"""Elementwise ops on fewer elements than this run on one thread (the pool's wake-up costs
more than the loop); row-wise ops use ``prange`` when rows * cols reaches it."""

# --- scalar building blocks ------------------------------------------------------------


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (LLVM bitcast)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if v.type.width != 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _float64_from_bits(typingctx, bits):
    """Reinterpret a 64-bit integer as a float64 (LLVM bitcast)."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 64):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def _float64_bits(typingctx, x):
    """The bits of a float64 as an int64 (LLVM bitcast)."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(x), codegen


def _fma_is_native():
    """Whether numba's CPU target has fused multiply-add instructions: x86-64 since Haswell and
    Piledriver (FMA3); aarch64 and ppc64le always. Without them llvm.fma is a call to libm's fma:
    exact, but scalar and slow. A NUMBA_CPU_FEATURES without "+fma" counts as none, whatever
    NUMBA_CPU_NAME implies."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    features = numba.config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return numba.config.ENABLE_AVX and "+fma" in features.split(",")


_FMA_NATIVE = _fma_is_native()


@intrinsic
def _fma(typingctx, a, b, c):
    """llvm.fma: a * b + c rounded once, whatever the caller's fastmath flags (an inline="always"
    function is compiled with its caller's, which need not allow contraction)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        lty = context.get_value_type(sig.return_type)
        fn = builder.module.declare_intrinsic("llvm.fma", [lty], ir.FunctionType(lty, [lty] * 3))
        return builder.call(fn, args)

    return a(a, b, c), codegen


@_jit(inline="always")
def _mul_add_unfused(a, b, c):
    return a * b + c


# a * b + c where its rounding does not matter: fused where that is one instruction
_mul_add = _fma if _FMA_NATIVE else _mul_add_unfused


@intrinsic
def _maxnum(typingctx, a, b):
    """llvm.maxnum: the larger of a and b, ignoring a NaN operand; vectorises in reductions.

    NaN in a row is still caught: the following sum of exp(x - max) turns NaN.
    """
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        lty = context.get_value_type(sig.return_type)
        fnty = ir.FunctionType(lty, [lty, lty])
        fn = builder.module.declare_intrinsic("llvm.maxnum", [lty], fnty)
        return builder.call(fn, args)

    return a(a, b), codegen


_F = np.float32
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)  # 9 significant bits: n * _LN2_HI is exact for |n| <= 2**15
_LN2_LO = _F(-2.12194440e-4)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_EXP_LOW = _F(-104.0)  # exp(-104) rounds to 0 in float32
_HALF, _ONE, _ZERO = _F(0.5), _F(1.0), _F(0.0)


@_jit(fastmath={"contract"})
def _exp_nonpos_f32(x):
    """exp(x) for float32 x <= 0, -inf or NaN, branch-free so that loops vectorise.

    Cody-Waite reduction x = n*ln2 + r, |r| <= ln2/2, the Cephes expf polynomial, and 2**n
    applied as two exact halves so that results down to the smallest subnormal are right.
    """
    xc = x if x > _EXP_LOW else _EXP_LOW  # also maps -inf and NaN into range
    n = np.int32(xc * _LOG2E - _HALF)  # round-to-nearest, valid because xc <= 0
    nf = np.float32(n)
    r = (xc - nf * _LN2_HI) - nf * _LN2_LO
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    e = (p * r) * r + r + _ONE
    n1 = n >> 1
    e = e * _float32_from_bits((n1 + 127) << 23) * _float32_from_bits((n - n1 + 127) << 23)
    if x > _EXP_LOW:
        return e
    if x != x:
        return x
    return _ZERO


@_jit(inline="always")
def _horner(x, coeffs):
    """coeffs[0] + coeffs[1] x + ... by Horner's rule (fused where that is native)."""
    acc = coeffs[-1]
    for i in range(len(coeffs) - 2, -1, -1):
        acc = _mul_add(acc, x, coeffs[i])
    return acc


# float64 exp: the same Cody-Waite reduction, x = n ln2 + r with |r| <= ln2 / 2 and ln2 in two
# parts (the first of 42 bits, so that n * _LN2_HI_D is exact and x - n * _LN2_HI_D too), and
# e^r = 1 + r + r^2 q(r), q a degree-9 polynomial fitted (mpmath, weighted minimax) to
# (e^r - 1 - r) / r^2, within 2**-57.9 of e^r. 1 + r is carried as a rounded sum and its exact
# error, so that the only full-size rounding is the last addition: within 0.65 ulp of e^x.
_LOG2E_D = 1.4426950408889634
_ROUND_D = 6755399441055744.0  # 1.5 * 2**52: v + _ROUND_D rounds v to an integer (low bits)
_LN2_HI_D = 0.6931471805598903  # ln 2 to a multiple of 2**-42
_LN2_LO_D = 5.497923018708371e-14
_EXP_Q = (0.5000000000000011, 0.16666666666666402, 0.041666666666525715, 0.00833333333349974,
          0.0013888888944963756, 0.00019841269498407156, 2.4801491572517933e-05,
          2.7557590684803364e-06, 2.763083766857521e-07, 2.4999653856230002e-08)
_EXP_LOW_D = -746.0  # exp(-746) rounds to 0 in float64
_EXP_BIAS_UP = 1023 + 64  # exponent bias of 2**(n + 64), normal for every n >= -1086
_TWO_M64 = 2.0 ** -64


@_jit(inline="always")
def _exp_f64_parts(xh, xl):
    """exp(xh + xl) as (s + t) * 2**(n + 64) * 2**-64, returned as (s, t, 2**(n + 64)), for
    xh in [-746, 0] (or NaN) with xh - n * _LN2_HI_D exact, and |xl| < 2**-10. s = 1 + r
    rounded, |t| < 0.07: s + t is e^r to 2**-57. 2**(n + 64) is normal even where the result
    is not: the caller applies 2**-64 last, so that a subnormal result is rounded once."""
    kd = xh * _LOG2E_D + _ROUND_D  # 1.5 * 2**52 + n
    nf = kd - _ROUND_D
    rh = _mul_add(-nf, _LN2_HI_D, xh)  # exact, fused or not
    rl = _mul_add(-nf, _LN2_LO_D, xl)
    r = rh + rl
    c = (rh - r) + rl  # r + c = rh + rl (exact where |rh| >= |rl|; else both are tiny)
    p = (r * r) * _horner(r, _EXP_Q)  # e^r - 1 - r
    s = 1.0 + r
    t = (((1.0 - s) + r) + _mul_add(c, r, c)) + p  # (1 - s) + r: exactly 1 + r - s
    scale = _float64_from_bits((_float64_bits(kd) + _EXP_BIAS_UP) << 52)
    return s, t, scale


@_jit(fastmath={"contract"})
def _exp_nonpos_f64(x):
    """exp(x) for float64 x <= 0, -inf or NaN, branch-free so that loops vectorise (libm's exp
    is a scalar call): within 0.65 ulp, and one subnormal step below 2**-1022."""
    xc = x if x > _EXP_LOW_D else _EXP_LOW_D  # also maps -inf and NaN into range
    s, t, scale = _exp_f64_parts(xc, 0.0)
    e = ((s + t) * scale) * _TWO_M64
    if x > _EXP_LOW_D:
        return e
    if x != x:
        return x
    return 0.0


def _by_precision(f32, f64, doc, **overload_options):
    """A function of one float that compiles to ``f32`` for a float32 argument and to ``f64``
    for a float64 one (numba's typed dispatch); called from Python, it is ``f64``."""
    def function(x):
        return f64(x)

    function.__doc__ = doc

    @overload(function, **overload_options)
    def typed(x):
        if x == types.float32:
            return lambda x: f32(x)
        if x == types.float64:
            return lambda x: f64(x)
        return None

    return function


_exp_nonpos = _by_precision(_exp_nonpos_f32, _exp_nonpos_f64,
                           "exp(x) for x <= 0 in x's precision.")


_T0, _T1, _T2 = _F(-5.70498872745e-3), _F(2.06390887954e-2), _F(-5.37397155531e-2)
_T3, _T4 = _F(1.33314422036e-1), _F(-3.33332819422e-1)
_TANH_POLY_MAX = _F(0.625)


@_jit(fastmath={"contract"})
def _tanh_f32(x):
    """tanh(x) for float32, branch-free (within 2 ulps of float64; libm's tanhf is scalar).

    Cephes tanhf: an odd polynomial for |x| < 0.625, else (1 - e) / (1 + e) with
    e = exp(-2|x|) <= 0.29, where 1 - e does not cancel.
    """
    a = abs(x)
    e = _exp_nonpos_f32(-(a + a))
    big = (_ONE - e) / (_ONE + e)
    z = x * x
    small = ((((_T0 * z + _T1) * z + _T2) * z + _T3) * z + _T4) * z * a + a
    t = small if a < _TANH_POLY_MAX else big
    return t if x >= _ZERO else -t  # NaN: a, e, big are NaN and so is -t


_tanh = _by_precision(_tanh_f32, math.tanh, "tanh(x) in x's precision.")


# erfc for float32 in two pieces. |x| < 1/2: 1 - erf(x) with Cephes' erff polynomial,
# erf(x) = x T(x^2). |x| >= 1/2: Numerical Recipes' erfcc (Press et al., 2nd ed., 6.2),
# erfc(x) = t exp(-x^2 + P(t)) with t = 1 / (1 + x/2), a Chebyshev fit of fractional error
# below 1.2e-7 for x >= 0 (its alternating terms cancel near 0, hence the polynomial there).
_ERF0, _ERF1, _ERF2, _ERF3 = (_F(7.853861353153693e-5), _F(-8.010193625184903e-4),
                              _F(5.188327685732524e-3), _F(-2.685381193529856e-2))
_ERF4, _ERF5, _ERF6 = (_F(1.128358514861418e-1), _F(-3.761262582423300e-1),
                       _F(1.128379165726710))
_E0, _E1, _E2, _E3, _E4 = (_F(-1.26551223), _F(1.00002368), _F(0.37409196), _F(0.09678418),
                           _F(-0.18628806))
_E5, _E6, _E7, _E8, _E9 = (_F(0.27886807), _F(-1.13520398), _F(1.48851587), _F(-0.82215223),
                           _F(0.17087277))
_TWO = _F(2.0)


@_jit(fastmath={"contract"}, inline="always")
def _erfc_f32(x):
    """erfc(x) for float32, branch-free so that loops vectorise (libm's erfcf is scalar: a
    gelu kernel measured 15x slower with it): 1 - erf(x) below |x| = 1/2, above it Numerical
    Recipes' erfcc for |x| (its exponent is <= 0 up to rounding, clamped there for
    _exp_nonpos_f32) and 2 - erfc(|x|) for x < 0. Inlined in numba's IR: as a call, LLVM
    left the loops around it scalar. Within a few ulps times 1 + 2 x^2, the rounding of -x^2
    in float32, which the rounding of a float32 x costs any erfcf as much. NaN gives NaN."""
    z = x * x
    small = _ONE - x * ((((((_ERF0 * z + _ERF1) * z + _ERF2) * z + _ERF3) * z + _ERF4) * z
                         + _ERF5) * z + _ERF6)
    a = abs(x)
    t = _ONE / (_ONE + _HALF * a)
    p = ((((((((_E9 * t + _E8) * t + _E7) * t + _E6) * t + _E5) * t + _E4) * t + _E3) * t
          + _E2) * t + _E1) * t + _E0
    e = p - z
    y = t * _exp_nonpos_f32(e if e < _ZERO else _ZERO)  # a NaN x: t is NaN
    big = y if x >= _ZERO else _TWO - y
    return small if a < _HALF else big  # NaN: big


# erfc for float64, also in two pieces, every constant fitted here (mpmath, weighted minimax).
# |x| < 3/4: erf(x) = x (1 + R(x^2)), R of degree 10 (within 2**-60 of erfc), and
# erfc(x) = (1 - x) - x R(x^2) with 1 - x kept exactly as a sum and its rounding error.
# |x| >= 3/4: erfc(a) = exp(-a^2 - ln sqrt(pi)) / (a + c(a)), a = |x|, where c(a) =
# 1 / (sqrt(pi) erfcx(a)) - a falls from 0.33 to 1 / (2a): one rational P/Q of degree 8/9 on
# [3/4, 27.25] whose error relative to a + c (so to erfc) is below 2**-57.7. Evaluated as
# Q / (a Q + P), the roundings of P and Q reach erfc only times c / (a + c) < 0.32. a^2 is
# split exactly (a to 21 bits, squared) so that exp(-a^2) keeps full relative accuracy down
# to the underflow; a Q + P and the reciprocal are carried with their rounding errors, so that
# the result is rounded once. x < 0: 2 - erfc(-x). Against mpmath, on 4.2 million points: within
# 1.3 ulp (1.29 at most, near x = 0.81, where c / (a + c) is largest; 0.25 on average),
# subnormal results (26.54 < x < 27.226) within 0.8 of a step, and 0 above.
_ERFC_SMALL = 0.75
_ERF_R = (0.12837916709551256, -0.3761263890318352, 0.11283791670945338, -0.026866170643183765,
          0.0052239776036136325, -0.0008548325512753262, 0.00012055265237046115,
          -1.4923642172247821e-05, 1.64229336690917e-06, -1.5879317526461279e-07,
          1.126821962024515e-08)
_ERFCX_P = (0.5641895841755784, 0.9707350378856726, 0.8467392801031487, 0.47473107062730024,
            0.18492105091707747, 0.05106570384110952, 0.00979603714611671,
            0.001207567420364396, 7.563526496877353e-05)
_ERFCX_Q = (1.0, 2.364657752572717, 2.7505828796559304, 2.034710510949276, 1.0479720591831956,
            0.3892072018088617, 0.10454654532854092, 0.019743344744292363,
            0.00241513484202903, 0.00015127052992776834)
_ERFC_A_MAX = 27.25  # erfc(27.25) < 2**-1076 rounds to 0: larger |x| are clamped to it
_ERFC_SPLIT = 1.5 * 2.0 ** 36  # (a + this) - this: a rounded to a multiple of 2**-16
_LN_SQRTPI_HI = 0.5723649429246507  # ln sqrt(pi) to a multiple of 2**-42
_LN_SQRTPI_LO = 4.941005757140082e-14


@_jit(fastmath={"contract"}, inline="always")
def _erfc_f64(x):
    """erfc(x) for float64, branch-free so that loops vectorise (libm's erfc is a scalar call,
    and float64 gelu spent most of its time in it). Within 1.3 ulp (glibc 2.36's erfc: 4.1)
    to the last subnormal; exact at 0 and the infinities; NaN gives NaN. Inlined as _erfc_f32
    is."""
    a = abs(x)
    rr = _horner(x * x, _ERF_R)
    s0 = 1.0 - x
    small = s0 + _mul_add(-x, rr, (1.0 - s0) - x)  # (1 - s0) - x: exactly 1 - x - s0
    ac = _ERFC_A_MAX if a > _ERFC_A_MAX else a  # NaN stays NaN
    ah = (ac + _ERFC_SPLIT) - _ERFC_SPLIT  # 21 bits: ah * ah is exact
    hi = -(ah * ah) - _LN_SQRTPI_HI  # exact (a multiple of 2**-42 below 2**10)
    lo = _mul_add(ah - ac, ac + ah, -_LN_SQRTPI_LO)  # ah^2 - a^2, and the rest of ln sqrt(pi)
    pp = _horner(ac, _ERFCX_P)
    qq = _horner(ac, _ERFCX_Q)
    ph = ac * qq
    dh = ph + pp
    dl = ((ph - dh) + pp) + _fma(ac, qq, -ph)  # a qq + pp = dh + dl (a qq > pp for a >= 3/4)
    inv = 1.0 / dh
    corr = _fma(-dh, inv, 1.0) - dl * inv  # 1 / (dh + dl) = inv (1 + corr)
    s, t, scale = _exp_f64_parts(hi, lo)
    mh = s * qq
    ml = _fma(s, qq, -mh) + t * qq  # (s + t) qq = mh + ml
    y = _fma(mh, inv, _fma(ml, inv, (mh * inv) * corr))
    y = (y * scale) * _TWO_M64  # (see _exp_f64_parts)
    big = y if x >= 0.0 else 2.0 - y
    return small if a < _ERFC_SMALL else big  # NaN: big


# _erfc_f64 needs exact products (fma) to keep its accuracy: where llvm.fma is a libm call it
# would be slower than libm's erfc, which float64 then keeps.
_erfc = _by_precision(_erfc_f32, _erfc_f64 if _FMA_NATIVE else math.erfc,
                      "erfc(x) in x's precision.", inline="always")


def _cast(v, like):
    """v converted to the type of ``like`` (typed dispatch below)."""
    return v


@overload(_cast)
def _cast_typed(v, like):
    if isinstance(like, types.Float):
        target = like

        def impl(v, like):
            return target(v)

        return impl
    return None


# --- elementwise kernels, built from the activation table -------------------------------


@functools.cache
def _scalar_functions(name, dtype):
    act = activations.get(name)
    t = np.dtype(dtype).type
    forward, grad = act.builder(t(0), t(1), _exp_nonpos, _tanh, _erfc)
    return _jit(forward, inline="always"), _jit(grad, inline="always")


# Each kernel also comes in an in-place form (out is the first input) that writes through
# one array: with two arguments that happen to alias, LLVM's runtime overlap check sends the
# loop down its scalar path (5x slower for sigmoid).


@functools.cache
def _act_forward_kernel(name, dtype, parallel, in_place):
    f, _ = _scalar_functions(name, dtype)

    if in_place:

        @_jit(parallel=parallel)
        def kernel(z, out, slope):
            for i in prange(z.size):
                z[i] = f(z[i], slope)

    else:

        @_jit(parallel=parallel)
        def kernel(z, out, slope):
            for i in prange(z.size):
                out[i] = f(z[i], slope)

    return kernel


@functools.cache
def _bias_act_forward_kernel(name, dtype, parallel, in_place):
    f, _ = _scalar_functions(name, dtype)

    if in_place:

        @_jit(parallel=parallel)
        def kernel(z, b, out, slope):
            for r in prange(z.shape[0]):
                zr = z[r]
                for c in range(zr.size):
                    zr[c] = f(zr[c] + b[c], slope)

    else:

        @_jit(parallel=parallel)
        def kernel(z, b, out, slope):
            for r in prange(z.shape[0]):
                zr, outr = z[r], out[r]
                for c in range(zr.size):
                    outr[c] = f(zr[c] + b[c], slope)

    return kernel


@functools.cache
def _act_backward_kernel(name, dtype, parallel, in_place):
    """``in_place``: False, or which input ``out`` is ("dy", or "src": the z or y it reads,
    as the static step writes dJ/dz over z): each writes through that one array."""
    _, g = _scalar_functions(name, dtype)

    if in_place == "dy":

        @_jit(parallel=parallel)
        def kernel(dy, src, out, slope):
            for i in prange(dy.size):
                dy[i] = g(dy[i], src[i], slope)

    elif in_place == "src":

        @_jit(parallel=parallel)
        def kernel(dy, src, out, slope):
            for i in prange(dy.size):
                src[i] = g(dy[i], src[i], slope)

    else:

        @_jit(parallel=parallel)
        def kernel(dy, src, out, slope):
            for i in prange(dy.size):
                out[i] = g(dy[i], src[i], slope)

    return kernel


# --- row-wise kernels -------------------------------------------------------------------


@_jit
def _row_max(xr):
    m = xr[0]
    for j in range(1, xr.size):
        m = _maxnum(m, xr[j])
    return m


@_jit(fastmath={"reassoc"})  # reassoc lets LLVM vectorise the sum; nothing else here
def _row_sum_exp(xr, m):
    s = _cast(0.0, m)
    for j in range(xr.size):
        s += _exp_nonpos(xr[j] - m)
    return s


@_jit
def _row_max_log_sum(xr):
    """(m, log(sum(exp(x - m)))) with m the row max: the pieces every row op needs."""
    m = _row_max(xr)
    if m == -np.inf:
        return m, m  # a row of only -inf: logsumexp -inf, the rest NaN (as torch)
    return m, _cast(math.log(_row_sum_exp(xr, m)), m)


@_jit
def _nan_or(xr, v):
    """The row's first NaN, else v (the row max skips NaN)."""
    for j in range(xr.size):
        if xr[j] != xr[j]:
            return xr[j]
    return v


@_jit
def _logsumexp_rows(x, out, lo, hi):
    for i in range(lo, hi):
        m, ls = _row_max_log_sum(x[i])
        # an infinite max is the sum's (inf - inf would make +inf NaN), unless the row holds
        # a NaN, which makes it NaN, as torch (and the CUDA kernel): -inf only for -inf rows
        out[i] = m + ls if math.isfinite(m) else _nan_or(x[i], m)


@_jit(inline="always")
def _log_softmax_loop(xr, m, ls, outr):
    for j in range(xr.size):
        # (x - m) first: exact or nearly, where x - (m + ls) would round m + ls.
        outr[j] = (xr[j] - m) - ls


@_jit
def _log_softmax_rows(x, out, lo, hi):
    for i in range(lo, hi):
        xr, outr = x[i], out[i]
        m, ls = _row_max_log_sum(xr)
        if outr.ctypes.data == xr.ctypes.data:  # see _row_exp_into
            _log_softmax_loop(xr, m, ls, xr)
        else:
            _log_softmax_loop(xr, m, ls, outr)


@_jit(fastmath={"reassoc"}, inline="always")
def _exp_into_loop(xr, m, outr):
    s = _cast(0.0, m)
    for j in range(xr.size):
        e = _exp_nonpos(xr[j] - m)
        outr[j] = e
        s += e
    return s


@_jit(fastmath={"reassoc"})  # for the sum; exp keeps its own flags (it is not inlined here)
def _row_exp_into(xr, m, outr):
    """outr = exp(xr - m), returning its sum. outr may be xr.

    The loop is inlined twice so that, when out is x, LLVM sees one array and vectorises
    instead of falling back to scalar code after a failed overlap check.
    """
    if outr.ctypes.data == xr.ctypes.data:
        return _exp_into_loop(xr, m, xr)
    return _exp_into_loop(xr, m, outr)


@_jit
def _softmax_rows(x, out, lo, hi):
    for i in range(lo, hi):
        xr, outr = x[i], out[i]
        m = _row_max(xr)
        inv = _cast(1.0, m) / _row_exp_into(xr, m, outr)
        for j in range(xr.size):
            outr[j] *= inv


@_jit
def _softmax_cross_entropy_rows(x, labels, loss, dl, scale, lo, hi):
    for i in range(lo, hi):
        xr, dlr = x[i], dl[i]
        label = labels[i]
        if not 0 <= label < xr.size:
            # No exception can leave a kernel: an out-of-range label poisons its row.
            nan = _cast(np.nan, scale)
            for j in range(dlr.size):
                dlr[j] = nan
            loss[i] = nan
            continue
        xl = xr[label]  # read before dlr is written: dlogits_out may be logits
        m = _row_max(xr)
        s = _row_exp_into(xr, m, dlr)
        p_label = dlr[label] / s
        f = scale / s
        for j in range(dlr.size):
            dlr[j] *= f
        dlr[label] = scale * (p_label - _cast(1.0, m))
        loss[i] = (m - xl) + _cast(math.log(s), m)


def _parallel_rows(row_kernel):
    """A prange over row chunks of ``row_kernel(..., lo, hi)``, one chunk per thread."""

    @_jit(parallel=True)
    def run(*args):
        rows = args[0].shape[0]
        chunks = min(numba.get_num_threads(), rows)
        for c in prange(chunks):
            row_kernel(*args, rows * c // chunks, rows * (c + 1) // chunks)

    return run


_ROW_KERNELS = {
    "logsumexp": _logsumexp_rows,
    "log_softmax": _log_softmax_rows,
    "softmax": _softmax_rows,
    "softmax_cross_entropy": _softmax_cross_entropy_rows,
}


@functools.cache
def _row_runner(op, parallel):
    serial = _ROW_KERNELS[op]
    if not parallel:
        return lambda *args: serial(*args, 0, args[0].shape[0])
    return _parallel_rows(serial)


def _run_rows(op, x, *args):
    _row_runner(op, x.size >= PARALLEL_MIN_SIZE)(x, *args)


# --- public wrappers --------------------------------------------------------------------


def act_forward(name, z, out, slope):
    """out = f(z), elementwise; out may be z (the same array object: the fast in-place path).

    Args:
        name: activation name (see ``activations.ACTIVATIONS``).
        z: float32/float64 C-contiguous array, any shape.
        out: array like z, written completely.
        slope: negative-side slope, read by "leaky_relu" only.
    Returns:
        out.
    """
    _, dtype = _checks.act_forward(name, z, out, slope, np.ndarray)
    if z.size:
        kernel = _act_forward_kernel(name, dtype, z.size >= PARALLEL_MIN_SIZE, out is z)
        kernel(z.reshape(-1), out.reshape(-1), dtype.type(slope))
    return out


def bias_act_forward(name, z, b, out, slope):
    """out = f(z + b), b (cols,) broadcast over the rows of z (rows, cols); out may be z.

    Returns:
        out.
    """
    _, dtype = _checks.bias_act_forward(name, z, b, out, slope, np.ndarray)
    if z.size:
        kernel = _bias_act_forward_kernel(name, dtype, z.size >= PARALLEL_MIN_SIZE, out is z)
        kernel(z, b, out, dtype.type(slope))
    return out


def act_backward(name, dy, x, y, out, slope):
    """out = dy * f'(x), elementwise, reading x (pre-activation) or y = f(x) (saved output).

    relu, leaky_relu, the gelus and silu read x; sigmoid and tanh read y; identity neither.
    The array an activation does not read may be None. out may be dy, or the array it reads.

    Returns:
        out.
    """
    _, dtype, src = _checks.act_backward(name, dy, x, y, out, slope, np.ndarray)
    if dy.size:
        alias = "dy" if out is dy else "src" if out is src else False
        kernel = _act_backward_kernel(name, dtype, dy.size >= PARALLEL_MIN_SIZE, alias)
        kernel(dy.reshape(-1), src.reshape(-1), out.reshape(-1), dtype.type(slope))
    return out


def logsumexp(x, out):
    """out_i = log(sum_j exp(x_ij)), max-shifted; x (rows, cols), out (rows,).

    A row of only -inf gives -inf. Returns out.
    """
    _checks.rowwise(x, out, np.ndarray, reduced=True)
    _run_rows("logsumexp", x, out)
    return out


def log_softmax(x, out):
    """out_ij = x_ij - logsumexp(x_i), row-wise; out may be x.

    A row of only -inf gives NaN, as torch does. Returns out.
    """
    _checks.rowwise(x, out, np.ndarray)
    _run_rows("log_softmax", x, out)
    return out


def softmax(x, out):
    """out_ij = exp(x_ij - logsumexp(x_i)), row-wise; out may be x.

    A row of only -inf gives NaN, as torch does. Returns out.
    """
    _checks.rowwise(x, out, np.ndarray)
    _run_rows("softmax", x, out)
    return out


def softmax_cross_entropy(logits, labels, loss_out, dlogits_out, scale):
    """Per-row softmax cross-entropy and its gradient, from one read of the logits.

    Each row is read from memory once (its later passes hit cache) and dlogits written once.

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
    dtype, _ = _checks.softmax_cross_entropy(
        logits, labels, loss_out, dlogits_out, scale, np.ndarray
    )
    _run_rows("softmax_cross_entropy", logits, labels, loss_out, dlogits_out, dtype.type(scale))
    return loss_out, dlogits_out
