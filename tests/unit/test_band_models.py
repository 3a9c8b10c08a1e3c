"""The CB-300 and CB-100 band models, byte by byte against their datasheets.

The datasheets are the comment headers of device_profiles/wearable/anju-wearable-ble.yaml
and anju-wearable-beacon.yaml. The Heart Rate Measurement layout is the Bluetooth SIG's
(Heart Rate Service 1.0, characteristic 0x2A37): a flags byte (bit 0 rate as UINT16,
bit 1 contact detected, bit 2 contact supported, bit 3 Energy Expended present, bit 4 RR
intervals present), the rate, then Energy Expended (UINT16, kJ), then RR intervals
(UINT16 each, 1/1024 s), little-endian. AD structures are length, type, data (Core
Specification Vol 3, Part C, 11); legacy advertising data holds 31 bytes.
"""

from __future__ import annotations

import pytest

from firmware_sim.band_models import (
    MAX_RR_INTERVALS,
    AlertFlags,
    BeaconBand,
    CareBand,
    Scenario,
)

# The vendor service 7a1e0001-5c3b-4e8a-9d2f-6b0c4a8e1f30, least significant byte first.
VENDOR_UUID_ON_AIR = bytes.fromhex("301f8e4a0c6b2f9d8a4e3b5c01001e7a")


def hrm_is_well_formed(value: bytes) -> bool:
    """The Heart Rate Measurement rules: the flags say exactly what follows."""
    if not value:
        return False
    flags = value[0]
    fixed = 1 + (2 if flags & 0x01 else 1) + (2 if flags & 0x08 else 0)
    rest = len(value) - fixed
    if rest < 0:
        return False
    if flags & 0x10:
        return rest >= 2 and rest % 2 == 0
    return rest == 0


def rr_units(value: bytes) -> list[int]:
    """The RR intervals of a well-formed measurement with a UINT8 rate and no energy."""
    assert value[0] & 0x09 == 0
    return [int.from_bytes(value[i : i + 2], "little") for i in range(2, len(value), 2)]


def ad_structures(data: bytes) -> list[tuple[int, bytes]]:
    """Split advertising data into (type, data), checking every length byte."""
    found = []
    i = 0
    while i < len(data):
        length = data[i]
        assert length >= 1, f"empty AD structure at {i}"
        assert i + 1 + length <= len(data), f"AD structure at {i} overruns the data"
        found.append((data[i + 1], data[i + 2 : i + 1 + length]))
        i += 1 + length
    return found


def sampled(band: CareBand | BeaconBand, seconds: int, start: float = 0.0) -> None:
    for t in range(1, seconds + 1):
        band.advance(start + t)


# -- identity -------------------------------------------------------------------------


def test_names_and_static_random_addresses() -> None:
    assert (CareBand(1).address, CareBand(1).name) == ("F0:A1:00:00:00:01", "ANJU-CB-0001")
    assert (BeaconBand(0x12AB).address, BeaconBand(0x12AB).name) == (
        "F0:B1:00:00:12:AB",
        "ANJU-BB-12AB",
    )
    # A static random address has the two most significant bits set.
    assert int(CareBand(7).address[:2], 16) >> 6 == 0b11
    assert (CareBand(1).model, BeaconBand(1).model) == ("CB-300", "CB-100")
    for number in (0, 0x10000):
        with pytest.raises(ValueError, match="1-65535"):
            CareBand(number)


# -- CB-300 GATT values ---------------------------------------------------------------


def test_heart_rate_measurement_flags_rate_and_rr_units() -> None:
    band = CareBand(3, seed=11)
    beats = 0
    for t in range(1, 121):
        band.advance(float(t))
        value = band.heart_rate_measurement()
        assert hrm_is_well_formed(value), value.hex()
        # UINT8 rate, contact supported and detected, no Energy Expended.
        assert value[0] & 0x0F == 0x06
        assert value[1] == band.heart_rate_bpm
        assert 30 <= value[1] <= 220
        rrs = rr_units(value)
        assert bool(value[0] & 0x10) == bool(rrs)
        assert tuple(rrs) == band.rr_intervals
        for rr in rrs:
            # 1/1024 s: an interval of 60/bpm seconds, give or take the variability.
            assert rr == pytest.approx(60 / band.heart_rate_bpm * 1024, rel=0.12)
        beats += len(rrs)
    # Two minutes of beats at a resting rate of 58-78 bpm (plus walking).
    assert 100 <= beats <= 2 * 110


