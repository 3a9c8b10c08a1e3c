"""The webhook API against the real PostgreSQL: subscribing (secret shown once),
rotating secrets, listing dead letters and replaying them, disabling and enabling,
and each key seeing only the subscriptions and deliveries of the nodes it reaches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from psycopg import AsyncConnection

from cloud.api.params import MAX_ID
from cloud.auth.roles import Role
from cloud.registry import register_community
from cloud.settings import WebhookSettings
from tests.api_support import bearer, make_key
from tests.integration.webhook_support import (
    COMMUNITY,
    Receiver,
    Script,
    all_settled,
    community,
    fast_settings,
    open_incidents,
    running_workers,
    verify,
    wait_until,
    webhook_api,
)

NEIGHBOUR = "xijin/qinglong"
"""Another community of the same street: its property manager is not ours."""
URL = "http://127.0.0.1:9/hook"
"""Never called: the tests using it only subscribe."""


@pytest_asyncio.fixture
async def conn(database_url: str) -> AsyncIterator[AsyncConnection[Any]]:
    async with await AsyncConnection.connect(database_url, autocommit=True) as connection:
        await community(connection)
        yield connection


@pytest_asyncio.fixture
async def api(database_url: str, conn: AsyncConnection[Any]) -> AsyncIterator[httpx.AsyncClient]:
    """The API as an admin of an operator who allows private addresses (the receiver
    is on loopback)."""
    async with webhook_api(database_url, await make_key(conn)) as http:
        yield http


@pytest_asyncio.fixture
async def strict_api(
    database_url: str, conn: AsyncConnection[Any]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the default SSRF policy: public addresses only."""
    async with webhook_api(database_url, await make_key(conn), WebhookSettings()) as http:
        yield http


async def _key(conn: AsyncConnection[Any], role: Role, scope: str) -> dict[str, str]:
    return bearer(await make_key(conn, role=role, scope=scope, name=f"{role} of {scope}"))


async def _subscribe(
    api: httpx.AsyncClient, node: str, url: str = URL, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    created = await api.post(
        "/webhooks/subscriptions", json={"community": node, "url": url}, headers=headers
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def test_subscribing_shows_the_secret_once(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    manager = await make_key(conn, role=Role.PROPERTY_MANAGER, scope=COMMUNITY)
    async with webhook_api(database_url, manager) as api:
        created = await api.post(
            "/webhooks/subscriptions",
            json={
                "community": COMMUNITY,
                "url": receiver.url,
                "description": "estate office",
                "event_types": ["incident.opened", "incident.escalated"],
                "max_priority": 2,
            },
        )
        assert created.status_code == 201, created.text
        body = created.json()
        secret = body["secret"]
        assert secret.startswith("whsec_")
        assert body["tier"] == "community"
        assert body["event_types"] == ["incident.opened", "incident.escalated"]
        assert (body["status"], body["secret_count"]) == ("active", 1)

        listed = await api.get("/webhooks/subscriptions")
        assert listed.status_code == 200
        assert [item["id"] for item in listed.json()["items"]] == [body["id"]]
        assert listed.json()["next_cursor"] is None
        assert secret not in listed.text
        assert "secret" not in listed.json()["items"][0]
        one = await api.get(f"/webhooks/subscriptions/{body['id']}")
        assert secret not in one.text


async def test_rotation_adds_a_secret_and_retiring_keeps_the_newest(
    database_url: str, api: httpx.AsyncClient, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    created = await _subscribe(api, "xijin", receiver.url)
    rotated = await api.post(f"/webhooks/subscriptions/{created['id']}/secrets")
    assert rotated.status_code == 201
    new = rotated.json()["secret"]
    assert new != created["secret"]
    assert (await api.get(f"/webhooks/subscriptions/{created['id']}")).json()["secret_count"] == 2

    retired = await api.delete(f"/webhooks/subscriptions/{created['id']}/secrets/previous")
    assert retired.json() == {"subscription_id": created["id"], "retired": 1}
    await open_incidents(conn, (await community(conn)), 1)
    async with running_workers(database_url, fast_settings()):
        await wait_until(lambda: all_settled(database_url), what="the delivery")
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    verify(new, request)


async def test_dead_letters_are_listed_and_replayed_with_their_webhook_id(
    database_url: str, api: httpx.AsyncClient, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    receiver.script = Script(status=503)
    created = await _subscribe(api, COMMUNITY, receiver.url)
    await open_incidents(conn, await community(conn), 2)
    settings = fast_settings(retry_schedule_s=(0.1,))
    async with running_workers(database_url, settings):
        await wait_until(lambda: all_settled(database_url), what="dead letters")

    dead = (await api.get("/webhooks/deliveries", params={"status": "dead"})).json()["items"]
    assert len(dead) == 2
    assert all(d["attempts"] == 2 and d["last_status_code"] == 503 for d in dead)
    delivered = await api.get("/webhooks/deliveries", params={"status": "delivered"})
    assert delivered.json() == {"items": [], "next_cursor": None}
    first = dead[-1]

    receiver.script = Script(status=200)
    replayed = await api.post(f"/webhooks/deliveries/{first['id']}/replay")
    assert replayed.status_code == 202
    again = await api.post(f"/webhooks/deliveries/{first['id']}/replay")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert "pending already" in again.json()["detail"]
    assert (await api.post("/webhooks/deliveries/999999/replay")).status_code == 404

    async with running_workers(database_url, settings):
        await wait_until(lambda: all_settled(database_url), what="the replay")
    delivered = await api.get("/webhooks/deliveries", params={"status": "delivered"})
    [one] = delivered.json()["items"]
    assert one["message_id"] == first["message_id"]
    assert receiver.answered_2xx(first["message_id"]) == 1
    verify(created["secret"], receiver.requests[-1])

    # The other dead letter, replayed through its subscription once it is re-enabled.
    disabled = await api.post(
        f"/webhooks/subscriptions/{created['id']}/disable", json={"reason": "office move"}
    )
    assert disabled.json()["subscription"]["status"] == "disabled"
    assert disabled.json()["subscription"]["disabled_reason"] == "office move"
    refused = await api.post(f"/webhooks/subscriptions/{created['id']}/replay")
    assert refused.status_code == 409
    assert (await api.post(f"/webhooks/subscriptions/{created['id']}/enable")).status_code == 200
    later = await api.post(
        f"/webhooks/subscriptions/{created['id']}/replay", params={"since": "9000-01-01T00:00:00Z"}
    )
    assert later.json() == {"replayed": 0}
    bulk = await api.post(f"/webhooks/subscriptions/{created['id']}/replay")
    assert bulk.json() == {"replayed": 1}
    async with running_workers(database_url, settings):
        await wait_until(lambda: all_settled(database_url), what="the bulk replay")
    assert (await api.get("/webhooks/deliveries", params={"status": "dead"})).json()["items"] == []


async def test_disabling_dead_letters_what_is_pending(
    api: httpx.AsyncClient, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    created = await _subscribe(api, COMMUNITY, receiver.url)
    await open_incidents(conn, await community(conn), 3)
    disabled = await api.post(f"/webhooks/subscriptions/{created['id']}/disable")
    assert disabled.status_code == 200
    assert disabled.json()["dead_lettered"] == 3
    dead = (await api.get("/webhooks/deliveries", params={"status": "dead"})).json()["items"]
    assert {d["last_error"] for d in dead} == {"subscription disabled: disabled by an operator"}
    assert (await api.post("/webhooks/subscriptions/999/disable")).status_code == 404


async def test_bad_requests_are_refused_with_the_reason(
    api: httpx.AsyncClient, conn: AsyncConnection[Any]
) -> None:
    unknown = await api.post(
        "/webhooks/subscriptions", json={"community": "nowhere/here", "url": URL}
    )
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert "nowhere/here" in unknown.json()["detail"]
    bad_event = await api.post(
        "/webhooks/subscriptions",
        json={"community": "xijin", "url": URL, "event_types": ["door.opened"]},
    )
    assert bad_event.status_code == 422
    scheme = await api.post(
        "/webhooks/subscriptions", json={"community": "xijin", "url": "ftp://example.com/x"}
    )
    assert scheme.status_code == 422
    assert "http or https" in scheme.json()["detail"]
    for field, value in [
        ("url", "http://127.0.0.1/\x00"),
        ("description", "estate\x00office"),
        ("community", "Xijin/Fenghuang"),
    ]:
        refused = await api.post(
            "/webhooks/subscriptions", json={"community": "xijin", "url": URL, field: value}
        )
        assert refused.status_code == 422, field
        assert ["body", field] in [error["loc"] for error in refused.json()["errors"]]
    for path, params in [
        (f"/webhooks/subscriptions/{MAX_ID + 1}", {}),
        ("/webhooks/deliveries", {"subscription_id": MAX_ID + 1}),
        ("/webhooks/deliveries", {"cursor": "bm90LWEtY3Vyc29y"}),
        ("/webhooks/subscriptions", {"limit": 0}),
    ]:
        assert (await api.get(path, params=params)).status_code == 422, (path, params)
    created = await _subscribe(api, COMMUNITY)
    naive = await api.post(
        f"/webhooks/subscriptions/{created['id']}/replay", params={"since": "2026-11-28T00:00:00"}
    )
    assert naive.status_code == 422
    assert (await api.get("/webhooks/subscriptions")).json()["items"] == [
        {key: value for key, value in created.items() if key != "secret"}
    ]


async def test_a_retired_node_takes_no_new_subscription(
    api: httpx.AsyncClient, conn: AsyncConnection[Any]
) -> None:
    await register_community(conn, NEIGHBOUR)
    kept = await _subscribe(api, NEIGHBOUR)
    await conn.execute(
        "UPDATE communities SET status = 'retired', retired_at = now() WHERE path = %s",
        [NEIGHBOUR],
    )
    refused = await api.post("/webhooks/subscriptions", json={"community": NEIGHBOUR, "url": URL})
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert "retired" in refused.json()["detail"]
    listed = (await api.get("/webhooks/subscriptions")).json()["items"]
    assert [item["id"] for item in listed] == [kept["id"]]


async def test_strict_policy_refuses_internal_urls_at_subscription(
    strict_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    for url, kind in [
        (receiver.url, "loopback"),
        (f"http://localhost:{receiver.port}/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.8/hook", "private"),
        ("http://[::ffff:192.168.1.1]/hook", "private"),
    ]:
        refused = await strict_api.post(
            "/webhooks/subscriptions", json={"community": COMMUNITY, "url": url}
        )
        assert refused.status_code == 422, url
        assert kind in refused.json()["detail"], refused.json()
    assert (await strict_api.get("/webhooks/subscriptions")).json()["items"] == []
    assert receiver.requests == []


async def test_a_property_manager_reaches_only_its_own_communitys_webhooks(
    api: httpx.AsyncClient, conn: AsyncConnection[Any]
) -> None:
    neighbour_id = (await register_community(conn, NEIGHBOUR)).id
    ours = await _key(conn, Role.PROPERTY_MANAGER, COMMUNITY)
    theirs = await _key(conn, Role.PROPERTY_MANAGER, NEIGHBOUR)
    mine = await _subscribe(api, COMMUNITY, headers=ours)
    other = await _subscribe(api, NEIGHBOUR, headers=theirs)
    await open_incidents(conn, await community(conn), 2)
    await open_incidents(conn, neighbour_id, 2)
    their_deliveries = (await api.get("/webhooks/deliveries", headers=theirs)).json()["items"]
    assert {d["subscription_id"] for d in their_deliveries} == {other["id"]}

    subscriptions = (await api.get("/webhooks/subscriptions", headers=ours)).json()["items"]
    assert [s["id"] for s in subscriptions] == [mine["id"]]
    deliveries = (await api.get("/webhooks/deliveries", headers=ours)).json()["items"]
    assert len(deliveries) == 2
    assert {d["subscription_id"] for d in deliveries} == {mine["id"]}
    narrowed = await api.get(
        "/webhooks/deliveries", params={"subscription_id": other["id"]}, headers=ours
    )
    assert narrowed.json()["items"] == []

    base = f"/webhooks/subscriptions/{other['id']}"
    for method, path in [
        ("GET", base),
        ("POST", f"{base}/disable"),
        ("POST", f"{base}/enable"),
        ("POST", f"{base}/secrets"),
        ("DELETE", f"{base}/secrets/previous"),
        ("POST", f"{base}/replay"),
        ("POST", f"/webhooks/deliveries/{their_deliveries[0]['id']}/replay"),
        ("GET", f"/webhooks/subscriptions?community={NEIGHBOUR}"),
        ("GET", f"/webhooks/deliveries?community={NEIGHBOUR}"),
    ]:
        answer = await api.request(method, path, headers=ours)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    # Out of reach reads exactly as missing, so ids cannot be probed.
    missing = await api.get(f"/webhooks/subscriptions/{MAX_ID}", headers=ours)
    hidden = await api.get(base, headers=ours)
    assert hidden.json()["detail"] == missing.json()["detail"].replace(
        str(MAX_ID), str(other["id"])
    )
    for node in (NEIGHBOUR, "xijin"):
        refused = await api.post(
            "/webhooks/subscriptions", json={"community": node, "url": URL}, headers=ours
        )
        assert refused.status_code == 404, node
        assert refused.json()["detail"] == f"no node {node!r} in the community tree"

    # Nothing of theirs changed.
    untouched = (await api.get(base, headers=theirs)).json()
    assert (untouched["status"], untouched["secret_count"]) == ("active", 1)
    after = (await api.get("/webhooks/deliveries", headers=theirs)).json()["items"]
    assert after == their_deliveries


async def test_a_street_key_sees_its_communities_subscriptions_but_not_the_citys(
    api: httpx.AsyncClient, conn: AsyncConnection[Any]
) -> None:
    await register_community(conn, "hexi/taohua")
    city = await _subscribe(api, "ningguo")
    street = await _subscribe(api, "xijin")
    estate = await _subscribe(api, COMMUNITY)
    await _subscribe(api, "hexi/taohua")
    office = await _key(conn, Role.STREET, "xijin")

    listed = (await api.get("/webhooks/subscriptions", headers=office)).json()["items"]
    assert [s["id"] for s in listed] == [street["id"], estate["id"]]
    narrowed = await api.get(
        "/webhooks/subscriptions", params={"community": COMMUNITY}, headers=office
    )
    assert [s["id"] for s in narrowed.json()["items"]] == [estate["id"]]
    hidden = await api.get(f"/webhooks/subscriptions/{city['id']}", headers=office)
    assert hidden.status_code == 404
    above = await api.get(
        "/webhooks/subscriptions", params={"community": "ningguo"}, headers=office
    )
    assert above.status_code == 404
    refused = await api.post(
        "/webhooks/subscriptions", json={"community": "ningguo", "url": URL}, headers=office
    )
    assert refused.status_code == 404
    await _subscribe(api, COMMUNITY, headers=office)


async def test_a_dispatcher_key_is_forbidden_every_route(
    api: httpx.AsyncClient, conn: AsyncConnection[Any]
) -> None:
    created = await _subscribe(api, COMMUNITY)
    base = f"/webhooks/subscriptions/{created['id']}"
    routes = [
        ("GET", "/webhooks/subscriptions"),
        ("POST", "/webhooks/subscriptions"),
        ("GET", base),
        ("POST", f"{base}/disable"),
        ("POST", f"{base}/enable"),
        ("POST", f"{base}/secrets"),
        ("DELETE", f"{base}/secrets/previous"),
        ("POST", f"{base}/replay"),
        ("GET", "/webhooks/deliveries"),
        ("POST", "/webhooks/deliveries/1/replay"),
    ]
    dispatcher = await _key(conn, Role.DISPATCHER, COMMUNITY)
    for method, path in routes:
        body = {"community": COMMUNITY, "url": URL} if path.endswith("subscriptions") else None
        forbidden = await api.request(method, path, json=body, headers=dispatcher)
        assert forbidden.status_code == 403, (method, path, forbidden.text)
        assert forbidden.headers["content-type"] == "application/problem+json"
    assert (await api.get(base)).json()["status"] == "active"


async def test_pages_of_two_walk_every_delivery_once_newest_first(
    api: httpx.AsyncClient, conn: AsyncConnection[Any]
) -> None:
    await _subscribe(api, COMMUNITY)
    await _subscribe(api, "xijin")
    await open_incidents(conn, await community(conn), 3)
    everything = (await api.get("/webhooks/deliveries")).json()["items"]
    assert len(everything) == 6

    walked: list[int] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/webhooks/deliveries", params=params)).json()
        walked += [d["id"] for d in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == [d["id"] for d in everything]
    assert walked == sorted(walked, reverse=True)
    assert pages == 3

    first = (await api.get("/webhooks/subscriptions", params={"limit": 1})).json()
    rest = await api.get("/webhooks/subscriptions", params={"cursor": first["next_cursor"]})
    assert [s["community"] for s in first["items"] + rest.json()["items"]] == [COMMUNITY, "xijin"]
    assert rest.json()["next_cursor"] is None
