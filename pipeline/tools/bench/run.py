"""The whole ``pipeline bench`` run: the machine, the selection of rows, every group in turn."""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.kernels import pin
from pipeline.store import Store
from pipeline.tools.bench.attack import bench_attacks
from pipeline.tools.bench.commands import bench_latency, bench_memory, bench_parallel
from pipeline.tools.bench.core import Bench, Result
from pipeline.tools.bench.kernels import bench_kernels
from pipeline.tools.bench.storage import bench_hdf5, bench_shard_write
from pipeline.tools.bench.train import bench_train

BENCHMARKS: dict[str, Callable[[Bench, Callable[[str], bool]], list[Result]]] = {
    "train": bench_train,
    "attack": bench_attacks,
    "shard-write": bench_shard_write,
    "hdf5-read": bench_hdf5,
    "latency": bench_latency,
    "memory": bench_memory,
    "parallel": bench_parallel,
    "kernels": bench_kernels,
}
GROUPS = tuple(BENCHMARKS)


def machine() -> dict[str, Any]:
    """CPU model, cores, torch version and threads, the device the config selects."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return {
        "cpu": model.group(1).strip() if model else platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _selected(items: set[str] | None, item: str) -> bool:
    return items is None or item in items


def selection(only: Sequence[str]) -> dict[str, Callable[[str], bool]]:
    """Per group, which of its rows to run: ``--only attack`` runs the group, ``attack/fgsm`` one row."""
    if not only:
        return {group: lambda item: True for group in GROUPS}
    chosen: dict[str, set[str] | None] = {}
    for name in only:
        group, _, item = name.partition("/")
        if group not in GROUPS:
            raise PipelineError(f"--only {name!r}: unknown benchmark (groups: {', '.join(GROUPS)})")
        items = chosen.get(group, set())
        if not item or items is None:
            chosen[group] = None
        else:
            chosen[group] = items | {item}
    return {group: partial(_selected, items) for group, items in chosen.items()}


def bench_overrides(config_name: str, scratch: Path) -> list[str]:
    """Runtime settings of every measurement (none is part of an artifact key): the sample step's
    manifest copies go to scratch, not into the checkout; one torch thread unless the config sets
    ``runtime.threads`` (on a shared machine, OpenMP threads stall on each other and timings then
    vary tenfold)."""
    threads = [] if load_config(config_name).runtime.threads else ["runtime.threads=1"]
    return [f"sample.manifest_dir={scratch / 'data_manifests'}", *threads]


def run_benchmarks(
    config_name: str, artifacts: Path | None, only: Sequence[str], repeat: int, log: Callable[[str], None]
) -> tuple[dict[str, Any], list[Result]]:
    """Run the selected benchmarks; returns the machine description and the result rows."""
    wanted = selection(only)
    if config_name.endswith((".yaml", ".yml")) or "/" in config_name:  # a file: children run elsewhere
        config_name = str(Path(config_name).absolute())
    scratch = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    try:
        overrides = bench_overrides(config_name, scratch)
        config = load_config(config_name, overrides)
        pin(config.runtime.cpu_kernels)  # before torch computes: the kernels every task then checks for
        store = Store(artifacts or scratch / "artifacts")
        store.root.mkdir(parents=True, exist_ok=True)
        bench = Bench(config_name, config, overrides, store, repeat, log, scratch)
        device = bench.device  # sets the thread count
        info = {**machine(), "device": str(device), "config": config_name, "artifacts": str(store.root)}
        rows = [row for group, run in BENCHMARKS.items() if group in wanted for row in run(bench, wanted[group])]
        for name in set(only) - {r.benchmark for r in rows} - set(GROUPS):
            log(f"bench: no benchmark named {name!r}")
        return info, rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
