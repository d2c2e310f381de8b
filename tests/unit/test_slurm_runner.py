"""The Slurm runner without Slurm: packing small tasks, which queued jobs are stale, submission
records, hostile artifact roots, private submission folders, the job-side runner, provenance."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.dag import Ref, Resources, Step, Task, build_plan, discover
from pipeline.errors import PipelineError
from pipeline.execute import COMMIT_VARIABLE, checkout_commit, git_commit, pin_git_commit
from pipeline.runners import slurm
from pipeline.runners.logs import task_log
from pipeline.runners.slurm import CANCELLED, NEVER, PENDING, RUNNING, TaskState, arrays, triage
from pipeline.runners.slurm.arrays import array_jobs
from pipeline.runners.slurm.job import TaskRunner
from pipeline.store import MANIFEST, Store

pytestmark = pytest.mark.unit


def _run(ctx, task):  # never called
    raise AssertionError


# up[a..e] (small) -> down[<up>/<i>] (2 per up task) -> sink[<down>] (small, one per down task)
STEPS = {
    "up": Step("up", 1, (), (), Resources(), lambda s, u: [Task("up", n, {"n": n}) for n in "abcde"], _run, small=True),
    "down": Step(
        "down",
        1,
        ("up",),
        (),
        Resources(gpus=1),
        lambda s, u: [
            Task("down", f"{t.id}/{i}", {"i": i}, {"src": Ref("up", t.id)}) for t in u["up"] for i in range(2)
        ],
        _run,
    ),
    "sink": Step(
        "sink",
        1,
        ("down",),
        (),
        Resources(),
        lambda s, u: [Task("sink", t.id, {}, {"src": Ref("down", t.id)}) for t in u["down"]],
        _run,
        small=True,
    ),
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
        ("up[*]", [2, 2, 1]),
        *[(f"down[{n}/*]", [1, 1]) for n in "abcde"],
        ("sink[*/*]", [4, 4, 2]),
    ]
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
    states = {
        keys[("up", "a")]: _state(RUNNING, "11_0"),
        keys[("up", "b")]: _state(CANCELLED, "11_1", queued=False),
        keys[("up", "d")]: _state(PENDING, "11_3"),
        keys[("up", "e")]: _state(NEVER, "15"),
    }  # Slurm says its own dependency failed
    for n, name in enumerate("abcde"):
        states.update({keys[("down", f"{name}/{i}")]: _state(PENDING, f"{12 + n}_{i}") for i in range(2)})
    found = triage(plan, states)
    healthy = {keys[t] for t in [("up", "a"), ("up", "d")] + [("down", f"{n}/{i}") for n in "acd" for i in range(2)]}
    assert set(found.queued) == healthy and found.queued[keys[("up", "a")]] == "11_0"
    assert found.stale == {
        **{keys[("down", f"b/{i}")]: [keys[("up", "b")]] for i in range(2)},
        keys[("up", "e")]: [],
        **{keys[("down", f"e/{i}")]: [keys[("up", "e")]] for i in range(2)},
    }


def test_one_blocked_element_makes_its_whole_pending_array_stale(tmp_path, config):
    store = Store(tmp_path)
    plan = build_plan(config, store, ["down"], steps=STEPS)
    keys = _keys(plan)
    states = {
        keys[("up", "a")]: _state(RUNNING, "11_0"),
        keys[("up", "b")]: _state("failed", "11_1", queued=False),
        keys[("down", "a/0")]: _state(PENDING, "20_0"),
        keys[("down", "b/0")]: _state(PENDING, "20_1"),
        keys[("down", "a/1")]: _state(RUNNING, "21_0"),
    }
    found = triage(plan, states)
    assert set(found.stale) == {keys[("down", "a/0")], keys[("down", "b/0")]}
    assert found.stale[keys[("down", "a/0")]] == [keys[("up", "b")]]  # what the shared job waits for
    assert keys[("down", "a/1")] in found.queued  # running: left alone


# --- submission records, roots, folders -------------------------------------------------------


def _record(root: Path, **job) -> None:
    (root / slurm.RECORDS).mkdir(parents=True, exist_ok=True)
    job = {"job_id": "5", "step": "up", "tasks": [{"id": "a", "key": "k", "job_id": "5_0"}], **job}
    (root / slurm.RECORDS / "run.json").write_text(json.dumps({"run_id": "run", "log_folder": "x", "jobs": [job]}))


@pytest.mark.parametrize(
    "job, fragment",
    [
        ({"job_id": "5;touch /tmp/x"}, "'5;touch /tmp/x' is not a Slurm job id"),
        ({"tasks": [{"id": "a", "key": "k", "job_id": "--me"}]}, "'--me' is not a Slurm job id"),
        ({"job_id": 5}, "5 is not a Slurm job id"),
        ({"tasks": [{"id": "a", "job_id": "5_0"}]}, "is corrupt"),
        ({"step": ["up"]}, "is corrupt"),
    ],
)
def test_submission_records_name_only_slurm_job_ids(tmp_path, job, fragment):
    _record(tmp_path, **job)
    with pytest.raises(PipelineError, match="submission record .*run.json") as err:
        slurm.cancel(tmp_path)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "root, shown",
    [
        ("/tmp/a\nb", r"'\n'"),
        ("/tmp/a%x", "'%'"),
        ("/tmp/a\tb", r"'\t'"),
        ("/tmp/a\x1b[2Jb", r"'\x1b'"),
        ("/tmp/a\u2028b", r"'\u2028'"),
    ],
)
def test_artifact_roots_a_job_script_cannot_carry_are_refused(root, shown):
    with pytest.raises(PipelineError) as err:
        slurm.check_root(Path(root))
    assert repr(root) in str(err.value) and shown in str(err.value) and "\n" not in str(err.value)


def test_a_root_with_spaces_is_fine_and_the_dry_run_folders_are_private(tmp_path, config):
    root = tmp_path / "my artifacts"
    slurm.check_root(root)
    old = os.umask(0)
    try:
        submission = slurm.dry_run(
            build_plan(config, Store(root), ["down"], steps=STEPS), Store(root), _profile(tmp_path)
        )
    finally:
        os.umask(old)
    assert (root / slurm.RECORDS).stat().st_mode & 0o777 == 0o700
    assert submission.folder.stat().st_mode & 0o777 == 0o700
    assert "#SBATCH --output='" in submission.jobs[0].script.read_text()  # quoted by submitit
    assert "#SBATCH --kill-on-invalid-dep=yes" in submission.jobs[0].script.read_text()


def _profile(tmp_path: Path):
    from pipeline.runners.slurm.profile import load_profile

    path = tmp_path / "profile.yaml"
    path.write_text("gpu: {partition: gpu, gres: 'gpu:v100:1'}")
    return load_profile(path, STEPS)


# --- what a job runs --------------------------------------------------------------------------

PACKAGE = "tests.unit.fakesteps"


def _runner(tmp_path: Path, config, commit: str = "c0ffee") -> TaskRunner:
    return TaskRunner(str(tmp_path / "artifacts"), config.to_dict(), ("write",), (), "write", PACKAGE, commit)


def test_a_packed_element_publishes_what_it_can_and_a_resubmission_packs_only_the_rest(tmp_path, config, monkeypatch):
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


def test_an_unexpected_exception_fails_its_task_alone_with_its_traceback_in_its_own_log(tmp_path, config, monkeypatch):
    monkeypatch.setenv("FAKESTEPS_BUG", "a")
    monkeypatch.setenv("FAKESTEPS_FAIL", "c")
    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["write"], steps=discover(PACKAGE))
    ids, keys = [p.task.id for p in plan.tasks], [p.key for p in plan.tasks]
    with pytest.raises(PipelineError) as err:
        _runner(tmp_path, config)(ids, keys)
    assert str(err.value) == "2 of 3 tasks failed: write[a]: KeyError: 'size'; write[c]: task c was told to fail"
    assert [store.is_complete("write", key) for key in keys] == [False, True, False]  # b ran after a raised
    logs = {task_id: task_log(store.root, "write", key) for task_id, key in zip(ids, keys)}
    assert "Traceback" in logs["a"].read_text() and logs["a"].read_text().rstrip().endswith("KeyError: 'size'")
    assert logs["c"].read_text() == "error: task c was told to fail\n" and not logs["b"].exists()
    monkeypatch.delenv("FAKESTEPS_BUG")
    monkeypatch.delenv("FAKESTEPS_FAIL")
    assert _runner(tmp_path, config)(ids, keys) == ["ran", "skipped", "ran"]
    assert not logs["a"].exists() and not logs["c"].exists()  # the earlier failures are over


def test_submitits_end_of_the_job_is_not_taken_for_a_task_failure(tmp_path, config, monkeypatch):
    """submitit ends a job out of its time-out handler by raising UncompletedJobError in the running
    task: the job must end, not go on to the next task."""
    from submitit.core.utils import UncompletedJobError

    from tests.unit.fakesteps import write

    def timed_out(ctx, task):
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    steps = {"write": dataclasses.replace(write.STEP, run=timed_out)}
    monkeypatch.setattr("pipeline.runners.slurm.job.discover", lambda package: steps)
    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["write"], steps=steps)
    with pytest.raises(UncompletedJobError):
        _runner(tmp_path, config)([p.task.id for p in plan.tasks], [p.key for p in plan.tasks])
    assert not list((store.root / ".logs").rglob("*.log"))


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


def _fake(bin_dir: Path, name: str, output: str, first: str = "", code: int = 0, stderr: str = "") -> None:
    """A fake Slurm query command: runs the shell line ``first``, prints ``output`` (and ``stderr``),
    exits with ``code``."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\n{first}\ncat <<'EOF'\n{output}\nEOF\necho '{stderr}' >&2\nexit {code}\n")
    (bin_dir / name).chmod(0o755)


