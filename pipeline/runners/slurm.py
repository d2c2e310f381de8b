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
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.dag import Plan
from pipeline.errors import PipelineError
from pipeline.execute import pin_git_commit
from pipeline.runners.arrays import ArrayJob, Ref, array_jobs
from pipeline.runners.parallel import task_log
from pipeline.runners.profile import JobSettings, Profile
from pipeline.store import Store

RECORDS = ".submissions"
LOCK = "lock"  # in RECORDS: held by submit and cancel
LOCK_WAIT_S = 600.0  # how long a second submit waits for the first before it gives up
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm")
LOG_TAIL_LINES = 12


def _silent(line: str) -> None:
    pass


@dataclass
class Submitted:
    """One job as submitted, or in a dry run as it would be."""

    job: ArrayJob
    settings: JobSettings
    job_id: str  # Slurm's id; ``JOB<n>`` in a dry run
    dependency: str | None
    element_ids: list[str]  # Slurm's id of each element (``<job id>_<index>`` in an array)
    script: Path | None = None  # dry run: the sbatch script written


@dataclass
class Submission:
    """What ``submit`` or ``dry_run`` did."""

    run_id: str
    folder: Path  # submitit's files and logs; in a dry run, the sbatch scripts
    jobs: list[Submitted]
    plan: Plan  # as submitted: artifacts read after Slurm's answer
    queued: dict[Ref, str] = field(default_factory=dict)  # pending tasks a healthy queued job builds -> its id
    cancelled: dict[str, list[Ref]] = field(default_factory=dict)  # stale jobs cancelled -> the tasks they held
    superseded: list[Foreign] = field(default_factory=list)  # jobs of another plan cancelled: they wrote here
    foreign: list[Foreign] = field(default_factory=list)  # jobs of another plan left in the queue
    record: Path | None = None


def check_root(root: Path) -> None:
    """The artifact root goes into every job script (``#SBATCH --output``, the command line): refuse
    what would break a line or what Slurm expands in file names (``%j``, ``%x``, ...)."""
    text = str(root)
    bad = next((c for c in text if c == "%" or not c.isprintable()), None)
    if bad is not None:
        raise PipelineError(
            f"artifact root {text!r} contains {bad!r}, which Slurm job scripts cannot carry "
            f"(no control characters or '%'): choose another --artifacts"
        )


def node_local_warning(root: Path) -> str | None:
    """A warning when the artifact root looks node-local, so compute nodes may not see it."""
    resolved = Path(root).resolve()
    for local in NODE_LOCAL:
        if resolved.is_relative_to(local):
            return (
                f"artifact root {resolved} is under {local}, which is usually local to one machine: "
                f"compute nodes may not see it"
            )
    return None


def submit(
    plan: Plan,
    store: Store,
    config: Config,
    profile: Profile,
    targets: Sequence[str],
    force: Sequence[str] = (),
    package: str = "jobs",
    echo: Callable[[str], None] = _silent,
) -> Submission:
    """Submit the plan's pending tasks, except those a healthy queued job will build; cancel the
    queued jobs that can never run (and submit their tasks again) and the queued jobs of another plan
    that would write where this one writes; record the submission. ``echo`` hears of a wait for the
    submission lock."""
    import submitit
    from submitit.core.utils import FailedJobError

    from pipeline.runners.slurm_job import RUNNERS

    check_root(store.root)
    if shutil.which("sbatch") is None:
        raise PipelineError(
            "sbatch is not on PATH, so this machine cannot submit to Slurm: use --dry-run to "
            "see the jobs and their scripts, or `pipeline run` to run the tasks here"
        )
    settings = _settings(plan, profile)
    check_cluster(settings.values())
    with submission_lock(store.root, "submit", echo):
        planned = time.time()
        snap = snapshot(store.root, plan, strict=True)
        plan = snap.plan
        found = triage(plan, snap.states)
        writes = exports(plan)
        cancelled, superseded = _doomed(snap, found, writes.values())
        if cancelled or superseded:
            _run(["scancel", *cancelled, *(job.job_id for job in superseded)])
        jobs = array_jobs(plan, found.queued, _packs(settings))
        run_id = _new_run_id()
        folder = _run_folder(store.root, run_id) if jobs else store.root / RECORDS / run_id
        resolved, commit = config.to_dict(), pin_git_commit()
        done: list[Submitted] = []
        ids: dict[int, str] = {}
        try:
            for job in jobs:
                job_settings = settings[job.step.name]
                dependency = job.dependency(ids)
                # A fresh executor per job: update_parameters(x=None) would not clear an earlier value.
                executor = submitit.SlurmExecutor(folder, max_num_timeout=job_settings.get("max_num_timeout"))
                executor.update_parameters(**_parameters(job, job_settings, dependency))
                runner = RUNNERS[job.step.checkpointable](
                    str(store.root), resolved, tuple(targets), tuple(force), job.step.name, package, commit, planned
                )
                handles = executor.map_array(runner, *_arguments(job))
                ids[job.number] = handles[0].job_id.split("_")[0]
                done.append(Submitted(job, job_settings, ids[job.number], dependency, [h.job_id for h in handles]))
        except FailedJobError as err:
            message = " ".join(str(err).split()) or "no message"
            raise PipelineError(
                f"sbatch refused job #{job.number} ({job.label}): {message}"
                + (
                    f"; the {len(done)} job(s) before it are queued as run {run_id} "
                    f"(`pipeline cancel {run_id}` removes them)"
                    if done
                    else ""
                )
            ) from None
        finally:
            record = (
                _write_record(
                    store.root,
                    run_id,
                    folder,
                    done,
                    config,
                    targets,
                    force,
                    commit,
                    [*cancelled, *(job.job_id for job in superseded)],
                    writes,
                )
                if done
                else None
            )
    foreign = [job for job in snap.foreign if job not in superseded]
    return Submission(run_id, folder, done, plan, found.queued, cancelled, superseded, foreign, record)


def _doomed(snap: Snapshot, found: Triage, writes: Iterable[str]) -> tuple[dict[str, list[Ref]], list[Foreign]]:
    """The queued jobs ``submit`` cancels: those that can never run (with the tasks they hold), and
    those of another plan that would write where this plan writes (``writes``)."""
    stale: dict[str, list[Ref]] = {}
    for ref in sorted(found.stale, key=lambda ref: snap.states[ref].job_id):
        if snap.states[ref].queued:
            stale.setdefault(snap.states[ref].job_id, []).append(ref)
    writes = list(writes)
    return stale, [job for job in snap.foreign if job.clashes(writes)]


def exports(plan: Plan) -> dict[Ref, str]:
    """Where each task of the plan writes outside the artifact store (its step's ``exports``), as an
    absolute path: a job runs in the directory it was submitted from."""
    return {
        (p.task.step, p.key): os.path.abspath(p.step.exports(p.task.config))
        for p in plan.tasks
        if p.step.exports is not None
    }


def dry_run(plan: Plan, store: Store, profile: Profile) -> Submission:
    """Write the sbatch script of every job the plan would submit; runs no Slurm command.

    Job ids are placeholders ``JOB<n>``; tasks queued by earlier submissions are not looked up.
    """
    from submitit.slurm.slurm import _make_sbatch_string  # the text SlurmExecutor submits

    check_root(store.root)
    settings = _settings(plan, profile)
    run_id = f"dry-run-{_new_run_id()}"
    jobs = array_jobs(plan, pack=_packs(settings))
    folder = _run_folder(store.root, run_id) if jobs else store.root / RECORDS / run_id
    ids = {job.number: f"JOB{job.number}" for job in jobs}
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    out = []
    for job in jobs:
        dependency = job.dependency(ids)
        params = _parameters(job, settings[job.step.name], dependency)
        script = _make_sbatch_string(command=command, folder=folder, map_count=_map_count(job), **params)
        path = folder / f"job{job.number:03d}-{job.step.name}.sh"
        path.write_text(script)
        element_ids = (
            [ids[job.number]]
            if len(job.elements) == 1
            else [f"{ids[job.number]}_{i}" for i in range(len(job.elements))]
        )
        out.append(Submitted(job, settings[job.step.name], ids[job.number], dependency, element_ids, path))
    return Submission(run_id, folder, out, plan)


