"""Text feature columns in CSV files (penguins' island and sex): one-hot encoded over their
sorted categories, in the column's place; the encoding is stored in the checkpoint and applied
by predict (columns by name, any order), evaluate and resume. References are built here by
hand from the rows written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import gpunet as gn
from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.data import DataSpec, load_data, load_split, read_features

ISLANDS = ["Biscoe", "Dream", "Torgersen"]


def penguins(n=240, seed=0):
    """Rows of (species, island, bill_length, bill_depth, sex) where species depends on the
    island and the measurements (so that the island column carries signal)."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["Adelie", "Chinstrap", "Gentoo"], n)
    island = np.where(species == "Gentoo", "Biscoe",
                      np.where(species == "Chinstrap", "Dream", rng.choice(ISLANDS, n)))
    bill = np.select([species == "Adelie", species == "Chinstrap"], [38.8, 48.8], 47.5) \
        + rng.normal(0, 2.5, n)
    depth = np.where(species == "Gentoo", 15.0, 18.4) + rng.normal(0, 1, n)
    sex = rng.choice(["male", "female"], n)
    return species, island, bill.round(1), depth.round(1), sex


def write(path, columns, names):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        w.writerows(zip(*columns))
    return str(path)


def one_hot(values, categories):
    return (np.asarray(values)[:, None] == np.asarray(categories)[None, :]).astype(float)


def test_text_columns_are_one_hot_encoded_in_their_place(tmp_path):
    sp, isl, bill, depth, sex = penguins()
    path = write(tmp_path / "p.csv", [isl, bill, sp, depth, sex],
                 ["island", "bill", "species", "depth", "sex"])
    data = load_data(DataSpec(path, target="species"))
    assert data.features == [{"name": "island", "categories": ISLANDS}, {"name": "bill"},
                             {"name": "depth"}, {"name": "sex", "categories": ["female", "male"]}]
    x, y, task, n_classes = load_split(data.spec, "all", None)
    expected = np.column_stack([one_hot(isl, ISLANDS), bill, depth,
                                one_hot(sex, ["female", "male"])])
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(data.classes[y], sp)
    assert data.n_features == 7 and (task, n_classes) == ("classification", 3)


@pytest.mark.parametrize("cells, message", [
    (["Dream", "1", "Biscoe"], r"line 2, column 'island': 'Dream' is not a number \(the column "
                               r"mixes numbers, such as '1' at line 3, and text\)"),
    (["2", "Dream", "1"], r"line 3, column 'island': 'Dream' is not a number"),
    (["Dream", " ", "Biscoe"], r"line 3, column 'island': missing value"),
])
def test_a_feature_column_is_all_numbers_or_all_text(tmp_path, cells, message):
    path = write(tmp_path / "p.csv", [cells, ["1.5", "2.5", "3.5"], ["0", "1", "0"]],
                 ["island", "bill", "y"])
    with pytest.raises(gn.DataError, match=message):
        load_data(DataSpec(path, target="y"))


def _train(tmp_path, epochs=30):
    sp, isl, bill, depth, sex = penguins()
    path = write(tmp_path / "train.csv", [sp, isl, bill, depth, sex],
                 ["species", "island", "bill", "depth", "sex"])
    ck = tmp_path / "run.npz"
    assert main(["train", "--dataset", path, "--target", "species", "--epochs", str(epochs),
                 "--quiet", "--backend", "numpy", "--save", str(ck)]) == 0
    return ck


def test_train_says_which_columns_it_took_for_categories(tmp_path, capsys):
    """Numbers written as text (a date, "1,234") become categories without an error: train
    names every column it one-hot encodes, with its count of categories."""
    sp, isl, bill, depth, sex = penguins(60)
    when = [f"2024-01-{1 + i % 28:02d}" for i in range(60)]
    path = write(tmp_path / "p.csv", [sp, isl, bill, when, sex],
                 ["species", "island", "bill", "date", "sex"])
    capsys.readouterr()
    assert main(["train", "--dataset", path, "--target", "species", "--epochs", "1",
                 "--backend", "numpy"]) == 0
    assert "gpunet: text columns one-hot encoded (categories): island (3), date (28), sex (2)" \
        in capsys.readouterr().err


