"""CSV columns that are not features: ``--ignore COLUMN`` (an identifier, free text, an empty
column) leaves them out of training, and evaluate and predict leave them out too;
``predict --keep COLUMN`` copies input columns into its output so that the predictions join
back onto the rows. References are the same data written without those columns."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import gpunet as gn
from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.data import DataSpec, load_data

from test_categorical import penguins, write


def _table(tmp_path, n=240):
    species, island, bill, depth, sex = penguins(n)
    ids = [f"P{i:05d}" for i in range(n)]  # text, all different: not a category
    notes = ["" if i % 3 else f"seen at {i}" for i in range(n)]  # free text with gaps
    return ids, notes, species, island, bill, depth, sex


def _trained(tmp_path, n=60, epochs=1):
    """(the table's file with id and notes, the checkpoint of a run that ignored them, the
    table's columns)."""
    table = _table(tmp_path, n)
    ids, notes, species, island, bill, depth, sex = table
    full = write(tmp_path / "full.csv", [ids, island, bill, notes, depth, sex, species],
                 ["id", "island", "bill", "notes", "depth", "sex", "species"])
    assert main(["train", "--dataset", full, "--target", "species", "--ignore", "id",
                 "--ignore", "notes", "--epochs", str(epochs), "--quiet", "--save",
                 str(tmp_path / "m.npz")]) == 0
    return full, tmp_path / "m.npz", table


def _read(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_ignored_columns_train_as_the_file_without_them(tmp_path):
    """A run with --ignore id --ignore notes has the weights, metrics and stored features of
    the same run on the file without those columns (whose ids, unique text, would otherwise
    refuse to train as a category, and whose notes have missing values)."""
    ids, notes, species, island, bill, depth, sex = _table(tmp_path)
    full = write(tmp_path / "full.csv", [ids, island, bill, notes, depth, sex, species],
                 ["id", "island", "bill", "notes", "depth", "sex", "species"])
    bare = write(tmp_path / "bare.csv", [island, bill, depth, sex, species],
                 ["island", "bill", "depth", "sex", "species"])
    with pytest.raises(gn.DataError, match="column 'id' holds 240 distinct text values .* "
                                           r"\(--ignore COLUMN\)"):
        load_data(DataSpec(full, target="species", ignore=["notes"]))
    flags = ["--target", "species", "--epochs", "3", "--quiet", "--backend", "numpy"]
    for name, path, extra in (("a", full, ["--ignore", "id", "--ignore", "notes"]),
                              ("b", bare, [])):
        assert main(["train", "--dataset", path, *flags, *extra, "--save",
                     str(tmp_path / f"{name}.npz"), "--metrics-json",
                     str(tmp_path / f"{name}.json")]) == 0
    a, b = load_checkpoint(tmp_path / "a.npz"), load_checkpoint(tmp_path / "b.npz")
    assert a.features == b.features and [f["name"] for f in a.features] == \
        ["island", "bill", "depth", "sex"]
    for k, v in b.build_model("numpy").params.items():
        np.testing.assert_array_equal(a.build_model("numpy").params[k], v)
    ma, mb = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert ma["test_accuracy"] == mb["test_accuracy"] and ma["val_loss"] == mb["val_loss"]
    assert a.extra["data"]["ignore"] == ["id", "notes"] and "ignore" not in b.extra["data"]
    # evaluate reads the run's file the same way; info says what was left out
    assert main(["evaluate", "--checkpoint", str(tmp_path / "a.npz"), "--metrics-json",
                 str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["test_accuracy"] == ma["test_accuracy"]


def test_predict_leaves_them_out_and_keeps_what_it_is_asked_to(tmp_path, capsys):
    """predict on the training file (id and notes present) gives the bare file's predictions;
    --keep id puts each row's id first, so the output joins back onto the input."""
    full, _, table = _trained(tmp_path, n=240, epochs=2)
    ids, notes, species, island, bill, depth, sex = table
    bare = write(tmp_path / "bare.csv", [island, bill, depth, sex],
                 ["island", "bill", "depth", "sex"])
    for out, inp, extra in (("k.csv", full, ["--keep", "id"]), ("p.csv", bare, [])):
        assert main(["predict", "--checkpoint", str(tmp_path / "m.npz"), "--input", inp,
                     "--output", str(tmp_path / out), *extra]) == 0
    kept, plain = _read(tmp_path / "k.csv"), _read(tmp_path / "p.csv")
    assert kept[0] == ["id"] + plain[0] and plain[0][:2] == ["label", "p_Adelie"]
    assert [row[0] for row in kept[1:]] == ids
    assert [row[1:] for row in kept[1:]] == plain[1:]
    # a feature kept too (to plot the predictions against): copied, and still a feature
    assert main(["predict", "--checkpoint", str(tmp_path / "m.npz"), "--input", full,
                 "--output", str(tmp_path / "kb.csv"), "--keep", "id", "--keep", "bill"]) == 0
    both = _read(tmp_path / "kb.csv")
    assert both[0] == ["id", "bill"] + plain[0]
    assert [row[:2] for row in both[1:]] == [[i, f"{b}"] for i, b in zip(ids, bill.tolist())]
    assert [row[2:] for row in both[1:]] == plain[1:]
    # the true label beside the predicted one, where the target column is called "label":
    # a kept column named as an output is input_<name> (the header held "label" twice)
    lab = write(tmp_path / "lab.csv", [island, bill, depth, sex, species],
                ["island", "bill", "depth", "sex", "label"])
    assert main(["train", "--dataset", lab, "--target", "label", "--epochs", "1", "--quiet",
                 "--save", str(tmp_path / "l.npz")]) == 0
    assert main(["predict", "--checkpoint", str(tmp_path / "l.npz"), "--input", lab,
                 "--output", str(tmp_path / "kl.csv"), "--keep", "label"]) == 0
    truth = _read(tmp_path / "kl.csv")
    assert truth[0][:3] == ["input_label", "label", "p_Adelie"]
    assert [row[0] for row in truth[1:]] == list(species)
    # evaluate's --ignore adds to the run's (it replaced them: id came back, unexpected)
    noted = write(tmp_path / "noted.csv", [ids, island, bill, notes, depth, sex, species, notes],
                  ["id", "island", "bill", "notes", "depth", "sex", "species", "remark"])
    assert main(["evaluate", "--checkpoint", str(tmp_path / "m.npz"), "--dataset", noted,
                 "--split", "all"]) == 1
    assert "(unexpected: 'remark'); --ignore remark leaves that column out" \
        in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "m.npz"), "--dataset", noted,
                 "--split", "all", "--ignore", "remark"]) == 0
    # a column the run never saw (a note added since): refused, or --ignore'd
    extra = write(tmp_path / "extra.csv", [island, bill, depth, sex, notes],
                  ["island", "bill", "depth", "sex", "remark"])
    assert main(["predict", "--checkpoint", str(tmp_path / "m.npz"), "--input", extra,
                 "--output", str(tmp_path / "x.csv")]) == 1
    assert "(unexpected: 'remark')" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "m.npz"), "--input", extra,
                 "--output", str(tmp_path / "x.csv"), "--ignore", "remark"]) == 0
    assert _read(tmp_path / "x.csv") == plain
    assert main(["predict", "--checkpoint", str(tmp_path / "m.npz"), "--input", bare,
                 "--output", str(tmp_path / "x.csv"), "--keep", "idx"]) == 1
    assert "no column 'idx'; columns: island, bill, depth, sex" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "m.npz"), "--input", bare,
                 "--output", str(tmp_path / "x.npy"), "--keep", "island"]) == 1
    assert "--keep copies columns of a .csv input into a .csv output" in capsys.readouterr().err


