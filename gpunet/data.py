"""Data sources, seeded train/val/test splits and standardisation.

A ``DataSpec`` says where the data comes from and how it is split; ``load_data(spec)`` turns it
into a ``Dataset`` of host NumPy arrays, and ``load_split(spec, split, standardizer)`` later
rebuilds exactly the rows of one split from the same spec (what ``gpunet evaluate`` does with the
spec and standardizer stored in a checkpoint).

Sources (``spec.dataset``):
    digits, iris, wine, breast_cancer, diabetes   scikit-learn's bundled sets (no download)
    moons, spirals, sine                          synthetic, from ``seed``, ``samples``, ``noise``
    mnist, fashion_mnist                          the four IDX files (plain or .gz) in ``data_dir``
    PATH.csv                                      header row; ``target`` names a column (numbers,
                                                  or class names), or lists several (numbers:
                                                  regression targets, or multilabel 0/1); text
                                                  feature columns are one-hot encoded
    PATH.npz                                      arrays ``x_key`` and ``y_key`` (default x, y)
    PATH.npy                                      the features; ``target`` is the targets' .npy

Every file is read without executing anything (``allow_pickle=False``; CSV and IDX are parsed
here). Anything unusable raises ``DataError`` (bad data) or ``ConfigError`` (bad option) with one
line naming the file, and the row and column where that applies. Sizes are checked before any
bytes are inflated: an .npz array that would not fit in the memory available, or that is
compressed like a zip bomb (over 1000:1 and past 1 GiB), is a DataError, as are IDX files
whose four headers disagree on their counts or announce more than fits (read before any
body), and a dataset that runs out of memory while it is read.
"""

from __future__ import annotations

import array
import collections
import contextlib
import csv
import dataclasses
import functools
import gzip
import itertools
import math
import numbers
import os
import shlex
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import ConfigError, DataError
from .log import notice

# name -> (sklearn loader name, task)
BUNDLED = {
    "digits": ("load_digits", "classification"),
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}
# name -> task
SYNTHETIC = {"moons": "classification", "spirals": "classification", "sine": "regression"}
IDX_SETS = ("mnist", "fashion_mnist")
DATASET_NAMES = (*BUNDLED, *SYNTHETIC, *IDX_SETS)
FILE_SUFFIXES = (".csv", ".npz", ".npy")
TASKS = ("classification", "regression")
SPLITS = ("train", "val", "test", "all")
#: loss name -> the task it implies
LOSS_TASK = {"cross_entropy": "classification", "bce": "classification",
             "bce_logits": "classification", "mse": "regression", "huber": "regression"}
#: the IDX files of mnist / fashion_mnist, (images, labels) for the training and the test split
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 0x00000803, 0x00000801
#: float targets of whole numbers from 0 to below this are inferred as labels (a model of at
#: most this many outputs); larger whole numbers (prices in hundreds, years) are values
MAX_INFERRED_CLASSES = 100
#: a label above this is taken for a mistake (an id column as target), not a class count
MAX_CLASSES = 100_000
#: a text feature column with more distinct values than this is taken for an identifier or
#: free text, not a category to one-hot encode
MAX_CATEGORIES = 100
#: an array of a dataset archive compressed more than this many times over, that would inflate
#: past ``MAX_INFLATED_BYTES``, is refused as a zip bomb (a real dataset compresses far less:
#: MNIST about 5:1, a sparse bag of words a few hundred to one; zlib's best is about 1030:1,
#: on a file of one byte repeated)
MAX_COMPRESSION_RATIO = 1000
MAX_INFLATED_BYTES = 1 << 30


@dataclass
class DataSpec:
    """Everything needed to rebuild the same splits later; stored in checkpoints as JSON.

    Args:
        dataset: a name in ``DATASET_NAMES`` or a path to a .csv, .npz or .npy file.
        target: CSV: the target column's name, or a list of two or more (numbers: several
            regression targets, or 0/1 labels of a multilabel task); .npy: the path of the
            targets' .npy file.
        x_key, y_key: the array names in a .npz archive.
        data_dir: the folder of the four IDX files (mnist, fashion_mnist).
        samples, noise: size and noise standard deviation of a synthetic set.
        task: "classification", "regression" or None (inferred; see ``load_data``).
        seed: seeds the split (and a synthetic set's draw); an int in [0, 2**32).
        val_fraction, test_fraction: shares of the rows held out, each in [0, 1), summing
            below 1. A source with its own test split (mnist) uses it instead of
            ``test_fraction`` and takes ``val_fraction`` of its training rows.
        standardize_targets: regression targets standardised with the training rows'
            statistics, as the features always are (a spec stored before this field existed
            reads as False: its run trained on the targets as given).
        drop_missing: a CSV's rows with a missing value (``MISSING_MARKERS``) are left out
            (counted in ``Dataset.rows_dropped``) instead of being an error; with
            ``fill_missing``, the rows whose target or weight is missing (nothing fills
            those).
        fill_missing: None, or "mean": a CSV's missing feature values (``MISSING_MARKERS``)
            are filled in, a number with its column's mean over the training rows
            (``Dataset.fill_values``, stored in checkpoints and used by evaluate and predict), a
            text category with none (an all-zero one-hot row); a missing target is still an
            error, unless ``drop_missing`` leaves its row out.
        weight_column: CSV: a column of sample weights (numbers >= 0), left out of the
            features; each row's loss counts that much (times its class weight, if any).
        ignore: CSV: names of columns that are not features (an identifier, free text, an
            empty column), left out; training needs the file to have them, evaluate and
            predict leave them out where theirs does.
        class_weight: None, or "balanced": classification rows weighted n / (k * n_c) by
            their class c, from the training rows' counts (n rows, k classes present), so that
            every class weighs the same in the loss (``Dataset.class_weights``; the rows'
            weights are ``w_train``, ``w_val`` and ``w_test``).
    """

    dataset: str
    target: str | list | None = None
    x_key: str = "x"
    y_key: str = "y"
    data_dir: str | None = None
    samples: int = 1000
    noise: float = 0.1
    task: str | None = None
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    standardize_targets: bool = True
    drop_missing: bool = False
    fill_missing: str | None = None
    weight_column: str | None = None
    class_weight: str | None = None
    ignore: list | None = None

    def __post_init__(self):
        # paths may come as pathlib.Path; JSON wants strings
        for name in ("dataset", "target", "data_dir"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))

    def to_json(self) -> dict:
        """The spec as a JSON-ready dict (what checkpoints store; ``ignore`` only where it
        names columns, so that a checkpoint without it reads in gpunet before it)."""
        d = dataclasses.asdict(self)
        if d["ignore"] is None:
            del d["ignore"]
        return d

    @classmethod
    def from_json(cls, d) -> "DataSpec":
        """The spec ``to_json`` wrote; ConfigError for anything else."""
        if not isinstance(d, dict):
            raise ConfigError(f"a data spec must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown data spec field(s): {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(names))}")
        if "dataset" not in d:
            raise ConfigError("the data spec names no dataset")
        return cls(**{"standardize_targets": False, **d})


#: the values of DataSpec.class_weight and DataSpec.fill_missing
CLASS_WEIGHTS = (None, "balanced")
FILL_MISSING = (None, "mean")

#: rows per block when the statistics are gathered (a few MiB: the block stays in cache)
STATS_BLOCK_ROWS = 1024


def _rows_of(x, rows):
    """(x as an array, rows as indices or None): a list of rows as an array, a boolean mask
    as the indices it selects."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if rows is not None:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
    return x, rows


@dataclass
class Standardizer:
    """x -> (x - mean) / std, with statistics from the training split (the std of a constant
    column becomes 1)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, rows=None, weights=None) -> "Standardizer":
        """The mean and (population) standard deviation of each column of ``x`` (samples,
        columns), over the rows ``rows`` (indices; None: all of them); with ``weights`` (one
        per row of x, >= 0) the weighted ones, as if row i were there w_i times.

        Two passes in float64, the mean first and then the squared deviations from it, over
        blocks of rows: no copy of the selected rows and no temporary of their size is made
        (on a 2-core machine the page faults of those copies cost more than the arithmetic).

        A constant column's std is its rounding error (1e-17 for a column of 0.1s), which would
        blow any other value of it up by 1e16: it is 1 instead, where the variance is within
        float64 rounding of zero (scikit-learn's StandardScaler's test, var <= n eps var +
        (n mean eps)^2, solved for std so that huge columns do not overflow), and its mean is
        its own first value, so that it standardises to exactly 0.
        """
        x, rows = _rows_of(x, rows)
        mean, std, _ = cls._moments(x, rows, weights)
        n = len(x) if rows is None else len(rows)  # (rounding grows with the rows summed,
        eps = np.finfo(np.float64).eps               # whatever their weights)
        constant = std * math.sqrt(max(1.0 - n * eps, 0.0)) <= np.abs(mean) * eps * n
        if np.any(constant):
            first = 0 if weights is None else int(np.argmax(
                np.asarray(weights)[rows if rows is not None else slice(None)] > 0))
            first = np.asarray(x[first if rows is None else rows[first]], dtype=np.float64)
            mean = np.where(constant, first, mean)
        return cls(mean, np.where((std > 0) & ~constant, std, 1.0))

    def moved(self, other: "Standardizer"):
        """The first column whose mean or std in ``other`` differs from this one's by more than
        1e-9 of its std plus |mean| (the same rows give the same figures to the rounding of
        their sums, which another machine's BLAS may order otherwise), or None."""
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        if mean.shape != np.shape(other.mean):
            return None  # (the columns are compared elsewhere)
        scale = 1e-9 * (std + np.abs(mean))
        off = (np.abs(np.asarray(other.mean) - mean) > scale) \
            | (np.abs(np.asarray(other.std) - std) > scale)
        return int(np.argmax(off)) if off.any() else None

    @classmethod
    def _moments(cls, x, rows, weights):
        """(mean, std, n: the row count or the weights' sum) of ``fit``, before its test for
        constant columns."""
        n = len(x) if rows is None else len(rows)
        if n == 0:
            raise DataError("no rows to fit the standardisation on")
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            weights = weights if rows is None else weights[rows]
            n = weights.sum()
            if not n > 0:
                raise DataError("the sample weights of the rows to standardise with are all zero")

        def blocks():
            for s in range(0, len(weights) if weights is not None else n, STATS_BLOCK_ROWS):
                sl = slice(s, s + STATS_BLOCK_ROWS)
                yield (np.asarray(x[sl] if rows is None else x[rows[sl]], dtype=np.float64),
                       None if weights is None else weights[sl])

        total = np.zeros(x.shape[1:])
        squares = np.zeros(x.shape[1:])
        with np.errstate(over="ignore", invalid="ignore"):  # (overflows are redone below)
            for b, w in blocks():
                total += b.sum(axis=0) if w is None else w @ b
            mean = total / n
            for b, w in blocks():
                b = b - mean
                squares += np.einsum("ij,ij->j", b, b) if w is None else \
                    np.einsum("i,ij,ij->j", w, b, b)
            std = np.sqrt(squares / n)
        bad = ~(np.isfinite(mean) & np.isfinite(std))
        # columns whose values are all under 2^-400 (1e-121): their squared deviations
        # underflow float64 (to subnormals, or 0 below 1e-162: such a column was "constant")
        tiny = (np.abs(mean) < 2.0 ** -400) & (std < 2.0 ** -400)
        if (bad | tiny).any() and x.ndim == 2:  # sums past float64's range, or squares under
            mean, std = mean.copy(), std.copy()  # it: again in scaled units
            cols = np.flatnonzero(bad | tiny)
            part = np.asarray(x[:, cols] if rows is None else x[rows][:, cols], np.float64)
            top = np.abs(part).max(axis=0)
            ok = np.isfinite(top) & (top > 0)  # (infinite values stay bad: said below; a
            if ok.any():                         # column of zeros is constant as it is)
                cols, part = cols[ok], part[:, ok]
                scale = 2.0 ** np.floor(np.log2(top[ok]))  # exact: powers of 2
                inner_mean, inner_std, _ = cls._moments(part / scale, None, weights)
                mean[cols], std[cols] = inner_mean * scale, inner_std * scale
                bad = ~(np.isfinite(mean) & np.isfinite(std))
        if bad.any():
            j = int(np.flatnonzero(np.ravel(bad))[0])
            raise DataError(f"column {j + 1}: its values are too far apart to standardise in "
                            f"float64 (the standard deviation overflows)")
        return mean, std, n

    def __call__(self, x: np.ndarray, rows=None, dtype=None) -> np.ndarray:
        """(x - mean) / std, of the rows ``rows`` (indices) of x if given: one new array, of
        ``dtype`` if given (else the arithmetic's, result_type(x, mean)). The arithmetic is
        done block by block in that dtype and each block cast into the result, so that no
        temporary of x's size is made: the same numbers as casting the whole result."""
        x, rows = _rows_of(x, rows)
        work = np.result_type(x, self.mean)
        n = len(x) if rows is None else len(rows)
        out = np.empty((n,) + tuple(np.shape(x)[1:]), dtype=dtype or work)
        for s in range(0, n, STATS_BLOCK_ROWS * 4):
            sl = slice(s, s + STATS_BLOCK_ROWS * 4)
            b = x[sl].astype(work) if rows is None else \
                np.asarray(x[rows[sl]], dtype=work)  # (a copy: a gather is one already)
            b -= self.mean
            b /= self.std
            with np.errstate(over="ignore"):  # (an overflowing cast: said below)
                out[sl] = b
            if out.dtype.itemsize < b.dtype.itemsize:  # (a value past the narrower dtype's
                from .model import check_narrowed      # range: the error as_inputs gives)
                check_narrowed(np, b, out[sl], "the features")
        return out

    def inverse(self, z):
        """z -> z * std + mean: standardised (host) values back in the original units."""
        return z * self.std + self.mean


