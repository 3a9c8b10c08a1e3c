"""Narrowing a list to a node of the community tree, within the caller's scope.

Lists take ``community=PATH`` (and ``tier`` when a city and a street share a name);
the rows served are those of that node's subtree that the key also reaches. A node
the key does not reach is answered exactly like one that does not exist (404).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any, Literal

from fastapi import HTTPException, Query
from psycopg import AsyncConnection

from cloud.auth.principal import Principal
from cloud.tree import AmbiguousNode, NodeNotFound, find_node, subtree
from schemas.wire import NODE_PATH_PATTERN

CommunityQuery = Annotated[
    str | None,
    Query(
        pattern=NODE_PATH_PATTERN,
        max_length=65,
        description="Only rows of this node of the tree and below it: `xijin/fenghuang` "
        "(community), `xijin` (street), `ningguo` (city)",
    ),
]
TierQuery = Annotated[
    Literal["city", "street", "community"] | None,
    Query(description="Needed only when a city and a street share the name in `community`"),
]


async def reachable_node(
    conn: AsyncConnection[Any], principal: Principal, path: str, tier: str | None = None
) -> int:
    """The id of the node at ``path`` if the key reaches it; else 404 (or 422 when the
    path names both a city and a street)."""
    try:
        node = await find_node(conn, path, tier)
    except AmbiguousNode as exc:
        raise HTTPException(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
    except NodeNotFound:
        node = None
    if node is None or not principal.reaches(node.id):
        raise HTTPException(HTTPStatus.NOT_FOUND, f"no node {path!r} in the community tree")
    return node.id


async def scope_within(
    conn: AsyncConnection[Any], principal: Principal, path: str | None, tier: str | None = None
) -> list[int] | None:
    """The ``%(scope)s`` of a list: the key's scope, narrowed to ``path``'s subtree."""
    if path is None:
        return principal.scope
    nodes = await subtree(conn, await reachable_node(conn, principal, path, tier))
    if principal.communities is not None:
        nodes &= principal.communities
    return sorted(nodes)
