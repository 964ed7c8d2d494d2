"""Every loss's value and dJ/dy_hat against torch.nn.functional and autograd (float64 reference).

Also the backend's row-wise log-sum-exp, log-softmax and softmax against torch on rows that
break naive formulas (+-1e4, ties, -inf), and the errors a loss raises on bad targets.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import RTOL, host

import gpunet as gn

REDUCTIONS = ["mean", "sum"]
B, C = 33, 5


def assert_close(actual, expected, dtype, what=""):
    """rtol by dtype, plus an atol scaled to the array (for entries near zero)."""
    actual, expected = np.asarray(host(actual), dtype=np.float64), np.asarray(expected)
    finite = expected[np.isfinite(expected)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=what)


def torch_value_and_grad(torch, fn, y_hat, y, **kw):
    """fn(y_hat, y, **kw) and its gradient in y_hat, by torch in float64."""
    yh = torch.tensor(np.asarray(y_hat, dtype=np.float64), requires_grad=True)
    yt = torch.as_tensor(y if np.asarray(y).dtype.kind in "iu" else np.asarray(y, np.float64))
    value = fn(yh, yt, **kw)
    (grad,) = torch.autograd.grad(value, yh)
    return value.item(), host(grad)


def run_loss(backend, loss, y_hat, y):
    """The gpunet loss on the backend, checking the documented return types; host results."""
    yh = backend.asarray(y_hat)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grad = loss(yh, backend.asarray(y))
    assert backend.owns(grad) and grad.shape == yh.shape and grad.dtype == yh.dtype
    assert host(value).size == 1
    return float(host(value)), host(grad)


def check(backend, dtype, torch, loss, torch_fn, y_hat, y, **torch_kw):
    y_hat = np.asarray(y_hat, dtype=dtype)
    ref_value, ref_grad = torch_value_and_grad(torch, torch_fn, y_hat, y,
                                               reduction=loss.reduction, **torch_kw)
    value, grad = run_loss(backend, loss, y_hat, y)
    assert_close(value, ref_value, dtype, f"{loss!r} value")
    assert_close(grad, ref_grad, dtype, f"{loss!r} dJ/dy_hat")


# -- MSE --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(backend, dtype, torch, reduction):
    rng = np.random.default_rng(10)
    y_hat, y = rng.standard_normal((B, C)), rng.standard_normal((B, C))
    check(backend, dtype, torch, gn.MSELoss(reduction), torch.nn.functional.mse_loss,
          y_hat, y.astype(dtype))


@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_huber_matches_torch(backend, dtype, torch, reduction, delta):
    """torch.nn.functional.huber_loss: errors of 0 to 6, so that both the quadratic and the
    linear part count, and some exactly at +-delta (where both give delta^2 / 2 and the
    gradient is +-delta)."""
    rng = np.random.default_rng(11)
    y = rng.standard_normal((B, C))
    y_hat = y + rng.uniform(-6, 6, (B, C))
    y_hat[0, :2] = y[0, :2] + np.array([delta, -delta])
    y = y.astype(dtype)
    y_hat = y + (y_hat - y).astype(dtype)  # the errors exact in the dtype
    check(backend, dtype, torch, gn.HuberLoss(reduction, delta=delta),
          torch.nn.functional.huber_loss, y_hat, y, delta=delta)
    value, grad = run_loss(backend, gn.HuberLoss("sum", delta=delta), y_hat, y)
    np.testing.assert_allclose(grad[0, :2], [delta, -delta], rtol=RTOL[dtype])


def test_huber_refuses_a_delta_that_is_not_positive():
    for delta in (0, -1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(gn.ConfigError, match="delta must be a finite number > 0"):
            gn.HuberLoss(delta=delta)
    assert gn.get_loss("huber", delta=0.5).config() == {"reduction": "mean", "delta": 0.5}
    with pytest.raises(gn.ConfigError, match="huber takes reduction= .* and delta=; got alpha"):
        gn.get_loss("huber", alpha=1)
    with pytest.raises(gn.ConfigError, match=r"HuberLoss takes no beta= .*SmoothL1Loss"):
        gn.get_loss("huber", beta=1)  # (torch's SmoothL1Loss: its own answer)


# -- BCE on probabilities ---------------------------------------------------------------------


@pytest.mark.parametrize("targets", ["hard", "soft"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_matches_torch(backend, dtype, torch, reduction, targets):
    rng = np.random.default_rng(11)
    p = rng.uniform(0.02, 0.98, (B, C))
    y = (rng.uniform(size=(B, C)) < 0.5).astype(dtype) if targets == "hard" \
        else rng.uniform(0.05, 0.95, (B, C)).astype(dtype)
    check(backend, dtype, torch, gn.BCELoss(reduction), torch.nn.functional.binary_cross_entropy,
          p, y)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_at_probabilities_exactly_0_and_1(backend, dtype, torch, reduction):
    # torch clamps each log at -100 and divides the gradient by max(p (1 - p), 1e-12).
    p = np.array([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5]] * 3)
    y = np.array([[0.0, 1.0, 0.3, 0.0, 1.0, 0.3, 1.0]] * 3, dtype=dtype)
    ref_value, ref_grad = torch_value_and_grad(
        torch, torch.nn.functional.binary_cross_entropy, p, y, reduction=reduction)
    assert np.isfinite(ref_value) and np.all(np.isfinite(ref_grad))
    value, grad = run_loss(backend, gn.BCELoss(reduction), p.astype(dtype), y)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert_close(value, ref_value, dtype, "BCE value at p in {0, 1}")
    # Entries span 0 to 1e12: compare each one relative to itself, not to the array's maximum.
    # torch's clamp constant acts as float32(1e-12) = 9.99999996e-13 even in float64, so its
    # clamped entries differ from (p - y) / 1e-12 by 4e-9 relative: allow that, no more.
    np.testing.assert_allclose(grad, ref_grad, rtol=max(RTOL[dtype], 1e-8), atol=0)


# -- BCE on logits ----------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_matches_torch(backend, dtype, torch, reduction):
    rng = np.random.default_rng(12)
    z = rng.standard_normal((B, C)) * 4
    y = rng.uniform(0.0, 1.0, (B, C)).astype(dtype)
    check(backend, dtype, torch, gn.BCEWithLogitsLoss(reduction),
          torch.nn.functional.binary_cross_entropy_with_logits, z, y)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_at_plus_minus_100(backend, dtype, torch, reduction):
    z = np.array([[-100.0, -100.0, -100.0, 100.0, 100.0, 100.0, 0.5]] * 2)
    y = np.array([[0.0, 1.0, 0.25, 0.0, 1.0, 0.25, 1.0]] * 2, dtype=dtype)
    ref_value, ref_grad = torch_value_and_grad(
        torch, torch.nn.functional.binary_cross_entropy_with_logits, z, y, reduction=reduction)
    with np.errstate(all="raise", under="ignore"):
        value, grad = run_loss(backend, gn.BCEWithLogitsLoss(reduction), z.astype(dtype), y)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert_close(value, ref_value, dtype, "BCEWithLogits value at +-100")
    assert_close(grad, ref_grad, dtype, "BCEWithLogits dJ/dz at +-100")


# -- cross-entropy ----------------------------------------------------------------------------


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32], ids=["int64", "int32"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_labels_match_torch(backend, dtype, torch, reduction, label_dtype):
    rng = np.random.default_rng(13)
    z = rng.standard_normal((B, C)) * 3
    labels = rng.integers(0, C, B).astype(label_dtype)
    assert len(set(labels.tolist())) == C  # every class appears
    ref_value, ref_grad = torch_value_and_grad(
        torch, torch.nn.functional.cross_entropy, z, labels.astype(np.int64), reduction=reduction)
    value, grad = run_loss(backend, gn.CrossEntropyLoss(reduction), z.astype(dtype), labels)
    assert_close(value, ref_value, dtype, "cross-entropy value")
    assert_close(grad, ref_grad, dtype, "cross-entropy dJ/dz")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_labels_with_extreme_logits(backend, dtype, torch, reduction):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4 + 5], [2.0, 2.0, 2.0], [1e4, 1e4, -1.0]])
    labels = np.array([1, 2, 0, 0])
    ref_value, ref_grad = torch_value_and_grad(
        torch, torch.nn.functional.cross_entropy, z, labels, reduction=reduction)
    with np.errstate(all="raise", under="ignore"):
        value, grad = run_loss(backend, gn.CrossEntropyLoss(reduction), z.astype(dtype), labels)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert_close(value, ref_value, dtype, "cross-entropy value at +-1e4")
    assert_close(grad, ref_grad, dtype, "cross-entropy dJ/dz at +-1e4")


@pytest.mark.parametrize("targets", ["labels", "soft"])
@pytest.mark.parametrize("offset", [1e3, -1e3, 1e4], ids=["plus_1e3", "minus_1e3", "plus_1e4"])
def test_cross_entropy_is_accurate_for_large_logits(backend, dtype, torch, offset, targets):
    # Softmax and cross-entropy are shift invariant; torch (float32 included) keeps full
    # relative accuracy for logits far from 0 because it works with z - max(z). The inputs are
    # exactly representable in dtype, and the reference is float64 on those exact values.
    rng = np.random.default_rng(20)
    z = (rng.standard_normal((B, C)) * 3 + offset).astype(dtype)
    y = rng.integers(0, C, B) if targets == "labels" else rng.dirichlet(np.ones(C), B).astype(dtype)
    check(backend, dtype, torch, gn.CrossEntropyLoss("mean"),
          torch.nn.functional.cross_entropy, z, y)


@pytest.mark.parametrize("smoothing", [0.1, 0.35, 1.0])
@pytest.mark.parametrize("targets", ["labels", "soft"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_label_smoothing_matches_torch(backend, dtype, torch, reduction, targets,
                                                     smoothing):
    """CrossEntropyLoss(label_smoothing=e) against torch's, on labels and on probability
    targets, unweighted and with sample weights (torch: the unreduced loss weighted by
    hand, as in the weighted tests below)."""
    rng = np.random.default_rng(12)
    z = (rng.standard_normal((B, C)) * 3).astype(dtype)
    y = rng.integers(0, C, B) if targets == "labels" else \
        rng.dirichlet(np.ones(C), B).astype(dtype)
    check(backend, dtype, torch, gn.CrossEntropyLoss(reduction, label_smoothing=smoothing),
          torch.nn.functional.cross_entropy, z, y, label_smoothing=smoothing)
    w = rng.uniform(0.1, 2.0, B)
    zt = torch.tensor(np.asarray(z, np.float64), requires_grad=True)
    yt = torch.as_tensor(y if targets == "labels" else np.asarray(y, np.float64))
    per = torch.nn.functional.cross_entropy(zt, yt, reduction="none",
                                            label_smoothing=smoothing)
    wt = torch.as_tensor(w)
    ref = (per * wt).sum() / (wt.sum() if reduction == "mean" else 1)
    (ref_grad,) = torch.autograd.grad(ref, zt)
    value, grad = gn.CrossEntropyLoss(reduction, label_smoothing=smoothing)(
        backend.asarray(z), backend.asarray(y), weight=backend.asarray(w.astype(dtype)))
    assert_close(float(host(value)), ref.item(), dtype, "weighted value")
    assert_close(host(grad), host(ref_grad), dtype, "weighted dJ/dz")


@pytest.mark.parametrize("shape", [(B, C), (8192, 8)], ids=["small", "kernel size"])
@pytest.mark.parametrize("offset", [1e4, -1e6])
def test_label_smoothing_is_accurate_for_large_logits(backend, dtype, torch, offset, shape):
    """Smoothing's term e (z_c - mean_j z_j) was summed from the logits as they are, losing
    digits of their magnitude (float32 at 1e4: 4e-5 of the loss off; at 1e6 4e-3; float64 at
    1e6 3e-12); it is taken from z less the row's first logit, as torch keeps its digits."""
    rng = np.random.default_rng(13)
    z = (rng.standard_normal(shape) * 3 + offset).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    ref_value, ref_grad = torch_value_and_grad(torch, torch.nn.functional.cross_entropy, z, y,
                                               label_smoothing=0.1)
    value, grad = run_loss(backend, gn.CrossEntropyLoss(label_smoothing=0.1), z, y)
    np.testing.assert_allclose(value, ref_value, rtol=2e-6 if dtype == np.float32 else 1e-14)
    assert_close(grad, ref_grad, dtype, "dJ/dz")


