"""Side-by-side training-step benchmark: gpunet against PyTorch on the same machine, in one run.

For each config both libraries train the same MLP (relu by default, ``--activation``;
optionally with ``--norm`` or ``--dropout``; softmax cross-entropy, fp32) on one fixed random
batch. After warm-up they alternate: a round of ``steps`` gpunet steps, then a round
of PyTorch steps, the device synchronised around each round; the figure is the median over
rounds of the mean step time. Reported: ms per step, gpunet / PyTorch, samples per second,
gpunet's GEMMs alone (the step's own GEMM calls replayed in the same rounds: the floor that
BLAS or cuBLAS sets) and, on the GPU, peak device memory and PyTorch's own full-step CUDA graph
replay (the best PyTorch can do on launch-bound configs). Each row of gpunet's default path is
judged against the goal of issue 5 (``GOALS``) and, where it misses, says what its figures show
(``why``). Benchmarks are not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .activations import DEFAULT_SLOPE, HIDDEN_ACTIVATIONS
from .cli import _positive_int
from .dropout import check_rate
from .errors import ConfigError

#: name -> (sizes, batch, gpu_only)
CONFIGS = {
    "small": ([784, 256, 10], 128, False),
    "medium": ([784, 1024, 1024, 10], 1024, False),
    "large": ([4096, 4096, 4096, 4096, 1000], 8192, True),
}


#: the goals for gpunet's default path in fp32 (issue 5): (config, "cpu"/"gpu") -> (what, bound)
#: with what "ms" (gpunet's step time) or "ratio" (gpunet / PyTorch eager, same run). On the
#: GPU the large config must also hold no more device memory than PyTorch's peak.
GOALS = {
    ("small", "cpu"): ("ratio", 0.6),
    ("medium", "cpu"): ("ratio", 0.95),
    ("small", "gpu"): ("ms", 0.10),
    ("medium", "gpu"): ("ms", 0.45),
    ("large", "gpu"): ("ratio", 1.02),
}


def judge(row: dict, gpu: bool):
    """``(goal, met)`` for a result row: the goal as text ("" where none applies: eager, TF32,
    dropout, norm or other-activation rows, and graphs whose ops $GPUNET_STATIC_KERNEL_MIN_SIZE
    moved off the fused kernels) and whether the row meets it (None when it cannot tell, e.g.
    without PyTorch)."""
    goal = GOALS.get((row["config"], "gpu" if gpu else "cpu"))
    if goal is None or row.get("tf32") or row.get("dropout") or row.get("norm") \
            or row.get("activation", "relu") != "relu" or row.get("path") == "eager" \
            or row.get("static_kernel_min_size") is not None:
        return "", None
    what, bound = goal
    text = f"<= {bound:g} ms" if what == "ms" else f"<= {bound:g}x torch"
    value = row["gpunet_ms"] if what == "ms" else row.get("ratio")
    met = None if value is None else value <= bound
    if gpu and row["config"] == "large":
        text += ", memory <= torch"
        if met is not None:
            peak = row.get("torch_peak_bytes")
            met = None if peak is None else met and row["gpunet_pool_bytes"] <= peak
    return text, met


def why(row: dict, gpu: bool) -> str:
    """For a row that misses its goal, what its own figures say about the reason: the step's
    GEMMs alone (``gemm_ms``, timed in the same rounds) against the bound, or the time beyond
    them (``scripts/profile_step.py`` then says where it goes), or the memory. "" otherwise."""
    goal = GOALS.get((row["config"], "gpu" if gpu else "cpu"))
    if goal is None or row.get("meets_goal") is not False:
        return ""
    what, bound = goal
    gemm, reasons = row.get("gemm_ms"), []
    if what == "ratio" and row.get("ratio") is not None and row["ratio"] > bound:
        share = None if gemm is None else gemm / row["torch_ms"]
        if share is not None and share > bound:
            reasons.append(f"the GEMMs alone take {share:.2f}x torch's step")
        elif gemm is not None:
            reasons.append(f"{row['gpunet_ms'] - gemm:.3f} ms beyond the GEMMs "
                           f"({gemm:.3f} ms)")
    elif what == "ms" and row["gpunet_ms"] > bound:
        if gemm is not None and gemm > bound:
            reasons.append(f"the GEMMs alone take {gemm:.3f} ms")
        elif gemm is not None:
            reasons.append(f"{row['gpunet_ms'] - gemm:.3f} ms beyond the GEMMs "
                           f"({gemm:.3f} ms)")
    peak = row.get("torch_peak_bytes")
    if gpu and row["config"] == "large" and peak is not None \
            and row.get("gpunet_pool_bytes", 0) > peak:
        reasons.append(f"device memory {row['gpunet_pool_bytes'] / 2**20:.0f} MiB against "
                       f"torch's {peak / 2**20:.0f} MiB")
    return "; ".join(reasons)


class GpunetStep(NamedTuple):
    """What the benchmark runs of gpunet: the step, its path ("graph", "static" or "eager"),
    the device memory of its graph's pool, and the step's GEMMs alone on the same path."""

    step: Callable[[], object]
    path: str
    graph_bytes: Callable[[], int]
    gemms: Callable[[], object]


def _gpunet_step(backend, sizes, batch, optimizer, graph=True, seed=0,
                 dropout=0.0, norm=None, activation="relu") -> GpunetStep:
    import gpunet as gn
    from gpunet.step import StaticStep

    model = gn.MLP(sizes, activation=activation, backend=backend, seed=seed, dropout=dropout,
                   norm=norm)
    opt = gn.SGD(model, lr=0.01) if optimizer == "sgd" else gn.Adam(model, lr=1e-3)
    loss = gn.CrossEntropyLoss(check_labels=False)
    rng = np.random.default_rng(seed)
    x = model.backend.asarray(rng.standard_normal((batch, sizes[0]), dtype=np.float32))
    y = model.backend.asarray(rng.integers(0, sizes[-1], batch))
    backend = model.backend
    with _recorded_gemms(backend) as calls:
        if graph:
            static = StaticStep(model, loss, opt, batch)
            static(x, y)  # builds the buffers (and captures the graph on a GPU)
        else:
            model.train_step(x, y, loss, opt)
    calls = _one_step(calls)

    def gemms():
        for call in calls:
            backend.matmul(*call)

    if not graph:
        return GpunetStep(lambda: model.train_step(x, y, loss, opt), "eager", lambda: 0, gemms)
    if static.captured:
        try:  # the GEMMs as a graph of their own, as they run inside the step's
            gemms = backend.capture(gemms)
        except Exception as e:
            print(f"gpunet bench: the GEMMs alone run eagerly ({type(e).__name__}: "
                  f"{_first_line(e)})", file=sys.stderr)
    return GpunetStep(lambda: static(static.x, static.y),
                      "graph" if static.captured else "static",
                      lambda: static.graph_pool_bytes, gemms)


@contextlib.contextmanager
def _recorded_gemms(backend):
    """Record the backend's GEMMs, ``(a, b, out, trans_a, trans_b)``, while they also run."""
    calls, inner = [], backend.matmul

    def matmul(a, b, out, trans_a=False, trans_b=False):
        calls.append((a, b, out, trans_a, trans_b))
        return inner(a, b, out, trans_a, trans_b)

    backend.matmul = matmul
    try:
        yield calls
    finally:
        del backend.matmul


