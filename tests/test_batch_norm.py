"""Batch normalisation in hidden layers (``MLP(norm="batch")``): Linear -> BatchNorm1d -> f.

Every check here goes against a reference that does not come from the code under test:

* the whole model in a training pass (forward, every W, b, gamma, beta gradient, dJ/dx and the
  running statistics it moves) against a PyTorch net of ``nn.Linear``, ``nn.BatchNorm1d`` (in
  ``train()`` mode) and activation modules built in this file from the model's state dict, run
  in float64 under torch autograd; ``predict`` against the same net in ``eval()`` mode;
* SGD with momentum (``train_step``, and ``fit`` over the batches fit documents it draws)
  against ``torch.optim.SGD`` on that net;
* central finite differences (``gpunet.gradcheck``), and what gradcheck promises to leave in
  the running statistics;
* checkpoints, PyTorch interop (both ways) and the refusals of nets gpunet cannot hold;
* the scikit-learn estimators against a float64 NumPy eval-mode forward pass written here.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import RTOL, host

import gpunet as gn
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.data import make_dataset
from gpunet.gradcheck import check_combination

SIZES = [7, 33, 17, 4]
SLOPE = 0.07
HIDDEN = ["relu", "tanh", "identity", "leaky_relu"]


# -- references written here ------------------------------------------------------------------


def torch_activation(torch, name, slope=SLOPE):
    nn = torch.nn
    return {"relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(),
            "leaky_relu": nn.LeakyReLU(negative_slope=slope), "identity": nn.Identity(),
            "softmax": nn.Softmax(dim=-1)}[name]


def torch_net(torch, model, tdtype=None, eps=None, momentum=None):
    """nn.Sequential(Linear, BatchNorm1d, f, ..., Linear, g) built here from model.state_dict()
    (not by model.to_torch): gamma/beta as the BatchNorm1d's weight/bias and the running
    statistics copied. ``eps`` / ``momentum``: passed to BatchNorm1d when given, else torch's
    own defaults apply. In train() mode (torch's default)."""
    tdtype = tdtype or torch.float64
    state = model.state_dict()
    last = len(model.sizes) - 1
    bn_kw = {}
    if eps is not None:
        bn_kw["eps"] = eps
    if momentum is not None:
        bn_kw["momentum"] = momentum
    layers = []
    with torch.no_grad():
        for i in range(1, last + 1):
            lin = torch.nn.Linear(model.sizes[i - 1], model.sizes[i], dtype=tdtype)
            lin.weight.copy_(torch.tensor(state[f"W{i}"], dtype=tdtype))
            lin.bias.copy_(torch.tensor(state[f"b{i}"], dtype=tdtype))
            layers.append(lin)
            if i < last:
                bn = torch.nn.BatchNorm1d(model.sizes[i], dtype=tdtype, **bn_kw)
                bn.weight.copy_(torch.tensor(state[f"gamma{i}"], dtype=tdtype))
                bn.bias.copy_(torch.tensor(state[f"beta{i}"], dtype=tdtype))
                bn.running_mean.copy_(torch.tensor(state[f"running_mean{i}"], dtype=tdtype))
                bn.running_var.copy_(torch.tensor(state[f"running_var{i}"], dtype=tdtype))
                layers.append(bn)
            layers.append(torch_activation(torch, model.activation if i < last else model.output,
                                           model.slope))
    return torch.nn.Sequential(*layers).train()


def linears(torch, net):
    return [m for m in net if isinstance(m, torch.nn.Linear)]


def batch_norms(torch, net):
    return [m for m in net if isinstance(m, torch.nn.BatchNorm1d)]


def torch_params(torch, net, grad=False):
    """gpunet's names -> the torch net's parameters (or their gradients), as host arrays."""
    out = {}
    for i, m in enumerate(linears(torch, net), start=1):
        w, b = (m.weight.grad, m.bias.grad) if grad else (m.weight, m.bias)
        out[f"W{i}"], out[f"b{i}"] = host(w), host(b)
    for i, m in enumerate(batch_norms(torch, net), start=1):
        w, b = (m.weight.grad, m.bias.grad) if grad else (m.weight, m.bias)
        out[f"gamma{i}"], out[f"beta{i}"] = host(w), host(b)
    return out


def torch_pass(torch, net, x, R):
    """J = sum(net(x) R) and its backward in float64 under torch autograd; returns (output,
    dJ/dx, taps) with taps[i] = (z, dJ/dn) at hidden layer i's BatchNorm1d (its input and
    the gradient at its output), read through forward hooks."""
    taps, handles = [], []

    def hook(module, inputs, output):
        output.retain_grad()
        taps.append((inputs[0], output, module))

    for m in batch_norms(torch, net):
        handles.append(m.register_forward_hook(hook))
    xt = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    out = net(xt)
    (out * torch.tensor(np.asarray(R, dtype=np.float64))).sum().backward()
    for h in handles:
        h.remove()
    return out, xt.grad, [(host(z), host(n.grad), m) for z, n, m in taps]


def assert_grads_match(torch, model, net, taps, dtype, rtol_of=lambda k: None):
    """Every parameter gradient of ``model`` against the torch net's.

    The bias of a Linear that feeds a batch norm has the exact gradient 0 (the batch mean
    removes any shift of z), so both sides hold rounding noise there: it is held instead to
    |db_j| <= rtol s_j with s_j = rstd_j sum_r |dn_rj gamma_j|, the scale of the terms whose
    cancellation leaves it (rstd_j from the batch's biased variance of z, written here). With
    the identity between, beta of a hidden layer whose output feeds another batch norm is
    such a shift too: its exact gradient is 0, held to rtol |W_{i+1}|^T s^{(i+1)}."""
    ref = torch_params(torch, net, grad=True)
    assert set(model.grads) == set(ref) == set(model.params)
    hidden = len(model.sizes) - 2
    scales = {}
    for i, (z, dn, bn) in enumerate(taps, start=1):
        rstd = 1 / np.sqrt(z.var(axis=0) + bn.eps)
        scales[f"b{i}"] = rstd * np.abs(dn * host(bn.weight)).sum(axis=0)
    if model.activation == "identity":
        for i in range(1, hidden):
            W = np.abs(np.asarray(model.state_dict()[f"W{i + 1}"], dtype=np.float64))
            scales[f"beta{i}"] = W.T @ scales[f"b{i + 1}"]
    for k in param_names(model.sizes):
        g = model.grads[k]
        assert model.backend.owns(g) and g.dtype == dtype and g.shape == ref[k].shape, k
        rtol = rtol_of(k) or RTOL[dtype]
        if k in scales:  # exactly 0
            scale = scales[k]
            assert np.all(np.abs(ref[k]) <= RTOL[np.float64] * scale), "torch's " + k
            assert np.all(np.abs(host(g)) <= rtol * scale), (k, host(g), scale)
        else:
            assert_close(g, ref[k], dtype, f"dJ/d{k}", rtol=rtol)


def torch_stats(torch, net):
    """running_mean{i} / running_var{i} of the torch net's batch norms, as host arrays."""
    out = {}
    for i, m in enumerate(batch_norms(torch, net), start=1):
        out[f"running_mean{i}"] = host(m.running_mean)
        out[f"running_var{i}"] = host(m.running_var)
    return out


def assert_close(actual, expected, dtype, what="", rtol=None):
    """rtol by dtype, plus an atol scaled to the array (for entries near zero)."""
    rtol = RTOL[dtype] if rtol is None else rtol
    actual, expected = np.asarray(host(actual), dtype=np.float64), np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = float(np.abs(expected).max()) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def randomise_norm(model, rng, stats=False):
    """Biases away from 0, gamma away from 1 and beta away from 0 (so that a swapped or
    misplaced gamma/beta shows); with ``stats`` also running means away from 0 and running
    variances away from 1 (so that an eval pass that ignored them, or swapped them, shows)."""
    be = model.backend
    for i in range(1, len(model.sizes)):
        model.params[f"b{i}"] = be.asarray(rng.normal(0, 0.5, model.sizes[i]),
                                           dtype=model.dtype)
    for i in range(1, len(model.sizes) - 1):
        w = model.sizes[i]
        model.params[f"gamma{i}"] = be.asarray(rng.uniform(0.3, 1.8, w), dtype=model.dtype)
        model.params[f"beta{i}"] = be.asarray(rng.normal(0, 0.6, w), dtype=model.dtype)
        if stats:
            model.buffers[f"running_mean{i}"] = be.asarray(rng.normal(0, 0.8, w),
                                                           dtype=model.dtype)
            model.buffers[f"running_var{i}"] = be.asarray(rng.uniform(0.4, 2.5, w),
                                                          dtype=model.dtype)


def make_model(backend, dtype, activation="relu", sizes=SIZES, output="identity", seed=0,
               stats=False, **kw):
    model = gn.MLP(sizes, activation=activation, output=output, norm="batch",
                   backend=backend, seed=seed, dtype=np.dtype(dtype).name, slope=SLOPE, **kw)
    randomise_norm(model, np.random.default_rng(seed + 100), stats=stats)
    return model


def param_names(sizes):
    names, last = [], len(sizes) - 1
    for i in range(1, last + 1):
        names += [f"W{i}", f"b{i}"]
        if i < last:
            names += [f"gamma{i}", f"beta{i}"]
    return names


def buffer_names(sizes):
    return [f"running_{s}{i}" for i in range(1, len(sizes) - 1) for s in ("mean", "var")]


def host_buffers(model):
    return {k: np.array(host(v)) for k, v in model.buffers.items()}


def numpy_eval_forward(state, sizes, activation, x, eps=1e-5):
    """The eval-mode forward pass in float64 NumPy, from a state dict: per hidden layer
    z = h W^T + b, n = (z - running_mean) / sqrt(running_var + eps) gamma + beta, h = f(n);
    the last layer's z is returned (logits, identity output)."""
    f = {"relu": lambda a: np.maximum(a, 0), "tanh": np.tanh, "identity": lambda a: a,
         "sigmoid": lambda a: 1 / (1 + np.exp(-a))}[activation]
    s = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
    h = np.asarray(x, dtype=np.float64)
    last = len(sizes) - 1
    for i in range(1, last + 1):
        z = h @ s[f"W{i}"].T + s[f"b{i}"]
        if i == last:
            return z
        n = (z - s[f"running_mean{i}"]) / np.sqrt(s[f"running_var{i}"] + eps)
        h = f(n * s[f"gamma{i}"] + s[f"beta{i}"])


# -- parameters and buffers -------------------------------------------------------------------


def test_parameters_and_buffers_are_named_shaped_and_initialised(backend, dtype):
    """gamma{i}, beta{i} after W{i}, b{i} of every hidden layer; running_mean{i} (zeros) and
    running_var{i} (ones) as buffers, not parameters; the state dict holds the parameters,
    then the buffers; config names norm, eps and momentum."""
    model = gn.MLP(SIZES, norm="batch", norm_momentum=0.3, backend=backend, seed=3,
                   dtype=np.dtype(dtype).name)
    assert list(model.params) == param_names(SIZES)
    assert sorted(model.buffers) == sorted(buffer_names(SIZES))
    for i, w in enumerate(SIZES[1:-1], start=1):
        for name, value in ((f"running_mean{i}", 0.0), (f"running_var{i}", 1.0)):
            b = model.buffers[name]
            assert backend.owns(b) and b.dtype == dtype and b.shape == (w,), name
            np.testing.assert_array_equal(host(b), np.full(w, value))
    assert list(model.state_dict()) == param_names(SIZES) + list(model.buffers)
    cfg = model.config()
    assert cfg["norm"] == "batch" and cfg["norm_momentum"] == pytest.approx(0.3)
    assert cfg["norm_eps"] == pytest.approx(1e-5)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, None, "0.1", True])
