"""SIGKILL at seeded random points of each step, then a rerun: nothing finished is lost, nothing
half-written is published, and the rerun ends with every artifact identical to the reference.

A kill lands a seeded random delay after the step's first staging directory appears, the delay drawn
from [0, the seconds the step's unfinished tasks took in the reference run]; tasks finished by an
earlier kill round stay finished, so later rounds hit later tasks (and resume training checkpoints).
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess

import pytest

from tests.faults._harness import check, digests, folder_digests, leftovers, ok, pipeline, spawn, wait_for

pytestmark = pytest.mark.faults

KILLS_PER_STEP = 4
KILLED_STEPS = ("sample", "attack", "train-cae", "train-aae", "evaluate", "tabulate")


@pytest.mark.parametrize("step", KILLED_STEPS)
def test_sigkill_at_random_points_then_rerun(step, reference, tmp_path, fault_log):
    rng = random.Random(f"sigkill/{step}")  # a failure names its step: rerun it with the same seed
    config = str(reference.config)
    root = reference.clone(tmp_path / "artifacts", drop=[step])
    kills, rounds = 0, 0
    while kills < KILLS_PER_STEP:
        rounds += 1
        assert rounds <= 4 * KILLS_PER_STEP, f"only {kills} kill(s) landed in {rounds - 1} rounds"
        if reference.remaining_seconds(root, step) == 0:  # all done: start the step over
            for artifact in (root / step).iterdir():
                if not artifact.name.startswith("."):
                    shutil.rmtree(artifact)
        delay = rng.uniform(0, reference.remaining_seconds(root, step))
        before, staged = digests(root), set((root / step).glob(".tmp-*"))
        proc = spawn(tmp_path, root, "run", step, "--config", config, log=tmp_path / f"round{rounds}")
        if wait_for(lambda staged=staged: bool(set((root / step).glob(".tmp-*")) - staged), proc):
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:  # still running after the delay: kill it there
                proc.send(signal.SIGKILL)
        code = proc.finish()
        killed = code == -signal.SIGKILL
        assert killed or code == 0, proc.stderr[-3000:]
        found = check(root, before, reference.digests)
        if killed:
            kills += 1
            fault_log(
                f"SIGKILL in {step}",
                survived=found.survived,
                lost=len(found.lost),
                note="seeded delay after its first staging dir",
            )
        assert found.survived, (found.lost, found.half_published)

    ok(pipeline(tmp_path, root, "run", step, "--config", config))
    ok(pipeline(tmp_path, root, "clean"))
    assert leftovers(root) == [], "pipeline clean left these behind"
    assert digests(root) == reference.digests
    if step == "tabulate":
        results = reference.results_dir(tmp_path)
        assert folder_digests(results) == reference.results
        # export_tree's own staging next to results/<config>/: outside the artifact root, so no
        # `pipeline clean` sweeps it; reported, not failed (jobs/artifacts.py is not this suite's to fix)
        stale = sorted(p.name for p in results.parent.glob(f".{results.name}.*"))
        if stale:
            fault_log(f"SIGKILL in {step}", note=f"stale results/{stale[0]}", count=False)
