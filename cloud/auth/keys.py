"""API keys: made, listed, revoked and checked.

A key reads ``anju_{prefix}_{secret}``: the prefix (8 lower-case letters and digits)
finds its row and is safe to show in lists and logs; the secret is 256 random bits.
Only SHA-256 of the whole key is stored, and a presented key is compared in constant
time. The key itself is returned once, by ``create_key``, and never again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import class_row

from cloud.auth.errors import InvalidKeyRequest, KeyNotFound, KeyRefused
from cloud.auth.principal import Principal
from cloud.auth.roles import Role
from cloud.storage.database import storage_errors
from cloud.storage.sql import queries

TOKEN_FORM: Final = "anju_<8 letters or digits>_<43 characters>"
_TOKEN: Final = re.compile(r"^anju_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")
_PREFIX_ALPHABET: Final = string.ascii_lowercase + string.digits


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as listed: everything but its secret."""

    id: int
    prefix: str
    name: str
    role: str
    scope_id: int | None
    scope_path: str | None
    created_at: datetime
    created_by: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    token: str
    """The key to hand its holder: shown this once, stored nowhere."""


def new_token() -> tuple[str, str]:
    """A fresh key and its prefix."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
    return f"anju_{prefix}_{secrets.token_urlsafe(32)}", prefix


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_prefix(token: str) -> str:
    """The prefix of a well-formed key; raises KeyRefused for anything else."""
    match = _TOKEN.match(token)
    if match is None:
        raise KeyRefused(f"not an Anju API key; expected {TOKEN_FORM}")
    return match.group(1)


async def create_key(
    conn: AsyncConnection[Any],
    *,
    name: str,
    role: Role,
    scope_id: int | None,
    expires_at: datetime | None = None,
    created_by: int | None = None,
) -> CreatedKey:
    """Make a key for ``name`` with ``role`` over the subtree of node ``scope_id``
    (``None``: the whole tree, admin keys only). Raises InvalidKeyRequest otherwise."""
    name = name.strip()
    if not 0 < len(name) <= 100 or "\x00" in name:
        raise InvalidKeyRequest("1-100 characters naming who holds the key", field="name")
    if scope_id is None and role is not Role.ADMIN:
        raise InvalidKeyRequest(f"a {role} key needs a scope in the tree", field="scope")
    token, prefix = new_token()
    async with conn.transaction():
        with storage_errors("api_key_insert"):
            cur = await conn.execute(
                queries()["api_key_insert"],
                {
                    "prefix": prefix,
                    "secret_hash": token_hash(token),
                    "name": name,
                    "role": str(role),
                    "scope_id": scope_id,
                    "created_by": created_by,
                    "expires_at": expires_at,
                },
            )
            row = await cur.fetchone()
        assert row is not None  # INSERT ... RETURNING yields its row
        key = await get_key(conn, int(row[0]), scope=None, roles=frozenset(Role))
    return CreatedKey(key=key, token=token)


async def get_key(
    conn: AsyncConnection[Any],
    key_id: int,
    *,
    scope: list[int] | None,
    roles: Collection[Role],
) -> ApiKey:
    """The key ``key_id`` if it lies in ``scope`` and has one of ``roles``; else
    KeyNotFound (a key out of reach is not disclosed)."""
    with storage_errors("api_key_get"):
        cur = conn.cursor(row_factory=class_row(ApiKey))
        await cur.execute(
            queries()["api_key_get"],
            {"id": key_id, "scope": scope, "roles": [str(role) for role in roles]},
        )
        key = await cur.fetchone()
    if key is None:
        raise KeyNotFound(key_id)
    return key


async def list_keys(
    conn: AsyncConnection[Any],
    *,
    scope: list[int] | None,
    roles: Collection[Role],
    active: bool | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[ApiKey]:
    """Keys in ``scope`` with one of ``roles``, newest first, ids below ``before``;
    ``active`` True lists only usable keys, False only revoked or expired ones."""
    with storage_errors("api_key_list"):
        cur = conn.cursor(row_factory=class_row(ApiKey))
        await cur.execute(
            queries()["api_key_list"],
            {
                "scope": scope,
                "roles": [str(role) for role in roles],
                "active": active,
                "before": before,
                "limit": limit,
            },
        )
        return await cur.fetchall()


async def revoke_key(
    conn: AsyncConnection[Any],
    key_id: int,
    *,
    scope: list[int] | None,
    roles: Collection[Role],
    by: int | None,
) -> ApiKey:
    """Revoke ``key_id`` at once (the next request with it gets 401). Raises KeyNotFound
    for a key out of reach and InvalidKeyRequest for the caller's own key, so nobody
    locks themself out by mistake."""
    if by is not None and key_id == by:
        raise InvalidKeyRequest(
            "a key cannot revoke itself; revoke it with another key that manages it", field="id"
        )
    async with conn.transaction():
        await get_key(conn, key_id, scope=scope, roles=roles)
        with storage_errors("api_key_revoke"):
            await conn.execute(queries()["api_key_revoke"], {"id": key_id, "by": by})
        return await get_key(conn, key_id, scope=scope, roles=roles)


async def authenticate(conn: AsyncConnection[Any], token: str) -> Principal:
    """The principal of ``token``; raises KeyRefused when it does not authenticate."""
    prefix = token_prefix(token)
    with storage_errors("api_key_for_token"):
        cur = await conn.execute(queries()["api_key_for_token"], {"prefix": prefix})
        row = await cur.fetchone()
    if row is None:
        raise KeyRefused("unknown key", prefix=prefix)
    key_id, stored, name, role, scope_id, scope_path, revoked, expired, stale, nodes = row
    if not hmac.compare_digest(bytes(stored), token_hash(token)):
        raise KeyRefused("unknown key", prefix=prefix)
    if revoked:
        raise KeyRefused("this key was revoked", prefix=prefix)
    if expired:
        raise KeyRefused("this key has expired", prefix=prefix)
    if stale:
        with storage_errors("api_key_touch"):
            await conn.execute(queries()["api_key_touch"], {"id": key_id})
    return Principal(
        key_id=key_id,
        name=name,
        role=Role(role),
        scope_id=scope_id,
        scope_path=scope_path,
        communities=None if nodes is None else frozenset(nodes),
    )


async def usable_admin_keys(conn: AsyncConnection[Any]) -> int:
    """How many admin keys are neither revoked nor expired."""
    with storage_errors("api_key_admins_usable"):
        cur = await conn.execute(queries()["api_key_admins_usable"])
        row = await cur.fetchone()
    return 0 if row is None else int(row[0])
