"""A training in flight shows its epoch, losses and ETA in ``pipeline status``; ``pipeline accounting``
reports what local tasks cost from their manifests (CPU time and peak RSS each task measured)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

EPOCHS = 400  # long enough to be caught running
SMOKE = ("--config", "smoke", "--set", "runtime.threads=1", "--set", "cae.variants={}")  # one CAE: smoke's main one


def _pipeline(cwd: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--artifacts", str(root), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"pipeline {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"no {what} after {seconds:.0f} s")


def test_status_shows_a_running_training_and_accounting_what_finished(tmp_path):
    root = tmp_path / "artifacts"
    _pipeline(tmp_path, root, "run", "sample", *SMOKE)
    long = (*SMOKE, "--set", f"cae.optim.epochs={EPOCHS}", "--set", "seeds=[0]")
    training = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "--artifacts", str(root), "run", "train-cae", *long],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        progress = _wait_for(lambda: next(root.glob("train-cae/.work-*/progress.json"), None), 300, "progress file")
        _wait_for(lambda: json.loads(progress.read_text())["epoch"] >= 2, 300, "second epoch")
        os.kill(training.pid, signal.SIGSTOP)  # caught in flight: status reads what the task wrote
        try:
            status = _pipeline(tmp_path, root, "status", *long).stdout
        finally:
            os.kill(training.pid, signal.SIGCONT)
        line = next(line for line in status.splitlines() if line.startswith("  main: epoch "))
        epoch = json.loads(progress.read_text())["epoch"]
        assert f"/{EPOCHS}  " in line and "total " in line and "kl " in line and " ETA " in line, line
        assert 2 <= int(line.split("epoch ")[1].split("/")[0]) <= epoch < EPOCHS
    finally:
        training.terminate()
        assert training.wait(timeout=120) != 0  # stopped by us, not finished
    _pipeline(tmp_path, root, "run", "train-cae", *SMOKE, "--set", "seeds=[0]")
    printed = _pipeline(
        tmp_path, root, "accounting", *SMOKE, "--set", "seeds=[0]", "--out", str(tmp_path / "cost.csv")
    ).stdout
    with open(tmp_path / "cost.csv") as handle:
        rows = {row["step"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"sample", "train-cae"}, printed
    for step, tasks in (("sample", 3), ("train-cae", 1)):
        row = rows[step]
        assert row["source"] == "local" and int(row["tasks"]) == tasks and int(row["jobs"]) == tasks
        assert 50 < float(row["peak_rss_mib"]) < 16384 and float(row["mem_mib"]) >= 1024  # MiB, a real process
        assert float(row["cpu_hours"]) > 0 and float(row["gpu_hours"]) == 0 and row["suggest_time"] >= "00:01:00"
        assert row["suggest_mem"].endswith(("M", "G"))
    assert "train-cae: {time: " in printed and f"wrote {tmp_path / 'cost.csv'}" in printed
