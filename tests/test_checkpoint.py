"""Checkpoints: exact round trips, atomic writes, and files that must be refused."""

from __future__ import annotations

import json
import re
import os

import numpy as np
import pytest

import gpunet as gn
from gpunet.checkpoint import FORMAT, VERSION, load_checkpoint, save_checkpoint
from gpunet.data import Standardizer


def trained(backend, optimizer="adam"):
    model = gn.MLP([5, 7, 3], backend=backend, seed=4)
    opt = gn.get_optimizer(optimizer, model, lr=0.01, **({"momentum": 0.9} if optimizer == "sgd" else {}))
    rng = np.random.default_rng(0)
    for _ in range(3):
        model.train_step(rng.normal(size=(9, 5)), rng.integers(0, 3, 9), gn.CrossEntropyLoss(), opt)
    return model, opt


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_round_trip_restores_weights_and_optimizer_exactly(tmp_path, backend, optimizer):
    model, opt = trained(backend, optimizer)
    std = Standardizer(np.arange(5.0), np.full(5, 2.0))
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, opt, epoch=7, standardizer=std, extra={"dataset": "x"})
    ck = load_checkpoint(path)
    assert ck.epoch == 7 and ck.extra == {"dataset": "x"}
    np.testing.assert_array_equal(ck.standardizer.mean, std.mean)
    clone = ck.build_model(backend)
    for k in model.params:
        np.testing.assert_array_equal(backend.to_host(clone.params[k]), backend.to_host(model.params[k]))
    opt2 = gn.get_optimizer(optimizer, clone, lr=1.0)
    ck.load_optimizer(opt2)
    assert opt2.steps == 3 and opt2.lr == 0.01
    # one more identical step on both gives identical weights
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(9, 5)), rng.integers(0, 3, 9)
    model.train_step(x, y, gn.CrossEntropyLoss(), opt)
    clone.train_step(x, y, gn.CrossEntropyLoss(), opt2)
    for k in model.params:
        np.testing.assert_array_equal(backend.to_host(clone.params[k]), backend.to_host(model.params[k]))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_state_that_does_not_fit_is_refused_before_anything_changes(optimizer):
    """State for another model's shapes or parameters, in slots the optimiser does not keep,
    or with hyperparameters its constructor refuses: the matching GpunetError, naming what,
    and the optimiser left as it was (its next step is the step it would have taken)."""
    _, source = trained("numpy", optimizer)
    good = source.state_dict()
    slot = "momentum_buffer" if optimizer == "sgd" else "exp_avg"
    narrow = gn.MLP([5, 4, 3], backend="numpy", seed=4)
    cases = [
        (gn.MLP([5, 7, 3], backend="numpy"), {**good, "name": "rmsprop"}, gn.ConfigError,
         "optimizer state is for 'rmsprop'"),
        (narrow, good, gn.ShapeError, rf"state W1/{slot} is shaped \(7, 5\); the parameter "
                                      r"is \(4, 5\)"),
        (gn.MLP([5, 7, 3], backend="numpy"),
         {**good, "state": {**good["state"], "W9": good["state"]["W1"]}}, gn.ConfigError,
         "optimizer state for 'W9', which the model does not have"),
        (gn.MLP([5, 7, 3], backend="numpy"),
         {**good, "state": {"W1": {"velocity": good["state"]["W1"][slot]}}}, gn.ConfigError,
         f"optimizer state W1/velocity: {optimizer} keeps"),
        (gn.MLP([5, 7, 3], backend="numpy"),
         {**good, "hyperparameters": {**good["hyperparameters"], "lr": -5}}, gn.ConfigError,
         "lr must be a finite number >= 0"),
        (gn.MLP([5, 7, 3], backend="numpy"),
         {**good, "hyperparameters": {**good["hyperparameters"], "bogus": 1}}, gn.ConfigError,
         r"unknown hyperparameters \['bogus'\]"),
        (gn.MLP([5, 7, 3], backend="numpy"),
         {**good, "hyperparameters": {**good["hyperparameters"], "weight_decay": -1}},
         gn.ConfigError, "weight_decay must be a finite number >= 0"),
        (gn.MLP([5, 7, 3], backend="numpy"), {**good, "steps": -1}, gn.ConfigError,
         "steps must be an integer >= 0"),
        (gn.MLP([5, 7, 3], backend="numpy"),  # a bad array after good changes: none are made
         {**good, "steps": 77, "hyperparameters": {**good["hyperparameters"], "lr": 0.25},
          "state": {**good["state"], "W2": {slot: np.full((3, 7), "x")}}}, gn.ConfigError,
         f"optimizer state W2/{slot} must hold finite numbers"),
        (gn.MLP([5, 7, 3], backend="numpy"), {**good, "state": None}, gn.ConfigError,
         "hyperparameters and state must be dicts"),
        (gn.MLP([5, 7, 3], backend="numpy"), {**good, "state": {"W1": None}}, gn.ConfigError,
         "hyperparameters and state must be dicts"),
        (gn.MLP([5, 7, 3], backend="numpy"),  # a parameter's state left out
         {**good, "state": {k: v for k, v in good["state"].items() if k != "b2"}},
         gn.ConfigError, f"optimizer state is missing b2/{slot}(, b2/exp_avg_sq)?, which the "
                         "other parameters have"),
        (gn.MLP([5, 7, 3], backend="numpy"),  # one slot of one parameter left out
         {**good, "state": {**good["state"], "W1": {s: a for s, a in good["state"]["W1"].items()
                                                    if s != slot}}},
         gn.ConfigError, f"optimizer state is missing W1/{slot}"),
    ]
    for model, state, error, message in cases:
        opt = gn.get_optimizer(optimizer, model, lr=0.5)
        before = (opt.lr, opt.steps, opt.weight_decay, dict(opt.state))
        with pytest.raises(error, match=message):
            opt.load_state_dict(state)
        assert (opt.lr, opt.steps, opt.weight_decay, dict(opt.state)) == before
    zero = gn.get_optimizer(optimizer, gn.MLP([5, 7, 3], backend="numpy"), lr=0.5)
    zero.load_state_dict({**good, "hyperparameters": {**good["hyperparameters"], "lr": 0.0}})
    assert zero.lr == 0.0 and zero.steps == good["steps"]  # a schedule's floor loads


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_state_follows_the_model_to_another_dtype(optimizer):
    """After model.to(dtype="float64") the optimiser's state moves along at the next step:
    its steps equal those of a float64 model given the float32 run's state (torch's
    optimizers, and a float64 reference, both keep their state in the parameters' dtype)."""
    moved, opt = trained("numpy", optimizer)
    ref_model = gn.MLP([5, 7, 3], backend="numpy", seed=4, dtype="float64")
    ref_model.load_state_dict(moved.state_dict())
    ref_opt = gn.get_optimizer(optimizer, ref_model, lr=0.01)
    ref_opt.load_state_dict(opt.state_dict())
    moved.to(dtype="float64")
    rng = np.random.default_rng(2)
    for _ in range(2):
        x, y = rng.normal(size=(9, 5)), rng.integers(0, 3, 9)
        moved.train_step(x, y, gn.CrossEntropyLoss(), opt)
        ref_model.train_step(x, y, gn.CrossEntropyLoss(), ref_opt)
    assert all(a.dtype == np.float64 for per in opt.state.values() for a in per.values())
    for k, v in ref_model.params.items():
        np.testing.assert_array_equal(moved.params[k], v, err_msg=k)


