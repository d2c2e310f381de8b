"""Steps, tasks and the plan: which task needs which, in what order, under which artifact key.

A step is declared in one module of the ``jobs`` package as ``STEP = Step(...)``. Its ``tasks``
function turns the config sections it reads (and the upstream steps' task lists) into tasks; each
task names the config values that determine its output and the upstream tasks it reads.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.schema import suggest
from pipeline.store import Store, artifact_key

if TYPE_CHECKING:
    from pipeline.execute import Context

_TIME = re.compile(r"^(\d+-)?\d{1,2}:\d{2}:\d{2}$")
_MEM = re.compile(r"^\d+[KMGT]?$")


@dataclass(frozen=True)
class Resources:
    """What one task of a step asks the scheduler for."""

    cpus: int = 1
    gpus: int = 0
    mem: str = "4G"
    time: str = "01:00:00"

    def __post_init__(self) -> None:
        if not _TIME.match(self.time):
            raise ValueError(f"Resources.time {self.time!r} is not [D-]HH:MM:SS")
        if not _MEM.match(self.mem):
            raise ValueError(f"Resources.mem {self.mem!r} is not a Slurm memory size like 16G")


@dataclass(frozen=True)
class Ref:
    """A reference to one task of an upstream step."""

    step: str
    task: str


#: ``TaskRecord`` field metadata: how a field enters the artifact key
UNKEYED = {"key": "never"}  # planning detail (e.g. the names of declared inputs, whose keys are hashed anyway)
KEYED_UNLESS_NONE = {"key": "unless-none"}  # left out of the key while None


@dataclass(frozen=True)
class TaskRecord:
    """A step's typed task: the values that determine its output (``key_config``, which the artifact key
    hashes and the manifest records), plus fields marked ``UNKEYED``, such as the names of its inputs."""

    def key_config(self) -> dict[str, Any]:
        """The keyed fields as plain values (nested dataclasses as dicts)."""
        plain = asdict(self)
        for f in fields(self):
            rule = f.metadata.get("key")
            if rule == "never" or (rule == "unless-none" and plain[f.name] is None):
                del plain[f.name]
        return plain


@dataclass(frozen=True)
class Task:
    """One unit of work: its output is determined by ``record`` and the artifacts of ``inputs``."""

    step: str
    id: str
    record: TaskRecord | Mapping[str, Any]  # what the step's ``run`` gets; a plain mapping in engine tests
    inputs: Mapping[str, Ref] = field(default_factory=dict)
    group: str = "main"

    @property
    def config(self) -> Mapping[str, Any]:
        """The config values the artifact key hashes."""
        return self.record.key_config() if isinstance(self.record, TaskRecord) else self.record


R = TypeVar("R", bound=TaskRecord)


def record_of(task: Task, kind: type[R]) -> R:
    """A task's record as the record type its step builds (every step's tasks carry their step's one type;
    only engine tests plan plain mappings)."""
    if not isinstance(task.record, kind):
        raise PipelineError(
            f"task {task.step}[{task.id}] has a {type(task.record).__name__} record, not {kind.__name__}"
        )
    return task.record


TasksFn = Callable[[Mapping[str, Any], Mapping[str, Sequence[Task]]], list[Task]]


@dataclass(frozen=True)
class Step:
    """The declaration of a pipeline step (see the ``jobs`` package)."""

    name: str
    version: int
    needs: tuple[str, ...]
    reads: tuple[str, ...]
    resources: Resources
    tasks: TasksFn
    run: Callable[[Context, Any], None]  # gets the task's record
    checkpointable: bool = False  # long-running: requeued and resumed after a scheduler time-out
    small: bool = False  # tasks take seconds to minutes: a scheduler packs several into one job
    description: str = ""
    report: Callable[[list[tuple[Task, dict]]], list[str]] | None = None  # status lines from summaries
    exports: Callable[[Mapping[str, Any]], str] | None = None  # where a task also writes, outside the store

    def make_tasks(self, config: Config, upstream: Mapping[str, Sequence[Task]]) -> list[Task]:
        """The step's tasks; ``tasks`` sees only the config sections the step declares it reads."""
        sections = {name: getattr(config, name) for name in self.reads}
        tasks = self.tasks(sections, upstream)
        ids = [t.id for t in tasks]
        if len(set(ids)) != len(ids):
            raise RuntimeError(f"step {self.name} declares duplicate task ids")
        return tasks


def discover(package: str = "jobs") -> dict[str, Step]:
    """All steps declared in ``package``, checked for unknown upstream names and cycles."""
    module = importlib.import_module(package)
    steps: dict[str, Step] = {}
    for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda m: m.name):
        step = getattr(importlib.import_module(f"{package}.{info.name}"), "STEP", None)
        if isinstance(step, Step):
            if step.name in steps:
                raise RuntimeError(f"two modules declare step {step.name!r}")
            steps[step.name] = step
    return ordered(steps)


