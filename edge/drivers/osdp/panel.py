"""The control panel of one OSDP line: libosdp driven from one thread, and what it hears.

libosdp's ``ControlPanel`` must be refreshed often (it keeps its own timers: a poll
per reader every 50 ms, 200 ms for a reply) and is not thread-safe. Its Python
wrapper sleeps 20 ms between refreshes, which on a line of 16 readers adds about
0.3 s to every poll cycle; here one thread per line waits on the port with
``select`` (``TICK_S`` at most, for the timers) and refreshes as soon as a reply
arrives, so the cycle is what the wire allows.

The thread owns the panel: others reach it only through ``submit`` (a queue the
thread drains) and see it through ``on_event``, called on the thread with typed
events.

The channel hands libosdp only whole replies with a good CRC (``line``), so a reply
lost to noise, cut short or corrupted is, to libosdp, a missed reply: it sends the
command again. In clear the reader answers that and stays online. On a secure channel
libosdp 3.2.9 cannot recover it: the reader (libosdp's peripheral device, as in the
simulator) finds the repeated command's MAC off the chain it moved on to, answers
osdp_NAK, and the panel drops the reader about a second after the loss. A reader that
answered nothing at all is dropped after libosdp's retries, about 8 s. libosdp would
keep either offline for 300 s; the panel restarts a reader itself: one that was
online at once, reporting it offline only if it is not back within ``LOST_GRACE_S``
(a lost reply costs a new session, not an offline report), and after that with
backoff (``edge.backoff.Backoff`` from ``RETRY_FIRST_S`` to ``RETRY_CAP_S``).

libosdp says nothing of why a secure channel failed. The line's channel sees every
reply, so a reader that answered the challenge (osdp_CCRYPT) but went offline
instead of online has a key other than the panel's: ``Offline.reason`` says
``key_mismatch``; a reader whose capabilities offer no secure channel while it has a
key here, ``no_secure_channel``; one that never answered, ``silent``.
"""

import contextlib
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

import osdp_sys

from edge.backoff import Backoff
from edge.drivers.osdp.frames import PdId
from edge.drivers.osdp.line import LineStats, SerialChannel
from edge.drivers.osdp.settings import Secret

log = logging.getLogger(__name__)

TICK_S: Final = 0.002
"""Longest wait between refreshes when nothing arrives: libosdp's timers (50 ms poll
interval, 200 ms reply timeout) need no finer, and an idle line costs little."""
RETRY_FIRST_S: Final = 1.0
"""A reader that went offline is restarted within this long at first (jittered, from
half of it), the delay doubling with each failure up to ``RETRY_CAP_S``."""
RETRY_CAP_S: Final = 30.0
LOST_GRACE_S: Final = 2.0
"""A reader that was online and stops answering is restarted at once, and reported
offline only if it is not back within this long: a reply lost to noise on a secure
channel ends libosdp's session (see the module's docstring), and a restart brings it
back in well under a second."""
STOP_TIMEOUT_S: Final = 5.0
"""How long ``stop`` waits for the thread (it never blocks longer than a refresh)."""
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
    """The reader at ``address`` answers polls, over a secure channel or in clear."""

    address: int
    secure: bool


@dataclass(frozen=True, slots=True)
class Offline:
    """The reader at ``address`` went offline, and why (reported once per change)."""

    address: int
    reason: OfflineReason


@dataclass(frozen=True, slots=True)
class CardRead:
    """A card presented (osdp_RAW). ``data`` is the card number: never in a repr, so a
    log line that shows the event does not show it."""

    address: int
    card_format: int
    bits: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyPress:
    """Keys pressed since the last poll (osdp_KEYPAD); ``digits`` (a PIN, or part of
    one) are never in a repr."""

    address: int
    digits: bytes = field(repr=False)


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

    pd_id: PdId
    capabilities: Mapping[str, tuple[int, int]]
    """(compliance level, number of items) by capability, for those it declares."""


