"""Every data source, the seeded splits, and one clear error for every bad input.

Each test writes its own small files in tmp_path: CSV with the csv module, IDX with struct and
gzip, .npz/.npy with numpy.
"""

from __future__ import annotations

import csv
import gzip
import json
import pathlib
import re
import struct

import numpy as np
import pytest

import gpunet as gn
from gpunet.data import (
    DATASET_NAMES, IDX_FILES, DataSpec, Standardizer, infer_task, load_data, load_dataset,
    load_split, read_features,
)

# ---- writers ------------------------------------------------------------------------------------


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def write_idx(path, array, magic=None, gz=False, cut=0):
    """An IDX file of uint8 ``array``: magic 0x0000080N (N = ndim), dims, bytes; ``cut`` drops
    that many bytes from the end."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x800 + array.ndim if magic is None else magic
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    raw = raw[:len(raw) - cut]
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)


def make_mnist(folder, n_train=40, n_test=12, gz=False, seed=0):
    """The four IDX files with 4x3 random images and labels cycling through 0..3."""
    rng = np.random.default_rng(seed)
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 4, 3), dtype=np.uint8)
        labels = (np.arange(n) % 4).astype(np.uint8)
        for name, a in zip(IDX_FILES[split], (images, labels)):
            write_idx(folder / (name + (".gz" if gz else "")), a, gz=gz)
        arrays[split] = images, labels
    return str(folder), arrays


def classification_csv(tmp_path, n=60, name="c.csv"):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 3)).round(4)
    y = np.arange(n) % 3
    rows = [[*map(str, xi), str(yi)] for xi, yi in zip(x, y)]
    return write_csv(tmp_path / name, ["a", "b", "c", "label"], rows), x, y


class _Touch:
    """Unpickling this creates ``path``: the payload a refused pickle must never run."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


# ---- every source loads -------------------------------------------------------------------------


@pytest.mark.parametrize("name, task, n_classes, n_features, n_rows", [
    ("iris", "classification", 3, 4, 150), ("wine", "classification", 3, 13, 178),
    ("breast_cancer", "classification", 2, 30, 569), ("diabetes", "regression", 0, 10, 442),
    ("moons", "classification", 2, 2, 200), ("spirals", "classification", 3, 2, 200),
    ("sine", "regression", 0, 3, 200),
])
def test_named_sources_load_with_their_task(name, task, n_classes, n_features, n_rows):
    d = load_data(DataSpec(name, samples=200))
    assert d.task == task and d.n_classes == n_classes and d.n_features == n_features
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == n_rows
    assert d.n_outputs == (n_classes if task == "classification" else 1)
    if task == "regression":
        assert d.y_train.shape == (len(d.x_train), 1) and d.y_train.dtype == np.float64
    else:
        assert d.y_train.dtype == np.int64


def test_dataset_names_list_every_named_source():
    assert set(DATASET_NAMES) == {"digits", "iris", "wine", "breast_cancer", "diabetes", "moons",
                                  "spirals", "sine", "mnist", "fashion_mnist"}


@pytest.mark.parametrize("name", ["moons", "spirals", "sine"])
def test_synthetic_sets_follow_seed_samples_and_noise(name):
    def raw(**kw):
        return load_split(DataSpec(name, samples=90, **kw), "all", None)[:2]

    (xa, ya), (xb, yb) = raw(seed=4), raw(seed=4)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert len(xa) == 90
    assert not np.array_equal(xa, raw(seed=5)[0])
    assert not np.array_equal(raw(seed=4, noise=0.0)[0 if name != "sine" else 1],
                              xa if name != "sine" else ya)


def test_spirals_have_three_balanced_classes():
    d = load_data(DataSpec("spirals", samples=300, val_fraction=0))
    assert np.bincount(np.concatenate([d.y_train, d.y_test])).tolist() == [100, 100, 100]


def test_csv_loads_the_rows_as_written(tmp_path):
    path, x, y = classification_csv(tmp_path)
    spec = DataSpec(path, target="label")
    d = load_data(spec)
    assert d.task == "classification" and d.n_classes == 3 and d.n_features == 3
    xs, ys, task, k = load_split(d.spec, "all", None)
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ys, y)
    assert (task, k) == ("classification", 3)


def test_csv_target_column_may_sit_anywhere_and_regression_is_inferred(tmp_path):
    rows = [[f"{0.5 * i + 0.25}", str(i), str(i * 2)] for i in range(20)]
    path = write_csv(tmp_path / "r.csv", ["price", "a", "b"], rows)
    d = load_data(DataSpec(path, target="price"))
    assert d.task == "regression" and d.n_features == 2 and d.y_train.shape[1] == 1
    x, y, _, _ = load_split(d.spec, "all", None)
    np.testing.assert_array_equal(x, [[i, 2 * i] for i in range(20)])
    np.testing.assert_array_equal(y[:, 0], [0.5 * i + 0.25 for i in range(20)])


@pytest.mark.parametrize("keys", [{}, {"x_key": "features", "y_key": "labels"}])
def test_npz_loads_default_or_named_arrays(tmp_path, keys):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 5)), np.arange(50) % 2
    np.savez(tmp_path / "d.npz", **{keys.get("x_key", "x"): x, keys.get("y_key", "y"): y})
    d = load_data(DataSpec(str(tmp_path / "d.npz"), **keys))
    assert d.task == "classification" and d.n_classes == 2 and d.n_features == 5
    np.testing.assert_array_equal(load_split(d.spec, "all", None)[0], x)


def test_npy_pair_loads_and_flattens_images(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 2, 3))
    y = np.random.default_rng(1).normal(size=(30, 2))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    d = load_data(DataSpec(str(tmp_path / "x.npy"), target=str(tmp_path / "y.npy")))
    assert d.task == "regression" and d.n_features == 6 and d.n_outputs == 2
    xs, ys, _, _ = load_split(d.spec, "all", None)
    np.testing.assert_array_equal(xs, x.reshape(30, 6))
    np.testing.assert_array_equal(ys, y)


def test_idx_plain_and_gzipped_give_the_arrays_written(tmp_path):
    plain, arrays = make_mnist(tmp_path / "plain")
    zipped, _ = make_mnist(tmp_path / "gz", gz=True)
    a, b = (load_data(DataSpec("mnist", data_dir=d, val_fraction=0.25)) for d in (plain, zipped))
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.task == "classification" and a.n_classes == 4 and a.n_features == 12
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (30, 10, 12)
    # the t10k files are the test split, in file order; pixels scaled to [0, 1]
    x_test, y_test, _, _ = load_split(a.spec, "test", None)
    images, labels = arrays["test"]
    np.testing.assert_array_equal(x_test, images.reshape(12, 12) / 255.0)
    np.testing.assert_array_equal(y_test, labels)
    x_all, y_all, _, _ = load_split(a.spec, "all", None)
    np.testing.assert_array_equal(x_all[:40], arrays["train"][0].reshape(40, 12) / 255.0)
    np.testing.assert_array_equal(y_all, np.concatenate([arrays["train"][1], labels]))


def test_fashion_mnist_reads_the_same_layout(tmp_path):
    folder, _ = make_mnist(tmp_path / "f", gz=True)
    d = load_data(DataSpec("fashion_mnist", data_dir=folder))
    assert d.name == "fashion_mnist" and len(d.x_test) == 12


# ---- the task -----------------------------------------------------------------------------------


@pytest.mark.parametrize("y, task", [
    (np.array([0, 1, 2, 1]), "classification"),
    (np.array([3, -1, 2, 1]), "classification"),          # an integer dtype: labels (then refused)
    (np.array([0.0, 1.0, 2.0, 1.0]), "classification"),
    (np.arange(100, dtype=float), "classification"),
    (np.arange(101, dtype=float), "regression"),           # more than 100 distinct values
    (np.array([0.0, -1.0, 2.0]), "regression"),             # a negative value
    (np.array([0.0, 0.5, 2.0]), "regression"),              # not integer-valued
    (np.array([[0.0, 1.0], [1.0, 0.0]]), "regression"),     # two target columns
])
def test_task_inferred_from_targets(y, task):
    assert infer_task(y) == task


