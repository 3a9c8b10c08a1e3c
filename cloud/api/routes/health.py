"""``GET /health``: whether the API can reach its database, and the server's clock.

``time`` lets a gateway's installer compare clocks (``anju provision check``): readings
and events carry the gateway's timestamps.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response, status

from cloud.api.deps import PoolDep
from cloud.api.models import Health
from cloud.errors import StorageError
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries

router = APIRouter(tags=["health"])

_TIMEOUT_S = 3.0


@router.get("/health", response_model=Health)
async def health(pool: PoolDep, response: Response) -> Health:
    """200 when a database round trip succeeds within a few seconds, else 503 with why."""
    try:
        with storage_errors("ping"):
            async with pool.connection(timeout=_TIMEOUT_S) as conn:
                await conn.execute(queries()["ping"])
    except StorageError as exc:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status="unavailable", database="unavailable", detail=str(exc), time=_now())
    return Health(status="ok", database="ok", time=_now())


def _now() -> datetime:
    """UTC now at millisecond precision, as the wire's timestamps are."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
