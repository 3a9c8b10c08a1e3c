"""Every reader on one OSDP line, as a streaming bus: what they report, pushed as samples.

One panel thread per line (``panel``) polls the readers; its events cross to the
event loop with ``call_soon_threadsafe`` and become samples there (``reader``), so
the sink is only ever called on the loop. Without the port the bus says so once,
marks every reader offline and tries again with backoff, so an adapter plugged in
later is picked up.

Errors, by kind: a port that fails (a USB adapter pulled) is ``DeviceDisconnected``
for every reader, and the port is opened again with backoff; a reader that stops
answering is ``DeviceTimeout``; one that answers with another secure-channel key, or
offers none while the gateway has a key for it, ``SecureChannelError``
(``secure_channel``), whose message names the reader and the key's place in the
config. Each is reported once per change.

A report that cannot be handled on the loop is skipped, logged without its contents
(a card number or PIN must not reach a log), and counted in ``failures``, as the panel
thread's own failures are.
"""

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import serial

from edge.addresses import DeviceAddress
from edge.backoff import Backoff, pause
from edge.drivers.contract import DeviceSpec, StreamingBus, StreamSink
from edge.drivers.osdp.line import LineStats, SerialChannel, open_port
from edge.drivers.osdp.panel import (
    CMD_BUZZER,
    CMD_LED,
    CardRead,
    KeyPress,
    Offline,
    Online,
    Panel,
    PanelEvent,
    ReaderSetup,
    Status,
)
from edge.drivers.osdp.reader import ReaderState, Values
from edge.drivers.osdp.settings import OsdpDriverSettings, Secret
from edge.errors import (
    DeviceDisconnected,
    DeviceError,
    DeviceTimeout,
    DeviceUnreachable,
    PointError,
)
from schemas.profile import Point
from schemas.protocols.osdp import OsdpAddress

log = logging.getLogger(__name__)

TICK_S: Final = 0.1
"""How often grant windows are checked (a denial is reported this late at most)."""
LED_COLOURS: Final = range(0, 8)
BEEP_TENTHS: Final = 2
"""A beep and the pause after it, in the 100 ms units of osdp_BUZ."""
MAX_BEEPS: Final = 15


class SecureChannelError(DeviceError):
    """The reader's secure channel cannot come up: another key, or none offered."""

    kind = "secure_channel"


