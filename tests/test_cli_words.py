"""The command's errors in the words the user typed: flags, not the Python API's names."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.cli import main

BASE = ["train", "--backend", "numpy", "--quiet", "--epochs", "1"]


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A CSV (columns id, batch_size, price), an .npz (arrays features, labels) and an .npy of
    features, in the working folder (returned)."""
    monkeypatch.chdir(tmp_path)
    rows = "\n".join(f"{i},{i % 3},{2.5 * i}" for i in range(30))
    (tmp_path / "houses.csv").write_text("id,batch_size,price\n" + rows + "\n")
    np.savez(tmp_path / "arrays.npz", features=np.zeros((30, 2)), labels=np.arange(30) % 2)
    np.save(tmp_path / "arrays.npy", np.zeros((30, 2)))
    (tmp_path / "small.csv").write_text("a,t\n1,0\n2,1\n")
    return tmp_path


# each: the flags, and the error line the Python API's message became
@pytest.mark.parametrize("flags, line", [
    # was: ... but val_fraction 0.1 and test_fraction 0.2 need at least 3
    (["--dataset", "small.csv", "--target", "t"],
     "small.csv: 2 samples, but --val-fraction 0.1 and --test-fraction 0.2 need at least 3 "
     "(one training row and one per held-out split)"),
    (["--dataset", "iris", "--x-key", "feats"],
     "--x-key applies to .npz datasets, not to 'iris'"),  # was: x_key applies ...
    (["--dataset", "iris", "--y-key", "labels"],
     "--y-key applies to .npz datasets, not to 'iris'"),
    (["--dataset", "iris", "--data-dir", "."],
     "--data-dir applies to mnist and fashion_mnist, not to 'iris'"),
    (["--dataset", "iris", "--fill-missing", "mean"],
     "--fill-missing applies to .csv datasets, not to 'iris'"),
    (["--dataset", "iris", "--weight-column", "w"],
     "--weight-column applies to .csv datasets, not to 'iris'"),
    (["--dataset", "iris", "--drop-missing"],
     "--drop-missing applies to .csv datasets, not to 'iris'"),
    (["--dataset", "iris", "--ignore", "id"], "--ignore applies to .csv datasets, not to 'iris'"),
    # was: target applies to .csv and .npy datasets, not to 'arrays.npz'
    (["--dataset", "arrays.npz", "--target", "labels"],
     "--target applies to .csv and .npy datasets, not to 'arrays.npz' (an .npz names its "
     "targets' array with --y-key)"),
    # was: target must be a column's name, or a list of two or more different names, got [...]
    (["--dataset", "houses.csv", "--target", "price", "--target", "price"],
     "--target must name each column once; 'price' is named twice"),
    (["--dataset", "houses.csv", "--target", "price", "--ignore", "id", "--ignore", "id"],
     "--ignore must name each column once; 'id' is named twice"),
    # was: ... unless given: --task regression, or DataSpec(task=...))
    (["--dataset", "iris", "--monitor", "val_r2", "--patience", "2"],
     "val_r2 is a regression figure; this is a classification task: monitor val_loss or "
     "val_accuracy (a data file's task is read off its targets unless given: --task "
     "regression)"),
    (["--dataset", "iris", "--test-fraction", "0.95"],
     "--val-fraction + --test-fraction must be below 1 to leave training rows, got 0.1 + 0.95"),
    (["--dataset", "iris", "--momentum", "0.9"],
     "--momentum applies to the sgd optimizer, not adam"),
    # was: mnist needs data_dir (--data-dir): ...
    (["--dataset", "mnist"],
     "mnist needs --data-dir: the folder of train-images-idx3-ubyte, train-labels-idx1-ubyte, "
     "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each plain or .gz)"),
    # was: ... (each plain or .gz) in data_dir; a path holding a setting's name is kept
    (["--dataset", "mnist", "--data-dir", "no/data_dir"],
     "no/data_dir: no such folder; mnist expects the four IDX files train-images-idx3-ubyte, "
     "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each plain or "
     ".gz) in --data-dir"),
    # was: x.npy: a .npy dataset needs target (--target): ...
    (["--dataset", "arrays.npy"],
     "arrays.npy: a .npy dataset needs --target: the path of the targets' .npy file"),
    # a column's name in quotes is the user's own, even where it is a setting's
    (["--dataset", "houses.csv", "--target", "batch_size", "--ignore", "batch_size"],
     "column 'batch_size' cannot be ignored: it is the target"),
    # and so is a listing of the file's columns, quoted or not
    (["--dataset", "houses.csv", "--target", "nope"],
     "houses.csv: no column 'nope'; columns: id, batch_size, price"),
    (["--dataset", "mnist", "--data-dir", "batch_size"],
     "batch_size: no such folder; mnist expects the four IDX files train-images-idx3-ubyte, "
     "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each plain or "
     ".gz) in --data-dir"),
])
def test_errors_name_the_flags_the_user_typed(files, capsys, flags, line):
    assert main([*BASE, *flags]) == 1
    assert capsys.readouterr().err.splitlines() == [f"gpunet: error: {line}"]


