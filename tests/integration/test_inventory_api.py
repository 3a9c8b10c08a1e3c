"""``/gateways``, ``/devices`` and ``/events`` against the real PostgreSQL: each key
sees the installations and events of its own communities only (404 for another's
ids), lists page without gaps or repeats, filters narrow them, and malformed ids are
refused as problems rather than failing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from cloud.api.app import create_app
from cloud.auth.roles import Role
from cloud.registry import register_community, register_device, register_gateway
from cloud.settings import CloudSettings
from schemas.vocabulary import DeviceKind
from tests.api_support import api_client, bearer, make_key

A = "xijin/fenghuang"
B = "hexi/binhe"
C = "xijin/taoyuan"
"""A's neighbour in the same street."""
BASE = datetime(2026, 3, 1, tzinfo=UTC)

DEVICES = {
    "gw-a1": [
        ("a-smoke-1", DeviceKind.SMOKE),
        ("a-smoke-2", DeviceKind.SMOKE),
        ("a-door-1", DeviceKind.DOOR),
    ],
    "gw-a2": [("a-door-2", DeviceKind.DOOR), ("a-wear-1", DeviceKind.WEARABLE)],
    "gw-b1": [("b-smoke-1", DeviceKind.SMOKE), ("b-door-1", DeviceKind.DOOR)],
    "gw-c1": [("c-cam-1", DeviceKind.CAMERA)],
}
GATEWAYS = {"gw-a1": A, "gw-a2": A, "gw-b1": B, "gw-c1": C}
EVENTS = [
    # minutes after BASE, device, gateway, type, severity
    (0, "a-smoke-1", "gw-a1", "smoke.alarm", "critical"),
    (1, "a-door-1", "gw-a1", "door.forced_open", "warning"),
    (2, "a-door-2", "gw-a2", "access.granted", "info"),
    (2, "a-wear-1", "gw-a2", "wearable.fall", "critical"),
    (2, "a-smoke-2", "gw-a1", "smoke.test", "info"),
    (3, "a-smoke-1", "gw-a1", "smoke.cleared", "info"),
    (3, "a-smoke-2", "gw-a1", "smoke.fault", "warning"),
    (3, "a-door-1", "gw-a1", "door.closed", "info"),
    (1, "b-smoke-1", "gw-b1", "smoke.alarm", "critical"),
    (5, "b-door-1", "gw-b1", "door.closed", "info"),
    (4, "c-cam-1", "gw-c1", "camera.intrusion", "warning"),
]


@dataclass(frozen=True)
class Site:
    events: dict[str, list[int]]
    """Event ids by the community of the gateway that reported them."""
    admin: dict[str, str]
    manager: dict[str, str]
    """A property manager of community A."""


@pytest_asyncio.fixture
async def conn(database_url: str) -> AsyncIterator[AsyncConnection[Any]]:
    async with await AsyncConnection.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest_asyncio.fixture
async def site(conn: AsyncConnection[Any]) -> Site:
    for path in (A, B, C):
        await register_community(conn, path)
    for gateway, community in GATEWAYS.items():
        await register_gateway(conn, gateway, community)
        for device, kind in DEVICES[gateway]:
            await register_device(
                conn, device, gateway_id=gateway, kind=kind, profile_id=f"anju-{kind}-mb"
            )
    events: dict[str, list[int]] = {A: [], B: [], C: []}
    for seq, (minutes, device, gateway, kind, severity) in enumerate(EVENTS):
        cur = await conn.execute(
            "INSERT INTO events (ts, device_id, gateway_id, seq, type, severity, data) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            [
                BASE + timedelta(minutes=minutes),
                device,
                gateway,
                seq,
                kind,
                severity,
                Jsonb({"n": seq}),
            ],
        )
        row = await cur.fetchone()
        assert row is not None
        events[GATEWAYS[gateway]].append(row[0])
    return Site(
        events=events,
        admin=bearer(await make_key(conn)),
        manager=bearer(await make_key(conn, role=Role.PROPERTY_MANAGER, scope=A)),
    )


@pytest_asyncio.fixture
async def api(database_url: str, site: Site) -> AsyncIterator[httpx.AsyncClient]:
    """The API with no key of its own: each request presents one."""
    async with api_client(create_app(CloudSettings(database_url=database_url))) as http:
        yield http


