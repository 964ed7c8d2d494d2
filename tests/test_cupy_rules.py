"""CuPy's rules that gpunet's CuPy paths must keep, held against whichever cupy imports here.

On a GPU (``scripts/gpu-check``'s gpu-tests stage) that is CuPy itself: these tests say the
rules are CuPy's. In ``scripts/test``'s last pass it is the strict stand-in of
``tests/strict_cupy`` (its rules, cited from CuPy's source, in ``site/cupy/__init__.py``):
the same tests say the stand-in keeps them, so that the rest of that pass can trust it. The
last tests, not marked gpu, run in the main pass: the stand-in stays out of a normal run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import STRICT_CUPY

import gpunet as gn

_OK, _WHY = gn.cupy_status()
SITE = Path(__file__).parent / "strict_cupy" / "site"


def on_cupy(test):
    """A rule test: GPU-marked, and skipped where no cupy backend works (as conftest's)."""
    return pytest.mark.gpu(pytest.mark.skipif(not _OK, reason=f"no cupy backend: {_WHY}")(test))


@pytest.fixture
def cp():
    import cupy

    return cupy


@pytest.fixture
def stream(cp):
    """A stream to capture on; a capture a failed test left open is ended."""
    s = cp.cuda.Stream(non_blocking=True)
    yield s
    if s.is_capturing():
        try:
            s.end_capture()
        except Exception:  # (an invalidated capture ends with an error)
            pass


@on_cupy
@pytest.mark.parametrize("convert", [np.asarray, np.array, lambda d: np.add(d.get(), d)],
                         ids=["asarray", "array", "numpy-ufunc"])
def test_no_implicit_conversion_to_numpy(cp, convert):
    with pytest.raises(TypeError):
        convert(cp.arange(3.0))


@on_cupy
@pytest.mark.parametrize("op", [
    lambda cp, d, h: d + h, lambda cp, d, h: h * d, lambda cp, d, h: cp.maximum(d, h),
    lambda cp, d, h: cp.add(d, list(h)), lambda cp, d, h: cp.add(d, h[:1].reshape(())),
    lambda cp, d, h: cp.ElementwiseKernel("T x, T y", "T z", "z = x + y", "add")(d, h),
], ids=["operator", "reflected", "ufunc", "list", "0-d host array", "ElementwiseKernel"])
def test_a_host_array_beside_a_device_array_is_refused(cp, op):
    with pytest.raises(TypeError, match="Unsupported type"):
        op(cp, cp.arange(3.0), np.arange(3.0))


@on_cupy
def test_scalars_go_with_device_arrays(cp):
    d = cp.arange(3.0)
    got = cp.maximum(d * np.float64(2), 1)
    assert isinstance(got, cp.ndarray) and got.get().tolist() == [1.0, 2.0, 4.0]


@on_cupy
def test_a_host_array_is_not_written_into_a_device_array_by_basic_indexing(cp):
    d = cp.zeros((2, 3))
    for key in (Ellipsis, slice(0, 1)):
        with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
            d[key] = np.ones((2, 3))[key]
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for copyto"):
        cp.copyto(d, np.ones((2, 3)))
    d[...] = np.array(2.0)  # (a 0-d host array is its value)
    d[np.array([1])] = np.full((1, 3), 5.0)  # advanced indexing copies the value over
    assert d.get().tolist() == [[2.0] * 3, [5.0] * 3]


@on_cupy
def test_reductions_and_elements_are_0d_device_arrays(cp):
    d = cp.arange(4.0)
    for got in (d.sum(), cp.max(d), d.mean(), d[2], cp.isfinite(d).all()):
        assert isinstance(got, cp.ndarray) and got.ndim == 0
    assert float(d.sum()) == 6.0 and int(d.argmax()) == 3


@on_cupy
def test_out_of_range_index_arrays_wrap_around(cp):
    d = cp.arange(3.0)
    assert d[cp.asarray([1, 3, -1])].get().tolist() == [1.0, 0.0, 2.0]
    assert cp.take(d, cp.asarray([4])).get().tolist() == [1.0]


@on_cupy
def test_device_arrays_copy_host_data(cp):
    h = np.arange(3.0)
    d = cp.asarray(h)
    h[0] = 9.0
    assert d.get()[0] == 0.0
    assert cp.asarray(d) is d and cp.asarray(d, dtype=d.dtype) is d


@on_cupy
@pytest.mark.parametrize("read", [
    lambda cp, d: d.get(), lambda cp, d: cp.asnumpy(d), lambda cp, d: float(d.sum()),
    lambda cp, d: d.item() if d.size == 1 else d[0].item(), lambda cp, d: bool(d.any()),
    lambda cp, d: cp.asarray(np.ones(3)), lambda cp, d: d.set(np.ones(3)),
    lambda cp, d: cp.cuda.get_current_stream().synchronize(),
], ids=["get", "asnumpy", "float", "item", "bool", "asarray-host", "set", "synchronize"])
def test_a_capture_holds_no_host_read_no_host_copy_no_synchronisation(cp, stream, read):
    d = cp.ones(3)
    with stream:
        stream.begin_capture()
        with pytest.raises(RuntimeError):  # (cupy.cuda.runtime.CUDARuntimeError)
            read(cp, d)


@on_cupy
def test_a_capture_executes_nothing_and_a_launch_replays_it(cp, stream):
    x, lr = cp.full(3, 1.0), cp.full(1, 0.5)
    with stream:
        stream.begin_capture()
        x -= lr * 2  # (lr read from the device at each launch; 2 held by value)
        graph = stream.end_capture()
    assert x.get().tolist() == [1.0] * 3  # capture ran nothing
    with stream:
        graph.launch(stream)
        lr.fill(0.25)
        graph.launch(stream)
    stream.synchronize()
    assert x.get().tolist() == [-0.5] * 3


@on_cupy
def test_no_capture_on_the_null_stream(cp):
    with pytest.raises(RuntimeError, match="default"):
        cp.cuda.Stream.null.begin_capture()


@on_cupy
def test_events_time_the_work_recorded_between_them(cp):
    """profile_step's device clock and bench_kernels' timings: two events, elapsed ms."""
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    cp.arange(1000.0).sum()
    end.record()
    end.synchronize()
    ms = cp.cuda.get_elapsed_time(start, end)
    assert isinstance(ms, float) and ms >= 0
    with pytest.raises(RuntimeError):  # never recorded (cudaErrorInvalidResourceHandle)
        cp.cuda.get_elapsed_time(cp.cuda.Event(), end)
    untimed = cp.cuda.Event(disable_timing=True)
    untimed.record()
    untimed.synchronize()
    with pytest.raises(RuntimeError):  # not timing (cudaErrorInvalidResourceHandle)
        cp.cuda.get_elapsed_time(untimed, end)


@on_cupy
def test_random_draws_are_device_arrays_of_the_dtype_asked(cp):
    x = cp.random.standard_normal((4, 3), dtype=cp.float32)
    assert isinstance(x, cp.ndarray) and x.shape == (4, 3) and x.dtype == np.float32
    i = cp.random.randint(0, 5, 7)
    assert isinstance(i, cp.ndarray) and i.shape == (7,) and i.dtype.kind == "i"
    assert 0 <= int(i.min()) and int(i.max()) < 5
    with pytest.raises(TypeError, match="float32 and float64"):
        cp.random.standard_normal(3, dtype=cp.int32)


@on_cupy
def test_device_arrays_export_the_cuda_array_interface(cp):
    d = cp.zeros((2, 3), dtype=cp.float32)
    cai = d.__cuda_array_interface__
    assert (cai["version"], cai["shape"], cai["typestr"]) == (3, (2, 3), "<f4")
    assert cai["data"] == (d.data.ptr, False) and cai["strides"] is None
    assert cai["stream"] != 0  # (CAI v3: the null stream is exported as the legacy one, 1)
    assert d.T.__cuda_array_interface__["strides"] == (4, 12)


# -- the stand-in stays out of a normal run --------------------------------------------------

def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_the_stand_in_refuses_to_load_unless_asked():
    env = {k: v for k, v in os.environ.items() if k != "GPUNET_STRICT_CUPY"}
    proc = subprocess.run(
        [sys.executable, "-c", "import cupy"], capture_output=True, text=True, timeout=60,
        env={**env, "PYTHONPATH": os.pathsep.join([str(SITE), env.get("PYTHONPATH", "")])})
    assert proc.returncode == 1
    assert "ImportError: this is gpunet's strict CuPy stand-in" in proc.stderr


@pytest.mark.skipif(STRICT_CUPY, reason="this pass loads the stand-in on purpose")
def test_a_normal_run_cannot_import_the_stand_in():
    try:
        import cupy
    except ImportError:
        return
    assert not getattr(cupy, "STAND_IN", False), cupy.__file__


def test_the_stand_in_names_its_device_and_version():
    proc = _python("import gpunet as gn, cupy; b = gn.get_backend('cupy'); "
                   "print(b.device_name); print(cupy.__version__)", GPUNET_STRICT_CUPY="1",
                   PYTHONPATH=os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["cuda:0 (strict CuPy stand-in (no GPU))",
                                        "14.0.0+strict.stand.in"]