@dataclass
class Dataset:
    """The train/val/test splits of one source, as host arrays, features standardised.

    ``y`` holds int64 labels for classification (where the source named its classes in text,
    ``classes`` holds the names, sorted, and label k means ``classes[k]``) and float targets
    shaped (n, outputs) for regression, standardised like the features when
    ``target_standardizer`` is set (regression loaded with ``standardize=True``): a model
    trained on them predicts standardised values, which ``target_standardizer.inverse`` turns
    back into the targets' units (``fit``'s MSE and R^2, ``gpunet evaluate`` and
    ``gpunet predict`` do). ``x_val``/``y_val`` have 0 rows when
    ``spec.val_fraction`` is 0 (and the test arrays when ``test_fraction`` is 0). ``spec`` has
    ``task`` filled in, so that ``load_split(dataset.spec, ...)`` finds the same task and rows
    without the loss.
    """

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int = 0
    standardizer: Standardizer | None = None
    spec: DataSpec | None = None
    target_standardizer: Standardizer | None = None
    classes: np.ndarray | None = None
    features: list | None = None
    rows_dropped: int = 0
    w_train: np.ndarray | None = None  # sample weights of the rows (None: all count once)
    w_val: np.ndarray | None = None
    w_test: np.ndarray | None = None
    class_weights: np.ndarray | None = None  # the weight of each class (spec.class_weight)
    fill_values: np.ndarray | None = None  # each feature's fill (spec.fill_missing)
    values_filled: int = 0

    @property
    def n_features(self) -> int:
        """Input columns (after one-hot encoding text columns)."""
        return self.x_train.shape[1]

    @property
    def n_outputs(self) -> int:
        """The outputs a model of this data has: one per class (or label), or per target."""
        return self.n_classes if self.task == "classification" else self.y_train.shape[1]

    @property
    def multilabel(self) -> bool:
        """Classification with several labels a row: ``y`` (n, labels) of 0/1, one column per
        label, each a binary decision (``n_classes`` is the number of labels)."""
        return self.task == "classification" and np.ndim(self.y_train) == 2

    @property
    def split(self) -> dict:
        """How the split was made (seed and fractions); kept for checkpoints of earlier runs."""
        if self.spec is None:
            return None
        return {"seed": self.spec.seed, "val_fraction": self.spec.val_fraction,
                "test_fraction": self.spec.test_fraction}


@dataclass
class _Source:
    """Every row of one source, as read: before the task is settled and the rows are split."""

    x: np.ndarray                      # (n, features) float64, finite
    y: np.ndarray                      # (n,) or (n, k), a numeric dtype
    where: str                         # names the source in messages: a path or "dataset 'iris'"
    task: str | None = None            # the task a named source is known to have
    n_own_test: int | None = None      # the last rows are the source's own test split
    row: Callable[[int], str] = lambda i: f"row {i}"   # names target i in messages
    features: list | None = None       # a CSV's feature columns, by name (_read_csv)
    dropped: int = 0                   # rows left out for a missing value (spec.drop_missing)
    w: np.ndarray | None = None        # sample weights of the rows (spec.weight_column)


# ---- the public entry points ------------------------------------------------------------------

def _in_memory(read):
    """``read`` (of a spec or a path first), a MemoryError while it reads turned into a one-line
    DataError: the dataset does not fit (a smaller batch, which the CLI's advice for running
    out of memory in training suggests, would not make it fit)."""
    @functools.wraps(read)
    def reading(source, *args, **kwargs):
        try:
            return read(source, *args, **kwargs)
        except MemoryError as e:
            where = source.dataset if isinstance(source, DataSpec) else source
            raise DataError(f"{where}: the dataset does not fit in memory "
                            f"({_one_line(e)})") from None
    return reading


@_in_memory
def load_data(spec: DataSpec, loss: str | None = None, dtype=None) -> Dataset:
    """Read ``spec``'s source, settle the task, split it and standardise the features.

    The task is ``spec.task`` if given; else the one ``loss`` implies (cross_entropy, bce,
    bce_logits: classification; mse, huber: regression); else a named source's own (bundled and
    synthetic sets, mnist); else it is read off the targets: an integer dtype, or float values
    that are all whole numbers from 0 to 99, mean classification, anything else (or more than
    one target column) regression.

    Classification labels are used as given, not remapped: integers >= 0, ``n_classes`` =
    max + 1, at least two distinct classes. The split is seeded by ``spec.seed``: first the test
    rows (ceil(test_fraction * n)), then the validation rows (ceil(val_fraction * n)) from the
    rest, each stratified by class where scikit-learn can (unstratified when a class is too
    small). The standardizers (features; regression targets) are fitted on the training rows
    only. ``dtype``: the features', as ``make_dataset``'s.
    """
    spec, src, y, n_classes, idx, names = _prepare(spec, loss)
    _check_training_classes(y, spec.task, idx["train"], src, names)
    fills, filled = None, 0
    if spec.fill_missing:
        fills = _column_means(src.x, idx["train"], src)
        src.x, filled = fill_in(src.x, fills, src.where)
    weights = src.w
    if weights is not None and len(weights) and np.all(weights == weights[0]):
        weights = None  # (equal weights weigh nothing: the unweighted run, to the bit, as the
        # estimators take them; weighted sums round otherwise)
    per_class = None
    if spec.class_weight is not None:
        if spec.task != "classification":
            raise ConfigError(f"class weights apply to classification; {spec.dataset!r} is a "
                              f"{spec.task} task here")
        if y.ndim == 2:
            raise ConfigError(f"class weights weigh each row by its one class; {spec.dataset!r} "
                              f"has multilabel targets ({y.shape[1]} labels a row)")
        per_class = balanced_class_weights(y[idx["train"]], n_classes)
        weights = per_class[y] if weights is None else per_class[y] * weights
    data = _split(spec, src.x, y, n_classes, idx, standardize=True, classes=names,
                  weights=weights, dtype=dtype)
    data.features, data.rows_dropped = src.features, src.dropped
    data.class_weights = per_class
    data.fill_values, data.values_filled = fills, filled
    return data


def _column_means(x, rows, src) -> np.ndarray:
    """Each column's mean over the rows ``rows`` of x, its missing values (NaN) left out;
    DataError for a column with no value there."""
    part = np.asarray(x[rows], dtype=np.float64)
    counts = (~np.isnan(part)).sum(axis=0)
    if (counts == 0).any():
        j = int(np.argmax(counts == 0))
        raise DataError(f"{src.where}: {_feature_name(src, j)} has no value in the training "
                        "rows to fill its missing ones with"
                        + (" (--ignore it, if it is empty)" if src.features else ""))
    return np.nansum(part, axis=0) / counts


def _feature_name(src, j) -> str:
    """A name for encoded feature column j of a source: its CSV column where known."""
    if src.features:
        k = 0
        for e in src.features:
            width = len(e.get("categories", ())) or 1
            if j < k + width:
                return f"column {e['name']!r}"
            k += width
    return f"feature column {j + 1}"


def fill_in(x, fill_values, where="the features"):
    """(x with each missing value (NaN) replaced by its column's fill value, how many were);
    DataError when the fill values do not match x's columns."""
    fill_values = np.asarray(fill_values, dtype=np.float64)
    if fill_values.shape != (x.shape[1],):
        raise DataError(f"{where}: {x.shape[1]} feature columns, but the stored fill values are "
                        f"for {fill_values.size}")
    gaps = np.isnan(x)
    n = int(gaps.sum())
    if n:
        x = np.where(gaps, fill_values, x)
    return x, n


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's weight n / (k * n_c) over ``labels`` (n labels of k distinct classes, n_c
    of class c; scikit-learn's "balanced"), as float64 (n_classes,): 1 for a class absent
    from ``labels``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    present = counts > 0  # (scikit-learn's compute_class_weight, bit for bit, without its
    weights = np.ones(n_classes)  # import: 0.6 s of a run)
    weights[present] = len(labels) / (int(present.sum()) * counts[present].astype(np.float64))
    return weights


