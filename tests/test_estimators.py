"""The scikit-learn estimators (gpunet.estimators): scikit-learn's own conformance checks, and
what they compute held against references built here (a float64 NumPy forward pass from the
fitted weights, scaled targets, label renaming)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6",
                    reason="the estimators need scikit-learn >= 1.6 (validate_data, tags)")

from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import gpunet as gn
from gpunet.estimators import MLPClassifier, MLPRegressor

from conftest import BACKENDS

FLOAT32_SUBSET = ("float32 GEMMs round a row's outputs differently with the batch's row count "
                  "(BLAS blocking): predictions of a subset differ from the whole batch's by "
                  "~1e-7 relative, at float32 rounding")


FLOAT32_WEIGHTS = ("float32 rounds a weighted mean over rows differently from the plain mean over "
                   "the same rows repeated: predictions differ by ~1e-6 relative after 30 "
                   "epochs, at float32 rounding")


DROPOUT_WEIGHTS = ("with dropout, k copies of a row draw k independent masks, while a row of "
                   "weight k draws one: the two are equal in expectation only")


def _expected_failures(estimator):
    if estimator.dropout:
        return {"check_sample_weight_equivalence_on_dense_data": DROPOUT_WEIGHTS}
    if estimator.dtype == "float32":
        return {"check_methods_subset_invariance": FLOAT32_SUBSET,
                "check_sample_weight_equivalence_on_dense_data": FLOAT32_WEIGHTS}
    return {}


@parametrize_with_checks(
    [E(backend="numpy", dtype=d) for E in (MLPClassifier, MLPRegressor)
     for d in ("float32", "float64")]
    + [MLPClassifier(backend="numpy", dtype="float64", dropout=0.2)],
    expected_failed_checks=_expected_failures)
def test_scikit_learn_conformance(estimator, check):
    check(estimator)


def test_the_float32_subset_check_fails_only_by_float32_rounding():
    """The subset check float32 is excused from: its gap is rounding, and float64 closes it."""
    x, y = make_classification(300, 12, n_informative=6, n_classes=3, random_state=0)
    rows = np.random.default_rng(0).choice(300, 37, replace=False)
    for dtype, tol in (("float32", 2e-6), ("float64", 1e-13)):
        clf = MLPClassifier(epochs=5, backend="numpy", dtype=dtype).fit(x, y)
        whole, part = clf.predict_proba(x)[rows], clf.predict_proba(x[rows])
        np.testing.assert_allclose(part, whole, rtol=tol, atol=tol)


def test_the_float32_weights_check_fails_only_by_float32_rounding():
    """Integer weights against repeated rows (scikit-learn's check, whose data fit one batch):
    float32 agrees to its rounding, float64 to its own."""
    rng = np.random.RandomState(42)
    x, y, sw = rng.rand(15, 30), rng.randint(0, 3, 15), rng.randint(0, 5, 15)
    for dtype, tol in (("float32", 1e-5), ("float64", 1e-13)):
        weighted = MLPClassifier(backend="numpy", dtype=dtype).fit(x, y, sample_weight=sw)
        repeated = MLPClassifier(backend="numpy", dtype=dtype).fit(x.repeat(sw, axis=0),
                                                                  y.repeat(sw))
        np.testing.assert_allclose(weighted.predict_proba(x), repeated.predict_proba(x),
                                   rtol=tol, atol=tol)


def _digits():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def digits_fit():
    x_train, x_test, y_train, y_test = _digits()
    clf = MLPClassifier(backend="numpy", random_state=0).fit(x_train, y_train)
    return clf, x_train, x_test, y_train, y_test


def test_classifier_learns_digits(digits_fit):
    clf, _, x_test, _, y_test = digits_fit
    assert clf.score(x_test, y_test) >= 0.95
    assert clf.n_iter_ == 30 and len(clf.loss_curve_) == 30
    assert clf.loss_curve_[-1] < 0.1 * clf.loss_curve_[0]
    np.testing.assert_array_equal(clf.classes_, np.arange(10))


def _forward64(clf, x):
    """Logits from the fitted weights, recomputed in float64 NumPy: (x - mean) / std, then
    relu(h W^T + b) per hidden layer and h W^T + b at the top."""
    params = {k: np.asarray(v, dtype=np.float64) for k, v in clf.model_.state_dict().items()}
    s = clf.standardizer_
    h = (np.asarray(x, dtype=np.float64) - s.mean) / s.std
    n_layers = len(params) // 2
    for i in range(1, n_layers + 1):
        h = h @ params[f"W{i}"].T + params[f"b{i}"]
        if i < n_layers:
            h = np.maximum(h, 0)
    return h


def test_probabilities_are_the_softmax_of_the_fitted_net(digits_fit):
    clf, _, x_test, _, _ = digits_fit
    logits = _forward64(clf, x_test)
    ref = np.exp(logits - logits.max(axis=1, keepdims=True))
    ref /= ref.sum(axis=1, keepdims=True)
    p = clf.predict_proba(x_test)
    assert p.dtype == np.float64 and p.shape == (len(x_test), 10)
    np.testing.assert_allclose(p, ref, rtol=1e-4, atol=1e-6)  # the net runs in float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(x_test), np.log(ref), rtol=1e-4,
                               atol=1e-4)
    assert (clf.predict(x_test) == logits.argmax(axis=1)).mean() > 0.99


def test_labels_of_any_kind_train_the_same_net():
    """String labels are learnt as classes_ in sorted order: renaming 0..2 to words that sort
    the same way changes nothing but the names."""
    x, y = make_classification(240, 8, n_informative=5, n_classes=3, random_state=1)
    names = np.array(["ant", "bee", "cat"])
    a = MLPClassifier(epochs=8, backend="numpy").fit(x, y)
    b = MLPClassifier(epochs=8, backend="numpy").fit(x, names[y])
    np.testing.assert_array_equal(b.classes_, names)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    np.testing.assert_array_equal(names[a.predict(x)], b.predict(x))
    shifted = MLPClassifier(epochs=8, backend="numpy").fit(x, 10 * y + 7)  # not 0..k-1
    np.testing.assert_array_equal(shifted.classes_, [7, 17, 27])
    np.testing.assert_array_equal(shifted.predict_proba(x), a.predict_proba(x))


def test_regressor_predicts_in_the_targets_units():
    """Targets are standardised for training: an affine change of units trains the same net
    and comes back in the new units."""
    x, y = make_regression(300, 6, noise=5.0, random_state=2)
    a = MLPRegressor(epochs=40, backend="numpy", dtype="float64").fit(x, y)
    b = MLPRegressor(epochs=40, backend="numpy", dtype="float64").fit(x, 1000 * y + 5)
    pa, pb = a.predict(x), b.predict(x)
    assert pa.shape == (300,)
    np.testing.assert_allclose(pb, 1000 * pa + 5, rtol=1e-9, atol=1e-6)
    assert a.score(x, y) > 0.9
    raw = MLPRegressor(epochs=10, backend="numpy", standardize=False).fit(x, y)
    assert raw.target_standardizer_ is None and raw.standardizer_ is None


def test_regressor_takes_several_targets():
    x, y = make_regression(200, 5, n_targets=3, random_state=3)
    reg = MLPRegressor(epochs=20, backend="numpy").fit(x, y)
    assert reg.predict(x).shape == (200, 3) and reg.model_.sizes[-1] == 3


def test_a_one_column_target_is_one_target_as_scikit_learn_takes_it(tmp_path):
    """y of one column, (n, 1) (a one-column DataFrame, df[["price"]]), predicted (n, 1),
    so that y - predict(X) broadcast to (n, n): scikit-learn's MLPRegressor ravels it with
    a DataConversionWarning and predicts (n,); so does this one, the same net as fitted on
    the column (n,). fit, partial_fit and score take it; the column's name is kept, and
    `gpunet predict` leaves that column of a CSV out and heads its output with it."""
    import warnings

    pd = pytest.importorskip("pandas", reason="pandas is in the test extra")
    from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
    from sklearn.metrics import r2_score
    from sklearn.neural_network import MLPRegressor as SklearnMLP

    from gpunet.cli import main

    x, y = make_regression(60, 3, random_state=0)
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    price = pd.DataFrame({"price": y})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(DataConversionWarning, match="A column-vector y was passed") as sk:
            want = SklearnMLP(max_iter=2).fit(x, price).predict(x).shape
    kw = dict(epochs=5, backend="numpy", dtype="float64")
    with pytest.warns(DataConversionWarning) as ours:
        reg = MLPRegressor(**kw).fit(frame, price)
    assert str(ours[0].message) == str(sk[0].message)
    assert reg.predict(frame).shape == want == (60,)
    np.testing.assert_array_equal(reg.predict(frame),
                                  MLPRegressor(**kw).fit(frame, price["price"]).predict(frame))
    assert reg.score(frame, price) == pytest.approx(r2_score(y, reg.predict(frame)), rel=1e-12)
    stream = MLPRegressor(**kw)
    with pytest.warns(DataConversionWarning):
        stream.partial_fit(x, y[:, None])
    stream.partial_fit(x, y)
    with pytest.warns(DataConversionWarning):
        stream.partial_fit(x, y[:, None])
    assert stream.predict(x).shape == (60,) and stream.n_iter_ == 3
    reg.save(tmp_path / "r.npz")
    assert MLPRegressor.load(tmp_path / "r.npz").predict(frame).shape == (60,)
    frame.assign(price=y)[["price", "c", "a", "b"]].to_csv(tmp_path / "d.csv", index=False)
    assert main(["predict", "--checkpoint", str(tmp_path / "r.npz"), "--input",
                 str(tmp_path / "d.csv"), "--output", str(tmp_path / "p.csv")]) == 0
    got = pd.read_csv(tmp_path / "p.csv")
    assert list(got.columns) == ["price"]
    np.testing.assert_allclose(got["price"], reg.predict(frame), rtol=1e-12)


def test_pickle_keeps_host_arrays_and_predicts_the_same(digits_fit):
    clf, _, x_test, _, _ = digits_fit
    state = clf.__getstate__()
    assert set(state["model_"]) == {"config", "params"}
    assert all(type(v) is np.ndarray for v in state["model_"]["params"].values())
    assert isinstance(clf.model_, gn.MLP)  # pickling leaves the live estimator alone
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(x_test), clf.predict_proba(x_test))
    assert back.model_.backend.name == "numpy"


def test_a_gpu_estimators_pickle_predicts_on_a_cpu_host(digits_fit):
    """A pickle made with backend="cupy" (a GPU server's) was refused where CuPy cannot run
    (BackendUnavailableError): now it comes back on numpy with a warning, predicting as
    before. (Made here from a CPU fit whose state names cupy; skipped where CuPy runs.)"""
    from gpunet.backends import cupy_status

    if cupy_status()[0]:
        pytest.skip("CuPy runs here: the cupy backend would be taken")
    clf, _, x_test, _, _ = digits_fit
    state = clf.__getstate__()
    state["backend"] = "cupy"
    back = MLPClassifier.__new__(MLPClassifier)
    with pytest.warns(RuntimeWarning, match=r"pickled with backend='cupy', which this process "
                                            r"cannot use .*: its network is on the numpy"):
        back.__setstate__(state)
    assert back.model_.backend.name == "numpy"
    np.testing.assert_array_equal(back.predict_proba(x_test), clf.predict_proba(x_test))


def test_a_gpu_estimators_checkpoint_loads_on_a_cpu_host(digits_fit, tmp_path, monkeypatch):
    """load of an estimator saved with backend="cupy" raised BackendUnavailableError where
    CuPy cannot run, while its pickle came back on numpy: load now does as unpickling does
    (numpy, the same RuntimeWarning, the same predictions, the parameter kept); a backend
    asked for by name is still refused. (CuPy made unavailable as test_backends does.)"""
    from gpunet import backends

    clf, _, x_test, _, _ = digits_fit
    pickle.loads(pickle.dumps(clf)).set_params(backend="cupy").save(tmp_path / "gpu.npz")
    monkeypatch.setattr(backends, "_cupy_probe", (None, "CuPy is not installed (test)"))
    monkeypatch.setattr(backends, "_instances", {})
    with pytest.warns(RuntimeWarning, match=r"saved with backend='cupy', which this process "
                                            r"cannot use .*CuPy is not installed \(test\)"
                                            r".*: its network is on the numpy backend"):
        back = MLPClassifier.load(tmp_path / "gpu.npz")
    assert back.model_.backend.name == "numpy" and back.backend == "cupy"
    np.testing.assert_array_equal(back.predict_proba(x_test), clf.predict_proba(x_test))
    with pytest.raises(gn.BackendUnavailableError, match="cupy backend is unavailable"):
        MLPClassifier.load(tmp_path / "gpu.npz", backend="cupy")


def test_scikit_learn_tools_take_it():
    x, y = make_classification(300, 10, n_informative=6, n_classes=3, random_state=4)
    scores = cross_val_score(make_pipeline(StandardScaler(), MLPClassifier(
        epochs=15, backend="numpy", standardize=False)), x, y, cv=3)
    assert scores.mean() > 0.6  # three classes: chance is 1/3
    search = GridSearchCV(MLPClassifier(epochs=10, backend="numpy"),
                          {"hidden": [(8,), (32,)], "lr": [1e-3, 1e-2]}, cv=2).fit(x, y)
    assert search.best_params_["hidden"] in [(8,), (32,)]
    assert search.best_estimator_.model_.sizes[1] == search.best_params_["hidden"][0]


def test_patience_holds_out_validation_rows_and_keeps_the_best_epoch():
    x, y = make_classification(400, 10, n_informative=4, flip_y=0.3, random_state=5)
    clf = MLPClassifier(hidden=(256,), epochs=200, lr=0.01, patience=3,
                        backend="numpy").fit(x, y)
    assert clf.n_iter_ < 200 and clf.history_.stopped_early
    assert "val_loss" in clf.history_[0]
    val = [row["val_loss"] for row in clf.history_]
    assert clf.best_epoch_ == 1 + int(np.argmin(val))
    plain = MLPClassifier(epochs=3, backend="numpy").fit(x, y)
    assert "val_loss" not in plain.history_[0]  # no rows held out without patience


def test_scikit_learns_attributes_describe_the_fitted_net(digits_fit):
    """coefs_ and intercepts_ in scikit-learn's layout (its own MLPClassifier, fitted on the
    same data, is the reference for the shapes); a forward pass written on that layout gives
    predict_proba."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SklearnMLP

    clf, x_train, x_test, y_train, _ = digits_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SklearnMLP(hidden_layer_sizes=(128,), max_iter=2).fit(x_train, y_train)
    assert [c.shape for c in clf.coefs_] == [c.shape for c in sk.coefs_]
    assert [b.shape for b in clf.intercepts_] == [b.shape for b in sk.intercepts_]
    assert (clf.n_layers_, clf.n_outputs_, clf.out_activation_) == (
        sk.n_layers_, sk.n_outputs_, sk.out_activation_)
    h = clf.standardizer_(np.asarray(x_test, dtype=np.float64))
    h = np.maximum(h @ clf.coefs_[0] + clf.intercepts_[0], 0)
    z = h @ clf.coefs_[1] + clf.intercepts_[1]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p / p.sum(axis=1, keepdims=True), clf.predict_proba(x_test),
                               rtol=1e-4, atol=1e-6)
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.validation_scores_ is None
    assert clf.best_validation_score_ is None


