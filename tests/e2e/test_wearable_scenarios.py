"""Wristbands through every layer: simulated bands -> bumble HCI over TCP -> the agent's
BLE driver and analysis -> Mosquitto -> cloud ingest -> rules -> incidents.

The bands (``firmware_sim.wearables``) advertise and serve GATT through a virtual
controller reached over an HCI transport, so scanning, connecting, discovery,
notifications, presence and the analysis are the code a gateway runs. The analysis
runs with its windows compressed to seconds (``WEARABLES``); the scenarios are the
band simulator's own.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cloud.registry import register_community, register_device, register_gateway
from edge.app import Agent
from edge.config import parse_config
from firmware_sim.wearables import BandField
from schemas.profile import load_profiles
from schemas.vocabulary import DeviceKind
from tests.api_support import make_key
from tests.e2e.support import cloud_settings, listed_incidents, query_rows, running
from tests.waiting import until

pytestmark = pytest.mark.e2e

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
COMMUNITY, GATEWAY = "xijin/anyang", "gw-anyang-01"
CONNECTED, BEACONS = 4, 3
"""CB-300 bands kept connected (F0:A1:...) and CB-100 beacon bands only heard (F0:B1:...)."""

WEARABLES = {
    "bucket_s": 1,
    "baseline_window_s": 120,
    "baseline_min_s": 6,
    "current_window_s": 3,
    "fall_confirm_s": 6,
}
"""The analysis with hours compressed into seconds; the bands run in real time."""
OUT_OF_RANGE_S = 3.0


def care_band(number: int) -> tuple[str, str]:
    return f"band-{number:02d}", f"F0:A1:00:00:00:{number:02X}"


def beacon(number: int) -> tuple[str, str]:
    return f"beacon-{number:02d}", f"F0:B1:00:00:00:{number:02X}"


BANDS = {
    **{care_band(n)[0]: (care_band(n)[1], "anju-wearable-ble") for n in range(1, CONNECTED + 1)},
    **{beacon(n)[0]: (beacon(n)[1], "anju-wearable-beacon") for n in range(1, BEACONS + 1)},
}


@dataclass
class Site:
    field: BandField
    agent: Agent
    api: httpx.AsyncClient
    database_url: str


@pytest.fixture
async def site(
    database_url: str, mqtt_url: str, unique_id: Any, tmp_path: Path
) -> AsyncIterator[Site]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, GATEWAY, COMMUNITY)
        for device_id, (_, profile) in BANDS.items():
            await register_device(
                conn, device_id, gateway_id=GATEWAY, kind=DeviceKind.WEARABLE, profile_id=profile
            )
        token = await make_key(conn)
        await conn.commit()
    settings = cloud_settings(database_url, mqtt_url, unique_id)
    async with BandField(connected=CONNECTED, beacons=BEACONS, seed=7) as field:
        config = parse_config(
            {
                "gateway": GATEWAY,
                "community": COMMUNITY,
                "broker": mqtt_url,
                "telemetry_linger_s": 0.1,
                "state_dir": str(tmp_path / "state"),
                "drivers": {
                    "ble": {
                        "adapter": f"bumble:{field.hci_spec}",
                        "out_of_range_s": OUT_OF_RANGE_S,
                        "connect_timeout_s": 5,
                        "reconnect_max_s": 2,
                    }
                },
                "wearables": WEARABLES,
                # Battery levels are read each poll interval: 60 s in the profile.
                "devices": [
                    {
                        "id": device_id,
                        "profile": profile,
                        "address": f"ble://{mac}",
                        "poll_interval_s": 2,
                    }
                    for device_id, (mac, profile) in BANDS.items()
                ],
            },
            "test",
        )
        agent = Agent(config, PROFILES)
        async with running(settings, agent, token) as api:
            yield Site(field, agent, api, database_url)


async def _heart_rates_stored(site: Site, device_ids: list[str]) -> bool:
    rows = await query_rows(
        site.database_url,
        "SELECT count(DISTINCT device_id) FROM readings "
        "WHERE metric = 'heart_rate_bpm' AND device_id = ANY(%s)",
        device_ids,
    )
    return bool(rows[0][0] == len(device_ids))


async def test_sos_and_falls_open_exactly_the_incidents_they_should(site: Site) -> None:
    sos_band, fallen, recovered = care_band(1), care_band(2), care_band(3)
    sos_beacon, fallen_beacon = beacon(1), beacon(2)
    await until(
        "every band's heart rate stored",
        30,
        lambda: _heart_rates_stored(site, [sos_band[0], fallen[0], recovered[0], sos_beacon[0]]),
    )
    assert await listed_incidents(site.api) == set()

    await site.field.apply(sos_band[1], "sos")
    await site.field.apply(sos_beacon[1], "sos")
    await site.field.apply(fallen[1], "fall")
    await site.field.apply(fallen_beacon[1], "fall")
    await site.field.apply(recovered[1], "fall_recovery", still_s=2)

    expected = {
        (sos_band[0], "sos", 1),
        (sos_beacon[0], "sos", 1),
        (fallen[0], "fall", 1),
        (fallen_beacon[0], "fall", 1),
    }
    found = await until(
        "the SOS and fall incidents",
        30,
        lambda: _have(site, expected),
    )
    # The fall the wearer got up from has had its confirmation window and then some.
    await asyncio.sleep(WEARABLES["fall_confirm_s"] + 2)
    assert await listed_incidents(site.api) == expected, found
    suspected = await query_rows(
        site.database_url,
        "SELECT device_id FROM events WHERE type = 'wearable.fall_suspected' ORDER BY device_id",
    )
    assert sorted(row[0] for row in suspected) == sorted(
        [fallen[0], fallen_beacon[0], recovered[0]]
    )
    confirmed = await query_rows(
        site.database_url,
        "SELECT device_id, (data->>'confidence')::float FROM events WHERE type = 'wearable.fall'",
    )
    assert {row[0] for row in confirmed} == {fallen[0], fallen_beacon[0]}
    assert all(0.5 <= row[1] <= 1.0 for row in confirmed)
    assert site.agent.analysis.recovered_falls == 1
    sos_events = await query_rows(
        site.database_url, "SELECT device_id FROM events WHERE type = 'wearable.sos'"
    )
    assert sorted(row[0] for row in sos_events) == sorted([sos_band[0], sos_beacon[0]])


async def _have(site: Site, expected: set[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
    found = await listed_incidents(site.api)
    return found if expected <= found else set()


async def test_drift_absence_a_dying_battery_and_garbage(site: Site) -> None:
    drifting, leaving, dying, garbled = care_band(4), beacon(3), care_band(1), care_band(2)
    await until(
        "a baseline's worth of heart rate",
        40,
        lambda: _heart_rates_stored(site, [drifting[0], dying[0], garbled[0]]),
    )
    # The personal baseline needs baseline_min_s of data before it judges a drift.
    await asyncio.sleep(WEARABLES["baseline_min_s"] + 2)
    drift_s = 12.0
    started = time.monotonic()
    await site.field.apply(drifting[1], "hr_drift", delta_bpm=45, duration_s=drift_s)
    await site.field.apply(leaving[1], "walk_away")
    await site.field.apply(dying[1], "battery_dying", floor_pct=3, duration_s=5)
    await site.field.apply(garbled[1], "garbage")

    async def flagged() -> list[tuple[Any, ...]]:
        return await query_rows(
            site.database_url,
            "SELECT device_id, data FROM events WHERE type = 'wearable.heart_rate_abnormal'",
        )

    (abnormal,) = await until("the drift flagged", drift_s + 15, flagged)
    flagged_after_s = time.monotonic() - started
    assert abnormal[0] == drifting[0]
    assert abnormal[1]["value"] > abnormal[1]["threshold"]
    # Flagged before the drift ended plus the current window and ingest's delay.
    assert flagged_after_s < drift_s + WEARABLES["current_window_s"] + 5

    async def gone() -> list[tuple[Any, ...]]:
        return await query_rows(
            site.database_url,
            "SELECT device_id FROM events WHERE type = 'wearable.out_of_range'",
        )

    assert await until("the band out of range", OUT_OF_RANGE_S + 15, gone) == [(leaving[0],)]

    async def battery_low() -> list[tuple[Any, ...]]:
        return await query_rows(
            site.database_url, "SELECT device_id FROM events WHERE type = 'battery.low'"
        )

    assert await until("the dying battery", 20, battery_low) == [(dying[0],)]

    garbled_device = next(d for d in site.agent.devices if d.device_id == garbled[0])
    await until("malformed values counted", 10, _async(lambda: garbled_device.faults["malformed"]))
    incidents = await listed_incidents(site.api)
    assert (drifting[0], "heart_rate_abnormal", 2) in incidents
    assert (leaving[0], "wearable_out_of_range", 3) in incidents
    assert not {i for i in incidents if i[0] == garbled[0]}

    async def readings_of_leaving() -> int:
        rows = await query_rows(
            site.database_url, "SELECT count(*) FROM readings WHERE device_id = %s", leaving[0]
        )
        return int(rows[0][0])

    before = await readings_of_leaving()
    await site.field.apply(leaving[1], "return")
    await until("the band heard again", 20, _async_gt(readings_of_leaving, before))


def _async_gt(count: Any, floor: int) -> Any:
    async def check() -> bool:
        return bool(await count() > floor)

    return check


def _async(value: Any) -> Any:
    async def check() -> Any:
        return value()

    return check
