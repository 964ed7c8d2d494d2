#!/usr/bin/env python
"""Benchmark gpunet's fused kernels against plain NumPy / CuPy and PyTorch, in one run.

CPU (always): cpu_ops vs plain NumPy vs torch CPU (same thread count) for log_softmax and
softmax cross-entropy (forward + dlogits) at 4096 x 1000 float32, the other row-wise ops,
and the elementwise twins vs NumPy expressions at a large and a small size.

GPU (when cupy and a CUDA device work): each cuda_ops kernel's GB/s against a device copy,
host microseconds per call at 4096 elements, and log_softmax at 65536 x 1000 and
8192 x 32000 against torch (when torch has CUDA), syncing the device around timings.

Times are medians over rounds of blocks (each block warmed up first), so a thread pool
left spinning by the previous implementation does not land on the next one's samples.
Benchmarks are not tests: nothing here asserts.

    python scripts/bench_kernels.py [--json out.json] [--reps 30] [--rounds 3] [--skip-gpu]
                                    [--skip-cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

# --- timing ---------------------------------------------------------------------------------


class ForeignLoad:
    """CPU time other processes used while the block ran, in cores (Linux /proc/stat).

    On a 2-core machine one busy neighbour makes every 2-thread parallel region wait for a
    descheduled thread: timings then snap to multiples of the 4 ms scheduler tick.
    """

    def __enter__(self):
        self.start = self._sample()
        return self

    def __exit__(self, *exc):
        end = self._sample()
        if self.start is None or end is None:
            self.cores = None
            return
        (busy0, ours0, t0), (busy1, ours1, t1) = self.start, end
        self.cores = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / (t1 - t0)

    @staticmethod
    def _sample():
        try:
            import resource

            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
            ru = resource.getrusage(resource.RUSAGE_SELF)
            return busy, ru.ru_utime + ru.ru_stime, time.perf_counter()
        except (OSError, ImportError, ValueError):
            return None


def median_ms(fns, reps, rounds, warmup=3, sync=None):
    """{label: median ms} for each callable, timed in blocks of ``reps``, ``rounds`` times."""
    samples = {label: [] for label in fns}
    for _ in range(rounds):
        for label, fn in fns.items():
            for _ in range(warmup):
                fn()
            if sync:
                sync()
            for _ in range(reps):
                t = time.perf_counter()
                fn()
                if sync:
                    sync()
                samples[label].append(time.perf_counter() - t)
    return {label: 1e3 * float(np.median(s)) for label, s in samples.items()}


# --- plain NumPy (and torch) versions of the ops -----------------------------------------------


def np_log_softmax(x, out):
    m = x.max(axis=1, keepdims=True)
    np.subtract(x, m, out=out)
    lse = np.log(np.exp(out).sum(axis=1, keepdims=True))
    np.subtract(out, lse, out=out)
    return out


def np_softmax(x, out):
    np.subtract(x, x.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


def np_logsumexp(x, out):
    m = x.max(axis=1)
    out[:] = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
    return out


def np_cross_entropy(x, labels, loss, dl, scale):
    rows = np.arange(x.shape[0])
    np_log_softmax(x, dl)
    loss[:] = -dl[rows, labels]
    np.exp(dl, out=dl)
    dl[rows, labels] -= 1
    dl *= scale
    return loss, dl


def np_sigmoid(z, out):
    e = np.exp(-np.abs(z))
    np.divide(np.where(z >= 0, 1, e), 1 + e, out=out)
    return out


# --- CPU ------------------------------------------------------------------------------------------


def cpu_benchmarks(reps, rounds):
    import numba

    from gpunet.activations import get_activation
    from gpunet.kernels import cpu_ops

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    threads = numba.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)

    rng = np.random.default_rng(0)
    rows = []

    def measure(op, shape, fns, r):
        with ForeignLoad() as load:
            times = median_ms(fns, r, rounds)
        best = min(times, key=times.get)
        for impl, ms in times.items():
            rows.append({
                "op": op, "shape": list(shape), "impl": impl, "ms": round(ms, 4),
                "vs_best": round(ms / times[best], 3),
                "foreign_load_cores": None if load.cores is None else round(load.cores, 2),
            })

    # row-wise, 4096 x 1000 float32
    shape = (4096, 1000)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    out = np.empty_like(x)
    red = np.empty(shape[0], np.float32)
    labels = rng.integers(0, shape[1], shape[0])
    scale = 1.0 / shape[0]
    xt = torch.from_numpy(x) if torch else None
    lt = torch.from_numpy(labels) if torch else None

    def torch_ce():
        xr = xt.detach().requires_grad_()
        F.cross_entropy(xr, lt).backward()
        return xr.grad

    ops = {
        "log_softmax": {
            "cpu_ops": lambda: cpu_ops.log_softmax(x, out),
            "numpy": lambda: np_log_softmax(x, out),
            "torch": (lambda: torch.log_softmax(xt, 1)) if torch else None,
        },
        "softmax_cross_entropy (loss + dlogits)": {
            "cpu_ops": lambda: cpu_ops.softmax_cross_entropy(x, labels, red, out, scale),
            "numpy": lambda: np_cross_entropy(x, labels, red, out, scale),
            "torch": torch_ce if torch else None,
        },
        "softmax": {
            "cpu_ops": lambda: cpu_ops.softmax(x, out),
            "numpy": lambda: np_softmax(x, out),
            "torch": (lambda: torch.softmax(xt, 1)) if torch else None,
        },
        "logsumexp": {
            "cpu_ops": lambda: cpu_ops.logsumexp(x, red),
            "numpy": lambda: np_logsumexp(x, red),
            "torch": (lambda: torch.logsumexp(xt, 1)) if torch else None,
        },
    }
    for op, fns in ops.items():
        fns = {k: v for k, v in fns.items() if v is not None}
        measure(op, shape, fns, reps)

    # elementwise: a large, memory-bound size and a small MLP-layer size
    for shape, r in (((4096, 4096), max(5, reps // 3)), ((128, 256), reps * 10)):
        z = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        b = rng.standard_normal(shape[1]).astype(np.float32)
        y = np.tanh(z)
        o = np.empty_like(z)
        groups = {
            "relu forward": {
                "cpu_ops": lambda: cpu_ops.act_forward("relu", z, o, 0.0),
                "numpy np.maximum(z, 0, out=)": lambda: np.maximum(z, 0, out=o),
            },
            "bias + relu forward": {
                "cpu_ops bias_act_forward": lambda: cpu_ops.bias_act_forward("relu", z, b, o, 0.0),
                "numpy add, maximum (out=)": lambda: np.maximum(np.add(z, b, out=o), 0, out=o),
            },
            "sigmoid forward": {
                "cpu_ops": lambda: cpu_ops.act_forward("sigmoid", z, o, 0.0),
                "numpy stable (exp(-|z|), where, divide)": lambda: np_sigmoid(z, o),
            },
            "tanh forward": {
                "cpu_ops": lambda: cpu_ops.act_forward("tanh", z, o, 0.0),
                "numpy np.tanh(z, out=)": lambda: np.tanh(z, out=o),
            },
            "relu backward": {
                "cpu_ops": lambda: cpu_ops.act_backward("relu", dy, z, None, o, 0.0),
                "numpy dy * (x > 0)": lambda: dy * (z > 0),
                "numpy np.multiply(dy, x > 0, out=)": lambda: np.multiply(dy, z > 0, out=o),
            },
            "sigmoid backward": {
                "cpu_ops": lambda: cpu_ops.act_backward("sigmoid", dy, None, y, o, 0.0),
                "numpy dy * (1 - y) * y": lambda: dy * (1 - y) * y,
            },
            "tanh backward": {
                "cpu_ops": lambda: cpu_ops.act_backward("tanh", dy, None, y, o, 0.0),
                "numpy dy * (1 - y * y)": lambda: dy * (1 - y * y),
            },
        }
        # gelu and silu: against gpunet's NumPy path (scipy's erfc) and torch's functions
        zt = torch.from_numpy(z) if torch else None
        for name in ("gelu", "silu"):
            act = get_activation(name)
            groups[f"{name} forward"] = {
                "cpu_ops": lambda name=name: cpu_ops.act_forward(name, z, o, 0.0),
                "numpy (gpunet.activations)": lambda act=act: act.forward(np, z, 0.0),
                "torch": (lambda name=name: getattr(torch.nn.functional, name)(zt))
                if torch else None,
            }
            groups[f"{name} backward"] = {
                "cpu_ops": lambda name=name: cpu_ops.act_backward(name, dy, z, None, o, 0.0),
                "numpy (gpunet.activations)": lambda act=act: act.backward(np, dy, z, None, 0.0),
            }
        for op, fns in groups.items():
            measure(op, shape, {k: v for k, v in fns.items() if v is not None}, r)
    return {
        "threads": threads,
        "numba_threading_layer": numba.threading_layer(),
        "parallel_min_size": cpu_ops.PARALLEL_MIN_SIZE,
        "rows": rows,
    }


# --- GPU ------------------------------------------------------------------------------------------


def gpu_status():
    try:
        import cupy

        cupy.arange(4).sum().item()
        return cupy, ""
    except Exception as e:  # no cupy, no driver, no device
        return None, f"{type(e).__name__}: {e}"


def naive_cupy_log_softmax(cupy, x):
    """max, subtract, exp, sum, log: the five-kernel version in anchors.md."""
    s = x - x.max(axis=1, keepdims=True)
    return s - cupy.log(cupy.exp(s).sum(axis=1, keepdims=True))


def gpu_benchmarks(cupy, reps, n=1 << 28, row_shapes=((65536, 1000), (8192, 32000)), small=4096):
    from gpunet.kernels import cuda_ops

    def device_ms(fn, n=reps):
        for _ in range(3):
            fn()
        cupy.cuda.get_current_stream().synchronize()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / n

    rows = []
    src = cupy.random.standard_normal(n, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    g = cupy.random.standard_normal(n, dtype=cupy.float32)
    copy_ms = device_ms(lambda: cupy.copyto(dst, src))
    copy_gbs = 2 * src.nbytes / copy_ms / 1e6
    rows.append({"op": "copy (cupy.copyto)", "elements": n, "ms": copy_ms, "GB/s": copy_gbs, "share_of_copy": 1.0})

    def elementwise(op, fn, arrays_moved):
        ms = device_ms(fn)
        gbs = arrays_moved * src.nbytes / ms / 1e6
        rows.append({"op": op, "elements": n, "ms": ms, "GB/s": gbs, "share_of_copy": gbs / copy_gbs})

    for name in ("relu", "sigmoid", "tanh"):
        elementwise(f"act_forward {name}", lambda: cuda_ops.act_forward(name, src, dst, 0.0), 2)
        elementwise(
            f"act_backward {name}",
            lambda: cuda_ops.act_backward(name, g, src, src, dst, 0.0), 3,
        )
    side = 1 << (n.bit_length() - 1) // 2
    z2 = src[: side * side].reshape(side, side)
    b2 = cupy.random.standard_normal(side, dtype=cupy.float32)
    elementwise("bias_act_forward relu", lambda: cuda_ops.bias_act_forward("relu", z2, b2, dst[: side * side].reshape(z2.shape), 0.0), 2)
    elementwise("cupy g * (z > 0) (reference)", lambda: g * (src > 0), 3)
    del src, dst, g, z2

    for shape in row_shapes:
        x = cupy.random.standard_normal(shape, dtype=cupy.float32)
        out = cupy.empty_like(x)
        labels = cupy.random.randint(0, shape[1], shape[0]).astype(cupy.int64)
        loss = cupy.empty(shape[0], cupy.float32)
        floor_ms = 2 * x.nbytes / copy_gbs / 1e6
        entry = {"op": "log_softmax", "shape": list(shape), "floor_ms": floor_ms}
        entry["cuda_ops_ms"] = device_ms(lambda: cuda_ops.log_softmax(x, out))
        entry["cuda_ops_GB/s"] = 2 * x.nbytes / entry["cuda_ops_ms"] / 1e6
        entry["cuda_ops_share_of_copy"] = entry["cuda_ops_GB/s"] / copy_gbs
        entry["cuda_ops_softmax_ms"] = device_ms(lambda: cuda_ops.softmax(x, out))
        entry["naive_cupy_ms"] = device_ms(lambda: naive_cupy_log_softmax(cupy, x))
        ce_ms = device_ms(lambda: cuda_ops.softmax_cross_entropy(x, labels, loss, out, 1.0 / shape[0]))
        entry["cuda_ops_softmax_cross_entropy_ms"] = ce_ms
        entry["cuda_ops_softmax_cross_entropy_share_of_copy"] = 2 * x.nbytes / ce_ms / 1e6 / copy_gbs
        try:
            import torch

            if torch.cuda.is_available():
                xt = torch.from_dlpack(x)
                entry["torch_ms"] = device_ms(lambda: torch.log_softmax(xt, 1))
            else:
                entry["torch"] = "unavailable: torch has no CUDA"
        except Exception as e:
            entry["torch"] = f"unavailable: {type(e).__name__}: {e}"
        rows.append(entry)
        del x, out

    # host time per call at 4096 elements: launch cost, not device time
    small = cupy.random.standard_normal(small, dtype=cupy.float32)
    small_out = cupy.empty_like(small)
    host = {}
    logits = cupy.random.standard_normal((128, 10), dtype=cupy.float32)
    labels = cupy.zeros(128, dtype=cupy.int64)
    loss_rows, dlogits = cupy.empty(128, dtype=cupy.float32), cupy.empty_like(logits)

    def numba_dispatch(fn):  # the same call through numba's dispatcher instead of CuPy
        def run():
            cuda_ops.RAW_LAUNCH = False
            try:
                fn()
            finally:
                cuda_ops.RAW_LAUNCH = True
        return run

    relu_bwd = lambda: cuda_ops.act_backward("relu", small, small, None, small_out, 0.0)  # noqa: E731
    ce = lambda: cuda_ops.softmax_cross_entropy(logits, labels, loss_rows, dlogits, 1 / 128)  # noqa: E731
    calls = {
        "cuda_ops.act_forward relu": lambda: cuda_ops.act_forward("relu", small, small_out, 0.0),
        "cuda_ops.act_backward relu": relu_bwd,
        "cuda_ops.act_backward relu, numba dispatch": numba_dispatch(relu_bwd),
        "cuda_ops.softmax_cross_entropy 128x10": ce,
        "cuda_ops.softmax_cross_entropy 128x10, numba dispatch": numba_dispatch(ce),
        "cupy ElementwiseKernel-backed cupy.maximum": lambda: cupy.maximum(small, 0, out=small_out),
        "cupy relu backward dy * (z > 0) (gpunet's array-module op)": lambda: small * (small > 0),
    }
    for label, fn in calls.items():
        for _ in range(20):
            fn()
        cupy.cuda.get_current_stream().synchronize()
        t = time.perf_counter()
        for _ in range(1000):
            fn()
        host[label] = (time.perf_counter() - t) / 1000 * 1e6
        cupy.cuda.get_current_stream().synchronize()
    rows.append({"op": f"host us per call, {small.size} elements", **host})
    for key, why in cuda_ops.RAW_ERRORS.items():  # these launched through numba's dispatcher
        print(f"warning: no CuPy launch for {key}: {why}", file=sys.stderr)
    dev = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    return {"device": dev["name"].decode() if isinstance(dev["name"], bytes) else dev["name"], "rows": rows}


# --- reporting ------------------------------------------------------------------------------------


def machine():
    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
    }
    for mod in ("numba", "torch", "cupy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            pass
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")
        )
    except Exception:
        pass
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = os.getloadavg()
    return info


def print_cpu_table(cpu):
    print(f"\nCPU, {cpu['threads']} threads (numba layer {cpu['numba_threading_layer']}), float32, median ms")
    print(f"{'op':40s} {'shape':12s} {'implementation':42s} {'ms':>9s} {'x best':>7s} {'other load':>10s}")
    noisy = False
    for r in cpu["rows"]:
        shape = "x".join(map(str, r["shape"]))
        load = r["foreign_load_cores"]
        noisy = noisy or (load or 0) > 0.1
        load = "?" if load is None else f"{load:.2f}"
        print(f"{r['op']:40s} {shape:12s} {r['impl']:42s} {r['ms']:9.3f} {r['vs_best']:7.2f} {load:>10s}")
    if noisy:
        print("WARNING: other processes used more than 0.1 core during some rows ('other load'):"
              " their parallel timings are not reliable; rerun on a quiet machine.")
    print("\nWhere plain NumPy beats cpu_ops (the backend keeps NumPy there):")
    by_case = {}
    for r in cpu["rows"]:
        by_case.setdefault((r["op"], tuple(r["shape"])), {})[r["impl"]] = r["ms"]
    found = False
    for (op, shape), impls in by_case.items():
        ours = next(v for k, v in impls.items() if k.startswith("cpu_ops"))
        numpy_best = min((v for k, v in impls.items() if k.startswith("numpy")), default=None)
        if numpy_best is not None and numpy_best < ours:
            found = True
            print(f"  {op} {'x'.join(map(str, shape))}: numpy {numpy_best:.3f} ms < cpu_ops {ours:.3f} ms")
    if not found:
        print("  none")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--reps", type=int, default=30, help="timed calls per block")
    parser.add_argument("--rounds", type=int, default=3, help="blocks per implementation")
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true",
                        help="the GPU section only (scripts/gpu-check: the CPU section is "
                             "measured on CPU machines, and takes 20 s or more)")
    args = parser.parse_args(argv)
    if args.json:  # before the minutes of timing, not after
        from gpunet.checkpoint import check_writable

        try:
            check_writable(args.json, "--json")
        except ValueError as e:  # (gpunet's ConfigError: one line, as argparse says it)
            parser.error(str(e))

    result = {"machine": machine()}
    if args.skip_cpu:
        result["cpu"] = {"skipped": "--skip-cpu"}
    else:
        result["cpu"] = cpu_benchmarks(args.reps, args.rounds)
        print_cpu_table(result["cpu"])

    cupy, why = (None, "--skip-gpu") if args.skip_gpu else gpu_status()
    if cupy is None:
        result["gpu"] = {"skipped": why}
        print(f"\nGPU: skipped ({why})")
    else:
        result["gpu"] = gpu_benchmarks(cupy, max(args.reps, 20))
        print(f"\nGPU: {result['gpu']['device']}")
        for r in result["gpu"]["rows"]:
            print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    if args.json:
        from gpunet.checkpoint import atomic_write

        atomic_write(args.json, lambda f: f.write(json.dumps(result, indent=2).encode()))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
