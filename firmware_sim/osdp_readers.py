"""OSDP door readers on one simulated RS-485 line, paced at the line's baud rate.

A :class:`ReaderLine` serves several readers on one end of a pseudo-terminal pair; a
control panel (the gateway) polls them on the other end. Each reader is a libosdp
peripheral device (the protocol, its sequence numbers and its secure channel are
libosdp's, not ours); this module is the wire and the people around the door:

- the line is half duplex and paced (``serial_line.SerialLine``): a command is handed
  to the readers only once its last byte would have crossed the line, and a reply
  leaves ``turnaround_s`` later at the line's rate, so timings measured against the
  simulator are those of a real 9600 baud line;
- every reader hears every byte from the panel, as on RS-485; libosdp drops packets
  for other addresses. Readers do not hear each other's replies;
- one thread drives the whole line (reads the pty, delivers bytes on time, refreshes
  every reader, writes replies, plays timed scenario steps), however many readers;
- a person at the reader presents a card (osdp_RAW, Wiegand bits) or presses keys
  (osdp_KEYPAD, one reply per key as real readers send them: digits as ASCII, the
  enter key ``#`` as 0x0D and the clear key ``*`` as 0x7F); the door beside it shows
  on three inputs (osdp_ISTATR): input 0 the door contact (active: open), input 1 the
  lock-release sense (active: the door controller released the strike), input 2 the
  request-to-exit button; tamper and power faults go out as osdp_LSTATR;
- a reader reports its inputs whenever they change while a panel polls it, and all
  of them once at the start of each session a panel opens with it (its osdp_ID), so
  the panel learns the door's state; changes made while no panel polls it are in that
  report;
- faults act on the bytes: a reader that stops answering, a reply cut short or with a
  wrong CRC, random bytes on the line. A wrong secure-channel key is a reader built
  with another key than the panel's.

Scenario methods (:meth:`ReaderLine.grant` and its kind) return at once; their steps
play on the line's thread, so an asyncio test can call them without blocking its loop.

Typical use::

    with PtyPair() as pty, ReaderLine(pty.a, 9600, [SimReader(1, scbk=key)]) as line:
        ...  # a control panel opens pty.b at 9600 baud
        line.present_card(1, wiegand26(12, 3456))
        line.commands(1)  # LED and buzzer commands the panel sent to reader 1
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import random
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

import osdp
import osdp_sys

from firmware_sim import SimError
from firmware_sim.serial_line import SerialLine

__all__ = [
    "DOOR_CONTACT",
    "KEYPAD_CODES",
    "LOCK_RELEASE",
    "REQUEST_TO_EXIT",
    "LineStats",
    "ReaderLine",
    "SimReader",
    "UnknownReaderError",
    "wiegand26",
]

_log = logging.getLogger(__name__)

#: Input 0: the door contact, active while the door stands open.
DOOR_CONTACT: Final = 0
#: Input 1: the lock-release sense, active while the door controller releases the strike.
LOCK_RELEASE: Final = 1
#: Input 2: the request-to-exit button inside, active while pressed.
REQUEST_TO_EXIT: Final = 2
#: osdp_KEYPAD's code for each key (OSDP 2.2, 7.12: digits in ASCII, '*' the clear key
#: as ASCII DEL, '#' the enter key as ASCII CR).
KEYPAD_CODES: Final[Mapping[str, int]] = {
    **{digit: ord(digit) for digit in "0123456789"},
    "*": 0x7F,
    "#": 0x0D,
}

_INPUTS: Final = 3
_MAX_ADDRESS: Final = 126
_SCBK_BYTES: Final = 16
_MAX_CARD_BITS: Final = 512  # libosdp carries at most 64 bytes of card data
_VENDOR_CODE: Final = 0x414E4A  # "ANJ"
_MODEL: Final = 0x52
_SERIAL_BASE: Final = 0x52_00_00_00
_FIRMWARE: Final = 0x01_02_00

#: How often an idle line refreshes its readers: libosdp wants a refresh every 50 ms
#: at least, for its own timeouts (a partial packet dropped, a secure session expired).
_IDLE_REFRESH_S: Final = 0.025
_STOP_TIMEOUT_S: Final = 5.0
#: osdp packet: SOM, address, length (2 bytes, little-endian, whole packet), control, ...
_SOM: Final = 0x53
_HEADER_BYTES: Final = 4
_MIN_PACKET: Final = 7
_MAX_PACKET: Final = 1440
_SCB_PRESENT: Final = 0x08
"""Control-byte flag: a security control block follows, its length in its first byte."""
_CMD_ID: Final = 0x61
"""osdp_ID: a panel asks it first in every session, before any secure channel."""

# Grant timeline: how a door controller answers a valid card, as the inputs show it.
_RELEASE_AFTER_S: Final = 0.3
_OPEN_AFTER_S: Final = 0.8
_RELOCK_AFTER_CLOSE_S: Final = 0.2
_TAILGATE_GAP_S: Final = 0.5
# Exit timeline: the button pressed, let go, the door pushed open.
_EXIT_PRESS_S: Final = 0.3
_EXIT_OPEN_AFTER_S: Final = 0.6
#: The card a held-open door is granted to when the caller names none.
HOLD_CARD: Final = 0x2_0000


class UnknownReaderError(SimError, LookupError):
    """No reader at that address on this line; ``address`` names the request."""

    def __init__(self, address: int, served: Sequence[int]) -> None:
        super().__init__(
            f"no OSDP reader at address {address} on this line; "
            f"addresses served: {', '.join(str(a) for a in served) or '(none)'}"
        )
        self.address = address


@dataclass(frozen=True, slots=True)
class SimReader:
    """One reader on the line: its OSDP address, key and identity.

    ``scbk`` is the 16-byte secure-channel base key; None means a reader without
    secure channel (it does not declare the capability, and the panel talks to it in
    clear). ``serial_number`` 0 means ``0x52000000 + address``, so readers on one line
    report different serial numbers to a scan. Raises ValueError for an address
    outside 0-126 or a key that is not 16 bytes.
    """

    address: int
    scbk: bytes | None = field(default=None, repr=False)
    serial_number: int = 0
    vendor_code: int = _VENDOR_CODE
    model: int = _MODEL
    version: int = 1
    firmware_version: int = _FIRMWARE

    def __post_init__(self) -> None:
        if not 0 <= self.address <= _MAX_ADDRESS:
            raise ValueError(f"OSDP address must be 0-{_MAX_ADDRESS}, got {self.address}")
        if self.scbk is not None and len(self.scbk) != _SCBK_BYTES:
            raise ValueError(
                f"reader {self.address}: the secure-channel key must be {_SCBK_BYTES} bytes, "
                f"got {len(self.scbk)}"
            )
        if self.serial_number == 0:
            object.__setattr__(self, "serial_number", _SERIAL_BASE + self.address)


@dataclass(frozen=True, slots=True)
class LineStats:
    """What crossed the line since ``start``.

    A byte is counted once it has crossed: ``bytes_in`` when a command byte from the
    panel has finished arriving (and is handed to the readers), ``bytes_out`` when a
    reply or noise byte has left. The line carries one byte at a time, so between
    ``start`` and any moment the stats are read, at least ``wire_s`` has passed: the
    simulator's pacing contract.

    ``polls`` counts the packets from the panel per address (any command, including
    those to addresses nobody serves); ``replies`` the replies each reader sent
    (silenced ones excluded); ``turnaround_s`` the mean time from the end of a command
    to the start of its reply, ``max_turnaround_s`` the longest, per reader.
    """

    bytes_in: int
    bytes_out: int
    noise_bytes: int
    char_s: float
    polls: Mapping[int, int]
    replies: Mapping[int, int]
    turnaround_s: Mapping[int, float]
    max_turnaround_s: Mapping[int, float]

    @property
    def wire_s(self) -> float:
        """How long the counted bytes took on the line, end to end."""
        return (self.bytes_in + self.bytes_out) * self.char_s


def wiegand26(facility: int, card: int) -> int:
    """The 26 bits of a standard Wiegand card (H10301): even parity, 8-bit facility
    code, 16-bit card number, odd parity, as :meth:`ReaderLine.present_card` takes them.

    Raises ValueError for a facility outside 0-255 or a card outside 0-65535.
    """
    if not 0 <= facility <= 0xFF or not 0 <= card <= 0xFFFF:
        raise ValueError(
            f"Wiegand 26 holds facility 0-255 and card 0-65535, got {facility}, {card}"
        )
    payload = facility << 16 | card
    even = bin(payload >> 12).count("1") % 2
    odd = 1 - bin(payload & 0xFFF).count("1") % 2
    return even << 25 | payload << 1 | odd


class _PacketCounter:
    """Splits the panel's byte stream into OSDP packets, to count commands per address.

    Only the header is read (start of message, address, length); a byte that cannot
    start a packet is skipped, so noise or a mark byte (0xFF) costs nothing.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.packets: dict[int, int] = {}
        self.sessions: set[int] = set()
        """Addresses a panel sent osdp_ID since the caller last cleared this: each is a
        new session, with a panel that knows nothing of the door yet."""

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            start = self._buffer.find(_SOM)
            if start < 0:
                self._buffer.clear()
                return
            del self._buffer[:start]
            if len(self._buffer) < _HEADER_BYTES:
                return
            length = self._buffer[2] | self._buffer[3] << 8
            if not _MIN_PACKET <= length <= _MAX_PACKET:
                del self._buffer[:1]
                continue
            if len(self._buffer) < length:
                return
            address = self._buffer[1] & 0x7F
            self.packets[address] = self.packets.get(address, 0) + 1
            code_at = 5 + (self._buffer[5] if self._buffer[4] & _SCB_PRESENT else 0)
            if code_at < length and self._buffer[code_at] == _CMD_ID:
                self.sessions.add(address)
            del self._buffer[:length]


