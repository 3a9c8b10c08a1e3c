"""The suite's PostgreSQL when it is not the suite's own: ``ANJU_TEST_DATABASE_URL``.

By default the fixtures start a PostgreSQL of their own (``tests/conftest.py``). With
``ANJU_TEST_DATABASE_URL`` set to the libpq URL of a role that may create databases on
another server (naming a maintenance database such as ``postgres``), they use that
server instead: the session's migrated template and every test database are created
there under names of their own and dropped again. ``docs/storage.md`` ("Running the
suite against TimescaleDB") says why: that is how the TimescaleDB path gets tested.

TimescaleDB keeps a background job scheduler connected to every database that has the
extension, and ``CREATE DATABASE ... TEMPLATE`` refuses a template anyone is connected
to; ``seal_template`` and ``clone_database`` deal with that.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors, sql

DATABASE_URL_VAR = "ANJU_TEST_DATABASE_URL"

CLONE_RETRY_S = 15.0
"""How long a clone retries while something (a TimescaleDB scheduler) holds the template."""


def external_database_url() -> str | None:
    """``ANJU_TEST_DATABASE_URL`` if set and not blank, else None (own server)."""
    url = os.environ.get(DATABASE_URL_VAR, "").strip()
    return url or None


class ExternalServer:
    """Stands in for ``PostgresServer`` when the suite runs on someone else's server.

    It answers what tests ask of the ``postgres`` fixture (``url``, ``url_for``,
    ``running``) but cannot be stopped or started: tests that need that are marked
    ``own_server`` and skipped on an external server.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.netloc:
            raise ValueError(
                f"{DATABASE_URL_VAR} must be a postgresql://user@host:port/database URL"
            )
        self.url = url
        self._parts = parts
        self.maintenance_database = parts.path.lstrip("/") or "postgres"

    @property
    def running(self) -> bool:
        """Always true: the server is not the suite's to stop."""
        return True

    def url_for(self, database: str) -> str:
        """The URL of ``database`` on the server, as the role of ``ANJU_TEST_DATABASE_URL``.

        ``"postgres"`` means the maintenance database that URL names, which is where
        the fixtures (and tests copying them) connect to create and drop databases.
        """
        if database == "postgres":
            return self.url
        return urlunsplit(self._parts._replace(path=f"/{database}"))

    def start(self) -> None:
        """Nothing to do: the server runs, and is not the suite's."""

    def stop(self) -> None:
        raise RuntimeError(_NOT_OURS)

    def kill(self) -> None:
        raise RuntimeError(_NOT_OURS)


_NOT_OURS = (
    f"the suite runs on the server of {DATABASE_URL_VAR} and cannot stop it; "
    "mark the test own_server"
)


def check_admin(admin_url: str) -> None:
    """Fail clearly unless the role of ``admin_url`` can create databases."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    if not row or not row[0]:
        raise RuntimeError(f"the role of {DATABASE_URL_VAR} may not create databases")


def seal_template(admin_url: str, name: str) -> None:
    """Make ``name`` a template nobody is connected to, so it can be cloned.

    Stops the database's TimescaleDB scheduler if it has one, refuses new connections
    (a restarted scheduler then fails to connect instead of blocking clones), and ends
    the sessions still there.
    """
    database_url = _with_database(admin_url, name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        stop = conn.execute(
            "SELECT to_regprocedure('_timescaledb_functions.stop_background_workers()') IS NOT NULL"
        ).fetchone()
        if stop and stop[0]:
            conn.execute("SELECT _timescaledb_functions.stop_background_workers()")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)
            )
        )
        _end_sessions(conn, name)


def clone_database(admin_url: str, name: str, template: str) -> None:
    """``CREATE DATABASE name TEMPLATE template``, retrying briefly while the template
    is "being accessed by other users" (a TimescaleDB scheduler that slipped in)."""
    deadline = time.monotonic() + CLONE_RETRY_S
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while True:
            try:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
                return
            except errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
            _end_sessions(conn, template)
            time.sleep(0.2)


def drop_template(admin_url: str, name: str) -> None:
    """Drop a template made by the session (a template cannot be dropped as such)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _end_sessions(conn: psycopg.Connection[tuple[object, ...]], database: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))
