"""gpunet predict and evaluate on a checkpoint: what they read, what they write, what they say
of the weights they take."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.cli import main


@pytest.fixture
def fitted_on_arrays(tmp_path):
    """(a classifier fitted on NumPy arrays, its checkpoint, the rows to predict on)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    clf = gn.MLPClassifier(hidden=(8,), epochs=3, backend="numpy", dtype="float64").fit(x, y)
    clf.save(tmp_path / "clf.npz")
    return clf, tmp_path / "clf.npz", x[:20]


def test_a_csv_without_a_header_row_is_refused_for_a_model_trained_on_arrays(
        fitted_on_arrays, tmp_path, capsys):
    """np.savetxt writes no header: predict took the first row's numbers for column names and
    wrote 19 predictions for 20 rows, each a row off. A first line of numbers is refused,
    saying how to add a header; with one (or pandas' default names 0..k-1) every row is
    predicted, as the estimator predicts the array."""
    clf, ck, x = fitted_on_arrays
    np.savetxt(tmp_path / "new.csv", x, delimiter=",")
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "new.csv"),
                 "--output", str(out), "--backend", "numpy"]) == 1
    err = capsys.readouterr().err
    assert "new.csv: its first line (" in err and "is numbers, not a header row" in err
    assert "np.savetxt(..., header=','.join(names), comments='')" in err
    assert "a model trained on arrays takes the columns by position" in err
    assert not out.exists()
    np.savetxt(tmp_path / "y.csv", np.column_stack([x, clf.predict(x)]), delimiter=",")
    assert main(["evaluate", "--checkpoint", str(ck), "--dataset", str(tmp_path / "y.csv"),
                 "--target", "0", "--backend", "numpy"]) == 1
    assert "y.csv: its first line (" in capsys.readouterr().err
    for header in ("a,b,c", "0,1,2"):
        np.savetxt(tmp_path / "new.csv", x, delimiter=",", header=header, comments="")
        assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "new.csv"),
                     "--output", str(out), "--backend", "numpy"]) == 0
        assert "wrote 20 predictions" in capsys.readouterr().err
        got = np.loadtxt(out, delimiter=",", skiprows=1)
        np.testing.assert_array_equal(got[:, 0], clf.predict(x))
