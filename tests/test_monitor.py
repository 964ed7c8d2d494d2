"""What early stopping and the best epoch go by (``fit(monitor=...)``, ``--monitor``): the best
epoch is the first best of the monitored column of the history, and the weights kept are that
epoch's (their metrics on the validation rows are that row's)."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet as gn
from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.data import DataSpec, load_data
from gpunet.train import fit, metrics


def _run(name, monitor, epochs=40, patience=6, lr=0.05):
    data = load_data(DataSpec(name, seed=3, val_fraction=0.3, test_fraction=0.1))
    n_out = data.n_classes if data.task == "classification" else 1
    model = gn.MLP([data.n_features, 64, n_out], backend="numpy", seed=1, dtype="float64")
    loss = gn.CrossEntropyLoss() if data.task == "classification" else gn.MSELoss()
    history = fit(model, data, loss, gn.Adam(model, lr=lr), epochs=epochs, batch_size=16,
                  patience=patience, monitor=monitor, progress=False)
    return data, model, loss, history


@pytest.mark.parametrize("name, monitor, best", [
    ("wine", "val_loss", np.argmin), ("wine", "val_accuracy", np.argmax),
    ("diabetes", "val_r2", np.argmax), ("diabetes", "val_mse", np.argmin),
])
def test_the_best_epoch_and_the_kept_weights_go_by_the_monitor(name, monitor, best):
    data, model, loss, history = _run(name, monitor)
    column = [row[monitor] for row in history]
    assert history.best_epoch == 1 + int(best(column))
    got = metrics(model, data.x_val, data.y_val, loss, data.task,
                  target=data.target_standardizer)
    kept = history[history.best_epoch - 1]
    for k, v in got.items():
        assert v == pytest.approx(kept[f"val_{k}"], rel=1e-9, abs=1e-12), k


def test_accuracy_and_loss_pick_different_epochs_here():
    """(So that the test above can tell the monitors apart.)"""
    _, _, _, by_loss = _run("wine", "val_loss", patience=40)
    _, _, _, by_accuracy = _run("wine", "val_accuracy", patience=40)
    assert by_loss.best_epoch != by_accuracy.best_epoch


def test_what_monitor_refuses(tmp_path):
    with pytest.raises(gn.ConfigError, match="val_accuracy is a classification figure; this is "
                                             "a regression task"):
        _run("diabetes", "val_accuracy")
    with pytest.raises(gn.ConfigError, match="unknown monitor 'accuracy'"):
        _run("wine", "accuracy")
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", "wine", "--monitor", "val_accuracy", "--patience", "3",
                 "--epochs", "2", "--backend", "numpy", "--quiet", "--save", str(ck)]) == 0
    assert load_checkpoint(ck).extra["training"]["monitor"] == "val_accuracy"
    assert main(["train", "--resume", str(ck), "--epochs", "4", "--backend", "numpy",
                 "--quiet"]) == 0  # the run's own monitor goes on
    ckpt = load_checkpoint(ck)
    data = load_data(DataSpec.from_json(ckpt.extra["data"]))
    model = ckpt.build_model("numpy")
    with pytest.raises(gn.ConfigError, match="this run monitored val_accuracy; resume it with "
                                             "the same monitor, not val_loss"):
        fit(model, data, gn.CrossEntropyLoss(), gn.Adam(model), epochs=6, batch_size=32,
            patience=3, resume=ckpt, progress=False)


def test_monitor_without_patience_says_the_last_weights_are_kept(tmp_path, capsys):
    """--monitor alone changed nothing but the JSON's best_epoch, without a word: the run kept
    its last epoch's weights, which the test split measured, not the monitored best."""
    m = tmp_path / "m.json"
    assert main(["train", "--dataset", "diabetes", "--monitor", "val_r2", "--epochs", "3",
                 "--backend", "numpy", "--quiet", "--metrics-json", str(m),
                 "--save", str(tmp_path / "c.npz")]) == 0
    err = capsys.readouterr().err
    assert "--monitor without --patience only picks the best_epoch" in err
    assert "keeps its last epoch's weights" in err
    import json

    assert json.loads(m.read_text())["weights_epoch"] == 3  # (what the line says)
    for flags in (["--monitor", "val_r2", "--patience", "2"], ["--min-delta", "0"], []):
        assert main(["train", "--dataset", "diabetes", "--epochs", "1", "--backend", "numpy",
                     "--quiet", *flags]) == 0
        err = capsys.readouterr().err
        assert ("without --patience" in err) == (flags == ["--min-delta", "0"]), flags


def test_the_estimators_take_it():
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    clf = gn.MLPClassifier(monitor="val_accuracy", patience=5, epochs=60, val_fraction=0.3,
                           backend="numpy").fit(x, y)
    assert clf.best_epoch_ == 1 + int(np.argmax(clf.validation_scores_))


