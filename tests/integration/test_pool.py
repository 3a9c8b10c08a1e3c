"""The cloud's connection pools check a connection on checkout without a round trip,
and still replace one whose server went away.

The wire is read through libpq's own protocol trace of the pooled connection: a
checkout's check would show as a query message sent to the server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg

from cloud.storage.pool import open_pool


async def test_a_checkout_of_a_live_connection_sends_nothing(
    database_url: str, tmp_path: Path
) -> None:
    trace = tmp_path / "libpq.trace"
    async with open_pool(database_url, name="test-pool", max_size=1) as pool:
        with trace.open("w") as traced:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
                conn.pgconn.trace(traced.fileno())
            async with pool.connection() as again:
                assert again is conn, "the pool of one gave its connection back"
                await again.execute("SELECT 2")
                again.pgconn.untrace()
    sent = [line.split("\t", 3)[3] for line in trace.read_text().splitlines() if "\tF\t" in line]
    assert sent == ['Query\t "SELECT 2"'], sent


async def test_a_connection_whose_backend_was_terminated_is_replaced(database_url: str) -> None:
    async with open_pool(database_url, name="test-pool", max_size=1) as pool:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT pg_backend_pid()")
            first = (await cur.fetchone() or [0])[0]
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", [first])
        await asyncio.sleep(0.2)  # the server's last words reach the pooled socket
        async with pool.connection(timeout=10) as conn:
            cur = await conn.execute("SELECT pg_backend_pid()")
            second = (await cur.fetchone() or [0])[0]
    assert second != first, "a fresh connection replaced the dead one"
