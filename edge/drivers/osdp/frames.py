"""OSDP packets on the wire, seen from the side: headers for statistics and diagnosis.

libosdp builds and parses every packet the panel exchanges; this module only watches
the bytes go by, so the driver can count polls per reader, time the poll cycle and
tell a reader that answered the secure-channel challenge (osdp_CCRYPT) from one that
never answered. It also builds the two plain commands a scan sends (osdp_POLL,
osdp_ID) to addresses no panel is configured for.

A packet (SIA OSDP 2.2, section 5)::

    SOM 0x53 | ADDR (bit 7 set in replies) | LEN (2, LE, whole packet) | CTRL |
    [security block: length, type, data] | command or reply code | data |
    [MAC, 4] | CRC-16 (2, LE) or checksum (1)

CTRL holds the sequence number (bits 0-1), CRC instead of checksum (bit 2) and a
security block present (bit 3). The code byte is never encrypted, so headers can be
read on a secure channel too.
"""

from dataclasses import dataclass
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
_MAX_BUFFER: Final = 4 * _MAX_LENGTH


@dataclass(frozen=True, slots=True)
class Frame:
    """One well-formed packet: who it is for or from, and which command or reply."""

    address: int
    reply: bool
    code: int
    sequence: int
    secure: bool
    data: bytes
    """What follows the code, up to the MAC or checksum (encrypted on a secure channel)."""


def crc16(data: bytes) -> int:
    """OSDP's CRC-16 (CRC-16/AUG-CCITT: polynomial 0x1021, initial 0x1D0F)."""
    crc = 0x1D0F
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def command(address: int, code: int, data: bytes = b"", *, sequence: int = 0) -> bytes:
    """A plain command packet with a CRC, for ``address`` (0-126)."""
    length = _HEADER + 1 + len(data) + 2
    head = bytes([SOM, address & 0x7F, length & 0xFF, length >> 8, _CTRL_CRC | sequence & 3])
    body = head + bytes([code]) + data
    return body + crc16(body).to_bytes(2, "little")


def whole_packets(buffer: bytes | bytearray) -> int:
    """How many leading bytes of ``buffer`` are whole packets or bytes that start none
    (noise): what can be handed on without splitting a packet that is still arriving."""
    done = 0
    while done < len(buffer):
        if buffer[done] != SOM:
            start = buffer.find(SOM, done)
            done = len(buffer) if start < 0 else start
            continue
        if len(buffer) - done < _HEADER - 1:
            return done
        length = buffer[done + 2] | buffer[done + 3] << 8
        if not _MIN_LENGTH <= length <= _MAX_LENGTH:
            done += 1
            continue
        if len(buffer) - done < length:
            return done
        done += length
    return done


class FrameReader:
    """Packets out of a byte stream that may start mid-packet or carry noise.

    ``feed`` returns the packets completed by the bytes given; bytes that are not a
    well-formed packet are skipped and counted in ``bad_bytes``.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.bad_bytes = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            start = self._buffer.find(SOM)
            if start < 0:
                self.bad_bytes += len(self._buffer)
                self._buffer.clear()
                return frames
            if start:
                self.bad_bytes += start
                del self._buffer[:start]
            if len(self._buffer) < _HEADER:
                return frames
            length = self._buffer[2] | self._buffer[3] << 8
            if not _MIN_LENGTH <= length <= _MAX_LENGTH:
                self._skip()
                continue
            if len(self._buffer) < length:
                if len(self._buffer) > _MAX_BUFFER:
                    self._skip()
                    continue
                return frames
            frame = _parse(bytes(self._buffer[:length]))
            if frame is None:
                self._skip()
                continue
            del self._buffer[:length]
            frames.append(frame)

    def _skip(self) -> None:
        """Drop one byte: the SOM that did not start a packet."""
        self.bad_bytes += 1
        del self._buffer[:1]


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
    )
