"""A plain Modbus register table: the stand-in for a device model nobody has simulated yet.

It knows nothing of profiles or engineering units: the caller gives the four tables
(coils, discrete inputs, input registers, holding registers) as address -> value,
says which coils and holding registers a master may write, and changes values with
the setters. ``profile_device`` builds one from a device profile for ``anju sim
device`` when the profile id has no dedicated model; a dedicated model
(``SmokeDetector``, ``DoorController``) is better wherever behaviour matters, because
this device has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from firmware_sim import IllegalDataAddress

__all__ = ["RegisterDevice"]

_U16_MAX: Final = 0xFFFF


def _check_words(table: str, image: Mapping[int, int]) -> None:
    for address, value in image.items():
        if not 0 <= address <= _U16_MAX:
            raise ValueError(f"{table} address {address} outside 0-65535")
        if not 0 <= value <= _U16_MAX:
            raise ValueError(f"{table} {address}: value {value} is not a u16 word")


class RegisterDevice:
    """A Modbus device that is only its register tables.

    The set of addresses is fixed at construction (a server builds its tables from
    it). Reads of an address not given, and writes to one not declared writable, are
    refused with ``IllegalDataAddress`` (Modbus exception 2). :meth:`power_cycle`
    returns every table to the values given at construction.
    """

    def __init__(
        self,
        *,
        model: str = "generic Modbus device",
        coils: Mapping[int, bool] | None = None,
        discrete_inputs: Mapping[int, bool] | None = None,
        input_registers: Mapping[int, int] | None = None,
        holding_registers: Mapping[int, int] | None = None,
        writable_coils: Iterable[int] = (),
        writable_holding_registers: Iterable[int] = (),
    ) -> None:
        """Raises ``ValueError`` for an address outside 0-65535, a word outside
        0-65535, or a writable address that is not in its table."""
        self._model = model
        self._initial: tuple[dict[int, bool], dict[int, bool], dict[int, int], dict[int, int]] = (
            dict(coils or {}),
            dict(discrete_inputs or {}),
            dict(input_registers or {}),
            dict(holding_registers or {}),
        )
        for table, bits in (("coil", self._initial[0]), ("discrete input", self._initial[1])):
            _check_words(table, {address: int(bit) for address, bit in bits.items()})
        _check_words("input register", self._initial[2])
        _check_words("holding register", self._initial[3])
        self._writable_coils = frozenset(writable_coils)
        self._writable_holding = frozenset(writable_holding_registers)
        for name, writable, known in (
            ("coil", self._writable_coils, frozenset(self._initial[0])),
            ("holding register", self._writable_holding, frozenset(self._initial[3])),
        ):
            missing = sorted(writable - known)
            if missing:
                raise ValueError(f"writable {name} {missing[0]} is not in the {name} table")
        self._coils: dict[int, bool] = {}
        self._discrete: dict[int, bool] = {}
        self._input: dict[int, int] = {}
        self._holding: dict[int, int] = {}
        self.power_cycle()

    @property
    def model(self) -> str:
        """The model name the caller gave (shown by ``anju sim``)."""
        return self._model

    # -- the served image ------------------------------------------------------------------

    def coils(self) -> dict[int, bool]:
        """Every coil by address."""
        return dict(self._coils)

    def discrete_inputs(self) -> dict[int, bool]:
        """Every discrete input by address."""
        return dict(self._discrete)

    def input_registers(self) -> dict[int, int]:
        """Every input register by address."""
        return dict(self._input)

    def holding_registers(self) -> dict[int, int]:
        """Every holding register by address."""
        return dict(self._holding)

    def write_holding_registers(self, address: int, values: Sequence[int]) -> None:
        """A master's write (function codes 6 and 16), applied only if every address is writable.

        Raises ``IllegalDataAddress`` naming the first address that is not.
        """
        addresses = range(address, address + len(values))
        refused = [a for a in addresses if a not in self._writable_holding]
        if refused:
            raise IllegalDataAddress(
                f"holding register {refused[0]} is not writable", address=refused[0]
            )
        self._holding.update(zip(addresses, values, strict=True))

    def write_coils(self, address: int, values: Sequence[bool]) -> None:
        """A master's coil write (function codes 5 and 15), applied only if every coil is writable.

        Raises ``IllegalDataAddress`` naming the first coil that is not.
        """
        addresses = range(address, address + len(values))
        refused = [a for a in addresses if a not in self._writable_coils]
        if refused:
            raise IllegalDataAddress(f"coil {refused[0]} is not writable", address=refused[0])
        self._coils.update(zip(addresses, values, strict=True))

    def power_cycle(self) -> None:
        """Return every table to the values given at construction."""
        coils, discrete, inputs, holding = self._initial
        self._coils = dict(coils)
        self._discrete = dict(discrete)
        self._input = dict(inputs)
        self._holding = dict(holding)

    # -- what the caller changes -----------------------------------------------------------

    def set_coil(self, address: int, on: bool) -> None:
        """Set one coil; raises ``IllegalDataAddress`` if the device has no such coil."""
        _require(self._coils, address, "coil")
        self._coils[address] = on

    def set_discrete_input(self, address: int, on: bool) -> None:
        """Set one discrete input; raises ``IllegalDataAddress`` if there is no such input."""
        _require(self._discrete, address, "discrete input")
        self._discrete[address] = on

    def set_input_registers(self, address: int, words: Sequence[int]) -> None:
        """Set consecutive input registers from ``address`` (a multi-word value in one go).

        Raises ``IllegalDataAddress`` for an address not in the table and ``ValueError``
        for a word outside 0-65535; nothing changes then.
        """
        _set_words(self._input, address, words, "input register")

    def set_holding_registers(self, address: int, words: Sequence[int]) -> None:
        """Set consecutive holding registers from ``address``, checked as for input registers."""
        _set_words(self._holding, address, words, "holding register")


def _require(table: Mapping[int, object], address: int, name: str) -> None:
    if address not in table:
        raise IllegalDataAddress(f"no {name} {address}", address=address)


def _set_words(table: dict[int, int], address: int, words: Sequence[int], name: str) -> None:
    addresses = range(address, address + len(words))
    for a, word in zip(addresses, words, strict=True):
        _require(table, a, name)
        if not 0 <= word <= _U16_MAX:
            raise ValueError(f"{name} {a}: value {word} is not a u16 word")
    table.update(zip(addresses, words, strict=True))
