"""The Slurm runner without Slurm: packing small tasks, which queued jobs are stale, submission
records, hostile artifact roots, private submission folders, the job-side runner, provenance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.dag import Ref, Resources, Step, Task, build_plan, discover
from pipeline.errors import PipelineError
from pipeline.execute import COMMIT_VARIABLE, checkout_commit, git_commit, pin_git_commit
from pipeline.runners import arrays, slurm
from pipeline.runners.arrays import array_jobs
from pipeline.runners.slurm import CANCELLED, NEVER, PENDING, RUNNING, TaskState, triage
from pipeline.runners.slurm_job import TaskRunner
from pipeline.store import MANIFEST, Store

pytestmark = pytest.mark.unit


def _run(ctx, task):  # never called
    raise AssertionError


# up[a..e] (small) -> down[<up>/<i>] (2 per up task) -> sink[<down>] (small, one per down task)
STEPS = {
    "up": Step("up", 1, (), (), Resources(), lambda s, u: [Task("up", n, {"n": n}) for n in "abcde"], _run,
               small=True),
    "down": Step("down", 1, ("up",), (), Resources(gpus=1),
                 lambda s, u: [Task("down", f"{t.id}/{i}", {"i": i}, {"src": Ref("up", t.id)})
                               for t in u["up"] for i in range(2)], _run),
    "sink": Step("sink", 1, ("down",), (), Resources(),
                 lambda s, u: [Task("sink", t.id, {}, {"src": Ref("down", t.id)}) for t in u["down"]], _run,
                 small=True),
}


@pytest.fixture(scope="module")
def config():
    return load_config("smoke")


def _complete(store: Store, step: str, key: str) -> None:
    store.path(step, key).mkdir(parents=True)
    (store.path(step, key) / MANIFEST).write_text(json.dumps({"files": {}}))


def _keys(plan) -> dict[tuple[str, str], tuple[str, str]]:
    return {(p.task.step, p.task.id): (p.task.step, p.key) for p in plan.tasks}


# --- packing ----------------------------------------------------------------------------------


def test_packed_steps_fill_elements_and_dependants_wait_on_exactly_the_elements_they_read(tmp_path, config):
    plan = build_plan(config, Store(tmp_path), ["sink"], steps=STEPS)
    jobs = array_jobs(plan, pack={"up": 2, "sink": 4})
    assert [(j.label, [len(e) for e in j.elements]) for j in jobs] == [
        ("up[*]", [2, 2, 1]), *[(f"down[{n}/*]", [1, 1]) for n in "abcde"], ("sink[*/*]", [4, 4, 2])]
    ids = {j.number: str(100 + j.number) for j in jobs}
    deps = [j.dependency(ids) for j in jobs]
    assert deps[:6] == [None, "afterok:101_0", "afterok:101_0", "afterok:101_1", "afterok:101_1", "afterok:101_2"]
    # a packed array waits on what all its elements read; every upstream element is named
    assert deps[6] == "afterok:" + ":".join(f"{job}_{i}" for job in range(102, 107) for i in range(2))
    assert jobs[6].packed and not jobs[1].packed and jobs[6].describe_after() == "down[*/*] (10 tasks in 5 jobs)"


def test_a_packed_step_with_more_elements_than_an_array_may_hold_is_split(tmp_path, config, monkeypatch):
    monkeypatch.setattr(arrays, "MAX_ARRAY", 2)
    plan = build_plan(config, Store(tmp_path), ["down"], steps=STEPS)
    jobs = array_jobs(plan, pack={"up": 2})
    assert [[len(e) for e in j.elements] for j in jobs[:2]] == [[2, 2], [1]]
    ids = {j.number: str(10 + j.number) for j in jobs}
    assert [j.dependency(ids) for j in jobs[2:]] == ["afterok:11_0"] * 2 + ["afterok:11_1"] * 2 + ["afterok:12"]


def test_only_the_missing_tasks_of_a_packed_step_are_packed_again(tmp_path, config):
    store = Store(tmp_path)
    keys = _keys(build_plan(config, store, ["up"], steps=STEPS))
    for name in "abd":
        _complete(store, *keys[("up", name)])
    (job,) = array_jobs(build_plan(config, store, ["up"], steps=STEPS), pack={"up": 16})
    assert [p.task.id for p in job.tasks] == ["c", "e"] and len(job.elements) == 1


# --- stale queued jobs ------------------------------------------------------------------------


def _state(state: str, job_id: str, queued: bool = True) -> TaskState:
    return TaskState(state, job_id, Path("log"), queued=queued)


def test_queued_jobs_whose_upstream_failed_was_cancelled_or_is_resubmitted_are_stale(tmp_path, config):
    store = Store(tmp_path)
    keys = _keys(build_plan(config, store, ["down"], steps=STEPS))
    _complete(store, *keys[("up", "c")])
    plan = build_plan(config, store, ["down"], steps=STEPS)
    states = {keys[("up", "a")]: _state(RUNNING, "11_0"),
              keys[("up", "b")]: _state(CANCELLED, "11_1", queued=False),
              keys[("up", "d")]: _state(PENDING, "11_3"),
              keys[("up", "e")]: _state(NEVER, "15")}  # Slurm says its own dependency failed
    for n, name in enumerate("abcde"):
        states.update({keys[("down", f"{name}/{i}")]: _state(PENDING, f"{12 + n}_{i}") for i in range(2)})
    found = triage(plan, states)
    healthy = {keys[t] for t in [("up", "a"), ("up", "d")] + [("down", f"{n}/{i}") for n in "acd" for i in range(2)]}
    assert set(found.queued) == healthy and found.queued[keys[("up", "a")]] == "11_0"
    assert found.stale == {**{keys[("down", f"b/{i}")]: [keys[("up", "b")]] for i in range(2)},
                           keys[("up", "e")]: [],
                           **{keys[("down", f"e/{i}")]: [keys[("up", "e")]] for i in range(2)}}


def test_one_blocked_element_makes_its_whole_pending_array_stale(tmp_path, config):
    store = Store(tmp_path)
    plan = build_plan(config, store, ["down"], steps=STEPS)
    keys = _keys(plan)
    states = {keys[("up", "a")]: _state(RUNNING, "11_0"), keys[("up", "b")]: _state("failed", "11_1", queued=False),
              keys[("down", "a/0")]: _state(PENDING, "20_0"), keys[("down", "b/0")]: _state(PENDING, "20_1"),
              keys[("down", "a/1")]: _state(RUNNING, "21_0")}
    found = triage(plan, states)
    assert set(found.stale) == {keys[("down", "a/0")], keys[("down", "b/0")]}
    assert found.stale[keys[("down", "a/0")]] == [keys[("up", "b")]]  # what the shared job waits for
    assert keys[("down", "a/1")] in found.queued  # running: left alone


# --- submission records, roots, folders -------------------------------------------------------


def _record(root: Path, **job) -> None:
    (root / slurm.RECORDS).mkdir(parents=True, exist_ok=True)
    job = {"job_id": "5", "step": "up", "tasks": [{"id": "a", "key": "k", "job_id": "5_0"}], **job}
    (root / slurm.RECORDS / "run.json").write_text(json.dumps({"run_id": "run", "log_folder": "x", "jobs": [job]}))


@pytest.mark.parametrize("job, fragment", [
    ({"job_id": "5;touch /tmp/x"}, "'5;touch /tmp/x' is not a Slurm job id"),
    ({"tasks": [{"id": "a", "key": "k", "job_id": "--me"}]}, "'--me' is not a Slurm job id"),
    ({"job_id": 5}, "5 is not a Slurm job id"),
    ({"tasks": [{"id": "a", "job_id": "5_0"}]}, "is corrupt"),
    ({"step": ["up"]}, "is corrupt"),
])
def test_submission_records_name_only_slurm_job_ids(tmp_path, job, fragment):
    _record(tmp_path, **job)
    with pytest.raises(PipelineError, match="submission record .*run.json") as err:
        slurm.cancel(tmp_path)
    assert fragment in str(err.value)


@pytest.mark.parametrize("root, shown", [("/tmp/a\nb", r"'\n'"), ("/tmp/a%x", "'%'"), ("/tmp/a\tb", r"'\t'"),
                                         ("/tmp/a\x1b[2Jb", r"'\x1b'"), ("/tmp/a\u2028b", r"'\u2028'")])
def test_artifact_roots_a_job_script_cannot_carry_are_refused(root, shown):
    with pytest.raises(PipelineError) as err:
        slurm.check_root(Path(root))
    assert repr(root) in str(err.value) and shown in str(err.value) and "\n" not in str(err.value)


def test_a_root_with_spaces_is_fine_and_the_dry_run_folders_are_private(tmp_path, config):
    root = tmp_path / "my artifacts"
    slurm.check_root(root)
    old = os.umask(0)
    try:
        submission = slurm.dry_run(build_plan(config, Store(root), ["down"], steps=STEPS), Store(root),
                                   _profile(tmp_path))
    finally:
        os.umask(old)
    assert (root / slurm.RECORDS).stat().st_mode & 0o777 == 0o700
    assert submission.folder.stat().st_mode & 0o777 == 0o700
    assert "#SBATCH --output='" in submission.jobs[0].script.read_text()  # quoted by submitit
    assert "#SBATCH --kill-on-invalid-dep=yes" in submission.jobs[0].script.read_text()


def _profile(tmp_path: Path):
    from pipeline.runners.profile import load_profile

    path = tmp_path / "profile.yaml"
    path.write_text("gpu: {partition: gpu, gres: 'gpu:v100:1'}")
    return load_profile(path, STEPS)


# --- what a job runs --------------------------------------------------------------------------

PACKAGE = "tests.unit.fakesteps"


def _runner(tmp_path: Path, config, commit: str = "c0ffee") -> TaskRunner:
    return TaskRunner(str(tmp_path / "artifacts"), config.to_dict(), ("write",), (), "write", PACKAGE, commit)


def test_a_packed_element_publishes_what_it_can_and_a_resubmission_packs_only_the_rest(tmp_path, config,
                                                                                       monkeypatch):
    monkeypatch.setenv("FAKESTEPS_FAIL", "b")
    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["write"], steps=discover(PACKAGE))
    ids, keys = [p.task.id for p in plan.tasks], [p.key for p in plan.tasks]
    with pytest.raises(PipelineError) as err:
        _runner(tmp_path, config)(ids, keys)
    assert str(err.value) == "1 of 3 tasks failed: write[b]: task b was told to fail"
    again = build_plan(config, store, ["write"], steps=discover(PACKAGE))
    assert [p.task.id for p in again.pending()] == ["b"]
    (job,) = array_jobs(again, pack={"write": 16})
    assert [[p.task.id for p in e] for e in job.elements] == [["b"]]
    with pytest.raises(PipelineError, match=r"^write\[b\]: task b was told to fail$"):
        _runner(tmp_path, config)(["b"], [keys[1]])
    monkeypatch.delenv("FAKESTEPS_FAIL")
    assert _runner(tmp_path, config)(ids, keys) == ["skipped", "ran", "skipped"]


def test_a_task_whose_key_changed_since_submitting_is_refused(tmp_path, config):
    with pytest.raises(PipelineError, match=r"write\[a\] now has key .* but was submitted as stale"):
        _runner(tmp_path, config)(["a"], ["stale"])


# --- provenance -------------------------------------------------------------------------------


def test_the_code_version_is_pinned_once_and_carried_into_jobs(tmp_path, config, monkeypatch):
    monkeypatch.delenv(COMMIT_VARIABLE, raising=False)
    assert pin_git_commit() == (checkout_commit() or "") == os.environ[COMMIT_VARIABLE]
    monkeypatch.setenv(COMMIT_VARIABLE, "1234abcd+dirty")
    assert pin_git_commit() == "1234abcd+dirty" == git_commit()  # the first pin wins
    monkeypatch.setenv(COMMIT_VARIABLE, "")
    assert git_commit() is None  # pinned outside a git checkout
    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["write"], steps=discover(PACKAGE))
    _runner(tmp_path, config, commit="feedbeef")([p.task.id for p in plan.tasks], [p.key for p in plan.tasks])
    recorded = {store.open("write", p.key).manifest["code"]["git_commit"] for p in plan.tasks}
    assert recorded == {"feedbeef"} and os.environ[COMMIT_VARIABLE] == "feedbeef"


def test_every_command_pins_the_code_version_when_it_plans(monkeypatch, tmp_path):
    from pipeline.cli_common import Session

    monkeypatch.delenv(COMMIT_VARIABLE, raising=False)
    Session(str(tmp_path)).plan("smoke", [], ["sample"])
    assert os.environ[COMMIT_VARIABLE] == (checkout_commit() or "")


# --- status -----------------------------------------------------------------------------------


def _fake(bin_dir: Path, name: str, output: str) -> None:
    """A fake Slurm query command that prints ``output``."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
    (bin_dir / name).chmod(0o755)