def test_momenta_outside_zero_one_are_refused(momentum):
    with pytest.raises(gn.ConfigError, match="momentum"):
        gn.MLP([3, 4, 2], norm="batch", norm_momentum=momentum, backend="numpy")


# -- a training pass against torch autograd (BatchNorm1d in train mode) ------------------------


@pytest.mark.parametrize("batch", [2, 13])
@pytest.mark.parametrize("activation", HIDDEN)
def test_training_forward_every_gradient_and_dx_match_torch(backend, dtype, torch, activation,
                                                            batch):
    """y_hat, dJ/dW, dJ/db, dJ/dgamma, dJ/dbeta of every layer and dJ/dx of a training pass,
    J = sum(y_hat R), against torch float64 autograd of Linear -> BatchNorm1d (train mode) -> f
    with random gamma and beta; and the running statistics the pass moved against torch's.

    A batch of two rows normalises each feature to about +-1 whatever z is, so dJ/dz through a
    batch norm is a cancellation residue of order eps / (z1 - z2)^2 of the terms: in float32
    (torch's own float32 too) every gradient below the last batch norm keeps only ~3 digits
    there. Those are held to 1e-2 in that one case; the rest to float32's 1e-5."""
    model = make_model(backend, dtype, activation, seed=2, stats=True)
    net = torch_net(torch, model)  # before the pass: the same starting running statistics
    rng = np.random.default_rng(7 + batch)
    x = (rng.standard_normal((batch, SIZES[0])) * 1.5 + 0.3).astype(dtype)
    R = rng.standard_normal((batch, SIZES[-1])).astype(dtype)

    y_hat = model.forward(backend.asarray(x))
    assert backend.owns(y_hat) and y_hat.dtype == dtype and y_hat.shape == (batch, SIZES[-1])
    dJdx = model.backward(backend.asarray(R))  # dJ/dy_hat = R

    out, dx_ref, taps = torch_pass(torch, net, x, R)

    assert_close(y_hat, host(out), dtype, "forward")
    last = len(SIZES) - 1
    conditioned = {f"W{last}", f"b{last}", f"gamma{last - 1}", f"beta{last - 1}"}
    ill = dtype == np.float32 and batch == 2
    assert_grads_match(torch, model, net, taps, dtype,
                       lambda k: 1e-2 if ill and k not in conditioned else None)
    assert dJdx.shape == x.shape and dJdx.dtype == dtype
    assert_close(dJdx, host(dx_ref), dtype, "dJ/dx", rtol=1e-2 if ill else None)
    for k, r in torch_stats(torch, net).items():
        assert_close(model.buffers[k], r, dtype, k)


