"""Loss functions. Each is called as ``value, dJdy_hat = loss(y_hat, y)``.

``value`` is a 0-d array on the model's backend (a NumPy scalar on the CPU; converting it to a Python float synchronises
the device, so the training loop does that only when it reports), and ``dJdy_hat`` has the shape
and dtype of ``y_hat``.

``reduction="mean"`` (the default, as in PyTorch) averages over every element (MSE, Huber, BCE) or
every sample (cross-entropy); ``"sum"`` adds them, which is the seed's per-sample form
summed over the batch: its gradient grows with the batch size (seed 1.4f).

``loss(y_hat, y, weight=w)`` weights the samples: ``w`` (batch,) holds a non-negative weight
per row, and the per-row loss J_i (the row's sum of elementwise terms, or its cross-entropy)
counts w_i times: ``"sum"`` gives sum_i w_i J_i; ``"mean"`` gives sum_i w_i J_i / sum_i w_i,
divided by the elements per row for the elementwise losses (weights of ones give the mean
above; a batch whose weights are all 0 gives 0 and a zero gradient). This is PyTorch's and
scikit-learn's weighted mean.
"""

from __future__ import annotations

import weakref

import numpy as np

from .backends import backend_of
from .errors import ConfigError, ShapeError, own_parameters


def check_loss_output(loss_fn, output: str) -> None:
    """ConfigError where ``loss_fn`` does not take what a model of ``output`` gives: BCELoss
    on logits (which it would take for probabilities, and train into NaN) or on a softmax (its
    outputs are no probability each), a logits loss on probabilities (softmax or the sigmoid
    applied twice: the wrong loss)."""
    # (a softmax under BCELoss was taken, then scored and predicted as if its probabilities
    # were logits: every label positive)
    if isinstance(loss_fn, BCELoss) and output == "softmax":
        raise ConfigError(
            "BCELoss takes a probability for each output, but the model's softmax output "
            "couples them (they sum to 1; over one output it is 1 whatever the input): give "
            "the model output='sigmoid', or for one class of several train logits with "
            "CrossEntropyLoss")
    if isinstance(loss_fn, BCELoss) and output != "sigmoid":
        raise ConfigError(f"BCELoss takes probabilities, but the model's output is {output}: "
                          "give the model output='sigmoid', or train its logits with "
                          "BCEWithLogitsLoss")
    if isinstance(loss_fn, (CrossEntropyLoss, BCEWithLogitsLoss)) \
            and output in ("sigmoid", "softmax"):
        applies = "softmax" if isinstance(loss_fn, CrossEntropyLoss) else "the sigmoid"
        raise ConfigError(f"{type(loss_fn).__name__} takes logits and applies {applies} "
                          f"itself, but the model's output is {output} already (applied "
                          "twice, it trains on the wrong loss): give the model "
                          "output='identity'"
                          + (", or train its probabilities with BCELoss"
                             if isinstance(loss_fn, BCEWithLogitsLoss) else ""))

REDUCTIONS = ("mean", "sum")

ONE_OUTPUT = (": over a single output cross-entropy is 0 whatever the logit (the softmax of one "
              "value is 1): give the model one output per class (2 for two classes), or train "
              "one logit with BCEWithLogitsLoss")

_outputs = weakref.WeakValueDictionary()  # id(a model's last training output) -> the model
_trained = weakref.WeakValueDictionary()  # id(any training output still alive) -> it
# id(a dJ/dy_hat a loss made from a training output) -> it; and (id(model), id(its last
# output), id(dJ/dy_hat)) -> it for those made from a model's last output
_gradients = weakref.WeakValueDictionary()
_fresh = weakref.WeakValueDictionary()


