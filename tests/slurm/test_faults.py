"""Faults injected into real Slurm runs, each ending with artifacts and tables byte-identical to an
undisturbed local run: a real time-out of an array training task (requeued and resumed, and a
requeue budget spent), an array task cancelled mid-run and the run submitted again without
``cancel``, slurmd killed mid-task, ``status`` read while the run is in flight.

The pipeline is narrowed (one attack; identity, the AAE and the plain AE) with AAE trainings long
enough for Slurm's time-out signal to reach them: the reference run first measures how many epochs
take ``TRAIN_S`` seconds here. Every scenario copies the reference root without the trainings and
what follows them, and submits the rest. The scenarios ask for no GPU (``gres: gpu:0``), so the
node's two CPUs run both trainings of the array at once.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.dag import build_plan
from pipeline.runners import slurm
from pipeline.store import Store
from tests.faults._harness import digests, folder_digests
from tests.slurm.conftest import checked, cluster_command, in_queue, pipeline, sacct, wait_for_empty_queue, wait_until

pytestmark = pytest.mark.slurm

TRAIN_S = 45  # seconds the quicker AAE training takes: longer than the time-out signal's window below
CALIBRATION_EPOCHS = 400
REDONE = ("train-aae", "evaluate", "tabulate")  # what every scenario submits
NARROW = {
    "extends": "smoke",
    "victim": {"aae_train": {"epochs": 2}, "test": {"epochs": 2}, "noise_seeds": []},
    "attack": {"names": ["fgsm"]},
    "seeds": [0],
    "aae": {"variants": {}},
    "cae": {"variants": {}},
    "ablation": {"variants": []},
    "evaluate": {"methods": ["identity", "ours", "plain_ae"]},
    "tables": {"bootstrap": 10},
    "runtime": {"threads": 1, "progress": False},
}
# Slurm sends the time-out signal up to a minute earlier than asked (its event loop's grain): with
# --time=2 and --signal=USR2@85 it came 15-30 s into each run here, so a 45 s training is
# interrupted at least once, and never before submitit's handler is in place.
PROFILE = {
    "cpus_per_task": 1,
    "mem": "2G",
    "time": "15",
    "array_throttle": 2,
    "cpu": {"partition": "debug"},
    "gpu": {"partition": "gpu", "gres": "gpu:0"},
}
# On a loaded machine a run gets little done between its start and the signal: 6-7 requeues were seen,
# and more than 10 once; the budget is not what this scenario tests.
TIMEOUT = {"steps": {"train-aae": {"time": "2", "signal_delay_s": 85, "max_num_timeout": 30}}}


def _config(path: Path, epochs: int, manifests: Path, checkpoint_every: int | None = None) -> Path:
    """The narrowed config with AAE trainings of ``epochs`` (a checkpoint every 40th of them)."""
    optim = {"epochs": epochs, "checkpoint_every": checkpoint_every or max(1, epochs // 40)}
    aae = {**NARROW["aae"], "optim": optim}
    path.write_text(yaml.safe_dump({**NARROW, "aae": aae, "sample": {"manifest_dir": str(manifests)}}))
    return path


@dataclass
class Reference:
    cwd: Path
    root: Path
    config: Path
    epochs: int
    digests: dict[str, str]  # step/key/file -> sha256, of the final config's artifacts
    tables: dict[str, str]

    def clone(self, cwd: Path) -> Path:
        """A copy of the reference root without what the scenarios submit."""
        root = cwd / "artifacts"
        shutil.copytree(self.root, root, ignore=lambda folder, names: REDONE if Path(folder) == self.root else ())
        return root

    def check(self, cwd: Path, root: Path) -> None:
        assert digests(root) == self.digests
        assert folder_digests(cwd / "results" / self.config.stem) == self.tables


@pytest.fixture(scope="module")
def reference(slurm_cluster, tmp_path_factory) -> Reference:
    """The narrowed pipeline run locally: once with short trainings to measure their speed, then
    with trainings of ``TRAIN_S`` seconds."""
    cwd = tmp_path_factory.mktemp("reference")
    root = cwd / "artifacts"
    calibration = _config(cwd / "calibration.yaml", CALIBRATION_EPOCHS, cwd / "manifests")
    checked(pipeline("--artifacts", str(root), "run", "all", "--config", str(calibration), cwd=cwd))
    seconds = min(json.loads(m.read_text())["seconds"] for m in root.glob("train-aae/*/MANIFEST.json"))
    epochs = max(1000, math.ceil(CALIBRATION_EPOCHS * TRAIN_S / seconds / 100) * 100)
    config = _config(cwd / "faults.yaml", epochs, cwd / "manifests")
    checked(pipeline("--artifacts", str(root), "run", "all", "--config", str(config), cwd=cwd))
    plan = build_plan(load_config(str(config)), Store(root), ["all"])
    for stale in {p.parent for p in root.glob("*/*/MANIFEST.json")} - {root / p.task.step / p.key for p in plan.tasks}:
        shutil.rmtree(stale)  # the calibration run's trainings and what followed them
    return Reference(cwd, root, config, epochs, digests(root), folder_digests(cwd / "results" / config.stem))


def _profile(path: Path, *extra: dict) -> Path:
    profile = json.loads(json.dumps(PROFILE))
    for more in extra:
        for key, value in more.items():
            profile[key] = {**profile.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(profile))
    return path


def _submit(cwd: Path, root: Path, config: Path, profile: Path, *targets: str) -> tuple[str, dict]:
    result = checked(
        pipeline(
            "--artifacts",
            str(root),
            "submit",
            *(targets or ("all",)),
            "--config",
            str(config),
            "--profile",
            str(profile),
            cwd=cwd,
        )
    )
    (record,) = sorted((root / slurm.RECORDS).glob("*.json"))[-1:]
    return result.stdout, json.loads(record.read_text())


def _status(cwd: Path, root: Path, config: Path) -> str:
    return checked(pipeline("--artifacts", str(root), "status", "--config", str(config), cwd=cwd)).stdout


def _ids(record: dict, step: str) -> list[str]:
    """Slurm ids of a step's elements in a submission record, in order."""
    return list(dict.fromkeys(t["job_id"] for j in record["jobs"] if j["step"] == step for t in j["tasks"]))