def test_softmax_output_deeper_net_custom_eps_and_momentum_match_torch(backend, dtype, torch):
    """Four hidden layers of widths that are not powers of two, eps 1e-3, momentum 0.3, a
    softmax output, sigmoid between: forward, every gradient, dJ/dx and the running
    statistics against torch."""
    sizes = [6, 19, 11, 23, 7, 5]
    model = make_model(backend, dtype, "sigmoid", sizes=sizes, output="softmax", seed=4,
                       stats=True, norm_eps=1e-3, norm_momentum=0.3)
    net = torch_net(torch, model, eps=1e-3, momentum=0.3)
    assert len(batch_norms(torch, net)) == 4
    rng = np.random.default_rng(8)
    x = rng.normal(0.5, 2.0, (11, sizes[0])).astype(dtype)
    R = rng.standard_normal((11, sizes[-1])).astype(dtype)
    y_hat = model.forward(backend.asarray(x))
    dJdx = model.backward(backend.asarray(R))
    out, dx_ref, taps = torch_pass(torch, net, x, R)
    assert_close(y_hat, host(out), dtype, "forward")
    assert_grads_match(torch, model, net, taps, dtype)
    assert_close(dJdx, host(dx_ref), dtype, "dJ/dx")
    for k, r in torch_stats(torch, net).items():
        assert_close(model.buffers[k], r, dtype, k)


def test_backward_without_dx_fills_the_norm_gradients(torch):
    """need_dx=False returns None and still fills every gradient (float64, vs torch)."""
    model = make_model("numpy", np.float64, "tanh", seed=6)
    net = torch_net(torch, model)
    rng = np.random.default_rng(9)
    x, R = rng.normal(size=(5, SIZES[0])), rng.normal(size=(5, SIZES[-1]))
    model.forward(x)
    assert model.backward(R, need_dx=False) is None
    _, _, taps = torch_pass(torch, net, x, R)
    assert_grads_match(torch, model, net, taps, np.float64)


def test_a_training_pass_normalises_over_the_batch(backend, dtype):
    """With gamma 1 and beta 0 and an identity activation, a training pass's output is
    ((z - mean) / sqrt(var + eps)) W2^T + b2 with the mean and biased variance of each feature
    of z = x W1^T + b1 over the batch (float64 NumPy written here); and the rows depend on
    each other: a row's output changes when another row of the batch does."""
    model = gn.MLP([5, 9, 3], activation="identity", norm="batch", backend=backend, seed=1,
                   dtype=np.dtype(dtype).name)
    rng = np.random.default_rng(4)
    x = rng.normal(1.0, 2.0, (10, 5)).astype(dtype)
    model.forward(backend.asarray(x))
    state = model.state_dict()
    z = x.astype(np.float64) @ state["W1"].astype(np.float64).T + state["b1"]
    mu, var = z.mean(axis=0), z.var(axis=0)
    n = (z - mu) / np.sqrt(var + 1e-5)
    # the hidden output is what the last Linear reads
    W2, b2 = state["W2"].astype(np.float64), state["b2"].astype(np.float64)
    y_hat = host(model.forward(backend.asarray(x)))
    assert_close(y_hat, n @ W2.T + b2, dtype, "output from the batch-normalised hidden layer")
    x2 = x.copy()
    x2[7] += 3.0
    y2 = host(model.forward(backend.asarray(x2)))
    assert np.abs(y2[0] - y_hat[0]).max() > 1e-3  # row 0 moved because row 7 did


# -- running statistics and eval mode ----------------------------------------------------------


