"""gpunet: multilayer perceptrons with hand-derived backward passes, on NumPy or CuPy.

    import gpunet as gn
    model = gn.MLP([784, 256, 10], activation="relu", backend="auto", seed=0)
    loss_fn, opt = gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1)
    value = model.train_step(x, y, loss_fn, opt)
"""

from .activations import ACTIVATIONS, HIDDEN_ACTIVATIONS
from .backends import BACKEND_NAMES, Backend, backend_of, cupy_status, get_backend
from .errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    DataError,
    GpunetError,
    ShapeError,
)
from .gradcheck import GradcheckResult, gradcheck
from .gradcheck import combinations as gradcheck_combinations
from .losses import (LOSSES, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, Loss,
                     MSELoss, get_loss)
from .data import DataSpec, Dataset, load_data
from .model import MLP
from .optim import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, get_optimizer
from .schedules import Schedule
from .step import StaticStep
from .train import History, TrainingDiverged, TrainingInterrupted, fit

__version__ = "0.1.0"


def __getattr__(name):
    # The scikit-learn estimators import sklearn.base (~0.5 s): only when asked for.
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ACTIVATIONS",
    "BACKEND_NAMES",
    "HIDDEN_ACTIVATIONS",
    "LOSSES",
    "OPTIMIZERS",
    "Adam",
    "AdamW",
    "BCELoss",
    "BCEWithLogitsLoss",
    "Backend",
    "BackendUnavailableError",
    "CheckpointError",
    "ConfigError",
    "CrossEntropyLoss",
    "DataSpec",
    "Dataset",
    "DataError",
    "GpunetError",
    "GradcheckResult",
    "History",
    "Loss",
    "MLP",
    "MLPClassifier",
    "MLPRegressor",
    "MSELoss",
    "HuberLoss",
    "Optimizer",
    "SGD",
    "Schedule",
    "ShapeError",
    "StaticStep",
    "TrainingDiverged",
    "TrainingInterrupted",
    "backend_of",
    "cupy_status",
    "fit",
    "get_backend",
    "get_loss",
    "get_optimizer",
    "gradcheck",
    "gradcheck_combinations",
    "load_data",
]
