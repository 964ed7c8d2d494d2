"""scikit-learn estimators on gpunet: ``MLPClassifier`` and ``MLPRegressor``.

For code written against ``sklearn.neural_network``: ``fit(X, y)``, ``predict``,
``predict_proba``, ``score``, ``get_params`` / ``set_params``, and with them whatever in
scikit-learn takes an estimator (``Pipeline``, ``cross_val_score``, ``GridSearchCV``)::

    from gpunet import MLPClassifier
    clf = MLPClassifier(hidden=(256,), epochs=20, backend="auto").fit(X_train, y_train)
    clf.score(X_test, y_test), clf.predict_proba(X_test)

Training is ``gpunet.fit`` (the loop behind ``gpunet train``) with its defaults: one hidden
layer of 128 relu units, Adam at 1e-3 (SGD at 0.1, 0.01 for MLPRegressor), 30 epochs of
mini-batches of 32, the features standardised with the training rows' statistics (and a
regressor's targets: its predictions come back in the targets' units), on the GPU when CuPy
can run there. The
parameters carry ``gpunet train``'s names (``hidden``, ``lr``, ``epochs``, ``patience``...),
not scikit-learn's MLP's (``hidden_layer_sizes``, ``learning_rate_init``, ``max_iter``...), whose
meanings differ in places (its ``alpha`` is an L2 penalty on the loss, not a weight decay).

A classifier takes any labels ``numpy.unique`` can sort (strings, integers...), learns them as
``classes_`` and trains a softmax cross-entropy head with one output per class (two for a
binary task). Given multilabel targets instead, an indicator matrix (samples, labels) of 0/1
as scikit-learn's MLP takes them, it trains one logistic output per label (binary
cross-entropy on logits, ``gpunet.BCEWithLogitsLoss``): ``classes_`` is then 0..labels-1,
``predict`` gives the 0/1 matrix (each output over 0.5 probability; sparse where y was) and
``predict_proba`` each label's probability. A regressor takes one target column or several
(one column shaped (samples, 1) is one target: predictions (samples,), as scikit-learn's).

Training on: ``warm_start=True`` makes ``fit`` go on from the fitted network (and its
standardisation) for ``epochs`` more epochs, with a fresh optimiser, as scikit-learn's MLP does;
``partial_fit(X, y)`` takes one epoch over the rows given, keeping the optimiser's state
between calls (a classifier's first call names every class: ``partial_fit(X, y,
classes=...)``). A Ctrl-C stops either after the current step with
``gpunet.TrainingInterrupted`` (a ``KeyboardInterrupt``), the estimator holding the weights
reached and the epochs completed (``n_iter_``, ``history_``); SIGTERM is left to the program.

After ``fit``: ``model_`` (the ``gpunet.MLP``), ``history_`` (per-epoch metrics),
``loss_curve_`` and ``loss_`` (its last: each epoch's mean training loss, a regressor's on its
standardised targets, not scikit-learn's half squared error in the targets' units),
``n_iter_`` (epochs run), ``best_epoch_`` (with
``patience``: the epoch whose
weights were kept), ``n_features_in_`` (and ``feature_names_in_`` for a DataFrame), and
scikit-learn's MLP attributes read off them: ``coefs_`` and ``intercepts_`` (its (inputs,
outputs) layout; with ``standardize``, of a network that reads standardised features and, a
regressor's, outputs standardised targets: see ``coefs_``), ``n_layers_``, ``n_outputs_``,
``out_activation_``, ``best_loss_``, ``validation_scores_`` and ``best_validation_score_`` (the
score of the epoch whose weights are kept: ``best_epoch_``'s with ``patience``, else the
last's; weighted where ``fit`` was given ``sample_weight``, as scikit-learn's).

Keeping a fitted estimator: ``est.save(path)`` writes a gpunet checkpoint (an ``.npz`` of plain
arrays and a JSON header, written atomically; loading it never runs code) and
``MLPClassifier.load(path)`` reads it back; ``gpunet predict --checkpoint path`` takes it too,
and ``gpunet evaluate`` reports its loss as the objective it trained on (the run's loss is
recorded as ``gpunet train`` records it).
It also pickles (``joblib.dump``), as plain host arrays rebuilt on the backend its ``backend``
parameter picks where it is unpickled, for scikit-learn's tools that copy estimators that way;
a pickle runs code when it is loaded, so keep files in the checkpoint format. Either way, one
saved or pickled with backend="cupy" comes back on numpy, with a RuntimeWarning, where CuPy
cannot run (its ``backend`` parameter kept: ``set_params(backend=...)`` before fitting again).
"""

from __future__ import annotations

import functools
import numbers
import os
import sys
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .checkpoint import load_checkpoint, save_checkpoint
from .data import Dataset, Standardizer, check_multilabels, check_sample_weight, make_dataset
from .errors import BackendUnavailableError, CheckpointError, ConfigError
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, MSELoss, loss_settings
from .model import MLP, as_inputs
from .optim import get_optimizer, optimizer_kwargs
from .schedules import SCHEDULES, Schedule, schedule_options
from .train import MONITORS, History, TrainingInterrupted, fit

#: rows per forward pass when predicting
PREDICT_BATCH = 4096


