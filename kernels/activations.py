"""Scalar math of the activations: the one table both kernel targets compile from.

Each entry's builder is plain Python (no numba here). ``cuda_ops`` wraps what it returns
with ``cuda.jit(device=True)``, ``cpu_ops`` with ``numba.njit``, once per dtype. Constants
come in as arguments of that dtype so that float32 kernels stay in float32 (a bare ``0.0``
literal would make numba compute in float64).

Conventions follow PyTorch: relu'(0) = 0 (``threshold_backward``), leaky_relu'(z) = slope
for z <= 0, sigmoid and tanh differentiate through their saved output y; gelu (the exact,
erf form) and silu dip below zero, so y does not determine z: they differentiate through z.
"""

from __future__ import annotations

from typing import Callable, NamedTuple


class Activation(NamedTuple):
    """One activation: how to build its scalar functions, and what its backward reads.

    builder(zero, one, exp, tanh, erfc) returns (forward, grad):
        forward(z, slope) -> f(z)
        grad(dy, s, slope) -> dy * f'(z), where s is z when ``saved == "x"``, y = f(z)
        when ``saved == "y"``, and unused when ``saved is None``.
    ``exp`` and ``tanh`` are the target's (math.exp and math.tanh on CUDA; on the CPU,
    vectorisable ones for float32, a vectorisable exp and math.tanh for float64); exp is only
    ever called with arguments <= 0 or NaN. ``erfc`` likewise (math.erfc on CUDA; vectorisable
    float32 and float64 ones on the CPU, math.erfc for float64 on an x86 CPU without FMA).
    """

    name: str
    builder: Callable
    saved: str | None


def _identity(zero, one, exp, tanh, erfc):
    def forward(z, slope):
        return z

    def grad(dy, s, slope):
        return dy

    return forward, grad


def _relu(zero, one, exp, tanh, erfc):
    def forward(z, slope):
        # Written so that NaN passes through, as torch.relu does.
        return zero if z <= zero else z

    def grad(dy, s, slope):
        return dy if s > zero else zero

    return forward, grad


def _leaky_relu(zero, one, exp, tanh, erfc):
    def forward(z, slope):
        return z if z > zero else z * slope

    def grad(dy, s, slope):
        return dy if s > zero else dy * slope

    return forward, grad


def _sigmoid(zero, one, exp, tanh, erfc):
    def forward(z, slope):
        # e = exp(-|z|) never overflows: sigma(z) = 1/(1+e) for z >= 0, e/(1+e) otherwise.
        e = exp(-abs(z))
        return (one if z >= zero else e) / (one + e)

    def grad(dy, s, slope):
        # Same association as torch's sigmoid_backward: dy * (1 - y) * y.
        return dy * (one - s) * s

    return forward, grad


def _tanh(zero, one, exp, tanh, erfc):
    def forward(z, slope):
        return tanh(z)

    def grad(dy, s, slope):
        return dy * (one - s * s)

    return forward, grad


def _gelu(zero, one, exp, tanh, erfc):
    t = type(zero)  # constants of the kernel's dtype: a float32 kernel stays in float32
    half, m_sqrt1_2, inv_sqrt_2pi = t(0.5), t(-0.7071067811865476), t(0.3989422804014327)

    def forward(z, slope):
        # z Phi(z) with the exact Phi(z) = erfc(-z / sqrt 2) / 2, as torch.nn.GELU() (erfc
        # where torch writes 1 + erf: Phi keeps its digits where it is tiny, z << 0).
        return z * (half * erfc(z * m_sqrt1_2))

    def grad(dy, s, slope):
        # torch's gelu_backward: dy (Phi(z) + z phi(z)), phi(z) = exp(-z^2/2) / sqrt(2 pi).
        cdf = half * erfc(s * m_sqrt1_2)
        return dy * (cdf + s * (exp(-half * s * s) * inv_sqrt_2pi))

    return forward, grad


def _gelu_tanh(zero, one, exp, tanh, erfc):
    t = type(zero)
    half, beta, kappa, three = t(0.5), t(0.7978845608028654), t(0.044715), t(3.0)

    def forward(z, slope):
        # torch.nn.GELU(approximate="tanh"): 0.5 z (1 + tanh(beta (z + kappa z^3))).
        return half * z * (one + tanh(beta * (z + kappa * (z * z * z))))

    def grad(dy, s, slope):
        # torch's gelu_backward (tanh), term by term.
        th = tanh(beta * (s + kappa * (s * s * s)))
        right = half * s * (one - th * th) * (beta * (one + three * kappa * (s * s)))
        return dy * (half * (one + th) + right)

    return forward, grad


def _silu(zero, one, exp, tanh, erfc):
    def forward(z, slope):
        e = exp(-abs(z))  # sigma(z) as the sigmoid's: no exp overflows
        return z * ((one if z >= zero else e) / (one + e))

    def grad(dy, s, slope):
        # torch's silu_backward: dy sigma(z) (1 + z (1 - sigma(z))), with 1 - sigma(z) =
        # sigma(-z) from the same e, not a subtraction that loses it at large z.
        e = exp(-abs(s))
        d = one + e
        g = (one if s >= zero else e) / d
        h = (e if s >= zero else one) / d
        return dy * (g * (one + s * h))

    return forward, grad


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", _identity, None),
        Activation("relu", _relu, "x"),
        Activation("leaky_relu", _leaky_relu, "x"),
        Activation("sigmoid", _sigmoid, "y"),
        Activation("tanh", _tanh, "y"),
        Activation("gelu", _gelu, "x"),
        Activation("gelu_tanh", _gelu_tanh, "x"),
        Activation("silu", _silu, "x"),
    )
}
"""Every activation the kernels know, by name; registration in both targets reads this."""


def get(name: str) -> Activation:
    """The table entry for ``name``; ValueError naming the valid names otherwise."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in ACTIVATIONS)
        raise ValueError(f"unknown activation {name!r}; valid names: {valid}") from None
