"""``gpunet.train.metrics``' R^2 against scikit-learn's ``r2_score`` (its default: each target
column's own R^2, averaged uniformly over the columns): targets whose columns differ in scale by
six orders of magnitude, a constant column, sample weights, one process and ranks whose sums are
added up (a stand-in communicator, no MPI), and a whole ``fit`` of a two-target regressor."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mean_squared_error, r2_score

import gpunet as gn
from gpunet.data import Standardizer, make_dataset
from gpunet.train import fit, metrics, r2_from_sums

#: the three target columns' scales: an R^2 pooled over all elements is the third column's alone
SCALES = np.array([1e-3, 1.0, 1e3])


def _targets(rng, n, constant=False):
    """(n, 3) targets of very different scales, loosely predictable; the last column constant
    (5.0, exact in float64) where ``constant``."""
    y = rng.normal(size=(n, 3)) * SCALES + np.array([0.0, 10.0, -300.0])
    if constant:
        y[:, 2] = 5.0
    return y


@pytest.mark.parametrize("constant", [False, True], ids=["varying", "constant_column"])
def test_r2_from_sums_is_sklearns_uniform_average(constant):
    """Per column about its own mean, then the plain mean over columns."""
    rng = np.random.default_rng(3)
    y = _targets(rng, 40, constant)
    y_hat = y + rng.normal(size=y.shape) * SCALES * np.array([0.3, 0.8, 1.5])
    sse = ((y_hat - y) ** 2).sum(axis=0)
    want = r2_score(y, y_hat)
    assert r2_from_sums(sse, y) == pytest.approx(want, rel=1e-12, abs=1e-14)
    if not constant:  # the pooled figure this replaces is another: the third column's alone
        pooled = r2_score(y, y_hat, multioutput="variance_weighted")
        assert abs(want - pooled) > 0.5


@pytest.mark.parametrize("exact, score", [(True, 1.0), (False, 0.0)])
def test_a_constant_column_scores_as_sklearns_force_finite(exact, score):
    """A constant column counts 1 where its predictions are exact, else 0 (never NaN or -inf),
    in the average with the other columns."""
    rng = np.random.default_rng(4)
    y = _targets(rng, 30, constant=True)
    y_hat = y + rng.normal(size=y.shape) * SCALES * 0.5
    if exact:
        y_hat[:, 2] = y[:, 2]
    sse = ((y_hat - y) ** 2).sum(axis=0)
    per_column = r2_score(y, y_hat, multioutput="raw_values")
    assert per_column[2] == score
    assert r2_from_sums(sse, y) == pytest.approx(r2_score(y, y_hat), rel=1e-12)


def test_fewer_than_two_rows_have_no_r2():
    """As scikit-learn: R^2 is not defined on one row (NaN), whatever the columns."""
    assert np.isnan(r2_from_sums(np.zeros(3), np.ones((1, 3))))


def _model_and_data(backend, n=50, constant=False, outputs=3):
    """A float64 MLP, features, and targets standardised by a Standardizer of the columns'
    scales (so the model predicts in standardised units, as ``fit`` trains it)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 4))
    raw = _targets(rng, n, constant)[:, :outputs]
    target = Standardizer(raw.mean(axis=0) + 0.1 * SCALES[:outputs], SCALES[:outputs] * 2.0)
    model = gn.MLP([4, 8, outputs], backend=backend, seed=1, dtype="float64")
    return model, x, target(raw), target


def _expected(model, x, y_std, target, w):
    """scikit-learn's figures in the targets' units, from the model's host predictions."""
    pred = target.inverse(np.asarray(model.backend.to_host(model.predict(
        model.backend.asarray(x)))))
    y = target.inverse(y_std)
    return r2_score(y, pred, sample_weight=w), mean_squared_error(y, pred)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("constant", [False, True], ids=["varying", "constant_column"])
def test_metrics_r2_is_sklearns_on_several_targets(backend, weighted, constant):
    """R^2 is r2_score's; sample weights weight the loss only: R^2 and the MSE count every
    row once (as the README says of the metrics)."""
    model, x, y, target = _model_and_data(backend, constant=constant)
    w = np.random.default_rng(6).uniform(0.1, 3.0, len(x)) if weighted else None
    m = metrics(model, x, y, gn.MSELoss(), "regression", target=target, weight=w)
    r2, mse = _expected(model, x, y, target, None)
    assert m["r2"] == pytest.approx(r2, rel=1e-10)
    assert m["mse"] == pytest.approx(mse, rel=1e-10)