def _one_step(calls):
    """The calls of one step: a first static step runs its body, then captures it (on a GPU),
    which makes the same calls on the same arrays again."""
    def same(c, d):
        return all(u is v for u, v in zip(c[:3], d[:3])) and c[3:] == d[3:]

    again = next((i for i in range(1, len(calls)) if same(calls[i], calls[0])), len(calls))
    return calls[:again]


def _torch_model(device, sizes, batch, optimizer, seed=0, capturable=False, dropout=0.0,
                 norm=None, activation="relu"):
    import torch

    from .interop import _module

    torch.manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            if norm:
                layers.append(torch.nn.LayerNorm(sizes[i + 1]) if norm == "layer"
                              else torch.nn.BatchNorm1d(sizes[i + 1]))
            layers.append(_module(torch, activation, DEFAULT_SLOPE) or torch.nn.Identity())
            if dropout:
                layers.append(torch.nn.Dropout(dropout))
    net = torch.nn.Sequential(*layers).to(device)
    opt = (torch.optim.SGD(net.parameters(), lr=0.01) if optimizer == "sgd"
           else torch.optim.Adam(net.parameters(), lr=1e-3, capturable=capturable))
    x = torch.randn(batch, sizes[0], device=device)
    y = torch.randint(0, sizes[-1], (batch,), device=device)

    def body():
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    body.net = net
    return opt, body


