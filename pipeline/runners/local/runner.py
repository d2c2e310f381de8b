"""The embedded runner: every pending task in dependency order, on this machine.

One task at a time runs in this process (``-j 1``, or when the machine's resources allow no more: see
``resources``); more run in worker processes (``parallel``).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable

from tqdm import tqdm

from pipeline.config import Config
from pipeline.dag import Plan, Planned
from pipeline.errors import PipelineError
from pipeline.execute import execute
from pipeline.runners.local.resources import allot, detect_machine
from pipeline.store import Store


def parse_jobs(text: str) -> int:
    """The value of ``-j``: a whole number >= 0 (0: as many as the machine allows)."""
    try:
        jobs = int(text)
    except ValueError:
        jobs = -1
    if jobs < 0:
        raise PipelineError(
            f"-j/--jobs {text!r}: expected a number of tasks at once (1, 2, ...; 0: as many as "
            f"the machine's cores, GPUs and memory allow)"
        )
    return jobs


def run_plan(
    plan: Plan, store: Store, config: Config, echo: Callable[[str], None] = print, jobs: int | None = None
) -> int:
    """Run the plan's pending tasks, ``jobs`` at once (default ``runtime.jobs``; 0: as many as the
    machine allows); returns how many ran. When tasks fail, the others still finish and
    ``TasksFailed`` is raised; with one task at a time, the first failure stops the run."""
    pending = plan.pending()
    skipped = Counter(p.task.step for p in plan.tasks if not p.needed)
    if skipped:
        echo("up to date, skipped: " + ", ".join(f"{step} ({n})" for step, n in skipped.items()))
    if not pending:
        echo("nothing to do")
        return 0
    runtime = config.runtime
    allotment = allot(pending, detect_machine(runtime.device), runtime.jobs if jobs is None else jobs, runtime.threads)
    if allotment.workers == 1:
        _run_here(pending, store, config, echo)
    else:
        from pipeline.runners.local.parallel import run_parallel

        run_parallel(pending, store, config, allotment, echo)
    echo(f"done: {len(pending)} task(s)")
    return len(pending)


def _run_here(pending: list[Planned], store: Store, config: Config, echo: Callable[[str], None]) -> None:
    """One task after the other in this process, a progress bar on a terminal."""
    bar = tqdm(pending, unit="task", disable=not (config.runtime.progress and sys.stderr.isatty()))
    for planned in bar:
        bar.set_description(planned.label)
        started = time.time()
        outcome = execute(planned, store, config)
        if outcome == "ran":
            echo(f"{planned.label} -> {planned.step.name}/{planned.key} ({time.time() - started:.1f} s)")