@_in_memory
def load_split(spec: DataSpec, split: str, standardizer: Standardizer | None,
               target_standardizer: Standardizer | None = None, classes=None, features=None,
               fill_values=None, with_weights=False, numbered=0, run_rows=None,
               run_checksums=None):
    """The rows ``load_data(spec)`` put in ``split``, in the same order, standardised with the
    given (stored) ``standardizer`` (None: raw features) and regression targets with
    ``target_standardizer`` (None: as given). Class names in the source (text labels) become
    their index in ``classes`` (the stored names of the model's outputs; a name not among them
    is a DataError), or in the source's own sorted names when ``classes`` is None (with
    ``numbered``, the number of a model's classes that are numbers, labels 0..numbered - 1, text
    labels and labels past them are a DataError naming the row). A CSV's text
    feature columns are encoded by ``features`` (the stored description), else as found. With
    ``spec.fill_missing``, missing values are filled with ``fill_values`` (the stored ones; None:
    the training rows' means, as ``load_data`` computed them).

    ``split`` is "train", "val", "test" or "all" (every row of the source in file order; for
    mnist the training files' rows, then the t10k rows). Pass the spec of the ``Dataset``
    (``dataset.spec``), whose task is filled in: the task decides the stratification.

    ``run_rows``: the sizes of the run's train, val and test splits (a checkpoint's); a split
    of a source that is not the run's (other sizes, or, where its rows were standardised
    without weights or filled values, training rows whose statistics are not the
    ``standardizer``'s) is a DataError, not another source's rows taken for the run's; with
    ``run_checksums`` (a checkpoint's ``training.checksums``), so is a split whose features or
    targets are not the run's (``rows_checksum``: changed values, other rows, another order).

    Returns:
        (x, y, task, n_classes); n_classes is 0 for regression. ``with_weights``: a fifth
        item, the rows' sample weights from ``spec.weight_column`` (None without one).
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid names: {', '.join(SPLITS)}")
    spec, src, y, n_classes, idx, _ = _prepare(spec, None, classes, features,
                                               evaluate=split, numbered=numbered,
                                               fills_given=fill_values is not None)
    rows = np.arange(len(y)) if split == "all" else idx[split]
    if run_rows is not None and split != "all":
        _check_run_rows(spec, src, idx, run_rows, standardizer)
    # the rows' standardised copy straight from the source (one copy, not the rows and then
    # their standardised copy); with fill values, the rows first (fill_in makes a new array)
    base, sel = src.x, (None if split == "all" else rows)
    if spec.fill_missing:
        base = fill_in(src.x[rows], _column_means(src.x, idx["train"], src)
                       if fill_values is None else fill_values, src.where)[0]
        sel = None
    if standardizer is not None:
        width = np.size(standardizer.mean)
        if width != base.shape[1]:
            raise DataError(f"{src.where}: {base.shape[1]} features, but the stored "
                            f"standardizer was fitted on {width}")
        x = standardizer(base, sel)
    else:
        x = np.asarray(base if sel is None else base[sel], dtype=np.float64)
    y = y[rows]
    if target_standardizer is not None and spec.task == "regression":
        width = np.size(target_standardizer.mean)
        cols = 1 if y.ndim == 1 else y.shape[1]  # (reshape(len(y), -1) fails on no rows)
        if cols != width:
            raise DataError(f"{src.where}: {cols} target column(s), "
                            f"but the model predicts {width}")
        y = target_standardizer(y)
    if run_checksums is not None and split != "all":
        _check_run_checksums(spec, split, x, y, run_checksums)
    if with_weights:
        return x, y, spec.task, n_classes, None if src.w is None else src.w[rows]
    return x, y, spec.task, n_classes


def rows_checksum(a, rows=None, chunk=4096) -> float:
    """sum_ij (i + 1) c_j |a_ij + s / 2| over at most ``rows`` rows of ``a``, evenly strided
    (None: all; 0 for no array): row i weighted by i + 1 and column j by c_j in [1, 2),
    distinct for each column (another order of the rows or of the columns: another sum), each
    cell shifted by half the largest |a| (a column of the values' negatives: another sum, where
    |a| alone was the same). Every term is >= 0, so that no cancellation leaves rounding to
    compare across hosts: the same data give the same sum to about 1e-15 relative, where they
    were standardised with statistics a few ulps apart. Each value counts rounded to float32
    (where float32 holds it): the same data loaded in float64 (a run started in Python) and in
    a float32 model's dtype (its resume on the command line) give the same sum. ``chunk`` rows
    at a time in float64 (a device array's copied over a chunk at a time)."""
    if a is None or not len(a):
        return 0.0
    from .backends import backend_of

    to_host = backend_of(a).to_host
    a = a[::-(-len(a) // (rows or len(a)))]
    shift = max(abs(_as_float32(float(to_host(a.max())))),
                abs(_as_float32(float(to_host(a.min()))))) / 2  # (no temporary of a's size)
    column = None
    total = 0.0
    for lo in range(0, len(a), chunk):
        part = np.array(to_host(a[lo:lo + chunk]), dtype=np.float64).reshape(
            min(chunk, len(a) - lo), -1)  # (a copy of its own, worked on in place)
        if a.dtype.itemsize > 4 or a.dtype.kind not in "fiub":  # (float32 and less: exact)
            with np.errstate(over="ignore"):
                rounded = part.astype(np.float32)
            np.copyto(part, rounded, where=np.isfinite(rounded))
        if column is None:
            column = 1.0 + (np.arange(part.shape[1]) * 0.6180339887498949) % 1.0  # (golden)
        part += shift
        np.abs(part, out=part)
        total += float(part @ column @ np.arange(lo + 1, lo + len(part) + 1, dtype=np.float64))
    return total


def _as_float32(v: float) -> float:
    """``v`` rounded to float32, where float32 holds it (else ``v``)."""
    with np.errstate(over="ignore"):
        r = float(np.float32(v))
    return r if math.isfinite(r) or not math.isfinite(v) else v


#: how messages name a split
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}
#: the relative difference two checksums of the same data may reach, at most (rounding)
CHECKSUM_RTOL = 1e-9


def checksums_differ(saved, now) -> bool:
    """Whether a recorded ``rows_checksum`` (a number; anything else: not recorded) is not
    ``now``'s, beyond rounding."""
    return isinstance(saved, (int, float)) and not isinstance(saved, bool) and \
        not abs(saved - now) <= CHECKSUM_RTOL * max(abs(saved), abs(now))


def _check_run_checksums(spec, split, x, y, saved) -> None:
    """DataError where the ``split`` rows' features ``x`` or targets ``y`` are not those the
    run recorded checksums of (``saved``, name -> checksum; see ``load_split``)."""
    if not isinstance(saved, dict):
        return
    for key, a, what in ((f"x_{split}", x, "features"), (f"y_{split}", y, "targets")):
        if checksums_differ(saved.get(key), rows_checksum(a)):
            raise DataError(f"the run's {SPLIT_NAMES[split]} rows are not these: their {what} "
                            f"differ (another file, changed rows, or rows in another order): "
                            f"{spec.dataset!r} (a relative path is read from the folder the "
                            "command runs in) is not the file the run split: --split all "
                            "scores every row of it")


def _check_run_rows(spec, src, idx, run_rows, standardizer) -> None:
    """DataError where the source's splits are not the run's (see ``load_split``)."""
    now = [len(idx["train"]), len(idx["val"]), len(idx["test"])]
    advice = (f"{spec.dataset!r} (a relative path is read from the folder the command runs "
              "in) is not the file the run split: --split all scores every row of it")
    if list(run_rows) != now:
        raise DataError(f"the run trained on {run_rows[0]} rows, validated on {run_rows[1]} "
                        f"and tested on {run_rows[2]}; these data split into {now[0]}, "
                        f"{now[1]} and {now[2]}: {advice}")
    if standardizer is None or spec.fill_missing or src.w is not None or spec.class_weight:
        return  # (the statistics were taken otherwise; the sizes must do)
    j = standardizer.moved(Standardizer.fit(src.x, idx["train"]))
    if j is not None:
        raise DataError(f"the run's training rows are not these: its {_feature_name(src, j)} "
                        f"had mean {float(standardizer.mean[j]):.6g}, these rows' "
                        f"{float(np.mean(src.x[idx['train'], j])):.6g}: {advice}")


@_in_memory
def read_features(path, encoding=None, fill_values=None, ignore=(),
                  keep_float32=False, unseen_none=False, x_key="x") -> np.ndarray:
    """Features to predict on: a CSV file (header row, every column a numeric feature; with the
    ``encoding`` of a model trained on text columns, its feature columns by name, encoded as
    training encoded them) or a .npy file of numbers (or an .npz archive's array ``x_key``),
    shaped as training takes them (samples, features), or (samples,) for one feature, or
    (samples, ...) flattened; float64 (samples, features). ``fill_values`` (a model trained
    with fill_missing): a CSV's missing values are filled with them (a missing category: none)
    instead of being an error. ``ignore``: names
    of CSV columns that are not features (the training file's target and weights), left out
    where the file has them. ``unseen_none``: a CSV cell of a category the model never saw is
    no category (a row of zeros in its one-hot block, as a missing one), with a notice,
    instead of a DataError."""
    path = os.fspath(path)
    kind = path.lower().rsplit(".", 1)[-1] if "." in os.path.basename(path) else ""
    if kind == "csv":
        fill = fill_values is not None
        x = _read_csv(path, target=None, features_only=True, encoding=encoding,
                      fill_missing=fill, ignore=ignore, unseen_none=unseen_none)[0]
        return fill_in(x, fill_values, path)[0] if fill else x
    if kind in ("npy", "npz"):
        where = path if kind == "npy" else f"{path}: array {x_key!r}"
        x = _numeric(_load_npy(path) if kind == "npy" else _npz_arrays(path, (x_key,))[x_key],
                     where, "the features")
        x = _finite(_as_features(x, where), where, "feature")  # (no rows: refused, as a CSV's)
        return x if keep_float32 else np.asarray(x, dtype=np.float64)  # (``keep_float32``:
        # float32 values as they are, which standardise to the same numbers)
    raise ConfigError(f"{path}: unsupported input file; expected a .csv, .npz or .npy file")


#: rows ``feature_blocks`` reads at a time (predict reads, standardises, predicts and writes
#: each block before the next): a multiple of the 4096 rows a prediction batch takes, so that
#: the batches, and so the outputs, are those of the whole file's
FEATURE_BLOCK_ROWS = 65536


def feature_blocks(path, encoding=None, fill_values=None, ignore=(), keep_float32=False,
                   unseen_none=False, x_key="x", keep=()):
    """``read_features``' features a block of rows at a time (``FEATURE_BLOCK_ROWS``, or
    fewer), as (x, kept) pairs: x the block's features, the numbers ``read_features`` gives
    for those rows; kept the cells of the CSV columns ``keep`` (``read_columns``' tuples, for
    ``gpunet predict --keep``), or None. Memory is a block's, not the file's: a CSV is read
    a block of lines at a time, a .npy file is mapped (an .npz archive's array is read
    whole, as it is compressed). Errors name the file and line as ``read_features``' do,
    when the block holding them is read; the notice of cells of unseen categories
    (``unseen_none``) is said once, for the whole file, after its last block."""
    path = os.fspath(path)
    kind = path.lower().rsplit(".", 1)[-1] if "." in os.path.basename(path) else ""
    if kind == "csv":
        yield from _csv_blocks(path, encoding, fill_values, ignore, unseen_none, keep)
        return
    if kind not in ("npy", "npz"):
        raise ConfigError(f"{path}: unsupported input file; expected a .csv, .npz or .npy file")
    where = path if kind == "npy" else f"{path}: array {x_key!r}"
    x = _numeric(_load_npy(path, mmap=True) if kind == "npy" else
                 _npz_arrays(path, (x_key,))[x_key], where, "the features")
    # a mapped file in C order is read a block at a time (the pages of a mapping read through
    # stay resident: 305 MiB of them for 2M rows of 20 float64s)
    offset = getattr(x, "offset", None) if isinstance(x, np.memmap) and x.flags.c_contiguous \
        else None
    x = _as_features(x, where, cast=False)
    with open(path, "rb") if offset is not None else contextlib.nullcontext() as f:
        for lo in range(0, len(x), FEATURE_BLOCK_ROWS):
            b = x[lo:lo + FEATURE_BLOCK_ROWS]
            if f is not None:  # (the same numbers as the mapping's)
                f.seek(offset + lo * x.shape[1] * x.dtype.itemsize)
                b = np.fromfile(f, dtype=x.dtype, count=b.size).reshape(b.shape)
            b = np.ascontiguousarray(b, dtype=b.dtype if b.dtype in (np.float32, np.float64)
                                     and keep_float32 else np.float64)
            yield _finite(b, where, "feature", first_row=lo), None


def _csv_blocks(path, encoding, fill_values, ignore, unseen_none, keep):
    """``feature_blocks`` of a CSV file: each block of lines read by NumPy's C parser where
    every cell is a finite number (as ``_read_csv`` reads a whole file), else row by row."""
    _check_file(path, "a CSV file with a header row")
    categorical = encoding is not None and any("categories" in e for e in encoding)
    fill = fill_values is not None
    with _csv_errors(path), open(path, newline="", encoding="utf-8-sig") as f:
        reader = _reader(f)
        header, _, names = _csv_header(reader, path, None, True, None, ignore)
        absent = [n for n in keep if n not in header]
        if absent:  # (read_columns' words)
            raise DataError(f"{path}: no column {absent[0]!r}{_did_you_mean(absent[0], header)}"
                            f"; columns: {_some(header, last=True)}")
        keep_at = [header.index(n) for n in keep] if keep else None
        skip = _skipped(header, ignore)
        order = None if encoding is None or categorical else \
            _column_order(names, encoding, path)
        if categorical:
            _column_order(names, encoding, path)  # (its errors, before any row's)

        def by_name(x):
            return x if order is None or order == list(range(len(names))) else x[:, order]

        line, rows, unseen = reader.line_num, 0, {}  # (the last line read)
        while True:
            block = list(itertools.islice(f, FEATURE_BLOCK_ROWS))
            if not block:
                break
            x = None if categorical or '"' in "".join(block) else \
                _block_numbers(block, len(header), skip)
            if x is not None:  # (no quote, no blank line: a line a row)
                x = by_name(np.delete(x, skip, axis=1) if skip else x)
                kept = None if keep_at is None else \
                    [tuple(r[j] for j in keep_at) for r in csv.reader(block)]
                line += len(block)
            else:  # (a quoted cell may run on past the block: its lines are read on)
                data_rows = _DataRows(_reader(itertools.chain(block, f)), header, None, path,
                                      False, None, skip, fill, offset=line, limit=len(block),
                                      keep=keep_at)
                if categorical:
                    got = _columns(path, data_rows, header, None, names, True, encoding, None,
                                   fill, None, unseen_none, unseen)
                    x = None if got is None else got[0]
                else:
                    values = array.array("d")
                    for at, row, _ in data_rows:
                        values.extend(_parse_row(row, names, path, at, fill=fill))
                    x = by_name(np.frombuffer(values, dtype=np.float64).reshape(-1, len(names)))
                kept = data_rows.kept_cells if keep_at is not None else None
                line += data_rows.reader.line_num
            if x is None or not len(x):
                continue  # (blank lines only)
            if fill:
                x = fill_in(x, fill_values, path)[0]
            rows += len(x)
            yield x, kept
    if not rows:
        raise DataError(f"{path}: a header but no data rows")
    if unseen:  # (each column's, in the model's order)
        for j in sorted(unseen, key=_column_order(names, encoding, path).index):
            notice(unseen_notice(path, names[j], *unseen[j]))


def _block_numbers(lines, width, skip):
    """``_all_numbers`` of a block of a CSV's lines (none holding a quote): a float64 (lines,
    width) array when every cell is a finite number and no line is blank; else None."""
    import warnings

    if not all(map(str.strip, lines)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*input contained no data", UserWarning)
            data = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2, quotechar='"',
                              comments=None, converters=dict.fromkeys(skip, _zero) or None)
    except ValueError:  # text, a missing value, a short row...: the row-by-row path says which
        return None
    if data.shape != (len(lines), width) or not np.isfinite(data).all():
        return None
    return data


def read_columns(path, names) -> list:
    """The cells of the columns ``names`` of a CSV file as given, a tuple per data row: the
    rows ``read_features`` reads (blank lines skipped alike), for ``gpunet predict --keep``;
    DataError naming a column the file lacks."""
    path = os.fspath(path)
    _check_file(path, "a CSV file with a header row")
    with _csv_errors(path), open(path, newline="", encoding="utf-8-sig") as f:
        reader = _reader(f)
        header = _csv_header(reader, path, None, True)[0]
        absent = [n for n in names if n not in header]
        if absent:
            raise DataError(f"{path}: no column {absent[0]!r}{_did_you_mean(absent[0], header)}; "
                            f"columns: {_some(header, last=True)}")
        rows = _DataRows(reader, header, [header.index(n) for n in names], path, False)
        return [cells for _, _, cells in rows]


def check_header_row(path) -> None:
    """DataError where a CSV read for a model trained on arrays (which takes its columns by
    position, not by name) has a first line of numbers: a file written without a header row
    (``np.savetxt`` writes none), whose first row would be taken for one and lost. The names
    pandas gives a DataFrame's columns by default, 0 to k-1 (``to_csv``'s header), are names."""
    path = os.fspath(path)
    _check_file(path, "a CSV file with a header row")
    with _csv_errors(path), open(path, newline="", encoding="utf-8-sig") as f:
        header = next((row for row in _reader(f) if any(c.strip() for c in row)), None)
    if not header or not all(map(_is_number, header)):
        return
    header = [c.strip() for c in header]
    if header != [str(j) for j in range(len(header))]:
        raise DataError(f"{path}: its first line ({_some(header)}) is numbers, not a header "
                        "row of column names; a file without one (np.savetxt writes none) "
                        "would lose that row: add a header (np.savetxt(..., header=','.join("
                        "names), comments='')); any names do, as a model trained on arrays "
                        "takes the columns by position (a header of numbers, such as years, "
                        "cannot be told from data: give its columns names that are not "
                        "numbers, y2019 for 2019)")


def source_kind(dataset: str) -> str:
    """"bundled", "synthetic", "idx", "csv", "npz" or "npy" for a ``spec.dataset`` value;
    ConfigError (listing the valid names) for anything else."""
    if not isinstance(dataset, str) or not dataset:
        raise ConfigError(f"dataset must be a name or a file path, got {dataset!r}")
    if dataset in BUNDLED:
        return "bundled"
    if dataset in SYNTHETIC:
        return "synthetic"
    if dataset in IDX_SETS:
        return "idx"
    for suffix in FILE_SUFFIXES:
        if dataset.lower().endswith(suffix):
            return suffix[1:]
    if os.path.exists(dataset) or os.sep in dataset or "." in os.path.basename(dataset):
        raise ConfigError(f"{dataset}: unsupported file type; expected a .csv, .npz or .npy file")
    raise ConfigError(f"unknown dataset {dataset!r}; valid names: {', '.join(DATASET_NAMES)}, "
                      f"or a path to a .csv, .npz or .npy file")


def load_dataset(name: str, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """``load_data`` on a train/test split (no validation rows): the form earlier callers use."""
    return load_data(DataSpec(name, seed=seed, val_fraction=0.0, test_fraction=test_fraction))


def make_dataset(name, x, y, task=None, seed=0, test_fraction=0.2, standardize=True,
                 val_fraction=0.0, standardizers=None, sample_weight=None,
                 dtype=None) -> Dataset:
    """Split in-memory arrays (x, y) as ``load_data`` splits a file; ``task`` None infers it
    (``y`` of text: class names, as ``data.classes``, the labels their indices).
    ``standardize=False`` leaves the features and targets as given (``standardizer`` and
    ``target_standardizer`` are then None). ``standardizers``: a pair (features, targets) of
    fitted Standardizers (either may be None: as given) to apply instead of statistics of
    these training rows, as a model already trained on other rows needs. ``sample_weight``:
    a weight >= 0 per row, split with the rows (``w_train``, ``w_val``, ``w_test``), which
    ``fit`` weights each row's loss by and the standardisation its statistics. ``dtype``: the
    splits' features in it (None: float64); the model's float32 saves fit a cast copy of the
    training rows, with the same numbers (the standardisation is computed in float64 either
    way and rounded once)."""
    spec = DataSpec(str(name), task=task, seed=seed, val_fraction=val_fraction,
                    test_fraction=test_fraction)
    _check_spec(spec, loss=None, kind=None)
    where = f"dataset {name!r}"
    x = _finite(_as_features(_numeric(np.asarray(x), where, "features"), where), where, "feature")
    y = np.asarray(y)
    if y.dtype.kind == "O" and y.size and all(isinstance(v, str) for v in y.ravel()):
        y = y.astype(str)  # (text labels from a list or a pandas column: class names)
    y = _targets(y, where)
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} feature rows but {len(y)} targets")
    if sample_weight is not None:
        sample_weight = check_sample_weight(sample_weight, len(x), where)
    spec, src, y, n_classes, idx, names = _settle(spec, None, _Source(x, y, where))
    return _split(spec, x, y, n_classes, idx, standardize, name=str(name), classes=names,
                  standardizers=standardizers, weights=sample_weight, dtype=dtype)


def check_sample_weight(w, n: int, where: str = "sample weights") -> np.ndarray:
    """``w`` as float64 (n,): finite, >= 0, not all 0; DataError naming the first bad row.
    One number weights every row alike (as scikit-learn's ``sample_weight=2.0``); an object
    array of real numbers (a pandas Series of dtype object) is taken as its numbers."""
    w = np.asarray(w)
    if w.dtype.kind == "O" and all(isinstance(v, numbers.Real) for v in w.ravel()):
        w = w.astype(np.float64)
    if w.dtype.kind not in "biuf":
        raise DataError(f"{where}: sample weights must be numbers, got dtype {w.dtype}")
    if w.ndim == 0:
        w = np.full(n, w)
    if w.shape != (n,):
        raise DataError(f"{where}: sample weights shaped {w.shape} for {n} rows; expected "
                        f"({n},)")
    w = w.astype(np.float64)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{where}: sample weights must be finite and >= 0, but row {i} holds "
                        f"{w[i]:g}")
    if n and not w.any():
        raise DataError(f"{where}: every sample weight is zero")
    return w


def _split(spec, x, y, n_classes, idx, standardize, name=None, classes=None,
           standardizers=None, weights=None, dtype=None) -> Dataset:
    """The Dataset of rows ``idx``; with ``standardize``, features and (regression) targets
    standardised with statistics of the training rows (or with ``standardizers``, given);
    ``weights`` (one per row, or None) weight those statistics and are split along;
    ``dtype``: the features' (None: float64)."""
    if dtype is not None:
        from .model import check_dtype

        dtype = check_dtype(dtype)
    def fitted(a):
        return Standardizer.fit(a, idx["train"], weights) if standardize else None

    if weights is not None and not weights[idx["train"]].sum() > 0:
        raise DataError(f"dataset {name or spec.dataset!r}: the sample weights of the training "
                        "rows are all zero")

    if standardizers is not None:
        std, target = standardizers
        if target is not None and spec.task != "regression":
            raise ConfigError("a target standardisation applies to regression targets only")
    else:
        std = fitted(x)
        target = fitted(y) if spec.task == "regression" and spec.standardize_targets else None
    parts = {k: (np.asarray(x[i], dtype=dtype or np.float64) if std is None
                 else std(x, i, dtype=dtype), y[i] if target is None else target(y, i))
             for k, i in idx.items()}
    w = {k: None if weights is None else weights[i] for k, i in idx.items()}
    return Dataset(name or spec.dataset, spec.task, *parts["train"], *parts["val"],
                   *parts["test"], n_classes, std, spec, target, classes,
                   w_train=w["train"], w_val=w["val"], w_test=w["test"])


def check_labels(y: np.ndarray, where: str = "labels", row=lambda i: f"row {i}",
                 min_classes: int = 2, names=None):
    """Integer class labels >= 0 as int64 (not remapped), and n_classes = max + 1; DataError for
    anything else, naming the first offending row, and for fewer than ``min_classes`` distinct
    labels (training needs two; rows to evaluate a model on may hold one). ``names``: the
    class names that text labels became these indices of, to name a lone class by."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: class labels must be one column, got targets shaped {y.shape}")
    if y.dtype.kind == "f":
        bad = ~(np.isfinite(y) & (y == np.round(y)))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where}: class labels must be integers, but {row(i)} holds "
                            f"{y[i]:g} (for numeric targets use the regression task or mse loss)")
    elif y.dtype.kind not in "biu":
        raise DataError(f"{where}: class labels must be integers, got dtype {y.dtype}")
    if y.size == 0:
        raise DataError(f"{where}: no class labels")
    if y.min() < 0:
        i = int(np.argmax(y < 0))
        raise DataError(f"{where}: class labels must be >= 0, but {row(i)} holds {y[i]:g} "
                        f"(labels such as -1 and 1: map them to 0..k-1, or write them as text "
                        f"class names; for numeric targets use the regression task or mse "
                        f"loss)")
    if y.max() >= MAX_CLASSES:
        i = int(np.argmax(y >= MAX_CLASSES))
        raise DataError(f"{where}: class labels must lie in 0..{MAX_CLASSES - 1}, but {row(i)} "
                        f"holds {y[i]:g} (for numeric targets use the regression task or mse "
                        f"loss)")
    y = y.astype(np.int64)
    classes = np.unique(y)
    if len(classes) < min_classes:
        label = repr(str(names[classes[0]])) if names is not None else f"label {classes[0]}"
        raise DataError(f"{where}: only one class ({label}) in the targets; classification "
                        "needs at least two" + ("" if names is not None else
                                                " (for numeric targets: the regression task)"))
    return y, int(classes[-1]) + 1


def check_multilabels(y: np.ndarray, where: str = "labels", row=lambda i: f"row {i}",
                      columns=None):
    """Multilabel targets (n, labels) of 0/1 (bool, integers or floats) as int64, and the
    number of labels; DataError naming the first row holding anything else (and its column:
    by its name in ``columns``, where given, else by number)."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: multilabel targets must be 0/1 numbers, got dtype {y.dtype}")
    if y.size == 0:
        raise DataError(f"{where}: no class labels")
    bad = ~((y == 0) | (y == 1))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        values = np.unique(y)
        hint = f" (its values are {values[0]:g} and {values[1]:g}: write them as 0 and 1)" \
            if len(values) == 2 else ""
        column = f"column {columns[j]!r}" if columns is not None and len(columns) == \
            y.shape[1] else f"column {int(j)}"
        raise DataError(f"{where}: multilabel targets (one 0/1 column per label) must be 0 or "
                        f"1, but {row(int(i))} holds {y[i, j]:g} in {column}{hint}")
    return y.astype(np.int64), int(y.shape[1])


