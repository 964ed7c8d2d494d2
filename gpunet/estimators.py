"""scikit-learn estimators on gpunet: ``MLPClassifier`` and ``MLPRegressor``.

For code written against ``sklearn.neural_network``: ``fit(X, y)``, ``predict``,
``predict_proba``, ``score``, ``get_params`` / ``set_params``, and with them whatever in
scikit-learn takes an estimator (``Pipeline``, ``cross_val_score``, ``GridSearchCV``)::

    from gpunet import MLPClassifier
    clf = MLPClassifier(hidden=(256,), epochs=20, backend="auto").fit(X_train, y_train)
    clf.score(X_test, y_test), clf.predict_proba(X_test)

Training is ``gpunet.fit`` (the loop behind ``gpunet train``) with its defaults: one hidden
layer of 128 relu units, Adam at 1e-3 (SGD at 0.1), 30 epochs of mini-batches of 32, the
features standardised with the training rows' statistics (and a regressor's targets: its
predictions come back in the targets' units), on the GPU when CuPy can run there. The
parameters carry ``gpunet train``'s names (``hidden``, ``lr``, ``epochs``, ``patience``...),
not scikit-learn's MLP's (``hidden_layer_sizes``, ``learning_rate_init``, ``max_iter``...), whose
meanings differ in places (its ``alpha`` is an L2 penalty on the loss, not a weight decay).

A classifier takes any labels ``numpy.unique`` can sort (strings, integers...), learns them as
``classes_`` and trains a softmax cross-entropy head with one output per class (two for a
binary task). A regressor takes one target column or several.

After ``fit``: ``model_`` (the ``gpunet.MLP``), ``history_`` (per-epoch metrics),
``loss_curve_``, ``n_iter_`` (epochs run), ``best_epoch_`` (with ``patience``: the epoch whose
weights were kept), ``n_features_in_`` (and ``feature_names_in_`` for a DataFrame).

Keeping a fitted estimator: ``est.save(path)`` writes a gpunet checkpoint (an ``.npz`` of plain
arrays and a JSON header, written atomically; loading it never runs code) and
``MLPClassifier.load(path)`` reads it back; ``gpunet predict --checkpoint path`` takes it too.
It also pickles (``joblib.dump``), as plain host arrays rebuilt on the backend its ``backend``
parameter picks where it is unpickled, for scikit-learn's tools that copy estimators that way;
a pickle runs code when it is loaded, so keep files in the checkpoint format.
"""

from __future__ import annotations

import numbers
import sys

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .checkpoint import load_checkpoint, save_checkpoint
from .data import make_dataset
from .errors import CheckpointError, ConfigError
from .losses import CrossEntropyLoss, MSELoss
from .model import MLP
from .optim import DEFAULT_LR, get_optimizer
from .schedules import Schedule
from .train import History, fit

#: rows per forward pass when predicting
PREDICT_BATCH = 4096


