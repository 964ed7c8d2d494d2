"""Dropout masks that every backend draws alike.

During training each hidden layer's output h = f(z) becomes h * m, where m_ij is 1/keep with
probability keep = 1 - p and 0 otherwise (inverted dropout, as ``torch.nn.Dropout``: nothing
changes at inference); the backward pass multiplies dJ/dh by the same m. The mask is not drawn
from a generator's state but computed from a counter: element j of row r of layer l at
training step t keeps iff the top 24 bits of

    splitmix64(key(seed, t, l) + r * width + j)

are below keep * 2^24, with splitmix64 the finaliser of Steele, Lea and Flood's SplitMix
(2014). Integer arithmetic only, so NumPy and CuPy (and any later kernel) give the same bits;
the same (seed, t, l) always gives the same mask, so a resumed run, a gradient check or a
rank of a data-parallel job (which passes its first row's index in the batch as
``row_offset``) draws what one process drawing the whole batch would.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

_U64 = (1 << 64) - 1
_GOLDEN, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
#: the mask compares the top 24 bits of each hash with keep * 2^24
BITS = 24


def _mix(z: int) -> int:
    """splitmix64 on a Python int, mod 2^64."""
    z = (z + _GOLDEN) & _U64
    z = ((z ^ (z >> 30)) * _M1) & _U64
    z = ((z ^ (z >> 27)) * _M2) & _U64
    return z ^ (z >> 31)


def seed_key(seed: int) -> int:
    """The part of every key that depends on the seed alone: splitmix64(seed)."""
    return _mix(seed & _U64)


def key_of(s0: int, step: int, layer: int) -> int:
    """The 64-bit key of one layer's mask at one training step, from ``seed_key(seed)``."""
    return _mix(_mix(s0 ^ (step & _U64)) ^ (layer & _U64))


def stream_key(seed: int, step: int, layer: int) -> int:
    """The 64-bit key of one layer's mask at one training step."""
    return key_of(seed_key(seed), step, layer)


def check_rate(p) -> float:
    """``p`` as a float in [0, 1), else ConfigError."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) \
            or not 0 <= float(p) < 1:
        raise ConfigError(f"dropout must be a number in [0, 1), got {p!r}")
    return float(p)


def threshold(p: float) -> int:
    """The kept elements' bound on the top 24 bits: round((1 - p) * 2^24)."""
    return int(round((1.0 - p) * (1 << BITS)))


def mask(xp, shape, p: float, key: int, row_offset: int = 0, dtype=np.float32):
    """The (rows, width) mask of rate ``p`` for ``key`` (``stream_key``): 1 / (1 - p) where an
    element is kept, 0 where dropped, in ``dtype``, on the array module ``xp``."""
    rows, width = shape
    z = xp.arange(rows * width, dtype=np.uint64)
    z += np.uint64((key + _GOLDEN + row_offset * width) & _U64)
    z ^= z >> np.uint64(30)
    z *= np.uint64(_M1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_M2)
    z ^= z >> np.uint64(31)
    kept = (z >> np.uint64(64 - BITS)) < np.uint64(threshold(p))
    dtype = np.dtype(dtype)
    return (kept.astype(dtype) * dtype.type(1.0 / (1.0 - p))).reshape(rows, width)


def derived_seed(seed) -> int:
    """The mask seed of a model seeded with ``seed`` (an int: fixed by it; else drawn)."""
    entropy = int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) \
        and seed >= 0 else None
    return int(np.random.SeedSequence(entropy, spawn_key=(0xD0,)).generate_state(
        1, np.uint64)[0])
