"""gpunet predict and evaluate on a checkpoint: what they read, what they write, what they say
of the weights they take."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.cli import main

from conftest import said


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


def _stopped_in_epoch_2(path):
    """A wine run of SGD in batches of 16, Ctrl-C'd in its second epoch after step 5 (as a
    real SIGINT stops fit), saved to ``path``: (its state, its weights)."""
    import os
    import signal

    from gpunet.data import DataSpec, load_data

    spec = DataSpec("wine", seed=2, val_fraction=0.2, test_fraction=0.2)
    data = load_data(spec)
    model = gn.MLP([13, 16, 3], backend="numpy", seed=5)
    opt = gn.SGD(model, lr=0.05, momentum=0.9)
    steps = -(-len(data.x_train) // 16)
    inner, calls = opt.prepare_hyper, [0]

    def prepare():  # (once a step, on the host)
        calls[0] += 1
        if calls[0] == steps + 5:
            os.kill(os.getpid(), signal.SIGINT)
        return inner()

    opt.prepare_hyper = prepare
    with pytest.raises(gn.TrainingInterrupted):
        gn.fit(model, data, gn.CrossEntropyLoss(), opt, epochs=4, batch_size=16, seed=3,
               save=path, progress=False, data_spec=spec.to_json())
    return model


def test_weights_of_a_run_stopped_within_an_epoch_are_said_to_be(tmp_path, capsys, caplog):
    """A checkpoint written on Ctrl-C in epoch 2 holds the weights of step 5 of it; evaluate
    printed "epoch: 1" (the last epoch done) as though they were that epoch's end, and neither
    command said otherwise. Both give gpunet info's words, and evaluate reports epoch 2,
    stopped at step 5."""
    import json

    from gpunet.checkpoint import load_checkpoint

    ck = tmp_path / "run.npz"
    model = _stopped_in_epoch_2(ck)
    state = load_checkpoint(ck).extra["training"]["state"]
    assert (state["epoch"], state["step"]) == (1, 5)
    words = "epoch 2 stopped at step 5"
    caplog.clear()
    assert main(["info", "--checkpoint", str(ck)]) == 0
    assert words in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(ck), "--backend", "numpy", "--metrics-json",
                 str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "epoch: 2\nstopped_at_step: 5\n" in out
    m = json.loads((tmp_path / "m.json").read_text())
    assert (m["epoch"], m["stopped_at_step"]) == (2, 5)
    assert f"{ck}: these weights are the run's as it stopped within an epoch (1 of 4 epochs " \
        f"done, {words}), not those of an epoch's end" in said(caplog)
    caplog.clear()
    x = np.random.default_rng(1).normal(size=(4, 13))
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "p.npy"), "--backend", "numpy"]) == 0
    assert words in said(caplog)
    # the weights are the interrupted model's own (the step-5 ones)
    ckpt = load_checkpoint(ck)
    want = model.predict(ckpt.standardizer(x)).argmax(axis=1)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy")[:, 0], want)
    caplog.clear()  # a run's end: nothing said
    assert main(["train", "--dataset", "wine", "--epochs", "1", "--quiet", "--backend", "numpy",
                 "--save", str(ck)]) == 0
    assert main(["evaluate", "--checkpoint", str(ck), "--backend", "numpy"]) == 0
    assert "stopped_at_step" not in capsys.readouterr().out and "within" not in said(caplog)


@pytest.mark.parametrize("split", ["test", "val", "train"])
def test_a_saved_estimator_has_no_split_to_evaluate(fitted_on_arrays, tmp_path, capsys, split):
    """An estimator has no split of its own (evaluate's help says so), yet --split test split
    the file anew with a seeded 20% and reported it as "split: test". Only all is taken: the
    file's every row, scored as the estimator scores them."""
    import json

    clf, ck, _ = fitted_on_arrays
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 3))
    y = (x[:, 0] > 0).astype(int)
    np.savetxt(tmp_path / "held.csv", np.column_stack([x, y]), delimiter=",",
               header="a,b,c,y", comments="", fmt=["%.17g"] * 3 + ["%d"])
    flags = ["evaluate", "--checkpoint", str(ck), "--dataset", str(tmp_path / "held.csv"),
             "--target", "y", "--backend", "numpy"]
    assert main([*flags, "--split", split]) == 1
    err = capsys.readouterr().err
    assert f"is a saved estimator, fitted on the arrays given to fit: it has no {split} split " \
        f"of its own, and --split {split} would split" in err
    assert main([*flags, "--split", "all", "--metrics-json", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert (m["split"], m["rows"]) == ("all", 50)
    assert m["all_accuracy"] == clf.score(x, y)


def test_an_npy_for_a_model_of_named_columns_is_said_to_go_by_position(tmp_path, caplog):
    """The reverse of a CSV for a model trained on arrays: an .npy for a model trained on a
    CSV's named columns was taken by position without a word (scikit-learn warns "X does not
    have valid feature names"). A notice names the order, one-hot blocks written out; the
    rows encoded by hand in that order predict as the CSV itself does."""
    from gpunet.cli import main as gpunet

    rng = np.random.default_rng(3)
    colors = rng.choice(["red", "blue", "green"], size=60)
    a, b = rng.normal(size=60).tolist(), rng.normal(size=60).tolist()
    y = ((np.array(a) > 0) ^ (colors == "red")).astype(int)
    with open(tmp_path / "d.csv", "w") as f:
        f.write("a,color,b,y\n")
        f.writelines(f"{a[i]!r},{colors[i]},{b[i]!r},{y[i]}\n" for i in range(60))
    ck = tmp_path / "c.npz"
    assert gpunet(["train", "--dataset", str(tmp_path / "d.csv"), "--target", "y", "--epochs",
                   "2", "--quiet", "--backend", "numpy", "--save", str(ck)]) == 0
    by_hand = np.column_stack([a, colors == "blue", colors == "green", colors == "red", b])
    np.save(tmp_path / "x.npy", by_hand.astype(np.float64))
    caplog.clear()
    for given, out in ((tmp_path / "d.csv", "p.csv"), (tmp_path / "x.npy", "q.csv")):
        assert gpunet(["predict", "--checkpoint", str(ck), "--input", str(given), "--output",
                       str(tmp_path / out), "--backend", "numpy"]) == 0
    assert said(caplog) == (
        f"gpunet: this model was trained on named columns, which {tmp_path / 'x.npy'} has none "
        "of: its columns are taken by position, as the model's 5 inputs in their order: a, "
        "color=blue, color=green, color=red, b (scikit-learn warns alike)\n")
    assert (tmp_path / "p.csv").read_text() == (tmp_path / "q.csv").read_text()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predicted_probabilities_read_back_to_the_bit(tmp_path, dtype):
    """The CSV wrote probabilities with 8 significant digits: 37 of 3000 float32 ones read back
    a bit off (a float32 needs 9, a float64 17). Each reads back to the value predict holds
    (its .npy output, written unformatted), in the model's dtype, and a class label that is a
    float to the estimator's own label."""
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--quiet", "--backend",
                 "numpy", "--dtype", dtype, "--save", str(ck)]) == 0
    x = np.random.default_rng(2).normal(size=(300, 64)) * 4 + 8
    np.save(tmp_path / "x.npy", x)
    for out in ("p.csv", "p.npy"):
        assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "x.npy"),
                     "--output", str(tmp_path / out), "--backend", "numpy"]) == 0
    held = np.load(tmp_path / "p.npy")
    read = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    assert held.shape == read.shape == (300, 11)
    np.testing.assert_array_equal(read[:, 0], held[:, 0])
    np.testing.assert_array_equal(read[:, 1:].astype(dtype), held[:, 1:].astype(dtype))
    np.testing.assert_array_equal(held[:, 1:].astype(dtype), held[:, 1:])  # (its own values)


