"""Errors raised by the cloud tier, each carrying what it concerns.

    CloudError
    ├── SettingsError          environment variables missing or malformed (names each)
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

from collections.abc import Sequence
from typing import NamedTuple


class CloudError(Exception):
    """Base of every error raised by ``cloud``."""


class SettingsProblem(NamedTuple):
    """One missing or malformed setting: its variable, what is wrong, the form expected."""

    variable: str
    problem: str
    expected: str

    def __str__(self) -> str:
        return f"{self.variable}: {self.problem}; expected {self.expected}"


class SettingsError(CloudError):
    """Settings are missing or malformed; names each variable and the form it expects.

    ``problems`` holds every mistake found, so an operator fixes them all in one go
    rather than one per start; the message has one line per problem. ``variable``,
    ``problem`` and ``expected`` are the first problem's.
    """

    def __init__(self, variable: str, problem: str, expected: str, *more: SettingsProblem) -> None:
        self.problems = [SettingsProblem(variable, problem, expected), *more]
        self.variable = variable
        self.problem = problem
        self.expected = expected
        super().__init__("\n".join(str(each) for each in self.problems))

    @classmethod
    def of(cls, problems: Sequence[SettingsProblem]) -> SettingsError:
        """One error for ``problems`` (at least one)."""
        first, *more = problems
        return cls(*first, *more)


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
