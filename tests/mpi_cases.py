"""Training runs that tests/test_distributed.py starts under ``mpiexec -n 2`` and repeats in one
process to compare. Run as ``python tests/mpi_cases.py MODE OUTDIR [BACKEND [CASES]]``:

- ``equivalence``: every case in CASES (or those named, comma-separated, after BACKEND); each
  rank writes its final weights and history to
  OUTDIR/<case>-rank<r>.npz/.json and passes OUTDIR/<case>-ckpt-rank<r>.npz as ``save`` (only
  rank 0 may write it) and ``print`` as ``log`` (only rank 0 may print);
- ``raise``: rank 1 raises in its third optimizer step; the job must end, not hang;
- ``stall``: rank 1 sleeps before training while rank 0 waits with a 2 s collective timeout;
- ``setup``: rank 1 alone fails before training (a missing ``resume`` file), with a 20 s
  collective timeout; the job must end at once, not after it;
- ``differ-data``, ``differ-batch``, ``differ-columns``: rank 1 trains on another split of
  the data, with another batch size, or on features in another column order; the job must end
  at once, saying so.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import gpunet as gn
from gpunet.data import DataSpec, load_data
from gpunet.train import fit

#: name -> (data spec, dtype, optimizer, loss reduction, batch size, epochs). wine has 106
#: training rows: batches of 11 split 5/6 and leave a last batch of 7 (3/4); batches of 15 leave
#: a last batch of one row, so rank 0 has none.
CASES = {
    "wine-float64-adam-b11": (("wine", {}), "float64", "adam", "mean", 11, 3),
    "wine-float32-sgd-b15": (("wine", {}), "float32", "sgd", "mean", 15, 3),
    "sine-float64-sgd-sum-b16": (("sine", {"samples": 150, "noise": 0.1}), "float64", "sgd",
                                 "sum", 16, 3),
    # sample weights: each rank's share of a batch is its share of the batch's weight
    "wine-float64-adam-b11-balanced": (("wine", {"class_weight": "balanced"}), "float64",
                                       "adam", "mean", 11, 3),
    "wine-float64-sgd-sum-b15-balanced": (("wine", {"class_weight": "balanced"}), "float64",
                                          "sgd", "sum", 15, 3),
    # dropout: each rank draws its rows' part of the whole batch's masks; b15's last batch of
    # one row leaves rank 0 without rows, which must still count the step
    "wine-float64-adam-b15-dropout": (("wine", {}), "float64", "adam", "mean", 15, 3),
    # gradient clipping: of the all-reduced gradients, as one process clips its own
    "wine-float64-sgd-b11-clip": (("wine", {}), "float64", "sgd", "mean", 11, 3),
    # layer norm: per row, so a rank's share of a batch normalises as in one process; gamma
    # and beta are all-reduced with the weights
    "wine-float64-adam-b15-norm": (("wine", {}), "float64", "adam", "mean", 15, 3),
    # batch norm, synced over the ranks: batches of 13 leave a last batch of 2 rows, one a
    # rank (a lone row that an unsynced batch norm would refuse), and on three ranks none for
    # rank 0, which must still take part in the norms' all-reduces; with dropout. (SGD: the
    # bias before a batch norm has a gradient of rounding noise, 1e-17, which Adam divides by
    # its eps and turns into steps of 1e-11 that differ between any two summation orders.)
    "wine-float64-sgd-b13-batchnorm-dropout": (("wine", {}), "float64", "sgd", "mean", 13, 3),
    # ... with sample weights, whose shares are uneven
    "wine-float64-sgd-b11-batchnorm-balanced": (("wine", {"class_weight": "balanced"}),
                                                "float64", "sgd", "mean", 11, 3),
    # label smoothing, and binary cross-entropy on logits (one output): the split static step
    # computes them, and counts correct rows, as one process's step
    "wine-float64-adam-b11-smooth": (("wine", {}), "float64", "adam", "mean", 11, 3),
    "breast_cancer-float64-adam-b32-bce": (("breast_cancer", {}), "float64", "adam", "mean",
                                           32, 2),
}
#: the dropout rate of the cases named "-dropout"
DROPOUT = 0.3


def run_case(name, backend="numpy", comm=None, save=None, log=None, fail_at_step=None,
             resume=None, split_seed=2, batch_size=None, swap_columns=False):
    """Train case ``name``; returns (model, history). ``fail_at_step``: raise in that step;
    ``split_seed``, ``batch_size``: other data or settings than the case's; ``swap_columns``:
    the features' first two columns swapped (a file of the same cells in another order)."""
    (dataset, kw), dtype, opt_name, reduction, case_batch, epochs = CASES[name]
    batch_size = batch_size or case_batch
    spec = DataSpec(dataset, seed=split_seed, val_fraction=0.2, test_fraction=0.2, **kw)
    data = load_data(spec)
    if swap_columns:
        for split in ("x_train", "x_val", "x_test"):
            getattr(data, split)[:, [0, 1]] = getattr(data, split)[:, [1, 0]]
    classify = data.task == "classification"
    tags = set(name.split("-"))
    model = gn.MLP([data.n_features, 16, data.n_outputs if classify and "bce" not in tags
                    else 1],
                   backend=backend, seed=5, dtype=dtype,
                   dropout=DROPOUT if "dropout" in tags else 0.0,
                   norm="layer" if "norm" in tags else "batch" if "batchnorm" in tags else None)
    loss_fn = gn.BCEWithLogitsLoss(reduction) if "bce" in tags else \
        gn.CrossEntropyLoss(reduction, label_smoothing=0.1 if "smooth" in tags else 0.0) \
        if classify else gn.MSELoss(reduction)
    clip = {"clip_norm": 0.05} if "clip" in tags else {}
    opt = gn.Adam(model, lr=0.01, **clip) if opt_name == "adam" else \
        gn.SGD(model, lr=0.05 if reduction == "mean" else 0.002, momentum=0.9, **clip)
    if fail_at_step is not None:
        inner, calls = opt.step, [0]

        def step():
            calls[0] += 1
            if calls[0] == fail_at_step:
                raise RuntimeError(f"injected failure in step {fail_at_step}")
            inner()

        opt.step = step
    cache = {}  # fit keeps its static step here: whether the full batches took one
    history = fit(model, data, loss_fn, opt, epochs=epochs, batch_size=batch_size, seed=3,
                  progress=False, save=save, log=log, comm=comm, data_spec=spec.to_json(),
                  step_cache=cache, resume=resume)
    history.static = "static" in cache
    return model, history


