"""GATT values to point values: the Heart Rate Measurement as the Bluetooth SIG's
Heart Rate Service specifies it, and fixed-width fields at a byte offset, which is how
a profile declares a vendor characteristic's layout without code per vendor.

A value that cannot be what its characteristic says (too short, flags that promise
more or fewer bytes than arrived) raises ``MalformedValue``; the driver counts it per
band and skips it, since one garbled notification says nothing about the next.
"""

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from edge.drivers.contract import RawValue
from schemas.protocols.ble import BleAddress, BleDecoder, HeartRateField

RR_UNITS_PER_S: Final = 1024
"""RR intervals are counted in 1/1024 s (Heart Rate Service, RR-Interval field)."""

_HR_16_BIT: Final = 0x01
_CONTACT_DETECTED: Final = 0x02
_CONTACT_SUPPORTED: Final = 0x04
_ENERGY_PRESENT: Final = 0x08
_RR_PRESENT: Final = 0x10

_FIXED: Final = {
    BleDecoder.UINT8: struct.Struct("<B"),
    BleDecoder.UINT16_LE: struct.Struct("<H"),
    BleDecoder.SINT16_LE: struct.Struct("<h"),
    BleDecoder.UINT32_LE: struct.Struct("<I"),
}


class MalformedValue(ValueError):
    """A value that does not parse; carries where it came from (``characteristic 2a37``,
    ``manufacturer data 0xffff``) and the bytes."""

    def __init__(self, source: str, value: bytes, problem: str) -> None:
        self.source = source
        self.value = value
        self.problem = problem
        super().__init__(f"{source} value {value.hex(' ')!r}: {problem}")


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """One Heart Rate Measurement notification (characteristic 0x2A37).

    ``sensor_contact`` is None when the band does not report contact, else whether the
    sensor touches skin. ``rr_intervals_ms`` holds every RR interval the notification
    carried, oldest first, converted from 1/1024 s.
    """

    bpm: int
    sensor_contact: bool | None
    energy_expended_kj: int | None
    rr_intervals_ms: tuple[float, ...]

    def values(self) -> Mapping[HeartRateField, Sequence[RawValue]]:
        """Each field's values: one for most, none or several RR intervals."""
        contact = self.sensor_contact
        energy = self.energy_expended_kj
        return {
            HeartRateField.BPM: (self.bpm,),
            HeartRateField.RR_INTERVAL_MS: self.rr_intervals_ms,
            HeartRateField.SENSOR_CONTACT: () if contact is None else (contact,),
            HeartRateField.ENERGY_EXPENDED_KJ: () if energy is None else (energy,),
        }


def heart_rate_measurement(
    value: bytes, *, source: str = "characteristic 2a37"
) -> HeartRateMeasurement:
    """Decode a Heart Rate Measurement; raises MalformedValue naming what is wrong."""
    if not value:
        raise MalformedValue(source, value, "empty: the flags byte is missing")
    flags = value[0]
    width = 2 if flags & _HR_16_BIT else 1
    energy = 2 if flags & _ENERGY_PRESENT else 0
    needed = 1 + width + energy
    if len(value) < needed:
        raise MalformedValue(
            source,
            value,
            f"flags 0x{flags:02x} need at least {needed} bytes, got {len(value)}",
        )
    bpm = int.from_bytes(value[1 : 1 + width], "little")
    energy_kj = int.from_bytes(value[1 + width : needed], "little") if energy else None
    rest = value[needed:]
    if flags & _RR_PRESENT:
        if not rest or len(rest) % 2:
            raise MalformedValue(
                source,
                value,
                f"RR intervals flagged but {len(rest)} bytes follow (a non-zero even count)",
            )
        units = struct.unpack(f"<{len(rest) // 2}H", rest)
        rr_ms = tuple(unit * 1000 / RR_UNITS_PER_S for unit in units)
    elif rest:
        raise MalformedValue(
            source, value, f"{len(rest)} bytes after the fields flags 0x{flags:02x} name"
        )
    else:
        rr_ms = ()
    contact = bool(flags & _CONTACT_DETECTED) if flags & _CONTACT_SUPPORTED else None
    return HeartRateMeasurement(bpm, contact, energy_kj, rr_ms)


def decode_point(address: BleAddress, value: bytes) -> tuple[RawValue, ...]:
    """The raw values one point takes from its characteristic's value: one for a fixed
    field, none or several for a Heart Rate Measurement field (RR intervals, or contact
    on a band that does not report it). Raises MalformedValue."""
    if address.decoder is BleDecoder.HEART_RATE_MEASUREMENT:
        field = address.field or HeartRateField.BPM
        return tuple(heart_rate_measurement(value, source=address.source).values()[field])
    if address.decoder is None:
        raise TypeError(f"{address.source} has no value to decode")
    layout = _FIXED[address.decoder]
    offset = address.offset
    end = offset + layout.size
    if len(value) < end:
        raise MalformedValue(
            address.source,
            value,
            f"{address.decoder} at byte {offset} needs {end} bytes, got {len(value)}",
        )
    (number,) = layout.unpack_from(value, offset)
    return (int(number),)
