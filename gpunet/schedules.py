"""Learning-rate schedules, applied once per epoch.

    step:     lr = base * gamma ** floor((epoch - 1) / step_size)
    cosine:   lr = min_lr + (base - min_lr) * (1 + cos(pi * (epoch - 1) / epochs)) / 2,
              and min_lr after ``epochs`` (a run resumed to more epochs than it was set up for;
              ``fit`` refuses that resume when min_lr is 0, as those epochs could not train)
    plateau:  lr *= factor after ``patience`` epochs without the monitored loss improving

and, with ``warmup`` W > 0, the first W epochs run at that rate times epoch / (W + 1): a linear
ramp up to the full rate at epoch W + 1 (``torch.optim.lr_scheduler.LinearLR`` with
start_factor 1 / (W + 1) and total_iters W, over the schedule's own rate).

``lr(epoch)`` gives the rate for a 1-based epoch before it runs; ``observe(loss)`` is told the
epoch's validation loss after it ran (only plateau uses it). State round-trips through
``state_dict`` for exact resume.
"""

from __future__ import annotations

import math
import numbers

from .errors import ConfigError

SCHEDULES = ("constant", "step", "cosine", "plateau")


class Schedule:
    """The learning rate of each epoch (see the module docstring for the rules).

    ``name``: constant, step, cosine or plateau; ``base_lr``: the rate it starts from;
    ``epochs``: the run's length (cosine); ``step_size`` and ``gamma``: step's period and
    factor; ``min_lr``: cosine's floor; ``factor``, ``patience``, ``threshold``: plateau's
    factor, the epochs without a better loss it waits and the relative improvement that counts
    as better; ``warmup``: epochs of a linear ramp up to the schedule's rate.
    """

    def __init__(self, name="constant", base_lr=1e-3, epochs=1, step_size=10, gamma=0.1,
                 min_lr=0.0, factor=0.1, patience=5, threshold=1e-4, warmup=0):
        if name not in SCHEDULES:
            raise ConfigError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULES)}")
        if not isinstance(warmup, numbers.Integral) or isinstance(warmup, bool) or warmup < 0:
            raise ConfigError(f"warmup must be a whole number of epochs >= 0, got {warmup!r}")
        for label, v in (("step size", step_size), ("plateau patience", patience)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{label} must be a positive integer, got {v!r}")
        for label, v in (("gamma", gamma), ("factor", factor)):
            if not 0 < v <= 1:
                raise ConfigError(f"{label} must lie in (0, 1], got {v!r}")
        self.name = name
        self.base_lr = float(base_lr)
        self.epochs = int(epochs)
        self.step_size, self.gamma, self.min_lr = int(step_size), float(gamma), float(min_lr)
        self.factor, self.patience, self.threshold = float(factor), int(patience), \
            float(threshold)
        self.warmup = int(warmup)
        # plateau state
        self.current = float(base_lr)
        self.best = math.inf
        self.bad_epochs = 0

    def lr(self, epoch: int) -> float:
        rate = self._rate(epoch)
        return rate * epoch / (self.warmup + 1) if epoch <= self.warmup else rate

    def _rate(self, epoch: int) -> float:
        if self.name == "step":
            return self.base_lr * self.gamma ** ((epoch - 1) // self.step_size)
        if self.name == "cosine":
            # past the run it was set up for (a resume with more epochs), it stays at min_lr
            t = min((epoch - 1) / max(self.epochs, 1), 1.0)
            return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t)) / 2
        return self.current  # constant, plateau

    def observe(self, loss: float) -> None:
        if self.name != "plateau":
            return
        if loss < self.best * (1 - self.threshold):
            self.best, self.bad_epochs = loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.current = max(self.current * self.factor, self.min_lr)
                self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "name", "base_lr", "epochs", "step_size", "gamma", "min_lr", "factor", "patience",
            "threshold", "current", "best", "bad_epochs", "warmup")}

    @classmethod
    def from_state(cls, state: dict) -> "Schedule":
        s = cls(**{k: state[k] for k in ("name", "base_lr", "epochs", "step_size", "gamma",
                                         "min_lr", "factor", "patience", "threshold")},
                warmup=state.get("warmup", 0))
        s.current, s.best, s.bad_epochs = state["current"], state["best"], state["bad_epochs"]
        return s
