"""The training loop: seeded shuffled mini-batches, per-epoch metrics, optional checkpoints.

``fit`` is what ``gpunet train`` runs; the command line only parses flags around it.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from .checkpoint import save_checkpoint
from .errors import ConfigError, ShapeError
from .losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Loss

#: loss name -> output activation it is meant to follow
OUTPUT_FOR_LOSS = {"cross_entropy": "identity", "mse": "identity", "bce": "sigmoid",
                   "bce_logits": "identity"}


def prepare_targets(y, task, loss_fn, n_outputs):
    """Targets in the form ``loss_fn`` takes: int labels for cross-entropy, a float column of
    0/1 for binary cross-entropy on one output, float values for regression."""
    if task == "classification":
        if isinstance(loss_fn, CrossEntropyLoss):
            return y
        if isinstance(loss_fn, (BCELoss, BCEWithLogitsLoss)):
            if n_outputs != 1:
                raise ConfigError(
                    f"{loss_fn.name} on a classification task needs one output (two classes); "
                    f"this model has {n_outputs} outputs: use cross_entropy"
                )
            return y.astype(np.float64).reshape(-1, 1)
        raise ConfigError(
            f"loss {loss_fn.name} does not fit classification; use cross_entropy, bce or bce_logits"
        )
    if isinstance(loss_fn, CrossEntropyLoss):
        raise ConfigError("cross_entropy needs class labels; this is a regression task: use mse")
    return y


def metrics(model, x, y, loss_fn, task, batch_size=4096) -> dict:
    """Loss and accuracy (classification) or MSE and R^2 (regression) of ``model`` on (x, y)."""
    backend = model.backend
    y_hat = model.predict(x, batch_size=batch_size)
    value, _ = loss_fn(y_hat, y)
    out = {"loss": backend.scalar(value)}
    y_hat = backend.to_host(y_hat).astype(np.float64)
    y = np.asarray(y)
    if task == "classification":
        pred = (y_hat[:, 0] > (0.5 if model.output == "sigmoid" else 0.0)).astype(np.int64) \
            if y_hat.shape[1] == 1 else y_hat.argmax(axis=1)
        out["accuracy"] = float((pred == y.reshape(-1)).mean())
    else:
        err = ((y_hat - y) ** 2).mean()
        var = ((y - y.mean(axis=0)) ** 2).mean()
        out["mse"] = float(err)
        out["r2"] = float(1 - err / var) if var > 0 else float("nan")
    return out


def fit(model, data, loss_fn: Loss, optimizer, *, epochs=10, batch_size=32, seed=0,
        progress=None, save=None, log=None):
    """Train ``model`` on ``data`` (a gpunet.data.Dataset) and return the per-epoch history.

    Each epoch draws a permutation of the training set from ``numpy.random.default_rng(seed)``
    (one generator for the whole run), steps through it in mini-batches (the last one may be
    smaller), then measures the training loss and the test metrics. ``progress``: a tqdm bar
    per epoch (None: only when stderr is a terminal). ``save``: a checkpoint path written
    atomically after every epoch. ``log``: a callable taking one line per epoch.
    """
    from tqdm.auto import tqdm

    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
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
    backend = model.backend
    y_train = prepare_targets(data.y_train, data.task, loss_fn, n_out)
    y_test = prepare_targets(data.y_test, data.task, loss_fn, n_out)
    if isinstance(loss_fn, CrossEntropyLoss):
        loss_fn.check_labels = False  # labels were validated when the dataset was made
    x_dev = backend.asarray(data.x_train, dtype=model.dtype)
    y_dev = backend.asarray(y_train, dtype=model.dtype if y_train.dtype.kind == "f" else None)
    n = x_dev.shape[0]
    rng = np.random.default_rng(seed)
    history = []
    show = sys.stderr.isatty() if progress is None else progress

    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        perm = backend.asarray(rng.permutation(n))
        steps = range(0, n, batch_size)
        bar = tqdm(steps, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not show,
                   unit="batch")
        total = 0.0
        for start in bar:
            idx = perm[start:start + batch_size]
            value = model.train_step(x_dev[idx], y_dev[idx], loss_fn, optimizer)
            total = total + value * idx.shape[0]  # stays on the device: no sync per step
        train_loss = backend.scalar(total) / n
        row = {"epoch": epoch, "train_loss": train_loss, "seconds": time.perf_counter() - t0}
        row.update({f"test_{k}": v for k, v in metrics(model, data.x_test, y_test, loss_fn,
                                                        data.task).items()})
        history.append(row)
        if log is not None:
            log(_summary(row, epochs))
        if save is not None:
            save_checkpoint(save, model, optimizer, epoch=epoch, standardizer=data.standardizer,
                            extra={"dataset": data.name, "task": data.task,
                                   "split": data.split, "history": history})
    return history


def _summary(row, epochs) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    for k in ("test_loss", "test_accuracy", "test_mse", "test_r2"):
        if k in row:
            parts.append(f"{k} {row[k]:.4f}")
    parts.append(f"{row['seconds']:.2f}s")
    return "  ".join(parts)