def infer_task(y: np.ndarray) -> str:
    """The task targets ``y`` suggest, by the rule ``load_data`` documents."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] != 1:
        return "regression"
    y = y.reshape(-1)
    if y.dtype.kind in "biu":
        return "classification"
    if y.dtype.kind == "f" and y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)) \
            and y.min() >= 0 and y.max() < MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


# ---- checking, settling the task, splitting ---------------------------------------------------

def _prepare(spec: DataSpec, loss: str | None, classes=None, features=None, evaluate=None,
             numbered=0, fills_given=False):
    if not isinstance(spec, DataSpec):
        raise ConfigError(f"expected a DataSpec, got {type(spec).__name__}")
    kind = source_kind(spec.dataset)
    _check_spec(spec, loss, kind)
    return _settle(spec, loss, _read_source(spec, kind, features), classes, evaluate,
                   numbered, fills_given)


def _settle(spec: DataSpec, loss: str | None, src: _Source, classes=None, evaluate=None,
            numbered=0, fills_given=False):
    """Settle the task, check the targets and compute the split indices; text labels become
    indices into ``classes`` (given: the stored names; None: the source's own, sorted), which
    comes back as the last item (None for numeric targets). ``evaluate``: the split a model is
    to be evaluated on (``load_split``): its rows may hold a single class, and "all" needs no
    split (the indices are then None, unless fill values must come from the training rows).
    ``numbered``: the number of the model's classes, which are numbers (labels 0..numbered -
    1), so text labels, and labels past them, are a DataError (0: no such model).
    ``fills_given``: fill values are given (stored), so "all" needs no training rows."""
    names = None
    if numbered and src.y.dtype.kind in "US" and spec.task != "regression":
        y = np.asarray(src.y).reshape(-1)
        first = y[0].decode("utf-8", "replace") if isinstance(y[0], bytes) else str(y[0])
        raise DataError(f"{src.where}: the targets are names (such as {first.strip()!r}), but "
                        "the model's classes are numbers (labels 0..k-1)")
    if src.y.dtype.kind in "US" or classes is not None:
        src, names = _named_labels(spec, loss, src, classes)
    if spec.task is None and loss and src.task and LOSS_TASK[loss] != src.task:
        # A named set's task is a fact about its targets: a loss of the other kind is an error
        # (cross-entropy on diabetes' continuous targets would "classify" 214 distinct values).
        others = [n for n, t in LOSS_TASK.items() if t == src.task]
        raise ConfigError(f"loss {loss} needs a {LOSS_TASK[loss]} task, but {spec.dataset} is a "
                          f"{src.task} dataset; " + (
                              f"pass --task {LOSS_TASK[loss]} to force it"
                              if _could_be(src, LOSS_TASK[loss]) else
                              "its targets are not " + (
                                  "class labels (whole numbers >= 0)"
                                  if LOSS_TASK[loss] == "classification" else "finite numbers")
                              + f": use a {src.task} loss ({' or '.join(others)})"))
    task = spec.task or (LOSS_TASK[loss] if loss else None) or src.task or infer_task(src.y)
    if task == "classification" and names is None and np.ndim(src.y) == 2 \
            and src.y.shape[1] > 1:
        y, n_classes = check_multilabels(
            src.y, src.where, src.row,
            columns=spec.target if isinstance(spec.target, list) else None)
    elif task == "classification":
        y, n_classes = check_labels(src.y, src.where, src.row,
                                    min_classes=1 if evaluate else 2, names=names)
        if numbered and n_classes > numbered:  # (the loss would refuse it, naming no row)
            i = int(np.argmax(y >= numbered))
            raise DataError(f"{src.where}: {src.row(i)} holds the class {y[i]}, which is not "
                            f"one of the model's classes (0 to {numbered - 1})")
        if names is not None:
            n_classes = len(names)
    else:
        y, n_classes = _regression_targets(src), 0
    spec = dataclasses.replace(spec, task=task)
    split = evaluate != "all" or (spec.fill_missing and not fills_given)
    return spec, src, y, n_classes, _split_indices(y, task, spec, src) if split else None, names


def _could_be(src: _Source, task: str) -> bool:
    """Whether the source's targets pass as ``task``'s (labels: whole numbers >= 0), as
    forcing that task checks them."""
    try:
        if task == "regression":
            _regression_targets(src)
        elif np.ndim(src.y) == 2 and src.y.shape[1] > 1:
            check_multilabels(src.y, src.where, src.row)
        else:
            check_labels(src.y, src.where, src.row)
    except DataError:
        return False
    return True


def _named_labels(spec: DataSpec, loss: str | None, src: _Source, classes):
    """(the source with its labels as indices, the class names): for text labels (names: the
    given ``classes``, else the source's own, sorted) and for any labels when ``classes`` (a
    model's stored classes) is given; a label not among them is a DataError."""
    y = src.y
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    text = y.dtype.kind in "US"
    if y.ndim != 1:
        raise DataError(f"{src.where}: class labels must be one column, got shape {y.shape}")
    if y.dtype.kind == "S":
        try:
            y = np.char.decode(y, "utf-8")
        except UnicodeDecodeError:
            bad = next(i for i, v in enumerate(y.tolist()) if not _utf8(v))
            raise DataError(f"{src.where}: the class names are bytes, and the one in "
                            f"{src.row(bad)} ({y[bad].tolist()!r}) is not UTF-8 text") from None
    task = spec.task or (LOSS_TASK[loss] if loss else None)
    if text and task == "regression":
        raise ConfigError(f"{src.where}: the targets are text (class names such as "
                          f"{str(y[0])!r}); regression needs numbers")
    if classes is None:
        names, labels = np.unique(y, return_inverse=True)
    else:
        names = np.asarray(classes)
        if names.dtype.kind == "b" and text:  # (an estimator's True/False, as a CSV writes them)
            lowered = np.char.lower(np.char.strip(y.astype(str)))
            if np.isin(lowered, ["true", "false"]).all():
                y, text = lowered == "true", False
        if (names.dtype.kind in "US") != text:
            raise DataError(f"{src.where}: the targets are {'names' if text else 'numbers'}, "
                            f"but the model's classes are "
                            f"{'names' if not text else 'numbers'} "
                            f"({', '.join(map(str, names[:5]))})")
        labels, i = _lookup(names, y)
        if i is not None:
            raise DataError(f"{src.where}: {src.row(i)} holds the class {str(y[i])!r}, which "
                            f"is not one of the model's classes "
                            f"({', '.join(map(str, names))})")
    return dataclasses.replace(src, y=labels.reshape(-1).astype(np.int64),
                               task="classification"), names


def _lookup(known: np.ndarray, values: np.ndarray):
    """(each value's index in ``known``, the position of the first value not in ``known`` or
    None when every one is)."""
    order = np.argsort(known, kind="stable")
    at = order[np.searchsorted(known, values, sorter=order).clip(0, len(known) - 1)]
    unknown = known[at] != values
    return at, (int(np.argmax(unknown)) if unknown.any() else None)


def _check_spec(spec: DataSpec, loss: str | None, kind: str | None) -> None:
    """ConfigError for an option that cannot work, before anything is read."""
    if spec.task is not None and spec.task not in TASKS:
        raise ConfigError(f"unknown task {spec.task!r}; valid names: {', '.join(TASKS)}")
    if loss is not None:
        if loss not in LOSS_TASK:
            raise ConfigError(f"unknown loss {loss!r}; valid names: {', '.join(LOSS_TASK)}")
        if spec.task is not None and spec.task != LOSS_TASK[loss]:
            raise ConfigError(f"loss {loss} needs a {LOSS_TASK[loss]} task, but task is "
                              f"{spec.task!r}")
    if not _is_int(spec.seed) or not 0 <= spec.seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {spec.seed!r}")
    for name in ("val_fraction", "test_fraction"):
        v = getattr(spec, name)
        if not _is_real(v) or not 0 <= v < 1:
            raise ConfigError(f"{name} must lie in [0, 1), got {v!r}")
    for name in ("standardize_targets", "drop_missing"):
        if not isinstance(getattr(spec, name), (bool, np.bool_)):
            raise ConfigError(f"{name} must be True or False, got {getattr(spec, name)!r}")
    if spec.fill_missing not in FILL_MISSING:
        raise ConfigError(f"unknown fill_missing {spec.fill_missing!r}; valid: None, "
                          + ", ".join(map(repr, FILL_MISSING[1:])))
    ignore = spec.ignore
    if ignore is not None:
        if not (isinstance(ignore, (list, tuple)) and all(isinstance(n, str) for n in ignore)):
            raise ConfigError(f"ignore must be a list of different column names, got "
                              f"{ignore!r}")
        _check_named_once("ignore", ignore)
        spec.ignore = list(ignore) or None  # (JSON keeps it a list; none: None)
        both = [n for n in spec.ignore or ()
                if n in target_columns(spec.target) or n == spec.weight_column]
        if both:
            raise ConfigError(f"column {both[0]!r} cannot be ignored: it is the "
                              + ("weight column" if both[0] == spec.weight_column
                                 else "target"))
    for name in ("drop_missing", "fill_missing", "weight_column", "ignore"):
        if getattr(spec, name) not in (None, False) and kind not in ("csv", None):
            raise ConfigError(f"{name} applies to .csv datasets, not to {spec.dataset!r}")
    target = spec.target
    if target is not None and not isinstance(target, str) and not (
            isinstance(target, (list, tuple)) and len(target) >= 2
            and all(isinstance(n, str) for n in target)):
        raise ConfigError(f"target must be a column's name, or a list of two or more "
                          f"different names, got {target!r}")
    if target is not None and not isinstance(target, str):
        _check_named_once("target", target)
    if not isinstance(target, (str, type(None))):
        spec.target = list(target)  # (JSON keeps it a list)
        if kind not in ("csv", None):
            raise ConfigError(f"several target columns apply to .csv datasets, not to "
                              f"{spec.dataset!r}")
    if spec.weight_column is not None and spec.weight_column in target_columns(spec.target):
        raise ConfigError(f"the weight column {spec.weight_column!r} is a target column")
    if spec.class_weight not in CLASS_WEIGHTS:
        raise ConfigError(f"unknown class weight {spec.class_weight!r}; valid: None, "
                          + ", ".join(map(repr, CLASS_WEIGHTS[1:])))
    if spec.val_fraction + (0 if kind == "idx" else spec.test_fraction) >= 1:  # (mnist: its
        # own test files, test_fraction unused)
        raise ConfigError(f"val_fraction + test_fraction must be below 1 to leave training rows, "
                          f"got {spec.val_fraction} + {spec.test_fraction}")
    if not _is_int(spec.samples) or spec.samples < 1:
        raise ConfigError(f"samples must be a positive integer, got {spec.samples!r}")
    if not _is_real(spec.noise) or not 0 <= spec.noise < math.inf:
        raise ConfigError(f"noise must be a finite number >= 0, got {spec.noise!r}")
    if spec.target is not None and kind not in ("csv", "npy"):
        raise ConfigError(f"target applies to .csv and .npy datasets, not to {spec.dataset!r}"
                          + (" (an .npz names its targets' array with y_key)" if kind == "npz"
                             else ""))
    for name, default in (("x_key", "x"), ("y_key", "y")):
        if getattr(spec, name) not in (default, None) and kind not in ("npz", None):
            raise ConfigError(f"{name} applies to .npz datasets, not to {spec.dataset!r}")
    if spec.data_dir is not None and kind != "idx":
        raise ConfigError(f"data_dir applies to {' and '.join(IDX_SETS)}, not to "
                          f"{spec.dataset!r}")


def _check_named_once(name, columns) -> None:
    """ConfigError where the list ``columns`` (of setting ``name``) names a column twice."""
    seen = set()
    for c in columns:
        if c in seen:
            raise ConfigError(f"{name} must name each column once; {c!r} is named twice")
        seen.add(c)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and not math.isnan(v)


def _regression_targets(src: _Source) -> np.ndarray:
    y = src.y
    if y.ndim not in (1, 2):
        raise DataError(f"{src.where}: regression targets must be (samples,) or "
                        f"(samples, outputs), got shape {y.shape}")
    y = y.astype(np.float64, copy=False).reshape(len(y), -1)  # (split below: copies)
    bad = ~np.isfinite(y)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{src.where}: target {src.row(int(i))}"
                        f"{f', column {j}' if y.shape[1] > 1 else ''} is {y[i, j]} "
                        f"(NaN or infinity)")
    return y


