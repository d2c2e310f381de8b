"""What one task used, measured in its own process: CPU seconds (every thread) and peak resident
memory. ``execute`` records it in the manifest, so ``pipeline accounting`` can report local runs."""

from __future__ import annotations

import re
import resource
from pathlib import Path

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


class Meter:
    """Started when a task starts; ``read()`` when it ends. The peak is the task's own: Linux resets
    the process's high-water mark (``VmHWM``) at the start, so a worker that ran other tasks before
    does not count their peaks. Where that is impossible (no /proc), the process's lifetime peak
    is reported and ``peak_rss_scope`` says so."""

    def __init__(self) -> None:
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident size
            self.scope = "task"
        except OSError:
            self.scope = "process"
        self.cpu_s = _cpu_seconds()

    def read(self) -> dict[str, float | str]:
        return {
            "cpu_s": round(_cpu_seconds() - self.cpu_s, 3),
            "peak_rss_mib": round(_peak_rss_mib(), 1),
            "peak_rss_scope": self.scope,
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    try:
        found = re.search(r"^VmHWM:\s*(\d+) kB", _STATUS.read_text(), re.M)
    except OSError:
        found = None
    if found:
        return int(found[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
