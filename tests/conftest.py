"""Real services for the whole suite: one Mosquitto and one PostgreSQL per session.

Each test gets its own database, cloned from a migrated template (cloning takes
milliseconds, migrating takes seconds), and its own topic prefix and client ids,
so tests never see each other's rows or messages. Nothing is mocked, and without the
binaries the fixtures fail and say how to get them.

With ``ANJU_TEST_DATABASE_URL`` set (``tests/databases.py``, docs/storage.md "Running
the suite against TimescaleDB"), the databases live on that server instead of one of
the suite's own. Three markers then decide what runs, each skip saying why:

- ``own_server``: the test stops or restarts the suite's PostgreSQL, so it is skipped
  on an external server;
- ``timescaledb``: the test needs readings on TimescaleDB, so it is skipped when the
  migrated template did not get the TimescaleDB path (not offered, or not preloaded);
- ``plain_storage``: the test asserts details of the plain path (native partitions,
  the rollup table), so it is skipped when the template got the TimescaleDB path.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from anju.services.mosquitto import MosquittoServer, find_mosquitto
from anju.services.postgres import PostgresServer, find_postgres_bin
from tests.databases import (
    DATABASE_URL_VAR,
    ExternalServer,
    check_admin,
    clone_database,
    drop_template,
    external_database_url,
    seal_template,
)

TEMPLATE_DATABASE = "anju_template"
_INSTALL_HINT = (
    "run scripts/test, which installs mosquitto, socat and postgresql "
    "(apt-get install mosquitto mosquitto-clients socat postgresql) before running pytest"
)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """The session's Mosquitto broker (MQTT v5), anonymous, on a free loopback port.

    Fault tests may ``stop()``/``kill()`` and ``start()`` it; the URL stays valid.
    """
    if find_mosquitto() is None:
        pytest.fail(f"mosquitto not found on PATH or in /usr/sbin: {_INSTALL_HINT}", pytrace=False)
    with MosquittoServer(tmp_path_factory.mktemp("mosquitto")) as server:
        yield server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an external server, skip the tests that stop or restart the suite's own."""
    if external_database_url() is None:
        return
    skip = pytest.mark.skip(
        reason="own_server: needs the suite's own PostgreSQL (stops, restarts or inspects "
        f"it), and {DATABASE_URL_VAR} names a server the suite does not own"
    )
    for item in items:
        if item.get_closest_marker("own_server") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | ExternalServer]:
    """The session's PostgreSQL server, fsync off, in its own temporary directory.

    Not in pytest's temporary directory: when the suite runs as root the server
    runs as the ``postgres`` user, which cannot enter pytest's private directory.

    With ``ANJU_TEST_DATABASE_URL`` set, that server instead (an ``ExternalServer``,
    which cannot be stopped: tests that stop it are marked ``own_server``).
    """
    external = external_database_url()
    if external is not None:
        try:
            server = ExternalServer(external)
            check_admin(server.url_for("postgres"))
        except (ValueError, RuntimeError, psycopg.Error) as exc:
            pytest.fail(f"{DATABASE_URL_VAR}: {exc}", pytrace=False)
        yield server
        return
    if find_postgres_bin() is None:
        pytest.fail(f"PostgreSQL server binaries not found: {_INSTALL_HINT}", pytrace=False)
    with PostgresServer(durable=False) as own:
        yield own


@dataclass(frozen=True, slots=True)
class Template:
    """The session's migrated template database and what storage path it got."""

    name: str
    timescaledb_available: bool
    """Whether the server offers TimescaleDB (``pg_available_extensions``)."""
    timescaledb: str | None
    """The TimescaleDB version installed in the template (its readings are on the
    TimescaleDB path), or None (native partitions)."""


@pytest.fixture(scope="session")
def migrated_template(postgres: PostgresServer | ExternalServer) -> Iterator[Template]:
    """Create the template (``anju_template``; ``anju_template_<uuid>`` on an external
    server, dropped at the end), apply every migration to it, and describe it."""
    from cloud.storage.migrate import apply_migrations

    external = isinstance(postgres, ExternalServer)
    name = f"{TEMPLATE_DATABASE}_{uuid.uuid4().hex[:12]}" if external else TEMPLATE_DATABASE
    admin_url = postgres.url_for("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        apply_migrations(postgres.url_for(name))
        with psycopg.connect(postgres.url_for(name), autocommit=True) as conn:
            row = conn.execute(
                "SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb'),"
                " (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')"
            ).fetchone()
        assert row is not None
        # Cloning fails while anyone is connected to the template (TimescaleDB's
        # scheduler is); refusing connections turns a stray session into a clear
        # error at its source.
        seal_template(admin_url, name)
        yield Template(name, timescaledb_available=bool(row[0]), timescaledb=row[1])
    finally:
        if external:
            drop_template(admin_url, name)


@pytest.fixture(scope="session")
def template_database(migrated_template: Template) -> str:
    """Create ``anju_template``, apply every migration to it, and return its name."""
    return migrated_template.name


@pytest.fixture(autouse=True)
def _storage_path_markers(request: pytest.FixtureRequest) -> None:
    """Skip ``timescaledb`` and ``plain_storage`` tests on the other storage path."""
    wants_timescale = request.node.get_closest_marker("timescaledb") is not None
    wants_plain = request.node.get_closest_marker("plain_storage") is not None
    if not (wants_timescale or wants_plain):
        return
    template: Template = request.getfixturevalue("migrated_template")
    if wants_timescale and template.timescaledb is None:
        why = (
            "offers it without preloading it (shared_preload_libraries)"
            if template.timescaledb_available
            else "does not offer it (not in pg_available_extensions)"
        )
        pytest.skip(
            f"timescaledb: needs readings on TimescaleDB, and this server {why}; "
            f"set {DATABASE_URL_VAR} to a TimescaleDB server (docs/storage.md)"
        )
    if wants_plain and template.timescaledb is not None:
        pytest.skip(
            f"plain_storage: asserts the native-partition path, and this server gives "
            f"readings TimescaleDB {template.timescaledb} instead"
        )


@pytest.fixture
def create_database(
    postgres: PostgresServer | ExternalServer, template_database: str
) -> Iterator[Callable[[], str]]:
    """A function that clones the migrated template into a new database and returns its URL.

    Every database made through it is dropped after the test, even if the test
    left connections open.
    """
    admin_url = postgres.url_for("postgres")
    created: list[str] = []

    def create() -> str:
        name = f"test_{uuid.uuid4().hex}"
        clone_database(admin_url, name, template_database)
        created.append(name)
        return postgres.url_for(name)

    yield create
    if not postgres.running:
        postgres.start()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def database_url(create_database: Callable[[], str]) -> str:
    """The URL of a fresh, migrated database of this test's own (``test_<uuid>``)."""
    return create_database()


@pytest.fixture
def mqtt_url(mosquitto: MosquittoServer) -> str:
    """The session broker's URL, ``mqtt://127.0.0.1:PORT``."""
    return mosquitto.url


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses, such as ``test/3f2a9c1b7d4e``."""
    return f"test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def unique_id() -> Callable[[str], str]:
    """A function making ids no other test uses: ``unique_id("sub")`` gives ``sub-3f2a…``.

    For MQTT client ids, gateway ids and anything else the broker or the database
    keys on across tests.
    """
    return _new_id
