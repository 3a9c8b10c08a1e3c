"""Commands reaching real devices: a door controller and a smoke detector over Modbus TCP,
and a command's round trip through the real Mosquitto broker.

What the command processor decides (refusals, repeats, the audit log) is tested in
tests/unit/test_commands.py over an in-memory bus; here are what needs a real Modbus
server: the driver's own error text and the remote ``scan``.

The MQTT test stands in for the uplink's command hook with a few lines of aiomqtt:
it subscribes to ``cmd/+`` and publishes what the processor returns on
``cmd-result/{id}``.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest_asyncio

from edge.actions import DeviceActions
from edge.addresses import parse_address
from edge.commands import AUDIT_FILE, CommandLimits, CommandProcessor
from edge.drivers.modbus.bus import ModbusBus
from edge.poller import PolledDevice
from firmware_sim.door_controller import DoorController, EventCode, Status
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.broker import parse_broker_url
from schemas.profile import load_profiles
from schemas.topics import Channel, parse_topic, topic_for
from schemas.wire import ArgValue, Command, CommandName, CommandResult, decode, encode

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
GATEWAY = "gw-fh-01"


class DoorClock:
    """Unix seconds for the door controller, so a pulse's end is reached by moving it."""

    def __init__(self) -> None:
        self.now = 1_740_816_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Building:
    door: DoorController
    door_clock: DoorClock
    smoke: SmokeDetector
    server: ModbusSimServer
    actions: DeviceActions
    audit: Path
    processor: CommandProcessor

    def processor_with(self, limits: CommandLimits) -> CommandProcessor:
        """Another processor on the same devices and audit log, with other limits."""
        return _processor(self.actions, self.audit, limits)


async def _reload() -> str:
    return "unchanged"


def _processor(
    actions: DeviceActions, audit: Path, limits: CommandLimits | None = None
) -> CommandProcessor:
    return CommandProcessor(
        GATEWAY,
        actions,
        reload=_reload,
        audit_path=audit,
        agent_version="0.1.0",
        profiles=PROFILES.values(),
        limits=limits or CommandLimits(),
    )


@pytest_asyncio.fixture
async def building(tmp_path: Path) -> AsyncIterator[Building]:
    """A door controller (unit 3) and a smoke detector (unit 7) behind one converter."""
    door_clock = DoorClock()
    door = DoorController(clock=door_clock)
    smoke = SmokeDetector()
    async with ModbusSimServer({3: door, 7: smoke}) as server:
        door_address = parse_address(server.url_for(3))
        smoke_address = parse_address(server.url_for(7))
        bus = ModbusBus(door_address, timeout_s=1.0)
        actions = DeviceActions(
            {
                "fh-b3-door-01": (
                    bus,
                    PolledDevice("fh-b3-door-01", PROFILES["anju-door-mb"], door_address, 0.5),
                ),
                "fh-b3-smoke-0301": (
                    bus,
                    PolledDevice("fh-b3-smoke-0301", PROFILES["anju-smoke-mb"], smoke_address, 1.0),
                ),
            }
        )
        audit = tmp_path / AUDIT_FILE
        processor = _processor(actions, audit)
        try:
            yield Building(door, door_clock, smoke, server, actions, audit, processor)
        finally:
            bus.close()


def command(
    name: CommandName,
    command_id: str,
    *,
    device: str | None = None,
    args: dict[str, ArgValue] | None = None,
) -> bytes:
    now = datetime.now(UTC)
    return encode(
        Command(
            id=command_id,
            name=name,
            device=device,
            args=args or {},
            issued_at=now,
            expires_at=now + timedelta(seconds=30),
        )
    )


async def test_unlock_door_releases_the_strike_for_the_seconds_asked(building: Building) -> None:
    door, clock = building.door, building.door_clock
    assert door.status & Status.LOCKED
    payload = command(
        CommandName.UNLOCK_DOOR, "c-unlock-1", device="fh-b3-door-01", args={"seconds": 12}
    )
    result = decode(await building.processor.handle("c-unlock-1", payload), CommandResult)
    assert (result.ok, result.detail) == (True, "unlocked fh-b3-door-01 for 12 s")
    assert door.strike_released
    assert not door.status & Status.LOCKED
    assert door.unlock_seconds_left == 12
    assert door.newest_event().code is EventCode.REMOTE_UNLOCK
    clock.now += 11.9
    assert door.strike_released
    clock.now += 0.1
    assert not door.strike_released
    assert door.status & Status.LOCKED


async def test_reset_alarm_clears_a_latched_alarm_once_smoke_is_gone(building: Building) -> None:
    smoke, processor = building.smoke, building.processor
    smoke.trigger_alarm()
    reset = command(CommandName.RESET_ALARM, "c-reset-1", device="fh-b3-smoke-0301")
    first = decode(await processor.handle("c-reset-1", reset), CommandResult)
    assert first.ok, first.detail
    assert smoke.alarm, "a reset while smoke is above the threshold must leave the alarm latched"
    smoke.clear_smoke()
    assert smoke.alarm
    reset = command(CommandName.RESET_ALARM, "c-reset-2", device="fh-b3-smoke-0301")
    second = decode(await processor.handle("c-reset-2", reset), CommandResult)
    assert (second.ok, second.detail) == (True, "reset sent to fh-b3-smoke-0301 (alarm_reset = 1)")
    assert not smoke.alarm


