"""The training loop: exact resume, early stopping, schedules, Ctrl-C, divergence, plots."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import gpunet as gn
from gpunet.checkpoint import load_checkpoint
from gpunet.cli import main
from gpunet.data import DataSpec, load_data
from gpunet.schedules import Schedule
from gpunet.train import TrainingDiverged, TrainingInterrupted, fit

from conftest import said


def params_of(path):
    return load_checkpoint(path).params


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _run(backend, epochs, save=None, resume=None, patience=None, step_hook=None, schedule=None):
    spec = DataSpec("wine", seed=2, val_fraction=0.2, test_fraction=0.2)
    data = load_data(spec)
    if resume is not None:
        model = resume.build_model(backend)
        opt = gn.get_optimizer(resume.header["optimizer"]["name"], model, lr=1.0)
    else:
        model = gn.MLP([13, 16, 3], backend=backend, seed=5)
        opt = gn.SGD(model, lr=0.05, momentum=0.9)
    if step_hook is not None:
        # prepare_hyper runs once per step on the host, eager or static (graph replays too)
        inner, calls = opt.prepare_hyper, [0]

        def prepare():
            calls[0] += 1
            step_hook(calls[0])
            return inner()

        opt.prepare_hyper = prepare
    history = fit(model, data, gn.CrossEntropyLoss(), opt, epochs=epochs, batch_size=16, seed=3,
                  save=save, resume=resume, patience=patience, progress=False,
                  schedule=schedule, data_spec=spec.to_json())
    return model, history


def test_resume_at_an_epoch_boundary_matches_an_unbroken_run(tmp_path, backend):
    unbroken, h1 = _run(backend, 6, save=tmp_path / "a.npz")
    _run(backend, 3, save=tmp_path / "b.npz")
    resumed, h2 = _run(backend, 6, save=tmp_path / "b.npz", resume=load_checkpoint(tmp_path / "b.npz"))
    assert_same_params(params_of(tmp_path / "a.npz"), params_of(tmp_path / "b.npz"))
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    assert h1.test == h2.test


def test_a_resume_on_another_setup_says_it_may_not_end_as_the_unbroken_run(tmp_path, caplog,
                                                                          monkeypatch):
    """A run resumed under another BLAS thread count (or CPU, device) ends a few roundings
    from the unbroken run (OPENBLAS_NUM_THREADS=1: 4.5e-8 apart), which the README promised
    exact: the checkpoint records the setup and a resume elsewhere says so."""
    import gpunet.train as train_module

    from conftest import said

    path = tmp_path / "r.npz"
    _run("numpy", 1, save=path)
    here = train_module.machine_fingerprint(gn.get_backend("numpy"))
    assert load_checkpoint(path).extra["training"]["machine"] == here
    assert here["device"] == gn.get_backend("numpy").device_name
    caplog.clear()
    _run("numpy", 2, save=path, resume=load_checkpoint(path))  # (the same setup: no word)
    assert "another machine" not in said(caplog)
    elsewhere = {**here, "device": "cpu (elsewhere)"}
    monkeypatch.setattr(train_module, "machine_fingerprint", lambda backend: elsewhere)
    _run("numpy", 3, save=path, resume=load_checkpoint(path))
    assert (f"{path} was written on another machine or setup (device "  # (its path, also
            # from a loaded Checkpoint, as the command line passes it)
            f"{here['device']} -> cpu (elsewhere)): the resumed run may end a few roundings "
            "away from an unbroken run's weights") in said(caplog)


def test_the_recorded_blas_is_numpys_whatever_else_is_loaded(monkeypatch):
    """SciPy loads an OpenBLAS of its own, listed in either order: the setup recorded was
    whichever came first, and a resume on the same machine could say it moved."""
    import threadpoolctl

    from gpunet.train import machine_fingerprint

    site = "/env/lib/python3.12/site-packages"
    numpy_blas = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.31",
                  "architecture": "Haswell", "num_threads": 2,
                  "filepath": f"{site}/numpy.libs/libscipy_openblas64_-a.so"}
    scipy_blas = {**numpy_blas, "version": "0.3.30", "num_threads": 4,
                  "filepath": f"{site}/scipy.libs/libscipy_openblas-b.so"}
    for listed in ([numpy_blas, scipy_blas], [scipy_blas, numpy_blas]):
        monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: listed)
        found = machine_fingerprint(gn.get_backend("numpy"))
        assert (found["blas"], found["blas_threads"]) == ("openblas 0.3.31 Haswell", 2)


def test_resume_loads_the_runs_weights_into_a_model_built_as_before(tmp_path):
    """fit(resume=path) on a model built afresh, as for the original run: it takes the run's
    weights (not only its optimiser state), so the run ends as an unbroken one; a model of
    another architecture is refused, naming what differs."""
    spec = DataSpec("wine", seed=2, val_fraction=0.2, test_fraction=0.2)
    data = load_data(spec)

    def run(epochs, dropout=0.2, **kw):
        model = gn.MLP([13, 16, 3], seed=5, dropout=dropout)
        h = fit(model, data, gn.CrossEntropyLoss(), gn.Adam(model, lr=0.01), epochs=epochs,
                batch_size=16, seed=3, progress=False, **kw)
        return model, h

    unbroken, h1 = run(4)
    run(2, save=tmp_path / "b.npz")
    resumed, h2 = run(4, resume=str(tmp_path / "b.npz"))
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    for k in unbroken.params:
        np.testing.assert_array_equal(resumed.params[k], unbroken.params[k], err_msg=k)
    with pytest.raises(gn.ConfigError, match=r"dropout 0.5 \(the run's: 0.2\)"):
        run(4, dropout=0.5, resume=str(tmp_path / "b.npz"))
    # a model built with another seed: its weights and its masks' seed are the run's
    other = gn.MLP([13, 16, 3], seed=99, dropout=0.2)
    h3 = fit(other, data, gn.CrossEntropyLoss(), gn.Adam(other, lr=0.01), epochs=4,
             batch_size=16, seed=3, progress=False, resume=str(tmp_path / "b.npz"))
    assert [r["train_loss"] for r in h3] == [r["train_loss"] for r in h1]
    assert other.dropout_seed == unbroken.dropout_seed
    # another seed given to a resume: the run goes on as it was, and records its own seed
    # (it recorded the one given, which the command line's --resume --seed 3 then refused)
    run(3, save=tmp_path / "s.npz")
    model = gn.MLP([13, 16, 3], seed=5, dropout=0.2)
    h4 = fit(model, data, gn.CrossEntropyLoss(), gn.Adam(model, lr=0.01), epochs=4,
             batch_size=16, seed=7, progress=False, resume=str(tmp_path / "s.npz"),
             save=tmp_path / "s.npz")
    assert [r["train_loss"] for r in h4] == [r["train_loss"] for r in h1]
    assert load_checkpoint(tmp_path / "s.npz").extra["training"]["seed"] == 3
    # a resume refused late (an optimiser of another kind) leaves the caller's model as it was
    mine = gn.MLP([13, 16, 3], seed=7, dropout=0.2)
    before = {k: v.copy() for k, v in mine.params.items()}
    with pytest.raises(gn.ConfigError):
        fit(mine, data, gn.CrossEntropyLoss(), gn.SGD(mine, lr=0.1), epochs=4, batch_size=16,
            seed=3, progress=False, resume=str(tmp_path / "b.npz"))
    for k, v in mine.params.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_numpy_integers_for_fit_go_into_checkpoints_and_bools_are_no_counts(tmp_path):
    """epochs, batch_size, seed and patience as NumPy integers (np.arange's) are written to the
    checkpoint's JSON as numbers (a bare TypeError before), and the run resumes; a bool is not
    a schedule's count (it was taken, and its checkpoint refused on resume)."""
    data = load_data(DataSpec("wine", seed=2, val_fraction=0.2, test_fraction=0.2))
    model = gn.MLP([13, 8, 3], seed=1)
    fit(model, data, gn.CrossEntropyLoss(), gn.Adam(model), epochs=np.int64(2),
        batch_size=np.int64(16), seed=np.int64(3), patience=np.int64(3), progress=False,
        save=tmp_path / "r.npz")
    training = load_checkpoint(tmp_path / "r.npz").extra["training"]
    assert (training["epochs"], training["batch_size"], training["seed"],
            training["patience"]) == (2, 16, 3, 3)
    again = gn.MLP([13, 8, 3])
    history = fit(again, data, gn.CrossEntropyLoss(), gn.Adam(again), epochs=3, batch_size=16,
                  seed=3, patience=3, progress=False, resume=str(tmp_path / "r.npz"))
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for name, bad in (("plateau", {"patience": True}), ("step", {"step_size": True}),
                      ("plateau", {"warmup": False})):
        with pytest.raises(gn.ConfigError, match="must be a"):
            gn.Schedule(name, **bad)


@pytest.mark.parametrize("at, sig", [(3, signal.SIGINT), ("last", signal.SIGTERM)])
def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(tmp_path, backend, at, sig):
    """SIGINT (or SIGTERM) during a step: the step finishes, a checkpoint is written, and
    resuming from it gives the same weights as a run that never stopped; also when the step
    was the epoch's last (its metrics not yet taken: the resumed run takes them)."""
    _run(backend, 4, save=tmp_path / "a.npz")

    n_steps = -(-len(load_data(DataSpec("wine", seed=2, val_fraction=0.2)).x_train) // 16)
    step = n_steps if at == "last" else at
    stop_at = n_steps + step  # in the second epoch

    def interrupt(call):
        if call == stop_at:
            os.kill(os.getpid(), sig)

    with pytest.raises(TrainingInterrupted) as e:
        _run(backend, 4, save=tmp_path / "b.npz", step_hook=interrupt)
    assert (e.value.epoch, e.value.step, e.value.signum) == (2, step, sig)
    ck = load_checkpoint(tmp_path / "b.npz")
    assert (ck.epoch, ck.extra["training"]["state"]["step"]) == (1, step)
    _run(backend, 4, save=tmp_path / "b.npz", resume=ck)
    assert_same_params(params_of(tmp_path / "a.npz"), params_of(tmp_path / "b.npz"))


def test_a_finished_run_given_more_epochs_is_unfinished_until_they_are_done(tmp_path, capsys):
    """A run of 2 epochs, resumed to 5 and interrupted in the 4th: its checkpoint says
    unfinished (gpunet info offers the resume) where it kept the first run's "finished"."""
    from gpunet.cli import main

    _run("numpy", 2, save=tmp_path / "a.npz")
    assert load_checkpoint(tmp_path / "a.npz").extra["training"]["state"]["finished"]
    n_steps = -(-len(load_data(DataSpec("wine", seed=2, val_fraction=0.2)).x_train) // 16)

    def interrupt(call):
        if call == n_steps + 2:  # epoch 4, step 2
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as e:
        _run("numpy", 5, save=tmp_path / "a.npz", resume=load_checkpoint(tmp_path / "a.npz"),
             step_hook=interrupt)
    assert (e.value.epoch, e.value.step) == (4, 2)
    state = load_checkpoint(tmp_path / "a.npz").extra["training"]["state"]
    assert (state["epoch"], state["step"], state["finished"]) == (3, 2, False)
    capsys.readouterr()
    assert main(["info", "--checkpoint", str(tmp_path / "a.npz")]) == 0
    assert "unfinished (resume with: gpunet train --resume" in capsys.readouterr().out


@pytest.mark.parametrize("in_epoch, sig", [(2, signal.SIGINT), (4, signal.SIGTERM)])
def test_a_signal_between_steps_stops_at_the_end_of_that_epoch(tmp_path, monkeypatch,
                                                               in_epoch, sig):
    """A Ctrl-C or SIGTERM that comes in while an epoch is validated (no step left to stop
    after) ends the run once that epoch's checkpoint is written: in the last epoch it was
    lost (fit returned as if never asked to stop), in another one the run took a step more.
    The exception carries the epochs done; a resume gives the unbroken run."""
    from gpunet import train as train_module

    _run("numpy", 4, save=tmp_path / "a.npz")
    real, validated = train_module.metrics, [0]

    def metrics(model, x, *args, **kwargs):
        if len(x) and x.shape[0] < 100:  # validation, each epoch (then the test split, once)
            validated[0] += 1
            if validated[0] == in_epoch:
                os.kill(os.getpid(), sig)
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(train_module, "metrics", metrics)
    with pytest.raises(TrainingInterrupted) as e:
        _run("numpy", 4, save=tmp_path / "b.npz")
    monkeypatch.setattr(train_module, "metrics", real)
    n_steps = -(-len(load_data(DataSpec("wine", seed=2, val_fraction=0.2)).x_train) // 16)
    assert (e.value.epoch, e.value.step, e.value.signum) == (in_epoch, n_steps, sig)
    assert f"at the end of epoch {in_epoch}" in str(e.value)
    assert ("(the run was complete)" in str(e.value)) == (in_epoch == 4)
    assert [row["epoch"] for row in e.value.history] == list(range(1, in_epoch + 1))
    ck = load_checkpoint(tmp_path / "b.npz")
    assert (ck.epoch, ck.extra["training"]["state"]["step"]) == (in_epoch, 0)
    _run("numpy", 4, save=tmp_path / "b.npz", resume=ck)
    assert_same_params(params_of(tmp_path / "a.npz"), params_of(tmp_path / "b.npz"))


def test_early_stopping_keeps_the_best_weights(tmp_path):
    spec = DataSpec("digits", seed=0, val_fraction=0.2)
    data = load_data(spec)
    model = gn.MLP([64, 64, 10], seed=0)
    history = fit(model, data, gn.CrossEntropyLoss(), gn.Adam(model, lr=0.01), epochs=200,
                  batch_size=16, patience=3, progress=False, save=tmp_path / "c.npz",
                  data_spec=spec.to_json())
    assert history.stopped_early and len(history) < 200
    losses = [r["val_loss"] for r in history]
    assert history.best_epoch == int(np.argmin(losses)) + 1
    assert len(history) == history.best_epoch + 3
    # the model holds the best epoch's weights: its validation loss is that epoch's
    m = gn.train.metrics(model, data.x_val, data.y_val, gn.CrossEntropyLoss(), "classification")
    assert m["loss"] == pytest.approx(losses[history.best_epoch - 1], rel=1e-6)
    ck = load_checkpoint(tmp_path / "c.npz")
    assert ck.extra["training"]["state"]["stopped_early"]
    best = ck.build_model("numpy", weights="best")
    for k in model.params:
        np.testing.assert_array_equal(best.params[k], model.params[k])


@pytest.mark.parametrize("name, kwargs, expected", [
    ("step", dict(step_size=2, gamma=0.5), [1.0, 1.0, 0.5, 0.5, 0.25]),
    ("cosine", dict(min_lr=0.0), [1.0, (1 + np.cos(np.pi / 5)) / 2, (1 + np.cos(2 * np.pi / 5)) / 2,
                                  (1 + np.cos(3 * np.pi / 5)) / 2, (1 + np.cos(4 * np.pi / 5)) / 2]),
    ("constant", {}, [1.0] * 5),
])
def test_schedules(name, kwargs, expected):
    s = Schedule(name, base_lr=1.0, epochs=5, **kwargs)
    np.testing.assert_allclose([s.lr(e) for e in range(1, 6)], expected, rtol=1e-12)


def test_cosine_stays_at_its_floor_past_its_length():
    s = Schedule("cosine", base_lr=1.0, epochs=4, min_lr=0.1)
    assert s.lr(5) == pytest.approx(0.1) and s.lr(9) == pytest.approx(0.1)


def test_plateau_cuts_after_patience_and_round_trips():
    s = Schedule("plateau", base_lr=1.0, patience=2, factor=0.5)
    for loss in (1.0, 0.9, 0.95, 0.95):
        s.observe(loss)
    assert s.lr(5) == 1.0
    s.observe(0.95)
    assert s.lr(6) == 0.5
    t = Schedule.from_state(json.loads(json.dumps(s.state_dict())))
    assert t.state_dict() == s.state_dict()


def test_warmup_is_torchs_linear_ramp():
    """warmup W: the rates of torch.optim.lr_scheduler.LinearLR(start_factor 1 / (W + 1),
    total_iters W), epoch by epoch, then the schedule's own."""
    torch = pytest.importorskip("torch")
    for warmup in (1, 3):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
        ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / (warmup + 1),
                                                 end_factor=1.0, total_iters=warmup)
        want = []
        for _ in range(6):
            want.append(opt.param_groups[0]["lr"])
            opt.step()
            ramp.step()
        s = Schedule("constant", base_lr=0.2, warmup=warmup)
        np.testing.assert_allclose([s.lr(e) for e in range(1, 7)], want, rtol=1e-12)


def test_warmup_scales_the_schedule_it_starts_and_round_trips():
    """Over a step or cosine schedule the ramp multiplies that schedule's own rate (written
    out here); the state (warmup included) survives JSON; bad warmups are refused."""
    s = Schedule("cosine", base_lr=1.0, epochs=6, warmup=2)
    cosine = [(1 + np.cos(np.pi * (e - 1) / 6)) / 2 for e in range(1, 7)]
    np.testing.assert_allclose([s.lr(e) for e in range(1, 7)],
                               [cosine[0] / 3, cosine[1] * 2 / 3, *cosine[2:]], rtol=1e-12)
    s = Schedule("step", base_lr=1.0, step_size=1, gamma=0.5, warmup=1)
    np.testing.assert_allclose([s.lr(e) for e in range(1, 4)], [0.5, 0.5, 0.25], rtol=1e-12)
    t = Schedule.from_state(json.loads(json.dumps(s.state_dict())))
    assert t.state_dict() == s.state_dict() and t.warmup == 1
    old = {k: v for k, v in s.state_dict().items() if k != "warmup"}  # an older checkpoint
    assert Schedule.from_state(old).warmup == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(gn.ConfigError, match="warmup must be a whole number"):
            Schedule("constant", warmup=bad)


def test_warmup_from_the_cli_and_the_estimators_and_on_resume(tmp_path, capsys):
    """--warmup 2 gives the epochs the ramped rates; a run resumed mid-ramp equals the unbroken
    one (the ramp is in the checkpoint); MLPClassifier(warmup=2) ramps likewise."""
    from sklearn.datasets import make_classification

    from gpunet.estimators import MLPClassifier

    common = ["--dataset", "wine", "--optimizer", "sgd", "--lr", "0.06", "--warmup", "2",
              "--backend", "numpy", "--quiet"]
    a, b, m = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "m.json"
    assert main(["train", *common, "--epochs", "4", "--save", str(a),
                 "--metrics-json", str(m)]) == 0
    lrs = [r["lr"] for r in json.loads(m.read_text())["history"]]
    np.testing.assert_allclose(lrs, [0.02, 0.04, 0.06, 0.06], rtol=1e-12)
    assert main(["train", *common, "--epochs", "1", "--save", str(b)]) == 0
    assert main(["train", "--resume", str(b), "--epochs", "4", "--quiet",
                 "--backend", "numpy", "--warmup", "2"]) == 0  # (given again: the same)
    pa, pb = load_checkpoint(a).params, load_checkpoint(b).params
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    capsys.readouterr()
    assert main(["train", "--resume", str(b), "--epochs", "5", "--warmup", "3"]) == 1
    assert "--warmup cannot change them" in capsys.readouterr().err
    x, y = make_classification(90, 5, n_informative=3, random_state=2)
    clf = MLPClassifier(hidden=(8,), optimizer="sgd", lr=0.09, warmup=2, epochs=3,
                        backend="numpy").fit(x, y)
    np.testing.assert_allclose([r["lr"] for r in clf.history_], [0.03, 0.06, 0.09],
                               rtol=1e-12)


def test_schedule_sets_the_optimizer_rate_each_epoch():
    _, history = _run("numpy", 4, schedule=Schedule("step", base_lr=0.05, step_size=1, gamma=0.5))
    assert [r["lr"] for r in history] == [0.05, 0.025, 0.0125, 0.00625]


def test_divergence_stops_with_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
    path = tmp_path / "c.npz"
    _run("numpy", 1, save=path)
    before = path.read_bytes()

    class Exploding(gn.MSELoss):
        calls = 0

        def __call__(self, y_hat, y):
            Exploding.calls += 1
            value, g = super().__call__(y_hat, y)
            return (value * np.nan if Exploding.calls == 5 else value), g

    spec = DataSpec("diabetes", val_fraction=0.1)
    data = load_data(spec)
    model = gn.MLP([10, 8, 1])
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 5.*lower learning rate"):
        fit(model, data, Exploding(), gn.SGD(model, lr=1e-4), epochs=3, batch_size=32,
            progress=False, save=path, data_spec=spec.to_json())
    assert path.read_bytes() == before


def test_cli_plot_writes_a_png(tmp_path):
    png = tmp_path / "run.png"
    assert main(["train", "--dataset", "iris", "--epochs", "4", "--quiet", "--backend", "numpy",
                 "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plotting_leaves_the_sessions_matplotlib_alone(tmp_path):
    """A notebook's backend and its open figures stay as they were (the plot used to switch
    the session to Agg, after which a notebook showed no more figures)."""
    code = (
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        "import matplotlib.pyplot as plt\n"
        "plt.figure()\n"
        "from gpunet.plot import plot_history\n"
        "rows = [{'epoch': e, 'train_loss': 1.0 / e, 'val_loss': 1.2 / e,\n"
        "         'train_accuracy': 0.5, 'val_accuracy': 0.4} for e in (1, 2, 3)]\n"
        f"plot_history(rows, {str(tmp_path / 'p.png')!r}, confusion=[[3, 1], [0, 4]])\n"
        "print(matplotlib.get_backend(), plt.get_fignums())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["svg", "[1]"]
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_without_a_stderr_or_with_one_that_only_writes(tmp_path):
    """pythonw and some IDEs run with sys.stderr None, and a common recipe sends stderr to
    logging through an object with write and flush alone: fit (bar on, off, by default), an
    estimator's verbose lines and the backend notice neither fail there nor spill onto
    stdout; and with the bar off tqdm.auto (which warns in a notebook without ipywidgets) is
    not imported."""
    code = (
        "import sys, numpy as np\n"
        "import gpunet as gn\n"
        "from gpunet.data import make_dataset\n"
        "from gpunet.estimators import MLPClassifier\n"
        "class Writes:\n"
        "    def __init__(self): self.text = []\n"
        "    def write(self, t): self.text.append(t)\n"
        "    def flush(self): pass\n"
        "rng = np.random.default_rng(0)\n"
        "x, y = rng.normal(size=(60, 3)), rng.integers(0, 2, 60)\n"
        "d = make_dataset('d', x, y)\n"
        "sys.stderr = None\n"
        "gn.get_backend('auto')\n"  # the notice: nowhere to go
        "for progress in (None, False, True):\n"
        "    m = gn.MLP([3, 4, 2], backend='numpy')\n"
        "    gn.fit(m, d, gn.CrossEntropyLoss(), gn.SGD(m, lr=0.1), epochs=2,\n"
        "           progress=progress)\n"
        "    assert 'tqdm.auto' not in sys.modules, progress\n"
        "MLPClassifier(epochs=2, verbose=True, backend='numpy').fit(x, y)\n"
        "sys.stderr = w = Writes()\n"
        "m = gn.MLP([3, 4, 2], backend='numpy')\n"
        "gn.fit(m, d, gn.CrossEntropyLoss(), gn.SGD(m, lr=0.1), epochs=2)\n"
        "MLPClassifier(epochs=2, verbose=True, backend='numpy').fit(x, y)\n"
        "assert sum('epoch 2/2' in t for t in w.text) == 1, w.text\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "GPUNET_BACKEND": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"


def test_one_progress_bar_for_the_run_and_the_epoch_lines_on_their_own(monkeypatch, capsys):
    """progress=True: one bar, reset each epoch (a notebook showed a widget an epoch), cleared
    before each epoch's line so that the line starts on its own, and gone at the end."""
    import tqdm.auto

    made = []

    class Counted(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("total"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", Counted)
    data, loss = _small_run_data(), gn.CrossEntropyLoss()
    model, opt = _small_model()
    lines = []

    def log(line):
        lines.append(line)
        print(line, file=sys.stderr)

    history = fit(model, data, loss, opt, epochs=3, batch_size=16, progress=True, log=log)
    err = capsys.readouterr().err
    n_steps = -(-len(data.x_train) // 16)
    assert made == [n_steps] and len(history) == 3
    summaries = [ln for ln in lines if "train_loss" in ln]
    assert len(summaries) == 3
    for line in summaries:  # each at the start of a line: the bar cleared first
        at = err.index(line)
        assert at == 0 or err[at - 1] in "\r\n", repr(err[max(0, at - 40):at + 20])
    assert all(f"epoch {e}/3: " in err for e in (1, 2, 3)), err  # the bar's own text


def test_each_epochs_bar_starts_without_the_last_epochs_loss(monkeypatch, capsys):
    """The bar's loss= (the epoch's mean so far, set every tenth of its steps) is the new
    epoch's: the bar, reset, showed the last epoch's loss until its first tenth was done."""
    import tqdm.auto

    class EveryStep(tqdm.auto.tqdm):  # (each update drawn: no frame left out as too soon)
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "mininterval": 0, "miniters": 1})

    monkeypatch.setattr(tqdm.auto, "tqdm", EveryStep)
    data, loss = _small_run_data(), gn.CrossEntropyLoss()
    model, opt = _small_model()
    fit(model, data, loss, opt, epochs=3, batch_size=8, progress=True)
    frames = list(re.finditer(r"epoch (\d)/3: [^\r]*?\| (\d+)/\d+ \[[^\r]*",
                              capsys.readouterr().err))
    n_steps = -(-len(data.x_train) // 8)
    assert {(int(f[1]), int(f[2])) for f in frames} == \
        {(e, done) for e in (1, 2, 3) for done in range(n_steps + 1)}
    every = max(1, n_steps // 10)
    for f in frames:
        assert ("loss=" in f[0]) == (int(f[2]) >= every), f[0]


def test_notices_go_to_the_gpunet_logger(monkeypatch, caplog):
    """The backend notice is a WARNING of the "gpunet" logger (a program's logging takes it;
    setLevel(ERROR) there silences it), said once a process."""
    import logging

    from gpunet import backends

    monkeypatch.setattr(backends, "_notice_shown", False)
    monkeypatch.setattr(backends, "cupy_status", lambda: (False, "no device here"))
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        backends.get_backend("auto")
        backends.get_backend("auto")
    said = [r for r in caplog.records if r.name == "gpunet"]
    assert [r.getMessage() for r in said] == [
        "gpunet: using the numpy backend: no device here (numpy asked for by name goes "
        "without this line: backend=\"numpy\" in Python, --backend numpy or "
        "GPUNET_BACKEND=numpy on the command line)"]
    assert said[0].levelno == logging.WARNING
    monkeypatch.setattr(backends, "_notice_shown", False)
    caplog.clear()
    logging.getLogger("gpunet").setLevel(logging.ERROR)
    try:
        backends.get_backend("auto")
    finally:
        logging.getLogger("gpunet").setLevel(logging.NOTSET)
    assert not [r for r in caplog.records if r.name == "gpunet"]


def test_cli_resume_continues_to_the_requested_epochs(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    common = ["--dataset", "moons", "--samples", "300", "--quiet", "--backend", "numpy",
              "--hidden", "8", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.5"]
    assert main(["train", *common, "--epochs", "5", "--save", str(a)]) == 0
    assert main(["train", *common, "--epochs", "2", "--save", str(b)]) == 0
    assert main(["train", "--resume", str(b), "--epochs", "5", "--quiet"]) == 0
    assert_same_params(params_of(a), params_of(b))
    assert main(["train", "--resume", str(b), "--hidden", "9", "--quiet"]) == 1


@pytest.mark.parametrize("name, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_cli_sigint_or_sigterm_exits_128_plus_it_and_prints_how_to_resume(tmp_path, name,
                                                                         status):
    """A real Ctrl-C, or a scheduler's SIGTERM, to a real run: the step finishes, the
    checkpoint is written and resume is explained."""
    path = tmp_path / "c.npz"
    code = (
        "import os, signal, sys\n"
        "import gpunet.optim as O\n"
        "orig, n = O.Optimizer.prepare_hyper, [0]\n"  # once per step, eager or static
        "def hooked(self):\n"
        "    n[0] += 1\n"
        f"    if n[0] == 20: os.kill(os.getpid(), signal.{name})\n"
        "    return orig(self)\n"
        "O.Optimizer.prepare_hyper = hooked\n"
        "from gpunet.cli import main\n"
        f"sys.exit(main(['train', '--dataset', 'iris', '--epochs', '50', '--backend', 'numpy',"
        f" '--save', {str(path)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == status, proc.stderr
    assert ("by SIGTERM" in proc.stderr) == (name == "SIGTERM")
    assert f"gpunet train --resume {path}" in proc.stderr
    assert "Traceback" not in proc.stderr
    state = load_checkpoint(path).extra["training"]["state"]
    n_steps = -(-len(load_data(DataSpec("iris")).x_train) // 32)
    assert state["epoch"] * n_steps + state["step"] == 20  # stopped right after the 20th step


def test_labels_beyond_the_output_layer_are_refused_before_training():
    data = load_data(DataSpec("digits"))
    model = gn.MLP([64, 8, 5])  # 10 classes, 5 outputs
    with pytest.raises(gn.ShapeError, match="10 classes but the model has 5 outputs"):
        fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model), epochs=1, progress=False)


def test_fit_leaves_the_callers_loss_checking_its_labels():
    """fit skips the per-step label check on labels it validated, but on a copy: the loss the
    caller passed still refuses labels outside its classes afterwards."""
    data = load_data(DataSpec("iris"))
    model = gn.MLP([4, 8, 3], backend="numpy")
    loss = gn.CrossEntropyLoss()
    fit(model, data, loss, gn.SGD(model), epochs=1, progress=False, handle_sigint=False)
    assert loss.check_labels
    logits = model.forward(data.x_test[:3])
    for bad in ([0, 1, -1], [0, 1, 7]):
        with pytest.raises(gn.ConfigError, match=r"class labels must lie in \[0, 2\]"):
            loss(logits, np.array(bad))


class _RankWithALateCtrlC:
    """A communicator of one rank (the interface fit uses) whose K-th gradient all-reduce
    delivers a SIGINT to this process after the step's flag was packed, as a Ctrl-C that
    reaches one rank of a job while it waits in the collective."""

    size, rank, is_root, transport = 1, 0, True, "mpi"

    def __init__(self, k):
        self.k, self.calls = k, 0

    def broadcast_params(self, model):
        pass

    def check_same(self, figures, close=()):
        pass

    def abort_on_error(self, passthrough=()):
        import contextlib

        return contextlib.nullcontext()

    def _reduce(self, extras):
        self.calls += 1
        if self.calls == self.k:
            os.kill(os.getpid(), signal.SIGINT)
        return np.array([float(v) for v in extras])

    def allreduce_flat(self, backend, buf, n, weight, extras=()):
        buf[:n] *= weight
        return self._reduce(extras)

    def allreduce_grads(self, model, weight, extras=()):
        for g in model.grads.values():
            g *= weight
        return self._reduce(extras)


@pytest.mark.parametrize("graph", [True, False], ids=["static", "eager"])
def test_under_a_communicator_only_the_reduced_ctrl_c_flag_stops_a_run(graph):
    """A Ctrl-C that arrives during step K's all-reduce, after this rank packed its flag,
    stops the run after step K + 1, when the flag has ridden an all-reduce to every rank: had
    this rank stopped at K on its own flag, the others (which saw no flag) would wait for it
    in their next collective."""
    data = load_data(DataSpec("iris"))
    model = gn.MLP([4, 8, 3], backend="numpy")
    comm = _RankWithALateCtrlC(k=3)
    with pytest.raises(TrainingInterrupted) as e:
        fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model), epochs=2, batch_size=16,
            progress=False, comm=comm, graph=graph)
    assert (e.value.epoch, e.value.step) == (1, 4) and comm.calls == 4


def test_features_that_do_not_fit_the_first_layer_name_both_sizes():
    data = load_data(DataSpec("iris"))
    model = gn.MLP([5, 8, 3])
    with pytest.raises(gn.ShapeError, match=r"layer 1 \(5 -> 8\) expects 5 features.*has 4"):
        fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model), epochs=1, progress=False)


def test_resuming_a_cosine_run_past_its_floor_of_zero_is_refused(tmp_path, capsys):
    """Its extra epochs would run at learning rate 0: refused before any work, saying why."""
    path = tmp_path / "c.npz"
    _run("numpy", 2, save=path, schedule=Schedule("cosine", base_lr=0.05, epochs=2))
    before = path.read_bytes()
    with pytest.raises(gn.ConfigError, match=r"cosine schedule was set up for 2 epochs.*epoch 4"):
        _run("numpy", 4, save=path, resume=load_checkpoint(path))
    assert path.read_bytes() == before
    # the CLI says it in one line and writes nothing
    assert main(["train", "--resume", str(path), "--epochs", "4", "--quiet"]) == 1
    assert "start a new run of 4 epochs" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_a_cosine_run_with_a_positive_floor_resumes_and_trains_at_it(tmp_path):
    path = tmp_path / "c.npz"
    _run("numpy", 2, save=path, schedule=Schedule("cosine", base_lr=0.05, epochs=2, min_lr=0.01))
    ck = load_checkpoint(path)
    model, history = _run("numpy", 3, save=path, resume=ck)
    assert [r["lr"] for r in history][-1] == pytest.approx(0.01)
    assert any(not np.array_equal(model.backend.to_host(model.params[k]), ck.params[k])
               for k in ck.params)


def test_cli_resumes_a_checkpoint_saved_at_a_learning_rate_of_zero(tmp_path, monkeypatch):
    """A run whose schedule reached 0 (a cosine set up for fewer epochs than the run, which
    the Python API took before session 9; here a rate of 0 in its last epoch) saves lr 0,
    which an optimizer cannot be built with: resume still works."""
    path = tmp_path / "z.npz"
    with monkeypatch.context() as m:
        m.setattr(Schedule, "lr", lambda self, epoch: 0.05 if epoch == 1 else 0.0)
        _, history = _run("numpy", 2, save=path,
                          schedule=Schedule("cosine", base_lr=0.05, epochs=2))
    assert history[-1]["lr"] == 0.0
    assert load_checkpoint(path).header["optimizer"]["hyperparameters"]["lr"] == 0.0
    before = params_of(path)
    assert main(["train", "--resume", str(path), "--epochs", "2", "--quiet"]) == 0  # done: no-op
    assert_same_params(params_of(path), before)


def test_a_schedule_takes_the_optimisers_rate_and_the_runs_length_where_unset():
    """Schedule(name) without base_lr starts from the optimiser's rate, and a cosine without
    epochs spans fit's; the caller's schedule is not changed (fit steps a copy)."""
    data = load_data(DataSpec("wine", seed=2, val_fraction=0.2))
    cases = [(Schedule("step", step_size=1, gamma=0.5), [0.1, 0.05, 0.025, 0.0125]),
             (Schedule("cosine"), [0.1 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)]),
             (Schedule("cosine", base_lr=0.2, epochs=8),
              [0.2 * (1 + np.cos(np.pi * e / 8)) / 2 for e in range(4)])]
    for schedule, want in cases:
        model = gn.MLP([13, 8, 3], seed=1)
        history = fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), epochs=4,
                      schedule=schedule, progress=False)
        np.testing.assert_allclose([row["lr"] for row in history], want, rtol=1e-12)
    assert cases[1][0].base_lr is None and cases[1][0].epochs is None
    with pytest.raises(gn.ConfigError, match="takes its base_lr and epochs from gpunet.fit"):
        Schedule("cosine").lr(1)


def test_a_cosine_run_past_its_floor_of_zero_is_refused_as_its_resume_is():
    data = load_data(DataSpec("wine", seed=2, val_fraction=0.2))
    model = gn.MLP([13, 8, 3], seed=1)
    with pytest.raises(gn.ConfigError, match=r"spans 3 epochs .* epochs 4 to 5 of this run "
                                             r"would not train"):
        fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), epochs=5,
            schedule=Schedule("cosine", epochs=3), progress=False)
    history = fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), epochs=5,
                  schedule=Schedule("cosine", epochs=3, min_lr=0.01), progress=False)
    assert [row["lr"] for row in history][3:] == pytest.approx([0.01, 0.01])


@pytest.mark.parametrize("bad, match", [
    ({"base_lr": -0.05}, "base_lr must be a finite number > 0"),
    ({"base_lr": 0}, "base_lr must be a finite number > 0"),
    ({"base_lr": "x"}, "base_lr must be a finite number > 0"),
    ({"base_lr": float("nan")}, "base_lr must be a finite number > 0"),
    ({"min_lr": -0.05}, "min_lr must be a finite number >= 0"),
    ({"threshold": "x"}, r"threshold must lie in \[0, 1\)"),
    ({"threshold": 1.0}, r"threshold must lie in \[0, 1\)"),
    ({"gamma": "0.5"}, r"gamma must lie in \(0, 1\]"),
    ({"factor": 0}, r"factor must lie in \(0, 1\]"),
    ({"epochs": "x"}, "epochs must be a positive integer"),
    ({"epochs": 0}, "epochs must be a positive integer"),
])
def test_what_a_schedule_refuses(bad, match):
    name = ("plateau" if {"threshold", "factor"} & set(bad) else
            "step" if "gamma" in bad else "cosine")  # (the schedule that uses the option)
    with pytest.raises(gn.ConfigError, match=match):
        Schedule(name, **bad)


def test_train_loss_with_reduction_sum_is_the_sum_over_the_epochs_rows():
    """Not a mean of batch sums, which would grow with the batch size: the sum over the
    rows, as val_loss is over its rows (a learning rate too small to move the weights)."""
    data = load_data(DataSpec("wine", seed=2, val_fraction=0.2))
    losses = []
    for batch_size in (10, 50, 200):
        model = gn.MLP([13, 8, 3], seed=1, dtype="float64")
        opt = gn.SGD(model, lr=1e-12)
        history = fit(model, data, gn.CrossEntropyLoss(reduction="sum"), opt, epochs=1,
                      batch_size=batch_size, progress=False)
        losses.append(history[0]["train_loss"])
    model = gn.MLP([13, 8, 3], seed=1, dtype="float64")
    y_hat = model.forward(data.x_train)
    z = y_hat - y_hat.max(axis=1, keepdims=True)
    want = -(z[np.arange(len(z)), data.y_train] - np.log(np.exp(z).sum(axis=1))).sum()
    np.testing.assert_allclose(losses, [want] * 3, rtol=1e-9)


@pytest.mark.parametrize("betas", [("a", "b"), (None, None), (0.9, True), (0.9, 1.0),
                                   (-0.1, 0.9), (0.9,), 0.9])
def test_adams_betas_are_checked_for_what_they_are(betas):
    model = gn.MLP([3, 4, 2])
    with pytest.raises(gn.ConfigError, match="betas must be"):
        gn.Adam(model, betas=betas)


def test_plateau_patience_0_cuts_as_torchs_at_the_first_epoch_without_a_better_loss(torch):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0,
                                                     threshold=1e-4)
    s = Schedule("plateau", base_lr=1.0, factor=0.5, patience=0)
    got, want = [], []
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.8, 0.8, 0.7], 1):
        got.append(s.lr(epoch))
        want.append(opt.param_groups[0]["lr"])
        s.observe(loss)
        ref.step(loss)
    assert got == want and min(got) < 1.0
    with pytest.raises(gn.ConfigError, match="plateau patience must be a whole number >= 0"):
        Schedule("plateau", patience=-1)


