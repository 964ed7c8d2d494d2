"""``gpunet evaluate --report``: each class's precision, recall, F1 and support and the
confusion matrix, or each regression target's MAE, RMSE and R^2. The references are counted
here with NumPy from the file's targets and ``gpunet predict``'s output for the same rows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")

import gpunet as gn
from gpunet.cli import main


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _evaluate_and_predict(tmp_path, capsys, run, data):
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--dataset", str(data), "--split", "all",
                 "--report", "--metrics-json", str(tmp_path / "e.json"),
                 "--backend", "numpy"]) == 0
    printed = capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(run), "--input", str(data), "--output",
                 str(tmp_path / "p.csv"), "--backend", "numpy"]) == 0
    header, rows = _read_csv(tmp_path / "p.csv")
    return json.loads((tmp_path / "e.json").read_text()), printed, header, rows


def _by_hand(true, predicted):
    """precision, recall, F1, support of the positive class of two 0/1 (or bool) columns."""
    tp = np.sum(true & predicted)
    precision = tp / predicted.sum() if predicted.sum() else 0.0
    recall = tp / true.sum() if true.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1-score": f1,
            "support": float(true.sum())}


def test_a_classifier_reports_each_class_and_its_confusion_matrix(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 4))
    names = np.array(["ant", "bee", "cat"])
    y = names[(x[:, 0] > 0.3).astype(int) + (x[:, 1] + 0.5 * x[:, 2] > 0.8)]
    data = tmp_path / "d.csv"
    _write_csv(data, ["a", "b", "c", "d", "kind"],
               [[*(f"{v:.6f}" for v in row), c] for row, c in zip(x, y)])
    run = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(data), "--target", "kind", "--epochs", "3",
                 "--hidden", "8", "--save", str(run), "--backend", "numpy", "--quiet"]) == 0
    got, printed, header, rows = _evaluate_and_predict(tmp_path, capsys, run, data)
    predicted = np.array([r[0] for r in rows])
    assert len(set(predicted)) > 1  # (so that the counts below are not degenerate)
    report = got["report"]["classes"]
    for c in names:
        want = _by_hand(y == c, predicted == c)
        for k, v in want.items():
            assert report[c][k] == pytest.approx(v, rel=1e-12), (c, k)
    assert report["accuracy"] == pytest.approx(np.mean(predicted == y), rel=1e-12)
    assert report["accuracy"] == pytest.approx(got["all_accuracy"], rel=1e-12)
    macro = np.mean([report[c]["f1-score"] for c in names])
    assert report["macro avg"]["f1-score"] == pytest.approx(macro, rel=1e-12)
    counts = [[int(np.sum((y == t) & (predicted == p))) for p in names] for t in names]
    assert got["report"]["confusion"] == counts
    # the same figures on the terminal, under the class names
    assert "precision    recall  f1-score   support" in printed
    for c, row in zip(names, counts):
        assert any(line.split() == [c, *map(str, row)] for line in printed.splitlines()), c


def test_a_binary_single_output_run_reports_both_classes(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 3))
    y = (x[:, 0] - x[:, 2] > 0).astype(int)
    data = tmp_path / "b.csv"
    _write_csv(data, ["a", "b", "c", "y"], [[*(f"{v:.6f}" for v in r), t] for r, t in zip(x, y)])
    run = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(data), "--target", "y", "--loss", "bce_logits",
                 "--epochs", "3", "--save", str(run), "--backend", "numpy", "--quiet"]) == 0
    got, _, header, rows = _evaluate_and_predict(tmp_path, capsys, run, data)
    predicted = np.array([int(r[0]) for r in rows])
    for c in (0, 1):
        want = _by_hand(y == c, predicted == c)
        for k, v in want.items():
            assert got["report"]["classes"][str(c)][k] == pytest.approx(v, rel=1e-12)
    assert np.array(got["report"]["confusion"]).sum() == len(y)


def test_a_multilabel_run_reports_each_label_by_its_column_name(tmp_path, capsys):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 4))
    labels = np.stack([x[:, 0] > 0, x[:, 1] > 0.5, x[:, 2] + x[:, 3] < 0], axis=1)
    data = tmp_path / "m.csv"
    _write_csv(data, ["a", "b", "c", "d", "red", "green", "blue"],
               [[*(f"{v:.6f}" for v in r), *map(int, t)] for r, t in zip(x, labels)])
    run = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(data), "--target", "red", "--target", "green",
                 "--target", "blue", "--task", "classification", "--epochs", "4",
                 "--save", str(run), "--backend", "numpy", "--quiet"]) == 0
    got, printed, header, rows = _evaluate_and_predict(tmp_path, capsys, run, data)
    assert header[:3] == ["label_red", "label_green", "label_blue"]
    predicted = np.array([[int(v) for v in r[:3]] for r in rows]).astype(bool)
    report = got["report"]["classes"]
    for j, name in enumerate(["red", "green", "blue"]):
        for k, v in _by_hand(labels[:, j], predicted[:, j]).items():
            assert report[name][k] == pytest.approx(v, rel=1e-12), (name, k)
    assert "confusion" not in got["report"]  # (no one matrix for several labels)
    assert "red" in printed and "samples avg" in printed


def test_a_regressor_reports_each_target_in_its_units(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((250, 3))
    t = np.column_stack([100 + 30 * x[:, 0] + x[:, 1], 0.01 * x[:, 2] - 0.02 * x[:, 0]])
    data = tmp_path / "r.csv"
    _write_csv(data, ["a", "b", "c", "price", "rate"],
               [[*(f"{v:.6f}" for v in r), *(f"{v:.8f}" for v in y)] for r, y in zip(x, t)])
    run = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(data), "--target", "price", "--target", "rate",
                 "--epochs", "4", "--save", str(run), "--backend", "numpy", "--quiet",
                 "--dtype", "float64"]) == 0
    got, printed, header, rows = _evaluate_and_predict(tmp_path, capsys, run, data)
    predicted = np.array([[float(v) for v in r] for r in rows])
    for j, name in enumerate(["price", "rate"]):
        err = predicted[:, j] - t[:, j]
        want = {"mae": np.abs(err).mean(), "rmse": np.sqrt((err ** 2).mean()),
                "r2": 1 - (err ** 2).sum() / ((t[:, j] - t[:, j].mean()) ** 2).sum()}
        for k, v in want.items():  # (predict writes 8 significant digits)
            assert got["report"]["targets"][name][k] == pytest.approx(v, rel=1e-6), (name, k)
    # R^2 over the targets as evaluate reports it: their mean
    r2 = np.mean([got["report"]["targets"][n]["r2"] for n in ("price", "rate")])
    assert got["all_r2"] == pytest.approx(r2, rel=1e-9)
    assert any(line.split()[:1] == ["price"] for line in printed.splitlines())


def test_unnamed_targets_are_reported_under_the_names_predict_heads_them_with(tmp_path, capsys):
    """An .npz run's targets have no names: the report called them "target 0", "target 1"
    where predict's columns are y0, y1."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((120, 3))
    np.savez(tmp_path / "r.npz", x=x, y=np.column_stack([x[:, 0] * 5, x[:, 1] - x[:, 2]]))
    run = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(tmp_path / "r.npz"), "--epochs", "2", "--save",
                 str(run), "--backend", "numpy", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--report", "--metrics-json",
                 str(tmp_path / "e.json"), "--backend", "numpy"]) == 0
    np.save(tmp_path / "x.npy", x[:5])
    assert main(["predict", "--checkpoint", str(run), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "p.csv"), "--backend", "numpy"]) == 0
    header, _ = _read_csv(tmp_path / "p.csv")
    assert header == ["y0", "y1"]
    assert list(json.loads((tmp_path / "e.json").read_text())["report"]["targets"]) == header


