"""Property tests (Hypothesis) for the MLP, the losses and the optimisers.

Valid input, drawn over layer widths, depths, dtypes, batch sizes, activations and every output
activation x loss pairing that `gpunet gradcheck` checks, never crashes and gives outputs and
gradients of the right shape and dtype, finite for finite moderate inputs; float64 gradients
match finite differences; invalid input raises the documented GpunetError subclass (ConfigError,
ShapeError, DataError), never a bare NumPy/Python error and never a silent NaN.

Every test runs a fixed, derandomised set of examples without an example database, so CI sees
the same cases on every run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpunet as gn
from gpunet.data import check_labels, make_dataset
from gpunet.train import fit


def examples(n: int):
    """Hypothesis settings: ``n`` derandomised examples, no deadline, no database."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


#: (output activation, loss, target kind) as gpunet.gradcheck.combinations() pairs them
PAIRINGS = sorted({(g, loss, kind) for _, g, loss, kind in gn.gradcheck_combinations()})
LOSS_CLASSES = {"mse": gn.MSELoss, "mse_sum": gn.MSELoss, "huber": gn.HuberLoss,
                "bce": gn.BCELoss, "bce_logits": gn.BCEWithLogitsLoss,
                "cross_entropy": gn.CrossEntropyLoss}
ELEMENTWISE_LOSSES = [gn.MSELoss, gn.HuberLoss, gn.BCELoss, gn.BCEWithLogitsLoss]
ALL_LOSSES = [*ELEMENTWISE_LOSSES, gn.CrossEntropyLoss]
KINKED = ("relu", "leaky_relu")  # not differentiable at 0
TOL = {"float32": 1e-5, "float64": 1e-12}


def make_loss(loss: str, reduction: str) -> gn.Loss:
    return LOSS_CLASSES[loss](reduction="sum" if loss == "mse_sum" else reduction)


def make_targets(kind: str, rng: np.random.Generator, batch: int, outputs: int) -> np.ndarray:
    if kind == "labels":
        return rng.integers(0, outputs, batch)
    if kind == "probabilities":
        return rng.dirichlet(np.ones(outputs), batch)
    if kind == "unit":  # some exact 0s and 1s, as hard binary targets
        u = rng.uniform(0.0, 1.0, (batch, outputs))
        return np.where(rng.random((batch, outputs)) < 0.3, np.round(u), u)
    return rng.normal(0.0, 3.0, (batch, outputs))


#: batch sizes: 1, odd ones, and larger than a typical mini-batch
BATCHES = st.sampled_from([1, 3, 5, 17, 32, 33, 257, 1000])
PAIRING_IDS = [f"{g}-{loss}-{kind}" for g, loss, kind in PAIRINGS]


@st.composite
def architectures(draw, max_width=9, max_hidden=3, batches=BATCHES):
    """Layer widths, a hidden activation, a reduction and a batch size."""
    hidden = draw(st.lists(st.integers(1, max_width), min_size=1, max_size=max_hidden))
    return {
        "sizes": [draw(st.integers(1, max_width)), *hidden, draw(st.integers(1, max_width))],
        "activation": draw(st.sampled_from(gn.HIDDEN_ACTIVATIONS)),
        "reduction": draw(st.sampled_from(["mean", "sum"])),
        "batch": draw(batches),
    }


def build(p, pairing, dtype, seed, **kw) -> gn.MLP:
    return gn.MLP(p["sizes"], activation=p["activation"], output=pairing[0], backend="numpy",
                  seed=seed, dtype=dtype, **kw)


def assert_array(a, shape, dtype, what):
    assert tuple(a.shape) == tuple(shape), f"{what}: shape {a.shape}, expected {shape}"
    assert a.dtype == np.dtype(dtype), f"{what}: dtype {a.dtype}, expected {dtype}"
    assert np.isfinite(a).all(), f"{what}: not finite"


# -- valid input: shapes, dtypes, finiteness -------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pairing", PAIRINGS, ids=PAIRING_IDS)
@examples(40)
@given(p=architectures(), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([0.0, 1e-3, 1.0, 5.0]),
       x_dtype=st.sampled_from(["float64", "float32", "int64"]),
       optimizer=st.sampled_from(sorted(gn.OPTIMIZERS)))