def test_the_python_api_keeps_its_own_names():
    """The same checks, called from Python, still name DataSpec's fields."""
    with pytest.raises(gn.ConfigError, match=r"^val_fraction must lie in \[0, 1\), got 1.5$"):
        gn.load_data(gn.DataSpec("iris", val_fraction=1.5))
    with pytest.raises(gn.ConfigError, match=r"^target must name each column once; 'a' is "
                                             r"named twice$"):
        gn.load_data(gn.DataSpec("x.csv", target=["a", "b", "a"]))



@pytest.mark.parametrize("dataset, loss, line, then", [
    # was: "... ; pass --task classification to force it", which then failed with "class
    # labels must be integers, but row 0 holds 1.84538"
    ("sine", "cross_entropy",
     "loss cross_entropy needs a classification task, but sine is a regression dataset; its "
     "targets are not class labels (whole numbers >= 0): use a regression loss (mse or huber)",
     ["--loss", "mse"]),
    ("sine", "bce",
     "loss bce needs a classification task, but sine is a regression dataset; its targets are "
     "not class labels (whole numbers >= 0): use a regression loss (mse or huber)",
     ["--loss", "huber"]),
    # whole numbers >= 0 can be forced into classes, and numbers into a regression: said so
    ("diabetes", "cross_entropy",
     "loss cross_entropy needs a classification task, but diabetes is a regression dataset; "
     "pass --task classification to force it", ["--loss", "cross_entropy", "--task",
                                                "classification"]),
    ("digits", "mse",
     "loss mse needs a regression task, but digits is a classification dataset; pass --task "
     "regression to force it", ["--loss", "mse", "--task", "regression"]),
])
def test_a_loss_of_the_other_task_suggests_what_works(capsys, dataset, loss, line, then):
    assert main([*BASE, "--dataset", dataset, "--loss", loss]) == 1
    assert capsys.readouterr().err.splitlines() == [f"gpunet: error: {line}"]
    assert main([*BASE, "--dataset", dataset, *then]) == 0  # (it works)


@pytest.mark.parametrize("flags, line", [
    # was: "no column 'targte'; columns: feature_000, ..., feature_009, ... (401 in all)"
    (["--dataset", "wide.csv", "--target", "targte"],
     "wide.csv: no column 'targte' (did you mean 'target'?); columns: "
     + ", ".join(f"feature_{j:03d}" for j in range(10)) + ", ..., target (401 in all)"),
    (["--dataset", "houses.csv", "--target", "Price"],
     "houses.csv: no column 'Price' (did you mean 'price'?); columns: id, batch_size, price"),
    (["--dataset", "houses.csv", "--target", "price", "--ignore", "ID"],
     "houses.csv: no column 'ID' to ignore (did you mean 'id'?); columns: id, batch_size, "
     "price"),
    (["--dataset", "houses.csv", "--target", "price", "--weight-column", "batchsize"],
     "houses.csv: no weight column 'batchsize' (did you mean 'batch_size'?); columns: id, "
     "batch_size, price"),
    (["--dataset", "houses.csv", "--target", "nothing_like_it"],
     "houses.csv: no column 'nothing_like_it'; columns: id, batch_size, price"),
])
def test_a_misspelt_column_is_matched_to_the_nearest(files, capsys, flags, line):
    (files / "wide.csv").write_text(
        ",".join([*(f"feature_{j:03d}" for j in range(400)), "target"]) + "\n"
        + "".join(",".join(["1"] * 401) + "\n" for _ in range(5)))
    assert main([*BASE, *flags]) == 1
    assert capsys.readouterr().err.splitlines() == [f"gpunet: error: {line}"]


def test_predict_keep_of_a_misspelt_column_names_the_nearest(files, capsys):
    assert main([*BASE, "--dataset", "houses.csv", "--target", "price", "--ignore", "id",
                 "--save", "run.npz"]) == 0
    capsys.readouterr()
    assert main(["predict", "--checkpoint", "run.npz", "--input", "houses.csv", "--output",
                 "p.csv", "--keep", "Id", "--backend", "numpy"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "gpunet: error: houses.csv: no column 'Id' (did you mean 'id'?); columns: id, "
        "batch_size, price"]


def test_predict_on_a_semicolon_separated_file_says_so(files, capsys):
    """A European CSV (fields separated by ';') given to predict said only "missing: 'id',
    'batch_size'; unexpected: 'id;batch_size;price'"; train and evaluate named the separator."""
    assert main([*BASE, "--dataset", "houses.csv", "--target", "price", "--save",
                 "run.npz"]) == 0
    text = (files / "houses.csv").read_text().replace(",", ";")
    (files / "semi.csv").write_text(text)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", "run.npz", "--input", "semi.csv", "--output",
                 "p.csv", "--backend", "numpy"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "gpunet: error: semi.csv: one column, 'id;batch_size;price': a file of fields "
        "separated by ';'? gpunet reads commas: save it as comma-separated CSV"]
