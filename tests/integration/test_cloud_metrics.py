"""``GET /metrics`` against the real PostgreSQL and Mosquitto of the session.

The database's figures (open incidents, escalations, deliveries waiting) are read at
each scrape; the process's counters come from a real ingest worker and a real webhook
worker; and a scrape whose database cannot be reached still answers, with
``anju_cloud_scrape_database_up`` 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from psycopg import AsyncConnection

from anju.services.ports import free_port
from cloud.api.app import create_app
from cloud.app import run_cloud, run_ingest
from cloud.auth.roles import Role
from cloud.ingest.counters import IngestCounters
from cloud.metrics import render
from cloud.queue import transitions
from cloud.queue.escalation import fire_due
from cloud.queue.states import Outcome
from cloud.registry import register_community, register_device, register_gateway
from cloud.settings import CloudSettings, IngestSettings, QueueSettings, load_settings
from cloud.storage.pool import open_pool
from cloud.webhooks.delivery import DeliveryCounters, DeliveryWorker
from cloud.webhooks.sender import Sender
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import DeviceKind, Metric
from schemas.wire import Reading, TelemetryBatch, encode
from tests.api_support import api_client, bearer, make_key
from tests.integration.queue_support import COMMUNITY, make_site, open_incident
from tests.integration.webhook_support import (
    Receiver,
    Script,
    add_subscription,
    community,
    deliveries,
    fast_settings,
    open_incidents,
)

QUEUE = QueueSettings()
WAIT_S = 20.0
_TEXT = {"content-type": CONTENT_TYPE_LATEST}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(app: FastAPI) -> Samples:
    """One scrape through the app's lifespan (its pool), with an admin key of its database
    (as Prometheus would present one); a key of another role is refused."""
    async with await AsyncConnection.connect(
        app.state.settings.database_url, autocommit=True
    ) as conn:
        admin = await make_key(conn, name="prometheus")
        manager = await make_key(conn, role=Role.STREET, scope=COMMUNITY.split("/")[0])
    async with api_client(app, admin) as http:
        assert (await http.get("/metrics", headers=bearer(manager))).status_code == 403
        return parse(await http.get("/metrics"))


def parse(response: httpx.Response) -> Samples:
    """A scrape's samples, parsed as Prometheus parses them; every family of ours has HELP."""
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    families = list(text_string_to_metric_families(response.text))
    for family in families:
        if family.name.startswith("anju_cloud_"):
            assert family.documentation, f"{family.name} has no HELP"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def by_labels(samples: Samples, name: str) -> dict[tuple[str, ...], float]:
    """Every sample of ``name``, keyed by its label values in label-name order."""
    return {
        tuple(v for _, v in sorted(labels)): number
        for (sample, labels), number in samples.items()
        if sample == name
    }


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_open_incidents_and_escalations_are_read_at_each_scrape(
    database_url: str, conn: AsyncConnection[Any]
) -> None:
    site = await make_site(conn)
    sos = [await open_incident(conn, site, device=f"sos-{n}") for n in range(3)]
    door = await open_incident(
        conn, site, device="door-1", priority=2, incident_type="door_forced_open"
    )
    idle = await open_incident(conn, site, device="band-1", priority=3, incident_type="inactivity")
    closed = await open_incident(
        conn, site, device="band-2", priority=3, incident_type="inactivity"
    )
    await transitions.claim(conn, sos[0], actor="ann", settings=QUEUE)
    await transitions.claim(conn, closed, actor="ann", settings=QUEUE)
    await transitions.resolve(conn, closed, actor="ann", outcome=Outcome.FALSE_ALARM)
    # A dispatcher who calls themself "escalation" does not make an escalation.
    await transitions.claim(conn, door, actor="escalation", settings=QUEUE)
    await conn.execute(
        "UPDATE incidents SET opened_at = now() - interval '600 seconds' WHERE id = %s", [sos[1]]
    )
    # The P3 incident has waited past its limit: the escalation worker's round makes it P2.
    await conn.execute(
        "UPDATE incident_timers SET due_at = now() - interval '1 second' WHERE incident_id = %s",
        [idle],
    )
    [escalation] = await fire_due(conn, QUEUE)
    assert (escalation.incident_id, escalation.to_priority) == (idle, 2)
    app = create_app(CloudSettings(database_url=database_url))

    samples = await scrape(app)

    assert value(samples, "anju_cloud_scrape_database_up") == 1
    open_now = by_labels(samples, "anju_cloud_incidents_open")
    statuses = ("open", "claimed", "acknowledged", "dispatched")
    assert set(open_now) == {(p, s) for p in ("1", "2", "3") for s in statuses}
    assert {key: n for key, n in open_now.items() if n} == {
        ("1", "open"): 2,
        ("1", "claimed"): 1,
        ("2", "open"): 1,
        ("2", "claimed"): 1,
    }
    oldest = by_labels(samples, "anju_cloud_incident_oldest_open_age_seconds")
    assert 600 <= oldest[("1",)] < 600 + WAIT_S
    assert 0 < oldest[("2",)] < WAIT_S
    assert oldest[("3",)] == 0
    assert value(samples, "anju_cloud_escalations_total") == 1
    # Outbox rows: 6 openings, 3 claims and 1 resolution to the subscription taking every
    # event; the escalation to it and to the supervisors'. No worker ran: all pending.
    assert by_labels(samples, "anju_cloud_webhook_deliveries") == {("pending",): 12, ("dead",): 0}
    # This app runs no ingest and no webhook workers: no process counters to report.
    assert not {name for name in names(samples) if name.startswith("anju_cloud_ingest_")}
    assert "anju_cloud_webhook_attempts_total" not in names(samples)

    await transitions.claim(conn, sos[1], actor="bob", settings=QUEUE)
    await transitions.resolve(conn, sos[1], actor="bob", outcome=Outcome.FALSE_ALARM)
    again = await scrape(app)

    open_again = by_labels(again, "anju_cloud_incidents_open")
    assert (open_again[("1", "open")], open_again[("1", "claimed")]) == (1, 1)
    assert by_labels(again, "anju_cloud_incident_oldest_open_age_seconds")[("1",)] < 600
    assert value(again, "anju_cloud_escalations_total") == 1
    assert value(again, "anju_cloud_webhook_deliveries", status="pending") == 14


