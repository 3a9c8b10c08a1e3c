"""What the emergency-queue tests share: a community with two webhook subscriptions
(one for everything, the supervisors' for escalations only) and incidents opened the
way ingest opens them (``open_or_join``, which arms the unclaimed timer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from cloud.incidents import IncidentDraft, Priority, open_or_join
from cloud.registry import register_community
from cloud.settings import QueueSettings

COMMUNITY = "xijin/fenghuang"


@dataclass(frozen=True)
class Site:
    community_id: int
    everything: int
    """The subscription receiving every event."""
    supervisors: int
    """The subscription receiving ``incident.escalated`` only."""


async def make_site(conn: AsyncConnection[Any]) -> Site:
    community = await register_community(conn, COMMUNITY)
    subscriptions = []
    for event_types in ([], ["incident.escalated"]):
        cur = await conn.execute(
            "INSERT INTO webhook_subscriptions (community_id, url, event_types, secrets) "
            "VALUES (%s, 'https://example.org/hook', %s, %s) RETURNING id",
            [community.id, event_types, ["whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ="]],
        )
        row = await cur.fetchone()
        assert row is not None
        subscriptions.append(int(row[0]))
    return Site(community.id, subscriptions[0], subscriptions[1])


async def open_incident(
    conn: AsyncConnection[Any],
    site: Site,
    *,
    device: str,
    priority: int = 1,
    queue: QueueSettings | None = None,
    incident_type: str = "sos",
) -> int:
    """Open an incident from a fresh event in one transaction; return its id."""
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO events (ts, device_id, gateway_id, seq, type, severity) "
            "VALUES (now(), %s, 'gw-1', 1, 'sos.pressed', 'critical') RETURNING id, ts",
            [device],
        )
        row = await cur.fetchone()
        assert row is not None
        event_id, ts = int(row[0]), row[1]
        assert isinstance(ts, datetime)
        draft = IncidentDraft(
            type=incident_type,
            priority=Priority(priority),
            community_id=site.community_id,
            building="3",
            unit="2",
            device_id=device,
            cause="sos.pressed",
        )
        outcome = await open_or_join(conn, draft, event_id=event_id, event_ts=ts, queue=queue)
    assert outcome.opened
    return outcome.incident_id


def scalar(database_url: str, query: str, *params: object) -> Any:
    """The first column of the first row of ``query``."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def rows(database_url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]