def _as_before_on_error(method):
    """``fit`` or ``partial_fit`` that, where it raises an error (a bad parameter found once
    the data were read, a loss that diverged while training on), leaves the estimator as it
    was: its attributes, and the fitted network's weights and running statistics and its
    optimiser's state, which training on changes in place, put back (in place: a static step
    keeps its buffers). A fitted one keeps answering as fitted rather than with what the failed
    call had begun to set. A Ctrl-C (``TrainingInterrupted``) keeps what it trained."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        before = dict(vars(self))
        model, opt = before.get("model_"), before.get("_optimizer")
        arrays = {} if model is None else {**model.params, **model.buffers}
        weights = {k: v.copy() for k, v in arrays.items()}  # (on the device: no transfer)
        state = None if opt is None else (opt.steps, opt.lr, {
            k: {s: a.copy() for s, a in slots.items()} for k, slots in opt.state.items()})
        dropout_step = getattr(model, "dropout_step", 0)
        try:
            return method(self, *args, **kwargs)
        except Exception:
            vars(self).clear()
            vars(self).update(before)
            for k, v in weights.items():
                arrays[k][...] = v
            if model is not None:
                model.dropout_step = dropout_step
            if state is not None:
                opt.steps, opt.lr, slots = state
                for k in [k for k in opt.state if k not in slots]:  # (begun by the failed call)
                    del opt.state[k]
                for k, saved in slots.items():
                    for slot, a in saved.items():
                        opt.state[k][slot][...] = a
            raise

    return run


def _dates_or_durations(y) -> bool:
    """Whether targets ``y`` (an array, a list, a pandas Series, DataFrame or index) hold dates,
    times, durations or periods: datetime64 / timedelta64 columns, or objects of those kinds
    (Timestamps in a list, datetime.date, pandas' Period)."""
    import datetime

    dtypes = getattr(y, "dtypes", None)  # (a DataFrame's: a Series of them; a Series': one)
    if dtypes is None:
        dtypes = [getattr(y, "dtype", None)]
    elif not hasattr(dtypes, "__iter__"):
        dtypes = [dtypes]
    if any(getattr(d, "kind", "") in ("m", "M") for d in dtypes):
        return True
    if any(d is not None and str(d).startswith("period") for d in dtypes):
        return True
    if all(d is not None and getattr(d, "kind", "O") != "O" for d in dtypes):
        return False  # (numbers, text, categories: the values need no look)
    try:
        values = np.asarray(y, dtype=object).ravel()
    except (TypeError, ValueError):
        return False
    first = next((v for v in values if v is not None and v == v), None)  # (not None, NaN)
    return isinstance(first, (np.datetime64, np.timedelta64, datetime.date,
                              datetime.timedelta)) or type(first).__name__ == "Period"


def _target_names(y):
    """A pandas target's names (a Series' name, a DataFrame's columns), else None: kept in
    saved estimators, so that ``gpunet predict`` leaves such columns of its input out."""
    columns = getattr(y, "columns", None)
    if columns is not None:
        return [str(c) for c in columns]
    name = getattr(y, "name", None)
    return None if name is None else [str(name)]


class _GpunetMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, training, saving, pickling."""

    _task = None

    def __init__(self, hidden=(128,), *, activation="relu", dropout=0.0, norm=None, loss=None,
                 huber_delta=1.0, label_smoothing=0.0, optimizer="adam",
                 lr=None, momentum=0.0, nesterov=False, weight_decay=None, clip_grad_norm=None,
                 schedule="constant", step_size=10, gamma=0.1, warmup=0, epochs=30,
                 batch_size=32, patience=None,
                 monitor="val_loss", min_delta=0.0, val_fraction=None, standardize=True,
                 warm_start=False, backend="auto", dtype="float32", random_state=0, graph=True,
                 verbose=False):
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.norm = norm
        self.loss = loss
        self.huber_delta = huber_delta
        self.label_smoothing = label_smoothing
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.clip_grad_norm = clip_grad_norm
        self.schedule = schedule
        self.step_size = step_size
        self.gamma = gamma
        self.warmup = warmup
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.monitor = monitor
        self.min_delta = min_delta
        self.val_fraction = val_fraction
        self.standardize = standardize
        self.warm_start = warm_start
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

    #: the losses each kind of estimator trains with (scikit-learn's names), the default first
    _LOSSES = {"classification": ("log_loss",), "regression": ("squared_error", "huber")}

    def _loss(self):
        allowed = self._LOSSES[self._task]
        name = allowed[0] if self.loss is None else self.loss
        if name not in allowed:
            raise ConfigError(f"loss must be {' or '.join(allowed)} (or None) for an "
                              f"{type(self).__name__}, got {self.loss!r}")
        if self.label_smoothing and name != "log_loss":
            raise ConfigError(f"label_smoothing is a classifier's (log_loss), not "
                              f"{type(self).__name__}'s")
        if name == "log_loss" and self._multilabel:
            if self.label_smoothing:
                raise ConfigError("label_smoothing smooths one class a row (softmax "
                                  "cross-entropy); multilabel targets train a binary log loss "
                                  "per label, which it does not apply to")
            return BCEWithLogitsLoss()
        if name == "log_loss":
            return CrossEntropyLoss(label_smoothing=self.label_smoothing)  # (which checks it)
        if name == "squared_error":
            return MSELoss()
        return HuberLoss(delta=self.huber_delta)  # (which checks the delta)

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and 0 <= rs < 2**32:
            return int(rs)
        if rs is None or isinstance(rs, np.random.RandomState):
            return int(check_random_state(rs).randint(np.iinfo(np.int32).max))
        raise ConfigError(f"random_state must be None, an integer in [0, 2**32) or a "
                          f"numpy RandomState, got {rs!r}")

    def _optimizer_kwargs(self) -> dict:
        if self.clip_grad_norm is not None and not (
                isinstance(self.clip_grad_norm, numbers.Real)
                and not isinstance(self.clip_grad_norm, bool)
                and 0 < self.clip_grad_norm < float("inf")):
            raise ConfigError(f"clip_grad_norm must be a finite number > 0 (or None: no "
                              f"clipping), got {self.clip_grad_norm!r}")
        return optimizer_kwargs(self.optimizer, self.lr, self.weight_decay, self.momentum,
                                self.clip_grad_norm, self.nesterov, task=self._task,
                                ignore_momentum=True)  # (sgd's, as scikit-learn's MLP's)

    def _schedule(self, lr) -> Schedule:
        """The schedule of the parameters from ``lr``, as ``gpunet train`` builds it
        (``gamma``: step's factor, and plateau's)."""
        if not isinstance(self.schedule, str):
            raise ConfigError(f"schedule is a name here ({', '.join(SCHEDULES)}; its options "
                              f"are the estimator's: step_size, gamma, warmup), got "
                              f"{self.schedule!r}")
        if not (isinstance(self.epochs, numbers.Integral) and not isinstance(self.epochs, bool)
                and self.epochs >= 1):
            raise ConfigError(f"epochs must be a positive integer, got {self.epochs!r}")
        return Schedule(self.schedule, base_lr=lr, epochs=self.epochs, warmup=self.warmup,
                        **schedule_options(self.schedule, self.step_size, self.gamma))

    def _val_fraction(self) -> float:
        """Held-out rows: ``val_fraction`` if given, else 0.1 where early stopping or the
        plateau schedule needs them, else none."""
        if self.val_fraction is not None:
            return self.val_fraction
        return 0.1 if self.patience is not None or self.schedule == "plateau" else 0.0

    def _warm(self) -> bool:
        """Whether ``fit`` goes on from the fitted network (``warm_start`` and fitted)."""
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise ConfigError(f"warm_start must be True or False, got {self.warm_start!r}")
        return bool(self.warm_start) and hasattr(self, "model_")

    def _sample_weight(self, sample_weight, X):
        """Sample weights as float64 (n,), or None where there are none or all are equal (the
        unweighted loss, exactly); ValueError for anything else than finite weights >= 0."""
        if sample_weight is None:
            return None
        w = check_sample_weight(sample_weight, len(X), type(self).__name__)
        return None if np.all(w == w[0]) else w

    def _check_params(self) -> None:
        """ConfigError, in the estimator's words, for parameters that ``gpunet.fit`` would
        otherwise refuse in the command line's, or take as they should not be."""
        for name in ("standardize", "graph"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        v = self.verbose
        if not (isinstance(v, (bool, np.bool_)) or isinstance(v, numbers.Integral) and v >= 0):
            raise ConfigError(f"verbose must be True or False (or an integer >= 0, as "
                              f"scikit-learn's), got {v!r}")
        m = self.momentum  # (scikit-learn's range; gn.SGD takes torch's, any m >= 0)
        if not (isinstance(m, numbers.Real) and not isinstance(m, (bool, np.bool_))
                and 0 <= m <= 1):
            raise ConfigError(f"momentum must be a number in [0, 1], got {m!r}")
        kind = MONITORS.get(self.monitor) if isinstance(self.monitor, str) else None
        if kind not in (None, self._task):  # (an unknown name: fit names the valid ones)
            ok = [m for m, k in MONITORS.items() if k in (None, self._task)]
            who = {"classification": "classifier", "regression": "regressor"}
            raise ConfigError(f"{type(self).__name__} is a {who[self._task]}: monitor "
                              f"{', '.join(ok[:-1])} or {ok[-1]}, not {self.monitor} (a "
                              f"{who[kind]}'s)")

    def _fit(self, X, y, n_out, sample_weight=None):
        """Train on X (n, features) float64 and y (labels 0..k-1, or (n, outputs) targets):
        a new network, or with ``warm_start`` the fitted one for ``epochs`` more epochs."""
        self._check_params()
        warm = self._warm()
        self.__dict__.pop("_steps", None)  # (partial_fit's step: a fit trains with its own)
        hidden, seed, opt_kw = self._hidden_sizes(), self._seed(), self._optimizer_kwargs()
        fitted = (self.standardizer_, self.target_standardizer_) if warm else None
        data = make_dataset(type(self).__name__, X, y, self._task, seed=seed, test_fraction=0.0,
                            standardize=bool(self.standardize), standardizers=fitted,
                            val_fraction=self._val_fraction(),
                            sample_weight=self._sample_weight(sample_weight, X),
                            dtype=self.dtype)
        if 0 < len(data.x_val) < 2:  # (scikit-learn's check: a score of one row is no guide)
            raise ValueError(f"the validation set is too small: val_fraction="
                             f"{self._val_fraction():g} of {len(X)} rows holds out "
                             f"{len(data.x_val)}, and validation scores need at least 2; "
                             "increase val_fraction or the size of the data")
        if warm:
            model = self._fitted_model(hidden, n_out)
        else:
            model = MLP([X.shape[1], *hidden, n_out], activation=self.activation,
                        output="identity", backend=self.backend, seed=seed, dtype=self.dtype,
                        dropout=self.dropout, norm=self.norm)
        optimizer = get_optimizer(self.optimizer, model, **opt_kw)
        schedule = self._schedule(opt_kw["lr"])
        if warm:  # another run of epochs on the same weights: its own shuffling
            seed = int(np.random.SeedSequence([seed, self.n_iter_]).generate_state(1)[0])
        return self._train(model, data, optimizer, schedule, self.epochs, seed,
                           patience=self.patience, extend=warm)

    def _train(self, model, data, optimizer, schedule, epochs, seed, *, patience, extend,
               step_cache=None):
        """``gpunet.fit`` on ``data``; keeps what the fitted estimator holds. ``extend``: the
        epochs add to the fitted ones (their history goes on, numbered on); ``step_cache``:
        fit's (partial_fit's calls share their static step through it)."""
        loss_fn = self._loss()
        # verbose: a line an epoch on stderr (where there is one), and the bar where that is a
        # terminal (not in a log file)
        log = (lambda line: sys.stderr and print(line, file=sys.stderr)) if self.verbose \
            else None
        try:
            history = fit(model, data, loss_fn, optimizer, epochs=epochs,
                          batch_size=self.batch_size, seed=seed, patience=patience,
                          schedule=schedule, progress=None if self.verbose else False,
                          log=log, graph=self.graph, monitor=self.monitor,
                          min_delta=self.min_delta, step_cache=step_cache,
                          weighted_scores=True,  # (scikit-learn's validation scores)
                          handle_sigint="sigint")  # (a library call: SIGTERM is the
            # program's to handle; a notebook's Ctrl-C stops after the step)
        except TrainingInterrupted as stop:  # Ctrl-C: keep what was trained, then stop
            # (the weights of the last epoch done where it stopped between epochs, else of a
            # step within the next: no epoch's)
            self._run = self._run_settings(loss_fn, seed, patience)
            at_end = stop.epoch == len(stop.history)
            self._keep(model, data, optimizer, stop.history, extend,
                       len(stop.history) if at_end else None)
            where = str(stop).replace(" (nothing written: no checkpoint path given)", "")
            raise TrainingInterrupted(  # (in the estimator's words: it takes no checkpoint)
                f"{type(self).__name__}: training {where}; the estimator keeps the weights "
                f"reached and the {len(stop.history)} epoch(s) completed", stop.epoch, stop.step,
                stop.checkpoint, stop.signum, stop.history) from None
        # (with patience, fit put the best epoch's weights back)
        kept = _weights_epoch(patience, history.best_epoch, len(history))
        self._run = self._run_settings(loss_fn, seed, patience)
        return self._keep(model, data, optimizer, history, extend, kept)

    def _run_settings(self, loss_fn, seed, patience) -> dict:
        """What ``save`` records of the last training run, as ``gpunet train`` records its
        own (fit has checked them): ``gpunet evaluate`` reports the loss named there, the
        trained objective (a Huber loss's delta, label smoothing), and ``gpunet info`` shows
        it."""
        return {"batch_size": int(self.batch_size), "seed": int(seed),
                "patience": None if patience is None else int(patience),
                "monitor": self.monitor, "min_delta": float(self.min_delta),
                "loss": loss_settings(loss_fn)}

    def _keep(self, model, data, optimizer, history, extend, kept):
        """Hold the trained network and its run (``history``: fit's, of the epochs done;
        ``kept``: the epoch of it whose weights the network holds, or None: no epoch's)."""
        done = self.n_iter_ if extend else 0
        self._weights_epoch = done + kept if kept else None
        if extend:
            rows = History(self.history_ + [{**row, "epoch": done + row["epoch"]}
                                             for row in history])
            rows.test, rows.stopped_early = history.test, history.stopped_early
            rows.best_epoch = done + history.best_epoch if history.best_epoch else \
                history.best_epoch  # (0: no validation rows, no best epoch)
            history = rows
        self.model_ = model
        self._optimizer = optimizer
        self.history_ = history
        self.loss_curve_ = [row["train_loss"] for row in history]
        self.n_iter_ = len(history)
        self.best_epoch_ = history.best_epoch
        self.standardizer_ = data.standardizer
        self.target_standardizer_ = data.target_standardizer
        return self

    def _fitted_model(self, hidden, n_out):
        """The fitted network, to train on; ValueError where the parameters now describe
        another one."""
        model = self.model_
        changed = self._unlike(model, hidden, n_out)
        if changed:
            raise ValueError("training on from the fitted network (warm_start, partial_fit) "
                             "needs the network it fitted, but " + "; ".join(changed)
                             + ": fit afresh (warm_start=False)")
        return model

    def _unlike(self, model, hidden, n_out) -> list:
        """What of ``model`` the parameters describe otherwise, as "name now (fitted: then)"."""
        want = [model.sizes[0], *hidden, n_out]
        return [f"{name} {now!r} (fitted: {then!r})" for name, now, then in (
            ("layer sizes", want, list(model.sizes)), ("activation", self.activation,
                                                      model.activation),
            ("dropout", self.dropout, model.dropout), ("norm", self.norm, model.norm),
            ("dtype", np.dtype(self.dtype).name, np.dtype(model.dtype).name)) if now != then]

    def _partial_fit(self, X, y, n_out, sample_weight=None):
        """One epoch over X and y (prepared as for ``_fit``), from the fitted network and with
        its optimiser when there is one (a new network, standardised on these rows, when not)."""
        self._check_params()
        if self.schedule not in ("constant", "step"):
            raise ConfigError(f"partial_fit takes the constant or step schedule, not "
                              f"{self.schedule!r} (cosine needs the run's length, plateau "
                              "validation rows)")
        first = not hasattr(self, "model_")
        hidden, seed, opt_kw = self._hidden_sizes(), self._seed(), self._optimizer_kwargs()
        w = self._sample_weight(sample_weight, X)
        if first:
            model = MLP([X.shape[1], *hidden, n_out], activation=self.activation,
                        output="identity", backend=self.backend, seed=seed, dtype=self.dtype,
                        dropout=self.dropout, norm=self.norm)
            std = target = None
            if self.standardize:
                std = Standardizer.fit(X, weights=w)
                target = Standardizer.fit(y, weights=w) if self._task == "regression" else None
                _warn_constant_columns(X, type(self).__name__)
                if target is not None:  # (a regressor's: its outputs' scale for good)
                    _warn_constant_columns(y, type(self).__name__, "target")
            optimizer = get_optimizer(self.optimizer, model, **opt_kw)
            done = 0
        else:
            model = self._fitted_model(hidden, n_out)
            std, target = self.standardizer_, self.target_standardizer_
            optimizer = getattr(self, "_optimizer", None)
            fresh = get_optimizer(self.optimizer, model, **opt_kw)
            if optimizer is None or optimizer.name != self.optimizer:
                optimizer = fresh
            elif _settings(optimizer) != _settings(fresh):  # set_params since the last call:
                for k in _settings(fresh):  # taken on, its state kept (a torch param group's)
                    setattr(optimizer, k, getattr(fresh, k))
                self.__dict__.pop("_steps", None)  # (a GPU step captured the old ones)
            done = self.n_iter_
        x = X if std is None else std(X)
        y = y if target is None else target(y)
        data = Dataset(type(self).__name__, self._task, x, y, x[:0], y[:0], x[:0], y[:0],
                       n_out if self._task == "classification" else 0, std, None, target,
                       w_train=w)
        lr = self._schedule(opt_kw["lr"]).lr(done + 1)
        schedule = Schedule("constant", base_lr=lr, epochs=1)
        seed = int(np.random.SeedSequence([seed, done]).generate_state(1)[0])
        if first:
            self._steps = {}  # the static step partial_fit's calls share (not saved)
        return self._train(model, data, optimizer, schedule, 1, seed, patience=None,
                           extend=not first, step_cache=self.__dict__.setdefault("_steps", {}))

    def _outputs(self, X, each=None) -> np.ndarray:
        """The model's outputs for X as float64 host values (standardised like the training
        features first); with ``each``, ``each(block)`` of every block of them, joined (an
        argmax, a log-softmax: the outputs of every row are never held at once)."""
        check_is_fitted(self)
        X = _validated(self, X, reset=False, dtype=(np.float64, np.float32))
        model = self.model_  # (as_inputs refuses values beyond the model's dtype)
        result, bad, rows = None, 0, 0
        with np.errstate(over="ignore", invalid="ignore"):  # (outputs that overflow: below)
            for i in range(0, max(len(X), 1), PREDICT_BATCH):  # standardise, cast by batches
                part = X[i:i + PREDICT_BATCH]
                if self.standardizer_ is not None:
                    part = self.standardizer_(part)
                out = model.backend.to_host(model.predict(as_inputs(model, part, "X"))) \
                    .astype(np.float64)
                bad += int(np.count_nonzero(~np.isfinite(out).all(axis=1)))
                rows += len(out)
                out = out if each is None else each(out)
                if result is None:  # (filled block by block: no list of them joined after)
                    result = out if len(out) == len(X) else \
                        np.empty((len(X), *out.shape[1:]), dtype=out.dtype)
                if result is not out:
                    result[i:i + len(out)] = out
        if bad:  # (the command line refuses them; here they come back NaN, as NumPy's would)
            warnings.warn(f"{type(self).__name__}: the network's outputs are not finite (they "
                          f"overflow {model.dtype}) for {bad} of {rows} rows: their "
                          "predictions are NaN or meaningless (weights that overflow, or "
                          "inputs far outside the training data's range?)", RuntimeWarning,
                          stacklevel=_caller_level())
        return result

    # -- scikit-learn's MLP attributes, read off the fitted network ---------------------------

    @property
    def coefs_(self) -> list:
        """The weight matrices as scikit-learn's MLP lays them out, (inputs, outputs) per layer
        (``model_`` holds them (outputs, inputs), as torch does), as host float64 arrays. With
        ``standardize`` the first layer reads features standardised by ``standardizer_``
        ((X - mean) / std), and a regressor's last layer outputs standardised targets: its
        prediction is y_hat = z * ``target_standardizer_.std`` + ``target_standardizer_.mean``
        for the network's output z. A norm's scale and shift (and a batch norm's running
        statistics) are in ``model_.params`` and ``model_.buffers``, not here.

        Read-only copies: an edit in place (``coefs_[0][2] = 0``, as one prunes a
        scikit-learn MLP) would change nothing, so it raises; set weights with
        ``model_.load_state_dict`` (W_i = ``coefs_[i - 1].T``)."""
        check_is_fitted(self, "model_")
        state = self.model_.state_dict()
        return [_read_only(np.asarray(state[f"W{i}"], dtype=np.float64).T.copy())
                for i in range(1, len(self.model_.sizes))]

    @coefs_.setter
    def coefs_(self, value):
        _no_setting("coefs_", "W")

    @property
    def intercepts_(self) -> list:
        """The bias vectors, one per layer, as host float64 arrays (with ``standardize``, a
        regressor's last one in standardised target units, as ``coefs_`` says); read-only
        copies, as ``coefs_``'s."""
        check_is_fitted(self, "model_")
        state = self.model_.state_dict()
        return [_read_only(np.asarray(state[f"b{i}"], dtype=np.float64))
                for i in range(1, len(self.model_.sizes))]

    @intercepts_.setter
    def intercepts_(self, value):
        _no_setting("intercepts_", "b")

    @property
    def n_layers_(self) -> int:
        """Layers counted as scikit-learn does: the input, the hidden ones and the output."""
        check_is_fitted(self, "model_")
        return len(self.model_.sizes)

    @property
    def n_outputs_(self) -> int:
        check_is_fitted(self, "model_")
        return self.model_.sizes[-1]

    @property
    def loss_(self):
        """The last epoch's training loss (scikit-learn's MLP: the loss at its last
        iteration)."""
        check_is_fitted(self, "model_")
        return self.loss_curve_[-1] if self.loss_curve_ else None

    @property
    def best_loss_(self):
        """The lowest training loss of an epoch (None with validation rows, as scikit-learn's
        MLP with early stopping)."""
        check_is_fitted(self, "model_")
        if self.validation_scores_ is not None or not self.loss_curve_:
            return None
        return min(self.loss_curve_)

    @property
    def validation_scores_(self):
        """Each epoch's score on the validation rows (accuracy for a classifier, R^2 for a
        regressor), weighted by their ``sample_weight`` where ``fit`` was given one (as
        scikit-learn's), or None without validation rows."""
        check_is_fitted(self, "model_")
        key = "val_accuracy" if self._task == "classification" else "val_r2"
        scores = [row[key] for row in self.history_ if key in row]
        return scores or None

    @property
    def best_validation_score_(self):
        """The validation score (as ``validation_scores_``) of the epoch whose weights the
        estimator holds, as scikit-learn's MLP reports its kept model's: with ``patience``
        that of ``best_epoch_`` (the best by ``monitor``, which need not be the highest
        score), else the last epoch's; None without validation rows, where a Ctrl-C
        stopped within an epoch, or where the weights are a ``partial_fit``'s (which holds no
        rows out: its epochs have no validation score)."""
        if self.validation_scores_ is None:
            return None
        key = "val_accuracy" if self._task == "classification" else "val_r2"
        epoch = self._weights_epoch
        return next((row.get(key) for row in self.history_ if row["epoch"] == epoch), None)

    # -- saving: a gpunet checkpoint, no pickle ---------------------------------------------

    def save(self, path) -> None:
        """Write the fitted estimator to ``path`` (``.npz``) as a gpunet checkpoint: the
        weights, the optimiser's state (for ``partial_fit`` after ``load``), the
        standardisation, the parameters, the history, the last run's settings as ``gpunet
        train`` records them (its loss, which ``gpunet evaluate`` reports, batch size, seed)
        and (a classifier) the classes, as plain arrays and JSON; atomically (temporary
        file, fsync, rename). ConfigError where parameters changed since the fit describe
        another network (``hidden``, ``activation``, ``dropout``, ``norm``, ``dtype``): fit
        again, or set them back."""
        check_is_fitted(self)
        unlike = self._unlike(self.model_, self._hidden_sizes(), self.model_.sizes[-1])
        if unlike:  # (set_params since the fit: load would build another estimator)
            raise ConfigError("the parameters describe another network than the fitted one ("
                              + "; ".join(unlike) + "): fit again, or set them back, before "
                              "saving")
        params = self.get_params(deep=False)
        rs, arrays, generator = params["random_state"], {}, None
        if isinstance(rs, np.random.RandomState):  # (its state: a key array and 3 numbers,
            kind, keys, pos, has_gauss, cached = rs.get_state()  # as pickle keeps it, so that
            arrays["random_state/keys"] = np.asarray(keys, dtype=np.uint32)  # a later
            generator = {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),  # fit
                         "cached_gaussian": float(cached)}  # draws what it would have drawn)
            params["random_state"] = None
        params = {k: _plain(k, v) for k, v in params.items()}
        names = getattr(self, "feature_names_in_", None)
        info = {"class": type(self).__name__, "params": params,
                "multilabel": bool(getattr(self, "_multilabel", False)),
                "sparse_labels": bool(getattr(self, "_sparse_labels", False)),
                "feature_names": None if names is None else [str(n) for n in names],
                "target_names": getattr(self, "_target_names", None),
                "history": list(self.history_), "best_epoch": self.best_epoch_,
                "weights_epoch": self._weights_epoch,
                "stopped_early": bool(self.history_.stopped_early),
                "random_state": generator}
        classes = self._saved_classes()
        if classes is not None:  # load gives back classes_ of the dtype fit made (object)
            info["classes_dtype"] = "object" if self.classes_.dtype.kind == "O" else "array"
        if self._task == "regression":
            info["single_target"] = bool(self._single_target)
        extra = {"estimator": info, "task": self._task, "multilabel": info["multilabel"],
                 "n_classes": len(getattr(self, "classes_", ()))}
        run = getattr(self, "_run", None)  # (None: fitted by a gpunet that kept no record)
        if run is not None:  # the run as gpunet train records one (the loss, for evaluate)
            extra["training"] = {**run, "epochs": self.n_iter_, "state": {
                "epoch": self.n_iter_, "step": 0, "history": info["history"],
                "best_epoch": self.best_epoch_ or 0, "stopped_early": info["stopped_early"],
                "finished": True}}
        save_checkpoint(path, self.model_, getattr(self, "_optimizer", None),
                        epoch=self.n_iter_, standardizer=self.standardizer_,
                        target_standardizer=self.target_standardizer_, classes=classes,
                        extra=extra, arrays=arrays)

    @classmethod
    def load(cls, path, *, backend=None):
        """The estimator ``save`` wrote to ``path``, fitted, its model on ``backend`` (default:
        the saved ``backend`` parameter, "auto" unless it was set; where that is "cupy" and
        CuPy cannot run here, the numpy backend, with a RuntimeWarning, as unpickling does:
        the parameter stays, so set_params(backend=...) before fitting again; a ``backend``
        given that cannot run here raises BackendUnavailableError). Never unpickles anything;
        CheckpointError for a file that holds no saved estimator of this class, or one whose
        network, classes and standardisations disagree (naming what); parameters that
        describe another network than the saved one (changed before a save of an earlier
        version) are set to the network's, with a warning."""
        ckpt = load_checkpoint(path)
        ckpt.check_sections(path)
        info = ckpt.extra.get("estimator")
        if not isinstance(info, dict) or info.get("class") != cls.__name__:
            what = info.get("class") if isinstance(info, dict) else None
            raise CheckpointError(f"{path!r} holds no saved {cls.__name__}"
                                  + (f" (it holds an {what})" if what else
                                     " (save one with its save method)"))
        try:
            return cls._restored(ckpt, info, backend)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, CheckpointError) and os.fspath(path) not in str(e):
                raise CheckpointError(f"{os.fspath(path)}: {e}") from None
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
        for k, v in params.items():  # (what fit would meet only later, as a TypeError)
            text = isinstance(known[k], str)
            if k == "hidden" and isinstance(v, tuple) and all(
                    isinstance(n, int) and not isinstance(n, bool) for n in v):
                continue
            if text and not isinstance(v, str) or isinstance(v, (list, tuple, dict)):
                raise CheckpointError(f"the saved parameter {k}={v!r} is not " + (
                    "a list of layer widths" if k == "hidden" else "text" if text else
                    "a number, text or null"))
        if backend is not None:
            params["backend"] = backend
        generator = info.get("random_state")
        if generator is not None:  # a RandomState's, where it was one: as it was left
            keys = ckpt.arrays["random_state/keys"]
            if keys.shape != (624,) or not 0 <= generator["pos"] <= 624:
                raise ValueError(f"its random_state holds {keys.shape[0]} keys and position "
                                 f"{generator['pos']}, not MT19937's 624 and 0 to 624")
            params["random_state"] = rs = np.random.RandomState()
            rs.set_state((generator["kind"], keys, generator["pos"], generator["has_gauss"],
                          generator["cached_gaussian"]))
        est = cls(**params)
        est.model_ = ckpt.build_model(est.backend) if backend is not None else _model_here(
            ckpt.build_model, cls.__name__, "saved", est.backend, stacklevel=4)
        saved = ckpt.header.get("optimizer")
        if saved is not None:  # for partial_fit to go on with it
            est._optimizer = _rebuilt_optimizer({**saved, "state": ckpt.optimizer_state},
                                                est.model_)
        est.standardizer_ = ckpt.standardizer
        est.target_standardizer_ = ckpt.target_standardizer
        model, sizes = est.model_, est.model_.sizes  # (the standardisations' widths:
        # load_checkpoint checked them against the network's)
        unlike = est._unlike(model, est._hidden_sizes(), sizes[-1])
        if unlike:  # parameters changed after the fit (save took them before session 9):
            warnings.warn("the saved parameters describe another network than the saved one ("
                          + "; ".join(unlike) + "): they are set to the network's",
                          stacklevel=3)
            est.set_params(hidden=tuple(sizes[1:-1]), activation=model.activation,
                           dropout=model.dropout, norm=model.norm,
                           dtype=np.dtype(model.dtype).name)
        est.n_features_in_ = est.model_.sizes[0]
        if info.get("feature_names") is not None:
            est.feature_names_in_ = np.asarray(info["feature_names"], dtype=object)
        est._target_names = info.get("target_names")
        history = History(info.get("history", []))
        history.best_epoch, history.stopped_early = info.get("best_epoch"), \
            info.get("stopped_early", False)
        history.test = {}
        est.history_ = history
        est.loss_curve_ = [row["train_loss"] for row in history]
        est.n_iter_, est.best_epoch_ = len(history), history.best_epoch
        est._weights_epoch = info["weights_epoch"] if "weights_epoch" in info else \
            _weights_epoch(est.patience, est.best_epoch_, est.n_iter_)  # (an earlier save)
        training = ckpt.extra.get("training")
        if training is not None:  # (an earlier save has none)
            est._run = {k: v for k, v in training.items() if k not in ("epochs", "state")}
        est._restore(info, ckpt)
        return est

    def _saved_classes(self):
        return None

    def _restore(self, info, ckpt) -> None:
        pass

    # -- pickling: host arrays, rebuilt on the loading machine's backend ---------------------

    def __getstate__(self):
        state = dict(super().__getstate__())  # (object's is the instance's own dict)
        state.pop("_steps", None)  # device buffers and a graph: rebuilt where it is loaded
        model = state.get("model_")
        if model is not None:
            state["model_"] = {"config": model.config(), "params": model.state_dict()}
        optimizer = state.get("_optimizer")
        if optimizer is not None:
            state["_optimizer"] = optimizer.state_dict()
        state["_gpunet_version"] = _version()
        return state

    def __setstate__(self, state):
        state = dict(state)
        pickled_by = state.pop("_gpunet_version", "0.1.0 or earlier (unrecorded)")
        if pickled_by != _version():
            warnings.warn(
                f"{type(self).__name__} unpickled by gpunet {_version()} was pickled by gpunet "
                f"{pickled_by}: the defaults it left to gpunet (such as lr=None's rate) may "
                "differ, and so may its further training",
                InconsistentVersionWarning, stacklevel=2)
        saved = state.get("model_")
        if isinstance(saved, dict):
            model = _model_here(lambda b: MLP.from_config(saved["config"], b),
                                type(self).__name__, "pickled", state.get("backend"),
                                stacklevel=3)
            model.load_state_dict(saved["params"])
            state = {**state, "model_": model}
            if "_weights_epoch" not in state:  # (pickled by an earlier version)
                state["_weights_epoch"] = _weights_epoch(
                    state.get("patience"), state.get("best_epoch_"), state.get("n_iter_"))
            if isinstance(state.get("_optimizer"), dict):
                state["_optimizer"] = _rebuilt_optimizer(state["_optimizer"], model)
        super().__setstate__(state)


