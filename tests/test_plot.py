"""gpunet.plot: the Figure a run's picture is drawn from, looked at through its axes."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex

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
