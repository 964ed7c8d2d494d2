"""What the Python API says to the mistakes PyTorch and scikit-learn users make: one error
naming the problem (a gpunet error class), never a wrong result without a word."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.estimators import MLPClassifier


def _net(**kw):
    return gn.MLP([3, 4, 3], backend="numpy", seed=0, **kw)


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 3, n)


def test_train_step_refuses_another_models_optimiser_or_a_foreign_one():
    """b.train_step(..., opt_a) used to step a (again) and leave b as it was; a torch
    optimiser stepped nothing."""
    torch = pytest.importorskip("torch")
    a, b = _net(), _net()
    opt_a = gn.SGD(a, lr=0.5)
    x, y = _batch()
    before = b.state_dict()
    with pytest.raises(gn.ConfigError, match="the optimizer was built on another model"):
        b.train_step(x, y, gn.CrossEntropyLoss(), opt_a)
    for k, v in before.items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    with pytest.raises(gn.ConfigError, match="optimizer must be a gpunet optimiser"):
        a.train_step(x, y, gn.CrossEntropyLoss(), torch.optim.SGD(a.to_torch().parameters(),
                                                                  lr=0.5))
    # a loss of one's own ((y_hat, y) -> (J, dJ/dy_hat), as gradcheck takes) is a loss too
    ce = gn.CrossEntropyLoss()
    twin = _net()
    value = twin.train_step(x, y, lambda y_hat, t: ce(y_hat, t), gn.SGD(twin, lr=0.5))
    b.train_step(x, y, ce, gn.SGD(b, lr=0.5))
    assert float(value) == float(ce(_net().forward(x), y)[0])
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(twin.state_dict()[k], v)
    with pytest.raises(gn.ConfigError, match=r"pass one, CrossEntropyLoss\(\)"):
        a.train_step(x, y, gn.CrossEntropyLoss, opt_a)
    with pytest.raises(gn.ConfigError, match=r"build one, SGD\(model\)"):
        a.train_step(x, y, gn.CrossEntropyLoss(), gn.SGD)
    for loss in ("cross_entropy", None):
        with pytest.raises(gn.ConfigError, match="loss_fn must be a loss object"):
            a.train_step(x, y, loss, opt_a)


def test_an_optimiser_takes_the_model_itself():
    model = _net()
    for wrong, hint in ((model.params, "dict"), (list(model.params.values()), "list"),
                        (None, "NoneType"), (MLPClassifier(), "an estimator's network")):
        with pytest.raises(gn.ConfigError, match=r"SGD takes the gn.MLP itself \(SGD\(model\)\)"
                                                 rf".*{hint}"):
            gn.SGD(wrong, lr=0.1)
    with pytest.raises(gn.ConfigError, match="nesterov must be True or False, got 'no'"):
        gn.SGD(model, lr=0.1, momentum=0.9, nesterov="no")


def test_a_loss_class_or_its_call_with_arrays_is_named():
    model = _net()
    x, y = _batch()
    out = model.forward(x)
    with pytest.raises(gn.ConfigError, match=r"build the loss, then call it: "
                                             r"CrossEntropyLoss\(\)\(y_hat, y\)"):
        gn.CrossEntropyLoss(out, y)
    for loss in (gn.MSELoss, gn.HuberLoss, gn.BCEWithLogitsLoss):  # (F.mse_loss's habit)
        with pytest.raises(gn.ConfigError, match=rf"build the loss, then call it: "
                                                 rf"{loss.__name__}\(\)\(y_hat, y\)"):
            loss(out, out.copy())
    with pytest.raises(gn.ConfigError, match="loss_fn must be a loss object"):
        gn.gradcheck(gn.MLP([3, 2], dtype="float64"), gn.MSELoss, x, np.ones((8, 2)))


def test_a_loss_given_the_models_output_as_its_target_says_the_arguments_are_swapped():
    """gpunet.twolayer's losses take (y, y_hat), gn's (y_hat, y) as torch's: swapped, MSE
    gave the same J and the negated gradient (training climbed the loss) and integer targets
    blamed y_hat's dtype. Not a pass without the cache (predict's), nor a copy."""
    model = gn.MLP([3, 4, 2], backend="numpy", seed=0)
    x, _ = _batch()
    y = np.random.default_rng(4).normal(size=(8, 2))  # (data: float64, the model float32)
    out = model.forward(x)
    value, grad = gn.MSELoss()(y, out.copy())  # (the negated gradient, unseen)
    np.testing.assert_allclose(grad, -gn.MSELoss()(out, y)[1], rtol=1e-6)
    probs = np.full((8, 2), 0.5)
    for loss, target in ((gn.MSELoss(), y), (gn.HuberLoss(), y), (gn.BCEWithLogitsLoss(), probs),
                         (gn.CrossEntropyLoss(), probs)):
        with pytest.raises(gn.ConfigError, match=r"y is the output of the model's last "
                                                 r"training pass, y_hat is not: the arguments "
                                                 r"swapped\?"):
            loss(target, out)
    with pytest.raises(gn.ConfigError, match=r"got an array of dtype int64: the arguments "
                                             r"swapped\?"):
        gn.MSELoss()(np.ones((8, 2), dtype=np.int64), out)
    assert np.isfinite(float(gn.MSELoss()(out, y)[0]))  # the right order
    model.forward(x, cache=False)  # (an inference pass leaves the training pass's output)
    with pytest.raises(gn.ConfigError, match="swapped"):
        gn.MSELoss()(y, out)
    other = model.forward(x)  # a later training pass: out is no longer the last output
    gn.MSELoss()(other, out)  # (a target from an earlier pass: taken)
    # distillation, mutual learning: a model's output against another's training output
    teacher = gn.MLP([3, 4, 2], backend="numpy", seed=1)
    student_out, teacher_out = model(x), teacher(x)
    value, grad = gn.MSELoss()(student_out, teacher_out)
    np.testing.assert_allclose(grad, 2 * (student_out - teacher_out) / student_out.size,
                               rtol=1e-6)
    gn.MSELoss()(teacher_out, student_out)  # (either way round: both are models' outputs)
    gn.MSELoss()(student_out / 2.0, teacher_out)  # (transformed: the model's dtype, no swap)
    gn.MSELoss()(student_out[:, :1], teacher_out[:, :1])
    with pytest.raises(gn.ConfigError, match="swapped"):
        gn.MSELoss()(y, teacher_out)
    gn.HuberLoss("mean", np.float64(2.0))  # (a NumPy scalar option is no array)


def test_inputs_shaped_as_the_seeds_columns_get_the_transpose():
    model = gn.MLP([3, 4, 2], backend="numpy", seed=0)
    with pytest.raises(gn.ShapeError, match=r"got \(3, 5\): samples as columns .* give x.T"):
        model.forward(np.ones((3, 5)))
    with pytest.raises(gn.ShapeError, match=r"got \(3,\): one sample\? give x.reshape"):
        model.forward(np.ones(3))
    with pytest.raises(gn.ShapeError, match=r"got \(5, 4\)$"):
        model.forward(np.ones((5, 4)))


def test_cross_entropy_over_one_output_says_it_needs_one_per_class():
    model = gn.MLP([3, 4, 1], backend="numpy", seed=0)
    x, _ = _batch()
    with pytest.raises(gn.ConfigError, match=r"\[0, 0\] for 1 outputs; got labels from 0 to 1: "
                                             r"over a single output cross-entropy is 0"):
        gn.CrossEntropyLoss()(model.forward(x), np.array([0, 1] * 4))
    step = gn.StaticStep(model, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), 8)
    with pytest.raises(gn.ConfigError, match="over a single output cross-entropy is 0"):
        step(x, np.array([0, 1] * 4))


def test_bce_on_values_outside_zero_to_one_is_refused_as_torch_does():
    """BCELoss on logits gave a NaN loss and gradients of 1e10 (torch raises)."""
    model = gn.MLP([3, 4, 1], backend="numpy", seed=0)
    x, _ = _batch()
    y = np.ones((8, 1), np.float32)
    z = model.forward(x)
    z[0, 0] = 3.0
    with pytest.raises(gn.ConfigError, match=r"BCELoss takes probabilities in \[0, 1\], got "
                                             r"values from .* to 3"):
        gn.BCELoss()(z, y)
    p = np.full((8, 1), 0.25, np.float32)
    value, grad = gn.BCELoss()(p, y)  # the loss itself, checked against the formula
    assert float(value) == pytest.approx(-np.log(0.25), rel=1e-6)
    z[0, 0] = np.nan
    with pytest.raises(gn.ConfigError, match="the probabilities are NaN"):
        gn.BCELoss()(z, y)
    unchecked = gn.BCELoss()
    unchecked.check_range = False  # (what fit does, having checked the model's output)
    with np.errstate(invalid="ignore"):
        assert np.isnan(float(unchecked(z, y)[0]))


def test_sample_weights_of_any_host_kind_are_checked():
    """A torch tensor or a pandas Series of negative weights gave a negative loss."""
    torch = pytest.importorskip("torch")
    pd = pytest.importorskip("pandas")
    model = _net()
    x, y = _batch()
    out = model.forward(x)
    for w in (torch.tensor(-np.ones(8)), pd.Series(-np.ones(8)), [-1.0] * 8):
        with pytest.raises(gn.ConfigError, match="sample weights must be finite numbers >= 0"):
            gn.CrossEntropyLoss()(out, y, weight=w)


def test_backward_is_told_the_loss_pair_and_replaces_gradients():
    model = _net(dtype="float64")
    x, y = _batch()
    loss = gn.CrossEntropyLoss()
    out = model.forward(x)
    with pytest.raises(gn.ConfigError, match="backward takes dJ/dy_hat, the loss's second"):
        model.backward(loss(out, y))
    # as documented: gradients are replaced, not added up (torch adds)
    model.backward(loss(out, y)[1])
    first = {k: v.copy() for k, v in model.grads.items()}
    again = model.forward(x)
    model.backward(loss(again, y)[1])
    for k, v in first.items():
        np.testing.assert_array_equal(model.grads[k], v)


def test_backward_after_the_weights_changed_since_forward_is_refused():
    """optimizer.step() or load_state_dict between forward and backward: the cache holds the
    old weights' outputs, and dJ/dx would be taken through the new ones (torch raises too)."""
    model = _net(dtype="float64")
    x, y = _batch()
    loss = gn.CrossEntropyLoss()
    opt = gn.SGD(model, lr=0.5)
    model.backward(loss(model.forward(x), y)[1])  # (grads for a first step)
    out = model.forward(x)
    model.backward(loss(out, y)[1])  # backward twice on one pass: fine
    opt.step()
    with pytest.raises(gn.ConfigError, match=r"weights changed since the forward pass "
                                             r"\(optimizer.step\(\)\).*run forward again"):
        model.backward(loss(out, y)[1])
    fresh = model.forward(x)
    model.backward(loss(fresh, y)[1])  # the usual loop goes on
    opt.step()
    out = model.forward(x)
    model.load_state_dict(gn.MLP([3, 4, 3], backend="numpy", seed=5).state_dict())
    with pytest.raises(gn.ConfigError, match=r"\(load_state_dict\(\)\)"):
        model.backward(loss(out, y)[1])
    model.backward(loss(model.forward(x), y)[1])


