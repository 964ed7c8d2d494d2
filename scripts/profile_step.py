#!/usr/bin/env python
"""Profile one training step, gpunet against PyTorch: where the time of a step goes.

A benchmark (``gpunet bench``) says how long a step takes; this says why. For each config it
builds, one at a time, gpunet's default step (a CUDA graph replay on the GPU, fixed buffers on
the CPU), gpunet's eager ``train_step`` and PyTorch's eager step (the builders of
``gpunet.bench``), and for each:

- times ``--steps`` steps after 3 warm-up steps: host wall time per step (synchronised before
  and after) and, on the GPU, device time per step between two CUDA events;
- profiles a few more steps. On the GPU, ``torch.profiler`` with CUDA activity: CUPTI records
  the kernels of the whole process (CuPy's, numba's launched through CuPy, cuBLAS's, those
  of a graph replay), so both libraries are seen the same way; from it come the kernels per
  step, their summed time ("busy") and the top kernels. A row whose profile holds no kernel
  says so and keeps its timings. gpunet's host side is profiled with cProfile (launch time
  only: the closing device synchronisation is outside), PyTorch's with the profiler's CPU
  ops. On the CPU: cProfile for gpunet, the profiler's CPU ops for PyTorch.
- gives a verdict: on the GPU, busy / wall < 0.7 is host- or launch-bound (the device idles),
  otherwise device-bound (and which kernel dominates); on the CPU, which function dominates.
  gpunet's default-path rows also show the speed goal of ``gpunet.bench.GOALS`` they meet or
  miss in this run (one timed block: indicative; ``gpunet bench`` is the measurement).

Each row's top kernels and host entries are printed first and the table last, since only the
tail of a remote run's output may come back.

    python scripts/profile_step.py [--backend numpy|cupy] [--config small ...]
                                   [--optimizer sgd|adam] [--steps N] [--json PATH]

Configs default to small and medium, plus large on the GPU. PyTorch is optional: without it
only gpunet is profiled, and on the GPU without kernel profiles (CUPTI comes with PyTorch).
A profile, not a benchmark: one timed block per row, nothing asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import sys
import time
from dataclasses import dataclass, field

import numpy as np

import gpunet as gn
from gpunet import bench
from gpunet.bench import CONFIGS, _gpunet_step, _torch_step

WARMUP = 3
TOP_KERNELS = 6
TOP_HOST_GPU = 3  # host entries printed per row on the GPU (the kernels come first there)
TOP_HOST_CPU = 6
HOST_BOUND_BELOW = 0.7  # busy / wall under this: the device waits on the host
NAME_WIDTH = 50

#: (lib, graph) for each row of a config: gpunet's default path, gpunet eager, PyTorch eager
ROWS = (("gpunet", True), ("gpunet", False), ("torch", None))


@dataclass
class Setup:
    """What every row needs: the backend, PyTorch (or None) and how to wait for the device."""

    backend: object
    gpu: bool
    torch: object = None
    torch_gpu: bool = False  # PyTorch runs on the device (and its profiler sees kernels)
    profiler_ok: bool = False  # torch.profiler worked once here
    notes: list = field(default_factory=list)

    def settle(self) -> None:
        """On the CPU, let the last library's thread pool fall asleep (spinning OpenMP / BLAS
        workers would steal the cores from the next one's first steps); then wait for the
        device (on the GPU only that: no host pool runs there, as in gpunet.bench)."""
        if not self.gpu:
            time.sleep(bench.PAUSE_S)
        self.sync()

    def sync(self) -> None:
        """Wait for all device work, every stream and both libraries (no-op on the CPU)."""
        if self.gpu:
            self.backend.xp.cuda.runtime.deviceSynchronize()

    def release(self) -> None:
        """Free what the last row left behind, so the next one starts from the same memory."""
        gc.collect()
        if self.gpu:
            self.backend.xp.get_default_memory_pool().free_all_blocks()
            if self.torch_gpu:
                self.torch.cuda.empty_cache()

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"note: {text}", flush=True)


def _setup(backend_name: str) -> Setup:
    backend = gn.get_backend(backend_name)
    s = Setup(backend=backend, gpu=backend.name == "cupy")
    try:
        import torch
    except ImportError:
        s.note("torch is not importable: gpunet only, "
               + ("no kernel profiles" if s.gpu else "cProfile only"))
        return s
    s.torch = torch
    if s.gpu:
        s.torch_gpu = bool(torch.cuda.is_available())
        if not s.torch_gpu:
            s.note(f"torch {torch.__version__} has no CUDA here: no torch rows, "
                   "no kernel profiles")
    s.profiler_ok = _warm_profiler(s)
    return s


def _activities(s: Setup):
    acts = [s.torch.profiler.ProfilerActivity.CPU]
    if s.gpu and s.torch_gpu:
        acts.append(s.torch.profiler.ProfilerActivity.CUDA)
    return acts


def _warm_profiler(s: Setup) -> bool:
    """One throwaway profiler session: CUPTI's start-up stays out of the first row's profile,
    and a profiler that cannot run here is found once."""
    if s.gpu and not s.torch_gpu:
        return False
    torch = s.torch
    try:
        with torch.profiler.profile(activities=_activities(s)):
            x = torch.ones(64, device="cuda" if s.gpu else "cpu")
            (x + 1).sum()
            s.sync()
        return True
    except Exception as e:
        s.note(f"torch.profiler does not run here ({_one_line(e)}): timings only")
        return False


# -- one row ------------------------------------------------------------------------------------


def _build(s: Setup, lib, graph, sizes, batch, optimizer):
    """(step, path) for one row."""
    if lib == "torch":
        return _torch_step("cuda" if s.gpu else "cpu", sizes, batch, optimizer), "eager"
    made = _gpunet_step(s.backend, sizes, batch, optimizer, graph=graph)
    return made[0], made[1]  # (the third item, the graph's pool size, is not needed here)


class DeviceClock:
    """Two CUDA events on the library's current stream; ``stop()`` gives the ms between."""

    def __init__(self, s: Setup, lib):
        if lib == "torch":
            cuda = s.torch.cuda
            self.pair = (cuda.Event(enable_timing=True), cuda.Event(enable_timing=True))
            self.elapsed = lambda a, b: a.elapsed_time(b)
        else:
            cuda = s.backend.xp.cuda
            self.pair = (cuda.Event(), cuda.Event())
            self.elapsed = cuda.get_elapsed_time

    def start(self) -> None:
        self.pair[0].record()

    def stop(self) -> float:
        self.pair[1].record()
        self.pair[1].synchronize()
        return float(self.elapsed(*self.pair))


