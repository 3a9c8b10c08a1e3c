"""API keys as operators and the API's users meet them: made by `anju cloud key`
(shown once, stored hashed), checked on every request, revoked at once, expired,
rate-limited after failures, and handed out through the API within a scope."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from psycopg import AsyncConnection

from cloud.api.app import create_app
from cloud.auth.keys import create_key
from cloud.auth.roles import Role
from cloud.registry import register_community
from cloud.settings import ApiSettings, CloudSettings
from tests.api_support import api_client, bearer, make_key

ANJU = Path(sys.executable).with_name("anju")


def _anju(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ANJU), "cloud", "key", *args],
        env={**os.environ, "ANJU_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest_asyncio.fixture
async def tree(conn: AsyncConnection[Any]) -> None:
    for path in ("xijin/fenghuang", "xijin/qinghe", "dongcheng/heping"):
        await register_community(conn, path)


@pytest_asyncio.fixture
async def http(database_url: str, tree: None) -> AsyncIterator[httpx.AsyncClient]:
    settings = CloudSettings(database_url=database_url, api=ApiSettings(auth_failure_limit=5))
    async with api_client(create_app(settings)) as client:
        yield client


async def test_the_cli_makes_a_key_shown_once_and_stored_hashed(
    database_url: str, conn: AsyncConnection[Any], http: httpx.AsyncClient
) -> None:
    made = _anju(database_url, "create", "--name", "ops", "--role", "admin")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("anju_"), made.stdout
    assert len(token) == 57, made.stdout
    assert "shown once" in made.stderr.lower()

    stored = await (await conn.execute("SELECT row_to_json(k)::text FROM api_keys k")).fetchall()
    assert token not in str(stored)
    secret = token.split("_", 2)[2]  # the secret may hold "_" itself
    assert len(secret) == 43
    assert secret not in str(stored)

    me = await http.get("/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert (me.json()["name"], me.json()["role"], me.json()["scope_path"]) == (
        "ops",
        "admin",
        None,
    )

    listed = _anju(database_url, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [key] = json.loads(listed.stdout)["keys"]
    assert key["name"] == "ops"
    assert key["last_used_at"] is not None
    assert token not in listed.stdout

    scoped = _anju(
        database_url, "create", "--name", "wang", "--role", "dispatcher", "--scope", "xijin"
    )
    assert scoped.returncode == 0, scoped.stderr
    unscoped = _anju(database_url, "create", "--name", "li", "--role", "dispatcher")
    assert unscoped.returncode == 1
    assert "needs a scope" in unscoped.stderr
    nowhere = _anju(database_url, "create", "--name", "li", "--role", "street", "--scope", "nope")
    assert nowhere.returncode == 1
    assert "no such node" in nowhere.stderr

    revoked = _anju(database_url, "revoke", str(key["id"]))
    assert revoked.returncode == 0, revoked.stderr
    after = await http.get("/me", headers=bearer(token))
    assert (after.status_code, after.json()["detail"]) == (401, "this key was revoked")
    assert after.headers["www-authenticate"].startswith("Bearer")


async def test_missing_malformed_unknown_and_expired_keys_get_401(
    conn: AsyncConnection[Any], http: httpx.AsyncClient
) -> None:
    assert (await http.get("/incidents")).status_code == 401
    malformed = await http.get("/incidents", headers=bearer("let-me-in"))
    assert malformed.status_code == 401
    assert "not an Anju API key" in malformed.json()["detail"]
    real = await make_key(conn)
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    unknown = await http.get("/incidents", headers=bearer(forged))
    assert (unknown.status_code, unknown.json()["detail"]) == (401, "unknown key")

    expired = await create_key(
        conn,
        name="temp",
        role=Role.ADMIN,
        scope_id=None,
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    old = await http.get("/incidents", headers=bearer(expired.token))
    assert (old.status_code, old.json()["detail"]) == (401, "this key has expired")


async def test_failed_authentications_lock_the_address_out_for_the_window(
    conn: AsyncConnection[Any], http: httpx.AsyncClient
) -> None:
    valid = bearer(await make_key(conn))
    assert (await http.get("/me", headers=valid)).status_code == 200
    for _ in range(5):
        assert (await http.get("/me", headers=bearer("anju_guess"))).status_code == 401
    locked = await http.get("/me", headers=valid)
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    assert locked.headers["content-type"] == "application/problem+json"
    # Routes that need no key stay open.
    assert (await http.get("/health")).status_code == 200


async def test_keys_are_handed_out_within_the_scope_and_roles_allowed(
    conn: AsyncConnection[Any], http: httpx.AsyncClient
) -> None:
    admin = bearer(await make_key(conn))
    made = await http.post(
        "/keys",
        headers=admin,
        json={"name": "xijin office", "role": "street", "community": "xijin"},
    )
    assert made.status_code == 201, made.text
    street = bearer(made.json()["key"])
    assert made.json()["scope_path"] == "xijin"

    dispatcher = await http.post(
        "/keys",
        headers=street,
        json={"name": "wang", "role": "dispatcher", "community": "xijin/fenghuang"},
    )
    assert dispatcher.status_code == 201, dispatcher.text
    for body, status in [
        ({"name": "x", "role": "street", "community": "xijin"}, 403),
        ({"name": "x", "role": "admin", "community": "xijin"}, 403),
        ({"name": "x", "role": "dispatcher", "community": "dongcheng/heping"}, 404),
        ({"name": "x", "role": "dispatcher", "community": "dongcheng"}, 404),
        ({"name": "x", "role": "dispatcher"}, 422),
        ({"name": "x\u0000", "role": "dispatcher", "community": "xijin"}, 422),
    ]:
        refused = await http.post("/keys", headers=street, json=body)
        assert refused.status_code == status, (body, refused.text)

    listed = await http.get("/keys", headers=street)
    assert [k["name"] for k in listed.json()["items"]] == ["wang"]
    other = await make_key(conn, role=Role.DISPATCHER, scope="dongcheng", name="zhao")
    other_id = (await http.get("/me", headers=bearer(other))).json()["key_id"]
    assert (await http.get(f"/keys/{other_id}", headers=street)).status_code == 404
    assert (await http.post(f"/keys/{other_id}/revoke", headers=street)).status_code == 404
    street_id = made.json()["id"]
    assert (await http.post(f"/keys/{street_id}/revoke", headers=street)).status_code == 409
    assert (await http.get("/keys", headers=bearer(other))).status_code == 403

    wang = dispatcher.json()["id"]
    revoked = await http.post(f"/keys/{wang}/revoke", headers=street)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    gone = await http.get("/me", headers=bearer(dispatcher.json()["key"]))
    assert gone.status_code == 401
