"""The convergence study's schedule: at which steps a long training run is measured, and when its
objective has stopped falling (what is measured: ``pipeline.sanity.HeldOut``). Torch-free: planning
reads it."""

from __future__ import annotations

from collections.abc import Mapping


def eval_steps(first: int, last: int) -> list[int]:
    """``first``, ``2·first``, ``4·first``, ... below ``last``, then ``last``."""
    steps = []
    step = first
    while step < last:
        steps.append(step)
        step *= 2
    return [*steps, last]


def plateaued(values: Mapping[int, float], rel: float) -> bool:
    """Whether the objective measured at the last step s fell by less than ``rel`` (a fraction of
    its value) since the measurement at s/2 or the nearest one before it; False without two."""
    steps = sorted(values)
    if len(steps) < 2:
        return False
    last = steps[-1]
    before = max((s for s in steps[:-1] if s <= last // 2), default=steps[-2])
    return values[before] - values[last] < rel * abs(values[before])
