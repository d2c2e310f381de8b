"""``first``: two tasks, each finishing when its gate opens."""

from __future__ import annotations

from pipeline.dag import Resources, Step, Task
from tests.slurm.gatedsteps import wait_for_gate


def run(ctx, task: dict) -> None:
    wait_for_gate(task["name"])
    (ctx.out / "value.txt").write_text(task["name"])


STEP = Step(
    name="first",
    version=1,
    needs=(),
    reads=(),
    resources=Resources(),
    tasks=lambda sections, upstream: [Task("first", name, {"name": name}) for name in ("a", "b")],
    run=run,
    description="test-only: waits for its gate",
)