def test_a_second_fit_with_an_unset_base_lr_starts_from_the_optimisers_own_rate():
    """Not from the rate the first run's schedule left the optimiser at (torch's
    initial_lr); without a schedule, a rate set by hand is kept."""
    data = load_data(DataSpec("wine", seed=2, val_fraction=0.2))
    model = gn.MLP([13, 8, 3], seed=1)
    opt = gn.SGD(model, lr=1e-3)
    want = [1e-3 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)]
    for _ in range(2):
        history = fit(model, data, gn.CrossEntropyLoss(), opt, epochs=4,
                      schedule=Schedule("cosine"), progress=False)
        np.testing.assert_allclose([row["lr"] for row in history], want, rtol=1e-12)
    opt.lr = 0.02
    history = fit(model, data, gn.CrossEntropyLoss(), opt, epochs=2, progress=False)
    assert [row["lr"] for row in history] == [0.02, 0.02]


def test_plateau_never_raises_the_rate_to_a_floor_above_it(torch):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0,
                                                     min_lr=1e-2)
    s = Schedule("plateau", base_lr=1e-3, factor=0.5, patience=0, min_lr=1e-2)
    got, want = [], []
    for epoch, loss in enumerate([1.0, 1.0, 1.0, 1.0], 1):
        got.append(s.lr(epoch))
        want.append(opt.param_groups[0]["lr"])
        s.observe(loss)
        ref.step(loss)
    assert got == want == [1e-3] * 4


