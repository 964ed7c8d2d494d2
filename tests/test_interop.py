"""PyTorch interop (gpunet.interop): a gpunet MLP as torch.nn and back. torch runs its own
forward, autograd and optimiser on the converted nets; the conversions must leave nothing for
them to disagree about."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpunet as gn

torch = pytest.importorskip("torch", reason="torch is the interop's other side")
nn = torch.nn

HIDDEN = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "identity"]
OUTPUTS = ["identity", "sigmoid", "softmax", "tanh", "gelu"]


def _x(n=37, d=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("output", OUTPUTS)
def test_to_torch_computes_what_gpunet_computes(activation, output):
    model = gn.MLP([6, 9, 7, 4], activation=activation, output=output, backend="numpy",
                   dtype="float64", slope=0.3, seed=1)
    net = model.to_torch()
    assert all(p.dtype == torch.float64 for p in net.parameters())
    x = _x()
    np.testing.assert_allclose(net(torch.from_numpy(x)).detach().numpy(), model.forward(x),
                               rtol=1e-12, atol=1e-14)
    n_act = sum(not isinstance(m, nn.Linear) for m in net)
    assert n_act == (2 if activation != "identity" else 0) + (output != "identity")


@pytest.mark.parametrize("activation", HIDDEN)
def test_a_round_trip_keeps_everything(activation):
    model = gn.MLP([5, 8, 3], activation=activation, output="sigmoid", backend="numpy",
                   slope=0.05, seed=2)
    back = gn.MLP.from_torch(model.to_torch(), backend="numpy")
    assert (back.sizes, back.output, back.dtype) == (model.sizes, model.output, model.dtype)
    assert back.activation == activation
    if activation == "leaky_relu":
        assert back.slope == pytest.approx(0.05)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)


def test_a_torch_net_trains_the_same_in_gpunet():
    """A net built in torch, imported: one SGD step on the same batch moves the weights of
    both alike (gpunet's hand-derived backward against torch's autograd and optimiser)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 11), nn.LeakyReLU(0.2), nn.Linear(11, 11),
                        nn.LeakyReLU(0.2), nn.Linear(11, 3)).double()
    model = gn.MLP.from_torch(net, backend="numpy")
    assert (model.sizes, model.activation, model.output, model.slope) == \
        ([6, 11, 11, 3], "leaky_relu", "identity", 0.2)
    x, labels = _x(), np.random.default_rng(3).integers(0, 3, 37)
    torch_opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    opt = gn.SGD(model, lr=0.1, momentum=0.9)
    for _ in range(3):
        torch_opt.zero_grad()
        nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
        torch_opt.step()
        model.train_step(x, labels, gn.CrossEntropyLoss(), opt)
    after = gn.MLP.from_torch(net, backend="numpy").state_dict()
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(v, after[k], rtol=1e-10, atol=1e-12)


def test_dtypes_and_nesting():
    net = nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.Tanh()), nn.Linear(4, 2),
                        nn.Softmax(dim=1)).to(torch.bfloat16)
    model = gn.MLP.from_torch(net, backend="numpy")
    assert model.dtype == np.float32 and model.sizes == [3, 4, 2]
    assert (model.activation, model.output) == ("tanh", "softmax")
    np.testing.assert_array_equal(model.state_dict()["W1"],
                                  net[0][0].weight.detach().float().numpy())
    assert gn.MLP.from_torch(net, dtype="float64", backend="numpy").dtype == np.float64
    assert model.to_torch(dtype=torch.float64)[0].weight.dtype == torch.float64