def _run_folder(root: Path, run_id: str) -> Path:
    """``.submissions/<run id>/``, made with ``.submissions`` a directory only its owner may enter:
    they hold the job pickles, logs and records."""
    return _private(_private(root / RECORDS) / run_id)


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _settings(plan: Plan, profile: Profile) -> dict[str, JobSettings]:
    return {name: profile.resolve(step) for name, step in plan.steps.items()}


def _packs(settings: Mapping[str, JobSettings]) -> dict[str, int]:
    return {name: s.get("pack") for name, s in settings.items()}


def _map_count(job: ArrayJob) -> int | None:
    return len(job.elements) if len(job.elements) > 1 else None


def _arguments(job: ArrayJob) -> tuple[list[list[str]], list[list[str]]]:
    """Per element: its task ids and their artifact keys (the runner's two arguments)."""
    return [[p.task.id for p in e] for e in job.elements], [[p.key for p in e] for e in job.elements]


def _parameters(job: ArrayJob, settings: JobSettings, dependency: str | None) -> dict[str, Any]:
    params = {"job_name": job.step.name, **settings.submitit_parameters(job.step.checkpointable)}
    return {**params, "dependency": dependency} if dependency else params


def _new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def _write_record(
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
    root: Path, command: str, echo: Callable[[str], None] = _silent, wait_s: float = LOCK_WAIT_S
) -> Iterator[None]:
    """Hold ``.submissions/lock`` (``flock``, released however its holder ends) for the block. A second
    holder waits, after saying who holds it (``echo``), and gives up after ``wait_s`` naming the holder."""
    path = _private(Path(root) / RECORDS) / LOCK
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


# --- the cluster ------------------------------------------------------------------------------

_GRES_ITEM = re.compile(r"([A-Za-z0-9_]+)(?::([A-Za-z0-9_.-]+))?:(\d+)")


def _gres(text: str) -> list[tuple[str, str | None, int]]:
    """``gpu:v100:4(S:0-1),nvme:1`` as (name, type, count) triples."""
    plain = re.sub(r"\([^)]*\)", "", text)
    return [(m[1], m[2], int(m[3])) for m in map(_GRES_ITEM.fullmatch, plain.split(",")) if m]


def check_cluster(settings: Iterable[JobSettings]) -> None:
    """Every partition named exists and offers the GRES asked of it (one ``sinfo`` call)."""
    offered: dict[str, list[tuple[str, str | None, int]]] = {}
    default = ""
    for line in _run(["sinfo", "-h", "-o", "%P|%G"]).splitlines():
        name, gres = line.split("|", 1)
        if name.endswith("*"):
            name = default = name[:-1]
        offered.setdefault(name, []).extend(_gres(gres))
    for job in settings:
        partitions = [p for p in (job.get("partition") or default).split(",") if p]
        for partition in partitions:
            if partition not in offered:
                raise PipelineError(
                    f"{job.origin['partition']}: partition {partition!r} does not exist "
                    f"(sinfo lists {', '.join(offered)})"
                )
        for name, kind, count in _gres(job.get("gres") or ""):
            if not any(
                have[0] == name and kind in (None, have[1]) and have[2] >= count
                for partition in partitions
                for have in offered[partition]
            ):
                have = sorted({":".join(map(str, filter(None, g))) for p in partitions for g in offered[p]})
                raise PipelineError(
                    f"{job.origin['gres']}: partition {','.join(partitions)} has no node with "
                    f"gres {job.get('gres')!r} (it offers: {', '.join(have) or 'none'})"
                )


def _run(command: list[str]) -> str:
    """A Slurm command's output; its failure is the user's problem (cluster unreachable)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PipelineError(f"{command[0]} failed: {err}") from None
    if result.returncode != 0:
        raise PipelineError(f"{command[0]} failed: {' '.join(result.stderr.split()) or result.returncode}")
    return result.stdout


# --- state ------------------------------------------------------------------------------------

PENDING, RUNNING, FAILED, CANCELLED = "pending", "running", "failed", "cancelled"
NEVER = "never (upstream failed)"
MISSING = "completed, artifact missing"
UNKNOWN = "unknown"  # Slurm could not be asked
GONE = "gone (Slurm forgot its job)"  # purged after MinJobAge, and unknown to sacct
DONE = "done"
IN_QUEUE = (PENDING, RUNNING)

_STATES = {
    **dict.fromkeys(("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"), PENDING),
    **dict.fromkeys(("RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING", "STOPPED"), RUNNING),
    **dict.fromkeys(("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"), FAILED),
    "CANCELLED": CANCELLED,
    "COMPLETED": MISSING,  # the artifact would have made it ``done``
}
# Why a job waits: a pending job whose dependency failed waits forever with this reason.
_REASONS = {"DependencyNeverSatisfied": NEVER}
# With --kill-on-invalid-dep Slurm itself cancels such a job: sacct says "CANCELLED" without
# "by <uid>" (a person's scancel), with the job's last pending reason, "Dependency" or, under load,
# none (a CI run's status read "cancelled" a moment after it had read "never").
_SLURMS_OWN_CANCEL = "CANCELLED"
# What a failed job's Slurm state, or a line in its log, says about why it failed.
_EXPLAIN = {
    "TIMEOUT": "hit its time limit: raise the profile's time",
    "OUT_OF_MEMORY": "ran out of memory: raise the profile's mem",
    "NODE_FAIL": "its node failed: submit again",
    "BOOT_FAIL": "its node failed to boot: submit again",
    "PREEMPTED": "was preempted: submit again",
    "DEADLINE": "missed its deadline",
}
_EXPLAIN_LOG = {
    "timed-out too many times": "hit its time limit more often than the profile's max_num_timeout allows: "
    "raise time or max_num_timeout, then submit again",
}
_WITH_LOG = (FAILED, CANCELLED, MISSING)
_LIVE = {state for state, ours in _STATES.items() if ours in IN_QUEUE} - {"COMPLETING"}  # squeue's word wins
# Why a pending job waits, when that is worth no word: its turn, or what it reads.
_ROUTINE_REASONS = ("", "None", "Priority", "Dependency")
# squeue -j with a single id Slurm has purged exits 1 with this (with several, it lists the others).
_FORGOTTEN = "Invalid job id specified"


@dataclass(frozen=True)
class TaskState:
    """The scheduler's view of one recorded task."""

    state: str  # done, pending, running, failed, cancelled, never (upstream failed), gone, ...
    job_id: str  # the element (or plain job) that runs it
    log_path: Path  # the element's stderr log (shared by the tasks packed into it)
    log_tail: str = ""  # its end, for failed tasks
    queued: bool = False  # Slurm still has its job in the queue (pending or running)
    why: str = ""  # for failed tasks: what the Slurm state or the log says about why
    reason: str = ""  # for pending tasks: why Slurm keeps the job waiting, when not for its turn or a dependency
    error: str = ""  # for failed tasks: the last line of the task's own log, if it wrote one
    own_log: Path | None = None  # that log (``task_log``)


