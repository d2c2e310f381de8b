"""A worker process of the parallel local runner: runs the tasks it is sent, one at a time, each with
its stdout and stderr in a log file. It is forked from a process that imported torch and the steps
(``_preload``), so nothing heavy is imported per worker or per task."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pipeline.config import Config, config_from_dict
from pipeline.dag import Planned
from pipeline.errors import PipelineError
from pipeline.execute import execute
from pipeline.kernels import pin
from pipeline.store import Store

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Job:
    """One task for a worker: run it with ``threads`` torch threads, its output going to ``log``."""

    planned: Planned
    threads: int
    log: Path


@dataclass(frozen=True)
class Report:
    """How a job ended: ``ran``, ``skipped`` (another runner built it meanwhile) or ``failed``."""

    outcome: str
    seconds: float
    error: str = ""  # a PipelineError's message; for any other exception its type and message


def serve(conn: Connection, visible: str | None, config: dict[str, Any], root: str) -> None:
    """The worker's main: pin the CPU kernels (the fork server imported torch but computed nothing, so the
    pin wins over the environment the worker inherited) and set the GPUs it sees (``CUDA_VISIBLE_DEVICES``;
    None: unset) before CUDA starts, then run jobs until the runner sends None or goes away. Ctrl-C is left
    to the runner (which stops the workers); SIGTERM ends the worker at once."""
    pin(config["runtime"]["cpu_kernels"])
    if visible is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    from tqdm import tqdm

    # progress bars go to this worker's logs alone: a thread lock, not tqdm's default semaphore, which
    # the resource tracker would report as leaked when the runner stops a worker
    tqdm.set_lock(threading.RLock())

    base, store = config_from_dict(config), Store(Path(root))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(run(job, base, store))


def run(job: Job, base: Config, store: Store) -> Report:
    """Run one job with its thread count in the config the task sees; output to the job's log, which
    is kept when the task failed or wrote something."""
    import torch

    config = replace(base, runtime=replace(base.runtime, threads=job.threads))
    torch.set_num_threads(job.threads)  # also for steps that never call select_device
    started = time.perf_counter()
    with _output_to(job.log):
        try:
            report = Report(execute(job.planned, store, config), time.perf_counter() - started)
        except PipelineError as err:
            print(f"error: {err}", file=sys.stderr)
            report = Report("failed", time.perf_counter() - started, str(err))
        except Exception as err:
            traceback.print_exc()
            report = Report("failed", time.perf_counter() - started, f"{type(err).__name__}: {err}")
    if report.outcome != "failed" and job.log.stat().st_size == 0:
        job.log.unlink()
    return report


@contextlib.contextmanager
def _output_to(path: Path):
    """Point file descriptors 1 and 2 (so C libraries' output too) at ``path`` for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "wb") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
    finally:
        for fd, old in zip((1, 2), saved):
            os.dup2(old, fd)
            os.close(old)


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this worker when its parent (the fork server, which ends with the runner)
    dies, even by SIGKILL (Linux; elsewhere the runner's process group takes the workers along)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
