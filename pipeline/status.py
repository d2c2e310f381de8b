"""What ``pipeline status`` prints: per step, which tasks are done, with their summaries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline.config import Config
from pipeline.dag import Plan
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
    """Slurm's view of the submitted tasks (one batched query), or nothing when never submitted."""
    import shutil

    from pipeline.runners.slurm import records, slurm_states

    if not records(store.root) or shutil.which("sacct") is None:
        return {}
    return slurm_states(store.root, plan)


def report(plan: Plan, store: Store, config: Config) -> Iterator[str]:
    yield f"artifacts: {store.root}   config: {config.name}"
    states = scheduler_states(plan, store)
    for step, items in plan.by_step().items():
        done = [p for p in items if p.complete]
        counts = Counter(states[(p.task.step, p.key)].state for p in items
                         if not p.complete and (p.task.step, p.key) in states)
        queued = "".join(f", {n} {state}" for state, n in counts.items())
        yield f"{step:<14} {len(done)}/{len(items)} done{queued}"
        for p in items:
            state = states.get((p.task.step, p.key))
            if state is not None and state.log_tail:
                yield f"  {p.task.id}: {state.state} (job {state.job_id}, log {state.log_path})"
                yield from (f"    | {line}" for line in state.log_tail.splitlines())
        manifests = [(p, store.open(p.task.step, p.key).manifest) for p in done]
        step_report = plan.steps[step].report
        if step_report is not None:
            yield from step_report([(p.task, m.get("summary", {})) for p, m in manifests])
            continue
        for p, manifest in manifests:
            yield f"  {p.task.id:<28} {p.key}  {manifest.get('seconds', 0):>8.1f} s  {short(manifest.get('summary', {}))}"
