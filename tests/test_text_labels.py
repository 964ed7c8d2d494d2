"""Class labels given as text (a CSV column like iris.csv's species, a str array in .npz/.npy):
the classes are the sorted names, label k means classes[k], and the names travel through the
checkpoint to predict (which writes them), evaluate (which maps a file's names through the
model's, whatever names that file holds) and resume (which refuses other classes)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.datasets import load_iris

import gpunet as gn
from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.data import DataSpec, load_data, load_split

NAMES = np.array(["setosa", "versicolor", "virginica"])


def write_iris(path, rows=None, names=NAMES):
    """iris as a CSV with the species as text (the column order of the usual iris.csv)."""
    x, y = load_iris(return_X_y=True)
    rows = np.arange(len(y)) if rows is None else rows
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sepal_length", "sepal_width", "petal_length", "petal_width", "species"])
        for i in rows:
            w.writerow([*x[i], f" {names[y[i]]}"])  # a stray space, as hand-made files have
    return x[rows], names[y[rows]]


def test_a_text_target_column_is_read_as_named_classes(tmp_path):
    x, species = write_iris(tmp_path / "iris.csv")
    data = load_data(DataSpec(str(tmp_path / "iris.csv"), target="species"))
    assert data.task == "classification" and data.n_classes == 3
    np.testing.assert_array_equal(data.classes, NAMES)
    # every row's label is the index of its own name: check through the "all" split (file order)
    xa, ya, task, n = load_split(data.spec, "all", None)
    np.testing.assert_array_equal(xa, x)
    np.testing.assert_array_equal(NAMES[ya], species)
    assert (task, n) == ("classification", 3)


def test_names_sort_into_classes_whatever_their_order_in_the_file(tmp_path):
    names = np.array(["zebra", "ant", "moth"])  # class 0 of the file is "zebra"
    write_iris(tmp_path / "i.csv", names=names)
    data = load_data(DataSpec(str(tmp_path / "i.csv"), target="species"))
    np.testing.assert_array_equal(data.classes, ["ant", "moth", "zebra"])
    _, y, _, _ = load_split(data.spec, "all", None)
    np.testing.assert_array_equal(np.bincount(y), [50, 50, 50])
    np.testing.assert_array_equal(data.classes[y[:50]], ["zebra"] * 50)


def test_text_targets_from_array_files(tmp_path):
    x, y = load_iris(return_X_y=True)
    for labels in (NAMES[y], NAMES[y].astype("S")):  # str and bytes arrays
        np.savez(tmp_path / "d.npz", x=x, y=labels)
        data = load_data(DataSpec(str(tmp_path / "d.npz")))
        np.testing.assert_array_equal(data.classes, NAMES)
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", labels)
        same = load_data(DataSpec(str(tmp_path / "x.npy"), target=str(tmp_path / "y.npy")))
        np.testing.assert_array_equal(same.y_train, data.y_train)


@pytest.mark.parametrize("cells, message", [
    (["0", "1", "setosa"], r"target column 'y' mixes numbers \('0' at line 2\) and text "
                           r"\('setosa' at line 4\)"),
    (["setosa", "", "virginica"], r"line 3, target column 'y': missing value"),
])
def test_a_target_column_must_be_all_text_or_all_numbers(tmp_path, cells, message):
    path = tmp_path / "bad.csv"
    path.write_text("a,y\n" + "".join(f"{i}.5,{c}\n" for i, c in enumerate(cells)))
    with pytest.raises(gn.DataError, match=message):
        load_data(DataSpec(str(path), target="y"))


def test_text_targets_cannot_be_regression(tmp_path):
    write_iris(tmp_path / "iris.csv")
    with pytest.raises(gn.ConfigError, match=r"the targets are text \(class names such as "
                                             r"'setosa'\); regression needs numbers"):
        load_data(DataSpec(str(tmp_path / "iris.csv"), target="species", task="regression"))
    with pytest.raises(gn.ConfigError, match="regression needs numbers"):
        load_data(DataSpec(str(tmp_path / "iris.csv"), target="species"), loss="mse")


def test_train_predict_evaluate_speak_the_class_names(tmp_path, capsys):
    write_iris(tmp_path / "iris.csv")
    ck, m = tmp_path / "run.npz", tmp_path / "m.json"
    assert main(["train", "--dataset", str(tmp_path / "iris.csv"), "--target", "species",
                 "--epochs", "40", "--quiet", "--backend", "numpy", "--save", str(ck),
                 "--metrics-json", str(m)]) == 0
    trained = json.loads(m.read_text())
    assert trained["classes"] == list(NAMES) and trained["test_accuracy"] > 0.8
    np.testing.assert_array_equal(load_checkpoint(ck).classes, NAMES)

    # predict: the names, and probabilities headed by them
    x, species = write_iris(tmp_path / "rows.csv", rows=np.arange(0, 150, 7))
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", comments="",
               header="sepal_length,sepal_width,petal_length,petal_width")
    assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "x.csv"),
                 "--output", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["label", "p_setosa", "p_versicolor", "p_virginica"]
    probs = np.array([r[1:] for r in table[1:]], dtype=float)
    np.testing.assert_array_equal([r[0] for r in table[1:]], NAMES[probs.argmax(axis=1)])
    assert np.mean([r[0] for r in table[1:]] == species) > 0.8
    assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "x.csv"),
                 "--output", str(tmp_path / "p.npy")]) == 1
    assert "class labels are text: write the predictions to a .csv" in capsys.readouterr().err

    # evaluate: the run's own test split gives the run's figure
    assert main(["evaluate", "--checkpoint", str(ck), "--metrics-json", str(m)]) == 0
    assert json.loads(m.read_text())["test_accuracy"] == pytest.approx(trained["test_accuracy"])


def test_evaluate_maps_another_files_names_through_the_models(tmp_path):
    """A file holding only two of the three species: its sorted names would be 0 and 1, but the
    model's classes say versicolor is 1 and virginica 2."""
    write_iris(tmp_path / "iris.csv")
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(tmp_path / "iris.csv"), "--target", "species",
                 "--epochs", "40", "--quiet", "--backend", "numpy", "--save", str(ck)]) == 0
    two = tmp_path / "two.csv"
    x, species = write_iris(two, rows=np.arange(50, 150))
    model = load_checkpoint(ck).build_model("numpy")
    std = load_checkpoint(ck).standardizer
    predicted = NAMES[np.asarray(model.predict(std(x).astype(np.float32))).argmax(axis=1)]
    expected = float(np.mean(predicted == species))
    m = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(ck), "--dataset", str(two), "--target",
                 "species", "--split", "all", "--metrics-json", str(m)]) == 0
    assert json.loads(m.read_text())["all_accuracy"] == pytest.approx(expected)
    assert expected > 0.7  # (were the labels 0/1, most rows would count as wrong)
    odd = tmp_path / "odd.csv"
    write_iris(odd, names=np.array(["setosa", "versicolor", "tulip"]))
    assert main(["evaluate", "--checkpoint", str(ck), "--dataset", str(odd), "--target",
                 "species", "--split", "all"]) == 1


