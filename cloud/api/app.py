"""``create_app(settings)``: the FastAPI application of the cloud tier.

The connection pool is opened by the lifespan and closed with it, so building the app
connects to nothing. Every error is answered as RFC 9457 problem details
(``cloud.api.problems``): storage failures become 503 (transient) or 500 with a short
``detail`` instead of a traceback. Every route but ``/``, ``/health`` and the docs
needs an API key (``cloud.api.security``), and the dispatcher console's files under
``/console/``, whose page asks for one.

The lifespan also runs the process's incident feed (``cloud.api.live``), the source
of ``GET /incidents/live``; ``close_streams`` ends those streams so a shutting-down
server is not held open by them.

``/docs`` (Swagger UI) and ``/redoc`` load their scripts, styles and icon from the app
itself (``fastapi_offline`` ships them) rather than from a CDN, so they render where the
API is reached without internet access; CDN-loaded pages stay blank there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from cloud.api import problems
from cloud.api.live import IncidentFeed
from cloud.api.routes import (
    console,
    events,
    health,
    incidents,
    index,
    inventory,
    keys,
    live,
    metrics,
    provisioning,
    queue,
    readings,
    residents,
    tree,
    webhooks,
)
from cloud.api.security import FailureLimiter
from cloud.configs.worker import ConfigCounters
from cloud.metrics import IngestView
from cloud.residents.crypto import Keyring
from cloud.rules.config import load_rules
from cloud.settings import CloudSettings
from cloud.storage.pool import open_pool
from cloud.webhooks.delivery import DeliveryCounters
from schemas.profile import load_profiles


def create_app(
    settings: CloudSettings,
    *,
    pool_size: int = 8,
    counters: IngestView | None = None,
    deliveries: DeliveryCounters | None = None,
    configs: ConfigCounters | None = None,
) -> FastAPI:
    """The API for ``settings.database_url``; its pool lives as long as its lifespan.

    Webhook filters are checked against the incident types of the rules ingest runs
    with (``load_rules``: ``ANJU_RULES_FILE`` or the packaged file); raises RulesError
    when those cannot be read. Devices are checked against the profiles of
    ``settings.profiles`` (read here once; ProfileError for a bad one). ``counters``,
    ``deliveries`` and ``configs`` are the ingest, webhook delivery and config pusher
    counters of this process, for ``GET /metrics``; None when those do not run here.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_pool(settings.database_url, name="api", max_size=pool_size) as pool,
            IncidentFeed(settings.database_url, pool) as feed,
        ):
            app.state.pool = pool
            app.state.incident_feed = feed
            yield

    app = FastAPIOffline(title="Anju cloud", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.ingest_counters = counters
    app.state.delivery_counters = deliveries
    app.state.config_counters = configs
    app.state.auth_failures = FailureLimiter(
        limit=settings.api.auth_failure_limit, window_s=settings.api.auth_failure_window_s
    )
    app.state.filter_vocabulary = webhooks.filter_vocabulary(load_rules())
    app.state.profiles = load_profiles(settings.profiles.root)
    app.state.keyring = Keyring.from_keys(
        (key.id, key.secret.get_secret_value()) for key in settings.residents.keys
    )
    app.include_router(index.router)
    app.include_router(health.router)
    app.include_router(live.router)
    app.include_router(incidents.router)
    app.include_router(queue.router)
    app.include_router(readings.router)
    app.include_router(webhooks.router)
    app.include_router(metrics.router)
    app.include_router(keys.router)
    app.include_router(tree.router)
    app.include_router(inventory.router)
    app.include_router(provisioning.router)
    app.include_router(events.router)
    app.include_router(residents.router)
    app.mount(console.PATH, console.console_files(), name="console")
    problems.install(app)
    problems.document_problems(app)
    return app


def close_streams(app: FastAPI) -> None:
    """End the app's live streams (and any opened from now on): before the server
    stops, which otherwise waits for every open response to finish."""
    feed = getattr(app.state, "incident_feed", None)
    if isinstance(feed, IncidentFeed):
        feed.close()
