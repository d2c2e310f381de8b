"""Run one planned task, the same way on a laptop and inside a Slurm job."""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pipeline
from pipeline.config import Config
from pipeline.dag import Planned
from pipeline.errors import PipelineError
from pipeline.kernels import ensure as ensure_cpu_kernels
from pipeline.store import Artifact, Store
from pipeline.usage import Meter


@dataclass
class Context:
    """What a step's ``run`` gets: its inputs, a directory to write into, and runtime settings."""

    config: Config
    key: str
    out: Path  # temporary directory, published atomically when run() returns
    work: Path  # scratch that survives a killed task (checkpoints)
    inputs: dict[str, Artifact]
    summary: dict[str, Any] = field(default_factory=dict)  # goes into MANIFEST.json

    def input(self, name: str) -> Artifact:
        return self.inputs[name]

    @property
    def progress(self) -> bool:
        """Show progress bars: asked for, and someone is watching (stderr is a terminal)."""
        return self.config.runtime.progress and sys.stderr.isatty()


def execute(planned: Planned, store: Store, config: Config) -> str:
    """Build one artifact unless it exists; returns ``"ran"`` or ``"skipped"``. The CPU kernels of
    ``runtime.cpu_kernels`` are pinned first, whatever runs this (``kernels.ensure``)."""
    from pipeline.device import describe_runtime  # imports torch: not at planning time

    ensure_cpu_kernels(config.runtime.cpu_kernels)
    step, task = planned.step, planned.task
    with store.lock(step.name, planned.key):
        if store.is_complete(step.name, planned.key) and not planned.forced:
            return "skipped"
        # inputs are read in full anyway: hashing them too catches corruption of the same size
        inputs = {name: store.open(s, k, full=True) for name, (s, k) in planned.inputs.items()}
        reset_rngs()
        meter = Meter()
        started = time.time()
        work = store.workdir(step.name, planned.key)
        with store.staging(step.name, planned.key) as tmp, _failure_cleanup(planned, work, tmp):
            ctx = Context(config, planned.key, tmp, work, inputs)
            step.run(ctx, task.record)
            finished = time.time()
            store.publish(
                tmp,
                step.name,
                planned.key,
                {
                    "task": task.id,
                    "version": step.version,
                    "config": task.config,
                    "resolved_config": config.to_dict(),
                    "inputs": {name: {"step": s, "key": k} for name, (s, k) in planned.inputs.items()},
                    "summary": ctx.summary,
                    "code": {"package_version": pipeline.__version__, "git_commit": git_commit()},
                    "host": socket.gethostname(),
                    "python": platform.python_version(),
                    "runtime": describe_runtime(config.runtime),
                    "slurm": slurm_ids(),
                    "started": _iso(started),
                    "finished": _iso(finished),
                    "seconds": round(finished - started, 3),
                    "usage": meter.read(),
                },
            )
    return "ran"


@contextlib.contextmanager
def _failure_cleanup(planned: Planned, work: Path, tmp: Path) -> Iterator[None]:
    """On failure: drop the task's scratch directory if it holds nothing (checkpoints are kept), and
    report a full file system as one clear line instead of the writer's own error (h5py and torch
    raise RuntimeErrors that bury the errno)."""
    try:
        yield
    except Exception as err:
        with contextlib.suppress(OSError):
            work.rmdir()  # only succeeds when empty
        if not isinstance(err, PipelineError):
            full = _disk_full(err, tmp)
            if full:
                raise PipelineError(
                    f"{planned.label}: {full}; nothing was published: free some space and run again"
                ) from err
        raise


def _disk_full(err: BaseException, path: Path) -> str | None:
    """Why ``err`` looks like a full disk or quota while writing under ``path``, or None."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"cannot write {err.filename or f'under {path.parent}'}: {os.strerror(err.errno)}"
    try:
        fs = os.statvfs(path)
    except OSError:
        return None
    free = (fs.f_bfree if os.geteuid() == 0 else fs.f_bavail) * fs.f_frsize
    if free < _FULL_BELOW:
        return f"the file system holding {path.parent} is full ({free // 1024} KiB left; {type(err).__name__})"
    return None


_FULL_BELOW = 1 << 20  # bytes: a writer failing with less than this left is taken to have hit a full disk


def reset_rngs(seed: int = 0) -> None:
    """Start every task from the same random state, whatever ran before it in this process (torch
    seeds each new process at random): a task rerun alone, or after a crash, then rebuilds the same
    bytes as in an undisturbed run (e.g. weights initialised before a step seeds its own RNGs)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def slurm_ids() -> dict[str, str]:
    """The Slurm job, array and restart ids of this process, if it runs inside a job."""
    names = {
        "job_id": "SLURM_JOB_ID",
        "array_job_id": "SLURM_ARRAY_JOB_ID",
        "array_task_id": "SLURM_ARRAY_TASK_ID",
        "restart_count": "SLURM_RESTART_COUNT",
    }
    return {key: os.environ[var] for key, var in names.items() if var in os.environ}


COMMIT_VARIABLE = "PIPELINE_GIT_COMMIT"


def pin_git_commit(commit: str | None = None) -> str:
    """Fix the code version that every task of this command records: ``commit`` if given (a Slurm
    job passes the one pinned at submit), else the one already pinned in the environment, else the
    checkout's commit, read now (``""`` outside a git checkout).

    The value lives in the environment variable ``PIPELINE_GIT_COMMIT``, so everything the command
    starts inherits it: worker processes, and Slurm jobs (sbatch exports the environment; the Slurm
    runner also carries the value in each job's pickled call). ``Session.plan`` pins it once per
    command, so tasks that run later, elsewhere, or after the checkout changed record the commit
    (and dirty flag) of the moment the run was planned, not of whenever they happen to run.
    """
    if commit is not None:
        os.environ[COMMIT_VARIABLE] = commit
    return os.environ.setdefault(COMMIT_VARIABLE, checkout_commit() or "")


PLANNED_VARIABLE = "PIPELINE_PLANNED_AT"


def planned_at() -> float | None:
    """When the run of this process's tasks was submitted (seconds since the epoch), which the Slurm
    runner pins in ``$PIPELINE_PLANNED_AT`` inside each job; None in a local run (planned now)."""
    try:
        return float(os.environ[PLANNED_VARIABLE])
    except (KeyError, ValueError):
        return None


def git_commit() -> str | None:
    """The code version a manifest records: the pinned one (see ``pin_git_commit``), else the checkout's."""
    pinned = os.environ.get(COMMIT_VARIABLE)
    return checkout_commit() if pinned is None else pinned or None


@cache
def checkout_commit() -> str | None:
    """The commit of the checkout the package runs from (with ``+dirty``), or None."""
    here = Path(pipeline.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit
