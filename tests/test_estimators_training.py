"""How the estimators train beyond one plain ``fit``: ``warm_start``, ``partial_fit`` and
sample weights (with ``gpunet.fit``'s weighted epoch and validation losses beneath them).

The reference is a float64 NumPy trainer written here: the forward and backward pass of a
one-hidden-layer relu net with a softmax cross-entropy (or squared-error) head, weighted means
and weighted standardisation written out, and Adam's update as torch.optim.Adam states it.
Every epoch is one full batch, so the order in which gpunet shuffles the rows changes only the
summation order (float64 rounding). Whether an optimiser's moments carry over (partial_fit) or
start afresh (warm_start) separates the two references by far more than that.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6",
                    reason="the estimators need scikit-learn >= 1.6 (validate_data, tags)")

from sklearn.base import clone
from sklearn.datasets import make_classification

import gpunet as gn
from gpunet.estimators import MLPClassifier, MLPRegressor

from conftest import BACKENDS

HIDDEN, LR, SEED = 16, 0.01, 3
RTOL = 1e-9


def _initial(n_in, n_out):
    """The weights the estimators start from (gpunet.MLP with the same seed), float64."""
    model = gn.MLP([n_in, HIDDEN, n_out], activation="relu", output="identity",
                   backend="numpy", seed=SEED, dtype="float64")
    return {k: np.array(v, dtype=np.float64) for k, v in model.state_dict().items()}


def _standardised(x, like, w=None):
    """(x - mean) / std with the (weighted) statistics of the rows ``like``."""
    w = np.ones(len(like)) if w is None else np.asarray(w, dtype=np.float64)
    mean = w @ like / w.sum()
    std = np.sqrt(w @ (like - mean) ** 2 / w.sum())
    return (x - mean) / np.where(std > 0, std, 1.0)


def _forward(p, x):
    z1 = x @ p["W1"].T + p["b1"]
    return z1, np.maximum(z1, 0.0), np.maximum(z1, 0.0) @ p["W2"].T + p["b2"]


def _losses(z2, target, loss):
    """Each row's loss, and its gradient in z2."""
    if loss == "cross_entropy":
        e = np.exp(z2 - z2.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        return -np.log((p * target).sum(axis=1)), p - target
    return ((z2 - target) ** 2).sum(axis=1), 2.0 * (z2 - target)


def _grads(p, x, target, loss, w=None):
    """dJ/dW and dJ/db of J = sum_i w_i J_i / (sum_i w_i * per-row elements), the (weighted)
    mean loss: softmax cross-entropy against one-hot rows, or squared error."""
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype=np.float64)
    z1, h, z2 = _forward(p, x)
    per_row = 1 if loss == "cross_entropy" else target.shape[1]
    dz2 = _losses(z2, target, loss)[1] * (w / (w.sum() * per_row))[:, None]
    dz1 = (dz2 @ p["W2"]) * (z1 > 0)
    return {"W1": dz1.T @ x, "b1": dz1.sum(axis=0), "W2": dz2.T @ h, "b2": dz2.sum(axis=0)}


class _Adam:
    """torch.optim.Adam's update (betas 0.9, 0.999; eps 1e-8), float64."""

    def __init__(self, lr):
        self.lr, self.t, self.m, self.v = lr, 0, {}, {}

    def step(self, p, g):
        self.t += 1
        for k in p:
            self.m[k] = 0.9 * self.m.get(k, 0.0) + 0.1 * g[k]
            self.v[k] = 0.999 * self.v.get(k, 0.0) + 0.001 * g[k] ** 2
            m_hat = self.m[k] / (1 - 0.9 ** self.t)
            v_hat = self.v[k] / (1 - 0.999 ** self.t)
            p[k] = p[k] - self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


def _data(n=120, features=7, classes=3, seed=0):
    x, y = make_classification(n, features, n_informative=5, n_redundant=0, n_classes=classes,
                               random_state=seed)
    return x, y


def _estimator(cls=MLPClassifier, **kw):
    kw = {"hidden": (HIDDEN,), "lr": LR, "backend": "numpy", "dtype": "float64",
          "random_state": SEED, **kw}
    return cls(**kw)


def _assert_weights(est, reference):
    got = est.model_.state_dict()
    for k, v in reference.items():
        np.testing.assert_allclose(got[k], v, rtol=RTOL, atol=1e-12, err_msg=k)


def _one_hot(y, k):
    return np.eye(k)[y]


def test_partial_fit_calls_continue_one_optimiser_run():
    """Four calls on the whole data (one full batch each) are four steps of one Adam run:
    the moments and the step count carry over."""
    x, y = _data()
    est = _estimator(batch_size=len(x))
    for _ in range(4):
        est.partial_fit(x, y, classes=[0, 1, 2])
    p, adam = _initial(7, 3), _Adam(LR)
    xs, target = _standardised(x, x), _one_hot(y, 3)
    for _ in range(4):
        adam.step(p, _grads(p, xs, target, "cross_entropy"))
    _assert_weights(est, p)
    assert est.n_iter_ == 4 and len(est.loss_curve_) == 4
    assert [row["epoch"] for row in est.history_] == [1, 2, 3, 4]


def test_warm_start_goes_on_from_the_weights_with_a_new_optimiser():
    """fit for 2 epochs, then (warm_start) 3 more: the weights of the first fit, then a new
    Adam run (bias corrections start again), the history numbered on."""
    x, y = _data()
    est = _estimator(batch_size=len(x), epochs=2, warm_start=True).fit(x, y)
    est.set_params(epochs=3).fit(x, y)
    p = _initial(7, 3)
    xs, target = _standardised(x, x), _one_hot(y, 3)
    for steps in (2, 3):
        adam = _Adam(LR)
        for _ in range(steps):
            adam.step(p, _grads(p, xs, target, "cross_entropy"))
    _assert_weights(est, p)
    assert est.n_iter_ == 5 and [row["epoch"] for row in est.history_] == [1, 2, 3, 4, 5]
    assert est.loss_curve_ == [row["train_loss"] for row in est.history_]


def test_without_warm_start_fit_starts_afresh():
    x, y = _data()
    a = _estimator(epochs=2).fit(x, y)
    first = {k: v.copy() for k, v in a.model_.state_dict().items()}
    a.fit(x, y)
    b = _estimator(epochs=2, warm_start=True).fit(x, y)  # unfitted: a first fit either way
    for k, v in first.items():
        np.testing.assert_array_equal(a.model_.state_dict()[k], v)
        np.testing.assert_array_equal(b.model_.state_dict()[k], v)
    assert a.n_iter_ == 2


