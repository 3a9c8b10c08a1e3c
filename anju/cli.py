"""The ``anju`` command: one entry point for installers, operators and the demo."""

import logging
from typing import Annotated

import typer
from rich.logging import RichHandler
from typer.core import TyperOption

from anju.commands import cloud, demo, device, edge, inventory, profile, provision, sim


def _hide_flag_types() -> None:
    """Show no value type beside flags in the help panels.

    A flag takes no value, yet typer 0.29's rich panels print ``<bool>`` beside every
    one (``--help`` included), which reads as if ``--verbose <bool>`` wanted an
    argument. Its plain help already leaves flags out; this makes the panels agree.
    ``tests/unit/test_cli_help.py`` walks every command and fails should a typer
    upgrade bring the type back; one that renames the method fails this import.
    """
    typed = TyperOption.display_type_rich

    def display_type_rich(option: TyperOption, ctx: typer.Context) -> str | None:
        return None if option.is_flag else typed(option, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign,assignment]


_hide_flag_types()

root = typer.Typer(
    name="anju",
    help="Anju (安居): smart-community IoT platform. A gateway agent per community reads "
    "door controllers, smoke detectors, cameras and wearables; the cloud tier stores "
    "their readings and turns alarms into incidents for dispatchers and property managers.",
    no_args_is_help=True,
    epilog="Start with: anju demo --duration 40   (everything on one machine)",
)
root.command("demo")(demo.demo)
root.add_typer(edge.app, name="edge")
root.add_typer(cloud.app, name="cloud")
root.add_typer(profile.app, name="profile")
root.add_typer(sim.app, name="sim")
root.add_typer(device.app, name="device")
inventory.register(device.app)
root.add_typer(provision.app, name="provision")


@root.callback()
def _options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )
    for noisy in ("httpx", "uvicorn.access", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Anju reports every failed Modbus request once, with its bus, unit and register;
    # pymodbus logs the same failure again with a frame dump, which --verbose keeps
    # for a technician reading the wire.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def main() -> None:
    root()


if __name__ == "__main__":
    main()
