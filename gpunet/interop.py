"""PyTorch interop: a gpunet ``MLP`` as a ``torch.nn.Sequential`` with the same weights, and back.

    net = model.to_torch()                 # nn.Sequential(Linear, ReLU, ..., Linear[, g])
    model = gn.MLP.from_torch(net)         # any Sequential of Linear and activation modules

For checking gpunet's math against PyTorch's (run both, compare outputs and gradients), for
training in gpunet and serving in PyTorch, or for taking a PyTorch MLP's weights into gpunet.
Weights are shaped (out, in) in both, so they copy as they are. torch is imported only here,
when these are called; it is not a dependency of gpunet.

A gpunet MLP has one activation f between all its layers and one g after the last, a bias in
every layer, one dropout rate after every hidden layer's f (``nn.Dropout(p)`` there), and
either no normalisation or one in every hidden layer between its Linear and f
(``nn.LayerNorm(width, eps)`` or ``nn.BatchNorm1d(width, eps, momentum)`` with its scale and
shift, and a batch norm's running statistics, as ``torchvision.ops.MLP`` puts it);
``from_torch`` refuses (with the reason) a net that does not have that shape. Dropout masks are
gpunet's own (``gpunet.dropout``), not torch's: the two agree in eval mode, and in training
given the same mask.
"""

from __future__ import annotations

import numpy as np

from .activations import DEFAULT_SLOPE
from .errors import ConfigError

#: torch.nn module class name -> gpunet activation name
_FROM_TORCH = {"ReLU": "relu", "LeakyReLU": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh",
               "GELU": "gelu", "SiLU": "silu", "Identity": "identity", "Softmax": "softmax"}


def _torch():
    try:
        import torch
    except ImportError:
        raise ConfigError("PyTorch is not installed: pip install torch") from None
    return torch


def _module(torch, name, slope):
    """The torch.nn module of activation ``name``, or None for the identity."""
    nn = torch.nn
    make = {"identity": lambda: None, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(slope),
            "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
            "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "silu": nn.SiLU,
            "softmax": lambda: nn.Softmax(dim=-1)}
    return make[name]()


def to_torch(model, *, dtype=None, device=None):
    """``nn.Sequential(Linear, f, ..., Linear, g)`` holding a copy of ``model``'s weights (the
    identity adds no module). ``dtype``: a torch dtype or its name ("float32"; default: the
    model's; a NumPy dtype names one too); ``device``: where the tensors go (default: the
    CPU)."""
    torch = _torch()
    names = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
             "bfloat16": torch.bfloat16}
    if dtype is not None and not isinstance(dtype, (str, torch.dtype)):  # np.float64, say
        try:
            dtype = np.dtype(dtype).name
        except TypeError:
            dtype = repr(dtype)  # (not one: refused below by its repr)
    if isinstance(dtype, str):  # torch's name for one ("float32"), as MLP(dtype=) takes them
        if dtype not in names:
            raise ConfigError(f"to_torch: unknown dtype {dtype!r}; valid: {', '.join(names)} "
                              "or a torch.dtype")
        dtype = names[dtype]
    if dtype is not None and dtype not in names.values():  # (torch's int, complex, float8)
        raise ConfigError(f"to_torch: dtype {dtype} is not one a net's weights take; valid: "
                          f"{', '.join(names)}")
    tdtype = dtype or names[model.dtype.name]
    state = model.state_dict()
    layers, last = [], len(model.sizes) - 1
    for i in range(1, last + 1):
        lin = torch.nn.Linear(model.sizes[i - 1], model.sizes[i], dtype=tdtype, device=device)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(state[f"W{i}"]))
            lin.bias.copy_(torch.from_numpy(state[f"b{i}"]))
        layers.append(lin)
        if i < last and model.norm:
            if model.norm == "layer":
                norm = torch.nn.LayerNorm(model.sizes[i], eps=model.norm_eps, dtype=tdtype,
                                          device=device)
            else:
                norm = torch.nn.BatchNorm1d(model.sizes[i], eps=model.norm_eps,
                                            momentum=model.norm_momentum, dtype=tdtype,
                                            device=device)
            with torch.no_grad():
                norm.weight.copy_(torch.from_numpy(state[f"gamma{i}"]))
                norm.bias.copy_(torch.from_numpy(state[f"beta{i}"]))
                if model.norm == "batch":
                    norm.running_mean.copy_(torch.from_numpy(state[f"running_mean{i}"]))
                    norm.running_var.copy_(torch.from_numpy(state[f"running_var{i}"]))
            layers.append(norm)
        act = _module(torch, model.activation if i < last else model.output, model.slope)
        if act is not None:
            layers.append(act)
        if i < last and model.dropout:
            layers.append(torch.nn.Dropout(model.dropout))
    return torch.nn.Sequential(*layers).train(model.training)  # (eval mode stays eval mode)


