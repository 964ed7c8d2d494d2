"""``cupy.cuda``: one pretend device, streams that capture graphs, counting memory pools.

Streams follow cupy/cuda/stream.pyx: ``with stream:`` makes it this thread's current stream;
``begin_capture`` refuses the null stream; while a stream captures, synchronising it (or the
device) is an error, as any synchronous device-host transfer is ("During the stream capture,
synchronous device-host transfers are not allowed", Stream.begin_capture's note). A graph is
what ``end_capture`` returns; ``launch`` replays it (see ``cupy._core``).
"""

from __future__ import annotations

import contextlib
import itertools
import time

from .. import _core
from .._core import CUDARuntimeError, MemoryPool, refuse_in_capture

#: what the device calls itself: gpunet's CupyBackend.device_name shows it
DEVICE_NAME = "strict CuPy stand-in (no GPU)"
_pointers = itertools.count(0x5000)


class runtime:  # noqa: N801 (cupy_backends.cuda.api.runtime, as a namespace)
    CUDARuntimeError = CUDARuntimeError
    streamCaptureModeGlobal, streamCaptureModeThreadLocal, streamCaptureModeRelaxed = 0, 1, 2
    _is_hip_environment = False

    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def getDevice():
        return 0

    @staticmethod
    def setDevice(device):
        Device(device)

    @staticmethod
    def getDeviceProperties(device):
        Device(device)
        return {"name": DEVICE_NAME.encode(), "totalGlobalMem": 0, "major": 0, "minor": 0,
                "multiProcessorCount": 0, "warpSize": 32}

    @staticmethod
    def deviceSynchronize():
        refuse_in_capture("cudaDeviceSynchronize")

    @staticmethod
    def runtimeGetVersion():
        return 0

    @staticmethod
    def driverGetVersion():
        return 0


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise CUDARuntimeError("cudaErrorInvalidDevice", f"device {self.id}: the "
                                   "stand-in has one device, 0")
        self.compute_capability = "00"
        self.pci_bus_id = "0000:00:00.0 (strict CuPy stand-in)"

    def use(self):
        pass

    def synchronize(self):
        refuse_in_capture("Device.synchronize()")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)


class Event:
    """cupy/cuda/stream.pyx ``Event``: timing on unless ``disable_timing``; ``record`` notes
    the host clock (the stand-in's work is done when it returns, so an event is done once
    recorded). Interprocess events must disable timing, as CuPy's constructor checks."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        if interprocess and not disable_timing:
            raise ValueError("Timing must be disabled for interprocess events")
        self.ptr = next(_pointers)
        self._timing = not disable_timing
        self._at = None  # perf_counter() at the last record; None: never recorded

    done = property(lambda self: True)

    def record(self, stream=None):
        self._at = time.perf_counter()

    def synchronize(self):
        refuse_in_capture("Event.synchronize()")


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events, a float (cupy/cuda/stream.pyx
    ``get_elapsed_time``, runtime.eventElapsedTime). As cudaEventElapsedTime, an event never
    recorded or made with ``disable_timing`` is cudaErrorInvalidResourceHandle. The figure is
    the host's clock between the two ``record`` calls: no GPU time."""
    for e in (start_event, end_event):
        if not isinstance(e, Event):
            raise TypeError(f"Argument 'start_event' has incorrect type (expected "
                            f"cupy.cuda.stream.Event, got {type(e).__name__})")
        if e._at is None or not e._timing:
            raise CUDARuntimeError("cudaErrorInvalidResourceHandle",
                                   "invalid resource handle (an event never recorded, or "
                                   "made with disable_timing=True)")
    return float((end_event._at - start_event._at) * 1e3)


class Graph:
    """A captured CUDA graph: ``launch`` replays its ops into the buffers they wrote."""

    def __init__(self, ops):
        self._ops = ops

    def launch(self, stream=None):
        if _core.capturing() is not None:
            raise NotImplementedError("the strict CuPy stand-in does not emulate a graph "
                                      "launched inside a capture")
        _core.replay(self._ops)

    def upload(self, stream=None):
        pass


class Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.ptr = 0 if null else next(_pointers)
        self.device_id = -1 if null else 0

    def __enter__(self):
        stack = getattr(_core._local, "streams", None)
        if stack is None:
            stack = _core._local.streams = []
        stack.append(self)
        return self

    def __exit__(self, *exc):
        _core._local.streams.pop()
        return False

    def use(self):
        _core._local.streams = [self]
        return self

    def synchronize(self):
        c = _core.capturing()
        if c is not None and c.stream is self:
            refuse_in_capture("synchronising the capturing stream")

    @property
    def done(self):
        return True

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        pass

    def begin_capture(self, mode=None):
        _core.begin(self)

    def end_capture(self):
        return Graph(_core.end(self))

    def is_capturing(self):
        c = _core._capture
        return c is not None and c.stream is self


Stream.null = Stream(null=True)


def get_current_stream(device_id=None):
    return _core.current_stream() or Stream.null


@contextlib.contextmanager
def using_allocator(allocator=None):
    """Arrays made within count in the pool whose ``malloc`` is ``allocator``."""
    stack = getattr(_core._local, "pools", None)
    if stack is None:
        stack = _core._local.pools = []
    pool = getattr(allocator, "__self__", None)
    stack.append(pool if isinstance(pool, MemoryPool) else _core.default_pool)
    try:
        yield
    finally:
        stack.pop()


def get_allocator():
    return _core.default_pool.malloc


def is_available():
    return True

__all__ = ["Device", "Event", "Graph", "MemoryPool", "Stream", "get_current_stream",
           "get_elapsed_time", "runtime", "using_allocator"]
