"""The ``pipeline`` command line. Heavy modules (torch, submitit) are imported only where needed."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from pipeline.cli_accounting import register as register_accounting_command
from pipeline.cli_common import ARTIFACTS_HELP, Session, accept_group_options, config_options, fail_cleanly
from pipeline.cli_slurm import register as register_slurm_commands
from pipeline.errors import PipelineError
from pipeline.tools.cli_bench import register as register_bench_command

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.dag import Plan
    from pipeline.store import Store


@click.group()
@click.option("--artifacts", metavar="DIR", help=ARTIFACTS_HELP)
@click.version_option(package_name="advrecover")
@click.pass_context
def main(ctx: click.Context, artifacts: str | None) -> None:
    """advrecover: cross-domain self-supervised adversarial sample recovery, as a batch pipeline."""
    ctx.obj = Session(artifacts)


@main.command()
@click.argument("targets", nargs=-1)
@config_options
@click.option("--force", multiple=True, metavar="STEP", help="Rebuild this step and its dependants.")
@click.option(
    "-j",
    "--jobs",
    metavar="N",
    help="Tasks at once, in worker processes: each gets its share of the "
    "cores, and one GPU if its step uses one (default: runtime.jobs; 0: as many as the steps' declared "
    "cpus, memory and GPUs fit on this machine).",
)
@click.pass_obj
@fail_cleanly
def run(
    session: Session,
    targets: tuple[str, ...],
    config_name: str,
    overrides: tuple[str, ...],
    force: tuple[str, ...],
    jobs: str | None,
) -> None:
    """Run TARGETS (``all``, ``ablations`` or step names) on this machine, skipping finished work."""
    from pipeline.runners.local.runner import parse_jobs

    tasks_at_once = None if jobs is None else parse_jobs(jobs)
    config, plan = session.plan(config_name, overrides, targets, force)
    _run_reporting_failures(plan, session.store, config, tasks_at_once)


def _run_reporting_failures(plan: Plan, store: Store, config: Config, jobs: int | None = None) -> None:
    """``run_plan``; failed tasks end the command with one ``error:`` line each, naming its log."""
    from pipeline.runners.local.parallel import TasksFailed
    from pipeline.runners.local.runner import run_plan

    try:
        run_plan(plan, store, config, jobs=jobs)
    except TasksFailed as failed:
        for line in failed.lines():
            click.echo(f"error: {line}", err=True)
        sys.exit(1)


@main.command()
@click.argument("targets", nargs=-1)
@config_options
@click.option("--force", multiple=True, metavar="STEP")
@click.pass_obj
@fail_cleanly
def plan(
    session: Session, targets: tuple[str, ...], config_name: str, overrides: tuple[str, ...], force: tuple[str, ...]
) -> None:
    """Print the tasks of TARGETS with their keys and whether each is up to date; changes nothing."""
    _, planned = session.plan(config_name, overrides, targets, force)
    for step, items in planned.by_step().items():
        done = sum(not p.needed for p in items)
        click.echo(f"{step}  ({done}/{len(items)} up to date)")
        for p in items:
            state = "forced" if p.forced else "done" if p.complete else "pending"
            inputs = ", ".join(sorted({s for s, _ in p.inputs.values()}))
            click.echo(f"  {p.task.id:<28} {p.key}  {state:<7}" + (f"  <- {inputs}" if inputs else ""))


@main.command()
@config_options
@click.pass_obj
@fail_cleanly
def status(session: Session, config_name: str, overrides: tuple[str, ...]) -> None:
    """Per step: how many of the config's tasks are done, with each artifact's summary."""
    from pipeline.status import report

    config, planned = session.plan(config_name, overrides, ["all"])
    for line in report(planned, session.store, config):
        click.echo(line)


@main.command()
@click.option("--config", "config_name", default=None, help="Only the artifacts of this config's plan.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.pass_obj
@fail_cleanly
def verify(session: Session, config_name: str | None, overrides: tuple[str, ...]) -> None:
    """Check the sha256 of every file of every artifact (or of one config's artifacts), and list the
    artifacts made on other hardware than most (CPU, its kernels, GPU)."""
    from pipeline.hardware import by_hardware, describe_hardware

    if config_name:
        _, planned = session.plan(config_name, overrides, ["all"])
        pairs = [(p.task.step, p.key) for p in planned.tasks if p.complete]
    else:
        pairs = [(a.step, a.key) for step in session.store.steps() for a in session.store.list(step)]
    bad, manifests = [], {}
    for step, key in pairs:
        try:
            artifact = session.store.open(step, key, full=True)
        except PipelineError as err:
            bad.append(str(err))
        else:
            manifests[f"{step}[{artifact.manifest.get('task')}] {key}"] = artifact.manifest
    for line in bad:
        click.echo(f"BAD  {line}")
    groups = by_hardware(manifests)
    if len(groups) > 1:
        click.echo(f"made on {len(groups)} kinds of hardware:")
        for i, (hardware, names) in enumerate(groups):
            click.echo(f"  {len(names)} artifact(s): {describe_hardware(hardware)}")
            for name in names if i else []:
                click.echo(f"    {name}")
    click.echo(f"verified {len(pairs)} artifact(s), {len(bad)} bad")
    if bad:
        sys.exit(1)


@main.command()
@click.argument("steps", nargs=-1)
@config_options
@click.pass_obj
@fail_cleanly
def clean(session: Session, steps: tuple[str, ...], config_name: str, overrides: tuple[str, ...]) -> None:
    """Remove leftovers of killed runs; with STEPS, also remove those steps' artifacts for the config."""
    removed = session.store.sweep()
    click.echo(f"removed {len(removed)} temporary director(y/ies)")
    if steps:
        _, planned = session.plan(config_name, overrides, ["all"])
        unknown = set(steps) - set(planned.steps)
        if unknown:
            raise PipelineError(f"unknown step(s): {', '.join(sorted(unknown))}")
        doomed = [p for p in planned.tasks if p.task.step in steps and p.complete]
        for p in doomed:
            session.store.remove(p.task.step, p.key)
        click.echo(f"removed {len(doomed)} artifact(s) of {', '.join(steps)}")


@main.command()
@config_options
@click.option("--ablations", is_flag=True, help="Also redraw the ablation figures (Figs. 4-5).")
@click.pass_obj
@fail_cleanly
def tables(session: Session, config_name: str, overrides: tuple[str, ...], ablations: bool) -> None:
    """Rewrite results/<config>/ (tables, figures) from the finished evaluations, without recomputing them."""
    targets = ["tabulate", *(["ablation-figures"] * ablations)]
    config, planned = session.plan(config_name, overrides, targets, force=targets)
    missing = [p.label for p in planned.tasks if p.task.step not in targets and not p.complete]
    if missing:
        raise PipelineError(
            f"{len(missing)} upstream task(s) are not finished (first: {missing[0]}); "
            f"run `pipeline run {' '.join(targets)}` first"
        )
    _run_reporting_failures(planned, session.store, config)


@main.command()
@click.argument("blocks", nargs=-1)
@click.option("--file", "readme", default="README.md", show_default=True, type=click.Path(dir_okay=False))
@fail_cleanly
def readme(blocks: tuple[str, ...], readme: str) -> None:
    """Re-render README blocks (demo, matched, and their -attacks and -sanity; bench; faults) from results/."""
    from pathlib import Path

    from pipeline.tools.readme import refresh

    done = refresh(Path(readme), list(blocks) or None)
    click.echo(f"refreshed: {', '.join(done) or 'nothing'}")


@main.command()
@click.argument("subject", type=click.Choice(["config", "steps", "models"]))
@config_options
@click.pass_obj
@fail_cleanly
def describe(session: Session, subject: str, config_name: str, overrides: tuple[str, ...]) -> None:
    """Print the resolved config, the step declarations, or the models' layers and sizes."""
    from pipeline.config import load_config

    config = load_config(config_name, overrides)
    if subject == "config":
        import yaml

        click.echo(yaml.safe_dump(config.to_dict(), sort_keys=False))
    elif subject == "steps":
        from pipeline.dag import discover

        for step in discover().values():
            r = step.resources
            click.echo(
                f"{step.name:<14} v{step.version}  needs: {', '.join(step.needs) or '-':<28} "
                f"reads: {', '.join(step.reads):<22} {r.cpus} cpu, {r.gpus} gpu, {r.mem}, {r.time}"
                f"{'  (checkpointable)' if step.checkpointable else ''}"
                f"{'  (small: packed on Slurm)' if step.small else ''}  {step.description}"
            )
    else:
        from pipeline.describe import describe_models

        click.echo(describe_models(config))


register_slurm_commands(main)
register_bench_command(main)
register_accounting_command(main)
accept_group_options(main)

if __name__ == "__main__":
    main()
