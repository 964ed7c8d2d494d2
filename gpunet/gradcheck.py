"""Finite-difference gradient checks, in float64.

Each analytic gradient (model.grads and dJ/dx from ``backward``) is compared with the central
difference (J(p + eps) - J(p - eps)) / (2 eps) taken one element at a time. An element passes when

    |analytic - numeric| <= atol + rtol |numeric| + ROUNDOFF u max(|J(p + eps)|, |J(p - eps)|) / eps

(defaults eps 1e-6, rtol 1e-5, atol 1e-7; u = 2^-53): the last term is the difference's
round-off, which grows with the loss (a regression on raw targets of 100 has J near 10^4, and
its central differences are off by some 10^-6 whatever the gradient). A tensor whose every
numeric gradient lies within atol of 0 passes whatever its analytic gradient is; gradcheck
warns that its check could not have failed, naming such tensors (the first layers of a deep
sigmoid net, whose gradients vanish) or saying that all are (a nearly fitted net).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import warnings

from .activations import ACTIVATIONS, HIDDEN_ACTIVATIONS
from .errors import ConfigError
from .losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, MSELoss

#: the central difference's round-off allowance, in units of u |J| / eps (u = 2^-53): J's own
#: rounding, a few u |J| from the summation and the forward pass, taken twice over with room
ROUNDOFF = 16.0
_U = 2.0 ** -53


@dataclass
class GradcheckResult:
    """Worst error of each checked tensor: ``errors[name] = max |analytic - numeric|`` and
    ``ratios[name]`` = the largest error over its element's bound (atol + rtol |numeric| plus
    the central difference's round-off, as ``gradcheck`` states it); a tensor passes at <= 1.
    ``ok``: every tensor passes (also the result's truth); ``worst``: the largest error."""

    errors: dict = field(default_factory=dict)
    ratios: dict = field(default_factory=dict)
    #: pre-activations of a relu or leaky_relu within a step's reach of the kink at 0, where
    #: a central difference straddles the kink and is no derivative (see ``gradcheck``)
    kinks: int = 0

    @property
    def ok(self) -> bool:
        return all(r <= 1.0 for r in self.ratios.values())

    @property
    def worst(self) -> float:
        return max(self.errors.values(), default=0.0)

    def __bool__(self):
        return self.ok


def _loss_value(model, loss_fn, x, y, step) -> float:
    """J at x; with dropout, under the masks of training step ``step`` (those of the analytic
    pass: the function differentiated is J(h * m) for those masks m); with a batch norm, a
    training pass (the batch's statistics: the function backward differentiates)."""
    if getattr(model, "dropout", 0) or getattr(model, "norm", None) == "batch":
        model.dropout_step = step
        value, _ = loss_fn(model.forward(x), y)
    else:
        value, _ = loss_fn(model.forward(x, cache=False), y)
    return float(model.backend.to_host(value))


def _zero_by_construction(model) -> set:
    """The parameters whose gradient is 0 whatever the data, which the vacuous-check warning
    leaves out: a batch norm subtracts its batch's mean of each feature, so a constant shift
    of z_k cancels: the bias b_k of a Linear that feeds one, and a norm's shift beta_k where an
    identity activation (and no dropout) carries it straight into the next layer's Linear and
    batch norm."""
    if getattr(model, "norm", None) != "batch":
        return set()
    hidden = len(getattr(model, "sizes", ())) - 2
    zero = {f"b{k}" for k in range(1, hidden + 1)}
    if getattr(model, "activation", None) == "identity" and not getattr(model, "dropout", 0):
        zero |= {f"beta{k}" for k in range(1, hidden)}
    return zero


def gradcheck(model, loss_fn, x, y, eps=1e-6, rtol=1e-5, atol=1e-7) -> GradcheckResult:
    """Check every parameter gradient and dJ/dx of ``model`` under ``loss_fn`` on (x, y).

    The model must be float64, its parameters too (float32 rounding swamps a finite
    difference). ``loss_fn(y_hat, y)`` returns (J, dJ/dy_hat), as gpunet's losses do; the
    autograder-shaped ``gpunet.twolayer`` net and its ``mse_loss`` / ``bce_loss`` (which take
    (y, y_hat)) are taken too. With dropout, every pass uses the masks of the model's current
    training step (which then counts as one). With a batch norm, every pass is a training
    pass; the running statistics are put back as they were after the analytic pass. Returns a
    GradcheckResult; it is truthy when every element passes:

        |analytic - numeric| <= atol + rtol |numeric|
                                + 16 u max(|J(p + eps)|, |J(p - eps)|) / eps

    (u = 2^-53; the last term is the central difference's round-off, which grows with the
    loss). A tensor whose every numeric gradient lies within atol of 0 passes whatever its
    analytic gradient is; gradcheck warns, naming the tensors of which that holds (but for
    those whose gradient is 0 by construction: a bias just before a batch norm).

    A relu's pre-activation z within a step of 0 (exactly 0 where an input row and the biases
    are zero) puts a central difference across the kink: it measures (f'(0-) + f'(0+)) / 2,
    not the 0 that backward takes for relu'(0) (torch's choice too), and the check can fail
    with no wrong gradient. The result counts such elements (``kinks``), and a failing check
    with any says so in a warning.
    """
    from . import twolayer

    if isinstance(model, twolayer.MLP):  # (its dtype follows its input's, float64 here)
        model = model.net.to(dtype=np.float64)
    if loss_fn in (twolayer.mse_loss, twolayer.bce_loss):
        seed_loss = loss_fn
        loss_fn = lambda y_hat, y: seed_loss(y, y_hat)  # noqa: E731 (their (y, y_hat) order)
    if isinstance(loss_fn, type) or not callable(loss_fn):
        raise ConfigError(f"loss_fn must be a loss object, such as gn.MSELoss(), got {loss_fn!r}")
    if not hasattr(model, "params") or not hasattr(model, "dtype"):
        raise ConfigError(f"gradcheck takes a gpunet MLP (or a gpunet.twolayer.MLP), got "
                          f"{type(model).__name__}")
    if model.dtype != np.float64:
        raise ConfigError(f"gradcheck needs a float64 model, got {model.dtype.name}")
    for name, arr in model.params.items():
        if arr.dtype != np.float64:
            raise ConfigError(f"gradcheck needs float64 parameters, but {name} is "
                              f"{arr.dtype.name} (a float64 model computes with what it is "
                              "given): assign it as float64")
    backend = model.backend
    x = backend.asarray(x, dtype=np.float64).copy()
    step = getattr(model, "dropout_step", 0)
    value, dJdy_hat = loss_fn(model.forward(x), y)
    dJdx = model.backward(dJdy_hat)
    kinks = _near_kinks(model, x, eps)
    buffers = {k: v.copy() for k, v in getattr(model, "buffers", {}).items()}
    analytic = {k: backend.to_host(g) for k, g in model.grads.items()}
    analytic["x"] = backend.to_host(dJdx)

    targets = dict(model.params)
    targets["x"] = x
    result = GradcheckResult()
    largest, vacuous, constant = 0.0, [], _zero_by_construction(model)
    for name, arr in targets.items():
        numeric = np.empty(arr.shape)
        noise = np.empty(arr.shape)
        for i in np.ndindex(arr.shape):  # (indexing writes the array the model reads, in
            orig = float(arr[i])         # whatever layout it has)
            arr[i] = orig + eps
            plus = _loss_value(model, loss_fn, x, y, step)
            arr[i] = orig - eps
            minus = _loss_value(model, loss_fn, x, y, step)
            arr[i] = orig
            numeric[i] = (plus - minus) / (2 * eps)
            noise[i] = ROUNDOFF * _U * max(abs(plus), abs(minus)) / eps
        err = np.abs(analytic[name] - numeric)
        result.errors[name] = float(err.max(initial=0.0))
        result.ratios[name] = float((err / (atol + rtol * np.abs(numeric) + noise))
                                    .max(initial=0.0))
        top = float(np.abs(numeric).max(initial=0.0))
        largest = max(largest, top)
        if not top > atol and not np.isnan(numeric).any() and name not in constant:
            vacuous.append(name)  # (a NaN fails the check anyway)
    if vacuous and len(vacuous) == len(targets) - len(constant & targets.keys()):
        warnings.warn(f"gradcheck: every numeric gradient lies within atol = {atol:g} of 0 (the "
                      f"largest is {largest:.2g}), so any analytic gradient that small passes: "
                      "this check could not have failed (a nearly fitted net? pass a smaller "
                      "atol, or check at other parameters)", stacklevel=2)
    elif vacuous:
        names = ", ".join(vacuous[:6]) + (f" and {len(vacuous) - 6} more" if len(vacuous) > 6
                                          else "")
        warnings.warn(f"gradcheck: every numeric gradient of {names} ({len(vacuous)} of "
                      f"{len(targets)} tensors) lies within atol = {atol:g} of 0, so any "
                      "analytic gradient that small passes there: the check of those could "
                      "not have failed (gradients that vanish through many layers? pass a "
                      "smaller atol)", stacklevel=2)
    result.kinks = kinks
    if kinks and not result.ok:
        warnings.warn(f"gradcheck: {kinks} pre-activation(s) of a relu lie within a step "
                      f"(eps = {eps:g}) of its kink at 0, where the central difference "
                      "straddles the kink and is no derivative (relu'(0) is taken as 0, as "
                      "torch takes it): a failure there need not be a wrong gradient. Check "
                      "at inputs and biases away from 0 (a zero input row with zero biases "
                      "puts z at 0 exactly)", stacklevel=2)
    if getattr(model, "dropout", 0):
        model.dropout_step = step + 1
    for k, v in buffers.items():  # (each finite-difference pass moved them)
        model.buffers[k][...] = v
    return result


#: how far from a kink, in steps of eps scaled by the largest input or parameter, a
#: pre-activation counts as near it (a step of one element moves z by at most about that)
KINK_STEPS = 10.0


def _near_kinks(model, x, eps) -> int:
    """How many cached relu / leaky_relu pre-activations of the analytic pass lie within
    KINK_STEPS eps max(1, |x|, |params|) of 0."""
    backend = model.backend

    def largest(a):  # (CuPy's max takes no initial=)
        return float(backend.xp.abs(a).max()) if a.size else 0.0

    scale = max([1.0, largest(x)] + [largest(p) for p in model.params.values()])
    zone = KINK_STEPS * eps * scale
    count = 0
    for layer in getattr(model, "layers", ()):
        z = getattr(layer, "z", None)
        if z is not None and getattr(layer, "name", None) in ("relu", "leaky_relu") \
                and not (layer.name == "leaky_relu" and layer.slope == 1):
            count += int((backend.xp.abs(z) <= zone).sum())
    return count


# -- every activation x loss, as `gpunet gradcheck` runs them -------------------------------

def _targets(kind, rng, batch, outputs):
    if kind == "labels":
        return rng.integers(0, outputs, batch)
    if kind == "probabilities":
        return rng.dirichlet(np.ones(outputs), batch)
    if kind == "unit":
        return rng.uniform(0.05, 0.95, (batch, outputs))
    return rng.normal(size=(batch, outputs))


def combinations():
    """(hidden activation, output activation, loss, target kind) for every fitting pairing.

    MSE fits every output; BCE needs a probability an output (sigmoid outputs); BCE with
    logits and cross-entropy take raw scores (identity output). Cross-entropy is checked with
    integer labels and with probability targets; MSE also with reduction="sum"; Huber (delta
    0.5, so that some outputs lie beyond it) on real targets.
    """
    pairs = [(g, "mse", "real") for g in ACTIVATIONS]
    pairs += [("identity", "mse_sum", "real"), ("identity", "huber", "real")]
    pairs += [("sigmoid", "bce", "unit")]  # (a softmax's outputs are no probability each)
    pairs += [("identity", "bce_logits", "unit")]
    pairs += [("identity", "cross_entropy", "labels"), ("identity", "cross_entropy", "probabilities")]
    return [(f, g, loss, kind) for f in HIDDEN_ACTIVATIONS for g, loss, kind in pairs]


#: checked again with dropout (p = DROPOUT_RATE on two hidden layers): (f, g, loss, targets)
DROPOUT_COMBINATIONS = [(f, "identity", "cross_entropy", "labels") for f in HIDDEN_ACTIVATIONS] \
    + [("sigmoid", "identity", "mse", "real")]
DROPOUT_RATE = 0.5
#: checked again with a layer norm, then a batch norm, in each hidden layer (``MLP(norm=...)``)
NORM_COMBINATIONS = [(f, "identity", "cross_entropy", "labels") for f in HIDDEN_ACTIVATIONS] \
    + [("tanh", "identity", "mse", "real")]

_LOSS_MAKERS = {
    "mse": lambda: MSELoss(),
    "mse_sum": lambda: MSELoss(reduction="sum"),
    "huber": lambda: HuberLoss(delta=0.5),  # outputs both within and beyond delta
    "bce": lambda: BCELoss(),
    "bce_logits": lambda: BCEWithLogitsLoss(),
    "cross_entropy": lambda: CrossEntropyLoss(),
}


def check_combination(combo, backend="numpy", sizes=(4, 5, 3), batch=6, seed=0, dropout=0.0,
                      norm=None):
    """``gradcheck`` of one (f, g, loss, targets) combination on a small random problem;
    ``dropout`` and ``norm`` as ``MLP``'s (gamma and beta are drawn away from 1 and 0)."""
    from .model import MLP

    f, g, loss, kind = combo
    rng = np.random.default_rng(seed)
    model = MLP(list(sizes), activation=f, output=g, backend=backend, seed=seed,
                dtype="float64", init="xavier_normal", dropout=dropout, norm=norm)
    # Biases (and a norm's beta) away from zero too, so that no bias gradient is trivially
    # small; a norm's gamma away from one.
    for k in model.params:
        if k.startswith("b"):
            model.params[k] = model.backend.asarray(rng.normal(0, 0.5, model.params[k].shape))
        elif k.startswith("gamma"):
            model.params[k] = model.backend.asarray(rng.uniform(0.5, 1.5, model.params[k].shape))
    x = rng.normal(size=(batch, sizes[0]))
    y = _targets(kind, rng, batch, sizes[-1])
    return gradcheck(model, _LOSS_MAKERS[loss](), x, y)


def check_all(backend="numpy", seed=0):
    """Run ``gradcheck`` for every combination on ``backend``, then the dropout ones and the
    norm ones (layer, then batch); yields (combination, dropout rate, norm, result)."""
    for i, combo in enumerate(combinations()):
        yield combo, 0.0, None, check_combination(combo, backend, seed=seed + i)
    for i, combo in enumerate(DROPOUT_COMBINATIONS):
        yield combo, DROPOUT_RATE, None, check_combination(
            combo, backend, sizes=(4, 7, 6, 3), batch=8, seed=seed + 100 + i,
            dropout=DROPOUT_RATE)
    for k, norm in enumerate(("layer", "batch")):
        for i, combo in enumerate(NORM_COMBINATIONS):
            yield combo, 0.0, norm, check_combination(combo, backend, sizes=(4, 7, 6, 3),
                                                      batch=8, seed=seed + 200 + 20 * k + i,
                                                      norm=norm)
