"""Dropout (``MLP(dropout=p)``, ``gpunet.dropout``): masks that are the SplitMix64 hash written out
here with Python integers, the same bits on every backend; forward and backward against torch
autograd of h * m for those masks; nothing dropped at inference; exact resume; PyTorch interop;
the command line and the estimators."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet import dropout as dropout_mod
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.cli import main

from conftest import BACKENDS, U64, host, splitmix64

def reference_mask(seed, step, layer, rows, width, p, row_offset=0):
    """The documented mask, element by element: keep iff the top 24 bits of
    splitmix64(key + (row_offset + r) * width + j) are below (1 - p) * 2^24."""
    key = splitmix64(splitmix64(splitmix64(seed) ^ step) ^ layer)
    bound = round((1 - p) * 2 ** 24)
    m = np.zeros((rows, width))
    for r in range(rows):
        for j in range(width):
            if splitmix64((key + (row_offset + r) * width + j) & U64) >> 40 < bound:
                m[r, j] = 1 / (1 - p)
    return m


@pytest.mark.parametrize("seed, step, layer, p, offset", [
    (0, 0, 0, 0.5, 0), (12345, 7, 2, 0.1, 3), (2**63 + 5, 2**40, 1, 0.9, 1000),
])
def test_masks_are_the_documented_hash(seed, step, layer, p, offset):
    key = dropout_mod.stream_key(seed, step, layer)
    for dtype in (np.float32, np.float64):
        got = dropout_mod.mask(np, (9, 13), p, key, offset, dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, reference_mask(seed, step, layer, 9, 13, p, offset)
                                      .astype(dtype))


def test_masks_keep_the_right_share_and_differ_by_step_and_layer():
    p, shape = 0.3, (512, 512)
    masks = [dropout_mod.mask(np, shape, p, dropout_mod.stream_key(7, t, k), 0, np.float64)
             for t, k in ((0, 0), (1, 0), (0, 1))]
    n = shape[0] * shape[1]
    for m in masks:
        kept = (m > 0).mean()
        assert abs(kept - 0.7) < 5 * np.sqrt(0.21 / n)  # binomial, 5 sigma
        assert m.mean() == pytest.approx(1.0, abs=5 * np.sqrt(0.21 / n) / 0.7)
        np.testing.assert_array_equal(np.unique(m), [0.0, 1 / 0.7])
    for a, b in ((0, 1), (0, 2), (1, 2)):  # independent patterns: correlation near 0
        corr = np.corrcoef(masks[a].ravel(), masks[b].ravel())[0, 1]
        assert abs(corr) < 5 / np.sqrt(n)
    # a share of a batch (rows from row_offset on) is that part of the whole batch's mask
    key = dropout_mod.stream_key(7, 0, 0)
    np.testing.assert_array_equal(dropout_mod.mask(np, (100, 512), p, key, 200, np.float64),
                                  masks[0][200:300])


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "cupy"])
def test_every_backend_draws_the_same_masks(backend):
    cupy = gn.get_backend(backend).xp
    key = dropout_mod.stream_key(3, 11, 1)
    for dtype in (np.float32, np.float64):
        np.testing.assert_array_equal(
            host(dropout_mod.mask(cupy, (300, 257), 0.25, key, 5, dtype)),
            dropout_mod.mask(np, (300, 257), 0.25, key, 5, dtype))


def _problem(backend, dtype="float64", p=0.4, seed=3):
    model = gn.MLP([6, 9, 8, 4], activation="tanh", backend=backend, seed=seed, dtype=dtype,
                   dropout=p, dropout_seed=99)
    rng = np.random.default_rng(seed)
    return model, rng.standard_normal((10, 6)), rng.integers(0, 4, 10)


def test_forward_and_backward_match_torch_for_the_same_masks(backend, torch):
    model, x, y = _problem(backend.name)
    model.dropout_step = 5
    value, dJdy = gn.CrossEntropyLoss()(model.forward(x), y)
    model.backward(dJdy)
    assert model.dropout_step == 6
    masks = [torch.tensor(reference_mask(99, 5, layer, 10, width, 0.4))
             for layer, width in ((0, 9), (1, 8))]
    p = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    h = torch.tensor(x)
    for i in (1, 2):
        h = torch.tanh(h @ p[f"W{i}"].T + p[f"b{i}"]) * masks[i - 1]
    loss = torch.nn.functional.cross_entropy(h @ p["W3"].T + p["b3"], torch.tensor(y))
    loss.backward()
    assert float(host(value)) == pytest.approx(loss.item(), rel=1e-12)
    for k, t in p.items():
        np.testing.assert_allclose(host(model.grads[k]), t.grad.numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=k)


def test_nothing_is_dropped_at_inference(backend, torch):
    model, x, _ = _problem(backend.name, p=0.6)
    net = model.to_torch().eval()  # torch's eval mode: its Dropout modules pass through
    assert [type(m).__name__ for m in net] == ["Linear", "Tanh", "Dropout", "Linear", "Tanh",
                                               "Dropout", "Linear"]
    expected = net(torch.tensor(x)).detach().numpy()
    step = model.dropout_step
    np.testing.assert_allclose(host(model.predict(x)), expected, rtol=1e-12)
    np.testing.assert_allclose(host(model.forward(x, cache=False)), expected, rtol=1e-12)
    assert model.dropout_step == step  # inference draws no masks
    trained = host(model.forward(x))
    assert not np.allclose(trained, expected)


@pytest.mark.parametrize("norm", [None, "batch"])
def test_a_predict_between_forward_and_backward_leaves_the_training_pass(backend, norm):
    """forward, then predict (as a validation pass would), then backward: the gradients are
    those of forward then backward alone, dropout masks and all (a batch norm's too)."""
    grads = []
    for between in (False, True):
        model, x, y = _problem(backend.name, p=0.4)
        if norm:
            model = gn.MLP(model.sizes, activation="tanh", backend=backend.name, seed=3,
                           dropout=0.4, dropout_seed=99, norm=norm, dtype="float64")
        value, dJdy = gn.CrossEntropyLoss()(model.forward(x), y)
        if between:
            model.predict(x[:5])
        model.backward(dJdy)
        grads.append({k: host(g) for k, g in model.grads.items()})
    for k in grads[0]:
        np.testing.assert_array_equal(grads[1][k], grads[0][k], err_msg=k)
    fresh = _problem(backend.name, p=0.4)[0]
    with pytest.raises(gn.ConfigError, match="needs a forward"):
        fresh.backward(np.zeros((2, fresh.sizes[-1])))


def test_the_gradient_check_holds_with_dropout(backend):
    model, x, y = _problem(backend.name, p=0.5)
    result = gn.gradcheck(model, gn.CrossEntropyLoss(), x, y)
    assert result, result.ratios


def test_checkpoints_and_torch_carry_the_rate_and_the_mask_stream(tmp_path, torch):
    model, x, y = _problem("numpy", dtype="float32", p=0.25)
    for _ in range(3):
        model.forward(x)
    save_checkpoint(tmp_path / "m.npz", model)
    back = load_checkpoint(tmp_path / "m.npz").build_model("numpy")
    assert (back.dropout, back.dropout_seed, back.dropout_step) == (0.25, 99, 3)
    np.testing.assert_array_equal(host(back.forward(x)), host(model.forward(x)))
    again = gn.MLP.from_torch(model.to_torch(), backend="numpy")
    assert again.dropout == 0.25
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v)