def _stop_by_the_rule(column, sign, patience, min_delta):
    """Keras's EarlyStopping rule walked over a history column: (the best epoch, the epoch the
    run stops at, or None)."""
    best, best_epoch, bad = np.inf, 0, 0
    for epoch, v in enumerate(column, 1):
        if sign * v < best - min_delta:
            best, best_epoch, bad = sign * v, epoch, 0
        else:
            bad += 1
            if bad >= patience:
                return best_epoch, epoch
    return best_epoch, None


@pytest.mark.parametrize("name, monitor, sign, patience, min_delta", [
    ("wine", "val_loss", 1, 6, 0.01), ("diabetes", "val_r2", -1, 4, 0.05),
    ("diabetes", "val_mse", 1, 4, 250.0),
])
def test_min_delta_asks_for_an_improvement_by_more_than_it(name, monitor, sign, patience,
                                                           min_delta):
    data, model, loss, history = _run(name, monitor, patience=40, epochs=40)  # no stop
    column = [row[monitor] for row in history]
    # the rule finds a different best epoch and stop with min_delta than without it here
    rule = _stop_by_the_rule(column, sign, patience, min_delta)
    assert rule != _stop_by_the_rule(column, sign, patience, 0)
    data = load_data(DataSpec(name, seed=3, val_fraction=0.3, test_fraction=0.1))
    n_out = data.n_classes if data.task == "classification" else 1
    model = gn.MLP([data.n_features, 64, n_out], backend="numpy", seed=1, dtype="float64")
    history = fit(model, data, loss, gn.Adam(model, lr=0.05), epochs=40, batch_size=16,
                  patience=patience, monitor=monitor, min_delta=min_delta, progress=False)
    best_epoch, stop = rule
    assert [row[monitor] for row in history] == column[:len(history)]  # the same run so far
    assert (history.best_epoch, len(history) if history.stopped_early else None) \
        == (best_epoch, stop)
    got = metrics(model, data.x_val, data.y_val, loss, data.task,
                  target=data.target_standardizer)
    for k, v in got.items():  # the weights kept are the best epoch's
        assert v == pytest.approx(history[best_epoch - 1][f"val_{k}"], rel=1e-9, abs=1e-12), k


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "0.1", None, 10**400])
def test_what_min_delta_refuses(bad):
    with pytest.raises(gn.ConfigError, match="min_delta must be a finite number >= 0"):
        data = load_data(DataSpec("wine", seed=3, val_fraction=0.3))
        model = gn.MLP([data.n_features, 8, 3], backend="numpy")
        fit(model, data, gn.CrossEntropyLoss(), gn.Adam(model), epochs=1, patience=2,
            min_delta=bad, progress=False)


def test_min_delta_on_the_command_line_is_saved_and_kept_on_resume(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "wine", "--min-delta", "-1"])
    assert "--min-delta: expected a number >= 0, got -1" in capsys.readouterr().err
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", "wine", "--patience", "3", "--min-delta", "0.5",
                 "--epochs", "30", "--backend", "numpy", "--quiet", "--save", str(ck)]) == 0
    ckpt = load_checkpoint(ck)
    assert ckpt.extra["training"]["min_delta"] == 0.5
    state = ckpt.extra["training"]["state"]
    column = [row["val_loss"] for row in state["history"]]
    assert _stop_by_the_rule(column, 1, 3, 0.5) == (state["best_epoch"], state["epoch"])
    assert state["stopped_early"] and state["epoch"] < 30
    assert main(["train", "--dataset", "wine", "--patience", "3", "--min-delta", "0.01",
                 "--epochs", "2", "--backend", "numpy", "--quiet", "--save", str(ck)]) == 0
    assert main(["train", "--resume", str(ck), "--epochs", "3", "--backend", "numpy",
                 "--quiet"]) == 0
    assert load_checkpoint(ck).extra["training"]["min_delta"] == 0.01
    assert main(["train", "--resume", str(ck), "--epochs", "4", "--min-delta", "0.01",
                 "--backend", "numpy", "--quiet"]) == 0  # the same value: no change
    assert main(["train", "--resume", str(ck), "--epochs", "5", "--min-delta", "0.2",
                 "--backend", "numpy", "--quiet"]) == 1
    assert "--min-delta cannot change them" in capsys.readouterr().err
    ckpt = load_checkpoint(ck)
    data = load_data(DataSpec.from_json(ckpt.extra["data"]))
    model = ckpt.build_model("numpy")
    with pytest.raises(gn.ConfigError, match="this run's min_delta was 0.01; resume it with "
                                             "the same, not 0"):
        fit(model, data, gn.CrossEntropyLoss(), gn.Adam(model), epochs=6, batch_size=32,
            patience=3, resume=ckpt, progress=False)


def test_the_estimators_take_min_delta():
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    clf = gn.MLPClassifier(patience=3, min_delta=10.0, epochs=60, val_fraction=0.3,
                           backend="numpy").fit(x, y)
    assert (clf.n_iter_, clf.best_epoch_) == (4, 1)  # nothing betters epoch 1 by 10
    clf = gn.MLPClassifier(patience=3, epochs=60, val_fraction=0.3, backend="numpy").fit(x, y)
    assert clf.n_iter_ > 4
