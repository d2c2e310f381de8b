"""Pinned CPU kernels: torch computes the same bytes on every x86-64 CPU at or above one instruction-set level.

torch picks its CPU kernels for the CPU it runs on, in three libraries, and each choice changes the bytes
of every training and attack (measured on torch 2.14.1: any one of the variables below, set alone,
changes them). Each library reads its variable once, at its first use in a process, never at import
(importing torch, torchvision, torchattacks and every step module reads none of them):

- ATen's vectorised kernels: ``ATEN_CPU_CAPABILITY``. torch does not check the value against the CPU
  (a level the CPU lacks dies of SIGILL), so ``ensure`` does.
- oneDNN (convolutions): ``ONEDNN_MAX_CPU_ISA``, the widest instruction set of its JIT kernels.
- MKL (matrix products): ``MKL_CBWR``, its code branch. Every level uses ``COMPATIBLE``: MKL honours no
  other branch on non-Intel CPUs (it falls back to its own per-CPU choice there, without a warning).

``pin`` sets the variables over any value the environment had; ``execute`` calls ``ensure`` before a
task computes (in-process, in a ``-j`` worker, in a Slurm job), which also checks that torch computes
with what was pinned. The setting is ``runtime.cpu_kernels``: a runtime setting, not part of any key.
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.hardware import cpu_model


@dataclass(frozen=True)
class Level:
    """One pinned level: what torch then reports, oneDNN's cap, the CPU features it needs."""

    capability: str  # torch.backends.cpu.get_cpu_capability() under this pin
    onednn: str
    needs: tuple[str, ...]  # keys of torch.cpu.get_capabilities(); torch's own test for the level


LEVELS = {
    "default": Level("DEFAULT", "SSE41", ()),
    "avx2": Level("AVX2", "AVX2", ("avx2", "fma3")),
    "avx512": Level("AVX512", "AVX512_CORE", ("avx512_vl", "avx512_bw", "avx512_dq", "fma3")),
}
VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")
MKL_BRANCH = "COMPATIBLE"
SETTINGS = ("auto", "unpinned", *LEVELS)  # auto: avx2 on x86-64, unpinned elsewhere
_MKL_BRANCHES = {
    1: "off",
    2: "AUTO",
    3: "COMPATIBLE",
    4: "SSE2",
    7: "SSE4_1",
    8: "SSE4_2",
    9: "AVX",
    10: "AVX2",
    12: "AVX512",
    14: "AVX512_E1",
}  # MKL_CBWR_* codes (mkl_cbwr.h); "off": MKL picks per CPU


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def level_of(setting: str) -> str | None:
    """The level ``setting`` pins, or None (``unpinned``; ``auto`` off x86-64)."""
    if setting == "auto":
        return "avx2" if is_x86() else None
    return None if setting == "unpinned" else setting


def variables(level: str) -> dict[str, str]:
    """The environment variables (``VARIABLES``) of ``level``."""
    return dict(zip(VARIABLES, (level, LEVELS[level].onednn, MKL_BRANCH)))


def pin(setting: str) -> str | None:
    """Set the variables of ``setting``'s level in this process's environment (so also its children's),
    over any outer value; returns the level. It takes effect where torch has not computed yet."""
    level = level_of(setting)
    if level is not None:
        os.environ.update(variables(level))
    return level


def ensure(setting: str) -> dict[str, Any]:
    """Check that this CPU has ``setting``'s level, pin it, and check that torch computes with it; returns
    the CPU and its kernels as a manifest records them (``describe``)."""
    level = level_of(setting)
    if level is not None:
        _check_cpu(setting, level)
    pin(setting)
    described = describe(level)
    if level is not None and (
        described["capability"] != LEVELS[level].capability or described["mkl_branch"] not in (MKL_BRANCH, None)
    ):
        raise PipelineError(
            f"runtime.cpu_kernels={setting}: torch in this process already computes with "
            f"{described['capability']} kernels and MKL branch {described['mkl_branch']} (it computed "
            f"before the pin): run the task in a new process"
        )
    return described


def describe(level: str | None) -> dict[str, Any]:
    """The CPU and the kernels torch computes with on it (asking fixes them for this process)."""
    import torch

    return {
        "model": cpu_model(),
        "arch": platform.machine(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "pinned": level,
        "mkl_branch": mkl_branch(),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }


def mkl_branch() -> str | None:
    """The code branch MKL computes with (``off``: its own per-CPU choice); None where torch has no MKL."""
    import torch

    try:
        library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        code = library.mkl_serv_cbwr_get(1)  # MKL_CBWR_BRANCH: mkl_cbwr_get, as libtorch_cpu exports it
    except (OSError, AttributeError):
        return None
    return _MKL_BRANCHES.get(code, str(code))


def _check_cpu(setting: str, level: str) -> None:
    """One clear error, before any kernel runs, where this CPU cannot run ``level``."""
    import torch

    where = f"config key 'runtime.cpu_kernels': {setting} pins {level} kernels"
    if not is_x86():
        raise PipelineError(
            f"{where}, which need an x86-64 CPU; this one is {platform.machine()}: set runtime.cpu_kernels=unpinned"
        )
    features = torch.cpu.get_capabilities()
    missing = [name for name in LEVELS[level].needs if not features.get(name)]
    if missing:
        raise PipelineError(
            f"{where}, but this CPU ({cpu_model()}) lacks {', '.join(missing)}: set "
            f"runtime.cpu_kernels=default (the bytes of every x86-64 CPU) or unpinned (its own)"
        )