@pytest.mark.parametrize("p", [1.0, -0.1, "0.5", True])
def test_rates_outside_zero_to_one_are_refused(p):
    with pytest.raises(gn.ConfigError, match="dropout must be a number in \\[0, 1\\)"):
        gn.MLP([3, 4, 2], dropout=p, backend="numpy")


def _weights(path):
    return load_checkpoint(path).params


def test_a_resumed_dropout_run_equals_the_unbroken_one(tmp_path, capsys):
    common = ["--dataset", "wine", "--dropout", "0.3", "--backend", "numpy", "--quiet",
              "--batch-size", "16"]
    assert main(["train", *common, "--epochs", "4", "--save", str(tmp_path / "a.npz")]) == 0
    assert main(["train", *common, "--epochs", "2", "--save", str(tmp_path / "b.npz")]) == 0
    assert main(["train", "--resume", str(tmp_path / "b.npz"), "--epochs", "4", "--quiet",
                 "--backend", "numpy"]) == 0
    a, b = _weights(tmp_path / "a.npz"), _weights(tmp_path / "b.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(tmp_path / "a.npz")]) == 0
    assert "dropout 0.3" in capsys.readouterr().out
    # and it dropped: the same run without dropout ends elsewhere
    assert main(["train", *common[:2], *common[4:], "--epochs", "4", "--save",
                 str(tmp_path / "c.npz")]) == 0
    assert not np.allclose(_weights(tmp_path / "c.npz")["W1"], a["W1"])


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "cupy"])
def test_the_fused_mask_kernel_draws_the_documented_masks(backend):
    b = gn.get_backend(backend)
    for dtype in (np.float32, np.float64):
        out = b.xp.full((37, 129), np.nan, dtype=dtype)  # poisoned
        b.dropout_mask(out, 0.35, dropout_mod.seed_key(5), b.xp.asarray(np.uint64(9)), 2, 11)
        np.testing.assert_array_equal(
            host(out), dropout_mod.mask(np, (37, 129), 0.35, dropout_mod.stream_key(5, 9, 2),
                                        11, dtype))


def test_the_estimators_take_dropout():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    clf = gn.MLPClassifier(dropout=0.2, epochs=8, backend="numpy").fit(x[:1200], y[:1200])
    assert clf.model_.dropout == 0.2 and clf.score(x[1200:], y[1200:]) > 0.9
    with pytest.raises(ValueError, match=r"dropout 0.5 \(fitted: 0.2\)"):
        clf.set_params(dropout=0.5).partial_fit(x[:100], y[:100])


@pytest.mark.parametrize("shape", [(256, 256), (300, 257), (1024, 129)])  # all >= 2^16
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_cpu_mask_kernel_draws_the_documented_masks(shape, dtype, monkeypatch):
    """Masks from 2^16 elements up go through kernels/cpu_dropout.py: the same bits as the
    NumPy form (and so as the hash written out above), on poisoned output."""
    from gpunet.kernels import cpu_dropout

    calls = []
    inner = cpu_dropout.dropout_mask
    monkeypatch.setattr(cpu_dropout, "dropout_mask",
                        lambda *a: calls.append(a[0].size) or inner(*a))
    b = gn.get_backend("numpy")
    out = np.full(shape, np.nan, dtype=dtype)
    b.dropout_mask(out, 0.45, dropout_mod.seed_key(8), np.uint64(2**40 + 3), 1, 7)
    assert calls == [out.size]
    np.testing.assert_array_equal(
        out, dropout_mod.mask(np, shape, 0.45, dropout_mod.stream_key(8, 2**40 + 3, 1), 7,
                              dtype))
    small = np.full((5, 7), np.nan, dtype=dtype)  # under the threshold: NumPy's ops
    b.dropout_mask(small, 0.45, dropout_mod.seed_key(8), 3, 1)
    assert calls == [out.size]
    np.testing.assert_array_equal(
        small, dropout_mod.mask(np, (5, 7), 0.45, dropout_mod.stream_key(8, 3, 1), 0, dtype))
