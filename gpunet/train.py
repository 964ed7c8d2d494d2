"""The training loop: seeded shuffled mini-batches, validation, early stopping, learning-rate
schedules, progress, checkpoints after every epoch, exact resume and a clean stop on Ctrl-C or
SIGTERM.

``fit`` is what ``gpunet train`` runs; the command line only parses flags around it.

Resume is exact: a checkpoint holds the weights, the optimizer and schedule state, the state of
the shuffling generator at the start of the current epoch, how many steps of that epoch are done
and the per-step losses so far, so a run stopped at any step and resumed takes the same batches
in the same order with the same state as a run that never stopped.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import shlex
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .backends import backend_of
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .distributed import (STEP_EXTRAS, share_weight, shard, stop_flag, stop_signal,
                          weighted_share)
from .errors import CheckpointError, ConfigError, DataError, GpunetError, ShapeError
from .layers import BatchNorm
from .log import is_terminal, notice
from .losses import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Loss, check_loss_output,
                     loss_settings)
from .model import as_inputs
from .schedules import Schedule
from .step import StaticStep

#: loss name -> output activation it is meant to follow
OUTPUT_FOR_LOSS = {"cross_entropy": "identity", "mse": "identity", "huber": "identity",
                   "bce": "sigmoid", "bce_logits": "identity"}


class TrainingDiverged(GpunetError):
    """The loss of a step, the weights or the validation loss at an epoch's end became NaN or
    infinite. With ``patience`` the model holds the best epoch's weights (where an epoch ended
    well, as the message says); else the weights the run reached (likely not finite, which
    fit then refuses to train on). The checkpoint written last is the last good epoch's.
    ``history``: the epochs completed (a History, without test metrics), where fit raised
    it."""

    history = None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped the run after finishing its current step, or at the
    end of an epoch when it came between steps (a checkpoint may be written); ``signum``:
    which (the command exits 128 + it); ``history``: the epochs completed (a History, as fit
    returns, without test metrics; the model holds the weights of the step it stopped
    after)."""

    def __init__(self, message, epoch, step, checkpoint=None, signum=signal.SIGINT,
                 history=None):
        super().__init__(message)
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint
        self.signum = signum
        self.history = history


def prepare_targets(y, task, loss_fn, n_outputs):
    """Targets in the form ``loss_fn`` takes: int labels for cross-entropy, a float column of
    0/1 for binary cross-entropy on one output (and multilabel targets (n, labels) as floats,
    one output per label), float values for regression."""
    if task == "classification" and np.ndim(y) == 2 and np.shape(y)[1] > 1:  # multilabel
        labels = np.shape(y)[1]
        if not isinstance(loss_fn, (BCELoss, BCEWithLogitsLoss)):
            raise ConfigError(f"multilabel targets ({labels} columns of 0/1, one per label) "
                              f"are trained with bce_logits (or bce), one output per label; "
                              f"{loss_fn.name} does not fit them")
        if n_outputs != labels:
            raise ShapeError(f"multilabel targets of {labels} labels need as many outputs; "
                             f"this model has {n_outputs}")
        return np.asarray(y).astype(np.float64)
    if task == "classification":
        if isinstance(loss_fn, CrossEntropyLoss):
            return y
        if isinstance(loss_fn, (BCELoss, BCEWithLogitsLoss)):
            if n_outputs != 1:
                raise ConfigError(
                    f"{loss_fn.name} on a classification task needs one output (two classes); "
                    f"this model has {n_outputs} outputs: use cross_entropy (or, for a "
                    f"multilabel model, targets of {n_outputs} columns of 0/1)"
                )
            return np.asarray(y).astype(np.float64).reshape(-1, 1)
        raise ConfigError(
            f"loss {loss_fn.name} does not fit classification; use cross_entropy, bce or bce_logits"
        )
    if isinstance(loss_fn, CrossEntropyLoss):
        raise ConfigError("cross_entropy needs class labels; this is a regression task: use mse, "
                          "or make it a classification (make_dataset(..., task="
                          "'classification'); one-hot rows as labels: y.argmax(1))")
    return y


def predicted_classes(model, y_hat, multilabel=False):
    """Class predictions from outputs: argmax, or a threshold for a single output (0 for
    logits, 0.5 for a sigmoid output); ``multilabel``: each output thresholded, (n, labels)
    of 0/1."""
    xp = model.backend.xp
    threshold = 0.5 if model.output == "sigmoid" else 0.0
    if multilabel:
        return (y_hat > threshold).astype(xp.int64)
    if y_hat.shape[1] == 1:
        return (y_hat[:, 0] > threshold).astype(xp.int64)
    return y_hat.argmax(axis=1)


def correct_rows(model, y_hat, y):
    """How many rows of outputs ``y_hat`` predict their class labels ``y`` (n,) (or, for
    multilabel targets (n, labels), every label of the row: scikit-learn's subset accuracy)."""
    multi = y.ndim == 2
    hit = predicted_classes(model, y_hat, multi) == y
    return (hit.all(axis=1) if multi else hit).sum()


def metrics(model, x, y, loss_fn, task, batch_size=4096, comm=None, target=None,
            weight=None, weighted_scores=False) -> dict:
    """Loss and accuracy (classification) or MSE and R^2 (regression) of ``model`` on (x, y).

    R^2 is scikit-learn's ``r2_score`` (its default, uniform average over target columns):
    see ``r2_from_sums``.

    ``weight``: sample weights of the rows, which weight the loss as in training (accuracy,
    MSE and R^2 count every row once, unless ``weighted_scores``: then they are weighted too,
    as scikit-learn's with ``sample_weight=weight``, where the weights are not all zero); a
    mean loss over rows whose weights are all zero is NaN, with a notice (0 / 0: undefined,
    as ``np.average`` says). With multilabel targets (n, labels) a row is correct where every
    label is (scikit-learn's subset accuracy).

    ``target``: the Standardizer the regression targets ``y`` were standardised with (the
    model predicts standardised values): the loss stays the trained objective's, MSE and R^2
    are in the targets' own units. With ``comm`` (a gpunet.distributed.Communicator) each rank
    measures its contiguous share of the rows and one all-reduce adds the shares up: every rank
    gets the figures of the whole set, equal to one process's to float rounding.
    """
    if comm is not None and comm.size > 1:
        out = _sharded_metrics(model, x, y, loss_fn, task, batch_size, comm, target, weight,
                               weighted_scores)
    else:
        y = np.asarray(y)
        w = None if weight is None else loss_weights(weight, loss_fn, model.dtype)
        scored = w if weighted_scores and w is not None and w.sum() > 0 else None
        out = _figures(_metric_sums(model, x, y, loss_fn, task, 0, len(x), w, target,
                                    batch_size, scored), y, task, target, scored)
    if weight is not None and len(x) and loss_fn.reduction == "mean" \
            and not np.sum(weight) > 0:  # (a weighted mean over no weight: 0 / 0, not 0)
        out["loss"] = float("nan")
        if comm is None or comm.is_root:
            notice(f"the sample weights of the {len(x)} rows measured are all zero: their "
                   "weighted loss is undefined (nan); the other figures count every row once")
    return out


def loss_weights(w, loss_fn, dtype, rows="the rows"):
    """Sample weights ``w`` (host float64) as a loss in ``dtype`` takes them, float64.

    A weighted mean sum_i w_i J_i / sum_i w_i is the same for any scale of the w_i: for
    reduction "mean", weights whose largest lies outside [2^-64, 2^64] are scaled by the power
    of two that brings it into [0.5, 1), so that weights at 1e-50 or 1e40 neither vanish nor
    overflow in float32 (a power of two rounds nothing: the weights' figures are the same to
    the last bit as at their own scale, where that is in range). A sum sum_i w_i J_i scales
    with them: for reduction "sum", ConfigError where a weight overflows ``dtype`` or a
    positive one rounds to 0 in it. ``rows``: what the error calls the rows."""
    if w is None or not len(w):
        return w
    w = np.asarray(w, dtype=np.float64)
    if getattr(loss_fn, "reduction", "mean") == "mean":
        top = float(w.max())
        if top > 0 and not 2.0 ** -64 <= top <= 2.0 ** 64:
            w = np.ldexp(w, -math.frexp(top)[1])
        return w
    with np.errstate(over="ignore"):
        cast = w.astype(dtype)
    info = np.finfo(dtype)
    if np.isinf(cast).any():
        raise ConfigError(f"the sample weights of {rows} reach {w.max():g}, past "
                          f"{np.dtype(dtype).name}'s largest number ({info.max:g}); a loss of "
                          "reduction 'sum' sums them as they are: scale them down (or take "
                          "reduction 'mean', the same for any scale of the weights)")
    lost = (w > 0) & (cast == 0)
    if lost.any():
        raise ConfigError(f"the sample weight {w[lost][0]:g} of {rows} is 0 in "
                          f"{np.dtype(dtype).name} (its smallest number is "
                          f"{info.smallest_subnormal:g}); a loss of reduction 'sum' sums the "
                          "weights as they are: scale them up (or take reduction 'mean', the "
                          "same for any scale of the weights)")
    return w