def test_forward_backward_step_give_right_shapes_dtypes_and_finite_values(
        pairing, dtype, p, seed, scale, x_dtype, optimizer):
    output, loss, kind = pairing
    rng = np.random.default_rng(seed)
    model = build(p, pairing, dtype, seed)
    n_in, n_out, batch = p["sizes"][0], p["sizes"][-1], p["batch"]
    x = rng.uniform(-scale, scale, (batch, n_in))
    x = np.round(x).astype(x_dtype) if x_dtype == "int64" else x.astype(x_dtype)

    y_hat = model.forward(x)
    assert_array(y_hat, (batch, n_out), dtype, "y_hat")
    if output == "sigmoid":
        assert ((y_hat >= 0) & (y_hat <= 1)).all()
    if output == "softmax":
        np.testing.assert_allclose(y_hat.sum(axis=1), 1.0, rtol=TOL[dtype] * 10)

    loss_fn = make_loss(loss, p["reduction"])
    value, dJdy_hat = loss_fn(y_hat, make_targets(kind, rng, batch, n_out))
    assert np.ndim(value) == 0 and math.isfinite(float(value))
    assert_array(dJdy_hat, y_hat.shape, dtype, "dJ/dy_hat")

    dJdx = model.backward(dJdy_hat)
    assert_array(dJdx, x.shape, dtype, "dJ/dx")
    assert model.grads.keys() == model.params.keys()
    for k, g in model.grads.items():
        assert_array(g, model.params[k].shape, dtype, f"grad {k}")

    opt = gn.get_optimizer(optimizer, model, lr=0.01)
    shapes = {k: v.shape for k, v in model.params.items()}
    opt.step()
    for k, v in model.params.items():
        assert_array(v, shapes[k], dtype, f"param {k} after {optimizer}")

    # predict in chunks (no cache) agrees with one forward pass
    full = model.forward(x, cache=False)
    chunked = model.predict(x, batch_size=max(1, batch // 3))
    assert_array(chunked, full.shape, dtype, "predict")
    np.testing.assert_allclose(chunked, full, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


# -- float64 gradients against finite differences --------------------------------------------

@pytest.mark.parametrize("pairing", PAIRINGS, ids=PAIRING_IDS)
@pytest.mark.filterwarnings("ignore:gradcheck. every numeric gradient")  # (a softmax of one
@examples(25)                                                              # output, a dead relu)
@given(p=architectures(max_width=6, batches=st.integers(1, 6)),
       seed=st.integers(0, 2**32 - 1))
def test_float64_gradients_match_finite_differences(pairing, p, seed):
    _, loss, kind = pairing
    rng = np.random.default_rng(seed)
    model = build(p, pairing, "float64", seed, init="xavier_normal")
    for k in model.params:  # biases away from zero too, so no bias gradient is trivially small
        if k.startswith("b"):
            model.params[k] = rng.normal(0.0, 0.5, model.params[k].shape)
    x = rng.normal(size=(p["batch"], p["sizes"][0]))
    y = make_targets(kind, rng, p["batch"], p["sizes"][-1])

    y_hat = model.forward(x)
    for layer in model.layers:  # no pre-activation on a relu kink
        if getattr(layer, "name", None) in KINKED:
            assume(np.abs(layer.z).min() > 1e-4)
    if loss == "huber":  # nor an error on huber's kink, where |y_hat - y| = delta = 1
        assume(np.abs(np.abs(y_hat - y) - 1.0).min() > 1e-4)
    model.clear_cache()

    result = gn.gradcheck(model, make_loss(loss, p["reduction"]), x, y)
    assert set(result.errors) == {*model.params, "x"}
    assert result, f"worst err/tol per tensor: {result.ratios}"


# -- invalid input: the documented error, never a bare one -----------------------------------

SIZES = st.lists(st.integers(1, 9), min_size=2, max_size=4)


@examples(60)
@given(sizes=SIZES, batch=st.integers(0, 5), data=st.data())
def test_inputs_of_the_wrong_shape_raise_shape_error(sizes, batch, data):
    model = gn.MLP(sizes, backend="numpy")
    n_in = sizes[0]
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=10)
                      .filter(lambda s: len(s) != 2 or s[1] != n_in), label="shape")
    x = np.ones(shape)
    with pytest.raises(gn.ShapeError, match=f"expects inputs shaped \\(batch, {n_in}\\)"):
        model.forward(x)
    with pytest.raises(gn.ShapeError):
        model.predict(x)
    if x.ndim:  # a 0-d input in batches: test_predict_in_batches_refuses_a_scalar_input
        with pytest.raises(gn.ShapeError):
            model.predict(x, batch_size=data.draw(st.integers(1, 4), label="batch_size"))


@pytest.mark.parametrize("loss_cls", ELEMENTWISE_LOSSES, ids=lambda c: c.__name__)
@examples(30)
@given(batch=st.integers(1, 6), outputs=st.integers(1, 6),
       reduction=st.sampled_from(["mean", "sum"]), data=st.data())
def test_targets_of_the_wrong_shape_raise_shape_error(loss_cls, batch, outputs, reduction, data):
    """MSE and both BCEs need targets shaped exactly like y_hat: never broadcast."""
    y_hat = np.full((batch, outputs), 0.5)
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7)
                      .filter(lambda s: s != (batch, outputs)), label="target shape")
    with pytest.raises(gn.ShapeError, match="does not match"):
        loss_cls(reduction)(y_hat, np.full(shape, 0.5))