def test_float_class_labels_and_regression_values_read_back_to_the_bit(tmp_path):
    """An estimator's float classes were written with 8 significant digits, 123456789.0 as
    1.2345679e+08, a label it never predicts; regression values are written in full already.
    Both read back to the estimator's own predict, to the bit."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 3))
    y = np.where(x[:, 0] > 0, 123456789.0, 1.0)
    clf = gn.MLPClassifier(hidden=(8,), epochs=3, backend="numpy").fit(x, y)
    reg = gn.MLPRegressor(hidden=(8,), epochs=3, backend="numpy").fit(x, 1e8 + x[:, 1])
    np.save(tmp_path / "x.npy", x)
    for est in (clf, reg):
        est.save(tmp_path / "m.npz")
        assert main(["predict", "--checkpoint", str(tmp_path / "m.npz"), "--input",
                     str(tmp_path / "x.npy"), "--output", str(tmp_path / "p.csv"),
                     "--backend", "numpy"]) == 0
        lines = (tmp_path / "p.csv").read_text().splitlines()
        if est is clf:
            assert lines[0] == "label,p_1,p_123456789"
        read = np.array([float(line.split(",")[0]) for line in lines[1:]])
        np.testing.assert_array_equal(read, est.predict(x))


@pytest.mark.parametrize("multilabel", [False, True], ids=["classes", "multilabel"])
def test_predicted_labels_are_the_logits_argmax_as_evaluate_takes_it(tmp_path, multilabel):
    """Logits a hair apart, 0.001 and the next float32 up, have one float32 softmax (0.5 each):
    predict labelled the row 0 (the probabilities' argmax), evaluate and the estimators 1 (the
    logits'). A multilabel logit of 1e-8 has a float32 sigmoid of 0.5: predict said 0, the
    estimators 1 (logit > 0). predict takes the logits too."""
    from gpunet.checkpoint import save_checkpoint

    model = gn.MLP([1, 2], backend="numpy", seed=0)
    top = np.nextafter(np.float32(0.001), np.float32(1))
    logits = np.array([1e-8, 1e-8] if multilabel else [0.001, top], dtype=np.float32)
    model.load_state_dict({"W1": np.zeros((2, 1), np.float32), "b1": logits})
    save_checkpoint(tmp_path / "m.npz", model, extra={"task": "classification",
                                                      "multilabel": multilabel})
    np.save(tmp_path / "x.npy", np.zeros((3, 1)))
    assert main(["predict", "--checkpoint", str(tmp_path / "m.npz"), "--input",
                 str(tmp_path / "x.npy"), "--output", str(tmp_path / "p.csv"),
                 "--backend", "numpy"]) == 0
    read = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    if multilabel:  # (scikit-learn's MLP: a label where its logit is above 0)
        np.testing.assert_array_equal(read[:, :2], np.ones((3, 2)))
        np.testing.assert_array_equal(read[:, 2:], np.full((3, 2), 0.5))
    else:  # (torch.argmax of the logits: 1)
        np.testing.assert_array_equal(read[:, 0], [np.argmax(logits)] * 3)
        np.testing.assert_array_equal(read[:, 1:], np.full((3, 2), 0.5))


def test_evaluate_of_a_run_on_data_given_in_python_asks_for_a_file(tmp_path, capsys):
    """A fit on make_dataset("mine", ...) names arrays no command can read: evaluate said
    "unknown dataset 'mine'; valid names: ...", as though the name were mistyped. It says the
    data were given in Python and to pass --dataset FILE, which then scores every row."""
    import json

    from gpunet.checkpoint import load_checkpoint
    from gpunet.data import make_dataset

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), rng.integers(0, 2, 60)
    model = gn.MLP([3, 8, 2], seed=0)
    gn.fit(model, make_dataset("mine", x, y, seed=0), gn.CrossEntropyLoss(), gn.Adam(model),
           epochs=2, batch_size=8, progress=False, save=tmp_path / "m.npz")
    ck = str(tmp_path / "m.npz")
    assert main(["evaluate", "--checkpoint", ck, "--backend", "numpy"]) == 1
    err = capsys.readouterr().err
    assert "this run trained on data given in Python ('mine', from make_dataset), which no " \
        "command can read: pass --dataset FILE" in err and "unknown dataset" not in err
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert main(["evaluate", "--checkpoint", ck, "--dataset", str(tmp_path / "d.npz"),
                 "--backend", "numpy", "--metrics-json", str(tmp_path / "e.json")]) == 0
    m = json.loads((tmp_path / "e.json").read_text())
    ckpt = load_checkpoint(ck)
    want = np.mean(ckpt.build_model("numpy").predict(ckpt.standardizer(x)).argmax(axis=1) == y)
    assert (m["split"], m["rows"], m["all_accuracy"]) == ("all", 60, want)


def test_an_npy_of_no_rows_is_refused_as_a_csv_of_a_header_alone(fitted_on_arrays, tmp_path,
                                                                 capsys):
    """A CSV of a header and no rows is an error, but an .npy of no rows wrote "0
    predictions": both are refused, and nothing is written."""
    _, ck, _ = fitted_on_arrays
    (tmp_path / "h.csv").write_text("a,b,c\n")
    np.save(tmp_path / "e.npy", np.zeros((0, 3)))
    for given, said_ in (("h.csv", "h.csv: a header but no data rows"),
                         ("e.npy", "e.npy: the features have no rows (shape (0, 3))")):
        assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / given),
                     "--output", str(tmp_path / "p.csv"), "--backend", "numpy"]) == 1
        assert said_ in capsys.readouterr().err
        assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("outputs", [1, 3])
