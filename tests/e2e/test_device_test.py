"""An installer tests a device through its running gateway: ``POST /devices/{id}/test``
and ``anju device test --device``.

Everything is real: PostgreSQL, Mosquitto, ``run_cloud`` (the API and the config
pusher, which sends the read and hears the answer) and a gateway agent polling
simulated Modbus TCP smoke detectors on one bus, so the test's read queues behind the
agent's own polls of that bus. The values must be the simulator's; a detector that
has stopped answering gives ``ok`` false with the fault; an unknown device is a 404, a
removed one a 409, and a gateway that is not running a 504 saying the read was sent.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from anju.cli import root
from cloud.app import run_cloud
from cloud.auth.roles import Role
from cloud.registry import register_community, register_device, register_gateway
from edge.app import Agent
from edge.config import parse_config
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.profile import load_profiles
from schemas.vocabulary import DeviceKind
from tests.api_support import bearer, make_key
from tests.e2e.support import cloud_settings, query_rows

pytestmark = [pytest.mark.e2e]

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
PROFILE = "anju-smoke-mb"
COMMUNITY = "xijin/fenghuang"
WAIT_S = 30.0


@dataclass
class Site:
    api: httpx.AsyncClient
    base_url: str
    token: str
    gateway: str
    silent_gateway: str
    """Registered, with a device, but no agent runs it."""
    detector: SmokeDetector
    database_url: str


@pytest.fixture
async def site(
    database_url: str, mqtt_url: str, unique_id: Any, tmp_path: Path
) -> AsyncIterator[Site]:
    gateway, silent_gateway = unique_id("gw"), unique_id("gw-off")
    detector = SmokeDetector(
        serial_number=20260101,
        alarm_threshold_pct_per_m=1.5,
        temperature_c=23.4,
        co_ppm=12,
        battery_pct=87,
    )
    detector.set_smoke(0.42)
    async with ModbusSimServer({1: detector, 2: SmokeDetector()}) as bus:
        bus.faults(2).drop()  # unit 2 stops answering for good: a dead detector
        devices = {"fh-b1-smoke-01": 1, "fh-b1-smoke-02": 2}
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await register_community(conn, COMMUNITY)
            await register_gateway(conn, gateway, COMMUNITY)
            await register_gateway(conn, silent_gateway, COMMUNITY)
            for device_id in devices:
                await register_device(
                    conn, device_id, gateway_id=gateway, kind=DeviceKind.SMOKE, profile_id=PROFILE
                )
            for device_id in ("fh-b2-smoke-01", "fh-b2-smoke-02"):
                await register_device(
                    conn,
                    device_id,
                    gateway_id=silent_gateway,
                    kind=DeviceKind.SMOKE,
                    profile_id=PROFILE,
                )
            # A device taken out of service (what DELETE /devices does to its status).
            await conn.execute("UPDATE devices SET status = 'disabled' WHERE id = 'fh-b2-smoke-02'")
            token = await make_key(conn, role=Role.INSTALLER, scope=COMMUNITY, tier="community")
        config = parse_config(
            {
                "gateway": gateway,
                "community": COMMUNITY,
                "broker": mqtt_url,
                "state_dir": str(tmp_path / "state"),
                "device_timeout_s": 0.5,
                "devices": [
                    {
                        "id": device_id,
                        "profile": PROFILE,
                        "address": bus.url_for(unit),
                        "building": "1",
                        "unit": f"10{unit}",
                    }
                    for device_id, unit in devices.items()
                ],
            },
            "test",
        )
        agent = Agent(config, PROFILES)
        settings = cloud_settings(database_url, mqtt_url, unique_id)
        base_url = f"http://{settings.api.host}:{settings.api.port}"
        stop, started = asyncio.Event(), asyncio.Event()
        async with (
            asyncio.TaskGroup() as tasks,
            httpx.AsyncClient(base_url=base_url, headers=bearer(token), timeout=WAIT_S) as api,
        ):
            tasks.create_task(run_cloud(settings, stop=stop, started=started), name="cloud")
            await asyncio.wait_for(started.wait(), timeout=WAIT_S)
            tasks.create_task(agent.run(stop), name="agent")
            try:
                yield Site(api, base_url, token, gateway, silent_gateway, detector, database_url)
            finally:
                stop.set()


async def test_a_device_is_read_through_its_running_gateway(site: Site) -> None:
    # The agent may still be connecting: its first answer is the one waited for.
    response = await site.api.post("/devices/fh-b1-smoke-01/test", params={"timeout_s": 20})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"], body
    assert (body["device"], body["gateway"], body["fault"]) == (
        "fh-b1-smoke-01",
        site.gateway,
        None,
    )
    # Every point of the profile, configuration registers included, as the simulator
    # holds them, in engineering units.
    values = body["values"]
    assert list(values) == [point.name for point in PROFILES[PROFILE].points]
    assert values["status"] == 0
    assert values["obscuration"] == 0.42
    assert values["temperature"] == 23.4
    assert values["co"] == 12
    assert values["battery"] == 87
    assert values["serial_number"] == 20260101
    assert values["alarm_threshold"] == 1.5
    assert isinstance(body["elapsed_ms"], int)

    # The gateway reads what the device holds now.
    site.detector.set_temperature(25.0)
    again = await site.api.post("/devices/fh-b1-smoke-01/test", params={"gateway": site.gateway})
    assert again.status_code == 200, again.text
    assert again.json()["values"]["temperature"] == 25.0
    assert again.json()["id"] != body["id"]

    # The row records who asked, when it was sent and what came back.
    rows = await query_rows(
        site.database_url,
        "SELECT gateway_id, requested_by IS NOT NULL, sent_at IS NOT NULL, ok"
        " FROM device_tests WHERE id = %s",
        body["id"],
    )
    assert rows == [(site.gateway, True, True, True)]


async def test_a_dead_device_fails_with_the_reason(site: Site) -> None:
    response = await site.api.post("/devices/fh-b1-smoke-02/test", params={"timeout_s": 20})
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body["ok"], body
    assert body["fault"] == "timeout"
    assert "fh-b1-smoke-02 did not answer" in body["detail"]
    assert "unit 2" in body["detail"]
    assert body["values"] == {}


async def test_unknown_removed_misplaced_and_unreachable_devices_are_refused(
    site: Site,
) -> None:
    missing = await site.api.post("/devices/fh-no-such-device/test")
    assert missing.status_code == 404, missing.text
    assert missing.headers["content-type"] == "application/problem+json"

    removed = await site.api.post("/devices/fh-b2-smoke-02/test")
    assert removed.status_code == 409, removed.text
    assert "removed" in removed.json()["detail"]

    elsewhere = await site.api.post(
        "/devices/fh-b1-smoke-01/test", params={"gateway": site.silent_gateway}
    )
    assert elsewhere.status_code == 409, elsewhere.text
    assert f"behind {site.gateway}, not {site.silent_gateway}" in elsewhere.json()["detail"]

    # No agent runs this gateway: the pusher sends the read, nobody answers.
    silent = await site.api.post("/devices/fh-b2-smoke-01/test", params={"timeout_s": 1})
    assert silent.status_code == 504, silent.text
    detail = silent.json()["detail"]
    assert f"{site.silent_gateway} did not answer" in detail
    assert "it was sent" in detail
    rows = await query_rows(
        site.database_url,
        "SELECT sent_at IS NOT NULL, finished_at FROM device_tests WHERE device_id = %s",
        "fh-b2-smoke-01",
    )
    assert rows == [(True, None)]

    too_long = await site.api.post("/devices/fh-b1-smoke-01/test", params={"timeout_s": 31})
    assert too_long.status_code == 422, too_long.text


async def test_the_command_line_reads_through_the_gateway(site: Site) -> None:
    runner = CliRunner()
    env = {"ANJU_API_KEY": site.token}
    args = ["device", "test", "--device", "fh-b1-smoke-01", "--cloud", site.base_url]
    # The API runs in this event loop: the command's blocking client runs on a thread.
    shown = await asyncio.to_thread(runner.invoke, root, [*args, "--timeout", "20"], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"read by {site.gateway}" in shown.output
    assert "temperature" in shown.output
    assert "23.4 °C" in shown.output

    as_json = await asyncio.to_thread(runner.invoke, root, [*args, "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    assert '"serial_number": 20260101' in as_json.output

    dead = ["device", "test", "--device", "fh-b1-smoke-02", "--cloud", site.base_url]
    failed = await asyncio.to_thread(runner.invoke, root, dead, env=env)
    assert failed.exit_code == 1, failed.output
    assert "no answer (timeout)" in failed.output

    mixed = await asyncio.to_thread(runner.invoke, root, [*args, "--profile", PROFILE], env=env)
    assert mixed.exit_code == 2, mixed.output
    assert "give one form, not both" in mixed.output
