"""The AC-MB210 single-door access controller: door, strike, events, and its register image.

Written from the AC-MB210 register map (Anju reference hardware), not from Anju's
device profile. A card reader, a door contact, an exit button, a fail-secure electric
strike with lock monitoring and a fire-release input; a Modbus RTU slave port.

Input registers (function code 4):

=======  ==========================================================  ==========
addr     meaning                                                     type
=======  ==========================================================  ==========
0        status word: bit0 door open, bit1 locked, bit2 forced       u16
         open (latched until the door closes), bit3 held open,
         bit4 tamper, bit5 reader offline, bit6 mains failed,
         bit7 fire release; bits 8-15 read 0
1        seconds the door has been open (0 closed, saturates)        u16
2-3      serial number                                               u32 (high first)
4        firmware version, major * 256 + minor                       u16
5-15     reserved, read 0 (so one read of 0-22 takes status and      u16
         newest event together, consistent with each other)
16       event counter, +1 per event, wraps 65535 -> 0               u16
17       newest event: code (1 granted, 2 denied, 3 exit button,     u16
         4 remote unlock, 5 forced open, 6 held open, 7 fire
         release; 0 none)
18-19    newest event: card hash (0 without a card)                  u32 (high first)
20-21    newest event: time, Unix seconds UTC                        u32 (high first)
22       newest event: detail (why access was denied, 0 none)        u16
256-383  ring of the last 16 events, 8 registers per slot: the       u16 each
         layout of 17-22 then two reserved words; event n sits in
         slot (n - 1) mod 16
=======  ==========================================================  ==========

Holding registers (function codes 3, 6, 16):

====  =====================================================================  ====
addr  meaning                                                                type
====  =====================================================================  ====
100   held-open limit, seconds, 5-600 (default 30); others refused (exc 3)   u16
101   unlock pulse: write N (1-255) to release the strike N seconds (a       u16
      remote unlock event); reads back the seconds left; 0 relocks at once
====  =====================================================================  ====

The card hash is the first 4 bytes (big-endian) of HMAC-SHA-256 of the card number
under the site key, so the card number never leaves the controller. "Locked" means
the strike is energised *and* the lock monitor confirms the bolt, which it cannot
while the door stands open. The door opening while locked, without a grant, exit
button or remote unlock before it, is forced open. A fire release keeps the strike
released until the fire input is reset, whatever is written to register 101.

Time comes from an injectable clock (Unix seconds), so every timed behaviour (pulse,
held open, event times) is deterministic in tests: the controller brings itself up to
date with the clock at each register access and each action.

Power cycle: the held-open limit and the serial number are non-volatile; the unlock
pulse, the forced-open latch and the event log (counter and ring) are RAM and start
again from zero, so a master sees the event counter go back to 0 after a reboot.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final

from firmware_sim import IllegalDataAddress, IllegalDataValue

__all__ = [
    "DEFAULT_HELD_OPEN_LIMIT_S",
    "DEFAULT_SITE_KEY",
    "MODEL",
    "RING_SLOTS",
    "DenyReason",
    "DoorController",
    "DoorEvent",
    "EventCode",
    "HoldingRegister",
    "InputRegister",
    "Status",
    "card_hash",
]

MODEL: Final = "AC-MB210"
DEFAULT_HELD_OPEN_LIMIT_S: Final = 30
#: The key a controller hashes card numbers under until an installer provisions one.
DEFAULT_SITE_KEY: Final = b"anju-ac-mb210-factory-key"
RING_SLOTS: Final = 16

_HELD_OPEN_MIN_S: Final = 5
_HELD_OPEN_MAX_S: Final = 600
_PULSE_MAX_S: Final = 255
_U16: Final = 0x1_0000
_U16_MAX: Final = 0xFFFF
_U32_MAX: Final = 0xFFFF_FFFF
_SLOT_WORDS: Final = 8


class InputRegister(IntEnum):
    """Input register addresses (function code 4)."""

    STATUS = 0
    OPEN_SECONDS = 1
    SERIAL_HIGH = 2
    SERIAL_LOW = 3
    FIRMWARE = 4
    EVENT_COUNT = 16
    EVENT_CODE = 17
    EVENT_CARD_HIGH = 18
    EVENT_CARD_LOW = 19
    EVENT_TIME_HIGH = 20
    EVENT_TIME_LOW = 21
    EVENT_DETAIL = 22
    RING = 256


class HoldingRegister(IntEnum):
    """Holding register addresses (function codes 3, 6 and 16)."""

    HELD_OPEN_LIMIT = 100
    UNLOCK_PULSE = 101


class Status(IntFlag):
    """Bits of the status word (input register 0)."""

    NORMAL = 0
    DOOR_OPEN = 1 << 0
    LOCKED = 1 << 1
    FORCED_OPEN = 1 << 2
    HELD_OPEN = 1 << 3
    TAMPER = 1 << 4
    READER_OFFLINE = 1 << 5
    MAINS_FAILED = 1 << 6
    FIRE_RELEASE = 1 << 7


class EventCode(IntEnum):
    """Event codes (register 17 and the first word of each ring slot)."""

    NONE = 0
    ACCESS_GRANTED = 1
    ACCESS_DENIED = 2
    EXIT_BUTTON = 3
    REMOTE_UNLOCK = 4
    FORCED_OPEN = 5
    HELD_OPEN = 6
    FIRE_RELEASE = 7


class DenyReason(IntEnum):
    """Why access was denied (register 22)."""

    NONE = 0
    UNKNOWN_CARD = 1
    OUTSIDE_SCHEDULE = 2
    EXPIRED_OR_REVOKED = 3
    ANTI_PASSBACK = 4
    LOCKDOWN = 5


@dataclass(frozen=True, slots=True)
class DoorEvent:
    """One entry of the event log, as the registers report it."""

    code: EventCode
    card_hash: int = 0
    time: int = 0
    detail: DenyReason = DenyReason.NONE

    def words(self) -> list[int]:
        """The six words of registers 17-22 (and of a ring slot before its reserved words)."""
        return [
            int(self.code),
            self.card_hash >> 16,
            self.card_hash & _U16_MAX,
            self.time >> 16,
            self.time & _U16_MAX,
            int(self.detail),
        ]


_NO_EVENT: Final = DoorEvent(EventCode.NONE)


def card_hash(card_id: str, site_key: bytes) -> int:
    """The 32-bit keyed hash of a card number: HMAC-SHA-256, first 4 bytes, big-endian."""
    digest = hmac.new(site_key, card_id.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big")


class DoorController:
    """One AC-MB210 controller: door, strike and event log, and the registers they make.

    Setters raise ``ValueError`` for values the hardware could not hold; register
    writes raise ``IllegalDataAddress`` or ``IllegalDataValue`` as the device answers
    exceptions 2 and 3.
    """

    model: Final = MODEL

    def __init__(
        self,
        *,
        serial_number: int = 21000001,
        firmware: tuple[int, int] = (2, 4),
        site_key: bytes = DEFAULT_SITE_KEY,
        held_open_limit_s: int = DEFAULT_HELD_OPEN_LIMIT_S,
        grant_unlock_s: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a controller with the door closed and locked and an empty event log.

        ``grant_unlock_s`` is how long a granted card or the exit button releases the
        strike; ``clock`` returns Unix seconds (inject one for deterministic tests).
        """
        if not 0 <= serial_number <= _U32_MAX:
            raise ValueError(f"serial_number must fit in 32 bits, got {serial_number}")
        if not all(0 <= part <= 255 for part in firmware):
            raise ValueError(f"firmware major and minor must be 0-255, got {firmware}")
        if not site_key:
            raise ValueError("site_key must not be empty")
        if not 1 <= grant_unlock_s <= _PULSE_MAX_S:
            raise ValueError(f"grant_unlock_s must be 1-{_PULSE_MAX_S}, got {grant_unlock_s}")
        self._serial_number = serial_number
        self._firmware = firmware[0] * 256 + firmware[1]
        self._site_key = site_key
        self._grant_unlock_s = grant_unlock_s
        self._clock = clock
        self._held_open_limit_s = DEFAULT_HELD_OPEN_LIMIT_S
        self.set_held_open_limit(held_open_limit_s)
        self._door_open = False
        self._opened_at = 0.0
        self._tamper = False
        self._reader_offline = False
        self._mains_failed = False
        self._fire = False
        self._boot()

    def _boot(self) -> None:
        """Volatile state at power-on: strike energised, no latch, empty event log."""
        self._pulse_until = 0.0
        self._forced = False
        self._held = False
        self._opened_at = self._clock()
        self._event_count = 0
        self._ring: list[DoorEvent] = [_NO_EVENT] * RING_SLOTS

    # -- time ----------------------------------------------------------------------------

    def _advance(self) -> None:
        """Bring timed state up to the clock: end an expired pulse, raise held open."""
        now = self._clock()
        if self._pulse_until and now >= self._pulse_until:
            self._pulse_until = 0.0
        if self._door_open and not self._held and now - self._opened_at >= self._held_open_limit_s:
            self._held = True
            self._record(EventCode.HELD_OPEN, at=self._opened_at + self._held_open_limit_s)

    # -- what the controller reports ---------------------------------------------------

    @property
    def serial_number(self) -> int:
        """The factory serial number (input registers 2-3)."""
        return self._serial_number

    @property
    def strike_released(self) -> bool:
        """True while the strike is de-energised (pulse running or fire release)."""
        self._advance()
        return self._fire or self._pulse_until > 0

    @property
    def status(self) -> Status:
        """The status word (input register 0) as flags."""
        released = self.strike_released
        status = Status.NORMAL
        for on, flag in (
            (self._door_open, Status.DOOR_OPEN),
            (not released and not self._door_open, Status.LOCKED),
            (self._forced, Status.FORCED_OPEN),
            (self._held, Status.HELD_OPEN),
            (self._tamper, Status.TAMPER),
            (self._reader_offline, Status.READER_OFFLINE),
            (self._mains_failed, Status.MAINS_FAILED),
            (self._fire, Status.FIRE_RELEASE),
        ):
            if on:
                status |= flag
        return status

    @property
    def open_seconds(self) -> int:
        """Whole seconds the door has been open (register 1): 0 closed, at most 65535."""
        self._advance()
        if not self._door_open:
            return 0
        return min(int(self._clock() - self._opened_at), _U16_MAX)

    @property
    def unlock_seconds_left(self) -> int:
        """Seconds left of the unlock pulse (register 101), rounded up; 0 when none runs."""
        self._advance()
        if not self._pulse_until:
            return 0
        return min(math.ceil(self._pulse_until - self._clock()), _PULSE_MAX_S)

    @property
    def held_open_limit_s(self) -> int:
        """The held-open limit in seconds (register 100)."""
        return self._held_open_limit_s

    @property
    def event_count(self) -> int:
        """The event counter (register 16), modulo 65536."""
        self._advance()
        return self._event_count

    def events(self) -> list[DoorEvent]:
        """The ring buffer, oldest first, without empty slots (at most 16 events)."""
        self._advance()
        newest = (self._event_count - 1) % RING_SLOTS
        ordered = self._ring[newest + 1 :] + self._ring[: newest + 1]
        return [event for event in ordered if event.code is not EventCode.NONE]

    def newest_event(self) -> DoorEvent:
        """The newest event (registers 17-22); code NONE while the log is empty."""
        self._advance()
        return self._ring[(self._event_count - 1) % RING_SLOTS]

    def card_hash(self, card_id: str) -> int:
        """The hash this controller records for ``card_id`` (its site key, 32 bits)."""
        return card_hash(card_id, self._site_key)

    def describe(self) -> dict[str, str]:
        """The reported values as short readable strings, by name (logs, ``anju sim``)."""
        status = self.status
        flags = [str(flag.name).lower().replace("_", " ") for flag in Status if flag & status]
        newest = self.newest_event()
        return {
            "status": ", ".join(flags) or "closed, unlocked",
            "open": f"{self.open_seconds} s",
            "unlock": f"{self.unlock_seconds_left} s",
            "held-open limit": f"{self._held_open_limit_s} s",
            "events": str(self._event_count),
            "newest event": str(newest.code.name).lower().replace("_", " "),
        }

    # -- the physical world and the people at the door ---------------------------------

    def present_card(
        self, card_id: str, granted: bool, *, reason: DenyReason = DenyReason.UNKNOWN_CARD
    ) -> DoorEvent:
        """A card at the reader: record a granted or denied event (with its card hash).

        A grant releases the strike for ``grant_unlock_s``. ``reason`` is recorded as
        the detail of a denial (a grant has none). Returns the event recorded.
        """
        if not card_id:
            raise ValueError("card_id must not be empty")
        self._advance()
        hashed = self.card_hash(card_id)
        if granted:
            self._release_for(self._grant_unlock_s)
            return self._record(EventCode.ACCESS_GRANTED, card=hashed)
        # Scenarios and consoles pass the reason as a plain number.
        reason = DenyReason(reason)
        if reason is DenyReason.NONE:
            raise ValueError("a denial needs a reason other than NONE")
        return self._record(EventCode.ACCESS_DENIED, card=hashed, detail=reason)

    def press_exit_button(self) -> DoorEvent:
        """Someone inside presses the exit button: release the strike, record the event."""
        self._advance()
        self._release_for(self._grant_unlock_s)
        return self._record(EventCode.EXIT_BUTTON)

    def open_door(self) -> None:
        """The door contact opens. Opening against an energised strike is forced open."""
        self._advance()
        if self._door_open:
            return
        locked = not (self._fire or self._pulse_until)
        self._door_open = True
        self._opened_at = self._clock()
        self._held = False
        if locked:
            self._forced = True
            self._record(EventCode.FORCED_OPEN)

    def close_door(self) -> None:
        """The door contact closes: forced-open and held-open clear."""
        self._advance()
        self._door_open = False
        self._forced = False
        self._held = False

    def force_open(self) -> None:
        """Force the door: relock first (if a pulse runs), then open it against the strike.

        A fire release still holds the strike open, so nothing is forced then.
        """
        self._advance()
        self._pulse_until = 0.0
        self.open_door()

    def trigger_alarm(self) -> None:
        """The door's alarm, for the ``anju sim`` console: the door is forced open."""
        self.force_open()

    def fire_release(self) -> None:
        """The fire input activates: strike released until :meth:`reset_fire_release`."""
        self._advance()
        if self._fire:
            return
        self._fire = True
        self._record(EventCode.FIRE_RELEASE)

    def reset_fire_release(self) -> None:
        """The fire panel is reset: the strike relocks (unless a pulse still runs)."""
        self._advance()
        self._fire = False

    def set_tamper(self, on: bool) -> None:
        """Open or close the enclosure tamper switch (status bit 4)."""
        self._tamper = on

    def set_reader_offline(self, on: bool) -> None:
        """Lose or regain the card reader (status bit 5)."""
        self._reader_offline = on

    def set_mains_failed(self, on: bool) -> None:
        """Mains power fails (running on battery) or returns (status bit 6)."""
        self._mains_failed = on

    def set_held_open_limit(self, seconds: int) -> None:
        """Set the held-open limit, 5-600 s (what a write of register 100 does)."""
        if not _HELD_OPEN_MIN_S <= seconds <= _HELD_OPEN_MAX_S:
            raise ValueError(
                f"held-open limit must be {_HELD_OPEN_MIN_S}-{_HELD_OPEN_MAX_S} s, got {seconds}"
            )
        self._held_open_limit_s = seconds

    def unlock(self, seconds: int) -> None:
        """A remote unlock (register 101): release for ``seconds`` (1-255), 0 relocks at once."""
        if not 0 <= seconds <= _PULSE_MAX_S:
            raise ValueError(f"unlock pulse must be 0-{_PULSE_MAX_S} s, got {seconds}")
        self._advance()
        if seconds == 0:
            self._pulse_until = 0.0
            return
        self._release_for(seconds)
        self._record(EventCode.REMOTE_UNLOCK)

    def tick(self) -> None:
        """Bring timed state (pulse end, held open) up to the clock; the console calls it."""
        self._advance()

    def power_cycle(self) -> None:
        """Lose power and boot again (see the module docstring for what survives)."""
        self._boot()
        self._advance()

    def _release_for(self, seconds: int) -> None:
        self._pulse_until = self._clock() + seconds

    def _record(
        self,
        code: EventCode,
        *,
        card: int = 0,
        detail: DenyReason = DenyReason.NONE,
        at: float | None = None,
    ) -> DoorEvent:
        when = self._clock() if at is None else at
        event = DoorEvent(code, card, int(when) & _U32_MAX, detail)
        self._event_count = (self._event_count + 1) % _U16
        self._ring[(self._event_count - 1) % RING_SLOTS] = event
        return event

    # -- register image ---------------------------------------------------------------

    def input_registers(self) -> dict[int, int]:
        """Return every input register (function code 4) by address, as u16 words."""
        status = self.status
        image: dict[int, int] = {
            InputRegister.STATUS: int(status),
            InputRegister.OPEN_SECONDS: self.open_seconds,
            InputRegister.SERIAL_HIGH: self._serial_number >> 16,
            InputRegister.SERIAL_LOW: self._serial_number & _U16_MAX,
            InputRegister.FIRMWARE: self._firmware,
            InputRegister.EVENT_COUNT: self._event_count,
        }
        for reserved in range(InputRegister.FIRMWARE + 1, InputRegister.EVENT_COUNT):
            image[reserved] = 0
        newest = self._ring[(self._event_count - 1) % RING_SLOTS]
        for offset, word in enumerate(newest.words()):
            image[InputRegister.EVENT_CODE + offset] = word
        for slot, event in enumerate(self._ring):
            base = InputRegister.RING + slot * _SLOT_WORDS
            for offset, word in enumerate([*event.words(), 0, 0]):
                image[base + offset] = word
        return image

    def holding_registers(self) -> dict[int, int]:
        """Return every holding register (function codes 3/6/16) by address."""
        return {
            HoldingRegister.HELD_OPEN_LIMIT: self._held_open_limit_s,
            HoldingRegister.UNLOCK_PULSE: self.unlock_seconds_left,
        }

    def read_input_registers(self, address: int, count: int) -> list[int]:
        """Read ``count`` input registers from ``address``; ``IllegalDataAddress`` if unmapped."""
        return _read(self.input_registers(), address, count, table="input")

    def read_holding_registers(self, address: int, count: int) -> list[int]:
        """Read ``count`` holding registers from ``address``; ``IllegalDataAddress`` if unmapped."""
        return _read(self.holding_registers(), address, count, table="holding")

    def write_holding_registers(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers from ``address`` on (function codes 6 and 16).

        The whole write is checked before any of it applies. Raises
        ``IllegalDataAddress`` for an unmapped address and ``IllegalDataValue`` for a
        held-open limit outside 5-600 or an unlock pulse above 255.
        """
        writes = list(zip(range(address, address + len(values)), values, strict=True))
        for reg, value in writes:
            if reg == HoldingRegister.HELD_OPEN_LIMIT:
                if not _HELD_OPEN_MIN_S <= value <= _HELD_OPEN_MAX_S:
                    raise IllegalDataValue(
                        f"held-open limit {value} s outside {_HELD_OPEN_MIN_S}-{_HELD_OPEN_MAX_S}",
                        address=reg,
                    )
            elif reg == HoldingRegister.UNLOCK_PULSE:
                if not 0 <= value <= _PULSE_MAX_S:
                    raise IllegalDataValue(
                        f"unlock pulse {value} s outside 0-{_PULSE_MAX_S}", address=reg
                    )
            else:
                raise IllegalDataAddress(f"no holding register {reg}", address=reg)
        for reg, value in writes:
            if reg == HoldingRegister.HELD_OPEN_LIMIT:
                self._advance()
                self._held_open_limit_s = value
                self._advance()
            else:
                self.unlock(value)


def _read(image: Mapping[int, int], address: int, count: int, *, table: str) -> list[int]:
    if count < 1:
        raise IllegalDataAddress(f"cannot read {count} {table} registers", address=address)
    addresses = range(address, address + count)
    missing = [a for a in addresses if a not in image]
    if missing:
        raise IllegalDataAddress(
            f"no {table} register {missing[0]} (read {address}+{count})", address=missing[0]
        )
    return [image[a] for a in addresses]
