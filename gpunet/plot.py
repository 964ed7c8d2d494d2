"""A picture of a training run: loss and metric curves (train and validation), and for
classification a confusion matrix of the test split. Drawn on matplotlib's Agg canvas, without
pyplot: no display is needed, and a session's own backend and figures are left alone (nor can
an MPLBACKEND that matplotlib refuses stop the picture)."""

from __future__ import annotations

import io
import os
import sys

import numpy as np

from .errors import ConfigError


#: the most classes a confusion matrix's axes name (past it, every second, third, ...)
MAX_LABELS = 15
#: the longest class name a confusion matrix shows whole (longer: cut, with an ellipsis)
MAX_NAME = 16


def _short(name):
    """``name``, or its start and end around an ellipsis (names often differ at the end)."""
    if len(name) <= MAX_NAME:
        return name
    tail = (MAX_NAME - 1) // 3
    return name[:MAX_NAME - 1 - tail] + "\u2026" + name[-tail:]


def _not_finite(epochs, values):
    """What the legend says of a curve's NaN and infinite points, which matplotlib leaves
    out: " (non-finite from epoch 4)", " (non-finite at epochs 2, 5)", or ""."""
    bad = [e for e, v in zip(epochs, values) if not np.isfinite(v)]
    if not bad:
        return ""
    if bad == list(epochs[len(epochs) - len(bad):]):
        return f" (non-finite from epoch {bad[0]})"
    listed = ", ".join(map(str, bad[:3])) + (", ..." if len(bad) > 3 else "")
    return f" (non-finite at epoch{'s' if len(bad) > 1 else ''} {listed})"


def check_matplotlib() -> None:
    """Import matplotlib, or raise a ConfigError saying in one line why it cannot be (the CLI
    asks before training, so that --plot does not fail only after it).

    MPLBACKEND names the backend pyplot shows figures with; a name matplotlib refuses fails
    its import. These pictures are drawn on an Agg canvas whatever it names, so the import is
    then made again without it (the environment is given it back).
    """
    try:
        import matplotlib  # noqa: F401
    except ValueError as e:
        backend = os.environ.get("MPLBACKEND")
        if not backend:
            raise ConfigError(f"matplotlib cannot be imported: {e}") from None
        # (a fresh import: the failed one left some of its submodules behind)
        for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
            del sys.modules[name]
        del os.environ["MPLBACKEND"]
        try:
            import matplotlib  # noqa: F401
        except Exception as e:
            raise ConfigError(f"matplotlib cannot be imported: {e}") from None
        finally:
            os.environ["MPLBACKEND"] = backend
    except ImportError as e:
        raise ConfigError(f"drawing a plot needs matplotlib, which cannot be imported ({e}): "
                          "pip install matplotlib") from None


def plot_history(history, path, confusion=None, title=None, class_names=None,
                 weights_epoch=None) -> None:
    """Write a picture of ``history`` (fit's per-epoch rows) to ``path`` atomically: a PDF or
    an SVG where the path ends so, else a PNG. The arguments are history_figure's.
    """
    from .checkpoint import atomic_write

    fig = history_figure(history, confusion=confusion, title=title, class_names=class_names,
                         weights_epoch=weights_epoch)
    buf = io.BytesIO()
    kind = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    fig.savefig(buf, format=kind if kind in ("pdf", "svg") else "png", dpi=100)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def history_figure(history, confusion=None, title=None, class_names=None, weights_epoch=None):
    """The matplotlib Figure (on an Agg canvas) that plot_history writes: loss and metric
    curves of ``history`` (fit's per-epoch rows) against the epoch.

    A curve's NaN or infinite points are not drawn; its legend says at which epochs.
    ``weights_epoch``: the epoch whose weights the run kept (early stopping's best, the
    metrics' ``weights_epoch``), marked by a dotted line where it is not the last.
    ``confusion``: counts[true, predicted] for a third panel (classification), its axes
    labelled with ``class_names`` when given (else 0..k-1): each class up to 15, every
    second, third, ... past that, and a name longer than 16 characters cut short (its start
    and end around an ellipsis).
    """
    # A Figure of its own on an Agg canvas: no pyplot, so neither the session's backend (a
    # notebook's inline one, say) nor its list of open figures is touched
    check_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    metric = next((m for m in ("accuracy", "r2", "mse")
                   if f"train_{m}" in history[0] or f"val_{m}" in history[0]), None)
    panels = 2 + (confusion is not None)
    fig = Figure(figsize=(5 * panels, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    curves = [("loss", axes[0])] + ([(metric, axes[1])] if metric else [])
    for name, ax in curves:
        # a split's colour and style are its own in every panel (a regression's r2 panel has
        # no train curve: left to matplotlib's cycle, validation took train's blue there)
        for split, style, color in (("train", "-", "C0"), ("val", "--", "C1")):
            key = f"{split}_{name}"
            if key in history[0]:
                values = np.array([r[key] for r in history], dtype=np.float64)  # (None: NaN)
                label = "validation" if split == "val" else split
                ax.plot(epochs, values, style, color=color, marker="o", markersize=3,
                        label=label + _not_finite(epochs, values))
        if weights_epoch is not None and weights_epoch != epochs[-1]:
            ax.axvline(weights_epoch, color="0.3", linestyle=":",
                       label=f"weights kept (epoch {weights_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # (no epoch 2.5)
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if not metric:
        axes[1].axis("off")
    if confusion is not None:
        ax = axes[-1]
        counts = np.asarray(confusion)
        im = ax.imshow(counts, cmap="Blues")
        k = counts.shape[0]
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if counts[i, j] > counts.max() / 2 else "black")
        # every class up to MAX_LABELS, past that every step-th (each class keeps a minor
        # tick): 40 labels ran together; a name is cut short, in the picture only, where a
        # long one would squeeze the matrix and push its title off the figure
        names = class_names if class_names is not None and len(class_names) == k \
            else range(k)
        names = [_short(str(c)) for c in names]
        step = -(-k // MAX_LABELS)
        shown = range(0, k, step)
        size = 10 if k <= 10 else 8
        ax.set_xticks(shown, [names[i] for i in shown], rotation=45, ha="right", fontsize=size)
        ax.set_yticks(shown, [names[i] for i in shown], fontsize=size)
        if step > 1:
            ax.set_xticks(range(k), minor=True)
            ax.set_yticks(range(k), minor=True)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        acc = np.trace(counts) / max(counts.sum(), 1)
        ax.set_title(f"test confusion matrix (accuracy {acc:.3f})")
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig
