"""The Slurm runner: a plan as submitit job arrays with ``afterok`` dependencies, and their state.

``submit`` returns as soon as sbatch has accepted every job; it never waits for one. Each
submission is recorded in ``<artifact root>/.submissions/<run id>.json`` (its jobs with their
steps, task ids, artifact keys and Slurm ids, and the code version pinned for the run), and
submitit keeps its pickles and logs (``<job id>_0_log.out/.err``, array tasks
``<job id>_<index>_0_log.*``) in ``.submissions/<run id>/``; only their owner may enter either.
Artifacts decide what is done, Slurm what is queued: nothing else is kept. ``slurm_states``,
``submit`` and ``cancel`` each ask Slurm once per call, never once per task.

A task already queued is submitted again only when its queued job can never run: ``triage`` finds
the jobs that wait on an upstream task that failed, was cancelled or is about to be submitted
again, and ``submit`` cancels exactly those, leaving healthy running and pending jobs alone.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.dag import Plan
from pipeline.errors import PipelineError
from pipeline.execute import pin_git_commit
from pipeline.runners.arrays import ArrayJob, Ref, array_jobs
from pipeline.runners.profile import JobSettings, Profile
from pipeline.store import Store

RECORDS = ".submissions"
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm")
LOG_TAIL_LINES = 12


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
    queued: int = 0  # pending tasks left to healthy jobs that an earlier submission has in the queue
    cancelled: list[str] | None = None  # Slurm ids of stale jobs cancelled before submitting
    record: Path | None = None


def check_root(root: Path) -> None:
    """The artifact root goes into every job script (``#SBATCH --output``, the command line): refuse
    what would break a line or what Slurm expands in file names (``%j``, ``%x``, ...)."""
    text = str(root)
    bad = next((c for c in text if c == "%" or not c.isprintable()), None)
    if bad is not None:
        raise PipelineError(f"artifact root {text!r} contains {bad!r}, which Slurm job scripts cannot carry "
                            f"(no control characters or '%'): choose another --artifacts")


def node_local_warning(root: Path) -> str | None:
    """A warning when the artifact root looks node-local, so compute nodes may not see it."""
    resolved = Path(root).resolve()
    for local in NODE_LOCAL:
        if resolved.is_relative_to(local):
            return (f"artifact root {resolved} is under {local}, which is usually local to one machine: "
                    f"compute nodes may not see it")
    return None


def submit(plan: Plan, store: Store, config: Config, profile: Profile, targets: Sequence[str],
           force: Sequence[str] = (), package: str = "jobs") -> Submission:
    """Submit the plan's pending tasks, except those a healthy queued job will build; cancel the
    queued jobs that can never run and submit their tasks again; record the submission."""
    import submitit
    from submitit.core.utils import FailedJobError

    from pipeline.runners.slurm_job import RUNNERS

    check_root(store.root)
    if shutil.which("sbatch") is None:
        raise PipelineError("sbatch is not on PATH, so this machine cannot submit to Slurm: use --dry-run to "
                            "see the jobs and their scripts, or `pipeline run` to run the tasks here")
    settings = _settings(plan, profile)
    check_cluster(settings.values())
    states = slurm_states(store.root, plan, strict=True)
    found = triage(plan, states)
    cancelled = sorted({states[ref].job_id for ref in found.stale if states[ref].queued})
    if cancelled:
        _run(["scancel", *cancelled])
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
            runner = RUNNERS[job.step.checkpointable](str(store.root), resolved, tuple(targets), tuple(force),
                                                      job.step.name, package, commit)
            handles = executor.map_array(runner, *_arguments(job))
            ids[job.number] = handles[0].job_id.split("_")[0]
            done.append(Submitted(job, job_settings, ids[job.number], dependency, [h.job_id for h in handles]))
    except FailedJobError as err:
        message = " ".join(str(err).split()) or "no message"
        raise PipelineError(f"sbatch refused job #{job.number} ({job.label}): {message}"
                            + (f"; the {len(done)} job(s) before it are queued as run {run_id} "
                               f"(`pipeline cancel {run_id}` removes them)" if done else "")) from None
    finally:
        record = _write_record(store.root, run_id, folder, done, config, targets, force, commit, cancelled) \
            if done else None
    return Submission(run_id, folder, done, len(found.queued), cancelled, record)


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
        element_ids = [ids[job.number]] if len(job.elements) == 1 else \
            [f"{ids[job.number]}_{i}" for i in range(len(job.elements))]
        out.append(Submitted(job, settings[job.step.name], ids[job.number], dependency, element_ids, path))
    return Submission(run_id, folder, out)


def _run_folder(root: Path, run_id: str) -> Path:
    """``.submissions/<run id>/``, made with ``.submissions`` a directory only its owner may enter:
    they hold the job pickles, logs and records."""
    for path in (root / RECORDS, root / RECORDS / run_id):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)
    return root / RECORDS / run_id


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


def _write_record(root: Path, run_id: str, folder: Path, jobs: Sequence[Submitted], config: Config,
                  targets: Sequence[str], force: Sequence[str], commit: str, cancelled: Sequence[str]) -> Path:
    record = {
        "run_id": run_id,
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config.name,
        "targets": list(targets),
        "force": list(force),
        "git_commit": commit or None,
        "cancelled": list(cancelled),
        "log_folder": str(folder),
        "jobs": [{"job_id": s.job_id, "step": s.job.step.name, "label": s.job.label, "dependency": s.dependency,
                  "tasks": [{"id": p.task.id, "key": p.key, "job_id": element_id}
                            for element, element_id in zip(s.job.elements, s.element_ids) for p in element]}
                 for s in jobs],
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
    """A record with the fields that ``status`` and ``cancel`` read, naming only well-formed Slurm
    job ids (they are handed to scancel, squeue and sacct)."""
    try:
        jobs = record["jobs"]
        ids = [job["job_id"] for job in jobs] + [task["job_id"] for job in jobs for task in job["tasks"]]
        names = [record["run_id"], record["log_folder"]] + [v for job in jobs for task in job["tasks"]
                                                             for v in (job["step"], task["key"])]
    except (KeyError, TypeError, IndexError):
        raise PipelineError(f"submission record {path} is corrupt (a job or task lacks a field)") from None
    bad = next((i for i in ids if not (isinstance(i, str) and _JOB_ID.fullmatch(i))), None)
    if bad is not None:
        raise PipelineError(f"submission record {path}: {bad!r} is not a Slurm job id")
    if not all(isinstance(name, str) for name in names):
        raise PipelineError(f"submission record {path} is corrupt (a run id, folder, step or key is not text)")
    return record


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
                raise PipelineError(f"{job.origin['partition']}: partition {partition!r} does not exist "
                                    f"(sinfo lists {', '.join(offered)})")
        for name, kind, count in _gres(job.get("gres") or ""):
            if not any(have[0] == name and kind in (None, have[1]) and have[2] >= count
                       for partition in partitions for have in offered[partition]):
                have = sorted({":".join(map(str, filter(None, g))) for p in partitions for g in offered[p]})
                raise PipelineError(f"{job.origin['gres']}: partition {','.join(partitions)} has no node with "
                                    f"gres {job.get('gres')!r} (it offers: {', '.join(have) or 'none'})")


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
UNKNOWN = "unknown"
DONE = "done"
IN_QUEUE = (PENDING, RUNNING)

_STATES = {
    **dict.fromkeys(("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"), PENDING),
    **dict.fromkeys(("RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING", "STOPPED"),
                    RUNNING),
    **dict.fromkeys(("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"),
                    FAILED),
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


@dataclass(frozen=True)
class TaskState:
    """The scheduler's view of one recorded task."""

    state: str  # done, pending, running, failed, cancelled, never (upstream failed), ...
    job_id: str
    log_path: Path
    log_tail: str = ""  # the end of the task's stderr log, for failed tasks
    queued: bool = False  # Slurm still has its job in the queue (pending or running)
    why: str = ""  # for failed tasks: what the Slurm state or the log says about why


def slurm_states(store_root: Path, plan: Plan, strict: bool = False) -> dict[Ref, TaskState]:
    """The state of every plan task that a submission recorded (the latest one wins).

    Complete artifacts are ``done`` without asking Slurm; the rest take one ``sacct`` call and one
    ``squeue`` call (for what sacct does not list yet, and for why a pending job waits). ``strict``:
    a failing query is an error (``submit`` must not guess what is queued); otherwise those tasks
    are ``unknown`` (``status`` still prints).
    """
    from submitit.core.utils import JobPaths

    store = Store(store_root)
    latest: dict[Ref, tuple[str, Path]] = {}
    for record in records(store.root):
        for job in record["jobs"]:
            for task in job["tasks"]:
                latest[(job["step"], task["key"])] = (task["job_id"], Path(record["log_folder"]))
    wanted = [ref for ref in ((p.task.step, p.key) for p in plan.tasks) if ref in latest]
    open_ = [ref for ref in wanted if not store.is_complete(*ref)]
    scheduler = _scheduler_states({latest[ref][0] for ref in open_}, strict)
    states = {}
    for ref in wanted:
        job_id, folder = latest[ref]
        log = JobPaths(folder, job_id=job_id).stderr
        if ref not in open_:
            states[ref] = TaskState(DONE, job_id, log)
            continue
        slurm_state, reason = scheduler.get(job_id, ("", ""))
        ours = _STATES.get(slurm_state.split(" ")[0], UNKNOWN)
        state = _REASONS.get(reason) or (NEVER if slurm_state == _SLURMS_OWN_CANCEL else ours)
        tail = _tail(log) if state in _WITH_LOG else ""
        why = _EXPLAIN.get(slurm_state) or next((text for mark, text in _EXPLAIN_LOG.items() if mark in tail), "")
        states[ref] = TaskState(state, job_id, log, tail, ours in IN_QUEUE, why if state == FAILED else "")
    return states


def _scheduler_states(job_ids: set[str], strict: bool) -> dict[str, tuple[str, str]]:
    """Slurm state and reason of each ``<job>`` or ``<job>_<index>`` id. squeue (the controller's
    live view) wins while a job is pending or running: sacct's view of an element that was requeued
    may be its earlier run's. Once a job is over, sacct's words win (``CANCELLED by 0`` tells a
    user's cancel from Slurm's own, which squeue cannot), and they are all there is once the
    controller forgets the job."""
    if not job_ids:
        return {}
    bases = ",".join(sorted({i.split("_")[0] for i in job_ids}))
    found = {}
    for line in _query(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Reason", "-j", bases], strict):
        job, state, reason = (line.split("|") + ["", ""])[:3]
        found.update(dict.fromkeys(_expand(job), (state, reason)))
    for line in _query(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r", "-j", bases], strict):
        job, state, reason = line.split("|")[:3]
        found.update({i: (state, reason) for i in _expand(job) if state in _LIVE or i not in found})
    return found


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


def _query(command: list[str], strict: bool) -> list[str]:
    """Output lines of a read-only Slurm query; when it fails: an error if ``strict``, else none."""
    if strict:
        return _run(command).splitlines()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.splitlines() if result.returncode == 0 else []


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
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


def cancel(store_root: Path, run_id: str | None = None) -> tuple[str, list[str]]:
    """Cancel every job of a recorded run (the latest by default) with one ``scancel``."""
    runs = {record["run_id"]: record for record in records(store_root)}
    if not runs:
        raise PipelineError(f"no submissions recorded under {Path(store_root) / RECORDS}")
    run_id = run_id or list(runs)[-1]
    if run_id not in runs:
        raise PipelineError(f"no submission {run_id!r} (recorded: {', '.join(runs)})")
    job_ids = [job["job_id"] for job in runs[run_id]["jobs"]]
    _run(["scancel", *job_ids])
    return run_id, job_ids