def _jobs(*records: dict) -> list[str]:
    return [job["job_id"] for record in records for job in record["jobs"]]


def _history(job_ids: list[str]) -> list[str]:
    """Every state each of these jobs went through, requeued instances included (``sacct -D``)."""
    out = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("|")[1].split(" ")[0] for line in out.splitlines()]


class CheckpointWatch:
    """Polls the epochs done in every training checkpoint under a root while a run goes on: a
    training that restarted from scratch instead of resuming shows up as a count that went down."""

    def __init__(self, root: Path):
        self.root, self.seen, self._stop = root, {}, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        from pipeline.training import CheckpointError, _load_checkpoint

        while not self._stop.wait(0.5):
            for path in self.root.glob("train-aae/.work-*/checkpoint.pt"):
                try:
                    done = _load_checkpoint(path)["epochs_done"]
                except (CheckpointError, FileNotFoundError):
                    continue
                counts = self.seen.setdefault(path.parent.name.removeprefix(".work-"), [])
                if not counts or counts[-1] != done:
                    counts.append(done)

    def latest(self, key: str) -> int:
        return (self.seen.get(key) or [0])[-1]

    def stop(self) -> dict[str, list[int]]:
        self._stop.set()
        self._thread.join()
        return self.seen


def _keys(reference: Reference, config: Path | None = None) -> dict[str, str]:
    plan = build_plan(load_config(str(config or reference.config)), Store(reference.root), ["train-aae"])
    return {p.task.id: p.key for p in plan.tasks if p.task.step == "train-aae"}


# --- (a) a real time-out ----------------------------------------------------------------------