def test_status_names_failures_with_why_and_jobs_that_wait_forever(tmp_path, config, monkeypatch):
    from pipeline.status import report

    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["down"], steps=STEPS)
    keys = _keys(plan)
    folder = store.root / slurm.RECORDS / "run1"
    folder.mkdir(parents=True)
    (folder / "11_3_0_log.err").write_text("submitit INFO: Job not requeued because: timed-out too many times.\n")
    record = {"run_id": "run1", "log_folder": str(folder), "jobs": [
        {"job_id": "11", "step": "up", "tasks": [{"id": n, "key": keys[("up", n)][1], "job_id": f"11_{i}"}
                                                 for i, n in enumerate("abcde")]},
        *[{"job_id": f"{12 + i}", "step": "down", "tasks": [
            {"id": f"{n}/{j}", "key": keys[("down", f"{n}/{j}")][1], "job_id": f"{12 + i}_{j}"} for j in range(2)]}
          for i, n in enumerate("abcde")]]}
    (store.root / slurm.RECORDS / "run1.json").write_text(json.dumps(record))
    _fake(tmp_path / "bin", "sacct", "11_0|RUNNING|None\n11_1|CANCELLED by 0|None\n11_2|TIMEOUT|None\n"
                                     "11_3|FAILED|NonZeroExitCode\n11_4|RUNNING|None\n12_[0-1]|PENDING|Dependency\n"
                                     "13_[0-1]|PENDING|Dependency\n14_0|CANCELLED|Dependency\n"
                                     "14_1|CANCELLED|None\n15_[0-1]|PENDING|Dependency\n16_[0-1]|PENDING|Dependency")
    _fake(tmp_path / "bin", "squeue", "11_0|RUNNING|None\n11_4|RUNNING|None\n12_0|PENDING|Dependency\n"
                                      "12_1|PENDING|Dependency\n13_0|PENDING|Dependency\n13_1|PENDING|Dependency\n"
                                      "15_0|PENDING|DependencyNeverSatisfied\n15_1|PENDING|DependencyNeverSatisfied\n"
                                      "16_0|PENDING|Dependency\n16_1|PENDING|Dependency")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    lines = list(report(plan, store, config))
    assert "up             0/5 done, 2 running, 1 cancelled, 2 failed" in lines
    assert "down           0/10 done, 4 pending, 6 never (upstream failed)" in lines
    assert any(line.startswith("  c: failed (job 11_2")
               and line.endswith("hit its time limit: raise the profile's time") for line in lines), lines
    assert any(line.startswith("  d: failed (job 11_3") and "more often than the profile's max_num_timeout" in line
               for line in lines), lines
    never = [line for line in lines if line.startswith("  job ")]
    assert never == [
        "  job 13_0 (b/0) waits on a dependency that can never be satisfied: up[b] cancelled; "
        "`pipeline submit` cancels it and submits its tasks again",
        "  job 13_1 (b/1) waits on a dependency that can never be satisfied: up[b] cancelled; "
        "`pipeline submit` cancels it and submits its tasks again",
        "  job 14_0 (c/0) was cancelled by Slurm: its dependency could never be satisfied: up[c] failed; "
        "`pipeline submit` submits its tasks again",
        "  job 14_1 (c/1) was cancelled by Slurm: its dependency could never be satisfied: up[c] failed; "
        "`pipeline submit` submits its tasks again",
        "  job 15_0 (d/0) waits on a dependency that can never be satisfied: up[d] failed; "
        "`pipeline submit` cancels it and submits its tasks again",
        "  job 15_1 (d/1) waits on a dependency that can never be satisfied: up[d] failed; "
        "`pipeline submit` cancels it and submits its tasks again"]
