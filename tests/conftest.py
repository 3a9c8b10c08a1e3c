"""Real services for the whole suite: one Mosquitto and one PostgreSQL per session.

Each test gets its own database, cloned from a migrated template (cloning takes
milliseconds, migrating takes seconds), and its own topic prefix and client ids,
so tests never see each other's rows or messages. Nothing is mocked and nothing is
skipped: without the binaries the fixtures fail and say how to get them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from anju.services.mosquitto import MosquittoServer, find_mosquitto
from anju.services.postgres import PostgresServer, find_postgres_bin

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, fsync off, in its own temporary directory.

    Not in pytest's temporary directory: when the suite runs as root the server
    runs as the ``postgres`` user, which cannot enter pytest's private directory.
    """
    if find_postgres_bin() is None:
        pytest.fail(f"PostgreSQL server binaries not found: {_INSTALL_HINT}", pytrace=False)
    with PostgresServer(durable=False) as server:
        yield server


@pytest.fixture(scope="session")
def template_database(postgres: PostgresServer) -> str:
    """Create ``anju_template``, apply every migration to it, and return its name."""
    from cloud.storage.migrate import apply_migrations

    with psycopg.connect(postgres.url_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DATABASE)))
    apply_migrations(postgres.url_for(TEMPLATE_DATABASE))
    with psycopg.connect(postgres.url_for("postgres"), autocommit=True) as conn:
        # Cloning fails while anyone is connected to the template; refusing
        # connections turns a stray session into a clear error at its source.
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(TEMPLATE_DATABASE)
            )
        )
    return TEMPLATE_DATABASE


@pytest.fixture
def create_database(
    postgres: PostgresServer, template_database: str
) -> Iterator[Callable[[], str]]:
    """A function that clones the migrated template into a new database and returns its URL.

    Every database made through it is dropped after the test, even if the test
    left connections open.
    """
    admin_url = postgres.url_for("postgres")
    created: list[str] = []

    def create() -> str:
        name = f"test_{uuid.uuid4().hex}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template_database)
                )
            )
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