@dataclass(frozen=True)
class Foreign:
    """A queued job (or array element) of another plan: its tasks' keys are not this plan's."""

    job_id: str
    state: str  # pending or running
    run_id: str
    config: str  # the name of the config it was submitted with
    tasks: tuple[str, ...]  # labels, ``step[task id]``
    writes: tuple[str, ...]  # where those tasks write outside the artifact store
    shared: bool  # it also runs tasks of this plan (a packed element): never cancelled for the others

    def clashes(self, paths: Iterable[str]) -> bool:
        """Whether it exports into one of the folders ``paths`` (each export owns its folder; a
        subfolder is another export's), and may be cancelled for it."""
        return not self.shared and any(Path(a) == Path(b) for a in self.writes for b in paths)


@dataclass(frozen=True)
class Snapshot:
    """One consistent reading: what Slurm says of every recorded job, then which artifacts exist."""

    plan: Plan  # the plan with its artifacts' completeness read after Slurm's answer
    states: dict[Ref, TaskState]  # every task of the plan that a submission recorded
    foreign: list[Foreign]  # queued jobs of other plans
    twice: dict[Ref, list[str]]  # tasks of the plan queued in more than one job: those jobs' ids


@dataclass(frozen=True)
class _Entry:
    """A recorded task: the element that runs it, and its submission."""

    job_id: str
    folder: Path
    run_id: str
    config: str
    task_id: str
    writes: tuple[str, ...]

    @property
    def log(self) -> Path:
        from submitit.core.utils import JobPaths

        return JobPaths(self.folder, job_id=self.job_id).stderr


@dataclass(frozen=True)
class _Answer:
    """What ``sacct`` and ``squeue`` said: each job id's Slurm state and reason."""

    states: dict[str, tuple[str, str]]
    answered: bool  # squeue answered, so a job it does not list is not queued

    def word(self, job_id: str) -> str:
        return self.states.get(job_id, ("", ""))[0].split(" ")[0]

    def live(self, job_id: str) -> bool:
        return _STATES.get(self.word(job_id)) in IN_QUEUE


def slurm_states(store_root: Path, plan: Plan, strict: bool = False) -> dict[Ref, TaskState]:
    """The state of every plan task that a submission recorded (see ``snapshot``)."""
    return snapshot(store_root, plan, strict).states


def snapshot(store_root: Path, plan: Plan, strict: bool = False) -> Snapshot:
    """Slurm's view of every recorded submission, then the artifacts: one ``sacct`` call (for the
    plan's open tasks) and one ``squeue`` call (for every open task's job), after which every task's
    artifact is looked at again, so a task that published meanwhile is ``done``. A task recorded more
    than once takes its latest job still in the queue, else its latest job. ``strict``: a failing
    ``squeue`` is an error (``submit`` must not guess what is queued); otherwise those tasks are
    ``unknown``. A failing ``sacct`` only leaves out why finished jobs ended.
    """
    store = Store(store_root)
    entries = _entries(store.root)
    ours = {(p.task.step, p.key): p for p in plan.tasks}
    open_ = [ref for ref in entries if (ref in ours and ours[ref].forced) or not store.is_complete(*ref)]
    answer = _scheduler_states(
        {e.job_id for ref in open_ if ref in ours for e in entries[ref]},
        {e.job_id for ref in open_ if ref not in ours for e in entries[ref]},
        strict,
    )
    plan = Plan(
        [dataclasses.replace(p, complete=store.is_complete(p.task.step, p.key)) for p in plan.tasks], plan.steps
    )
    states: dict[Ref, TaskState] = {}
    twice: dict[Ref, list[str]] = {}
    for planned in plan.tasks:
        ref = (planned.task.step, planned.key)
        if ref not in entries:
            continue
        live = [e for e in entries[ref] if answer.live(e.job_id)]
        if len(live) > 1:
            twice[ref] = [e.job_id for e in live]
        entry = (live or entries[ref])[-1]
        if planned.complete and not (planned.forced and live):
            states[ref] = TaskState(DONE, entry.job_id, entry.log)
        else:
            states[ref] = _task_state(store.root, ref, entry, answer)
    return Snapshot(plan, states, _foreign(store, entries, ours.keys(), answer), twice)


