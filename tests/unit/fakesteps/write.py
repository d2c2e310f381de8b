"""``write``: three tiny independent tasks; the ones named in ``$FAKESTEPS_FAIL`` fail with a user error,
those in ``$FAKESTEPS_BUG`` with an unexpected exception."""

from __future__ import annotations

import os

from pipeline.dag import Resources, Step, Task
from pipeline.errors import PipelineError


def run(ctx, task: dict) -> None:
    name = task["name"]  # the task's id
    if name in os.environ.get("FAKESTEPS_FAIL", "").split(","):
        raise PipelineError(f"task {name} was told to fail")
    if name in os.environ.get("FAKESTEPS_BUG", "").split(","):
        raise KeyError("size")  # as a manifest file entry without "size" once raised in Artifact.verify
    (ctx.out / "value.txt").write_text(name)


STEP = Step(
    name="write",
    version=1,
    needs=(),
    reads=(),
    resources=Resources(),
    tasks=lambda sections, upstream: [Task("write", name, {"name": name}) for name in ("a", "b", "c")],
    run=run,
    small=True,
    description="test-only small step",
)
