"""Layers with hand-derived backward passes.

A layer keeps in its cache only what its backward pass reads, and reads its parameters from the
model's ``params`` dict by name on every call, so a caller may replace ``params["W1"]`` with a
new array between steps (the course autograder does).
"""

from __future__ import annotations

from .activations import DEFAULT_SLOPE, get_activation
from .errors import ConfigError, ShapeError


class Linear:
    """z = x W^T + b with W (out, in) and b (out,), as ``torch.nn.Linear``.

    Backward (seed 1.2c): dJ/dW = (dJ/dz)^T x, dJ/db = sum over the batch of dJ/dz,
    dJ/dx = (dJ/dz) W.
    """

    def __init__(self, index: int, in_features: int, out_features: int):
        self.index = index
        self.in_features = in_features
        self.out_features = out_features
        self.weight = f"W{index}"
        self.bias = f"b{index}"
        self.x = None

    def __repr__(self):
        return f"Linear{self.index}({self.in_features} -> {self.out_features})"

    def forward(self, backend, params, x, cache=True):
        if cache:
            self.x = x
        W, b = self.checked(params, x.dtype)
        return backend.linear_forward(x, W, b)

    def checked(self, params, dtype):
        """(W, b) from ``params``; ShapeError or ConfigError where a caller assigned one of
        another shape or dtype (``dtype``: the model's) than this layer computes with."""
        W, b = params[self.weight], params[self.bias]
        if getattr(W, "shape", None) != (self.out_features, self.in_features) \
                or getattr(b, "shape", None) != (self.out_features,) \
                or getattr(W, "dtype", None) != dtype or getattr(b, "dtype", None) != dtype:
            _misshapen(self.weight, W, (self.out_features, self.in_features), "out x in", dtype)
            _misshapen(self.bias, b, (self.out_features,), "one per output", dtype)
        return W, b

    def backward(self, backend, params, grads, dz, need_dx=True):
        dx, grads[self.weight], grads[self.bias] = backend.linear_backward(
            dz, self.x, params[self.weight], need_dx
        )
        return dx

    def clear(self):
        self.x = None


def _misshapen(name, a, shape, what, dtype=None) -> None:
    """ShapeError when parameter ``name`` (assigned by a caller) is not of ``shape``;
    ConfigError when it is not of ``dtype`` (given: the model's)."""
    if not hasattr(a, "shape"):
        raise ShapeError(f"parameter {name} must be an array shaped {shape} ({what}), got a "
                         f"{type(a).__name__}")
    if a.shape == shape:
        if dtype is not None and a.dtype != dtype:
            raise ConfigError(f"parameter {name} is {a.dtype}, but the model computes in "
                              f"{dtype}: assign {dtype} values (or move the whole model: "
                              f"model.to({str(a.dtype)!r}))")
        return
    column = name.startswith("b") and a.shape == (shape[0], 1)  # (a Linear's bias)
    raise ShapeError(f"parameter {name} must be shaped {shape} ({what}), got {tuple(a.shape)}"
                     + (": a bias is a vector here, the seed's column b is b.ravel()"
                        if column else ""))


class Activation:
    """y = f(z), elementwise (or row-wise for softmax); backward dJ/dz = dJ/dy * f'(z)."""

    def __init__(self, name: str, slope: float = DEFAULT_SLOPE):
        get_activation(name)  # validates the name
        self.name = name
        self.slope = slope
        self.z = None
        self.y = None

    def __repr__(self):
        return f"Activation({self.name})"

    def forward(self, backend, params, z, cache=True):
        y = backend.act_forward(self.name, z, self.slope)
        if cache:
            self.z, self.y = z, y
        return y

    def backward(self, backend, params, grads, dy, need_dx=True):
        return backend.act_backward(self.name, dy, self.z, self.y, self.slope)

    def clear(self):
        self.z = self.y = None


class _Norm:
    """What the norms share: ``gamma{i}`` and ``beta{i}`` of hidden layer i, the xhat and rstd
    a training pass keeps for backward, and the backward op (``backward_op``)."""

    backward_op = ""

    def __init__(self, index: int, width: int, eps: float):
        self.index = index
        self.width = width
        self.eps = eps
        self.weight = f"gamma{index}"
        self.bias = f"beta{index}"
        self.xhat = self.rstd = None

    def _params(self, params):
        """(gamma, beta), each checked to be one per feature."""
        gamma, beta = params[self.weight], params[self.bias]
        if getattr(gamma, "shape", None) != (self.width,) \
                or getattr(beta, "shape", None) != (self.width,):
            _misshapen(self.weight, gamma, (self.width,), "one per feature")
            _misshapen(self.bias, beta, (self.width,), "one per feature")
        return gamma, beta

    def backward(self, backend, params, grads, dn, need_dx=True):
        dz, grads[self.weight], grads[self.bias] = getattr(backend, self.backward_op)(
            dn, self.xhat, self.rstd, params[self.weight])
        return dz

    def clear(self):
        self.xhat = self.rstd = None