def test_a_timed_out_array_training_is_requeued_and_resumes(reference, tmp_path, fault_log):
    root = reference.clone(tmp_path)
    watch = CheckpointWatch(root)
    _, record = _submit(tmp_path, root, reference.config, _profile(tmp_path / "p.yaml", TIMEOUT))
    trainings = _ids(record, "train-aae")
    assert len(trainings) == 2 and all("_" in i for i in trainings)  # an array of two
    wait_for_empty_queue(_jobs(record), seconds=900)
    seen = watch.stop()
    manifests = [json.loads(m.read_text()) for m in root.glob("train-aae/*/MANIFEST.json")]
    restarts = sorted(int(m["slurm"].get("restart_count", 0)) for m in manifests)
    logs = [Path(record["log_folder"], f"{i}_0_log.out").read_text() for i in trainings]  # submitit's INFO lines
    resumed = all(counts == sorted(counts) for counts in seen.values()) and len(seen) == 2
    # Slurm 22.05 may cancel a dependant (--kill-on-invalid-dep) when it tests the dependency while an
    # element is being requeued (seen here once): the trainings are done, and `submit`
    # again, as `status` says, finishes the run.
    pending = {p.task.step for p in build_plan(load_config(str(reference.config)), Store(root), ["all"]).pending()}
    assert pending <= {"evaluate", "tabulate"}, pending
    if pending:
        wait_for_empty_queue(_jobs(_submit(tmp_path, root, reference.config, tmp_path / "p.yaml")[1]), seconds=300)
    fault_log(
        "Slurm: time limit reached by an array training task",
        survived=resumed and min(restarts) >= 1,
        note=f"--time=2 min, USR2 85 s before: requeued {'/'.join(map(str, restarts))} times, resumed "
        f"from the checkpoint each time" + ("; a dependant cancelled by Slurm, submitted again" if pending else ""),
    )
    assert min(restarts) >= 1 and all("this job is timed-out" in log and "Requeued job" in log for log in logs)
    assert resumed, seen  # epochs done never went down: each rerun continued from the checkpoint
    reference.check(tmp_path, root)


def test_a_training_that_times_out_more_often_than_its_budget_fails_clearly(reference, tmp_path, fault_log):
    """max_num_timeout: 1, a training that needs far more: requeued once, then it fails, and
    ``status`` says why; its dependant is cancelled by Slurm and ``status`` names it."""
    config = _config(
        tmp_path / "endless.yaml",
        reference.epochs * 100,
        reference.cwd / "manifests",
        checkpoint_every=max(1, reference.epochs // 40),
    )
    root = reference.clone(tmp_path)
    budget = {"steps": {"train-aae": {**TIMEOUT["steps"]["train-aae"], "max_num_timeout": 1}}}
    _, record = _submit(tmp_path, root, config, _profile(tmp_path / "p.yaml", budget), "evaluate[ours/fgsm/fgsm]")
    (training,) = _ids(record, "train-aae")
    wait_for_empty_queue(_jobs(record), seconds=600)
    status = _status(tmp_path, root, config)
    line = next((s for s in status.splitlines() if s.startswith("  ours/fgsm: failed")), "")
    checkpoint = root / "train-aae" / f".work-{_keys(reference, config)['ours/fgsm']}" / "checkpoint.pt"
    clear = f"(job {training}, log " in line and line.endswith(
        "hit its time limit more often than the profile's max_num_timeout allows: "
        "raise time or max_num_timeout, then submit again"
    )
    fault_log(
        "Slurm: requeue budget spent (max_num_timeout)",
        survived=clear and checkpoint.is_file(),
        note="requeued once, then FAILED; status says to raise time or max_num_timeout; checkpoint kept",
    )
    assert sacct([training]) == {training: "FAILED"} and len(_history([training])) == 2  # requeued once
    assert clear, status
    assert re.search(
        r"  job \d+ \(ours/fgsm/fgsm\) was cancelled by Slurm: its dependency could never be "
        r"satisfied: train-aae\[ours/fgsm\] failed",
        status,
    ), status
    assert checkpoint.is_file() and not list(root.glob("train-aae/*/MANIFEST.json"))


# --- (b), (c), (d): one run, disturbed three ways -----------------------------------------------


@dataclass
class Chain:
    """What the disturbed run went through, for the tests below to check."""

    cwd: Path
    root: Path
    records: list[dict] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)  # when -> `pipeline status` output
    queue: dict[str, dict[str, str]] = field(default_factory=dict)  # when -> squeue states
    outputs: list[str] = field(default_factory=list)  # `pipeline submit` outputs after the first
    resumed_from: int = 0  # epochs done in the cancelled training's checkpoint when it was resubmitted
    checkpoints: dict[str, list[int]] = field(default_factory=dict)
    node_down: bool = False
    history: list[str] = field(default_factory=list)