def test_a_regression_csv_names_its_output_columns_quoted(tmp_path):
    """The predictions' header names a CSV run's target columns, one or several, and quotes a
    name with a comma (it was joined bare: the file then read as one column more, shifted)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 3))
    y = x @ np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 1.5]])
    path = write(tmp_path / "r.csv", [*x.T, *y.T], ["a", "b", "c", "price, usd", "rent"])
    for name, targets in (("one", ["price, usd"]), ("two", ["price, usd", "rent"])):
        flags = [f for t in targets for f in ("--target", t)]
        assert main(["train", "--dataset", path, *flags, "--ignore", "c", "--epochs", "1",
                     "--quiet", "--save", str(tmp_path / f"{name}.npz")]) == 0
        out = tmp_path / f"{name}.csv"
        assert main(["predict", "--checkpoint", str(tmp_path / f"{name}.npz"), "--input",
                     path, "--output", str(out)]) == 0
        table = _read(out)
        assert table[0] == targets and all(len(row) == len(targets) for row in table)
        assert len(table) == 121


@pytest.mark.parametrize("spec, error, message", [
    (dict(ignore=["idd"]), gn.DataError, r"no column 'idd' to ignore \(did you mean 'id'\?\); "
                                         r"columns: id, a, b, y"),
    (dict(ignore=["y"]), gn.ConfigError, r"column 'y' cannot be ignored: it is the target"),
    (dict(ignore=["b"], weight_column="b"), gn.ConfigError, r"it is the weight column"),
    (dict(ignore=["a", "a"]), gn.ConfigError, r"ignore must name each column once; 'a' is "
                                              r"named twice"),
    (dict(ignore="id"), gn.ConfigError, r"a list of different column names"),
])
def test_what_ignore_refuses(tmp_path, spec, error, message):
    path = write(tmp_path / "d.csv", [["u", "v", "w"], [1, 2, 3], [1, 1, 2], [0, 1, 0]],
                 ["id", "a", "b", "y"])
    with pytest.raises(error, match=message):
        load_data(DataSpec(path, target="y", **spec))
    np.save(tmp_path / "d.npy", np.ones((3, 2)))
    with pytest.raises(gn.ConfigError, match="ignore applies to .csv datasets"):
        load_data(DataSpec(str(tmp_path / "d.npy"), target=str(tmp_path / "d.npy"),
                           ignore=["id"]))


def test_a_gap_in_an_ignored_column_drops_no_row(tmp_path):
    """--drop-missing leaves out rows with a missing feature, target or weight, not rows
    whose only gap is in a column that is no feature."""
    path = write(tmp_path / "d.csv", [["u", "", "w", "NA"], [1, 2, 3, 4], [0, 1, 1, 0]],
                 ["note", "a", "y"])
    data = load_data(DataSpec(path, target="y", ignore=["note"], drop_missing=True,
                              val_fraction=0, test_fraction=0))
    assert len(data.x_train) == 4 and data.rows_dropped == 0
    data = load_data(DataSpec(path, target="y", drop_missing=True, val_fraction=0,
                              test_fraction=0))
    assert data.rows_dropped == 2


def test_a_numeric_file_with_an_ignored_text_column_takes_numpys_parser(tmp_path,
                                                                         monkeypatch):
    """An id column of text, ignored, leaves the rest to NumPy's parser (3x the row-by-row
    reader's speed): the same arrays as the file without it, read without the row path."""
    import gpunet.data as data_module

    rng = np.random.default_rng(3)
    n = 50
    a, b = rng.normal(size=n).round(5), rng.uniform(-1e6, 1e6, n)
    y = rng.integers(0, 3, n)
    ids = [f"P{i}" if i % 7 else "" for i in range(n)]  # text, empty cells
    full = write(tmp_path / "full.csv", [a, ids, b, y], ["a", "id", "b", "y"])
    plain = write(tmp_path / "plain.csv", [a, b, y], ["a", "b", "y"])
    expected = data_module._read_csv(plain, "y")

    def refused(*args, **kwargs):
        raise AssertionError("the row-by-row reader was taken")

    monkeypatch.setattr(data_module, "_DataRows", refused)
    got = data_module._read_csv(full, "y", ignore=("id",))
    np.testing.assert_array_equal(got[0], np.column_stack([a, b]))
    for mine, theirs in zip(got, expected):
        np.testing.assert_array_equal(mine, theirs)
    with open(tmp_path / "r.csv", "w") as f:  # header names quoted, as R's write.csv writes
        f.write('"a","id","b","y"\n' + "".join(f"{p},{q},{r},{t}\n"
                                                for p, q, r, t in zip(a, ids, b, y)))
    quoted = data_module._read_csv(str(tmp_path / "r.csv"), "y", ignore=("id",))
    np.testing.assert_array_equal(quoted[0], got[0])  # (and NumPy's parser took it)
    write(tmp_path / "short.csv", [a[:2], ["x", "y"], b[:2], y[:2]], ["a", "id", "b", "y"])
    with open(tmp_path / "short.csv", "a") as f:
        f.write("1,z,2\n")  # a short row: the row path names it, as before
    with pytest.raises(AssertionError, match="row-by-row"):
        data_module._read_csv(str(tmp_path / "short.csv"), "y", ignore=("id",))
    # a quote anywhere: row by row, where Python's strict reader refuses what NumPy's lenient
    # one takes apart ("bad"quote), as it does without --ignore
    with open(tmp_path / "quoted.csv", "w") as f:
        f.write('a,id,b,y\n1.5,"P,1",2,0\n2.5,"bad"quote,3,1\n')
    with pytest.raises(AssertionError, match="row-by-row"):
        data_module._read_csv(str(tmp_path / "quoted.csv"), "y", ignore=("id",))
    monkeypatch.undo()
    with pytest.raises(gn.DataError, match=r"line 3: malformed quoting"):
        data_module._read_csv(str(tmp_path / "quoted.csv"), "y", ignore=("id",))


