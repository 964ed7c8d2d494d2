"""Learning-rate schedules, applied once per epoch.

    step:     lr = base * gamma ** floor((epoch - 1) / step_size)
    cosine:   lr = min_lr + (base - min_lr) * (1 + cos(pi * (epoch - 1) / epochs)) / 2,
              and min_lr after ``epochs`` (``fit`` refuses a run, or a resume, past them when
              min_lr is 0, as those epochs could not train)
    plateau:  lr *= factor (not below min_lr) once more than ``patience`` epochs in a row
              bring no validation loss lower than the best by more than ``threshold``
              (relative), as torch's ReduceLROnPlateau (a cut of no more than its eps, 1e-8,
              is skipped, as there); ``fit`` shows it val_loss, whatever early stopping
              monitors

and, with ``warmup`` W > 0, the first W epochs run at that rate times epoch / (W + 1): a linear
ramp up to the full rate at epoch W + 1 (``torch.optim.lr_scheduler.LinearLR`` with
start_factor 1 / (W + 1) and total_iters W, over the schedule's own rate; chained in torch
before a cosine with ``eta_min`` > 0, whose recursive form the ramp then bends, torch's rates
differ from these, which are the cosine's own times the ramp: the same with min_lr 0).

``lr(epoch)`` gives the rate for a 1-based epoch before it runs (torch's schedulers count
from 0: their epoch e is lr(e + 1) here; lr(0) is refused); ``observe(loss)`` is told the
epoch's validation loss after it ran (only plateau uses it). State round-trips through
``state_dict`` for exact resume.
"""

from __future__ import annotations

import copy
import math
import numbers

from .errors import ConfigError

SCHEDULES = ("constant", "step", "cosine", "plateau")
#: each schedule's own options (``Schedule`` refuses the others')
OPTIONS = {"constant": (), "step": ("step_size", "gamma"), "cosine": ("min_lr",),
           "plateau": ("factor", "patience", "threshold", "min_lr")}
DEFAULTS = {"step_size": 10, "gamma": 0.1, "min_lr": 0.0, "factor": 0.1, "patience": 5,
            "threshold": 1e-4}
#: plateau skips a cut of the rate by this much or less (torch's ReduceLROnPlateau eps)
PLATEAU_EPS = 1e-8


