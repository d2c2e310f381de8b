"""Live progress of a running training: ``progress.json`` in the task's work directory (on the shared
file system, so a login node sees a Slurm job's), rewritten after every epoch, and the line
``pipeline status`` prints from it: epoch / total, the epoch's losses, held-out figures, an ETA."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.store import Store

if TYPE_CHECKING:
    from pipeline.dag import Planned

PROGRESS = "progress.json"
#: history columns shown apart from the loss terms (``pipeline.training.NOT_LOSSES``, without torch)
_NOT_LOSSES = ("epoch", "lr", "steps", "clipped")
_HELD_OUT = "heldout"  # row keys with this prefix are held-out figures (e.g. from an ``after_epoch`` hook)
_STALE_EPOCHS = 3  # no update for this many epochs' time (and a minute): the task has probably stopped


class ProgressFile:
    """The ``after_epoch`` hook of ``pipeline.training.train`` that writes ``<work>/progress.json``
    (atomically: a reader never sees half a file). Speed and ETA count only the epochs this process
    trained, so a run resumed from a checkpoint is not credited with the earlier ones."""

    def __init__(self, work: Path, epochs: int):
        self.path, self.epochs = Path(work) / PROGRESS, epochs
        self.started = time.time()
        self.first: int | None = None  # the first epoch this process trains

    def __call__(self, row: Mapping[str, Any]) -> None:
        now = time.time()
        self.first = row["epoch"] if self.first is None else self.first
        done = row["epoch"] + 1
        per_epoch = (now - self.started) / (done - self.first)
        record = {
            "epoch": done,
            "epochs": self.epochs,
            "row": dict(row),
            "seconds_per_epoch": per_epoch,
            "eta_s": per_epoch * (self.epochs - done),
            "updated": now,
            "host": os.uname().nodename,
        }
        tmp = self.path.with_name(f".{PROGRESS}.{os.getpid()}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)


def read(path: Path) -> dict[str, Any] | None:
    """A progress record, or None when there is none (or it cannot be read: it is only a hint)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"epoch", "epochs", "row", "updated"} <= set(record) else None


def work_path(store: Store, step: str, key: str) -> Path:
    """The task's work directory, as ``Store.workdir`` names it (without creating it)."""
    return store.path(step, key).with_name(f".work-{key}")


def status_lines(store: Store, pending: Sequence[Planned], now: float | None = None) -> Iterator[str]:
    """One line per unfinished task that has written progress: ``pipeline status`` shows them."""
    now = time.time() if now is None else now
    for planned in pending:
        record = read(work_path(store, planned.task.step, planned.key) / PROGRESS)
        if record is not None:
            yield f"  {planned.task.id}: {describe(record, now)}"


def describe(record: Mapping[str, Any], now: float) -> str:
    """``epoch 12/30  total 0.0123 rec 0.0101 kl 0.0022  heldout_psnr 21.3  ETA 3m20s (updated 4s ago
    on node7)``; a record older than a few epochs' time says that instead of an ETA."""
    row, per_epoch = record["row"], record.get("seconds_per_epoch") or 0.0
    terms = [f"{k} {v:.4g}" for k, v in row.items() if k not in _NOT_LOSSES and isinstance(v, (int, float))]
    losses = [t for t in terms if not t.startswith(_HELD_OUT)]
    held = [t for t in terms if t.startswith(_HELD_OUT)]
    age = max(0.0, now - record["updated"])
    where = f" on {record['host']}" if record.get("host") else ""
    if age > _STALE_EPOCHS * per_epoch + 60:
        when = f"no update for {duration(age)}{where}: stopped?"
    else:
        when = f"ETA {duration(max(0.0, record.get('eta_s', 0.0) - age))} (updated {duration(age)} ago{where})"
    parts = [f"epoch {record['epoch']}/{record['epochs']}", "  ".join(losses), "  ".join(held), when]
    return "  ".join(p for p in parts if p)


def duration(seconds: float) -> str:
    """``45s``, ``3m20s``, ``2h05m``, ``3d04h``."""
    s = math.ceil(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit}{(s % size) // sub_size:02d}{sub}"
    return f"{s}s"
