"""``/gateways`` and ``/devices``: what is installed in the communities a key reaches.

Reads only: installers register gateways and devices through
``cloud.api.routes.provisioning`` (``anju provision``, ``anju device add``). A device
belongs to its gateway's community, and a key sees the gateways and devices of the
communities of its subtree only; one outside it is answered 404, exactly like one that
does not exist.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal, cast

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
    auth: Literal["password", "certificate"]
    """How it authenticates to the broker."""
    credentials_issued_at: datetime | None
    """When its current broker credentials were issued; null before the first."""
    config_version: int
    """The device config version the cloud wants it to run (0: none is pushed)."""
    config_applied: int
    """The version it last reported running."""


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
    address: str | None
    """Where its gateway reaches it (``modbus-tcp://10.0.0.5:502?unit=3``); null for a
    device its gateway's own config file declares, which is never pushed."""
    egress: bool
    """A door on an escape route, released when smoke is detected in its building."""
    poll_interval_s: float | None
    """Its own poll interval; null: its profile's."""
    resident_id: int | None
    """The resident a personal device (a wearable) belongs to."""


class GatewayConfigView(BaseModel):
    """The device config the cloud keeps for a gateway, and what the gateway reported."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    gateway: str
    version: int
    """The version the gateway should run; 0 while its devices were never managed here."""
    applied_version: int
    """The version it reported running."""
    applied_at: datetime | None
    pushed_at: datetime | None
    """When the wanted version was last sent to it."""
    error: str | None
    """Why it refused the version it was last sent; null when it did not."""
    document: dict[str, Any] | None
    """The wanted version as sent (a ``gateway_config`` document, schemas/json); null
    for version 0."""


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
    "/gateways/{gateway_id}/config",
    response_model=GatewayConfigView,
    responses={HTTPStatus.NOT_FOUND.value: problem_response("No gateway with this id in reach")},
)
async def get_gateway_config(
    conn: ConnectionDep, principal: Reader, gateway_id: IdentifierPath
) -> GatewayConfigView:
    """The device config version the gateway should run, the one it runs, and the
    document of the first (what ``anju provision check`` compares against)."""
    found = await inventory.get_gateway_config(conn, gateway_id, scope=principal.scope)
    if found is None:
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no gateway {gateway_id!r}")
    return GatewayConfigView.model_validate(found)


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