def note_output(model, y_hat) -> None:
    """Remember ``y_hat`` as ``model``'s last training output (its cache holds it), so that a
    loss given it as its target, with a y_hat of another dtype that is no model's output (data:
    the arguments swapped, as ``gpunet.twolayer``'s losses take them, (y, y_hat)), says so
    instead of training uphill, and so that ``backward`` can tell a dJ/dy_hat made from an
    earlier output (``note_gradient``)."""
    old = getattr(model, "_output_id", None)
    if old is not None and _outputs.get(old) is model:
        del _outputs[old]
    _outputs[id(y_hat)] = model
    _trained[id(y_hat)] = y_hat
    model._output_id = id(y_hat)


def note_gradient(y_hat, grad) -> None:
    """Remember that a loss made ``grad`` from ``y_hat`` where y_hat is a training output (a
    model's last one, or an earlier one), for ``gradient_of_last_output``. Weak references
    only: nothing is kept alive, and an id is looked up only with its array alive."""
    if _trained.get(id(y_hat)) is not y_hat:
        return
    _gradients[id(grad)] = grad
    model = _outputs.get(id(y_hat))
    if model is not None and _trained_output(y_hat):  # (its model's last output)
        _fresh[id(model), id(y_hat), id(grad)] = grad


def gradient_of_last_output(model, grad) -> bool:
    """False where ``grad`` is a dJ/dy_hat that a loss made from a training output other than
    ``model``'s last one (an earlier pass's, or another model's), which ``backward`` would
    pair with that last one's cache; True otherwise (any other array: not known, not
    refused)."""
    if _gradients.get(id(grad)) is not grad:
        return True
    return _fresh.get((id(model), getattr(model, "_output_id", None), id(grad))) is grad


def made_from_last_output(model, grad) -> bool:
    """Whether a loss made ``grad`` from ``model``'s last training output (so that an
    eval-mode pass since, which keeps no cache, changes nothing for it)."""
    return _fresh.get((id(model), getattr(model, "_output_id", None), id(grad))) is grad


def _trained_output(a) -> bool:
    """Whether ``a`` is the output of a model's last training pass (its cache's)."""
    model = _outputs.get(id(a))
    layers = getattr(model, "layers", None)
    return bool(getattr(model, "_cached", False) and layers and layers[-1].y is a)


def _swapped(y_hat, y) -> bool:
    """Whether y, not y_hat, is a model's training output, y_hat of another dtype and no
    model's: data in y_hat's place (a student's output, even transformed, against a teacher's
    is no swap: the same dtype)."""
    return y is not None and getattr(y_hat, "dtype", None) != getattr(y, "dtype", None) \
        and _trained_output(y) and not _trained_output(y_hat)


