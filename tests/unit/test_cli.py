"""The command line's shared options: ``--artifacts`` before or after the command's name."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.cli import main

pytestmark = pytest.mark.unit


def test_artifacts_is_accepted_after_every_subcommand():
    for name, command in main.commands.items():
        assert "--artifacts" in {opt for p in command.params for opt in getattr(p, "opts", [])}, name


@pytest.mark.parametrize("where", ["before", "after"])
def test_artifacts_before_or_after_the_subcommand_chooses_the_root(tmp_path, where, monkeypatch):
    monkeypatch.delenv("PIPELINE_ARTIFACTS", raising=False)
    root = tmp_path / "elsewhere"
    option = ["--artifacts", str(root)]
    command = ["status", "--config", "smoke"]
    args = option + command if where == "before" else command + option
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith(f"artifacts: {root}   config: smoke")


def test_the_later_artifacts_option_wins(tmp_path):
    args = ["--artifacts", str(tmp_path / "a"), "status", "--config", "smoke", "--artifacts", str(tmp_path / "b")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and f"artifacts: {tmp_path / 'b'} " in result.output