def _record_run(
    store: Store,
    run_id: str,
    jobs: list[tuple[str, str, list[tuple[str, str, str]]]],
    config_name: str = "smoke",
    writes: dict[str, str] | None = None,
) -> Path:
    """A submission record: jobs as (job id, step, [(task id, key, element id)]); returns its log folder."""
    folder = store.root / slurm.RECORDS / run_id
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "run_id": run_id,
        "log_folder": str(folder),
        "config": config_name,
        "jobs": [
            {
                "job_id": job_id,
                "step": step,
                "tasks": [
                    {"id": t, "key": k, "job_id": e, "writes": [w] if (w := (writes or {}).get(t)) else []}
                    for t, k, e in tasks
                ],
            }
            for job_id, step, tasks in jobs
        ],
    }
    (store.root / slurm.RECORDS / f"{run_id}.json").write_text(json.dumps(record))
    return folder


def test_status_names_failures_with_why_and_jobs_that_wait_forever(tmp_path, config, monkeypatch):
    from pipeline.status import report

    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["down"], steps=STEPS)
    keys = _keys(plan)
    folder = store.root / slurm.RECORDS / "run1"
    folder.mkdir(parents=True)
    (folder / "11_3_0_log.err").write_text("submitit INFO: Job not requeued because: timed-out too many times.\n")
    record = {
        "run_id": "run1",
        "log_folder": str(folder),
        "jobs": [
            {
                "job_id": "11",
                "step": "up",
                "tasks": [{"id": n, "key": keys[("up", n)][1], "job_id": f"11_{i}"} for i, n in enumerate("abcde")],
            },
            *[
                {
                    "job_id": f"{12 + i}",
                    "step": "down",
                    "tasks": [
                        {"id": f"{n}/{j}", "key": keys[("down", f"{n}/{j}")][1], "job_id": f"{12 + i}_{j}"}
                        for j in range(2)
                    ],
                }
                for i, n in enumerate("abcde")
            ],
        ],
    }
    (store.root / slurm.RECORDS / "run1.json").write_text(json.dumps(record))
    _fake(
        tmp_path / "bin",
        "sacct",
        "11_0|RUNNING|None\n11_1|CANCELLED by 0|None\n11_2|TIMEOUT|None\n"
        "11_3|FAILED|NonZeroExitCode\n11_4|RUNNING|None\n12_[0-1]|PENDING|Dependency\n"
        "13_[0-1]|PENDING|Dependency\n14_0|CANCELLED|Dependency\n"
        "14_1|CANCELLED|None\n15_[0-1]|PENDING|Dependency\n16_[0-1]|PENDING|Dependency",
    )
    _fake(
        tmp_path / "bin",
        "squeue",
        "11_0|RUNNING|None\n11_4|RUNNING|None\n12_0|PENDING|Dependency\n"
        "12_1|PENDING|Dependency\n13_0|PENDING|Dependency\n13_1|PENDING|Dependency\n"
        "15_0|PENDING|DependencyNeverSatisfied\n15_1|PENDING|DependencyNeverSatisfied\n"
        "16_0|PENDING|Dependency\n16_1|PENDING|Dependency",
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    lines = list(report(plan, store, config))
    assert "up             0/5 done, 2 running, 1 cancelled, 2 failed" in lines
    assert "down           0/10 done, 4 pending, 6 never (upstream failed)" in lines
    assert any(
        line.startswith("  c: failed (job 11_2") and line.endswith("hit its time limit: raise the profile's time")
        for line in lines
    ), lines
    assert any(
        line.startswith("  d: failed (job 11_3") and "more often than the profile's max_num_timeout" in line
        for line in lines
    ), lines
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
        "`pipeline submit` cancels it and submits its tasks again",
    ]


