"""Multilabel classification: targets (samples, labels) of 0/1, one logistic output per label,
trained on binary cross-entropy. References built here: torch's BCE-with-logits on the model's
outputs, a float64 NumPy forward pass from the fitted weights, scikit-learn's accuracy_score
(subset accuracy) and its estimator conventions."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")

from scipy.special import log_expit
from sklearn.datasets import make_multilabel_classification
from sklearn.metrics import accuracy_score

import gpunet as gn
from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.data import DataSpec, load_data, make_dataset
from gpunet.errors import ConfigError, DataError, ShapeError
from gpunet.train import fit, metrics

from conftest import BACKENDS, host


def _data(n=400, labels=4, seed=0):
    x, y = make_multilabel_classification(n_samples=n, n_features=9, n_classes=labels,
                                          random_state=seed)
    return x, y


def _learnable(n=600, seed=0):
    """Three labels, each a simple function of the features (so a net can learn all three)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    y = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0.3, x[:, 3] - x[:, 4] < 0], axis=1)
    return x, y.astype(np.int64)


def _forward64(clf, x):
    """The fitted network's logits in float64 NumPy, from its coefs_ and intercepts_."""
    h = clf.standardizer_(x) if clf.standardizer_ is not None else x
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        h = h @ w + b
        if i < len(clf.coefs_) - 1:
            h = np.maximum(h, 0)
    return h


# -- the estimator --------------------------------------------------------------------------------

def test_a_classifier_fits_an_indicator_matrix_with_a_logistic_output_per_label():
    x, y = _learnable()
    clf = gn.MLPClassifier(hidden=(32,), epochs=40, lr=0.01, backend="numpy",
                           dtype="float64").fit(x[:500], y[:500])
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 3
    z = _forward64(clf, x[500:])
    proba = clf.predict_proba(x[500:])
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-z)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(x[500:]), log_expit(z), rtol=1e-9)
    pred = clf.predict(x[500:])
    assert pred.shape == (100, 3) and pred.dtype.kind == "i"
    np.testing.assert_array_equal(pred, (z > 0).astype(int))
    # score is subset accuracy (every label of a row right), as scikit-learn's
    assert clf.score(x[500:], y[500:]) == accuracy_score(y[500:], pred)
    assert clf.score(x[500:], y[500:]) > 0.85  # chance (all three right) is about 1/8
    # each label alone is learnt far better than its base rate
    per_label = (pred == y[500:]).mean(axis=0)
    assert (per_label > 0.9).all(), per_label


def test_the_training_loss_is_torch_binary_cross_entropy_on_the_logits(torch):
    x, y = _data()
    clf = gn.MLPClassifier(hidden=(16,), epochs=3, backend="numpy", dtype="float64",
                           standardize=False).fit(x, y)
    model = clf.model_
    got = metrics(model, x, y.astype(np.float64), gn.BCEWithLogitsLoss(), "classification")
    z = torch.tensor(_forward64(clf, x))
    ref = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(y, dtype=z.dtype))
    assert got["loss"] == pytest.approx(float(ref), rel=1e-10)
    assert got["accuracy"] == accuracy_score(y, (z.numpy() > 0).astype(int))


