"""``--class-weight balanced`` (``DataSpec.class_weight``): each class's weight n / (k * n_c)
from the training rows' counts, the rows' weights in every split, weighted standardisation,
the weights stored in the checkpoint, and ``evaluate`` weighting the loss as training did.
References are counted and computed here from the rows written."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gpunet as gn
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.cli import main
from gpunet.data import DataSpec, load_data, load_split


def imbalanced(path, n_major=900, n_minor=100, seed=0):
    """Two overlapping Gaussian classes, 9:1, as a CSV with text labels."""
    rng = np.random.default_rng(seed)
    x = np.r_[rng.normal(0.0, 1.0, (n_major, 3)), rng.normal(1.2, 1.0, (n_minor, 3))]
    x = x * [1.0, 5.0, 0.2] + [0.0, 10.0, -3.0]
    label = np.r_[["common"] * n_major, ["rare"] * n_minor]
    order = rng.permutation(len(x))
    with open(path, "w") as f:
        f.write("a,b,c,kind\n")
        for i in order:
            f.write(",".join(repr(float(v)) for v in x[i]) + f",{label[i]}\n")
    return path


def test_balanced_weights_from_the_training_rows(tmp_path):
    # 907:93 does not split in exact proportion: the training rows' counts are not the file's
    spec = DataSpec(str(imbalanced(tmp_path / "d.csv", n_major=907, n_minor=93)), target="kind",
                    seed=3, class_weight="balanced")
    data = load_data(spec)
    counts = np.array([(data.y_train == c).sum() for c in (0, 1)])
    expected = len(data.y_train) / (2 * counts)
    np.testing.assert_allclose(data.class_weights, expected, rtol=1e-15)
    assert expected[1] > 4 * expected[0]  # the rare class weighs more per row
    for split in ("train", "val", "test"):
        y = getattr(data, f"y_{split}")
        np.testing.assert_allclose(getattr(data, f"w_{split}"), expected[y], rtol=1e-15)
    # the features are standardised with the weighted statistics of the training rows
    x_raw, y_raw, _, _ = load_split(data.spec, "train", None, classes=data.classes)
    w = expected[y_raw]
    mean = w @ x_raw / w.sum()
    std = np.sqrt(w @ (x_raw - mean) ** 2 / w.sum())
    np.testing.assert_allclose(data.standardizer.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(data.standardizer.std, std, rtol=1e-12)


def test_weighting_finds_the_rare_class(tmp_path):
    """What the option is for: the same net, trained with and without it, on 9:1 data; the
    weighted one recalls far more of the rare class (40 rows of it in the test split)."""
    path = imbalanced(tmp_path / "d.csv", n_major=1800, n_minor=200)
    recall = {}
    for weighted in (False, True):
        data = load_data(DataSpec(str(path), target="kind", seed=1,
                                  class_weight="balanced" if weighted else None))
        model = gn.MLP([3, 16, 2], backend="numpy", seed=0)
        gn.fit(model, data, gn.CrossEntropyLoss(), gn.Adam(model, lr=0.01), epochs=15,
               progress=False)
        pred = gn.get_backend("numpy").to_host(model.predict(data.x_test)).argmax(axis=1)
        rare = data.y_test == 1
        recall[weighted] = (pred[rare] == 1).mean()
    assert recall[True] > recall[False] + 0.3, recall


def test_train_stores_the_weights_and_evaluate_weights_the_loss_alike(tmp_path, capsys):
    path = imbalanced(tmp_path / "d.csv")
    ck = tmp_path / "run.npz"
    metrics_json = tmp_path / "m.json"
    assert main(["train", "--dataset", str(path), "--target", "kind", "--class-weight",
                 "balanced", "--epochs", "3", "--backend", "numpy", "--save", str(ck),
                 "--metrics-json", str(metrics_json)]) == 0
    err = capsys.readouterr().err
    ckpt = load_checkpoint(ck)
    data = load_data(DataSpec.from_json(ckpt.extra["data"]))
    np.testing.assert_allclose(ckpt.extra["class_weights"], data.class_weights, rtol=1e-15)
    assert "gpunet: class weights (balanced): common 0.5" in err
    last = ckpt.extra["training"]["state"]["history"][-1]

    # the weighted validation loss, from the model's probabilities, in float64
    model = ckpt.build_model("numpy")
    logits = np.asarray(model.predict(data.x_val), dtype=np.float64)
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(len(logp)), data.y_val]
    w = data.class_weights[data.y_val]
    assert last["val_loss"] == pytest.approx(w @ nll / w.sum(), rel=1e-5)
    assert abs(last["val_loss"] - nll.mean()) > 1e-3  # (weighting changed it)

    assert main(["evaluate", "--checkpoint", str(ck), "--split", "val", "--backend", "numpy",
                 "--metrics-json", str(tmp_path / "e.json")]) == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["val_loss"] == pytest.approx(last["val_loss"], rel=1e-6)
    assert evaluated["val_accuracy"] == pytest.approx(last["val_accuracy"], abs=1e-12)
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(ck)]) == 0
    out = capsys.readouterr().out
    assert "classes weighted (balanced)" in out
    names = ckpt.classes if ckpt.classes is not None else range(len(data.class_weights))
    assert "class weights: " + ", ".join(
        f"{c} {w:.3g}" for c, w in zip(names, data.class_weights)) in out


def test_what_class_weights_refuse(tmp_path, capsys):
    with pytest.raises(gn.ConfigError, match="class weights apply to classification"):
        load_data(DataSpec("diabetes", class_weight="balanced"))
    with pytest.raises(gn.ConfigError, match="unknown class weight 'even'"):
        load_data(DataSpec("digits", class_weight="even"))
    # a checkpoint whose stored weights are malformed: one line, not a traceback
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", "iris", "--class-weight", "balanced", "--epochs", "1",
                 "--backend", "numpy", "--save", str(ck), "--quiet"]) == 0
    c = load_checkpoint(ck)
    c.extra["class_weights"] = ["heavy", 1.0, 1.0]
    save_checkpoint(ck, c.build_model("numpy"), epoch=c.epoch, standardizer=c.standardizer,
                    extra=c.extra)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ck), "--backend", "numpy"]) != 0
    assert "malformed header: extra.class_weights (['heavy'" in capsys.readouterr().err


def test_balanced_weights_are_scikit_learns_bit_for_bit_without_importing_it():
    """compute_class_weight("balanced") over the classes present (1 for absent ones), now
    counted with NumPy: a run with class weights imported scikit-learn for it (0.6 s)."""
    import subprocess
    import sys

    from sklearn.utils.class_weight import compute_class_weight

    from gpunet.data import balanced_class_weights

    rng = np.random.default_rng(3)
    for trial in range(200):
        k = int(rng.integers(2, 30))
        labels = rng.choice(k, int(rng.integers(k, 500)), p=rng.dirichlet(np.ones(k) * 0.3))
        present = np.unique(labels)
        want = np.ones(k)
        want[present] = compute_class_weight("balanced", classes=present, y=labels)
        np.testing.assert_array_equal(balanced_class_weights(labels, k), want)
    code = ("import sys, numpy as np; from gpunet.data import balanced_class_weights; "
            "balanced_class_weights(np.array([0, 1, 1]), 3); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False"]