@pytest.mark.parametrize("momentum", [None, 0.3], ids=["default-momentum", "momentum-0.3"])
def test_running_statistics_follow_torch_then_predict_is_eval_mode(backend, dtype, torch,
                                                                   momentum):
    """Several training passes on batches of different sizes (13, 5, 2, 21, 9) move
    running_mean / running_var as torch's BatchNorm1d moves them (momentum: gpunet's default
    against torch's default, and 0.3 given to both); then predict and forward(cache=False)
    equal the torch net's eval-mode output, and neither moves the statistics."""
    kw = {} if momentum is None else {"norm_momentum": momentum}
    model = make_model(backend, dtype, "tanh", seed=3, **kw)
    net = torch_net(torch, model, momentum=momentum)
    rng = np.random.default_rng(11)
    for b in (13, 5, 2, 21, 9):
        x = rng.normal(0.7, 1.9, (b, SIZES[0])).astype(dtype)
        model.forward(backend.asarray(x))
        with torch.no_grad():
            net(torch.tensor(x.astype(np.float64)))
    ref = torch_stats(torch, net)
    assert sorted(model.buffers) == sorted(ref)
    for k, r in ref.items():
        assert backend.owns(model.buffers[k]) and model.buffers[k].dtype == dtype, k
        assert_close(model.buffers[k], r, dtype, k)
    # (the reference moved well away from the initial 0 and 1: the comparison is not vacuous)
    assert np.abs(ref["running_mean1"]).max() > 0.1
    assert np.abs(ref["running_var1"] - 1).max() > 0.1

    net.eval()
    x = rng.normal(0.7, 1.9, (17, SIZES[0])).astype(dtype)
    with torch.no_grad():
        expected = host(net(torch.tensor(x.astype(np.float64))))
    before = host_buffers(model)
    assert_close(model.predict(backend.asarray(x)), expected, dtype, "predict")
    assert_close(model.forward(backend.asarray(x), cache=False), expected, dtype,
                 "forward(cache=False)")
    assert_close(model.predict(backend.asarray(x), batch_size=4), expected, dtype,
                 "predict in batches of 4")
    for k, v in before.items():
        np.testing.assert_array_equal(host(model.buffers[k]), v, err_msg=f"{k} moved by predict")


def test_momentum_zero_and_one(torch):
    """Momentum 0 keeps the running statistics; momentum 1 replaces them by the last batch's
    (mean, unbiased variance), as torch does."""
    for m in (0.0, 1.0):
        model = make_model("numpy", np.float64, "relu", seed=5, stats=True, norm_momentum=m)
        net = torch_net(torch, model, momentum=m)
        before = host_buffers(model)
        rng = np.random.default_rng(12)
        for b in (6, 9):
            x = rng.normal(size=(b, SIZES[0]))
            model.forward(x)
            with torch.no_grad():
                net(torch.tensor(x))
        for k, r in torch_stats(torch, net).items():
            assert_close(model.buffers[k], r, np.float64, f"momentum {m}: {k}")
            if m == 0.0:
                np.testing.assert_array_equal(host(model.buffers[k]), before[k])
        if m == 1.0:  # layer 1's statistics are those of the last batch's z1
            s = model.state_dict()
            z = x @ s["W1"].T + s["b1"]
            assert_close(model.buffers["running_mean1"], z.mean(axis=0), np.float64, "mean")
            assert_close(model.buffers["running_var1"], z.var(axis=0, ddof=1), np.float64,
                         "unbiased variance")


def test_a_training_pass_of_one_row_is_refused_and_predict_of_one_row_is_eval(backend, dtype,
                                                                               torch):
    """A training pass (forward, train_step) of one row raises ShapeError, as torch's
    BatchNorm1d refuses one, and changes nothing; predict of one row works and equals torch's
    eval-mode output (and the rows of a whole batch's prediction)."""
    model = make_model(backend, dtype, "leaky_relu", seed=7, stats=True)
    net = torch_net(torch, model)
    rng = np.random.default_rng(13)
    x1 = rng.normal(size=(1, SIZES[0])).astype(dtype)
    y1 = rng.normal(size=(1, SIZES[-1])).astype(dtype)
    with pytest.raises(ValueError):  # the reference refuses it too
        net(torch.tensor(x1.astype(np.float64)))
    before = model.state_dict()
    with pytest.raises(gn.ShapeError, match=r"(?i)batch norm"):
        model.forward(backend.asarray(x1))
    with pytest.raises(gn.ShapeError):
        model.train_step(backend.asarray(x1), backend.asarray(y1), gn.MSELoss(),
                         gn.SGD(model, lr=0.1))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} changed by a refused pass")

    net.eval()
    with torch.no_grad():
        expected = host(net(torch.tensor(x1.astype(np.float64))))
    assert_close(model.predict(backend.asarray(x1)), expected, dtype, "predict of one row")
    x = rng.normal(size=(6, SIZES[0])).astype(dtype)
    whole = host(model.predict(backend.asarray(x)))
    for r in (0, 5):
        assert_close(model.predict(backend.asarray(x[r:r + 1])), whole[r:r + 1], dtype,
                     f"row {r} alone")


# -- finite differences -------------------------------------------------------------------------

BN_COMBOS = [
    ("tanh", "identity", "cross_entropy", "labels"),
    ("sigmoid", "softmax", "mse", "real"),
    ("leaky_relu", "identity", "bce_logits", "unit"),
    ("identity", "sigmoid", "bce", "unit"),
    ("relu", "identity", "mse_sum", "real"),
]


@pytest.mark.parametrize("combo", BN_COMBOS, ids=lambda c: "-".join(c))
def test_finite_differences_with_batch_norm(combo, backend):
    """check_combination with norm="batch" on two hidden layers: every element of every
    gradient (gamma and beta included, none for the output layer) and of dJ/dx."""
    result = check_combination(combo, backend, sizes=(4, 7, 6, 3), batch=8, seed=13,
                               norm="batch")
    assert set(result.errors) == set(param_names([4, 7, 6, 3])) | {"x"}
    assert result.ok, result.ratios


@pytest.mark.parametrize("combo", BN_COMBOS[:2], ids=lambda c: "-".join(c))
def test_finite_differences_with_batch_norm_and_dropout(combo, backend):
    result = check_combination(combo, backend, sizes=(4, 7, 6, 3), batch=8, seed=17,
                               dropout=0.5, norm="batch")
    assert {"gamma1", "beta1", "gamma2", "beta2", "x"} <= set(result.errors)
    assert result.ok, result.ratios


def test_gradcheck_leaves_the_running_statistics_of_the_analytic_pass(backend, torch):
    """gradcheck documents that the running statistics are put back as they were after the
    analytic pass (one training pass), though every finite-difference pass moved them: they
    equal torch's after one train-mode pass on the same batch, and bit for bit those of a
    copy of the model that took that one pass."""
    model = make_model(backend.name, np.float64, "tanh", sizes=[5, 8, 7, 3], seed=9,
                       stats=True, norm_momentum=0.25)
    twin = make_model(backend.name, np.float64, "tanh", sizes=[5, 8, 7, 3], seed=9,
                      stats=True, norm_momentum=0.25)
    net = torch_net(torch, model, momentum=0.25)
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 3))
    with torch.no_grad():
        net(torch.tensor(x))
    twin.forward(backend.asarray(x))
    result = gn.gradcheck(model, gn.MSELoss(), x, y)
    assert result.ok, result.ratios
    for k, r in torch_stats(torch, net).items():
        assert_close(model.buffers[k], r, np.float64, k)
        np.testing.assert_array_equal(host(model.buffers[k]), host(twin.buffers[k]), err_msg=k)
    for k, v in twin.params.items():  # and the parameters are as they were
        np.testing.assert_array_equal(host(model.params[k]), host(v), err_msg=k)


def test_gradcheck_with_dropout_and_batch_norm_leaves_one_step_behind(backend):
    """With dropout too: the statistics are those of one training pass (a twin that took it
    with the same masks, bit for bit) and the dropout step counts one."""
    kw = dict(sizes=[5, 8, 7, 3], seed=19, stats=True, dropout=0.4, dropout_seed=3)
    model = make_model(backend.name, np.float64, "sigmoid", **kw)
    twin = make_model(backend.name, np.float64, "sigmoid", **kw)
    model.dropout_step = twin.dropout_step = 4
    rng = np.random.default_rng(20)
    x, labels = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    twin.forward(backend.asarray(x))
    result = gn.gradcheck(model, gn.CrossEntropyLoss(), x, labels)
    assert result.ok, result.ratios
    assert model.dropout_step == twin.dropout_step == 5
    for k, v in twin.buffers.items():
        np.testing.assert_array_equal(host(model.buffers[k]), host(v), err_msg=k)


# -- optimiser steps against torch.optim ---------------------------------------------------------


def _sgd_pair(torch, model, net, lr=0.05, momentum=0.9):
    return (gn.SGD(model, lr=lr, momentum=momentum),
            torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum))


def test_train_step_with_sgd_momentum_follows_torch(backend, dtype, torch):
    """Five train_steps (cross-entropy, SGD lr 0.05 momentum 0.9) on batches of 13, 9, 13, 2
    and 11 rows: every parameter and running statistic after each step against torch's
    nn.Sequential(Linear, BatchNorm1d, ReLU, ...) with torch.optim.SGD; the losses too."""
    model = make_model(backend, dtype, "relu", seed=4)
    net = torch_net(torch, model)
    opt, topt = _sgd_pair(torch, model, net)
    loss_fn = gn.CrossEntropyLoss()
    rng = np.random.default_rng(14)
    rtol = RTOL[dtype] * (10 if dtype == np.float32 else 100)  # five steps of rounding
    for step, b in enumerate((13, 9, 13, 2, 11), start=1):
        x = rng.normal(0.2, 1.3, (b, SIZES[0])).astype(dtype)
        labels = rng.integers(0, SIZES[-1], b)
        value = model.train_step(backend.asarray(x), backend.asarray(labels), loss_fn, opt)
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(net(torch.tensor(x.astype(np.float64))),
                                                  torch.tensor(labels))
        tloss.backward()
        topt.step()
        assert float(host(value)) == pytest.approx(tloss.item(), rel=rtol), f"loss {step}"
        for k, r in {**torch_params(torch, net), **torch_stats(torch, net)}.items():
            v = model.params[k] if k in model.params else model.buffers[k]
            assert_close(v, r, dtype, f"step {step}: {k}", rtol=rtol)


# -- fit --------------------------------------------------------------------------------------


def _classification_data(n=157, d=7, k=4, seed=0, val=0.15):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, d) + rng.normal(0, 2, d)
    scores = x @ rng.normal(size=(d, k)) + rng.normal(0, 0.5, (n, k))
    y = scores.argmax(axis=1)
    return make_dataset("bn", x, y, "classification", seed=seed, test_fraction=0.1,
                        val_fraction=val)


def _bn_model(sizes=(7, 19, 11, 4), seed=5, **kw):
    model = gn.MLP(list(sizes), activation="tanh", norm="batch", backend="numpy",
                   dtype="float64", seed=seed, **kw)
    randomise_norm(model, np.random.default_rng(seed + 1))
    return model


def _ragged_batch_size(n, start=16):
    """A batch size whose last batch is ragged but of at least 2 rows."""
    bs = start
    while n % bs in (0, 1):
        bs += 1
    return bs


def test_static_steps_take_batch_norm():
    """StaticStep takes a batch-norm model (fit's default path): tests/test_step.py holds it
    to the eager step, weights and running statistics, to the bit."""
    model = _bn_model()
    assert gn.StaticStep.unsupported(model, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1)) == ""


def test_fit_follows_torch_over_fits_batches(torch):
    """fit (3 epochs, SGD momentum 0.9, a ragged last batch) against torch on the batches fit
    documents: one generator seeded with ``seed`` draws a permutation of the training rows per
    epoch, batches are its consecutive slices. Final weights and running statistics, each
    epoch's train_loss (the row-weighted mean of the batch losses) and val_loss (eval mode,
    on the validation rows) agree with torch's."""
    data = _classification_data()
    n = len(data.x_train)
    bs = _ragged_batch_size(n)
    model = _bn_model()
    net = torch_net(torch, model)
    opt, topt = _sgd_pair(torch, model, net)
    history = gn.fit(model, data, gn.CrossEntropyLoss(), opt, epochs=3, batch_size=bs, seed=7,
                     progress=False, handle_sigint=False)

    xt, yt = torch.tensor(data.x_train), torch.tensor(np.asarray(data.y_train).reshape(-1))
    xv, yv = torch.tensor(data.x_val), torch.tensor(np.asarray(data.y_val).reshape(-1))
    rng = np.random.default_rng(7)
    for epoch in range(3):
        net.train()
        perm = rng.permutation(n)
        total = 0.0
        for s in range(0, n, bs):
            idx = torch.tensor(perm[s:s + bs])
            topt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            topt.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            val = float(torch.nn.functional.cross_entropy(net(xv), yv))
        row = history[epoch]
        assert row["train_loss"] == pytest.approx(total / n, rel=1e-9), f"epoch {epoch + 1}"
        assert row["val_loss"] == pytest.approx(val, rel=1e-9), f"epoch {epoch + 1}"
    for k, r in {**torch_params(torch, net), **torch_stats(torch, net)}.items():
        v = model.params[k] if k in model.params else model.buffers[k]
        assert_close(v, r, np.float64, k, rtol=1e-9)


