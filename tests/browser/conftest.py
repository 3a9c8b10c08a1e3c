"""What the console's browser tests share: one `anju cloud run` per module on a
database of the module's own, Debian's Chromium driven by Playwright, communities
with a gateway, a resident's wearable and dispatchers' keys, and the gateway's SOS
published to the session's Mosquitto as the wire bytes a real gateway sends.

Playwright's sync API runs its own event loop on the test's thread, so the async
helpers of the cloud (registry, keys, incidents) run on a thread of their own
(``run_async``), and the gateway publishes with paho's blocking client.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright
from psycopg import sql

from anju.services.mosquitto import MosquittoServer
from anju.services.ports import free_port
from anju.services.postgres import PostgresServer
from cloud.auth.roles import Role
from cloud.incidents import IncidentDraft, Priority, open_or_join
from cloud.registry import register_community, register_device, register_gateway
from cloud.residents import records
from cloud.residents.crypto import Keyring
from cloud.tree import find_node
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import DeviceKind, EventType, Metric, Severity
from schemas.wire import Event, EventBatch, Reading, TelemetryBatch, encode
from tests.api_support import make_key
from tests.databases import ExternalServer, clone_database

CHROMIUM = Path("/usr/bin/chromium")
BIN = Path(sys.executable).parent
WRAPPING_KEY = b"console-test-key-thirty-two-byte"
START_S = 60.0
STOP_S = 15.0
# The machine has no network but the package registries: Chromium's own background
# traffic (updates, sync, safe browsing) would only be refused, slowly and noisily.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 768}

_T = TypeVar("_T")


def run_async(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run the coroutine ``make`` returns on a thread and loop of its own: the test's
    thread belongs to Playwright's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


@pytest.fixture(scope="module")
def console_database(
    postgres: PostgresServer | ExternalServer, template_database: str
) -> Iterator[str]:
    """A fresh migrated database for the module's one cloud process (the suite's
    ``database_url`` is per test); tests keep apart by community instead."""
    admin_url = postgres.url_for("postgres")
    name = f"test_console_{uuid.uuid4().hex}"
    clone_database(admin_url, name, template_database)
    yield postgres.url_for(name)
    if not postgres.running:
        postgres.start()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


class CloudProcess:
    """`anju cloud run` (API, ingest, rules) as a subprocess on a fixed free port, so a
    test can stop it and start it again at the same address while a page is open. Its
    output goes to one log, kept across restarts, for failure reports."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until the API answers and the ingest has subscribed, so
        that a gateway's message from now on is stored."""
        subscribed = self._log().count("subscribed on")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(BIN / "anju"), "cloud", "run"], env=self._env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                pytest.fail(f"anju cloud run exited at start:\n{self.log_tail()}")
            # Two sessions: the ingest worker's alarm and telemetry lanes.
            if self._log().count("subscribed on") >= subscribed + 2 and self._healthy():
                return
            time.sleep(0.05)
        self._process.kill()
        pytest.fail(f"anju cloud run did not start in {START_S} s:\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; returns the exit code. Fails the test
        when it has not exited within STOP_S (killing it then), since a server that an
        open console keeps from stopping is a fault of its own."""
        process = self._process
        assert process is not None, "the cloud process is not running"
        self._process = None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(
                f"anju cloud run did not exit within {STOP_S} s of SIGTERM:\n{self.log_tail()}"
            )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, chars: int = 6000) -> str:
        return self._log()[-chars:]

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="module")
def cloud(
    console_database: str, mosquitto: MosquittoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudProcess]:
    """One running cloud for the module, on the session's broker with a persistent
    ingest session of its own (so what gateways publish while it is stopped waits in
    the broker for its return)."""
    port = free_port()
    run_id = uuid.uuid4().hex[:12]
    env = {
        **os.environ,
        "ANJU_DATABASE_URL": console_database,
        "ANJU_MQTT_URL": mosquitto.url,
        "ANJU_API_PORT": str(port),
        "ANJU_API_AUTH_FAILURE_LIMIT": "1000000",
        "ANJU_INGEST_CLIENT_ID": f"console-{run_id}",
        "ANJU_INGEST_GROUP": f"console-{run_id}",
        # Long enough for the restart test's outage, short enough that the broker drops
        # the session (and what later tests publish to it) soon after the module.
        "ANJU_INGEST_SESSION_EXPIRY_S": "120",
        "ANJU_RESIDENT_KEYS": "k1:" + base64.b64encode(WRAPPING_KEY).decode(),
    }
    process = CloudProcess(env, port, tmp_path_factory.mktemp("cloud") / "cloud.log")
    process.start()
    yield process
    if process.running:
        process.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Module-scoped: Playwright's sync API keeps an event loop marked running on this
    thread while it is started, so it must stop before the suite's asyncio tests run."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless; Playwright adds --no-sandbox, which Chromium needs
    when the suite runs as root (CI)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: run scripts/test, which installs Debian's chromium "
            "(apt-get install chromium)",
            pytrace=False,
        )
    launched = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield launched
    launched.close()


@dataclass
class Console:
    """A page of the console in a browser context of its own (its own sessionStorage,
    as a second dispatcher's browser), with what its JavaScript logged."""

    page: Page
    base_url: str
    messages: list[str] = field(default_factory=list)

    def sign_in(self, key: str) -> None:
        self.page.goto(f"{self.base_url}/console/")
        self.page.locator("#key").fill(key)
        self.page.locator("#signin-submit").click()
        expect(self.page.locator("#live-status")).to_have_attribute(
            "data-state", "live", timeout=10_000
        )

    def entry(self, lst: str, incident_id: int) -> Any:
        """The entry of ``incident_id`` in the list ``#{lst}`` (a Playwright Locator)."""
        return self.page.locator(f"#{lst} li.incident[data-id='{incident_id}']")

    def report(self) -> str:
        """What the page's JavaScript logged, for a failure's message."""
        return "\n".join(self.messages[-40:]) or "(nothing logged)"


@pytest.fixture
def open_console(browser: Browser, cloud: CloudProcess) -> Iterator[Callable[..., Console]]:
    """A function opening the console in a fresh context: ``open_console(key)`` signs
    in with ``key``; ``locale`` sets navigator.language (English unless told)."""
    contexts = []

    def open_one(key: str | None = None, *, locale: str = "en-US") -> Console:
        context = browser.new_context(viewport=VIEWPORT, locale=locale)  # type: ignore[arg-type]
        contexts.append(context)
        page = context.new_page()
        console = Console(page, cloud.url)
        page.on("console", lambda m: _keep(console, m))
        page.on("pageerror", lambda e: console.messages.append(f"pageerror: {e}"))
        if key is None:
            page.goto(f"{cloud.url}/console/")
        else:
            console.sign_in(key)
        return console

    yield open_one
    for context in contexts:
        context.close()


def _keep(console: Console, message: ConsoleMessage) -> None:
    console.messages.append(f"{message.type}: {message.text}")


@dataclass
class Site:
    """A community of its own with one gateway and one resident's wearable; publishes
    as that gateway does, MQTT v5 QoS 1 on its events and telemetry topics."""

    tag: str
    mqtt_url: str
    database_url: str
    resident_name: str = "Li Hua"
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def community(self) -> str:
        return f"xijin/{self.tag}"

    @property
    def gateway(self) -> str:
        return f"gw-{self.tag}"

    @property
    def wearable(self) -> str:
        """The resident's band."""
        return self.band(1)

    def band(self, number: int) -> str:
        return f"band-{self.tag}-{number}"

    def dispatcher(self, name: str) -> str:
        """A new dispatcher key named ``name``, scoped to this community."""
        return run_async(lambda: _key(self.database_url, self.community, name))

    def sos(self, device: str | None = None) -> None:
        """The wearable's SOS, in an event batch on the gateway's events topic."""
        now = datetime.now(UTC)
        event = Event(
            device=device or self.wearable,
            ts=now,
            seq=next(self._seq),
            type=EventType.WEARABLE_SOS,
            severity=Severity.CRITICAL,
        )
        batch = EventBatch(
            gateway=self.gateway,
            community=self.community,
            spool_epoch=self.epoch,
            batch_seq=next(self._seq),
            sent_at=now,
            items=[event],
        )
        self._publish(Channel.EVENTS, encode(batch))

    def heart_rate(self, minutes: int = 60, bpm: float = 72.0) -> None:
        """A reading a minute for the last ``minutes``, as the band's telemetry."""
        now = datetime.now(UTC)
        batch = TelemetryBatch(
            gateway=self.gateway,
            community=self.community,
            spool_epoch=self.epoch,
            batch_seq=next(self._seq),
            sent_at=now,
            items=[
                Reading(
                    device=self.wearable,
                    ts=now - timedelta(minutes=minutes - i),
                    seq=next(self._seq),
                    metric=Metric.HEART_RATE,
                    # A resting rate that climbs over the last ten minutes before the SOS.
                    value=round(bpm + 4 * math.sin(i / 4) + 4 * max(0, i - minutes + 10), 1),
                )
                for i in range(minutes)
            ],
        )
        self._publish(Channel.TELEMETRY, encode(batch))

    def _publish(self, channel: Channel, payload: bytes) -> None:
        broker = parse_broker_url(self.mqtt_url)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{self.gateway}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            info = client.publish(topic_for(self.community, self.gateway, channel), payload, qos=1)
            info.wait_for_publish(timeout=10)
            assert info.is_published(), f"the broker did not acknowledge the {channel} batch"
        finally:
            client.disconnect()
            client.loop_stop()

    def open_incident_directly(self, device: str) -> int:
        """Open an SOS incident for ``device`` straight in the database, as an ingest
        running elsewhere would while this cloud's API is down; returns its id."""
        return run_async(lambda: _open_sos(self.database_url, self.community, self.gateway, device))

    def add_wearable(self, device: str) -> None:
        """Another band on the gateway, worn by no registered resident."""

        async def add() -> None:
            async with await psycopg.AsyncConnection.connect(
                self.database_url, autocommit=True
            ) as conn:
                await register_device(
                    conn,
                    device,
                    gateway_id=self.gateway,
                    kind=DeviceKind.WEARABLE,
                    profile_id="anju-band",
                    building="7",
                    unit="102",
                )

        run_async(add)


@pytest.fixture
def make_site(
    cloud: CloudProcess, console_database: str, mosquitto: MosquittoServer
) -> Callable[[str], Site]:
    """A function registering the community ``xijin/{tag}`` (``make_site("home")``), so
    tests sharing the module's cloud never see each other's incidents; a tag names one
    community of the module's database, so each test uses tags of its own."""

    def make(tag: str) -> Site:
        site = Site(tag, mqtt_url=mosquitto.url, database_url=console_database)
        run_async(lambda: _register(site))
        return site

    return make


async def _register(site: Site) -> None:
    async with await psycopg.AsyncConnection.connect(site.database_url, autocommit=True) as conn:
        node = await register_community(conn, site.community)
        await register_gateway(conn, site.gateway, site.community)
        resident = await records.register(
            conn,
            Keyring.from_keys([("k1", WRAPPING_KEY)]),
            community_id=node.id,
            reference=f"ref-{site.wearable}",
            building="3",
            unit="201",
            needs_evacuation_help=True,
            personal=records.PersonalData(
                name=site.resident_name,
                phone="+86 10 5555 0101",
                emergency_contacts=[
                    records.EmergencyContact(
                        name="Li Ming", phone="+86 139 0000 0202", relation="son"
                    )
                ],
                medical_notes="Type 2 diabetes; pacemaker since 2019.",
            ),
        )
        await register_device(
            conn,
            site.wearable,
            gateway_id=site.gateway,
            kind=DeviceKind.WEARABLE,
            profile_id="anju-band",
            building="3",
            unit="201",
            resident_id=resident.id,
        )


async def _key(database_url: str, community: str, name: str) -> str:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await make_key(conn, role=Role.DISPATCHER, scope=community, name=name)


async def _open_sos(database_url: str, community: str, gateway: str, device: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        node = await find_node(conn, community)
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO events (ts, device_id, gateway_id, seq, type, severity) "
                "VALUES (now(), %s, %s, 1, 'wearable.sos', 'critical') RETURNING id, ts",
                [device, gateway],
            )
            event = await cur.fetchone()
            assert event is not None
            draft = IncidentDraft(
                type="sos",
                priority=Priority.CRITICAL,
                community_id=node.id,
                building="7",
                unit="102",
                device_id=device,
                cause="wearable.sos",
            )
            opened = await open_or_join(conn, draft, event_id=event[0], event_ts=event[1])
        return opened.incident_id
