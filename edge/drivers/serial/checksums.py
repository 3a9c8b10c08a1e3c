"""The checksums a serial profile may declare, each checked against its published check value.

Every function takes the covered bytes and returns the checksum as an unsigned int;
``CHECKSUMS`` gives each by the name a profile uses, with its width on the wire and
the byte order devices usually send it in. How often each accepts random bytes by
chance (1/256 for the 8-bit sums, 1/65536 for the CRCs) is in docs/serial-framing.md.
"""

import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal


def xor8(data: bytes) -> int:
    """The XOR of every byte (NMEA 0183's checksum)."""
    # Folding the bytes as one integer keeps the work in C: log2(n) shifts, no byte loop.
    value = int.from_bytes(data, "big")
    width = len(data)
    while width > 1:
        half = width // 2
        value = (value >> (8 * half)) ^ (value & ((1 << (8 * half)) - 1))
        width -= half
    return value


def sum8(data: bytes) -> int:
    """The sum of every byte, modulo 256."""
    return sum(data) & 0xFF


def _reflected_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_MODBUS_TABLE: Final = _reflected_table(0xA001)


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: polynomial 0x8005 reflected (0xA001), init 0xFFFF; check 0x4B37."""
    crc = 0xFFFF
    table = _MODBUS_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: polynomial 0x1021, init 0xFFFF, not reflected; check 0x29B1."""
    return binascii.crc_hqx(data, 0xFFFF)


ChecksumName = Literal["xor8", "sum8", "crc16-modbus", "crc16-ccitt"]


@dataclass(frozen=True, slots=True)
class Checksum:
    """A checksum as a frame carries it: how to compute it, its width and usual byte order."""

    name: ChecksumName
    compute: Callable[[bytes], int]
    width: int
    byte_order: Literal["big", "little"]


CHECKSUMS: Final[dict[ChecksumName, Checksum]] = {
    "xor8": Checksum("xor8", xor8, 1, "big"),
    "sum8": Checksum("sum8", sum8, 1, "big"),
    "crc16-modbus": Checksum("crc16-modbus", crc16_modbus, 2, "little"),
    "crc16-ccitt": Checksum("crc16-ccitt", crc16_ccitt, 2, "big"),
}
"""Modbus RTU sends its CRC low byte first; CCITT users (XMODEM, HDLC-like links) high first."""
