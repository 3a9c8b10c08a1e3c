"""Helpers shared by the command modules: the profile folder, failing with a message."""

import os
from pathlib import Path
from typing import NoReturn

import typer

import schemas


def profile_root() -> Path:
    """The device profile folder: ``$ANJU_PROFILE_DIR``, else the one shipped with Anju."""
    configured = os.environ.get("ANJU_PROFILE_DIR")
    if configured:
        return Path(configured)
    return Path(schemas.__file__).resolve().parents[1] / "device_profiles"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as an error on stderr and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)