def _metric_sums(model, x, y, loss_fn, task, lo, hi, w, target, batch_size,
                 scored=None) -> np.ndarray:
    """[the loss's share, correct rows or the sum of squared errors, (regression) each target
    column's sum of squared errors] of rows lo..hi of (x, y), block by block of
    ``batch_size`` rows: one block's outputs (and its loss's gradient, unused) at a time, not
    those of every row (for 4e5 rows of 1000 classes: 6 GB). A block's loss counts its share
    of the whole set's (``share_weight``, ``weighted_share``), so the sums add up to it.
    ``scored``: weights of the rows' hits and squared errors (None: each row once)."""
    backend, n = model.backend, len(x)
    sums = np.zeros(2 + (model.sizes[-1] if task == "regression" else 0))
    total = None if w is None else w.sum()
    block = max(int(batch_size), 1)
    for s in range(lo, hi, block):
        e = min(s + block, hi)
        y_hat = model.predict(as_inputs(model, x[s:e]))
        with backend.evaluating():  # (the loss too: array-module ops, no kernel compiled)
            if w is None:
                value, _ = loss_fn(y_hat, y[s:e])
                share = share_weight(loss_fn.reduction, e - s, n)
            else:
                value, _ = loss_fn(y_hat, y[s:e], weight=w[s:e])
                share = weighted_share(loss_fn.reduction, w[s:e].sum(), total, e - s)
        sums[0] += backend.scalar(value) * share
        if task == "classification" and scored is None:
            hits = correct_rows(model, y_hat, backend.asarray(_labels(y[s:e])))
            sums[1] += float(backend.to_host(hits))
        elif task == "classification":
            labels = _labels(y[s:e])
            hit = backend.to_host(predicted_classes(model, y_hat, labels.ndim == 2)) == labels
            sums[1] += float(scored[s:e] @ (hit.all(axis=1) if hit.ndim == 2 else hit))
        else:
            got, want = _in_units(backend.to_host(y_hat), y[s:e], target)
            squared = (got.reshape(len(got), -1) - want.reshape(len(want), -1)) ** 2
            if scored is not None:
                squared *= scored[s:e, None]
            sums[1] += squared.sum()
            sums[2:] += squared.sum(axis=0)
    return sums


def _figures(sums, y, task, target, scored=None) -> dict:
    """``metrics``' figures from the sums of ``_metric_sums`` over all of (x, y) (``scored``:
    the rows' weights those sums were weighted by, or None)."""
    n = len(y)
    if not n:  # (no rows: no figures)
        return {"loss": float("nan"), **({"accuracy": float("nan")} if task == "classification"
                                         else {"mse": float("nan"), "r2": float("nan")})}
    out = {"loss": float(sums[0])}
    rows = n if scored is None else scored.sum()  # (weighted: the weights' sum)
    if task == "classification":
        out["accuracy"] = float(sums[1] / rows)
    else:
        y64 = _in_units(y, y, target)[1]  # the targets, host float64, in their own units
        out["mse"] = float(sums[1] / (y64.size if scored is None else
                                      rows * (y64.size // n)))
        out["r2"] = r2_from_sums(sums[2:], y64, scored)
    return out


def r2_from_sums(sse, y, weight=None) -> float:
    """R^2 as scikit-learn's ``r2_score(y, y_hat)`` gives it, from the columns' sums of
    squared errors ``sse`` (what ranks add up) and all the targets ``y``.

    For each target column j, sse_j = sum_i (y_hat_ij - y_ij)^2, sst_j = sum_i (y_ij - ybar_j)^2
    about the column's own mean, and R^2_j = 1 - sse_j / sst_j; the result is the plain mean of
    the R^2_j (multioutput="uniform_average": each column counts the same, whatever its
    scale). A constant column (sst_j = 0) scores 1 where its predictions are exact (sse_j = 0),
    else 0 (``force_finite=True``). NaN for fewer than two rows.

    With ``weight`` (rows,), scikit-learn's ``r2_score(..., sample_weight=weight)``: sse_j
    sums w_i (y_hat_ij - y_ij)^2 (``_metric_sums`` with ``scored``) and sst_j =
    sum_i w_i (y_ij - ybar_j)^2 about the weighted mean ybar_j.

    Args:
        sse: (columns,) the sums sse_j.
        y: (rows, columns) host float64 targets.
        weight: (rows,) sample weights, or None (each row once).
    """
    y = y.reshape(len(y), -1)
    if len(y) < 2:
        return float("nan")
    if weight is None:
        sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    else:
        sst = weight @ (y - np.average(y, axis=0, weights=weight)) ** 2
    # (a constant column is one whatever its mean's rounding: y of five rows all 1.0, back from
    # standardised units, had a mean 2e-16 off and sst 1e-33, which made R^2 -1e33)
    sst[y.min(axis=0) == y.max(axis=0)] = 0.0
    scores = np.ones(len(sst))
    valid = (sst != 0) & (sse != 0)
    scores[valid] = 1 - sse[valid] / sst[valid]
    scores[(sst == 0) & (sse != 0)] = 0.0
    return float(scores.mean())


def _in_units(y_hat, y, target):
    """Host float64 predictions and targets, back in the targets' units if standardised."""
    y_hat, y = np.asarray(y_hat, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if target is None:
        return y_hat, y
    return target.inverse(y_hat), target.inverse(y)


def _sharded_metrics(model, x, y, loss_fn, task, batch_size, comm, target=None,
                     weight=None, weighted_scores=False) -> dict:
    """``metrics`` over ranks: sums of the loss (weighted as in training), of correct
    predictions or of squared errors (all of them, and per column for R^2) on this rank's
    rows, all-reduced once as one vector."""
    lo, hi = shard(len(x), comm.rank, comm.size)
    y = np.asarray(y)
    w = None if weight is None else loss_weights(weight, loss_fn, model.dtype)
    scored = w if weighted_scores and w is not None and w.sum() > 0 else None
    sums = _metric_sums(model, x, y, loss_fn, task, lo, hi, w, target, batch_size, scored)
    return _figures(comm.allreduce(sums), y, task, target, scored)


def _labels(y):
    """Host class labels (n,) from the targets a loss takes ((n,) labels, or one float 0/1
    column for one output), or multilabel targets (n, labels) as they are."""
    y = np.asarray(y)
    return y if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)


def confusion_matrix(model, x, y, n_classes, batch_size=4096) -> np.ndarray:
    """counts[true, predicted] over (x, y)."""
    backend = model.backend
    y_hat = model.predict(as_inputs(model, x), batch_size=batch_size)
    pred = backend.to_host(predicted_classes(model, y_hat))
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y).reshape(-1), pred), 1)
    return counts


@dataclass
class TrainState:
    """What changes while training; saved in every checkpoint for exact resume."""

    epoch: int = 0            # completed epochs
    step: int = 0             # steps done in epoch ``epoch + 1``
    rng: dict | None = None   # shuffling generator state at the start of epoch ``epoch + 1``
    history: list = field(default_factory=list)
    best_loss: float = math.inf  # the best monitored value, as a loss: lower is better
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    finished: bool = False


class History(list):
    """Per-epoch rows (dicts of ``epoch``, ``lr``, ``train_loss``, ``train_accuracy`` for a
    classification, ``val_*`` with validation rows (loss and accuracy, or mse and r2) and
    ``seconds``), plus ``test`` (the test split's metrics, ``test_*``, once the run is done),
    ``best_epoch`` (0 without validation rows) and ``stopped_early``."""

    test: dict
    best_epoch: int
    stopped_early: bool


class _SigintFlag:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM (a scheduler's or a container's
    polite stop, before its SIGKILL) sets a flag, and the loop stops after its step; a second
    one interrupts at once. Only in the main thread; elsewhere a no-op."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signals = (signal.SIGINT,) if enabled == "sigint" else self.SIGNALS
        self.raised = False
        self.signum = signal.SIGINT

    def __enter__(self):
        if self.enabled:  # (a signal the process ignores, as nohup's, stays ignored)
            self.previous = {s: signal.signal(s, self._handle) for s in self.signals
                             if signal.getsignal(s) is not signal.SIG_IGN}
        return self

    def _handle(self, signum, frame):
        if self.raised:  # the second: at once (SIGTERM's status, as its default action's)
            raise SystemExit(128 + signum) if signum == signal.SIGTERM else KeyboardInterrupt
        self.raised, self.signum = True, signum

    def __exit__(self, *exc):
        if self.enabled:
            for s, handler in self.previous.items():
                signal.signal(s, handler)


