"""The simulator's own register encoding, against words worked out by hand.

The expected words follow the Modbus conventions (big-endian "ABCD" unless the
address says otherwise), not any of Anju's code: 123.456 as an IEEE 754 single is
0x42F6E979, -2 as an s32 is 0xFFFFFFFE.
"""

from __future__ import annotations

import pytest

from firmware_sim.register_encoding import decode_words, encode_words
from schemas.protocols.modbus import ByteOrder, ModbusAddress, ModbusTable, ValueType

BIG, LITTLE = ByteOrder.BIG, ByteOrder.LITTLE


def _address(
    value_type: ValueType, byte_order: ByteOrder = BIG, word_order: ByteOrder = BIG
) -> ModbusAddress:
    return ModbusAddress(
        table=ModbusTable.HOLDING_REGISTER,
        address=0,
        type=value_type,
        byte_order=byte_order,
        word_order=word_order,
    )


@pytest.mark.parametrize(
    ("address", "raw", "words"),
    [
        (_address(ValueType.U16), 513, [0x0201]),
        (_address(ValueType.U16, byte_order=LITTLE), 513, [0x0102]),
        (_address(ValueType.S16), -1, [0xFFFF]),
        (_address(ValueType.S16), -32768, [0x8000]),
        (_address(ValueType.U32), 70000, [0x0001, 0x1170]),
        (_address(ValueType.U32, word_order=LITTLE), 70000, [0x1170, 0x0001]),
        (_address(ValueType.S32), -2, [0xFFFF, 0xFFFE]),
        (_address(ValueType.F32), 123.456, [0x42F6, 0xE979]),
        (_address(ValueType.F32, word_order=LITTLE), 123.456, [0xE979, 0x42F6]),
        (_address(ValueType.F32, byte_order=LITTLE), 123.456, [0xF642, 0x79E9]),
        (_address(ValueType.F32, LITTLE, LITTLE), 123.456, [0x79E9, 0xF642]),
    ],
)
def test_encodes_the_modbus_layout_and_decodes_it_back(
    address: ModbusAddress, raw: float, words: list[int]
) -> None:
    assert encode_words(raw, address) == words
    assert decode_words(words, address) == pytest.approx(raw)


def test_integers_round_to_the_nearest_raw_value() -> None:
    assert encode_words(41.6, _address(ValueType.U16)) == [42]
    assert encode_words(-0.4, _address(ValueType.U16)) == [0]


@pytest.mark.parametrize(
    ("value_type", "raw", "message"),
    [
        (ValueType.U16, 65536, "outside 0 to 65535"),
        (ValueType.U16, -1, "outside 0 to 65535"),
        (ValueType.S16, 32768, "outside -32768 to 32767"),
        (ValueType.U32, 2.0**32, "outside 0 to 4294967295"),
        (ValueType.S32, -(2.0**31) - 1, "outside -2147483648 to 2147483647"),
        (ValueType.U16, float("nan"), "outside"),
        (ValueType.F32, 1e39, "beyond the range of an f32"),
    ],
)
def test_a_value_the_type_cannot_hold_is_refused(
    value_type: ValueType, raw: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_words(raw, _address(value_type))
