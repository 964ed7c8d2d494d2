"""A training step on fixed buffers, replayed as one CUDA graph on the GPU.

``StaticStep(model, loss_fn, optimizer, batch_size)`` owns every array that one step of that
batch size touches: the input and target buffers, one buffer per layer (z, then y = f(z), then
dJ/dz), a scratch buffer for dJ/dy (two after an identity hidden layer), the gradients and the
loss. Its body runs forward, loss, backward and the optimiser update through the backend's
ops, writing only into those arrays, so it can be recorded once and replayed:

- on the CuPy backend the first call runs the body eagerly (every kernel compiles, the
  optimiser makes its state), then captures it into a CUDA graph; each later call copies the
  batch into the input buffers and launches the graph: one launch per step instead of one or
  more per op. GEMMs go through the backend's own cuBLAS handle, the learning rate and step
  count through a device array (``Backend.tick_hyper``), so the graph stays valid across
  steps and schedules. Inside the body the backend takes its fused kernels at every size
  (``Backend.static_kernels``): a replayed launch costs no host time.
- on the NumPy backend ``Backend.capture`` returns the body itself: each call runs it, into
  the step's own arrays (NumPy's ops on arrays under the kernels' threshold, 2^16 elements,
  still make short-lived temporaries: about 2 µs an op at 128 x 256).

The eager path (``MLP.train_step``) and this one round the same operations the same way (this
one fuses the bias add into the activation's pass, which rounds z + b as the eager add does),
so they agree to the bit on the CPU and within float rounding on the GPU
(``tests/test_step.py``).

Supported: elementwise activations (the output too), layer and batch norm (``MLP(norm=...)``,
in place over z, keeping xhat and rstd; a batch norm's running statistics move in the step,
in place), ``CrossEntropyLoss`` on integer labels with an identity output (label smoothing
too), ``MSELoss``, ``HuberLoss``, ``BCEWithLogitsLoss`` and ``BCELoss`` (on one output or
several: multilabel), any of them with sample weights (``weighted=True``:
each call passes the rows' weights, and the step scales each row's loss and gradient as
``loss(y_hat, y, weight=w)`` does, with the same operations); SGD, Adam, AdamW; dropout (the
masks of ``gpunet.dropout``, drawn in the step from a training-step counter on the device that
the step advances, so a replay draws new ones: the eager step's masks, to the bit).
``StaticStep.unsupported`` names what does not fit, and callers (``gpunet.train.fit``) then
train eagerly. Fixed when the body is captured: the batch size and every setting of the
optimiser (momentum, betas, eps, weight decay, gradient clipping), the loss (label smoothing,
Huber's delta, the reduction) and the model (dropout rate, norm eps); read at every replay: the
batch, the learning rate, the step count and the dropout step. If the model's parameters, the
optimiser's state or the backend are replaced, or one of those settings changes, the next call
rebuilds and captures again (a captured graph would otherwise replay the old setting).
"""

from __future__ import annotations

import operator

import numpy as np

from .activations import get_activation
from .errors import ConfigError, ShapeError
from .layers import BatchNorm
from .log import notice
from .losses import (LOSSES, ONE_OUTPUT, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss,
                     HuberLoss, MSELoss, check_loss_output, smoothing_terms)
from .optim import SGD, Adam, AdamW


#: the model's settings a static step holds by value (``MLP.config()`` but the sizes and
#: dtype, which the buffers hold, and the dropout step, read at every replay)
_MODEL_SETTINGS = operator.attrgetter("activation", "output", "slope", "dropout", "dropout_seed",
                                      "norm", "norm_eps", "norm_momentum")


#: what a layer of the model holds that a static step reads by value
_LAYER_SETTINGS = ("name", "slope", "eps", "momentum")


def _settings_reader(opt, loss, model):
    """A function (opt, loss, model) -> the settings ``StaticStep._settings`` compares, read
    by attrgetters of the optimiser's and the loss's setting names (their
    ``hyperparameters()`` but lr, their ``config()``); where those are not all attributes (a
    subclass's own), their dicts (without the dropout step, which moves every step)."""
    names = [k for k in opt.hyperparameters() if k != "lr"]
    get_opt = operator.attrgetter(*names) if names else (lambda o: ())
    get_loss = operator.attrgetter(*loss.config())
    held = [(i, operator.attrgetter(*keys)) for i, keys in (
        (i, [k for k in _LAYER_SETTINGS if hasattr(layer, k)])
        for i, layer in enumerate(model.layers)) if keys]  # (a Linear holds none)

    def layers(model):
        return tuple(get(model.layers[i]) for i, get in held)

    try:
        get_opt(opt), get_loss(loss), _MODEL_SETTINGS(model)
    except AttributeError:  # (a subclass's settings that are not its attributes)
        return lambda o, f, m: repr((
            {k: v for k, v in o.hyperparameters().items() if k != "lr"}, f.config(),
            {k: v for k, v in m.config().items() if k != "dropout_step"}, layers(m)))
    return lambda o, f, m: (get_opt(o), get_loss(f), _MODEL_SETTINGS(m), layers(m))