def _remedy(optimizer) -> str:
    """What a diverged run's message advises: a lower rate, or a momentum under 1."""
    momentum = getattr(optimizer, "momentum", 0.0)
    if momentum >= 1:
        return (f"a momentum of {momentum:g} lets SGD's steps grow without bound: keep it "
                "below 1 (0.9 is usual)")
    return (f"try a lower learning rate (now {optimizer.lr:g}) in a new run (a resume goes on "
            "with the run's own)")


def machine_fingerprint(backend) -> dict:
    """What moves a run's last bits besides its settings: the device; on the CPU the BLAS
    library (OpenBLAS picks its kernels by CPU), its thread count and the CPU's model. Recorded
    in a run's checkpoint, so that a resume elsewhere says it may end a few roundings away
    from the unbroken run."""
    found = {"device": str(backend.device_name)}
    if backend.name != "numpy":
        return found
    with contextlib.suppress(Exception):  # (threadpoolctl: scikit-learn's dependency)
        from threadpoolctl import threadpool_info

        # NumPy's own (its wheel's libs sit beside it, numpy.libs); SciPy's, loaded too, may
        # come first in the list
        found_blas = sorted((d for d in threadpool_info() if d.get("user_api") == "blas"),
                            key=lambda d: ("numpy" not in os.path.basename(os.path.dirname(
                                str(d.get("filepath", "")))), str(d.get("filepath", ""))))
        blas = found_blas[0]
        found["blas"] = " ".join(str(blas.get(k)) for k in ("internal_api", "version",
                                                               "architecture") if blas.get(k))
        found["blas_threads"] = int(blas["num_threads"])
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo") as f:
            found["cpu"] = next(line.split(":", 1)[1].strip() for line in f
                                if line.startswith("model name"))
    return found


def _say_other_machine(saved, now, path) -> None:
    """A notice where a run's checkpoint was written on another device, BLAS, thread count or
    CPU than this resume runs on (what both record)."""
    if not isinstance(saved, dict):
        return
    moved = [f"{k} {saved[k]} -> {now[k]}" for k in now if k in saved and saved[k] != now[k]]
    if moved:
        notice(f"{path} was written on another machine or setup ({'; '.join(moved)}): the "
               "resumed run may end a few roundings away from an unbroken run's weights "
               "(exactly the same only with the same device, BLAS, thread count and CPU)")


def _check_positive_int(name, v):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"{name} must be a positive integer, got {v!r}")


def _whole_job(fit):
    """``fit`` that, given a ``comm``, runs whole inside ``comm.abort_on_error``: an exception
    on one rank anywhere (a bad argument, a missing ``resume`` file on one host, the loop)
    aborts the job rather than leaving the others waiting in a collective until its timeout.
    A diverged loss or Ctrl-C is seen by every rank together (both ride the step's all-reduce)
    and ends the run as in one process."""

    @functools.wraps(fit)
    def run(*args, comm=None, **kwargs):
        if comm is None:
            return fit(*args, **kwargs)
        with comm.abort_on_error(passthrough=(TrainingInterrupted, TrainingDiverged)):
            return fit(*args, comm=comm, **kwargs)

    return run


