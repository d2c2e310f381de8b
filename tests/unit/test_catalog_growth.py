"""Adding a method or an attack is one file or one spec (README, "Extending"): a throw-away method
module and a throw-away attack spec, registered in the catalogs and nowhere else, grow the smoke plan
by exactly the tasks of a twin already in the catalog (a method or attack planned the same way) with
their names swapped, and the tables and the Slurm plan take them in."""

from __future__ import annotations

import contextlib
import importlib
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import pipeline.config
import pipeline.methods
from jobs.artifacts import CLEAN, eval_task_id, unseen_pairs
from pipeline.attacks.catalog import ATTACKS
from pipeline.attacks.spec import AttackLimits, AttackSpec
from pipeline.dag import Planned
from pipeline.methods import METHODS
from pipeline.runners.slurm.arrays import array_jobs
from pipeline.store import Store
from pipeline.tools.bench.core import full_plan

pytestmark = pytest.mark.unit

METHOD, ATTACK = "throwaway", "throwaway_attack"
MODULE = f'''
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.methods import MethodSpec


@dataclass
class Params:
    strength: float = 1.0


THROWAWAY = MethodSpec("{METHOD}", "Throw-away", "transform", lambda models, p: lambda x: x, Params)
'''


@dataclass
class AttackParams:
    eps: float = 0.01


def method_twin() -> str:
    """A method planned as the throw-away one is: an input transform that reads no model."""
    return next(m for m, spec in METHODS.items() if spec.kind == "transform" and not spec.learned)


def attack_twin(config: pipeline.config.Config) -> str:
    """An attack planned as the throw-away one is: neither its spec nor the config sets its limits."""
    return next(a for a in config.attack.names if ATTACKS[a].limits == AttackLimits() and a not in config.attack.limits)


@contextlib.contextmanager
def grown_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The catalogs with the throw-away method (a module of ``pipeline.methods``, discovered) and attack
    (one more spec in ``ATTACKS``); the config schema, built from the catalogs on import, is rebuilt
    with them and again after."""
    (tmp_path / f"{METHOD}.py").write_text(MODULE)
    monkeypatch.setattr(pipeline.methods, "__path__", [*pipeline.methods.__path__, str(tmp_path)])
    before = dict(METHODS)
    found = pipeline.methods.discover()
    METHODS.clear()
    METHODS.update(found)
    monkeypatch.setitem(ATTACKS, ATTACK, AttackSpec(ATTACK, "Throw-away attack", AttackParams, "torchattacks:FGSM"))
    try:
        importlib.reload(pipeline.config)
        yield
    finally:
        METHODS.clear()
        METHODS.update(before)
        sys.modules.pop(f"pipeline.methods.{METHOD}", None)
        monkeypatch.undo()
        importlib.reload(pipeline.config)


def swapped(task_id: str, names: dict[str, str]) -> set[str]:
    """``task_id`` with every non-empty subset of its parts named in ``names`` swapped for their new name."""
    parts = task_id.split("/")
    slots = [i for i, part in enumerate(parts) if part in names]
    out = set()
    for n in range(1, len(slots) + 1):
        for chosen in itertools.combinations(slots, n):
            out.add("/".join(names[p] if i in chosen else p for i, p in enumerate(parts)))
    return out


def test_a_new_method_module_and_attack_spec_grow_the_smoke_plan_by_their_twins_tasks(tmp_path, monkeypatch):
    old_config = pipeline.config.load_config("smoke")
    old = full_plan(old_config, Store(tmp_path / "old"))
    with grown_catalog(tmp_path, monkeypatch):
        config = pipeline.config.load_config("smoke")
        assert METHOD in config.evaluate.methods and ATTACK in config.attack.names  # no config edit
        assert config.evaluate.params.throwaway.strength == 1.0  # its parameters are config values
        new = full_plan(config, Store(tmp_path / "new"))

    twins = {method_twin(): METHOD, attack_twin(old_config): ATTACK}
    old_ids = {(p.task.step, p.task.id) for p in old.tasks}
    new_ids = {(p.task.step, p.task.id) for p in new.tasks}
    # a model trained per attack is evaluated on clean images, its own attack and the attacks whose
    # seeded unseen partner it is: a new attack redraws the partners, so those tasks are derived anew
    redrawn = {(p.task.step, p.task.id) for p in old.tasks if is_per_attack_evaluation(p)}
    trained = {(p.task.config["row"], p.task.config["seed"]) for p in old.tasks if is_per_attack_evaluation(p)}
    pairs = unseen_pairs(config.attack.names, config.evaluate.unseen_seed)
    unseen = {
        ("evaluate", eval_task_id(row, train, test, None, seed))
        for row, seed in trained
        for train in config.attack.names
        for test in [CLEAN, train, *(b for b in config.attack.names if pairs[b] == train and b != train)]
    }
    # every other task of a twin is one of the throw-away's, names swapped; the ablations and the
    # convergence study name their attacks in the config, so they do not grow
    swaps = {
        (step, grown)
        for step, task_id in old_ids - redrawn
        for grown in swapped(task_id, twins)
        if step in ("attack", "train-aae", "evaluate") and old.find(step, task_id).task.group == "main"
    }
    assert new_ids == (old_ids - redrawn) | swaps | unseen
    assert {step for step, _ in swaps} == {"attack", "train-aae", "evaluate"}
    assert any(ATTACK in task_id.split("/") for _, task_id in unseen - redrawn)

    tables = next(p for p in new.tasks if p.task.step == "tabulate")
    evaluations = {(p.task.step, p.key) for p in new.tasks if p.task.step == "evaluate" and p.task.group == "main"}
    assert evaluations <= set(tables.inputs.values())

    jobs = array_jobs(new)
    elements = [p.task.id for job in jobs for element in job.elements for p in element]
    assert sorted(elements) == sorted(p.task.id for p in new.tasks)


def is_per_attack_evaluation(planned: Planned) -> bool:
    """An evaluation of a main row's model trained per attack (Tables II-III)."""
    spec = METHODS[planned.task.config["method"]] if planned.task.step == "evaluate" else None
    return spec is not None and spec.per_attack and planned.task.group == "main"
