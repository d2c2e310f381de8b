"""``pipeline submit`` through a real single-node Slurm: arrays, dependencies, requeue, failures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.dag import build_plan, discover
from pipeline.runners import slurm
from pipeline.runners.profile import load_profile
from pipeline.store import Store
from tests.slurm.conftest import LOCAL_PROFILE, REPO, checked, pipeline, sacct, wait_for_jobs, wait_until

pytestmark = pytest.mark.slurm

TARGETS = ("all",)
# The whole smoke pipeline with two attacks and three methods (32 tasks), so that it fits a 2-core node.
OVERRIDES = ("attack.names=[fgsm, pgd]", "evaluate.methods=[ours, identity, plain_ae]")
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


@pytest.fixture(scope="module")
def smoke_run(slurm_cluster, tmp_path_factory):
    """The smoke pipeline submitted to Slurm, and run locally (in another directory), both finished."""
    work = tmp_path_factory.mktemp("submit")
    local_cwd = work / "local-cwd"
    local_cwd.mkdir()
    started = time.monotonic()
    submitted = checked(pipeline("--artifacts", str(work / "slurm"), "submit", *TARGETS, *SMOKE,
                                 "--profile", str(LOCAL_PROFILE), cwd=work))
    record = _record(work / "slurm")
    jobs = {job["label"]: job for job in record["jobs"]}
    attack_job = jobs["attack[aae_train/*/*]"]["job_id"]
    scontrol = subprocess.run(["scontrol", "show", "job", attack_job], capture_output=True, text=True).stdout
    local_started = time.monotonic()
    checked(pipeline("--artifacts", str(work / "local"), "run", *TARGETS, *SMOKE, cwd=local_cwd))
    local_seconds = time.monotonic() - local_started
    tasks = sum(len(job["tasks"]) for job in record["jobs"])
    states = wait_for_jobs([job["job_id"] for job in record["jobs"]], tasks, seconds=1200)
    print(f"\nslurm: {time.monotonic() - started:.0f} s (alongside the local run); local run: {local_seconds:.0f} s")
    return {"work": work, "local_cwd": local_cwd, "submitted": submitted, "record": record, "jobs": jobs,
            "scontrol": scontrol, "states": states}


def test_submit_builds_the_same_artifacts_as_a_local_run(smoke_run):
    work, jobs = smoke_run["work"], smoke_run["jobs"]
    assert set(smoke_run["states"].values()) == {"COMPLETED"}, smoke_run["states"]
    assert "submitted run" in smoke_run["submitted"].stdout
    assert "usually local to one machine" in smoke_run["submitted"].stderr  # pytest's tmp is under /tmp
    slurm_files, local_files = _files(work / "slurm"), _files(work / "local")
    plan = build_plan(load_config("smoke", OVERRIDES), Store(work / "local"), TARGETS)
    assert slurm_files == local_files and len(local_files) == len(plan.tasks) == 32
    slurm_tables, local_tables = (sorted((folder / "results" / "smoke").iterdir()) for folder in (work, smoke_run["local_cwd"]))
    assert [p.name for p in slurm_tables] == [p.name for p in local_tables] and len(slurm_tables) >= 30
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(slurm_tables, local_tables))
    for (step, key) in slurm_files:
        manifest = json.loads((work / "slurm" / step / key / "MANIFEST.json").read_text())
        assert manifest["slurm"]["job_id"]
    # One array per set of upstream tasks; each waits on exactly the upstream array tasks it reads.
    sample = jobs["sample[*]"]
    index = {task["id"]: i for i, task in enumerate(sample["tasks"])}
    victim = jobs["train-victim[aae_train]"]
    assert victim["dependency"] == f"afterok:{sample['job_id']}_{index['fashion']}"
    attack = jobs["attack[aae_train/*/*]"]
    assert attack["dependency"] == f"afterok:{sample['job_id']}_{index['fashion']}:{victim['job_id']}"
    assert len(attack["tasks"]) == 4 and len(jobs["attack[test/*/000000]"]["tasks"]) == 2
    assert "ArrayTaskThrottle=2" in smoke_run["scontrol"]
    assert re.search(rf"Dependency=afterok:{sample['job_id']}_{index['fashion']}\S*,afterok:{victim['job_id']}",
                     smoke_run["scontrol"]), smoke_run["scontrol"]
    # submitit's log of every task sits in the recorded folder.
    folder = Path(smoke_run["record"]["log_folder"])
    assert (folder / f"{attack['tasks'][0]['job_id']}_0_log.err").exists()


def test_status_of_a_finished_run_is_done(smoke_run):
    work = smoke_run["work"]
    config = load_config("smoke", OVERRIDES)
    plan = build_plan(config, Store(work / "slurm"), TARGETS)
    states = slurm.slurm_states(work / "slurm", plan)
    assert len(states) == len(plan.tasks) and {s.state for s in states.values()} == {slurm.DONE}


def test_submitting_again_submits_nothing(smoke_run):
    work = smoke_run["work"]
    again = checked(pipeline("--artifacts", str(work / "slurm"), "submit", *TARGETS, *SMOKE,
                             "--profile", str(LOCAL_PROFILE), cwd=work))
    assert "nothing to submit" in again.stdout
    assert len(list((work / "slurm" / slurm.RECORDS).glob("*.json"))) == 1


def test_a_checkpointable_step_is_requeued_and_resumes(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the job imports the test-only steps
    monkeypatch.chdir(tmp_path)
    package = "tests.slurm.fakejobs"
    steps = discover(package)
    config, store = load_config("smoke"), Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["countdown"], steps=steps)
    submission = slurm.submit(plan, store, config, load_profile(LOCAL_PROFILE, steps), ["countdown"],
                              package=package)
    (job,) = submission.jobs
    work = store.workdir("countdown", job.job.tasks[0].key)
    progress = work / "progress.json"
    wait_until(lambda: progress.exists() and json.loads(progress.read_text())["count"] >= 4, 60,
               "the countdown to save progress")
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)  # what a time-out sends first
    wait_for_jobs([job.job_id], 1, seconds=120)
    assert sacct([job.job_id]) == {job.job_id: "COMPLETED"}
    manifest = json.loads((store.path("countdown", job.job.tasks[0].key) / "MANIFEST.json").read_text())
    assert manifest["slurm"]["restart_count"] == "1"
    first, resumed = manifest["summary"]["starts"]
    assert first == 0 and resumed >= 4  # the rerun continued from the checkpoint, not from zero
    assert "Requeue=1" in subprocess.run(["scontrol", "show", "job", job.job_id], capture_output=True,
                                         text=True).stdout


def test_a_failed_task_stops_its_dependants_and_cancel_cleans_up(slurm_cluster, tmp_path):
    bad = ("--config", "smoke", "--set", f"sample.datasets.fashion.root={tmp_path / 'missing'}")
    root = tmp_path / "artifacts"
    checked(pipeline("--artifacts", str(root), "submit", "train-victim", *bad, "--profile", str(LOCAL_PROFILE),
                     cwd=tmp_path))
    config = load_config("smoke", [f"sample.datasets.fashion.root={tmp_path / 'missing'}"])
    plan = build_plan(config, Store(root), ["train-victim"])
    keys = {(p.task.step, p.task.id): (p.task.step, p.key) for p in plan.tasks}

    def settled():
        states = slurm.slurm_states(root, plan)
        return states if states[keys[("train-victim", "aae_train")]].state == slurm.NEVER else None

    states = wait_until(settled, 90, "train-victim[aae_train] to be marked never")
    failed = states[keys[("sample", "fashion")]]
    assert failed.state == slurm.FAILED and failed.job_id.count("_") == 1
    assert "missing does not exist" in failed.log_tail and failed.log_path.exists()
    cancelled = checked(pipeline("--artifacts", str(root), "cancel", cwd=tmp_path))
    record = _record(root)
    assert f"cancelled run {record['run_id']}" in cancelled.stdout

    def gone():
        queue = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(j["job_id"] for j in record["jobs"])],
                               capture_output=True, text=True).stdout
        return not queue.strip()

    wait_until(gone, 30, "the run's jobs to leave the queue")
    never = slurm.slurm_states(root, plan)[keys[("train-victim", "aae_train")]]
    assert never.state == slurm.CANCELLED
    assert not Store(root).is_complete(*keys[("train-victim", "aae_train")])


def test_a_profile_asking_for_what_the_cluster_lacks_fails_before_submitting(slurm_cluster, tmp_path):
    for yaml_text, fragment in (("gpu: {partition: gpu, gres: 'gpu:v100:2'}", "'gpu.gres'"),
                                ("gpu: {partition: gpu, gres: 'gpu:a100:1'}", "'gpu.gres'"),
                                ("cpu: {partition: nosuch}", "'cpu.partition'")):
        profile = tmp_path / "profile.yaml"
        profile.write_text(yaml_text)
        result = pipeline("--artifacts", str(tmp_path / "a"), "submit", "train-victim", "--config", "smoke",
                          "--profile", str(profile), cwd=tmp_path)
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
    assert len(lines) == 1 and "sbatch is not on PATH" in lines[0] and "--dry-run" in lines[0] \
        and "pipeline run" in lines[0]
    assert not list((tmp_path / "a" / slurm.RECORDS).glob("*.json"))
