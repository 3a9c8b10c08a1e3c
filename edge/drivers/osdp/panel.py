"""The control panel of one OSDP line: libosdp driven from one thread, and what it hears.

libosdp's ``ControlPanel`` must be refreshed often (it keeps its own timers: a poll
per reader every 50 ms, 200 ms for a reply) and is not thread-safe. Its Python
wrapper sleeps 20 ms between refreshes, which on a line of 16 readers adds about
0.3 s to every poll cycle; here one thread per line waits on the port with
``select`` (``TICK_S`` at most, for the timers) and refreshes as soon as a reply
arrives, so the cycle is what the wire allows.

The thread owns the panel: others reach it only through ``submit`` (a queue the
thread drains) and see it through ``on_event``, called on the thread with typed
events. libosdp keeps a reader that went offline offline for 300 s; the panel
restarts it sooner itself, with backoff (``RETRY_FIRST_S`` doubling to
``RETRY_CAP_S``), so a reader back on the line is polled again within seconds.

libosdp says nothing of why a secure channel failed. The line's channel sees every
reply, so a reader that answered the challenge (osdp_CCRYPT) but went offline
instead of online has a key other than the panel's: ``Offline.reason`` says
``key_mismatch``; a reader whose capabilities offer no secure channel while it has a
key here, ``no_secure_channel``; one that never answered, ``silent``.
"""

import logging
import os
import queue
import random
import select
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Final, Literal

import osdp_sys

from edge.drivers.osdp.line import LineStats, SerialChannel
from edge.drivers.osdp.settings import Secret

log = logging.getLogger(__name__)

TICK_S: Final = 0.002
"""Longest wait between refreshes when nothing arrives: libosdp's timers (50 ms poll
interval, 200 ms reply timeout) need no finer, and an idle line costs little."""
RETRY_FIRST_S: Final = 1.0
RETRY_CAP_S: Final = 30.0
KEY_RETRY_S: Final = 60.0
"""A reader with a key mismatch is tried again this often (a key fixed on the reader
side is picked up), not faster: the mismatch does not go away by itself."""
CAPABILITIES: Final = {
    "inputs": osdp_sys.CAP_CONTACT_STATUS_MONITORING,
    "outputs": osdp_sys.CAP_OUTPUT_CONTROL,
    "leds": osdp_sys.CAP_READER_LED_CONTROL,
    "buzzer": osdp_sys.CAP_READER_AUDIBLE_OUTPUT,
    "text": osdp_sys.CAP_READER_TEXT_OUTPUT,
    "secure channel": osdp_sys.CAP_COMMUNICATION_SECURITY,
    "readers": osdp_sys.CAP_READERS,
}
_EVENT_CARD: Final = osdp_sys.EVENT_CARDREAD
_EVENT_KEY: Final = osdp_sys.EVENT_KEYPRESS
_EVENT_STATUS: Final = osdp_sys.EVENT_STATUS
_EVENT_NOTIFICATION: Final = osdp_sys.EVENT_NOTIFICATION
_NOTIFY_PD: Final = osdp_sys.EVENT_NOTIFICATION_PD_STATUS
STATUS_INPUT: Final[int] = osdp_sys.STATUS_REPORT_INPUT
STATUS_OUTPUT: Final[int] = osdp_sys.STATUS_REPORT_OUTPUT
STATUS_LOCAL: Final[int] = osdp_sys.STATUS_REPORT_LOCAL
CMD_LED: Final[int] = osdp_sys.CMD_LED
CMD_BUZZER: Final[int] = osdp_sys.CMD_BUZZER

OfflineReason = Literal["silent", "key_mismatch", "no_secure_channel"]


@dataclass(frozen=True, slots=True)
class ReaderSetup:
    """One reader the panel polls."""

    address: int
    name: str
    scbk: Secret | None = None
    """With a key the panel insists on a secure channel; without, it talks in clear."""


@dataclass(frozen=True, slots=True)
class Online:
    address: int
    secure: bool


@dataclass(frozen=True, slots=True)
class Offline:
    address: int
    reason: OfflineReason


@dataclass(frozen=True, slots=True)
class CardRead:
    address: int
    card_format: int
    bits: int
    data: bytes


@dataclass(frozen=True, slots=True)
class KeyPress:
    address: int
    digits: bytes


@dataclass(frozen=True, slots=True)
class Status:
    """A status report: ``kind`` is STATUS_INPUT, STATUS_OUTPUT or STATUS_LOCAL."""

    address: int
    kind: int
    report: bytes


