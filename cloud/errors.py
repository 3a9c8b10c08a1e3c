"""Errors raised by the cloud tier, each carrying what it concerns.

    CloudError
    ├── SettingsError          an environment variable missing or malformed (names it)
    ├── StorageError           the database failed a statement (carries the SQL name)
    │   ├── StorageUnavailable     transient: connection lost, pool timeout, deadlock;
    │   │                          retry later, and never acknowledge the message
    │   └── MigrationError         a migration file or run failed (carries its name)
    └── RegistryError          a community, gateway or device cannot be registered

Bad ingest input is not an error here: it is quarantined with its reason (see
``cloud.ingest.writer``).

psycopg errors are translated where they enter (``cloud.storage.database.translate``),
so callers above the storage layer catch these and never ``psycopg.Error``.
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error raised by ``cloud``."""


class SettingsError(CloudError):
    """A setting is missing or malformed; names the variable and the expected form."""

    def __init__(self, variable: str, problem: str, expected: str) -> None:
        self.variable = variable
        self.problem = problem
        self.expected = expected
        super().__init__(f"{variable}: {problem}; expected {expected}")


class StorageError(CloudError):
    """A database operation failed.

    ``query`` is the name of the named query or migration that failed (``None`` when
    the failure came before any statement, such as a refused connection); ``sqlstate``
    is PostgreSQL's error code when the server gave one.
    """

    def __init__(
        self, message: str, *, query: str | None = None, sqlstate: str | None = None
    ) -> None:
        self.message = message
        self.query = query
        self.sqlstate = sqlstate
        where = f" (query {query})" if query else ""
        code = f" [{sqlstate}]" if sqlstate else ""
        super().__init__(f"{message}{where}{code}")


class StorageUnavailable(StorageError):
    """A transient failure: the same operation may succeed later.

    Ingest treats it as "do not acknowledge": the message stays with the broker and is
    redelivered once the consumer reconnects.
    """


class MigrationError(StorageError):
    """A migration could not be applied or the migration files are inconsistent."""

    def __init__(self, message: str, *, migration: str, sqlstate: str | None = None) -> None:
        self.migration = migration
        super().__init__(message, query=migration, sqlstate=sqlstate)


class RegistryError(CloudError):
    """A registration conflicts with what is registered (or names something unknown)."""

    def __init__(self, message: str, *, entity: str, key: str) -> None:
        self.entity = entity
        self.key = key
        super().__init__(f"{entity} {key!r}: {message}")
