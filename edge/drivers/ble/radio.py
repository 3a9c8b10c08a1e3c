"""The small interface between the BLE driver and a Bluetooth host stack.

Two stacks sit behind it: ``bleak`` over BlueZ (a gateway box's own adapter) and
``bumble`` over an HCI transport (a USB dongle, or the TCP link to the simulated
bands of ``firmware_sim``). Everything above it (presence, connection supervision,
decoding) is the same code whichever runs, so what the tests exercise through bumble
is what a gateway runs through BlueZ.

Addresses are MACs in upper case (``F0:A1:00:00:00:01``); UUIDs are lower case, SIG
16-bit ones as four hex digits (``2a37``) and others in full, as profiles write them.
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from edge.errors import EdgeError

_SIG_BASE: Final = "-0000-1000-8000-00805f9b34fb"


def short_uuid(text: str) -> str:
    """A UUID as profiles write it: ``2a37`` for a SIG-assigned one, else the full form."""
    full = str(uuid.UUID(text)) if len(text) > 8 else f"{int(text, 16):08x}{_SIG_BASE}"
    if full.endswith(_SIG_BASE) and full.startswith("0000"):
        return full[4:8]
    return full


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One advertising report: who, how loud, and what it carried."""

    address: str
    rssi: int | None
    name: str | None = None
    services: tuple[str, ...] = ()
    manufacturer_data: Mapping[int, bytes] = field(default_factory=dict)
    """By company identifier, the bytes after it."""
    service_data: Mapping[str, bytes] = field(default_factory=dict)
    """By service UUID, the bytes after it."""


class RadioError(EdgeError):
    """A failure of the Bluetooth stack or of one link, naming the adapter or the band."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class RadioUnavailable(RadioError):
    """No adapter to use: none present, no BlueZ, a transport that does not open."""


class LinkFailed(RadioError):
    """A connection that could not be made or was lost, or a GATT request it refused."""


Notify = Callable[[bytes], None]


class Link(ABC):
    """One GATT connection to a band."""

    address: str

    @abstractmethod
    async def read(self, service: str, characteristic: str) -> bytes:
        """The characteristic's value; raises LinkFailed."""

    @abstractmethod
    async def subscribe(self, service: str, characteristic: str, notify: Notify) -> None:
        """Deliver every notification of the characteristic to ``notify``; raises LinkFailed."""

    @abstractmethod
    async def write(self, service: str, characteristic: str, value: bytes) -> None:
        """Write with response; raises LinkFailed."""

    @property
    @abstractmethod
    def lost(self) -> asyncio.Event:
        """Set when the connection drops, whoever dropped it."""

    @abstractmethod
    async def close(self) -> None:
        """Disconnect; never raises."""


class Radio(ABC):
    """One adapter: scans and makes connections."""

    name: str
    """The adapter as the gateway config names it (``bumble:usb:0``, ``bleak:hci0``)."""

    @abstractmethod
    async def open(self) -> None:
        """Bring the adapter up; raises RadioUnavailable saying why it cannot."""

    @abstractmethod
    async def scan(self, heard: Callable[[Advertisement], None]) -> None:
        """Report every advertisement to ``heard`` until ``stop_scan``; raises RadioError."""

    @abstractmethod
    async def stop_scan(self) -> None:
        """Stop reporting advertisements; never raises."""

    @abstractmethod
    async def connect(self, address: str, timeout_s: float) -> Link:
        """A connection to the band at ``address``; raises LinkFailed."""

    @property
    @abstractmethod
    def lost(self) -> asyncio.Event:
        """Set when the adapter itself is gone (the dongle pulled, the HCI link closed)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the adapter and every connection; never raises."""
