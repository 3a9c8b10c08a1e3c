"""``GET /metrics``: the cloud's Prometheus metrics (``cloud.metrics``), in text format 0.0.4.

Needs an admin key over the whole tree, since the figures cover every community.
Prometheus sends it with ``authorization: {credentials_file: …}``; give it a key of
its own, named for it, so it can be revoked alone. The key is checked
against the database, so with the database down the scrape answers 503 and
Prometheus's ``up`` drops to 0; if the database fails after the key was checked, the
answer is still 200, with ``anju_cloud_scrape_database_up`` 0 and the process's metrics
only. Listed in the OpenAPI document with its text/plain body.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from cloud.api.deps import PoolDep
from cloud.api.security import allowed
from cloud.auth.principal import Principal
from cloud.auth.roles import Permission
from cloud.metrics import render

router = APIRouter(tags=["metrics"])

_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "Prometheus text exposition format 0.0.4 (`anju_cloud_*` families).",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


@router.get("/metrics", response_class=Response, responses=_RESPONSES)
async def metrics(
    request: Request,
    pool: PoolDep,
    principal: Annotated[Principal, allowed(Permission.METRICS_READ)],
) -> Response:
    """The metrics of this process (ingest, webhook delivery, config pusher) and of the
    database."""
    if principal.communities is not None:
        raise HTTPException(
            HTTPStatus.FORBIDDEN,
            "metrics count every community: use an admin key over the whole tree",
        )
    state = request.app.state
    body = await render(
        pool,
        ingest=state.ingest_counters,
        deliveries=state.delivery_counters,
        configs=state.config_counters,
    )
    return Response(body, media_type=CONTENT_TYPE_LATEST)