def test_resume_refuses_another_ignore(tmp_path, capsys):
    _trained(tmp_path)
    assert main(["train", "--resume", str(tmp_path / "m.npz"), "--epochs", "2", "--quiet",
                 "--ignore", "notes", "--ignore", "id"]) == 0  # the same, in another order
    assert main(["train", "--resume", str(tmp_path / "m.npz"), "--epochs", "3", "--quiet",
                 "--ignore", "id"]) == 1
    assert "--ignore cannot change them" in capsys.readouterr().err


def test_an_unnamed_index_column_is_pointed_out_and_ignored_by_its_empty_name(tmp_path,
                                                                             capsys):
    """pandas' to_csv writes its row index as a first column with an empty name, which trains
    as a feature: train says so, and --ignore '' leaves it out."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2))
    path = tmp_path / "idx.csv"
    with open(path, "w") as f:
        f.write(",a,b,y\n")
        f.writelines(f"{i},{r[0]},{r[1]},{int(r[0] > 0)}\n" for i, r in enumerate(x))
    flags = ["train", "--dataset", str(path), "--target", "y", "--epochs", "1", "--backend",
             "numpy", "--save", str(tmp_path / "m.npz")]
    capsys.readouterr()
    assert main(flags) == 0
    assert "gpunet: warning: a feature column has no name (a row index, as pandas' to_csv " \
        "writes one?): --ignore '' leaves it out" in capsys.readouterr().err
    assert main(flags + ["--quiet"]) == 0  # (a warning: --quiet keeps it)
    assert "has no name" in capsys.readouterr().err
    assert main(flags + ["--ignore", ""]) == 0
    assert "has no name" not in capsys.readouterr().err
    assert [e["name"] for e in load_checkpoint(tmp_path / "m.npz").features] == ["a", "b"]


def test_predict_writes_its_csv_by_blocks_of_rows_the_same_bytes(tmp_path, monkeypatch):
    """predict turns about PREDICT_CSV_CELLS cells into text at a time (it held the whole
    table as Python lists and one string, 2-3x the output): blocks of 7 rows (of 3 columns:
    probabilities), which cross the file's rows at every place, give the bytes of one block,
    kept ids and text labels included."""
    import gpunet.cli as cli

    full, _, _ = _trained(tmp_path)
    outputs = []
    for rows in (10**6, 7):
        monkeypatch.setattr(cli, "PREDICT_CSV_CELLS", 3 * rows)
        out = tmp_path / f"p{rows}.csv"
        assert main(["predict", "--checkpoint", str(tmp_path / "m.npz"), "--input", full,
                     "--output", str(out), "--keep", "id"]) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and outputs[0].count(b"\n") == 61