def test_chunks_keep_the_first_chunks_standardisation_and_any_subset_of_classes():
    """A stream of text labels in two chunks, the second of one class only: the features of
    both are standardised with the first chunk's statistics; the classes are those named."""
    x, y = _data(n=90, seed=4)
    names = np.array(["ant", "bee", "cat"])[y]
    a, b = np.arange(60), np.flatnonzero(y[60:] == 1)[:20] + 60
    est = _estimator(batch_size=len(a))
    est.partial_fit(x[a], names[a], classes=["cat", "ant", "bee"])
    est.set_params(batch_size=len(b)).partial_fit(x[b], names[b])
    p, adam = _initial(7, 3), _Adam(LR)
    for rows in (a, b):
        adam.step(p, _grads(p, _standardised(x[rows], x[a]), _one_hot(y[rows], 3),
                            "cross_entropy"))
    _assert_weights(est, p)
    np.testing.assert_array_equal(est.classes_, ["ant", "bee", "cat"])
    assert est.predict_proba(x).shape == (90, 3)
    assert set(est.predict(x)) <= {"ant", "bee", "cat"}


def test_regressor_partial_fit_keeps_the_first_chunks_target_scale():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 4)) * [1, 3, 0.5, 2] + [0, 1, -2, 5]
    t = x @ [1.0, -0.5, 2.0, 0.3] + 10 + rng.normal(scale=0.1, size=80)
    a, b = np.arange(50), np.arange(50, 80)
    est = _estimator(MLPRegressor, batch_size=50)
    est.partial_fit(x[a], t[a])
    est.set_params(batch_size=30).partial_fit(x[b], t[b])
    p, adam = _initial(4, 1), _Adam(LR)
    scale = t[a].mean(), t[a].std()
    for rows in (a, b):
        target = ((t[rows] - scale[0]) / scale[1])[:, None]
        adam.step(p, _grads(p, _standardised(x[rows], x[a]), target, "mse"))
    _assert_weights(est, p)
    # predictions come back in the targets' units, through the first chunk's scale
    z = np.maximum(_standardised(x, x[a]) @ p["W1"].T + p["b1"], 0) @ p["W2"].T + p["b2"]
    np.testing.assert_allclose(est.predict(x), z[:, 0] * scale[1] + scale[0], rtol=1e-9)


def test_a_first_chunk_with_constant_features_warns_that_they_stay_unscaled():
    """The first partial_fit chunk fixes the standardisation: a feature constant over it (a
    chunk of one row: every feature) is only shifted for the whole stream, so fit says so;
    not for a chunk where every feature varies, nor for later chunks, nor without
    standardize."""
    import warnings

    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(int)
    for est, target in ((MLPClassifier(epochs=1), y), (MLPRegressor(epochs=1), x[:, 1])):
        with pytest.warns(UserWarning) as caught:  # (a regressor's: its target's too)
            est.partial_fit(x[:1], target[:1], **({"classes": [0, 1]}
                                                  if est._task == "classification" else {}))
        said = [w for w in caught if re.search(r"partial_fit: the standardisation is fitted on "
                                               r"this first chunk's 1 row\(s\), over which 3 "
                                               r"of 3 feature\(s\) are constant", str(w.message))]
        assert [w.filename for w in said] == [__file__]  # the caller's line
        x_binary = x[:20].copy()
        x_binary[:, 2] = 0.0  # a 0/1 feature that happens to be 0 in the first chunk
        with pytest.warns(UserWarning, match=r"20 row\(s\), over which 1 of 3 feature"):
            clone(est).partial_fit(x_binary, target[:20], **(
                {"classes": [0, 1]} if est._task == "classification" else {}))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            est.partial_fit(x[1:], target[1:])  # a later chunk: said once, at the first
            fresh = clone(est).partial_fit(x, target, **(
                {"classes": [0, 1]} if est._task == "classification" else {}))
            fresh.partial_fit(x[:1], target[:1])
            clone(est).set_params(standardize=False).partial_fit(x[:1], target[:1], **(
                {"classes": [0, 1]} if est._task == "classification" else {}))


def test_a_first_chunk_with_a_constant_target_warns_that_it_stays_unscaled():
    """A regressor's first partial_fit chunk fixes the target standardisation too: a target
    constant over it (one row, or equal values) gets std 1, so the stream's targets are only
    shifted (trained on in their raw units) for good, and its R^2 stays far below a fit's;
    the call said nothing of it, as it says of constant features. Now it warns, naming the
    target columns, the caller's line; not where each target varies, nor later."""
    import warnings

    from sklearn.metrics import r2_score

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3))
    y = 500 * x[:, 0] + 40 * rng.normal(size=400)
    with pytest.warns(UserWarning) as caught:  # (and its features')
        stream = MLPRegressor(epochs=1, backend="numpy").partial_fit(x[:1], y[:1])
    said = [w for w in caught if re.search(r"over which 1 of 1 target\(s\) are constant, so "
                                           r"they are only shifted, not scaled", str(w.message))]
    assert [w.filename for w in said] == [__file__]  # once, the caller's line
    assert stream.target_standardizer_.std.tolist() == [1.0]  # (what the warning says)
    for _ in range(3):
        stream.partial_fit(x[:300], y[:300])
    fitted = MLPRegressor(epochs=3, backend="numpy").fit(x[:300], y[:300])
    assert r2_score(y[300:], stream.predict(x[300:])) < 0.5 < r2_score(
        y[300:], fitted.predict(x[300:]))
    two = np.c_[y, np.full(400, 7.0)]  # a second target, constant over the chunk
    with pytest.warns(UserWarning, match=r"20 row\(s\), over which 1 of 2 target\(s\)"):
        MLPRegressor(epochs=1, backend="numpy").partial_fit(x[:20], two[:20])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        varied = MLPRegressor(epochs=1, backend="numpy").partial_fit(x[:20], y[:20])
        varied.partial_fit(x[:1], y[:1])  # a later chunk: the first one set the scale


def test_partial_fit_after_fit_goes_on_with_fits_optimiser():
    x, y = _data()
    est = _estimator(batch_size=len(x), epochs=2).fit(x, y)
    est.partial_fit(x, y)
    p, adam = _initial(7, 3), _Adam(LR)
    for _ in range(3):
        adam.step(p, _grads(p, _standardised(x, x), _one_hot(y, 3), "cross_entropy"))
    _assert_weights(est, p)
    assert est.n_iter_ == 3


