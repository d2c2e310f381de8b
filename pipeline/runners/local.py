"""The embedded runner: every pending task in dependency order, in this process."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable

from tqdm import tqdm

from pipeline.config import Config
from pipeline.dag import Plan
from pipeline.execute import execute
from pipeline.store import Store


def run_plan(plan: Plan, store: Store, config: Config, echo: Callable[[str], None] = print) -> int:
    """Run the plan's pending tasks; returns how many ran."""
    pending = plan.pending()
    skipped = Counter(p.task.step for p in plan.tasks if not p.needed)
    if skipped:
        echo("up to date, skipped: " + ", ".join(f"{step} ({n})" for step, n in skipped.items()))
    if not pending:
        echo("nothing to do")
        return 0
    bar = tqdm(pending, unit="task", disable=not (config.runtime.progress and sys.stderr.isatty()))
    for planned in bar:
        bar.set_description(planned.label)
        started = time.time()
        outcome = execute(planned, store, config)
        if outcome == "ran":
            echo(f"{planned.label} -> {planned.step.name}/{planned.key} ({time.time() - started:.1f} s)")
    echo(f"done: {len(pending)} task(s)")
    return len(pending)
