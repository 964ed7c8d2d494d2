"""Backend selection, the auto fallback, and that every backend has the same ops."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import said

import gpunet as gn
from gpunet import backends
from gpunet.backends.base import Backend
from gpunet.backends.cupy_backend import CupyBackend
from gpunet.backends.numpy_backend import NumpyBackend


def test_numpy_backend_is_shared_and_named():
    b = gn.get_backend("numpy")
    assert b is gn.get_backend("NumPy")
    assert b.name == "numpy" and b.xp is np
    assert "cpu" in b.device_name


def test_unknown_backend_names_valid_ones():
    with pytest.raises(gn.ConfigError, match="valid names: auto, numpy, cupy"):
        gn.get_backend("tpu")


@pytest.mark.parametrize("command", [["train", "--dataset", "iris", "--epochs", "1", "--quiet"],
                                     ["info"]])
def test_a_bad_gpunet_backend_is_named_as_the_variable(monkeypatch, capsys, command):
    """It said "unknown backend 'cuda'", never naming the variable the name came from, and
    `gpunet info` showed "default backend: cuda" with status 0."""
    from gpunet.cli import main

    monkeypatch.setenv("GPUNET_BACKEND", "CUDA ")
    assert main(command) == 1
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == ("gpunet: error: $GPUNET_BACKEND='CUDA ' is not a backend; "
                                    "valid: auto, numpy, cupy (numpy computes on the CPU, cupy "
                                    "on an NVIDIA GPU)")
    assert "default backend" not in out and "epoch" not in out
    with pytest.raises(gn.ConfigError, match=r"^\$GPUNET_BACKEND='CUDA ' is not a backend"):
        gn.MLP([2, 3, 2])  # (the Python API's default too)
    assert gn.get_backend("numpy").name == "numpy"  # an explicit name does without it


@pytest.fixture
def no_cupy(monkeypatch):
    """Pretend CuPy cannot run, whatever this machine has."""
    monkeypatch.setattr(backends, "_cupy_probe", (None, "CuPy is not installed (test)"))
    monkeypatch.setattr(backends, "_notice_shown", False)
    monkeypatch.setattr(backends, "_instances", {})


def test_explicit_cupy_without_gpu_raises_with_cause(no_cupy):
    with pytest.raises(gn.BackendUnavailableError, match=r"CuPy is not installed \(test\)"):
        gn.get_backend("cupy")


def test_auto_falls_back_to_numpy_with_one_notice(no_cupy, caplog):
    assert gn.get_backend("auto").name == "numpy"
    assert gn.get_backend("auto").name == "numpy"
    err = said(caplog)
    assert err.count("\n") == 1 and "numpy backend" in err and "not installed (test)" in err


def test_environment_variable_sets_the_default(no_cupy, monkeypatch):
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    assert gn.get_backend().name == "numpy"
    monkeypatch.setenv("GPUNET_BACKEND", "cupy")
    with pytest.raises(gn.BackendUnavailableError):
        gn.get_backend()
    # an explicit name wins over the environment
    assert gn.get_backend("numpy").name == "numpy"


def test_probe_reports_why_when_cupy_is_missing():
    # Run in a fresh interpreter where importing cupy fails, whatever this machine has.
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "from gpunet.backends.cupy_backend import probe_cupy\n"
        "m, why = probe_cupy(); print(m is None, why)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("True CuPy is not installed")


_WORKERS_NOTICE = """
import sys
from joblib import Parallel, delayed

def backend():
    sys.modules["cupy"] = None  # (CuPy unavailable, whatever this machine has)
    import gpunet
    return gpunet.get_backend("auto").name

