"""Run one planned task, the same way on a laptop and inside a Slurm job."""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import pipeline
from pipeline.config import Config
from pipeline.dag import Planned
from pipeline.store import Artifact, Store

log = logging.getLogger("pipeline")


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

    def inputs_named(self, prefix: str) -> list[Artifact]:
        """Inputs whose names start with ``prefix``, in name order (e.g. all shards)."""
        return [self.inputs[name] for name in sorted(self.inputs) if name.startswith(prefix)]

    @property
    def progress(self) -> bool:
        return self.config.runtime.progress


def execute(planned: Planned, store: Store, config: Config) -> str:
    """Build one artifact unless it exists; returns ``"ran"`` or ``"skipped"``."""
    step, task = planned.step, planned.task
    with store.lock(step.name, planned.key):
        if store.is_complete(step.name, planned.key) and not planned.forced:
            return "skipped"
        # inputs are read in full anyway: hashing them too catches corruption of the same size
        inputs = {name: store.open(s, k, full=True) for name, (s, k) in planned.inputs.items()}
        started = time.time()
        with store.staging(step.name, planned.key) as tmp:
            ctx = Context(config, planned.key, tmp, store.workdir(step.name, planned.key), inputs)
            step.run(ctx, task)
            finished = time.time()
            store.publish(tmp, step.name, planned.key, {
                "task": task.id,
                "version": step.version,
                "config": task.config,
                "resolved_config": config.to_dict(),
                "inputs": {name: {"step": s, "key": k} for name, (s, k) in planned.inputs.items()},
                "summary": ctx.summary,
                "code": {"package_version": pipeline.__version__, "git_commit": git_commit()},
                "host": socket.gethostname(),
                "python": platform.python_version(),
                "slurm": slurm_ids(),
                "started": _iso(started),
                "finished": _iso(finished),
                "seconds": round(finished - started, 3),
            })
    return "ran"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def slurm_ids() -> dict[str, str]:
    """The Slurm job, array and restart ids of this process, if it runs inside a job."""
    names = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID",
             "array_task_id": "SLURM_ARRAY_TASK_ID", "restart_count": "SLURM_RESTART_COUNT"}
    return {key: os.environ[var] for key, var in names.items() if var in os.environ}


@cache
def git_commit() -> str | None:
    """The commit of the checkout the package runs from (with ``+dirty``), or None."""
    here = Path(pipeline.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit

