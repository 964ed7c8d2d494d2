"""Layer normalisation in hidden layers (``MLP(norm="layer")``): Linear -> LayerNorm -> f.

Every check here goes against a reference that does not come from the code under test:

* the whole model (forward, every W, b, gamma, beta gradient and dJ/dx) against a PyTorch net of
  ``nn.Linear``, ``nn.LayerNorm`` and activation modules built in this file from the model's
  state dict, run in float64 under torch autograd;
* the backend ops ``layer_norm_forward`` / ``layer_norm_backward`` against the float64 NumPy
  formula written here (the biased row variance, and the closed-form backward
  dz = rstd (g - mean(g) - xhat mean(g xhat)), g = dn gamma) and against torch autograd of
  ``F.layer_norm``, including poisoned (NaN-filled) out buffers, in-place aliasing, rows with a
  large common offset in float32 (the variance must be centred) and constant rows;
* central finite differences (``gpunet.gradcheck``);
* PyTorch interop, checkpoints and configs, and the refusals of nets gpunet cannot hold.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import RTOL, U64, host, splitmix64

import gpunet as gn
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.gradcheck import check_combination

SIZES = [9, 33, 17, 5]
SLOPE = 0.07
HIDDEN = ["relu", "tanh", "sigmoid", "leaky_relu", "identity"]


# -- references written here ------------------------------------------------------------------


def ln_reference(z, gamma, beta, eps):
    """(n, xhat, rstd) in float64 by the definition: the mean and the biased (1/F) variance of
    each row, computed as the mean of squared deviations from the row mean."""
    z = np.asarray(z, dtype=np.float64)
    mu = z.mean(axis=1, keepdims=True)
    var = ((z - mu) ** 2).mean(axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (z - mu) * rstd
    return np.asarray(gamma, np.float64) * xhat + np.asarray(beta, np.float64), xhat, rstd


def ln_backward_reference(dn, xhat, rstd, gamma):
    """(dz, dgamma, dbeta) in float64 by the closed form."""
    dn, xhat, rstd = (np.asarray(a, dtype=np.float64) for a in (dn, xhat, rstd))
    g = dn * np.asarray(gamma, np.float64)
    dz = rstd * (g - g.mean(axis=1, keepdims=True)
                 - xhat * (g * xhat).mean(axis=1, keepdims=True))
    return dz, (dn * xhat).sum(axis=0), dn.sum(axis=0)


def torch_ln(torch, z, gamma, beta, dn, eps):
    """torch autograd of F.layer_norm in float64: (n, dz, dgamma, dbeta)."""
    def t(a):
        return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)

    zt, gt, bt = t(z), t(gamma), t(beta)
    n = torch.nn.functional.layer_norm(zt, (zt.shape[1],), gt, bt, eps)
    n.backward(torch.tensor(np.asarray(dn, dtype=np.float64)))
    return host(n), host(zt.grad), host(gt.grad), host(bt.grad)


def torch_activation(torch, name, slope):
    nn = torch.nn
    return {"relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(),
            "leaky_relu": nn.LeakyReLU(negative_slope=slope), "identity": nn.Identity(),
            "softmax": nn.Softmax(dim=-1)}[name]


def torch_net(torch, model, tdtype):
    """nn.Sequential(Linear, LayerNorm, f, ..., Linear, g) built here from model.state_dict()
    (independently of model.to_torch)."""
    state = model.state_dict()
    last = len(model.sizes) - 1
    layers = []
    with torch.no_grad():
        for i in range(1, last + 1):
            lin = torch.nn.Linear(model.sizes[i - 1], model.sizes[i], dtype=tdtype)
            lin.weight.copy_(torch.tensor(state[f"W{i}"], dtype=tdtype))
            lin.bias.copy_(torch.tensor(state[f"b{i}"], dtype=tdtype))
            layers.append(lin)
            if i < last:
                ln = torch.nn.LayerNorm(model.sizes[i], eps=model.norm_eps, dtype=tdtype)
                ln.weight.copy_(torch.tensor(state[f"gamma{i}"], dtype=tdtype))
                ln.bias.copy_(torch.tensor(state[f"beta{i}"], dtype=tdtype))
                layers.append(ln)
            layers.append(torch_activation(torch, model.activation if i < last else model.output,
                                           model.slope))
    return torch.nn.Sequential(*layers)


def torch_grads(torch, net):
    out = {}
    lins = [m for m in net if isinstance(m, torch.nn.Linear)]
    lns = [m for m in net if isinstance(m, torch.nn.LayerNorm)]
    for i, m in enumerate(lins, start=1):
        out[f"W{i}"], out[f"b{i}"] = host(m.weight.grad), host(m.bias.grad)
    for i, m in enumerate(lns, start=1):
        out[f"gamma{i}"], out[f"beta{i}"] = host(m.weight.grad), host(m.bias.grad)
    return out


def assert_close(actual, expected, dtype, what="", rtol=None):
    """rtol by dtype, plus an atol scaled to the array (for entries near zero)."""
    rtol = RTOL[dtype] if rtol is None else rtol
    actual, expected = np.asarray(host(actual), dtype=np.float64), np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = float(np.abs(expected).max()) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def randomise_norm(model, rng):
    """gamma away from 1 (both signs of deviation) and beta away from 0, so that a misplaced
    or swapped gamma/beta shows."""
    for i in range(1, len(model.sizes) - 1):
        w = model.sizes[i]
        model.params[f"gamma{i}"] = model.backend.asarray(rng.uniform(0.3, 1.8, w),
                                                          dtype=model.dtype)
        model.params[f"beta{i}"] = model.backend.asarray(rng.normal(0, 0.6, w), dtype=model.dtype)


def make_model(backend, dtype, activation="relu", sizes=SIZES, output="identity", seed=0, **kw):
    model = gn.MLP(sizes, activation=activation, output=output, norm="layer",
                   backend=backend, seed=seed, dtype=np.dtype(dtype).name, slope=SLOPE, **kw)
    randomise_norm(model, np.random.default_rng(seed + 100))
    return model


def param_names(sizes, norm=True):
    names, last = [], len(sizes) - 1
    for i in range(1, last + 1):
        names += [f"W{i}", f"b{i}"]
        if norm and i < last:
            names += [f"gamma{i}", f"beta{i}"]
    return names


def reference_mask(seed, step, layer, rows, width, p):
    """gpunet.dropout's documented mask (as tests/test_dropout.py writes it): keep iff the top
    24 bits of splitmix64(key + r * width + j) are below (1 - p) 2^24, kept ones 1 / (1 - p)."""
    key = splitmix64(splitmix64(splitmix64(seed) ^ step) ^ layer)
    bound = round((1 - p) * 2 ** 24)
    m = np.zeros((rows, width))
    for r in range(rows):
        for j in range(width):
            if splitmix64((key + r * width + j) & U64) >> 40 < bound:
                m[r, j] = 1 / (1 - p)
    return m


# -- the model's parameters and configuration -------------------------------------------------


def test_parameters_are_named_ordered_shaped_and_initialised(backend, dtype):
    """gamma{i}, beta{i} follow W{i}, b{i} for every hidden layer (none for the last), shaped
    (width_i,), ones and zeros, in the model's dtype on its backend; the weights are drawn as
    without the norm."""
    model = gn.MLP(SIZES, norm="layer", backend=backend, seed=3, dtype=np.dtype(dtype).name)
    assert list(model.params) == param_names(SIZES)
    for i, w in enumerate(SIZES[1:-1], start=1):
        for name, value in ((f"gamma{i}", 1.0), (f"beta{i}", 0.0)):
            p = model.params[name]
            assert backend.owns(p) and p.dtype == dtype and p.shape == (w,), name
            np.testing.assert_array_equal(host(p), np.full(w, value))
    plain = gn.MLP(SIZES, backend=backend, seed=3, dtype=np.dtype(dtype).name)
    assert list(plain.params) == param_names(SIZES, norm=False)
    assert plain.config()["norm"] is None
    assert model.n_params == plain.n_params + 2 * sum(SIZES[1:-1])


def test_a_net_without_hidden_layers_has_nothing_to_normalise():
    """norm applies to hidden layers only: [5, 3] has W1, b1 and nothing else."""
    model = gn.MLP([5, 3], norm="layer", backend="numpy")
    assert list(model.params) == ["W1", "b1"]


@pytest.mark.parametrize("norm", ["foo", "Layer", "instance", "Batch"])
def test_unknown_norms_are_refused(norm):
    with pytest.raises(gn.ConfigError, match="unknown norm"):
        gn.MLP([3, 4, 2], norm=norm, backend="numpy")


@pytest.mark.parametrize("norm", ["", 1, True, ["layer"]])
def test_norms_that_are_not_names_are_refused(norm):
    with pytest.raises(gn.ConfigError):
        gn.MLP([3, 4, 2], norm=norm, backend="numpy")


@pytest.mark.parametrize("eps", [0.0, -1e-5, -1.0])
def test_non_positive_eps_is_refused(eps):
    with pytest.raises(gn.ConfigError):
        gn.MLP([3, 4, 2], norm="layer", norm_eps=eps, backend="numpy")


def test_config_round_trip_rebuilds_the_norm():
    """config() names norm and norm_eps; from_config builds the same parameters, and with the
    weights loaded the same predictions."""
    model = make_model("numpy", np.float64, "tanh", norm_eps=3e-4)
    cfg = json.loads(json.dumps(model.config()))  # JSON-able, as a checkpoint stores it
    assert cfg["norm"] == "layer" and cfg["norm_eps"] == pytest.approx(3e-4)
    clone = gn.MLP.from_config(cfg, backend="numpy")
    assert clone.norm == "layer" and clone.norm_eps == pytest.approx(3e-4)
    assert list(clone.params) == list(model.params)
    clone.load_state_dict(model.state_dict())
    x = np.random.default_rng(5).normal(size=(7, SIZES[0]))
    np.testing.assert_array_equal(host(clone.predict(x)), host(model.predict(x)))


def test_a_config_without_norm_builds_a_plain_mlp():
    """A config from before the norm existed (no "norm", no "norm_eps") builds norm=None."""
    cfg = gn.MLP([4, 6, 2], backend="numpy").config()
    cfg.pop("norm", None)
    cfg.pop("norm_eps", None)
    model = gn.MLP.from_config(cfg, backend="numpy")
    assert model.norm is None
    assert list(model.params) == ["W1", "b1", "W2", "b2"]


# -- the model against torch autograd ---------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 13])
@pytest.mark.parametrize("activation", HIDDEN)
def test_forward_every_gradient_and_dx_match_torch(backend, dtype, torch, activation, batch):
    """y_hat, dJ/dW, dJ/db, dJ/dgamma, dJ/dbeta of every layer and dJ/dx for J = sum(y_hat R)
    against torch float64 autograd of Linear -> LayerNorm -> f nets (random gamma and beta)."""
    model = make_model(backend, dtype, activation, seed=2)
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((batch, SIZES[0])) * 1.5 + 0.3).astype(dtype)
    R = rng.standard_normal((batch, SIZES[-1])).astype(dtype)

    y_hat = model.forward(backend.asarray(x))
    assert backend.owns(y_hat) and y_hat.dtype == dtype and y_hat.shape == (batch, SIZES[-1])
    dJdx = model.backward(backend.asarray(R))  # dJ/dy_hat = R

    net = torch_net(torch, model, torch.float64)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    out = net(xt)
    (out * torch.tensor(R.astype(np.float64))).sum().backward()

    assert_close(y_hat, host(out), dtype, "forward")
    ref = torch_grads(torch, net)
    assert set(model.grads) == set(ref) == set(model.params)
    for k in param_names(SIZES):
        g = model.grads[k]
        assert backend.owns(g) and g.dtype == dtype and g.shape == ref[k].shape, k
        assert_close(g, ref[k], dtype, f"dJ/d{k}")
    assert dJdx.shape == x.shape and dJdx.dtype == dtype
    assert_close(dJdx, host(xt.grad), dtype, "dJ/dx")
    # predict: the same function, without a cache
    assert_close(model.predict(backend.asarray(x)), host(out), dtype, "predict")


def test_softmax_output_deeper_net_and_custom_eps_match_torch(backend, dtype, torch):
    """Four hidden layers of widths that are not powers of two, eps = 1e-3, a softmax output:
    forward and every gradient against torch."""
    sizes = [6, 19, 11, 23, 7, 4]
    model = make_model(backend, dtype, "tanh", sizes=sizes, output="softmax", seed=4,
                       norm_eps=1e-3)
    rng = np.random.default_rng(8)
    x = rng.normal(0.5, 2.0, (11, sizes[0])).astype(dtype)
    R = rng.standard_normal((11, sizes[-1])).astype(dtype)
    y_hat = model.forward(backend.asarray(x))
    dJdx = model.backward(backend.asarray(R))
    net = torch_net(torch, model, torch.float64)
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in net) == 4
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    out = net(xt)
    (out * torch.tensor(R.astype(np.float64))).sum().backward()
    assert_close(y_hat, host(out), dtype, "forward")
    for k, r in torch_grads(torch, net).items():
        assert_close(model.grads[k], r, dtype, f"dJ/d{k}")
    assert_close(dJdx, host(xt.grad), dtype, "dJ/dx")


def test_backward_without_dx_fills_the_norm_gradients(torch):
    """need_dx=False returns None and still fills gamma/beta gradients (float64, vs torch)."""
    model = make_model("numpy", np.float64, "sigmoid", seed=6)
    rng = np.random.default_rng(9)
    x, R = rng.normal(size=(5, SIZES[0])), rng.normal(size=(5, SIZES[-1]))
    model.forward(x)
    assert model.backward(R, need_dx=False) is None
    net = torch_net(torch, model, torch.float64)
    (net(torch.tensor(x)) * torch.tensor(R)).sum().backward()
    for k, r in torch_grads(torch, net).items():
        assert_close(model.grads[k], r, np.float64, f"dJ/d{k}")


def test_the_norm_is_per_row_not_per_batch(backend, dtype):
    """Layer norm reads each row alone: predicting rows one at a time, or in uneven batches,
    gives the rows of the whole batch's prediction (a batch norm would not)."""
    model = make_model(backend, dtype, "leaky_relu", seed=1)
    x = np.random.default_rng(3).normal(1.0, 2.0, (10, SIZES[0])).astype(dtype)
    whole = host(model.predict(backend.asarray(x)))
    for r in (0, 4, 9):
        assert_close(model.predict(backend.asarray(x[r:r + 1])), whole[r:r + 1], dtype, f"row {r}")
    assert_close(model.predict(backend.asarray(x), batch_size=3), whole, dtype, "batches of 3")