def test_resume_refuses_data_that_changed_since_the_run_was_saved(tmp_path, capsys):
    """A column rescaled (its training rows' statistics move) or rows added (the splits
    change): refused, saying what differs, with the checkpoint untouched; the same file
    resumes."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(150, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    lines = ["a,b,c,y"] + [f"{r[0]:.6f},{r[1]:.6f},{r[2]:.6f},{t}" for r, t in zip(x, y)]
    data = tmp_path / "d.csv"
    data.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run.npz"
    assert main(["train", "--dataset", str(data), "--target", "y", "--epochs", "2", "--save",
                 str(run), "--quiet"]) == 0
    saved = run.read_bytes()
    scaled = ["a,b,c,y"] + [f"{10 * r[0]:.6f},{r[1]:.6f},{r[2]:.6f},{t}"
                            for r, t in zip(x, y)]
    for changed, match in ((scaled, r"its training rows' column 'a' had mean"),
                           (lines + lines[1:31], "the run trained on 105 rows, validated on 15 "
                                                 "and tested on 30; these data split into 126")):
        data.write_text("\n".join(changed) + "\n")
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--epochs", "4", "--quiet"]) == 1
        assert re.search(match, capsys.readouterr().err)
        assert run.read_bytes() == saved
    data.write_text("\n".join(lines) + "\n")
    assert main(["train", "--resume", str(run), "--epochs", "4", "--quiet"]) == 0


def test_resume_refuses_features_standardised_otherwise_and_goes_on_at_a_rate_of_0():
    """A run on standardised features resumed on the same rows taken as given: refused. And
    fit without a schedule goes on at the optimiser's rate, 0 too (an earlier schedule's
    floor), as it did before schedules bound to the optimiser's rate."""
    from gpunet.data import make_dataset

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(80, 3)) * 5 + 2, rng.integers(0, 2, 80)
    model = gn.MLP([3, 8, 2], seed=1)
    data = make_dataset("d", x, y, "classification", seed=0, val_fraction=0.2)
    path = os.path.join(tempfile.mkdtemp(), "r.npz")
    fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.1), epochs=1, save=path,
        progress=False)
    plain = make_dataset("d", x, y, "classification", seed=0, val_fraction=0.2,
                         standardize=False)
    again = gn.MLP([3, 8, 2])
    with pytest.raises(gn.ConfigError, match="this run standardised its features; these "
                                             "data are not"):
        fit(again, plain, gn.CrossEntropyLoss(), gn.SGD(again, lr=0.1), epochs=2,
            resume=path, progress=False)
    opt = gn.SGD(model, lr=0.1)
    opt.lr = 0.0
    history = fit(model, data, gn.CrossEntropyLoss(), opt, epochs=1, progress=False)
    assert history[0]["lr"] == 0.0


