"""Divergence seen at an epoch's end: weights that the last update took past float32, and a
validation loss that is not finite; torch's float32 copy of the network is the reference that
the weights or outputs really are not finite."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import gpunet as gn
from gpunet.cli import main
from gpunet.data import make_dataset
from gpunet.interop import to_torch
from gpunet.train import TrainingDiverged, fit


def _classes(rows=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 3))
    return x, (x[:, 0] > 0).astype(int)


def test_an_update_that_overflows_in_a_runs_last_step_is_divergence(torch):
    """A step's loss is taken before its update, and without a checkpoint to write no one
    looked at the weights: a one-step run whose update overflows float32 returned, the model
    not finite (which a later fit refuses). Torch's SGD on the same network and batch
    overflows too."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 3))
    data = make_dataset("d", x, 100 * x[:, 0], "regression", val_fraction=0.0,
                        test_fraction=0.0, standardize=False)
    model = gn.MLP([3, 8, 1], backend="numpy", seed=0)
    net = to_torch(model)
    sgd = torch.optim.SGD(net.parameters(), lr=1e37)
    torch.nn.functional.mse_loss(net(torch.tensor(data.x_train, dtype=torch.float32)),
                                 torch.tensor(data.y_train.reshape(-1, 1), dtype=torch.float32)
                                 ).backward()
    sgd.step()
    assert not all(torch.isfinite(p).all() for p in net.parameters())
    with pytest.raises(TrainingDiverged, match=r"^the weights \(W1.*\) became infinite or NaN "
                                                r"in epoch 1: try a lower learning rate "
                                                r"\(now 1e\+37\)") as e:
        with np.errstate(all="ignore"):
            fit(model, data, gn.MSELoss(), gn.SGD(model, lr=1e37), epochs=1,
                batch_size=1000, progress=False)
    assert len(e.value.history) == 0  # (the epoch did not end well)


def test_an_estimator_whose_last_update_overflows_raises_and_stays_unfitted():
    """scikit-learn's MLPClassifier raises ValueError ("Solver produced non-finite parameter
    weights") there; the estimator returned NaN weights that predicted NaN."""
    x, y = _classes()
    clf = gn.MLPClassifier(hidden=(8,), lr=1e38, epochs=1, batch_size=1000, backend="numpy")
    with pytest.raises(TrainingDiverged, match=r"became infinite or NaN in epoch 1"):
        with np.errstate(all="ignore"):
            clf.fit(x, y)
    assert not hasattr(clf, "model_")


