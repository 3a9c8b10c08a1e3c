"""Every ``anju ... --help`` page: it renders, and flags show no value type.

The command tree is walked from the root, so a command added later is checked too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from anju.cli import root


def _paths(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from _paths(sub, (*path, name))


PATHS = list(_paths(typer.main.get_command(root)))


def test_the_walk_reaches_nested_commands() -> None:
    assert {(), ("cloud", "migrate"), ("edge", "run"), ("device", "scan")} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(("anju", *path)))
def test_help_shows_no_type_beside_flags(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(root, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Usage: anju" in result.output
    assert "--help" in result.output
    assert "<bool>" not in result.output, result.output