def test_a_regressors_coefs_output_standardised_targets_as_documented():
    """The README and coefs_ said only that the first layer reads standardised features; a
    regressor's coefs_ / intercepts_ also output standardised targets, which predict turns
    into the targets' units as y_hat = z * target_standardizer_.std + target_standardizer_.mean
    (a forward pass written in float64 NumPy on scikit-learn's layout, two targets of other
    scales)."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(200, 4)) * [1, 10, 100, 0.1] + 50
    y = np.c_[x[:, 0] * 300 + 2e4, x[:, 1] * 0.01]
    reg = MLPRegressor(hidden=(8, 8), epochs=3, backend="numpy", dtype="float64").fit(x, y)
    h = (x - reg.standardizer_.mean) / reg.standardizer_.std
    for w, b in zip(reg.coefs_[:-1], reg.intercepts_[:-1]):
        h = np.maximum(h @ w + b, 0)
    z = h @ reg.coefs_[-1] + reg.intercepts_[-1]
    assert np.abs(z).max() < 10  # standardised, not in the targets' units
    t = reg.target_standardizer_
    np.testing.assert_allclose(z * t.std + t.mean, reg.predict(x), rtol=1e-10)


def test_validation_scores_are_the_epochs_validation_accuracy_or_r2():
    x, y = make_classification(300, 8, random_state=3)
    clf = MLPClassifier(epochs=4, patience=10, backend="numpy").fit(x, y)
    assert clf.validation_scores_ == [row["val_accuracy"] for row in clf.history_]
    assert clf.best_validation_score_ == clf.validation_scores_[clf.best_epoch_ - 1]
    assert clf.best_loss_ is None  # scikit-learn's MLP has none when it holds rows out
    reg = MLPRegressor(epochs=3, val_fraction=0.2, backend="numpy").fit(x, x[:, 0] - x[:, 1])
    assert reg.validation_scores_ == [row["val_r2"] for row in reg.history_]
    assert reg.out_activation_ == "identity" and reg.n_outputs_ == 1
    with pytest.raises(AttributeError):  # (NotFittedError): hasattr says False
        MLPClassifier().coefs_
    assert not hasattr(MLPRegressor(), "validation_scores_")


def test_best_validation_score_is_the_kept_weights_score(tmp_path):
    """scikit-learn's best_validation_score_ is its kept model's score. With patience the
    weights kept are best_epoch_'s, the lowest validation loss, whose accuracy here is below
    another epoch's: the score is that epoch's, not the highest (it was). Without patience
    (rows held out by val_fraction) the last epoch's weights are kept, and its score is the
    one; saving and pickling keep it."""
    import pickle

    x, y = make_classification(400, 10, flip_y=0.2, random_state=0)
    clf = MLPClassifier(hidden=(256,), epochs=200, lr=1e-2, patience=5, random_state=2,
                        backend="numpy").fit(x, y)
    scores, losses = clf.validation_scores_, [row["val_loss"] for row in clf.history_]
    assert clf.best_epoch_ == 1 + int(np.argmin(losses)) < clf.n_iter_
    assert clf.best_validation_score_ == scores[clf.best_epoch_ - 1] < max(scores)
    clf.save(tmp_path / "c.npz")
    for back in (MLPClassifier.load(tmp_path / "c.npz"), pickle.loads(pickle.dumps(clf))):
        assert back.best_validation_score_ == clf.best_validation_score_
    last = MLPClassifier(hidden=(256,), epochs=20, lr=1e-2, val_fraction=0.2, random_state=2,
                         backend="numpy").fit(x, y)
    assert last.best_validation_score_ == last.validation_scores_[-1] < max(
        last.validation_scores_)


def test_seeds():
    x, y = make_classification(120, 6, random_state=6)
    a, b = (MLPClassifier(epochs=2, backend="numpy", random_state=7).fit(x, y)
            for _ in range(2))
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    c, d = (MLPClassifier(epochs=2, backend="numpy", random_state=None).fit(x, y)
            for _ in range(2))
    assert not np.array_equal(c.model_.state_dict()["W1"], d.model_.state_dict()["W1"])


def test_hidden_layers_and_no_hidden_layer():
    x, y = make_classification(150, 7, random_state=8)
    assert MLPClassifier(hidden=16, epochs=1, backend="numpy").fit(x, y).model_.sizes \
        == [7, 16, 2]
    assert MLPClassifier(hidden=(), epochs=1, backend="numpy").fit(x, y).model_.sizes == [7, 2]


@pytest.mark.parametrize("params, message", [
    ({"hidden": (0,)}, "hidden must be"),
    ({"hidden": "64"}, "hidden must be"),
    ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
    ({"lr": -1.0}, "learning rate must be a positive number"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"random_state": -1}, "random_state must be"),
    ({"standardize": "yes"}, "standardize must be True or False"),
    ({"graph": "no"}, "graph must be True or False, got 'no'"),
    ({"verbose": "no"}, r"verbose must be True or False \(or an integer >= 0"),
    ({"verbose": -1}, "verbose must be True or False"),
    ({"activation": "softmax"}, "unknown activation"),
    ({"val_fraction": 1.0}, "val_fraction must lie in"),
])
def test_bad_parameters_are_named_at_fit(params, message):
    x, y = make_classification(60, 4, random_state=9)
    clf = MLPClassifier(backend="numpy", **params)  # scikit-learn: no checks in __init__
    with pytest.raises(gn.ConfigError, match=message):
        clf.fit(x, y)


@pytest.mark.parametrize("momentum", [0.0, 1.0, 1.5, -0.1, "0.9"])
def test_momentum_is_taken_in_scikit_learns_range(momentum):
    """scikit-learn's MLP takes a momentum in [0, 1] ("float, between 0 and 1"); this took
    1.5 and trained on until it diverged. Both now take or refuse the same ones (whatever the
    solver: scikit-learn checks it for adam too)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor as SklearnMLP

    x, y = make_regression(40, 3, random_state=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            SklearnMLP(solver="sgd", momentum=momentum, max_iter=1).fit(x, y)
        taken = True
    except ValueError:
        taken = False
    for optimizer in ("sgd", "adam"):
        reg = MLPRegressor(optimizer=optimizer, momentum=momentum, epochs=1, backend="numpy")
        if taken:
            assert reg.fit(x, y).n_iter_ == 1
        else:
            with pytest.raises(gn.ConfigError, match=r"momentum must be a number in \[0, 1\], "
                                                     rf"got {momentum!r}"):
                reg.fit(x, y)
    assert taken == (momentum in (0.0, 1.0))


def test_one_class_is_refused():
    with pytest.raises(ValueError, match=r"at least 2 classes in the data, got 1 class \(0\.0\)"):
        MLPClassifier(backend="numpy").fit(np.ones((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match=r"got 1 class \('yes'\)$"):  # the name, as written
        MLPClassifier(backend="numpy").fit(np.ones((5, 2)), np.array(["yes"] * 5))


def test_verbose_prints_a_line_per_epoch(capsys):
    x, y = make_classification(80, 4, random_state=10)
    MLPClassifier(epochs=3, backend="numpy", verbose=True).fit(x, y)
    err = capsys.readouterr().err  # (progress bars too)
    lines = [ln for ln in err.splitlines() if ln.startswith("epoch ") and "train_loss" in ln]
    assert [ln.split()[1] for ln in lines] == ["1/3", "2/3", "3/3"]
    MLPClassifier(epochs=3, backend="numpy").fit(x, y)
    assert capsys.readouterr().err == ""


def test_graph_and_eager_steps_train_the_same_weights():
    x, y = make_classification(256, 9, random_state=11)
    a = MLPClassifier(epochs=3, backend="numpy", graph=True).fit(x, y)
    b = MLPClassifier(epochs=3, backend="numpy", graph=False).fit(x, y)
    for k, v in a.model_.state_dict().items():
        np.testing.assert_array_equal(v, b.model_.state_dict()[k])


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "cupy"])
def test_cupy_estimator_matches_numpy(backend):
    x_train, x_test, y_train, _ = _digits()
    gpu = MLPClassifier(epochs=5, backend=backend, dtype="float64").fit(x_train, y_train)
    cpu = MLPClassifier(epochs=5, backend="numpy", dtype="float64").fit(x_train, y_train)
    assert gpu.model_.backend.name == "cupy"
    np.testing.assert_allclose(gpu.predict_proba(x_test), cpu.predict_proba(x_test),
                               rtol=1e-8, atol=1e-10)
    back = pickle.loads(pickle.dumps(gpu))
    np.testing.assert_allclose(back.predict_proba(x_test), gpu.predict_proba(x_test),
                               rtol=1e-12, atol=1e-14)


def test_the_scikit_learn_benchmark_trains_both_alike(tmp_path):
    """scripts/bench_sklearn.py: both contenders train the same network on the same rows to
    the same accuracy (no timing is asserted)."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_sklearn.py"
    spec = importlib.util.spec_from_file_location("bench_sklearn", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.PAUSE_S = 0
    out = tmp_path / "rows.json"
    assert bench.main(["--config", "digits", "--rounds", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert (row["rows"], row["features"], row["classes"], row["hidden"]) == (1437, 64, 10, [128])
    assert row["gpunet_accuracy"] > 0.95 and row["sklearn_accuracy"] > 0.95
    assert abs(row["gpunet_accuracy"] - row["sklearn_accuracy"]) < 0.03
    assert row["ratio"] == pytest.approx(row["gpunet_s"] / row["sklearn_s"])


def test_importing_gpunet_leaves_scikit_learn_unloaded_until_asked():
    import subprocess
    import sys

    code = ("import sys, gpunet; before = 'sklearn' in sys.modules; gpunet.MLPRegressor; "
            "print(before, 'sklearn.base' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]
    with pytest.raises(AttributeError, match="no attribute 'MLPThing'"):
        gn.MLPThing  # noqa: B018


# -- saving without pickle ---------------------------------------------------------------------

def test_save_and_load_give_back_the_fitted_classifier(tmp_path):
    x, y = make_classification(200, 6, n_informative=4, n_classes=3, random_state=12)
    words = np.array(["ant", "bee", "cat"], dtype=object)[y]  # object dtype, as from pandas
    clf = MLPClassifier(hidden=(16, 8), epochs=4, patience=2, backend="numpy").fit(x, words)
    path = tmp_path / "clf.npz"
    clf.save(path)
    with np.load(path, allow_pickle=False) as z:  # plain arrays only: nothing to unpickle
        assert all(z[k].dtype.kind != "O" for k in z.files)
    back = MLPClassifier.load(path)
    np.testing.assert_array_equal(back.classes_, ["ant", "bee", "cat"])
    assert back.classes_.dtype == clf.classes_.dtype == object  # as fit left them
    assert [type(c) for c in back.classes_] == [str] * 3
    np.testing.assert_array_equal(back.predict_proba(x), clf.predict_proba(x))
    np.testing.assert_array_equal(back.predict(x), clf.predict(x))
    assert back.predict(x).dtype == clf.predict(x).dtype
    for labels in (np.array(["ant", "bee", "cat"])[y], y + 5):  # str and int arrays: kept
        kept = MLPClassifier(epochs=1, backend="numpy").fit(x, labels)
        kept.save(path)
        assert MLPClassifier.load(path).classes_.dtype == kept.classes_.dtype == labels.dtype
    assert back.get_params() == clf.get_params()
    assert back.history_ == clf.history_ and back.best_epoch_ == clf.best_epoch_
    assert back.loss_curve_ == clf.loss_curve_ and back.n_iter_ == clf.n_iter_
    assert back.score(x, words) == clf.score(x, words)


def test_predict_heads_an_estimators_probabilities_as_a_command_line_runs(tmp_path):
    """Integer classes: p_0, p_1... whether the checkpoint is an estimator's or a CLI run's."""
    from gpunet.cli import main

    x, y = make_classification(120, 4, n_informative=3, n_redundant=0, n_classes=3,
                               random_state=4)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    MLPClassifier(epochs=1, backend="numpy").fit(x, y).save(tmp_path / "est.npz")
    assert main(["train", "--dataset", str(tmp_path / "d.npz"), "--epochs", "1", "--quiet",
                 "--backend", "numpy", "--save", str(tmp_path / "run.npz")]) == 0
    heads = []
    for ck in ("est", "run"):
        out = tmp_path / f"{ck}.csv"
        assert main(["predict", "--checkpoint", str(tmp_path / f"{ck}.npz"), "--input",
                     str(tmp_path / "x.npy"), "--output", str(out), "--backend", "numpy"]) == 0
        heads.append(out.read_text().splitlines()[0])
    assert heads == ["label,p_0,p_1,p_2"] * 2


def test_save_and_load_give_back_the_fitted_regressor(tmp_path):
    x, y = make_regression(150, 5, random_state=13)
    for target in (y, np.column_stack([y, -y])):
        reg = MLPRegressor(epochs=3, backend="numpy").fit(x, target)
        reg.save(tmp_path / "reg.npz")
        back = MLPRegressor.load(tmp_path / "reg.npz", backend="numpy")
        assert back.predict(x).shape == target.shape
        np.testing.assert_array_equal(back.predict(x), reg.predict(x))


def test_numpy_scalar_parameters_from_a_grid_search_are_saved_as_numbers(tmp_path):
    """GridSearchCV over np.arange / np.logspace grids sets NumPy scalars: save writes them as
    the numbers they are (random_state too), load gives an estimator with those parameters;
    a value JSON cannot hold is a ConfigError naming the parameter."""
    x, y = make_classification(60, 4, random_state=0)
    grid = GridSearchCV(MLPClassifier(backend="numpy", hidden=(4,)),
                        {"epochs": np.arange(2, 4), "lr": np.logspace(-3, -2, 2)}, cv=2)
    best = grid.fit(x, y).best_estimator_
    best.set_params(random_state=np.int64(3), hidden=(np.int64(5),))
    best.fit(x, y)
    best.save(tmp_path / "best.npz")
    back = MLPClassifier.load(tmp_path / "best.npz")
    for k, v in best.get_params().items():
        got = back.get_params()[k]
        assert got == v and not isinstance(got, np.generic), k
    assert back.random_state == 3 and back.hidden == (5,)
    np.testing.assert_array_equal(back.predict_proba(x), best.predict_proba(x))
    best.set_params(verbose=object())
    with pytest.raises(gn.ConfigError, match="parameter verbose=.* has no JSON form"):
        best.save(tmp_path / "bad.npz")


def test_load_refuses_what_is_not_a_saved_estimator_of_its_class(tmp_path):
    x, y = make_regression(60, 3, random_state=14)
    MLPRegressor(epochs=1, backend="numpy").fit(x, y).save(tmp_path / "reg.npz")
    with pytest.raises(gn.CheckpointError, match="holds no saved MLPClassifier .it holds an "
                                                 "MLPRegressor"):
        MLPClassifier.load(tmp_path / "reg.npz")
    from gpunet.cli import main

    assert main(["train", "--dataset", "iris", "--epochs", "1", "--quiet", "--backend",
                 "numpy", "--save", str(tmp_path / "run.npz")]) == 0
    with pytest.raises(gn.CheckpointError, match="holds no saved MLPClassifier"):
        MLPClassifier.load(tmp_path / "run.npz")
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps(MLPClassifier()))
    with pytest.raises(gn.CheckpointError, match="pickled"):
        MLPClassifier.load(tmp_path / "pickle.npz")
    with pytest.raises(Exception, match="not fitted"):
        MLPClassifier().save(tmp_path / "unfitted.npz")


@pytest.mark.parametrize("name, value, what", [
    ("monitor", ["val_loss"], "text"), ("optimizer", {"name": "adam"}, "text"),
    ("hidden", [8, "x"], "a list of layer widths"), ("lr", [0.1], "a number, text or null")])
def test_load_refuses_saved_parameters_of_the_wrong_kind(tmp_path, name, value, what):
    """A saved parameter of another kind (a list where text belongs) loaded, and the next
    partial_fit raised TypeError: unhashable type."""
    from gpunet.checkpoint import load_checkpoint, save_checkpoint

    x, y = make_classification(60, 4, random_state=3)
    path = tmp_path / "clf.npz"
    MLPClassifier(hidden=(8,), epochs=1, backend="numpy").fit(x, y).save(path)
    MLPClassifier.load(path).partial_fit(x, y)  # (as saved: it trains on)
    saved = load_checkpoint(path)
    saved.extra["estimator"]["params"][name] = value
    save_checkpoint(path, saved.build_model("numpy"), None, epoch=saved.epoch,
                    standardizer=saved.standardizer, extra=saved.extra)
    with pytest.raises(gn.CheckpointError, match=rf"clf.npz: the saved parameter {name}=.* "
                                                 rf"is not {what}$"):
        MLPClassifier.load(path)


def test_outputs_that_overflow_are_said_by_predict(recwarn):
    """Weights of 3e38 (finite) overflow float32: predict gave [0 0 0] and predict_proba NaN
    without a word, where gpunet predict refuses such a model."""
    x, y = make_classification(40, 4, random_state=5)
    clf = MLPClassifier(hidden=(8,), epochs=1, backend="numpy").fit(x, y)
    clf.predict(x)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    for k in ("W1", "W2"):
        w = clf.model_.params[k]
        w[...] = np.where(w > 0, 3e38, -3e38)
    with pytest.warns(RuntimeWarning, match=r"MLPClassifier: the network's outputs are not "
                                            r"finite \(they overflow float32\) for \d+ of 40 "
                                            r"rows") as caught:
        proba = clf.predict_proba(x)
    assert np.isnan(proba).any() and caught[0].filename == __file__


def test_predict_holds_a_block_of_outputs_not_every_rows():
    """predict took an argmax of every row's float64 outputs, held twice (2e5 rows of 1000
    classes: +3.2 GB for a 2 MB answer); predict_proba held its result about twice over."""
    import tracemalloc
    import warnings

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(600, 4)), np.arange(600) % 500
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (scikit-learn: many classes for few rows)
        clf = MLPClassifier(hidden=(8,), epochs=1, backend="numpy").fit(x, y)
    X = rng.normal(size=(20000, 4))
    expected = clf.predict(X[:5000])
    every = len(X) * 500 * 8  # every row's outputs, float64: 80 MB
    tracemalloc.start()
    try:
        labels = clf.predict(X)
        peak_predict = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        proba = clf.predict_proba(X)
        peak_proba = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_predict < every / 2, peak_predict
    assert peak_proba < 1.8 * proba.nbytes, (peak_proba, proba.nbytes)
    np.testing.assert_array_equal(labels[:5000], expected)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], labels)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)


def test_predict_heads_float_classes_as_it_writes_their_labels(tmp_path):
    """Classes 1.0 and 2.0: the labels were written 1, 2 under the header p_1.0, p_2.0."""
    from gpunet.cli import main

    x, y = make_classification(60, 3, n_informative=2, n_redundant=0, random_state=8)
    MLPClassifier(epochs=1, backend="numpy").fit(x, y + 1.0).save(tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", "--checkpoint", str(tmp_path / "m.npz"), "--input",
                 str(tmp_path / "x.npy"), "--output", str(tmp_path / "p.csv")]) == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "label,p_1,p_2"
    assert {line.split(",")[0] for line in lines[1:]} <= {"1", "2"}


def test_evaluate_takes_a_csv_of_an_estimators_true_false_classes(tmp_path, capsys):
    """An estimator fitted on bool labels, saved: its CSV (True/False cells, as pandas writes
    them) was refused by evaluate ("the targets are names, but the model's classes are
    numbers")."""
    pd = pytest.importorskip("pandas")
    from gpunet.cli import main

    x, y = make_classification(120, 3, n_informative=2, n_redundant=0, random_state=7)
    df = pd.DataFrame(x, columns=["a", "b", "c"])
    clf = MLPClassifier(epochs=3, backend="numpy").fit(df, pd.Series(y == 1, name="y"))
    clf.save(tmp_path / "m.npz")
    df.assign(y=y == 1).to_csv(tmp_path / "d.csv", index=False)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "m.npz"), "--dataset",
                 str(tmp_path / "d.csv"), "--backend", "numpy"]) == 0
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert float(printed["all_accuracy"]) == pytest.approx(clf.score(df, y == 1), abs=1e-6)