def test_a_saved_estimator_reports_under_its_class_names(tmp_path, capsys):
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = gn.MLPClassifier(hidden=(8,), epochs=5, backend="numpy").fit(x, names)
    clf.save(tmp_path / "m.npz")
    data = tmp_path / "iris.csv"
    _write_csv(data, ["f0", "f1", "f2", "f3", "species"],
               [[*(repr(float(v)) for v in r), c] for r, c in zip(x, names)])
    assert main(["evaluate", "--checkpoint", str(tmp_path / "m.npz"), "--dataset", str(data),
                 "--target", "species", "--split", "all", "--report", "--metrics-json",
                 str(tmp_path / "e.json"), "--backend", "numpy"]) == 0
    report = json.loads((tmp_path / "e.json").read_text())["report"]["classes"]
    predicted = clf.predict(x)
    for c in ("setosa", "versicolor", "virginica"):
        for k, v in _by_hand(names == c, predicted == c).items():
            assert report[c][k] == pytest.approx(v, rel=1e-12), (c, k)


def test_a_model_with_more_outputs_than_classes_reports_the_ones_it_predicts():
    """Outputs past the data's classes count as classes only where predicted ("output j",
    no support): averages over the data's classes otherwise, as many rows as columns."""
    from gpunet.report import evaluation_report

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(60, 3)), rng.integers(0, 3, 60)
    model = gn.MLP([3, 5, 5], backend="numpy", dtype="float64", seed=0)
    b = model.params["b2"]
    b[:] = [0.0, 0.0, 0.0, -1e3, 0.0]  # output 3 never wins; output 4 wins for some rows
    report = evaluation_report(model, x, y, "classification", names=["a", "b", "c"],
                               n_classes=3)
    predicted = model.predict(x).argmax(axis=1)
    assert 4 in predicted and 3 not in predicted
    assert [k for k in report["classes"] if k not in ("accuracy", "macro avg", "weighted avg")] \
        == ["a", "b", "c", "output 4"]
    assert report["classes"]["output 4"]["support"] == 0
    assert report["classes"]["output 4"]["precision"] == 0
    counts = [[int(np.sum((y == t) & (predicted == p))) for p in (0, 1, 2, 4)]
              for t in (0, 1, 2, 4)]
    assert report["confusion"] == counts
    assert report["classes"]["accuracy"] == pytest.approx(np.mean(predicted == y), rel=1e-12)


