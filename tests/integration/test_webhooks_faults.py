"""One delivery that cannot be sent must not hold up or double the others in its batch:
it fails on its own (retried, then a dead letter) while its neighbours land once."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from psycopg import AsyncConnection

from cloud.webhooks import ssrf
from tests.integration.webhook_support import (
    Receiver,
    add_subscription,
    all_settled,
    community,
    deliveries,
    fast_settings,
    open_incidents,
    running_workers,
    verify,
    wait_until,
)

IDN_HOST = "bücher.example"
IDN_ASCII = "xn--bcher-kva.example"


async def test_an_international_host_name_is_delivered_beside_others(
    database_url: str,
    conn: AsyncConnection[Any],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def lookup(url: str, host: str, port: int, timeout_s: float) -> list[Any]:
        # The test has no DNS server: the international name stands for the receiver.
        assert host == IDN_HOST
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(ssrf, "_lookup", lookup)
    community_id = await community(conn)
    _, [idn_secret] = await add_subscription(
        conn, community_id, f"http://{IDN_HOST}:{receiver.port}/hook"
    )
    _, [plain_secret] = await add_subscription(conn, community_id, receiver.url)
    await open_incidents(conn, community_id, 3)
    pinned = fast_settings(allow_private=False, allowed_networks="127.0.0.0/8")

    async with running_workers(database_url, pinned):
        await wait_until(lambda: all_settled(database_url), within_s=10, what="six deliveries")

    rows = await deliveries(database_url)
    assert [row["status"] for row in rows] == ["delivered"] * 6
    assert sorted(receiver.ids().values()) == [1] * 6
    hosts = sorted(request.headers["host"] for request in receiver.requests)
    assert hosts == [f"127.0.0.1:{receiver.port}"] * 3 + [f"{IDN_ASCII}:{receiver.port}"] * 3
    for request in receiver.requests:
        idn = request.headers["host"].startswith(IDN_ASCII)
        verify(idn_secret if idn else plain_secret, request)


async def test_a_delivery_that_cannot_be_signed_dead_letters_alone(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    community_id = await community(conn)
    broken, _ = await add_subscription(conn, community_id, receiver.url, "whsec_not-base64!")
    _, [secret] = await add_subscription(conn, community_id, receiver.url)
    await open_incidents(conn, community_id, 3)

    async with running_workers(database_url, fast_settings(retry_schedule_s=(0.1, 0.1))):
        await wait_until(lambda: all_settled(database_url), within_s=10, what="every row settled")

    rows = await deliveries(database_url)
    dead = [row for row in rows if row["subscription_id"] == broken]
    assert [(row["status"], row["attempts"]) for row in dead] == [("dead", 3)] * 3
    assert all("InvalidSecret" in row["last_error"] for row in dead)
    delivered = [row for row in rows if row["subscription_id"] != broken]
    assert [row["status"] for row in delivered] == ["delivered"] * 3
    assert sorted(receiver.ids().values()) == [1] * 3
    for request in receiver.requests:
        verify(secret, request)
