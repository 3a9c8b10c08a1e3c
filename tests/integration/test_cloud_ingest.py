"""Ingest end to end through the real Mosquitto and PostgreSQL of the session.

Batches are published with aiomqtt as a gateway would; the cloud's ingest workers
store them; the API reads the incidents back. Each test has its own database, its own
gateway id (so its topics are its own) and its own subscription group and client ids.
Async fixtures run on the test's own event loop, where the ingest task must run.
The last test runs ``run_cloud`` as ``anju cloud run`` does, with a real uvicorn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import httpx
import psycopg
import pytest
import pytest_asyncio
from fastapi import FastAPI
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from anju.services.mosquitto import MosquittoServer
from anju.services.ports import free_port
from anju.services.postgres import PostgresServer
from cloud.api.app import create_app
from cloud.app import run_cloud
from cloud.ingest.counters import IngestCounters
from cloud.registry import register_community, register_device, register_gateway
from cloud.settings import ApiSettings, CloudSettings, IngestSettings
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import DeviceKind, EventType, Metric, Severity
from schemas.wire import Event, EventBatch, Reading, TelemetryBatch, encode
from tests.api_support import api_client, bearer, make_key
from tests.integration.ingest_support import ingest_settings, running_ingest

COMMUNITY = "xijin/fenghuang"
EPOCH = "0123456789abcdef"
WAIT_S = 20.0


class Site:
    """A registered gateway with a smoke detector and a wearable, and a way to publish."""

    def __init__(self, gateway: str, mqtt_url: str) -> None:
        self.gateway = gateway
        self.smoke = f"{gateway}-smoke-1"
        self.wearable = f"{gateway}-wear-1"
        self._broker = parse_broker_url(mqtt_url)

    def topic(self, channel: Channel, *, gateway: str | None = None) -> str:
        return topic_for(COMMUNITY, gateway or self.gateway, channel)

    def events(self, seq: int, *items: tuple[str, EventType], gateway: str | None = None) -> bytes:
        now = datetime.now(UTC)
        return encode(
            EventBatch(
                gateway=gateway or self.gateway,
                community=COMMUNITY,
                spool_epoch=EPOCH,
                batch_seq=seq,
                sent_at=now,
                items=[
                    Event(device=device, ts=now, seq=index, type=kind, severity=Severity.CRITICAL)
                    for index, (device, kind) in enumerate(items)
                ],
            )
        )

    def readings(self, seq: int, *devices: str) -> bytes:
        now = datetime.now(UTC)
        return encode(
            TelemetryBatch(
                gateway=self.gateway,
                community=COMMUNITY,
                spool_epoch=EPOCH,
                batch_seq=seq,
                sent_at=now,
                items=[
                    Reading(
                        device=device,
                        ts=now - timedelta(seconds=index),
                        seq=index,
                        metric=Metric.TEMPERATURE,
                        value=20.0 + index,
                    )
                    for index, device in enumerate(devices)
                ],
            )
        )

    async def publish(
        self, *messages: tuple[str, bytes], qos: int = 1, properties: Properties | None = None
    ) -> None:
        async with aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            identifier=f"{self.gateway}-publisher",
        ) as client:
            for topic, payload in messages:
                await client.publish(topic, payload, qos=qos, properties=properties, timeout=10)


@pytest.fixture
def settings(
    database_url: str, mosquitto: MosquittoServer, unique_id: Callable[[str], str]
) -> CloudSettings:
    return ingest_settings(database_url, mosquitto.url, unique_id)


@pytest_asyncio.fixture(loop_scope="function")
async def site(
    database_url: str, mosquitto: MosquittoServer, unique_id: Callable[[str], str]
) -> Site:
    site = Site(unique_id("gw"), mosquitto.url)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, site.gateway, COMMUNITY)
        await register_device(
            conn,
            site.smoke,
            gateway_id=site.gateway,
            kind=DeviceKind.SMOKE,
            profile_id="anju-smoke-mb",
            building="3",
            unit="2",
        )
        await register_device(
            conn,
            site.wearable,
            gateway_id=site.gateway,
            kind=DeviceKind.WEARABLE,
            profile_id="anju-band",
            building="5",
            unit="1",
        )
    return site


@pytest_asyncio.fixture(loop_scope="function")
async def counters(settings: CloudSettings) -> AsyncIterator[IngestCounters]:
    """Counters of an ingest worker that runs (subscribed) for the whole test."""
    async with running_ingest(settings) as totals:
        yield totals


async def wait_until(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def rows(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def api(settings: CloudSettings) -> FastAPI:
    return create_app(settings)


@pytest_asyncio.fixture(loop_scope="function")
async def token(database_url: str) -> str:
    """An admin key, so the incidents read back are all those stored."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await make_key(conn)


