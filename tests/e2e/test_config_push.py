"""The cloud pushes each gateway the device config its registry keeps, and hears back.

Everything is real: PostgreSQL, Mosquitto, ``run_cloud`` (ingest, the API and the
config pusher) and a gateway agent polling simulated Modbus TCP smoke detectors. The
installer's changes go through the API with an installer key; each makes a new config
version that the pusher sends as an ``apply_config`` command, and the gateway's answers
and statuses land in the gateway's row, which ``GET /gateways/{id}/config`` shows.

Two simulators, two buses: the detectors the gateway starts with answer on one, the
ones added later on the other, so an added device leaves the first bus as it was and
its readings must not miss a single poll. The detectors' temperature steps at every
read, so every poll stores a reading (no deadband hides one) and a pause in polling
shows as a pause in the stored readings.
"""

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cloud.app import run_cloud
from cloud.auth.roles import Role
from cloud.configs.store import claim_pushes
from cloud.registry import register_community, register_gateway
from edge.app import Agent
from edge.config import parse_config
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.profile import load_profiles
from tests.api_support import bearer, make_key
from tests.e2e.support import cloud_settings, query_rows
from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
PROFILE = "anju-smoke-mb"
COMMUNITY = "xijin/fenghuang"
INTERVAL_S = PROFILES[PROFILE].poll_interval_s
"""Every detector here is polled at its profile's interval (0.5 s)."""
WAIT_S = 30.0


class SteppingDetector(SmokeDetector):
    """A detector whose temperature rises 1 °C at every read of its input registers
    (from 10 to 59, then 10 again): more than the profile's deadband, every time."""

    def input_registers(self) -> dict[int, int]:
        self.set_temperature(10 + (self.temperature_c - 9) % 50)
        return super().input_registers()


@dataclass(frozen=True)
class Device:
    """A detector as the installer describes it to the API."""

    id: str
    address: str
    unit: str

    def entry(self) -> dict[str, Any]:
        """The device as a gateway config file's ``devices`` lists it."""
        return {
            "id": self.id,
            "profile": PROFILE,
            "address": self.address,
            "building": "1",
            "unit": self.unit,
        }


@dataclass
class Site:
    """The registry's gateway, its simulated detectors on two buses, and its database."""

    database_url: str
    mqtt_url: str
    gateway: str
    token: str
    """An installer's key for the community."""
    first_bus: ModbusSimServer
    second_bus: ModbusSimServer
    state_root: Path

    def agent(self, state: str, devices: list[Device]) -> Agent:
        """A gateway agent whose config file lists ``devices``, its state in ``state``."""
        config = parse_config(
            {
                "gateway": self.gateway,
                "community": COMMUNITY,
                "broker": self.mqtt_url,
                "telemetry_linger_s": 0.1,
                "state_dir": str(self.state_root / state),
                "devices": [device.entry() for device in devices],
            },
            "test",
        )
        return Agent(config, PROFILES)

    async def config_row(self) -> dict[str, Any]:
        """The gateway's config columns as the pusher left them."""
        rows = await query_rows(
            self.database_url,
            "SELECT config_version, config_applied, config_refused, config_error"
            " FROM gateways WHERE id = %s",
            self.gateway,
        )
        version, applied, refused, error = rows[0]
        return {"version": version, "applied": applied, "refused": refused, "error": error}

    async def applied(self, version: int) -> bool:
        return (await self.config_row())["applied"] == version

    async def sequence(self, device_id: str) -> list[tuple[int, Any]]:
        """(seq, ts) of every reading and event of ``device_id`` stored, by seq."""
        rows = await query_rows(
            self.database_url,
            "SELECT seq, ts FROM readings WHERE device_id = %s"
            " UNION ALL SELECT seq, ts FROM events WHERE device_id = %s ORDER BY 1",
            device_id,
            device_id,
        )
        return [(int(seq), ts) for seq, ts in rows]

    async def latest_seq(self, device_id: str) -> int:
        seqs = await self.sequence(device_id)
        return seqs[-1][0] if seqs else 0


