"""Device addresses as URLs (docs/design.md section 12); the one parser of them.

Each scheme takes its own parameters and no others. Passing over a misspelt
``?unti=7`` would poll unit 1, on an RS-485 line another device; so a parameter the
scheme does not take is an error that lists those it does, and so are a parameter
given twice or without a value, a ``#fragment``, and a part of the URL the scheme has
no use for (a path on a TCP address, a host on a serial one).

==============================  =========================================================
form                            parameters (default)
==============================  =========================================================
``modbus-tcp://HOST[:PORT]``    ``unit`` 0-247 (1); the port defaults to 502
``modbus-rtu:///dev/ttyUSB0``   ``unit`` 0-247 (1), ``baud`` 300-4000000 (9600),
                                ``parity`` N, E or O (N)
``serial:///dev/ttyS1``         ``baud`` 300-4000000 (the profile's ``serial.baud``),
                                ``parity`` N, E or O (N), ``bytesize`` 7 or 8 (8),
                                ``stopbits`` 1 or 2 (1)
``osdp:///dev/ttyUSB0``         ``address`` 0-126 (0), ``baud`` 9600, 19200, 38400,
                                57600, 115200 or 230400 (9600)
``ble://AA:BB:CC:DD:EE:FF``     none
==============================  =========================================================

Why these: Modbus RTU fixes 8 data bits, so its line takes baud and parity only. OSDP
fixes 8N1 and the set of baud rates, and names each reader on the line by its PD
address (0-126; 127 is broadcast). A plain serial device follows no standard framing,
so it takes all four line settings and, having no bus addressing, no unit. A BLE
device is found by its MAC alone, and every band shares the gateway's adapter (one
bus). A serial device's profile knows the rate its model sends at, so an address
without ``baud=`` takes it from there (``baud_given`` tells the driver which applies).
Every built-in scheme parses here rather than in its driver, so that an installer gets
one kind of error for every address.

A driver that brings a protocol of its own registers its scheme with
``register_scheme``: its addresses are ``SCHEME://NAME?unit=N``, NAME being whatever
names the device or its bus to that driver (a host, a serial path, an id).

``parse_address(url, listening=True)`` reads where a simulator serves instead: the
port must be given and may be 0 (any free port), and the unit is 1-247, as unit 0 is
the broadcast address no device answers.
"""

import re
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar
from urllib.parse import SplitResult, urlsplit

from edge.errors import AddressError
from schemas.vocabulary import Protocol

Parity = Literal["N", "E", "O"]
ByteSize = Literal[7, 8]
StopBits = Literal[1, 2]
_PARITIES: Final[dict[str, Parity]] = {"N": "N", "E": "E", "O": "O"}
_BYTESIZES: Final[dict[str, ByteSize]] = {"7": 7, "8": 8}
_STOPBITS: Final[dict[str, StopBits]] = {"1": 1, "2": 2}
_OSDP_BAUDS: Final = {str(rate): rate for rate in (9600, 19200, 38400, 57600, 115200, 230400)}
_T = TypeVar("_T")
_MAC: Final = re.compile(r"[0-9A-F]{2}(?::[0-9A-F]{2}){5}")

PARAMETERS: Final[dict[str, tuple[str, ...]]] = {
    Protocol.MODBUS_TCP: ("unit",),
    Protocol.MODBUS_RTU: ("unit", "baud", "parity"),
    Protocol.SERIAL: ("baud", "parity", "bytesize", "stopbits"),
    Protocol.OSDP: ("address", "baud"),
    Protocol.BLE: (),
}
"""The query parameters each scheme takes; any other is an error."""

_BUILT_IN: Final = frozenset(PARAMETERS)
_PLUGIN_PARAMETERS: Final = ("unit",)
_SCHEME: Final = re.compile(r"[a-z][a-z0-9-]{1,31}")


def register_scheme(scheme: str) -> None:
    """Accept ``SCHEME://NAME?unit=N`` addresses, for a driver of a protocol of its own."""
    if not _SCHEME.fullmatch(scheme):
        raise ValueError(f"scheme {scheme!r}: lower-case letters, digits and '-', 2-32 long")
    if scheme in PARAMETERS:
        raise ValueError(f"scheme {scheme!r} is already known")
    PARAMETERS[scheme] = _PLUGIN_PARAMETERS


