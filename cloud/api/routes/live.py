"""``GET /incidents/live``: the key's incidents as they open and change, as
server-sent events, for the dispatcher console (``cloud/console``).

The stream holds no database connection: the key is checked when it opens (the
request's pooled connection goes back before the first byte), and changes come from
the process's one ``IncidentFeed``. It ends after ``lifetime_s``, so a revoked key
stops hearing within that time and the client's reconnection checks the key again.

Messages (docs/console.md): ``hello`` first on every connection, after which the
client reloads the queue (its catch-up after any gap); ``incident`` with an
``IncidentSummary`` for each change in the key's scope, closed ones included;
``resync`` when changes may have been missed; a ``: keepalive`` comment every 15 s so
proxies and the client can tell a quiet stream from a dead one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Final, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from cloud.api.live import IncidentFeed, Signal
from cloud.api.models import IncidentSummary
from cloud.api.security import allowed
from cloud.auth.principal import Principal
from cloud.auth.roles import Permission

router = APIRouter(prefix="/incidents", tags=["incidents"])

KEEPALIVE_S: Final = 15.0
MAX_LIFETIME_S: Final = 300
"""The key is checked when a stream opens, so this bounds how long a revoked key hears."""
EVENT_STREAM: Final = "text/event-stream"


@router.get(
    "/live",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-sent events: hello, then incident and resync messages",
            "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
        }
    },
)
async def live_incidents(
    request: Request,
    principal: Annotated[Principal, allowed(Permission.INCIDENTS_READ)],
    lifetime_s: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_LIFETIME_S,
            description="Seconds until the server ends the stream (the client reconnects)",
        ),
    ] = 300,
) -> StreamingResponse:
    """The incidents of the key's scope as they open and change, from now on."""
    feed = cast(IncidentFeed, request.app.state.incident_feed)
    return StreamingResponse(
        _messages(feed, principal.scope, lifetime_s),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _messages(
    feed: IncidentFeed, scope: list[int] | None, lifetime_s: int
) -> AsyncIterator[str]:
    ends = time.monotonic() + lifetime_s
    async with feed.subscribe(scope) as subscription:
        yield _message("hello", json.dumps({"server_time": datetime.now(UTC).isoformat()}))
        while (left := ends - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(min(KEEPALIVE_S, left)):
                    item = await subscription.next()
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if item is Signal.CLOSED:
                return
            if item is Signal.RESYNC:
                yield _message("resync", "{}")
            elif isinstance(item, IncidentSummary):
                yield _message("incident", item.model_dump_json())


def _message(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"
