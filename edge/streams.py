"""Runs a streaming bus: what its driver pushes becomes readings and events.

The driver calls the ``StreamSink`` methods as things arrive (a notification, an
advertisement, a serial frame, an OSDP reply); this module is that sink. It does for
pushed data what the poller does for polled data: normalise per device, report
``device.online``/``device.offline`` as the driver says the device comes and goes,
count faults by kind, and keep the loop alive whatever one record does.

Events go to the spool at once. Readings wait up to ``LINGER_S`` to be spooled
together: a bus of hundreds of bands delivers a few readings at a time, hundreds of
times a second, and one spool transaction each cost more CPU than all the decoding.
"""

import asyncio
import logging
from datetime import datetime

from edge.backoff import Backoff, pause
from edge.devices import AgentDevice, Sink
from edge.drivers.contract import Sample, StreamingBus
from edge.errors import DeviceError
from schemas.wire import Reading

log = logging.getLogger(__name__)

LINGER_S = 0.1
"""Longest a streamed reading waits in memory to join the spool with others."""
LINGER_MAX = 1000
"""Readings that are spooled at once, without waiting for the linger to end."""


class StreamPump:
    """The sink of one streaming bus and the task that runs it."""

    def __init__(self, bus: StreamingBus, devices: list[AgentDevice], sink: Sink) -> None:
        self.bus = bus
        self.devices = devices
        self._by_id = {device.device_id: device for device in devices}
        self._sink = sink
        self.unknown_records = 0
        """Records from a device the gateway is not configured for (ignored, counted)."""
        self.restarts = 0
        """Times the bus's task ended with an unforeseen error and was started again."""
        self._readings: list[Reading] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Run the bus until ``stop`` is set; an unforeseen error restarts it, later.

        A driver reconnects on its own; this is the boundary for what it did not
        foresee, so one driver's bug does not end the agent's other buses.
        """
        flusher = asyncio.create_task(self._flush_every(stop), name=f"{self.bus.name} readings")
        try:
            await self._run_bus(stop)
        finally:
            flusher.cancel()
            self._flush()

    async def _flush_every(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(LINGER_S)
            self._flush()

    def _flush(self) -> None:
        if self._readings:
            readings, self._readings = self._readings, []
            self._sink(readings, [])

    async def _run_bus(self, stop: asyncio.Event) -> None:
        backoff = Backoff(initial_s=1.0, cap_s=30.0)
        while not stop.is_set():
            try:
                await self.bus.run(self, stop)
            except Exception as exc:
                self.restarts += 1
                log.error(
                    "%s: the bus stopped with an unexpected error %r; restarting it",
                    self.bus.name,
                    exc,
                    exc_info=exc if self.restarts == 1 else None,
                )
                await pause(stop, backoff.next_delay())

    def _device(self, device_id: str) -> AgentDevice | None:
        device = self._by_id.get(device_id)
        if device is None:
            self.unknown_records += 1
            if self.unknown_records == 1:
                log.warning("%s: a record from unknown device %r ignored", self.bus.name, device_id)
        return device

    def sample(self, device_id: str, values: Sample, ts: datetime) -> None:
        device = self._device(device_id)
        if device is None:
            return
        device.polls += 1
        try:
            events = device.heard(ts)
            readings, fired = device.normaliser.normalise(values, ts)
            device.answered += 1
            if events or fired:
                self._sink([], events + fired)
            self._readings += readings
            if len(self._readings) >= LINGER_MAX:
                self._flush()
        except Exception as exc:
            # One record must not end the bus's task (and with it the agent).
            device.faults["internal"] += 1
            log.error(
                "%s: a record could not be handled: %r; going on",
                device_id,
                exc,
                exc_info=exc if device.faults["internal"] == 1 else None,
            )

    def online(self, device_id: str, ts: datetime) -> None:
        device = self._device(device_id)
        if device is not None:
            self._sink([], device.heard(ts))

    def offline(self, device_id: str, error: DeviceError, ts: datetime) -> None:
        device = self._device(device_id)
        if device is not None:
            device.faults[error.kind] += 1
            self._sink([], device.lost(f"{error.kind}: {error.problem}", ts))

    def fault(self, device_id: str, error: DeviceError) -> None:
        device = self._device(device_id)
        if device is not None:
            device.faults[error.kind] += 1
            if device.faults[error.kind] == 1:
                log.warning("%s: %s", device_id, error)