class Schedule:
    """The learning rate of each epoch (see the module docstring for the rules).

    ``name``: constant, step, cosine or plateau; ``base_lr``: the rate it starts from (None:
    the rate the optimiser was built with, when ``gpunet.fit`` runs it); ``epochs``: the run's
    length, which cosine spans (None: fit's ``epochs``); ``step_size`` and ``gamma``: step's
    period and factor (10, 0.1);
    ``min_lr``: cosine's floor (and plateau's; 0); ``factor``, ``patience``, ``threshold``:
    plateau's factor, the epochs without a better loss it waits and the relative improvement
    that counts as better (0.1, 5, 1e-4); ``warmup``: epochs of a linear ramp up to the
    schedule's rate. An option the named schedule does not use is a ConfigError (plateau's
    factor is ``factor``, not ``gamma``, as in torch).
    """

    def __init__(self, name="constant", base_lr=None, epochs=None, step_size=None, gamma=None,
                 min_lr=None, factor=None, patience=None, threshold=None, warmup=0):
        if name not in SCHEDULES:
            raise ConfigError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULES)}")
        given = {k: v for k, v in (("step_size", step_size), ("gamma", gamma),
                                   ("min_lr", min_lr), ("factor", factor),
                                   ("patience", patience), ("threshold", threshold))
                 if v is not None}
        unused = [k for k in given if k not in OPTIONS[name]]
        if unused:  # (plateau's gamma= was ignored: the rate fell by the default factor 0.1)
            hint = (" (plateau's factor is factor=, as torch's ReduceLROnPlateau; the command "
                    "line's --gamma)" if name == "plateau" and "gamma" in unused else "")
            takes = ", ".join(OPTIONS[name]) or "no options beyond base_lr, epochs and warmup"
            raise ConfigError(f"the {name} schedule does not use {', '.join(unused)}{hint}; "
                              f"it takes {takes}")
        given = {**DEFAULTS, **given}
        step_size, gamma, min_lr, factor, patience, threshold = (given[k] for k in (
            "step_size", "gamma", "min_lr", "factor", "patience", "threshold"))
        if not _count(warmup, 0):
            raise ConfigError(f"warmup must be a whole number of epochs >= 0, got {warmup!r}")
        if not _count(step_size, 1):
            raise ConfigError(f"step size must be a positive integer, got {step_size!r}")
        if not _count(patience, 0):  # (0: cut at the first epoch without a better loss)
            raise ConfigError(f"plateau patience must be a whole number >= 0, got "
                              f"{patience!r}")
        if epochs is not None and not _count(epochs, 1):
            raise ConfigError(f"epochs must be a positive integer (or None: fit's), got "
                              f"{epochs!r}")
        for label, v in (("gamma", gamma), ("factor", factor)):
            if not (_real(v) and 0 < v <= 1):
                raise ConfigError(f"{label} must lie in (0, 1], got {v!r}")
        if base_lr is not None and not (_real(base_lr) and base_lr > 0):
            raise ConfigError(f"base_lr must be a finite number > 0 (or None: the "
                              f"optimiser's), got {base_lr!r}")
        if not (_real(min_lr) and min_lr >= 0):
            raise ConfigError(f"min_lr must be a finite number >= 0, got {min_lr!r}")
        if not (_real(threshold) and 0 <= threshold < 1):  # (relative: 1 asks for a loss < 0)
            raise ConfigError(f"threshold must lie in [0, 1), got {threshold!r}")
        self.name = name
        self.base_lr = None if base_lr is None else float(base_lr)
        self.epochs = None if epochs is None else int(epochs)
        self.step_size, self.gamma, self.min_lr = int(step_size), float(gamma), float(min_lr)
        self.factor, self.patience, self.threshold = float(factor), int(patience), \
            float(threshold)
        self.warmup = int(warmup)
        # plateau state
        self.current = self.base_lr
        self.best = math.inf
        self.bad_epochs = 0


    def __repr__(self):
        kw = {"base_lr": self.base_lr, "epochs": self.epochs, "warmup": self.warmup}
        kw.update({"step": {"step_size": self.step_size, "gamma": self.gamma},
                   "cosine": {"min_lr": self.min_lr},
                   "plateau": {"factor": self.factor, "patience": self.patience,
                               "threshold": self.threshold, "min_lr": self.min_lr},
                   }.get(self.name, {}))
        return f"Schedule({self.name!r}, {', '.join(f'{k}={v!r}' for k, v in kw.items())})"
    def bound(self, lr: float, epochs: int) -> "Schedule":
        """A copy whose unset ``base_lr`` and ``epochs`` are ``lr`` and ``epochs`` (what
        ``gpunet.fit`` steps: the optimiser's rate and the run's length)."""
        s = copy.copy(self)
        if s.base_lr is None:
            s.base_lr = s.current = float(lr)
        if s.epochs is None:
            s.epochs = int(epochs)
        return s

    def lr(self, epoch: int) -> float:
        """The learning rate of ``epoch``, counted from 1 (an integer >= 1: torch's 0-based
        epoch e is lr(e + 1)); ConfigError otherwise."""
        if not _count(epoch, 1):  # (lr(0) was 0.0 and lr(-1) negative, without a word)
            raise ConfigError(f"epochs count from 1: lr(1) is the first epoch's rate; got "
                              f"lr({epoch!r})")
        self._check_bound()
        rate = self._rate(epoch)
        return rate * epoch / (self.warmup + 1) if epoch <= self.warmup else rate

    def _check_bound(self) -> None:
        if self.base_lr is None or (self.epochs is None and self.name == "cosine"):
            raise ConfigError("this schedule takes its base_lr and epochs from gpunet.fit "
                              "(or give them: Schedule(name, base_lr=..., epochs=...))")

    def _rate(self, epoch: int) -> float:
        if self.name == "step":
            return self.base_lr * self.gamma ** ((epoch - 1) // self.step_size)
        if self.name == "cosine":
            # past the run it was set up for (a resume with more epochs), it stays at min_lr
            t = min((epoch - 1) / max(self.epochs, 1), 1.0)
            return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t)) / 2
        return self.current  # constant, plateau

    def observe(self, loss: float) -> None:
        """Take an epoch's validation loss, a number (a 0-d array or tensor: its float, as
        torch's ``float(metrics)``); plateau's only use, the others ignore it."""
        given = loss
        try:  # (text is refused, not read: float("1.0") would take it)
            loss = None if isinstance(loss, (str, bytes)) else float(loss)
        except (TypeError, ValueError):
            loss = None
        if loss is None:
            raise ConfigError(f"observe takes the epoch's validation loss, a number; got "
                              f"{given!r:.60}")
        if self.name != "plateau":
            return
        self._check_bound()  # (its rate comes down from base_lr)
        if loss < self.best * (1 - self.threshold):
            self.best, self.bad_epochs = loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:  # (no cut of eps or less, nor up to a floor)
                cut = max(self.current * self.factor, self.min_lr)
                if self.current - cut > PLATEAU_EPS:
                    self.current = cut
                self.bad_epochs = 0

    def state_dict(self) -> dict:
        """The settings and the position (plateau's rate, best loss, bad epochs), as plain
        values for a checkpoint; ``Schedule.from_state`` rebuilds it."""
        return {k: getattr(self, k) for k in (
            "name", "base_lr", "epochs", "step_size", "gamma", "min_lr", "factor", "patience",
            "threshold", "current", "best", "bad_epochs", "warmup")}

    @classmethod
    def from_state(cls, state: dict) -> "Schedule":
        """The schedule ``state_dict`` gave; ConfigError naming what a state lacks."""
        names = ("name", "base_lr", "epochs", "step_size", "gamma", "min_lr", "factor",
                 "patience", "threshold", "current", "best", "bad_epochs")
        missing = [k for k in names if not isinstance(state, dict) or k not in state]
        if missing:
            raise ConfigError(f"a schedule's state needs {', '.join(missing)}, as "
                              "Schedule.state_dict() gives them")
        own = OPTIONS.get(state["name"], ())  # (a state holds every schedule's settings)
        s = cls(**{k: state[k] for k in names[:9] if k in own or k in names[:3]},
                warmup=state.get("warmup", 0))
        s.current, s.best, s.bad_epochs = state["current"], state["best"], state["bad_epochs"]
        return s


def schedule_options(name, step_size=None, gamma=None) -> dict:
    """The keywords of ``Schedule(name)`` for the command line's and the estimators' two
    options: step's ``step_size`` and ``gamma``, and ``gamma`` as plateau's ``factor``."""
    return {"step": {"step_size": step_size, "gamma": gamma},
            "plateau": {"factor": gamma}}.get(name, {})


def _count(v, low) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low


def _real(v) -> bool:
    try:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:  # an int too big for a float
        return False