def from_torch(net, *, backend=None, dtype=None):
    """A gpunet ``MLP`` with the architecture and weights of ``net``: a ``torch.nn.Sequential``
    (nested ones are flattened) of ``Linear`` layers, each followed by at most one of ReLU,
    LeakyReLU, Sigmoid, Tanh, GELU (exact or tanh), SiLU, Identity (and, after the last layer,
    Softmax over the last dim), and a hidden layer's by ``Dropout(p)``, one p for every hidden
    layer;
    every hidden layer may have an ``nn.LayerNorm(width)`` or ``nn.BatchNorm1d(width)`` (one
    kind, with scale and shift, one eps (and momentum) for all; a batch norm with its running
    statistics) between its Linear and its activation.

    ``dtype``: "float32" or "float64" (default: the weights', float32 for any other);
    ``backend``: as ``MLP``'s. ConfigError, saying why, for a net gpunet cannot hold: other
    modules, different activations between layers, a layer without a bias, widths that do not
    chain.
    """
    from .model import MLP

    torch = _torch()
    nn = torch.nn
    compiled = getattr(net, "_orig_mod", None)
    if not isinstance(net, (nn.Sequential, nn.Linear)):
        what = "a state_dict" if isinstance(net, dict) else type(net).__name__
        raise ConfigError(f"from_torch takes an nn.Sequential, whose layers say the net, got "
                          f"{what}" + (
                              " (torch.compile's wrapper: give it the net it compiled, "
                              "net._orig_mod)" if isinstance(compiled, nn.Module) else
                              " (a Module of its own, whose forward gpunet cannot read: "
                              "rebuild it as an nn.Sequential)"
                              if isinstance(net, nn.Module) else ""))
    _check_reads_as_layers(torch, net)
    modules = list(_flatten(torch, net))
    if not modules or not isinstance(modules[0], nn.Linear):
        raise ConfigError("from_torch: the net must start with an nn.Linear layer"
                          + (f", not {type(modules[0]).__module__}.{type(modules[0]).__name__}"
                             if modules else ""))
    tensors = [p for m in modules for p in m.parameters(recurse=False)]
    if len({id(p) for p in tensors}) < len(tensors):  # (a module used twice, or a Parameter
        # set on two layers)
        raise ConfigError("from_torch: the net uses a weight in more than one place (tied "
                          "weights: a module used twice, or one layer's Parameter given to "
                          "another); gpunet's layers each have their own, so training would "
                          "untie them")
    modes = {m.training for m in net.modules()}
    if len(modes) > 1:  # (a frozen batch norm in a net that trains: gpunet has one mode)
        raise ConfigError("from_torch: some of the net's modules are in training mode and "
                          "some in eval mode (a frozen BatchNorm, say); gpunet's MLP has one "
                          "mode: set it with net.train() or net.eval() first")
    linears, acts, drops, norms = [], [], [], []
    for m in modules:
        name = type(m).__name__
        if isinstance(m, (nn.LayerNorm, nn.BatchNorm1d)):
            name = "LayerNorm" if isinstance(m, nn.LayerNorm) else "BatchNorm1d"
            where = f"layer {len(linears)}"
            if norms[-1] is not None:
                raise ConfigError(f"from_torch: two norm modules after {where}")
            if acts[-1][1] is not None or drops[-1] is not None:
                raise ConfigError(f"from_torch: {name} after the activation of {where}; "
                                  "gpunet normalises z between the Linear and the activation")
            width = tuple(m.normalized_shape) if name == "LayerNorm" else (m.num_features,)
            if width != (linears[-1].out_features,):
                raise ConfigError(f"from_torch: {name}{width} after {where}, whose width is "
                                  f"{linears[-1].out_features}")
            if m.weight is None or m.bias is None:
                raise ConfigError(f"from_torch: the {name} after {where} has no learned "
                                  "scale or shift; gpunet's has both (elementwise_affine=True, "
                                  "bias=True)" if name == "LayerNorm" else
                                  f"from_torch: the {name} after {where} has no learned scale "
                                  "or shift; gpunet's has both (affine=True)")
            if name == "BatchNorm1d" and (m.running_mean is None or m.momentum is None):
                raise ConfigError(f"from_torch: the BatchNorm1d after {where} keeps no running "
                                  "statistics or averages them cumulatively (momentum=None); "
                                  "gpunet's keeps an exponential average "
                                  "(track_running_stats=True, a momentum)")
            norms[-1] = m
            continue
        if isinstance(m, nn.Dropout):
            if drops[-1] is not None:
                raise ConfigError(f"from_torch: two Dropout modules after layer {len(linears)}")
            drops[-1] = float(m.p)
            continue
        if isinstance(m, torch.nn.Linear):
            if m.bias is None:
                raise ConfigError(f"from_torch: layer {len(linears) + 1} has no bias; gpunet's "
                                  "layers always have one (nn.Linear(..., bias=True))")
            if linears and m.in_features != linears[-1].out_features:
                raise ConfigError(f"from_torch: layer {len(linears) + 1} takes "
                                  f"{m.in_features} inputs, layer {len(linears)} gives "
                                  f"{linears[-1].out_features}")
            linears.append(m)
            acts.append(("identity", None))
            drops.append(None)
            norms.append(None)
        elif _torch_activation(torch, m) is not None:
            if acts[-1][1] is not None:
                raise ConfigError(f"from_torch: two activations after layer {len(linears)}")
            if drops[-1] is not None:
                raise ConfigError(f"from_torch: Dropout before the activation of layer "
                                  f"{len(linears)}; gpunet drops the activation's outputs "
                                  "(put nn.Dropout after it)")
            if name == "GELU" and m.approximate not in ("none", "tanh"):
                raise ConfigError(f"from_torch: GELU(approximate={m.approximate!r}) after layer "
                                  f"{len(linears)}; gpunet has the exact one (approximate="
                                  "'none') and the tanh one")
            if name == "Softmax" and m.dim not in (-1, 1, None):
                raise ConfigError(f"from_torch: Softmax over dim {m.dim}; gpunet's is over the "
                                  "features of each row (dim -1)")
            acts[-1] = ("gelu_tanh" if name == "GELU" and m.approximate == "tanh"
                        else _torch_activation(torch, m), m)
        else:
            own = "" if type(m).__module__.startswith("torch.") else \
                f" (a class of its own, from {type(m).__module__}, not torch.nn's)"
            raise ConfigError(f"from_torch: gpunet's MLP holds no {name} module{own}; it "
                              "takes nn.Linear, LayerNorm, BatchNorm1d, Dropout and "
                              + ", ".join(_FROM_TORCH))
    hidden = {a for a, _ in acts[:-1]}
    if len(hidden) > 1:
        order = ", ".join(f"{a} after layer {i}" for i, (a, _) in enumerate(acts[:-1], 1))
        raise ConfigError(f"from_torch: gpunet's MLP has one activation between all its "
                          f"layers; this net has {order}")
    if "softmax" in hidden:
        raise ConfigError("from_torch: Softmax only after the last layer")
    if drops[-1]:
        raise ConfigError("from_torch: Dropout after the last layer; gpunet drops hidden "
                          "layers' outputs only")
    rates = {p or 0.0 for p in drops[:-1]}
    if len(rates) > 1:
        order = ", ".join(f"{p or 0:g} after layer {i}" for i, p in enumerate(drops[:-1], 1))
        raise ConfigError(f"from_torch: gpunet's MLP has one dropout rate for all its hidden "
                          f"layers; this net has {order}")
    rate = rates.pop() if rates else 0.0
    if norms[-1] is not None:
        raise ConfigError(f"from_torch: {type(norms[-1]).__name__} after the last layer; "
                          "gpunet normalises hidden layers only")
    has_norm = [m is not None for m in norms[:-1]]
    if any(has_norm) and not all(has_norm):
        order = ", ".join(f"layer {i}" for i, h in enumerate(has_norm, 1) if not h)
        kind = next(type(m).__name__ for m in norms if m is not None)
        raise ConfigError(f"from_torch: gpunet's MLP has a {kind} in every hidden layer or "
                          f"in none; this net has none after {order}")
    kinds = {type(m).__name__ for m in norms[:-1] if m is not None}
    if len(kinds) > 1:
        raise ConfigError(f"from_torch: gpunet's MLP has one kind of norm; this net has "
                          f"{' and '.join(sorted(kinds))}")
    eps = {float(m.eps) for m in norms[:-1] if m is not None}
    if len(eps) > 1:
        raise ConfigError(f"from_torch: {kinds.pop()} eps differ ({sorted(eps)}); gpunet's MLP "
                          "has one")
    momenta = {float(m.momentum) for m in norms[:-1] if m is not None and
               type(m).__name__ == "BatchNorm1d"}
    if len(momenta) > 1:
        raise ConfigError(f"from_torch: BatchNorm1d momenta differ ({sorted(momenta)}); "
                          "gpunet's MLP has one")
    activation = hidden.pop() if hidden else "relu"  # (one layer: no hidden activation)
    output = acts[-1][0]
    slopes = {float(m.negative_slope) for _, m in acts if isinstance(m, torch.nn.LeakyReLU)}
    if len(slopes) > 1:
        raise ConfigError(f"from_torch: LeakyReLU slopes differ ({sorted(slopes)}); gpunet's "
                          "MLP has one")
    first = linears[0].weight
    if dtype is None:
        dtype = {torch.float64: "float64"}.get(first.dtype, "float32")
    model = MLP([linears[0].in_features] + [m.out_features for m in linears],
                activation=activation, output=output, backend=backend, dtype=dtype,
                slope=slopes.pop() if slopes else DEFAULT_SLOPE, dropout=rate,
                norm=None if not eps else "batch" if momenta or "BatchNorm1d" in kinds
                else "layer", norm_eps=eps.pop() if eps else 1e-5,
                norm_momentum=momenta.pop() if momenta else 0.1)
    state = {}
    for i, m in enumerate(linears, start=1):
        state[f"W{i}"] = _host(torch, m.weight)
        state[f"b{i}"] = _host(torch, m.bias)
        if norms[i - 1] is not None:
            state[f"gamma{i}"] = _host(torch, norms[i - 1].weight)
            state[f"beta{i}"] = _host(torch, norms[i - 1].bias)
            if type(norms[i - 1]).__name__ == "BatchNorm1d":
                state[f"running_mean{i}"] = _host(torch, norms[i - 1].running_mean)
                state[f"running_var{i}"] = _host(torch, norms[i - 1].running_var)
    model.load_state_dict(state)
    return model.train(net.training)  # (eval mode stays eval mode)


