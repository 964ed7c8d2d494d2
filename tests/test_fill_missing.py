"""``--fill-missing mean`` (``DataSpec.fill_missing``): a CSV's missing feature values filled in,
a number with its column's mean over the training rows only, a category with none (a row of
zeros in its one-hot block); the fill values stored in the checkpoint and used by evaluate and
predict. References are computed here from the cells written to the file."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import gpunet as gn
from gpunet.checkpoint import load_checkpoint, save_checkpoint
from gpunet.cli import main
from gpunet.data import DataSpec, load_data, read_features

MISSING = ["", "NA", "?", "null", "n/a", "NaN", "#N/A"]


def table(n=160, seed=0):
    """Rows of (id, a, b, colour, label): a and b numeric with gaps, colour text with gaps;
    returns the rows as written (None where a cell is missing) and the file's cells."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    a = rng.normal(10, 3, n).round(3)
    b = rng.normal(-5, 2, n).round(3)
    colour = rng.choice(["red", "green", "blue"], n)
    label = ((a - 10) / 3 + (b + 5) / 2 + (colour == "red") > 0.3).astype(int)
    rows = []
    for i in range(n):
        row = [float(ids[i]), float(a[i]), float(b[i]), str(colour[i]), int(label[i])]
        if i % 7 == 3:
            row[1] = None
        if i % 11 == 5:
            row[2] = None
        if i % 13 == 8:
            row[3] = None
        rows.append(row)
    return rows


def write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "a", "b", "colour", "label"])
        for k, row in enumerate(rows):
            w.writerow([MISSING[k % len(MISSING)] if v is None else v for v in row])
    return path


def _raw(data, x_std):
    return data.standardizer.inverse(x_std)


def test_numbers_get_the_training_rows_mean_and_categories_none(tmp_path):
    rows = table()
    data = load_data(DataSpec(str(write(tmp_path / "t.csv", rows)), target="label", seed=4,
                              fill_missing="mean"))
    assert [e["name"] for e in data.features] == ["id", "a", "b", "colour"]
    assert data.features[3]["categories"] == ["blue", "green", "red"]
    train = _raw(data, data.x_train)
    train_ids = set(np.rint(train[:, 0]).astype(int))
    by_id = {int(r[0]): r for r in rows}
    # the means over the training rows' written cells only (validation and test rows' cells
    # must not leak into them)
    for col, j in (("a", 1), ("b", 2)):
        cells = [by_id[i][j] for i in train_ids if by_id[i][j] is not None]
        all_cells = [r[j] for r in rows if r[j] is not None]
        assert data.fill_values[j] == pytest.approx(np.mean(cells), rel=1e-12), col
        assert abs(np.mean(cells) - np.mean(all_cells)) > 1e-6  # (they differ)
    assert data.values_filled == sum(r[j] is None for r in rows for j in (1, 2))
    # every split's rows: the written value, or the training mean where the cell was missing;
    # a missing colour is a row of zeros in the colour block
    for split in ("train", "val", "test"):
        x = _raw(data, getattr(data, f"x_{split}"))
        for row in x:
            src = by_id[int(round(row[0]))]
            for j in (1, 2):
                want = data.fill_values[j] if src[j] is None else src[j]
                assert row[j] == pytest.approx(want, rel=1e-9, abs=1e-9)
            hot = np.rint(row[3:6]).astype(int)
            want = [0, 0, 0] if src[3] is None else \
                [int(src[3] == c) for c in ("blue", "green", "red")]
            assert list(hot) == want


