"""Connection pools of the cloud tier, opened by the app that needs one, never at import."""

from __future__ import annotations

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
    ``StorageUnavailable``. Each connection is checked on checkout, so one that died
    with a database restart is replaced instead of failing a request.
    """
    pool: Pool = AsyncConnectionPool(
        conninfo,
        name=name,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True, "connect_timeout": connect_timeout_s},
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=False)
    try:
        yield pool
    finally:
        await pool.close()
