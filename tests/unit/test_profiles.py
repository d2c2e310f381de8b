"""Cluster profiles, the grouping of a plan into job arrays, the dry run, and reading Slurm state.

No Slurm here: where a Slurm command is needed, a fake one on PATH prints canned output and logs
how it was called.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.dag import Ref, Resources, Step, Task, build_plan, discover
from pipeline.errors import PipelineError
from pipeline.runners import slurm
from pipeline.runners.slurm.arrays import array_jobs, id_pattern
from pipeline.runners.slurm.profile import SMALL_PACK, load_profile, minutes
from pipeline.store import MANIFEST, Store

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _run(ctx, task):  # never called: nothing here executes a step
    raise AssertionError


# up[a,b,c] (CPU) -> down[<up>/<i>] (GPU, 2 per up task) -> report[x] (reads all of down, checkpointable)
STEPS = {
    "up": Step(
        "up",
        1,
        (),
        (),
        Resources(cpus=2, mem="1G", time="00:10:00"),
        lambda s, u: [Task("up", n, {"n": n}) for n in "abc"],
        _run,
    ),
    "down": Step(
        "down",
        1,
        ("up",),
        (),
        Resources(cpus=4, gpus=1, mem="8G", time="02:00:00"),
        lambda s, u: [
            Task("down", f"{t.id}/{i}", {"i": i}, {"src": Ref("up", t.id)}) for t in u["up"] for i in range(2)
        ],
        _run,
    ),
    "report": Step(
        "report",
        1,
        ("down",),
        (),
        Resources(),
        lambda s, u: [Task("report", "x", {}, {f"d{i}": Ref("down", t.id) for i, t in enumerate(u["down"])})],
        _run,
        checkpointable=True,
    ),
}


@pytest.fixture(scope="module")
def config():
    return load_config("smoke")


def _profile(tmp_path: Path, text: str):
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return load_profile(path, STEPS)


def _refused(tmp_path: Path, text: str, *fragments: str) -> str:
    with pytest.raises(PipelineError) as err:
        _profile(tmp_path, text)
    message = str(err.value)
    assert "\n" not in message and "profile.yaml" in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- profiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["v100.yaml", "local.yaml"])
def test_shipped_profiles_are_valid_for_the_pipeline_steps(name):
    profile = load_profile(REPO / "slurm" / name, discover())
    assert profile.gpu.gres == "gpu:v100:1"


def test_unknown_keys_fail_naming_the_key_and_the_closest_valid_one(tmp_path):
    _refused(tmp_path, "gpu: {array_throtle: 2}", "'gpu.array_throtle'", "'array_throttle'")
    _refused(tmp_path, "partiton: gpu", "'partiton'", "'partition'")
    _refused(tmp_path, "steps: {dwon: {time: '10'}}", "'steps.dwon'", "'down'")


@pytest.mark.parametrize(
    "text, key",
    [
        ("time: 4h", "'time'"),
        ("gpu: {time: '1-2:3'}", "'gpu.time'"),
        ("steps: {down: {time: '00:00'}}", "'steps.down.time'"),
        ("mem: 16 G", "'mem'"),
        ("cpu: {mem: 4000X}", "'cpu.mem'"),
        ("gres: 'gpu:v100'", "'gres'"),
        ("gpu: {gres: 'gpu:v100:1;rm -rf /'}", "'gpu.gres'"),
        ("partition: 'gpu;rm -rf /'", "'partition'"),
        ("partition: '$(id)'", "'partition'"),
        ("account: '`id`'", "'account'"),
        ("qos: 'high prio'", "'qos'"),
        ('constraint: "v100\\nid"', "'constraint'"),
        ("extra: {mail-user: 'a b'}", "'extra.mail-user'"),
        ("extra: {mail-type: '$(id)'}", "'extra.mail-type'"),
        ("extra: {'bad flag': 1}", "'extra.bad flag'"),
        ("extra: {dependency: 'afterok:1'}", "'extra.dependency'"),
        ("extra: {exclusive: false}", "'extra.exclusive'"),
        ("pack: 0", "'pack'"),
        ("cpus_per_task: 0", "'cpus_per_task'"),
        ("array_throttle: two", "'array_throttle'"),
    ],
)
def test_malformed_values_fail_naming_the_key(tmp_path, text, key):
    _refused(tmp_path, text, key)


@pytest.mark.parametrize(
    "text, key, hint",
    [
        ("extra: {part: gpu}", "'extra.part'", "sbatch would read it as --partition"),
        ("extra: {dep: 'afterany:1'}", "'extra.dep'", "as --dependency"),
        ("gpu: {extra: {arr: '0-3'}}", "'gpu.extra.arr'", "as --array"),
        ("extra: {mail: FAIL}", "'extra.mail'", "as --mail-type or --mail-user"),
        ("extra: {exclusiv: true}", "'extra.exclusiv'", "as --exclusive"),
        ("extra: {partitions: gpu}", "'extra.partitions'", "did you mean --partition?"),
        ("extra: {no_requeue: true}", "'extra.no_requeue'", "--no-requeue is set by the runner"),
        ("extra: {parsable: true}", "'extra.parsable'", "set by the runner"),
        ("steps: {down: {extra: {test-only: true}}}", "'steps.down.extra.test-only'", "set by the runner"),
    ],
)
def test_extra_flags_must_be_sbatch_options_in_full_that_the_runner_leaves_alone(tmp_path, text, key, hint):
    """sbatch takes any unambiguous prefix of an option: ``part`` would set the partition."""
    _refused(tmp_path, text, key, hint)


def test_extra_flags_are_spelled_as_sbatch_spells_them_and_may_keep_failed_dependencies_pending(tmp_path):
    down = _profile(tmp_path, "extra: {mail_type: FAIL, kill_on_invalid_dep: 'no'}").resolve(STEPS["down"])
    assert down.get("extra") == {"mail-type": "FAIL", "kill-on-invalid-dep": "no"}
    assert down.submitit_parameters(False)["additional_parameters"] == {
        "mail-type": "FAIL",
        "kill-on-invalid-dep": "no",
    }
    default = _profile(tmp_path, "{}").resolve(STEPS["down"]).submitit_parameters(False)
    assert default["additional_parameters"] == {"kill-on-invalid-dep": "yes"}


def test_small_steps_are_packed_unless_the_profile_says_otherwise(tmp_path):
    small = dataclasses.replace(STEPS["down"], small=True)
    assert _profile(tmp_path, "{}").resolve(small).get("pack") == SMALL_PACK
    assert _profile(tmp_path, "{}").resolve(STEPS["down"]).get("pack") == 1
    profile = _profile(tmp_path, "pack: 4\nsteps: {up: {pack: 2}}")
    assert [profile.resolve(s).get("pack") for s in (small, STEPS["up"])] == [4, 2]
    assert "pack" not in profile.resolve(small).submitit_parameters(False)


def test_an_unquoted_time_that_yaml_reads_as_a_number_says_to_quote_it(tmp_path):
    _refused(tmp_path, "gpu: {time: 4:00:00}", "'gpu.time'", "14400", "quote")


@pytest.mark.parametrize(
    "time, expected",
    [
        ("30", 30),
        ("30:30", 31),
        ("4:00:00", 240),
        ("04:00:00", 240),
        ("1-0", 1440),
        ("1-2", 1560),
        ("1-02:30", 1590),
        ("2-00:00:01", 2881),
    ],
)
def test_slurm_time_formats_in_minutes(time, expected):
    assert minutes(time) == expected


def test_step_settings_come_from_the_most_specific_place(tmp_path):
    profile = _profile(
        tmp_path,
        """
        mem: 2G
        array_throttle: 4
        setup: [module load cuda]
        extra: {mail-type: FAIL, comment: top}
        cpu: {partition: cpu}
        gpu: {partition: gpu, gres: 'gpu:v100:1', time: '08:00:00'}
        steps:
          down: {mem: 12G, extra: {comment: down}}
    """,
    )
    up, down, report = (profile.resolve(STEPS[name]) for name in ("up", "down", "report"))
    assert (up.get("partition"), up.get("cpus_per_task"), up.get("mem"), up.get("time"), up.get("gres")) == (
        "cpu",
        2,
        "2G",
        "00:10:00",
        None,
    )
    assert (down.get("partition"), down.get("cpus_per_task"), down.get("mem"), down.get("time"), down.get("gres")) == (
        "gpu",
        4,
        "12G",
        "08:00:00",
        "gpu:v100:1",
    )
    assert down.get("extra") == {"mail-type": "FAIL", "comment": "down"}
    assert down.origin["mem"] == "profile key 'steps.down.mem'" and down.origin["gres"] == "profile key 'gpu.gres'"
    assert down.origin["cpus_per_task"] == "the Resources of step 'down'"
    params = down.submitit_parameters(checkpointable=False)
    assert params["time"] == 480 and params["array_parallelism"] == 4 and params["setup"] == ["module load cuda"]
    assert "requeue" not in params["additional_parameters"]
    assert report.submitit_parameters(checkpointable=True)["additional_parameters"]["requeue"] is True


def test_a_gpu_step_without_a_gpu_block_asks_for_its_resources_gpus(tmp_path):
    settings = _profile(tmp_path, "{}").resolve(STEPS["down"])
    assert settings.get("gres") == "gpu:1" and settings.origin["gres"] == "the Resources of step 'down'"


# --- grouping the plan into jobs --------------------------------------------------------------


def _complete(store: Store, step: str, key: str) -> None:
    store.path(step, key).mkdir(parents=True)
    (store.path(step, key) / MANIFEST).write_text(json.dumps({"files": {}}))


def test_pending_tasks_become_one_array_per_set_of_pending_upstream_tasks(tmp_path, config):
    store = Store(tmp_path)
    plan = build_plan(config, store, ["report"], steps=STEPS)
    keys = {(p.task.step, p.task.id): p.key for p in plan.tasks}
    _complete(store, "up", keys[("up", "b")])  # done: never submitted, nothing waits for it
    plan = build_plan(config, store, ["report"], steps=STEPS)
    jobs = array_jobs(plan)
    assert [(j.label, len(j.tasks)) for j in jobs] == [
        ("up[*]", 2),
        ("down[a/*]", 2),
        ("down[b/*]", 2),
        ("down[c/*]", 2),
        ("report[x]", 1),
    ]
    ids = {j.number: str(100 + j.number) for j in jobs}
    assert [j.dependency(ids) for j in jobs] == [
        None,
        "afterok:101_0",
        None,
        "afterok:101_1",
        "afterok:102_0:102_1:103_0:103_1:104_0:104_1",
    ]
    assert jobs[3].describe_after() == "#1 up[c] (1 task)"
    assert jobs[4].describe_after() == "down[*/*] (6 tasks in 3 jobs)"


def test_tasks_queued_by_an_earlier_submission_are_not_submitted_again(tmp_path, config):
    plan = build_plan(config, Store(tmp_path), ["down"], steps=STEPS)
    up_a = next(p for p in plan.tasks if p.task.id == "a")
    jobs = array_jobs(plan, queued={("up", up_a.key): "77_3"})
    assert [j.label for j in jobs][:1] == ["up[*]"] and len(jobs[0].tasks) == 2
    waits_on_queued = next(j for j in jobs if j.label == "down[a/*]")
    assert waits_on_queued.dependency({1: "90"}) == "afterok:77_3"
    assert "1 task queued earlier" in waits_on_queued.describe_after()


def test_id_patterns():
    assert id_pattern(["aae_train/fgsm/000000", "aae_train/fgsm/000016"]) == "aae_train/fgsm/*"
    assert id_pattern(["identity/-/fgsm", "jpeg/-/fgsm"]) == "*/-/fgsm"
    assert id_pattern(["a", "b/c"]) == "*/*" and id_pattern(["only"]) == "only"


# --- dry run and submission without Slurm -----------------------------------------------------


def test_dry_run_writes_submitits_scripts_without_any_slurm_command(tmp_path, config, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["report"], steps=STEPS)
    profile = _profile(tmp_path, "array_throttle: 1\ngpu: {partition: gpu, gres: 'gpu:v100:1'}")
    submission = slurm.dry_run(plan, store, profile)
    assert submission.folder.parent == store.root / slurm.RECORDS
    scripts = {s.job.label: s.script.read_text() for s in submission.jobs}
    assert "#SBATCH --array=0-2%1" in scripts["up[*]"] and "--dependency" not in scripts["up[*]"]
    down = scripts["down[a/*]"]
    for line in (
        "#SBATCH --array=0-1%1",
        "#SBATCH --dependency=afterok:JOB1_0",
        "#SBATCH --gres=gpu:v100:1",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=120",
        "#SBATCH --mem=8G",
        "#SBATCH --job-name=down",
    ):
        assert line in down
    assert "--array" not in scripts["report[x]"] and "#SBATCH --requeue" in scripts["report[x]"]
    assert "submitit.core._submit" in down
    assert not list((store.root / slurm.RECORDS).glob("*.json"))


def test_submit_without_sbatch_says_what_to_do(tmp_path, config, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    store = Store(tmp_path)
    plan = build_plan(config, store, ["up"], steps=STEPS)
    with pytest.raises(PipelineError, match="sbatch is not on PATH.*--dry-run.*pipeline run"):
        slurm.submit(plan, store, config, _profile(tmp_path, "{}"), ["up"])


def test_node_local_artifact_roots_are_warned_about(tmp_path):
    assert "may not see it" in slurm.node_local_warning(Path("/tmp/x"))
    assert slurm.node_local_warning(Path("/dev/shm/x")) is not None
    assert slurm.node_local_warning(Path("/srv/shared/artifacts")) is None


# --- state and cancel, with fake Slurm commands ------------------------------------------------


def _fake(bin_dir: Path, name: str, output: str) -> Path:
    """A fake Slurm command that logs its arguments and prints ``output``."""
    bin_dir.mkdir(exist_ok=True)
    log = bin_dir / f"{name}.calls"
    script = bin_dir / name
    script.write_text(f"#!/bin/sh\necho \"$@\" >> '{log}'\ncat <<'EOF'\n{output}\nEOF\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return log


def test_states_come_from_one_sacct_and_one_squeue_call(tmp_path, config, monkeypatch):
    store = Store(tmp_path / "artifacts")
    plan = build_plan(config, store, ["down"], steps=STEPS)
    up = {p.task.id: p for p in plan.tasks if p.task.step == "up"}
    down = [p for p in plan.tasks if p.task.step == "down"]
    _complete(store, "up", up["a"].key)
    folder = store.root / slurm.RECORDS / "run1"
    folder.mkdir(parents=True)
    (folder / "11_1_0_log.err").write_text("Traceback (most recent call last):\nPipelineError: dataset gone\n")
    record = {
        "run_id": "run1",
        "log_folder": str(folder),
        "jobs": [
            {
                "job_id": "11",
                "step": "up",
                "tasks": [{"id": t, "key": up[t].key, "job_id": f"11_{i}"} for i, t in enumerate("abc")],
            },
            {
                "job_id": "12",
                "step": "down",
                "tasks": [{"id": p.task.id, "key": p.key, "job_id": f"12_{i}"} for i, p in enumerate(down)],
            },
        ],
    }
    (store.root / slurm.RECORDS / "run1.json").write_text(json.dumps(record))
    bin_dir = tmp_path / "bin"
    sacct = _fake(bin_dir, "sacct", "11_0|COMPLETED\n11_1|FAILED\n11_2|RUNNING\n12_[0-5%2]|PENDING")
    squeue = _fake(
        bin_dir,
        "squeue",
        "11_2|RUNNING|None\n12_0|PENDING|DependencyNeverSatisfied\n"
        "12_1|PENDING|DependencyNeverSatisfied\n12_2|PENDING|Dependency",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    states = slurm.slurm_states(store.root, plan)
    by_id = {
        (step, p.task.id): states[(step, p.key)] for step, group in (("up", up.values()), ("down", down)) for p in group
    }
    assert by_id[("up", "a")].state == slurm.DONE
    failed = by_id[("up", "b")]
    assert failed.state == slurm.FAILED and failed.job_id == "11_1" and "dataset gone" in failed.log_tail
    assert failed.log_path == folder / "11_1_0_log.err"
    assert by_id[("up", "c")].state == slurm.RUNNING
    assert [by_id[("down", p.task.id)].state for p in down] == [slurm.NEVER] * 2 + [slurm.PENDING] * 4
    assert sacct.read_text().splitlines() == ["-X -n -P -o JobID,State,Reason -j 11,12"]
    assert len(squeue.read_text().splitlines()) == 1 and "-j 11,12" in squeue.read_text()


def test_cancel_cancels_every_submission_with_jobs_in_the_queue_with_one_scancel(tmp_path, monkeypatch):
    records = tmp_path / slurm.RECORDS
    records.mkdir()
    for run, ids in (
        ("20260101-000000-aaaa", ["1", "2"]),
        ("20260102-000000-bbbb", ["5", "6", "7"]),
        ("20260103-000000-cccc", ["9"]),
    ):
        (records / f"{run}.json").write_text(
            json.dumps(
                {"run_id": run, "log_folder": str(records / run), "jobs": [{"job_id": i, "tasks": []} for i in ids]}
            )
        )
    calls = _fake(tmp_path / "bin", "scancel", "")
    squeue = _fake(
        tmp_path / "bin",
        "squeue",
        "1|COMPLETED|None\n2_0|RUNNING|None\n2_1|PENDING|Resources\n6|PENDING|Dependency\n9|CANCELLED|None",
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert slurm.cancel(tmp_path) == (["20260101-000000-aaaa", "20260102-000000-bbbb"], ["2", "6"])
    assert squeue.read_text().split()[-1] == "1,2,5,6,7,9"  # one query for every recorded job
    assert slurm.cancel(tmp_path, "20260101-000000-aaaa") == (["20260101-000000-aaaa"], ["1", "2"])
    assert calls.read_text().splitlines() == ["2 6", "1 2"]
    with pytest.raises(PipelineError, match="no submission 'nope'"):
        slurm.cancel(tmp_path, "nope")
