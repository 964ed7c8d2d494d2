"""A batch norm synced over data-parallel ranks (``torch.nn.SyncBatchNorm``): each rank holds a
share of a batch's rows, and the ranks together must normalise, and differentiate, the whole
batch as one process does.

The ranks here are threads that meet in a barrier-based all-reduce written in this file, so
the arithmetic is checked without MPI (tests/test_distributed.py trains under ``mpiexec``).
References, none from the code under test:

* the ops (``batch_norm_forward_synced`` / ``batch_norm_backward_synced``) over shares of a
  batch, including empty and one-row shares, against the batch norm's formulas in float64
  NumPy over the whole batch, written here;
* a model's training pass split over ranks (forward, every gradient summed over the ranks,
  dJ/dx, the running statistics) against a PyTorch net of ``nn.BatchNorm1d`` on the whole
  batch under autograd (tests/test_batch_norm.py builds it from the model's state dict).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import host
from test_batch_norm import (SIZES, assert_close, assert_grads_match, make_model, torch_net,
                             torch_pass, torch_stats)

import gpunet as gn
from gpunet.distributed import shard


class ThreadRanks:
    """``size`` ranks as threads; ``allreduce(a)`` sums a float64 array over them in place, in
    rank order (every rank gets the same bits), after a barrier, as an MPI all-reduce does."""

    def __init__(self, size, backend=None):
        self.size = size
        self.backend = backend or gn.get_backend("numpy")
        self.barrier = threading.Barrier(size, timeout=20)
        self.slots = [None] * size
        self.calls = [0] * size

    def allreduce_of(self, rank):
        def allreduce(a):
            assert a.dtype == np.float64
            self.calls[rank] += 1
            self.slots[rank] = np.array(host(a))
            self.barrier.wait()
            total = np.zeros_like(self.slots[0])
            for part in self.slots:
                total += part
            self.barrier.wait()  # every rank has read the slots before any writes again
            a[...] = self.backend.asarray(total)
            return a
        return allreduce

    def run(self, work):
        """``work(rank, allreduce)`` on every rank at once; returns the results in rank order
        (an exception in a rank is returned as that rank's result)."""
        results = [None] * self.size

        def target(rank):
            try:
                results[rank] = work(rank, self.allreduce_of(rank))
            except BaseException as e:  # noqa: BLE001 - handed to the test (a rank that
                results[rank] = e          # others still wait for breaks their barrier's timeout)

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return results


def shares(rows, size):
    return [slice(*shard(rows, r, size)) for r in range(size)]


def reference(z, dn, gamma, eps):
    """The batch norm over the whole batch in float64: n, xhat, mean, var and dJ/dz, dJ/dgamma,
    dJ/dbeta for dJ/dn = dn (docs/math.md)."""
    z, dn, gamma = (np.asarray(a, dtype=np.float64) for a in (z, dn, gamma))
    mean, var = z.mean(axis=0), z.var(axis=0)
    rstd = 1 / np.sqrt(var + eps)
    xhat = (z - mean) * rstd
    g = dn * gamma
    dz = rstd * (g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0))
    return xhat, mean, var, dz, (dn * xhat).sum(axis=0), dn.sum(axis=0)


# -- the ops ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rows,size", [(37, 2), (37, 3), (5, 4), (2, 2), (300, 3)],
                         ids=["37-on-2", "37-on-3", "5-on-4-one-empty", "one-row-each",
                              "300-on-3"])
def test_synced_ops_over_shares_are_the_batch_norm_of_the_whole_batch(backend, dtype, rows,
                                                                      size):
    """Each rank's rows of n and xhat, the statistics (the same on every rank), the batch's
    row count; then each rank's rows of dJ/dz, and its dJ/dgamma, dJ/dbeta, which summed over
    the ranks are the batch's. Features far from 0 (mean 40, std 3), widths past 32."""
    d, eps = 45, 1e-5
    rng = np.random.default_rng(rows + size)
    z = (rng.normal(40.0, 3.0, (rows, d)) * rng.uniform(0.5, 2, d)).astype(dtype)
    dn = rng.normal(0, 1, (rows, d)).astype(dtype)
    gamma = rng.uniform(0.3, 1.8, d).astype(dtype)
    beta = rng.normal(0, 0.6, d).astype(dtype)
    xhat_ref, mean_ref, var_ref, dz_ref, dgamma_ref, dbeta_ref = reference(z, dn, gamma, eps)
    parts = shares(rows, size)

    def work(rank, allreduce):
        zr, dnr = backend.asarray(z[parts[rank]]), backend.asarray(dn[parts[rank]])
        g, b = backend.asarray(gamma), backend.asarray(beta)
        n, xhat, rstd, mean, var, total = backend.batch_norm_forward_synced(zr, g, b, eps,
                                                                          allreduce)
        dz, dgamma, dbeta = backend.batch_norm_backward_synced(dnr, xhat, rstd, g, total,
                                                               allreduce)
        return [host(a) for a in (n, xhat, rstd, mean, var, dz, dgamma, dbeta)] + [total]

    out = ThreadRanks(size, backend).run(work)
    for r in out:
        assert not isinstance(r, BaseException), r
    n, xhat, rstd, mean, var, dz = (np.concatenate([r[i] for r in out]) for i in range(6))
    for r in out:
        assert r[-1] == rows
        for a, ref, what in ((r[3], mean_ref, "mean"), (r[4], var_ref, "var"),
                             (r[2], 1 / np.sqrt(var_ref + eps), "rstd")):
            assert a.dtype == dtype and a.shape == (1, d), what
            assert_close(a[0], ref, dtype, what)
    assert n.dtype == xhat.dtype == dz.dtype == dtype
    assert_close(xhat, xhat_ref, dtype, "xhat")
    assert_close(n, xhat_ref * gamma + beta, dtype, "n")
    # dJ/dz is what is left of rstd (g - mean g - xhat mean(g xhat)): held to those terms'
    # scale (a batch of two rows leaves about 1e-3 of them, as torch's float32 does too)
    g = np.abs(np.asarray(dn, np.float64) * gamma)
    terms = (g + g.mean(axis=0) + np.abs(xhat_ref) * (g * np.abs(xhat_ref)).mean(axis=0)) \
        / np.sqrt(var_ref + eps)
    tol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    assert np.all(np.abs(dz - dz_ref) <= tol * terms), np.abs(dz - dz_ref).max()
    # float32 sums of a feature's dn xhat over a rank's rows cancel: held to their terms' scale
    scale = np.abs(np.asarray(dn, np.float64) * xhat_ref).sum(axis=0)
    for i, (ref, what) in enumerate(((dgamma_ref, "dJ/dgamma"), (dbeta_ref, "dJ/dbeta"))):
        got = sum(np.asarray(r[6 + i], dtype=np.float64) for r in out)
        assert np.all(np.abs(got - ref) <= tol * (scale if i == 0 else
                                                  np.abs(dn).sum(axis=0))), what


