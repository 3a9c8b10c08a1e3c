"""The BLE driver's pure parts: a band's plan from its profile, the samples its values
make, advertised fields, connection slots, settings and point addresses."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.addresses import parse_address
from edge.devices import AgentDevice
from edge.drivers.ble.band import BandPlan
from edge.drivers.ble.gatt import MalformedValue
from edge.drivers.ble.radio import Advertisement, short_uuid
from edge.drivers.ble.settings import parse_settings
from edge.drivers.ble.slots import Slots
from edge.errors import ConfigError
from schemas.profile import load_profiles
from schemas.protocols.ble import BleAddress

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
HR = ("180d", "2a37")
STATUS = ("7a1e0001-5c3b-4e8a-9d2f-6b0c4a8e1f30", "7a1e0002-5c3b-4e8a-9d2f-6b0c4a8e1f30")
T = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def plan(profile: str, mac: str = "F0:A1:00:00:00:01") -> BandPlan:
    return BandPlan.of(AgentDevice("band-1", PROFILES[profile], parse_address(f"ble://{mac}"), 60))


def test_a_connected_band_subscribes_reads_and_has_presence() -> None:
    band = plan("anju-wearable-ble")
    assert band.connects
    assert band.mac == "F0:A1:00:00:00:01"
    assert set(band.notified) == {HR, STATUS}
    assert [p.name for p in band.notified[HR]] == ["heart_rate", "rr_interval"]
    assert [p.name for p in band.notified[STATUS]] == [
        "alert_flags",
        "motion",
        "steps",
        "skin_temperature",
    ]
    assert list(band.read) == [("180f", "2a19")]
    assert band.presence == "in_range"
    assert band.advertised == []


def test_a_beacon_band_is_only_heard() -> None:
    band = plan("anju-wearable-beacon", "F0:B1:00:00:00:01")
    assert not band.connects
    assert [p.name for p in band.advertised] == ["alert_flags", "battery", "heart_rate", "motion"]


def test_rr_intervals_become_one_sample_each_at_the_time_their_interval_ended() -> None:
    band = plan("anju-wearable-ble")
    # flags 0x16: contact supported and detected, RR present; 75 1/min; RR 512 and 1024
    # units (500 ms, 1000 ms), the last ending as the notification leaves.
    samples = band.gatt_values(HR, bytes([0x16, 75, 0x00, 0x02, 0x00, 0x04]), T)
    assert samples == [
        ({"heart_rate": 75}, T),
        ({"rr_interval": 500.0}, T - timedelta(milliseconds=1000)),
        ({"rr_interval": 1000.0}, T),
    ]


def test_a_notification_without_rr_intervals_makes_one_sample() -> None:
    band = plan("anju-wearable-ble")
    assert band.gatt_values(HR, bytes([0x00, 64]), T) == [({"heart_rate": 64}, T)]


def test_the_vendor_status_fields_come_from_their_offsets() -> None:
    band = plan("anju-wearable-ble")
    # flags SOS, motion 12, 4,321 steps, skin temperature 3,345 = 33.45 °C.
    value = bytes([0x01, 12]) + (4321).to_bytes(4, "little") + (3345).to_bytes(2, "little")
    ((sample, ts),) = band.gatt_values(STATUS, value, T)
    assert sample == {"alert_flags": 1, "motion": 12, "steps": 4321, "skin_temperature": 3345}
    assert ts == T


def test_a_short_status_is_malformed() -> None:
    band = plan("anju-wearable-ble")
    with pytest.raises(MalformedValue, match="needs 6 bytes, got 5"):
        band.gatt_values(STATUS, bytes([0x00, 0, 1, 2, 3]), T)


def test_advertised_fields_come_from_the_manufacturer_data() -> None:
    band = plan("anju-wearable-beacon", "F0:B1:00:00:00:01")
    heard = Advertisement(
        "F0:B1:00:00:00:01", -60, "ANJU-BB-0001", (), {0xFFFF: bytes([2, 87, 71, 5])}
    )
    assert band.advertised_values(heard) == {
        "alert_flags": 2,
        "battery": 87,
        "heart_rate": 71,
        "motion": 5,
    }
    plain = Advertisement("F0:B1:00:00:00:01", -60, "ANJU-BB-0001")
    assert band.advertised_values(plain) == {}
    short = Advertisement("F0:B1:00:00:00:01", -60, None, (), {0xFFFF: bytes([2, 87])})
    with pytest.raises(MalformedValue, match="manufacturer data 0xffff"):
        band.advertised_values(short)


@pytest.mark.parametrize(
    ("text", "short"),
    [
        ("2A37", "2a37"),
        ("00002a37-0000-1000-8000-00805f9b34fb", "2a37"),
        ("7A1E0002-5C3B-4E8A-9D2F-6B0C4A8E1F30", "7a1e0002-5c3b-4e8a-9d2f-6b0c4a8e1f30"),
    ],
)
def test_uuids_are_written_as_profiles_write_them(text: str, short: str) -> None:
    assert short_uuid(text) == short


async def test_slots_are_served_in_the_order_bands_asked() -> None:
    slots = Slots(2)
    await slots.acquire()
    await slots.acquire()
    assert not slots.contended
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.acquire()
        order.append(name)

    waiting = [asyncio.create_task(wait(name)) for name in ("c", "d")]
    await asyncio.sleep(0)
    assert slots.contended
    assert slots.held == 2
    slots.release()
    await asyncio.sleep(0)
    assert order == ["c"]
    slots.release()
    await asyncio.gather(*waiting)
    assert order == ["c", "d"]
    assert slots.held == 2
    assert not slots.contended


async def test_a_waiter_cancelled_after_its_grant_hands_the_slot_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # granted to first, which is cancelled before it runs
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, timeout=1)
    assert slots.held == 1


def test_settings_name_the_key_at_fault() -> None:
    assert parse_settings(None).adapter == "bleak:hci0"
    settings = parse_settings({"adapter": "bumble:tcp-client:127.0.0.1:7000"})
    assert (settings.backend, settings.target) == ("bumble", "tcp-client:127.0.0.1:7000")
    with pytest.raises(ConfigError, match=r"drivers\.ble\.adapter: expected bleak:hciN or bumble"):
        parse_settings({"adapter": "hci0"})
    with pytest.raises(ConfigError, match=r"drivers\.ble\.max_conections: unknown key"):
        parse_settings({"max_conections": 3})
    with pytest.raises(ConfigError, match=r"drivers\.ble\.max_connections"):
        parse_settings({"max_connections": 0})


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ({"access": "notify", "decoder": "uint8"}, "needs a service and a characteristic"),
        (
            {"access": "advertised", "decoder": "uint8"},
            "exactly one of manufacturer_id, service_data",
        ),
        (
            {"access": "advertised", "manufacturer_id": 1, "decoder": "heart_rate_measurement"},
            "fixed-width decoder",
        ),
        (
            {"access": "advertised", "manufacturer_id": 1, "service": "180d", "decoder": "uint8"},
            "takes no service or characteristic",
        ),
        ({"access": "presence", "decoder": "uint8"}, "takes nothing else"),
        ({"access": "advertised", "manufacturer_id": 1}, "needs a decoder"),
        (
            {
                "access": "read",
                "service": "180f",
                "characteristic": "2a19",
                "manufacturer_id": 1,
                "decoder": "uint8",
            },
            "applies to access advertised",
        ),
    ],
)
def test_point_addresses_that_cannot_work_are_refused(
    address: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        BleAddress.model_validate(address)
