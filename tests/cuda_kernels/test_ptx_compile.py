"""Every cuda_ops kernel compiles for a real GPU (PTX, sm_90), checked without one.

The simulator runs kernels as Python, so it cannot catch typing errors or float64 creeping
into float32 kernels. NVVM can compile kernels to PTX without a driver; numba-cuda 0.30
only asks a device for its compute capability and nvrtc for its arch list, which a few shims
answer. This runs in a subprocess without NUMBA_ENABLE_CUDASIM, with numpy.row_stack removed
as numpy 2.5 removed it, so it also proves compat.ensure_numpy_compat is what lets
numba-cuda compile there. Skips when libNVVM or the shims' targets are missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    r'''
    import re, sys, types
    import numpy

    if hasattr(numpy, "row_stack"):
        del numpy.row_stack  # as in numpy 2.5

    try:
        from numba import cuda
        import numba.cuda.cuda_paths as cuda_paths
        import numba.cuda.cudadrv.nvrtc as nvrtc
        import numba.cuda.dispatcher as dispatcher
        from cuda.pathfinder import load_nvidia_dynamic_lib

        load_nvidia_dynamic_lib("nvvm")
        # No driver: answer the questions compile_ptx asks of a device and of nvrtc.
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
        nvrtc.get_supported_ccs = lambda: ((7, 5), (8, 0), (8, 6), (9, 0))
        cuda_paths._get_nvrtc_path = lambda: cuda_paths._env_path_tuple("none", None)
    except Exception as e:
        print(f"SKIP {type(e).__name__}: {e}")
        sys.exit(3)

    from gpunet.kernels import compat, cuda_ops

    if sys.argv[1] == "noguard":
        compat.ensure_numpy_compat = lambda: None

    f64_math = re.compile(r"^\s*(add|sub|mul|div|fma|rcp|sqrt|ex2|lg2)\.\S*f64", re.M)
    compiled = 0
    for key, fn, sig in cuda_ops.kernel_sources():
        try:
            ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
        except AttributeError as e:
            if "row_stack" in str(e):
                print(f"ROW_STACK {e}")
                sys.exit(4)
            raise
        if "float32" in key and f64_math.search(ptx):
            print(f"F64 {key}: {f64_math.search(ptx).group(0).strip()}")
            sys.exit(5)
        # The CuPy launch path hands the kernel a flat parameter list: it must match the
        # PTX entry's parameters one for one, in count and type.
        name, params = cuda_ops.ptx_entry(ptx)
        plan = cuda_ops.arg_plan(sig, params)
        fakes, expect = [], []
        from numba.core.sigutils import normalize_signature

        for j, t in enumerate(normalize_signature(sig)[0]):
            if hasattr(t, "ndim"):
                shape = tuple(3 + k for k in range(t.ndim))
                item = numpy.dtype(str(t.dtype)).itemsize
                strides = tuple(int(numpy.prod(shape[k + 1:])) * item for k in range(t.ndim))
                ptr = 0x7F0000000000 + 0x1000 * j
                fakes.append(types.SimpleNamespace(
                    shape=shape, strides=strides, size=int(numpy.prod(shape)), itemsize=item,
                    data=types.SimpleNamespace(ptr=ptr)))
                expect += [0, 0, int(numpy.prod(shape)), item, ptr, *shape, *strides]
            else:
                fakes.append(0.25)
                expect.append(0.25)
        flat = cuda_ops.marshal(plan, fakes)
        kinds = {"u64": (numpy.uint64, numpy.int64), "f32": (numpy.float32,),
                 "f64": (numpy.float64,)}
        if len(flat) != len(params) or any(
                type(v) not in kinds.get(p, ()) for v, p in zip(flat, params)) or [
                    int(v) if p == "u64" else float(v) for v, p in zip(flat, params)] != expect:
            print(f"ABI {key}: {params} <- {[type(v).__name__ for v in flat]}")
            sys.exit(6)
        compiled += 1
    print(f"OK {compiled}")
    '''
)


def run_script(mode):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        env=env, capture_output=True, text=True, timeout=600,
    )
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode == 3:
        pytest.skip(f"cannot compile PTX here: {last[5:]}")
    return proc, last


def test_every_kernel_compiles_to_ptx_without_float64_in_float32_kernels():
    """... and the flat parameters of the CuPy launch path match each PTX entry (count, type,
    value: meminfo, parent, nitems, itemsize, data pointer, shape, strides per array)."""
    proc, last = run_script("guard")
    assert proc.returncode == 0 and last.startswith("OK"), proc.stdout + proc.stderr
    # (8 activations x 3 ops + 3 row ops + 2 label dtypes + 3 layer norm kernels + 2 batch norm
    # kernels) x 2 dtypes
    assert int(last.split()[1]) == 68


def test_without_the_numpy_guard_numba_cuda_cannot_compile():
    """The control for the test above: the guard, not luck, is what makes it pass."""
    proc, last = run_script("noguard")
    if proc.returncode == 0:
        pytest.skip("this numba-cuda compiles without numpy.row_stack: the guard is no longer needed")
    assert proc.returncode == 4 and last.startswith("ROW_STACK"), proc.stdout + proc.stderr
