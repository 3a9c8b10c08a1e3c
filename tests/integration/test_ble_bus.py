"""The BLE bus against simulated bands over bumble HCI: connection slots taken in
turns, an adapter lost and found again, and no adapter at all."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from anju.services.ports import free_port
from edge.addresses import parse_address
from edge.devices import AgentDevice
from edge.drivers.ble.bus import BleBus
from edge.drivers.contract import DriverOptions, Sample
from edge.drivers.registry import driver_for
from edge.errors import DeviceError
from firmware_sim.wearables import BandField
from schemas.profile import load_profiles

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")


class Recorder:
    """A StreamSink that keeps what the bus told it."""

    def __init__(self) -> None:
        self.samples: Counter[str] = Counter()
        self.gone: dict[str, str] = {}
        """Offline devices and why."""
        self.faults: Counter[str] = Counter()

    def sample(self, device_id: str, values: Sample, ts: datetime) -> None:
        if "heart_rate" in values:
            self.samples[device_id] += 1

    def online(self, device_id: str, ts: datetime) -> None:
        self.gone.pop(device_id, None)

    def offline(self, device_id: str, error: DeviceError, ts: datetime) -> None:
        self.gone.setdefault(device_id, error.problem)  # the first reason, as the core keeps it

    def fault(self, device_id: str, error: DeviceError) -> None:
        self.faults[error.kind] += 1


def care_bands(count: int) -> list[AgentDevice]:
    return [
        AgentDevice(
            f"band-{n}",
            PROFILES["anju-wearable-ble"],
            parse_address(f"ble://F0:A1:00:00:00:{n:02X}"),
            60,
        )
        for n in range(1, count + 1)
    ]


def open_bus(devices: list[AgentDevice], **settings: object) -> BleBus:
    bus = driver_for("ble").open(devices[0].address, devices, DriverOptions(settings=settings))
    assert isinstance(bus, BleBus)
    return bus


async def until(what: str, timeout_s: float, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        await asyncio.sleep(0.05)


async def test_more_bands_than_slots_take_turns_and_never_exceed_them() -> None:
    async with BandField(connected=3, beacons=0, seed=3) as field:
        devices = care_bands(3)
        bus = open_bus(
            devices, adapter=f"bumble:{field.hci_spec}", max_connections=2, rotation_s=1.5
        )
        sink, stop = Recorder(), asyncio.Event()
        running = asyncio.create_task(bus.run(sink, stop))
        most = 0

        def every_band_heard() -> bool:
            nonlocal most
            most = max(most, bus.connected, bus.slots.held)
            return all(sink.samples[device.device_id] >= 2 for device in devices)

        try:
            await until("every band connected in its turn", 25, every_band_heard)
        finally:
            stop.set()
            await running
    assert most == 2
    assert bus.slots.rotations >= 1
    assert bus.connects >= 3


async def test_an_adapter_lost_marks_the_bands_offline_and_is_reopened() -> None:
    port = free_port()
    devices = care_bands(1)
    # One slot: a slot not given back when the adapter went would keep the band out.
    bus = open_bus(devices, adapter=f"bumble:tcp-client:127.0.0.1:{port}", max_connections=1)
    sink, stop = Recorder(), asyncio.Event()
    async with BandField(connected=1, beacons=0, port=port, seed=4):
        running = asyncio.create_task(bus.run(sink, stop))
        await until("a heart rate", 15, lambda: sink.samples["band-1"] > 0)
    try:
        await until("the band offline", 10, lambda: "band-1" in sink.gone)
        assert sink.gone["band-1"] == "the adapter was lost"
        heard = sink.samples["band-1"]
        async with BandField(connected=1, beacons=0, port=port, seed=5):
            await until("the band heard again", 30, lambda: sink.samples["band-1"] > heard)
    finally:
        stop.set()
        await running
    assert bus.slots.held == 0


async def test_without_an_adapter_the_reason_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    devices = care_bands(2)
    bus = open_bus(devices, adapter=f"bumble:tcp-client:127.0.0.1:{free_port()}")
    sink, stop = Recorder(), asyncio.Event()
    running = asyncio.create_task(bus.run(sink, stop))
    try:
        await until("both bands offline", 5, lambda: len(sink.gone) == 2)
        await asyncio.sleep(5)  # a retry or two
    finally:
        stop.set()
        await running
    assert "cannot open the HCI transport" in sink.gone["band-1"]
    assert caplog.text.count("band(s) offline until it is") == 1
