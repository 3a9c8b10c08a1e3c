"""Windowed rules (tailgating, bursts) decided at the window's end, on committed data.

Events go through the real group writer (``BatchWriter.write``) into a real database,
and the real checker loop (``check_forever``, as ``anju cloud ingest`` runs it) judges
the checks with the packaged rules and their 5 s lateness. Two writers on two pools
stand for two ingest workers; a test-only deferred trigger holds both transactions at
their COMMIT, so each has stored and evaluated its events without seeing the other's,
which is what two workers' groups committing at the same time do. The last test
publishes through Mosquitto to ``run_ingest`` with two workers on the shared
subscription, as ``anju cloud ingest --workers 2`` runs.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import psycopg
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from anju.services.mosquitto import MosquittoServer
from cloud.app import run_ingest
from cloud.ingest.writer import BatchWriter, decode_message
from cloud.registry import register_community, register_device, register_gateway
from cloud.rules.checker import check_forever
from cloud.rules.config import load_rules
from cloud.settings import CloudSettings, IngestSettings
from cloud.storage.pool import open_pool
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.vocabulary import EVENT_SEVERITY, DeviceKind, EventType
from schemas.wire import Event, EventBatch, EventData, encode

COMMUNITY = "xijin/fenghuang"
GATEWAY = "gw-windows"
GATE_KEY = 16016
"""The advisory lock the test's commit gate waits on."""
_batch_seq = itertools.count(1)
_event_seq = itertools.count(1)

Item = tuple[str, EventType, datetime, EventData]


@pytest_asyncio.fixture(loop_scope="function")
async def pools(
    database_url: str,
) -> AsyncIterator[tuple[AsyncConnectionPool[Any], AsyncConnectionPool[Any]]]:
    """Two pools, one per ingest worker, on a database with a door and its camera."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await register_community(conn, COMMUNITY)
        await register_gateway(conn, GATEWAY, COMMUNITY)
        for device, kind in (("door-1", DeviceKind.DOOR), ("cam-1", DeviceKind.CAMERA)):
            await register_device(
                conn, device, gateway_id=GATEWAY, kind=kind, profile_id="test", building="3"
            )
    async with (
        open_pool(database_url, name="worker-1", max_size=2) as one,
        open_pool(database_url, name="worker-2", max_size=2) as two,
    ):
        yield one, two


def batch_of(*items: Item) -> bytes:
    """``items`` as one events batch of the gateway, encoded for the wire."""
    return encode(
        EventBatch(
            gateway=GATEWAY,
            community=COMMUNITY,
            spool_epoch="00000000000000ee",
            batch_seq=next(_batch_seq),
            sent_at=datetime.now(UTC),
            items=[
                Event(
                    device=device,
                    ts=ts,
                    seq=next(_event_seq),
                    type=kind,
                    severity=EVENT_SEVERITY[kind],
                    data=data,
                )
                for device, kind, ts, data in items
            ],
        )
    )


async def store(pool: AsyncConnectionPool[Any], *items: Item) -> None:
    """Ingest ``items`` as one events batch of the gateway through ``pool``'s writer."""
    message = decode_message(topic_for(COMMUNITY, GATEWAY, Channel.EVENTS), batch_of(*items))
    outcomes = await BatchWriter(pool, load_rules()).write([message])
    assert [outcome.kind for outcome in outcomes] == ["stored"]