def _equivalence(out: Path, backend, names=None):
    from gpunet.distributed import Communicator

    comm = Communicator(timeout=60)
    if backend == "cupy":
        comm.use_local_device()
    for name in names or CASES:
        save = out / f"{name}-ckpt-rank{comm.rank}.npz"
        model, history = run_case(name, backend, comm, save=save, log=print)
        np.savez(out / f"{name}-rank{comm.rank}.npz", **model.state_dict())
        (out / f"{name}-rank{comm.rank}.json").write_text(
            json.dumps({"history": list(history), "test": history.test,
                        "transport": comm.transport, "static": history.static}))


def _raise(backend):
    from gpunet.distributed import Communicator

    comm = Communicator(timeout=60)
    run_case("wine-float64-adam-b11", backend, comm, fail_at_step=3 if comm.rank == 1 else None)


def _stall(backend):
    from gpunet.distributed import Communicator

    comm = Communicator(timeout=2)
    if comm.rank == 1:
        time.sleep(120)
    run_case("wine-float64-adam-b11", backend, comm)


def _setup(out: Path, backend):
    from gpunet.distributed import Communicator

    comm = Communicator(timeout=20)
    run_case("wine-float64-adam-b11", backend, comm,
             resume=out / "missing.npz" if comm.rank == 1 else None)


def _differ(what, backend):
    from gpunet.distributed import Communicator

    comm = Communicator(timeout=20)
    other = {"data": {"split_seed": 3}, "batch": {"batch_size": 15},
             "columns": {"swap_columns": True}}[what]
    run_case("wine-float64-adam-b11", backend, comm, **(other if comm.rank == 1 else {}))


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    backend = sys.argv[3] if len(sys.argv) > 3 else "numpy"
    if mode == "equivalence":
        _equivalence(out, backend, sys.argv[4].split(",") if len(sys.argv) > 4 else None)
    elif mode == "raise":
        _raise(backend)
    elif mode == "stall":
        _stall(backend)
    elif mode == "setup":
        _setup(out, backend)
    elif mode.startswith("differ-"):
        _differ(mode.split("-", 1)[1], backend)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
