"""Simulated field devices that speak the real protocol bytes.

A simulator here *is* the device, written from its datasheet (its register map), never
from Anju's device profiles: when a profile and a device disagree, the tests that read
a simulator through the edge drivers catch it. For that reason this package imports
nothing of ``edge`` or ``cloud`` and reads no profile file.

Modules:

- ``smoke_detector``: the SD-MB100 smoke detector, a pure model and register image.
- ``modbus_server``: hosts models behind a Modbus TCP (or RTU serial) server.
- ``models``: the registry from profile id to simulated model.
- ``scenario``: small timed scripts that drive a model (for demos and the CLI).

Exceptions raised by this package::

    SimError
    ├── RegisterError             a register access the device refuses
    │   ├── IllegalDataAddress    no such register in that table (Modbus exception 2)
    │   └── IllegalDataValue      the device rejects the value written (Modbus exception 3)
    ├── SimServerError            a simulator server failed to start or stop
    └── UnknownModelError         no simulated model for a profile id
"""

from __future__ import annotations

__all__ = [
    "IllegalDataAddress",
    "IllegalDataValue",
    "RegisterError",
    "SimError",
    "SimServerError",
    "UnknownModelError",
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


class UnknownModelError(SimError, LookupError):
    """No simulated model is registered under the requested profile id."""

    def __init__(self, profile_id: str, known: list[str]) -> None:
        super().__init__(
            f"no simulated device for profile {profile_id!r}; "
            f"known profiles: {', '.join(known) or '(none)'}"
        )
        self.profile_id = profile_id
        self.known = known
