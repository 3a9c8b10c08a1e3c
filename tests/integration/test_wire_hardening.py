"""What forged and malformed batches do to a running cloud ingest (issue 16, item 6).

Each test publishes batches as a gateway would, through the session's real Mosquitto,
at a real ``run_ingest`` on its own database, and listens on the gateway's ``ack``
topic for what the cloud tells the gateway: a batch resent under a stored key with
other content, items dated by a wrong clock, strings over the wire's bounds and
payloads over the ingest's size limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import psycopg
import pytest
import pytest_asyncio

from anju.services.mosquitto import MosquittoServer
from cloud.ingest.counters import IngestCounters
from cloud.registry import register_community, register_device, register_gateway
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import DeviceKind, EventType, Metric, Severity
from schemas.wire import (
    AckedBatch,
    AckOutcome,
    BatchAck,
    Event,
    EventBatch,
    EventData,
    Reading,
    TelemetryBatch,
    decode,
    encode,
)
from tests.integration.ingest_support import ingest_settings, running_ingest
from tests.waiting import until

COMMUNITY = "xijin/fenghuang"
EPOCH = "00000000000000cc"
WAIT_S = 20.0
PAYLOAD_LIMIT = 8 * 1024 * 1024
"""Over the 5 MB reason, so the schema's bound is what refuses that batch."""
EPOCH_1970 = datetime(1970, 1, 1, tzinfo=UTC)


class Gateway:
    """A registered gateway with a smoke detector and a wearable; publishes batches and
    gathers the acknowledgements the cloud sends it."""

    def __init__(self, gateway: str, mqtt_url: str) -> None:
        self.gateway = gateway
        self.smoke = f"{gateway}-smoke-1"
        self.wearable = f"{gateway}-wear-1"
        self.broker = parse_broker_url(mqtt_url)
        self.acked: dict[int, list[AckedBatch]] = {}
        """Every acknowledgement of each batch seq, in arrival order: a batch sent twice
        may be named twice, and two messages of one group are named once."""

    def topic(self, channel: Channel) -> str:
        return topic_for(COMMUNITY, self.gateway, channel)

    def events(self, seq: int, *items: Event) -> tuple[str, bytes]:
        batch = EventBatch(
            gateway=self.gateway,
            community=COMMUNITY,
            spool_epoch=EPOCH,
            batch_seq=seq,
            sent_at=datetime.now(UTC),
            items=list(items),
        )
        return self.topic(Channel.EVENTS), encode(batch)

    def readings(self, seq: int, *stamps: datetime, value: float = 21.0) -> tuple[str, bytes]:
        batch = TelemetryBatch(
            gateway=self.gateway,
            community=COMMUNITY,
            spool_epoch=EPOCH,
            batch_seq=seq,
            sent_at=datetime.now(UTC),
            items=[
                Reading(
                    device=self.wearable, ts=ts, seq=index, metric=Metric.TEMPERATURE, value=value
                )
                for index, ts in enumerate(stamps)
            ],
        )
        return self.topic(Channel.TELEMETRY), encode(batch)

    def alarm(self, ts: datetime, *, seq: int = 0, reason: str | None = None) -> Event:
        return Event(
            device=self.smoke,
            ts=ts,
            seq=seq,
            type=EventType.SMOKE_ALARM,
            severity=Severity.CRITICAL,
            data=EventData(reason=reason),
        )

    async def publish(self, *messages: tuple[str, bytes]) -> None:
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            identifier=f"{self.gateway}-publisher",
        ) as client:
            for topic, payload in messages:
                await client.publish(topic, payload, qos=1, timeout=10)

    async def listen(self, subscribed: asyncio.Event) -> None:
        """Record every batch acknowledged on the gateway's ack topic, by batch seq."""
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            identifier=f"{self.gateway}-acks",
        ) as client:
            await client.subscribe(self.topic(Channel.ACK), qos=1)
            subscribed.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                for acked in decode(message.payload, BatchAck).batches:
                    assert acked.spool_epoch == EPOCH
                    self.acked.setdefault(acked.batch_seq, []).append(acked)

    def outcomes(self, seq: int) -> list[AckOutcome]:
        return [acked.outcome for acked in self.acked.get(seq, [])]


@pytest_asyncio.fixture(loop_scope="function")
async def site(
    database_url: str, mosquitto: MosquittoServer, unique_id: Callable[[str], str]
) -> AsyncIterator[Gateway]:
    site = Gateway(unique_id("gw"), mosquitto.url)
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
            conn, site.wearable, gateway_id=site.gateway, kind=DeviceKind.WEARABLE, profile_id="b"
        )
    subscribed = asyncio.Event()
    listener = asyncio.create_task(site.listen(subscribed))
    async with asyncio.timeout(WAIT_S):
        await subscribed.wait()
    yield site
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)