@pytest.mark.parametrize("how", ["save", "pickle"])
def test_saved_and_reloaded_estimators_go_on_as_if_never_stopped(tmp_path, how):
    """The optimiser's state travels with the estimator: two calls, a round trip, two more
    calls give the weights of four calls in one process (mini-batches, shuffled)."""
    x, y = _data(n=150)
    whole = _estimator(batch_size=32)
    part = _estimator(batch_size=32)
    for est in (whole, part):
        for _ in range(2):
            est.partial_fit(x, y, classes=[0, 1, 2])
    if how == "save":
        part.save(tmp_path / "p.npz")
        part = MLPClassifier.load(tmp_path / "p.npz")
    else:
        part = pickle.loads(pickle.dumps(part))
    for est in (whole, part):
        for _ in range(2):
            est.partial_fit(x, y)
    for k, v in whole.model_.state_dict().items():
        np.testing.assert_array_equal(part.model_.state_dict()[k], v, err_msg=k)
    assert part.n_iter_ == 4


def test_unpickling_by_another_gpunet_version_warns(monkeypatch):
    """As scikit-learn's InconsistentVersionWarning: a pickle records the gpunet that wrote
    it; the same version loads silently, another one (or none: older pickles) warns."""
    import warnings

    import gpunet
    from gpunet.estimators import InconsistentVersionWarning

    x, y = _data(n=40)
    est = _estimator(batch_size=40).fit(x, y)
    blob = pickle.dumps(est)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = pickle.loads(blob)
    assert "_gpunet_version" not in vars(same)
    np.testing.assert_array_equal(same.predict_proba(x), est.predict_proba(x))
    written = gpunet.__version__
    monkeypatch.setattr(gpunet, "__version__", "9.9.9")
    with pytest.warns(InconsistentVersionWarning,
                      match=r"gpunet 9\.9\.9 was pickled by gpunet " + re.escape(written)):
        pickle.loads(blob)
    state = est.__getstate__()
    del state["_gpunet_version"]
    with pytest.warns(InconsistentVersionWarning, match=r"pickled by gpunet 0.1.0 or earlier"):
        MLPClassifier.__new__(MLPClassifier).__setstate__(state)


def test_partial_fit_follows_the_step_schedule_by_call():
    x, y = _data(n=40)
    est = _estimator(schedule="step", batch_size=40)
    for _ in range(12):
        est.partial_fit(x, y, classes=[0, 1, 2])
    np.testing.assert_allclose([row["lr"] for row in est.history_],
                               [LR] * 10 + [LR * 0.1] * 2, rtol=1e-12)


def test_warm_start_with_patience_counts_the_best_epoch_on():
    x, y = _data(n=200)
    est = _estimator(epochs=3, warm_start=True, patience=2).fit(x, y)
    done = est.n_iter_
    est.fit(x, y)
    second = est.history_[done:]
    assert len(est.history_) == est.n_iter_ > done
    best = min(range(len(second)), key=lambda i: second[i]["val_loss"])
    assert est.best_epoch_ == done + best + 1
    assert est.history_[est.best_epoch_ - 1]["val_loss"] == second[best]["val_loss"]


def test_a_huber_regressor_resists_outlying_targets(tmp_path):
    """loss="huber": with 5% of the targets thrown off by +2000, the huber fit predicts the
    other rows far better than the squared-error fit of the same network and seed (what a
    loss that caps each row's pull is for); it saves and loads with its loss; a loss of the
    other kind of estimator is refused."""
    from sklearn.datasets import make_regression

    x, y = make_regression(300, 5, noise=5, random_state=0)
    thrown = y.copy()
    thrown[:15] += 2000
    kw = dict(epochs=40, hidden=(32,), backend="numpy", random_state=1)
    squared = MLPRegressor(**kw).fit(x, thrown)
    huber = MLPRegressor(loss="huber", huber_delta=0.1, **kw).fit(x, thrown)
    clean = slice(15, None)
    err = {name: np.mean((est.predict(x)[clean] - y[clean]) ** 2)
           for name, est in (("squared", squared), ("huber", huber))}
    assert err["huber"] < 0.25 * err["squared"], err
    huber.save(tmp_path / "h.npz")
    back = MLPRegressor.load(tmp_path / "h.npz", backend="numpy")
    assert (back.loss, back.huber_delta) == ("huber", 0.1)
    np.testing.assert_array_equal(back.predict(x), huber.predict(x))
    with pytest.raises(gn.ConfigError, match="loss must be squared_error or huber"):
        MLPRegressor(loss="absolute_error", backend="numpy").fit(x, y)
    with pytest.raises(gn.ConfigError, match="loss must be log_loss"):
        MLPClassifier(loss="huber", backend="numpy").fit(x, (y > 0).astype(int))