# --- one snapshot: Slurm first, then the artifacts ---------------------------------------------


def _up_down(store: Store, config, keys) -> None:
    """up[a] running as 11_0, its two dependants down[a/*] pending on it as 12_0 and 12_1."""
    _record_run(
        store,
        "run1",
        [
            ("11", "up", [("a", keys[("up", "a")][1], "11_0")]),
            ("12", "down", [(f"a/{i}", keys[("down", f"a/{i}")][1], f"12_{i}") for i in range(2)]),
        ],
    )


@pytest.mark.parametrize("publishes_during", ["sacct", "squeue"])
def test_a_task_that_publishes_while_slurm_is_asked_is_done_and_blocks_nothing(
    tmp_path, config, monkeypatch, publishes_during
):
    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["down"], steps=STEPS)
    keys = _keys(plan)
    _up_down(store, config, keys)
    manifest = store.path(*keys[("up", "a")]) / MANIFEST
    publish = f"mkdir -p '{manifest.parent}' && echo '{{\"files\": {{}}}}' > '{manifest}'"
    bin_dir = tmp_path / "bin"
    _fake(
        bin_dir,
        "sacct",
        "11_0|RUNNING|None\n12_0|PENDING|Dependency\n12_1|PENDING|Dependency",
        publish if publishes_during == "sacct" else "",
    )
    _fake(
        bin_dir,
        "squeue",
        "11_0|COMPLETING|None\n12_0|PENDING|Dependency\n12_1|PENDING|Dependency",
        publish if publishes_during == "squeue" else "",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert not plan.tasks[0].complete  # planned before it published
    snap = slurm.snapshot(store.root, plan, strict=True)
    assert snap.states[keys[("up", "a")]].state == slurm.DONE
    found = triage(snap.plan, snap.states)
    assert not found.stale and set(found.queued) == {keys[("down", "a/0")], keys[("down", "a/1")]}
    submitted = {(p.task.step, p.task.id) for j in array_jobs(snap.plan, found.queued) for p in j.tasks}
    assert ("up", "a") not in submitted and not any(step == "down" and t.startswith("a/") for step, t in submitted)


@pytest.mark.parametrize("ids", [1, 2], ids=["one-id", "two-ids"])
def test_a_job_slurm_has_purged_is_gone_never_an_error(tmp_path, config, monkeypatch, ids):
    """squeue -j with one purged id exits 1 ("Invalid job id specified"); with two it lists nothing."""
    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["up"], steps=STEPS)
    keys = _keys(plan)
    _record_run(
        store, "run1", [(str(11 + i), "up", [(t, keys[("up", t)][1], str(11 + i))]) for i, t in enumerate("ab"[:ids])]
    )
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "sacct", "")  # accounting lost them too
    _fake(
        bin_dir,
        "squeue",
        "",
        code=1 if ids == 1 else 0,
        stderr="slurm_load_jobs error: Invalid job id specified" if ids == 1 else "",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    states = slurm.slurm_states(store.root, plan, strict=True)
    assert [(s.state, s.queued) for s in states.values()] == [(slurm.GONE, False)] * ids
    _fake(bin_dir, "squeue", "", code=1, stderr="slurm_load_jobs error: Unable to contact slurm controller")
    with pytest.raises(PipelineError, match="squeue failed: slurm_load_jobs error: Unable to contact"):
        slurm.slurm_states(store.root, plan, strict=True)
    assert {s.state for s in slurm.slurm_states(store.root, plan).values()} == {slurm.UNKNOWN}


def test_queued_jobs_of_another_plan_are_named_and_those_writing_here_may_be_cancelled(tmp_path, config, monkeypatch):
    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["up"], steps=STEPS)
    keys = _keys(plan)
    results = str(tmp_path / "results" / "smoke")
    # an older plan's tabulate-like job writing results/smoke, a packed element that also runs up[a]
    # of this plan, and one of another config writing elsewhere
    _record_run(
        store,
        "old",
        [
            ("20", "report", [("x", "oldkey1", "20")]),
            ("21", "up", [("a", keys[("up", "a")][1], "21_0"), ("b", "oldkey2", "21_0")]),
        ],
        writes={"x": results},
    )
    _record_run(
        store,
        "other",
        [("30", "report", [("x", "otherkey", "30")])],
        config_name="demo",
        writes={"x": str(tmp_path / "results" / "demo")},
    )
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "sacct", "21_0|RUNNING|None")
    _fake(bin_dir, "squeue", "20|PENDING|Dependency\n21_0|RUNNING|None\n30|PENDING|Resources")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    snap = slurm.snapshot(store.root, plan, strict=True)
    foreign = {job.job_id: job for job in snap.foreign}
    assert set(foreign) == {"20", "21_0", "30"}
    assert foreign["20"].tasks == ("report[x]",) and foreign["20"].state == slurm.PENDING
    assert foreign["21_0"].tasks == ("up[b]",) and foreign["21_0"].shared
    assert snap.states[keys[("up", "a")]].state == slurm.RUNNING  # this plan's task in the shared element
    mine = [results, str(tmp_path / "results" / "smoke" / "ablations")]
    assert [job.job_id for job in snap.foreign if job.clashes(mine)] == ["20"]
    from pipeline.status import foreign_lines

    (older, other) = foreign_lines(snap.foreign, "smoke")
    assert older.startswith(
        "2 queued jobs (2 tasks) belong to an older plan of config smoke: 20 report[x] "
        f"(pending, writes {results}), 21_0 up[b] (running)"
    )
    assert other.startswith("1 queued job (1 task) belongs to config demo: 30 report[x] (pending, writes ")


