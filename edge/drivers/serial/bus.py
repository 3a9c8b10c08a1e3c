"""One device on one serial port: its frames become samples, its troubles health.

The port is read as bytes arrive and fed to the profile's ``FrameReader``; each
record becomes a sample of the points it carries, stamped with its receive time.
A skipped frame (noise, a bad checksum, a cut or malformed frame, an unknown
record) is a ``sink.fault`` counted under its kind, and the reader picks up again at
the next frame.

The device is offline, with the reason, while its port cannot be opened (the OS's
words), once the port is lost (unplugged: a partial frame is counted as truncated,
and the port reopened with backoff until it is back), and while no record has arrived for the
profile's ``heartbeat_s``. It is online again with the first record after any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from edge.backoff import Backoff
from edge.drivers.contract import DeviceSpec, StreamingBus, StreamSink
from edge.drivers.serial.errors import NoWrites, PortLost, PortUnavailable, frame_error
from edge.drivers.serial.framing import FrameFault, FrameReader, reader_for
from edge.drivers.serial.port import SerialPort
from edge.drivers.serial.records import RecordPoints
from edge.errors import DeviceError, DeviceTimeout
from schemas.profile import Point
from schemas.protocols.serial import SerialSettings

log = logging.getLogger(__name__)

REOPEN_FIRST_S = 0.5
"""The first wait before reopening a port; it doubles up to ``REOPEN_MAX_S``."""
REOPEN_MAX_S = 30.0


def frame_reader(device: DeviceSpec) -> FrameReader:
    """The frame reader of ``device``'s profile (its ``serial`` section is required)."""
    settings = device.profile.settings_as(SerialSettings)
    if settings is None:
        raise ValueError(f"profile {device.profile.id} has no serial section")
    return reader_for(settings)


class SerialBus(StreamingBus):
    """The one device on a serial port, listened to until stopped."""

    def __init__(self, device: DeviceSpec) -> None:
        self.name = device.address.bus
        self.device = device
        self._reader = frame_reader(device)
        self._points = RecordPoints(device.profile)
        self._silence_s = device.profile.heartbeat_s
        self._port: SerialPort | None = None
        self._online: bool | None = None
        """None until the device is first heard of or missed."""
        self.opens = 0
        """Times the port was opened."""
        self.received = 0
        """Bytes read from the port."""
        self.records = 0
        """Records decoded (faults not included)."""

    async def run(self, sink: StreamSink, stop: asyncio.Event) -> None:
        backoff = Backoff(initial_s=REOPEN_FIRST_S, cap_s=REOPEN_MAX_S)
        while not stop.is_set():
            port = SerialPort(self.device.address)
            try:
                port.open()
            except PortUnavailable as exc:
                self._offline(sink, exc)
                await _sleep(stop, backoff.next_delay())
                continue
            self._port = port
            self.opens += 1
            try:
                lost = await self._serve(port, sink, stop, backoff)
            finally:
                port.close()
                self._port = None
                dropped = self._reader.reset()
            if lost is not None:
                for fault in dropped:  # the frame the cable was pulled in
                    sink.fault(self.device.device_id, frame_error(self.name, fault))
                self._offline(sink, lost)
                await _sleep(stop, backoff.next_delay())

    async def _serve(
        self, port: SerialPort, sink: StreamSink, stop: asyncio.Event, backoff: Backoff
    ) -> PortLost | None:
        """Listen on an open port until ``stop`` (None) or its loss (returned)."""
        listening = asyncio.create_task(
            self._listen(port, sink, backoff), name=f"{self.name} frames"
        )
        stopping = asyncio.create_task(stop.wait(), name=f"{self.name} stop")
        try:
            await asyncio.wait({listening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listening, stopping):
                task.cancel()
            await asyncio.gather(listening, stopping, return_exceptions=True)
        if listening.cancelled():
            return None
        lost = listening.exception()
        if isinstance(lost, PortLost):
            return lost
        if lost is not None:
            raise lost
        return None

    async def _listen(self, port: SerialPort, sink: StreamSink, backoff: Backoff) -> None:
        """Feed the port's bytes to the reader; a record or fault at a time to ``sink``.

        Raises PortLost when the port goes. Silence is measured from the last record
        (or the port's opening), not the last byte: noise is not a device alive.
        """
        loop = asyncio.get_running_loop()
        heard_at = loop.time()
        silent = False
        while True:
            deadline = None if silent else heard_at + self._silence_s
            try:
                async with asyncio.timeout_at(deadline):
                    data = await port.read()
            except TimeoutError:
                silent = True
                problem = f"no record for {self._silence_s:g} s"
                self._offline(sink, DeviceTimeout(self.name, problem))
                continue
            ts = datetime.now(UTC)
            self.received += len(data)
            for item in self._reader.feed(data):
                if isinstance(item, FrameFault):
                    sink.fault(self.device.device_id, frame_error(self.name, item))
                    continue
                self.records += 1
                heard_at, silent = loop.time(), False
                backoff.reset()
                if self._online is not True:
                    self._online = True
                    log.info("%s: records arriving on %s", self.device.device_id, self.name)
                    sink.online(self.device.device_id, ts)
                values = self._points.sample(item)
                if values:
                    sink.sample(self.device.device_id, values, ts)

    def _offline(self, sink: StreamSink, error: DeviceError) -> None:
        """Tell the core (every time: it counts each); log it once per absence."""
        if self._online is not False:
            log.warning("%s offline: %s", self.device.device_id, error)
        self._online = False
        sink.offline(self.device.device_id, error, datetime.now(UTC))

    async def write(self, device: DeviceSpec, point: Point, value: float) -> None:
        raise NoWrites(
            self.name,
            f"{device.device_id} ({device.profile.id}) takes no writes: the serial driver "
            f"only listens to its records, so {point.name} cannot be set",
        )

    def close(self) -> None:
        if self._port is not None:
            self._port.close()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