def test_a_validation_loss_that_is_not_finite_is_divergence(torch):
    """One validation row far outside the training rows makes its float32 squared error
    overflow: val_loss inf from the first epoch, which early stopping never bettered
    ("keeping the weights of epoch 0") and the run went on. The weights are finite; torch's
    copy of the network gives the same infinite loss, finite without that row."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 4))
    data = make_dataset("d", x, x @ [1.0, 2, 3, 4], "regression", val_fraction=0.2,
                        test_fraction=0.0)
    data.x_val[0, 0] = 1e30
    model = gn.MLP([4, 16, 1], backend="numpy", seed=0)
    with pytest.raises(TrainingDiverged, match=r"^the validation loss became inf at epoch 1: "
                                                r"the model's outputs on the validation rows, "
                                                r"or their loss, are not finite"):
        with np.errstate(all="ignore"):
            fit(model, data, gn.MSELoss(), gn.Adam(model, lr=0.01), epochs=5, patience=3,
                progress=False)
    assert all(np.isfinite(v).all() for v in model.params.values())
    out = to_torch(model)(torch.tensor(data.x_val, dtype=torch.float32))
    want = torch.tensor(data.y_val.reshape(-1, 1), dtype=torch.float32)
    assert not torch.isfinite(torch.nn.functional.mse_loss(out, want))
    assert torch.isfinite(torch.nn.functional.mse_loss(out[1:], want[1:]))


def test_the_cli_says_a_run_diverged_in_its_last_update(tmp_path, capsys):
    """``gpunet train --lr 1e38`` exited 0 with val_loss and test_loss NaN, and a model that
    ``evaluate`` refused; now it is a divergence, status 1."""
    assert main(["train", "--dataset", "iris", "--optimizer", "sgd", "--lr", "1e38",
                 "--batch-size", "1000", "--epochs", "1", "--backend", "numpy", "--quiet",
                 "--save", str(tmp_path / "c.npz")]) == 1
    err = capsys.readouterr().err
    assert "at epoch 1" in err or "in epoch 1" in err
    assert "try a lower learning rate (now 1e+38)" in err
    assert not (tmp_path / "c.npz").exists()


def test_a_run_that_diverges_at_an_epochs_end_writes_its_metrics_so_far(tmp_path):
    """--metrics-json of a run whose second epoch ends with outputs that are not finite holds
    the first epoch and says that it diverged."""
    j = tmp_path / "m.json"
    assert main(["train", "--dataset", "iris", "--optimizer", "sgd", "--lr", "1e12",
                 "--batch-size", "1000", "--epochs", "4", "--backend", "numpy", "--quiet",
                 "--metrics-json", str(j)]) == 1
    run = json.loads(j.read_text())
    assert run["stopped"] == "diverged" and run["epochs"] == len(run["history"]) == 1
    assert np.isfinite(run["history"][0]["val_loss"])
    assert re.match(r"the validation loss became (nan|inf) at epoch 2", run["error"])



def _regression(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((400, 8))
    y = x @ rng.standard_normal(8) + 0.1 * rng.standard_normal(400)
    return make_dataset("d", x, y, "regression", val_fraction=0.2, test_fraction=0.0)


def _sgd_run(model, data, epochs, patience=None, blow_up_at=None):
    """fit's run of SGD on ``data``; ``blow_up_at``: the step (counted over the run) before
    whose update the learning rate becomes 1e300."""
    opt = gn.SGD(model, lr=0.01, momentum=0.9)
    if blow_up_at is not None:
        inner, calls = opt.prepare_hyper, [0]

        def prepare():  # (once per step, eager or static, before its update)
            calls[0] += 1
            if calls[0] == blow_up_at:
                opt.lr = 1e300  # (inf in float32)
            return inner()

        opt.prepare_hyper = prepare
    with np.errstate(all="ignore"):
        return fit(model, data, gn.MSELoss(), opt, epochs=epochs, batch_size=32,
                   patience=patience, progress=False)


@pytest.mark.parametrize("step, said", [(25, r"the loss became (inf|nan) at epoch 3, step 6"),
                                        (30, r"the weights \(.*\) became infinite or NaN in "
                                             r"epoch 3")],
                         ids=["a step's loss", "the epoch's last update"])
def test_a_run_with_patience_that_diverges_keeps_its_best_epochs_weights(step, said):
    """With patience fit holds the best epoch's weights; a divergence threw them away and left
    the model NaN, which fit then refused to train on. Now the model holds them (those of a
    run stopped after that epoch, bit for bit) and the message says so."""
    data = _regression()
    model = gn.MLP([8, 32, 1], backend="numpy", seed=0)
    with pytest.raises(TrainingDiverged, match=said + r".*; the model holds epoch 2's weights, "
                                                      r"the best val_loss before it diverged \(the "
                                                      r"optimizer's state diverged with it: to "
                                                      r"train on, build a new optimizer\)$"
                       ) as e:
        _sgd_run(model, data, 6, patience=5, blow_up_at=step)
    history = e.value.history
    assert len(history) == 2 and history.best_epoch == 2
    assert history[1]["val_loss"] < history[0]["val_loss"]
    stopped = gn.MLP([8, 32, 1], backend="numpy", seed=0)
    _sgd_run(stopped, data, 2)  # (10 steps an epoch: the same first 2 epochs)
    for k, v in stopped.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v, err_msg=k)
    _sgd_run(model, data, 1)  # (fit takes the model on, as it refuses NaN weights)


def test_the_optimizer_a_run_diverged_with_is_refused_rather_than_blamed_later():
    """The best weights came back, but the SGD momenta stayed NaN: fit on with that optimiser
    started, its first update made the weights NaN again, and the message blamed a learning
    rate that was fine by then. Now fit refuses the optimiser's state up front; a new one
    trains on from the kept weights, finite, as torch's SGD does from them."""
    torch = pytest.importorskip("torch")
    data = _regression()
    model = gn.MLP([8, 32, 1], backend="numpy", seed=0, dtype="float64")
    opt = gn.SGD(model, lr=0.01, momentum=0.9)
    inner, calls = opt.prepare_hyper, [0]

    def prepare():
        calls[0] += 1
        if calls[0] == 25:
            opt.lr = 1e300
        return inner()

    opt.prepare_hyper = prepare
    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged):
        fit(model, data, gn.MSELoss(), opt, epochs=6, batch_size=32, patience=5, progress=False)
    opt.prepare_hyper = inner
    opt.lr = 0.01
    with pytest.raises(gn.ConfigError, match=r"the optimizer's state \(momentum_buffer of W1"
                                             r".*\) is not finite, as a diverged run leaves "
                                             r"it: build a new optimizer"):
        fit(model, data, gn.MSELoss(), opt, epochs=1, batch_size=400, progress=False)
    kept = {k: np.array(v) for k, v in model.state_dict().items()}
    fit(model, data, gn.MSELoss(), gn.SGD(model, lr=0.01), epochs=1, batch_size=320,
        progress=False)  # (one full batch of the 320 training rows)
    t = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(),
                            torch.nn.Linear(32, 1)).double()
    with torch.no_grad():
        for layer, i in ((t[0], 1), (t[2], 2)):
            layer.weight.copy_(torch.tensor(kept[f"W{i}"]))
            layer.bias.copy_(torch.tensor(kept[f"b{i}"]))
    loss = torch.nn.functional.mse_loss(t(torch.tensor(data.x_train)),
                                        torch.tensor(data.y_train).reshape(-1, 1))
    loss.backward()
    with torch.no_grad():
        want = t[0].weight - 0.01 * t[0].weight.grad
    np.testing.assert_allclose(model.state_dict()["W1"], want.numpy(), rtol=1e-10, atol=1e-12)