def _running(job_ids: list[str]) -> bool:
    return set(in_queue(job_ids).values()) == {"RUNNING"} and len(in_queue(job_ids)) == len(job_ids)


@pytest.fixture(scope="module")
def chain(reference, slurm_cluster, tmp_path_factory) -> Iterator[Chain]:
    """Submit; while both trainings run, read ``status`` (d); cancel one training array task mid-run
    and submit again without ``cancel`` (b) (the profile keeps dependants of failed jobs pending, as
    Slurm does by default, so the resubmission must find and cancel them); once the resubmitted
    training resumed, kill slurmd (c), restart it, and submit again if anything is still missing."""
    cwd = tmp_path_factory.mktemp("chain")
    run = Chain(cwd, reference.clone(cwd))
    profile = _profile(cwd / "p.yaml", {"extra": {"kill-on-invalid-dep": "no"}})
    watch = CheckpointWatch(run.root)
    keys = _keys(reference)
    try:
        run.records.append(_submit(cwd, run.root, reference.config, profile)[1])
        first, second = _ids(run.records[0], "train-aae")
        # early, so that its sibling still runs when the run is submitted again and the resubmitted one
        # still runs when slurmd dies, however loaded the machine
        wait_until(
            lambda: _running([first, second]) and watch.latest(keys["ours/fgsm"]) >= reference.epochs // 10,
            300,
            "both trainings to run, ours/fgsm past a tenth of its epochs",
        )
        run.queue["in flight"], run.status["in flight"] = (
            in_queue(_jobs(run.records[0])),
            _status(cwd, run.root, reference.config),
        )
        subprocess.run(["scancel", first], check=True)
        wait_until(
            lambda: sacct([first]).get(first) == "CANCELLED" and first not in in_queue([first]),
            60,
            "the cancelled task to end and its process to go",
        )
        run.status["cancelled"] = _status(cwd, run.root, reference.config)
        run.resumed_from = watch.latest(keys["ours/fgsm"])  # nothing writes the checkpoint now
        output, record = _submit(cwd, run.root, reference.config, profile)
        run.outputs.append(output)
        run.records.append(record)
        run.queue["resubmitted"] = in_queue(_jobs(*run.records))
        resubmitted = _ids(record, "train-aae")
        assert len(resubmitted) == 1, f"{output}\n{json.dumps(record, indent=1)}\n{run.status['cancelled']}"
        (again,) = resubmitted
        wait_until(
            lambda: _running([again]) and watch.latest(keys["ours/fgsm"]) > run.resumed_from,
            300,
            "the resubmitted training to resume",
        )
        cluster_command("kill-slurmd", slurm_cluster)
        try:
            run.node_down = bool(wait_until(_node_down, 90, "slurmctld to mark the node down"))
        finally:
            cluster_command("start-slurmd", slurm_cluster)
        wait_for_empty_queue(_jobs(*run.records), seconds=900, stuck_ok=True)
        run.history = _history([first, second, again])
        run.status["after the outage"] = _status(cwd, run.root, reference.config)
        plan = build_plan(load_config(str(reference.config)), Store(run.root), ["all"])
        if plan.pending():  # the node failure ended something for good: what `status` says to do
            output, record = _submit(cwd, run.root, reference.config, profile)
            run.outputs.append(output)
            run.records.append(record)
            wait_for_empty_queue(_jobs(record), seconds=600)
        assert not build_plan(load_config(str(reference.config)), Store(run.root), ["all"]).pending()
    finally:
        run.checkpoints = watch.stop()
    yield run


def _node_down() -> bool:
    return "down" in subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True).stdout


