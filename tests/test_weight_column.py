"""``--weight-column`` (``DataSpec.weight_column``): a CSV column of sample weights, left out of
the features, split with the rows, weighting the loss (times any class weights) and the
standardisation; evaluate weights its loss the same way. References come from the cells
written to the file."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import gpunet as gn
from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.data import DataSpec, load_data

from conftest import said


def write(path, n=150, seed=0, text=False, bad=None):
    """Columns id, a, [colour,] w, label; returns {id: (a, colour, w, label)}."""
    rng = np.random.default_rng(seed)
    rows = {}
    with open(path, "w") as f:
        f.write("id,a," + ("colour," if text else "") + "w,label\n")
        for i in range(n):
            a = round(float(rng.normal(3, 2)), 4)
            colour = str(rng.choice(["red", "blue"]))
            w = round(float(rng.uniform(0, 4)), 3) if i % 9 else 0.0
            label = int(a + (colour == "red") > 3.5)
            rows[i] = (a, colour, w, label)
            cell = bad if bad is not None and i == 7 else w
            f.write(f"{i},{a}," + (f"{colour}," if text else "") + f"{cell},{label}\n")
    return rows


def _ids(data, x):
    return np.rint(data.standardizer.inverse(x)[:, 0]).astype(int)


@pytest.mark.parametrize("text", [False, True], ids=["numbers", "with-a-text-column"])
def test_the_weights_follow_their_rows_and_leave_the_features(tmp_path, text):
    rows = write(tmp_path / "d.csv", text=text)
    data = load_data(DataSpec(str(tmp_path / "d.csv"), target="label", weight_column="w",
                              seed=2))
    assert data.n_features == (4 if text else 2)  # id, a (and colour one-hot): no w
    for split in ("train", "val", "test"):
        ids = _ids(data, getattr(data, f"x_{split}"))
        np.testing.assert_array_equal(getattr(data, f"w_{split}"), [rows[i][2] for i in ids])
    # standardised with the training rows' weighted statistics
    ids = _ids(data, data.x_train)
    w = np.array([rows[i][2] for i in ids])
    a = np.array([rows[i][0] for i in ids])
    assert data.standardizer.mean[1] == pytest.approx(w @ a / w.sum(), rel=1e-12)


def test_a_column_of_equal_weights_trains_as_no_weights_to_the_bit(tmp_path):
    """Weights all alike weigh nothing: the run is the unweighted one bit for bit, in float64
    too, where the weighted statistics' sums (w @ x) rounded apart from the plain ones (the
    estimators already took equal weights as none)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(3, 2, (120, 3)), rng.integers(0, 2, 120)
    with open(tmp_path / "w.csv", "w") as f:
        f.write("a,b,c,w,label\n")
        for row, label in zip(x, y):
            f.write(",".join(repr(float(v)) for v in row) + f",2.5,{label}\n")
    with open(tmp_path / "plain.csv", "w") as f:
        f.write("a,b,c,label\n")
        for row, label in zip(x, y):
            f.write(",".join(repr(float(v)) for v in row) + f",{label}\n")
    flags = ["--target", "label", "--dtype", "float64", "--epochs", "3", "--hidden", "8",
             "--backend", "numpy", "--quiet"]
    assert main(["train", "--dataset", str(tmp_path / "w.csv"), "--weight-column", "w", *flags,
                 "--save", str(tmp_path / "w.npz")]) == 0
    assert main(["train", "--dataset", str(tmp_path / "plain.csv"), *flags,
                 "--save", str(tmp_path / "plain.npz")]) == 0
    weighted, plain = load_checkpoint(tmp_path / "w.npz"), load_checkpoint(tmp_path / "plain.npz")
    np.testing.assert_array_equal(weighted.standardizer.mean, plain.standardizer.mean)
    np.testing.assert_array_equal(weighted.standardizer.std, plain.standardizer.std)
    for k, v in plain.params.items():
        np.testing.assert_array_equal(weighted.params[k], v)