def _rows_needed(vf: float, tf: float):
    """The fewest rows that leave one for training and one for each held-out share above 0;
    None where that is beyond a search of 10,000 counts (fractions summing to within about
    1e-4 of 1: billions of rows, say).

    n rows leave n - ceil(tf n) - ceil(vf n) <= n (1 - vf - tf) for training, so none below
    1 / (1 - vf - tf): the search starts there, not at 1."""
    left = 1.0 - vf - tf
    if left <= 0:
        return None
    lo = max(1, math.floor(1 / left * (1 - 1e-9)) - 1)
    for n in range(lo, lo + 10_000):
        if n - math.ceil(tf * n) - math.ceil(vf * n) >= 1:
            return n
    return None


def _split_indices(y, task, spec: DataSpec, src: _Source) -> dict:
    """Row indices of train, val and test: seeded, stratified by class where possible."""
    n, vf, tf = len(y), spec.val_fraction, spec.test_fraction
    if src.n_own_test is not None:
        pool, test = np.arange(n - src.n_own_test), np.arange(n - src.n_own_test, n)
        need = _rows_needed(vf, 0.0)
        if need is None or len(pool) < need:
            raise DataError(f"{src.where}: {len(pool)} training samples, but val_fraction {vf} "
                            + (f"needs at least {need}" if need else "needs far more"))
        if len(test) == 0:
            raise DataError(f"{src.where}: the test files hold no samples")
        n_val = math.ceil(vf * len(pool))
    else:
        need = _rows_needed(vf, tf)
        if need is None or n < need:
            raise DataError(f"{src.where}: {n} samples, but val_fraction {vf} and test_fraction "
                            f"{tf} need " + (f"at least {need}" if need else "far more")
                            + " (one training row and one per held-out split)")
        pool, test = np.arange(n), np.arange(0)
        if tf > 0:
            pool, test = _hold_out(pool, math.ceil(tf * n), y, task, spec.seed)
        n_val = math.ceil(vf * n)
    train, val = _hold_out(pool, n_val, y, task, spec.seed) if n_val else (pool, np.arange(0))
    return {"train": train, "val": val, "test": test}


def _check_training_classes(y, task, train, src, names) -> None:
    """DataError where a run's training rows hold one class only (a class too small to
    stratify on fell wholly in the held-out rows: a one-class model scored 1.0); a notice
    naming classes that have no training rows."""
    if task != "classification" or np.ndim(y) != 1 or not len(train):
        return

    def named(labels):
        return ", ".join(str(names[j]) if names is not None else str(j) for j in labels)

    kept = np.unique(y[train])
    others = np.setdiff1d(np.unique(y), kept)
    if len(kept) < 2:
        raise DataError(f"{src.where}: the training rows hold one class only ({named(kept)}): "
                        f"the {int(np.isin(y, others).sum())} row(s) of the other class(es) "
                        f"fell in the held-out rows, too few to stratify on; give more rows of "
                        f"them, or another seed (the split is seeded)")
    if len(others):
        notice(f"{src.where}: {len(others)} class(es) have no training rows (their few rows "
               f"fell in the validation or test split), so the model cannot learn them: "
               f"{named(others[:10])}" + (", ..." if len(others) > 10 else ""))


def _hold_out(pool, k, y, task, seed):
    """Split ``pool`` (row indices) into (rest, k held-out rows), stratified if possible:
    scikit-learn's ``train_test_split(pool, test_size=k, random_state=seed, stratify=...)``,
    row for row (``_stratified_split``, ``_shuffled_split``), without importing scikit-learn
    (0.6 s of every run that needs nothing else of it)."""
    k = int(k)
    if task == "classification":
        split = _stratified_split(y[pool], k, seed)
        if split is not None:
            train, test = split
            return pool[train], pool[test]
    train, test = _shuffled_split(len(pool), k, seed)
    return pool[train], pool[test]


def _shuffled_split(n, k, seed):
    """(train, test) positions of scikit-learn's ShuffleSplit for n rows, k held out."""
    permutation = np.random.RandomState(seed).permutation(n)
    return permutation[k:], permutation[:k]


def _stratified_split(y, k, seed):
    """(train, test) positions of scikit-learn's StratifiedShuffleSplit of the labels ``y``
    (a row of a 2-D y is its labels joined as text, as there), k held out; None where it
    refuses to stratify (a class of one row, fewer rows than classes on either side)."""
    n = len(y)
    if y.ndim == 2:
        y = np.array([" ".join(row.astype("str")) for row in y])
    classes, y_indices = np.unique(y, return_inverse=True)
    y_indices = y_indices.reshape(-1)
    counts = np.bincount(y_indices)
    n_train, n_test = n - k, k
    if counts.min() < 2 or n_train < len(classes) or n_test < len(classes):
        return None
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(classes)):
        rows = class_indices[i].take(rng.permutation(counts[i]), mode="clip")
        train.append(rows[:n_i[i]])  # (slices joined once: not a list of 2e6 NumPy ints)
        test.append(rows[n_i[i]:n_i[i] + t_i[i]])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _approximate_mode(class_counts, n_draws, rng):
    """scikit-learn's ``_approximate_mode``: per class, its share of ``n_draws`` rounded down,
    the rows left over going to the largest remainders (ties drawn with ``rng``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


# ---- reading sources ---------------------------------------------------------------------------

def _read_source(spec: DataSpec, kind: str, features=None) -> _Source:
    if kind == "bundled":
        x, y, task = _read_bundled(spec.dataset)
        return _Source(x, y, f"dataset {spec.dataset!r}", task)
    if kind == "synthetic":
        where = f"dataset {spec.dataset!r}"
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # (said below)
                x, y = _SYNTHESISERS[spec.dataset](spec.samples, spec.noise + 0.0, spec.seed)
        except (ValueError, MemoryError) as e:  # (numpy's "maximum allowed size exceeded")
            raise DataError(f"{where}: {spec.samples} samples do not fit in this machine's "
                            f"memory ({_one_line(e)}); ask for fewer") from None
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise DataError(f"{where}: noise {spec.noise:g} takes the values past float64's "
                            "range; choose a smaller noise")
        return _Source(x, y, where, SYNTHETIC[spec.dataset])
    if kind == "idx":
        return _read_idx_set(spec)
    if kind == "csv":
        x, y, lines, described, dropped, w = _read_csv(
            spec.dataset, spec.target, encoding=features, drop_missing=spec.drop_missing,
            fill_missing=bool(spec.fill_missing), weight=spec.weight_column,
            ignore=spec.ignore or ())
        return _Source(x, y, spec.dataset, row=lambda i: f"line {lines[i]}",
                       features=described, dropped=dropped, w=w)
    if kind == "npz":
        return _read_npz(spec.dataset, spec.x_key, spec.y_key)
    return _read_npy_pair(spec.dataset, spec.target)


def _read_bundled(name: str):
    import sklearn.datasets

    loader, task = BUNDLED[name]
    bunch = getattr(sklearn.datasets, loader)()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target), task


def _moons(n, noise, seed):
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return x, y.astype(np.int64)


def _spirals(n, noise, seed, k=3):
    """k interleaved spiral arms: radius r ~ U(0, 1), angle 2 pi c / k + 4 r, class c = i mod k;
    Gaussian noise of std ``noise`` on each coordinate."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    r = rng.uniform(0.0, 1.0, n)
    theta = 2 * np.pi * y / k + 4.0 * r
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    return x + noise * rng.standard_normal((n, 2)), y.astype(np.int64)


def _sine(n, noise, seed):
    """y = sin(3 x1) + 0.5 x2^2 - 0.5 x3 + noise * eps, x ~ U(-1.5, 1.5)^3, eps ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, 1.5, (n, 3))
    y = np.sin(3 * x[:, 0]) + 0.5 * x[:, 1] ** 2 - 0.5 * x[:, 2]
    return x, (y + noise * rng.standard_normal(n)).reshape(n, 1)


_SYNTHESISERS = {"moons": _moons, "spirals": _spirals, "sine": _sine}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _check_file(path: str, what: str) -> None:
    """DataError unless ``path`` is a readable, non-empty file; ``what`` says what was expected."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file (expected {what})")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, not a file (expected {what})")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file (expected {what})")


def _read_csv(path: str, target: str | None, features_only: bool = False, encoding=None,
              drop_missing: bool = False, fill_missing: bool = False, weight=None, ignore=(),
              unseen_none: bool = False):
    """(features, targets or None, line number of each row, feature description, rows dropped,
    sample weights or None: the column named ``weight``, left out of the features) of a CSV
    file (columns named in ``ignore`` are left out: when training, the file must have them;
    else where present); with ``drop_missing`` a
    row with a missing value is left out and counted; with ``fill_missing`` a missing feature
    value is NaN (a missing category: an all-zero one-hot row), to be filled in; else it is a
    DataError.

    Feature columns hold numbers, or (when training: not ``features_only``) text: a column whose
    every cell is text is categorical, one-hot encoded over its sorted categories (one 0/1
    column each, in the column's place). The description lists the feature columns, each
    ``{"name": ...}`` plus ``"categories"`` for a categorical one. ``encoding`` (a stored
    description) encodes a file the way the training file was: its feature columns by name, in
    any order (a missing or unexpected one is a DataError naming it), the same categories (one
    the model never saw is a DataError). The target column holds numbers, or class names (text
    labels, returned as a str array); ``features_only`` makes every column a feature.
    """
    _check_file(path, "a CSV file with a header row")
    categorical = encoding is not None and any("categories" in e for e in encoding)
    text_columns = None
    with _csv_errors(path), open(path, newline="", encoding="utf-8-sig") as f:
        reader = _reader(f)
        header, t, names = _csv_header(reader, path, target, features_only, weight, ignore)
    absent = [n for n in ignore if n not in header]
    if absent and encoding is None and not features_only:  # (training: a misspelt name)
        raise DataError(f"{path}: no column {absent[0]!r} to ignore"
                        f"{_did_you_mean(absent[0], header)}; columns: "
                        + _some(header, last=True))
    wi = None if weight is None else header.index(weight)
    skip = _skipped(header, ignore)
    # numbers only: the columns by name, in the stored order (when reading for a model)
    order = None if encoding is None or categorical else _column_order(names, encoding, path)
    described = [{"name": n} for n in names] if order is None else encoding

    def by_name(x):
        return x if order is None or order == list(range(len(names))) else x[:, order]

    if not categorical:  # every cell a finite number: NumPy's C parser, ~8x Python's csv
        with _csv_errors(path):
            data = _all_numbers(path, len(header), skip)
        if data is not None:
            lines = range(2, len(data) + 2)  # (no list: 2M of them were 76 MiB)
            taken = [j for j in (*_indices(t), wi, *skip) if j is not None]
            w = None if wi is None else _weights(data[:, wi], lines, path, weight)
            return (by_name(np.delete(data, taken, axis=1) if taken else data),
                    None if t is None else data[:, t].copy(), lines, described, 0, w)
    # Anything else, read row by row: text cells, missing values and mistakes are found there
    # and named by line and column.
    with _csv_errors(path), open(path, newline="", encoding="utf-8-sig") as f:
        reader = _reader(f)
        header, t, names = _csv_header(reader, path, target, features_only, weight, ignore)
        # the values row after row into one float64 buffer (8 bytes each: a list of Python
        # floats takes 32)
        values_read, lines, cells = array.array("d"), [], []
        data_rows = _DataRows(reader, header, t, path, drop_missing, wi, skip,
                              fill_missing)
        for line, row, cell in ([] if categorical else data_rows):
            cells.append(cell)
            values = _parse_row(row, names, path, line, text=not features_only,
                                fill=fill_missing)
            if isinstance(values, set):  # text cells: read the file again by columns
                text_columns = values
                break
            values_read.extend(values)
            lines.append(line)
        dropped = data_rows.dropped
    if categorical or text_columns:
        with _csv_errors(path):
            return _read_csv_columns(path, target, features_only, encoding, text_columns,
                                     drop_missing, fill_missing, weight, ignore, unseen_none)
    if not lines:
        raise DataError(f"{path}: " + (f"every one of its {dropped} rows has a missing value"
                                       " (a column empty in every row? --ignore it)"
                                       if dropped else "a header but no data rows"))
    data = by_name(np.frombuffer(values_read, dtype=np.float64)
                   .reshape(len(lines), len(names)))
    w = None if wi is None else _weights(data_rows.weight_cells, lines, path, weight)
    if t is None:
        return data, None, lines, described, dropped, w
    return data, _parse_targets(cells, lines, path, header, t), lines, described, dropped, w