def test_fit_with_graph_steps_as_without_it():
    """fit(graph=True) (the default: the static step for full batches) gives the same
    weights, running statistics and history, bit for bit, as fit(graph=False) (eager)."""
    data = _classification_data(seed=1)
    bs = _ragged_batch_size(len(data.x_train), 10)
    runs = []
    for graph in (True, False):
        model = _bn_model(seed=8)
        opt = gn.Adam(model, lr=0.01)
        h = gn.fit(model, data, gn.CrossEntropyLoss(), opt, epochs=2, batch_size=bs, seed=3,
                   progress=False, handle_sigint=False, graph=graph)
        runs.append((model.state_dict(), [{k: v for k, v in r.items() if k != "seconds"}
                                          for r in h]))
    (a, ha), (b, hb) = runs
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert ha == hb
    assert not np.array_equal(a["running_mean1"], 0)  # fit moved the statistics


def test_fit_refuses_a_last_batch_of_one_row():
    """A batch size that leaves a last batch of one row: ConfigError (saying so) before any
    step; the same batch size trains a layer-norm model, and one row more trains the
    batch-norm model."""
    data = _classification_data(seed=2)
    n = len(data.x_train)
    bs = (n - 1) // 2 if (n - 1) % 2 == 0 else n - 1  # n = k bs + 1
    assert n % bs == 1 and bs >= 2
    model = _bn_model(seed=9)
    before = model.state_dict()
    with pytest.raises(gn.ConfigError, match=r"(?i)batch norm") as e:
        gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), epochs=1,
               batch_size=bs, progress=False, handle_sigint=False)
    assert e.match(r"(?i)(1 row|one row|last batch of 1|batch of 1)"), str(e.value)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    ln = gn.MLP([7, 19, 11, 4], norm="layer", backend="numpy", dtype="float64")
    gn.fit(ln, data, gn.CrossEntropyLoss(), gn.SGD(ln, lr=0.1), epochs=1, batch_size=bs,
           progress=False, handle_sigint=False)
    gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), epochs=1,
           batch_size=bs + 1, progress=False, handle_sigint=False)


def test_early_stopping_keeps_the_best_epochs_running_statistics():
    """With patience, fit keeps the best epoch's weights and running statistics: the kept
    model's validation loss (eval mode: it reads the statistics) is that epoch's."""
    data = _classification_data(seed=4, val=0.25)
    model = _bn_model(seed=11)
    history = gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.8, momentum=0.9),
                     epochs=12, batch_size=_ragged_batch_size(len(data.x_train), 8), seed=5,
                     patience=12, progress=False, handle_sigint=False)
    losses = [r["val_loss"] for r in history]
    assert history.best_epoch == int(np.argmin(losses)) + 1
    assert history.best_epoch < len(history)  # (so that the last epoch's would differ)
    m = gn.train.metrics(model, data.x_val, np.asarray(data.y_val), gn.CrossEntropyLoss(),
                         "classification")
    assert m["loss"] == pytest.approx(losses[history.best_epoch - 1], rel=1e-12)


# -- checkpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_checkpoint_round_trip_keeps_running_statistics(tmp_path, dtype_name):
    """save/load after training passes: norm, eps and momentum in the stored config, the
    running statistics restored bit for bit, predictions bit for bit, and the next training
    pass moves both models' statistics alike."""
    model = make_model("numpy", np.dtype(dtype_name), "tanh", seed=11, norm_eps=1e-4,
                       norm_momentum=0.2)
    rng = np.random.default_rng(15)
    for b in (9, 14):
        model.forward(rng.normal(size=(b, SIZES[0])).astype(dtype_name))
    path = tmp_path / "bn.npz"
    save_checkpoint(path, model)
    ck = load_checkpoint(path)
    assert ck.header["model"]["norm"] == "batch"
    assert ck.header["model"]["norm_eps"] == pytest.approx(1e-4)
    assert ck.header["model"]["norm_momentum"] == pytest.approx(0.2)
    back = ck.build_model("numpy")
    assert back.norm == "batch" and back.norm_momentum == pytest.approx(0.2)
    assert list(back.params) == list(model.params)
    assert sorted(back.buffers) == sorted(buffer_names(SIZES))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)
    assert np.abs(back.state_dict()["running_mean2"]).max() > 0  # not the initial zeros
    x = rng.normal(size=(6, SIZES[0])).astype(dtype_name)
    np.testing.assert_array_equal(host(back.predict(x)), host(model.predict(x)))
    model.forward(x)
    back.forward(x)
    for k in model.buffers:
        np.testing.assert_array_equal(host(back.buffers[k]), host(model.buffers[k]), err_msg=k)


def test_fit_resumed_from_a_checkpoint_matches_an_unbroken_run(tmp_path):
    """fit for 4 epochs, against fit for 2, saved, and resumed from that checkpoint to 4:
    the same parameters and running statistics, bit for bit (the checkpoint carried the
    statistics the first two epochs moved)."""
    data = _classification_data(seed=6)
    bs = _ragged_batch_size(len(data.x_train), 12)

    def run(epochs, save, resume=None):
        model = _bn_model(seed=12) if resume is None else resume.build_model("numpy")
        gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1, momentum=0.9),
               epochs=epochs, batch_size=bs, seed=2, save=save, resume=resume,
               progress=False, handle_sigint=False)
        return model

    unbroken = run(4, tmp_path / "a.npz")
    half = run(2, tmp_path / "b.npz")
    assert load_checkpoint(tmp_path / "b.npz").params["running_var1"].tolist() == \
        half.state_dict()["running_var1"].tolist()
    resumed = run(4, tmp_path / "b.npz", resume=load_checkpoint(tmp_path / "b.npz"))
    a, b = unbroken.state_dict(), resumed.state_dict()
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)