def test_status_of_a_run_in_flight_comes_from_slurm(chain, fault_log):
    queue, status = chain.queue["in flight"], chain.status["in flight"]
    record = chain.records[0]
    trainings, evaluate, tabulate = (_ids(record, step) for step in ("train-aae", "evaluate", "tabulate"))
    ok = [queue.get(i) for i in trainings] == ["RUNNING"] * 2 and {queue.get(i) for i in evaluate + tabulate} == {
        "PENDING"
    }
    fault_log(
        "Slurm: status read while the run is in flight",
        survived=ok,
        note="running and pending as squeue/sacct report them, none from artifacts",
    )
    assert ok, queue
    assert "train-aae      0/2 done, 2 running" in status
    assert "evaluate       0/6 done, 6 pending" in status and "tabulate       0/1 done, 1 pending" in status
    assert "sample         3/3 done" in status and "never" not in status


def test_a_cancelled_array_task_is_resubmitted_without_cancelling_the_run(chain, reference, fault_log):
    first, second = _ids(chain.records[0], "train-aae")
    stale = _ids(chain.records[0], "evaluate") + _ids(chain.records[0], "tabulate")
    cancelled, output = chain.status["cancelled"], chain.outputs[0]
    fault_log(
        "Slurm: array task cancelled mid-run, `submit` again without `cancel`",
        survived="cancelled 2 queued jobs (7 tasks) that could never run" in output,
        note="the 2 jobs waiting on it cancelled and replaced, the running sibling left alone; "
        "resumed from its checkpoint",
    )
    assert "train-aae      0/2 done, 1 cancelled, 1 running" in cancelled
    assert f"  ours/fgsm: cancelled (job {first}, log " in cancelled
    assert re.search(
        rf"  job {stale[0]} \(6 tasks \*/\*/\*\) waits on a dependency that can never be satisfied: "
        rf"train-aae\[ours/fgsm\] cancelled; `pipeline submit` cancels it",
        cancelled,
    ), cancelled
    assert (
        f"cancelled 2 queued jobs (7 tasks) that could never run (an upstream task failed, was cancelled or is "
        f"submitted again): {' '.join(sorted(stale))}" in output
    )
    assert "already queued by an earlier submission: 1 task in 1 job" in output  # the running plain_ae training
    resubmitted = chain.records[1]
    assert [j["label"] for j in resubmitted["jobs"]] == ["train-aae[ours/fgsm]", "evaluate[*/*/*]", "tabulate[tables]"]
    (again,), (evaluate,) = _ids(resubmitted, "train-aae"), _ids(resubmitted, "evaluate")
    jobs = {j["step"]: j for j in resubmitted["jobs"]}
    assert set(jobs["evaluate"]["dependency"].removeprefix("afterok:").split(":")) == {again, second}
    assert jobs["tabulate"]["dependency"] == f"afterok:{again}:{evaluate}:{second}"  # and on the running sibling
    assert chain.queue["resubmitted"].get(second) == "RUNNING"  # never touched
    assert all(counts == sorted(counts) for counts in chain.checkpoints.values()), chain.checkpoints
    assert chain.resumed_from >= reference.epochs // 10


def test_slurmd_killed_mid_task_then_the_run_completes(chain, reference, fault_log):
    """The running trainings are requeued (they may be) and resume, or they fail and ``status`` says
    so with their job, and ``submit`` again completes the run; or the training outlives the outage (its
    step daemon survives slurmd, which is back before slurmctld ends the job: seen once under load)."""
    again = _ids(chain.records[1], "train-aae")[0]
    requeued = bool({"NODE_FAIL", "REQUEUED"} & set(chain.history))
    failed_clearly = (
        f"  ours/fgsm: failed (job {again}, log " in chain.status["after the outage"] and len(chain.records) == 3
    )
    outlived = chain.history[-1] == "COMPLETED" and len(chain.records) == 2
    how = (
        "requeued and resumed"
        if requeued
        else "failed, named by status, submitted again"
        if failed_clearly
        else "outlived the outage"
    )
    fault_log(
        "Slurm: slurmd killed mid-task",
        survived=chain.node_down and (requeued or failed_clearly or outlived),
        note=f"node down after SlurmdTimeout=10 s; the running training {how}; run completed",
    )
    assert chain.node_down and (requeued or failed_clearly or outlived), (
        chain.history,
        chain.status["after the outage"],
    )
    assert all(counts == sorted(counts) for counts in chain.checkpoints.values()), chain.checkpoints
    reference.check(chain.cwd, chain.root)
