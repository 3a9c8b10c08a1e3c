"""What may be written to a Modbus point, and the words that write it.

Checked before anything is sent, for every writer (an installer's ``anju device
write``, a cloud command, the fire linkage): a value a register cannot hold, or a
point Modbus cannot write on its own, is refused with the reason rather than
truncated on the wire.
"""

from edge.drivers.modbus.plan import encode_value
from edge.errors import PointError
from schemas.profile import DeviceProfile, Point
from schemas.protocols.modbus import ModbusAddress, ModbusTable, ValueType

_INTEGER_RANGES: dict[ValueType, tuple[int, int]] = {
    ValueType.U16: (0, 0xFFFF),
    ValueType.S16: (-0x8000, 0x7FFF),
    ValueType.U32: (0, 0xFFFF_FFFF),
    ValueType.S32: (-0x8000_0000, 0x7FFF_FFFF),
}


def encode_for_write(profile: DeviceProfile, point_name: str, value: float) -> list[int]:
    """The register words (or, for a coil, one 0/1) that set ``point_name`` to ``value``.

    Raises PointError when the point is not writable, lives in a read-only table or in
    one bit of a register, or when ``value`` is not a multiple of the point's
    resolution or does not fit its type once scaled.
    """
    point = writable_point(profile, point_name)
    address = modbus_address(profile, point)
    if address.table is ModbusTable.COIL:
        if value not in (0.0, 1.0):
            raise PointError(profile.id, point.name, f"a coil holds 0 or 1, not {value:g}")
        return [int(value)]
    if address.type is ValueType.F32:
        try:
            return encode_value(value, point)
        except OverflowError:
            raise PointError(profile.id, point.name, f"{value:g} does not fit a f32") from None
    raw = (value - point.offset) / point.scale
    if abs(raw - round(raw)) > 1e-6 * max(1.0, abs(raw)):
        step = point.scale
        raise PointError(
            profile.id, point.name, f"{value:g} is not a multiple of its resolution {step:g}"
        )
    low, high = _INTEGER_RANGES[address.type]
    if not low <= round(raw) <= high:
        lowest, highest = sorted(bound * point.scale + point.offset for bound in (low, high))
        raise PointError(
            profile.id,
            point.name,
            f"{value:g} does not fit a {address.type} (it takes {lowest:g} to {highest:g})",
        )
    return encode_value(value, point)


def writable_point(profile: DeviceProfile, point_name: str) -> Point:
    """The point called ``point_name`` if a Modbus master can write it.

    Raises PointError naming the point and, for a point that is not writable, the
    points that are.
    """
    point = point_named(profile, point_name)
    address = modbus_address(profile, point)
    if not point.writable:
        writable = ", ".join(p.name for p in profile.points if p.writable) or "none"
        raise PointError(
            profile.id,
            point.name,
            f"the profile does not mark it writable (writable points: {writable})",
        )
    if address.table not in (ModbusTable.HOLDING_REGISTER, ModbusTable.COIL):
        raise PointError(
            profile.id,
            point.name,
            f"it lives in the {address.table} table, which Modbus cannot write",
        )
    if address.bit is not None:
        raise PointError(
            profile.id,
            point.name,
            f"it is bit {address.bit} of holding register {address.address}; "
            "writing one bit would overwrite the others",
        )
    return point


def point_named(profile: DeviceProfile, name: str) -> Point:
    """The point called ``name``; raises PointError listing the profile's points."""
    try:
        return profile.point(name)
    except KeyError:
        known = ", ".join(point.name for point in profile.points)
        raise PointError(profile.id, name, f"no such point (points: {known})") from None


def modbus_address(profile: DeviceProfile, point: Point) -> ModbusAddress:
    """Where ``point`` lives; raises PointError for a point of another protocol."""
    address = point.address
    if not isinstance(address, ModbusAddress):
        raise PointError(profile.id, point.name, "it has no Modbus address")
    return address
