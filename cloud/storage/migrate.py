"""Apply the numbered migrations in ``cloud/storage/migrations`` once each, in order.

Guarantees:

- each migration runs in its own transaction together with the row recording it in
  ``schema_migrations``, so a failure leaves no half-applied migration behind;
- runs are serialised by a PostgreSQL advisory lock, so any number of processes may
  call ``apply_migrations`` at once: one applies, the others then find nothing to do;
- a migration whose file changed after it was applied, or a database carrying a
  migration this code does not know, stops the run with ``MigrationError`` instead of
  guessing;
- after migrating, readings are set up for keeping over time, on TimescaleDB when the
  server offers it, else in native partitions created months ahead
  (``cloud.storage.timeseries.prepare``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Final

import psycopg
from psycopg.rows import TupleRow

from cloud.errors import MigrationError
from cloud.settings import StorageSettings
from cloud.storage.database import storage_errors, translate
from cloud.storage.sql import queries
from cloud.storage.timeseries import prepare

log = logging.getLogger(__name__)

LOCK_KEY: Final = 0x616E_6A75_6D69_6772
"""Advisory lock key of migration runs ('anjumigr' as a bigint)."""

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: ``NNNN_name.sql``."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text, recorded to detect a migration edited after use."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The migrations in ``directory`` (default: the package's), ordered by number.

    Raises MigrationError for a ``.sql`` file not named ``NNNN_name.sql`` or for two
    files with one number.
    """
    root = directory if directory is not None else files("cloud.storage").joinpath("migrations")
    found: dict[int, Migration] = {}
    for path in root.iterdir():
        if not path.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError("file name must be NNNN_lowercase_name.sql", migration=path.name)
        version = int(match.group(1))
        stem = path.name.removesuffix(".sql")
        if version in found:
            raise MigrationError(
                f"number {version:04d} is also used by {found[version].name}", migration=stem
            )
        found[version] = Migration(version, stem, path.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


def apply_migrations(
    conninfo: str,
    *,
    storage: StorageSettings | None = None,
    lock_timeout_s: float = 120.0,
    connect_timeout_s: int = 10,
) -> list[str]:
    """Bring the database at ``conninfo`` up to date; return the migrations applied now.

    Names are file stems such as ``0001_registry``, in the order applied; an empty list
    means the database was already current. Then readings are set up as ``storage``
    (default: ``StorageSettings()``) says, every run, so changed settings take effect.
    Waits at most ``lock_timeout_s`` for another process's run to finish. Raises
    MigrationError when a migration fails or the files disagree with the database,
    SettingsError when ``storage`` asks for a path the server cannot give, and
    StorageError (or StorageUnavailable) when the database cannot be reached or
    refuses the bookkeeping or storage statements.
    """
    migrations = load_migrations()
    sql = queries()
    with storage_errors("connect"):
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=connect_timeout_s)
    with conn:
        with storage_errors("migrations_lock"):
            timeout = f"{int(lock_timeout_s * 1000)}ms"
            conn.execute(sql["migrations_lock_timeout"], {"timeout": timeout})
            conn.execute(sql["migrations_lock"], {"key": LOCK_KEY})
        try:
            applied = _apply_pending(conn, migrations)
            prepare(conn, storage if storage is not None else StorageSettings())
        finally:
            with storage_errors("migrations_unlock"):
                conn.execute(sql["migrations_unlock"], {"key": LOCK_KEY})
    return applied


def _apply_pending(conn: psycopg.Connection[TupleRow], migrations: list[Migration]) -> list[str]:
    sql = queries()
    with storage_errors("migrations_table"):
        conn.execute(sql["migrations_table"])
        rows = conn.execute(sql["migrations_applied"]).fetchall()
    known = {migration.version: migration for migration in migrations}
    recorded: dict[int, str] = {}
    for version, name, checksum in rows:
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                "applied to this database but unknown to this version of anju; upgrade anju",
                migration=name,
            )
        if migration.checksum != checksum:
            raise MigrationError(
                "file changed after it was applied; add a new migration instead", migration=name
            )
        recorded[version] = name

    applied: list[str] = []
    for migration in migrations:
        if migration.version in recorded:
            continue
        try:
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(
                    sql["migrations_record"],
                    {
                        "version": migration.version,
                        "name": migration.name,
                        "checksum": migration.checksum,
                    },
                )
        except psycopg.Error as exc:
            error = translate(exc, query=migration.name)
            raise MigrationError(
                error.message, migration=migration.name, sqlstate=error.sqlstate
            ) from exc
        # Debug, not info: the callers report the names returned (anju cloud migrate
        # prints them), and at info every name would be shown twice.
        log.debug("applied migration %s", migration.name)
        applied.append(migration.name)
    return applied
