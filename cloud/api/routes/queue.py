"""The emergency queue's actions: ``POST /incidents/{id}/claim``, ``/acknowledge``,
``/dispatch``, ``/resolve`` and ``/notes``.

Each answers 200 with the incident as it now is (log and notes included), 404 when
there is no such incident, and 409 with the reason in ``detail`` when the action is
refused: the claim was lost, the incident is not in a status that allows it, or the
actor is not the dispatcher who claimed it. There is no authentication yet: the body
names the dispatcher (``actor``); API keys with roles and scopes come later.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, HTTPException, Request, status
from psycopg import AsyncConnection

from cloud.api.deps import ConnectionDep
from cloud.api.models import (
    AcknowledgeRequest,
    ClaimRequest,
    DispatchRequest,
    IncidentDetail,
    NoteRequest,
    ResolveRequest,
)
from cloud.api.routes.incidents import read_incident
from cloud.queue import transitions
from cloud.queue.errors import IncidentNotFound, TransitionRefused
from cloud.settings import CloudSettings, QueueSettings

router = APIRouter(prefix="/incidents", tags=["emergency queue"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "No incident with this id"},
    status.HTTP_409_CONFLICT: {
        "description": "Refused in the incident's current status, or not the claimant's"
    },
}


def get_queue_settings(request: Request) -> QueueSettings:
    """The escalation limits of the app's settings (they time the claim's timer)."""
    return cast(CloudSettings, request.app.state.settings).queue


QueueSettingsDep = Annotated[QueueSettings, Depends(get_queue_settings)]


@router.post("/{incident_id}/claim", response_model=IncidentDetail, responses=_RESPONSES)
async def claim(
    conn: ConnectionDep, settings: QueueSettingsDep, incident_id: int, body: ClaimRequest
) -> IncidentDetail:
    """Take an open incident; of dispatchers claiming at once, exactly one gets 200."""
    with _refusals():
        await transitions.claim(conn, incident_id, actor=body.actor, settings=settings)
    return await _current(conn, incident_id)


@router.post("/{incident_id}/acknowledge", response_model=IncidentDetail, responses=_RESPONSES)
async def acknowledge(
    conn: ConnectionDep, incident_id: int, body: AcknowledgeRequest
) -> IncidentDetail:
    """The claimant is in contact with the resident; the incident stops escalating."""
    with _refusals():
        await transitions.acknowledge(conn, incident_id, actor=body.actor, note=body.note)
    return await _current(conn, incident_id)


@router.post("/{incident_id}/dispatch", response_model=IncidentDetail, responses=_RESPONSES)
async def dispatch(conn: ConnectionDep, incident_id: int, body: DispatchRequest) -> IncidentDetail:
    """The claimant sent someone (``dispatched_to``) to the resident."""
    with _refusals():
        await transitions.dispatch(
            conn, incident_id, actor=body.actor, dispatched_to=body.dispatched_to, note=body.note
        )
    return await _current(conn, incident_id)


@router.post("/{incident_id}/resolve", response_model=IncidentDetail, responses=_RESPONSES)
async def resolve(conn: ConnectionDep, incident_id: int, body: ResolveRequest) -> IncidentDetail:
    """Close the incident: outcome ``handled`` or ``hospital`` (status ``resolved``) or
    ``false_alarm`` (status ``false_alarm``)."""
    with _refusals():
        await transitions.resolve(
            conn, incident_id, actor=body.actor, outcome=body.outcome, notes=body.notes
        )
    return await _current(conn, incident_id)


@router.post(
    "/{incident_id}/notes",
    response_model=IncidentDetail,
    responses={status.HTTP_404_NOT_FOUND: _RESPONSES[status.HTTP_404_NOT_FOUND]},
)
async def add_note(conn: ConnectionDep, incident_id: int, body: NoteRequest) -> IncidentDetail:
    """Add a note to the incident, in any status; notes are never sent in webhooks."""
    with _refusals():
        await transitions.add_note(conn, incident_id, author=body.actor, text=body.text)
    return await _current(conn, incident_id)


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except IncidentNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, exc.message) from None
    except TransitionRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, exc.message) from None


async def _current(conn: AsyncConnection[Any], incident_id: int) -> IncidentDetail:
    incident = await read_incident(conn, incident_id)
    if incident is None:  # incidents are never deleted, so this is a broken invariant
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no incident {incident_id}")
    return incident