def ordered(steps: Mapping[str, Step]) -> dict[str, Step]:
    """Steps in topological order; unknown upstream names and cycles are errors."""
    for step in steps.values():
        for need in step.needs:
            if need not in steps:
                raise RuntimeError(f"step {step.name!r} needs unknown step {need!r}")
    done: dict[str, Step] = {}
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = visiting[visiting.index(name) :] + [name]
            raise RuntimeError(f"steps form a cycle: {' -> '.join(cycle)}")
        visiting.append(name)
        for need in steps[name].needs:
            visit(need)
        visiting.pop()
        done[name] = steps[name]

    for name in steps:
        visit(name)
    return done


@dataclass
class Planned:
    """A task with its key, the keys of its inputs and whether its artifact already exists."""

    task: Task
    step: Step
    key: str
    inputs: dict[str, tuple[str, str]]  # input name -> (step, key)
    complete: bool
    forced: bool = False

    @property
    def needed(self) -> bool:
        return self.forced or not self.complete

    @property
    def label(self) -> str:
        return f"{self.task.step}[{self.task.id}]"


@dataclass
class Plan:
    """The selected tasks in dependency order, de-duplicated by artifact key."""

    tasks: list[Planned]
    steps: dict[str, Step]

    def pending(self) -> list[Planned]:
        return [p for p in self.tasks if p.needed]

    def by_step(self) -> dict[str, list[Planned]]:
        out: dict[str, list[Planned]] = {}
        for planned in self.tasks:
            out.setdefault(planned.task.step, []).append(planned)
        return out

    def find(self, step: str, task_id: str) -> Planned:
        for planned in self.tasks:
            if planned.task.step == step and planned.task.id == task_id:
                return planned
        raise PipelineError(f"no task {step}[{task_id}] in this plan")


def all_tasks(config: Config, steps: Mapping[str, Step]) -> dict[str, list[Task]]:
    """Every task of every step for this config, steps in topological order."""
    tasks: dict[str, list[Task]] = {}
    for name, step in steps.items():
        upstream = {need: tasks[need] for need in step.needs}
        tasks[name] = step.make_tasks(config, upstream)
        _check_inputs(step, tasks[name], tasks)
    return tasks


def _check_inputs(step: Step, tasks: Iterable[Task], known: Mapping[str, list[Task]]) -> None:
    ids = {name: {t.id for t in known[name]} for name in step.needs}
    for task in tasks:
        for ref in task.inputs.values():
            if ref.step not in step.needs:
                raise RuntimeError(f"{step.name}[{task.id}] reads {ref.step}, which it does not declare")
            if ref.task not in ids[ref.step]:
                raise RuntimeError(f"{step.name}[{task.id}] reads unknown task {ref.step}[{ref.task}]")


def select(tasks: Mapping[str, list[Task]], targets: Sequence[str]) -> set[tuple[str, str]]:
    """Tasks named by the targets (a step name, ``STEP[TASK]``, ``all`` or a group name) plus
    everything they read."""
    groups = {t.group for ts in tasks.values() for t in ts} | {"all"}
    chosen: set[tuple[str, str]] = set()
    for target in targets:
        step, _, task_id = target.partition("[")
        if task_id and step in tasks:
            task_id = task_id.removesuffix("]")
            if not any(t.id == task_id for t in tasks[step]):
                raise PipelineError(f"step {step} has no task {task_id!r}")
            chosen.add((step, task_id))
        elif target in tasks:
            chosen |= {(target, t.id) for t in tasks[target] if t.group == "main"}
        elif target in groups:
            group = "main" if target == "all" else target
            chosen |= {(t.step, t.id) for ts in tasks.values() for t in ts if t.group == group}
        else:
            raise PipelineError(f"unknown target {target!r}{suggest(target, list(tasks) + sorted(groups))}")
    index = {(t.step, t.id): t for ts in tasks.values() for t in ts}
    stack = list(chosen)
    while stack:
        for ref in index[stack.pop()].inputs.values():
            if (ref.step, ref.task) not in chosen:
                chosen.add((ref.step, ref.task))
                stack.append((ref.step, ref.task))
    return chosen


def build_plan(
    config: Config,
    store: Store,
    targets: Sequence[str],
    force: Sequence[str] = (),
    steps: Mapping[str, Step] | None = None,
) -> Plan:
    """Keys for the selected tasks in order; ``force`` reruns those steps and all their dependants."""
    steps = steps if steps is not None else discover()
    for name in force:
        if name not in steps:
            raise PipelineError(f"--force: unknown step {name!r}{suggest(name, steps)}")
    tasks = all_tasks(config, steps)
    chosen = select(tasks, targets)
    keys: dict[tuple[str, str], str] = {}
    forced_keys: set[str] = set()
    planned: list[Planned] = []
    seen: set[tuple[str, str]] = set()
    for name, step in steps.items():
        for task in tasks[name]:
            if (name, task.id) not in chosen:
                continue
            inputs = {k: (r.step, keys[(r.step, r.task)]) for k, r in task.inputs.items()}
            key = artifact_key(name, step.version, task.config, {k: v[1] for k, v in inputs.items()})
            keys[(name, task.id)] = key
            forced = name in force or any(k in forced_keys for _, k in inputs.values())
            if forced:
                forced_keys.add(key)
            if (name, key) in seen:  # an identical task (e.g. an ablation point equal to the default)
                continue
            seen.add((name, key))
            planned.append(Planned(task, step, key, inputs, store.is_complete(name, key), forced))
    return Plan(planned, dict(steps))