def test_an_early_stop_without_a_finite_figure_says_it_keeps_the_last_epochs_weights():
    """No epoch's val_mse was finite (targets near 1e300: their squared errors are past
    float64's range, as NumPy's mean of them says); the early stop said "keeping the weights
    of epoch 0", an epoch that is not; the model holds the last epoch's."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3))
    data = make_dataset("d", x, (x @ [1.0, 2, 3]) * 1e300, "regression", val_fraction=0.2,
                        test_fraction=0.0, dtype="float64")
    model = gn.MLP([3, 8, 1], backend="numpy", seed=0, dtype="float64")
    lines = []
    with np.errstate(all="ignore"):
        history = fit(model, data, gn.MSELoss(), gn.Adam(model, lr=0.01), epochs=6, patience=2,
                      monitor="val_mse", progress=False, log=lines.append)
        want = data.target_standardizer.inverse(data.y_val)
        got = data.target_standardizer.inverse(model.predict(data.x_val))
        assert np.mean((got - want) ** 2) == np.inf
    assert history.best_epoch == 0 and len(history) == 2
    assert lines[-1] == ("early stop: no better val_mse for 2 epochs; keeping the last epoch's "
                         "weights (no epoch had a finite val_mse)")


def test_a_test_loss_that_is_not_finite_is_said_in_a_line_not_numpys_warnings(torch, caplog):
    """Without validation rows nothing watches the outputs between epochs: SGD at lr 1e38
    leaves weights near float32's largest, whose outputs overflow. The test metrics printed
    NumPy's RuntimeWarnings with gpunet's source lines; now one line says what happened.
    Torch's float32 copy of the network overflows on the test rows as well."""
    import warnings

    x, y = _classes(200)
    data = make_dataset("d", x, y, "classification", val_fraction=0.0, test_fraction=0.2)
    model = gn.MLP([3, 8, 2], backend="numpy", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a RuntimeWarning would raise)
        history = fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=1e38), epochs=1,
                      batch_size=1000, progress=False)
    assert all(np.isfinite(v).all() for v in model.params.values())
    assert not np.isfinite(history.test["test_loss"])
    out = to_torch(model)(torch.tensor(data.x_test, dtype=torch.float32))
    assert not torch.isfinite(torch.nn.functional.cross_entropy(out, torch.tensor(data.y_test)))
    said = [r.getMessage() for r in caplog.records]
    assert any(re.match(r"gpunet: the test loss is (nan|inf): the model's outputs on the "
                        r"test rows, or their loss, are not finite", m)
               and "try a lower learning rate (now 1e+38)" in m for m in said), said


def test_a_run_that_diverges_in_its_first_epoch_still_writes_its_metrics(tmp_path, capsys):
    """A run that stopped before any epoch ended wrote no --metrics-json, so a file left at
    that path by an earlier run (a sweep's) passed for this one's figures. The JSON now says
    it stopped with no epoch done; the plot is not drawn, and that is said past --quiet."""
    j, png = tmp_path / "m.json", tmp_path / "p.png"
    flags = ["--dataset", "iris", "--optimizer", "sgd", "--batch-size", "1000", "--epochs", "2",
             "--backend", "numpy", "--quiet", "--metrics-json", str(j), "--plot", str(png)]
    assert main(["train", "--lr", "0.1", *flags]) == 0
    assert "stopped" not in json.loads(j.read_text()) and png.exists()
    png.write_bytes(b"an earlier run's plot")
    capsys.readouterr()
    assert main(["train", "--lr", "1e38", *flags]) == 1
    run = json.loads(j.read_text())
    assert run["stopped"] == "diverged" and run["epochs"] == 0 and run["history"] == []
    assert "at epoch 1" in run["error"] or "in epoch 1" in run["error"]
    assert f"gpunet: no epoch finished: no plot written to {png}" in capsys.readouterr().err
    assert png.read_bytes() == b"an earlier run's plot"  # (not the user's to lose)