def _all_numbers(path, width, skip=()):
    """The CSV's rows (after the header) as a float64 (rows, width) array when every cell is a
    finite number and no line is blank (so that row i is line i + 2); else None. The columns
    ``skip`` (ignored ones) may hold anything: they read as 0."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*input contained no data", UserWarning)
            data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2,
                              quotechar='"', comments=None, encoding="utf-8-sig",
                              converters=dict.fromkeys(skip, _zero) or None)
    except ValueError:  # text, a missing value, a short row...: the row-by-row path says which
        return None
    if data.shape[0] == 0 or data.shape[1] != width or not np.isfinite(data).all():
        return None
    if skip and _has_quote(path):  # NumPy takes quoting Python's strict reader refuses
        return None  # ("bad"quote, which ends a cell of numbers row by row, said there)
    # the pieces of content.split(b"\n"), streamed: count them, and whether one before the
    # last is blank (the last, blank, is the final newline's and is left out)
    count, blank, prev, ends_in_newline = 0, False, None, True
    with open(path, "rb") as f:
        for piece in iter(f.readline, b""):
            if prev is not None and not prev.strip():
                blank = True
            prev, count = piece, count + 1
            ends_in_newline = piece.endswith(b"\n")
    if ends_in_newline:  # (split leaves an empty piece after a final newline)
        if prev is not None and not prev.strip():
            blank = True
        prev, count = b"", count + 1
    if not prev.strip():
        count -= 1  # the final piece, popped
    if count - 1 != data.shape[0] or blank:
        return None  # a blank line: rows and lines no longer count alike
    return data


def _has_quote(path) -> bool:
    """Whether the file's rows (after its header, whose quoted names R and others write are
    read strictly already) hold a double quote (read in blocks)."""
    with open(path, "rb") as f:
        f.readline()
        return any(b'"' in block for block in iter(lambda: f.read(1 << 20), b""))


def _zero(cell):
    """An ignored column's cell, to NumPy's parser: whatever it holds."""
    return 0.0


def _reader(f):
    """A CSV reader of ``f`` that refuses malformed quoting (a quote left open to the end of
    the file, text after a closing quote), which a lenient one would take, a quote open at the
    last cell swallowing every line below it into that cell."""
    return csv.reader(f, strict=True)


@contextlib.contextmanager
def _csv_errors(path):
    """Reading errors of a CSV file as one-line DataErrors."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file ({_one_line(e)})") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({_one_line(e)})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or _one_line(e)}") from None


def _csv_header(reader, path, target, features_only, weight=None, ignore=()):
    """(header, the target's index or None, the feature columns' names) of a CSV reader; the
    column named ``weight`` (sample weights), if given, is not a feature either, nor are the
    columns named in ``ignore`` that the header has."""
    # the first line that is not blank (blank lines before it are skipped)
    header = next((row for row in reader if any(c.strip() for c in row)), None)
    if header is None:
        raise DataError(f"{path}: empty file (expected a CSV file with a header row)")
    header = [h.strip() for h in header]
    dupes = sorted(h for h, k in collections.Counter(header).items() if k > 1)
    if dupes:
        raise DataError(f"{path}: duplicate column name(s) in the header: "
                        f"{_some(dupes, repr)}")
    columns = _some(header, last=True)
    t = None
    if target is not None:
        for name in target_columns(target):
            if name not in header:
                other = next((d for d in ";\t|" if len(header) == 1 and d in header[0]), None)
                raise DataError(f"{path}: no column {name!r}{_did_you_mean(name, header)}; "
                                f"columns: {columns}" + (
                    f" (a file of fields separated by {other!r}? gpunet reads commas: save "
                    "it as comma-separated CSV)" if other else ""))
        t = header.index(target) if isinstance(target, str) else \
            [header.index(name) for name in target]
    elif not features_only:
        raise ConfigError(f"{path}: name the target column (--target); columns: {columns}")
    if weight is not None and weight not in header:
        raise DataError(f"{path}: no weight column {weight!r}{_did_you_mean(weight, header)}; "
                        f"columns: {columns}")
    names = [h for j, h in enumerate(header)
             if j not in _indices(t) and h != weight and h not in ignore]
    if not names:  # (what was taken out: the target, the weights, the columns ignored)
        targets, left = target_columns(target), [h for h in header if h in ignore]
        raise DataError(f"{path}: no feature columns besides " + " and ".join(part for part in (
            f"the target{'s' if len(targets) > 1 else ''} {_some(targets, repr)}"
            if targets else "", f"the weights {weight!r}" if weight is not None else "",
            f"the column{'s' if len(left) > 1 else ''} left out ({_some(left, repr)})"
            if left else "") if part))
    return header, t, names


def target_columns(target) -> list:
    """The target column names of a spec's ``target``: none, one name, or a list of them."""
    return [] if target is None else [target] if isinstance(target, str) else list(target)


def _indices(t) -> list:
    """The target's column indices: ``t`` None, one index or a list of them."""
    return [] if t is None else t if isinstance(t, list) else [t]


class _DataRows:
    """The data rows of a CSV reader past its header, as (line, feature cells, target cell or
    None, or a tuple of target cells for several target columns): blank lines skipped, field
    counts checked, and with ``drop_missing`` the rows holding a missing value left out and
    counted in ``dropped``. The cell of column ``wi`` (sample weights), if given, is taken out
    too and kept in ``weight_cells``."""

    def __init__(self, reader, header, t, path, drop_missing, wi=None, skip=(), filled=False,
                 offset=0, limit=None, keep=None):
        self.reader, self.header, self.t, self.wi, self.skip = reader, header, t, wi, skip
        self.path, self.drop_missing = path, drop_missing
        # with the features' gaps filled in, a row is left out for its target's or weight's
        self.checked = [j for j in (*_indices(t), wi) if j is not None] if filled else None
        self.dropped = 0
        self.weight_cells = []
        # a block of a file (``feature_blocks``): a reader of its lines from line offset + 1,
        # which stops at the first row ending on or past its line ``limit``; the cells of the
        # columns ``keep`` of each row yielded, kept in ``kept_cells``
        self.offset, self.limit, self.keep = offset, limit, keep
        self.kept_cells = []

    def __iter__(self):
        end = self.offset + self.reader.line_num  # (the header's last line)
        rows = iter(self.reader)
        while True:
            if self.limit is not None and self.reader.line_num >= self.limit:
                return
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as e:  # (strict quoting: where it went wrong, and why)
                raise DataError(f"{self.path}: line {end + 1}: malformed quoting ({e})" + (
                    ": a quote left open" if "end of data" in str(e) else "")) from None
            # a row's line is its first: a quoted cell may hold line breaks
            line, end = end + 1, self.offset + self.reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()
                           and (len(self.header) > 1 or row[0])):
                continue  # a blank line, or spaces (in a one-column file, "" is its one
                # cell, empty: a missing value)
            if len(row) != len(self.header):
                runs_on = end > line and any("\n" in c or "\r" in c for c in row)
                raise DataError(f"{self.path}: line {line} has {len(row)} fields, the header "
                                f"has {len(self.header)}" + (
                                    f" (a quoted cell runs on to line {end}: a quote left "
                                    "open?)" if runs_on else ""))
            if self.drop_missing and _has_missing(
                    [row[j] for j in self.checked] if self.checked is not None else
                    row if not self.skip else [c for j, c in enumerate(row)
                                               if j not in self.skip]):
                self.dropped += 1  # (a gap in an ignored column leaves the row in)
                continue
            if self.keep is not None:
                self.kept_cells.append(tuple(row[j] for j in self.keep))
            taken = {j: row[j] for j in (*_indices(self.t), self.wi, *self.skip)
                     if j is not None}
            for j in sorted(taken, reverse=True):
                del row[j]
            if self.wi is not None:
                self.weight_cells.append(taken[self.wi])
            yield line, row, tuple(taken[j] for j in self.t) if isinstance(self.t, list) \
                else taken.get(self.t)


def _column_order(names, encoding, path) -> list:
    """Where the stored feature columns (``encoding``, in the model's order) lie among a file's
    feature columns ``names``; DataError naming any the file lacks or the model never had."""
    # (a DataFrame's column " a " is saved as it is; a CSV's header is read stripped: " a "
    # and "a" are one name here)
    at = {n: j for j, n in enumerate(names)}
    wanted = [e["name"] if e["name"] in at else str(e["name"]).strip() for e in encoding]
    known = set(wanted)
    missing = [n for n in wanted if n not in at]
    extra = [n for n in names if n not in known]
    if missing or extra:
        other = next((d for d in ";\t|" if len(names) == 1 and d in names[0]), None)
        if other:  # (one column whose name holds the model's names and another separator)
            raise DataError(f"{path}: one column, {names[0]!r}: a file of fields separated by "
                            f"{other!r}? gpunet reads commas: save it as comma-separated CSV")
        raise DataError(f"{path}: the feature columns are not the model's ("
                        + "; ".join(part for part in (
                            "missing: " + _some(missing, repr) if missing else "",
                            "unexpected: " + _some(extra, repr) if extra else "")
                            if part) + ")" + (f"; --ignore {shlex.quote(extra[0])} leaves "
                                              f"{'that column' if len(extra) == 1 else 'one'} "
                                              "out" if extra and not missing else ""))
    return [at[n] for n in wanted]


def _some(names, show=str, shown=10, last=False) -> str:
    """The first ``shown`` of ``names``, comma-separated, and how many there are in all where
    that is more: a header of 100,000 columns is not a one-line message. ``last``: the last
    name too, after the "..." (a CSV's target is often its last column)."""
    if last and len(names) == shown + 1:
        shown += 1
    listed = ", ".join(map(show, names[:shown]))
    if len(names) <= shown:
        return listed
    return listed + ", ..." + (f", {show(names[-1])}" if last else "") + f" ({len(names)} in all)"


def _did_you_mean(name, names) -> str:
    """" (did you mean 'x'?)" for the one of ``names`` nearest a misspelt ``name`` (the same
    but for case first, else difflib's closest), or ""."""
    import difflib

    lower = {}
    for n in names:
        lower.setdefault(n.lower(), n)
    close = difflib.get_close_matches(name.lower(), lower, n=1)
    return f" (did you mean {lower[close[0]]!r}?)" if close else ""


