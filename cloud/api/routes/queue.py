"""The emergency queue's actions: ``POST /incidents/{id}/claim``, ``/acknowledge``,
``/dispatch``, ``/resolve`` and ``/notes``.

Each answers 200 with the incident as it now is (log and notes included), 404 when
there is no such incident within the key's scope, and 409 with the reason in
``detail`` when the action is refused: the claim was lost, the incident is not in a
status that allows it, or the caller is not the dispatcher who claimed it. The
dispatcher acting is the holder of the key (its name), never a field of the body.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, HTTPException, Request
from psycopg import AsyncConnection

from cloud.api.deps import ConnectionDep
from cloud.api.models import (
    AcknowledgeRequest,
    DispatchRequest,
    IncidentDetail,
    NoteRequest,
    ResolveRequest,
)
from cloud.api.params import IdPath
from cloud.api.problems import problem_response
from cloud.api.routes.incidents import read_incident
from cloud.api.security import allowed
from cloud.auth.principal import Principal
from cloud.auth.roles import Permission
from cloud.queue import transitions
from cloud.queue.errors import IncidentNotFound, TransitionRefused
from cloud.settings import CloudSettings, QueueSettings
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries

router = APIRouter(prefix="/incidents", tags=["emergency queue"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    HTTPStatus.NOT_FOUND.value: problem_response("No incident with this id in reach")
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    HTTPStatus.CONFLICT.value: problem_response(
        "Refused in the incident's current status, or not the claimant's"
    ),
}

Dispatcher = Annotated[Principal, allowed(Permission.QUEUE_ACT)]


async def get_queue_settings(request: Request) -> QueueSettings:
    """The escalation limits of the app's settings (they time the claim's timer)."""
    return cast(CloudSettings, request.app.state.settings).queue


QueueSettingsDep = Annotated[QueueSettings, Depends(get_queue_settings)]


@router.post("/{incident_id}/claim", response_model=IncidentDetail, responses=_RESPONSES)
async def claim(
    conn: ConnectionDep, principal: Dispatcher, settings: QueueSettingsDep, incident_id: IdPath
) -> IncidentDetail:
    """Take an open incident; of dispatchers claiming at once, exactly one gets 200."""
    await _in_reach(conn, principal, incident_id)
    with _refusals():
        await transitions.claim(conn, incident_id, actor=principal.name, settings=settings)
    return await _current(conn, principal, incident_id)


@router.post("/{incident_id}/acknowledge", response_model=IncidentDetail, responses=_RESPONSES)
async def acknowledge(
    conn: ConnectionDep, principal: Dispatcher, incident_id: IdPath, body: AcknowledgeRequest
) -> IncidentDetail:
    """The claimant is in contact with the resident; the incident stops escalating."""
    await _in_reach(conn, principal, incident_id)
    with _refusals():
        await transitions.acknowledge(conn, incident_id, actor=principal.name, note=body.note)
    return await _current(conn, principal, incident_id)


@router.post("/{incident_id}/dispatch", response_model=IncidentDetail, responses=_RESPONSES)
async def dispatch(
    conn: ConnectionDep, principal: Dispatcher, incident_id: IdPath, body: DispatchRequest
) -> IncidentDetail:
    """The claimant sent someone (``dispatched_to``) to the resident."""
    await _in_reach(conn, principal, incident_id)
    with _refusals():
        await transitions.dispatch(
            conn,
            incident_id,
            actor=principal.name,
            dispatched_to=body.dispatched_to,
            note=body.note,
        )
    return await _current(conn, principal, incident_id)


@router.post("/{incident_id}/resolve", response_model=IncidentDetail, responses=_RESPONSES)
async def resolve(
    conn: ConnectionDep, principal: Dispatcher, incident_id: IdPath, body: ResolveRequest
) -> IncidentDetail:
    """Close the incident: outcome ``handled`` or ``hospital`` (status ``resolved``) or
    ``false_alarm`` (status ``false_alarm``)."""
    await _in_reach(conn, principal, incident_id)
    with _refusals():
        await transitions.resolve(
            conn, incident_id, actor=principal.name, outcome=body.outcome, notes=body.notes
        )
    return await _current(conn, principal, incident_id)


@router.post("/{incident_id}/notes", response_model=IncidentDetail, responses=_NOT_FOUND)
async def add_note(
    conn: ConnectionDep, principal: Dispatcher, incident_id: IdPath, body: NoteRequest
) -> IncidentDetail:
    """Add a note to the incident, in any status; notes are never sent in webhooks."""
    await _in_reach(conn, principal, incident_id)
    with _refusals():
        await transitions.add_note(conn, incident_id, author=principal.name, text=body.text)
    return await _current(conn, principal, incident_id)


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except IncidentNotFound as exc:
        raise HTTPException(HTTPStatus.NOT_FOUND, exc.message) from None
    except TransitionRefused as exc:
        raise HTTPException(HTTPStatus.CONFLICT, exc.message) from None


async def _in_reach(conn: AsyncConnection[Any], principal: Principal, incident_id: int) -> None:
    """404 unless the incident is within the key's scope: checked before any action, so
    an incident out of reach is never touched."""
    with storage_errors("incident_in_scope"):
        cur = await conn.execute(
            queries()["incident_in_scope"], {"id": incident_id, "scope": principal.scope}
        )
        row = await cur.fetchone()
    if not (row and row[0]):
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no incident {incident_id}")


async def _current(
    conn: AsyncConnection[Any], principal: Principal, incident_id: int
) -> IncidentDetail:
    """The incident as it is now, log and notes included."""
    incident = await read_incident(conn, incident_id, scope=principal.scope)
    if incident is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no incident {incident_id}")
    return incident
