"""``latency``, ``memory`` and ``parallel``: the pipeline command run as a child process."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.accounting import mebibytes
from pipeline.config import Config, load_config
from pipeline.dag import build_plan
from pipeline.errors import PipelineError
from pipeline.execute import execute
from pipeline.store import Store
from pipeline.tools.bench.core import (
    REPO,
    Bench,
    Result,
    build_upstream,
    closure,
    full_plan,
    interleave,
    representative,
    skipped_row,
)

LATENCY_TARGET_S = 2.0
MEMORY_BUILD_LIMIT = 25  # memory/<step> builds at most this many missing upstream tasks


# ---------------------------------------------------------------- latency


def cli_command() -> list[str]:
    """The installed ``pipeline`` command of this interpreter."""
    script = Path(sys.executable).parent / "pipeline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


def wall_seconds(argv: Sequence[str], expect: str = "") -> float:
    """Wall time of a command; it must succeed (and print ``expect``)."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or expect not in done.stdout:
        raise PipelineError(
            f"`{' '.join(argv)}` failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}"
        )
    return seconds


def latency_row(name: str, seconds: list[float], note: str) -> Result:
    median = statistics.median(seconds)
    return Result(name, median, None, "s", None, f"< {LATENCY_TARGET_S:g} s", median < LATENCY_TARGET_S, note)


def latency_dry_run(bench: Bench) -> Result:
    argv = ["submit", "all", "--dry-run", "--config", "paper", "--profile", str(REPO / "slurm" / "v100.yaml")]
    seconds = []
    for rep in range(bench.repeat):
        root = bench.scratch / f"dry-run-{rep}"
        seconds.append(wall_seconds([*cli_command(), "--artifacts", str(root), *argv]))
    return latency_row("latency/dry-run", seconds, "paper config, empty artifact root (every task pending), subprocess")


def fabricate_complete(root: Path, config: Config) -> int:
    """Publish a placeholder artifact (manifest only) for every planned task; returns how many."""
    store = Store(root)
    plan = build_plan(config, store, ["all"])
    for planned in plan.tasks:
        with store.staging(planned.task.step, planned.key) as tmp:
            store.publish(tmp, planned.task.step, planned.key, {"task": planned.task.id, "placeholder": True})
    return len(plan.tasks)


def latency_noop(bench: Bench) -> Result:
    root = bench.scratch / "noop"
    count = fabricate_complete(root, load_config("paper"))
    argv = [*cli_command(), "--artifacts", str(root), "run", "all", "--config", "paper"]
    seconds = [wall_seconds(argv, expect="nothing to do") for _ in range(bench.repeat)]
    return latency_row(
        "latency/noop",
        seconds,
        f"paper config, {count} placeholder artifacts (empty manifests, not real outputs), subprocess",
    )


def bench_latency(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    runs = {"dry-run": latency_dry_run, "noop": latency_noop}
    return [run(bench) for name, run in runs.items() if wants(name)]


# ---------------------------------------------------------------- memory


def run_task(argv: Sequence[str]) -> None:
    """Child of memory/<step>: run one task, forced, as ``pipeline run STEP --force STEP`` would, then
    print this process's peak resident memory (``VmHWM``, KiB). ``argv``: config, artifact root, step,
    task id, ``--set`` overrides."""
    config_name, root, step, task_id, *overrides = argv
    config = load_config(config_name, overrides)
    store = Store(Path(root))
    execute(full_plan(config, store, force=[step]).find(step, task_id), store, config)
    peak = re.search(r"^VmHWM:\s*(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    print(peak.group(1) if peak else "0")


def peak_rss_mib(argv: Sequence[str], cwd: Path) -> float:
    """Peak resident memory of a child process that prints its own ``VmHWM`` last, in MiB; it must
    succeed. (``wait4``'s ``ru_maxrss`` would not do: it counts the parent's memory at fork time.)"""
    child = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if child.returncode != 0:
        raise PipelineError(f"memory child failed: {child.stderr[-800:]}")
    return int(child.stdout.split()[-1]) / 1024


def bench_memory(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    rows = []
    plan = full_plan(bench.config, bench.store)
    for name, step in plan.steps.items():
        if not wants(name):
            continue
        planned = representative(plan, name)
        missing = closure(plan, list(planned.inputs.values())).pending()
        if len(missing) > MEMORY_BUILD_LIMIT:
            rows.append(
                skipped_row(
                    f"memory/{name}",
                    f"{len(missing)} upstream tasks missing (> "
                    f"{MEMORY_BUILD_LIMIT}); run `pipeline run all` on --artifacts first",
                )
            )
            continue
        build_upstream(bench, bench.config, planned)
        bench.log(f"bench: memory/{name}: {planned.label} in a child process")
        code = "import sys; from pipeline.tools.bench.commands import run_task; run_task(sys.argv[1:])"
        # in scratch, so that results/ written by the table and figure steps stays out of the checkout
        peak = peak_rss_mib(
            [
                sys.executable,
                "-c",
                code,
                bench.config_name,
                str(bench.store.root),
                name,
                planned.task.id,
                *bench.overrides,
            ],
            cwd=bench.scratch,
        )
        limit = mebibytes(step.resources.mem)
        if limit is None:
            rows.append(skipped_row(f"memory/{name}", f"the step's mem {step.resources.mem!r} is no Slurm size"))
            continue
        rows.append(
            Result(
                f"memory/{name}",
                peak,
                limit,
                "MiB",
                peak / limit,
                "< 1",
                peak < limit,
                f"peak RSS of {planned.label} (forced, own process) / the step's declared mem",
            )
        )
    return rows


# ---------------------------------------------------------------- parallel

PARALLEL_TARGET = 1.6  # speed-up of -j 2 over -j 1 on two cores


def smoke_run_seconds(bench: Bench, jobs: int, rep: int) -> float:
    """Wall time of ``pipeline run all --config smoke -j JOBS`` (subprocess, one torch thread per task)
    in a fresh artifact root and working directory, so that nothing writes into the checkout."""
    cwd = bench.scratch / f"parallel-j{jobs}-{rep}"
    cwd.mkdir()
    argv = [
        *cli_command(),
        "--artifacts",
        str(cwd / "artifacts"),
        "run",
        "all",
        "--config",
        "smoke",
        "-j",
        str(jobs),
        "--set",
        f"sample.manifest_dir={cwd / 'data_manifests'}",
        "--set",
        "runtime.threads=1",
    ]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise PipelineError(f"`{' '.join(argv)}` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    shutil.rmtree(cwd, ignore_errors=True)
    return seconds


def bench_parallel(bench: Bench, wants: Callable[[str], bool]) -> list[Result]:
    if not wants("smoke-j2"):
        return []
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        return [skipped_row("parallel/smoke-j2", f"{cores} usable core: -j 2 needs two")]
    bench.log("bench: parallel/smoke-j2: pipeline run all --config smoke, -j 1 and -j 2 interleaved")
    reps = iter(range(2 * bench.repeat))
    one, two = interleave(
        [lambda: smoke_run_seconds(bench, 1, next(reps)), lambda: smoke_run_seconds(bench, 2, next(reps))], bench.repeat
    )
    speedup = one / two
    return [
        Result(
            "parallel/smoke-j2",
            two,
            one,
            "s",
            speedup,
            f">= {PARALLEL_TARGET:g}",
            speedup >= PARALLEL_TARGET,
            "wall s of `run all --config smoke` from an empty root (subprocess, 1 torch thread per task): "
            "ours -j 2, reference -j 1; ratio = speed-up (-j 1 s / -j 2 s)",
        )
    ]