def test_the_weight_column_times_the_class_weights(tmp_path):
    rows = write(tmp_path / "d.csv")
    data = load_data(DataSpec(str(tmp_path / "d.csv"), target="label", weight_column="w",
                              class_weight="balanced", seed=2))
    ids = _ids(data, data.x_train)
    np.testing.assert_allclose(
        data.w_train, [rows[i][2] * data.class_weights[rows[i][3]] for i in ids], rtol=1e-15)


def test_train_and_evaluate_weight_the_loss_alike(tmp_path, capsys):
    write(tmp_path / "d.csv")
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(tmp_path / "d.csv"), "--target", "label",
                 "--weight-column", "w", "--epochs", "3", "--backend", "numpy", "--quiet",
                 "--save", str(ck)]) == 0
    ckpt = load_checkpoint(ck)
    last = ckpt.extra["training"]["state"]["history"][-1]
    data = load_data(DataSpec.from_json(ckpt.extra["data"]))
    logits = np.asarray(ckpt.build_model("numpy").predict(data.x_val), dtype=np.float64)
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(len(logp)), data.y_val]
    assert last["val_loss"] == pytest.approx(data.w_val @ nll / data.w_val.sum(), rel=1e-5)
    assert abs(last["val_loss"] - nll.mean()) > 1e-4  # (weighting changed it)
    assert main(["evaluate", "--checkpoint", str(ck), "--split", "val", "--backend", "numpy",
                 "--metrics-json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["val_loss"] == pytest.approx(
        last["val_loss"], rel=1e-6)
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(ck)]) == 0
    assert "rows weighted by column 'w'" in capsys.readouterr().out


def test_rows_whose_weights_are_all_zero_have_no_loss_rather_than_a_loss_of_zero(tmp_path,
                                                                                 caplog):
    """A weighted mean over rows of no weight is 0 / 0: a test split whose rows all weigh 0
    had a test_loss of 0.0 (a perfect fit) in train's JSON and in evaluate. It is NaN, said,
    while the accuracy still counts every row."""
    rows = write(tmp_path / "d.csv")
    spec = DataSpec(str(tmp_path / "d.csv"), target="label", weight_column="w", seed=0)
    test_ids = set(_ids(load_data(spec), load_data(spec).x_test).tolist())
    with open(tmp_path / "z.csv", "w") as f:  # the same rows (the same split), test rows 0
        f.write("id,a,w,label\n")
        for i, (a, _, w, label) in rows.items():
            f.write(f"{i},{a},{0 if i in test_ids else w},{label}\n")
    ck, m = tmp_path / "run.npz", tmp_path / "m.json"
    assert main(["train", "--dataset", str(tmp_path / "z.csv"), "--target", "label",
                 "--weight-column", "w", "--epochs", "3", "--backend", "numpy", "--quiet",
                 "--save", str(ck), "--metrics-json", str(m)]) == 0
    assert "sample weights of the 30 rows measured are all zero" in said(caplog)
    caplog.clear()
    trained = json.loads(m.read_text())
    assert trained["test_loss"] is None and trained["history"][-1]["val_loss"] > 0  # (NaN: null)
    data = load_data(dataclasses.replace(spec, dataset=str(tmp_path / "z.csv")))
    assert set(_ids(data, data.x_test).tolist()) == test_ids and not data.w_test.any()
    pred = np.asarray(load_checkpoint(ck).build_model("numpy").predict(data.x_test))
    assert trained["test_accuracy"] == pytest.approx(np.mean(pred.argmax(1) == data.y_test))
    assert main(["evaluate", "--checkpoint", str(ck), "--backend", "numpy",
                 "--metrics-json", str(tmp_path / "e.json")]) == 0
    assert "sample weights of the 30 rows measured are all zero" in said(caplog)
    assert json.loads((tmp_path / "e.json").read_text())["test_loss"] is None


@pytest.mark.parametrize("bad, message", [
    ("-1", r"line 9, weight column 'w': -1; sample weights are finite numbers >= 0"),
    ("heavy", r"line 9, weight column 'w': 'heavy' is not a number"),
    ("", r"line 9, weight column 'w': missing value"),
    ("inf", r"line 9, weight column 'w': inf; sample weights are finite"),
])
def test_bad_weights_are_named_by_line(tmp_path, bad, message):
    write(tmp_path / "d.csv", bad=bad)
    with pytest.raises(gn.DataError, match=message):
        load_data(DataSpec(str(tmp_path / "d.csv"), target="label", weight_column="w"))


