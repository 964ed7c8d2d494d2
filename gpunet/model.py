"""The multilayer perceptron: Linear -> f -> Linear -> f -> ... -> Linear -> g.

For sizes ``[n0, n1, n2]`` this is the seed's two-layer net: z1 = x W1^T + b1, z2 = f(z1),
z3 = z2 W2^T + b2, y_hat = g(z3). Parameters are named ``W1, b1, W2, b2, ...``. With
``norm="layer"`` each hidden layer normalises z before f (Linear -> LayerNorm -> f, as
``torchvision.ops.MLP`` orders them), with parameters ``gamma1, beta1, ...``; ``norm="batch"``
puts a batch norm there, whose running statistics are buffers (``running_mean1``,
``running_var1``, ...).
"""

from __future__ import annotations

import contextlib

import numpy as np

from .activations import ACTIVATIONS, DEFAULT_SLOPE, HIDDEN_ACTIVATIONS
from . import dropout as _dropout
from .backends import get_backend
from .errors import ConfigError, ShapeError, own_parameters
from .init import init_linear
from .layers import Activation, BatchNorm, LayerNorm, Linear
from .losses import (check_loss_output, gradient_of_last_output, made_from_last_output,
                     note_output)
from .optim import check_training_parts

DTYPES = ("float32", "float64")
#: the normalisations a hidden layer can have (``MLP(norm=...)``)
NORMS = ("layer", "batch")


def check_dtype(dtype) -> np.dtype:
    """The numpy dtype for ``dtype`` if gpunet computes in it (float32, float64; torch's
    float32 and float64 dtypes too), else ConfigError."""
    given = dtype
    if type(dtype).__module__ == "torch":  # torch.float64: its name, torch.float64 -> float64
        dtype = str(dtype).rpartition(".")[2]
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ConfigError(f"unsupported dtype {given!r}; valid dtypes: {', '.join(DTYPES)}")
    return dt


def _names_dtype(v) -> bool:
    """Whether ``v`` names a float dtype gpunet computes in (as ``to(torch.float64)`` does)."""
    try:
        check_dtype(v)
    except ConfigError:
        return False
    return True