class Installer:
    """The installer's side of the API: device changes, and the gateway's config view."""

    def __init__(self, api: httpx.AsyncClient, gateway: str) -> None:
        self.api = api
        self.gateway = gateway

    async def add(self, device: Device) -> int:
        """Add ``device`` behind the gateway; the gateway's config version after."""
        response = await self.api.post("/devices", json={**device.entry(), "gateway": self.gateway})
        assert response.status_code == 201, response.text
        return int((await self.config())["version"])

    async def remove(self, device_id: str) -> int:
        response = await self.api.delete(f"/devices/{device_id}")
        assert response.status_code == 200, response.text
        return int((await self.config())["version"])

    async def config(self) -> dict[str, Any]:
        """``GET /gateways/{id}/config``: wanted and applied version, error, document."""
        response = await self.api.get(f"/gateways/{self.gateway}/config")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def site(
    database_url: str, mqtt_url: str, unique_id: Any, tmp_path: Path
) -> AsyncIterator[Site]:
    gateway = unique_id("gw")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, gateway, COMMUNITY)
        token = await make_key(conn, role=Role.INSTALLER, scope=COMMUNITY, tier="community")
    first = {unit: SteppingDetector(serial_number=20260100 + unit) for unit in (1, 2)}
    second = {3: SteppingDetector(serial_number=20260203)}
    async with ModbusSimServer(first) as first_bus, ModbusSimServer(second) as second_bus:
        yield Site(database_url, mqtt_url, gateway, token, first_bus, second_bus, tmp_path)


@asynccontextmanager
async def cloud(site: Site, unique_id: Any) -> AsyncIterator[Installer]:
    """``run_cloud`` until the block ends, started (config pusher listening) on entry;
    yields the installer's API client."""
    settings = cloud_settings(site.database_url, site.mqtt_url, unique_id)
    stop, started = asyncio.Event(), asyncio.Event()
    base_url = f"http://{settings.api.host}:{settings.api.port}"
    async with (
        asyncio.TaskGroup() as tasks,
        httpx.AsyncClient(base_url=base_url, headers=bearer(site.token)) as api,
    ):
        tasks.create_task(run_cloud(settings, stop=stop, started=started), name="cloud")
        await asyncio.wait_for(started.wait(), timeout=WAIT_S)
        try:
            yield Installer(api, site.gateway)
        finally:
            stop.set()


@asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(agent.run(stop), name="agent")
        try:
            yield agent
        finally:
            stop.set()


async def unbroken(site: Site, device_id: str, through: int) -> list[tuple[int, Any]]:
    """Wait until every seq of ``device_id`` from its first through ``through`` is stored
    (batches may commit out of order for a moment); fail naming the missing ones."""
    missing: list[int] = []

    async def complete() -> list[tuple[int, Any]] | None:
        nonlocal missing
        stored = [(seq, ts) for seq, ts in await site.sequence(device_id) if seq <= through]
        seqs = {seq for seq, _ in stored}
        missing = sorted(set(range(min(seqs, default=1), through + 1)) - seqs)
        return stored if stored and not missing else None

    try:
        return await until(f"{device_id}'s seqs through {through} stored", WAIT_S, complete)
    except AssertionError:
        raise AssertionError(f"{device_id} lost seqs {missing[:20]}") from None


def largest_pause_s(stored: list[tuple[int, Any]]) -> float:
    """The longest time between two consecutive poll cycles in ``stored``."""
    moments = sorted({ts for _, ts in stored})
    return max(
        ((b - a).total_seconds() for a, b in itertools.pairwise(moments)),
        default=0.0,
    )


