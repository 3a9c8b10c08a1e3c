"""What the command modules share: common options, the profile folder, failing with a message."""

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

import schemas

ProfilesOption = Annotated[
    Path | None,
    typer.Option(
        "--profiles",
        metavar="DIR",
        help="Profile root holding <kind>/<id>.yaml "
        "(default: $ANJU_PROFILE_DIR, else the repository's device_profiles/).",
        file_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


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
