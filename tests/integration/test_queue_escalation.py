"""Escalation against a real PostgreSQL: on time and never early, raising priority,
logging and announcing, repeating until handled; several workers never fire a timer
twice; a worker killed or cancelled mid-round loses nothing and doubles nothing."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import AsyncConnection

from cloud.queue import transitions
from cloud.queue.escalation import EscalationWorker, fire_due
from cloud.settings import QueueSettings
from cloud.storage.pool import Pool, open_pool
from tests.integration.queue_support import Site, make_site, open_incident, rows, scalar

ANJU = [sys.executable, "-m", "anju.cli"]

FAST = QueueSettings(
    p1_unclaimed_s=1.0,
    p1_unacknowledged_s=2.0,
    p2_unclaimed_s=1.0,
    p2_unacknowledged_s=2.0,
    p3_unclaimed_s=1.0,
    p3_unacknowledged_s=2.0,
    repeat_s=0.6,
    poll_interval_s=0.2,
)


@pytest_asyncio.fixture
async def site(conn: AsyncConnection[Any]) -> Site:
    return await make_site(conn)


async def _until(check: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


async def _count(conn: AsyncConnection[Any], query: str, *params: object) -> int:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _escalations(conn: AsyncConnection[Any], incident: int) -> Awaitable[int]:
    return _count(
        conn,
        "SELECT count(*) FROM incident_log WHERE incident_id = %s AND actor = 'escalation'",
        incident,
    )


async def _running(
    pool: Pool, settings: QueueSettings, name: str
) -> tuple[EscalationWorker, asyncio.Task[None]]:
    worker = EscalationWorker(pool, settings, name=name)
    return worker, asyncio.create_task(worker.run(), name=name)


async def _stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_escalation_fires_on_time_repeats_and_stops_when_handled(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> None:
    async with open_pool(database_url, name="escalation-test") as pool:
        _, task = await _running(pool, FAST, "escalation-0")
        try:
            incident = await open_incident(conn, site, device="vitals-1", priority=2, queue=FAST)
            await asyncio.sleep(0.8)
            assert await _escalations(conn, incident) == 0, "fired before its due time"
            await _until(
                lambda: _count_at_least(_escalations(conn, incident), 1),
                within=5,
                what="the first escalation",
            )
            # Fired at the due time, not before, and within a poll of it.
            delay = float(
                scalar(
                    database_url,
                    "SELECT extract(epoch FROM min(l.at) - i.opened_at) FROM incident_log l "
                    "JOIN incidents i ON i.id = l.incident_id "
                    "WHERE l.actor = 'escalation' GROUP BY i.opened_at",
                )
            )
            assert 1.0 <= delay < 1.0 + 0.25, delay
            assert rows(database_url, "SELECT priority, escalation_level FROM incidents") == [
                (1, 1)
            ]
            assert rows(
                database_url,
                "SELECT from_status, to_status, note FROM incident_log WHERE actor = 'escalation'",
            ) == [
                (
                    "open",
                    "open",
                    "still unclaimed 1 s after opening (P2 limit 1 s): priority P2 → P1, "
                    "escalation level 1",
                )
            ]
            # The supervisors' subscription (incident.escalated only) got exactly this one.
            assert rows(
                database_url,
                "SELECT event_type, payload->'data'->>'priority' FROM webhook_deliveries "
                "WHERE subscription_id = %s",
                site.supervisors,
            ) == [("incident.escalated", "1")]

            # It repeats every repeat_s while unclaimed; P1 stays P1, the level climbs.
            await _until(
                lambda: _count_at_least(_escalations(conn, incident), 2),
                within=5,
                what="the repeat",
            )
            gap = float(
                scalar(
                    database_url,
                    "SELECT extract(epoch FROM max(at) - min(at)) FROM incident_log "
                    "WHERE actor = 'escalation'",
                )
            )
            assert FAST.repeat_s <= gap < FAST.repeat_s + 0.25, gap
            assert rows(database_url, "SELECT priority, escalation_level FROM incidents") == [
                (1, 2)
            ]

            # The claim stops the unclaimed timer; unacknowledged takes over, then the
            # acknowledgement stops that too.
            await transitions.claim(conn, incident, actor="ann", settings=FAST)
            claimed_with = await _escalations(conn, incident)
            await _until(
                lambda: _count_at_least(
                    _count(
                        conn,
                        "SELECT count(*) FROM incident_log WHERE actor = 'escalation' "
                        "AND note LIKE 'still unacknowledged%%'",
                    ),
                    1,
                ),
                within=5,
                what="the unacknowledged escalation",
            )
            assert await _escalations(conn, incident) == claimed_with + 1
            await transitions.acknowledge(conn, incident, actor="ann")
            handled_with = await _escalations(conn, incident)
            await asyncio.sleep(FAST.repeat_s * 3)
            assert await _escalations(conn, incident) == handled_with
            assert rows(database_url, "SELECT count(*) FROM incident_timers") == [(0,)]
            escalated = scalar(
                database_url,
                "SELECT count(*) FROM webhook_deliveries WHERE subscription_id = %s",
                site.supervisors,
            )
            assert escalated == handled_with
        finally:
            await _stop(task)


async def _count_at_least(count: Awaitable[int], least: int) -> bool:
    return await count >= least


async def test_many_workers_never_fire_a_timer_twice(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> None:
    settings = FAST.model_copy(update={"repeat_s": 60.0, "batch_size": 7})
    incidents = [
        await open_incident(conn, site, device=f"sos-{n}", queue=settings) for n in range(150)
    ]
    # Four workers with pools of their own, as four processes would have.
    async with (
        open_pool(database_url, name="a") as a,
        open_pool(database_url, name="b") as b,
        open_pool(database_url, name="c") as c,
        open_pool(database_url, name="d") as d,
    ):
        running = [await _running(pool, settings, f"w{i}") for i, pool in enumerate((a, b, c, d))]
        try:
            await _until(
                lambda: _count_at_least(
                    _count(conn, "SELECT count(*) FROM incident_timers WHERE fired_count > 0"),
                    len(incidents),
                ),
                within=20,
                what="every timer to fire",
            )
            await asyncio.sleep(0.5)
        finally:
            await _stop(*(task for _, task in running))
    fired = [worker.fired for worker, _ in running]
    assert sum(fired) == len(incidents), fired
    assert sum(1 for n in fired if n) >= 2, f"the workers did not share the work: {fired}"
    assert (
        rows(
            database_url,
            "SELECT count(*) FROM incident_log WHERE actor = 'escalation' "
            "GROUP BY incident_id HAVING count(*) <> 1",
        )
        == []
    )
    assert rows(database_url, "SELECT DISTINCT fired_count FROM incident_timers") == [(1,)]
    assert scalar(
        database_url,
        "SELECT count(*) FROM webhook_deliveries WHERE subscription_id = %s",
        site.supervisors,
    ) == len(incidents)


async def test_a_worker_killed_mid_round_loses_nothing_and_doubles_nothing(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> None:
    settings = FAST.model_copy(update={"repeat_s": 60.0})
    incident = await open_incident(conn, site, device="sos-1", queue=settings)
    await conn.execute(
        "UPDATE incident_timers SET due_at = now() - interval '1 second' WHERE incident_id = %s",
        [incident],
    )
    async with (
        await AsyncConnection.connect(database_url, autocommit=True) as doomed,
        await AsyncConnection.connect(database_url, autocommit=True) as other,
    ):
        pid = doomed.info.backend_pid
        killed = False
        try:
            async with doomed.transaction():
                # Mid-round: the doomed worker fired the timer but has not committed.
                assert [e.incident_id for e in await fire_due(doomed, settings)] == [incident]
                # Meanwhile another worker skips the locked timer rather than fire it too.
                assert await fire_due(other, settings) == []
                # The doomed worker's process dies before its commit.
                await conn.execute("SELECT pg_terminate_backend(%s)", [pid])
                killed = True
        except psycopg.OperationalError:
            pass
        assert killed

        # Nothing of the dead round survived; the timer is due still, and fires once.
        assert await _escalations(conn, incident) == 0
        assert rows(database_url, "SELECT fired_count FROM incident_timers") == [(0,)]
        assert [e.incident_id for e in await fire_due(other, settings)] == [incident]
        assert await fire_due(other, settings) == []
    assert await _escalations(conn, incident) == 1
    assert rows(database_url, "SELECT priority, escalation_level FROM incidents") == [(1, 1)]
    assert rows(database_url, "SELECT fired_count FROM incident_timers") == [(1,)]


async def test_workers_cancelled_at_random_keep_timers_and_the_record_consistent(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> None:
    settings = FAST.model_copy(
        update={"p1_unclaimed_s": 0.2, "repeat_s": 0.05, "poll_interval_s": 0.05}
    )
    incidents = [
        await open_incident(conn, site, device=f"sos-{n}", queue=settings) for n in range(20)
    ]
    rng = random.Random(6)
    async with open_pool(database_url, name="escalation-test", max_size=6) as pool:
        for cycle in range(40):
            running = [await _running(pool, settings, f"w{cycle}-{i}") for i in range(2)]
            await asyncio.sleep(rng.uniform(0.0, 0.08))
            await _stop(*(task for _, task in running))
        before = await _count(conn, "SELECT sum(fired_count) FROM incident_timers")
        assert before > 0, "no round ever completed"

        # Every firing that committed left all three records; none left a partial one.
        for incident in incidents:
            fired_count, level, priority = rows(
                database_url,
                "SELECT t.fired_count, i.escalation_level, i.priority FROM incident_timers t "
                "JOIN incidents i ON i.id = t.incident_id WHERE i.id = %s",
                incident,
            )[0]
            logged = await _escalations(conn, incident)
            announced = await _count(
                conn,
                "SELECT count(*) FROM webhook_deliveries WHERE incident_id = %s "
                "AND subscription_id = %s",
                incident,
                site.supervisors,
            )
            assert fired_count == level == logged == announced, incident
            assert priority == 1

        # Restarted, a worker carries on with every timer: none was lost.
        cur = await conn.execute("SELECT now()")
        restarted_at = (await cur.fetchone() or [None])[0]
        _, task = await _running(pool, settings, "restarted")
        try:
            await _until(
                lambda: _count_at_least(
                    _count(
                        conn,
                        "SELECT count(*) FROM incident_timers WHERE last_fired_at > %s",
                        restarted_at,
                    ),
                    len(incidents),
                ),
                within=5,
                what="every timer to fire after the restart",
            )
        finally:
            await _stop(task)


async def test_anju_cloud_escalate_survives_sigkill(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> None:
    env = {
        **os.environ,
        "ANJU_DATABASE_URL": database_url,
        "ANJU_QUEUE_P1_UNCLAIMED_S": "0.5",
        "ANJU_QUEUE_REPEAT_S": "60",
        "ANJU_QUEUE_POLL_INTERVAL_S": "0.1",
    }
    env.pop("ANJU_MQTT_URL", None)
    queue = QueueSettings(p1_unclaimed_s=0.5, repeat_s=60)
    first = await open_incident(conn, site, device="sos-1", queue=queue)

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *ANJU, "cloud", "escalate", "--workers", "2", env=env
        )

    process = await start()
    try:
        await _until(
            lambda: _count_at_least(_escalations(conn, first), 1), within=15, what="escalation"
        )
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    # Opened while no worker runs: due while the process is dead, fired after its restart.
    second = await open_incident(conn, site, device="sos-2", queue=queue)
    await asyncio.sleep(1.0)
    process = await start()
    try:
        await _until(
            lambda: _count_at_least(_escalations(conn, second), 1), within=15, what="catch-up"
        )
        await asyncio.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    assert await _escalations(conn, first) == 1
    assert await _escalations(conn, second) == 1