def _torch_activation(torch, m):
    """gpunet's name of the torch.nn activation module ``m`` (by its class, not its class's
    name: a class of one's own called ReLU computes what it likes), or None."""
    for cls_name, name in _FROM_TORCH.items():
        if isinstance(m, getattr(torch.nn, cls_name)):
            return name
    return None


#: module hooks that change what a module computes or sees, which gpunet cannot copy
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _check_reads_as_layers(torch, net) -> None:
    """ConfigError where a module of ``net`` (it too) does not compute what its torch class
    does, so that its layers do not say the net: a subclass with a forward of its own (a
    Sequential that scales or adds a residual, a Linear that rescales its weight), or hooks
    (a forward hook; the old ``nn.utils.weight_norm`` and ``spectral_norm``, which recompute
    the weight in a pre-hook). Parametrizations (``torch.nn.utils.parametrize``, the new
    ``weight_norm``) keep torch's forward and read the weight as it is: taken."""
    nn = torch.nn
    for where, m in net.named_modules():
        where = f"module {where!r}" if where else "the net"
        if callable(getattr(m, "has_uninitialized_params", None)) \
                and m.has_uninitialized_params():  # (torch.nn.modules.lazy's)
            raise ConfigError(f"from_torch: {where} ({type(m).__name__}) is not initialised "
                              "yet (a lazy module learns its sizes from its first batch): "
                              "run one through the net first")
        base = next((c for c in (nn.Sequential, nn.Linear, nn.LayerNorm, nn.BatchNorm1d,
                                 nn.Dropout, *(getattr(nn, k) for k in _FROM_TORCH))
                     if isinstance(m, c)), None)
        if base is not None and type(m).forward is not base.forward:
            raise ConfigError(f"from_torch: {where} ({type(m).__name__}) is an "
                              f"nn.{base.__name__} with a forward of its own, which gpunet "
                              "cannot read: its layers would not compute what it does")
        hooked = [h for h in _HOOKS if getattr(m, h, None)]
        if hooked:
            raise ConfigError(f"from_torch: {where} ({type(m).__name__}) has "
                              f"{hooked[0].strip('_').replace('_', ' ')} (the old "
                              "nn.utils.weight_norm and spectral_norm add one), which change "
                              "what it computes; gpunet copies weights as they are: remove "
                              "them (torch.nn.utils.parametrizations.weight_norm keeps none)")


def _flatten(torch, net):
    if isinstance(net, torch.nn.Sequential):
        for m in net:
            yield from _flatten(torch, m)
    else:
        yield net


def _host(torch, t) -> np.ndarray:
    """A float64 host copy (exact for every float dtype torch has, bfloat16 included);
    ConfigError for weights that are no real numbers or hold no data (the meta device)."""
    if not t.is_floating_point():
        raise ConfigError(f"from_torch: weights of dtype {t.dtype}; gpunet's are real floats")
    if t.is_meta:
        raise ConfigError("from_torch: the net is on the meta device, whose tensors hold no "
                          "values: load its weights first (net.to_empty(...) and a "
                          "state_dict)")
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()