def _time_steps(s: Setup, lib, step, n):
    """(wall ms, device ms or None) per step over ``n`` steps."""
    clock = DeviceClock(s, lib) if s.gpu else None
    s.settle()
    t0 = time.perf_counter()
    if clock:
        clock.start()
    for _ in range(n):
        step()
    device = clock.stop() / n if clock else None
    s.sync()
    return (time.perf_counter() - t0) * 1e3 / n, device


def profile_row(s: Setup, name, lib, graph, optimizer, steps, prof_steps) -> dict:
    """Time and profile one library's step on one config; returns the row."""
    sizes, batch, _ = CONFIGS[name]
    step, path = _build(s, lib, graph, sizes, batch, optimizer)
    for _ in range(WARMUP):
        step()
    s.sync()
    row = {"config": name, "sizes": sizes, "batch": batch, "optimizer": optimizer, "lib": lib,
           "path": path, "steps": steps, "profile_steps": prof_steps, "device_ms": None,
           "busy_ms": None, "kernels_per_step": None, "top_kernels": [], "host_top": [],
           "host_source": None, "notes": []}
    row["wall_ms"], row["device_ms"] = _time_steps(s, lib, step, steps)
    if s.profiler_ok and (lib == "torch" or s.gpu):
        _profile_torch(s, row, lib, step, prof_steps)
    if lib == "gpunet":
        row["host_top"], row["host_calls_per_step"] = _cprofile(s, step, prof_steps)
        row["host_source"] = "cProfile tottime"
    row["verdict"] = _verdict(row, s.gpu)
    return row


