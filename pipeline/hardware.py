"""Which machine made an artifact, as its manifest records it (``describe_runtime``), and which artifacts
of a set were made on different machines (``tabulate``'s provenance, ``pipeline verify``). No torch."""

from __future__ import annotations

import platform
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any


@cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    cpuinfo = Path("/proc/cpuinfo")
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else None
    return found.group(1).strip() if found else platform.processor() or platform.machine() or "unknown"


def hardware_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The machine and kernels a task ran on, from its manifest; None for what an older one did not record."""
    runtime = manifest.get("runtime") or {}
    cpu, gpu = runtime.get("cpu") or {}, runtime.get("gpu") or {}
    return {
        "device": runtime.get("device"),
        "cpu": cpu.get("model"),
        "capability": cpu.get("capability"),
        "pinned": cpu.get("pinned"),
        "mkl_branch": cpu.get("mkl_branch"),
        "gpu": gpu.get("name"),
    }


def by_hardware(manifests: Mapping[str, Mapping[str, Any]]) -> list[tuple[dict[str, Any], list[str]]]:
    """Each distinct ``hardware_of`` among ``manifests`` (by name) with the names made on it, most first."""
    groups: dict[tuple, tuple[dict[str, Any], list[str]]] = {}
    for name, manifest in sorted(manifests.items()):
        hardware = hardware_of(manifest)
        groups.setdefault(tuple(map(str, hardware.values())), (hardware, []))[1].append(name)
    return sorted(groups.values(), key=lambda group: -len(group[1]))


def describe_hardware(hardware: Mapping[str, Any]) -> str:
    """One line for people: ``Intel Xeon, AVX2 kernels (pinned avx2), MKL COMPATIBLE, on cpu``."""
    if hardware["cpu"] is None:
        return f"not recorded (made before manifests named the hardware), on {hardware['device']}"
    pinned = f"pinned {hardware['pinned']}" if hardware["pinned"] else "unpinned"
    gpu = f" ({hardware['gpu']})" if hardware["gpu"] else ""
    return (
        f"{hardware['cpu']}, {hardware['capability']} kernels ({pinned}), MKL {hardware['mkl_branch']}, "
        f"on {hardware['device']}{gpu}"
    )


def hardware_provenance(manifests: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """For ``provenance.json``: each hardware the artifacts were made on, with how many, naming those not
    made on the most common one; ``mixed_hardware`` says whether there was more than one."""
    groups = by_hardware(manifests)
    hardware = [
        {**found, "artifacts": len(names), **({"names": names} if i else {})} for i, (found, names) in enumerate(groups)
    ]
    return {"hardware": hardware, "mixed_hardware": len(groups) > 1}
