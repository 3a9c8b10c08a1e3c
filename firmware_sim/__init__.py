"""Simulated field devices that speak the real protocol bytes.

A simulator here *is* the device, written from its datasheet (its register map), never
from Anju's device profiles: when a profile and a device disagree, the tests that read
a simulator through the edge drivers catch it. For that reason this package imports
nothing of ``edge`` or ``cloud``, encodes register values on its own and reads no
profile file. The one device laid out from a profile (``profile_device``) is a
stand-in for rehearsals, and checks no profile.

Modules:

- ``smoke_detector``: the SD-MB100 smoke detector, a pure model and register image.
- ``door_controller``: the AC-MB210 single-door access controller, likewise.
- ``register_device``: a plain register table for any Modbus profile without a model.
- ``profile_device``: lays out a ``register_device`` from a profile the caller loaded.
- ``register_encoding``: how a typed value sits in 16-bit registers (byte and word order).
- ``modbus_server``: hosts models behind a Modbus TCP (or RTU serial) server.
- ``faults``: per-unit fault injection (drop, delay, garble, exception, reboot).
- ``models``: the registry from profile id to simulated model.
- ``scenario``: small timed scripts that drive served devices (for demos and the CLI).
- ``pty_pair``: a socat pseudo-terminal pair, the serial line of RTU tests.
- ``band_models``: the CB-300 care band and CB-100 beacon band, pure models and their bytes.
- ``ble_radio``: the simulated BLE air, and the gateway's dongle served as HCI over TCP.
- ``wearables``: hosts the bands on the air (``BandField``), with a command line.
- ``serial_line``: a simulator's end of a serial line, paced at its baud rate.
- ``camera_box``: the VA-SR400 camera analytics box's checksummed records on a serial line.
- ``osdp_readers``: OSDP door readers (libosdp peripherals) on one simulated RS-485 line.
- ``osdp_console``: the command line of ``osdp_readers`` (``anju sim readers``).

Exceptions raised by this package::

    SimError
    ├── RegisterError             a register access the device refuses
    │   ├── IllegalDataAddress    no such register in that table (Modbus exception 2)
    │   └── IllegalDataValue      the device rejects the value written (Modbus exception 3)
    ├── SimServerError            a simulator server failed to start or stop
    │   └── UnknownUnitError      no device served under that unit id
    ├── PtyError                  socat missing, or its pseudo-terminals did not appear
    ├── ScenarioError             a scenario file that cannot run (names file and step)
    ├── UnknownModelError         no simulated model for a profile id
    ├── UnknownBandError          no simulated band with that address or name
    ├── BandScenarioError         a band scenario that cannot start (name or argument)
    └── UnknownReaderError        no simulated OSDP reader at that address on the line
"""

from __future__ import annotations

__all__ = [
    "BandScenarioError",
    "IllegalDataAddress",
    "IllegalDataValue",
    "PtyError",
    "RegisterError",
    "ScenarioError",
    "SimError",
    "SimServerError",
    "UnknownBandError",
    "UnknownModelError",
    "UnknownUnitError",
]


class SimError(Exception):
    """Base of every error raised by the simulators."""


class RegisterError(SimError):
    """A register access the simulated device refuses.

    ``address`` is the first register of the refused access, so a server can answer
    with the matching Modbus exception and a log line can name the register.
    """

    def __init__(self, message: str, *, address: int) -> None:
        super().__init__(message)
        self.address = address


class IllegalDataAddress(RegisterError):
    """The address (or part of the range) is not a register of that table."""


class IllegalDataValue(RegisterError):
    """The device rejects the value written to a register."""


class SimServerError(SimError):
    """A simulator server could not start or stop; the message names its address."""


class UnknownUnitError(SimServerError, LookupError):
    """A server was asked about a unit id it does not serve; ``unit`` names it."""

    def __init__(self, unit: int, served: list[int]) -> None:
        super().__init__(
            f"no simulated device as unit {unit}; served units: "
            f"{', '.join(str(u) for u in served) or '(none)'}"
        )
        self.unit = unit
        self.served = served


class PtyError(SimError):
    """A pseudo-terminal pair could not be made; the message says why and what to install."""


class ScenarioError(SimError):
    """A scenario that cannot run: the message names the file and the step (``at``, ``unit``).

    ``step`` is the zero-based index of the offending step, or None for the file as a whole.
    """

    def __init__(self, message: str, *, step: int | None = None, unit: int | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.unit = unit


class UnknownModelError(SimError, LookupError):
    """No simulated model is registered under the requested profile id."""

    def __init__(self, profile_id: str, known: list[str]) -> None:
        super().__init__(
            f"no simulated device for profile {profile_id!r}; "
            f"known profiles: {', '.join(known) or '(none)'}"
        )
        self.profile_id = profile_id
        self.known = known


class UnknownBandError(SimError, LookupError):
    """No simulated band has the requested address or name; ``band`` names the request."""

    def __init__(self, band: str, count: int) -> None:
        super().__init__(
            f"no band {band!r} ({count} bands: CB-300 F0:A1:00:00:xx:xx or ANJU-CB-xxxx, "
            "CB-100 F0:B1:00:00:xx:xx or ANJU-BB-xxxx, xxxx counting from 0001 in hex)"
        )
        self.band = band


class BandScenarioError(SimError, ValueError):
    """A scenario a band cannot start: an unknown name or a bad argument; ``band`` names it."""

    def __init__(self, message: str, *, band: str) -> None:
        super().__init__(f"band {band}: {message}")
        self.band = band
