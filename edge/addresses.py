"""Device addresses as URLs (DESIGN.md section 11).

``modbus-tcp://HOST:PORT?unit=N`` and
``modbus-rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=N``; the other protocols' forms
(``ble://``, ``serial://``, ``osdp://``) parse here too so an installer gets one kind
of error for every address, though only Modbus has a driver yet.
"""

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from edge.errors import AddressError
from schemas.vocabulary import Protocol

Parity = Literal["N", "E", "O"]
_PARITIES: dict[str, Parity] = {"N": "N", "E": "E", "O": "O"}


@dataclass(frozen=True, slots=True)
class DeviceAddress:
    """A parsed device URL. ``bus`` names what the device shares a wire or socket with."""

    protocol: Protocol
    host: str = ""
    port: int = 0
    path: str = ""
    unit: int = 1
    baud: int = 9600
    parity: Parity = "N"
    options: dict[str, str] = field(default_factory=dict)

    @property
    def bus(self) -> str:
        """Devices with the same bus get one request at a time (RS-485 is half duplex)."""
        if self.protocol is Protocol.MODBUS_TCP:
            return f"tcp://{self.host}:{self.port}"
        return f"{self.protocol}://{self.host}{self.path}"

    def __str__(self) -> str:
        if self.protocol is Protocol.MODBUS_TCP:
            return f"modbus-tcp://{self.host}:{self.port}?unit={self.unit}"
        if self.protocol is Protocol.MODBUS_RTU:
            return (
                f"modbus-rtu://{self.path}?baud={self.baud}&parity={self.parity}&unit={self.unit}"
            )
        return f"{self.protocol}://{self.host}{self.path}"


def _integer(url: str, name: str, text: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise AddressError(url, f"{name} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


def parse_address(url: str) -> DeviceAddress:
    """Parse a device URL; raises AddressError saying what is wrong and the expected form."""
    parts = urlsplit(url)
    try:
        protocol = Protocol(parts.scheme)
    except ValueError:
        known = ", ".join(f"{p}://" for p in Protocol)
        raise AddressError(url, f"unknown scheme {parts.scheme!r}; use one of {known}") from None
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unit = _integer(url, "unit", query.pop("unit", "1"), 0, 247)
    if protocol is Protocol.MODBUS_TCP:
        if not parts.hostname:
            raise AddressError(url, "expected modbus-tcp://HOST:PORT?unit=N")
        try:
            port = parts.port or 502
        except ValueError:
            raise AddressError(url, "port must be a number from 1 to 65535") from None
        return DeviceAddress(protocol, host=parts.hostname, port=port, unit=unit, options=query)
    if protocol in (Protocol.MODBUS_RTU, Protocol.SERIAL, Protocol.OSDP):
        if not parts.path or parts.netloc:
            raise AddressError(url, f"expected {protocol}:///dev/ttyUSB0?baud=9600 (three slashes)")
        baud = _integer(url, "baud", query.pop("baud", "9600"), 300, 4_000_000)
        parity = _PARITIES.get(query.pop("parity", "N").upper())
        if parity is None:
            raise AddressError(url, "parity must be N, E or O")
        return DeviceAddress(
            protocol, path=parts.path, unit=unit, baud=baud, parity=parity, options=query
        )
    if not parts.netloc:
        raise AddressError(url, "expected ble://AA:BB:CC:DD:EE:FF")
    return DeviceAddress(protocol, host=parts.netloc.upper(), options=query)
