"""``GET /incidents`` (the dispatch queue, or incidents by status, with filters) and
``GET /incidents/{id}`` (with its log and notes), within the key's scope."""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import BaseModel

from cloud.api.deps import ConnectionDep
from cloud.api.models import IncidentDetail, IncidentLogEntry, IncidentNote, IncidentSummary
from cloud.api.pagination import CursorQuery, Page, decode, page
from cloud.api.params import IdentifierQuery, IdPath, Instant, Limit
from cloud.api.problems import problem_response
from cloud.api.routes.events import EventView
from cloud.api.scoping import CommunityQuery, TierQuery, scope_within
from cloud.api.security import allowed
from cloud.auth.principal import Principal
from cloud.auth.roles import Permission
from cloud.incidents import Priority
from cloud.inventory import incident_events
from cloud.queue.states import IncidentStatus
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries

router = APIRouter(prefix="/incidents", tags=["incidents"])

Reader = Annotated[Principal, allowed(Permission.INCIDENTS_READ)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    HTTPStatus.NOT_FOUND.value: problem_response("No incident with this id in reach")
}


@router.get(
    "",
    response_model=Page[IncidentSummary],
    responses={HTTPStatus.NOT_FOUND.value: problem_response("No such node in reach")},
)
async def list_incidents(
    conn: ConnectionDep,
    principal: Reader,
    status_filter: Annotated[IncidentStatus | None, Query(alias="status")] = None,
    priority: Priority | None = None,
    incident_type: Annotated[str | None, Query(alias="type", pattern=r"^[a-z0-9_.]{1,64}$")] = None,
    device_id: IdentifierQuery | None = None,
    claimed_by: Annotated[
        str | None, Query(min_length=1, max_length=100, pattern=r"^[^\x00]*$")
    ] = None,
    community: CommunityQuery = None,
    tier: TierQuery = None,
    opened_from: Instant | None = None,
    opened_to: Instant | None = None,
    limit: Limit = 100,
    cursor: CursorQuery = None,
) -> Page[IncidentSummary]:
    """Without ``status``: the dispatch queue, active incidents (neither resolved nor a
    false alarm), most urgent (priority 1) first, then the longest waiting. With
    ``status``: incidents of that status, resolved ones included, in the same order.
    The other parameters narrow either list; ``opened_from``/``opened_to`` bound when
    incidents opened (``[from, to)``)."""
    after = decode(cursor, int, datetime, int)
    scope = await scope_within(conn, principal, community, tier)
    name = "list_queue" if status_filter is None else "list_incidents"
    with storage_errors(name):
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            queries()[name],
            {
                "scope": scope,
                "status": None if status_filter is None else str(status_filter),
                "priority": None if priority is None else int(priority),
                "type": incident_type,
                "device": device_id,
                "claimed_by": claimed_by,
                "opened_from": opened_from,
                "opened_to": opened_to,
                "after_priority": None if after is None else after[0],
                "after_opened": None if after is None else after[1],
                "after_id": None if after is None else after[2],
                "limit": limit + 1,
            },
        )
        rows = await cur.fetchall()
    items = [IncidentSummary.model_validate(row) for row in rows]
    return page(items, limit, lambda incident: (incident.priority, incident.opened_at, incident.id))


@router.get("/{incident_id}", response_model=IncidentDetail, responses=NOT_FOUND)
async def get_incident(
    conn: ConnectionDep, principal: Reader, incident_id: IdPath
) -> IncidentDetail:
    """One incident with every state change it went through and its notes, oldest first."""
    incident = await read_incident(conn, incident_id, scope=principal.scope)
    if incident is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no incident {incident_id}")
    return incident


class IncidentEvents(BaseModel):
    items: list[EventView]


INCIDENT_EVENTS_LIMIT: Final = 100


@router.get("/{incident_id}/events", response_model=IncidentEvents, responses=NOT_FOUND)
async def get_incident_events(
    conn: ConnectionDep,
    principal: Annotated[Principal, allowed(Permission.EVENTS_READ)],
    incident_id: IdPath,
) -> IncidentEvents:
    """The events that opened and joined the incident, oldest first (the first 100):
    what the console marks on its chart, and whose gateway it asks for context."""
    with storage_errors("incident_in_scope"):
        cur = await conn.execute(
            queries()["incident_in_scope"], {"id": incident_id, "scope": principal.scope}
        )
        row = await cur.fetchone()
    if not (row and row[0]):
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no incident {incident_id}")
    found = await incident_events(
        conn, incident_id, scope=principal.scope, limit=INCIDENT_EVENTS_LIMIT
    )
    return IncidentEvents(items=[EventView.model_validate(event) for event in found])


async def read_incident(
    conn: AsyncConnection[Any], incident_id: int, *, scope: list[int] | None
) -> IncidentDetail | None:
    """The incident with its log and notes, or None when there is none in ``scope``.

    The three queries are sent together (pipeline mode), one round trip: the log and
    notes of an incident out of scope are read for nothing, and never shown.
    """
    sql = queries()
    with storage_errors("get_incident"):
        async with conn.pipeline():
            incident = conn.cursor(row_factory=dict_row)
            entries = conn.cursor(row_factory=dict_row)
            written = conn.cursor(row_factory=dict_row)
            await incident.execute(sql["get_incident"], {"id": incident_id, "scope": scope})
            await entries.execute(sql["incident_log"], {"id": incident_id})
            await written.execute(sql["incident_notes"], {"id": incident_id})
            row = await incident.fetchone()
            log = [IncidentLogEntry.model_validate(entry) for entry in await entries.fetchall()]
            notes = [IncidentNote.model_validate(note) for note in await written.fetchall()]
    if row is None:
        return None
    return IncidentDetail.model_validate({**row, "log": log, "notes": notes})