def unregister_scheme(scheme: str) -> None:
    """Forget a scheme added by ``register_scheme`` (built-in ones stay)."""
    if scheme not in _BUILT_IN:
        PARAMETERS.pop(scheme, None)


@dataclass(frozen=True, slots=True)
class DeviceAddress:
    """A parsed device URL. ``bus`` names what the device shares a wire or socket with.

    ``unit`` is the device's id on its bus: the Modbus unit id, or the OSDP PD address
    (``address=``). ``host`` is the TCP host, or the MAC of a BLE device; ``path`` the
    serial device of modbus-rtu, serial and osdp. Fields a scheme has no parameter
    for keep their defaults.
    """

    protocol: str
    """The scheme: a ``Protocol`` for the built-in ones, or a registered scheme."""
    host: str = ""
    port: int = 0
    path: str = ""
    unit: int = 1
    baud: int = 9600
    parity: Parity = "N"
    bytesize: ByteSize = 8
    stopbits: StopBits = 1
    baud_given: bool = field(default=False, compare=False)
    """Whether the URL said ``baud=``; if not, a serial device runs at its profile's
    rate, and ``str()`` leaves ``baud`` out for it. Not part of equality: an address
    parses back equal either way."""

    @property
    def bus(self) -> str:
        """Devices with the same bus get one request at a time (RS-485 is half duplex)."""
        if self.protocol is Protocol.MODBUS_TCP:
            return f"tcp://{self._host_port}"
        if self.protocol is Protocol.BLE:
            return "ble"  # every band shares the gateway's one adapter
        return f"{self.protocol}://{self.host}{self.path}"

    @property
    def _host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        """The address with every setting spelt out; it parses back to an equal address."""
        line = f"baud={self.baud}&parity={self.parity}"
        if self.protocol is Protocol.MODBUS_TCP:
            return f"modbus-tcp://{self._host_port}?unit={self.unit}"
        if self.protocol is Protocol.MODBUS_RTU:
            return f"modbus-rtu://{self.path}?{line}&unit={self.unit}"
        if self.protocol is Protocol.SERIAL:
            # Without baud= the profile's rate applies: spelling out 9600 would be wrong.
            rate = f"baud={self.baud}&" if self.baud_given else ""
            framing = f"bytesize={self.bytesize}&stopbits={self.stopbits}"
            return f"serial://{self.path}?{rate}parity={self.parity}&{framing}"
        if self.protocol is Protocol.OSDP:
            return f"osdp://{self.path}?address={self.unit}&baud={self.baud}"
        if self.protocol is Protocol.BLE:
            return f"ble://{self.host}"
        return f"{self.protocol}://{self.host}?unit={self.unit}"


