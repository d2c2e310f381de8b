"""``pipeline run -j 2`` on the smoke config builds the same bytes as ``-j 1`` (one torch thread per
task in both: thread counts change float results)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

FINISHED = re.compile(r"^(\S+\[\S+\]) -> (\S+/\w+) \(\d+\.\d s\)$", re.M)


def _run_all(cwd: Path, jobs: int) -> str:
    cwd.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "--artifacts",
            str(cwd / "artifacts"),
            "run",
            "all",
            "--config",
            "smoke",
            "-j",
            str(jobs),
            "--set",
            "runtime.threads=1",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, f"-j {jobs}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout


def _digests(root: Path) -> dict[str, str]:
    """``step/key/file`` -> sha256 for every file every manifest lists, and every file under results/."""
    out = {}
    for manifest in (root / "artifacts").glob("*/*/MANIFEST.json"):
        for name in json.loads(manifest.read_text())["files"]:
            out[f"{manifest.parent.relative_to(root)}/{name}"] = hashlib.sha256(
                (manifest.parent / name).read_bytes()
            ).hexdigest()
    for path in (root / "results").rglob("*"):
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_j2_builds_the_same_bytes_as_j1(tmp_path):
    serial, parallel = _run_all(tmp_path / "j1", 1), _run_all(tmp_path / "j2", 2)
    assert sorted(FINISHED.findall(parallel)) == sorted(FINISHED.findall(serial))  # every task, once
    assert len(FINISHED.findall(parallel)) > 100
    one, two = _digests(tmp_path / "j1"), _digests(tmp_path / "j2")
    assert len(one) > 300 and any(k.startswith("results/") for k in one)
    assert sorted(k for k in one if one[k] != two.get(k)) == [] and one.keys() == two.keys()