def test_fit_resumes_only_with_the_runs_patience_loss_and_schedule(tmp_path):
    """Another patience (whose best weights the run kept, or not), another loss or another
    schedule would not go on with the run: refused, naming the run's; None for the schedule
    takes the run's."""
    data = load_data(DataSpec("wine", seed=2, val_fraction=0.2))
    model = gn.MLP([13, 8, 3], seed=1)
    path = tmp_path / "r.npz"
    fit(model, data, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.05), epochs=2, patience=3,
        schedule=Schedule("step", step_size=1, gamma=0.5), save=path, progress=False)
    cases = [({"patience": None}, "this run's patience was 3; resume it with the same, not "
                                  "None"),
             ({"loss": gn.CrossEntropyLoss(label_smoothing=0.1)},
              r"trained on the loss cross_entropy \(reduction mean, label_smoothing 0.0\)"),
             ({"schedule": Schedule("step", step_size=2, gamma=0.5)},
              "this run's schedule was step \\(step_size 1\\)")]
    for change, match in cases:
        again = gn.MLP([13, 8, 3])
        kw = {"loss": gn.CrossEntropyLoss(), "patience": 3, **change}
        with pytest.raises(gn.ConfigError, match=match):
            fit(again, data, kw.pop("loss"), gn.SGD(again, lr=0.05), epochs=4, resume=path,
                progress=False, **kw)
    again = gn.MLP([13, 8, 3])
    history = fit(again, data, gn.CrossEntropyLoss(), gn.SGD(again, lr=0.05), epochs=4,
                  patience=3, schedule=Schedule("step", step_size=1, gamma=0.5),
                  resume=path, progress=False)  # (the same; base_lr, epochs unset: the run's)
    assert [row["lr"] for row in history] == pytest.approx([0.05, 0.025, 0.0125, 0.00625])


