"""How a typed value sits in 16-bit Modbus registers, written from the Modbus conventions.

The simulator encodes on its own rather than borrowing the gateway's decoder: a
device built with the code under test would agree with it even where both are wrong.

The conventions: integers are two's complement, ``f32`` is IEEE 754 single
precision, and the default layout is big-endian throughout ("ABCD": the high word in
the first register, the high byte first in each register). A little word order puts
the low word first ("CDAB"); a little byte order swaps the two bytes of every
register ("BADC"); both together give "DCBA". A ``bool`` kept in a register (a bit
of a status word) is a bit of that register's ``u16`` value, so it is encoded as the
whole word.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Final

from schemas.protocols.modbus import ByteOrder, ModbusAddress, ValueType

__all__ = ["decode_words", "encode_words"]

_WORD_BITS: Final = 16
_WORD_MASK: Final = 0xFFFF
_F32: Final = struct.Struct(">f")
_SIGNED: Final = frozenset({ValueType.S16, ValueType.S32})


def _width(value_type: ValueType) -> int:
    return value_type.registers * _WORD_BITS


def _integer_range(value_type: ValueType) -> range:
    width = _width(value_type)
    if value_type in _SIGNED:
        return range(-(1 << (width - 1)), 1 << (width - 1))
    return range(1 << width)


def _swap_bytes(word: int) -> int:
    return (word & 0xFF) << 8 | word >> 8


def _reorder(words: list[int], address: ModbusAddress) -> list[int]:
    """Big-endian words (high word first) in the address's word and byte order, or back.

    Swapping bytes and reversing words each undo themselves, so one function serves
    both directions.
    """
    if address.byte_order is ByteOrder.LITTLE:
        words = [_swap_bytes(word) for word in words]
    if address.word_order is ByteOrder.LITTLE:
        words.reverse()
    return words


def encode_words(raw: float, address: ModbusAddress) -> list[int]:
    """The registers, first address first, that hold the raw (unscaled) value ``raw``.

    Integer types take ``raw`` rounded to the nearest integer. Raises ``ValueError``
    saying the range when the value does not fit the address's type.
    """
    if address.type is ValueType.F32:
        try:
            bits = int.from_bytes(_F32.pack(raw), "big")
        except OverflowError:
            raise ValueError(f"{raw:g} is beyond the range of an f32") from None
    else:
        span = _integer_range(address.type)
        if not math.isfinite(raw) or round(raw) not in span:
            raise ValueError(f"{raw:g} is outside {span.start} to {span.stop - 1}")
        bits = round(raw) % (1 << _width(address.type))
    high_first = [
        bits >> (_WORD_BITS * shift) & _WORD_MASK
        for shift in reversed(range(address.type.registers))
    ]
    return _reorder(high_first, address)


def decode_words(words: Sequence[int], address: ModbusAddress) -> int | float:
    """The raw (unscaled) value of the registers ``words``, as many as the type spans."""
    high_first = _reorder(list(words), address)
    bits = 0
    for word in high_first:
        bits = bits << _WORD_BITS | word
    if address.type is ValueType.F32:
        value: float = _F32.unpack(bits.to_bytes(4, "big"))[0]
        return value
    width = _width(address.type)
    if address.type in _SIGNED and bits >> (width - 1):
        return bits - (1 << width)
    return bits