def test_the_command_line_predicts_with_a_saved_classifier(tmp_path):
    from gpunet.cli import main

    x, y = make_classification(150, 4, n_informative=3, n_redundant=0, random_state=15)
    clf = MLPClassifier(epochs=5, backend="numpy").fit(x, np.array(["no", "yes"])[y])
    clf.save(tmp_path / "clf.npz")
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", "--checkpoint", str(tmp_path / "clf.npz"), "--input",
                 str(tmp_path / "x.npy"), "--output", str(tmp_path / "p.csv")]) == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "label,p_no,p_yes"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == list(clf.predict(x))
    np.testing.assert_allclose(np.array([r[1:] for r in rows], dtype=float),
                               clf.predict_proba(x), rtol=1e-6, atol=1e-7)  # float32 softmax
    assert main(["predict", "--checkpoint", str(tmp_path / "clf.npz"), "--input",
                 str(tmp_path / "x.npy"), "--output", str(tmp_path / "p.npy")]) == 1
    numeric = MLPClassifier(epochs=5, backend="numpy").fit(x, 10 * y + 3)
    numeric.save(tmp_path / "num.npz")
    assert main(["predict", "--checkpoint", str(tmp_path / "num.npz"), "--input",
                 str(tmp_path / "x.npy"), "--output", str(tmp_path / "n.npy")]) == 0
    table = np.load(tmp_path / "n.npy")
    np.testing.assert_array_equal(table[:, 0], numeric.predict(x))