def test_heart_rate_measurement_golden_bytes() -> None:
    band = CareBand(1, seed=5)
    band.advance(1.0)
    rate, rrs = band.heart_rate_bpm, band.rr_intervals
    expected = bytes([0x16 if rrs else 0x06, rate]) + b"".join(
        rr.to_bytes(2, "little") for rr in rrs
    )
    assert band.heart_rate_measurement() == expected


def test_rr_intervals_fit_one_notification_on_a_compressed_clock() -> None:
    band = CareBand(1)
    band.advance(600.0)
    assert len(band.rr_intervals) == MAX_RR_INTERVALS
    value = band.heart_rate_measurement()
    assert len(value) == 20  # the most a notification holds at the default ATT MTU
    assert hrm_is_well_formed(value)


def test_status_fields_at_their_offsets() -> None:
    band = CareBand(2, seed=3)
    sampled(band, 30)
    value = band.status()
    assert len(value) == 8
    assert value[0] == 0
    assert value[1] == band.motion
    assert int.from_bytes(value[2:6], "little") == band.steps
    assert int.from_bytes(value[6:8], "little", signed=True) == round(band.skin_temperature_c * 100)
    assert 30.0 < band.skin_temperature_c < 37.0


def test_battery_level_is_one_byte_percent() -> None:
    band = CareBand(4, seed=2)
    assert band.battery_level() == bytes([band.battery_pct])
    assert 0 <= band.battery_pct <= 100


# -- advertisements -------------------------------------------------------------------


def test_care_band_advertising_and_scan_response() -> None:
    band = CareBand(1)
    data = band.advertising_data()
    assert len(data) <= 31
    assert ad_structures(data) == [
        (0x01, b"\x06"),
        (0x09, b"ANJU-CB-0001"),
        (0x02, b"\x0d\x18"),
    ]
    response = band.scan_response_data()
    assert response == bytes([17, 0x07]) + VENDOR_UUID_ON_AIR
    # The vendor UUID could not have gone in the advertising data beside the name.
    assert len(data) + len(response) > 31


def test_beacon_manufacturer_data_and_advertising_data() -> None:
    band = BeaconBand(9, seed=4)
    sampled(band, 5)
    value = band.manufacturer_data()
    assert value == bytes([0xFF, 0xFF, 0x00, band.battery_pct, band.heart_rate_bpm, band.motion])
    data = band.advertising_data()
    assert len(data) <= 31
    assert ad_structures(data) == [(0x01, b"\x06"), (0x09, b"ANJU-BB-0009"), (0xFF, value)]
    band.start(Scenario.SOS, now=5.0)
    band.start(Scenario.FALL, now=5.0)
    assert band.manufacturer_data()[2] == 0x03


# -- scenarios ------------------------------------------------------------------------


def test_sos_is_set_at_once_and_clears_after_120_s_or_on_cancel() -> None:
    band = CareBand(1)
    sampled(band, 10)
    band.start("sos", now=10.0)
    assert band.alert_flags == AlertFlags.SOS
    assert band.status()[0] == 0x01
    band.advance(129.9)
    assert band.status()[0] == 0x01
    band.advance(130.0)
    assert band.status()[0] == 0x00
    band.start(Scenario.SOS, now=131.0)
    band.start(Scenario.CANCEL, now=132.0)
    assert band.status()[0] == 0x00


def test_fall_is_an_impact_then_stillness() -> None:
    band = CareBand(5, seed=8)
    sampled(band, 5)
    band.start(Scenario.FALL, now=5.0)
    value = band.status()
    assert value[0] == 0x02
    assert value[1] == 255
    steps = band.steps
    sampled(band, 30, start=5.0)
    assert band.motion <= 2
    assert band.steps == steps
    # The flag stays 60 s; the wearer stays down.
    band.advance(65.0)
    assert band.alert_flags == AlertFlags.NONE
    assert band.motion <= 2


def test_fall_recovery_moves_again_within_seconds() -> None:
    band = CareBand(5, seed=8)
    sampled(band, 5)
    band.start(Scenario.FALL_RECOVERY, now=5.0, still_s=3)
    assert band.status()[:2] == bytes([0x02, 255])
    band.advance(6.0)
    band.advance(7.0)
    assert band.motion <= 2
    steps = band.steps
    sampled(band, 4, start=7.0)
    assert band.motion >= 60
    assert band.steps > steps
    assert band.alert_flags == AlertFlags.FALL_SUSPECTED


