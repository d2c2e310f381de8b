"""Faults during ``pipeline run -j 2`` (worker processes): SIGTERM, Ctrl-C and SIGKILL mid-run, and a
task that fails.

The stopped runs are runs of everything after the CAE, with the AAEs trained longer (``EPOCHS``) so
that a signal sent once the first training checkpoint is written lands while tasks run; their
undisturbed run is computed once per module. A stopped run must end within seconds, leave no worker
process, no staging directory and nothing half-published, and keep the training checkpoints; the
same command must then finish with every artifact identical to the undisturbed run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.faults._harness import check, digests, folder_digests, leftovers, manifests, ok, pipeline, spawn, wait_for

pytestmark = pytest.mark.faults

DROPPED = ["train-aae", "evaluate", "tabulate"]
EPOCHS = 20
STOP_WITHIN_S = 15


def _args(reference) -> tuple[str, ...]:
    return "run", "all", "--config", str(reference.config), "-j", "2", "--set", f"aae.optim.epochs={EPOCHS}"


@pytest.fixture(scope="module")
def undisturbed(reference, tmp_path_factory):
    """The undisturbed ``-j 2`` run, on a terminal (so the live progress line shows)."""
    cwd = tmp_path_factory.mktemp("parallel-undisturbed")
    root = reference.clone(cwd / "artifacts", drop=DROPPED)
    result = ok(pipeline(cwd, root, *_args(reference), tty=True))
    return {"digests": digests(root), "results": folder_digests(reference.results_dir(cwd)), "result": result}


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (the runner's fork server and workers)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = set(), [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pids: set[int], wait_s: float = 5.0) -> set[int]:
    """Which of ``pids`` still run (zombies count as ended) after up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = set()
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.add(pid)
            except OSError:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _stop_mid_training(reference, tmp_path, sig: int, group: bool):
    """Start the ``-j 2`` run, send ``sig`` (to the runner, or its process group as Ctrl-C does) once the
    first AAE checkpoint is written; returns (root, digests before, exit code, seconds to stop, the
    processes below the runner, the process)."""
    root = reference.clone(tmp_path / "artifacts", drop=DROPPED)
    before = digests(root)
    proc = spawn(tmp_path, root, *_args(reference), log=tmp_path / "stopped")
    assert wait_for(lambda: any((root / "train-aae").glob(".work-*/checkpoint.pt")), proc), proc.stderr[-3000:]
    workers = _descendants(proc.pid)
    sent = time.monotonic()
    if group:
        assert proc.send(sig), "the run finished before the signal"
    else:
        os.kill(proc.pid, sig)
    code = proc.finish()
    return root, before, code, time.monotonic() - sent, workers, proc


def _rerun_matches(reference, undisturbed, tmp_path, root) -> bool:
    ok(pipeline(tmp_path, root, *_args(reference)))
    ok(pipeline(tmp_path, root, "clean"))
    return (
        leftovers(root) == []
        and digests(root) == undisturbed["digests"]
        and folder_digests(reference.results_dir(tmp_path)) == undisturbed["results"]
    )


@pytest.mark.parametrize("sig,group", [(signal.SIGTERM, False), (signal.SIGINT, True)], ids=["SIGTERM", "ctrl-c"])
def test_signal_stops_every_worker_and_the_same_command_resumes(
    sig, group, reference, undisturbed, tmp_path, fault_log
):
    root, before, code, seconds, workers, proc = _stop_mid_training(reference, tmp_path, sig, group)
    # SIGINT: KeyboardInterrupt, click says "Aborted!" (exit 1); SIGTERM ends the runner as it would -j 1
    assert code == (1 if sig == signal.SIGINT else -sig), (code, proc.stderr[-2000:])
    assert seconds < STOP_WITHIN_S, f"took {seconds:.1f} s to stop"
    assert re.search(r"^interrupted: stopped \d running task\(s\)", proc.stderr, re.M), proc.stderr[-2000:]
    assert len(workers) >= 3 and _alive(workers) == set(), "a worker outlived the runner"
    found = check(root, before, {**reference.digests, **undisturbed["digests"]})
    assert not list(root.glob("*/.tmp-*")), "the stopped tasks' staging directories are still there"
    assert list((root / "train-aae").glob(".work-*/checkpoint.pt")), "the training checkpoints were not kept"
    resumed = _rerun_matches(reference, undisturbed, tmp_path, root)
    fault_log(
        f"{'Ctrl-C' if group else sig.name} during `run -j 2`",
        survived=found.survived and resumed,
        lost=len(found.lost),
        note=f"workers stopped in {seconds:.1f} s; staging removed, checkpoints kept",
    )
    assert found.survived, (found.lost, found.half_published)
    assert resumed, "the rerun did not end with the undisturbed run's artifacts"


