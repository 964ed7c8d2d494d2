"""gpunet.plot: the Figure a run's picture is drawn from, looked at through its axes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.colors import to_hex

from gpunet.cli import main
from gpunet.plot import history_figure


def _rows(n, task="classification", **columns):
    """``n`` epochs of fit's rows; ``columns``: a key's values, replacing the made-up ones."""
    rows = []
    for e in range(1, n + 1):
        row = {"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "val_loss": 1.2 / e}
        if task == "classification":
            row.update(train_accuracy=0.5 + e / 100, val_accuracy=0.4 + e / 100)
        else:
            row.update(val_mse=1.1 / e, val_r2=1 - 1.1 / e)
        rows.append(row)
    for key, values in columns.items():
        for row, v in zip(rows, values):
            row[key] = v
    return rows


def _curves(ax):
    """The data lines of an axes (not the grid's), by their legend label."""
    return {line.get_label(): line for line in ax.get_lines()
            if not line.get_label().startswith("_")}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 17])
def test_short_runs_tick_the_epoch_axis_at_whole_epochs(n):
    """(matplotlib's default ticked 1 epoch at 0.96..1.04, 3 at 1, 1.5, ..., 17 at 2.5, 5, 7.5)"""
    fig = history_figure(_rows(n))
    for ax in fig.axes[:2]:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert len(ticks) >= min(n, 2)
        assert all(float(t).is_integer() for t in ticks), ticks


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_each_split_has_one_colour_and_style_in_every_panel(task):
    """(a regression's r2 panel has no train curve: its validation curve was drawn in the
    loss panel's train blue)"""
    fig = history_figure(_rows(4, task))
    lines = [_curves(ax) for ax in fig.axes[:2]]
    assert set(lines[0]) == {"train", "validation"}
    assert "validation" in lines[1]
    for split in ("train", "validation"):
        drawn = [ls[split] for ls in lines if split in ls]
        assert len({(to_hex(line.get_color()), line.get_linestyle()) for line in drawn}) == 1
    assert to_hex(lines[0]["train"].get_color()) != to_hex(lines[0]["validation"].get_color())


def _confusion(k):
    rng = np.random.default_rng(0)
    return rng.integers(0, 5, (k, k)) + 20 * np.eye(k, dtype=int)


def _labels(fig, axis):
    """The confusion matrix's labelled ticks on ``axis`` ("x" or "y"), drawn: [(text, box)]."""
    fig.canvas.draw()
    ax, renderer = fig.axes[2], fig.canvas.get_renderer()
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [(t.get_text(), t.get_window_extent(renderer)) for t in labels if t.get_text()]


def test_forty_classes_label_a_readable_subset_of_the_confusion_matrix():
    """(all 40 names were written on each axis, on top of one another)"""
    names = np.array([f"category_{i:02d}" for i in range(40)])
    fig = history_figure(_rows(3), confusion=_confusion(40), class_names=names)
    ys, xs = _labels(fig, "y"), _labels(fig, "x")
    assert 5 <= len(ys) <= 20
    assert [t for t, _ in xs] == [t for t, _ in ys]
    assert {t for t, _ in ys} <= set(names) and ys[0][0] == "category_00"
    boxes = [box for _, box in ys]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
    # (the x labels are slanted: their boxes overlap while the text does not; their centres
    # are a line's height apart)
    centres = [box.x0 + box.width / 2 for _, box in xs]
    assert min(np.diff(centres)) > 1.2 * boxes[0].height
    ax = fig.axes[2]  # each class keeps a tick (the unnamed a minor one)
    for ticks in (ax.get_xticks, ax.get_yticks):
        assert sorted({*ticks(), *ticks(minor=True)}) == list(range(40))


def test_long_class_names_are_cut_short_in_the_picture_and_the_title_stays_on_it():
    """(five names of 30 characters squeezed the matrix and pushed its title off the figure)"""
    names = np.array([f"a very long class name number {i}" for i in range(5)])
    fig = history_figure(_rows(3), confusion=_confusion(5), class_names=names, title="a run")
    shown = [t for t, _ in _labels(fig, "y")]
    assert len(set(shown)) == 5 and all(len(t) <= 16 and "\u2026" in t for t in shown)
    assert [t[-1] for t in shown] == list("01234")  # (the end, which tells them apart, kept)
    assert [t for t, _ in _labels(fig, "x")] == shown
    title = fig.axes[2].title.get_window_extent(fig.canvas.get_renderer())
    assert fig.bbox.x0 <= title.x0 and title.x1 <= fig.bbox.x1