def test_eval_and_train_set_what_model_x_is():
    """model(x) follows the mode, as a torch module's: after eval() it is predict's pass (no
    dropout, the running statistics, which it leaves alone), after train() a training one."""
    model = gn.MLP([3, 16, 3], backend="numpy", seed=0, dropout=0.5, norm="batch")
    x, _ = _batch(16)
    stats = {k: v.copy() for k, v in model.buffers.items()}
    assert model.eval() is model and not model.training
    np.testing.assert_array_equal(model(x), model.predict(x))
    for k, v in stats.items():
        np.testing.assert_array_equal(model.buffers[k], v)
    assert model.train() is model and model.training
    dropped = model(x)
    assert not np.array_equal(dropped, model.predict(x))
    assert any(not np.array_equal(model.buffers[k], v) for k, v in stats.items())
    with pytest.raises(gn.ConfigError, match="train.mode. takes True or False"):
        model.train("no")
    np.testing.assert_array_equal(model(x, cache=False), model.predict(x))  # forward's keywords


def _torch_grads(torch, net, x, y, train=True):
    """torch's parameter gradients of the mean cross-entropy of ``net(x)``, in gpunet's
    parameter order (W1, b1, gamma1, beta1, W2, b2: the order of net.parameters())."""
    net.train(train)
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y)).backward()
    return [p.grad.numpy().copy() for p in net.parameters()]


