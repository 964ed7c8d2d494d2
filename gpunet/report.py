"""Per-class and per-target figures of a model on a set of rows, for ``gpunet evaluate
--report`` and ``gpunet train --report``: scikit-learn's classification report (precision,
recall, F1 and support of each class or label, their averages) and confusion matrix, or each
regression target's MAE, RMSE and R^2 in the targets' own units. Every row counts once (as evaluate's accuracy, MSE and R^2;
sample weights weight only the loss)."""

from __future__ import annotations

import numpy as np

from .model import as_inputs
from .train import _in_units, _labels, predicted_classes


def evaluation_report(model, x, y, task, *, names=None, n_classes=None, target=None,
                      batch_size=4096) -> dict:
    """The report of ``model`` on (x, y), as JSON takes it, with its ``text`` for a terminal.

    ``y``: class labels 0..k-1 (n,), multilabel targets (n, labels) of 0/1, or regression
    targets (standardised with ``target``, a Standardizer, where the model was trained so).
    ``names``: the classes', labels' or targets' names (default 0..k-1, or "target j").
    ``n_classes``: how many classes the model has (default: one an output); a model with more
    outputs reports those it predicts as "output j" classes of no support. A class neither in
    y nor predicted is left out of the rows, the averages and the matrix, as scikit-learn's
    report leaves it, and named under ``"absent"``.
    Classification: ``{"classes": scikit-learn's classification_report as a dict,
    "confusion": counts[true][predicted]`` and ``"confusion_classes"``, its rows' names (not
    for multilabel), ``"text"}``; regression:
    ``{"targets": {name: {"mae", "rmse", "r2"}}, "text"}``.
    """
    from sklearn import metrics

    backend = model.backend
    y_hat = model.predict(as_inputs(model, x), batch_size=batch_size)
    if task == "classification":
        y = _labels(y)
        multilabel = y.ndim == 2
        predicted = backend.to_host(predicted_classes(model, y_hat, multilabel))
        absent = []
        if multilabel:
            labels = list(range(y.shape[1]))
            k = len(labels)
        else:
            k = n_classes or (len(names) if names is not None else max(model.sizes[-1], 2))
            labels = list(range(k)) + sorted(set(np.unique(predicted).tolist()) - set(range(k)))
            # a class neither in the labels nor predicted is left out, as scikit-learn's
            # report leaves it (its zeros pulled the macro average down), and named below
            present = set(np.unique(y).tolist()) | set(np.unique(predicted).tolist())
            absent = [j for j in labels if j not in present]
            labels = [j for j in labels if j in present]
        def name(j):
            return str(names[j]) if names is not None and j < len(names) else \
                str(j) if names is None and j < k else f"output {j}"

        absent = [name(j) for j in absent]
        names = [name(j) for j in labels]
        kw = {"labels": labels, "target_names": names, "zero_division": 0}
        out = {"classes": metrics.classification_report(y, predicted, output_dict=True, **kw)}
        text = metrics.classification_report(y, predicted, digits=4, **kw)
        if absent:
            out["absent"] = absent
            text += (f"\nnot in these rows nor predicted, so left out (as scikit-learn leaves "
                     f"them): {', '.join(absent[:20])}"
                     + (f", ... ({len(absent)} in all)" if len(absent) > 20 else "") + "\n")
        if not multilabel:
            counts = metrics.confusion_matrix(y, predicted, labels=labels)
            out["confusion"] = counts.tolist()
            out["confusion_classes"] = names
            text += "\nconfusion matrix (rows: true class, columns: predicted)\n" \
                + _table([""] + names, [[n, *row] for n, row in zip(names, counts)])
        out["text"] = text
        return out
    y_hat, y = _in_units(backend.to_host(y_hat), y, target)
    y_hat, y = y_hat.reshape(len(y_hat), -1), y.reshape(len(y), -1)
    names = [str(c) for c in (names if names is not None else
                              (f"y{j}" for j in range(y.shape[1])))]  # (predict's heads)
    figures = {
        "mae": metrics.mean_absolute_error(y, y_hat, multioutput="raw_values"),
        "rmse": np.sqrt(metrics.mean_squared_error(y, y_hat, multioutput="raw_values")),
        "r2": metrics.r2_score(y, y_hat, multioutput="raw_values") if len(y) > 1
        else np.full(y.shape[1], np.nan),
    }
    targets = {n: {k: float(v[j]) for k, v in figures.items()} for j, n in enumerate(names)}
    text = _table(["target", "MAE", "RMSE", "R2"],
                  [[n, *(f"{v:.6g}" for v in row.values())] for n, row in targets.items()])
    return {"targets": targets, "text": text}


def _table(header, rows) -> str:
    """Columns right-aligned to their widest cell, the first left-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                               for j, (c, w) in enumerate(zip(r, widths))) for r in cells) + "\n"
