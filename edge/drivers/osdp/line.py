"""The serial port of one OSDP line, as libosdp's channel, with the line's statistics.

libosdp reads and writes through a ``Channel`` object; this one is a pyserial port in
non-blocking mode, and it watches every byte go by (``edge.drivers.osdp.frames``) to
count polls and replies per reader, time each reader's poll cycle, and remember which
readers answered the secure-channel challenge.

libosdp is handed whole replies with a good CRC, one per read, and nothing else. Its
panel (3.2.9) takes a reply split over several reads for none, and a reply that fails
its check for a reader gone wrong: offline at once. Noise, a reply cut short or one
with a bad CRC is dropped here and counted (``LineStats.bad_bytes``,
``LineStats.dropped_packets``), so libosdp sees a missed reply, which it sends again.
The line is half duplex: once the panel sends a command, what is left of the last
reply is over, so a partial packet (a cut reply, or noise such as ``53 00 00 04``
announcing 1024 bytes) is dropped then and never holds the next reply back.

Everything here runs on the line's panel thread; ``stats`` and ``reset_stats`` may be
called from any thread.
"""

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import osdp
import serial

from edge.drivers.osdp.frames import CMD_POLL, REPLY_CCRYPT, Frame, FrameReader

CYCLE_WINDOW: Final = 64
"""How many of a reader's latest commands its mean poll cycle is taken over."""
CHANNEL_ID: Final = 1
"""libosdp serialises the readers that share a channel id; 0 would mean "not shared"."""


@dataclass(frozen=True, slots=True)
class ReaderStats:
    """One reader's share of the line since the statistics were last reset."""

    address: int
    commands: int
    """Commands the panel sent it (polls, LED, buzzer, status, handshakes)."""
    polls: int
    """Of those, osdp_POLL."""
    replies: int
    cycle_s: float | None
    """Mean time between successive commands to this reader over its latest
    ``CYCLE_WINDOW``: the poll cycle it sees; None before two commands."""


@dataclass(frozen=True, slots=True)
class LineStats:
    """What crossed one OSDP line since the statistics were last reset."""

    bytes_out: int
    """Bytes the gateway sent."""
    bytes_in: int
    """Bytes the readers sent."""
    bad_bytes: int
    """Bytes of the readers' that were not part of a well-formed packet (noise, cut or
    corrupted replies)."""
    dropped_packets: int
    """Packets from the readers' side that libosdp was not handed: a failed CRC, a
    reply cut short or late, noise that looked like a header."""
    readers: dict[int, ReaderStats]
    """By PD address."""

    @property
    def cycle_s(self) -> float | None:
        """The longest of the readers' mean poll cycles: the line's poll cycle."""
        cycles = [reader.cycle_s for reader in self.readers.values() if reader.cycle_s]
        return max(cycles) if cycles else None


class _Counters:
    def __init__(self) -> None:
        self.bytes_out = 0
        self.bytes_in = 0
        self.dropped = 0
        """Whole packets not handed to libosdp: replies it had not read when the panel
        sent again, and packets on the readers' side that are no reply."""
        self.commands: dict[int, int] = defaultdict(int)
        self.polls: dict[int, int] = defaultdict(int)
        self.replies: dict[int, int] = defaultdict(int)
        self.sent_at: dict[int, deque[float]] = defaultdict(lambda: deque(maxlen=CYCLE_WINDOW))


