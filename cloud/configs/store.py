"""What the config pusher reads and writes in the database (``queries/configs.sql``).

The registry owns a gateway's ``config_version`` and its ``gateway_configs`` rows; this
module writes only what the gateway's answers say: ``config_pushed_at``,
``config_applied`` and ``config_applied_at``, ``config_refused`` and ``config_error``.
Every statement is a single UPDATE, so each is atomic on its own; raises StorageError
(``StorageUnavailable`` when retrying may help) naming the query.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

from cloud.configs.commands import Answer, ConfigPush
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries


async def claim_pushes(
    conn: AsyncConnection[Any], *, limit: int, retry_s: float, retry_cap_s: float
) -> list[ConfigPush]:
    """Claim up to ``limit`` due pushes, each stamped ``pushed_at`` = the transaction's now.

    Run it in the transaction that publishes them: the claimed rows stay locked until
    it ends, and when publishing fails the rollback leaves them due as before.
    """
    with storage_errors("configs_claim_pushes"):
        cur = conn.cursor(row_factory=class_row(ConfigPush))
        await cur.execute(
            queries()["configs_claim_pushes"],
            {"limit": limit, "retry_s": retry_s, "retry_cap_s": retry_cap_s},
        )
        return await cur.fetchall()


async def record_applied(conn: AsyncConnection[Any], answer: Answer) -> bool:
    """Record that the gateway runs ``answer.running``; False when the row knew better
    already (or the gateway is unknown under that community)."""
    params = {"gateway": answer.gateway, "community": answer.community, "running": answer.running}
    with storage_errors("configs_record_applied"):
        cur = await conn.execute(queries()["configs_record_applied"], params)
    return cur.rowcount > 0


async def record_refused(
    conn: AsyncConnection[Any], gateway: str, community: str, version: int, detail: str
) -> bool:
    """Record that ``version`` is refused for ``detail``, so it is not pushed again;
    False when it is no longer the version the cloud wants (nothing is written)."""
    params = {"gateway": gateway, "community": community, "version": version, "detail": detail}
    with storage_errors("configs_record_refused"):
        cur = await conn.execute(queries()["configs_record_refused"], params)
    return cur.rowcount > 0


async def record_status(
    conn: AsyncConnection[Any], gateway: str, community: str, running: int
) -> bool:
    """Record the version an online status reports; True when the row changed."""
    params = {"gateway": gateway, "community": community, "running": running}
    with storage_errors("configs_record_status"):
        cur = await conn.execute(queries()["configs_record_status"], params)
    return cur.rowcount > 0