def test_label_smoothing_keeps_a_classifier_from_certainty():
    """label_smoothing=0.3 on separable classes: the fitted probabilities of the predicted
    class stay near the smoothed target's 1 - 0.3 + 0.3 / 2 = 0.85, where the plain fit goes
    on towards 1; a regressor refuses it."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(200, 4, centers=2, cluster_std=0.5, random_state=3)
    kw = dict(epochs=60, hidden=(16,), backend="numpy", random_state=2, lr=0.01)
    plain = MLPClassifier(**kw).fit(x, y)
    smooth = MLPClassifier(label_smoothing=0.3, **kw).fit(x, y)
    top = {name: est.predict_proba(x).max(axis=1) for name, est in
           (("plain", plain), ("smooth", smooth))}
    assert np.median(top["plain"]) > 0.97 and abs(np.median(top["smooth"]) - 0.85) < 0.05, \
        {k: float(np.median(v)) for k, v in top.items()}
    with pytest.raises(gn.ConfigError, match="label_smoothing is a classifier's"):
        MLPRegressor(label_smoothing=0.1, backend="numpy").fit(x, y.astype(float))


def test_without_validation_rows_there_is_no_best_epoch_however_often_it_goes_on():
    """No validation rows: best_epoch_ is 0 ("none", as fit's History has it) after a fit,
    and stays 0 after warm-started fits and partial_fit calls (not 0 shifted by the epochs
    done, which would name an epoch)."""
    x, y = _data(n=120)
    est = _estimator(epochs=2, warm_start=True, val_fraction=0.0).fit(x, y)
    assert est.best_epoch_ == 0
    est.fit(x, y)
    assert est.n_iter_ == 4 and est.best_epoch_ == 0
    chunks = _estimator(epochs=1, val_fraction=0.0)
    chunks.partial_fit(x, y, classes=np.unique(y))
    chunks.partial_fit(x, y)
    assert chunks.n_iter_ == 2 and chunks.best_epoch_ == 0


@pytest.mark.parametrize("call, message", [
    (lambda e, x, y: e.partial_fit(x, y), "first call to partial_fit needs classes="),
    (lambda e, x, y: e.partial_fit(x, y, classes=[0]), "at least 2 classes"),
    (lambda e, x, y: e.partial_fit(x, y, classes=[0, 1]), r"labels not in classes \(2\)"),
])
def test_partial_fit_needs_the_classes_first(call, message):
    x, y = _data()
    with pytest.raises(ValueError, match=message):
        call(_estimator(), x, y)


def test_what_training_on_refuses():
    x, y = _data()
    est = _estimator(epochs=1).fit(x, y)
    with pytest.raises(ValueError, match=r"classes=1, 2, 3 are not those of the first call"):
        est.partial_fit(x, y + 1, classes=[1, 2, 3])
    with pytest.raises(ValueError, match=r"labels not in classes \(7\)"):
        est.partial_fit(x, np.where(y == 0, 7, y))
    with pytest.raises(ValueError, match="X has 6 features"):
        est.partial_fit(x[:, :6], y)
    with pytest.raises(ValueError, match=r"layer sizes \[7, 8, 3\] \(fitted: \[7, 16, 3\]\)"):
        est.set_params(hidden=(8,)).partial_fit(x, y)
    est.set_params(hidden=(HIDDEN,), warm_start=True, activation="tanh")
    with pytest.raises(ValueError, match="activation 'tanh' .fitted: 'relu'."):
        est.fit(x, y)
    est.set_params(activation="relu")
    with pytest.raises(ValueError, match=r"warm_start needs labels of the classes fitted "
                                         r"before \(0, 1, 2\); y has 0, 1"):
        est.fit(x, y % 2)
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as no:
        est.set_params(schedule="cosine").partial_fit(x, y)
    assert "has no partial_fit with the cosine schedule" in str(no.value.__cause__)
    with pytest.raises(gn.ConfigError, match="warm_start must be True or False"):
        est.set_params(schedule="constant", warm_start="yes").fit(x, y)
    reg = _estimator(MLPRegressor, epochs=1).fit(x, np.c_[x[:, 0], x[:, 1]])
    with pytest.raises(ValueError, match="y has 1 target column.s.; the fitted network "
                                         "predicts 2"):
        reg.partial_fit(x, x[:, 0])


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "cupy"])
def test_cupy_partial_fit_matches_numpy(backend):
    x, y = _data(n=300)
    gpu, cpu = _estimator(backend=backend), _estimator()
    for est in (gpu, cpu):
        for rows in (slice(0, 150), slice(150, 300)):
            est.partial_fit(x[rows], y[rows], classes=[0, 1, 2])
    assert gpu.model_.backend.name == "cupy"
    np.testing.assert_allclose(gpu.predict_proba(x), cpu.predict_proba(x), rtol=1e-8,
                               atol=1e-10)


# -- sample weights -----------------------------------------------------------------------------

def _weights(n, seed=9):
    w = np.random.default_rng(seed).uniform(0.2, 3.0, n)
    w[::7] = 0.0  # rows that do not count
    return w


@pytest.mark.parametrize("how", ["fit", "partial_fit"])
def test_weighted_classifier_takes_weighted_steps_on_weighted_statistics(how):
    x, y = _data()
    w = _weights(len(x))
    est = _estimator(batch_size=len(x), epochs=3)
    if how == "fit":
        est.fit(x, y, sample_weight=w)
    else:
        for _ in range(3):
            est.partial_fit(x, y, sample_weight=w, classes=[0, 1, 2])
    p, adam = _initial(7, 3), _Adam(LR)
    xs = _standardised(x, x, w)
    for _ in range(3):
        adam.step(p, _grads(p, xs, _one_hot(y, 3), "cross_entropy", w))
    _assert_weights(est, p)


def test_weighted_regressor_scales_its_targets_with_weighted_statistics():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(90, 4)) * [2, 1, 0.3, 5]
    t = np.c_[x @ [1.0, -2.0, 0.5, 0.1] + 3, np.sin(x[:, 0]) * 4 - 1]
    w = _weights(90, seed=13)
    est = _estimator(MLPRegressor, batch_size=90, epochs=2).fit(x, t, sample_weight=w)
    p, adam = _initial(4, 2), _Adam(LR)
    mean = w @ t / w.sum()
    std = np.sqrt(w @ (t - mean) ** 2 / w.sum())
    for _ in range(2):
        adam.step(p, _grads(p, _standardised(x, x, w), (t - mean) / std, "mse", w))
    _assert_weights(est, p)
    np.testing.assert_allclose(est.predict(x), _forward(p, _standardised(x, x, w))[2] * std
                               + mean, rtol=1e-9)


def test_equal_weights_are_no_weights():
    x, y = _data()
    plain = _estimator(epochs=2).fit(x, y)
    equal = _estimator(epochs=2).fit(x, y, sample_weight=np.full(len(x), 2.5))
    for k, v in plain.model_.state_dict().items():
        np.testing.assert_array_equal(equal.model_.state_dict()[k], v)


def test_epoch_and_validation_losses_are_weighted_means():
    """gpunet.fit's figures: with a learning rate too small to move the weights, the epoch's
    train_loss (mini-batches of unequal weight) is the weighted mean loss of the first
    weights over every training row, and val_loss the same over the validation rows."""
    from gpunet.data import make_dataset

    x, y = _data(n=200)
    data = make_dataset("w", x, y, "classification", seed=1, test_fraction=0.0,
                        val_fraction=0.25, sample_weight=_weights(200))
    assert len(data.w_train) == len(data.x_train) and len(data.w_val) == len(data.x_val)
    model = gn.MLP([7, HIDDEN, 3], backend="numpy", seed=SEED, dtype="float64")
    p = {k: np.array(v) for k, v in model.state_dict().items()}
    history = gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=1e-300), epochs=1,
                     batch_size=23, progress=False)

    def weighted_mean(x_rows, y_rows, w):
        return w @ _losses(_forward(p, x_rows)[2], _one_hot(y_rows, 3), "cross_entropy")[0] \
            / w.sum()

    assert history[0]["train_loss"] == pytest.approx(
        weighted_mean(data.x_train, data.y_train, data.w_train), rel=1e-12)
    assert history[0]["val_loss"] == pytest.approx(
        weighted_mean(data.x_val, data.y_val, data.w_val), rel=1e-12)
    unweighted = weighted_mean(data.x_val, data.y_val, np.ones(len(data.x_val)))
    assert abs(history[0]["val_loss"] - unweighted) > 1e-4 * unweighted  # (they differ)


@pytest.mark.parametrize("cls, monitor, lr", [(MLPRegressor, "val_r2", 0.01),
                                              (MLPClassifier, "val_accuracy", 0.003)])
def test_validation_scores_are_weighted_as_scikit_learns(cls, monitor, lr):
    """validation_scores_, and early stopping by them, counted each validation row once
    whatever its sample_weight; scikit-learn's MLP scores its validation rows with their
    weights. Now each epoch's score is scikit-learn's r2_score / accuracy_score with
    sample_weight on the held-out rows (of the weights after that epoch: a fit of that many
    epochs, the same run so far), and monitoring it keeps the epoch of the best weighted score,
    which here is not the best unweighted one. Without weights the scores stay unweighted."""
    from sklearn.metrics import accuracy_score, r2_score

    from gpunet.data import make_dataset

    score = r2_score if cls is MLPRegressor else accuracy_score
    x, y = _data(n=240, classes=3)
    if cls is MLPRegressor:
        y = x[:, 0] * 40 + x[:, 1] ** 2 * 10 + np.random.default_rng(1).normal(size=240) * 20
    w = _weights(240) ** 3
    epochs = 12
    # the held-out rows: the estimator's split of these rows (its seed, its fraction)
    held = make_dataset(cls.__name__, x, y, "regression" if cls is MLPRegressor else
                        "classification", seed=SEED, test_fraction=0.0, val_fraction=0.25,
                        standardize=False, sample_weight=w)
    weighted, unweighted = [], []
    for k in range(1, epochs + 1):
        p = _estimator(cls, epochs=k, val_fraction=0.25, lr=lr).fit(
            x, y, sample_weight=w).predict(held.x_val)
        weighted.append(score(held.y_val, p, sample_weight=held.w_val))
        unweighted.append(score(held.y_val, p))
    best = 1 + int(np.argmax(weighted))
    assert best != 1 + int(np.argmax(unweighted))  # (the weights decide the epoch here)
    est = _estimator(cls, epochs=epochs, patience=epochs, monitor=monitor, val_fraction=0.25,
                     lr=lr).fit(x, y, sample_weight=w)
    np.testing.assert_allclose(est.validation_scores_, weighted, rtol=1e-9, atol=1e-12)
    assert est.best_epoch_ == best
    assert est.best_validation_score_ == pytest.approx(
        score(held.y_val, est.predict(held.x_val), sample_weight=held.w_val), rel=1e-9)
    plain = _estimator(cls, epochs=3, val_fraction=0.25, lr=lr).fit(x, y)
    assert plain.validation_scores_[-1] == pytest.approx(
        score(held.y_val, plain.predict(held.x_val)), rel=1e-9, abs=1e-12)


def test_multilabel_validation_accuracy_is_weighted_as_scikit_learns():
    """Multilabel targets: the validation score is the weighted subset accuracy, as
    scikit-learn's accuracy_score(..., sample_weight=) of the held-out rows."""
    from sklearn.datasets import make_multilabel_classification
    from sklearn.metrics import accuracy_score

    from gpunet.data import make_dataset

    x, y = make_multilabel_classification(200, 6, n_classes=3, random_state=0)
    w = _weights(200) ** 3
    est = _estimator(epochs=4, val_fraction=0.25).fit(x, y, sample_weight=w)
    held = make_dataset("MLPClassifier", x, y, "classification", seed=SEED, test_fraction=0.0,
                        val_fraction=0.25, standardize=False, sample_weight=w)
    p = est.predict(held.x_val)
    want = accuracy_score(held.y_val, p, sample_weight=held.w_val)
    assert abs(want - accuracy_score(held.y_val, p)) > 1e-3  # (weighting changes it here)
    assert est.validation_scores_[-1] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("cls", [MLPRegressor, MLPClassifier])
def test_a_validation_split_too_small_to_score_is_refused_as_scikit_learn_refuses_it(cls):
    """patience on 10 rows held out 1 (0.1 of them): a regressor's validation_scores_ were all
    NaN (R^2 of one row), a classifier's 0 or 1, and early stopping went by them without a
    word. scikit-learn's MLP refuses such a split (early_stopping=True) with a ValueError
    ("The validation set is too small"); so does gpunet, where scikit-learn does and not where
    it does not."""
    from sklearn import neural_network

    x = np.random.default_rng(0).normal(size=(40, 3))
    y = x[:, 0] if cls is MLPRegressor else (x[:, 0] > 0).astype(int)
    sk = getattr(neural_network, cls.__name__)
    for n, refused in ((10, True), (5, True), (40, False)):
        ours = _estimator(cls, epochs=2, patience=2)
        theirs = sk(max_iter=2, early_stopping=True, random_state=0)
        if refused:
            with pytest.raises(ValueError, match="validation set is too small"
                               if cls is MLPRegressor else None):  # (a classifier's split
                theirs.fit(x[:n], y[:n])  # of 1 row is refused before its size check)
            with pytest.raises(ValueError, match=r"the validation set is too small: "
                                                 rf"val_fraction=0.1 of {n} rows holds out 1"):
                ours.fit(x[:n], y[:n])
            assert not hasattr(ours, "model_")
        else:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (its ConvergenceWarning after 2 iterations)
                theirs.fit(x[:n], y[:n])
            assert all(np.isfinite(ours.fit(x[:n], y[:n]).validation_scores_))


def test_validation_rows_whose_weights_are_all_zero_are_refused():
    """Their weighted loss is 0 / 0: reporting it as 0 made early stopping keep epoch 1."""
    from gpunet.data import make_dataset

    x, y = _data(n=120)
    data = make_dataset("w", x, y, "classification", seed=1, test_fraction=0.0,
                        val_fraction=0.2, sample_weight=np.ones(120))
    data.w_val = np.zeros(len(data.x_val))
    model = gn.MLP([7, HIDDEN, 3], backend="numpy")
    with pytest.raises(gn.DataError, match="weights of the 24 validation rows are all zero"):
        gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model), epochs=3, patience=1,
               progress=False)


