"""``pipeline bench``: print the benchmarks of ``pipeline.tools.bench`` as one table (and maybe JSON)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli_common import Session, fail_cleanly

if TYPE_CHECKING:
    from pipeline.tools.bench.core import Result

_COLUMNS = ("benchmark", "ours", "reference", "ratio", "target", "result", "note")


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    digits = 0 if abs(value) >= 100 else 2 if abs(value) < 10 else 1
    return f"{value:.{digits}f} {unit}"


def _cells(row: Result) -> tuple[str, ...]:
    verdict = {True: "pass", False: "FAIL", None: "n/a"}[row.passed]
    ratio = "-" if row.ratio is None else f"{row.ratio:.3f}"
    return (
        row.benchmark,
        _value(row.ours, row.unit),
        _value(row.reference, row.unit),
        ratio,
        row.target,
        verdict,
        row.note,
    )


def _table(rows: list[Result]) -> list[str]:
    """Aligned columns; the note column is left ragged."""
    cells = [_COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(line, widths)), line[-1]]).rstrip() for line in cells]


def _machine_line(info: dict[str, Any]) -> str:
    return (
        f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), torch {info['torch']} "
        f"({info['torch_threads']} threads), device {info['device']}, load {info['load_average']}"
    )


def _markdown(info: dict[str, Any], rows: list[Result], command: str) -> str:
    """The table as Markdown, with the machine and the command that made it (for README.md)."""
    lines = [
        f"`{command}` on {_machine_line(info).removeprefix('machine: ')}:",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|---" * len(_COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in _cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@click.command()
@click.option(
    "--config",
    "config_name",
    default="smoke",
    show_default=True,
    help="Config whose artifacts are measured (built first where missing).",
)
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    help="Run only this benchmark: a group (train, attack, shard-write, hdf5-read, latency, memory, "
    "parallel, kernels) or one row (attack/fgsm); repeatable.",
)
@click.option(
    "--repeat",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Repetitions of each measurement (medians are reported).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the results as JSON to this file.",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the table as Markdown (e.g. results/bench.md, shown by `pipeline readme`).",
)
@click.pass_context
@fail_cleanly
def bench(
    ctx: click.Context,
    config_name: str,
    only: tuple[str, ...],
    repeat: int,
    json_path: Path | None,
    markdown_path: Path | None,
) -> None:
    """Measure the pipeline against bare references; one table: ratio, target, pass/fail.

    Uses a temporary artifact root unless `pipeline --artifacts DIR bench` names one (tasks it
    measures are rebuilt there, as with --force).
    """
    from pipeline.tools.bench.run import run_benchmarks

    session: Session = ctx.obj
    started = time.perf_counter()
    info, rows = run_benchmarks(
        config_name,
        session.store.root if session.artifacts else None,
        only,
        repeat,
        log=lambda line: click.echo(line, err=True),
    )
    seconds = time.perf_counter() - started
    click.echo(_machine_line(info))
    for line in _table(rows):
        click.echo(line)
    click.echo(f"bench took {seconds:.0f} s")
    if json_path:
        json_path.write_text(
            json.dumps({"machine": info, "seconds": seconds, "results": [asdict(r) for r in rows]}, indent=1)
        )
    if markdown_path:
        command = " ".join(["pipeline bench --config", config_name, *(f"--only {o}" for o in only)])
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(_markdown(info, rows, command))


def register(group: click.Group) -> None:
    """Add ``bench`` to the ``pipeline`` command group."""
    group.add_command(bench)
