"""What the command modules share: common options, the profile folder, failing with a message."""

import os
from pathlib import Path
from typing import Annotated, Final, NoReturn

import typer

import schemas

DEFAULT_GATEWAY_CONFIG: Final = Path("/etc/anju/gateway.yaml")
"""Where ``anju provision gateway`` writes the box's config, and the agent reads it."""
CLOUD_URL_VAR: Final = "ANJU_CLOUD_URL"
"""The cloud API's URL for the installers' commands, when --cloud is not given."""

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
SiteConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        metavar="FILE",
        help="The gateway config; run on the gateway box, its gateway id and cloud URL are "
        "the defaults of --gateway and --cloud. Ignored when it does not exist.",
        dir_okay=False,
    ),
]
CloudOption = Annotated[
    str | None,
    typer.Option(
        "--cloud",
        metavar="URL",
        help=f"The cloud's API, e.g. https://api.example.cn (default: ${CLOUD_URL_VAR}, "
        "else the gateway config's cloud:). The key comes from $ANJU_API_KEY or a prompt.",
        show_default=False,
    ),
]


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
