"""The Slurm runner: a plan as submitit job arrays with ``afterok`` dependencies, and their state.

``submit`` returns as soon as sbatch has accepted every job; it never waits for one. Each
submission is recorded in ``<artifact root>/.submissions/<run id>.json`` (its jobs with their
steps, task ids, artifact keys, Slurm ids and where their tasks write outside the store, and the
code version pinned for the run), and submitit keeps its pickles and logs (``<job id>_0_log.out/.err``,
array tasks ``<job id>_<index>_0_log.*``) in ``.submissions/<run id>/``; only their owner may enter
either. Artifacts decide what is done, Slurm what is queued: nothing else is kept.

Each command takes one ``snapshot``: Slurm first (one ``sacct`` and one ``squeue`` call for the jobs
of every recorded submission), the artifacts after, so a task that publishes meanwhile is done, never
taken for one that failed; a job Slurm has forgotten (purged after MinJobAge) is ``gone``, its tasks
judged by their artifacts. ``submit`` and ``cancel`` hold ``.submissions/lock`` from that snapshot to
the record they write, so two submissions never queue a task twice.

A task already queued is submitted again only when its queued job can never run: ``triage`` finds
the jobs that wait on an upstream task that failed, was cancelled or is about to be submitted
again, and ``submit`` cancels exactly those, leaving healthy running and pending jobs alone. Queued
jobs of another plan (keys this plan does not have: an older config or code version) are named;
``submit`` cancels those that would write where this plan writes (a step's ``exports``, such as
``results/<config>``).

Modules: ``submit`` (submit, dry run), ``states`` (snapshot, triage), ``cancel``, ``records`` (the
submission records and their lock), ``cluster`` (partitions, GRES, Slurm commands), ``arrays`` (tasks
as job arrays), ``profile`` (cluster profiles), ``job`` (what a job runs). This package exports the
runner's interface.
"""

from pipeline.runners.slurm.cancel import cancel
from pipeline.runners.slurm.cluster import check_root, node_local_warning
from pipeline.runners.slurm.records import LOCK, RECORDS, records, submission_lock
from pipeline.runners.slurm.states import (
    CANCELLED,
    DONE,
    FAILED,
    GONE,
    IN_QUEUE,
    LOG_TAIL_LINES,
    MISSING,
    NEVER,
    PENDING,
    RUNNING,
    UNKNOWN,
    Foreign,
    Snapshot,
    TaskState,
    Triage,
    slurm_states,
    snapshot,
    triage,
)
from pipeline.runners.slurm.submit import Submission, Submitted, dry_run, exports, submit

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "GONE",
    "IN_QUEUE",
    "LOCK",
    "LOG_TAIL_LINES",
    "MISSING",
    "NEVER",
    "PENDING",
    "RECORDS",
    "RUNNING",
    "UNKNOWN",
    "Foreign",
    "Snapshot",
    "Submission",
    "Submitted",
    "TaskState",
    "Triage",
    "cancel",
    "check_root",
    "dry_run",
    "exports",
    "node_local_warning",
    "records",
    "slurm_states",
    "snapshot",
    "submission_lock",
    "submit",
    "triage",
]
