"""Every rule of rules.yaml on its scenario and on its near miss, against the real database.

Events go through the real group writer (``BatchWriter.write``), so the rules run
inside the ingest transaction exactly as in production, windows counted over the
``events`` table included. Windowed rules (burst, tailgating) record checks there,
which tests judge explicitly with the checker's ``check_once``, under ``PROMPT``
rules (no lateness) and with windows that have passed, so checks are due at once
(tests/integration/test_windowed_rules.py runs the checker loop with the real
lateness). Incidents are then read back from the database.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from cloud.ingest.writer import BatchWriter, Decoded, decode_message
from cloud.queue import transitions
from cloud.queue.states import Outcome
from cloud.registry import register_community, register_device, register_gateway
from cloud.residents import records
from cloud.residents.crypto import Keyring
from cloud.rules.checker import check_once
from cloud.rules.config import RuleSet, load_rules
from cloud.rules.sweeper import sweep_once
from cloud.settings import QueueSettings
from cloud.storage.pool import open_pool
from schemas.topics import Channel, topic_for
from schemas.vocabulary import EVENT_SEVERITY, DeviceKind, EventType, Severity
from schemas.wire import Event, EventBatch, EventData, encode

COMMUNITY = "xijin/fenghuang"
GATEWAY = "gw-rules"
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOON = datetime.now(SHANGHAI).replace(hour=12, minute=0, second=0, microsecond=0)

DEVICES = {
    "smoke-3-301": (DeviceKind.SMOKE, "3", "301"),
    "smoke-3-302": (DeviceKind.SMOKE, "3", "302"),
    "smoke-4-401": (DeviceKind.SMOKE, "4", "401"),
    "door-1": (DeviceKind.DOOR, "3", None),
    "cam-1": (DeviceKind.CAMERA, "3", None),
    "band-1": (DeviceKind.WEARABLE, "5", "101"),
}
RESIDENTS = {
    "care-a": ("3", "301", True),
    "care-b": ("3", "305", True),
    "care-c": ("3", "306", False),
    "care-d": ("4", "401", True),
}
PROMPT = RuleSet.model_validate(
    {
        **load_rules().model_dump(),
        "rules": {
            name: {**rule.model_dump(), "lateness_s": 0}
            for name, rule in load_rules().rules.items()
        },
    }
)
"""The packaged rules with no lateness: a check whose window has passed is due at once."""
_batch_seq = itertools.count(1)
_event_seq = itertools.count(1)


@pytest_asyncio.fixture(loop_scope="function")
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        community = await register_community(conn, COMMUNITY)
        await register_gateway(conn, GATEWAY, COMMUNITY)
        for device, (kind, building, unit) in DEVICES.items():
            await register_device(
                conn,
                device,
                gateway_id=GATEWAY,
                kind=kind,
                profile_id="test",
                building=building,
                unit=unit,
            )
        for reference, (building, unit, needs_help) in RESIDENTS.items():
            await records.register(
                conn,
                Keyring(),
                community_id=community.id,
                reference=reference,
                building=building,
                unit=unit,
                needs_evacuation_help=needs_help,
            )
    async with open_pool(database_url, name="test-rules", max_size=2) as opened:
        yield opened


async def store(
    pool: AsyncConnectionPool[Any],
    *events: tuple[str, EventType, datetime, EventData],
    rules: RuleSet | None = None,
) -> None:
    """Ingest ``events`` (device, type, ts, data) as one batch of the gateway."""
    batch = EventBatch(
        gateway=GATEWAY,
        community=COMMUNITY,
        spool_epoch="00000000000000cc",
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
            for device, kind, ts, data in events
        ],
    )
    message = decode_message(topic_for(COMMUNITY, GATEWAY, Channel.EVENTS), encode(batch))
    outcomes = await BatchWriter(pool, rules or load_rules()).write([message])
    assert [outcome.kind for outcome in outcomes] == ["stored"]


def incidents(database_url: str) -> list[tuple[Any, ...]]:
    """(type, priority, device or resident reference, unit, event_count) of every incident."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT i.type, i.priority, coalesce(i.device_id, r.reference), i.unit, i.event_count"
            " FROM incidents i LEFT JOIN residents r ON r.id = i.resident_id"
            " ORDER BY i.type, 3"
        ).fetchall()


