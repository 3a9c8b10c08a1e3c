"""Webhook delivery against the real PostgreSQL and a real HTTP receiver: retries with
one webhook-id, signatures the reference library accepts, Retry-After, 410, dead
letters and replay, concurrent workers, restarts, and what a payload may carry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from cloud.api.routes.webhooks import filter_vocabulary
from cloud.rules.config import load_rules
from cloud.tree import find_node
from cloud.webhooks.outbox import WebhookEvent, enqueue
from cloud.webhooks.ssrf import AddressPolicy
from cloud.webhooks.subscriptions import (
    create_subscription,
    get_subscription,
    list_deliveries,
    replay_dead_letters,
    rotate_secret,
)
from tests.integration.webhook_support import (
    Receiver,
    Script,
    add_subscription,
    all_settled,
    community,
    deliveries,
    fast_settings,
    open_incidents,
    parse,
    run_then_kill,
    running_workers,
    verify,
    wait_until,
)


async def test_500s_then_200_deliver_each_once_with_one_webhook_id(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    receiver.script = Script(fail_first=3, fail_status=500)
    _, [secret] = await add_subscription(conn, await community(conn), receiver.url)
    await open_incidents(conn, await community(conn), 3)

    async with running_workers(database_url, fast_settings()):
        await wait_until(lambda: all_settled(database_url), what="every delivery settled")

    rows = await deliveries(database_url)
    assert [row["status"] for row in rows] == ["delivered"] * 3
    assert [row["attempts"] for row in rows] == [4] * 3
    for row in rows:
        mine = [r for r in receiver.requests if r.webhook_id == row["message_id"]]
        assert [r.status for r in mine] == [500, 500, 500, 200]
        # The receiver's dedupe view: one id, exactly one accepted.
        assert receiver.answered_2xx(row["message_id"]) == 1
        for request in mine:
            assert request.body == row["body"].encode()
            assert verify(secret, request)["data"]["incident_id"] > 0
            assert request.headers["content-type"] == "application/json"
        # Each attempt carries its own (fresh) timestamp, not the first one's.
        stamps = [int(r.headers["webhook-timestamp"]) for r in mine]
        assert stamps == sorted(stamps)
    assert set(receiver.ids()) == {row["message_id"] for row in rows}


async def test_signatures_verify_with_either_secret_after_rotation(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    await community(conn)
    policy = AddressPolicy(allow_private=True)
    subscription, first = await create_subscription(
        conn,
        community_id=(await find_node(conn, "xijin")).id,
        url=receiver.url,
        policy=policy,
        vocabulary=filter_vocabulary(load_rules()),
        scope=None,
    )
    assert subscription.tier == "street"
    assert subscription.secret_count == 1
    second = await rotate_secret(conn, subscription.id, scope=None)
    assert second != first
    assert second.startswith("whsec_")
    assert (await get_subscription(conn, subscription.id, scope=None)).secret_count == 2
    await open_incidents(conn, await community(conn), 1)

    async with running_workers(database_url, fast_settings()):
        await wait_until(lambda: all_settled(database_url), what="the delivery")

    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verify(first, request) == verify(second, request)
    assert verify(second, request)["type"] == "incident.opened"


async def test_retry_after_longer_than_the_schedule_is_honoured(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    receiver.script = Script(fail_first=1, fail_status=503, retry_after="2")
    await add_subscription(conn, await community(conn), receiver.url)
    await open_incidents(conn, await community(conn), 1)

    async with running_workers(database_url, fast_settings()):
        await wait_until(lambda: all_settled(database_url), what="the delivery")

    first, second = receiver.requests
    assert (first.status, second.status) == (503, 200)
    # The schedule says 0.2 s; the receiver asked for 2 s.
    assert second.at - first.at >= 1.9


async def test_410_disables_the_subscription_and_dead_letters_what_waits(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    receiver.script = Script(status=410)
    community_id = await community(conn)
    subscription_id, _ = await add_subscription(conn, community_id, receiver.url)
    await open_incidents(conn, community_id, 2)
    # The second is not due yet: it must be dead-lettered by the 410, never sent.
    await conn.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() + interval '1 hour' "
        "WHERE id = (SELECT max(id) FROM webhook_deliveries)"
    )

    async with running_workers(database_url, fast_settings()):
        await wait_until(lambda: all_settled(database_url), what="both dead")

    assert len(receiver.requests) == 1
    sent, waiting = await deliveries(database_url)
    assert (sent["status"], sent["last_status_code"], sent["attempts"]) == ("dead", 410, 1)
    assert waiting["status"] == "dead"
    assert waiting["attempts"] == 0
    assert waiting["last_error"].startswith("subscription disabled: ")
    subscription = await get_subscription(conn, subscription_id, scope=None)
    assert subscription.status == "disabled"
    assert subscription.disabled_reason is not None
    assert "410" in subscription.disabled_reason
    # A disabled subscription gets no new deliveries.
    assert await open_incidents(conn, community_id, 1)
    assert len(await deliveries(database_url)) == 2


async def test_dead_endpoint_ends_in_dead_letters_that_replay_once_it_recovers(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    receiver.script = Script(status=500)
    community_id = await community(conn)
    subscription_id, [secret] = await add_subscription(conn, community_id, receiver.url)
    await open_incidents(conn, community_id, 2)
    settings = fast_settings(retry_schedule_s=(0.1, 0.1))

    async with running_workers(database_url, settings):
        await wait_until(lambda: all_settled(database_url), what="dead letters")
    dead = await list_deliveries(conn, scope=None, status="dead")
    assert len(dead) == 2
    assert all(d.attempts == 3 and d.last_status_code == 500 for d in dead)
    assert all(d.last_error is not None and "HTTP 500" in d.last_error for d in dead)
    assert len(receiver.requests) == 6

    receiver.script = Script(status=200)
    assert await replay_dead_letters(conn, subscription_id, scope=None) == 2
    assert await replay_dead_letters(conn, subscription_id, scope=None) == 0
    async with running_workers(database_url, settings):
        await wait_until(lambda: all_settled(database_url), what="replayed deliveries")

    rows = await deliveries(database_url)
    assert [row["status"] for row in rows] == ["delivered", "delivered"]
    assert [row["attempts"] for row in rows] == [1, 1]
    for row in rows:
        mine = [r for r in receiver.requests if r.webhook_id == row["message_id"]]
        assert [r.status for r in mine] == [500, 500, 500, 200]
        verify(secret, mine[-1])
    assert await list_deliveries(conn, scope=None, status="dead") == []


async def test_two_processes_of_workers_never_send_one_delivery_twice(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    # A slow receiver keeps claims in flight while the other workers poll.
    receiver.script = Script(delay_s=0.05)
    community_id = await community(conn)
    for _ in range(3):
        await add_subscription(conn, community_id, receiver.url)
    await open_incidents(conn, community_id, 40)
    settings = fast_settings(batch_size=4, poll_interval_s=0.01)

    async with (
        running_workers(database_url, settings, workers=3) as one,
        running_workers(database_url, settings, workers=3) as two,
    ):
        await wait_until(lambda: all_settled(database_url), within_s=60, what="120 deliveries")

    rows = await deliveries(database_url)
    assert len(rows) == 120
    assert all(row["status"] == "delivered" and row["attempts"] == 1 for row in rows)
    counts = receiver.ids()
    assert len(counts) == 120
    assert set(counts.values()) == {1}
    busy = [w.counters.delivered for w in [*one, *two]]
    assert sum(busy) == 120
    assert sum(1 for n in busy if n) >= 2, f"one worker did everything: {busy}"


async def test_a_restart_between_retries_loses_nothing(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    receiver.script = Script(fail_first=2, fail_status=500)
    await add_subscription(conn, await community(conn), receiver.url)
    await open_incidents(conn, await community(conn), 1)
    settings = fast_settings(retry_schedule_s=(1.0, 1.0, 1.0))

    async def failed_once() -> bool:
        [row] = await deliveries(database_url)
        return row["attempts"] == 1 and row["claim_token"] is None

    # The first process gets one failure recorded, then dies abruptly (cancelled).
    await run_then_kill(database_url, settings, failed_once, what="the first failure")
    [row] = await deliveries(database_url)
    assert row["status"] == "pending"
    assert row["next_attempt_at"] > datetime.now(UTC)

    async with running_workers(database_url, settings):
        await wait_until(lambda: all_settled(database_url), what="delivery after restart")

    [row] = await deliveries(database_url)
    assert (row["status"], row["attempts"]) == ("delivered", 3)
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert len(receiver.ids()) == 1


async def test_a_worker_dying_mid_send_is_replaced_after_its_lease(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    # The receiver never answers the first request; the worker sending it is killed.
    receiver.script = Script(hang_first=1)
    await add_subscription(conn, await community(conn), receiver.url)
    await open_incidents(conn, await community(conn), 1)
    settings = fast_settings(timeout_s=1.0, lease_margin_s=1.0)

    await run_then_kill(
        database_url, settings, lambda: _received(receiver, 1), what="the first send"
    )
    [row] = await deliveries(database_url)
    assert row["status"] == "pending"
    assert row["claim_token"] is not None

    async with running_workers(database_url, settings):
        await wait_until(lambda: all_settled(database_url), what="the lease to end")

    [row] = await deliveries(database_url)
    assert row["status"] == "delivered"
    # At least once, one id: the receiver saw it twice and accepted it once.
    assert receiver.ids() == {row["message_id"]: 2}
    assert receiver.answered_2xx(row["message_id"]) == 1
    lease_wait = receiver.requests[1].at - receiver.requests[0].at
    assert lease_wait >= settings.lease_s - 0.2


async def _received(receiver: Receiver, count: int) -> bool:
    return len(receiver.requests) >= count


async def test_a_timeout_is_a_failed_attempt(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    receiver.script = Script(hang_first=1)
    await add_subscription(conn, await community(conn), receiver.url)
    await open_incidents(conn, await community(conn), 1)

    async with running_workers(database_url, fast_settings(timeout_s=0.5)):
        await wait_until(lambda: all_settled(database_url), what="the delivery")

    [row] = await deliveries(database_url)
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    assert [r.status for r in receiver.requests] == [None, 200]


async def test_payloads_carry_references_and_location_only(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    _, [secret] = await add_subscription(conn, await community(conn), receiver.url)
    [incident] = await open_incidents(conn, await community(conn), 1)

    async with running_workers(database_url, fast_settings()):
        await wait_until(lambda: all_settled(database_url), what="the delivery")

    [request] = receiver.requests
    payload = verify(secret, request)
    assert set(payload) == {"type", "timestamp", "data"}
    assert set(payload["data"]) == {
        "incident_id",
        "incident_type",
        "priority",
        "status",
        "location",
    }
    assert set(payload["data"]["location"]) == {"community", "building", "unit"}
    assert payload["data"]["incident_id"] == incident
    assert payload["data"]["location"] == {
        "community": "xijin/fenghuang",
        "building": "3",
        "unit": "001",
    }
    assert parse(request.body) == payload


async def test_every_queue_event_type_is_delivered(
    database_url: str, conn: AsyncConnection[Any], receiver: Receiver
) -> None:
    _, [secret] = await add_subscription(conn, await community(conn), receiver.url)
    [incident] = await open_incidents(conn, await community(conn), 1)
    for event in list(WebhookEvent)[1:]:
        await enqueue(conn, incident_id=incident, event=event)

    async with running_workers(database_url, fast_settings()):
        await wait_until(lambda: all_settled(database_url), what="every event")

    assert sorted(verify(secret, r)["type"] for r in receiver.requests) == sorted(
        str(event) for event in WebhookEvent
    )
