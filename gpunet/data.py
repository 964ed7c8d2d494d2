"""Datasets: scikit-learn's bundled sets (no download), split and standardised.

A ``Dataset`` holds host NumPy arrays. Features are standardised with the mean and standard
deviation of the training split only; the same statistics are stored in checkpoints and
reapplied at evaluation time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, DataError

# name -> (sklearn loader name, task)
BUNDLED = {
    "digits": ("load_digits", "classification"),
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}
TASKS = ("classification", "regression")


@dataclass
class Standardizer:
    """x -> (x - mean) / std, with statistics from the training split (std 0 becomes 1)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardizer":
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 0, std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


@dataclass
class Dataset:
    """A train/test split of one dataset. ``y`` holds int64 labels for classification and
    float targets shaped (n, outputs) for regression."""

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int = 0
    standardizer: Standardizer | None = None
    split: dict | None = None  # how the split was made: seed and test_fraction

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task == "classification" else self.y_train.shape[1]


def _read_bundled(name: str):
    import sklearn.datasets

    loader, task = BUNDLED[name]
    bunch = getattr(sklearn.datasets, loader)()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target), task


def check_labels(y: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer class labels 0..K-1 as int64, and K; DataError for anything else."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"class labels must be one-dimensional, got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError("class labels must be integers, got non-integer values")
    elif y.dtype.kind not in "iu":
        raise DataError(f"class labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"class labels must be >= 0, got {y.min()}")
    return y, int(y.max()) + 1 if y.size else 0


def make_dataset(name, x, y, task, seed=0, test_fraction=0.2, standardize=True) -> Dataset:
    """Split (x, y) into train and test with a seeded shuffle (stratified for classification)
    and standardise with training statistics."""
    from sklearn.model_selection import train_test_split

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; valid names: {', '.join(TASKS)}")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test fraction must lie in (0, 1), got {test_fraction!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"features must be a 2-D array (samples, features), got shape {x.shape}")
    if len(x) != len(y):
        raise DataError(f"{len(x)} feature rows but {len(y)} targets")
    n_classes = 0
    if task == "classification":
        y, n_classes = check_labels(y)
        stratify = y
    else:
        y = np.asarray(y, dtype=np.float64)
        y = y.reshape(len(y), -1)
        stratify = None
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    std = Standardizer.fit(x_tr) if standardize else None
    if std is not None:
        x_tr, x_te = std(x_tr), std(x_te)
    return Dataset(name, task, x_tr, y_tr, x_te, y_te, n_classes, std,
                   {"seed": int(seed), "test_fraction": float(test_fraction)})


def load_dataset(name: str, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """One of the bundled datasets (``BUNDLED``), split and standardised."""
    if name not in BUNDLED:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(BUNDLED)}")
    x, y, task = _read_bundled(name)
    return make_dataset(name, x, y, task, seed=seed, test_fraction=test_fraction)
