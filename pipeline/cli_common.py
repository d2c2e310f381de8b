"""What every ``pipeline`` command shares: the session (artifact store, plans), options, error printing."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence

import click

from pipeline.errors import PipelineError


def fail_cleanly(command: Callable) -> Callable:
    """Print a user error as one line and exit 1; bugs keep their traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PipelineError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)

    return wrapper


def config_options(command: Callable) -> Callable:
    command = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one config value (repeatable), e.g. sample.seed=2.",
    )(command)
    return click.option(
        "--config",
        "config_name",
        default="demo",
        show_default=True,
        help="Built-in config (smoke, demo, paper) or a YAML file.",
    )(command)


ARTIFACTS_HELP = "Artifact root (default: $PIPELINE_ARTIFACTS or ./artifacts)."


class Session:
    """What every command shares: the artifact store (``--artifacts``, given before or after the
    command's name), and the plans it builds."""

    def __init__(self, artifacts: str | None):
        self.artifacts = artifacts  # as given; None: the default root

    @functools.cached_property
    def store(self):
        from pipeline.store import Store, default_root

        return Store(default_root(self.artifacts))

    def plan(self, config_name: str, overrides: Sequence[str], targets: Sequence[str], force: Sequence[str] = ()):
        from pipeline.config import load_config
        from pipeline.dag import build_plan
        from pipeline.execute import pin_git_commit

        pin_git_commit()  # every task of this command records the code version of now
        config = load_config(config_name, overrides)
        return config, build_plan(config, self.store, targets or ["all"], force)


def _set_artifacts(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        session = ctx.find_object(Session)
        assert session is not None  # the group made it
        session.artifacts = value


def accept_group_options(group: click.Group) -> None:
    """Let every subcommand of ``group`` also take ``--artifacts`` after its own name."""
    for command in group.commands.values():
        command.params.append(
            click.Option(
                ["--artifacts"], metavar="DIR", expose_value=False, callback=_set_artifacts, help=ARTIFACTS_HELP
            )
        )
