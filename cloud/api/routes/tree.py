"""``/communities``: the community tree (city, street, community) read and managed.

Every key reads the nodes of its own subtree; admin and street keys add nodes below
the ones they reach, rename and retire them. A node's path is its identity in MQTT
topics and never changes; a retired node keeps its history but takes no new nodes or
gateways.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cloud import tree
from cloud.api.deps import ConnectionDep
from cloud.api.pagination import CursorQuery, Page, decode_id, id_page
from cloud.api.params import NO_NUL, IdPath, Limit
from cloud.api.problems import problem_response
from cloud.api.scoping import CommunityQuery, TierQuery, reachable_node, scope_within
from cloud.api.security import allowed
from cloud.auth.principal import Principal
from cloud.auth.roles import Permission
from cloud.tree import InvalidNode, NodeConflict, NodeNotFound
from schemas.wire import NODE_NAME_PATTERN, NODE_PATH_PATTERN

Tier = Literal["city", "street", "community"]
NodeStatus = Literal["active", "retired"]
DisplayName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=NO_NUL)
]


class NodeView(BaseModel):
    """A node of the tree."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    parent_id: int | None
    """Null for a city."""
    tier: Tier
    name: str
    path: str
    """``ningguo`` (city), ``xijin`` (street), ``xijin/fenghuang`` (community): the
    community's identity in MQTT topics, fixed for good."""
    display_name: str | None
    """The name people read (``凤凰社区``); changes freely."""
    status: NodeStatus
    created_at: datetime
    retired_at: datetime | None


class NodeRequest(BaseModel):
    """A new node: a city without ``parent``, a street under a city, a community under
    a street."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    parent: Annotated[str | None, Field(pattern=NODE_PATH_PATTERN, max_length=65)]
    """The parent's path (``ningguo``, ``xijin``); null for a city, which only a key
    over the whole tree may add."""
    parent_tier: Tier | None = None
    """Needed only when a city and a street share the parent's name."""
    name: Annotated[str, Field(pattern=NODE_NAME_PATTERN, max_length=32)]
    """Lower-case letters, digits and '-'; a community's path becomes ``street/name``."""
    display_name: DisplayName | None = None


class RenameRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    display_name: DisplayName | None
    """The new display name; null clears it."""


router = APIRouter(prefix="/communities", tags=["community tree"])

Reader = Annotated[Principal, allowed(Permission.TREE_READ)]
Manager = Annotated[Principal, allowed(Permission.TREE_MANAGE)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    HTTPStatus.NOT_FOUND.value: problem_response("No node with this id in reach")
}


@router.get(
    "",
    response_model=Page[NodeView],
    responses={HTTPStatus.NOT_FOUND.value: problem_response("No node at `community` in reach")},
)
async def list_nodes(
    conn: ConnectionDep,
    principal: Reader,
    community: CommunityQuery = None,
    community_tier: TierQuery = None,
    tier: Tier | None = None,
    status: NodeStatus | None = None,
    limit: Limit = 100,
    cursor: CursorQuery = None,
) -> Page[NodeView]:
    """Nodes the key reaches, by id: with ``community``, that node and those below it;
    ``tier`` and ``status`` keep the nodes of that tier or status only
    (``community=xijin&tier=community&status=active``: a street's live communities)."""
    after = decode_id(cursor)
    scope = await scope_within(conn, principal, community, community_tier)
    found = await tree.list_nodes(
        conn,
        scope=scope,
        tier=tier,
        status=status,
        after=after,
        limit=limit + 1,
    )
    items = [NodeView.model_validate(node) for node in found]
    return id_page(items, limit)


@router.post(
    "",
    response_model=NodeView,
    status_code=HTTPStatus.CREATED,
    responses={
        HTTPStatus.FORBIDDEN.value: problem_response(
            "The key's role may not manage the tree, or the key may not add a city"
        ),
        HTTPStatus.NOT_FOUND.value: problem_response("No parent at this path in reach"),
        HTTPStatus.CONFLICT.value: problem_response(
            "The parent is retired, or a node of the same tier has the path"
        ),
        HTTPStatus.UNPROCESSABLE_ENTITY.value: problem_response(
            "A malformed body, or a parent that is a community (the lowest tier)"
        ),
    },
)
async def create_node(conn: ConnectionDep, principal: Manager, body: NodeRequest) -> NodeView:
    """Add a node below one the key reaches; its tier follows from the parent's.

    Paths are unique per tier across the whole tree (they name communities in MQTT
    topics), so a path taken anywhere is a 409. Only a key over the whole tree adds a
    city (403 for others).
    """
    parent_id: int | None = None
    if body.parent is not None:
        parent_id = await reachable_node(conn, principal, body.parent, body.parent_tier)
    elif principal.communities is not None:
        raise HTTPException(
            HTTPStatus.FORBIDDEN, "only a key over the whole tree may add a city; give a parent"
        )
    try:
        node = await tree.create_node(
            conn, parent_id=parent_id, name=body.name, display_name=body.display_name
        )
    except InvalidNode as exc:
        raise HTTPException(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
    except NodeConflict as exc:
        raise HTTPException(HTTPStatus.CONFLICT, str(exc)) from None
    return NodeView.model_validate(node)


@router.get("/{node_id}", response_model=NodeView, responses=_NOT_FOUND)
async def get_node(conn: ConnectionDep, principal: Reader, node_id: IdPath) -> NodeView:
    """One node the key reaches."""
    try:
        node = await tree.get_node(conn, node_id, scope=principal.scope)
    except NodeNotFound as exc:
        raise HTTPException(HTTPStatus.NOT_FOUND, str(exc)) from None
    return NodeView.model_validate(node)


@router.patch("/{node_id}", response_model=NodeView, responses=_NOT_FOUND)
async def rename_node(
    conn: ConnectionDep, principal: Manager, node_id: IdPath, body: RenameRequest
) -> NodeView:
    """Change the node's display name (null clears it).

    Renaming never changes the path: a community's path is its identity in MQTT
    topics and batch headers, which its gateways publish under, and changing it would
    cut them off. Retired nodes may be renamed too.
    """
    try:
        node = await tree.rename_node(
            conn, node_id, display_name=body.display_name, scope=principal.scope
        )
    except NodeNotFound as exc:
        raise HTTPException(HTTPStatus.NOT_FOUND, str(exc)) from None
    return NodeView.model_validate(node)


@router.post(
    "/{node_id}/retire",
    response_model=NodeView,
    responses={
        **_NOT_FOUND,
        HTTPStatus.CONFLICT.value: problem_response(
            "Active nodes or gateways remain below the node, or it is the key's own root"
        ),
    },
)
async def retire_node(conn: ConnectionDep, principal: Manager, node_id: IdPath) -> NodeView:
    """Retire a node: it keeps its history (events, incidents, readings) but takes no
    new nodes or gateways. Refused (409, saying how many remain) while active nodes
    below it or active gateways in its subtree remain, and for the root of the key's
    own scope, which only a key over its parent may retire. Retiring twice is harmless.
    """
    if node_id == principal.scope_id:
        raise HTTPException(
            HTTPStatus.CONFLICT,
            f"{principal.scope_path!r} is the root of this key's scope; "
            "a key over its parent may retire it",
        )
    try:
        node = await tree.retire_node(conn, node_id, scope=principal.scope)
    except NodeNotFound as exc:
        raise HTTPException(HTTPStatus.NOT_FOUND, str(exc)) from None
    except NodeConflict as exc:
        raise HTTPException(HTTPStatus.CONFLICT, str(exc)) from None
    return NodeView.model_validate(node)