async def _items(
    api: httpx.AsyncClient, url: str, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    response = await api.get(url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _pages(
    api: httpx.AsyncClient, url: str, headers: dict[str, str], **params: Any
) -> list[list[dict[str, Any]]]:
    """Every page of a list, following ``next_cursor`` to the end."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        response = await api.get(
            url, params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert response.status_code == 200, response.text
        pages.append(response.json()["items"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return pages


def _keys(pages: list[list[dict[str, Any]]]) -> list[tuple[datetime, int]]:
    """The sort keys of the events of ``pages``, in the order served."""
    return [
        (datetime.fromisoformat(event["ts"]), event["id"]) for items in pages for event in items
    ]


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    return problem


async def test_a_property_manager_sees_nothing_of_another_community(
    api: httpx.AsyncClient, site: Site
) -> None:
    mine = site.manager
    gateways = await _items(api, "/gateways", mine)
    assert [gateway["id"] for gateway in gateways] == ["gw-a1", "gw-a2"]
    devices = await _items(api, "/devices", mine)
    assert {device["id"] for device in devices} == {
        device for gateway in ("gw-a1", "gw-a2") for device, _ in DEVICES[gateway]
    }
    assert {device["community"] for device in devices} == {A}
    events = await _items(api, "/events", mine)
    assert sorted(event["id"] for event in events) == sorted(site.events[A])

    for url, other, missing in (
        ("/gateways", "gw-b1", "gw-none"),
        ("/gateways", "gw-c1", "gw-none"),
        ("/devices", "b-smoke-1", "nothing"),
        ("/devices", "c-cam-1", "nothing"),
        ("/events", str(site.events[B][0]), "999999"),
        ("/events", str(site.events[C][0]), "999999"),
    ):
        hidden = _problem(await api.get(f"{url}/{other}", headers=mine), 404)
        absent = _problem(await api.get(f"{url}/{missing}", headers=mine), 404)
        assert hidden["detail"].replace(other, "?") == absent["detail"].replace(missing, "?")
        assert (await api.get(f"{url}/{other}", headers=site.admin)).status_code == 200

    assert await _items(api, "/devices", mine, gateway_id="gw-b1") == []
    assert await _items(api, "/events", mine, gateway_id="gw-b1") == []
    assert await _items(api, "/events", mine, device_id="b-smoke-1") == []
    for url in ("/gateways", "/devices", "/events"):
        for node in (B, "xijin", "hexi", "ningguo"):
            response = await api.get(url, params={"community": node}, headers=mine)
            _problem(response, 404)
        assert (await api.get(url)).status_code == 401


async def test_a_gateway_and_a_device_in_detail(api: httpx.AsyncClient, site: Site) -> None:
    gateway = await api.get("/gateways/gw-a1", headers=site.manager)
    assert gateway.status_code == 200, gateway.text
    assert gateway.json() | {"created_at": ""} == {
        "id": "gw-a1",
        "community": A,
        "status": "active",
        "last_seen": None,
        "created_at": "",
        "device_count": 3,
        "auth": "password",
        "credentials_issued_at": None,
        "config_version": 0,
        "config_applied": 0,
    }
    device = await api.get("/devices/a-door-2", headers=site.manager)
    assert device.status_code == 200, device.text
    assert device.json() | {"created_at": "", "updated_at": ""} == {
        "id": "a-door-2",
        "gateway_id": "gw-a2",
        "community": A,
        "kind": "door",
        "profile_id": "anju-door-mb",
        "building": None,
        "unit": None,
        "status": "active",
        "last_seen": None,
        "created_at": "",
        "updated_at": "",
        "address": None,
        "egress": False,
        "poll_interval_s": None,
        "resident_id": None,
    }


async def test_gateway_and_device_lists_page_and_filter(
    api: httpx.AsyncClient, site: Site, conn: AsyncConnection[Any]
) -> None:
    pages = await _pages(api, "/devices", site.manager, limit=2)
    assert [len(items) for items in pages] == [2, 2, 1]
    ids = [device["id"] for items in pages for device in items]
    assert ids == sorted(ids)
    assert set(ids) == {device["id"] for device in await _items(api, "/devices", site.manager)}
    assert len(ids) == 5

    gateway_pages = await _pages(api, "/gateways", site.admin, limit=3)
    assert [len(items) for items in gateway_pages] == [3, 1]

    def ids_of(items: list[dict[str, Any]]) -> list[str]:
        return [item["id"] for item in items]

    assert ids_of(await _items(api, "/devices", site.manager, kind="door")) == [
        "a-door-1",
        "a-door-2",
    ]
    assert ids_of(await _items(api, "/devices", site.manager, gateway_id="gw-a2")) == [
        "a-door-2",
        "a-wear-1",
    ]
    assert ids_of(await _items(api, "/devices", site.admin, community="xijin", kind="camera")) == [
        "c-cam-1"
    ]
    assert ids_of(await _items(api, "/gateways", site.admin, community="xijin")) == [
        "gw-a1",
        "gw-a2",
        "gw-c1",
    ]
    assert ids_of(await _items(api, "/gateways", site.admin, community=B)) == ["gw-b1"]

    await conn.execute("UPDATE devices SET status = 'disabled' WHERE id = 'a-smoke-2'")
    await conn.execute("UPDATE gateways SET status = 'revoked' WHERE id = 'gw-a2'")
    assert ids_of(await _items(api, "/devices", site.manager, status="disabled")) == ["a-smoke-2"]
    assert len(await _items(api, "/devices", site.manager, status="active")) == 4
    assert ids_of(await _items(api, "/gateways", site.admin, status="revoked")) == ["gw-a2"]
    assert ids_of(await _items(api, "/gateways", site.manager, status="active")) == ["gw-a1"]


async def test_events_newest_first_by_time_then_id_and_within_the_window(
    api: httpx.AsyncClient, site: Site
) -> None:
    expected = sorted(
        (
            (BASE + timedelta(minutes=minutes), event_id)
            for (minutes, *_), event_id in zip(EVENTS[:8], site.events[A], strict=True)
        ),
        reverse=True,
    )
    pages = await _pages(api, "/events", site.manager, limit=2)
    assert [len(items) for items in pages] == [2, 2, 2, 2]
    assert _keys(pages) == expected
    # One a page: three events of one gateway share a ts, so pages cut through ties.
    assert _keys(await _pages(api, "/events", site.manager, limit=1)) == expected

    # The whole tree is read another way (off the time index): same order, same pages.
    everything = sorted(
        (
            (BASE + timedelta(minutes=minutes), event_id)
            for (minutes, *_), event_id in zip(
                EVENTS, site.events[A] + site.events[B] + site.events[C], strict=True
            )
        ),
        reverse=True,
    )
    pages = await _pages(api, "/events", site.admin, limit=4)
    assert [len(items) for items in pages] == [4, 4, 3]
    assert _keys(pages) == everything

    def window(**params: str) -> dict[str, Any]:
        return {
            "from": (BASE + timedelta(minutes=1)).isoformat(),
            "to": (BASE + timedelta(minutes=3)).isoformat(),
            **params,
        }

    within = await _items(api, "/events", site.manager, **window())
    # `from` is in the window, `to` is not (the events of minute 3); ties go by id.
    assert [event["type"] for event in within] == [
        "smoke.test",
        "wearable.fall",
        "access.granted",
        "door.forced_open",
    ]
    assert len(await _pages(api, "/events", site.manager, limit=1, **window())) == 4
    everywhere = await _items(api, "/events", site.admin, **window())
    assert {event["community"] for event in everywhere} == {A, B}

    async def types(headers: dict[str, str], **params: str) -> list[str]:
        return [event["type"] for event in await _items(api, "/events", headers, **params)]

    assert await types(site.manager, severity="critical") == ["wearable.fall", "smoke.alarm"]
    assert await types(site.manager, device_id="a-smoke-1") == ["smoke.cleared", "smoke.alarm"]
    assert await types(site.manager, gateway_id="gw-a2") == ["wearable.fall", "access.granted"]
    assert await types(site.admin, type="smoke.alarm") == ["smoke.alarm", "smoke.alarm"]
    assert await types(site.admin, community="xijin", severity="warning") == [
        "camera.intrusion",
        "smoke.fault",
        "door.forced_open",
    ]

    event = await api.get(f"/events/{site.events[A][3]}", headers=site.manager)
    assert event.status_code == 200, event.text
    assert event.json() | {"received_at": ""} == {
        "id": site.events[A][3],
        "ts": "2026-03-01T00:02:00Z",
        "received_at": "",
        "device_id": "a-wear-1",
        "gateway_id": "gw-a2",
        "community": A,
        "seq": 3,
        "type": "wearable.fall",
        "severity": "critical",
        "data": {"n": 3},
    }

    backwards = window(to=BASE.isoformat())
    assert (
        "must be after"
        in _problem(await api.get("/events", params=backwards, headers=site.manager), 422)["detail"]
    )


@pytest.mark.parametrize(
    "url",
    [
        "/devices/%00",
        "/devices/Upper",
        "/devices/" + "x" * 65,
        "/gateways/%00",
        "/gateways/-gw",
        "/events/9223372036854775808",
        "/events/0",
        "/events/-1",
        "/events?from=2026-03-01T00:00:00",
        "/events?from=0001-01-01T00:00:00%2B01:00",
        "/events?type=smoke.everything",
        "/events?severity=loud",
        "/events?device_id=%00",
        "/events?cursor=WyJub3QtYS10aW1lIiwxXQ",
        "/devices?kind=toaster",
        "/devices?cursor=WzFd",
        "/gateways?status=lost",
        "/gateways?community=%00",
    ],
)
async def test_malformed_ids_and_parameters_get_problems_not_errors(
    api: httpx.AsyncClient, site: Site, url: str
) -> None:
    _problem(await api.get(url, headers=site.admin), 422)
