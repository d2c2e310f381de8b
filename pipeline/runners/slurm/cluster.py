"""What the cluster offers and how its commands are called: the artifact root checked for job
scripts, partitions and GRES checked against ``sinfo``, and ``slurm_command`` for the rest."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.runners.slurm.profile import JobSettings

NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm")


def check_root(root: Path) -> None:
    """The artifact root goes into every job script (``#SBATCH --output``, the command line): refuse
    what would break a line or what Slurm expands in file names (``%j``, ``%x``, ...)."""
    text = str(root)
    bad = next((c for c in text if c == "%" or not c.isprintable()), None)
    if bad is not None:
        raise PipelineError(
            f"artifact root {text!r} contains {bad!r}, which Slurm job scripts cannot carry "
            f"(no control characters or '%'): choose another --artifacts"
        )


def node_local_warning(root: Path) -> str | None:
    """A warning when the artifact root looks node-local, so compute nodes may not see it."""
    resolved = Path(root).resolve()
    for local in NODE_LOCAL:
        if resolved.is_relative_to(local):
            return (
                f"artifact root {resolved} is under {local}, which is usually local to one machine: "
                f"compute nodes may not see it"
            )
    return None


_GRES_ITEM = re.compile(r"([A-Za-z0-9_]+)(?::([A-Za-z0-9_.-]+))?:(\d+)")


def _gres(text: str) -> list[tuple[str, str | None, int]]:
    """``gpu:v100:4(S:0-1),nvme:1`` as (name, type, count) triples."""
    plain = re.sub(r"\([^)]*\)", "", text)
    return [(m[1], m[2], int(m[3])) for m in map(_GRES_ITEM.fullmatch, plain.split(",")) if m]


def check_cluster(settings: Iterable[JobSettings]) -> None:
    """Every partition named exists and offers the GRES asked of it (one ``sinfo`` call)."""
    offered: dict[str, list[tuple[str, str | None, int]]] = {}
    default = ""
    for line in slurm_command(["sinfo", "-h", "-o", "%P|%G"]).splitlines():
        name, gres = line.split("|", 1)
        if name.endswith("*"):
            name = default = name[:-1]
        offered.setdefault(name, []).extend(_gres(gres))
    for job in settings:
        partitions = [p for p in (job.get("partition") or default).split(",") if p]
        for partition in partitions:
            if partition not in offered:
                raise PipelineError(
                    f"{job.origin['partition']}: partition {partition!r} does not exist "
                    f"(sinfo lists {', '.join(offered)})"
                )
        for name, kind, count in _gres(job.get("gres") or ""):
            if not any(
                have[0] == name and kind in (None, have[1]) and have[2] >= count
                for partition in partitions
                for have in offered[partition]
            ):
                have = sorted({":".join(map(str, filter(None, g))) for p in partitions for g in offered[p]})
                raise PipelineError(
                    f"{job.origin['gres']}: partition {','.join(partitions)} has no node with "
                    f"gres {job.get('gres')!r} (it offers: {', '.join(have) or 'none'})"
                )


def slurm_command(command: list[str]) -> str:
    """A Slurm command's output; its failure is the user's problem (cluster unreachable)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PipelineError(f"{command[0]} failed: {err}") from None
    if result.returncode != 0:
        raise PipelineError(f"{command[0]} failed: {' '.join(result.stderr.split()) or result.returncode}")
    return result.stdout
