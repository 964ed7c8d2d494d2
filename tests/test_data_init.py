"""Datasets, splits, standardisation and initialisers."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.data import load_dataset, make_dataset
from gpunet.init import INITIALISERS, gain, init_linear


def test_split_is_seeded_stratified_and_standardised_on_train_only():
    a, b = load_dataset("iris", seed=1), load_dataset("iris", seed=1)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, load_dataset("iris", seed=2).x_test)
    assert len(a.x_test) == 30 and np.bincount(a.y_test).tolist() == [10, 10, 10]
    np.testing.assert_allclose(a.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(a.x_train.std(axis=0), 1, rtol=1e-12)
    assert np.abs(a.x_test.mean(axis=0)).max() > 1e-3  # test statistics were not used


def test_non_integer_labels_are_refused():
    with pytest.raises(gn.DataError, match="integers"):
        make_dataset("t", np.ones((10, 2)), np.linspace(0, 1, 10), "classification")


def test_unknown_dataset_lists_names():
    with pytest.raises(gn.ConfigError, match="digits"):
        load_dataset("cifar")


def test_same_seed_same_weights_on_every_backend(backend):
    a = gn.MLP([6, 5, 2], backend=backend, seed=11)
    b = gn.MLP([6, 5, 2], backend="numpy", seed=11)
    c = gn.MLP([6, 5, 2], backend="numpy", seed=12)
    for k in a.params:
        np.testing.assert_array_equal(backend.to_host(a.params[k]), b.params[k])
    assert not np.array_equal(b.params["W1"], c.params["W1"])


@pytest.mark.parametrize("name, activation, expected_std", [
    ("kaiming_uniform", "relu", np.sqrt(2.0 / 400)),
    ("kaiming_normal", "relu", np.sqrt(2.0 / 400)),
    ("kaiming_normal", "tanh", (5 / 3) / np.sqrt(400)),
    ("xavier_uniform", "sigmoid", np.sqrt(2.0 / 700)),
    ("xavier_normal", "identity", np.sqrt(2.0 / 700)),
    ("torch", "relu", 1 / np.sqrt(400) / np.sqrt(3)),
    ("normal", "relu", 0.05),
])
def test_initialiser_statistics(name, activation, expected_std):
    W, b = init_linear(name, np.random.default_rng(0), 300, 400, activation, std=0.05)
    assert W.shape == (300, 400) and b.shape == (300,)
    assert W.std() == pytest.approx(expected_std, rel=0.02)
    assert abs(W.mean()) < 0.02 * expected_std * 10


def test_zeros_and_gain():
    W, b = init_linear("zeros", np.random.default_rng(0), 3, 4)
    assert not W.any() and not b.any()
    assert gain("leaky_relu", 0.2) == pytest.approx(np.sqrt(2 / 1.04))
    assert set(INITIALISERS) >= {"zeros", "normal", "xavier_uniform", "xavier_normal",
                                 "kaiming_uniform", "kaiming_normal"}


@pytest.mark.parametrize("kwargs, match", [
    ({"sizes": [4]}, "at least two"), ({"sizes": [4, 0, 2]}, "positive"),
    ({"sizes": [4, 2], "activation": "swish"}, "valid names"),
    ({"sizes": [4, 2], "output": "mish"}, "valid names"),
    ({"sizes": [4, 2], "dtype": "float16"}, "float32, float64"),
    ({"sizes": [4, 2], "dtype": "int32"}, "float32, float64"),
    ({"sizes": [4, 2], "init": "orthogonal"}, "valid names"),
    ({"sizes": [4, 2], "seed": "x"}, r"seed must be an integer >= 0 \(or None\), got 'x'"),
    ({"sizes": [4, 2], "seed": 1.5}, "seed must be an integer >= 0"),
    ({"sizes": [4, 2], "seed": -1}, "seed must be an integer >= 0"),
    ({"sizes": [4, 2], "dropout_seed": "a"}, "dropout_seed must be an integer >= 0"),
    ({"sizes": [4, 2], "slope": "a"}, "slope must be a finite number, got 'a'"),
    ({"sizes": [4, 2], "slope": float("nan")}, "slope must be a finite number, got nan"),
    ({"sizes": [4, 2], "init": "normal", "init_std": -1}, "init_std must be a finite number"),
])
def test_bad_model_options(kwargs, match):
    with pytest.raises(gn.ConfigError, match=match):
        gn.MLP(**kwargs)


def test_bad_arguments_elsewhere_in_the_api_are_config_errors(tmp_path):
    """Each is one ConfigError naming the argument, not a TypeError or AttributeError from
    deep inside; and what the API takes in their place works."""
    from gpunet.data import DataSpec, load_data

    data = load_data(DataSpec("iris"))
    model = gn.MLP([4, 5, 3], backend="numpy")
    calls = {
        "fit seed": (lambda: gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model),
                                    epochs=1, seed="a", progress=False), "seed must be"),
        "fit schedule": (lambda: gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model),
                                        epochs=1, schedule="cosine", progress=False),
                         "schedule must be a gpunet.Schedule"),
        "fit resume": (lambda: gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model),
                                      epochs=1, resume=3, progress=False),
                       "resume must be a checkpoint's path"),
        "loss of a list": (lambda: gn.CrossEntropyLoss()([[1.0, 2.0]], np.array([0])),
                           "y_hat must be a float array"),
        "loss option": (lambda: gn.get_loss("mse", foo=1), "mse takes reduction="),
        "load_state_dict": (lambda: model.load_state_dict(None), "takes a dict of arrays"),
        "fit data": (lambda: gn.fit(model, (np.ones((4, 4)), np.zeros(4)),
                                    gn.CrossEntropyLoss(), gn.SGD(model), progress=False),
                     "data must be a gpunet Dataset.*got tuple"),
        "fit loss name": (lambda: gn.fit(model, data, "cross_entropy", gn.SGD(model),
                                         progress=False), "loss_fn must be a loss object"),
        "fit loss class": (lambda: gn.fit(model, data, gn.CrossEntropyLoss, gn.SGD(model),
                                          progress=False), "loss_fn must be a loss object"),
        "fit optimizer": (lambda: gn.fit(model, data, gn.CrossEntropyLoss(), "adam",
                                         progress=False), "optimizer must be a gpunet"),
        "fit other model's optimizer": (
            lambda: gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(gn.MLP([4, 5, 3])),
                           progress=False), "optimizer was built on another model"),
    }
    for what, (call, match) in calls.items():
        with pytest.raises(gn.ConfigError, match=match):
            call()
    path = tmp_path / "run.npz"  # resume also takes a checkpoint's path
    gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model), epochs=1, progress=False,
           save=str(path), handle_sigint=False)
    again = gn.MLP([4, 5, 3], backend="numpy")
    history = gn.fit(again, data, gn.CrossEntropyLoss(), gn.SGD(again), epochs=2,
                     progress=False, resume=str(path), handle_sigint=False)
    assert [row["epoch"] for row in history] == [1, 2]


def test_first_layer_shape_mismatch_names_layer_and_shapes():
    model = gn.MLP([4, 3, 2])
    with pytest.raises(gn.ShapeError, match=r"layer 1 \(4 -> 3\).*\(batch, 4\), got \(5, 6\)"):
        model.forward(np.ones((5, 6)))


def test_backward_before_forward():
    with pytest.raises(gn.ConfigError, match="forward"):
        gn.MLP([2, 2]).backward(np.ones((1, 2)))


def test_make_dataset_infers_the_task_when_none_is_given():
    """task is optional, as the README calls it: None infers it, as load_data does."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    assert make_dataset("m", x, np.arange(50) % 3).task == "classification"
    assert make_dataset("m", x, rng.normal(size=50)).task == "regression"


