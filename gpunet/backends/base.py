"""The backend: an array module plus the ops that layers, losses and optimisers call.

Every op is written once here against ``self.xp``. ``NumpyBackend`` sets ``xp = numpy`` and
``CupyBackend`` sets ``xp = cupy``; each overrides only the ops that have a faster kernel on its
device. Layer, loss and optimiser code calls these ops and never asks which backend it runs on.

Shapes follow ``torch.nn.Linear``: a batch ``x`` is (B, in), a weight ``W`` is (out, in), a bias
``b`` is (out,), so a linear layer computes ``z = x W^T + b``.
"""

from __future__ import annotations

import math

import numpy as np

from ..activations import DEFAULT_SLOPE, get_activation


class Backend:
    """Base class of the backends. Subclasses set ``name`` and ``xp``."""

    name: str = "abstract"
    xp = np

    # -- device and transfers -------------------------------------------------------------

    @property
    def device_name(self) -> str:
        raise NotImplementedError

    def asarray(self, a, dtype=None):
        """Put ``a`` (host or device array, or a sequence) on this backend; no copy if it's there."""
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a) -> np.ndarray:
        """Copy ``a`` to a host NumPy array (no copy on the NumPy backend)."""
        return np.asarray(a)

    def owns(self, a) -> bool:
        """Whether ``a`` is an array of this backend's array module."""
        return isinstance(a, self.xp.ndarray)

    def synchronize(self) -> None:
        """Wait until all queued device work has finished (a no-op on the CPU)."""

    def __repr__(self) -> str:
        return f"<gpunet backend {self.name!r} on {self.device_name}>"

    # -- linear layer ---------------------------------------------------------------------

    def linear_forward(self, x, W, b):
        """z = x W^T + b, for x (B, in), W (out, in), b (out,)."""
        z = x @ W.T
        z += b
        return z

    def linear_backward(self, dz, x, W, need_dx=True):
        """Gradients of z = x W^T + b given dJ/dz.

        Returns ``(dJ/dx, dJ/dW, dJ/db)`` with dJ/dx = dz W, dJ/dW = dz^T x and dJ/db the column
        sum of dz (every row of the batch adds its own contribution). dJ/dx is None when
        ``need_dx`` is false (the first layer's input needs no gradient during training).
        """
        dW = dz.T @ x
        db = dz.sum(axis=0)
        dx = dz @ W if need_dx else None
        return dx, dW, db

    # -- activations ----------------------------------------------------------------------

    def act_forward(self, name, z, slope=DEFAULT_SLOPE):
        """y = f(z) for the named activation (see gpunet.activations)."""
        return get_activation(name).forward(self.xp, z, slope)

    def act_backward(self, name, dy, z, y, slope=DEFAULT_SLOPE):
        """dJ/dz = dJ/dy * f'(z), reading the pre-activation z or the saved output y."""
        return get_activation(name).backward(self.xp, dy, z, y, slope)

    # -- row-wise reductions --------------------------------------------------------------

    def _shift(self, x):
        """(x - m, log sum_j exp(x_ij - m_i)) with m the row maximum (0 for rows without a
        finite maximum, so that an all -inf row gives -inf, not NaN). Working on x - m keeps
        float32 exact near huge logits, where x - logsumexp(x) would round."""
        xp = self.xp
        m = x.max(axis=-1, keepdims=True)
        shifted = x - xp.where(xp.isfinite(m), m, 0)
        with np.errstate(divide="ignore"):
            return shifted, xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))

    def logsumexp(self, x):
        """log(sum_j exp(x_ij)) per row, shifted by the row maximum so nothing overflows.

        A row of all -inf gives -inf (not NaN); a row with some -inf entries is finite.
        """
        xp = self.xp
        m = x.max(axis=-1)
        m = xp.where(xp.isfinite(m), m, 0)
        return self._shift(x)[1][..., 0] + m

    def log_softmax(self, x):
        """x_ij - logsumexp(x_i), row-wise, computed as (x - max) - log sum exp(x - max)."""
        shifted, lse = self._shift(x)
        return shifted - lse

    def softmax(self, x):
        """exp(x_ij - max_i) / sum_j exp(x_ij - max_i), row-wise."""
        return get_activation("softmax").forward(self.xp, x, None)

    def softmax_cross_entropy(self, logits, labels, scale):
        """Per-row cross-entropy of softmax(logits) against integer labels, and its gradient.

        loss_i = logsumexp(z_i) - z_i[label_i] and dJ/dz = scale * (softmax(z) - onehot(labels)),
        where ``scale`` is 1/B for a mean over the batch and 1 for a sum. Returns
        ``(loss_per_row, dlogits)``.
        """
        xp = self.xp
        rows = xp.arange(logits.shape[0])
        shifted, lse = self._shift(logits)
        loss = lse[:, 0] - shifted[rows, labels]
        p = xp.exp(shifted - lse)
        p[rows, labels] -= 1
        p *= scale
        return loss, p

    # -- optimiser updates (in place on the parameter and its state) ---------------------

    def sgd_update(self, p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first):
        """torch.optim.SGD's update of one parameter, in place.

        g' = g + wd p;  with momentum: buf = g' on the ``first`` step, else
        buf = mu buf + (1 - dampening) g';  g' = g' + mu buf if nesterov else buf;
        p = p - lr g'. ``buf`` is None without momentum.
        """
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            if first:
                buf[...] = g
            else:
                buf *= momentum
                buf += (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p -= lr * g

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled):
        """torch.optim.Adam's (``decoupled``: AdamW's) update of one parameter, in place.

        AdamW first scales p by (1 - lr wd); Adam adds wd p to g. Then m = b1 m + (1 - b1) g,
        v = b2 v + (1 - b2) g^2 and p = p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps),
        t = ``step`` (1 on the first update).
        """
        if weight_decay:
            if decoupled:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * (g * g)
        step_size = lr / (1 - beta1**step)
        denom = self.xp.sqrt(v) / math.sqrt(1 - beta2**step) + eps
        p -= step_size * (m / denom)

    # -- reductions the training loop needs ----------------------------------------------

    def scalar(self, a) -> float:
        """A Python float from a 0-d (or 1-element) array; synchronises the device."""
        return float(a)