def test_single_output_r2_is_unchanged(backend):
    """One target column: sklearn's r2_score, which is also the former 1 - MSE / variance."""
    model, x, y, target = _model_and_data(backend, outputs=1)
    m = metrics(model, x, y, gn.MSELoss(), "regression", target=target)
    r2, mse = _expected(model, x, y, target, None)
    raw = target.inverse(y)
    assert m["r2"] == pytest.approx(r2, rel=1e-12)
    assert m["r2"] == pytest.approx(1 - mse / ((raw - raw.mean()) ** 2).mean(), rel=1e-12)


class _Recorded(Exception):
    """A rank's all-reduce input was recorded; its call ends here (first pass)."""


class _Rank:
    """One of ``size`` ranks, played one after another: without ``total`` its ``allreduce``
    records what it is given and stops; with it, hands back the sum over all ranks."""

    def __init__(self, rank, size, total=None):
        self.rank, self.size, self.total, self.sent = rank, size, total, None

    def allreduce(self, values, op="sum"):
        assert op == "sum"
        if self.total is None:
            self.sent = np.array(values, dtype=np.float64)
            raise _Recorded
        assert len(values) == len(self.total)  # every rank sends a vector of one length
        return self.total.copy()


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("rows, size", [(50, 2), (50, 3), (3, 4)], ids=["2", "3", "4_one_empty"])
def test_ranks_adding_their_column_sums_give_one_process_r2(weighted, rows, size):
    """``metrics`` with a communicator: each rank sends its shares' per-column sums in one
    vector; every rank then reports one process's figures (a rank may have no rows)."""
    model, x, y, target = _model_and_data("numpy", n=rows, constant=True)
    w = np.random.default_rng(7).uniform(0.1, 3.0, rows) if weighted else None
    args = (model, x, y, gn.MSELoss(), "regression")
    ranks = [_Rank(r, size) for r in range(size)]
    for rank in ranks:
        with pytest.raises(_Recorded):
            metrics(*args, comm=rank, target=target, weight=w)
    total = sum(rank.sent for rank in ranks)
    alone = metrics(*args, target=target, weight=w)
    r2, _ = _expected(model, x, y, target, None)
    for r in range(size):
        got = metrics(*args, comm=_Rank(r, size, total), target=target, weight=w)
        assert got["r2"] == pytest.approx(r2, rel=1e-10)
        for k in ("loss", "mse", "r2"):
            assert got[k] == pytest.approx(alone[k], rel=1e-10), k


def test_fit_reports_sklearns_r2_of_two_targets_on_different_scales():
    """A whole run (validation history and test figures) on two targets whose scales differ
    by 1e4: val_r2 and test_r2 are r2_score of the targets and predictions in their units."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 3))
    y = np.column_stack([x[:, 0] + 0.3 * rng.normal(size=300),
                         1e4 * (np.tanh(x[:, 1]) + 0.5 * rng.normal(size=300))])
    data = make_dataset("two", x, y, "regression", seed=1, val_fraction=0.2)
    model = gn.MLP([3, 16, 2], seed=0, dtype="float64")
    history = fit(model, data, gn.MSELoss(), gn.Adam(model, lr=1e-2), epochs=4, batch_size=32,
                  progress=False)
    t = data.target_standardizer
    for split, r2 in (("val", history[-1]["val_r2"]), ("test", history.test["test_r2"])):
        xs, ys = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        want = r2_score(t.inverse(ys), t.inverse(model.predict(xs)))
        assert r2 == pytest.approx(want, rel=1e-10), split


def test_r2_of_a_constant_column_whose_mean_rounds_is_that_of_a_constant_column():
    """Five rows of -1.946066276384646 have a float mean 2.2e-16 off, so sst came out 1e-32
    rather than 0 and R^2 -1e29 (a target column constant in an evaluated file, back from
    standardised units): a column whose values are all equal is constant, scoring 0 (or 1
    where predicted exactly), as scikit-learn scores a constant column whose mean is exact."""
    from sklearn.metrics import r2_score

    from gpunet.train import r2_from_sums

    v = -1.946066276384646
    y = np.full((5, 1), v)
    assert y.mean() != v  # (the case: the mean rounds)
    y_hat = y + np.random.default_rng(1).normal(size=(5, 1)) * 0.1
    exact = np.full((5, 1), 0.5)  # (a constant whose mean is exact: scikit-learn's rule)
    assert r2_from_sums(((y_hat - y) ** 2).sum(axis=0), y) == r2_score(
        exact, exact + (y_hat - y)) == 0.0
    assert r2_from_sums(np.zeros(1), y) == r2_score(exact, exact) == 1.0
