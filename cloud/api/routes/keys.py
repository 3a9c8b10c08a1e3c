"""``/keys``: API keys made, listed and revoked through the API, and ``GET /me``.

Admin keys manage every key; a street office's key manages the property-manager,
dispatcher and installer keys of its subtree (``cloud.auth.roles.ISSUABLE``). A key
is shown once, in the answer that makes it.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import ConnectionDep
from cloud.api.pagination import CursorQuery, Page, decode_id, id_page
from cloud.api.params import NO_NUL, IdPath, Instant, Limit
from cloud.api.problems import problem_response
from cloud.api.scoping import reachable_node
from cloud.api.security import allowed
from cloud.auth import keys
from cloud.auth.errors import InvalidKeyRequest, KeyNotFound
from cloud.auth.principal import Principal
from cloud.auth.roles import ISSUABLE, Permission, Role
from schemas.wire import NODE_PATH_PATTERN

router = APIRouter(tags=["api keys"])

Manager = Annotated[Principal, allowed(Permission.KEYS_MANAGE)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    HTTPStatus.NOT_FOUND.value: problem_response("No key with this id in reach")
}


class ApiKeyView(BaseModel):
    """A key as listed: never its secret."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    prefix: str
    """The public part of the key (``anju_{prefix}_…``), to recognise it."""
    name: str
    role: Role
    scope_id: int | None
    scope_path: str | None
    """The root of the subtree the key reaches; null for the whole tree."""
    created_at: datetime
    created_by: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    """To the minute."""


class ApiKeyCreated(ApiKeyView):
    key: str
    """The key itself, shown this once: hand it to its holder."""


class ApiKeyRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]
    """Who holds it; the emergency queue records this name as the actor."""
    role: Role
    community: Annotated[str | None, Field(pattern=NODE_PATH_PATTERN, max_length=65)] = None
    """The subtree it reaches (``xijin/fenghuang``, ``xijin``, ``ningguo``); null
    only for an admin key over the whole tree, made by such a key."""
    tier: Literal["city", "street", "community"] | None = None
    """Needed only when a city and a street share the name."""
    expires_at: Instant | None = None


class Me(BaseModel):
    model_config = ConfigDict(frozen=True)

    key_id: int
    name: str
    role: Role
    scope_path: str | None
    permissions: list[str]


@router.get("/me", response_model=Me)
async def me(principal: Annotated[Principal, allowed(Permission.TREE_READ)]) -> Me:
    """Who the key belongs to, its role, its scope and what it may do."""
    return Me(
        key_id=principal.key_id,
        name=principal.name,
        role=principal.role,
        scope_path=principal.scope_path,
        permissions=sorted(str(p) for p in Permission if principal.can(p)),
    )


@router.get("/keys", response_model=Page[ApiKeyView])
async def list_keys(
    conn: ConnectionDep,
    principal: Manager,
    active: bool | None = None,
    limit: Limit = 100,
    cursor: CursorQuery = None,
) -> Page[ApiKeyView]:
    """Keys this key may manage, newest first; ``active=true`` only usable ones,
    ``active=false`` only revoked or expired ones."""
    after = decode_id(cursor)
    found = await keys.list_keys(
        conn,
        scope=principal.scope,
        roles=ISSUABLE[principal.role],
        active=active,
        before=after,
        limit=limit + 1,
    )
    items = [ApiKeyView.model_validate(key) for key in found]
    return id_page(items, limit)


@router.post(
    "/keys",
    response_model=ApiKeyCreated,
    status_code=HTTPStatus.CREATED,
    responses={
        HTTPStatus.NOT_FOUND.value: problem_response("No such node in reach"),
        HTTPStatus.FORBIDDEN.value: problem_response(
            "The key's role may not make keys, or not of this role"
        ),
    },
)
async def create_key(conn: ConnectionDep, principal: Manager, body: ApiKeyRequest) -> ApiKeyCreated:
    """Make a key; the answer holds it, and it is never shown again."""
    if body.role not in ISSUABLE[principal.role]:
        raise HTTPException(
            HTTPStatus.FORBIDDEN, f"a {principal.role} key may not make {body.role} keys"
        )
    scope_id: int | None = None
    if body.community is not None:
        scope_id = await reachable_node(conn, principal, body.community, body.tier)
    elif principal.communities is not None:
        raise HTTPException(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "community: give the subtree the key reaches, within your own",
        )
    try:
        created = await keys.create_key(
            conn,
            name=body.name,
            role=body.role,
            scope_id=scope_id,
            expires_at=body.expires_at,
            created_by=principal.key_id,
        )
    except InvalidKeyRequest as exc:
        raise HTTPException(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
    view = ApiKeyView.model_validate(created.key)
    return ApiKeyCreated(**view.model_dump(), key=created.token)


@router.get("/keys/{key_id}", response_model=ApiKeyView, responses=_NOT_FOUND)
async def get_key(conn: ConnectionDep, principal: Manager, key_id: IdPath) -> ApiKeyView:
    try:
        found = await keys.get_key(
            conn, key_id, scope=principal.scope, roles=ISSUABLE[principal.role]
        )
    except KeyNotFound as exc:
        raise HTTPException(HTTPStatus.NOT_FOUND, str(exc)) from None
    return ApiKeyView.model_validate(found)


@router.post(
    "/keys/{key_id}/revoke",
    response_model=ApiKeyView,
    responses={
        **_NOT_FOUND,
        HTTPStatus.CONFLICT.value: problem_response("A key cannot revoke itself"),
    },
)
async def revoke_key(conn: ConnectionDep, principal: Manager, key_id: IdPath) -> ApiKeyView:
    """Revoke a key at once: its next request gets 401. Revoking twice is harmless."""
    try:
        found = await keys.revoke_key(
            conn,
            key_id,
            scope=principal.scope,
            roles=ISSUABLE[principal.role],
            by=principal.key_id,
        )
    except KeyNotFound as exc:
        raise HTTPException(HTTPStatus.NOT_FOUND, str(exc)) from None
    except InvalidKeyRequest as exc:
        raise HTTPException(HTTPStatus.CONFLICT, exc.message) from None
    return ApiKeyView.model_validate(found)
