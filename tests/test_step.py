"""The static training step (gpunet.step): the same numbers as the eager step, on fixed
buffers; a CUDA graph replay on the GPU; eager training wherever it cannot apply."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.backends.numpy_backend import NumpyBackend
from gpunet.data import DataSpec, load_data
from gpunet.errors import ConfigError, ShapeError
from gpunet.step import StaticStep
from gpunet.train import fit

from conftest import host, said

SIZES = [13, 40, 33, 5]  # three layers; 40 and 33 cross no power of two on purpose
BATCH = 24
N = 100


def _setup(backend, opt, loss, act="relu", out="identity", dtype="float32", seed=1, **model_kw):
    model = gn.MLP(SIZES, activation=act, output=out, backend=backend, seed=seed, dtype=dtype,
                   **model_kw)
    optimizer = {
        "sgd": lambda: gn.SGD(model, lr=0.1),
        "momentum": lambda: gn.SGD(model, lr=0.1, momentum=0.9, nesterov=True,
                                   weight_decay=0.01),
        "adam": lambda: gn.Adam(model, lr=1e-2, weight_decay=0.01),
        "adamw": lambda: gn.AdamW(model, lr=1e-2),
    }[opt]()
    loss_fn = {"ce": gn.CrossEntropyLoss, "huber": lambda: gn.HuberLoss(delta=0.5),
               "mse": gn.MSELoss, "smooth": lambda: gn.CrossEntropyLoss(label_smoothing=0.2),
               "bce": gn.BCELoss, "bce_logits": gn.BCEWithLogitsLoss}[loss]()
    rng = np.random.default_rng(0)
    b = model.backend
    x = b.asarray(rng.standard_normal((N, SIZES[0])).astype(dtype))
    if loss in ("ce", "smooth"):  # labels
        y = b.asarray(rng.integers(0, SIZES[-1], N))
    elif loss.startswith("bce"):  # a 0/1 target per output (multilabel)
        y = b.asarray((rng.random((N, SIZES[-1])) < 0.4).astype(dtype))
    else:
        y = b.asarray(rng.standard_normal((N, SIZES[-1])).astype(dtype))
    return model, optimizer, loss_fn, x, y


def _batches(steps, seed=7):
    rng = np.random.default_rng(seed)
    return [rng.permutation(N)[:BATCH] for _ in range(steps)]


def _assert_same(a, b, backend_name):
    for k in a.params:
        if backend_name == "numpy":  # same ops in the same order: the same bits
            np.testing.assert_array_equal(host(a.params[k]), host(b.params[k]), err_msg=k)
        else:
            np.testing.assert_allclose(host(a.params[k]), host(b.params[k]), rtol=1e-6,
                                       atol=1e-7, err_msg=k)


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam", "adamw"])
@pytest.mark.parametrize("loss, act, out", [
    ("ce", "relu", "identity"), ("ce", "tanh", "identity"), ("mse", "sigmoid", "sigmoid"),
    ("mse", "leaky_relu", "tanh"), ("mse", "relu", "identity"), ("ce", "identity", "identity"),
    ("mse", "identity", "sigmoid"), ("ce", "gelu", "identity"), ("mse", "silu", "gelu"),
    ("huber", "relu", "identity"), ("huber", "tanh", "sigmoid"),
    ("smooth", "relu", "identity"), ("bce_logits", "relu", "identity"),
    ("bce", "tanh", "sigmoid"),
])
def test_static_steps_equal_eager_steps(backend, dtype, opt, loss, act, out):
    eager, e_opt, e_loss, x, y = _setup(backend.name, opt, loss, act, out, np.dtype(dtype).name)
    static, s_opt, s_loss, _, _ = _setup(backend.name, opt, loss, act, out, np.dtype(dtype).name)
    classify = loss in ("ce", "smooth") or loss.startswith("bce")
    step = StaticStep(static, s_loss, s_opt, BATCH, count_correct=classify)
    for rows in _batches(6):
        idx = eager.backend.asarray(rows)
        if classify:  # the batch's correct predictions, before the step moves the weights
            y_hat = host(eager.predict(x[idx]))
            if loss.startswith("bce"):  # every output on the right side of its threshold
                right = (y_hat > (0.5 if out == "sigmoid" else 0.0)) == host(y[idx])
                expect = int(right.all(axis=1).sum())
            else:
                expect = int((y_hat.argmax(axis=1) == host(y[idx])).sum())
        ref = eager.train_step(x[idx], y[idx], e_loss, e_opt)
        got, correct = step(x, y, idx)
        if backend.name == "numpy":
            assert float(got) == float(ref)
        np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
        if classify:
            assert int(correct) == expect
    _assert_same(eager, static, backend.name)
    assert s_opt.steps == e_opt.steps == 6
    for k, g in eager.grads.items():  # the last step's gradients are the model's
        np.testing.assert_allclose(host(static.grads[k]), host(g), rtol=1e-5, atol=1e-6)
    assert step.captured == (backend.name == "cupy")


@pytest.mark.parametrize("opt, loss, act, kw", [
    ("adam", "ce", "relu", {"dropout": 0.3}), ("momentum", "mse", "gelu", {"norm": "layer"}),
])
def test_a_split_step_with_its_update_is_the_whole_step(backend, opt, loss, act, kw):
    """split=True: the call leaves the weights (its gradients in ``flat``, as views, then the
    free slots), update() then takes the step the whole static step takes, to the bit on the
    CPU; a row offset draws the masks of those rows of a bigger batch, as the eager forward
    with that offset does."""
    whole, w_opt, w_loss, x, y = _setup(backend.name, opt, loss, act, **kw)
    split, s_opt, s_loss, _, _ = _setup(backend.name, opt, loss, act, **kw)
    eager, e_opt, e_loss, _, _ = _setup(backend.name, opt, loss, act, **kw)
    a = StaticStep(whole, w_loss, w_opt, BATCH, row_offset=7)
    b = StaticStep(split, s_loss, s_opt, BATCH, split=True, row_offset=7, extras=3)
    for rows in _batches(4):
        before = {k: host(v).copy() for k, v in split.params.items()}
        a(x, y, rows)
        b(x, y, rows)
        for k, v in split.params.items():  # the call alone moves nothing
            np.testing.assert_array_equal(host(v), before[k], err_msg=k)
        assert b.flat.shape == (split.n_params + 3,)
        off = 0
        for k, p in split.params.items():
            np.testing.assert_array_equal(host(b.flat[off:off + p.size]).reshape(p.shape),
                                          host(split.grads[k]), err_msg=k)
            off += p.size
        b.update()
        y_hat = eager.forward(x[rows], row_offset=7)
        value, dJdy = e_loss(y_hat, y[rows])
        eager.backward(dJdy, need_dx=False)
        e_opt.step()
    assert s_opt.steps == w_opt.steps == 4 and split.dropout_step == whole.dropout_step
    _assert_same(whole, split, backend.name)
    _assert_same(eager, split, backend.name)
    with pytest.raises(ConfigError, match="split step"):
        a.update()
    fresh = StaticStep(split, s_loss, s_opt, BATCH, split=True)
    with pytest.raises(ConfigError, match="needs the step's call first"):
        fresh.update()


def test_labels_rows_and_dtypes_the_step_is_given_are_checked_or_converted(backend):
    """Labels of another integer dtype are converted (the same step as with int64); labels
    outside the classes are the loss's ConfigError (unless it does not check them); rows past
    x are a ShapeError on NumPy; none of these moves the weights."""
    model, opt, loss, x, y = _setup(backend.name, "sgd", "ce")
    twin, t_opt, t_loss, _, _ = _setup(backend.name, "sgd", "ce")
    rows = _batches(1)[0]
    a, b = StaticStep(model, loss, opt, BATCH), StaticStep(twin, t_loss, t_opt, BATCH)
    a(x, y, rows)
    b(x, y.astype(np.int32), rows)
    _assert_same(model, twin, backend.name)
    before = {k: host(v).copy() for k, v in model.params.items()}
    with pytest.raises(ConfigError, match=r"class labels must lie in \[0, 4\] for 5 outputs"):
        a(x, y + 5, rows)
    narrow = StaticStep(twin, t_loss, t_opt, BATCH)  # built on uint8 labels: the labels as
    narrow(x, y.astype(np.uint8), rows)              # given are checked, before a cast wraps
    for wraps in (y + 256, y - 256):
        with pytest.raises(ConfigError, match="got labels from"):
            narrow(x, wraps, rows)
    with pytest.raises(ConfigError, match="integer labels, got float64"):
        narrow(x, y.astype(np.float64) + 0.5, rows)
    if backend.name == "numpy":
        with pytest.raises(ShapeError, match=f"rows pick past the {N} rows of x"):
            a(x, y, np.r_[rows[:-1], N + 3])
    for k, v in model.params.items():
        np.testing.assert_array_equal(host(v), before[k], err_msg=k)
    assert opt.steps == 1


def _random_norm_params(model, seed=4):
    """gamma and beta away from 1 and 0, the same for every model of one seed."""
    rng = np.random.default_rng(seed)
    for k in model.params:
        if k.startswith(("gamma", "beta")):
            model.params[k] = model.backend.asarray(
                rng.uniform(0.5, 1.5, model.params[k].shape) if k.startswith("gamma")
                else rng.normal(0, 0.3, model.params[k].shape), dtype=model.dtype)


@pytest.mark.parametrize("opt", ["momentum", "adam"])
@pytest.mark.parametrize("loss, act, out, slope", [
    ("ce", "relu", "identity", 0.01), ("mse", "tanh", "sigmoid", 0.01),
    ("ce", "identity", "identity", 0.01), ("mse", "leaky_relu", "identity", -0.3),
    ("ce", "gelu", "identity", 0.01), ("mse", "silu", "identity", 0.01),
])
@pytest.mark.parametrize("drop, weighted", [(0.0, False), (0.25, True)])
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_static_steps_with_a_norm_equal_eager_steps(backend, dtype, opt, loss, act, out,
                                                    slope, drop, weighted, norm):
    """norm="layer" or "batch": the static step normalises in place over z and keeps xhat
    and rstd; its weights, gamma and beta (and a batch norm's running statistics, moved in
    the step) follow the eager steps' (to the bit on the CPU), with dropout and sample
    weights too."""
    kw = {"norm": norm, "slope": slope, "dropout": drop}
    name = np.dtype(dtype).name
    eager, e_opt, e_loss, x, y = _setup(backend.name, opt, loss, act, out, name, **kw)
    static, s_opt, s_loss, _, _ = _setup(backend.name, opt, loss, act, out, name, **kw)
    _random_norm_params(eager)
    _random_norm_params(static)
    w = backend.asarray(np.random.default_rng(5).uniform(0.1, 2.0, N), dtype=name) \
        if weighted else None
    step = StaticStep(static, s_loss, s_opt, BATCH, weighted=weighted)
    for rows in _batches(5):
        idx = eager.backend.asarray(rows)
        ref = eager.train_step(x[idx], y[idx], e_loss, e_opt,
                               weight=None if w is None else w[idx])
        got, _ = step(x, y, idx, w)
        np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
    assert {"gamma1", "beta1", "gamma2", "beta2"} <= set(static.params)
    _assert_same(eager, static, backend.name)
    assert set(static.buffers) == ({"running_mean1", "running_var1", "running_mean2",
                                    "running_var2"} if norm == "batch" else set())
    for k in static.buffers:
        if backend.name == "numpy":
            np.testing.assert_array_equal(host(static.buffers[k]), host(eager.buffers[k]), k)
        else:
            np.testing.assert_allclose(host(static.buffers[k]), host(eager.buffers[k]),
                                       rtol=1e-6, atol=1e-7, err_msg=k)
    for k, g in eager.grads.items():
        np.testing.assert_allclose(host(static.grads[k]), host(g), rtol=1e-5, atol=1e-6,
                                   err_msg=k)


@pytest.mark.parametrize("slope", [0.0, 0.2, -0.3])
def test_leaky_relu_of_any_slope(backend, slope):
    """y = f(z) overwrites z unless f'(z) cannot be read off y (a negative slope)."""
    runs = []
    for static in (False, True):
        model = gn.MLP(SIZES, activation="leaky_relu", backend=backend.name, seed=2, slope=slope)
        opt = gn.SGD(model, lr=0.05, momentum=0.5)
        _, _, loss, x, y = _setup(backend.name, "sgd", "mse")
        step = StaticStep(model, loss, opt, BATCH) if static else None
        for rows in _batches(4):
            idx = model.backend.asarray(rows)
            if static:
                step(x, y, idx)
            else:
                model.train_step(x[idx], y[idx], loss, opt)
        runs.append(model)
    _assert_same(runs[0], runs[1], backend.name)