def one(device: str, kind: EventType, ts: datetime | None = None, **data: Any) -> Any:
    return (device, kind, ts or datetime.now(UTC), EventData(**data))


@pytest.mark.parametrize(
    ("device", "kind", "incident", "priority"),
    [
        ("door-1", EventType.DOOR_FORCED_OPEN, "door_forced_open", 2),
        ("band-1", EventType.WEARABLE_SOS, "sos", 1),
        ("band-1", EventType.WEARABLE_FALL, "fall", 1),
    ],
)
async def test_event_rules_open_their_incident(
    pool: AsyncConnectionPool[Any],
    database_url: str,
    device: str,
    kind: EventType,
    incident: str,
    priority: int,
) -> None:
    await store(pool, one(device, kind))
    assert [row[:3] for row in incidents(database_url)] == [(incident, priority, device)]


@pytest.mark.parametrize(
    "kind",
    [EventType.DOOR_CLOSED, EventType.ACCESS_GRANTED, EventType.SMOKE_TEST, EventType.BATTERY_LOW],
)
async def test_ordinary_events_open_nothing(
    pool: AsyncConnectionPool[Any], database_url: str, kind: EventType
) -> None:
    await store(pool, one("door-1", kind))
    assert incidents(database_url) == []


@pytest.mark.parametrize(("duration_s", "opens"), [(130.0, True), (100.0, False)])
async def test_door_held_open_past_its_limit(
    pool: AsyncConnectionPool[Any], database_url: str, duration_s: float, opens: bool
) -> None:
    await store(pool, one("door-1", EventType.DOOR_HELD_OPEN, duration_s=duration_s))
    expected = [("door_held_open", 3, "door-1")] if opens else []
    assert [row[:3] for row in incidents(database_url)] == expected