def test_data_frames_keep_their_column_names(tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas is in the test extra")
    x, y = make_classification(120, 4, random_state=16)
    frame = pd.DataFrame(x, columns=["w", "x", "y", "z"])
    clf = MLPClassifier(epochs=2, backend="numpy").fit(frame, pd.Series(y))
    np.testing.assert_array_equal(clf.feature_names_in_, ["w", "x", "y", "z"])
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        np.testing.assert_array_equal(clf.predict_proba(frame), clf.predict_proba(x))
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame[["z", "y", "x", "w"]])  # the columns in another order
    clf.save(tmp_path / "c.npz")
    back = MLPClassifier.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.feature_names_in_, clf.feature_names_in_)
    with pytest.raises(ValueError, match="feature names"):
        back.predict(frame[["z", "y", "x", "w"]])


def test_the_command_line_finds_a_saved_estimators_columns_by_name(tmp_path, capsys):
    """`gpunet predict` on an estimator fitted on a DataFrame reads a CSV's columns by the
    fitted names, in any order (as predict on a CLI run's checkpoint does); other names are
    an error naming them."""
    pd = pytest.importorskip("pandas", reason="pandas is in the test extra")
    from gpunet.cli import main

    x, y = make_classification(90, 3, n_informative=3, n_redundant=0, random_state=17)
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    target = pd.Series(np.array(["lo", "hi"])[y], name="label")
    clf = MLPClassifier(epochs=3, backend="numpy").fit(frame, target)
    clf.save(tmp_path / "clf.npz")
    # the training table itself, target column and all (as predict on a CSV run's file)
    frame.assign(label=target)[["c", "label", "a", "b"]].to_csv(tmp_path / "shuffled.csv",
                                                                 index=False)
    assert main(["predict", "--checkpoint", str(tmp_path / "clf.npz"), "--input",
                 str(tmp_path / "shuffled.csv"), "--output", str(tmp_path / "p.csv")]) == 0
    labels = [line.split(",")[0] for line in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    assert labels == list(clf.predict(frame))
    frame.set_axis(["p", "q", "r"], axis=1).to_csv(tmp_path / "other.csv", index=False)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(tmp_path / "clf.npz"), "--input",
                 str(tmp_path / "other.csv"), "--output", str(tmp_path / "q.csv")]) == 1
    err = capsys.readouterr().err
    assert "'a'" in err and "'p'" in err, err


