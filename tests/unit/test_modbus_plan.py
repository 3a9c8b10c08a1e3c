"""Register decoding and read planning, fed with register values written from the standard."""

import math
from pathlib import Path

import pytest

from edge.drivers.modbus.plan import decode_point, decode_registers, encode_value, plan_reads
from edge.normalise import polled_points
from schemas.profile import DeviceProfile, load_profile
from schemas.protocols.modbus import ModbusAddress

PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"


def address(**fields: object) -> ModbusAddress:
    return ModbusAddress.model_validate({"table": "holding_register", "address": 0, **fields})


@pytest.mark.parametrize(
    ("registers", "fields", "expected"),
    [
        ([0x1234], {"type": "u16"}, 0x1234),
        ([0xFFC9], {"type": "s16"}, -55),
        ([0x8000], {"type": "s16"}, -32768),
        ([0x3412], {"type": "u16", "byte_order": "little"}, 0x1234),
        ([0x0001, 0x86A0], {"type": "u32"}, 100_000),
        ([0x86A0, 0x0001], {"type": "u32", "word_order": "little"}, 100_000),
        ([0xFFFE, 0x7960], {"type": "s32"}, -100_000),
        # 3.14159 as IEEE 754 single is 0x40490FD0: "ABCD", "CDAB", "BADC", "DCBA".
        ([0x4049, 0x0FD0], {"type": "f32"}, 3.14159),
        ([0x0FD0, 0x4049], {"type": "f32", "word_order": "little"}, 3.14159),
        ([0x4940, 0xD00F], {"type": "f32", "byte_order": "little"}, 3.14159),
        (
            [0xD00F, 0x4940],
            {"type": "f32", "byte_order": "little", "word_order": "little"},
            3.14159,
        ),
        ([0b0000_0000_0010_0100], {"type": "bool", "bit": 2}, True),
        ([0b0000_0000_0010_0100], {"type": "bool", "bit": 3}, False),
        ([0b1000_0000_0000_0000], {"type": "u16", "bit": 15}, True),
    ],
)
def test_decode_registers(registers: list[int], fields: dict[str, object], expected: float) -> None:
    value = decode_registers(registers, address(**fields))
    assert math.isclose(value, expected, rel_tol=1e-6)
    assert type(value) is type(expected)


def profile_with(points: list[dict[str, object]], **modbus: object) -> DeviceProfile:
    return DeviceProfile.model_validate(
        {
            "id": "test-device",
            "kind": "smoke",
            "protocol": "modbus-tcp",
            "manufacturer": "test",
            "model": "test",
            "modbus": modbus,
            "points": points,
        }
    )


def point(name: str, table: str, addr: int, kind: str = "u16") -> dict[str, object]:
    fields: dict[str, object] = {"table": table, "address": addr, "type": kind}
    return {"name": name, "modbus": fields}


def test_plan_coalesces_within_gap_and_limit() -> None:
    profile = profile_with(
        [
            point("a", "input_register", 0),
            point("b", "input_register", 1, "u32"),
            point("c", "input_register", 6),
            point("d", "input_register", 20),
            point("e", "holding_register", 0),
        ],
        max_gap=3,
        max_registers_per_read=10,
    )
    reads = [
        (r.table.value, r.start, r.count, [p.name for p in r.points]) for r in plan_reads(profile)
    ]
    assert reads == [
        ("input_register", 0, 7, ["a", "b", "c"]),
        ("input_register", 20, 1, ["d"]),
        ("holding_register", 0, 1, ["e"]),
    ]


def test_plan_respects_max_registers_per_read() -> None:
    points = [point(f"p{i}", "input_register", i) for i in range(10)]
    reads = plan_reads(profile_with(points, max_registers_per_read=4))
    assert [(r.start, r.count) for r in reads] == [(0, 4), (4, 4), (8, 2)]


def test_plan_without_gap_allowance_splits_at_holes() -> None:
    points = [point("a", "input_register", 0), point("b", "input_register", 2)]
    assert len(plan_reads(profile_with(points))) == 2
    assert len(plan_reads(profile_with(points, max_gap=1))) == 1


def test_smoke_detector_polls_in_one_read() -> None:
    profile = load_profile(PROFILES / "smoke" / "anju-smoke-mb.yaml")
    reads = plan_reads(profile, polled_points(profile))
    assert [(r.table.value, r.start, r.count) for r in reads] == [("input_register", 0, 5)]
    block = [0b1, 412, 0xFFC9, 3, 88]
    values = {p.name: decode_point(reads[0], block, p) for p in reads[0].points}
    assert values == {"status": 1, "obscuration": 412, "temperature": -55, "co": 3, "battery": 88}


def test_bits_decode_from_coil_block() -> None:
    profile = profile_with(
        [
            {
                "name": "x",
                "metric": "door.open",
                "modbus": {"table": "coil", "address": 3, "type": "bool"},
            },
            {
                "name": "y",
                "metric": "door.locked",
                "modbus": {"table": "coil", "address": 5, "type": "bool"},
            },
        ],
        max_gap=4,
    )
    (read,) = plan_reads(profile)
    assert (read.start, read.count) == (3, 3)
    block = [True, False, False]
    assert [decode_point(read, block, p) for p in read.points] == [True, False]


@pytest.mark.parametrize(
    ("fields", "scale", "value", "registers"),
    [
        ({"type": "u16"}, 0.01, 3.5, [350]),
        ({"type": "s16"}, 0.1, -5.5, [0xFFC9]),
        ({"type": "u32", "word_order": "little"}, 1.0, 100_000, [0x86A0, 0x0001]),
        ({"type": "f32"}, 1.0, 3.14159, [0x4049, 0x0FD0]),
    ],
)
def test_encode_value_inverts_decode(
    fields: dict[str, object], scale: float, value: float, registers: list[int]
) -> None:
    profile = profile_with(
        [
            {
                "name": "w",
                "scale": scale,
                "writable": True,
                "modbus": {"table": "holding_register", "address": 0, **fields},
            }
        ]
    )
    assert encode_value(value, profile.points[0]) == registers
