"""Optimisers. Each updates ``model.params`` in place from ``model.grads`` on ``step()``.

The update rules are PyTorch's (``torch.optim.SGD``, ``Adam``, ``AdamW``). The per-parameter
update is one backend op (``Backend.sgd_update`` / ``adam_update``), written once against the
array module and fused into one kernel where the backend has one; the optimisers here keep the
hyperparameters, the step count and the state arrays.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .backends import get_backend
from .errors import ConfigError, ShapeError, own_parameters

#: the learning rate each optimiser takes when none is given (``gpunet train``, the estimators)
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}
#: plain SGD's default on a regression: its squared error's curvature grows with the last
#: hidden layer's width (about 2 x its squared activations), so 0.1 diverges on common data
#: (diabetes, 100 hidden units: in the first epoch; 0.03 too) where 0.01 trains
REGRESSION_SGD_LR = 0.01


def _real(name, v, low, *, above=False, high=None):
    """``v`` as a float if it is a finite real number >= low (> low with ``above``, <= high
    if given); else ConfigError. numpy scalars count; bools and strings do not."""
    try:
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:  # an int too big for a float
        ok = False
    ok = ok and (v > low if above else v >= low) and (high is None or v <= high)
    if not ok:
        bound = f"> {low}" if above else f">= {low}"
        raise ConfigError(f"{name} must be a finite number {bound}"
                          f"{f' and <= {high}' if high is not None else ''}, got {v!r}")
    return float(v)


class Optimizer:
    """Base class: holds the model, the learning rate and per-parameter state arrays.

    ``weight_decay``: see each optimiser; ``clip_norm``: before each update, scale every
    gradient by clip_norm / (||g|| + 1e-6) where that is under 1, ||g|| the 2-norm over all
    of them (``torch.nn.utils.clip_grad_norm_``'s rule); None: never. ``grad_norm`` is the
    last clipped step's ||g||, before clipping (what clip_grad_norm_ returns): a 0-d array
    on the model's backend, so nothing is read back from the device until it is converted;
    each later step, the eager one and the static one (a CUDA graph's replay too), writes
    its own into that array, so ``float(opt.grad_norm)`` keeps one. None before the first
    step with ``clip_norm``.
    """

    name = "optimizer"
    #: names of the per-parameter state arrays (saved in checkpoints)
    slots: tuple[str, ...] = ()
    #: torch's options that this optimiser does not offer, each with what to do instead
    torch_options = {"maximize": "maximize is not offered (this is torch's with maximize=False: "
                                 "leave it out); to maximise, negate the loss and its dJ/dy_hat"}

    def __new__(cls, *args, **kwargs):
        own = own_parameters(cls, __name__)  # (a user's subclass takes the options it names)
        for option in kwargs.keys() - own & cls.torch_options.keys():
            raise ConfigError(f"{cls.__name__}: {cls.torch_options[option]}")
        return super().__new__(cls)

    def __init__(self, model, lr: float, weight_decay: float = 0.0, clip_norm=None):
        if not (isinstance(getattr(model, "params", None), dict)
                and isinstance(getattr(model, "grads", None), dict)):
            hint = " (an estimator's network is its model_)" if hasattr(model, "model_") or \
                hasattr(model, "get_params") else ""
            raise ConfigError(f"{type(self).__name__} takes the gn.MLP itself "
                              f"({type(self).__name__}(model)), not its parameters; got "
                              f"{type(model).__name__}{hint}")
        try:
            _real("lr", lr, 0, above=True)
        except ConfigError:
            raise ConfigError(f"learning rate must be a positive number, got {lr!r}") from None
        _real("weight_decay", weight_decay, 0)
        if clip_norm is not None:
            _real("clip_norm", clip_norm, 0, above=True)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.model = model
        self.lr = float(lr)
        #: the rate it was built with (torch's ``initial_lr``): a Schedule without a base_lr
        #: starts from it, however an earlier run left ``lr``
        self.initial_lr = self.lr
        self.weight_decay = float(weight_decay)
        self.grad_norm = None  # ||g|| before clipping, of the last step with clip_norm
        self.steps = 0
        self.state: dict[str, dict[str, object]] = {}
        self._hyper = None  # [lr, t] on the model's backend, read by the update ops
        self._hyper_host = None  # (lr, t) as the host last left them in _hyper
        self._home = None  # (backend, dtype) the state was last checked to live in

    def __repr__(self):  # (every setting, as torch's optimisers show theirs)
        settings = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({settings})"

    def _slot(self, key: str, slot: str, like):
        per = self.state.setdefault(key, {})
        if slot not in per:
            per[slot] = self.model.backend.xp.zeros_like(like)
        return per[slot]

    def step(self) -> None:
        """Apply one update to every parameter from its gradient."""
        grads = self.model.grads
        for key in self.model.params:
            if grads.get(key) is None:
                raise ConfigError(f"no gradient for {key!r}: call model.backward() before step()")
        self.steps += 1
        self.model.backend.tick_hyper(self.prepare_hyper())
        self.apply(grads)
        self.model.weights_changed("optimizer.step()")

    def prepare_hyper(self):
        """The backend's [lr, t] array, holding t = ``steps`` - 1 for the step just counted.

        The step's own ``tick_hyper`` then brings t to ``steps``: on a GPU that happens on the
        device, inside a captured graph too. The host writes the array only when the learning
        rate changed (a schedule) or the count moved elsewhere (a resume, a new backend). State
        arrays of another backend or dtype than the model's (after ``model.to``) are moved to
        it here.
        """
        backend, dtype = self.model.backend, self.model.dtype
        if self._hyper is None or not backend.owns(self._hyper):
            self._hyper, self._hyper_host = backend.new_hyper(), None
        if self._home != (backend, dtype):  # the model moved (model.to): its state follows
            for per in self.state.values():
                for slot, a in per.items():
                    if not backend.owns(a) or a.dtype != dtype:
                        per[slot] = backend.asarray(a, dtype=dtype)
            self._home = (backend, dtype)
        if self._hyper_host != (self.lr, self.steps - 1):
            backend.write_hyper(self._hyper, self.lr, self.steps - 1)
        self._hyper_host = (self.lr, self.steps)
        return self._hyper

    def apply(self, grads) -> None:
        """Update every parameter from ``grads`` with the [lr, t] of ``prepare_hyper``, after
        its tick (the part of a step that a CUDA graph captures); with ``clip_norm``, the
        gradients are clipped first, in place."""
        if self.clip_norm is not None:
            self._clip(grads)
        for key, p in self.model.params.items():
            self._update(key, p, grads[key])

    def _clip(self, grads) -> None:
        """``torch.nn.utils.clip_grad_norm_``: with N the 2-norm of all the gradients as one
        vector, each is multiplied by min(1, clip_norm / (N + 1e-6)), in place, and N goes
        into ``grad_norm``; no read-back (the device keeps going, and a captured step clips
        at every replay, writing N into the same array)."""
        backend = self.model.backend
        total = None
        for key in self.model.params:
            s = backend.sum_of_squares(grads[key])
            total = s if total is None else total + s
        norm = self.grad_norm  # (one array, which a captured step writes at every replay)
        if norm is None or not backend.owns(norm) or norm.dtype != total.dtype:
            norm = self.grad_norm = backend.xp.empty((), dtype=total.dtype)
        backend.xp.sqrt(total, out=norm)
        coef = backend.xp.minimum(self.clip_norm / (norm + 1e-6), 1.0)
        for key in self.model.params:
            grads[key] *= coef

    def _update(self, key, p, g) -> None:
        raise NotImplementedError

    @property
    def lr(self) -> float:
        """The learning rate of the next step (a schedule sets it each epoch)."""
        return self._lr

    @lr.setter
    def lr(self, value) -> None:  # (a string or a negative rate would step without a word)
        self._lr = _real("lr", value, 0)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The model's gradients forgotten, as torch's ``optimizer.zero_grad()``
        (``model.zero_grad(set_to_none)``: each becomes None, or zeros)."""
        self.model.zero_grad(set_to_none)

    # -- state for checkpoints (host arrays and plain numbers, no pickle) ------------------

    def hyperparameters(self) -> dict:
        """The settings (not the state), as checkpoints store them and ``repr`` shows them."""
        return {"lr": self.lr, "weight_decay": self.weight_decay, "clip_norm": self.clip_norm}

    def state_dict(self) -> dict:
        """``{"name", "steps", "initial_lr", "hyperparameters", "state": {param: {slot:
        ndarray}}}``: host copies, which later steps leave as they are (as
        ``MLP.state_dict``'s). ``initial_lr`` is the rate the optimiser was built with, as
        torch's param groups carry it: a schedule after ``load_state_dict`` starts from it."""
        to_host = self.model.backend.to_host
        return {
            "name": self.name,
            "steps": self.steps,
            "initial_lr": self.initial_lr,
            "hyperparameters": self.hyperparameters(),
            "state": {k: {s: np.array(to_host(a)) for s, a in v.items()}
                      for k, v in self.state.items()},
        }

    def load_state_dict(self, sd: dict) -> None:
        """Take the state ``state_dict`` gave, checked before anything changes: the same kind
        of optimiser (ConfigError), hyperparameters its constructor accepts (ConfigError, as
        the constructor's; a learning rate of 0 too, where a schedule left it), and state for
        this model's parameters, of their shapes and of finite numbers, in this optimiser's
        slots (ShapeError / ConfigError naming the first that is not)."""
        if not isinstance(sd, dict) or sd.get("name") != self.name:
            got = sd.get("name") if isinstance(sd, dict) else type(sd).__name__
            raise ConfigError(f"optimizer state is for {got!r}, not {self.name!r}")
        steps = sd.get("steps")
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 0:
            raise ConfigError(f"optimizer state: steps must be an integer >= 0, got {steps!r}")
        hyper, state = sd.get("hyperparameters", {}), sd.get("state", {})
        if not isinstance(hyper, dict) or not isinstance(state, dict) or not all(
                isinstance(slots, dict) for slots in state.values()):
            raise ConfigError("optimizer state: hyperparameters and state must be dicts (and "
                              "each parameter's state a dict of arrays), as state_dict() gives")
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}
        lr = _real("lr", hyper.pop("lr", self.lr), 0)  # 0: a schedule may have reached it
        initial = sd.get("initial_lr")  # (a state of before it was kept: the rate it holds)
        initial = lr if initial is None else _real("initial_lr", initial, 0)
        try:  # the constructor's checks, on a throwaway optimiser
            fresh = type(self)(self.model, **hyper)
        except TypeError:
            known = set(self.hyperparameters())
            raise ConfigError(f"optimizer state: unknown hyperparameters "
                              f"{sorted(set(hyper) - known)} for {self.name}") from None
        params = self.model.params
        host = {}  # every array, checked on the host before anything changes
        for k, slots in state.items():
            if k not in params:
                raise ConfigError(f"optimizer state for {k!r}, which the model does not have "
                                  f"(its parameters: {', '.join(params)})")
            for s, a in slots.items():
                if s not in self.slots:
                    raise ConfigError(f"optimizer state {k}/{s}: {self.name} keeps "
                                      f"{', '.join(self.slots)}")
                if tuple(np.shape(a)) != tuple(params[k].shape):
                    raise ShapeError(f"optimizer state {k}/{s} is shaped {tuple(np.shape(a))}; "
                                     f"the parameter is {tuple(params[k].shape)}")
                value = get_backend("numpy").asarray(a)  # (a device array comes to the host)
                if value.dtype.kind not in "biuf" or not np.all(np.isfinite(value)):
                    raise ConfigError(f"optimizer state {k}/{s} must hold finite numbers")
                host.setdefault(k, {})[s] = value
        kept = sorted({s for slots in state.values() for s in slots})  # (none before a step)
        missing = [f"{k}/{s}" for k in params for s in kept if s not in state.get(k, {})]
        if missing:
            raise ConfigError(f"optimizer state is missing {', '.join(missing[:3])}"
                              f"{' ...' if len(missing) > 3 else ''}, which the other "
                              "parameters have: a part of the state would not resume exactly")
        backend, dtype = self.model.backend, self.model.dtype
        for k in hyper:
            setattr(self, k, getattr(fresh, k))
        self.lr, self.initial_lr = lr, initial
        self.steps = int(steps)
        self._hyper_host = None
        self.state = {k: {s: backend.asarray(a, dtype=dtype).copy() for s, a in v.items()}
                      for k, v in host.items()}  # (copies: the given arrays stay as they are)
        self._home = (backend, dtype)


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum and L2 weight decay.

    g = dJ/dp + wd p;  with momentum: v = mu v + (1 - dampening) g (v = g on the first step),
    g = g + mu v if nesterov else v;  then p = p - lr g.

    ``lr`` defaults to 0.01 here; ``gpunet train`` and the estimators default SGD to 0.1
    (``DEFAULT_LR``), 0.01 on a regression (``REGRESSION_SGD_LR``). ``dampening`` as torch's;
    ``clip_norm`` as ``Optimizer``'s.
    """

    name = "sgd"
    slots = ("momentum_buffer",)

    def __init__(self, model, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
                 dampening=0.0, clip_norm=None):
        super().__init__(model, lr, weight_decay, clip_norm)
        _real("momentum", momentum, 0)
        _real("dampening", dampening, 0, high=1)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ConfigError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and momentum <= 0:
            raise ConfigError(f"nesterov momentum needs momentum > 0, got {momentum!r}")
        if nesterov and dampening != 0:
            raise ConfigError(f"nesterov momentum needs dampening == 0, got {dampening!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.dampening = float(dampening)

    def hyperparameters(self):
        return {**super().hyperparameters(), "momentum": self.momentum,
                "nesterov": self.nesterov, "dampening": self.dampening}

    def _update(self, key, p, g):
        buf = None
        first = False
        if self.momentum:
            first = key not in self.state
            buf = self._slot(key, "momentum_buffer", p)
        self.model.backend.sgd_update(p, g, buf, self._hyper, self.momentum, self.dampening,
                                      self.nesterov, self.weight_decay, first)


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's form; ``weight_decay`` adds wd p to the gradient (L2).

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p = p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    """

    name = "adam"
    slots = ("exp_avg", "exp_avg_sq")
    decoupled = False
    torch_options = {**Optimizer.torch_options,
                     "amsgrad": "amsgrad is not offered (this is torch's Adam with "
                                "amsgrad=False): leave it out"}

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 clip_norm=None):
        super().__init__(model, lr, weight_decay, clip_norm)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ConfigError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        _real("eps", eps, 0, above=True)
        if not all(isinstance(b, numbers.Real) and not isinstance(b, bool) and 0 <= b < 1
                   for b in (b1, b2)):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if eps <= 0:
            raise ConfigError(f"eps must be > 0, got {eps!r}")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)

    def hyperparameters(self):
        return {**super().hyperparameters(), "betas": list(self.betas), "eps": self.eps}

    def _update(self, key, p, g):
        b1, b2 = self.betas
        self.model.backend.adam_update(
            p, g, self._slot(key, "exp_avg", p), self._slot(key, "exp_avg_sq", p), self._hyper,
            b1, b2, self.eps, self.weight_decay, self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p = p (1 - lr wd) before Adam."""

    name = "adamw"
    decoupled = True

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 clip_norm=None):
        super().__init__(model, lr, betas, eps, weight_decay, clip_norm)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adam, AdamW)}


def optimizer_kwargs(name: str, lr=None, weight_decay=None, momentum=0.0,
                     clip_norm=None, nesterov=False, task=None, ignore_momentum=False) -> dict:
    """``get_optimizer(name, model, **kw)``'s keywords from the settings ``gpunet train`` and
    the estimators share: ``lr`` None takes ``DEFAULT_LR[name]`` (sgd on a ``task`` of
    "regression": ``REGRESSION_SGD_LR``), ``weight_decay`` None keeps
    the optimiser's own default, ``momentum`` and ``nesterov`` are SGD's (ConfigError for
    another optimiser unless 0 and False; left out with ``ignore_momentum``, as the
    estimators leave them, as scikit-learn's MLP ignores them unless its solver is sgd),
    ``clip_norm`` None clips nothing."""
    if name not in DEFAULT_LR:
        raise ConfigError(f"unknown optimizer {name!r}; valid names: {', '.join(DEFAULT_LR)}")
    default = REGRESSION_SGD_LR if name == "sgd" and task == "regression" else DEFAULT_LR[name]
    kw = {"lr": default if lr is None else lr}
    if weight_decay is not None:
        kw["weight_decay"] = weight_decay
    if clip_norm is not None:
        kw["clip_norm"] = clip_norm
    if not isinstance(nesterov, (bool, np.bool_)):
        raise ConfigError(f"nesterov must be True or False, got {nesterov!r}")
    if name == "sgd":
        kw["momentum"] = momentum
        if nesterov:
            kw["nesterov"] = True
    elif (momentum or nesterov) and not ignore_momentum:
        raise ConfigError(f"{'momentum' if momentum else 'nesterov'} applies to the sgd "
                          f"optimizer, not {name}")
    return kw


def get_optimizer(name: str, model, **kwargs) -> Optimizer:
    """An optimiser by its short name (sgd, adam, adamw)."""
    try:
        cls = OPTIMIZERS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}"
        ) from None
    return cls(model, **kwargs)


def check_training_parts(model, loss_fn, optimizer, strict=True) -> None:
    """ConfigError unless ``loss_fn`` is a gpunet loss object and ``optimizer`` a gpunet
    optimiser built on ``model`` (what fit is given). ``strict=False`` (train_step): a loss
    may be any callable (y_hat, y) -> (J, dJ/dy_hat) and an optimiser any object with a
    ``step()`` that reads ``model.grads``, but not a class, nor torch's optimiser, nor a
    gpunet one built on another model."""
    from .losses import Loss

    loose = not strict  # (train_step: one's own loss and a duck optimiser are taken too)
    loss_ok = isinstance(loss_fn, Loss) or (
        loose and callable(loss_fn) and not isinstance(loss_fn, type))
    optimizer_ok = isinstance(optimizer, Optimizer) or (
        loose and not isinstance(optimizer, type)
        and callable(getattr(optimizer, "step", None))
        and not hasattr(optimizer, "param_groups"))  # (torch's: it steps its own tensors)
    if not loss_ok:
        hint = f": pass one, {loss_fn.__name__}()" if isinstance(loss_fn, type) \
            and issubclass(loss_fn, Loss) else ""
        raise ConfigError(f"loss_fn must be a loss object, such as gn.CrossEntropyLoss() or "
                          f"gn.get_loss('mse'), got {loss_fn!r}{hint}")
    if not optimizer_ok:
        hint = f": build one, {optimizer.__name__}(model)" if isinstance(optimizer, type) \
            and issubclass(optimizer, Optimizer) else ""
        raise ConfigError(f"optimizer must be a gpunet optimiser, such as gn.Adam(model), got "
                          f"{optimizer!r}{hint}")
    if isinstance(optimizer, Optimizer) and optimizer.model is not model:
        raise ConfigError("the optimizer was built on another model: build it on the one "
                          "that trains (gn.Adam(model))")
