"""``pipeline accounting``: what a config's run cost, per step: tasks, wall time, CPU- and GPU-hours,
peak memory against the declared ``mem``, requeues, and the ``time:``/``mem:`` a profile should ask.

Slurm runs are read from Slurm's accounting (one batched ``sacct`` call over the jobs that the
submission records under ``<artifacts>/.submissions/`` name for the plan's tasks); each job (array
element) is one unit, whatever number of tasks it packs, and every run of it counts, requeued ones
too. Local runs are read from the manifests (``seconds``, and ``usage``: CPU seconds and peak RSS).
CPU-hours are what Slurm allocated (cpus x elapsed) for Slurm runs, and what the task used (user +
system time) for local ones.
"""

from __future__ import annotations

import csv
import math
import re
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from pipeline.dag import Plan
from pipeline.errors import PipelineError
from pipeline.store import Store

SOURCES = ("slurm", "local")
_MEM_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}


@dataclass
class Unit:
    """One job (array element) on Slurm, or one task run locally."""

    step: str
    source: str
    tasks: int
    elapsed_s: float  # every run together
    cpu_s: float | None  # allocated cpu-seconds (Slurm) or used (local)
    gpu_s: float
    peak_rss_mib: float | None
    mem_mib: float | None  # declared
    requeues: int


@dataclass
class StepCost:
    """One row of the table and of ``accounting.csv``."""

    step: str
    source: str
    tasks: int
    jobs: int
    wall_s_sum: float
    wall_s_max: float
    cpu_hours: float | None
    gpu_hours: float
    peak_rss_mib: float | None
    mem_mib: float | None
    requeues: int
    suggest_time: str
    suggest_mem: str


def step_costs(plan: Plan, store: Store, margin: float) -> list[StepCost]:
    """Per step and source, what the plan's finished (and running) work cost."""
    units = slurm_units(plan, store) + local_units(plan, store)
    grouped: dict[tuple[str, str], list[Unit]] = defaultdict(list)
    for unit in units:
        grouped[unit.step, unit.source].append(unit)
    order = {step: i for i, step in enumerate(plan.steps)}
    return [
        _step_cost(step, source, grouped[step, source], margin)
        for step, source in sorted(grouped, key=lambda k: (order.get(k[0], len(order)), SOURCES.index(k[1])))
    ]


def _step_cost(step: str, source: str, units: list[Unit], margin: float) -> StepCost:
    walls = [u.elapsed_s for u in units]
    cpu = [u.cpu_s for u in units]
    known_cpu = [s for s in cpu if s is not None]
    peaks = [u.peak_rss_mib for u in units if u.peak_rss_mib is not None]
    mems = [u.mem_mib for u in units if u.mem_mib is not None]
    peak = max(peaks) if peaks else None
    return StepCost(
        step,
        source,
        sum(u.tasks for u in units),
        len(units),
        sum(walls),
        max(walls),
        None if len(known_cpu) < len(cpu) else sum(known_cpu) / 3600,
        sum(u.gpu_s for u in units) / 3600,
        peak,
        max(mems) if mems else None,
        sum(u.requeues for u in units),
        suggest_time(max(walls) * margin),
        suggest_mem(peak * margin) if peak is not None else "",
    )


def suggest_time(seconds: float) -> str:
    """A Slurm time limit at or above ``seconds``, whole minutes, at least one: ``"01:05:00"``."""
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def suggest_mem(mib: float) -> str:
    """A Slurm memory size at or above ``mib``: 256M steps up to 768M, whole G above."""
    return f"{math.ceil(mib / 1024)}G" if mib > 768 else f"{max(256, math.ceil(mib / 256) * 256)}M"