@pytest.mark.parametrize("net, message", [
    (lambda: nn.Sequential(nn.ReLU(), nn.Linear(3, 2)), "must start with an nn.Linear"),
    (lambda: nn.Sequential(), "must start with an nn.Linear"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(),
                           nn.Linear(4, 2)),
     "one activation between all its layers; this net has relu after layer 1, tanh after "
     "layer 2"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.GroupNorm(2, 4), nn.Linear(4, 2)),
     "holds no GroupNorm module"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False),
                           nn.ReLU(), nn.Linear(4, 2)),
     "keeps no running statistics"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 4),
                           nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2)),
     "one kind of norm; this net has BatchNorm1d and LayerNorm"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.2), nn.ReLU(),
                           nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)),
     r"BatchNorm1d momenta differ \(\[0.1, 0.2\]\)"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.ReLU(), nn.Linear(4, 2)),
     "Dropout before the activation of layer 1"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Dropout(0.1)),
     "Dropout after the last layer"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.1), nn.Linear(4, 4),
                           nn.ReLU(), nn.Linear(4, 2)),
     "one dropout rate for all its hidden layers; this net has 0.1 after layer 1, 0 after "
     "layer 2"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.1), nn.Dropout(0.1),
                           nn.Linear(4, 2)),
     "two Dropout modules after layer 1"),
    (lambda: nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2)),
     "layer 1 has no bias"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2)),
     "layer 2 takes 5 inputs, layer 1 gives 4"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sigmoid(), nn.Linear(4, 2)),
     "two activations after layer 1"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=-1), nn.Linear(4, 2)),
     "Softmax only after the last layer"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.1), nn.Linear(4, 2),
                           nn.LeakyReLU(0.3)), r"LeakyReLU slopes differ \(\[0.1, 0.3\]\)"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=0)), "Softmax over dim 0"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 4),
                           nn.GELU(approximate="tanh"), nn.Linear(4, 2)),
     "one activation between all its layers; this net has gelu after layer 1, gelu_tanh after "
     "layer 2"),
])
def test_nets_gpunet_cannot_hold_are_refused_with_the_reason(net, message):
    with pytest.raises(gn.ConfigError, match=message):
        gn.MLP.from_torch(net(), backend="numpy")


def test_to_torch_takes_a_numpy_dtype_as_mlp_takes_a_torch_one():
    torch = pytest.importorskip("torch")
    model = gn.MLP([3, 4, 2], backend="numpy", seed=0)
    net = model.to_torch(dtype=np.float64)
    assert net[0].weight.dtype == torch.float64
    np.testing.assert_array_equal(net[0].weight.detach().numpy(), model.params["W1"])
    with pytest.raises(gn.ConfigError, match="to_torch: unknown dtype"):
        model.to_torch(dtype=np.int32)


class _Scaled(torch.nn.Sequential):
    def forward(self, x):
        return 2 * super().forward(x)


class _HalfLinear(torch.nn.Linear):
    def forward(self, x):
        return torch.nn.functional.linear(x, 0.5 * self.weight, self.bias)


class ReLU(torch.nn.Module):  # (a class of one's own, named as torch's)
    def forward(self, x):
        return x.clamp(0, 0.1)


def _hooked():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    net.register_forward_hook(lambda m, i, o: o * 3)
    return net


def _tied():
    shared = torch.nn.Linear(4, 4)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), shared, torch.nn.Tanh(),
                               shared, torch.nn.Tanh(), torch.nn.Linear(4, 2))


def _shared_parameter():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    net[2].weight = net[0].weight  # (torch's usual way to tie weights)
    return net


def _frozen_norm():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 2))
    net.train()
    net[1].eval()  # (0.56 off: gpunet took the net's mode, training, for the norm too)
    return net


@pytest.mark.parametrize("make, says", [
    (lambda: _Scaled(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
     "the net (_Scaled) is an nn.Sequential with a forward of its own"),
    (lambda: torch.nn.Sequential(_HalfLinear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
     "module '0' (_HalfLinear) is an nn.Linear with a forward of its own"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(3, 4), ReLU(), torch.nn.Linear(4, 2)),
     "holds no ReLU module (a class of its own, from test_interop, not torch.nn's)"),
    (_hooked, "the net (Sequential) has forward hooks"),
    (lambda: torch.nn.Sequential(torch.nn.utils.weight_norm(torch.nn.Linear(3, 4)),
                                 torch.nn.ReLU(), torch.nn.Linear(4, 2)),
     "module '0' (Linear) has forward pre hooks"),
    (_tied, "uses a weight in more than one place (tied weights"),
    (lambda: _shared_parameter(), "uses a weight in more than one place (tied weights"),
    (lambda: _frozen_norm(), "some of the net's modules are in training mode and some in eval"),
    (lambda: torch.nn.Sequential(torch.nn.LazyLinear(4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
     "module '0' (LazyLinear) is not initialised yet"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),
                                 torch.nn.Linear(4, 2)).to("meta"),
     "on the meta device"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(3, 4, dtype=torch.complex64)),
     "weights of dtype torch.complex64"),
], ids=["sequential-forward", "linear-forward", "own-relu", "forward-hook", "old-weight-norm",
        "tied", "shared-parameter", "frozen-norm", "lazy", "meta", "complex"])