def test_backward_after_an_eval_mode_pass_is_refused(torch):
    """m(x1); m.eval(); m(x2); m.backward(dJ) took x2's dJ/dy_hat through x1's training cache
    (W1's gradient off by more than its size, against torch's of the eval pass), silently:
    gpunet's backward passes are training mode's, so it says so; after train() and a training
    pass the gradients are torch's of that pass."""
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(16, 3)), rng.normal(size=(16, 3))
    y = rng.integers(0, 3, 16)
    model = gn.MLP([3, 8, 3], activation="tanh", norm="batch", backend="numpy", seed=1,
                   dtype="float64")
    loss = gn.CrossEntropyLoss()
    model(x1)  # a training pass: the cache a stale backward used
    net = model.to_torch()  # (with the running statistics it moved)
    model.eval()
    value, dJdy_hat = loss(model(x2), y)
    net.eval()
    assert float(value) == pytest.approx(torch.nn.functional.cross_entropy(
        net(torch.tensor(x2)), torch.tensor(y)).item(), rel=1e-12)  # (the pass is torch's)
    with pytest.raises(gn.ConfigError, match=r"the last forward ran in eval mode "
                                             r"\(model.eval\(\)\).*run a training-mode "
                                             r"forward \(model.train\(\); model\(x\)\)"):
        model.backward(dJdy_hat)
    model.train()
    with pytest.raises(gn.ConfigError, match="the last forward ran in eval mode"):
        model.backward(dJdy_hat)  # (train() alone: the cache is still not the eval pass's)
    model.backward(loss(model(x2), y)[1])
    for (k, g), want in zip(model.grads.items(), _torch_grads(torch, net, x2, y)):
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-12, err_msg=k)