class Loss:
    """A loss: ``value, dJ/dy_hat = loss(y_hat, y, weight=None)`` (see the module docstring
    for the reductions and the weights); ``config()`` gives its constructor's arguments."""

    name = "loss"
    #: torch's constructor arguments that this loss does not take, each with the gpunet way
    torch_options: dict = {}

    def __new__(cls, *args, **kwargs):
        own = own_parameters(cls, __name__)  # (a user's subclass takes the options it names)
        for option in kwargs.keys() - own & cls.torch_options.keys():
            raise ConfigError(f"{cls.__name__} takes no {option}= (torch's): "
                              f"{cls.torch_options[option]}")
        if own:  # (positional arguments are its own __init__'s to take)
            return super().__new__(cls)
        if len(args) == 1 and getattr(args[0], "ndim", 0) == 1 and "weight" in \
                cls.torch_options:  # gn.CrossEntropyLoss(class_weight): torch's first argument
            raise ConfigError(f"{cls.__name__} takes no weight (torch's first argument): "
                              f"{cls.torch_options['weight']}")
        if any(getattr(a, "ndim", 0) for a in args):  # gn.MSELoss(y_hat, y), as F.mse_loss
            # (arrays; NumPy scalars, 0-d, are options: HuberLoss("mean", np.float64(2)))
            raise ConfigError(f"{cls.__name__}(...) takes its options; build the loss, then "
                              f"call it: {cls.__name__}()(y_hat, y)")
        return super().__new__(cls)

    def __init__(self, reduction: str = "mean"):
        if not isinstance(reduction, str) or reduction not in REDUCTIONS:
            raise ConfigError(
                f"unknown reduction {reduction!r}; valid names: {', '.join(REDUCTIONS)}"
            )
        self.reduction = reduction

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"

    def config(self) -> dict:
        """The constructor's arguments (``get_loss(name, **config)`` makes this loss again)."""
        return {"reduction": self.reduction}

    def _backend(self, y_hat, y=None):
        """y_hat's backend; ConfigError unless y_hat is a float array of one (a model's
        output), such as a list or an integer array, or where y is the model's output and
        y_hat not (the arguments swapped)."""
        swapped = f"the arguments swapped? {type(self).__name__}()(y_hat, y) takes the " \
            "model's output first, as torch's losses (gpunet.twolayer's take (y, y_hat))"
        if type(y_hat).__name__ != "ndarray" or getattr(y_hat, "dtype", None) is None \
                or y_hat.dtype.kind != "f":
            what = f"an array of dtype {y_hat.dtype}" if hasattr(y_hat, "dtype") else \
                f"a {type(y_hat).__name__}"
            raise ConfigError(f"{type(self).__name__}: y_hat must be a float array (a model's "
                              f"output, numpy or cupy), got {what}"
                              + (f": {swapped}" if _swapped(y_hat, y) else ""))
        if _swapped(y_hat, y):
            raise ConfigError(f"{type(self).__name__}: y is the output of the model's last "
                              f"training pass, y_hat is not: {swapped} (a target that is "
                              "another pass's output: give a copy, or predict()'s)")
        return backend_of(y_hat)

    def _prepare(self, y_hat, y):
        """Put y on y_hat's backend with y_hat's dtype and check the shapes agree."""
        backend = self._backend(y_hat, y)
        y = backend.asarray(y)
        if y.dtype.kind not in "biuf":
            raise ConfigError(f"{type(self).__name__}: targets must be real numbers, "
                              f"got dtype {y.dtype}")
        y = y.astype(y_hat.dtype, copy=False)
        if y.shape != y_hat.shape:
            raise ShapeError(
                f"{type(self).__name__}: target shape {tuple(y.shape)} does not match "
                f"the output shape {tuple(y_hat.shape)}"
            )
        return backend, y

    def _scale(self, n: int) -> float:
        if self.reduction == "mean" and n == 0:
            raise ShapeError(f"{type(self).__name__}: the mean over an empty batch is undefined")
        return 1.0 / n if self.reduction == "mean" else 1.0

    #: whether the loss is a mean over every element (MSE, Huber, BCE) rather than over rows
    elementwise = True

    def _row_scale(self, y_hat, weight):
        """The factor of each row's terms, as a (batch, 1) column in y_hat's dtype: w_i for
        ``"sum"``, w_i / (sum(w) * elements per row) for ``"mean"`` (0 where sum(w) is 0;
        elements per row: 1 for a loss over rows)."""
        backend = backend_of(y_hat)
        xp = backend.xp
        n = y_hat.shape[0]
        if type(weight).__module__.partition(".")[0] != "cupy" \
                and not hasattr(weight, "__cuda_array_interface__"):  # on the host: checked
            host = np.asarray(weight)  # for free (an array, a list, a torch tensor, a Series)
            if host.dtype.kind in "biuf" and host.size:
                bad = host[~np.isfinite(host) | (host < 0)]
                if bad.size:
                    raise ConfigError(f"{type(self).__name__}: sample weights must be finite "
                                      f"numbers >= 0, got {float(bad[0]):g}")
                top = float(np.finfo(y_hat.dtype).max)
                if float(host.sum(dtype=np.float64)) > top:  # (each one too, then)
                    raise ConfigError(f"{type(self).__name__}: sample weights summing to "
                                      f"{float(host.sum(dtype=np.float64)):g} overflow "
                                      f"{y_hat.dtype} (at most {top:g}): scale them down")
        w = backend.asarray(weight)
        if w.shape != (n,):
            raise ShapeError(f"{type(self).__name__}: sample weights shaped {tuple(w.shape)} do "
                             f"not match {n} rows; expected ({n},)")
        if w.dtype.kind not in "biuf":
            raise ConfigError(f"{type(self).__name__}: sample weights must be real numbers, "
                              f"got dtype {w.dtype}")
        w = w.astype(y_hat.dtype, copy=False)
        if self.reduction == "mean":
            self._scale(n)  # (an empty batch has no mean)
            total = w.sum() * (y_hat.size // n if self.elementwise else 1)
            w = w / xp.where(total > 0, total, 1)  # no read-back: the device keeps going
        return w.reshape(n, 1)

    def __call__(self, y_hat, y, weight=None):
        value, grad = self._compute(y_hat, y, weight)
        note_gradient(y_hat, grad)  # (backward refuses it once another pass replaced y_hat's)
        return value, grad

    def _compute(self, y_hat, y, weight):
        raise NotImplementedError


class MSELoss(Loss):
    """J = scale * sum (y_hat - y)^2, dJ/dy_hat = 2 * scale * (y_hat - y) (seed 1.2d)."""

    name = "mse"

    def _compute(self, y_hat, y, weight):
        backend, y = self._prepare(y_hat, y)
        diff = y_hat - y
        if weight is not None:
            r = self._row_scale(y_hat, weight)
            return (diff * diff * r).sum(), diff * (2 * r)
        scale = self._scale(y_hat.size)
        value = (diff * diff).sum() * scale
        return value, diff * (2 * scale)


class HuberLoss(Loss):
    """``torch.nn.HuberLoss(delta)``: quadratic near the target, linear beyond ``delta``.

    With d = y_hat - y per element: l = d^2 / 2 where |d| <= delta, else delta (|d| - delta/2);
    J = scale * sum l, dJ/dy_hat = scale * clip(d, -delta, delta). Large errors pull with a
    force of at most delta, so a few outlying targets cannot dominate the fit as under MSE.
    """

    name = "huber"
    torch_options = {"beta": "that is SmoothL1Loss's, and SmoothL1Loss(beta=b) is "
                             "HuberLoss(delta=b) divided by b (its value and dJ/dy_hat); delta "
                             "is torch.nn.HuberLoss's"}

    def __init__(self, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction)
        if isinstance(delta, bool) or not isinstance(delta, (int, float, np.integer,
                                                             np.floating)) \
                or not np.isfinite(delta) or delta <= 0:
            raise ConfigError(f"HuberLoss: delta must be a finite number > 0, got {delta!r}")
        self.delta = float(delta)

    def config(self) -> dict:
        return {"reduction": self.reduction, "delta": self.delta}

    def _compute(self, y_hat, y, weight):
        backend, y = self._prepare(y_hat, y)
        xp, delta = backend.xp, self.delta
        d = y_hat - y
        a = xp.abs(d)
        terms = xp.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))
        grad = xp.clip(d, -delta, delta)
        if weight is not None:
            r = self._row_scale(y_hat, weight)
            return (terms * r).sum(), (grad * r).astype(y_hat.dtype, copy=False)
        scale = self._scale(y_hat.size)
        return terms.sum() * scale, (grad * scale).astype(y_hat.dtype, copy=False)


