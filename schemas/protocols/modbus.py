"""Modbus addressing: a point is a register, a pair of registers, a bit or a coil.

Serves Modbus RTU and Modbus TCP alike; the device's address URL picks the
transport (docs/design.md section 12). The settings are the device's limits, which
``edge.drivers.modbus.plan`` obeys when it joins points into as few reads as allowed.
"""

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from schemas.addressing import Addressing, register
from schemas.strict import Strict


class ByteOrder(StrEnum):
    BIG = "big"
    LITTLE = "little"


class ValueType(StrEnum):
    BOOL = "bool"
    U16 = "u16"
    S16 = "s16"
    U32 = "u32"
    S32 = "s32"
    F32 = "f32"

    @property
    def registers(self) -> int:
        """How many 16-bit registers a value of this type spans."""
        return 2 if self in (ValueType.U32, ValueType.S32, ValueType.F32) else 1


class ModbusTable(StrEnum):
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    INPUT_REGISTER = "input_register"
    HOLDING_REGISTER = "holding_register"

    @property
    def is_bit_table(self) -> bool:
        return self in (ModbusTable.COIL, ModbusTable.DISCRETE_INPUT)

    @property
    def code(self) -> str:
        """The short name installers' tools and device manuals use (``IR``, ``HR``)."""
        return _TABLE_CODES[self]


_TABLE_CODES = {
    ModbusTable.COIL: "coil",
    ModbusTable.DISCRETE_INPUT: "DI",
    ModbusTable.INPUT_REGISTER: "IR",
    ModbusTable.HOLDING_REGISTER: "HR",
}


class ModbusAddress(Strict):
    """Where a point lives on a Modbus device (zero-based PDU address, as on the wire)."""

    table: ModbusTable
    address: Annotated[int, Field(ge=0, le=65535)]
    type: ValueType = ValueType.U16
    byte_order: ByteOrder = ByteOrder.BIG
    word_order: ByteOrder = ByteOrder.BIG
    bit: Annotated[int, Field(ge=0, le=15)] | None = Field(
        default=None, description="Take one bit of a 16-bit register as a boolean."
    )

    @model_validator(mode="after")
    def _type_fits_table(self) -> Self:
        if self.table.is_bit_table and self.type is not ValueType.BOOL:
            raise ValueError(f"a {self.table} point holds one bit: type must be bool")
        if not self.table.is_bit_table and self.type is ValueType.BOOL and self.bit is None:
            raise ValueError("a bool in a register table needs 'bit' (0-15)")
        if self.bit is not None and self.type not in (ValueType.BOOL, ValueType.U16):
            raise ValueError("'bit' applies to a u16 register read as bool")
        return self


class ModbusSettings(Strict):
    """Limits of a Modbus device, used to plan the fewest reads per poll."""

    max_registers_per_read: Annotated[int, Field(ge=1, le=125)] = 125
    max_bits_per_read: Annotated[int, Field(ge=1, le=2000)] = 2000
    max_gap: Annotated[int, Field(ge=0, le=125)] = Field(
        default=0, description="Unused addresses a single read may span to join two points."
    )
    default_unit: Annotated[int, Field(ge=0, le=247)] = 1


register(
    Addressing(
        key="modbus",
        protocols=frozenset({"modbus-rtu", "modbus-tcp"}),
        point=ModbusAddress,
        settings=ModbusSettings,
    )
)
