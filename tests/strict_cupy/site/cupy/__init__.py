"""A strict stand-in for CuPy 14, for testing gpunet's CuPy paths on a machine without a GPU.

It is not CuPy and has no GPU: arrays are NumPy arrays that only the stand-in touches, and
every number it computes is NumPy's (or, for an ``ElementwiseKernel``, the kernel body's,
compiled as host C++). What it checks is that gpunet's code keeps CuPy's rules, the ones a
CPU-only test suite cannot see; each rule cites the CuPy source or documentation it follows
(cupy/cupy on GitHub; user_guide/difference.rst is "Differences between CuPy and NumPy"):

1. No implicit conversion of a device array to NumPy: ``np.asarray(d)``, ``np.array(d)``
   raise TypeError "Implicit conversion to a NumPy array is not allowed" (cupy/_core/core.pyx
   ``ndarray.__array__``). A host copy is explicit: ``d.get()``, ``cupy.asnumpy(d)``.
   ``float(d)``, ``int(d)``, ``bool(d)``, ``d.item()``, ``repr(d)`` read the device (core.pyx:
   ``float(self.get())``) and are allowed outside a capture.
2. No host array where CuPy takes device arrays: a ``numpy.ndarray`` (0-d too) or a list given
   to a ufunc, an operator or an ``ElementwiseKernel`` raises TypeError "Unsupported type"
   (cupy/_core/_kernel.pyx ``_preprocess_arg`` wraps every non-array argument in
   ``_scalar.CScalar``, which takes Python and NumPy scalars only; difference.rst "Universal
   Functions only work with CuPy array or scalar"). A NumPy ufunc or function given a device
   array dispatches to CuPy's (core.pyx ``__array_ufunc__``, ``__array_function__``) and so
   refuses a host array beside it the same way.
3. No host array written into a device array by basic indexing: ``d[...] = h`` and
   ``d[:2] = h`` go to ``d.fill(h)``, which raises ValueError "non-scalar numpy.ndarray cannot
   be used for fill" (cupy/_core/_routines_indexing.pyx ``_scatter_op``, core.pyx ``fill``);
   a 0-d host array is taken as its value; a list raises TypeError (CScalar). Advanced
   indexing (an integer or boolean index array) copies the value to the device
   (``_scatter_op_single``: ``core.array(value)``), which is allowed. ``cupy.copyto(d, h)``
   takes a host source of one element only (cupy/_manipulation/basic.py ``copyto``).
4. Reductions give 0-d device arrays, not scalars: ``d.sum()``, ``cupy.max(d)``, ``d[3]`` of a
   1-d array (difference.rst "Reduction methods"); ``max``/``min`` take no ``initial=`` or
   ``where=``. Integer index arrays and ``take`` wrap around out-of-range indices
   (difference.rst "Out-of-bounds indices").
5. Device arrays come from host data by a copy (``cupy.asarray(h)`` never shares ``h``'s
   memory), and ``cupy.asarray(d)`` of a device array of that dtype is ``d`` itself.
6. What a CUDA-graph capture forbids (cupy/cuda/stream.pyx ``Stream.begin_capture``: "During
   the stream capture, synchronous device-host transfers are not allowed"; CUDA's
   cudaErrorStreamCaptureUnsupported): inside ``begin_capture``/``end_capture``, every host
   read above (``get``, ``asnumpy``, ``item``, ``float``, ``bool``, ...), every host-to-device
   copy (``cupy.asarray`` of host data, ``set``, setting or indexing or ``take`` with host
   data), every op whose output size is read back (boolean-mask indexing, ``nonzero``,
   ``unique``, one-argument ``where``) and synchronising the stream or device raise
   ``cupy.cuda.runtime.CUDARuntimeError``; so does device work on another stream than the
   capturing one (it would run outside the graph); capturing on the null stream raises
   RuntimeError (``begin_capture``). Capture executes nothing: at ``end_capture`` every array
   that existed before holds what it held then, and the float arrays made during it hold NaN
   until a launch. ``Graph.launch`` replays the recorded ops, in order, into the buffers they
   wrote at capture, reading their inputs then: a Python scalar an op was given at capture is
   replayed as it was (a graph holds kernel arguments by value), a value read from a device
   array is read anew.
7. Memory: ``get_default_memory_pool().used_bytes()`` counts the live arrays' buffers in
   512-byte blocks (cupy/cuda/memory.pyx); arrays made under
   ``cupy.cuda.using_allocator(pool.malloc)`` count in ``pool``.
8. Timing: ``cupy.cuda.Event()`` times unless made with ``disable_timing=True``;
   ``cupy.cuda.get_elapsed_time(start, end)`` is a float of milliseconds, and an event never
   recorded or not timing is cudaErrorInvalidResourceHandle (cupy/cuda/stream.pyx ``Event``,
   ``get_elapsed_time``; CUDA's cudaEventElapsedTime). The stand-in's milliseconds are the
   host's clock between the two ``record`` calls.
9. Interchange: a device array's ``__cuda_array_interface__`` is CuPy's (CAI version 3:
   shape, typestr, descr, data, strides None where C-contiguous, the current stream;
   cupy/_core/core.pyx), so the kernels' argument checks take it as CuPy's; its pointer is a
   host one. ``cupy.random.standard_normal`` and ``randint`` give device arrays of CuPy's
   dtypes (``cupy/random.py`` here).

Stricter than CuPy, on purpose: every cupy function refuses host arrays, while CuPy's
``cupy.sum(h)`` and ``cupy.take(h, i)`` call ``h.sum()``, ``h.take()`` and so compute on the
host; in gpunet's CuPy paths that is a host computation by mistake. The host cuBLAS
(``cupy._gpunet``) refuses a handle bound to another stream than the current one.

What it does NOT check: GPU numbers (its float math is NumPy's, not cuBLAS's or CUDA's;
float32 sums are NumPy's pairwise ones), the numba.cuda kernels (off for the CuPy backend;
tests/cuda_kernels runs them under numba's simulator), the real CUDA driver, NVRTC, cuBLAS,
NCCL (``cupy.cuda.nccl.available`` is False) or the graph API, device memory figures beyond
the count above, launch counts and device timing (rule 8's figures are host ones). Those need a GPU: ``scripts/gpu-check``.

It loads only when asked: ``GPUNET_STRICT_CUPY=1`` (tests/conftest.py then puts this folder
first on ``sys.path`` and on ``PYTHONPATH`` for child processes). Imported otherwise it raises
ImportError, so that it can never pass for CuPy. Its device calls itself
"strict CuPy stand-in (no GPU)", which gpunet's ``device_name`` shows.
"""