class StaticStep:
    """One training step of ``batch_size`` rows on fixed buffers (see the module docstring).

    Call it as ``loss, correct = step(x, y, rows)``: ``x`` (n, inputs) and ``y`` (n,) labels or
    (n, outputs) targets, on the model's backend or on the host (on a device backend only the
    batch's rows go over); ``rows`` (batch_size,) integer indices, an array or a list, pick the
    batch (None: x and y are the batch; rows given on the host are checked against x there).
    With ``weighted=True``: ``step(x, y, rows, w)``, ``w`` (n,) the sample weights of the rows
    of x. Inputs, targets and weights of another dtype are cast as the batch is copied in.
    Returns two 0-d arrays on the backend, overwritten by the next call: the loss and, with
    ``count_correct``, how many rows are predicted right (as ``fit`` counts them: the argmax,
    or a one-output or multilabel head's probabilities over 0.5), else 0.
    ``graph=False`` runs the body eagerly on the GPU too. Labels are checked as the loss checks
    them (``CrossEntropyLoss(check_labels=...)``, on by default: a GPU reads two numbers back);
    labels of another integer dtype, or targets of another float one, are converted.
    Its passes are training passes whatever the model's mode (``model.eval()``), as ``fit``'s
    are: the step trains, with dropout and a batch norm's batch statistics (the eager
    ``MLP.train_step``, a torch-style loop's step, refuses eval mode instead).

    A data-parallel rank's step (``gpunet.train.fit`` under a communicator) is ``split``: a
    call runs forward, loss and backward only (one graph), the caller sums the gradients over
    the ranks in ``flat`` (every gradient, as views into it, then ``extras`` free slots for
    what travels with them), and ``update()`` runs the optimiser's update (a second graph).
    ``row_offset``: the index of the batch's first row in the whole batch of all ranks, for
    the dropout masks (the rank's share of the batch's masks).
    """

    def __init__(self, model, loss_fn, optimizer, batch_size, *, count_correct=False,
                 graph=True, weighted=False, split=False, row_offset=0, extras=0):
        why = self.unsupported(model, loss_fn, optimizer)
        if why:
            raise ConfigError(f"no static training step here: {why}")
        check_loss_output(loss_fn, model.output)  # (as fit: the step checks no values)
        if count_correct and type(loss_fn) not in (CrossEntropyLoss, BCELoss,
                                                   BCEWithLogitsLoss):
            raise ConfigError("count_correct counts predicted classes against the labels: it "
                              "needs cross_entropy, bce or bce_logits")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if getattr(model, "norm", None) == "batch" and batch_size < 2 and not split:
            raise ShapeError(f"batch norm needs at least 2 rows in a training pass, got a "
                             f"static step of {batch_size} (as torch.nn.BatchNorm1d)")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.batch_size = int(batch_size)
        self.count_correct = bool(count_correct)
        self.weighted = bool(weighted)
        self.graph = bool(graph)
        self.split = bool(split)
        self.row_offset = int(row_offset)
        self.extras = int(extras)
        self.captured = False  # whether calls replay a CUDA graph (False on the CPU)
        self._binding = None
        self._read_settings = None  # (made at the first _settings call)
        self._replay = self._replay_update = None
        self._w_checked = None  # the weights array last checked (once per array)
        self._w_each = False  # its weights could overflow a batch's sum: check each batch
        #: check rows given on the host against x at every call (fit, whose rows are slices
        #: of its own permutation, turns it off: a min and a max a step saved)
        self.check_rows = True

    def _rows_of(self, a, rows, host_rows):
        """``a``'s rows ``rows`` on the backend: picked on the host where ``a`` is a host array
        on a device backend (only they go over), else by the backend's take."""
        if self.backend.owns(a):
            return self.backend.xp.take(a, rows, axis=0)
        picked = np.asarray(a)[host_rows if host_rows is not None
                               else self.backend.to_host(rows)]
        return self.backend.asarray(picked)

    def _check_weights(self, w, x):
        """The checks the eager loss makes of sample weights, once per weights array (fit's
        were checked with its data): one weight a row of x, real numbers, and on the host
        (where reading them is free) finite, >= 0 and summing to what the model's dtype
        holds. Returns them as an array (a list: on the backend)."""
        name = type(self.loss_fn).__name__
        given = w
        if not hasattr(w, "dtype"):  # (a list or tuple)
            w = np.asarray(w)
        if getattr(w, "shape", None) != (len(x),):
            raise ShapeError(f"{name}: sample weights shaped {tuple(getattr(w, 'shape', ()))} "
                             f"do not match the {len(x)} rows of x; expected ({len(x)},)")
        if w.dtype.kind not in "biuf":
            raise ConfigError(f"{name}: sample weights must be real numbers, got dtype "
                              f"{w.dtype}")
        if isinstance(w, np.ndarray) and w.size:
            bad = w[~np.isfinite(w) | (w < 0)]
            if bad.size:
                raise ConfigError(f"{name}: sample weights must be finite numbers >= 0, got "
                                  f"{float(bad[0]):g}")
            # a batch's sum must fit (as the eager loss checks it): where even the largest
            # weights of a batch fit, every batch's do; else each batch's sum is checked
            k = min(self.batch_size, w.size)
            largest = float(np.partition(w, w.size - k)[w.size - k:].sum(dtype=np.float64))
            self._w_each = largest > float(np.finfo(self.model.dtype).max)
        if w is not given:  # (a list: as an array, checked once per call)
            w = self.model.backend.asarray(w)
        self._w_checked = w  # (a host array stays there: only its batch's rows go over)
        return w

    @staticmethod
    def unsupported(model, loss_fn, optimizer) -> str:
        """Why this model / loss / optimiser cannot take static steps ("" when they can)."""
        for _, _, act in model.blocks():
            if not get_activation(act.name).elementwise:
                return (f"the {act.name} output is row-wise (give the model "
                        "output='identity' and train it with cross_entropy, which applies the "
                        "softmax itself)")
        # Exact types: the step computes these losses itself and a graph replays no Python, so
        # a subclass's own __call__ or _update would be skipped.
        if type(loss_fn) is CrossEntropyLoss:
            if model.output != "identity":
                return "cross_entropy needs the identity output (logits)"
        elif type(loss_fn) not in LOSSES.values():
            return f"{type(loss_fn).__name__} is not one of gpunet's own losses"
        if type(optimizer) not in (SGD, Adam, AdamW):
            return f"{type(optimizer).__name__} is not gpunet's SGD, Adam or AdamW"
        if optimizer.model is not model:
            return "the optimizer belongs to another model"
        return ""

    @property
    def graph_pool_bytes(self) -> int:
        """Device memory held by the captured graph's private pool (0 without a graph)."""
        keep = getattr(self._replay, "keep", None)
        return int(keep[2].total_bytes()) if keep else 0

    # -- buffers ------------------------------------------------------------------------------

    def _build(self, x, y):
        model = self.model
        self._read_settings = None  # (its layers' getters: for these layers)
        self._built_with = self._settings()
        backend, dtype, n = model.backend, model.dtype, self.batch_size
        xp = backend.xp
        for lin, _, _ in model.blocks():  # (parameters a caller assigned: as forward checks)
            lin.checked(model.params, dtype)
        if isinstance(self.loss_fn, CrossEntropyLoss):
            if y.dtype.kind not in "iu" or y.ndim != 1:
                raise ConfigError("the static step takes cross_entropy targets as integer "
                                  f"labels (n,), got {y.dtype} {tuple(y.shape)}")
            self.y = xp.empty(n, dtype=y.dtype)
        else:
            if tuple(y.shape[1:]) != (model.sizes[-1],):
                raise ShapeError(f"{type(self.loss_fn).__name__}: targets shaped "
                                 f"{tuple(y.shape)} do not match "
                                 f"{model.sizes[-1]} outputs; expected (n, {model.sizes[-1]})")
            self.y = xp.empty((n, model.sizes[-1]), dtype=dtype)
        self.backend = backend
        self.x = xp.empty((n, model.sizes[0]), dtype=dtype)
        # One buffer per layer holds z, then y = f(z) in place, then dJ/dz in place: every
        # activation here but the gelus, silu and a leaky_relu with a negative slope can take its
        # backward from y (relu'(z) = [y > 0]), so z need not outlive the forward.
        # A norm works in place over z too, keeping xhat and rstd for its backward (rstd
        # (n, 1) for a layer norm; a batch norm's (1, d), with the batch's mean and variance
        # and scratch for its backward and its running statistics).
        self.z, self.a, self.grads = [], [], {}
        self.xhat, self.rstd, self.bn = [], [], []
        for lin, norm, act in model.blocks():
            a = xp.empty((n, lin.out_features), dtype=dtype)
            self.a.append(a)
            self.z.append(a if _backward_from_output(act) else xp.empty_like(a))
            batch = isinstance(norm, BatchNorm)
            stat = (1, lin.out_features) if batch else (n, 1)
            self.xhat.append(None if norm is None else xp.empty_like(a))
            self.rstd.append(None if norm is None else xp.empty(stat, dtype=dtype))
            # a batch norm's: the batch's mean and variance, two means for its backward, and
            # one (d,) array for its running statistics' update
            self.bn.append(tuple(xp.empty(stat, dtype=dtype) for _ in range(4))
                           + (xp.empty(lin.out_features, dtype=dtype),) if batch else None)
        # every gradient a view into one flat buffer, in the order of model.params (then the
        # free slots): a data-parallel step sums them over the ranks in one collective there
        self.flat = xp.empty(model.n_params + self.extras, dtype=dtype)
        off = 0
        for key, p in model.params.items():
            self.grads[key] = self.flat[off:off + p.size].reshape(p.shape)
            off += p.size
        if any(r is not None for r in self.rstd):  # the norms' backward scratch
            self.norm_scratch = (xp.empty(n * max(model.sizes[1:-1]), dtype=dtype),
                                 xp.empty((n, 1), dtype=dtype), xp.empty((n, 1), dtype=dtype))
        self.g = self._plan_grads(xp, dtype)
        # dropout: each hidden layer's mask, and its output times the mask (the next layer's
        # input; y stays for the activation's backward); the step counter on the device
        self.drop = float(getattr(model, "dropout", 0.0))
        self.m = [xp.empty_like(a) for a in self.a[:-1]] if self.drop else []
        self.d = [xp.empty_like(a) for a in self.a[:-1]] if self.drop else []
        if self.drop:
            from .dropout import seed_key

            self.s0 = seed_key(model.dropout_seed)
            self.dstep = xp.zeros((), dtype=np.uint64)
            self._dstep_host = None
        if isinstance(self.loss_fn, (MSELoss, HuberLoss)):  # the elements' terms
            self.squares = xp.empty((n, model.sizes[-1]), dtype=dtype)
        if isinstance(self.loss_fn, HuberLoss):  # |d|, the linear part's terms, where it is
            self.huber = (xp.empty_like(self.squares), xp.empty_like(self.squares),
                          xp.empty(self.squares.shape, dtype=bool))
        if isinstance(self.loss_fn, (BCELoss, BCEWithLogitsLoss)):  # the terms, two scratches
            shape = (n, model.sizes[-1])
            self.terms = xp.empty(shape, dtype=dtype)
            self.bce = (xp.empty(shape, dtype=dtype), xp.empty(shape, dtype=dtype))
        if isinstance(self.loss_fn, CrossEntropyLoss) and self.loss_fn.label_smoothing:
            c = model.sizes[-1]  # arange(C), then smoothing_terms' (mask, W, zW, extra)
            self.cols = xp.arange(c, dtype=y.dtype)
            self.smooth = (xp.empty((n, c), dtype=bool), xp.empty((n, c), dtype=dtype),
                           xp.empty((n, c), dtype=dtype), xp.empty(n, dtype=dtype))
        self.loss_rows = xp.empty(n, dtype=dtype)
        self.loss = xp.zeros((), dtype=dtype)
        if self.weighted:  # the rows' weights, and each row's scale r_i (see Loss._row_scale)
            self.w = xp.empty(n, dtype=dtype)
            self.w_total = xp.zeros((), dtype=dtype)
            self.w_empty = xp.zeros((), dtype=bool)
            self.r = xp.empty((n, 1), dtype=dtype)
            self.r2 = xp.empty((n, 1), dtype=dtype)
        self.correct = xp.zeros((), dtype=np.int64)
        if self.count_correct and isinstance(self.loss_fn, CrossEntropyLoss):
            self.pred = xp.empty(n, dtype=np.intp)
            self.hit = xp.empty(n, dtype=bool)
        elif self.count_correct:  # each output thresholded, each row right in every column
            self.pred = xp.empty((n, model.sizes[-1]), dtype=bool)
            self.hits = xp.empty((n, model.sizes[-1]), dtype=bool)
            self.hit = xp.empty(n, dtype=bool)
        self.params = dict(model.params)
        self._replay = self._replay_update = None
        self.captured = False

    def _bound_to(self):
        """Everything the body (and a captured graph) holds by address."""
        opt = self.optimizer
        return ([self.model.backend, opt._hyper, opt, self.loss_fn, *self.model.layers]
                + list(self.model.params.values())
                + list(self.model.buffers.values())
                + [a for slots in opt.state.values() for a in slots.values()])

    def _settings(self):
        """Everything else the body (and a captured graph) holds by value: the optimiser's
        settings but the learning rate, the loss's, the model's and each of its layers' (an
        activation's slope, a norm's eps and momentum: what the body reads), the dropout step
        aside (the learning rate and that step are read at every replay). Read as attributes
        by an ``attrgetter`` each, made for the optimiser's and the loss's classes (about 1 µs
        a call, where the dicts of ``hyperparameters()`` and ``config()`` took 10: an eighth
        of a replayed GPU step)."""
        opt, loss, model = self.optimizer, self.loss_fn, self.model
        kinds = (type(opt), type(loss))
        if self._read_settings is None or self._read_settings[0] != kinds:
            self._read_settings = kinds, _settings_reader(opt, loss, model)
        return self._read_settings[1](opt, loss, model)

    def _still_bound(self) -> bool:
        now = self._bound_to()
        return (len(now) == len(self._binding) and all(a is b for a, b in zip(now, self._binding))
                and self._settings() == self._built_with)

    # -- the step -------------------------------------------------------------------------------

    def _plan_grads(self, xp, dtype):
        """Where each layer's dJ/dy lands, top down: the top one in place over the output
        (cross-entropy writes dJ/dlogits over the logits; MSE with an identity output writes
        y_hat - y over y_hat) or in a buffer of its own; below it, a scratch buffer. dJ/dy of
        layer i is computed from dJ/dz of layer i + 1, so it takes a second scratch only where
        that dJ/dz lies in the first: after an identity hidden layer, whose dJ/dz is its dJ/dy.
        """
        acts = [act for _, _, act in self.model.blocks()]
        n, last = self.batch_size, len(self.a) - 1
        in_place = isinstance(self.loss_fn, CrossEntropyLoss) or acts[-1].name == "identity"
        g = [None] * (last + 1)
        g[last] = self.a[last] if in_place else xp.empty_like(self.a[last])
        scratch = []
        for i in range(last - 1, -1, -1):
            above = g[i + 1] if acts[i + 1].name == "identity" else self.z[i + 1]
            k = 1 if scratch and _shares_memory(above, scratch[0]) else 0
            if k == len(scratch):
                widest = n * max(self.model.sizes[1:-1])
                scratch.append(xp.empty(widest, dtype=dtype))
            g[i] = scratch[k][:n * self.a[i].shape[1]].reshape(n, self.a[i].shape[1])
        return g

    def _body(self):
        with self.backend.static_kernels():  # fused kernels at every size (a graph's launch
            self._forward_backward_ops()     # costs no host time per kernel)
            self._update_ops()

    def _forward_backward(self):
        with self.backend.static_kernels():
            self._forward_backward_ops()

    def _update(self):
        with self.backend.static_kernels():
            self._update_ops()

    def _forward_backward_ops(self):
        backend, xp, params = self.backend, self.backend.xp, self.params
        blocks = self.model.blocks()
        last = len(self.a) - 1
        h = self.x
        for i, (lin, norm, act) in enumerate(blocks):
            z = self.z[i]
            backend.matmul(h, params[lin.weight], z, trans_b=True)  # z = h W^T
            if z is self.a[i] and norm is None:  # y = f(z + b) over z, one pass
                backend.bias_act_forward(act.name, z, params[lin.bias], act.slope)
            else:
                xp.add(z, params[lin.bias], out=z)
                if isinstance(norm, BatchNorm):  # n = gamma xhat + beta, over z; then the
                    mean, var, _, _, tmp = self.bn[i]  # running statistics
                    backend.batch_norm_forward(z, params[norm.weight], params[norm.bias],
                                               norm.eps, out=(z, self.xhat[i], self.rstd[i],
                                                              mean, var))
                    backend.batch_norm_running(self.model.buffers[norm.running_mean],
                                               self.model.buffers[norm.running_var], mean, var,
                                               norm.momentum, self.batch_size, scratch=tmp)
                elif norm is not None:  # n = gamma xhat + beta, over z
                    backend.layer_norm_forward(z, params[norm.weight], params[norm.bias],
                                               norm.eps, out=(z, self.xhat[i], self.rstd[i]))
                backend.act_forward(act.name, z, act.slope, out=self.a[i])
            h = self.a[i]
            if self.drop and i < len(self.a) - 1:  # h~ = h m
                backend.dropout_mask(self.m[i], self.drop, self.s0, self.dstep, i,
                                     self.row_offset)
                xp.multiply(h, self.m[i], out=self.d[i])
                h = self.d[i]
        n_out = h.shape[1]
        if self.count_correct:  # before dJ/dlogits is written over the logits
            self._count_correct(h)
        g = self.g[last]  # dJ/dy_hat
        if self.weighted:
            self._weighted_loss(h, g)
        elif isinstance(self.loss_fn, CrossEntropyLoss):
            scale = self.loss_fn._scale(self.batch_size)
            smooth = self._smoothing(h)  # (read from the logits before g replaces them)
            backend.softmax_cross_entropy(h, self.y, scale, out=(self.loss_rows, g))
            if smooth is not None:
                w, extra = smooth
                xp.add(self.loss_rows, extra, out=self.loss_rows)
                xp.multiply(w, scale, out=w)
                xp.add(g, w, out=g)
            self.loss_rows.sum(out=self.loss)
            xp.multiply(self.loss, scale, out=self.loss)
        elif isinstance(self.loss_fn, (BCELoss, BCEWithLogitsLoss)):
            scale = self.loss_fn._scale(self.batch_size * n_out)
            self._bce(h, g, scale)
        elif isinstance(self.loss_fn, HuberLoss):  # J = scale sum h(d), dJ/dy_hat = scale clip(d)
            scale = self.loss_fn._scale(self.batch_size * n_out)
            self._huber(h, g)
            self.squares.sum(out=self.loss)
            xp.multiply(self.loss, scale, out=self.loss)
            xp.multiply(g, scale, out=g)
        else:  # MSE: J = scale sum (y_hat - y)^2, dJ/dy_hat = 2 scale (y_hat - y)
            scale = self.loss_fn._scale(self.batch_size * n_out)
            xp.subtract(h, self.y, out=g)
            xp.multiply(g, g, out=self.squares)
            self.squares.sum(out=self.loss)
            xp.multiply(self.loss, scale, out=self.loss)
            xp.multiply(g, 2 * scale, out=g)
        for i in range(last, -1, -1):
            lin, norm, act = blocks[i]
            if self.drop and i < last:  # dJ/dh = dJ/dh~ m
                xp.multiply(g, self.m[i], out=g)
            dz = g
            if act.name != "identity":  # dJ/dz = dJ/dy f'(z), over y (or z) in place
                dz = backend.act_backward(act.name, g, self.z[i], self.a[i], act.slope,
                                          out=self.z[i])
            if norm is not None:  # dJ/dz from dJ/dn, in place
                t, mean_g, mean_gx = self.norm_scratch
                if isinstance(norm, BatchNorm):
                    mean_g, mean_gx = self.bn[i][2:4]
                getattr(backend, norm.backward_op)(
                    dz, self.xhat[i], self.rstd[i], params[norm.weight],
                    out=(dz, self.grads[norm.weight], self.grads[norm.bias]),
                    scratch=(t[:dz.size].reshape(dz.shape), mean_g, mean_gx))
            h_in = (self.d[i - 1] if self.drop else self.a[i - 1]) if i else self.x
            backend.matmul(dz, h_in, self.grads[lin.weight], trans_a=True)  # dW = dz^T h
            dz.sum(axis=0, out=self.grads[lin.bias])
            if i:
                g = self.g[i - 1]
                backend.matmul(dz, params[lin.weight], g)  # dJ/dh = dz W
        if self.drop:
            xp.add(self.dstep, np.uint64(1), out=self.dstep)

    def _update_ops(self):
        self.backend.tick_hyper(self.optimizer._hyper)
        self.optimizer.apply(self.grads)

    def _weighted_loss(self, h, g):
        """The loss and dJ/dy_hat (into ``g``) with the rows' weights: the operations of
        ``Loss._row_scale`` and the loss's weighted branch, into the step's buffers."""
        xp, loss_fn, r = self.backend.xp, self.loss_fn, self.r
        ce = isinstance(loss_fn, CrossEntropyLoss)
        if loss_fn.reduction == "mean":  # r = w / (K sum(w)), or 0 where sum(w) is 0
            self.w.sum(out=self.w_total)
            xp.multiply(self.w_total, 1 if ce else h.shape[1], out=self.w_total)
            xp.equal(self.w_total, 0, out=self.w_empty)
            xp.add(self.w_total, self.w_empty, out=self.w_total)
            xp.divide(self.w, self.w_total, out=r[:, 0])
        else:
            xp.copyto(r[:, 0], self.w)
        if ce:
            smooth = self._smoothing(h)
            self.backend.softmax_cross_entropy(h, self.y, 1.0, out=(self.loss_rows, g))
            if smooth is not None:
                xp.add(self.loss_rows, smooth[1], out=self.loss_rows)
                xp.add(g, smooth[0], out=g)
            xp.multiply(g, r, out=g)
            xp.multiply(self.loss_rows, r[:, 0], out=self.loss_rows)
            self.loss_rows.sum(out=self.loss)
        elif isinstance(loss_fn, HuberLoss):  # J = sum h(d) r, dJ/dy_hat = clip(d) r
            self._huber(h, g)
            xp.multiply(self.squares, r, out=self.squares)
            self.squares.sum(out=self.loss)
            xp.multiply(g, r, out=g)
        elif isinstance(loss_fn, (BCELoss, BCEWithLogitsLoss)):
            self._bce(h, g, r)
        else:  # J = sum (y_hat - y)^2 r, dJ/dy_hat = (y_hat - y) 2 r
            xp.subtract(h, self.y, out=g)
            xp.multiply(g, g, out=self.squares)
            xp.multiply(self.squares, r, out=self.squares)
            self.squares.sum(out=self.loss)
            xp.multiply(r, 2, out=self.r2)
            xp.multiply(g, self.r2, out=g)

    def _count_correct(self, h):
        """The batch's correct predictions into ``correct``: the argmax against the labels
        (cross-entropy), or each output over its threshold (0 for logits, 0.5 for a sigmoid
        output) against its 0/1 target, a row correct where every output is."""
        xp = self.backend.xp
        if isinstance(self.loss_fn, CrossEntropyLoss):
            xp.argmax(h, axis=1, out=self.pred)
            xp.equal(self.pred, self.y, out=self.hit)
        else:
            xp.greater(h, 0.5 if self.model.output == "sigmoid" else 0.0, out=self.pred)
            xp.equal(self.pred, self.y, out=self.hits)
            self.hits.all(axis=1, out=self.hit)
        self.hit.sum(out=self.correct)

    def _smoothing(self, h):
        """Label smoothing's (W, extra) for the logits ``h`` (``losses.smoothing_terms``), or
        None without smoothing."""
        e = getattr(self.loss_fn, "label_smoothing", 0.0)
        if not e:
            return None
        return smoothing_terms(self.backend.xp, h, self.y, e, self.cols, out=self.smooth)

    def _bce(self, h, g, scale):
        """The loss (into ``loss``) and dJ/dy_hat (into ``g``, which may be ``h``) of
        BCEWithLogitsLoss or BCELoss, with the operations of their ``__call__`` in the same
        order; ``scale`` a number, or the rows' scales r (n, 1) with weights."""
        xp, y, t = self.backend.xp, self.y, self.terms
        a, b = self.bce
        weighted = not isinstance(scale, float)
        if isinstance(self.loss_fn, BCEWithLogitsLoss):
            # terms = max(z, 0) - z y + log(1 + e^-|z|); dJ/dz = scale (sigmoid(z) - y)
            xp.maximum(h, 0, out=t)
            xp.multiply(h, y, out=a)
            xp.subtract(t, a, out=t)
            xp.abs(h, out=a)
            xp.negative(a, out=a)
            xp.exp(a, out=a)
            xp.log1p(a, out=a)
            xp.add(t, a, out=t)
            if weighted:
                xp.multiply(t, scale, out=t)
            t.sum(out=self.loss)
            if not weighted:
                xp.multiply(self.loss, scale, out=self.loss)
            self.backend.act_forward("sigmoid", h, out=g)
            xp.subtract(g, y, out=g)
            xp.multiply(g, scale, out=g)
            return
        # terms = y log p + (1 - y) log(1 - p), each log at least -100; J = -scale sum terms;
        # dJ/dp = scale (p - y) / max(p (1 - p), 1e-12)
        with np.errstate(divide="ignore"):
            xp.log(h, out=a)
            xp.maximum(a, -100, out=a)
            xp.subtract(1, h, out=b)
            xp.log(b, out=b)
            xp.maximum(b, -100, out=b)
        xp.multiply(y, a, out=t)
        xp.subtract(1, y, out=a)
        xp.multiply(a, b, out=a)
        xp.add(t, a, out=t)
        if weighted:
            xp.multiply(t, scale, out=t)
        t.sum(out=self.loss)
        xp.negative(self.loss, out=self.loss)
        if not weighted:
            xp.multiply(self.loss, scale, out=self.loss)
        xp.subtract(1, h, out=a)
        xp.multiply(h, a, out=a)
        xp.maximum(a, 1e-12, out=a)
        xp.subtract(h, y, out=b)
        xp.divide(b, a, out=b)
        xp.multiply(b, scale, out=g)

    def _huber(self, h, g):
        """HuberLoss's operations into the step's buffers: its terms h(d) into ``squares``
        (d^2 / 2 within delta, delta (|d| - delta/2) beyond) and clip(d, -delta, delta) into
        ``g``, d = y_hat - y; unscaled."""
        xp, delta = self.backend.xp, self.loss_fn.delta
        a, linear, beyond = self.huber
        xp.subtract(h, self.y, out=g)  # d
        xp.abs(g, out=a)
        xp.multiply(g, 0.5, out=self.squares)  # (0.5 d) d, as the loss rounds it
        xp.multiply(self.squares, g, out=self.squares)
        xp.subtract(a, 0.5 * delta, out=linear)
        xp.multiply(linear, delta, out=linear)
        xp.greater(a, delta, out=beyond)
        xp.copyto(self.squares, linear, where=beyond)
        xp.clip(g, -delta, delta, out=g)

    def __call__(self, x, y, rows=None, w=None):
        model, opt = self.model, self.optimizer
        x, y, rows, w = (_from_torch(a) for a in (x, y, rows, w))  # (as the eager step takes)
        if (w is None) == self.weighted:
            raise ConfigError("this static step was built with weighted=True: pass the rows' "
                              "weights" if self.weighted else "this static step was built "
                              "without weights (StaticStep(..., weighted=True) takes them)")
        width = model.sizes[0]
        if getattr(x, "ndim", None) != 2 or x.shape[1] != width:
            raise ShapeError(f"layer 1 ({width} -> {model.sizes[1]}) expects inputs shaped "
                             f"(batch, {width}), got {tuple(getattr(x, 'shape', ()))}")
        if x.dtype.kind not in "biuf":
            raise ConfigError(f"inputs must be real numbers, got dtype {x.dtype}")
        host_rows = None  # rows given on the host: checked there for free
        if rows is not None:
            if not hasattr(rows, "dtype") or isinstance(rows, np.ndarray):  # (a list)
                host_rows = np.asarray(rows)
            got = (host_rows if host_rows is not None else rows).dtype
            if got.kind not in "iu":
                raise ConfigError(f"rows must be integer indices, got dtype {got}")
            if host_rows is not None and self.check_rows and host_rows.size and (
                    host_rows.min() < -len(x) or host_rows.max() >= len(x)):  # (NumPy's
                bad = host_rows[(host_rows < -len(x)) | (host_rows >= len(x))][0]  # range)
                raise ShapeError(f"rows pick past the {len(x)} rows of x: row {bad}")
            if host_rows is not None:
                rows = model.backend.asarray(host_rows)
        if self._binding is None or not self._still_bound():
            self._build(x, y)
        xp = self.backend.xp
        if self.weighted and w is not self._w_checked:
            w = self._check_weights(w, x)
        n = self.batch_size if rows is None else len(rows)
        if rows is None and len(x) != len(y):
            raise ShapeError(f"x has {len(x)} rows and y {len(y)}: one target a row")
        if n != self.batch_size or (rows is None and len(x) != n):
            raise ShapeError(f"this static step takes batches of {self.batch_size} rows, got "
                             f"{len(x) if rows is None else n}")
        loss_fn = self.loss_fn
        if isinstance(loss_fn, CrossEntropyLoss) and y is not self.y:
            if y.dtype.kind not in "iu":
                raise ConfigError("the static step takes cross_entropy targets as integer "
                                  f"labels, got {y.dtype}")
            if loss_fn.check_labels and n:  # the labels as given, before any conversion
                try:  # (fit checked its labels once: its loss does not ask)
                    picked = y if rows is None else self._rows_of(y, rows, host_rows)
                except IndexError as e:
                    raise ShapeError(f"rows pick past the {len(x)} rows of x: {e}") from None
                c, low, high = model.sizes[-1], int(picked.min()), int(picked.max())
                if low < 0 or high >= c:
                    raise ConfigError(f"CrossEntropyLoss: class labels must lie in "
                                      f"[0, {c - 1}] for {c} outputs; got labels from {low} "
                                      f"to {high}" + (ONE_OUTPUT if c == 1 else ""))
        # The batch into the step's buffers: the rows picked, cast where the dtype differs
        # (inputs of another float dtype, int32 labels, float64 targets or weights: as the
        # eager step converts them), host data moved to the device (only the batch's rows).
        try:
            for buffer, given in ((self.x, x), (self.y, y)) + (
                    ((self.w, w),) if self.weighted else ()):
                if rows is None:
                    if given is not buffer:  # (the step's own buffers need no copy)
                        xp.copyto(buffer, self.backend.asarray(given), casting="unsafe")
                elif self.backend.owns(given) and given.dtype == buffer.dtype:
                    xp.take(given, rows, axis=0, out=buffer)  # (fit's case: no temporary)
                else:
                    xp.copyto(buffer, self._rows_of(given, rows, host_rows), casting="unsafe")
        except IndexError as e:  # (NumPy checks device rows; CuPy's take wraps around)
            raise ShapeError(f"rows pick past the {len(x)} rows of x: {e}") from None
        if self.weighted and self._w_each:  # (weights too large for some batch: this one?)
            total, top = float(self.w.sum(dtype=np.float64)), float(np.finfo(self.w.dtype).max)
            if total > top:
                raise ConfigError(f"{type(loss_fn).__name__}: sample weights summing to "
                                  f"{total:g} overflow {self.w.dtype} (at most {top:g}): "
                                  "scale them down")
        if not self.split:
            opt.steps += 1
            opt.prepare_hyper()
        if self.drop and self._dstep_host != model.dropout_step:  # eager steps moved it
            self.dstep.fill(np.uint64(model.dropout_step))
        if self._replay is not None:
            self._replay()
        elif self.split:  # forward and backward: the update is update()'s
            self._forward_backward()
            self._replay = self._capture(self._forward_backward)
        else:
            self._body()  # eager: compiles the kernels, makes the optimiser's state
            self._binding = self._bound_to()
            self._replay = self._capture(self._body)
        if self.drop:
            model.dropout_step += 1
            self._dstep_host = model.dropout_step
        model.grads.update(self.grads)
        return self.loss, self.correct

    def update(self):
        """A split step's optimiser update, from the gradients in ``flat`` (as the ranks'
        sum left them), after the call that computed them."""
        if not self.split:
            raise ConfigError("update() is a split step's (StaticStep(..., split=True)): "
                              "this step updates in its call")
        if self._replay is None:
            raise ConfigError("update() needs the step's call first, for the gradients")
        opt = self.optimizer
        opt.steps += 1
        opt.prepare_hyper()
        if self._replay_update is not None:
            self._replay_update()
        else:
            self._update()  # eager: makes the optimiser's state
            self._binding = self._bound_to()
            self._replay_update = self._capture(self._update)
        self.model.grads.update(self.grads)

    def _capture(self, body):
        if not self.graph:
            return body
        try:
            replay = self.backend.capture(body)
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0]
            notice(f"CUDA graph capture failed ({type(e).__name__}: {first}); this step "
                   "runs eagerly")
            self.graph = False
            return body
        self.captured = replay != body  # (bound methods compare equal, never identical)
        return replay


def _from_torch(a):
    """A torch tensor as a NumPy array (a CUDA one by way of the host: the step copies only
    its batch's rows over); anything else as it is."""
    if type(a).__module__.split(".")[0] == "torch" and hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return a


def _shares_memory(a, b) -> bool:
    """Whether two arrays (of one backend) are views of one buffer (the step's own buffers are
    whole arrays and reshaped slices of them)."""
    return _owner(a) is _owner(b)


def _owner(a):
    while a.base is not None:
        a = a.base
    return a


def _backward_from_output(act) -> bool:
    """Whether f'(z) can be read off y = f(z), so that y may overwrite z: not for the gelus
    and silu, which dip below 0 (two z give one y), nor a leaky_relu of negative slope."""
    if act.name in ("gelu", "gelu_tanh", "silu"):
        return False
    return act.name != "leaky_relu" or act.slope >= 0
