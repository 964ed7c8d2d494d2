"""The backend: an array module plus the ops that layers, losses and optimisers call.

Every op is written once here against ``self.xp``. ``NumpyBackend`` sets ``xp = numpy`` and
``CupyBackend`` sets ``xp = cupy``; each overrides only the ops that have a faster kernel on its
device. Layer, loss and optimiser code calls these ops and never asks which backend it runs on.

Shapes follow ``torch.nn.Linear``: a batch ``x`` is (B, in), a weight ``W`` is (out, in), a bias
``b`` is (out,), so a linear layer computes ``z = x W^T + b``.
"""

from __future__ import annotations

import contextlib
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
        """The device the arrays live on, in words (the CPU's architecture, or the GPU's
        name)."""
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

    def __reduce_ex__(self, protocol):
        """The process's backend of a name (``get_backend``'s) pickles and deep-copies as that
        name: a model or optimiser copied or unpickled gets the same shared backend, not a
        private one. Any other backend (a subclass of one) as its class and settings, its
        loaded kernel modules and per-thread choices left out (made again on use)."""
        from . import _instances

        if _instances.get(self.name) is self:
            from . import get_backend

            return get_backend, (self.name,)
        return super().__reduce_ex__(protocol)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_local", "_kernels", "_kernels_off")}

    # -- linear layer ---------------------------------------------------------------------

    def matmul(self, a, b, out, trans_a=False, trans_b=False):
        """out = op(a) op(b), op transposing when asked; writes ``out`` and returns it.

        Every GEMM of the forward and backward passes goes through here, so that a backend can
        route it to a BLAS call that a CUDA graph can capture (CuPy's own refuses to be).
        """
        a, b = (a.T if trans_a else a), (b.T if trans_b else b)
        if a.shape[-1] == 1 and self.xp is np:  # (NumPy's matmul runs an unvectorised loop
            return np.dot(a, b, out=out)        # over a shared dimension of 1, 5-10x slower
        return self.xp.matmul(a, b, out=out)    # than dot's: dW of a batch of 1)

    #: float32 GEMMs may use TF32 tensor cores (see ``set_tf32``)
    tf32 = False

    def set_tf32(self, on: bool) -> bool:
        """Let float32 GEMMs use TF32 (inputs rounded to 10 mantissa bits, fp32 accumulation;
        faster on NVIDIA GPUs since Ampere). Returns whether this backend has TF32 (not the
        CPU). A step already captured into a CUDA graph keeps the mode it was captured with."""
        return False

    def linear_forward(self, x, W, b):
        """z = x W^T + b, for x (B, in), W (out, in), b (out,)."""
        z = self.xp.empty((x.shape[0], W.shape[0]), dtype=x.dtype)
        self.matmul(x, W, z, trans_b=True)
        z += b
        return z

    def linear_backward(self, dz, x, W, need_dx=True):
        """Gradients of z = x W^T + b given dJ/dz.

        Returns ``(dJ/dx, dJ/dW, dJ/db)`` with dJ/dx = dz W, dJ/dW = dz^T x and dJ/db the column
        sum of dz (every row of the batch adds its own contribution). dJ/dx is None when
        ``need_dx`` is false (the first layer's input needs no gradient during training).
        """
        xp = self.xp
        dW = self.matmul(dz, x, xp.empty((dz.shape[1], x.shape[1]), dtype=dz.dtype),
                         trans_a=True)
        db = dz.sum(axis=0)
        dx = self.matmul(dz, W, xp.empty((dz.shape[0], W.shape[1]), dtype=dz.dtype)) \
            if need_dx else None
        return dx, dW, db

    # -- activations ----------------------------------------------------------------------

    def act_forward(self, name, z, slope=DEFAULT_SLOPE, out=None):
        """y = f(z) for the named activation (see gpunet.activations), into ``out`` if given."""
        return _into(self.xp, get_activation(name).forward(self.xp, z, slope), out)

    def bias_act_forward(self, name, z, b, slope=DEFAULT_SLOPE):
        """z = f(z + b) in place, for z (B, out) straight from the GEMM and b (out,); returns z.

        One pass where a backend has the fused kernel; for the layers whose f'(z) can be read
        off y = f(z) (gpunet.step keeps a single buffer per layer for them).
        """
        self.xp.add(z, b, out=z)
        return z if name == "identity" else self.act_forward(name, z, slope, out=z)

    def act_backward(self, name, dy, z, y, slope=DEFAULT_SLOPE, out=None):
        """dJ/dz = dJ/dy * f'(z), reading the pre-activation z or the saved output y; into
        ``out`` if given (``out`` may be ``dy``)."""
        return _into(self.xp, get_activation(name).backward(self.xp, dy, z, y, slope), out)

    # -- normalisation ----------------------------------------------------------------------
    # Layer norm takes each row's statistics over its features (axis 1), batch norm each
    # feature's over the batch (axis 0); the same operations otherwise. The eager layers and
    # the static step call these with the same buffers' shapes, so the two round alike; every
    # op writes into the given arrays (nothing is allocated when all are given), which keeps
    # them capturable in a CUDA graph.

    def _norm_forward(self, axis, z, gamma, beta, eps, n, xhat, rstd, mean):
        """The first half of a norm's forward pass: the means over ``axis`` into ``mean``
        (which may be ``rstd``), the centred z into ``xhat`` and the (biased) variances, the
        means of the centred squares, into ``rstd``; ``n`` is scratch (it may be ``z``, read
        first). ``_norm_finish`` turns them into rstd, xhat and n.

        As the fused kernels, it sums z - z0, z0 each row's (or column's) first value: exact
        for a constant row, and small terms for a row far from zero, whose float32 mean would
        otherwise carry its magnitude's rounding into every centred value.

        The centred squares are in z's dtype: float32 values spread past about 1.8e19 (the
        square root of float32's largest) overflow them, the variance is inf and xhat 0
        (n = beta), as in the CUDA kernels and torch's float32 norms; the CPU kernels (from
        2^16 elements) square in float64. A float64 temporary here would cost an allocation
        a CUDA graph cannot hold."""
        xp = self.xp
        z0 = z[:, :1] if axis == 1 else z[:1]  # (a view of z: read before n may overwrite it)
        xp.subtract(z, z0, out=xhat)
        xp.mean(xhat, axis=axis, keepdims=True, out=mean)  # the mean of z - z0
        xp.subtract(xhat, mean, out=xhat)  # centred
        xp.add(mean, z0, out=mean)
        xp.multiply(xhat, xhat, out=n)  # n as scratch: the centred squares
        xp.mean(n, axis=axis, keepdims=True, out=rstd)  # the variances, for now

    def _norm_finish(self, gamma, beta, eps, n, xhat, rstd):
        """rstd = 1 / sqrt(var + eps) over the variances in ``rstd``; xhat *= rstd;
        n = gamma xhat + beta."""
        xp = self.xp
        xp.add(rstd, eps, out=rstd)
        xp.sqrt(rstd, out=rstd)
        xp.divide(1, rstd, out=rstd)
        xp.multiply(xhat, rstd, out=xhat)
        xp.multiply(xhat, gamma, out=n)
        xp.add(n, beta, out=n)

    def _norm_backward(self, axis, dn, xhat, rstd, gamma, dz, dgamma, dbeta, t, mean_g,
                       mean_gx):
        """dJ/dbeta and dJ/dgamma (sums over the batch), then dJ/dz = rstd (g - mean(g) -
        xhat mean(g xhat)) with g = dn gamma, the means over ``axis``; dz may be dn."""
        xp = self.xp
        xp.sum(dn, axis=0, out=dbeta)
        xp.multiply(dn, xhat, out=t)
        xp.sum(t, axis=0, out=dgamma)
        xp.multiply(dn, gamma, out=dz)  # g
        xp.mean(dz, axis=axis, keepdims=True, out=mean_g)
        xp.multiply(dz, xhat, out=t)
        xp.mean(t, axis=axis, keepdims=True, out=mean_gx)
        xp.multiply(xhat, mean_gx, out=t)
        xp.subtract(dz, mean_g, out=dz)
        xp.subtract(dz, t, out=dz)
        xp.multiply(dz, rstd, out=dz)

    def _norm_backward_into(self, axis, dn, xhat, rstd, gamma, out, scratch):
        """``_norm_backward`` into ``out`` and ``scratch``, made where not given."""
        xp = self.xp
        if out is None:
            out = (xp.empty_like(dn), xp.empty_like(gamma), xp.empty_like(gamma))
        if scratch is None:
            scratch = (xp.empty_like(dn), xp.empty_like(rstd), xp.empty_like(rstd))
        self._norm_backward(axis, dn, xhat, rstd, gamma, *out, *scratch)
        return out

    def layer_norm_forward(self, z, gamma, beta, eps, out=None):
        """n = gamma xhat + beta, xhat = (z - mean(z)) rstd, rstd = 1 / sqrt(var(z) + eps),
        mean and (biased) variance over each row's features, as ``torch.nn.LayerNorm``.

        Returns ``(n, xhat, rstd)``, rstd shaped (B, 1); ``out``: those three arrays to write
        (``n`` may be ``z``: it is read before ``n`` is written). The variance is the mean of
        the centred squares (two passes), exact for rows far from zero.
        """
        xp = self.xp
        if out is None:
            out = (xp.empty_like(z), xp.empty_like(z), xp.empty((z.shape[0], 1), dtype=z.dtype))
        n, xhat, rstd = out
        self._norm_forward(1, z, gamma, beta, eps, n, xhat, rstd, mean=rstd)
        self._norm_finish(gamma, beta, eps, n, xhat, rstd)
        return n, xhat, rstd

    def layer_norm_backward(self, dn, xhat, rstd, gamma, out=None, scratch=None):
        """Gradients of ``layer_norm_forward`` given dJ/dn.

        dJ/dbeta = sum over rows of dn, dJ/dgamma = sum over rows of dn xhat, and with
        g = dn gamma: dJ/dz = rstd (g - mean(g) - xhat mean(g xhat)), the means over each row
        (docs/math.md derives it). Returns ``(dz, dgamma, dbeta)``; ``out``: those arrays to
        write (``dz`` may be ``dn``); ``scratch``: a (B, width) and two (B, 1) arrays.
        """
        return self._norm_backward_into(1, dn, xhat, rstd, gamma, out, scratch)

    def batch_norm_forward(self, z, gamma, beta, eps, out=None):
        """n = gamma xhat + beta, xhat = (z - mean) rstd over each column (feature) of the
        batch z (B, d), with its mean and (biased) variance, as ``torch.nn.BatchNorm1d`` in
        training. Returns ``(n, xhat, rstd, mean, var)``, the last three shaped (1, d);
        ``out``: those five arrays to write (``n`` may be ``z``)."""
        xp = self.xp
        if out is None:
            stat = (z.shape[1],)
            out = (xp.empty_like(z), xp.empty_like(z),
                   *(xp.empty((1,) + stat, dtype=z.dtype) for _ in range(3)))
        n, xhat, rstd, mean, var = out
        self._norm_forward(0, z, gamma, beta, eps, n, xhat, rstd, mean=mean)
        xp.copyto(var, rstd)
        self._norm_finish(gamma, beta, eps, n, xhat, rstd)
        return out

    def batch_norm_backward(self, dn, xhat, rstd, gamma, out=None, scratch=None):
        """Gradients of ``batch_norm_forward`` given dJ/dn: those of the layer norm with the
        means over the batch (docs/math.md). Returns ``(dz, dgamma, dbeta)``; ``out``: those
        arrays (``dz`` may be ``dn``); ``scratch``: a (B, d) and two (1, d) arrays."""
        return self._norm_backward_into(0, dn, xhat, rstd, gamma, out, scratch)

    # A synced batch norm (torch.nn.SyncBatchNorm) normalises with the statistics of the whole
    # batch while each rank holds a share of its rows. ``allreduce(a)`` sums a float64 array
    # over the ranks in place (every rank calls it, in the same order; a rank without rows
    # adds zeros). The sums are float64 and the variance is taken about the batch's mean
    # (two collectives), so the statistics are those of one process to float rounding.

    def batch_norm_forward_synced(self, z, gamma, beta, eps, allreduce):
        """``batch_norm_forward`` over the rows of every rank's z together. Returns
        ``(n, xhat, rstd, mean, var, rows)``: this rank's rows of n and xhat, the batch's
        statistics (1, d) and its row count over all ranks."""
        xp = self.xp
        d = z.shape[1]
        sums = xp.empty(d + 1, dtype=np.float64)
        xp.sum(z, axis=0, dtype=np.float64, out=sums[:d])
        sums[d] = z.shape[0]
        allreduce(sums)
        rows = int(sums[d])
        mean = (sums[:d] / max(rows, 1)).astype(z.dtype).reshape(1, d)
        xhat = z - mean
        squares = (xhat * xhat).sum(axis=0, dtype=np.float64)
        allreduce(squares)
        var = (squares / max(rows, 1)).astype(z.dtype).reshape(1, d)
        n, rstd = xp.empty_like(z), var.copy()
        self._norm_finish(gamma, beta, eps, n, xhat, rstd)
        return n, xhat, rstd, mean, var, rows

    def batch_norm_backward_synced(self, dn, xhat, rstd, gamma, rows, allreduce):
        """``batch_norm_backward`` of ``batch_norm_forward_synced``: dJ/dgamma and dJ/dbeta
        over this rank's rows (the gradient all-reduce sums them), and this rank's rows of
        dJ/dz, whose means of g and g xhat are over the ``rows`` rows of every rank. dn must be
        in the units of the batch's loss (a rank's dJ/dn scaled by its share) for the sums
        over ranks to be that loss's."""
        xp = self.xp
        d = dn.shape[1]
        dbeta, dgamma = dn.sum(axis=0), (dn * xhat).sum(axis=0)
        sums = xp.empty(2 * d, dtype=np.float64)
        sums[:d], sums[d:] = dbeta, dgamma
        allreduce(sums)
        sums /= max(rows, 1)
        mean_g = (sums[:d] * gamma).astype(dn.dtype)      # mean over the batch of g = dn gamma
        mean_gx = (sums[d:] * gamma).astype(dn.dtype)     # ... of g xhat
        dz = (dn * gamma - mean_g - xhat * mean_gx) * rstd
        return dz, dgamma, dbeta

    def batch_norm_eval(self, z, gamma, beta, running_mean, running_var, eps):
        """A batch norm outside training (torch's eval mode): gamma (z - running_mean) /
        sqrt(running_var + eps) + beta, a fixed affine map of each feature."""
        return (z - running_mean) / self.xp.sqrt(running_var + eps) * gamma + beta

    def batch_norm_running(self, running_mean, running_var, mean, var, momentum, rows,
                           scratch=None):
        """Move a batch norm's running statistics towards a batch's, in place, as torch:
        r = (1 - momentum) r + momentum s, with s the batch's mean, and for the variance its
        unbiased value var B / (B - 1). ``mean``, ``var``: (1, d); ``scratch``: a (d,) array."""
        xp = self.xp
        t = xp.empty_like(running_mean) if scratch is None else scratch
        for running, stat, scale in ((running_mean, mean, momentum),
                                     (running_var, var, momentum * rows / (rows - 1))):
            xp.multiply(running, 1 - momentum, out=running)
            xp.multiply(stat[0], scale, out=t)
            xp.add(running, t, out=running)

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
        """x_ij - logsumexp(x_i), row-wise, computed as (x - max) - log sum exp(x - max).

        A row holding +inf or NaN is NaN throughout, as in torch.log_softmax.
        """
        shifted, lse = self._shift(x)
        return shifted - _nan_if_inf(self.xp, lse)

    def softmax(self, x):
        """exp(x_ij - max_i) / sum_j exp(x_ij - max_i), row-wise."""
        return get_activation("softmax").forward(self.xp, x, None)

    def softmax_cross_entropy(self, logits, labels, scale, out=None):
        """Per-row cross-entropy of softmax(logits) against integer labels, and its gradient.

        loss_i = logsumexp(z_i) - z_i[label_i] and dJ/dz = scale * (softmax(z) - onehot(labels)),
        where ``scale`` is 1/B for a mean over the batch and 1 for a sum. Returns
        ``(loss_per_row, dlogits)``, written into ``out = (loss_per_row, dlogits)`` if given.
        """
        xp = self.xp
        rows = xp.arange(logits.shape[0])
        shifted, lse = self._shift(logits)
        lse = _nan_if_inf(xp, lse)  # a row holding +inf: NaN loss and gradient, as torch's
        loss = lse[:, 0] - shifted[rows, labels]
        p = xp.exp(shifted - lse)
        p[rows, labels] -= 1
        p *= scale
        if out is None:
            return loss, p
        return _into(xp, loss, out[0]), _into(xp, p, out[1])

    def sum_of_squares(self, a):
        """sum(a^2) over every element, as a 0-d array (or scalar) on this backend."""
        return (a * a).sum()

    # -- dropout ---------------------------------------------------------------------------

    def dropout_mask(self, out, p, s0, step, layer, row_offset=0):
        """Write into ``out`` (rows, width) the dropout mask of rate ``p`` for layer ``layer``
        at training step ``step`` (an int, or a 0-d uint64 array on this backend, as a captured
        step reads it) of a model whose ``gpunet.dropout.seed_key`` is ``s0``: 1 / (1 - p)
        where an element is kept, 0 where it is dropped (see ``gpunet.dropout``)."""
        from .. import dropout

        key = dropout.key_of(s0, int(step), layer)
        self.xp.copyto(out, dropout.mask(self.xp, out.shape, p, key, row_offset, out.dtype))
        return out

    # -- optimiser updates (in place on the parameter and its state) ---------------------
    # The learning rate and the step count arrive in ``hyper``, an array on this backend that
    # holds [lr, t]: a captured CUDA graph reads them at every replay, where a Python float
    # would have been frozen into the graph when it was captured. ``tick_hyper`` advances t
    # on the device (it is part of a captured step); ``write_hyper`` sets both from the host
    # (when the learning rate changes, or to start).

    def new_hyper(self):
        """A fresh [lr, t] array for ``sgd_update`` / ``adam_update``."""
        return self.xp.zeros(2, dtype=np.float64)

    def write_hyper(self, hyper, lr, step) -> None:
        """hyper = [lr, step], written from the host."""
        hyper[...] = self.xp.asarray((lr, step), dtype=np.float64)

    def tick_hyper(self, hyper) -> None:
        """t += 1 where it lies (on the device for a GPU backend: no host round trip)."""
        hyper[1:] += 1

    def _hyper_values(self, hyper):
        # The array-module updates below read the two numbers on the host; a backend whose
        # arrays live on a device overrides both updates with kernels that read them there.
        return float(hyper[0]), int(hyper[1])

    def sgd_update(self, p, g, buf, hyper, momentum, dampening, nesterov, weight_decay, first):
        """torch.optim.SGD's update of one parameter, in place; lr = hyper[0].

        g' = g + wd p;  with momentum: buf = g' on the ``first`` step, else
        buf = mu buf + (1 - dampening) g';  g' = g' + mu buf if nesterov else buf;
        p = p - lr g'. ``buf`` is None without momentum.
        """
        lr, _ = self._hyper_values(hyper)
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

    def adam_update(self, p, g, m, v, hyper, beta1, beta2, eps, weight_decay, decoupled):
        """torch.optim.Adam's (``decoupled``: AdamW's) update of one parameter, in place.

        With lr, t = hyper (t = 1 on the first update): AdamW first scales p by (1 - lr wd);
        Adam adds wd p to g. Then m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2 and
        p = p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
        """
        lr, step = self._hyper_values(hyper)
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

    # -- CUDA graphs ----------------------------------------------------------------------

    def capture(self, fn):
        """Record ``fn`` (device work on fixed arrays) for replay; returns the replay callable.

        A backend without graphs returns ``fn`` itself: replaying is running it again, which
        is what a graph does, minus the launch cost. See gpunet.step.StaticStep.
        """
        return fn

    def static_kernels(self):
        """A context in which ops pick their kernels for a static step (one recorded once and
        replayed) rather than for eager calls; a backend without fused kernels has no choice
        to make."""
        return contextlib.nullcontext()

    def evaluating(self):
        """A context for inference and metrics (``MLP.forward(cache=False)``, so ``predict``;
        ``gpunet.train.metrics``): on the numpy backend (``evaluate_on_array_ops``) the
        array-module ops there, whatever the size (but for gelu, gelu_tanh and silu, whose
        array forms cost 10-100 times their kernels), so that work done once per epoch or per
        command does not import and compile kernels (numba: about 0.3 s a process) that
        training never takes. The same ops whatever ran before in the process or another
        thread: the figures do not depend on it."""
        return contextlib.nullcontext()

    # -- reductions the training loop needs ----------------------------------------------

    def scalar(self, a) -> float:
        """A Python float from a 0-d (or 1-element) array; synchronises the device."""
        return float(a)


def _nan_if_inf(xp, lse):
    """``lse`` with +inf made NaN: log-probabilities of a row holding +inf are undefined."""
    return xp.where(lse == xp.inf, xp.nan, lse)


def _into(xp, value, out):
    """``value``, or ``out`` after copying ``value`` into it when ``out`` is given."""
    if out is None or value is out:
        return value
    xp.copyto(out, value)
    return out
