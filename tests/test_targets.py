"""Regression targets standardised like the features: fitted on the training rows, the model
trained on them, every reported MSE / R^2 and every prediction back in the targets' units, the
statistics stored in the checkpoint, runs of earlier versions (raw targets) still resumed,
evaluated and predicted as they were trained."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gpunet as gn
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.cli import main
from gpunet.data import DataSpec, load_data, load_split, make_dataset
from gpunet.train import fit


def test_regression_targets_are_standardised_with_the_training_rows():
    d = load_data(DataSpec("diabetes", seed=3))
    t = d.target_standardizer
    assert t is not None and d.y_train.shape[1] == 1
    np.testing.assert_allclose(d.y_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(d.y_train.std(axis=0), 1, rtol=1e-12)
    raw = load_split(d.spec, "test", d.standardizer)[1]  # no target standardizer: as given
    assert raw.min() >= 25 and raw.max() <= 346  # diabetes' own units
    np.testing.assert_allclose(t.inverse(d.y_test), raw, rtol=1e-12)
    assert load_data(DataSpec("iris")).target_standardizer is None  # labels stay labels


def test_standardisation_can_be_left_off():
    d = load_data(DataSpec("diabetes", standardize_targets=False))
    assert d.target_standardizer is None and d.y_train.min() >= 25
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 3)), 100 + 10 * rng.standard_normal(50)
    m = make_dataset("arrays", x, y, "regression", standardize=False)
    assert m.standardizer is None and m.target_standardizer is None
    np.testing.assert_array_equal(np.sort(np.concatenate([m.y_train, m.y_test]).ravel()),
                                  np.sort(y))
    with pytest.raises(gn.ConfigError, match="standardize_targets"):
        load_data(DataSpec("diabetes", standardize_targets="yes"))


def test_a_spec_stored_before_the_field_existed_reads_as_raw_targets():
    old = DataSpec("diabetes").to_json()
    del old["standardize_targets"]
    assert DataSpec.from_json(old).standardize_targets is False
    assert DataSpec.from_json(DataSpec("diabetes").to_json()).standardize_targets is True


def test_fit_reports_mse_and_r2_in_the_targets_units(tmp_path):
    d = load_data(DataSpec("diabetes", seed=1))
    model = gn.MLP([10, 16, 1], seed=0)
    history = fit(model, d, gn.MSELoss(), gn.Adam(model, lr=1e-2), epochs=15, batch_size=32,
                  progress=False, save=tmp_path / "c.npz")
    t = d.target_standardizer
    y_hat = model.predict(d.x_test)
    raw_pred, raw_y = t.inverse(y_hat.astype(np.float64)), t.inverse(d.y_test)
    mse = float(((raw_pred - raw_y) ** 2).mean())
    r2 = 1 - mse / float(((raw_y - raw_y.mean()) ** 2).mean())
    assert history.test["test_mse"] == pytest.approx(mse, rel=1e-6)
    assert history.test["test_r2"] == pytest.approx(r2, rel=1e-6)
    # the loss is the objective trained on: standardised units
    std_mse = float(((y_hat.astype(np.float64) - d.y_test) ** 2).mean())
    assert history.test["test_loss"] == pytest.approx(std_mse, rel=1e-5)
    assert history.test["test_mse"] > 100 * history.test["test_loss"]  # diabetes' std is ~77
    ck = load_checkpoint(tmp_path / "c.npz")
    np.testing.assert_array_equal(ck.target_standardizer.mean, t.mean)
    np.testing.assert_array_equal(ck.target_standardizer.std, t.std)


def test_a_bounded_output_cannot_train_on_standardised_targets():
    d = load_data(DataSpec("diabetes"))
    model = gn.MLP([10, 8, 1], output="sigmoid", seed=0)
    with pytest.raises(gn.ConfigError, match="sigmoid output cannot reach"):
        fit(model, d, gn.MSELoss(), gn.SGD(model, lr=0.1), epochs=1, progress=False)


def test_the_cli_trains_a_bundled_regression_set_well_with_its_defaults(tmp_path):
    """diabetes' targets (25 to 346) with the default 30 epochs: raw, the run ended at an R^2
    of -2.0 (the outputs had not reached the targets' scale); standardised, it learns."""
    m = tmp_path / "m.json"
    assert main(["train", "--dataset", "diabetes", "--quiet", "--backend", "numpy",
                 "--metrics-json", str(m)]) == 0
    assert json.loads(m.read_text())["test_r2"] > 0.15


def test_predict_and_evaluate_speak_the_targets_units(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 3))
    y = 1000 + 50 * (x @ np.array([1.0, -2.0, 0.5])) + rng.standard_normal(400)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ck, metrics = tmp_path / "c.npz", tmp_path / "m.json"
    assert main(["train", "--dataset", str(tmp_path / "x.npy"), "--target",
                 str(tmp_path / "y.npy"), "--task", "regression", "--epochs", "60", "--quiet",
                 "--backend", "numpy", "--save", str(ck), "--metrics-json", str(metrics)]) == 0
    trained = json.loads(metrics.read_text())
    assert trained["test_r2"] > 0.95
    np.save(tmp_path / "new.npy", x[:20])
    assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "new.npy"),
                 "--output", str(tmp_path / "p.npy"), "--backend", "numpy"]) == 0
    pred = np.load(tmp_path / "p.npy").ravel()
    truth = 1000 + 50 * (x[:20] @ np.array([1.0, -2.0, 0.5]))
    assert np.abs(pred - truth).max() < 30  # in the targets' units, not standardised ones
    evaluated = tmp_path / "e.json"
    assert main(["evaluate", "--checkpoint", str(ck), "--backend", "numpy",
                 "--metrics-json", str(evaluated)]) == 0
    e = json.loads(evaluated.read_text())
    for k in ("test_loss", "test_mse", "test_r2"):
        assert e[k] == pytest.approx(trained[k], rel=1e-6)


