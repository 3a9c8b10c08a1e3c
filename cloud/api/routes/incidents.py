"""``GET /incidents`` (the dispatch queue) and ``GET /incidents/{id}`` (with its log)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from cloud.api.deps import ConnectionDep
from cloud.api.models import IncidentDetail, IncidentLogEntry, IncidentNote, IncidentSummary
from cloud.queue.states import IncidentStatus
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries

router = APIRouter(prefix="/incidents", tags=["incidents"])


@router.get("", response_model=list[IncidentSummary])
async def list_incidents(
    conn: ConnectionDep,
    status_filter: Annotated[IncidentStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[IncidentSummary]:
    """The dispatch queue: active incidents (neither resolved nor a false alarm), most
    urgent (priority 1) first, then the longest waiting. With ``status``, incidents of
    that status (resolved ones included) in the same order."""
    name = "list_queue" if status_filter is None else "list_incidents"
    with storage_errors(name):
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            queries()[name],
            {"status": None if status_filter is None else str(status_filter), "limit": limit},
        )
        rows = await cur.fetchall()
    return [IncidentSummary.model_validate(row) for row in rows]


@router.get(
    "/{incident_id}",
    response_model=IncidentDetail,
    responses={status.HTTP_404_NOT_FOUND: {"description": "No incident with this id"}},
)
async def get_incident(conn: ConnectionDep, incident_id: int) -> IncidentDetail:
    """One incident with every state change it went through and its notes, oldest first."""
    incident = await read_incident(conn, incident_id)
    if incident is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no incident {incident_id}")
    return incident


async def read_incident(conn: AsyncConnection[Any], incident_id: int) -> IncidentDetail | None:
    """The incident with its log and notes, or None when there is no such incident."""
    with storage_errors("get_incident"):
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(queries()["get_incident"], {"id": incident_id})
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(queries()["incident_log"], {"id": incident_id})
        log = [IncidentLogEntry.model_validate(entry) for entry in await cur.fetchall()]
        await cur.execute(queries()["incident_notes"], {"id": incident_id})
        notes = [IncidentNote.model_validate(note) for note in await cur.fetchall()]
    return IncidentDetail.model_validate({**row, "log": log, "notes": notes})
