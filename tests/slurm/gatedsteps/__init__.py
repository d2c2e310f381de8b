"""Steps for the Slurm tier whose tasks finish when a test says so: ``first[a]`` and ``first[b]``
each wait until the file ``$GATED_STEPS_GATES/<task id>`` exists; ``second[<id>]`` (small, so
packed) reads ``first[<id>]``; ``last[all]`` reads every ``second`` task. Jobs import them by this
package's name (``PYTHONPATH`` must hold the checkout)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.errors import PipelineError

GATES = "GATED_STEPS_GATES"
WAIT_S = 600


def wait_for_gate(name: str) -> None:
    """Block until the test opens gate ``name``; a gate nobody opens fails the task, it never hangs."""
    gate = Path(os.environ[GATES]) / name
    deadline = time.monotonic() + WAIT_S
    while not gate.exists():
        if time.monotonic() > deadline:
            raise PipelineError(f"gate {gate} was never opened")
        time.sleep(0.2)