def _torch_step(device, sizes, batch, optimizer, seed=0, dropout=0.0, norm=None,
                activation="relu"):
    """PyTorch's eager training step, as its users write it."""
    opt, body = _torch_model(device, sizes, batch, optimizer, seed, dropout=dropout, norm=norm,
                             activation=activation)

    def step():
        opt.zero_grad(set_to_none=True)
        return body()

    return step


def _torch_graph_step(sizes, batch, optimizer, warmup=3, seed=0, dropout=0.0, norm=None,
                      activation="relu"):
    """PyTorch's whole step (forward, backward, optimiser) captured into one CUDA graph, the
    recipe of PyTorch's CUDA-graph docs: warm-up on a side stream, gradients left unset so the
    captured backward allocates them from the graph's pool. Returns the replay."""
    import torch

    opt, body = _torch_model("cuda", sizes, batch, optimizer, seed, capturable=True,
                             dropout=dropout, norm=norm, activation=activation)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            opt.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        body()
    return graph.replay


#: seconds of rest before each timed round on the CPU. Idle OpenBLAS workers spin for 2^28
#: cycles (about 0.1 s) before they sleep, and would take the cores from the other library's
#: first steps: after 0.05 s of rest PyTorch's small step measured 1.32 ms on 2 cores, after
#: 0.1 s or more 0.67-0.71 ms (docs/benchmarks.md). Not on the GPU, where no host thread pool
#: runs between rounds (the synchronisation is the fence): there the rests would add up to
#: about 100 s of scripts/gpu-check's 420 s budget, and leave the card idle before each round.
PAUSE_S = 0.3


def _time_round(step, steps, sync, pause=PAUSE_S):
    time.sleep(pause)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps


def run(backend_name="auto", configs=("small", "medium"), optimizers=("sgd", "adam"),
        rounds=7, steps=None, warmup=3, torch_threads=None, graph=True, tf32=False,
        torch_graph=True, dropout=0.0, norm=None, activation="relu", log=print) -> dict:
    """Benchmark each config x optimizer; returns a JSON-able dict with rows and the machine.

    ``graph``: gpunet steps through ``gpunet.step.StaticStep`` (a CUDA graph replay on the
    GPU, fixed buffers on the CPU), as ``fit`` does; False times the eager ``train_step``.
    ``tf32``: both libraries may run float32 GEMMs on TF32 tensor cores (GPU only).
    ``torch_graph``: on the GPU, also time PyTorch's step replayed as a CUDA graph.
    ``dropout``: both nets drop each hidden output with this probability (rows without a
    goal). ``norm``: "layer" or "batch" puts that norm in each hidden layer of both (rows
    without a goal). ``activation``: the hidden layers' f in both (other than relu: rows
    without a goal).

    ConfigError for ``rounds`` or ``steps`` (where given) or ``torch_threads`` (where given)
    below 1, or ``dropout`` outside [0, 1).
    """
    import gpunet as gn

    _check_count("rounds", rounds)
    for name, value in (("steps", steps), ("torch_threads", torch_threads)):
        if value is not None:
            _check_count(name, value)
    dropout = check_rate(dropout)
    if activation not in HIDDEN_ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; valid names: "
                          f"{', '.join(HIDDEN_ACTIVATIONS)}")
    backend = gn.get_backend(backend_name)
    gpu = backend.name == "cupy"
    try:
        import torch
    except ImportError:
        torch = None
        log("torch is not importable: timing gpunet alone, with no ratios or verdicts "
            "(pip install torch for the side-by-side run)")
    if torch is not None and gpu and not torch.cuda.is_available():
        # (a CPU-only torch wheel beside CuPy: its device "cuda" and torch.cuda's memory
        # counters would raise at the first row, after gpunet's half was built)
        log(f"torch {torch.__version__} has no CUDA here: timing gpunet alone, with no "
            "ratios or verdicts (a CUDA build of torch for the side-by-side run)")
        torch = None
    if torch is not None:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
    device = "cuda" if gpu else "cpu"

    def sync_gn():
        backend.synchronize()

    def sync_torch():
        if gpu:
            torch.cuda.synchronize()

    # $GPUNET_STATIC_KERNEL_MIN_SIZE (backends/kernel_ops.py) moves a static step's small arrays
    # off the fused kernels: not the default path, so its rows say so and answer to no goal
    static_min = None
    if graph and backend.static_kernel_min_size != type(backend).kernel_min_size \
            and os.environ.get("GPUNET_STATIC_KERNEL_MIN_SIZE") is not None:
        static_min = int(os.environ["GPUNET_STATIC_KERNEL_MIN_SIZE"])
    with _tf32_mode(backend, torch if gpu else None, tf32):  # (as it was, after the rows)
        rows = []
        for name in configs:
            sizes, batch, gpu_only = CONFIGS[name]
            if gpu_only and not gpu:
                log(f"skipping {name}: GPU only")
                continue
            for optimizer in optimizers:
                n = steps or (50 if name == "small" else 10 if name == "medium" else 5)
                row = {"config": name, "sizes": sizes, "batch": batch, "optimizer": optimizer,
                       "tf32": bool(tf32), "dropout": float(dropout), "norm": norm,
                       "activation": activation}
                if static_min is not None:
                    row["static_kernel_min_size"] = static_min
                if gpu:  # each row's memory is its own
                    backend.xp.get_default_memory_pool().free_all_blocks()
                    if torch is not None:
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                made = _gpunet_step(backend, sizes, batch, optimizer, graph, dropout=dropout,
                                    norm=norm, activation=activation)
                g_step, row["path"], graph_bytes = made.step, made.path, made.graph_bytes
                t_step = _torch_step(device, sizes, batch, optimizer, dropout=dropout, norm=norm,
                                     activation=activation) if torch is not None else None
                for _ in range(warmup):
                    g_step()
                    if t_step:
                        t_step()
                if gpu and t_step:  # torch's peak is that of its eager steps
                    row["torch_peak_bytes"] = int(torch.cuda.max_memory_allocated())
                steps_by = {"gpunet": g_step, "gemms": made.gemms, "torch": t_step}
                if gpu and torch is not None and torch_graph:
                    try:
                        steps_by["torch_graph"] = _torch_graph_step(
                            sizes, batch, optimizer, warmup, dropout=dropout, norm=norm,
                            activation=activation)
                    except Exception as e:  # recorded, not fatal: the other columns stand
                        row["torch_graph_error"] = f"{type(e).__name__}: {_first_line(e)}"
                times = {lib: [] for lib, step in steps_by.items() if step}
                if gpu:
                    backend.xp.get_default_memory_pool().free_all_blocks()
                for _ in range(rounds):
                    for lib in times:
                        times[lib].append(_time_round(
                            steps_by[lib], n, sync_torch if lib.startswith("torch") else sync_gn,
                            0.0 if gpu else PAUSE_S))
                row["gpunet_ms"] = statistics.median(times["gpunet"]) * 1e3
                row["gpunet_samples_per_s"] = batch / statistics.median(times["gpunet"])
                row["gemm_ms"] = statistics.median(times["gemms"]) * 1e3
                if t_step:
                    row["torch_ms"] = statistics.median(times["torch"]) * 1e3
                    row["ratio"] = row["gpunet_ms"] / row["torch_ms"]
                if "torch_graph" in times:
                    row["torch_graph_ms"] = statistics.median(times["torch_graph"]) * 1e3
                if gpu:
                    # the default pool (parameters, state, static buffers) plus the graph's own
                    row["gpunet_pool_bytes"] = int(
                        backend.xp.get_default_memory_pool().total_bytes()) + graph_bytes()
                row["goal"], row["meets_goal"] = judge(row, gpu)
                row["why"] = why(row, gpu)
                rows.append(row)
                log(_format_row(row))
                del made, g_step, t_step, steps_by
    versions = {}
    if gpu:  # (what a GPU table needs beside the card: CuPy's and CUDA's versions)
        from .cli import cuda_versions

        versions = {"cupy": getattr(backend.xp, "__version__", None), "cuda": cuda_versions(),
                    "torch_cuda": getattr(getattr(torch, "version", None), "cuda", None)}
    return {"backend": backend.name, "device": backend.device_name, "machine": _machine(),
            **versions, "torch": getattr(torch, "__version__", None),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "numpy": np.__version__, "rows": rows}