@pytest.mark.parametrize("weights, message", [
    (lambda n: np.r_[np.ones(n - 1), -1.0], r"finite and >= 0, but row \d+ holds -1"),
    (lambda n: np.r_[np.nan, np.ones(n - 1)], "finite and >= 0, but row 0 holds nan"),
    (lambda n: np.ones(n + 1), r"sample weights shaped \(\d+,\) for \d+ rows"),
    (lambda n: np.zeros(n), "every sample weight is zero"),
    (lambda n: np.array(["1"] * n, dtype=object), "sample weights must be numbers, got dtype "
                                                   "object"),
    (lambda n: np.array([1.0] * (n - 1) + [None], dtype=object), "must be numbers"),
])
def test_bad_sample_weights_are_refused(weights, message):
    x, y = _data()
    for call in (lambda e, w: e.fit(x, y, sample_weight=w),
                 lambda e, w: e.partial_fit(x, y, sample_weight=w, classes=[0, 1, 2])):
        with pytest.raises(ValueError, match=message):
            call(_estimator(), weights(len(x)))


def test_an_object_series_of_numbers_weighs_as_its_numbers():
    """A pandas Series of dtype object holding numbers (as a column read with mixed cells
    comes) was refused ("must be numbers, got dtype object"); scikit-learn takes it as its
    numbers (its _check_sample_weight gives float64), and so does the fit, as the same
    weights given as floats."""
    pd = pytest.importorskip("pandas", reason="pandas is in the test extra")
    from sklearn.utils.validation import _check_sample_weight

    x, y = _data()
    w = _weights(len(x))
    series = pd.Series([int(v * 4) or 1 for v in w], dtype=object)  # Python ints, in objects
    floats = _check_sample_weight(series, x)  # (scikit-learn's reading of it)
    assert floats.dtype == np.float64 and series.dtype == object
    want = _estimator(epochs=2).fit(x, y, sample_weight=floats)
    got = _estimator(epochs=2).fit(x, y, sample_weight=series)
    for k, v in want.model_.state_dict().items():
        np.testing.assert_array_equal(got.model_.state_dict()[k], v)