def test_a_bce_loss_refuses_standardised_targets():
    from gpunet.data import make_dataset

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), rng.uniform(0, 1, (50, 1))
    data = make_dataset("soft", x, y, "regression")
    model = gn.MLP([3, 4, 1], seed=0)
    with pytest.raises(gn.ConfigError, match="a binary cross-entropy, whose targets lie in "
                                             r"\[0, 1\], does not take"):
        fit(model, data, gn.BCEWithLogitsLoss(), gn.Adam(model), epochs=1, progress=False)
    data = make_dataset("soft", x, y, "regression", standardize=False)
    fit(model, data, gn.BCEWithLogitsLoss(), gn.Adam(model), epochs=1, progress=False)


def test_make_dataset_takes_text_labels_as_class_names():
    from gpunet.data import make_dataset

    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 3))
    names = np.array(["emu", "cat", "dog"])[rng.integers(0, 3, 90)]
    for y in (names, list(names), names.astype(object)):
        data = make_dataset("animals", x, y, None, val_fraction=0.2)
        assert data.task == "classification" and list(data.classes) == ["cat", "dog", "emu"]
        assert data.n_classes == 3
    rows = np.concatenate([data.x_train, data.x_val, data.x_test])  # (standardised)
    labels = np.concatenate([data.y_train, data.y_val, data.y_test])
    assert len(rows) == 90 and sorted(np.bincount(labels)) == sorted(
        np.unique(names, return_counts=True)[1])
    model = gn.MLP([3, 8, 3], seed=0)
    history = fit(model, data, gn.CrossEntropyLoss(), gn.Adam(model), epochs=2,
                  progress=False)
    assert "test_accuracy" in history.test