async def test_an_added_device_is_pushed_and_polled_and_a_bad_config_is_refused(
    site: Site, unique_id: Any
) -> None:
    smoke_1 = Device("fh-b1-smoke-01", site.first_bus.url_for(1), "101")
    smoke_2 = Device("fh-b1-smoke-02", site.first_bus.url_for(2), "102")
    agent = site.agent("state", [smoke_1, smoke_2])

    async with cloud(site, unique_id) as installer:
        assert await installer.add(smoke_1) == 1
        assert await installer.add(smoke_2) == 2
        # The registry's version 2 lists what the gateway's own file does: it is pushed,
        # taken, and leaves the bus alone.
        async with running(agent):
            await until("version 2 applied", WAIT_S, lambda: site.applied(2))
            assert agent.config_version == 2
            first_poller = _poller_of(agent, smoke_1.id)

            smoke_3 = Device("fh-b1-smoke-03", site.second_bus.url_for(3), "103")
            assert await installer.add(smoke_3) == 3
            await until("version 3 applied", WAIT_S, lambda: site.applied(3))
            await until(f"{smoke_3.id} read", WAIT_S, lambda: site.latest_seq(smoke_3.id))
            assert agent.config_version == 3
            assert _poller_of(agent, smoke_1.id) is first_poller, "the first bus was reopened"
            assert _poller_of(agent, smoke_3.id) is not first_poller
            view = await installer.config()
            assert (view["version"], view["applied_version"], view["error"]) == (3, 3, None)
            assert view["applied_at"] is not None
            assert view["pushed_at"] is not None
            assert [d["id"] for d in view["document"]["devices"]] == [
                smoke_1.id,
                smoke_2.id,
                smoke_3.id,
            ]

            # The others went on through both pushes: every poll's readings are stored.
            for device in (smoke_1, smoke_2):
                through = await site.latest_seq(device.id) + 8
                await until(
                    f"{device.id} read on",
                    WAIT_S,
                    lambda d=device.id, t=through: _reached(site, d, t),
                )
                stored = await unbroken(site, device.id, through)
                assert largest_pause_s(stored) < 2 * INTERVAL_S, device.id

            # A unit id no Modbus device can have: the cloud takes the address (it checks
            # the scheme), the gateway refuses the document and says why.
            bad = Device("fh-b1-smoke-04", site.second_bus.url + "?unit=999", "104")
            assert await installer.add(bad) == 4
            row = await until("version 4 refused", WAIT_S, lambda: _refused(site, 4))
            assert row["applied"] == 3
            assert bad.id in row["error"], row["error"]
            assert "999" in row["error"], row["error"]
            view = await installer.config()
            assert (view["version"], view["applied_version"]) == (4, 3)
            assert view["error"] == row["error"]
            assert agent.config_version == 3
            async with (
                await psycopg.AsyncConnection.connect(site.database_url) as conn,
                conn.transaction(force_rollback=True),
            ):
                due = await claim_pushes(conn, limit=1000, retry_s=0.001, retry_cap_s=0.001)
            assert site.gateway not in {p.gateway for p in due}, "a refused version is due"
            # ... and the config it runs goes on being read.
            for device in (smoke_1, smoke_3):
                through = await site.latest_seq(device.id) + 4
                await until(
                    f"{device.id} read after the refusal",
                    WAIT_S,
                    lambda d=device.id, t=through: _reached(site, d, t),
                )

            # Taking the bad device out makes version 5: pushed, taken, the error gone.
            assert await installer.remove(bad.id) == 5
            await until("version 5 applied", WAIT_S, lambda: site.applied(5))
            view = await installer.config()
            assert (view["version"], view["applied_version"], view["error"]) == (5, 5, None)
            assert agent.config_version == 5


async def test_a_replaced_gateway_box_gets_the_config_again(site: Site, unique_id: Any) -> None:
    smoke_1 = Device("fh-b1-smoke-01", site.first_bus.url_for(1), "101")
    async with cloud(site, unique_id) as installer:
        assert await installer.add(smoke_1) == 1
        async with running(site.agent("old-box", [])) as old_box:
            await until("version 1 applied", WAIT_S, lambda: site.applied(1))
            assert old_box.config_version == 1
        # A new box under the same id: an empty state directory, no pushed config. Its
        # online status says it runs version 0, which makes version 1 due at once.
        async with running(site.agent("new-box", [])) as new_box:
            await until("the new box runs version 1", WAIT_S, lambda: new_box.config_version == 1)
            await until("version 1 recorded again", WAIT_S, lambda: site.applied(1))
            before = await site.latest_seq(smoke_1.id)
            await until(
                f"the new box reads {smoke_1.id}",
                WAIT_S,
                lambda: _reached(site, smoke_1.id, before + 2),
            )


def _poller_of(agent: Agent, device_id: str) -> object:
    """The poller running ``device_id`` (a new object after its bus was reopened)."""
    for poller in agent.pollers:
        if any(device.device_id == device_id for device in poller.devices):
            return poller
    raise AssertionError(f"no poller runs {device_id}")


async def _reached(site: Site, device_id: str, seq: int) -> bool:
    return await site.latest_seq(device_id) >= seq


async def _refused(site: Site, version: int) -> dict[str, Any] | None:
    row = await site.config_row()
    return row if row["refused"] == version and row["error"] else None