def test_a_second_holder_of_the_submission_lock_waits_and_names_the_first(tmp_path):
    heard: list[str] = []
    with (
        slurm.submission_lock(tmp_path, "submit"),
        pytest.raises(PipelineError) as err,
        slurm.submission_lock(tmp_path, "submit", heard.append, wait_s=0.5),
    ):
        pass
    holder = f"`pipeline submit` (pid {os.getpid()} on "
    assert len(heard) == 1 and heard[0].startswith(f"waiting for {holder}") and str(tmp_path) in heard[0]
    assert str(err.value).startswith(f"{tmp_path / slurm.RECORDS / slurm.LOCK} is still held by {holder}")
    released: list[float] = []

    def hold() -> None:
        with slurm.submission_lock(tmp_path, "submit"):
            time.sleep(0.5)
            released.append(time.monotonic())

    holder_thread = threading.Thread(target=hold)
    holder_thread.start()
    time.sleep(0.1)
    with slurm.submission_lock(tmp_path, "cancel", heard.append):
        got = time.monotonic()
    holder_thread.join()
    assert released and got >= released[0] and len(heard) == 2  # waited for the first, then went on


def test_status_shows_a_packed_elements_log_once_and_why_slurm_keeps_jobs_waiting(tmp_path, config, monkeypatch):
    from pipeline.status import report

    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["down"], steps=STEPS)
    keys = _keys(plan)
    folder = _record_run(
        store,
        "run1",
        [
            (
                "11",
                "up",
                [(t, keys[("up", t)][1], "11_0") for t in "abc"]
                + [(t, keys[("up", t)][1], f"11_{i}") for i, t in ((1, "d"), (2, "e"))],
            ),
            ("12", "down", [(f"d/{i}", keys[("down", f"d/{i}")][1], f"12_{i}") for i in range(2)]),
            ("13", "down", [("e/0", keys[("down", "e/0")][1], "13")]),
            ("14", "down", [("e/1", keys[("down", "e/1")][1], "14")]),
        ],
    )
    (folder / "11_0_0_log.err").write_text("up[a] failed: KeyError: 'size' (log: ...)\nsubmitit ERROR: 2 of 3 failed\n")
    for task_id, text in (("a", "Traceback (most recent call last):\nKeyError: 'size'\n"), ("c", "error: c broke\n")):
        task_log(store.root, "up", keys[("up", task_id)][1]).parent.mkdir(parents=True, exist_ok=True)
        task_log(store.root, "up", keys[("up", task_id)][1]).write_text(text)
    drained = "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions"
    _fake(tmp_path / "bin", "sacct", "11_0|FAILED|NonZeroExitCode\n11_[1-2]|RUNNING|None")
    _fake(
        tmp_path / "bin",
        "squeue",
        f"11_1|RUNNING|None\n11_2|RUNNING|None\n12_0|PENDING|{drained}\n"
        f"12_1|PENDING|{drained}\n"
        f"13|PENDING|Resources\n14|PENDING|BeginTime",
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    lines = list(report(plan, store, config))
    text = "\n".join(lines)
    assert "up             0/5 done, 3 failed, 2 running" in lines
    assert text.count("submitit ERROR: 2 of 3 failed") == 1  # the element's log once, not per task
    assert f"  job 11_0 (3 tasks *): failed (log {folder / '11_0_0_log.err'})" in lines
    assert f"    a: KeyError: 'size' (log {task_log(store.root, 'up', keys[('up', 'a')][1])})" in lines
    assert f"    c: error: c broke (log {task_log(store.root, 'up', keys[('up', 'c')][1])})" in lines
    assert "    b: stopped before the end, no log of its own" in lines
    assert any(
        line.startswith(
            f"  2 tasks d/* pending in 2 jobs (12_0, 12_1): Slurm says {drained!r}: a node "
            "it needs is down or drained: `sinfo -R` says why"
        )
        for line in lines
    ), text
    assert any(
        line.startswith("  e/0 pending in 1 job (13): Slurm says 'Resources': the nodes have no free") for line in lines
    ), text
    assert any(line.startswith("  e/1 pending in 1 job (14): Slurm says 'BeginTime'") for line in lines), text
    assert "down           0/10 done, 4 pending" in lines


# --- exports: a superseded job never overwrites newer results -----------------------------------


def test_an_export_never_replaces_one_of_a_run_planned_later(tmp_path, monkeypatch, capsys):
    from jobs.artifacts import export_tree
    from pipeline.execute import PLANNED_VARIABLE

    new, old, dst = tmp_path / "new", tmp_path / "old", tmp_path / "results" / "smoke"
    for src in (new, old):
        src.mkdir()
        (src / "table.csv").write_text(src.name)
    monkeypatch.delenv(PLANNED_VARIABLE, raising=False)
    export_tree(old, dst)  # a local run leaves nothing but its tables
    assert sorted(p.name for p in dst.parent.iterdir()) == ["smoke"]
    monkeypatch.setenv(PLANNED_VARIABLE, "2000.0")  # a Slurm job of a run submitted at 2000 s
    export_tree(new, dst)
    monkeypatch.setenv(PLANNED_VARIABLE, "1000.0")  # a job of a run submitted earlier, running late
    export_tree(old, dst)
    assert (dst / "table.csv").read_text() == "new"
    assert (
        "not replaced: it holds the export of a run submitted at 1970-01-01T00:33:20+00:00, later than this "
        "one (1970-01-01T00:16:40+00:00)" in capsys.readouterr().err
    )
    monkeypatch.delenv(PLANNED_VARIABLE)  # a local run: planned now, so it replaces them, and says so
    export_tree(old, dst)
    assert (dst / "table.csv").read_text() == "old"
    assert float((dst.parent / ".smoke.planned").read_text().split()[0]) > 2000