class LayerNorm(_Norm):
    """n = gamma xhat + beta with xhat = (z - mean(z)) / sqrt(var(z) + eps) over each row's
    features, as ``torch.nn.LayerNorm(width, eps)``, between hidden layer i's Linear and its
    activation.

    Backward (docs/math.md): dJ/dgamma = sum over rows of dJ/dn xhat, dJ/dbeta = sum over
    rows of dJ/dn, dJ/dz = rstd (g - mean(g) - xhat mean(g xhat)) with g = dJ/dn gamma and
    rstd = 1 / sqrt(var(z) + eps).
    """

    backward_op = "layer_norm_backward"

    def __repr__(self):
        return f"LayerNorm{self.index}({self.width}, eps={self.eps:g})"

    def forward(self, backend, params, z, cache=True):
        n, xhat, rstd = backend.layer_norm_forward(z, *self._params(params), self.eps)
        if cache:
            self.xhat, self.rstd = xhat, rstd
        return n


class BatchNorm(_Norm):
    """``torch.nn.BatchNorm1d(width, eps, momentum)`` between hidden layer i's Linear and its
    activation: parameters ``gamma{i}``, ``beta{i}``; buffers ``running_mean{i}`` and
    ``running_var{i}`` in the model's ``buffers`` dict.

    A training pass (``cache=True``) normalises each feature with the batch's mean and biased
    variance and moves the running statistics towards them (the variance unbiased, B / (B-1),
    as torch does): r = (1 - momentum) r + momentum stat. Any other pass (``predict``)
    normalises with the running statistics. Backward (training pass, docs/math.md): that of the
    layer norm with the means taken over the batch instead of the features.

    With ``sync`` set (data-parallel training, ``MLP.synced_batch_norm``) it is
    ``torch.nn.SyncBatchNorm``: the statistics and the backward pass's means are over the rows
    of every rank, so the ranks together normalise the batch as one process would.
    """

    backward_op = "batch_norm_backward"

    def __init__(self, index: int, width: int, eps: float, momentum: float, buffers: dict):
        super().__init__(index, width, eps)
        self.momentum = momentum
        self.running_mean = f"running_mean{index}"
        self.running_var = f"running_var{index}"
        self.buffers = buffers  # the model's: arrays replaced there are seen here
        #: None, or the all-reduce of a synced batch norm (``MLP.synced_batch_norm``)
        self.sync = None
        self.rows = 0

    def __repr__(self):
        return f"BatchNorm{self.index}({self.width}, eps={self.eps:g}, momentum={self.momentum:g})"

    def forward(self, backend, params, z, cache=True):
        gamma, beta = self._params(params)
        rm, rv = self.buffers[self.running_mean], self.buffers[self.running_var]
        if not cache:
            return backend.batch_norm_eval(z, gamma, beta, rm, rv, self.eps)
        if self.sync is None:
            rows = z.shape[0]
            self._check_rows(rows)
            n, xhat, rstd, mean, var = backend.batch_norm_forward(z, gamma, beta, self.eps)
        else:
            n, xhat, rstd, mean, var, rows = backend.batch_norm_forward_synced(
                z, gamma, beta, self.eps, self.sync)
            self._check_rows(rows)
        backend.batch_norm_running(rm, rv, mean, var, self.momentum, rows)
        self.xhat, self.rstd, self.rows = xhat, rstd, rows
        return n

    def backward(self, backend, params, grads, dn, need_dx=True):
        if self.sync is None:
            return super().backward(backend, params, grads, dn, need_dx)
        dz, grads[self.weight], grads[self.bias] = backend.batch_norm_backward_synced(
            dn, self.xhat, self.rstd, params[self.weight], self.rows, self.sync)
        return dz

    def _check_rows(self, rows):
        if rows < 2:
            from .errors import ShapeError

            raise ShapeError(f"batch norm (layer {self.index}) needs at least 2 rows in a "
                             f"training pass, got {rows} (as torch.nn.BatchNorm1d)")
