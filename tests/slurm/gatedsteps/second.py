"""``second``: one small task per ``first`` task, reading it."""

from __future__ import annotations

from pipeline.dag import Ref, Resources, Step, Task


def run(ctx, task: dict) -> None:
    (ctx.out / "value.txt").write_text(ctx.input("first").file("value.txt").read_text() + "+second")


STEP = Step(
    name="second",
    version=1,
    needs=("first",),
    reads=(),
    resources=Resources(),
    tasks=lambda sections, upstream: [
        Task("second", t.id, {}, {"first": Ref("first", t.id)}) for t in upstream["first"]
    ],
    run=run,
    small=True,
    description="test-only: packed",
)