# -- resuming leaves what it resumed from as it was; refusals that say what is wrong ---------


def _small_run_data():
    from gpunet.data import make_dataset

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 3)), rng.integers(0, 2, 100)
    return make_dataset("d", x, y, "classification", val_fraction=0.1, test_fraction=0.0)


def _small_model(opt="adam"):
    model = gn.MLP([3, 8, 2], seed=0, backend="numpy")
    return model, (gn.Adam(model, lr=0.01) if opt == "adam" else gn.SGD(model, lr=0.1))


def test_a_batch_size_past_the_rows_is_one_batch_of_them_all(monkeypatch):
    """A batch size above the training rows (up to past int64) trains as one of exactly the
    rows does, on a static step of that many rows (it was built for the batch size given,
    allocating its buffers, and then never used; past int64 the step sizes overflowed)."""
    from gpunet import step as step_module

    data, loss = _small_run_data(), gn.CrossEntropyLoss()
    n = len(data.x_train)
    built = []
    real = step_module.StaticStep.__init__

    def counting(self, model, loss_fn, optimizer, batch_size, *args, **kwargs):
        built.append(batch_size)
        real(self, model, loss_fn, optimizer, batch_size, *args, **kwargs)

    monkeypatch.setattr(step_module.StaticStep, "__init__", counting)
    runs = []
    for batch_size in (n, n + 1, 10**9, 10**30):
        model, opt = _small_model()
        history = fit(model, data, loss, opt, epochs=3, batch_size=batch_size, progress=False)
        runs.append((model.state_dict(), [row["train_loss"] for row in history]))
    assert built == [n] * 4
    for params, losses in runs[1:]:
        assert losses == runs[0][1]
        for k, v in params.items():
            np.testing.assert_array_equal(v, runs[0][0][k], err_msg=k)


def test_two_resumes_from_one_checkpoint_object_give_the_uninterrupted_run(tmp_path):
    """fit(resume=ck) goes on from copies: the Checkpoint's optimiser state, history and
    arrays stay as read, so a second resume from it (graph=True, then False) is the run
    again."""
    data, loss = _small_run_data(), gn.CrossEntropyLoss()
    model, opt = _small_model()
    whole = fit(model, data, loss, opt, epochs=4, batch_size=16, progress=False)
    half, opt = _small_model()
    fit(half, data, loss, opt, epochs=2, batch_size=16, progress=False, save=tmp_path / "r.npz")
    ck = load_checkpoint(tmp_path / "r.npz")
    saved = {k: v.copy() for k, v in ck.optimizer_state["W1"].items()}
    for graph in (True, False):
        again, opt = _small_model()
        history = fit(again, data, loss, opt, epochs=4, batch_size=16, progress=False,
                      resume=ck, graph=graph)
        assert [r["epoch"] for r in history] == [1, 2, 3, 4]
        assert [r["train_loss"] for r in history] == [r["train_loss"] for r in whole]
        for k in model.params:
            np.testing.assert_array_equal(again.params[k], model.params[k], err_msg=k)
    for slot, a in saved.items():
        np.testing.assert_array_equal(ck.optimizer_state["W1"][slot], a)
    assert len(ck.extra["training"]["state"]["history"]) == 2


def test_an_optimizer_state_dict_is_a_snapshot_and_loading_one_copies_it():
    data, loss = _small_run_data(), gn.CrossEntropyLoss()
    model, opt = _small_model()
    fit(model, data, loss, opt, epochs=1, batch_size=16, progress=False)
    snap = opt.state_dict()
    kept = snap["state"]["W1"]["exp_avg"].copy()
    other_model, other = _small_model()
    other.load_state_dict(snap)
    fit(model, data, loss, opt, epochs=1, batch_size=16, progress=False)
    np.testing.assert_array_equal(snap["state"]["W1"]["exp_avg"], kept)
    np.testing.assert_array_equal(other.state["W1"]["exp_avg"], kept)
    assert not np.shares_memory(other.state["W1"]["exp_avg"], opt.state["W1"]["exp_avg"])