def test_resume_refuses_data_with_other_classes(tmp_path, capsys):
    write_iris(tmp_path / "iris.csv")
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(tmp_path / "iris.csv"), "--target", "species",
                 "--epochs", "2", "--quiet", "--backend", "numpy", "--save", str(ck)]) == 0
    write_iris(tmp_path / "iris.csv", names=np.array(["setosa", "versicolor", "tulip"]))
    assert main(["train", "--resume", str(ck), "--epochs", "4", "--quiet"]) == 1
    assert "classes (setosa, versicolor, virginica) are not the data's (setosa, tulip, " \
           "versicolor)" in capsys.readouterr().err


def test_numeric_labels_keep_their_meaning(tmp_path):
    """A numeric target column is unchanged: labels are used as given, no classes stored."""
    x, y = load_iris(return_X_y=True)
    path = tmp_path / "n.csv"
    np.savetxt(path, np.column_stack([x, 2 * y]), delimiter=",", header="a,b,c,d,y",
               comments="")
    data = load_data(DataSpec(str(path), target="y"))
    assert data.classes is None and data.n_classes == 5  # labels 0, 2, 4: max + 1
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(path), "--target", "y", "--epochs", "1", "--quiet",
                 "--backend", "numpy", "--save", str(ck)]) == 0
    assert load_checkpoint(ck).classes is None


@pytest.mark.parametrize("cell, numbers", [
    (lambda v: f"${v:,}", True), (lambda v: f"{v / 1000:.1f}%", True),
    (lambda v: f"{v:,}", True), (lambda v: f"item-{v}", False),
])
def test_a_text_target_of_one_value_a_row_is_warned_about(tmp_path, capsys, cell, numbers):
    """Prices written "$315,446" became 397 classes of a row or two each, trained without a
    word (test accuracy 0.0000): the warning names the count and, for numbers written as
    text, the way to regression; a few named classes are not warned about."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    values = (300000 + 10000 * x[:, 0] + 5000 * x[:, 1]).astype(int)
    with open(tmp_path / "p.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["a", "b", "price"])
        out.writerows([a, b, cell(v)] for (a, b), v in zip(x.round(4), values))
    assert main(["train", "--dataset", str(tmp_path / "p.csv"), "--target", "price",
                 "--epochs", "1", "--backend", "numpy", "--quiet"]) == 0
    err = capsys.readouterr().err
    distinct = len({cell(v) for v in values})
    assert f"warning: the target column is text with {distinct} distinct values in 200 rows" \
        in err
    assert ("numbers written as text? Write them as plain numbers and pass --task regression"
            in err) == numbers
    assert main(["train", "--dataset", str(tmp_path / "p.csv"), "--target", "price",
                 "--epochs", "1", "--backend", "numpy", "--quiet", "--task",
                 "classification"]) == 0
    assert "warning" not in capsys.readouterr().err  # (asked for: as classes)
    write_iris(tmp_path / "iris.csv")
    assert main(["train", "--dataset", str(tmp_path / "iris.csv"), "--target", "species",
                 "--epochs", "1", "--backend", "numpy", "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err