@pytest.mark.parametrize("cls, monitor, message", [
    (MLPRegressor, "val_accuracy", "MLPRegressor is a regressor: monitor val_loss, val_r2 or "
                                   "val_mse, not val_accuracy (a classifier's)"),
    (MLPClassifier, "val_r2", "MLPClassifier is a classifier: monitor val_loss or "
                              "val_accuracy, not val_r2 (a regressor's)"),
])
def test_a_monitor_of_the_other_task_is_refused_in_the_estimators_words(cls, monitor, message):
    """It was refused in the command line's (--task classification, or DataSpec(task=...)),
    which an estimator has no use for."""
    x, y = _data(n=60)
    for call in (lambda e: e.fit(x, y), lambda e: e.partial_fit(x, y, **(
            {"classes": [0, 1, 2]} if cls is MLPClassifier else {}))):
        with pytest.raises(gn.ConfigError) as e:
            call(_estimator(cls, patience=2, monitor=monitor))
        assert str(e.value) == message


def test_multilabel_targets_of_two_other_values_are_refused_naming_y_and_the_fix():
    """An indicator matrix of -1/1 was refused as "dataset 'MLPClassifier': ...", naming no
    y; it names the estimator's y, the row and column, and what to write instead (scikit-
    learn's MLP takes it but predicts 0/1, scoring 0 against the -1/1 it was given)."""
    x, y = _data(n=40, classes=2)
    signs = 2 * np.c_[y, 1 - y] - 1
    for call in (lambda e: e.fit(x, signs), lambda e: e.partial_fit(x, signs)):
        with pytest.raises(gn.DataError) as e:
            call(_estimator())
        first = int(np.argmax(signs[:, 0] == -1))
        assert str(e.value) == (
            f"MLPClassifier: y: multilabel targets (one 0/1 column per label) must be 0 or 1,"
            f" but row {first} holds -1 in column 0 (its values are -1 and 1: write them as"
            f" 0 and 1)")


def _nesterov_sgd(p, g, buf, lr, mu):
    """torch.optim.SGD(momentum=mu, nesterov=True)'s update, float64: b = g on the first step,
    else b = mu b + g; p = p - lr (g + mu b)."""
    for k in p:
        buf[k] = g[k].copy() if k not in buf else mu * buf[k] + g[k]
        p[k] = p[k] - lr * (g[k] + mu * buf[k])


@pytest.mark.parametrize("nesterov", [True, False])
def test_nesterov_momentum_is_torchs_rule(nesterov):
    """optimizer="sgd", momentum=0.9, nesterov=True: four full-batch steps equal torch's
    Nesterov rule written out; plain momentum does not."""
    x, y = _data()
    est = _estimator(batch_size=len(x), optimizer="sgd", lr=0.05, momentum=0.9,
                     nesterov=nesterov, epochs=4).fit(x, y)
    p, buf = _initial(7, 3), {}
    xs, target = _standardised(x, x), _one_hot(y, 3)
    for _ in range(4):
        _nesterov_sgd(p, _grads(p, xs, target, "cross_entropy"), buf, 0.05, 0.9)
    if nesterov:
        _assert_weights(est, p)
    else:
        assert not np.allclose(est.model_.state_dict()["W1"], p["W1"], rtol=1e-6)


@pytest.mark.parametrize("params, message", [
    ({"optimizer": "sgd", "nesterov": True}, "nesterov momentum needs momentum > 0"),
    ({"optimizer": "sgd", "momentum": 0.9, "nesterov": "yes"}, "nesterov must be True or"),
    ({"optimizer": "adam", "nesterov": "yes"}, "nesterov must be True or"),
])
def test_nesterov_needs_sgd_with_momentum(params, message):
    x, y = _data(n=40)
    with pytest.raises(gn.ConfigError, match=message):
        _estimator(epochs=1, **params).fit(x, y)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_momentum_is_sgds_and_ignored_by_other_optimizers(optimizer):
    """scikit-learn's MLP ignores momentum and nesterovs_momentum unless solver="sgd", so a
    grid over both keeps every candidate; these refused momentum with adam (ConfigError), and
    the grid lost those candidates (NaN scores). Now adam trains as without them, the grid
    scores every candidate, and the Python API and the command line still refuse them."""
    from sklearn.model_selection import GridSearchCV

    x, y = _data(n=120)
    plain = _estimator(epochs=2, optimizer=optimizer).fit(x, y)
    given = _estimator(epochs=2, optimizer=optimizer, momentum=0.9, nesterov=True).fit(x, y)
    for k, v in plain.model_.state_dict().items():
        np.testing.assert_array_equal(given.model_.state_dict()[k], v)
    search = GridSearchCV(_estimator(epochs=2), {"optimizer": [optimizer, "sgd"],
                                                  "momentum": [0.0, 0.9]}, cv=2,
                          error_score="raise").fit(x, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    with pytest.raises(gn.ConfigError, match=f"momentum applies to the sgd optimizer, not "
                                             f"{optimizer}"):
        gn.get_optimizer(optimizer, plain.model_, **gn.optim.optimizer_kwargs(
            optimizer, momentum=0.9))


def test_layer_norm_estimator_trains_as_torch_does():
    """norm="layer": three full-batch Adam epochs of the classifier equal torch.optim.Adam on
    nn.Sequential(Linear, LayerNorm, ReLU, Linear) from the same weights (float64)."""
    torch = pytest.importorskip("torch")
    x, y = _data()
    est = _estimator(batch_size=len(x), epochs=3, norm="layer", standardize=False).fit(x, y)
    start = gn.MLP([7, HIDDEN, 3], activation="relu", backend="numpy", seed=SEED,
                   dtype="float64", norm="layer").state_dict()
    net = torch.nn.Sequential(torch.nn.Linear(7, HIDDEN), torch.nn.LayerNorm(HIDDEN),
                              torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 3)).double()
    names = {"0.weight": "W1", "0.bias": "b1", "1.weight": "gamma1", "1.bias": "beta1",
             "3.weight": "W2", "3.bias": "b2"}
    net.load_state_dict({k: torch.from_numpy(start[v]) for k, v in names.items()})
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    _assert_weights(est, {v: net.state_dict()[k].numpy() for k, v in names.items()})


