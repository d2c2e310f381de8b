"""``countdown``: a checkpointable step that counts slowly, saving its progress in ``ctx.work``.

A rerun after a requeue continues from the saved count; the artifact records where each run started.
"""

from __future__ import annotations

import json
import os
import time

from pipeline.dag import Resources, Step, Task

STEPS = 40
SECONDS_PER_STEP = 0.5


def progress(work) -> dict:
    path = work / "progress.json"
    return json.loads(path.read_text()) if path.exists() else {"count": 0, "starts": []}


def run(ctx, task: Task) -> None:
    state = progress(ctx.work)
    state["starts"].append(state["count"])
    while state["count"] < task.config["steps"]:
        time.sleep(SECONDS_PER_STEP)
        state["count"] += 1
        tmp = ctx.work / "progress.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, ctx.work / "progress.json")
    (ctx.out / "count.json").write_text(json.dumps(state))
    ctx.summary["starts"] = state["starts"]


STEP = Step(
    name="countdown",
    version=1,
    needs=(),
    reads=(),
    resources=Resources(cpus=1, mem="500M", time="00:10:00"),
    tasks=lambda sections, upstream: [Task("countdown", "only", {"steps": STEPS})],
    run=run,
    checkpointable=True,
    description="test-only checkpointable step",
)