async def test_gateways_behind_their_config_are_counted_at_each_scrape(
    database_url: str, conn: AsyncConnection[Any]
) -> None:
    """Behind: active, wanting a version it neither runs nor refused. A gateway that
    refused its version waits for a new one (config_error says why), and a revoked one
    is never pushed to, so neither is the pusher's backlog."""
    await register_community(conn, COMMUNITY)
    rows = {
        "gw-behind": (2, 1, 0, "active"),
        "gw-never-applied": (1, 0, 0, "active"),
        "gw-current": (2, 2, 0, "active"),
        "gw-refused": (3, 1, 3, "active"),
        "gw-revoked": (2, 0, 0, "revoked"),
    }
    for gateway, (wanted, applied, refused, status) in rows.items():
        await register_gateway(conn, gateway, COMMUNITY)
        await conn.execute(
            "UPDATE gateways SET config_version = %s, config_applied = %s, "
            "config_refused = %s, status = %s WHERE id = %s",
            [wanted, applied, refused, status, gateway],
        )
    app = create_app(CloudSettings(database_url=database_url))

    samples = await scrape(app)

    assert value(samples, "anju_cloud_gateways_config_behind") == 2
    # No pusher runs in this app: no process counters of it.
    assert not {name for name in names(samples) if name.startswith("anju_cloud_config_")}

    await conn.execute("UPDATE gateways SET config_applied = 2 WHERE id = 'gw-behind'")
    assert value(await scrape(app), "anju_cloud_gateways_config_behind") == 1


