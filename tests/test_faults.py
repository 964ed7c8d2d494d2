"""Faults around checkpoints, end to end through the ``gpunet`` command.

A run killed with SIGKILL at any moment, two runs racing on one checkpoint path, a resume whose
architecture does not fit, a corrupted file and a file carrying a pickle: each must leave a
whole checkpoint (or none) and, where the command refuses, exit 1 with one line and no traceback.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpunet.checkpoint import FORMAT, VERSION, load_checkpoint
from gpunet.data import DataSpec, load_data
from gpunet.errors import CheckpointError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")

#: one BLAS thread per process: two runs share the 2 cores, and their numbers stay reproducible
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("GPUNET_BACKEND", None)

#: epochs of three batches on digits, so that checkpoint writes follow each other closely
FAST = ["--dataset", "digits", "--batch-size", "512", "--quiet", "--backend", "numpy"]
TEMP_PATTERN = ".tmp-*.part"  # what gpunet.checkpoint.atomic_write names its temporary files


def gpunet(*args) -> list[str]:
    return [sys.executable, "-m", "gpunet.cli", *map(str, args)]


def run(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(gpunet(*args), capture_output=True, text=True, env=ENV, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 1, exactly one line on stderr, ``gpunet: error: ...``, no traceback."""
    err = proc.stderr
    assert proc.returncode == 1, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("gpunet: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def arrays_of(path) -> dict:
    """Every array of a checkpoint but the header (which holds wall-clock seconds)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "header"}


def same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])
        for k in a
    )


def assert_whole_checkpoint(path, steps_per_epoch: int) -> int:
    """``path`` loads, and everything in it describes one completed epoch; returns the epoch."""
    ck = load_checkpoint(path)
    state = ck.extra["training"]["state"]
    epoch = ck.epoch
    assert epoch >= 1
    assert state["epoch"] == epoch and state["step"] == 0
    assert [row["epoch"] for row in state["history"]] == list(range(1, epoch + 1))
    assert "epoch/losses" not in ck.arrays  # only a mid-epoch (Ctrl-C) checkpoint has them
    assert ck.header["optimizer"]["steps"] == epoch * steps_per_epoch
    model = ck.build_model("numpy")
    assert all(np.isfinite(p).all() for p in model.params.values())
    assert set(ck.optimizer_state) == set(model.params)
    return epoch


@pytest.fixture(scope="module")
def digits_steps() -> int:
    """Optimizer steps per epoch of ``FAST`` (the digits training split in batches of 512)."""
    n = len(load_data(DataSpec("digits")).x_train)
    return -(-n // 512)


@pytest.fixture(scope="module")
def iris_checkpoint(tmp_path_factory):
    """A real checkpoint of a short run: iris, one hidden layer of 8."""
    path = tmp_path_factory.mktemp("iris") / "iris.npz"
    proc = run("train", "--dataset", "iris", "--epochs", "2", "--hidden", "8", "--quiet",
               "--backend", "numpy", "--save", path)
    assert proc.returncode == 0, proc.stderr
    return path


# -- SIGKILL while checkpoints are being written ---------------------------------------------

def _wait_for(path, proc, limit=60.0) -> None:
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before writing {path}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no checkpoint at {path} after {limit:.0f}s")
        time.sleep(0.005)


def _read_until(path, deadline, steps_per_epoch) -> int:
    """Load the checkpoint over and over while the run rewrites it: a reader must always see
    a whole file (the old one or the new one). Returns how many loads it made."""
    reads, last = 0, 0
    while time.monotonic() < deadline:
        epoch = assert_whole_checkpoint(path, steps_per_epoch)
        assert epoch >= last  # never an older file than one already seen
        last = epoch
        reads += 1
    return reads


def test_sigkill_at_random_moments_always_leaves_a_whole_checkpoint(tmp_path, digits_steps):
    """Kill a real `gpunet train --save` run 15 times at seeded random moments (a few from the
    start, the rest while it writes a checkpoint every few milliseconds, read back meanwhile):
    the checkpoint path always holds a whole checkpoint of the last completed epoch, or nothing
    yet; anything else in the folder is a temporary `.tmp-*.part` that is not taken for the
    checkpoint; and a run resumes from the survivor."""
    rng = random.Random(1234)
    epochs = 1000  # never reached: every run is killed within a few seconds
    survivors = []  # (folder, checkpoint, epoch)
    reads = 0
    for trial in range(15):
        folder = tmp_path / f"trial{trial:02d}"
        folder.mkdir()
        path = folder / "ckpt.npz"
        proc = subprocess.Popen(
            gpunet("train", *FAST, "--epochs", epochs, "--hidden", 8, "--seed", trial,
                   "--save", path),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        try:
            if trial % 5 == 0:  # any moment from the start, maybe before the first write
                time.sleep(rng.uniform(0.0, 1.5))
            else:  # while epochs (and writes) follow each other, reading it meanwhile
                _wait_for(path, proc)
                reads += _read_until(path, time.monotonic() + rng.uniform(0.0, 0.4),
                                     digits_steps)
            assert proc.poll() is None, f"trial {trial}: the run ended on its own ({proc.returncode})"
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")

        names = sorted(os.listdir(folder))
        strays = [n for n in names if n != path.name]
        assert all(fnmatch.fnmatch(n, TEMP_PATTERN) for n in strays), \
            f"trial {trial}: unexpected files {strays}"
        for stray in strays:  # a killed write's leftover is never a checkpoint on its own name
            assert not stray.endswith(".npz")
        if path.name in names:
            epoch = assert_whole_checkpoint(path, digits_steps)
            assert epoch < epochs
            survivors.append((folder, path, epoch))
    assert len(survivors) >= 10, f"only {len(survivors)} of 15 kills came after a checkpoint"
    assert reads >= 20, f"only {reads} reads while the runs were writing"

    # Resume the run that left the most behind (a temporary file if any): it must carry on.
    folder, path, epoch = max(survivors, key=lambda s: (len(os.listdir(s[0])), s[2]))
    proc = run("train", "--resume", path, "--epochs", epoch + 1, "--quiet", "--backend", "numpy")
    assert proc.returncode == 0, proc.stderr
    assert assert_whole_checkpoint(path, digits_steps) == epoch + 1
    assert load_checkpoint(path).extra["training"]["state"]["finished"]


# -- two runs writing the same checkpoint path ------------------------------------------------

def test_two_runs_racing_on_one_path_leave_one_whole_final_checkpoint(tmp_path):
    """Two `gpunet train --save same.npz` runs (different seeds and widths) started together:
    the file afterwards is whole and is exactly the final state of one of them (last writer
    wins), never a mix; neither run fails and no temporary file is left behind."""
    shared = tmp_path / "shared"
    alone = tmp_path / "alone"
    shared.mkdir()
    alone.mkdir()
    runs = {"a": ["--seed", 1, "--hidden", 8], "b": ["--seed", 2, "--hidden", 12]}
    epochs = 150

    def start(flags, path):
        return subprocess.Popen(gpunet("train", *FAST, "--epochs", epochs, *flags, "--save", path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)

    target = shared / "same.npz"
    procs = {name: start(flags, target) for name, flags in runs.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"run {name}: {err.decode(errors='replace')}"
    assert os.listdir(shared) == ["same.npz"]
    raced = load_checkpoint(target)
    assert raced.epoch == epochs and raced.extra["training"]["state"]["finished"]

    # Each run again on its own path: the runs are deterministic given their flags.
    procs = {name: start(flags, alone / f"{name}.npz") for name, flags in runs.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"run {name}: {err.decode(errors='replace')}"
    got = arrays_of(target)
    matches = [name for name in runs if same_arrays(got, arrays_of(alone / f"{name}.npz"))]
    assert len(matches) == 1, f"the raced file matches {matches or 'neither run'}"
    winner = load_checkpoint(alone / f"{matches[0]}.npz")
    assert raced.header["model"] == winner.header["model"]
    assert raced.header["optimizer"] == winner.header["optimizer"]


# -- refusals: one line, exit 1 ---------------------------------------------------------------

@pytest.mark.parametrize("hidden", [["16"], ["8", "8"]], ids=["wider", "deeper"])
def test_resume_with_other_hidden_layers_is_one_line(iris_checkpoint, hidden):
    before = iris_checkpoint.read_bytes()
    flags = [f for h in hidden for f in ("--hidden", h)]
    proc = run("train", "--resume", iris_checkpoint, *flags, "--epochs", "4", "--quiet",
               "--backend", "numpy")
    assert_one_line_error(proc, "--hidden", "[8]")
    assert iris_checkpoint.read_bytes() == before  # refused before anything was written


def _corrupt(data: bytes, seed: int) -> bytes:
    """16 bytes of the middle half XOR-ed with non-zero values (seeded)."""
    rng = np.random.default_rng(seed)
    buf = bytearray(data)
    n = len(buf)
    for i in rng.choice(np.arange(n // 4, 3 * n // 4), size=16, replace=False):
        buf[i] ^= int(rng.integers(1, 256))
    return bytes(buf)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corrupted_checkpoint_is_one_line_for_evaluate(tmp_path, iris_checkpoint, seed):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(_corrupt(iris_checkpoint.read_bytes(), seed))
    with pytest.raises(CheckpointError):  # the library refuses it too
        load_checkpoint(bad)
    proc = run("evaluate", "--checkpoint", bad, "--backend", "numpy")
    assert_one_line_error(proc, "corrupt.npz")


def test_corrupted_checkpoint_is_one_line_for_resume(tmp_path, iris_checkpoint):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(_corrupt(iris_checkpoint.read_bytes(), 7))
    before = bad.read_bytes()
    proc = run("train", "--resume", bad, "--epochs", "4", "--quiet", "--backend", "numpy")
    assert_one_line_error(proc, "corrupt.npz")
    assert bad.read_bytes() == before


def _walk(d, at=()):
    """Every (path of keys) in nested dicts."""
    for k, v in d.items():
        yield at + (k,)
        if isinstance(v, dict):
            yield from _walk(v, at + (k,))


def test_every_malformed_header_value_is_one_line_for_every_command(tmp_path, iris_checkpoint,
                                                                    capsys):
    """Each value of a real checkpoint's header in turn set to something of another kind
    (text, a negative number, a number past int64, null, lists, a mapping) or deleted: info,
    evaluate, predict and
    resume
    each end with one line saying what is wrong (or take a value that does no harm), never a
    traceback. In process, so that any other exception fails the test."""
    from gpunet.cli import main

    with np.load(iris_checkpoint) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["header"].tobytes())
    np.save(tmp_path / "x.npy", np.zeros((3, 4)))
    bad = tmp_path / "bad.npz"
    commands = (["info", "--checkpoint", str(bad)],
                ["evaluate", "--checkpoint", str(bad), "--backend", "numpy"],
                ["predict", "--checkpoint", str(bad), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "o.csv"), "--backend", "numpy"],
                ["train", "--resume", str(bad), "--epochs", "3", "--quiet", "--backend",
                 "numpy"])
    refused = 0
    for at in _walk(header):
        if at[0] in ("format", "version"):
            continue
        for value in ("x", -1, None, [], {}, [3], [{}], 10**30, "(deleted)"):
            h = json.loads(json.dumps(header))
            d = h
            for k in at[:-1]:
                d = d[k]
            if value == "(deleted)":
                del d[at[-1]]
            else:
                d[at[-1]] = value
            np.savez(bad, **{**arrays, "header": np.frombuffer(json.dumps(h).encode(),
                                                               np.uint8)})
            for cmd in commands:
                capsys.readouterr()
                if main(cmd) != 0:
                    err = capsys.readouterr().err
                    assert err.count("\n") == 1 and err.startswith("gpunet: error: "), \
                        (at, value, cmd[0], err)
                    refused += 1
    assert refused > 400  # (most such values are refused)
    # the standardisation stored as text
    np.savez(bad, **{**arrays, "data/std": np.array(["x"] * 4)})
    capsys.readouterr()
    assert main(commands[1]) == 1
    assert "data/std of dtype <U1, not numbers" in capsys.readouterr().err


@pytest.mark.parametrize("at, value", [(("model", "dropout_step"), 10**30),
                                       (("extra", "training", "state", "history"), [{}])])
def test_a_count_past_uint64_or_a_history_row_without_its_epoch_is_one_line(tmp_path, capsys,
                                                                            at, value):
    """Hand-edited values the header's kinds let through before: a dropout step no uint64
    holds (an OverflowError when the step was copied to the device's counter) and a history
    row without its epoch (a KeyError in train's summary)."""
    from gpunet.cli import main

    good = tmp_path / "d.npz"
    assert main(["train", "--dataset", "iris", "--epochs", "2", "--dropout", "0.2", "--quiet",
                 "--backend", "numpy", "--save", str(good)]) == 0
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    h = json.loads(arrays["header"].tobytes())
    d = h
    for k in at[:-1]:
        d = d[k]
    d[at[-1]] = value
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**arrays, "header": np.frombuffer(json.dumps(h).encode(), np.uint8)})
    capsys.readouterr()
    assert main(["train", "--resume", str(bad), "--epochs", "3", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"malformed header: {'.'.join(at)}" in err


class _TouchMarker:
    """Unpickling this opens (creates) ``path``: proof that a pickle ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_file(folder, where: str):
    marker = folder / "pwned"
    path = folder / "evil.npz"
    header = np.frombuffer(json.dumps({"format": FORMAT, "version": VERSION, "epoch": 1,
                                       "model": {}, "optimizer": None}).encode(), np.uint8)
    payload = np.array([_TouchMarker(marker)], dtype=object)
    if where == "param":  # a plain header beside one pickled array
        np.savez(path, header=header, **{"param/W1": payload})
    elif where == "header":
        np.savez(path, header=payload)
    else:  # not an archive at all: a bare pickle under a checkpoint's name
        path.write_bytes(pickle.dumps(_TouchMarker(marker)))
    assert not marker.exists()
    return path, marker


@pytest.mark.parametrize("where", ["param", "header", "bare_pickle"])
@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_pickled_checkpoint_is_refused_without_running_it(tmp_path, where, command):
    path, marker = _evil_file(tmp_path, where)
    if command == "evaluate":
        proc = run("evaluate", "--checkpoint", path, "--backend", "numpy")
    else:
        proc = run("train", "--resume", path, "--epochs", "3", "--quiet", "--backend", "numpy")
    assert not marker.exists(), "loading the checkpoint ran the pickle"
    assert_one_line_error(proc, "evil.npz", "pickled")


def _rewritten(src, dst, header_change=None, arrays_change=None):
    """A copy of checkpoint ``src`` with its JSON header and arrays edited (a hostile or broken
    writer: the format allows any JSON and any plain array there)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays.pop("header").tobytes())
    if header_change:
        header_change(header)
    if arrays_change:
        arrays_change(arrays)
    np.savez(dst, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    return dst


@pytest.mark.parametrize("header_change, arrays_change", [
    (lambda h: h["extra"].update(features="island"), None),
    (lambda h: h["extra"].update(features=[{"name": 3}]), None),
    (lambda h: h["extra"].update(features=[{"name": "a", "categories": "xyz"}]), None),
    (None, lambda a: a.update({"data/classes": np.array([["a", "b"], ["c", "d"]])})),
], ids=["features-a-string", "name-a-number", "categories-a-string", "classes-2d"])
def test_malformed_class_or_feature_sections_are_one_line(tmp_path, iris_checkpoint,
                                                          header_change, arrays_change):
    bad = _rewritten(iris_checkpoint, tmp_path / "bad.npz", header_change, arrays_change)
    with pytest.raises(CheckpointError, match="malformed"):  # (the features: the commands'
        load_checkpoint(bad).check_sections(bad)            # check, a user's extra may hold any)
    np.savetxt(tmp_path / "x.csv", np.ones((2, 4)), delimiter=",", header="a,b,c,d",
               comments="")
    for args in (("predict", "--checkpoint", bad, "--input", tmp_path / "x.csv", "--output",
                  tmp_path / "p.csv"), ("evaluate", "--checkpoint", bad),
                 ("info", "--checkpoint", bad)):
        assert_one_line_error(run(*args), "bad.npz", "malformed")


def test_a_malformed_estimator_section_is_a_checkpoint_error(tmp_path):
    from gpunet import MLPClassifier

    x = np.random.default_rng(0).standard_normal((40, 3))
    MLPClassifier(epochs=1, backend="numpy").fit(x, x[:, 0] > 0).save(tmp_path / "c.npz")
    bad = _rewritten(tmp_path / "c.npz", tmp_path / "bad.npz",
                     lambda h: h["extra"]["estimator"].update(params="oops"))
    with pytest.raises(CheckpointError, match=r"malformed header: extra.estimator.params"):
        MLPClassifier.load(bad)


# -- a checkpoint whose arrays or values disagree with it (hunted by a fuzzer) -------------


def _main_one_line(capsys, *args) -> str:
    """``gpunet.cli.main(args)`` in process: exit 1 and one ``gpunet: error:`` line (any other
    exception fails the test)."""
    from gpunet.cli import main

    capsys.readouterr()
    assert main([str(a) for a in args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpunet: error: "), err
    return err


def _zeros_member(path, name, n_bytes):
    """Append a deflated .npy member of ``n_bytes`` of zeros (a few hundred KiB on disk)."""
    import zipfile

    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open(name + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f8", "fortran_order": False, "shape": (n_bytes // 8,)})
            for _ in range(n_bytes >> 20):
                f.write(bytes(1 << 20))


def _npy_member_claiming(path, name, shape):
    """Replace member ``name`` by a .npy whose header claims ``shape`` over 8 bytes."""
    import io

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != name}
    np.savez(path, **arrays)
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": shape})
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(name + ".npy", buf.getvalue() + bytes(8))


def _set(d, keys, value):
    for k in keys[:-1]:
        d = d[k]
    d[keys[-1]] = value


HARDENED = {  # id: (header change, arrays change, commands, what the line says)
    "classes for more outputs": (None, lambda a: a.update(
        {"data/classes": np.array(["a", "b", "c", "d"])}), "info predict",
        "has 4 class names for a model of 3 output(s)"),
    "no class names": (None, lambda a: a.update({"data/classes": np.array([], "<U1")}),
                       "predict", "has 0 class names for a model of 3 output(s)"),
    "classes that repeat": (None, lambda a: a.update({"data/classes": np.array(["a", "b", "a"])}),
                            "info", "has class names that repeat"),
    "mean of shape (4, 1)": (None, lambda a: a.update({"data/mean": a["data/mean"][:, None],
                                                       "data/std": a["data/std"][:, None]}),
                             "predict evaluate", "data/mean of shape (4, 1), but the model has "
                                                 "4 features: (4,) expected"),
    "a std of 0": (None, lambda a: a["data/std"].__setitem__(1, 0.0), "predict",
                   "data/std with values not above 0"),
    "NaN weights": (None, lambda a: a["param/W1"].__setitem__((0, 0), np.nan), "predict info",
                    "param/W1 holding NaN or infinite values"),
    "inf in the optimiser state": (None, lambda a: a[next(k for k in a if k.startswith("opt/"))]
                                   .__setitem__(0, np.inf), "evaluate",
                                   "holding NaN or infinite values"),
    "sizes the weights do not have": (lambda h: _set(h, ("model", "sizes"), [30000, 30000, 3]),
                                      None, "predict info",
                                      "has param/W1 of shape (8, 4), but its model section's "
                                      "sizes [30000, 30000, 3] make it (30000, 30000)"),
    "sizes past any int": (lambda h: _set(h, ("model", "sizes"), [2**64, 3]), None, "predict",
                           "has param/W1 of shape (8, 4)"),
    "a layer of 0 units": (lambda h: _set(h, ("model", "sizes"), [4, 0, 3]), None, "info",
                           "sizes [4, 0, 3] (each layer needs at least 1 unit)"),
    "no bias": (None, lambda a: a.pop("param/b2"), "evaluate", "has no param/b2, which its "
                                                               "model section"),
    "a negative version": (lambda h: _set(h, ("version",), -7), None, "info",
                           "a malformed format version (-7;"),
    "a version of true": (lambda h: _set(h, ("version",), True), None, "info",
                          "a malformed format version (True;"),
    "a version as text": (lambda h: _set(h, ("version",), "2"), None, "info",
                          "a malformed format version ('2';"),
    "a dropout rate of 2": (lambda h: _set(h, ("model", "dropout"), 2.0), None, "predict",
                            "has a malformed model section (dropout must be"),
    "a val fraction of 5": (lambda h: _set(h, ("extra", "data", "val_fraction"), 5), None,
                            "evaluate", "has a malformed data section (val_fraction must lie "
                                        "in [0, 1), got 5)"),
    "betas of 2": (lambda h: _set(h, ("optimizer", "hyperparameters", "betas"), [2, 2]), None,
                   "resume", "has an optimizer section this optimizer refuses (betas must"),
    "an unknown state entry": (lambda h: _set(h, ("extra", "training", "state", "extra_key"), 1),
                               None, "resume", "training state holds unknown entries "
                                               "('extra_key')"),
    "a step past the epoch": (lambda h: _set(h, ("extra", "training", "state", "step"), 10**6),
                              None, "resume", "stopped at step 1000000 of epoch 3, whose "
                                              "batches of 32 rows are 4 steps"),
    "step figures too short": (
        lambda h: _set(h, ("extra", "training", "state", "step"), 1),
        lambda a: a.update({"epoch/losses": np.ones(1), "epoch/correct": np.ones(1, int)}),
        "resume", "epoch/losses has shape (1,), not one figure for each of the epoch's 4 steps"),
    "step figures as text": (
        lambda h: _set(h, ("extra", "training", "state", "step"), 1),
        lambda a: a.update({"epoch/losses": np.array(["x"] * 4), "epoch/correct": np.ones(4, int)}),
        "resume", "has epoch/losses of dtype <U1, not numbers"),
    "best weights of a structured dtype": (
        None, lambda a: a.update({"best/b2": np.zeros(3, dtype=[("a", "<f8"), ("b", "<i4")])}),
        "resume", "has best/b2 of dtype [('a', '<f8'), ('b', '<i4')], not numbers"),
}


@pytest.mark.parametrize("case", sorted(HARDENED))
def test_a_checkpoint_that_disagrees_with_itself_is_one_line(tmp_path, iris_checkpoint, capsys,
                                                              case):
    """Each command that reads the file names it and what is wrong, before it builds a model
    of the sizes the header claims (30000 x 30000 would take gigabytes) or uses its values."""
    header_change, arrays_change, commands, says = HARDENED[case]
    bad = _rewritten(iris_checkpoint, tmp_path / "bad.npz", header_change, arrays_change)
    np.savetxt(tmp_path / "x.csv", np.ones((2, 4)), delimiter=",", header="a,b,c,d",
               comments="")
    args = {"info": ("info", "--checkpoint", bad),
            "evaluate": ("evaluate", "--checkpoint", bad, "--backend", "numpy"),
            "predict": ("predict", "--checkpoint", bad, "--input", tmp_path / "x.csv",
                        "--output", tmp_path / "p.csv", "--backend", "numpy"),
            "resume": ("train", "--resume", bad, "--epochs", "3", "--quiet", "--backend",
                       "numpy")}
    for command in commands.split():
        err = _main_one_line(capsys, *args[command])
        assert says in err, (command, err)
    assert not (tmp_path / "p.csv").exists()


def test_a_checkpoint_that_would_inflate_or_claims_more_than_it_holds_is_refused_unread(
        tmp_path, iris_checkpoint, capsys):
    import shutil
    import tracemalloc

    bomb = tmp_path / "bomb.npz"
    shutil.copy(iris_checkpoint, bomb)
    _zeros_member(bomb, "unused", 96 << 20)  # 96 MiB of zeros in a few hundred KiB
    assert os.path.getsize(bomb) < 1 << 20
    claims = tmp_path / "claims.npz"
    shutil.copy(iris_checkpoint, claims)
    _npy_member_claiming(claims, "param/W2", (10**12,))
    for path, says in ((bomb, "would inflate from"), (claims, "an array 'param/W2' whose header "
                                                              "announces 8000000000000 bytes")):
        tracemalloc.start()
        try:
            with pytest.raises(CheckpointError, match=says):
                load_checkpoint(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 << 20
        assert says.split(" (")[0] in _main_one_line(capsys, "info", "--checkpoint", path)


def test_a_corrupt_archive_is_one_short_line(tmp_path, iris_checkpoint, capsys):
    """Whatever the zip reader quotes of the damaged bytes, the line stays short."""
    raw = bytearray(iris_checkpoint.read_bytes())
    i = raw.index(b"param/W1.npy")  # the local header's name: now disagrees with the directory
    raw[i:i + 12] = b"param/X1.npy"
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    err = _main_one_line(capsys, "info", "--checkpoint", tmp_path / "bad.npz")
    assert "is not a readable gpunet checkpoint" in err and len(err) < 400


def test_info_shows_a_stored_null_as_nan(tmp_path, iris_checkpoint, capsys):
    """A checkpoint's JSON writes NaN as null, which its header check takes; info prints it."""
    from gpunet.cli import main

    def change(h):
        h["extra"]["training"]["state"]["history"][-1]["val_loss"] = None
        h["extra"]["class_weights"] = [1.0, None, 2.0]

    bad = _rewritten(iris_checkpoint, tmp_path / "n.npz", change)
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(bad)]) == 0
    out = capsys.readouterr().out
    assert "val_loss nan" in out and "class weights: 0 1, 1 nan, 2 2" in out


def test_save_writes_only_what_load_reads_and_leaves_a_users_own_arrays_alone(tmp_path):
    """save_checkpoint refuses, unwritten, what load_checkpoint would refuse (non-finite
    weights, a standardisation of another width, class names that do not fit); a user's own
    arrays (under other names, or data/ names gpunet does not use) may hold anything, an
    interrupted epoch's step losses NaN."""
    from gpunet.checkpoint import save_checkpoint
    from gpunet.data import Standardizer

    import gpunet as gn

    model = gn.MLP([4, 5, 3], backend="numpy", seed=0)
    out = tmp_path / "c.npz"
    model.params["W2"][0, 0] = np.nan
    with pytest.raises(CheckpointError, match=r"not written, as it could not be loaded: .*"
                                              r"param/W2 holding NaN"):
        save_checkpoint(out, model)
    model.params["W2"][0, 0] = 0.5
    for kwargs, says in (
            (dict(standardizer=Standardizer(np.zeros(3), np.ones(3))), "data/mean of shape"),
            (dict(classes=["a", "b"]), "2 class names for a model of 3 output"),
            (dict(arrays={"best/W1": np.full((5, 4), np.inf)}), "best/W1 holding NaN")):
        with pytest.raises(CheckpointError, match=says):
            save_checkpoint(out, model, **kwargs)
        assert not out.exists()
    with pytest.raises(CheckpointError, match=r"data/mean of shape \(\), but the model has 4 "
                                              r"features"):  # (predict reads one a column)
        save_checkpoint(out, model, standardizer=Standardizer(np.float64(1.0), np.float64(2)))
    save_checkpoint(out, model, standardizer=Standardizer(np.ones(4), np.full(4, 2.0)),
                    arrays={"data/notes": np.array(["free text"]), "mine/x": np.array([np.nan]),
                            "epoch/losses": np.array([0.5, np.nan]),
                            "epoch/correct": np.array([3, 1])})
    ck = load_checkpoint(out)
    assert ck.arrays["data/notes"].tolist() == ["free text"]
    assert np.isnan(ck.arrays["epoch/losses"][1]) and np.isnan(ck.arrays["mine/x"][0])
    x = np.ones((2, 4))
    np.testing.assert_array_equal(ck.standardizer(x), (x - 1.0) / 2.0)


def test_a_second_sigterm_ends_the_run_at_once_with_sigterms_status(tmp_path):
    code = (
        "import os, signal, sys\n"
        "import gpunet.optim as O\n"
        "orig, n = O.Optimizer.prepare_hyper, [0]\n"
        "def hooked(self):\n"
        "    n[0] += 1\n"
        "    if n[0] == 5:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return orig(self)\n"
        "O.Optimizer.prepare_hyper = hooked\n"
        "from gpunet.cli import main\n"
        f"sys.exit(main(['train', '--dataset', 'iris', '--epochs', '50', '--backend', 'numpy',"
        f" '--quiet', '--save', {str(tmp_path / 'c.npz')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=ENV)
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("into", ["file appended to", "pipe"])
def test_metrics_json_to_dev_stdout_goes_where_stdout_goes(tmp_path, iris_checkpoint, into):
    """``--metrics-json /dev/stdout >> log.txt`` replaced log.txt with the JSON (the link
    resolves to the file behind the descriptor, which was renamed over), and into a pipe it
    failed; now the JSON follows the printed figures on stdout, appended to what was there."""
    args = gpunet("evaluate", "--checkpoint", iris_checkpoint, "--backend", "numpy",
                  "--metrics-json", "/dev/stdout")
    log = tmp_path / "log.txt"
    if into == "pipe":
        proc = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=120)
        text = proc.stdout
    else:
        log.write_text("an earlier line\n")
        inode = log.stat().st_ino
        with open(log, "a") as out:
            proc = subprocess.run(args, stdout=out, stderr=subprocess.PIPE, text=True, env=ENV,
                                  timeout=120)
        assert log.stat().st_ino == inode
        text = log.read_text()
        assert text.startswith("an earlier line\n")
        text = text[len("an earlier line\n"):]
    assert proc.returncode == 0, proc.stderr
    assert text.startswith(f"checkpoint: {iris_checkpoint}\n")
    printed, _, json_text = text.partition("\n{")
    result = json.loads("{" + json_text)
    assert result["checkpoint"] == str(iris_checkpoint) and result["split"] == "test"
    assert f"\nrows: {result['rows']}\n" in printed and "\ntest_accuracy: " in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == (["log.txt"] if into != "pipe" else [])


def _header_text(change):
    """How to edit a checkpoint's header as text (what json.dumps cannot write)."""
    def edit(members):
        text = np.load(io.BytesIO(members["header.npy"])).tobytes().decode("utf-8")
        buf = io.BytesIO()
        np.save(buf, np.frombuffer(change(text).encode("utf-8"), np.uint8))
        members["header.npy"] = buf.getvalue()
    return edit


def _zip_rewritten(src, dst, change):
    """A copy of checkpoint ``src`` with zip members np.savez never writes: ``change`` edits
    the {name: bytes} of its members, or returns the (name, bytes) to write in their place."""
    import warnings
    import zipfile

    with zipfile.ZipFile(src) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    listed = change(members) or list(members.items())
    with warnings.catch_warnings(), zipfile.ZipFile(dst, "w") as z:
        warnings.simplefilter("ignore")  # (zipfile warns of a name written twice)
        for name, data in listed:
            z.writestr(name, data)
    return dst


ARCHIVES = {  # id: (how the members change, what the line says)
    "a header nested 100000 deep": (
        _header_text(lambda t: t[:-1] + ', "z": ' + "[" * 100000 + "]" * 100000 + "}"),
        "has a corrupted header (nested too deep to read)"),
    "a 5000-digit integer in the header": (
        _header_text(lambda t: t[:-1] + ', "z": ' + "1" * 5000 + "}"),
        "has a corrupted header (Exceeds the limit (4300 digits) for integer string "
        "conversion: value has 5000 digits)"),
    "a member without a .npy header": (
        lambda m: m.update({"param/W1.npy": b"not an array"}),
        "has a member 'param/W1.npy' that is not an array (it does not start with a .npy "
        "header)"),
    "a folder entry": (lambda m: m.update({"param/": b""}),
                       "has a member 'param/' that is not an array"),
    "a member held twice": (
        lambda m: list(m.items()) + [("param/W1.npy", m["param/W2.npy"])],
        "holds 2 members named 'param/W1.npy': which one is meant is unclear"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVES))
def test_an_archive_numpy_reads_oddly_is_one_line(tmp_path, iris_checkpoint, capsys, case):
    """A header past what Python's JSON reader takes (RecursionError, ValueError), a member
    np.load hands over as bytes, not an array (AttributeError further on), or one name held
    twice (the last copy taken, unsaid): load_checkpoint refuses each, and so every command
    in one line naming the file and what is wrong."""
    change, says = ARCHIVES[case]
    bad = _zip_rewritten(iris_checkpoint, tmp_path / "bad.npz", change)
    with pytest.raises(CheckpointError, match=re.escape(f"{str(bad)!r} {says}")):
        load_checkpoint(bad)
    for command in ("info", "evaluate"):
        err = _main_one_line(capsys, command, "--checkpoint", bad)
        assert f"{str(bad)!r} {says}" in err, err


@pytest.mark.parametrize("where", ["header", "class names"])
def test_text_that_is_not_valid_unicode_is_refused_on_reading(tmp_path, iris_checkpoint, capsys,
                                                              where):
    """JSON's "\\ud800" (a lone surrogate) loaded, and then info crashed printing it
    (UnicodeEncodeError), as a CSV's header row would; so too a class name NumPy's text
    holds. load_checkpoint refuses both, so every command says the same one line."""
    bad = tmp_path / "bad.npz"
    if where == "header":
        _zip_rewritten(iris_checkpoint, bad, _header_text(
            lambda t: t.replace('"dataset": "iris"', '"dataset": "iris\\ud800"')))
        says = r"has a corrupted header (text that is not valid Unicode: 'iris\ud800')"
    else:
        _rewritten(iris_checkpoint, bad, arrays_change=lambda a: a.update(
            {"data/classes": np.array(["setosa", "\ud800", "virginica"])}))
        says = r"has a class name that is not valid Unicode ('\ud800')"
    with pytest.raises(CheckpointError, match=re.escape(says)):
        load_checkpoint(bad)
    np.savetxt(tmp_path / "x.csv", np.ones((2, 4)), delimiter=",", header="a,b,c,d",
               comments="")
    for args in (("info", "--checkpoint", bad), ("evaluate", "--checkpoint", bad),
                 ("predict", "--checkpoint", bad, "--input", tmp_path / "x.csv", "--output",
                  tmp_path / "p.csv")):
        assert says in _main_one_line(capsys, *args)
    assert not (tmp_path / "p.csv").exists()