def test_a_few_short_class_names_are_all_written_whole():
    fig = history_figure(_rows(3), confusion=_confusion(3), class_names=np.array(["ant", "bee",
                                                                                   "cat"]))
    assert [t for t, _ in _labels(fig, "y")] == ["ant", "bee", "cat"]
    assert [t for t, _ in _labels(fig, "x")] == ["ant", "bee", "cat"]


def test_the_epoch_whose_weights_were_kept_is_marked_unless_it_is_the_last():
    fig = history_figure(_rows(6), weights_epoch=3)
    for ax in fig.axes[:2]:
        kept = _curves(ax)["weights kept (epoch 3)"]
        assert list(kept.get_xdata()) == [3, 3] and kept.get_linestyle() == ":"
        assert "weights kept (epoch 3)" in [t.get_text() for t in ax.get_legend().get_texts()]
    for weights_epoch in (6, None):
        fig = history_figure(_rows(6), weights_epoch=weights_epoch)
        assert set(_curves(fig.axes[0])) == {"train", "validation"}


def test_train_marks_the_epoch_early_stopping_kept_on_its_plot(tmp_path):
    """(the metrics' weights_epoch; the picture had no sign that the curves' last epoch was
    not the model's)"""
    svg, metrics = tmp_path / "run.svg", tmp_path / "m.json"
    assert main(["train", "--dataset", "iris", "--epochs", "40", "--patience", "2", "--lr",
                 "0.5", "--quiet", "--backend", "numpy", "--metrics-json", str(metrics),
                 "--plot", str(svg)]) == 0
    result = json.loads(metrics.read_text())
    assert result["stopped_early"] and result["weights_epoch"] < result["epochs"]
    # (matplotlib's SVG draws text as paths, each after a comment of its text)
    assert svg.read_text().count(f"<!-- weights kept (epoch {result['weights_epoch']}) -->") \
        == 2


@pytest.mark.parametrize("values, said", [
    ([0.9, 0.5, 0.4, np.nan, np.inf, np.nan], "validation (non-finite from epoch 4)"),
    ([0.9, np.inf, 0.4, 0.3, 0.3, 0.2], "validation (non-finite at epoch 2)"),
    ([0.9, np.nan, 0.4, np.nan, np.nan, 0.2], "validation (non-finite at epochs 2, 4, 5)"),
    ([0.9, None, 0.4, 0.3, 0.3, 0.2], "validation (non-finite at epoch 2)"),  # (JSON's null)
])
def test_a_curve_says_where_its_points_were_not_finite(values, said):
    """(matplotlib leaves NaN and inf out of a line: a diverged run's curve just stopped)"""
    fig = history_figure(_rows(6, val_loss=values))
    loss, accuracy = (_curves(ax) for ax in fig.axes[:2])
    assert set(loss) == {"train", said}
    assert said in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert set(accuracy) == {"train", "validation"}  # (its curves are whole)
    assert np.isfinite(fig.axes[0].get_ylim()).all()


def _train_in_a_process(tmp_path, before="", env=None):
    code = (f"import sys\n{before}\nfrom gpunet.cli import main\n"
            f"sys.exit(main(['train', '--dataset', 'iris', '--epochs', '2', '--backend', "
            f"'numpy', '--plot', {str(tmp_path / 'run.png')!r}]))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_an_mpl_backend_that_matplotlib_refuses_does_not_stop_the_plot(tmp_path):
    """(MPLBACKEND=bogus failed matplotlib's import: a traceback once the run was over, and
    no picture; the picture is drawn on an Agg canvas whatever MPLBACKEND says)"""
    proc = _train_in_a_process(tmp_path, env={"MPLBACKEND": "bogus"})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "test accuracy" in proc.stdout
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_says_it_cannot_plot_before_it_trains(tmp_path):
    """(matplotlib failing to import was a traceback after the whole run)"""
    proc = _train_in_a_process(tmp_path, "sys.modules['matplotlib'] = None  # (not importable)")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith("gpunet: error: drawing a plot needs "
                                                   "matplotlib")
    assert "Traceback" not in proc.stderr and "epoch 1/2" not in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "run.png").exists()
