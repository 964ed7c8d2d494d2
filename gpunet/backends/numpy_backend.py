"""The CPU backend: NumPy arrays, every op from the base class unless a kernel is faster."""

from __future__ import annotations

import platform

import numpy as np

from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    @property
    def device_name(self) -> str:
        return f"cpu ({platform.machine() or 'unknown'})"

    def asarray(self, a, dtype=None):
        if type(a).__module__.split(".")[0] == "cupy":  # a device array: copy it to the host
            a = a.get()
        return np.asarray(a, dtype=dtype)

    def to_host(self, a) -> np.ndarray:
        return self.asarray(a)
