"""The agent core runs whatever buses its drivers open, and keeps going without them.

A streaming bus defined here pushes samples and comes and goes as the contract says;
the core must normalise, report ``device.online``/``device.offline``, count faults by
kind and serve them in ``/metrics``. A protocol with no driver here must leave its
devices offline with the reason, once, while the rest of the gateway runs.
"""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.addresses import DeviceAddress
from edge.app import Agent
from edge.config import parse_config
from edge.drivers.contract import (
    DeviceSpec,
    Driver,
    DriverOptions,
    StreamingBus,
    StreamSink,
)
from edge.drivers.registry import registered
from edge.errors import DeviceTimeout
from edge.metrics import EdgeCollector
from schemas.profile import Point, load_profiles
from schemas.vocabulary import EventType, Metric
from tests.unit.test_agent_spool_errors import spooled

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


class ScriptedBus(StreamingBus):
    """Plays a script of pushes into the core's sink, then waits for the stop."""

    def __init__(self, name: str, script: list[tuple[str, Any]]) -> None:
        self.name = name
        self.script = script
        self.writes: list[tuple[str, str, float]] = []

    async def run(self, sink: StreamSink, stop: asyncio.Event) -> None:
        for step, (what, argument) in enumerate(self.script):
            ts = T0.replace(second=step)
            if what == "sample":
                sink.sample("b3-smoke", argument, ts)
            elif what == "offline":
                sink.offline("b3-smoke", DeviceTimeout("stream", argument), ts)
            elif what == "online":
                sink.online("b3-smoke", ts)
            elif what == "fault":
                sink.fault("b3-smoke", DeviceTimeout("stream", argument))
            elif what == "stranger":
                sink.sample("not-configured", argument, ts)
        await stop.wait()

    async def write(self, device: DeviceSpec, point: Point, value: float) -> None:
        self.writes.append((device.device_id, point.name, value))


class ScriptedDriver(Driver):
    """Takes over the Modbus schemes, so shipped profiles and configs stay as they are."""

    name = "scripted"
    protocols = frozenset({"modbus-tcp", "modbus-rtu"})

    def __init__(self, script: list[tuple[str, Any]]) -> None:
        self.script = script
        self.opened: list[ScriptedBus] = []

    def open(
        self, address: DeviceAddress, devices: Sequence[DeviceSpec], options: DriverOptions
    ) -> ScriptedBus:
        bus = ScriptedBus(address.bus, self.script)
        self.opened.append(bus)
        return bus


def config(tmp_path: Path, *devices: dict[str, str]) -> dict[str, Any]:
    return {
        "gateway": "gw-buses",
        "community": "xijin/fenghuang",
        "broker": "mqtt://127.0.0.1:1",
        "state_dir": str(tmp_path / "state"),
        "devices": list(devices),
    }


SMOKE = {"id": "b3-smoke", "profile": "anju-smoke-mb", "address": "modbus-tcp://lab:502?unit=1"}
NORMAL = {"status": 0, "obscuration": 12, "temperature": 215, "co": 0, "battery": 97}
ALARM = {**NORMAL, "status": 1}


async def spooled_while_running(agent: Agent) -> tuple[list[Any], list[Any]]:
    """What the agent spooled in its first moments (it has no broker to send it to)."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(0.3)
    try:
        return spooled(agent.spool)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


async def test_a_streaming_bus_is_normalised_and_its_health_kept_by_the_core(
    tmp_path: Path,
) -> None:
    script = [
        ("sample", NORMAL),
        ("fault", "bad frame"),
        ("offline", "not heard for 30 s"),
        ("online", None),
        ("sample", ALARM),
        ("stranger", NORMAL),
    ]
    with registered(ScriptedDriver(script), replacing=True):
        agent = Agent(parse_config(config(tmp_path, SMOKE), "test"), PROFILES)
        assert [pump.bus.name for pump in agent.pumps] == ["tcp://lab:502"]
        assert agent.pollers == []
        events, readings = await spooled_while_running(agent)

    assert [event.type for event in events] == [
        EventType.DEVICE_OFFLINE,
        EventType.DEVICE_ONLINE,
        EventType.SMOKE_ALARM,
    ]
    assert events[0].data is not None
    assert events[0].data.reason == "timeout: not heard for 30 s"
    temperature = [r.value for r in readings if r.metric is Metric.TEMPERATURE]
    assert temperature == [21.5]
    (device,) = agent.devices
    assert device.online
    assert dict(device.faults) == {"timeout": 2}
    assert (device.polls, device.answered) == (2, 2)
    (pump,) = agent.pumps
    assert pump.unknown_records == 1


async def test_a_driver_that_cannot_run_here_leaves_its_devices_offline_and_the_rest_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A band on a gateway with no Bluetooth adapter (as on this machine): said once,
    offline with the reason, every other device served."""
    band = {"id": "band-0042", "profile": "anju-wearable-ble", "address": "ble://AA:BB:CC:DD:EE:01"}
    smoke = {**SMOKE, "address": "modbus-tcp://127.0.0.1:1?unit=1"}
    document = {**config(tmp_path, smoke, band), "drivers": {"ble": {"adapter": "bleak:hci97"}}}
    agent = Agent(parse_config(document, "test"), PROFILES)
    try:
        assert [poller.bus.name for poller in agent.pollers] == ["tcp://127.0.0.1:1"]
        assert list(agent.unavailable) == ["band-0042"]
        assert caplog.text.count("1 device(s) on ble will stay offline: no Bluetooth adapter") == 1
        events, _ = spooled(agent.spool)
        (offline,) = events
        assert (offline.device, offline.type) == ("band-0042", EventType.DEVICE_OFFLINE)
        assert offline.data is not None
        assert offline.data.reason.startswith("unavailable: no Bluetooth adapter")

        collector = EdgeCollector(devices=lambda: agent.devices, pollers=lambda: agent.pollers)
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in collector.collect()
            for sample in family.samples
        }
        online = {
            labels: value for (name, labels), value in samples.items() if name.endswith("online")
        }
        assert online == {(("device", "b3-smoke"),): 1.0, (("device", "band-0042"),): 0.0}
        offline_info = [labels for (name, labels), _ in samples.items() if "offline_info" in name]
        assert offline_info == [
            (
                ("device", "band-0042"),
                ("protocol", "ble"),
                ("reason", offline.data.reason),
            )
        ]
    finally:
        agent.spool.close()
