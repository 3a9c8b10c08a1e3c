"""GATT values decoded from bytes written here from the specifications.

Heart Rate Measurement (Bluetooth SIG, Heart Rate Service 1.0, characteristic 0x2A37):
a flags byte, then the heart rate (UINT8, or UINT16 when flags bit 0 is set), then
Energy Expended (UINT16, kJ) when bit 3 is set, then RR intervals (UINT16 each, in
1/1024 s) when bit 4 is set. Bits 1-2 are the Sensor Contact Status: bit 2 says the
feature is supported, bit 1 that contact is detected (meaningful only with bit 2).
All multi-byte fields are little-endian.
"""

from __future__ import annotations

import pytest

from edge.drivers.ble.gatt import (
    HeartRateMeasurement,
    MalformedValue,
    decode_point,
    heart_rate_measurement,
)
from schemas.protocols.ble import BleAddress

HRM = HeartRateMeasurement

VECTORS = [
    # flags 0x00: UINT8 rate, no contact feature, no energy, no RR.
    (bytes([0x00, 72]), HRM(72, None, None, ())),
    # flags 0x01: UINT16 rate 0x012C = 300 (a 16-bit value above 255).
    (bytes([0x01, 0x2C, 0x01]), HRM(300, None, None, ())),
    # flags 0x02: contact "detected" without "supported": not reported.
    (bytes([0x02, 60]), HRM(60, None, None, ())),
    # flags 0x04: contact supported, not detected.
    (bytes([0x04, 0]), HRM(0, False, None, ())),
    # flags 0x06: contact supported and detected.
    (bytes([0x06, 58]), HRM(58, True, None, ())),
    # flags 0x07: UINT16 rate 95, contact supported and detected.
    (bytes([0x07, 95, 0x00]), HRM(95, True, None, ())),
    # flags 0x08: energy expended 0x0102 = 258 kJ after a UINT8 rate.
    (bytes([0x08, 80, 0x02, 0x01]), HRM(80, None, 258, ())),
    # flags 0x09: UINT16 rate 80, energy 0 kJ.
    (bytes([0x09, 80, 0x00, 0x00, 0x00]), HRM(80, None, 0, ())),
    # flags 0x10: one RR interval of 1024/1024 s = 1000 ms.
    (bytes([0x10, 60, 0x00, 0x04]), HRM(60, None, None, (1000.0,))),
    # flags 0x10: three RR intervals: 512 (500 ms), 1 (0.9765625 ms), 65535.
    (
        bytes([0x10, 61, 0x00, 0x02, 0x01, 0x00, 0xFF, 0xFF]),
        HRM(61, None, None, (500.0, 1000 / 1024, 65535 * 1000 / 1024)),
    ),
    # flags 0x16: contact supported and detected, two RR intervals 800 and 820 units.
    (
        bytes([0x16, 75, 0x20, 0x03, 0x34, 0x03]),
        HRM(75, True, None, (800 * 1000 / 1024, 820 * 1000 / 1024)),
    ),
    # flags 0x18: energy 10 kJ then RR 1000 units.
    (bytes([0x18, 70, 0x0A, 0x00, 0xE8, 0x03]), HRM(70, None, 10, (1000 * 1000 / 1024,))),
    # flags 0x1F: everything: UINT16 rate 0x0100 = 256, contact detected, energy
    # 0xFFFF = 65535 kJ, one RR of 0x0400 = 1024 units.
    (
        bytes([0x1F, 0x00, 0x01, 0xFF, 0xFF, 0x00, 0x04]),
        HRM(256, True, 65535, (1000.0,)),
    ),
    # flags 0x1D: UINT16, contact supported but not detected, energy, RR; reserved bits 0.
    (
        bytes([0x1D, 48, 0x00, 0x05, 0x00, 0x00, 0x05]),
        HRM(48, False, 5, (1250.0,)),
    ),
    # Reserved bits 5-7 set are ignored, as the specification says to.
    (bytes([0xE0, 66]), HRM(66, None, None, ())),
]


@pytest.mark.parametrize(("value", "expected"), VECTORS, ids=[v.hex(" ") for v, _ in VECTORS])
def test_heart_rate_measurement_vectors(value: bytes, expected: HeartRateMeasurement) -> None:
    assert heart_rate_measurement(value) == expected