def _read_csv_columns(path, target, features_only, encoding, text_columns, drop_missing,
                      fill_missing=False, weight=None, ignore=(), unseen_none=False):
    """``_read_csv`` for a file with text feature columns, text ones one-hot encoded (learnt: a
    column is text where any of its cells is, which ``text_columns``, the columns of the first
    text cells met, starts; or stored: ``encoding``, where a category it does not hold is a
    DataError, or with ``unseen_none`` no category, as a missing one, with a notice). The
    numbers go row by row into one float64 buffer (8 bytes a cell), the text columns' cells
    into lists of their own."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = _reader(f)
        header, t, names = _csv_header(reader, path, target, features_only, weight, ignore)
        data_rows = _DataRows(reader, header, t, path, drop_missing,
                              None if weight is None else header.index(weight),
                              _skipped(header, ignore), fill_missing)
        return _columns(path, data_rows, header, t, names, features_only, encoding,
                        text_columns, fill_missing, weight, unseen_none)


def _columns(path, data_rows, header, t, names, features_only, encoding, text_columns,
             fill_missing, weight, unseen_none, unseen=None):
    """``_read_csv_columns``' reading of the rows ``data_rows`` (a ``_DataRows``). ``unseen``
    (a dict; a block of the rows, read with the stored ``encoding``): the cells of categories
    the model never saw are counted there, column by column ({column: [count, first such
    text]}), to be said once for the file, and no rows return None."""
    learnt = encoding is None
    width = len(names)
    if learnt:
        order = list(range(width))
        categories = {}
        text = set(text_columns or ())
    else:
        order = _column_order(names, encoding, path)
        categories = {j: e["categories"] for j, e in zip(order, encoding)
                      if "categories" in e}
        text = set(categories)
    # each text column's cells: their rows and stripped texts (missing ones left out), from
    # the row ``since`` which it was found to be text at (the rows before: numbers or missing)
    at_rows = {j: array.array("q") for j in text}
    texts = {j: [] for j in text}
    since = dict.fromkeys(text, 0)
    first = {}  # learnt: each column's first cell that is not missing (line, text, row)
    bad = {}  # learnt: each column's first NaN or infinity (line, text)
    pending = set(order) if learnt else set()  # columns with no such cell yet
    values, lines, cells = array.array("d"), [], []

    def by_cells(row, line, r):
        """The row's numbers (NaN where missing or text) cell by cell, in the columns'
        order: a missing value, a bad number or (learnt) a new text column found there."""
        got = [math.nan] * width
        for j in order:
            cell = row[j].strip()
            if _is_missing(cell):
                if not fill_missing:
                    raise _missing(path, line, f"column {names[j]!r}", cell,
                                   predicting=features_only)
            elif j in text:
                at_rows[j].append(r)
                texts[j].append(cell)
            elif not learnt:
                got[j] = _number(cell, path, line, names[j])
            elif not _is_number(cell):  # a text column, from here
                text.add(j)
                at_rows[j], texts[j], since[j] = array.array("q", [r]), [cell], r
            else:
                v = _csv_float(cell)
                if math.isfinite(v):
                    got[j] = v
                else:
                    bad.setdefault(j, (line, cell))
        return got

    in_text = [j for j in order if j in text]
    for line, row, cell in data_rows:
        r = len(lines)
        if pending:
            for j in list(pending):
                if not _is_missing(row[j].strip()):
                    first[j] = (line, row[j].strip(), r)
                    pending.discard(j)
        held = [row[j] for j in in_text]
        for j in in_text:
            row[j] = "0"
        try:  # every number a plain finite one: the quick way
            got = list(map(float, row))
            joined = "".join(row)  # (spellings only Python reads: by_cells refuses them)
            if "_" in joined or not joined.isascii() or not all(map(math.isfinite, got)):
                got = None
        except ValueError:
            got = None
        for j, kept in zip(in_text, held):
            row[j] = kept
        if got is None:
            got = by_cells(row, line, r)
            in_text = [j for j in order if j in text]
        else:  # the numbers were whole: the text cells' turn
            for j, kept in zip(in_text, held):
                kept = kept.strip()
                if not _is_missing(kept):
                    at_rows[j].append(r)
                    texts[j].append(kept)
                elif not fill_missing:
                    raise _missing(path, line, f"column {names[j]!r}", kept,
                                   predicting=features_only)
        values.extend(got)
        lines.append(line)
        cells.append(cell)
    dropped = data_rows.dropped
    if not lines:
        if unseen is not None:
            return None
        raise DataError(f"{path}: " + (f"every one of its {dropped} rows has a missing value"
                                       " (a column empty in every row? --ignore it)"
                                       if dropped else "a header but no data rows"))
    for j in order:  # a number column's NaN or infinity, before any text column's trouble
        if j not in text and j in bad:
            raise DataError(f"{path}: line {bad[j][0]}, column {names[j]!r}: {bad[j][1]!r} "
                            "(NaN or infinity)")
    n = len(lines)
    numbers = np.frombuffer(values, dtype=np.float64).reshape(n, width)
    blocks, description = [], []
    for j in order:
        if j not in text:
            blocks.append((j, None, None))
            description.append({"name": names[j]})
            continue
        cells_j = np.array(texts[j])
        if learnt:  # every cell must be text
            numeric = [i for i, c in enumerate(texts[j]) if _is_number(c)]
            earlier = first.get(j) if first.get(j, (0, "", n))[2] < since[j] else None
            if numeric or earlier:
                word = next(i for i, c in enumerate(texts[j]) if not _is_number(c))
                line, number = earlier[:2] if earlier else \
                    (lines[at_rows[j][numeric[0]]], texts[j][numeric[0]])
                raise DataError(f"{path}: line {lines[at_rows[j][word]]}, column {names[j]!r}: "
                                f"{texts[j][word]!r} is not a number (the column mixes "
                                f"numbers, such as {number!r} at line {line}, and text)")
            known = np.unique(cells_j)
            if not len(known):
                raise DataError(f"{path}: column {names[j]!r} has no value to learn its "
                                "categories from")
            if len(known) > MAX_CATEGORIES:
                raise DataError(f"{path}: column {names[j]!r} holds {len(known)} distinct "
                                f"text values (such as {str(known[0])!r}): more than "
                                f"{MAX_CATEGORIES} categories, so not taken for one (an "
                                "identifier or free text?); leave the column out (--ignore "
                                "COLUMN) or encode it as numbers first")
        else:
            known = np.asarray(categories[j])
        at, i = _lookup(known, cells_j) if len(cells_j) else (np.zeros(0, dtype=np.intp), None)
        rows_j = np.frombuffer(at_rows[j], dtype=np.int64)
        if i is not None and not unseen_none:
            shown = ", ".join(map(str, known[:10])) + (
                f", ... ({len(known)} in all)" if len(known) > 10 else "")
            raise DataError(f"{path}: line {lines[at_rows[j][i]]}, column {names[j]!r}: "
                            f"{texts[j][i]!r} is not one of the categories the model "
                            f"was trained on ({shown})" + (
                                "; gpunet predict --unseen-category none encodes such a cell "
                                "as no category" if features_only else ""))
        if i is not None:  # as a missing category: a row of zeros in the block
            seen = known[at] == cells_j
            if unseen is not None:
                unseen.setdefault(j, [0, texts[j][i]])[0] += int((~seen).sum())
            else:
                notice(unseen_notice(path, names[j], int((~seen).sum()), texts[j][i]))
            at, rows_j = at[seen], rows_j[seen]
        blocks.append((j, at, rows_j))
        description.append({"name": names[j], "categories": [str(c) for c in known]})
    x = np.zeros((n, sum(1 if at is None else len(d["categories"])
                         for (_, at, _), d in zip(blocks, description))))
    col = 0
    for (j, at, rows_j), d in zip(blocks, description):
        if at is None:
            x[:, col] = numbers[:, j]
            col += 1
        else:  # a missing category: no category (a row of zeros)
            x[rows_j, col + at] = 1.0
            col += len(d["categories"])
    del numbers, values
    y = None if t is None else _parse_targets(cells, lines, path, header, t)
    w = None if weight is None else _weights(data_rows.weight_cells, lines, path, weight)
    return x, y, lines, description, dropped, w


def unseen_notice(path, name, count, example) -> str:
    """The notice of ``count`` cells of column ``name`` holding categories the model never saw
    (``example``, the first), encoded as none."""
    return (f"{path}: column {name!r}: {count} cell(s) hold a category the model never saw "
            f"(such as {example!r}), encoded as none")


def _has_missing(row) -> bool:
    return any(_is_missing(cell.strip()) for cell in row)


#: cells that stand for a missing value (compared in lower case): empty, and the markers of R,
#: spreadsheets, SQL exports and the UCI sets, and NaN as NumPy, MATLAB and pandas write it
#: (pandas reads every one of these as missing)
MISSING_MARKERS = frozenset({"", "na", "n/a", "null", "?", "nan", "-nan", "#n/a", "<na>"})


def _is_missing(text: str) -> bool:
    return text.lower() in MISSING_MARKERS


def _missing(path, line, column, text, feature=True, predicting=False) -> DataError:
    """The error for a missing cell; ``feature``: of a feature column (which --fill-missing
    can fill), else of the target or weight column (which nothing fills); ``predicting``: in
    the features predict reads for a model that fills nothing in."""
    shown = f" ({text!r})" if text else ""
    if predicting:
        return DataError(f"{path}: line {line}, {column}: missing value{shown}; this model "
                         "was trained without --fill-missing, so it needs every value: fill "
                         "the gaps in, or train with --fill-missing mean")
    if not feature:
        return DataError(f"{path}: line {line}, {column}: missing value{shown}; a target or "
                         "weight is never filled in: --drop-missing leaves such rows out")
    return DataError(f"{path}: line {line}, {column}: missing value{shown}; gpunet fills in "
                     "none unless asked: --drop-missing leaves such rows out, --fill-missing "
                     "mean fills feature values in")


def _csv_float(text) -> float:
    """``float(text)`` for the spellings CSV readers take as numbers (NumPy's loadtxt among
    them): Python's float() also reads "1_000" and other scripts' digits ("١٢"), which
    would otherwise be numbers here and text everywhere else; ValueError for those."""
    if isinstance(text, str):
        text = text.strip()  # (spaces around it, a no-break space among them, as float's)
        if "_" in text or not text.isascii():
            raise ValueError(f"not a plain number: {text!r}")
    return float(text)


#: the cells a column the model reads as numbers takes for True and False (pandas writes a bool
#: column so; an estimator fitted on the DataFrame read it as 1 and 0)
_FLAGS = {"true": 1.0, "false": 0.0}


def _number(text, path, line, name) -> float:
    """A cell of a column the model reads as numbers: True and False (as pandas writes a bool
    column, which an estimator fitted on the DataFrame read as 1 and 0) are 1 and 0."""
    try:
        v = _csv_float(text)
    except ValueError:
        flag = _FLAGS.get(text.strip().lower())
        if flag is not None:
            return flag
        raise DataError(f"{path}: line {line}, column {name!r}: {text!r} is not a number") \
            from None
    if not math.isfinite(v):
        raise DataError(f"{path}: line {line}, column {name!r}: {text!r} (NaN or infinity)")
    return v


def _is_number(text) -> bool:
    try:
        _csv_float(text)
    except ValueError:
        return False
    return True


def _skipped(header, ignore) -> list:
    """The indices of the header's columns named in ``ignore``."""
    return [j for j, h in enumerate(header) if h in ignore]


def _weights(cells, lines, path, name) -> np.ndarray:
    """A CSV's column of sample weights as float64: each a finite number >= 0, not all 0; a
    DataError naming the line of the first that is not."""
    column = f"weight column {name!r}"
    values = []
    for cell, line in zip(cells, lines):
        text = cell.strip() if isinstance(cell, str) else cell
        if isinstance(text, str) and _is_missing(text):
            raise _missing(path, line, column, text, feature=False)
        try:
            v = _csv_float(text)
        except ValueError:
            raise DataError(f"{path}: line {line}, {column}: {text!r} is not a number") \
                from None
        if not (math.isfinite(v) and v >= 0):
            raise DataError(f"{path}: line {line}, {column}: {v:g}; sample weights are "
                            "finite numbers >= 0")
        values.append(v)
    w = np.array(values, dtype=np.float64)
    if w.size and not w.any():
        raise DataError(f"{path}: {column}: every sample weight is zero")
    return w


def _parse_targets(cells, lines, path, header, t):
    """A CSV target column (``header[t]``): float64 numbers, or (every cell text) the class
    names as a str array; a missing value, NaN, infinity or a mix of numbers and names is a
    DataError. Several target columns (``t`` a list; each cell a tuple): float64 (rows,
    columns), numbers only (regression targets, or 0/1 labels of a multilabel task)."""
    if isinstance(t, list):
        columns = []
        for k, j in enumerate(t):
            got = _parse_targets([c[k] for c in cells], lines, path, header, j)
            if got.dtype.kind != "f":
                raise DataError(f"{path}: target column {header[j]!r} holds text (such as "
                                f"{str(got[0])!r}); several target columns must hold numbers "
                                "(values to regress on, or 0/1 for each of several labels)")
            columns.append(got)
        return np.stack(columns, axis=1)
    name = header[t]
    column = f"target column {name!r}"
    values, number, word = [], None, None
    for cell, line in zip(cells, lines):
        text = cell.strip()
        if _is_missing(text):
            raise _missing(path, line, column, text, feature=False)
        try:
            v = _csv_float(text)
        except ValueError:
            word = word or (line, text)
            continue
        if not math.isfinite(v):
            raise DataError(f"{path}: line {line}, {column}: {text!r} (NaN or infinity)")
        number = number or (line, text)
        values.append(v)
    if word is None:
        return np.array(values, dtype=np.float64)
    if number is not None:
        raise DataError(f"{path}: {column} mixes numbers ({number[1]!r} at line {number[0]}) "
                        f"and text ({word[1]!r} at line {word[0]}); class names must all be "
                        f"text, and numeric targets all numbers")
    return np.array([c.strip() for c in cells])


def _parse_row(row, names, path, line, text=False, fill=False):
    """One CSV row's feature values (the target cell taken out), every one a finite number; or,
    with ``text``, the set of the columns holding text where there is any (a missing value,
    NaN or infinity is a DataError either way; with ``fill`` a missing value is NaN)."""
    try:
        values = [float(v) for v in row]
        joined = "".join(row)  # (spellings only Python reads: the slow path refuses them)
        if "_" in joined or not joined.isascii():
            values = None
    except ValueError:
        values = None
    if values is not None and all(math.isfinite(v) for v in values):
        return values
    words, values = set(), []
    for j, cell in enumerate(row):  # the slow path: name the bad cell, or find the text
        column = f"column {names[j]!r}"
        if _is_missing(cell.strip()):
            if fill:
                values.append(math.nan)
                continue
            raise _missing(path, line, column, cell.strip(), predicting=not text)
        try:
            v = _csv_float(cell)
        except ValueError:
            flag = _FLAGS.get(cell.strip().lower())
            if not text and flag is not None:  # (a model's column of numbers: pandas' bool)
                values.append(flag)
                continue
            if not text:
                raise DataError(f"{path}: line {line}, {column}: {cell.strip()!r} is not a "
                                f"number") from None
            words.add(j)
            continue
        if not math.isfinite(v):
            raise DataError(f"{path}: line {line}, {column}: {cell.strip()!r} (NaN or infinity)")
        values.append(v)
    # the slow path's numbers are the row's: the quick one also turns down cells it cannot
    # vouch for but that are numbers (padded with a no-break or other Unicode space)
    return words or values


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _npy_header(f):
    """(shape, dtype) of the .npy header at ``f``'s position; whatever NumPy raises on a
    malformed one (ValueError, SyntaxError, tokenize's TokenError, ...)."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) \
        else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return shape, dtype


def npy_data_bytes(f) -> int | None:
    """The bytes of data that the .npy header at ``f``'s position announces; None where it
    is not a header NumPy reads (``np.load`` then says what is wrong) or announces pickled
    objects (which ``allow_pickle=False`` refuses)."""
    try:
        shape, dtype = _npy_header(f)
    except Exception:
        return None
    return None if dtype.hasobject else int(np.prod(shape, dtype=object)) * dtype.itemsize


def _check_npy_size(path: str) -> None:
    """DataError where a .npy file's header cannot be read, or announces more data than the
    file holds (checked before ``np.load`` allocates it)."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            return  # (not a .npy file: np.load says what it is)
        f.seek(0)
        try:
            shape, dtype = _npy_header(f)
        except Exception as e:
            raise DataError(f"{path}: not a readable .npy file (its header: "
                            f"{type(e).__name__}: {_one_line(e)})") from None
        held = os.path.getsize(path) - f.tell()
    need = 0 if dtype.hasobject else int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > held:
        raise DataError(f"{path}: truncated: its header announces {shape} of {dtype} "
                        f"({need} bytes), the file holds {held}")


def _load_npy(path: str, mmap: bool = False) -> np.ndarray:
    """The array of a .npy file; ``mmap``: mapped (read a block at a time, as predict does),
    where NumPy can map it (else read, whose errors are the messages)."""
    _check_file(path, "a .npy array file")
    _check_npy_size(path)
    if mmap:
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
            if isinstance(a, np.ndarray):
                return a
            a.close()
        except (ValueError, OSError, EOFError):
            pass
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(_pickle_message(path, e) or (
            f"{path}: not a .npy file (it does not start with a .npy header)"
            if "allow_pickle" in str(e) else  # (numpy's words would say "pickled" data)
            f"{path}: not a readable .npy file ({_one_line(e)})")) from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy file ({_one_line(e)})") from None
    if not isinstance(a, np.ndarray):
        a.close()
        raise DataError(f"{path}: an .npz archive, not a .npy array")
    return a