def test_a_label_past_the_models_classes_is_named_by_file_and_line(tmp_path, capsys, outputs):
    """A label past a numbered model's classes ended evaluate with the loss's words,
    "CrossEntropyLoss: class labels must lie in [0, 2] ...", naming neither the file nor the
    row, as the other label errors do. It names both (a CSV's line, an .npz's row); one
    logit (bce_logits) has the classes 0 and 1."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(90, 2))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 1 if outputs == 3 else 0)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ck = tmp_path / "c.npz"
    assert main(["train", "--dataset", str(tmp_path / "d.npz"), "--epochs", "1", "--quiet",
                 "--backend", "numpy", "--save", str(ck)]
                + (["--loss", "bce_logits"] if outputs == 1 else [])) == 0
    classes = max(outputs, 2)
    y_bad = y[:12].copy()
    y_bad[7] = classes  # the first one past them; another further on
    y_bad[9] = classes + 4
    np.savetxt(tmp_path / "bad.csv", np.column_stack([x[:12], y_bad]), delimiter=",",
               header="a,b,y", comments="", fmt=["%.17g", "%.17g", "%d"])
    np.savez(tmp_path / "bad.npz", x=x[:12], y=y_bad)
    for given, where in (("bad.csv", "line 9"), ("bad.npz", "row 7")):
        assert main(["evaluate", "--checkpoint", str(ck), "--dataset", str(tmp_path / given),
                     "--backend", "numpy"] + (["--target", "y"] if given.endswith("csv")
                                              else [])) == 1
        assert f"gpunet: error: {tmp_path / given}: {where} holds the class {classes}, which " \
            f"is not one of the model's classes (0 to {classes - 1})\n" in \
            capsys.readouterr().err


def test_predict_reads_an_npz_as_train_and_evaluate_do(tmp_path, capsys):
    """train and evaluate take an .npz, predict refused one ("expected a .csv or .npy file").
    It reads its features array: --x-key, by default the run's own (here feats), else x; the
    predictions are those of the same array as an .npy."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(70, 4))
    np.savez(tmp_path / "d.npz", feats=x, y=(x[:, 0] > 0).astype(int))
    ck = tmp_path / "c.npz"
    assert main(["train", "--dataset", str(tmp_path / "d.npz"), "--x-key", "feats",
                 "--epochs", "1", "--quiet", "--backend", "numpy", "--save", str(ck)]) == 0
    new = rng.normal(size=(9, 4))
    np.save(tmp_path / "new.npy", new)
    np.save(tmp_path / "new_other.npy", new[::-1])
    np.savez(tmp_path / "new.npz", feats=new, other=new[::-1])
    outs = []
    for flags in (["--input", "new.npy"], ["--input", "new.npz"],
                  ["--input", "new_other.npy"], ["--input", "new.npz", "--x-key", "other"]):
        out = tmp_path / f"p{len(outs)}.csv"
        assert main(["predict", "--checkpoint", str(ck), "--output", str(out), "--backend",
                     "numpy", *[str(tmp_path / f) if f.startswith("new") else f
                                for f in flags]]) == 0
        outs.append(out.read_text().splitlines())
    assert outs[1] == outs[0] and outs[3] == outs[2]
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "new.npz"),
                 "--output", str(tmp_path / "p.csv"), "--x-key", "x"]) == 1
    assert "new.npz: no array 'x'; arrays present: feats, other" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "new.npy"),
                 "--output", str(tmp_path / "p.csv"), "--x-key", "feats"]) == 1
    assert "--x-key names the features array of an .npz input" in capsys.readouterr().err