def test_what_the_weight_column_refuses(tmp_path):
    write(tmp_path / "d.csv")
    with pytest.raises(gn.DataError, match="no weight column 'weights'; columns: id, a, w"):
        load_data(DataSpec(str(tmp_path / "d.csv"), target="label", weight_column="weights"))
    with pytest.raises(gn.ConfigError, match="the weight column 'label' is a target column"):
        load_data(DataSpec(str(tmp_path / "d.csv"), target="label", weight_column="label"))
    with pytest.raises(gn.ConfigError, match="weight_column applies to .csv datasets"):
        load_data(DataSpec("iris", weight_column="w"))
    (tmp_path / "z.csv").write_text("a,w,label\n1,0,0\n2,0,1\n3,0,0\n4,0,1\n")
    with pytest.raises(gn.DataError, match="every sample weight is zero"):
        load_data(DataSpec(str(tmp_path / "z.csv"), target="label", weight_column="w"))


@pytest.mark.parametrize("text", [False, True], ids=["numbers", "with-a-text-column"])
def test_predict_takes_the_training_file_itself(tmp_path, text):
    """The file trained on still holds the target and weight columns: predict leaves them out
    by the names stored with the run, and predicts what it does on the features alone."""
    rows = write(tmp_path / "d.csv", text=text)
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(tmp_path / "d.csv"), "--target", "label",
                 "--weight-column", "w", "--epochs", "2", "--backend", "numpy", "--quiet",
                 "--save", str(ck)]) == 0
    with open(tmp_path / "x.csv", "w") as f:  # the features alone, columns in another order
        f.write(("colour," if text else "") + "a,id\n")
        for i, (a, colour, _, _) in rows.items():
            f.write((f"{colour}," if text else "") + f"{a},{i}\n")
    outs = []
    for name in ("d.csv", "x.csv") if text else ("d.csv",):
        out = tmp_path / f"p-{name}.npy"
        assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / name),
                     "--output", str(out), "--backend", "numpy"]) == 0
        outs.append(np.load(out))
    ckpt = load_checkpoint(ck)
    model = ckpt.build_model("numpy", weights="best")
    x = np.array([[i, a] + ([float(c == "blue"), float(c == "red")] if text else [])
                  for i, (a, c, _, _) in rows.items()])
    want = np.argmax(model.predict(ckpt.standardizer(x)), axis=1)
    for got in outs:
        np.testing.assert_array_equal(got[:, 0], want)


@pytest.mark.parametrize("flags", [["--weight-column", "w"], ["--class-weight", "balanced"]])
def test_evaluate_refuses_another_files_rows_as_a_weighted_runs_split(tmp_path, capsys,
                                                                       flags):
    """A weighted or class-weighted run's training statistics are weighted, so evaluate could
    only compare the split sizes: a file of the same name and rows but changed values in
    another folder was scored as the run's test split (0.75 for its 0.80). The checksums the
    run recorded of each split's rows refuse it; the run's own file still scores its split."""
    write(tmp_path / "d.csv")
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(tmp_path / "d.csv"), "--target", "label", *flags,
                 "--ignore", "id", "--epochs", "3", "--backend", "numpy", "--quiet", "--save",
                 str(ck)]) == 0
    lines = (tmp_path / "d.csv").read_text().splitlines()
    (tmp_path / "next").mkdir()
    changed = [lines[0]] + [",".join([r.split(",")[0], str(float(r.split(",")[1]) + 0.5),
                                      *r.split(",")[2:]]) for r in lines[1:]]
    (tmp_path / "next" / "d.csv").write_text("\n".join(changed) + "\n")
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ck), "--dataset",
                 str(tmp_path / "next" / "d.csv"), "--backend", "numpy"]) == 1
    assert "the run's test rows are not these: their features differ" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ck), "--backend", "numpy"]) == 0
    for split in ("train", "val"):
        assert main(["evaluate", "--checkpoint", str(ck), "--split", split,
                     "--backend", "numpy"]) == 0