def _targets(a: np.ndarray, where: str) -> np.ndarray:
    """Targets as read from an array file: numbers, or class names (a str or bytes array)."""
    if a.dtype.kind in "US" and a.ndim == 0:
        raise DataError(f"{where}: the targets must be an array with one row per sample, got "
                        "a scalar")
    return a if a.dtype.kind in "US" else _numeric(a, where, "the targets")


def _pickle_message(path, e, key=None) -> str | None:
    """The message for numpy's refusal of a pickle (allow_pickle=False); None for other errors."""
    if "allow_pickle" not in str(e):
        return None
    if "Object arrays" not in str(e):  # not .npy/.npz at all: a pickle, or just not ours
        with open(path, "rb") as f:
            if f.read(1) != b"\x80":  # every pickle of protocol >= 2 starts with PROTO
                return None
    what = f"array {key!r}" if key else "it"
    return (f"{path}: {what} holds pickled Python objects, which gpunet refuses to load "
            f"(allow_pickle=False); save plain arrays: numbers, and class names as "
            f"fixed-width text (np.array(names.tolist()), not object or StringDType)")


def _numeric(a: np.ndarray, where: str, what: str) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        raise DataError(f"{where}: {what} must be numbers, got dtype {a.dtype}")
    if a.ndim == 0:
        raise DataError(f"{where}: {what} must be an array with one row per sample, got a scalar")
    return a


def _as_features(x: np.ndarray, where: str, cast: bool = True) -> np.ndarray:
    """(samples, features): float32 and float64 as they are (C order, or rows of contiguous
    blocks: no copy), anything else as float64; a 1-D array is one feature, trailing dims are
    flattened; no rows are an error. ``cast`` False: shaped only (x's dtype and order, to be
    cast a block at a time)."""
    if x.ndim >= 1 and len(x) == 0:
        raise DataError(f"{where}: the features have no rows (shape {x.shape})")
    x = x.reshape(-1, 1) if x.ndim == 1 else x.reshape(len(x), int(np.prod(x.shape[1:])))
    if x.shape[1] == 0:
        raise DataError(f"{where}: the features have no columns (shape {x.shape})")
    if not cast:
        return x
    if x.dtype not in (np.float32, np.float64):
        return x.astype(np.float64)
    return x if x.flags.c_contiguous or x.strides[0] >= x.strides[-1] else \
        np.ascontiguousarray(x)


def _finite(x: np.ndarray, where: str, what: str, first_row: int = 0) -> np.ndarray:
    """x, or a DataError naming its first value that is NaN or infinite (its rows numbered
    from ``first_row``: a block of a file's)."""
    if x.size == 0 or (np.isfinite(x.min()) and np.isfinite(x.max())):
        return x  # (min and max are finite only where every value is: NaN propagates)
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{where}: {what} row {i + first_row}, column {j} is {x[i, j]} (NaN or "
                        "infinity)")
    return x


def _read_npz(path: str, x_key: str, y_key: str) -> _Source:
    arrays = _npz_arrays(path, (x_key, y_key))
    x = _numeric(arrays[x_key], f"{path}: array {x_key!r}", "the features")
    y = _targets(arrays[y_key], f"{path}: array {y_key!r}")
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} rows in {x_key!r} but {len(y)} in {y_key!r}")
    x = _finite(_as_features(x, path), path, f"array {x_key!r}")
    return _Source(x, y, path)


def _npz_arrays(path: str, keys) -> dict:
    """The arrays ``keys`` of the .npz archive ``path``, each checked before it is read (its
    size, a truncated member, pickles refused); DataError naming what is wrong."""
    named = " and ".join(map(repr, keys))
    _check_file(path, f"an .npz archive with array{'s' if len(keys) > 1 else ''} {named}")
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(_pickle_message(path, e) or
                        f"{path}: not a readable .npz archive ({_one_line(e)})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz archive ({_one_line(e)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not an .npz archive of {named}")
    with archive:
        arrays = {}
        for key in keys:
            if key not in archive.files:
                raise DataError(f"{path}: no array {key!r}; arrays present: "
                                f"{', '.join(archive.files) or 'none'}")
            member = archive.zip.getinfo(key + ".npy") if key + ".npy" in \
                archive.zip.namelist() else None
            if member is not None:
                _check_inflated_size(path, key, member)
                with archive.zip.open(member) as f:
                    need = npy_data_bytes(f)
                    held = member.file_size - f.tell()  # (after its header)
                if need is not None and need > held:
                    raise DataError(f"{path}: array {key!r} is truncated: its header announces "
                                    f"{need} bytes of data, the member holds {held}")
            try:
                arrays[key] = archive[key]
            except (SyntaxError, tokenize.TokenError) as e:  # (a malformed .npy header)
                raise DataError(f"{path}: array {key!r} unreadable (its header: "
                                f"{type(e).__name__}: {_one_line(e)})") from None
            except ValueError as e:
                raise DataError(_pickle_message(path, e, key) or
                                f"{path}: array {key!r} unreadable ({_one_line(e)})") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise DataError(f"{path}: array {key!r} unreadable ({_one_line(e)})") from None
            if not isinstance(arrays[key], np.ndarray):  # (numpy gives a member that is not
                raise DataError(f"{path}: {key!r} is not a .npy array in the archive (its "
                                "bytes are left unread)")  # a .npy back as raw bytes)
    return arrays


def _check_inflated_size(path, key, member) -> None:
    """DataError for an archive's array whose declared size would not fit in the memory left
    (``_memory_available``), or that is compressed like a zip bomb (more than
    ``MAX_COMPRESSION_RATIO`` to one, past ``MAX_INFLATED_BYTES``): both read from the archive's
    directory, before a byte of it is inflated (a 7.8 MB file of 6 GB of zeros took 11 GB)."""
    size, packed = member.file_size, member.compress_size
    ratio = size / max(packed, 1)
    sizes = f"{packed} bytes compressed, {size} inflated ({ratio:.0f}:1)"
    free = _memory_available()
    if free is not None and size > free:
        raise DataError(f"{path}: array {key!r} ({sizes}) does not fit in the {free} bytes of "
                        "memory available")
    if ratio > MAX_COMPRESSION_RATIO and size > MAX_INFLATED_BYTES:
        raise DataError(f"{path}: array {key!r} ({sizes}) is compressed more than "
                        f"{MAX_COMPRESSION_RATIO}:1 past {MAX_INFLATED_BYTES >> 30} GiB, as a "
                        "zip bomb is, not a dataset: refused")


def _memory_available() -> int | None:
    """The bytes of memory this process may still take, as far as it can tell, counting what
    can be freed for it: the system's available memory (Linux's MemAvailable, which counts
    the page cache it can drop) and free swap, within a container's limit (cgroup v2: its
    usage less its file pages, the cache a read of the dataset itself fills) and what is left
    under a limit on its address space (``ulimit -v``); None where none is known."""
    known = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f
                    if line.startswith(("MemAvailable:", "SwapFree:"))}
        if "MemAvailable" in info:
            known.append(info["MemAvailable"] + info.get("SwapFree", 0))
    with contextlib.suppress(OSError, ValueError, IndexError, KeyError):
        with open("/sys/fs/cgroup/memory.max") as f, \
                open("/sys/fs/cgroup/memory.current") as g:
            limit, current = f.read().strip(), int(g.read())
        if limit != "max":
            with open("/sys/fs/cgroup/memory.stat") as f:
                stat = {line.split()[0]: int(line.split()[1]) for line in f if line.strip()}
            known.append(max(int(limit) - (current - stat.get("file", 0)), 0))
    with contextlib.suppress(ImportError, OSError, ValueError, IndexError):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            known.append(max(limit - used, 0))
    return min(known) if known else None


def _read_npy_pair(path: str, target: str | None) -> _Source:
    if target is None:
        raise ConfigError(f"{path}: a .npy dataset needs target (--target): the path of the "
                          f"targets' .npy file")
    x = _numeric(_load_npy(path), path, "the features")
    y = _targets(_load_npy(target), target)
    if len(x) != len(y):
        raise DataError(f"{path} has {len(x)} rows but {target} has {len(y)}")
    x = _finite(_as_features(x, path), path, "feature")
    return _Source(x, y, path, row=lambda i: f"row {i} of {target}")


def _idx_paths(spec: DataSpec) -> dict:
    """The path of each IDX file (plain preferred, else .gz); DataError naming what is missing."""
    expected = [n for pair in IDX_FILES.values() for n in pair]
    listing = (f"{spec.dataset} expects the four IDX files {', '.join(expected)} "
               f"(each plain or .gz) in data_dir")
    if spec.data_dir is None:
        raise ConfigError(f"{spec.dataset} needs data_dir (--data-dir): the folder of "
                          f"{', '.join(expected)} (each plain or .gz)")
    if not os.path.isdir(spec.data_dir):
        raise DataError(f"{spec.data_dir}: no such folder; {listing}")
    found, missing = {}, []
    for name in expected:
        plain = os.path.join(spec.data_dir, name)
        path = next((p for p in (plain, plain + ".gz") if os.path.isfile(p)), None)
        if path is None:
            missing.append(name)
        found[name] = path
    if missing:
        raise DataError(f"{spec.data_dir}: missing {', '.join(missing)}; {listing}")
    return found


def _idx_header(path: str, magic: int) -> tuple:
    """The dims of one IDX file, from its header alone: big-endian magic 0x000008NN (NN = number
    of dims), then one big-endian uint32 per dimension (then the bytes, ``_read_idx``'s). A
    .gz is inflated only as far as the header; a plain file's length is checked by its size."""
    what = "images" if magic == IDX_IMAGES_MAGIC else "labels"
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file (expected IDX {what})")
    with _idx_errors(path), _idx_open(path) as f:
        head = f.read(4)
        if len(head) < 4:
            raise DataError(f"{path}: truncated: {len(head)} bytes, too short for an IDX "
                            "header")
        (found,) = struct.unpack(">I", head)
        if found != magic:
            raise DataError(f"{path}: magic number 0x{found:08x}, expected 0x{magic:08x} "
                            f"(IDX {what})")
        ndim = magic & 0xFF
        start = 4 + 4 * ndim
        head += f.read(start - 4)
        if len(head) < start:
            raise DataError(f"{path}: truncated: {len(head)} bytes, the IDX header needs "
                            f"{start}")
    dims = struct.unpack(f">{ndim}I", head[4:start])
    size = math.prod(dims)
    if magic == IDX_IMAGES_MAGIC and 0 in dims[1:]:
        raise DataError(f"{path}: the header says images of "
                        f"{' x '.join(map(str, dims[1:]))} pixels: none")
    if not path.endswith(".gz"):  # the body's length is known without reading it
        body = os.path.getsize(path) - start
        if body != size:
            raise DataError(_idx_length(path, dims, size, f"{body}"))
    return dims


def _read_idx(path: str, dims: tuple) -> np.ndarray:
    """The uint8 array of one IDX file whose header (``_idx_header``) says ``dims``: only the
    bytes it announces are read (and one more, to tell a file that is too long), so that a
    small .gz that inflates to gigabytes is never read whole."""
    size = math.prod(dims)
    with _idx_errors(path), _idx_open(path) as f:
        f.read(4 + 4 * len(dims))
        raw = _read_up_to(f, size + 1)
    if len(raw) != size:
        raise DataError(_idx_length(path, dims, size, f"{len(raw)}" if len(raw) < size
                                    else f"more than {size}"))
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def _idx_open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


@contextlib.contextmanager
def _idx_errors(path: str):
    """Reading errors of an IDX file (plain or .gz) as one-line DataErrors."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as e:
        kind = "gzip file" if path.endswith(".gz") else "file"
        raise DataError(f"{path}: not a readable {kind} ({_one_line(e)})") from None


def _read_up_to(f, n: int) -> bytearray:
    """At most ``n`` bytes of ``f``, read a MiB at a time: memory grows with what the file
    holds, not with what its header claims (``f.read(n)`` allocates n bytes first)."""
    out = bytearray()
    while len(out) < n:
        chunk = f.read(min(n - len(out), 1 << 20))
        if not chunk:
            break
        out += chunk
    return out


def _idx_length(path, dims, size, body) -> str:
    state = "too long" if body.startswith("more") or int(body) > size else "truncated"
    return (f"{path}: {state}: the header says {' x '.join(map(str, dims))} ({size} bytes of "
            f"data), the file holds {body}")


def _read_idx_set(spec: DataSpec) -> _Source:
    paths = _idx_paths(spec)
    # Every header first: the counts and shapes they announce are checked, and the memory
    # those need, before a body is read (a 3 MB .gz of 3 GB of pixels was inflated whole
    # before its labels were counted).
    heads = {name: _idx_header(paths[name], magic) for split in IDX_FILES
             for name, magic in zip(IDX_FILES[split], (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC))}
    for split, (images_name, labels_name) in IDX_FILES.items():
        n_images, n_labels = heads[images_name][0], heads[labels_name][0]
        if n_images != n_labels:
            raise DataError(f"{paths[images_name]} holds {n_images} images but "
                            f"{paths[labels_name]} holds {n_labels} labels")
        if not n_images:
            raise DataError(f"{paths[images_name]}: holds no images (the {split} files of "
                            f"{spec.data_dir} are empty)")
    train, test = (heads[images_name] for images_name, _ in IDX_FILES.values())
    if train[1:] != test[1:]:
        raise DataError(f"{spec.data_dir}: training images are {train[1]}x{train[2]} but "
                        f"test images are {test[1]}x{test[2]}")
    # the bytes read, their copy side by side, and that as float64 features: 10 a pixel
    pixels = math.prod(train) + math.prod(test)
    need, free = 10 * pixels + 2 * (train[0] + test[0]), _memory_available()
    if free is not None and need > free:
        raise DataError(f"{spec.data_dir}: the IDX headers announce {train[0]} + {test[0]} "
                        f"images of {train[1]}x{train[2]} pixels, {need} bytes of memory to "
                        f"read as features; {free} are available")
    parts = {split: (_read_idx(paths[images_name], heads[images_name]),
                     _read_idx(paths[labels_name], heads[labels_name]), paths[labels_name])
             for split, (images_name, labels_name) in IDX_FILES.items()}
    (xa, ya, la), (xb, yb, lb) = parts["train"], parts["test"]
    x = np.concatenate([xa.reshape(len(xa), -1), xb.reshape(len(xb), -1)]) / 255.0
    y = np.concatenate([ya, yb])
    n_train = len(ya)

    def row(i):
        return f"label {i} of {la}" if i < n_train else f"label {i - n_train} of {lb}"

    return _Source(x, y, spec.data_dir, "classification", n_own_test=len(yb), row=row)
