"""scripts/profile_step.py's reading of a profile. Its GPU branch runs only on a lent GPU, so
the part that turns the profiler's device events into kernels per step, busy time and a
verdict is checked here on events shaped like torch.profiler's; a CPU profile runs for real.
Nothing here times anything."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prof():
    spec = importlib.util.spec_from_file_location("profile_step",
                                                  ROOT / "scripts" / "profile_step.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


class _Torch:
    """The two attributes of torch that _kernel_table reads."""

    class autograd:
        class DeviceType:
            CPU, CUDA = "cpu", "cuda"


def _event(name, start, end, device="cuda", kind="kernel", annotation=False):
    return types.SimpleNamespace(name=name, device_type=device, activity_type=kind,
                                 is_user_annotation=annotation,
                                 time_range=types.SimpleNamespace(start=start, end=end))


def _profile(events):
    return types.SimpleNamespace(events=lambda: events)


def test_device_work_is_summed_per_kernel_and_spans_are_left_out(prof):
    events = [
        _event("void gemm_kernel<float>(int, float const*)", 0, 30),
        _event("void gemm_kernel<float>(int, float const*)", 40, 70),
        _event("gpunet_sgd", 70, 75),
        _event("Memcpy DtoD (Device -> Device)", 80, 82, kind="gpu_memcpy"),
        _event("ProfilerStep#1", 0, 100, annotation=True),     # a range over kernels
        _event("cudaDeviceSynchronize", 0, 500, kind="cuda_runtime", device="cpu"),
        _event("Synchronize wait", 100, 500, kind="cuda_sync"),  # waiting, not work
    ]
    table = prof._kernel_table(_profile(events), _Torch)
    assert table == {"void gemm_kernel<float>(int, float const*)": [2, 60.0],
                     "gpunet_sgd": [1, 5.0], "Memcpy DtoD (Device -> Device)": [1, 2.0]}
    row = {}
    prof._put_kernels(row, table, n=2)  # two steps were profiled
    assert row["busy_ms"] == pytest.approx(67.0 / 2 / 1e3)
    assert row["kernels_per_step"] == 2.0
    top = row["top_kernels"][0]
    assert (top["per_step"], top["us_per_step"]) == (1.0, 30.0)
    assert top["share"] == pytest.approx(60 / 67)


@pytest.mark.parametrize("busy, wall, expected", [
    (0.030, 0.100, "host/launch-bound: the device idles 70% of the step"),
    (0.095, 0.100, "device-bound (95% busy): top kernel gemm_kernel<float> takes 90%"),
    (None, 0.100, "no kernel profile"),
])
def test_the_verdict_says_host_or_device_bound(prof, busy, wall, expected):
    row = {"busy_ms": busy, "wall_ms": wall, "host_top": [],
           "top_kernels": [{"name": "void gemm_kernel<float>(int, float const*)",
                            "share": 0.9}]}
    assert prof._verdict(row, gpu=True).startswith(expected)


def test_kernel_names_lose_their_signature_but_not_their_words(prof):
    assert prof._short("void gemm_kernel<float>(int, float const*)") == "gemm_kernel<float>"
    assert prof._short("Memcpy DtoD (Device -> Device)") == "Memcpy DtoD (Device -> Device)"
    assert len(prof._short("k" * 80)) == prof.NAME_WIDTH


def test_a_cpu_profile_names_the_functions_a_step_spends_its_time_in(prof, tmp_path):
    path = tmp_path / "p.json"
    assert prof.main(["--config", "small", "--steps", "3", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    gpunet_rows = [r for r in result["rows"] if r["lib"] == "gpunet"]
    assert [r["path"] for r in gpunet_rows] == ["static", "eager"]
    for r in gpunet_rows:
        assert r["host_top"] and r["host_source"] == "cProfile tottime"
        assert sum(h["share"] for h in r["host_top"]) <= 1 + 1e-9
        assert r["verdict"].startswith("top ")


@pytest.mark.gpu
def test_a_gpu_profile_times_each_row_on_the_device_clock(prof, monkeypatch):
    """scripts/gpu-check's profile stage at small sizes: gpunet's graph and eager rows (and
    PyTorch's where it has CUDA) with wall and device times, a verdict and the table."""
    import gpunet as gn
    from gpunet import bench

    usable, why = gn.cupy_status()
    if not usable:
        pytest.skip(f"cupy backend unavailable: {why}")
    monkeypatch.setitem(bench.CONFIGS, "small", ([12, 8, 3], 8, False))
    result = prof.run("cupy", ["small"], "sgd", steps=2)
    paths = [(r["lib"], r["path"]) for r in result["rows"]]
    assert paths[:2] == [("gpunet", "graph"), ("gpunet", "eager")]
    for r in result["rows"]:
        assert r["wall_ms"] > 0 and isinstance(r["device_ms"], float) and r["verdict"]
    table = prof.format_table(result["rows"]).splitlines()
    assert len(table) == 1 + len(result["rows"])
