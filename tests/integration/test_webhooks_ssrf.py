"""The SSRF guard at delivery time: a subscription whose URL points inward (subscribed
while the operator allowed it, or whose DNS changed since) is never called unless the
policy in force allows the address; an allowed network is reached at the checked
address with the URL's own host name kept."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

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


async def test_a_loopback_url_is_refused_at_every_attempt_without_the_allowance(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    community_id = await community(conn)
    await add_subscription(conn, community_id, receiver.url)
    await add_subscription(conn, community_id, f"http://localhost:{receiver.port}/hook")
    await open_incidents(conn, community_id, 1)
    strict = fast_settings(allow_private=False, retry_schedule_s=(0.1, 0.1))

    async with running_workers(database_url, strict):
        await wait_until(lambda: all_settled(database_url), what="dead letters")

    assert receiver.requests == []
    rows = await deliveries(database_url)
    assert [(row["status"], row["attempts"]) for row in rows] == [("dead", 3), ("dead", 3)]
    assert all("loopback" in row["last_error"] for row in rows)
    assert all(row["last_status_code"] is None for row in rows)


async def test_an_allowed_network_is_reached_at_the_checked_address(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    _, [secret] = await add_subscription(conn, await community(conn), receiver.url)
    await open_incidents(conn, await community(conn), 1)
    allowed = fast_settings(allow_private=False, allowed_networks="127.0.0.0/8")

    async with running_workers(database_url, allowed):
        await wait_until(lambda: all_settled(database_url), what="the delivery")

    [row] = await deliveries(database_url)
    assert row["status"] == "delivered"
    [request] = receiver.requests
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    verify(secret, request)


async def test_other_private_networks_stay_refused_beside_an_allowance(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    await add_subscription(conn, await community(conn), receiver.url)
    await open_incidents(conn, await community(conn), 1)
    allowed = fast_settings(
        allow_private=False, allowed_networks="10.0.0.0/8", retry_schedule_s=(0.1,)
    )

    async with running_workers(database_url, allowed):
        await wait_until(lambda: all_settled(database_url), what="the dead letter")

    assert receiver.requests == []
    [row] = await deliveries(database_url)
    assert row["status"] == "dead"