async def test_a_dead_letter_counts_in_the_database_and_in_the_process(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    receiver.script = Script(status=500)
    settings = fast_settings(retry_schedule_s=(0.05,))
    community_id = await community(conn)
    await add_subscription(conn, community_id, receiver.url)
    await open_incidents(conn, community_id, 1)
    counters = DeliveryCounters()
    async with (
        open_pool(database_url, name="test-webhooks", max_size=2) as pool,
        Sender(settings) as sender,
    ):
        worker = DeliveryWorker(pool, settings, sender, counters=counters)
        deadline = time.monotonic() + WAIT_S
        while counters.dead == 0:
            assert time.monotonic() < deadline, f"no dead letter: {counters.snapshot()}"
            await worker.run_once()
            await asyncio.sleep(0.05)
    [row] = await deliveries(database_url)
    assert (row["status"], row["attempts"]) == ("dead", 2)
    app = create_app(CloudSettings(database_url=database_url), deliveries=counters)

    samples = await scrape(app)

    assert by_labels(samples, "anju_cloud_webhook_deliveries") == {("pending",): 0, ("dead",): 1}
    assert value(samples, "anju_cloud_webhook_attempts_total") == 2
    assert value(samples, "anju_cloud_webhook_failures_total") == 2
    assert value(samples, "anju_cloud_webhook_dead_letters_total") == 1

    # A replay sets the row's attempts back to 0 and makes it pending, as here: the gauge
    # follows, while the totals, the process's own counts, do not fall.
    await conn.execute(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, "
        "next_attempt_at = now() + interval '1 hour' WHERE id = %s",
        [row["id"]],
    )
    replayed = await scrape(app)

    assert by_labels(replayed, "anju_cloud_webhook_deliveries") == {("pending",): 1, ("dead",): 0}
    assert value(replayed, "anju_cloud_webhook_attempts_total") == 2
    assert value(replayed, "anju_cloud_webhook_dead_letters_total") == 1


async def test_a_scrape_without_its_database_answers_with_database_up_0() -> None:
    """The pool points at a port nothing listens on, so each checkout fails after the
    scrape's timeout; the process's counters are still reported."""
    counters = IngestCounters(messages=5, batches=4, duplicates=1, readings=40, groups=3)
    unreachable = f"postgresql://anju@127.0.0.1:{free_port()}/anju"
    async with open_pool(unreachable, name="metrics") as pool:
        body = await render(pool, ingest=counters, deliveries=DeliveryCounters())

    samples = parse(httpx.Response(200, content=body, headers=_TEXT))

    assert value(samples, "anju_cloud_scrape_database_up") == 0
    assert value(samples, "anju_cloud_ingest_messages_total") == 5
    assert value(samples, "anju_cloud_ingest_duplicates_total") == 1
    assert value(samples, "anju_cloud_ingest_groups_total") == 3
    assert not names(samples) & {
        "anju_cloud_incidents_open",
        "anju_cloud_incident_oldest_open_age_seconds",
        "anju_cloud_escalations_total",
        "anju_cloud_webhook_deliveries",
    }
    assert "process_open_fds" in names(samples)


@pytest.fixture
def ingest_settings(
    database_url: str, mqtt_url: str, unique_id: Callable[[str], str]
) -> CloudSettings:
    """Ingest through the session's broker, with this test's own group and client ids."""
    return CloudSettings(
        database_url=database_url,
        mqtt=parse_broker_url(mqtt_url),
        ingest=IngestSettings(
            group=unique_id("group"),
            client_id=unique_id("ingest"),
            session_expiry_s=120,
            backoff_initial_s=0.1,
            backoff_cap_s=1.0,
        ),
    )


@pytest_asyncio.fixture
async def ingesting(ingest_settings: CloudSettings) -> AsyncIterator[IngestCounters]:
    """The counters of an ingest worker that runs, subscribed, for the whole test."""
    counters = IngestCounters()
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_ingest(ingest_settings, stop=stop, counters=counters, started=started)
    )
    async with asyncio.timeout(WAIT_S):
        await started.wait()
    yield counters
    stop.set()
    async with asyncio.timeout(WAIT_S):
        await task


def telemetry(gateway: str, device: str, seq: int, sealed_at: datetime) -> bytes:
    readings = [
        Reading(device=device, ts=sealed_at, seq=n, metric=Metric.TEMPERATURE, value=20.0 + n)
        for n in range(2)
    ]
    batch = TelemetryBatch(
        gateway=gateway,
        community=COMMUNITY,
        spool_epoch="0123456789abcdef",
        batch_seq=seq,
        sent_at=sealed_at,
        items=readings,
    )
    return encode(batch)