@pytest.mark.parametrize("classes", [np.array([False, True]),
                                     np.array([2**53 + 1, 2**53 + 3], dtype=np.int64)])
def test_the_command_line_writes_bool_and_huge_integer_labels_as_they_are(tmp_path, classes):
    """Labels a column of floats would change (True as 1, 2^53 + 1 as 2^53) are written as
    the classifier's own labels in a CSV; a .npy of such integers is refused."""
    from gpunet.cli import main

    x, y = make_classification(80, 4, random_state=3)
    clf = MLPClassifier(hidden=(4,), epochs=3, backend="numpy").fit(x, classes[y])
    clf.save(tmp_path / "c.npz")
    np.save(tmp_path / "x.npy", x)
    args = ["predict", "--checkpoint", str(tmp_path / "c.npz"), "--input",
            str(tmp_path / "x.npy"), "--backend", "numpy", "--output"]
    assert main([*args, str(tmp_path / "p.csv")]) == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "label," + ",".join(f"p_{c}" for c in classes)
    assert [line.split(",")[0] for line in lines[1:]] == [str(c) for c in clf.predict(x)]
    if classes.dtype.kind == "i":
        assert main([*args, str(tmp_path / "p.npy")]) == 1


def test_a_target_named_like_a_feature_leaves_that_feature_in(tmp_path):
    """A forecast of x from x: the target Series keeps the name "x", which is also a feature
    column; `gpunet predict` reads it as the feature, not as a target to leave out."""
    pd = pytest.importorskip("pandas", reason="pandas is in the test extra")
    from gpunet.cli import main

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": np.cumsum(rng.normal(size=60)), "lag": rng.normal(size=60)})
    x, y = df[["x", "lag"]].iloc[:-1], df["x"].shift(-1).iloc[:-1]
    reg = MLPRegressor(hidden=(4,), epochs=3, backend="numpy").fit(x, y)
    reg.save(tmp_path / "r.npz")
    x[["lag", "x"]].to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", "--checkpoint", str(tmp_path / "r.npz"), "--input",
                 str(tmp_path / "new.csv"), "--output", str(tmp_path / "p.npy"),
                 "--backend", "numpy"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "p.npy")[:, 0], reg.predict(x), rtol=1e-6)