def _is_seed(v) -> bool:
    """An int >= 0 (numpy's too), as a seed must be; not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0


def _is_real(v) -> bool:
    """A finite real number (numpy's too); not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and bool(np.isfinite(v))


def _real_array(backend, a, what, dtype):
    """``a`` on ``backend`` as ``dtype``; ConfigError unless it holds real numbers that
    ``dtype`` holds (see ``check_narrowed``)."""
    a = backend.asarray(a)
    if a.dtype.kind not in "biuf":
        raise ConfigError(f"{what} must be real numbers, got dtype {a.dtype}")
    with np.errstate(over="ignore"):  # (an overflowing cast: said below, once)
        cast = a.astype(dtype, copy=False)
    return check_narrowed(backend.xp, a, cast, what)


def as_inputs(model, x, what="the features"):
    """``x`` as ``model``'s dtype on its backend (a host array cast on the host, before it
    goes over); ConfigError unless it holds real numbers that the dtype holds."""
    backend = model.backend
    if backend.owns(x):
        return _real_array(backend, x, what, model.dtype)
    host = backend.to_host(x)  # (a host array as it is; another backend's comes over)
    return backend.asarray(_real_array(get_backend("numpy"), host, what, model.dtype))


def check_narrowed(xp, a, cast, what):
    """``cast`` (``a`` cast to a narrower float dtype; ``xp`` their array module); ConfigError
    where a finite value of ``a`` became infinite in it (1e39 in float32), which would
    otherwise come out as NaN predictions or a loss said to diverge."""
    if cast is a or a.dtype.kind != "f" or a.dtype.itemsize <= cast.dtype.itemsize:
        return cast
    if cast.size and bool(xp.isfinite(cast.min())) and bool(xp.isfinite(cast.max())):
        return cast  # (every value finite: min and max are; NaN propagates to them)
    if not bool(xp.isfinite(cast).all()):
        lost = xp.isfinite(a) & ~xp.isfinite(cast)
        if bool(lost.any()):
            v = float(a[lost][0])
            raise ConfigError(f"a value of {what} is beyond {cast.dtype}'s range ({v:g}): "
                              "scale them down, or use a float64 model")
    return cast


class MLP:
    """A multilayer perceptron with hand-derived backward passes.

    Args:
        sizes: layer widths ``[inputs, hidden..., outputs]``, at least two.
        activation: f between layers: relu, leaky_relu, sigmoid, tanh, gelu, gelu_tanh, silu
            or identity.
        output: g after the last layer: any of those, or softmax.
        backend: "numpy", "cupy", "auto" or None (the default: $GPUNET_BACKEND, else auto).
        seed: seeds the host generator that draws the initial weights (identical on every
            backend for one seed).
        dtype: "float32" (default) or "float64".
        init: "auto" (Kaiming before relu-like f, Xavier otherwise) or a name from
            ``gpunet.init.INITIALISERS``; ``init_std`` is the std of "normal".
        slope: leaky_relu's negative slope.
        dropout: the rate p in [0, 1) at which each hidden layer's outputs are zeroed in
            training passes (``forward``, ``train_step``; the rest scaled by 1 / (1 - p)), never
            in ``predict``. Masks come from ``gpunet.dropout``: the same bits on every backend
            for one ``dropout_seed`` (by default derived from ``seed``) and training step
            (``dropout_step``, counted by each training forward).
        norm: None, "layer" or "batch": each hidden layer's z is normalised before f,
            n = gamma (z - mean) / sqrt(var + ``norm_eps``) + beta (gamma starts at 1, beta
            at 0). "layer": over each row's features, as ``torch.nn.LayerNorm``. "batch": over
            the batch, per feature, as ``torch.nn.BatchNorm1d``: training passes use the
            batch's statistics and move the running ones (``buffers``) by ``norm_momentum``;
            ``predict`` uses the running ones. The output layer is not normalised.
    """

    def __new__(cls, *args, **kwargs):
        if "bias" in kwargs and "bias" not in own_parameters(cls, __name__):  # (torchvision.
            # ops.MLP's and nn.Linear's; a user's subclass that names it takes it)
            raise ConfigError("MLP takes no bias= (torch's): every layer has its bias, as "
                              "torch's default bias=True; bias=False is not offered")
        return super().__new__(cls)

    def __init__(self, sizes, activation="relu", output="identity", *, backend=None, seed=0,
                 dtype="float32", init="auto", init_std=0.01, slope=DEFAULT_SLOPE, dropout=0.0,
                 dropout_seed=None, norm=None, norm_eps=1e-5, norm_momentum=0.1):
        given = sizes
        try:
            sizes = None if isinstance(sizes, (str, bytes)) else list(sizes)
        except TypeError:  # not iterable: 5, None, 3.0
            sizes = None
        if not sizes or len(sizes) < 2 or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in sizes
        ):
            spread = [v for v in (given, activation, output) if isinstance(v, int)]
            hint = (f" (one list: MLP({spread}))" if len(spread) > 1
                    and isinstance(given, int) and isinstance(activation, int) else "")
            raise ConfigError(
                f"sizes must list at least two positive integers [inputs, ..., outputs], got "
                f"{given!r}{hint}")
        for i in range(1, len(sizes)):  # (NumPy's own error there is "maximum dimension")
            if int(sizes[i]) * int(sizes[i - 1]) > np.iinfo(np.intp).max:
                raise ConfigError(f"layer {i} ({sizes[i - 1]} -> {sizes[i]}) would hold "
                                  f"{int(sizes[i]) * int(sizes[i - 1]):.3g} weights, more "
                                  "than an array can index")
        if not isinstance(activation, str) or activation not in HIDDEN_ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {activation!r}; valid names: {', '.join(HIDDEN_ACTIVATIONS)}"
            )
        if not isinstance(output, str) or output not in ACTIVATIONS:
            raise ConfigError(
                f"unknown output activation {output!r}; valid names: {', '.join(ACTIVATIONS)}"
            )
        if norm is not None and (not isinstance(norm, str) or norm not in NORMS):
            raise ConfigError(f"unknown norm {norm!r}; valid: None, {', '.join(NORMS)}")
        if norm is not None and not (isinstance(norm_eps, (int, float, np.floating))
                                     and not isinstance(norm_eps, bool)
                                     and 0 < norm_eps < float("inf")):
            raise ConfigError(f"norm_eps must be a finite number > 0, got {norm_eps!r}")
        if not (isinstance(norm_momentum, (int, float, np.floating))
                and not isinstance(norm_momentum, bool) and 0 <= norm_momentum <= 1):
            raise ConfigError(f"norm_momentum must be a number in [0, 1], got {norm_momentum!r}")
        for name, value in (("seed", seed), ("dropout_seed", dropout_seed)):
            if value is not None and not _is_seed(value):
                raise ConfigError(f"{name} must be an integer >= 0 (or None), got {value!r}")
        if not _is_real(slope):
            raise ConfigError(f"slope must be a finite number, got {slope!r}")
        if init == "normal" and not (_is_real(init_std) and init_std >= 0):
            raise ConfigError(f"init_std must be a finite number >= 0, got {init_std!r}")
        self.sizes = [int(n) for n in sizes]
        self.activation = activation
        self.output = output
        self.slope = float(slope)
        self.seed = seed
        self.init = init
        self.dtype = check_dtype(dtype)
        self.dropout = _dropout.check_rate(dropout)
        self.dropout_seed = _dropout.derived_seed(seed) if dropout_seed is None \
            else int(dropout_seed)
        self.dropout_step = 0
        self.norm = norm
        self.norm_eps = float(norm_eps)
        self.norm_momentum = float(norm_momentum)
        #: arrays a pass updates but no optimiser does (a batch norm's running statistics)
        self.buffers = {}
        self._masks = {}
        self.backend = get_backend(backend)

        self.layers = []
        host = {}
        rng = np.random.default_rng(seed)
        last = len(self.sizes) - 1
        for i in range(1, last + 1):
            f = activation if i < last else output
            self.layers.append(Linear(i, self.sizes[i - 1], self.sizes[i]))
            host[f"W{i}"], host[f"b{i}"] = init_linear(
                init, rng, self.sizes[i], self.sizes[i - 1], f, self.slope, init_std
            )
            if norm is not None and i < last:
                width = self.sizes[i]
                if norm == "layer":
                    self.layers.append(LayerNorm(i, width, self.norm_eps))
                else:
                    self.layers.append(BatchNorm(i, width, self.norm_eps, self.norm_momentum,
                                                 self.buffers))
                    self.buffers[f"running_mean{i}"] = np.zeros(width)
                    self.buffers[f"running_var{i}"] = np.ones(width)
                host[f"gamma{i}"] = np.ones(width)
                host[f"beta{i}"] = np.zeros(width)
            self.layers.append(Activation(f, self.slope))
        self.params = {k: self.backend.asarray(v, dtype=self.dtype) for k, v in host.items()}
        self.buffers.update({k: self.backend.asarray(v, dtype=self.dtype)
                             for k, v in self.buffers.items()})
        self.grads = {k: None for k in self.params}

    # -- description ----------------------------------------------------------------------

    def __repr__(self):
        return (
            f"MLP({self.sizes}, activation={self.activation!r}, output={self.output!r}, "
            + (f"dropout={self.dropout:g}, " if self.dropout else "")
            + (f"norm={self.norm!r}, " if self.norm else "")
            + f"backend={self.backend.name!r}, dtype={self.dtype.name!r})"
        )

    @property
    def n_params(self) -> int:
        """How many numbers the parameters hold (weights, biases, norm scales and shifts)."""
        return sum(int(p.size) for p in self.params.values())

    def config(self) -> dict:
        """The architecture as plain JSON-able values (enough to rebuild the model)."""
        return {
            "sizes": self.sizes,
            "activation": self.activation,
            "output": self.output,
            "slope": self.slope,
            "dtype": self.dtype.name,
            "dropout": self.dropout,
            "dropout_seed": self.dropout_seed,
            "dropout_step": self.dropout_step,
            "norm": self.norm,
            "norm_eps": self.norm_eps,
            "norm_momentum": self.norm_momentum,
        }

    @classmethod
    def from_config(cls, cfg: dict, backend=None) -> "MLP":
        """A model of the architecture ``config()`` described (fresh weights: load them with
        ``load_state_dict``), its dropout masks going on from the saved step."""
        model = cls(cfg["sizes"], activation=cfg["activation"], output=cfg["output"],
                    backend=backend, dtype=cfg["dtype"], slope=cfg.get("slope", DEFAULT_SLOPE),
                    dropout=cfg.get("dropout", 0.0), dropout_seed=cfg.get("dropout_seed"),
                    norm=cfg.get("norm"), norm_eps=cfg.get("norm_eps", 1e-5),
                    norm_momentum=cfg.get("norm_momentum", 0.1))
        step = cfg.get("dropout_step", 0)
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ConfigError(f"dropout_step must be an integer >= 0, got {step!r}")
        model.dropout_step = step
        return model

    def blocks(self) -> list:
        """The layers as ``(Linear, LayerNorm, BatchNorm or None, Activation)``, one per
        Linear."""
        blocks, lin, norm = [], None, None
        for layer in self.layers:
            if isinstance(layer, Linear):
                lin, norm = layer, None
            elif isinstance(layer, (LayerNorm, BatchNorm)):
                norm = layer
            else:
                blocks.append((lin, norm, layer))
        return blocks

    # -- forward and backward -------------------------------------------------------------

    def _input(self, x):
        """x for a pass: on this backend in the model's dtype, (batch, inputs)."""
        return self._shaped(_real_array(self.backend, x, "inputs", self.dtype))

    def _checked(self, x):
        """x as it is (a host array stays on the host: predict casts and moves it batch by
        batch), with _input's checks of its kind and shape but not its cast."""
        x = x if self.backend.owns(x) or isinstance(x, np.ndarray) else self.backend.asarray(x)
        if x.dtype.kind not in "biuf":
            raise ConfigError(f"inputs must be real numbers, got dtype {x.dtype}")
        return self._shaped(x)

    def _shaped(self, x):
        first = self.layers[0]
        if x.ndim != 2 or x.shape[1] != first.in_features:
            raise ShapeError(
                f"layer 1 ({first.in_features} -> {first.out_features}) expects inputs shaped "
                f"(batch, {first.in_features}), got {tuple(x.shape)}"
                + (": samples as columns (the seed's x, one sample a column)? give x.T, one "
                   "sample a row" if x.ndim == 2 and x.shape[0] == first.in_features else
                   ": one sample? give x.reshape(1, -1)" if x.ndim == 1
                   and x.shape[0] == first.in_features else "")
            )
        return x

    def forward(self, x, cache=True, row_offset=0):
        """y_hat for a batch x (B, inputs); keeps what backward needs unless ``cache=False``.

        With ``cache`` this is a training pass: a model with dropout drops hidden outputs with
        the masks of step ``dropout_step`` (then counts it); ``row_offset``: the index of x's
        first row in the whole batch, for a share of a batch (data-parallel training). The cache
        holds x itself, not a copy (a float array of the model's dtype on its backend is not
        copied): x changed in place before ``backward`` changes the gradients with it. A pass
        without the cache (``predict``'s) is inference: it leaves the last training pass's
        cache for ``backward`` and runs on the backend's evaluation ops
        (``Backend.evaluating``: on the CPU, NumPy's ops where training would take a kernel).
        """
        if not cache:  # inference: the backend's evaluation ops (Backend.evaluating)
            with self.backend.evaluating():
                return self._forward(x, cache, row_offset)
        return self._forward(x, cache, row_offset)

    def _forward(self, x, cache, row_offset):
        h = self._input(x)
        drop = cache and self.dropout > 0
        masks = {}
        blocks = self.blocks()
        for k, block in enumerate(blocks):
            for layer in block:
                if layer is not None:
                    h = layer.forward(self.backend, self.params, h, cache)
            if drop and k < len(blocks) - 1:  # a hidden layer's output
                m = self.backend.xp.empty(h.shape, dtype=self.dtype)
                self.backend.dropout_mask(m, self.dropout, _dropout.seed_key(self.dropout_seed),
                                          self.dropout_step, k, row_offset)
                masks[k] = m
                h = h * m
        if cache:  # (a pass without a cache, predict's, leaves a training pass's for backward)
            self._masks, self._cached, self._changed, self._evaluated = masks, True, None, False
            note_output(self, h)  # (a loss given it as a target, and data as y_hat: swapped)
        if drop:
            self.dropout_step += 1
        return h

    #: whether ``model(x)`` is a training pass (``train()``, the default) or inference
    #: (``eval()``), as a torch module's mode; ``forward`` and the methods say their own
    training = True

    def __call__(self, x, **kwargs):
        """``forward(x)`` in the model's mode: a training pass (kept for backward; dropout and
        a batch norm's batch statistics) after ``train()``, inference after ``eval()``
        (``forward``'s keywords, given, rule). ``backward`` refuses to follow an eval-mode
        pass (torch differentiates one; gpunet's backward passes are training mode's), until
        a training pass replaces it."""
        cache = kwargs.pop("cache", self.training)
        y_hat = self.forward(x, cache=cache, **kwargs)
        if not (cache or self.training):  # (predict's pass, asked for as torch's forward)
            self._evaluated = True
        return y_hat

    def train(self, mode: bool = True) -> "MLP":
        """``model(x)`` makes training passes (``mode=False``: as ``eval()``); returns self."""
        if not isinstance(mode, (bool, np.bool_)):
            raise ConfigError(f"train(mode) takes True or False, got {mode!r}")
        self.training = bool(mode)
        return self

    def eval(self) -> "MLP":
        """``model(x)`` makes inference passes (``predict``'s: no dropout, a batch norm's
        running statistics, nothing kept for backward), as torch's ``module.eval()``; returns
        self. ``backward`` after such a pass and ``train_step`` are refused until ``train()``:
        gpunet differentiates training passes only."""
        return self.train(False)

    def predict(self, x, batch_size: int | None = None):
        """y_hat for x without keeping a cache (``forward(x, cache=False)``: the backend's
        evaluation ops), in batches of ``batch_size`` rows if given."""
        if batch_size is None:
            return self.forward(x, cache=False)
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
                or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        x = self._checked(x)  # (each batch is cast as it goes: no cast copy of all of x)
        parts = [self.forward(x[i:i + batch_size], cache=False)
                 for i in range(0, x.shape[0], batch_size)]
        return self.backend.xp.concatenate(parts) if parts else self.forward(x, cache=False)

    def backward(self, dJdy_hat, need_dx=True):
        """Back-propagate dJ/dy_hat through every layer; fills ``self.grads``; returns dJ/dx
        (None with ``need_dx=False``, which skips that last product).

        It differentiates the last training pass (``forward`` with the cache: each replaces
        the one before), and its gradients replace those in ``self.grads``: unlike torch's,
        they do not add up over calls (for a batch in parts, add each call's copies). Weights
        changed since that pass by ``optimizer.step()`` or ``load_state_dict`` are refused, as
        torch refuses them; an edit by hand (``model.params["W1"][...] = ...``) is not seen.
        Refused too: a last pass made in eval mode (``model.eval(); model(x)``: torch would
        differentiate it, but gpunet's backward passes are training mode's), unless dJ/dy_hat
        is a loss's of the training pass before it (whose cache the eval pass left), and a
        dJ/dy_hat
        that a loss made from an earlier training pass's y_hat than the last (``o1 = model(x1);
        o2 = model(x2); model.backward(loss(o1, y1)[1])``: the cache is o2's); a dJ/dy_hat
        computed from the loss's (``2 * dJdy_hat``) is not seen.
        """
        if getattr(self, "_evaluated", False) and not made_from_last_output(self, dJdy_hat):
            raise ConfigError("the last forward ran in eval mode (model.eval()), which gpunet "
                              "cannot differentiate (its backward passes are training mode's): "
                              "run a training-mode forward (model.train(); model(x)) and its "
                              "loss first")
        if not getattr(self, "_cached", False):
            raise ConfigError("backward() needs a forward() with cache=True first")
        if getattr(self, "_changed", None):  # (torch raises too: its version counters)
            raise ConfigError(f"the weights changed since the forward pass ({self._changed}): "
                              f"its cache no longer matches them; run forward again first")
        if isinstance(dJdy_hat, tuple):
            raise ConfigError("backward takes dJ/dy_hat, the loss's second return value "
                              "(value, dJdy_hat = loss_fn(y_hat, y)), not the pair")
        if not gradient_of_last_output(self, dJdy_hat):
            raise ConfigError("dJ/dy_hat comes from another forward pass's output than this "
                              "model's last one (whose cache backward differentiates): run the "
                              "loss on the last forward's output")
        g = _real_array(self.backend, dJdy_hat, "dJ/dy_hat", self.dtype)
        out = self.layers[-1]
        if out.y is None or g.shape != out.y.shape:
            raise ShapeError(
                f"dJ/dy_hat shaped {tuple(g.shape)} does not match the output "
                f"{tuple(out.y.shape) if out.y is not None else None}"
            )
        for k, block in reversed(list(enumerate(self.blocks()))):
            if k in self._masks:  # dJ/dh = dJ/d(h m) m
                g = g * self._masks[k]
            for layer in reversed(block):
                if layer is not None:
                    g = layer.backward(self.backend, self.params, self.grads, g,
                                       need_dx=need_dx or k > 0)
        return g

    def train_step(self, x, y, loss_fn, optimizer, weight=None):
        """Forward, loss, backward and one optimiser step; returns the loss (a backend scalar).
        ``weight``: the rows' sample weights, passed to the loss. ``loss_fn`` may be any
        callable ``(y_hat, y) -> (J, dJ/dy_hat)`` and ``optimizer`` any object with a
        ``step()`` (``fit`` takes gpunet's own only). Refused in eval mode (``model.eval()``:
        torch would step on an eval-mode pass; gpunet's backward passes are training mode's)."""
        if not self.training:
            raise ConfigError("train_step trains on a training pass, but the model is in eval "
                              "mode (model.eval()): call model.train() first")
        check_training_parts(self, loss_fn, optimizer, strict=False)
        check_loss_output(loss_fn, self.output)  # (as fit and StaticStep: one's own callable
        y_hat = self.forward(x)                  # loss is not a Loss, and goes free)
        value, dJdy_hat = loss_fn(y_hat, y) if weight is None else \
            loss_fn(y_hat, y, weight=weight)
        self.backward(dJdy_hat, need_dx=False)
        optimizer.step()
        return value

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: each becomes None, or with ``set_to_none=False`` zeros (as
        torch's: an ``optimizer.step()`` then applies only momentum and weight decay, where
        None is refused). Either way a backward replaces them; it does not add to them."""
        if not isinstance(set_to_none, (bool, np.bool_)):
            raise ConfigError(f"zero_grad(set_to_none) takes True or False, got "
                              f"{set_to_none!r}")
        xp = self.backend.xp
        self.grads = {k: None if set_to_none else xp.zeros_like(p)
                      for k, p in self.params.items()}

    @contextlib.contextmanager
    def synced_batch_norm(self, allreduce):
        """Within this block the batch norms' training passes are ``torch.nn.SyncBatchNorm``'s:
        ``allreduce(a)`` sums a float64 array over the ranks in place, and each batch norm
        takes its statistics, and its backward pass's means, over the rows of every rank
        (gpunet.train.fit sets it for data-parallel training). Every rank must then run each
        training forward and backward, a rank without rows on an empty batch, and give
        ``backward`` dJ/dy_hat in the units of the whole batch's loss (its own scaled by its
        share), so that the sums over ranks are that loss's."""
        norms = [layer for layer in self.layers if isinstance(layer, BatchNorm)]
        for layer in norms:
            layer.sync = allreduce
        try:
            yield self
        finally:
            for layer in norms:
                layer.sync = None

    def clear_cache(self) -> None:
        """Drop what the last training forward kept for ``backward`` (and its dropout
        masks)."""
        for layer in self.layers:
            layer.clear()
        self._masks = {}
        self._cached = False

    # -- moving and saving ----------------------------------------------------------------

    def state_dict(self) -> dict:
        """The parameters, then the buffers (a batch norm's running statistics), as host NumPy
        arrays (copies). Not the dropout masks' position (``dropout_step``, in ``config()``):
        a resume by hand that should draw the next masks sets it too."""
        return {k: np.array(self.backend.to_host(v))
                for k, v in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, state: dict) -> None:
        """Copy parameters and buffers (host or device arrays) into the model, checking names
        and shapes."""
        if not isinstance(state, dict):
            raise ConfigError(f"load_state_dict takes a dict of arrays (state_dict()'s), got "
                              f"{type(state).__name__}")
        missing = (set(self.params) | set(self.buffers)) - set(state)
        extra = set(state) - set(self.params) - set(self.buffers)
        if missing or extra:
            torch_like = any(str(k).endswith((".weight", ".bias")) for k in extra)
            raise ShapeError(
                f"state does not fit this model: missing {sorted(missing)}, unexpected "
                f"{sorted(extra)}" + ("; a torch state_dict? gn.MLP.from_torch(net) takes the "
                                      "net" if torch_like else ""))
        new = {}
        for k, old in {**self.params, **self.buffers}.items():
            v = state[k]
            if callable(getattr(v, "detach", None)) and hasattr(v, "requires_grad"):
                v = v.detach().cpu().double().numpy()  # (a torch tensor, Parameter, bfloat16
                # or on a GPU too: its values, exactly, where numpy() refuses those)
            v = _real_array(self.backend, v, k, self.dtype)
            if v.shape != old.shape:
                raise ShapeError(f"{k}: expected shape {tuple(old.shape)}, got {tuple(v.shape)}")
            new[k] = v.copy()
        self.params.update({k: v for k, v in new.items() if k in self.params})
        self.buffers.update({k: v for k, v in new.items() if k in self.buffers})
        self.weights_changed("load_state_dict()")

    def weights_changed(self, how: str) -> None:
        """Note that the parameters changed (``how``: by what), so that a ``backward`` of a
        forward pass made before is refused (its cache holds the old weights' outputs)."""
        if getattr(self, "_cached", False):
            self._changed = how

    def to_torch(self, *, dtype=None, device=None):
        """This net as a ``torch.nn.Sequential`` with a copy of its weights (see
        ``gpunet.interop.to_torch``)."""
        from .interop import to_torch

        return to_torch(self, dtype=dtype, device=device)

    @classmethod
    def from_torch(cls, net, *, backend=None, dtype=None) -> "MLP":
        """An MLP with the architecture and weights of a ``torch.nn.Sequential`` of Linear and
        activation modules (see ``gpunet.interop.from_torch``)."""
        from .interop import from_torch

        return from_torch(net, backend=backend, dtype=dtype)

    def to(self, backend=None, dtype=None) -> "MLP":
        """Move the parameters to another backend and/or dtype, in place; returns self. The
        gradients of a ``backward`` move along, as torch's do (so ``optimizer.step()`` may
        follow); the forward pass's cache does not (a ``backward`` needs a new ``forward``).
        An optimiser of this model moves its state along at its next step. A dtype alone may
        come first, as torch's ``module.to(torch.float64)``: ``to("float64")``."""
        if dtype is None and backend is not None and _names_dtype(backend):  # model.to("float64")
            backend, dtype = None, backend
        self.backend = get_backend(backend) if backend is not None else self.backend
        if dtype is not None:
            self.dtype = check_dtype(dtype)
        # asarray copies across backends and casts, and leaves arrays already in place alone.
        self.params.update({k: self.backend.asarray(v, dtype=self.dtype) for k, v in self.params.items()})
        self.buffers.update({k: self.backend.asarray(v, dtype=self.dtype)
                             for k, v in self.buffers.items()})
        self.grads = {k: None if g is None else self.backend.asarray(g, dtype=self.dtype)
                      for k, g in self.grads.items()}
        self.clear_cache()
        return self