def test_train_evaluate_and_predict_fill_with_the_stored_values(tmp_path, capsys):
    path = write(tmp_path / "t.csv", table())
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(path), "--target", "label", "--fill-missing", "mean",
                 "--epochs", "3", "--backend", "numpy", "--save", str(ck), "--metrics-json",
                 str(tmp_path / "m.json")]) == 0
    assert "missing values with the training rows' means" in capsys.readouterr().err
    ckpt = load_checkpoint(ck)
    data = load_data(DataSpec.from_json(ckpt.extra["data"]))
    np.testing.assert_array_equal(ckpt.extra["fill_values"], data.fill_values)

    # predict: a file of other rows, with gaps, against the same rows filled in by hand
    new = table(40, seed=9)
    write(tmp_path / "new.csv", [r[:4] for r in new])
    with open(tmp_path / "new.csv") as f:  # drop the label column from the header too
        lines = f.read().splitlines()
    (tmp_path / "new.csv").write_text("\n".join(
        [",".join(lines[0].split(",")[:4])] + lines[1:]) + "\n")
    assert main(["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "new.csv"),
                 "--output", str(tmp_path / "p.npy"), "--backend", "numpy"]) == 0
    filled = []
    for r in new:
        vals = [ckpt.extra["fill_values"][j] if r[j] is None else r[j] for j in range(3)]
        filled.append(vals + ([0.0, 0.0, 0.0] if r[3] is None else
                              [float(r[3] == c) for c in ("blue", "green", "red")]))
    model = ckpt.build_model("numpy", weights="best")
    logits = model.predict(ckpt.standardizer(np.array(filled)))
    got = np.load(tmp_path / "p.npy")
    np.testing.assert_array_equal(got[:, 0], np.argmax(logits, axis=1))

    # evaluate: the run's own test split, the same metrics as training reported
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ck), "--backend", "numpy", "--metrics-json",
                 str(tmp_path / "e.json")]) == 0
    reported = json.loads((tmp_path / "m.json").read_text())
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["test_accuracy"] == pytest.approx(reported["test_accuracy"], abs=1e-12)
    assert evaluated["test_loss"] == pytest.approx(reported["test_loss"], rel=1e-6)
    # evaluate on another file fills its gaps with the stored values, not that file's means
    other = table(90, seed=5)
    write(tmp_path / "other.csv", other)
    assert main(["evaluate", "--checkpoint", str(ck), "--dataset", str(tmp_path / "other.csv"),
                 "--split", "all", "--backend", "numpy", "--metrics-json",
                 str(tmp_path / "o.json")]) == 0
    by_hand = np.array([[ckpt.extra["fill_values"][j] if r[j] is None else r[j]
                         for j in range(3)]
                        + ([0.0, 0.0, 0.0] if r[3] is None else
                           [float(r[3] == c) for c in ("blue", "green", "red")]) for r in other])
    logits = np.asarray(model.predict(ckpt.standardizer(by_hand)), dtype=np.float64)
    labels = np.array([r[4] for r in other])
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    result = json.loads((tmp_path / "o.json").read_text())
    assert result["all_accuracy"] == pytest.approx((logits.argmax(axis=1) == labels).mean())
    assert result["all_loss"] == pytest.approx(-logp[np.arange(90), labels].mean(), rel=1e-5)
    # ... a file of two rows too: --split all needs no training rows of it (the fill values
    # are stored), so its size is no matter
    write(tmp_path / "two.csv", other[:2])
    assert main(["evaluate", "--checkpoint", str(ck), "--dataset", str(tmp_path / "two.csv"),
                 "--split", "all", "--backend", "numpy", "--metrics-json",
                 str(tmp_path / "two.json")]) == 0
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["all_accuracy"] == pytest.approx((logits[:2].argmax(axis=1) == labels[:2]).mean())
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(ck)]) == 0
    assert "missing values filled (mean)" in capsys.readouterr().out


def test_a_numeric_file_with_gaps_is_filled_too(tmp_path):
    rows = [[float(i), None if i % 5 == 0 else 2.0 * i, i % 2] for i in range(60)]
    path = tmp_path / "n.csv"
    with open(path, "w") as f:
        f.write("id,v,label\n")
        for r in rows:
            f.write(f"{r[0]},{'' if r[1] is None else r[1]},{r[2]}\n")
    data = load_data(DataSpec(str(path), target="label", seed=1, val_fraction=0.0,
                              test_fraction=0.0, fill_missing="mean"))
    assert data.features == [{"name": "id"}, {"name": "v"}]  # every column a number
    known = [r[1] for r in rows if r[1] is not None]
    assert data.fill_values[1] == pytest.approx(np.mean(known), rel=1e-12)
    x = _raw(data, data.x_train)
    for row in x:
        i = int(round(row[0]))
        assert row[1] == pytest.approx(np.mean(known) if i % 5 == 0 else 2.0 * i, rel=1e-9)
    # predict's reader fills a features-only file with given values
    (tmp_path / "f.csv").write_text("id,v\n1,\n2,7.5\n")
    np.testing.assert_array_equal(read_features(tmp_path / "f.csv", fill_values=[0.0, -3.25]),
                                  [[1.0, -3.25], [2.0, 7.5]])
    # without fill values (a model that fills nothing in): the advice is not train's flags,
    # which predict does not have
    (tmp_path / "c.csv").write_text("id,v,c\n1,,a\n2,7.5,\n")
    for path, line, column in (("f.csv", 2, "v"), ("c.csv", 2, "v")):
        with pytest.raises(gn.DataError, match=f"line {line}, column '{column}': missing value; "
                           "this model was trained without --fill-missing, so it needs every "
                           "value: fill the gaps in, or train with --fill-missing mean"):
            read_features(tmp_path / path, [{"name": "id"}, {"name": "v"}] + (
                [{"name": "c", "categories": ["a"]}] if path == "c.csv" else []))