def test_sigkill_of_the_runner_alone_takes_its_workers_along(reference, undisturbed, tmp_path, fault_log):
    root, before, code, _, workers, _ = _stop_mid_training(reference, tmp_path, signal.SIGKILL, group=False)
    assert code == -signal.SIGKILL
    orphans = _alive(workers, wait_s=30)  # the death signal reaches workers busy on a loaded machine late
    found = check(root, before, {**reference.digests, **undisturbed["digests"]})
    resumed = _rerun_matches(reference, undisturbed, tmp_path, root)
    fault_log(
        "SIGKILL of the `run -j 2` process alone",
        survived=found.survived and resumed and not orphans,
        lost=len(found.lost),
        note="workers die with it (PR_SET_PDEATHSIG); rerun + clean",
    )
    assert not orphans, "workers outlived a SIGKILLed runner"
    assert found.survived and resumed, (found.lost, found.half_published)


def _reference_threads(reference) -> int:
    """The torch threads the reference run's trainings ran with (its manifests say): ``-j 2`` runs
    given as many build the reference's bytes."""
    (threads,) = {m["runtime"]["threads"] for (step, _), m in manifests(reference.root).items() if step == "train-aae"}
    return threads


def test_a_failing_task_stops_only_the_tasks_that_need_it(reference, tmp_path, fault_log):
    dropped = ["attack", *DROPPED]
    root = reference.clone(tmp_path / "artifacts", drop=dropped)
    (sample,) = [
        p.parent
        for p in root.glob("sample/*/MANIFEST.json")
        if json.loads(p.read_text())["config"].get("dataset") == "clipart"
    ]
    shard = sample / "test" / "shard-00000.h5"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    before = digests(root)
    result = pipeline(
        tmp_path,
        root,
        "run",
        "all",
        "--config",
        str(reference.config),
        "-j",
        "2",
        "--set",
        f"runtime.threads={_reference_threads(reference)}",
    )
    found = check(root, before, reference.digests, damaged=sample)
    built = manifests(reference.root)
    readers = {
        f"{s}[{m['task']}]"
        for (s, _), m in built.items()
        if s in dropped and {"step": "sample", "key": sample.name} in m["inputs"].values()
    }
    attacks = {label for label in readers if label.startswith("attack[")}
    errors = re.findall(r"^error: (\S+): (.*) \(log: (\S+)\)$", result.stderr, re.M)
    independent = {(s, k) for (s, k), m in built.items() if s == "train-aae" or m["config"].get("role") == "aae_train"}
    fault_log(
        "a failing task under `run -j 2` (corrupt test shard)",
        lost=len(found.lost),
        survived=found.survived and result.returncode == 1,
        note=f"{len(errors)} error lines with logs; independent tasks finished",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    failed = [label for label, _, _ in errors]  # the readers that need no failed task: attacks, evaluations
    assert attacks <= set(failed) <= readers and len(set(failed)) == len(failed), result.stderr[-3000:]
    assert all(str(shard) in why and "does not match the sha256" in why for _, why, _ in errors)
    assert all(str(shard) in Path(log).read_text() for _, _, log in errors)
    assert len(independent) > 4 and independent <= set(manifests(root)), "tasks needing no failed task did not finish"
    assert "not run, they need a failed task:" in result.stdout and not (root / "tabulate").exists()
    assert found.survived, (found.lost, found.half_published)


def test_a_terminal_shows_the_running_tasks_and_done_out_of_all(undisturbed):
    err = undisturbed["result"].stderr.replace("\r", "\n")
    live = re.findall(r"^(\d) running: +\d+%\|.*\| *(\d+)/(\d+) .*$", err, re.M)
    assert live, err[-2000:]
    assert {int(n) for n, _, _ in live} <= {0, 1, 2} and any(int(n) == 2 for n, _, _ in live)
    done, total = max((int(d), int(t)) for _, d, t in live)
    assert done == total > 20
    assert re.search(r"^evaluate\[\S+\] -> evaluate/\w+ \(\d+\.\d s\)$", undisturbed["result"].stdout, re.M)