print(backend(), *Parallel(n_jobs=2, backend="loky")(delayed(backend)() for _ in range(2)))
"""


@pytest.mark.parametrize("level, shown", [(None, True), ("warning", True), ("ERROR", False),
                                          ("40", False), ("loud", True)])
def test_gpunet_log_level_sets_the_notices_level_in_worker_processes_too(level, shown):
    """joblib's loky workers do not inherit the parent's logging settings, so the "using the
    numpy backend" notice could not be silenced there; they inherit the environment, and
    $GPUNET_LOG_LEVEL sets the "gpunet" logger's level in each process (unset: the notices
    as before; a name that is no level: said so, and the notices as before)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GPUNET_LOG_LEVEL",
                                                             "GPUNET_BACKEND")}
    if level is not None:
        env["GPUNET_LOG_LEVEL"] = level
    proc = subprocess.run([sys.executable, "-c", _WORKERS_NOTICE], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["numpy"] * 3
    notices = [line for line in proc.stderr.splitlines()
               if line.startswith("gpunet: using the numpy backend")]
    # the parent's and each worker's (one or two: loky may run both calls in one)
    assert (len(notices) >= 2) if shown else not notices, proc.stderr
    bad = [line for line in proc.stderr.splitlines() if "GPUNET_LOG_LEVEL" in line]
    assert bad == (["gpunet: GPUNET_LOG_LEVEL='loud' is not a level (debug, info, warning, "
                    "error, critical, or a number); ignored"] * len(notices)
                   if level == "loud" else [])


@pytest.mark.parametrize("cls", [NumpyBackend, CupyBackend], ids=["numpy", "cupy"])
def test_backends_override_ops_with_the_base_signature(cls):
    """A backend may replace an op with a kernel, but never change how it is called."""
    for name, base_fn in inspect.getmembers(Backend, inspect.isfunction):
        if name.startswith("_"):
            continue
        fn = getattr(cls, name)
        assert inspect.signature(fn) == inspect.signature(base_fn), name


def test_backend_of_follows_the_array(backend):
    a = backend.asarray(np.ones(3))
    assert gn.backend_of(a) is backend
    assert backend.owns(a)
    np.testing.assert_array_equal(backend.to_host(a), np.ones(3))


class _Plain(Backend):
    name = "plain"
    xp = np
    device_name = "cpu"


def _all_sizes():
    """A numpy backend whose fused kernels take arrays of every size (the shared one keeps
    arrays under ``NumpyBackend.kernel_min_size`` elements on NumPy's ops)."""
    b = NumpyBackend()
    b.kernel_min_size = b.static_kernel_min_size = 0
    return b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu",
                                  "gelu_tanh", "silu", "softmax"])