def test_load_state_dict_needs_the_buffers():
    """A state of parameters only (or with a buffer of the wrong shape) is refused with
    ShapeError naming the buffer; a full state loads the buffers as copies."""
    model = make_model("numpy", np.float64, seed=12)
    state = model.state_dict()
    params_only = {k: v for k, v in state.items() if k in model.params}
    with pytest.raises(gn.ShapeError, match="running_mean1"):
        model.load_state_dict(params_only)
    bad = dict(state, running_var2=np.ones(SIZES[2] + 1))
    with pytest.raises(gn.ShapeError, match="running_var2"):
        model.load_state_dict(bad)
    mine = np.random.default_rng(0).normal(size=SIZES[1])
    kept = mine.copy()
    model.load_state_dict(dict(state, running_mean1=mine))
    np.testing.assert_array_equal(host(model.buffers["running_mean1"]), kept)
    model.forward(np.random.default_rng(1).normal(size=(5, SIZES[0])))
    assert not np.array_equal(host(model.buffers["running_mean1"]), kept)  # the pass moved it
    np.testing.assert_array_equal(mine, kept)  # ... in the model's copy, not the caller's


# -- PyTorch interop ----------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_to_torch_holds_the_batch_norms(dtype, torch, activation):
    """to_torch: Linear, BatchNorm1d(width, eps, momentum), f[, Dropout] per hidden layer,
    gamma/beta as weight/bias and the running statistics copied; eval mode gives predict's
    outputs, train mode a training pass's outputs and the same moved statistics."""
    model = make_model("numpy", dtype, activation, seed=5, stats=True, norm_eps=2e-4,
                       norm_momentum=0.15, dropout=0.3)
    net = model.to_torch()
    act = [] if activation == "identity" else ["ReLU"]
    assert [type(m).__name__ for m in net] == (["Linear", "BatchNorm1d"] + act
                                               + ["Dropout"]) * 2 + ["Linear"]
    state = model.state_dict()
    for i, (m, w) in enumerate(zip(batch_norms(torch, net), SIZES[1:-1]), start=1):
        assert m.num_features == w and m.eps == pytest.approx(2e-4)
        assert m.momentum == pytest.approx(0.15) and m.affine and m.track_running_stats
        for mine, theirs in ((f"gamma{i}", m.weight), (f"beta{i}", m.bias),
                             (f"running_mean{i}", m.running_mean),
                             (f"running_var{i}", m.running_var)):
            np.testing.assert_array_equal(host(theirs), state[mine], err_msg=mine)
    x = np.random.default_rng(6).normal(size=(13, SIZES[0])).astype(dtype)
    net.eval()
    with torch.no_grad():
        expected = host(net(torch.tensor(x)))
    assert_close(model.predict(x), expected, dtype, "to_torch eval vs predict")
    # train mode without dropout: a training pass
    nodrop = make_model("numpy", dtype, activation, seed=5, stats=True, norm_eps=2e-4,
                        norm_momentum=0.15)
    tnet = nodrop.to_torch().train()
    with torch.no_grad():
        expected = host(tnet(torch.tensor(x)))
    assert_close(nodrop.forward(x), expected, dtype, "to_torch train vs forward")
    for k, r in torch_stats(torch, tnet).items():
        assert_close(nodrop.buffers[k], r, dtype, k)


def _torch_bn_net(torch, widths=SIZES, eps=1e-3, momentum=0.2, dtype=None, seed=0,
                  dropout=None):
    """A torch Linear -> BatchNorm1d(eps, momentum) -> Tanh [-> Dropout] net with random
    scale and shift, whose running statistics a few train-mode passes moved."""
    torch.manual_seed(seed)
    dtype = dtype or torch.float64
    layers, last = [], len(widths) - 1
    for i in range(1, last + 1):
        layers.append(torch.nn.Linear(widths[i - 1], widths[i], dtype=dtype))
        if i < last:
            bn = torch.nn.BatchNorm1d(widths[i], eps=eps, momentum=momentum, dtype=dtype)
            with torch.no_grad():
                bn.weight.uniform_(0.4, 1.7)
                bn.bias.normal_(0, 0.5)
            layers += [bn, torch.nn.Tanh()]
            if dropout:
                layers.append(torch.nn.Dropout(dropout))
    net = torch.nn.Sequential(*layers).train()
    with torch.no_grad():
        for b in (11, 6, 23):
            net(torch.randn(b, widths[0], dtype=dtype) * 2 + 0.5)
    return net.eval()


@pytest.mark.parametrize("tdtype", ["float32", "float64"])
def test_from_torch_reproduces_a_torch_net_with_batch_norm(torch, tdtype):
    """from_torch of Linear -> BatchNorm1d -> Tanh [-> Dropout] nets: norm="batch", torch's
    eps and momentum, gamma/beta and the running statistics copied, and torch's eval-mode
    outputs."""
    tdt = getattr(torch, tdtype)
    for dropout in (None, 0.2):
        net = _torch_bn_net(torch, eps=1e-3, momentum=0.2, dtype=tdt, seed=1, dropout=dropout)
        model = gn.MLP.from_torch(net, backend="numpy")
        assert model.norm == "batch" and model.norm_eps == pytest.approx(1e-3)
        assert model.norm_momentum == pytest.approx(0.2)
        assert model.dtype == np.dtype(tdtype) and model.activation == "tanh"
        assert model.dropout == pytest.approx(dropout or 0.0)
        assert list(model.params) == param_names(SIZES)
        assert sorted(model.buffers) == sorted(buffer_names(SIZES))
        for i, m in enumerate(batch_norms(torch, net), start=1):
            for mine, theirs in ((model.params[f"gamma{i}"], m.weight),
                                 (model.params[f"beta{i}"], m.bias),
                                 (model.buffers[f"running_mean{i}"], m.running_mean),
                                 (model.buffers[f"running_var{i}"], m.running_var)):
                np.testing.assert_array_equal(host(mine), host(theirs))
        x = np.random.default_rng(2).normal(size=(9, SIZES[0])).astype(tdtype)
        with torch.no_grad():
            expected = host(net(torch.tensor(x)))
        assert_close(model.predict(x), expected, np.dtype(tdtype).type, f"dropout {dropout}")


def test_torch_round_trip_keeps_everything(torch):
    """MLP -> to_torch -> from_torch: the same config and bit-identical parameters and
    running statistics."""
    model = make_model("numpy", np.float64, "leaky_relu", seed=8, stats=True, norm_eps=5e-5,
                       norm_momentum=0.35)
    back = gn.MLP.from_torch(model.to_torch(), backend="numpy")
    for key in ("sizes", "activation", "output", "norm", "dtype"):
        assert back.config()[key] == model.config()[key], key
    assert back.norm_eps == pytest.approx(model.norm_eps)
    assert back.norm_momentum == pytest.approx(0.35) and back.slope == pytest.approx(SLOPE)
    a, b = model.state_dict(), back.state_dict()
    assert list(a) == list(b)
    for k, v in a.items():
        np.testing.assert_array_equal(b[k], v, err_msg=k)