@examples(60)
@given(batch=st.integers(1, 6), classes=st.integers(1, 6), data=st.data())
def test_cross_entropy_targets_of_the_wrong_shape_raise_shape_error(batch, classes, data):
    """Integer labels must be (batch,); float targets (probabilities) must be (batch, classes);
    logits must be 2-D."""
    loss = gn.CrossEntropyLoss()
    logits = np.zeros((batch, classes))
    bad_labels = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7)
                           .filter(lambda s: s != (batch,)), label="label shape")
    with pytest.raises(gn.ShapeError):
        loss(logits, np.zeros(bad_labels, dtype=np.int64))
    bad_probs = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7)
                          .filter(lambda s: s != (batch, classes)), label="probability shape")
    with pytest.raises(gn.ShapeError):
        loss(logits, np.full(bad_probs, 1.0 / classes))
    with pytest.raises(gn.ShapeError):
        loss(np.zeros((batch, classes, 1)), np.zeros(batch, dtype=np.int64))


@examples(80)
@given(batch=st.integers(1, 8), classes=st.integers(1, 8),
       label_dtype=st.sampled_from(["int8", "int16", "int32", "int64", "uint8", "uint64"]),
       data=st.data())
def test_cross_entropy_labels_out_of_range_raise_config_error(batch, classes, label_dtype, data):
    info = np.iinfo(label_dtype)
    bad = data.draw(st.one_of(st.integers(classes, info.max),
                              st.integers(info.min, -1) if info.min < 0 else st.nothing()),
                    label="bad label")
    y = np.asarray(data.draw(st.lists(st.integers(0, classes - 1), min_size=batch,
                                      max_size=batch), label="labels"), dtype=label_dtype)
    y[data.draw(st.integers(0, batch - 1), label="where")] = bad
    with pytest.raises(gn.ConfigError, match=r"class labels must lie in \[0, "):
        gn.CrossEntropyLoss()(np.zeros((batch, classes)), y)


