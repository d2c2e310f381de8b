"""The Slurm view of a plan: one ``snapshot`` per command (``sacct`` and ``squeue`` for the jobs of
every recorded submission, then the artifacts), each recorded task's state, the queued jobs of other
plans, and ``triage`` of the queued tasks into healthy and stale."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.dag import Plan
from pipeline.errors import PipelineError
from pipeline.runners.logs import task_log
from pipeline.runners.slurm.arrays import Ref
from pipeline.runners.slurm.records import records
from pipeline.store import Store

LOG_TAIL_LINES = 12

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
LIVE = {state for state, ours in _STATES.items() if ours in IN_QUEUE} - {"COMPLETING"}  # squeue's word wins
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
    lines = squeue(job_ids | queue_only, strict) if job_ids | queue_only else []
    for line in lines or []:
        job, state, reason = (line.split("|") + ["", ""])[:3]
        found.update({i: (state, reason) for i in _expand(job) if state in LIVE or i not in found})
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


def squeue(job_ids: Iterable[str], strict: bool) -> list[str] | None:
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