def test_an_eval_pass_between_a_training_pass_and_its_backward_changes_nothing():
    """o = m(x); g = loss(o, y); m.eval(); m(x_val); m.train(); m.backward(g): the eval pass
    keeps no cache and leaves the training pass's, so g's backward is that pass's, as torch
    differentiates o whatever passes ran after it; it was refused as an eval-mode backward."""
    rng = np.random.default_rng(5)
    x, x_val, y = rng.normal(size=(16, 3)), rng.normal(size=(9, 3)), rng.integers(0, 3, 16)
    model = gn.MLP([3, 8, 3], activation="tanh", norm="batch", dropout=0.3, backend="numpy",
                   seed=1, dtype="float64")
    _, g = gn.CrossEntropyLoss()(model(x), y)
    model.eval()
    model(x_val)
    model.train()
    model.backward(g)
    got = {k: np.array(v) for k, v in model.grads.items()}
    again = gn.MLP([3, 8, 3], activation="tanh", norm="batch", dropout=0.3, backend="numpy",
                   seed=1, dtype="float64")
    again.backward(gn.CrossEntropyLoss()(again(x), y)[1])  # (the same pass, no eval between)
    for k, v in again.grads.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_train_step_in_eval_mode_is_refused_and_changes_nothing(torch):
    """After m.eval(), m.train_step(...) used to drop hidden outputs and move the running
    statistics (a training pass) while torch's eval-mode step does neither: refused, nothing
    moved; after train() it is torch's training-mode step."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(16, 3)), rng.integers(0, 3, 16)
    dropped = gn.MLP([3, 8, 3], norm="batch", dropout=0.5, backend="numpy", seed=1,
                     dtype="float64").eval()
    before, step = dropped.state_dict(), dropped.dropout_step
    with pytest.raises(gn.ConfigError, match=r"train_step .* the model is in eval mode "
                                             r"\(model.eval\(\)\): call model.train\(\) first"):
        dropped.train_step(x, y, gn.CrossEntropyLoss(), gn.SGD(dropped, lr=0.1))
    assert dropped.dropout_step == step
    for k, v in before.items():
        np.testing.assert_array_equal(dropped.state_dict()[k], v)
    model = gn.MLP([3, 8, 3], norm="batch", backend="numpy", seed=1, dtype="float64").eval()
    net = model.to_torch()
    model.train().train_step(x, y, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1))
    topt = torch.optim.SGD(net.parameters(), lr=0.1)
    _torch_grads(torch, net, x, y)
    topt.step()
    for k, p in zip(model.params, net.parameters()):
        np.testing.assert_allclose(model.params[k], p.detach().numpy(), rtol=1e-12,
                                   atol=1e-15, err_msg=k)
    np.testing.assert_allclose(model.buffers["running_mean1"], net[1].running_mean.numpy(),
                               rtol=1e-12)


def test_backward_of_an_earlier_passs_output_is_refused(torch):
    """o1 = m(x1); o2 = m(x2); m.backward(loss(o1, y)[1]) paired o1's dJ/dy_hat with o2's cache
    (gradients of neither pass), silently; so did a dJ/dy_hat taken before the second pass,
    or another model's. The last pass's own is torch's gradient of that pass."""
    rng = np.random.default_rng(5)
    x1, x2 = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    y1, y2 = rng.integers(0, 3, 10), rng.integers(0, 3, 10)
    model = gn.MLP([3, 6, 3], activation="tanh", backend="numpy", seed=2, dtype="float64")
    other = gn.MLP([3, 6, 3], activation="tanh", backend="numpy", seed=3, dtype="float64")
    loss = gn.CrossEntropyLoss()
    refused = "dJ/dy_hat comes from another forward pass's output than this model's last one"
    o1 = model(x1)
    early = loss(o1, y1)[1]
    o2 = model(x2)
    for dJdy_hat in (loss(o1, y1)[1], early, loss(other(x2), y2)[1]):
        with pytest.raises(gn.ConfigError, match=refused):
            model.backward(dJdy_hat)
    dJdy_hat = loss(o2, y2)[1]
    model.backward(dJdy_hat)
    model.backward(dJdy_hat)  # (twice on one pass: fine, as before)
    for (k, g), want in zip(model.grads.items(), _torch_grads(torch, model.to_torch(), x2, y2)):
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-12, err_msg=k)