def test_a_text_column_missing_where_another_first_shows_text_is_still_text(tmp_path):
    """Which columns are text is learnt from the whole file: the first row holding text (size
    S) has no colour, and colour is still the categorical column it is further down."""
    path = tmp_path / "t.csv"
    rows = [("-1", "", "S", "0")] + [(f"{i / 30:g}", ("red", "blue")[i % 2],
                                       ("S", "M", "L")[i % 3], str(i % 2)) for i in range(30)]
    path.write_text("x,colour,size,y\n" + "".join(",".join(r) + "\n" for r in rows))
    data = load_data(DataSpec(str(path), target="y", seed=1, val_fraction=0.0,
                              test_fraction=0.0, fill_missing="mean"))
    assert data.features == [{"name": "x"}, {"name": "colour", "categories": ["blue", "red"]},
                             {"name": "size", "categories": ["L", "M", "S"]}]
    x = _raw(data, data.x_train)
    by_x = {round(r[0], 6): r for r in x}
    np.testing.assert_allclose(by_x[-1.0][1:], [0, 0, 0, 0, 1], atol=1e-12)  # no colour, S
    np.testing.assert_allclose(by_x[round(1 / 30, 6)][1:], [1, 0, 0, 1, 0], atol=1e-12)


def test_with_both_the_features_are_filled_and_rows_without_a_target_left_out(tmp_path,
                                                                            capsys):
    """--fill-missing mean --drop-missing: the rows whose target (or weight) is missing go,
    as nothing fills those, and the features' gaps of the rest are filled: the same data as
    the file without those rows, filled (each message pointed at the other flag, which the
    two refused together)."""
    rows = table(80)
    for i in (3, 30, 61):
        rows[i][4] = None  # no label
    kept = [r for r in rows if r[4] is not None]
    both = load_data(DataSpec(write(tmp_path / "t.csv", rows), target="label", seed=1,
                              fill_missing="mean", drop_missing=True))
    fewer = load_data(DataSpec(write(tmp_path / "k.csv", kept), target="label", seed=1,
                               fill_missing="mean"))
    assert both.rows_dropped == 3 and fewer.rows_dropped == 0
    assert any(None in r[1:4] for r in kept)  # (gaps left to fill among the rows kept)
    np.testing.assert_array_equal(both.fill_values, fewer.fill_values)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(both, f"x_{split}"), getattr(fewer, f"x_{split}"))
        np.testing.assert_array_equal(getattr(both, f"y_{split}"), getattr(fewer, f"y_{split}"))
    ck = tmp_path / "b.npz"  # the command line says which rows went, and info so too
    assert main(["train", "--dataset", str(tmp_path / "t.csv"), "--target", "label",
                 "--fill-missing", "mean", "--drop-missing", "--epochs", "1", "--save",
                 str(ck)]) == 0
    assert main(["info", "--checkpoint", str(ck)]) == 0
    assert "rows with a missing target or weight left out, missing values filled (mean)" \
        in capsys.readouterr().out


def test_what_filling_refuses(tmp_path, capsys):
    rows = table(60)
    path = write(tmp_path / "t.csv", rows)
    with pytest.raises(gn.ConfigError, match="fill_missing applies to .csv datasets"):
        load_data(DataSpec("digits", fill_missing="mean"))
    with pytest.raises(gn.ConfigError, match="unknown fill_missing 'median'"):
        load_data(DataSpec(str(path), target="label", fill_missing="median"))
    rows[4][4] = None  # a missing target: nothing to fill it with
    with pytest.raises(gn.DataError, match="target column 'label': missing value"):
        load_data(DataSpec(str(write(tmp_path / "u.csv", rows)), target="label",
                           fill_missing="mean"))
    empty = [[r[0], None, r[2], r[3], r[4]] for r in table(30)]
    with pytest.raises(gn.DataError, match="column 'a' has no value in the training rows"):
        load_data(DataSpec(str(write(tmp_path / "e.csv", empty)), target="label",
                           fill_missing="mean"))
    # without the option a gap is still an error naming its line and column
    with pytest.raises(gn.DataError, match="line 5, column 'a': missing value"):
        load_data(DataSpec(str(path), target="label"))
    # a checkpoint whose fill values are malformed: one line, not a traceback
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(path), "--target", "label", "--fill-missing", "mean",
                 "--epochs", "1", "--backend", "numpy", "--save", str(ck), "--quiet"]) == 0
    c = load_checkpoint(ck)
    c.extra["fill_values"] = ["x"]
    save_checkpoint(ck, c.build_model("numpy"), epoch=c.epoch, standardizer=c.standardizer,
                    classes=c.classes, extra=c.extra)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ck), "--backend", "numpy"]) != 0
    assert "malformed header: extra.fill_values (['x'])" in capsys.readouterr().err