def test_warm_start_refuses_another_norm():
    x, y = _data(n=60)
    est = _estimator(epochs=1, warm_start=True).fit(x, y)
    with pytest.raises(ValueError, match="norm 'layer' \\(fitted: None\\)"):
        est.set_params(norm="layer").fit(x, y)


def test_partial_fit_calls_share_one_static_step():
    """partial_fit's calls step through one StaticStep (fit's step_cache: on a GPU one graph
    capture, not one a call), to the same weights as eager steps; pickling leaves it out."""
    x, y = _data()
    shared = _estimator(batch_size=20)
    eager = _estimator(batch_size=20, graph=False)
    steps = []
    for k in range(3):
        rows = slice(40 * k, 40 * (k + 1))
        shared.partial_fit(x[rows], y[rows], classes=[0, 1, 2])
        eager.partial_fit(x[rows], y[rows], classes=[0, 1, 2])
        steps.append(shared._steps["static"][1])
    assert steps[0] is steps[1] is steps[2]
    for k, v in eager.model_.state_dict().items():
        np.testing.assert_array_equal(shared.model_.state_dict()[k], v, err_msg=k)
    assert "_steps" not in pickle.loads(pickle.dumps(shared)).__dict__
    shared.fit(x, y)  # a fit trains with its own step and lets partial_fit's go
    assert "_steps" not in shared.__dict__


def test_plain_sgd_defaults_to_a_rate_a_regression_trains_at():
    """Squared error's curvature grows with the last hidden layer's width: 0.1, sgd's default
    for classifiers (as torch's examples), diverges on diabetes in the first epoch; the
    regressor's default is 0.01 (an explicit lr is kept), and gpunet train's likewise."""
    from sklearn.datasets import load_diabetes

    from gpunet.checkpoint import load_checkpoint
    from gpunet.cli import main

    x, y = load_diabetes(return_X_y=True)
    reg = MLPRegressor(optimizer="sgd", backend="numpy").fit(x, y)
    assert reg._optimizer.lr == 0.01 and reg.score(x, y) > 0.4
    assert MLPRegressor(optimizer="sgd", lr=0.005, epochs=1, backend="numpy").fit(
        x, y)._optimizer.lr == 0.005
    clf = MLPClassifier(optimizer="sgd", epochs=1, backend="numpy").fit(x, y > 140)
    assert clf._optimizer.lr == 0.1
    with pytest.raises(gn.train.TrainingDiverged):
        MLPRegressor(optimizer="sgd", lr=0.1, backend="numpy").fit(x, y)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for dataset, lr in (("diabetes", 0.01), ("iris", 0.1)):
            assert main(["train", "--dataset", dataset, "--optimizer", "sgd", "--epochs", "1",
                         "--backend", "numpy", "--quiet", "--save", f"{tmp}/c.npz"]) == 0
            assert load_checkpoint(f"{tmp}/c.npz").header["optimizer"]["hyperparameters"][
                "lr"] == lr


def test_values_beyond_float32_are_refused_not_predicted_as_nan(tmp_path):
    """1e39 is finite in float64 and infinite in float32: a clear error (sklearn's MLP, in
    float64, predicts from it), in predict, fit and the command line, where NaN outputs or a
    loss "diverging" came out before; a float64 model takes them."""
    from gpunet.cli import main
    from gpunet.data import make_dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    y = (x[:, 0] > 0).astype(int)
    far = np.array([[1e39, 0.0, 0.0]])
    for est in (MLPClassifier(hidden=(8,), epochs=2, backend="numpy").fit(x, y),
                MLPRegressor(hidden=(8,), epochs=2, backend="numpy").fit(x, x[:, 0])):
        with pytest.raises(ValueError, match=r"a value of X is beyond float32's range"):
            est.predict(far)
    assert np.isfinite(MLPRegressor(hidden=(8,), epochs=2, dtype="float64", backend="numpy")
                       .fit(x, x[:, 0]).predict(far)).all()
    data = make_dataset("d", np.vstack([x, far]), np.append(y, 1), "classification",
                        standardize=False, test_fraction=0.0)
    model = gn.MLP([3, 4, 2], backend="numpy")
    with pytest.raises(gn.ConfigError, match=r"a value of the features is beyond float32's"):
        gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model), epochs=1, progress=False)
    np.save(tmp_path / "far.npy", far)
    assert main(["train", "--dataset", "iris", "--epochs", "1", "--backend", "numpy",
                 "--quiet", "--save", str(tmp_path / "c.npz")]) == 0
    np.save(tmp_path / "far4.npy", np.array([[1e300, 0.0, 0.0, 0.0]]))
    assert main(["predict", "--checkpoint", str(tmp_path / "c.npz"), "--input",
                 str(tmp_path / "far4.npy"), "--output", str(tmp_path / "p.csv"),
                 "--backend", "numpy"]) == 1