# ---- predict a block of rows at a time ---------------------------------------------------------

def _fill_run(tmp_path, dtype="float32"):
    """A run with --fill-missing on 3 numeric columns, a target and an id column it ignores:
    its checkpoint."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    rows = [f"i{k},{a},{b},{c},{int(a + b > 0)}" for k, (a, b, c) in enumerate(x.tolist())]
    (tmp_path / "train.csv").write_text("id,a,b,c,y\n" + "\n".join(rows) + "\n")
    ck = tmp_path / f"run{dtype}.npz"
    assert main(["train", "--dataset", str(tmp_path / "train.csv"), "--target", "y",
                 "--ignore", "id", "--fill-missing", "mean", "--epochs", "2", "--quiet",
                 "--dtype", dtype, "--backend", "numpy", "--save", str(ck)]) == 0
    return ck


def _new_rows(tmp_path, n=40):
    """A file to predict on whose blocks of 7 lines meet the row-by-row cases at their edges:
    blank lines (one at a block's first line), a missing value in a block's last and first
    rows, a quoted id running on over a block's end, and blocks of plain numbers between."""
    rng = np.random.default_rng(2)
    lines = [f"r{k},{a},{b},{c}"
             for k, (a, b, c) in enumerate(rng.normal(size=(n, 3)).tolist())]
    if n == 40:
        lines[6] = "r6,,0.5,1.5"     # line 8: the first block's last row
        lines[7] = "r7,0.25,NA,2"    # line 9, the second block's first
        lines[13] = '"r\n13",1,2,3'  # lines 15-16: a quoted id, from the second block on
        lines[20:20] = ["", "  "]    # blank lines, the first at line 23 (the fourth block's)
    path = tmp_path / "new.csv"
    path.write_text("id,a,b,c\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_reads_a_block_at_a_time_and_writes_the_whole_files_predictions(
        tmp_path, monkeypatch, capsys, dtype):
    """predict reads, standardises, predicts and writes FEATURE_BLOCK_ROWS rows at a time (it
    held the file as float64, a standardised copy and a list of its line numbers: 512 MB for
    2M rows of 20 columns). In blocks of 7 the output is the one block's, byte for byte, and
    the model's own prediction of the whole file's rows; --keep's cells stay with their rows."""
    import gpunet.cli as cli
    import gpunet.data as data
    from gpunet.checkpoint import load_checkpoint
    from gpunet.data import read_features

    ck = _fill_run(tmp_path, dtype)
    new = _new_rows(tmp_path)
    args = ["predict", "--checkpoint", str(ck), "--input", str(new), "--backend", "numpy"]
    outputs = {}
    monkeypatch.setattr(cli, "PREDICT_BATCH_ROWS", 7)  # (BLAS sums a row alike in batches alike)
    for rows in (1 << 16, 7, 3, 1):
        monkeypatch.setattr(data, "FEATURE_BLOCK_ROWS", rows)
        for suffix in (".csv", ".npy"):
            out = tmp_path / f"p{rows}{suffix}"
            keep = ["--keep", "id"] if suffix == ".csv" else []
            assert main(args + ["--output", str(out)] + keep) == 0
            assert capsys.readouterr().err.count("wrote 40 predictions") == 1
            outputs[rows, suffix] = out.read_bytes()
    for suffix in (".csv", ".npy"):
        assert outputs[7, suffix] == outputs[3, suffix] == outputs[1, suffix] \
            == outputs[1 << 16, suffix]
    with open(tmp_path / "p7.csv") as f:
        import csv

        ids = [r[0] for r in list(csv.reader(f))[1:]]
    assert ids == [f"r{k}" if k != 13 else "r\n13" for k in range(40)]
    c = load_checkpoint(ck)
    model = c.build_model("numpy")
    x = read_features(new, c.features, np.asarray(c.extra["fill_values"]), ignore=["id"])
    logits = model.predict(c.standardizer(x, dtype=model.dtype), batch_size=7)
    got = np.load(tmp_path / "p3.npy")
    np.testing.assert_array_equal(got[:, 0], np.argmax(logits, axis=1))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got[:, 1:], p / p.sum(axis=1, keepdims=True), rtol=1e-6)