async def _answer_commands(client: aiomqtt.Client, processor: CommandProcessor) -> None:
    """What the uplink's command hook does: run each command, publish its result."""
    async for message in client.messages:
        address = parse_topic(message.topic.value)
        assert address.command_id is not None
        assert isinstance(message.payload, bytes)
        result = await processor.handle(address.command_id, message.payload)
        reply = topic_for(
            address.community, address.gateway, Channel.COMMAND_RESULT, address.command_id
        )
        await client.publish(reply, result, qos=1)


async def test_command_round_trip_through_the_broker(
    building: Building, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    broker = parse_broker_url(mqtt_url)
    # A community of this test's own keeps its topics apart from every other test's.
    community = f"xijin/{unique_id('fh')}"
    command_id = "c-mqtt-1"
    payload = command(
        CommandName.UNLOCK_DOOR, command_id, device="fh-b3-door-01", args={"seconds": 4}
    )
    edge = aiomqtt.Client(broker.host, broker.port, identifier=unique_id("edge"))
    cloud = aiomqtt.Client(broker.host, broker.port, identifier=unique_id("cloud"))
    async with edge, cloud:
        await edge.subscribe(topic_for(community, GATEWAY, Channel.COMMAND, "+"), qos=1)
        await cloud.subscribe(
            topic_for(community, GATEWAY, Channel.COMMAND_RESULT, command_id), qos=1
        )
        answering = asyncio.create_task(_answer_commands(edge, building.processor))
        try:
            # The second publish is a redelivery of the same command, as QoS 1 allows.
            for _ in range(2):
                await cloud.publish(
                    topic_for(community, GATEWAY, Channel.COMMAND, command_id), payload, qos=1
                )
            results: list[bytes] = []
            async with asyncio.timeout(10):
                async for message in cloud.messages:
                    assert isinstance(message.payload, bytes)
                    results.append(message.payload)
                    if len(results) == 2:
                        break
        finally:
            answering.cancel()
            await asyncio.wait({answering}, timeout=5)
    assert results[0] == results[1]
    result = decode(results[0], CommandResult)
    assert (result.id, result.gateway, result.ok) == (command_id, GATEWAY, True)
    assert building.door.unlock_seconds_left == 4
    unlocks = [e for e in building.door.events() if e.code is EventCode.REMOTE_UNLOCK]
    assert len(unlocks) == 1


async def test_a_silent_door_fails_the_unlock_with_the_drivers_error_text(
    building: Building,
) -> None:
    building.server.faults(3).drop()
    payload = command(CommandName.UNLOCK_DOOR, "c-unlock-1", device="fh-b3-door-01")
    result = decode(await building.processor.handle("c-unlock-1", payload), CommandResult)
    assert not result.ok
    assert "unit 3 holding_register 101: no answer within 1 s" in result.detail
    assert not building.door.strike_released
    assert not [e for e in building.door.events() if e.code is EventCode.REMOTE_UNLOCK]


async def test_scan_finds_units_and_suggests_profiles(building: Building) -> None:
    server = building.server
    by_url = command(CommandName.SCAN, "c-scan-1", args={"bus": server.url, "units": "3,5,7"})
    result = decode(await building.processor.handle("c-scan-1", by_url), CommandResult)
    assert result.ok, result.detail
    assert result.detail == f"2 of 3 answered on tcp://127.0.0.1:{server.port}"
    assert result.data == {
        "bus": f"tcp://127.0.0.1:{server.port}",
        "units": "3,5,7",
        "found": "3,7",
        "suggested": "3=anju-door-mb;7=anju-smoke-mb",
    }
    by_device = command(
        CommandName.SCAN, "c-scan-2", args={"bus": "fh-b3-smoke-0301", "units": "7"}
    )
    second = decode(await building.processor.handle("c-scan-2", by_device), CommandResult)
    assert (second.data["found"], second.data["suggested"]) == ("7", "7=anju-smoke-mb")


async def test_a_scan_that_runs_too_long_answers_with_what_it_found(building: Building) -> None:
    building.server.faults(7).delay(5.0)
    processor = building.processor_with(CommandLimits(scan_unit_s=0.5, scan_max_s=0.3))
    payload = command(
        CommandName.SCAN, "c-scan-1", args={"bus": building.server.url, "units": "3,7-10"}
    )
    result = decode(await processor.handle("c-scan-1", payload), CommandResult)
    assert not result.ok
    assert result.detail == "stopped after 0.3 s at 3; data holds what was found"
    assert (result.data["found"], result.data["suggested"]) == ("3", "3=anju-door-mb")
