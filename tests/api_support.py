"""API keys and keyed HTTP clients for tests of the cloud's API.

Keys are made the way an operator makes them (``cloud.auth.keys.create_key``, which
``anju cloud key create`` runs) and presented as ``Authorization: Bearer``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from psycopg import AsyncConnection

from cloud.api.security import Requirement
from cloud.auth.keys import create_key
from cloud.auth.roles import Permission, Role
from cloud.incidents import IncidentDraft, Priority, open_or_join
from cloud.queue import transitions
from cloud.registry import register_community, register_device, register_gateway
from cloud.residents import records
from cloud.residents.crypto import Keyring
from cloud.settings import QueueSettings
from cloud.tree import find_node
from schemas.vocabulary import DeviceKind


async def make_key(
    conn: AsyncConnection[Any],
    *,
    role: Role = Role.ADMIN,
    scope: str | None = None,
    name: str | None = None,
    tier: str | None = None,
) -> str:
    """A fresh key of ``role`` over the subtree at ``scope`` (None: the whole tree)."""
    scope_id = None if scope is None else (await find_node(conn, scope, tier)).id
    created = await create_key(conn, name=name or f"test-{role}", role=role, scope_id=scope_id)
    return created.token


@dataclass(frozen=True)
class Route:
    """One method of one documented route, with the permission its key check names."""

    method: str
    path: str
    operation_id: str
    permission: Permission | None
    body_required: bool


def api_routes(app: FastAPI) -> list[Route]:
    """Every documented route of ``app``. FastAPI includes routers lazily, so routes are
    read through ``iter_route_contexts``, which gives each its full path."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not context.include_in_schema:
            continue
        body = route.body_field
        for method in sorted(context.methods or ()):
            found.append(
                Route(
                    method=method,
                    path=str(context.path),
                    operation_id=route.unique_id,
                    permission=_requirement(context.dependant),
                    body_required=body is not None and body.field_info.is_required(),
                )
            )
    return found


def _requirement(dependant: Dependant) -> Permission | None:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Requirement):
            return dependency.call.permission
        found = _requirement(dependency)
        if found is not None:
            return found
    return None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def api_client(app: FastAPI, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` (its lifespan run) presenting ``token`` on every request."""
    headers = {} if token is None else bearer(token)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://anju", headers=headers
        ) as client:
            yield client


async def populate(
    conn: AsyncConnection[Any], path: str, tag: str, *, wrapping_key: bytes
) -> dict[str, str]:
    """One of everything in community ``path``, named with ``tag`` (``gw-{tag}``,
    ``dev-{tag}``, ``ref-{tag}``, key holder ``holder-{tag}``): a gateway, a wearable
    bound to a resident with sealed personal data, its SOS event, the incident it
    opened (claimed by ``disp-{tag}``), a webhook subscription with a dead delivery, and
    a dispatcher key. Returns each object's id by the path parameter that names it."""
    node = await register_community(conn, path)
    gateway = await register_gateway(conn, f"gw-{tag}", path)
    resident = await records.register(
        conn,
        Keyring.from_keys([("k1", wrapping_key)]),
        community_id=node.id,
        reference=f"ref-{tag}",
        building="3",
        unit="201",
        needs_evacuation_help=False,
        personal=records.PersonalData(name=f"resident {tag}", phone="+86 10 5555 0000"),
    )
    await register_device(
        conn,
        f"dev-{tag}",
        gateway_id=gateway.id,
        kind=DeviceKind.WEARABLE,
        profile_id="anju-band",
        resident_id=resident.id,
    )
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO events (ts, device_id, gateway_id, seq, type, severity) "
            "VALUES (now(), %s, %s, 1, 'wearable.sos', 'critical') RETURNING id, ts",
            [f"dev-{tag}", gateway.id],
        )
        event_id, ts = await cur.fetchone() or (0, None)
        draft = IncidentDraft(
            type="sos",
            priority=Priority.CRITICAL,
            community_id=node.id,
            building="3",
            unit="201",
            device_id=f"dev-{tag}",
            cause="wearable.sos",
        )
        opened = await open_or_join(conn, draft, event_id=event_id, event_ts=ts)
    await transitions.claim(conn, opened.incident_id, actor=f"disp-{tag}", settings=QueueSettings())
    cur = await conn.execute(
        "INSERT INTO webhook_subscriptions (community_id, url, secrets) "
        "VALUES (%s, 'https://example.org/hook', %s) RETURNING id",
        [node.id, ["whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ="]],
    )
    (subscription_id,) = await cur.fetchone() or (0,)
    cur = await conn.execute(
        "INSERT INTO webhook_deliveries (message_id, subscription_id, incident_id, event_type, "
        "payload, status) VALUES (%s, %s, %s, 'incident.opened', '{}', 'dead') RETURNING id",
        [f"msg_{tag}", subscription_id, opened.incident_id],
    )
    (delivery_id,) = await cur.fetchone() or (0,)
    key = await make_key(conn, role=Role.DISPATCHER, scope=path, name=f"holder-{tag}")
    cur = await conn.execute("SELECT id FROM api_keys WHERE name = %s", [f"holder-{tag}"])
    (key_id,) = await cur.fetchone() or (0,)
    assert key
    return {
        "node_id": str(node.id),
        "gateway_id": gateway.id,
        "device_id": f"dev-{tag}",
        "event_id": str(event_id),
        "incident_id": str(opened.incident_id),
        "resident_id": str(resident.id),
        "subscription_id": str(subscription_id),
        "delivery_id": str(delivery_id),
        "key_id": str(key_id),
    }


async def open_sos(conn: AsyncConnection[Any], ids: dict[str, str], seq: int) -> int:
    """A fall from the community's wearable, stored and opened as ingest would."""
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO events (ts, device_id, gateway_id, seq, type, severity) "
            "VALUES (now(), %s, %s, %s, 'wearable.fall', 'critical') RETURNING id, ts",
            [ids["device_id"], ids["gateway_id"], seq],
        )
        row = await cur.fetchone()
        assert row is not None
        draft = IncidentDraft(
            type="fall",
            priority=Priority.CRITICAL,
            community_id=int(ids["node_id"]),
            building="3",
            unit="201",
            device_id=ids["device_id"],
            cause="wearable.fall",
        )
        opened = await open_or_join(conn, draft, event_id=row[0], event_ts=row[1])
    return opened.incident_id
