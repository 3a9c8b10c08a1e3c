"""The TimescaleDB path on a live TimescaleDB: the defects issue 17 found, each shown
fixed where only TimescaleDB can show it.

These run when ``ANJU_TEST_DATABASE_URL`` names a server with TimescaleDB preloaded
(docs/storage.md, "Running the suite against TimescaleDB"); on plain PostgreSQL the
``timescaledb`` marker skips them, saying why. The plain-PostgreSQL halves of the same
fixes are in tests/integration/test_timeseries.py and tests/unit/test_timeseries_sql.py.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import AsyncConnection, sql

from cloud.ingest.writer import copy_readings
from cloud.settings import StorageSettings
from cloud.storage.migrate import apply_migrations
from cloud.storage.timeseries import maintain
from tests.databases import ExternalServer

pytestmark = pytest.mark.timescaledb

BULK = 200_000
"""Enough rows that the conversion holds its lock long enough for a COPY to queue."""


def _scalar(url: str, query: str, *params: object) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params or None).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


@pytest.fixture
def partitioned_url(postgres: ExternalServer) -> Iterator[str]:
    """A new database migrated on the plain path, as one made before TimescaleDB was
    installed would be, holding BULK readings."""
    name = f"test_{uuid.uuid4().hex}"
    admin = postgres.url_for("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = postgres.url_for(name)
    apply_migrations(url, storage=StorageSettings(backend="partitions"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO readings (device_id, metric, ts, value, gateway_id, seq) "
            "SELECT 'dev-' || (i %% 50), 'heart_rate_bpm', now() - i * INTERVAL '1 second', "
            "i, 'gw-1', i FROM generate_series(1, %s) AS i",
            [BULK],
        )
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_a_copy_queued_behind_the_conversion_reaches_the_hypertable(
    partitioned_url: str,
) -> None:
    """Defect 1: a COPY waiting for the conversion's lock wrote into the hypertable's
    root table, where no query reads, and the writer reported it stored."""
    converting = threading.Thread(target=apply_migrations, args=(partitioned_url,))
    converting.start()
    # The writer's COPY, started while the conversion holds readings.
    late = datetime.now(UTC)
    rows = [
        ("dev-q", "heart_rate_bpm", late - timedelta(seconds=i), 1.0, "gw-1", i) for i in range(100)
    ]

    async def write() -> None:
        async with await AsyncConnection.connect(partitioned_url) as conn, conn.transaction():
            await copy_readings(conn, rows)

    threading.Event().wait(0.5)
    asyncio.run(write())
    converting.join()
    assert (
        _scalar(
            partitioned_url,
            "SELECT count(*) FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'readings'",
        )
        == 1
    )
    assert _scalar(partitioned_url, "SELECT count(*) FROM readings") == BULK + 100
    with psycopg.connect(partitioned_url) as conn:
        conn.execute("SET timescaledb.restoring = on")
        root = conn.execute("SELECT count(*) FROM ONLY readings").fetchone()
    assert root == (0,)


async def test_late_readings_beyond_the_policy_window_reach_the_hourly_rollup(
    database_url: str,
) -> None:
    """Defect 4: an hour already materialized never took a reading that came later than
    the refresh policy's window, while the API called that hour complete."""
    hour = (datetime.now(UTC) - timedelta(hours=60)).replace(minute=0, second=0, microsecond=0)
    query = (
        "SELECT value_count, value_max FROM readings_hourly "
        "WHERE device_id = 'dev-l' AND bucket = %s"
    )
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        async with conn.transaction():
            first = [
                ("dev-l", "heart_rate_bpm", hour + timedelta(minutes=m), 70.0, "gw-1", m)
                for m in range(0, 60, 10)
            ]
            await copy_readings(conn, first)
        await conn.execute("CALL refresh_continuous_aggregate('readings_hourly', NULL, NULL)")
        await conn.execute("DELETE FROM readings_late_hours")
        async with conn.transaction():
            late = [("dev-l", "heart_rate_bpm", hour + timedelta(minutes=5), 200.0, "gw-1", 99)]
            await copy_readings(conn, late)
        # Until maintenance refreshes it, the API reads that hour from readings.
        horizon = await (await conn.execute("SELECT readings_rollup_horizon()")).fetchone()
        assert horizon == (hour,)
        report = await maintain(conn, StorageSettings())
        assert report.late_hours_refreshed == 1
        assert await (await conn.execute(query, [hour])).fetchone() == (7, 200.0)


def test_a_later_migrate_finishes_an_unfinished_first_refresh(database_url: str) -> None:
    """Defect 2: the first full refresh failed (a concurrent refresh policy) after the
    conversion committed, and no later migrate tried it again."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE readings_rollup_unrefreshed (since timestamptz DEFAULT now())")
    apply_migrations(database_url)
    assert _scalar(database_url, "SELECT to_regclass('readings_rollup_unrefreshed')") is None


async def test_a_late_hour_older_than_the_raw_retention_is_forgotten_unrefreshed(
    database_url: str,
) -> None:
    """Its raw chunks may be gone: refreshing it would erase the aggregate's history of
    that hour for every device, so the note is dropped and the hour left as it is."""
    ancient = (datetime.now(UTC) - timedelta(days=400)).replace(minute=0, second=0, microsecond=0)
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO readings_late_hours (bucket) VALUES (%s)", [ancient])
        report = await maintain(conn, StorageSettings(retention_days=90))
        assert report.late_hours_refreshed == 0
        left = await (await conn.execute("SELECT count(*) FROM readings_late_hours")).fetchone()
        assert left == (0,)
