"""The worker processes of a parallel local run: started once, fed one job at a time, stopped together.

Workers are forked from a fork server (``multiprocessing``'s forkserver context): a fresh interpreter
that imports torch, the steps and what they import once (``_preload``) and does nothing else, so no
worker is the fork of a process whose torch may have started threads. Each worker gets its GPU when
the machine has GPUs (the first workers) or none (the others).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Sequence
from multiprocessing import forkserver
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from pipeline.runners.local.worker import Job, Report, serve

_STOP_TIMEOUT_S = 10.0


class Worker:
    """One worker process, the GPUs it sees (``visible``: its CUDA_VISIBLE_DEVICES, None: unset), and
    the job it is running, if any."""

    def __init__(self, context: Any, visible: str | None, has_gpu: bool, config: dict[str, Any], root: Path):
        self.visible, self.has_gpu = visible, has_gpu
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=serve, args=(child, visible, config, str(root)), name="pipeline-worker", daemon=True
        )
        self.process.start()
        child.close()
        self.job: Job | None = None


class Pool:
    """``count`` workers; the first ``len(gpus)`` see one GPU each, the others none (on a machine with
    GPUs) or what the runner sees (without)."""

    def __init__(self, count: int, gpus: Sequence[str], config: dict[str, Any], root: Path):
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["pipeline.runners.local._preload"])
        # Ctrl-C is the runner's to handle: the fork server (so its workers) inherits SIGINT ignored
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)
        self._config, self._root = config, root
        others = "" if gpus else os.environ.get("CUDA_VISIBLE_DEVICES")
        self.workers = [
            self._start(gpus[i], True) if i < len(gpus) else self._start(others, False) for i in range(count)
        ]

    def _start(self, visible: str | None, has_gpu: bool) -> Worker:
        return Worker(self._context, visible, has_gpu, self._config, self._root)

    def idle(self, gpu: bool) -> Worker | None:
        """An idle worker with a GPU (``gpu``), else preferably one without."""
        idle = [w for w in self.workers if w.job is None and (w.has_gpu or not gpu)]
        return min(idle, key=lambda w: w.has_gpu, default=None)

    def any_idle(self) -> bool:
        return any(w.job is None for w in self.workers)

    def send(self, worker: Worker, job: Job) -> None:
        worker.job = job
        worker.conn.send(job)

    def wait(self) -> list[tuple[Job, Report]]:
        """Block until busy workers report; returns their jobs and reports, the workers idle again. A
        worker that died is replaced, and its job reported as failed."""
        busy = [w for w in self.workers if w.job is not None]
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
        out: list[tuple[Job, Report]] = []
        for worker in busy:
            if worker.conn not in ready and worker.process.sentinel not in ready:
                continue
            job, worker.job = worker.job, None
            assert job is not None  # busy
            try:
                report = worker.conn.recv() if worker.conn.poll() else None
            except (EOFError, OSError):
                report = None
            if report is None:
                worker.process.join()
                worker.conn.close()
                self.workers[self.workers.index(worker)] = self._start(worker.visible, worker.has_gpu)
                report = Report("failed", 0.0, f"its worker process died ({_ended(worker.process.exitcode)})")
            out.append((job, report))
        return out

    def stop(self) -> None:
        """Stop every worker now (SIGTERM, then SIGKILL for any that lingers) and wait for them: idle
        ones hold nothing, busy ones leave their staging directories for the runner to remove."""
        for worker in self.workers:
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in self.workers:
            worker.process.join(_STOP_TIMEOUT_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()


def _ended(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
