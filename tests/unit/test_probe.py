"""The pure parts of the Modbus installer tools: unit lists, plausibility, writes.

Register words are written by hand from the IEEE 754 and two's complement encodings,
not computed with the code under test.
"""

from typing import Any

import pytest

from edge.drivers.contract import RawValue
from edge.drivers.modbus.probe import (
    UnitListError,
    implausible_values,
    parse_point_value,
    parse_units,
)
from edge.drivers.modbus.writes import encode_for_write, writable_point
from edge.errors import PointError
from schemas.profile import DeviceProfile


def _profile(*points: dict[str, Any], max_gap: int = 8) -> DeviceProfile:
    return DeviceProfile.model_validate(
        {
            "id": "test-probe-mb",
            "kind": "smoke",
            "protocol": "modbus-tcp",
            "manufacturer": "Test",
            "model": "T-1",
            "modbus": {"max_gap": max_gap},
            "points": list(points),
        }
    )


STATUS = {
    "name": "status",
    "modbus": {"table": "input_register", "address": 0},
    "labels": {0: "normal", 1: "alarm", 2: "fault", 4: "self-test", 8: "tamper"},
}
CODE = {
    "name": "code",
    "modbus": {"table": "input_register", "address": 1},
    "labels": {0: "none", 1: "granted", 2: "denied", 3: "exit button"},
}
PULSE = {
    "name": "pulse",
    "modbus": {"table": "holding_register", "address": 101},
    "writable": True,
    "labels": {0: "locked"},
}
BATTERY = {
    "name": "battery",
    "metric": "battery_pct",
    "modbus": {"table": "input_register", "address": 4},
}
THRESHOLD = {
    "name": "threshold",
    "modbus": {"table": "holding_register", "address": 100},
    "scale": 0.01,
    "writable": True,
}
SETPOINT = {
    "name": "setpoint",
    "metric": "temperature_c",
    "modbus": {
        "table": "holding_register",
        "address": 200,
        "type": "f32",
        "word_order": "little",
    },
    "writable": True,
}
OFFSET = {
    "name": "offset_temp",
    "modbus": {"table": "holding_register", "address": 300, "type": "s16"},
    "scale": 0.1,
    "offset": -40,
    "writable": True,
}
RELAY = {
    "name": "relay",
    "modbus": {"table": "coil", "address": 5, "type": "bool"},
    "writable": True,
}
FLAG = {
    "name": "flag",
    "modbus": {"table": "holding_register", "address": 102, "type": "bool", "bit": 3},
    "writable": True,
}
SERIAL = {"name": "serial", "modbus": {"table": "input_register", "address": 10, "type": "u32"}}
READ_ONLY_WRITABLE = {
    "name": "measured",
    "modbus": {"table": "input_register", "address": 20},
    "writable": True,
}


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("1", [1]),
        ("1-3", [1, 2, 3]),
        ("1-10,15,20-22", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 21, 22]),
        (" 5 , 3-4 ,5", [3, 4, 5]),
        ("247", [247]),
        ("1-247", list(range(1, 248))),
    ],
)
def test_unit_lists(text: str, units: list[int]) -> None:
    assert parse_units(text) == units


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "'' is not a unit id"),
        ("1,,2", "'' is not a unit id"),
        ("0", "outside unit ids 1-247"),
        ("240-250", "outside unit ids 1-247"),
        ("10-2", "runs backwards; write 2-10"),
        ("a-b", "'a-b' is not a unit id"),
        ("1-2-3", "'1-2-3' is not a unit id"),
        ("-3", "'-3' is not a unit id"),
    ],
)
def test_bad_unit_lists_name_the_part(text: str, problem: str) -> None:
    with pytest.raises(UnitListError, match=problem) as caught:
        parse_units(text)
    assert caught.value.text == text
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("sample", "problem"),
    [
        ({"status": 0, "code": 2, "battery": 88, "setpoint": 21.5}, None),
        ({"battery": 250}, "battery 250 % outside 0 to 100"),
        ({"setpoint": float("nan")}, "setpoint reads nan"),
        ({"setpoint": 5000.0}, "setpoint 5000 °C outside -60 to 200"),
        ({"status": 0x40}, "status 64 is none of its labelled values"),
        ({"code": 9}, "code 9 is none of its labelled values"),
        ({"pulse": 300}, None),
    ],
)
def test_plausibility(sample: dict[str, RawValue], problem: str | None) -> None:
    profile = _profile(STATUS, CODE, PULSE, BATTERY, SETPOINT)
    problems = implausible_values(profile, sample)
    assert problems == ([problem] if problem else [])


def test_values_typed_by_an_installer() -> None:
    profile = _profile(THRESHOLD, PULSE, RELAY, FLAG, OFFSET)
    assert parse_point_value(profile, "threshold", "2.5") == 2.5
    assert parse_point_value(profile, "pulse", "Locked") == 0.0
    assert parse_point_value(profile, "relay", "on") == 1.0
    assert parse_point_value(profile, "relay", "FALSE") == 0.0
    assert parse_point_value(profile, "flag", "1") == 1.0
    with pytest.raises(PointError, match="'x' is not a number or one of 'locked'"):
        parse_point_value(profile, "pulse", "x")
    with pytest.raises(PointError, match="'maybe' is not on/off"):
        parse_point_value(profile, "relay", "maybe")
    with pytest.raises(PointError, match="not a finite number"):
        parse_point_value(profile, "threshold", "inf")
    with pytest.raises(PointError, match=r"no such point \(points: threshold, pulse"):
        parse_point_value(profile, "nope", "1")


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("threshold", 2.5, [250]),
        ("threshold", 655.35, [0xFFFF]),
        ("setpoint", 12.25, [0x0000, 0x4144]),  # 0x41440000, low word first
        ("setpoint", -1.0, [0x0000, 0xBF80]),
        ("offset_temp", -45.5, [0xFFC9]),  # raw -55
        ("relay", 1.0, [1]),
        ("relay", 0.0, [0]),
    ],
)
def test_encode_for_write(name: str, value: float, words: list[int]) -> None:
    profile = _profile(THRESHOLD, SETPOINT, OFFSET, RELAY)
    assert encode_for_write(profile, name, value) == words


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("battery", 1.0, "does not mark it writable \\(writable points: threshold, relay, flag"),
        ("measured", 1.0, "lives in the input_register table, which Modbus cannot write"),
        ("flag", 1.0, "bit 3 of holding register 102"),
        ("threshold", 2.555, "not a multiple of its resolution 0.01"),
        ("threshold", 700.0, "does not fit a u16 \\(it takes 0 to 655.35\\)"),
        ("threshold", -0.01, "does not fit a u16"),
        ("offset_temp", 4000.0, "does not fit a s16 \\(it takes -3316.8 to 3236.7\\)"),
        ("relay", 2.0, "a coil holds 0 or 1, not 2"),
        ("setpoint", 1e39, "1e\\+39 does not fit a f32"),
    ],
)
def test_refused_writes_name_the_point(name: str, value: float, problem: str) -> None:
    profile = _profile(BATTERY, THRESHOLD, RELAY, FLAG, OFFSET, SETPOINT, READ_ONLY_WRITABLE)
    with pytest.raises(PointError, match=problem) as caught:
        encode_for_write(profile, name, value)
    assert caught.value.point == name
    assert caught.value.profile_id == "test-probe-mb"


def test_writable_point_returns_the_point() -> None:
    profile = _profile(THRESHOLD)
    assert writable_point(profile, "threshold").name == "threshold"
