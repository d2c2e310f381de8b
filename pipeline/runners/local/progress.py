"""What a parallel run shows: one line per finished task, and on a terminal a live line with the
tasks done out of all and those running now."""

from __future__ import annotations

from collections.abc import Callable

from tqdm import tqdm

from pipeline.dag import Planned

_RUNNING_WIDTH = 70  # characters of running task labels on the live line


class Progress:
    """``started`` / ``finished`` / ``failed`` per task; ``close`` at the end."""

    def __init__(self, total: int, echo: Callable[[str], None], live: bool):
        self._echo = echo
        self._running: dict[str, str] = {}
        self._bar = tqdm(total=total, unit="task", disable=not live, dynamic_ncols=True)

    def started(self, planned: Planned) -> None:
        self._running[planned.key] = planned.label
        self._refresh()

    def finished(self, planned: Planned, seconds: float, built: bool) -> None:
        """A task ended well; ``built``: it built its artifact (not another runner meanwhile)."""
        if built:
            self._say(f"{planned.label} -> {planned.step.name}/{planned.key} ({seconds:.1f} s)")
        self._done(planned)

    def failed(self, planned: Planned, log: str) -> None:
        self._say(f"{planned.label} FAILED (log: {log})")
        self._done(planned)

    def close(self) -> None:
        self._bar.close()

    def _done(self, planned: Planned) -> None:
        self._running.pop(planned.key, None)
        self._bar.update()
        self._refresh()

    def _say(self, line: str) -> None:
        with tqdm.external_write_mode():
            self._echo(line)

    def _refresh(self) -> None:
        labels = ", ".join(self._running.values())
        if len(labels) > _RUNNING_WIDTH:
            labels = labels[: _RUNNING_WIDTH - 1] + "…"
        self._bar.set_description_str(f"{len(self._running)} running", refresh=False)
        self._bar.set_postfix_str(labels)
