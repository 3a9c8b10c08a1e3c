"""The community tree (city, street, community): read, grown, renamed and retired.

A node is named by its path (``ningguo``, ``xijin``, ``xijin/fenghuang``); a city and
a street may share a name, so a lookup may need the tier too. The path is a
community's identity in MQTT topics and batch headers, which gateways already use, so
it never changes: renaming sets the display name only. A retired node keeps what it
holds but takes no new children (nor gateways, ``cloud.registry``).

Functions that address a node by id take the caller's ``scope`` (node ids, None for
the whole tree) and answer a node outside it exactly like a missing one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import class_row

from cloud.errors import RegistryError
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries
from schemas.wire import NODE_NAME_PATTERN

_NAME: Final = re.compile(NODE_NAME_PATTERN)
"""A node's name, as the ``communities.name`` CHECK of migration 0001 has it."""
_CHILD_TIER: Final[dict[str | None, str]] = {None: "city", "city": "street", "street": "community"}


class NodeNotFound(RegistryError):
    """No such node, or none within the caller's scope (the two are not told apart)."""

    def __init__(self, key: str) -> None:
        super().__init__("no such node in the community tree", entity="node", key=key)


class AmbiguousNode(RegistryError):
    """A city and a street share the path; the caller must say which tier."""

    def __init__(self, path: str, tiers: list[str]) -> None:
        super().__init__(
            f"is both a {' and a '.join(tiers)}; give the tier", entity="node", key=path
        )


class InvalidNode(RegistryError):
    """A node that cannot exist: a malformed name, or a child of a community."""

    def __init__(self, message: str, *, key: str) -> None:
        self.message = message
        super().__init__(message, entity="node", key=key)


class NodeConflict(RegistryError):
    """The tree as it stands refuses the change (a retired parent, a path taken, a
    subtree still in use); ``message`` says what must change first."""

    def __init__(self, message: str, *, key: str) -> None:
        self.message = message
        super().__init__(message, entity="node", key=key)


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    parent_id: int | None
    tier: str
    name: str
    path: str
    display_name: str | None
    status: str
    created_at: datetime
    retired_at: datetime | None


async def find_node(conn: AsyncConnection[Any], path: str, tier: str | None = None) -> Node:
    """The node at ``path`` (of ``tier`` when given); raises NodeNotFound, or
    AmbiguousNode when a city and a street share the path and no tier says which."""
    with storage_errors("tree_nodes_by_path"):
        cur = conn.cursor(row_factory=class_row(Node))
        await cur.execute(queries()["tree_nodes_by_path"], {"path": path, "tier": tier})
        nodes = await cur.fetchall()
    if not nodes:
        raise NodeNotFound(path)
    if len(nodes) > 1:
        raise AmbiguousNode(path, [node.tier for node in nodes])
    return nodes[0]


async def subtree(conn: AsyncConnection[Any], root: int) -> frozenset[int]:
    """The ids of ``root`` and every node below it."""
    with storage_errors("tree_subtree"):
        cur = await conn.execute(queries()["tree_subtree"], {"root": root})
        row = await cur.fetchone()
    return frozenset(row[0] if row and row[0] else ())


async def list_nodes(
    conn: AsyncConnection[Any],
    *,
    scope: list[int] | None,
    tier: str | None = None,
    status: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[Node]:
    """Nodes in ``scope`` (of ``tier`` and ``status`` when given) by id, after ``after``."""
    params = {"scope": scope, "tier": tier, "status": status, "after": after, "limit": limit}
    return await _nodes(conn, "tree_list", params)


async def get_node(conn: AsyncConnection[Any], node_id: int, *, scope: list[int] | None) -> Node:
    """The node ``node_id`` if it lies in ``scope``; else NodeNotFound."""
    return await _node(conn, "tree_node_get", {"id": node_id, "scope": scope})


async def create_node(
    conn: AsyncConnection[Any], *, parent_id: int | None, name: str, display_name: str | None
) -> Node:
    """Add ``name`` under ``parent_id``: a city without a parent, a street under a city,
    a community under a street (its path ``street/community``).

    The caller has checked that it reaches the parent. Raises NodeNotFound for an
    unknown parent, InvalidNode for a malformed name or a parent that is a community,
    and NodeConflict when the parent is retired or a node of the same tier already has
    the path (paths are unique per tier across the whole tree: they name communities
    in MQTT topics).
    """
    if not _NAME.match(name):
        raise InvalidNode("lower-case letters, digits and '-' (at most 32)", key=name)
    async with conn.transaction():
        parent = None
        if parent_id is not None:
            parent = await _node(conn, "tree_node_share", {"id": parent_id})
        tier = _CHILD_TIER.get(None if parent is None else parent.tier)
        if tier is None:
            raise InvalidNode("a community is the lowest tier; it takes no nodes", key=name)
        if parent is not None and parent.status != "active":
            raise NodeConflict("is retired and takes no new nodes", key=parent.path)
        path = f"{parent.path}/{name}" if tier == "community" and parent else name
        params = {
            "parent_id": parent_id,
            "tier": tier,
            "name": name,
            "path": path,
            "display_name": display_name,
        }
        created = await _nodes(conn, "tree_insert", params)
    if not created:
        raise NodeConflict(f"a {tier} with this path exists already", key=path)
    return created[0]


async def rename_node(
    conn: AsyncConnection[Any],
    node_id: int,
    *,
    display_name: str | None,
    scope: list[int] | None,
) -> Node:
    """Set (or, with None, clear) the display name of ``node_id`` in ``scope``; its path
    stays, as gateways publish under it. Raises NodeNotFound."""
    return await _node(
        conn, "tree_rename", {"id": node_id, "display_name": display_name, "scope": scope}
    )


async def retire_node(conn: AsyncConnection[Any], node_id: int, *, scope: list[int] | None) -> Node:
    """Retire ``node_id`` in ``scope``: it keeps its rows but takes no new children or
    gateways. Retiring a retired node returns it unchanged.

    Raises NodeNotFound, and NodeConflict while active nodes below it or active
    gateways in its subtree remain (retire those, or revoke the gateways, first), so a
    retired node never hides a live installation.
    """
    async with conn.transaction():
        node = await _node(conn, "tree_node_lock", {"id": node_id, "scope": scope})
        if node.status == "retired":
            return node
        with storage_errors("tree_in_use"):
            cur = await conn.execute(queries()["tree_in_use"], {"id": node_id})
            row = await cur.fetchone()
        nodes, gateways = row if row else (0, 0)
        if nodes or gateways:
            raise NodeConflict(
                f"still holds {nodes} active node(s) below it and {gateways} active "
                "gateway(s); retire those nodes and revoke those gateways first",
                key=node.path,
            )
        return await _node(conn, "tree_retire", {"id": node_id})


async def _node(conn: AsyncConnection[Any], query: str, params: dict[str, Any]) -> Node:
    found = await _nodes(conn, query, params)
    if not found:
        raise NodeNotFound(str(params["id"]))
    return found[0]


async def _nodes(conn: AsyncConnection[Any], query: str, params: dict[str, Any]) -> list[Node]:
    with storage_errors(query):
        cur = conn.cursor(row_factory=class_row(Node))
        await cur.execute(queries()[query], params)
        return await cur.fetchall()
