"""Run pending tasks in worker processes, as many at once as the allotment allows.

A task starts when the tasks it reads have finished, in plan order among those ready; the first ready
task that does not fit the CPU and memory budgets waits for room and the tasks after it wait behind
it, so a large task is never starved. A failing task stops only the tasks that need it: the others
finish, and ``TasksFailed`` names each failure with its log. SIGINT or SIGTERM stops the workers at
once: what they were writing is removed, never published; training checkpoints stay, so the same
command resumes.
"""

from __future__ import annotations

import contextlib
import heapq
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config
from pipeline.dag import Planned
from pipeline.errors import PipelineError
from pipeline.runners.local.pool import Pool
from pipeline.runners.local.progress import Progress
from pipeline.runners.local.resources import Allotment
from pipeline.runners.local.worker import Job, Report
from pipeline.runners.logs import task_log
from pipeline.store import Store

Id = tuple[str, str]  # (step, key)


@dataclass(frozen=True)
class Failure:
    label: str
    error: str
    log: Path


class TasksFailed(PipelineError):
    """Tasks failed (``failures``); the tasks that needed them did not run (``not_run``, labels)."""

    def __init__(self, failures: list[Failure], not_run: list[str]):
        self.failures, self.not_run = failures, not_run
        more = f" (and {len(failures) - 1} more failed task(s))" if len(failures) > 1 else ""
        super().__init__(self.lines()[0] + more)

    def lines(self) -> list[str]:
        """One line per failed task: its label, why, and where its log is."""
        return [f"{f.label}: {f.error} (log: {f.log})" for f in self.failures]


class _Interrupted(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def log_path(store: Store, planned: Planned) -> Path:
    """Where a task's stdout and stderr go in a parallel run."""
    return task_log(store.root, planned.step.name, planned.key)


def run_parallel(
    pending: list[Planned], store: Store, config: Config, allotment: Allotment, echo: Callable[[str], None]
) -> None:
    """Run ``pending`` (in dependency order). Raises ``TasksFailed`` once the tasks that need no failed
    task have finished. On SIGINT (KeyboardInterrupt) or SIGTERM: stops the workers, removes what they
    were writing, and ends as the signal would have ended the process."""
    run = _Run(pending, store, allotment)
    progress = Progress(len(pending), echo, config.runtime.progress and sys.stderr.isatty())
    pool = Pool(allotment.workers, allotment.gpus, config.to_dict(), store.root)
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        while run.ready or run.running:
            for planned in run.startable(pool):
                progress.started(planned)
            if not run.running:
                raise RuntimeError(f"no ready task can start: {run.ready}")
            for job, report in pool.wait():
                run.finish(job, report, progress)
        pool.stop()
    except BaseException as stop:
        with _signals_ignored():
            pool.stop()
            stopped = run.discard_running()
            progress.close()
        if isinstance(stop, (KeyboardInterrupt, _Interrupted)):
            print(
                f"interrupted: stopped {len(stopped)} running task(s){_listing(stopped)}; nothing of theirs "
                f"was published, training checkpoints are kept: the same command resumes",
                file=sys.stderr,
            )
        if isinstance(stop, _Interrupted):
            signal.signal(signal.SIGTERM, previous)
            signal.raise_signal(stop.signum)  # end as the signal would have ended us
            raise SystemExit(128 + stop.signum) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.close()
    if run.failures:
        if run.not_run:
            echo(f"not run, they need a failed task: {len(run.not_run)} task(s){_listing(run.not_run)}")
        raise TasksFailed(run.failures, run.not_run)


class _Run:
    """The state of one parallel run: what waits for what, what is ready, running, done or failed."""

    def __init__(self, pending: list[Planned], store: Store, allotment: Allotment):
        self.store, self.allotment = store, allotment
        self.tasks: dict[Id, Planned] = {_id(p): p for p in pending}
        self.order = {i: n for n, i in enumerate(self.tasks)}
        self.waits_for = {i: {k for k in p.inputs.values() if k in self.tasks} for i, p in self.tasks.items()}
        self.needed_by: dict[Id, list[Id]] = {i: [] for i in self.tasks}
        for i, needs in self.waits_for.items():
            for need in needs:
                self.needed_by[need].append(i)
        self.ready = [(self.order[i], i) for i, needs in self.waits_for.items() if not needs]
        heapq.heapify(self.ready)
        self.running: dict[Id, Job] = {}
        self.cpus = self.mem = 0
        self.failures: list[Failure] = []
        self.not_run: list[str] = []

    def startable(self, pool: Pool) -> list[Planned]:
        """Send ready tasks to idle workers while they fit; returns those started."""
        started, waiting = [], []
        while self.ready and pool.any_idle():
            entry = heapq.heappop(self.ready)
            planned = self.tasks[entry[1]]
            demand = self.allotment.demands[planned.step.name]
            if not self.allotment.fits(demand, self.cpus, self.mem):
                waiting.append(entry)
                break
            worker = pool.idle(demand.gpu)
            if worker is None:  # every GPU is busy: tasks without GPUs may go ahead
                waiting.append(entry)
                continue
            job = Job(planned, demand.threads, log_path(self.store, planned))
            self.running[entry[1]] = job
            self.cpus += demand.cpus
            self.mem += demand.mem_mib
            pool.send(worker, job)
            started.append(planned)
        for entry in waiting:
            heapq.heappush(self.ready, entry)
        return started

    def finish(self, job: Job, report: Report, progress: Progress) -> None:
        planned = job.planned
        done = _id(planned)
        del self.running[done]
        demand = self.allotment.demands[planned.step.name]
        self.cpus -= demand.cpus
        self.mem -= demand.mem_mib
        if report.outcome == "failed":
            self.failures.append(Failure(planned.label, report.error, job.log))
            progress.failed(planned, str(job.log))
            self._cancel_dependants(done)
            return
        progress.finished(planned, report.seconds, report.outcome == "ran")
        for later in self.needed_by[done]:
            needs = self.waits_for.get(later)  # None: cancelled, it also needs a failed task
            if needs is None:
                continue
            needs.discard(done)
            if not needs:
                heapq.heappush(self.ready, (self.order[later], later))

    def _cancel_dependants(self, failed: Id) -> None:
        stack = list(self.needed_by[failed])
        while stack:
            later = stack.pop()
            if self.waits_for.pop(later, None) is not None:
                self.not_run.append(self.tasks[later].label)
                stack.extend(self.needed_by[later])

    def discard_running(self) -> list[str]:
        """After the workers were killed: remove what their tasks left half-written; returns their labels."""
        for step, key in self.running:
            _discard_partial(self.store, step, key)
        return [self.tasks[i].label for i in self.running]


def _discard_partial(store: Store, step: str, key: str) -> None:
    """Remove the staging directories of a task whose worker was killed, and its scratch directory if
    empty (a training checkpoint stays, to resume from); unless another runner builds it now."""
    with store.lock(step, key, wait=False) as free:
        if free:
            for staging in (store.root / step).glob(f".tmp-{key}-*"):
                shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                (store.root / step / f".work-{key}").rmdir()


def _id(planned: Planned) -> Id:
    return planned.task.step, planned.key


def _listing(labels: list[str], first: int = 5) -> str:
    if not labels:
        return ""
    more = f", ... (+{len(labels) - first})" if len(labels) > first else ""
    return ": " + ", ".join(labels[:first]) + more


def _raise_interrupted(signum: int, frame: object) -> None:
    raise _Interrupted(signum)


@contextlib.contextmanager
def _signals_ignored():
    """While stopping: a second Ctrl-C or SIGTERM must not cut the clean-up short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