def _reference_probabilities(ck, isl, bill, depth, sex):
    """The model's class probabilities for raw rows, with the encoding written out here."""
    c = load_checkpoint(ck)
    x = np.column_stack([one_hot(isl, ISLANDS), bill, depth, one_hot(sex, ["female", "male"])])
    logits = np.asarray(c.build_model("numpy").predict(c.standardizer(x).astype(np.float32)),
                        dtype=np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def test_predict_encodes_its_input_as_training_did(tmp_path):
    ck = _train(tmp_path)
    assert load_checkpoint(ck).features[0] == {"name": "island", "categories": ISLANDS}
    _, isl, bill, depth, sex = penguins(n=12, seed=5)
    isl[:4] = "Torgersen"  # whatever categories this file happens to hold
    columns = {"sex": sex, "depth": depth, "island": isl, "bill": bill}
    new = write(tmp_path / "new.csv", list(columns.values()), list(columns))  # other order
    assert main(["predict", "--checkpoint", str(ck), "--input", new, "--output",
                 str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv") as f:
        table = list(csv.reader(f))
    got = np.array([r[1:] for r in table[1:]], dtype=float)
    np.testing.assert_allclose(got, _reference_probabilities(ck, isl, bill, depth, sex),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(read_features(new, load_checkpoint(ck).features)[:, :3],
                                  one_hot(isl, ISLANDS))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("sex"), r"the feature columns are not the model's \(missing: 'sex'\)"),
    (lambda c: c.update(id=np.arange(12)), r"\(unexpected: 'id'\)"),
    (lambda c: c["island"].__setitem__(3, "Atlantis"),
     r"line 5, column 'island': 'Atlantis' is not one of the categories the model was trained "
     r"on \(Biscoe, Dream, Torgersen\)"),
])
def test_predict_refuses_input_it_cannot_encode(tmp_path, capsys, change, message):
    ck = _train(tmp_path, epochs=1)
    _, isl, bill, depth, sex = penguins(n=12, seed=6)
    columns = {"island": isl.astype("U16"), "bill": bill, "depth": depth, "sex": sex}
    change(columns)
    new = write(tmp_path / "new.csv", list(columns.values()), list(columns))
    assert main(["predict", "--checkpoint", str(ck), "--input", new, "--output",
                 str(tmp_path / "p.csv")]) == 1
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)


def test_predict_can_encode_an_unseen_category_as_none(tmp_path, capsys, caplog):
    """--unseen-category none: a cell of a category the model never saw is no category (a
    row of zeros in its block, as a missing one), said once per column; the other rows are
    predicted as they are without it, and each such row as the one whose cell is missing
    in a model trained with --fill-missing would be: by the zero block, written out here."""
    ck = _train(tmp_path, epochs=1)
    _, isl, bill, depth, sex = penguins(n=12, seed=6)
    isl = isl.astype("U16")
    isl[[3, 7]] = "Atlantis"
    new = write(tmp_path / "new.csv", [isl, bill, depth, sex], ["island", "bill", "depth", "sex"])
    assert main(["predict", "--checkpoint", str(ck), "--input", new, "--output",
                 str(tmp_path / "p.csv")]) == 1
    assert "; gpunet predict --unseen-category none encodes such a cell as no category" \
        in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(ck), "--input", new, "--output",
                 str(tmp_path / "p.csv"), "--unseen-category", "none"]) == 0
    assert "column 'island': 2 cell(s) hold a category the model never saw (such as " \
        "'Atlantis'), encoded as none" in caplog.text
    with open(tmp_path / "p.csv") as f:
        got = np.array([r[1:] for r in list(csv.reader(f))[1:]], dtype=float)
    c = load_checkpoint(ck)
    x = np.column_stack([one_hot(isl, ISLANDS), bill, depth, one_hot(sex, ["female", "male"])])
    assert not x[[3, 7], :3].any()  # (the reference's block: zeros for Atlantis)
    logits = np.asarray(c.build_model("numpy").predict(c.standardizer(x).astype(np.float32)),
                        dtype=np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got, p / p.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_a_long_list_of_categories_is_cut_short_in_the_message(tmp_path):
    cats = [f"c{i:02d}" for i in range(40)]
    path = write(tmp_path / "t.csv", [[cats[i % 40] for i in range(80)], np.arange(80) % 2],
                 ["cabin", "y"])
    data = load_data(DataSpec(path, target="y"))
    (tmp_path / "n.csv").write_text("cabin\nc05\nz99\n")
    with pytest.raises(gn.DataError, match=r"'z99' is not one of the categories the model was "
                                           r"trained on \(c00, c01, c02, c03, c04, c05, c06, "
                                           r"c07, c08, c09, ... \(40 in all\)\)"):
        read_features(tmp_path / "n.csv", data.features)


def test_evaluate_on_another_file_uses_the_stored_categories(tmp_path):
    """A file whose rows all come from one island: encoded by its own categories, that island
    would be column 0 of a one-column block; by the model's it keeps its own column."""
    ck = _train(tmp_path)
    sp, isl, bill, depth, sex = penguins(n=400, seed=7)
    keep = isl == "Dream"
    other = write(tmp_path / "dream.csv", [sp[keep], isl[keep], bill[keep], depth[keep],
                                           sex[keep]],
                  ["species", "island", "bill", "depth", "sex"])
    m = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(ck), "--dataset", other, "--target", "species",
                 "--split", "all", "--metrics-json", str(m)]) == 0
    probs = _reference_probabilities(ck, isl[keep], bill[keep], depth[keep], sex[keep])
    names = load_checkpoint(ck).classes
    expected = float(np.mean(names[probs.argmax(axis=1)] == sp[keep]))
    assert json.loads(m.read_text())["all_accuracy"] == pytest.approx(expected)