async def test_ingest_counts_groups_and_the_lag_of_the_newest_stored_batch(
    database_url: str,
    ingest_settings: CloudSettings,
    ingesting: IngestCounters,
    unique_id: Callable[[str], str],
) -> None:
    gateway = unique_id("gw")
    device = f"{gateway}-smoke-1"
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, gateway, COMMUNITY)
        await register_device(
            conn, device, gateway_id=gateway, kind=DeviceKind.SMOKE, profile_id="anju-smoke-mb"
        )
    topic = topic_for(COMMUNITY, gateway, Channel.TELEMETRY)
    sealed = datetime.now(UTC) - timedelta(seconds=30)
    first = telemetry(gateway, device, 1, sealed)
    app = create_app(ingest_settings, counters=ingesting)
    broker = ingest_settings.broker

    async def publish(to: str, payload: bytes) -> None:
        async with aiomqtt.Client(
            broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            await client.publish(to, payload, qos=1, timeout=10)

    await publish(topic, first)
    await wait_until(lambda: ingesting.messages == 1, "the first batch")
    samples = await scrape(app)

    assert value(samples, "anju_cloud_ingest_groups_total") == 1
    assert value(samples, "anju_cloud_ingest_batches_total") == 1
    assert value(samples, "anju_cloud_ingest_readings_total") == 2
    lag = value(samples, "anju_cloud_ingest_lag_seconds")
    assert 30 <= lag < 30 + WAIT_S

    # The same batch again stores nothing: a group is counted, the lag is not refreshed;
    # nor by a fresh batch that is quarantined (its gateway is not registered).
    await publish(topic, first)
    await wait_until(lambda: ingesting.messages == 2, "the repeated batch")
    stranger = unique_id("gw")
    await publish(
        topic_for(COMMUNITY, stranger, Channel.TELEMETRY),
        telemetry(stranger, f"{stranger}-smoke-1", 1, datetime.now(UTC)),
    )
    await wait_until(lambda: ingesting.messages == 3, "the stranger's batch")
    repeated = await scrape(app)

    assert value(repeated, "anju_cloud_ingest_groups_total") == 3
    assert value(repeated, "anju_cloud_ingest_duplicates_total") == 1
    assert value(repeated, "anju_cloud_ingest_quarantined_total") == 1
    assert value(repeated, "anju_cloud_ingest_lag_seconds") >= lag

    # A gateway whose clock runs an hour ahead counts as sealing at the commit, so the
    # lag grows from then on instead of reading 0 for an hour.
    await publish(topic, telemetry(gateway, device, 2, datetime.now(UTC) + timedelta(hours=1)))
    await wait_until(lambda: ingesting.messages == 4, "the batch from the future")
    await asyncio.sleep(1.0)
    ahead = await scrape(app)

    assert value(ahead, "anju_cloud_ingest_batches_total") == 2
    assert 1.0 <= value(ahead, "anju_cloud_ingest_lag_seconds") < WAIT_S


async def test_anju_cloud_run_serves_its_ingest_and_webhook_counters(
    database_url: str, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    device = f"{gateway}-smoke-1"
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, gateway, COMMUNITY)
        await register_device(
            conn, device, gateway_id=gateway, kind=DeviceKind.SMOKE, profile_id="anju-smoke-mb"
        )
        admin = await make_key(conn, name="prometheus")
    port = free_port()
    settings = load_settings(
        {
            "ANJU_DATABASE_URL": database_url,
            "ANJU_MQTT_URL": mqtt_url,
            "ANJU_API_PORT": str(port),
            "ANJU_INGEST_GROUP": unique_id("group"),
            "ANJU_INGEST_CLIENT_ID": unique_id("cloud"),
        }
    )
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_cloud(settings, stop=stop, started=started))
    async with asyncio.timeout(WAIT_S):
        await started.wait()
    broker = settings.broker
    async with aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as mq:
        payload = telemetry(gateway, device, 1, datetime.now(UTC))
        await mq.publish(topic_for(COMMUNITY, gateway, Channel.TELEMETRY), payload, qos=1)

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=5, headers=bearer(admin)
    ) as http:
        deadline = time.monotonic() + WAIT_S
        while True:
            samples = parse(await http.get("/metrics"))
            if value(samples, "anju_cloud_ingest_messages_total") == 1:
                break
            assert time.monotonic() < deadline, "the batch was not counted"
            await asyncio.sleep(0.05)
    stop.set()
    async with asyncio.timeout(WAIT_S):
        await task

    assert value(samples, "anju_cloud_scrape_database_up") == 1
    assert value(samples, "anju_cloud_ingest_batches_total") == 1
    assert value(samples, "anju_cloud_ingest_readings_total") == 2
    assert value(samples, "anju_cloud_webhook_attempts_total") == 0
    # The config pusher runs too; nothing was due to be pushed.
    assert value(samples, "anju_cloud_config_pushes_total") == 0
    assert by_labels(samples, "anju_cloud_config_results_total") == {
        ("applied",): 0,
        ("refused",): 0,
        ("failed",): 0,
    }
    assert value(samples, "anju_cloud_gateways_config_behind") == 0


async def test_the_openapi_document_lists_metrics_as_text() -> None:
    app = create_app(CloudSettings(database_url="postgresql://anju@127.0.0.1:9/anju"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://anju") as http:
        document = (await http.get("/openapi.json")).json()
    answers = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(answers) == {"text/plain"}
