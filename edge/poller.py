"""Polls the devices of one bus, one request at a time, each on its own interval.

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from edge.devices import AgentDevice, Sink
from edge.drivers.contract import PolledBus
from edge.errors import DeviceError

log = logging.getLogger(__name__)

OFFLINE_RETRY_MIN_S = 1.0


@dataclass
class PolledDevice(AgentDevice):
    """A device read on its interval by its bus's poller."""

    next_due: float = 0.0
    misses: int = 0


class BusPoller:
    """The poll loop of one bus."""

    def __init__(
        self,
        bus: PolledBus,
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
            sample = await self.bus.read(device)
        except DeviceError as exc:
            self._miss(device, exc, ts)
            return False
        device.answered += 1
        events = device.heard(ts)
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
            self._sink([], device.lost(f"{kind}: {exc.problem}", ts))
