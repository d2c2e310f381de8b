"""Step declarations, the DAG and plan keys."""

from dataclasses import dataclass, field

import pytest

from pipeline.config import load_config
from pipeline.dag import (
    KEYED_UNLESS_NONE,
    UNKEYED,
    Ref,
    Resources,
    Step,
    Task,
    TaskRecord,
    all_tasks,
    build_plan,
    discover,
    ordered,
)
from pipeline.errors import PipelineError
from pipeline.store import Store

pytestmark = pytest.mark.unit


def _step(name, needs=(), tasks=None):
    return Step(
        name, 1, tuple(needs), (), Resources(), tasks or (lambda cfg, up: [Task(name, "t", {})]), lambda ctx, task: None
    )


def test_unknown_upstream_and_cycles_are_errors():
    with pytest.raises(RuntimeError, match="needs unknown step 'nope'"):
        ordered({"a": _step("a", ["nope"])})
    with pytest.raises(RuntimeError, match="cycle: a -> b -> a"):
        ordered({"a": _step("a", ["b"]), "b": _step("b", ["a"])})
    assert list(ordered({"b": _step("b", ["a"]), "a": _step("a")})) == ["a", "b"]


def test_resources_are_validated():
    with pytest.raises(ValueError, match="time"):
        Resources(time="4h")
    with pytest.raises(ValueError, match="mem"):
        Resources(mem="lots")


def test_the_jobs_package_declares_the_pipeline():
    steps = discover()
    assert list(steps)[0] == "sample"
    assert {"sample", "train-victim", "attack"} <= set(steps)


def _keys(config, steps=None):
    plan = build_plan(config, Store("/nonexistent"), ["all"], steps=steps)
    return {(p.task.step, p.task.id): p.key for p in plan.tasks}


def test_key_changes_with_a_read_value_and_propagates_downstream():
    base = _keys(load_config("smoke"))
    reseeded = _keys(load_config("smoke", ["sample.seed=2"]))
    for (step, task_id), key in base.items():
        assert reseeded[(step, task_id)] != key, f"{step}[{task_id}] kept its key"


def test_key_stays_when_an_unread_value_changes():
    base = _keys(load_config("smoke"))
    assert _keys(load_config("smoke", ["runtime.threads=1", "runtime.device=cpu"])) == base
    bootstrap = _keys(load_config("smoke", ["tables.bootstrap=9"]))
    assert {k for k in base if bootstrap[k] != base[k]} == {("tabulate", "tables")}
    pgd = _keys(load_config("smoke", ["attack.params.pgd.steps=3"]))
    changed = {k for k in base if pgd[k] != base[k]}
    assert changed and all(k[0] != "attack" or "/pgd/" in k[1] for k in changed)
    assert all(k[0] not in ("sample", "train-victim") for k in changed)


def test_tasks_must_declare_what_they_read():
    bad = _step("b", ["a"], lambda cfg, up: [Task("b", "t", {}, {"x": Ref("a", "missing")})])
    with pytest.raises(RuntimeError, match="reads unknown task a\\[missing\\]"):
        build_plan(load_config("smoke"), Store("/x"), ["all"], steps=ordered({"a": _step("a"), "b": bad}))


def test_targets_select_a_step_and_its_ancestors():
    plan = build_plan(load_config("smoke"), Store("/x"), ["train-victim"])
    assert {p.task.step for p in plan.tasks} == {"sample", "train-victim"}
    with pytest.raises(PipelineError, match="unknown target 'atack'.*did you mean 'attack'"):
        build_plan(load_config("smoke"), Store("/x"), ["atack"])


def test_force_reruns_the_step_and_its_dependants(tmp_path):
    plan = build_plan(load_config("smoke"), Store(tmp_path), ["attack"], force=["train-victim"])
    forced = {p.task.step for p in plan.tasks if p.forced}
    assert forced == {"train-victim", "attack"}


def test_a_single_task_can_be_targeted():
    plan = build_plan(load_config("smoke"), Store("/x"), ["attack[test/fgsm/000000]"])
    assert {(p.task.step, p.task.id) for p in plan.tasks if p.task.step == "attack"} == {("attack", "test/fgsm/000000")}
    with pytest.raises(PipelineError, match="step attack has no task 'test/nope'"):
        build_plan(load_config("smoke"), Store("/x"), ["attack[test/nope]"])


@dataclass(frozen=True)
class _Record(TaskRecord):
    value: int
    digest: str | None = field(default=None, metadata=KEYED_UNLESS_NONE)
    reads: tuple[str, ...] = field(default=(), metadata=UNKEYED)


def test_a_record_keys_its_fields_but_not_declared_input_names_nor_an_absent_optional_value():
    assert _Record(1, None, ("adv-000000",)).key_config() == {"value": 1}
    assert _Record(1, "abc").key_config() == {"value": 1, "digest": "abc"}
    task = Task("s", "t", _Record(2, reads=("x",)))
    assert task.config == {"value": 2} and task.record.reads == ("x",)


def test_every_step_of_the_jobs_package_plans_typed_records():
    tasks = all_tasks(load_config("smoke"), discover())
    assert all(isinstance(t.record, TaskRecord) for ts in tasks.values() for t in ts)