def test_the_correct_count_is_that_of_the_batch_before_the_update(backend):
    model, opt, loss, x, y = _setup(backend.name, "adam", "ce")
    step = StaticStep(model, loss, opt, BATCH, count_correct=True)
    for rows in _batches(4):
        before = host(model.forward(host(x)[rows], cache=False)).argmax(axis=1)
        _, correct = step(x, y, model.backend.asarray(rows))
        assert int(correct) == int((before == host(y)[rows]).sum())


def test_learning_rate_changes_and_eager_steps_in_between(backend):
    """A schedule's new rate reaches the replayed step; eager steps (a ragged last batch) and
    static steps share the parameters, the optimiser state and its step count."""
    eager, e_opt, e_loss, x, y = _setup(backend.name, "adam", "ce")
    static, s_opt, s_loss, _, _ = _setup(backend.name, "adam", "ce")
    step = StaticStep(static, s_loss, s_opt, BATCH)
    b = eager.backend
    for i, rows in enumerate(_batches(8)):
        e_opt.lr = s_opt.lr = 1e-2 * 0.5 ** (i // 2)
        idx = b.asarray(rows)
        eager.train_step(x[idx], y[idx], e_loss, e_opt)
        step(x, y, idx)
        if i % 3 == 2:
            small = b.asarray(rows[:7])
            static.train_step(x[small], y[small], s_loss, s_opt)
            eager.train_step(x[small], y[small], e_loss, e_opt)
    assert e_opt.steps == s_opt.steps == 10
    _assert_same(eager, static, backend.name)


def test_replaced_parameters_are_picked_up(backend):
    """model.params["W1"] = new array (the course autograder does it): the step rebuilds."""
    eager, e_opt, e_loss, x, y = _setup(backend.name, "sgd", "mse")
    static, s_opt, s_loss, _, _ = _setup(backend.name, "sgd", "mse")
    step = StaticStep(static, s_loss, s_opt, BATCH)
    b = eager.backend
    rng = np.random.default_rng(3)
    for i, rows in enumerate(_batches(5)):
        if i == 2:
            w = (0.1 * rng.standard_normal(eager.params["W2"].shape)).astype(np.float32)
            eager.params["W2"] = b.asarray(w.copy())  # two arrays: numpy's asarray does not copy
            static.params["W2"] = b.asarray(w.copy())
        idx = b.asarray(rows)
        eager.train_step(x[idx], y[idx], e_loss, e_opt)
        step(x, y, idx)
    _assert_same(eager, static, backend.name)


def test_capture_failure_falls_back_to_eager_with_one_notice(monkeypatch, caplog):
    eager, e_opt, e_loss, x, y = _setup("numpy", "momentum", "ce")
    static, s_opt, s_loss, _, _ = _setup("numpy", "momentum", "ce")

    def refuse(fn):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(static.backend, "capture", refuse)
    step = StaticStep(static, s_loss, s_opt, BATCH)
    for rows in _batches(4):
        eager.train_step(x[rows], y[rows], e_loss, e_opt)
        step(x, y, rows)
    err = said(caplog)
    assert err.count("CUDA graph capture failed") == 1
    assert "RuntimeError: operation not permitted when stream is capturing" in err
    assert "more detail" not in err
    assert not step.captured and not step.graph
    _assert_same(eager, static, "numpy")


@pytest.mark.parametrize("kwargs, loss, why", [
    (dict(output="softmax"), gn.MSELoss(), "softmax output is row-wise"),
    (dict(output="sigmoid"), gn.CrossEntropyLoss(), "cross_entropy needs the identity output"),
])
def test_what_does_not_fit_is_named(kwargs, loss, why):
    model = gn.MLP([4, 3, 2], **kwargs)
    opt = gn.SGD(model, lr=0.1)
    assert why in StaticStep.unsupported(model, loss, opt)
    with pytest.raises(ConfigError, match=why):
        StaticStep(model, loss, opt, 8)


def test_subclasses_step_eagerly():
    """A graph replays no Python: a loss or optimiser subclass's own code would be skipped."""

    class Noisy(gn.MSELoss):
        def __call__(self, y_hat, y):
            return super().__call__(y_hat, y)

    class Slow(gn.SGD):
        pass

    model = gn.MLP([4, 3, 2])
    assert "Noisy is not one of gpunet's own losses" in StaticStep.unsupported(
        model, Noisy(), gn.SGD(model, lr=1))
    assert "Slow is not gpunet's SGD, Adam or AdamW" in StaticStep.unsupported(
        model, gn.MSELoss(), Slow(model, lr=1))


def test_an_optimizer_of_another_model_is_refused():
    model, other = gn.MLP([4, 3, 2]), gn.MLP([4, 3, 2])
    assert "another model" in StaticStep.unsupported(model, gn.MSELoss(), gn.SGD(other, lr=1))


def test_targets_of_the_wrong_form_are_refused():
    model, opt, loss, x, y = _setup("numpy", "sgd", "mse")
    with pytest.raises(ShapeError, match=r"targets shaped \(100,\) do not match 5 outputs"):
        StaticStep(model, loss, opt, BATCH)(x, y[:, 0], np.arange(BATCH))
    model, opt, loss, x, y = _setup("numpy", "sgd", "ce")
    with pytest.raises(ConfigError, match="integer labels"):
        StaticStep(model, loss, opt, BATCH)(x, y.astype(np.float32), np.arange(BATCH))


def test_a_batch_of_another_size_is_refused():
    model, opt, loss, x, y = _setup("numpy", "sgd", "ce")
    step = StaticStep(model, loss, opt, BATCH)
    with pytest.raises(ShapeError, match=f"batches of {BATCH} rows, got 7"):
        step(x, y, np.arange(7))
    with pytest.raises(ShapeError, match=f"batches of {BATCH} rows, got {N}"):
        step(x, y)


@pytest.mark.parametrize("name, loss, ragged", [
    ("wine", gn.CrossEntropyLoss, True), ("sine", gn.MSELoss, True),
    ("wine", gn.CrossEntropyLoss, False), ("breast_cancer", gn.BCEWithLogitsLoss, True),
])
def test_fit_with_and_without_graphs_trains_the_same(backend, name, loss, ragged, monkeypatch):
    calls = []
    inner = StaticStep.__call__
    monkeypatch.setattr(StaticStep, "__call__",
                        lambda self, *a, **k: calls.append(1) or inner(self, *a, **k))
    spec = DataSpec(name, seed=2, val_fraction=0.2, test_fraction=0.2)
    data = load_data(spec)
    n_train = len(data.x_train)
    batch = 16 if ragged else next(b for b in range(16, 0, -1) if n_train % b == 0)
    assert (n_train % batch != 0) == ragged
    runs = []
    for graph in (True, False):
        model = gn.MLP([data.n_features, 16, data.n_classes if loss is gn.CrossEntropyLoss
                        else 1], backend=backend.name, seed=5)
        opt = gn.SGD(model, lr=0.05, momentum=0.9)
        h = fit(model, data, loss(), opt, epochs=3, batch_size=batch, seed=3, progress=False,
                graph=graph)
        runs.append((model, h))
    (a, ha), (b, hb) = runs
    assert len(calls) == 3 * (n_train // batch)  # every full batch, and only with graph=True
    _assert_same(a, b, backend.name)
    for ra, rb in zip(ha, hb):
        for k in ra:
            if k != "seconds":
                assert ra[k] == pytest.approx(rb[k], rel=1e-6), k


class _EagerThreshold(NumpyBackend):
    """A CPU backend that, like the CuPy one, keeps small arrays off the kernels in eager ops
    (there a launch costs more host time than the work) but not in static steps."""
    kernel_min_size = 1 << 30
    static_kernel_min_size = 0


def _kernel_calls(backend, monkeypatch):
    calls = []
    run = backend._run

    def spy(op, *args, **kw):
        calls.append(op)
        return run(op, *args, **kw)

    monkeypatch.setattr(backend, "_run", spy)
    return calls


@pytest.mark.parametrize("opt, loss, act", [("adam", "ce", "relu"), ("momentum", "mse", "tanh")])
def test_static_steps_take_the_fused_kernels_at_every_size(monkeypatch, opt, loss, act):
    backend = _EagerThreshold()
    calls = _kernel_calls(backend, monkeypatch)
    eager, e_opt, e_loss, x, y = _setup(backend, opt, loss, act, dtype="float64")
    static, s_opt, s_loss, _, _ = _setup(backend, opt, loss, act, dtype="float64")
    step = StaticStep(static, s_loss, s_opt, BATCH)
    for rows in _batches(5):
        eager.train_step(x[rows], y[rows], e_loss, e_opt)
        assert calls == []  # eager ops of 24-row batches stay on the array-module ops
        step(x, y, rows)
        assert "bias_act_forward" in calls and "act_backward" in calls
        assert ("softmax_cross_entropy" in calls) == (loss == "ce")
        assert backend.kernel_min_size == 1 << 30 and "kernel_min_size" not in vars(backend)
        calls.clear()
    for k in eager.params:  # other kernels, the same math: equal to float64 rounding
        np.testing.assert_allclose(static.params[k], eager.params[k], rtol=1e-12, atol=1e-14)


def test_the_static_kernel_threshold_can_be_set_from_the_environment(monkeypatch):
    backend = _EagerThreshold()
    backend.kernel_min_size = 7  # an instance's own threshold is put back as it was
    calls = _kernel_calls(backend, monkeypatch)
    monkeypatch.setenv("GPUNET_STATIC_KERNEL_MIN_SIZE", str(10**6))  # above every array
    model, opt, loss, x, y = _setup(backend, "sgd", "ce")
    StaticStep(model, loss, opt, BATCH)(x, y, _batches(1)[0])
    assert calls == [] and backend.kernel_min_size == 7


def test_the_environment_threshold_leaves_the_cpu_static_step_equal_to_the_eager_one(
        monkeypatch):
    """On numpy the static step takes the kernels from the eager step's size (its numbers to
    the bit); GPUNET_STATIC_KERNEL_MIN_SIZE, a GPU comparison, is not read there."""
    from gpunet.backends import get_backend

    backend = get_backend("numpy")
    monkeypatch.setenv("GPUNET_STATIC_KERNEL_MIN_SIZE", "1")
    with backend.static_kernels():
        assert backend.min_size() == NumpyBackend.kernel_min_size == 1 << 16
    assert "kernel_min_size" not in vars(backend)


def _roots(arrays):
    return {id(a if a.base is None else a.base) for a in arrays}


@pytest.mark.parametrize("loss, act, out, top_in_place, scratches", [
    ("ce", "relu", "identity", True, 1),       # dJ/dlogits over the logits, one scratch
    ("mse", "tanh", "identity", True, 1),      # y_hat - y over y_hat
    ("mse", "relu", "sigmoid", False, 1),      # sigmoid'(z) reads y_hat: its own buffer
    ("ce", "identity", "identity", True, 2),   # identity hidden layers: dJ/dz is dJ/dy
])
def test_the_step_keeps_one_scratch_buffer_where_it_can(loss, act, out, top_in_place, scratches):
    model, opt, loss_fn, x, y = _setup("numpy", "sgd", loss, act, out)
    step = StaticStep(model, loss_fn, opt, BATCH)
    step(x, y, _batches(1)[0])
    assert (step.g[-1] is step.a[-1]) == top_in_place
    hidden = _roots(step.g[:-1])
    assert len(hidden) == scratches
    assert not hidden & _roots(step.a + step.z)  # scratch never aliases a layer's buffer
    for i in range(len(step.g) - 1):  # dJ/dy of layer i never overwrites dJ/dz above it
        above = step.g[i + 1] if model.layers[2 * i + 3].name == "identity" else step.z[i + 1]
        assert not np.shares_memory(step.g[i], above)


def test_counting_correct_predictions_needs_cross_entropy():
    model, opt, loss_fn, _, _ = _setup("numpy", "sgd", "mse")
    with pytest.raises(ConfigError, match="count_correct.*cross_entropy"):
        StaticStep(model, loss_fn, opt, BATCH, count_correct=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt, loss, act, out", [
    ("adam", "ce", "relu", "identity"), ("momentum", "mse", "leaky_relu", "tanh"),
    ("adamw", "mse", "sigmoid", "sigmoid"), ("sgd", "ce", "tanh", "identity"),
    ("adam", "smooth", "tanh", "identity"), ("sgd", "bce_logits", "relu", "identity"),
    ("momentum", "bce", "leaky_relu", "sigmoid"),
])
def test_static_steps_equal_eager_steps_on_the_fused_kernels(monkeypatch, dtype, opt, loss, act,
                                                              out):
    """As above with the CPU kernels at every size (the shared numpy backend keeps arrays under
    2^16 elements on NumPy's ops; the losses use that shared backend too)."""
    monkeypatch.setattr(NumpyBackend, "kernel_min_size", 0)
    monkeypatch.setattr(NumpyBackend, "static_kernel_min_size", 0)
    backend = gn.get_backend("numpy")
    calls = _kernel_calls(backend, monkeypatch)
    eager, e_opt, e_loss, x, y = _setup("numpy", opt, loss, act, out, dtype)
    static, s_opt, s_loss, _, _ = _setup("numpy", opt, loss, act, out, dtype)
    step = StaticStep(static, s_loss, s_opt, BATCH)
    for rows in _batches(5):
        eager.train_step(x[rows], y[rows], e_loss, e_opt)
        step(x, y, rows)
    update = "adam_update" if opt.startswith("adam") else "sgd_update"
    assert {"bias_act_forward", "act_backward", update} <= set(calls)
    _assert_same(eager, static, "numpy")  # the same kernels in the same order: the same bits


# -- sample weights -------------------------------------------------------------------------------

def _weights(dtype, seed=11):
    w = np.random.default_rng(seed).uniform(0.0, 2.5, N).astype(dtype)
    w[::9] = 0.0
    return w


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("opt, loss, act, out", [
    ("adam", "ce", "relu", "identity"), ("momentum", "mse", "tanh", "identity"),
    ("sgd", "mse", "leaky_relu", "sigmoid"), ("adamw", "ce", "identity", "identity"),
    ("adam", "huber", "gelu", "identity"), ("adam", "smooth", "relu", "identity"),
    ("sgd", "bce_logits", "tanh", "identity"), ("momentum", "bce", "relu", "sigmoid"),
])
def test_weighted_static_steps_equal_eager_weighted_steps(backend, dtype, opt, loss, act, out,
                                                          reduction):
    """The step scales each row as loss(y_hat, y, weight=w) does, with the same operations: the
    same bits on the CPU. One batch has weights that are all 0 (a zero gradient)."""
    dtype = np.dtype(dtype).name
    eager, e_opt, e_loss, x, y = _setup(backend.name, opt, loss, act, out, dtype)
    static, s_opt, s_loss, _, _ = _setup(backend.name, opt, loss, act, out, dtype)
    e_loss.reduction = s_loss.reduction = reduction
    w_host = _weights(dtype)
    batches = _batches(5)
    w_host[batches[2]] = 0.0
    w = eager.backend.asarray(w_host)
    step = StaticStep(static, s_loss, s_opt, BATCH, weighted=True)
    for rows in batches:
        idx = eager.backend.asarray(rows)
        ref = eager.train_step(x[idx], y[idx], e_loss, e_opt, weight=w[idx])
        got, _ = step(x, y, idx, w)
        if backend.name == "numpy":
            assert float(got) == float(ref)
        else:
            np.testing.assert_allclose(float(got), float(ref), rtol=1e-5)
    _assert_same(eager, static, backend.name)
    assert step.captured == (backend.name == "cupy")


def test_weighted_static_steps_on_the_fused_kernels(monkeypatch):
    monkeypatch.setattr(NumpyBackend, "kernel_min_size", 0)
    monkeypatch.setattr(NumpyBackend, "static_kernel_min_size", 0)
    for loss in ("ce", "mse"):
        eager, e_opt, e_loss, x, y = _setup("numpy", "adam", loss, "relu", "identity")
        static, s_opt, s_loss, _, _ = _setup("numpy", "adam", loss, "relu", "identity")
        w = _weights("float32")
        step = StaticStep(static, s_loss, s_opt, BATCH, weighted=True)
        for rows in _batches(4):
            eager.train_step(x[rows], y[rows], e_loss, e_opt, weight=w[rows])
            step(x, y, rows, w)
        _assert_same(eager, static, "numpy")


def test_weights_of_another_dtype_are_cast_to_the_step():
    eager, e_opt, e_loss, x, y = _setup("numpy", "sgd", "ce")
    static, s_opt, s_loss, _, _ = _setup("numpy", "sgd", "ce")
    w = _weights("float64")  # a float32 model
    step = StaticStep(static, s_loss, s_opt, BATCH, weighted=True)
    for rows in _batches(2):
        eager.train_step(x[rows], y[rows], e_loss, e_opt, weight=w[rows].astype(np.float32))
        step(x, y, rows, w)
    _assert_same(eager, static, "numpy")


def test_weights_go_with_a_weighted_step_only():
    model, opt, loss_fn, x, y = _setup("numpy", "sgd", "ce")
    rows = _batches(1)[0]
    with pytest.raises(ConfigError, match="built with weighted=True: pass the rows' weights"):
        StaticStep(model, loss_fn, opt, BATCH, weighted=True)(x, y, rows)
    with pytest.raises(ConfigError, match="built without weights"):
        StaticStep(model, loss_fn, opt, BATCH)(x, y, rows, np.ones(N, dtype=np.float32))


def test_weights_inputs_and_rows_are_checked_as_the_eager_step_checks_them():
    """Negative, NaN or too few weights, inputs of the wrong width and float rows: the eager
    step's errors, before the weights move; inputs of another float dtype are converted (the
    same step as with the model's)."""
    model, opt, loss_fn, x, y = _setup("numpy", "sgd", "ce")  # float32
    twin, t_opt, t_loss, _, _ = _setup("numpy", "sgd", "ce")
    rows = _batches(1)[0]
    step = StaticStep(model, loss_fn, opt, BATCH, weighted=True)
    before = {k: host(v).copy() for k, v in model.params.items()}
    w = _weights("float32")
    for bad, error, match in ((np.where(np.arange(N) == 3, -3.0, w), ConfigError,
                               "sample weights must be finite numbers >= 0, got -3"),
                              (np.where(np.arange(N) == 5, np.nan, w), ConfigError,
                               "must be finite numbers >= 0, got nan"),
                              (w[:-1], ShapeError, f"do not match the {N} rows of x"),
                              (w.astype(np.complex64), ConfigError, "must be real numbers")):
        with pytest.raises(error, match=match):
            step(x, y, rows, bad)
    big = np.full(N, np.finfo(np.float32).max / 2, dtype=np.float64)
    with pytest.raises(ConfigError, match="sample weights summing to .* overflow float32"):
        step(x, y, rows, big)
    with pytest.raises(ShapeError, match=r"expects inputs shaped \(batch, \d+\), got"):
        step(x[:, :-1], y, rows, w)
    for bad in (x.astype(np.complex64), x.astype(str)):
        with pytest.raises(ConfigError, match="inputs must be real numbers"):
            step(bad, y, rows, w)
    with pytest.raises(ConfigError, match="rows must be integer indices, got dtype float64"):
        step(x, y, rows.astype(np.float64), w)
    with pytest.raises(ConfigError, match="rows must be integer indices, got dtype float64"):
        step(x, y, [float(r) for r in rows], w)
    for k, v in model.params.items():
        np.testing.assert_array_equal(host(v), before[k], err_msg=k)
    step(x.astype(np.float64), y, rows, w)  # converted to the model's float32
    step(x, y, [int(r) for r in _batches(2)[1]], list(w))  # lists, as the eager loss takes
    other = StaticStep(twin, t_loss, t_opt, BATCH, weighted=True)
    other(x, y, rows, w)
    other(x, y, _batches(2)[1], w)
    _assert_same(model, twin, "numpy")


def test_host_data_on_a_device_backend_goes_over_a_batch_at_a_time(monkeypatch):
    """Where x, y and w are host arrays on a device backend (CuPy), only the batch's rows go
    to the device (picked on the host), and the step is the one on device arrays; rows past x
    given on the host are refused there (CuPy's take would wrap them around). Emulated on
    NumPy: the backend told that the given arrays are not its own."""
    model, opt, loss_fn, x, y = _setup("numpy", "sgd", "ce")
    twin, t_opt, t_loss, _, _ = _setup("numpy", "sgd", "ce")
    w = _weights("float32")
    step = StaticStep(model, loss_fn, opt, BATCH, weighted=True)
    host = {id(x), id(y), id(w)}
    backend = model.backend
    moved = []
    inner = backend.asarray
    monkeypatch.setattr(backend, "owns", lambda a: id(a) not in host)
    monkeypatch.setattr(backend, "asarray",
                        lambda a, dtype=None: moved.append(np.shape(a)) or inner(a, dtype))
    batches = _batches(2)
    for rows in batches:
        step(x, y, rows, w)
    assert {s[0] for s in moved if len(s)} == {BATCH}  # (rows, and each array's batch)
    with pytest.raises(ShapeError, match=f"rows pick past the {N} rows of x: row {N + 3}"):
        step(x, y, np.r_[batches[0][:-1], N + 3], w)
    with pytest.raises(ShapeError, match=f"rows pick past the {N} rows of x: row {-N - 1}"):
        step(x, y, np.r_[batches[0][:-1], -N - 1], w)  # (-N..-1: NumPy's, and CuPy's, rows)
    monkeypatch.undo()
    other = StaticStep(twin, t_loss, t_opt, BATCH, weighted=True)
    for rows in batches:
        other(x, y, rows, w)
    _assert_same(model, twin, "numpy")


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_weighted_fit_with_and_without_graphs_trains_the_same(backend, task, monkeypatch):
    from gpunet.data import make_dataset

    calls = []
    inner = StaticStep.__call__
    monkeypatch.setattr(StaticStep, "__call__",
                        lambda self, *a, **k: calls.append(len(a)) or inner(self, *a, **k))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((150, 6))
    y = (x[:, 0] > 0.3).astype(int) + (x[:, 1] > 0) if task == "classification" \
        else x[:, :2] @ [1.0, -2.0] + 0.1 * rng.standard_normal(150)
    data = make_dataset("w", x, y, task, seed=1, val_fraction=0.2,
                        sample_weight=rng.uniform(0, 3, 150))
    runs = []
    for graph in (True, False):
        model = gn.MLP([6, 12, 3 if task == "classification" else 1], backend=backend.name,
                       seed=5)
        loss = gn.CrossEntropyLoss() if task == "classification" else gn.MSELoss()
        h = fit(model, data, loss, gn.Adam(model, lr=0.01), epochs=3, batch_size=16, seed=3,
                progress=False, graph=graph)
        runs.append((model, h))
    (a, ha), (b, hb) = runs
    n_train = len(data.x_train)
    assert n_train % 16 != 0 and calls == [4] * (3 * (n_train // 16))  # with the weights
    _assert_same(a, b, backend.name)
    for ra, rb in zip(ha, hb):
        for k in ra:
            if k != "seconds":
                assert ra[k] == pytest.approx(rb[k], rel=1e-6), k


# -- dropout --------------------------------------------------------------------------------------

@pytest.mark.parametrize("opt, loss, act, out", [
    ("adam", "ce", "relu", "identity"), ("momentum", "mse", "tanh", "identity"),
    ("sgd", "mse", "leaky_relu", "sigmoid"), ("adamw", "ce", "identity", "identity"),
])
def test_static_steps_with_dropout_equal_eager_steps(backend, dtype, opt, loss, act, out):
    """The step draws the eager step's masks (same counter, same hash): the same bits on the
    CPU. An eager step in between (as fit's ragged last batch) moves the counter, which the
    next static step picks up."""
    dtype = np.dtype(dtype).name

    def make():
        model, o, lf, x, y = _setup(backend.name, opt, loss, act, out, dtype)
        model.dropout = 0.3
        return model, o, lf, x, y

    eager, e_opt, e_loss, x, y = make()
    static, s_opt, s_loss, _, _ = make()
    step = StaticStep(static, s_loss, s_opt, BATCH)
    for k, rows in enumerate(_batches(6)):
        idx = eager.backend.asarray(rows)
        ref = eager.train_step(x[idx], y[idx], e_loss, e_opt)
        if k == 3:  # an eager step of the static model
            got = static.train_step(x[idx], y[idx], s_loss, s_opt)
        else:
            got, _ = step(x, y, idx)
        np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
    assert static.dropout_step == eager.dropout_step == 6
    _assert_same(eager, static, backend.name)
    assert step.captured == (backend.name == "cupy")


def test_dropout_fit_with_and_without_graphs_trains_the_same(backend):
    spec = DataSpec("wine", seed=2, val_fraction=0.2, test_fraction=0.2)
    data = load_data(spec)
    runs = []
    for graph in (True, False):
        model = gn.MLP([data.n_features, 16, 12, data.n_classes], backend=backend.name, seed=5,
                       dropout=0.25)
        h = fit(model, data, gn.CrossEntropyLoss(), gn.Adam(model, lr=0.01), epochs=3,
                batch_size=16, seed=3, progress=False, graph=graph)
        runs.append((model, h))
    (a, ha), (b, hb) = runs
    _assert_same(a, b, backend.name)
    assert a.dropout_step == b.dropout_step == 3 * -(-len(data.x_train) // 16)
    for ra, rb in zip(ha, hb):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-6)


def test_weights_whose_total_overflows_but_no_batchs_do_train_as_the_eager_step_does():
    """The eager loss checks each batch's sum of weights; so does the static step, not the sum
    over all the rows (1e37 each: 1e39 over x, 2.4e38 a batch of 24, under float32's max)."""
    w = np.full(N, 1e37)
    w[::7] *= 1.2
    model, opt, loss_fn, x, y = _setup("numpy", "sgd", "ce")
    twin, t_opt, t_loss, _, _ = _setup("numpy", "sgd", "ce")
    step = StaticStep(model, loss_fn, opt, BATCH, weighted=True)
    for rows in _batches(3):
        value, _ = step(x, y, rows, w)
        t_value, dJdy = t_loss(twin.forward(x[rows]), y[rows], weight=w[rows])
        twin.backward(dJdy, need_dx=False)
        t_opt.step()
        assert float(value) == float(t_value)
    for k in model.params:
        np.testing.assert_array_equal(host(model.params[k]), host(twin.params[k]), err_msg=k)


def test_the_refusal_of_a_softmax_output_gives_advice_that_works():
    """StaticStep refused a softmax output saying "train it with cross_entropy", which it
    refuses too (cross_entropy takes logits): the advice names the identity output."""
    m = gn.MLP([3, 4, 3], output="softmax", seed=0)
    with pytest.raises(gn.ConfigError, match="output='identity' and train it with cross_entropy"):
        StaticStep(m, gn.MSELoss(), gn.SGD(m), 4)
    m = gn.MLP([3, 4, 3], seed=0)  # what it says to do
    step = StaticStep(m, gn.CrossEntropyLoss(), gn.SGD(m), 4)
    x = np.random.default_rng(0).standard_normal((4, 3))
    loss, _ = step(x, np.array([0, 1, 2, 1]), np.arange(4))
    assert np.isfinite(float(loss))


def _step_both(eager, e_loss, e_opt, step, x, y, rows):
    """One eager train_step and one static step on the same rows; their losses agree."""
    idx = eager.backend.asarray(rows)
    ref = eager.train_step(x[idx], y[idx], e_loss, e_opt)
    got, _ = step(x, y, idx)
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-12)


def _assert_close_float64(a, b):
    for k in a.params:
        np.testing.assert_allclose(host(b.params[k]), host(a.params[k]), rtol=1e-10,
                                   atol=1e-13, err_msg=k)


@pytest.mark.parametrize("opt, loss, change", [
    ("sgd", "ce", lambda o, f: setattr(o, "clip_norm", 0.01)),
    ("momentum", "mse", lambda o, f: setattr(o, "weight_decay", 0.1)),
    ("momentum", "mse", lambda o, f: (setattr(o, "momentum", 0.5), setattr(o, "nesterov", False))),
    ("adam", "ce", lambda o, f: setattr(o, "betas", (0.5, 0.9))),
    ("adam", "ce", lambda o, f: setattr(f, "label_smoothing", 0.3)),
    ("sgd", "huber", lambda o, f: setattr(f, "delta", 2.0)),
    ("adamw", "mse", lambda o, f: setattr(f, "reduction", "sum")),
], ids=["clip_norm", "weight_decay", "momentum", "betas", "label_smoothing", "delta",
        "reduction"])
def test_a_setting_changed_between_static_steps_is_applied_as_by_the_eager_step(
        backend, opt, loss, change):
    """A captured step replayed the settings it was captured with (clip_norm set later never
    clipped on the GPU), and turning label smoothing on after the first call raised
    AttributeError on the CPU: a changed setting makes the next call rebuild the step."""
    eager, e_opt, e_loss, x, y = _setup(backend.name, opt, loss, dtype="float64")
    static, s_opt, s_loss, _, _ = _setup(backend.name, opt, loss, dtype="float64")
    step = StaticStep(static, s_loss, s_opt, BATCH)
    for i, rows in enumerate(_batches(6)):
        if i == 3:
            change(e_opt, e_loss)
            change(s_opt, s_loss)
        _step_both(eager, e_loss, e_opt, step, x, y, rows)
    _assert_close_float64(eager, static)
    if e_opt.grad_norm is not None:
        np.testing.assert_allclose(float(s_opt.grad_norm), float(e_opt.grad_norm), rtol=1e-12)


def test_a_layers_setting_or_a_replaced_loss_rebuilds_the_static_step(backend):
    """The step reads each layer's own slope and eps, not the model's: a layer's slope
    changed after the first call trained on the old one (0.06 off the eager step), and a
    loss or optimiser put in the step's place crashed (AttributeError) or, captured, would
    replay the old one."""
    eager, e_opt, e_loss, x, y = _setup(backend.name, "sgd", "ce", act="leaky_relu",
                                        dtype="float64", norm="layer")
    static, s_opt, s_loss, _, _ = _setup(backend.name, "sgd", "ce", act="leaky_relu",
                                         dtype="float64", norm="layer")
    step = StaticStep(static, s_loss, s_opt, BATCH)
    for i, rows in enumerate(_batches(8)):
        if i == 2:
            for model in (eager, static):
                for _, norm, act in model.blocks()[:-1]:
                    act.slope, norm.eps = -0.5, 1e-3
        if i == 5:
            e_loss = gn.CrossEntropyLoss(label_smoothing=0.2)
            step.loss_fn = gn.CrossEntropyLoss(label_smoothing=0.2)
        _step_both(eager, e_loss, e_opt, step, x, y, rows)
    _assert_close_float64(eager, static)
