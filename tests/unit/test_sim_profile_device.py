"""A register table laid out from a device profile (``firmware_sim.profile_device``).

A value set by point name must come back by that name through the simulator's
registers, and read the same through the gateway's decoder, which the simulator does
not share: two encodings written apart that agree are the check on both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from edge.drivers.modbus.plan import decode_point, plan_reads
from firmware_sim.profile_device import describe_points, register_device_for_profile
from firmware_sim.register_device import RegisterDevice
from schemas.profile import DeviceProfile, load_profiles
from schemas.protocols.modbus import ModbusTable

SHIPPED = Path(__file__).resolve().parents[2] / "device_profiles"


def _point(name: str, table: str, address: int, **fields: object) -> dict[str, object]:
    """A profile point: the layout keys go under ``modbus``, the rest are point fields."""
    modbus = {"table": table, "address": address}
    layout = {
        key: fields.pop(key) for key in ("type", "bit", "byte_order", "word_order") if key in fields
    }
    return {"name": name, "modbus": modbus | layout, **fields}


EVERY_TYPE = DeviceProfile.model_validate(
    {
        "id": "test-every-type",
        "kind": "door",
        "protocol": "modbus-tcp",
        "manufacturer": "Test",
        "model": "T-ALL",
        "points": [
            _point("status", "input_register", 0),
            _point("open", "input_register", 0, type="bool", bit=0),
            _point("tamper", "input_register", 0, type="bool", bit=11),
            _point(
                "temperature", "input_register", 1, type="s16", scale=0.1, metric="temperature_c"
            ),
            _point("steps", "input_register", 2, type="u32", word_order="little"),
            _point("drift", "input_register", 4, type="s32", offset=-1000),
            _point("voltage", "input_register", 6, type="f32"),
            _point(
                "current", "input_register", 8, type="f32", byte_order="little", word_order="little"
            ),
            _point("swapped", "input_register", 10, byte_order="little"),
            _point("swapped_flag", "input_register", 11, type="bool", bit=9, byte_order="little"),
            _point("limit", "holding_register", 100, scale=0.5, writable=True),
            _point("relay", "coil", 0, type="bool", writable=True),
            _point("contact", "discrete_input", 3, type="bool"),
        ],
    }
)

SETTINGS = {
    "open": "true",
    "tamper": "on",
    "temperature": "-12.5",
    "steps": "100000",
    "drift": "-123456",
    "voltage": "229.5",
    "current": "-3.25",
    "swapped": "513",
    "swapped_flag": "yes",
    "limit": "45",
    "relay": "1",
    "contact": "true",
}
"""A value for every point but ``status``, which its bit points fill in."""

EXPECTED = {
    "status": str(1 << 0 | 1 << 11),
    "open": "True",
    "tamper": "True",
    "temperature": "-12.5",
    "steps": "100000",
    "drift": "-123456",
    "voltage": "229.5",
    "current": "-3.25",
    "swapped": "513",
    "swapped_flag": "True",
    "limit": "45",
    "relay": "True",
    "contact": "True",
}


def _gateway_reads(device: RegisterDevice, profile: DeviceProfile) -> dict[str, str]:
    """What the gateway's own decoder makes of the device's registers, as describe shows."""
    tables: dict[ModbusTable, Mapping[int, int]] = {
        ModbusTable.COIL: device.coils(),
        ModbusTable.DISCRETE_INPUT: device.discrete_inputs(),
        ModbusTable.INPUT_REGISTER: device.input_registers(),
        ModbusTable.HOLDING_REGISTER: device.holding_registers(),
    }
    read: dict[str, str] = {}
    for planned in plan_reads(profile):
        image = tables[planned.table]
        block = [image[a] for a in range(planned.start, planned.start + planned.count)]
        for point in planned.points:
            raw = decode_point(planned, block, point)
            if isinstance(raw, bool) or planned.table.is_bit_table:
                read[point.name] = str(bool(raw))
            else:
                read[point.name] = f"{raw * point.scale + point.offset:g}"
    return read


def test_every_value_type_round_trips_through_the_registers() -> None:
    device = register_device_for_profile(EVERY_TYPE, SETTINGS)

    assert describe_points(device, EVERY_TYPE) == EXPECTED
    assert _gateway_reads(device, EVERY_TYPE) == EXPECTED


def test_the_words_follow_each_points_layout() -> None:
    """Worked out by hand: -122456 is 0xFFFE21A8, 229.5 is 0x43658000, -3.25 0xC0500000."""
    inputs = register_device_for_profile(EVERY_TYPE, SETTINGS).input_registers()

    assert inputs[0] == 0x0801
    assert inputs[1] == 0x10000 - 125
    assert (inputs[2], inputs[3]) == (0x86A0, 0x0001)
    assert (inputs[4], inputs[5]) == (0xFFFE, 0x21A8)
    assert (inputs[6], inputs[7]) == (0x4365, 0x8000)
    assert (inputs[8], inputs[9]) == (0x0000, 0x50C0)
    assert (inputs[10], inputs[11]) == (0x0102, 0x0002)


def test_unset_points_start_plausible_and_writable_points_are_writable() -> None:
    device = register_device_for_profile(EVERY_TYPE)

    shown = describe_points(device, EVERY_TYPE)
    assert shown["temperature"] == "21"
    assert shown["steps"] == "0"
    assert shown["drift"] == "0"
    assert shown["relay"] == "False"
    device.write_holding_registers(100, [120])
    device.write_coils(0, [True])
    shown = describe_points(device, EVERY_TYPE)
    assert (shown["limit"], shown["relay"]) == ("60", "True")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"temperature": "warm"}, r"temperature='warm': give a number"),
        ({"limit": "40000"}, r"limit=40000 does not fit its u16 register \(80000 is outside"),
        ({"temperature": "4000"}, r"temperature=4000 does not fit its s16 register"),
        ({"voltage": "1e39"}, r"voltage=1e\+39 does not fit its f32 register"),
        ({"relay": "maybe"}, r"relay='maybe': give true or false"),
        ({"open": "2"}, r"open='2': give true or false"),
        ({"nope": "1"}, r"has no point 'nope' \(points: status, open, tamper"),
    ],
)
def test_a_bad_setting_names_the_point(setting: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        register_device_for_profile(EVERY_TYPE, setting)


def test_a_profile_without_modbus_points_is_refused() -> None:
    wearable = load_profiles(SHIPPED)["anju-wearable-ble"]

    with pytest.raises(ValueError, match="speaks ble; only a Modbus profile"):
        register_device_for_profile(wearable)


def test_shipped_profiles_lay_out_with_settings() -> None:
    profiles = load_profiles(SHIPPED)
    door = profiles["anju-door-mb"]
    device = register_device_for_profile(
        door, {"door_open": "true", "serial_number": "70000", "held_open_limit": "30"}
    )
    inputs = device.input_registers()
    assert inputs[0] == 0x0001
    assert (inputs[2], inputs[3]) == (1, 70000 - 65536)
    assert device.holding_registers() == {100: 30, 101: 0}
    device.write_holding_registers(100, [45])
    shown = describe_points(device, door)
    assert shown["door_open"] == "True"
    assert shown["held_open_limit"] == "45"
    smoke = profiles["anju-smoke-mb"]
    plausible = describe_points(register_device_for_profile(smoke), smoke)
    assert plausible["battery"] == "100"
    assert plausible["temperature"] == "21"
    with pytest.raises(ValueError, match="event_count=70000 does not fit"):
        register_device_for_profile(door, {"event_count": "70000"})