class _GpunetMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, training, saving, pickling."""

    _task = None

    def __init__(self, hidden=(128,), *, activation="relu", optimizer="adam", lr=None,
                 momentum=0.0, weight_decay=None, schedule="constant", epochs=30, batch_size=32,
                 patience=None, val_fraction=None, standardize=True, backend="auto",
                 dtype="float32", random_state=0, graph=True, verbose=False):
        self.hidden = hidden
        self.activation = activation
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.val_fraction = val_fraction
        self.standardize = standardize
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.graph = graph
        self.verbose = verbose

    # -- fitting ------------------------------------------------------------------------------

    def _hidden_sizes(self) -> list:
        h = self.hidden
        if isinstance(h, numbers.Integral) and not isinstance(h, bool):
            h = (h,)
        try:
            sizes = [] if h is None else list(h)
        except TypeError:
            sizes = None
        if sizes is None or isinstance(h, (str, bytes)) or not all(
                isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0
                for n in sizes):
            raise ConfigError(f"hidden must be a tuple of positive layer widths (or one width), "
                              f"got {self.hidden!r}")
        return [int(n) for n in sizes]

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and 0 <= rs < 2**32:
            return int(rs)
        if rs is None or isinstance(rs, np.random.RandomState):
            return int(check_random_state(rs).randint(np.iinfo(np.int32).max))
        raise ConfigError(f"random_state must be None, an integer in [0, 2**32) or a "
                          f"numpy RandomState, got {rs!r}")

    def _optimizer_kwargs(self) -> dict:
        if self.optimizer not in DEFAULT_LR:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; valid names: "
                              f"{', '.join(DEFAULT_LR)}")
        kw = {"lr": DEFAULT_LR[self.optimizer] if self.lr is None else self.lr}
        if self.weight_decay is not None:
            kw["weight_decay"] = self.weight_decay
        if self.optimizer == "sgd":
            kw["momentum"] = self.momentum
        elif self.momentum:
            raise ConfigError(f"momentum applies to the sgd optimizer, not {self.optimizer}")
        return kw

    def _val_fraction(self) -> float:
        """Held-out rows: ``val_fraction`` if given, else 0.1 where early stopping or the
        plateau schedule needs them, else none."""
        if self.val_fraction is not None:
            return self.val_fraction
        return 0.1 if self.patience is not None or self.schedule == "plateau" else 0.0

    def _fit(self, X, y, n_out):
        """Train on X (n, features) float64 and y (labels 0..k-1, or (n, outputs) targets)."""
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ConfigError(f"standardize must be True or False, got {self.standardize!r}")
        hidden, seed, opt_kw = self._hidden_sizes(), self._seed(), self._optimizer_kwargs()
        data = make_dataset(type(self).__name__, X, y, self._task, seed=seed, test_fraction=0.0,
                            standardize=bool(self.standardize),
                            val_fraction=self._val_fraction())
        model = MLP([X.shape[1], *hidden, n_out], activation=self.activation,
                    output="identity", backend=self.backend, seed=seed, dtype=self.dtype)
        optimizer = get_optimizer(self.optimizer, model, **opt_kw)
        loss_fn = CrossEntropyLoss() if self._task == "classification" else MSELoss()
        schedule = Schedule(self.schedule, base_lr=opt_kw["lr"], epochs=self.epochs)
        log = (lambda line: print(line, file=sys.stderr)) if self.verbose else None
        history = fit(model, data, loss_fn, optimizer, epochs=self.epochs,
                      batch_size=self.batch_size, seed=seed, patience=self.patience,
                      schedule=schedule, progress=bool(self.verbose), log=log,
                      handle_sigint=False, graph=self.graph)
        self.model_ = model
        self.history_ = history
        self.loss_curve_ = [row["train_loss"] for row in history]
        self.n_iter_ = len(history)
        self.best_epoch_ = history.best_epoch
        self.standardizer_ = data.standardizer
        self.target_standardizer_ = data.target_standardizer
        return self

    def _outputs(self, X) -> np.ndarray:
        """The model's outputs for X as float64 host values (standardised like the training
        features first)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        if self.standardizer_ is not None:
            X = self.standardizer_(X)
        model = self.model_
        out = model.predict(model.backend.asarray(X, dtype=model.dtype),
                            batch_size=PREDICT_BATCH)
        return model.backend.to_host(out).astype(np.float64)

    # -- saving: a gpunet checkpoint, no pickle ---------------------------------------------

    def save(self, path) -> None:
        """Write the fitted estimator to ``path`` (``.npz``) as a gpunet checkpoint: the
        weights, the standardisation, the parameters, the history and (a classifier) the
        classes, as plain arrays and JSON; atomically (temporary file, fsync, rename)."""
        check_is_fitted(self)
        params = self.get_params(deep=False)
        if not (params["random_state"] is None or isinstance(params["random_state"], int)):
            params["random_state"] = None  # a RandomState has no JSON form; it has been used
        names = getattr(self, "feature_names_in_", None)
        info = {"class": type(self).__name__, "params": params,
                "feature_names": None if names is None else [str(n) for n in names],
                "history": list(self.history_), "best_epoch": self.best_epoch_,
                "stopped_early": bool(self.history_.stopped_early)}
        classes = self._saved_classes()
        if self._task == "regression":
            info["single_target"] = bool(self._single_target)
        save_checkpoint(path, self.model_, epoch=self.n_iter_, standardizer=self.standardizer_,
                        target_standardizer=self.target_standardizer_, classes=classes,
                        extra={"estimator": info, "task": self._task,
                               "n_classes": len(getattr(self, "classes_", ()))})

    @classmethod
    def load(cls, path, *, backend=None):
        """The estimator ``save`` wrote to ``path``, fitted, its model on ``backend`` (default:
        the saved ``backend`` parameter, "auto" unless it was set). Never unpickles anything;
        CheckpointError for a file that holds no saved estimator of this class."""
        ckpt = load_checkpoint(path)
        info = ckpt.extra.get("estimator")
        if not isinstance(info, dict) or info.get("class") != cls.__name__:
            what = info.get("class") if isinstance(info, dict) else None
            raise CheckpointError(f"{path!r} holds no saved {cls.__name__}"
                                  + (f" (it holds an {what})" if what else
                                     " (save one with its save method)"))
        try:
            return cls._restored(ckpt, info, backend)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, (ConfigError, CheckpointError)):
                raise
            raise CheckpointError(f"{path!r} has a malformed estimator section "
                                  f"({type(e).__name__}: {e})") from None

    @classmethod
    def _restored(cls, ckpt, info, backend):
        known = cls().get_params(deep=False)
        params = {k: v for k, v in info["params"].items() if k in known}
        if isinstance(params.get("hidden"), list):
            params["hidden"] = tuple(params["hidden"])
        if backend is not None:
            params["backend"] = backend
        est = cls(**params)
        est.model_ = ckpt.build_model(est.backend)
        est.standardizer_ = ckpt.standardizer
        est.target_standardizer_ = ckpt.target_standardizer
        est.n_features_in_ = est.model_.sizes[0]
        if info.get("feature_names") is not None:
            est.feature_names_in_ = np.asarray(info["feature_names"], dtype=object)
        history = History(info.get("history", []))
        history.best_epoch, history.stopped_early = info.get("best_epoch"), \
            info.get("stopped_early", False)
        history.test = {}
        est.history_ = history
        est.loss_curve_ = [row["train_loss"] for row in history]
        est.n_iter_, est.best_epoch_ = len(history), history.best_epoch
        est._restore(info, ckpt)
        return est

    def _saved_classes(self):
        return None

    def _restore(self, info, ckpt) -> None:
        pass

    # -- pickling: host arrays, rebuilt on the loading machine's backend ---------------------

    def __getstate__(self):
        state = dict(super().__getstate__())  # (object's is the instance's own dict)
        model = state.get("model_")
        if model is not None:
            state["model_"] = {"config": model.config(), "params": model.state_dict()}
        return state

    def __setstate__(self, state):
        saved = state.get("model_")
        if isinstance(saved, dict):
            c = saved["config"]
            model = MLP(c["sizes"], activation=c["activation"], output=c["output"],
                        backend=state.get("backend"), dtype=c["dtype"], slope=c["slope"])
            model.load_state_dict(saved["params"])
            state = {**state, "model_": model}
        super().__setstate__(state)


