"""A driver whose devices live in memory, for tests of the agent core.

The core (poller, actions, commands, fire linkage) talks to devices only through the
driver contract, so its tests need no Modbus server: this bus keeps each device's raw
point values, records every write, and fails on demand with the errors a real bus
raises. Protocol behaviour (frames, timeouts, reconnects) is tested against real
transports in each driver's own tests.
"""

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
        self.reads = 0
        self.closed = False

    async def read(self, device: DeviceSpec) -> Sample:
        self.reads += 1
        self._fail_if_told(device)
        stored = self.values[device.device_id]
        return {point.name: stored.get(point.name, 0) for point in device.points}

    async def write(self, device: DeviceSpec, point: Point, value: float) -> None:
        self._fail_if_told(device)
        self.writes.append(Write(device.device_id, point.name, value))
        self.values[device.device_id][point.name] = value

    def close(self) -> None:
        self.closed = True

    def _fail_if_told(self, device: DeviceSpec) -> None:
        error = self.failing.get(device.device_id)
        if error is not None:
            raise error
