"""``pipeline submit`` and ``pipeline cancel``: the plan as Slurm jobs through submitit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from pipeline.cli_common import Session, config_options, fail_cleanly

if TYPE_CHECKING:
    from pipeline.runners.slurm import Submission, Submitted


@click.command()
@click.argument("targets", nargs=-1)
@config_options
@click.option("--force", multiple=True, metavar="STEP", help="Rebuild this step and its dependants.")
@click.option(
    "--profile",
    "profile_path",
    required=True,
    metavar="PATH",
    help="Cluster profile, e.g. slurm/v100.yaml (keys: slurm/README.md).",
)
@click.option("--dry-run", is_flag=True, help="Print the jobs and write their sbatch scripts; run no Slurm command.")
@click.pass_obj
@fail_cleanly
def submit(
    session: Session,
    targets: tuple[str, ...],
    config_name: str,
    overrides: tuple[str, ...],
    force: tuple[str, ...],
    profile_path: str,
    dry_run: bool,
) -> None:
    """Submit TARGETS (``all`` or step names) as Slurm job arrays with afterok dependencies.

    Returns once sbatch has accepted the jobs; up-to-date artifacts and tasks that a healthy job of
    an earlier submission has in the queue are not submitted again. Queued jobs that can never run
    (an upstream task failed, was cancelled or is submitted again) are cancelled and replaced.
    """
    from pipeline.runners import slurm
    from pipeline.runners.slurm.profile import load_profile

    slurm.check_root(session.store.root)
    targets = targets or ("all",)
    config, plan = session.plan(config_name, overrides, targets, force)
    profile = load_profile(profile_path, plan.steps)
    warning = slurm.node_local_warning(session.store.root)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    if dry_run:
        submission = slurm.dry_run(plan, session.store, profile)
    else:
        submission = slurm.submit(
            plan, session.store, config, profile, targets, force, echo=lambda line: click.echo(line, err=True)
        )
    skipped = Counter(p.task.step for p in submission.plan.tasks if not p.needed)
    if skipped:
        click.echo("up to date, skipped: " + ", ".join(f"{step} ({n})" for step, n in skipped.items()))
    for line in _queue_lines(submission, config.name):
        click.echo(line)
    if not submission.jobs:
        click.echo("nothing to submit")
        return
    tasks = sum(len(s.job.tasks) for s in submission.jobs)
    verb = "would submit" if dry_run else f"submitted run {submission.run_id}:"
    click.echo(f"{verb} {len(submission.jobs)} job(s), {tasks} task(s)")
    for line in _table(submission, _DRY_COLUMNS if dry_run else _COLUMNS):
        click.echo(line)
    if dry_run:
        click.echo(f"sbatch scripts (job ids are placeholders JOB<n>): {submission.folder}")
    else:
        click.echo(f"logs: {submission.folder}   record: {submission.record}")


def _queue_lines(submission: Submission, config_name: str) -> Iterator[str]:
    """What the submission did with the jobs already queued, counting tasks and jobs each by name."""
    from pipeline.status import counted, foreign_lines

    if submission.cancelled:
        tasks = sum(len(refs) for refs in submission.cancelled.values())
        yield (
            f"cancelled {counted(len(submission.cancelled), 'queued job')} ({counted(tasks, 'task')}) that "
            f"could never run (an upstream task failed, was cancelled or is submitted again): "
            f"{' '.join(submission.cancelled)}"
        )
    if submission.superseded:
        yield from (
            f"cancelled: {line}"
            for line in foreign_lines(submission.superseded, config_name, "they would write where this plan writes")
        )
    yield from foreign_lines(
        submission.foreign,
        config_name,
        "left to run: they write nothing this plan writes; "
        f"`scancel {' '.join(j.job_id for j in submission.foreign)}` cancels them",
    )
    if submission.queued:
        jobs = len(set(submission.queued.values()))
        yield (
            f"already queued by an earlier submission: {counted(len(submission.queued), 'task')} in "
            f"{counted(jobs, 'job')}"
        )


def _resources(s: Submitted) -> str:
    v = s.settings.values
    return " ".join(
        str(part)
        for part in (
            v.get("partition") or "(default)",
            f"{v['cpus_per_task']}cpu",
            v["mem"],
            v["time"],
            v.get("gres") or "",
        )
        if part
    )


def _throttle(s: Submitted) -> str:
    limit = s.settings.get("array_throttle")
    return f"%{limit}" if len(s.job.elements) > 1 and limit else "-"


def _tasks(s: Submitted) -> str:
    """How many tasks; packed ones as ``103 in 7`` (array elements)."""
    count = str(len(s.job.tasks))
    return f"{count} in {len(s.job.elements)}" if s.job.packed else count


def _log(s: Submitted) -> str:
    return f"{s.job_id}_0_log.err" if len(s.job.elements) == 1 else f"{s.job_id}_<i>_0_log.err"


# Table columns: header, and the cell of one job.
_Column = tuple[str, Callable[["Submitted"], str]]
_COMMON: list[_Column] = [
    ("#", lambda s: str(s.job.number)),
    ("job", lambda s: s.job.label),
    ("tasks", _tasks),
    ("throttle", _throttle),
]
_AFTER: _Column = ("after", lambda s: s.job.describe_after())
_COLUMNS = [*_COMMON, ("job id", lambda s: s.job_id), ("log", _log), _AFTER]
_DRY_COLUMNS = [*_COMMON, ("resources", _resources), ("script", lambda s: s.script.name), _AFTER]


def _table(submission: Submission, columns: list[_Column]) -> Iterator[str]:
    rows = [[header for header, _ in columns]] + [[cell(s) for _, cell in columns] for s in submission.jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns) - 1)]
    for row in rows:
        yield "  ".join([cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]).rstrip()


@click.command()
@click.argument("run_id", required=False)
@click.pass_obj
@fail_cleanly
def cancel(session: Session, run_id: str | None) -> None:
    """Cancel every job of a submitted run, or by default of every submission with jobs in the queue."""
    from pipeline.runners import slurm
    from pipeline.status import counted

    runs, job_ids = slurm.cancel(session.store.root, run_id, echo=lambda line: click.echo(line, err=True))
    if not job_ids:
        click.echo("nothing to cancel: no recorded submission has a job in the queue")
        return
    click.echo(
        f"cancelled {'run' if len(runs) == 1 else 'runs'} {', '.join(runs)}: "
        f"{counted(len(job_ids), 'job')}: {' '.join(job_ids)}"
    )


def register(group: click.Group) -> None:
    """Add ``submit`` and ``cancel`` to the ``pipeline`` command group."""
    group.add_command(submit)
    group.add_command(cancel)