def mebibytes(text: str) -> float | None:
    """A Slurm memory size (``16G``, ``512M``, ``123456K``; no unit: megabytes; ``4000Mn``, the older
    per-node form) in MiB; None when there is none (sacct leaves MaxRSS empty without samples)."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)[nc]?", text.strip())
    return float(found[1]) * _MEM_UNITS[found[2] or "M"] if found else None


# ---------------------------------------------------------------- local runs


def local_units(plan: Plan, store: Store) -> list[Unit]:
    """Every complete task of the plan that did not run inside a Slurm job, from its manifest."""
    units = []
    for planned in plan.tasks:
        if not planned.complete:
            continue
        manifest = store.open(planned.task.step, planned.key).manifest
        if manifest.get("slurm") or manifest.get("placeholder"):
            continue
        usage = manifest.get("usage") or {}
        seconds = float(manifest.get("seconds", 0.0))
        gpus = planned.step.resources.gpus if str((manifest.get("runtime") or {}).get("device")) == "cuda" else 0
        units.append(
            Unit(
                planned.task.step,
                "local",
                1,
                seconds,
                usage.get("cpu_s"),
                gpus * seconds,
                usage.get("peak_rss_mib"),
                mebibytes(planned.step.resources.mem),
                0,
            )
        )
    return units


# ---------------------------------------------------------------- Slurm runs


def slurm_units(plan: Plan, store: Store) -> list[Unit]:
    """Every recorded job (array element) that ran tasks of the plan, from one ``sacct`` call."""
    from pipeline.runners.slurm import records

    keys = {(p.task.step, p.key) for p in plan.tasks}
    elements: dict[str, tuple[str, int]] = {}  # Slurm id -> (step, tasks of the plan it ran)
    for record in records(store.root):
        for job in record["jobs"]:
            for task in job["tasks"]:
                if (job["step"], task["key"]) in keys:
                    step, count = elements.get(task["job_id"], (job["step"], 0))
                    elements[task["job_id"]] = (step, count + 1)
    if not elements:
        return []
    runs = sacct(sorted({element.split("_")[0] for element in elements}))
    units = []
    for element, (step, tasks) in elements.items():
        lines = runs.get(element)
        if lines is not None:
            units.append(_slurm_unit(step, tasks, lines))
    return units


_SACCT_FIELDS = ("JobID", "Start", "ElapsedRaw", "AllocTRES", "ReqMem", "MaxRSS")
_NEVER_STARTED = ("Unknown", "None", "")


def sacct(job_ids: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    """sacct's lines for these jobs, every run that started (``-D``: requeued runs too) and its steps,
    by the Slurm id of the job or array element they belong to (``12``, ``12_3``)."""
    command = ["sacct", "-n", "-P", "-D", "-o", ",".join(_SACCT_FIELDS), "-j", ",".join(job_ids)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PipelineError(f"sacct failed: {err}") from None
    if done.returncode != 0:
        raise PipelineError(
            f"sacct failed: {' '.join(done.stderr.split()) or done.returncode} (Slurm's "
            f"accounting, slurmdbd, is needed for the cost of Slurm runs)"
        )
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for line in done.stdout.splitlines():
        row = dict(zip(_SACCT_FIELDS, line.split("|")))
        if len(row) == len(_SACCT_FIELDS) and row["Start"] not in _NEVER_STARTED:
            out[row["JobID"].split(".")[0]].append(row)
    return out


def _slurm_unit(step: str, tasks: int, lines: Iterable[Mapping[str, str]]) -> Unit:
    """One element's cost: its allocation lines (one per run) and its steps' peak memory."""
    allocations = [line for line in lines if "." not in line["JobID"]]
    steps = [line for line in lines if "." in line["JobID"]]
    elapsed = sum(float(line["ElapsedRaw"] or 0) for line in allocations)
    tres = [_tres(line["AllocTRES"]) for line in allocations]
    cpu = sum(t.get("cpu", 0) * float(line["ElapsedRaw"] or 0) for t, line in zip(tres, allocations))
    gpu = sum(t.get("gres/gpu", 0) * float(line["ElapsedRaw"] or 0) for t, line in zip(tres, allocations))
    peaks = [m for m in (mebibytes(line["MaxRSS"]) for line in steps) if m is not None]
    mems = [m for m in (mebibytes(line["ReqMem"]) for line in allocations) if m is not None]
    return Unit(
        step,
        "slurm",
        tasks,
        elapsed,
        cpu,
        gpu,
        max(peaks) if peaks else None,
        max(mems) if mems else None,
        max(0, len(allocations) - 1),
    )


def _tres(text: str) -> dict[str, float]:
    """``billing=1,cpu=4,gres/gpu:v100=1,gres/gpu=1,mem=16G,node=1`` as counts (typed GRES folded)."""
    out: dict[str, float] = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        name = name.split(":")[0]
        if re.fullmatch(r"\d+(\.\d+)?", value):
            out[name] = max(out.get(name, 0.0), float(value))
    return out


# ---------------------------------------------------------------- output

_HEADERS = (
    "step",
    "source",
    "tasks",
    "jobs",
    "wall sum",
    "wall max",
    "CPU-h",
    "GPU-h",
    "peak RSS",
    "mem",
    "requeues",
    "suggest time",
    "suggest mem",
)


def write_csv(rows: Sequence[StepCost], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f.name for f in fields(StepCost)])
        writer.writerows([_csv_value(v) for v in astuple(row)] for row in rows)
    tmp.replace(path)


def _csv_value(value: Any) -> Any:
    return "" if value is None else round(value, 6) if isinstance(value, float) else value


def table(rows: Sequence[StepCost]) -> list[str]:
    """Aligned columns for the terminal."""
    cells = [_HEADERS] + [
        (
            r.step,
            r.source,
            str(r.tasks),
            str(r.jobs),
            _duration(r.wall_s_sum),
            _duration(r.wall_s_max),
            _hours(r.cpu_hours),
            _hours(r.gpu_hours),
            _mib(r.peak_rss_mib),
            _mib(r.mem_mib),
            str(r.requeues),
            r.suggest_time,
            r.suggest_mem,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_HEADERS))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]


def profile_lines(rows: Sequence[StepCost], margin: float) -> list[str]:
    """The ``steps:`` entries a profile could take from the measured maxima (Slurm rows first)."""
    chosen: dict[str, StepCost] = {}
    for row in rows:  # per step, Slurm's row comes first
        chosen.setdefault(row.step, row)
    lines = [f"# measured maxima x {margin:g} (one job = one array element, all its packed tasks)", "steps:"]
    for step, row in chosen.items():
        mem = f", mem: {row.suggest_mem}" if row.suggest_mem else ""
        lines.append(f'  {step}: {{time: "{row.suggest_time}"{mem}}}  # from {row.source}')
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 3600:.2f} h"


def _hours(hours: float | None) -> str:
    return "-" if hours is None else f"{hours:.4f}" if hours < 1 else f"{hours:.1f}"


def _mib(mib: float | None) -> str:
    return "-" if mib is None else f"{mib:.0f}M" if mib < 1024 else f"{mib / 1024:.1f}G"