async def get_json(app: FastAPI, path: str, token: str | None) -> tuple[int, Any]:
    async with api_client(app, token) as client:
        response = await client.get(path)
    return response.status_code, response.json()


async def test_alarm_and_readings_are_stored_and_the_incident_is_listed(
    site: Site, counters: IngestCounters, database_url: str, api: FastAPI, token: str
) -> None:
    await site.publish(
        (site.topic(Channel.TELEMETRY), site.readings(1, site.smoke, site.smoke, site.wearable)),
        (site.topic(Channel.EVENTS), site.events(1, (site.smoke, EventType.SMOKE_ALARM))),
    )
    await wait_until(lambda: counters.batches == 2, "both batches")

    assert rows(
        database_url, "SELECT count(*) FROM readings WHERE gateway_id = %s", site.gateway
    ) == [(3,)]
    assert rows(database_url, "SELECT device_id, type FROM events") == [(site.smoke, "smoke.alarm")]
    assert rows(database_url, "SELECT count(*) FROM devices WHERE last_seen IS NOT NULL") == [(2,)]
    incidents = rows(database_url, "SELECT id, type, priority, status, event_count FROM incidents")
    assert [row[1:] for row in incidents] == [("fire", 1, "open", 1)]
    assert rows(database_url, "SELECT from_status, to_status, actor FROM incident_log") == [
        (None, "open", "system")
    ]
    assert (counters.readings, counters.events, counters.incidents_opened) == (3, 1, 1)

    status, page = await get_json(api, "/incidents?status=open", token)
    assert status == 200
    listed = page["items"]
    assert len(listed) == 1
    assert listed[0]["type"] == "fire"
    assert listed[0]["community"] == COMMUNITY
    assert (listed[0]["building"], listed[0]["unit"]) == ("3", "2")
    assert listed[0]["device_id"] == site.smoke
    assert listed[0]["first_event_ts"] is not None

    status, detail = await get_json(api, f"/incidents/{incidents[0][0]}", token)
    assert status == 200
    assert [(entry["from_status"], entry["to_status"]) for entry in detail["log"]] == [
        (None, "open")
    ]
    assert (await get_json(api, "/incidents/999999", token))[0] == 404
    status, health = await get_json(api, "/health", None)
    assert (status, {key: value for key, value in health.items() if key != "time"}) == (
        200,
        {"status": "ok", "database": "ok", "detail": ""},
    )


async def test_messages_with_mqtt5_properties_and_at_qos_0_are_stored(
    site: Site, counters: IngestCounters, database_url: str
) -> None:
    """Ingest reads PUBLISH packets itself and steps over their properties: what a
    gateway or a bridge attaches (here more than 127 bytes of them) changes nothing."""
    properties = Properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = 600
    properties.ContentType = "application/json"
    properties.UserProperty = [("bridge", "x" * 200)]
    await site.publish(
        (site.topic(Channel.TELEMETRY), site.readings(1, site.smoke)), properties=properties
    )
    await site.publish((site.topic(Channel.TELEMETRY), site.readings(2, site.wearable)), qos=0)
    await wait_until(lambda: counters.batches == 2, "both batches")
    assert rows(
        database_url,
        "SELECT device_id FROM readings WHERE gateway_id = %s ORDER BY device_id",
        site.gateway,
    ) == [(site.smoke,), (site.wearable,)]
    assert counters.quarantined == 0


async def test_resent_batch_is_stored_once_and_repeats_join_the_open_incident(
    site: Site, counters: IngestCounters, database_url: str, api: FastAPI, token: str
) -> None:
    alarm = site.events(1, (site.smoke, EventType.SMOKE_ALARM))
    await site.publish((site.topic(Channel.EVENTS), alarm), (site.topic(Channel.EVENTS), alarm))
    await wait_until(lambda: counters.messages == 2, "the batch and its resend")
    assert (counters.batches, counters.duplicates) == (1, 1)
    assert rows(database_url, "SELECT count(*) FROM events") == [(1,)]

    await site.publish(
        (site.topic(Channel.EVENTS), site.events(2, (site.smoke, EventType.SMOKE_ALARM))),
        (
            site.topic(Channel.EVENTS),
            # Sustained: the rule wants three within five minutes.
            site.events(3, *[(site.wearable, EventType.WEARABLE_HEART_RATE_ABNORMAL)] * 3),
        ),
        (site.topic(Channel.EVENTS), site.events(4, (site.wearable, EventType.WEARABLE_SOS))),
    )
    await wait_until(lambda: counters.batches == 4, "three more batches")
    incidents = rows(
        database_url,
        "SELECT type, priority, event_count, (SELECT count(*) FROM incident_events e "
        "WHERE e.incident_id = i.id) FROM incidents i ORDER BY id",
    )
    assert incidents == [("fire", 1, 2, 2), ("heart_rate_abnormal", 2, 3, 3), ("sos", 1, 1, 1)]
    assert (counters.incidents_opened, counters.incidents_joined) == (3, 3)

    status, page = await get_json(api, "/incidents", token)
    assert status == 200
    assert [(item["type"], item["priority"]) for item in page["items"]] == [
        ("fire", 1),
        ("sos", 1),
        ("heart_rate_abnormal", 2),
    ]