def test_the_command_line_evaluates_a_saved_classifier_as_score_does(tmp_path):
    """The CLI reads the CSV's text labels through the saved classes_ (not its own sorted
    names, which here would coincide only by luck): its accuracy equals score()'s."""
    import csv
    import json

    from gpunet.cli import main

    x, y = make_classification(200, 5, n_informative=3, n_classes=3, random_state=17)
    names = np.array(["red", "green", "blue"])[y]  # sorted: blue, green, red
    clf = MLPClassifier(epochs=10, backend="numpy").fit(x, names)
    clf.save(tmp_path / "clf.npz")
    keep = names != "green"  # a file without one class: its own names would be blue, red
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "d", "e", "colour"])
        w.writerows([*row, c] for row, c in zip(x[keep], names[keep]))
    m = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "clf.npz"), "--dataset",
                 str(tmp_path / "t.csv"), "--target", "colour", "--split", "all",
                 "--metrics-json", str(m)]) == 0
    assert json.loads(m.read_text())["all_accuracy"] == pytest.approx(
        clf.score(x[keep], names[keep]))
    # without --split: all of it too (an estimator has no split of its own to hold out)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "clf.npz"), "--dataset",
                 str(tmp_path / "t.csv"), "--target", "colour", "--metrics-json", str(m)]) == 0
    got = json.loads(m.read_text())
    assert got["split"] == "all" and got["rows"] == keep.sum()
    assert got["all_accuracy"] == pytest.approx(clf.score(x[keep], names[keep]))


def test_evaluate_reads_a_saved_regressors_pandas_targets_by_name_in_its_order(tmp_path):
    """Fitted on the DataFrame columns (t1, t2): evaluate on a CSV takes those columns without
    --target, and given them in another order pairs each with its own output (R^2 as
    score's either way)."""
    import json

    pd = pytest.importorskip("pandas", reason="pandas is in the test extra")
    from gpunet.cli import main

    rng = np.random.default_rng(2)
    df = pd.DataFrame(rng.normal(size=(120, 3)), columns=["a", "b", "c"])
    df["t1"] = 3 * df["a"] - df["b"] + 100
    df["t2"] = 0.01 * df["c"]
    reg = MLPRegressor(hidden=(8,), epochs=20, backend="numpy", dtype="float64").fit(
        df[["a", "b", "c"]], df[["t1", "t2"]])
    reg.save(tmp_path / "r.npz")
    df.to_csv(tmp_path / "d.csv", index=False)
    want = reg.score(df[["a", "b", "c"]], df[["t1", "t2"]])
    for targets in ([], ["--target", "t1", "--target", "t2"],
                    ["--target", "t2", "--target", "t1"]):
        m = tmp_path / "m.json"
        assert main(["evaluate", "--checkpoint", str(tmp_path / "r.npz"), "--dataset",
                     str(tmp_path / "d.csv"), *targets, "--split", "all", "--metrics-json",
                     str(m), "--backend", "numpy"]) == 0
        assert json.loads(m.read_text())["all_r2"] == pytest.approx(want, rel=1e-9), targets
    # predict heads its columns with those names too (it wrote y0, y1), the regressor's values
    assert main(["predict", "--checkpoint", str(tmp_path / "r.npz"), "--input",
                 str(tmp_path / "d.csv"), "--output", str(tmp_path / "p.csv")]) == 0
    got = pd.read_csv(tmp_path / "p.csv")
    assert list(got.columns) == ["t1", "t2"]
    np.testing.assert_allclose(got.to_numpy(), reg.predict(df[["a", "b", "c"]]), rtol=1e-12)


@pytest.mark.parametrize("kind", ["huber", "label_smoothing"])
def test_evaluate_reports_the_loss_a_saved_estimator_trained_on(tmp_path, capsys, kind):
    """gpunet evaluate of a saved MLPRegressor(loss="huber", huber_delta=0.5) reported plain
    MSE on standardised targets, and of an MLPClassifier(label_smoothing=0.2) unsmoothed
    cross-entropy: the file did not say which loss it trained on. Now its loss is the trained
    objective, as torch computes it on the same standardised predictions (logits), and gpunet
    info names it, as it names a train run's."""
    import csv
    import json

    torch = pytest.importorskip("torch", reason="torch is the loss's reference here")
    from gpunet.cli import main

    rng = np.random.default_rng(4)
    x = rng.normal(size=(160, 4))
    kw = dict(hidden=(8,), epochs=5, backend="numpy", dtype="float64", random_state=1)
    if kind == "huber":
        y = 300 * x[:, 0] + 80 * x[:, 1] ** 2 + 1000  # (far from unit scale)
        est = MLPRegressor(loss="huber", huber_delta=0.5, **kw).fit(x[:100], y[:100])
        mean, std = est.target_standardizer_.mean, est.target_standardizer_.std
        z = torch.tensor((est.predict(x[100:]) - mean) / std)  # the network's outputs
        want = torch.nn.HuberLoss(delta=0.5)(z, torch.tensor((y[100:] - mean) / std))
        shown = "loss huber (delta 0.5)"
    else:
        y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
        est = MLPClassifier(label_smoothing=0.2, **kw).fit(x[:100], y[:100])
        logits = torch.tensor(est.predict_log_proba(x[100:]))  # (logits up to a row's shift)
        want = torch.nn.CrossEntropyLoss(label_smoothing=0.2)(logits, torch.tensor(y[100:]))
        shown = "loss cross_entropy (label smoothing 0.2)"
    est.save(tmp_path / "e.npz")
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "d", "y"])
        w.writerows([*map(repr, row), repr(t)] for row, t in zip(x[100:].tolist(),
                                                                 y[100:].tolist()))
    m = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "e.npz"), "--dataset",
                 str(tmp_path / "t.csv"), "--target", "y", "--split", "all", "--backend",
                 "numpy", "--metrics-json", str(m)]) == 0
    assert json.loads(m.read_text())["all_loss"] == pytest.approx(want.item(), rel=1e-9)
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(tmp_path / "e.npz")]) == 0
    out = capsys.readouterr().out
    (line,) = [t for t in out.splitlines() if t.startswith("training: ")]
    assert f", {shown}, adam" in line, line
    assert "resume" not in out  # (the record is for evaluate and info, not a run to go on)
    assert main(["train", "--resume", str(tmp_path / "e.npz"), "--backend", "numpy"]) == 1
    assert "e.npz is a saved estimator's: go on training it in Python with " \
        "MLPClassifier.load / MLPRegressor.load and partial_fit" in capsys.readouterr().err
    from gpunet.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "e.npz")
    from gpunet.data import make_dataset

    data = make_dataset("t", x[100:], y[100:], test_fraction=0.2)
    model = ckpt.build_model("numpy")
    with pytest.raises(gn.ConfigError, match="a saved estimator's: go on training it with "
                                             "MLPClassifier.load / MLPRegressor.load"):
        gn.fit(model, data, est._loss(), gn.Adam(model), epochs=8, resume=ckpt,
               progress=False)


def test_one_number_as_sample_weight_weights_every_row_alike():
    """As scikit-learn's MLP takes sample_weight=2.0: the unweighted fit (equal weights)."""
    x, y = make_classification(120, 5, random_state=3)
    plain = MLPClassifier(epochs=3, backend="numpy", dtype="float64").fit(x, y)
    scalar = MLPClassifier(epochs=3, backend="numpy", dtype="float64").fit(x, y,
                                                                           sample_weight=2.0)
    np.testing.assert_array_equal(scalar.predict_proba(x), plain.predict_proba(x))
    with pytest.raises(gn.DataError, match="every sample weight is zero"):
        MLPClassifier(backend="numpy").fit(x, y, sample_weight=0)


