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
    command = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                           help="Override one config value (repeatable), e.g. sample.seed=2.")(command)
    return click.option("--config", "config_name", default="demo", show_default=True,
                        help="Built-in config (smoke, demo, paper) or a YAML file.")(command)


class Session:
    """What every command shares: the artifact store, and the config once one is loaded."""

    def __init__(self, artifacts: str | None):
        from pipeline.store import Store, default_root

        self.store = Store(default_root(artifacts))

    def plan(self, config_name: str, overrides: Sequence[str], targets: Sequence[str], force: Sequence[str] = ()):
        from pipeline.config import load_config
        from pipeline.dag import build_plan
        from pipeline.execute import pin_git_commit

        pin_git_commit()  # every task of this command records the code version of now
        config = load_config(config_name, overrides)
        return config, build_plan(config, self.store, targets or ["all"], force)
