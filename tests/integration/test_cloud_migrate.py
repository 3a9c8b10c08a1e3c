"""Migrations against a real PostgreSQL: once each, in order, safe when run concurrently."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import sql

from anju.services.postgres import PostgresServer
from cloud.errors import MigrationError
from cloud.storage.migrate import apply_migrations, load_migrations


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