def test_write_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    model, opt = trained("numpy")
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, opt, epoch=1)
    before = path.read_bytes()
    # a crash in the middle of writing the new file leaves the old one whole
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, model, opt, epoch=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]
    assert load_checkpoint(path).epoch == 1


def test_pickled_object_array_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    header = {"format": FORMAT, "version": VERSION, "model": {}, "epoch": 0, "optimizer": None}
    path = tmp_path / "evil.npz"
    np.savez(path, header=np.frombuffer(json.dumps(header).encode(), np.uint8),
             **{"param/W1": np.array([Payload()], dtype=object)})
    assert not marker.exists()
    with pytest.raises(gn.CheckpointError, match="pickled"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("case", ["garbage", "truncated", "no_header", "other_format", "newer"])
def test_unloadable_files_raise_checkpoint_error(tmp_path, case):
    path = tmp_path / "c.npz"
    model, opt = trained("numpy")
    save_checkpoint(path, model, opt)
    data = path.read_bytes()
    hdr = lambda h: np.frombuffer(json.dumps(h).encode(), np.uint8)
    if case == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif case == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif case == "no_header":
        np.savez(path, w=np.ones(3))
    elif case == "other_format":
        np.savez(path, header=hdr({"format": "something", "version": 1}))
    else:
        np.savez(path, header=hdr({"format": FORMAT, "version": VERSION + 1}))
    with pytest.raises(gn.CheckpointError, match="upgrade gpunet" if case == "newer" else "c.npz"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(gn.CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")


def test_a_text_file_is_not_called_a_pickle(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("name,value\na,1\n")
    with pytest.raises(gn.CheckpointError, match=r"not an \.npz archive") as e:
        load_checkpoint(path)
    assert "pickle" not in str(e.value)


def _rewritten(path, drop=(), header=None):
    """Rewrite the real checkpoint at ``path`` as ``save_checkpoint``'s npz without the arrays
    ``drop``, its JSON header replaced by ``header(old) -> new`` where given (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    if header is not None:
        old = json.loads(arrays["header"].tobytes().decode("utf-8"))
        arrays["header"] = np.frombuffer(json.dumps(header(old)).encode("utf-8"), np.uint8)
    np.savez(path, **arrays)
    return path


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


#: case -> (how to corrupt a checkpoint saved with both standardisations, what the error says)
CORRUPTED = {
    "no_model": (dict(header=lambda h: _without(h, "model")), "has no model section"),
    "model_not_a_dict": (dict(header=lambda h: {**h, "model": [5, 7, 3]}),
                         r"has a malformed model section \(\[5, 7, 3\]\)"),
    "no_sizes": (dict(header=lambda h: {**h, "model": _without(h["model"], "sizes")}),
                 "model section without 'sizes'"),
    "no_activation_nor_dtype": (
        dict(header=lambda h: {**h, "model": _without(_without(h["model"], "activation"),
                                                      "dtype")}),
        "model section without 'activation', 'dtype'"),
    "no_output": (dict(header=lambda h: {**h, "model": _without(h["model"], "output")}),
                  "model section without 'output'"),
    "sizes_not_a_list": (dict(header=lambda h: {**h, "model": {**h["model"], "sizes": 5}}),
                         "malformed model section: sizes 5"),
    "no_epoch": (dict(header=lambda h: _without(h, "epoch")), "has no epoch in its header"),
    "no_std": (dict(drop=("data/std",)), "has data/mean but no data/std"),
    "no_mean": (dict(drop=("data/mean",)), "has data/std but no data/mean"),
    "no_y_std": (dict(drop=("data/y_std",)), "has data/y_mean but no data/y_std"),
    "no_y_mean": (dict(drop=("data/y_mean",)), "has data/y_std but no data/y_mean"),
}


@pytest.fixture
def saved(tmp_path):
    """A real checkpoint with an optimizer and feature and target standardisations."""
    model, opt = trained("numpy")
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, opt, epoch=2,
                    standardizer=Standardizer(np.arange(5.0), np.full(5, 2.0)),
                    target_standardizer=Standardizer(np.zeros(3), np.ones(3)))
    assert load_checkpoint(path).build_model("numpy").sizes == [5, 7, 3]  # whole before
    return path


@pytest.mark.parametrize("case", sorted(CORRUPTED))
def test_a_corrupted_checkpoint_raises_checkpoint_error_naming_the_missing_part(saved, case):
    """At load time, so that every command and ``build_model`` get it: one line naming the file
    and what is missing or malformed."""
    how, says = CORRUPTED[case]
    with pytest.raises(gn.CheckpointError, match=says) as e:
        load_checkpoint(_rewritten(saved, **how))
    assert "c.npz" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("case", ["no_model", "no_sizes", "no_std", "no_y_mean"])
@pytest.mark.parametrize("command", [
    ["info", "--checkpoint", "{path}"],
    ["evaluate", "--checkpoint", "{path}", "--backend", "numpy"],
    ["predict", "--checkpoint", "{path}", "--input", "{folder}/x.npy",
     "--output", "{folder}/p.npy", "--backend", "numpy"],
    ["train", "--resume", "{path}", "--epochs", "3", "--quiet", "--backend", "numpy"],
], ids=["info", "evaluate", "predict", "resume"])
def test_every_command_says_a_corrupted_checkpoint_in_one_line(saved, case, command, capsys):
    """The CLI in process: exit status 1, one ``gpunet: error:`` line naming the file and the
    missing part on stderr, no traceback."""
    from gpunet.cli import main

    np.save(saved.parent / "x.npy", np.zeros((2, 5)))
    how, says = CORRUPTED[case]
    _rewritten(saved, **how)
    capsys.readouterr()
    argv = [a.format(path=saved, folder=saved.parent) for a in command]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunet: error: "), err
    assert "c.npz" in lines[0]
    assert re.search(says, lines[0]), lines[0]


def test_an_atomic_write_through_a_symbolic_link_replaces_the_file_it_points_to(tmp_path):
    """--save on a link (to shared storage, say) writes the file the link points to and keeps
    the link; the rename replaced the link with a file, leaving the target stale."""
    from gpunet.checkpoint import atomic_write

    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "run.npz"
    target.write_bytes(b"old")
    link = tmp_path / "run.npz"
    link.symlink_to(target)
    atomic_write(link, lambda f: f.write(b"new"))
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["run.npz"]


def test_an_oserror_of_the_writers_own_keeps_its_message(tmp_path):
    """Only an error of the file itself (one with an errno) is said of the path: the writer's
    own OSError("quota exceeded") came out as "[Errno None] None"."""
    from gpunet.checkpoint import atomic_write

    def write(f):
        raise OSError("quota exceeded")

    with pytest.raises(OSError, match="^quota exceeded$"):
        atomic_write(tmp_path / "a.npz", write)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temporary_files_are_removed_once_an_hour_old(tmp_path):
    """kill -9 mid-write (a preempted job) leaves a temporary file as large as a checkpoint
    beside it; the next write of that path removes those an hour old, and leaves a younger
    one (a write in progress) and other paths' alone."""
    import os
    import time

    from gpunet.checkpoint import atomic_write

    old, young, other = (tmp_path / ".tmp-run.npz.abc123.part",
                         tmp_path / ".tmp-run.npz.def456.part",
                         tmp_path / ".tmp-other.npz.ghi789.part")
    for p in (old, young, other):
        p.write_bytes(b"x" * 100)
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    atomic_write(tmp_path / "run.npz", lambda f: f.write(b"new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [young.name, other.name, "run.npz"])


def test_a_failed_atomic_write_names_the_file_not_its_temporary(tmp_path):
    """Writing over a folder fails naming the path asked for (the temporary file beside it is
    an implementation detail), and leaves no temporary file behind."""
    from gpunet.checkpoint import atomic_write

    target = tmp_path / "out.csv"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as e:
        atomic_write(target, lambda f: f.write(b"x"))
    assert e.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_a_users_own_extra_section_loads_and_the_commands_say_what_they_cannot_read(
        tmp_path, capsys):
    """save_checkpoint(extra=...) takes any JSON-able dict: keys that gpunet's runs also use
    (data, training) may hold anything there, and load_checkpoint reads the file; only the
    commands that read those sections as a run's refuse it, in one line naming the key."""
    from gpunet.cli import main

    model = gn.MLP([3, 4, 2], backend="numpy")
    path = tmp_path / "mine.npz"
    extra = {"data": "train.csv", "training": "notes", "n_classes": 3.0, "mine": [1, 2],
             "features": [{"name": "a", "unit": "cm"}]}
    save_checkpoint(path, model, gn.SGD(model, lr=0.1), epoch=2, extra=extra)
    ckpt = load_checkpoint(path)
    assert ckpt.extra == extra
    np.testing.assert_array_equal(ckpt.build_model("numpy").params["W1"], model.params["W1"])
    with pytest.raises(gn.CheckpointError, match=r"malformed header: extra.training \('notes'"):
        ckpt.check_sections(str(path))
    assert main(["info", "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "extra.training ('notes')" in err
    from gpunet.data import make_dataset

    data = make_dataset("d", np.ones((8, 3)), np.ones((8, 2)), "regression")
    with pytest.raises(gn.CheckpointError, match="extra.training"):
        gn.fit(model, data, gn.MSELoss(), gn.SGD(model), resume=str(path), progress=False)


def test_evaluating_a_regression_on_another_number_of_targets_is_refused(tmp_path, capsys):
    """A run on two target columns evaluated on a file of one: a line saying so (the stored
    standardisation of two columns broadcast the one column to two, and gave figures)."""
    from gpunet.cli import main

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    np.savez(tmp_path / "two.npz", x=x, y=np.column_stack([x[:, 0], x[:, 1] - x[:, 2]]))
    np.savez(tmp_path / "one.npz", x=x, y=x[:, :1])
    run = tmp_path / "r.npz"
    assert main(["train", "--dataset", str(tmp_path / "two.npz"), "--epochs", "1", "--quiet",
                 "--backend", "numpy", "--save", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--dataset", str(tmp_path / "one.npz"),
                 "--split", "all", "--backend", "numpy"]) == 1
    assert "1 target column(s), but the model predicts 2" in capsys.readouterr().err


def test_a_resume_refuses_best_epoch_weights_that_do_not_fit_the_model(tmp_path):
    from gpunet.checkpoint import save_checkpoint
    from gpunet.data import DataSpec, load_data
    from gpunet.train import fit

    data = load_data(DataSpec("wine", val_fraction=0.2))
    model = gn.MLP([13, 8, 3], seed=1)
    fit(model, data, gn.CrossEntropyLoss(), gn.Adam(model), epochs=2, patience=5,
        save=tmp_path / "r.npz", progress=False)
    ckpt = load_checkpoint(tmp_path / "r.npz")
    assert set(ckpt.group("best")) == set(model.params)  # (patience keeps them)
    arrays = {**ckpt.arrays, "best/W2": np.zeros((3, 9))}
    fresh = ckpt.build_model("numpy")
    opt = gn.Adam(fresh)
    opt.load_state_dict({**ckpt.header["optimizer"], "state": ckpt.optimizer_state})
    save_checkpoint(tmp_path / "bad.npz", fresh, opt, epoch=ckpt.epoch,
                    standardizer=ckpt.standardizer, arrays={k: v for k, v in arrays.items()
                                                            if k.startswith("best/")},
                    classes=ckpt.classes, extra=ckpt.extra)
    again = gn.MLP([13, 8, 3])
    with pytest.raises(gn.CheckpointError, match="best-epoch weights do not fit the model: W2"):
        fit(again, data, gn.CrossEntropyLoss(), gn.Adam(again), epochs=4, patience=5,
            resume=tmp_path / "bad.npz", progress=False)


def _fifo_reader(path):
    """A thread reading everything written into the FIFO ``path`` (daemon: a writer that
    never opens it leaves it blocked, not the test run)."""
    import threading

    got = {}

    def read():
        with open(path, "rb") as f:
            got["bytes"] = f.read()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, got


@pytest.mark.parametrize("writer", ["checkpoint", "npy", "bytes"])
def test_a_fifo_is_written_into_and_a_regular_file_still_replaced_whole(tmp_path, monkeypatch,
                                                                         writer):
    """A FIFO named as --save or --output was replaced by a renamed regular file: its reader
    got nothing and the FIFO was gone. Each writer (np.savez's zip, np.save, plain bytes) now
    writes into it, though it cannot seek; a regular file is still written beside and
    renamed over, its old content whole until then."""
    import io
    import stat

    from gpunet.checkpoint import atomic_write

    model, opt = trained("numpy")
    table = np.arange(12.0).reshape(4, 3)

    def write(path):
        if writer == "checkpoint":
            save_checkpoint(path, model, opt, epoch=3)
        else:
            atomic_write(path, (lambda f: np.save(f, table)) if writer == "npy"
                         else (lambda f: f.write(b"new")))

    def check(data):
        if writer == "checkpoint":
            (tmp_path / "copy.npz").write_bytes(data)
            assert load_checkpoint(tmp_path / "copy.npz").epoch == 3
        elif writer == "npy":
            np.testing.assert_array_equal(np.load(io.BytesIO(data)), table)
        else:
            assert data == b"new"

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader, got = _fifo_reader(fifo)
    write(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    reader.join(10)
    assert not reader.is_alive()
    check(got["bytes"])
    regular = tmp_path / "out"
    regular.write_bytes(b"old")
    inode = regular.stat().st_ino
    real_replace = os.replace

    def replace(src, dst):  # (the moment before the rename: the old file, whole)
        assert regular.read_bytes() == b"old"
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write(regular)
    assert regular.stat().st_ino != inode
    check(regular.read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["fifo", "out"] + (["copy.npz"] if writer == "checkpoint" else []))


def test_a_failed_command_leaves_no_output_folders_behind(tmp_path, monkeypatch, capsys):
    """check_writable made each output's folders before any work, so a command that then
    failed (a misspelt dataset) left typo/deep/ and plots/ behind; they are made as the file
    is written now, and a run that gets that far still makes them."""
    from gpunet.cli import main

    monkeypatch.chdir(tmp_path)
    outputs = ["--save", "typo/deep/run.npz", "--plot", "plots/a.png", "--metrics-json",
               "m/x.json"]
    assert main(["train", "--dataset", "nosuch.csv", "--target", "y", "--backend", "numpy",
                 "--quiet", *outputs]) == 1
    assert capsys.readouterr().err.startswith("gpunet: error: nosuch.csv: no such file")
    assert list(tmp_path.iterdir()) == []
    assert main(["train", "--dataset", "iris", "--epochs", "1", "--backend", "numpy",
                 "--quiet", *outputs]) == 0
    assert all((tmp_path / p).is_file() for p in ("typo/deep/run.npz", "plots/a.png",
                                                  "m/x.json"))


def test_check_writable_asks_the_nearest_folder_that_exists(tmp_path, monkeypatch):
    from gpunet.checkpoint import check_writable

    (tmp_path / "file").write_text("x")
    with pytest.raises(gn.ConfigError, match=re.escape(
            f"--save {tmp_path}/file/a/run.npz: cannot create folder {tmp_path}/file/a "
            f"({tmp_path}/file is a file)")):
        check_writable(f"{tmp_path}/file/a/run.npz", "--save")
    with pytest.raises(gn.ConfigError, match=re.escape(
            f"--save {tmp_path}/file/run.npz: cannot create folder {tmp_path}/file (a file of "
            "that name is there)")):
        check_writable(f"{tmp_path}/file/run.npz", "--save")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.path.samefile(
        p, tmp_path) and mode == os.W_OK else real(p, mode))
    with pytest.raises(gn.ConfigError, match=re.escape(
            f"--plot {tmp_path}/a/b/p.png: cannot create folder {tmp_path}/a/b ({tmp_path} is "
            "not writable)")):
        check_writable(f"{tmp_path}/a/b/p.png", "--plot")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
