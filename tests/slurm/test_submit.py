"""``pipeline submit`` through a real single-node Slurm: packed arrays, exact dependencies, failures,
the code version pinned at submit, a paper-sized plan."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.dag import build_plan
from pipeline.execute import COMMIT_VARIABLE
from pipeline.runners import slurm
from pipeline.runners.slurm import job as slurm_job
from pipeline.runners.slurm.profile import load_profile
from pipeline.store import Store
from tests.slurm.conftest import LOCAL_PROFILE, REPO, checked, in_queue, pipeline, sacct, wait_for_jobs, wait_until
from tests.slurm.trivial import TrivialRunner

pytestmark = pytest.mark.slurm

TARGETS = ("all",)
# The whole smoke pipeline with two attacks and three methods (32 tasks), so that it fits a 2-core node.
OVERRIDES = (
    "attack.names=[fgsm, pgd]",
    "evaluate.methods=[ours, identity, plain_ae]",
    "seeds=[0]",
    "aae.variants={}",
    "cae.variants={}",
    "victim.noise_seeds=[]",
    "ablation.variants=[]",
    "runtime.threads=1",
)
SMOKE = ("--config", "smoke", *(arg for value in OVERRIDES for arg in ("--set", value)))


def _record(root: Path) -> dict:
    (path,) = sorted((root / slurm.RECORDS).glob("*.json"))[-1:]
    return json.loads(path.read_text())


def _files(root: Path) -> dict[tuple[str, str], dict[str, str]]:
    """sha256 of every file of every artifact, by (step, key)."""
    out = {}
    for manifest in root.glob("*/*/MANIFEST.json"):
        data = json.loads(manifest.read_text())
        out[(data["step"], data["key"])] = {name: meta["sha256"] for name, meta in data["files"].items()}
    return out


def _expected_dependency(record: dict, job: dict, plan) -> set[str]:
    """What ``job`` must wait on: the Slurm element (or plain job) of every upstream task its tasks read."""
    element = {(j["step"], t["key"]): t["job_id"] for j in record["jobs"] for t in j["tasks"]}
    inputs = {(p.task.step, p.key): p.inputs.values() for p in plan.tasks}
    return {element[ref] for t in job["tasks"] for ref in inputs[(job["step"], t["key"])] if ref in element}


@pytest.fixture(scope="module")
def smoke_run(slurm_cluster, tmp_path_factory):
    """The smoke pipeline submitted to Slurm, and run locally (in another directory), both finished."""
    work = tmp_path_factory.mktemp("submit")
    local_cwd = work / "local-cwd"
    local_cwd.mkdir()
    started = time.monotonic()
    submitted = checked(
        pipeline(
            "--artifacts", str(work / "slurm"), "submit", *TARGETS, *SMOKE, "--profile", str(LOCAL_PROFILE), cwd=work
        )
    )
    record = _record(work / "slurm")
    jobs = {job["label"]: job for job in record["jobs"]}
    scontrol = subprocess.run(
        ["scontrol", "show", "job", jobs["sample[*]"]["job_id"]], capture_output=True, text=True
    ).stdout
    local_started = time.monotonic()
    checked(pipeline("--artifacts", str(work / "local"), "run", *TARGETS, *SMOKE, cwd=local_cwd))
    local_seconds = time.monotonic() - local_started
    elements = len({task["job_id"] for job in record["jobs"] for task in job["tasks"]})
    states = wait_for_jobs([job["job_id"] for job in record["jobs"]], elements, seconds=1200)
    print(f"\nslurm: {time.monotonic() - started:.0f} s (alongside the local run); local run: {local_seconds:.0f} s")
    return {
        "work": work,
        "local_cwd": local_cwd,
        "submitted": submitted,
        "record": record,
        "jobs": jobs,
        "scontrol": scontrol,
        "states": states,
    }


def test_submit_builds_the_same_artifacts_as_a_local_run(smoke_run):
    work, jobs, record = smoke_run["work"], smoke_run["jobs"], smoke_run["record"]
    assert set(smoke_run["states"].values()) == {"COMPLETED"}, smoke_run["states"]
    assert "submitted run" in smoke_run["submitted"].stdout
    assert "usually local to one machine" in smoke_run["submitted"].stderr  # pytest's tmp is under /tmp
    slurm_files, local_files = _files(work / "slurm"), _files(work / "local")
    plan = build_plan(load_config("smoke", OVERRIDES), Store(work / "local"), TARGETS)
    assert slurm_files == local_files and len(local_files) == len(plan.tasks) == 32
    slurm_tables, local_tables = (
        sorted((folder / "results" / "smoke").iterdir()) for folder in (work, smoke_run["local_cwd"])
    )
    assert [p.name for p in slurm_tables] == [p.name for p in local_tables] and len(slurm_tables) >= 30
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(slurm_tables, local_tables))
    for step, key in slurm_files:
        manifest = json.loads((work / "slurm" / step / key / "MANIFEST.json").read_text())
        assert manifest["slurm"]["job_id"] and manifest["code"]["git_commit"] == (os.environ[COMMIT_VARIABLE] or None)
    # Small tasks share jobs (local.yaml packs attack and train-aae too); each job waits on exactly
    # the upstream elements its tasks read.
    assert {label: len({t["job_id"] for t in job["tasks"]}) for label, job in jobs.items()} == {
        "sample[*]": 3,
        "train-victim[aae_train]": 1,
        "train-victim[test]": 1,
        "attack[*/*/*]": 1,
        "train-cae[main]": 1,
        "train-aae[*/*]": 1,
        "evaluate[*/*/*]": 1,
        "tabulate[tables]": 1,
    }
    for job in record["jobs"]:
        actual = set(job["dependency"].removeprefix("afterok:").split(":")) if job["dependency"] else set()
        assert actual == _expected_dependency(record, job, plan), job["label"]
    index = {task["id"]: i for i, task in enumerate(jobs["sample[*]"]["tasks"])}
    assert jobs["train-victim[aae_train]"]["dependency"] == f"afterok:{jobs['sample[*]']['job_id']}_{index['fashion']}"
    assert "ArrayTaskThrottle=2" in smoke_run["scontrol"]
    # submitit's log of every element sits in the recorded folder; only its owner may read it.
    folder = Path(record["log_folder"])
    assert (folder / f"{jobs['sample[*]']['tasks'][0]['job_id']}_0_log.err").exists()
    assert (work / "slurm" / slurm.RECORDS).stat().st_mode & 0o777 == 0o700 == folder.stat().st_mode & 0o777


def test_status_of_a_finished_run_is_done(smoke_run):
    work = smoke_run["work"]
    config = load_config("smoke", OVERRIDES)
    plan = build_plan(config, Store(work / "slurm"), TARGETS)
    states = slurm.slurm_states(work / "slurm", plan)
    assert len(states) == len(plan.tasks) and {s.state for s in states.values()} == {slurm.DONE}


def test_submitting_again_submits_nothing(smoke_run):
    work = smoke_run["work"]
    again = checked(
        pipeline(
            "--artifacts", str(work / "slurm"), "submit", *TARGETS, *SMOKE, "--profile", str(LOCAL_PROFILE), cwd=work
        )
    )
    assert "nothing to submit" in again.stdout
    assert len(list((work / "slurm" / slurm.RECORDS).glob("*.json"))) == 1


def test_a_failed_task_stops_its_dependants_and_cancel_cleans_up(slurm_cluster, tmp_path):
    missing = f"sample.datasets.fashion.root={tmp_path / 'missing'}"
    root = tmp_path / "artifacts"
    checked(
        pipeline(
            "--artifacts",
            str(root),
            "submit",
            "train-victim",
            "--config",
            "smoke",
            "--set",
            missing,
            "--profile",
            str(LOCAL_PROFILE),
            cwd=tmp_path,
        )
    )
    config = load_config("smoke", [missing])
    plan = build_plan(config, Store(root), ["train-victim"])
    keys = {(p.task.step, p.task.id): (p.task.step, p.key) for p in plan.tasks}
    victim = keys[("train-victim", "aae_train")]
    # --kill-on-invalid-dep (the runner's default): Slurm cancels the dependant itself
    states = wait_until(
        lambda: (s := slurm.slurm_states(root, plan))[victim].state == slurm.NEVER and s,
        90,
        "train-victim[aae_train] to be cancelled by Slurm",
    )
    failed = states[keys[("sample", "fashion")]]
    assert failed.state == slurm.FAILED and failed.job_id.count("_") == 1
    assert "missing does not exist" in failed.log_tail and failed.log_path.exists()
    assert not states[victim].queued
    status = checked(
        pipeline("--artifacts", str(root), "status", "--config", "smoke", "--set", missing, cwd=tmp_path)
    ).stdout
    assert f"  fashion: failed (job {failed.job_id}, log {failed.log_path})" in status
    assert re.search(
        r"  job \d+ \(aae_train\) was cancelled by Slurm: its dependency could never be satisfied: "
        r"sample\[fashion\] failed; `pipeline submit` submits its tasks again",
        status,
    ), status
    record = _record(root)
    cancelled = checked(pipeline("--artifacts", str(root), "cancel", record["run_id"], cwd=tmp_path))
    assert f"cancelled run {record['run_id']}: {len(record['jobs'])} jobs" in cancelled.stdout
    wait_until(lambda: not in_queue([j["job_id"] for j in record["jobs"]]), 30, "the run's jobs to leave the queue")
    assert not Store(root).is_complete(*victim)


def test_a_profile_asking_for_what_the_cluster_lacks_fails_before_submitting(slurm_cluster, tmp_path):
    for yaml_text, fragment in (
        ("gpu: {partition: gpu, gres: 'gpu:v100:2'}", "'gpu.gres'"),
        ("gpu: {partition: gpu, gres: 'gpu:a100:1'}", "'gpu.gres'"),
        ("cpu: {partition: nosuch}", "'cpu.partition'"),
    ):
        profile = tmp_path / "profile.yaml"
        profile.write_text(yaml_text)
        result = pipeline(
            "--artifacts",
            str(tmp_path / "a"),
            "submit",
            "train-victim",
            "--config",
            "smoke",
            "--profile",
            str(profile),
            cwd=tmp_path,
        )
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()[-1:]
        assert line.startswith("error: ") and fragment in line, result.stderr
        assert not (tmp_path / "a" / slurm.RECORDS).exists()


def test_without_sbatch_dry_run_works_and_submit_says_what_to_do(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}  # no Slurm command, no git
    args = ("--artifacts", str(tmp_path / "a"), "submit", "all", "--config", "smoke", "--profile", str(LOCAL_PROFILE))
    dry = checked(pipeline(*args, "--dry-run", cwd=tmp_path, env=env))
    (folder,) = (tmp_path / "a" / slurm.RECORDS).glob("dry-run-*")
    assert str(folder) in dry.stdout and "would submit" in dry.stdout
    scripts = sorted(folder.glob("*.sh"))
    assert scripts and "#SBATCH --array=0-2%2" in scripts[0].read_text()
    assert any("#SBATCH --dependency=afterok:JOB1_" in s.read_text() for s in scripts)
    real = pipeline(*args, cwd=tmp_path, env=env)
    assert real.returncode == 1
    lines = [line for line in real.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert (
        len(lines) == 1
        and "sbatch is not on PATH" in lines[0]
        and "--dry-run" in lines[0]
        and "pipeline run" in lines[0]
    )
    assert not list((tmp_path / "a" / slurm.RECORDS).glob("*.json"))


# --- provenance -------------------------------------------------------------------------------


def _git(checkout: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_jobs_record_the_commit_of_submit_time_even_when_the_checkout_changes_before_they_run(slurm_cluster, tmp_path):
    """A throw-away git checkout of the code submits a held job, then gets a new commit and an
    uncommitted change; the released job's manifest still names the commit it was submitted at."""
    checkout = tmp_path / "checkout"
    for package in ("pipeline", "jobs"):
        shutil.copytree(REPO / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__"))
    _git(checkout, "init", "-q")
    _git(checkout, "add", "-A")
    _git(checkout, "commit", "-qm", "first")
    first = _git(checkout, "rev-parse", "HEAD")
    env = {k: v for k, v in os.environ.items() if k != COMMIT_VARIABLE} | {"PYTHONPATH": str(checkout)}
    profile = tmp_path / "held.yaml"
    profile.write_text(LOCAL_PROFILE.read_text() + "extra: {hold: true}\n")
    root = tmp_path / "artifacts"
    checked(
        pipeline(
            "--artifacts",
            str(root),
            "submit",
            "sample[photos]",
            "--config",
            "smoke",
            "--set",
            f"sample.manifest_dir={tmp_path / 'manifests'}",
            "--profile",
            str(profile),
            cwd=tmp_path,
            env=env,
        )
    )
    (job,) = _record(root)["jobs"]
    assert _record(root)["git_commit"] == first
    (checkout / "pipeline" / "errors.py").write_text((checkout / "pipeline" / "errors.py").read_text() + "\n# later\n")
    _git(checkout, "commit", "-qam", "second")
    (checkout / "pipeline" / "errors.py").write_text((checkout / "pipeline" / "errors.py").read_text() + "# dirty\n")
    subprocess.run(["scontrol", "release", job["job_id"]], check=True)
    assert wait_for_jobs([job["job_id"]], 1, seconds=180) == {job["job_id"]: "COMPLETED"}
    manifest = json.loads(next(root.glob("sample/*/MANIFEST.json")).read_text())
    assert manifest["code"]["git_commit"] == first != _git(checkout, "rev-parse", "HEAD")


# --- a paper-sized plan -----------------------------------------------------------------------


# The paper's resources, scaled to the one test node; every job is submitted held.
PAPER_PROFILE = {
    "cpus_per_task": 1,
    "mem": "1G",
    "time": "10",
    "array_throttle": 50,
    "extra": {"hold": True},
    "cpu": {"partition": "debug"},
    "gpu": {"partition": "gpu", "gres": "gpu:v100:1"},
}


def _waits(job_id: str) -> list[str]:
    """The dependencies ``scontrol show job`` lists for a job, e.g. ``afterok:12_3(unfulfilled)``."""
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return re.search(r"Dependency=(\S+)", shown)[1].split(",")


@pytest.mark.parametrize("evaluate_pack", [1, None], ids=["one-job-per-task", "packed"])
def test_the_paper_plan_is_accepted_by_sbatch(slurm_cluster, tmp_path, monkeypatch, fault_log, evaluate_pack):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the jobs unpickle tests.slurm.trivial.TrivialRunner
    monkeypatch.setitem(slurm_job.RUNNERS, False, TrivialRunner)
    monkeypatch.setitem(slurm_job.RUNNERS, True, TrivialRunner)
    monkeypatch.chdir(tmp_path)
    profile_path = tmp_path / "paper.yaml"
    profile_path.write_text(
        yaml.safe_dump({**PAPER_PROFILE, **({"steps": {"evaluate": {"pack": evaluate_pack}}} if evaluate_pack else {})})
    )
    config, store = load_config("paper"), Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["all"])
    submission = slurm.submit(plan, store, config, load_profile(profile_path, plan.steps), ["all"])
    ids = [s.job_id for s in submission.jobs]
    # what the catalogs make of the paper config: every task once, evaluate tasks grouped by what they wait on
    tasks = {step: [p for p in plan.tasks if p.task.step == step] for step in plan.steps}
    pending = {(p.task.step, p.key) for p in plan.tasks}
    waits_on = {frozenset(r for r in p.inputs.values() if r in pending) for p in tasks["evaluate"]}
    try:
        assert len(set(ids)) == len(ids) and sorted(p.key for s in submission.jobs for p in s.job.tasks) == sorted(
            key for _, key in pending
        )
        assert set(in_queue(ids).values()) == {"PENDING"}
        jsma = next(s for s in submission.jobs if "ours/jsma" in [p.task.id for p in s.job.tasks])
        (planned,) = [p for p in jsma.job.tasks if p.task.id == "ours/jsma"]
        upstream = {r for r in planned.inputs.values() if r in pending}
        assert (
            len(_waits(jsma.job_id))
            == sum(len(ix) for _, ix in jsma.job.after)
            >= len([r for r in upstream if r[0] == "attack"])
            > 100
        )  # every attack shard of JSMA, element by element
        assert all(w.endswith("(unfulfilled)") for w in _waits(jsma.job_id))
        tabulate = next(s for s in submission.jobs if s.job.step.name == "tabulate")
        assert len(_waits(tabulate.job_id)) == tabulate.dependency.count(":") > 1000  # every upstream element
        evaluate = [s for s in submission.jobs if s.job.step.name == "evaluate"]
        assert sum(len(s.job.tasks) for s in evaluate) == len(tasks["evaluate"])
        assert len(evaluate) == (len(waits_on) if evaluate_pack else 1)
        sample = next(s for s in submission.jobs if s.job.step.name == "sample")
        subprocess.run(["scontrol", "release", sample.job_id], check=True)  # its trivial tasks run
        wait_for_jobs([sample.job_id], len(tasks["sample"]), seconds=120)
        assert set(sacct([sample.job_id]).values()) == {"COMPLETED"}
    finally:
        slurm.cancel(store.root)
    wait_until(lambda: not in_queue(ids), 60, "the paper plan's jobs to leave the queue")
    fault_log(
        "Slurm: paper-sized plan submitted (held)",
        note=f"{len(ids)} jobs for {len(pending)} tasks "
        f"(evaluate pack {evaluate_pack or 'default'}); the job training ours/jsma waits on every JSMA shard, "
        "tabulate on over 1000 elements; accepted by sbatch, cancelled",
    )
