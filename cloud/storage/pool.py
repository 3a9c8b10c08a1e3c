"""Connection pools of the cloud tier, opened by the app that needs one, never at import."""

from __future__ import annotations

import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]


@asynccontextmanager
async def open_pool(
    conninfo: str, *, name: str, min_size: int = 1, max_size: int = 4, connect_timeout_s: int = 10
) -> AsyncIterator[Pool]:
    """An open pool of autocommit connections (transactions are explicit), closed on exit.

    Does not wait for the database: when it is down the pool keeps trying in the
    background and a checkout fails after its timeout, which callers see as
    ``StorageUnavailable``. Each connection is checked on checkout (``_usable``), so
    one that died with a database restart is replaced instead of failing a request.
    """
    pool: Pool = AsyncConnectionPool(
        conninfo,
        name=name,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True, "connect_timeout": connect_timeout_s},
        check=_usable,
    )
    await pool.open(wait=False)
    try:
        yield pool
    finally:
        await pool.close()


async def _usable(conn: AsyncConnection[TupleRow]) -> None:
    """Raise unless ``conn`` can be used; a round trip only when it looks dead.

    An idle pooled connection has nothing to read. One whose server went away (a
    restart or a crash, or its backend terminated) has the server's last words or the
    end of the stream waiting on its socket, and only then is it asked to answer an
    empty query, which fails and makes the pool replace it. Asking every connection
    cost every transaction a round trip: a fifth of an alarm's (docs/decisions.md).
    """
    if conn.closed or _readable(conn.pgconn.socket):
        await AsyncConnectionPool.check_connection(conn)


def _readable(socket: int) -> bool:
    """Whether ``socket`` has data or its end waiting (poll, not select: a busy API's
    descriptors pass select's limit of 1024)."""
    poller = select.poll()
    poller.register(socket, select.POLLIN)
    return bool(poller.poll(0))