@pytest_asyncio.fixture(loop_scope="function")
async def counters(
    database_url: str, mosquitto: MosquittoServer, unique_id: Callable[[str], str]
) -> AsyncIterator[IngestCounters]:
    """Counters of an ingest worker that runs (subscribed) for the whole test."""
    settings = ingest_settings(
        database_url, mosquitto.url, unique_id, max_payload_bytes=PAYLOAD_LIMIT
    )
    async with running_ingest(settings) as totals:
        yield totals


def rows(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


async def test_a_batch_resent_with_other_content_is_a_conflict_refused_with_both_digests(
    site: Gateway,
    counters: IngestCounters,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cloud.ingest.writer")
    now = datetime.now(UTC)
    original = site.readings(1, now, value=21.0)
    # A gateway restored from an old disk image: same epoch, same numbers, new readings.
    restored = site.readings(1, now + timedelta(seconds=1), value=35.0)
    second, restored_second = site.readings(2, now), site.readings(2, now, value=99.0)
    await site.publish(original, second)
    await until("the two original batches", WAIT_S, lambda: counters.batches == 2)
    await site.publish(restored, original, restored_second)
    await until("the restored batches and the resend", WAIT_S, lambda: counters.messages == 5)

    assert (counters.batches, counters.duplicates, counters.conflicts) == (2, 1, 2)
    assert rows(database_url, "SELECT value FROM readings ORDER BY seq, value") == [
        (21.0,),
        (21.0,),
    ]
    reasons = rows(database_url, "SELECT reason, gateway_id, payload FROM quarantine ORDER BY id")
    assert len(reasons) == 2
    reason, gateway, payload = reasons[0]
    assert (gateway, bytes(payload)) == (site.gateway, restored[1])
    assert f"telemetry batch {EPOCH}/1" in reason
    assert hashlib.sha256(original[1]).hexdigest() in reason
    assert hashlib.sha256(restored[1]).hexdigest() in reason
    assert logged(caplog, "batch key conflict") == 1, "once per gateway and spool epoch"
    assert rows(database_url, "SELECT count(*) FROM ingested_batches WHERE digest IS NOT NULL") == [
        (2,)
    ]

    await until(
        "both restored batches refused",
        WAIT_S,
        lambda: all(AckOutcome.REFUSED in site.outcomes(seq) for seq in (1, 2)),
    )
    for seq, conflict in ((1, reason), (2, reasons[1][0])):
        assert site.outcomes(seq)[0] is AckOutcome.STORED
        [refused] = [acked for acked in site.acked[seq] if acked.outcome is AckOutcome.REFUSED]
        assert refused.reason == conflict


async def test_an_alarm_dated_1970_is_stored_at_receipt_and_dates_no_incident(
    site: Gateway,
    counters: IngestCounters,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cloud.ingest.writer")
    before = datetime.now(UTC)
    await site.publish(site.events(1, site.alarm(EPOCH_1970)))
    await until("the alarm", WAIT_S, lambda: counters.batches == 1)
    await site.publish(site.readings(2, EPOCH_1970, datetime.now(UTC)))
    await until("the readings", WAIT_S, lambda: counters.batches == 2)
    after = datetime.now(UTC)

    [(ts, skewed, device_ts)] = rows(database_url, "SELECT ts, clock_skew, device_ts FROM events")
    assert before <= ts <= after
    assert (skewed, device_ts) == (True, EPOCH_1970)
    incidents = rows(
        database_url,
        "SELECT type, priority, device_id, opened_at, last_event_at, event_count "
        "FROM incidents ORDER BY id",
    )
    assert [row[:3] for row in incidents] == [
        ("fire", 1, site.smoke),
        ("gateway_clock_skew", 3, site.gateway),
    ]
    for _, _, _, opened_at, last_event_at, _ in incidents:
        assert before <= opened_at <= after
        assert before <= last_event_at <= after
    assert incidents[1][5] == 2, "the second skewed batch joined the gateway's incident"
    assert logged(caplog, f"gateway {site.gateway} sends items dated outside") == 1
    assert counters.clock_skewed == 2
    assert (counters.incidents_opened, counters.incidents_joined) == (2, 1)
    assert rows(database_url, "SELECT last_seen >= %s FROM devices ORDER BY id", before) == [
        (True,),
        (True,),
    ]


async def test_readings_dated_year_1_2100_and_9999_are_stored_at_receipt_flagged(
    site: Gateway, counters: IngestCounters, database_url: str
) -> None:
    before = datetime.now(UTC)
    believed = before - timedelta(days=20)  # a backlog after an outage: kept as dated
    wrong = [datetime(year, 1, 1, tzinfo=UTC) for year in (1, 2100, 9999)]
    await site.publish(site.readings(1, believed, *wrong))
    await until("the readings", WAIT_S, lambda: counters.batches == 1)
    after = datetime.now(UTC)

    stored = rows(database_url, "SELECT seq, ts, clock_skew FROM readings ORDER BY seq")
    assert stored[0] == (0, believed, None)
    assert [(seq, skewed) for seq, _, skewed in stored[1:]] == [(1, True), (2, True), (3, True)]
    assert all(before <= ts <= after for _, ts, _ in stored[1:])
    assert counters.clock_skewed == 3
    assert rows(database_url, "SELECT type, device_id FROM incidents") == [
        ("gateway_clock_skew", site.gateway)
    ]
    await until("the acknowledgement", WAIT_S, lambda: site.outcomes(1) == [AckOutcome.STORED])


async def test_a_5_mb_reason_and_an_oversized_payload_are_refused(
    site: Gateway, counters: IngestCounters, database_url: str
) -> None:
    now = datetime.now(UTC)
    huge_reason = site.events(1, site.alarm(now, reason="x" * 5_000_000))
    oversized = site.events(2, site.alarm(now, reason="y" * (PAYLOAD_LIMIT + 1)))
    await site.publish(huge_reason, oversized, site.events(3, site.alarm(now)))
    await until("the three batches", WAIT_S, lambda: counters.messages == 3)

    quarantined = rows(
        database_url,
        "SELECT reason, octet_length(payload), payload_size FROM quarantine ORDER BY id",
    )
    assert len(quarantined) == 2
    assert "malformed events payload" in quarantined[0][0]
    assert "$.items[0].data.reason" in quarantined[0][0]
    assert quarantined[0][1:] == (64 * 1024, len(huge_reason[1]))
    assert quarantined[1][0] == (
        f"payload of {len(oversized[1])} bytes is over the {PAYLOAD_LIMIT} byte limit"
    )
    assert quarantined[1][1:] == (64 * 1024, len(oversized[1]))
    assert rows(database_url, "SELECT octet_length(data::text) < 100 FROM events") == [(True,)]
    assert (counters.batches, counters.quarantined) == (1, 2)

    await until("the acknowledgements", WAIT_S, lambda: set(site.acked) == {1, 2, 3})
    assert [site.outcomes(seq) for seq in (1, 2, 3)] == [
        [AckOutcome.REFUSED],
        [AckOutcome.REFUSED],
        [AckOutcome.STORED],
    ]
    assert "$.items[0].data.reason" in site.acked[1][0].reason
    assert site.acked[2][0].reason == quarantined[1][0]


async def test_an_alarm_the_database_refuses_is_quarantined_and_its_group_is_stored(
    site: Gateway, counters: IngestCounters, database_url: str
) -> None:
    """A NUL in a reason passes the wire's checks, but PostgreSQL's jsonb cannot hold it:
    the transaction fails (in pipeline mode the error surfaces at a later statement
    than the insert), ingest writes that group's messages one by one, and only the
    refused batch is quarantined, with the database's reason."""
    now = datetime.now(UTC)
    refused = site.events(2, site.alarm(now, seq=1, reason="sensor\x00 fault"))
    await site.publish(site.events(1, site.alarm(now)), refused, site.events(3, site.alarm(now)))
    await until("the three batches", WAIT_S, lambda: counters.messages == 3)

    [(reason, payload)] = rows(database_url, "SELECT reason, payload FROM quarantine")
    assert reason.startswith("database refused the batch: ")
    assert "Unicode" in reason
    assert bytes(payload) == refused[1]
    assert rows(database_url, "SELECT count(*) FROM events") == [(2,)]
    assert rows(database_url, "SELECT type, event_count FROM incidents") == [("fire", 2)]
    assert (counters.batches, counters.quarantined) == (2, 1)
    await until("the acknowledgements", WAIT_S, lambda: set(site.acked) == {1, 2, 3})
    assert [site.outcomes(seq) for seq in (1, 2, 3)] == [
        [AckOutcome.STORED],
        [AckOutcome.REFUSED],
        [AckOutcome.STORED],
    ]


async def test_a_batch_of_another_schema_version_is_refused_saying_which(
    site: Gateway, counters: IngestCounters, database_url: str
) -> None:
    topic, payload = site.events(1, site.alarm(datetime.now(UTC)))
    older = payload.replace(b'"schema_version":2', b'"schema_version":1', 1)
    assert older != payload
    await site.publish((topic, older))
    await until("the batch", WAIT_S, lambda: counters.messages == 1)

    [(reason,)] = rows(database_url, "SELECT reason FROM quarantine")
    assert reason == (
        "events payload of another schema version: schema_version 1, this side reads 2: "
        "upgrade the gateway agent or the cloud so both speak one version"
    )
    await until("the refusal", WAIT_S, lambda: site.outcomes(1) == [AckOutcome.REFUSED])
    assert site.acked[1][0].reason == reason
