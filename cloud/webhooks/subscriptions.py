"""Managing webhooks: subscriptions and their secrets, dead letters and replays.

Functions over a connection (autocommit, as the API's pool gives them); those that
take several statements run them in one transaction of their own. Secrets leave
these functions exactly twice: when a subscription is created and when a secret is
rotated in; listings say only how many a subscription holds.

Each takes ``scope``, the community-node ids the caller reaches (an API key's
subtree), or None for the whole tree; every statement filters by it. A subscription
belongs to its node (``community_id``), a delivery to its subscription's node, and one
outside the scope is not found, exactly like one that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import class_row

from cloud.storage.database import storage_errors
from cloud.storage.sql import queries
from cloud.webhooks.errors import (
    CommunityNotFound,
    CommunityRetired,
    DeliveryNotFound,
    ReplayRefused,
    SubscriptionNotFound,
)
from cloud.webhooks.filters import FilterVocabulary
from cloud.webhooks.signing import generate_secret
from cloud.webhooks.ssrf import AddressPolicy, resolve

MAX_SECRETS: Final = 3
"""Secrets a subscription signs with at most; rotating past this drops the oldest."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as listed: never its secrets, only how many it signs with."""

    id: int
    community: str
    tier: str
    url: str
    description: str
    event_types: list[str]
    incident_types: list[str]
    max_priority: int
    status: str
    disabled_reason: str | None
    secret_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row: ``message_id`` is the ``webhook-id`` every attempt carries."""

    id: int
    message_id: str
    subscription_id: int
    incident_id: int | None
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


async def create_subscription(
    conn: AsyncConnection[Any],
    *,
    community_id: int,
    url: str,
    policy: AddressPolicy,
    vocabulary: FilterVocabulary,
    scope: list[int] | None,
    description: str = "",
    event_types: Sequence[str] = (),
    incident_types: Sequence[str] = (),
    max_priority: int = 3,
) -> tuple[Subscription, str]:
    """Subscribe ``url`` to the incidents of the subtree of node ``community_id``;
    return the subscription and its new secret (shown this once).

    Empty filters let everything through; ``max_priority`` 1 means P1 only. Filters
    are checked against ``vocabulary`` (the incident types of the rules the cloud runs
    with), because a name nothing emits would never match. Raises InvalidFilter for
    such a name, UnsafeUrl when the URL is not http(s) or its host resolves to an
    address ``policy`` refuses, CommunityNotFound when the node is not in ``scope``,
    CommunityRetired when it is retired, StorageError when the database refuses.
    """
    vocabulary.check(
        event_types=event_types, incident_types=incident_types, max_priority=max_priority
    )
    await resolve(url, policy)
    secret = generate_secret()
    sql = queries()
    async with conn.transaction():
        with storage_errors("webhook_subscription_node"):
            cur = await conn.execute(
                sql["webhook_subscription_node"], {"id": community_id, "scope": scope}
            )
            node = await cur.fetchone()
        if node is None:
            raise CommunityNotFound(community_id)
        path, status = node
        if status == "retired":
            raise CommunityRetired(path)
        with storage_errors("insert_webhook_subscription"):
            cur = await conn.execute(
                sql["insert_webhook_subscription"],
                {
                    "community_id": community_id,
                    "url": url,
                    "description": description,
                    "event_types": [str(event) for event in event_types],
                    "incident_types": list(incident_types),
                    "max_priority": max_priority,
                    "secret": secret,
                },
            )
            row = await cur.fetchone()
    assert row is not None
    return await get_subscription(conn, int(row[0]), scope=scope), secret


async def list_subscriptions(
    conn: AsyncConnection[Any],
    *,
    scope: list[int] | None,
    status: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[Subscription]:
    """Subscriptions in ``scope`` (of one ``status`` when given), oldest first, the
    first ``limit`` with ids above ``after``."""
    return await _subscriptions(
        conn, scope=scope, subscription_id=None, status=status, after=after, limit=limit
    )


async def get_subscription(
    conn: AsyncConnection[Any], subscription_id: int, *, scope: list[int] | None
) -> Subscription:
    """One subscription; raises SubscriptionNotFound when it is not in ``scope``."""
    found = await _subscriptions(
        conn, scope=scope, subscription_id=subscription_id, status=None, after=None, limit=1
    )
    if not found:
        raise SubscriptionNotFound(subscription_id)
    return found[0]


async def _subscriptions(
    conn: AsyncConnection[Any],
    *,
    scope: list[int] | None,
    subscription_id: int | None,
    status: str | None,
    after: int | None,
    limit: int,
) -> list[Subscription]:
    with storage_errors("list_webhook_subscriptions"):
        cur = conn.cursor(row_factory=class_row(Subscription))
        await cur.execute(
            queries()["list_webhook_subscriptions"],
            {
                "scope": scope,
                "id": subscription_id,
                "status": status,
                "after": after,
                "limit": limit,
            },
        )
        return await cur.fetchall()


async def disable_subscription(
    conn: AsyncConnection[Any], subscription_id: int, *, reason: str, scope: list[int] | None
) -> int:
    """Stop sending to a subscription; return how many pending deliveries became dead
    letters (replayable once it is enabled again). Raises SubscriptionNotFound."""
    with storage_errors("disable_webhook_subscription"):
        cur = await conn.execute(
            queries()["disable_webhook_subscription"],
            {"id": subscription_id, "reason": reason, "scope": scope},
        )
        row = await cur.fetchone()
    if row is None:
        raise SubscriptionNotFound(subscription_id)
    return int(row[1])


async def enable_subscription(
    conn: AsyncConnection[Any],
    subscription_id: int,
    *,
    policy: AddressPolicy,
    scope: list[int] | None,
) -> Subscription:
    """Send to a disabled subscription again (its dead letters stay dead until
    replayed). Checks its URL against ``policy`` again; raises UnsafeUrl or
    SubscriptionNotFound."""
    current = await get_subscription(conn, subscription_id, scope=scope)
    await resolve(current.url, policy)
    with storage_errors("enable_webhook_subscription"):
        await conn.execute(
            queries()["enable_webhook_subscription"], {"id": subscription_id, "scope": scope}
        )
    return await get_subscription(conn, subscription_id, scope=scope)


async def rotate_secret(
    conn: AsyncConnection[Any], subscription_id: int, *, scope: list[int] | None
) -> str:
    """Add a new secret and return it; deliveries are signed with it *and* the old ones
    (at most ``MAX_SECRETS``, the oldest dropped), so the receiver can switch at its
    own pace. ``retire_old_secrets`` ends the overlap. Raises SubscriptionNotFound."""
    secret = generate_secret()
    async with conn.transaction():
        current = await _secrets(conn, subscription_id, scope)
        updated = [*current, secret][-MAX_SECRETS:]
        await _set_secrets(conn, subscription_id, updated, scope)
    return secret


async def retire_old_secrets(
    conn: AsyncConnection[Any], subscription_id: int, *, scope: list[int] | None
) -> int:
    """Keep only the newest secret; return how many were dropped. Raises
    SubscriptionNotFound."""
    async with conn.transaction():
        current = await _secrets(conn, subscription_id, scope)
        await _set_secrets(conn, subscription_id, current[-1:], scope)
    return len(current) - 1


async def _secrets(
    conn: AsyncConnection[Any], subscription_id: int, scope: list[int] | None
) -> list[str]:
    with storage_errors("webhook_subscription_secrets"):
        cur = await conn.execute(
            queries()["webhook_subscription_secrets"], {"id": subscription_id, "scope": scope}
        )
        row = await cur.fetchone()
    if row is None:
        raise SubscriptionNotFound(subscription_id)
    return list(row[0])


async def _set_secrets(
    conn: AsyncConnection[Any], subscription_id: int, secrets: list[str], scope: list[int] | None
) -> None:
    with storage_errors("set_webhook_subscription_secrets"):
        await conn.execute(
            queries()["set_webhook_subscription_secrets"],
            {"id": subscription_id, "secrets": secrets, "scope": scope},
        )


async def list_deliveries(
    conn: AsyncConnection[Any],
    *,
    scope: list[int] | None,
    status: str | None = None,
    subscription_id: int | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """Deliveries of subscriptions in ``scope``, newest first, the first ``limit`` with
    ids below ``before``; ``status='dead'`` lists the dead letters."""
    with storage_errors("list_webhook_deliveries"):
        cur = conn.cursor(row_factory=class_row(Delivery))
        await cur.execute(
            queries()["list_webhook_deliveries"],
            {
                "scope": scope,
                "status": status,
                "subscription_id": subscription_id,
                "before": before,
                "limit": limit,
            },
        )
        return await cur.fetchall()


async def replay_delivery(
    conn: AsyncConnection[Any], delivery_id: int, *, scope: list[int] | None
) -> None:
    """Make a dead (or delivered) delivery due now with fresh attempts and the same
    ``webhook-id``.

    Raises DeliveryNotFound, or ReplayRefused when it is pending already or its
    subscription is disabled (enable it first).
    """
    sql = queries()
    params = {"id": delivery_id, "scope": scope}
    async with conn.transaction():
        with storage_errors("webhook_delivery_for_replay"):
            cur = await conn.execute(sql["webhook_delivery_for_replay"], params)
            row = await cur.fetchone()
        if row is None:
            raise DeliveryNotFound(delivery_id)
        status, subscription_status = row
        if status == "pending":
            raise ReplayRefused(f"webhook delivery {delivery_id}", "it is pending already")
        if subscription_status != "active":
            raise ReplayRefused(
                f"webhook delivery {delivery_id}", "its subscription is disabled; enable it first"
            )
        with storage_errors("replay_webhook_delivery"):
            await conn.execute(sql["replay_webhook_delivery"], params)


async def replay_dead_letters(
    conn: AsyncConnection[Any],
    subscription_id: int,
    *,
    scope: list[int] | None,
    since: datetime | None = None,
) -> int:
    """Make every dead letter of a subscription (created at or after ``since``) due now,
    each with fresh attempts and its own ``webhook-id``; return how many.

    Raises SubscriptionNotFound, or ReplayRefused when the subscription is disabled.
    """
    sql = queries()
    async with conn.transaction():
        with storage_errors("webhook_subscription_status"):
            cur = await conn.execute(
                sql["webhook_subscription_status"], {"id": subscription_id, "scope": scope}
            )
            row = await cur.fetchone()
        if row is None:
            raise SubscriptionNotFound(subscription_id)
        if row[0] != "active":
            raise ReplayRefused(
                f"the dead letters of subscription {subscription_id}",
                "the subscription is disabled; enable it first",
            )
        with storage_errors("replay_webhook_subscription_dead"):
            cur = await conn.execute(
                sql["replay_webhook_subscription_dead"],
                {"subscription_id": subscription_id, "since": since, "scope": scope},
            )
    return cur.rowcount