async def test_bad_input_is_quarantined_with_a_reason_while_the_rest_flows(
    site: Site, counters: IngestCounters, database_url: str
) -> None:
    stranger = f"{site.gateway}-x"
    await site.publish(
        (site.topic(Channel.EVENTS), b'{"schema_version": 1, "gateway": '),
        (
            site.topic(Channel.EVENTS),
            site.events(1, (site.smoke, EventType.SMOKE_ALARM), gateway=stranger),
        ),
        (
            site.topic(Channel.EVENTS, gateway=stranger),
            site.events(1, (site.smoke, EventType.SMOKE_ALARM), gateway=stranger),
        ),
        (
            site.topic(Channel.TELEMETRY),
            site.readings(1, site.smoke, "ghost-1", site.wearable, "ghost-1"),
        ),
        (site.topic(Channel.EVENTS), site.events(2, (site.smoke, EventType.SMOKE_ALARM))),
    )
    await wait_until(lambda: counters.messages == 5, "all five messages")

    reasons = rows(
        database_url, "SELECT reason, gateway_id, payload_size > 0 FROM quarantine ORDER BY id"
    )
    assert len(reasons) == 4
    assert "malformed events payload" in reasons[0][0]
    assert f"payload gateway {stranger!r} does not match" in reasons[1][0]
    assert reasons[2][:2] == ("unknown gateway", stranger)
    assert "unknown device 'ghost-1': not registered (2 items" in reasons[3][0]
    assert all(row[2] for row in reasons)

    assert rows(database_url, "SELECT device_id FROM readings ORDER BY device_id") == [
        (site.smoke,),
        (site.wearable,),
    ]
    assert rows(database_url, "SELECT type FROM incidents") == [("fire",)]
    assert (counters.quarantined, counters.batches) == (4, 2)


@pytest.mark.own_server
async def test_message_is_not_acknowledged_while_the_database_is_down(
    site: Site,
    counters: IngestCounters,
    database_url: str,
    postgres: PostgresServer,
) -> None:
    await site.publish(
        (site.topic(Channel.EVENTS), site.events(1, (site.smoke, EventType.SMOKE_ALARM)))
    )
    await wait_until(lambda: counters.batches == 1, "the first batch")

    await asyncio.to_thread(postgres.stop)
    try:
        await site.publish(
            (site.topic(Channel.EVENTS), site.events(2, (site.wearable, EventType.WEARABLE_FALL)))
        )
        await wait_until(lambda: counters.storage_errors >= 1, "a storage error")
        assert counters.batches == 1
    finally:
        await asyncio.to_thread(postgres.start)

    # The worker kept nothing in memory: the batch can only arrive through the broker's
    # redelivery of the unacknowledged message.
    await wait_until(lambda: counters.batches == 2, "the redelivered batch")
    assert rows(database_url, "SELECT type FROM incidents ORDER BY id") == [("fire",), ("fall",)]
    assert counters.duplicates == 0


async def test_run_cloud_serves_incidents_and_stops_on_request(
    database_url: str, mosquitto: MosquittoServer, unique_id: Callable[[str], str]
) -> None:
    site = Site(unique_id("gw"), mosquitto.url)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, site.gateway, COMMUNITY)
        await register_device(
            conn, site.smoke, gateway_id=site.gateway, kind=DeviceKind.SMOKE, profile_id="p-smoke"
        )
        token = await make_key(conn)
    port = free_port()
    settings = CloudSettings(
        database_url=database_url,
        mqtt=parse_broker_url(mosquitto.url),
        api=ApiSettings(port=port),
        ingest=IngestSettings(group=unique_id("group"), client_id=unique_id("cloud")),
    )
    counters = IngestCounters()
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_cloud(settings, workers=2, stop=stop, counters=counters, started=started)
    )
    async with asyncio.timeout(20):
        await started.wait()

    await site.publish(
        (site.topic(Channel.EVENTS), site.events(1, (site.smoke, EventType.SMOKE_ALARM)))
    )
    await wait_until(lambda: counters.incidents_opened == 1, "the incident")
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=5, headers=bearer(token)
    ) as client:
        health = await client.get("/health")
        listed = await client.get("/incidents", params={"status": "open"})
    assert health.status_code == 200
    assert [item["type"] for item in listed.json()["items"]] == ["fire"]

    stop.set()
    async with asyncio.timeout(20):
        await task
