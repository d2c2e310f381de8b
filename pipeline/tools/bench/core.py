"""What the benchmarks share: the result row, the run's state, interleaved timing, the plans they build."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import pipeline
from pipeline.config import Config
from pipeline.dag import Plan, Planned, all_tasks, build_plan, discover
from pipeline.errors import PipelineError
from pipeline.runners.local.runner import run_plan
from pipeline.store import Artifact, Store

THROUGHPUT_TARGET = 0.95
REPO = Path(pipeline.__file__).resolve().parent.parent


@dataclass
class Result:
    """One row of the table. ``passed`` is None when nothing was measured."""

    benchmark: str
    ours: float | None
    reference: float | None
    unit: str
    ratio: float | None
    target: str
    passed: bool | None
    note: str = ""


@dataclass
class Bench:
    """What the benchmarks share: the config, the artifact store, how often to repeat, a log."""

    config_name: str
    config: Config
    overrides: list[str]
    store: Store
    repeat: int
    log: Callable[[str], None]
    scratch: Path  # removed at the end
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        from pipeline.device import select_device

        return select_device(self.config.runtime)


# ---------------------------------------------------------------- measuring


def interleave(sides: Sequence[Callable[[], float]], repeat: int) -> list[float]:
    """Median seconds of each side (each returns its own timed seconds), run ``repeat`` times
    each, the order rotating every repetition."""
    times: list[list[float]] = [[] for _ in sides]
    for rep in range(repeat):
        for i in range(len(sides)):
            side = (i + rep) % len(sides)
            times[side].append(sides[side]())
    return [statistics.median(t) for t in times]


def ratio_row(
    name: str, unit: str, ours: float, reference: float, note: str = "", minimum: float = THROUGHPUT_TARGET
) -> Result:
    """A row whose ratio ours / reference passes at ``minimum`` or above."""
    ratio = ours / reference
    return Result(name, ours, reference, unit, ratio, f">= {minimum:g}", ratio >= minimum, note)


def skipped_row(name: str, why: str) -> Result:
    return Result(name, None, None, "", None, "", None, why)


# ---------------------------------------------------------------- plans and artifacts


def full_plan(config: Config, store: Store, force: Sequence[str] = ()) -> Plan:
    """Every task of the config (main and ablation groups)."""
    groups = {t.group for tasks in all_tasks(config, discover()).values() for t in tasks}
    return build_plan(config, store, ["all" if g == "main" else g for g in sorted(groups)], force)


def closure(plan: Plan, roots: Sequence[tuple[str, str]]) -> Plan:
    """The sub-plan of the tasks ``roots`` ((step, key) pairs) and everything they read."""
    by_key = {(p.task.step, p.key): p for p in plan.tasks}
    keep: set[tuple[str, str]] = set()
    stack = list(roots)
    while stack:
        ref = stack.pop()
        if ref not in keep:
            keep.add(ref)
            stack.extend(by_key[ref].inputs.values())
    return Plan([p for p in plan.tasks if (p.task.step, p.key) in keep], plan.steps)


def representative(plan: Plan, step: str, match: Callable[[Planned], bool] = lambda p: True) -> Planned:
    """The first task of ``step`` in plan order that matches, preferring the main group."""
    found = [p for p in plan.tasks if p.task.step == step and match(p)]
    if not found:
        raise PipelineError(f"the plan has no {step} task to benchmark")
    return next((p for p in found if p.task.group == "main"), found[0])


def build_upstream(bench: Bench, config: Config, planned: Planned) -> None:
    """Build, with the local runner, whatever ``planned`` reads that is not complete yet."""
    plan = full_plan(config, bench.store)
    run_plan(closure(plan, list(planned.inputs.values())), bench.store, config, echo=bench.log)


def inputs_of(bench: Bench, planned: Planned) -> dict[str, Artifact]:
    return {name: bench.store.open(step, key) for name, (step, key) in planned.inputs.items()}
