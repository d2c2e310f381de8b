"""What ``pipeline status`` prints: per step, which tasks are done, with their summaries, and for
submitted runs what Slurm says of the rest (one batched query)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.config import Config
from pipeline.dag import Plan, Planned
from pipeline.progress import status_lines as training_progress
from pipeline.store import Store


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


def scheduler_states(plan: Plan, store: Store) -> dict:
    """Slurm's view of the submitted tasks (one batched query), or nothing when never submitted.
    A pending task whose job can never run (see ``triage``) is ``never``, even before Slurm says so."""
    import dataclasses
    import shutil

    from pipeline.runners.slurm import NEVER, records, slurm_states, triage

    if not records(store.root) or shutil.which("sacct") is None:
        return {}
    states = slurm_states(store.root, plan)
    stale = triage(plan, states).stale
    return {ref: dataclasses.replace(state, state=NEVER) if ref in stale else state for ref, state in states.items()}


def report(plan: Plan, store: Store, config: Config) -> Iterator[str]:
    yield f"artifacts: {store.root}   config: {config.name}"
    states = scheduler_states(plan, store)
    for step, items in plan.by_step().items():
        done = [p for p in items if p.complete]
        counts = Counter(states[(p.task.step, p.key)].state for p in items
                         if not p.complete and (p.task.step, p.key) in states)
        queued = "".join(f", {n} {state}" for state, n in counts.items())
        yield f"{step:<14} {len(done)}/{len(items)} done{queued}"
        yield from _problems(plan, [p for p in items if not p.complete], states)
        yield from training_progress(store, [p for p in items if not p.complete])
        manifests = [(p, store.open(p.task.step, p.key).manifest) for p in done]
        step_report = plan.steps[step].report
        if step_report is not None:
            yield from step_report([(p.task, m.get("summary", {})) for p, m in manifests])
            continue
        for p, manifest in manifests:
            yield f"  {p.task.id:<28} {p.key}  {manifest.get('seconds', 0):>8.1f} s  {short(manifest.get('summary', {}))}"


def _problems(plan: Plan, items: list[Planned], states: Mapping) -> Iterator[str]:
    """Failed tasks with their job, log and its tail; jobs that wait for what can never come."""
    from pipeline.runners.arrays import id_pattern
    from pipeline.runners.slurm import CANCELLED, FAILED, MISSING, NEVER

    never: dict[str, list[Planned]] = {}
    for p in items:
        state = states.get((p.task.step, p.key))
        if state is not None and state.state == NEVER:
            never.setdefault(state.job_id, []).append(p)
        elif state is not None and state.state in (FAILED, CANCELLED, MISSING):
            why = f": {state.why}" if state.why else ""
            yield f"  {p.task.id}: {state.state} (job {state.job_id}, log {state.log_path}){why}"
            yield from (f"    | {line}" for line in state.log_tail.splitlines())
    for job_id, waiting in never.items():
        what = f"{len(waiting)} tasks {id_pattern([p.task.id for p in waiting])}" if len(waiting) > 1 \
            else waiting[0].task.id
        blockers = _blockers(plan, waiting, states)
        if states[(waiting[0].task.step, waiting[0].key)].queued:
            yield (f"  job {job_id} ({what}) waits on a dependency that can never be satisfied{blockers}; "
                   f"`pipeline submit` cancels it and submits its tasks again")
        else:
            yield (f"  job {job_id} ({what}) was cancelled by Slurm: its dependency could never be satisfied"
                   f"{blockers}; `pipeline submit` submits its tasks again")


def _blockers(plan: Plan, waiting: list[Planned], states: Mapping) -> str:
    """``: train-aae[aae/fgsm] cancelled, ...``: what ``waiting`` read that no queued job will build."""
    from pipeline.runners.slurm import IN_QUEUE

    index = {(p.task.step, p.key): p for p in plan.tasks}
    refs = sorted({ref for p in waiting for ref in p.inputs.values() if not index[ref].complete})
    words = [f"{index[ref].label} {states[ref].state if ref in states else 'not submitted'}" for ref in refs
             if ref not in states or states[ref].state not in IN_QUEUE]
    return f": {', '.join(words)}" if words else ""