def _as_earlier_version(path):
    """Rewrite a checkpoint as gpunet before target standardisation wrote it: no target
    statistics and a data spec without the field."""
    ck = load_checkpoint(path)
    extra = dict(ck.header["extra"])
    extra["data"] = {k: v for k, v in extra["data"].items() if k != "standardize_targets"}
    model = ck.build_model("numpy")
    opt = gn.get_optimizer(ck.header["optimizer"]["name"], model, lr=1.0)
    ck.load_optimizer(opt)
    save_checkpoint(path, model, opt, epoch=ck.epoch, standardizer=ck.standardizer,
                    extra=extra, arrays=ck.arrays)


def test_a_run_on_raw_targets_resumes_on_raw_targets(tmp_path):
    spec = DataSpec("diabetes", seed=2, standardize_targets=False)
    path, full = tmp_path / "r.npz", tmp_path / "full.npz"
    for p, epochs in ((path, 2), (full, 4)):
        model = gn.MLP([10, 8, 1], seed=1)
        fit(model, load_data(spec), gn.MSELoss(), gn.SGD(model, lr=1e-4), epochs=epochs,
            batch_size=32, progress=False, save=p, data_spec=spec.to_json())
    _as_earlier_version(path)
    assert load_checkpoint(path).target_standardizer is None
    assert main(["train", "--resume", str(path), "--epochs", "4", "--quiet",
                 "--backend", "numpy"]) == 0
    a, b = load_checkpoint(path).params, load_checkpoint(full).params
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # as one unbroken run
    # data standardised now, the checkpoint trained raw: refused, saying why
    model = load_checkpoint(path).build_model("numpy")
    with pytest.raises(gn.ConfigError, match="trained on targets as given"):
        fit(model, load_data(DataSpec("diabetes", seed=2)), gn.MSELoss(),
            gn.SGD(model, lr=1e-4), epochs=5, batch_size=32, progress=False,
            resume=load_checkpoint(path))


def test_the_run_header_says_the_loss_is_on_standardised_targets(capsys):
    assert main(["train", "--dataset", "diabetes", "--epochs", "1", "--backend", "numpy"]) == 0
    assert "mse on standardised targets" in capsys.readouterr().err
    assert main(["train", "--dataset", "iris", "--epochs", "1", "--backend", "numpy"]) == 0
    assert "standardised" not in capsys.readouterr().err
