"""What this machine offers a local run, and how many tasks of a plan it runs at once with what.

Two ways to size a run (``runtime.jobs``, ``pipeline run -j N``):

- ``-j N``: N tasks at once, as with make. Each runs with ``runtime.threads`` torch threads, else its
  share of the cores (cores // N, at most the cpus its step declares). A task of a step that declares
  GPUs takes one GPU, so such tasks never run more at once than there are GPUs; declared memory is
  not counted (N is the user's choice).
- auto (0): tasks start while the sum of their steps' declared resources fits the machine, as with
  Snakemake's ``--cores`` / ``--resources``: cpus (``runtime.threads`` if set), memory, one GPU each.
  A declaration larger than the machine is clamped to the machine: such a task runs alone, never
  waits forever.

On a machine without GPUs (or with ``runtime.device: cpu``) steps that declare GPUs run on the CPU
under the same rules.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.dag import Planned, Resources

_DEVICES = Path("/dev")


@dataclass(frozen=True)
class Machine:
    """Usable cores, memory (MiB) and GPUs (``CUDA_VISIBLE_DEVICES`` entries, one per GPU)."""

    cores: int
    mem_mib: int
    gpus: tuple[str, ...]


def detect_machine(device: str) -> Machine:
    """This machine, without starting CUDA: the cores this process may use, the physical memory, the
    GPUs in ``CUDA_VISIBLE_DEVICES`` (else one per NVIDIA device node this process can see, as a
    container sees only its own); none with ``device: cpu``."""
    return Machine(len(os.sched_getaffinity(0)), _memory_mib(), () if device == "cpu" else _gpus())


def _memory_mib() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


def _gpus() -> tuple[str, ...]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = []
        for item in (part.strip() for part in visible.split(",")):
            if not item or item.startswith("-"):  # CUDA ignores everything from an invalid entry on
                break
            ids.append(item)
        return tuple(ids)
    return tuple(str(i) for i in range(len(list(_DEVICES.glob("nvidia[0-9]*")))))


def mebibytes(slurm_mem: str) -> int:
    """A Slurm memory size (``16G``; no suffix: megabytes) in MiB."""
    match = re.fullmatch(r"(\d+)([KMGT]?)", slurm_mem)
    if match is None:
        raise ValueError(f"not a Slurm memory size: {slurm_mem!r}")
    number, unit = match.groups()
    return int(int(number) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[unit])


@dataclass(frozen=True)
class Demand:
    """What one task of a step takes while it runs."""

    threads: int  # torch threads it runs with
    cpus: int  # counted against the cores (auto only)
    mem_mib: int  # counted against the memory (auto only)
    gpu: bool  # takes one GPU


@dataclass(frozen=True)
class Allotment:
    """How a plan runs: how many worker processes, which GPUs (one each for the first workers), the
    budgets that running tasks share (None: not counted) and each step's demand."""

    workers: int
    gpus: tuple[str, ...]
    cores: int | None
    mem_mib: int | None
    demands: dict[str, Demand]

    def fits(self, demand: Demand, cpus_used: int, mem_used: int) -> bool:
        """Whether a task with ``demand`` may start beside running tasks using these amounts."""
        return (self.cores is None or cpus_used + demand.cpus <= self.cores) and (
            self.mem_mib is None or mem_used + demand.mem_mib <= self.mem_mib
        )


def allot(pending: Sequence[Planned], machine: Machine, jobs: int, threads: int) -> Allotment:
    """The allotment for these tasks: ``jobs`` at once (0: as many as their declarations allow), each
    with ``threads`` torch threads (0: its share, see the module docstring)."""
    steps: dict[str, Resources] = {p.step.name: p.step.resources for p in pending}
    counts = Counter(p.step.name for p in pending)
    if jobs:
        share = max(1, machine.cores // jobs)
        demands = {
            name: Demand(threads or max(1, min(r.cpus, share)), 0, 0, r.gpus > 0 and bool(machine.gpus))
            for name, r in steps.items()
        }
        workers = min(jobs, len(pending))
        return Allotment(workers, machine.gpus[:workers], None, None, demands)
    demands = {}
    for name, r in steps.items():
        cpus = max(1, min(threads or r.cpus, machine.cores))
        demands[name] = Demand(
            threads or cpus, cpus, max(1, min(mebibytes(r.mem), machine.mem_mib)), r.gpus > 0 and bool(machine.gpus)
        )
    at_once = [
        min(
            counts[name],
            machine.cores // d.cpus,
            machine.mem_mib // d.mem_mib,
            len(machine.gpus) if d.gpu else counts[name],
        )
        for name, d in demands.items()
    ]
    workers = max([1, *at_once])
    return Allotment(workers, machine.gpus[:workers], machine.cores, machine.mem_mib, demands)
