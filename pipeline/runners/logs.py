"""Where a task's own log lives, for the local and the Slurm runner alike."""

from pathlib import Path


def task_log(root: Path, step: str, key: str) -> Path:
    """A task's own log: its output in a parallel run, its failure in a Slurm job."""
    return root / ".logs" / step / f"{key}.log"