@contextlib.contextmanager
def _tf32_mode(backend, torch, tf32):
    """Within: float32 GEMMs on TF32 or not, in gpunet's backend and (on the GPU) PyTorch's,
    as asked; after: both as they were. The backend is the process's shared one: a TF32
    bench row must not leave every later float32 GEMM of the process on TF32."""
    saved = backend.tf32
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn) if torch is not None else ()
    torch_saved = [f.allow_tf32 for f in flags]
    try:
        if tf32 and not backend.set_tf32(True):
            raise ConfigError(f"--tf32 needs a GPU backend, not {backend.name}")
        for f in flags:
            f.allow_tf32 = bool(tf32)
        yield
    finally:
        if backend.tf32 != saved:
            backend.set_tf32(saved)
        for f, was in zip(flags, torch_saved):
            f.allow_tf32 = was


def _check_count(name, value) -> None:
    """ConfigError unless ``value`` is an integer >= 1: no round or step, no median to take."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def _format_row(r) -> str:
    s = (f"{r['config']:<7} {r['optimizer']:<5} B={r['batch']:<5} "
         f"{_path(r):<11} "
         f"gpunet {r['gpunet_ms']:9.3f} ms"
         f"  {r['gpunet_samples_per_s']:12.0f} samples/s")
    if "torch_ms" in r:
        s += f"  torch {r['torch_ms']:9.3f} ms  gpunet/torch {r['ratio']:.2f}"
    if "torch_graph_ms" in r:
        s += f"  torch graph {r['torch_graph_ms']:.3f} ms"
    if r.get("goal"):
        s += f"  goal {r['goal']}: {_verdict(r['meets_goal'])}"
    if r.get("why"):
        s += f" ({r['why']})"
    return s


def _path(r) -> str:
    """The row's path, with its options: "graph tf32", "eager p=0.2", "graph kernels>=262144"
    (the fused kernels for arrays of that many elements up only)."""
    return r["path"] + (" tf32" if r.get("tf32") else "") \
        + (f" p={r['dropout']:g}" if r.get("dropout") else "") \
        + (f" {r['norm']} norm" if r.get("norm") else "") \
        + (f" {r['activation']}" if r.get("activation", "relu") != "relu" else "") \
        + (f" kernels>={r['static_kernel_min_size']}"
           if r.get("static_kernel_min_size") is not None else "")


def _verdict(met) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[met]


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def markdown(result: dict) -> str:
    """The result as a Markdown table for docs/benchmarks.md, headed by where it ran."""
    def ms(v):
        return "" if v is None else f"{v:.3f}"

    def mib(v):
        return "" if v is None else f"{v / 2**20:.0f}"

    head = ["config", "optimizer", "path", "gpunet ms", "torch ms", "gpunet / torch",
            "torch graph ms", "gpunet GEMMs ms", "gpunet MiB", "torch MiB", "goal", "met"]
    table = []
    for r in result["rows"]:
        ratio = r.get("ratio")
        table.append([
            f"{r['config']} B={r['batch']}", r["optimizer"],
            _path(r), ms(r["gpunet_ms"]),
            ms(r.get("torch_ms")), "" if ratio is None else f"{ratio:.2f}",
            ms(r.get("torch_graph_ms")) or r.get("torch_graph_error", ""), ms(r.get("gemm_ms")),
            mib(r.get("gpunet_pool_bytes")), mib(r.get("torch_peak_bytes")), r.get("goal", ""),
            (_verdict(r.get("meets_goal")) + (f": {r['why']}" if r.get("why") else ""))
            if r.get("goal") else ""])
    keep = [j for j in range(len(head)) if j < 4 or any(row[j] for row in table)]
    gpu = ""
    if result.get("cupy"):
        gpu = f"; cupy {result['cupy']}" + (f" ({result['cuda']})" if result.get("cuda") else "")
    torch = "no torch" if result.get("torch") is None else (
        f"torch {result['torch']}"
        + (f" (CUDA {result['torch_cuda']})" if result.get("torch_cuda") and gpu
           else f" ({result['torch_threads']} threads)"))
    lines = [f"{result['device']}; {result['machine']}{gpu}; {torch}, numpy {result['numpy']}",
             "",
             "| " + " | ".join(head[j] for j in keep) + " |",
             "|" + " --- |" * len(keep)]
    lines += ["| " + " | ".join(row[j] for j in keep) + " |" for row in table]
    return "\n".join(lines) + "\n"


def _machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), platform.processor())
    except OSError:
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _rate(text):
    """An argparse type: a dropout rate in [0, 1)."""
    import argparse

    try:
        return check_rate(float(text))
    except ValueError:  # not a number, or ConfigError (a ValueError): outside [0, 1)
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="gpunet bench", description=__doc__.splitlines()[0])
    p.add_argument("--backend", default=None, choices=("numpy", "cupy", "auto"),
                   help="default: $GPUNET_BACKEND, else auto (cupy where a GPU works, else "
                        "numpy), as train's")
    p.add_argument("--config", action="append", choices=sorted(CONFIGS),
                   help="repeatable; default: small and medium (and large on a GPU)")
    p.add_argument("--optimizer", action="append", choices=("sgd", "adam"),
                   help="repeatable; default: both")
    p.add_argument("--rounds", type=_positive_int, default=7, help="default 7")
    p.add_argument("--steps", type=_positive_int, default=None, help="steps per round")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    p.add_argument("--no-graph", dest="graph", action="store_false",
                   help="time the eager train_step instead of the static / CUDA-graph step")
    p.add_argument("--tf32", action="store_true",
                   help="float32 GEMMs on TF32 tensor cores, in both libraries (GPU only)")
    p.add_argument("--no-torch-graph", dest="torch_graph", action="store_false",
                   help="on the GPU, skip timing PyTorch's step as a CUDA graph")
    p.add_argument("--dropout", type=_rate, default=0.0, metavar="P",
                   help="both nets drop hidden outputs with probability P (rows without goals)")
    p.add_argument("--norm", choices=("layer", "batch"), default=None,
                   help="a layer or batch norm in each hidden layer of both nets (rows without "
                        "goals)")
    p.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="relu",
                   help="the hidden layers' f in both nets (default relu; others: rows without "
                        "goals)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown")
    args = p.parse_args(argv)
    import gpunet as gn
    from .checkpoint import check_writable

    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path:  # before the minutes of timing, not after
            check_writable(path, flag)

    gpu = gn.get_backend(args.backend).name == "cupy"
    configs = args.config or (["small", "medium", "large"] if gpu else ["small", "medium"])
    result = run(args.backend, configs, args.optimizer or ["sgd", "adam"], rounds=args.rounds,
                 steps=args.steps, torch_threads=args.threads, graph=args.graph, tf32=args.tf32,
                 torch_graph=args.torch_graph, dropout=args.dropout, norm=args.norm,
                 activation=args.activation,
                 log=lambda s: print(s, flush=True))
    from .checkpoint import atomic_write

    if args.json:
        atomic_write(args.json, lambda f: f.write(json.dumps(result, indent=2).encode()))
    if args.markdown:
        atomic_write(args.markdown, lambda f: f.write(markdown(result).encode()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