@pytest.mark.parametrize("schedule, kw, want", [
    ("step", {"step_size": 2, "gamma": 0.5}, [0.1, 0.1, 0.05, 0.05, 0.025]),
    ("step", {}, [0.1] * 5),  # (10 epochs a step by default)
])
def test_the_step_schedules_period_and_factor_are_parameters(schedule, kw, want):
    x, y = make_classification(80, 4, random_state=1)
    clf = MLPClassifier(optimizer="sgd", schedule=schedule, epochs=5, backend="numpy",
                        **kw).fit(x, y)
    np.testing.assert_allclose([row["lr"] for row in clf.history_], want, rtol=1e-12)


def test_plateau_cuts_by_gamma():
    x, y = make_classification(200, 4, random_state=1)
    clf = MLPClassifier(optimizer="sgd", lr=5.0, schedule="plateau", gamma=0.25, epochs=30,
                        val_fraction=0.3, backend="numpy").fit(x, y)
    rates = sorted({row["lr"] for row in clf.history_}, reverse=True)
    assert len(rates) > 1 and rates[1] == pytest.approx(5.0 * 0.25)


def test_partial_fit_takes_optimiser_settings_changed_between_calls():
    """set_params(momentum=, weight_decay=, clip_grad_norm=) after a call: the next call steps
    with them and the kept state, as a torch optimiser whose param group was edited."""
    torch = pytest.importorskip("torch")
    x, y = make_classification(64, 4, random_state=5)
    clf = MLPClassifier(hidden=(6,), optimizer="sgd", lr=0.05, batch_size=64,
                        backend="numpy", dtype="float64", standardize=False)
    clf.partial_fit(x, y, classes=[0, 1])
    before = {k: torch.tensor(v.copy(), requires_grad=True)
              for k, v in clf.model_.state_dict().items()}
    clf.set_params(momentum=0.9, weight_decay=0.1, clip_grad_norm=0.5).partial_fit(x, y)
    opt = clf._optimizer
    assert (opt.momentum, opt.weight_decay, opt.clip_norm) == (0.9, 0.1, 0.5)
    # the same step in torch: one batch of all rows, from the weights before it
    h = torch.relu(torch.tensor(x) @ before["W1"].T + before["b1"])
    logits = h @ before["W2"].T + before["b2"]
    torch.nn.functional.cross_entropy(logits, torch.tensor(y)).backward()
    params = list(before.values())
    torch.nn.utils.clip_grad_norm_(params, 0.5)
    ref = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.1)
    ref.step()
    for k, v in clf.model_.state_dict().items():
        np.testing.assert_allclose(v, before[k].detach().numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=k)


def test_save_and_load_refuse_parameters_that_do_not_describe_the_network(tmp_path):
    """A parameter changed since the fit is refused at save; at load, parameters that
    disagree with the network are set to it, with a warning, and a standardisation of
    another width is refused, before predict could fail on it."""
    from gpunet.checkpoint import load_checkpoint, save_checkpoint

    x, y = make_classification(60, 4, random_state=2)
    clf = MLPClassifier(hidden=(6,), epochs=2, backend="numpy").fit(x, y)
    with pytest.raises(gn.ConfigError, match=r"layer sizes \[4, 5, 2\] \(fitted: \[4, 6, 2\]\)"):
        clf.set_params(hidden=(5,)).save(tmp_path / "m.npz")
    clf.set_params(hidden=(6,)).save(tmp_path / "m.npz")
    ck = load_checkpoint(tmp_path / "m.npz")
    info = ck.extra["estimator"]
    for edit, match in (({"params": {**info["params"], "hidden": [5]}}, r"layer sizes"),
                        ({"params": {**info["params"], "activation": "tanh"}}, "activation")):
        # (what set_params before a save wrote until session 9: the network's win, said)
        model = ck.build_model("numpy")
        save_checkpoint(tmp_path / "e.npz", model, None, standardizer=ck.standardizer,
                        classes=ck.classes, extra={**ck.extra, "estimator": {**info, **edit}})
        with pytest.warns(UserWarning, match=f"another network than the saved one .*{match}"):
            back = MLPClassifier.load(tmp_path / "e.npz")
        assert back.get_params()["hidden"] == (6,) and back.activation == "relu"
        np.testing.assert_array_equal(back.predict_proba(x), clf.predict_proba(x))
    narrow = type(ck.standardizer)(ck.standardizer.mean[:2], ck.standardizer.std[:2])
    with pytest.raises(gn.CheckpointError, match=r"not written, as it could not be loaded: "
                                                r".*data/mean of shape \(2,\), but the model "
                                                r"has 4 features: \(4,\) expected"):
        save_checkpoint(tmp_path / "n.npz", ck.build_model("numpy"), None,
                        standardizer=narrow, classes=ck.classes, extra=ck.extra)
    assert not (tmp_path / "n.npz").exists()
    with np.load(tmp_path / "e.npz") as z:  # (a file so written by hand: refused on load)
        arrays = {k: z[k] for k in z.files}
    arrays.update({"data/mean": arrays["data/mean"][:2], "data/std": arrays["data/std"][:2]})
    np.savez(tmp_path / "n.npz", **arrays)
    with pytest.raises(gn.CheckpointError, match=r"data/mean of shape \(2,\), but the model "
                                                r"has 4 features: \(4,\) expected"):
        MLPClassifier.load(tmp_path / "n.npz")


