"""gpunet bench's bookkeeping: which goal a row answers to and whether it meets it, the JSON
rows, the Markdown table, and the counts and rates it refuses (usage errors on the command
line, ConfigError from ``run``). Nothing here times anything or asserts a speed."""

from __future__ import annotations

import json

import pytest

import gpunet as gn
from gpunet import bench


def _row(config="small", path="static", ms=1.0, ratio=0.5, **extra):
    return {"config": config, "optimizer": "sgd", "batch": 128, "path": path, "tf32": False,
            "gpunet_ms": ms, "gpunet_samples_per_s": 128 / ms * 1e3, "torch_ms": ms / ratio,
            "ratio": ratio, **extra}


@pytest.mark.parametrize("config, gpu, row, goal, met", [
    ("small", False, dict(ratio=0.59), "<= 0.6x torch", True),
    ("small", False, dict(ratio=0.61), "<= 0.6x torch", False),
    ("medium", False, dict(ratio=0.95), "<= 0.95x torch", True),
    ("small", True, dict(ms=0.099, ratio=9.0), "<= 0.1 ms", True),  # absolute on the GPU
    ("medium", True, dict(ms=0.46, ratio=0.1), "<= 0.45 ms", False),
    ("large", True, dict(ms=47, ratio=1.01, gpunet_pool_bytes=10, torch_peak_bytes=10),
     "<= 1.02x torch, memory <= torch", True),
    ("large", True, dict(ms=47, ratio=1.01, gpunet_pool_bytes=11, torch_peak_bytes=10),
     "<= 1.02x torch, memory <= torch", False),
    ("large", True, dict(ms=50, ratio=1.05, gpunet_pool_bytes=1, torch_peak_bytes=10),
     "<= 1.02x torch, memory <= torch", False),
    ("small", True, dict(path="graph", ms=0.08), "<= 0.1 ms", True),
])
def test_rows_of_the_default_path_are_judged_against_their_goal(config, gpu, row, goal, met):
    assert bench.judge(_row(config, **row), gpu) == (goal, met)


def test_eager_tf32_and_goal_less_rows_have_no_verdict():
    assert bench.judge(_row(path="eager", ratio=0.1), False) == ("", None)
    assert bench.judge(_row(tf32=True, ratio=0.1), True) == ("", None)
    assert bench.judge(_row("large", ratio=0.1), False) == ("", None)  # no CPU goal there
    assert bench.judge(_row(dropout=0.2, ratio=0.1), False) == ("", None)
    assert bench.judge(_row(norm="layer", ratio=0.1), False) == ("", None)
    assert bench.judge(_row(activation="gelu", ratio=0.1), False) == ("", None)
    assert bench.judge(_row(activation="relu", ratio=0.1), False)[0] != ""