class MLPClassifier(ClassifierMixin, _GpunetMLP):
    """A multilayer perceptron classifier trained by gpunet: softmax cross-entropy on one
    output per class (see the module docstring for the parameters and attributes).

    Parameters:
        hidden: widths of the hidden layers, e.g. (256, 128); () for none (multinomial
            logistic regression).
        activation: relu, leaky_relu, sigmoid, tanh or identity, between the layers.
        optimizer, lr, momentum, weight_decay: adam (lr 1e-3), adamw or sgd (lr 0.1; momentum);
            ``weight_decay`` None keeps the optimiser's own default (0, or 0.01 for adamw).
        schedule: constant, step, cosine or plateau (over ``epochs``).
        epochs, batch_size: epochs run (fewer with ``patience``), rows per step.
        patience: stop after that many epochs without a better validation loss and keep the
            best weights; the validation rows are ``val_fraction`` of the data (default 0.1
            then, and none otherwise), stratified by class.
        standardize: standardise the features with the training rows' mean and std.
        backend, dtype: "auto" (CuPy where it runs), "numpy" or "cupy"; float32 or float64.
        random_state: seeds the weights, the split and the shuffling (None: drawn afresh).
        graph: each full batch's step as one CUDA-graph replay on the GPU (fixed buffers on the
            CPU); False steps eagerly, with the same numbers.
        verbose: a line per epoch (and progress bars) on stderr.
    """

    _task = "classification"

    def fit(self, X, y):
        """Learn ``classes_`` and train on X (samples, features) and y (samples,); returns
        self."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, labels = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the "
                             f"data, got 1 class ({self.classes_[0]!r})")
        return self._fit(X, labels.reshape(-1).astype(np.int64), len(self.classes_))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (samples, classes), columns in the order of ``classes_``."""
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X) -> np.ndarray:
        """log of ``predict_proba``, computed from the logits without underflow."""
        logits = self._outputs(X)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row, from ``classes_``."""
        best = self._outputs(X).argmax(axis=1)  # (raises NotFittedError before classes_ does)
        return self.classes_[best]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags

    def _saved_classes(self):
        classes = self.classes_
        if classes.dtype.kind == "O":  # e.g. strings from a DataFrame: as a text array
            classes = np.asarray(classes.tolist())
            if classes.dtype.kind not in "biufU":
                kinds = sorted({type(c).__name__ for c in self.classes_})
                raise ConfigError("only numeric or text class labels can be saved without "
                                  f"pickle; these are {', '.join(kinds)}")
        return classes

    def _restore(self, info, ckpt) -> None:
        classes = ckpt.classes
        if classes is None or len(classes) != self.model_.sizes[-1]:
            raise CheckpointError("the saved classifier's classes do not match its outputs")
        self.classes_ = classes


class MLPRegressor(RegressorMixin, _GpunetMLP):
    """A multilayer perceptron regressor trained by gpunet on mean squared error, with an
    identity output per target column (see ``MLPClassifier`` for the parameters; here
    ``standardize`` also standardises the targets, and predictions are in their units)."""

    _task = "regression"

    def fit(self, X, y):
        """Train on X (samples, features) and y (samples,) or (samples, targets); returns self."""
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        self._single_target = y.ndim == 1
        y = y.reshape(len(y), -1)
        return self._fit(X, y, y.shape[1])

    def predict(self, X) -> np.ndarray:
        """Predicted targets: (samples,) for a model fitted on one column given as (samples,),
        else (samples, targets); in the targets' units."""
        out = self._outputs(X)
        if self.target_standardizer_ is not None:
            out = self.target_standardizer_.inverse(out)
        return out[:, 0] if self._single_target else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _restore(self, info, ckpt) -> None:
        self._single_target = bool(info.get("single_target", False))
