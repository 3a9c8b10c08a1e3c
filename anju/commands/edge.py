"""``anju edge``: the gateway agent."""

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from anju.commands.common import fail, profile_root
from edge.app import Agent
from edge.config import load_config
from edge.errors import EdgeError
from schemas.errors import SchemaError
from schemas.profile import load_profiles

app = typer.Typer(
    help="Run the gateway agent of one community: poll devices, send readings and alarms.",
    no_args_is_help=True,
)

log = logging.getLogger(__name__)


@app.command(
    epilog="Example: anju edge run --config /etc/anju/gateway.yaml\n\n"
    "The config names the gateway, its community path (street/community), the broker URL "
    "and the devices with their profile and address URL; see edge/config.py."
)
def run(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Gateway config file (YAML).", show_default=False)
    ],
) -> None:
    """Run the agent until interrupted (Ctrl-C or SIGTERM), then flush and say offline."""
    try:
        gateway = load_config(config)
        profiles = load_profiles(gateway.profiles or profile_root())
        agent = Agent(gateway, profiles, source=str(config))
    except (EdgeError, SchemaError) as exc:
        fail(str(exc))
    asyncio.run(_run(agent))


async def _run(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "gateway %s (%s): %d devices on %d buses",
        agent.config.gateway,
        agent.config.community,
        len(agent.devices),
        len(agent.pollers),
    )
    await agent.run(stop)