def parse_address(url: str, *, listening: bool = False) -> DeviceAddress:
    """Parse a device URL, or with ``listening`` where a simulator serves.

    Raises AddressError saying what is wrong: for a parameter the scheme does not
    take, the parameters it does take.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise AddressError(url, f"not a URL: {exc}") from None
    if parts.scheme not in PARAMETERS:
        known = ", ".join(f"{p}://" for p in PARAMETERS)
        raise AddressError(url, f"unknown scheme {parts.scheme!r}; use one of {known}")
    protocol = Protocol(parts.scheme) if parts.scheme in _BUILT_IN else parts.scheme
    if parts.fragment:
        raise AddressError(url, f"unexpected #{parts.fragment}; a device address has no fragment")
    query = _query(url, protocol, parts.query)
    if protocol is Protocol.MODBUS_TCP:
        return _tcp(url, parts, query, listening=listening)
    if protocol not in _BUILT_IN:
        if not parts.netloc or parts.path not in ("", "/"):
            raise AddressError(url, f"expected {protocol}://NAME?unit=N")
        return DeviceAddress(protocol, host=parts.netloc, unit=_unit(url, query, listening=False))
    if protocol is Protocol.BLE:
        mac = parts.netloc.upper()
        if not _MAC.fullmatch(mac) or parts.path not in ("", "/"):
            raise AddressError(url, "expected ble://AA:BB:CC:DD:EE:FF (the device's MAC address)")
        return DeviceAddress(protocol, host=mac)
    if parts.netloc or not parts.path.startswith("/"):
        raise AddressError(url, f"expected {protocol}:///dev/ttyUSB0 (three slashes)")
    given = "baud" in query
    if protocol is Protocol.OSDP:
        pd_address = _integer(url, "address", query.get("address", "0"), 0, 126)
        baud = _choice(url, "baud", query.get("baud", "9600"), _OSDP_BAUDS)
        return DeviceAddress(
            protocol, path=parts.path, unit=pd_address, baud=baud, baud_given=given
        )
    baud = _integer(url, "baud", query.get("baud", "9600"), 300, 4_000_000)
    parity = _choice(url, "parity", query.get("parity", "N").upper(), _PARITIES)
    if protocol is Protocol.MODBUS_RTU:
        unit = _unit(url, query, listening=listening)
        return DeviceAddress(
            protocol, path=parts.path, unit=unit, baud=baud, parity=parity, baud_given=given
        )
    return DeviceAddress(
        protocol,
        path=parts.path,
        baud=baud,
        baud_given=given,
        parity=parity,
        bytesize=_choice(url, "bytesize", query.get("bytesize", "8"), _BYTESIZES),
        stopbits=_choice(url, "stopbits", query.get("stopbits", "1"), _STOPBITS),
    )


def _query(url: str, protocol: str, text: str) -> dict[str, str]:
    """The query's parameters by name, each one the scheme takes, given once, with a value."""
    valid = PARAMETERS[protocol]
    takes = f"valid parameters: {', '.join(valid)}" if valid else f"a {protocol} address takes none"
    query: dict[str, str] = {}
    for item in text.split("&") if text else ():
        name, equals, value = item.partition("=")
        if name not in valid:
            if not name:
                problem = "an empty parameter (a stray & or =)"
            elif any(name in names for names in PARAMETERS.values()):
                problem = f"parameter {name!r} does not apply to {protocol} addresses"
            else:
                problem = f"unknown parameter {name!r}"
            raise AddressError(url, f"{problem}; {takes}")
        if not equals or not value:
            raise AddressError(url, f"parameter {name!r} has no value; write {name}=VALUE")
        if name in query:
            raise AddressError(url, f"parameter {name!r} is given twice")
        query[name] = value
    return query


def _tcp(url: str, parts: SplitResult, query: dict[str, str], *, listening: bool) -> DeviceAddress:
    if not parts.hostname:
        raise AddressError(url, "expected modbus-tcp://HOST:PORT?unit=N")
    if "@" in parts.netloc:
        raise AddressError(url, "Modbus TCP has no user name or password; remove the part up to @")
    if parts.path not in ("", "/"):
        raise AddressError(url, f"a modbus-tcp address has no path, yet {parts.path!r} follows")
    port = _port(url, parts, listening=listening)
    unit = _unit(url, query, listening=listening)
    return DeviceAddress(Protocol.MODBUS_TCP, host=parts.hostname, port=port, unit=unit)


def _port(url: str, parts: SplitResult, *, listening: bool) -> int:
    low = 0 if listening else 1
    out_of_range = AddressError(url, f"port must be a number from {low} to 65535")
    try:
        port = parts.port
    except ValueError:
        raise out_of_range from None
    if port is None and parts.netloc.endswith(":"):
        raise out_of_range
    if port is None and listening:
        raise AddressError(
            url, "give the port to serve on (0: any free port), as in modbus-tcp://127.0.0.1:5020"
        )
    if port is None:
        return 502
    if port < low:
        raise out_of_range
    return port


def _unit(url: str, query: dict[str, str], *, listening: bool) -> int:
    # Many Modbus TCP devices answer unit 0, so a device address may name it; on a
    # serial line it is the broadcast that no device answers, so nothing serves it.
    return _integer(url, "unit", query.get("unit", "1"), 1 if listening else 0, 247)


def _integer(url: str, name: str, text: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise AddressError(url, f"{name} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


def _choice(url: str, name: str, text: str, choices: dict[str, _T]) -> _T:
    if text not in choices:
        *first, last = choices
        raise AddressError(url, f"{name} must be {', '.join(first)} or {last}, not {text!r}")
    return choices[text]
