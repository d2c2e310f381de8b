"""``pipeline accounting``: the cost of a config's run per step, as a table and ``accounting.csv``."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli_common import Session, config_options, fail_cleanly


@click.command()
@config_options
@click.option(
    "--margin",
    default=1.5,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Suggested time and mem = the measured maximum x this.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV to write (default: accounting.csv in the config's results directory).",
)
@click.pass_obj
@fail_cleanly
def accounting(session: Session, config_name: str, overrides: tuple[str, ...], margin: float, out: Path | None) -> None:
    """Per step: tasks, jobs, wall time, CPU- and GPU-hours, peak RSS against the declared mem, requeues,
    and the time/mem a Slurm profile should ask; from sacct for submitted runs, manifests for local ones."""
    from pipeline.accounting import profile_lines, step_costs, table, write_csv

    config, plan = session.plan(config_name, overrides, ["all"])
    rows = step_costs(plan, session.store, margin)
    if not rows:
        click.echo(f"nothing to account for: no task of config {config.name} has run under {session.store.root}")
        return
    path = out or Path(config.tables.out_dir.format(name=config.name)) / "accounting.csv"
    write_csv(rows, path)
    for line in [*table(rows), "", *profile_lines(rows, margin), "", f"wrote {path}"]:
        click.echo(line)


def register(group: click.Group) -> None:
    """Add ``accounting`` to the ``pipeline`` command group."""
    group.add_command(accounting)
