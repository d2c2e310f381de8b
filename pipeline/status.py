"""What ``pipeline status`` prints: per step, which tasks are done, with their summaries."""

from __future__ import annotations

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


def report(plan: Plan, store: Store, config: Config) -> Iterator[str]:
    yield f"artifacts: {store.root}   config: {config.name}"
    for step, items in plan.by_step().items():
        done = [p for p in items if p.complete]
        yield f"{step:<14} {len(done)}/{len(items)} done"
        manifests = [(p, store.open(p.task.step, p.key).manifest) for p in done]
        step_report = plan.steps[step].report
        if step_report is not None:
            yield from step_report([(p.task, m.get("summary", {})) for p, m in manifests])
            continue
        for p, manifest in manifests:
            yield f"  {p.task.id:<28} {p.key}  {manifest.get('seconds', 0):>8.1f} s  {short(manifest.get('summary', {}))}"
