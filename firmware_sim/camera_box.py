"""The VA-SR400 video analytics box: metadata records on a serial line.

The box watches up to four cameras and reports only what its analytics found, never
an image: a people count, and intrusion, loitering, line-crossing, tamper and
video-loss events. Each is one ASCII record framed like NMEA 0183::

    $<TYPE>,<field>,...*<checksum>\\r\\n

the checksum being the XOR of every byte between ``$`` and ``*``, as two upper-case
hex digits. Records (the box's datasheet, ``device_profiles/camera/
anju-camera-serial.yaml`` documents the same)::

    $PCNT,<channel>,<zone>,<count>                people in the counting zone now
    $EVT,<channel>,INTRUSION|LOITER,<zone>        once per detection
    $EVT,<channel>,TAMPER|VLOSS,                  the whole channel
    $LINE,<channel>,<line>,<in|out>,<count>       people across a line since the last

The box sends the people count on every change and at least every
``COUNT_INTERVAL_S`` while :meth:`CameraBox.start` runs its timer. Every record goes
out through a :class:`~firmware_sim.serial_line.SerialLine`, so it takes its wire time
at the line's baud rate, and a method that sends returns once the record has left.
Methods are blocking and safe to call from several threads (an asyncio caller uses
``asyncio.to_thread``).

Faults, for the gateway's frame reader: :meth:`CameraBox.noise` (bytes that are no
record), :meth:`CameraBox.truncate_next` (the next record cut short, as when the box
resets mid-line) and :meth:`CameraBox.corrupt_next` (the next record with a wrong
checksum).

As a program (``python -m firmware_sim.camera_box --help``, or ``anju sim camera``),
the box on a pseudo-terminal, with a scenario or a steady rate of records.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import reduce
from operator import xor
from types import FrameType, TracebackType
from typing import Final, Literal, Self

from firmware_sim import SimServerError
from firmware_sim.serial_line import SerialLine

__all__ = [
    "COUNT_INTERVAL_S",
    "SCENARIOS",
    "CameraBox",
    "Direction",
    "encode_record",
    "main",
    "xor8",
]

COUNT_INTERVAL_S: Final = 5.0
"""The longest the box stays silent: a people count at least this often."""
SCENARIOS: Final = ("night_intrusion", "tailgating")

Direction = Literal["in", "out"]

_STOP_TIMEOUT_S: Final = 5.0
_RATE_MIX: Final[dict[str, int]] = {
    "PCNT": 60,
    "LINE": 30,
    "INTRUSION": 4,
    "LOITER": 4,
    "TAMPER": 1,
}
"""What a busy box sends, in parts per hundred: mostly counts and crossings."""
_VLOSS_PER_TAMPER: Final = 0.5
REPEAT_HOLD_S: Final = 10.0
"""The box holds back a repeat of one event code in one zone for this long."""
_NOISE_ALPHABET: Final = bytes(b for b in range(256) if b != ord("$"))
_WATCH_S: Final = 0.1


def xor8(payload: bytes) -> int:
    """The XOR of every byte of ``payload``: the record checksum."""
    return reduce(xor, payload, 0)


def encode_record(record: str, *fields: str | int) -> bytes:
    """One whole record, ``$`` to ``\\r\\n``, with its checksum."""
    body = ",".join([record, *(str(field) for field in fields)]).encode("ascii")
    return b"$%s*%02X\r\n" % (body, xor8(body))


class CameraBox:
    """One analytics box writing records to one end of a serial line.

    ``count_channel`` and ``count_zone`` are the box's one counting zone (the people
    count). ``seed`` makes noise bytes and the rate mode's mix repeatable.
    :attr:`records_sent` counts whole records sent, :attr:`frames_damaged` the records
    sent truncated or with a wrong checksum. :meth:`close` closes the line.
    """

    def __init__(
        self,
        line: SerialLine,
        *,
        count_channel: int = 1,
        count_zone: str = "Z1",
        count_interval_s: float = COUNT_INTERVAL_S,
        seed: int = 0,
    ) -> None:
        if count_interval_s <= 0:
            raise ValueError(f"count_interval_s must be > 0, got {count_interval_s}")
        self.line = line
        self.count_channel = count_channel
        self.count_zone = count_zone
        self.count_interval_s = count_interval_s
        self.people_count = 0
        self.records_sent = 0
        self.frames_damaged = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._count_sent_at = time.monotonic()
        self._truncate_next = False
        self._corrupt_next = False
        self._timer: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Send the people count now and then at least every ``count_interval_s``."""
        if self._timer is not None:
            raise RuntimeError("the camera box is already started")
        self._timer = threading.Thread(target=self._count_timer, name="camera box count")
        self._timer.start()

    def close(self) -> None:
        """Stop the timer and any rate run or scenario, and close the line; idempotent.

        A record being written is let finish first (for up to a few seconds).
        """
        if self._stop.is_set():
            return
        self._stop.set()
        if self._timer is not None:
            self._timer.join(_STOP_TIMEOUT_S)
        locked = self._lock.acquire(timeout=_STOP_TIMEOUT_S)
        try:
            self.line.close()
        finally:
            if locked:
                self._lock.release()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _count_timer(self) -> None:
        self.people(self.people_count, force=True)
        while not self._stop.wait(self._count_sent_at + self.count_interval_s - time.monotonic()):
            if time.monotonic() >= self._count_sent_at + self.count_interval_s:
                self.people(self.people_count, force=True)

    # -- records ----------------------------------------------------------------------

    def people(self, count: int, *, force: bool = False) -> bytes | None:
        """Set the people count; sends it if it changed (or ``force``), else None."""
        if count < 0:
            raise ValueError(f"a people count is >= 0, got {count}")
        if count == self.people_count and not force:
            return None
        self.people_count = count
        self._count_sent_at = time.monotonic()
        return self._send("PCNT", self.count_channel, self.count_zone, count)

    def intrude(self, channel: int, zone: str) -> bytes:
        """Someone entered ``zone`` (an intrusion area set on the box)."""
        return self._send("EVT", channel, "INTRUSION", zone)

    def loiter(self, channel: int, zone: str) -> bytes:
        """Someone stayed in ``zone`` past the box's loitering time."""
        return self._send("EVT", channel, "LOITER", zone)

    def cross(self, channel: int, line: str, direction: Direction, count: int = 1) -> bytes:
        """``count`` people crossed ``line`` the way ``direction`` says (``in``: inward)."""
        if direction not in ("in", "out"):
            raise ValueError(f"direction is 'in' or 'out', got {direction!r}")
        if count < 1:
            raise ValueError(f"a crossing is of at least one person, got {count}")
        return self._send("LINE", channel, line, direction, count)

    def tamper(self, channel: int) -> bytes:
        """The camera was covered, moved or defocused."""
        return self._send("EVT", channel, "TAMPER", "")

    def video_loss(self, channel: int) -> bytes:
        """The camera's video signal is gone."""
        return self._send("EVT", channel, "VLOSS", "")

    def _send(self, record: str, *fields: str | int) -> bytes:
        """Write one record (damaged if a fault was armed); returns the bytes written.

        Raises SimServerError once the box is closed.
        """
        frame = encode_record(record, *fields)
        with self._lock:
            self._check_open()
            if self._truncate_next:
                frame = frame[: len(frame) // 2]
            elif self._corrupt_next:
                checksum = frame[-4:-2]
                frame = frame[:-4] + b"%02X" % (int(checksum, 16) ^ 0xFF) + frame[-2:]
            damaged = self._truncate_next or self._corrupt_next
            self._truncate_next = self._corrupt_next = False
            self.line.write(frame)
            if damaged:
                self.frames_damaged += 1
            else:
                self.records_sent += 1
        return frame

    def _check_open(self) -> None:
        if self._stop.is_set():
            raise SimServerError(f"the camera box on {self.line.path} is closed")

    # -- faults -----------------------------------------------------------------------

    def noise(self, nbytes: int) -> bytes:
        """Write ``nbytes`` random bytes that are no record; returns them.

        They never hold ``$``, so the record after them arrives whole: a reader that
        resynchronises on ``$`` loses the noise and nothing else.
        """
        if nbytes < 1:
            raise ValueError(f"noise is at least one byte, got {nbytes}")
        noise = bytes(self._random.choice(_NOISE_ALPHABET) for _ in range(nbytes))
        with self._lock:
            self._check_open()
            self.line.write(noise)
        return noise

    def truncate_next(self) -> None:
        """Cut the next record after half its bytes: no checksum, no terminator."""
        with self._lock:
            self._truncate_next = True

    def corrupt_next(self) -> None:
        """Send the next record with its checksum inverted (every bit flipped)."""
        with self._lock:
            self._corrupt_next = True

    # -- scenarios --------------------------------------------------------------------

    def night_intrusion(self, channel: int = 1, zone: str = "Z1", dwell_s: float = 10.0) -> None:
        """Someone climbs into ``zone``, stays ``dwell_s`` (loitering) and leaves.

        The count rises to one, the box reports the intrusion, then loitering once
        the person has stayed, and the count falls back. Whether it is night is the
        gateway's and the cloud's call (armed hours, closed hours), by their clocks.
        """
        self.people(self.people_count + 1)
        self.intrude(channel, zone)
        if self._stop.wait(dwell_s):
            return
        self.loiter(channel, zone)
        self.people(max(0, self.people_count - 1))

    def tailgating(self, channel: int = 1, line: str = "L1") -> None:
        """Two people walk in across ``line`` together: one record of two, inward.

        The card read that let one of them in is the door reader's to send.
        """
        self.cross(channel, line, "in", 2)

    def run_rate(self, rate: float, duration_s: float | None = None) -> int:
        """Send ``rate`` records a second of a busy box's mix until closed or ``duration_s``.

        Counts change, people cross lines L1 and L2 both ways on channels 1 and 2, an
        intrusion, loitering, tamper or video loss now and then (a repeat within
        ``REPEAT_HOLD_S`` is held back, as the box does, and a count goes instead).
        Records are due on a fixed schedule; past the line's capacity they go out as
        fast as it allows. Returns the records this run sent.
        """
        if rate <= 0:
            raise ValueError(f"rate must be > 0 records a second, got {rate}")
        kinds, weights = list(_RATE_MIX), list(_RATE_MIX.values())
        events_sent_at: dict[tuple[str, int, str], float] = {}
        started = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            due = started + sent / rate
            if duration_s is not None and due >= started + duration_s:
                break
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            try:
                self._send_one_of(self._random.choices(kinds, weights)[0], events_sent_at)
            except SimServerError:
                break  # closed while this record was due
            sent += 1
        return sent

    def _send_one_of(self, kind: str, events_sent_at: dict[tuple[str, int, str], float]) -> None:
        """Send a record of ``kind``; an event the box would hold back becomes a count."""
        pick = self._random
        channel = pick.choice((1, 2))
        event: tuple[str, int, str] | None = None
        if kind in ("INTRUSION", "LOITER"):
            event = (kind, channel, pick.choice(("Z1", "Z2")))
        elif kind == "TAMPER":
            event = ("VLOSS" if pick.random() < _VLOSS_PER_TAMPER else kind, channel, "")
        if event is not None:
            now = time.monotonic()
            if now - events_sent_at.get(event, -math.inf) >= REPEAT_HOLD_S:
                events_sent_at[event] = now
                self._send("EVT", channel, event[0], event[2])
                return
            kind = "PCNT"
        if kind == "PCNT":
            self.people(max(0, self.people_count + pick.choice((-1, 1))), force=True)
        else:
            direction: Direction = pick.choice(("in", "out"))
            self.cross(channel, pick.choice(("L1", "L2")), direction, pick.choice((1, 1, 1, 2)))


# -- the program ----------------------------------------------------------------------


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A VA-SR400 camera analytics box on a serial line (a pseudo-terminal "
        "end): people counts every 5 s and on change, events of a scenario, or a steady "
        "rate of records. Paced at --baud. Serves until Ctrl-C or --duration.",
        epilog="Example: socat -d -d pty,raw,echo=0,link=/tmp/camA pty,raw,echo=0,"
        "link=/tmp/camB & then: anju sim camera --path /tmp/camA --scenario tailgating; "
        "a gateway reads serial:///tmp/camB?baud=115200.",
    )
    parser.add_argument("--path", required=True, help="The serial line (a pty end) to write.")
    parser.add_argument("--baud", type=int, default=115200, help="Line rate (default 115200).")
    parser.add_argument("--scenario", choices=SCENARIOS, help="Play this scenario once at start.")
    parser.add_argument("--rate", type=float, help="Send N records a second of a realistic mix.")
    parser.add_argument("--duration", type=float, help="Stop after this many seconds.")
    parser.add_argument("--seed", type=int, default=0, help="Randomness of noise and the mix.")
    return parser


def main(
    argv: Sequence[str] | None = None, *, prog: str = "python -m firmware_sim.camera_box"
) -> int:
    """Run the box until SIGTERM, SIGINT or ``--duration``; 0 on a clean stop, 2 on a bad option.

    Prints ``ready path=PATH baud=N`` once the line is open and ``sent N records``
    when it stops.
    """
    parser = _parser(prog)
    options = parser.parse_args(argv)
    if options.rate is not None and options.rate <= 0:
        parser.error(f"--rate must be > 0, got {options.rate}")
    if options.duration is not None and options.duration < 0:
        parser.error(f"--duration must be >= 0, got {options.duration}")
    try:
        line = SerialLine(options.path, options.baud)
    except (OSError, ValueError) as error:
        parser.error(f"cannot open {options.path} at {options.baud} baud: {error}")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    box = CameraBox(line, seed=options.seed)
    workers: list[threading.Thread] = []
    if options.scenario is not None:
        workers.append(_worker(box, options.scenario, getattr(box, options.scenario)))
    if options.rate is not None:
        workers.append(_worker(box, "rate", lambda: box.run_rate(options.rate)))
    deadline = None if options.duration is None else time.monotonic() + options.duration
    try:
        with box:
            print(f"ready path={options.path} baud={options.baud}", flush=True)
            for worker in workers:
                worker.start()
            # Short waits, so the signal handler's flag is seen at once.
            while not stop.wait(_WATCH_S):
                if deadline is not None and time.monotonic() >= deadline:
                    break
    finally:
        for worker in workers:
            worker.join(_STOP_TIMEOUT_S)
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
    print(f"sent {box.records_sent} records", flush=True)
    return 0


def _worker(box: CameraBox, name: str, run: Callable[[], object]) -> threading.Thread:
    """A thread running ``run`` that ends quietly when the box closes under it."""

    def target() -> None:
        try:
            run()
        except SimServerError:
            if not box.closed:
                raise

    return threading.Thread(target=target, name=f"camera box {name}")


if __name__ == "__main__":
    sys.exit(main())
