"""Training under an outer environment that asks torch for other CPU kernels builds the pinned bytes, in
the ``pipeline`` process and in ``-j`` workers; unpinned, the same environment changes them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.kernels import VARIABLES, is_x86

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not is_x86(), reason="the levels pin x86-64 kernels")]

OUTER = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "SSE41"}


def _pipeline(cwd: Path, outer: dict[str, str], *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES} | outer  # this process pinned its own
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--artifacts", str(cwd / "artifacts"), *args, "--config", "smoke"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


def _victims(sampled: Path, cwd: Path, outer: dict[str, str], *args: str) -> dict[str, tuple[dict, dict]]:
    """Train smoke's victims (from the same samples) in ``cwd``; per task, its files' sha256 and its CPU."""
    shutil.copytree(sampled, cwd)
    _pipeline(cwd, outer, "run", "train-victim", *args)
    manifests = [json.loads(p.read_text()) for p in (cwd / "artifacts" / "train-victim").glob("*/MANIFEST.json")]
    return {m["task"]: ({n: f["sha256"] for n, f in m["files"].items()}, m["runtime"]["cpu"]) for m in manifests}


def test_training_under_an_outer_default_capability_gets_the_pinned_bytes(tmp_path):
    sampled = tmp_path / "sampled"
    sampled.mkdir()
    _pipeline(sampled, {}, "run", "sample")
    pinned = _victims(sampled, tmp_path / "pinned", {})
    assert sorted(pinned) == ["aae_train", "test", "test/v1"]  # smoke: victim.noise_seeds [1]
    assert {(cpu["capability"], cpu["pinned"], cpu["mkl_branch"]) for _, cpu in pinned.values()} == {
        ("AVX2", "avx2", "COMPATIBLE")
    }
    assert _victims(sampled, tmp_path / "outer", OUTER) == pinned
    assert _victims(sampled, tmp_path / "outer-j2", OUTER, "-j", "2") == pinned  # in two worker processes
    unpinned = _victims(sampled, tmp_path / "unpinned", OUTER, "--set", "runtime.cpu_kernels=unpinned")
    for task, (files, cpu) in unpinned.items():
        assert (cpu["capability"], cpu["pinned"]) == ("DEFAULT", None)
        assert files["victim.pt"] != pinned[task][0]["victim.pt"]  # what the outer environment asks changes bytes
