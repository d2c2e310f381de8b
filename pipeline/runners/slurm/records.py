"""Where the Slurm runner keeps its records: ``<artifact root>/.submissions/<run id>.json`` per
submission, submitit's pickles and logs in ``.submissions/<run id>/`` (only their owner may enter
either), and ``.submissions/lock``, held by ``submit`` and ``cancel``."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.runners.slurm.arrays import Ref

if TYPE_CHECKING:
    from pipeline.runners.slurm.submit import Submitted

RECORDS = ".submissions"
LOCK = "lock"  # in RECORDS: held by submit and cancel
LOCK_WAIT_S = 600.0  # how long a second submit waits for the first before it gives up


def silent(line: str) -> None:
    """An ``echo`` that says nothing."""


def run_folder(root: Path, run_id: str) -> Path:
    """``.submissions/<run id>/``, made with ``.submissions`` a directory only its owner may enter:
    they hold the job pickles, logs and records."""
    return private_dir(private_dir(root / RECORDS) / run_id)


def private_dir(path: Path) -> Path:
    """``path``, made if missing, a directory only its owner may enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_record(
    root: Path,
    run_id: str,
    folder: Path,
    jobs: Sequence[Submitted],
    config: Config,
    targets: Sequence[str],
    force: Sequence[str],
    commit: str,
    cancelled: Sequence[str],
    writes: Mapping[Ref, str],
) -> Path:
    record = {
        "run_id": run_id,
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config.name,
        "targets": list(targets),
        "force": list(force),
        "git_commit": commit or None,
        "cancelled": list(cancelled),
        "log_folder": str(folder),
        "jobs": [
            {
                "job_id": s.job_id,
                "step": s.job.step.name,
                "label": s.job.label,
                "dependency": s.dependency,
                "tasks": [
                    {
                        "id": p.task.id,
                        "key": p.key,
                        "job_id": element_id,
                        "writes": [writes[ref]] if (ref := (p.task.step, p.key)) in writes else [],
                    }
                    for element, element_id in zip(s.job.elements, s.element_ids)
                    for p in element
                ],
            }
            for s in jobs
        ],
    }
    path = root / RECORDS / f"{run_id}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


_JOB_ID = re.compile(r"\d+(?:_\d+)?")


def records(root: Path) -> list[dict[str, Any]]:
    """Every recorded submission under the artifact root, oldest first."""
    out = []
    for path in sorted((Path(root) / RECORDS).glob("*.json")):
        try:
            out.append(_checked(json.loads(path.read_text()), path))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PipelineError(f"submission record {path} is corrupt") from None
    return out


def _checked(record: Any, path: Path) -> dict[str, Any]:
    """A record with the fields that ``status``, ``submit`` and ``cancel`` read, naming only
    well-formed Slurm job ids (they are handed to scancel, squeue and sacct)."""
    try:
        jobs = record["jobs"]
        ids = [job["job_id"] for job in jobs] + [task["job_id"] for job in jobs for task in job["tasks"]]
        names = [record["run_id"], record["log_folder"], record.get("config", "")] + [
            v for job in jobs for task in job["tasks"] for v in (job["step"], task["key"], *task.get("writes", ()))
        ]
    except (KeyError, TypeError, IndexError):
        raise PipelineError(f"submission record {path} is corrupt (a job or task lacks a field)") from None
    bad = next((i for i in ids if not (isinstance(i, str) and _JOB_ID.fullmatch(i))), None)
    if bad is not None:
        raise PipelineError(f"submission record {path}: {bad!r} is not a Slurm job id")
    if not all(isinstance(name, str) for name in names):
        raise PipelineError(
            f"submission record {path} is corrupt (a run id, folder, config, step, key or path is not text)"
        )
    return record


@contextlib.contextmanager
def submission_lock(
    root: Path, command: str, echo: Callable[[str], None] = silent, wait_s: float = LOCK_WAIT_S
) -> Iterator[None]:
    """Hold ``.submissions/lock`` (``flock``, released however its holder ends) for the block. A second
    holder waits, after saying who holds it (``echo``), and gives up after ``wait_s`` naming the holder."""
    path = private_dir(Path(root) / RECORDS) / LOCK
    with open(path, "a+") as handle:
        if not _flock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "another pipeline command"
            echo(f"waiting for {holder} to finish (it holds {path})")
            deadline = time.monotonic() + wait_s
            while not _flock(handle):
                if time.monotonic() >= deadline:
                    raise PipelineError(
                        f"{path} is still held by {holder} after {wait_s:.0f} s: let it finish "
                        f"(or end it, if it hangs), then run `pipeline {command}` again"
                    )
                time.sleep(0.25)
        handle.seek(0)
        handle.truncate()
        handle.write(
            f"`pipeline {command}` (pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')})"
        )
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _flock(handle: Any) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
