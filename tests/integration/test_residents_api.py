"""``/residents`` against the real PostgreSQL: personal data stored sealed, shown only
to an admin or to the dispatcher holding an open incident about the resident, each
showing logged once, nothing disclosed to anyone else (404, as for a missing
resident), erasure for good, and the data in no webhook, incident row or log line."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from psycopg import AsyncConnection, sql

from cloud.api.app import create_app
from cloud.auth.roles import Role
from cloud.incidents import IncidentDraft, Priority, open_or_join
from cloud.ingest.writer import BatchWriter, decode_message
from cloud.registry import register_community, register_device, register_gateway
from cloud.rules.config import load_rules
from cloud.settings import CloudSettings, ResidentSettings
from cloud.storage.pool import open_pool
from cloud.webhooks.outbox import WebhookEvent
from schemas.topics import Channel, topic_for
from schemas.vocabulary import EVENT_SEVERITY, DeviceKind, EventType
from schemas.wire import Event, EventBatch, EventData, encode
from tests.api_support import api_client, bearer, make_key

A = "xijin/fenghuang"
B = "hexi/binhe"
GATEWAY = "gw-fh-1"
KEYS = ResidentSettings.from_environ(
    {"ANJU_RESIDENT_KEYS": f"k1:{base64.b64encode(os.urandom(32)).decode()}"}
)
WANG: dict[str, Any] = {
    "name": "Wang Xiuying 王秀英",
    "phone": "+86 (138) 1234-5678",
    "emergency_contacts": [{"name": "Wang Jianguo", "phone": "13900001111", "relation": "son"}],
    "medical_notes": "Type 2 diabetes; allergic to penicillin.",
}
SECRETS = ("Xiuying", "王秀英", "1234-5678", "Jianguo", "13900001111", "penicillin")


@dataclass(frozen=True)
class Site:
    a: int
    """Community A's node id."""
    admin: dict[str, str]
    manager: dict[str, str]
    """A property manager of A."""
    li: dict[str, str]
    """Dispatcher Li of A."""
    li_b: dict[str, str]
    """A dispatcher of B who is also called Li: her name matches the claimant's, her
    scope does not."""
    zhao: dict[str, str]
    """Another dispatcher of A."""


@pytest_asyncio.fixture
async def conn(database_url: str) -> AsyncIterator[AsyncConnection[Any]]:
    async with await AsyncConnection.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest_asyncio.fixture
async def site(conn: AsyncConnection[Any]) -> Site:
    a = await register_community(conn, A)
    await register_community(conn, B)

    async def key(role: Role, scope: str | None, name: str | None = None) -> dict[str, str]:
        return bearer(await make_key(conn, role=role, scope=scope, name=name))

    return Site(
        a=a.id,
        admin=await key(Role.ADMIN, None),
        manager=await key(Role.PROPERTY_MANAGER, A),
        li=await key(Role.DISPATCHER, A, "li"),
        li_b=await key(Role.DISPATCHER, B, "li"),
        zhao=await key(Role.DISPATCHER, A, "zhao"),
    )


@pytest_asyncio.fixture
async def api(database_url: str, site: Site) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the resident keys; each request presents its own API key."""
    settings = CloudSettings(database_url=database_url, residents=KEYS)
    async with api_client(create_app(settings)) as http:
        yield http


async def register(
    api: httpx.AsyncClient,
    headers: dict[str, str],
    reference: str = "care-001",
    *,
    community: str = A,
    **fields: Any,
) -> dict[str, Any]:
    body = {"community": community, "reference": reference, "building": "3", "unit": "301"}
    response = await api.post("/residents", json={**body, **fields}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def open_incident(
    conn: AsyncConnection[Any], community_id: int, *, resident_id: int | None = None, **draft: Any
) -> int:
    """An incident as the rules open one: about the resident, or about ``device_id``."""
    values: dict[str, Any] = {
        "type": "fall",
        "priority": Priority.CRITICAL,
        "community_id": community_id,
        "building": "3",
        "unit": "301",
        "device_id": None,
        "cause": "test",
        "resident_id": resident_id,
    }
    async with conn.transaction():
        opened = await open_or_join(
            conn, IncidentDraft(**{**values, **draft}), event_id=None, event_ts=datetime.now(UTC)
        )
    return opened.incident_id


async def log_rows(conn: AsyncConnection[Any], resident_id: int) -> list[tuple[Any, ...]]:
    cur = await conn.execute(
        "SELECT incident_id, api_key_id, actor, role, purpose FROM resident_access_log"
        " WHERE resident_id = %s ORDER BY id",
        [resident_id],
    )
    return await cur.fetchall()


async def key_id(api: httpx.AsyncClient, headers: dict[str, str]) -> int:
    response = await api.get("/me", headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["key_id"])


async def reveals(
    api: httpx.AsyncClient, headers: dict[str, str], resident_id: int, incident_id: int
) -> tuple[httpx.Response, httpx.Response]:
    """Both ways to the data: by the resident, and by the incident (the console's)."""
    return (
        await api.get(f"/residents/{resident_id}/personal", headers=headers),
        await api.get(f"/incidents/{incident_id}/resident", headers=headers),
    )


async def close(api: httpx.AsyncClient, headers: dict[str, str], incident_id: int) -> None:
    """Acknowledge the claimed incident, then resolve it as handled."""
    for action, body in (("acknowledge", {}), ("resolve", {"outcome": "handled"})):
        response = await api.post(f"/incidents/{incident_id}/{action}", json=body, headers=headers)
        assert response.status_code == 200, response.text


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
        assert secret.encode().hex() not in text


async def test_personal_data_is_sealed_in_the_table_and_never_listed(
    api: httpx.AsyncClient, conn: AsyncConnection[Any], site: Site
) -> None:
    created = await register(api, site.manager, personal=WANG, needs_evacuation_help=True)
    assert created["has_personal_data"] is True
    assert (created["community"], created["status"]) == (A, "active")
    assert "personal" not in created
    assert_no_secret(str(created))

    cur = await conn.execute("SELECT r::text FROM residents r")
    rows = [row[0] for row in await cur.fetchall()]
    assert len(rows) == 1
    assert "\\x" in rows[0]  # the sealed columns are there, as bytes
    assert_no_secret(rows[0])

    for url in ("/residents", f"/residents/{created['id']}"):
        response = await api.get(url, headers=site.li)
        assert response.status_code == 200, response.text
        assert_no_secret(response.text)
        assert "personal" not in response.text.replace("has_personal_data", "")


async def test_a_dispatcher_sees_the_data_only_while_she_holds_an_incident_about_them(
    api: httpx.AsyncClient, conn: AsyncConnection[Any], site: Site
) -> None:
    resident = (await register(api, site.manager, personal=WANG))["id"]
    incident = await open_incident(conn, site.a, resident_id=resident)

    # No claim yet, or another's claim: nothing, exactly as for a resident that is not.
    for headers in (site.li, site.zhao, site.li_b):
        for response in await reveals(api, headers, resident, incident):
            assert response.status_code == 404, response.text
            assert_no_secret(response.text)
    missing = await api.get("/residents/999999/personal", headers=site.li)
    by_resident = await api.get(f"/residents/{resident}/personal", headers=site.li)
    assert by_resident.json()["detail"] == missing.json()["detail"].replace("999999", str(resident))

    claimed = await api.post(f"/incidents/{incident}/claim", headers=site.li)
    assert claimed.status_code == 200, claimed.text
    li = await key_id(api, site.li)
    urls = (f"/residents/{resident}/personal", f"/incidents/{incident}/resident")
    for views, url in enumerate(urls, start=1):
        response = await api.get(url, headers=site.li)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        shown = response.json()
        assert shown["personal"] == WANG
        assert (shown["incident_id"], shown["purpose"]) == (incident, "incident")
        assert shown["resident"]["id"] == resident
        assert (
            await log_rows(conn, resident)
            == [(incident, li, "li", "dispatcher", "incident")] * views
        )

    # Held by Li of A, not by the other dispatchers, even one of the same name elsewhere.
    for headers in (site.zhao, site.li_b):
        for response in await reveals(api, headers, resident, incident):
            assert response.status_code == 404, response.text
    await close(api, site.li, incident)
    for response in await reveals(api, site.li, resident, incident):
        assert response.status_code == 404, response.text
    assert len(await log_rows(conn, resident)) == 2


async def test_the_wearer_of_a_device_is_the_resident_of_its_incident(
    api: httpx.AsyncClient, conn: AsyncConnection[Any], site: Site
) -> None:
    resident = (await register(api, site.manager, personal=WANG))["id"]
    other = (await register(api, site.manager, "care-002", personal=WANG))["id"]
    await register_gateway(conn, GATEWAY, A)
    await register_device(
        conn,
        "band-1",
        gateway_id=GATEWAY,
        kind=DeviceKind.WEARABLE,
        profile_id="anju-wearable-mb",
        resident_id=resident,
    )
    incident = await open_incident(conn, site.a, device_id="band-1")
    assert (await api.post(f"/incidents/{incident}/claim", headers=site.li)).status_code == 200

    response = await api.get(f"/incidents/{incident}/resident", headers=site.li)
    assert response.status_code == 200, response.text
    assert response.json()["resident"]["id"] == resident
    by_resident = await api.get(f"/residents/{resident}/personal", headers=site.li)
    assert by_resident.json()["incident_id"] == incident
    # The incident is the wearer's, not every resident's of the community.
    refused = await api.get(
        f"/residents/{other}/personal", params={"incident_id": incident}, headers=site.li
    )
    assert refused.status_code == 404
    assert await log_rows(conn, other) == []


async def test_an_admin_reads_the_data_and_it_is_logged_as_admin(
    api: httpx.AsyncClient, conn: AsyncConnection[Any], site: Site
) -> None:
    resident = (await register(api, site.manager, personal=WANG))["id"]
    other = (await register(api, site.manager, "care-002"))["id"]
    incident = await open_incident(conn, site.a, resident_id=resident)
    elsewhere = await open_incident(conn, site.a, resident_id=other)
    admin = await key_id(api, site.admin)

    plain = await api.get(f"/residents/{resident}/personal", headers=site.admin)
    assert plain.status_code == 200, plain.text
    assert (plain.json()["personal"], plain.json()["incident_id"]) == (WANG, None)
    cited = await api.get(
        f"/residents/{resident}/personal", params={"incident_id": incident}, headers=site.admin
    )
    assert cited.json()["incident_id"] == incident
    wrong = await api.get(
        f"/residents/{resident}/personal", params={"incident_id": elsewhere}, headers=site.admin
    )
    assert wrong.status_code == 404
    console = await api.get(f"/incidents/{incident}/resident", headers=site.admin)
    assert console.json()["purpose"] == "admin"
    # Nothing stored, nothing shown, nothing logged.
    empty = await api.get(f"/residents/{other}/personal", headers=site.admin)
    assert (empty.status_code, empty.json()["personal"]) == (200, None)
    assert await log_rows(conn, other) == []

    assert await log_rows(conn, resident) == [
        (None, admin, "test-admin", "admin", "admin"),
        (incident, admin, "test-admin", "admin", "admin"),
        (incident, admin, "test-admin", "admin", "admin"),
    ]
    first = await api.get(
        f"/residents/{resident}/access-log", params={"limit": 2}, headers=site.admin
    )
    assert first.status_code == 200, first.text
    rest = await api.get(
        f"/residents/{resident}/access-log",
        params={"limit": 2, "cursor": first.json()["next_cursor"]},
        headers=site.admin,
    )
    entries = first.json()["items"] + rest.json()["items"]
    assert rest.json()["next_cursor"] is None
    assert [entry["incident_id"] for entry in entries] == [incident, incident, None]
    assert [entry["id"] for entry in entries] == sorted((e["id"] for e in entries), reverse=True)
    for headers in (site.manager, site.li):
        denied = await api.get(f"/residents/{resident}/access-log", headers=headers)
        assert denied.status_code == 403, denied.text


async def test_a_property_manager_manages_residents_but_never_reads_their_data(
    api: httpx.AsyncClient, conn: AsyncConnection[Any], site: Site
) -> None:
    resident = (await register(api, site.manager, personal=WANG))["id"]
    for url in (f"/residents/{resident}/personal", f"/residents/{resident}/access-log"):
        denied = await api.get(url, headers=site.manager)
        assert denied.status_code == 403, denied.text

    moved = await api.patch(f"/residents/{resident}", json={"unit": "302"}, headers=site.manager)
    assert moved.status_code == 200, moved.text
    assert (moved.json()["unit"], moved.json()["has_personal_data"]) == ("302", True)
    changed = {**WANG, "medical_notes": "No longer on insulin."}
    replaced = await api.patch(
        f"/residents/{resident}", json={"personal": changed}, headers=site.manager
    )
    assert replaced.status_code == 200, replaced.text
    shown = await api.get(f"/residents/{resident}/personal", headers=site.admin)
    assert shown.json()["personal"] == changed
    removed = await api.patch(
        f"/residents/{resident}", json={"personal": None}, headers=site.manager
    )
    assert removed.json()["has_personal_data"] is False
    await api.patch(f"/residents/{resident}", json={"personal": WANG}, headers=site.manager)

    for _ in range(2):  # erasing again changes nothing
        erased = await api.delete(f"/residents/{resident}", headers=site.manager)
        assert erased.status_code == 204, erased.text
    cur = await conn.execute(
        "SELECT reference, personal_key_id, personal_wrapped_key, personal_ciphertext, status"
        " FROM residents WHERE id = %s",
        [resident],
    )
    assert await cur.fetchone() == (f"erased-{resident}", None, None, None, "erased")
    gone = await api.get(f"/residents/{resident}/personal", headers=site.admin)
    assert gone.status_code == 404, gone.text
    assert "erased" in gone.json()["detail"]
    late = await api.patch(f"/residents/{resident}", json={"unit": "1"}, headers=site.manager)
    assert late.status_code == 409, late.text
    # The log of who saw the data outlives it.
    log = await api.get(f"/residents/{resident}/access-log", headers=site.admin)
    assert len(log.json()["items"]) == 1


async def test_another_community_is_out_of_reach(
    api: httpx.AsyncClient, conn: AsyncConnection[Any], site: Site
) -> None:
    theirs = (await register(api, site.admin, "care-b", community=B, personal=WANG))["id"]
    mine = (await register(api, site.manager))["id"]
    assert [
        r["id"] for r in (await api.get("/residents", headers=site.manager)).json()["items"]
    ] == [mine]
    for method, body in (("GET", None), ("PATCH", {"unit": "1"}), ("DELETE", None)):
        response = await api.request(
            method, f"/residents/{theirs}", json=body, headers=site.manager
        )
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == f"no resident {theirs}"
    into_b = await api.post(
        "/residents",
        json={"community": B, "reference": "x", "building": "1", "unit": "1"},
        headers=site.manager,
    )
    assert into_b.status_code == 404, into_b.text
    cur = await conn.execute("SELECT status FROM residents WHERE id = %s", [theirs])
    assert await cur.fetchone() == ("active",)


async def test_lists_filter_and_page(api: httpx.AsyncClient, site: Site) -> None:
    made = [(await register(api, site.manager, f"care-{n}"))["id"] for n in range(3)]
    await register(api, site.admin, "care-b", community=B)
    await api.delete(f"/residents/{made[1]}", headers=site.manager)

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"community": A, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await api.get("/residents", params=params, headers=site.admin)).json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    erased = await api.get("/residents", params={"status": "erased"}, headers=site.admin)
    assert [item["id"] for item in erased.json()["items"]] == [made[1]]
    street = await api.get("/residents", params={"community": "hexi"}, headers=site.admin)
    assert [item["reference"] for item in street.json()["items"]] == ["care-b"]


async def test_malformed_requests_are_refused(api: httpx.AsyncClient, site: Site) -> None:
    base = {"community": A, "reference": "care-1", "building": "3", "unit": "301"}
    cases = [
        {**base, "personal": {**WANG, "name": "Wang\x00Xiuying"}},
        {**base, "personal": {**WANG, "blood_type": "A"}},
        {**base, "community": "xijin"},  # a street
        {**base, "reference": "erased-7"},
        {**base, "unit": ""},
        {**base, "nickname": "Granny"},
    ]
    for body in cases:
        response = await api.post("/residents", json=body, headers=site.manager)
        assert response.status_code == 422, (body, response.text)
        assert_no_secret(response.text)
        assert "\\u0000" not in response.text
    unknown = await api.post(
        "/residents", json={**base, "community": "xijin/nowhere"}, headers=site.manager
    )
    assert unknown.status_code == 404, unknown.text
    await register(api, site.manager, "care-1")
    duplicate = await api.post("/residents", json=base, headers=site.manager)
    assert duplicate.status_code == 409, duplicate.text
    resident = (await api.get("/residents", headers=site.manager)).json()["items"][0]["id"]
    null_unit = await api.patch(f"/residents/{resident}", json={"unit": None}, headers=site.manager)
    assert null_unit.status_code == 422, null_unit.text
    bad_incident = await api.get(
        f"/residents/{resident}/personal", params={"incident_id": 0}, headers=site.admin
    )
    assert bad_incident.status_code == 422


async def test_without_resident_keys_personal_data_is_refused_as_unavailable(
    database_url: str, conn: AsyncConnection[Any], site: Site
) -> None:
    async with api_client(create_app(CloudSettings(database_url=database_url))) as api:
        refused = await api.post(
            "/residents",
            json={"community": A, "reference": "c", "building": "1", "unit": "1", "personal": WANG},
            headers=site.manager,
        )
        assert refused.status_code == 503, refused.text
        assert "ANJU_RESIDENT_KEYS" in refused.json()["detail"]
        cur = await conn.execute("SELECT count(*) FROM residents")
        assert await cur.fetchone() == (0,)
        created = await register(api, site.manager, "c")
        shown = await api.get(f"/residents/{created['id']}/personal", headers=site.admin)
        assert (shown.status_code, shown.json()["personal"]) == (200, None)


async def test_personal_data_reaches_no_webhook_incident_row_or_log_line(
    api: httpx.AsyncClient,
    conn: AsyncConnection[Any],
    site: Site,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fire in the resident's building, through ingest and the rules, the queue and
    the outbox, and a dispatcher reading the data: it shows up nowhere in clear."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="cloud")
    await register_gateway(conn, GATEWAY, A)
    await register_device(
        conn, "smoke-3", gateway_id=GATEWAY, kind=DeviceKind.SMOKE, profile_id="t", building="3"
    )
    await conn.execute(
        "INSERT INTO webhook_subscriptions (community_id, url, event_types, incident_types,"
        " secrets) VALUES (%s, 'https://pm.example/hook', %s, '{}', %s)",
        [site.a, [str(event) for event in WebhookEvent], ["whsec_" + "A" * 32]],
    )
    resident = (await register(api, site.manager, personal=WANG, needs_evacuation_help=True))["id"]

    batch = EventBatch(
        gateway=GATEWAY,
        community=A,
        spool_epoch="00000000000000aa",
        batch_seq=1,
        sent_at=datetime.now(UTC),
        items=[
            Event(
                device="smoke-3",
                ts=datetime.now(UTC),
                seq=1,
                type=EventType.SMOKE_ALARM,
                severity=EVENT_SEVERITY[EventType.SMOKE_ALARM],
                data=EventData(),
            )
        ],
    )
    message = decode_message(topic_for(A, GATEWAY, Channel.EVENTS), encode(batch))
    async with open_pool(database_url, name="test-residents", max_size=2) as pool:
        outcomes = await BatchWriter(pool, load_rules()).write([message])
    assert [outcome.kind for outcome in outcomes] == ["stored"]

    queue = (await api.get("/incidents", headers=site.li)).json()["items"]
    help_incident = next(i["id"] for i in queue if i["type"] == "evacuation_assistance")
    assert (await api.post(f"/incidents/{help_incident}/claim", headers=site.li)).status_code == 200
    for response in await reveals(api, site.li, resident, help_incident):
        assert response.json()["personal"] == WANG
    await close(api, site.li, help_incident)

    cur = await conn.execute("SELECT count(*) FROM webhook_deliveries")
    # Fire opened; help opened, claimed, acknowledged, resolved.
    assert await cur.fetchone() == (5,)
    cur = await conn.execute(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    tables = [row[0] for row in await cur.fetchall()]
    assert {"webhook_deliveries", "incidents", "incident_log", "events"} <= set(tables)
    for table in tables:
        cur = await conn.execute(sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table)))
        assert_no_secret("\n".join(row[0] for row in await cur.fetchall()))
    assert any("personal data shown" in r.getMessage() for r in caplog.records), (
        "the reveals logged nothing: the check below would prove nothing"
    )
    for record in caplog.records:
        assert_no_secret(f"{record.getMessage()} {record.args!r} {record.exc_text or ''}")
