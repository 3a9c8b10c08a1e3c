"""Tenancy of every route, generated from the application's own route list.

Two communities hold one of everything (gateway, device, event, incident, resident,
webhook subscription and delivery, API key). For every route that needs a key:

- no key: 401;
- a key whose role lacks the route's permission: 403;
- a key with the permission, scoped to the other community: 404 for each id of the
  first community in the path, 404 for a body naming the first community, and lists
  that hold nothing of the first community;
- and, for reads, the first community's own key gets neither 401, 403 nor 404 (so the
  404 above comes from the scope, not from a broken fixture).

A new route is checked as soon as it exists; one without a permission, or taking a
body or a required query this module does not know, fails here until it is added.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from psycopg import AsyncConnection
from pydantic import SecretBytes

from cloud.api.app import create_app
from cloud.auth.roles import GRANTS, Role
from cloud.settings import (
    ApiSettings,
    CloudSettings,
    ResidentSettings,
    WrappingKey,
)
from tests.api_support import Route, api_client, api_routes, bearer, make_key, populate

HOME: Final = "xijin/fenghuang"
AWAY: Final = "dongcheng/heping"
PUBLIC: Final = {"/", "/health"}
WHOLE_TREE: Final = {("GET", "/metrics")}
"""Routes that need a key over the whole tree: a scoped key gets 403, not a filtered list."""

BODIES: Final[dict[tuple[str, str], dict[str, Any] | None]] = {
    ("POST", "/communities"): {"parent": "xijin", "name": "newone"},
    ("PATCH", "/communities/{node_id}"): {"display_name": "Renamed"},
    ("POST", "/keys"): {"name": "someone", "role": "dispatcher", "community": HOME},
    ("POST", "/residents"): {
        "community": HOME,
        "reference": "ref-new",
        "building": "1",
        "unit": "101",
    },
    ("PATCH", "/residents/{resident_id}"): {"building": "2"},
    ("POST", "/webhooks/subscriptions"): {"community": HOME, "url": "https://example.org/h"},
    ("POST", "/incidents/{incident_id}/acknowledge"): {},
    ("POST", "/incidents/{incident_id}/dispatch"): {"dispatched_to": "care team"},
    ("POST", "/incidents/{incident_id}/resolve"): {"outcome": "handled"},
    ("POST", "/incidents/{incident_id}/notes"): {"text": "a note"},
    ("POST", "/gateways"): {"id": "gw-new", "community": HOME},
    ("POST", "/gateways/{gateway_id}/credentials"): {"auth": "password"},
    ("POST", "/gateways/{gateway_id}/devices/import"): {"devices": [], "dry_run": True},
    ("POST", "/devices"): {
        "id": "dev-new",
        "gateway": "gw-home",
        "profile": "anju-smoke-mb",
        "address": "modbus-tcp://127.0.0.1:502?unit=1",
        "building": "3",
        "unit": "201",
    },
    ("PATCH", "/devices/{device_id}"): {"building": "2"},
}
QUERIES: Final[dict[tuple[str, str], dict[str, str]]] = {
    ("GET", "/devices/{device_id}/readings"): {
        "metric": "heart_rate_bpm",
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-01-01T01:00:00Z",
    },
    # A stream the in-process client must see end: the hello alone.
    ("GET", "/incidents/live"): {"lifetime_s": "0"},
}
MISSING: Final = {
    "node_id": "987654321",
    "gateway_id": "gw-missing",
    "device_id": "dev-missing",
    "event_id": "987654322",
    "incident_id": "987654323",
    "resident_id": "987654324",
    "subscription_id": "987654325",
    "delivery_id": "987654326",
    "key_id": "987654327",
}
"""Ids of the same forms that name nothing."""
MISSING_NODE: Final = "nanjing/nowhere"
WRAPPING_KEY: Final = b"tenancy-test-wrapping-key-32byte"
LIST_MARKERS: Final = (HOME, "gw-home", "dev-home", "ref-home", "holder-home")
"""Strings that appear in the home community's rows and never in the other's."""


ROUTES: Final = [
    route
    for route in api_routes(
        create_app(CloudSettings(database_url="postgresql://anju@127.0.0.1:9/anju"))
    )
    if route.path not in PUBLIC
]


@dataclass
class World:
    app: FastAPI
    ids: dict[str, str]
    """Path parameter name to the home community's object."""
    keys: dict[tuple[Role, str], str]
    """(role, community) to a key of that role scoped to that community."""


