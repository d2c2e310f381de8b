"""What ``pipeline status`` prints: per step, which tasks are done, with their summaries, and for
submitted runs what Slurm says of the rest (one batched query, the artifacts read after it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.dag import Plan, Planned
from pipeline.errors import PipelineError
from pipeline.progress import status_lines as training_progress
from pipeline.store import Store

if TYPE_CHECKING:
    from pipeline.runners.slurm import Foreign, Snapshot, TaskState

# Why Slurm keeps a job pending (squeue's reason, by how it starts), and what the user can do.
_NODES_DOWN = (
    "a node it needs is down or drained: `sinfo -R` says why; once an administrator resumes it "
    "(`scontrol update nodename=<node> state=resume`) the job starts by itself"
)
PENDING_ADVICE = {
    "Resources": "the nodes have no free CPUs, memory or GPUs for it yet: it starts when running jobs end "
    "(or ask for less in the profile and submit again)",
    "BeginTime": "Slurm holds it until its begin time (a requeued job waits about a minute): nothing to do",
    "Nodes required for job are DOWN, DRAINED": _NODES_DOWN,
    "ReqNodeNotAvail": _NODES_DOWN,
    "PartitionDown": "its partition is down (`sinfo`): ask an administrator",
    "PartitionInactive": "its partition is inactive (`sinfo`): ask an administrator",
    "JobHeldUser": "it is held: `scontrol release <job>` lets it start",
    "JobHeldAdmin": "an administrator holds it: ask them",
    "launch failed requeued held": "its launch failed and Slurm holds it: check the node, then "
    "`scontrol release <job>`",
    "QOS": "a limit of its QOS holds it (`scontrol show job <job>` names it): it starts when your other jobs end",
    "Assoc": "a limit of your account holds it (`scontrol show job <job>` names it): it starts when your "
    "other jobs end",
}


def short(summary: dict[str, Any]) -> str:
    """A one-line rendering of a manifest summary (nested values flattened, floats rounded)."""
    parts = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = "{" + short(value) + "}"
        elif isinstance(value, float):
            value = f"{value:.3g}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def scheduler_snapshot(plan: Plan, store: Store) -> Snapshot | None:
    """Slurm's view of every recorded submission (one batched query) with the artifacts read after
    it, or None when nothing was submitted here or this machine has no Slurm. A pending task whose
    job can never run (see ``triage``) is ``never``, even before Slurm says so."""
    import dataclasses
    import shutil

    from pipeline.runners.slurm import NEVER, records, snapshot, triage

    if not records(store.root) or shutil.which("squeue") is None:
        return None
    snap = snapshot(store.root, plan)
    stale = triage(snap.plan, snap.states).stale
    states = {
        ref: dataclasses.replace(state, state=NEVER) if ref in stale else state for ref, state in snap.states.items()
    }
    return dataclasses.replace(snap, states=states)


def report(plan: Plan, store: Store, config: Config) -> Iterator[str]:
    """The status lines; an artifact whose manifest cannot be read ends them with its error (the
    first, and how many more there are), after everything else was said."""
    yield f"artifacts: {store.root}   config: {config.name}"
    broken: list[str] = []
    snap = scheduler_snapshot(plan, store)
    plan, states = (snap.plan, snap.states) if snap else (plan, {})
    for step, items in plan.by_step().items():
        done = [p for p in items if p.complete]
        counts = Counter(
            states[(p.task.step, p.key)].state for p in items if not p.complete and (p.task.step, p.key) in states
        )
        queued = "".join(f", {n} {state}" for state, n in counts.items())
        yield f"{step:<14} {len(done)}/{len(items)} done{queued}"
        yield from _problems(plan, [p for p in items if not p.complete], states)
        yield from training_progress(store, [p for p in items if not p.complete])
        manifests = []
        for p in done:
            try:
                manifests.append((p, store.open(p.task.step, p.key).manifest))
            except PipelineError as err:
                broken.append(str(err))
        step_report = plan.steps[step].report
        if step_report is not None:
            yield from step_report([(p.task, m.get("summary", {})) for p, m in manifests])
            continue
        for p, manifest in manifests:
            yield (
                f"  {p.task.id:<28} {p.key}  {manifest.get('seconds', 0):>8.1f} s  {short(manifest.get('summary', {}))}"
            )
    if snap:
        yield from (f"  {line}" for line in foreign_lines(snap.foreign, config.name))
        for ref, ids in snap.twice.items():
            yield (
                f"  {_label(plan, ref)} is queued in {len(ids)} jobs ({', '.join(ids)}): `scancel "
                f"{' '.join(ids[:-1])}` keeps only the latest"
            )
    if broken:
        more = f" (and {len(broken) - 1} more: `pipeline verify` lists them)" if len(broken) > 1 else ""
        raise PipelineError(broken[0] + more)


def foreign_lines(jobs: Sequence[Foreign], config_name: str, action: str = "") -> list[str]:
    """One line per config for queued jobs of other plans: how many jobs and tasks, which, and what
    can be done (``action``: what ``submit`` did with them)."""
    by_config: dict[str, list[Foreign]] = {}
    for job in jobs:
        by_config.setdefault(job.config, []).append(job)
    lines = []
    for name, group in by_config.items():
        whose = f"an older plan of config {name}" if name == config_name else f"config {name}"
        tasks = sum(len(job.tasks) for job in group)
        listing = ", ".join(
            f"{job.job_id} {_tasks(job.tasks)} ({job.state}"
            + (f", writes {', '.join(job.writes)})" if job.writes else ")")
            for job in group
        )
        ids = " ".join(job.job_id for job in group)
        lines.append(
            f"{counted(len(group), 'queued job')} ({counted(tasks, 'task')}) "
            f"belong{'s' * (len(group) == 1)} to {whose}: {listing}"
            + (
                f"; {action}"
                if action
                else f"; `pipeline submit` cancels those that write where this "
                f"plan writes, `scancel {ids}` cancels them all"
            )
        )
    return lines


def _tasks(labels: Sequence[str]) -> str:
    from pipeline.runners.slurm.arrays import id_pattern

    steps = list(dict.fromkeys(label.split("[")[0] for label in labels))
    ids = [label.split("[", 1)[1][:-1] for label in labels]
    return labels[0] if len(labels) == 1 else f"{'+'.join(steps)}[{id_pattern(ids)}] x{len(labels)}"


def counted(n: int, what: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{n} {what}" + ("s" if n != 1 else "")


def _label(plan: Plan, ref: tuple[str, str]) -> str:
    return next(p.label for p in plan.tasks if (p.task.step, p.key) == ref)


def _problems(plan: Plan, items: list[Planned], states: Mapping[tuple[str, str], TaskState]) -> Iterator[str]:
    """Failed tasks by the job (array element) that ran them, with its log's tail once; jobs that wait
    for what can never come; jobs Slurm keeps waiting for another reason, with what to do."""
    from pipeline.runners.slurm import CANCELLED, FAILED, MISSING, NEVER

    failed: dict[str, list[Planned]] = {}
    never: dict[str, list[Planned]] = {}
    held: dict[str, list[Planned]] = {}
    for p in items:
        state = states.get((p.task.step, p.key))
        if state is None:
            continue
        if state.state == NEVER:
            never.setdefault(state.job_id, []).append(p)
        elif state.state in (FAILED, CANCELLED, MISSING):
            failed.setdefault(state.job_id, []).append(p)
        elif state.reason:
            held.setdefault(state.reason, []).append(p)
    for job_id, tasks in failed.items():
        yield from _failed(job_id, tasks, states)
    for job_id, waiting in never.items():
        blockers = _blockers(plan, waiting, states)
        if states[(waiting[0].task.step, waiting[0].key)].queued:
            yield (
                f"  job {job_id} ({_what(waiting)}) waits on a dependency that can never be satisfied{blockers}; "
                f"`pipeline submit` cancels it and submits its tasks again"
            )
        else:
            yield (
                f"  job {job_id} ({_what(waiting)}) was cancelled by Slurm: its dependency could never be "
                f"satisfied{blockers}; `pipeline submit` submits its tasks again"
            )
    for reason, waiting in held.items():
        jobs = sorted({states[(p.task.step, p.key)].job_id for p in waiting})
        advice = next(
            (text for start, text in PENDING_ADVICE.items() if reason.startswith(start)),
            "`scontrol show job <job>` says more",
        )
        yield (
            f"  {_what(waiting)} pending in {counted(len(jobs), 'job')} ({', '.join(jobs[:5])}"
            f"{', ...' if len(jobs) > 5 else ''}): Slurm says {reason!r}: {advice}"
        )


def _failed(job_id: str, tasks: list[Planned], states: Mapping[tuple[str, str], TaskState]) -> Iterator[str]:
    """A job that ended without building its tasks: one task on one line with its log's tail; a packed
    element once, with its log's tail, then each task that wrote its own log, with its error."""
    first = states[(tasks[0].task.step, tasks[0].key)]
    why = f": {first.why}" if first.why else ""
    if len(tasks) == 1:
        yield f"  {tasks[0].task.id}: {first.state} (job {job_id}, log {first.log_path}){why}"
    else:
        yield f"  job {job_id} ({_what(tasks)}): {first.state} (log {first.log_path}){why}"
    yield from (f"    | {line}" for line in first.log_tail.splitlines())
    own = [states[(p.task.step, p.key)] for p in tasks]
    for p, state in zip(tasks, own):
        if state.own_log is not None:
            yield f"    {p.task.id}: {state.error} (log {state.own_log})"
    rest = [p for p, state in zip(tasks, own) if state.own_log is None]
    if len(tasks) > 1 and rest:
        yield f"    {_what(rest)}: stopped before the end, no log of {'their' if len(rest) > 1 else 'its'} own"


def _what(tasks: Sequence[Planned]) -> str:
    from pipeline.runners.slurm.arrays import id_pattern

    return f"{len(tasks)} tasks {id_pattern([p.task.id for p in tasks])}" if len(tasks) > 1 else tasks[0].task.id


def _blockers(plan: Plan, waiting: list[Planned], states: Mapping) -> str:
    """``: train-aae[aae/fgsm] cancelled, ...``: what ``waiting`` read that no queued job will build."""
    from pipeline.runners.slurm import IN_QUEUE

    index = {(p.task.step, p.key): p for p in plan.tasks}
    refs = sorted({ref for p in waiting for ref in p.inputs.values() if not index[ref].complete})
    words = [
        f"{index[ref].label} {states[ref].state if ref in states else 'not submitted'}"
        for ref in refs
        if ref not in states or states[ref].state not in IN_QUEUE
    ]
    return f": {', '.join(words)}" if words else ""
