"""Finding readers on a line without knowing their keys: a plain osdp_POLL to each address.

A reader answers a plain poll with osdp_ACK (or a status), or, if it insists on a
secure channel, with osdp_NAK; either proves a reader is there. Those that answer are
then asked for their identity (osdp_ID, also plain), which most readers give before
any secure channel. Sequence number 0 on the first poll restarts the reader's count,
as the standard allows a panel that starts afresh.
"""

import asyncio
import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import serial

from edge.drivers.osdp.frames import (
    CMD_ID,
    CMD_POLL,
    REPLY_NAK,
    REPLY_PDID,
    Frame,
    FrameReader,
    PdId,
    command,
)
from edge.drivers.osdp.line import open_port
from edge.errors import EdgeError

ADDRESSES: Final = range(0, 127)
TURN_GAP_S: Final = 0.005
"""Quiet time before the next poll, so a late reply is not taken for the next one's."""


class AddressListError(EdgeError, ValueError):
    """An address list such as ``0-20,31`` that cannot be parsed."""

    def __init__(self, text: str, problem: str) -> None:
        self.text = text
        super().__init__(f"OSDP address list {text!r}: {problem}")


@dataclass(frozen=True, slots=True)
class Answer:
    """What answered at one address."""

    address: int
    secure_only: bool
    """It refused the plain poll (osdp_NAK): it wants a secure channel."""
    identity: str
    """Its osdp_PDID, rendered, or what it answered when it gave none."""


def parse_addresses(text: str) -> list[int]:
    """PD addresses from a list such as ``0-20,31``: sorted, each once (0-126)."""
    addresses: set[int] = set()
    for part in (piece.strip() for piece in text.split(",")):
        low_text, dash, high_text = part.partition("-")
        bounds = [low_text.strip(), high_text.strip()] if dash else [low_text.strip()]
        if not all(bound.isdigit() for bound in bounds):
            raise AddressListError(text, f"{part!r} is not an address or a range such as 0-20")
        low, high = int(bounds[0]), int(bounds[-1])
        if low > high:
            raise AddressListError(text, f"range {part!r} runs backwards; write {high}-{low}")
        if high >= ADDRESSES.stop:
            raise AddressListError(text, f"{part!r}: OSDP addresses are 0-126 (127 is broadcast)")
        addresses.update(range(low, high + 1))
    return sorted(addresses)


def render_pdid(data: bytes) -> str:
    """osdp_PDID's data as an installer reads it (``PdId``), or its bytes when short."""
    pd_id = PdId.parse(data)
    return str(pd_id) if pd_id is not None else f"identity of {len(data)} bytes: {data.hex(' ')}"


async def scan_line(
    path: str,
    baud: int,
    addresses: Sequence[int],
    *,
    timeout_s: float,
    on_progress: Callable[[int, Answer | None], None],
) -> list[Answer]:
    """Poll each of ``addresses`` once; ``on_progress`` hears of every one, in order.

    Raises serial.SerialException when the port cannot be opened.
    """
    port = await asyncio.to_thread(open_port, path, baud)
    answers: list[Answer] = []
    try:
        for address in addresses:
            answer = await asyncio.to_thread(_try, port, address, timeout_s)
            if answer is not None:
                answers.append(answer)
            on_progress(address, answer)
    finally:
        port.close()
    return answers


def _try(port: serial.Serial, address: int, timeout_s: float) -> Answer | None:
    reply = _ask(port, command(address, CMD_POLL, sequence=0), address, timeout_s)
    if reply is None:
        return None
    identity = _ask(port, command(address, CMD_ID, b"\x00", sequence=1), address, timeout_s)
    if identity is not None and identity.code == REPLY_PDID:
        text = render_pdid(identity.data)
    else:
        text = f"answered a poll with reply 0x{reply.code:02X}, gave no identity"
    return Answer(address, reply.code == REPLY_NAK, text)


def _ask(port: serial.Serial, packet: bytes, address: int, timeout_s: float) -> Frame | None:
    """Send ``packet``; the reply from ``address`` within ``timeout_s``, if any."""
    port.reset_input_buffer()
    port.write(packet)
    reader = FrameReader()
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        select.select([port.fileno()], [], [], left)
        for frame in reader.feed(port.read(512)):
            if frame.reply and frame.address == address:
                time.sleep(TURN_GAP_S)
                return frame
    return None
