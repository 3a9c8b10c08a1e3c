"""One reader's replies turned into samples of its profile's points.

The panel reports what the reader sent (a card, keys, input and tamper reports); this
module names the points those values go to, gathers keys into whole PINs, hashes
credentials before anything else sees them, and lets ``Door`` work out access, forced
entry and what the wires said. Pure: the bus passes the time in.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from edge.drivers.contract import DeviceSpec, RawValue
from edge.drivers.osdp.credentials import card_hash, pin_hash
from edge.drivers.osdp.door import Access, Door, DoorChange, Forced
from edge.drivers.osdp.panel import (
    STATUS_INPUT,
    STATUS_LOCAL,
    STATUS_OUTPUT,
    CardRead,
    KeyPress,
    Status,
)
from edge.drivers.osdp.settings import Secret
from schemas.protocols.osdp import OsdpAddress, OsdpSettings

Values = dict[str, RawValue | str]

ENTER: Final = 0x0D
"""The enter (#) key in osdp_KEYPAD: ends a PIN (digits are ASCII 0x30-0x39)."""
CLEAR: Final = 0x7F
"""The clear (*) key in osdp_KEYPAD: drops the digits typed so far."""
MAX_PIN_DIGITS: Final = 16
"""Digits past this many are ignored: no PIN is longer, and a held key cannot grow
the buffer."""
_DIGITS: Final = range(0x30, 0x3A)


class Keypad:
    """Keys typed on one reader, gathered into whole PINs.

    Readers send osdp_KEYPAD with the keys pressed since the last poll, usually one:
    a PIN is the digits up to the enter key, or up to a pause of ``timeout_s``; the
    clear key drops them, and function keys are not part of a PIN. No digit leaves
    this class except in a whole PIN.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._digits = bytearray()
        self._last = 0.0

    def press(self, keys: bytes, now: float) -> list[tuple[bytes, float]]:
        """The PINs (digits, when complete) that these keys, pressed at ``now``, end:
        one a pause ended before them, one the enter key ends."""
        pins = self.due(now)
        for key in keys:
            if key in _DIGITS:
                if len(self._digits) < MAX_PIN_DIGITS:
                    self._digits.append(key)
                self._last = now
            elif key == ENTER:
                if self._digits:
                    pins.append(self._take(now))
            elif key == CLEAR:
                self._digits.clear()
        return pins

    def due(self, now: float) -> list[tuple[bytes, float]]:
        """The PIN a pause of ``timeout_s`` ended by ``now``, if any."""
        if self._digits and now - self._last >= self.timeout_s:
            return [self._take(self._last + self.timeout_s)]
        return []

    def clear(self) -> None:
        """Drop the digits typed so far (the reader went offline mid-PIN)."""
        self._digits.clear()

    def _take(self, at: float) -> tuple[bytes, float]:
        digits = bytes(self._digits)
        self._digits.clear()
        return digits, at


@dataclass
class ReaderPoints:
    """The reader's points by the reply they take their value from."""

    single: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    inputs: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    outputs: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, device: DeviceSpec) -> "ReaderPoints":
        points = cls()
        for point in device.profile.points:
            address = point.address_as(OsdpAddress)
            if address.reply == "input_status" and address.index is not None:
                points.inputs[address.index].append(point.name)
            elif address.reply == "output_status" and address.index is not None:
                points.outputs[address.index].append(point.name)
            else:
                points.single[address.reply].append(point.name)
        return points

    def put(self, values: Values, reply: str, value: RawValue | str) -> None:
        for name in self.single.get(reply, ()):
            values[name] = value


class ReaderState:
    """What one reader has reported, and the door beside it."""

    def __init__(self, device: DeviceSpec, card_key: Secret) -> None:
        self.device = device
        self.points = ReaderPoints.of(device)
        self._key = card_key
        settings = device.profile.settings_as(OsdpSettings) or OsdpSettings()
        self.door = Door(
            contact_input=settings.door_contact_input,
            release_input=settings.release_input,
            rex_input=settings.rex_input,
            grant_window_s=settings.grant_window_s,
            pin_window_s=settings.pin_window_s,
        )
        self.keypad = Keypad(settings.pin_timeout_s)
        self.inputs: dict[int, bool] = {}

    def card(self, read: CardRead, now: float) -> list[Values]:
        credential = card_hash(self._key, read.card_format, read.bits, read.data)
        return self._credential("card_read", credential, now, pin=False)

    def keys(self, press: KeyPress, now: float) -> list[Values]:
        """Keys typed: samples only once they complete a PIN (see ``Keypad``)."""
        return self._pins(self.keypad.press(press.digits, now))

    def _pins(self, pins: list[tuple[bytes, float]]) -> list[Values]:
        samples: list[Values] = []
        for digits, at in pins:
            credential = pin_hash(self._key, digits)
            samples += self._credential("keypress", credential, at, pin=True)
        return samples

    def _credential(self, reply: str, credential: str, now: float, *, pin: bool) -> list[Values]:
        values: Values = {}
        self.points.put(values, reply, credential)
        changes = self.door.credential(credential, now, pin=pin)
        return _nonempty([values, *self._changes(changes)])

    def status(self, status: Status, now: float) -> list[Values]:
        values: Values = {}
        if status.kind == STATUS_INPUT:
            states = {index: bool(byte) for index, byte in enumerate(status.report)}
            self.inputs.update(states)
            for index, active in states.items():
                for name in self.points.inputs.get(index, ()):
                    values[name] = int(active)
            changes = self.door.inputs(states, now)
            forced = [change for change in changes if isinstance(change, Forced)]
            if forced:
                self.points.put(values, "forced", int(forced[-1].forced))
            others = [change for change in changes if not isinstance(change, Forced)]
            return _nonempty([*self._changes(others), values])
        if status.kind == STATUS_OUTPUT:
            for index, byte in enumerate(status.report):
                for name in self.points.outputs.get(index, ()):
                    values[name] = int(bool(byte))
        elif status.kind == STATUS_LOCAL and len(status.report) >= 2:
            self.points.put(values, "tamper", int(bool(status.report[0])))
            self.points.put(values, "power", int(bool(status.report[1])))
        return _nonempty([values])

    def due(self, now: float) -> list[Values]:
        """A PIN a pause ended, and decisions whose grant window ran out (denied)."""
        pins = self._pins(self.keypad.due(now))
        return _nonempty([*pins, *self._changes(self.door.due(now))])

    def offline(self) -> None:
        """The reader went offline: forget its inputs and any digits typed, so nothing
        stale is re-sent and its next report is a new baseline (see ``Door``)."""
        self.inputs.clear()
        self.keypad.clear()
        self.door.offline()

    def inputs_now(self) -> Values:
        """The inputs as last reported: re-delivered each interval so a held-open rule
        (``for_s``) is timed while the contact holds; empty while none are known."""
        values: Values = {}
        for index, active in self.inputs.items():
            for name in self.points.inputs.get(index, ()):
                values[name] = int(active)
        return values

    def _changes(self, changes: Sequence[DoorChange]) -> list[Values]:
        samples: list[Values] = []
        for change in changes:
            values: Values = {}
            if isinstance(change, Access):
                self.points.put(values, "access", change.decision)
                self.points.put(values, "credential", change.credential)
            else:
                self.points.put(values, "forced", int(change.forced))
            samples.append(values)
        return samples


def _nonempty(samples: list[Values]) -> list[Values]:
    return [sample for sample in samples if sample]
