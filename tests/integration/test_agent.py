"""The whole agent, as ``anju edge run`` builds it, on simulated devices.

The pieces have their own tests; these check that the agent wires them together:
a command from the cloud reaches a door controller, and a fire releases the
building's escape doors with no broker anywhere.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt

from anju.services.ports import free_port
from edge.app import Agent
from edge.config import parse_config
from firmware_sim.door_controller import DoorController
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.broker import parse_broker_url
from schemas.profile import load_profiles
from schemas.topics import Channel, topic_for
from schemas.vocabulary import EventType
from schemas.wire import (
    Command,
    CommandName,
    CommandResult,
    Event,
    EventBatch,
    decode,
    encode,
)

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
COMMUNITY = "xijin/fenghuang"


@asynccontextmanager
async def agent_on(
    devices: dict[int, Any], config: Callable[[ModbusSimServer], dict[str, Any]]
) -> AsyncIterator[Agent]:
    async with ModbusSimServer(devices) as sim:
        agent = Agent(parse_config(config(sim), "test"), PROFILES)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop), name="agent")
        try:
            yield agent
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)


def base(gateway: str, broker: str, state: Path) -> dict[str, Any]:
    return {"gateway": gateway, "community": COMMUNITY, "broker": broker, "state_dir": str(state)}


async def test_unlock_command_through_the_broker_opens_the_door(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    door = DoorController()

    def config(sim: ModbusSimServer) -> dict[str, Any]:
        device = {"id": "fh-b3-door-01", "profile": "anju-door-mb", "address": sim.url_for(1)}
        return {**base(gateway, mqtt_url, tmp_path / "state"), "devices": [device]}

    now = datetime.now(UTC)
    command = Command(
        id="cmd-unlock-1",
        name=CommandName.UNLOCK_DOOR,
        device="fh-b3-door-01",
        args={"seconds": 20},
        issued_at=now,
        expires_at=now + timedelta(minutes=1),
    )
    broker = parse_broker_url(mqtt_url)
    async with agent_on({1: door}, config), aiomqtt.Client(broker.host, broker.port) as cloud:
        await cloud.subscribe(topic_for(COMMUNITY, gateway, Channel.COMMAND_RESULT, "+"), qos=1)
        result: CommandResult | None = None
        async with asyncio.timeout(20):
            # The agent subscribes once it is online; a command sent before that has no
            # taker, so the cloud sends it again (same id: the agent acts only once).
            while result is None:
                await cloud.publish(
                    topic_for(COMMUNITY, gateway, Channel.COMMAND, command.id),
                    encode(command),
                    qos=1,
                )
                try:
                    async with asyncio.timeout(1):
                        message = await anext(cloud.messages)
                except TimeoutError:
                    continue
                assert isinstance(message.payload, bytes)
                result = decode(message.payload, CommandResult)
    assert (result.id, result.ok) == ("cmd-unlock-1", True), result.detail
    assert 15 <= door.unlock_seconds_left <= 20


async def test_smoke_alarm_releases_the_buildings_egress_doors_with_no_broker(
    tmp_path: Path, unique_id: Callable[[str], str]
) -> None:
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    detector, exit_door, side_door, other_building = (
        SmokeDetector(),
        DoorController(),
        DoorController(),
        DoorController(),
    )
    units: dict[int, Any] = {1: detector, 2: exit_door, 3: side_door, 4: other_building}

    def config(sim: ModbusSimServer) -> dict[str, Any]:
        def device(
            unit: int, name: str, profile: str, building: str, egress: bool
        ) -> dict[str, Any]:
            return {"id": name, "profile": profile, "address": sim.url_for(unit),
                    "building": building, "egress": egress}  # fmt: skip

        return {
            **base(unique_id("gw"), nobody, tmp_path / "state"),
            "devices": [
                device(1, "b3-smoke", "anju-smoke-mb", "3", False),
                device(2, "b3-exit", "anju-door-mb", "3", True),
                device(3, "b3-side", "anju-door-mb", "3", False),
                device(4, "b4-exit", "anju-door-mb", "4", True),
            ],
        }

    async with agent_on(units, config) as agent:
        await asyncio.sleep(1.5)
        cue = time.monotonic()
        detector.trigger_alarm()
        async with asyncio.timeout(5):
            while not exit_door.strike_released:  # noqa: ASYNC110 (simulator state)
                await asyncio.sleep(0.01)
        released_after = time.monotonic() - cue
        await asyncio.sleep(0.5)
        fired = [e for e in spooled_events(agent) if e.type is EventType.DOOR_UNLOCKED_BY_FIRE]
    assert released_after < 1.0, f"egress door released {released_after:.2f} s after the smoke"
    assert not side_door.strike_released
    assert not other_building.strike_released
    assert [e.device for e in fired] == ["b3-exit"]


def spooled_events(agent: Agent) -> list[Event]:
    """The events waiting in the agent's spool for a broker that never came."""
    events: list[Event] = []
    while (batch := agent.spool.take_nowait()) is not None:
        if batch.channel is Channel.EVENTS:
            events.extend(decode(batch.payload, EventBatch).items)
    return events