def test_numpy_kernels_equal_the_numpy_math(name, dtype):
    """The njit kernels behind the numpy backend compute what the base class's NumPy ops do."""
    fast, plain = _all_sizes(), _Plain()
    rng = np.random.default_rng(0)
    z = rng.normal(size=(33, 70)).astype(dtype) * 3
    dy = rng.normal(size=z.shape).astype(dtype)
    tol = dict(rtol=3e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    if name == "gelu_tanh":  # 1 + tanh(u) and 1 - tanh(u)^2 cancel where tanh(u) ~ +-1: an
        tol["atol"] *= 100   # ulp of tanh there (libm's against NumPy's) leaves ~|z|^3 ulps
    y = fast.act_forward(name, z, 0.1)
    np.testing.assert_allclose(y, plain.act_forward(name, z, 0.1), **tol)
    np.testing.assert_allclose(fast.act_backward(name, dy, z, y, 0.1),
                               plain.act_backward(name, dy, z, y, 0.1), **tol)
    labels = rng.integers(0, 70, 33)
    for op in ("logsumexp", "log_softmax", "softmax"):
        np.testing.assert_allclose(getattr(fast, op)(z), getattr(plain, op)(z), **tol, err_msg=op)
    for a, b in zip(fast.softmax_cross_entropy(z, labels, 0.5),
                    plain.softmax_cross_entropy(z, labels, 0.5)):
        np.testing.assert_allclose(a, b, **tol)
    assert fast._kernels_off == ""


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu", "relu", "sigmoid"])
def test_gelu_and_silu_take_their_kernels_at_every_size(monkeypatch, name):
    """Below the backend's kernel threshold relu and sigmoid stay on NumPy's ops; gelu and
    silu, whose NumPy paths cost ten times their kernels at any size (erfc, exp and where over
    temporaries: docs/benchmarks.md), go to the kernels there too."""
    b = NumpyBackend()
    calls = []
    run = b._run
    monkeypatch.setattr(b, "_run", lambda op, *a, **kw: calls.append(op) or run(op, *a, **kw))
    z = np.random.default_rng(1).normal(size=(8, 16)).astype(np.float32)
    assert z.size < b.kernel_min_size
    y = b.act_forward(name, z)
    b.act_backward(name, z, z, y)
    b.bias_act_forward(name, z.copy(), z[0].copy())
    kernel = name in ("gelu", "gelu_tanh", "silu")
    assert calls == (["act_forward", "act_backward", "bias_act_forward"] if kernel else [])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["identity", "relu", "leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(3, 5), (37, 300), (600, 513)])
def test_bias_act_forward_in_place(backend, name, dtype, shape):
    """z <- f(z + b) over z itself, against a float64 reference, on sizes on both sides of the
    GPU kernel threshold (2^18 elements) and ragged against any block size."""
    rng = np.random.default_rng(shape[1])
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    s = (z + b).astype(np.float64)  # the sum rounded in dtype, as the op and torch round it
    ref = {"identity": s, "relu": np.maximum(s, 0), "leaky_relu": np.where(s > 0, s, 0.1 * s),
           "sigmoid": 1 / (1 + np.exp(-s)), "tanh": np.tanh(s)}[name]
    zd = backend.asarray(z)
    got = backend.bias_act_forward(name, zd, backend.asarray(b), 0.1)
    assert got is zd
    tol = dict(rtol=4e-7, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(backend.to_host(zd), ref, **tol)


def test_a_kernel_that_cannot_run_falls_back_once_with_a_notice(monkeypatch, caplog):
    b = _all_sizes()
    from gpunet.kernels import cpu_ops

    def broken(*args):
        raise RuntimeError("LLVM ERROR: pretend the compiler is broken")

    monkeypatch.setattr(cpu_ops, "act_forward", broken)
    z = np.random.default_rng(1).normal(size=(4, 5))
    np.testing.assert_array_equal(b.act_forward("relu", z), np.maximum(z, 0))
    np.testing.assert_array_equal(b.act_forward("relu", z), np.maximum(z, 0))
    err = said(caplog)
    assert err.count("\n") == 1 and "kernels unavailable" in err and "pretend" in err
    assert b.kernels is None


def test_kernels_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("GPUNET_KERNELS", "0")
    b = NumpyBackend()
    assert b.kernels is None
    z = np.random.default_rng(2).normal(size=(3, 4))
    np.testing.assert_array_equal(b.act_forward("relu", z), np.maximum(z, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, dampening, nesterov, wd, first", [
    (0.0, 0.0, False, 0.0, False), (0.0, 0.0, False, 0.01, False), (0.9, 0.0, False, 0.0, True),
    (0.9, 0.1, False, 0.01, False), (0.9, 0.0, True, 0.01, False),
])
def test_fused_sgd_update_equals_the_numpy_math(dtype, momentum, dampening, nesterov, wd, first):
    fast, plain = _all_sizes(), _Plain()
    assert fast.optim_kernels is not None
    rng = np.random.default_rng(3)
    p, g, buf = (rng.normal(size=(37, 11)).astype(dtype) for _ in range(3))
    runs = {}
    for b in (fast, plain):
        pp, bb = p.copy(), buf.copy() if momentum else None
        b.sgd_update(pp, g, bb, np.array([0.05, 1.0]), momentum, dampening, nesterov, wd, first)
        runs[b.name] = (pp, bb)
    # float32: the fused loop rounds once per element, NumPy once per op (inputs are ~1)
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(runs["numpy"][0], runs["plain"][0], **tol)
    assert not np.allclose(runs["numpy"][0], p)  # it did update
    if momentum:
        np.testing.assert_allclose(runs["numpy"][1], runs["plain"][1], **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd, decoupled", [(0.0, False), (0.01, False), (0.01, True)])
@pytest.mark.parametrize("step", [1, 7])
def test_fused_adam_update_equals_the_numpy_math(dtype, wd, decoupled, step):
    fast, plain = _all_sizes(), _Plain()
    rng = np.random.default_rng(4)
    p, g, m = (rng.normal(size=(19, 23)).astype(dtype) for _ in range(3))
    v = rng.uniform(0.01, 1, size=p.shape).astype(dtype)
    runs = {}
    for b in (fast, plain):
        pp, mm, vv = p.copy(), m.copy(), v.copy()
        b.adam_update(pp, g, mm, vv, np.array([1e-2, step]), 0.9, 0.999, 1e-8, wd, decoupled)
        runs[b.name] = (pp, mm, vv)
    tol = dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    for got, ref in zip(runs["numpy"], runs["plain"]):
        np.testing.assert_allclose(got, ref, **tol)
    assert fast._kernels_off == ""


def test_a_kernel_module_that_cannot_import_falls_back(monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "gpunet.kernels.cpu_ops", None)  # import raises
    b = NumpyBackend()
    z = np.random.default_rng(5).normal(size=(3, 4))
    np.testing.assert_array_equal(b.act_forward("tanh", z), np.tanh(z))
    assert b.kernels is None and b.optim_kernels is None
    assert "kernels unavailable (ModuleNotFoundError" in said(caplog)


@pytest.mark.parametrize("wd, decoupled, step", [(0.0, False, 1), (0.01, False, 5),
                                                 (0.01, True, 40)])
def test_fused_float32_adam_stays_within_rounding_of_float64_math(wd, decoupled, step):
    """The CPU update computes in float32 (as PyTorch does), the CuPy kernel in float64: both
    must land within float32 rounding of the float64 math (tests/test_gpu_paths.py compares
    the two with this tolerance)."""
    rng = np.random.default_rng(step)
    p, g, m = (rng.standard_normal((1000, 33)).astype(np.float32) for _ in range(3))
    v = rng.uniform(0.01, 1, p.shape).astype(np.float32)
    P, G, M, V = (a.astype(np.float64) for a in (p, g, m, v))
    lr = 1e-2
    if decoupled:
        P = P * (1 - lr * wd)
    else:
        G = G + wd * P
    M = 0.9 * M + 0.1 * G
    V = 0.999 * V + 0.001 * G * G
    P = P - lr / (1 - 0.9**step) * M / (np.sqrt(V) / np.sqrt(1 - 0.999**step) + 1e-8)
    _all_sizes().adam_update(p, g, m, v, np.array([lr, step]), 0.9, 0.999, 1e-8, wd, decoupled)
    for got, ref in zip((p, m, v), (P, M, V)):
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


def test_the_cpu_keeps_small_arrays_on_numpy_ops_and_sends_large_ones_to_the_kernels(
        monkeypatch):
    b = NumpyBackend()
    calls = []
    run = b._run
    monkeypatch.setattr(b, "_run", lambda op, *a, **k: calls.append(op) or run(op, *a, **k))
    rng = np.random.default_rng(0)
    small = rng.standard_normal((255, 256)).astype(np.float32)  # 2^16 - 256 elements
    large = rng.standard_normal((256, 256)).astype(np.float32)  # 2^16
    for z in (small, large):
        np.testing.assert_array_equal(b.act_forward("relu", z), np.maximum(z, 0))
        b.sgd_update(z.copy(), z, None, np.array([0.1, 1.0]), 0.0, 0.0, False, 0.0, False)
    assert calls == ["act_forward", "sgd_update"]  # the large array's, not the small one's
    with b.static_kernels():  # the same threshold in a static step on the CPU
        b.act_backward("relu", small, small, small)
    assert calls == ["act_forward", "sgd_update"]


def test_a_small_training_run_compiles_no_kernel():
    """`gpunet train` on digits (batches of 32 x 128) stays on NumPy's ops: numba, whose
    kernels compile for seconds in every process, is not even imported."""
    code = ("import sys\n"
            "from gpunet.cli import main\n"
            "assert main(['train', '--dataset', 'digits', '--epochs', '2', '--quiet',\n"
            "             '--backend', 'numpy']) == 0\n"
            "assert 'numba' not in sys.modules, 'numba was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout


def test_evaluation_takes_the_array_module_ops_and_compiles_no_kernel():
    """Validation every epoch and predict run once per epoch or command: numba's import and
    compile (about 0.3 s a process) would not pay back there. A net whose training arrays stay
    under the kernels' 2^16 elements (batches of 32 x 64) never loads numba, though its
    validation rows (1500 x 64) and a predict of 3000 rows are over it; the predictions are the
    array-module ops' (the eager forward's, with the kernels off)."""
    import os
    import tempfile

    code = """
import sys, numpy as np, gpunet as gn
from gpunet.data import make_dataset
rng = np.random.default_rng(0)
x = rng.standard_normal((3000, 20)); y = rng.integers(0, 3, 3000)
d = make_dataset("d", x, y, "classification", val_fraction=0.5, test_fraction=0.0)
m = gn.MLP([20, 64, 3], backend="numpy", seed=0)
gn.fit(m, d, gn.CrossEntropyLoss(), gn.SGD(m, lr=0.1), epochs=1, batch_size=32, progress=False)
got = m.predict(x.astype(np.float32), batch_size=4096)
print("numba" in sys.modules)
np.save(sys.argv[1], got)
"""
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/p.npy"
        proc = subprocess.run([sys.executable, "-c", code, out], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "False"
        got = np.load(out)
    # the same net, the kernels off: the same numbers
    env = {**os.environ, "GPUNET_KERNELS": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/p.npy"
        proc = subprocess.run([sys.executable, "-c", code, out], capture_output=True,
                              text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
        np.testing.assert_array_equal(np.load(out), got)


def test_gpunet_predict_compiles_no_kernel_for_its_probabilities(tmp_path):
    """The command's softmax of 20,000 x 4 logits (past the kernels' 2^16 elements) ran
    outside ``evaluating``: numba imported and a kernel compiled (0.35 -> 1.1 s, 54 -> 188 MB)
    by one row more than 16,383. Now the command loads no numba, and its probabilities are
    the array ops', a float64 softmax of the model's logits written here."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 5)).astype(np.float32)
    model = gn.MLP([5, 8, 4], backend="numpy", seed=0)
    from gpunet.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "m.npz", model, extra={"task": "classification"})
    np.save(tmp_path / "x.npy", x)
    code = ("import sys; from gpunet.cli import main; "
            f"rc = main(['predict', '--checkpoint', {str(tmp_path / 'm.npz')!r}, '--input', "
            f"{str(tmp_path / 'x.npy')!r}, '--output', {str(tmp_path / 'p.npy')!r}, "
            "'--backend', 'numpy']); print('numba' in sys.modules); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    logits = np.asarray(model.predict(x), dtype=np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(np.load(tmp_path / "p.npy")[:, 1:], e / e.sum(axis=1,
                               keepdims=True), rtol=1e-5, atol=1e-7)


class _StaticEverywhere(backends.NumpyBackend):
    """As the CuPy backend: small arrays off the kernels in eager ops, on them in a static
    step."""
    kernel_min_size = 1 << 30
    static_kernel_min_size = 0


def test_a_threads_evaluating_or_static_step_leaves_other_threads_ops_alone():
    """Threads share a backend: one thread inside predict (evaluating) or a static step must
    not move another thread's ops (and so its rounding) off or onto the kernels; and the
    threshold is put back whatever order threads leave in."""
    import threading

    b = _StaticEverywhere()
    big = np.ones((512, 256), dtype=np.float32)
    inside, leave = threading.Event(), threading.Event()
    seen = {}

    def other(context):
        with context():
            seen["there"] = (b._fit(big), b.min_size())
            inside.set()
            leave.wait(10)

    for context, there, here in ((b.evaluating, (False, 1 << 30), (False, 1 << 30)),
                                 (b.static_kernels, (True, 0), (False, 1 << 30))):
        inside.clear(), leave.clear()
        t = threading.Thread(target=other, args=(context,))
        t.start()
        assert inside.wait(10)
        assert (b._fit(big), b.min_size()) == here  # this thread: the eager choice
        leave.set()
        t.join()
        assert seen["there"] == there
    # a static step entered in one thread and left after another thread's: nothing stays
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with b.static_kernels():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second():
        a_in.wait(10)
        with b.static_kernels():
            b_in.set()
            a_out.wait(10)

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.min_size() == 1 << 30 and "kernel_min_size" not in vars(b)


def test_a_context_closed_in_another_thread_restores_the_thread_that_entered_it():
    """A generator suspended inside ``evaluating`` or ``static_kernels`` and closed in another
    thread (as a collected generator is): the entering thread's ops are put back, the closing
    thread's are left alone."""
    import threading

    b = _StaticEverywhere()
    big = np.ones((512, 256), dtype=np.float32)
    for context, inside in ((b.evaluating, (False, 1 << 30)), (b.static_kernels, (True, 0))):
        def batches():
            with context():
                yield (b._fit(big), b.min_size())
                yield (b._fit(big), b.min_size())

        gen = batches()
        assert next(gen) == inside
        seen = []

        def close():
            with b.static_kernels():  # the closing thread is in a static step of its own
                gen.close()
                seen.append((b._fit(big), b.min_size()))
            seen.append((b._fit(big), b.min_size()))

        closer = threading.Thread(target=close)
        closer.start()
        closer.join()
        assert seen == [(True, 0), (False, 1 << 30)]
        assert (b._fit(big), b.min_size()) == (False, 1 << 30)
        with b.static_kernels():
            assert b._fit(big)  # not left inside evaluating


def test_training_in_one_thread_gives_its_numbers_while_another_predicts():
    import threading

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32), dtype=np.float32)
    y = rng.integers(0, 4, 64)

    def train():
        m = gn.MLP([32, 64, 4], activation="gelu", backend="numpy", seed=3)  # (gelu: kernels
        opt = gn.Adam(m, lr=1e-2)                                          # at every size)
        for _ in range(30):
            m.train_step(x, y, gn.CrossEntropyLoss(), opt)
        return m.state_dict()

    alone = train()
    other = gn.MLP([32, 64, 4], activation="gelu", backend="numpy", seed=4)
    stop = threading.Event()

    def predict():
        while not stop.is_set():
            other.predict(x)

    t = threading.Thread(target=predict)
    t.start()
    try:
        together = train()
    finally:
        stop.set()
        t.join()
    for k in alone:
        np.testing.assert_array_equal(together[k], alone[k], err_msg=k)


def test_models_and_optimisers_copy_and_pickle_with_the_processes_backend():
    """A backend pickles as its name, also after its kernels were loaded (a module object,
    which pickle refuses, then hangs off it)."""
    import copy
    import pickle

    m = gn.MLP([8, 16, 3], activation="gelu", backend="numpy", seed=0)
    opt = gn.Adam(m, lr=1e-2)
    x = np.random.default_rng(1).standard_normal((5, 8))
    m.train_step(x, np.array([0, 1, 2, 1, 0]), gn.CrossEntropyLoss(), opt)  # (gelu: kernels)
    assert m.backend.kernels is not None
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert twin.backend is gn.get_backend("numpy")
        np.testing.assert_array_equal(twin.predict(x), m.predict(x))
    opt_twin = copy.deepcopy(opt)
    assert opt_twin.model.backend is gn.get_backend("numpy")
    # another backend (a subclass, as the tests' own): its class and settings, not swapped for
    # the shared one (whose kernels' threshold differs)
    tuned = _StaticEverywhere()
    tuned.kernel_min_size = 0
    m = gn.MLP([8, 16, 3], activation="gelu", backend=tuned, seed=0)
    m.train_step(x, np.array([0, 1, 2, 1, 0]), gn.CrossEntropyLoss(), gn.SGD(m))
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert type(twin.backend) is _StaticEverywhere and twin.backend.kernel_min_size == 0
        assert twin.backend is not gn.get_backend("numpy")
        np.testing.assert_array_equal(twin.predict(x), m.predict(x))


@pytest.mark.parametrize("activation, kernel", [("tanh", False), ("gelu", True)])
def test_predict_is_the_inference_forward_and_gelu_keeps_its_kernel(monkeypatch, activation,
                                                                    kernel):
    """predict is forward(cache=False) to the bit; on the CPU both take NumPy's ops where
    training would take a kernel, but for gelu (and gelu_tanh, silu), whose NumPy forms cost
    10-100 times more and which training compiles at every size anyway."""
    b = gn.get_backend("numpy")
    calls = []
    run = b._run
    monkeypatch.setattr(b, "_run", lambda op, *a, **k: calls.append(op) or run(op, *a, **k))
    m = gn.MLP([64, 1100, 3], activation=activation, backend="numpy", seed=0)  # (70,400 > 2^16)
    x = np.random.default_rng(0).standard_normal((64, 64))
    got = m.predict(x)
    assert ("act_forward" in calls) == kernel
    np.testing.assert_array_equal(got, m.forward(x, cache=False))
    calls.clear()
    m.forward(x)  # a training pass: the kernels from 2^16 elements
    assert "act_forward" in calls or "bias_act_forward" in calls


def test_numpy_forms_of_sigmoid_and_silu_choose_as_where_would():
    """sigma(z) = 1 / (1 + e) for z >= 0, e / (1 + e) below (e = exp(-|z|)): the numerator
    picked by max(e, 1 or 0) gives where()'s values, at 0, -0, NaN, +-inf and far out too;
    silu's sigma(-z) likewise."""
    from gpunet.activations import _sigmoids

    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        z = (rng.standard_normal((37, 71)) * 8).astype(dtype)
        z[0, :8] = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e4, -1e4, -90.0]
        e = np.exp(-np.abs(z))
        want = np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(dtype)
        want_minus = np.where(z >= 0, e / (1 + e), 1 / (1 + e)).astype(dtype)
        got = backends.NumpyBackend().act_forward("sigmoid", z[:3])  # under the threshold
        np.testing.assert_array_equal(got, want[:3])
        s, t = _sigmoids(np, z)
        assert s.dtype == t.dtype == dtype
        np.testing.assert_array_equal(s, want)
        np.testing.assert_array_equal(t, want_minus)
        np.testing.assert_array_equal(_sigmoids(np, z, both=False), want)


def test_numpy_forms_of_leaky_relu_and_a_shared_dimension_of_one_are_exact():
    """leaky_relu as max(z, slope z) (min for a slope above 1) and its gradient as dy times 1
    or slope give where()'s values, zeros' signs too; a GEMM over a shared dimension of 1 (dW
    of a batch of one row) goes to np.dot, the products as np.matmul's."""
    rng = np.random.default_rng(0)
    b = backends.NumpyBackend()
    for dtype in (np.float32, np.float64):
        z = (rng.standard_normal((33, 70)) * 3).astype(dtype)
        z[0, :3] = [0.0, -0.0, np.nan]
        dy = rng.standard_normal(z.shape).astype(dtype)
        dy[1, :4] = [np.inf, -np.inf, np.nan, -0.0]
        z[1, :4] = [1.0, -1.0, 2.0, -2.0]
        for slope in (0.01, 0.0, -0.3, 1.0, 2.5):
            want = np.where(z > 0, z, z * slope)
            got = b.act_forward("leaky_relu", z, slope)
            np.testing.assert_array_equal(got, want)
            assert np.array_equal(np.signbit(got), np.signbit(want))
            with np.errstate(invalid="ignore"):  # inf times a slope of 0
                grad = b.act_backward("leaky_relu", dy, z, got, slope)
                want = np.where(z > 0, dy, dy * slope)
            assert grad.dtype == dtype
            np.testing.assert_array_equal(grad, want)
            assert np.array_equal(np.signbit(grad), np.signbit(want))
        for a, w, ta, tb in ((z[:, :1], z[:1, :], False, False),
                             (z[:1, :], z[:1, :5], True, False),
                             (z[:5, :1], z[:7, :1], False, True)):
            av, wv = (a.T if ta else a), (w.T if tb else w)
            out = np.empty((av.shape[0], wv.shape[1]), dtype=dtype)
            b.matmul(a, w, out, trans_a=ta, trans_b=tb)
            np.testing.assert_array_equal(out, np.matmul(av, wv))


# Rows torch's log-probabilities make NaN throughout (+inf, NaN, all -inf), and one with a
# -inf entry that stays finite elsewhere.
_SPECIAL_ROWS = [[np.inf, 0, 0], [np.inf, np.inf, 0], [np.inf, -np.inf, 1], [np.nan, -np.inf, 2],
                 [-np.inf, -np.inf, -np.inf], [-np.inf, 0.5, 1]]


@pytest.mark.parametrize("row", _SPECIAL_ROWS)
def test_array_module_log_probabilities_of_special_rows_match_torch(row):
    """The array-module ops (small arrays on the CPU, and the fallback everywhere) give what
    torch gives: a row holding +inf has NaN log-probabilities and loss, not -inf beside NaN,
    and the kernels agree."""
    torch = pytest.importorskip("torch")
    b = gn.get_backend("numpy")
    x = np.array([row] * 2)
    labels = np.array([1, 2])
    t = torch.tensor(x, requires_grad=True)
    want_loss = torch.nn.functional.cross_entropy(t, torch.from_numpy(labels), reduction="none")
    want_loss.sum().backward()
    want_log_p = torch.log_softmax(torch.from_numpy(x), 1).numpy()
    with np.errstate(invalid="ignore"):
        got_log_p = Backend.log_softmax(b, x)
        got_loss, got_grad = Backend.softmax_cross_entropy(b, x, labels, 1.0)
    np.testing.assert_array_equal(np.isnan(got_log_p), np.isnan(want_log_p))
    np.testing.assert_allclose(got_log_p, want_log_p, rtol=1e-12)
    np.testing.assert_allclose(got_loss, want_loss.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(got_grad, t.grad.numpy(), rtol=1e-12, atol=1e-15)
    # the CPU kernels, at a size that takes them, give the same rows
    big = np.tile(x.astype(np.float32), (20000, 1))
    with np.errstate(invalid="ignore"):
        k_log_p = b.log_softmax(big)
        k_loss, _ = b.softmax_cross_entropy(big, np.tile(labels, 20000), np.float32(1.0))
    np.testing.assert_array_equal(np.isnan(k_log_p[:2]), np.isnan(want_log_p))
    np.testing.assert_array_equal(np.isnan(k_loss[:2]), np.isnan(want_loss.detach().numpy()))
