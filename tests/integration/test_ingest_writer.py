"""The group writer and the consumer's poison handling against the real database and broker.

``BatchWriter.write`` is called directly with groups built as the consumer builds them
(``decode_message`` on real payloads), so each test decides exactly which messages
share a transaction. The poison test runs a real consumer on the session's Mosquitto
with a writer that fails on one payload, as a fault in our own code would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import psycopg
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from cloud.ingest.consumer import IngestConsumer
from cloud.ingest.counters import BatchOutcome, IngestCounters
from cloud.ingest.writer import BatchWriter, Decoded, decode_message
from cloud.registry import register_community, register_device, register_gateway
from cloud.rules.config import load_rules
from cloud.settings import IngestSettings
from cloud.storage.pool import open_pool
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import DeviceKind, EventType, Metric, Severity
from schemas.wire import Event, EventBatch, EventData, Reading, TelemetryBatch, encode

COMMUNITY = "xijin/fenghuang"
GATEWAY = "gw-writer"
DEVICE = "gw-writer-band-1"


@pytest_asyncio.fixture(loop_scope="function")
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, GATEWAY, COMMUNITY)
        await register_device(
            conn, DEVICE, gateway_id=GATEWAY, kind=DeviceKind.WEARABLE, profile_id="anju-band"
        )
    async with open_pool(database_url, name="test-writer", max_size=2) as opened:
        yield opened


def telemetry(batch_seq: int, *seqs: int) -> Decoded:
    now = datetime.now(UTC)
    batch = TelemetryBatch(
        gateway=GATEWAY,
        community=COMMUNITY,
        spool_epoch="00000000000000bb",
        batch_seq=batch_seq,
        sent_at=now,
        items=[
            Reading(device=DEVICE, ts=now, seq=seq, metric=Metric.HEART_RATE, value=70.0)
            for seq in seqs
        ],
    )
    return decode_message(topic_for(COMMUNITY, GATEWAY, Channel.TELEMETRY), encode(batch))


def events(batch_seq: int, zone: str) -> Decoded:
    now = datetime.now(UTC)
    batch = EventBatch(
        gateway=GATEWAY,
        community=COMMUNITY,
        spool_epoch="00000000000000bb",
        batch_seq=batch_seq,
        sent_at=now,
        items=[
            Event(
                device=DEVICE,
                ts=now,
                seq=1000 + batch_seq,
                type=EventType.WEARABLE_OUT_OF_RANGE,
                severity=Severity.WARNING,
                data=EventData(zone=zone),
            )
        ],
    )
    return decode_message(topic_for(COMMUNITY, GATEWAY, Channel.EVENTS), encode(batch))


def kinds(outcomes: Sequence[BatchOutcome]) -> list[str]:
    return [outcome.kind for outcome in outcomes]


def rows(database_url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()


async def test_a_batch_twice_in_one_group_and_a_resent_one_store_nothing_twice(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    writer = BatchWriter(pool, load_rules())
    first, second = telemetry(1, 1, 2), telemetry(2, 3)
    assert kinds(await writer.write([first])) == ["stored"]

    # Resent byte for byte, as the edge resends: a batch with other content under a
    # stored key is a conflict (tests/integration/test_wire_hardening.py).
    outcomes = await writer.write([second, first, second])

    assert kinds(outcomes) == ["stored", "duplicate", "duplicate"]
    assert [outcome.key for outcome in outcomes] == [("00000000000000bb", n) for n in (2, 1, 2)]
    assert rows(database_url, "SELECT seq FROM readings ORDER BY seq") == [(1,), (2,), (3,)]
    assert rows(database_url, "SELECT count(*) FROM ingested_batches") == [(2,)]


async def test_a_value_the_database_refuses_quarantines_only_its_message(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    # JSON carries U+0000 and the wire schema accepts it; PostgreSQL's jsonb refuses it
    # (SQLSTATE 22P05), which aborts the whole group's transaction.
    outcomes = await BatchWriter(pool, load_rules()).write(
        [telemetry(1, 1), events(2, "lobby\u0000"), telemetry(3, 2), events(4, "lobby")]
    )

    assert kinds(outcomes) == ["stored", "quarantined", "stored", "stored"]
    assert rows(database_url, "SELECT seq FROM readings ORDER BY seq") == [(1,), (2,)]
    assert rows(database_url, "SELECT data ->> 'zone' FROM events") == [("lobby",)]
    reasons = rows(database_url, "SELECT reason FROM quarantine")
    assert len(reasons) == 1
    assert "database refused the batch" in reasons[0][0]


class FailsOnOnePayload(BatchWriter):
    """A writer with a fault that one payload triggers, as a bug in our code would."""

    def __init__(self, pool: AsyncConnectionPool[Any], poison: bytes) -> None:
        super().__init__(pool, load_rules())
        self.poison = poison
        self.failures = 0

    async def write(self, group: Sequence[Decoded]) -> list[BatchOutcome]:
        if any(message.payload == self.poison for message in group):
            self.failures += 1
            raise RuntimeError("a fault this payload triggers")
        return await super().write(group)


async def test_a_message_that_keeps_failing_is_quarantined_and_the_rest_flows(
    pool: AsyncConnectionPool[Any],
    database_url: str,
    mqtt_url: str,
    unique_id: Callable[[str], str],
) -> None:
    poison = telemetry(2, 2)
    writer = FailsOnOnePayload(pool, poison.payload)
    counters = IngestCounters()
    settings = IngestSettings(
        group=unique_id("grp"),
        client_id=unique_id("ingest"),
        session_expiry_s=120,
        backoff_initial_s=0.05,
        backoff_cap_s=0.2,
        poison_attempts=3,
    )
    consumer = IngestConsumer(
        parse_broker_url(mqtt_url),
        settings,
        writer,
        counters,
        channel=Channel.TELEMETRY,
        client_id=settings.client_id,
        shared_group=settings.group,
    )
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(20):
            await consumer.subscribed.wait()
        broker = parse_broker_url(mqtt_url)
        async with aiomqtt.Client(
            broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            for message in (telemetry(1, 1), poison, telemetry(3, 3)):
                await client.publish(message.topic, message.payload, qos=1)
        deadline = time.monotonic() + 20
        while counters.messages < 3:
            assert time.monotonic() < deadline, f"stuck: {counters.snapshot()}"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert counters.poisoned == 1
    assert writer.failures >= 3
    assert rows(database_url, "SELECT seq FROM readings ORDER BY seq") == [(1,), (3,)]
    reasons = rows(database_url, "SELECT reason, payload_size FROM quarantine")
    assert len(reasons) == 1
    assert "ingest failed on this message 3 times" in reasons[0][0]
    assert "a fault this payload triggers" in reasons[0][0]
    assert reasons[0][1] == len(poison.payload)


@pytest.mark.plain_storage
async def test_late_and_out_of_order_readings_land_in_their_own_time(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    last_month = (now.replace(day=1) - timedelta(days=1)).replace(hour=12)
    long_ago = now - timedelta(days=400)
    stamps = [now, long_ago, last_month, now - timedelta(minutes=5)]
    batch = TelemetryBatch(
        gateway=GATEWAY,
        community=COMMUNITY,
        spool_epoch="00000000000000bb",
        batch_seq=1,
        sent_at=now,
        items=[
            Reading(device=DEVICE, ts=ts, seq=seq, metric=Metric.HEART_RATE, value=70.0)
            for seq, ts in enumerate(stamps, start=1)
        ],
    )
    message = decode_message(topic_for(COMMUNITY, GATEWAY, Channel.TELEMETRY), encode(batch))

    # A backlog of 400 days is believed here, so the readings keep their own times.
    believing = IngestSettings(clock_past_s=500 * 24 * 3600.0)
    assert kinds(await BatchWriter(pool, load_rules(), ingest=believing).write([message])) == [
        "stored"
    ]

    landed = dict(rows(database_url, "SELECT seq, tableoid::regclass::text FROM readings"))
    assert landed == {
        1: f"readings_{now:%Y_%m}",
        2: "readings_default",
        3: f"readings_{last_month:%Y_%m}",
        4: f"readings_{stamps[3]:%Y_%m}",
    }
    stored = dict(rows(database_url, "SELECT seq, ts FROM readings"))
    assert [stored[seq] for seq in range(1, 5)] == stamps


async def test_an_unknown_device_is_logged_once_and_quarantined_every_time(
    pool: AsyncConnectionPool[Any], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    writer = BatchWriter(pool, load_rules())
    for batch_seq in (1, 2, 3):
        now = datetime.now(UTC)
        batch = TelemetryBatch(
            gateway=GATEWAY,
            community=COMMUNITY,
            spool_epoch="00000000000000bb",
            batch_seq=batch_seq,
            sent_at=now,
            items=[
                Reading(device=DEVICE, ts=now, seq=batch_seq, metric=Metric.HEART_RATE, value=70),
                Reading(device="ghost-9", ts=now, seq=batch_seq, metric=Metric.HEART_RATE, value=1),
            ],
        )
        message = decode_message(topic_for(COMMUNITY, GATEWAY, Channel.TELEMETRY), encode(batch))
        assert [o.quarantined for o in await writer.write([message])] == [1]

    assert rows(database_url, "SELECT count(*) FROM quarantine") == [(3,)]
    assert rows(database_url, "SELECT count(*) FROM readings") == [(3,)]
    ghosts = [r for r in caplog.records if "ghost-9" in r.getMessage()]
    assert len(ghosts) == 1