import os

if os.environ.get("GPUNET_STRICT_CUPY") != "1":
    raise ImportError("this is gpunet's strict CuPy stand-in (tests/strict_cupy), not CuPy: it "
                      "loads only under GPUNET_STRICT_CUPY=1 (scripts/test's last pass)",
                      name="cupy")

import numpy as _np  # noqa: E402

from . import _core, _functions, _gpunet, cuda, random  # noqa: E402, F401 (its API)
from ._core import ndarray  # noqa: E402, F401
from ._functions import (array, asanyarray, asarray, ascontiguousarray, asnumpy,  # noqa: E402, F401
                         copyto, get_array_module, take)
from ._kernel import ElementwiseKernel  # noqa: E402, F401

__version__ = "14.0.0+strict.stand.in"
#: what no CuPy has: the mark of the stand-in
STAND_IN = True

float16, float32, float64 = _np.float16, _np.float32, _np.float64
int8, int16, int32, int64 = _np.int8, _np.int16, _np.int32, _np.int64
uint8, uint16, uint32, uint64 = _np.uint8, _np.uint16, _np.uint32, _np.uint64
bool_, intp, complex64, complex128 = _np.bool_, _np.intp, _np.complex64, _np.complex128
nan, inf, pi, e, newaxis = _np.nan, _np.inf, _np.pi, _np.e, None


def get_default_memory_pool():
    return _core.default_pool


def get_default_pinned_memory_pool():
    return _core.pinned_pool


def __getattr__(name):  # NumPy's other functions, made strict on first use
    return getattr(_functions, name)


_gpunet.install()