def test_task_option_and_loss_decide_before_the_data(tmp_path):
    rows = [[str(i), str(i % 3)] for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["a", "y"], rows)
    assert load_data(DataSpec(path, target="y")).task == "classification"
    assert load_data(DataSpec(path, target="y"), loss="mse").task == "regression"
    assert load_data(DataSpec(path, target="y", task="regression")).task == "regression"
    # a named set's known task beats the loss: the loss must fit it, unless task is forced
    with pytest.raises(gn.ConfigError, match="iris is a classification dataset"):
        load_data(DataSpec("iris"), loss="mse")
    assert load_data(DataSpec("iris", task="regression"), loss="mse").task == "regression"
    # the resolved task is stored, so the spec alone rebuilds the same rows
    d = load_data(DataSpec(path, target="y"), loss="mse")
    assert d.spec.task == "regression"
    np.testing.assert_array_equal(
        load_split(d.spec, "test", d.standardizer, d.target_standardizer)[1], d.y_test)


def test_labels_are_not_remapped(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(40.0).reshape(20, 2))
    np.save(tmp_path / "y.npy", np.array([0, 2, 5, 2] * 5))
    d = load_data(DataSpec(str(tmp_path / "x.npy"), target=str(tmp_path / "y.npy")))
    assert d.n_classes == 6
    assert set(np.concatenate([d.y_train, d.y_val, d.y_test]).tolist()) == {0, 2, 5}


# ---- splits and standardisation -----------------------------------------------------------------