class _ControlPanel(Protocol):
    """The part of ``osdp_sys.ControlPanel`` the panel uses (the module has no types)."""

    def set_event_callback(self, callback: Callable[[int, dict[str, object]], int]) -> None: ...
    def refresh(self) -> None: ...
    def submit_command(self, index: int, command: Mapping[str, object]) -> bool: ...
    def get_pd_id(self, index: int) -> Mapping[str, int] | None: ...
    def check_capability(self, index: int, code: int) -> tuple[int, int]: ...
    def sc_status(self) -> int: ...
    def is_pd_enabled(self, index: int) -> bool: ...
    def enable_pd(self, index: int) -> object: ...
    def disable_pd(self, index: int) -> object: ...


def _retry_backoff() -> Backoff:
    return Backoff(initial_s=RETRY_FIRST_S, cap_s=RETRY_CAP_S)


@dataclass
class _State:
    setup: ReaderSetup
    online: bool = False
    reported: OfflineReason | Literal["online", ""] = ""
    retry_at: float | None = None
    backoff: Backoff = field(default_factory=_retry_backoff)
    restarting: bool = False
    lost_at: float | None = None
    """When an online reader stopped answering, while it is given ``LOST_GRACE_S``."""


class Panel:
    """libosdp's control panel for the readers of one line, on a thread of its own.

    From the moment it is made the panel owns the channel (and its port) and a wake-up
    pipe; ``stop`` closes them, whether or not the thread started, and so does the
    thread when it ends on a failed port. Raises OSError when no pipe can be made, and
    ValueError or TypeError when libosdp refuses the readers' setup; the channel is
    closed then.
    """

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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_lock = threading.Lock()
        """Guards the wake-up pipe's descriptors: once closed they are -1, so a late
        ``submit`` or ``stop`` never writes into a descriptor the OS gave to another."""
        self._wake_read, self._wake_write = -1, -1
        self.failures = 0
        """Times the thread's loop failed and went on (the first is logged with its
        traceback, the others only counted), for metrics."""
        try:
            self._wake_read, self._wake_write = os.pipe()
            os.set_blocking(self._wake_write, False)
            self._cp = self._make(baud)
        except BaseException:
            self._close()
            raise

    def _make(self, baud: int) -> _ControlPanel:
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
        cp: _ControlPanel = osdp_sys.ControlPanel(infos)
        cp.set_event_callback(self._event)
        return cp

    def start(self) -> None:
        """Start polling the readers, on a thread of the panel's own."""
        self._thread = threading.Thread(target=self._run, name=f"osdp {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the port and the wake-up pipe; idempotent, and safe
        from any thread but the panel's own. Blocks up to ``STOP_TIMEOUT_S``."""
        self._stop.set()
        self._wake(b"x")
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():  # it closes what it uses on its way out
                log.error(
                    "OSDP %s: the panel thread did not stop within %g s", self.name, STOP_TIMEOUT_S
                )
                return
        self._close()

    def submit(self, address: int, command: dict[str, object]) -> "Future[bool]":
        """Queue ``command`` for the reader at ``address``; the future says whether
        libosdp took it (False: the reader is offline, its queue is full, or the panel
        stopped). A future cancelled before the thread reaches it is never sent."""
        done: Future[bool] = Future()
        self._commands.put((address, command, done))
        if not self._wake(b"c") and done.set_running_or_notify_cancel():
            done.set_result(False)
        return done

    def _wake(self, why: bytes) -> bool:
        """Cut the thread's wait short; False once the panel is closed."""
        with self._wake_lock:
            if self._wake_write < 0:
                return False
            with contextlib.suppress(BlockingIOError):  # already woken, not yet read
                os.write(self._wake_write, why)
            return True

    def _close(self) -> None:
        """Close the pipe and the channel, once (by ``stop``, or the thread as it ends)."""
        with self._wake_lock:
            fds, (self._wake_read, self._wake_write) = (self._wake_read, self._wake_write), (-1, -1)
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        self._channel.close()

    @property
    def lost(self) -> str | None:
        """Why the port failed, once it has; the thread has ended then."""
        return self._channel.lost

    def is_online(self, address: int) -> bool:
        """Whether the reader at ``address`` is online (any thread; a snapshot)."""
        index = self._index.get(address)
        return index is not None and self._readers[index].online

    def identity(self, address: int) -> ReaderIdentity | None:
        """The reader's PD id and capabilities, once it has been online. libosdp is not
        thread-safe: call it only after ``stop`` (or before ``start``)."""
        index = self._index[address]
        try:
            pd_id = self._cp.get_pd_id(index)
        except ValueError:
            return None
        if not pd_id:
            return None
        capabilities = {}
        for label, code in CAPABILITIES.items():
            try:
                level, items = self._cp.check_capability(index, code)
            except ValueError:
                continue
            if level or items:
                capabilities[label] = (int(level), int(items))
        firmware = int(pd_id["firmware_version"])
        return ReaderIdentity(
            pd_id=PdId(
                vendor_code=int(pd_id["vendor_code"]) & 0xFFFFFF,
                model=int(pd_id["model"]),
                version=int(pd_id["version"]),
                serial_number=int(pd_id["serial_number"]) & 0xFFFFFFFF,
                firmware=(firmware >> 16 & 0xFF, firmware >> 8 & 0xFF, firmware & 0xFF),
            ),
            capabilities=capabilities,
        )

    def stats(self) -> LineStats:
        """What crossed the line since the panel was made, or since ``reset_stats``."""
        return self._channel.stats()

    def reset_stats(self) -> None:
        """Start the line's statistics again (a benchmark's warm-up is over)."""
        self._channel.reset_stats()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._close()

    def _loop(self) -> None:
        cp = self._cp
        fd = self._channel.fileno()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd, self._wake_read], [], [], TICK_S)
                if self._wake_read in ready:
                    os.read(self._wake_read, 512)
                self._drain_commands()
                cp.refresh()
                if self._channel.lost is not None:
                    return  # the bus sees ``lost`` and opens the port again
                self._supervise(time.monotonic())
            except Exception:  # the line's outer loop: log once, count, keep polling
                self.failures += 1
                if self.failures == 1:
                    log.exception(
                        "OSDP %s: the panel failed; going on (counted after this)", self.name
                    )
                self._stop.wait(0.1)

    def _drain_commands(self) -> None:
        while True:
            try:
                address, command, done = self._commands.get_nowait()
            except queue.Empty:
                return
            if not done.set_running_or_notify_cancel():
                continue  # the caller gave up waiting: the reader must not get it late
            index = self._index.get(address)
            if index is None or not self._readers[index].online:
                done.set_result(False)
                continue
            try:
                accepted = bool(self._cp.submit_command(index, command))
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
            state.backoff.reset()
            state.retry_at = None
            state.lost_at = None
            secure = bool(self._cp.sc_status() >> self._index[address] & 1)
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
        now = time.monotonic()
        reason = self._why_offline(state)
        if reason == "silent" and state.reported == "online" and state.lost_at is None:
            state.lost_at = now  # a new session at once; news only if it does not come
            state.retry_at = now
            return
        delay = KEY_RETRY_S if reason == "key_mismatch" else state.backoff.next_delay()
        state.retry_at = now + delay
        self._report_offline(state, reason)

    def _report_offline(self, state: _State, reason: OfflineReason) -> None:
        state.lost_at = None
        if state.reported != reason:
            state.reported = reason
            self._on_event(Offline(state.setup.address, reason))

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
            level, _ = self._cp.check_capability(
                self._index[address], osdp_sys.CAP_COMMUNICATION_SECURITY
            )
        except ValueError:
            return False
        return bool(level)

    def _supervise(self, now: float) -> None:
        """Restart readers whose retry is due: disable, then enable (back to INIT); report
        those lost that did not come back within ``LOST_GRACE_S``."""
        for index, state in enumerate(self._readers):
            if state.lost_at is not None and now - state.lost_at >= LOST_GRACE_S:
                self._report_offline(state, "silent")
            if state.restarting:
                if not self._cp.is_pd_enabled(index):
                    self._channel.forget(state.setup.address)
                    self._cp.enable_pd(index)
                    state.restarting = False
            elif state.retry_at is not None and now >= state.retry_at and not state.online:
                state.retry_at = None
                state.restarting = True
                self._cp.disable_pd(index)


def _bytes(value: object) -> bytes:
    return bytes(value) if isinstance(value, bytes | bytearray) else b""


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default
