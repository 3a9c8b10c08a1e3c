"""Ingest under faults: a worker killed with kill -9 and the database restarted mid-stream.

A stream of telemetry batches flows from a publisher playing several gateways through
the session's real Mosquitto into the real PostgreSQL, while the test kills an ingest
process (a separate ``anju cloud ingest`` on the shared subscription) or restarts the
database. Afterwards every reading must be stored exactly once: each carries a unique
(device, seq), so the count of rows, the count of distinct (device, seq) and the
number published must all agree, and nothing may sit in quarantine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from anju.services.mosquitto import MosquittoServer
from anju.services.postgres import PostgresServer
from cloud.app import run_ingest
from cloud.ingest.counters import IngestCounters
from cloud.registry import register_community, register_device, register_gateway
from cloud.settings import CloudSettings, IngestSettings
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import DeviceKind, Metric
from schemas.wire import Reading, TelemetryBatch, encode
from tests.faults.platform import ingest_processes

pytestmark = pytest.mark.slow

COMMUNITY = "xijin/fenghuang"
GATEWAYS = 4
DEVICES = 10
BATCHES = 200
"""Per gateway; each batch is one poll of its devices (10 readings)."""
PUBLISH_INTERVAL_S = 0.01
WAIT_S = 60.0


def _gateway(prefix: str, g: int) -> str:
    return f"{prefix}-{g}"


def _device(prefix: str, g: int, d: int) -> str:
    return f"{prefix}-{g}-dev-{d}"


async def _register(database_url: str, prefix: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_community(conn, COMMUNITY)
        for g in range(GATEWAYS):
            await register_gateway(conn, _gateway(prefix, g), COMMUNITY)
            for d in range(DEVICES):
                await register_device(
                    conn,
                    _device(prefix, g, d),
                    gateway_id=_gateway(prefix, g),
                    kind=DeviceKind.WEARABLE,
                    profile_id="anju-wearable-ble",
                )


def _stream(prefix: str) -> list[tuple[str, bytes]]:
    """Every gateway's batches, interleaved as they would arrive."""
    start = datetime.now(UTC)
    messages = []
    for seq in range(1, BATCHES + 1):
        for g in range(GATEWAYS):
            batch = TelemetryBatch(
                gateway=_gateway(prefix, g),
                community=COMMUNITY,
                spool_epoch="00000000000000aa",
                batch_seq=seq,
                sent_at=start,
                items=[
                    Reading(
                        device=_device(prefix, g, d),
                        ts=start + timedelta(seconds=seq),
                        seq=seq,
                        metric=Metric.HEART_RATE,
                        value=70.0 + d,
                    )
                    for d in range(DEVICES)
                ],
            )
            messages.append(
                (topic_for(COMMUNITY, _gateway(prefix, g), Channel.TELEMETRY), encode(batch))
            )
    return messages


async def _publish(mqtt_url: str, client_id: str, messages: list[tuple[str, bytes]]) -> None:
    broker = parse_broker_url(mqtt_url)
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, timeout=10)
            await asyncio.sleep(PUBLISH_INTERVAL_S)


def _stored(database_url: str) -> tuple[int, int, int, int]:
    """Readings stored, distinct (device, seq) among them, batches recorded, quarantined."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM readings),"
            " (SELECT count(DISTINCT (device_id, seq)) FROM readings),"
            " (SELECT count(*) FROM ingested_batches),"
            " (SELECT count(*) FROM quarantine)"
        ).fetchone()
    assert row is not None
    return row


async def _wait_for_all(database_url: str) -> tuple[int, int, int, int]:
    expected = GATEWAYS * BATCHES
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(_stored, database_url)
        if found[2] >= expected:
            return found
        await asyncio.sleep(0.2)
    return await asyncio.to_thread(_stored, database_url)


def _exactly_once(found: tuple[int, int, int, int]) -> None:
    total = GATEWAYS * BATCHES * DEVICES
    count, distinct, batches, quarantined = found
    assert (batches, quarantined) == (GATEWAYS * BATCHES, 0)
    assert distinct == total, f"{total - distinct} readings missing"
    assert count == distinct, f"{count - distinct} readings stored twice"


async def test_two_workers_one_killed_mid_stream_store_every_reading_once(
    tmp_path: Path,
    database_url: str,
    mqtt_url: str,
    unique_id: Callable[[str], str],
) -> None:
    prefix = unique_id("k")
    await _register(database_url, prefix)
    messages = _stream(prefix)
    # This publisher is no gateway: it never resends. So the victim's sessions must
    # outlive its restart (a gateway's resend covers a shared session that ended, see
    # tests/faults/test_end_to_end_ack.py).
    with ingest_processes(
        tmp_path,
        database_url,
        mqtt_url,
        unique_id("grp"),
        [unique_id("a"), unique_id("b")],
        env={"ANJU_INGEST_SHARED_SESSION_EXPIRY_S": "300"},
    ) as (survivor, victim):
        publishing = asyncio.create_task(_publish(mqtt_url, unique_id("pub"), messages))
        # Mid-stream: once a third of the batches are stored, the victim dies unannounced.
        deadline = time.monotonic() + WAIT_S
        while (await asyncio.to_thread(_stored, database_url))[2] < len(messages) // 3:
            assert time.monotonic() < deadline, "the stream never got going"
            await asyncio.sleep(0.05)
        victim.kill()
        await publishing
        # Its session keeps what it was sent and had not acknowledged; a restart under
        # the same client id collects it.
        await asyncio.sleep(1.0)
        held = await asyncio.to_thread(_stored, database_url)
        victim.start()
        # Its log holds the first run's two lanes too.
        await asyncio.to_thread(victim.wait_subscribed, 4)
        found = await _wait_for_all(database_url)
        assert survivor.process is not None
        assert survivor.process.poll() is None, "the surviving worker died too"
    _exactly_once(found)
    assert held[2] < len(messages), "nothing was left for the killed worker to redeliver"


@pytest.mark.own_server
async def test_database_restarted_mid_stream_loses_nothing(
    database_url: str,
    mosquitto: MosquittoServer,
    postgres: PostgresServer,
    unique_id: Callable[[str], str],
) -> None:
    prefix = unique_id("r")
    await _register(database_url, prefix)
    messages = _stream(prefix)
    settings = CloudSettings(
        database_url=database_url,
        mqtt=parse_broker_url(mosquitto.url),
        ingest=IngestSettings(
            group=unique_id("grp"),
            client_id=unique_id("ingest"),
            session_expiry_s=120,
            backoff_initial_s=0.1,
            backoff_cap_s=1.0,
            write_timeout_s=10.0,
            checkout_timeout_s=2.0,
        ),
    )
    counters = IngestCounters()
    stop, started = asyncio.Event(), asyncio.Event()
    ingest = asyncio.create_task(
        run_ingest(settings, workers=2, stop=stop, counters=counters, started=started)
    )
    try:
        async with asyncio.timeout(WAIT_S):
            await started.wait()
        publishing = asyncio.create_task(_publish(mosquitto.url, unique_id("pub"), messages))
        deadline = time.monotonic() + WAIT_S
        while counters.batches < len(messages) // 3:
            assert time.monotonic() < deadline, "the stream never got going"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(postgres.stop)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(postgres.start)
        await publishing
        found = await _wait_for_all(database_url)
    finally:
        stop.set()
        async with asyncio.timeout(WAIT_S):
            await ingest
    assert counters.storage_errors >= 1, "the restart never reached ingest"
    _exactly_once(found)
