"""Checkpoints: exact round trips, atomic writes, and files that must be refused."""

from __future__ import annotations

import json
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