def test_label_smoothing_outside_zero_one_is_refused_and_zero_is_plain_cross_entropy():
    for bad in (-0.1, 1.5, float("nan"), "0.1", True):
        with pytest.raises(gn.ConfigError, match=r"label_smoothing must be a number in \[0, 1\]"):
            gn.CrossEntropyLoss(label_smoothing=bad)
    z = np.random.default_rng(1).standard_normal((5, 4))
    y = np.array([0, 3, 1, 2, 0])
    for a, b in zip(gn.CrossEntropyLoss(label_smoothing=0.0)(z, y), gn.CrossEntropyLoss()(z, y)):
        np.testing.assert_array_equal(host(a), host(b))


@pytest.mark.parametrize("targets", ["one_hot", "soft", "unnormalised"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probability_targets_match_torch(backend, dtype, torch, reduction, targets):
    rng = np.random.default_rng(14)
    z = rng.standard_normal((B, C)) * 3
    if targets == "one_hot":
        t = np.eye(C)[rng.integers(0, C, B)]
    elif targets == "soft":
        t = rng.dirichlet(np.ones(C), B)
    else:  # torch does not require rows to sum to 1; the gradient carries sum_j t_ij
        t = rng.uniform(0.1, 1.0, (B, C))
    check(backend, dtype, torch, gn.CrossEntropyLoss(reduction),
          torch.nn.functional.cross_entropy, z, t.astype(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_one_hot_equals_labels(backend, dtype, reduction):
    rng = np.random.default_rng(15)
    z = backend.asarray((rng.standard_normal((B, C)) * 3).astype(dtype))
    labels = rng.integers(0, C, B)
    loss = gn.CrossEntropyLoss(reduction)
    v1, g1 = loss(z, backend.asarray(labels))
    v2, g2 = loss(z, backend.asarray(np.eye(C, dtype=dtype)[labels]))
    assert_close(v1, float(host(v2)), dtype)
    assert_close(g1, host(g2), dtype)


# -- row-wise log-sum-exp, log-softmax, softmax -----------------------------------------------

INF, NAN = np.inf, np.nan
ROWS = {
    "random": [0.3, -1.2, 2.5, 0.7, -0.4],
    "plus_minus_1e4": [1e4, -1e4, 0.0, 1.0, -3.0],
    "all_large": [1e4, 1e4 - 1, 1e4 - 2, 1e4 - 3, 1e4 - 4],
    "all_very_negative": [-1e4, -1e4 - 1, -1e4 - 2, -1e4 - 3, -1e4 - 4],
    "equal": [3.0, 3.0, 3.0, 3.0, 3.0],
    "some_minus_inf": [-INF, 2.0, -INF, 0.5, -1.0],
    "one_finite": [-INF, -INF, 7.0, -INF, -INF],
}


def torch_rowwise(torch, x):
    t = torch.tensor(np.asarray(x, dtype=np.float64))
    return (host(torch.logsumexp(t, dim=-1)), host(torch.log_softmax(t, dim=-1)),
            host(torch.softmax(t, dim=-1)))


@pytest.mark.parametrize("row", list(ROWS))
def test_logsumexp_log_softmax_softmax_match_torch(backend, dtype, torch, row):
    x = np.array([ROWS[row], ROWS["random"]], dtype=dtype)  # a batch of two rows
    ref_lse, ref_lsm, ref_sm = torch_rowwise(torch, x)
    xb = backend.asarray(x)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise"):
        warnings.simplefilter("error")
        lse = host(backend.logsumexp(xb))
        lsm = host(backend.log_softmax(xb))
        sm = host(backend.softmax(xb))
    assert lse.shape == (2,) and lsm.shape == x.shape and sm.shape == x.shape
    assert lse.dtype == dtype and lsm.dtype == dtype and sm.dtype == dtype
    assert_close(lse, ref_lse, dtype, "logsumexp")
    # -inf entries must stay exactly -inf; assert_allclose compares infinities by position
    assert_close(lsm, ref_lsm, dtype, "log_softmax")
    assert_close(sm, ref_sm, dtype, "softmax")
    assert not np.any(np.isnan(lsm)) and not np.any(np.isnan(sm))


def test_logsumexp_of_all_minus_inf_row_is_minus_inf(backend, dtype, torch):
    x = np.array([[-INF, -INF, -INF], [1.0, 2.0, 3.0]], dtype=dtype)
    ref = host(torch.logsumexp(torch.tensor(x.astype(np.float64)), dim=-1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lse = host(backend.logsumexp(backend.asarray(x)))
    assert lse[0] == -INF and ref[0] == -INF
    assert_close(lse[1:], ref[1:], dtype)


@pytest.mark.parametrize("rows", [1, 1 << 15], ids=["numpy ops", "kernel size"])
def test_logsumexp_of_rows_with_inf_and_nan_is_torchs(backend, dtype, torch, rows):
    """A row holding +inf sums to inf (the kernel took inf - inf: NaN); a NaN among -infs
    makes NaN (the kernel's row max skipped it: -inf). Torch's on every row, bit for bit."""
    x = np.array([[INF, 0, 0], [NAN, -INF, -INF], [INF, -INF, 1], [-INF, -INF, -INF],
                  [INF, NAN, 0], [1.0, 2.0, 3.0]], dtype=dtype)
    x = np.tile(x, (-(-rows // len(x)), 1))  # (2^15 rows of 3: the kernel's, 2^16 up)
    ref = host(torch.logsumexp(torch.tensor(x), dim=-1))
    with np.errstate(invalid="ignore"):
        lse = host(backend.logsumexp(backend.asarray(x)))
    np.testing.assert_array_equal(lse[:5], ref[:5])
    assert_close(lse, ref, dtype)


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, C], ids=["negative", "equal_to_classes"])
def test_cross_entropy_label_out_of_range_raises_config_error(backend, bad):
    z = backend.asarray(np.random.default_rng(16).standard_normal((7, C)))
    labels = np.arange(7) % C
    labels[3] = bad
    with pytest.raises(gn.ConfigError, match=r"labels must lie in \[0, 4\]"):
        gn.CrossEntropyLoss()(z, backend.asarray(labels))


@pytest.mark.parametrize("loss_cls", [gn.MSELoss, gn.HuberLoss, gn.BCELoss,
                                      gn.BCEWithLogitsLoss, gn.CrossEntropyLoss])
@pytest.mark.parametrize("target_shape", [(7, C + 1), (6, C), (7 * C,)],
                         ids=["columns", "rows", "flat"])
def test_target_shape_mismatch_raises_shape_error(backend, loss_cls, target_shape):
    rng = np.random.default_rng(17)
    y_hat = backend.asarray(rng.uniform(0.1, 0.9, (7, C)))
    y = backend.asarray(rng.uniform(0.1, 0.9, target_shape))
    with pytest.raises(gn.ShapeError):
        loss_cls()(y_hat, y)


@pytest.mark.parametrize("labels_shape", [(6,), (8,), (7, 1)])
def test_cross_entropy_label_count_mismatch_raises_shape_error(backend, labels_shape):
    z = backend.asarray(np.random.default_rng(18).standard_normal((7, C)))
    labels = backend.asarray(np.zeros(labels_shape, dtype=np.int64) + 1)
    with pytest.raises(gn.ShapeError):
        gn.CrossEntropyLoss()(z, labels)


def test_cross_entropy_needs_2d_logits(backend):
    z = backend.asarray(np.random.default_rng(19).standard_normal(C))
    with pytest.raises(gn.ShapeError):
        gn.CrossEntropyLoss()(z, backend.asarray(np.array([1])))


def test_unknown_reduction_raises_config_error():
    with pytest.raises(gn.ConfigError, match="reduction"):
        gn.MSELoss("avg")


# -- sample weights ---------------------------------------------------------------------------

WEIGHTED = {
    # name: (gpunet loss, torch's per-element (or per-row) loss, target kind)
    "mse": (gn.MSELoss, "mse_loss", "real"),
    "huber": (gn.HuberLoss, "huber_loss", "real"),  # torch's default delta, 1, is gpunet's
    "bce": (gn.BCELoss, "binary_cross_entropy", "soft"),
    "bce_logits": (gn.BCEWithLogitsLoss, "binary_cross_entropy_with_logits", "soft"),
    "cross_entropy_labels": (gn.CrossEntropyLoss, "cross_entropy", "labels"),
    "cross_entropy_probs": (gn.CrossEntropyLoss, "cross_entropy", "probs"),
}


def _weighted_case(name, dtype, rng):
    _, _, kind = WEIGHTED[name]
    y_hat = rng.uniform(0.05, 0.95, (B, C)) if name == "bce" else rng.standard_normal((B, C))
    if kind == "labels":
        y = rng.integers(0, C, B)
    elif kind == "probs":
        y = rng.dirichlet(np.ones(C), B).astype(dtype)
    elif kind == "soft":
        y = rng.uniform(0.05, 0.95, (B, C)).astype(dtype)
    else:
        y = rng.standard_normal((B, C)).astype(dtype)
    w = rng.uniform(0.1, 3.0, B)
    w[[2, 7, 20]] = 0.0  # rows that do not count
    return np.asarray(y_hat, dtype=dtype), y, w.astype(dtype)


def _torch_weighted(torch, name, reduction, y_hat, y, w):
    """sum_i w_i J_i (sum) or sum_i w_i J_i / (sum_i w_i * elements per row) (mean), with
    J_i the row's loss from torch's unreduced loss, and its gradient by autograd; float64."""
    _, fn, _ = WEIGHTED[name]
    yh = torch.tensor(np.asarray(y_hat, dtype=np.float64), requires_grad=True)
    yt = torch.as_tensor(y if y.dtype.kind in "iu" else np.asarray(y, np.float64))
    wt = torch.as_tensor(np.asarray(w, dtype=np.float64))
    per = getattr(torch.nn.functional, fn)(yh, yt, reduction="none")
    rows, per_row = (per, 1) if per.ndim == 1 else (per.sum(dim=1), per.shape[1])
    value = (wt * rows).sum()
    if reduction == "mean":
        value = value / (wt.sum() * per_row)
    (grad,) = torch.autograd.grad(value, yh)
    return value.item(), grad.numpy()


@pytest.mark.parametrize("name", sorted(WEIGHTED))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sample_weights_match_torch(backend, dtype, torch, name, reduction):
    y_hat, y, w = _weighted_case(name, dtype, np.random.default_rng(17))
    loss = WEIGHTED[name][0](reduction)
    ref_value, ref_grad = _torch_weighted(torch, name, reduction, y_hat, y, w)
    value, grad = loss(backend.asarray(y_hat), backend.asarray(y), weight=backend.asarray(w))
    assert backend.owns(grad) and grad.shape == y_hat.shape and grad.dtype == y_hat.dtype
    assert_close(float(host(value)), ref_value, dtype, f"{loss!r} weighted value")
    assert_close(host(grad), ref_grad, dtype, f"{loss!r} weighted dJ/dy_hat")
    np.testing.assert_array_equal(host(grad)[[2, 7, 20]], 0.0)


@pytest.mark.parametrize("name", sorted(WEIGHTED))
def test_weights_of_ones_give_the_unweighted_loss_and_zeros_give_nothing(backend, name):
    y_hat, y, w = _weighted_case(name, np.float64, np.random.default_rng(18))
    loss = WEIGHTED[name][0]()
    plain = loss(backend.asarray(y_hat), backend.asarray(y))
    ones = loss(backend.asarray(y_hat), backend.asarray(y), weight=backend.asarray(np.ones(B)))
    for a, b in zip(plain, ones):
        np.testing.assert_allclose(host(b), host(a), rtol=1e-13, atol=1e-15)
    value, grad = loss(backend.asarray(y_hat), backend.asarray(y),
                       weight=backend.asarray(np.zeros(B)))
    assert float(host(value)) == 0.0 and not np.any(host(grad))


def test_sample_weights_of_the_wrong_shape_are_refused():
    y_hat, y = np.zeros((4, 3)), np.array([0, 1, 2, 0])
    with pytest.raises(gn.ShapeError, match=r"sample weights shaped \(3,\) do not match 4 rows"):
        gn.CrossEntropyLoss()(y_hat, y, weight=np.ones(3))
    with pytest.raises(gn.ShapeError, match=r"sample weights shaped \(4, 1\)"):
        gn.MSELoss()(y_hat, y_hat, weight=np.ones((4, 1)))


@pytest.mark.parametrize("name", ["mse", "huber", "bce", "bce_logits", "cross_entropy"])
def test_negative_or_non_finite_host_weights_are_refused(name):
    """Weights given on the host (a NumPy array or a list) are checked as the README states
    them, finite and >= 0, at no device cost; the first bad one is named."""
    rng = np.random.default_rng(3)
    y_hat = rng.uniform(0.1, 0.9, (4, 1 if name.startswith("bce") else 3))
    y = np.array([0, 1, 2, 0]) if name == "cross_entropy" else \
        rng.integers(0, 2, y_hat.shape).astype(float)
    loss = gn.get_loss(name)
    for weight, shown in (([1.0, -2.0, 1.0, 1.0], "-2"), (np.array([1, 1, np.inf, 1]), "inf"),
                          (np.array([np.nan, 1, 1, 1]), "nan")):
        with pytest.raises(gn.ConfigError, match=f"sample weights must be finite numbers "
                                                 f">= 0, got {shown}"):
            loss(y_hat, y, weight=weight)
    value, _ = loss(y_hat, y, weight=[0, 1, 2, 0])  # zeros are weights too
    assert np.isfinite(float(value))
    for weight in ([1, 1e39, 1, 1], [3e38, 3e38, 1, 1]):  # finite, but not in float32
        with pytest.raises(gn.ConfigError, match="overflow float32 .* scale them down"):
            loss(y_hat.astype(np.float32), y.astype(np.float32) if y.dtype.kind == "f" else y,
                 weight=weight)
    value, _ = loss(y_hat, y, weight=[1, 1e39, 1, 1])  # fine in float64
    assert np.isfinite(float(value))


# -- torch's constructor options: refused, each message's gpunet way checked against torch ------


def test_torchs_loss_options_are_refused_in_one_line():
    """gn.CrossEntropyLoss(weight=w), (ignore_index=...), gn.BCEWithLogitsLoss(pos_weight=...),
    gn.HuberLoss(beta=1) and the binary losses' weight= were bare TypeErrors; a class-weight
    array as CrossEntropyLoss's first argument (torch's place for it) was told to call the
    loss."""
    cases = [(gn.CrossEntropyLoss, {"weight": np.ones(3)}, r"weight=class_weight\[y\]"),
             (gn.CrossEntropyLoss, {"ignore_index": -100}, "weight 0"),
             (gn.BCEWithLogitsLoss, {"pos_weight": 3.0}, r"weight=np.where\(y\[:, 0\] == 1"),
             (gn.BCEWithLogitsLoss, {"weight": np.ones(3)}, "at call time, one a row"),
             (gn.BCELoss, {"weight": np.ones(3)}, "at call time, one a row"),
             (gn.HuberLoss, {"beta": 1.0}, r"HuberLoss\(delta=b\) divided by b")]
    for cls, kw, hint in cases:
        with pytest.raises(gn.ConfigError, match=rf"{cls.__name__} takes no "
                                                 rf"{next(iter(kw))}= \(torch's\): .*{hint}"):
            cls(**kw)
        with pytest.raises(gn.ConfigError, match=hint):
            gn.get_loss(cls.name, **kw)
    with pytest.raises(gn.ConfigError, match=r"CrossEntropyLoss takes no weight \(torch's first "
                                             r"argument\): .*weight=class_weight\[y\]"):
        gn.CrossEntropyLoss(np.array([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_the_ways_the_option_errors_give_are_torchs_options(torch, reduction):
    """Each gpunet way the errors above name, against torch with the option, float64."""
    F = torch.nn.functional
    rng = np.random.default_rng(7)
    z = rng.normal(size=(B, C)) * 2
    y = rng.integers(0, C, B)
    cw = rng.uniform(0.2, 3.0, C)
    ce = gn.CrossEntropyLoss(reduction)
    # weight=class_weight[y]: torch's weight= (no label smoothing)
    got = ce(z, y, weight=cw[y])
    want = torch_value_and_grad(torch, F.cross_entropy, z, y, weight=torch.tensor(cw),
                                reduction=reduction)
    assert_close(got[0], want[0], np.float64, "class weights")
    assert_close(got[1], want[1], np.float64, "class weights: dJ/dz")
    # ignore_index: weight 0 and any valid label in those rows
    labels = np.where(rng.random(B) < 0.3, -100, y)
    keep = labels != -100
    got = ce(z, np.where(keep, labels, 0), weight=keep * 1.0)
    want = torch_value_and_grad(torch, F.cross_entropy, z, labels, ignore_index=-100,
                                reduction=reduction)
    assert_close(got[0], want[0], np.float64, "ignore_index")
    assert_close(got[1], want[1], np.float64, "ignore_index: dJ/dz")
    # pos_weight=p, one output and 0/1 targets: 'sum' with weight where(y, p, 1); 'mean' / rows
    logits, t, p = z[:, :1], (rng.random((B, 1)) < 0.4) * 1.0, 3.0
    value, grad = gn.BCEWithLogitsLoss("sum")(logits, t, weight=np.where(t[:, 0] == 1, p, 1.0))
    rows = B if reduction == "mean" else 1
    want = torch_value_and_grad(torch, F.binary_cross_entropy_with_logits, logits, t,
                                pos_weight=torch.tensor([p]), reduction=reduction)
    assert_close(value / rows, want[0], np.float64, "pos_weight")
    assert_close(grad / rows, want[1], np.float64, "pos_weight: dJ/dz")
    # the binary losses' weight=: 'sum' is torch's weight=w[:, None]
    w, t = rng.uniform(0, 2, B), (rng.random((B, C)) < 0.5) * 1.0
    got = gn.BCEWithLogitsLoss("sum")(z, t, weight=w)
    want = torch_value_and_grad(torch, F.binary_cross_entropy_with_logits, z, t,
                                weight=torch.tensor(w[:, None]), reduction="sum")
    assert_close(got[0], want[0], np.float64, "bce weight")
    assert_close(got[1], want[1], np.float64, "bce weight: dJ/dz")
    # SmoothL1Loss(beta=b) is HuberLoss(delta=b) divided by b
    target, b = rng.normal(size=(B, C)) * 2, 0.7
    value, grad = gn.HuberLoss(reduction, delta=b)(z, target)
    want = torch_value_and_grad(torch, F.smooth_l1_loss, z, target, beta=b, reduction=reduction)
    assert_close(value / b, want[0], np.float64, "smooth l1")
    assert_close(grad / b, want[1], np.float64, "smooth l1: dJ/dz")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_weights_with_label_smoothing_are_row_weights(torch, reduction):
    """As CrossEntropyLoss's docstring and docs/math.md say: with label smoothing e, the row
    weight w_{y_i} weights the row's whole smoothed loss, where torch's weight= weights the
    smoothing term class by class, sum_c w_c (-log p_ic) e / C (both over sum_i w_{y_i} for
    'mean'); both formulas written out in float64 NumPy, against gpunet and torch."""
    rng = np.random.default_rng(8)
    z, y = rng.normal(size=(B, C)) * 3, rng.integers(0, C, B)
    cw, e = rng.uniform(0.2, 3.0, C), 0.2
    log_p = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - z.max(1, keepdims=True)
    ce_rows, smooth_rows = -log_p[np.arange(B), y], -log_p.sum(1) / C
    den = cw[y].sum() if reduction == "mean" else 1.0
    rows_weighted = (cw[y] * ((1 - e) * ce_rows + e * smooth_rows)).sum() / den
    class_weighted = ((1 - e) * (cw[y] * ce_rows).sum()
                      + e / C * (-(log_p * cw[None, :]).sum())) / den
    got = gn.CrossEntropyLoss(reduction, label_smoothing=e)(z, y, weight=cw[y])[0]
    want = torch_value_and_grad(torch, torch.nn.functional.cross_entropy, z, y,
                                weight=torch.tensor(cw), label_smoothing=e,
                                reduction=reduction)[0]
    assert float(got) == pytest.approx(rows_weighted, rel=1e-12)
    assert want == pytest.approx(class_weighted, rel=1e-12)
    assert abs(rows_weighted - class_weighted) > 1e-3 * abs(class_weighted)  # (they differ)


def test_bce_takes_check_range_as_cross_entropy_takes_check_labels():
    """BCELoss's docstring named check_range = False, but BCELoss(check_range=False) was a
    TypeError where CrossEntropyLoss(check_labels=False) is the constructor's argument."""
    y = np.random.default_rng(0).random((5, 2))
    logits = y * 4 - 2  # (values outside [0, 1]: logits given where probabilities belong)
    with pytest.raises(gn.ConfigError, match="probabilities in \\[0, 1\\]"):
        gn.BCELoss()(logits, y)
    gn.BCELoss(check_range=False)(logits, y)  # not checked: the caller vouches for them
    assert gn.get_loss("bce", check_range=False).config() == {"reduction": "mean",
                                                              "check_range": False}
    with pytest.raises(gn.ConfigError, match="check_range must be True or False"):
        gn.BCELoss(check_range="no")
