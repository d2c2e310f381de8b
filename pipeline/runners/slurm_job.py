"""What a Slurm job runs: rebuild the submission's plan, find its tasks, check their keys, ``execute`` them.

submitit pickles one runner call per array element; an element runs one task, or several of a
packed step one after another. The runner carries only plain data (artifact root, resolved
config, targets, forced steps, step name, the code version pinned at submit), so a job never
depends on the state of the process that submitted it, and a changed checkout or config is
detected, not silently used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from pipeline.config import Config, config_from_dict
from pipeline.dag import Plan, build_plan, discover
from pipeline.errors import PipelineError
from pipeline.execute import execute, pin_git_commit
from pipeline.store import Store


@dataclass(frozen=True)
class TaskRunner:
    """Builds tasks of ``step`` inside a job; called as ``runner(task_ids, expected_keys)``."""

    root: str
    config: dict[str, Any]
    targets: tuple[str, ...]
    force: tuple[str, ...]
    step: str
    package: str = "jobs"  # where the steps are declared
    commit: str = ""  # the code version pinned at submit (``pin_git_commit``); "" outside git

    def __call__(self, task_ids: Sequence[str], keys: Sequence[str]) -> list[str]:
        """Execute each task in turn. A task that fails with a user error does not stop the others
        (each publishes its own artifact); the failures are raised together at the end."""
        pin_git_commit(self.commit)
        config = config_from_dict(self.config)
        store = Store(Path(self.root))
        plan = build_plan(config, store, self.targets, self.force, steps=discover(self.package))
        outcomes, errors = [], []
        for task_id, key in zip(task_ids, keys):
            try:
                outcomes.append(self._execute(plan, store, config, task_id, key))
            except PipelineError as err:
                errors.append(f"{self.step}[{task_id}]: {err}")
        if errors:
            raise PipelineError("; ".join(errors) if len(task_ids) == 1 else
                                f"{len(errors)} of {len(task_ids)} tasks failed: {'; '.join(errors)}")
        return outcomes

    def _execute(self, plan: Plan, store: Store, config: Config, task_id: str, key: str) -> str:
        planned = plan.find(self.step, task_id)
        if planned.key != key:
            raise PipelineError(f"{planned.label} now has key {planned.key}, but was submitted as {key}: "
                                f"the code or the data changed since submitting; submit again")
        return execute(planned, store, config)


class ResumableTaskRunner(TaskRunner, Checkpointable):
    """A runner for checkpointable steps. On a time-out or pre-emption signal submitit calls the
    inherited ``checkpoint``, which resubmits this same call, and requeues the job; the rerun calls
    ``execute`` again: finished tasks are skipped, and the interrupted one resumes from its
    checkpoint in ``store.workdir``."""


RUNNERS: dict[bool, type[TaskRunner]] = {False: TaskRunner, True: ResumableTaskRunner}  # by Step.checkpointable