def test_dropout_comes_after_the_activation_with_the_documented_masks(torch):
    """norm + dropout: h_i = f(LN(z_i)) * m_i with m_i the mask of hidden layer i - 1 (0-based)
    at the training step, as gpunet.dropout documents; forward and gradients vs torch."""
    model = gn.MLP([6, 9, 8, 4], activation="tanh", norm="layer", dropout=0.4, dropout_seed=99,
                   backend="numpy", seed=3, dtype="float64")
    randomise_norm(model, np.random.default_rng(1))
    model.dropout_step = 5
    rng = np.random.default_rng(2)
    x, R = rng.normal(size=(10, 6)), rng.normal(size=(10, 4))
    y_hat = model.forward(x)
    model.backward(R)
    masks = [torch.tensor(reference_mask(99, 5, layer, 10, width, 0.4))
             for layer, width in ((0, 9), (1, 8))]
    p = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    h = torch.tensor(x)
    for i in (1, 2):
        z = h @ p[f"W{i}"].T + p[f"b{i}"]
        n = torch.nn.functional.layer_norm(z, (z.shape[1],), p[f"gamma{i}"], p[f"beta{i}"],
                                           model.norm_eps)
        h = torch.tanh(n) * masks[i - 1]
    out = h @ p["W3"].T + p["b3"]
    (out * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(host(y_hat), host(out), rtol=1e-10, atol=1e-12)
    for k, t in p.items():
        np.testing.assert_allclose(host(model.grads[k]), host(t.grad), rtol=1e-10, atol=1e-12,
                                   err_msg=k)


# -- the backend ops ----------------------------------------------------------------------------

# (rows, features): small, a single row, and one over the numpy backend's kernel threshold
OP_SHAPES = [(13, 33), (1, 7), (260, 257)]


def _op_inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    B, F = shape
    z = (rng.normal(0, 1.0, (B, F)) * rng.uniform(0.2, 5.0, (B, 1))
         + rng.normal(0, 3.0, (B, 1))).astype(dtype)  # rows of different scales and means
    gamma = rng.uniform(-1.5, 2.0, F).astype(dtype)
    beta = rng.normal(0, 1.0, F).astype(dtype)
    dn = rng.normal(size=(B, F)).astype(dtype)
    return z, gamma, beta, dn


def _poisoned(backend, shape, dtype):
    return backend.asarray(np.full(shape, np.nan, dtype=dtype))


@pytest.mark.parametrize("shape", OP_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_layer_norm_forward_matches_the_formula(backend, dtype, torch, shape):
    """(n, xhat, rstd) against the float64 definition (rstd shaped (B, 1)) and n against torch's
    F.layer_norm; returned fresh, and written into NaN-filled out buffers."""
    z, gamma, beta, dn = _op_inputs(shape, dtype)
    eps = 1e-5
    n_ref, xhat_ref, rstd_ref = ln_reference(z, gamma, beta, eps)
    n_torch = torch_ln(torch, z, gamma, beta, dn, eps)[0]
    zb = backend.asarray(z)
    n, xhat, rstd = backend.layer_norm_forward(zb, backend.asarray(gamma),
                                               backend.asarray(beta), eps)
    for name, got, ref in (("n", n, n_ref), ("xhat", xhat, xhat_ref), ("rstd", rstd, rstd_ref)):
        assert backend.owns(got) and got.dtype == dtype, name
        assert_close(got, ref, dtype, name)
    assert rstd.shape == (shape[0], 1)
    assert_close(n, n_torch, dtype, "n vs torch")
    np.testing.assert_array_equal(host(zb), z)  # the input is left alone without out=

    out = (_poisoned(backend, shape, dtype), _poisoned(backend, shape, dtype),
           _poisoned(backend, (shape[0], 1), dtype))
    got = backend.layer_norm_forward(zb, backend.asarray(gamma), backend.asarray(beta), eps,
                                     out=out)
    for name, buf, ret, ref in zip(("n", "xhat", "rstd"), out, got, (n_ref, xhat_ref, rstd_ref)):
        assert_close(buf, ref, dtype, f"{name} written into out")
        assert_close(ret, ref, dtype, f"{name} returned with out")


@pytest.mark.parametrize("shape", OP_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_layer_norm_forward_in_place(backend, dtype, shape):
    """out[0] is z itself: n overwrites z, and xhat, rstd still come out right."""
    z, gamma, beta, _ = _op_inputs(shape, dtype, seed=1)
    n_ref, xhat_ref, rstd_ref = ln_reference(z, gamma, beta, 1e-5)
    zb = backend.asarray(z.copy())
    out = (zb, _poisoned(backend, shape, dtype), _poisoned(backend, (shape[0], 1), dtype))
    backend.layer_norm_forward(zb, backend.asarray(gamma), backend.asarray(beta), 1e-5, out=out)
    assert_close(zb, n_ref, dtype, "n in z's buffer")
    assert_close(out[1], xhat_ref, dtype, "xhat")
    assert_close(out[2], rstd_ref, dtype, "rstd")


@pytest.mark.parametrize("shape", OP_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_layer_norm_backward_matches_closed_form_and_torch(backend, dtype, torch, shape):
    """(dz, dgamma, dbeta) from the float64 closed form and from torch autograd of
    F.layer_norm (given xhat and rstd of the same z); returned, written into NaN-filled out
    buffers, and with out[0] the incoming dn itself."""
    z, gamma, beta, dn = _op_inputs(shape, dtype, seed=2)
    eps = 1e-5
    _, xhat_ref, rstd_ref = ln_reference(z, gamma, beta, eps)
    ref = ln_backward_reference(dn, xhat_ref, rstd_ref, gamma)
    _, *by_torch = torch_ln(torch, z, gamma, beta, dn, eps)
    for what, a, b in zip(("dz", "dgamma", "dbeta"), ref, by_torch):  # the two references agree
        assert_close(a, b, np.float64, f"closed form vs torch: {what}")

    def args(d):
        return (backend.asarray(d), backend.asarray(xhat_ref.astype(dtype)),
                backend.asarray(rstd_ref.astype(dtype)), backend.asarray(gamma))

    names = ("dz", "dgamma", "dbeta")
    got = backend.layer_norm_backward(*args(dn))
    for name, g, r, t in zip(names, got, ref, by_torch):
        assert backend.owns(g) and g.dtype == dtype and g.shape == r.shape, name
        assert_close(g, r, dtype, name)
        assert_close(g, t, dtype, f"{name} vs torch")

    out = (_poisoned(backend, shape, dtype), _poisoned(backend, (shape[1],), dtype),
           _poisoned(backend, (shape[1],), dtype))
    got = backend.layer_norm_backward(*args(dn), out=out)
    for name, buf, ret, r in zip(names, out, got, ref):
        assert_close(buf, r, dtype, f"{name} written into out")
        assert_close(ret, r, dtype, f"{name} returned with out")

    dnb, xh, rs, gm = args(dn)
    out = (dnb, _poisoned(backend, (shape[1],), dtype), _poisoned(backend, (shape[1],), dtype))
    backend.layer_norm_backward(dnb, xh, rs, gm, out=out)
    for name, buf, r in zip(names, out, ref):
        assert_close(buf, r, dtype, f"{name} with dz written over dn")


def test_layer_norm_round_trip_through_the_ops_matches_torch(backend, dtype, torch):
    """Backward fed with the forward's own xhat and rstd gives torch's gradients."""
    z, gamma, beta, dn = _op_inputs((17, 45), dtype, seed=3)
    _, *ref = torch_ln(torch, z, gamma, beta, dn, 1e-4)
    gb = backend.asarray(gamma)
    _, xhat, rstd = backend.layer_norm_forward(backend.asarray(z), gb, backend.asarray(beta),
                                               1e-4)
    got = backend.layer_norm_backward(backend.asarray(dn), xhat, rstd, gb)
    for name, g, r in zip(("dz", "dgamma", "dbeta"), got, ref):
        assert_close(g, r, dtype, name)


def test_large_offsets_use_the_centred_variance_in_float32(backend, torch):
    """Rows of 1e4 + N(0, 1) in float32: var = E[z^2] - E[z]^2 would lose every digit (the
    squares are ~1e8, float32's spacing there is 8); the centred variance keeps them, and
    the sums of z - z0 (each row's first value) keep xhat to float32's own resolution (1e-6),
    not that of the row mean (1e-3, the mean of z itself: torch's float32 figures)."""
    rng = np.random.default_rng(4)
    B, F = 7, 45
    z = (1e4 + rng.normal(0, 1.0, (B, F)) + rng.normal(0, 50, (B, 1))).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, F).astype(np.float32)
    beta = rng.normal(0, 1, F).astype(np.float32)
    n_ref, xhat_ref, rstd_ref = ln_reference(z, gamma, beta, 1e-5)  # exact on z's float32 values
    n, xhat, rstd = backend.layer_norm_forward(backend.asarray(z), backend.asarray(gamma),
                                               backend.asarray(beta), 1e-5)
    assert np.isfinite(host(n)).all() and np.isfinite(host(rstd)).all()
    np.testing.assert_allclose(host(rstd), rstd_ref, rtol=2e-5)
    np.testing.assert_allclose(host(xhat), xhat_ref, atol=2e-5)
    np.testing.assert_allclose(host(n), n_ref, atol=4e-5)
    got = backend.batch_norm_forward(backend.asarray(np.ascontiguousarray(z.T)),
                                     *(backend.asarray(np.ones(B, np.float32)) for _ in "gb"),
                                     1e-5)[1]  # (β 1: n = xhat + 1)
    np.testing.assert_allclose(host(got), xhat_ref.T, atol=2e-5)  # a batch norm's columns
    # the model's own forward too: a first layer whose outputs share a large offset
    model = gn.MLP([F, B + 4, 3], activation="tanh", norm="layer", backend=backend,
                   dtype="float32")
    model.params["W1"] = backend.asarray(rng.normal(0, 1, (B + 4, F)).astype(np.float32))
    model.params["b1"] = backend.asarray(np.full(B + 4, 2e4, dtype=np.float32))
    x = rng.normal(size=(5, F)).astype(np.float32)
    net = torch_net(torch, model, torch.float64)
    assert_close(model.predict(backend.asarray(x)), host(net(torch.tensor(x.astype(np.float64)))),
                 np.float32, "model forward", rtol=1e-2)


def test_constant_rows_give_beta(backend, dtype):
    """A row of one value has variance 0: xhat = 0, rstd = 1/sqrt(eps), n = beta, all finite;
    its backward is finite too (dgamma gets nothing from it)."""
    rng = np.random.default_rng(5)
    F, eps = 29, 1e-5
    z = rng.normal(size=(4, F)).astype(dtype)
    z[1] = 2.5
    z[3] = -0.1
    gamma = rng.uniform(0.5, 1.5, F).astype(dtype)
    beta = rng.normal(size=F).astype(dtype)
    n, xhat, rstd = (host(a) for a in backend.layer_norm_forward(
        backend.asarray(z), backend.asarray(gamma), backend.asarray(beta), eps))
    assert np.isfinite(n).all() and np.isfinite(xhat).all() and np.isfinite(rstd).all()
    for r in (1, 3):
        np.testing.assert_allclose(rstd[r, 0], 1 / np.sqrt(eps), rtol=RTOL[dtype])
        np.testing.assert_allclose(xhat[r], 0.0, atol=1e-3 if dtype == np.float32 else 1e-9)
        np.testing.assert_allclose(n[r], beta, atol=2e-3 if dtype == np.float32 else 1e-9)
    n_ref = ln_reference(z, gamma, beta, eps)[0]
    assert_close(n[[0, 2]], n_ref[[0, 2]], dtype, "the other rows")
    dn = rng.normal(size=(4, F)).astype(dtype)
    dz, dgamma, dbeta = (host(a) for a in backend.layer_norm_backward(
        backend.asarray(dn), backend.asarray(xhat), backend.asarray(rstd),
        backend.asarray(gamma)))
    assert np.isfinite(dz).all() and np.isfinite(dgamma).all() and np.isfinite(dbeta).all()
    ref = ln_backward_reference(dn, xhat, rstd, gamma)
    for name, g, r in zip(("dz", "dgamma", "dbeta"), (dz, dgamma, dbeta), ref):
        assert_close(g, r, dtype, name, rtol=max(RTOL[dtype], 1e-9))


# -- finite differences -------------------------------------------------------------------------

NORM_COMBOS = [
    ("tanh", "identity", "cross_entropy", "labels"),
    ("relu", "softmax", "mse", "real"),
    ("sigmoid", "sigmoid", "bce", "unit"),
    ("leaky_relu", "identity", "bce_logits", "unit"),
    ("identity", "tanh", "mse_sum", "real"),
]


@pytest.mark.parametrize("combo", NORM_COMBOS, ids=lambda c: "-".join(c))
def test_finite_differences_with_layer_norm(combo, backend):
    """check_combination with norm="layer" on two hidden layers: every element of every
    gradient (gamma and beta included, none for the output layer) within tolerance."""
    result = check_combination(combo, backend, sizes=(4, 7, 6, 3), batch=8, seed=13,
                               norm="layer")
    assert set(result.errors) == set(param_names([4, 7, 6, 3])) | {"x"}
    assert result.ok, result.ratios


def test_finite_differences_with_layer_norm_and_dropout(backend):
    result = check_combination(("tanh", "identity", "cross_entropy", "labels"), backend,
                               sizes=(4, 7, 6, 3), batch=8, seed=17, dropout=0.5, norm="layer")
    assert {"gamma1", "beta1", "gamma2", "beta2"} <= set(result.errors)
    assert result.ok, result.ratios


def test_finite_differences_with_random_gamma_and_beta(backend):
    """gradcheck of a norm model whose gamma and beta are not the initial ones and eps 1e-3."""
    model = make_model(backend.name, np.float64, "sigmoid", sizes=[5, 8, 7, 3], seed=9,
                       norm_eps=1e-3)
    rng = np.random.default_rng(10)
    result = gn.gradcheck(model, gn.MSELoss(), rng.normal(size=(6, 5)), rng.normal(size=(6, 3)))
    assert result.ok, result.ratios


# -- PyTorch interop ----------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_to_torch_holds_the_layer_norms(dtype, torch, activation):
    """to_torch: Linear, LayerNorm(width, eps), f[, Dropout] per hidden layer, gamma/beta as the
    LayerNorm's weight/bias, and the same outputs as predict."""
    model = make_model("numpy", dtype, activation, seed=5, norm_eps=2e-4, dropout=0.3)
    net = model.to_torch().eval()
    act = [] if activation == "identity" else ["ReLU"]
    hidden = ["Linear", "LayerNorm"] + act + ["Dropout"]
    assert [type(m).__name__ for m in net] == hidden * 2 + ["Linear"]
    lns = [m for m in net if isinstance(m, torch.nn.LayerNorm)]
    for i, (m, w) in enumerate(zip(lns, SIZES[1:-1]), start=1):
        assert tuple(m.normalized_shape) == (w,) and m.eps == pytest.approx(2e-4)
        np.testing.assert_array_equal(host(m.weight), host(model.params[f"gamma{i}"]))
        np.testing.assert_array_equal(host(m.bias), host(model.params[f"beta{i}"]))
    x = np.random.default_rng(6).normal(size=(13, SIZES[0])).astype(dtype)
    with torch.no_grad():
        expected = host(net(torch.tensor(x)))
    assert_close(model.predict(x), expected, dtype, "to_torch vs predict")


def _torch_ln_net(torch, widths=SIZES, eps=1e-3, dtype=None, seed=0, dropout=None):
    """A torch Linear -> LayerNorm(eps) -> Tanh [-> Dropout] net with random LN weights."""
    torch.manual_seed(seed)
    dtype = dtype or torch.float64
    layers, last = [], len(widths) - 1
    for i in range(1, last + 1):
        layers.append(torch.nn.Linear(widths[i - 1], widths[i], dtype=dtype))
        if i < last:
            ln = torch.nn.LayerNorm(widths[i], eps=eps, dtype=dtype)
            with torch.no_grad():
                ln.weight.uniform_(0.4, 1.7)
                ln.bias.normal_(0, 0.5)
            layers += [ln, torch.nn.Tanh()]
            if dropout:
                layers.append(torch.nn.Dropout(dropout))
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("tdtype", ["float32", "float64"])
def test_from_torch_reproduces_a_torch_net_with_layer_norm(torch, tdtype):
    """from_torch of Linear -> LayerNorm -> Tanh [-> Dropout] nets: norm="layer", torch's eps,
    gamma/beta copied, and torch's eval-mode outputs."""
    tdt = getattr(torch, tdtype)
    for dropout in (None, 0.2):
        net = _torch_ln_net(torch, eps=1e-3, dtype=tdt, seed=1, dropout=dropout).eval()
        model = gn.MLP.from_torch(net, backend="numpy")
        assert model.norm == "layer" and model.norm_eps == pytest.approx(1e-3)
        assert model.dtype == np.dtype(tdtype) and model.activation == "tanh"
        assert model.dropout == pytest.approx(dropout or 0.0)
        assert list(model.params) == param_names(SIZES)
        lns = [m for m in net if isinstance(m, torch.nn.LayerNorm)]
        for i, m in enumerate(lns, start=1):
            np.testing.assert_array_equal(host(model.params[f"gamma{i}"]), host(m.weight))
            np.testing.assert_array_equal(host(model.params[f"beta{i}"]), host(m.bias))
        x = np.random.default_rng(2).normal(size=(9, SIZES[0])).astype(tdtype)
        with torch.no_grad():
            expected = host(net(torch.tensor(x)))
        assert_close(model.predict(x), expected, np.dtype(tdtype).type, f"dropout {dropout}")


def test_torch_round_trip_keeps_everything(torch):
    """MLP -> to_torch -> from_torch: the same config and bit-identical parameters."""
    model = make_model("numpy", np.float64, "leaky_relu", seed=8, norm_eps=5e-5)
    back = gn.MLP.from_torch(model.to_torch(), backend="numpy")
    for key in ("sizes", "activation", "output", "norm", "dtype"):
        assert back.config()[key] == model.config()[key], key
    assert back.norm_eps == pytest.approx(model.norm_eps) and back.slope == pytest.approx(SLOPE)
    assert list(back.params) == list(model.params)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)


def _refused_nets(torch):
    nn = torch.nn
    L, LN, R = nn.Linear, nn.LayerNorm, nn.ReLU
    return {
        "after the activation": (
            lambda: nn.Sequential(L(9, 33), R(), LN(33), L(33, 17), R(), LN(17), L(17, 5)),
            r"(?i)(activation|relu|before)"),
        "after the last Linear": (
            lambda: nn.Sequential(L(9, 33), LN(33), R(), L(33, 17), LN(17), R(), L(17, 5),
                                  LN(5)),
            r"(?i)(last|output|final|hidden)"),
        "on some hidden layers only": (
            lambda: nn.Sequential(L(9, 33), LN(33), R(), L(33, 17), R(), L(17, 5)),
            r"(?i)(every|all|each|some|other|none)"),
        "no affine": (
            lambda: nn.Sequential(L(9, 33), LN(33, elementwise_affine=False), R(), L(33, 5)),
            r"(?i)(affine|elementwise)"),
        "no bias": (
            lambda: nn.Sequential(L(9, 33), LN(33, bias=False), R(), L(33, 5)),
            r"(?i)(bias|affine)"),
        "different eps": (
            lambda: nn.Sequential(L(9, 33), LN(33, eps=1e-5), R(), L(33, 17), LN(17, eps=1e-3),
                                  R(), L(17, 5)),
            r"(?i)eps"),
        "the wrong width": (
            lambda: nn.Sequential(L(9, 33), LN(17), R(), L(33, 5)),
            r"(?i)(width|shape|33)"),
    }


@pytest.mark.parametrize("case", ["after the activation", "after the last Linear",
                                  "on some hidden layers only", "no affine", "no bias",
                                  "different eps", "the wrong width"])
def test_from_torch_refuses_layer_norms_gpunet_cannot_hold(torch, case):
    """Each net gpunet's MLP cannot be is refused with a ConfigError naming LayerNorm and the
    reason."""
    make, reason = _refused_nets(torch)[case]
    with pytest.raises(gn.ConfigError, match=r"(?i)layer ?norm") as e:
        gn.MLP.from_torch(make(), backend="numpy")
    assert e.match(reason), str(e.value)


# -- checkpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_checkpoint_round_trip_keeps_gamma_and_beta(tmp_path, dtype_name):
    """save/load: norm and norm_eps in the stored config, gamma/beta restored, predictions
    bit for bit."""
    model = make_model("numpy", np.dtype(dtype_name), "tanh", seed=11, norm_eps=1e-4)
    path = tmp_path / "ln.npz"
    save_checkpoint(path, model)
    ck = load_checkpoint(path)
    assert ck.header["model"]["norm"] == "layer"
    assert ck.header["model"]["norm_eps"] == pytest.approx(1e-4)
    back = ck.build_model("numpy")
    assert back.norm == "layer" and back.norm_eps == pytest.approx(1e-4)
    assert list(back.params) == list(model.params)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)
    x = np.random.default_rng(12).normal(size=(6, SIZES[0])).astype(dtype_name)
    np.testing.assert_array_equal(host(back.predict(x)), host(model.predict(x)))


def test_an_old_checkpoint_without_norm_loads_as_a_plain_mlp(tmp_path):
    """A checkpoint whose header config predates "norm"/"norm_eps" loads as norm=None."""
    model = gn.MLP([4, 7, 3], backend="numpy", seed=2, dtype="float64")
    path = tmp_path / "old.npz"
    save_checkpoint(path, model)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["header"].tobytes().decode("utf-8"))
    header["model"].pop("norm", None)
    header["model"].pop("norm_eps", None)
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    np.savez(path, **arrays)
    back = load_checkpoint(path).build_model("numpy")
    assert back.norm is None and list(back.params) == ["W1", "b1", "W2", "b2"]
    x = np.random.default_rng(0).normal(size=(5, 4))
    np.testing.assert_array_equal(host(back.predict(x)), host(model.predict(x)))
