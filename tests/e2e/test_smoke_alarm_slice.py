"""One smoke alarm through every layer, each of them real.

A simulated SD-MB100 detector serves Modbus TCP; the gateway agent polls it per its
profile and publishes through Mosquitto; cloud ingest stores readings and events in
PostgreSQL; the emergency rule opens a fire incident; the API lists it.
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
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.profile import load_profiles
from schemas.vocabulary import DeviceKind
from tests.api_support import make_key
from tests.e2e.support import cloud_settings, running

pytestmark = pytest.mark.e2e

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
COMMUNITY, GATEWAY = "xijin/fenghuang", "gw-fenghuang-01"
DEVICES = {1: ("fh-b1-smoke-01", "1"), 2: ("fh-b3-smoke-01", "3")}


@dataclass
class Platform:
    detectors: dict[str, SmokeDetector]
    agent: Agent
    api: httpx.AsyncClient
    database_url: str


async def _register(database_url: str) -> str:
    """Register the community and its detectors; return an admin key to watch the queue."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, GATEWAY, COMMUNITY)
        for device_id, building in DEVICES.values():
            await register_device(
                conn,
                device_id,
                gateway_id=GATEWAY,
                kind=DeviceKind.SMOKE,
                profile_id="anju-smoke-mb",
                building=building,
                unit=f"{building}-101",
            )
        token = await make_key(conn)
        await conn.commit()
    return token


@pytest.fixture
async def platform(
    database_url: str, mqtt_url: str, unique_id: Any, tmp_path: Path
) -> AsyncIterator[Platform]:
    token = await _register(database_url)
    settings = cloud_settings(database_url, mqtt_url, unique_id)
    detectors = {unit: SmokeDetector(serial_number=20260000 + unit) for unit in DEVICES}
    async with ModbusSimServer(detectors) as sim:
        config = parse_config(
            {
                "gateway": GATEWAY,
                "community": COMMUNITY,
                "broker": mqtt_url,
                "telemetry_linger_s": 0.1,
                "state_dir": str(tmp_path / "state"),
                "devices": [
                    {"id": device_id, "profile": "anju-smoke-mb", "address": sim.url_for(unit)}
                    for unit, (device_id, _) in DEVICES.items()
                ],
            },
            "test",
        )
        agent = Agent(config, PROFILES)
        async with running(settings, agent, token) as api:
            yield Platform(
                {DEVICES[unit][0]: detector for unit, detector in detectors.items()},
                agent,
                api,
                database_url,
            )


async def _scalar(database_url: str, query: str, *params: object) -> Any:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute(query, params)).fetchone()
    return row[0] if row else None


async def _incident_for(api: httpx.AsyncClient, device_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await api.get("/incidents")
        response.raise_for_status()
        found = [i for i in response.json()["items"] if i["device_id"] == device_id]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no incident for {device_id} within {timeout_s} s")


async def test_smoke_alarm_becomes_an_open_fire_incident(platform: Platform) -> None:
    async def readings_stored() -> int:
        return int(await _scalar(platform.database_url, "SELECT count(*) FROM readings"))

    deadline = time.monotonic() + 15
    while await readings_stored() == 0:
        assert time.monotonic() < deadline, "no reading reached the database"
        await asyncio.sleep(0.1)
    assert (await platform.api.get("/incidents")).json()["items"] == []

    platform.detectors["fh-b3-smoke-01"].trigger_alarm()
    incident = await _incident_for(platform.api, "fh-b3-smoke-01", timeout_s=15)

    assert (incident["type"], incident["priority"], incident["status"]) == ("fire", 1, "open")
    assert (incident["community"], incident["building"]) == (COMMUNITY, "3")
    alarms = await _scalar(
        platform.database_url,
        "SELECT count(*) FROM events WHERE type = 'smoke.alarm' AND device_id = %s",
        "fh-b3-smoke-01",
    )
    assert alarms == 1
    # Telemetry travels behind events, so the high reading may land just after.
    threshold = platform.detectors["fh-b3-smoke-01"].alarm_threshold_pct_per_m
    deadline = time.monotonic() + 10
    while (
        await _scalar(
            platform.database_url,
            "SELECT max(value) FROM readings WHERE device_id = %s AND metric = %s",
            "fh-b3-smoke-01",
            "smoke.obscuration_pct_per_m",
        )
        or 0
    ) < threshold:
        assert time.monotonic() < deadline, "the alarm's obscuration reading was not stored"
        await asyncio.sleep(0.1)
    quiet = await _scalar(
        platform.database_url,
        "SELECT count(*) FROM incidents WHERE device_id = %s",
        "fh-b1-smoke-01",
    )
    assert quiet == 0


async def test_alarm_held_for_many_polls_is_one_event_and_one_incident(platform: Platform) -> None:
    platform.detectors["fh-b1-smoke-01"].trigger_alarm()
    first = await _incident_for(platform.api, "fh-b1-smoke-01", timeout_s=15)
    polls_then = sum(d.polls for d in platform.agent.devices)
    deadline = time.monotonic() + 15
    while sum(d.polls for d in platform.agent.devices) < polls_then + 6:
        assert time.monotonic() < deadline, "the agent stopped polling"
        await asyncio.sleep(0.1)
    response = await platform.api.get("/incidents")
    mine = [i for i in response.json()["items"] if i["device_id"] == "fh-b1-smoke-01"]
    assert [i["id"] for i in mine] == [first["id"]]
    assert mine[0]["event_count"] == 1