def test_splits_in_the_models_dtype_hold_the_float64_splits_rounded_once():
    """make_dataset(dtype="float32") standardises in float64 and rounds once: the float64
    splits cast, bit for bit, from float32, float64 or Fortran-order features, and no copy of
    the features is made along the way beyond the splits themselves."""
    import tracemalloc

    rng = np.random.default_rng(5)
    x64 = rng.normal(3.0, 2.0, size=(40000, 40))
    y = rng.integers(0, 3, 40000)
    for x in (x64, x64.astype(np.float32), np.asfortranarray(x64)):
        before = x.copy()
        wide = make_dataset("w", x, y, val_fraction=0.1)
        tracemalloc.start()
        narrow = make_dataset("n", x, y, val_fraction=0.1, dtype="float32")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        np.testing.assert_array_equal(x, before)  # (taken as it is, never written)
        for part in ("x_train", "x_val", "x_test"):
            got, want = getattr(narrow, part), getattr(wide, part)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want.astype(np.float32))
        if x.flags.c_contiguous:  # the float32 splits (half x64's bytes) and blocks of
            assert peak < x64.nbytes, peak  # rows (before: two float64 copies of x and more)
    with pytest.raises(gn.ConfigError, match="unsupported dtype"):
        make_dataset("n", x64, y, dtype="int32")


def test_predict_casts_batch_by_batch():
    """predict on a float64 array for a float32 model casts each batch as it goes (it cast
    the whole input first: a copy of its size in float32), with the same outputs."""
    import tracemalloc

    rng = np.random.default_rng(6)
    x = rng.normal(size=(40000, 50))
    model = gn.MLP([50, 8, 3], backend="numpy", seed=0)
    want = np.concatenate([model.predict(x[i:i + 4096].astype(np.float32))
                           for i in range(0, len(x), 4096)])
    tracemalloc.start()
    got = model.predict(x, batch_size=4096)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(got, want)
    assert peak < x.size * 4 / 2, peak  # well under one float32 copy of x (8 MB)


def test_a_standardizer_takes_lists_and_row_masks():
    from gpunet.data import Standardizer

    x = np.random.default_rng(7).normal(2.0, 3.0, size=(10, 3))
    fitted = Standardizer.fit(x)
    mask = np.zeros(10, bool)
    mask[[1, 4, 7]] = True
    np.testing.assert_array_equal(fitted(x.tolist()), fitted(x))
    np.testing.assert_array_equal(fitted(x, mask), fitted(x)[[1, 4, 7]])
    by_mask, by_rows = Standardizer.fit(x, mask), Standardizer.fit(x[[1, 4, 7]])
    np.testing.assert_array_equal(by_mask.mean, by_rows.mean)
    np.testing.assert_array_equal(by_mask.std, by_rows.std)