def _refused_nets(torch):
    nn = torch.nn
    L, BN, LN, R = nn.Linear, nn.BatchNorm1d, nn.LayerNorm, nn.ReLU
    return {
        "after the activation": (
            lambda: nn.Sequential(L(9, 33), R(), BN(33), L(33, 17), R(), BN(17), L(17, 5)),
            r"(?i)(activation|relu|before)"),
        "after the last Linear": (
            lambda: nn.Sequential(L(9, 33), BN(33), R(), L(33, 17), BN(17), R(), L(17, 5),
                                  BN(5)),
            r"(?i)(last|output|final|hidden)"),
        "on some hidden layers only": (
            lambda: nn.Sequential(L(9, 33), BN(33), R(), L(33, 17), R(), L(17, 5)),
            r"(?i)(every|all|each|some|other|none)"),
        "mixed with LayerNorm": (
            lambda: nn.Sequential(L(9, 33), BN(33), R(), L(33, 17), LN(17), R(), L(17, 5)),
            r"(?i)(kind|mixed|layer ?norm)"),
        "track_running_stats=False": (
            lambda: nn.Sequential(L(9, 33), BN(33, track_running_stats=False), R(), L(33, 5)),
            r"(?i)running"),
        "momentum=None": (
            lambda: nn.Sequential(L(9, 33), BN(33, momentum=None), R(), L(33, 5)),
            r"(?i)(momentum|cumulative)"),
        "no affine": (
            lambda: nn.Sequential(L(9, 33), BN(33, affine=False), R(), L(33, 5)),
            r"(?i)(affine|scale)"),
        "different momenta": (
            lambda: nn.Sequential(L(9, 33), BN(33, momentum=0.1), R(), L(33, 17),
                                  BN(17, momentum=0.2), R(), L(17, 5)),
            r"(?i)momen"),
        "different eps": (
            lambda: nn.Sequential(L(9, 33), BN(33, eps=1e-5), R(), L(33, 17), BN(17, eps=1e-3),
                                  R(), L(17, 5)),
            r"(?i)eps"),
        "the wrong width": (
            lambda: nn.Sequential(L(9, 33), BN(17), R(), L(33, 5)),
            r"(?i)(width|shape|33)"),
    }


@pytest.mark.parametrize("case", ["after the activation", "after the last Linear",
                                  "on some hidden layers only", "mixed with LayerNorm",
                                  "track_running_stats=False", "momentum=None", "no affine",
                                  "different momenta", "different eps", "the wrong width"])
def test_from_torch_refuses_batch_norms_gpunet_cannot_hold(torch, case):
    """Each net gpunet's MLP cannot be is refused with a ConfigError naming BatchNorm and the
    reason."""
    make, reason = _refused_nets(torch)[case]
    with pytest.raises(gn.ConfigError, match=r"(?i)batch ?norm") as e:
        gn.MLP.from_torch(make(), backend="numpy")
    assert e.match(reason), str(e.value)


# -- the scikit-learn estimators -------------------------------------------------------------


def _blobs(n, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (k, d))
    y = rng.integers(0, k, n)
    x = centres[y] + rng.normal(0, 1.0, (n, d))
    x = x * rng.uniform(0.3, 4.0, d) + rng.normal(0, 3.0, d)  # features of other scales
    return x, y


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_classifier_with_batch_norm_predicts_in_eval_mode(dtype_name):
    """MLPClassifier(norm="batch") fits (3 epochs), its running statistics moved, and its
    predict_proba equals softmax of the eval-mode forward pass written here in float64 NumPy
    from model_'s state dict, on X standardised with X's own mean and population std (the
    training rows are all of X)."""
    X, y = _blobs(150)
    clf = gn.MLPClassifier(hidden=(13, 9), activation="tanh", norm="batch", epochs=3,
                           backend="numpy", dtype=dtype_name, random_state=0)
    clf.fit(X, y)
    model = clf.model_
    assert model.norm == "batch" and len(clf.history_) == 3
    state = model.state_dict()
    assert np.abs(state["running_mean1"]).max() > 1e-3
    assert np.abs(state["running_var2"] - 1).max() > 1e-3
    Xs = (X - X.mean(axis=0)) / X.std(axis=0)
    logits = numpy_eval_forward(state, model.sizes, "tanh", Xs)
    logits -= logits.max(axis=1, keepdims=True)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rtol = 1e-10 if dtype_name == "float64" else 1e-5
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba, expected, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(clf.classes_, np.unique(y))
    # predicting twice gives the same: nothing moved the statistics
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
    np.testing.assert_array_equal(clf.predict(X[:1]), clf.classes_[proba[:1].argmax(axis=1)])


def test_regressor_with_batch_norm_predicts_in_eval_mode():
    """MLPRegressor(norm="batch") fits; its predictions equal the float64 NumPy eval-mode
    forward pass (standardised X) mapped back to the targets' units with y's own mean and
    population std."""
    rng = np.random.default_rng(3)
    X = rng.normal(0, 2.0, (131, 5)) + rng.normal(0, 3, 5)
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1] * X[:, 2] + rng.normal(0, 0.1, 131) + 7.0
    reg = gn.MLPRegressor(hidden=(12,), activation="relu", norm="batch", epochs=3,
                          batch_size=20, backend="numpy", dtype="float64", random_state=1)
    reg.fit(X, y)
    state = reg.model_.state_dict()
    Xs = (X - X.mean(axis=0)) / X.std(axis=0)
    out = numpy_eval_forward(state, reg.model_.sizes, "relu", Xs)[:, 0]
    expected = out * y.std() + y.mean()
    np.testing.assert_allclose(reg.predict(X), expected, rtol=1e-10, atol=1e-10 * y.std())


def test_estimator_refuses_a_last_batch_of_one_row():
    """33 rows in batches of 32 leave one row: the estimator's fit refuses it (ConfigError)."""
    X, y = _blobs(33, seed=4)
    clf = gn.MLPClassifier(hidden=(8,), norm="batch", epochs=1, batch_size=32,
                           backend="numpy")
    with pytest.raises(gn.ConfigError, match=r"(?i)batch norm"):
        clf.fit(X, y)
