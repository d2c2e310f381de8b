"""The plan's pending tasks as scheduler jobs: job arrays whose elements each run one or more tasks.

A step's tasks that read the same *pending* upstream tasks share one job array (one plain job when
alone), one task per element. A step packed ``N`` per element (its tasks are small, see
``Step.small`` and the profile key ``pack``) puts all its pending tasks in one array, ``N`` to an
element, one after another. Either way an array waits (``afterok``) on exactly the upstream elements
that hold what its tasks read, each named (``<job>_<index>``) even when it reads them all: Slurm's
bookkeeping of a whole array counts the requeued runs of its elements (a time-out that requeued a
training could leave ``afterok:<job>`` unsatisfiable), an element's own state is its last run's.
Each task keeps its own artifact, so a resubmission packs only the tasks still missing. Complete
artifacts are never submitted and nothing waits for them. Knows nothing of Slurm commands: the dry
run and the submission both use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.dag import Plan, Planned, Step

MAX_ARRAY = 1000  # Slurm's default MaxArraySize (1001) allows indices 0..1000

Ref = tuple[str, str]  # (step, artifact key)


@dataclass(eq=False)
class ArrayJob:
    """Pending tasks of one step, in elements that each run one or more of them."""

    number: int  # 1-based, in submission order
    step: Step
    elements: list[list[Planned]]
    after: list[tuple[ArrayJob, list[int]]] = field(default_factory=list)  # upstream job, its elements read
    after_queued: list[str] = field(default_factory=list)  # Slurm ids queued by an earlier submission
    after_queued_tasks: int = 0  # the tasks it reads that those jobs build

    @property
    def tasks(self) -> list[Planned]:
        return [p for element in self.elements for p in element]

    @property
    def packed(self) -> bool:
        return any(len(element) > 1 for element in self.elements)

    @property
    def label(self) -> str:
        return f"{self.step.name}[{id_pattern([p.task.id for p in self.tasks])}]"

    def dependency(self, ids: Mapping[int, str]) -> str | None:
        """``afterok:`` on exactly the upstream elements, given each earlier job's Slurm id."""
        refs = []
        for upstream, indices in self.after:
            job_id = ids[upstream.number]
            refs += [job_id] if len(upstream.elements) == 1 else [f"{job_id}_{i}" for i in indices]
        refs += self.after_queued
        return "afterok:" + ":".join(refs) if refs else None

    def describe_after(self) -> str:
        """The dependencies in words, per upstream step, e.g. ``#3 attack[aae_train/fgsm/*] (8 tasks)``."""
        by_step: dict[str, tuple[list[int], list[str]]] = {}
        for upstream, indices in self.after:
            numbers, ids = by_step.setdefault(upstream.step.name, ([], []))
            numbers.append(upstream.number)
            ids += [p.task.id for i in indices for p in upstream.elements[i]]
        parts = [
            (f"#{numbers[0]} " if len(numbers) == 1 else "")
            + f"{step}[{id_pattern(ids)}] ({_count(len(ids))}"
            + (f" in {len(numbers)} jobs)" if len(numbers) > 1 else ")")
            for step, (numbers, ids) in by_step.items()
        ]
        if self.after_queued:
            jobs = len(self.after_queued)
            parts.append(f"{_count(self.after_queued_tasks)} queued earlier ({jobs} job{'s' * (jobs > 1)})")
        return ", ".join(parts) or "-"


def _count(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


def id_pattern(ids: Sequence[str]) -> str:
    """Task ids as one pattern: ``aae_train/fgsm/000000`` and ``aae_train/fgsm/000016`` give
    ``aae_train/fgsm/*`` (``/``-separated parts that differ become ``*``)."""
    parts = [i.split("/") for i in ids]
    pattern = [column[0] if len(set(column)) == 1 else "*" for column in zip(*parts)]
    return "/".join(pattern + (["*"] if len({len(p) for p in parts}) > 1 else []))


def array_jobs(
    plan: Plan, queued: Mapping[Ref, str] | None = None, pack: Mapping[str, int] | None = None
) -> list[ArrayJob]:
    """The plan's pending tasks grouped into jobs in dependency order.

    ``queued`` maps pending artifacts that an earlier submission already has in the queue to their
    Slurm ids: they are not submitted again, and their dependants wait on those ids. ``pack`` gives
    the tasks per element of a step (default 1).
    """
    queued, pack = queued or {}, pack or {}
    pending = {(p.task.step, p.key) for p in plan.pending()}
    groups: dict[tuple[str, frozenset[Ref] | None], list[Planned]] = {}
    for planned in plan.pending():
        if (planned.task.step, planned.key) not in queued:
            step = planned.task.step
            upstream = None if pack.get(step, 1) > 1 else _upstream(planned, pending)
            groups.setdefault((step, upstream), []).append(planned)
    jobs: list[ArrayJob] = []
    where: dict[Ref, tuple[int, int]] = {}  # artifact -> (job number, element index)
    for (step, _), tasks in groups.items():
        size = pack.get(step, 1)
        elements = [tasks[start : start + size] for start in range(0, len(tasks), size)]
        for first in range(0, len(elements), MAX_ARRAY):
            job = ArrayJob(len(jobs) + 1, plan.steps[step], elements[first : first + MAX_ARRAY])
            upstream = frozenset().union(*(_upstream(p, pending) for p in job.tasks))
            job.after_queued = sorted({queued[ref] for ref in upstream if ref in queued})
            job.after_queued_tasks = len(upstream & queued.keys())
            after: dict[int, set[int]] = {}
            for ref in upstream - queued.keys():
                number, index = where[ref]
                after.setdefault(number, set()).add(index)
            job.after = [(jobs[n - 1], sorted(ix)) for n, ix in sorted(after.items())]
            where.update({(step, p.key): (job.number, i) for i, element in enumerate(job.elements) for p in element})
            jobs.append(job)
    return jobs


def _upstream(planned: Planned, pending: set[Ref]) -> frozenset[Ref]:
    return frozenset(ref for ref in planned.inputs.values() if ref in pending)
