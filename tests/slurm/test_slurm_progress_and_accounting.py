"""On a real Slurm with slurmdbd: ``pipeline status`` shows a running job's training epoch and ETA from
the shared work directory, and ``pipeline accounting`` reads what the jobs cost from sacct, a requeued
run included."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from tests.slurm.conftest import LOCAL_PROFILE, checked, pipeline, wait_for_empty_queue, wait_until

pytestmark = pytest.mark.slurm

EPOCHS = 1500  # long enough to be caught running, and requeued, on a loaded machine (400 ended before the requeue)
# one CAE (smoke's `wide` variant would make the array two: `scontrol requeue` then fails on the one not started)
SMOKE = (
    "--config",
    "smoke",
    "--set",
    "seeds=[0]",
    "--set",
    "cae.variants={}",
    "--set",
    "runtime.threads=1",
    "--set",
    f"cae.optim.epochs={EPOCHS}",
)


def _jobs(root: Path) -> dict[str, str]:
    """Slurm job id by step, from the submission records."""
    return {
        job["step"]: job["job_id"]
        for path in sorted((root / ".submissions").glob("*.json"))
        for job in json.loads(path.read_text())["jobs"]
    }


def test_status_follows_a_slurm_training_and_accounting_reads_sacct(slurm_cluster, tmp_path):
    root = tmp_path / "artifacts"
    checked(
        pipeline("--artifacts", str(root), "submit", "train-cae", *SMOKE, "--profile", str(LOCAL_PROFILE), cwd=tmp_path)
    )

    def training_line() -> str | None:
        status = checked(pipeline("--artifacts", str(root), "status", *SMOKE, cwd=tmp_path)).stdout
        return next((line for line in status.splitlines() if line.startswith("  main: epoch ")), None)

    line = wait_until(training_line, 600, "the running training's progress in `pipeline status`", every=1.0)
    assert f"/{EPOCHS}  " in line and "total " in line and " ETA " in line and "(updated " in line, line
    jobs = _jobs(root)
    subprocess.run(["scontrol", "requeue", jobs["train-cae"]], check=True)  # it resumes from its checkpoint
    wait_for_empty_queue(list(jobs.values()), 600)

    printed = checked(
        pipeline("--artifacts", str(root), "accounting", *SMOKE, "--out", str(tmp_path / "cost.csv"), cwd=tmp_path)
    ).stdout
    with open(tmp_path / "cost.csv") as handle:
        rows = {row["step"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"sample", "train-cae"}, printed
    for step, gpu, requeues in (("sample", False, 0), ("train-cae", True, 1)):  # train-cae reads one sample task
        row = rows[step]
        assert row["source"] == "slurm" and row["tasks"] == row["jobs"] == "1", row
        assert int(row["requeues"]) == requeues and float(row["wall_s_max"]) > 0 and float(row["cpu_hours"]) > 0
        assert (float(row["gpu_hours"]) > 0) == gpu, row  # the gpu partition's fake V100, from AllocTRES
        assert 20 < float(row["peak_rss_mib"]) < float(row["mem_mib"]) == 3 * 1024, row  # MaxRSS < the profile's 3G
    assert '  train-cae: {time: "' in printed and "mem: " in printed and "# from slurm" in printed
