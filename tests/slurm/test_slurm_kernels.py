"""The pinned CPU kernels reach a Slurm job: a job whose environment asks torch for other kernels (a
profile's setup line, as a cluster's ``module load`` might) trains the same bytes as a local run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.kernels import is_x86
from pipeline.runners import slurm
from tests.slurm.conftest import LOCAL_PROFILE, checked, pipeline, wait_for_jobs

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(not is_x86(), reason="the levels pin x86-64 kernels")]

OUTER = "export ATEN_CPU_CAPABILITY=default MKL_CBWR=AUTO ONEDNN_MAX_CPU_ISA=SSE41"


def _victims(root: Path) -> dict[str, tuple[dict, dict]]:
    """Per train-victim task: its files' sha256 and the CPU its manifest records."""
    manifests = [json.loads(p.read_text()) for p in (root / "train-victim").glob("*/MANIFEST.json")]
    return {m["task"]: ({n: f["sha256"] for n, f in m["files"].items()}, m["runtime"]["cpu"]) for m in manifests}


def _submit_and_wait(root: Path, cwd: Path, profile: Path, *overrides: str) -> None:
    checked(
        pipeline(
            "--artifacts",
            str(root),
            "submit",
            "train-victim",
            "--config",
            "smoke",
            *overrides,
            "--profile",
            str(profile),
            cwd=cwd,
        )
    )
    (path,) = (root / slurm.RECORDS).glob("*.json")
    jobs = json.loads(path.read_text())["jobs"]
    states = wait_for_jobs([job["job_id"] for job in jobs], len({t["job_id"] for j in jobs for t in j["tasks"]}), 600)
    assert set(states.values()) == {"COMPLETED"}, states


def test_a_slurm_job_whose_environment_asks_for_other_kernels_trains_the_pinned_bytes(slurm_cluster, tmp_path):
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({**yaml.safe_load(LOCAL_PROFILE.read_text()), "setup": [OUTER]}))
    checked(pipeline("--artifacts", str(tmp_path / "local"), "run", "sample", "--config", "smoke", cwd=tmp_path))
    for name in ("slurm", "slurm-unpinned"):
        shutil.copytree(tmp_path / "local", tmp_path / name)  # the same samples; only the victims are submitted
    checked(pipeline("--artifacts", str(tmp_path / "local"), "run", "train-victim", "--config", "smoke", cwd=tmp_path))
    _submit_and_wait(tmp_path / "slurm", tmp_path, profile)
    _submit_and_wait(tmp_path / "slurm-unpinned", tmp_path, profile, "--set", "runtime.cpu_kernels=unpinned")
    local, pinned, unpinned = (_victims(tmp_path / name) for name in ("local", "slurm", "slurm-unpinned"))
    assert sorted(local) == ["aae_train", "test", "test/v1"] and pinned == local  # smoke: victim.noise_seeds [1]
    assert {(cpu["capability"], cpu["pinned"], cpu["mkl_branch"]) for _, cpu in pinned.values()} == {
        ("AVX2", "avx2", "COMPATIBLE")
    }
    for task, (files, cpu) in unpinned.items():  # the job's environment did ask for the baseline kernels
        assert (cpu["capability"], cpu["pinned"], cpu["mkl_branch"]) == ("DEFAULT", None, "AUTO")
        assert files["victim.pt"] != local[task][0]["victim.pt"]