@examples(40)
@given(batch=st.integers(1, 8), classes=st.integers(2, 8), seed=st.integers(0, 2**16))
def test_float_labels_are_not_taken_for_class_indices(batch, classes, seed):
    """CrossEntropyLoss documents integer labels (B,) or float probabilities (B, C): float
    labels shaped (B,) are a shape error, never silently cast to indices; bool labels are
    refused. The data layer documents integer-valued floats as labels and refuses others."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, batch)
    logits = rng.normal(size=(batch, classes))
    with pytest.raises(gn.ShapeError):
        gn.CrossEntropyLoss()(logits, labels.astype(np.float64))
    with pytest.raises(gn.ConfigError, match="integer labels or float probabilities"):
        gn.CrossEntropyLoss()(logits, labels.astype(bool))

    y, n_classes = check_labels(np.r_[labels, 0, 1].astype(np.float64))
    assert y.dtype == np.int64 and n_classes == max(labels.max(), 1) + 1
    fractional = np.r_[labels, 0, 1].astype(np.float64)
    fractional[rng.integers(0, batch)] += rng.uniform(0.01, 0.99)
    with pytest.raises(gn.DataError, match="must be integers"):
        check_labels(fractional)
    negative = np.r_[labels, 0, 1]
    negative[rng.integers(0, batch)] = -int(rng.integers(1, 5))
    with pytest.raises(gn.DataError, match=">= 0"):
        check_labels(negative)


@pytest.mark.parametrize("labels", [[0.5, 1, 0, 1], [0, 1, np.nan, 1], [-1, 0, 1, 1]],
                         ids=["fractional", "nan", "negative"])
def test_dataset_with_bad_class_labels_raises_data_error(labels):
    x = np.arange(8.0).reshape(4, 2)
    with pytest.raises(gn.DataError):
        make_dataset("bad", x, np.array(labels), "classification", test_fraction=0.0)


@examples(60)
@given(sizes=st.lists(st.integers(-5, 9), min_size=2, max_size=5)
       .filter(lambda s: min(s) <= 0))
def test_non_positive_layer_sizes_raise_config_error(sizes):
    with pytest.raises(gn.ConfigError, match="positive integers"):
        gn.MLP(sizes, backend="numpy")


@pytest.mark.parametrize("sizes", [[3], [], [3, 2.0], [3, True], [3, "4"], [3, None], "34",
                                   5, None, 3.0], ids=repr)
def test_malformed_layer_sizes_raise_config_error(sizes):
    with pytest.raises(gn.ConfigError):
        gn.MLP(sizes, backend="numpy")


NOT_NAMES = st.one_of(st.text(max_size=12), st.none(), st.integers(), st.floats(allow_nan=False),
                      st.lists(st.text(max_size=3), max_size=2), st.binary(max_size=4))


def _not_in(valid, case_insensitive=False):
    def ok(name):
        if isinstance(name, str):
            return (name.lower() if case_insensitive else name) not in valid
        return True
    return ok


@examples(50)
@given(name=NOT_NAMES.filter(_not_in(gn.HIDDEN_ACTIVATIONS)))
def test_unknown_hidden_activation_raises_config_error(name):
    with pytest.raises(gn.ConfigError, match="unknown activation"):
        gn.MLP([2, 3, 2], activation=name, backend="numpy")


@examples(50)
@given(name=NOT_NAMES.filter(_not_in(gn.ACTIVATIONS)))
def test_unknown_output_activation_raises_config_error(name):
    with pytest.raises(gn.ConfigError, match="unknown output activation"):
        gn.MLP([2, 3, 2], output=name, backend="numpy")


@examples(50)
@given(name=NOT_NAMES.filter(_not_in(("auto", "zeros", "normal", "xavier_uniform",
                                      "xavier_normal", "kaiming_uniform", "kaiming_normal",
                                      "torch"))))
def test_unknown_init_raises_config_error(name):
    with pytest.raises(gn.ConfigError, match="unknown init"):
        gn.MLP([2, 3, 2], init=name, backend="numpy")


@examples(50)
@given(name=NOT_NAMES.filter(lambda n: n is not None)
       .filter(_not_in(gn.BACKEND_NAMES, case_insensitive=True)))
def test_unknown_backend_raises_config_error(name):
    with pytest.raises(gn.ConfigError, match="unknown backend"):
        gn.get_backend(name)
    with pytest.raises(gn.ConfigError, match="unknown backend"):
        gn.MLP([2, 3, 2], backend=name)


@examples(50)
@given(name=NOT_NAMES.filter(_not_in(gn.LOSSES)))
def test_unknown_loss_raises_config_error(name):
    with pytest.raises(gn.ConfigError, match="unknown loss"):
        gn.get_loss(name)


@pytest.mark.parametrize("loss_cls", ALL_LOSSES, ids=lambda c: c.__name__)
@examples(25)
@given(name=NOT_NAMES.filter(_not_in(("mean", "sum"))))
def test_unknown_reduction_raises_config_error(loss_cls, name):
    with pytest.raises(gn.ConfigError, match="unknown reduction"):
        loss_cls(reduction=name)


@examples(50)
@given(name=NOT_NAMES.filter(_not_in(gn.OPTIMIZERS)))
def test_unknown_optimizer_raises_config_error(name):
    model = gn.MLP([2, 2], backend="numpy")
    with pytest.raises(gn.ConfigError, match="unknown optimizer"):
        gn.get_optimizer(name, model)


@pytest.mark.parametrize("where", ["activation", "output"])
@pytest.mark.parametrize("name", [["relu"], {"relu": 1}], ids=["list", "dict"])
def test_unhashable_activation_names_raise_config_error(where, name):
    with pytest.raises(gn.ConfigError):
        gn.MLP([2, 3, 2], backend="numpy", **{where: name})


UNSUPPORTED_DTYPES = ["float16", np.float16, "int32", np.int32, "int64", "uint8", "bool",
                      "complex64", np.complex128, object, "U8", "float32 ", "bfloat16", 1.5]


@pytest.mark.parametrize("dtype", UNSUPPORTED_DTYPES, ids=repr)
def test_unsupported_dtypes_raise_config_error(dtype):
    with pytest.raises(gn.ConfigError, match="unsupported dtype"):
        gn.MLP([3, 4, 2], dtype=dtype, backend="numpy")
    model = gn.MLP([3, 4, 2], dtype="float64", backend="numpy")
    before = model.state_dict()
    with pytest.raises(gn.ConfigError, match="unsupported dtype"):
        model.to(dtype=dtype)
    assert model.dtype == np.float64  # refused before anything changed
    for k, v in model.state_dict().items():
        assert v.dtype == np.float64 and np.array_equal(v, before[k])
    assert model.forward(np.ones((2, 3))).dtype == np.float64


def test_gradcheck_refuses_a_float32_model():
    model = gn.MLP([3, 4, 2], dtype="float32", backend="numpy")
    with pytest.raises(gn.ConfigError, match="float64"):
        gn.gradcheck(model, gn.MSELoss(), np.ones((2, 3)), np.ones((2, 2)))


BAD_LRS = st.one_of(st.floats(max_value=0.0), st.integers(-2**62, 0),
                    st.sampled_from([math.nan, math.inf, -math.inf]))


@pytest.mark.parametrize("name", sorted(gn.OPTIMIZERS))
@examples(30)
@given(lr=BAD_LRS)
def test_non_positive_or_non_finite_learning_rates_raise_config_error(name, lr):
    model = gn.MLP([2, 2], backend="numpy")
    with pytest.raises(gn.ConfigError, match="learning rate"):
        gn.get_optimizer(name, model, lr=lr)
    with pytest.raises(gn.ConfigError, match="learning rate"):
        gn.OPTIMIZERS[name](model, lr=lr)


@pytest.mark.parametrize("name", sorted(gn.OPTIMIZERS))
def test_a_negative_learning_rate_beyond_int64_raises_config_error(name):
    """-10**20 is a non-positive number like any other: ConfigError, not the TypeError that
    np.isfinite raises for a Python int it cannot convert."""
    model = gn.MLP([2, 2], backend="numpy")
    with pytest.raises(gn.ConfigError, match="learning rate"):
        gn.get_optimizer(name, model, lr=-10**20)


@pytest.mark.parametrize("lr", [np.float32(0.01), np.float64(0.01), np.int64(1), 0.01, 1],
                         ids=repr)
@pytest.mark.parametrize("name", sorted(gn.OPTIMIZERS))
def test_positive_learning_rates_of_any_real_type_are_accepted(lr, name):
    model = gn.MLP([2, 2], backend="numpy")
    assert gn.get_optimizer(name, model, lr=lr).lr == pytest.approx(float(lr))


@pytest.mark.parametrize("name, kwargs", [
    ("sgd", {"momentum": math.nan}),
    ("sgd", {"momentum": math.inf}),
    ("sgd", {"momentum": 0.9, "dampening": math.nan}),
    ("sgd", {"weight_decay": math.inf}),
    ("adam", {"weight_decay": math.inf}),
    ("adam", {"eps": math.nan}),
    ("adamw", {"eps": math.nan}),
    ("sgd", {"momentum": "0.9"}),
    ("adam", {"betas": (0.9,)}),
    ("adam", {"betas": None}),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={v[k]!r}" for k in v))
def test_malformed_optimizer_hyperparameters_raise_config_error(name, kwargs):
    """Each of these, if accepted, turns the weights into NaN at the first steps (or fails
    there with a bare TypeError): it must be refused when the optimizer is made."""
    model = gn.MLP([2, 2], backend="numpy")
    with pytest.raises(gn.ConfigError):
        gn.get_optimizer(name, model, lr=0.01, **kwargs)


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)
    return make_dataset("tiny", rng.normal(size=(30, 3)), np.arange(30) % 2, "classification",
                        val_fraction=0.2)


NOT_POSITIVE_INTS = st.one_of(st.integers(max_value=0), st.floats(allow_nan=True),
                              st.booleans(), st.none(), st.text(max_size=3))


@pytest.mark.parametrize("which", ["epochs", "batch_size", "patience"])
@examples(30)
@given(bad=NOT_POSITIVE_INTS)
def test_fit_refuses_non_positive_epochs_batch_size_and_patience(tiny_data, which, bad):
    assume(not (which == "patience" and bad is None))  # None: no early stopping
    model = gn.MLP([3, 4, 2], backend="numpy")
    kwargs = {"epochs": 1, "batch_size": 8, which: bad}
    with pytest.raises(gn.ConfigError, match=f"{which} must be a positive integer"):
        fit(model, tiny_data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), progress=False,
            **kwargs)


@examples(30)
@given(batch_size=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True),
                            st.text(max_size=2)))
def test_predict_refuses_a_non_positive_batch_size(batch_size):
    model = gn.MLP([3, 4, 2], backend="numpy")
    with pytest.raises(gn.ConfigError):
        model.predict(np.ones((5, 3)), batch_size=batch_size)


def test_predict_in_batches_refuses_a_scalar_input():
    model = gn.MLP([3, 4, 2], backend="numpy")
    with pytest.raises(gn.ShapeError):
        model.predict(np.float64(1.0), batch_size=2)


NON_NUMERIC = {
    "none": lambda shape: np.full(shape, None, dtype=object),  # asarray(float) makes NaN
    "str": lambda shape: np.full(shape, "0.5"),
    "complex": lambda shape: np.full(shape, 0.5 + 1j),
}


@pytest.mark.parametrize("kind", sorted(NON_NUMERIC))
@pytest.mark.parametrize("loss_cls", ALL_LOSSES, ids=lambda c: c.__name__)
def test_non_numeric_targets_raise_config_error(loss_cls, kind):
    """Targets must be real numbers, as inputs must (MLP.forward refuses the same dtypes)."""
    y_hat = np.full((4, 3), 0.5)
    with pytest.raises(gn.ConfigError):
        loss_cls()(y_hat, NON_NUMERIC[kind]((4, 3)))


@pytest.mark.parametrize("kind", sorted(NON_NUMERIC))
def test_non_numeric_upstream_gradients_and_states_raise_config_error(kind):
    model = gn.MLP([3, 4, 2], backend="numpy")
    model.forward(np.ones((5, 3)))
    with pytest.raises(gn.ConfigError):
        model.backward(NON_NUMERIC[kind]((5, 2)))
    with pytest.raises(gn.ConfigError):
        model.load_state_dict({**model.state_dict(), "W1": NON_NUMERIC[kind]((4, 3))})


@pytest.mark.parametrize("loss_cls", ALL_LOSSES, ids=lambda c: c.__name__)
def test_an_empty_batch_with_mean_reduction_raises_config_error(loss_cls):
    """The mean over no rows is undefined: a documented error, not ZeroDivisionError."""
    y_hat = np.zeros((0, 3))
    y = np.zeros(0, dtype=np.int64) if loss_cls is gn.CrossEntropyLoss else np.zeros((0, 3))
    with pytest.raises(gn.ConfigError):
        loss_cls("mean")(y_hat, y)


@examples(40)
@given(sizes=SIZES, batch=st.integers(1, 5), data=st.data())
def test_backward_with_a_gradient_of_the_wrong_shape_raises_shape_error(sizes, batch, data):
    model = gn.MLP(sizes, backend="numpy")
    with pytest.raises(gn.GpunetError, match="forward"):  # nothing cached yet
        model.backward(np.ones((batch, sizes[-1])))
    model.forward(np.ones((batch, sizes[0])), cache=False)
    with pytest.raises(gn.GpunetError, match="forward"):
        model.backward(np.ones((batch, sizes[-1])))
    model.forward(np.ones((batch, sizes[0])))
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7)
                      .filter(lambda s: s != (batch, sizes[-1])), label="dJ/dy_hat shape")
    with pytest.raises(gn.ShapeError):
        model.backward(np.ones(shape))


@examples(40)
@given(sizes=SIZES, data=st.data())
def test_load_state_dict_of_another_architecture_raises_shape_error(sizes, data):
    model = gn.MLP(sizes, backend="numpy")
    other = data.draw(SIZES.filter(lambda s: s != sizes), label="other sizes")
    before = model.state_dict()
    with pytest.raises(gn.ShapeError):
        model.load_state_dict(gn.MLP(other, backend="numpy").state_dict())
    for k, v in model.state_dict().items():  # nothing half-loaded
        np.testing.assert_array_equal(v, before[k])


@examples(60)
@given(widths=st.lists(st.integers(1, 40), min_size=2, max_size=5),
       batch=st.integers(1, 17),
       activation=st.sampled_from(["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu",
                                   "identity"]),
       slope=st.sampled_from([0.0, 0.2, -0.3]),
       head=st.sampled_from([("ce", "identity"), ("mse", "identity"), ("mse", "sigmoid"),
                             ("mse", "tanh")]),
       optimizer=st.sampled_from(["sgd", "momentum", "adam", "adamw"]),
       dtype=st.sampled_from(["float32", "float64"]),
       kernels_everywhere=st.booleans(),
       dropout=st.sampled_from([0.0, 0.3]), weighted=st.booleans(),
       clip=st.sampled_from([None, 0.1]), norm=st.sampled_from([None, "layer", "batch"]))
def test_static_steps_equal_eager_steps_for_any_architecture(widths, batch, activation, slope,
                                                             head, optimizer, dtype,
                                                             kernels_everywhere, dropout,
                                                             weighted, clip, norm):
    """Whatever the depth, widths, activation and loss, with or without dropout, sample
    weights, gradient clipping and a layer or batch norm, the static step's buffer plan (layer
    buffers reused in place, one or two scratch buffers, dJ/dlogits over the logits) gives the
    eager step's numbers (and running statistics) to the bit on the CPU, on NumPy's ops or on
    the fused kernels."""
    from gpunet.backends.numpy_backend import NumpyBackend
    from gpunet.step import StaticStep

    assume(norm != "batch" or batch >= 2)  # (a batch norm refuses a training pass of one row)
    loss_name, output = head
    threshold = 0 if kernels_everywhere else NumpyBackend.kernel_min_size
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(NumpyBackend, "kernel_min_size", threshold)
        mp.setattr(NumpyBackend, "static_kernel_min_size", threshold)
        rng = np.random.default_rng(len(widths) * 100 + batch)
        n = 3 * batch
        x = rng.standard_normal((n, widths[0])).astype(dtype)
        y = (rng.integers(0, widths[-1], n) if loss_name == "ce"
             else rng.standard_normal((n, widths[-1])).astype(dtype))
        w = rng.uniform(0, 2, n).astype(dtype) if weighted else None
        runs = []
        for static in (False, True):
            model = gn.MLP(widths, activation=activation, output=output, backend="numpy",
                           seed=4, dtype=dtype, slope=slope, dropout=dropout, norm=norm)
            opt = {"sgd": lambda: gn.SGD(model, lr=0.1, clip_norm=clip),
                   "momentum": lambda: gn.SGD(model, lr=0.05, momentum=0.9, nesterov=True,
                                              weight_decay=0.01, clip_norm=clip),
                   "adam": lambda: gn.Adam(model, lr=1e-2, clip_norm=clip),
                   "adamw": lambda: gn.AdamW(model, lr=1e-2, clip_norm=clip)}[optimizer]()
            loss_fn = gn.CrossEntropyLoss() if loss_name == "ce" else gn.MSELoss()
            step = StaticStep(model, loss_fn, opt, batch, weighted=weighted) if static else None
            losses = []
            for s in range(3):
                rows = np.arange(s * batch, (s + 1) * batch)
                if static:
                    losses.append(float(step(x, y, rows, w)[0]))
                else:
                    losses.append(float(model.train_step(
                        x[rows], y[rows], loss_fn, opt, weight=None if w is None else w[rows])))
            runs.append((model, losses))
    (eager, eager_losses), (static_model, static_losses) = runs
    # NumPy's matmul buffers an output that overlaps its input, cuBLAS does not: so no GEMM of
    # the plan may write dJ/dy of layer i over the dJ/dz of layer i + 1 it is computed from
    acts = [act for _, _, act in model.blocks()]
    for i in range(len(step.g) - 1):
        above = step.g[i + 1] if acts[i + 1].name == "identity" else step.z[i + 1]
        assert not np.shares_memory(step.g[i], above), i
    np.testing.assert_allclose(static_losses, eager_losses, rtol=1e-6)
    for k in eager.state_dict():  # (the parameters, then a batch norm's running statistics)
        np.testing.assert_array_equal(static_model.state_dict()[k], eager.state_dict()[k],
                                      err_msg=k)