def _entries(root: Path) -> dict[Ref, list[_Entry]]:
    """Every recorded task by artifact, oldest submission first."""
    out: dict[Ref, list[_Entry]] = {}
    for record in records(root):
        for job in record["jobs"]:
            for task in job["tasks"]:
                out.setdefault((job["step"], task["key"]), []).append(
                    _Entry(
                        task["job_id"],
                        Path(record["log_folder"]),
                        record["run_id"],
                        record.get("config") or "?",
                        task["id"],
                        tuple(task.get("writes", ())),
                    )
                )
    return out


def _task_state(root: Path, ref: Ref, entry: _Entry, answer: _Answer) -> TaskState:
    slurm_state, reason = answer.states.get(entry.job_id, ("", ""))
    ours = _STATES.get(answer.word(entry.job_id), GONE if answer.answered and not slurm_state else UNKNOWN)
    state = _REASONS.get(reason) or (NEVER if slurm_state == _SLURMS_OWN_CANCEL else ours)
    if state not in _WITH_LOG:
        waits = reason if state == PENDING and reason not in _ROUTINE_REASONS else ""
        return TaskState(state, entry.job_id, entry.log, queued=ours in IN_QUEUE, reason=waits)
    tail = _tail(entry.log)
    why = _EXPLAIN.get(slurm_state) or next((text for mark, text in _EXPLAIN_LOG.items() if mark in tail), "")
    own = task_log(root, *ref)
    error = _tail(own, 1)
    return TaskState(
        state,
        entry.job_id,
        entry.log,
        tail,
        ours in IN_QUEUE,
        why if state == FAILED else "",
        error=error,
        own_log=own if error else None,
    )


def _foreign(store: Store, entries: Mapping[Ref, list[_Entry]], ours: Iterable[Ref], answer: _Answer) -> list[Foreign]:
    """The queued jobs that run tasks of other plans, with those tasks (the ones still to build)."""
    ours = set(ours)
    members: dict[str, list[tuple[Ref, _Entry]]] = {}
    for ref, recorded in entries.items():
        for entry in recorded:
            members.setdefault(entry.job_id, []).append((ref, entry))
    out = []
    for job_id, held in members.items():
        others = [(ref, e) for ref, e in held if ref not in ours and not store.is_complete(*ref)]
        if not others or not answer.live(job_id):
            continue
        first = others[0][1]
        out.append(
            Foreign(
                job_id,
                _STATES[answer.word(job_id)],
                first.run_id,
                first.config,
                tuple(f"{ref[0]}[{e.task_id}]" for ref, e in others),
                tuple(w for _, e in others for w in e.writes),
                any(ref in ours for ref, _ in held),
            )
        )
    return out


def _scheduler_states(job_ids: set[str], queue_only: set[str], strict: bool) -> _Answer:
    """Slurm state and reason of each ``<job>`` or ``<job>_<index>`` id (``queue_only``: squeue's
    alone). squeue (the controller's live view) wins while a job is pending or running: sacct's view
    of an element that was requeued may be its earlier run's. Once a job is over, sacct's words win
    (``CANCELLED by 0`` tells a user's cancel from Slurm's own, which squeue cannot), and they are all
    there is once the controller forgets the job."""
    found: dict[str, tuple[str, str]] = {}
    if job_ids:
        for line in _sacct(job_ids):
            job, state, reason = (line.split("|") + ["", ""])[:3]
            found.update(dict.fromkeys(_expand(job), (state, reason)))
    lines = _squeue(job_ids | queue_only, strict) if job_ids | queue_only else []
    for line in lines or []:
        job, state, reason = (line.split("|") + ["", ""])[:3]
        found.update({i: (state, reason) for i in _expand(job) if state in _LIVE or i not in found})
    return _Answer(found, lines is not None)


def _bases(job_ids: Iterable[str]) -> str:
    return ",".join(sorted({i.split("_")[0] for i in job_ids}))