def test_class_labels_a_text_array_would_change_are_refused_by_save(tmp_path):
    """NumPy's fixed-width text drops a trailing NUL: 'a' and 'a\\x00' would load back as one
    label twice (and the loaded model would predict 'a' where this one predicts 'a\\x00')."""
    x = np.random.default_rng(0).normal(size=(40, 3))
    y = np.array(["a", "a\x00"] * 20, dtype=object)
    clf = MLPClassifier(hidden=(4,), epochs=1, backend="numpy").fit(x, y)
    with pytest.raises(gn.ConfigError, match=r"these class labels cannot be saved as they are"):
        clf.save(tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()


def test_loss_dtype_types_and_nan_classes_as_scikit_learn_users_expect(tmp_path):
    """loss_ (the last epoch's loss, as scikit-learn's MLP keeps it); dtype given as a NumPy
    type saves as its name; partial_fit refuses NaN among the classes (as scikit-learn)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), np.arange(40) % 2
    clf = MLPClassifier(hidden=(4,), epochs=3, dtype=np.float64, backend="numpy").fit(x, y)
    assert clf.loss_ == clf.loss_curve_[-1] == clf.history_[-1]["train_loss"]
    clf.save(tmp_path / "c.npz")
    back = MLPClassifier.load(tmp_path / "c.npz")
    assert back.get_params()["dtype"] == "float64"
    np.testing.assert_array_equal(back.predict_proba(x), clf.predict_proba(x))
    with pytest.raises(ValueError, match=r"classes must be finite labels"):
        MLPClassifier(backend="numpy").partial_fit(x, y.astype(float),
                                                   classes=[0.0, 1.0, np.nan])


def test_dates_or_durations_as_regression_targets_are_refused():
    """datetime64 targets were fitted as their counts of the unit (ns since 1970: predictions
    of 1.58e18), and the same dates at another resolution scored -6e23, silently; scikit-learn's
    MLPRegressor fails on them too. Refused, with the way to numbers."""
    pd = pytest.importorskip("pandas")
    x = np.random.default_rng(0).normal(size=(30, 2))
    days = pd.Series(pd.date_range("2020-01-01", periods=30))
    import datetime

    for y in (days, days.to_frame(), days - days.min(), days.to_numpy(),
              pd.DataFrame({"a": np.arange(30.0), "when": days}),
              np.array(list(days.to_numpy()), dtype=object), list(days), list(days - days[0]),
              [datetime.date(2020, 1, 1 + i % 28) for i in range(30)],
              pd.Series(pd.period_range("2020-01", periods=30, freq="M"))):
        with pytest.raises(ValueError, match=r"y holds dates or durations \(datetime64 / "
                                             r"timedelta64\): convert them to numbers first"):
            MLPRegressor(epochs=1, backend="numpy").fit(x, y)
    numbers = (days - days.min()).dt.days
    reg = MLPRegressor(epochs=1, backend="numpy", dtype="float64").fit(x, numbers)
    assert reg.predict(x).shape == (30,)


def test_predict_on_a_csv_for_a_model_without_column_names_says_columns_go_by_position(
        tmp_path, caplog):
    """An estimator fitted on arrays knows no names: predict took a named CSV's columns by
    position, a swapped pair silently (scikit-learn warns that X has feature names the fit
    had not). A notice says so; a model fitted on a DataFrame takes them by name, unsaid."""
    pd = pytest.importorskip("pandas")
    from gpunet.cli import main

    from conftest import said

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=40), "k": rng.normal(size=40)})
    y = 3 * df["a"] - df["k"]
    for fitted_on, notice in ((df.to_numpy(), True), (df, False)):
        reg = MLPRegressor(epochs=2, backend="numpy", dtype="float64").fit(fitted_on, y)
        reg.save(tmp_path / "r.npz")
        df[["k", "a"]].to_csv(tmp_path / "swapped.csv", index=False)
        caplog.clear()
        assert main(["predict", "--checkpoint", str(tmp_path / "r.npz"), "--input",
                     str(tmp_path / "swapped.csv"), "--output", str(tmp_path / "p.csv"),
                     "--backend", "numpy"]) == 0
        assert ("taken by position, its first as the model's first feature" in said(caplog)) \
            == notice
        got = pd.read_csv(tmp_path / "p.csv").to_numpy()[:, 0]
        want = reg.predict(df[["k", "a"]].to_numpy() if notice else df)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_a_csv_of_a_bool_column_is_read_as_the_estimator_read_the_dataframe(tmp_path):
    """A DataFrame's bool column is 1 and 0 to the estimator (scikit-learn's conversion), and
    pandas writes it True/False: predict on the frame's own to_csv said "'True' is not a
    number"."""
    pd = pytest.importorskip("pandas")
    from gpunet.cli import main

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.normal(size=60), "flag": rng.integers(0, 2, 60).astype(bool)})
    reg = MLPRegressor(epochs=2, backend="numpy", dtype="float64").fit(
        df, 2 * df["a"] + df["flag"])
    reg.save(tmp_path / "r.npz")
    df.to_csv(tmp_path / "f.csv", index=False)
    assert "True" in (tmp_path / "f.csv").read_text()
    assert main(["predict", "--checkpoint", str(tmp_path / "r.npz"), "--input",
                 str(tmp_path / "f.csv"), "--output", str(tmp_path / "p.csv"),
                 "--backend", "numpy"]) == 0
    np.testing.assert_allclose(pd.read_csv(tmp_path / "p.csv").to_numpy()[:, 0],
                               reg.predict(df), rtol=1e-12)


def test_evaluate_of_a_target_named_as_a_feature_asks_for_target(tmp_path, capsys):
    """A forecast's target df["a"].shift(-1) keeps the name "a", a feature's: evaluate took the
    file's "a" for the target and said the features lacked "a". It asks for --target, and with
    it scores as the estimator does."""
    pd = pytest.importorskip("pandas")
    from gpunet.cli import main

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=50).cumsum(), "b": rng.normal(size=50)})
    y = df["a"].shift(-1).fillna(0)
    reg = MLPRegressor(epochs=2, backend="numpy", dtype="float64").fit(df, y)
    reg.save(tmp_path / "f.npz")
    df.assign(next_a=y).to_csv(tmp_path / "f.csv", index=False)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "f.npz"), "--dataset",
                 str(tmp_path / "f.csv"), "--backend", "numpy"]) == 1
    assert "the model's target 'a' is also one of its features" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "f.npz"), "--dataset",
                 str(tmp_path / "f.csv"), "--target", "next_a", "--backend", "numpy",
                 "--metrics-json", str(tmp_path / "m.json")]) == 0
    import json

    got = json.loads((tmp_path / "m.json").read_text())["all_r2"]
    assert got == pytest.approx(reg.score(df, y), rel=1e-9)


def test_a_dataframe_column_name_with_spaces_is_found_in_its_own_csv(tmp_path):
    """pandas keeps the spaces of a column " a " in to_csv and the estimator saves the name as
    it is; the CSV reader strips the header, so predict on the frame's own CSV said "missing:
    ' a '; unexpected: 'a'", with no flag to get round it."""
    pd = pytest.importorskip("pandas")
    from gpunet.cli import main

    rng = np.random.default_rng(2)
    df = pd.DataFrame({" a ": rng.normal(size=40), "b": rng.normal(size=40)})
    reg = MLPRegressor(epochs=2, backend="numpy", dtype="float64").fit(df, df[" a "] - df["b"])
    reg.save(tmp_path / "r.npz")
    df.to_csv(tmp_path / "f.csv", index=False)
    assert main(["predict", "--checkpoint", str(tmp_path / "r.npz"), "--input",
                 str(tmp_path / "f.csv"), "--output", str(tmp_path / "p.csv"),
                 "--backend", "numpy"]) == 0
    np.testing.assert_allclose(pd.read_csv(tmp_path / "p.csv").to_numpy()[:, 0],
                               reg.predict(df), rtol=1e-12)


def test_coefs_are_read_only_copies_so_an_edit_cannot_pass_for_a_change():
    """An edit in place of coefs_ (pruning, as scikit-learn's MLP takes it) changed nothing
    and said nothing; assigning coefs_ raised a bare AttributeError. The copies are read-only
    and setting them says how to change the weights."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    clf = MLPClassifier(backend="numpy", epochs=3, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="read-only"):
        clf.coefs_[0][2:, :] = 0
    with pytest.raises(ValueError, match="read-only"):
        clf.intercepts_[0][:] = 0
    for name in ("coefs_", "intercepts_"):
        with pytest.raises(gn.ConfigError, match=r"model_.load_state_dict"):
            setattr(clf, name, [np.zeros(1)])
    state = clf.model_.state_dict()  # (what the message says to do, done)
    state["W1"] = np.where(np.arange(4) >= 2, 0.0, clf.coefs_[0].T)
    clf.model_.load_state_dict(state)
    assert (clf.coefs_[0][2:] == 0).all()


def test_partial_fit_is_absent_where_the_schedule_spans_a_run():
    """With a cosine or plateau schedule every partial_fit raised, yet hasattr said it was
    there (meta-estimators and scikit-learn's checks go by it), as the lbfgs MLP has none."""
    from sklearn.multioutput import MultiOutputRegressor

    for schedule in ("cosine", "plateau"):
        assert not hasattr(MLPClassifier(schedule=schedule), "partial_fit")
        assert not hasattr(MLPRegressor(schedule=schedule), "partial_fit")
        assert not hasattr(MultiOutputRegressor(MLPRegressor(schedule=schedule)), "partial_fit")
    assert hasattr(MLPClassifier(schedule="step"), "partial_fit")


def test_label_smoothing_says_it_takes_no_multilabel_targets():
    assert MLPClassifier().__sklearn_tags__().classifier_tags.multi_label
    assert not MLPClassifier(label_smoothing=0.1).__sklearn_tags__().classifier_tags.multi_label


def test_sparse_features_name_the_pipeline_settings_that_keep_them_dense():
    """A ColumnTransformer's output turns sparse past its sparse_threshold (10 categories one-
    hot encoded): the same pipeline fitted with 3 failed with scikit-learn's "use
    .toarray()", which a pipeline cannot."""
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300),
                       "c": rng.choice([f"v{i}" for i in range(10)], 300)})
    y = (df.a > 0).astype(int)
    ct = make_column_transformer((StandardScaler(), ["a", "b"]), (OneHotEncoder(), ["c"]))
    with pytest.raises(TypeError, match=r"ColumnTransformer\(..., sparse_threshold=0\)"):
        make_pipeline(ct, MLPClassifier(backend="numpy", epochs=1)).fit(df, y)
    ct = make_column_transformer((StandardScaler(), ["a", "b"]), (OneHotEncoder(), ["c"]),
                                 sparse_threshold=0)
    assert make_pipeline(ct, MLPClassifier(backend="numpy", epochs=1)).fit(df, y).score(df, y) > 0
