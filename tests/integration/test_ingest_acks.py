"""The cloud's acknowledgements and its alarm lane, through the real Mosquitto and
PostgreSQL of the session.

A gateway's batches are published with aiomqtt as the gateway would; a subscriber on
``anju/v1/+/+/+/ack`` hears what ingest acknowledges. Each test has its own database,
gateway ids (so its topics are its own), subscription group and client ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import msgspec
import psycopg
import pytest
import pytest_asyncio

from anju.services.mosquitto import MosquittoServer
from cloud.ingest.acks import batch_acks
from cloud.ingest.counters import BatchOutcome, IngestCounters
from cloud.ingest.writer import decode_message
from cloud.registry import register_community, register_device, register_gateway
from cloud.settings import CloudSettings
from schemas.broker import parse_broker_url
from schemas.topics import Channel, parse_topic, topic_for
from schemas.vocabulary import DeviceKind, EventType, Metric, Severity
from schemas.wire import (
    AckOutcome,
    BatchAck,
    Event,
    EventBatch,
    Reading,
    TelemetryBatch,
    decode,
    encode,
)
from tests.integration.ingest_support import ingest_settings, running_ingest
from tests.waiting import until

COMMUNITY = "xijin/fenghuang"
EPOCH = "0123456789abcdef"
WAIT_S = 20.0
ACKS = "anju/v1/+/+/+/ack"


def event_batch(gateway: str, seq: int, device: str) -> bytes:
    now = datetime.now(UTC)
    return encode(
        EventBatch(
            gateway=gateway,
            community=COMMUNITY,
            spool_epoch=EPOCH,
            batch_seq=seq,
            sent_at=now,
            items=[
                Event(
                    device=device,
                    ts=now,
                    seq=seq,
                    type=EventType.SMOKE_ALARM,
                    severity=Severity.CRITICAL,
                )
            ],
        )
    )


def telemetry_batch(gateway: str, seq: int, device: str, readings: int = 3) -> bytes:
    now = datetime.now(UTC)
    return encode(
        TelemetryBatch(
            gateway=gateway,
            community=COMMUNITY,
            spool_epoch=EPOCH,
            batch_seq=seq,
            sent_at=now,
            items=[
                Reading(
                    device=device,
                    ts=now - timedelta(milliseconds=index),
                    seq=index,
                    metric=Metric.TEMPERATURE,
                    value=20.0,
                )
                for index in range(readings)
            ],
        )
    )


class AckListener:
    """What ingest acknowledged, per gateway: (spool epoch, batch seq, outcome, reason)."""

    def __init__(self) -> None:
        self.acked: dict[str, list[tuple[str, int, AckOutcome, str]]] = {}
        self.messages = 0

    def heard(self, topic: str, payload: bytes) -> None:
        ack = decode(payload, BatchAck, topic=topic)
        assert parse_topic(topic).gateway == ack.gateway, "acknowledged on another's topic"
        self.messages += 1
        self.acked.setdefault(ack.gateway, []).extend(
            (batch.spool_epoch, batch.batch_seq, batch.outcome, batch.reason)
            for batch in ack.batches
        )

    def outcome(self, gateway: str, seq: int) -> list[AckOutcome]:
        return [entry[2] for entry in self.acked.get(gateway, []) if entry[1] == seq]


@asynccontextmanager
async def listening(mqtt_url: str, client_id: str) -> AsyncIterator[AckListener]:
    """An ``AckListener`` subscribed (at QoS 1) before the block starts."""
    broker = parse_broker_url(mqtt_url)
    listener = AckListener()
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5, identifier=client_id
    ) as client:
        await client.subscribe(ACKS, qos=1, timeout=10)

        async def hear() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                listener.heard(message.topic.value, message.payload)

        task = asyncio.create_task(hear())
        try:
            yield listener
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def publisher(mqtt_url: str, client_id: str) -> AsyncIterator[aiomqtt.Client]:
    broker = parse_broker_url(mqtt_url)
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5, identifier=client_id
    ) as client:
        yield client


@pytest.fixture
def settings(
    database_url: str, mosquitto: MosquittoServer, unique_id: Callable[[str], str]
) -> CloudSettings:
    return ingest_settings(database_url, mosquitto.url, unique_id, write_timeout_s=15.0)


@pytest_asyncio.fixture(loop_scope="function")
async def gateway(database_url: str, unique_id: Callable[[str], str]) -> str:
    """A registered gateway with one smoke detector, ``{gateway}-smoke``."""
    gateway = unique_id("gw")
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, gateway, COMMUNITY)
        await register_device(
            conn,
            f"{gateway}-smoke",
            gateway_id=gateway,
            kind=DeviceKind.SMOKE,
            profile_id="anju-smoke-mb",
            building="3",
            unit="2",
        )
    return gateway


@pytest_asyncio.fixture(loop_scope="function")
async def counters(settings: CloudSettings) -> AsyncIterator[IngestCounters]:
    """Counters of one plain ingest worker that runs (subscribed) for the whole test."""
    async with running_ingest(settings) as totals:
        yield totals


def scalar(database_url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


async def test_stored_duplicate_and_refused_batches_are_acknowledged_to_their_gateway(
    gateway: str,
    counters: IngestCounters,
    mqtt_url: str,
    unique_id: Callable[[str], str],
) -> None:
    smoke = f"{gateway}-smoke"
    stranger = f"{gateway}-x"
    events, telemetry = (
        topic_for(COMMUNITY, gateway, c) for c in (Channel.EVENTS, Channel.TELEMETRY)
    )
    malformed = msgspec.json.encode(
        {**msgspec.json.decode(event_batch(gateway, 3, smoke)), "items": [{"device": smoke}]}
    )
    async with (
        listening(mqtt_url, unique_id("acks")) as acks,
        publisher(mqtt_url, unique_id("pub")) as client,
    ):
        await client.publish(telemetry, telemetry_batch(gateway, 1, smoke), qos=1)
        alarm = event_batch(gateway, 2, smoke)
        await client.publish(events, alarm, qos=1)
        await until(
            "both batches acknowledged as stored",
            WAIT_S,
            lambda: acks.outcome(gateway, 1) == acks.outcome(gateway, 2) == [AckOutcome.STORED],
        )

        # The gateway's resend (the same bytes) after a lost acknowledgement.
        await client.publish(events, alarm, qos=1)
        await client.publish(events, malformed, qos=1)
        await client.publish(
            topic_for(COMMUNITY, stranger, Channel.EVENTS),
            event_batch(stranger, 1, smoke),
            qos=1,
        )
        # Not even a batch key: nothing to acknowledge. The batch after it on the same
        # lane is acknowledged after it, so its acknowledgement closes the test.
        await client.publish(telemetry, b'{"schema_version": 2, "gateway": ', qos=1)
        await client.publish(telemetry, telemetry_batch(gateway, 4, smoke), qos=1)
        await until(
            "the last batches' acknowledgements",
            WAIT_S,
            lambda: bool(acks.outcome(gateway, 4) and acks.outcome(stranger, 1)),
        )
        await until("the malformed batch's", WAIT_S, lambda: bool(acks.outcome(gateway, 3)))
        await until("every message acknowledged", WAIT_S, lambda: counters.messages == 7)

    ours = {(seq, outcome): reason for epoch, seq, outcome, reason in acks.acked[gateway]}
    assert {epoch for epoch, *_ in acks.acked[gateway]} == {EPOCH}
    assert sorted(ours, key=str) == sorted(
        [
            (1, AckOutcome.STORED),
            (2, AckOutcome.STORED),
            (2, AckOutcome.DUPLICATE),
            (3, AckOutcome.REFUSED),
            (4, AckOutcome.STORED),
        ],
        key=str,
    )
    assert len(acks.acked[gateway]) == 5
    assert "malformed events payload" in ours[(3, AckOutcome.REFUSED)]
    assert ours[(2, AckOutcome.DUPLICATE)] == ""
    assert acks.acked[stranger] == [(EPOCH, 1, AckOutcome.REFUSED, "unknown gateway")]
    assert counters.acks_published == acks.messages
    assert counters.ack_failures == 0
    assert (counters.batches, counters.duplicates, counters.quarantined) == (3, 1, 3)


async def test_an_alarm_is_committed_and_acknowledged_while_a_telemetry_group_waits(
    gateway: str,
    counters: IngestCounters,
    database_url: str,
    mqtt_url: str,
    unique_id: Callable[[str], str],
) -> None:
    """The telemetry group is held in its transaction by a lock on ``readings`` that
    this test takes (the COPY takes ROW EXCLUSIVE first, which SHARE blocks); the
    alarm behind it is written by the events lane's own transaction meanwhile."""
    smoke = f"{gateway}-smoke"
    readings = 20_000
    async with (
        listening(mqtt_url, unique_id("acks")) as acks,
        publisher(mqtt_url, unique_id("pub")) as client,
    ):
        async with await psycopg.AsyncConnection.connect(database_url) as holder:
            await holder.execute("LOCK TABLE ONLY readings IN SHARE MODE")
            await client.publish(
                topic_for(COMMUNITY, gateway, Channel.TELEMETRY),
                telemetry_batch(gateway, 1, smoke, readings),
                qos=1,
            )

            async def copy_waits() -> bool:
                cur = await holder.execute(
                    "SELECT count(*) FROM pg_locks "
                    "WHERE relation = 'readings'::regclass AND NOT granted"
                )
                row = await cur.fetchone()
                return row is not None and row[0] == 1

            await until("the telemetry group to wait for its lock", WAIT_S, copy_waits)
            await client.publish(
                topic_for(COMMUNITY, gateway, Channel.EVENTS),
                event_batch(gateway, 2, smoke),
                qos=1,
            )
            await until(
                "the alarm's acknowledgement", WAIT_S, lambda: bool(acks.outcome(gateway, 2))
            )

            assert acks.outcome(gateway, 2) == [AckOutcome.STORED]
            assert scalar(database_url, "SELECT count(*) FROM events") == 1
            assert scalar(database_url, "SELECT count(*) FROM incidents") == 1
            assert await copy_waits(), "the telemetry group is still being written"
            assert acks.outcome(gateway, 1) == []
            # Its own session too: its PUBACK does not wait for the telemetry's commit.
            assert counters.messages == 1
            await holder.rollback()

        await until(
            "the telemetry's acknowledgement", WAIT_S, lambda: bool(acks.outcome(gateway, 1))
        )
        await until("both messages acknowledged", WAIT_S, lambda: counters.messages == 2)
    assert acks.outcome(gateway, 1) == [AckOutcome.STORED]
    assert scalar(database_url, "SELECT count(*) FROM readings") == readings
    assert counters.batches == 2


def test_acknowledgements_bound_the_reason_and_name_each_batch_once() -> None:
    gateway = "gw-1"
    topic = topic_for(COMMUNITY, gateway, Channel.EVENTS)
    group = [
        decode_message(topic, event_batch(gateway, 1, "d-1")),
        decode_message(topic, event_batch(gateway, 1, "d-1")),
        decode_message(topic, b"{"),
        decode_message("not/a/topic", b"{}"),
    ]
    outcomes = [
        BatchOutcome("quarantined", quarantined=1, reason="x" * 5000, key=(EPOCH, 1)),
        BatchOutcome("duplicate", key=(EPOCH, 1)),
        BatchOutcome("quarantined", quarantined=1, reason="malformed"),
        BatchOutcome("quarantined", quarantined=1, reason="bad topic", key=(EPOCH, 2)),
    ]
    [ack] = batch_acks(group, outcomes, acked_at=datetime.now(UTC))
    assert ack.topic == topic_for(COMMUNITY, gateway, Channel.ACK)
    decoded = decode(ack.payload, BatchAck)
    assert [(b.batch_seq, b.outcome, len(b.reason)) for b in decoded.batches] == [
        (1, AckOutcome.REFUSED, 1024)
    ]