def test_from_torch_refuses_nets_whose_layers_do_not_say_what_they_compute(make, says):
    """Each was imported without a word, and computed something else than the torch net (1.0
    to 20 off), or lost its tied weights at the first step, or crashed with torch's error."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch's deprecation of the old weight_norm)
        net = make()
    with pytest.raises(gn.ConfigError, match=re.escape(says)):
        gn.MLP.from_torch(net, backend="numpy")


def test_interop_keeps_the_mode_and_takes_what_computes_as_torch_does():
    """A model in eval mode came back from to_torch in training mode (batch statistics and
    dropout where the model used running ones: 3.25 off), and from_torch the same way; the
    new weight_norm's parametrization and one ReLU shared between layers are taken."""
    x = torch.randn(8, 3, dtype=torch.float64)
    m = gn.MLP([3, 4, 2], backend="numpy", dtype="float64", norm="batch", dropout=0.3, seed=0)
    state = m.state_dict()
    state["running_mean1"] += 1
    m.load_state_dict(state)
    m.eval()
    net = m.to_torch()
    assert not net.training
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), m.predict(x.numpy()), rtol=1e-12)
    assert not gn.MLP.from_torch(net, backend="numpy").training
    assert gn.MLP.from_torch(net.train(), backend="numpy").training
    relu = torch.nn.ReLU()
    for net in (torch.nn.Sequential(torch.nn.utils.parametrizations.weight_norm(
                    torch.nn.Linear(3, 4)), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
                torch.nn.Sequential(torch.nn.Linear(3, 4), relu, torch.nn.Linear(4, 4), relu,
                                    torch.nn.Linear(4, 2))):
        net = net.double().eval()
        got = gn.MLP.from_torch(net, backend="numpy").predict(x.numpy())
        with torch.no_grad():
            np.testing.assert_allclose(got, net(x).numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.int32, torch.complex64])
def test_to_torch_refuses_dtypes_no_weights_take(dtype):
    with pytest.raises(gn.ConfigError, match=f"dtype {dtype} is not one a net's weights take"):
        gn.MLP([3, 2], backend="numpy").to_torch(dtype=dtype)


def test_load_state_dict_points_a_torch_state_dict_to_from_torch_and_takes_parameters():
    """A torch state_dict was refused with a list of names and no hint; a torch Parameter as
    a value raised torch's "Can't call numpy() on Tensor that requires grad"."""
    m = gn.MLP([3, 4, 2], backend="numpy", dtype="float64", seed=0)
    net = m.to_torch()
    with pytest.raises(gn.ShapeError, match=r"a torch state_dict\? gn.MLP.from_torch\(net\)"):
        m.load_state_dict(net.state_dict())
    state = m.state_dict()
    state["W1"] = torch.nn.Parameter(torch.full((4, 3), 0.25, dtype=torch.float64))
    m.load_state_dict(state)
    np.testing.assert_array_equal(m.params["W1"], np.full((4, 3), 0.25))


def test_load_state_dict_takes_a_bfloat16_tensor_exactly():
    m = gn.MLP([3, 4, 2], backend="numpy", dtype="float32", seed=0)
    state = m.state_dict()
    w = torch.randn(4, 3).to(torch.bfloat16)
    state["W1"] = w
    m.load_state_dict(state)
    np.testing.assert_array_equal(m.params["W1"], w.float().numpy())