def test_a_resume_to_fewer_epochs_than_the_run_reached_is_refused(tmp_path):
    data, loss = _small_run_data(), gn.CrossEntropyLoss()
    model, opt = _small_model("sgd")
    fit(model, data, loss, opt, epochs=4, batch_size=16, progress=False, save=tmp_path / "r.npz")
    model, opt = _small_model("sgd")
    with pytest.raises(gn.ConfigError, match=r"that run has trained 4 epochs: resume it with "
                                             r"epochs >= 4 \(more, to train on\), not 2"):
        fit(model, data, loss, opt, epochs=2, batch_size=16, progress=False,
            resume=tmp_path / "r.npz")
    # stopped inside epoch 3 (as Ctrl-C leaves it): its weights hold part of epoch 3
    from gpunet.checkpoint import save_checkpoint

    ck = load_checkpoint(tmp_path / "r.npz")
    training = {**ck.extra["training"], "state": {**ck.extra["training"]["state"], "epoch": 2,
                                                  "step": 3, "finished": False}}
    save_checkpoint(tmp_path / "mid.npz", ck.build_model("numpy"), opt, epoch=2,
                    standardizer=ck.standardizer, extra={**ck.extra, "training": training},
                    arrays={"epoch/losses": np.ones(6), "epoch/correct": np.ones(6, int)})
    for epochs in (1, 2):
        model, opt = _small_model("sgd")
        with pytest.raises(gn.ConfigError, match=rf"that run stopped in epoch 3, after step 3: "
                                                 rf"resume it with epochs >= 3, not {epochs}"):
            fit(model, data, loss, opt, epochs=epochs, batch_size=16, progress=False,
                resume=tmp_path / "mid.npz")


def test_a_net_without_hidden_layers_has_no_batch_norm_to_refuse_a_last_batch_of_1():
    from gpunet.data import make_dataset

    rng = np.random.default_rng(0)
    d = make_dataset("c", rng.standard_normal((61, 3)), rng.integers(0, 2, 61),
                     "classification", val_fraction=0.0, test_fraction=0.0)
    model = gn.MLP([3, 2], norm="batch", backend="numpy")  # (norms go after hidden layers)
    history = fit(model, d, gn.CrossEntropyLoss(), gn.SGD(model, lr=0.05), epochs=1,
                  batch_size=30, progress=False)
    assert len(history) == 1
    hidden = gn.MLP([3, 4, 2], norm="batch", backend="numpy")
    with pytest.raises(gn.ConfigError, match="batch norm needs batches of at least 2 rows"):
        fit(hidden, d, gn.CrossEntropyLoss(), gn.SGD(hidden, lr=0.05), epochs=1,
            batch_size=30, progress=False)


def test_bce_on_an_output_that_is_not_a_probability_is_a_config_error():
    from gpunet.data import make_dataset

    rng = np.random.default_rng(0)
    d = make_dataset("c", rng.standard_normal((60, 3)), rng.integers(0, 2, 60),
                     "classification", val_fraction=0.0, test_fraction=0.0)
    model = gn.MLP([3, 4, 1], output="identity", backend="numpy")
    with pytest.raises(gn.ConfigError, match="BCELoss takes probabilities, but the model's "
                                             "output is identity"):
        fit(model, d, gn.BCELoss(), gn.SGD(model, lr=1e-6), epochs=1, batch_size=8,
            progress=False)


@pytest.mark.parametrize("loss, output", [("cross_entropy", "softmax"),
                                          ("bce_logits", "sigmoid"), ("bce_logits", "softmax")])
def test_a_logits_loss_on_a_probability_output_is_a_config_error(loss, output):
    """CrossEntropyLoss applies softmax itself (BCEWithLogitsLoss the sigmoid): on a softmax
    (sigmoid) output it would apply it twice and train on another loss."""
    from gpunet.data import make_dataset

    rng = np.random.default_rng(0)
    outputs = 3 if loss == "cross_entropy" else 1
    d = make_dataset("c", rng.standard_normal((60, 3)), rng.integers(0, 2, 60),
                     "classification", val_fraction=0.0, test_fraction=0.0)
    model = gn.MLP([3, 4, outputs], output=output, backend="numpy")
    name = {"cross_entropy": "CrossEntropyLoss", "bce_logits": "BCEWithLogitsLoss"}[loss]
    with pytest.raises(gn.ConfigError, match=f"{name} takes logits and applies .* but the "
                                             f"model's output is {output} already"):
        fit(model, d, gn.get_loss(loss), gn.SGD(model, lr=1e-6), epochs=1, batch_size=8,
            progress=False)
    # train_step, the torch-style loop, trained them silently
    with pytest.raises(gn.ConfigError, match=f"{name} takes logits"):
        y = d.y_train if loss == "cross_entropy" else d.y_train.reshape(-1, 1).astype(float)
        model.train_step(d.x_train, y, gn.get_loss(loss), gn.SGD(model, lr=1e-6))


@pytest.mark.parametrize("outputs", [1, 3])
def test_bce_on_a_softmax_output_is_a_config_error(outputs):
    """BCELoss takes a probability an output; a softmax's outputs sum to 1 (over one output
    the constant 1, so nothing trained), and fit scored and predict thresholded them as
    logits (every label positive, val_accuracy 0): refused, in fit, StaticStep and
    train_step."""
    from gpunet.data import make_dataset
    from gpunet.step import StaticStep

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    y = (rng.random((40, outputs)) < 0.4).astype(float)
    d = make_dataset("c", x, y if outputs > 1 else y[:, 0].astype(int), "classification",
                     val_fraction=0.0, test_fraction=0.0, standardize=False)
    model = gn.MLP([3, 4, outputs], output="softmax", backend="numpy")
    match = "BCELoss takes a probability for each output, but the model's softmax output"
    with pytest.raises(gn.ConfigError, match=match):
        fit(model, d, gn.BCELoss(), gn.SGD(model), epochs=1, batch_size=8, progress=False)
    with pytest.raises(gn.ConfigError, match=match):
        model.train_step(x, y, gn.BCELoss(), gn.SGD(model))
    with pytest.raises(gn.ConfigError):
        StaticStep(model, gn.BCELoss(), gn.SGD(model), 8)


def test_fit_leaves_an_ignored_signal_ignored():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        data, loss = _small_run_data(), gn.CrossEntropyLoss()
        model, opt = _small_model("sgd")
        inner, calls = opt.prepare_hyper, [0]

        def prepare():
            calls[0] += 1
            if calls[0] == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # ignored: the run goes on
            return inner()

        opt.prepare_hyper = prepare
        assert len(fit(model, data, loss, opt, epochs=2, batch_size=16, progress=False)) == 2
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_fit_puts_the_callers_signal_handlers_back():
    seen = []
    mine = {s: signal.signal(s, lambda signum, frame: seen.append(signum))
            for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        data, loss = _small_run_data(), gn.CrossEntropyLoss()
        model, opt = _small_model("sgd")
        fit(model, data, loss, opt, epochs=1, batch_size=16, progress=False)
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        for s, handler in mine.items():
            signal.signal(s, handler)


def test_an_interrupt_after_the_loss_went_non_finite_leaves_the_last_good_checkpoint(tmp_path):
    """The epoch's end would have said so (TrainingDiverged, the checkpoint untouched); a
    Ctrl-C that comes first says the same rather than write non-finite weights over it."""
    _run("numpy", 1, save=tmp_path / "b.npz")
    before = (tmp_path / "b.npz").read_bytes()
    n_steps = -(-len(load_data(DataSpec("wine", seed=2, val_fraction=0.2)).x_train) // 16)
    ck = load_checkpoint(tmp_path / "b.npz")
    model = ck.build_model("numpy")
    opt = gn.SGD(model, lr=0.05, momentum=0.9)
    calls = [0]
    inner = opt.prepare_hyper

    def prepare():  # (before each step's forward pass)
        calls[0] += 1
        if calls[0] == 2:
            model.params["W1"][0, 0] = np.inf  # step 2's loss: NaN
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return inner()

    opt.prepare_hyper = prepare
    data = load_data(DataSpec("wine", seed=2, val_fraction=0.2, test_fraction=0.2))
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at epoch 2, step 2: .*"
                                                r"the checkpoint of epoch 1 is untouched"):
        with np.errstate(all="ignore"):
            fit(model, data, gn.CrossEntropyLoss(), opt, epochs=3, batch_size=16, seed=3,
                save=tmp_path / "b.npz", progress=False, resume=ck)
    assert n_steps > 3 and (tmp_path / "b.npz").read_bytes() == before


def test_weights_that_overflow_in_an_epochs_last_step_are_not_saved(tmp_path):
    """A step's loss is taken before its update: an update that overflows in the epoch's
    last step shows in no loss of that epoch. The checkpoint's writer sees the weights:
    TrainingDiverged, the last good checkpoint kept."""
    data, loss = _small_run_data(), gn.CrossEntropyLoss()
    model, opt = _small_model("sgd")
    fit(model, data, loss, opt, epochs=1, batch_size=16, progress=False,
        save=tmp_path / "r.npz")
    before = (tmp_path / "r.npz").read_bytes()
    n_steps = -(-len(data.x_train) // 16)
    inner, calls = opt.prepare_hyper, [0]

    def prepare():
        calls[0] += 1
        if calls[0] == n_steps:  # (resumed:) epoch 2's last step, an update past float32
            opt.lr = 1e300  # (inf as float32)
        return inner()

    opt.prepare_hyper = prepare
    with pytest.raises(TrainingDiverged, match=r"the weights \(.*\) became infinite or NaN in "
                                                r"epoch 2: try a lower learning rate "
                                                r"\(now 1e\+300\) in a new run \(a resume goes "
                                                r"on with the run's own\)"):
        with np.errstate(all="ignore"):
            fit(model, data, loss, opt, epochs=3, batch_size=16, progress=False,
                save=tmp_path / "r.npz", resume=tmp_path / "r.npz")
    assert (tmp_path / "r.npz").read_bytes() == before


def test_regression_targets_beyond_float32_are_refused_not_diverged():
    from gpunet.data import make_dataset

    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3))
    y = rng.standard_normal(50)
    y[7] = 1e39
    data = make_dataset("r", x, y, "regression", standardize=False, test_fraction=0.0)
    model = gn.MLP([3, 4, 1], backend="numpy")
    with pytest.raises(gn.ConfigError, match=r"a value of the targets is beyond float32's"):
        fit(model, data, gn.MSELoss(), gn.SGD(model, lr=0.01), epochs=1, progress=False)


