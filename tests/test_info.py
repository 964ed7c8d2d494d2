"""``gpunet info --checkpoint PATH``: what a checkpoint holds, as the run that wrote it knows
it."""

from __future__ import annotations

import numpy as np
import pytest

from gpunet.cli import main

from test_categorical import penguins, write


def _info(capsys, path):
    assert main(["info", "--checkpoint", str(path)]) == 0
    return capsys.readouterr().out.splitlines()


def test_a_training_run_is_described(tmp_path, capsys):
    sp, isl, bill, depth, sex = penguins()
    path = write(tmp_path / "p.csv", [sp, isl, bill, depth, sex],
                 ["species", "island", "bill", "depth", "sex"])
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", path, "--target", "species", "--epochs", "3",
                 "--hidden", "16", "--batch-size", "20", "--quiet", "--backend", "numpy",
                 "--save", str(ck)]) == 0
    capsys.readouterr()
    lines = _info(capsys, ck)
    assert lines[1] == ("model: sizes [7, 16, 3], activation relu, output identity, float32, "
                        f"{7 * 16 + 16 + 16 * 3 + 3} parameters")
    assert lines[2] == "task: classification, 3 classes: Adelie, Chinstrap, Gentoo"
    assert lines[3] == ("features: 7 inputs from 4 columns: island (Biscoe, Dream, Torgersen), "
                        "bill, depth, sex (female, male)")
    assert lines[4] == "standardised: features yes"
    assert lines[5] == f"data: {path} (target species), seed 0, validation 0.1, test 0.2"
    train_rows = 240 - 48 - 24  # test: ceil(0.2 n); validation: ceil(0.1 n)
    steps = 3 * -(-train_rows // 20)
    assert lines[6] == ("training: 3 of 3 epochs done, batch 20, seed 0, loss cross_entropy, "
                        f"adam lr=0.001 ({steps} steps)")
    assert lines[7] == "optimizer: adam lr 0.001, betas (0.9, 0.999), eps 1e-08"
    assert lines[8] == "rows: 168 train / 24 validation / 48 test"
    assert lines[9].startswith("last epoch: train_loss ")


def test_the_optimizer_settings_and_the_schedule_a_resume_goes_on_with_are_shown(tmp_path,
                                                                                 capsys):
    """info showed the optimiser's name and rate only: not what --resume goes on with (and
    refuses flags to change), such as momentum, clipping, the schedule and where plateau
    stands."""
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", "wine", "--optimizer", "sgd", "--momentum", "0.9",
                 "--nesterov", "--clip-grad-norm", "2", "--schedule", "plateau", "--gamma",
                 "0.5", "--warmup", "2", "--epochs", "3", "--quiet", "--backend", "numpy",
                 "--save", str(ck)]) == 0
    capsys.readouterr()
    lines = _info(capsys, ck)
    assert "optimizer: sgd lr 0.1, clip norm 2, momentum 0.9, nesterov True" in lines
    (line,) = [x for x in lines if x.startswith("schedule: ")]
    assert line.startswith("schedule: plateau (factor 0.5, patience 5, threshold 0.0001, min "
                           "lr 0), warmup 2 epochs; now at lr ")


@pytest.mark.parametrize("flags, shown", [
    (["--dataset", "sine", "--loss", "huber", "--huber-delta", "0.25"], "loss huber (delta 0.25)"),
    (["--dataset", "iris", "--label-smoothing", "0.1"],
     "loss cross_entropy (label smoothing 0.1)"),
])
def test_the_losss_options_are_shown(tmp_path, capsys, flags, shown):
    ck = tmp_path / "run.npz"
    assert main(["train", *flags, "--epochs", "1", "--quiet", "--backend", "numpy",
                 "--save", str(ck)]) == 0
    capsys.readouterr()
    (line,) = [x for x in _info(capsys, ck) if x.startswith("training: ")]
    assert f", {shown}, adam" in line, line


def test_an_unfinished_run_says_how_to_resume(tmp_path, capsys):
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", "sine", "--epochs", "2", "--quiet", "--backend",
                 "numpy", "--save", str(ck)]) == 0
    assert main(["train", "--resume", str(ck), "--epochs", "5", "--quiet"]) == 0
    capsys.readouterr()
    lines = _info(capsys, ck)
    assert "task: regression" in lines
    assert "standardised: features yes, targets yes" in lines
    assert any(line.startswith("training: 5 of 5 epochs done") for line in lines)
    from gpunet.checkpoint import load_checkpoint, save_checkpoint

    c = load_checkpoint(ck)  # the same file, marked as stopped halfway
    c.extra["training"]["state"]["finished"] = False
    model = c.build_model("numpy")
    save_checkpoint(ck, model, epoch=c.epoch, standardizer=c.standardizer,
                    target_standardizer=c.target_standardizer, extra=c.extra)
    assert any(line.endswith(f"unfinished (resume with: gpunet train --resume {ck})")
               for line in _info(capsys, ck))


def test_a_saved_estimator_is_described(tmp_path, capsys):
    from gpunet import MLPRegressor

    x = np.random.default_rng(0).standard_normal((50, 3))
    MLPRegressor(hidden=(4,), epochs=2, backend="numpy").fit(x, x[:, 0]).save(tmp_path / "r.npz")
    lines = _info(capsys, tmp_path / "r.npz")
    assert "saved estimator: MLPRegressor (load it with gpunet.MLPRegressor.load)" in lines
    assert "task: regression" in lines
    # 2 epochs of 50 rows in batches of 32: 4 Adam steps, kept for partial_fit; the run's
    # settings as a train run's checkpoint records them (the loss, which evaluate reports)
    assert "training: 2 of 2 epochs done, batch 32, seed 0, loss mse, adam lr=0.001 (4 steps)" \
        in lines


def test_what_is_not_a_checkpoint_is_said_in_one_line(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert main(["info", "--checkpoint", str(tmp_path / "x.csv")]) == 1
    assert "is not a gpunet checkpoint" in capsys.readouterr().err


def test_the_splits_and_early_stopping_are_shown(tmp_path, capsys):
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", "wine", "--epochs", "4", "--patience", "2",
                 "--monitor", "val_accuracy", "--min-delta", "0.01", "--quiet", "--backend",
                 "numpy", "--save", str(ck)]) == 0
    capsys.readouterr()
    lines = _info(capsys, ck)
    from gpunet.checkpoint import load_checkpoint
    from gpunet.data import DataSpec, load_data

    data = load_data(DataSpec("wine"))
    state = load_checkpoint(ck).extra["training"]["state"]
    assert f"rows: {len(data.x_train)} train / {len(data.x_val)} validation / " \
           f"{len(data.x_test)} test" in lines
    assert "early stopping: patience 2 on val_accuracy, min_delta 0.01; best epoch " \
           f"{state['best_epoch']}" in lines


def test_a_binary_run_of_one_output_is_two_classes(tmp_path, capsys):
    """A one-logit binary run (bce_logits) was described as "1 outputs (labels 0..0)"."""
    ck = tmp_path / "b.npz"
    assert main(["train", "--dataset", "breast_cancer", "--loss", "bce_logits", "--epochs", "1",
                 "--quiet", "--backend", "numpy", "--save", str(ck)]) == 0
    capsys.readouterr()
    assert "task: classification, 2 classes (labels 0 and 1: one output, the probability of " \
        "1)" in _info(capsys, ck)