#: torch's weight= of the binary losses, the gpunet way
ROW_WEIGHTS = ("pass them at call time, one a row: loss(y_hat, y, weight=w) (with "
               "reduction='sum', torch's weight=w[:, None]; 'mean' divides by the weights' sum "
               "where torch's divides by the elements)")


class BCELoss(Loss):
    """Binary cross-entropy on probabilities p = y_hat in [0, 1].

    J = -scale * sum [y log p + (1 - y) log(1 - p)], each log clamped at -100 as PyTorch does;
    dJ/dp = scale * (p - y) / max(p (1 - p), 1e-12), PyTorch's guarded form of its derivative:
    the derivative of J itself where p (1 - p) > 1e-12, but not beyond, where p is within
    about 1e-12 of 0 or 1 (after a sigmoid, |z| past about 27 in float64, or z past 17 in
    float32, where 1 - p rounds to 0 first):
    there it is PyTorch's number, not the slope of J, and the chain through the sigmoid
    no longer gives sigmoid(z) - y. Saturated logits train with BCEWithLogitsLoss, whose
    gradient is exact for any z.

    A p outside [0, 1] (NaN too) is a ConfigError, as torch's RuntimeError: logits given
    where probabilities belong. ``BCELoss(check_range=False)`` skips that check (on a GPU it
    reads a flag back from the device each call); ``fit`` does, having checked the model's
    output.
    """

    name = "bce"
    check_range = True  # (the default, for a BCELoss pickled before it was an argument)
    torch_options = {"weight": ROW_WEIGHTS}

    def __init__(self, reduction: str = "mean", check_range: bool = True):
        super().__init__(reduction)
        if not isinstance(check_range, (bool, np.bool_)):
            raise ConfigError(f"BCELoss: check_range must be True or False, got "
                              f"{check_range!r}")
        self.check_range = bool(check_range)

    def config(self) -> dict:
        return {"reduction": self.reduction, "check_range": self.check_range}

    def _compute(self, y_hat, y, weight):
        backend, y = self._prepare(y_hat, y)
        xp = backend.xp
        if self.check_range and y_hat.size and not bool(xp.all((y_hat >= 0) & (y_hat <= 1))):
            if bool(xp.isnan(y_hat).any()):
                raise ConfigError("BCELoss: the probabilities are NaN (a model that diverged? "
                                  "a lower learning rate)")
            raise ConfigError(
                f"BCELoss takes probabilities in [0, 1], got values from {float(y_hat.min()):g} "
                f"to {float(y_hat.max()):g}: give the model output='sigmoid', or train logits "
                "with BCEWithLogitsLoss")
        scale = self._scale(y_hat.size) if weight is None else self._row_scale(y_hat, weight)
        with np.errstate(divide="ignore"):
            log_p = xp.maximum(xp.log(y_hat), -100)
            log_1mp = xp.maximum(xp.log(1 - y_hat), -100)
        terms = y * log_p + (1 - y) * log_1mp
        value = -(terms * scale).sum() if weight is not None else -terms.sum() * scale
        grad = (y_hat - y) / xp.maximum(y_hat * (1 - y_hat), 1e-12) * scale
        return value, grad.astype(y_hat.dtype, copy=False)


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits z (sigmoid folded in, stable for any z).

    J = scale * sum [max(z, 0) - z y + log(1 + e^-|z|)], dJ/dz = scale * (sigmoid(z) - y).
    """

    name = "bce_logits"
    torch_options = {
        "weight": ROW_WEIGHTS,
        "pos_weight": "with one output and 0/1 targets, torch's pos_weight=p is "
                      "BCEWithLogitsLoss('sum')(z, y, weight=np.where(y[:, 0] == 1, p, 1.0)), "
                      "and its 'mean' that divided by the number of rows; per column, over "
                      "several outputs, it is not offered"}

    def _compute(self, y_hat, y, weight):
        backend, y = self._prepare(y_hat, y)
        xp = backend.xp
        terms = xp.maximum(y_hat, 0) - y_hat * y + xp.log1p(xp.exp(-xp.abs(y_hat)))
        if weight is not None:
            r = self._row_scale(y_hat, weight)
            return (terms * r).sum(), (backend.act_forward("sigmoid", y_hat) - y) * r
        scale = self._scale(y_hat.size)
        grad = (backend.act_forward("sigmoid", y_hat) - y) * scale
        return terms.sum() * scale, grad


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits z (B, C), through a stable log-sum-exp.

    Targets are integer class labels (B,) or class probabilities / one-hot rows (B, C).
    With labels: J_i = logsumexp(z_i) - z_i[y_i]; with probabilities t:
    J_i = -sum_j t_ij log softmax(z_i)_j. dJ/dz = scale * (softmax(z) * sum_j t_ij - t)
    (for labels, sum_j t_ij = 1). ``scale`` is 1/B for ``"mean"``.

    ``check_labels`` verifies that integer labels lie in [0, C) (on a GPU this reads two
    numbers back from the device; the training loop validates its data once and turns it off).

    ``label_smoothing`` = e in [0, 1], as torch's: the targets become t (1 - e) + e / C (a
    label c: the one-hot row of c so mixed), and the loss and its gradient are those of the
    probabilities branch on them.

    Class weights (torch's ``weight=``) are row weights here: ``loss(z, y,
    weight=class_weight[y])``. Without label smoothing that is torch's loss, sum_i w_{y_i}
    J_i / sum_i w_{y_i} for ``"mean"``. With it they differ: a row's weight w_i = w_{y_i}
    weights its whole smoothed loss, J = sum_i w_i [(1 - e) CE_i + (e / C) sum_c -log p_ic]
    / sum_i w_i, where torch weights the smoothing term class by class:
    [sum_i w_{y_i} (1 - e) CE_i + (e / C) sum_i sum_c w_c (-log p_ic)] / sum_i w_{y_i}
    (``tests/test_torch_losses.py`` checks both against torch).
    """

    name = "cross_entropy"
    elementwise = False
    torch_options = {
        "weight": "pass per-row weights at call time: loss(y_hat, y, weight=class_weight[y]) "
                  "(torch's class weights without label_smoothing; with it, see "
                  "CrossEntropyLoss's docstring)",
        "ignore_index": "give those rows weight 0 (keep = y != ignore_index; loss(y_hat, "
                        "np.where(keep, y, 0), weight=keep * 1.0): torch's mean over the rest)"}

    def __init__(self, reduction: str = "mean", check_labels: bool = True,
                 label_smoothing: float = 0.0):
        super().__init__(reduction)
        if isinstance(label_smoothing, bool) or not isinstance(
                label_smoothing, (int, float, np.integer, np.floating)) \
                or not 0 <= label_smoothing <= 1:
            raise ConfigError(f"CrossEntropyLoss: label_smoothing must be a number in [0, 1], "
                              f"got {label_smoothing!r}")
        self.check_labels = check_labels
        self.label_smoothing = float(label_smoothing)

    def config(self) -> dict:
        return {"reduction": self.reduction, "check_labels": self.check_labels,
                "label_smoothing": self.label_smoothing}

    def _compute(self, y_hat, y, weight):
        backend = self._backend(y_hat, y)
        xp = backend.xp
        if y_hat.ndim != 2:
            raise ShapeError(
                f"CrossEntropyLoss expects logits shaped (batch, classes), got {tuple(y_hat.shape)}"
            )
        n, c = y_hat.shape
        scale = self._scale(n) if weight is None else self._row_scale(y_hat, weight)
        y = backend.asarray(y)
        if y.dtype.kind in "iu":
            if y.shape != (n,):
                raise ShapeError(
                    f"CrossEntropyLoss: labels shaped {tuple(y.shape)} do not match "
                    f"{n} rows of logits; expected ({n},)"
                    + (": one-hot rows are y.argmax(1) as labels, or y as float "
                       "probabilities" if y.shape == (n, c) else ""))
            if self.check_labels and n and (int(y.min()) < 0 or int(y.max()) >= c):
                raise ConfigError(
                    f"CrossEntropyLoss: class labels must lie in [0, {c - 1}] for {c} outputs; "
                    f"got labels from {int(y.min())} to {int(y.max())}"
                    + (ONE_OUTPUT if c == 1 else ""))
            loss, grad = backend.softmax_cross_entropy(y_hat, y, 1.0 if weight is not None
                                                       else scale)
            if self.label_smoothing:
                w, extra = smoothing_terms(xp, y_hat, y, self.label_smoothing, xp.arange(c))
                loss += extra
                grad += w if weight is not None else w * scale
            if weight is not None:
                grad *= scale
                return (loss * scale[:, 0]).sum(), grad
            return loss.sum() * scale, grad
        if y.dtype.kind != "f":
            raise ConfigError(
                f"CrossEntropyLoss: targets must be integer labels or float probabilities, "
                f"got dtype {y.dtype}"
            )
        y = y.astype(y_hat.dtype, copy=False)
        if y.shape != y_hat.shape:
            raise ShapeError(
                f"CrossEntropyLoss: target shape {tuple(y.shape)} does not match the logits "
                f"shape {tuple(y_hat.shape)}"
                + (": class labels are integers (y.astype(int))" if y.shape == (n,) else ""))
        if self.label_smoothing:
            y = y * (1 - self.label_smoothing) + self.label_smoothing / c
        log_p = backend.log_softmax(y_hat)
        value = -(y * log_p * scale).sum() if weight is not None else -(y * log_p).sum() * scale
        grad = (xp.exp(log_p) * y.sum(axis=1, keepdims=True) - y) * scale
        return value, grad


