"""A driver whose devices live in memory, for tests of the agent core.

The core (poller, actions, commands, fire linkage) talks to devices only through the
driver contract, so its tests need no Modbus server: this bus keeps each device's raw
point values, records every write, and fails on demand with the errors a real bus
raises. Protocol behaviour (frames, timeouts, reconnects) is tested against real
transports in each driver's own tests.
"""

import asyncio
from collections import defaultdict
from dataclasses import dataclass

from edge.drivers.contract import DeviceSpec, PolledBus, RawValue, Sample
from edge.errors import DeviceError
from schemas.profile import Point


@dataclass(frozen=True, slots=True)
class Write:
    device_id: str
    point: str
    value: float


class MemoryBus(PolledBus):
    """Raw values by device and point; a point never set reads as 0."""

    def __init__(self, name: str = "memory://bus") -> None:
        self.name = name
        self.values: defaultdict[str, dict[str, RawValue]] = defaultdict(dict)
        self.writes: list[Write] = []
        self.failing: dict[str, DeviceError] = {}
        """Devices that answer nothing but this error, by id, until removed."""
        self.held: dict[str, asyncio.Event] = {}
        """Devices whose requests wait until this event is set, by id: a slow device."""
        self.requests = 0
        """Reads and writes asked for, counted on arrival: answered, failed or held."""
        self.reads = 0
        self.closed = False

    async def read(self, device: DeviceSpec) -> Sample:
        self.reads += 1
        await self._arrive(device)
        stored = self.values[device.device_id]
        return {point.name: stored.get(point.name, 0) for point in device.points}

    async def write(self, device: DeviceSpec, point: Point, value: float) -> None:
        await self._arrive(device)
        self.writes.append(Write(device.device_id, point.name, value))
        self.values[device.device_id][point.name] = value

    def close(self) -> None:
        self.closed = True

    async def _arrive(self, device: DeviceSpec) -> None:
        """Count the request, wait while the device is held, then fail if told to."""
        self.requests += 1
        held = self.held.get(device.device_id)
        if held is not None:
            await held.wait()
        error = self.failing.get(device.device_id)
        if error is not None:
            raise error