def test_a_batch_of_one_row_over_the_ranks_is_refused_on_every_rank():
    """One row on rank 0 and none on rank 1: the batch has one row, which a batch norm's
    training pass refuses (as torch's), on both ranks alike, after the count is reduced."""
    model_of = [make_model("numpy", np.float64, seed=3) for _ in range(2)]
    x = np.random.default_rng(0).normal(size=(1, SIZES[0]))
    parts = shares(1, 2)

    def work(rank, allreduce):
        with model_of[rank].synced_batch_norm(allreduce):
            model_of[rank].forward(x[parts[rank]])

    out = ThreadRanks(2).run(work)
    for e in out:
        assert isinstance(e, gn.ShapeError) and "at least 2 rows" in str(e), e


# -- a model's training pass over ranks ----------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("rows,size", [(23, 2), (3, 4)], ids=["23-on-2", "3-on-4-one-empty"])
def test_a_pass_split_over_ranks_is_torchs_over_the_whole_batch(backend, dtype, torch,
                                                               activation, rows, size):
    """Replicas of one model, each given its rank's share of x and of R = dJ/dy_hat
    (J = sum(y_hat R) over the whole batch, so each share of R is already in the batch's
    units), inside ``synced_batch_norm``: the outputs concatenated, dJ/dx concatenated, each
    gradient summed over the ranks and the running statistics on every rank are those of
    torch's BatchNorm1d net on the whole batch. A rank without rows takes part and adds
    nothing."""
    replicas = [make_model(backend, dtype, activation, seed=4, stats=True) for _ in range(size)]
    net = torch_net(torch, replicas[0])
    rng = np.random.default_rng(rows * 7 + size)
    x = (rng.standard_normal((rows, SIZES[0])) * 1.5 + 0.3).astype(dtype)
    R = rng.standard_normal((rows, SIZES[-1])).astype(dtype)
    parts = shares(rows, size)

    def work(rank, allreduce):
        model = replicas[rank]
        with model.synced_batch_norm(allreduce):
            y_hat = model.forward(backend.asarray(x[parts[rank]]))
            dJdx = model.backward(backend.asarray(R[parts[rank]]))
        return host(y_hat), host(dJdx)

    ranks = ThreadRanks(size, backend)
    out = ranks.run(work)
    for r in out:
        assert not isinstance(r, BaseException), r
    assert len(set(ranks.calls)) == 1 and ranks.calls[0] == 3 * (len(SIZES) - 2)
    y, dx_ref, taps = torch_pass(torch, net, x, R)
    assert_close(np.concatenate([r[0] for r in out]), host(y), dtype, "forward")
    assert_close(np.concatenate([r[1] for r in out]), host(dx_ref), dtype, "dJ/dx")

    summed = replicas[0]  # a stand-in model holding the gradients summed over the ranks
    summed.grads = {k: sum(np.asarray(host(m.grads[k]), dtype=np.float64) for m in replicas)
                    .astype(dtype) for k in summed.params}
    if backend.name != "numpy":
        summed.grads = {k: backend.asarray(v) for k, v in summed.grads.items()}
    assert_grads_match(torch, summed, net, taps, dtype)
    for model in replicas:
        for k, r in torch_stats(torch, net).items():
            assert_close(model.buffers[k], r, dtype, k)
            np.testing.assert_array_equal(host(model.buffers[k]),
                                          host(replicas[0].buffers[k]), err_msg=k)


def test_outside_the_block_the_norms_are_a_process_own_again():
    """``synced_batch_norm`` unsets the all-reduce on leaving, also on an error: a pass after
    it normalises its own rows and calls nothing."""
    model = make_model("numpy", np.float64, seed=8)
    calls = []

    def allreduce(a):
        calls.append(a.size)
        return a

    x = np.random.default_rng(1).normal(size=(6, SIZES[0]))
    with pytest.raises(RuntimeError, match="inside"):
        with model.synced_batch_norm(allreduce):
            model.forward(x)
            raise RuntimeError("inside")
    assert len(calls) == 2 * (len(SIZES) - 2)  # one rank: its sums are the batch's
    calls.clear()
    alone = make_model("numpy", np.float64, seed=8)  # the same weights, never synced
    np.testing.assert_array_equal(model.forward(x), alone.forward(x))
    assert calls == []
