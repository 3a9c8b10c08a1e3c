"""``anju edge``: the gateway agent."""

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from anju.commands.common import fail, profile_root
from edge.app import Agent, ConfigLoader
from edge.config import GatewayConfig, load_config
from edge.errors import EdgeError
from schemas.errors import SchemaError
from schemas.profile import DeviceProfile, load_profiles

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
    """Run the agent until interrupted (Ctrl-C or SIGTERM), then flush and say offline.

    A reload_config command from the cloud re-reads this file; if it is valid the
    agent drains, stops and starts again from it, keeping its spool. A device list
    pushed by the cloud (apply_config) is applied in place and kept in the state
    directory (pushed-config.json), so a restart or a reload runs it again; new broker
    credentials written to this file are picked up when the broker refuses the old.
    """

    def load() -> tuple[GatewayConfig, dict[str, DeviceProfile]]:
        gateway = load_config(config)
        return gateway, load_profiles(gateway.profiles or profile_root())

    try:
        gateway, profiles = load()
        agent = Agent(gateway, profiles, source=str(config), reload_from=load)
    except (EdgeError, SchemaError) as exc:
        fail(str(exc))
    asyncio.run(_run(agent, config, load))


async def _run(agent: Agent, path: Path, load: ConfigLoader) -> None:
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.set)
    while True:
        log.info(
            "gateway %s (%s): %d devices on %d buses, %s",
            agent.config.gateway,
            agent.config.community,
            len(agent.devices),
            len(agent.pollers) + len(agent.pumps),
            f"pushed config version {agent.config_version}"
            if agent.config_version
            else f"the devices of {path}",
        )
        stop = asyncio.Event()
        relay = asyncio.create_task(_relay(interrupted, stop), name="signals")
        try:
            await agent.run(stop)
        finally:
            relay.cancel()
        if interrupted.is_set() or not agent.reload_requested:
            return
        try:
            gateway, profiles = load()
            agent = Agent(gateway, profiles, source=str(path), reload_from=load)
        except (EdgeError, SchemaError) as exc:
            fail(f"reload failed, the agent stops: {exc}")
        log.info("reloaded %s", path)


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