def _profile_torch(s: Setup, row, lib, step, n) -> None:
    """Kernels (GPU) and, for PyTorch's own rows, host ops from ``torch.profiler``."""
    torch = s.torch
    s.settle()
    try:
        with torch.profiler.profile(activities=_activities(s)) as prof:
            for _ in range(n):
                step()
            s.sync()
        if s.gpu:
            kernels = _kernel_table(prof, torch)
            if kernels:
                _put_kernels(row, kernels, n)
            else:
                _row_note(row, "the profiler recorded no GPU kernels for this row")
        if lib == "torch":
            row["host_top"] = _torch_host_top(prof, torch, n)
            row["host_source"] = "torch.profiler self CPU"
    except Exception as e:
        _row_note(row, f"torch.profiler failed ({_one_line(e)}); timings only")


def _row_note(row, text) -> None:
    row["notes"].append(text)
    print(f"note: {row['config']} {row['lib']} {row['path']}: {text}", flush=True)


# -- reading the profiles -------------------------------------------------------------------------


def _kernel_table(prof, torch) -> dict:
    """{kernel name: [count, total us]} for the device work (kernels, memcpy, memset) the
    profiler recorded. Other device-side records are spans, not work, and are left out: user
    annotations (a range over kernels) and synchronisation waits.

    From ``prof.events()`` (each kernel with its own time range); if that fails, from
    ``prof.key_averages()`` entries on the CUDA device.
    """
    cuda = torch.autograd.DeviceType.CUDA
    table = {}
    try:
        for e in prof.events():
            if getattr(e, "device_type", None) != cuda or not _is_work(e):
                continue
            r = e.time_range
            entry = table.setdefault(e.name, [0, 0.0])
            entry[0] += 1
            entry[1] += float(r.end - r.start)
        return table
    except Exception:
        table = {}
    for a in prof.key_averages():
        if getattr(a, "device_type", None) != cuda or not _is_work(a):
            continue
        us = _first_attr(a, ("self_device_time_total", "self_cuda_time_total",
                             "device_time_total", "cuda_time_total"))
        table[a.key] = [int(a.count), float(us or 0.0)]
    return table


def _is_work(e) -> bool:
    """Whether a device event is a kernel, memcpy or memset (kineto's activity types "kernel",
    "gpu_memcpy", "gpu_memset"); an event without a type counts unless it is an annotation."""
    if getattr(e, "is_user_annotation", False):
        return False
    kind = getattr(e, "activity_type", None)
    return not isinstance(kind, str) or not kind or kind == "kernel" \
        or kind.startswith("gpu_mem")


def _first_attr(obj, names):
    """The first of ``names`` that ``obj`` has (attribute names moved across torch versions)."""
    for n in names:
        try:
            return getattr(obj, n)
        except Exception:  # a property may raise on an event of the wrong kind
            continue
    return None


def _put_kernels(row, kernels, n) -> None:
    busy_us = sum(us for _, us in kernels.values())
    row["busy_ms"] = busy_us / n / 1e3
    row["kernels_per_step"] = sum(c for c, _ in kernels.values()) / n
    top = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:TOP_KERNELS]
    row["top_kernels"] = [{"name": k, "per_step": c / n, "us_per_step": us / n,
                           "share": us / busy_us if busy_us else 0.0}
                          for k, (c, us) in top]


def _torch_host_top(prof, torch, n) -> list:
    """PyTorch's host entries (ops, runtime calls, optimiser ranges) by self CPU time; the
    profile's closing device synchronisation (waiting, not host work) left out."""
    cpu = torch.autograd.DeviceType.CPU
    entries = [a for a in prof.key_averages()
               if getattr(a, "device_type", cpu) == cpu and "Synchronize" not in a.key]
    selfs = [(a, float(_first_attr(a, ("self_cpu_time_total",)) or 0.0)) for a in entries]
    total = sum(t for _, t in selfs)
    top = sorted(selfs, key=lambda at: -at[1])[:TOP_HOST_CPU]
    return [{"name": a.key, "per_step": a.count / n, "ms_per_step": t / n / 1e3,
             "share": t / total if total else 0.0} for a, t in top]