def test_cross_entropy_targets_in_the_other_form_get_the_fix():
    model = _net()
    x, y = _batch()
    out = model.forward(x)
    with pytest.raises(gn.ShapeError, match=r"class labels are integers \(y.astype\(int\)\)"):
        gn.CrossEntropyLoss()(out, y.astype(np.float32))
    with pytest.raises(gn.ShapeError, match=r"one-hot rows are y.argmax\(1\) as labels"):
        gn.CrossEntropyLoss()(out, np.eye(3, dtype=int)[y])


def test_torch_dtypes_and_a_dtype_first_in_to_are_taken():
    torch = pytest.importorskip("torch")
    model = gn.MLP([3, 4, 2], backend="numpy", dtype=torch.float64)
    assert model.dtype == np.float64
    assert model.to("float32").params["W1"].dtype == np.float32
    assert model.to(torch.float64).params["W1"].dtype == np.float64
    assert model.backend.name == "numpy"
    with pytest.raises(gn.ConfigError, match="unsupported dtype torch.int32"):
        gn.MLP([3, 2], dtype=torch.int32)


def test_gradients_move_along_with_to_as_torchs_do():
    """torch's module.to(float64) between backward and step keeps the gradients (cast); so
    does gpunet's (it dropped them, and step() then failed for want of a gradient). The step
    after the move is the float64 step on those gradients."""
    model = _net()
    x, y = _batch()
    opt = gn.SGD(model, lr=0.1)
    J, g = gn.CrossEntropyLoss()(model.forward(x), y)
    model.backward(g)
    before = {k: np.asarray(v, dtype=np.float64) for k, v in model.params.items()}
    grads = {k: np.asarray(v, dtype=np.float64) for k, v in model.grads.items()}
    model.to("float64")
    assert all(v.dtype == np.float64 for v in model.grads.values())
    opt.step()
    for k, p in model.params.items():
        assert p.dtype == np.float64
        np.testing.assert_array_equal(p, before[k] - 0.1 * grads[k])
    with pytest.raises(gn.GpunetError):  # the forward cache is gone: backward needs a forward
        model.backward(g.astype(np.float64))


def test_from_torch_says_what_it_takes():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(3, 4)

        def forward(self, x):
            return self.fc1(x)

    with pytest.raises(gn.ConfigError, match="from_torch takes an nn.Sequential.*got Net "
                                             r"\(a Module of its own"):
        gn.MLP.from_torch(Net())
    with pytest.raises(gn.ConfigError, match="got a state_dict"):
        gn.MLP.from_torch(Net().state_dict())
    one = torch.nn.Linear(3, 2)  # a single Linear is a net of one layer
    np.testing.assert_array_equal(gn.MLP.from_torch(one, backend="numpy").params["W1"],
                                  one.weight.detach().numpy())


def test_sizes_spread_over_arguments_get_the_list():
    with pytest.raises(gn.ConfigError, match=r"got 4 \(one list: MLP\(\[4, 5, 3\]\)\)"):
        gn.MLP(4, 5, 3)


def test_a_parameter_that_is_not_an_array_is_named():
    model = _net()
    model.params["W1"] = model.params["W1"].tolist()
    with pytest.raises(gn.ShapeError, match=r"parameter W1 must be an array shaped \(4, 3\)"):
        model.forward(_batch()[0])


def test_estimator_options_are_named_as_the_estimator_names_them():
    x, y = _batch(40)
    for kw, message in ((dict(epochs=-1), "epochs must be a positive integer, got -1"),
                        (dict(epochs=None), "epochs must be a positive integer, got None"),
                        (dict(clip_grad_norm=0), "clip_grad_norm must be a finite number > 0"),
                        (dict(schedule=gn.Schedule("cosine")), "schedule is a name here")):
        with pytest.raises(gn.ConfigError, match=message):
            MLPClassifier(backend="numpy", **kw).fit(x, y)


def test_a_momentum_of_one_or_more_is_blamed_when_training_diverges():
    from gpunet.data import make_dataset

    rng = np.random.default_rng(1)
    data = make_dataset("d", rng.normal(size=(200, 3)), rng.integers(0, 2, 200))
    model = gn.MLP([3, 16, 2], backend="numpy", seed=0)
    with pytest.raises(gn.TrainingDiverged, match="a momentum of 1.5 lets SGD's steps grow"):
        gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.5, momentum=1.5),
               epochs=200, progress=False)


def test_fit_refuses_a_model_a_diverged_run_left():
    """After TrainingDiverged the weights are NaN: a second fit (a lower rate, say) would
    diverge at its first step and advise a lower rate again; it says why instead."""
    from gpunet.data import make_dataset

    rng = np.random.default_rng(2)
    data = make_dataset("d", rng.normal(size=(100, 3)), rng.integers(0, 2, 100))
    model = gn.MLP([3, 8, 2], backend="numpy", seed=0)
    with pytest.raises(gn.TrainingDiverged):
        gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=1e30), epochs=2,
               progress=False)
    with pytest.raises(gn.ConfigError, match=r"the model's weights \(W1.*\) are not finite"):
        gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=1e-3), epochs=1,
               progress=False)


