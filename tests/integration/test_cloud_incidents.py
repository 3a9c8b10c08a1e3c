"""Incidents and registry against a real PostgreSQL: one active incident per device and type."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import AsyncConnection

from cloud.errors import RegistryError
from cloud.incidents import open_or_join
from cloud.registry import register_community, register_device, register_gateway
from cloud.rules.config import load_rules
from cloud.rules.context import DeviceContext
from cloud.rules.engine import evaluate
from schemas.vocabulary import DeviceKind, EventType, Severity
from schemas.wire import Event

COMMUNITY = "xijin/fenghuang"


async def _setup(conn: AsyncConnection[tuple[object, ...]]) -> DeviceContext:
    community = await register_community(conn, COMMUNITY)
    await register_gateway(conn, "gw-1", COMMUNITY)
    device = await register_device(
        conn,
        "smoke-1",
        gateway_id="gw-1",
        kind=DeviceKind.SMOKE,
        profile_id="anju-smoke-mb",
        building="3",
        unit="2",
    )
    return DeviceContext(
        device.id, device.kind, community.id, COMMUNITY, device.building, device.unit
    )


async def _event(conn: AsyncConnection[tuple[object, ...]], seq: int) -> int:
    cur = await conn.execute(
        "INSERT INTO events (ts, device_id, gateway_id, seq, type, severity) "
        "VALUES (now(), 'smoke-1', 'gw-1', %s, 'smoke.alarm', 'critical') RETURNING id",
        [seq],
    )
    row = await cur.fetchone()
    assert row is not None
    return int(str(row[0]))


async def test_racing_workers_open_one_incident(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as setup:
        device = await _setup(setup)
        first_event, second_event = await _event(setup, 1), await _event(setup, 2)
    alarm = Event(
        device="smoke-1",
        ts=datetime.now(UTC),
        seq=1,
        type=EventType.SMOKE_ALARM,
        severity=Severity.CRITICAL,
    )
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        drafts = await evaluate(conn, load_rules(), alarm, device)
    assert [(d.type, d.priority) for d in drafts] == [("fire", 1)]
    draft = drafts[0]

    async with (
        await psycopg.AsyncConnection.connect(database_url) as one,
        await psycopg.AsyncConnection.connect(database_url) as two,
    ):
        opened = await open_or_join(one, draft, event_id=first_event, event_ts=alarm.ts)
        # The second worker's insert waits on the first's uncommitted row, then joins it.
        racing = asyncio.create_task(
            open_or_join(two, draft, event_id=second_event, event_ts=alarm.ts)
        )
        await asyncio.sleep(0.3)
        assert not racing.done()
        await one.commit()
        joined = await asyncio.wait_for(racing, timeout=10)
        await two.commit()

    assert opened.opened
    assert not joined.opened
    assert joined.incident_id == opened.incident_id
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*), max(event_count) FROM incidents").fetchone() == (1, 2)
        assert conn.execute("SELECT count(*) FROM incident_events").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM incident_log").fetchone() == (1,)


async def test_registration_is_idempotent_and_refuses_contradictions(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        first = await register_community(conn, COMMUNITY)
        assert (await register_community(conn, COMMUNITY)).id == first.id
        await register_community(conn, "xijin/other")
        await register_gateway(conn, "gw-1", COMMUNITY)
        await register_gateway(conn, "gw-1", COMMUNITY)
        with pytest.raises(RegistryError, match="another community"):
            await register_gateway(conn, "gw-1", "xijin/other")
        with pytest.raises(RegistryError, match="unknown community"):
            await register_gateway(conn, "gw-2", "nowhere/none")
        with pytest.raises(RegistryError, match="another parent"):
            await register_community(conn, "xijin/third", city="hefei")
        with pytest.raises(RegistryError, match="street/community"):
            await register_community(conn, "Bad Path")
        await register_gateway(conn, "gw-2", "xijin/other")
        await register_device(
            conn, "d-1", gateway_id="gw-1", kind=DeviceKind.DOOR, profile_id="p-door"
        )
        moved = await register_device(
            conn,
            "d-1",
            gateway_id="gw-1",
            kind=DeviceKind.DOOR,
            profile_id="p-door",
            building="7",
        )
        assert moved.building == "7"
        with pytest.raises(RegistryError, match="another gateway"):
            await register_device(
                conn, "d-1", gateway_id="gw-2", kind=DeviceKind.DOOR, profile_id="p-door"
            )
        with pytest.raises(RegistryError, match="unknown gateway"):
            await register_device(
                conn, "d-2", gateway_id="gw-9", kind=DeviceKind.DOOR, profile_id="p-door"
            )
        cur = await conn.execute("SELECT tier, path FROM communities ORDER BY id")
        assert await cur.fetchall() == [
            ("city", "ningguo"),
            ("street", "xijin"),
            ("community", COMMUNITY),
            ("community", "xijin/other"),
        ]
