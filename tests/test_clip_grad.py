"""Gradient clipping (the optimisers' ``clip_norm``, ``--clip-grad-norm``): the steps of
``torch.nn.utils.clip_grad_norm_`` followed by torch.optim's update, on the eager and the static
step alike, and kept in checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.cli import main
from gpunet.step import StaticStep

from conftest import host

SIZES = [6, 9, 4]


def _problem(backend, seed=0):
    rng = np.random.default_rng(seed)
    model = gn.MLP(SIZES, activation="tanh", backend=backend, seed=seed, dtype="float64")
    return model, rng.standard_normal((12, 6)) * 3, rng.integers(0, 4, 12)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("clip", [0.05, 1e3])  # clipped every step / never
def test_clipped_steps_match_torch(backend, torch, optimizer, clip):
    model, x, y = _problem(backend.name)
    net = model.to_torch()
    if optimizer == "sgd":
        opt = gn.SGD(model, lr=0.3, momentum=0.9, clip_norm=clip)
        t_opt = torch.optim.SGD(net.parameters(), lr=0.3, momentum=0.9)
    else:
        opt = gn.Adam(model, lr=0.05, clip_norm=clip)
        t_opt = torch.optim.Adam(net.parameters(), lr=0.05)
    xt, yt = torch.tensor(x), torch.tensor(y)
    norms = []
    for _ in range(4):
        model.train_step(x, y, gn.CrossEntropyLoss(), opt)
        t_opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(net.parameters(), clip)))
        t_opt.step()
    assert (min(norms) > clip) if clip < 1 else (max(norms) < clip)  # (as the cases say)
    for i, k in enumerate(("W1", "b1", "W2", "b2")):
        np.testing.assert_allclose(host(model.params[k]), list(net.parameters())[i]
                                   .detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


def test_the_static_step_clips_as_the_eager_one(backend):
    eager, x, y = _problem(backend.name, seed=1)
    static, _, _ = _problem(backend.name, seed=1)
    e_opt = gn.Adam(eager, lr=0.05, clip_norm=0.1)
    s_opt = gn.Adam(static, lr=0.05, clip_norm=0.1)
    step = StaticStep(static, gn.CrossEntropyLoss(), s_opt, len(x))
    xb, yb = static.backend.asarray(x), static.backend.asarray(y)
    for _ in range(4):
        eager.train_step(x, y, gn.CrossEntropyLoss(), e_opt)
        step(xb, yb)
    for k in eager.params:
        if backend.name == "numpy":
            np.testing.assert_array_equal(host(static.params[k]), host(eager.params[k]))
        else:
            np.testing.assert_allclose(host(static.params[k]), host(eager.params[k]),
                                       rtol=1e-10, atol=1e-12)


def test_checkpoints_keep_it_and_the_command_line_sets_it(tmp_path):
    model, x, y = _problem("numpy")
    opt = gn.SGD(model, lr=0.1, clip_norm=0.25)
    model.train_step(x, y, gn.CrossEntropyLoss(), opt)
    save_checkpoint(tmp_path / "c.npz", model, opt)
    again = gn.SGD(model, lr=0.1)
    load_checkpoint(tmp_path / "c.npz").load_optimizer(again)
    assert again.clip_norm == 0.25
    assert main(["train", "--dataset", "iris", "--clip-grad-norm", "0.5", "--epochs", "2",
                 "--backend", "numpy", "--quiet", "--save", str(tmp_path / "r.npz")]) == 0
    assert load_checkpoint(tmp_path / "r.npz").header["optimizer"]["hyperparameters"][
        "clip_norm"] == 0.5


@pytest.mark.parametrize("bad", [0, -1.0, "1", float("inf"), True])
def test_a_clip_norm_must_be_a_positive_number(bad):
    model, _, _ = _problem("numpy")
    with pytest.raises(gn.ConfigError, match="clip_norm must be a finite number > 0"):
        gn.Adam(model, clip_norm=bad)


def test_the_estimators_take_it():
    from sklearn.datasets import make_classification

    x, y = make_classification(200, 8, random_state=0)
    kw = {"epochs": 3, "lr": 0.05, "backend": "numpy", "dtype": "float64"}
    plain = gn.MLPClassifier(**kw).fit(x, y)
    clipped = gn.MLPClassifier(clip_grad_norm=0.01, **kw).fit(x, y)
    assert clipped._optimizer.clip_norm == 0.01
    moved = [np.abs(a - b).max() for a, b in zip(clipped.coefs_, plain.coefs_)]
    assert max(moved) > 1e-3  # a norm of 0.01 holds every step back


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("clip", [0.05, 1e3])
def test_grad_norm_is_what_clip_grad_norm_returns(backend, torch, optimizer, clip):
    """The norm before clipping was thrown away (torch's clip_grad_norm_ returns it): now
    opt.grad_norm, a 0-d array on the model's backend (no read-back), None before the first
    clipped step; the same on the eager and the static step."""
    model, x, y = _problem(backend.name, seed=2)
    static, _, _ = _problem(backend.name, seed=2)
    net = model.to_torch()
    make = (lambda m: gn.SGD(m, lr=0.3, momentum=0.9, clip_norm=clip)) if optimizer == "sgd" \
        else (lambda m: gn.Adam(m, lr=0.05, clip_norm=clip))
    opt, s_opt = make(model), make(static)
    t_opt = (torch.optim.SGD(net.parameters(), lr=0.3, momentum=0.9) if optimizer == "sgd"
             else torch.optim.Adam(net.parameters(), lr=0.05))
    assert opt.grad_norm is None and s_opt.grad_norm is None
    step = StaticStep(static, gn.CrossEntropyLoss(), s_opt, len(x))
    xb, yb = static.backend.asarray(x), static.backend.asarray(y)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(4):
        model.train_step(x, y, gn.CrossEntropyLoss(), opt)
        step(xb, yb)
        t_opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        want = float(torch.nn.utils.clip_grad_norm_(net.parameters(), clip))
        t_opt.step()
        for got in (opt.grad_norm, s_opt.grad_norm):
            assert model.backend.owns(got) and got.shape == ()
            assert float(host(got)) == pytest.approx(want, rel=1e-12)


def test_grad_norm_is_set_by_a_split_static_steps_update_and_not_without_clipping(torch):
    model, x, y = _problem("numpy", seed=3)
    net = model.to_torch()
    opt = gn.SGD(model, lr=0.1, clip_norm=0.05)
    step = StaticStep(model, gn.CrossEntropyLoss(), opt, len(x), split=True)
    step(x, y)
    assert opt.grad_norm is None  # (the update clips, not the forward and backward)
    step.update()
    torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y)).backward()
    assert float(opt.grad_norm) == pytest.approx(
        float(torch.nn.utils.clip_grad_norm_(net.parameters(), 0.05)), rel=1e-12)
    plain = gn.SGD(model, lr=0.1)
    model.train_step(x, y, gn.CrossEntropyLoss(), plain)
    assert plain.grad_norm is None  # (no clip_norm: no norm taken)
