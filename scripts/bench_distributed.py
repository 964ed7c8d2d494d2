#!/usr/bin/env python
"""Data-parallel scaling on the CPU: samples per second of 1 process against 2 MPI ranks, and
the share of a step spent in the gradient all-reduce.

    .venv/bin/python scripts/bench_distributed.py            # both models, 3 repeats, a table
    .venv/bin/python scripts/bench_distributed.py --repeats 5 --steps 80

Each measurement is a fresh ``mpiexec -n N`` job running the training step of ``gpunet.fit``
(forward and backward on the rank's share of a global batch, the one all-reduce, the optimizer
step) on synthetic data, timed after warm-up steps. The configurations:

- 1 process, 1 BLAS thread: the per-core baseline;
- 1 process, all BLAS threads: what one process gets from the whole machine;
- 2 independent processes, 1 thread each, no communication: their summed samples/s is the
  ceiling for 2 ranks on this machine (what 2 cores give when nothing is shared but the chip);
- 2 ranks, 1 BLAS thread each: data-parallel over the same cores.

"comm share" is the time inside the all-reduce (``Communicator.allreduce_flat`` on a static
step's gradient buffer, or ``allreduce_grads``, which packs one first, for the eager step; with
the wait for the slower rank) over the whole step, on rank 0; "all-reduce" is
``allreduce_grads`` timed alone after a barrier, the transfer without the wait. Each row is
timed with fit's static step (split around the all-reduce on a rank) and with the eager step
(``--step``). The figures are
medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: name -> (layer sizes, global batch)
MODELS = {
    "small": ([64, 128, 10], 32),
    "large": ([784, 1024, 1024, 10], 512),
}


def worker(sizes, batch, steps, warmup, distributed, static=True):
    import numpy as np

    import gpunet as gn
    from gpunet.distributed import STEP_EXTRAS, Communicator, shard, share_weight
    from gpunet.step import StaticStep

    comm = Communicator(timeout=120) if distributed else None
    rank, size = (comm.rank, comm.size) if comm else (0, 1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch * 8, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], len(x))
    model = gn.MLP(sizes, backend="numpy", seed=0)
    loss_fn, opt = gn.CrossEntropyLoss(), gn.SGD(model, lr=0.01, momentum=0.9)
    if comm:
        comm.broadcast_params(model)
    lo, hi = shard(batch, rank, size)
    weight = share_weight("mean", hi - lo, batch)
    if static:  # fit's path: a static step, split around the all-reduce on a rank
        step = StaticStep(model, loss_fn, opt, hi - lo, split=comm is not None, row_offset=lo,
                          extras=STEP_EXTRAS if comm else 0)
    step_times, comm_times = [], []
    for s in range(warmup + steps):
        start = (s % 8) * batch
        xb, yb = x[start + lo:start + hi], y[start + lo:start + hi]
        t0 = time.perf_counter()
        if static:
            value, _ = step(xb, yb)
        else:
            y_hat = model.forward(xb)
            value, dJdy_hat = loss_fn(y_hat, yb)
            model.backward(dJdy_hat, need_dx=False)
        t1 = time.perf_counter()
        if comm and static:
            comm.allreduce_flat(model.backend, step.flat, model.n_params, weight,
                                extras=(value * weight, 0, 0))
        elif comm:
            comm.allreduce_grads(model, weight, extras=(value * weight, 0, 0))
        t2 = time.perf_counter()
        if static and comm:
            step.update()
        elif not static:
            opt.step()
        t3 = time.perf_counter()
        if s >= warmup:
            step_times.append(t3 - t0)
            comm_times.append(t2 - t1)
    alone = []
    for _ in range(steps if comm else 0):
        comm.barrier()
        t0 = time.perf_counter()
        comm.allreduce_grads(model, weight, extras=(0, 0, 0))
        alone.append(time.perf_counter() - t0)
    if rank == 0:
        total = sum(step_times)
        print(json.dumps({"samples_per_s": batch * steps / total,
                          "step_ms": 1e3 * total / steps,
                          "comm_share": sum(comm_times) / total,
                          "allreduce_ms": 1e3 * statistics.median(alone) if alone else None}))


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def measure(model, ranks, threads, steps, warmup, independent=1, step="static"):
    """One run: ``ranks`` MPI ranks, or ``independent`` plain processes at once (samples/s
    summed); each with ``threads`` BLAS threads; ``step``: static (fit's) or eager."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", model, "--steps", str(steps),
           "--warmup", str(warmup), "--step", step]
    if ranks > 1:
        cmd = [_mpiexec(), "-n", str(ranks), *cmd, "--distributed"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(independent)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode:
            raise SystemExit(f"benchmark run failed:\n{err}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    if independent > 1:
        return {"samples_per_s": sum(r["samples_per_s"] for r in results),
                "step_ms": statistics.median(r["step_ms"] for r in results),
                "comm_share": None, "allreduce_ms": None}
    return results[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--step", choices=("static", "eager", "both"), default="both",
                   help="the step timed: fit's static one (split around the all-reduce on a "
                        "rank), the eager train step, or both (a row each)")
    args = p.parse_args()
    if args.worker:
        sizes, batch = MODELS[args.worker]
        worker(sizes, batch, args.steps, args.warmup, args.distributed,
               static=args.step == "static")
        return
    if _mpiexec() is None:
        raise SystemExit("no mpiexec: pip install 'gpunet[distributed]'")
    cores = os.cpu_count()
    configs = [(1, 1, 1, "1 process, 1 thread"), (1, cores, 1, f"1 process, {cores} threads"),
               (1, 1, 2, "2 independent processes (ceiling)"), (2, 1, 1, "2 ranks x 1 thread")]
    kinds = ("static", "eager") if args.step == "both" else (args.step,)
    configs = [(r, t, i, f"{label}, {kind}", kind) for kind in kinds
               for r, t, i, label in configs]
    print(f"{cores} cores; medians of {args.repeats} runs of {args.steps} steps "
          f"after {args.warmup} warm-up steps\n")
    print("| model (global batch) | run | samples/s | ms/step | comm share | all-reduce ms "
          "| vs 1 thread |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for model in args.models:
        sizes, batch = MODELS[model]
        base = None
        for ranks, threads, independent, label, kind in configs:
            runs = [measure(model, ranks, threads, args.steps, args.warmup, independent, kind)
                    for _ in range(args.repeats)]
            sps = statistics.median(r["samples_per_s"] for r in runs)
            ms = statistics.median(r["step_ms"] for r in runs)
            base = base or sps
            share = reduce_ms = "-"
            if ranks > 1:
                share = f"{100 * statistics.median(r['comm_share'] for r in runs):.0f}%"
                reduce_ms = f"{statistics.median(r['allreduce_ms'] for r in runs):.2f}"
            print(f"| {'-'.join(map(str, sizes))} ({batch}) | {label} | {sps:,.0f} | {ms:.2f} | "
                  f"{share} | {reduce_ms} | {sps / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
