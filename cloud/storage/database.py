"""Where psycopg errors enter the cloud tier and become ``StorageError``.

Every call into psycopg sits inside ``storage_errors(query_name)``, so the layers
above see one error tree and can tell a transient failure (retry, do not acknowledge)
from a statement the database refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from cloud.errors import StorageError, StorageUnavailable

_INPUT_SQLSTATE_CLASSES = ("22", "23")
"""Data exception and integrity constraint violation: the input, not the server, is at fault."""


def translate(exc: psycopg.Error, *, query: str | None = None) -> StorageError:
    """The ``StorageError`` for ``exc``: ``StorageUnavailable`` when retrying may help.

    Operational errors (connection lost or refused, server shutting down, pool
    timeout, deadlock, serialization failure, statement timeout) and interface errors
    (a closed connection) are transient; everything else is not.
    """
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    sqlstate = exc.sqlstate
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StorageUnavailable(message, query=query, sqlstate=sqlstate)
    return StorageError(message, query=query, sqlstate=sqlstate)


def rejects_input(exc: StorageError) -> bool:
    """Whether the database refused the data itself (a bad value, a violated constraint).

    Retrying such a statement with the same input fails again, so ingest quarantines
    the batch instead of waiting for a redelivery that cannot succeed.
    """
    return exc.sqlstate is not None and exc.sqlstate[:2] in _INPUT_SQLSTATE_CLASSES


@contextmanager
def storage_errors(query: str | None = None) -> Iterator[None]:
    """Translate psycopg errors raised in the block into ``StorageError`` naming ``query``."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc, query=query) from exc
