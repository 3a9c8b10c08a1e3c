"""Gateways, devices and the events they reported, as the API reads them.

Each installed thing belongs to a community through its gateway: a device's community
is its gateway's, and so is an event's (the gateway that reported it). Every function
takes the caller's ``scope`` (community-node ids, None for the whole tree) and reads
nothing outside it; something outside the scope is answered exactly like something
missing, so its existence is not disclosed.

Writes (registering, provisioning) are ``cloud.registry``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from psycopg import AsyncConnection
from psycopg.rows import class_row

from cloud.storage.database import storage_errors
from cloud.storage.sql import queries

Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    id: str
    community: str
    """The community's path, ``street/community``."""
    status: str
    last_seen: datetime | None
    created_at: datetime
    device_count: int
    auth: str
    credentials_issued_at: datetime | None
    config_version: int
    config_applied: int


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    id: str
    gateway_id: str
    community: str
    kind: str
    profile_id: str
    building: str | None
    unit: str | None
    status: str
    last_seen: datetime | None
    created_at: datetime
    updated_at: datetime
    address: str | None
    egress: bool
    poll_interval_s: float | None
    resident_id: int | None


@dataclass(frozen=True, slots=True)
class GatewayConfigRecord:
    """The device config the cloud wants a gateway to run and what it reported."""

    gateway: str
    version: int
    """The wanted version; 0 while the registry never managed its devices."""
    applied_version: int
    applied_at: datetime | None
    pushed_at: datetime | None
    error: str | None
    """Why the gateway refused the version it was last sent, if it did."""
    document: dict[str, Any] | None
    """The wanted version's ``GatewayConfigDocument`` as JSON; None for version 0."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    ts: datetime
    """When it happened, by the device's or the gateway's clock."""
    received_at: datetime
    device_id: str
    gateway_id: str
    community: str
    seq: int
    type: str
    severity: str
    data: dict[str, Any]


async def list_gateways(
    conn: AsyncConnection[Any],
    *,
    scope: list[int] | None,
    status: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[GatewayRecord]:
    """Gateways in ``scope`` (of ``status`` when given) by id, after ``after``."""
    params = {"scope": scope, "status": status, "after": after, "limit": limit}
    return await _rows(conn, GatewayRecord, "inventory_gateway_list", params)


async def get_gateway(
    conn: AsyncConnection[Any], gateway_id: str, *, scope: list[int] | None
) -> GatewayRecord | None:
    """The gateway ``gateway_id``, or None when there is none in ``scope``."""
    found = await _rows(
        conn, GatewayRecord, "inventory_gateway_get", {"id": gateway_id, "scope": scope}
    )
    return found[0] if found else None


async def get_gateway_config(
    conn: AsyncConnection[Any], gateway_id: str, *, scope: list[int] | None
) -> GatewayConfigRecord | None:
    """The config state of ``gateway_id``, or None when there is no such gateway in ``scope``."""
    found = await _rows(
        conn, GatewayConfigRecord, "inventory_gateway_config", {"id": gateway_id, "scope": scope}
    )
    return found[0] if found else None


async def list_devices(
    conn: AsyncConnection[Any],
    *,
    scope: list[int] | None,
    gateway_id: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[DeviceRecord]:
    """Devices behind the gateways of ``scope``, narrowed by the filters given, by id
    after ``after``."""
    params = {
        "scope": scope,
        "gateway": gateway_id,
        "kind": kind,
        "status": status,
        "after": after,
        "limit": limit,
    }
    return await _rows(conn, DeviceRecord, "inventory_device_list", params)


async def get_device(
    conn: AsyncConnection[Any], device_id: str, *, scope: list[int] | None
) -> DeviceRecord | None:
    """The device ``device_id``, or None when there is none in ``scope``."""
    found = await _rows(
        conn, DeviceRecord, "inventory_device_get", {"id": device_id, "scope": scope}
    )
    return found[0] if found else None


async def list_events(
    conn: AsyncConnection[Any],
    *,
    scope: list[int] | None,
    device_id: str | None = None,
    gateway_id: str | None = None,
    event_type: str | None = None,
    severity: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    before: tuple[datetime, int] | None = None,
    limit: int = 100,
) -> list[EventRecord]:
    """Events reported by the gateways of ``scope`` in ``[start, end)``, narrowed by the
    filters given, newest first (by ``ts``, then id), older than ``before``.

    Over the whole tree the newest events are read off the time index; within a scope,
    the newest of each of its gateways are merged, so a quiet community's page costs
    its own gateways' events, not a walk through every other community's.
    """
    params = {
        "scope": scope,
        "device": device_id,
        "gateway": gateway_id,
        "type": event_type,
        "severity": severity,
        "start": start,
        "end": end,
        "after_ts": None if before is None else before[0],
        "after_id": None if before is None else before[1],
        "limit": limit,
    }
    query = "inventory_event_list" if scope is None else "inventory_event_list_scoped"
    return await _rows(conn, EventRecord, query, params)


async def get_event(
    conn: AsyncConnection[Any], event_id: int, *, scope: list[int] | None
) -> EventRecord | None:
    """The event ``event_id``, or None when there is none in ``scope``."""
    found = await _rows(conn, EventRecord, "inventory_event_get", {"id": event_id, "scope": scope})
    return found[0] if found else None


async def incident_events(
    conn: AsyncConnection[Any], incident_id: int, *, scope: list[int] | None, limit: int
) -> list[EventRecord]:
    """The first ``limit`` events that opened and joined ``incident_id``, oldest first;
    none when the incident is not in ``scope``."""
    params = {"id": incident_id, "scope": scope, "limit": limit}
    return await _rows(conn, EventRecord, "inventory_incident_events", params)


async def _rows(
    conn: AsyncConnection[Any], kind: type[Row], query: str, params: dict[str, Any]
) -> list[Row]:
    with storage_errors(query):
        cur = conn.cursor(row_factory=class_row(kind))
        await cur.execute(queries()[query], params)
        return await cur.fetchall()
