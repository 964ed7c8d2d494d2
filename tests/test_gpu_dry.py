"""scripts/gpu-dry, in scripts/test's strict CuPy pass: scripts/gpu-check's stages with the most
GPU-side Python (gpunet bench's rows and memory, profile_step's device clock, bench_kernels'
GPU section, the summary's tables) run to their end on the stand-in, at small sizes, so that
a crash there shows before a lent GPU's minutes go on it. On a machine with a GPU,
scripts/gpu-check itself is the check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import STRICT_CUPY

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["info", "health", "bench", "profile", "bench-kern"]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not STRICT_CUPY, reason="the strict CuPy pass's (scripts/gpu-dry loads "
                                               "the stand-in; on a GPU, scripts/gpu-check)"),
    pytest.mark.skipif(sys.version_info < (3, 11), reason="gpu-check runs python -P (3.11+)"),
    pytest.mark.skipif(os.environ.get("GPUNET_GPU_DRY") == "1",
                       reason="inside scripts/gpu-dry's own gpu-tests stage"),
]


def test_the_gpu_stages_run_to_their_end_on_the_stand_in(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable,
               GPU_CHECK_ONLY=" ".join(STAGES))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-dry")], capture_output=True,
                          text=True, env=env, timeout=600, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "gpu-dry: every stage ran to its end on the stand-in" in out
    summary = out[out.index("=== summary"):].splitlines()[1:len(STAGES) + 1]
    assert [line.split()[0] for line in summary] == STAGES
    bench = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert [(r["config"], r["optimizer"]) for r in bench["rows"]] == [
        (c, o) for c in ("small", "medium", "large") for o in ("sgd", "adam")]
    assert bench["device"] == "cuda:0 (strict CuPy stand-in (no GPU))" and bench["cupy"]
    kernels = json.loads((tmp_path / "out" / "bench_kernels.json").read_text())
    assert kernels["cpu"] == {"skipped": "--skip-cpu"} and kernels["gpu"]["rows"]
    profile = json.loads((tmp_path / "out" / "profile.json").read_text())
    assert all(r["device_ms"] is not None for r in profile["rows"])
    assert "=== step profile" in out[out.index("| config"):]  # (the profile's table, summarised)
    assert "versions: gpunet " in out