def test_a_blocks_error_names_its_line_and_a_notice_is_said_once(tmp_path, monkeypatch,
                                                                 capsys, caplog):
    """An error in a later block names the file's line; the notices (a model trained on
    arrays, cells of unseen categories) are said once for the file, the unseen cells counted
    over every block; a .npy input's bad value names its row in the file."""
    import gpunet.data as data

    monkeypatch.setattr(data, "FEATURE_BLOCK_ROWS", 4)
    ck = _fill_run(tmp_path)
    new = _new_rows(tmp_path, n=12)
    new.write_text(new.read_text().replace("\nr10,", "\nr10,oops"))
    out = tmp_path / "p.csv"
    args = ["predict", "--checkpoint", str(ck), "--input", str(new), "--output", str(out),
            "--backend", "numpy"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "new.csv: line 12, column 'a': 'oops" in err and not out.exists()
    # a text column's unseen categories, over blocks
    from test_categorical import ISLANDS, penguins, write

    sp, isl, bill, depth, sex = penguins()
    write(tmp_path / "pen.csv", [sp, isl, bill, depth, sex],
          ["species", "island", "bill", "depth", "sex"])
    pen = tmp_path / "pen.npz"
    assert main(["train", "--dataset", str(tmp_path / "pen.csv"), "--target", "species",
                 "--epochs", "1", "--quiet", "--backend", "numpy", "--save", str(pen)]) == 0
    _, isl, bill, depth, sex = penguins(n=15, seed=6)
    isl = isl.astype("U16")
    isl[[1, 9, 14]] = "Atlantis"
    write(tmp_path / "pn.csv", [isl, bill, depth, sex], ["island", "bill", "depth", "sex"])
    got = {}
    for rows in (4, 1 << 16):
        monkeypatch.setattr(data, "FEATURE_BLOCK_ROWS", rows)
        caplog.clear()
        assert main(["predict", "--checkpoint", str(pen), "--input", str(tmp_path / "pn.csv"),
                     "--output", str(tmp_path / f"pn{rows}.csv"), "--backend", "numpy",
                     "--unseen-category", "none"]) == 0
        assert said(caplog).count("never saw") == 1
        assert "column 'island': 3 cell(s) hold a category the model never saw (such as " \
            "'Atlantis'), encoded as none" in caplog.text
        got[rows] = (tmp_path / f"pn{rows}.csv").read_bytes()
    assert got[4] == got[1 << 16] and "Atlantis" not in ISLANDS
    monkeypatch.setattr(data, "FEATURE_BLOCK_ROWS", 4)
    isl[9] = "Nowhere"  # (no --unseen-category none: the first unseen, its line, an error)
    write(tmp_path / "pn.csv", [isl, bill, depth, sex], ["island", "bill", "depth", "sex"])
    assert main(["predict", "--checkpoint", str(pen), "--input", str(tmp_path / "pn.csv"),
                 "--output", str(tmp_path / "pn.csv.out.csv"), "--backend", "numpy"]) == 1
    assert "pn.csv: line 3, column 'island': 'Atlantis' is not one of" in capsys.readouterr().err
    # a .npy input, mapped: a bad value's row is the file's
    x = np.random.default_rng(0).normal(size=(11, 3))
    x[9, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "px.npy"), "--backend", "numpy"]) == 1
    assert "x.npy: feature row 9, column 2 is nan (NaN or infinity)" in capsys.readouterr().err


@pytest.mark.parametrize("make", [
    lambda x: x, lambda x: x.astype(">f8"), lambda x: x.astype(np.float32),
    lambda x: (x * 100).astype(np.int32), lambda x: np.asfortranarray(x),
    lambda x: x.reshape(len(x), 2, 2)])
def test_a_npy_inputs_blocks_are_its_rows(tmp_path, monkeypatch, make):
    """feature_blocks reads a .npy file a block of rows at a time (from its mapping's offset,
    or the mapping itself for Fortran order): the blocks are read_features' rows, bit for
    bit, whatever the file's dtype, byte order or shape."""
    import gpunet.data as data
    from gpunet.data import feature_blocks, read_features

    monkeypatch.setattr(data, "FEATURE_BLOCK_ROWS", 3)
    a = make(np.random.default_rng(0).normal(size=(10, 4)))
    np.save(tmp_path / "x.npy", a)
    for keep in (False, True):
        blocks = [b for b, kept in feature_blocks(tmp_path / "x.npy", keep_float32=keep)]
        assert [len(b) for b in blocks] == [3, 3, 3, 1]
        want = read_features(tmp_path / "x.npy", keep_float32=keep)
        got = np.concatenate(blocks)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
