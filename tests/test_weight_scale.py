"""Sample weights far outside the dtype's range: a weighted mean is the same for any scale of
the weights, so weights at 1e-50 or 1e40 train and measure as the same weights at their own
scale do (float32 flushed the first to 0, a loss of 0 that never trained, and refused the
second as infinite); a weighted sum, which they scale, refuses what the dtype cannot hold."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.data import make_dataset
from gpunet.train import fit, metrics


def _data(scale, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    w = rng.uniform(0.5, 2, 300) * scale
    return make_dataset("d", x, y, "classification", val_fraction=0.2, sample_weight=w,
                        dtype=dtype)


def _trained(scale, dtype, loss=None):
    data = _data(scale, dtype)
    model = gn.MLP([4, 16, 2], backend="numpy", seed=0, dtype=dtype)
    history = fit(model, data, loss or gn.CrossEntropyLoss(), gn.Adam(model, lr=0.01),
                  epochs=4, batch_size=32, progress=False)
    return model, history, data


@pytest.mark.parametrize("scale", [1e-50, 1e40])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_at_any_scale_train_as_at_their_own(scale, dtype, torch):
    """The run of w * scale is the run of w (float64 to a rounding or two: 1e-50 is no power of
    two; float32 to its rounding), and its val_loss is the weighted mean of the rows' losses
    that torch and np.average give."""
    model, history, data = _trained(scale, dtype)
    plain, plain_history, _ = _trained(1.0, dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-13, atol=1e-15)
    for k, v in plain.params.items():
        np.testing.assert_allclose(model.params[k], v, err_msg=k, **tol)
    for a, b in zip(history, plain_history):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], **tol)
        np.testing.assert_allclose(a["val_loss"], b["val_loss"], **tol)
    rows = torch.nn.functional.cross_entropy(
        torch.tensor(np.asarray(model.predict(data.x_val), dtype=np.float64)),
        torch.tensor(data.y_val), reduction="none").numpy()
    want = np.average(rows, weights=data.w_val / scale)
    np.testing.assert_allclose(history[-1]["val_loss"], want, rtol=1e-5 if dtype == "float32"
                               else 1e-12)
    got = metrics(model, data.x_val, data.y_val, gn.CrossEntropyLoss(), "classification",
                  weight=data.w_val)
    np.testing.assert_allclose(got["loss"], want, rtol=1e-5 if dtype == "float32" else 1e-12)


def test_weights_that_are_powers_of_two_apart_give_the_same_bits():
    """A power of two rounds nothing: weights scaled by 2^-200 (0 in float32) run bit for bit
    as at their own scale, float32 too."""
    model, history, _ = _trained(2.0 ** -200, "float32")
    plain, plain_history, _ = _trained(1.0, "float32")
    for k, v in plain.params.items():
        np.testing.assert_array_equal(model.params[k], v, err_msg=k)
    assert list(history)[-1]["val_loss"] == list(plain_history)[-1]["val_loss"]


def test_the_estimators_fit_weights_at_any_scale():
    """(1e40 was refused as "got inf", 1e-50 fitted nothing)"""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 3))
    y = (x[:, 0] > 0).astype(int)
    w = rng.uniform(0.5, 2, 200)
    kw = dict(hidden=(8,), epochs=5, backend="numpy", random_state=0)  # (float32)
    plain = gn.MLPClassifier(**kw).fit(x, y, sample_weight=w).predict_proba(x)
    for scale in (1e-50, 1e40):
        np.testing.assert_allclose(gn.MLPClassifier(**kw).fit(
            x, y, sample_weight=w * scale).predict_proba(x), plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale, said", [(1e-50, r"the sample weight .* of the training rows "
                                                  r"is 0 in float32 .*: scale them up"),
                                         (1e40, r"the sample weights of the training rows "
                                                r"reach .*, past float32's largest number .*: "
                                                r"scale them down")])
def test_a_weighted_sum_refuses_weights_the_dtype_cannot_hold(scale, said):
    with pytest.raises(gn.ConfigError, match=said):
        _trained(scale, "float32", gn.CrossEntropyLoss(reduction="sum"))
    _trained(scale, "float64", gn.CrossEntropyLoss(reduction="sum"))  # (float64 holds them)
