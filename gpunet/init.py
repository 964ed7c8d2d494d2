"""Weight initialisers. Weights are drawn on the host from a seeded ``numpy.random.Generator``
and only then copied to the backend, so one seed gives identical initial weights everywhere.

Each initialiser returns ``(W, b)`` as float64 host arrays, W shaped (fan_out, fan_in).
"""

from __future__ import annotations

import math

import numpy as np

from .activations import DEFAULT_SLOPE
from .errors import ConfigError


#: activations with relu's shape (zero, or about zero, below 0 and the identity above), for
#: which "auto" draws Kaiming/He weights
RELU_LIKE = ("relu", "leaky_relu", "gelu", "gelu_tanh", "silu")


def gain(activation: str, slope: float = DEFAULT_SLOPE) -> float:
    """The recommended gain for an activation (as torch.nn.init.calculate_gain; the gelus and
    silu, which torch has no gain for, take relu's)."""
    if activation in ("relu", "gelu", "gelu_tanh", "silu"):
        return math.sqrt(2.0)
    if activation == "leaky_relu":
        return math.sqrt(2.0 / (1 + slope**2))
    if activation == "tanh":
        return 5.0 / 3.0
    return 1.0


def _zeros(rng, fan_out, fan_in, g, std):
    return np.zeros((fan_out, fan_in)), np.zeros(fan_out)


def _normal(rng, fan_out, fan_in, g, std):
    return rng.normal(0.0, std, (fan_out, fan_in)), np.zeros(fan_out)


def _xavier_uniform(rng, fan_out, fan_in, g, std):
    bound = g * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, (fan_out, fan_in)), np.zeros(fan_out)


def _xavier_normal(rng, fan_out, fan_in, g, std):
    s = g * math.sqrt(2.0 / (fan_in + fan_out))
    return rng.normal(0.0, s, (fan_out, fan_in)), np.zeros(fan_out)


def _kaiming_uniform(rng, fan_out, fan_in, g, std):
    bound = g * math.sqrt(3.0 / fan_in)
    return rng.uniform(-bound, bound, (fan_out, fan_in)), np.zeros(fan_out)


def _kaiming_normal(rng, fan_out, fan_in, g, std):
    return rng.normal(0.0, g / math.sqrt(fan_in), (fan_out, fan_in)), np.zeros(fan_out)


def _torch_default(rng, fan_out, fan_in, g, std):
    # torch.nn.Linear's reset_parameters: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for W and b.
    bound = 1.0 / math.sqrt(fan_in)
    W = rng.uniform(-bound, bound, (fan_out, fan_in))
    return W, rng.uniform(-bound, bound, fan_out)


INITIALISERS = {
    "zeros": _zeros,
    "normal": _normal,
    "xavier_uniform": _xavier_uniform,
    "xavier_normal": _xavier_normal,
    "kaiming_uniform": _kaiming_uniform,
    "kaiming_normal": _kaiming_normal,
    "torch": _torch_default,
}
INIT_NAMES = ("auto",) + tuple(INITIALISERS)


def init_linear(name, rng, fan_out, fan_in, activation="relu", slope=DEFAULT_SLOPE, std=0.01):
    """Draw (W, b) for a linear layer followed by ``activation``.

    ``"auto"`` is Kaiming/He uniform before relu, leaky_relu, the gelus and silu, Xavier/Glorot
    uniform otherwise; ``std`` is used by ``"normal"`` only.
    """
    if name == "auto":
        name = "kaiming_uniform" if activation in RELU_LIKE else "xavier_uniform"
    try:
        fn = INITIALISERS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown init {name!r}; valid names: {', '.join(INIT_NAMES)}") from None
    return fn(rng, fan_out, fan_in, gain(activation, slope), std)