class _ReaderChannel(osdp.Channel):  # type: ignore[misc]
    """A reader's UART as libosdp sees it: bytes the line delivered, replies it queued."""

    def __init__(self) -> None:
        super().__init__()
        self.rx = bytearray()
        self.tx: list[bytes] = []

    def read(self, max_bytes: int) -> bytes:
        data = bytes(self.rx[:max_bytes])
        del self.rx[:max_bytes]
        return data

    def write(self, buf: bytes) -> int:
        self.tx.append(bytes(buf))
        return len(buf)

    def flush(self) -> None:
        self.rx.clear()


class _Reader:
    """One libosdp peripheral device, the state of its door, and the faults it suffers."""

    def __init__(self, spec: SimReader) -> None:
        self.spec = spec
        self.channel = _ReaderChannel()
        self.inputs = [False] * _INPUTS
        self.tamper = False
        self.power_fault = False
        self.commands: list[dict[str, object]] = []
        self.silent = False
        self.polled = False
        """Whether a panel polls it (libosdp's own view, from the commands it hears)."""
        self.truncate_next = False
        self.corrupt_next = False
        self.replies = 0
        self.turnaround_total_s = 0.0
        self.turnaround_max_s = 0.0
        info = osdp.PDInfo(
            spec.address,
            self.channel,
            scbk=spec.scbk,
            name=f"reader-{spec.address}",
            id=osdp.PdId(
                spec.version,
                spec.model,
                spec.vendor_code,
                spec.serial_number,
                spec.firmware_version,
            ),
        )
        self.device = osdp_sys.PeripheralDevice(info.get(), capabilities=_capabilities(spec).get())
        self.device.set_command_callback(self._on_command)

    def _on_command(self, command: dict[str, object]) -> tuple[int, dict[str, object] | None]:
        """Called by libosdp inside ``refresh``: keep the command; answer status queries."""
        if command.get("command") == osdp.Command.Status:
            return 0, self._status_report(command.get("type"))
        self.commands.append(dict(command))
        return 0, None

    def _status_report(self, kind: object) -> dict[str, object]:
        if kind == osdp.StatusReportType.Input:
            report = bytes(self.inputs)
        elif kind == osdp.StatusReportType.Local:
            report = bytes([self.tamper, self.power_fault])
        else:
            report = bytes(1)
        return {"command": osdp.Command.Status, "type": kind, "report": report}

    def input_event(self) -> dict[str, object]:
        return {
            "event": osdp.Event.Status,
            "type": osdp.StatusReportType.Input,
            "nr_entries": _INPUTS,
            "report": bytes(self.inputs),
        }

    def local_event(self) -> dict[str, object]:
        return {
            "event": osdp.Event.Status,
            "type": osdp.StatusReportType.Local,
            "nr_entries": 2,
            "report": bytes([self.tamper, self.power_fault]),
        }

    def take_reply(self) -> bytes | None:
        """The reply libosdp wrote during the last refresh, with this reader's faults."""
        if not self.channel.tx:
            return None
        reply = b"".join(self.channel.tx)
        self.channel.tx.clear()
        if self.silent:
            return None
        if self.truncate_next:
            self.truncate_next = False
            reply = reply[: max(1, len(reply) // 2)]
        elif self.corrupt_next:
            self.corrupt_next = False
            reply = reply[:-1] + bytes([reply[-1] ^ 0xFF])
        return reply


def _capabilities(spec: SimReader) -> osdp.PDCapabilities:
    """A door reader: two inputs, one output, one LED, a buzzer, raw card data, CRC."""
    caps = [
        (osdp.Capability.ContactStatusMonitoring, 1, _INPUTS),
        (osdp.Capability.OutputControl, 1, 1),
        (osdp.Capability.LEDControl, 1, 1),
        (osdp.Capability.AudibleControl, 1, 1),
        (osdp.Capability.CardDataFormat, 1, 0),
        (osdp.Capability.CheckCharacter, 1, 0),
    ]
    if spec.scbk is not None:
        caps.append((osdp.Capability.CommunicationSecurity, 1, 1))
    return osdp.PDCapabilities(caps)


class ReaderLine:
    """Several OSDP readers on one simulated RS-485 line (one pty end), each a libosdp
    peripheral device, half duplex and paced at ``baud`` (``serial_line.SerialLine``).

    Also a context manager (``with ReaderLine(...) as line:``). Every method that names
    an address raises :class:`UnknownReaderError` if no reader has it, and ValueError
    for an argument the hardware could not carry. Thread-safe: call from any thread.
    """

    def __init__(
        self,
        path: str,
        baud: int,
        readers: Sequence[SimReader],
        *,
        turnaround_s: float = 0.002,
        seed: int | None = None,
    ) -> None:
        if not readers:
            raise ValueError("a reader line needs at least one reader")
        if baud <= 0:
            raise ValueError(f"baud must be > 0, got {baud}")
        if turnaround_s < 0:
            raise ValueError(f"turnaround_s must be >= 0, got {turnaround_s}")
        addresses = [spec.address for spec in readers]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"two readers share an address: {sorted(addresses)}")
        self.path = path
        self.baud = baud
        self._specs = list(readers)
        self._turnaround_s = turnaround_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        """Guards the readers (libosdp is not thread-safe) and the counters."""
        self._readers: dict[int, _Reader] = {}
        self._line: SerialLine | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_lock = threading.Lock()
        self._wake_r, self._wake_w = -1, -1
        self._steps: list[tuple[float, int, Callable[[], None]]] = []
        self._step_ids = itertools.count()
        self._noise: deque[int] = deque()
        self._arriving: deque[tuple[float, bytes]] = deque()
        self._packets = _PacketCounter()
        self._bytes_in = 0
        self._bytes_out = 0
        self._noise_bytes = 0

    # --- life cycle -------------------------------------------------------------

    def start(self) -> None:
        """Open the pty end, build the readers and start serving.

        Raises OSError if the path cannot be opened, SimError if already started.
        """
        if self._thread is not None:
            raise SimError(f"reader line on {self.path} is already running")
        osdp_sys.set_loglevel(0)
        self._readers = {spec.address: _Reader(spec) for spec in self._specs}
        self._line = SerialLine(self.path, self.baud)
        with self._wake_lock:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_w, False)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"osdp line {self.path}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the pty end; idempotent. Pending scenario steps are dropped."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake()
        thread.join(_STOP_TIMEOUT_S)
        if self._line is not None:
            self._line.close()
            self._line = None
        with self._wake_lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r, self._wake_w = -1, -1
        with self._lock:
            self._steps.clear()

    @property
    def running(self) -> bool:
        """Whether the line's thread serves (False once stopped, or if the pty vanished)."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what a person does at a reader -----------------------------------------

    def present_card(self, address: int, number: int, bits: int = 26) -> None:
        """A card read: ``number``'s ``bits`` low bits, sent left-justified MSB first
        (osdp_RAW, Wiegand format), on the reader's next reply to a poll."""
        if not 1 <= bits <= _MAX_CARD_BITS:
            raise ValueError(f"a card carries 1-{_MAX_CARD_BITS} bits, got {bits}")
        if not 0 <= number < 1 << bits:
            raise ValueError(f"card number {number} does not fit in {bits} bits")
        nbytes = (bits + 7) // 8
        data = (number << (nbytes * 8 - bits)).to_bytes(nbytes, "big")
        self._submit(
            address,
            lambda _reader: {
                "event": osdp.Event.CardRead,
                "reader_no": 0,
                "format": osdp.CardFormat.Wiegand,
                "direction": 0,
                "length": bits,
                "data": data,
            },
        )

    def key_in(self, address: int, keys: str) -> None:
        """Keys pressed on the reader's keypad (0-9, ``*`` clear, ``#`` enter), one
        osdp_KEYPAD each (``KEYPAD_CODES``), on the reader's next replies to polls."""
        if not keys or not set(keys) <= KEYPAD_CODES.keys():
            raise ValueError(f"a keypad has keys 0-9, * and #; got {keys!r}")
        with self._lock:
            reader = self._reader(address)
            for key in keys:
                reader.device.submit_event(
                    {
                        "event": osdp.Event.KeyPress,
                        "reader_no": 0,
                        "data": bytes([KEYPAD_CODES[key]]),
                    }
                )

    def set_input(self, address: int, index: int, active: bool) -> None:
        """Input ``index`` (0 door contact, 1 lock-release sense, 2 request to exit) goes
        active or inactive; the reader reports all its inputs (osdp_ISTATR) on its next
        reply to a poll, or, while no panel polls it, once one does."""
        if not 0 <= index < _INPUTS:
            raise ValueError(f"a reader has inputs 0-{_INPUTS - 1}, got {index}")
        with self._lock:
            reader = self._reader(address)
            reader.inputs[index] = active
            if reader.polled:
                reader.device.submit_event(reader.input_event())

    def tamper(self, address: int, active: bool) -> None:
        """The reader's tamper switch opens (active) or closes: an osdp_LSTATR."""

        def change(reader: _Reader) -> dict[str, object]:
            reader.tamper = active
            return reader.local_event()

        self._submit(address, change)

    def power_fault(self, address: int, active: bool) -> None:
        """The reader's supply fails (active) or recovers: an osdp_LSTATR."""

        def change(reader: _Reader) -> dict[str, object]:
            reader.power_fault = active
            return reader.local_event()

        self._submit(address, change)

    # --- scripted scenarios -----------------------------------------------------

    def grant(self, address: int, number: int, *, open_s: float = 2.0) -> None:
        """A valid card: the card read, the strike released 0.3 s later, the door open
        0.8 s after the card, closed ``open_s`` later, the strike relocked 0.2 s after."""
        self._check(address)
        self.present_card(address, number)
        closed = _OPEN_AFTER_S + open_s
        self._plan(
            address,
            [
                (_RELEASE_AFTER_S, LOCK_RELEASE, True),
                (_OPEN_AFTER_S, DOOR_CONTACT, True),
                (closed, DOOR_CONTACT, False),
                (closed + _RELOCK_AFTER_CLOSE_S, LOCK_RELEASE, False),
            ],
        )

    def deny(self, address: int, number: int) -> None:
        """A card the door controller refuses: the card read, and nothing else."""
        self.present_card(address, number)

    def force_door(self, address: int, *, open_s: float = 2.0) -> None:
        """The door opens with no release (forced, a night intrusion), closes ``open_s`` later."""
        self._check(address)
        self._plan(address, [(0.0, DOOR_CONTACT, True), (open_s, DOOR_CONTACT, False)])

    def hold_door(self, address: int, open_s: float, *, number: int = HOLD_CARD) -> None:
        """A grant (card ``number``) after which the door is left open ``open_s``."""
        self.grant(address, number, open_s=open_s)

    def exit(self, address: int, *, open_s: float = 2.0) -> None:
        """Someone leaves: the exit button pressed for 0.3 s, the door pushed open 0.6 s
        after the press (free egress: the strike is not released), closed ``open_s``
        later."""
        self._check(address)
        opened = _EXIT_OPEN_AFTER_S
        self._plan(
            address,
            [
                (0.0, REQUEST_TO_EXIT, True),
                (_EXIT_PRESS_S, REQUEST_TO_EXIT, False),
                (opened, DOOR_CONTACT, True),
                (opened + open_s, DOOR_CONTACT, False),
            ],
        )

    def tailgate(self, address: int, number: int, *, open_s: float = 1.0) -> None:
        """Two people cross on one card read: the card, the strike released, the door
        opens and closes, then opens and closes again before the strike relocks."""
        self._check(address)
        self.present_card(address, number)
        second = _OPEN_AFTER_S + open_s + _TAILGATE_GAP_S
        self._plan(
            address,
            [
                (_RELEASE_AFTER_S, LOCK_RELEASE, True),
                (_OPEN_AFTER_S, DOOR_CONTACT, True),
                (_OPEN_AFTER_S + open_s, DOOR_CONTACT, False),
                (second, DOOR_CONTACT, True),
                (second + open_s, DOOR_CONTACT, False),
                (second + open_s + _RELOCK_AFTER_CLOSE_S, LOCK_RELEASE, False),
            ],
        )

    # --- faults -----------------------------------------------------------------

    def silence(self, address: int, silent: bool = True) -> None:
        """The reader leaves the bus (it neither hears nor answers: offline at the
        panel), or is back on it."""
        with self._lock:
            self._reader(address).silent = silent

    def noise(self, nbytes: int) -> None:
        """``nbytes`` random bytes on the line, sent by the line's thread as soon as the
        line is free (between frames, as interference would land on an idle bus)."""
        if nbytes <= 0:
            raise ValueError(f"nbytes must be > 0, got {nbytes}")
        with self._lock:
            self._noise.append(nbytes)
        self._wake()

    def truncate_next(self, address: int) -> None:
        """The reader's next reply loses its second half."""
        with self._lock:
            self._reader(address).truncate_next = True

    def corrupt_next(self, address: int) -> None:
        """The reader's next reply has its last byte (the CRC's high byte) flipped."""
        with self._lock:
            self._reader(address).corrupt_next = True

    # --- what the control panel did ---------------------------------------------

    def commands(self, address: int) -> list[dict[str, object]]:
        """Commands the panel sent this reader (LED, buzzer, output, text, keyset...), in
        order, as libosdp's dicts (``command`` is an ``osdp.Command``); status queries
        are answered and not listed."""
        with self._lock:
            return [dict(command) for command in self._reader(address).commands]

    def polls(self, address: int) -> int:
        """Packets from the panel addressed to ``address`` so far (any command)."""
        with self._lock:
            self._reader(address)
            return self._packets.packets.get(address, 0)

    @property
    def stats(self) -> LineStats:
        """A snapshot of what crossed the line (see :class:`LineStats`)."""
        with self._lock:
            readers = self._readers.values()
            return LineStats(
                bytes_in=self._bytes_in,
                bytes_out=self._bytes_out,
                noise_bytes=self._noise_bytes,
                char_s=10 / self.baud,
                polls=dict(self._packets.packets),
                replies={r.spec.address: r.replies for r in readers},
                turnaround_s={
                    r.spec.address: r.turnaround_total_s / r.replies for r in readers if r.replies
                },
                max_turnaround_s={r.spec.address: r.turnaround_max_s for r in readers if r.replies},
            )

    # --- internals --------------------------------------------------------------

    def _reader(self, address: int) -> _Reader:
        reader = self._readers.get(address)
        if reader is None:
            if not self._readers:
                raise SimError(f"reader line on {self.path} is not running")
            raise UnknownReaderError(address, sorted(self._readers))
        return reader

    def _check(self, address: int) -> None:
        with self._lock:
            self._reader(address)

    def _submit(self, address: int, make: Callable[[_Reader], dict[str, object]]) -> None:
        """Queue an event on a reader; libosdp sends it on the reader's next poll reply."""
        with self._lock:
            reader = self._reader(address)
            event = make(reader)
            reader.device.submit_event(event)

    def _plan(self, address: int, steps: Sequence[tuple[float, int, bool]]) -> None:
        """Schedule input changes ``(delay_s, input, active)`` on the line's thread."""
        now = time.monotonic()
        with self._lock:
            for delay_s, index, active in steps:
                step: Callable[[], None] = _InputStep(self, address, index, active)
                heapq.heappush(self._steps, (now + delay_s, next(self._step_ids), step))
        self._wake()

    def _wake(self) -> None:
        """Cut the line thread's wait short (new steps, noise, stop)."""
        with self._wake_lock:
            if self._wake_w >= 0:
                with contextlib.suppress(BlockingIOError):  # already woken, not yet read
                    os.write(self._wake_w, b"\0")

    def _serve(self) -> None:
        """The line's thread: one loop for every reader on the line, until stopped or
        until the pty end fails (its other end gone), which is logged."""
        line = self._line
        assert line is not None
        try:
            self._loop(line)
        except OSError as exc:
            _log.error("reader line %s: the pty end failed (%s); stopped serving", self.path, exc)

    def _loop(self, line: SerialLine) -> None:
        next_refresh = time.monotonic()
        while not self._stopping.is_set():
            now = time.monotonic()
            due = [next_refresh]
            if self._arriving:
                due.append(self._arriving[0][0])
            with self._lock:
                if self._steps:
                    due.append(self._steps[0][0])
            ready, _, _ = select.select([line.fd, self._wake_r], [], [], max(0.0, min(due) - now))
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            if line.fd in ready:
                data = line.read()
                if data:
                    self._arriving.append((line.arrived(len(data), time.monotonic()), data))
            if self._deliver(line):
                next_refresh = time.monotonic() + _IDLE_REFRESH_S
            self._run_steps()
            self._send_noise(line)
            if time.monotonic() >= next_refresh:
                self._refresh(line, reply_after=time.monotonic())
                next_refresh = time.monotonic() + _IDLE_REFRESH_S

    def _deliver(self, line: SerialLine) -> bool:
        """Hand the readers every byte that has finished arriving; refresh them if any."""
        now = time.monotonic()
        arrived_at = None
        with self._lock:
            while self._arriving and self._arriving[0][0] <= now:
                arrived_at, data = self._arriving.popleft()
                self._bytes_in += len(data)
                self._packets.feed(data)
                for reader in self._readers.values():
                    if not reader.silent:
                        reader.channel.rx += data
            for address in self._packets.sessions & self._readers.keys():
                self._readers[address].polled = False  # report the inputs to the new panel
            self._packets.sessions.clear()
        if arrived_at is None:
            return False
        self._refresh(line, reply_after=arrived_at)
        return True

    def _refresh(self, line: SerialLine, *, reply_after: float) -> None:
        """Refresh every reader; send what they answer, ``turnaround_s`` after the command."""
        for reader in self._readers.values():
            with self._lock:
                reader.device.refresh()
                polled = bool(reader.device.is_online())
                if polled and not reader.polled:
                    reader.device.submit_event(reader.input_event())
                reader.polled = polled
                reply = reader.take_reply()
            if reply is None:
                continue
            not_before = reply_after + self._turnaround_s
            started = max(time.monotonic(), line.busy_until, not_before)
            line.write(reply, not_before=not_before)
            turnaround = started - reply_after
            with self._lock:
                self._bytes_out += len(reply)
                reader.replies += 1
                reader.turnaround_total_s += turnaround
                reader.turnaround_max_s = max(reader.turnaround_max_s, turnaround)

    def _run_steps(self) -> None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._steps or self._steps[0][0] > now:
                    return
                _, _, step = heapq.heappop(self._steps)
            try:
                step()
            except SimError as exc:
                _log.warning("reader line %s: a scenario step failed: %s", self.path, exc)

    def _send_noise(self, line: SerialLine) -> None:
        while True:
            with self._lock:
                if not self._noise:
                    return
                nbytes = self._noise.popleft()
            line.write(self._rng.randbytes(nbytes))
            with self._lock:
                self._bytes_out += nbytes
                self._noise_bytes += nbytes


@dataclass(frozen=True, slots=True)
class _InputStep:
    """One timed input change of a scenario."""

    line: ReaderLine
    address: int
    index: int
    active: bool

    def __call__(self) -> None:
        self.line.set_input(self.address, self.index, self.active)
