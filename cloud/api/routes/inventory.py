"""``/gateways`` and ``/devices``: what is installed in the communities a key reaches.

Read-only: gateways and devices are registered by installers (``anju provision``,
``anju device add``). A device belongs to its gateway's community, and a key sees the
gateways and devices of the communities of its subtree only; one outside it is
answered 404, exactly like one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Literal, cast

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict

from cloud import inventory
from cloud.api.deps import ConnectionDep
from cloud.api.pagination import CursorQuery, Page, decode, id_page
from cloud.api.params import IdentifierPath, IdentifierQuery, Limit
from cloud.api.problems import problem_response
from cloud.api.scoping import CommunityQuery, TierQuery, scope_within
from cloud.api.security import allowed
from cloud.auth.principal import Principal
from cloud.auth.roles import Permission
from schemas.vocabulary import DeviceKind

GatewayStatus = Literal["active", "revoked"]
DeviceStatus = Literal["active", "disabled"]


class GatewayView(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: str
    community: str
    """The community's path, ``street/community``, as in the gateway's MQTT topics."""
    status: GatewayStatus
    """``revoked`` gateways' batches are refused by ingest."""
    last_seen: datetime | None
    """When ingest last stored a batch of it; null before the first."""
    created_at: datetime
    device_count: int
    """Devices registered behind it, disabled ones included."""


class DeviceView(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: str
    gateway_id: str
    community: str
    """The path of its gateway's community."""
    kind: str
    profile_id: str
    """The device profile it is read with (``anju profile show ID``)."""
    building: str | None
    unit: str | None
    status: DeviceStatus
    """The installer's lifecycle; whether it is alive is ``last_seen``."""
    last_seen: datetime | None
    created_at: datetime
    updated_at: datetime


router = APIRouter(tags=["inventory"])

Reader = Annotated[Principal, allowed(Permission.DEVICES_READ)]
_NODE_NOT_FOUND = problem_response("No node at `community` in reach")


@router.get(
    "/gateways",
    response_model=Page[GatewayView],
    responses={HTTPStatus.NOT_FOUND.value: _NODE_NOT_FOUND},
)
async def list_gateways(
    conn: ConnectionDep,
    principal: Reader,
    community: CommunityQuery = None,
    tier: TierQuery = None,
    status: GatewayStatus | None = None,
    limit: Limit = 100,
    cursor: CursorQuery = None,
) -> Page[GatewayView]:
    """Gateways of the communities the key reaches (of ``community``'s subtree when
    given), by id."""
    after = decode(cursor, str)
    scope = await scope_within(conn, principal, community, tier)
    found = await inventory.list_gateways(
        conn,
        scope=scope,
        status=status,
        after=None if after is None else cast(str, after[0]),
        limit=limit + 1,
    )
    items = [GatewayView.model_validate(gateway) for gateway in found]
    return id_page(items, limit)


@router.get(
    "/gateways/{gateway_id}",
    response_model=GatewayView,
    responses={HTTPStatus.NOT_FOUND.value: problem_response("No gateway with this id in reach")},
)
async def get_gateway(
    conn: ConnectionDep, principal: Reader, gateway_id: IdentifierPath
) -> GatewayView:
    """One gateway, with how many devices are registered behind it."""
    found = await inventory.get_gateway(conn, gateway_id, scope=principal.scope)
    if found is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no gateway {gateway_id!r}")
    return GatewayView.model_validate(found)


@router.get(
    "/devices",
    response_model=Page[DeviceView],
    responses={HTTPStatus.NOT_FOUND.value: _NODE_NOT_FOUND},
)
async def list_devices(
    conn: ConnectionDep,
    principal: Reader,
    community: CommunityQuery = None,
    tier: TierQuery = None,
    gateway_id: IdentifierQuery | None = None,
    kind: DeviceKind | None = None,
    status: DeviceStatus | None = None,
    limit: Limit = 100,
    cursor: CursorQuery = None,
) -> Page[DeviceView]:
    """Devices behind the gateways the key reaches, by id; the parameters narrow the
    list (a gateway out of reach lists nothing)."""
    after = decode(cursor, str)
    scope = await scope_within(conn, principal, community, tier)
    found = await inventory.list_devices(
        conn,
        scope=scope,
        gateway_id=gateway_id,
        kind=None if kind is None else str(kind),
        status=status,
        after=None if after is None else cast(str, after[0]),
        limit=limit + 1,
    )
    items = [DeviceView.model_validate(device) for device in found]
    return id_page(items, limit)


@router.get(
    "/devices/{device_id}",
    response_model=DeviceView,
    responses={HTTPStatus.NOT_FOUND.value: problem_response("No device with this id in reach")},
)
async def get_device(
    conn: ConnectionDep, principal: Reader, device_id: IdentifierPath
) -> DeviceView:
    """One device: where it is installed, behind which gateway, read with which profile."""
    found = await inventory.get_device(conn, device_id, scope=principal.scope)
    if found is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no device {device_id!r}")
    return DeviceView.model_validate(found)
