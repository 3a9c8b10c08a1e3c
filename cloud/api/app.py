"""``create_app(settings)``: the FastAPI application of the cloud tier.

The connection pool is opened by the lifespan and closed with it, so building the app
connects to nothing; storage failures become 503 (transient) or 500 responses with a
short JSON ``detail`` instead of a traceback.

``/docs`` (Swagger UI) and ``/redoc`` load their scripts, styles and icon from the app
itself (``fastapi_offline`` ships them) rather than from a CDN, so they render where the
API is reached without internet access; CDN-loaded pages stay blank there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from cloud.api.routes import health, incidents, index, queue, readings, webhooks
from cloud.errors import StorageError, StorageUnavailable
from cloud.rules.config import load_rules
from cloud.settings import CloudSettings
from cloud.storage.pool import open_pool

log = logging.getLogger(__name__)


def create_app(settings: CloudSettings, *, pool_size: int = 8) -> FastAPI:
    """The API for ``settings.database_url``; its pool lives as long as its lifespan.

    Webhook filters are checked against the incident types of the rules ingest runs
    with (``load_rules``: ``ANJU_RULES_FILE`` or the packaged file); raises RulesError
    when those cannot be read.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_pool(settings.database_url, name="api", max_size=pool_size) as pool:
            app.state.pool = pool
            yield

    app = FastAPIOffline(title="Anju cloud", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.filter_vocabulary = webhooks.filter_vocabulary(load_rules())
    app.include_router(index.router)
    app.include_router(health.router)
    app.include_router(incidents.router)
    app.include_router(queue.router)
    app.include_router(readings.router)
    app.include_router(webhooks.router)
    app.add_exception_handler(StorageError, _storage_error)
    return app


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s failed: %s", request.method, request.url.path, exc)
    query = exc.query if isinstance(exc, StorageError) else None
    if isinstance(exc, StorageUnavailable):
        return JSONResponse(
            {"detail": "database unavailable", "query": query},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return JSONResponse(
        {"detail": "database error", "query": query},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
