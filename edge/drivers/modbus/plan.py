"""Plans the fewest Modbus reads that cover a profile's points, and decodes their values.

Pure code, no I/O: a plan is computed once per device profile, and each poll feeds
the register blocks the driver read back through ``decode_point``. Coalescing obeys the
device's limits from its profile (registers per request, allowed gap), the way
Telegraf's request optimisation does, because every request on an RS-485 line costs
a round trip at 9600 baud.
"""

import struct
from dataclasses import dataclass
from typing import Literal

from edge.drivers.contract import RawValue
from schemas.profile import DeviceProfile, Point
from schemas.protocols.modbus import (
    ByteOrder,
    ModbusAddress,
    ModbusSettings,
    ModbusTable,
    ValueType,
)

_ORDER: dict[ByteOrder, Literal["big", "little"]] = {
    ByteOrder.BIG: "big",
    ByteOrder.LITTLE: "little",
}

_FORMATS = {
    ValueType.U16: struct.Struct(">H"),
    ValueType.S16: struct.Struct(">h"),
    ValueType.U32: struct.Struct(">I"),
    ValueType.S32: struct.Struct(">i"),
    ValueType.F32: struct.Struct(">f"),
}


@dataclass(frozen=True, slots=True)
class PlannedRead:
    """One request: ``count`` registers (or bits) from ``start`` in ``table``."""

    table: ModbusTable
    start: int
    count: int
    points: tuple[Point, ...]


def _modbus(point: Point) -> ModbusAddress:
    return point.address_as(ModbusAddress)


def plan_reads(profile: DeviceProfile, points: list[Point] | None = None) -> list[PlannedRead]:
    """Group ``points`` (default: every point of the profile) into as few reads as allowed.

    Points are taken per table in address order; a point joins the current read when
    the gap before it is within ``max_gap`` and the read stays within the per-request
    limit, else it starts a new read.
    """
    settings = profile.settings_as(ModbusSettings) or ModbusSettings()
    chosen = points if points is not None else profile.points
    reads: list[PlannedRead] = []
    for table in ModbusTable:
        in_table = sorted(
            (p for p in chosen if _modbus(p).table is table), key=lambda p: _modbus(p).address
        )
        limit = (
            settings.max_bits_per_read if table.is_bit_table else settings.max_registers_per_read
        )
        start = end = 0
        group: list[Point] = []
        for point in in_table:
            address = _modbus(point)
            width = 1 if table.is_bit_table else address.type.registers
            fits = (
                group
                and address.address - end <= settings.max_gap
                and max(end, address.address + width) - start <= limit
            )
            if not fits:
                if group:
                    reads.append(PlannedRead(table, start, end - start, tuple(group)))
                start, end, group = address.address, address.address, []
            group.append(point)
            end = max(end, address.address + width)
        if group:
            reads.append(PlannedRead(table, start, end - start, tuple(group)))
    return reads


def decode_registers(registers: list[int], address: ModbusAddress) -> RawValue:
    """Decode one value from the 16-bit registers that hold it (already sliced to width).

    Word order says which register holds the high word; byte order says which byte of
    each register comes first. Big/big is the Modbus convention ("ABCD").
    """
    words = list(registers)
    if address.word_order is ByteOrder.LITTLE:
        words.reverse()
    data = b"".join(word.to_bytes(2, _ORDER[address.byte_order]) for word in words)
    if address.bit is not None:
        return bool(int.from_bytes(data, "big") >> address.bit & 1)
    value: int | float = _FORMATS[address.type].unpack(data)[0]
    return value


def decode_point(read: PlannedRead, block: list[int] | list[bool], point: Point) -> RawValue:
    """The raw value of ``point`` from the block that ``read`` returned."""
    address = _modbus(point)
    offset = address.address - read.start
    if read.table.is_bit_table:
        return bool(block[offset])
    width = address.type.registers
    return decode_registers([int(word) for word in block[offset : offset + width]], address)


def encode_value(value: float, point: Point) -> list[int]:
    """Registers to write for an engineering ``value`` of a writable register point."""
    address = _modbus(point)
    raw = (value - point.offset) / point.scale
    fmt = _FORMATS[address.type]
    data = fmt.pack(raw if address.type is ValueType.F32 else round(raw))
    words = [
        int.from_bytes(data[i : i + 2], _ORDER[address.byte_order]) for i in range(0, len(data), 2)
    ]
    if address.word_order is ByteOrder.LITTLE:
        words.reverse()
    return words
