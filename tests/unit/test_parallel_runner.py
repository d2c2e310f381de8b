"""The parallel local runner on small fake steps, with real worker processes: what runs at once, on
which GPU with how many threads, what a failure stops, what an interruption leaves behind."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.dag import Plan, Planned, Resources, Step, Task
from pipeline.errors import PipelineError
from pipeline.runners.local.parallel import TasksFailed
from pipeline.runners.local.runner import run_plan
from pipeline.store import Store

pytestmark = pytest.mark.unit


def record(ctx, cfg: dict) -> None:
    """The fake steps' run: optionally leave a checkpoint and a marker, sleep, fail; then write what the
    task saw (its GPUs, threads, process, inputs, when it ran)."""
    import torch

    started = time.time()
    if cfg.get("checkpoint"):
        (ctx.work / "checkpoint.pt").write_text("epoch 1")
    if cfg.get("marker"):  # written whole, then renamed: whoever sees it can read the pid
        Path(cfg["marker"] + ".tmp").write_text(str(os.getpid()))
        Path(cfg["marker"] + ".tmp").rename(cfg["marker"])
    (ctx.out / "partial.bin").write_bytes(b"half")
    time.sleep(cfg.get("sleep", 0))
    if cfg.get("say"):
        print(cfg["say"])
    if cfg.get("fail") == "user":
        raise PipelineError(f"input {ctx.key.removeprefix('cpu-')}.h5 is corrupt")
    if cfg.get("fail") == "bug":
        raise ValueError("an internal bug")
    if cfg.get("fail") == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    (ctx.out / "seen.json").write_text(
        json.dumps(
            {
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "threads": torch.get_num_threads(),
                "config_threads": ctx.config.runtime.threads,
                "pid": os.getpid(),
                "start": started,
                "end": time.time(),
                "inputs": sorted(ctx.inputs),
            }
        )
    )


def no_tasks(cfg, upstream) -> list[Task]:
    return []  # the tests plan their tasks themselves


CPU = Step("cpu", 1, (), (), Resources(cpus=1, mem="1G"), no_tasks, record)
GPU = Step("gpu", 1, (), (), Resources(cpus=4, gpus=1, mem="1G"), no_tasks, record)


def _plan(store: Store, tasks: list[tuple[Step, str, dict, list[str]]]) -> Plan:
    """Tasks as (step, id, config, ids of the tasks it reads); keys are ``<step>-<id>``."""
    steps = {t[1]: t[0] for t in tasks}
    planned = []
    for step, task_id, config, needs in tasks:
        inputs = {need: (steps[need].name, f"{steps[need].name}-{need}") for need in needs}
        key = f"{step.name}-{task_id}"
        planned.append(Planned(Task(step.name, task_id, config), step, key, inputs, store.is_complete(step.name, key)))
    return Plan(planned, {"cpu": CPU, "gpu": GPU})


def _seen(store: Store, step: str, task_id: str) -> dict:
    return json.loads((store.path(step, f"{step}-{task_id}") / "seen.json").read_text())


@pytest.fixture
def config():
    return load_config("smoke", ["runtime.progress=false"])


def test_a_failure_stops_only_its_dependants(tmp_path, config):
    store = Store(tmp_path / "artifacts")
    plan = _plan(
        store,
        [
            (CPU, "a", {"say": "hello from a"}, []),
            (CPU, "bad", {"fail": "user"}, []),
            (CPU, "after-bad", {}, ["bad"]),
            (CPU, "bug", {"fail": "bug", "sleep": 0.3}, []),
            (CPU, "after-a", {}, ["a"]),
            (CPU, "after-both", {}, ["after-a", "bad"]),
            (CPU, "quiet", {}, []),
        ],
    )
    lines: list[str] = []
    with pytest.raises(TasksFailed) as caught:
        run_plan(plan, store, config, echo=lines.append, jobs=2)
    failed = caught.value
    assert sorted(f.label for f in failed.failures) == ["cpu[bad]", "cpu[bug]"]
    assert sorted(failed.not_run) == ["cpu[after-bad]", "cpu[after-both]"]
    assert {p.task.id for p in plan.tasks if store.is_complete("cpu", p.key)} == {"a", "after-a", "quiet"}
    assert _seen(store, "cpu", "after-a")["inputs"] == ["a"]
    by_label = {f.label: f for f in failed.failures}
    bad, bug = by_label["cpu[bad]"], by_label["cpu[bug]"]
    assert bad.error == "input bad.h5 is corrupt" and "error: input bad.h5 is corrupt" in bad.log.read_text()
    assert bug.error == "ValueError: an internal bug" and "Traceback" in bug.log.read_text()
    assert f"cpu[bad]: input bad.h5 is corrupt (log: {bad.log})" in failed.lines()
    logs = store.root / ".logs" / "cpu"
    assert (logs / "cpu-a.log").read_text() == "hello from a\n"  # a task's output is kept when there is some
    assert not (logs / "cpu-quiet.log").exists()
    assert f"cpu[bad] FAILED (log: {bad.log})" in lines
    assert "not run, they need a failed task: 2 task(s): " in lines[-1]
    assert not list(store.root.glob("cpu/.tmp-*")), "a failed task left its staging directory"


def test_a_worker_that_dies_fails_its_task_and_is_replaced(tmp_path, config):
    store = Store(tmp_path / "artifacts")
    plan = _plan(
        store,
        [(CPU, "crash", {"fail": "crash"}, []), (CPU, "after", {}, ["crash"])]
        + [(CPU, f"t{i}", {"sleep": 0.1}, []) for i in range(6)],
    )
    with pytest.raises(TasksFailed) as caught:
        run_plan(plan, store, config, echo=lambda line: None, jobs=2)
    (failure,) = caught.value.failures
    assert failure.label == "cpu[crash]" and failure.error == "its worker process died (killed by SIGKILL)"
    assert caught.value.not_run == ["cpu[after]"]
    assert all(store.is_complete("cpu", f"cpu-t{i}") for i in range(6))


def test_gpu_tasks_get_one_gpu_each_never_more_at_once_than_gpus(tmp_path, config, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,9")  # two GPUs, as far as the runner can tell
    store = Store(tmp_path / "artifacts")
    tasks = [(GPU, f"g{i}", {"sleep": 0.6}, []) for i in range(5)] + [
        (CPU, f"c{i}", {"sleep": 0.6}, []) for i in range(3)
    ]
    run_plan(_plan(store, tasks), store, config, echo=lambda line: None, jobs=3)
    gpu = [_seen(store, "gpu", f"g{i}") for i in range(5)]
    cpu = [_seen(store, "cpu", f"c{i}") for i in range(3)]
    assert {s["visible"] for s in gpu} == {"7", "9"} and {s["visible"] for s in cpu} <= {"", "7", "9"}
    for a in gpu:  # the GPU tasks running when each one started
        running = [b for b in gpu if b["start"] <= a["start"] < b["end"]]
        assert len(running) <= 2 and len({b["visible"] for b in running}) == len(running)
    share = max(1, len(os.sched_getaffinity(0)) // 3)
    assert {(s["threads"], s["config_threads"]) for s in gpu + cpu} == {(share, share)}
    assert len({s["pid"] for s in gpu + cpu}) == 3  # three long-lived workers ran all eight tasks


def test_one_task_at_a_time_runs_in_this_process(tmp_path, config):
    store = Store(tmp_path / "artifacts")
    run_plan(_plan(store, [(CPU, "a", {}, []), (CPU, "b", {}, ["a"])]), store, config, echo=lambda line: None, jobs=1)
    lonely = _plan(store, [(CPU, "c", {}, [])])
    run_plan(lonely, store, config, echo=lambda line: None, jobs=4)
    assert {_seen(store, "cpu", t)["pid"] for t in "abc"} == {os.getpid()}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def ctrl_c_reaches_us():
    """Ctrl-C at a terminal raises KeyboardInterrupt in the foreground process; a test run started in
    the background of a non-interactive shell (or under nohup) inherits SIGINT ignored, and Python
    then installs no handler: give this test what a terminal gives."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_the_workers_and_leaves_nothing_half_written(tmp_path, config, capfd, ctrl_c_reaches_us):
    store = Store(tmp_path / "artifacts")
    markers = [tmp_path / "started-a", tmp_path / "started-b"]
    plan = _plan(
        store,
        [
            (CPU, "a", {"marker": str(markers[0]), "sleep": 600, "checkpoint": True}, []),
            (CPU, "b", {"marker": str(markers[1]), "sleep": 600}, []),
            (CPU, "c", {}, ["a"]),
        ],
    )

    sent: list[float] = []

    def interrupt() -> None:
        while not all(m.exists() for m in markers):
            time.sleep(0.02)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, store, config, echo=lambda line: None, jobs=2)
    assert time.monotonic() - sent[0] < 120  # the tasks would have slept ten minutes: stopped, not awaited
    workers = [int(m.read_text()) for m in markers]
    assert not any(_alive(pid) for pid in workers)  # pool.stop() waited for them
    assert "interrupted: stopped 2 running task(s): cpu[a], cpu[b]" in capfd.readouterr().err
    assert not any(store.is_complete("cpu", p.key) for p in plan.tasks)
    left = sorted(p.name for p in (store.root / "cpu").iterdir())
    assert left == [".work-cpu-a"] and (store.root / "cpu" / ".work-cpu-a" / "checkpoint.pt").is_file()
