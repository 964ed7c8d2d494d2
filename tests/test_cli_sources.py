"""Every data source trains from the command line, and the checkpoint evaluates and predicts.

The files are small and made here: CSV, .npz, a .npy pair and MNIST-format IDX files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from test_data_sources import make_mnist, write_csv


def _source(kind, tmp_path):
    """(data flags, number of feature columns) for one kind of source."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4))
    labels = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)
    if kind == "csv":
        rows = [[*map(float, r), int(t)] for r, t in zip(x, labels)]
        write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "label"], rows)
        return ["--dataset", str(tmp_path / "d.csv"), "--target", "label"], 4
    if kind == "npz":
        np.savez(tmp_path / "d.npz", feats=x, y=labels)
        return ["--dataset", str(tmp_path / "d.npz"), "--x-key", "feats"], 4
    if kind == "npy":
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", x[:, 0] * 2 - x[:, 3])
        return ["--dataset", str(tmp_path / "x.npy"), "--target", str(tmp_path / "y.npy")], 4
    if kind == "mnist":
        make_mnist(tmp_path / "m", gz=True)
        return ["--dataset", "mnist", "--data-dir", str(tmp_path / "m")], None
    if kind in ("moons", "spirals", "sine"):
        return ["--dataset", kind, "--samples", "120", "--noise", "0.1"], 3 if kind == "sine" else 2
    return ["--dataset", kind], None


KINDS = ["digits", "iris", "wine", "breast_cancer", "diabetes", "moons", "spirals", "sine",
         "csv", "npz", "npy", "mnist"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_source_trains_evaluates_and_predicts(kind, tmp_path, capsys):
    flags, n_features = _source(kind, tmp_path)
    ckpt, metrics = tmp_path / "c.npz", tmp_path / "m.json"
    assert main(["train", *flags, "--epochs", "2", "--hidden", "8", "--quiet", "--backend",
                 "numpy", "--save", str(ckpt), "--metrics-json", str(metrics)]) == 0
    trained = json.loads(metrics.read_text())
    key = "test_accuracy" if trained["task"] == "classification" else "test_mse"
    assert key in trained and np.isfinite(trained[key]) and len(trained["history"]) == 2

    evaluated = tmp_path / "e.json"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--backend", "numpy",
                 "--metrics-json", str(evaluated)]) == 0
    assert json.loads(evaluated.read_text())[key] == pytest.approx(trained[key], rel=1e-6)

    if n_features is not None:
        assert load_checkpoint(ckpt).header["model"]["sizes"][0] == n_features
        new = np.random.default_rng(1).normal(size=(5, n_features))
        np.save(tmp_path / "new.npy", new)
        assert main(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "new.npy"),
                     "--output", str(tmp_path / "p.csv")]) == 0
        lines = (tmp_path / "p.csv").read_text().splitlines()
        assert len(lines) == 6
        if trained["task"] == "classification":
            header = lines[0].split(",")
            assert header[0] == "label" and header[1] == "p_0"
            probs = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)[:, 1:]
            np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
        else:
            assert lines[0] == "y0"


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "wine", "--loss", "bce"], "needs one output"),
    (["--dataset", "diabetes", "--loss", "cross_entropy"], "diabetes is a regression dataset"),
    (["--dataset", "iris", "--loss", "mse", "--task", "classification"], "mse"),
])
def test_a_loss_that_does_not_fit_the_task_is_one_line(flags, message, capsys):
    assert main(["train", *flags, "--epochs", "1", "--quiet", "--backend", "numpy"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpunet: error:") and message in err[0]


CUPY_OK, CUPY_WHY = __import__("gpunet").cupy_status()


@pytest.mark.gpu
@pytest.mark.skipif(not CUPY_OK, reason=f"needs the cupy backend: {CUPY_WHY}")
@pytest.mark.parametrize("trained_on, evaluated_on", [("numpy", "cupy"), ("cupy", "numpy")])
def test_a_checkpoint_evaluates_on_the_other_backend(trained_on, evaluated_on, tmp_path):
    ckpt, m1, m2 = tmp_path / "c.npz", tmp_path / "t.json", tmp_path / "e.json"
    assert main(["train", "--dataset", "digits", "--epochs", "3", "--quiet", "--backend",
                 trained_on, "--save", str(ckpt), "--metrics-json", str(m1)]) == 0
    assert main(["evaluate", "--checkpoint", str(ckpt), "--backend", evaluated_on,
                 "--metrics-json", str(m2)]) == 0
    a, b = json.loads(m1.read_text()), json.loads(m2.read_text())
    assert b["backend"] == evaluated_on
    assert b["test_accuracy"] == a["test_accuracy"]
    assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-5)


def test_predict_on_a_csv_of_only_the_target_column_says_what_was_left_out(tmp_path, capsys):
    """predict leaves the run's target column out of its input; a file that holds nothing else
    says so (it said "besides the target None": predict has no target)."""
    flags, _ = _source("csv", tmp_path)
    ckpt = tmp_path / "c.npz"
    assert main(["train", *flags, "--epochs", "1", "--hidden", "4", "--quiet", "--backend",
                 "numpy", "--save", str(ckpt)]) == 0
    capsys.readouterr()
    write_csv(tmp_path / "only.csv", ["label"], [[0], [1]])
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "only.csv"),
                 "--output", str(tmp_path / "p.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gpunet: error: {tmp_path / 'only.csv'}: no feature columns besides the "
                   "column left out ('label')"]