def test_optimisers_and_schedules_show_their_settings():
    """As torch's optimisers show theirs: a repr that names every setting, from which the
    object could be made again."""
    model = _net()
    sgd = gn.SGD(model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, clip_norm=2.0)
    assert repr(sgd) == ("SGD(lr=0.1, weight_decay=0.0001, clip_norm=2.0, momentum=0.9, "
                         "nesterov=True, dampening=0.0)")
    assert "betas=[0.9, 0.99]" in repr(gn.Adam(model, betas=(0.9, 0.99)))
    step = gn.Schedule("step", base_lr=1.0, step_size=3, gamma=0.5, warmup=2)
    assert repr(step) == ("Schedule('step', base_lr=1.0, epochs=None, warmup=2, step_size=3, "
                          "gamma=0.5)")
    again = eval(repr(step), {"Schedule": gn.Schedule})
    assert [again.lr(e) for e in range(1, 12)] == [step.lr(e) for e in range(1, 12)]


def test_one_hot_targets_read_as_a_regression_get_the_way_to_labels():
    from gpunet.data import make_dataset

    x, y = _batch(60)
    data = make_dataset("d", x, np.eye(3, dtype=int)[y])  # 2-D numbers: a regression
    model = _net()
    with pytest.raises(gn.ConfigError, match=r"this is a regression task.*task='classification'"
                                             r".*y.argmax\(1\)"):
        gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), epochs=1,
               progress=False)


def test_a_resume_takes_a_model_a_diverged_run_left(tmp_path):
    """The checkpoint's weights replace the model's: resuming is the way back from a
    diverged run, and is not refused for the weights it replaces."""
    from gpunet.data import make_dataset

    rng = np.random.default_rng(3)
    data = make_dataset("d", rng.normal(size=(100, 3)), rng.integers(0, 2, 100))
    path = tmp_path / "c.npz"
    model = gn.MLP([3, 8, 2], backend="numpy", seed=0)
    gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), epochs=2, save=path,
           progress=False)
    model.params["W1"][0, 0] = np.nan
    gn.fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), epochs=3, save=path,
           resume=path, progress=False)
    assert all(np.isfinite(v).all() for v in model.state_dict().values())


def test_gradcheck_takes_the_autograders_float32_net():
    """twolayer.MLP is float32 as the autograder builds it; its dtype follows its input's, so
    gradcheck's float64 finite differences make it float64, as its forward of them would."""
    from gpunet import twolayer

    rng = np.random.default_rng(4)
    net = twolayer.MLP(4, 5, "tanh", 5, 2, "identity")
    assert gn.gradcheck(net, twolayer.mse_loss, rng.normal(size=(3, 4)), rng.normal(size=(3, 2)))


def test_a_loaded_optimiser_keeps_the_rate_it_was_built_with_for_schedules(tmp_path):
    """torch's param groups carry initial_lr; gpunet's state_dict did not, so fit's cosine
    after load_state_dict (or a checkpoint's load_optimizer) started from the new optimiser's
    constructor rate (0.001) instead of the run's 0.05. Now it starts from 0.05, as the
    unbroken run's schedule did."""
    from gpunet.checkpoint import load_checkpoint, save_checkpoint
    from gpunet.data import make_dataset

    rng = np.random.default_rng(0)
    data = make_dataset("d", rng.normal(size=(40, 3)), rng.integers(0, 3, 40), seed=0)
    model = _net()
    run = gn.Adam(model, lr=0.05)
    run.lr = 0.01  # (where a schedule left it)
    sd = run.state_dict()
    save_checkpoint(tmp_path / "c.npz", model, run)
    for how in ("state_dict", "checkpoint"):
        opt = gn.Adam(model)
        if how == "state_dict":
            opt.load_state_dict(sd)
        else:
            load_checkpoint(tmp_path / "c.npz").load_optimizer(opt)
        assert (opt.lr, opt.initial_lr) == (0.01, 0.05)
        h = gn.fit(model, data, gn.CrossEntropyLoss(), opt, epochs=4, progress=False,
                   schedule=gn.Schedule("cosine"))
        assert [r["lr"] for r in h] == [gn.Schedule("cosine", base_lr=0.05, epochs=4).lr(e)
                                       for e in range(1, 5)]
    old = {k: v for k, v in sd.items() if k != "initial_lr"}  # (a state of before it was kept)
    opt = gn.Adam(model)
    opt.load_state_dict(old)
    assert opt.initial_lr == 0.01


