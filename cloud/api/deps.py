"""Dependencies of the routes, as ``Annotated`` aliases.

``ConnectionDep`` checks a connection out of the app's pool for one request and
returns it afterwards; failing to get one within the timeout raises
``StorageUnavailable``, which the app turns into 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Final, cast

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from cloud.storage.database import storage_errors
from cloud.storage.pool import Pool

CHECKOUT_TIMEOUT_S: Final = 5.0


async def get_pool(request: Request) -> Pool:
    """The pool the app's lifespan opened."""
    return cast(Pool, request.app.state.pool)


PoolDep = Annotated[Pool, Depends(get_pool)]


async def get_connection(pool: PoolDep) -> AsyncIterator[AsyncConnection[TupleRow]]:
    """A pooled autocommit connection for the duration of one request."""
    with storage_errors("connect"):
        conn = await pool.getconn(timeout=CHECKOUT_TIMEOUT_S)
    try:
        yield conn
    finally:
        await pool.putconn(conn)


ConnectionDep = Annotated[AsyncConnection[TupleRow], Depends(get_connection, scope="function")]
"""Returned to the pool when the route returns, before its answer is sent: a streamed
answer (``GET /incidents/live``) must not hold a connection for its whole life."""