async def test_a_community_override_raises_the_held_open_limit_there(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    packaged = load_rules()
    relaxed = RuleSet.model_validate(
        {**packaged.model_dump(), "overrides": {COMMUNITY: {"door_held_open": {"value": 300}}}}
    )
    await store(pool, one("door-1", EventType.DOOR_HELD_OPEN, duration_s=130.0), rules=relaxed)
    assert incidents(database_url) == []


@pytest.mark.parametrize(("inside", "opens"), [(5, True), (4, False)])
async def test_access_denials_burst_within_the_window(
    pool: AsyncConnectionPool[Any], database_url: str, inside: int, opens: bool
) -> None:
    # Two minutes back, so every window has passed and every check is due at once.
    now = datetime.now(UTC) - timedelta(minutes=2)
    earlier = one("door-1", EventType.ACCESS_DENIED, now - timedelta(seconds=90))
    denials = [
        one("door-1", EventType.ACCESS_DENIED, now - timedelta(seconds=50 - 10 * i))
        for i in range(inside)
    ]
    await store(pool, earlier, *denials, rules=PROMPT)
    # A burst complete in the group opens at once; the denials it did not include yet
    # are judged at their window's end.
    expected = [("access_denied_burst", 3, "door-1")] if opens else []
    assert [row[:3] for row in incidents(database_url)] == expected
    checked = await check_once(pool, PROMPT)
    assert (checked.checked, checked.opened) == ((1, 0) if opens else (inside + 1, 0))
    assert [row[:3] for row in incidents(database_url)] == expected


@pytest.mark.parametrize(
    ("ts", "zone", "opens"),
    [
        (NOON.replace(hour=23, minute=30), "lobby", True),
        (NOON.replace(hour=5, minute=59), None, True),
        (NOON, "rooftop", True),
        (NOON, "lobby", False),
        (NOON.replace(hour=6, minute=0), None, False),
    ],
)
async def test_camera_intrusion_in_closed_hours_or_a_closed_zone(
    pool: AsyncConnectionPool[Any],
    database_url: str,
    ts: datetime,
    zone: str | None,
    opens: bool,
) -> None:
    # The last such local time, never one ahead: ingest dates items from more than a few
    # minutes ahead by their receipt (clock skew), which would change the local hour.
    if ts > datetime.now(UTC):
        ts -= timedelta(days=1)
    await store(pool, one("cam-1", EventType.CAMERA_INTRUSION, ts.astimezone(UTC), zone=zone))
    assert [row[:3] for row in incidents(database_url)] == (
        [("intrusion", 2, "cam-1")] if opens else []
    )


@pytest.mark.parametrize(("crossed", "opens"), [(3, True), (2, False)])
async def test_tailgating_is_more_crossings_than_grants_at_a_door(
    pool: AsyncConnectionPool[Any], database_url: str, crossed: int, opens: bool
) -> None:
    now = datetime.now(UTC)
    await store(
        pool,
        one("door-1", EventType.ACCESS_GRANTED, now - timedelta(seconds=20)),
        one("door-1", EventType.ACCESS_GRANTED, now - timedelta(seconds=10)),
        # A grant before the window does not excuse a crossing inside it.
        one("door-1", EventType.ACCESS_GRANTED, now - timedelta(seconds=120)),
    )
    await store(
        pool,
        one("cam-1", EventType.CAMERA_LINE_CROSSING, now, door="door-1", count=crossed),
        rules=PROMPT,
    )
    # Decided at the window's end, not when the crossing is stored.
    assert incidents(database_url) == []
    assert (await check_once(pool, PROMPT)).checked == 1
    assert [row[:3] for row in incidents(database_url)] == (
        [("tailgating", 2, "cam-1")] if opens else []
    )


@pytest.mark.parametrize(
    ("crossings", "opens"),
    [([("in", 2)], True), ([("out", 2), ("in", 1)], False)],
    ids=["two-in-on-one-grant", "two-out-and-one-in-on-one-grant"],
)
async def test_only_people_crossing_inward_count_against_a_door_s_grants(
    pool: AsyncConnectionPool[Any],
    database_url: str,
    crossings: list[tuple[str, int]],
    opens: bool,
) -> None:
    now = datetime.now(UTC)
    await store(pool, one("door-1", EventType.ACCESS_GRANTED, now - timedelta(seconds=10)))
    await store(
        pool,
        *(
            one(
                "cam-1",
                EventType.CAMERA_LINE_CROSSING,
                now - timedelta(seconds=len(crossings) - i),
                door="door-1",
                direction=direction,
                count=count,
            )
            for i, (direction, count) in enumerate(crossings)
        ),
        rules=PROMPT,
    )
    await check_once(pool, PROMPT)
    assert [row[:3] for row in incidents(database_url)] == (
        [("tailgating", 2, "cam-1")] if opens else []
    )


async def test_each_abnormal_heart_rate_episode_opens_an_incident(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    """The gateway judges minutes of heart rate and reports an episode once."""
    await store(pool, one("band-1", EventType.WEARABLE_HEART_RATE_ABNORMAL, value=131.0))
    assert [row[:3] for row in incidents(database_url)] == [("heart_rate_abnormal", 2, "band-1")]


@pytest.mark.parametrize(("hours", "opens"), [(5, True), (1, False)])
async def test_long_inactivity(
    pool: AsyncConnectionPool[Any], database_url: str, hours: int, opens: bool
) -> None:
    await store(pool, one("band-1", EventType.WEARABLE_INACTIVITY, duration_s=hours * 3600.0))
    assert [row[:3] for row in incidents(database_url)] == (
        [("inactivity", 3, "band-1")] if opens else []
    )


async def test_a_fire_brings_evacuation_help_for_each_resident_who_needs_it(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    await store(pool, one("smoke-3-301", EventType.SMOKE_ALARM))
    assert incidents(database_url) == [
        ("evacuation_assistance", 1, "care-a", "301", 1),
        ("evacuation_assistance", 1, "care-b", "305", 1),
        ("fire", 1, "smoke-3-301", "301", 1),
        ("resident_smoke_alarm", 1, "care-a", "301", 1),
    ]

    # A repeat and a second detector of the building join the one fire, which brings no
    # new evacuation help; a fire in building 4 is its own.
    await store(pool, one("smoke-3-301", EventType.SMOKE_ALARM))
    await store(pool, one("smoke-3-302", EventType.SMOKE_ALARM))
    await store(pool, one("smoke-4-401", EventType.SMOKE_ALARM))
    assert incidents(database_url) == [
        ("evacuation_assistance", 1, "care-a", "301", 1),
        ("evacuation_assistance", 1, "care-b", "305", 1),
        ("evacuation_assistance", 1, "care-d", "401", 1),
        ("fire", 1, "smoke-3-301", "301", 3),
        ("fire", 1, "smoke-4-401", "401", 1),
        ("resident_smoke_alarm", 1, "care-a", "301", 2),
        ("resident_smoke_alarm", 1, "care-d", "401", 1),
    ]


async def test_a_smoke_test_in_a_residents_home_opens_nothing(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    await store(pool, one("smoke-3-301", EventType.SMOKE_TEST))
    assert incidents(database_url) == []


async def test_a_silent_smoke_detector_is_one_incident_per_silence(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE devices SET last_seen = %s", [now - timedelta(seconds=60)])
        conn.execute(
            "UPDATE devices SET last_seen = %s WHERE id = 'smoke-4-401'",
            [now - timedelta(minutes=10)],
        )
        # Never seen: an installation matter, not a fault.
        conn.execute("UPDATE devices SET last_seen = NULL WHERE id = 'smoke-3-302'")
        conn.execute("UPDATE gateways SET last_seen = %s", [now])

    assert await sweep_once(pool, load_rules()) == 1
    assert await sweep_once(pool, load_rules()) == 0
    rows = incidents(database_url)
    assert [row[:3] for row in rows] == [("smoke_detector_offline", 3, "smoke-4-401")]

    # Closed by a dispatcher while the detector is still silent: not opened again.
    async with pool.connection() as conn:
        (incident_id,) = await (await conn.execute("SELECT id FROM incidents")).fetchone() or (0,)
        await transitions.claim(conn, incident_id, actor="d-1", settings=QueueSettings())
        await transitions.resolve(conn, incident_id, actor="d-1", outcome=Outcome.FALSE_ALARM)
    assert await sweep_once(pool, load_rules()) == 0

    # Heard from after that incident, then silent again: a new silence, a new incident.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE incidents SET opened_at = %s", [now - timedelta(minutes=20)])
        conn.execute(
            "UPDATE devices SET last_seen = %s WHERE id = 'smoke-4-401'",
            [now - timedelta(minutes=6)],
        )
    assert await sweep_once(pool, load_rules()) == 1


async def test_a_silent_gateway_is_one_incident_not_one_per_device_behind_it(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    silent = datetime.now(UTC) - timedelta(minutes=10)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE devices SET last_seen = %s", [silent])
        conn.execute("UPDATE gateways SET last_seen = %s", [silent])

    assert await sweep_once(pool, load_rules()) == 1
    assert [row[:3] for row in incidents(database_url)] == [("gateway_offline", 3, GATEWAY)]


async def test_a_late_event_completes_a_burst(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    now = datetime.now(UTC)
    await store(
        pool,
        *[
            one("door-1", EventType.ACCESS_DENIED, now + timedelta(seconds=s))
            for s in (10, 20, 30, 40)
        ],
    )
    assert incidents(database_url) == []
    # The first denial of the five arrives last (a gateway's backlog).
    await store(pool, one("door-1", EventType.ACCESS_DENIED, now + timedelta(seconds=5)))
    assert [row[:3] for row in incidents(database_url)] == [("access_denied_burst", 3, "door-1")]


async def test_two_workers_naming_the_same_devices_in_opposite_orders_both_commit(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    def batch(devices: list[str]) -> Decoded:
        now = datetime.now(UTC)
        return decode_message(
            topic_for(COMMUNITY, GATEWAY, Channel.EVENTS),
            encode(
                EventBatch(
                    gateway=GATEWAY,
                    community=COMMUNITY,
                    spool_epoch="00000000000000dd",
                    batch_seq=next(_batch_seq),
                    sent_at=now,
                    items=[
                        Event(
                            device=device,
                            ts=now,
                            seq=next(_event_seq),
                            type=EventType.DOOR_FORCED_OPEN,
                            severity=Severity.CRITICAL,
                        )
                        for device in devices
                    ],
                )
            ),
        )

    async with open_pool(database_url, name="test-rules-2", max_size=2) as other:
        for _ in range(5):
            one_way = BatchWriter(pool, load_rules()).write([batch(["door-1", "cam-1"])])
            other_way = BatchWriter(other, load_rules()).write([batch(["cam-1", "door-1"])])
            results = await asyncio.gather(one_way, other_way)
            assert [[o.kind for o in r] for r in results] == [["stored"], ["stored"]]
    rows = incidents(database_url)
    assert [(row[0], row[2], row[4]) for row in rows] == [
        ("door_forced_open", "cam-1", 10),
        ("door_forced_open", "door-1", 10),
    ]