class SerialChannel(osdp.Channel):  # type: ignore[misc]
    """A serial port that libosdp reads and writes without ever blocking."""

    def __init__(self, port: serial.Serial, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.id = CHANNEL_ID
        self._port = port
        self._clock = clock
        self._ready: deque[bytes] = deque()
        self._sent = FrameReader()
        self._received = FrameReader()
        self._lock = threading.Lock()
        """Guards the counters and ``_received`` (its counts), read by ``stats``."""
        self._counters = _Counters()
        self.challenged: set[int] = set()
        """Readers that answered osdp_CHLNG with osdp_CCRYPT since last cleared: they
        speak the secure channel, so a handshake that fails after this is a key
        mismatch."""
        self.heard: set[int] = set()
        """Readers that sent any well-formed reply since last cleared."""
        self.lost: str | None = None
        """Why the port failed (a USB adapter unplugged), once it has: the panel stops
        and the bus reopens the port."""

    def fileno(self) -> int:
        """The port's descriptor, for the panel thread's ``select``."""
        return int(self._port.fileno())

    def read(self, max_bytes: int) -> bytes:
        """The next whole reply with a good check, or nothing (see the module's
        docstring); a reply longer than ``max_bytes`` goes over several reads."""
        self._receive()
        if not self._ready:
            return b""
        packet = self._ready.popleft()
        if len(packet) > max_bytes:
            self._ready.appendleft(packet[max_bytes:])
        return packet[:max_bytes]

    def write(self, buf: bytes) -> int:
        """Send a command. What arrived before it, and what is left of the last reply,
        belong to the last turn (half duplex): they are dropped, and counted."""
        self._receive()
        with self._lock:
            self._received.discard()
            self._counters.dropped += len(self._ready)
            self._ready.clear()
        try:
            written = self._port.write(buf) or 0
        except (serial.SerialException, OSError) as exc:
            self.lost = str(exc)
            return 0
        frames = self._sent.feed(bytes(buf[:written]))
        now = self._clock()
        with self._lock:
            self._counters.bytes_out += written
            for frame in frames:
                self._command(frame, now)
        return int(written)

    def _receive(self) -> None:
        """Take what the port holds: count it, and keep the whole replies for libosdp."""
        try:
            data = bytes(self._port.read(self._port.in_waiting or 1))
        except (serial.SerialException, OSError) as exc:
            self.lost = str(exc)
            return
        if not data:
            return
        with self._lock:
            self._counters.bytes_in += len(data)
            for frame in self._received.feed(data):
                if frame.reply:
                    self._reply(frame)
                    self._ready.append(frame.packet)
                else:  # a command on the readers' side (an echo, or noise): no reply
                    self._counters.dropped += 1

    def flush(self) -> None:
        """Nothing to do: ``write`` drops what is left of a reply, and writes go
        straight to the port (draining it here would block the thread for the
        packet's time)."""

    def _command(self, frame: Frame, now: float) -> None:
        counters = self._counters
        counters.commands[frame.address] += 1
        counters.polls[frame.address] += frame.code == CMD_POLL
        counters.sent_at[frame.address].append(now)

    def _reply(self, frame: Frame) -> None:
        self._counters.replies[frame.address] += 1
        self.heard.add(frame.address)
        if frame.code == REPLY_CCRYPT:
            self.challenged.add(frame.address)

    def forget(self, address: int) -> None:
        """Clear what was learnt of ``address``'s handshake (before it is tried again)."""
        with self._lock:
            self.challenged.discard(address)
            self.heard.discard(address)

    def stats(self) -> LineStats:
        """What crossed the line since the channel was made or ``reset_stats``."""
        with self._lock:
            counters = self._counters
            addresses = sorted({*counters.commands, *counters.replies})
            return LineStats(
                bytes_out=counters.bytes_out,
                bytes_in=counters.bytes_in,
                bad_bytes=self._received.bad_bytes,
                dropped_packets=self._received.dropped + counters.dropped,
                readers={
                    address: ReaderStats(
                        address=address,
                        commands=counters.commands[address],
                        polls=counters.polls[address],
                        replies=counters.replies[address],
                        cycle_s=_mean_gap(counters.sent_at[address]),
                    )
                    for address in addresses
                },
            )

    def reset_stats(self) -> None:
        """Start counting again (a benchmark's warm-up is over)."""
        with self._lock:
            self._counters = _Counters()
            self._received.bad_bytes = 0
            self._received.dropped = 0

    def close(self) -> None:
        """Close the port; idempotent."""
        self._port.close()


def _mean_gap(times: deque[float]) -> float | None:
    if len(times) < 2:
        return None
    return (times[-1] - times[0]) / (len(times) - 1)


def open_port(path: str, baud: int) -> serial.Serial:
    """The line's port, 8N1 at ``baud``, non-blocking; raises serial.SerialException."""
    return serial.Serial(path, baud, timeout=0, write_timeout=0, exclusive=True)
