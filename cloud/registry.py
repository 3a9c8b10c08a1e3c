"""Communities, gateways and devices as installers register them.

These back ``anju provision`` and ``anju device add``; the demo and the tests call them
directly. Every function runs in a transaction of its own (a savepoint when the caller
already holds one) and is idempotent: registering what is already registered returns
the existing row, while a registration that contradicts it (a gateway under another
community, a device behind another gateway) raises ``RegistryError`` instead of
silently moving it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.errors import ForeignKeyViolation
from psycopg.rows import class_row

from cloud.errors import RegistryError
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries
from schemas.vocabulary import DeviceKind
from schemas.wire import IDENTIFIER_PATTERN, NODE_NAME_PATTERN

DEFAULT_CITY: Final = "ningguo"

# The forms of the wire, checked here so a bad registration fails with a RegistryError
# rather than a database constraint message.
_NODE_NAME: Final = re.compile(NODE_NAME_PATTERN)
_IDENTIFIER: Final = re.compile(IDENTIFIER_PATTERN)
_TEXT_LIMIT: Final = 64
_DEVICE_RESIDENT_FKEY: Final = "devices_resident_fkey"


class Tier(StrEnum):
    """The plan's three tiers of the community tree."""

    CITY = "city"
    STREET = "street"
    COMMUNITY = "community"


@dataclass(frozen=True, slots=True)
class Community:
    """A node of the tree; for tier ``community`` the path is ``street/community``."""

    id: int
    parent_id: int | None
    tier: str
    name: str
    path: str
    status: str
    """``active``, or ``retired``: a retired node takes no new gateways (``cloud.tree``)."""


@dataclass(frozen=True, slots=True)
class Gateway:
    id: str
    community_id: int
    status: str


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    gateway_id: str
    kind: str
    profile_id: str
    building: str | None
    unit: str | None
    status: str
    resident_id: int | None = None
    """The resident a personal device (a wearable) belongs to; its incidents are theirs."""


def _check(pattern: re.Pattern[str], value: str, *, entity: str, form: str) -> None:
    if not pattern.match(value):
        raise RegistryError(f"expected {form}", entity=entity, key=value)


async def register_community(
    conn: AsyncConnection[Any], path: str, *, city: str = DEFAULT_CITY
) -> Community:
    """Register the community ``street/community``, creating its city and street nodes.

    Returns the community node. Raises RegistryError for a malformed path or city
    name, when the street is already registered under another city, or when a node on
    the way is retired.
    """
    name_form = "lower-case letters, digits and '-' (at most 32)"
    _check(_NODE_NAME, city, entity="city", form=name_form)
    street, _, name = path.partition("/")
    for part in (street, name):
        _check(_NODE_NAME, part, entity="community", form=f"street/community, each {name_form}")
    nodes = ((Tier.CITY, city, city), (Tier.STREET, street, street), (Tier.COMMUNITY, name, path))
    parent: int | None = None
    node: Community | None = None
    async with conn.transaction():
        for tier, node_name, node_path in nodes:
            with storage_errors("upsert_community_node"):
                cur = conn.cursor(row_factory=class_row(Community))
                await cur.execute(
                    queries()["upsert_community_node"],
                    {"parent_id": parent, "tier": tier, "name": node_name, "path": node_path},
                )
                node = await cur.fetchone()
            if node is None or node.parent_id != parent:
                raise RegistryError(
                    "already registered under another parent", entity=str(tier), key=node_path
                )
            if node.status != "active":
                raise RegistryError(
                    "is retired; it takes nothing new", entity=str(tier), key=node_path
                )
            parent = node.id
    if node is None:
        raise RegistryError("was not created", entity="community", key=path)
    return node


async def find_community(conn: AsyncConnection[Any], path: str) -> Community | None:
    """The community node with ``path`` (``street/community``), or None."""
    with storage_errors("community_by_path"):
        cur = conn.cursor(row_factory=class_row(Community))
        await cur.execute(queries()["community_by_path"], {"path": path})
        return await cur.fetchone()


async def register_gateway(
    conn: AsyncConnection[Any], gateway_id: str, community_path: str
) -> Gateway:
    """Register gateway ``gateway_id`` under the community ``community_path``.

    The community must be registered first and active. Raises RegistryError for a
    malformed id, an unknown or retired community, or a gateway already registered
    under another community.
    """
    _check(_IDENTIFIER, gateway_id, entity="gateway", form="a lower-case identifier")
    async with conn.transaction():
        community = await find_community(conn, community_path)
        if community is None:
            raise RegistryError(
                "unknown community; register it first", entity="community", key=community_path
            )
        if community.status != "active":
            raise RegistryError(
                "is retired and takes no new gateways", entity="community", key=community_path
            )
        with storage_errors("upsert_gateway"):
            cur = conn.cursor(row_factory=class_row(Gateway))
            await cur.execute(
                queries()["upsert_gateway"], {"id": gateway_id, "community_id": community.id}
            )
            gateway = await cur.fetchone()
    if gateway is None or gateway.community_id != community.id:
        raise RegistryError(
            f"already registered under another community, not {community_path}",
            entity="gateway",
            key=gateway_id,
        )
    return gateway


async def register_device(
    conn: AsyncConnection[Any],
    device_id: str,
    *,
    gateway_id: str,
    kind: DeviceKind,
    profile_id: str,
    building: str | None = None,
    unit: str | None = None,
    resident_id: int | None = None,
) -> Device:
    """Register a device behind ``gateway_id``, or update the description of one that is.

    Device ids are unique across the city (they key readings and events).
    ``resident_id`` binds a personal device (a wearable) to the resident wearing it, so
    the dispatcher holding its incident may see whose it is; re-registering without it
    unbinds the device, as it clears an omitted building or unit. Raises RegistryError
    for a malformed id, an unknown gateway or resident, or a device already registered
    behind another gateway.
    """
    _check(_IDENTIFIER, device_id, entity="device", form="a lower-case identifier")
    for label, text in (("building", building), ("unit", unit), ("profile", profile_id)):
        if text is not None and not 0 < len(text) <= _TEXT_LIMIT:
            raise RegistryError(
                f"{label} must be 1-{_TEXT_LIMIT} characters", entity="device", key=device_id
            )
    params = {
        "id": device_id,
        "gateway_id": gateway_id,
        "kind": str(kind),
        "profile_id": profile_id,
        "building": building,
        "unit": unit,
        "resident_id": resident_id,
    }
    async with conn.transaction():
        with storage_errors("upsert_device"):
            cur = conn.cursor(row_factory=class_row(Device))
            try:
                await cur.execute(queries()["upsert_device"], params)
            except ForeignKeyViolation as exc:
                if exc.diag.constraint_name == _DEVICE_RESIDENT_FKEY:
                    raise RegistryError(
                        "unknown resident", entity="resident", key=str(resident_id)
                    ) from None
                raise RegistryError(
                    "unknown gateway; register it first", entity="gateway", key=gateway_id
                ) from None
            device = await cur.fetchone()
    if device is None:
        raise RegistryError(
            f"already registered behind another gateway, not {gateway_id}",
            entity="device",
            key=device_id,
        )
    return device
