"""What a Slurm job runs: rebuild the submission's plan, find its task, check the key, ``execute`` it.

submitit pickles one runner call per array task. The runner carries only plain data (artifact
root, resolved config, targets, forced steps, step name), so a job never depends on the state of
the process that submitted it, and a changed checkout or config is detected, not silently used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from pipeline.config import config_from_dict
from pipeline.dag import build_plan, discover
from pipeline.errors import PipelineError
from pipeline.execute import execute
from pipeline.store import Store


@dataclass(frozen=True)
class TaskRunner:
    """Builds one task of ``step`` inside a job; called as ``runner(task_id, expected_key)``."""

    root: str
    config: dict[str, Any]
    targets: tuple[str, ...]
    force: tuple[str, ...]
    step: str
    package: str = "jobs"  # where the steps are declared

    def __call__(self, task_id: str, key: str) -> str:
        config = config_from_dict(self.config)
        store = Store(Path(self.root))
        plan = build_plan(config, store, self.targets, self.force, steps=discover(self.package))
        planned = plan.find(self.step, task_id)
        if planned.key != key:
            raise PipelineError(f"{planned.label} now has key {planned.key}, but was submitted as {key}: "
                                f"the code or the data changed since submitting; submit again")
        return execute(planned, store, config)


class ResumableTaskRunner(TaskRunner, Checkpointable):
    """A runner for checkpointable steps. On a time-out or pre-emption signal submitit calls the
    inherited ``checkpoint``, which resubmits this same call, and requeues the job; the rerun calls
    ``execute`` again and the step resumes from its checkpoint in ``store.workdir``."""


RUNNERS: dict[bool, type[TaskRunner]] = {False: TaskRunner, True: ResumableTaskRunner}  # by Step.checkpointable
