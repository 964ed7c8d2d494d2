"""scripts/gpu-check, the one script a lent GPU machine runs, kept runnable where there is no
GPU: every stage starts (no usage error from a renamed flag, no missing file), the summary
names every stage, the budget skips stages instead of running past it, and what it leaves
in $OUT fits what the device tool returns (8 files at most). On a machine with a working GPU
the script itself is the check, so this test skips there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gpunet as gn

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check"
#: every stage but bench-kern, whose CPU half alone takes 20 s here
STAGES = ["info", "core", "health", "bench", "profile", "gpu-tests", "kernels", "bench-eager",
          "bench-cupyops", "bench-tf32", "distributed", "gradcheck", "digits", "bench-sklearn",
          "bench-dropout", "bench-norm", "bench-bnorm"]

pytestmark = [
    pytest.mark.skipif(gn.cupy_status()[0], reason="a GPU works here: run the script"),
    pytest.mark.skipif(sys.version_info < (3, 11), reason="the script runs python -P (3.11+)"),
]


def _run(tmp_path, only, budget=400):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable,
               GPU_CHECK_ONLY=" ".join(only), GPU_CHECK_BUDGET=str(budget))
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    return proc, proc.stdout + proc.stderr


def test_every_stage_starts_and_the_summary_names_it(tmp_path):
    proc, out = _run(tmp_path, STAGES)
    assert proc.returncode == 0, out
    summary = out[out.index("=== summary"):].splitlines()[1:]
    assert [line.split()[0] for line in summary] == STAGES
    for line in summary:
        rc = int(re.search(r"rc=(\d+)", line).group(1))
        assert rc in (0, 1), line  # 1: the GPU is missing, said in one line; 2 would be usage
    for bad in ("unrecognized arguments", "usage:", "No such file", "Traceback",
                "command not found: python", "ERROR collecting"):
        assert bad not in out, bad
    assert "cupy backend is unavailable" in out  # the GPU stages said why they stopped
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["gpu-check.log"] and len(files) <= 8


def test_a_spent_budget_skips_the_remaining_stages_and_still_summarises(tmp_path):
    proc, out = _run(tmp_path, ["info", "bench", "digits"], budget=5)  # under a stage's 20 s
    assert proc.returncode == 0, out
    summary = out[out.index("=== summary"):].splitlines()[1:]
    assert [line.split()[0] for line in summary] == ["info", "bench", "digits"]
    assert all("skipped:" in line and "of the 5s budget left" in line for line in summary)
    assert "=== info" not in out  # nothing started
