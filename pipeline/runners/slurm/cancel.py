"""Cancelling recorded runs: ``pipeline cancel``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.runners.slurm.cluster import slurm_command
from pipeline.runners.slurm.records import RECORDS, records, silent, submission_lock
from pipeline.runners.slurm.states import LIVE, squeue


def cancel(
    store_root: Path, run_id: str | None = None, echo: Callable[[str], None] = silent
) -> tuple[list[str], list[str]]:
    """Cancel the jobs of one recorded run, or by default of every recorded run that still has jobs in
    the queue (one squeue, one scancel); returns the runs and the job ids cancelled."""
    with submission_lock(store_root, "cancel", echo):
        runs = {record["run_id"]: record for record in records(store_root)}
        if not runs:
            raise PipelineError(f"no submissions recorded under {Path(store_root) / RECORDS}")
        if run_id is not None and run_id not in runs:
            raise PipelineError(f"no submission {run_id!r} (recorded: {', '.join(runs)})")
        jobs = {job["job_id"]: rid for rid, record in runs.items() for job in record["jobs"] if run_id in (None, rid)}
        if run_id is None:
            queued = (
                {
                    line.split("|")[0].split("_")[0]
                    for line in squeue(jobs, strict=True) or []
                    if line.split("|")[1] in LIVE | {"COMPLETING"}
                }
                if jobs
                else set()
            )
            jobs = {job: rid for job, rid in jobs.items() if job in queued}
        if jobs:
            slurm_command(["scancel", *jobs])
    return sorted(set(jobs.values())), list(jobs)