def test_predictions_and_training_survive_save_load_and_pickle(tmp_path):
    x, y = _data()
    clf = gn.MLPClassifier(hidden=(16,), epochs=4, backend="numpy").fit(x, y)
    clf.save(tmp_path / "m.npz")
    for other in (gn.MLPClassifier.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(clf))):
        assert other.out_activation_ == "logistic"
        np.testing.assert_array_equal(other.predict(x), clf.predict(x))
        np.testing.assert_array_equal(other.predict_proba(x), clf.predict_proba(x))
        other.partial_fit(x, y)  # goes on as multilabel
        assert other.predict(x).shape == y.shape


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_sparse_indicator_matrix_gives_sparse_predictions_as_scikit_learns(tmp_path):
    from scipy.sparse import csr_matrix, issparse
    from sklearn.neural_network import MLPClassifier as SkMLP

    x, y = _data()
    sk = SkMLP(hidden_layer_sizes=(4,), max_iter=2).fit(x, csr_matrix(y))
    clf = gn.MLPClassifier(hidden=(16,), epochs=4, backend="numpy", dtype="float64")
    dense = gn.MLPClassifier(hidden=(16,), epochs=4, backend="numpy", dtype="float64")
    clf.fit(x, csr_matrix(y))
    dense.fit(x, y)
    assert issparse(sk.predict(x)) and issparse(clf.predict(x))  # as scikit-learn's
    assert not issparse(dense.predict(x))
    np.testing.assert_array_equal(clf.predict(x).toarray(), dense.predict(x))  # same training
    assert clf.score(x, csr_matrix(y)) == accuracy_score(y, dense.predict(x))
    clf.save(tmp_path / "m.npz")
    for other in (gn.MLPClassifier.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(clf))):
        assert issparse(other.predict(x))
        np.testing.assert_array_equal(other.predict(x).toarray(), dense.predict(x))
    streamed = gn.MLPClassifier(hidden=(4,), backend="numpy").partial_fit(x, csr_matrix(y))
    assert issparse(streamed.predict(x))
    clf.set_params(warm_start=True).fit(x, y)  # dense y on: the kind fit first saw stays
    sk.set_params(warm_start=True).fit(x, y)
    assert issparse(clf.predict(x)) and issparse(sk.predict(x))


def test_the_cli_predicts_each_label_of_a_saved_multilabel_estimator(tmp_path, capsys):
    x, y = _data(labels=3)
    clf = gn.MLPClassifier(hidden=(16,), epochs=4, backend="numpy").fit(x, y)
    clf.save(tmp_path / "m.npz")
    np.savetxt(tmp_path / "in.csv", x[:25], delimiter=",", comments="",
               header=",".join(f"f{i}" for i in range(x.shape[1])))
    assert main(["predict", "--checkpoint", str(tmp_path / "m.npz"), "--input",
                 str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"),
                 "--backend", "numpy"]) == 0
    header = (tmp_path / "out.csv").read_text().splitlines()[0].split(",")
    assert header == ["label_0", "label_1", "label_2", "p_0", "p_1", "p_2"]
    table = np.loadtxt(tmp_path / "out.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(table[:, :3], clf.predict(x[:25]))
    # (the same logits, to the bit; predict's sigmoid runs in the model's float32, a couple of
    # ulp, 1.2e-7 each, from predict_proba's float64, then 8 digits of CSV)
    np.testing.assert_allclose(table[:, 3:], clf.predict_proba(x[:25]), rtol=3e-7)
    assert main(["info", "--checkpoint", str(tmp_path / "m.npz")]) == 0
    assert "multilabel: 3 labels" in capsys.readouterr().out
    # evaluate on a file of the same rows: the estimator's score (its classes are the label
    # columns 0..2, not names to map the targets through)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "m.npz"), "--dataset",
                 str(tmp_path / "d.npz"), "--split", "all", "--backend", "numpy",
                 "--metrics-json", str(tmp_path / "e.json")]) == 0
    got = json.loads((tmp_path / "e.json").read_text())
    assert got["all_accuracy"] == pytest.approx(clf.score(x, y))


def test_partial_fit_streams_multilabel_chunks_and_checks_them():
    x, y = _learnable()
    clf = gn.MLPClassifier(hidden=(32,), lr=0.01, backend="numpy")
    for epoch in range(15):
        for lo in range(0, 500, 100):
            clf.partial_fit(x[lo:lo + 100], y[lo:lo + 100])
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.score(x[500:], y[500:]) > 0.7
    with pytest.raises(ValueError, match="y has 2 label columns"):
        clf.partial_fit(x[:50], y[:50, :2])
    with pytest.raises(ValueError, match="one label a row"):
        clf.partial_fit(x[:50], y[:50, 0])
    with pytest.raises(ValueError, match=r"classes 0..2"):
        gn.MLPClassifier(backend="numpy").partial_fit(x[:50], y[:50], classes=[1, 2, 3])
    labels = gn.MLPClassifier(hidden=(4,), backend="numpy").partial_fit(
        x[:50], y[:50, 0], classes=[0, 1])
    with pytest.raises(ValueError, match="as classes"):
        labels.partial_fit(x[:50], y[:50])


