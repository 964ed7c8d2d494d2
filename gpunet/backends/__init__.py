"""Backend selection: ``get_backend("numpy" | "cupy" | "auto")``.

``auto`` (the default; the ``GPUNET_BACKEND`` environment variable overrides the default)
takes CuPy only when it imports and a CUDA device really runs a kernel, and otherwise NumPy,
with a one-line notice (gpunet.log) saying why.
"""

from __future__ import annotations

import os
import threading

from ..errors import BackendUnavailableError, ConfigError
from ..log import notice
from .base import Backend
from .cupy_backend import CupyBackend, probe_cupy
from .numpy_backend import NumpyBackend

BACKEND_NAMES = ("auto", "numpy", "cupy")

_instances: dict[str, Backend] = {}
_instances_lock = threading.Lock()  # (threads asking at once get one instance)
_cupy_probe: tuple | None = None
_notice_shown = False


def cupy_status():
    """``(usable, reason)``: whether the CuPy backend can run here, and why not (probed once)."""
    global _cupy_probe
    if _cupy_probe is None:
        _cupy_probe = probe_cupy()
    cupy, why = _cupy_probe
    return cupy is not None, why


def default_backend_name() -> str:
    """``$GPUNET_BACKEND`` (lower case), else ``"auto"``; ConfigError, naming the variable,
    where it names no backend."""
    given = os.environ.get("GPUNET_BACKEND", "")
    name = given.strip().lower() or "auto"
    if name not in BACKEND_NAMES:
        raise ConfigError(f"$GPUNET_BACKEND={given!r} is not a backend; valid: "
                          f"{', '.join(BACKEND_NAMES)}" + _cpu_or_gpu(name))
    return name


def get_backend(name: str | Backend | None = None) -> Backend:
    """Return the backend called ``name`` (one shared instance per name).

    ``None`` means the default: ``$GPUNET_BACKEND`` if set, else ``"auto"``. A Backend instance
    is returned as it is. Raises ``BackendUnavailableError`` when ``"cupy"`` cannot run here and
    ``ConfigError`` for an unknown name.
    """
    global _notice_shown
    if isinstance(name, Backend):
        return name
    if name is None:
        name = default_backend_name()
    if not isinstance(name, str) or name.lower() not in BACKEND_NAMES:
        raise ConfigError(f"unknown backend {name!r}; valid names: {', '.join(BACKEND_NAMES)}"
                          + _cpu_or_gpu(name))
    name = name.lower()
    if name == "auto":
        usable, why = cupy_status()
        if usable:
            return get_backend("cupy")
        if not _notice_shown:
            notice(f"using the numpy backend: {why} (numpy asked for by name goes without "
                   "this line: backend=\"numpy\" in Python, --backend numpy or "
                   "GPUNET_BACKEND=numpy on the command line)")
            _notice_shown = True
        return get_backend("numpy")
    if name not in _instances:
        if name != "numpy":
            usable, why = cupy_status()
            if not usable:
                raise BackendUnavailableError(f"the cupy backend is unavailable: {why}")
        with _instances_lock:
            if name not in _instances:
                _instances[name] = NumpyBackend() if name == "numpy" \
                    else CupyBackend(_cupy_probe[0])
    return _instances[name]


def _cpu_or_gpu(name) -> str:
    """What numpy and cupy are, for a backend named as a device (cpu, cuda, gpu)."""
    return " (numpy computes on the CPU, cupy on an NVIDIA GPU)" \
        if str(name).lower() in ("cpu", "cuda", "gpu") else ""


def backend_of(a) -> Backend:
    """The backend whose arrays ``a`` is: cupy for a CuPy array, numpy for anything else."""
    if type(a).__module__.split(".")[0] == "cupy":
        return get_backend("cupy")
    return get_backend("numpy")


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendUnavailableError",
    "CupyBackend",
    "NumpyBackend",
    "backend_of",
    "cupy_status",
    "default_backend_name",
    "get_backend",
]
