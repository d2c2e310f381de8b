"""Slurm under real use: five everyday situations on the test cluster, each ending with no error,
nothing healthy cancelled, no task queued twice and, where tables are made, tables equal to a local
run's:

1. a job id Slurm has purged (after MinJobAge) is gone, never fatal to ``submit``;
2. a task finishing during ``submit`` or ``status`` is done, never a blocker;
3. jobs of a superseded config are named, the one that would write ``results/<config>`` is
   cancelled, and a superseded job that runs anyway never overwrites the newer tables;
4. two ``submit`` at once queue every task once; ``status`` and ``cancel`` cover every submission;
5. a crash inside a packed element fails that task alone, with its error in its own log.

And ``status`` says why Slurm keeps jobs waiting on a drained node. The real pipeline runs a
narrowed smoke config (one attack; identity, JPEG and the AAE), copied from one local run.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.dag import build_plan, discover
from pipeline.runners import slurm
from pipeline.runners.logs import task_log
from pipeline.runners.slurm import states as slurm_snapshot
from pipeline.runners.slurm.profile import load_profile
from pipeline.status import report
from pipeline.store import Store
from tests.faults._harness import digests, folder_digests
from tests.slurm.conftest import (
    PIPELINE,
    REPO,
    checked,
    in_queue,
    pipeline,
    sacct,
    wait_for_empty_queue,
    wait_for_jobs,
    wait_until,
)
from tests.slurm.gatedsteps import GATES

pytestmark = pytest.mark.slurm

CONFIG = {
    "extends": "smoke",
    "attack": {"names": ["fgsm"]},
    "evaluate": {"methods": ["identity", "jpeg", "ours"]},
    "seeds": [0],
    "aae": {"variants": {}},
    "cae": {"variants": {}},
    "victim": {"noise_seeds": []},
    "ablation": {"variants": []},
    "runtime": {"threads": 1, "progress": False},
}
PROFILE = {
    "cpus_per_task": 1,
    "mem": "2G",
    "time": "15",
    "array_throttle": 2,
    "cpu": {"partition": "debug"},
    "gpu": {"partition": "gpu", "gres": "gpu:0"},
}
HELD = {"extra": {"hold": True}}
JPEG_50 = ("--set", "evaluate.params.jpeg.quality=50")


@dataclass
class Real:
    """The narrowed pipeline, run locally once: its config, root, artifact digests and tables."""

    cwd: Path
    config: Path
    root: Path
    digests: dict[str, str]
    tables: dict[str, str]

    def copy(self, cwd: Path, without: tuple[str, ...] = (), jpeg: bool = True) -> Path:
        """A copy of the root in ``cwd`` without the steps ``without`` (nor the JPEG evaluations)."""
        root = cwd / "artifacts"
        shutil.copytree(self.root, root, ignore=lambda folder, names: without if Path(folder) == self.root else ())
        if not jpeg:
            for manifest in root.glob("evaluate/*/MANIFEST.json"):
                if json.loads(manifest.read_text())["config"]["method"] == "jpeg":
                    shutil.rmtree(manifest.parent)
        return root

    def results(self, cwd: Path) -> dict[str, str]:
        return folder_digests(cwd / "results" / self.config.stem)


@pytest.fixture(scope="module")
def real(slurm_cluster, tmp_path_factory) -> Real:
    cwd = tmp_path_factory.mktemp("real")
    config = cwd / "real.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "sample": {"manifest_dir": str(cwd / "manifests")}}))
    checked(pipeline("--artifacts", str(cwd / "artifacts"), "run", "all", "--config", str(config), cwd=cwd))
    out = Real(cwd, config, cwd / "artifacts", {}, {})
    out.digests, out.tables = digests(out.root), out.results(cwd)
    return out


def _profile(path: Path, *extra: dict) -> Path:
    profile = json.loads(json.dumps(PROFILE))
    for more in extra:
        profile.update(more)
    path.write_text(yaml.safe_dump(profile))
    return path


def _submit(cwd: Path, root: Path, real: Real, profile: Path, *args: str) -> tuple[str, dict]:
    """``pipeline submit all``: its output and the record it wrote (or the latest one)."""
    done = checked(
        pipeline(
            "--artifacts",
            str(root),
            "submit",
            "all",
            "--config",
            str(real.config),
            *args,
            "--profile",
            str(profile),
            cwd=cwd,
        )
    )
    return done.stdout, _latest(root)


def _latest(root: Path) -> dict:
    return json.loads(sorted((root / slurm.RECORDS).glob("*.json"))[-1].read_text())


def _status(cwd: Path, root: Path, real: Real, *args: str) -> subprocess.CompletedProcess:
    return pipeline("--artifacts", str(root), "status", "--config", str(real.config), *args, cwd=cwd)


def _jobs(*records: dict) -> list[str]:
    return [job["job_id"] for record in records for job in record["jobs"]]


def _elements(*records: dict) -> list[str]:
    return list(dict.fromkeys(t["job_id"] for record in records for job in record["jobs"] for t in job["tasks"]))


def _refs(*records: dict) -> list[tuple[str, str]]:
    return [(job["step"], t["key"]) for record in records for job in record["jobs"] for t in job["tasks"]]


# --- 1. a purged job --------------------------------------------------------------------------


@contextlib.contextmanager
def _min_job_age(cluster: Path, seconds: int) -> Iterator[None]:
    """MinJobAge lowered on the running test cluster (``scontrol reconfigure``), then restored."""
    conf = cluster / "slurm.conf"
    original = conf.read_text()
    conf.write_text(re.sub(r"^MinJobAge=\d+$", f"MinJobAge={seconds}", original, flags=re.M))
    subprocess.run(["scontrol", "reconfigure"], check=True)
    try:
        yield
    finally:
        conf.write_text(original)
        subprocess.run(["scontrol", "reconfigure"], check=True)


def test_a_purged_job_id_is_gone_and_submit_goes_on(real, slurm_cluster, tmp_path, fault_log):
    root = real.copy(tmp_path, without=("tabulate",))
    _, first = _submit(tmp_path, root, real, _profile(tmp_path / "held.yaml", HELD))
    (job,) = _jobs(first)
    subprocess.run(["scancel", job], check=True)
    with _min_job_age(slurm_cluster, 10):
        forgotten = wait_until(
            lambda: (
                (q := subprocess.run(["squeue", "-j", job], capture_output=True, text=True)).returncode == 1
                and q.stderr.strip()
            ),
            240,
            f"Slurm to purge job {job}",
            every=2.0,
        )
    status = _status(tmp_path, root, real)
    output, again = _submit(tmp_path, root, real, _profile(tmp_path / "p.yaml"))
    wait_for_jobs(_jobs(again), 1, seconds=300)
    tables = real.results(tmp_path) == real.tables
    fault_log(
        "Slurm: a purged job id in the submission records",
        survived=status.returncode == 0 and tables,
        note=f"`squeue -j ID` exited 1 ({forgotten}); status and submit went on, the task submitted again; "
        f"tables equal a local run's",
    )
    assert "Invalid job id specified" in forgotten
    assert status.returncode == 0 and "tables: cancelled (job " in status.stdout, status.stderr
    assert "submitted run" in output and _refs(again) == _refs(first)
    assert tables and digests(root) == real.digests


# --- 2. a task finishing during submit or status ------------------------------------------------

GATED = "tests.slurm.gatedsteps"


def test_a_task_finishing_during_submit_or_status_is_done_not_a_blocker(
    slurm_cluster, tmp_path, monkeypatch, fault_log
):
    """first[a] and first[b] run until the test opens their gates; second (packed) and last wait on
    them. first[a] publishes after ``submit`` made its plan, before it reads anything (as in the
    issue); first[b]'s job ends after ``status`` looked at the artifacts it would ask Slurm about,
    before Slurm answers (which would read "completed" for a task whose artifact was just missing)."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the jobs import the gated steps
    monkeypatch.setenv(GATES, str(tmp_path / "gates"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gates").mkdir()
    steps, config, store = discover(GATED), load_config("smoke"), Store(tmp_path / "artifacts")
    profile_path = tmp_path / "gated.yaml"
    profile_path.write_text(yaml.safe_dump({"mem": "300M", "time": "10", "cpu": {"partition": "debug"}}))
    profile = load_profile(profile_path, steps)

    def plan():
        return build_plan(config, store, ["last"], steps=steps)

    first = slurm.submit(plan(), store, config, profile, ["last"], package=GATED)
    ids = [s.job_id for s in first.jobs]
    elements = {
        p.task.id: element
        for s in first.jobs
        if s.job.step.name == "first"
        for e, element in zip(s.job.elements, s.element_ids)
        for p in e
    }
    keys = {(p.task.step, p.task.id): p.key for p in plan().tasks}
    wait_until(lambda: {in_queue(ids).get(elements[t]) for t in "ab"} == {"RUNNING"}, 180, "first[a|b] to run")

    def finish(task: str) -> None:
        (tmp_path / "gates" / task).touch()
        wait_until(lambda: elements[task] not in in_queue(ids), 120, f"first[{task}]'s job to end")

    stale_plan = plan()
    finish("a")
    second = slurm.submit(stale_plan, store, config, profile, ["last"], package=GATED)
    queue = in_queue(ids)
    asked = slurm_snapshot._scheduler_states

    def ends_before_slurm_answers(*args):
        finish("b")
        return asked(*args)

    monkeypatch.setattr(slurm_snapshot, "_scheduler_states", ends_before_slurm_answers)
    lines = list(report(plan(), store, config))
    monkeypatch.setattr(slurm_snapshot, "_scheduler_states", asked)
    text = "\n".join(lines)
    ok = not second.jobs and not second.cancelled and "never" not in text and slurm.MISSING not in text
    fault_log(
        "Slurm: a task finishing during `submit` or `status`",
        survived=ok,
        note="one published after submit planned, one ended while status asked Slurm: done, nothing "
        "cancelled, nothing submitted again",
    )
    assert not any(p.complete for p in stale_plan.tasks)  # the plan was made before first[a] published
    assert not second.jobs and not second.cancelled and not second.superseded, second
    assert set(second.queued) == {
        ("first", keys[("first", "b")]),
        *(("second", keys[("second", t)]) for t in "ab"),
        ("last", keys[("last", "all")]),
    }
    assert set(queue.values()) == {"RUNNING", "PENDING"} and elements["b"] in queue  # nothing cancelled
    assert "first          2/2 done" in lines and "never" not in text and slurm.MISSING not in text, lines
    finished = wait_for_jobs(ids, len(_elements(_latest(store.root))), seconds=300)
    assert set(finished.values()) == {"COMPLETED"}
    assert len(list((store.root / slurm.RECORDS).glob("*.json"))) == 1 and not plan().pending()
    assert store.open("last", keys[("last", "all")]).file("value.txt").read_text() == "a+second,b+second"


# --- 3. a superseded config --------------------------------------------------------------------


def test_jobs_of_a_superseded_config_are_named_and_the_one_writing_its_results_cancelled(real, tmp_path, fault_log):
    """The JPEG rows' quality changes while the old plan's JPEG evaluations and tabulate wait in the
    queue (held). ``submit`` cancels the old tabulate (it writes results/real), names the old JPEG
    job and leaves it; an old tabulate of another root, released after the new tables are written,
    does not overwrite them."""
    local = tmp_path / "local"
    local.mkdir()
    real.copy(local, without=("tabulate",), jpeg=False)
    checked(
        pipeline(
            "--artifacts", str(local / "artifacts"), "run", "all", "--config", str(real.config), *JPEG_50, cwd=local
        )
    )
    other = tmp_path / "other-root"
    other.mkdir()
    other_root = real.copy(other, without=("tabulate",))
    held = _profile(tmp_path / "held.yaml", HELD)
    checked(
        pipeline(
            "--artifacts",
            str(other_root),
            "submit",
            "all",
            "--config",
            str(real.config),
            "--profile",
            str(held),
            cwd=tmp_path,
        )
    )
    old_elsewhere = _latest(other_root)
    root = real.copy(tmp_path, without=("tabulate",), jpeg=False)
    _, old = _submit(tmp_path, root, real, held)
    old_jpeg = next(t["job_id"] for j in old["jobs"] if j["step"] == "evaluate" for t in j["tasks"])
    (old_tabulate,) = [j["job_id"] for j in old["jobs"] if j["step"] == "tabulate"]
    output, new = _submit(tmp_path, root, real, _profile(tmp_path / "p.yaml"), *JPEG_50)
    status = _status(tmp_path, root, real, *JPEG_50)
    wait_for_jobs(_jobs(new), len(_elements(new)), seconds=400)
    tables_after_new = real.results(tmp_path)
    (late,) = _jobs(old_elsewhere)
    subprocess.run(["scontrol", "release", late], check=True)  # a superseded tabulate that ran anyway
    wait_for_jobs([late], 1, seconds=300)
    late_log = Path(old_elsewhere["log_folder"], f"{late}_0_log.err").read_text()
    cancelled = checked(pipeline("--artifacts", str(root), "cancel", cwd=tmp_path)).stdout
    wait_until(lambda: not in_queue(_jobs(old, new)), 60, "the old plan's JPEG job to leave the queue")
    results = str(tmp_path / "results" / real.config.stem)
    named = re.search(
        rf"^1 queued job \(2 tasks\) belongs to an older plan of config real: {old_jpeg} "
        rf"evaluate\[jpeg/-/\*\] x2 \(pending\); left to run",
        output,
        re.M,
    )
    kept = tables_after_new == folder_digests(local / "results" / real.config.stem) == real.results(tmp_path)
    fault_log(
        "Slurm: jobs of a superseded config still queued",
        survived=bool(named) and kept,
        note="submit cancelled the old tabulate (it writes results/<config>) and named the old JPEG job; "
        "an old tabulate released later did not overwrite the new tables",
    )
    assert (
        f"cancelled: 1 queued job (1 task) belongs to an older plan of config real: {old_tabulate} "
        f"tabulate[tables] (pending, writes {results}); they would write where this plan writes"
    ) in output
    assert named, output
    assert sacct([old_tabulate]) == {old_tabulate: "CANCELLED"}
    assert (
        status.returncode == 0
        and f"1 queued job (2 tasks) belongs to an older plan of config real: {old_jpeg} evaluate[jpeg/-/*] x2 (pending"
        in status.stdout
    ), status.stdout
    assert kept, "the tables differ from the local run's with quality 50"
    assert Store(other_root).is_complete("tabulate", _refs(old_elsewhere)[0][1])  # it ran, and published
    assert f"warning: results/{real.config.stem} not replaced: it holds the export of a run submitted at" in late_log
    assert f"cancelled run {old['run_id']}: 1 job: {old_jpeg}" in cancelled


# --- 4. two submits at once ----------------------------------------------------------------------


def test_concurrent_submits_queue_each_task_once_and_cancel_covers_every_submission(real, tmp_path, fault_log):
    root = real.copy(tmp_path, without=("evaluate", "tabulate"))
    held = _profile(tmp_path / "held.yaml", HELD)
    checked(
        pipeline(
            "--artifacts",
            str(root),
            "submit",
            "evaluate",
            "--config",
            str(real.config),
            "--profile",
            str(held),
            cwd=tmp_path,
        )
    )
    args = [*PIPELINE, "--artifacts", str(root), "submit", "all", "--config", str(real.config), "--profile", str(held)]
    logs = [tmp_path / f"submit{i}.err" for i in range(2)]
    with slurm.submission_lock(root, "submit"):  # both start while a submission holds the lock
        procs = [
            subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
            for log in logs
        ]
        wait_until(
            lambda: all("waiting for `pipeline submit` (pid" in log.read_text() for log in logs),
            120,
            "both submits to wait for the lock",
        )
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    records = [json.loads(p.read_text()) for p in sorted((root / slurm.RECORDS).glob("*.json"))]
    refs = _refs(*records)
    status = _status(tmp_path, root, real)
    cancelled = checked(pipeline("--artifacts", str(root), "cancel", cwd=tmp_path)).stdout
    wait_until(lambda: not in_queue(_jobs(*records)), 60, "every submission's jobs to leave the queue")
    after = _status(tmp_path, root, real).stdout
    _, again = _submit(tmp_path, root, real, _profile(tmp_path / "p.yaml"))
    wait_for_empty_queue(_jobs(again), seconds=400)
    once = len(refs) == len(set(refs)) == 7 and len(records) == 2
    fault_log(
        "Slurm: two `submit` at once",
        survived=once and real.results(tmp_path) == real.tables,
        note="the second waited for the first's lock, then found its jobs queued; status and cancel covered "
        "both submissions; submitted again, tables equal a local run's",
    )
    assert [proc.returncode for proc in procs] == [0, 0]
    first, second = sorted(outputs, key=lambda out: "nothing to submit" in out)
    assert "submitted run" in first and "already queued by an earlier submission: 6 tasks in 1 job" in first
    assert "nothing to submit" in second and "already queued by an earlier submission: 7 tasks in 2 jobs" in second
    assert once, records
    assert "evaluate       0/6 done, 6 pending" in status.stdout
    assert "tabulate       0/1 done, 1 pending" in status.stdout
    assert "queued in" not in status.stdout
    assert f"cancelled runs {records[0]['run_id']}, {records[1]['run_id']}: 2 jobs: " in cancelled
    assert "evaluate       0/6 done, 6 cancelled" in after and "tabulate       0/1 done, 1 " in after
    assert not in_queue(_jobs(*records))
    assert real.results(tmp_path) == real.tables and digests(root) == real.digests


# --- 5. a crash inside a packed element ---------------------------------------------------------


def test_a_manifest_without_size_fails_only_the_tasks_of_a_packed_element_that_read_it(real, tmp_path, fault_log):
    root = real.copy(tmp_path, without=("evaluate", "tabulate"))
    (model,) = root.glob("train-aae/*/MANIFEST.json")
    manifest = json.loads(model.read_text())
    name = sorted(manifest["files"])[0]
    del manifest["files"][name]["size"]
    model.write_text(json.dumps(manifest))
    _, first = _submit(tmp_path, root, real, _profile(tmp_path / "p.yaml"))
    (element,) = [t["job_id"] for j in first["jobs"] if j["step"] == "evaluate" for t in j["tasks"]][:1]
    wait_for_empty_queue(_jobs(first), seconds=400, stuck_ok=True)
    plan = build_plan(load_config(str(real.config)), Store(root), ["evaluate"])
    built = sorted(p.task.id for p in plan.tasks if p.task.step == "evaluate" and p.complete)
    status = _status(tmp_path, root, real)
    error = f"artifact manifest {model} is corrupt (file entry {name!r} has no valid 'size')"
    own = {
        p.task.id: task_log(root, "evaluate", p.key) for p in plan.tasks if p.task.step == "evaluate" and not p.complete
    }
    logged = {task_id: log.read_text() for task_id, log in own.items()}
    shutil.rmtree(model.parent)  # what the error says is broken
    _, again = _submit(tmp_path, root, real, _profile(tmp_path / "p.yaml"))
    wait_for_empty_queue(_jobs(again), seconds=600)
    rebuilt = real.results(tmp_path) == real.tables and digests(root) == real.digests
    alone = built == ["identity/-/clean", "identity/-/fgsm", "jpeg/-/clean", "jpeg/-/fgsm"]
    fault_log(
        "Slurm: a crash inside a packed element",
        survived=alone and rebuilt,
        note="a manifest file entry without 'size' under 2 of 6 tasks of one element: the other 4 "
        "published, each failure in its task's log; rebuilt after removing it",
    )
    assert alone, built
    assert sacct([element]) == {element: "FAILED"}
    assert logged == {"ours/fgsm/clean": f"error: {error}\n", "ours/fgsm/fgsm": f"error: {error}\n"}
    assert not any(log.exists() for log in own.values())  # rebuilt: the failures are over
    lines = status.stdout.splitlines()
    assert status.returncode == 1 and status.stderr.strip().splitlines()[-1] == f"error: {error}"
    assert "evaluate       4/6 done, 2 failed" in lines
    assert f"  job {element} (2 tasks ours/fgsm/*): failed (log " in status.stdout
    assert sum(line.startswith("    | ") for line in lines) <= slurm.LOG_TAIL_LINES  # the element's log once
    assert f"    ours/fgsm/fgsm: error: {error} (log {own['ours/fgsm/fgsm']})" in lines
    assert rebuilt


def test_an_unexpected_exception_fails_its_task_alone_inside_a_packed_element(
    slurm_cluster, tmp_path, monkeypatch, fault_log
):
    """The real job runner on fake steps: ``write[a]`` raises KeyError; b and c, packed with it, run."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("FAKESTEPS_BUG", "a")
    monkeypatch.chdir(tmp_path)
    package = "tests.unit.fakesteps"
    steps, config, store = discover(package), load_config("smoke"), Store(tmp_path / "artifacts")
    profile_path = tmp_path / "fake.yaml"
    profile_path.write_text(yaml.safe_dump({"mem": "300M", "time": "10", "cpu": {"partition": "debug"}}))
    plan = build_plan(config, store, ["write"], steps=steps)
    submission = slurm.submit(plan, store, config, load_profile(profile_path, steps), ["write"], package=package)
    ((element,),) = [s.element_ids for s in submission.jobs]
    wait_for_jobs([element], 1, seconds=180)
    keys = {p.task.id: p.key for p in plan.tasks}
    own = task_log(store.root, "write", keys["a"]).read_text()
    lines = list(report(build_plan(config, store, ["write"], steps=steps), store, config))
    ran = [store.is_complete("write", keys[t]) for t in "abc"] == [False, True, True]
    fault_log(
        "Slurm: a crash inside a packed element",
        survived=ran and "Traceback" in own,
        note="an unexpected KeyError in 1 of 3 tasks of one element: the other 2 published; its traceback "
        "in its own log",
    )
    assert ran and sacct([element]) == {element: "FAILED"}
    assert "Traceback (most recent call last)" in own and own.rstrip().endswith("KeyError: 'size'")
    assert "write          2/3 done, 1 failed" in lines
    assert f"  a: failed (job {element}, log {submission.folder / f'{element}_0_log.err'})" in lines
    assert f"    a: KeyError: 'size' (log {task_log(store.root, 'write', keys['a'])})" in lines


# --- why a job waits --------------------------------------------------------------------------


def test_status_says_why_jobs_wait_on_a_drained_node_and_what_to_do(slurm_cluster, tmp_path, monkeypatch, fault_log):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.chdir(tmp_path)
    package = "tests.unit.fakesteps"
    steps, config, store = discover(package), load_config("smoke"), Store(tmp_path / "artifacts")
    profile_path = tmp_path / "fake.yaml"
    profile_path.write_text(yaml.safe_dump({"mem": "300M", "time": "10", "cpu": {"partition": "debug"}}))
    (node,) = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, check=True
    ).stdout.split()[:1]
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=drain", "reason=test: drained"], check=True)
    try:
        submission = slurm.submit(
            build_plan(config, store, ["write"], steps=steps),
            store,
            config,
            load_profile(profile_path, steps),
            ["write"],
            package=package,
        )
        ids = [s.job_id for s in submission.jobs]
        wait_until(lambda: "DRAINED" in "".join(in_queue(ids, reasons=True).values()), 60, "Slurm to say why")
        lines = list(report(build_plan(config, store, ["write"], steps=steps), store, config))
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=True)
    wait_for_jobs(ids, 1, seconds=180)
    said = next((line for line in lines if "pending in 1 job" in line), "")
    fault_log(
        "Slurm: a drained node",
        survived="`sinfo -R` says why" in said,
        note="status: the tasks, their job, Slurm's reason and what to do; resumed, the job ran",
    )
    assert said.startswith(
        f"  3 tasks * pending in 1 job ({ids[0]}): Slurm says 'Nodes required for job are DOWN, DRAINED"
    ), lines
    assert said.endswith(
        "a node it needs is down or drained: `sinfo -R` says why; once an administrator resumes it "
        "(`scontrol update nodename=<node> state=resume`) the job starts by itself"
    )
    assert not build_plan(config, store, ["write"], steps=steps).pending()
