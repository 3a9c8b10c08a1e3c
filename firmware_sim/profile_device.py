"""A ``RegisterDevice`` laid out from a device profile, for models nobody has simulated.

``anju sim device`` serves one when a profile id has no dedicated simulator, so an
installer can rehearse any Modbus model. Unlike the dedicated simulators, this
device is written from the profile rather than a datasheet: it behaves like nothing
and cannot catch a profile that misreads its device. The caller loads the profile;
this module reads no file.

Values are encoded with ``register_encoding``, never with the gateway's decoder, so
that a gateway polling this device still checks its own decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from firmware_sim.register_device import RegisterDevice
from firmware_sim.register_encoding import decode_words, encode_words
from schemas.profile import DeviceProfile, Point
from schemas.protocols.modbus import ModbusAddress, ModbusTable
from schemas.vocabulary import Metric

__all__ = ["describe_points", "register_device_for_profile"]

_PLAUSIBLE: Final[Mapping[Metric, float]] = {
    Metric.BATTERY: 100.0,
    Metric.TEMPERATURE: 21.0,
    Metric.HEART_RATE: 72.0,
    Metric.RSSI: -60.0,
}
_TRUE: Final = ("1", "true", "on", "yes")
_FALSE: Final = ("0", "false", "off", "no")


def _modbus_points(profile: DeviceProfile) -> list[tuple[Point, ModbusAddress]]:
    return [
        (point, point.address)
        for point in profile.points
        if isinstance(point.address, ModbusAddress)
    ]


def _parse_bool(name: str, text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"{name}={text!r}: give true or false")


def _starting_value(point: Point, text: str | None) -> float:
    """The engineering value a register point starts at: as set, else a plausible one."""
    if text is None:
        return 0.0 if point.metric is None else _PLAUSIBLE.get(point.metric, 0.0)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{point.name}={text!r}: give a number") from None


def _encoded(point: Point, address: ModbusAddress, value: float) -> list[int]:
    try:
        return encode_words((value - point.offset) / point.scale, address)
    except ValueError as exc:
        raise ValueError(
            f"{point.name}={value:g} does not fit its {address.type} register ({exc})"
        ) from None


def _with_bit(word: int, address: ModbusAddress, bit: int, on: bool) -> int:
    """``word`` with ``bit`` of its ``u16`` value (in the address's byte order) set or cleared."""
    value = int(decode_words([word], address))
    mask = 1 << bit
    return encode_words(value | mask if on else value & ~mask, address)[0]


def register_device_for_profile(
    profile: DeviceProfile, settings: Mapping[str, str] | None = None
) -> RegisterDevice:
    """A ``RegisterDevice`` with every register and bit the profile's points use.

    Values start at a plausible reading for the point's metric (a full battery, 21 °C)
    or 0, encoded with the point's type, scale and word and byte order; ``settings``
    (point name -> engineering value, ``true``/``false`` for bits) override them.
    Writable points are writable. Raises ``ValueError`` naming the point for a
    non-Modbus profile, an unknown point name, or a value its type cannot hold.
    """
    points = _modbus_points(profile)
    if not points:
        raise ValueError(
            f"profile {profile.id} speaks {profile.protocol}; only a Modbus profile "
            "can be served as a register table"
        )
    wanted = dict(settings or {})
    unknown = sorted(set(wanted) - {point.name for point, _ in points})
    if unknown:
        names = ", ".join(point.name for point, _ in points)
        raise ValueError(f"profile {profile.id} has no point {unknown[0]!r} (points: {names})")
    bits: dict[ModbusTable, dict[int, bool]] = {
        ModbusTable.COIL: {},
        ModbusTable.DISCRETE_INPUT: {},
    }
    words: dict[ModbusTable, dict[int, int]] = {
        ModbusTable.INPUT_REGISTER: {},
        ModbusTable.HOLDING_REGISTER: {},
    }
    writable: dict[ModbusTable, set[int]] = {
        ModbusTable.COIL: set(),
        ModbusTable.HOLDING_REGISTER: set(),
    }
    # Whole-register values first, then single bits, so a bit point set by name lands
    # in a status word that its own point left at 0.
    ordered = sorted(points, key=lambda pair: pair[1].bit is not None)
    for point, address in ordered:
        text = wanted.get(point.name)
        span = range(address.address, address.address + address.type.registers)
        if address.table.is_bit_table:
            bits[address.table][address.address] = text is not None and _parse_bool(
                point.name, text
            )
        elif address.bit is not None:
            table = words[address.table]
            word = table.setdefault(address.address, 0)
            if text is not None:
                on = _parse_bool(point.name, text)
                table[address.address] = _with_bit(word, address, address.bit, on)
        else:
            value = _starting_value(point, text)
            words[address.table].update(zip(span, _encoded(point, address, value), strict=True))
        if point.writable and address.table in writable:
            writable[address.table].update(span)
    return RegisterDevice(
        model=f"{profile.model} (register table from profile {profile.id})",
        coils=bits[ModbusTable.COIL],
        discrete_inputs=bits[ModbusTable.DISCRETE_INPUT],
        input_registers=words[ModbusTable.INPUT_REGISTER],
        holding_registers=words[ModbusTable.HOLDING_REGISTER],
        writable_coils=writable[ModbusTable.COIL],
        writable_holding_registers=writable[ModbusTable.HOLDING_REGISTER],
    )


def describe_points(device: RegisterDevice, profile: DeviceProfile) -> dict[str, str]:
    """Every point's engineering value as the device reports it now, by point name.

    ``anju sim`` prints it at start and after each change, so an installer sees what
    a master's write did to the device.
    """
    tables: dict[ModbusTable, Callable[[], Mapping[int, int]] | Callable[[], Mapping[int, bool]]]
    tables = {
        ModbusTable.COIL: device.coils,
        ModbusTable.DISCRETE_INPUT: device.discrete_inputs,
        ModbusTable.INPUT_REGISTER: device.input_registers,
        ModbusTable.HOLDING_REGISTER: device.holding_registers,
    }
    shown: dict[str, str] = {}
    for point, address in _modbus_points(profile):
        image = tables[address.table]()
        if address.table.is_bit_table:
            shown[point.name] = str(bool(image[address.address]))
            continue
        span = range(address.address, address.address + address.type.registers)
        raw = decode_words([int(image[a]) for a in span], address)
        if address.bit is not None:
            shown[point.name] = str(bool(int(raw) >> address.bit & 1))
        else:
            shown[point.name] = f"{raw * point.scale + point.offset:g}"
    return shown
