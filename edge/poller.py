"""Polls the Modbus devices of one bus, one request at a time, each on its own interval.

Each device gets a random phase within its interval, so 200 detectors configured
alike do not all fire in the same millisecond. A device that misses
``offline_after`` polls in a row is reported ``device.offline`` (once), and
``device.online`` when it answers again. An offline device is retried with a
doubling wait (capped), so the bus keeps serving its other devices and one dead
detector costs them at most its timeout per retry.

Nothing one poll does stops the loop: a DeviceError is a miss of the device, and any
other exception (a decoding bug, a sink that fails) is logged with the device, counted
as fault kind ``internal`` and the device polled again on its interval. A device that
answers again after being offline has its normaliser's observation reset (sequence
counters and ``for_s`` hold timers), since it may have rebooted meanwhile.
"""

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edge.addresses import DeviceAddress
from edge.drivers.modbus import ModbusBus
from edge.errors import DeviceError
from edge.modbus_plan import PlannedRead, RawValue, decode_point, plan_reads
from edge.normalise import DeviceNormaliser, polled_points
from schemas.profile import DeviceProfile
from schemas.vocabulary import EventType
from schemas.wire import Event, EventData, Reading

log = logging.getLogger(__name__)

Sink = Callable[[list[Reading], list[Event]], None]

OFFLINE_RETRY_MIN_S = 1.0


async def read_points(bus: ModbusBus, unit: int, plan: list[PlannedRead]) -> dict[str, RawValue]:
    """Run every read of ``plan`` against ``unit`` and decode the points they cover."""
    values: dict[str, RawValue] = {}
    for read in plan:
        block = await bus.read(read, unit)
        for point in read.points:
            values[point.name] = decode_point(read, block, point)
    return values


@dataclass
class PolledDevice:
    """A configured device with its profile, read plan and normaliser."""

    device_id: str
    profile: DeviceProfile
    address: DeviceAddress
    interval_s: float
    normaliser: DeviceNormaliser = field(init=False)
    plan: list[PlannedRead] = field(init=False)
    next_due: float = 0.0
    misses: int = 0
    online: bool = True
    polls: int = 0
    answered: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.normaliser = DeviceNormaliser(self.device_id, self.profile)
        self.normaliser.poll_interval_s = self.interval_s
        self.plan = plan_reads(self.profile, polled_points(self.profile))


class BusPoller:
    """The poll loop of one bus."""

    def __init__(
        self,
        bus: ModbusBus,
        devices: list[PolledDevice],
        sink: Sink,
        *,
        offline_after: int = 3,
        offline_retry_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.devices = devices
        self._sink = sink
        self._offline_after = offline_after
        self._offline_retry_max_s = offline_retry_max_s
        self._clock = clock
        self.overruns = 0
        """Polls that started a whole interval (or more) after they were due."""

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        now = self._clock()
        for device in self.devices:
            device.next_due = now + random.uniform(0, device.interval_s)
        while not stop.is_set():
            device = min(self.devices, key=lambda d: d.next_due)
            delay = device.next_due - self._clock()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                    return
                except TimeoutError:
                    pass
            if self._clock() - device.next_due >= device.interval_s:
                self.overruns += 1
            try:
                answered = await self.poll(device)
            except Exception as exc:
                # The boundary of one poll: whatever went wrong with this device must
                # not end the bus's poll loop (and, through the TaskGroup, the agent).
                self._internal_error(device, exc)
                device.next_due = self._clock() + device.interval_s
                continue
            if answered or device.online:
                device.next_due += device.interval_s
                if device.next_due < self._clock():
                    # Behind schedule: catch up rather than poll in a burst. Counted
                    # as an overrun when the next poll starts, if it starts late.
                    device.next_due = self._clock() + device.interval_s
            else:
                device.next_due = self._clock() + self._retry_delay(device)

    def _internal_error(self, device: PolledDevice, exc: Exception) -> None:
        """Log and count an unexpected exception from one poll (traceback the first time)."""
        device.faults["internal"] += 1
        count = device.faults["internal"]
        log.error(
            "%s: poll failed with an unexpected error %r (%d so far); polling on",
            device.device_id,
            exc,
            count,
            exc_info=exc if count == 1 else None,
        )

    def _retry_delay(self, device: PolledDevice) -> float:
        """How long an offline device waits before it is tried again.

        At least a second (or its interval if longer), doubling with each further miss
        up to ``offline_retry_max_s``: a dead detector then costs the rest of its bus
        one timeout per retry, not one per cycle.
        """
        beyond = device.misses - self._offline_after
        first = max(device.interval_s, OFFLINE_RETRY_MIN_S)
        backoff: float = first * 2.0 ** max(beyond, 0)
        return min(self._offline_retry_max_s, backoff)

    async def poll(self, device: PolledDevice) -> bool:
        """Read one device once and pass what it yields to the sink.

        Returns whether the device answered; a DeviceError is counted, never raised.
        """
        device.polls += 1
        ts = datetime.now(UTC)
        try:
            sample = await read_points(self.bus, device.address.unit, device.plan)
        except DeviceError as exc:
            self._miss(device, exc, ts)
            return False
        device.answered += 1
        events: list[Event] = []
        if not device.online:
            device.online = True
            log.info("%s answers again", device.device_id)
            # It may have rebooted: its record counters may have restarted and a hold
            # timer would count the time it was silent.
            device.normaliser.device_restarted()
            events.append(device.normaliser.event(EventType.DEVICE_ONLINE, ts))
        device.misses = 0
        readings, fired = device.normaliser.normalise(sample, ts)
        self._sink(readings, events + fired)
        return True

    def _miss(self, device: PolledDevice, exc: DeviceError, ts: datetime) -> None:
        kind = exc.kind
        device.faults[kind] += 1
        device.misses += 1
        if device.misses == 1:
            log.warning("%s: %s", device.device_id, exc)
        if device.online and device.misses >= self._offline_after:
            device.online = False
            log.warning("%s offline after %d missed polls", device.device_id, device.misses)
            offline = device.normaliser.event(
                EventType.DEVICE_OFFLINE, ts, EventData(reason=f"{kind}: {exc.problem}")
            )
            self._sink([], [offline])