def smoothing_terms(xp, z, labels, e, cols, out=None):
    """What label smoothing adds to the cross-entropy of labels, in the form the static step
    can compute into fixed buffers.

    With t = (1 - e) onehot(c) + e / C, J_i = -sum_j t_j log softmax(z_i)_j
    = CE_i + e (z_ic - mean_j z_ij) (CE_i = logsumexp(z_i) - z_ic, the unsmoothed loss), and
    dJ_i/dz_i = softmax(z_i) - t = (softmax(z_i) - onehot(c)) + e (onehot(c) - 1 / C).
    Returns (W, extra): W = e (onehot(c) - 1 / C) (B, C), the gradient's added term, and
    extra_i = sum_j (z_ij - z_i1) W_ij (B,), the loss's (the same as sum_j z_ij W_ij, the row
    of W summing to 0, but without cancelling terms of z's magnitude: logits at 1e4 lost 4
    of float32's digits); into ``out = (mask, W, zW, extra)`` if given (mask a (B, C) bool
    scratch, zW a (B, C) one). ``cols``: arange(C) on z's backend.
    """
    n, c = z.shape
    if out is None:
        out = (xp.empty((n, c), dtype=bool), xp.empty_like(z), xp.empty_like(z),
               xp.empty(n, dtype=z.dtype))
    mask, w, zw, extra = out
    xp.equal(labels[:, None], cols[None, :], out=mask)  # onehot(c)
    xp.subtract(mask, 1.0 / c, out=w)
    xp.multiply(w, e, out=w)
    xp.subtract(z, z[:, :1], out=zw)  # (the row's first logit: any of its own would do)
    xp.multiply(zw, w, out=zw)
    zw.sum(axis=1, out=extra)
    return w, extra


LOSSES = {
    cls.name: cls for cls in (MSELoss, HuberLoss, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss)
}


#: a loss's ``config()`` keys that switch input checks, not what it computes
CHECKS = ("check_labels", "check_range")


def loss_settings(loss_fn) -> dict:
    """The loss's name and the settings that make its numbers (``config()`` without its input
    checks), as checkpoints record them and resume and the ranks compare them."""
    return {"name": loss_fn.name,
            **{k: v for k, v in loss_fn.config().items() if k not in CHECKS}}


def get_loss(name: str, **kwargs) -> Loss:
    """A loss by its short name (mse, huber, bce, bce_logits, cross_entropy)."""
    try:
        cls = LOSSES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}") from None
    try:
        return cls(**kwargs)
    except TypeError:  # an argument the loss does not take
        others = [k for k in cls().config() if k != "reduction"]
        raise ConfigError(f"{name} takes reduction= ({', '.join(REDUCTIONS)})"
                          + "".join(f" and {k}=" for k in others)
                          + f"; got {', '.join(sorted(kwargs))}") from None