PanelEvent = Online | Offline | CardRead | KeyPress | Status


@dataclass(frozen=True, slots=True)
class ReaderIdentity:
    """What a reader says of itself (osdp_PDID) and what it can do (osdp_PDCAP)."""

    vendor_code: int
    model: int
    version: int
    serial_number: int
    firmware: str
    capabilities: Mapping[str, tuple[int, int]]
    """(compliance level, number of items) by capability, for those it declares."""


@dataclass
class _State:
    setup: ReaderSetup
    online: bool = False
    reported: OfflineReason | Literal["online", ""] = ""
    retry_at: float | None = None
    retry_s: float = RETRY_FIRST_S
    restarting: bool = False


class Panel:
    """libosdp's control panel for the readers of one line, on a thread of its own."""

    def __init__(
        self,
        channel: SerialChannel,
        readers: Sequence[ReaderSetup],
        on_event: Callable[[PanelEvent], None],
        *,
        baud: int,
        name: str,
    ) -> None:
        self.name = name
        self._channel = channel
        self._readers = [_State(setup) for setup in readers]
        self._index = {setup.address: index for index, setup in enumerate(readers)}
        self._on_event = on_event
        self._commands: queue.SimpleQueue[tuple[int, dict[str, object], Future[bool]]] = (
            queue.SimpleQueue()
        )
        self._wake_read, self._wake_write = os.pipe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cp = self._make(baud)

    def _make(self, baud: int) -> object:
        osdp_sys.set_loglevel(0)  # the panel reports through logging, once per change
        infos = []
        for state in self._readers:
            setup = state.setup
            flags = osdp_sys.FLAG_ENABLE_NOTIFICATION
            if setup.scbk is not None:
                flags |= osdp_sys.FLAG_ENFORCE_SECURE
            infos.append(
                {
                    "name": setup.name[:15],
                    "address": setup.address,
                    "flags": flags,
                    "scbk": setup.scbk.reveal() if setup.scbk is not None else None,
                    "channel": self._channel,
                    "baud_rate": baud,
                }
            )
        cp = osdp_sys.ControlPanel(infos)
        cp.set_event_callback(self._event)
        return cp

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"osdp {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the port; idempotent."""
        self._stop.set()
        os.write(self._wake_write, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._channel.close()
        for fd in (self._wake_read, self._wake_write):
            try:
                os.close(fd)
            except OSError:
                continue

    def submit(self, address: int, command: dict[str, object]) -> "Future[bool]":
        """Queue ``command`` for the reader at ``address``; the future says whether
        libosdp took it (False: the reader is offline or its queue is full)."""
        done: Future[bool] = Future()
        self._commands.put((address, command, done))
        try:
            os.write(self._wake_write, b"c")
        except OSError:
            done.set_result(False)
        return done

    @property
    def lost(self) -> str | None:
        """Why the port failed, once it has; the thread has ended then."""
        return self._channel.lost

    def is_online(self, address: int) -> bool:
        index = self._index.get(address)
        return index is not None and self._readers[index].online

    def identity(self, address: int) -> ReaderIdentity | None:
        """The reader's PD id and capabilities, once it has been online; call on the
        panel's thread or after it stopped."""
        index = self._index[address]
        try:
            pd_id = self._cp.get_pd_id(index)  # type: ignore[attr-defined]
        except ValueError:
            return None
        if not pd_id:
            return None
        capabilities = {}
        for label, code in CAPABILITIES.items():
            try:
                level, items = self._cp.check_capability(index, code)  # type: ignore[attr-defined]
            except ValueError:
                continue
            if level or items:
                capabilities[label] = (int(level), int(items))
        firmware = int(pd_id["firmware_version"]) & 0xFFFFFF
        return ReaderIdentity(
            vendor_code=int(pd_id["vendor_code"]) & 0xFFFFFF,
            model=int(pd_id["model"]),
            version=int(pd_id["version"]),
            serial_number=int(pd_id["serial_number"]) & 0xFFFFFFFF,
            firmware=f"{firmware >> 16}.{firmware >> 8 & 0xFF}.{firmware & 0xFF}",
            capabilities=capabilities,
        )

    def stats(self) -> LineStats:
        return self._channel.stats()

    def reset_stats(self) -> None:
        self._channel.reset_stats()

    def _run(self) -> None:
        cp = self._cp
        fd = self._channel.fileno()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd, self._wake_read], [], [], TICK_S)
                if self._wake_read in ready:
                    os.read(self._wake_read, 512)
                self._drain_commands()
                cp.refresh()  # type: ignore[attr-defined]
                if self._channel.lost is not None:
                    return  # the bus sees ``lost`` and opens the port again
                self._supervise(time.monotonic())
            except Exception:  # the line's outer loop: log, count on, keep polling
                log.exception("OSDP %s: the panel failed; going on", self.name)
                self._stop.wait(0.1)

    def _drain_commands(self) -> None:
        while True:
            try:
                address, command, done = self._commands.get_nowait()
            except queue.Empty:
                return
            index = self._index.get(address)
            if index is None or not self._readers[index].online:
                done.set_result(False)
                continue
            try:
                accepted = bool(self._cp.submit_command(index, command))  # type: ignore[attr-defined]
            except (ValueError, TypeError, KeyError) as exc:
                done.set_exception(exc)
                continue
            done.set_result(accepted)

    def _event(self, index: int, event: dict[str, object]) -> int:
        """libosdp's event callback, on the panel's thread inside ``refresh``."""
        state = self._readers[index]
        address = state.setup.address
        kind = event.get("event")
        if kind == _EVENT_NOTIFICATION:
            if event.get("type") == _NOTIFY_PD:
                self._pd_status(state, bool(event.get("arg0")))
            return 0
        if kind == _EVENT_CARD:
            data = _bytes(event.get("data"))
            bits = _int(event.get("length"), len(data) * 8)
            self._on_event(CardRead(address, _int(event.get("format"), 0), bits, data))
        elif kind == _EVENT_KEY:
            self._on_event(KeyPress(address, _bytes(event.get("data"))))
        elif kind == _EVENT_STATUS:
            report = _bytes(event.get("report"))
            self._on_event(Status(address, _int(event.get("type"), -1), report))
        return 0

    def _pd_status(self, state: _State, online: bool) -> None:
        address = state.setup.address
        if online:
            state.online = True
            state.retry_s = RETRY_FIRST_S
            state.retry_at = None
            secure = bool(self._cp.sc_status() >> self._index[address] & 1)  # type: ignore[attr-defined]
            if state.reported != "online":
                log.info(
                    "OSDP %s: reader %s (address %d) online, %s",
                    self.name,
                    state.setup.name,
                    address,
                    "secure channel" if secure else "no secure channel",
                )
            state.reported = "online"
            self._channel.forget(address)  # a later loss is not a failed handshake
            self._on_event(Online(address, secure))
            return
        if state.restarting:
            return  # the panel's own restart, not news
        state.online = False
        reason = self._why_offline(state)
        delay = KEY_RETRY_S if reason == "key_mismatch" else state.retry_s
        state.retry_s = min(state.retry_s * 2, RETRY_CAP_S)
        state.retry_at = time.monotonic() + delay * random.uniform(0.8, 1.2)
        if state.reported != reason:
            state.reported = reason
            self._on_event(Offline(address, reason))

    def _why_offline(self, state: _State) -> OfflineReason:
        address = state.setup.address
        if state.setup.scbk is None:
            return "silent"
        if address in self._channel.challenged:
            return "key_mismatch"
        if address in self._channel.heard and not self._offers_secure_channel(address):
            return "no_secure_channel"
        return "silent"

    def _offers_secure_channel(self, address: int) -> bool:
        try:
            level, _ = self._cp.check_capability(  # type: ignore[attr-defined]
                self._index[address], osdp_sys.CAP_COMMUNICATION_SECURITY
            )
        except ValueError:
            return False
        return bool(level)

    def _supervise(self, now: float) -> None:
        """Restart readers whose retry is due: disable, then enable (back to INIT)."""
        for index, state in enumerate(self._readers):
            if state.restarting:
                if not self._cp.is_pd_enabled(index):  # type: ignore[attr-defined]
                    self._channel.forget(state.setup.address)
                    self._cp.enable_pd(index)  # type: ignore[attr-defined]
                    state.restarting = False
            elif state.retry_at is not None and now >= state.retry_at and not state.online:
                state.retry_at = None
                state.restarting = True
                self._cp.disable_pd(index)  # type: ignore[attr-defined]


def _bytes(value: object) -> bytes:
    return bytes(value) if isinstance(value, bytes | bytearray) else b""


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default
