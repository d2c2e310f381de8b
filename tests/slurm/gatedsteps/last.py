"""``last``: one task reading every ``second`` task."""

from __future__ import annotations

from pipeline.dag import Ref, Resources, Step, Task


def run(ctx, task: dict) -> None:
    second = [ctx.inputs[name] for name in sorted(ctx.inputs)]  # every input is a ``second`` task
    (ctx.out / "value.txt").write_text(",".join(a.file("value.txt").read_text() for a in second))


STEP = Step(
    name="last",
    version=1,
    needs=("second",),
    reads=(),
    resources=Resources(),
    tasks=lambda sections, upstream: [
        Task("last", "all", {}, {f"second:{t.id}": Ref("second", t.id) for t in upstream["second"]})
    ],
    run=run,
    description="test-only: reads everything",
)
