"""A throw-away single-node Slurm cluster (``slurm/testcluster.sh``) shared by the whole session.

Skipped only where ``slurmctld`` is not installed; wherever it is (CI installs it), a cluster
that does not start is an error. Every pipeline command of the session records the same code
version (``PIPELINE_GIT_COMMIT``, pinned once here), so people committing to the checkout while
the tier runs do not show up as differences between a local and a Slurm run; the provenance test
unpins it for its own commands. Faults injected here join the fault tier's summary table.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from pipeline.execute import COMMIT_VARIABLE, checkout_commit
from tests.faults._summary import fault_log, pytest_runtest_makereport, pytest_terminal_summary  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
TESTCLUSTER = REPO / "slurm" / "testcluster.sh"
LOCAL_PROFILE = REPO / "slurm" / "local.yaml"
PIPELINE = [sys.executable, "-m", "pipeline.cli"]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """Start the test cluster in a short temporary directory, export its SLURM_CONF, stop it after."""
    sbin = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    if shutil.which("slurmctld", path=sbin) is None:
        pytest.skip("slurmctld is not installed (apt-get install slurm-wlm munge slurmdbd mariadb-server)")
    directory = Path(tempfile.mkdtemp(prefix="tc", dir="/tmp"))
    saved = {name: os.environ.get(name) for name in ("SLURM_CONF", COMMIT_VARIABLE)}
    try:
        started = subprocess.run(
            [str(TESTCLUSTER), "start", str(directory)], capture_output=True, text=True, timeout=300
        )
        if started.returncode != 0:
            pytest.fail(f"slurm/testcluster.sh start failed:\n{started.stderr}")
        os.environ["SLURM_CONF"] = str(directory / "slurm.conf")
        os.environ[COMMIT_VARIABLE] = checkout_commit() or ""
        yield directory
    finally:
        subprocess.run([str(TESTCLUSTER), "stop", str(directory)], capture_output=True, timeout=120)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(directory, ignore_errors=True)


def cluster_command(command: str, directory: Path) -> None:
    """``slurm/testcluster.sh COMMAND DIR`` (e.g. ``kill-slurmd``), which must succeed."""
    done = subprocess.run([str(TESTCLUSTER), command, str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"testcluster.sh {command}: {done.stderr}"


def pipeline(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``pipeline ARGS`` in a subprocess (the environment carries SLURM_CONF)."""
    return subprocess.run(
        [*PIPELINE, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env or os.environ.copy()
    )


def checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def sacct(job_ids: Sequence[str]) -> dict[str, str]:
    """State of every job and array task of these jobs, by ``<job>`` or ``<job>_<index>``."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split("|")[0]: line.split("|")[1].split(" ")[0] for line in out.splitlines()}


def in_queue(job_ids: Sequence[str], reasons: bool = False) -> dict[str, str]:
    """``squeue``'s state (with ``reasons``: ``STATE|reason``) of the jobs and array tasks of these
    jobs that are still in the queue."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(job_ids)], capture_output=True, text=True
    ).stdout
    rows = [line.split("|", 1) for line in out.splitlines()]
    return {job: rest if reasons else rest.split("|")[0] for job, rest in rows}


def wait_until(condition: Callable[[], object], seconds: float, what: str, every: float = 1.0):
    """Poll ``condition`` until it returns something true; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")


def wait_for_jobs(job_ids: Sequence[str], tasks: int, seconds: float) -> dict[str, str]:
    """Wait until sacct reports ``tasks`` jobs/array tasks of these jobs, all in a final state."""

    def finished():
        states = sacct(job_ids)
        return states if len(states) == tasks and set(states.values()) <= FINAL else None

    return wait_until(finished, seconds, f"jobs {', '.join(job_ids)} to finish", every=2.0)


def wait_for_empty_queue(job_ids: Sequence[str], seconds: float, stuck_ok: bool = False) -> dict[str, str]:
    """Wait until none of these jobs is in the queue any more and sacct has a final state for each
    of their tasks (requeued jobs go back to pending: the queue, not sacct, says when they are over).
    With ``stuck_ok``, jobs left pending forever (their dependency can never be satisfied) count as over."""

    def settled():
        left = set(in_queue(job_ids, reasons=True).values())
        if left - ({"PENDING|DependencyNeverSatisfied"} if stuck_ok else set()):
            return None
        states = sacct(job_ids)
        return states if states and set(states.values()) <= FINAL | ({"PENDING"} if left else set()) else None

    return wait_until(settled, seconds, f"jobs {', '.join(job_ids)} to leave the queue", every=2.0)
