"""Activation functions, written once against an array module ``xp``.

Every activation has the same two functions:

    forward(xp, z, slope)          -> y = f(z)
    backward(xp, dy, z, y, slope)  -> dJ/dz = dJ/dy * f'(z)

``z`` is the pre-activation (the seed's z1 or z3) and ``y`` the saved output (z2 or y_hat);
each backward reads whichever of the two is cheapest. ``slope`` is leaky_relu's negative slope
and is ignored by the others (it is part of the one signature so callers never inspect names).

Backends call these as the reference path and may replace any of them with a fused kernel
(``Backend.act_forward`` / ``Backend.act_backward``); the math here is the definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import ConfigError

DEFAULT_SLOPE = 0.01


def _identity(xp, z, slope):
    return z.copy()


def _identity_grad(xp, dy, z, y, slope):
    return dy.copy()


def _relu(xp, z, slope):
    return xp.maximum(z, 0)


def _relu_grad(xp, dy, z, y, slope):
    # f'(z) = 1 where z > 0, else 0 (0 at z == 0, as torch's threshold_backward).
    return dy * (z > 0)


def _leaky_relu(xp, z, slope):
    # where(z > 0, z, slope z) is max(z, slope z) for slope <= 1 (min above): the same values
    # (and zeros' signs) in one ufunc pass, where `where` makes three
    return xp.maximum(z, z * slope) if slope <= 1 else xp.minimum(z, z * slope)


def _leaky_relu_grad(xp, dy, z, y, slope):
    if xp.__name__ != "numpy":  # (CuPy: one elementwise kernel, as a CUDA graph records it)
        return xp.where(z > 0, dy, dy * slope)
    # where(z > 0, dy, slope dy) as dy times a factor 1 (0 slope + 1) or slope (1 slope + 0),
    # each exact: NumPy's where and putmask take 5-10 times as long as this arithmetic
    above = z > 0
    g = np.multiply(~above, dy.dtype.type(slope))
    g += above
    g *= dy
    return g


def _sigmoid(xp, z, slope):
    # 1 / (1 + e^-z) for z >= 0 and e^z / (1 + e^z) for z < 0: no exp ever overflows.
    return _sigmoids(xp, z, both=False)


def _sigmoid_grad(xp, dy, z, y, slope):
    return dy * y * (1 - y)


def _tanh(xp, z, slope):
    return xp.tanh(z)


def _tanh_grad(xp, dy, z, y, slope):
    return dy * (1 - y * y)


def _phi(xp, z):
    """The standard normal CDF Phi(z) = erfc(-z / sqrt 2) / 2: through erfc, not 1 + erf,
    so that it keeps its digits where it is tiny (z << 0). SciPy's erfc for NumPy, CuPy's
    own (cupyx) for CuPy."""
    if xp.__name__ == "numpy":
        from scipy.special import erfc
    else:
        from cupyx.scipy.special import erfc
    return 0.5 * erfc(z * -SQRT1_2)


#: 1/sqrt(2) and 1/sqrt(2 pi): Phi's argument scale and the normal density's constant
SQRT1_2 = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327


def _gelu(xp, z, slope):
    # z Phi(z), with the exact (erf) Phi: torch.nn.GELU() (approximate="none").
    return (z * _phi(xp, z)).astype(z.dtype, copy=False)


def _gelu_grad(xp, dy, z, y, slope):
    # f'(z) = Phi(z) + z phi(z), phi(z) = e^(-z^2/2) / sqrt(2 pi), as torch's gelu_backward;
    # GELU dips below 0, so y does not determine z: this backward reads z.
    pdf = xp.exp(-0.5 * z * z) * INV_SQRT_2PI
    return (dy * (_phi(xp, z) + z * pdf)).astype(dy.dtype, copy=False)


#: GELU's tanh approximation: sqrt(2/pi) and the cubic's coefficient (torch's kBeta, kKappa)
TANH_BETA = 0.7978845608028654
TANH_KAPPA = 0.044715


def _gelu_tanh(xp, z, slope):
    # 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))): torch.nn.GELU(approximate="tanh").
    t = xp.tanh(TANH_BETA * (z + TANH_KAPPA * (z * z * z)))
    return (0.5 * z * (1 + t)).astype(z.dtype, copy=False)


def _gelu_tanh_grad(xp, dy, z, y, slope):
    # torch's gelu_backward (tanh): 0.5 (1 + t) + 0.5 z (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 z^2).
    t = xp.tanh(TANH_BETA * (z + TANH_KAPPA * (z * z * z)))
    right = 0.5 * z * (1 - t * t) * (TANH_BETA * (1 + 3 * TANH_KAPPA * (z * z)))
    return (dy * (0.5 * (1 + t) + right)).astype(dy.dtype, copy=False)


def _sigmoids(xp, z, both=True):
    """(sigma(z), 1 - sigma(z) = sigma(-z)), each from e = exp(-|z|) <= 1 without a
    subtraction: 1 / (1 + e) on one side of 0, e / (1 + e) on the other. The numerator is
    chosen as max(e, 1 or 0), not by where, which takes NumPy 5-10 times as long (the same
    values; a NaN z stays NaN); ``both=False``: sigma(z) alone."""
    e = xp.exp(-xp.abs(z))
    d = 1 + e
    up = z >= 0
    s = (xp.maximum(e, up) / d).astype(z.dtype, copy=False)
    if not both:
        return s
    return s, (xp.maximum(e, ~up) / d).astype(z.dtype, copy=False)


def _silu(xp, z, slope):
    # z sigma(z), also called swish: torch.nn.SiLU.
    return (z * _sigmoids(xp, z, both=False)).astype(z.dtype, copy=False)


def _silu_grad(xp, dy, z, y, slope):
    # f'(z) = sigma(z) (1 + z (1 - sigma(z))), torch's silu_backward; reads z (SiLU dips
    # below 0 too). 1 - sigma(z) is sigma(-z), so it keeps its digits at large z.
    s, t = _sigmoids(xp, z)
    return (dy * (s * (1 + z * t))).astype(dy.dtype, copy=False)


def _softmax(xp, z, slope):
    shifted = z - z.max(axis=-1, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_grad(xp, dy, z, y, slope):
    # Jacobian-vector product of softmax: dz_i = y_i (dy_i - sum_j dy_j y_j).
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Activation:
    name: str
    forward: Callable
    backward: Callable
    elementwise: bool = True  # softmax is row-wise


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", _identity, _identity_grad),
        Activation("relu", _relu, _relu_grad),
        Activation("leaky_relu", _leaky_relu, _leaky_relu_grad),
        Activation("sigmoid", _sigmoid, _sigmoid_grad),
        Activation("tanh", _tanh, _tanh_grad),
        Activation("gelu", _gelu, _gelu_grad),
        Activation("gelu_tanh", _gelu_tanh, _gelu_tanh_grad),
        Activation("silu", _silu, _silu_grad),
        Activation("softmax", _softmax, _softmax_grad, elementwise=False),
    )
}

#: Activations allowed between hidden layers (softmax only makes sense on the output).
HIDDEN_ACTIVATIONS = tuple(n for n, a in ACTIVATIONS.items() if a.elementwise)


def get_activation(name: str) -> Activation:
    """Look up an activation by name; unknown names raise ConfigError listing the valid ones."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown activation {name!r}; valid names: {', '.join(ACTIVATIONS)}"
        ) from None