def test_hr_drift_climbs_about_45_bpm_over_its_duration() -> None:
    band = CareBand(6, seed=1)
    sampled(band, 60)
    assert band.motion < 60, "the wearer should be at rest before the drift"
    resting = band.heart_rate_bpm
    band.start(Scenario.HR_DRIFT, now=60.0, duration_s=600)
    for t in range(61, 361):
        band.advance(float(t))
    assert band.heart_rate_bpm == pytest.approx(resting + 22.5, abs=6)
    for t in range(361, 661):
        band.advance(float(t))
    assert band.heart_rate_bpm == pytest.approx(resting + 45, abs=6)
    rrs = band.rr_intervals
    assert rrs
    assert sum(rrs) / len(rrs) == pytest.approx(60 / band.heart_rate_bpm * 1024, rel=0.1)


def test_battery_dying_falls_to_a_few_percent() -> None:
    band = BeaconBand(2, seed=2)
    band.start(Scenario.BATTERY_DYING, now=0.0, duration_s=60)
    sampled(band, 30)
    assert 3 < band.battery_pct < 60
    sampled(band, 40, start=30.0)
    assert band.battery_pct == 3
    assert band.manufacturer_data()[3] == 3


def test_walk_away_and_return() -> None:
    band = BeaconBand(1)
    assert band.in_range
    band.start(Scenario.WALK_AWAY, now=0.0)
    assert not band.in_range
    band.start(Scenario.RETURN, now=1.0)
    assert band.in_range


def test_normal_day_ends_every_scenario() -> None:
    band = CareBand(1)
    for scenario in (Scenario.SOS, Scenario.FALL, Scenario.WALK_AWAY, Scenario.GARBAGE):
        band.start(scenario, now=0.0)
    band.start(Scenario.HR_DRIFT, now=0.0, duration_s=10)
    band.start(Scenario.NORMAL_DAY, now=1.0)
    sampled(band, 5, start=1.0)
    assert band.alert_flags == AlertFlags.NONE
    assert band.in_range
    assert not band.garbage
    assert len(band.status()) == 8


def test_garbage_is_malformed_by_the_specification() -> None:
    band = CareBand(1, seed=9)
    beacon = BeaconBand(1, seed=9)
    band.start(Scenario.GARBAGE, now=0.0)
    beacon.start(Scenario.GARBAGE, now=0.0)
    hrms = set()
    for t in range(1, 9):
        band.advance(float(t))
        beacon.advance(float(t))
        hrm = band.heart_rate_measurement()
        hrms.add(hrm[:1])
        assert not hrm_is_well_formed(hrm), hrm.hex()
        assert len(band.status()) < 8
        value = beacon.manufacturer_data()
        assert value[:2] == b"\xff\xff"
        assert len(value) < 6
        # The AD structures stay well formed: only their contents are short.
        assert ad_structures(beacon.advertising_data())[-1] == (0xFF, value)
    # Every kind of malformed measurement came round: flags alone (RR promised), a
    # UINT16 rate with one byte, an odd byte of RR intervals, one byte of energy.
    assert {h[0] & 0x19 for h in hrms} == {0x10, 0x01, 0x08}
    band.start(Scenario.NORMAL_DAY, now=9.0)
    band.advance(10.0)
    assert hrm_is_well_formed(band.heart_rate_measurement())


def test_steps_restart_at_local_midnight() -> None:
    band = CareBand(1, seed=4, time_of_day_s=86_400 - 30)
    band.start(Scenario.FALL, now=0.0)  # still: no steps of its own
    sampled(band, 20)
    assert band.steps > 0
    sampled(band, 20, start=20.0)
    assert band.steps == 0


def test_same_seed_same_bytes() -> None:
    def run(seed: int) -> list[bytes]:
        band = CareBand(1, seed=seed)
        out = []
        for t in range(1, 40):
            band.advance(t * 1.5)
            out += [band.heart_rate_measurement(), band.status(), band.battery_level()]
        return out

    assert run(1) == run(1)
    assert run(1) != run(2)


@pytest.mark.parametrize(
    ("scenario", "args", "message"),
    [
        ("dance", {}, "no scenario 'dance'; known scenarios: normal_day, sos"),
        ("sos", {"still_s": 1.0}, "scenario sos takes no arguments, not still_s"),
        ("hr_drift", {"delta": 1.0}, "takes delta_bpm, duration_s, not delta"),
        ("battery_dying", {"duration_s": -1.0}, "finite and >= 0"),
    ],
)
def test_scenario_errors_name_the_fix(scenario: str, args: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CareBand(1).start(scenario, now=0.0, **args)