def _sacct(job_ids: Iterable[str]) -> list[str]:
    """sacct's ``JobID|State|Reason`` lines of these jobs' elements; none when accounting fails."""
    try:
        result = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "JobID,State,Reason", "-j", _bases(job_ids)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.splitlines() if result.returncode == 0 else []


def _squeue(job_ids: Iterable[str], strict: bool) -> list[str] | None:
    """squeue's ``JobID|State|Reason`` lines of these jobs' elements (finished ones too, until Slurm
    purges them); ``[]`` when Slurm has purged them all, None when squeue failed (an error if ``strict``)."""
    command = ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r", "-j", _bases(job_ids)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        if strict:
            raise PipelineError(f"squeue failed: {err}") from None
        return None
    if result.returncode == 0:
        return result.stdout.splitlines()
    if _FORGOTTEN in result.stderr:
        return []
    if strict:
        raise PipelineError(f"squeue failed: {' '.join(result.stderr.split()) or result.returncode}")
    return None


def _expand(job_id: str) -> list[str]:
    """``12_[0-2,5%2]`` as ``12_0 12_1 12_2 12_5``; other ids as themselves."""
    match = re.fullmatch(r"(\d+)_\[([\d,-]+)(?:%\d+)?\]", job_id)
    if match is None:
        return [job_id]
    out = []
    for part in match[2].split(","):
        low, _, high = part.partition("-")
        out += [f"{match[1]}_{i}" for i in range(int(low), int(high or low) + 1)]
    return out


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class Triage:
    """Which pending tasks the queue will build, and which queued jobs can never run."""

    queued: dict[Ref, str]  # artifact -> Slurm id of the healthy queued job that builds it
    stale: dict[Ref, list[Ref]]  # artifact of a job that can never run -> the upstream tasks it waits for


def triage(plan: Plan, states: Mapping[Ref, TaskState]) -> Triage:
    """Sort the pending tasks that Slurm has in its queue into healthy and stale.

    A running task is healthy. A pending one is healthy when everything it reads is complete or
    built by a healthy queued job; it is stale when an upstream task failed, was cancelled, or is
    not queued (so a new submission builds it, under a new job id its queued job does not wait
    for), or when Slurm says its dependency can never be satisfied. A job array waits on what all
    its elements read, so one stale pending element makes every pending element of its job stale.
    """
    needed = {(p.task.step, p.key) for p in plan.tasks if p.needed}
    queued: dict[Ref, str] = {}
    stale: dict[Ref, list[Ref]] = {}
    for step, items in plan.by_step().items():  # upstream steps first
        waiting: dict[str, list[tuple[Ref, TaskState, list[Ref]]]] = {}
        for planned in items:
            ref = (step, planned.key)
            state = states.get(ref)
            if not planned.needed or state is None or not state.queued:
                continue
            if state.state == RUNNING:
                queued[ref] = state.job_id
                continue
            blockers = sorted(r for r in planned.inputs.values() if r in needed and r not in queued)
            waiting.setdefault(state.job_id.split("_")[0], []).append((ref, state, blockers))
        for members in waiting.values():
            blockers = sorted({b for _, _, bs in members for b in bs})
            if blockers or any(state.state == NEVER for _, state, _ in members):
                stale.update({ref: blockers for ref, _, _ in members})
            else:
                queued.update({ref: state.job_id for ref, state, _ in members})
    return Triage(queued, stale)


def cancel(
    store_root: Path, run_id: str | None = None, echo: Callable[[str], None] = _silent
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
                    for line in _squeue(jobs, strict=True) or []
                    if line.split("|")[1] in _LIVE | {"COMPLETING"}
                }
                if jobs
                else set()
            )
            jobs = {job: rid for job, rid in jobs.items() if job in queued}
        if jobs:
            _run(["scancel", *jobs])
    return sorted(set(jobs.values())), list(jobs)
