"""``anju cloud migrate`` as an operator runs it: a separate process against a real,
empty PostgreSQL database, its whole output (stdout and the log on stderr) read."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from anju.services.postgres import PostgresServer
from cloud.storage.migrate import load_migrations

ANJU = Path(sys.executable).with_name("anju")


@pytest.fixture
def empty_database_url(postgres: PostgresServer) -> Iterator[str]:
    """A new database with no schema (not cloned from the migrated template)."""
    name = f"empty_{uuid.uuid4().hex}"
    admin = postgres.url_for("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield postgres.url_for(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _migrate(database_url: str) -> str:
    result = subprocess.run(
        [str(ANJU), "cloud", "migrate"],
        env={**os.environ, "ANJU_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_migrate_names_each_migration_once(empty_database_url: str) -> None:
    output = _migrate(empty_database_url)
    names = [migration.name for migration in load_migrations()]
    assert names
    assert {name: output.count(name) for name in names} == dict.fromkeys(names, 1), output

    again = _migrate(empty_database_url)
    assert "database is up to date" in again
    assert not any(name in again for name in names), again