def _one_row(tmp_path, optimizer, *flags):
    """The row and the Markdown table of a two-step small run with ``flags``."""
    pytest.importorskip("torch")
    out_json = tmp_path / "b.json"
    assert bench.main(["--config", "small", "--optimizer", optimizer, "--rounds", "1",
                       "--steps", "2", *flags, "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    (row,) = result["rows"]
    return row, bench.markdown(result)


def test_a_dropout_run_drops_in_both_nets(tmp_path):
    row, table = _one_row(tmp_path, "sgd", "--dropout", "0.2")
    assert (row["path"], row["dropout"], row["goal"]) == ("static", 0.2, "")
    assert "| static p=0.2 |" in table
    net = bench._torch_model("cpu", [6, 5, 4, 3], 2, "sgd", dropout=0.2)[1].net
    assert [type(m).__name__ for m in net] == [
        "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]


def test_a_layer_norm_run_normalises_in_both_nets(tmp_path):
    row, table = _one_row(tmp_path, "adam", "--norm", "layer")
    assert (row["path"], row["norm"], row["goal"]) == ("static", "layer", "")
    assert "| static layer norm |" in table
    for norm, module in (("layer", "LayerNorm"), ("batch", "BatchNorm1d")):
        net = bench._torch_model("cpu", [6, 5, 4, 3], 2, "sgd", norm=norm)[1].net
        assert [type(m).__name__ for m in net] == [
            "Linear", module, "ReLU", "Linear", module, "ReLU", "Linear"]


def test_a_gelu_run_uses_it_in_both_nets(tmp_path):
    row, table = _one_row(tmp_path, "sgd", "--activation", "gelu")
    assert (row["path"], row["activation"], row["goal"]) == ("static", "gelu", "")
    assert "| static gelu |" in table
    for name, module in (("gelu", "GELU"), ("silu", "SiLU"), ("identity", "Identity")):
        net = bench._torch_model("cpu", [6, 5, 4, 3], 2, "sgd", activation=name)[1].net
        assert [type(m).__name__ for m in net] == ["Linear", module, "Linear", module, "Linear"]
    with pytest.raises(gn.ConfigError, match="unknown activation 'mish'"):
        bench.run(configs=("small",), optimizers=("sgd",), activation="mish", log=print)


def test_without_pytorch_a_ratio_goal_cannot_be_told():
    row = _row()
    del row["torch_ms"], row["ratio"]
    assert bench.judge(row, False) == ("<= 0.6x torch", None)


def test_a_cpu_run_gives_rows_the_json_and_the_markdown_table(tmp_path, capsys):
    pytest.importorskip("torch")
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    assert bench.main(["--config", "small", "--optimizer", "sgd", "--optimizer", "adam",
                       "--rounds", "1", "--steps", "2", "--json", str(out_json),
                       "--markdown", str(out_md)]) == 0
    result = json.loads(out_json.read_text())
    assert result["backend"] == "numpy" and len(result["rows"]) == 2
    for row, optimizer in zip(result["rows"], ("sgd", "adam")):
        assert (row["config"], row["optimizer"], row["batch"], row["path"]) == (
            "small", optimizer, 128, "static")
        assert row["ratio"] == pytest.approx(row["gpunet_ms"] / row["torch_ms"])
        assert row["gpunet_samples_per_s"] == pytest.approx(128 / row["gpunet_ms"] * 1e3)
        assert row["goal"] == "<= 0.6x torch"
        assert row["meets_goal"] == (row["gpunet_ms"] <= 0.6 * row["torch_ms"])
        assert 0 < row["gemm_ms"]
        if row["meets_goal"]:
            assert row["why"] == ""
        elif row["gemm_ms"] > 0.6 * row["torch_ms"]:
            assert row["why"].startswith("the GEMMs alone take")
        else:
            assert row["why"].endswith(f"beyond the GEMMs ({row['gemm_ms']:.3f} ms)")
        assert "torch_graph_ms" not in row and "gpunet_pool_bytes" not in row  # GPU only
    table = out_md.read_text().splitlines()
    assert table[0].startswith(result["device"])
    body = [line for line in table if line.startswith("| small")]
    assert len(body) == 2
    cells = [c.strip() for c in body[1].strip("|").split("|")]
    assert cells[:3] == ["small B=128", "adam", "static"]
    assert float(cells[3]) == pytest.approx(result["rows"][1]["gpunet_ms"], abs=5e-4)
    assert cells[-2] == "<= 0.6x torch"
    row = result["rows"][1]
    assert cells[-1] == ("met" if row["meets_goal"] else f"MISSED: {row['why']}")
    assert "gpunet/torch" in capsys.readouterr().out


def test_the_markdown_table_keeps_the_columns_some_row_fills():
    gpu = _row("large", ms=47.0, ratio=0.99, torch_graph_error="RuntimeError: capture failed",
               gpunet_pool_bytes=3 << 20, torch_peak_bytes=5 << 20, gemm_ms=45.0)
    gpu["goal"], gpu["meets_goal"] = bench.judge(gpu, True)
    eager = _row("small", path="eager", ms=0.5, ratio=0.9, torch_graph_ms=0.081)
    result = {"device": "cuda:0 (card)", "machine": "m", "torch": "2.11", "torch_threads": 16,
              "numpy": "2.5", "rows": [gpu, eager]}
    lines = bench.markdown(result).splitlines()
    head = [c.strip() for c in lines[2].strip("|").split("|")]
    assert head == ["config", "optimizer", "path", "gpunet ms", "torch ms", "gpunet / torch",
                    "torch graph ms", "gpunet GEMMs ms", "gpunet MiB", "torch MiB", "goal", "met"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[4:]]
    assert rows[0][6:] == ["RuntimeError: capture failed", "45.000", "3", "5",
                           "<= 1.02x torch, memory <= torch", "met"]
    assert rows[1][5:] == ["0.90", "0.081", "", "", "", "", ""]  # eager: no goal, no verdict
    cpu = dict(result, rows=[_row()])
    assert "torch graph ms" not in bench.markdown(cpu) and "MiB" not in bench.markdown(cpu)
    missed = _row(ratio=0.8, gemm_ms=0.9)
    missed["goal"], missed["meets_goal"] = bench.judge(missed, False)
    missed["why"] = bench.why(missed, False)
    assert bench.markdown(dict(result, rows=[missed])).splitlines()[-1].endswith(
        "| MISSED: the GEMMs alone take 0.72x torch's step |")


@pytest.mark.parametrize("config, gpu, row, expected", [
    ("small", False, dict(ms=0.6, ratio=0.85, gemm_ms=0.5), "the GEMMs alone take 0.71x torch"),
    ("small", False, dict(ms=0.6, ratio=0.85, gemm_ms=0.2), "0.400 ms beyond the GEMMs"),
    ("small", True, dict(ms=0.12, ratio=0.2, gemm_ms=0.11), "the GEMMs alone take 0.110 ms"),
    ("medium", True, dict(ms=0.5, ratio=0.5, gemm_ms=0.3), "0.200 ms beyond the GEMMs"),
    ("large", True, dict(ms=47, ratio=1.0, gemm_ms=45, gpunet_pool_bytes=3 << 20,
                         torch_peak_bytes=2 << 20), "device memory 3 MiB against torch's 2 MiB"),
    ("small", False, dict(ms=0.4, ratio=0.5, gemm_ms=0.3), ""),  # met: nothing to explain
    ("small", False, dict(path="eager", ms=0.6, ratio=0.9, gemm_ms=0.5), ""),  # no goal
])
def test_a_missed_goal_says_what_its_figures_show(config, gpu, row, expected):
    r = _row(config, **row)
    r["goal"], r["meets_goal"] = bench.judge(r, gpu)
    got = bench.why(r, gpu)
    assert (expected in got) if expected else got == ""


def test_the_gemms_of_one_step_are_recorded_once_and_replayed_alone():
    backend = gn.get_backend("numpy")
    made = bench._gpunet_step(backend, [20, 16, 12, 3], 8, "sgd")
    assert made.path == "static" and "matmul" not in vars(backend)  # the recorder is gone
    with bench._recorded_gemms(backend) as calls:
        made.gemms()
    # forward: 3 layers; backward: dW for each, dJ/dh for the two upper ones
    shapes = [(c[0].shape, c[1].shape, c[2].shape, c[3], c[4]) for c in calls]
    assert shapes == [((8, 20), (16, 20), (8, 16), False, True),
                      ((8, 16), (12, 16), (8, 12), False, True),
                      ((8, 12), (3, 12), (8, 3), False, True),
                      ((8, 3), (8, 12), (3, 12), True, False),
                      ((8, 3), (3, 12), (8, 12), False, False),
                      ((8, 12), (8, 16), (12, 16), True, False),
                      ((8, 12), (12, 16), (8, 16), False, False),
                      ((8, 16), (8, 20), (16, 20), True, False)]


def test_a_captured_step_repeats_its_calls_and_only_the_first_step_is_kept():
    a, b, c, d = (object() for _ in range(4))
    body = [(a, b, c, False, True), (c, a, d, True, False)]
    assert bench._one_step(body + body) == body  # eager body, then the capture's
    assert bench._one_step(body) == body
    assert bench._one_step([(a, b, c, False, True), (a, b, c, False, False)]) == [
        (a, b, c, False, True), (a, b, c, False, False)]  # other flags: another call


@pytest.mark.parametrize("flag, value, says", [
    ("--rounds", "0", "expected a positive integer, got 0"),
    ("--rounds", "1.5", "expected a positive integer, got '1.5'"),
    ("--steps", "-1", "expected a positive integer, got -1"),
    ("--steps", "0", "expected a positive integer, got 0"),
    ("--threads", "-1", "expected a positive integer, got -1"),
    ("--threads", "0", "expected a positive integer, got 0"),
    ("--dropout", "1", "expected a number in [0, 1), got '1'"),
    ("--dropout", "-0.1", "expected a number in [0, 1), got '-0.1'"),
    ("--dropout", "nan", "expected a number in [0, 1), got 'nan'"),
])
def test_bad_counts_and_rates_are_usage_errors(flag, value, says, capsys):
    """Through ``gpunet bench`` as the command line runs it: exit status 2 and one error line
    naming the flag, before anything is timed (no traceback, no row)."""
    from gpunet.cli import main

    with pytest.raises(SystemExit) as e:
        main(["bench", flag, value, "--config", "small"])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == f"gpunet bench: error: argument {flag}: {says}"
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--json", "--markdown"])
def test_an_output_that_cannot_be_written_is_refused_before_timing(flag, tmp_path, capsys,
                                                                   monkeypatch):
    """A --json / --markdown path under a file: one error line, exit status 1, and nothing
    timed first (bench.run is never called)."""
    from gpunet.cli import main

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("timed before refusing"))
    (tmp_path / "file").write_text("")
    assert main(["bench", flag, str(tmp_path / "file" / "out"), "--config", "small"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gpunet: error: {flag} ") and \
        "cannot create folder" in err[0], err


@pytest.mark.parametrize("kwargs, says", [
    (dict(rounds=0), "rounds must be an integer >= 1, got 0"),
    (dict(steps=0), "steps must be an integer >= 1, got 0"),
    (dict(steps=-1), "steps must be an integer >= 1, got -1"),
    (dict(rounds=2.0), "rounds must be an integer >= 1, got 2.0"),
    (dict(torch_threads=-1), "torch_threads must be an integer >= 1, got -1"),
    (dict(dropout=1.0), r"dropout must be a number in \[0, 1\), got 1.0"),
])
def test_run_refuses_bad_counts_before_timing_anything(kwargs, says):
    """``run`` from Python: ConfigError with the message, and no row logged."""
    logged = []
    with pytest.raises(gn.ConfigError, match=f"^{says}$"):
        bench.run(configs=("small",), optimizers=("sgd",), log=logged.append, **kwargs)
    assert logged == []


def test_bench_picks_its_backend_as_train_does(monkeypatch):
    """No --backend: train's default, $GPUNET_BACKEND or else "auto" (cupy where a GPU works,
    so a GPU machine gets the GPU rows and the large config; it was "auto" whatever the
    variable said); --backend numpy still times the CPU there."""
    import gpunet.backends as backends

    asked, ran = [], []
    real = backends.get_backend

    def fake_get_backend(name=None, **kw):
        asked.append(backends.default_backend_name() if name is None else name)
        return real("numpy")

    monkeypatch.setattr(gn, "get_backend", fake_get_backend)
    monkeypatch.setattr(bench, "run", lambda name, configs, *a, **k: ran.append(
        (name, list(configs))) or {"rows": []})
    monkeypatch.delenv("GPUNET_BACKEND", raising=False)
    assert bench.main([]) == 0
    assert bench.main(["--backend", "numpy"]) == 0
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    assert bench.main([]) == 0
    assert asked == ["auto", "numpy", "numpy"]
    assert [configs for _, configs in ran] == [["small", "medium"]] * 3


def test_without_torch_the_bench_says_so_and_times_gpunet_alone(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    logged = []
    result = bench.run("numpy", configs=("small",), optimizers=("sgd",), rounds=1, steps=1,
                       log=logged.append)
    assert any("torch is not importable" in line for line in logged)
    (row,) = result["rows"]
    assert row["gpunet_ms"] > 0 and row.get("torch_ms") is None and row.get("ratio") is None


def test_a_static_kernel_threshold_row_has_no_goal_and_says_its_path():
    row = _row("small", path="graph", ms=0.05, static_kernel_min_size=262144)
    assert bench.judge(row, gpu=True) == ("", None)
    assert bench._path(row) == "graph kernels>=262144"
    assert bench.judge(_row("small", path="graph", ms=0.05), gpu=True) == ("<= 0.1 ms", True)


def test_the_table_head_names_cupy_cuda_and_torch_where_it_ran():
    base = {"device": "cuda:0 (NVIDIA H200)", "machine": "m", "numpy": "2.5",
            "torch_threads": 16, "rows": [_row("small", path="graph")]}
    gpu = dict(base, cupy="14.2.0", cuda="CUDA runtime 13.0, driver 13.0",
               torch="2.11.0+cu130", torch_cuda="13.0")
    assert bench.markdown(gpu).splitlines()[0] == (
        "cuda:0 (NVIDIA H200); m; cupy 14.2.0 (CUDA runtime 13.0, driver 13.0); "
        "torch 2.11.0+cu130 (CUDA 13.0), numpy 2.5")
    assert bench.markdown(dict(base, torch="2.13.0+cpu")).splitlines()[0] == (
        "cuda:0 (NVIDIA H200); m; torch 2.13.0+cpu (16 threads), numpy 2.5")
    assert bench.markdown(dict(base, torch=None)).splitlines()[0] == (
        "cuda:0 (NVIDIA H200); m; no torch, numpy 2.5")


_CUPY_OK, _CUPY_WHY = gn.cupy_status()


@pytest.mark.gpu
@pytest.mark.skipif(not _CUPY_OK, reason=f"cupy backend unavailable: {_CUPY_WHY}")
@pytest.mark.parametrize("kind", [
    dict(), dict(graph=False, torch_graph=False), dict(tf32=True), dict(dropout=0.2),
    dict(norm="layer"), dict(norm="batch"), dict(activation="gelu"),
], ids=["graph", "eager", "tf32", "dropout", "layer-norm", "batch-norm", "gelu"])
def test_every_kind_of_gpu_row_runs_to_its_table(monkeypatch, kind):
    """What scripts/gpu-check's bench stages run, at small sizes: each kind of row comes back
    with its memory, its goal or none, and a table; the backend's TF32 setting as before."""
    monkeypatch.setitem(bench.CONFIGS, "small", ([12, 8, 3], 8, False))
    monkeypatch.setitem(bench.CONFIGS, "large", ([16, 8, 8, 4], 16, True))
    backend, logged = gn.get_backend("cupy"), []
    result = bench.run("cupy", ("small", "large"), ("sgd", "adam"), rounds=1, steps=1,
                       warmup=1, log=logged.append, **kind)
    assert backend.tf32 is False  # (the shared backend: a TF32 row must not leave it on)
    assert result["backend"] == "cupy" and result["cupy"] and "cuda" in result
    assert [(r["config"], r["optimizer"]) for r in result["rows"]] == [
        ("small", "sgd"), ("small", "adam"), ("large", "sgd"), ("large", "adam")]
    has_torch = result["torch"] is not None
    if not has_torch:  # (the strict CuPy pass: torch without CUDA, said once)
        assert any("has no CUDA here" in line for line in logged)
    for row in result["rows"]:
        assert row["path"] == ("eager" if kind.get("graph") is False else "graph")
        assert isinstance(row["gpunet_pool_bytes"], int) and row["gpunet_pool_bytes"] > 0
        assert row["gpunet_ms"] > 0 and row["gemm_ms"] > 0
        assert ("torch_peak_bytes" in row) == ("ratio" in row) == has_torch
        assert bool(row["goal"]) == (not kind or kind == dict(graph=True))
    assert len(bench.markdown(result).splitlines()) == 4 + len(result["rows"])
