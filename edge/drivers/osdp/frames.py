"""OSDP packets on the wire, seen from the side: headers for statistics and diagnosis.

libosdp builds and parses every packet the panel exchanges; this module watches the
bytes go by, so the driver can count polls per reader, time the poll cycle and tell a
reader that answered the secure-channel challenge (osdp_CCRYPT) from one that never
answered. Its ``FrameReader`` also picks the whole packets with a good check out of
the readers' bytes, which is all the line's channel hands libosdp (``line``): noise
and cut or corrupted replies are dropped and counted. It builds the two plain
commands a scan sends (osdp_POLL, osdp_ID) to addresses no panel is configured for.

A packet (SIA OSDP 2.2, section 5)::

    SOM 0x53 | ADDR (bit 7 set in replies) | LEN (2, LE, whole packet) | CTRL |
    [security block: length, type, data] | command or reply code | data |
    [MAC, 4] | CRC-16 (2, LE) or checksum (1)

CTRL holds the sequence number (bits 0-1), CRC instead of checksum (bit 2) and a
security block present (bit 3). The code byte is never encrypted, so headers can be
read on a secure channel too.
"""

import binascii
from dataclasses import dataclass, field
from typing import Final

SOM: Final = 0x53
REPLY_BIT: Final = 0x80
BROADCAST: Final = 0x7F
CMD_POLL: Final = 0x60
CMD_ID: Final = 0x61
CMD_CHLNG: Final = 0x76
REPLY_ACK: Final = 0x40
REPLY_NAK: Final = 0x41
REPLY_PDID: Final = 0x45
REPLY_CCRYPT: Final = 0x76
_CTRL_CRC: Final = 0x04
_CTRL_SCB: Final = 0x08
_HEADER: Final = 5
_MIN_LENGTH: Final = 7
_MAX_LENGTH: Final = 1440


@dataclass(frozen=True, slots=True)
class Frame:
    """One well-formed packet: who it is for or from, and which command or reply."""

    address: int
    reply: bool
    code: int
    sequence: int
    secure: bool
    data: bytes = field(repr=False)
    """What follows the code, up to the MAC or checksum (encrypted on a secure channel;
    a card number in clear on a plain one, hence kept out of ``repr``)."""
    packet: bytes = field(repr=False)
    """The whole packet, as it crossed the line."""


@dataclass(frozen=True, slots=True)
class PdId:
    """What a reader says of itself in osdp_PDID."""

    vendor_code: int
    """The IEEE OUI of its maker (3 bytes)."""
    model: int
    version: int
    serial_number: int
    firmware: tuple[int, int, int]
    """Major, minor, build."""

    @classmethod
    def parse(cls, data: bytes) -> "PdId | None":
        """osdp_PDID's 12 bytes of data; None when fewer arrived."""
        if len(data) < 12:
            return None
        return cls(
            vendor_code=int.from_bytes(data[0:3], "little"),
            model=data[3],
            version=data[4],
            serial_number=int.from_bytes(data[5:9], "little"),
            firmware=(data[9], data[10], data[11]),
        )

    def __str__(self) -> str:
        """As an installer reads it: vendor, model, version, serial, firmware."""
        major, minor, build = self.firmware
        return (
            f"vendor {self.vendor_code:06X}, model {self.model}, version {self.version}, "
            f"serial {self.serial_number:08X}, firmware {major}.{minor}.{build}"
        )


def crc16(data: bytes) -> int:
    """OSDP's CRC-16 (CRC-16/AUG-CCITT: CRC-CCITT from initial 0x1D0F)."""
    return binascii.crc_hqx(data, 0x1D0F)


def command(address: int, code: int, data: bytes = b"", *, sequence: int = 0) -> bytes:
    """A plain command packet with a CRC, for ``address`` (0-126)."""
    length = _HEADER + 1 + len(data) + 2
    head = bytes([SOM, address & 0x7F, length & 0xFF, length >> 8, _CTRL_CRC | sequence & 3])
    body = head + bytes([code]) + data
    return body + crc16(body).to_bytes(2, "little")


class FrameReader:
    """Packets out of a byte stream that may start mid-packet or carry noise.

    ``feed`` returns the packets completed by the bytes given, each with a good CRC
    or checksum. A packet start (SOM) whose check fails, or whose length is no OSDP
    packet's, was noise: one byte is skipped and the search goes on. A start still
    waiting for its bytes is given up when a whole packet begins after it (noise just
    before a reply) or when ``discard`` says no more of it will come.

    ``bad_bytes`` counts the bytes skipped; ``dropped`` the packet starts given up (a
    failed check, a packet cut short, noise that looked like a header).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.bad_bytes = 0
        self.dropped = 0

    def feed(self, data: bytes) -> list[Frame]:
        """The packets ``data`` completes, in order."""
        self._buffer += data
        frames: list[Frame] = []
        while True:
            start = self._buffer.find(SOM)
            if start < 0:
                self._drop(len(self._buffer))
                return frames
            self._drop(start)
            if len(self._buffer) < _HEADER:
                return frames
            length = self._buffer[2] | self._buffer[3] << 8
            if not _MIN_LENGTH <= length <= _MAX_LENGTH:
                self._drop(1)
                continue
            if len(self._buffer) < length:
                later = self._whole_packet_after_start()
                if later is None:
                    return frames
                self.dropped += 1
                self._drop(later)
                continue
            frame = _parse(bytes(self._buffer[:length]))
            if frame is None:
                self.dropped += 1
                self._drop(1)
                continue
            del self._buffer[:length]
            frames.append(frame)

    def discard(self) -> None:
        """Give up the packet still arriving, if any: none of its bytes will follow (on a
        half-duplex line, once the panel sends again, the last reply is over)."""
        if len(self._buffer) >= _HEADER:
            self.dropped += 1  # a start with a plausible length: a packet cut short
        self._drop(len(self._buffer))

    def _whole_packet_after_start(self) -> int | None:
        """Where a whole packet with a good check begins after the start at 0, if one
        does: the start was noise then."""
        at = self._buffer.find(SOM, 1)
        while at >= 0:
            if len(self._buffer) - at >= _HEADER:
                length = self._buffer[at + 2] | self._buffer[at + 3] << 8
                whole = _MIN_LENGTH <= length <= len(self._buffer) - at
                if whole and _parse(bytes(self._buffer[at : at + length])) is not None:
                    return at
            at = self._buffer.find(SOM, at + 1)
        return None

    def _drop(self, count: int) -> None:
        self.bad_bytes += count
        del self._buffer[:count]


def _parse(packet: bytes) -> Frame | None:
    ctrl = packet[4]
    if ctrl & _CTRL_CRC:
        if int.from_bytes(packet[-2:], "little") != crc16(packet[:-2]):
            return None
        end = len(packet) - 2
    else:
        if (-sum(packet[:-1])) & 0xFF != packet[-1]:
            return None
        end = len(packet) - 1
    offset = _HEADER
    secure = bool(ctrl & _CTRL_SCB)
    if secure:
        offset += packet[_HEADER]
        block_type = packet[_HEADER + 1] if len(packet) > _HEADER + 1 else 0
        if block_type in (0x15, 0x16, 0x17, 0x18):
            end -= 4  # a MAC follows the data in the secure-message block types
    if offset >= end:
        return None
    return Frame(
        address=packet[1] & 0x7F,
        reply=bool(packet[1] & REPLY_BIT),
        code=packet[offset],
        sequence=ctrl & 3,
        secure=secure,
        data=packet[offset + 1 : end],
        packet=packet,
    )