def _cprofile(s: Setup, step, n):
    """(gpunet's top host functions by their own time (tottime), Python-visible calls per
    step), from cProfile over ``n`` steps."""
    prof = cProfile.Profile()
    s.settle()
    prof.enable()
    for _ in range(n):
        step()
    prof.disable()  # before the sync: waiting for the device is not host work
    s.sync()
    stats = pstats.Stats(prof).stats  # {(file, line, func): (cc, ncalls, tottime, cumtime, _)}
    total = sum(v[2] for v in stats.values())
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:TOP_HOST_CPU]
    calls = sum(v[1] for v in stats.values()) / n
    return [{"name": _func_name(key), "per_step": v[1] / n, "ms_per_step": v[2] * 1e3 / n,
             "share": v[2] / total if total else 0.0} for key, v in top], calls


def _func_name(key) -> str:
    file, line, func = key
    if file == "~":  # a builtin
        return func
    return f"{os.path.basename(file)}:{line} {func}"


def _short(name: str, width: int = NAME_WIDTH) -> str:
    """A kernel or function name cut to ``width``: no ``void``, no argument list."""
    name = name.strip().removeprefix("void ")
    if name.endswith(")"):  # drop a signature's (...) argument list, nested parens included
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                if i and (name[i - 1].isalnum() or name[i - 1] in "_>"):  # not "Memcpy (..)"
                    name = name[:i]
                break
    return name if len(name) <= width else name[:width - 3] + "..."


def _verdict(row, gpu) -> str:
    host = row["host_top"][0] if row["host_top"] else None
    if gpu:
        busy, wall = row["busy_ms"], row["wall_ms"]
        if not busy:
            return "no kernel profile: wall and device times only"
        frac = busy / wall
        if frac < HOST_BOUND_BELOW:
            v = f"host/launch-bound: the device idles {100 * (1 - frac):.0f}% of the step"
            if host:
                v += f"; host top {_short(host['name'], 30)} {100 * host['share']:.0f}%"
            return v
        k = row["top_kernels"][0]
        return (f"device-bound ({100 * min(frac, 1):.0f}% busy): top kernel "
                f"{_short(k['name'], 30)} takes {100 * k['share']:.0f}% of device time")
    if host:
        return f"top {_short(host['name'], 40)} takes {100 * host['share']:.0f}% of host time"
    return "no profile: wall time only"


# -- output -------------------------------------------------------------------------------------


def _fmt(v, width, spec) -> str:
    return f"{'-' if v is None else format(v, spec):>{width}}"


def compare(rows, gpu) -> None:
    """Add to each gpunet row its wall time over PyTorch's (``vs_torch``) and, on the default
    path, its goal as ``gpunet.bench.judge`` reads it, with whether this run met it (one timed
    block, not the benchmark's median over rounds: indicative; the large config's memory goal
    is the benchmark's to judge, so that row reads n/a)."""
    torch_wall = {r["config"]: r["wall_ms"] for r in rows if r["lib"] == "torch"}
    for r in rows:
        if r["lib"] != "gpunet":
            continue
        r["vs_torch"] = r["wall_ms"] / torch_wall[r["config"]] if r["config"] in torch_wall \
            else None
        goal, met = bench.judge({"config": r["config"], "path": r["path"], "tf32": False,
                                 "gpunet_ms": r["wall_ms"], "ratio": r["vs_torch"]}, gpu)
        if goal:
            r["goal"], r["goal_met"] = goal, met


def _goal_text(r) -> str:
    if "goal" not in r:
        return ""
    met = {True: "met", False: "MISSED", None: "n/a"}[r["goal_met"]]
    return f" (goal {r['goal']}: {met})"


