"""A protocol the gateway has never heard of, plugged in from this file alone.

The proof that BLE, serial and OSDP can join without bending the agent core: a toy
protocol's point addressing, address scheme and driver are defined and registered
here, a profile uses them, and the real agent runs it against the real broker. Its
readings must arrive as wire-format telemetry batches and an actuation command from
the cloud must reach the toy device.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from edge.addresses import DeviceAddress, register_scheme, unregister_scheme
from edge.app import Agent
from edge.config import parse_config
from edge.drivers.contract import DeviceSpec, Driver, DriverOptions, PolledBus, Sample
from edge.drivers.registry import registered
from schemas import addressing
from schemas.broker import parse_broker_url
from schemas.profile import Point, load_profiles
from schemas.topics import Channel, topic_for
from schemas.vocabulary import Metric
from schemas.wire import Command, CommandName, CommandResult, TelemetryBatch, decode, encode

COMMUNITY = "xijin/fenghuang"


# --- the toy protocol: everything a new driver brings, in well under 100 lines -----


class ToyPointAddress(BaseModel):
    """Where a point lives on a toy device: one numbered slot."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    slot: int


class ToyBus(PolledBus):
    """Devices on one toy bus: slots held in memory, by unit and slot."""

    def __init__(self, name: str, slots: dict[tuple[int, int], float]) -> None:
        self.name = name
        self.slots = slots

    async def read(self, device: DeviceSpec) -> Sample:
        return {
            point.name: self.slots[(device.address.unit, _slot(point))] for point in device.points
        }

    async def write(self, device: DeviceSpec, point: Point, value: float) -> None:
        self.slots[(device.address.unit, _slot(point))] = value


class ToyDriver(Driver):
    name = "toy"
    protocols = frozenset({"toy"})

    def __init__(self) -> None:
        self.slots: dict[tuple[int, int], float] = {(1, 0): 21.5, (1, 1): 0.0}

    def open(
        self, address: DeviceAddress, devices: Sequence[DeviceSpec], options: DriverOptions
    ) -> ToyBus:
        return ToyBus(address.bus, self.slots)


def _slot(point: Point) -> int:
    return point.address_as(ToyPointAddress).slot


TOY_PROFILE = {
    "id": "toy-thermometer",
    "kind": "smoke",
    "protocol": "toy",
    "manufacturer": "Toys",
    "model": "T-1",
    "poll_interval_s": 0.1,
    "points": [
        {"name": "temperature", "metric": "temperature_c", "toy": {"slot": 0}},
        {"name": "alarm_reset", "writable": True, "toy": {"slot": 1}},
    ],
    "actions": {"reset_alarm": {"point": "alarm_reset", "value": 1}},
}


@pytest.fixture
def toy() -> Iterator[ToyDriver]:
    addressing.register(addressing.Addressing("toy", frozenset({"toy"}), ToyPointAddress))
    register_scheme("toy")
    driver = ToyDriver()
    try:
        with registered(driver):
            yield driver
    finally:
        unregister_scheme("toy")
        addressing.unregister("toy")


# --- the real agent runs it ----------------------------------------------------------


@asynccontextmanager
async def running_agent(config: dict[str, Any], profiles_dir: Path) -> AsyncIterator[None]:
    agent = Agent(parse_config(config, "test"), load_profiles(profiles_dir))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def test_a_toy_protocol_runs_in_the_real_agent(
    toy: ToyDriver, tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "smoke").mkdir(parents=True)
    (profiles / "smoke" / "toy-thermometer.yaml").write_text(yaml.safe_dump(TOY_PROFILE))
    gateway = unique_id("gw")
    config = {
        "gateway": gateway,
        "community": COMMUNITY,
        "broker": mqtt_url,
        "state_dir": str(tmp_path / "state"),
        "devices": [{"id": "toy-1", "profile": "toy-thermometer", "address": "toy://lab?unit=1"}],
    }
    now = datetime.now(UTC)
    command = Command(
        id="cmd-reset-1",
        name=CommandName.RESET_ALARM,
        device="toy-1",
        issued_at=now,
        expires_at=now + timedelta(minutes=1),
    )
    broker = parse_broker_url(mqtt_url)
    async with aiomqtt.Client(broker.host, broker.port) as cloud:
        await cloud.subscribe(topic_for(COMMUNITY, gateway, Channel.TELEMETRY), qos=1)
        await cloud.subscribe(topic_for(COMMUNITY, gateway, Channel.COMMAND_RESULT, "+"), qos=1)
        async with running_agent(config, profiles):
            batch: TelemetryBatch | None = None
            result: CommandResult | None = None
            async with asyncio.timeout(20):
                while batch is None or result is None:
                    if batch is not None:
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
                    if message.topic.matches(topic_for(COMMUNITY, gateway, Channel.TELEMETRY)):
                        batch = decode(message.payload, TelemetryBatch)
                    else:
                        result = decode(message.payload, CommandResult)
    temperatures = [(r.device, r.value) for r in batch.items if r.metric is Metric.TEMPERATURE]
    assert temperatures[0] == ("toy-1", 21.5)
    assert (result.id, result.ok) == ("cmd-reset-1", True), result.detail
    assert toy.slots[(1, 1)] == 1.0
