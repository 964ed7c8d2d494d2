"""Side-by-side training-step benchmark: gpunet against PyTorch on the same machine, in one run.

For each config both libraries train the same MLP (relu, softmax cross-entropy, fp32) on one
fixed random batch. After warm-up they alternate: a round of ``steps`` gpunet steps, then a round
of PyTorch steps, the device synchronised around each round; the figure is the median over
rounds of the mean step time. Reported: ms per step, gpunet / PyTorch, samples per second and,
on the GPU, peak device memory. Benchmarks are not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time

import numpy as np

from .errors import ConfigError

#: name -> (sizes, batch, gpu_only)
CONFIGS = {
    "small": ([784, 256, 10], 128, False),
    "medium": ([784, 1024, 1024, 10], 1024, False),
    "large": ([4096, 4096, 4096, 4096, 1000], 8192, True),
}


def _gpunet_step(backend, sizes, batch, optimizer, graph=True, seed=0):
    """A step closure and a description of the path it takes (graph, static or eager)."""
    import gpunet as gn
    from gpunet.step import StaticStep

    model = gn.MLP(sizes, activation="relu", backend=backend, seed=seed)
    opt = gn.SGD(model, lr=0.01) if optimizer == "sgd" else gn.Adam(model, lr=1e-3)
    loss = gn.CrossEntropyLoss(check_labels=False)
    rng = np.random.default_rng(seed)
    x = model.backend.asarray(rng.standard_normal((batch, sizes[0]), dtype=np.float32))
    y = model.backend.asarray(rng.integers(0, sizes[-1], batch))
    if not graph:
        return (lambda: model.train_step(x, y, loss, opt)), "eager", lambda: 0
    step = StaticStep(model, loss, opt, batch)
    step(x, y)  # builds the buffers (and captures the graph on a GPU)
    return ((lambda: step(step.x, step.y)), "graph" if step.captured else "static",
            lambda: step.graph_pool_bytes)


def _torch_step(device, sizes, batch, optimizer, seed=0):
    import torch

    torch.manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).to(device)
    opt = (torch.optim.SGD(net.parameters(), lr=0.01) if optimizer == "sgd"
           else torch.optim.Adam(net.parameters(), lr=1e-3))
    x = torch.randn(batch, sizes[0], device=device)
    y = torch.randint(0, sizes[-1], (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def _time_round(step, steps, sync):
    # Let the other library's thread pool fall asleep first: spinning OpenMP/OpenBLAS workers
    # of one library would otherwise steal the cores from the other's first steps.
    time.sleep(0.05)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps


def run(backend_name="numpy", configs=("small", "medium"), optimizers=("sgd", "adam"),
        rounds=7, steps=None, warmup=3, torch_threads=None, graph=True, tf32=False,
        log=print) -> dict:
    """Benchmark each config x optimizer; returns a JSON-able dict with rows and the machine.

    ``graph``: gpunet steps through ``gpunet.step.StaticStep`` (a CUDA graph replay on the
    GPU, fixed buffers on the CPU), as ``fit`` does; False times the eager ``train_step``.
    ``tf32``: both libraries may run float32 GEMMs on TF32 tensor cores (GPU only).
    """
    import gpunet as gn

    backend = gn.get_backend(backend_name)
    gpu = backend.name == "cupy"
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        if torch_threads:
            torch.set_num_threads(torch_threads)
        if gpu:
            torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
            torch.backends.cudnn.allow_tf32 = bool(tf32)
    device = "cuda" if gpu else "cpu"
    if tf32 and not backend.set_tf32(True):
        raise ConfigError(f"--tf32 needs a GPU backend, not {backend.name}")

    def sync_gn():
        backend.synchronize()

    def sync_torch():
        if gpu:
            torch.cuda.synchronize()

    rows = []
    for name in configs:
        sizes, batch, gpu_only = CONFIGS[name]
        if gpu_only and not gpu:
            log(f"skipping {name}: GPU only")
            continue
        for optimizer in optimizers:
            n = steps or (50 if name == "small" else 10 if name == "medium" else 5)
            row = {"config": name, "sizes": sizes, "batch": batch, "optimizer": optimizer,
                   "tf32": bool(tf32)}
            if gpu:  # each row's memory is its own
                backend.xp.get_default_memory_pool().free_all_blocks()
                if torch is not None:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
            g_step, row["path"], graph_bytes = _gpunet_step(backend, sizes, batch, optimizer,
                                                            graph)
            t_step = _torch_step(device, sizes, batch, optimizer) if torch is not None else None
            for _ in range(warmup):
                g_step()
                if t_step:
                    t_step()
            g_times, t_times = [], []
            if gpu:
                backend.xp.get_default_memory_pool().free_all_blocks()
            for _ in range(rounds):
                g_times.append(_time_round(g_step, n, sync_gn))
                if t_step:
                    t_times.append(_time_round(t_step, n, sync_torch))
            row["gpunet_ms"] = statistics.median(g_times) * 1e3
            row["gpunet_samples_per_s"] = batch / statistics.median(g_times)
            if t_step:
                row["torch_ms"] = statistics.median(t_times) * 1e3
                row["ratio"] = row["gpunet_ms"] / row["torch_ms"]
            if gpu:
                # the default pool (parameters, state, static buffers) plus the graph's own
                row["gpunet_pool_bytes"] = int(
                    backend.xp.get_default_memory_pool().total_bytes()) + graph_bytes()
                if t_step:
                    row["torch_peak_bytes"] = int(torch.cuda.max_memory_allocated())
            rows.append(row)
            log(_format_row(row))
            del g_step, t_step
    return {"backend": backend.name, "device": backend.device_name, "machine": _machine(),
            "torch": getattr(torch, "__version__", None),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "numpy": np.__version__, "rows": rows}


def _format_row(r) -> str:
    s = (f"{r['config']:<7} {r['optimizer']:<5} B={r['batch']:<5} "
         f"{r['path'] + (' tf32' if r.get('tf32') else ''):<11} "
         f"gpunet {r['gpunet_ms']:9.3f} ms"
         f"  {r['gpunet_samples_per_s']:12.0f} samples/s")
    if "torch_ms" in r:
        s += f"  torch {r['torch_ms']:9.3f} ms  gpunet/torch {r['ratio']:.2f}"
    return s


def _machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), platform.processor())
    except OSError:
        model = platform.processor()
    import os

    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="gpunet bench", description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy", "auto"))
    p.add_argument("--config", action="append", choices=sorted(CONFIGS),
                   help="repeatable; default: small and medium (and large on a GPU)")
    p.add_argument("--optimizer", action="append", choices=("sgd", "adam"))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=None, help="steps per round")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-graph", dest="graph", action="store_false",
                   help="time the eager train_step instead of the static / CUDA-graph step")
    p.add_argument("--tf32", action="store_true",
                   help="float32 GEMMs on TF32 tensor cores, in both libraries (GPU only)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    import gpunet as gn

    gpu = gn.get_backend(args.backend).name == "cupy"
    configs = args.config or (["small", "medium", "large"] if gpu else ["small", "medium"])
    result = run(args.backend, configs, args.optimizer or ["sgd", "adam"], rounds=args.rounds,
                 steps=args.steps, torch_threads=args.threads, graph=args.graph, tf32=args.tf32,
                 log=lambda s: print(s, flush=True))
    if args.json:
        from .checkpoint import atomic_write

        atomic_write(args.json, lambda f: f.write(json.dumps(result, indent=2).encode()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
