"""What a Slurm job runs: rebuild the submission's plan, find its tasks, check their keys, ``execute`` them.

submitit pickles one runner call per array element; an element runs one task, or several of a
packed step one after another. The runner carries only plain data (artifact root, resolved
config, targets, forced steps, step name, the code version and time pinned at submit), so a job
never depends on the state of the process that submitted it, and a changed checkout or config is
detected, not silently used.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.core.utils import UncompletedJobError
from submitit.helpers import Checkpointable

from pipeline.config import Config, config_from_dict
from pipeline.dag import Plan, build_plan, discover
from pipeline.errors import PipelineError
from pipeline.execute import PLANNED_VARIABLE, execute, pin_git_commit
from pipeline.runners.logs import task_log
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
    planned: float | None = None  # when the run was submitted (``planned_at``); None: now

    def __call__(self, task_ids: Sequence[str], keys: Sequence[str]) -> list[str]:
        """Execute each task in turn, whatever the others raise: a task that fails (a user error, or
        any other exception) fails alone, its error or traceback in its own log (``task_log``) and one
        line in the job's; the failures are raised together at the end. What ends the job itself
        (submitit's time-out handling, a signal) is not caught."""
        pin_git_commit(self.commit)
        if self.planned is not None:
            os.environ[PLANNED_VARIABLE] = repr(self.planned)
        config = config_from_dict(self.config)
        store = Store(Path(self.root))
        plan = build_plan(config, store, self.targets, self.force, steps=discover(self.package))
        outcomes, errors = [], []
        for task_id, key in zip(task_ids, keys):
            log = task_log(store.root, self.step, key)
            try:
                outcomes.append(self._execute(plan, store, config, task_id, key))
            except UncompletedJobError:
                raise
            except PipelineError as err:
                errors.append(self._failed(task_id, log, str(err), f"error: {err}\n"))
            except Exception as err:
                errors.append(self._failed(task_id, log, f"{type(err).__name__}: {err}", traceback.format_exc()))
            else:
                log.unlink(missing_ok=True)  # what an earlier attempt left
        if errors:
            raise PipelineError(
                "; ".join(errors)
                if len(task_ids) == 1
                else f"{len(errors)} of {len(task_ids)} tasks failed: {'; '.join(errors)}"
            )
        return outcomes

    def _execute(self, plan: Plan, store: Store, config: Config, task_id: str, key: str) -> str:
        planned = plan.find(self.step, task_id)
        if planned.key != key:
            raise PipelineError(
                f"{planned.label} now has key {planned.key}, but was submitted as {key}: "
                f"the code or the data changed since submitting; submit again"
            )
        return execute(planned, store, config)

    def _failed(self, task_id: str, log: Path, message: str, text: str) -> str:
        """Write a failed task's own log; say so in the job's; returns the failure for the job's error."""
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(text)
        print(f"{self.step}[{task_id}] failed: {message} (log: {log})", file=sys.stderr, flush=True)
        return f"{self.step}[{task_id}]: {message}"


class ResumableTaskRunner(TaskRunner, Checkpointable):
    """A runner for checkpointable steps. On a time-out or pre-emption signal submitit calls the
    inherited ``checkpoint``, which resubmits this same call, and requeues the job; the rerun calls
    ``execute`` again: finished tasks are skipped, and the interrupted one resumes from its
    checkpoint in ``store.workdir``."""


RUNNERS: dict[bool, type[TaskRunner]] = {False: TaskRunner, True: ResumableTaskRunner}  # by Step.checkpointable