def format_details(rows, gpu) -> str:
    """Per row: its goal, its top kernels (GPU) and its top host entries."""
    lines = []
    for r in rows:
        calls = r.get("host_calls_per_step")
        calls = f", {calls:.0f} Python calls/step" if calls else ""
        lines.append(f"{r['config']} {r['lib']} {r['path']}{_goal_text(r)}{calls}:")
        for k in r["top_kernels"]:
            lines.append(f"  kernel {100 * k['share']:4.0f}% {k['us_per_step']:10.1f} us "
                         f"x{k['per_step']:<5.3g} {_short(k['name'])}")
        for h in r["host_top"][:TOP_HOST_GPU if gpu else TOP_HOST_CPU]:
            lines.append(f"  host   {100 * h['share']:4.0f}% {h['ms_per_step']:10.3f} ms "
                         f"x{h['per_step']:<5.3g} {_short(h['name'])}")
        for text in r["notes"]:
            lines.append(f"  note: {text}")
    return "\n".join(lines)


def format_table(rows) -> str:
    """One line per row: times, kernels per step, gpunet / PyTorch and the verdict."""
    header = (f"{'config':<7} {'lib':<6} {'path':<6} {'wall ms':>9} {'dev ms':>9} "
              f"{'busy ms':>9} {'kernels':>7} {'x torch':>7}  verdict")
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['config']:<7} {r['lib']:<6} {r['path']:<6} {r['wall_ms']:9.3f} "
            f"{_fmt(r['device_ms'], 9, '.3f')} {_fmt(r['busy_ms'], 9, '.3f')} "
            f"{_fmt(r['kernels_per_step'], 7, '.1f')} {_fmt(r.get('vs_torch'), 7, '.2f')}  "
            f"{r['verdict']}")
    return "\n".join(lines)


def _one_line(e) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]}"


def _write_json(path, result) -> None:
    from gpunet.checkpoint import atomic_write

    # a temporary file beside ``path``, then os.replace: a reader never sees half a file
    atomic_write(path, lambda f: f.write(json.dumps(result, indent=2).encode()))


# -- main ---------------------------------------------------------------------------------------


def _default_steps(name, gpu) -> int:
    return {"small": 50, "medium": 20 if gpu else 10}.get(name, 5)


def _profile_steps(name) -> int:
    return 2 if name == "large" else 5


def run(backend_name, configs, optimizer, steps=None) -> dict:
    s = _setup(backend_name)
    rows = []
    for name in configs:
        if CONFIGS[name][2] and not s.gpu:
            s.note(f"skipping {name}: GPU only")
            continue
        n = steps or _default_steps(name, s.gpu)
        for lib, graph in ROWS:
            if lib == "torch" and (s.torch is None or (s.gpu and not s.torch_gpu)):
                continue
            try:
                row = profile_row(s, name, lib, graph, optimizer, n, _profile_steps(name))
            except Exception as e:
                s.note(f"{name} {lib}{'' if graph is None else ' graph=' + str(graph)} "
                       f"failed: {_one_line(e)}")
                continue
            finally:
                s.release()
            rows.append(row)
            print(f"{name} {lib} {row['path']}: {row['wall_ms']:.3f} ms/step; "
                  f"{row['verdict']}", flush=True)
    compare(rows, s.gpu)
    return {"backend": s.backend.name, "device": s.backend.device_name,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"Python {platform.python_version()}",
            "numpy": np.__version__, "torch": getattr(s.torch, "__version__", None),
            "cupy": getattr(s.backend.xp, "__version__", None) if s.gpu else None,
            "optimizer": optimizer, "notes": s.notes, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    p.add_argument("--config", action="append", choices=sorted(CONFIGS),
                   help="repeatable; default: small and medium (and large on a GPU)")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per row (default: 50 small, 20 medium (10 on the CPU), "
                        "5 large)")
    p.add_argument("--json", metavar="PATH", help="write the rows here as JSON")
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be at least 1")
    configs = args.config or (["small", "medium"]
                              + (["large"] if args.backend == "cupy" else []))
    try:
        result = run(args.backend, configs, args.optimizer, args.steps)
    except gn.GpunetError as e:  # no GPU here, say: one line, as gpunet's commands do
        print(f"profile_step: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        _write_json(args.json, result)
    # the table last: a remote run may send back only the tail of its output
    print("\n" + format_details(result["rows"], result["backend"] == "cupy"))
    print(f"\n=== step profile: {result['backend']} on {result['device']}, "
          f"{args.optimizer}, torch {result['torch']}")
    print(format_table(result["rows"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