def test_metrics_hold_one_block_of_outputs_not_every_rows():
    """Validation and test figures took every row's outputs at once, and the loss's gradient
    over them: 6 GB for 4e5 rows of 1000 classes. Block by block, the figures are the same
    (a float64 NumPy reference) in a small fraction of the memory."""
    import tracemalloc

    from gpunet.train import metrics

    rng = np.random.default_rng(0)
    n, k = 12000, 500
    model = gn.MLP([6, 16, k], backend="numpy", seed=0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = rng.integers(0, k, n)
    tracemalloc.start()
    try:
        got = metrics(model, x, y, gn.CrossEntropyLoss(), "classification", batch_size=512)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    outputs = n * k * 4  # one float32 copy of every row's outputs: 24 MB
    assert peak < outputs / 4, (peak, outputs)
    logits = np.asarray(model.predict(x), dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    assert got["loss"] == pytest.approx(-log_p[np.arange(n), y].mean(), rel=1e-6)
    assert got["accuracy"] == np.mean(logits.argmax(axis=1) == y)
    w = rng.uniform(0, 2, n)
    weighted = metrics(model, x, y, gn.CrossEntropyLoss(), "classification", batch_size=512,
                       weight=w)
    assert weighted["loss"] == pytest.approx(-(w * log_p[np.arange(n), y]).sum() / w.sum(),
                                             rel=1e-6)


@pytest.mark.parametrize("v", [83306474.28143, 12345.6789, -2.5e9, 1.234567891e15])
def test_large_figures_are_printed_to_significant_digits_not_decimals(v):
    """A test MSE of prices (8.3e7) was printed "83306474.2814": four decimals of noise past
    float32's seven digits. From 1e4 up a figure has decimals + 4 significant digits."""
    from gpunet.train import figure

    for decimals in (4, 6):
        text = figure(v, decimals)
        digits = text.split("e")[0].replace("-", "").replace(".", "").lstrip("0")
        assert len(digits) <= decimals + 4, text
        assert float(text) == pytest.approx(v, rel=10.0 ** -(decimals + 3)), text
    assert figure(9999.5) == "9999.5000" and figure(0.5) == "0.5000"  # (below: as before)


def test_resume_refuses_rows_that_changed_where_the_statistics_do_not_show_it(tmp_path,
                                                                                capsys):
    """A validation row changed, or two training rows swapped, leaves the split sizes and the
    training rows' statistics as they were: the resume went on silently (another best epoch,
    early stopping at another epoch). A checksum of every split's rows refuses it; the same
    file resumes."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(150, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    rows = [f"{r[0]:.6f},{r[1]:.6f},{r[2]:.6f},{t}" for r, t in zip(x, y)]
    data, run = tmp_path / "d.csv", tmp_path / "run.npz"
    data.write_text("\n".join(["a,b,c,y"] + rows) + "\n")
    assert main(["train", "--dataset", str(data), "--target", "y", "--epochs", "2", "--save",
                 str(run), "--quiet", "--patience", "3"]) == 0
    ck = load_checkpoint(run)
    spec = gn.DataSpec.from_json(ck.extra["data"])
    split = gn.load_data(spec)
    val_row = next(i for i, r in enumerate(x) if np.allclose(
        (r - split.standardizer.mean) / split.standardizer.std, split.x_val[0], atol=1e-5))
    train_rows = [i for i, r in enumerate(x) if np.isclose(
        (r - split.standardizer.mean) / split.standardizer.std, split.x_train[:2],
        atol=1e-5).all(axis=1).any()]
    changed = list(rows)
    changed[val_row] = f"{x[val_row, 0] + 5:.6f}" + rows[val_row][rows[val_row].index(","):]
    swapped = list(rows)
    swapped[train_rows[0]], swapped[train_rows[1]] = rows[train_rows[1]], rows[train_rows[0]]
    saved = run.read_bytes()
    for lines, what in ((changed, "validation rows' features"),
                        (swapped, "training rows' features")):
        data.write_text("\n".join(["a,b,c,y"] + lines) + "\n")
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--epochs", "4", "--quiet"]) == 1
        assert f"the data are not those the run was trained on: the {what} differ" \
            in capsys.readouterr().err
        assert run.read_bytes() == saved
    data.write_text("\n".join(["a,b,c,y"] + rows) + "\n")
    assert main(["train", "--resume", str(run), "--epochs", "4", "--quiet"]) == 0


def test_resume_in_python_refuses_other_data_of_the_same_shape(tmp_path):
    """make_dataset(standardize=False) data of the same shape but other values (no
    statistics to compare) were trained on from the checkpoint without a word."""
    from gpunet.data import make_dataset

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(120, 4)), rng.integers(0, 3, 120)
    first = make_dataset("a", x, y, "classification", standardize=False)
    other = make_dataset("a", rng.normal(size=(120, 4)), y, "classification",
                         standardize=False)
    m = gn.MLP([4, 8, 3], seed=0)
    fit(m, first, gn.CrossEntropyLoss(), gn.SGD(m), epochs=1, save=str(tmp_path / "r.npz"),
        progress=False)
    for data, ok in ((other, False), (first, True)):
        m = gn.MLP([4, 8, 3], seed=0)
        run = lambda: fit(m, data, gn.CrossEntropyLoss(), gn.SGD(m), epochs=2,  # noqa: E731
                          resume=str(tmp_path / "r.npz"), progress=False)
        if ok:
            assert len(run()) == 2
        else:
            with pytest.raises(gn.ConfigError, match="the training rows' features differ"):
                run()


def test_resuming_a_run_that_is_already_as_long_still_writes_save(tmp_path, capsys):
    """`train --resume a.npz --save b.npz` of a run that had done its epochs said "checkpoint
    written to b.npz" and wrote nothing (fit saves after each epoch, and none ran): the
    checkpoint is written, the same run's."""
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["train", "--dataset", "iris", "--epochs", "3", "--save", str(a), "--quiet",
                 "--backend", "numpy"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(a), "--save", str(b), "--backend", "numpy"]) == 0
    assert f"checkpoint written to {b}" in capsys.readouterr().err
    assert_same_params(params_of(a), params_of(b))
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert cb.extra["training"]["state"] == ca.extra["training"]["state"]
    assert main(["train", "--resume", str(b), "--epochs", "4", "--quiet"]) == 0  # goes on
    assert load_checkpoint(b).extra["training"]["state"]["epoch"] == 4


def test_a_python_resume_says_which_optimizer_settings_it_takes_from_the_run(tmp_path, caplog):
    """fit(resume=) takes the run's optimiser settings, as torch's load_state_dict does, but
    replaced those the given optimiser was built with without a word (the command line
    refuses such flags): a notice names them; an optimiser built alike gets none."""
    spec = DataSpec("wine", seed=2, val_fraction=0.2, test_fraction=0.2)
    data = load_data(spec)
    m = gn.MLP([13, 8, 3], seed=0)
    fit(m, data, gn.CrossEntropyLoss(), gn.SGD(m, lr=0.05, momentum=0.9), epochs=1,
        save=str(tmp_path / "r.npz"), progress=False)
    for opt, said_it in ((gn.SGD(m, lr=0.5, momentum=0.1, weight_decay=0.3), True),
                         (gn.SGD(m, lr=0.5, momentum=0.9), False)):
        caplog.clear()
        fit(m, data, gn.CrossEntropyLoss(), opt, epochs=2, resume=str(tmp_path / "r.npz"),
            progress=False)
        assert (opt.momentum, opt.weight_decay, opt.lr) == (0.9, 0.0, 0.05)
        lines = said(caplog)
        assert ("resuming with the run's optimizer settings: weight_decay 0.0 (not 0.3), "
                "momentum 0.9 (not 0.1)" in lines) == said_it, lines