def test_warm_start_keeps_the_kind_of_targets():
    x, y = _data()
    clf = gn.MLPClassifier(hidden=(8,), epochs=2, warm_start=True, backend="numpy").fit(x, y)
    clf.fit(x, y)  # two more epochs, fine
    assert clf.n_iter_ == 4
    with pytest.raises(ValueError, match="warm_start needs targets of the 4 labels"):
        clf.fit(x, y[:, :3])
    with pytest.raises(ValueError, match="warm_start needs labels of the classes"):
        clf.fit(x, y[:, 0])


def test_label_smoothing_is_refused_for_multilabel_targets():
    x, y = _data()
    with pytest.raises(ConfigError, match="multilabel targets train a binary log loss"):
        gn.MLPClassifier(label_smoothing=0.1, epochs=1, backend="numpy").fit(x, y)


def test_sample_weights_weight_each_row_over_its_labels():
    """A weight of 2 counts a row as two copies would: one batch holding every row."""
    x, y = _data(n=60)
    w = np.random.default_rng(0).integers(1, 3, len(x))
    kw = dict(hidden=(8,), epochs=5, batch_size=200, backend="numpy", dtype="float64",
              optimizer="sgd", lr=0.1, standardize=False)
    weighted = gn.MLPClassifier(**kw).fit(x, y, sample_weight=w)
    repeated = gn.MLPClassifier(**kw).fit(np.repeat(x, w, axis=0), np.repeat(y, w, axis=0))
    np.testing.assert_allclose(weighted.predict_proba(x), repeated.predict_proba(x),
                               rtol=1e-10)


# -- gpunet.fit and the data ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss, output", [("bce_logits", "identity"), ("bce", "sigmoid")])
def test_fit_takes_static_steps_with_the_numbers_of_eager_ones(backend, loss, output):
    x, y = _data()
    data = make_dataset("ml", x, y, "classification", seed=1, val_fraction=0.2)
    assert data.multilabel and data.n_outputs == 4 and data.y_train.shape[1] == 4
    runs = []
    for graph in (True, False):
        model = gn.MLP([9, 16, 4], output=output, backend=backend, seed=3)
        cache = {}
        h = fit(model, data, gn.get_loss(loss), gn.Adam(model, lr=0.01), epochs=3,
                batch_size=16, seed=2, progress=False, graph=graph, step_cache=cache)
        assert ("static" in cache) == graph
        runs.append((model, h))
    (a, ha), (b, hb) = runs
    for k in a.params:
        np.testing.assert_allclose(host(a.params[k]), host(b.params[k]), rtol=1e-6, atol=1e-7)
    for ra, rb in zip(ha, hb):  # train accuracy: the static step's count, the eager one's
        for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-6), k
    # the reported accuracy is subset accuracy on the split
    model = a
    z = host(model.predict(model.backend.asarray(data.x_test, dtype=model.dtype)))
    threshold = 0.5 if output == "sigmoid" else 0.0
    assert ha.test["test_accuracy"] == pytest.approx(
        accuracy_score(data.y_test, (z > threshold).astype(int)))


def test_targets_and_losses_that_do_not_fit_are_named():
    x, y = _data()
    bad = y.astype(float)
    bad[7, 2] = 0.5
    with pytest.raises(DataError, match="row 7 holds 0.5 in column 2"):
        make_dataset("ml", x, bad, "classification")
    # a CSV's target columns by name (the number was of --target's order, not the file's)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/m.csv"
        with open(path, "w") as f:
            f.write("a,price,physics\n" + "".join(f"{i},{3 * i}.5,{i % 2}\n" for i in range(9)))
        with pytest.raises(DataError, match=r"line 2 holds 0.5 in column 'price'"):
            load_data(DataSpec(path, target=["physics", "price"], task="classification"))
    data = make_dataset("ml", x, y, "classification")
    model = gn.MLP([9, 8, 4])
    with pytest.raises(ConfigError, match="bce_logits.*cross_entropy does not fit them"):
        fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model), epochs=1, progress=False)
    small = gn.MLP([9, 8, 3])
    with pytest.raises(ShapeError, match="4 labels need as many outputs; this model has 3"):
        fit(small, data, gn.BCEWithLogitsLoss(), gn.SGD(small), epochs=1, progress=False)


def test_the_cli_trains_evaluates_and_plots_multilabel_files(tmp_path, capsys):
    x, y = _data()
    np.savez(tmp_path / "ml.npz", x=x, y=y)
    run = tmp_path / "run.npz"
    base = ["train", "--dataset", str(tmp_path / "ml.npz"), "--task", "classification",
            "--backend", "numpy", "--quiet", "--hidden", "16"]
    assert main([*base, "--loss", "bce_logits", "--epochs", "3", "--save", str(run),
                 "--plot", str(tmp_path / "run.png"), "--metrics-json",
                 str(tmp_path / "m.json")]) == 0
    assert (tmp_path / "run.png").stat().st_size > 0
    final = json.loads((tmp_path / "m.json").read_text())
    assert main(["evaluate", "--checkpoint", str(run), "--metrics-json",
                 str(tmp_path / "e.json"), "--backend", "numpy"]) == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())
    acc = [v for k, v in evaluated.items() if k.endswith("accuracy")]
    assert acc and acc[0] == pytest.approx(final["test_accuracy"])
    # without --loss, multilabel targets take bce_logits (cross-entropy does not fit them)
    assert main([*base, "--epochs", "1", "--save", str(tmp_path / "d.npz")]) == 0
    assert load_checkpoint(tmp_path / "d.npz").extra["training"]["loss"]["name"] == "bce_logits"
    capsys.readouterr()
    assert main([*base, "--epochs", "1", "--loss", "cross_entropy"]) == 1
    assert "trained with bce_logits" in capsys.readouterr().err
    assert main([*base, "--loss", "bce_logits", "--epochs", "1", "--class-weight",
                 "balanced"]) == 1
    assert "multilabel targets (4 labels a row)" in capsys.readouterr().err


# -- several target columns of a CSV ---------------------------------------------------------------

def _csv_and_npz(tmp_path, n=240):
    """The same rows as a CSV (features a..d, two 0/1 labels, two real targets) and as two
    .npz files holding the labels or the real targets as y."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, 4)).round(5)
    labels = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0], axis=1).astype(np.int64)
    values = np.stack([2 * x[:, 0] + x[:, 3], x[:, 1] - x[:, 2]], axis=1).round(5)
    rows = ["a,b,c,d,l1,l2,r1,r2"] + [
        ",".join(f"{v:.5f}" for v in x[i]) + f",{labels[i, 0]},{labels[i, 1]},"
        + ",".join(f"{v:.5f}" for v in values[i]) for i in range(n)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    np.savez(tmp_path / "labels.npz", x=np.column_stack([x, values]), y=labels)
    np.savez(tmp_path / "values.npz", x=np.column_stack([x, labels]), y=values)
    return x, labels, values


@pytest.mark.parametrize("kind", ["multilabel", "regression"])
def test_several_csv_target_columns_train_as_the_npz_of_them(tmp_path, capsys, kind):
    """--target repeated: the CSV's columns are the targets, in order, so the run equals one
    on an .npz holding the same arrays (the other two target columns being features there, as
    they are in the CSV), to the bit; evaluate and predict read the file the same way, and
    predict heads its columns with the targets' names."""
    x, labels, values = _csv_and_npz(tmp_path)
    names = ["l1", "l2"] if kind == "multilabel" else ["r1", "r2"]
    flags = ["--loss", "bce_logits"] if kind == "multilabel" else []
    base = ["train", "--backend", "numpy", "--quiet", "--hidden", "8", "--epochs", "3", *flags]
    csv_run, npz_run = tmp_path / "c.npz", tmp_path / "n.npz"
    assert main([*base, "--dataset", str(tmp_path / "d.csv"), "--target", names[0],
                 "--target", names[1], "--save", str(csv_run)]) == 0
    npz = tmp_path / ("labels.npz" if kind == "multilabel" else "values.npz")
    assert main([*base, "--dataset", str(npz), "--save", str(npz_run)]) == 0
    a, b = load_checkpoint(csv_run), load_checkpoint(npz_run)
    for k in b.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    assert a.extra["data"]["target"] == names
    assert a.extra.get("multilabel", False) == (kind == "multilabel")
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(csv_run)]) == 0
    assert f"(targets {names[0]}, {names[1]})" in capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(csv_run), "--input", str(tmp_path / "d.csv"),
                 "--output", str(tmp_path / "p.csv"), "--backend", "numpy"]) == 0
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    table = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    model = a.build_model("numpy", weights="best")
    other = values if kind == "multilabel" else labels
    z = np.asarray(model.predict(a.standardizer(np.column_stack([x, other]))), np.float64)
    # evaluate with the target columns named in another order: the run's order, the same
    # figures
    for order, name in ((names, "e1.json"), (names[::-1], "e2.json")):
        assert main(["evaluate", "--checkpoint", str(csv_run), "--split", "all", "--backend",
                     "numpy", "--target", order[0], "--target", order[1], "--metrics-json",
                     str(tmp_path / name)]) == 0
    assert (tmp_path / "e1.json").read_text().replace("e1", "") == \
        (tmp_path / "e2.json").read_text().replace("e2", "")
    # resume names them in either order too (and goes on with the run's)
    assert main(["train", "--resume", str(csv_run), "--epochs", "4", "--quiet", "--target",
                 names[1], "--target", names[0]]) == 0
    assert load_checkpoint(csv_run).extra["data"]["target"] == names
    if kind == "multilabel":
        assert header == ["label_l1", "label_l2", "p_l1", "p_l2"]
        np.testing.assert_array_equal(table[:, :2], (z > 0).astype(int))
        np.testing.assert_allclose(table[:, 2:], 1 / (1 + np.exp(-z)), rtol=1e-6)
    else:
        assert header == ["r1", "r2"]
        np.testing.assert_allclose(table, a.target_standardizer.inverse(z), rtol=1e-6)