@pytest_asyncio.fixture
async def world(database_url: str, conn: AsyncConnection[Any]) -> AsyncIterator[World]:
    ids = await populate(conn, HOME, "home", wrapping_key=WRAPPING_KEY)
    await populate(conn, AWAY, "away", wrapping_key=WRAPPING_KEY)
    # The home dispatcher is the one holding the home incident's claim, so her reads of
    # its resident are allowed and prove the away dispatcher's 404 comes from the scope.
    keys = {
        (role, path): await make_key(
            conn,
            role=role,
            scope=path,
            name="disp-home" if (role, path) == (Role.DISPATCHER, HOME) else f"{role}-{path}",
        )
        for role in Role
        for path in (HOME, AWAY)
    }
    settings = CloudSettings(
        database_url=database_url,
        api=ApiSettings(auth_failure_limit=10_000),
        residents=ResidentSettings(keys=(WrappingKey(id="k1", secret=SecretBytes(WRAPPING_KEY)),)),
    )
    yield World(create_app(settings), ids, keys)


def _url(path: str, ids: dict[str, str]) -> str:
    return path.format(**ids)


async def _call(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    ids: dict[str, str],
    token: str | None,
    *,
    community: str = HOME,
) -> httpx.Response:
    body = BODIES.get((method, path))
    if body and body.get("community") == HOME:
        body = {**body, "community": community}
    headers = {} if token is None else bearer(token)
    return await http.request(
        method,
        _url(path, ids),
        params=QUERIES.get((method, path)),
        json=body,
        headers=headers,
    )


def test_every_route_needing_a_key_names_its_permission_and_is_known_here() -> None:
    assert len(ROUTES) >= 40, [f"{r.method} {r.path}" for r in ROUTES]
    assert not [r.path for r in ROUTES if r.permission is None], "routes checking no permission"
    unknown = [
        f"{r.method} {r.path}"
        for r in ROUTES
        if r.body_required and (r.method, r.path) not in BODIES
    ]
    assert not unknown, f"add a body to BODIES for {unknown}"


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
async def test_route_answers_401_403_and_hides_the_other_community(
    world: World, route: Route
) -> None:
    method, path = route.method, route.path
    assert route.permission is not None, f"{path} checks no permission"
    allowed = GRANTS[route.permission]
    async with api_client(world.app) as http:
        anonymous = await _call(http, method, path, world.ids, None)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers["content-type"] == "application/problem+json"

        denied = [role for role in Role if role not in allowed]
        if denied:
            wrong = await _call(http, method, path, world.ids, world.keys[denied[0], HOME])
            assert wrong.status_code == 403, (denied[0], wrong.text)

        role = next(r for r in (Role.PROPERTY_MANAGER, Role.DISPATCHER, *Role) if r in allowed)
        away = await _call(http, method, path, world.ids, world.keys[role, AWAY])
        if (method, path) in WHOLE_TREE:
            assert away.status_code == 403, away.text
        elif "{" in path or (method, path) in BODIES:
            assert away.status_code == 404, (role, away.status_code, away.text)
            # Answered exactly as an object that does not exist: nothing is disclosed.
            missing = await _call(
                http, method, path, MISSING, world.keys[role, AWAY], community=MISSING_NODE
            )
            assert missing.status_code == 404, missing.text
            assert _masked(missing.json()["detail"], path, MISSING) == _masked(
                away.json()["detail"], path, world.ids
            )
        else:
            assert away.status_code == 200, (role, away.text)
            for marker in LIST_MARKERS:
                assert marker not in away.text, (marker, away.text)

        if method == "GET" and (method, path) not in WHOLE_TREE:
            own = await _call(http, method, path, world.ids, world.keys[role, HOME])
            assert own.status_code not in (401, 403, 404), (role, own.text)


def _masked(detail: str, path: str, ids: dict[str, str]) -> str:
    """``detail`` with the ids that ``path`` names (and the node) replaced by their names."""
    for name, value in ids.items():
        if f"{{{name}}}" in path:
            detail = detail.replace(value, f"<{name}>")
    return detail.replace(HOME, "<node>").replace(MISSING_NODE, "<node>")


async def test_an_id_that_would_overflow_or_carry_nul_is_a_422_problem(world: World) -> None:
    token = world.keys[Role.ADMIN, HOME]
    async with api_client(world.app, token) as http:
        for url in [
            "/webhooks/subscriptions/108291723457593872482304",
            "/webhooks/deliveries?cursor=OTIyMzM3MjAzNjg1NDc3NTgwOA",
            "/incidents/9223372036854775808",
            "/devices/%00/readings?metric=co_ppm&from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z",
            "/events?from=0001-01-01T00:00:00%2B01:00",
        ]:
            response = await http.get(url)
            assert response.status_code == 422, (url, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert json.loads(response.text)["status"] == 422