@pytest.mark.parametrize("warm", [False, True])
def test_ctrl_c_keeps_the_epochs_done(monkeypatch, warm):
    """A Ctrl-C during fit stops it after the current step (TrainingInterrupted, a
    KeyboardInterrupt) and leaves the estimator holding what was trained: the network as that
    step left it and the completed epochs counted in ``n_iter_`` and ``history_`` (with
    warm_start: added to the earlier ones), as an unbroken run's first epochs. Before, a
    warm-started estimator kept moved weights with the counts of the fit before."""
    import os
    import signal

    X, y = make_classification(n_samples=200, n_features=6, n_informative=4, n_classes=3,
                               random_state=0)
    kw = dict(hidden=(HIDDEN,), batch_size=32, random_state=SEED, warm_start=warm)
    unbroken = MLPClassifier(epochs=3, **kw).fit(X, y)
    if warm:
        unbroken.fit(X, y)
    est = MLPClassifier(epochs=3, **kw)
    if warm:
        est.fit(X, y)
    before = est.n_iter_ if warm else 0
    real, steps = gn.Adam.prepare_hyper, [0]

    def prepare(opt):
        steps[0] += 1
        if steps[0] == 2 * 7 + 3:  # in the third epoch of this fit (7 batches an epoch)
            os.kill(os.getpid(), signal.SIGINT)
        return real(opt)

    monkeypatch.setattr(gn.Adam, "prepare_hyper", prepare)
    with pytest.raises(gn.TrainingInterrupted) as e:
        est.fit(X, y)
    monkeypatch.setattr(gn.Adam, "prepare_hyper", real)
    assert (e.value.epoch, e.value.step) == (3, 3)
    assert str(e.value) == ("MLPClassifier: training interrupted at epoch 3, step 3 of 7; the "
                            "estimator keeps the weights reached and the 2 epoch(s) completed")
    assert est.n_iter_ == before + 2
    assert [row["epoch"] for row in est.history_] == list(range(1, before + 3))
    np.testing.assert_array_equal(est.loss_curve_, unbroken.loss_curve_[:before + 2])
    moved = est.model_.state_dict()["W1"]  # the weights of the step it stopped after
    assert not np.array_equal(moved, unbroken.model_.state_dict()["W1"])
    assert est.predict(X).shape == (200,)
    est.set_params(warm_start=True, epochs=1).fit(X, y)  # and it goes on from there
    assert est.n_iter_ == before + 3


def test_a_failed_fit_leaves_a_fitted_estimator_as_it_was():
    """A fit that fails once it has read the data (a bad rate) used to leave what it had begun
    to set: a regressor fitted on y (n,) then answered (n, 2), a classifier the new classes_."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = X @ [1.0, -2.0, 0.5]
    reg = MLPRegressor(hidden=(8,), epochs=2, random_state=SEED).fit(X, y)
    before = reg.predict(X)
    reg.set_params(lr=-1.0)
    with pytest.raises(gn.ConfigError):
        reg.fit(X, np.column_stack([y, -y]))
    np.testing.assert_array_equal(reg.predict(X), before)  # (60,), the same numbers
    clf = MLPClassifier(hidden=(8,), epochs=2, random_state=SEED).fit(X, (y > 0).astype(int))
    proba = clf.predict_proba(X)
    clf.set_params(lr=-1.0)
    with pytest.raises(gn.ConfigError):
        clf.fit(X, np.where(y > 0, "up", "down"))
    assert list(clf.classes_) == [0, 1]
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
def test_a_fit_that_diverges_while_training_on_puts_the_network_back(how):
    """Training on changes the fitted network (and partial_fit's optimiser) in place: a rate
    that makes it diverge left NaN weights behind counts that said nothing happened. Now the
    weights, and the optimiser's state, are those of before, and it goes on as if the failed
    call had not been made."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = X @ [1.0, -2.0, 0.5]
    kw = dict(hidden=(8,), epochs=2, random_state=SEED, optimizer="sgd", momentum=0.9)
    a, b = MLPRegressor(warm_start=True, **kw), MLPRegressor(warm_start=True, **kw)
    for est in (a, b):
        est.fit(X, y) if how == "warm_start" else est.partial_fit(X, y)
    before = a.predict(X)
    a.set_params(lr=1e12)
    with pytest.raises(gn.TrainingDiverged):
        a.fit(X, y) if how == "warm_start" else a.partial_fit(X, y)
    np.testing.assert_array_equal(a.predict(X), before)
    a.set_params(lr=b.lr)
    for est in (a, b):  # the same next call on both: the same weights
        est.fit(X, y) if how == "warm_start" else est.partial_fit(X, y)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_sigterm_during_an_estimators_fit_is_the_programs_to_handle(monkeypatch):
    """The estimators take over Ctrl-C only: a program's own SIGTERM handler (a server's, a
    worker's) still gets a SIGTERM that comes during fit, which runs on to its end."""
    import os
    import signal

    X, y = make_classification(n_samples=120, n_features=5, random_state=0)
    got = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    real, steps = gn.Adam.prepare_hyper, [0]

    def prepare(opt):
        steps[0] += 1
        if steps[0] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(opt)

    monkeypatch.setattr(gn.Adam, "prepare_hyper", prepare)
    try:
        est = MLPClassifier(hidden=(HIDDEN,), epochs=3, batch_size=32,
                            random_state=SEED).fit(X, y)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert got == [signal.SIGTERM] and est.n_iter_ == 3


def test_a_saved_random_state_generator_goes_on_where_it_was_after_load(tmp_path):
    """save wrote a RandomState random_state as None: the partial_fit calls after load drew
    their shuffles afresh (weights 2e-3 off the unbroken stream's, not reproducible), where
    unpickling keeps the generator. Its state is saved (a key array and three numbers)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = x[:600], y[:600]
    chunks = [(x[i:i + 150], y[i:i + 150]) for i in range(0, 600, 150)]

    def make():
        return gn.MLPClassifier(hidden=(16,), backend="numpy", epochs=1,
                                random_state=np.random.RandomState(0))

    whole = make()
    for cx, cy in chunks:
        whole.partial_fit(cx, cy, classes=np.arange(10))
    part = make()
    for cx, cy in chunks[:2]:
        part.partial_fit(cx, cy, classes=np.arange(10))
    part.save(tmp_path / "e.npz")
    part = gn.MLPClassifier.load(tmp_path / "e.npz")
    assert isinstance(part.random_state, np.random.RandomState)
    for cx, cy in chunks[2:]:
        part.partial_fit(cx, cy)
    for a, b in zip(whole.coefs_ + whole.intercepts_, part.coefs_ + part.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_a_saved_random_state_of_the_wrong_size_is_a_checkpoint_error(tmp_path):
    """A random_state/keys array of 5 numbers gave a bare IndexError traceback."""
    est = gn.MLPClassifier(hidden=(4,), backend="numpy", epochs=1,
                           random_state=np.random.RandomState(0))
    est.fit(np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2)
    est.save(tmp_path / "e.npz")
    with np.load(tmp_path / "e.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["random_state/keys"] = arrays["random_state/keys"][:5]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(gn.CheckpointError, match="random_state holds 5 keys"):
        gn.MLPClassifier.load(tmp_path / "bad.npz")