@pytest.mark.parametrize("dataset, extra", [("wine", []), ("diabetes", []),
                                            ("moons", ["--samples", "300"])])
def test_train_reports_the_test_split_as_evaluate_does(tmp_path, capsys, dataset, extra):
    """train --report prints and saves the report of the run's test split: the one evaluate
    --report gives of the checkpoint (itself checked against counts made above)."""
    run = tmp_path / "run.npz"
    assert main(["train", "--dataset", dataset, *extra, "--epochs", "3", "--report", "--save",
                 str(run), "--metrics-json", str(tmp_path / "t.json"), "--backend", "numpy",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(run), "--report", "--metrics-json",
                 str(tmp_path / "e.json"), "--backend", "numpy"]) == 0
    trained = json.loads((tmp_path / "t.json").read_text())["report"]
    evaluated = json.loads((tmp_path / "e.json").read_text())["report"]
    assert trained == evaluated
    first = "precision" if "classes" in trained else "MAE"
    assert first in printed
    # resuming with --report is no change of the run
    assert main(["train", "--resume", str(run), "--epochs", "4", "--report", "--quiet",
                 "--backend", "numpy"]) == 0
    assert first in capsys.readouterr().out


def test_absent_classes_are_left_out_as_scikit_learn_leaves_them(tmp_path, capsys):
    """Labels 1 and 2 train outputs 0..2: class 0, never in the rows nor predicted, counted as
    zeros in the macro average (0.66 where scikit-learn's report says 0.98). evaluate on a
    file of some of the classes named the others "output j" by that file's largest label."""
    from sklearn.metrics import classification_report

    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 3))
    y = 1 + (x[:, 0] + 0.3 * x[:, 1] > 0).astype(int)  # classes 1 and 2 (as 1.0 / 2.0 cells)
    data = tmp_path / "d.csv"
    _write_csv(data, ["a", "b", "c", "y"], [[*(f"{v:.6f}" for v in r), f"{t:.1f}"]
                                             for r, t in zip(x, y)])
    run = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(data), "--target", "y", "--epochs", "5",
                 "--save", str(run), "--backend", "numpy", "--quiet"]) == 0
    got, printed, header, rows = _evaluate_and_predict(tmp_path, capsys, run, data)
    predicted = np.array([int(float(r[0])) for r in rows])
    assert 0 not in predicted  # (the case in point: class 0 has no row and no prediction)
    want = classification_report(y, predicted, output_dict=True, zero_division=0)
    report = got["report"]
    for avg in ("macro avg", "weighted avg"):
        for k in ("precision", "recall", "f1-score"):
            assert report["classes"][avg][k] == pytest.approx(want[avg][k], rel=1e-12)
    assert report["absent"] == ["0"] and "0" not in report["classes"]
    assert report["confusion_classes"] == ["1", "2"]
    assert "left out (as scikit-learn leaves them): 0" in printed
    # a file of class 1 only: class 2 keeps its name (it was "output 2")
    ones = tmp_path / "ones.csv"
    _write_csv(ones, ["a", "b", "c", "y"], [[*(f"{v:.6f}" for v in r), "1.0"]
                                             for r, t in zip(x, y) if t == 1])
    got, printed, header, rows = _evaluate_and_predict(tmp_path, capsys, run, ones)
    assert "output" not in printed
    assert set(got["report"]["classes"]) - {"accuracy", "macro avg", "weighted avg"} \
        <= {"1", "2"}


def test_a_models_classes_keep_their_numbers_when_absent_ones_are_left_out():
    """With no names and no class count given, a class past the first absent one was named
    "output j" (its number measured against the classes left after leaving some out)."""
    from gpunet.report import evaluation_report

    model = gn.MLP([3, 5, 5], backend="numpy", dtype="float64", seed=0)
    model.params["b2"][:] = [0.0, 0.0, 0.0, -1e3, 0.0]  # (output 3 never wins)
    x = np.random.default_rng(4).normal(size=(60, 3))
    predicted = model.predict(x).argmax(axis=1)
    report = evaluation_report(model, x, predicted, "classification")
    shown = [k for k in report["classes"] if k not in ("accuracy", "macro avg", "weighted avg")]
    assert shown == [str(j) for j in np.unique(predicted)] and "4" in shown
    assert report["absent"] == [str(j) for j in range(5) if j not in set(predicted)]