class InconsistentVersionWarning(UserWarning):
    """An estimator unpickled by another gpunet version than pickled it (as scikit-learn's
    warning of the same name)."""


def _version() -> str:
    from . import __version__

    return __version__


def _model_here(build, name, how, backend, stacklevel):
    """``build(backend)``, the network of an estimator ``how`` ("saved", "pickled") with that
    ``backend`` parameter; where that backend cannot run here (fitted on a GPU, loaded on a
    CPU host), ``build("numpy")`` with a RuntimeWarning: it predicts there, and fitting it
    again needs ``set_params(backend=...)``."""
    try:
        return build(backend)
    except BackendUnavailableError as e:
        warnings.warn(f"{name} was {how} with backend={backend!r}, which this process cannot "
                      f"use ({e}): its network is on the numpy backend here "
                      "(set_params(backend=...) before fitting it again)",
                      RuntimeWarning, stacklevel=stacklevel)
        return build("numpy")


def _caller_level() -> int:
    """warnings.warn's stacklevel, from its caller here, of the first frame outside gpunet:
    the user's line, through however many of the estimator's own calls (and scikit-learn's
    wrappers around them)."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(2), 2  # (the frame that calls warnings.warn)
    while frame is not None and (os.path.abspath(frame.f_code.co_filename).startswith(
            here + os.sep)
                                 or "sklearn" in frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


def _warn_constant_columns(X, name, what="feature") -> None:
    """A UserWarning where a first ``partial_fit`` chunk, whose rows fix the standardisation
    for every later call, holds features (``what``: or a regressor's targets) constant over
    it: those are left unscaled (only shifted), whatever the stream holds later."""
    constant = int(np.count_nonzero(np.ptp(X, axis=0) == 0)) if len(X) else 0
    if constant:
        fix = "or standardize=False after a StandardScaler.partial_fit" + (
            "" if what == "feature" else " of the features and the targets")
        warnings.warn(f"{name}.partial_fit: the standardisation is fitted on this first "
                      f"chunk's {len(X)} row(s), over which {constant} of {X.shape[1]} "
                      f"{what}(s) are constant, so they are only shifted, not scaled, for "
                      "every later chunk too: give a first chunk representative of the "
                      f"stream, {fix}", UserWarning, stacklevel=_caller_level())


def _weights_epoch(patience, best_epoch, n_iter):
    """The epoch whose weights a fit with ``patience`` and ``best_epoch``, of ``n_iter``
    epochs, ended with (for estimators saved or pickled before they recorded it)."""
    return best_epoch if patience is not None and best_epoch else n_iter


def _validated(est, X, *args, **kwargs):
    """scikit-learn's ``validate_data``, saying more for sparse features, which gpunet's dense
    layers do not take: a ColumnTransformer's output turns sparse with enough one-hot
    columns (its sparse_threshold), so that a pipeline fits or not by the categories' count."""
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise TypeError(f"{type(est).__name__} takes dense features, got a sparse matrix: "
                        "in a pipeline, ColumnTransformer(..., sparse_threshold=0) or "
                        "OneHotEncoder(sparse_output=False) keep them dense (or X.toarray())")
    return validate_data(est, X, *args, **kwargs)


def _takes_partial_fit(est) -> bool:
    """Whether ``est`` has a ``partial_fit`` (as scikit-learn's lbfgs MLP has none): not with
    a schedule over the run (cosine, plateau), which a stream of calls has no length or
    validation rows for (meta-estimators and scikit-learn's checks look for the method);
    the AttributeError says why."""
    if est.schedule in ("cosine", "plateau"):
        raise AttributeError(f"{type(est).__name__} has no partial_fit with the "
                             f"{est.schedule} schedule (cosine needs the run's length, "
                             "plateau validation rows): use the constant or step schedule")
    return True


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _no_setting(name, key):
    raise ConfigError(f"{name} is a copy of the network's weights, read off model_: set them "
                      f"with model_.load_state_dict({{..., '{key}1': ...}}) ("
                      + ("W_i is coefs_[i - 1].T" if key == "W" else "b_i is intercepts_[i - 1]")
                      + "; state_dict() gives the rest)")


def _plain(name, v):
    """A parameter's value as JSON takes it: NumPy scalars (a grid search's np.arange hands
    them out) as Python numbers, tuples and arrays as lists; ConfigError for anything else
    JSON has no form for."""
    if isinstance(v, np.generic):
        return v.item()
    if name == "dtype" and isinstance(v, (type, np.dtype)):  # (np.float64 for "float64")
        return np.dtype(v).name
    if isinstance(v, (tuple, list, np.ndarray)):
        return [_plain(name, e) for e in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise ConfigError(f"parameter {name}={v!r} has no JSON form to save: set it to a number, "
                      "text or a tuple of them")


def _is_multilabel(y) -> bool:
    """Whether ``y`` is an indicator matrix of labels (scikit-learn's "multilabel-indicator":
    (samples, labels) of 0/1, two or more columns)."""
    try:  # (y with NaN warns in a cast: validation says what is wrong with it)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return type_of_target(y) == "multilabel-indicator"
    except (TypeError, ValueError):  # not targets at all: validation says so
        return False


def _settings(optimizer) -> dict:
    """An optimiser's settings that partial_fit's calls may change (not its rate, which the
    schedule sets each call)."""
    return {k: getattr(optimizer, k) for k in ("weight_decay", "clip_norm", "momentum",
                                                "nesterov", "dampening", "betas", "eps")
            if hasattr(optimizer, k)}


def _rebuilt_optimizer(sd: dict, model):
    """The optimiser whose ``state_dict`` is ``sd``, on ``model``."""
    optimizer = get_optimizer(sd["name"], model)
    optimizer.load_state_dict(sd)
    return optimizer


def _listed(values) -> str:
    return ", ".join(map(repr, np.asarray(values).tolist()))


class MLPClassifier(ClassifierMixin, _GpunetMLP):
    """A multilayer perceptron classifier trained by gpunet: softmax cross-entropy on one
    output per class (see the module docstring for the parameters and attributes).

    Parameters:
        hidden: widths of the hidden layers, e.g. (256, 128); () for none (multinomial
            logistic regression).
        activation: relu, leaky_relu, sigmoid, tanh, gelu, gelu_tanh, silu or identity,
            between the layers.
        dropout: the rate at which hidden outputs are zeroed while training (0: none).
        norm: None, "layer" or "batch": a layer norm or a batch norm in each hidden layer,
            before the activation (see ``gpunet.MLP``).
        loss: a classifier's is "log_loss" (softmax cross-entropy; None is the same); a
            regressor's "squared_error" (None is the same) or "huber" (``gpunet.HuberLoss``:
            quadratic within ``huber_delta`` of the target, linear beyond; in standardised
            target units with ``standardize``). ``label_smoothing`` (a classifier): targets
            (1 - e) one-hot + e / classes, as torch's.
        optimizer, lr, momentum, nesterov, weight_decay: adam (lr 1e-3), adamw or sgd (lr 0.1;
            0.01 for the regressor, on whose squared error 0.1 often diverges); ``momentum``
            (in [0, 1], as scikit-learn's; sgd only; ignored otherwise, as scikit-learn's
            MLP ignores it unless solver="sgd", so that a grid over optimizers and momenta
            keeps every candidate)
            and with ``nesterov`` (sgd only; ignored otherwise) Nesterov's, as
            scikit-learn's ``nesterovs_momentum``; ``weight_decay`` None keeps the optimiser's
            own default (0, or 0.01 for adamw).
        clip_grad_norm: scale each step's gradients down to a 2-norm of at most this (None:
            never), as ``torch.nn.utils.clip_grad_norm_``.
        schedule: constant, step, cosine or plateau (over ``epochs``); ``step_size`` and
            ``gamma``: step's period (10 epochs) and factor (0.1), ``gamma`` also plateau's
            (once more than 5 epochs in a row bring no better validation loss), as
            ``--step-size`` and ``--gamma``; ``warmup``: epochs of a linear ramp up to it
            (epoch e at e / (warmup + 1) of its rate).
        epochs, batch_size: epochs run (fewer with ``patience``), rows per step.
        patience: stop after that many epochs without a better validation loss and keep the
            best weights; the validation rows are ``val_fraction`` of the data (default 0.1
            then or with the plateau schedule, and none otherwise), stratified by class; a
            ValueError where that holds out fewer than 2 rows (as scikit-learn's MLP).
        monitor: what "better" means there: val_loss (default), val_accuracy (a classifier),
            val_r2 or val_mse (a regressor); scikit-learn's MLP goes by the score.
        min_delta: how much that figure must improve on the best so far for an epoch to
            count as better, and its weights to be kept (0: any improvement), as Keras's
            ``EarlyStopping(min_delta=)``; scikit-learn's ``tol`` only counts towards its
            patience.
        standardize: standardise the features with the training rows' mean and std.
        warm_start: ``fit`` goes on from the fitted network and its standardisation for
            ``epochs`` more epochs (with a new optimiser and schedule; the history goes on),
            as scikit-learn's ``warm_start``; the architecture and classes must stay. With
            ``patience``, each such fit's early stopping starts afresh (as Keras's; not
            scikit-learn's, which carries its best score across calls) and keeps its own
            best epoch, which may score worse than the weights it started from.
        backend, dtype: "auto" (CuPy where it runs; ``$GPUNET_BACKEND`` is the command
            line's default, not read here), "numpy" or "cupy"; float32 or float64.
        random_state: seeds the weights, the split and the shuffling (None: drawn afresh).
        graph: each full batch's step as one CUDA-graph replay on the GPU (fixed buffers on the
            CPU); False steps eagerly, with the same numbers (True or False).
        verbose: a line per epoch on stderr (and progress bars where stderr is a terminal);
            True or False, or an integer >= 0 as scikit-learn's (0: quiet).

    ``fit(X, y, sample_weight=w)`` weights each row's loss by w_i >= 0: every step minimises
    its batch's weighted mean loss (scikit-learn's and PyTorch's weighted mean), the feature
    standardisation uses weighted statistics, early stopping watches the weighted
    validation loss, and the validation scores (``validation_scores_``, the history's
    val_accuracy, val_mse and val_r2, which ``monitor`` may go by) are weighted as
    scikit-learn's with ``sample_weight``; a weight of k counts a row as k copies would
    (exactly so where one batch holds all rows). Equal weights are no weights (the
    unweighted fit, exactly).
    """

    _task = "classification"
    _multilabel = False  # (fit sets it: whether y was an indicator matrix of labels)
    _sparse_labels = False  # (and whether that matrix was a SciPy sparse one)

    @_as_before_on_error
    def fit(self, X, y, sample_weight=None):
        """Learn ``classes_`` and train on X (samples, features) and y (samples,) labels, or a
        multilabel indicator matrix (samples, labels) of 0/1; returns self. ``sample_weight`` (samples,): how much each row's loss counts (see the class
        docstring). With ``warm_start`` and fitted: ``epochs`` more epochs from the fitted
        network, on labels of the same classes."""
        warm = self._warm()
        self._target_names = _target_names(y)
        if _is_multilabel(y):
            sparse = hasattr(y, "toarray")
            X, y = self._multilabels(X, y, reset=not warm)
            if warm and not (self._multilabel and y.shape[1] == len(self.classes_)):
                raise ValueError(f"warm_start needs targets of the {len(self.classes_)} "
                                 f"{'labels' if self._multilabel else 'classes'} fitted "
                                 f"before; y has {y.shape[1]} label columns")
            self.classes_, self._multilabel = np.arange(y.shape[1]), True
            if not warm:  # (as scikit-learn's, whose label binariser warm_start keeps)
                self._sparse_labels = sparse
            return self._fit(X, y, y.shape[1], sample_weight)
        X, y = _validated(self, X, y, dtype=(np.float64, np.float32), reset=not warm)
        check_classification_targets(y)
        classes, labels = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            only = classes[0].item() if isinstance(classes[0], np.generic) else classes[0]
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the "
                             f"data, got 1 class ({only!r})")
        if warm and (self._multilabel or not np.array_equal(classes, self.classes_)):
            raise ValueError(f"warm_start needs labels of the classes fitted before "
                             f"({_listed(self.classes_)}{', multilabel' * self._multilabel}); "
                             f"y has {_listed(classes)}")
        self.classes_, self._multilabel = classes, False
        return self._fit(X, labels.reshape(-1).astype(np.int64), len(classes), sample_weight)

    @available_if(_takes_partial_fit)
    @_as_before_on_error
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X (samples, features) and y (samples,), in mini-batches of
        ``batch_size``, from the fitted network (``sample_weight`` as in ``fit``); returns
        self.

        The first call (on an unfitted estimator) needs ``classes``, every label the stream
        will hold: a chunk need not show them all. It sets up the network, the optimiser and,
        with ``standardize``, the standardisation from its own rows, which later calls keep (a
        UserWarning where a feature is constant over them: only shifted, never scaled): give
        it rows representative of the stream (or standardise upstream, e.g. with
        ``StandardScaler.partial_fit``, and set ``standardize=False``). Later calls go on with
        the optimiser's state (Adam's moments, momentum) and the step schedule by call count;
        no rows are held out, so ``patience`` does not apply. Optimiser settings changed with
        ``set_params`` between calls (``momentum``, ``weight_decay``, ``clip_grad_norm``...)
        apply from the next call, its state kept; another ``optimizer`` starts afresh.
        """
        first = not hasattr(self, "model_")
        if _is_multilabel(y):  # (classes, if given, must be the labels 0..k-1)
            sparse, names = hasattr(y, "toarray"), _target_names(y)
            X, y = self._multilabels(X, y, reset=first)
            k = y.shape[1]
            if not first and not (self._multilabel and k == len(self.classes_)):
                raise ValueError(f"y has {k} label columns; the first call fitted "
                                 f"{_listed(self.classes_)}"
                                 f"{' as labels' if self._multilabel else ' as classes'}")
            if classes is not None and not np.array_equal(np.unique(classes), np.arange(k)):
                raise ValueError(f"multilabel targets of {k} columns have the classes 0..{k - 1}"
                                 f"; got classes={_listed(np.unique(classes))}")
            if first:
                self._target_names = names
                self.classes_, self._multilabel = np.arange(k), True
                self._sparse_labels = sparse
            return self._partial_fit(X, y, k, sample_weight)
        if not first and self._multilabel:
            raise ValueError(f"the first call fitted multilabel targets of "
                             f"{len(self.classes_)} columns; y holds one label a row")
        if first:
            self._target_names = _target_names(y)
            if classes is None:
                raise ValueError("the first call to partial_fit needs classes=, every class "
                                 "label the data will hold")
            classes = np.unique(classes)
            if classes.dtype.kind == "f" and not np.isfinite(classes).all():
                raise ValueError(f"classes must be finite labels, got {_listed(classes)}")
            if len(classes) < 2:
                raise ValueError(f"{type(self).__name__} needs at least 2 classes, got "
                                 f"classes={_listed(classes)}")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={_listed(np.unique(classes))} are not those of the "
                             f"first call ({_listed(self.classes_)})")
        X, y = _validated(self, X, y, dtype=(np.float64, np.float32), reset=first)
        check_classification_targets(y)
        known = self.classes_ if not first else classes
        labels = np.searchsorted(known, y)
        unknown = (labels >= len(known)) | (known[np.minimum(labels, len(known) - 1)] != y)
        if unknown.any():
            raise ValueError(f"y holds labels not in classes ({_listed(np.unique(y[unknown]))}); "
                             f"the classes are {_listed(known)}")
        if first:
            self.classes_, self._multilabel = classes, False
        return self._partial_fit(X, labels.astype(np.int64), len(known), sample_weight)

    def _multilabels(self, X, y, reset):
        """X as float32 or float64 (others as float64) and multilabel targets as int64
        (samples, labels) of 0/1."""
        if hasattr(y, "toarray"):  # a sparse indicator matrix
            y = y.toarray()
        X, y = _validated(self, X, y, dtype=(np.float64, np.float32), multi_output=True,
                             reset=reset)
        return X, check_multilabels(y, f"{type(self).__name__}: y")[0]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (samples, classes), columns in the order of ``classes_``; for
        multilabel targets each label's probability (samples, labels), each in [0, 1] on its
        own (a row's need not sum to 1)."""
        out = self.predict_log_proba(X)
        return np.exp(out, out=out)  # (in place: one array of the result's size)

    def predict_log_proba(self, X) -> np.ndarray:
        """log of ``predict_proba``, computed from the logits without underflow."""
        def log_proba(logits):  # (a block of rows at a time)
            if self._multilabel:  # log sigmoid(z) = -log(1 + e^-z)
                return -np.logaddexp(0.0, -logits)
            logits -= logits.max(axis=1, keepdims=True)
            return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

        return self._outputs(X, log_proba)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row, from ``classes_``; for multilabel targets the
        0/1 matrix (samples, labels): 1 where the label's logit is above 0 (its probability
        above 0.5), a SciPy CSR matrix where ``fit`` was given a sparse one (as scikit-learn's
        MLP)."""
        if self._multilabel:  # (_outputs raises NotFittedError before classes_ does)
            labels = self._outputs(X, lambda logits: (logits > 0).astype(np.int64))
            if self._sparse_labels:
                from scipy.sparse import csr_matrix

                return csr_matrix(labels)
            return labels
        best = self._outputs(X, lambda logits: logits.argmax(axis=1))
        return self.classes_[best]

    @property
    def out_activation_(self) -> str:
        """What turns the last layer's outputs into predictions, in scikit-learn's words:
        softmax, or logistic for multilabel targets."""
        return "logistic" if self._multilabel else "softmax"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = not self.label_smoothing  # (smoothing: one class
        # a row, so multilabel targets are refused)
        return tags

    def _saved_classes(self):
        classes = self.classes_
        if classes.dtype.kind == "O":  # e.g. strings from a DataFrame: as a text array
            classes = np.asarray(classes.tolist())
            if classes.dtype.kind not in "biufU":
                kinds = sorted({type(c).__name__ for c in self.classes_})
                raise ConfigError("only numeric or text class labels can be saved without "
                                  f"pickle; these are {', '.join(kinds)}")
            if classes.tolist() != self.classes_.tolist():
                raise ConfigError("these class labels cannot be saved as they are: as a text "
                                  "array they would load back changed (a NUL character, "
                                  "'\\x00', at the end of a label is dropped)")
        return classes

    def _restore(self, info, ckpt) -> None:
        classes = ckpt.classes
        if classes is None or len(classes) != self.model_.sizes[-1]:
            raise CheckpointError("the saved classifier's classes do not match its outputs")
        if info.get("classes_dtype") == "object":  # labels fit found in an object array
            classes = np.array(classes.tolist(), dtype=object)
        self.classes_ = classes
        self._multilabel = bool(info.get("multilabel", False))
        self._sparse_labels = bool(info.get("sparse_labels", False))


class MLPRegressor(RegressorMixin, _GpunetMLP):
    """A multilayer perceptron regressor trained by gpunet on mean squared error (or the Huber
    loss, ``loss="huber"``), with an
    identity output per target column (see ``MLPClassifier`` for the parameters; here
    ``standardize`` also standardises the targets, and predictions are in their units)."""

    _task = "regression"

    @_as_before_on_error
    def fit(self, X, y, sample_weight=None):
        """Train on X (samples, features) and y (samples,) or (samples, targets); returns self.
        ``sample_weight`` as in ``MLPClassifier.fit``. With ``warm_start`` and fitted:
        ``epochs`` more epochs from the fitted network."""
        self._target_names = _target_names(y)
        X, y = self._targets(X, y, reset=not self._warm())
        return self._fit(X, y, y.shape[1], sample_weight)

    @available_if(_takes_partial_fit)
    @_as_before_on_error
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X and y, in mini-batches of ``batch_size``, from the fitted network
        (``sample_weight`` as in ``fit``); returns self. The first call (on an unfitted estimator) sets up the network, the
        optimiser and, with ``standardize``, the standardisation of features and targets from
        its own rows, which later calls keep (see ``MLPClassifier.partial_fit``; a target
        constant over them warns as a feature does: only shifted, never scaled)."""
        if not hasattr(self, "model_"):
            self._target_names = _target_names(y)
        X, y = self._targets(X, y, reset=not hasattr(self, "model_"))
        return self._partial_fit(X, y, y.shape[1], sample_weight)

    def _targets(self, X, y, reset):
        """X as float32 or float64 (others as float64), y as float64 (samples, targets); a
        fitted regressor's target count must stay. One column of targets (samples, 1), such
        as a one-column DataFrame, is one target (samples,), with scikit-learn's
        DataConversionWarning, as its MLP takes it."""
        if _dates_or_durations(y):  # (as their counts of the unit: ns since 1970, say)
            raise ValueError("y holds dates or durations (datetime64 / timedelta64): convert "
                             "them to numbers first, in the unit to predict in (e.g. days "
                             "since the first: (y - y.min()).dt.days for a Series)")
        X, y = _validated(self, X, y, dtype=(np.float64, np.float32), multi_output=True,
                             y_numeric=True, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        y = np.asarray(y, dtype=np.float64)
        outputs = 1 if y.ndim == 1 else y.shape[1]
        if not reset and outputs != self.model_.sizes[-1]:
            raise ValueError(f"y has {outputs} target column(s); the fitted network predicts "
                             f"{self.model_.sizes[-1]}")
        self._single_target = y.ndim == 1
        return X, y.reshape(len(y), -1)

    def predict(self, X) -> np.ndarray:
        """Predicted targets: (samples,) for a model fitted on one target (y of (samples,) or
        (samples, 1)), else (samples, targets); in the targets' units."""
        out = self._outputs(X)
        if self.target_standardizer_ is not None:
            out = self.target_standardizer_.inverse(out)
        return out[:, 0] if self._single_target else out

    out_activation_ = "identity"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _restore(self, info, ckpt) -> None:
        self._single_target = bool(info.get("single_target", False))