def test_a_static_step_says_what_the_eager_step_says():
    """Mistakes the eager step names clearly, which the static step answered with a wrong
    count, a ZeroDivisionError, an AttributeError or NumPy's matmul error, or took (BCELoss
    on logits, which trained into NaN)."""
    model = _net()
    x, y = _batch()
    step = gn.StaticStep(model, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), 8)
    with pytest.raises(gn.ShapeError, match="x has 8 rows and y 7: one target a row"):
        step(x, y[:7])
    with pytest.raises(gn.ShapeError, match="batch norm needs at least 2 rows"):
        bn = _net(norm="batch")
        gn.StaticStep(bn, gn.CrossEntropyLoss(), gn.SGD(bn), 1)
    with pytest.raises(gn.ConfigError, match="BCELoss takes probabilities, but the model's "
                                             "output is identity"):
        gn.StaticStep(model, gn.BCELoss(), gn.SGD(model), 8)
    w1 = model.params["W1"]
    model.params["W1"] = np.zeros((5, 3), np.float32)
    with pytest.raises(gn.ShapeError, match=r"parameter W1 must be shaped \(4, 3\)"):
        step(x, y)
    model.params["W1"] = w1.astype(np.float64)
    with pytest.raises(gn.ConfigError, match="parameter W1 is float64, but the model computes "
                                             "in float32"):
        step(x, y)
    with pytest.raises(gn.ConfigError, match="parameter W1 is float64"):
        model.forward(x)  # (the eager forward too: it trained on in float64 before)
    model.params["W1"] = w1
    torch = pytest.importorskip("torch")
    eager = _net()
    opt = gn.SGD(eager, lr=0.1)
    loss, _ = step(torch.from_numpy(x), torch.from_numpy(y))  # torch tensors, as eager takes
    want = eager.train_step(torch.from_numpy(x), torch.from_numpy(y), gn.CrossEntropyLoss(), opt)
    assert float(loss) == float(want)
    for k in model.params:
        np.testing.assert_array_equal(model.params[k], eager.params[k])


def test_an_unbound_plateau_and_a_partial_schedule_state_say_what_they_need():
    s = gn.Schedule("plateau", patience=0)
    with pytest.raises(gn.ConfigError, match="takes its base_lr and epochs from gpunet.fit"):
        s.observe(1.0)  # (a TypeError: None times a factor)
    with pytest.raises(gn.ConfigError, match="a schedule's state needs current, best"):
        gn.Schedule.from_state({k: v for k, v in gn.Schedule("step", base_lr=0.1).state_dict()
                                .items() if k not in ("current", "best")})


def test_torch_habits_get_an_answer(tmp_path):
    """opt.zero_grad() (AttributeError before) forgets the gradients as model.zero_grad();
    "cpu" / "cuda" as a backend names what they are; a NumPy scalar in a checkpoint's extra
    is its number (a raw json TypeError before), an array is refused in one line."""
    from gpunet.checkpoint import load_checkpoint, save_checkpoint

    model = _net()
    x, y = _batch()
    opt = gn.SGD(model)
    model.backward(gn.CrossEntropyLoss()(model.forward(x), y)[1])
    opt.zero_grad()
    assert all(g is None for g in model.grads.values())
    with pytest.raises(gn.ConfigError, match=r"unknown backend 'cpu'.*\(numpy computes on the "
                                             r"CPU, cupy on an NVIDIA GPU\)"):
        model.to("cpu")
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, extra={"score": np.float32(1.5), "n": np.int64(3)})
    assert load_checkpoint(path).extra == {"score": 1.5, "n": 3}
    with pytest.raises(gn.CheckpointError, match="extra must hold JSON values .* ndarray is "
                                                 "not JSON"):
        save_checkpoint(path, model, extra={"w": np.ones(2)})


def test_torchs_optimiser_and_model_options_are_refused_in_one_line():
    """gn.Adam(m, amsgrad=True), maximize=True and gn.MLP(..., bias=False) were bare
    TypeErrors."""
    model = _net()
    for make, said in ((lambda: gn.Adam(model, amsgrad=True), "Adam: amsgrad is not offered"),
                       (lambda: gn.AdamW(model, amsgrad=False), "AdamW: amsgrad is not offered"),
                       (lambda: gn.Adam(model, maximize=True), "Adam: maximize is not offered"),
                       (lambda: gn.SGD(model, maximize=True), "SGD: maximize is not offered"),
                       (lambda: gn.get_optimizer("adam", model, amsgrad=True), "amsgrad is"),
                       (lambda: gn.MLP([3, 4], bias=False), "MLP takes no bias= .*bias=False "
                                                            "is not offered")):
        with pytest.raises(gn.ConfigError, match=said):
            make()