def test_what_several_target_columns_refuse(tmp_path, capsys):
    _csv_and_npz(tmp_path)
    text = tmp_path / "d.csv"
    rows = text.read_text().splitlines()
    rows[5] = rows[5].rsplit(",", 1)[0] + ",high"  # text in r2
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    rows = text.read_text().splitlines()
    rows[7] = ",".join(rows[7].split(",")[:4] + [""] + rows[7].split(",")[5:])  # no l1
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    base = ["train", "--backend", "numpy", "--quiet", "--epochs", "1"]
    for flags, message in (
            (["--dataset", str(tmp_path / "t.csv"), "--target", "r1", "--target", "r2"],
             "target column 'r2' mixes numbers"),
            (["--dataset", str(tmp_path / "m.csv"), "--target", "l1", "--target", "l2"],
             "line 8, target column 'l1': missing value"),
            (["--dataset", str(text), "--target", "l1", "--target", "l1"],
             "--target must name each column once; 'l1' is named twice"),
            (["--dataset", str(text), "--target", "l1", "--target", "zz"], "no column 'zz'"),
            (["--dataset", str(text), "--target", "l1", "--target", "r1", "--weight-column",
              "r1"], "the weight column 'r1' is a target column"),
            (["--dataset", str(tmp_path / "labels.npz"), "--target", "a", "--target", "b"],
             "several target columns apply to .csv datasets")):
        capsys.readouterr()
        assert main([*base, *flags]) == 1, flags
        err = capsys.readouterr().err
        assert message in err and err.count("\n") <= 2, (flags, err)


def test_partial_fit_keeps_a_dataframes_label_names_as_fit_does(tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas is in the test extra")
    x, y = _data(labels=2)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    labels = pd.DataFrame(y, columns=["l1", "l2"])
    for how in ("fit", "partial_fit"):
        clf = getattr(gn.MLPClassifier(hidden=(4,), epochs=2, backend="numpy"), how)(frame,
                                                                                   labels)
        clf.save(tmp_path / f"{how}.npz")
        pd.concat([frame, labels], axis=1).to_csv(tmp_path / "in.csv", index=False)
        assert main(["predict", "--checkpoint", str(tmp_path / f"{how}.npz"), "--input",
                     str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"),
                     "--backend", "numpy"]) == 0, how  # (the label columns left out)
        header = (tmp_path / "out.csv").read_text().splitlines()[0]
        assert header == "label_l1,label_l2,p_l1,p_l2", how  # (named after its columns)
