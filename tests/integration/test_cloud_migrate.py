"""Migrations against a real PostgreSQL: once each, in order, safe when run concurrently."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import sql

from anju.services.postgres import PostgresServer
from cloud.app import run_ingest
from cloud.errors import MigrationError
from cloud.settings import CloudSettings
from cloud.storage.migrate import apply_migrations, load_migrations
from schemas.broker import parse_broker_url


@pytest.fixture
def empty_database_url(postgres: PostgresServer) -> Iterator[str]:
    """A new database with no schema at all (not cloned from the migrated template)."""
    name = f"empty_{uuid.uuid4().hex}"
    admin = postgres.url_for("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield postgres.url_for(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _names() -> list[str]:
    return [migration.name for migration in load_migrations()]


@pytest.mark.plain_storage
def test_applies_every_migration_once_in_order(empty_database_url: str) -> None:
    assert apply_migrations(empty_database_url) == _names()
    assert apply_migrations(empty_database_url) == []
    with psycopg.connect(empty_database_url) as conn:
        recorded = [
            row[0] for row in conn.execute("SELECT name FROM schema_migrations ORDER BY version")
        ]
        partitions = [
            row[0]
            for row in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'readings'::regclass"
            )
        ]
        this_month = conn.execute(
            "SELECT 'readings_' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')"
        ).fetchone()
    assert recorded == _names()
    assert "readings_default" in partitions
    assert this_month is not None
    assert this_month[0] in partitions
    assert len(partitions) >= 5  # last month, this month, three ahead, and the default


def test_template_database_is_already_current(database_url: str) -> None:
    assert apply_migrations(database_url) == []


def test_concurrent_runs_apply_each_migration_exactly_once(empty_database_url: str) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: apply_migrations(empty_database_url), range(4)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == _names()
    assert sum(1 for result in results if result) == 1


def test_edited_migration_is_refused(database_url: str) -> None:
    first = _names()[0]
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE name = %s", [first])
    with pytest.raises(MigrationError) as caught:
        apply_migrations(database_url)
    assert caught.value.migration == first
    assert "changed after it was applied" in str(caught.value)


@pytest.mark.plain_storage
def test_partitions_take_rows_waiting_in_the_default_partition(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO readings VALUES "
            "('2041-03-05T10:00Z', 'dev-1', 'temperature_c', 21.5, 'gw', 1)"
        )
        created = conn.execute("SELECT readings_ensure_partitions('2041-03-01', 1)").fetchone()
        where = conn.execute("SELECT tableoid::regclass::text, value FROM readings").fetchall()
    assert created == (1,)
    assert where == [("readings_2041_03", 21.5)]


@pytest.mark.plain_storage
def test_new_partition_waits_for_a_reading_landing_in_default(database_url: str) -> None:
    """A reading committed into DEFAULT while the month's partition is being made.

    Without a lock on DEFAULT the move misses the uncommitted row and the attach then
    fails on it; with the lock the partition waits, takes the row, and attaches.
    """
    writer = psycopg.connect(database_url)
    try:
        writer.execute(
            "INSERT INTO readings VALUES "
            "('2042-01-05T10:00Z', 'dev-1', 'temperature_c', 20.5, 'gw', 1)"
        )
        with ThreadPoolExecutor(1) as pool, psycopg.connect(database_url, autocommit=True) as maker:
            making = pool.submit(
                lambda: maker.execute(
                    "SELECT readings_ensure_partitions('2042-01-01', 1)"
                ).fetchone()
            )
            with pytest.raises(TimeoutError):
                making.result(timeout=0.5)
            writer.commit()
            assert making.result(timeout=10) == (1,)
        rows = writer.execute("SELECT tableoid::regclass::text FROM readings").fetchall()
    finally:
        writer.close()
    assert rows == [("readings_2042_01",)]


@pytest.mark.plain_storage
async def test_ingest_creates_partitions_ahead_when_it_starts(
    database_url: str, mqtt_url: str
) -> None:
    """Ingest outlives the months ``anju cloud migrate`` prepared; it makes its own."""
    ahead = (
        "readings_"
        + (
            psycopg.connect(database_url)
            .execute("SELECT to_char(now() AT TIME ZONE 'UTC' + interval '3 months', 'YYYY_MM')")
            .fetchone()[0]  # type: ignore[index]
        )
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(ahead)))
    settings = CloudSettings(database_url=database_url, mqtt=parse_broker_url(mqtt_url))
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_ingest(settings, stop=stop, started=started))
    await asyncio.wait_for(started.wait(), timeout=30)
    async with asyncio.timeout(10):
        while not await _exists(database_url, ahead):  # noqa: ASYNC110 (a catalogue row)
            await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, timeout=30)


async def _exists(database_url: str, table: str) -> bool:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))).fetchone()
    return bool(row and row[0])