@pytest.mark.parametrize("owner", ["optimizer", "model"])
def test_zero_grad_set_to_none_false_gives_zeros_and_torchs_step(torch, owner):
    """opt.zero_grad(set_to_none=False) and model.zero_grad(set_to_none=False) were bare
    TypeErrors; now the gradients are zeros, and a step on them is torch's (momentum and
    weight decay only); set_to_none=True is the plain zero_grad()."""
    model = _net(dtype="float64")
    net = model.to_torch()
    x, y = _batch()
    opt = gn.SGD(model, lr=0.1, momentum=0.9, weight_decay=0.01)
    topt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    model.train_step(x, y, gn.CrossEntropyLoss(), opt)
    _torch_grads(torch, net, x.astype(np.float64), y)
    topt.step()
    (opt if owner == "optimizer" else model).zero_grad(set_to_none=False)
    topt.zero_grad(set_to_none=False)
    assert all(np.array_equal(g, np.zeros(p.shape)) for g, p in
               zip(model.grads.values(), model.params.values()))
    opt.step()
    topt.step()
    for k, p in zip(model.params, net.parameters()):
        np.testing.assert_allclose(model.params[k], p.detach().numpy(), rtol=1e-12,
                                   atol=1e-15, err_msg=k)
    (opt if owner == "optimizer" else model).zero_grad(set_to_none=True)
    assert all(g is None for g in model.grads.values())
    with pytest.raises(gn.ConfigError, match="zero_grad.set_to_none. takes True or False"):
        model.zero_grad(set_to_none="no")


@pytest.mark.parametrize("rate", ["0.1", -1.0, float("nan"), None])
def test_a_learning_rate_set_by_hand_is_checked(rate):
    """opt.lr = "0.1" stepped at 0.1 (NumPy read the text) and -1.0 climbed the loss, without
    a word; the constructor refused both."""
    opt = gn.SGD(_net(), lr=0.1)
    with pytest.raises(gn.ConfigError, match="lr must be a finite number >= 0"):
        opt.lr = rate
    assert opt.lr == 0.1


def test_a_subclass_takes_its_own_options_of_torchs_names():
    """The refusals of torch's option names (weight=, amsgrad=, bias=) are for gpunet's own
    classes: a subclass with its own __init__ that takes such an option (class weights as
    torch's CrossEntropyLoss(weight=), the only way to hand fit a custom loss) was refused as
    if it were gpunet's."""
    class ClassWeightedCE(gn.CrossEntropyLoss):
        def __init__(self, weight, reduction="mean"):
            super().__init__(reduction)
            self.class_weight = np.asarray(weight)

        def __call__(self, y_hat, y, weight=None):
            return super().__call__(y_hat, y, weight=self.class_weight[y])

    class Ams(gn.Adam):
        def __init__(self, model, amsgrad=False, **kw):
            super().__init__(model, **kw)
            self.amsgrad = amsgrad

    class Net(gn.MLP):
        def __init__(self, sizes, bias=True, **kw):
            super().__init__(sizes, **kw)
            self.with_bias = bias

    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    z, y, w = rng.normal(size=(6, 3)), rng.integers(0, 3, 6), np.array([1.0, 2.0, 0.5])
    value, _ = ClassWeightedCE(weight=w)(z, y)
    want = torch.nn.CrossEntropyLoss(weight=torch.tensor(w))(torch.tensor(z), torch.tensor(y))
    assert float(value) == pytest.approx(want.item(), rel=1e-12)
    assert ClassWeightedCE(w).class_weight is not None  # (positionally too)
    net = Net([3, 4, 2], bias=True, backend="numpy")
    assert net.with_bias and Ams(net, amsgrad=True).amsgrad
    with pytest.raises(gn.ConfigError, match="takes no weight= \\(torch's\\)"):
        gn.CrossEntropyLoss(weight=w)  # (gpunet's own: still refused)
    with pytest.raises(gn.ConfigError, match="amsgrad"):
        gn.Adam(net, amsgrad=True)


def test_a_subclass_that_passes_options_on_keeps_the_explanations():
    """A subclass whose __init__ only passes *args / **kwargs on takes no option itself: it
    gets gpunet's explanation of torch's names (it got a bare TypeError), and the build-then-
    call hint for arrays."""
    class Passing(gn.CrossEntropyLoss):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)

    class PassingAdam(gn.Adam):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)

    class PassingNet(gn.MLP):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)

    class PassingMSE(gn.MSELoss):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)

    model = gn.MLP([3, 4, 2], backend="numpy")
    for make, says in ((lambda: Passing(weight=np.ones(3)), "Passing takes no weight= "
                                                           "\\(torch's\\)"),
                       (lambda: PassingAdam(model, amsgrad=True), "amsgrad is not offered"),
                       (lambda: PassingNet([3, 4, 2], bias=False), "takes no bias="),
                       (lambda: PassingMSE(np.ones(3), np.ones(3)), "build the loss, then "
                                                                     "call it")):
        with pytest.raises(gn.ConfigError, match=says):
            make()