def test_split_sizes_disjoint_seeded_and_stratified(tmp_path):
    path, _, _ = classification_csv(tmp_path, n=100)
    spec = DataSpec(path, target="label", seed=3, val_fraction=0.1, test_fraction=0.2)
    a, b = load_data(spec), load_data(spec)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (70, 10, 20)
    for field in ("x_train", "x_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_test, load_data(DataSpec(path, target="label", seed=4)).x_test)
    raw = load_split(a.spec, "all", None)[0]
    rows = [tuple(map(tuple, a.standardizer.mean + a.standardizer.std * s))
            for s in (a.x_train, a.x_val, a.x_test)]
    assert sum(map(len, rows)) == len(set().union(*rows)) == len(raw)  # disjoint, cover all
    assert sorted(np.bincount(a.y_test).tolist()) == [6, 7, 7]  # stratified 34/33/33


def test_the_split_is_scikit_learns_row_for_row_without_importing_it():
    """_hold_out gives train_test_split's rows (stratified where it stratifies, a shuffle
    where it refuses), so runs split before keep their splits; and loading data imports no
    scikit-learn (0.6 s of a run's start)."""
    import subprocess
    import sys

    from sklearn.model_selection import train_test_split

    from gpunet.data import _hold_out

    rng = np.random.default_rng(0)
    cases = 0
    for trial in range(400):
        n = int(rng.integers(4, 300))
        k = int(rng.integers(1, n))
        kind = trial % 4
        if kind == 0:  # integer classes, uneven
            y = rng.choice(int(rng.integers(2, 7)), n, p=None)
        elif kind == 1:  # text classes with ties in their counts
            y = np.array(["b", "a", "c"])[np.arange(n) % 3]
        elif kind == 2:  # multilabel rows (joined as text for the strata)
            y = rng.integers(0, 2, (n, 3))
        else:  # a class of one row: sklearn refuses to stratify, shuffles instead
            y = np.concatenate([[9], rng.integers(0, 3, n - 1)])
        pool = np.sort(rng.choice(n + 50, n, replace=False))  # row numbers, not 0..n-1
        seed = int(rng.integers(0, 2**31))
        labels = np.zeros(n + 50, dtype=y.dtype) if y.ndim == 1 else \
            np.zeros((n + 50, 3), dtype=y.dtype)
        labels[pool] = y
        try:
            expected = train_test_split(pool, test_size=k, random_state=seed, stratify=y)
        except ValueError:
            expected = train_test_split(pool, test_size=k, random_state=seed)
        got = _hold_out(pool, k, labels, "classification", seed)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
        reg = _hold_out(pool, k, labels, "regression", seed)
        for a, b in zip(reg, train_test_split(pool, test_size=k, random_state=seed)):
            np.testing.assert_array_equal(a, b)
        cases += 1
    assert cases == 400
    code = ("import sys, gpunet.data as d; d.load_data(d.DataSpec('spirals', samples=60)); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False"]


def test_test_split_does_not_depend_on_val_fraction():
    base = load_dataset("wine", seed=2)          # the train/test split of earlier checkpoints
    for vf in (0.0, 0.15, 0.3):
        d = load_data(DataSpec("wine", seed=2, val_fraction=vf))
        np.testing.assert_array_equal(d.y_test, base.y_test)
        np.testing.assert_allclose(d.standardizer(load_split(d.spec, "test", None)[0]), d.x_test)
    x_test = load_split(DataSpec("wine", seed=2, val_fraction=0.3), "test", None)[0]
    np.testing.assert_allclose(base.standardizer(x_test), base.x_test)


def test_zero_val_fraction_gives_an_empty_validation_split():
    d = load_data(DataSpec("iris", val_fraction=0.0))
    assert d.x_val.shape == (0, 4) and d.y_val.shape == (0,) and len(d.x_train) == 120


def test_too_small_a_class_to_stratify_falls_back(tmp_path):
    rows = [[str(i), "1" if i == 0 else str(i % 2 * 2)] for i in range(20)]  # label 1 once
    d = load_data(DataSpec(write_csv(tmp_path / "s.csv", ["a", "y"], rows), target="y"))
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 20 and d.n_classes == 3


def test_standardisation_uses_training_rows_only():
    d = load_data(DataSpec("wine", seed=1))
    raw_train = load_split(d.spec, "train", None)[0]
    fitted = Standardizer.fit(raw_train)
    np.testing.assert_array_equal(d.standardizer.mean, fitted.mean)
    np.testing.assert_array_equal(d.standardizer.std, fitted.std)
    np.testing.assert_allclose(d.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(d.x_train.std(axis=0), 1, rtol=1e-12)
    assert np.abs(d.x_test.mean(axis=0)).max() > 1e-3
    np.testing.assert_allclose(d.x_val, fitted(load_split(d.spec, "val", None)[0]))


@pytest.mark.parametrize("source", ["iris", "diabetes", "csv", "idx"])
def test_load_split_returns_the_rows_load_data_put_there(tmp_path, source):
    if source == "csv":
        spec = DataSpec(classification_csv(tmp_path)[0], target="label", seed=7)
    elif source == "idx":
        spec = DataSpec("mnist", data_dir=make_mnist(tmp_path / "m")[0], val_fraction=0.2)
    else:
        spec = DataSpec(source, seed=7)
    d = load_data(spec)
    stored = DataSpec.from_json(json.loads(json.dumps(d.spec.to_json())))
    assert stored == d.spec
    for split in ("train", "val", "test"):
        x, y, task, k = load_split(stored, split, d.standardizer, d.target_standardizer)
        np.testing.assert_array_equal(x, getattr(d, f"x_{split}"))
        np.testing.assert_array_equal(y, getattr(d, f"y_{split}"))
        assert (task, k) == (d.task, d.n_classes)
    x_all, y_all, _, _ = load_split(stored, "all", d.standardizer)
    assert len(x_all) == len(d.x_train) + len(d.x_val) + len(d.x_test)
    every = np.concatenate([d.x_train, d.x_val, d.x_test])
    np.testing.assert_array_equal(np.unique(x_all, axis=0), np.unique(every, axis=0))


def test_legacy_load_dataset_is_a_train_test_split():
    d = load_dataset("iris", seed=1)
    assert len(d.x_val) == 0 and len(d.x_test) == 30 and d.split["seed"] == 1


# ---- read_features ------------------------------------------------------------------------------


def test_read_features_from_csv_and_npy(tmp_path):
    x = np.random.default_rng(0).normal(size=(7, 3))
    path = write_csv(tmp_path / "in.csv", ["a", "b", "c"], [[repr(float(v)) for v in r] for r in x])
    np.testing.assert_array_equal(read_features(path), x)
    np.save(tmp_path / "in.npy", x.astype(np.float32))
    out = read_features(tmp_path / "in.npy")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, x.astype(np.float32))


# ---- one clear error for every bad input --------------------------------------------------------


def _csv_with(tmp_path, rows, header=("a", "b", "y")):
    return write_csv(tmp_path / "bad.csv", header, rows)


GOOD = [["1", "2", "0"], ["3", "4", "1"], ["5", "6", "0"], ["7", "8", "1"]]


def _npy_pair(tmp_path, x, y):
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return DataSpec(str(tmp_path / "x.npy"), target=str(tmp_path / "y.npy"))


def _npz(tmp_path, **arrays):
    np.savez(tmp_path / "d.npz", **arrays)
    return str(tmp_path / "d.npz")


def _mnist_with(tmp_path, name, array=None, **kw):
    folder, _ = make_mnist(tmp_path / "m")
    if array is not None:
        write_idx(pathlib.Path(folder) / name, array, **kw)
    else:
        (pathlib.Path(folder) / name).unlink()
    return DataSpec("mnist", data_dir=folder)


def _text(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def _empty(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    return str(tmp_path / name)


def _garbage(tmp_path, name):
    (tmp_path / name).write_bytes(b"neither zip nor npy")
    return str(tmp_path / name)


def _npz_named_npy(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.ones((3, 2)))
    return str((tmp_path / "x.npz").rename(tmp_path / "x.npy"))


def _mnist_bad_gzip(tmp_path):
    folder, _ = make_mnist(tmp_path / "m", gz=True)
    (pathlib.Path(folder) / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    return DataSpec("mnist", data_dir=folder)


X20, Y20 = np.arange(40.0).reshape(20, 2), np.arange(20) % 2

ERRORS = {
    # missing files and folders
    "missing csv": (lambda p: load_data(DataSpec(str(p / "no.csv"), target="y")),
                    gn.DataError, r"no\.csv: no such file \(expected a CSV file"),
    "missing npy targets": (lambda p: load_data(DataSpec(_npy_pair(p, X20, Y20).dataset,
                                                         target=str(p / "none.npy"))),
                            gn.DataError, r"none\.npy: no such file"),
    "missing mnist folder": (lambda p: load_data(DataSpec("mnist", data_dir=str(p / "nowhere"))),
                             gn.DataError, r"nowhere: no such folder; mnist expects the four IDX "
                                           r"files train-images-idx3-ubyte, train-labels-idx1"),
    "missing mnist file": (lambda p: load_data(_mnist_with(p, "t10k-labels-idx1-ubyte")),
                           gn.DataError, r"missing t10k-labels-idx1-ubyte; mnist expects"),
    "mnist without data_dir": (lambda p: load_data(DataSpec("mnist")), gn.ConfigError,
                               r"mnist needs data_dir"),
    # empty files
    "empty csv": (lambda p: load_data(DataSpec(_empty(p, "e.csv"), target="y")), gn.DataError,
                  r"e\.csv: empty file"),
    "empty npz": (lambda p: load_data(DataSpec(_empty(p, "e.npz"))), gn.DataError,
                  r"e\.npz: empty file"),
    "empty npy": (lambda p: read_features(_empty(p, "e.npy")), gn.DataError, r"e\.npy: empty file"),
    "csv header only": (lambda p: load_data(DataSpec(_csv_with(p, []), target="y")),
                        gn.DataError, r"bad\.csv: a header but no data rows"),
    # bad CSV cells, named by line and column
    "csv non-numeric": (lambda p: load_data(DataSpec(
        _csv_with(p, [*GOOD[:1], ["1", "abc", "0"], *GOOD[1:]]), target="y")),
        gn.DataError, r"bad\.csv: line 3, column 'b': 'abc' is not a number"),
    "csv missing value": (lambda p: load_data(DataSpec(_csv_with(p, [["", "2", "0"], *GOOD]),
                                                       target="y")),
                          gn.DataError, r"line 2, column 'a': missing value"),
    "csv nan": (lambda p: load_data(DataSpec(_csv_with(p, [*GOOD, ["1", "nan", "0"]]), target="y")),
                gn.DataError, r"line 6, column 'b': missing value \('nan'\); gpunet fills"),
    "csv infinity": (lambda p: load_data(DataSpec(_csv_with(p, [["-inf", "1", "0"], *GOOD]),
                                                  target="y")),
                     gn.DataError, r"line 2, column 'a': '-inf' \(NaN or infinity\)"),
    "csv target nan": (lambda p: load_data(DataSpec(_csv_with(p, [*GOOD, ["1", "2", "NaN"]]),
                                                    target="y")),
                       gn.DataError, r"line 6, target column 'y'"),
    "csv short row": (lambda p: load_data(DataSpec(_csv_with(p, [*GOOD, ["1", "2"]]), target="y")),
                      gn.DataError, r"line 6 has 2 fields, the header has 3"),
    "csv text label": (lambda p: load_data(DataSpec(_csv_with(p, [*GOOD, ["1", "2", "setosa"]]),
                                                    target="y")),
                       gn.DataError, r"target column 'y' mixes numbers \('0' at line 2\) and "
                                     r"text \('setosa' at line 6\)"),
    "csv no such target": (lambda p: load_data(DataSpec(_csv_with(p, GOOD), target="label")),
                           gn.DataError, r"no column 'label'; columns: a, b, y$"),
    "csv semicolons": (lambda p: load_data(DataSpec(_text(p, "s.csv", "a;b;y\n1,5;2;0\n"),
                                                    target="y")),
                       gn.DataError, r"no column 'y'; columns: a;b;y \(a file of fields "
                                     r"separated by ';'\? gpunet reads commas"),
    "csv target not named": (lambda p: load_data(DataSpec(_csv_with(p, GOOD))), gn.ConfigError,
                             r"name the target column \(--target\); columns: a, b, y"),
    # labels
    "non-integer labels": (lambda p: load_data(DataSpec(
        _csv_with(p, [*GOOD, ["1", "2", "1.5"]]), target="y", task="classification")),
        gn.DataError, r"class labels must be integers, but line 6 holds 1\.5"),
    "negative labels": (lambda p: load_data(_npy_pair(p, X20, np.r_[Y20[:-1], -3])),
                        gn.DataError, r"labels must be >= 0, but row 19 of .*y\.npy holds -3 "
                                      r"\(labels such as -1 and 1: map them to 0\.\.k-1, or "
                                      r"write them as text class names"),
    "huge label": (lambda p: load_data(_npy_pair(p, X20, np.r_[Y20[:-1], 10**9])),
                   gn.DataError, r"class labels must lie in 0\.\.99999, but row 19 of .* holds "
                                 r"1e\+09 \(for numeric targets use the regression task"),
    "one class": (lambda p: load_data(_npy_pair(p, X20, np.zeros(20, int))), gn.DataError,
                  r"only one class \(label 0\) in the targets; classification needs at least "
                  r"two \(for numeric targets: the regression task\)"),
    "idx label one class": (lambda p: load_data(DataSpec(_npz(p, x=X20, y=np.ones(20)),
                                                         task="classification")),
                            gn.DataError, r"only one class \(label 1\)"),
    "one text class": (lambda p: load_data(DataSpec(_npz(p, x=X20, y=np.array(["yes"] * 20)))),
                       gn.DataError, r"only one class \('yes'\) in the targets"),
    # sizes
    "too few samples": (lambda p: load_data(DataSpec(_npz(p, x=X20[:2], y=Y20[:2]))),
                        gn.DataError, r"2 samples, but val_fraction 0\.1 and test_fraction 0\.2 "
                                      r"need at least 3"),
    "too few mnist training rows": (lambda p: load_data(DataSpec(
        "mnist", data_dir=make_mnist(p / "m", n_train=1)[0])),
        gn.DataError, r"1 training samples, but val_fraction 0\.1 needs at least 2"),
    "x/y lengths (npy)": (lambda p: load_data(_npy_pair(p, X20, Y20[:15])), gn.DataError,
                          r"x\.npy has 20 rows but .*y\.npy has 15"),
    "x/y lengths (npz)": (lambda p: load_data(DataSpec(_npz(p, x=X20, y=Y20[:4]))),
                          gn.DataError, r"20 rows in 'x' but 4 in 'y'"),
    # npz / npy contents
    "npz missing key": (lambda p: load_data(DataSpec(_npz(p, x=X20, y=Y20), y_key="labels")),
                        gn.DataError, r"no array 'labels'; arrays present: x, y"),
    "npz nan": (lambda p: load_data(DataSpec(_npz(p, x=np.where(X20 == 5, np.nan, X20), y=Y20))),
                gn.DataError, r"array 'x' row 2, column 1 is nan"),
    "npz string features": (lambda p: load_data(DataSpec(_npz(p, x=X20.astype(str),
                                                               y=np.arange(20) % 2))),
                            gn.DataError, r"array 'x': the features must be numbers, got dtype"),
    "npz text targets for regression": (
        lambda p: load_data(DataSpec(_npz(p, x=X20, y=np.array(["a", "b"] * 10)),
                                     task="regression")),
        gn.ConfigError, r"d\.npz: the targets are text \(class names such as 'a'\); "
                        r"regression needs numbers"),
    "npy holds an npz": (lambda p: read_features(_npz_named_npy(p)), gn.DataError,
                         r"x\.npy: an \.npz archive, not a \.npy array"),
    "npz not a zip": (lambda p: load_data(DataSpec(_garbage(p, "n.npz"))), gn.DataError,
                      r"n\.npz: not a readable \.npz archive"),
    "npy garbage": (lambda p: read_features(_garbage(p, "n.npy")), gn.DataError,
                    r"n\.npy: not a \.npy file \(it does not start with a \.npy header\)"),
    # IDX
    "idx wrong magic": (lambda p: load_data(_mnist_with(
        p, "train-images-idx3-ubyte", np.zeros((40, 4, 3)), magic=0x801)),
        gn.DataError, r"train-images-idx3-ubyte: magic number 0x00000801, expected 0x00000803"),
    "idx truncated": (lambda p: load_data(_mnist_with(
        p, "t10k-images-idx3-ubyte", np.zeros((12, 4, 3)), cut=5)),
        gn.DataError, r"t10k-images-idx3-ubyte: truncated: the header says 12 x 4 x 3 \(144 bytes"),
    "idx counts disagree": (lambda p: load_data(_mnist_with(
        p, "train-labels-idx1-ubyte", np.zeros(39))),
        gn.DataError, r"holds 40 images but .*train-labels-idx1-ubyte holds 39 labels"),
    "idx bad gzip": (lambda p: load_data(_mnist_bad_gzip(p)), gn.DataError,
                     r"t10k-labels-idx1-ubyte\.gz: not a readable gzip file"),
    # names and options
    "unknown dataset": (lambda p: load_data(DataSpec("cifar")), gn.ConfigError,
                        r"unknown dataset 'cifar'; valid names: digits, iris.*mnist"),
    "unsupported file": (lambda p: load_data(DataSpec(str(p / "data.txt"))), gn.ConfigError,
                         r"data\.txt: unsupported file type; expected a \.csv, \.npz or \.npy"),
    "negative val fraction": (lambda p: load_data(DataSpec("iris", val_fraction=-0.1)),
                              gn.ConfigError, r"val_fraction must lie in \[0, 1\), got -0\.1"),
    "test fraction 1": (lambda p: load_data(DataSpec("iris", test_fraction=1.0)), gn.ConfigError,
                        r"test_fraction must lie in \[0, 1\), got 1\.0"),
    "fractions sum to 1": (lambda p: load_data(DataSpec("iris", val_fraction=0.5,
                                                        test_fraction=0.5)),
                           gn.ConfigError, r"val_fraction \+ test_fraction must be below 1"),
    "zero samples": (lambda p: load_data(DataSpec("moons", samples=0)), gn.ConfigError,
                     r"samples must be a positive integer, got 0"),
    "negative noise": (lambda p: load_data(DataSpec("sine", noise=-0.5)), gn.ConfigError,
                       r"noise must be a finite number >= 0, got -0\.5"),
    "unknown task": (lambda p: load_data(DataSpec("iris", task="ranking")), gn.ConfigError,
                     r"unknown task 'ranking'; valid names: classification, regression"),
    "negative seed": (lambda p: load_data(DataSpec("iris", seed=-1)), gn.ConfigError,
                      r"seed must be an integer in \[0, 2\*\*32\)"),
    "loss against task": (lambda p: load_data(DataSpec("iris", task="regression"),
                                              loss="cross_entropy"),
                          gn.ConfigError, r"loss cross_entropy needs a classification task"),
    "target on a named set": (lambda p: load_data(DataSpec("iris", target="y")), gn.ConfigError,
                              r"target applies to \.csv and \.npy datasets, not to 'iris'"),
    "data_dir on a csv": (lambda p: load_data(DataSpec("a.csv", target="y", data_dir=str(p))),
                          gn.ConfigError, r"data_dir applies to mnist and fashion_mnist"),
    "npy without target": (lambda p: load_data(DataSpec(str(p / "x.npy"))), gn.ConfigError,
                           r"x\.npy: a \.npy dataset needs target"),
    "unknown split": (lambda p: load_split(DataSpec("iris"), "holdout", None), gn.ConfigError,
                      r"unknown split 'holdout'; valid names: train, val, test, all"),
    "standardizer width": (lambda p: load_split(DataSpec("iris"), "test",
                                                Standardizer(np.zeros(3), np.ones(3))),
                           gn.DataError, r"4 features, but the stored standardizer was fitted on"),
    "spec field": (lambda p: DataSpec.from_json({"dataset": "iris", "sead": 1}), gn.ConfigError,
                   r"unknown data spec field\(s\): sead"),
    "predict input type": (lambda p: read_features(p / "in.parquet"), gn.ConfigError,
                           r"in\.parquet: unsupported input file; expected a \.csv, \.npz "
                           r"or \.npy"),
    "predict csv cell": (lambda p: read_features(_csv_with(p, [["1", "x", "2"]])), gn.DataError,
                         r"line 2, column 'b': 'x' is not a number"),
    "text named npy": (lambda p: read_features(_text_as(p, "t.npy")), gn.DataError,
                       r"t\.npy: not a \.npy file \(it does not start with a \.npy header\)"),
    "predict npy scalar": (lambda p: read_features(_npy_pair(p, np.float64(3), Y20).dataset),
                           gn.DataError, r"the features must be an array with one row"),
    "npz of no rows": (lambda p: load_data(DataSpec(_npz(p, x=np.zeros((0, 4)),
                                                      y=np.zeros(0, np.int64)))),
                  gn.DataError, r"d\.npz: the features have no rows \(shape \(0, 4\)\)"),
    "empty mnist test": (lambda p: load_data(DataSpec("mnist", data_dir=make_mnist(
        p / "m", n_test=0)[0])), gn.DataError, r"holds no images \(the test files of .* are "
                                                r"empty\)"),
    "scalar text target": (lambda p: load_data(DataSpec(_npz(p, x=X20, y=np.array("a")))),
                           gn.DataError, r"array 'y': the targets must be an array with one row"),
    "npz member not npy": (lambda p: load_data(DataSpec(_npz_with_text_member(p))),
                           gn.DataError, r"'x' is not a \.npy array in the archive"),
    "noise past float64": (lambda p: load_data(DataSpec("moons", noise=1e308)), gn.DataError,
                           r"noise 1e\+308 takes the values past float64's range"),
    "samples past memory": (lambda p: load_data(DataSpec("sine", samples=10**23)),
                            gn.DataError, r"do not fit in this machine's memory"),
}


def _text_as(tmp_path, name):
    (tmp_path / name).write_text("hello\n")
    return tmp_path / name


def _npz_with_text_member(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "t.npz", "w") as z:
        z.writestr("x.npy", b"not an array")  # (numpy gives such a member back as bytes)
        z.writestr("y.npy", b"nor this")
    return str(tmp_path / "t.npz")


def test_predict_reads_npy_features_shaped_as_training_takes_them(tmp_path):
    for x, want in ((np.arange(5.0), np.arange(5.0).reshape(5, 1)),
                    (np.arange(24.0).reshape(3, 2, 4), np.arange(24.0).reshape(3, 8))):
        np.save(tmp_path / "x.npy", x)
        np.testing.assert_array_equal(read_features(tmp_path / "x.npy"), want)
    np.save(tmp_path / "x.npy", np.zeros((0, 2, 2)))  # (as a CSV of a header alone)
    with pytest.raises(gn.DataError, match=r"x\.npy: the features have no rows \(shape "
                                           r"\(0, 2, 2\)\)"):
        read_features(tmp_path / "x.npy")


def test_moons_take_a_noise_of_minus_zero():
    a = load_data(DataSpec("moons", noise=-0.0, samples=50))
    b = load_data(DataSpec("moons", noise=0.0, samples=50))
    np.testing.assert_array_equal(a.x_train, b.x_train)


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_input_raises_one_clear_line(tmp_path, case):
    call, cls, pattern = ERRORS[case]
    with pytest.raises(cls, match=pattern) as e:
        call(tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("suffix", ["npz", "npy", "raw pickle"])
def test_pickled_payload_is_refused_and_never_runs(tmp_path, suffix):
    marker = tmp_path / "pwned"
    payload = np.empty(20, dtype=object)
    payload[:] = [_Touch(marker)] * 20
    if suffix == "npz":
        np.savez(tmp_path / "d.npz", x=X20, y=payload)
        spec, shown = DataSpec(str(tmp_path / "d.npz")), r"array 'y' holds pickled Python objects"
    elif suffix == "npy":
        spec, shown = _npy_pair(tmp_path, payload, Y20), r"x\.npy: it holds pickled Python objects"
    else:
        import pickle

        (tmp_path / "x.npy").write_bytes(pickle.dumps(_Touch(marker)))
        np.save(tmp_path / "y.npy", Y20)
        spec = DataSpec(str(tmp_path / "x.npy"), target=str(tmp_path / "y.npy"))
        shown = r"x\.npy: it holds pickled Python objects"
    with pytest.raises(gn.DataError, match=shown):
        load_data(spec)
    assert not marker.exists()
    # the payload is live: loading it the unsafe way does create the file
    if suffix != "raw pickle":
        path = spec.dataset if suffix == "npy" else str(tmp_path / "d.npz")
        loaded = np.load(path, allow_pickle=True)
        _ = loaded if suffix == "npy" else loaded["y"]
    else:
        import pickle

        pickle.loads((tmp_path / "x.npy").read_bytes())
    assert marker.exists()


@pytest.mark.skipif(not hasattr(np.dtypes, "StringDType"), reason="NumPy 2's StringDType")
def test_stringdtype_labels_are_refused_with_the_fix_that_works(tmp_path):
    """NumPy 2's StringDType arrays are saved as pickles: refused, with a message saying to
    save fixed-width text, and the labels saved that way load as class names."""
    names = np.array(["no", "yes"] * 10, dtype=np.dtypes.StringDType())
    with pytest.warns(UserWarning):  # numpy's own: custom dtypes are pickled
        np.savez(tmp_path / "d.npz", x=X20, y=names)
    with pytest.raises(gn.DataError, match=r"array 'y' holds pickled .*fixed-width text "
                                           r"\(np\.array\(names\.tolist\(\)\)"):
        load_data(DataSpec(str(tmp_path / "d.npz")))
    np.savez(tmp_path / "d.npz", x=X20, y=np.array(names.tolist()))
    data = load_data(DataSpec(str(tmp_path / "d.npz")))
    assert list(data.classes) == ["no", "yes"]


def test_the_fast_numeric_csv_path_reads_what_the_row_by_row_path_reads(tmp_path, monkeypatch):
    """Numeric CSVs go through NumPy's C parser; its numbers, rows and line numbers must be the
    row-by-row reader's, to the bit (the values written with repr, so every digit counts)."""
    import gpunet.data as data_module

    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 5)) * 10.0 ** rng.integers(-12, 12, (300, 5))
    y = rng.integers(0, 3, 300)
    path = tmp_path / "n.csv"
    with open(path, "w") as f:
        f.write("a,b,c,d,e,y\n")
        for row, label in zip(x, y):
            f.write(",".join(repr(float(v)) for v in row) + f", {label}\n")  # (a space too)
    fast = data_module._read_csv(str(path), "y")
    calls = []
    monkeypatch.setattr(data_module, "_all_numbers", lambda *a: calls.append(a))
    slow = data_module._read_csv(str(path), "y")
    assert calls  # the second read really took the row-by-row path
    np.testing.assert_array_equal(fast[0], x)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
    assert list(fast[2]) == slow[2] == list(range(2, 302))  # (fast: a range, no list)


@pytest.mark.parametrize("kind", ["text column", "missing value"])
def test_the_row_by_row_csv_paths_hold_the_numbers_in_little_memory(tmp_path, kind):
    """A file the C parser cannot take (a text column, a missing value) is read cell by cell,
    with the numbers kept as float64 in one buffer: the peak stays under 3x the features'
    float64 bytes (it was 8x with a text column and 5x with a missing value, every number a
    Python float in a list), and the values are the file's (written with repr), one-hot and
    NaN where they should be."""
    import tracemalloc

    import gpunet.data as data_module

    rng = np.random.default_rng(8)
    n, d = 2000, 100
    x = rng.standard_normal((n, d)) * 10.0 ** rng.integers(-6, 6, (n, d))
    colour = rng.choice(["red", "blue", "green"], n)
    path = tmp_path / "m.csv"
    with open(path, "w") as f:
        f.write("y," + ("colour," if kind == "text column" else "")
                + ",".join(f"p{j}" for j in range(d)) + "\n")
        for i in range(n):
            cells = [repr(float(v)) for v in x[i]]
            if kind == "missing value" and i % 500 == 7:
                cells[i % d] = "NA"
            f.write(f"{i % 3}," + (colour[i] + "," if kind == "text column" else "")
                    + ",".join(cells) + "\n")
    tracemalloc.start()
    try:
        got, y, lines, description, dropped, w = data_module._read_csv(str(path), "y",
                                                                        fill_missing=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    want = x.copy()
    if kind == "text column":
        assert description[0] == {"name": "colour", "categories": ["blue", "green", "red"]}
        want = np.column_stack([colour[:, None] == np.array(["blue", "green", "red"]), x])
    else:
        for i in range(7, n, 500):
            want[i, i % d] = np.nan
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(y, np.arange(n) % 3)
    assert lines == list(range(2, n + 2))
    assert peak < 3 * got.nbytes, peak / got.nbytes


def test_a_row_is_named_by_its_first_line_where_a_quoted_cell_breaks_lines(tmp_path):
    """csv's line_num is a record's last line: a note quoted over three lines moved every
    message below it (line 7 for the row that starts on line 5); an unclosed quote swallows
    the next line, and the message says so."""
    path = tmp_path / "m.csv"
    path.write_text('a,note,y\n1,"two\nlines",0\n2,ok,1\nthree,"x\ny\nz",1\n')
    with pytest.raises(gn.DataError, match=r"line 5, column 'a': 'three' is not a number "
                                           r"\(the column mixes numbers, such as '1' at line 2"):
        load_data(DataSpec(str(path), target="y"))
    path.write_text('a,note,y\n1,"two\nlines",0\n2,ok,\n')
    with pytest.raises(gn.DataError, match=r"line 4, target column 'y': missing value"):
        load_data(DataSpec(str(path), target="y"))
    path.write_text('a,b,y\n1,2,0\n3,"4\n5",6,0\n')  # (closed on the next line)
    with pytest.raises(gn.DataError, match=r"line 3 has 4 fields, the header has 3 \(a quoted "
                                           r"cell runs on to line 4: a quote left open\?\)"):
        load_data(DataSpec(str(path), target="y"))
    # left open in the last column: every line below went into that cell, a file of 4 rows
    # read as 2 without a word; now an error (csv's strict quoting)
    path.write_text('a,b,id,y\n1,2,r0,0\n3,4,"r1,1\n5,6,r2,0\n7,8,r3,1\n')
    for read in (lambda: load_data(DataSpec(str(path), target="y", ignore=["id"])),
                 lambda: read_features(path, ignore=["id", "y"])):
        with pytest.raises(gn.DataError, match=r"line 3: malformed quoting \(unexpected end of "
                                               r"data\): a quote left open"):
            read()


def test_a_blank_line_keeps_line_numbers_true(tmp_path):
    """A blank line (which NumPy's parser skips) sends the file row by row, so that a bad label
    below it is named by its own line."""
    path = write_csv(tmp_path / "b.csv", ["a", "y"],
                     [["1", "0"], ["2", "1"], [], ["3", "1"], ["4", "-1"]])
    with pytest.raises(gn.DataError, match="line 6 holds -1"):
        load_data(DataSpec(path, target="y", task="classification"))


@pytest.mark.parametrize("weighted", [False, True])
def test_standardising_columns_of_huge_values_does_not_overflow(weighted):
    """A column of finite values near 1e300 (or 1.7e308) has a sum of squares past float64's
    range: the statistics are taken again in power-of-two units, giving the float64
    mean and std of the scaled column times the scale, so its standardised values are the
    scaled column's (they were all 0, the column lost); other columns keep theirs."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(301, 3))
    for big in (1e300, 1.7e308):
        x[:, 0] = np.where(rng.normal(size=301) > 0.3, big, -big * 0.5)
        w = rng.uniform(0.1, 2.0, 301) if weighted else np.ones(301)
        s = Standardizer.fit(x, weights=w if weighted else None)
        unit = x[:, 0] / big
        mean = np.average(unit, weights=w)
        std = np.sqrt(np.average((unit - mean) ** 2, weights=w))
        np.testing.assert_allclose([s.mean[0] / big, s.std[0] / big], [mean, std], rtol=1e-13)
        plain = Standardizer.fit(x[:, 1:], weights=w if weighted else None)
        np.testing.assert_allclose(s.mean[1:], plain.mean, rtol=1e-13)
        np.testing.assert_allclose(s.std[1:], plain.std, rtol=1e-13)
        if big < 1e308:
            np.testing.assert_allclose(s(x)[:, 0], (unit - mean) / std, rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("tiny", [1e-158, 1e-170, 1e-300])
def test_standardising_columns_of_tiny_values_does_not_underflow(weighted, tiny):
    """A column of values near 1e-170 has squared deviations under float64's range (0 below
    1e-162, subnormal above): it was taken for a constant column (std 1, every value 0 once
    standardised). Its statistics are those of the unscaled column times the scale, as
    float64 NumPy gives them; a column of zeros, or of one tiny value, stays constant."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(301, 4))
    unit = x[:, 0].copy()
    x[:, 0] *= tiny
    x[:, 2], x[:, 3] = 0.0, 3 * tiny
    w = rng.uniform(0.1, 2.0, 301) if weighted else np.ones(301)
    s = Standardizer.fit(x, weights=w if weighted else None)
    mean = np.average(unit, weights=w)
    std = np.sqrt(np.average((unit - mean) ** 2, weights=w))
    np.testing.assert_allclose([s.mean[0] / tiny, s.std[0] / tiny], [mean, std], rtol=1e-13)
    np.testing.assert_allclose(s(x)[:, 0], (unit - mean) / std, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(s.std[2:], 1.0)
    np.testing.assert_array_equal(s(x)[:, 2:], 0.0)


def test_a_regressor_fits_features_and_targets_at_any_scale():
    """Features and targets scaled by 1e-170 fit as at their own scale: the predictions are
    the unscaled fit's times the scale (the feature was dropped as constant, the targets all
    standardised to 0, R^2 0). scikit-learn's r2_score, on the predictions brought back to
    unit scale, is the reference (on 1e-170 scale its own squares underflow)."""
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 3))
    y = x @ [1.0, 2.0, 3.0] + 0.1 * rng.normal(size=300)
    kw = dict(hidden=(16,), epochs=20, dtype="float64", backend="numpy", random_state=0)
    plain = gn.MLPRegressor(**kw).fit(x, y).predict(x)
    scaled = x.copy()
    scaled[:, 2] *= 1e-170
    np.testing.assert_allclose(gn.MLPRegressor(**kw).fit(scaled, y).predict(scaled), plain,
                               rtol=1e-9, atol=1e-12)
    got = gn.MLPRegressor(**kw).fit(x, y * 1e-170).predict(x) / 1e-170
    np.testing.assert_allclose(got, plain, rtol=1e-9, atol=1e-12)
    assert r2_score(y, got) == pytest.approx(r2_score(y, plain), rel=1e-12)
    assert r2_score(y, plain) > 0.8


@pytest.mark.parametrize("weighted", [False, True, "summing to 1", "summing to 1e18"])
def test_a_constant_column_keeps_a_std_of_one_whatever_its_rounding(weighted):
    """A column that is constant over the training rows has, in float64, a std of its rounding
    error (1.4e-17 for 0.1s, not 0), which would multiply any other value of it by 1e16: it
    gets std 1, as scikit-learn's StandardScaler gives (its scale_ is the reference); a column
    that does vary, however little next to its mean, keeps its own std."""
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(5)
    n = 48
    x = np.column_stack([np.full(n, 0.1), np.full(n, 123.456), np.full(n, -7e-5),
                         1e6 + rng.normal(scale=1e-4, size=n), rng.normal(size=n),
                         np.full(n, 1.1e160), np.full(n, 1.3e300)])
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    if isinstance(weighted, str):  # the test goes by the rows, not by the weights' sum
        w = w / w.sum() * float(weighted.split()[-1])
    s = Standardizer.fit(x, weights=w)
    np.testing.assert_array_equal(s.std[[0, 1, 2, 5, 6]], 1.0)
    if not isinstance(weighted, str):  # (scikit-learn counts a weights' sum as its rows)
        ref = StandardScaler().fit(x[:, :5], sample_weight=w)  # (huge ones overflow there)
        np.testing.assert_allclose(s.std[:5], ref.scale_[:5], rtol=1e-6)
    assert s.std[3] < 1e-3  # varying: its own small std
    # constant columns, huge ones too (whose squares overflow), standardise to exactly 0
    np.testing.assert_array_equal(s(x)[:, [0, 1, 2, 5, 6]], 0.0)
    np.testing.assert_allclose(s(np.array([[0.2, 123.456, 0.0, 1e6, 0.0, 0, 0]]))[0, :3],
                               [0.1, 0.0, 7e-5], rtol=1e-9, atol=1e-12)


def test_the_rows_a_split_needs_are_those_counted_one_by_one():
    """The search from 1 / (1 - vf - tf) finds what counting up from 1 finds; fractions
    summing to just under 1 are answered at once, not after billions of counts."""
    import math

    from gpunet.data import _rows_needed

    def counted(vf, tf):
        n = 1
        while n - math.ceil(tf * n) - math.ceil(vf * n) < 1:
            n += 1
        return n

    rng = np.random.default_rng(0)
    fractions = [0, 0.01, 0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 0.9, *rng.uniform(0, 1, 20)]
    for vf in fractions:
        for tf in fractions:
            if vf + tf < 0.999:
                assert _rows_needed(vf, tf) == counted(vf, tf), (vf, tf)
    assert _rows_needed(0.5, 0.4999999999) > 1e9
    assert _rows_needed(0.5, 0.5) is None and _rows_needed(0.7, 0.6) is None


def test_a_header_only_csv_is_one_error_and_no_warning(tmp_path):
    """NumPy's fast reader warns on a file with no rows; that one warning is ours to drop
    (any other one it gives is left to show)."""
    import warnings

    path = tmp_path / "h.csv"
    path.write_text("a,y\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(gn.DataError, match=r"h\.csv: a header but no data rows"):
            load_data(DataSpec(str(path), target="y"))


def _idx_gz(path, dims, body_bytes):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", 0x800 + len(dims)) + struct.pack(f">{len(dims)}I", *dims))
        for _ in range(body_bytes >> 20):  # (a MiB at a time: compressed to about 1 KiB each)
            f.write(bytes(1 << 20))
        f.write(bytes(body_bytes & ((1 << 20) - 1)))


@pytest.mark.parametrize("dims, body, labels, message", [
    # a small .gz that inflates to 64 MiB under a header of forty 4 x 3 images
    ((40, 4, 3), 64 << 20, 40, r"too long: the header says 40 x 4 x 3 \(480 bytes of data\), "
                               r"the file holds more than 480"),
    ((40, 4, 3), 100, 40, r"truncated: the header says 40 x 4 x 3 \(480 bytes of data\), the "
                          r"file holds 100$"),
    # 64 Mi images of 1 x 1 pixel, 64 MiB inflated, for 40 labels: counted from the headers,
    # before the body is read
    ((64 << 20, 1, 1), 64 << 20, 40, r"train-images-idx3-ubyte\.gz holds 67108864 images but "
                                     r".*train-labels-idx1-ubyte\.gz holds 40 labels"),
    # 2^32 - 1 images over 5 bytes, and as many labels: the memory they would need (515 GB)
    # is refused before either body is read
    ((2**32 - 1, 4, 3), 5, 2**32 - 1, r"m: the IDX headers announce 4294967295 \+ 12 images "
                                      r"of 4x3 pixels, \d{12} bytes of memory to read as "
                                      r"features; \d+ are available"),
    ((3, 0, 3), 0, 40, r"the header says images of 0 x 3 pixels: none"),
])
def test_idx_headers_are_checked_before_the_body_is_read(tmp_path, dims, body, labels,
                                                         message):
    """Memory follows what the files hold, never what their headers claim: the four headers
    are read and their counts checked first, and a .gz is not inflated past the bytes its
    header announces."""
    import tracemalloc

    folder, _ = make_mnist(tmp_path / "m")
    for name, n, size in (("train-images-idx3-ubyte", dims, body),
                          ("train-labels-idx1-ubyte", (labels,), min(labels, 40))):
        path = pathlib.Path(folder) / name
        path.unlink()
        _idx_gz(str(path) + ".gz", n, size)
    tracemalloc.start()
    try:
        with pytest.raises(gn.DataError, match=message):
            load_data(DataSpec("mnist", data_dir=folder))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_a_plain_idx_file_too_long_is_refused_by_its_size(tmp_path):
    folder, _ = make_mnist(tmp_path / "m")
    path = pathlib.Path(folder) / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\0\0\0")
    with pytest.raises(gn.DataError, match=r"train-labels-idx1-ubyte: too long: the header says "
                                           r"40 \(40 bytes of data\), the file holds 43"):
        load_data(DataSpec("mnist", data_dir=folder))


# ---- spellings and headers that only Python's float() or a lenient reader would take --------


@pytest.mark.parametrize("cell", ["1_000", "\u0661\u0662", "\uff11\uff12"])
def test_a_csv_number_is_spelled_as_csv_readers_spell_it(tmp_path, cell):
    """Python's float() reads "1_000" and other scripts' digits; NumPy's loadtxt, pandas and
    spreadsheets read them as text, and so does gpunet: a feature cell is "not a number", a
    target column of such cells holds class names."""
    path = tmp_path / "f.csv"
    path.write_text(f"a,b\n{cell},2\n3,4\n", encoding="utf-8")
    with pytest.raises(gn.DataError, match=rf"f\.csv: line 2, column 'a': '{cell}' is not a "
                                           "number"):
        read_features(str(path))
    path.write_text("a,y\n" + "".join(f"{i},{cell if i % 2 else 'x'}\n" for i in range(20)),
                    encoding="utf-8")
    d = load_data(DataSpec(str(path), target="y"))
    assert sorted(d.classes.tolist()) == sorted([cell, "x"])


def test_a_one_column_csv_counts_an_empty_cell_as_missing_not_as_a_blank_line(tmp_path):
    """A quoted "" is the one cell, empty; a line of spaces (or nothing) is blank: skipped,
    as in any file."""
    path = tmp_path / "one.csv"
    path.write_text('a\n1\n""\n2\n  \n\t\n\n')
    with pytest.raises(gn.DataError, match=r"one\.csv: line 3, column 'a': missing value"):
        read_features(str(path))
    np.testing.assert_array_equal(read_features(str(path), fill_values=np.array([7.0])),
                                  [[1.0], [7.0], [2.0]])


def test_numbers_padded_with_no_break_spaces_read_alike_on_both_csv_paths(tmp_path):
    """Spreadsheet exports pad with U+00A0; NumPy's reader (every cell a number) and the
    row-by-row one (a missing value elsewhere in the file) both read the number."""
    path = tmp_path / "n.csv"
    path.write_text("a,b\n1.5\u00a0,2\n3,4\n", encoding="utf-8")
    np.testing.assert_array_equal(read_features(str(path)), [[1.5, 2.0], [3.0, 4.0]])
    path.write_text("a,b\n1.5\u00a0,2\n3,\n", encoding="utf-8")
    np.testing.assert_array_equal(read_features(str(path), fill_values=np.array([0.0, 9.0])),
                                  [[1.5, 2.0], [3.0, 9.0]])


def test_blank_lines_before_a_csv_header_are_skipped(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("\n  \na,b\n1,2\n3,4\n")
    np.testing.assert_array_equal(read_features(str(path)), [[1.0, 2.0], [3.0, 4.0]])


def _npy_claiming(path, shape, body=b"\0" * 8, header=None):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": shape})
    raw = buf.getvalue() if header is None else header
    path.write_bytes(raw + body)
    return str(path)


def test_npy_headers_that_claim_more_than_the_file_or_do_not_parse_are_one_line(tmp_path):
    """Refused from the header, before NumPy allocates what it announces (2.9 TiB here)."""
    import io
    import zipfile

    huge = _npy_claiming(tmp_path / "huge.npy", (10**11, 4))
    with pytest.raises(gn.DataError, match=r"huge\.npy: truncated: its header announces "
                                           r"\(100000000000, 4\) of float64 \(3200000000000 "
                                           r"bytes\), the file holds 8"):
        read_features(huge)
    broken = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + b"{'descr': '<f8', 'fortran_or" \
        + b" " * 89 + b"\n"
    bad = _npy_claiming(tmp_path / "bad.npy", (1,), header=broken)
    with pytest.raises(gn.DataError, match=r"bad\.npy: not a readable \.npy file \(its header"):
        read_features(bad)
    np.save(tmp_path / "y.npy", np.arange(4) % 2)
    with pytest.raises(gn.DataError, match=r"bad\.npy: not a readable \.npy file"):
        load_data(DataSpec(bad, target=str(tmp_path / "y.npy")))
    # the same inside an .npz archive
    for name, member in (("claims", _npy_claiming(tmp_path / "m.npy", (10**11, 4))),
                         ("broken", bad)):
        buf = io.BytesIO()
        np.save(buf, np.arange(4) % 2)
        with zipfile.ZipFile(tmp_path / f"{name}.npz", "w") as z:
            z.writestr("x.npy", pathlib.Path(member).read_bytes())
            z.writestr("y.npy", buf.getvalue())
    with pytest.raises(gn.DataError, match=r"claims\.npz: array 'x' is truncated: its header "
                                           r"announces 3200000000000 bytes of data, the member "
                                           r"holds 8"):
        load_data(DataSpec(str(tmp_path / "claims.npz")))
    with pytest.raises(gn.DataError, match=r"broken\.npz: array 'x' unreadable \(its header"):
        load_data(DataSpec(str(tmp_path / "broken.npz")))


def test_byte_class_names_that_are_not_utf8_name_their_row(tmp_path):
    y = np.array([b"a", b"b"] * 10)
    y[5] = b"\xff"
    with pytest.raises(gn.DataError, match=r"d\.npz: the class names are bytes, and "
                                           r"the one in row 5 \(b'\\xff'\) is not UTF-8 text"):
        load_data(DataSpec(_npz(tmp_path, x=X20, y=y)))


def _whole_file_verdict(content: bytes, rows: int) -> bool:
    """The fast CSV path's line check as first written, reading the whole file: the lines
    after the header are the rows, none blank (a last one after the final newline aside)."""
    lines = content.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()
    return len(lines) - 1 == rows and all(ln.strip() for ln in lines)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_the_fast_csv_paths_streamed_line_check_agrees_with_reading_it_whole(tmp_path,
                                                                          newline):
    """The fast path counts its lines as it streams them (it held the file twice over):
    every arrangement of final newlines and blank or space-only lines gets the verdict the
    whole-file check gave, and so the same array or the same slow path."""
    from gpunet.data import _all_numbers

    body = [b"1,2", b"3,4", b"5,6"]
    tails = [b"", newline, newline * 2, newline + b"  ", newline + b"  " + newline,
             b" " + newline]
    cases = []
    for tail in tails:
        cases.append(newline.join([b"a,b", *body]) + tail)
        cases.append(newline.join([b"a,b", body[0], b"", *body[1:]]) + tail)  # a blank row
        cases.append(newline.join([b"a,b", body[0], b"   ", *body[1:]]) + tail)
    for i, content in enumerate(cases):
        path = tmp_path / f"c{i}.csv"
        path.write_bytes(content)
        got = _all_numbers(str(path), 2)
        try:  # (what the line check is asked about: files loadtxt reads as the 3 rows)
            whole = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        except ValueError:
            whole = None
        want = whole is not None and whole.shape == (3, 2) and _whole_file_verdict(content, 3)
        assert (got is not None) == want, content
        if got is not None:
            np.testing.assert_array_equal(got, [[1, 2], [3, 4], [5, 6]])



@pytest.mark.parametrize("space", ["\u00a0", "\u2007", "\u3000"])
def test_a_number_padded_with_a_unicode_space_beside_text_labels_is_that_number(tmp_path,
                                                                                space):
    """The quick row check turns down a cell that is not ASCII; the row-by-row one then reads
    every cell as a number (the space stripped, as NumPy's reader strips it), and those are
    the row's (it raised AssertionError: train, evaluate and predict read it alike now)."""
    rows = [[f"{i % 7}.5", i % 3, "abc"[i % 3]] for i in range(30)]
    plain = write_csv(tmp_path / "plain.csv", ["a", "b", "y"], rows)
    rows[0][0] = f"{space}{rows[0][0]}"
    padded = write_csv(tmp_path / "padded.csv", ["a", "b", "y"], rows)
    for path in (plain, padded):
        load_data(DataSpec(path, target="y"))
    x, y = load_split(DataSpec(padded, target="y"), "all", None)[:2]
    np.testing.assert_array_equal(x, load_split(DataSpec(plain, target="y"), "all", None)[0])
    np.testing.assert_array_equal(x[:2], [[0.5, 0], [1.5, 1]])
    np.testing.assert_array_equal(y[:3], [0, 1, 2])
    np.testing.assert_array_equal(read_features(padded, ignore=["y"]), x)


# ---- files built to cost: wide headers, archives and IDX files that inflate -------------------


def test_a_wide_csv_header_is_read_in_linear_time(tmp_path):
    """100,000 columns matched by name to a model's (in the reverse order): each name is looked
    up once, not searched for among all the others (which took over a minute)."""
    import time

    names = [f"c{i}" for i in range(100_000)]
    path = write_csv(tmp_path / "w.csv", names, [range(100_000), range(1, 100_001)])
    encoding = [{"name": n} for n in reversed(names)]
    start = time.perf_counter()
    x = read_features(path, encoding=encoding)
    assert time.perf_counter() - start < 15  # (about 0.3 s; the quadratic header took 65)
    np.testing.assert_array_equal(x[:, :3], [[99_999, 99_998, 99_997], [100_000, 99_999,
                                                                          99_998]])


def test_a_wide_csv_of_other_columns_names_the_first_few_and_the_count(tmp_path):
    """The columns a model never had are listed up to ten, then counted: one short line."""
    names = [f"c{i}" for i in range(5000)]
    path = write_csv(tmp_path / "w.csv", ["a", *names], [range(5001)])
    with pytest.raises(gn.DataError) as e:
        read_features(path, encoding=[{"name": "a"}, {"name": "b"}])
    message = str(e.value)
    assert message.endswith("w.csv: the feature columns are not the model's (missing: 'b'; "
                            "unexpected: 'c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', "
                            "'c8', 'c9', ... (5000 in all))")


def _zeros_npz(path, n_bytes, y):
    """An .npz of y.npy and an x.npy of ``n_bytes`` zeros (uint8) deflated as zlib's best does
    (about 1030:1): one compressed 16 MiB, fully flushed so it holds no history, repeated, so
    that no GiB is compressed here; the zip written by hand around it."""
    import io
    import zlib

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False,
                                                "shape": (n_bytes,)})
    block = 16 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head.getvalue()) + c.flush(zlib.Z_FULL_FLUSH)
    repeated = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    x = b"".join([first, repeated * (n_bytes // block), c.compress(bytes(n_bytes % block)),
                  c.flush()])
    crc = zlib.crc32(head.getvalue())
    for _ in range(n_bytes // block):
        crc = zlib.crc32(bytes(block), crc)
    x_entry = (b"x.npy", 8, x, zlib.crc32(bytes(n_bytes % block), crc),
               len(head.getvalue()) + n_bytes)
    f = io.BytesIO()
    np.lib.format.write_array(f, np.asarray(y))
    raw = f.getvalue()
    local, central = b"", b""
    for name, method, data, crc, size in (x_entry, (b"y.npy", 0, raw, zlib.crc32(raw),
                                                    len(raw))):
        fields = struct.pack("<HHHHHIII", 20, 0, method, 0, 0x21, crc, len(data), size)
        central += (struct.pack("<IH", 0x02014B50, 20) + fields
                    + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, len(local)) + name)
        local += struct.pack("<I", 0x04034B50) + fields + struct.pack("<HH", len(name), 0) \
            + name + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 2, 2, len(central), len(local), 0)
    pathlib.Path(path).write_bytes(local + central + end)
    return str(path)


def test_an_npz_array_compressed_like_a_zip_bomb_is_refused_unread(tmp_path):
    """1.1 GB of zeros in a 1.1 MB file: refused from the archive's directory, before a byte
    is inflated (a 6 GB one took 11 GB of memory, then failed on its one class)."""
    import tracemalloc

    path = _zeros_npz(tmp_path / "b.npz", 1100 << 20, np.arange(4) % 2)
    with np.load(path) as z:  # (a well-formed archive: NumPy would read it)
        assert z["y"].tolist() == [0, 1, 0, 1]
    tracemalloc.start()
    try:
        with pytest.raises(gn.DataError, match=r"b\.npz: array 'x' \(\d{7} bytes compressed, "
                                               r"1153433728 inflated \(10\d\d:1\)\) is "
                                               r"compressed more than 1000:1 past 1 GiB"):
            load_data(DataSpec(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


_UNDER_A_MEMORY_LIMIT = """
import resource, sys
from gpunet.cli import main
with open("/proc/self/statm") as f:
    used = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (256 << 20), resource.RLIM_INFINITY))
sys.exit(main(["train", "--dataset", sys.argv[1], "--epochs", "1", "--quiet",
               "--backend", "numpy"]))
"""


@pytest.mark.skipif(not pathlib.Path("/proc/self/statm").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("make, message", [
    # 512 MiB of zeros, under 1 GiB (no bomb), past the 256 MiB the process has left
    (lambda p: _zeros_npz(p, 512 << 20, np.arange(4) % 2),
     r": array 'x' \(\d+ bytes compressed, 536871040 inflated \(\d+:1\)\) does not fit in the "
     r"\d+ bytes of memory available"),
    # 64 MiB of bytes, which fit, as float64 features (512 MiB), which do not
    (lambda p: np.savez(p, x=np.ones((1 << 20, 64), np.uint8), y=np.arange(1 << 20) % 2) or
     str(p), r": the dataset does not fit in memory \(Unable to allocate"),
])
def test_an_npz_dataset_too_large_for_memory_says_so_not_batch_size(tmp_path, make, message):
    """Under ``ulimit -v``: an array that would not fit is refused by its declared size; a
    MemoryError while reading is about the dataset (it said 'out of host memory ... try a
    smaller --batch-size', which would not help)."""
    import os
    import subprocess
    import sys

    path = make(tmp_path / "d.npz")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OPENBLAS_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", _UNDER_A_MEMORY_LIMIT, path], env=env,
                         capture_output=True, text=True, timeout=120)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 1, run.stderr
    assert err[-1].startswith(f"gpunet: error: {path}") and re.search(message, err[-1]), err
    assert "batch-size" not in run.stderr


def test_a_training_split_of_one_class_is_refused_and_missing_classes_said(tmp_path, caplog):
    """One positive row in 1000, fallen in the validation or test rows: the run trained a
    one-class model and reported a test accuracy of 1.0 (the estimators, and scikit-learn,
    refuse one class). Classes of the whole file absent from the training rows are said."""
    from conftest import said

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1000, 3)), np.zeros(1000, dtype=int)
    y[5] = 1
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    spec = dict(target=str(tmp_path / "y.npy"), val_fraction=0.1, test_fraction=0.2)
    outcomes = set()
    for seed in range(8):  # (the lone row lands in the training rows for some seeds)
        try:
            data = load_data(DataSpec(str(tmp_path / "x.npy"), seed=seed, **spec))
            assert set(np.unique(data.y_train)) == {0, 1}
            outcomes.add("trained")
        except gn.DataError as e:
            assert "the training rows hold one class only (0): the 1 row(s) of the other " \
                "class(es) fell in the held-out rows" in str(e)
            outcomes.add("refused")
    assert outcomes == {"trained", "refused"}
    y3 = rng.integers(0, 2, 1000)
    y3[7] = 2  # a third class of one row
    np.save(tmp_path / "y.npy", y3)
    for seed in range(8):
        caplog.clear()
        data = load_data(DataSpec(str(tmp_path / "x.npy"), seed=seed, **spec))
        if 2 not in data.y_train:
            assert "1 class(es) have no training rows" in said(caplog) and \
                "so the model cannot learn them: 2" in said(caplog)
            break
    else:
        raise AssertionError("the third class was in the training rows for every seed")
    # evaluate rebuilds the split of a run trained before: neither refused nor said again
    caplog.clear()
    from gpunet.data import load_split

    load_split(DataSpec(str(tmp_path / "x.npy"), seed=seed, **spec), "test", None)
    assert "training rows" not in said(caplog)
