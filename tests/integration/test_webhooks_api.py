"""The webhook API against the real PostgreSQL: subscribing (secret shown once),
rotating secrets, listing dead letters and replaying them, disabling and enabling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from psycopg import AsyncConnection

from cloud.api.app import create_app
from cloud.settings import CloudSettings, WebhookSettings
from tests.integration.webhook_support import (
    Receiver,
    Script,
    all_settled,
    community,
    fast_settings,
    open_incidents,
    running_workers,
    verify,
    wait_until,
)


@pytest_asyncio.fixture
async def conn(database_url: str) -> AsyncIterator[AsyncConnection[Any]]:
    async with await AsyncConnection.connect(database_url, autocommit=True) as connection:
        await community(connection)
        yield connection


async def _client(database_url: str, webhooks: WebhookSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CloudSettings(database_url=database_url, webhooks=webhooks))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://anju") as http:
            yield http


@pytest_asyncio.fixture
async def api(database_url: str, conn: AsyncConnection[Any]) -> AsyncIterator[httpx.AsyncClient]:
    """The API of an operator who allows private addresses (the receiver is on loopback)."""
    async for http in _client(database_url, fast_settings()):
        yield http


@pytest_asyncio.fixture
async def strict_api(
    database_url: str, conn: AsyncConnection[Any]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the default SSRF policy: public addresses only."""
    async for http in _client(database_url, WebhookSettings()):
        yield http


async def test_subscribing_shows_the_secret_once(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await api.post(
        "/webhooks/subscriptions",
        json={
            "community": "xijin/fenghuang",
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
    assert [item["id"] for item in listed.json()] == [body["id"]]
    assert secret not in listed.text
    assert "secret" not in listed.json()[0]
    one = await api.get(f"/webhooks/subscriptions/{body['id']}")
    assert secret not in one.text


async def test_rotation_adds_a_secret_and_retiring_keeps_the_newest(
    database_url: str, api: httpx.AsyncClient, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    created = (
        await api.post("/webhooks/subscriptions", json={"community": "xijin", "url": receiver.url})
    ).json()
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
    created = (
        await api.post(
            "/webhooks/subscriptions", json={"community": "xijin/fenghuang", "url": receiver.url}
        )
    ).json()
    await open_incidents(conn, await community(conn), 2)
    settings = fast_settings(retry_schedule_s=(0.1,))
    async with running_workers(database_url, settings):
        await wait_until(lambda: all_settled(database_url), what="dead letters")

    dead = (await api.get("/webhooks/deliveries", params={"status": "dead"})).json()
    assert len(dead) == 2
    assert all(d["attempts"] == 2 and d["last_status_code"] == 503 for d in dead)
    assert (await api.get("/webhooks/deliveries", params={"status": "delivered"})).json() == []
    first = dead[-1]

    receiver.script = Script(status=200)
    replayed = await api.post(f"/webhooks/deliveries/{first['id']}/replay")
    assert replayed.status_code == 202
    again = await api.post(f"/webhooks/deliveries/{first['id']}/replay")
    assert again.status_code == 409
    assert "pending already" in again.json()["detail"]
    assert (await api.post("/webhooks/deliveries/999999/replay")).status_code == 404

    async with running_workers(database_url, settings):
        await wait_until(lambda: all_settled(database_url), what="the replay")
    [delivered] = (await api.get("/webhooks/deliveries", params={"status": "delivered"})).json()
    assert delivered["message_id"] == first["message_id"]
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
    bulk = await api.post(f"/webhooks/subscriptions/{created['id']}/replay")
    assert bulk.json() == {"replayed": 1}
    async with running_workers(database_url, settings):
        await wait_until(lambda: all_settled(database_url), what="the bulk replay")
    assert (await api.get("/webhooks/deliveries", params={"status": "dead"})).json() == []


async def test_disabling_dead_letters_what_is_pending(
    api: httpx.AsyncClient, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    created = (
        await api.post(
            "/webhooks/subscriptions", json={"community": "xijin/fenghuang", "url": receiver.url}
        )
    ).json()
    await open_incidents(conn, await community(conn), 3)
    disabled = await api.post(f"/webhooks/subscriptions/{created['id']}/disable")
    assert disabled.status_code == 200
    assert disabled.json()["dead_lettered"] == 3
    dead = (await api.get("/webhooks/deliveries", params={"status": "dead"})).json()
    assert {d["last_error"] for d in dead} == {"subscription disabled: disabled by an operator"}
    assert (await api.post("/webhooks/subscriptions/999/disable")).status_code == 404


async def test_bad_requests_are_refused_with_the_reason(api: httpx.AsyncClient) -> None:
    unknown = await api.post(
        "/webhooks/subscriptions", json={"community": "nowhere/here", "url": "http://127.0.0.1/"}
    )
    assert unknown.status_code == 422
    assert "nowhere/here" in unknown.json()["detail"]
    bad_event = await api.post(
        "/webhooks/subscriptions",
        json={"community": "xijin", "url": "http://127.0.0.1/", "event_types": ["door.opened"]},
    )
    assert bad_event.status_code == 422
    scheme = await api.post(
        "/webhooks/subscriptions", json={"community": "xijin", "url": "ftp://example.com/x"}
    )
    assert scheme.status_code == 422
    assert "http or https" in scheme.json()["detail"]


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
            "/webhooks/subscriptions", json={"community": "xijin/fenghuang", "url": url}
        )
        assert refused.status_code == 422, url
        assert kind in refused.json()["detail"], refused.json()
    assert (await strict_api.get("/webhooks/subscriptions")).json() == []
    assert receiver.requests == []
