"""Two processes on one artifact root at once.

What keeps them correct: ``execute`` builds an artifact only while holding its per-artifact
``flock`` (``<root>/.locks/<step>-<key>.lock``) and re-checks for a manifest once it has the lock,
so the second runner waits, then skips what the first published; each artifact is written in a
private staging directory and published by one atomic rename, so neither ever sees the other's
half-written files. ``pipeline clean`` only sweeps staging directories whose lock it can take.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.faults._harness import check, digests, folder_digests, leftovers, ok, pipeline, spawn, wait_for

pytestmark = pytest.mark.faults

BUILT = re.compile(r"^\S+ -> (\S+/\w+) \(", re.M)


def test_two_runs_on_one_root_build_each_artifact_once(reference, tmp_path, fault_log):
    dropped = ["evaluate", "tabulate"]
    root = reference.clone(tmp_path / "artifacts", drop=dropped)  # both runs contend for every one of these tasks
    before = digests(root)
    args = ("run", "all", "--config", str(reference.config))
    first = spawn(tmp_path, root, *args, log=tmp_path / "first")
    second = spawn(tmp_path, root, *args, log=tmp_path / "second")
    codes = (first.finish(), second.finish())
    found = check(root, before, reference.digests)
    built = BUILT.findall(first.stdout) + BUILT.findall(second.stdout)
    expected = {f"{s}/{k}" for s, k in reference.seconds if s in dropped}
    fault_log(
        "two `pipeline run all` at once",
        survived=found.survived and codes == (0, 0),
        lost=len(found.lost),
        note=f"{len(BUILT.findall(first.stdout))}+{len(BUILT.findall(second.stdout))} tasks built; "
        "per-artifact flock + atomic rename",
    )
    assert codes == (0, 0), (first.stderr[-2000:], second.stderr[-2000:])
    assert found.survived, found
    assert sorted(built) == sorted(expected), "an artifact was built twice, or not at all"
    assert digests(root) == reference.digests
    assert folder_digests(reference.results_dir(tmp_path)) == reference.results
    assert leftovers(root) == []


def test_clean_during_a_run_leaves_its_staging_alone(reference, tmp_path, fault_log):
    root = reference.clone(tmp_path / "artifacts", drop=["evaluate", "tabulate"])
    before = digests(root)
    run = spawn(tmp_path, root, "run", "all", "--config", str(reference.config), log=tmp_path / "run")
    cleans = 0
    while run.poll() is None:
        if wait_for(lambda: any(root.glob("*/.tmp-*")), run):
            ok(pipeline(tmp_path, root, "clean"))
            cleans += 1
        time.sleep(0.2)
    found = check(root, before, reference.digests)
    fault_log(
        "`pipeline clean` during a run",
        survived=found.survived and run.returncode == 0,
        lost=len(found.lost),
        note=f"{cleans} cleans; sweep skips staging dirs whose lock is held",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert cleans >= 3 and found.survived, found
    assert digests(root) == reference.digests
