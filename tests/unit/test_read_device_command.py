"""``read_device``: an installer's test of one device through the running gateway.

The devices live on a ``MemoryBus`` (tests/memory_driver.py), which the processor
reaches only through ``DeviceActions`` and the driver contract, like the poller: what
was read is the bus's record of requests, and a device fault is one the bus is told to
raise. A device on a streaming bus is a real ``SerialBus``, never started (it opens its
port only when run). Reads against a real Modbus bus shared with a poller are in
tests/e2e/test_device_test.py.
"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.actions import DeviceActions
from edge.addresses import parse_address
from edge.commands import CommandProcessor
from edge.devices import AgentDevice
from edge.drivers.contract import DriverOptions
from edge.drivers.registry import driver_for
from edge.errors import DeviceTimeout
from edge.poller import PolledDevice
from schemas.profile import load_profiles
from schemas.wire import (
    READ_POINT_PREFIX,
    ArgValue,
    Command,
    CommandName,
    CommandResult,
    decode,
    encode,
)
from tests.memory_driver import MemoryBus

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
SMOKE, CAMERA = PROFILES["anju-smoke-mb"], PROFILES["anju-camera-serial"]
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
BUS_URL = "modbus-tcp://192.0.2.10:502"
"""Never connected to: the devices are in memory."""


class Site:
    """One detector on a memory bus and one camera box on a serial port, with the
    processor the agent would build over them."""

    def __init__(self, root: Path) -> None:
        self.bus = MemoryBus(BUS_URL)
        smoke_address = parse_address(f"{BUS_URL}?unit=2")
        camera_address = parse_address("serial:///dev/ttyANJU-TEST?baud=115200")
        camera = AgentDevice("camera-1", CAMERA, camera_address, 1.0)
        serial_bus = driver_for(CAMERA.protocol).open(camera_address, [camera], DriverOptions())
        self.actions = DeviceActions(
            {
                "smoke-2": (self.bus, PolledDevice("smoke-2", SMOKE, smoke_address, 1.0)),
                "camera-1": (serial_bus, camera),
            }
        )
        self.audit = root / "state" / "commands.jsonl"
        self.processor = CommandProcessor(
            "gw-fh-01",
            self.actions,
            reload=_reload,
            audit_path=self.audit,
            agent_version="0.1.0-test",
            clock=lambda: T0,
        )

    def audit_outcomes(self) -> list[str]:
        return [json.loads(line)["outcome"] for line in self.audit.read_text().splitlines()]


async def _reload() -> str:
    return "reloaded"


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def read_device(
    device: str | None, *, args: dict[str, ArgValue] | None = None, id: str = "t-1"
) -> bytes:
    return encode(
        Command(
            id=id,
            name=CommandName.READ_DEVICE,
            device=device,
            args=args or {},
            issued_at=T0 - timedelta(seconds=1),
            expires_at=T0 + timedelta(seconds=10),
        )
    )


async def answer(site: Site, payload: bytes, command_id: str = "t-1") -> CommandResult:
    return decode(await site.processor.handle(command_id, payload), CommandResult)


async def test_every_point_is_read_once_and_answered_in_engineering_units(site: Site) -> None:
    site.bus.values["smoke-2"].update(
        {"status": 1, "obscuration": 314, "temperature": -55, "alarm_threshold": 250}
    )
    result = await answer(site, read_device("smoke-2"))
    assert result.ok, result.detail
    points = {
        key.removeprefix(READ_POINT_PREFIX): value
        for key, value in result.data.items()
        if key.startswith(READ_POINT_PREFIX)
    }
    # Every point of the profile, configuration registers included (the poller reads
    # only those with a metric or a rule), each with its scale applied and rounded.
    assert list(points) == [point.name for point in SMOKE.points]
    assert points["obscuration"] == 3.14
    assert points["temperature"] == -5.5
    assert points["alarm_threshold"] == 2.5
    assert points["status"] == 1.0
    assert isinstance(result.data["elapsed_ms"], int)
    assert site.bus.reads == 1
    assert "smoke-2" in result.detail
    # It changes nothing: no ``started`` line, only the verdict.
    assert site.audit_outcomes() == ["ok"]


async def test_a_device_that_does_not_answer_fails_with_the_fault(site: Site) -> None:
    fault = DeviceTimeout("tcp://192.0.2.10:502 unit 2", "no answer within 1 s")
    site.bus.failing["smoke-2"] = fault
    result = await answer(site, read_device("smoke-2"))
    assert not result.ok
    assert str(fault) in result.detail
    assert "smoke-2" in result.detail
    assert result.data["fault"] == "timeout"
    assert isinstance(result.data["elapsed_ms"], int)
    assert not any(key.startswith(READ_POINT_PREFIX) for key in result.data)
    assert site.audit_outcomes() == ["failed"]


REFUSALS = [
    pytest.param(read_device("smoke-9"), "smoke-9: no such device on this gateway", id="unknown"),
    pytest.param(read_device(None), "read_device needs a device", id="no-device"),
    pytest.param(
        read_device("smoke-2", args={"points": "status"}),
        "read_device has no argument points (it takes no arguments)",
        id="arguments",
    ),
    pytest.param(
        read_device("camera-1"),
        "a one-off read is only for polled devices",
        id="streaming-bus",
    ),
]


@pytest.mark.parametrize(("payload", "reason"), REFUSALS)
async def test_refusals_name_the_reason_and_read_nothing(
    site: Site, payload: bytes, reason: str
) -> None:
    result = await answer(site, payload)
    assert not result.ok
    assert reason in result.detail, result.detail
    assert result.data == {}
    assert site.bus.requests == 0
    assert site.audit_outcomes() == ["refused"]


async def test_a_repeat_is_answered_from_the_first_read(site: Site) -> None:
    payload = read_device("smoke-2")
    first = await site.processor.handle("t-1", payload)
    site.bus.values["smoke-2"]["status"] = 1
    again = await site.processor.handle("t-1", payload)
    assert again == first
    assert site.bus.reads == 1
    result: dict[str, Any] = json.loads(first)
    assert result["data"][f"{READ_POINT_PREFIX}status"] == 0.0
