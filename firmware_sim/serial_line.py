"""A simulated device's end of a serial line, paced at the line's baud rate.

A pseudo-terminal moves bytes as fast as the kernel copies them, whatever baud rate
is set on it. A device on a real 9600 baud line takes about 1.04 ms per byte (start
bit, 8 data bits, stop bit), so a simulator that answered at pty speed would make
every timing measured against it (a poll cycle, a turnaround) a fiction. ``SerialLine``
makes the simulator's side honest:

- ``write`` sends no faster than the line: a frame of n bytes takes n character times,
  and writes queue behind each other as on the wire;
- ``arrived`` tells when bytes read from the other end would have finished arriving,
  had they crossed the line at its rate (the other end is the gateway, which writes at
  pty speed), so a simulated device answers no earlier than a real one could.

RS-485 is half duplex: one transmitter at a time. ``busy_until`` is shared by both
directions, so an answer starts only once the request has crossed the line.

Blocking (``time.sleep``), for simulators that run their device in a thread, as the
OSDP readers do; an asyncio simulator calls ``write`` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import termios
import threading
import time
import tty
from typing import Final

__all__ = ["SerialLine", "char_bits"]

_PARITY_BITS: Final = {"N": 0, "E": 1, "O": 1}


def char_bits(bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> int:
    """Bits one character takes on the wire: start bit, data, parity, stop bits."""
    if parity not in _PARITY_BITS:
        raise ValueError(f"parity must be N, E or O, got {parity!r}")
    return 1 + bytesize + _PARITY_BITS[parity] + stopbits


class SerialLine:
    """One end of a pty opened raw, with the timing of a ``baud`` line.

    ``fd`` is readable with ``os.read`` (or a selector); ``close`` releases it.
    """

    def __init__(self, path: str, baud: int, *, bits: int = 10) -> None:
        if baud <= 0:
            raise ValueError(f"baud must be > 0, got {baud}")
        self.path = path
        self.baud = baud
        self.char_s = bits / baud
        """Seconds one character takes on the wire."""
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd, termios.TCSANOW)
        self._lock = threading.Lock()
        self.busy_until = time.monotonic()
        """When the line is free again: the end of the last frame either way."""
        self.bytes_written = 0
        self.bytes_read = 0

    def wire_time_s(self, nbytes: int) -> float:
        """How long ``nbytes`` take on this line."""
        return nbytes * self.char_s

    def arrived(self, nbytes: int, seen_at: float) -> float:
        """When ``nbytes`` read at ``seen_at`` (monotonic) would have finished arriving.

        They could not start before the line was free, and they take their wire time;
        the line is busy with them until then.
        """
        with self._lock:
            done = max(seen_at, self.busy_until) + self.wire_time_s(nbytes)
            self.busy_until = done
            self.bytes_read += nbytes
        return done

    def read(self, max_bytes: int = 4096) -> bytes:
        """What the other end wrote, as soon as the pty has it (see ``arrived``)."""
        return os.read(self.fd, max_bytes)

    def write(self, data: bytes, *, not_before: float = 0.0) -> None:
        """Send ``data`` at the line's rate, starting at ``not_before`` at the earliest.

        Returns when the last byte has left, as a UART's transmit-complete would.
        Bytes go out in chunks of about a millisecond, so the other end sees them
        trickle in as it would on the wire.
        """
        with self._lock:
            start = max(time.monotonic(), self.busy_until, not_before)
            self.busy_until = start + self.wire_time_s(len(data))
            self.bytes_written += len(data)
        chunk = max(1, int(0.001 / self.char_s))
        for offset in range(0, len(data), chunk):
            due = start + self.wire_time_s(offset + chunk)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            os.write(self.fd, data[offset : offset + chunk])

    def close(self) -> None:
        os.close(self.fd)