@_whole_job
def fit(model, data, loss_fn: Loss, optimizer, *, epochs=10, batch_size=32, seed=0,
        patience=None, schedule: Schedule | None = None, progress=None, save=None, log=None,
        resume=None, handle_sigint=True, data_spec=None, comm=None, graph=True,
        monitor="val_loss", min_delta=0.0, step_cache=None, weighted_scores=False) -> History:
    """Train ``model`` on ``data`` (a gpunet.data.Dataset) and return its History.

    Each epoch draws a permutation of the training rows from one generator seeded with ``seed``,
    steps through it in mini-batches (the last may be smaller), then measures validation
    metrics (``train_loss``: the mean of the epoch's step losses weighted by their rows, or
    their sum with a loss of reduction "sum", as ``val_loss`` over its rows). ``patience``:
    stop after that many epochs without a better ``monitor`` figure and keep the best weights.
    ``monitor``: the validation figure that "better" and the best epoch
    go by: val_loss (the default; lower is better), val_accuracy (classification) or val_r2
    (regression; higher is better), or val_mse (regression; lower). ``min_delta``: how much
    the monitored figure must improve on the best so far for an epoch to count as better (as
    Keras's EarlyStopping; 0: any improvement). The plateau schedule watches val_loss either
    way. ``schedule``: a Schedule setting the learning rate per epoch (fit steps a copy; its
    base_lr and epochs, where unset, are the rate the optimiser was built with and
    ``epochs``; None: the optimiser's rate now, constant).
    ``progress``: True or False, whether to draw a tqdm bar over each epoch's steps (None: only
    when stderr is a terminal). ``save``: a checkpoint path, written atomically after every
    epoch, at the end and on Ctrl-C; it holds the last epoch's weights (to resume from) and,
    with ``patience``, the best epoch's, which fit returns the model with
    (``load_checkpoint(p).build_model(weights="best")``).
    ``resume``: a Checkpoint (``load_checkpoint``), or its path, to continue from, with the
    run's settings: the model, data, loss, batch size, patience, monitor, min_delta, number
    of ranks and schedule (None takes the run's) must be the same (a ConfigError names what
    differs); the seed and the optimiser's settings and state are the run's (``seed`` and
    those the optimiser was built with are not used).
    ``log``: called with one line per epoch.
    ``data_spec``: the data's DataSpec as JSON, stored in checkpoints (default: ``data.spec``).
    ``handle_sigint``: the first Ctrl-C (or SIGTERM) stops after the current step (see
    TrainingInterrupted); "sigint": Ctrl-C only (SIGTERM left to the program, as the
    estimators leave it); False: neither.
    ``graph``: take every full batch's step as a ``gpunet.step.StaticStep`` (one CUDA graph
    replay on the GPU, its own buffers on the CPU; the same numbers as the eager step) where the
    model, loss and optimizer allow it (under ``comm``: two replays, the gradients summed over
    the ranks between them; a synced batch norm steps eagerly); False steps eagerly.
    ``step_cache``: a dict in which fit keeps that static step, and from which it takes the one
    an earlier call built for the same optimiser, kind of loss, batch size and weighting (the
    estimators' ``partial_fit`` passes one, so that its calls share one step: on a GPU, one
    graph capture instead of one a call).

    Sample weights (``data.w_train``, ``w_val``, ``w_test``, from ``make_dataset(...,
    sample_weight=)`` or ``DataSpec(class_weight="balanced")``) weight each row's loss: every
    step minimises its batch's weighted mean, the epoch's ``train_loss`` is the weighted mean
    over the epoch (the weighted sum, for a loss of reduction "sum") and ``val_loss`` (which
    early stopping watches by default) the weighted mean over the validation rows; the
    accuracy, MSE and R^2 count every row once, unless ``weighted_scores`` (as the estimators
    ask: scikit-learn's scores with ``sample_weight``, which val_accuracy and val_r2 as a
    ``monitor`` then go by too). Under ``comm`` a rank's share of a batch is its share of the
    weight. A mean is the same for any scale of the weights, 1e-50 or 1e40 in float32 too
    (``loss_weights``); a loss of reduction "sum" refuses weights its dtype cannot hold.

    ``comm``: a gpunet.distributed.Communicator to train data-parallel over its ranks (see that
    module): rank 0's weights are broadcast, each rank takes its share of every global batch of
    ``batch_size`` rows, one all-reduce per step sums the weighted gradients (with the step's
    loss and correct count), so every rank takes the single-process step to float rounding.
    A batch norm is synced over the ranks (``torch.nn.SyncBatchNorm``: two small all-reduces
    per norm in the forward pass, one in the backward), so it too normalises the whole batch.
    Metrics are reduced across ranks; only rank 0 logs, shows progress and writes ``save``;
    resume needs the same number of ranks. Before training the ranks check that they agree on
    the model, the data (sizes and checksums), the settings and where a resume goes on from;
    an exception on one rank, that check's included, aborts the job.
    """
    import sys

    from .data import Dataset
    from .optim import _real, check_training_parts

    if not isinstance(data, Dataset):
        raise ConfigError(f"data must be a gpunet Dataset (gpunet.data.make_dataset(name, x, y, "
                          f"task) or gpunet.load_data(gpunet.DataSpec(...))), got "
                          f"{type(data).__name__}")
    check_training_parts(model, loss_fn, optimizer)
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    if patience is not None:
        _check_positive_int("patience", patience)
    min_delta = _real("min_delta", min_delta, 0)  # (ConfigError but for a finite number >= 0)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    # as Python ints (NumPy's would not go into a checkpoint's JSON)
    epochs, batch_size, seed = int(epochs), int(batch_size), int(seed)
    patience = None if patience is None else int(patience)
    if schedule is not None and not isinstance(schedule, Schedule):
        raise ConfigError(f"schedule must be a gpunet.Schedule (such as Schedule('cosine', "
                          f"base_lr=0.1, epochs=30)) or None, got {schedule!r}")
    where = None
    if isinstance(resume, (str, os.PathLike)):  # a path: the checkpoint there
        where = os.fspath(resume)
        resume = load_checkpoint(resume)
    if resume is not None and not isinstance(resume, Checkpoint):
        raise ConfigError(f"resume must be a checkpoint's path or load_checkpoint(path), got "
                          f"{resume!r}")
    if resume is not None:
        resume.check_sections(where)
    if save is not None and resume is None and (comm is None or comm.is_root):
        _warn_replacing_unfinished(save)
    if monitor not in MONITORS:
        raise ConfigError(f"unknown monitor {monitor!r}; valid: {', '.join(MONITORS)}")
    if MONITORS[monitor] not in (None, data.task):
        mine = [m for m, task in MONITORS.items() if task in (None, data.task)]
        raise ConfigError(f"{monitor} is a {MONITORS[monitor]} figure; this is a {data.task} "
                          f"task: monitor {' or '.join(mine)} (a data file's task is read off "
                          f"its targets unless given: --task {MONITORS[monitor]}, or "
                          f"DataSpec(task=...))")
    if monitor == "val_r2" and patience is not None and 0 < len(data.x_val) < 2:
        raise ConfigError("val_r2 of one validation row is undefined (NaN, never better), so "
                          "early stopping would stop blind: hold out more rows, or monitor "
                          "val_loss")
    sign = -1.0 if monitor in ("val_accuracy", "val_r2") else 1.0  # as a loss: lower is better
    if data.n_features != model.sizes[0]:
        raise ShapeError(
            f"layer 1 ({model.sizes[0]} -> {model.sizes[1]}) expects {model.sizes[0]} features; "
            f"dataset {data.name!r} has {data.n_features}"
        )
    n_out = model.sizes[-1]
    if data.task == "classification" and isinstance(loss_fn, CrossEntropyLoss) \
            and n_out < data.n_classes:
        raise ShapeError(f"dataset {data.name!r} has {data.n_classes} classes but the model has "
                         f"{n_out} outputs")
    has_val = len(data.x_val) > 0
    if (patience is not None or (schedule is not None and schedule.name == "plateau")) \
            and not has_val:
        raise ConfigError("early stopping and the plateau schedule need a validation split "
                          "(a validation fraction above 0)")
    w_val = getattr(data, "w_val", None)
    if has_val and w_val is not None and not np.sum(w_val) > 0:
        raise DataError(f"the sample weights of the {len(data.x_val)} validation rows are all "
                        "zero: their weighted loss (val_loss, which early stopping and the "
                        "plateau schedule go by) is undefined; weight some of them, or hold "
                        "out other rows (another seed)")
    backend, xp = model.backend, model.backend.xp
    # (what a resume elsewhere would differ by: recorded with a checkpoint, read on a resume)
    machine = machine_fingerprint(backend) if save is not None or resume is not None else None
    checksums = split_checksums(data) if save is not None or resume is not None else None
    bad = [] if resume is not None else _not_finite(backend, model.params)
    if bad:  # (a model a diverged fit left: every later fit would diverge at its first step;
        # a resume loads the checkpoint's weights over it)
        raise ConfigError(f"the model's weights ({', '.join(bad[:3])}) are not finite, as a "
                          "diverged run leaves them: build the model anew, or load good "
                          "weights (load_state_dict, a checkpoint) before training on")
    bad = [] if resume is not None else _not_finite(backend, {
        f"{slot} of {key}": v for key, slots in getattr(optimizer, "state", {}).items()
        for slot, v in (slots.items() if isinstance(slots, dict) else ())
        if hasattr(v, "dtype")})
    if bad:  # (a diverged run's momenta: the first update would make good weights NaN)
        raise ConfigError(f"the optimizer's state ({', '.join(bad[:3])}) is not finite, as a "
                          "diverged run leaves it: build a new optimizer (or load its state "
                          "from a checkpoint) before training on")
    classify = data.task == "classification"
    w_train = getattr(data, "w_train", None)
    target = getattr(data, "target_standardizer", None)  # standardised regression targets
    bce = isinstance(loss_fn, (BCELoss, BCEWithLogitsLoss))
    check_loss_output(loss_fn, model.output)
    if target is not None and (model.output != "identity" or bce):
        raise ConfigError("the targets are standardised (mean 0, std 1), which "
                          + ("a binary cross-entropy, whose targets lie in [0, 1], does not take"
                             if bce else f"a {model.output} output cannot reach")
                          + ": load them as given (DataSpec(standardize_targets=False), "
                          "make_dataset(standardize=False))")
    y_train = prepare_targets(data.y_train, data.task, loss_fn, n_out)
    y_val = prepare_targets(data.y_val, data.task, loss_fn, n_out)
    y_test = prepare_targets(data.y_test, data.task, loss_fn, n_out)
    if isinstance(loss_fn, CrossEntropyLoss):
        loss_fn = copy.copy(loss_fn)  # (the caller's keeps checking its labels)
        loss_fn.check_labels = False  # labels were validated when the dataset was made
    if isinstance(loss_fn, BCELoss):
        loss_fn = copy.copy(loss_fn)  # (its output is a sigmoid's or softmax's: checked above)
        loss_fn.check_range = False
    if data_spec is None and getattr(data, "spec", None) is not None:
        data_spec = data.spec.to_json()  # so that `gpunet train --resume` can rebuild the data
    ranks = 1 if comm is None else comm.size
    if comm is not None and not comm.is_root:
        log, progress = None, False
    x_dev = as_inputs(model, data.x_train)
    y_dev = as_inputs(model, y_train, "the targets") if y_train.dtype.kind == "f" \
        else backend.asarray(y_train)
    y_labels = backend.asarray(_labels(data.y_train)) if classify else None
    w_train = loss_weights(w_train, loss_fn, model.dtype, "the training rows")
    for rows, w in (("the validation rows", w_val), ("the test rows", getattr(data, "w_test",
                                                                            None))):
        loss_weights(w, loss_fn, model.dtype, rows)  # (checked now, not after an epoch)
    w_dev = None if w_train is None else backend.asarray(w_train, dtype=model.dtype)
    n = x_dev.shape[0]
    rows = min(batch_size, max(n, 1))  # (a batch size past the rows: one batch of them all)
    n_steps = -(-n // rows)
    sizes = np.minimum(rows, n - np.arange(n_steps) * rows).astype(np.float64)
    # Under several ranks a batch norm is synced (torch.nn.SyncBatchNorm): each rank runs
    # every step's forward and backward, a rank without rows on none, with its dJ/dy_hat in
    # the batch's units (scaled by its share: the gradient all-reduce then adds them as they
    # are), and the norms' statistics are all-reduced (MLP.synced_batch_norm).
    batch_norm = any(isinstance(layer, BatchNorm) for layer in getattr(model, "layers", ()))
    synced = comm is not None and comm.size > 1 and batch_norm  # (none without a hidden layer)
    if batch_norm:
        if sizes.min() < 2:
            raise ConfigError(f"batch norm needs batches of at least 2 rows, but {n} training "
                              f"rows in batches of {batch_size} leave a last batch of 1: "
                              "choose another batch size")

    state = TrainState()
    best = None
    step_losses = step_correct = None
    if resume is not None:
        t = resume.extra.get("training")
        if t is None:
            raise ConfigError("this checkpoint holds no training state to resume from")
        if "estimator" in resume.extra:  # (its run record is for evaluate and info: it holds
            # no generator state, so the run could not go on as it would have)
            raise ConfigError("this checkpoint is a saved estimator's: go on training it with "
                              "MLPClassifier.load / MLPRegressor.load and partial_fit (or "
                              "warm_start)")
        unknown = sorted(set(t["state"]) - {f.name for f in fields(TrainState)})
        if unknown:
            raise CheckpointError(f"this checkpoint's training state holds unknown entries "
                                  f"({', '.join(map(repr, unknown[:3]))}): not one gpunet wrote")
        state = TrainState(**copy.deepcopy(t["state"]))  # (the run goes on from a copy:
        # the Checkpoint object stays as read, for another resume from it)
        check_resume(t, epochs, batch_size)
        state.finished = epochs == state.epoch and not state.step  # (a finished run given
        # more epochs is unfinished again, until they are done)
        if t.get("ranks", 1) != ranks:
            was = t.get("ranks", 1)
            raise ConfigError(f"this run was trained on {was} rank(s); resume it on the same "
                              + (f"number (mpiexec -n {was}), not {ranks}" if was != 1 else
                                 f"one, in one process (without mpiexec and --distributed), "
                                 f"not on {ranks}"))
        if t.get("patience") != patience:  # (the best weights kept, or not, go with it)
            raise ConfigError(f"this run's patience was {t.get('patience')}; resume it with "
                              f"the same, not {patience}")
        saved_loss = t.get("loss")
        now_loss = loss_settings(loss_fn)
        if isinstance(saved_loss, dict) and saved_loss != now_loss:
            raise ConfigError(f"this run trained on the loss {_options(saved_loss)}; resume it "
                              f"with the same, not {_options(now_loss)}")
        if t.get("monitor", "val_loss") != monitor:
            raise ConfigError(f"this run monitored {t.get('monitor', 'val_loss')}; resume it "
                              f"with the same monitor, not {monitor}")
        if t.get("min_delta", 0.0) != min_delta:
            raise ConfigError(f"this run's min_delta was {t.get('min_delta', 0.0):g}; resume "
                              f"it with the same, not {min_delta:g}")
        if isinstance(t.get("seed"), int):  # the run's, as recorded (its shuffling goes on
            seed = t["seed"]  # from the generator's saved state, whatever seed is given)
        if comm is None or comm.is_root:
            _say_other_machine(t.get("machine"), machine,
                               where or getattr(resume, "path", None) or "the checkpoint")
        if (resume.target_standardizer is None) != (target is None):
            raise ConfigError("this checkpoint's run trained on "
                              + ("targets as given" if target is not None else
                                 "standardised targets")
                              + ", the data here are "
                              + ("standardised" if target is not None else "as given")
                              + ": resume with the data spec stored in the checkpoint")
        names = getattr(data, "classes", None)
        if (resume.classes is None) != (names is None) or (
                names is not None and not np.array_equal(resume.classes, names)):
            raise ConfigError("this checkpoint's classes ("
                              + _listed(resume.classes, "labels 0..k-1")
                              + ") are not the data's (" + _listed(names, "labels 0..k-1")
                              + "): resume on the data the run was trained on")
        features = getattr(data, "features", None)
        if resume.features is None and features and not any("categories" in e
                                                             for e in features):
            features = None  # a numeric CSV's run saved before column names were stored
        if resume.features != features:
            raise ConfigError("this checkpoint's feature columns are not the data's (columns "
                              "or categories differ): resume on the data the run was trained "
                              "on")
        _check_same_rows(t, resume, data, target, checksums)
        # the run's weights (and dropout masks' seed and step) on this model, which must be
        # of the run's architecture
        saved = resume.header.get("model") or {}
        now = model.config()
        differ = [f"{k} {now[k]!r} (the run's: {saved[k]!r})" for k in now
                  if k not in ("dropout_step", "dropout_seed") and k in saved
                  and saved[k] != now[k]]
        if differ:
            raise ConfigError("resume on a model of the run's architecture "
                              "(checkpoint.build_model() makes one), but this one has "
                              + "; ".join(differ))
        if t.get("schedule"):
            ran = Schedule.from_state(t["schedule"])
            if schedule is not None:  # (None: the run's own goes on)
                differ = [k for k in ("name", "step_size", "gamma", "min_lr", "factor",
                                      "patience", "threshold", "warmup", "base_lr", "epochs")
                          if getattr(schedule, k) is not None
                          and getattr(schedule, k) != getattr(ran, k)]
                if differ:
                    raise ConfigError(f"this run's schedule was {ran.name} ("
                                      + ", ".join(f"{k} {getattr(ran, k)!r}" for k in differ)
                                      + "); resume it with the same, or with none (the run's "
                                      "goes on)")
            schedule = ran
            if schedule.name == "cosine" and epochs > max(schedule.epochs, state.epoch) \
                    and schedule.min_lr <= 0:
                raise ConfigError(
                    f"this run's cosine schedule was set up for {schedule.epochs} epochs and "
                    f"its learning rate is {schedule.min_lr:g} after them: resuming to epoch "
                    f"{epochs} would not change the weights; start a new run of {epochs} "
                    "epochs instead")
        kept = resume.group("best")  # the best epoch's parameters and buffers, if any
        if kept:
            want = {k: tuple(v.shape) for k, v in {**model.params, **model.buffers}.items()}
            got = {k: tuple(np.shape(v)) for k, v in kept.items()}
            if got != want:
                bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
                raise CheckpointError(f"this checkpoint's best-epoch weights do not fit the "
                                      f"model: {', '.join(bad[:3])} "
                                      + ("missing or " if set(got) != set(want) else "")
                                      + "of another shape")
        best = {k: backend.asarray(v, dtype=model.dtype).copy() for k, v in kept.items()} \
            or None
        if state.step:
            if state.step > n_steps:  # (n_steps: stopped after the epoch's last step)
                raise CheckpointError(f"this checkpoint stopped at step {state.step} of epoch "
                                      f"{state.epoch + 1}, whose batches of {batch_size} rows "
                                      f"are {n_steps} steps: not a state this run reaches")
            if "epoch/losses" not in resume.arrays or "epoch/correct" not in resume.arrays:
                raise CheckpointError(f"this checkpoint stopped at step {state.step} of epoch "
                                      f"{state.epoch + 1} but holds no figures of its steps "
                                      "(epoch/losses, epoch/correct)")
            for k in ("epoch/losses", "epoch/correct"):
                if resume.arrays[k].shape != (n_steps,):
                    raise CheckpointError(f"this checkpoint's {k} has shape "
                                          f"{resume.arrays[k].shape}, not one figure for each "
                                          f"of the epoch's {n_steps} steps")
            step_losses = backend.asarray(resume.arrays["epoch/losses"]).copy()
            step_correct = backend.asarray(resume.arrays["epoch/correct"]).copy()
        # everything checked: the run's optimiser state (checked whole before it changes
        # anything), then its weights and masks' seed and step, on the caller's objects
        given = optimizer.hyperparameters()
        resume.load_optimizer(optimizer)
        replaced = [f"{k} {v!r} (not {given[k]!r})" for k, v in
                    optimizer.hyperparameters().items()
                    if k != "lr" and k in given and v != given[k]]
        if replaced:  # (as torch's load_state_dict: the run's settings, but said)
            notice("resuming with the run's optimizer settings: " + ", ".join(replaced))
        model.load_state_dict(resume.params)
        model.dropout_step = int(saved.get("dropout_step", 0))
        if "dropout_seed" in saved:
            model.dropout_seed = int(saved["dropout_seed"])
    rng = np.random.default_rng(seed)
    if state.rng is not None:
        rng.bit_generator.state = state.rng
    else:
        state.rng = rng.bit_generator.state
    # the schedule fit steps: a copy, its unset base_lr and epochs the rate the optimiser was
    # built with (not the rate an earlier run's schedule left it at) and the run's length;
    # without one, the optimiser's rate now
    schedule = Schedule("constant").bound(optimizer.lr, epochs) if schedule is None \
        else schedule.bound(getattr(optimizer, "initial_lr", optimizer.lr), epochs)  # (bound:
    # a rate an earlier schedule took to 0 goes on at 0, as before)
    if resume is None and schedule.name == "cosine" and epochs > schedule.epochs \
            and schedule.min_lr <= 0:
        raise ConfigError(f"the cosine schedule spans {schedule.epochs} epochs and its learning "
                          f"rate is 0 after them: epochs {schedule.epochs + 1} to {epochs} of "
                          f"this run would not train; give it epochs={epochs} (or leave its "
                          "epochs unset: fit's) or a min_lr above 0")
    # the bar: on a terminal's stderr unless told (never where there is no stderr to draw on);
    # tqdm.auto (a notebook's widget) only then, which warns where ipywidgets is missing
    show = is_terminal(sys.stderr) if progress is None else bool(progress) and \
        sys.stderr is not None
    if show:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    if comm is not None:  # (the ranks' first collective: before they can go out of step)
        comm.check_same(_run_figures(model, data, y_train, loss_fn, optimizer, schedule, state,
                                     epochs=epochs, batch_size=batch_size, seed=seed,
                                     patience=patience, monitor=monitor, min_delta=min_delta),
                        close=CHECKSUMS)
        comm.broadcast_params(model)  # same seed on every rank, but rank 0's weights rule
    # A full batch's step is static: on a rank of a data-parallel job, a split one for its
    # share of the batch (rows share_lo..+share of it), whose gradients the ranks sum between
    # its backward and its update. A synced batch norm's collectives stay eager.
    static, share, share_lo = None, rows, 0
    if comm is not None:
        share_lo, hi = shard(rows, comm.rank, comm.size)
        share = hi - share_lo
    if graph and share and not synced \
            and not StaticStep.unsupported(model, loss_fn, optimizer):
        key = (type(loss_fn), sorted(loss_fn.config().items()), rows, classify,
               w_dev is not None, share, share_lo, comm is not None)
        cached = (step_cache or {}).get("static")
        if cached is not None and cached[0] == key and cached[1].model is model \
                and cached[1].optimizer is optimizer:
            static = cached[1]
            static.loss_fn = loss_fn  # (of the same kind and options: the same step)
        else:
            static = StaticStep(model, loss_fn, optimizer, share, count_correct=classify,
                                weighted=w_dev is not None, split=comm is not None,
                                row_offset=share_lo,
                                extras=STEP_EXTRAS if comm is not None else 0)
            static.check_rows = False  # (its rows: slices of the epoch's permutation)
            if step_cache is not None:
                step_cache["static"] = (key, static)

    def run_so_far(error):
        """``error`` holding the epochs completed (its ``history``)."""
        error.history = History(state.history)
        error.history.best_epoch = state.best_epoch
        error.history.test = {}  # (the test split is scored once the run is done)
        return error

    def diverged_error(message):
        """TrainingDiverged saying ``message``, holding the epochs completed; with
        ``patience``, the model put back to the best epoch's weights held (if an epoch ended
        well), rather than left with the weights that diverged."""
        if best is not None:
            model.load_state_dict(best)
            message += (f"; the model holds epoch {state.best_epoch}'s weights, the best "
                        f"{monitor} before it diverged (the optimizer's state diverged with "
                        "it: to train on, build a new optimizer)")
        return run_so_far(TrainingDiverged(message))

    def interrupted(where, epoch, step, signum):
        by = " by SIGTERM" if signum == signal.SIGTERM else ""
        msg = (f"interrupted{by} at {where}; checkpoint written to {save}" if save
               else f"interrupted{by} at {where} (nothing written: no checkpoint path given)")
        history = History(state.history)
        history.best_epoch, history.stopped_early = state.best_epoch, state.stopped_early
        history.test = {}  # (the test split is scored once the run is done)
        raise TrainingInterrupted(msg, epoch, step, save, signum, history)

    def untouched():
        """What a diverged run's message adds about the checkpoint: the last good one stays."""
        return (f"; the checkpoint of epoch {state.epoch} is untouched"
                if save and os.path.exists(save) else "")

    def finite_weights(epoch):
        """TrainingDiverged where a parameter is not finite (a step's loss is taken before its
        update: an update that overflows in an epoch's last step shows in no loss). One
        reduction a tensor and one transfer, once an epoch (every rank asks, of the same
        weights: they stop together)."""
        bad = _not_finite(backend, model.params)
        if bad:
            raise diverged_error(
                f"the weights ({', '.join(bad[:3])}) became infinite or NaN in epoch "
                f"{epoch}: {_remedy(optimizer)}" + untouched())

    def checkpoint(losses=None, correct=None):
        if save is None:
            return
        if losses is not None:  # (a stop within an epoch: its weights are not written over
            finite_weights(state.epoch + 1)  # good ones; an epoch's end checked them already)
        if comm is not None and not comm.is_root:
            return
        arrays = {f"best/{k}": backend.to_host(v) for k, v in (best or {}).items()}
        if losses is not None:
            arrays["epoch/losses"] = backend.to_host(losses)
            arrays["epoch/correct"] = backend.to_host(correct)
        training = {"state": asdict(state), "batch_size": batch_size, "epochs": epochs,
                    "rows": [len(data.x_train), len(data.x_val), len(data.x_test)],
                    "seed": seed, "patience": patience, "schedule": schedule.state_dict(),
                    "monitor": monitor, "min_delta": min_delta,
                    "ranks": ranks, "machine": machine, "checksums": checksums,
                    "loss": loss_settings(loss_fn)}
        save_checkpoint(save, model, optimizer, epoch=state.epoch,
                        standardizer=data.standardizer, target_standardizer=target, arrays=arrays,
                        classes=getattr(data, "classes", None),
                        extra={"training": training, "data": data_spec, "dataset": data.name,
                               "features": getattr(data, "features", None),
                               "class_weights": _listed_floats(getattr(data, "class_weights",
                                                                       None)),
                               "fill_values": _listed_floats(getattr(data, "fill_values", None)),
                               "task": data.task, "n_classes": int(data.n_classes),
                               "multilabel": bool(getattr(data, "multilabel", False))})

    def diverged(losses, epoch):
        """TrainingDiverged where a step's loss (of ``losses``, the epoch's so far) is not
        finite; the checkpoint, of the last epoch that ended well, is left as it is."""
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise diverged_error(
                f"the loss became {losses[bad[0]]} at epoch {epoch}, step {bad[0] + 1}: "
                f"{_remedy(optimizer)}" + untouched())

    if state.epoch >= epochs and not state.step:  # (a resume of a run already this long:
        state.finished = True  # no epoch runs, but save= still gets the run, as said)
        checkpoint()
    # Overflow shows up as a non-finite loss, reported below with its epoch and step, or at an
    # epoch's end as non-finite weights (its last update) or a non-finite validation loss.
    syncing = model.synced_batch_norm(comm.batch_norm_allreduce(backend)) if synced else \
        contextlib.nullcontext()
    # one bar for the run, reset each epoch (a notebook shows one widget, not one an epoch)
    with syncing, _SigintFlag(handle_sigint) as sigint, \
            tqdm(total=n_steps, leave=False, disable=not show, unit="batch") as bar, \
            np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(state.epoch + 1, epochs + 1):
            t0 = time.perf_counter()
            rng.bit_generator.state = state.rng
            perm_host = rng.permutation(n)
            perm = backend.asarray(perm_host)
            if w_train is not None:  # each batch's share of the epoch's loss: its weight
                w_perm = np.asarray(w_train, dtype=np.float64)[perm_host]
                sizes = np.add.reduceat(w_perm, np.arange(0, n, rows))
            optimizer.lr = schedule.lr(epoch)
            first = state.step
            if first == 0:
                step_losses = xp.zeros(n_steps, dtype=np.float64)
                step_correct = xp.zeros(n_steps, dtype=np.int64)
            bar.set_description(f"epoch {epoch}/{epochs}", refresh=False)
            bar.set_postfix_str("", refresh=False)  # (not the last epoch's loss)
            bar.reset(total=n_steps)  # (drawn anew: at 0, or at a resumed epoch's step)
            bar.update(first)
            for s in range(first, n_steps):
                idx = perm[s * rows:(s + 1) * rows]
                stop_all = False
                if comm is not None:
                    m = len(idx)
                    lo, hi = shard(m, comm.rank, comm.size)
                    if w_train is None:
                        weight = share_weight(loss_fn.reduction, hi - lo, m)
                    else:  # this rank's share of the batch's weight
                        w_batch = w_perm[s * rows:s * rows + m]
                        weight = weighted_share(loss_fn.reduction, w_batch[lo:hi].sum(),
                                                sizes[s], hi - lo)
                    idx = idx[lo:hi]
                    if not len(idx) and getattr(model, "dropout", 0) and not synced:
                        model.dropout_step += 1  # as the ranks with rows do: masks stay in step
                value = correct = 0  # a rank with no rows of a ragged last batch adds nothing
                stepped = static is not None and len(idx) == share \
                    and (comm is None or lo == share_lo)
                if stepped:  # forward, loss, backward and the update, replayed
                    value, correct = static(x_dev, y_dev, idx, w_dev)
                elif len(idx) or synced:
                    y_hat = model.forward(x_dev[idx], row_offset=lo if comm is not None else 0)
                    if len(idx):
                        value, dJdy_hat = loss_fn(y_hat, y_dev[idx]) if w_dev is None else \
                            loss_fn(y_hat, y_dev[idx], weight=w_dev[idx])
                    else:
                        dJdy_hat = xp.zeros_like(y_hat)
                    if classify and len(idx):
                        correct = correct_rows(model, y_hat, y_labels[idx])
                    model.backward(dJdy_hat * weight if synced else dJdy_hat, need_dx=False)
                if comm is not None:
                    extras = (value * weight, correct,
                              stop_flag(sigint.raised and sigint.signum, comm.size))
                    if stepped:  # the gradients summed in the step's own buffer, then its
                        value, correct, stop_all = comm.allreduce_flat(  # update
                            backend, static.flat, model.n_params, weight, extras)
                        static.update()
                    else:
                        value, correct, stop_all = comm.allreduce_grads(
                            model, 1.0 if synced else weight, extras)
                    stop_all = stop_signal(stop_all, comm.size)  # (every rank: the same)
                if not stepped:
                    optimizer.step()
                step_losses[s] = value  # on the device: no synchronisation per step
                if classify:
                    step_correct[s] = correct
                if show and (s + 1) % max(1, n_steps // 10) == 0:
                    bar.set_postfix(loss=f"{float(step_losses[:s + 1].mean()):.4f}",
                                    refresh=False)  # (drawn by the update's refresh)
                bar.update()
                # Under comm only the reduced flag decides: a Ctrl-C that comes in after this
                # rank packed its flag rides the next step's all-reduce, so that every rank
                # stops after the same step (one stopping alone would leave the others waiting)
                if stop_all if comm is not None else sigint.raised:
                    diverged(backend.to_host(step_losses)[:s + 1], epoch)  # (weights that
                    state.step = s + 1  # went non-finite are not written over the last good)
                    checkpoint(step_losses, step_correct)
                    bar.close()
                    interrupted(f"epoch {epoch}, step {s + 1} of {n_steps}", epoch, s + 1,
                                stop_all if comm is not None else sigint.signum)
            bar.clear()  # (the epoch's line, logged below, takes its place)
            losses = backend.to_host(step_losses)
            diverged(losses, epoch)
            finite_weights(epoch)
            # the mean over the epoch's rows (weighted: over their weights); a loss with
            # reduction "sum" sums its rows, and so does the epoch's
            total = losses.sum() if getattr(loss_fn, "reduction", "mean") == "sum" \
                else (losses * sizes).sum() / sizes.sum()
            row = {"epoch": epoch, "lr": optimizer.lr, "train_loss": float(total)}
            if classify:
                row["train_accuracy"] = float(backend.to_host(step_correct).sum() / n)
            if has_val:
                row.update({f"val_{k}": v for k, v in
                            metrics(model, data.x_val, y_val, loss_fn, data.task,
                                    comm=comm, target=target,
                                    weight=getattr(data, "w_val", None),
                                    weighted_scores=weighted_scores).items()})
                if not math.isfinite(row["val_loss"]):  # (outputs, or their loss, overflowed)
                    raise diverged_error(
                        f"the validation loss became {row['val_loss']} at epoch {epoch}: the "
                        f"model's outputs on the validation rows, or their loss, are not "
                        f"finite; {_remedy(optimizer)}, or look for validation rows far "
                        "outside the training rows' range" + untouched())
            row["seconds"] = time.perf_counter() - t0
            state.history.append(row)
            state.epoch, state.step, state.rng = epoch, 0, rng.bit_generator.state
            if has_val:
                schedule.observe(row["val_loss"])
                value = sign * row[monitor]
                if value < state.best_loss - min_delta:
                    state.best_loss, state.best_epoch, state.bad_epochs = value, epoch, 0
                    if patience is not None:
                        best = {k: v.copy() for k, v in
                                {**model.params, **model.buffers}.items()}
                else:
                    state.bad_epochs += 1
                    if patience is not None and state.bad_epochs >= patience:
                        state.stopped_early = True
            if log is not None:
                log(_summary(row, epochs))
            if state.stopped_early or epoch == epochs:
                state.finished = True
            checkpoint()
            # a signal that came in after the last step (in validation, or the checkpoint):
            # the run stops here, on every rank together, rather than after one more step or,
            # in the last epoch, not at all
            stop = sigint.raised and sigint.signum
            if comm is not None:
                stop = stop_signal(comm.allreduce([stop_flag(stop, comm.size)])[0], comm.size)
            if stop:
                interrupted(f"the end of epoch {epoch}" + (
                    " (the run was complete)" if state.finished else ""), epoch, n_steps, stop)
            if state.stopped_early:
                if log is not None:
                    log(f"early stop: no better {monitor}"
                        + (f" (by more than {min_delta:g})" if min_delta else "")
                        + f" for {patience} epochs; "
                        + (f"keeping the weights of epoch {state.best_epoch}"
                           if state.best_epoch else
                           f"keeping the last epoch's weights (no epoch had a finite "
                           f"{monitor})"))
                break

    if best is not None:
        model.load_state_dict(best)
        if log is not None and not state.stopped_early and state.best_epoch \
                and state.best_epoch != len(state.history):  # (early stop said it)
            log(f"keeping the weights of epoch {state.best_epoch}, the best {monitor} "
                f"(--patience / patience=: not the last epoch's, {len(state.history)})")
    history = History(state.history)
    history.best_epoch = state.best_epoch
    history.stopped_early = state.stopped_early
    with np.errstate(over="ignore", invalid="ignore"):  # (said below, in a line)
        history.test = {f"test_{k}": v for k, v in
                        metrics(model, data.x_test, y_test, loss_fn, data.task,
                                comm=comm, target=target,
                                weight=getattr(data, "w_test", None),
                                weighted_scores=weighted_scores).items()} \
            if len(data.x_test) else {}
    lost = history.test.get("test_loss", 0.0)
    if not math.isfinite(lost) and (comm is None or comm.is_root) \
            and not (getattr(data, "w_test", None) is not None
                     and not np.sum(data.w_test) > 0):  # (weights all 0: metrics said it)
        notice(f"the test loss is {lost}: the model's outputs on the test rows, or their loss, "
               f"are not finite (weights that the last epoch's updates took near the dtype's "
               f"largest numbers? {_remedy(optimizer)}; or test rows far outside the "
               "training rows' range)")
    return history


#: the figures of _run_figures that are checksums of floats (another host may round them
#: otherwise: Communicator.check_same compares them to 1e-6 relative)
CHECKSUMS = ("training features' checksum", "training targets' checksum",
             "sample weights' checksum", "validation features' checksum",
             "validation targets' checksum", "test features' checksum",
             "test targets' checksum")


#: the splits' arrays a checkpoint holds checksums of (``rows_checksum`` over all their rows), and
#: how a message names each
SPLIT_ARRAYS = {"x_train": "training rows' features", "y_train": "training rows' targets",
                "w_train": "training rows' weights", "x_val": "validation rows' features",
                "y_val": "validation rows' targets", "w_val": "validation rows' weights",
                "x_test": "test rows' features", "y_test": "test rows' targets",
                "w_test": "test rows' weights"}


def split_checksums(data) -> dict:
    """``rows_checksum`` of every row of each split's arrays (``SPLIT_ARRAYS``; 0 for one the data
    lack), as a checkpoint records them: a resume on other rows is refused."""
    from .data import rows_checksum

    return {k: rows_checksum(getattr(data, k, None)) for k in SPLIT_ARRAYS}


def _run_figures(model, data, y_train, loss_fn, optimizer, schedule, state, **settings) -> dict:
    """What the ranks of a data-parallel run must agree on, for Communicator.check_same: the
    model, the sizes of the splits, checksums of the training rows, targets and weights, the
    settings, and where a resumed run goes on from. Cheap for large data: the checksums read
    at most 256 of each split's features' rows and 4096 of its targets and weights (the split
    sizes are compared whole)."""
    from .data import rows_checksum as checksum
    loss = {k: v for k, v in loss_settings(loss_fn).items() if k != "name"}
    # (a model built from another seed is fine: rank 0's weights are broadcast)
    architecture = {k: v for k, v in model.config().items()
                    if k not in ("dropout_seed", "dropout_step")}
    hyper = {k: v for k, v in optimizer.hyperparameters().items() if k != "lr"}  # (below)
    return {"parameters": model.n_params,
            "model architecture": repr(sorted(architecture.items())),
            "training rows": len(data.x_train), "validation rows": len(data.x_val),
            "test rows": len(data.x_test),
            CHECKSUMS[0]: checksum(data.x_train, 256), CHECKSUMS[1]: checksum(y_train, 4096),
            CHECKSUMS[2]: checksum(getattr(data, "w_train", None), 4096),
            CHECKSUMS[3]: checksum(data.x_val, 256), CHECKSUMS[4]: checksum(data.y_val, 4096),
            CHECKSUMS[5]: checksum(data.x_test, 256), CHECKSUMS[6]: checksum(data.y_test, 4096),
            **{k.replace("_", " "): 0 if v is None else v if isinstance(v, (int, float))
               else str(v) for k, v in settings.items()},  # (patience None: 0, which no run has)
            "optimizer": f"{optimizer.name} {sorted(hyper.items())}",
            "learning rate": optimizer.lr,
            "loss": f"{loss_fn.name} {sorted(loss.items())}",
            "schedule": repr(sorted(schedule.state_dict().items())),
            "resumed epoch": state.epoch, "resumed step": state.step}


def _warn_replacing_unfinished(path) -> None:
    """A notice where ``save`` names a checkpoint of a run that is not finished: this run
    replaces it after its first epoch (a job restarted with its first command, where a resume
    was meant, would lose it)."""
    if not os.path.isfile(path):
        return
    try:
        extra = load_checkpoint(path).extra
        training = extra.get("training") or {}
        state, dataset = training["state"], (extra.get("data") or {}).get("dataset")
    except (GpunetError, OSError, KeyError, TypeError, ValueError, AttributeError):
        return  # (not a run's checkpoint: replaced as any file is)
    if state.get("finished") or state.get("stopped_early"):
        return
    from .data import source_kind

    try:  # (data a command can read: the command line resumes it too)
        source_kind(str(dataset))
        how = f"{resume_command(path, training.get('ranks', 1))} (in Python: " \
            f"fit(..., resume={str(path)!r}))"
    except GpunetError:
        how = f"fit(..., resume={str(path)!r})"
    notice(f"{path} holds an unfinished run ({run_position(state, training.get('epochs'))}), "
           f"which this run replaces after its first epoch; to go on with it instead: {how}")


def _not_finite(backend, arrays: dict) -> list:
    """The names of the ``arrays`` (name -> an array) that hold a NaN or an infinity: one
    reduction an array and one transfer for those on ``backend`` (a device syncs once). An
    array of another backend (an optimizer's state before it follows its model's ``to``) is
    checked on its own."""
    if not arrays:
        return []
    xp = backend.xp
    here = {k: v for k, v in arrays.items() if backend.owns(v)}
    bad = set()
    if here:
        finite = backend.to_host(xp.stack([xp.isfinite(v).all() for v in here.values()]))
        bad = {k for k, ok in zip(here, finite) if not ok}
    for k, v in arrays.items():
        if k not in here:
            other = backend_of(v)
            bad |= {k} if not bool(other.to_host(other.xp.isfinite(v).all())) else set()
    return [k for k in arrays if k in bad]


def check_resume(training: dict, epochs, batch_size) -> None:
    """ConfigError where a checkpoint's run (its ``training`` section) cannot go on to
    ``epochs`` in batches of ``batch_size``: it stopped early, it has trained more epochs (or
    stopped within the last one asked for), or its batches were of another size. The command
    line asks before it says it resumes; ``fit`` asks again."""
    state = training["state"]
    done, step = state.get("epoch", 0), state.get("step") or 0
    if state.get("stopped_early"):
        raise ConfigError(f"that run already stopped early at epoch {done}: nothing to resume")
    if step and epochs <= done:  # (its weights hold part of the next one)
        raise ConfigError(f"that run stopped in epoch {done + 1}, after step {step}: resume it "
                          f"with epochs >= {done + 1}, not {epochs}")
    if epochs < done:
        raise ConfigError(f"that run has trained {done} epochs: resume it with epochs >= "
                          f"{done} (more, to train on), not {epochs}")
    if training.get("batch_size") != batch_size:
        raise ConfigError(f"resume with the run's batch size ({training.get('batch_size')}), "
                          f"not {batch_size}")


def resume_command(path, ranks=1) -> str:
    """The command that resumes the run of checkpoint ``path``, trained on ``ranks`` ranks:
    ``gpunet train --resume PATH``, under ``mpiexec -n N`` with ``--distributed`` for several
    (a resume needs as many as trained it)."""
    command = f"gpunet train --resume {shlex.quote(str(path))}"
    if isinstance(ranks, int) and ranks > 1:
        return f"mpiexec -n {ranks} {command} --distributed"
    return command


def run_position(state: dict, epochs) -> str:
    """Where a run's checkpoint stands, as the interrupt message counts: "20 of 50 epochs
    done", plus "epoch 21 stopped at step 469" where it stopped within an epoch."""
    done, step = state.get("epoch"), state.get("step") or 0
    text = f"{done} of {epochs} epochs done"
    if isinstance(done, int) and step:
        text += f", epoch {done + 1} stopped at step {step}"
    return text


def _check_same_rows(t, resume, data, target, checksums) -> None:
    """ConfigError where the data to resume on are not those the run was trained on, as far
    as the checkpoint can tell: the sizes of its splits, checksums of every split's rows
    (``split_checksums``, ``checksums`` those of ``data``; a checkpoint written before they
    were recorded has none), and the statistics its features and targets were standardised
    with (to 1e-9 of each column's std plus |mean|: the same rows give the same figures, to the
    rounding of their sums), which a changed file or a split of other rows would move."""
    rows = t.get("rows")
    now = [len(data.x_train), len(data.x_val), len(data.x_test)]
    if isinstance(rows, list) and len(rows) == 3 and rows != now:
        raise ConfigError(f"the run trained on {rows[0]} rows, validated on {rows[1]} and "
                          f"tested on {rows[2]}; these data split into {now[0]}, {now[1]} and "
                          f"{now[2]}: resume on the data the run was trained on")
    if (resume.standardizer is None) != (data.standardizer is None):
        raise ConfigError("this run " + ("standardised its features; these data are not"
                                         if resume.standardizer is not None else
                                         "took its features as given; these data are "
                                         "standardised")
                          + ": resume with the data spec stored in the checkpoint")
    for what, saved, fresh in (("feature", resume.standardizer, data.standardizer),
                               ("target", resume.target_standardizer, target)):
        if saved is None or fresh is None:
            continue  # (whether they are standardised at all is checked above and before)
        j = saved.moved(fresh)
        if j is not None:
            from .data import _feature_name

            mean, std = np.asarray(saved.mean), np.asarray(saved.std)
            name = _feature_name(data, j) if what == "feature" else f"target column {j}"
            raise ConfigError(f"the data are not those the run was trained on: its training "
                              f"rows' {name} had mean {mean[j]:.6g} and std "
                              f"{std[j]:.6g}, these have {float(fresh.mean[j]):.6g} and "
                              f"{float(fresh.std[j]):.6g}: resume on the run's data (or start "
                              "a new run)")
    from .data import checksums_differ

    saved = t.get("checksums")
    if isinstance(saved, dict) and checksums is not None:
        for k, what in SPLIT_ARRAYS.items():
            if checksums_differ(saved.get(k), checksums[k]):
                raise ConfigError(f"the data are not those the run was trained on: the "
                                  f"{what} differ (another file, changed rows, or rows in "
                                  "another order): resume on the run's data (or start a new "
                                  "run)")


#: what ``fit`` can monitor, and the task each needs (None: any)
MONITORS = {"val_loss": None, "val_accuracy": "classification", "val_r2": "regression",
            "val_mse": "regression"}


def _options(config: dict) -> str:
    """A loss's config as "name (key value, ...)"."""
    rest = ", ".join(f"{k} {v}" for k, v in config.items() if k != "name")
    return f"{config.get('name')}" + (f" ({rest})" if rest else "")


def _listed_floats(values):
    return None if values is None else [float(v) for v in values]


def _listed(names, none: str) -> str:
    return none if names is None else ", ".join(map(str, names))


def figure(v, decimals=4) -> str:
    """A metric for a line of text: ``decimals`` places; where that would show a small one as
    0 (a squared error of targets around 1e-8), as many significant digits; from 1e4 up (a
    squared error of prices), ``decimals`` + 4 significant digits, not decimals of noise."""
    v = float(v)
    if math.isfinite(v) and abs(v) >= 1e4:
        return f"{v:.{decimals + 4}g}"
    if v == 0 or not math.isfinite(v) or abs(v) >= 10.0 ** -(decimals - 1):
        return f"{v:.{decimals}f}"
    return f"{v:.{decimals}g}"


def _summary(row, epochs) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_mse", "val_r2"):
        if k in row:
            parts.append(f"{k} {figure(row[k])}")
    parts.append(f"lr {row['lr']:.3g}")
    parts.append(f"{row['seconds']:.2f}s")
    return "  ".join(parts)