class OsdpBus(StreamingBus):
    """The readers of one line (``address.bus``), polled by one panel thread."""

    def __init__(
        self,
        address: DeviceAddress,
        devices: Sequence[DeviceSpec],
        settings: OsdpDriverSettings,
        *,
        card_key: Secret,
        timeout_s: float = 1.0,
    ) -> None:
        self.name = address.bus
        self._line = address
        self._settings = settings
        self._timeout_s = timeout_s
        self._devices = {device.address.unit: device for device in devices}
        self._readers = {device.address.unit: ReaderState(device, card_key) for device in devices}
        self._panel: Panel | None = None
        self._sink: StreamSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.events = 0
        """Reports the readers sent (cards, keys, status), for tests and metrics."""
        self._handle_failures = 0
        self._closed_panel_failures = 0

    @property
    def failures(self) -> int:
        """Times a reader's report could not be handled, or the panel thread's loop
        failed, since the bus was made (each skipped and counted; the first of each
        logged), for metrics."""
        panel = self._panel.failures if self._panel is not None else 0
        return self._handle_failures + self._closed_panel_failures + panel

    def stats(self) -> LineStats | None:
        """What crossed the line since the bus (re)opened it, or since ``reset_stats``;
        None while the port is not open."""
        return self._panel.stats() if self._panel is not None else None

    def reset_stats(self) -> None:
        """Start the line's statistics again (a benchmark's warm-up is over)."""
        if self._panel is not None:
            self._panel.reset_stats()

    async def run(self, sink: StreamSink, stop: asyncio.Event) -> None:
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        backoff = Backoff(initial_s=2.0, cap_s=60.0)
        reported = False
        while not stop.is_set():
            try:
                panel = self._open()
            except serial.SerialException as exc:
                if not reported:
                    log.error("OSDP %s: cannot open the port: %s", self.name, exc)
                    reported = True
                self._all_offline(DeviceUnreachable(self.name, f"cannot open the port: {exc}"))
                await pause(stop, backoff.next_delay())
                continue
            reported = False
            backoff.reset()
            self._panel = panel
            panel.start()
            try:
                await self._tick(stop, panel)
            finally:
                self._panel = None
                self._closed_panel_failures += panel.failures
                await asyncio.to_thread(panel.stop)
            if panel.lost is not None:
                log.error("OSDP %s: the port failed: %s; opening it again", self.name, panel.lost)
                self._all_offline(DeviceDisconnected(self.name, f"the port failed: {panel.lost}"))
                await pause(stop, backoff.next_delay())

    def _open(self) -> Panel:
        """The line's panel on a freshly opened port; raises serial.SerialException, and
        closes the port when the panel cannot be made."""
        setups = [
            ReaderSetup(unit, device.device_id, self._settings.scbk.get(device.device_id))
            for unit, device in sorted(self._devices.items())
        ]
        port = open_port(self._line.path, self._line.baud)
        try:
            return Panel(
                SerialChannel(port), setups, self._from_thread, baud=self._line.baud, name=self.name
            )
        except BaseException:
            port.close()
            raise

    async def _tick(self, stop: asyncio.Event, panel: Panel) -> None:
        """Decide grant windows that ran out, and re-deliver the inputs each interval,
        until ``stop`` or until the panel lost its port."""
        resent: dict[int, float] = {}
        while not stop.is_set() and panel.lost is None:
            await pause(stop, TICK_S)
            now = time.monotonic()
            for unit, reader in self._readers.items():
                self._deliver(unit, reader.due(now))
                interval = reader.device.interval_s
                if (
                    now - resent.get(unit, 0.0) >= interval
                    and self._panel is not None
                    and self._panel.is_online(unit)
                ):
                    resent[unit] = now
                    self._deliver(unit, [reader.inputs_now()])

    def _from_thread(self, event: PanelEvent) -> None:
        """The panel's callback, on its thread: hand the event to the loop."""
        if self._loop is not None:
            ts = datetime.now(UTC)
            with contextlib.suppress(RuntimeError):  # the loop closed while stopping
                self._loop.call_soon_threadsafe(self._handle, event, ts, time.monotonic())

    def _handle(self, event: PanelEvent, ts: datetime, now: float) -> None:
        """A report, on the loop. Whatever goes wrong is logged with the reader and the
        kind of report, never its contents (a card, a PIN), and counted."""
        try:
            self._apply(event, ts, now)
        except Exception as exc:  # the loop's edge for the panel's reports
            self._handle_failures += 1
            if self._handle_failures == 1:
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                log.error(
                    "OSDP %s: a %s from the reader at address %d was skipped: %s at %s:%s "
                    "(further failures are only counted)",
                    self.name,
                    type(event).__name__,
                    event.address,
                    type(exc).__name__,
                    frame.filename,
                    frame.lineno,
                )

    def _apply(self, event: PanelEvent, ts: datetime, now: float) -> None:
        sink, device = self._sink, self._devices.get(event.address)
        if sink is None or device is None:
            return
        reader = self._readers[event.address]
        if isinstance(event, Online):
            sink.online(device.device_id, ts)
        elif isinstance(event, Offline):
            error = self._offline_error(device, event)
            log.warning("OSDP %s: %s", self.name, error)
            sink.offline(device.device_id, error, ts)
            reader.offline()  # its inputs are unknown until it reports them again
        else:
            self.events += 1
            if isinstance(event, CardRead):
                samples = reader.card(event, now)
            elif isinstance(event, KeyPress):
                samples = reader.keys(event, now)
            else:
                assert isinstance(event, Status)
                samples = reader.status(event, now)
            self._deliver(event.address, samples, ts)

    def _offline_error(self, device: DeviceSpec, event: Offline) -> DeviceError:
        where = str(device.address)
        reader = f"reader {device.device_id} (OSDP address {event.address} on {self.name})"
        key = f"drivers.osdp.scbk.{device.device_id}"
        if event.reason == "key_mismatch":
            return SecureChannelError(
                where,
                f"{reader} answered the secure-channel challenge with another key: the key "
                f"in {key} is not the one set in the reader",
            )
        if event.reason == "no_secure_channel":
            return SecureChannelError(
                where,
                f"{reader} offers no secure channel, yet {key} is set: enable it on the "
                "reader, or remove the key and set drivers.osdp.allow_plain",
            )
        return DeviceTimeout(where, f"{reader} stopped answering polls")

    def _deliver(self, unit: int, samples: list[Values], ts: datetime | None = None) -> None:
        device = self._devices[unit]
        if self._sink is None:
            return
        for values in samples:
            if values:
                self._sink.sample(device.device_id, values, ts or datetime.now(UTC))

    def _all_offline(self, error: DeviceError) -> None:
        for reader in self._readers.values():
            reader.offline()
        if self._sink is not None:
            ts = datetime.now(UTC)
            for device in self._devices.values():
                self._sink.offline(device.device_id, error, ts)

    async def write(self, device: DeviceSpec, point: Point, value: float) -> None:
        """Set the reader's LED colour (0 off, 1 red, 2 green, 3 amber, 4 blue, ...) or
        sound its buzzer ``value`` times (0 silences it).

        Raises PointError for another point or a value out of range, DeviceUnreachable
        when the reader is offline, DeviceTimeout when the panel does not take it.
        """
        command = _command(device, point, value)
        panel = self._panel
        where = str(device.address)
        if panel is None or not panel.is_online(device.address.unit):
            raise DeviceUnreachable(where, f"reader {device.device_id} is offline")
        try:
            accepted = await asyncio.wait_for(
                asyncio.wrap_future(panel.submit(device.address.unit, command)),
                timeout=self._timeout_s,
            )
        except TimeoutError:
            raise DeviceTimeout(where, f"the panel did not take the {point.name} command") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise PointError(device.profile.id, point.name, f"libosdp refused it: {exc}") from None
        if not accepted:
            raise DeviceUnreachable(
                where, f"reader {device.device_id} did not take the {point.name} command"
            )


def _command(device: DeviceSpec, point: Point, value: float) -> dict[str, object]:
    reply = point.address_as(OsdpAddress).reply
    number = int(value)
    if number != value:
        raise PointError(device.profile.id, point.name, f"{value:g} is not a whole number")
    if reply == "led":
        if number not in LED_COLOURS:
            raise PointError(device.profile.id, point.name, "an LED colour is 0-7")
        return {
            "command": CMD_LED,
            "reader": 0,
            "led_number": 0,
            "control_code": 1,
            "on_count": 1,
            "off_count": 0,
            "on_color": number,
            "off_color": number,
            "timer_count": 0,
            "temporary": False,
        }
    if reply == "buzzer":
        if not 0 <= number <= MAX_BEEPS:
            raise PointError(device.profile.id, point.name, f"beeps are 0-{MAX_BEEPS}")
        return {
            "command": CMD_BUZZER,
            "reader": 0,
            "control_code": 2 if number else 1,
            "on_count": BEEP_TENTHS if number else 0,
            "off_count": BEEP_TENTHS if number else 0,
            "rep_count": number,
        }
    raise PointError(device.profile.id, point.name, f"a {reply} point cannot be written")