def rows(database_url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()


async def until(what: str, timeout_s: float, done: Callable[[], Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await done():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def checkers(*pools: AsyncConnectionPool[Any]) -> AsyncIterator[None]:
    """The real checker loop on each pool (one per ingest process), with the packaged
    rules, until the block ends."""
    tasks = [asyncio.create_task(check_forever(pool, load_rules())) for pool in pools]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def checks_left(database_url: str) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        return rows(database_url, "SELECT count(*) FROM rule_checks") == [(0,)]

    return done


async def test_a_grant_arriving_3_s_after_the_crossing_opens_no_tailgating_incident(
    pools: tuple[AsyncConnectionPool[Any], AsyncConnectionPool[Any]], database_url: str
) -> None:
    camera_pool, door_pool = pools
    async with checkers(camera_pool):
        crossed = datetime.now(UTC)
        await store(
            camera_pool,
            ("cam-1", EventType.CAMERA_LINE_CROSSING, crossed, EventData(door="door-1", count=1)),
        )
        await asyncio.sleep(3)
        # The card was read a second before the person crossed; the door controller's
        # poll (or another worker) brings the grant 3 s after the crossing was stored.
        badge = crossed - timedelta(seconds=1)
        await store(door_pool, ("door-1", EventType.ACCESS_GRANTED, badge, EventData()))
        await until("the crossing's check judged", 10, checks_left(database_url))
    assert rows(database_url, "SELECT type FROM incidents") == []


async def test_a_crossing_no_grant_covers_is_tailgating_once_the_lateness_has_passed(
    pools: tuple[AsyncConnectionPool[Any], AsyncConnectionPool[Any]], database_url: str
) -> None:
    camera_pool, _ = pools
    async with checkers(camera_pool):
        crossed = datetime.now(UTC)
        await store(
            camera_pool,
            ("cam-1", EventType.CAMERA_LINE_CROSSING, crossed, EventData(door="door-1", count=2)),
        )
        await store(
            camera_pool,
            ("door-1", EventType.ACCESS_GRANTED, crossed - timedelta(seconds=2), EventData()),
        )
        assert rows(database_url, "SELECT type FROM incidents") == []
        await until("the crossing's check judged", 10, checks_left(database_url))
    ((kind, device, count, dated, waited),) = rows(
        database_url,
        "SELECT i.type, i.device_id, i.event_count, i.last_event_at,"
        " extract(epoch FROM i.opened_at - e.received_at)::float8"
        " FROM incidents i JOIN events e ON e.id = i.first_event_id",
    )
    # Dated by the crossing, opened once the rule's 5 s lateness had passed.
    assert (kind, device, count, dated) == ("tailgating", "cam-1", 1, crossed)
    assert 5.0 <= waited < 7.0


async def test_a_denial_burst_split_across_two_workers_groups_opens_exactly_one_incident(
    pools: tuple[AsyncConnectionPool[Any], AsyncConnectionPool[Any]], database_url: str
) -> None:
    one, two = pools
    # Five denials in 4 s (the rule wants 5 in 60 s), from a gateway's backlog: their
    # window has passed, so they are judged 5 s after they are stored.
    first = datetime.now(UTC) - timedelta(minutes=2)
    denials = [
        ("door-1", EventType.ACCESS_DENIED, first + timedelta(seconds=s), EventData())
        for s in range(5)
    ]
    with psycopg.connect(database_url, autocommit=True) as gate:
        gate.execute(
            "CREATE FUNCTION test_commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN PERFORM pg_advisory_xact_lock_shared({GATE_KEY}); RETURN NULL; END $$"
        )
        gate.execute(
            "CREATE CONSTRAINT TRIGGER test_commit_gate AFTER INSERT ON events"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_commit_gate()"
        )
        gate.execute("SELECT pg_advisory_lock(%s)", [GATE_KEY])
        writes = asyncio.gather(store(one, *denials[:3]), store(two, *denials[3:]))

        async def both_at_commit() -> bool:
            waiting = rows(
                database_url,
                "SELECT count(DISTINCT pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND NOT granted",
            )
            return waiting == [(2,)]

        await until("both groups evaluated and waiting to commit", 10, both_at_commit)
        gate.execute("SELECT pg_advisory_unlock(%s)", [GATE_KEY])
        await writes
    assert rows(database_url, "SELECT count(*) FROM events") == [(5,)]

    # Two ingest processes' checkers take the checks; each is judged once.
    async with checkers(one, two):
        await until("the denials' checks judged", 12, checks_left(database_url))
    assert rows(
        database_url, "SELECT type, device_id, event_count, last_event_at FROM incidents"
    ) == [("access_denied_burst", "door-1", 5, first + timedelta(seconds=4))]


async def test_through_mosquitto_and_two_ingest_workers(
    pools: tuple[AsyncConnectionPool[Any], AsyncConnectionPool[Any]],
    database_url: str,
    mosquitto: MosquittoServer,
    unique_id: Callable[[str], str],
) -> None:
    """A burst published as two batches at once and a crossing whose grant comes 3 s
    later, through the broker to two ingest workers: one burst incident, no tailgating."""
    settings = CloudSettings(
        database_url=database_url,
        mqtt=parse_broker_url(mosquitto.url),
        ingest=IngestSettings(
            group=unique_id("group"), client_id=unique_id("ingest"), session_expiry_s=60
        ),
    )
    stop, started = asyncio.Event(), asyncio.Event()
    ingest = asyncio.create_task(run_ingest(settings, workers=2, stop=stop, started=started))
    try:
        async with asyncio.timeout(20):
            await started.wait()
        first = datetime.now(UTC) - timedelta(minutes=2)
        denials = [
            ("door-1", EventType.ACCESS_DENIED, first + timedelta(seconds=s), EventData())
            for s in range(5)
        ]
        crossed = datetime.now(UTC)
        crossing = EventData(door="door-1", count=1)
        topic = topic_for(COMMUNITY, GATEWAY, Channel.EVENTS)
        async with aiomqtt.Client(
            settings.broker.host,
            settings.broker.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            identifier=unique_id("gateway"),
        ) as gateway:
            await gateway.publish(topic, batch_of(*denials[:3]), qos=1)
            await gateway.publish(topic, batch_of(*denials[3:]), qos=1)
            await gateway.publish(
                topic, batch_of(("cam-1", EventType.CAMERA_LINE_CROSSING, crossed, crossing)), qos=1
            )
            await asyncio.sleep(3)
            badge = crossed - timedelta(seconds=1)
            await gateway.publish(
                topic, batch_of(("door-1", EventType.ACCESS_GRANTED, badge, EventData())), qos=1
            )

        async def all_judged() -> bool:
            stored = rows(database_url, "SELECT count(*) FROM events")
            return stored == [(7,)] and await checks_left(database_url)()

        await until("every event stored and judged", 20, all_judged)
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await ingest
    assert rows(database_url, "SELECT type, device_id, event_count FROM incidents") == [
        ("access_denied_burst", "door-1", 5)
    ]
