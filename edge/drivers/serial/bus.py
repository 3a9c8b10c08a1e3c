"""One device on one serial port: its frames become samples, its troubles health.

The port is opened at the address's ``baud=``, else the profile's ``serial.baud``,
read as bytes arrive and fed to the profile's ``FrameReader``; each record becomes a
sample of the points it carries, stamped with its receive time. A skipped frame
(noise, a bad checksum, a cut or malformed frame, an unknown record) is a
``sink.fault`` counted under its kind, and the reader picks up again at the next
frame. Once the line has been quiet for ``IDLE_CHARS`` character times the reader's
``expire`` ends a frame that never completed, so a false start holds nothing back.

The device is offline, with the reason, while its port cannot be opened (the OS's
words), once the port is lost (unplugged: a partial frame is counted as truncated,
and the port reopened with backoff until it is back), and while no record has arrived for the
profile's ``heartbeat_s``. It is online again with the first record after any of them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from edge.addresses import DeviceAddress
from edge.backoff import Backoff, pause
from edge.drivers.contract import DeviceSpec, StreamingBus, StreamSink
from edge.drivers.serial.errors import NoWrites, PortLost, PortUnavailable, frame_error
from edge.drivers.serial.framing import FrameFault, FrameReader, Record, reader_for
from edge.drivers.serial.port import SerialPort
from edge.drivers.serial.records import RecordPoints
from edge.errors import DeviceError, DeviceTimeout
from schemas.profile import Point
from schemas.protocols.serial import SerialSettings

log = logging.getLogger(__name__)

REOPEN_FIRST_S = 0.5
"""The first wait before reopening a port; it doubles up to ``REOPEN_MAX_S``."""
REOPEN_MAX_S = 30.0
IDLE_CHARS = 4
"""Character times of quiet after which a pending frame will not be completed."""
IDLE_MIN_S = 0.05
"""The least quiet that counts: a USB adapter may hold bytes back up to 16 ms, and the
event loop wakes late on a busy gateway, so a pause shorter than this may be neither."""


def frame_reader(device: DeviceSpec) -> FrameReader:
    """The frame reader of ``device``'s profile (its ``serial`` section is required)."""
    settings = device.profile.settings_as(SerialSettings)
    if settings is None:
        raise ValueError(f"profile {device.profile.id} has no serial section")
    return reader_for(settings)


def line_baud(device: DeviceSpec) -> int:
    """The rate ``device``'s port runs at: the address's ``baud=`` when it gives one,
    else the profile's ``serial.baud``.

    Logs a warning when both are given and differ: the address wins, but a wrong rate
    shows only as noise, so the installer should see which one is in force.
    """
    settings = device.profile.settings_as(SerialSettings)
    if settings is None:
        raise ValueError(f"profile {device.profile.id} has no serial section")
    address = device.address
    if not address.baud_given:
        return settings.baud
    if address.baud != settings.baud:
        log.warning(
            "%s: %s runs at baud=%d as its address says; its profile %s says %d",
            device.device_id,
            address.bus,
            address.baud,
            device.profile.id,
            settings.baud,
        )
    return address.baud


def idle_s(address: DeviceAddress, baud: int) -> float:
    """How long the line at ``address`` must be quiet before a pending frame is given up."""
    bits = 1 + address.bytesize + (address.parity != "N") + address.stopbits
    return max(IDLE_CHARS * bits / baud, IDLE_MIN_S)


class SerialBus(StreamingBus):
    """The one device on a serial port, listened to until stopped."""

    def __init__(self, device: DeviceSpec) -> None:
        self.name = device.address.bus
        self.device = device
        self._reader = frame_reader(device)
        self.baud = line_baud(device)
        """The rate the port is opened at."""
        self._idle_s = idle_s(device.address, self.baud)
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
            port = SerialPort(self.device.address, baud=self.baud)
            try:
                port.open()
            except PortUnavailable as exc:
                self._offline(sink, exc)
                await pause(stop, backoff.next_delay())
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
                await pause(stop, backoff.next_delay())

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
        (or the port's opening), not the last byte: noise is not a device alive. After
        each burst of bytes, once the line has been quiet for ``idle_s``, what the
        reader still holds is expired; records it then gives up are stamped with the
        time their last bytes came.
        """
        loop = asyncio.get_running_loop()
        heard_at = loop.time()
        silent = False
        idle_at: float | None = None  # when the last burst is over; None once expired
        ts = datetime.now(UTC)
        while True:
            silence_at = None if silent else heard_at + self._silence_s
            wake = min((at for at in (idle_at, silence_at) if at is not None), default=None)
            try:
                async with asyncio.timeout_at(wake):
                    data = await port.read()
            except TimeoutError:
                if idle_at is not None and loop.time() >= idle_at:
                    idle_at = None
                    if self._deliver(self._reader.expire(), sink, ts):
                        heard_at, silent = loop.time(), False
                        backoff.reset()
                    continue
                silent = True
                problem = f"no record for {self._silence_s:g} s"
                self._offline(sink, DeviceTimeout(self.name, problem))
                continue
            ts = datetime.now(UTC)
            idle_at = loop.time() + self._idle_s
            self.received += len(data)
            if self._deliver(self._reader.feed(data), sink, ts):
                heard_at, silent = loop.time(), False
                backoff.reset()

    def _deliver(self, items: list[Record | FrameFault], sink: StreamSink, ts: datetime) -> bool:
        """Faults counted and records sampled, stamped ``ts``; whether a record came."""
        heard = False
        for item in items:
            if isinstance(item, FrameFault):
                sink.fault(self.device.device_id, frame_error(self.name, item))
                continue
            self.records += 1
            heard = True
            if self._online is not True:
                self._online = True
                log.info("%s: records arriving on %s", self.device.device_id, self.name)
                sink.online(self.device.device_id, ts)
            values = self._points.sample(item)
            if values:
                sink.sample(self.device.device_id, values, ts)
        return heard

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