def test_resume_refuses_other_categories(tmp_path, capsys):
    ck = _train(tmp_path, epochs=2)
    sp, isl, bill, depth, sex = penguins()
    isl = isl.astype("U32")
    isl[isl == "Torgersen"] = "Torgersen Island"  # the file was edited between the runs
    write(tmp_path / "train.csv", [sp, isl, bill, depth, sex],
          ["species", "island", "bill", "depth", "sex"])
    assert main(["train", "--resume", str(ck), "--epochs", "4", "--quiet"]) == 1
    assert "feature columns are not the data's" in capsys.readouterr().err


def test_a_numeric_model_still_wants_numbers(tmp_path, capsys):
    """Without text columns the stored columns are names alone, and predict reads every one
    as a number."""
    x = np.random.default_rng(8).standard_normal((60, 3))
    path = write(tmp_path / "n.csv", [*x.T, (x[:, 0] > 0).astype(int)], ["a", "b", "c", "y"])
    ck = tmp_path / "n.npz"
    assert main(["train", "--dataset", path, "--target", "y", "--epochs", "1", "--quiet",
                 "--backend", "numpy", "--save", str(ck)]) == 0
    assert load_checkpoint(ck).features == [{"name": "a"}, {"name": "b"}, {"name": "c"}]
    bad = write(tmp_path / "bad.csv", [["1"], ["x"], ["2"]], ["a", "b", "c"])
    assert main(["predict", "--checkpoint", str(ck), "--input", bad, "--output",
                 str(tmp_path / "p.csv")]) == 1
    assert "line 2, column 'b': 'x' is not a number" in capsys.readouterr().err


