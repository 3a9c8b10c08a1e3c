"""``GET /events`` and ``GET /events/{id}``: events as devices and gateways reported
them, within the key's scope.

An event belongs to the community of the gateway that reported it. Events are kept
as reported (``data`` as the device sent it); the incidents rules opened from them are
``/incidents``.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict

from cloud import inventory
from cloud.api.deps import ConnectionDep
from cloud.api.pagination import CursorQuery, Page, decode, page
from cloud.api.params import IdentifierQuery, IdPath, Instant, Limit
from cloud.api.problems import problem_response
from cloud.api.scoping import CommunityQuery, TierQuery, scope_within
from cloud.api.security import allowed
from cloud.auth.principal import Principal
from cloud.auth.roles import Permission
from schemas.vocabulary import EventType, Severity


class EventView(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    ts: datetime
    """When it happened, by the device's (or its gateway's) clock."""
    received_at: datetime
    """When the cloud stored it."""
    device_id: str
    gateway_id: str
    community: str
    """The path of the reporting gateway's community."""
    seq: int
    """The gateway's sequence number of the batch that carried it."""
    type: str
    severity: Severity
    data: dict[str, Any]


router = APIRouter(prefix="/events", tags=["events"])

Reader = Annotated[Principal, allowed(Permission.EVENTS_READ)]


@router.get(
    "",
    response_model=Page[EventView],
    responses={
        HTTPStatus.NOT_FOUND.value: problem_response("No node at `community` in reach"),
        HTTPStatus.UNPROCESSABLE_ENTITY.value: problem_response(
            "A malformed parameter, or `to` not after `from`"
        ),
    },
)
async def list_events(
    conn: ConnectionDep,
    principal: Reader,
    community: CommunityQuery = None,
    tier: TierQuery = None,
    device_id: IdentifierQuery | None = None,
    gateway_id: IdentifierQuery | None = None,
    event_type: Annotated[EventType | None, Query(alias="type")] = None,
    severity: Severity | None = None,
    start: Annotated[
        Instant | None, Query(alias="from", description="Events at or after this instant")
    ] = None,
    end: Annotated[
        Instant | None, Query(alias="to", description="Events before this instant")
    ] = None,
    limit: Limit = 100,
    cursor: CursorQuery = None,
) -> Page[EventView]:
    """Events reported in the communities the key reaches, newest first (by ``ts``,
    then id); the parameters narrow the list, ``from``/``to`` to ``[from, to)``.

    Paging backwards in time is stable while new events arrive: they sort before the
    first page, never into a later one.
    """
    if start is not None and end is not None and end <= start:
        raise HTTPException(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})",
        )
    before = decode(cursor, datetime, int)
    scope = await scope_within(conn, principal, community, tier)
    found = await inventory.list_events(
        conn,
        scope=scope,
        device_id=device_id,
        gateway_id=gateway_id,
        event_type=None if event_type is None else str(event_type),
        severity=None if severity is None else str(severity),
        start=start,
        end=end,
        before=cast("tuple[datetime, int] | None", before),  # decode() gives these types
        limit=limit + 1,
    )
    items = [EventView.model_validate(event) for event in found]
    return page(items, limit, lambda event: (event.ts, event.id))


@router.get(
    "/{event_id}",
    response_model=EventView,
    responses={HTTPStatus.NOT_FOUND.value: problem_response("No event with this id in reach")},
)
async def get_event(conn: ConnectionDep, principal: Reader, event_id: IdPath) -> EventView:
    """One event as it was reported."""
    found = await inventory.get_event(conn, event_id, scope=principal.scope)
    if found is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no event {event_id}")
    return EventView.model_validate(found)