MALFORMED = [
    (b"", "flags byte is missing"),
    (bytes([0x00]), "need at least 2 bytes"),
    (bytes([0x01, 72]), "need at least 3 bytes"),
    (bytes([0x08, 72, 0x01]), "need at least 4 bytes"),
    (bytes([0x09, 72, 0x00, 0x01]), "need at least 5 bytes"),
    (bytes([0x10, 72]), "RR intervals flagged but 0 bytes"),
    (bytes([0x10, 72, 0x00, 0x04, 0x01]), "RR intervals flagged but 3 bytes"),
    (bytes([0x00, 72, 0x00, 0x04]), "2 bytes after the fields"),
]


@pytest.mark.parametrize(
    ("value", "problem"), MALFORMED, ids=[v.hex(" ") or "empty" for v, _ in MALFORMED]
)
def test_a_malformed_measurement_names_the_problem_and_the_bytes(
    value: bytes, problem: str
) -> None:
    with pytest.raises(MalformedValue) as caught:
        heart_rate_measurement(value)
    assert problem in str(caught.value)
    assert caught.value.value == value
    assert caught.value.source == "characteristic 2a37"


def _address(**fields: object) -> BleAddress:
    return BleAddress.model_validate(
        {"service": "180d", "characteristic": "2a37", "access": "notify", **fields}
    )


def test_points_take_their_field_of_a_measurement() -> None:
    value = bytes([0x1E, 77, 0x2A, 0x00, 0x00, 0x03, 0x00, 0x04])  # contact, 42 kJ, 2 RRs
    decoder = {"decoder": "heart_rate_measurement"}
    assert decode_point(_address(**decoder), value) == (77,)
    assert decode_point(_address(**decoder, field="rr_interval_ms"), value) == (750.0, 1000.0)
    assert decode_point(_address(**decoder, field="sensor_contact"), value) == (True,)
    assert decode_point(_address(**decoder, field="energy_expended_kj"), value) == (42,)
    bare = bytes([0x00, 77])
    assert decode_point(_address(**decoder, field="rr_interval_ms"), bare) == ()
    assert decode_point(_address(**decoder, field="sensor_contact"), bare) == ()


def test_battery_level_is_one_unsigned_byte() -> None:
    battery = BleAddress.model_validate(
        {"service": "180f", "characteristic": "2a19", "access": "read", "decoder": "uint8"}
    )
    assert decode_point(battery, bytes([0x64])) == (100,)
    assert decode_point(battery, bytes([0x05])) == (5,)
    with pytest.raises(MalformedValue, match="needs 1 bytes, got 0"):
        decode_point(battery, b"")


VENDOR = "7a1e0001-5c3b-4e8a-9d2f-6b0c4a8e1f30"
STATUS = "7a1e0004-5c3b-4e8a-9d2f-6b0c4a8e1f30"


def test_a_vendor_layout_is_fields_at_offsets() -> None:
    """One vendor characteristic: alert flags (u8), steps (u32 LE), skin temperature in
    0.01 degC (s16 LE), declared as three points at offsets 0, 1 and 5."""
    value = bytes([0x03, 0x10, 0x27, 0x00, 0x00, 0x7E, 0x0D])  # SOS|fall, 10000, 3454
    points = {
        "alert": {"decoder": "uint8", "offset": 0},
        "steps": {"decoder": "uint32_le", "offset": 1},
        "skin": {"decoder": "sint16_le", "offset": 5},
    }
    decoded = {
        name: decode_point(
            BleAddress.model_validate(
                {"service": VENDOR, "characteristic": STATUS, "access": "notify", **point}
            ),
            value,
        )
        for name, point in points.items()
    }
    assert decoded == {"alert": (3,), "steps": (10000,), "skin": (3454,)}
    cold = bytes([0x00, 0, 0, 0, 0, 0x38, 0xFF])  # -200: -2.00 degC
    skin = BleAddress.model_validate(
        {"service": VENDOR, "characteristic": STATUS, "access": "notify", **points["skin"]}
    )
    assert decode_point(skin, cold) == (-200,)
    with pytest.raises(MalformedValue, match="sint16_le at byte 5 needs 7 bytes, got 6"):
        decode_point(skin, cold[:6])


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"decoder": "uint8", "field": "bpm"}, "field applies to heart_rate_measurement"),
        ({"decoder": "heart_rate_measurement", "offset": 2}, "offset applies"),
        ({"decoder": "heart_rate_measurement", "field": "pulse"}, "bpm"),
    ],
)
def test_a_profile_cannot_mix_a_decoder_with_the_wrong_options(
    fields: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        _address(**fields)