def test_a_numeric_model_finds_its_columns_by_name(tmp_path, capsys):
    """predict and evaluate take a numeric model's feature columns by name: reordered columns
    give the predictions of the training order (not those of the columns' positions), and a
    renamed or missing column is an error naming it."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((80, 3)) * [1.0, 5.0, 0.2]
    y = (x[:, 0] + x[:, 1] / 5 > 0).astype(int)
    path = write(tmp_path / "n.csv", [*x.T, y], ["a", "b", "c", "y"])
    ck = tmp_path / "n.npz"
    assert main(["train", "--dataset", path, "--target", "y", "--epochs", "3", "--quiet",
                 "--backend", "numpy", "--save", str(ck)]) == 0
    probs = []
    for name, order in (("same", [0, 1, 2]), ("moved", [2, 0, 1])):
        cols = ["a", "b", "c"]
        src = write(tmp_path / f"{name}.csv", [x[:, j] for j in order], [cols[j] for j in order])
        out = tmp_path / f"{name}.npy"
        assert main(["predict", "--checkpoint", str(ck), "--input", src, "--output",
                     str(out)]) == 0
        probs.append(np.load(out))
    np.testing.assert_array_equal(probs[0], probs[1])
    # the reference: the model on the columns in training order, by hand
    model, ckpt = load_checkpoint(ck).build_model("numpy", weights="best"), load_checkpoint(ck)
    logits = model.predict(ckpt.standardizer(x).astype(np.float32)).astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs[0][:, 1:], p / p.sum(axis=1, keepdims=True), rtol=1e-5)
    capsys.readouterr()
    renamed = write(tmp_path / "r.csv", [*x.T], ["a", "b", "zz"])
    assert main(["predict", "--checkpoint", str(ck), "--input", renamed, "--output",
                 str(tmp_path / "r.npy")]) == 1
    assert "missing: 'c'; unexpected: 'zz'" in capsys.readouterr().err
    moved = write(tmp_path / "m.csv", [x[:, 2], y, x[:, 0], x[:, 1]], ["c", "y", "a", "b"])
    losses = []
    for src in (path, moved):  # the same rows, columns in another order: the same figures
        assert main(["evaluate", "--checkpoint", str(ck), "--dataset", src, "--split", "all",
                     "--metrics-json", str(tmp_path / "e.json")]) == 0
        losses.append(json.loads((tmp_path / "e.json").read_text())["all_loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


@pytest.mark.parametrize("marker", ["", "NA", "n/a", "null", "?", "nan", "#N/A", "<NA>"])
@pytest.mark.parametrize("where", ["number", "text", "target"])
def test_missing_value_markers_are_named_not_taken_for_text(tmp_path, marker, where):
    """'NA' in a numeric column is a missing value, not text that makes the column a mix (nor,
    in a text column, a category of its own)."""
    numbers, words, target = ["1.5", "2.5", "3.5"], ["x", "y", "x"], ["a", "b", "a"]
    column = {"number": numbers, "text": words, "target": target}[where]
    column[1] = marker
    path = write(tmp_path / "m.csv", [numbers, words, target], ["num", "word", "y"])
    name = {"number": "column 'num'", "text": "column 'word'", "target": "target column 'y'"}
    shown = f" \\({marker!r}\\)".replace("?", "\\?") if marker else ""
    advice = "a target or weight is never filled in: --drop-missing" if where == "target" \
        else "gpunet fills in none unless asked"
    with pytest.raises(gn.DataError, match=f"line 3, {name[where]}: missing value{shown}; "
                                           f"{advice}"):
        load_data(DataSpec(path, target="y"))


def test_a_text_column_of_many_values_is_not_taken_for_categories(tmp_path):
    n = 150
    names = [f"passenger {i}" for i in range(n)]  # an identifier, as titanic's Name column
    path = write(tmp_path / "t.csv", [names, np.arange(n) % 7, np.arange(n) % 2],
                 ["name", "age", "survived"])
    with pytest.raises(gn.DataError, match=r"column 'name' holds 150 distinct text values "
                                           r"\(such as 'passenger 0'\): more than 100 "
                                           r"categories"):
        load_data(DataSpec(path, target="survived"))
    few = write(tmp_path / "f.csv", [[f"c{i % 100}" for i in range(n)], np.arange(n) % 2],
                ["cabin", "survived"])
    assert load_data(DataSpec(few, target="survived")).n_features == 100  # 100 still encode


def test_drop_missing_leaves_out_exactly_the_rows_with_a_missing_value(tmp_path, capsys):
    sp, isl, bill, depth, sex = penguins(n=120, seed=9)
    cols = [c.astype("U16") for c in (sp, isl, bill.astype(str), depth.astype(str), sex)]
    holes = {5: (1, "NA"), 17: (2, ""), 40: (4, "?"), 77: (0, "n/a")}  # row: (column, marker)
    for row, (col, marker) in holes.items():
        cols[col][row] = marker
    path = write(tmp_path / "p.csv", cols, ["species", "island", "bill", "depth", "sex"])
    with pytest.raises(gn.DataError, match="line 7, column 'island': missing value"):
        load_data(DataSpec(path, target="species"))
    data = load_data(DataSpec(path, target="species", drop_missing=True))
    assert data.rows_dropped == 4
    keep = np.setdiff1d(np.arange(120), list(holes))
    x, y, _, _ = load_split(data.spec, "all", None)
    expected = np.column_stack([one_hot(isl[keep], ISLANDS), bill[keep], depth[keep],
                                one_hot(sex[keep], ["female", "male"])])
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(data.classes[y], sp[keep])

    ck, m = tmp_path / "run.npz", tmp_path / "m.json"
    assert main(["train", "--dataset", path, "--target", "species", "--drop-missing",
                 "--epochs", "2", "--backend", "numpy", "--save", str(ck)]) == 0
    assert "left out 4 rows with a missing value (--drop-missing)" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ck), "--split", "all",
                 "--metrics-json", str(m)]) == 0  # the stored spec drops them again
    assert __import__("json").loads(m.read_text())["rows"] == 116
    # predict answers every row it is given: a hole there stays an error
    new = write(tmp_path / "new.csv", [c[:6] for c in cols[1:]],
                ["island", "bill", "depth", "sex"])
    assert main(["predict", "--checkpoint", str(ck), "--input", new, "--output",
                 str(tmp_path / "out.csv")]) == 1
    assert "line 7, column 'island': missing value ('NA')" in capsys.readouterr().err


def test_drop_missing_is_for_csv_files(tmp_path):
    with pytest.raises(gn.ConfigError, match="drop_missing applies to .csv datasets"):
        load_data(DataSpec("iris", drop_missing=True))
    path = write(tmp_path / "e.csv", [["NA", "1"], ["2", ""]], ["a", "y"])
    with pytest.raises(gn.DataError, match="every one of its 2 rows has a missing value"):
        load_data(DataSpec(path, target="y", drop_missing=True))


def test_a_numeric_csv_run_saved_without_column_names_still_resumes(tmp_path, capsys):
    """Checkpoints of numeric CSV runs written before the column names were stored hold no
    feature description; resuming them on their file goes on as before."""
    x = np.random.default_rng(10).standard_normal((60, 3))
    path = write(tmp_path / "n.csv", [*x.T, (x[:, 0] > 0).astype(int)], ["a", "b", "c", "y"])
    ck = tmp_path / "n.npz"
    assert main(["train", "--dataset", path, "--target", "y", "--epochs", "1", "--quiet",
                 "--backend", "numpy", "--save", str(ck)]) == 0
    with np.load(ck, allow_pickle=False) as z:  # the older file: without extra["features"]
        arrays = dict(z)
    header = json.loads(arrays["header"].tobytes().decode())
    del header["extra"]["features"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    assert load_checkpoint(old).features is None
    assert main(["train", "--resume", str(old), "--epochs", "2", "--quiet",
                 "--backend", "numpy"]) == 0, capsys.readouterr().err
    assert load_checkpoint(old).epoch == 2


@pytest.mark.parametrize("write, what", [
    (lambda v, i: f"{v:,.2f}", "numbers written as text"),          # "5,038.14"
    (lambda v, i: f"{v:.2f}".replace(".", ","), "numbers written as text"),  # decimal comma
    (lambda v, i: f"${v:.2f}", "numbers written as text"),
    (lambda v, i: f"2024-01-{1 + i % 28:02d}", "dates written as text"),
    (lambda v, i: ["red", "green", "blue"][i % 3], None),
    (lambda v, i: f"{i % 4 + 1}_{i % 3 + 1}", None),  # plot codes, not 11.. 43
    (lambda v, i: ["1,2", "1,3", "2,3", "1,2,3"][i % 4], None),  # sets of answers
])
def test_numbers_or_dates_written_as_text_in_a_feature_column_are_warned_about(
        tmp_path, capsys, write, what):
    """pandas' to_csv(decimal=","), a thousands separator or a currency sign made a column of
    numbers text: one-hot encoded, one category a value (test accuracy 0.47 where the plain
    file gives 1.0), said only in a notice --quiet hides. Now a warning names the column."""
    rng = np.random.default_rng(0)
    b = rng.normal(size=95) * 800 + 5000
    with open(tmp_path / "d.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["a", "b", "y"])
        out.writerows([round(float(a), 3), write(v, i), int(v > 5000)]
                      for i, (a, v) in enumerate(zip(rng.normal(size=95), b)))
    assert main(["train", "--dataset", str(tmp_path / "d.csv"), "--target", "y", "--epochs",
                 "1", "--backend", "numpy", "--quiet"]) == 0
    err = capsys.readouterr().err
    if what is None:
        assert "warning" not in err
    else:
        assert f"gpunet: warning: feature column 'b' holds {what}" in err
        assert "one-hot encoded as" in err and "or --ignore it" in err
